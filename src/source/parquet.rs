//! Parquet input: the `parquet` crate's Arrow reader, one record batch per chunk.
//!
//! Only the columns the mapping resolved are read (a [`ProjectionMask`] built from the
//! input's [`super::ColumnRegistry`] when the first chunk is filled); a file opened
//! before anything was resolved reads every column. Memory is one batch of the projected
//! columns plus the reader's pages, whatever the file's size.
//!
//! Arrow values become [`Field`]s as follows (nested values as compact JSON):
//! - integers → `Int`/`UInt`; floats → `Float`, with NaN and ±Infinity treated as null
//!   (JSON has neither; the column's `empty` policy applies);
//! - booleans → `Bool`; strings (also dictionary-encoded and views) → `Str`;
//! - decimals → their exact decimal text as `Raw`, so `type = "auto"` writes a number
//!   when it has at most 15 significant digits and a string otherwise (never rounds);
//! - binary → a base64 (standard alphabet, padded) string;
//! - timestamps of every unit, with or without a time zone → `TimestampNanos`, saturated
//!   outside what nanoseconds hold (the encoder refuses a saturated value) (Arrow
//!   stores instants as UTC; a zone-less timestamp is taken as UTC); dates → midnight
//!   UTC of that day; both are written as UTC ISO 8601;
//! - times of day → `"HH:MM:SS[.fraction]"`; durations → an integer in their unit;
//! - lists → arrays, structs → objects, maps → objects (keys as strings), nested
//!   timestamps as ISO 8601 strings; nulls → null.
//!
//! Intervals, unions and run-end-encoded columns are refused with an error naming the
//! column, when such a column is mapped.
//!
//! Nested values are reached by a dotted path (`address.city`; a top-level name that
//! itself holds the dots wins) or a JSON pointer (`/address/city`, `/tags/0`) through
//! struct fields, map keys and list indices. The path is checked against the schema when
//! the mapping is compiled (a struct field that does not exist is an error; a map key
//! can only be looked for per row), and each batch resolves it once into a row → value
//! index over the leaf array ([`NestedView`]), so a row reads it like any column. The
//! whole root column is read (its struct's other fields too): the parquet crate's leaf
//! projection would renumber the struct's fields.
//!
//! Row groups are read one at a time (one reader per group, sharing the file's
//! metadata), so no batch spans two groups: a damaged group stops the input with an
//! error naming it, after every row of the groups before it was handed on.
//!
//! Positions: a row's [`Position::offset`] is its row group's index.
//!
//! An object in object storage is read through parquet's push decoders
//! ([`super::remote::parquet_fetch`]): the footer, then per row group only the projected
//! column chunks, held whole while the group is read; a group whose projected chunks
//! exceed [`crate::config::MAX_ROW_GROUP_FETCH`] is refused, naming it. A resume never
//! requests the row groups before its own.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::{ColumnRef, Field, InputInfo, Position, Row, Schema, SourceError};
use crate::json;

/// The top-level columns of a Parquet file.
#[derive(Debug)]
pub struct ParquetSchema {
    names: Vec<String>,
    index: HashMap<String, usize>,
    fields: arrow_schema::Fields,
    input: Arc<InputInfo>,
}

/// One step of a nested path below a top-level column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A struct field or a map key.
    Key(String),
    /// A list index.
    Index(usize),
}

impl ParquetSchema {
    /// The top-level column and the steps below it that `name` reaches, checked against
    /// the schema; `None` for a name that is no path into it.
    fn path(&self, name: &str) -> Option<(usize, Vec<Step>)> {
        let segs: Vec<String> = match name.strip_prefix('/') {
            Some(p) => p
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect(),
            None => name.split('.').map(str::to_string).collect(),
        };
        // A pointer's first segment is the column; a dotted name's longest prefix that
        // names a column is (a column called "a.b" wins over the path a → b).
        let (root, rest) = if name.starts_with('/') {
            (*self.index.get(segs.first()?)?, &segs[1..])
        } else {
            (1..segs.len()).rev().find_map(|k| {
                self.index
                    .get(&segs[..k].join("."))
                    .map(|&i| (i, &segs[k..]))
            })?
        };
        if rest.is_empty() {
            return None;
        }
        let mut dt = self.fields.get(root)?.data_type().clone();
        let mut steps = Vec::with_capacity(rest.len());
        for seg in rest {
            let (step, next) = match &dt {
                DataType::Struct(fields) => {
                    let f = fields.iter().find(|f| f.name() == seg)?;
                    (Step::Key(seg.clone()), f.data_type().clone())
                }
                DataType::Map(entries, _) => match entries.data_type() {
                    DataType::Struct(kv) if kv.len() == 2 => {
                        (Step::Key(seg.clone()), kv[1].data_type().clone())
                    }
                    _ => return None,
                },
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                    (Step::Index(seg.parse().ok()?), f.data_type().clone())
                }
                _ => return None,
            };
            steps.push(step);
            dt = next;
        }
        Some((root, steps))
    }

    /// The top-level column a resolved name reads.
    fn root_of(&self, name: &str) -> Option<usize> {
        self.index
            .get(name)
            .copied()
            .or_else(|| self.path(name).map(|(r, _)| r))
    }
}

