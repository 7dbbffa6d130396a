//! Inputs in object storage: `s3://`, `gs://`, `az://` (`abfs://`, `abfss://`) and
//! `https://` URLs naming one object, a prefix (a "directory", ending in `/`) or a glob.
//!
//! - [`locate`]: a URL → a store and a key, with each cloud's standard credential chain
//!   (`from_env`; also the static keys of an `AWS_PROFILE` in `~/.aws/credentials`,
//!   [`profile`]); a custom S3 endpoint (`AWS_ENDPOINT_URL(_S3)`) in plain `http://` only
//!   on loopback or with `AWS_ALLOW_HTTP=true`, refused before the first request.
//! - [`list`]: a prefix or glob listed in the order local files are (by path components),
//!   with the same skipping rules (names starting with `.` or `_` at any level, unknown
//!   extensions unless `--format`), each object's ETag, version, size and modification
//!   time taken from the listing: the identity a resume checks.
//! - [`stream`]: an object as a `std::io::Read` from any byte offset (a resume is a ranged
//!   GET), at most [`stream::BUFFER`] bytes held, every GET `If-Match` the listed ETag and
//!   checked again on the client (some S3-compatible servers ignore `If-Match`), a broken
//!   body re-requested from the first byte not delivered.
//! - [`parquet_fetch`]: the byte ranges parquet's push decoders ask for (the footer, then
//!   only the projected column chunks of one row group at a time).
//! - [`redact`]: credentials in URLs never reach output.
//!
//! Invariants: every object-store call runs on the [`ObjectRuntime`] (a tokio runtime of
//! two workers that `pipeline` creates only when an input or the state is remote), and
//! the synchronous pipeline threads only ever wait on it, never run inside it; an object
//! is read as the version it was listed as, or not at all.
//!
//! Built without the `object-store` feature, URLs are recognised and refused with a
//! message that says so.

pub mod redact;

#[cfg(feature = "object-store")]
pub mod list;
#[cfg(feature = "object-store")]
pub mod locate;
#[cfg(feature = "object-store")]
mod object;
#[cfg(feature = "object-store")]
pub mod parquet_fetch;
#[cfg(feature = "object-store")]
pub mod profile;
#[cfg(feature = "object-store")]
pub mod stream;

#[cfg(feature = "object-store")]
pub use object::{identities_of_all, ObjectRuntime, RemoteObject, ENDS_AT_ONCE};

#[cfg(not(feature = "object-store"))]
mod off;
#[cfg(not(feature = "object-store"))]
pub use off::{ObjectRuntime, RemoteObject};

/// How long a failing object-store read is retried without progress, unless
/// `--read-retry-secs` says otherwise.
pub const DEFAULT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// The schemes that name objects rather than local files.
pub const SCHEMES: &[&str] = &[
    "s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "azure://", "https://", "http://",
];

/// True for an input (or `--checkpoint`) argument naming objects, not local files.
pub fn is_object_url(arg: &str) -> bool {
    SCHEMES.iter().any(|p| {
        arg.len() > p.len()
            && arg.is_char_boundary(p.len())
            && arg[..p.len()].eq_ignore_ascii_case(p)
    })
}

/// The objects `url` names (one object, a prefix or a glob), in path order, each with
/// the format its name says (or `forced`); the store is configured from the process
/// environment. `objects`: the run's runtime (`None` only where nothing remote was
/// expected, which refuses the URL).
pub fn expand(
    objects: Option<&std::sync::Arc<ObjectRuntime>>,
    url: &str,
    forced: Option<super::Format>,
) -> Result<Vec<(RemoteObject, Option<super::Format>)>, RemoteError> {
    #[cfg(feature = "object-store")]
    if let Some(rt) = objects {
        let env = locate::StoreEnv::from_process().retrying_for(rt.retry_for());
        return list::expand(rt, url, &env, forced);
    }
    let _ = (objects, forced);
    let url = redact::redact_url(url);
    match cfg!(feature = "object-store") {
        true => Err(RemoteError::Unsupported { url }),
        false => Err(RemoteError::Disabled { url }),
    }
}

/// The identity of an object as listed: what a resume compares, and what every GET must
/// still match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    pub size: u64,
    pub e_tag: Option<String>,
    pub version: Option<String>,
    /// Last modified, nanoseconds since the epoch.
    pub modified_ns: u128,
}

/// Why an object URL cannot be used or read. Each names the URL (redacted) and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {why}")]
    Url { url: String, why: String },
    #[error("{url}: this cdp-backfill was built without the object-store feature; build it with default features (or copy the data to a local disk)")]
    Disabled { url: String },
    #[error("{url}: this command reads local files only; copy the object to a local file first")]
    Unsupported { url: String },
    #[error("endpoint {endpoint} is plain http on a host that is not loopback: credentials and data would cross the network unencrypted. Use https, or set AWS_ALLOW_HTTP=true to allow it")]
    PlainHttp { endpoint: String },
    #[error("AWS profile {profile} ({file}): {why}")]
    Profile {
        profile: String,
        file: String,
        why: String,
    },
    #[error(
        "cannot list {url}: {why}. Check the URL, and that the credentials may list the bucket"
    )]
    List { url: String, why: String },
    #[error("cannot reach {url}: its TLS certificate was not accepted ({why}). If the store's certificate comes from a private certificate authority (an internal MinIO or Ceph, say), set SSL_CERT_FILE to the authority's PEM file (or SSL_CERT_DIR to a directory of them)")]
    Tls { url: String, why: String },
    #[error("{url}: no such object, and no objects under it as a prefix. Check the URL (a prefix ends with /)")]
    NotFound { url: String },
    #[error("{url} holds no input files (.csv, .tsv, .ndjson, .jsonl, .json, .parquet, optionally .gz or .zst); pass --format to read objects with other names")]
    Empty { url: String },
    #[error("{object}: reading failed at byte {at}: {why}. The run can be resumed once the store answers again")]
    Read {
        object: String,
        at: u64,
        why: String,
    },
    #[error("{object} changed while it was read (its ETag is no longer {e_tag}): refusing to mix two versions of it. If it was replaced on purpose, start over with --restart")]
    Changed { object: String, e_tag: String },
    #[error("{object}: row group {group} holds {bytes} bytes of the mapped columns, above the limit of {limit} bytes held at once. Map fewer or smaller columns, or re-export with smaller row groups")]
    RowGroupTooLarge {
        object: String,
        group: usize,
        bytes: u64,
        limit: u64,
    },
}

/// Why a row group of a Parquet object could not be read.
#[derive(Debug)]
pub enum GroupError {
    /// Fetching its bytes failed (or it is too large to fetch).
    Remote(RemoteError),
    /// Parquet could not decode it.
    Decode(String),
}

impl RemoteError {
    /// True for a URL or a store configuration that cannot work, found before any
    /// object was read: a usage error.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RemoteError::Url { .. }
                | RemoteError::Disabled { .. }
                | RemoteError::Unsupported { .. }
                | RemoteError::PlainHttp { .. }
                | RemoteError::Profile { .. }
        )
    }
}

impl From<RemoteError> for std::io::Error {
    fn from(e: RemoteError) -> Self {
        std::io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_are_told_from_paths() {
        assert!(is_object_url("s3://b/p/"));
        assert!(is_object_url("ABFSS://c@a.dfs.core.windows.net/x"));
        assert!(is_object_url("gs://bucket/k.csv"));
        assert!(!is_object_url("export/part-0.csv"));
        assert!(!is_object_url("s3://"));
        assert!(!is_object_url("-"));
        assert!(!is_object_url("é3://x"));
    }
}
