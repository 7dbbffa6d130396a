//! `cdp-backfill inspect`: what an input holds, and a starter mapping for it.
//!
//! Reads up to `max_rows` rows through the ordinary sources (`source::open` and
//! `Opened::fill`, so every format the sources read works here), and profiles each column:
//! the type that covers all its values, the share of empty values, a few samples, and for
//! timestamps the detected format and range. `--emit-mapping` turns the profile into a
//! commented mapping file that guesses the id, email, event and timestamp columns.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::PathBuf;

use crate::map::clean::{clean_number, loose_bool, MAX_NUMBER};
use crate::map::spec::{CallKind, Clean};
use crate::source::{self, Chunk, ColumnRef, Field, Row, SourceError, SourceOptions};
use crate::timestamp::{self, PatternKind, UnixMillis};

/// Local date and time formats tried on text that is no ISO 8601 timestamp, in order
/// of preference: month-first before day-first, so that a column both fit (every day
/// 12 or less) reads month-first, with a warning.
const LOCAL_FORMATS: &[&str] = &[
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%m-%d-%Y",
    "%d-%m-%Y",
];

/// The same format read the other way round (day-first for month-first), if any.
fn swapped(format: &str) -> Option<&'static str> {
    let other = if format.starts_with("%m") {
        format
            .replacen("%m", "%D", 1)
            .replacen("%d", "%m", 1)
            .replacen("%D", "%d", 1)
    } else if format.starts_with("%d/") || format.starts_with("%d-") {
        format
            .replacen("%d", "%D", 1)
            .replacen("%m", "%d", 1)
            .replacen("%D", "%m", 1)
    } else {
        return None;
    };
    LOCAL_FORMATS.iter().copied().find(|f| *f == other)
}

/// Whether `t` reads as a date (and time) in `format`.
fn fits(t: &str, format: &str) -> bool {
    match PatternKind::of(format) {
        PatternKind::Date => chrono::NaiveDate::parse_from_str(t, format).is_ok(),
        _ => chrono::NaiveDateTime::parse_from_str(t, format).is_ok(),
    }
}

/// What to inspect.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub input: PathBuf,
    /// Rows read at most (a profile, not a full scan).
    pub max_rows: usize,
    /// Distinct sample values kept per column.
    pub samples: usize,
}

/// What one column's values looked like.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ColumnProfile {
    pub name: String,
    /// Non-empty values seen.
    pub values: u64,
    /// Empty or null values seen.
    pub nulls: u64,
    pub bools: u64,
    pub ints: u64,
    pub floats: u64,
    pub jsons: u64,
    /// Date-times with an offset (RFC 3339).
    pub rfc3339: u64,
    /// Date-times without an offset (need a time zone).
    pub naive: u64,
    /// `YYYY-MM-DD` dates.
    pub dates: u64,
    /// Typed timestamps from the source (Parquet).
    pub typed_timestamps: u64,
    pub int_min: i64,
    pub int_max: i64,
    pub ts_min: Option<UnixMillis>,
    pub ts_max: Option<UnixMillis>,
    pub max_len: usize,
    pub samples: Vec<String>,
    /// Integers of more than 15 significant digits (ids, account numbers): a JSON
    /// number would be rounded, so they stay text.
    pub long_ints: u64,
    /// Numbers that need cleaning: with `.` as the decimal separator, with `,`, and
    /// percentages.
    pub money_dot: u64,
    pub money_comma: u64,
    pub percents: u64,
    /// Booleans written yes/no, y/n, on/off (any case).
    pub loose_bools: u64,
    /// Values that name a call type (any case), by type.
    pub call_types: std::collections::BTreeMap<String, u64>,
    /// Per [`LOCAL_FORMATS`] entry: values that read in it.
    pub local_fits: Vec<u64>,
    /// A path inside an object column (NDJSON), profiled on its own.
    pub nested: bool,
}

/// The profile of an input.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Profile {
    pub input: String,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
}

/// A column's inferred type, as a mapping would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inferred {
    Empty,
    String,
    Int,
    Float,
    Bool,
    Json,
    /// A timestamp and its mapping `format` (`rfc3339`, `date`, `unix_s`, ...); `zone`:
    /// the values have no offset, so the mapping must name a time zone.
    Timestamp {
        format: &'static str,
        zone: bool,
    },
    /// Numbers written with currency, thousands separators or a decimal comma; the
    /// mapping cleans them (`decimal` is `.` or `,`).
    Money {
        decimal: char,
    },
    /// Percentages (`15%`), cleaned to their number.
    Percent,
    /// Integers too long for a JSON number (more than 15 significant digits): text.
    LongInt,
    /// Call type names (identify, Track, ...): the call type of each row.
    CallType,
}

impl fmt::Display for Inferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inferred::Empty => f.write_str("empty"),
            Inferred::String => f.write_str("string"),
            Inferred::Int => f.write_str("int"),
            Inferred::Float => f.write_str("float"),
            Inferred::Bool => f.write_str("bool"),
            Inferred::Json => f.write_str("json"),
            Inferred::Timestamp { format, zone } => {
                write!(f, "timestamp ({format}")?;
                if *zone {
                    f.write_str(", no offset: set a timezone")?;
                }
                f.write_str(")")
            }
            Inferred::Money { decimal } => {
                write!(
                    f,
                    "number with currency or separators (decimal \"{decimal}\")"
                )
            }
            Inferred::Percent => f.write_str("percentage"),
            Inferred::LongInt => f.write_str("integer over 15 digits (kept as text)"),
            Inferred::CallType => f.write_str("call type"),
        }
    }
}