impl Schema for ParquetSchema {
    fn resolve(&self, name: &str) -> Option<ColumnRef> {
        if let Some(&i) = self.index.get(name) {
            self.input.columns.id(name);
            return Some(ColumnRef::Index(i));
        }
        self.path(name)?;
        Some(ColumnRef::Path(self.input.columns.id(name)))
    }
    fn column_names(&self) -> Vec<String> {
        self.names.clone()
    }
    /// The columns and the paths of their struct fields (map keys are per row).
    fn known_paths(&self) -> Vec<String> {
        fn walk(prefix: &str, dt: &DataType, out: &mut Vec<String>, depth: usize) {
            if let DataType::Struct(fields) = dt {
                for f in fields {
                    let p = format!("{prefix}.{}", f.name());
                    out.push(p.clone());
                    if depth < 4 {
                        walk(&p, f.data_type(), out, depth + 1);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for f in self.fields.iter() {
            out.push(f.name().clone());
            walk(f.name(), f.data_type(), &mut out, 1);
        }
        out
    }
}

/// The range of a list row's items in the list's values array.
type ItemRange = Box<dyn Fn(usize) -> (usize, usize)>;

/// Where a nested path's value is in a batch, per row.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A map without the key, a list too short.
    Missing,
    /// A null struct, map or list on the way, or a null value.
    Null,
    /// The value's index in the leaf array.
    At(usize),
}

/// A nested path resolved over one batch: the leaf array (all values at that depth,
/// flattened) and, per row, where the row's value is in it.
struct NestedView {
    leaf: ColView,
    rows: Vec<Slot>,
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Null,
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    F32,
    F64,
    Str,
    LargeStr,
    StrView,
    Ts(TimeUnit),
    Date32,
    Date64,
    Duration(TimeUnit),
    /// Written into the chunk's arena when filled: decimal text (`Raw`), base64 or time
    /// text (`Str`), or JSON.
    Encoded(Enc),
    Dict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Raw,
    Str,
    Json,
}

/// One column of a batch, ready for [`Row::field`].
struct ColView {
    array: ArrayRef,
    kind: Kind,
    /// Arena spans per row (`Encoded`); `None` for null.
    spans: Vec<Option<(usize, usize)>>,
    /// Normalised keys (`Dict`) and the view of the dictionary's values.
    keys: Vec<usize>,
    values: Option<Box<ColView>>,
}

/// A chunk of Parquet rows: one record batch of the projected columns.
pub struct ParquetChunk {
    pub input: Arc<InputInfo>,
    pub len: usize,
    pub first_row: u64,
    pub end: Position,
    /// Cumulative row counts at the end of each row group.
    group_ends: Arc<[u64]>,
    /// Top-level column index → batch column index.
    projection: Arc<[Option<usize>]>,
    names: Vec<String>,
    cols: Vec<ColView>,
    arena: Vec<u8>,
    /// Nested paths by registry index (`None` for top-level names).
    nested: Vec<Option<NestedView>>,
    /// Per registry index: whether any row had a value there.
    present: Vec<bool>,
}

impl ParquetChunk {
    /// See [`super::Chunk::present`].
    pub fn present(&self) -> &[bool] {
        &self.present
    }

    pub fn row(&self, i: usize) -> ParquetRow<'_> {
        ParquetRow { chunk: self, i }
    }

    /// The row group that holds row `i` of the chunk.
    pub fn row_group(&self, i: usize) -> u64 {
        group_of(&self.group_ends, self.first_row + i as u64)
    }
}

thread_local! {
    /// Set while [`catch_quietly`] runs: the panic hook stays silent for this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)` without printing it. Panics anywhere
/// else still reach the previous hook (a bug must stay loud).
fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the parquet reader failed".into())
    })
}

fn group_of(ends: &[u64], row: u64) -> u64 {
    ends.partition_point(|&e| e <= row) as u64
}

/// A reader over one Parquet file.
pub struct ParquetSource {
    input: Arc<InputInfo>,
    schema: Arc<ParquetSchema>,
    /// The local file; `None` for an object (`input.object`).
    file: Option<File>,
    meta: ArrowReaderMetadata,
    /// Set once the projection is known (at the first fill).
    mask: Option<ProjectionMask>,
    /// The reader of row group `group`, if one is open.
    reader: Option<ParquetRecordBatchReader>,
    group: usize,
    group_ends: Arc<[u64]>,
    projection: Arc<[Option<usize>]>,
    next_row: u64,
}

/// Refuses metadata whose column chunks lie outside the file: the `parquet` crate panics
/// on a negative offset or size, and trusts sizes when it reads (found by the fuzzer,
/// issue 9).
fn check_chunk_ranges(
    len: u64,
    meta: &ArrowReaderMetadata,
    display: &str,
) -> Result<(), SourceError> {
    for (g, rg) in meta.metadata().row_groups().iter().enumerate() {
        for (c, col) in rg.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            let size = col.compressed_size();
            let ok = start >= 0
                && size >= 0
                && (start as u64)
                    .checked_add(size as u64)
                    .is_some_and(|end| end <= len);
            if !ok {
                return Err(SourceError::Read {
                    path: display.to_string(),
                    message: format!(
                        "the Parquet metadata is damaged: row group {g}, column {c} claims {size} bytes at offset {start}, but the file is {len} bytes. Re-export the file"
                    ),
                });
            }
        }
    }
    Ok(())
}

