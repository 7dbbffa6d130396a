//! The validated run configuration and the named defaults.
//!
//! `cli.rs` turns flags into these plain structs in one fallible step; nothing below
//! this module knows clap. Every default the README talks about is a constant here.
//! Config is data: runtime hooks (the interrupt flag) are given to the run separately
//! ([`crate::pipeline::Hooks`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The request body limit we pack to. The vendor says "500KB"; it does not say whether
/// that is 500,000 or 512,000 bytes, so we take the smaller.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 500_000;
/// The per-call limit ("32KB"), read conservatively for the same reason.
pub const DEFAULT_MAX_CALL_BYTES: usize = 32_000;
/// "3000 requests per 3 seconds", spread evenly.
pub const DEFAULT_RATE_PER_SEC: u32 = 1000;
/// Requests in flight at the start with `--concurrency auto` (the default), before a
/// round trip is measured.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The most requests in flight at once, adaptive or pinned.
pub const MAX_CONCURRENCY: usize = 256;
/// Rows handed to a mapping task at a time: large enough to amortise the hand-off,
/// small enough that a few chunks in flight stay within a few megabytes.
pub const DEFAULT_CHUNK_ROWS: usize = 4096;
/// Attempts after the first before a failing request stops the run.
pub const DEFAULT_MAX_RETRIES: u32 = 8;
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Where each backfill keeps its checkpoint and rejects file, one directory per
/// backfill (`checkpoint::state`).
pub const DEFAULT_STATE_DIR: &str = ".cdp-backfill";
/// The checkpoint's default path before state directories: a checkpoint found there
/// that matches the run is still resumed where it is.
pub const LEGACY_CHECKPOINT_PATH: &str = "cdp-backfill.checkpoint.json";
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a checkpoint in object storage must stay unchanged before another process
/// takes its lease over (its holder writes it every third of that).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// The most bytes of one Parquet row group's mapped columns held at once when the file
/// is read from object storage (its column chunks are fetched whole).
pub const MAX_ROW_GROUP_FETCH: u64 = 512 << 20;
/// A single record larger than this is rejected rather than buffered (hostile input).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

pub const US_BASE_URL: &str = "https://cdp.customer.io";
pub const EU_BASE_URL: &str = "https://cdp-eu.customer.io";

/// The API key. Its `Debug` and `Display` never show it, so it cannot leak through a log
/// line, an error or a panic message by accident; `expose()` is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    /// The secret itself, for the one place that builds the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `Basic base64("KEY:")`: the key as user name, an empty password.
    pub fn basic_auth_header(&self) -> String {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.0));
        format!("Basic {token}")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A base URL such as `https://cdp.customer.io` (the `/v1/...` paths are appended).
    Url(String),
    /// Start the built-in receiver in-process on an ephemeral loopback port.
    Local,
}

impl Endpoint {
    /// True when requests never leave this machine, so plain HTTP and no key are fine.
    pub fn is_loopback(&self) -> bool {
        match self {
            Endpoint::Local => true,
            Endpoint::Url(u) => url_is_loopback(u),
        }
    }
}

/// `https://user:pass@host/x` → `https://host/x`: credentials never reach a report, a
/// checkpoint or a message. Everything up to the last `@` goes, so a password with an
/// unescaped `/` in it goes too (a base URL has no other use for `@`).
pub fn strip_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    if scheme.is_empty() {
        rest.to_string()
    } else {
        format!("{scheme}://{rest}")
    }
}

/// `http(s)://127.x.x.x`, `localhost` or `[::1]`, with or without a port.
pub fn url_is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    // `http://127.0.0.1:80@evil.com` is a request to evil.com: user info is never loopback.
    if host_port.contains('@') {
        return false;
    }
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Size limits the packer and the receiver enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_call_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_call_bytes: DEFAULT_MAX_CALL_BYTES,
        }
    }
}

/// Shard `k` of `n` (0-based: `--shard 0/4` … `--shard 3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: u32,
    pub n: u32,
}

impl Shard {
    /// `K/N` with `0 <= K < N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s}: expected K/N, e.g. 0/4 (shards count from 0)"))?;
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("--shard {s}: {t:?} is not a number"))
        };
        let (k, n) = (num(k)?, num(n)?);
        if n == 0 {
            return Err(format!(
                "--shard {s}: N, the number of shards, must be at least 1"
            ));
        }
        if k >= n {
            return Err(format!(
                "--shard {s}: K must be at least 0 and below N (shards count from 0: 0/{n} … {}/{n})",
                n.saturating_sub(1)
            ));
        }
        Ok(Shard { k, n })
    }

    /// `shard-0003-of-0008`: how the shard's files are named.
    pub fn file_stem(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.k, self.n)
    }

    /// This shard's part of a per-second budget `total` shared by all N: the parts
    /// (floor arithmetic) add up to `total` exactly. `None` when `total` is below N
    /// (a shard would get nothing).
    pub fn share(&self, total: u32) -> Option<u32> {
        if total < self.n {
            return None;
        }
        let part = |k: u32| (total as u64 * k as u64 / self.n as u64) as u32;
        Some(part(self.k + 1) - part(self.k))
    }
}

