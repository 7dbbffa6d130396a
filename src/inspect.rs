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

use crate::source::{self, Chunk, ColumnRef, Field, Row, SourceError, SourceOptions};
use crate::timestamp::{self, UnixMillis};

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
        Inferred::String
    }

    /// Values that are not timestamps in a column inferred as one.
    pub fn bad_timestamps(&self) -> u64 {
        match self.inferred() {
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
        if matches!(t, "true" | "false" | "TRUE" | "FALSE" | "True" | "False") {
            self.bools += 1;
        } else if let Ok(v) = t.parse::<i64>() {
            self.add_int(v);
            if let Some(ms) = self.epoch_ms(v) {
                self.add_ts(ms);
            }
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
                self.sample(&v.to_string(), keep);
                self.add_int(v);
                if let Some(ms) = self.epoch_ms(v) {
                    self.add_ts(ms);
                }
            }
            Field::UInt(v) => {
                self.values += 1;
                self.sample(&v.to_string(), keep);
                match i64::try_from(v) {
                    Ok(i) => self.add_int(i),
                    Err(_) => self.floats += 1,
                }
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
        for (c, prof) in cols.iter().zip(p.columns.iter_mut()) {
            prof.add(row.field(c), keep);
        }
    }
}

/// Reads up to `opts.max_rows` rows of the input and profiles its columns.
pub fn inspect(opts: &InspectOptions, src: &SourceOptions) -> Result<Profile, SourceError> {
    let inputs = source::discover(std::slice::from_ref(&opts.input), src)?;
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

/// The first column with one of `names` (any case) that can hold an id or a name: text
/// or numbers, not objects, booleans or nothing at all.
fn pick<'a>(p: &'a Profile, names: &[&str]) -> Option<&'a ColumnProfile> {
    let textual = |c: &&ColumnProfile| {
        matches!(
            c.inferred(),
            Inferred::String | Inferred::Int | Inferred::Float
        )
    };
    names.iter().find_map(|n| {
        p.columns
            .iter()
            .filter(textual)
            .find(|c| c.name.to_ascii_lowercase() == *n)
    })
}

fn toml_str(s: &str) -> String {
    // A TOML basic string is a JSON string for the characters a column name holds.
    let mut v = Vec::new();
    crate::json::write_str(&mut v, s);
    String::from_utf8_lossy(&v).into_owned()
}

/// A commented starter mapping for the profiled input.
pub fn starter_mapping(p: &Profile) -> String {
    let user = pick(
        p,
        &[
            "user_id",
            "userid",
            "customer_id",
            "person_id",
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
    let email = pick(p, &["email", "email_address", "e-mail", "mail"]).or_else(|| {
        p.columns
            .iter()
            .find(|c| c.name.to_ascii_lowercase().contains("email"))
    });
    let event = pick(p, &["event", "event_name", "event_type", "action", "name"]);
    let ts = pick(
        p,
        &[
            "timestamp",
            "ts",
            "time",
            "event_time",
            "occurred_at",
            "created_at",
            "date",
        ],
    )
    .filter(|c| matches!(c.inferred(), Inferred::Timestamp { .. }))
    .or_else(|| {
        p.columns
            .iter()
            .find(|c| matches!(c.inferred(), Inferred::Timestamp { .. }))
    });
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Starter mapping for {} (written by `cdp-backfill inspect --emit-mapping`).",
        p.input
    );
    let _ = writeln!(
        m,
        "# The guesses below come from column names and the first {} rows: check each one,",
        p.rows
    );
    let _ = writeln!(
        m,
        "# then run `cdp-backfill validate {} --mapping THIS_FILE` before sending.",
        p.input
    );
    for w in p.duplicate_warnings() {
        let _ = writeln!(m, "# {w}.");
    }
    let _ = writeln!(
        m,
        "\n# Mixed into every messageId; change it to re-send the same rows as new calls."
    );
    let _ = writeln!(m, "namespace = \"\"\n");
    let _ = writeln!(m, "[defaults]");
    let _ = writeln!(
        m,
        "# Timestamps more than this many hours in the future are rejected."
    );
    let _ = writeln!(m, "max_future_hours = 24");
    let needs_zone = p
        .columns
        .iter()
        .any(|c| matches!(c.inferred(), Inferred::Timestamp { zone: true, .. }));
    if needs_zone {
        let _ = writeln!(
            m,
            "# Some timestamps have no UTC offset: name the zone they were written in."
        );
        let _ = writeln!(m, "timezone = \"UTC\"");
    }
    let _ = writeln!(
        m,
        "\n# Column types (auto writes numbers and booleans as such, the rest as strings)."
    );
    let _ = writeln!(m, "[columns]");
    let used: BTreeSet<&str> = [user, anon, email, event]
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for c in &p.columns {
        // NDJSON keys first seen after the sample are not a column a mapping can name.
        if c.name == crate::source::ndjson::LATER_KEYS {
            continue;
        }
        // Ids and names are sent as text whatever their values look like ("007" must
        // not become 7), and one entry per column: TOML refuses a key written twice.
        if used.contains(c.name.as_str()) {
            if c.inferred() != Inferred::String {
                let _ = writeln!(
                    m,
                    "{} = \"string\"  # an id or a name: keep it text",
                    toml_str(&c.name)
                );
            }
            continue;
        }
        let line = match c.inferred() {
            Inferred::Empty => format!(
                "{} = \"string\"  # always empty in the sample",
                toml_str(&c.name)
            ),
            Inferred::Int => format!("{} = \"int\"", toml_str(&c.name)),
            Inferred::Float => format!("{} = \"float\"", toml_str(&c.name)),
            Inferred::Bool => format!("{} = \"bool\"", toml_str(&c.name)),
            Inferred::Json => format!(
                "{} = {{ type = \"json\", empty = \"omit\" }}",
                toml_str(&c.name)
            ),
            Inferred::Timestamp { format, .. } => {
                format!(
                    "{} = {{ type = \"timestamp\", format = \"{format}\" }}",
                    toml_str(&c.name)
                )
            }
            // Codes that look numeric stay strings: "007" must not become 7.
            Inferred::String => format!("{} = \"string\"", toml_str(&c.name)),
        };
        let _ = writeln!(m, "{line}");
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
    if let Some(ev) = event {
        let _ = writeln!(
            m,
            "\n# One track call per row; every column not used above becomes a property."
        );
        let _ = writeln!(m, "[[call]]\ntype = \"track\"");
        let _ = ids(&mut m);
        let _ = writeln!(m, "event = {}", toml_str(&ev.name));
        match ts {
            Some(t) => {
                let _ = writeln!(m, "timestamp = {}", toml_str(&t.name));
            }
            None => {
                let _ = writeln!(m, "# timestamp = \"...\"  # no timestamp column found; without one the API uses the receive time");
            }
        }
        let _ = writeln!(m, "properties = \"rest\"");
        if let Some(e) = email {
            let _ = writeln!(
                m,
                "\n# Also keep the person's email up to date (remove if not wanted)."
            );
            let _ = writeln!(m, "[[call]]\ntype = \"identify\"");
            let _ = ids(&mut m);
            let _ = writeln!(m, "traits = {{ email = {} }}", toml_str(&e.name));
        }
    } else {
        let _ = writeln!(
            m,
            "\n# No event column found: one identify call per row, every other column a trait."
        );
        let _ = writeln!(m, "[[call]]\ntype = \"identify\"");
        let _ = ids(&mut m);
        if let Some(t) = ts {
            let _ = writeln!(m, "timestamp = {}", toml_str(&t.name));
        }
        let _ = writeln!(m, "traits = \"rest\"");
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