fn time_like_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "time", "date", "_at", "ts", "created", "updated", "when", "epoch",
    ]
    .iter()
    .any(|h| n.contains(h))
}

impl ColumnProfile {
    pub fn inferred(&self) -> Inferred {
        let v = self.values;
        if v == 0 {
            return Inferred::Empty;
        }
        if self.long_ints > 0 && self.ints + self.long_ints == v {
            return Inferred::LongInt;
        }
        let types: u64 = self.call_types.values().sum();
        if types == v {
            return Inferred::CallType;
        }
        if self.bools + self.loose_bools == v && self.loose_bools > 0 {
            return Inferred::Bool;
        }
        if self.typed_timestamps == v {
            return Inferred::Timestamp {
                format: "rfc3339",
                zone: false,
            };
        }
        if self.bools == v {
            return Inferred::Bool;
        }
        if self.ints == v {
            // Epoch numbers: a plausible magnitude (2001..2096) and a time-like name.
            let unit = |lo: i64| self.int_min >= lo && self.int_max < 4 * lo;
            let format = if unit(1_000_000_000) {
                Some("unix_s")
            } else if unit(1_000_000_000_000) {
                Some("unix_ms")
            } else if unit(1_000_000_000_000_000) {
                Some("unix_us")
            } else if unit(1_000_000_000_000_000_000) {
                Some("unix_ns")
            } else {
                None
            };
            return match format {
                Some(format) if time_like_name(&self.name) => Inferred::Timestamp {
                    format,
                    zone: false,
                },
                _ => Inferred::Int,
            };
        }
        if self.ints + self.floats == v {
            return Inferred::Float;
        }
        // Timestamps tolerate a few bad values (up to 10%): exports often hold some, and
        // they are what a run would reject; the profile counts them.
        let most = |n: u64| n > 0 && (v - n) * 10 <= v;
        if self.dates == 0 && most(self.rfc3339 + self.naive) {
            return Inferred::Timestamp {
                format: "rfc3339",
                zone: self.naive > 0,
            };
        }
        if most(self.dates) && self.rfc3339 + self.naive == 0 {
            return Inferred::Timestamp {
                format: "date",
                zone: true,
            };
        }
        if self.jsons == v {
            return Inferred::Json;
        }
        // Numbers that need cleaning: every value a number once cleaned, most of all
        // (90%) when some need it. The decimal separator is the one more values read in.
        if self.percents > 0 && self.percents + self.ints + self.floats == v {
            return Inferred::Percent;
        }
        let plain = self.ints + self.floats;
        if self.money_dot + self.money_comma > 0
            && most(plain + self.money_dot.max(self.money_comma))
        {
            let decimal = if self.money_comma > self.money_dot {
                ','
            } else {
                '.'
            };
            return Inferred::Money { decimal };
        }
        if let Some(format) = self.local_format() {
            if most(self.local_fits[format]) {
                return Inferred::Timestamp {
                    format: LOCAL_FORMATS[format],
                    zone: true,
                };
            }
        }
        Inferred::String
    }

    /// The local format (index into [`LOCAL_FORMATS`]) that most values read in; the
    /// first in preference order among equals.
    fn local_format(&self) -> Option<usize> {
        let best = self.local_fits.iter().copied().max().filter(|&n| n > 0)?;
        self.local_fits.iter().position(|&n| n == best)
    }

    /// For a column read in a local format: the other reading (day-first for
    /// month-first) when it fits every value too, so the sample cannot decide.
    pub fn ambiguous_dates(&self) -> Option<(&'static str, &'static str)> {
        let Inferred::Timestamp { format, .. } = self.inferred() else {
            return None;
        };
        let other = swapped(format)?;
        let i = LOCAL_FORMATS.iter().position(|f| *f == other)?;
        let j = LOCAL_FORMATS.iter().position(|f| *f == format)?;
        (self.local_fits[i] == self.local_fits[j]).then_some((format, other))
    }

    /// Values that do not read as the inferred type (what `on_error` will meet).
    pub fn unparsed(&self) -> u64 {
        match self.inferred() {
            Inferred::Money { decimal } => {
                let cleaned = if decimal == ',' {
                    self.money_comma
                } else {
                    self.money_dot
                };
                self.values
                    .saturating_sub(self.ints + self.floats + cleaned)
            }
            Inferred::Timestamp { .. } => self.bad_timestamps(),
            _ => 0,
        }
    }

    /// Values that are not timestamps in a column inferred as one.
    pub fn bad_timestamps(&self) -> u64 {
        match self.inferred() {
            Inferred::Timestamp { format, .. } if format.contains('%') => {
                let i = LOCAL_FORMATS.iter().position(|f| *f == format);
                self.values - i.map_or(0, |i| self.local_fits[i])
            }
            Inferred::Timestamp { format, .. } if !format.starts_with("unix") => {
                self.values - self.rfc3339 - self.naive - self.dates - self.typed_timestamps
            }
            _ => 0,
        }
    }

    pub fn null_ratio(&self) -> f64 {
        let n = self.values + self.nulls;
        if n == 0 {
            0.0
        } else {
            self.nulls as f64 / n as f64
        }
    }

    fn add_ts(&mut self, ms: UnixMillis) {
        self.ts_min = Some(self.ts_min.map_or(ms, |m| m.min(ms)));
        self.ts_max = Some(self.ts_max.map_or(ms, |m| m.max(ms)));
    }

