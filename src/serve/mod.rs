//! The local receiver: a loopback HTTP/1.1 and HTTP/2 server that behaves like the Data
//! Pipelines API, for tests, benchmarks and users rehearsing a backfill.
//!
//! It owns the listener and a current-thread tokio runtime on one thread, on which hyper
//! serves every connection: checking a request costs microseconds per call and waits
//! (latency, the bandwidth cap) are timers, so one thread keeps up with the engine
//! under test and leaves it the other core. Measured against two and one worker threads
//! of a multi-thread runtime, it used the least CPU per call at the same throughput
//! (BENCHMARKS.md, "serve on hyper"). Per request it applies, in order: injected faults
//! ([`Faults`]), the simulated round trip (latency with jitter), Basic auth, body
//! decoding with a hard cap (read no faster than the simulated uplink,
//! [`Faults::bandwidth_mbps`]), the vendor's size limits (a silent 200 and a dropped
//! request, or 400 with `X-Strict-Mode: 1`), parsing and per-call validation, then
//! counts the accepted calls in [`Stats`] and optionally appends them to an NDJSON
//! record file, one whole request per write.
//!
//! Files: `conn.rs` accepts and serves connections (hyper, both HTTP versions),
//! `handle.rs` runs those steps for one request, `body.rs` reads a body with its caps
//! and gzip, `wan.rs` is the bandwidth cap, `scan.rs` reads a body and its calls in one
//! pass, `schema.rs` judges them as the vendor's spec does, `datetime.rs` checks its
//! date-times, `validate.rs` names routes and call types and writes record lines,
//! `faults.rs` decides faults and delays from a seed, `stats.rs` holds the counters.
//!
//! Answers are shaped like the API's: `{}` for a request taken, and
//! `{"meta":{"errors":["..."]}}` for a refusal, one message per refused call, naming
//! its place in the batch and its messageId.
//!
//! The API key is kept only as the expected `Authorization` value, compared in constant
//! time, and never printed, logged or served.

mod body;
mod conn;
mod datetime;
mod faults;
mod handle;
mod scan;
mod schema;
mod stats;
mod validate;
mod wan;

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::{ApiKey, Limits};

pub use conn::MAX_CONNECTIONS;
pub use stats::{Injected, Stats, Violations};

/// How to run the receiver.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen; port 0 picks a free port (see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// When set, every POST must carry `Authorization: Basic base64("KEY:")`.
    pub api_key: Option<ApiKey>,
    /// The limits to enforce, normally the vendor's (the packer's defaults).
    pub limits: Limits,
    /// Append every accepted call to this file as one NDJSON line.
    pub record: Option<PathBuf>,
    pub faults: Faults,
}

impl Default for ServeConfig {
    /// Loopback, an ephemeral port, no key, the default limits, no record, no faults.
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            api_key: None,
            limits: Limits::default(),
            record: None,
            faults: Faults::default(),
        }
    }
}

