//! NDJSON input: one JSON object per line, parsed with simd-json into a reused tape.
//!
//! Values keep their JSON types: numbers stay numbers, booleans stay booleans, and nested
//! objects and arrays pass through unchanged (as compact JSON). Only the paths the mapping
//! resolved ([`super::ColumnRegistry`]) are extracted from each line, into cells that point
//! into one byte arena per chunk, so nothing is allocated per row once the chunk's
//! buffers have grown.
//!
//! A mapping name reaches a value by a top-level key (`email`), a dotted path
//! (`user.id`; a top-level key that itself contains the dots wins) or a JSON pointer
//! (`/user/id`, `/items/0/sku`, with `~1` for `/` and `~0` for `~`). A name can always
//! be resolved, since rows need not share keys: a row without the key gives a missing
//! value.
//!
//! The schema ("columns") of an NDJSON input is the top-level keys of its first
//! [`SAMPLE_ROWS`] rows, in first-seen order; `"rest"` uses it. Keys that first appear
//! after the sample are not lost: they are gathered per row under the pseudo-column
//! [`LATER_KEYS`], which `"rest"` includes and the encoder writes inline.
//!
//! Blank lines are skipped (they are not rows). A line that is not a JSON object, or not
//! UTF-8, or longer than [`crate::config::DEFAULT_MAX_RECORD_BYTES`], is a row with a
//! source problem: it is rejected with its line and byte offset, and the run goes on.

use std::io::{BufRead, Cursor, Read};
use std::sync::Arc;

use simd_json::{Node, StaticNode, Tape};

use super::{ColumnRef, Field, InputInfo, Position, Row, Schema, SourceError, Stream};
use crate::json;

/// Rows read at open to learn the top-level keys.
pub const SAMPLE_ROWS: usize = 1000;
/// Bytes read at open at most for the sample.
const SAMPLE_BYTES: usize = 4 << 20;

/// The pseudo-column holding, per row, the top-level keys that are neither in the sample
/// nor named by the mapping, as one JSON object.
pub const LATER_KEYS: &str = "(keys first seen after the sampled rows)";

/// The columns of one NDJSON input, as far as its first rows show.
#[derive(Debug)]
pub struct NdjsonSchema {
    keys: Vec<String>,
    /// Every key path of the sample, nested ones dotted (`user.id`), in first-seen
    /// order, and whether it held a value other than an object there.
    paths: Vec<(String, bool)>,
    input: Arc<InputInfo>,
}

impl Schema for NdjsonSchema {
    fn resolve(&self, name: &str) -> Option<ColumnRef> {
        PathSpec::parse(name)?;
        Some(ColumnRef::Path(self.input.columns.id(name)))
    }
    fn column_names(&self) -> Vec<String> {
        let mut names = self.keys.clone();
        names.push(LATER_KEYS.to_string());
        names
    }
    fn spreads(&self, name: &str) -> bool {
        name == LATER_KEYS
    }
    fn spreads_unknown(&self) -> bool {
        true
    }
    fn known_paths(&self) -> Vec<String> {
        self.paths.iter().map(|(p, _)| p.clone()).collect()
    }
    fn sampled_paths(&self) -> Vec<String> {
        self.paths
            .iter()
            .filter(|(_, leaf)| *leaf)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// How deep [`sample_keys`] records nested paths, and how many at most.
const SAMPLE_PATH_DEPTH: usize = 4;
const SAMPLE_PATHS: usize = 2000;

/// A compiled mapping name.
#[derive(Debug, Clone)]
enum PathSpec {
    /// The n later-keys pseudo-column.
    Later,
    /// A top-level key, then (if absent and the name had dots) a nested path.
    Key {
        key: String,
        nested: Option<Vec<String>>,
    },
    /// A JSON pointer.
    Pointer(Vec<String>),
}

impl PathSpec {
    fn parse(name: &str) -> Option<PathSpec> {
        if name == LATER_KEYS {
            return Some(PathSpec::Later);
        }
        if let Some(p) = name.strip_prefix('/') {
            let segs: Vec<String> = p
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect();
            return Some(PathSpec::Pointer(segs));
        }
        if name.is_empty() {
            return None;
        }
        let nested = name
            .contains('.')
            .then(|| name.split('.').map(str::to_string).collect());
        Some(PathSpec::Key {
            key: name.to_string(),
            nested,
        })
    }
}

/// One extracted value; strings and JSON point into the chunk's arena.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(usize, usize),
    Json(usize, usize),
}

/// A chunk of NDJSON rows.
pub struct NdjsonChunk {
    pub input: Arc<InputInfo>,
    pub len: usize,
    pub first_row: u64,
    pub end: Position,
    /// Byte offset of each row's line.
    pub offsets: Vec<u64>,
    lines: Vec<u64>,
    /// Cells per row.
    width: usize,
    cells: Vec<Cell>,
    arena: Vec<u8>,
    /// The rows' lines back to back (for the rejects file).
    raw: Vec<u8>,
    raw_ends: Vec<usize>,
    /// Per row: the reject reason code and detail of a line that is not a record.
    problems: Vec<Option<(&'static str, String)>>,
    /// Per path: whether any row of the chunk had it (see [`super::Chunk::present`]).
    pub present: Vec<bool>,
}

impl NdjsonChunk {
    fn new(input: Arc<InputInfo>) -> Self {
        NdjsonChunk {
            input,
            len: 0,
            first_row: 0,
            end: Position::default(),
            offsets: Vec::new(),
            lines: Vec::new(),
            width: 0,
            cells: Vec::new(),
            arena: Vec::new(),
            raw: Vec::new(),
            raw_ends: Vec::new(),
            problems: Vec::new(),
            present: Vec::new(),
        }
    }

