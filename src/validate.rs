//! `cdp-backfill validate`: everything a run does except sending.
//!
//! The mapping is loaded and compiled against every input (a mapping error stops here,
//! as it would stop a run), and the run's own front stages read, map and pack every row
//! (`pipeline::Front`: the same reader, encoder and packing stage), so the counts
//! and sizes reported are the ones a dry run produces: this module only counts the
//! requests the packer hands out. There is no transport at all: nothing here can touch
//! the network. Streaming: memory stays flat however large the input (sizes go into
//! fixed histograms, not lists).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::checkpoint::WriteError;
use crate::config::{Limits, OwnFile};
use crate::error::RunError;
use crate::map::coverage::{Coverage, Unmatched};
use crate::map::encode::{EmitKind, Mapped};
use crate::map::fixes::ValueFixes;
use crate::map::spec::CallKind;
use crate::pack::Spares;
use crate::pipeline::{mapper_pool, Front, Plan, Span, QUEUE_AHEAD};
use crate::progress::Progress;
use crate::source::{self, SourceOptions};
use crate::timestamp::{self, UnixMillis};

/// What to validate.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub inputs: Vec<PathBuf>,
    pub mapping: PathBuf,
    pub limits: Limits,
    /// How many reject lines to keep for the report.
    pub show_rejects: usize,
    /// Also write every request body that would be sent, one per line.
    pub output: Option<PathBuf>,
    /// Where the caller writes the JSON report (checked here, before anything is written).
    pub report_json: Option<PathBuf>,
    pub chunk_rows: usize,
    /// How many of the first calls to keep, pretty-printed (`--show-calls`).
    pub show_calls: usize,
    /// `--strict-mapping`: a mapped name with no value in any row is an error (exit 2).
    pub strict_mapping: bool,
}

/// Sizes in power-of-two buckets: bucket `i` holds sizes in `[2^i, 2^(i+1))`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sizes {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub total: u64,
    pub buckets: BTreeMap<u32, u64>,
}

impl Sizes {
    fn add(&mut self, n: usize) {
        let n = n as u64;
        if self.count == 0 || n < self.min {
            self.min = n;
        }
        self.max = self.max.max(n);
        self.count += 1;
        self.total += n;
        *self
            .buckets
            .entry(63 - n.max(1).leading_zeros())
            .or_default() += 1;
    }

    fn mean(&self) -> u64 {
        self.total.checked_div(self.count).unwrap_or(0)
    }
}

/// The report of a validation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub inputs: u64,
    pub rows: u64,
    pub rows_rejected: u64,
    pub calls_by_type: BTreeMap<String, u64>,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Earliest and latest event `timestamp` of the calls, UTC.
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
    pub calls_without_timestamp: u64,
    pub call_bytes: Sizes,
    pub requests: u64,
    pub request_bytes: Sizes,
    /// The first reject lines (NDJSON, as the rejects file would hold them).
    pub first_rejects: Vec<String>,
    /// Per column: values cleaned into their type, and values that did not parse and
    /// were left out, sent as null or kept as text (`on_error`), with examples.
    pub values_fixed: BTreeMap<String, ValueFixes>,
    /// Mapped columns and paths that had no value in any row, and NDJSON keys nothing
    /// maps.
    pub never_matched: Vec<Unmatched>,
    pub unmapped_keys: Vec<String>,
    /// The first `--show-calls` calls, as sent (pretty-printed JSON).
    pub first_calls: Vec<String>,
}

impl Report {
    /// What the mapping never reached, as [`Coverage`].
    pub fn coverage(&self) -> Coverage {
        Coverage {
            never_matched: self.never_matched.clone(),
            unmapped_keys: self.unmapped_keys.clone(),
        }
    }
}

/// The event time of an encoded call: its top-level `"timestamp"`, which the encoder
/// writes before any payload (so the first match is the top-level one; a `"` inside a
/// string value is always escaped, so the pattern cannot start inside one).
fn call_timestamp(call: &[u8]) -> Option<UnixMillis> {
    const KEY: &[u8] = b",\"timestamp\":\"";
    let at = memchr::memmem::find(call, KEY)? + KEY.len();
    let end = at + memchr::memchr(b'"', &call[at..])?;
    timestamp::parse_rfc3339(&call[at..end]).ok()
}

/// What `validate` counts of the calls, chunk by chunk, as the packer sees them.
#[derive(Default)]
struct Calls {
    bytes: Sizes,
    ts: Option<(UnixMillis, UnixMillis)>,
    without_timestamp: u64,
    /// The first calls, pretty-printed, up to `show`.
    first: Vec<String>,
    show: usize,
}

impl Calls {
    /// Tallies the calls of one mapped chunk (its rejects are counted by the packer).
    fn add(&mut self, m: &Mapped) {
        let mut off = 0usize;
        for e in &m.emits {
            let len = e.len as usize;
            match e.kind {
                EmitKind::Context => off += len,
                EmitKind::Call(_) => {
                    let call = &m.calls[off..off + len];
                    off += len;
                    self.bytes.add(call.len());
                    if self.first.len() < self.show {
                        self.first.push(pretty(call));
                    }
                    match call_timestamp(call) {
                        Some(t) => {
                            let (lo, hi) = self.ts.get_or_insert((t, t));
                            *lo = (*lo).min(t);
                            *hi = (*hi).max(t);
                        }
                        None => self.without_timestamp += 1,
                    }
                }
                EmitKind::Reject(_) => {}
            }
        }
    }
}

