//! Byte streams for the text formats: plain files, gzip and zstd streams, and standard input.
//!
//! Compression is recognised by the file name (`.gz`, `.zst`) or, failing that, by the
//! stream's first bytes (gzip `1f 8b`, zstd `28 b5 2f fd`), and decompressed as a stream:
//! memory does not depend on the file's size. Concatenated gzip members (`cat a.gz b.gz`)
//! and zstd frames are read as one stream.
//!
//! Standard input can be read only once, but a run opens each input twice (once to
//! resolve the mapping against its header, once to read it). So the bytes an earlier open
//! consumed from stdin are kept (up to [`STDIN_REPLAY_LIMIT`]) and replayed to the next
//! open; once a reader has gone past the limit, stdin cannot be opened again.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a file name's last extension names, if any.
    pub fn from_name(name: &str) -> Compression {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The compression the first bytes of a stream show.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The file name without its compression extension.
    pub fn strip(name: &str) -> &str {
        let lower = name.to_ascii_lowercase();
        for ext in [".gz", ".gzip", ".zst", ".zstd"] {
            if lower.ends_with(ext) {
                return &name[..name.len() - ext.len()];
            }
        }
        name
    }
}

/// Bytes of standard input kept for the next open.
pub const STDIN_REPLAY_LIMIT: usize = 8 << 20;

/// What earlier opens of stdin consumed, so the next open sees the same stream.
#[derive(Debug, Default)]
pub struct StdinReplay {
    state: Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    bytes: Vec<u8>,
    /// A reader went past the limit: the kept bytes are no longer the whole prefix.
    overflowed: bool,
}

impl StdinReplay {
    /// A stream that yields the kept bytes, then the rest of stdin (recording what it reads).
    fn open(self: &Arc<Self>) -> io::Result<Box<dyn Read + Send>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.overflowed {
            return Err(io::Error::other(
                "standard input was already read past its start and cannot be read again; write it to a file first",
            ));
        }
        let prefix = io::Cursor::new(st.bytes.clone());
        drop(st);
        Ok(Box::new(prefix.chain(Recorder {
            inner: io::stdin(),
            replay: self.clone(),
        })))
    }
}

struct Recorder {
    inner: io::Stdin,
    replay: Arc<StdinReplay>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.replay.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.overflowed {
            if st.bytes.len() + n > STDIN_REPLAY_LIMIT {
                // Past the limit this is the reading pass: stop keeping bytes.
                st.overflowed = true;
                st.bytes = Vec::new();
            } else {
                st.bytes.extend_from_slice(&buf[..n]);
            }
        }
        Ok(n)
    }
}

/// Where a text stream comes from.
pub enum Origin<'a> {
    File(&'a Path),
    Stdin(&'a Arc<StdinReplay>),
    /// An object's bytes (or any other stream).
    Reader(Box<dyn Read + Send>),
}

/// Opens a (possibly compressed) stream for reading from its start.
/// `by_name` is the compression the file name says; `None` means "look at the bytes".
pub fn open_stream(
    origin: Origin<'_>,
    by_name: Compression,
) -> io::Result<(Box<dyn BufRead + Send>, Compression)> {
    let raw: Box<dyn Read + Send> = match origin {
        Origin::File(p) => Box::new(File::open(p)?),
        Origin::Stdin(r) => r.open()?,
        Origin::Reader(r) => r,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let compression = match by_name {
        Compression::None => Compression::sniff(buffered.fill_buf()?),
        c => c,
    };
    Ok((decompress(buffered, compression)?, compression))
}

fn decompress(
    r: BufReader<Box<dyn Read + Send>>,
    c: Compression,
) -> io::Result<Box<dyn BufRead + Send>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(r),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            256 * 1024,
            zstd::stream::read::Decoder::with_buffer(r)?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_and_magic_bytes_say_the_compression() {
        assert_eq!(Compression::from_name("a.csv.GZ"), Compression::Gzip);
        assert_eq!(Compression::from_name("a.ndjson.zst"), Compression::Zstd);
        assert_eq!(Compression::from_name("a.csv"), Compression::None);
        assert_eq!(Compression::strip("a.csv.gz"), "a.csv");
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"a,b"), Compression::None);
    }

    #[test]
    fn concatenated_gzip_members_read_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let mut all = Vec::new();
        for part in [&b"a,b\n1,2\n"[..], b"3,4\n"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            all.extend(e.finish().unwrap());
        }
        std::fs::write(&path, all).unwrap();
        let (mut s, c) = open_stream(Origin::File(&path), Compression::None).unwrap();
        assert_eq!(c, Compression::Gzip);
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert_eq!(text, "a,b\n1,2\n3,4\n");
    }
}
