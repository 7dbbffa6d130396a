//! One row per person from an events table: for each distinct value of a key column
//! (`identify_per`), the row with the latest (or first) timestamp, written as NDJSON in
//! key order. A plan's step with `derive = { identify_per = "user_id", latest_by =
//! "timestamp" }` runs its identify mapping over that file instead of the events.
//!
//! Exact for any number of keys in bounded memory: rows go into an arena of at most
//! `memory` bytes (key, record as JSON, and 24 bytes of index each); when it is full its
//! entries are sorted by key, reduced to one winner per key and spilled as a sorted run
//! to a file; at the end the runs are merged (one winner per key across runs) into the
//! output. Memory is the arena, one buffer per run and the output's buffer, whatever the
//! input's size or its number of keys.
//!
//! Deterministic: the winner of a key is the row with the greatest (latest) or least
//! (first) timestamp, ties broken by the record's bytes, so the output's bytes, and so
//! the messageIds the run derives from its content, do not depend on the order of the
//! rows or of the inputs.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::{self, ColumnRef, Field, InputInfo, Row, SourceError, SourceOptions};
use crate::timestamp::{self, UnixMillis};

/// Bytes of index an entry costs besides its key and record.
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// Which row of a key wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// The greatest timestamp.
    Latest,
    /// The least timestamp.
    First,
}

/// What to derive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Derive {
    /// The key column: one output row per distinct value.
    pub key: String,
    /// The timestamp column that picks the row.
    pub by: String,
    pub pick: Pick,
    /// The arena's budget, bytes.
    pub memory: usize,
}

/// What a derivation read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Derived {
    pub rows_read: u64,
    /// Rows with no key value (missing, null or empty): no person to identify.
    pub rows_without_key: u64,
    /// Rows whose timestamp is missing or not a timestamp.
    pub rows_bad_timestamp: u64,
    /// Rows the source itself found broken (a CSV record with the wrong field count).
    pub rows_broken: u64,
    /// Distinct keys: the output's rows.
    pub keys: u64,
    /// Sorted runs spilled to disk (0: it fitted in memory).
    pub spilled_runs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    off: usize,
    key_len: u32,
    rec_len: u32,
    ts: i64,
}

