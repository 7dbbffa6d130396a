//! CSV input: the `csv` crate reading into reused `ByteRecord`s.
//!
//! The header is read once and column names are resolved into indices before any data
//! row is read. Rows are read with `flexible(true)` so that a row with the wrong number of
//! fields becomes a reject (with its line and byte offset) instead of ending the run.
//! Fields stay raw bytes here: UTF-8 is checked only for the fields a mapping uses.
//!
//! After a resume ([`CsvSource::reposition`]) the reader runs on a stream that starts
//! mid-file; `byte_base` and `line_base` turn its positions back into file positions.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use csv::ByteRecord;

use super::{ColumnRef, Field, InputInfo, Position, Row, Schema, SourceError, Stream};

/// Options for reading CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub has_header: bool,
    /// A record (its raw bytes) longer than this is rejected; one longer than
    /// [`HARD_LIMIT_FACTOR`] times this stops the run (see [`LimitGuard`]).
    pub max_record_bytes: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            max_record_bytes: crate::config::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Column names of one CSV input.
#[derive(Debug)]
pub struct CsvHeader {
    pub names: Vec<String>,
    index: HashMap<String, usize>,
}

impl CsvHeader {
    fn new(names: Vec<String>) -> Self {
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            // The first of duplicate names wins, as in most CSV tools.
            index.entry(n.clone()).or_insert(i);
        }
        CsvHeader { names, index }
    }
}

impl Schema for CsvHeader {
    fn resolve(&self, name: &str) -> Option<ColumnRef> {
        // Without a header, columns are also reachable as `1`, `2`...
        self.index.get(name).map(|&i| ColumnRef::Index(i))
    }
    fn column_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

/// A chunk of CSV rows; its `ByteRecord`s are reused from chunk to chunk.
pub struct CsvChunk {
    pub input: Arc<InputInfo>,
    pub header: Arc<CsvHeader>,
    pub records: Vec<ByteRecord>,
    /// Byte offset of each row's start.
    pub offsets: Vec<u64>,
    pub len: usize,
    pub first_row: u64,
    pub end: Position,
    /// Added to the reader's 1-based line numbers (non-zero after a resume).
    pub line_base: u64,
    /// Rows longer than `--max-record-bytes`: (row index, record bytes, limit). Their
    /// `ByteRecord` was dropped, so they are rejected with this reason.
    pub oversize: Vec<(usize, u64, usize)>,
}

impl CsvChunk {
    pub fn new(input: Arc<InputInfo>, header: Arc<CsvHeader>) -> Self {
        CsvChunk {
            input,
            header,
            records: Vec::new(),
            offsets: Vec::new(),
            len: 0,
            first_row: 0,
            end: Position::default(),
            line_base: 0,
            oversize: Vec::new(),
        }
    }

    pub fn row(&self, i: usize) -> CsvRow<'_> {
        CsvRow {
            rec: &self.records[i],
            header: &self.header,
            line_base: self.line_base,
            oversize: self.oversize.iter().find(|o| o.0 == i).map(|o| (o.1, o.2)),
        }
    }
}

/// A reader over one CSV input.
pub struct CsvSource {
    rdr: csv::Reader<LimitGuard>,
    /// Where the record being read starts, in the reader's stream (for the guard).
    record_start: Arc<AtomicU64>,
    header: Arc<CsvHeader>,
    input: Arc<InputInfo>,
    next_row: u64,
    pending: Option<ByteRecord>,
    opts: CsvOptions,
    /// File byte offset and line (minus one) where the reader's stream starts.
    byte_base: u64,
    line_base: u64,
}

/// A record longer than this many times `max_record_bytes` stops the run.
pub const HARD_LIMIT_FACTOR: u64 = 4;
/// A chunk stops taking rows once its records hold this many bytes, so a chunk of long
/// (but allowed) records stays small.
const CHUNK_BYTES: u64 = 8 << 20;
/// A reused `ByteRecord` that held more than this is replaced by a fresh one before
/// reuse, so one long record does not keep its buffer for the rest of the run. Kept
/// small: over a long run every one of a chunk's thousands of slots meets some long
/// record, so the slots' buffers (not the rows in flight) set the memory: at 64 KiB the
/// reader alone held 284 MB after a 5 GB export with 0.07% 35 KB rows (BENCHMARKS.md,
/// Inputs). Only rows over this size pay an allocation.
const KEEP_RECORD_BYTES: usize = 8 << 10;