/// How many requests are kept in flight (`--concurrency auto|N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencySetting {
    /// As many as the rate needs at the measured round trip, from
    /// [`DEFAULT_CONCURRENCY`] up to [`MAX_CONCURRENCY`], cut back on 429s, 5xx and
    /// timeouts.
    #[default]
    Auto,
    /// Always this many (1 to [`MAX_CONCURRENCY`]).
    Fixed(usize),
}

impl ConcurrencySetting {
    /// The most requests that can be in flight at once.
    pub fn max(self) -> usize {
        match self {
            ConcurrencySetting::Auto => MAX_CONCURRENCY,
            ConcurrencySetting::Fixed(n) => n.clamp(1, MAX_CONCURRENCY),
        }
    }
}

impl fmt::Display for ConcurrencySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConcurrencySetting::Auto => write!(
                f,
                "auto ({DEFAULT_CONCURRENCY} to start, at most {MAX_CONCURRENCY})"
            ),
            ConcurrencySetting::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// Which HTTP version requests use (`--http-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/2 where the server offers it in the TLS handshake (ALPN), else HTTP/1.1;
    /// HTTP/1.1 over plain `http://`.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http11,
    /// HTTP/2 only: over plain `http://` with prior knowledge (h2c), as to `serve`.
    Http2,
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http11 => "1.1",
            HttpVersion::Http2 => "2",
        })
    }
}

/// A gzip compression level for request bodies (`--gzip-level`), 1 (fastest) to 9
/// (smallest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipLevel(u8);

impl GzipLevel {
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 9;
    /// With `--gzip` alone: the best calls/s at a 150 ms round trip over a 1 Gbps
    /// uplink on 2 cores (BENCHMARKS.md, issue 19, step h); a slower uplink does better
    /// with 3.
    pub const DEFAULT: GzipLevel = GzipLevel(1);

    /// `None` outside 1..=9.
    pub fn new(level: u8) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&level)
            .then_some(GzipLevel(level))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for GzipLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub inputs: Vec<PathBuf>,
    pub mapping_path: PathBuf,
    pub endpoint: Endpoint,
    pub api_key: Option<ApiKey>,
    pub rate_per_sec: u32,
    pub concurrency: ConcurrencySetting,
    pub http_version: HttpVersion,
    pub limits: Limits,
    pub rejects_path: PathBuf,
    pub dry_run: bool,
    /// With `dry_run`: each request body, one per line.
    pub output: Option<PathBuf>,
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Calls per second at most (each request is charged its number of calls), on top
    /// of `rate_per_sec`.
    pub events_rate_per_sec: Option<u32>,
    /// Send bodies gzip-compressed at this level (`None`: uncompressed); the size limits
    /// still apply to the uncompressed body.
    pub gzip: Option<GzipLevel>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub strict: bool,
    pub chunk_rows: usize,
    pub max_record_bytes: usize,
    /// Where `--endpoint local` records accepted calls (tests and rehearsals).
    pub local_record: Option<PathBuf>,
    /// The checkpoint file; `None` for runs that keep none (dry runs). Unless
    /// `checkpoint_given`, a placeholder until the run finds its backfill in `state_dir`.
    pub checkpoint: Option<PathBuf>,
    /// `--checkpoint FILE` was given: that file, not the state directory, holds it.
    pub checkpoint_given: bool,
    /// `--rejects FILE` was given; else the rejects file lives in the backfill's
    /// directory and `rejects_path` is a placeholder until the run finds it.
    pub rejects_given: bool,
    /// The state directory (`--state`).
    pub state_dir: PathBuf,
    /// A backfill name fixed in advance (a plan's step: `<plan stem>.<step>`); else
    /// the run finds or names its backfill by content.
    pub backfill_name: Option<String>,
    /// `--limit N`: stop once the first N rows of the inputs (in order, counting those
    /// of earlier runs) are done; the checkpoint then says where the full run resumes.
    pub limit: Option<u64>,
    /// `--sample K`: send every K-th row of each input, under the ids the full run
    /// gives it, and move no checkpoint (the full run sends everything).
    pub sample: Option<u64>,
    /// Ignore (and overwrite) an existing checkpoint.
    pub restart: bool,
    /// How often the checkpoint is written at least.
    pub checkpoint_interval: Duration,
    /// After an interrupt, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// Print nothing but errors.
    pub quiet: bool,
    /// `--sent-at now`: stamp `sentAt` with the send time on every attempt (issue 4).
    pub sent_at: bool,
    /// `--strict-mapping`: refuse to send when a mapped column or path has no value in
    /// the first rows of every input.
    pub strict_mapping: bool,
    /// `--max-reject-rate`: stop once more than this share of the rows is rejected.
    pub max_reject_rate: Option<f64>,
    /// The run's own files: never read as inputs, and none that it writes may be an
    /// input, the mapping or another of them.
    pub own_files: Vec<OwnFile>,
    /// `--shard K/N`: read only this shard's part of the inputs (the rates above are
    /// already this shard's share).
    pub shard: Option<Shard>,
    /// A checkpoint in object storage: how long it must stay unchanged before another
    /// process takes it over.
    pub lease_ttl: Duration,
    /// `--read-retry-secs`: how long a failing object-storage read is retried without
    /// progress before the run stops (resumably).
    pub read_retry: Duration,
}

