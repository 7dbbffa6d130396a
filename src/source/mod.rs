//! Sources: read input files into chunks of rows, one file format per submodule, and the
//! reading stage of a run ([`read`]). A source knows nothing of the mapping: it resolves
//! names and hands fields.
//!
//! A source resolves the mapping's column names against its schema once, before any row
//! is read ([`Schema::resolve`]), then fills reusable [`Chunk`]s. The mapper sees rows only
//! through the [`Row`] trait, so it never knows which format a value came from; a typed
//! source (NDJSON, Parquet) hands typed [`Field`]s, an untyped one (CSV) hands raw text
//! that the mapping's column types interpret.
//!
//! Every name a schema resolves is also recorded on the input ([`InputInfo::columns`]):
//! the run resolves the mapping on a first open, and the open that then reads the input
//! uses that record to read only the mapped columns (Parquet projection) or to extract
//! only the mapped paths (NDJSON). An input opened before anything was resolved reads
//! every column.
//!
//! Inputs are read in a stable order: the arguments in the order given; the files under
//! a directory, or matching a glob pattern, sorted by path (byte order). An object URL
//! (`s3://bucket/export/`) names objects the same way ([`remote`]): its objects are
//! sorted as the same files on a local disk would be, and read without being copied.
//!
//! An input's content identity ([`identity`]: its size and its first and last bytes as
//! stored) is the same for a file and for an object holding the same bytes (two ranged
//! GETs); the mapping derives each input's messageIds from it.
//!
//! Invariant: rows are produced in input order and every row read is counted, whether it
//! maps, is rejected by the mapper, or is rejected by the source itself (wrong field count,
//! malformed JSON).

pub mod compress;
pub mod csv;
pub mod identity;
pub mod ndjson;
pub mod parquet;
pub mod read;
pub mod remote;
pub mod shard;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use compress::{Compression, Origin, StdinReplay};
pub use identity::ContentIdentity;

use crate::config::OwnFile;

/// Where a row starts, precisely enough to seek back to it on resume.
///
/// `row` counts data rows from 0 within the input. `offset` is, for CSV and NDJSON, the
/// byte offset of the row's first byte in the (decompressed) stream; for Parquet it is
/// the index of the row group that holds the row (the row number alone says where to
/// start; the group index is kept so a reject line says where to look).
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
    Ndjson,
    Parquet,
}

impl Format {
    /// The format named by a file's extension (after any `.gz`/`.zst`), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = Compression::strip(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// `csv`, `ndjson` (or `jsonl`, `json`), `parquet`.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }
}

/// A byte stream of a text input (decompressed, buffered).
pub type Stream = Box<dyn std::io::BufRead + Send>;

/// The input argument that means standard input.
pub const STDIN_ARG: &str = "-";

/// One input as the rest of the pipeline knows it.
#[derive(Debug)]
pub struct InputInfo {
    /// Index in the run's ordered input list.
    pub index: u32,
    /// The path as the user gave it (or as found under a directory they gave);
    /// `-` for standard input.
    pub path: PathBuf,
    /// The path as shown in rejects and messages.
    pub display: String,
    pub format: Format,
    /// Compression the file name says (`None`: the first bytes decide).
    pub compression: Compression,
    /// The column names resolved against this input so far, in first-resolved order.
    pub columns: ColumnRegistry,
    /// Set for standard input: what earlier opens consumed.
    pub stdin: Option<Arc<StdinReplay>>,
    /// Set for an object in object storage (then `path` is its redacted URL).
    pub object: Option<remote::RemoteObject>,
    /// A Parquet input's row groups (stored bytes, rows), once its footer was read.
    pub parquet_groups: std::sync::OnceLock<Vec<GroupExtent>>,
    /// The input's content identity ([`identity`]), read once: from the file on first
    /// use, or set by a reader that has it already ([`InputInfo::set_identity`]).
    identity: OnceLock<ContentIdentity>,
}

/// One Parquet row group: its column chunks' stored bytes and its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupExtent {
    pub bytes: u64,
    pub rows: u64,
}

