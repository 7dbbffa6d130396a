//! `cdp-backfill validate`: everything a run does except sending.
//!
//! The mapping is loaded and compiled against every input (a mapping error stops here,
//! as it would stop a run), every row is read and mapped by the same encoder, and the
//! calls are packed by the same [`KeyedPacker`] into the requests a run would send, so the
//! counts and sizes reported are the ones a run would produce. There is no transport at
//! all: nothing here can touch the network. Single-threaded and streaming: memory stays
//! flat however large the input (sizes go into fixed histograms, not lists).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use crate::checkpoint::WriteError;
use crate::config::{Limits, OwnFile};
use crate::error::RunError;
use crate::map::compile::compile;
use crate::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped};
use crate::map::spec::CallKind;
use crate::pack::{KeyedPacker, Packed, Packer};
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

struct Tally<'a> {
    report: Report,
    ts: Option<(UnixMillis, UnixMillis)>,
    out: Option<&'a mut dyn Write>,
    show: usize,
}

impl Tally<'_> {
    fn request(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.report.requests += 1;
        self.report.request_bytes.add(body.len());
        if let Some(o) = self.out.as_mut() {
            o.write_all(body)?;
            o.write_all(b"\n")?;
        }
        Ok(())
    }

    fn packed(&mut self, closed: &mut Vec<Packed<()>>) -> std::io::Result<()> {
        for p in closed.drain(..) {
            self.request(&p.body.bytes)?;
        }
        Ok(())
    }
}

/// Reads, maps and packs every input; sends nothing.
pub fn validate(opts: &ValidateOptions, src: &SourceOptions) -> Result<Report, RunError> {
    let spec = crate::map::load(&opts.mapping)?;
    let inputs = source::discover(&opts.inputs, src)?;
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
    let mut mappings = Vec::with_capacity(inputs.len());
    for info in &inputs {
        let opened = source::open(info, src)?;
        mappings.push(compile(&spec, opened.schema(), &info.display)?);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut out_file = match &opts.output {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| WriteError {
                what: "--output",
                path: p.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let mut tally = Tally {
        report: Report {
            inputs: inputs.len() as u64,
            ..Report::default()
        },
        ts: None,
        out: out_file.as_mut().map(|w| w as &mut dyn Write),
        show: opts.show_rejects,
    };
    let io_err = |source: std::io::Error| WriteError {
        what: "--output",
        path: opts.output.clone().unwrap_or_default(),
        source,
    };
    let mut packer: KeyedPacker<()> = KeyedPacker::new(opts.limits, 16);
    let mut closed = Vec::new();
    let mut mapped = Mapped::default();
    let mut key: Vec<u8> = Vec::new();
    for (info, mapping) in inputs.iter().zip(&mappings) {
        let enc = EncodeOptions {
            max_call_bytes: Packer::new(opts.limits).max_call(),
            latest_ms: now_ms.saturating_add(mapping.max_future_ms),
            sent_at: false,
        };
        let mut opened = source::open(info, src)?;
        let mut chunk = opened.new_chunk(info);
        loop {
            opened.fill(&mut chunk, opts.chunk_rows.max(1))?;
            if chunk.is_empty() {
                break;
            }
            map_chunk(&chunk, mapping, &enc, &mut mapped);
            tally.report.rows += mapped.rows as u64;
            let (mut off, mut rej_off) = (0usize, 0usize);
            let mut key_row = None;
            for e in &mapped.emits {
                let len = e.len as usize;
                match e.kind {
                    EmitKind::Context => {
                        key.clear();
                        key.extend_from_slice(&mapped.calls[off..off + len]);
                        key_row = Some(e.row);
                        off += len;
                    }
                    EmitKind::Call(kind) => {
                        let call = &mapped.calls[off..off + len];
                        off += len;
                        if key_row != Some(e.row) {
                            key.clear();
                        }
                        *tally
                            .report
                            .calls_by_type
                            .entry(kind.as_str().to_string())
                            .or_default() += 1;
                        tally.report.call_bytes.add(call.len());
                        match call_timestamp(call) {
                            Some(t) => {
                                let (lo, hi) = tally.ts.get_or_insert((t, t));
                                *lo = (*lo).min(t);
                                *hi = (*hi).max(t);
                            }
                            None => tally.report.calls_without_timestamp += 1,
                        }
                        let result = if kind == CallKind::Alias {
                            // Its own request, as pipeline::pack builds it.
                            match crate::pack::stage::alias_body(
                                call,
                                &key,
                                opts.limits.max_call_bytes,
                            ) {
                                Ok(body) => tally.request(&body).map(Ok).map_err(io_err),
                                Err(too_large) => Ok(Err(too_large)),
                            }?
                        } else {
                            packer.push(&key, call, (), &mut closed)
                        };
                        if let Err(too_large) = result {
                            tally.report.rows_rejected += 1;
                            *tally
                                .report
                                .rejected_by_reason
                                .entry("call_too_large".into())
                                .or_default() += 1;
                            if tally.report.first_rejects.len() < tally.show {
                                tally.report.first_rejects.push(format!(
                                    "{} row {}: call_too_large: {too_large}",
                                    info.display,
                                    mapped.first_row + e.row as u64 + 1
                                ));
                            }
                        }
                        tally.packed(&mut closed).map_err(io_err)?;
                    }
                    EmitKind::Reject(code) => {
                        let line = &mapped.rejects[rej_off..rej_off + len];
                        rej_off += len;
                        tally.report.rows_rejected += 1;
                        *tally
                            .report
                            .rejected_by_reason
                            .entry(code.to_string())
                            .or_default() += 1;
                        if tally.report.first_rejects.len() < tally.show {
                            tally
                                .report
                                .first_rejects
                                .push(String::from_utf8_lossy(line).trim_end().to_string());
                        }
                    }
                }
            }
        }
    }
    while let Some(p) = packer.finish_one() {
        closed.push(p);
    }
    tally.packed(&mut closed).map_err(io_err)?;
    let mut report = tally.report;
    if let Some((lo, hi)) = tally.ts {
        report.first_timestamp = Some(timestamp::iso_millis(lo));
        report.last_timestamp = Some(timestamp::iso_millis(hi));
    }
    if let Some(mut w) = out_file {
        w.flush().map_err(io_err)?;
    }
    Ok(report)
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
        sizes(f, "call sizes", &self.call_bytes)?;
        sizes(f, "requests", &self.request_bytes)?;
        if !self.first_rejects.is_empty() {
            writeln!(f, "first rejects:")?;
            for r in &self.first_rejects {
                writeln!(f, "  {}", shorten(r, SHOWN_REJECT_BYTES))?;
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