impl ParquetSource {
    /// Opens the file and reads its metadata; reading starts at data row `start_row`.
    pub fn open(input: Arc<InputInfo>, start_row: u64) -> Result<Self, SourceError> {
        let unreadable = |e: &dyn std::fmt::Display| {
            SourceError::Read {
            path: input.display.clone(),
            message: format!(
                "cannot read the Parquet metadata (is the file complete? a truncated or damaged file has no readable footer): {e}"
            ),
        }
        };
        let (file, meta, len) = match &input.object {
            Some(obj) => (
                None,
                obj.parquet_metadata().map_err(|e| unreadable(&e))?,
                obj.size(),
            ),
            None => {
                let file = File::open(&input.path).map_err(|source| SourceError::Open {
                    path: input.display.clone(),
                    source,
                })?;
                let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                    .map_err(|e| unreadable(&e))?;
                let len = file.metadata().map_or(u64::MAX, |m| m.len());
                (Some(file), meta, len)
            }
        };
        check_chunk_ranges(len, &meta, &input.display)?;
        let names: Vec<String> = meta
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(n.clone()).or_insert(i);
        }
        let fields = meta.schema().fields().clone();
        let mut ends = Vec::with_capacity(meta.metadata().num_row_groups());
        let mut extents = Vec::with_capacity(meta.metadata().num_row_groups());
        let mut total = 0u64;
        for g in meta.metadata().row_groups() {
            let rows = g.num_rows().max(0) as u64;
            total = total.saturating_add(rows);
            ends.push(total);
            let bytes = g
                .columns()
                .iter()
                .map(|c| c.compressed_size().max(0) as u64);
            extents.push(super::GroupExtent {
                bytes: bytes.sum(),
                rows,
            });
        }
        let _ = input.parquet_groups.set(extents);
        if start_row > 0 && start_row >= total {
            return Err(SourceError::Read {
                path: input.display.clone(),
                message: format!(
                    "cannot resume at row {}: the file has only {total} rows, so it changed since the checkpoint was written",
                    start_row + 1
                ),
            });
        }
        let width = names.len();
        Ok(ParquetSource {
            schema: Arc::new(ParquetSchema {
                names,
                index,
                fields,
                input: input.clone(),
            }),
            input,
            file,
            meta,
            mask: None,
            reader: None,
            group: group_of(&ends, start_row) as usize,
            group_ends: ends.into(),
            projection: vec![None; width].into(),
            next_row: start_row,
        })
    }

    pub fn schema(&self) -> &Arc<ParquetSchema> {
        &self.schema
    }

    pub fn new_chunk(&self) -> ParquetChunk {
        ParquetChunk {
            input: self.input.clone(),
            len: 0,
            first_row: 0,
            end: Position::default(),
            group_ends: self.group_ends.clone(),
            projection: self.projection.clone(),
            names: Vec::new(),
            cols: Vec::new(),
            arena: Vec::new(),
            nested: Vec::new(),
            present: Vec::new(),
        }
    }

    /// Chooses the columns to read: those resolved so far (all if none was).
    fn project(&mut self) {
        if self.mask.is_some() {
            return;
        }
        let wanted = self.input.columns.snapshot();
        let mut roots: Vec<usize> = wanted
            .iter()
            .filter_map(|n| self.schema.root_of(n))
            .collect();
        if wanted.is_empty() {
            roots = (0..self.schema.names.len()).collect();
        }
        roots.sort_unstable();
        roots.dedup();
        let mut projection = vec![None; self.schema.names.len()];
        for (bi, &r) in roots.iter().enumerate() {
            projection[r] = Some(bi);
        }
        self.projection = projection.into();
        self.mask = Some(ProjectionMask::roots(
            self.meta.parquet_schema(),
            roots.iter().copied(),
        ));
    }

    /// Opens a reader on row group `self.group`, skipping the rows before `next_row`;
    /// `None` when there is nothing left of it.
    fn open_group(
        &mut self,
        batch_rows: usize,
    ) -> Result<Option<ParquetRecordBatchReader>, SourceError> {
        let g = self.group;
        let group_start = if g == 0 { 0 } else { self.group_ends[g - 1] };
        let fail = |e: &dyn std::fmt::Display| SourceError::Read {
            path: self.input.display.clone(),
            message: format!("cannot read row group {g}: {e}"),
        };
        let skip = self.next_row.saturating_sub(group_start) as usize;
        let Some(file) = &self.file else {
            let Some(obj) = &self.input.object else {
                return Err(fail(&"the input has neither a file nor an object"));
            };
            let mask = self.mask.clone().unwrap_or_else(ProjectionMask::all);
            return obj
                .row_group_reader(&self.meta, mask, g, skip, batch_rows.max(1))
                .map_err(|e| match e {
                    super::remote::GroupError::Remote(e) => SourceError::Remote(e),
                    super::remote::GroupError::Decode(e) => fail(&e),
                });
        };
        let file = file.try_clone().map_err(|e| fail(&e))?;
        let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_batch_size(batch_rows.max(1))
            .with_row_groups(vec![g]);
        if let Some(mask) = &self.mask {
            b = b.with_projection(mask.clone());
        }
        if skip > 0 {
            b = b.with_offset(skip);
        }
        b.build().map(Some).map_err(|e| fail(&e))
    }

    /// Fills `chunk` with the next batch of up to `max_rows` rows. `chunk.len == 0`
    /// means end of input.
    pub fn fill(&mut self, chunk: &mut ParquetChunk, max_rows: usize) -> Result<(), SourceError> {
        self.project();
        chunk.input = self.input.clone();
        chunk.group_ends = self.group_ends.clone();
        chunk.projection = self.projection.clone();
        chunk.first_row = self.next_row;
        chunk.len = 0;
        chunk.cols.clear();
        chunk.arena.clear();
        let next = loop {
            if self.reader.is_none() {
                if self.group >= self.group_ends.len() {
                    break None;
                }
                match self.open_group(max_rows)? {
                    Some(r) => self.reader = Some(r),
                    None => {
                        self.group += 1;
                        continue;
                    }
                }
            }
            // Damaged pages can make the parquet/arrow crates panic instead of returning
            // an error (found by fuzzing); that becomes an error naming the row group.
            let next = match self.reader.as_mut() {
                Some(r) => catch_quietly(|| r.next()).unwrap_or_else(|why| {
                    Some(Err(arrow_schema::ArrowError::ParquetError(format!(
                        "the data is damaged ({why})"
                    ))))
                }),
                None => None,
            };
            match next {
                None => {
                    self.reader = None;
                    self.group += 1;
                }
                Some(Ok(b)) if b.num_rows() == 0 => {}
                Some(r) => break Some(r),
            }
        };
        let batch: RecordBatch = match next {
            None => {
                chunk.end = self.position();
                if self.next_row == 0 {
                    super::note(format_args!(
                        "{} has no rows; nothing to send from it",
                        self.input.display
                    ));
                }
                return Ok(());
            }
            Some(Err(e)) => {
                let g = self.group;
                let first = if g == 0 { 0 } else { self.group_ends[g - 1] };
                return Err(SourceError::Read {
                    path: self.input.display.clone(),
                    message: format!(
                        "cannot read row group {g} (rows {} to {}): {e}; the rows before it were read. The file is damaged: re-export it, or resume after fixing it",
                        first + 1,
                        self.group_ends[g]
                    ),
                });
            }
            Some(Ok(b)) => b,
        };
        chunk.names.clear();
        chunk
            .names
            .extend(batch.schema().fields().iter().map(|f| f.name().clone()));
        for (col, name) in batch.columns().iter().zip(&chunk.names) {
            let v = view(col.clone(), &mut chunk.arena).map_err(|t| SourceError::Read {
                path: self.input.display.clone(),
                message: format!(
                    "column {name} has the Arrow type {t}, which cannot be converted to JSON; leave it out of the mapping"
                ),
            })?;
            chunk.cols.push(v);
        }
        self.resolve_nested(chunk, &batch)?;
        chunk.len = batch.num_rows();
        self.next_row += chunk.len as u64;
        chunk.end = self.position();
        Ok(())
    }

    /// Resolves every registered nested path over `batch` into the chunk, and notes
    /// which registered names had a value.
    fn resolve_nested(
        &self,
        chunk: &mut ParquetChunk,
        batch: &RecordBatch,
    ) -> Result<(), SourceError> {
        let names = self.input.columns.snapshot();
        chunk.nested.clear();
        chunk.present.clear();
        for name in &names {
            if self.schema.index.contains_key(name) {
                chunk.nested.push(None);
                chunk.present.push(true);
                continue;
            }
            let view = match self.schema.path(name) {
                Some((root, steps)) => {
                    let bi = self.projection.get(root).copied().flatten();
                    match bi.and_then(|bi| batch.columns().get(bi)) {
                        Some(col) => Some(
                            nested_view(col, &steps, batch.num_rows(), &mut chunk.arena)
                                .map_err(|t| SourceError::Read {
                                    path: self.input.display.clone(),
                                    message: format!(
                                        "{name} has the Arrow type {t}, which cannot be converted to JSON; leave it out of the mapping"
                                    ),
                                })?,
                        ),
                        None => None,
                    }
                }
                None => None,
            };
            chunk.present.push(
                view.as_ref()
                    .is_some_and(|v| v.rows.iter().any(|s| !matches!(s, Slot::Missing))),
            );
            chunk.nested.push(view);
        }
        Ok(())
    }

    fn position(&self) -> Position {
        Position {
            input: self.input.index,
            row: self.next_row,
            offset: group_of(&self.group_ends, self.next_row),
        }
    }
}

