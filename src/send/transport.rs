//! The HTTP transport (isahc) and the dry-run transport, behind one small trait.

use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use isahc::config::{Configurable, ExpectContinue, VersionNegotiation};
use isahc::{HttpClient, Request};

use super::retry::{parse_retry_after, Attempt};
use crate::config::ApiKey;

/// Sends one request body to a path such as `/v1/batch`.
pub trait Transport: Send + Sync {
    /// `gzipped`: `body` is already gzip-compressed; say so in `Content-Encoding`.
    fn post(&self, path: &str, body: &Arc<Vec<u8>>, gzipped: bool) -> Attempt;
}

/// Lets isahc stream a shared body without copying it for each attempt.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// HTTPS (or loopback HTTP) to a Segment-compatible API, through one client shared by
/// every worker: connections are kept alive and reused (up to `max_connections` to the
/// host), and HTTP/2 is used where the server offers it (ALPN), HTTP/1.1 otherwise.
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
    ) -> Result<Self, String> {
        let mut b = HttpClient::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .tcp_nodelay()
            .tcp_keepalive(Duration::from_secs(30))
            // curl would otherwise wait for `100 Continue` before large bodies.
            .expect_continue(ExpectContinue::disabled())
            .version_negotiation(VersionNegotiation::latest_compatible())
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
        let client = b
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(HttpTransport {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

impl Transport for HttpTransport {
    fn post(&self, path: &str, body: &Arc<Vec<u8>>, gzipped: bool) -> Attempt {
        let len = body.len() as u64;
        let mut req = Request::post(format!("{}{}", self.base, path));
        if gzipped {
            req = req.header("Content-Encoding", "gzip");
        }
        let req = req.body(isahc::Body::from_reader_sized(
            Cursor::new(Shared(body.clone())),
            len,
        ));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Attempt::NoResponse {
                    why: format!("invalid request: {e}"),
                    fatal: true,
                }
            }
        };
        match self.client.send(req) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                // Keep the start of the answer for messages; drain the rest so the
                // connection can be reused.
                let mut head = Vec::new();
                let _ = resp.body_mut().take(4096).read_to_end(&mut head);
                let _ = std::io::copy(resp.body_mut(), &mut std::io::sink());
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
                Attempt::NoResponse {
                    why: e.to_string(),
                    fatal,
                }
            }
        }
    }
}

/// `--dry-run`: sends nothing; with `--output`, writes each body as one line.
pub struct DryRunTransport {
    out: Option<Mutex<Box<dyn Write + Send>>>,
}

impl DryRunTransport {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        DryRunTransport {
            out: out.map(Mutex::new),
        }
    }

    pub fn flush(&self) -> std::io::Result<()> {
        if let Some(o) = &self.out {
            let mut w = o.lock().unwrap_or_else(|p| p.into_inner());
            w.flush()?;
        }
        Ok(())
    }
}

impl Transport for DryRunTransport {
    fn post(&self, _path: &str, body: &Arc<Vec<u8>>, _gzipped: bool) -> Attempt {
        if let Some(o) = &self.out {
            let mut w = o.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = w.write_all(body).and_then(|_| w.write_all(b"\n")) {
                return Attempt::NoResponse {
                    why: format!("cannot write --output: {e}"),
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
