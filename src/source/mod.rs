//! Sources: read input files into chunks of rows, one file format per submodule.
//!
//! A source resolves the mapping's column names against its schema once, before any row
//! is read ([`Schema::resolve`]), then fills reusable [`Chunk`]s. The mapper sees rows only
//! through the [`Row`] trait, so it never knows which format a value came from; a typed
//! source (NDJSON, Parquet) hands typed [`Field`]s, an untyped one (CSV) hands raw text
//! that the mapping's column types interpret.
//!
//! Invariant: rows are produced in input order and every row read is counted, whether it
//! maps, is rejected by the mapper, or is rejected by the source itself (wrong field count).

pub mod csv;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a row starts, precisely enough to seek back to it on resume.
///
/// `row` counts data rows from 0 within the input. `offset` is the byte offset of the
/// row's first byte (CSV, NDJSON) in the (decompressed) stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Position {
    pub input: u32,
    pub row: u64,
    pub offset: u64,
}

/// A supported input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
}

impl Format {
    /// The format named by a file's extension, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Some(Format::Csv)
        } else {
            None
        }
    }
}

/// One input as the rest of the pipeline knows it.
#[derive(Debug)]
pub struct InputInfo {
    /// Index in the run's ordered input list.
    pub index: u32,
    /// The path as the user gave it (or as found under a directory they gave).
    pub path: PathBuf,
    /// The path as shown in rejects and messages.
    pub display: String,
    pub format: Format,
    /// The per-input part of every messageId ([`crate::map::message_id::input_seed`]).
    pub seed: u64,
}

/// A value as a source hands it to the mapper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// The column or path is not present in this row.
    Missing,
    /// An explicit null.
    Null,
    /// Untyped text (every CSV field): the mapping's column type decides what it becomes.
    /// Not yet checked for UTF-8.
    Raw(&'a [u8]),
    /// A typed string (valid UTF-8, unescaped).
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// Already-valid, compact JSON (a nested object or array) to pass through unchanged.
    Json(&'a [u8]),
    /// An instant, nanoseconds since the Unix epoch (typed timestamp columns).
    TimestampNanos(i64),
}

/// How a column name from the mapping was resolved against a source's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    /// The n-th field of each row (CSV, Parquet projection).
    Index(usize),
}

/// What a source knows of its columns before reading rows.
pub trait Schema {
    /// Resolve a column name from the mapping, or `None` if the source has no such column.
    fn resolve(&self, name: &str) -> Option<ColumnRef>;
    /// Column names in source order (for "rest" and for error messages).
    fn column_names(&self) -> Vec<String>;
}

/// One row, as the mapper reads it.
pub trait Row {
    fn field(&self, col: &ColumnRef) -> Field<'_>;
    /// The whole record as a JSON value, for the rejects file.
    fn write_record_json(&self, out: &mut Vec<u8>);
    /// A problem the source found with the row itself (e.g. wrong field count), to be
    /// rejected with this reason before mapping.
    fn source_problem(&self) -> Option<String>;
    /// 1-based physical line of the row in its file, where the format has lines.
    fn line(&self) -> u64;
}

/// A reusable batch of rows from one input. Chunks come back to the reader after
/// mapping, so their buffers are allocated once per run, not once per row.
pub enum Chunk {
    Csv(csv::CsvChunk),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Csv(c) => c.len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Byte offset at which row `i` of the chunk starts.
    pub fn row_offset(&self, i: usize) -> u64 {
        match self {
            Chunk::Csv(c) => c.offsets[i],
        }
    }
    pub fn input(&self) -> &Arc<InputInfo> {
        match self {
            Chunk::Csv(c) => &c.input,
        }
    }
    /// Data-row number (0-based) of the chunk's first row.
    pub fn first_row(&self) -> u64 {
        match self {
            Chunk::Csv(c) => c.first_row,
        }
    }
    /// Position just past the chunk's last row.
    pub fn end(&self) -> Position {
        match self {
            Chunk::Csv(c) => c.end,
        }
    }
}