impl InputInfo {
    /// An input at `path`, as [`discover`] makes them.
    pub fn new(index: u32, path: PathBuf, format: Format) -> InputInfo {
        let is_stdin = path.as_os_str() == STDIN_ARG;
        let display = if is_stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        InputInfo {
            index,
            compression: path
                .file_name()
                .and_then(|n| n.to_str())
                .map_or(Compression::None, Compression::from_name),
            columns: ColumnRegistry::default(),
            stdin: is_stdin.then(Default::default),
            object: None,
            parquet_groups: Default::default(),
            identity: OnceLock::new(),
            path,
            display,
            format,
        }
    }

    /// An object found by [`discover`].
    pub fn from_object(index: u32, object: remote::RemoteObject, format: Format) -> InputInfo {
        let mut info = InputInfo::new(index, PathBuf::from(&object.display), format);
        info.display = object.display.clone();
        info.object = Some(object);
        info
    }

    /// The input's content identity (what seeds its messageIds), read from the file on
    /// first use (two reads of at most 64 KiB). `None` for standard input, which cannot
    /// be read twice.
    pub fn identity(&self) -> Result<Option<ContentIdentity>, SourceError> {
        if self.stdin.is_some() {
            return Ok(None);
        }
        if let Some(id) = self.identity.get() {
            return Ok(Some(*id));
        }
        let id = match &self.object {
            // Two ranged reads: the first and the last 64 KiB as stored.
            Some(o) => {
                let n = identity::IDENTITY_SAMPLE;
                let (head, tail) = o.ends(n)?;
                ContentIdentity::from_parts(o.size(), &head, &tail).map_err(|e| {
                    SourceError::Open {
                        path: self.display.clone(),
                        source: std::io::Error::other(e),
                    }
                })?
            }
            None => ContentIdentity::of_file(&self.path).map_err(|source| SourceError::Open {
                path: self.display.clone(),
                source,
            })?,
        };
        Ok(Some(*self.identity.get_or_init(|| id)))
    }

    /// Reads, together, the content identities of the inputs among `inputs` that are
    /// objects and have none yet: [`remote::ENDS_AT_ONCE`] objects' two ranged reads at
    /// a time, where [`InputInfo::identity`] would wait for each in turn. A read that
    /// fails is left for [`InputInfo::identity`] to meet again and report, in order.
    pub fn prefetch_identities(inputs: &[Arc<InputInfo>]) {
        #[cfg(feature = "object-store")]
        {
            let todo: Vec<&Arc<InputInfo>> = inputs
                .iter()
                .filter(|i| i.object.is_some() && i.identity.get().is_none())
                .collect();
            if todo.len() < 2 {
                return;
            }
            let objs: Vec<&remote::RemoteObject> =
                todo.iter().filter_map(|i| i.object.as_ref()).collect();
            for (info, got) in todo.iter().zip(remote::identities_of_all(&objs)) {
                if let Ok(id) = got {
                    info.set_identity(id);
                }
            }
        }
        #[cfg(not(feature = "object-store"))]
        let _ = inputs;
    }

    /// For an object read from its start as text: starts its reading now (see
    /// [`remote::RemoteObject::prefetch`]), so its first bytes are here when it is
    /// opened. Local files, Parquet (read by row group) and stdin: nothing to do.
    pub fn prefetch(&self) {
        if let (Some(o), Format::Csv | Format::Ndjson) = (&self.object, self.format) {
            o.prefetch();
        }
    }

    /// Records an identity computed elsewhere (a remote reader's two ranged reads), so
    /// [`InputInfo::identity`] does not read the file. A second call is ignored: the
    /// first identity is the input's.
    pub fn set_identity(&self, id: ContentIdentity) {
        let _ = self.identity.set(id);
    }

    /// A plain file or object (not stdin, not compressed) can be read from a byte offset.
    fn seekable(&self) -> bool {
        self.stdin.is_none() && self.compression == Compression::None
    }

    /// The input's size in bytes as stored (0 for standard input).
    pub fn size(&self) -> u64 {
        match (&self.object, &self.stdin) {
            (Some(o), _) => o.size(),
            (None, Some(_)) => 0,
            (None, None) => std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        }
    }

    fn open_stream(&self) -> Result<(Stream, Compression), SourceError> {
        let open_err = |source| SourceError::Open {
            path: self.display.clone(),
            source,
        };
        let origin = match (&self.stdin, &self.object) {
            (Some(r), _) => Origin::Stdin(r),
            (None, Some(o)) => Origin::Reader(Box::new(o.reader_at(0).map_err(open_err)?)),
            (None, None) => Origin::File(&self.path),
        };
        compress::open_stream(origin, self.compression).map_err(open_err)
    }
}

