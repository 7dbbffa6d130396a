//! CSV input: the `csv` crate reading into reused `ByteRecord`s.
//!
//! The header is read once and column names are resolved into indices before any data
//! row is read. Rows are read with `flexible(true)` so that a row with the wrong number of
//! fields becomes a reject (with its line and byte offset) instead of ending the run.
//! Fields stay raw bytes here: UTF-8 is checked only for the fields a mapping uses.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use csv::ByteRecord;

use super::{ColumnRef, Field, InputInfo, Position, Row, Schema, SourceError};

/// Options for reading CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
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
        }
    }

    pub fn row(&self, i: usize) -> CsvRow<'_> {
        CsvRow {
            rec: &self.records[i],
            header: &self.header,
        }
    }
}

/// A reader over one CSV input.
pub struct CsvSource {
    rdr: csv::Reader<Box<dyn Read + Send>>,
    header: Arc<CsvHeader>,
    input: Arc<InputInfo>,
    next_row: u64,
    pending: Option<ByteRecord>,
}

impl CsvSource {
    /// Opens the stream and reads the header (or names columns `1..=n` when there is none).
    pub fn open(
        input: Arc<InputInfo>,
        stream: Box<dyn Read + Send>,
        opts: CsvOptions,
    ) -> Result<Self, SourceError> {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(opts.delimiter)
            .quote(opts.quote)
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(stream);
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
            header,
            input,
            next_row,
            // Without a header the first record is data: hand it out as row 0.
            pending: (!opts.has_header).then_some(first),
        })
    }

    pub fn header(&self) -> &Arc<CsvHeader> {
        &self.header
    }

    /// Fills `chunk` with up to `max_rows` rows. `chunk.len == 0` means end of input.
    pub fn fill(&mut self, chunk: &mut CsvChunk, max_rows: usize) -> Result<(), SourceError> {
        chunk.input = self.input.clone();
        chunk.header = self.header.clone();
        chunk.first_row = self.next_row;
        chunk.len = 0;
        chunk.offsets.clear();
        while chunk.len < max_rows {
            if chunk.records.len() == chunk.len {
                chunk.records.push(ByteRecord::new());
            }
            let rec = &mut chunk.records[chunk.len];
            if let Some(first) = self.pending.take() {
                *rec = first;
                chunk
                    .offsets
                    .push(rec.position().map(|p| p.byte()).unwrap_or(0));
                chunk.len += 1;
                continue;
            }
            let got = self
                .rdr
                .read_byte_record(rec)
                .map_err(|e| read_error(&self.input, &e))?;
            if !got {
                break;
            }
            let offset = rec.position().map(|p| p.byte()).unwrap_or(0);
            chunk.offsets.push(offset);
            chunk.len += 1;
        }
        self.next_row += chunk.len as u64;
        chunk.end = Position {
            input: self.input.index,
            row: self.next_row,
            offset: self.rdr.position().byte(),
        };
        Ok(())
    }
}

fn read_error(input: &InputInfo, e: &csv::Error) -> SourceError {
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
}

impl Row for CsvRow<'_> {
    #[inline]
    fn field(&self, col: &ColumnRef) -> Field<'_> {
        let ColumnRef::Index(i) = col;
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

    fn source_problem(&self) -> Option<String> {
        let want = self.header.names.len();
        let got = self.rec.len();
        (got != want).then(|| format!("expected {want} fields (as in the header), found {got}"))
    }

    fn line(&self) -> u64 {
        self.rec.position().map(|p| p.line()).unwrap_or(0)
    }
}
