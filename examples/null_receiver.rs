//! A receiver that does as little as an HTTP server can: it reads each request's body
//! out of the socket, throws it away, and answers 200 `{"ok":true}`. It checks nothing,
//! so it is no stand-in for `cdp-backfill serve` in a test. It is a measuring
//! instrument: `scripts/bench` runs step c) against it as well (step n), and the gap
//! between the two shows what the receiver's own work costs on a machine where the
//! engine and the receiver share the cores, and what the engine's sending costs alone.
//!
//! Usage: `cargo run --release --example null_receiver -- 127.0.0.1:PORT`
//! `GET /stats` answers `{"requests":N,"bytes":N}` over every POST so far (bodies only),
//! so the caller can check that the bytes the engine says it sent arrived. Bodies must
//! come with `Content-Length` (the engine always sends one); anything else is answered
//! 411 and the connection closed. It runs until killed.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Room for a request head and whatever follows it in one read.
const HEAD_ROOM: usize = 64 * 1024;
/// Bodies are read into this much at a time, and dropped.
const SINK: usize = 1024 * 1024;

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: null_receiver 127.0.0.1:PORT");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let totals = Arc::new(Totals::default());
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of file descriptors, say: wait a moment instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let totals = Arc::clone(&totals);
        std::thread::spawn(move || {
            let _ = serve(stream, &totals);
        });
    }
    ExitCode::SUCCESS
}

/// One connection: requests one after another until the client closes it.
fn serve(mut stream: TcpStream, totals: &Totals) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut head = vec![0u8; HEAD_ROOM];
    let mut sink = vec![0u8; SINK];
    let mut have = 0; // bytes in `head` not yet consumed
    loop {
        // Read until a whole head is in.
        let (head_len, content_length, is_get) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut fields);
            match req.parse(&head[..have]) {
                Ok(httparse::Status::Complete(n)) => {
                    let length = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                    break (n, length, req.method == Some("GET"));
                }
                Ok(httparse::Status::Partial) if have < head.len() => {
                    let n = read(&mut stream, &mut head[have..])?;
                    if n == 0 {
                        return Ok(());
                    }
                    have += n;
                }
                _ => return reply(&mut stream, 400, b"{\"error\":\"bad request head\"}"),
            }
        };
        if is_get {
            let body = format!(
                "{{\"requests\":{},\"bytes\":{}}}",
                totals.requests.load(Ordering::Relaxed),
                totals.bytes.load(Ordering::Relaxed)
            );
            head.copy_within(head_len..have, 0);
            have -= head_len;
            reply(&mut stream, 200, body.as_bytes())?;
            continue;
        }
        let Some(length) = content_length else {
            return reply(&mut stream, 411, b"{\"error\":\"send Content-Length\"}");
        };
        // The body: first what came in with the head, then straight from the socket.
        let mut left: u64 = length;
        let buffered = ((have - head_len) as u64).min(left) as usize;
        left -= buffered as u64;
        head.copy_within(head_len + buffered..have, 0);
        have -= head_len + buffered;
        while left > 0 {
            let want = left.min(SINK as u64) as usize;
            let n = read(&mut stream, &mut sink[..want])?;
            if n == 0 {
                return Ok(());
            }
            left -= n as u64;
        }
        totals.requests.fetch_add(1, Ordering::Relaxed);
        totals.bytes.fetch_add(length, Ordering::Relaxed);
        reply(&mut stream, 200, b"{\"ok\":true}")?;
    }
}

/// One `read`, retried when a signal interrupts it.
fn read(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Answers; anything but a 200 closes the connection (the caller returns after it).
fn reply(stream: &mut TcpStream, status: u16, body: &[u8]) -> io::Result<()> {
    let keep = status == 200;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Length Required",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep { "keep-alive" } else { "close" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)
}
