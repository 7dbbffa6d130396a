//! Just enough HTTP/1.1 for the receiver: request heads, bodies, responses.
//!
//! Everything a client sends is untrusted. The head is capped at [`MAX_HEAD_BYTES`];
//! a body is never buffered beyond what the caller asks to keep, and never read past a
//! hard cap (the wire size, and for gzip the decompressed size), so a lying
//! `Content-Length`, an endless chunked stream or a gzip bomb costs bounded memory and
//! bounded time. A body that is not read to its end leaves the connection out of step,
//! so every error that stops a body early tells the caller to close.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;

/// Request heads larger than this are refused (431): real clients send a few hundred bytes.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers httparse will accept in one head.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    /// Anything else: answered 415.
    Unsupported,
}

/// The parts of a request head the receiver acts on, owned so the connection buffer is
/// free for the body.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: Method,
    /// The path without its query string.
    pub path: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub encoding: Encoding,
    pub expect_continue: bool,
    pub keep_alive: bool,
    pub authorization: Option<String>,
    pub strict: bool,
}

impl Head {
    /// Whether a body follows the head.
    pub(crate) fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Why no usable head was read. All of them end the connection.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed, reset or timed out: nothing to answer.
    Gone,
    /// The head is over [`MAX_HEAD_BYTES`] or has too many headers: 431.
    TooLarge,
    /// Not HTTP, or framing we refuse (both Content-Length and chunked, conflicting
    /// lengths, an unknown transfer coding): 400.
    Bad(&'static str),
}

/// Reads one request head. `Ok(None)` is a clean close between requests. Bytes after
/// the head stay in `reader` for the body (or a pipelined request).
pub(crate) fn read_head(
    reader: &mut impl BufRead,
    scratch: &mut Vec<u8>,
) -> Result<Option<Head>, HeadError> {
    scratch.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Gone),
        };
        if available.is_empty() {
            return if scratch.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Gone)
            };
        }
        let before = scratch.len();
        let take = available.len().min(MAX_HEAD_BYTES + 1 - before);
        scratch.extend_from_slice(&available[..take]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(scratch) {
            Ok(httparse::Status::Complete(n)) => {
                // Only the head's bytes are consumed; the rest is body. The head
                // cannot end inside bytes already found Partial, so n > before.
                reader.consume(n.saturating_sub(before));
                return interpret(&req).map(Some);
            }
            Ok(httparse::Status::Partial) => {
                reader.consume(take);
                if scratch.len() > MAX_HEAD_BYTES {
                    return Err(HeadError::TooLarge);
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Bad("malformed request head")),
        }
    }
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn interpret(req: &httparse::Request<'_, '_>) -> Result<Head, HeadError> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    let http10 = req.version == Some(0);
    let mut head = Head {
        method,
        path,
        content_length: None,
        chunked: false,
        encoding: Encoding::Identity,
        expect_continue: false,
        keep_alive: !http10,
        authorization: None,
        strict: false,
    };
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            // Only opaque headers we ignore may carry non-UTF-8; ours are ASCII.
            continue;
        };
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .map_err(|_| HeadError::Bad("Content-Length is not a number"))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Bad("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only plain "chunked" is supported; anything stacked under it would need
            // decoders nobody sends to this API.
            if value.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                return Err(HeadError::Bad("unsupported Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.encoding =
                if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
                    Encoding::Gzip
                } else if value.is_empty() || value.eq_ignore_ascii_case("identity") {
                    Encoding::Identity
                } else {
                    Encoding::Unsupported
                };
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                head.keep_alive = false;
            } else if has_token(value, "keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("x-strict-mode") {
            head.strict = value == "1" || value.eq_ignore_ascii_case("true");
        }
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 §6.1: a request with both is a smuggling attempt or a broken client.
        return Err(HeadError::Bad(
            "both Content-Length and chunked Transfer-Encoding",
        ));
    }
    Ok(head)
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the hard cap on the wire or after decompression: 413, then close.
    TooLarge,
    /// A chunked body with broken framing: 400, then close.
    BadFraming,
    /// The gzip stream is corrupt. The wire body was read to its end, so the
    /// connection can go on: 400.
    BadGzip,
    /// The peer went away or timed out mid-body: close without answering.
    Io,
}