/// The names a mapping resolved against one input. A name's index here is stable for
/// the whole run, so sources can hand out `ColumnRef::Path(index)`.
#[derive(Debug, Default)]
pub struct ColumnRegistry(Mutex<Vec<String>>);

impl ColumnRegistry {
    /// The index of `name`, recording it first if it is new.
    pub fn id(&self, name: &str) -> usize {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match v.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                v.push(name.to_string());
                v.len() - 1
            }
        }
    }

    /// How many names are recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every name recorded so far, in index order.
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A value as a source hands it to the mapper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// The column or path is not present in this row.
    Missing,
    /// An explicit null.
    Null,
    /// Untyped text (every CSV field): the mapping's column type decides what it becomes.
    /// Not yet checked for UTF-8. Parquet decimals come as their exact decimal text.
    Raw(&'a [u8]),
    /// Untyped text like [`Field::Raw`], already known to be valid UTF-8: a field of a
    /// CSV record checked once as a whole (far cheaper than field by field) that starts
    /// and ends on character boundaries (`CsvRow::text_of` tests both ends). Bytes, not
    /// `str`: making a `str` would re-check the range and the boundaries.
    Text(&'a [u8]),
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
    /// The n-th field of each row (CSV), or the n-th top-level column (Parquet).
    Index(usize),
    /// Entry n of the input's [`ColumnRegistry`]: a key or nested path (NDJSON).
    Path(usize),
}

/// What a source knows of its columns before reading rows.
pub trait Schema {
    /// Resolve a column name from the mapping, or `None` if the source has no such column.
    fn resolve(&self, name: &str) -> Option<ColumnRef>;
    /// Column names in source order (for "rest" and for error messages).
    fn column_names(&self) -> Vec<String>;
    /// True for a column whose value, in every row, is one JSON object whose members are
    /// written in the column's place rather than under its name (NDJSON's keys first
    /// seen after the sampled rows, [`ndjson::LATER_KEYS`]).
    fn spreads(&self, _name: &str) -> bool {
        false
    }
    /// True when rows may hold keys the schema does not list (NDJSON: keys first seen
    /// after the sample), so a name missing from [`Schema::column_names`] is no typo.
    fn spreads_unknown(&self) -> bool {
        false
    }
    /// Every name and nested path the input is known to hold, for "did you mean"
    /// suggestions: the columns, and for nested data the paths inside them.
    fn known_paths(&self) -> Vec<String> {
        self.column_names()
    }
    /// Keys and nested paths seen in the rows sampled at open (NDJSON), as dotted
    /// paths; empty where the schema is fixed. What a mapping might have missed.
    fn sampled_paths(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A schema of column names only, for tests: a name resolves to its first position, as
/// in a CSV header, and [`ndjson::LATER_KEYS`] spreads as it does in NDJSON.
#[cfg(test)]
pub(crate) struct NamesSchema(pub Vec<String>);

#[cfg(test)]
impl NamesSchema {
    pub fn of(names: &[&str]) -> Self {
        NamesSchema(names.iter().map(|n| n.to_string()).collect())
    }
}

#[cfg(test)]
impl Schema for NamesSchema {
    fn resolve(&self, name: &str) -> Option<ColumnRef> {
        self.0.iter().position(|c| c == name).map(ColumnRef::Index)
    }
    fn column_names(&self) -> Vec<String> {
        self.0.clone()
    }
    fn spreads(&self, name: &str) -> bool {
        name == ndjson::LATER_KEYS
    }
}

/// One row, as the mapper reads it.
pub trait Row {
    fn field(&self, col: &ColumnRef) -> Field<'_>;
    /// The whole record as a JSON value, for the rejects file.
    fn write_record_json(&self, out: &mut Vec<u8>);
    /// A problem the source found with the row itself (e.g. wrong field count), to be
    /// rejected with this reason before mapping.
    fn source_problem(&self) -> Option<String>;
    /// The reject reason code for [`Row::source_problem`].
    fn problem_code(&self) -> &'static str {
        "field_count"
    }
    /// 1-based physical line of the row in its file, where the format has lines
    /// (Parquet: 0).
    fn line(&self) -> u64;
}

/// A reusable batch of rows from one input. Chunks come back to the reader after
/// mapping, so their buffers are allocated once per run, not once per row.
pub enum Chunk {
    Csv(csv::CsvChunk),
    Ndjson(ndjson::NdjsonChunk),
    Parquet(parquet::ParquetChunk),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Csv(c) => c.len,
            Chunk::Ndjson(c) => c.len,
            Chunk::Parquet(c) => c.len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where row `i` of the chunk starts: its byte offset (CSV, NDJSON) or its row group
    /// (Parquet); see [`Position`].
    pub fn row_offset(&self, i: usize) -> u64 {
        match self {
            Chunk::Csv(c) => c.offsets[i],
            Chunk::Ndjson(c) => c.offsets[i],
            Chunk::Parquet(c) => c.row_group(i),
        }
    }
    pub fn input(&self) -> &Arc<InputInfo> {
        match self {
            Chunk::Csv(c) => &c.input,
            Chunk::Ndjson(c) => &c.input,
            Chunk::Parquet(c) => &c.input,
        }
    }
    /// Data-row number (0-based) of the chunk's first row.
    pub fn first_row(&self) -> u64 {
        match self {
            Chunk::Csv(c) => c.first_row,
            Chunk::Ndjson(c) => c.first_row,
            Chunk::Parquet(c) => c.first_row,
        }
    }
    /// Calls `f` with row `i` (for tools and tests; the mapper matches on the variant).
    pub fn with_row<T>(&self, i: usize, f: impl FnOnce(&dyn Row) -> T) -> T {
        match self {
            Chunk::Csv(c) => f(&c.row(i)),
            Chunk::Ndjson(c) => f(&c.row(i)),
            Chunk::Parquet(c) => f(&c.row(i)),
        }
    }
    /// Finds the rows of a chunk filled by [`Opened::fill_deferred`]; see
    /// [`csv::CsvChunk::materialize`]. Other chunks are ready as filled.
    pub fn materialize(&mut self) -> Result<(), String> {
        match self {
            Chunk::Csv(c) => c.materialize(),
            Chunk::Ndjson(_) | Chunk::Parquet(_) => Ok(()),
        }
    }
    /// Keeps the first `k` rows only (a shard's stop): the end moves to row `k`'s start.
    pub fn truncate(&mut self, k: usize) {
        if k >= self.len() {
            return;
        }
        let end = Position {
            input: self.input().index,
            row: self.first_row() + k as u64,
            offset: self.row_offset(k),
        };
        match self {
            Chunk::Csv(c) => (c.len, c.end) = (k, end),
            Chunk::Ndjson(c) => (c.len, c.end) = (k, end),
            Chunk::Parquet(c) => (c.len, c.end) = (k, end),
        }
    }

    /// Per column registered on the input ([`ColumnRef::Path`] index): whether any row
    /// of the chunk had a value there (a null counts: the key was present). `None` for
    /// CSV, whose columns are in every row.
    pub fn present(&self) -> Option<&[bool]> {
        match self {
            Chunk::Csv(_) => None,
            Chunk::Ndjson(c) => Some(&c.present),
            Chunk::Parquet(c) => Some(c.present()),
        }
    }
    /// Position just past the chunk's last row.
    pub fn end(&self) -> Position {
        match self {
            Chunk::Csv(c) => c.end,
            Chunk::Ndjson(c) => c.end,
            Chunk::Parquet(c) => c.end,
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
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
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

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Files under directories and glob matches whose name starts with `.` or `_` are
/// skipped: exporters leave markers such as `_SUCCESS` and `.part-0.crc` beside the data.
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

/// A note on stderr for the person running the command: a closed stderr loses it and
/// stops nothing.
pub(crate) fn note(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

/// Expands the user's input arguments into the ordered list of inputs: files as given,
/// `-` for standard input (CSV or NDJSON, `--format` required), directories walked
/// (recursively) and glob patterns (`exports/*.csv.gz`, `data/**/*.parquet`) expanded,
/// each sorted by path.
pub fn discover(
    paths: &[PathBuf],
    opts: &SourceOptions,
) -> Result<Vec<Arc<InputInfo>>, SourceError> {
    discover_excluding(paths, opts, &[], None)
}

/// True when any of `args` is an object URL: the run then needs an [`remote::ObjectRuntime`].
pub fn any_remote<'a>(args: impl IntoIterator<Item = &'a Path>) -> bool {
    args.into_iter()
        .any(|p| remote::is_object_url(&p.to_string_lossy()))
}

/// What discovery found: a local file or an object.
enum Found {
    File(PathBuf),
    Object(remote::RemoteObject),
}

/// [`discover`], leaving out of directories and glob matches every file that is one of
/// `own` (the run's own rejects file, checkpoint and other outputs, compared as files, not
/// names): a run over `.` must not read what it writes. A file named on its own is kept;
/// the run refuses it as an input that is also an output.
///
/// Object URLs are listed through `objects` (the run's object-store runtime; `None`
/// refuses them).
pub fn discover_excluding(
    paths: &[PathBuf],
    opts: &SourceOptions,
    own: &[PathBuf],
    objects: Option<&Arc<remote::ObjectRuntime>>,
) -> Result<Vec<Arc<InputInfo>>, SourceError> {
    let own: Vec<FileId> = own.iter().filter_map(|p| FileId::of(p)).collect();
    let mut files: Vec<(PathBuf, Format)> = Vec::new();
    // Objects, by the position in `files` they come before.
    let mut objects_found: Vec<(usize, remote::RemoteObject, Format)> = Vec::new();
    let mut stdin_seen = false;
    for p in paths {
        let text = p.to_string_lossy();
        if remote::is_object_url(&text) {
            for (obj, format) in remote::expand(objects, &text, opts.format)? {
                let format = format.ok_or_else(|| {
                    SourceError::Other(format!(
                        "cannot tell the format of {} from its name; pass --format csv, ndjson or parquet",
                        obj.display
                    ))
                })?;
                objects_found.push((files.len(), obj, format));
            }
            continue;
        }
        if text == STDIN_ARG {
            let format = match opts.format {
                Some(Format::Parquet) => {
                    return Err(SourceError::Other(
                        "Parquet cannot be read from standard input (it needs to seek); write it to a file first".into(),
                    ))
                }
                Some(f) => f,
                None => {
                    return Err(SourceError::Other(
                        "reading standard input (-) needs --format csv or --format ndjson".into(),
                    ))
                }
            };
            if stdin_seen {
                return Err(SourceError::Other(
                    "standard input (-) is given twice; it can be read only once".into(),
                ));
            }
            stdin_seen = true;
            files.push((p.clone(), format));
            continue;
        }
        if is_glob(&text) && std::fs::metadata(p).is_err() {
            let matches = glob::glob(&text).map_err(|e| {
                SourceError::Other(format!("input pattern \"{text}\" is not valid: {e}"))
            })?;
            let mut found = Vec::new();
            for m in matches {
                let m = m.map_err(|e| SourceError::Open {
                    path: e.path().display().to_string(),
                    source: std::io::Error::new(e.error().kind(), e.error().to_string()),
                })?;
                if m.is_dir() {
                    walk(&m, &mut found, opts, &own)?;
                } else if !is_hidden(&m) && !is_own(&m, &own) {
                    let f = file_format(&m, opts)?;
                    found.push((m, f));
                }
            }
            if found.is_empty() {
                return Err(SourceError::Other(format!(
                    "input pattern \"{text}\" matches no files; check the path (quote the pattern so the shell does not expand it)"
                )));
            }
            found.sort();
            files.extend(found);
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| SourceError::Open {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, opts, &own)?;
            found.sort();
            if found.is_empty() {
                return Err(SourceError::Other(format!(
                    "directory {} holds no input files (.csv, .tsv, .ndjson, .jsonl, .json, .parquet, optionally .gz or .zst); pass --format to read files with other names",
                    p.display()
                )));
            }
            files.extend(found);
        } else {
            let format = file_format(p, opts)?;
            files.push((p.clone(), format));
        }
    }
    // The same file named twice (a directory and a glob over it, `a.csv ./a.csv`, a hard
    // link) would be read and sent twice, under different messageIds when the paths are
    // spelled differently: it is read once, where it first appears.
    // Size and modification time are compared too: on some network and FUSE mounts
    // inode numbers are not unique, and two different files must never be merged.
    type Identity = (FileId, Option<(u64, std::time::SystemTime)>);
    let mut seen: Vec<(Identity, PathBuf)> = Vec::with_capacity(files.len());
    files.retain(|(path, _)| {
        let Some(id) = FileId::of(path) else {
            return true;
        };
        let shape = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let id = (id, shape);
        match seen.iter().find(|(s, _)| *s == id) {
            Some((_, first)) => {
                note(format_args!(
                    "{} is the same file as {}; it is read once",
                    path.display(),
                    first.display()
                ));
                false
            }
            None => {
                seen.push((id, path.clone()));
                true
            }
        }
    });
    // Objects go back where their arguments were, among the files.
    let mut found: Vec<(Found, Format)> = Vec::with_capacity(files.len() + objects_found.len());
    let mut objects_found = objects_found.into_iter().peekable();
    for (i, (path, format)) in files.into_iter().enumerate() {
        while let Some((_, obj, f)) = objects_found.next_if(|(at, _, _)| *at <= i) {
            found.push((Found::Object(obj), f));
        }
        found.push((Found::File(path), format));
    }
    found.extend(objects_found.map(|(_, obj, f)| (Found::Object(obj), f)));
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(i, (what, format))| {
            Arc::new(match what {
                Found::File(path) => InputInfo::new(i as u32, path, format),
                Found::Object(obj) => InputInfo::from_object(i as u32, obj, format),
            })
        })
        .collect())
}

fn file_format(p: &Path, opts: &SourceOptions) -> Result<Format, SourceError> {
    opts.format.or_else(|| Format::from_path(p)).ok_or_else(|| {
        SourceError::Other(format!(
            "cannot tell the format of {} from its name; pass --format csv, ndjson or parquet",
            p.display()
        ))
    })
}

fn walk(
    dir: &Path,
    out: &mut Vec<(PathBuf, Format)>,
    opts: &SourceOptions,
    own: &[FileId],
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
        if is_hidden(&path) {
            continue;
        }
        let ft = entry.file_type().map_err(|source| SourceError::Open {
            path: path.display().to_string(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, out, opts, own)?;
        } else if ft.is_file() && !is_own(&path, own) {
            if let Some(f) = opts.format.or_else(|| Format::from_path(&path)) {
                out.push((path, f));
            }
        }
    }
    Ok(())
}

/// What makes two paths the same file: device and inode when it exists (so a symlink or
/// a second name is caught), else the absolute path with its directory resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileId {
    Inode(u64, u64),
    Path(PathBuf),
}

impl FileId {
    /// `None` for standard input (`-`).
    pub fn of(p: &Path) -> Option<FileId> {
        if p.as_os_str() == STDIN_ARG {
            return None;
        }
        #[cfg(unix)]
        if let Ok(m) = std::fs::metadata(p) {
            use std::os::unix::fs::MetadataExt;
            return Some(FileId::Inode(m.dev(), m.ino()));
        }
        Some(FileId::Path(absolute(p)))
    }
}

/// A command that would write one of its files over another file it needs.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {} is {clash}: writing it would overwrite it. Give {flag} a path of its own.", path.display())]
pub struct Overwrite {
    /// The output's flag (`--rejects`, `--output`, ...) and path.
    pub flag: &'static str,
    pub path: PathBuf,
    pub clash: Clash,
}

/// What an output would overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash {
    /// An input, as shown.
    Input(String),
    Mapping(PathBuf),
    /// Another of the command's own files, by its flag; `written`: that one is written
    /// too.
    Own {
        flag: &'static str,
        written: bool,
    },
}

impl std::fmt::Display for Clash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clash::Input(shown) => write!(f, "an input ({shown})"),
            Clash::Mapping(m) => write!(f, "the mapping file ({})", m.display()),
            Clash::Own { flag, written } => {
                write!(f, "{}the {flag} file", if *written { "also " } else { "" })
            }
        }
    }
}