/// Derives one row per key of `inputs` into `out` (NDJSON, written whole or not at all:
/// a temporary file renamed at the end). Spilled runs go to `tmp` (made and removed
/// here). `stop()` is polled between chunks: an interrupted derivation writes nothing
/// and returns `Ok(None)`.
pub fn derive(
    inputs: &[Arc<InputInfo>],
    src: &SourceOptions,
    d: &Derive,
    out: &Path,
    tmp: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Derived>, SourceError> {
    std::fs::create_dir_all(tmp).map_err(|e| io(tmp, e))?;
    let result = derive_in(inputs, src, d, out, tmp, stop);
    let _ = std::fs::remove_dir_all(tmp);
    result
}

/// A failed file operation of the derivation, naming the file.
fn io(what: &Path, e: std::io::Error) -> SourceError {
    SourceError::Other(format!("{}: {e}", what.display()))
}

fn derive_in(
    inputs: &[Arc<InputInfo>],
    src: &SourceOptions,
    d: &Derive,
    out: &Path,
    tmp: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Derived>, SourceError> {
    let mut stats = Derived::default();
    let mut arena = Arena::with_budget(d.memory);
    let mut runs: Vec<PathBuf> = Vec::new();
    for info in inputs {
        let mut opened = source::open(info, src)?;
        let col = |name: &str, what: &str| -> Result<ColumnRef, SourceError> {
            opened.schema().resolve(name).ok_or_else(|| {
                SourceError::Other(format!(
                    "{}: derive's {what} names the column {name:?}, which this input does not have (its columns: {})",
                    info.display,
                    opened.schema().column_names().join(", ")
                ))
            })
        };
        let (key_col, ts_col) = (col(&d.key, "identify_per")?, col(&d.by, "timestamp")?);
        let mut chunk = opened.new_chunk(info);
        loop {
            if stop() {
                return Ok(None);
            }
            opened.fill(&mut chunk, 4096)?;
            if chunk.is_empty() {
                break;
            }
            for i in 0..chunk.len() {
                stats.rows_read += 1;
                chunk.with_row(i, |row| arena.push(row, &key_col, &ts_col, &mut stats));
            }
            if arena.full() {
                let p = tmp.join(format!("run-{:05}", runs.len()));
                arena.spill(&p, d.pick).map_err(|e| io(&p, e))?;
                runs.push(p);
            }
        }
    }
    if arena.entries.is_empty() && runs.is_empty() && stats.rows_read > 0 {
        return Err(SourceError::Other(format!(
            "derive found no row with both a {} and a timestamp in {}: of {} rows read, {} have no {}, {} have no timestamp in {}, {} are broken. Check the column names of derive in the plan",
            d.key,
            d.by,
            stats.rows_read,
            stats.rows_without_key,
            d.key,
            stats.rows_bad_timestamp,
            d.by,
            stats.rows_broken
        )));
    }
    stats.spilled_runs = runs.len() as u64;
    let part = out.with_extension("ndjson.part");
    let mut w = BufWriter::with_capacity(1 << 16, File::create(&part).map_err(|e| io(&part, e))?);
    let written = if runs.is_empty() {
        arena.write_winners(&mut w, d.pick)
    } else {
        if !arena.entries.is_empty() {
            let p = tmp.join(format!("run-{:05}", runs.len()));
            arena.spill(&p, d.pick).map_err(|e| io(&p, e))?;
            runs.push(p);
            stats.spilled_runs += 1;
        }
        drop(arena);
        merge(&runs, &mut w, d.pick)
    };
    stats.keys = written.map_err(|e| io(&part, e))?;
    w.into_inner()
        .map_err(|e| io(&part, e.into_error()))?
        .sync_all()
        .map_err(|e| io(&part, e))?;
    std::fs::rename(&part, out).map_err(|e| io(out, e))?;
    Ok(Some(stats))
}

/// Rows in memory: keys and records back to back in one buffer, and their index. Both
/// are reserved once (three quarters of the budget for the buffer, a quarter for the
/// index) and spilled before they would grow; sorting takes as much index again.
struct Arena {
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

/// Room kept for one more chunk of rows before the arena counts as full.
const CHUNK_MARGIN: usize = 1 << 20;

impl Arena {
    fn with_budget(memory: usize) -> Arena {
        let memory = memory.max(4 * CHUNK_MARGIN);
        Arena {
            buf: Vec::with_capacity(memory / 4 * 3),
            entries: Vec::with_capacity(memory / 4 / ENTRY_BYTES),
        }
    }

    /// Whether another chunk might not fit without growing.
    fn full(&self) -> bool {
        self.buf.len() + CHUNK_MARGIN > self.buf.capacity()
            || self.entries.len() + 4096 > self.entries.capacity()
    }

    /// Adds a row (its key, then its record as JSON), or counts why it has no place.
    fn push(&mut self, row: &dyn Row, key: &ColumnRef, ts: &ColumnRef, stats: &mut Derived) {
        if row.source_problem().is_some() {
            stats.rows_broken += 1;
            return;
        }
        let off = self.buf.len();
        if !write_key(&mut self.buf, row.field(key)) {
            stats.rows_without_key += 1;
            return;
        }
        let Some(t) = millis(row.field(ts)) else {
            self.buf.truncate(off);
            stats.rows_bad_timestamp += 1;
            return;
        };
        let key_len = self.buf.len() - off;
        row.write_record_json(&mut self.buf);
        let rec_len = self.buf.len() - off - key_len;
        self.entries.push(Entry {
            off,
            key_len: key_len as u32,
            rec_len: rec_len as u32,
            ts: t,
        });
    }

    fn key(&self, e: &Entry) -> &[u8] {
        key_of(&self.buf, e)
    }

    fn rec(&self, e: &Entry) -> &[u8] {
        rec_of(&self.buf, e)
    }

    /// Sorts by key, then by (timestamp, record), and keeps each key's winner, in key
    /// order, in place (the index keeps its capacity).
    fn reduce(&mut self, pick: Pick) {
        let buf = &self.buf;
        let entries = &mut self.entries;
        entries.sort_unstable_by(|a, b| {
            key_of(buf, a)
                .cmp(key_of(buf, b))
                .then(a.ts.cmp(&b.ts))
                .then_with(|| rec_of(buf, a).cmp(rec_of(buf, b)))
        });
        let mut kept = 0usize;
        for i in 0..entries.len() {
            let e = entries[i];
            if kept > 0 && key_of(buf, &entries[kept - 1]) == key_of(buf, &e) {
                // Sorted by time within a key: the last is the latest, the first the first.
                if pick == Pick::Latest {
                    entries[kept - 1] = e;
                }
            } else {
                entries[kept] = e;
                kept += 1;
            }
        }
        entries.truncate(kept);
    }

    /// Writes each key's winner, sorted, to a run file, and empties the arena.
    fn spill(&mut self, path: &Path, pick: Pick) -> std::io::Result<()> {
        self.reduce(pick);
        let mut w = BufWriter::with_capacity(1 << 16, File::create(path)?);
        for e in &self.entries {
            w.write_all(&e.key_len.to_le_bytes())?;
            w.write_all(&e.rec_len.to_le_bytes())?;
            w.write_all(&e.ts.to_le_bytes())?;
            w.write_all(self.key(e))?;
            w.write_all(self.rec(e))?;
        }
        w.flush()?;
        self.buf.clear();
        self.entries.clear();
        Ok(())
    }

    /// Writes each key's winner's record as an NDJSON line; returns how many.
    fn write_winners(&mut self, w: &mut impl Write, pick: Pick) -> std::io::Result<u64> {
        self.reduce(pick);
        for e in &self.entries {
            w.write_all(self.rec(e))?;
            w.write_all(b"\n")?;
        }
        Ok(self.entries.len() as u64)
    }
}

fn key_of<'a>(buf: &'a [u8], e: &Entry) -> &'a [u8] {
    &buf[e.off..e.off + e.key_len as usize]
}

fn rec_of<'a>(buf: &'a [u8], e: &Entry) -> &'a [u8] {
    let at = e.off + e.key_len as usize;
    &buf[at..at + e.rec_len as usize]
}