/// One Parquet row.
pub struct ParquetRow<'a> {
    chunk: &'a ParquetChunk,
    i: usize,
}

impl Row for ParquetRow<'_> {
    #[inline]
    fn field(&self, col: &ColumnRef) -> Field<'_> {
        let root = match *col {
            ColumnRef::Index(root) => root,
            ColumnRef::Path(k) => {
                return match self.chunk.nested.get(k).and_then(Option::as_ref) {
                    Some(v) => match v.rows.get(self.i) {
                        Some(Slot::At(j)) => field(&v.leaf, *j, &self.chunk.arena),
                        Some(Slot::Null) => Field::Null,
                        Some(Slot::Missing) | None => Field::Missing,
                    },
                    None => Field::Missing,
                }
            }
        };
        match self.chunk.projection.get(root).copied().flatten() {
            Some(bi) => match self.chunk.cols.get(bi) {
                Some(v) => field(v, self.i, &self.chunk.arena),
                None => Field::Missing,
            },
            None => Field::Missing,
        }
    }

    fn write_record_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (k, (name, col)) in self.chunk.names.iter().zip(&self.chunk.cols).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            json::write_str(out, name);
            out.push(b':');
            write_json(col.array.as_ref(), self.i, out);
        }
        out.push(b'}');
    }

    fn source_problem(&self) -> Option<String> {
        None
    }

    fn line(&self) -> u64 {
        0
    }
}

fn float(v: f64) -> Field<'static> {
    if v.is_finite() {
        Field::Float(v)
    } else {
        Field::Null
    }
}

fn nanos(v: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000_000),
        TimeUnit::Microsecond => v.saturating_mul(1_000),
        TimeUnit::Nanosecond => v,
    }
}

fn ts_value(a: &dyn Array, unit: TimeUnit, i: usize) -> i64 {
    match unit {
        TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
        TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
        TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
        TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
    }
}

fn duration_value(a: &dyn Array, unit: TimeUnit, i: usize) -> i64 {
    match unit {
        TimeUnit::Second => a.as_primitive::<DurationSecondType>().value(i),
        TimeUnit::Millisecond => a.as_primitive::<DurationMillisecondType>().value(i),
        TimeUnit::Microsecond => a.as_primitive::<DurationMicrosecondType>().value(i),
        TimeUnit::Nanosecond => a.as_primitive::<DurationNanosecondType>().value(i),
    }
}