    pub fn row(&self, i: usize) -> NdjsonRow<'_> {
        NdjsonRow { chunk: self, i }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.offsets.clear();
        self.lines.clear();
        self.cells.clear();
        self.arena.clear();
        self.raw.clear();
        self.raw_ends.clear();
        self.problems.clear();
    }
}

/// One NDJSON row.
pub struct NdjsonRow<'a> {
    chunk: &'a NdjsonChunk,
    i: usize,
}

impl Row for NdjsonRow<'_> {
    #[inline]
    fn field(&self, col: &ColumnRef) -> Field<'_> {
        let c = self.chunk;
        let ColumnRef::Path(k) = *col else {
            return Field::Missing;
        };
        if k >= c.width {
            return Field::Missing;
        }
        match c.cells[self.i * c.width + k] {
            Cell::Missing => Field::Missing,
            Cell::Null => Field::Null,
            Cell::Bool(b) => Field::Bool(b),
            Cell::Int(v) => Field::Int(v),
            Cell::UInt(v) => Field::UInt(v),
            Cell::Float(v) => Field::Float(v),
            Cell::Str(s, e) => {
                // The arena holds only what simd-json validated as UTF-8.
                Field::Str(std::str::from_utf8(&c.arena[s..e]).unwrap_or_default())
            }
            Cell::Json(s, e) => Field::Json(&c.arena[s..e]),
        }
    }

    fn write_record_json(&self, out: &mut Vec<u8>) {
        let c = self.chunk;
        let start = if self.i == 0 {
            0
        } else {
            c.raw_ends[self.i - 1]
        };
        let line = &c.raw[start..c.raw_ends[self.i]];
        if c.problems[self.i].is_none() {
            out.extend_from_slice(line);
        } else {
            json::write_str(out, &String::from_utf8_lossy(line));
        }
    }

    fn source_problem(&self) -> Option<String> {
        self.chunk.problems[self.i].as_ref().map(|p| p.1.clone())
    }

    fn problem_code(&self) -> &'static str {
        self.chunk.problems[self.i]
            .as_ref()
            .map_or("bad_json", |p| p.0)
    }

    fn line(&self) -> u64 {
        self.chunk.lines[self.i]
    }
}