    /// An integer's text: more than 15 significant digits is a long one.
    fn add_int_text(&mut self, t: &str, v: i64) {
        let digits = t
            .trim_start_matches(['-', '+'])
            .trim_start_matches('0')
            .len();
        if digits > 15 {
            self.long_ints += 1;
            return;
        }
        self.add_int(v);
        if let Some(ms) = self.epoch_ms(v) {
            self.add_ts(ms);
        }
    }

    fn add_int(&mut self, v: i64) {
        if self.ints == 0 {
            self.int_min = v;
            self.int_max = v;
        }
        self.int_min = self.int_min.min(v);
        self.int_max = self.int_max.max(v);
        self.ints += 1;
    }

    fn sample(&mut self, text: &str, keep: usize) {
        if self.samples.len() < keep && !self.samples.iter().any(|s| s == text) {
            let short: String = text.chars().take(60).collect();
            self.samples.push(short);
        }
    }

    /// Classifies one untyped (or string) value.
    fn add_text(&mut self, b: &[u8], keep: usize) {
        let s = String::from_utf8_lossy(b);
        let t = s.trim();
        if t.is_empty() {
            self.nulls += 1;
            return;
        }
        self.values += 1;
        self.max_len = self.max_len.max(b.len());
        self.sample(t, keep);
        if let Some(k) = CallKind::parse(t) {
            *self.call_types.entry(k.as_str().to_string()).or_default() += 1;
            return;
        }
        if matches!(t, "true" | "false" | "TRUE" | "FALSE" | "True" | "False") {
            self.bools += 1;
        } else if t.bytes().all(|c| c.is_ascii_digit()) && t.len() > 15 {
            // Too long for i64 or not: an id of digits, never a number.
            self.long_ints += 1;
        } else if let Ok(v) = t.parse::<i64>() {
            self.add_int_text(t, v);
        } else if loose_bool(t.as_bytes()).is_some() {
            self.loose_bools += 1;
        } else if crate::json::is_json_number(t.as_bytes()) {
            self.floats += 1;
        } else if let Ok(ms) = timestamp::parse_rfc3339(t.as_bytes()) {
            self.rfc3339 += 1;
            self.add_ts(ms);
        } else if let Ok(ms) = timestamp::parse_iso(t.as_bytes(), Some(chrono_tz::UTC)) {
            self.naive += 1;
            self.add_ts(ms);
        } else if let Ok(ms) = timestamp::parse_date_only(t.as_bytes(), None) {
            self.dates += 1;
            self.add_ts(ms);
        } else if (t.starts_with('{') || t.starts_with('['))
            && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
        {
            self.jsons += 1;
        } else {
            self.add_other(t);
        }
    }

    /// Text that is no plain value: a number to clean, or a date in a local format.
    fn add_other(&mut self, t: &str) {
        let mut buf = [0u8; MAX_NUMBER];
        let b = t.as_bytes();
        if t.ends_with('%') && clean_number(b, Clean::Percent, b'.', &mut buf).is_some() {
            self.percents += 1;
            return;
        }
        // Letters glued to digits (`u1234`, `12abc`) make a code, not an amount: only a
        // currency code set apart (`USD 12`, `12 EUR`, `R$12`) counts.
        let glued = b.windows(2).any(|w| {
            (w[0].is_ascii_alphabetic() && w[1].is_ascii_digit())
                || (w[0].is_ascii_digit() && w[1].is_ascii_alphabetic())
        });
        if glued {
            return;
        }
        let dot = clean_number(b, Clean::Currency, b'.', &mut buf).is_some();
        let comma = clean_number(b, Clean::Currency, b',', &mut buf).is_some();
        // `1,234` reads both ways; a value that only one decimal separator explains
        // decides the column.
        self.money_dot += dot as u64;
        self.money_comma += comma as u64;
        if dot || comma {
            return;
        }
        if self.local_fits.is_empty() {
            self.local_fits = vec![0; LOCAL_FORMATS.len()];
        }
        let mut any = false;
        for (i, f) in LOCAL_FORMATS.iter().enumerate() {
            if fits(t, f) {
                self.local_fits[i] += 1;
                if !any {
                    any = true;
                    if let Ok(ms) = timestamp::parse_pattern(t, f, PatternKind::of(f), None) {
                        self.add_ts(ms);
                    }
                }
            }
        }
    }

    /// A number read as epoch time by magnitude, for the range shown.
    fn epoch_ms(&self, v: i64) -> Option<UnixMillis> {
        match v {
            1_000_000_000..4_000_000_000 => Some(v * 1000),
            1_000_000_000_000..4_000_000_000_000 => Some(v),
            1_000_000_000_000_000..4_000_000_000_000_000 => Some(v / 1000),
            1_000_000_000_000_000_000..=i64::MAX => Some(v / 1_000_000),
            _ => None,
        }
    }