/// Bounds the memory one record can take. The `csv` crate grows a `ByteRecord` until the
/// record ends, so an unclosed quote would read the whole rest of the file into memory.
/// The guard sits under the reader and refuses to hand it more bytes once the record in
/// progress (from `record_start`, which the source updates before each read) is longer
/// than `cap` = [`HARD_LIMIT_FACTOR`] × `max_record_bytes`. The reader asks for more only
/// when its buffer is consumed, so a record holds at most `cap` plus one buffer (256 KiB).
pub struct LimitGuard {
    inner: Stream,
    delivered: u64,
    record_start: Arc<AtomicU64>,
    cap: u64,
    byte_base: u64,
}

impl Read for LimitGuard {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.record_start.load(Ordering::Relaxed);
        if self.delivered.saturating_sub(start) > self.cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the record starting at byte {} is longer than {} bytes ({HARD_LIMIT_FACTOR} x --max-record-bytes), so it was not read into memory; this is usually an unclosed quote. Fix the file, or raise --max-record-bytes",
                    start + self.byte_base,
                    self.cap
                ),
            ));
        }
        let n = self.inner.read(buf)?;
        self.delivered += n as u64;
        Ok(n)
    }
}

fn reader(
    stream: Stream,
    opts: CsvOptions,
    record_start: &Arc<AtomicU64>,
    byte_base: u64,
) -> csv::Reader<LimitGuard> {
    record_start.store(0, Ordering::Relaxed);
    let guard = LimitGuard {
        inner: stream,
        delivered: 0,
        record_start: record_start.clone(),
        cap: (opts.max_record_bytes as u64).saturating_mul(HARD_LIMIT_FACTOR),
        byte_base,
    };
    csv::ReaderBuilder::new()
        .delimiter(opts.delimiter)
        .quote(opts.quote)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(guard)
}

impl CsvSource {
    /// Opens the stream and reads the header (or names columns `1..=n` when there is none).
    pub fn open(
        input: Arc<InputInfo>,
        stream: Stream,
        opts: CsvOptions,
    ) -> Result<Self, SourceError> {
        let record_start = Arc::new(AtomicU64::new(0));
        let mut rdr = reader(stream, opts, &record_start, 0);
        let mut first = ByteRecord::new();
        let got = rdr
            .read_byte_record(&mut first)
            .map_err(|e| read_error(&input, &e))?;
        if !got {
            return Err(SourceError::Empty {
                path: input.display.clone(),
            });
        }
        let (names, next_row) = if opts.has_header {
            let mut names = Vec::with_capacity(first.len());
            for (i, f) in first.iter().enumerate() {
                let f = if i == 0 {
                    f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
                } else {
                    f
                };
                names.push(String::from_utf8_lossy(f).into_owned());
            }
            (names, 0)
        } else {
            ((1..=first.len()).map(|i| i.to_string()).collect(), 0)
        };
        let header = Arc::new(CsvHeader::new(names));
        Ok(CsvSource {
            rdr,
            record_start,
            header,
            input,
            next_row,
            // Without a header the first record is data: hand it out as row 0.
            pending: (!opts.has_header).then_some(first),
            opts,
            byte_base: 0,
            line_base: 0,
        })
    }

    /// Continues on `stream`, which starts at data row `pos.row` (byte `pos.offset`,
    /// 1-based line `line` of the file). The header stays the one read by `open`.
    pub fn reposition(&mut self, stream: Stream, pos: Position, line: u64) {
        self.rdr = reader(stream, self.opts, &self.record_start, pos.offset);
        self.pending = None;
        self.next_row = pos.row;
        self.byte_base = pos.offset;
        // LINE_UNKNOWN: lines are not known after a seek.
        self.line_base = if line == super::LINE_UNKNOWN {
            u64::MAX
        } else {
            line.saturating_sub(1)
        };
    }

    /// Reads and drops `n` data rows (resuming a stream that cannot seek).
    pub fn skip_rows(&mut self, n: u64) -> Result<(), SourceError> {
        let mut rec = ByteRecord::new();
        while self.next_row < n {
            if self.pending.take().is_none() {
                self.record_start
                    .store(self.rdr.position().byte(), Ordering::Relaxed);
                let got = self
                    .rdr
                    .read_byte_record(&mut rec)
                    .map_err(|e| read_error(&self.input, &e))?;
                if !got {
                    return Err(SourceError::Read {
                        path: self.input.display.clone(),
                        message: format!(
                            "cannot resume at row {}: the input has only {} rows, so it changed since the checkpoint was written",
                            n + 1,
                            self.next_row
                        ),
                    });
                }
            }
            self.next_row += 1;
        }
        Ok(())
    }

    pub fn header(&self) -> &Arc<CsvHeader> {
        &self.header
    }