/// A spilled run, read one entry at a time into buffers it reuses.
struct RunReader {
    r: BufReader<File>,
    key: Vec<u8>,
    rec: Vec<u8>,
    ts: i64,
    done: bool,
}

impl RunReader {
    fn open(path: &Path) -> std::io::Result<RunReader> {
        let mut r = RunReader {
            r: BufReader::with_capacity(1 << 16, File::open(path)?),
            key: Vec::new(),
            rec: Vec::new(),
            ts: 0,
            done: false,
        };
        r.next()?;
        Ok(r)
    }

    fn next(&mut self) -> std::io::Result<()> {
        let mut head = [0u8; 16];
        match self.r.read_exact(&mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.done = true;
                return Ok(());
            }
            r => r?,
        }
        let key_len = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default()) as usize;
        let rec_len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()) as usize;
        self.ts = i64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        self.key.resize(key_len, 0);
        self.r.read_exact(&mut self.key)?;
        self.rec.resize(rec_len, 0);
        self.r.read_exact(&mut self.rec)
    }

    /// Whether this entry beats `other` of the same key.
    fn beats(&self, other: &RunReader, pick: Pick) -> bool {
        let o = self
            .ts
            .cmp(&other.ts)
            .then_with(|| self.rec.cmp(&other.rec));
        match pick {
            Pick::Latest => o == Ordering::Greater,
            Pick::First => o == Ordering::Less,
        }
    }
}