const DAY_NANOS: i64 = 86_400_000_000_000;

fn field<'a>(v: &'a ColView, i: usize, arena: &'a [u8]) -> Field<'a> {
    let a = v.array.as_ref();
    if a.is_null(i) {
        return Field::Null;
    }
    match v.kind {
        Kind::Null => Field::Null,
        Kind::Bool => Field::Bool(a.as_boolean().value(i)),
        Kind::I8 => Field::Int(a.as_primitive::<Int8Type>().value(i).into()),
        Kind::I16 => Field::Int(a.as_primitive::<Int16Type>().value(i).into()),
        Kind::I32 => Field::Int(a.as_primitive::<Int32Type>().value(i).into()),
        Kind::I64 => Field::Int(a.as_primitive::<Int64Type>().value(i)),
        Kind::U8 => Field::UInt(a.as_primitive::<UInt8Type>().value(i).into()),
        Kind::U16 => Field::UInt(a.as_primitive::<UInt16Type>().value(i).into()),
        Kind::U32 => Field::UInt(a.as_primitive::<UInt32Type>().value(i).into()),
        Kind::U64 => Field::UInt(a.as_primitive::<UInt64Type>().value(i)),
        Kind::F16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        Kind::F32 => float(a.as_primitive::<Float32Type>().value(i).into()),
        Kind::F64 => float(a.as_primitive::<Float64Type>().value(i)),
        Kind::Str => Field::Str(a.as_string::<i32>().value(i)),
        Kind::LargeStr => Field::Str(a.as_string::<i64>().value(i)),
        Kind::StrView => Field::Str(a.as_string_view().value(i)),
        Kind::Ts(unit) => Field::TimestampNanos(nanos(ts_value(a, unit, i), unit)),
        Kind::Date32 => Field::TimestampNanos(
            i64::from(a.as_primitive::<Date32Type>().value(i)).saturating_mul(DAY_NANOS),
        ),
        Kind::Date64 => Field::TimestampNanos(
            a.as_primitive::<Date64Type>()
                .value(i)
                .saturating_mul(1_000_000),
        ),
        Kind::Duration(unit) => Field::Int(duration_value(a, unit, i)),
        Kind::Encoded(enc) => match v.spans.get(i).copied().flatten() {
            None => Field::Null,
            Some((s, e)) => {
                let b = &arena[s..e];
                match enc {
                    Enc::Raw => Field::Raw(b),
                    // Base64 and time text are ASCII.
                    Enc::Str => Field::Str(std::str::from_utf8(b).unwrap_or_default()),
                    Enc::Json => Field::Json(b),
                }
            }
        },
        Kind::Dict => match (&v.values, v.keys.get(i)) {
            (Some(values), Some(&k)) => field(values, k, arena),
            _ => Field::Null,
        },
    }
}

/// Whether [`write_json`] can write every value of this type.
fn supported(dt: &DataType) -> bool {
    use DataType::*;
    match dt {
        Interval(_) | Union(..) | RunEndEncoded(..) | ListView(_) | LargeListView(_) => false,
        List(f) | LargeList(f) | FixedSizeList(f, _) | Map(f, _) => supported(f.data_type()),
        Struct(fields) => fields.iter().all(|f| supported(f.data_type())),
        Dictionary(_, v) => supported(v),
        _ => true,
    }
}

/// Prepares one column of a batch: top-level kinds are read in place; the others are
/// written to `arena` now. `Err` is the unsupported type.
fn view(array: ArrayRef, arena: &mut Vec<u8>) -> Result<ColView, String> {
    use DataType as D;
    let dt = array.data_type().clone();
    if !supported(&dt) {
        return Err(dt.to_string());
    }
    let kind = match &dt {
        D::Null => Kind::Null,
        D::Boolean => Kind::Bool,
        D::Int8 => Kind::I8,
        D::Int16 => Kind::I16,
        D::Int32 => Kind::I32,
        D::Int64 => Kind::I64,
        D::UInt8 => Kind::U8,
        D::UInt16 => Kind::U16,
        D::UInt32 => Kind::U32,
        D::UInt64 => Kind::U64,
        D::Float16 => Kind::F16,
        D::Float32 => Kind::F32,
        D::Float64 => Kind::F64,
        D::Utf8 => Kind::Str,
        D::LargeUtf8 => Kind::LargeStr,
        D::Utf8View => Kind::StrView,
        D::Timestamp(u, _) => Kind::Ts(*u),
        D::Date32 => Kind::Date32,
        D::Date64 => Kind::Date64,
        D::Duration(u) => Kind::Duration(*u),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => {
            Kind::Encoded(Enc::Raw)
        }
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            Kind::Encoded(Enc::Str)
        }
        D::Time32(_) | D::Time64(_) => Kind::Encoded(Enc::Str),
        D::Dictionary(..) => Kind::Dict,
        _ => Kind::Encoded(Enc::Json),
    };
    let mut v = ColView {
        array,
        kind,
        spans: Vec::new(),
        keys: Vec::new(),
        values: None,
    };
    match kind {
        Kind::Encoded(enc) => {
            let a = v.array.as_ref();
            v.spans.reserve(a.len());
            for i in 0..a.len() {
                if a.is_null(i) {
                    v.spans.push(None);
                    continue;
                }
                let start = arena.len();
                if enc == Enc::Json {
                    write_json(a, i, arena);
                } else {
                    write_scalar_text(a, i, arena);
                }
                v.spans.push(Some((start, arena.len())));
            }
        }
        Kind::Dict => {
            let d = v.array.as_any_dictionary();
            v.keys = d.normalized_keys();
            v.values = Some(Box::new(view(d.values().clone(), arena)?));
        }
        _ => {}
    }
    Ok(v)
}