    /// Fills `chunk` with up to `max_rows` rows. `chunk.len == 0` means end of input.
    pub fn fill(&mut self, chunk: &mut CsvChunk, max_rows: usize) -> Result<(), SourceError> {
        chunk.input = self.input.clone();
        chunk.header = self.header.clone();
        chunk.first_row = self.next_row;
        chunk.line_base = self.line_base;
        chunk.len = 0;
        chunk.offsets.clear();
        chunk.oversize.clear();
        let limit = self.opts.max_record_bytes;
        let mut bytes = 0u64;
        while chunk.len < max_rows && bytes < CHUNK_BYTES {
            if chunk.records.len() == chunk.len {
                // Sized for a typical row up front, so the first pass over the pool does
                // not grow each record eight times.
                let fields = self.header.names.len();
                chunk.records.push(ByteRecord::with_capacity(256, fields));
            }
            let rec = &mut chunk.records[chunk.len];
            if rec.as_slice().len() > KEEP_RECORD_BYTES {
                *rec = ByteRecord::new();
            }
            if let Some(first) = self.pending.take() {
                *rec = first;
                chunk
                    .offsets
                    .push(rec.position().map(|p| p.byte()).unwrap_or(0) + self.byte_base);
                chunk.len += 1;
                continue;
            }
            self.record_start
                .store(self.rdr.position().byte(), Ordering::Relaxed);
            let got = self
                .rdr
                .read_byte_record(rec)
                .map_err(|e| read_error(&self.input, &e))?;
            if !got {
                break;
            }
            let offset = rec.position().map(|p| p.byte()).unwrap_or(0) + self.byte_base;
            let len = self.rdr.position().byte() + self.byte_base - offset;
            bytes += len;
            if len > limit as u64 {
                // Drop its bytes now; the row is rejected by its size alone.
                let pos = rec.position().cloned();
                *rec = ByteRecord::new();
                rec.set_position(pos);
                chunk.oversize.push((chunk.len, len, limit));
            }
            chunk.offsets.push(offset);
            chunk.len += 1;
        }
        self.next_row += chunk.len as u64;
        chunk.end = Position {
            input: self.input.index,
            row: self.next_row,
            offset: self.rdr.position().byte() + self.byte_base,
        };
        if chunk.len == 0 && self.next_row == 0 {
            eprintln!(
                "note: {} has a header but no data rows; nothing to send from it",
                self.input.display
            );
        }
        Ok(())
    }
}

fn read_error(input: &InputInfo, e: &csv::Error) -> SourceError {
    // Positions here are relative to the reader's stream (exact unless resumed).
    let at = e
        .position()
        .map(|p| format!(" at line {}, byte {}", p.line(), p.byte()))
        .unwrap_or_default();
    let message = match e.kind() {
        csv::ErrorKind::Io(io) => format!("read failed{at}: {io}"),
        _ => format!("CSV error{at}: {e}"),
    };
    SourceError::Read {
        path: input.display.clone(),
        message,
    }
}

/// One CSV row.
pub struct CsvRow<'a> {
    rec: &'a ByteRecord,
    header: &'a CsvHeader,
    line_base: u64,
    /// (record bytes, limit) when the record was over `--max-record-bytes`.
    oversize: Option<(u64, usize)>,
}

impl Row for CsvRow<'_> {
    #[inline]
    fn field(&self, col: &ColumnRef) -> Field<'_> {
        let ColumnRef::Index(i) = col else {
            return Field::Missing;
        };
        match self.rec.get(*i) {
            Some(b) => Field::Raw(b),
            None => Field::Missing,
        }
    }

    fn write_record_json(&self, out: &mut Vec<u8>) {
        let names = &self.header.names;
        if self.rec.len() == names.len() {
            out.push(b'{');
            for (i, (name, value)) in names.iter().zip(self.rec.iter()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                super::write_json_str(out, name);
                out.push(b':');
                super::write_json_str(out, &String::from_utf8_lossy(value));
            }
            out.push(b'}');
        } else {
            out.push(b'[');
            for (i, value) in self.rec.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                super::write_json_str(out, &String::from_utf8_lossy(value));
            }
            out.push(b']');
        }
    }

    fn problem_code(&self) -> &'static str {
        if self.oversize.is_some() {
            "record_too_large"
        } else {
            "field_count"
        }
    }

    fn source_problem(&self) -> Option<String> {
        if let Some((len, limit)) = self.oversize {
            return Some(format!(
                "the record is {len} bytes, longer than --max-record-bytes ({limit}), so it was left out; split the record or raise the limit"
            ));
        }
        let want = self.header.names.len();
        let got = self.rec.len();
        (got != want).then(|| format!("expected {want} fields (as in the header), found {got}"))
    }

    fn line(&self) -> u64 {
        if self.line_base == u64::MAX {
            return super::LINE_UNKNOWN;
        }
        self.rec.position().map_or(0, |p| p.line() + self.line_base)
    }
}
