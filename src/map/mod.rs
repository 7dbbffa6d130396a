//! Mapping: the mapping file ([`spec`]), its form compiled against an input's columns
//! ([`compile`]: also the input's messageId seed, [`message_id`], and which columns
//! spread their members in place), and the encoder that turns rows into call JSON
//! ([`encode`]), with the spec's checks of semantic events ([`semantic`]) and of the
//! reserved names it types ([`reserved`]), loose booleans ([`clean`]) and the sentAt
//! placeholder ([`sent_at`]).

pub mod clean;
pub mod compile;
pub mod coverage;
pub mod encode;
pub mod fixes;
pub mod message_id;
pub mod reserved;
pub mod semantic;
pub mod sent_at;
pub mod spec;
pub mod suggest;

use std::path::Path;

/// A mapping file that cannot be used. Stops the run before anything is read or sent.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot read mapping file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping file {path}: {message}")]
    Parse { path: String, message: String },
}

/// Reads and parses a mapping file.
pub fn load(path: &Path) -> Result<spec::MappingSpec, MappingError> {
    let text = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut spec = spec::parse(&text).map_err(|e| {
        let mut message = suggest::annotate_serde_message(e.to_string().trim_end());
        // `[call]` (one pair of brackets) makes one table where a list of them belongs.
        if message.contains("expected a sequence")
            && text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("[call]") || l.starts_with("[ call ]")
            })
        {
            message.push_str("\nhint: write each call as [[call]], with two pairs of brackets: the mapping holds a list of calls");
        }
        MappingError::Parse {
            path: path.display().to_string(),
            message,
        }
    })?;
    spec.source = Some(spec::SpecSource {
        path: path.display().to_string(),
        text,
    });
    Ok(spec)
}
