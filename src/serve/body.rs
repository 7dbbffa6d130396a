//! Reading one request body off hyper, with the receiver's caps, the simulated uplink
//! and gzip decoding, into a buffer the caller reuses.
//!
//! Everything a client sends is untrusted: the wire bytes are never read past a hard cap,
//! the decompressed bytes are counted against the same cap (a gzip bomb stops there), and
//! no more than `keep` decompressed bytes are held, so a lying `Content-Length`, an
//! endless chunked stream or a bomb costs bounded memory and time. HTTP framing (chunked
//! coding, `Content-Length`, HTTP/2 DATA frames) is hyper's; hyper sends
//! `100 Continue` only once the body is first polled, so a body that will not be read is
//! never asked for.

use std::io::{self, Write};
use std::time::Instant;

use bytes::Buf;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::wan::Bandwidth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    /// Anything else: read (so the connection stays in step), then answered 415.
    Unsupported,
}

impl Encoding {
    /// From a `Content-Encoding` value.
    pub(crate) fn of(value: Option<&str>) -> Encoding {
        match value.map(str::trim) {
            None | Some("") => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("identity") => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
                Encoding::Gzip
            }
            Some(_) => Encoding::Unsupported,
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

/// Why a body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Over the hard cap on the wire or after decompression: 413, then close.
    TooLarge,
    /// The gzip stream is corrupt or cut short; the wire body was read to its end: 400.
    BadGzip,
    /// The peer went away, or the framing broke, mid-body: nothing to answer.
    Io,
}

/// What was read: the decompressed size (`out` holds its first `keep` bytes; over `keep`
/// it is incomplete and must not be parsed) and the bytes that came over the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Received {
    pub size: u64,
    pub wire: u64,
}

/// Reads `body` to its end (or to the first error) into `out`, which it clears first.
/// `wire` in the answer counts every byte read, also on error.
pub(crate) async fn read(
    mut body: Incoming,
    encoding: Encoding,
    limits: BodyLimits,
    bandwidth: Option<&Bandwidth>,
    out: &mut Vec<u8>,
) -> (Result<Received, BodyError>, u64) {
    let decoded = Decoded::new(out, limits);
    let mut sink = if encoding == Encoding::Gzip {
        Sink::Gzip(flate2::write::MultiGzDecoder::new(decoded))
    } else {
        Sink::Plain(decoded)
    };
    let mut wire = 0u64;
    // After a corrupt gzip stream the rest of the body is still read, and dropped.
    let mut corrupt = false;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (Err(BodyError::Io), wire);
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        wire += data.len() as u64;
        if wire > limits.cap {
            return (Err(BodyError::TooLarge), wire);
        }
        if let Some(bw) = bandwidth {
            let wait = bw.take(data.len(), Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        if !corrupt && write_all_buf(&mut sink, &mut data).is_err() {
            if sink.decoded().over_cap {
                return (Err(BodyError::TooLarge), wire);
            }
            corrupt = true;
        }
    }
    if let Sink::Gzip(d) = &mut sink {
        if corrupt || d.try_finish().is_err() {
            let e = if d.get_ref().over_cap {
                BodyError::TooLarge
            } else {
                BodyError::BadGzip
            };
            return (Err(e), wire);
        }
    }
    let size = sink.decoded().total;
    (Ok(Received { size, wire }), wire)
}

/// The decoded bytes' way in: straight, or through gzip. Lives on the stack of one
/// request's read; the size difference between the two is of no matter there.
#[allow(clippy::large_enum_variant)]
enum Sink<'o> {
    Plain(Decoded<'o>),
    Gzip(flate2::write::MultiGzDecoder<Decoded<'o>>),
}

impl<'o> Sink<'o> {
    fn decoded(&self) -> &Decoded<'o> {
        match self {
            Sink::Plain(d) => d,
            Sink::Gzip(g) => g.get_ref(),
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(d) => d.write(buf),
            Sink::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a hyper frame (usually one contiguous chunk) without copying it first.
fn write_all_buf(w: &mut impl Write, data: &mut impl Buf) -> io::Result<()> {
    while data.has_remaining() {
        let chunk = data.chunk();
        let n = chunk.len();
        w.write_all(chunk)?;
        data.advance(n);
    }
    Ok(())
}

/// Where decoded bytes go: kept up to `keep`, counted past it, refused past `cap`.
struct Decoded<'o> {
    out: &'o mut Vec<u8>,
    keep: usize,
    cap: u64,
    total: u64,
    over_cap: bool,
}

impl<'o> Decoded<'o> {
    /// Clears `out`, which may hold an earlier request's body.
    fn new(out: &'o mut Vec<u8>, limits: BodyLimits) -> Self {
        out.clear();
        Decoded {
            out,
            keep: limits.keep,
            cap: limits.cap,
            total: 0,
            over_cap: false,
        }
    }
}

impl Write for Decoded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > self.cap {
            self.over_cap = true;
            return Err(io::Error::other("body over the hard cap"));
        }
        let room = self.keep.saturating_sub(self.out.len());
        self.out.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        // `best`, because how small `fast` gets a run of one byte depends on which zlib
        // backend feature unification picks for flate2.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("in-memory write");
        enc.finish().expect("in-memory finish")
    }

    fn decode(wire: &[u8], keep: usize, cap: u64) -> (io::Result<()>, Vec<u8>, u64, bool) {
        let mut out = Vec::new();
        let sink = Decoded::new(&mut out, BodyLimits { keep, cap });
        let mut d = flate2::write::MultiGzDecoder::new(sink);
        let r = d.write_all(wire).and_then(|()| d.try_finish());
        let (total, over) = (d.get_ref().total, d.get_ref().over_cap);
        drop(d);
        (r, out, total, over)
    }

    #[test]
    fn encodings_are_read_case_blind() {
        assert_eq!(Encoding::of(None), Encoding::Identity);
        assert_eq!(Encoding::of(Some(" GZip ")), Encoding::Gzip);
        assert_eq!(Encoding::of(Some("x-gzip")), Encoding::Gzip);
        assert_eq!(Encoding::of(Some("identity")), Encoding::Identity);
        assert_eq!(Encoding::of(Some("br")), Encoding::Unsupported);
    }

    #[test]
    fn gzip_is_decoded_and_kept_up_to_keep() {
        let (r, out, total, _) = decode(&gzip(b"{\"batch\":[]}"), 100, 1000);
        assert!(r.is_ok());
        assert_eq!(out, b"{\"batch\":[]}");
        assert_eq!(total, 12);
        let (r, out, total, _) = decode(&gzip(&[b'x'; 500]), 100, 1000);
        assert!(r.is_ok());
        assert_eq!((out.len(), total), (100, 500));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'a'; 10_000_000]);
        assert!(bomb.len() < 50_000);
        let (r, out, _, over) = decode(&bomb, 100, 100_000);
        assert!(r.is_err() && over);
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_an_error_but_not_over_the_cap() {
        let (r, _, _, over) = decode(b"definitely not gzip", 100, 1000);
        assert!(r.is_err() && !over);
        let mut cut = gzip(b"{\"batch\":[1,2,3,4,5,6,7,8,9]}");
        cut.truncate(cut.len() - 6);
        let (r, _, _, over) = decode(&cut, 100, 1000);
        assert!(r.is_err() && !over);
    }
}