/// Refuses, before anything is opened for writing, a command that would write over one
/// of its inputs, its mapping file or another of its own files (`own`: what it writes,
/// and what it reads and must keep, such as an API key file or a checkpoint it does not
/// use): the same file by any name (a symlink, `./x`, a hard link), compared by
/// [`FileId`]. Devices and pipes do not count (`/dev/null` may take several outputs).
/// The message names the flag, the path and what it would overwrite.
pub fn refuse_overwriting(
    own: &[OwnFile],
    inputs: &[Arc<InputInfo>],
    mapping: Option<&Path>,
) -> Result<(), Overwrite> {
    let own: Vec<(&OwnFile, FileId)> = own
        .iter()
        .filter_map(|f| FileId::of(&f.path).map(|id| (f, id)))
        .collect();
    let inputs: Vec<(FileId, &str)> = inputs
        .iter()
        .filter(|i| i.object.is_none())
        .filter_map(|i| FileId::of(&i.path).map(|id| (id, i.display.as_str())))
        .collect();
    let mapping = mapping.and_then(|m| FileId::of(m).map(|id| (m, id)));
    for (i, (out, id)) in own.iter().enumerate() {
        if !out.written || std::fs::metadata(&out.path).is_ok_and(|m| !m.is_file()) {
            continue;
        }
        let clash = if let Some((_, shown)) = inputs.iter().find(|(input, _)| input == id) {
            Clash::Input(shown.to_string())
        } else if let Some((m, _)) = mapping.as_ref().filter(|(_, m)| m == id) {
            Clash::Mapping(m.to_path_buf())
        } else if let Some((other, _)) = own
            .iter()
            .enumerate()
            // Two outputs on one file: named at the second of them.
            .find(|&(j, (other, o))| o == id && (j < i || (j != i && !other.written)))
            .map(|(_, o)| o)
        {
            Clash::Own {
                flag: other.flag,
                written: other.written,
            }
        } else {
            continue;
        };
        return Err(Overwrite {
            flag: out.flag,
            path: out.path.clone(),
            clash,
        });
    }
    Ok(())
}

