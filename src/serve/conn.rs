//! Connections: the accept loop, the connection bound, and hyper serving HTTP/1.1 and
//! HTTP/2 (prior knowledge, "h2c") on the same plain-TCP port.
//!
//! hyper-util's `auto` builder reads the first bytes of a connection: the HTTP/2
//! preface makes it an HTTP/2 connection, anything else HTTP/1.x, so a client needs no
//! upgrade dance and the engine's tests can use either. Every request of either goes to
//! [`handle::serve`].
//!
//! Invariants: at most [`MAX_CONNECTIONS`] connections are served at once (past that a
//! new one gets a 503 and is closed); a connection with no bytes moving for
//! [`IDLE_TIMEOUT`] is closed (with a request open, for that plus the longest simulated
//! latency), so abandoned keep-alive connections and stalled uploads do not hold slots
//! forever; on shutdown every connection task is aborted, which closes its socket, idle
//! or not.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::handle;
use super::Shared;

/// Connections served at once. Past this a new connection gets a 503 and is closed:
/// each one holds buffers and, for HTTP/2, up to [`MAX_STREAMS`] requests.
pub const MAX_CONNECTIONS: usize = 512;
/// Requests in flight on one HTTP/2 connection: the engine's largest concurrency.
const MAX_STREAMS: u32 = 256;
/// How long a connection may sit with no bytes moving (idle, or stalled mid-request)
/// before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// hyper's HTTP/1 read buffer limit: the largest request head it accepts (a larger one
/// gets 431). Real clients send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Accepts until `stop` turns true, then aborts every connection and returns.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        // Our own watchdog below covers idle and stalled connections of both versions.
        .header_read_timeout(None)
        .auto_date_header(false);
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS)
        .auto_date_header(false);
    let builder = Arc::new(builder);
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Typically out of file descriptors: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            tasks.spawn(refuse(stream));
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&open));
        tasks.spawn(serve_connection(
            stream,
            Arc::clone(&builder),
            Arc::clone(&shared),
            slot,
        ));
    }
    // Dropping each task drops its connection and closes the socket.
    tasks.shutdown().await;
}

/// Holds one of the [`MAX_CONNECTIONS`] slots until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Turns away a connection over [`MAX_CONNECTIONS`] with a plain HTTP/1.1 503.
async fn refuse(mut stream: TcpStream) {
    let body = handle::error_body("too many connections");
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// When bytes last moved on a connection, and how many of its requests are open, for
/// the idle watchdog.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Marks one request as open until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Busy {
        a.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(a))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    _slot: Slot,
) {
    // Answers are single small writes; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        last_ms: AtomicU64::new(0),
        busy: AtomicUsize::new(0),
    });
    // A request may rightly move no bytes for as long as its simulated round trip.
    let f = &shared.faults;
    let busy_limit = IDLE_TIMEOUT + Duration::from_millis(f.latency_ms + f.latency_jitter_ms);
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let busy = Busy::new(&activity);
            async move {
                let r = handle::serve(&shared, req).await;
                drop(busy);
                r
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::select! {
        _ = conn => {}
        () = watchdog(&activity, busy_limit) => {}
    }
}

/// Returns once no bytes have moved on the connection for [`IDLE_TIMEOUT`] (or, while
/// a request is open, for `busy_limit`: a client stalled mid-body is dropped too).
async fn watchdog(activity: &Activity, busy_limit: Duration) {
    loop {
        let idle = activity.idle_for();
        let limit = if activity.busy.load(Ordering::Acquire) == 0 {
            IDLE_TIMEOUT
        } else {
            busy_limit
        };
        if idle >= limit {
            return;
        }
        tokio::time::sleep((limit - idle).max(Duration::from_secs(1))).await;
    }
}

/// A stream that notes when bytes last moved, for the watchdog.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