/// A `Read` over exactly one request body on the wire: `Content-Length` bytes or the
/// decoded chunks, never more than `cap` bytes.
struct WireBody<'r, R> {
    inner: &'r mut R,
    mode: Mode,
    read: u64,
    cap: u64,
    over_cap: bool,
    bad_framing: bool,
    line: Vec<u8>,
}

enum Mode {
    Length {
        remaining: u64,
    },
    /// Expecting a chunk-size line.
    ChunkSize,
    ChunkData {
        remaining: u64,
    },
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    Done,
}

fn framing_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "bad chunked framing")
}

impl<R: BufRead> WireBody<'_, R> {
    /// Reads one CRLF- (or LF-) terminated line into `self.line`, without the ending.
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (chunk, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            if self.line.len() + chunk.len() > MAX_CHUNK_LINE {
                self.bad_framing = true;
                return Err(framing_error());
            }
            self.line.extend_from_slice(chunk);
            let used = chunk.len();
            self.inner.consume(used);
            if done {
                self.line.pop();
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                return Ok(());
            }
        }
    }

    fn parse_chunk_size(&mut self) -> io::Result<u64> {
        let digits = self
            .line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if digits.is_empty() || digits.len() > 15 {
            self.bad_framing = true;
            return Err(framing_error());
        }
        let mut n = 0u64;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => {
                    self.bad_framing = true;
                    return Err(framing_error());
                }
            };
            // At most 15 hex digits, so this cannot overflow.
            n = n * 16 + u64::from(v);
        }
        Ok(n)
    }

    fn take_data(&mut self, out: &mut [u8], remaining: u64) -> io::Result<usize> {
        let want = out
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n)
    }
}

impl<R: BufRead> Read for WireBody<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.mode {
                Mode::Done => return Ok(0),
                Mode::Length { remaining: 0 } => {
                    self.mode = Mode::Done;
                }
                Mode::Length { remaining } => {
                    let n = self.take_data(out, remaining)?;
                    self.mode = Mode::Length {
                        remaining: remaining - n as u64,
                    };
                    self.read += n as u64;
                    return Ok(n);
                }
                Mode::ChunkSize => {
                    self.read_line()?;
                    let size = self.parse_chunk_size()?;
                    if size == 0 {
                        // Trailer fields, if any, up to the empty line: read and ignored.
                        loop {
                            self.read_line()?;
                            if self.line.is_empty() {
                                break;
                            }
                        }
                        self.mode = Mode::Done;
                    } else if self.read.saturating_add(size) > self.cap {
                        self.over_cap = true;
                        return Err(io::Error::other("body over the hard cap"));
                    } else {
                        self.mode = Mode::ChunkData { remaining: size };
                    }
                }
                Mode::ChunkData { remaining } => {
                    let n = self.take_data(out, remaining)?;
                    let left = remaining - n as u64;
                    self.mode = if left == 0 {
                        Mode::ChunkEnd
                    } else {
                        Mode::ChunkData { remaining: left }
                    };
                    self.read += n as u64;
                    return Ok(n);
                }
                Mode::ChunkEnd => {
                    self.read_line()?;
                    if !self.line.is_empty() {
                        self.bad_framing = true;
                        return Err(framing_error());
                    }
                    self.mode = Mode::ChunkSize;
                }
            }
        }
    }
}

/// Limits for one body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Bytes of the (decompressed) body kept in memory. A larger body is read on,
    /// counted and discarded, so the caller learns its size without holding it.
    pub keep: usize,
    /// Hard cap on both the wire size and the decompressed size.
    pub cap: u64,
}