/// `p` as an absolute path with its directory resolved (symlinks, `..`), whether or not
/// the file exists; as given when that fails.
pub fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

fn is_own(path: &Path, own: &[FileId]) -> bool {
    if own.is_empty() {
        return false;
    }
    let hit = FileId::of(path).is_some_and(|id| own.contains(&id));
    if hit {
        log::info!(
            "leaving out {}: it is one of this run's own files",
            path.display()
        );
    }
    hit
}

/// An open input, ready to fill chunks.
pub enum Opened {
    Csv(csv::CsvSource),
    Ndjson(ndjson::NdjsonSource),
    Parquet(parquet::ParquetSource),
}

impl Opened {
    pub fn schema(&self) -> &dyn Schema {
        match self {
            Opened::Csv(s) => s.header().as_ref(),
            Opened::Ndjson(s) => s.schema().as_ref(),
            Opened::Parquet(s) => s.schema().as_ref(),
        }
    }

    /// A fresh chunk of the right kind for this source.
    pub fn new_chunk(&self, input: &Arc<InputInfo>) -> Chunk {
        match self {
            Opened::Csv(s) => Chunk::Csv(csv::CsvChunk::new(input.clone(), s.header().clone())),
            Opened::Ndjson(s) => Chunk::Ndjson(s.new_chunk()),
            Opened::Parquet(s) => Chunk::Parquet(s.new_chunk()),
        }
    }

