//! `cdp-backfill`: backfill historical records into the Customer.io Data Pipelines API.
//!
//! The pipeline, one stage per module: [`source`] reads records, [`map`] turns them into
//! encoded calls in parallel, [`pack`] packs calls into request bodies, [`send`] delivers
//! them under a rate limiter, and [`pipeline`] wires the stages together with bounded
//! channels. [`serve`] is the local receiver used by `--endpoint local`, the tests and the
//! benchmarks; [`generate`] writes realistic test inputs.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod generate;
pub mod inspect;
pub mod map;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod send;
pub mod serve;
pub mod source;
pub mod summary;
pub mod validate;

pub use config::RunConfig;
pub use summary::Summary;

/// Why a run stopped. Configuration errors come before anything is read or sent.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Mapping(#[from] map::MappingError),
    #[error(transparent)]
    Compile(#[from] map::compile::CompileError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Delivery(String),
    #[error(transparent)]
    Checkpoint(Box<checkpoint::CheckpointError>),
    /// Stopped by SIGINT/SIGTERM after draining; the checkpoint says where to resume.
    #[error("interrupted")]
    Interrupted {
        summary: Box<Summary>,
        checkpoint: Option<String>,
    },
    /// The run started, did part of the work, then stopped; the summary says how far.
    #[error("{cause}")]
    Partial {
        summary: Box<Summary>,
        cause: String,
    },
}

impl RunError {
    /// True for mistakes in the command line or the mapping, found before any work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RunError::Mapping(_)
                | RunError::Compile(_)
                | RunError::Config(_)
                | RunError::Checkpoint(_)
        )
    }
}

/// Runs a backfill.
pub fn run(cfg: &RunConfig, src: &source::SourceOptions) -> Result<Summary, RunError> {
    pipeline::run(cfg, src)
}