    fn add(&mut self, f: Field<'_>, keep: usize) {
        match f {
            Field::Missing | Field::Null => self.nulls += 1,
            Field::Raw(b) => self.add_text(b, keep),
            Field::Text(b) => self.add_text(b, keep),
            Field::Str(s) => self.add_text(s.as_bytes(), keep),
            Field::Int(v) => {
                self.values += 1;
                let t = v.to_string();
                self.sample(&t, keep);
                self.add_int_text(&t, v);
            }
            Field::UInt(v) => {
                self.values += 1;
                self.sample(&v.to_string(), keep);
                // Above i64: always more than 15 digits.
                self.long_ints += 1;
            }
            Field::Float(v) => {
                self.values += 1;
                self.sample(&v.to_string(), keep);
                self.floats += 1;
            }
            Field::Bool(v) => {
                self.values += 1;
                self.sample(if v { "true" } else { "false" }, keep);
                self.bools += 1;
            }
            Field::Json(b) => {
                self.values += 1;
                self.sample(&String::from_utf8_lossy(b), keep);
                self.jsons += 1;
            }
            Field::TimestampNanos(n) => {
                self.values += 1;
                let ms = n.div_euclid(1_000_000);
                self.sample(&iso(ms), keep);
                self.typed_timestamps += 1;
                self.add_ts(ms);
            }
        }
    }
}

fn iso(ms: UnixMillis) -> String {
    timestamp::iso_millis(ms.max(0))
}

fn profile_rows<R: Row>(
    rows: impl Iterator<Item = R>,
    cols: &[ColumnRef],
    p: &mut Profile,
    keep: usize,
    left: &mut usize,
) {
    for row in rows {
        if *left == 0 {
            return;
        }
        *left -= 1;
        p.rows += 1;
        for (i, c) in cols.iter().enumerate() {
            let f = row.field(c);
            p.columns[i].add(f, keep);
            // An object's fields are profiled as paths of their own (`user.id`), so a
            // nested id or timestamp can be found.
            if let Field::Json(b) = f {
                if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(b) {
                    let prefix = p.columns[i].name.clone();
                    nested_fields(p, &prefix, &o, keep, 1);
                }
            }
        }
    }
}

/// Profiles the members of an object under `prefix.key` (objects only, four deep).
fn nested_fields(
    p: &mut Profile,
    prefix: &str,
    o: &serde_json::Map<String, serde_json::Value>,
    keep: usize,
    depth: usize,
) {
    use serde_json::Value;
    for (k, v) in o {
        let name = format!("{prefix}.{k}");
        if let (Value::Object(inner), true) = (v, depth < 4) {
            nested_fields(p, &name, inner, keep, depth + 1);
            continue;
        }
        let at = match p.columns.iter().position(|c| c.nested && c.name == name) {
            Some(at) => at,
            None if p.columns.len() < 500 => {
                p.columns.push(ColumnProfile {
                    name: name.clone(),
                    nested: true,
                    ..ColumnProfile::default()
                });
                p.columns.len() - 1
            }
            None => continue,
        };
        let text;
        let f = match v {
            Value::Null => Field::Null,
            Value::Bool(b) => Field::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Field::Int(i),
                (None, Some(u), _) => Field::UInt(u),
                (_, _, Some(x)) => Field::Float(x),
                _ => Field::Null,
            },
            Value::String(s) => Field::Str(s),
            _ => {
                text = v.to_string();
                Field::Json(text.as_bytes())
            }
        };
        p.columns[at].add(f, keep);
    }
}

/// Reads up to `opts.max_rows` rows of the input and profiles its columns.
pub fn inspect(opts: &InspectOptions, src: &SourceOptions) -> Result<Profile, SourceError> {
    let args = std::slice::from_ref(&opts.input);
    let objects = crate::pipeline::object_runtime(
        args.iter().map(|p| p.as_path()),
        source::remote::DEFAULT_RETRY_FOR,
    )
    .map_err(|e| SourceError::Other(e.to_string()))?;
    let inputs = source::discover_excluding(args, src, &[], objects.as_ref())?;
    let Some(info) = inputs.first() else {
        return Err(SourceError::Other(format!(
            "{} holds no input files",
            opts.input.display()
        )));
    };
    let mut opened = source::open(info, src)?;
    let names = opened.schema().column_names();
    let cols: Vec<ColumnRef> = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match opened.schema().resolve(n)? {
            // A repeated header name resolves to its first column: profile each one itself.
            ColumnRef::Index(_) => Some(ColumnRef::Index(i)),
            other => Some(other),
        })
        .collect();
    let mut p = Profile {
        input: info.display.clone(),
        rows: 0,
        columns: names
            .iter()
            .map(|n| ColumnProfile {
                name: n.clone(),
                ..ColumnProfile::default()
            })
            .collect(),
    };
    let mut chunk = opened.new_chunk(info);
    let mut left = opts.max_rows;
    while left > 0 {
        opened.fill(&mut chunk, left.min(4096))?;
        if chunk.is_empty() {
            break;
        }
        let keep = opts.samples;
        match &chunk {
            Chunk::Csv(c) => {
                profile_rows((0..c.len).map(|i| c.row(i)), &cols, &mut p, keep, &mut left)
            }
            Chunk::Ndjson(c) => {
                profile_rows((0..c.len).map(|i| c.row(i)), &cols, &mut p, keep, &mut left)
            }
            Chunk::Parquet(c) => {
                profile_rows((0..c.len).map(|i| c.row(i)), &cols, &mut p, keep, &mut left)
            }
        }
    }
    Ok(p)
}

impl Profile {
    /// Column names the input holds more than once, in header order, with their 1-based
    /// positions.
    pub fn duplicates(&self) -> Vec<(String, Vec<usize>)> {
        let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        // As the run finds them (`compile`), put back in header order.
        let mut out: Vec<_> = crate::map::compile::duplicate_names(&names)
            .into_iter()
            .collect();
        out.sort_by_key(|(_, at)| at[0]);
        out
    }