    /// Fills `chunk` (which must come from [`Opened::new_chunk`] of the same format)
    /// with up to `max_rows` rows; an empty chunk means the input is exhausted.
    pub fn fill(&mut self, chunk: &mut Chunk, max_rows: usize) -> Result<(), SourceError> {
        match (self, chunk) {
            (Opened::Csv(s), Chunk::Csv(c)) => s.fill(c, max_rows),
            (Opened::Ndjson(s), Chunk::Ndjson(c)) => s.fill(c, max_rows),
            (Opened::Parquet(s), Chunk::Parquet(c)) => s.fill(c, max_rows),
            (s, c) => {
                // The reader swaps a chunk of the wrong kind for a new one; never a panic.
                *c = s.new_chunk(c.input());
                s.fill(c, max_rows)
            }
        }
    }

    /// As [`Opened::fill`], but a CSV chunk may be left for [`Chunk::materialize`] to
    /// parse, so that a pipeline parses on its mapper threads instead of its reader.
    pub fn fill_deferred(&mut self, chunk: &mut Chunk, max_rows: usize) -> Result<(), SourceError> {
        match (self, chunk) {
            (Opened::Csv(s), Chunk::Csv(c)) => s.fill_deferred(c, max_rows),
            (s, c) => s.fill(c, max_rows),
        }
    }
}

