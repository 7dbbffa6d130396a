//! The HTTP transport (isahc) and the dry-run transport, behind one small trait.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use futures_lite::AsyncReadExt;
use isahc::config::{Configurable, ExpectContinue, VersionNegotiation};
use isahc::{AsyncBody, HttpClient, Request};

use super::retry::{parse_retry_after, Attempt};
use crate::config::{ApiKey, HttpVersion};

/// Sends one request body to a path such as `/v1/batch`.
pub trait Transport: Send + Sync {
    /// `gzipped`: `body` is already gzip-compressed; say so in `Content-Encoding`.
    fn post(&self, path: &str, body: &Arc<Vec<u8>>, gzipped: bool) -> Attempt;

    /// The URL a post to `path` goes to, for messages (it never holds the key, which
    /// travels in a header).
    fn url(&self, path: &str) -> String;
}

/// The HTTP client could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the HTTP client: {0}")]
pub struct ClientError(#[source] isahc::Error);

/// HTTPS (or loopback HTTP) to a Segment-compatible API, through one client shared by
/// every worker: connections are kept alive and reused (up to `max_connections` to the
/// host), and HTTP/2 is used where the server offers it (ALPN), HTTP/1.1 otherwise
/// (or as `--http-version` says: 2 speaks HTTP/2 to a plain `http://` receiver too).
pub struct HttpTransport {
    client: HttpClient,
    base: String,
}

impl HttpTransport {
    pub fn new(
        base: &str,
        key: Option<&ApiKey>,
        strict: bool,
        connect_timeout: Duration,
        request_timeout: Duration,
        max_connections: usize,
        version: HttpVersion,
    ) -> Result<Self, ClientError> {
        let negotiation = match version {
            HttpVersion::Auto => VersionNegotiation::latest_compatible(),
            HttpVersion::Http11 => VersionNegotiation::http11(),
            HttpVersion::Http2 => VersionNegotiation::http2(),
        };
        let mut b = HttpClient::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .tcp_nodelay()
            .tcp_keepalive(Duration::from_secs(30))
            // curl would otherwise wait for `100 Continue` before large bodies.
            .expect_continue(ExpectContinue::disabled())
            .version_negotiation(negotiation)
            .max_connections_per_host(max_connections.max(1))
            .default_header("Content-Type", "application/json")
            .default_header(
                "User-Agent",
                concat!("cdp-backfill/", env!("CARGO_PKG_VERSION")),
            );
        if strict {
            b = b.default_header("X-Strict-Mode", "1");
        }
        if let Some(k) = key {
            b = b.default_header("Authorization", k.basic_auth_header());
        }
        let client = b.build().map_err(ClientError)?;
        Ok(HttpTransport {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

impl Transport for HttpTransport {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn post(&self, path: &str, body: &Arc<Vec<u8>>, gzipped: bool) -> Attempt {
        let mut req = Request::post(format!("{}{}", self.base, path));
        if gzipped {
            req = req.header("Content-Encoding", "gzip");
        }
        // The shared body, read by curl on isahc's agent thread straight from memory (no
        // copy). Through isahc's blocking `send`, a reader body would be pumped across a
        // pipe from this thread in 16 KB pieces, each a cross-thread wake-up (measured:
        // ~24,000 context switches and ~0.3 CPU s per 1M calls). A reader, not an
        // in-memory `AsyncBody`, so curl cannot rewind it: curl would otherwise re-send
        // a body on its own when a reused connection dies unanswered, past the gate and
        // uncounted, where every attempt must be one of ours.
        let wire = AsyncBody::from_reader_sized(
            SharedBody {
                bytes: body.clone(),
                at: 0,
            },
            body.len() as u64,
        );
        let req = match req.body(wire) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::NoResponse {
                    why: format!("invalid request: {e}"),
                    fatal: true,
                }
            }
        };
        match block_on(self.client.send_async(req)) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                // Keep the start of the answer for messages; drain the rest as it
                // arrives (never held in memory) so the connection can be reused.
                let mut head = Vec::new();
                let body = resp.body_mut();
                let _ = block_on((&mut *body).take(ANSWER_KEPT).read_to_end(&mut head));
                let _ = block_on(futures_lite::io::copy(body, futures_lite::io::sink()));
                let text = String::from_utf8_lossy(&head).into_owned();
                Attempt::Response {
                    status,
                    retry_after,
                    body: text,
                }
            }
            Err(e) => {
                use isahc::error::ErrorKind as K;
                let fatal = matches!(
                    e.kind(),
                    K::BadServerCertificate
                        | K::BadClientCertificate
                        | K::InvalidCredentials
                        | K::InvalidRequest
                        | K::ClientInitialization
                        | K::InvalidTlsConfiguration
                );
                // curl calls an answer cut off, or none at all on a reused connection, a
                // protocol violation; for a user it is a dropped connection.
                let why = match e.kind() {
                    K::ProtocolViolation => {
                        format!("the connection closed without a complete answer ({e})")
                    }
                    _ => e.to_string(),
                };
                Attempt::NoResponse { why, fatal }
            }
        }
    }
}

/// A request body shared with the sender (kept for retries), read without copying.
struct SharedBody {
    bytes: Arc<Vec<u8>>,
    at: usize,
}

impl futures_lite::AsyncRead for SharedBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let rest = &self.bytes[self.at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

/// Bytes of an answer kept for messages.
const ANSWER_KEPT: u64 = 4096;

/// Runs a future on this thread: the sender threads are plain threads that wait for
/// their one request anyway, and isahc's agent thread does the I/O and wakes them.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A spurious wake-up only polls again.
        std::thread::park();
    }
}

/// `--dry-run`: sends nothing; with `--output`, writes each body as one line to the file
/// at that path.
pub struct DryRunTransport {
    out: Option<(PathBuf, Mutex<Box<dyn Write + Send>>)>,
}

impl DryRunTransport {
    pub fn new(out: Option<(PathBuf, Box<dyn Write + Send>)>) -> Self {
        DryRunTransport {
            out: out.map(|(p, w)| (p, Mutex::new(w))),
        }
    }

    /// Writing each body to a new file at `path`.
    pub fn writing_to(path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::File::create(path)?;
        let w = std::io::BufWriter::with_capacity(1 << 20, f);
        Ok(DryRunTransport::new(Some((
            path.to_path_buf(),
            Box::new(w),
        ))))
    }

    /// Writes out what is buffered.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Some((_, o)) = &self.out {
            let mut w = o.lock().unwrap_or_else(|p| p.into_inner());
            w.flush()?;
        }
        Ok(())
    }
}

impl Transport for DryRunTransport {
    fn url(&self, path: &str) -> String {
        format!("(dry run){path}")
    }

    fn post(&self, _path: &str, body: &Arc<Vec<u8>>, _gzipped: bool) -> Attempt {
        if let Some((path, o)) = &self.out {
            let mut w = o.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = w.write_all(body).and_then(|_| w.write_all(b"\n")) {
                return Attempt::NoResponse {
                    why: format!("cannot write --output {}: {e}", path.display()),
                    fatal: true,
                };
            }
        }
        Attempt::Response {
            status: 200,
            retry_after: None,
            body: String::new(),
        }
    }
}