    /// One warning line per repeated column name (a run refuses a mapping that uses one).
    fn duplicate_warnings(&self) -> Vec<String> {
        self.duplicates()
            .into_iter()
            .map(|(name, at)| {
                let at: Vec<String> = at.iter().map(usize::to_string).collect();
                format!(
                    "warning: {} has {} columns named \"{name}\" (columns {}): a run refuses a mapping that uses this name or \"rest\"; rename one of them in the header",
                    self.input,
                    at.len(),
                    at.join(", ")
                )
            })
            .collect()
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} rows read, {} columns",
            self.input,
            self.rows,
            self.columns.len()
        )?;
        for w in self.duplicate_warnings() {
            writeln!(f, "  {w}")?;
        }
        for c in &self.columns {
            writeln!(
                f,
                "\n  {}\n    type: {}    empty: {:.1}%    longest: {} bytes",
                c.name,
                c.inferred(),
                c.null_ratio() * 100.0,
                c.max_len
            )?;
            if let Some((read, other)) = c.ambiguous_dates() {
                writeln!(
                    f,
                    "    warning: column {:?}: every value reads as {read} and as {other}; day and month cannot be told apart (the starter reads {read})",
                    c.name
                )?;
            }
            if let (Some(lo), Some(hi), Inferred::Timestamp { .. }) =
                (c.ts_min, c.ts_max, c.inferred())
            {
                writeln!(f, "    range: {} .. {}", iso(lo), iso(hi))?;
                if c.bad_timestamps() > 0 {
                    writeln!(
                        f,
                        "    {} value(s) do not parse as timestamps (a run rejects those rows)",
                        c.bad_timestamps()
                    )?;
                }
            }
            if !c.samples.is_empty() {
                writeln!(
                    f,
                    "    samples: {}",
                    c.samples
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
        }
        Ok(())
    }
}

/// A name as compared with the guesses: lowercase, anything but letters and digits as
/// `_` (`Contact ID` → `contact_id`, `user.id` → `user_id`).
fn normalized(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The first column with one of `names` (compared [`normalized`]) that can hold an id
/// or a name: text or numbers, not objects, booleans or nothing at all. A top-level
/// column wins over a nested path of the same name.
fn pick<'a>(p: &'a Profile, names: &[&str]) -> Option<&'a ColumnProfile> {
    let textual = |c: &&ColumnProfile| {
        matches!(
            c.inferred(),
            Inferred::String | Inferred::Int | Inferred::Float | Inferred::LongInt
        )
    };
    names.iter().find_map(|n| {
        let mut found = p
            .columns
            .iter()
            .filter(textual)
            .filter(|c| normalized(&c.name) == *n);
        let first = found.clone().find(|c| !c.nested);
        first.or_else(|| found.next())
    })
}

fn toml_str(s: &str) -> String {
    // A TOML basic string is a JSON string for the characters a column name holds.
    let mut v = Vec::new();
    crate::json::write_str(&mut v, s);
    String::from_utf8_lossy(&v).into_owned()
}

/// The `[columns]` entry a profiled column needs, if any.
fn column_entry(c: &ColumnProfile) -> Option<String> {
    let name = toml_str(&c.name);
    // Values that do not parse (a few bad ones in the sample) are kept as text and
    // counted, instead of costing their row.
    // (Not for timestamps: a bad call timestamp rejects its row whatever on_error says.)
    let keep = if c.unparsed() > 0 && matches!(c.inferred(), Inferred::Money { .. }) {
        ", on_error = \"keep\""
    } else {
        ""
    };
    Some(match c.inferred() {
        Inferred::Empty => format!("{name} = \"string\"  # always empty in the sample"),
        Inferred::Int => format!("{name} = \"int\""),
        Inferred::Float => format!("{name} = \"float\""),
        Inferred::Bool => format!("{name} = \"bool\""),
        Inferred::Json => format!("{name} = {{ type = \"json\", empty = \"omit\" }}"),
        Inferred::Timestamp { format, .. } => {
            let mut line = format!("{name} = {{ type = \"timestamp\", format = \"{format}\" }}");
            if let Some((read, other)) = c.ambiguous_dates() {
                line.push_str(&format!(
                    "\n# WARNING: every value of {name} reads as {read} and as {other}: the sample cannot tell day from month. Check the export and change the format if needed."
                ));
            }
            line
        }
        Inferred::Money { decimal } => {
            let dec = if decimal == ',' {
                ", decimal = \",\""
            } else {
                ""
            };
            format!("{name} = {{ type = \"float\", clean = \"currency\"{dec}{keep} }}")
        }
        Inferred::Percent => {
            format!("{name} = {{ type = \"float\", clean = \"percent\" }}  # \"15%\" is sent as 15")
        }
        Inferred::LongInt => format!(
            "{name} = \"string\"  # integers of more than 15 digits: a JSON number would be rounded"
        ),
        Inferred::CallType => return None,
        // Codes that look numeric stay strings: "007" must not become 7.
        Inferred::String => format!("{name} = \"string\""),
    })
}