/// A reader over one NDJSON input.
pub struct NdjsonSource {
    input: Arc<InputInfo>,
    schema: Arc<NdjsonSchema>,
    stream: Stream,
    paths: Vec<PathSpec>,
    /// Top-level keys that never go to [`LATER_KEYS`]: the sample's and the mapping's.
    known: Vec<String>,
    /// Byte offset of the next line.
    offset: u64,
    /// Lines consumed so far.
    line: u64,
    /// False after a resume seek: line numbers are then reported as unknown.
    lines_known: bool,
    next_row: u64,
    line_buf: Vec<u8>,
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Tape<'static>,
    max_line: usize,
}

/// What reading one line found.
struct LineRead {
    consumed: usize,
    too_long: bool,
}

impl NdjsonSource {
    /// Opens the stream and reads its first rows to learn the top-level keys.
    pub fn open(input: Arc<InputInfo>, mut stream: Stream) -> Result<Self, SourceError> {
        let mut sample = Vec::new();
        let mut rows = 0;
        while rows < SAMPLE_ROWS && sample.len() < SAMPLE_BYTES {
            let n = (&mut stream)
                .take((SAMPLE_BYTES - sample.len()) as u64)
                .read_until(b'\n', &mut sample)
                .map_err(|e| read_error(&input, 0, &e))?;
            if n == 0 {
                break;
            }
            rows += 1;
        }
        let (keys, paths) = sample_keys(&sample);
        let schema = Arc::new(NdjsonSchema {
            keys,
            paths,
            input: input.clone(),
        });
        let stream: Stream = Box::new(Cursor::new(sample).chain(stream));
        let mut s = NdjsonSource {
            input,
            schema,
            stream,
            paths: Vec::new(),
            known: Vec::new(),
            offset: 0,
            line: 0,
            lines_known: true,
            next_row: 0,
            line_buf: Vec::new(),
            scratch: Vec::new(),
            buffers: simd_json::Buffers::default(),
            tape: Tape(Vec::new()),
            max_line: crate::config::DEFAULT_MAX_RECORD_BYTES,
        };
        s.refresh_paths();
        Ok(s)
    }

    pub fn schema(&self) -> &Arc<NdjsonSchema> {
        &self.schema
    }

    /// Lines longer than `n` bytes are rejected (only their first `n` bytes are kept).
    pub fn set_max_record_bytes(&mut self, n: usize) {
        self.max_line = n;
    }

    pub fn new_chunk(&self) -> NdjsonChunk {
        NdjsonChunk::new(self.input.clone())
    }

    /// Picks up names resolved since the last look (a mapping compiled against this
    /// very source).
    fn refresh_paths(&mut self) {
        if self.input.columns.len() == self.paths.len() {
            return;
        }
        let names = self.input.columns.snapshot();
        self.paths = names
            .iter()
            .map(|n| PathSpec::parse(n).unwrap_or(PathSpec::Pointer(Vec::new())))
            .collect();
        self.known = self.schema.keys.clone();
        self.known.extend(names);
    }

    /// Continues on `stream`, which starts at data row `pos.row` (byte `pos.offset`,
    /// 1-based line `line` of the file).
    pub fn reposition(&mut self, stream: Stream, pos: Position, line: u64) {
        self.stream = stream;
        self.offset = pos.offset;
        self.line = line.saturating_sub(1);
        self.lines_known = line != super::LINE_UNKNOWN;
        self.next_row = pos.row;
    }

    /// Reads and drops `n` rows (resuming a stream that cannot seek).
    pub fn skip_rows(&mut self, n: u64) -> Result<(), SourceError> {
        while self.next_row < n {
            let r = self.read_line()?;
            if r.consumed == 0 {
                return Err(SourceError::Read {
                    path: self.input.display.clone(),
                    message: format!(
                        "cannot resume at row {}: the input has only {} rows, so it changed since the checkpoint was written",
                        n + 1,
                        self.next_row
                    ),
                });
            }
            self.offset += r.consumed as u64;
            self.line += 1;
            if !is_blank(&self.line_buf) {
                self.next_row += 1;
            }
        }
        Ok(())
    }