/// Resolves `steps` below the top-level column `root` for each of the batch's `len`
/// rows. `Err` is an unsupported leaf type.
fn nested_view(
    root: &ArrayRef,
    steps: &[Step],
    len: usize,
    arena: &mut Vec<u8>,
) -> Result<NestedView, String> {
    let mut rows: Vec<Slot> = (0..len).map(Slot::At).collect();
    let mut arr = root.clone();
    for step in steps {
        let next: ArrayRef = match (arr.data_type(), step) {
            (DataType::Struct(_), Step::Key(k)) => {
                let st = arr.as_struct();
                for r in rows.iter_mut() {
                    if let Slot::At(j) = *r {
                        if st.is_null(j) {
                            *r = Slot::Null;
                        }
                    }
                }
                st.column_by_name(k)
                    .cloned()
                    .ok_or_else(|| arr.data_type().to_string())?
            }
            (DataType::Map(..), Step::Key(k)) => {
                let m = arr.as_map();
                let o = m.value_offsets();
                let keys = m.keys();
                for r in rows.iter_mut() {
                    if let Slot::At(j) = *r {
                        *r = if m.is_null(j) {
                            Slot::Null
                        } else {
                            (o[j] as usize..o[j + 1] as usize)
                                .find(|&e| key_is(keys.as_ref(), e, k))
                                .map_or(Slot::Missing, Slot::At)
                        };
                    }
                }
                m.values().clone()
            }
            (
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..),
                Step::Index(n),
            ) => {
                let (values, range): (ArrayRef, ItemRange) = match arr.data_type() {
                    DataType::List(_) => {
                        let l = arr.as_list::<i32>().clone();
                        let v = l.values().clone();
                        (
                            v,
                            Box::new(move |j| {
                                let o = l.value_offsets();
                                (o[j] as usize, o[j + 1] as usize)
                            }),
                        )
                    }
                    DataType::LargeList(_) => {
                        let l = arr.as_list::<i64>().clone();
                        let v = l.values().clone();
                        (
                            v,
                            Box::new(move |j| {
                                let o = l.value_offsets();
                                (o[j] as usize, o[j + 1] as usize)
                            }),
                        )
                    }
                    _ => {
                        let l = arr.as_fixed_size_list().clone();
                        let v = l.values().clone();
                        let n = l.value_length() as usize;
                        (v, Box::new(move |j| (j * n, j * n + n)))
                    }
                };
                for r in rows.iter_mut() {
                    if let Slot::At(j) = *r {
                        *r = if arr.is_null(j) {
                            Slot::Null
                        } else {
                            let (a, b) = range(j);
                            if a + n < b {
                                Slot::At(a + n)
                            } else {
                                Slot::Missing
                            }
                        };
                    }
                }
                values
            }
            _ => return Err(arr.data_type().to_string()),
        };
        arr = next;
    }
    let leaf = view(arr, arena)?;
    Ok(NestedView { leaf, rows })
}

/// Whether map key `i` of `keys` is `k` (string keys as they are, others as their text).
fn key_is(keys: &dyn Array, i: usize, k: &str) -> bool {
    match keys.data_type() {
        DataType::Utf8 => keys.as_string::<i32>().value(i) == k,
        DataType::LargeUtf8 => keys.as_string::<i64>().value(i) == k,
        DataType::Utf8View => keys.as_string_view().value(i) == k,
        _ => {
            let mut text = Vec::new();
            write_json(keys, i, &mut text);
            text == k.as_bytes()
                || (text.len() >= 2 && text[0] == b'"' && &text[1..text.len() - 1] == k.as_bytes())
        }
    }
}

/// Decimal text (`Raw`), base64 or time-of-day text of a non-null value, unquoted.
fn write_scalar_text(a: &dyn Array, i: usize, out: &mut Vec<u8>) {
    use DataType as D;
    match a.data_type() {
        D::Decimal32(_, s) => {
            let v = a.as_primitive::<Decimal32Type>().value(i);
            write_decimal(
                out,
                v < 0,
                itoa::Buffer::new().format(v.unsigned_abs()).as_bytes(),
                *s,
            )
        }
        D::Decimal64(_, s) => {
            let v = a.as_primitive::<Decimal64Type>().value(i);
            write_decimal(
                out,
                v < 0,
                itoa::Buffer::new().format(v.unsigned_abs()).as_bytes(),
                *s,
            )
        }
        D::Decimal128(_, s) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            write_decimal(
                out,
                v < 0,
                itoa::Buffer::new().format(v.unsigned_abs()).as_bytes(),
                *s,
            )
        }
        D::Decimal256(_, s) => {
            let v = a.as_primitive::<Decimal256Type>().value(i);
            let text = v.to_string();
            let neg = text.starts_with('-');
            write_decimal(out, neg, text.trim_start_matches('-').as_bytes(), *s)
        }
        D::Binary => write_base64(out, a.as_binary::<i32>().value(i)),
        D::LargeBinary => write_base64(out, a.as_binary::<i64>().value(i)),
        D::BinaryView => write_base64(out, a.as_binary_view().value(i)),
        D::FixedSizeBinary(_) => write_base64(out, a.as_fixed_size_binary().value(i)),
        D::Time32(TimeUnit::Second) => write_time(
            out,
            i64::from(a.as_primitive::<Time32SecondType>().value(i)),
            0,
        ),
        D::Time32(_) => write_time(
            out,
            i64::from(a.as_primitive::<Time32MillisecondType>().value(i)),
            3,
        ),
        D::Time64(TimeUnit::Microsecond) => {
            write_time(out, a.as_primitive::<Time64MicrosecondType>().value(i), 6)
        }
        D::Time64(_) => write_time(out, a.as_primitive::<Time64NanosecondType>().value(i), 9),
        _ => {}
    }
}