/// A failure that stops reading an input. Bad *rows* are never this: they are rejects.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} is empty: it has no header row. Check the export, or remove the file from the inputs.")]
    Empty { path: String },
    #[error("{0}")]
    Other(String),
}

/// How inputs are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceOptions {
    /// Overrides the format the file name suggests.
    pub format: Option<Format>,
    pub csv: csv::CsvOptions,
}

/// Expands the user's input arguments into the ordered list of inputs: files as given,
/// directories walked (recursively, sorted by path) for files of a known format.
pub fn discover(
    paths: &[PathBuf],
    namespace: &str,
    opts: &SourceOptions,
) -> Result<Vec<Arc<InputInfo>>, SourceError> {
    let mut files: Vec<(PathBuf, Format)> = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| SourceError::Open {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, opts)?;
            found.sort();
            if found.is_empty() {
                return Err(SourceError::Other(format!(
                    "directory {} holds no .csv files",
                    p.display()
                )));
            }
            files.extend(found);
        } else {
            let format = opts
                .format
                .or_else(|| Format::from_path(p))
                .ok_or_else(|| {
                    SourceError::Other(format!(
                        "cannot tell the format of {} from its name; pass --format csv",
                        p.display()
                    ))
                })?;
            files.push((p.clone(), format));
        }
    }
    Ok(files
        .into_iter()
        .enumerate()
        .map(|(i, (path, format))| {
            let display = path.display().to_string();
            Arc::new(InputInfo {
                index: i as u32,
                seed: crate::map::message_id::input_seed(namespace, &display),
                path,
                display,
                format,
            })
        })
        .collect())
}

fn walk(
    dir: &Path,
    out: &mut Vec<(PathBuf, Format)>,
    opts: &SourceOptions,
) -> Result<(), SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SourceError::Open {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| SourceError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| SourceError::Open {
            path: path.display().to_string(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, out, opts)?;
        } else if ft.is_file() {
            if let Some(f) = Format::from_path(&path).or(opts.format) {
                out.push((path, f));
            }
        }
    }
    Ok(())
}

/// An open input, ready to fill chunks.
pub enum Opened {
    Csv(csv::CsvSource),
}

impl Opened {
    pub fn schema(&self) -> &dyn Schema {
        match self {
            Opened::Csv(s) => s.header().as_ref(),
        }
    }

    /// A fresh chunk of the right kind for this source.
    pub fn new_chunk(&self, input: &Arc<InputInfo>) -> Chunk {
        match self {
            Opened::Csv(s) => Chunk::Csv(csv::CsvChunk::new(input.clone(), s.header().clone())),
        }
    }

    /// Fills `chunk` (which must come from [`Opened::new_chunk`] of the same format)
    /// with up to `max_rows` rows; an empty chunk means the input is exhausted.
    pub fn fill(&mut self, chunk: &mut Chunk, max_rows: usize) -> Result<(), SourceError> {
        match (self, chunk) {
            (Opened::Csv(s), Chunk::Csv(c)) => s.fill(c, max_rows),
        }
    }
}

/// Opens an input and reads its header or schema.
pub fn open(input: &Arc<InputInfo>, opts: &SourceOptions) -> Result<Opened, SourceError> {
    let file = std::fs::File::open(&input.path).map_err(|source| SourceError::Open {
        path: input.display.clone(),
        source,
    })?;
    let stream: Box<dyn std::io::Read + Send> = Box::new(file);
    match input.format {
        Format::Csv => Ok(Opened::Csv(csv::CsvSource::open(
            input.clone(),
            stream,
            opts.csv,
        )?)),
    }
}

/// Appends `s` as a JSON string literal (quotes included) to `out`.
/// Whole runs of safe bytes are copied at once; only `"`, `\` and control bytes are escaped.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    crate::map::json::write_str(out, s)
}