fn csv_options(input: &InputInfo, opts: &SourceOptions) -> csv::CsvOptions {
    let mut o = opts.csv;
    // A `.tsv` file is tab-separated unless the user chose another delimiter.
    let name = Compression::strip(&input.display).to_ascii_lowercase();
    if o.delimiter == b',' && name.ends_with(".tsv") {
        o.delimiter = b'\t';
    }
    o
}

/// Opens an input and reads its header or schema.
pub fn open(input: &Arc<InputInfo>, opts: &SourceOptions) -> Result<Opened, SourceError> {
    match input.format {
        Format::Csv => {
            let (stream, _) = input.open_stream()?;
            Ok(Opened::Csv(csv::CsvSource::open(
                input.clone(),
                stream,
                csv_options(input, opts),
            )?))
        }
        Format::Ndjson => {
            let (stream, _) = input.open_stream()?;
            let mut s = ndjson::NdjsonSource::open(input.clone(), stream)?;
            // One limit for every text format; it travels with the CSV options.
            s.set_max_record_bytes(opts.csv.max_record_bytes);
            Ok(Opened::Ndjson(s))
        }
        Format::Parquet => Ok(Opened::Parquet(parquet::ParquetSource::open(
            input.clone(),
            0,
        )?)),
    }
}

/// Opens an input so that the first chunk filled starts at data row `pos.row`, whose
/// first byte is at `pos.offset` (as a chunk's [`Chunk::end`] or a row's position said).
///
/// Plain CSV and NDJSON files seek to the byte offset (CSV reads its header from the
/// start first); line numbers after the seek are unknown (see [`LINE_UNKNOWN`]) rather than
/// found by counting the newlines before
/// the offset, a sequential scan at memory speed with no parsing. Compressed streams and
/// standard input cannot seek: they are decompressed and parsed from the start and
/// `pos.row` rows are skipped, which costs about as much as reading those rows. Parquet
/// skips whole row groups using the file's metadata, then the rows before `pos.row`
/// within its group.
pub fn open_at(
    input: &Arc<InputInfo>,
    opts: &SourceOptions,
    pos: Position,
) -> Result<Opened, SourceError> {
    if pos.row == 0 {
        return open(input, opts);
    }
    match input.format {
        Format::Parquet => Ok(Opened::Parquet(parquet::ParquetSource::open(
            input.clone(),
            pos.row,
        )?)),
        Format::Csv | Format::Ndjson => {
            let mut opened = open(input, opts)?;
            if input.seekable() {
                let (file, line) = seek_file(input, pos.offset)?;
                match &mut opened {
                    Opened::Csv(s) => s.reposition(file, pos, line),
                    Opened::Ndjson(s) => s.reposition(file, pos, line),
                    Opened::Parquet(_) => {}
                }
            } else {
                match &mut opened {
                    Opened::Csv(s) => s.skip_rows(pos.row)?,
                    Opened::Ndjson(s) => s.skip_rows(pos.row)?,
                    Opened::Parquet(_) => {}
                }
            }
            Ok(opened)
        }
    }
}