/// A file of the run's own, with the flag that names it: one it writes, or (`written`
/// false) the API key file, or the checkpoint's path when the run keeps none.
#[derive(Debug, Clone)]
pub struct OwnFile {
    pub flag: &'static str,
    pub path: PathBuf,
    pub written: bool,
    /// Written only as the run ends (its summary and report): an earlier run's copy is
    /// removed at the start, so it never passes for this run's.
    pub at_end: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_shares_of_a_rate_add_up_to_it_exactly_and_never_to_zero() {
        for n in 1..=17u32 {
            for total in [n, n + 1, 2 * n - 1, 1000, 3001, u32::MAX] {
                let parts: Vec<u32> = (0..n)
                    .map(|k| Shard { k, n }.share(total).unwrap())
                    .collect();
                assert_eq!(parts.iter().map(|&p| p as u64).sum::<u64>(), total as u64);
                assert!(parts.iter().all(|&p| p >= 1), "{n} {total} {parts:?}");
                let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} {total} {parts:?}");
            }
            if n > 1 {
                assert_eq!(Shard { k: 0, n }.share(n - 1), None);
            }
        }
    }

    #[test]
    fn shard_arguments_are_checked() {
        assert_eq!(Shard::parse("3/8"), Ok(Shard { k: 3, n: 8 }));
        assert_eq!(Shard::parse(" 0 / 1 "), Ok(Shard { k: 0, n: 1 }));
        for (bad, says) in [
            ("4/4", "below N"),
            ("1/0", "at least 1"),
            ("0/0", "at least 1"),
            ("3", "expected K/N"),
            ("-1/4", "not a number"),
            ("a/4", "not a number"),
        ] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.contains(says) && e.contains(bad.trim()), "{bad}: {e}");
        }
        assert_eq!(Shard { k: 3, n: 8 }.file_stem(), "shard-0003-of-0008");
    }

    #[test]
    fn api_key_never_shows_in_debug_or_display() {
        let k = ApiKey::new("sk_live_SENTINEL");
        assert!(!format!("{k:?}").contains("SENTINEL"));
        assert!(!format!("{k}").contains("SENTINEL"));
        // base64("sk_live_SENTINEL:")
        assert_eq!(k.basic_auth_header(), "Basic c2tfbGl2ZV9TRU5USU5FTDo=");
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(url_is_loopback("http://127.0.0.1:8080"));
        assert!(url_is_loopback("http://localhost/v1"));
        assert!(url_is_loopback("http://[::1]:9"));
        assert!(!url_is_loopback("https://cdp.customer.io"));
        assert!(!url_is_loopback("http://127.example.com"));
        for tricky in [
            "http://127.0.0.1.evil.com",
            "http://localhost.evil.com",
            "http://user@evil.com",
            "http://127.0.0.1:80@evil.com",
            "http://localhost:x@evil.com/v1",
            "http://[::1]@evil.com",
            "http://evil.com/127.0.0.1",
            "http://evil.com?localhost",
            "http://127.0.0.1\\@evil.com",
        ] {
            assert!(!url_is_loopback(tricky), "{tricky}");
        }
        assert!(url_is_loopback("http://[::1]"));
        assert!(url_is_loopback("http://127.0.0.1?x=@evil.com"));
    }
}