/// `digits` (the absolute value) with `scale` digits after the point.
fn write_decimal(out: &mut Vec<u8>, neg: bool, digits: &[u8], scale: i8) {
    if neg {
        out.push(b'-');
    }
    if scale <= 0 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', scale.unsigned_abs() as usize));
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits);
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine as _;
    let start = out.len();
    let n = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

/// `HH:MM:SS` plus `digits` fraction digits, from a count of 10^-digits seconds.
fn write_time(out: &mut Vec<u8>, v: i64, digits: u32) {
    let per_sec = 10i64.pow(digits);
    let secs = v.div_euclid(per_sec);
    let frac = v.rem_euclid(per_sec);
    let two = |out: &mut Vec<u8>, n: i64| {
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    two(out, secs / 3600);
    out.push(b':');
    two(out, secs / 60 % 60);
    out.push(b':');
    two(out, secs % 60);
    if digits > 0 {
        out.push(b'.');
        let text = itoa::Buffer::new().format(frac).to_owned();
        out.extend(std::iter::repeat_n(
            b'0',
            digits as usize - text.len().min(digits as usize),
        ));
        out.extend_from_slice(text.as_bytes());
    }
}

fn write_iso_nanos(out: &mut Vec<u8>, n: i64) {
    let ms = n.div_euclid(1_000_000);
    // Years 0000..=9999 only: beyond that ISO 8601 needs an expanded form.
    if crate::timestamp::write_iso_millis(out, ms).is_err() {
        json::write_i64(out, ms);
    }
}

/// Writes value `i` of `a` as compact JSON.
fn write_json(a: &dyn Array, i: usize, out: &mut Vec<u8>) {
    use DataType as D;
    if a.is_null(i) {
        out.extend_from_slice(b"null");
        return;
    }
    let f = |out: &mut Vec<u8>, v: f64| {
        if v.is_finite() {
            json::write_f64(out, v)
        } else {
            out.extend_from_slice(b"null")
        }
    };
    match a.data_type() {
        D::Null => out.extend_from_slice(b"null"),
        D::Boolean => out.extend_from_slice(if a.as_boolean().value(i) {
            b"true"
        } else {
            b"false"
        }),
        D::Int8 => json::write_i64(out, a.as_primitive::<Int8Type>().value(i).into()),
        D::Int16 => json::write_i64(out, a.as_primitive::<Int16Type>().value(i).into()),
        D::Int32 => json::write_i64(out, a.as_primitive::<Int32Type>().value(i).into()),
        D::Int64 => json::write_i64(out, a.as_primitive::<Int64Type>().value(i)),
        D::UInt8 => json::write_u64(out, a.as_primitive::<UInt8Type>().value(i).into()),
        D::UInt16 => json::write_u64(out, a.as_primitive::<UInt16Type>().value(i).into()),
        D::UInt32 => json::write_u64(out, a.as_primitive::<UInt32Type>().value(i).into()),
        D::UInt64 => json::write_u64(out, a.as_primitive::<UInt64Type>().value(i)),
        D::Float16 => f(out, a.as_primitive::<Float16Type>().value(i).to_f64()),
        D::Float32 => f(out, a.as_primitive::<Float32Type>().value(i).into()),
        D::Float64 => f(out, a.as_primitive::<Float64Type>().value(i)),
        D::Utf8 => json::write_str(out, a.as_string::<i32>().value(i)),
        D::LargeUtf8 => json::write_str(out, a.as_string::<i64>().value(i)),
        D::Utf8View => json::write_str(out, a.as_string_view().value(i)),
        D::Timestamp(u, _) => write_iso_nanos(out, nanos(ts_value(a, *u, i), *u)),
        D::Date32 => write_iso_nanos(
            out,
            i64::from(a.as_primitive::<Date32Type>().value(i)).saturating_mul(DAY_NANOS),
        ),
        D::Date64 => write_iso_nanos(
            out,
            a.as_primitive::<Date64Type>()
                .value(i)
                .saturating_mul(1_000_000),
        ),
        D::Duration(u) => json::write_i64(out, duration_value(a, *u, i)),
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => {
            write_scalar_text(a, i, out)
        }
        D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::FixedSizeBinary(_)
        | D::Time32(_)
        | D::Time64(_) => {
            out.push(b'"');
            write_scalar_text(a, i, out);
            out.push(b'"');
        }
        D::List(_) => {
            let l = a.as_list::<i32>();
            let o = l.value_offsets();
            write_seq(l.values().as_ref(), o[i] as usize, o[i + 1] as usize, out);
        }
        D::LargeList(_) => {
            let l = a.as_list::<i64>();
            let o = l.value_offsets();
            write_seq(l.values().as_ref(), o[i] as usize, o[i + 1] as usize, out);
        }
        D::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            let start = l.value_offset_at(i);
            write_seq(l.values().as_ref(), start, start + *n as usize, out);
        }
        D::Struct(fields) => {
            let s = a.as_struct();
            out.push(b'{');
            for (k, (fld, col)) in fields.iter().zip(s.columns()).enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                json::write_str(out, fld.name());
                out.push(b':');
                write_json(col.as_ref(), i, out);
            }
            out.push(b'}');
        }
        D::Map(..) => {
            let m = a.as_map();
            let o = m.value_offsets();
            let (keys, values) = (m.keys(), m.values());
            out.push(b'{');
            for (k, j) in (o[i] as usize..o[i + 1] as usize).enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                // Object keys are strings: a string key as is, any other as its JSON text.
                let mark = out.len();
                write_json(keys.as_ref(), j, out);
                if out.get(mark) != Some(&b'"') {
                    let text = String::from_utf8_lossy(&out[mark..]).into_owned();
                    out.truncate(mark);
                    json::write_str(out, &text);
                }
                out.push(b':');
                write_json(values.as_ref(), j, out);
            }
            out.push(b'}');
        }
        D::Dictionary(..) => {
            let d = a.as_any_dictionary();
            // A dictionary nested in a list or struct is rare: normalise per value.
            let k = d.normalized_keys().get(i).copied().unwrap_or(0);
            write_json(d.values().as_ref(), k, out);
        }
        _ => out.extend_from_slice(b"null"),
    }
}