/// A call as JSON for people: indented two spaces a level, its keys in the order they
/// are sent (a `serde_json::Value` would sort them). The call is compact JSON made by
/// the encoder, so only the structure outside strings is reflowed.
fn pretty(call: &[u8]) -> String {
    let mut out = Vec::with_capacity(call.len() * 2);
    let mut depth = 0usize;
    let (mut in_str, mut esc) = (false, false);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    for (i, &c) in call.iter().enumerate() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                // An empty object or array stays on its line.
                if !matches!(call.get(i + 1), Some(b'}' | b']')) {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                if !matches!(call.get(i.wrapping_sub(1)), Some(b'{' | b'[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(c),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads, maps and packs every input with the stages a run uses, and counts the
/// requests instead of sending them (so the counts are a dry run's); sends nothing.
pub fn validate(opts: &ValidateOptions, src: &SourceOptions) -> Result<Report, RunError> {
    let spec = crate::map::load(&opts.mapping)?;
    let objects = crate::pipeline::object_runtime(
        opts.inputs.iter().map(|p| p.as_path()),
        crate::source::remote::DEFAULT_RETRY_FOR,
    )?;
    let inputs = source::discover_excluding(&opts.inputs, src, &[], objects.as_ref())?;
    let outputs: Vec<OwnFile> = [
        ("--output", opts.output.as_deref()),
        ("--report-json", opts.report_json.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| {
        p.map(|p| OwnFile {
            flag,
            path: p.to_path_buf(),
            written: true,
            at_end: false,
        })
    })
    .collect();
    source::refuse_overwriting(&outputs, &inputs, Some(&opts.mapping))?;
    let mut plan = Plan::new(&spec, inputs, src, opts.limits, false)?;
    // Validation reads every row: it reports what a run would find, early stop or not.
    plan.rules = crate::pack::StopRules {
        same_reason_rows: 0,
        max_reject_rate: None,
    };
    let io_err = |source: std::io::Error| WriteError {
        what: "--output",
        path: opts.output.clone().unwrap_or_default(),
        source,
    };
    let mut out = match &opts.output {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(io_err)?,
        )),
        None => None,
    };
    let mappers = Arc::new(mapper_pool().map_err(RunError::Threads)?);
    let calls = Arc::new(Mutex::new(Calls {
        show: opts.show_calls,
        ..Calls::default()
    }));
    let tap = calls.clone();
    let spares = Spares::new(QUEUE_AHEAD, opts.limits.max_request_bytes);
    let (front, requests) = Front::start(
        &plan,
        src,
        Span::default(),
        opts.chunk_rows.max(1),
        &mappers,
        Vec::new(),
        &Arc::new(Mutex::new(vec![0; plan.inputs.len()])),
        &Arc::new(Progress::hidden()),
        spares.clone(),
        QUEUE_AHEAD,
        Default::default(),
        Box::new(move |m| lock(&tap).add(m)),
    );
    let mut report = Report {
        inputs: plan.inputs.len() as u64,
        ..Report::default()
    };
    let mut written = Ok(());
    for r in requests {
        for line in r.rejects.split_inclusive(|&b| b == b'\n') {
            if report.first_rejects.len() < opts.show_rejects {
                let line = String::from_utf8_lossy(line);
                report.first_rejects.push(line.trim_end().to_string());
            }
        }
        let Some(body) = r.body else { continue };
        report.requests += 1;
        report.request_bytes.add(body.len());
        if let (Some(o), Ok(())) = (out.as_mut(), &written) {
            written = o.write_all(&body).and_then(|_| o.write_all(b"\n"));
        }
        // The packer fills the next body in this one's buffer.
        if let Ok(bytes) = Arc::try_unwrap(body) {
            spares.give(bytes);
        }
    }
    let (read, totals) = front.join()?;
    read?;
    written.map_err(io_err)?;
    if let Some(mut w) = out {
        w.flush().map_err(io_err)?;
    }
    let calls = std::mem::take(&mut *lock(&calls));
    report.rows = totals.rows;
    report.rows_rejected = totals.rows_rejected;
    report.rejected_by_reason = totals
        .rejected_by_reason
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    report.calls_by_type = CallKind::ALL
        .iter()
        .zip(totals.calls_by_type)
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| (k.as_str().to_string(), n))
        .collect();
    report.call_bytes = calls.bytes;
    report.first_calls = calls.first;
    report.values_fixed = totals.fixes.clone();
    let coverage = plan.coverage(&totals.present);
    report.never_matched = coverage.never_matched;
    report.unmapped_keys = coverage.unmapped_keys;
    report.calls_without_timestamp = calls.without_timestamp;
    if let Some((lo, hi)) = calls.ts {
        report.first_timestamp = Some(timestamp::iso_millis(lo));
        report.last_timestamp = Some(timestamp::iso_millis(hi));
    }
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sizes(f: &mut fmt::Formatter<'_>, what: &str, s: &Sizes) -> fmt::Result {
    if s.count == 0 {
        return writeln!(f, "{what}: none");
    }
    writeln!(
        f,
        "{what}: {} (min {} B, mean {} B, max {} B)",
        s.count,
        s.min,
        s.mean(),
        s.max
    )?;
    for (b, n) in &s.buckets {
        let lo = 1u64 << b;
        writeln!(f, "  {:>9} – {:<9} B  {n}", lo, (lo << 1) - 1)?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "validated {} input(s): {} rows, {} mapped, {} rejected (nothing was sent)",
            self.inputs,
            self.rows,
            self.rows - self.rows_rejected.min(self.rows),
            self.rows_rejected
        )?;
        let total: u64 = self.calls_by_type.values().sum();
        writeln!(f, "calls: {total}")?;
        for (k, v) in &self.calls_by_type {
            writeln!(f, "  {k:<10} {v}")?;
        }
        if !self.rejected_by_reason.is_empty() {
            writeln!(f, "rejects by reason:")?;
            for (k, v) in &self.rejected_by_reason {
                writeln!(f, "  {k:<20} {v}")?;
            }
        }
        match (&self.first_timestamp, &self.last_timestamp) {
            (Some(a), Some(b)) => writeln!(f, "event timestamps: {a} .. {b}")?,
            _ => writeln!(f, "event timestamps: none")?,
        }
        if self.calls_without_timestamp > 0 {
            writeln!(
                f,
                "  {} call(s) without a timestamp (the API will use the time it receives them)",
                self.calls_without_timestamp
            )?;
        }
        if !self.values_fixed.is_empty() {
            writeln!(f, "values fixed (by column):")?;
            for (col, v) in &self.values_fixed {
                writeln!(f, "  {col:<20} {}", v.describe())?;
            }
        }
        let coverage = self.coverage();
        if !coverage.is_empty() {
            writeln!(f, "mapping:")?;
            for line in coverage.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        sizes(f, "call sizes", &self.call_bytes)?;
        sizes(f, "requests", &self.request_bytes)?;
        if !self.first_rejects.is_empty() {
            writeln!(f, "first rejects:")?;
            for r in &self.first_rejects {
                writeln!(f, "  {}", shorten(r, SHOWN_REJECT_BYTES))?;
            }
        }
        if !self.first_calls.is_empty() {
            writeln!(f, "first {} call(s), as sent:", self.first_calls.len())?;
            for c in &self.first_calls {
                writeln!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// How much of each reject line the text report shows: a record with a 40 KB field
/// would otherwise fill the terminal. `--report-json` keeps the lines whole.
const SHOWN_REJECT_BYTES: usize = 600;

/// `line` cut after `max` bytes (at a character boundary), saying how long it was.
fn shorten(line: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if line.len() <= max {
        return line.into();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… ({} bytes in all; --report-json keeps the whole line)",
        &line[..cut],
        line.len()
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_shown_indented_with_their_keys_in_the_order_sent() {
        let c = br#"{"type":"track","messageId":"m","properties":{"a":[1,{}],"b":"x,\":{y}"},"context":{}}"#;
        assert_eq!(
            pretty(c),
            "{\n  \"type\": \"track\",\n  \"messageId\": \"m\",\n  \"properties\": {\n    \"a\": [\n      1,\n      {}\n    ],\n    \"b\": \"x,\\\":{y}\"\n  },\n  \"context\": {}\n}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&pretty(c)).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_slice::<serde_json::Value>(c).unwrap()
        );
    }

    #[test]
    fn long_reject_lines_are_shortened_at_a_character_boundary() {
        assert_eq!(shorten("abc", 3), "abc");
        // 'é' is two bytes: the cut moves back to the boundary before it.
        assert_eq!(
            shorten("abé", 3),
            "ab… (4 bytes in all; --report-json keeps the whole line)"
        );
    }

    #[test]
    fn the_top_level_timestamp_is_found_and_sizes_bucket_by_power_of_two() {
        let c = br#"{"type":"track","messageId":"m","userId":"u","event":"e","timestamp":"2024-03-05T10:20:30.000Z","properties":{"timestamp":"x"}}"#;
        assert_eq!(
            call_timestamp(c).map(timestamp::iso_millis).as_deref(),
            Some("2024-03-05T10:20:30.000Z")
        );
        assert_eq!(call_timestamp(br#"{"type":"identify"}"#), None);
        let mut s = Sizes::default();
        for n in [1, 2, 3, 1000, 1023, 1024] {
            s.add(n);
        }
        assert_eq!((s.min, s.max, s.count), (1, 1024, 6));
        assert_eq!(s.buckets[&0], 1);
        assert_eq!(s.buckets[&1], 2);
        assert_eq!(s.buckets[&9], 2);
        assert_eq!(s.buckets[&10], 1);
    }
}