/// Merges sorted runs (each with one entry per key) into one winner per key, in key
/// order. The smallest key is found by a scan of the runs' heads: there are few runs.
fn merge(runs: &[PathBuf], w: &mut impl Write, pick: Pick) -> std::io::Result<u64> {
    let mut readers = runs
        .iter()
        .map(|p| RunReader::open(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut written = 0u64;
    let mut same: Vec<usize> = Vec::with_capacity(readers.len());
    loop {
        same.clear();
        for (i, r) in readers.iter().enumerate() {
            if r.done {
                continue;
            }
            match same.first().map(|&j| r.key.cmp(&readers[j].key)) {
                None => same.push(i),
                Some(Ordering::Less) => {
                    same.clear();
                    same.push(i);
                }
                Some(Ordering::Equal) => same.push(i),
                Some(Ordering::Greater) => {}
            }
        }
        let Some(&first) = same.first() else { break };
        let mut best = first;
        for &i in &same[1..] {
            if readers[i].beats(&readers[best], pick) {
                best = i;
            }
        }
        w.write_all(&readers[best].rec)?;
        w.write_all(b"\n")?;
        written += 1;
        for &i in &same {
            readers[i].next()?;
        }
    }
    Ok(written)
}

/// Appends the key's bytes; false when there is none (missing, null, empty).
fn write_key(out: &mut Vec<u8>, f: Field<'_>) -> bool {
    let start = out.len();
    match f {
        Field::Missing | Field::Null => return false,
        Field::Raw(b) | Field::Text(b) => out.extend_from_slice(b),
        Field::Str(s) => out.extend_from_slice(s.as_bytes()),
        Field::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Field::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Field::Bool(v) => out.extend_from_slice(if v { b"true" } else { b"false" }),
        Field::Float(v) => out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes()),
        Field::Json(b) => out.extend_from_slice(b),
        Field::TimestampNanos(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
    let empty = out[start..].iter().all(u8::is_ascii_whitespace);
    if empty {
        out.truncate(start);
    }
    !empty
}

/// A field as UTC milliseconds: typed timestamps, ISO 8601 text, or numbers of seconds,
/// milliseconds, microseconds or nanoseconds since the epoch (by magnitude).
fn millis(f: Field<'_>) -> Option<UnixMillis> {
    let epoch = |v: i64| -> UnixMillis {
        match v.unsigned_abs() {
            0..100_000_000_000 => v.saturating_mul(1000),
            100_000_000_000..100_000_000_000_000 => v,
            100_000_000_000_000..100_000_000_000_000_000 => v / 1000,
            _ => v / 1_000_000,
        }
    };
    match f {
        Field::TimestampNanos(n) => Some(n.div_euclid(1_000_000)),
        Field::Raw(b) | Field::Text(b) => text_millis(b),
        Field::Str(s) => text_millis(s.as_bytes()),
        Field::Int(v) => Some(epoch(v)),
        Field::UInt(v) => i64::try_from(v).ok().map(epoch),
        Field::Float(v) if v.is_finite() => Some((v * 1000.0) as i64),
        _ => None,
    }
}

fn text_millis(b: &[u8]) -> Option<UnixMillis> {
    let t = b.trim_ascii();
    if t.is_empty() {
        return None;
    }
    timestamp::parse_iso(t, None)
        .ok()
        .or_else(|| timestamp::parse_date_only(t, None).ok())
        .or_else(|| {
            std::str::from_utf8(t)
                .ok()?
                .parse::<i64>()
                .ok()
                .map(|v| millis(Field::Int(v)).unwrap_or(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_every_kind_compare_as_instants() {
        let iso = millis(Field::Str("2023-01-02T00:00:00Z")).unwrap();
        assert_eq!(millis(Field::Int(1_672_617_600)), Some(iso), "seconds");
        assert_eq!(
            millis(Field::Int(1_672_617_600_000)),
            Some(iso),
            "milliseconds"
        );
        assert_eq!(
            millis(Field::TimestampNanos(1_672_617_600_000_000_000)),
            Some(iso)
        );
        assert_eq!(millis(Field::Raw(b"2023-01-02")), Some(iso));
        assert_eq!(millis(Field::Raw(b"not a time")), None);
        assert_eq!(millis(Field::Null), None);
    }

    #[test]
    fn keys_are_text_and_empty_ones_are_none() {
        let mut b = Vec::new();
        assert!(write_key(&mut b, Field::Int(42)));
        assert!(!write_key(&mut b, Field::Raw(b"  ")));
        assert!(!write_key(&mut b, Field::Null));
        assert_eq!(b, b"42");
    }
}