    /// Reads one line into `line_buf` (without its newline), keeping at most `max_line`
    /// bytes of it. `consumed == 0` means end of input.
    fn read_line(&mut self) -> Result<LineRead, SourceError> {
        self.line_buf.clear();
        let mut consumed = 0;
        let mut too_long = false;
        loop {
            let buf = self
                .stream
                .fill_buf()
                .map_err(|e| read_error(&self.input, self.offset + consumed as u64, &e))?;
            if buf.is_empty() {
                break;
            }
            let (take, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let room = self.max_line.saturating_sub(self.line_buf.len());
            let keep = take.min(room);
            self.line_buf.extend_from_slice(&buf[..keep]);
            too_long |= keep < take;
            self.stream.consume(take);
            consumed += take;
            if done {
                break;
            }
        }
        while matches!(self.line_buf.last(), Some(b'\n' | b'\r')) {
            self.line_buf.pop();
        }
        if self.line == 0 && self.line_buf.starts_with(b"\xEF\xBB\xBF") {
            self.line_buf.drain(..3);
        }
        Ok(LineRead { consumed, too_long })
    }

    /// Fills `chunk` with up to `max_rows` rows. `chunk.len == 0` means end of input.
    pub fn fill(&mut self, chunk: &mut NdjsonChunk, max_rows: usize) -> Result<(), SourceError> {
        self.refresh_paths();
        chunk.clear();
        chunk.input = self.input.clone();
        chunk.first_row = self.next_row;
        chunk.width = self.paths.len();
        chunk.present.clear();
        chunk.present.resize(chunk.width, false);
        while chunk.len < max_rows {
            let start = self.offset;
            let r = self.read_line()?;
            if r.consumed == 0 {
                break;
            }
            self.offset += r.consumed as u64;
            self.line += 1;
            if is_blank(&self.line_buf) {
                continue;
            }
            chunk.offsets.push(start);
            chunk.lines.push(if self.lines_known {
                self.line
            } else {
                super::LINE_UNKNOWN
            });
            // An over-long line is not copied into the rejects file (issue 9: a 16 MiB
            // line of NULs became a 96 MiB reject line).
            if !r.too_long {
                chunk.raw.extend_from_slice(&self.line_buf);
            }
            chunk.raw_ends.push(chunk.raw.len());
            let problem = if r.too_long {
                let mut why = format!(
                    "the line is longer than {} bytes; split the record or leave it out",
                    self.max_line
                );
                if let Some(hint) = cr_line_ends(&self.line_buf) {
                    why = format!("{why}; {hint}");
                }
                Some(("record_too_large", why))
            } else {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.line_buf);
                extract(
                    &mut self.scratch,
                    &mut self.buffers,
                    &mut self.tape,
                    &self.paths,
                    &self.known,
                    &mut chunk.cells,
                    &mut chunk.arena,
                    &mut chunk.present,
                )
                .err()
                .map(|(code, detail)| match code {
                    "bad_json" if detail.starts_with(MALFORMED) => {
                        (code, explain_bad_json(&self.line_buf, detail))
                    }
                    _ => (code, detail),
                })
            };
            if problem.is_some() {
                // A rejected row still has its cells, so the chunk stays rectangular.
                chunk.cells.truncate(chunk.len * chunk.width);
                chunk
                    .cells
                    .extend(std::iter::repeat_n(Cell::Missing, chunk.width));
            }
            chunk.problems.push(problem);
            chunk.len += 1;
        }
        if chunk.len == 0 && self.next_row == 0 {
            super::note(format_args!(
                "{} has no rows; nothing to send from it",
                self.input.display
            ));
        }
        self.next_row += chunk.len as u64;
        chunk.end = Position {
            input: self.input.index,
            row: self.next_row,
            offset: self.offset,
        };
        Ok(())
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

fn read_error(input: &InputInfo, offset: u64, e: &std::io::Error) -> SourceError {
    SourceError::Read {
        path: input.display.clone(),
        message: format!("read failed near byte {offset} (of the decompressed stream): {e}"),
    }
}

/// Top-level keys of the sample's objects, in first-seen order, and every key path
/// (nested ones dotted, at most [`SAMPLE_PATH_DEPTH`] deep) with whether it held a
/// value other than an object (a leaf).
fn sample_keys(sample: &[u8]) -> (Vec<String>, Vec<(String, bool)>) {
    let mut keys: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut paths: Vec<(String, bool)> = Vec::new();
    let mut path_at: std::collections::HashMap<String, usize> = Default::default();
    let mut buffers = simd_json::Buffers::default();
    let mut scratch = Vec::new();
    for line in sample.split(|&b| b == b'\n') {
        if is_blank(line) {
            continue;
        }
        scratch.clear();
        scratch.extend_from_slice(line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line));
        let Ok(tape) = simd_json::to_tape_with_buffers(&mut scratch, &mut buffers) else {
            continue;
        };
        let nodes = &tape.0;
        let Some(&Node::Object { len, .. }) = nodes.first() else {
            continue;
        };
        let mut i = 1;
        for _ in 0..len {
            if let Node::String(k) = nodes[i] {
                if seen.insert(k.to_string()) {
                    keys.push(k.to_string());
                }
            }
            i += 1 + span(&nodes[i + 1]);
        }
        if paths.len() < SAMPLE_PATHS {
            object_paths(nodes, 0, "", 1, &mut paths, &mut path_at);
        }
    }
    (keys, paths)
}

/// Records the key paths of the object at `at` (see [`sample_keys`]).
fn object_paths(
    nodes: &[Node<'_>],
    at: usize,
    prefix: &str,
    depth: usize,
    paths: &mut Vec<(String, bool)>,
    path_at: &mut std::collections::HashMap<String, usize>,
) {
    let Node::Object { len, .. } = nodes[at] else {
        return;
    };
    let mut i = at + 1;
    for _ in 0..len {
        if let Node::String(k) = nodes[i] {
            let p = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            let is_object = matches!(nodes[i + 1], Node::Object { .. });
            match path_at.get(&p) {
                Some(&n) => paths[n].1 |= !is_object,
                None if paths.len() < SAMPLE_PATHS => {
                    path_at.insert(p.clone(), paths.len());
                    paths.push((p.clone(), !is_object));
                }
                None => {}
            }
            if is_object && depth < SAMPLE_PATH_DEPTH {
                object_paths(nodes, i + 1, &p, depth + 1, paths, path_at);
            }
        }
        i += 1 + span(&nodes[i + 1]);
    }
}

/// Number of tape nodes a value takes, itself included.
#[inline]
fn span(n: &Node<'_>) -> usize {
    match n {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Index of the value under `key` in the object at `at`.
fn object_get(nodes: &[Node<'_>], at: usize, key: &str) -> Option<usize> {
    let Node::Object { len, .. } = nodes[at] else {
        return None;
    };
    let mut i = at + 1;
    for _ in 0..len {
        if nodes[i] == Node::String(key) {
            return Some(i + 1);
        }
        i += 1 + span(&nodes[i + 1]);
    }
    None
}

/// Index of the value under a path segment (object key, or array index).
fn step(nodes: &[Node<'_>], at: usize, seg: &str) -> Option<usize> {
    match nodes[at] {
        Node::Object { .. } => object_get(nodes, at, seg),
        Node::Array { len, .. } => {
            let n: usize = seg.parse().ok()?;
            if n >= len {
                return None;
            }
            let mut i = at + 1;
            for _ in 0..n {
                i += span(&nodes[i]);
            }
            Some(i)
        }
        _ => None,
    }
}

fn walk(nodes: &[Node<'_>], segs: &[String]) -> Option<usize> {
    let mut at = 0;
    for s in segs {
        at = step(nodes, at, s)?;
    }
    Some(at)
}

/// How a reject for JSON that does not parse begins.
const MALFORMED: &str = "malformed JSON: ";

/// A reject's words for a line that is not JSON: serde_json's account of what it expected
/// where (simd-json's own errors name its internal state, such as `InternalError at
/// character 27`), and a hint when the line is several records joined by carriage returns,
/// which is how a file with CR-only line ends arrives. Runs only for rejected lines.
#[cold]
fn explain_bad_json(line: &[u8], simd_message: String) -> String {
    let why = match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        // simd-json refused what serde_json reads: keep simd-json's words.
        Ok(_) => simd_message,
        Err(e) => {
            let text = e.to_string();
            let what = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(w, _)| w);
            // serde_json counts bytes, from 1.
            format!("{MALFORMED}{what} near byte {} of the line", e.column())
        }
    };
    match cr_line_ends(line) {
        Some(hint) => format!("{why}; {hint}"),
        None => why,
    }
}

/// A hint when `line` holds records joined by a carriage return (`}\r{`): the file's
/// lines end with CR alone, so the reader sees them as one line. A CR inside a value is
/// not one.
fn cr_line_ends(line: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(line, b"}\r{")? + 1;
    Some(format!(
        "the line holds a carriage return between two records (byte {}): the file's lines seem to end with CR alone; convert them to LF first (for example tr '\\r' '\\n' < in.ndjson > out.ndjson)",
        at + 1
    ))
}

/// Parses one line (in `scratch`, which parsing overwrites) and appends one cell per
/// path to `cells`. `Err` is the row's problem.
#[allow(clippy::too_many_arguments)] // the line, the parser's reusable state, what to take and where to put it
fn extract(
    scratch: &mut [u8],
    buffers: &mut simd_json::Buffers,
    tape_slot: &mut Tape<'static>,
    paths: &[PathSpec],
    known: &[String],
    cells: &mut Vec<Cell>,
    arena: &mut Vec<u8>,
    present: &mut [bool],
) -> Result<(), (&'static str, String)> {
    let utf8_at = std::str::from_utf8(scratch).err().map(|e| e.valid_up_to());
    let mut tape = std::mem::replace(tape_slot, Tape(Vec::new())).reset();
    let result = match simd_json::fill_tape(scratch, buffers, &mut tape) {
        Err(e) => Err(match utf8_at {
            Some(at) => (
                "invalid_utf8",
                format!("invalid UTF-8 at byte {at} of the line; re-export the file as UTF-8"),
            ),
            None => ("bad_json", format!("{MALFORMED}{e}")),
        }),
        Ok(()) => {
            let nodes = &tape.0;
            if !matches!(nodes.first(), Some(Node::Object { .. })) {
                Err((
                    "bad_json",
                    "the line is valid JSON but not an object; each line must be one {...} record"
                        .to_string(),
                ))
            } else {
                for (k, p) in paths.iter().enumerate() {
                    let at = match p {
                        PathSpec::Later => {
                            cells.push(later_keys(nodes, known, arena));
                            continue;
                        }
                        PathSpec::Key { key, nested } => {
                            object_get(nodes, 0, key).or_else(|| walk(nodes, nested.as_deref()?))
                        }
                        PathSpec::Pointer(segs) => walk(nodes, segs),
                    };
                    cells.push(match at {
                        None => Cell::Missing,
                        Some(at) => {
                            present[k] = true;
                            cell(nodes, at, arena)
                        }
                    });
                }
                Ok(())
            }
        }
    };
    *tape_slot = tape.reset();
    result
}

fn cell(nodes: &[Node<'_>], at: usize, arena: &mut Vec<u8>) -> Cell {
    match nodes[at] {
        Node::Static(StaticNode::Null) => Cell::Null,
        Node::Static(StaticNode::Bool(b)) => Cell::Bool(b),
        Node::Static(StaticNode::I64(v)) => Cell::Int(v),
        // simd-json reads every non-negative integer as u64; keep one type for both.
        Node::Static(StaticNode::U64(v)) => match i64::try_from(v) {
            Ok(v) => Cell::Int(v),
            Err(_) => Cell::UInt(v),
        },
        Node::Static(StaticNode::F64(v)) => Cell::Float(v),
        Node::String(s) => {
            let start = arena.len();
            arena.extend_from_slice(s.as_bytes());
            Cell::Str(start, arena.len())
        }
        Node::Object { .. } | Node::Array { .. } => {
            let start = arena.len();
            write_node(nodes, at, arena);
            Cell::Json(start, arena.len())
        }
    }
}

/// The row's top-level members whose keys are not `known`, as one object.
fn later_keys(nodes: &[Node<'_>], known: &[String], arena: &mut Vec<u8>) -> Cell {
    let Node::Object { len, .. } = nodes[0] else {
        return Cell::Missing;
    };
    let start = arena.len();
    let mut i = 1;
    for _ in 0..len {
        if let Node::String(k) = nodes[i] {
            if !known.iter().any(|n| n == k) {
                arena.push(if arena.len() == start { b'{' } else { b',' });
                json::write_str(arena, k);
                arena.push(b':');
                write_node(nodes, i + 1, arena);
            }
        }
        i += 1 + span(&nodes[i + 1]);
    }
    if arena.len() == start {
        return Cell::Missing;
    }
    arena.push(b'}');
    Cell::Json(start, arena.len())
}

/// Writes the value at `at` as compact JSON; returns the index after it.
fn write_node(nodes: &[Node<'_>], at: usize, out: &mut Vec<u8>) -> usize {
    match nodes[at] {
        Node::Static(StaticNode::Null) => out.extend_from_slice(b"null"),
        Node::Static(StaticNode::Bool(b)) => {
            out.extend_from_slice(if b { b"true" } else { b"false" })
        }
        Node::Static(StaticNode::I64(v)) => json::write_i64(out, v),
        Node::Static(StaticNode::U64(v)) => json::write_u64(out, v),
        Node::Static(StaticNode::F64(v)) => {
            if v.is_finite() {
                json::write_f64(out, v)
            } else {
                out.extend_from_slice(b"null")
            }
        }
        Node::String(s) => json::write_str(out, s),
        Node::Object { len, .. } => {
            out.push(b'{');
            let mut i = at + 1;
            for k in 0..len {
                if k > 0 {
                    out.push(b',');
                }
                if let Node::String(key) = nodes[i] {
                    json::write_str(out, key);
                }
                out.push(b':');
                i = write_node(nodes, i + 1, out);
            }
            out.push(b'}');
            return i;
        }
        Node::Array { len, .. } => {
            out.push(b'[');
            let mut i = at + 1;
            for k in 0..len {
                if k > 0 {
                    out.push(b',');
                }
                i = write_node(nodes, i, out);
            }
            out.push(b']');
            return i;
        }
    }
    at + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Format, InputInfo};

    fn source(text: &str, names: &[&str]) -> (NdjsonSource, Vec<ColumnRef>) {
        let input = Arc::new(InputInfo::new(0, "t.ndjson".into(), Format::Ndjson));
        let stream: Stream = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let s = NdjsonSource::open(input, stream).unwrap();
        let refs = names
            .iter()
            .map(|n| s.schema().resolve(n).unwrap())
            .collect();
        (s, refs)
    }

    #[test]
    fn typed_values_and_nested_paths_are_kept() {
        let (mut s, refs) = source(
            "{\"id\":7,\"ok\":true,\"f\":1.5,\"s\":\"a\\\"b\",\"user\":{\"id\":\"u1\",\"tags\":[1,{\"x\":null}]},\"n\":null}\n",
            &["id", "ok", "f", "s", "user.id", "/user/tags", "/user/tags/1/x", "n", "nope", "user"],
        );
        let mut c = s.new_chunk();
        s.fill(&mut c, 10).unwrap();
        assert_eq!(c.len, 1);
        let r = c.row(0);
        let got: Vec<Field<'_>> = refs.iter().map(|f| r.field(f)).collect();
        assert_eq!(
            got,
            vec![
                Field::Int(7),
                Field::Bool(true),
                Field::Float(1.5),
                Field::Str("a\"b"),
                Field::Str("u1"),
                Field::Json(b"[1,{\"x\":null}]"),
                Field::Null,
                Field::Null,
                Field::Missing,
                Field::Json(b"{\"id\":\"u1\",\"tags\":[1,{\"x\":null}]}"),
            ]
        );
    }

    /// A file with CR-only line ends reads as one line; its reject says so, in
    /// serde_json's words rather than simd-json's internal state.
    #[test]
    fn a_line_with_carriage_returns_is_a_reject_that_names_them() {
        let text = b"{\"a\":1}\r{\"a\":2}\r";
        let input = Arc::new(InputInfo::new(0, "t.ndjson".into(), Format::Ndjson));
        let mut s = NdjsonSource::open(input, Box::new(Cursor::new(text.to_vec()))).unwrap();
        let mut c = s.new_chunk();
        s.fill(&mut c, 100).unwrap();
        assert_eq!(c.len, 1);
        assert_eq!(
            c.row(0).source_problem().unwrap(),
            "malformed JSON: trailing characters near byte 9 of the line; the line holds a carriage return between two records (byte 8): the file's lines seem to end with CR alone; convert them to LF first (for example tr '\\r' '\\n' < in.ndjson > out.ndjson)"
        );
    }

    /// A carriage return inside a value is no sign of CR line ends; records joined by
    /// CRs in a line too long to read are.
    #[test]
    fn the_cr_hint_is_given_only_between_records() {
        let text = b"{\"a\":\"x\ry\"}\n";
        let input = Arc::new(InputInfo::new(0, "t.ndjson".into(), Format::Ndjson));
        let mut s =
            NdjsonSource::open(input.clone(), Box::new(Cursor::new(text.to_vec()))).unwrap();
        let mut c = s.new_chunk();
        s.fill(&mut c, 100).unwrap();
        let why = c.row(0).source_problem().unwrap();
        assert!(
            why.starts_with("malformed JSON: control character"),
            "{why}"
        );
        assert!(!why.contains("carriage return"), "{why}");

        let long = b"{\"a\":1}\r".repeat(100);
        let mut s = NdjsonSource::open(input, Box::new(Cursor::new(long))).unwrap();
        s.set_max_record_bytes(64);
        let mut c = s.new_chunk();
        s.fill(&mut c, 100).unwrap();
        assert_eq!(c.len, 1);
        let why = c.row(0).source_problem().unwrap();
        assert!(
            why.starts_with("the line is longer than 64 bytes; split the record or leave it out; the line holds a carriage return between two records (byte 8)"),
            "{why}"
        );
    }

    #[test]
    fn bad_lines_are_row_problems_with_line_and_offset() {
        let text = b"{\"a\":1}\n\n{\"a\":\n[1]\n{\"a\":\"\xff\"}\n{\"a\":2}";
        let input = Arc::new(InputInfo::new(0, "t.ndjson".into(), Format::Ndjson));
        let stream: Stream = Box::new(Cursor::new(text.to_vec()));
        let mut s = NdjsonSource::open(input, stream).unwrap();
        let a = s.schema().resolve("a").unwrap();
        let mut c = s.new_chunk();
        s.fill(&mut c, 100).unwrap();
        assert_eq!(c.len, 5);
        assert_eq!(c.lines, vec![1, 3, 4, 5, 6]);
        assert_eq!(c.offsets, vec![0, 9, 15, 19, 29]);
        assert!(c.row(0).source_problem().is_none());
        assert_eq!(
            c.row(1).source_problem().unwrap(),
            "malformed JSON: EOF while parsing a value near byte 5 of the line"
        );
        assert!(c.row(2).source_problem().unwrap().contains("not an object"));
        assert!(c
            .row(3)
            .source_problem()
            .unwrap()
            .contains("UTF-8 at byte 6"));
        assert_eq!(c.row(4).field(&a), Field::Int(2));
        let mut rec = Vec::new();
        c.row(1).write_record_json(&mut rec);
        assert_eq!(rec, b"\"{\\\"a\\\":\"");
        assert_eq!(c.end.offset, text.len() as u64);
    }

    #[test]
    fn keys_after_the_sample_are_gathered_not_lost() {
        let mut text = String::new();
        for i in 0..SAMPLE_ROWS {
            text.push_str(&format!("{{\"a\":{i}}}\n"));
        }
        text.push_str("{\"a\":1,\"late\":{\"x\":[true]},\"id\":\"u\"}\n");
        let (mut s, refs) = source(&text, &["id", LATER_KEYS]);
        assert_eq!(s.schema().column_names(), vec!["a", LATER_KEYS]);
        let mut c = s.new_chunk();
        s.fill(&mut c, 5000).unwrap();
        let last = c.row(c.len - 1);
        assert_eq!(
            last.field(&refs[1]),
            Field::Json(b"{\"late\":{\"x\":[true]}}")
        );
        assert_eq!(c.row(0).field(&refs[1]), Field::Missing);
    }
}