/// Reads the body described by `head` from `reader`. Afterwards `out` holds the first
/// `limits.keep` bytes of the decompressed body, and the result is its full size; when
/// that size is over `keep`, `out` is incomplete and must not be parsed.
pub(crate) fn read_body<R: BufRead>(
    reader: &mut R,
    head: &Head,
    limits: BodyLimits,
    out: &mut Vec<u8>,
) -> Result<u64, BodyError> {
    let mode = if head.chunked {
        out.clear();
        Mode::ChunkSize
    } else {
        let n = head.content_length.unwrap_or(0);
        if n > limits.cap {
            // Refused before a byte is read or a buffer sized from it.
            out.clear();
            return Err(BodyError::TooLarge);
        }
        if head.encoding != Encoding::Gzip {
            if let Some(n) = usize::try_from(n).ok().filter(|&n| n <= limits.keep) {
                return read_exactly(reader, n, out);
            }
        }
        out.clear();
        if head.encoding == Encoding::Identity {
            // A modest head start; `read_to_end` grows from here.
            out.reserve(
                usize::try_from(n)
                    .unwrap_or(0)
                    .min(limits.keep)
                    .min(1 << 20),
            );
        }
        Mode::Length { remaining: n }
    };
    let mut wire = WireBody {
        inner: reader,
        mode,
        read: 0,
        cap: limits.cap,
        over_cap: false,
        bad_framing: false,
        line: Vec::new(),
    };
    let classify = |w: &WireBody<'_, R>| {
        if w.over_cap {
            BodyError::TooLarge
        } else if w.bad_framing {
            BodyError::BadFraming
        } else {
            BodyError::Io
        }
    };
    match head.encoding {
        Encoding::Gzip => {
            let mut gz = flate2::read::MultiGzDecoder::new(&mut wire);
            let result = copy_limited(&mut gz, out, limits);
            drop(gz);
            match result {
                Ok(Some(size)) => {
                    // Anything after the gzip stream (there should be nothing) is
                    // still part of this body: read it off so the next request parses.
                    drain(&mut wire).map_err(|_| classify(&wire))?;
                    Ok(size)
                }
                Ok(None) => Err(BodyError::TooLarge),
                Err(_) if wire.over_cap || wire.bad_framing => Err(classify(&wire)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && wire_is_short(&wire) => {
                    Err(BodyError::Io)
                }
                Err(_) => {
                    // Corrupt gzip over an intact body: read the body to its end so
                    // the connection stays usable, then report it as malformed.
                    drain(&mut wire).map_err(|_| classify(&wire))?;
                    Err(BodyError::BadGzip)
                }
            }
        }
        // Unsupported encodings are still read (as identity) so the connection stays
        // in step; the caller answers 415.
        Encoding::Identity | Encoding::Unsupported => match copy_limited(&mut wire, out, limits) {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(BodyError::TooLarge),
            Err(_) => Err(classify(&wire)),
        },
    }
}

/// The common case, a plain body of a known length that is kept whole: read straight
/// into `out` (past what the reader has buffered, without a copy through it), sized
/// once. `out` is not cleared first, so a reused buffer is zero-filled only where it
/// grows.
fn read_exactly<R: BufRead>(reader: &mut R, n: usize, out: &mut Vec<u8>) -> Result<u64, BodyError> {
    out.resize(n, 0);
    match reader.read_exact(out) {
        Ok(()) => Ok(n as u64),
        Err(_) => {
            out.clear();
            Err(BodyError::Io)
        }
    }
}

/// True when the wire body has bytes still to come (the peer hung up mid-body), as
/// opposed to a gzip stream that ended early inside a complete body.
fn wire_is_short<R>(w: &WireBody<'_, R>) -> bool {
    !matches!(w.mode, Mode::Done | Mode::Length { remaining: 0 })
}