/// The file opened at `offset` (an object: a ranged GET from there), and the 1-based
/// line number there.
fn seek_file(input: &InputInfo, offset: u64) -> Result<(Stream, u64), SourceError> {
    use std::io::{Seek, SeekFrom};
    let open_err = |source| SourceError::Open {
        path: input.display.clone(),
        source,
    };
    if let Some(obj) = &input.object {
        let r = obj.reader_at(offset).map_err(open_err)?;
        return Ok((
            Box::new(std::io::BufReader::with_capacity(256 * 1024, r)),
            LINE_UNKNOWN,
        ));
    }
    let mut file = std::fs::File::open(&input.path).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    if offset > len {
        return Err(SourceError::Read {
            path: input.display.clone(),
            message: format!(
                "cannot resume at byte {offset}: the file is only {len} bytes long, so it changed since the checkpoint was written"
            ),
        });
    }
    // Line numbers after a seek are not recomputed: counting the newlines before the
    // offset would make resuming at 90% of a huge file slower than at 0%. Rows resumed
    // this way report `"line": null`; their row number and byte offset stay exact.
    file.seek(SeekFrom::Start(offset)).map_err(open_err)?;
    Ok((
        Box::new(std::io::BufReader::with_capacity(256 * 1024, file)),
        LINE_UNKNOWN,
    ))
}

/// A row's line when it cannot be known cheaply (after a resume seek, or in Parquet).
pub const LINE_UNKNOWN: u64 = 0;

/// Appends `s` as a JSON string literal (quotes included) to `out`.
/// Whole runs of safe bytes are copied at once; only `"`, `\` and control bytes are escaped.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    crate::json::write_str(out, s)
}