/// Misbehaviour to inject, so retries, backoff and rate limiting can be rehearsed, and
/// the network to simulate (a round trip and an uplink), so a WAN can be played on
/// loopback. Every rate is a probability in [0, 1] decided by a PRNG seeded with `seed`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 500, 502 or 503.
    pub fail_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    /// The `Retry-After` of a throttled answer; 0 means 1.
    pub retry_after_secs: u64,
    /// Answer 429 to requests beyond this many in any one second.
    pub max_rps: Option<u32>,
    /// Delay every answer that passes the faults by this much (after its body is read).
    pub latency_ms: u64,
    /// Move each delay by a uniform draw in `[-latency_jitter_ms, +latency_jitter_ms]`
    /// (seeded; never below zero).
    pub latency_jitter_ms: u64,
    /// Read request bodies no faster than this many megabits per second, shared by every
    /// connection (a token bucket): the client's uplink. 0 means no cap.
    pub bandwidth_mbps: f64,
    /// Close the connection without answering.
    pub drop_rate: f64,
    /// Treat a call as invalid; a function of its messageId, so a call keeps its
    /// verdict across retries and bisection.
    pub invalid_rate: f64,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source} (pick another address, or port 0 for any free port)"
    )]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot open the record file {}: {source}", path.display())]
    Record { path: PathBuf, source: io::Error },
    #[error("cannot start the receiver's runtime: {0}")]
    Spawn(#[source] io::Error),
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(#[source] io::Error),
}

/// The record file and what is needed to report trouble with it once.
struct Record {
    path: PathBuf,
    file: Mutex<File>,
    warned: AtomicBool,
}

/// What every connection shares.
struct Shared {
    limits: Limits,
    /// The exact `Authorization` value expected, when a key was given.
    auth: Option<String>,
    faults: Faults,
    record: Option<Record>,
    state: Mutex<stats::State>,
    bandwidth: Option<wan::Bandwidth>,
    scratch: Pool,
}

/// The buffers one request works in, reused across requests.
#[derive(Default)]
struct Scratch {
    /// The decompressed body.
    body: Vec<u8>,
    /// Record lines of the accepted calls.
    lines: Vec<u8>,
    /// xxh3-128 of the accepted calls' messageIds.
    ids: Vec<u128>,
    /// Where the accepted calls sit in `body`.
    accepted: Vec<handle::Accepted>,
    /// The scan's stack of open objects' keys.
    keys: scan::Keys,
}

/// A few [`Scratch`]es kept between requests, so a steady stream of large bodies does
/// not allocate (and fault in) a fresh half-megabyte buffer each time.
#[derive(Default)]
struct Pool(Mutex<Vec<Scratch>>);

/// Scratches kept: about the requests checked at once, and a few more.
const POOL_KEPT: usize = 8;

impl Pool {
    fn take(&self) -> Scratch {
        lock(&self.0).pop().unwrap_or_default()
    }

    /// Keeps `s` unless the pool is full or `s` grew past `max_body` (a connection that
    /// once carried a huge body should not keep that much memory).
    fn put(&self, s: Scratch, max_body: usize) {
        if s.body.capacity() <= max_body {
            let mut pool = lock(&self.0);
            if pool.len() < POOL_KEPT {
                pool.push(s);
            }
        }
    }
}

/// Locks, carrying on past a poisoned mutex: the data are counters and buffers that a
/// panicking thread cannot leave half-updated in any way that matters more than
/// keeping the receiver up.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running receiver. Dropping it shuts it down too; [`Server::shutdown`] also
/// returns the final stats.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds, starts the runtime and returns at once.
    pub fn start(cfg: ServeConfig) -> Result<Server, ServeError> {
        let record = match &cfg.record {
            Some(path) => {
                // Append, never truncate: a rehearsal must not destroy an earlier record.
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ServeError::Record {
                        path: path.clone(),
                        source,
                    })?;
                Some(Record {
                    path: path.clone(),
                    file: Mutex::new(file),
                    warned: AtomicBool::new(false),
                })
            }
            None => None,
        };
        let bind_error = |source| ServeError::Bind {
            addr: cfg.addr,
            source,
        };
        let listener = TcpListener::bind(cfg.addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ServeError::Spawn)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };
        let shared = Arc::new(Shared {
            limits: cfg.limits,
            auth: cfg.api_key.as_ref().map(ApiKey::basic_auth_header),
            bandwidth: wan::Bandwidth::new(cfg.faults.bandwidth_mbps, Instant::now()),
            faults: cfg.faults,
            record,
            state: Mutex::new(stats::State::default()),
            scratch: Pool::default(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("serve".into())
                .spawn(move || {
                    runtime.block_on(conn::accept_loop(listener, shared, stopped));
                    // Connection tasks are gone; nothing blocking is left to wait for.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(ServeError::Spawn)?
        };
        Ok(Server {
            addr,
            shared,
            stop,
            runtime: Some(thread),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL a client appends `/v1/batch` to. An
    /// unspecified bind address (0.0.0.0, ::) is reached through loopback.
    pub fn base_url(&self) -> String {
        format!("http://{}", connectable(self.addr))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.state).stats.clone()
    }

    /// Stops accepting, closes every connection, waits for the runtime, flushes the
    /// record file, and returns the final stats.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        let Some(thread) = self.runtime.take() else {
            return;
        };
        // Fails only when the accept loop is already gone.
        let _ = self.stop.send(true);
        let _ = thread.join();
        if let Some(rec) = &self.shared.record {
            let _ = lock(&rec.file).flush();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address to connect to for `addr`: loopback in place of an unspecified IP.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// For `cdp-backfill serve`: starts the receiver, prints where it listens, and runs
/// until SIGINT or SIGTERM; a second signal exits at once. Returns the final stats.
pub fn run_until_signal(cfg: ServeConfig) -> Result<Stats, ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;

    let server = Server::start(cfg)?;
    let term = Arc::new(AtomicBool::new(false));
    let mut ids = Vec::new();
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit sees the flag before this signal sets it,
        // so only a second signal exits.
        ids.push(
            flag::register_conditional_shutdown(sig, 1, Arc::clone(&term))
                .map_err(ServeError::Signal)?,
        );
        ids.push(flag::register(sig, Arc::clone(&term)).map_err(ServeError::Signal)?);
    }
    // Not `eprintln!`: a closed stderr (`2>&-`, a reader gone away) would panic it, and
    // the receiver runs on without anyone to read where it listens, as every other
    // subcommand's notes do.
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "listening on http://{}",
            server.local_addr()
        );
    }
    while !term.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(100));
    }
    let stats = server.shutdown();
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    Ok(stats)
}