/// Copies `src` into `out` up to `limits.keep` bytes, then counts and discards the rest.
/// `Ok(None)` when the total passes `limits.cap`.
fn copy_limited(
    src: &mut impl Read,
    out: &mut Vec<u8>,
    limits: BodyLimits,
) -> io::Result<Option<u64>> {
    let kept = src.take(limits.keep as u64).read_to_end(out)? as u64;
    if (out.len()) < limits.keep {
        return Ok(Some(kept));
    }
    let mut total = kept;
    let mut sink = [0u8; 16 * 1024];
    loop {
        let n = match src.read(&mut sink) {
            Ok(0) => return Ok(Some(total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limits.cap {
            return Ok(None);
        }
    }
}

fn drain(src: &mut impl Read) -> io::Result<()> {
    io::copy(src, &mut io::sink()).map(|_| ())
}

/// The reason phrase for the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// One response, written in a single `write_all` so a client never sees half a head.
pub(crate) struct Response<'a> {
    pub status: u16,
    pub content_type: &'static str,
    pub body: &'a [u8],
    pub retry_after: Option<u64>,
    pub keep_alive: bool,
}

impl<'a> Response<'a> {
    pub(crate) fn json(status: u16, body: &'a [u8], keep_alive: bool) -> Self {
        Response {
            status,
            content_type: "application/json",
            body,
            retry_after: None,
            keep_alive,
        }
    }

    pub(crate) fn write_to(&self, mut stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let _ = write!(
            buf,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if self.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
        );
        if let Some(secs) = self.retry_after {
            let _ = write!(buf, "Retry-After: {secs}\r\n");
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(self.body);
        stream.write_all(buf)?;
        stream.flush()
    }
}

/// The interim answer to `Expect: 100-continue`; without it curl waits a second before
/// sending the body.
pub(crate) fn write_continue(mut stream: &TcpStream) -> io::Result<()> {
    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head_of(raw: &[u8]) -> Result<Option<Head>, HeadError> {
        let mut r = io::BufReader::with_capacity(7, Cursor::new(raw.to_vec()));
        read_head(&mut r, &mut Vec::new())
    }

    fn body_of(raw: &[u8], keep: usize, cap: u64) -> (Result<u64, BodyError>, Vec<u8>, Vec<u8>) {
        // A tiny buffer so every boundary case is crossed.
        let mut r = io::BufReader::with_capacity(5, Cursor::new(raw.to_vec()));
        let head = read_head(&mut r, &mut Vec::new())
            .expect("head parses")
            .expect("not EOF");
        let mut out = Vec::new();
        let res = read_body(&mut r, &head, BodyLimits { keep, cap }, &mut out);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("cursor read");
        (res, out, rest)
    }

    #[test]
    fn head_fields_are_interpreted() {
        let h = head_of(
            b"POST /v1/batch?x=1 HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\
              Content-Encoding: gzip\r\nExpect: 100-continue\r\nX-Strict-Mode: 1\r\n\
              Authorization: Basic abc\r\n\r\n",
        )
        .expect("valid")
        .expect("not EOF");
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path, "/v1/batch");
        assert_eq!(h.content_length, Some(5));
        assert_eq!(h.encoding, Encoding::Gzip);
        assert!(h.expect_continue && h.strict && !h.keep_alive);
        assert_eq!(h.authorization.as_deref(), Some("Basic abc"));
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let h = head_of(b"GET / HTTP/1.0\r\n\r\n")
            .expect("valid")
            .expect("not EOF");
        assert!(!h.keep_alive);
        let h = head_of(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("valid")
            .expect("not EOF");
        assert!(h.keep_alive);
    }

    #[test]
    fn bad_heads_are_refused_not_panicked_on() {
        assert!(matches!(head_of(b""), Ok(None)));
        assert!(matches!(head_of(b"POST /v1/ba"), Err(HeadError::Gone)));
        assert!(matches!(
            head_of(b"\x00\x01garbage\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(
            head_of(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(
            head_of(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        assert!(matches!(head_of(&big), Err(HeadError::TooLarge)));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(head_of(&many), Err(HeadError::TooLarge)));
    }

    #[test]
    fn content_length_body_leaves_the_next_request_alone() {
        let (res, body, rest) = body_of(
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello worldGET /",
            100,
            1000,
        );
        assert_eq!(res.expect("read"), 11);
        assert_eq!(body, b"hello world");
        assert_eq!(rest, b"GET /");
    }

    #[test]
    fn chunked_body_is_decoded() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (res, body, rest) = body_of(raw, 100, 1000);
        assert_eq!(res.expect("read"), 11);
        assert_eq!(body, b"hello world");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn broken_chunking_is_a_framing_error() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        assert!(matches!(
            body_of(raw, 100, 1000).0,
            Err(BodyError::BadFraming)
        ));
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n";
        assert!(matches!(
            body_of(raw, 100, 1000).0,
            Err(BodyError::BadFraming)
        ));
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n";
        assert!(matches!(
            body_of(raw, 100, 1000).0,
            Err(BodyError::BadFraming)
        ));
    }

    #[test]
    fn huge_content_length_is_refused_without_reading() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\nabc";
        let (res, body, rest) = body_of(raw, 100, 1000);
        assert!(matches!(res, Err(BodyError::TooLarge)));
        assert!(body.capacity() < 1000);
        assert_eq!(rest, b"abc");
    }

    #[test]
    fn chunked_body_over_the_cap_is_refused() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n";
        assert!(matches!(
            body_of(raw, 100, 1000).0,
            Err(BodyError::TooLarge)
        ));
    }

    #[test]
    fn bodies_over_keep_are_counted_not_kept() {
        let mut raw = b"POST / HTTP/1.1\r\nContent-Length: 500\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 500));
        let (res, body, _) = body_of(&raw, 100, 1000);
        assert_eq!(res.expect("read"), 500);
        assert_eq!(body.len(), 100);
    }

    #[test]
    fn early_eof_is_io() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\nshort";
        assert!(matches!(body_of(raw, 100, 1000).0, Err(BodyError::Io)));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        // `best`, because how small `fast` gets a run of one byte depends on which zlib
        // backend feature unification picks for flate2.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("in-memory write");
        enc.finish().expect("in-memory finish")
    }

    fn gzip_request(payload: &[u8]) -> Vec<u8> {
        let mut raw = format!(
            "POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        raw.extend_from_slice(payload);
        raw.extend_from_slice(b"NEXT");
        raw
    }

    #[test]
    fn gzip_bodies_are_decompressed() {
        let (res, body, rest) = body_of(&gzip_request(&gzip(b"{\"batch\":[]}")), 100, 1000);
        assert_eq!(res.expect("read"), 12);
        assert_eq!(body, b"{\"batch\":[]}");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'a'; 10_000_000]);
        assert!(bomb.len() < 50_000);
        let (res, body, rest) = body_of(&gzip_request(&bomb), 100, 100_000);
        assert!(matches!(res, Err(BodyError::TooLarge)));
        assert_eq!(body.len(), 100);
        // The connection is closed after a 413, so the leftovers do not matter.
        drop(rest);
    }

    #[test]
    fn corrupt_gzip_is_reported_and_the_body_consumed() {
        let (res, _, rest) = body_of(&gzip_request(b"definitely not gzip"), 100, 1000);
        assert!(matches!(res, Err(BodyError::BadGzip)));
        assert_eq!(rest, b"NEXT");
        let mut truncated = gzip(b"{\"batch\":[1,2,3,4,5,6,7,8,9]}");
        truncated.truncate(truncated.len() - 6);
        let (res, _, rest) = body_of(&gzip_request(&truncated), 100, 1000);
        assert!(matches!(res, Err(BodyError::BadGzip)));
        assert_eq!(rest, b"NEXT");
    }
}
