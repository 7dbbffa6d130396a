//! The local receiver: a loopback HTTP/1.1 server that behaves like the Data Pipelines
//! API, for tests, benchmarks and users rehearsing a backfill.
//!
//! It owns the listener, one accept thread, and one thread per connection (at most
//! [`MAX_CONNECTIONS`]); no async runtime, because a receiver that runs beside the
//! benchmarked engine on two cores should be small and predictable. Per request it
//! applies, in order: injected faults ([`Faults`]), Basic auth, body decoding with a
//! hard cap, the vendor's size limits (a silent 200 and a dropped request, or 400 with
//! `X-Strict-Mode: 1`), parsing and per-call validation, then counts the accepted calls
//! in [`Stats`] and optionally appends them to an NDJSON record file, one whole request
//! per write.
//!
//! Files: `conn.rs` runs a connection and those steps, `http.rs` reads heads and bodies
//! and writes responses, `scan.rs` splits a batch and reads its calls' fields in one
//! pass, `validate.rs` checks calls (and is the reference the scan falls back to), `faults.rs` decides
//! faults from a seed, `stats.rs` holds the counters.
//!
//! The API key is kept only as the expected `Authorization` value, compared in constant
//! time, and never printed, logged or served.

mod conn;
mod faults;
mod http;
mod scan;
mod stats;
mod validate;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::config::{ApiKey, Limits};

pub use stats::{Injected, Stats, Violations};

/// Connections served at once. Past this a new connection gets a 503 and is closed:
/// each one holds a thread and up to a request's worth of buffers.
pub const MAX_CONNECTIONS: usize = 512;

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

/// Misbehaviour to inject, so retries, backoff and rate limiting can be rehearsed.
/// Every rate is a probability in [0, 1] decided by a PRNG seeded with `seed`.
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
    /// Delay every answer that passes the faults by this much.
    pub latency_ms: u64,
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
    #[error("cannot start the receiver's accept thread: {0}")]
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

/// What the accept thread and every connection thread share.
struct Shared {
    limits: Limits,
    /// The exact `Authorization` value expected, when a key was given.
    auth: Option<String>,
    faults: Faults,
    record: Option<Record>,
    state: Mutex<stats::State>,
    stop: AtomicBool,
    /// A handle on every open connection, so shutdown can unblock their reads.
    conns: Mutex<HashMap<u64, TcpStream>>,
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
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds, starts the accept thread and returns at once.
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
        let listener = TcpListener::bind(cfg.addr).map_err(|source| ServeError::Bind {
            addr: cfg.addr,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: cfg.addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            limits: cfg.limits,
            auth: cfg.api_key.as_ref().map(ApiKey::basic_auth_header),
            faults: cfg.faults,
            record,
            state: Mutex::new(stats::State::default()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("serve-accept".into())
                .spawn(move || accept_loop(listener, &shared))
                .map_err(ServeError::Spawn)?
        };
        Ok(Server {
            addr,
            shared,
            accept: Some(accept),
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

    /// Stops accepting, closes every connection, waits for the threads, flushes the
    /// record file, and returns the final stats.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        // The accept thread is blocked in accept(); a connection of our own wakes it.
        // If even that fails the listener is already broken and accept() has returned.
        let _ = TcpStream::connect_timeout(&connectable(self.addr), Duration::from_secs(1));
        let _ = accept.join();
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

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Typically out of file descriptors: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        let id = next_id;
        next_id += 1;
        let registered = {
            let mut conns = lock(&shared.conns);
            if conns.len() >= MAX_CONNECTIONS {
                false
            } else if let Ok(handle) = stream.try_clone() {
                conns.insert(id, handle);
                true
            } else {
                false
            }
        };
        if !registered {
            refuse(&stream);
            continue;
        }
        let worker_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("serve-conn".into())
            .spawn(move || {
                conn::serve_connection(&worker_shared, stream);
                lock(&worker_shared.conns).remove(&id);
            });
        match spawned {
            Ok(w) => workers.push(w),
            Err(_) => {
                // The stream moved into the failed closure and is closed with it.
                lock(&shared.conns).remove(&id);
            }
        }
    }
    // Unblock every connection thread's read, then wait for them to finish.
    for stream in lock(&shared.conns).values() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Turns away a connection over [`MAX_CONNECTIONS`].
fn refuse(stream: &TcpStream) {
    let body = conn::error_body("too many connections");
    let response = http::Response::json(503, &body, false);
    let _ = response.write_to(stream, &mut Vec::new());
    let _ = stream.shutdown(Shutdown::Both);
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
    eprintln!("listening on http://{}", server.local_addr());
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