fn write_seq(values: &dyn Array, start: usize, end: usize, out: &mut Vec<u8>) {
    out.push(b'[');
    for j in start..end {
        if j > start {
            out.push(b',');
        }
        write_json(values, j, out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Format, Row};
    use arrow_array::builder::{MapBuilder, StringBuilder, StringDictionaryBuilder};
    use arrow_array::{
        BinaryArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        Time64MicrosecondArray, TimestampSecondArray,
    };
    use parquet::arrow::ArrowWriter;

    /// Writes one batch to a Parquet file and reads row `row` back as `Field`s.
    fn roundtrip(cols: Vec<(&str, ArrayRef)>, check: impl Fn(&dyn Row, &[ColumnRef])) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let batch =
            RecordBatch::try_from_iter_with_nullable(cols.into_iter().map(|(n, a)| (n, a, true)))
                .unwrap();
        let mut w =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let input = Arc::new(InputInfo::new(0, path, Format::Parquet));
        let mut s = ParquetSource::open(input, 0).unwrap();
        let names = s.schema().column_names();
        // Resolve all but the last column: it must not be read (projection).
        let refs: Vec<ColumnRef> = names[..names.len() - 1]
            .iter()
            .map(|n| s.schema().resolve(n).unwrap())
            .collect();
        let mut c = s.new_chunk();
        s.fill(&mut c, 100).unwrap();
        assert_eq!(c.cols.len(), names.len() - 1, "projection");
        check(&c.row(0), &refs);
        check_second(&c.row(1), &refs);
    }

    fn check_second(r: &dyn Row, refs: &[ColumnRef]) {
        for f in refs {
            assert_eq!(r.field(f), Field::Null, "row 1 is all nulls");
        }
    }

    #[test]
    fn arrow_types_become_json_faithfully() {
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Array::builder(2));
        map.keys().append_value("a");
        map.values().append_value(1);
        map.append(true).unwrap();
        map.append(false).unwrap();
        let mut dict = StringDictionaryBuilder::<Int32Type>::new();
        dict.append_value("pro");
        dict.append_null();
        roundtrip(
            vec![
                (
                    "dec",
                    Arc::new(
                        Decimal128Array::from(vec![Some(-12_345), None])
                            .with_precision_and_scale(10, 4)
                            .unwrap(),
                    ),
                ),
                (
                    "ts",
                    Arc::new(
                        TimestampSecondArray::from(vec![Some(1_700_000_000), None])
                            .with_timezone("+02:00"),
                    ),
                ),
                ("day", Arc::new(Date32Array::from(vec![Some(19_000), None]))),
                (
                    "bin",
                    Arc::new(BinaryArray::from(vec![Some(&b"\x00\xffhi"[..]), None])),
                ),
                (
                    "nan",
                    Arc::new(Float64Array::from(vec![Some(f64::NAN), None])),
                ),
                (
                    "time",
                    Arc::new(Time64MicrosecondArray::from(vec![
                        Some(3_723_000_004),
                        None,
                    ])),
                ),
                ("map", Arc::new(map.finish())),
                ("dict", Arc::new(dict.finish())),
                ("unread", Arc::new(Int32Array::from(vec![Some(1), None]))),
            ],
            |r, refs| {
                let got: Vec<Field<'_>> = refs.iter().map(|f| r.field(f)).collect();
                assert_eq!(
                    got,
                    vec![
                        Field::Raw(b"-1.2345"),
                        Field::TimestampNanos(1_700_000_000_000_000_000),
                        Field::TimestampNanos(19_000 * DAY_NANOS),
                        Field::Str("AP9oaQ=="),
                        Field::Null,
                        Field::Str("01:02:03.000004"),
                        Field::Json(b"{\"a\":1}"),
                        Field::Str("pro"),
                    ]
                );
                let mut rec = Vec::new();
                r.write_record_json(&mut rec);
                assert_eq!(
                    String::from_utf8(rec).unwrap(),
                    "{\"dec\":-1.2345,\"ts\":\"2023-11-14T22:13:20.000Z\",\"day\":\"2022-01-08T00:00:00.000Z\",\"bin\":\"AP9oaQ==\",\"nan\":null,\"time\":\"01:02:03.000004\",\"map\":{\"a\":1},\"dict\":\"pro\"}"
                );
            },
        );
    }

    #[test]
    fn decimals_keep_every_digit() {
        let mut out = Vec::new();
        write_decimal(&mut out, false, b"5", 3);
        out.push(b' ');
        write_decimal(&mut out, true, b"123", -2);
        out.push(b' ');
        write_decimal(&mut out, false, b"123456789012345678901", 2);
        assert_eq!(out, b"0.005 -12300 1234567890123456789.01");
    }
}