/// `n` copies of `base`, each with one to three random edits (a byte of `alphabet` put
/// over, before, or instead of a byte), from a fixed seed: the receiver's fast paths are
/// checked against the serde and chrono paths on these.
#[cfg(test)]
fn mutations<'a>(
    base: &'a [u8],
    alphabet: &'a [u8],
    n: usize,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..n).map(move |_| {
        let mut b = base.to_vec();
        for _ in 0..1 + rand(3) {
            let at = rand(b.len());
            let c = alphabet[rand(alphabet.len())];
            match rand(3) {
                0 => b[at] = c,
                1 => b.insert(at, c),
                _ => {
                    b.remove(at);
                }
            }
        }
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn starts_on_an_ephemeral_port_and_answers_health() {
        let server = Server::start(ServeConfig::default()).expect("start");
        assert_ne!(server.local_addr().port(), 0);
        assert_eq!(
            server.base_url(),
            format!("http://127.0.0.1:{}", server.local_addr().port())
        );
        let r = get(server.local_addr(), "/health");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok"), "{r}");
        assert!(get(server.local_addr(), "/nope").starts_with("HTTP/1.1 404"));
        assert_eq!(server.shutdown(), Stats::default());
    }

    #[test]
    fn shutdown_closes_idle_keep_alive_connections() {
        let server = Server::start(ServeConfig::default()).expect("start");
        let mut idle = TcpStream::connect(server.local_addr()).expect("connect");
        // Make sure the connection thread exists before shutting down.
        write!(idle, "GET /health HTTP/1.1\r\n\r\n").expect("write");
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).expect("read");
        assert!(n > 0);
        let started = std::time::Instant::now();
        server.shutdown();
        assert!(started.elapsed() < Duration::from_secs(5));
        idle.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    }

    #[test]
    fn bind_failure_names_the_address() {
        let first = Server::start(ServeConfig::default()).expect("start");
        let cfg = ServeConfig {
            addr: first.local_addr(),
            ..ServeConfig::default()
        };
        let err = Server::start(cfg).err().expect("second bind fails");
        assert!(
            err.to_string().contains(&first.local_addr().to_string()),
            "{err}"
        );
    }

    #[test]
    fn record_failure_names_the_path() {
        let cfg = ServeConfig {
            record: Some(PathBuf::from("/nonexistent-dir/x/record.ndjson")),
            ..ServeConfig::default()
        };
        let err = Server::start(cfg).err().expect("cannot open");
        assert!(
            err.to_string().contains("/nonexistent-dir/x/record.ndjson"),
            "{err}"
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let cfg = ServeConfig {
            api_key: Some(ApiKey::new("sk_SENTINEL")),
            ..ServeConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("SENTINEL"));
    }
}