/// A commented starter mapping for the profiled input.
pub fn starter_mapping(p: &Profile) -> String {
    let user = pick(
        p,
        &[
            "user_id",
            "userid",
            "customer_id",
            "customerid",
            "contact_id",
            "contactid",
            "person_id",
            "personid",
            "member_id",
            "user_user_id",
            "uid",
            "user",
            "id",
        ],
    );
    let anon = pick(
        p,
        &[
            "anonymous_id",
            "anonymousid",
            "anon_id",
            "visitor_id",
            "device_id",
        ],
    );
    let email = pick(
        p,
        &["email", "email_address", "e_mail", "mail", "user_email"],
    )
    .or_else(|| {
        p.columns
            .iter()
            .find(|c| !c.nested && c.name.to_ascii_lowercase().contains("email"))
    });
    let event = pick(p, &["event", "event_name", "action"]);
    let kinds = p
        .columns
        .iter()
        .find(|c| !c.nested && c.inferred() == Inferred::CallType);
    let name_col = pick(p, &["name", "page_name", "screen_name", "page", "screen"]);
    let is_ts = |c: &&ColumnProfile| matches!(c.inferred(), Inferred::Timestamp { .. });
    let ts = pick(
        p,
        &[
            "timestamp",
            "ts",
            "time",
            "event_time",
            "occurred_at",
            "created_at",
            "created_date",
            "createddate",
            "created",
            "date",
        ],
    )
    .filter(is_ts)
    .or_else(|| {
        // Any other timestamp column, but not a birth date or a column with dates
        // before 1970: the API refuses such a call timestamp, which would cost the row.
        p.columns
            .iter()
            .filter(|c| !c.nested && c.ts_min.is_some_and(|t| t >= 0))
            .filter(|c| {
                let n = normalized(&c.name);
                !["birth", "dob", "geburt", "born", "naissance", "nacimiento"]
                    .iter()
                    .any(|b| n.contains(b))
            })
            .find(is_ts)
    });
    let mut m = String::new();
    let w = &mut m;
    let _ = writeln!(
        w,
        "# Starter mapping for {} (written by `cdp-backfill inspect --emit-mapping`).",
        p.input
    );
    let _ = writeln!(
        w,
        "# The guesses below come from column names and the first {} rows: check each one,",
        p.rows
    );
    let _ = writeln!(
        w,
        "# then run `cdp-backfill validate {} --mapping THIS_FILE` before sending.",
        p.input
    );
    for warn in p.duplicate_warnings() {
        let _ = writeln!(w, "# {warn}.");
    }
    for c in p.columns.iter() {
        if let Some((read, other)) = c.ambiguous_dates() {
            let _ = writeln!(
                w,
                "# WARNING: column {:?} reads both as {read} and as {other} (no day above 12 in the sample); it is read as {read}.",
                c.name
            );
        }
    }
    let _ = writeln!(
        w,
        "\n# Mixed into every messageId; change it to re-send the same rows as new calls."
    );
    let _ = writeln!(w, "namespace = \"\"\n");
    let _ = writeln!(w, "[defaults]");
    let _ = writeln!(
        w,
        "# Timestamps more than this many hours in the future are rejected."
    );
    let _ = writeln!(w, "max_future_hours = 24");
    let needs_zone = p
        .columns
        .iter()
        .any(|c| matches!(c.inferred(), Inferred::Timestamp { zone: true, .. }));
    if needs_zone {
        let _ = writeln!(
            w,
            "# FILL IN: some timestamps have no UTC offset; name the zone they were written in"
        );
        let _ = writeln!(
            w,
            "# (an IANA name such as \"America/New_York\"). UTC is only a placeholder."
        );
        let _ = writeln!(w, "timezone = \"UTC\"");
    }
    let _ = writeln!(
        w,
        "\n# Column types (auto writes numbers and booleans as such, the rest as strings)."
    );
    let _ = writeln!(w, "[columns]");
    let object = |names: &[&str]| {
        p.columns.iter().find(|c| {
            !c.nested
                && c.inferred() == Inferred::Json
                && names.contains(&normalized(&c.name).as_str())
        })
    };
    // Members of an object column sent whole as the traits or properties that need a
    // type to arrive right (money, percentages, yes/no, local dates): mapped as fields
    // of their own, with a [columns] entry each.
    let fixed_members = |parent: &ColumnProfile| -> Vec<&ColumnProfile> {
        p.columns
            .iter()
            .filter(|c| {
                c.nested
                    && c.name
                        .strip_prefix(parent.name.as_str())
                        .and_then(|r| r.strip_prefix('.'))
                        .is_some_and(|r| !r.contains('.'))
                    && match c.inferred() {
                        Inferred::Money { .. } | Inferred::Percent => true,
                        Inferred::Bool => c.loose_bools > 0,
                        Inferred::Timestamp { format, .. } => format != "rfc3339",
                        _ => false,
                    }
            })
            .collect()
    };
    let payload_objects: Vec<&ColumnProfile> =
        [object(&["traits"]), object(&["properties", "props"])]
            .into_iter()
            .flatten()
            .collect();
    let members: Vec<&ColumnProfile> = payload_objects
        .iter()
        .flat_map(|o| fixed_members(o))
        .collect();
    // `{ from = "props", fields = { total = "props.total" } }`, or the column alone.
    let object_payload = |o: &ColumnProfile| -> String {
        let fields: Vec<String> = fixed_members(o)
            .iter()
            .map(|m| {
                format!(
                    "{} = {}",
                    toml_str(&m.name[o.name.len() + 1..]),
                    toml_str(&m.name)
                )
            })
            .collect();
        if fields.is_empty() {
            toml_str(&o.name)
        } else {
            format!(
                "{{ from = {}, fields = {{ {} }} }}",
                toml_str(&o.name),
                fields.join(", ")
            )
        }
    };
    let used: BTreeSet<&str> = [user, anon, email, event, name_col]
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for c in &p.columns {
        // NDJSON keys first seen after the sample are not a column a mapping can name,
        // and a nested path only needs an entry where it is mapped itself.
        if c.name == crate::source::ndjson::LATER_KEYS
            || (c.nested
                && !used.contains(c.name.as_str())
                && !members.iter().any(|m| m.name == c.name))
        {
            continue;
        }
        // Ids and names are sent as text whatever their values look like ("007" must
        // not become 7), and one entry per column: TOML refuses a key written twice.
        if used.contains(c.name.as_str()) {
            if !matches!(c.inferred(), Inferred::String | Inferred::LongInt) && !c.nested {
                let _ = writeln!(
                    w,
                    "{} = \"string\"  # an id or a name: keep it text",
                    toml_str(&c.name)
                );
            }
            continue;
        }
        if let Some(line) = column_entry(c) {
            let _ = writeln!(w, "{line}");
        }
    }
    let ids = |m: &mut String| {
        match user {
            Some(c) => writeln!(m, "user_id = {}", toml_str(&c.name)),
            None => writeln!(
                m,
                "# user_id = \"...\"  # no user id column found: name it here"
            ),
        }
        .and_then(|_| match anon {
            Some(c) => writeln!(m, "anonymous_id = {}", toml_str(&c.name)),
            None => Ok(()),
        })
    };
    if let Some(k) = kinds {
        let found: Vec<String> = k
            .call_types
            .iter()
            .map(|(t, n)| format!("{t} ({n})"))
            .collect();
        let _ = writeln!(
            w,
            "\n# The call type of each row comes from {:?} (any case): {}.",
            k.name,
            found.join(", ")
        );
        let _ = writeln!(
            w,
            "# One table per type found: a row makes the call of the table whose `only` lists its type."
        );
        let group_id = pick(
            p,
            &[
                "group_id",
                "groupid",
                "company_id",
                "account_id",
                "organization_id",
                "org_id",
            ],
        );
        let previous_id = pick(p, &["previous_id", "previousid", "old_id", "old_user_id"]);
        // What "rest" would otherwise send from the other types' fields.
        let other_fields = |own: &[Option<&ColumnProfile>]| -> String {
            let names: Vec<String> = [event, name_col, group_id, previous_id]
                .into_iter()
                .flatten()
                .filter(|c| !c.nested && !own.iter().flatten().any(|o| o.name == c.name))
                .map(|c| toml_str(&c.name))
                .collect();
            if names.is_empty() {
                "\"rest\"".to_string()
            } else {
                format!("{{ from = \"rest\", exclude = [{}] }}", names.join(", "))
            }
        };
        for kind in CallKind::ALL {
            if !k.call_types.contains_key(kind.as_str()) {
                continue;
            }
            let _ = writeln!(
                w,
                "\n[[call]]\ntype = {{ column = {}, only = [\"{}\"] }}",
                toml_str(&k.name),
                kind.as_str()
            );
            let _ = ids(w);
            let own: &[Option<&ColumnProfile>] = match kind {
                CallKind::Track => {
                    let _ = match event {
                        Some(e) => writeln!(w, "event = {}", toml_str(&e.name)),
                        None => writeln!(
                            w,
                            "# event = \"...\"  # FILL IN: track rows need an event name column"
                        ),
                    };
                    &[event][..]
                }
                CallKind::Page | CallKind::Screen => {
                    if let Some(n) = name_col {
                        let _ = writeln!(w, "name = {}", toml_str(&n.name));
                    }
                    &[name_col][..]
                }
                CallKind::Group => {
                    let _ = match group_id {
                        Some(g) => writeln!(w, "group_id = {}", toml_str(&g.name)),
                        None => writeln!(
                            w,
                            "# group_id = \"...\"  # FILL IN: group rows need a group id column"
                        ),
                    };
                    &[group_id][..]
                }
                CallKind::Alias => {
                    let _ = match previous_id {
                        Some(c) => writeln!(w, "previous_id = {}", toml_str(&c.name)),
                        None => writeln!(
                            w,
                            "# previous_id = \"...\"  # FILL IN: alias rows need the previous id column"
                        ),
                    };
                    &[previous_id][..]
                }
                CallKind::Identify => &[],
            };
            if let Some(t) = ts {
                let _ = writeln!(w, "timestamp = {}", toml_str(&t.name));
            }
            let payload = match kind {
                CallKind::Alias => continue,
                CallKind::Identify | CallKind::Group => object(&["traits"]),
                _ => object(&["properties", "props"]),
            };
            let payload = payload.map_or_else(|| other_fields(own), object_payload);
            let _ = writeln!(w, "{} = {payload}", kind.payload_key());
        }
    } else if let Some(ev) = event {
        let _ = writeln!(
            w,
            "\n# One track call per row; every column not used above becomes a property."
        );
        let _ = writeln!(w, "[[call]]\ntype = \"track\"");
        let _ = ids(w);
        let _ = writeln!(w, "event = {}", toml_str(&ev.name));
        match ts {
            Some(t) => {
                let _ = writeln!(w, "timestamp = {}", toml_str(&t.name));
            }
            None => {
                let _ = writeln!(w, "# timestamp = \"...\"  # no timestamp column found; without one the API uses the receive time");
            }
        }
        let _ = writeln!(w, "properties = \"rest\"");
        if let Some(e) = email {
            let _ = writeln!(
                w,
                "\n# Also keep the person's email up to date (remove if not wanted)."
            );
            let _ = writeln!(w, "[[call]]\ntype = \"identify\"");
            let _ = ids(w);
            let _ = writeln!(w, "traits = {{ email = {} }}", toml_str(&e.name));
        }
    } else {
        let _ = writeln!(
            w,
            "\n# No event column found: one identify call per row, every other column a trait."
        );
        let _ = writeln!(w, "[[call]]\ntype = \"identify\"");
        let _ = ids(w);
        match ts {
            Some(t) => {
                let _ = writeln!(w, "timestamp = {}", toml_str(&t.name));
                let _ = writeln!(
                    w,
                    "# The timestamp column is sent as a trait too (keep); list columns to leave out in exclude."
                );
                let _ = writeln!(
                    w,
                    "traits = {{ from = \"rest\", keep = [{}], exclude = [] }}",
                    toml_str(&t.name)
                );
            }
            None => {
                let _ = writeln!(w, "traits = \"rest\"");
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, values: &[&str]) -> ColumnProfile {
        let mut c = ColumnProfile {
            name: name.into(),
            ..ColumnProfile::default()
        };
        for v in values {
            c.add(Field::Raw(v.as_bytes()), 3);
        }
        c
    }

    #[test]
    fn a_repeated_column_name_is_warned_about_with_its_positions() {
        let p = Profile {
            input: "dup.csv".into(),
            rows: 1,
            columns: vec![
                col("uid", &["u1"]),
                col("a", &["first"]),
                col("b", &["x"]),
                col("a", &["second"]),
            ],
        };
        assert_eq!(p.duplicates(), vec![("a".to_string(), vec![2, 4])]);
        let shown = p.to_string();
        assert!(
            shown.contains("warning: dup.csv has 2 columns named \"a\" (columns 2, 4)"),
            "{shown}"
        );
        assert!(
            shown.contains("rename one of them in the header"),
            "{shown}"
        );
        assert!(starter_mapping(&p).contains("# warning: dup.csv has 2 columns named \"a\""));
        let unique = Profile {
            columns: vec![col("uid", &["u1"]), col("a", &["first"])],
            ..p
        };
        assert!(!unique.to_string().contains("warning"));
    }

    #[test]
    fn types_are_inferred_from_every_value() {
        assert_eq!(col("n", &["1", "2", ""]).inferred(), Inferred::Int);
        assert_eq!(col("n", &["1", "2.5"]).inferred(), Inferred::Float);
        assert_eq!(col("b", &["true", "false"]).inferred(), Inferred::Bool);
        assert_eq!(col("j", &["{\"a\":1}", "[]"]).inferred(), Inferred::Json);
        assert_eq!(col("s", &["1", "x"]).inferred(), Inferred::String);
        assert_eq!(
            col("t", &["2024-03-05T10:20:30Z", "2024-03-06T00:00:00+02:00"]).inferred(),
            Inferred::Timestamp {
                format: "rfc3339",
                zone: false
            }
        );
        assert_eq!(
            col("t", &["2024-03-05 10:20:30", "2024-03-06T00:00:00Z"]).inferred(),
            Inferred::Timestamp {
                format: "rfc3339",
                zone: true
            }
        );
        assert_eq!(
            col("d", &["2024-03-05"]).inferred(),
            Inferred::Timestamp {
                format: "date",
                zone: true
            }
        );
        let mostly: Vec<&str> = std::iter::repeat_n("2024-03-05T10:20:30Z", 9)
            .chain(["yesterday"])
            .collect();
        let c = col("t", &mostly);
        assert_eq!(
            c.inferred(),
            Inferred::Timestamp {
                format: "rfc3339",
                zone: false
            }
        );
        assert_eq!(c.bad_timestamps(), 1);
        let half: Vec<&str> = std::iter::repeat_n("2024-03-05T10:20:30Z", 8)
            .chain(["x", "y"])
            .collect();
        assert_eq!(col("t", &half).inferred(), Inferred::String);
        assert_eq!(
            col("created_at", &["1709634030", "1709634031"]).inferred(),
            Inferred::Timestamp {
                format: "unix_s",
                zone: false
            }
        );
        assert_eq!(col("phone", &["1709634030"]).inferred(), Inferred::Int);
        assert_eq!(
            col("ts", &["1709634030000"]).inferred(),
            Inferred::Timestamp {
                format: "unix_ms",
                zone: false
            }
        );
        let c = col("n", &["", "", "1", "1"]);
        assert_eq!(c.null_ratio(), 0.5);
        assert_eq!(c.samples, vec!["1"]);
    }

    #[test]
    fn the_starter_mapping_parses_and_guesses_ids_event_and_timestamp() {
        let p = Profile {
            input: "x.csv".into(),
            rows: 2,
            columns: vec![
                col("user_id", &["u1", "u2"]),
                col("Email", &["a@b.c", ""]),
                col("event", &["Signed Up", "Paid"]),
                col("ts", &["2024-03-05T10:20:30Z", "2024-03-05T10:20:31Z"]),
                col("amount", &["1.5", "2"]),
            ],
        };
        let text = starter_mapping(&p);
        let spec = crate::map::spec::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(spec.calls.len(), 2, "{text}");
        assert!(text.contains("user_id = \"user_id\""), "{text}");
        assert!(text.contains("event = \"event\""), "{text}");
        assert!(text.contains("timestamp = \"ts\""), "{text}");
        assert!(text.contains("traits = { email = \"Email\" }"), "{text}");
        assert!(text.contains("\"amount\" = \"float\""), "{text}");
    }
}
