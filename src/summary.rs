//! The run's figures: what every row and call became. Printed as a table at the end and
//! available as JSON for scripts.
//!
//! Invariants the tests check: `rows_read = rows_mapped + rows_rejected`, and
//! `calls_built = calls_delivered + calls_rejected_by_server + calls_undelivered`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::checkpoint::collect::CollectOutcome;
use crate::checkpoint::Checkpoint;
use crate::map::coverage::{Coverage, Unmatched};
use crate::map::fixes::ValueFixes;
use crate::map::spec::CallKind;
use crate::pack::PackTotals;
use crate::progress::thousands;
use crate::send::AttemptCounts;

/// How a run ended, as scripts read it: serialized as `completed`, `interrupted`,
/// `failed` or `already complete`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Outcome {
    #[default]
    #[serde(rename = "completed")]
    Completed,
    #[serde(rename = "interrupted")]
    Interrupted,
    #[serde(rename = "failed")]
    Failed,
    /// The checkpoint says the backfill finished before: nothing was sent.
    #[serde(rename = "already complete")]
    AlreadyComplete,
    /// A `--limit` trial did its rows; the same command without it resumes after them.
    #[serde(rename = "limit reached")]
    LimitReached,
    /// A `--sample` trial sent every K-th row; no checkpoint moved.
    #[serde(rename = "sampled")]
    Sampled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
            Outcome::AlreadyComplete => "already complete",
            Outcome::LimitReached => "limit reached",
            Outcome::Sampled => "sampled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `summary.outcome == "completed"`: the outcome as its JSON text.
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    pub outcome: Outcome,
    /// A sentence on the outcome when it needs one (`already complete according to ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub inputs: u64,
    pub rows_read: u64,
    pub rows_mapped: u64,
    pub rows_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub calls_built: u64,
    pub calls_by_type: BTreeMap<String, u64>,
    pub calls_delivered: u64,
    /// Calls the API refused as invalid (strict mode); they are in the rejects file.
    #[serde(default)]
    pub calls_rejected_by_server: u64,
    /// Built but not acknowledged (the run stopped first); a resume sends them.
    pub calls_undelivered: u64,
    pub requests: u64,
    pub request_bytes: u64,
    pub retries: u64,
    /// Of `retries`, those after an attempt that got no answer (a dropped connection,
    /// a timeout).
    #[serde(default)]
    pub retries_no_answer: u64,
    pub throttled: u64,
    /// Seconds every sender was held back by 429s (`Retry-After`, or 1 s without one).
    #[serde(default)]
    pub paused_by_429_secs: f64,
    /// Requests refused as invalid in strict mode and split to isolate the refused calls.
    #[serde(default)]
    pub requests_split: u64,
    /// The most requests allowed in flight at once during the run (with `--concurrency
    /// auto`, the highest the adaptive limit reached).
    #[serde(default)]
    pub concurrency_peak: u64,
    /// The most requests in flight at once (at most the peak limit).
    #[serde(default)]
    pub in_flight_peak: u64,
    /// Alias calls of rows read again on resume that an earlier run had delivered: not
    /// sent again, and not in `calls_built`.
    #[serde(default)]
    pub calls_already_delivered: u64,
    pub elapsed_secs: f64,
    pub rows_per_sec: f64,
    pub rejects_file: String,
    /// Rows rejected by this run and by the earlier runs of a resumed backfill: what the
    /// rejects file holds, and what decides exit code 3.
    pub rows_rejected_total: u64,
    pub dry_run: bool,
    /// Per column: values cleaned into their type, and values that did not parse and
    /// were left out, sent as null or kept as text (`on_error`), with examples.
    #[serde(default)]
    pub values_fixed: BTreeMap<String, ValueFixes>,
    /// Mapped columns and paths that had no value in any row read.
    #[serde(default)]
    pub never_matched: Vec<Unmatched>,
    /// NDJSON keys that no field maps (when no call takes "rest").
    #[serde(default)]
    pub unmapped_keys: Vec<String>,
    /// Rows a `--sample` run read but left out (not among every K-th):
    /// `rows_read = rows_mapped + rows_rejected + rows_not_sampled`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_not_sampled: u64,
    /// The backfill this run is part of, over all its runs: absent for a run that keeps
    /// no checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillSummary>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The whole backfill, as a run's summary shows it: whether this run resumed and from
/// where, the rows this run took the checkpoint over, and the totals of every run.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct BackfillSummary {
    /// Its name in the state directory, and its checkpoint file.
    pub name: String,
    pub checkpoint: String,
    /// This run continued an earlier one.
    pub resumed: bool,
    /// Where it resumed: `INPUT row N` (1-based), with the share done before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    /// Rows of the backfill (1-based, over the inputs in order) this run's checkpoint
    /// moved over: `this_run_first_row..=this_run_last_row`; none when the two cross.
    pub this_run_first_row: u64,
    pub this_run_last_row: u64,
    /// Totals over every run of the backfill, this one included.
    pub rows_done: u64,
    pub rows_rejected: u64,
    pub calls_delivered: u64,
    pub requests: u64,
    pub runs: u64,
    pub complete: bool,
}

impl BackfillSummary {
    /// From the checkpoint a run started from (`base`), the rows done before it, and the
    /// counters it wrote last (`now`, over every run).
    pub fn new(
        name: &str,
        checkpoint: &std::path::Path,
        base: &Checkpoint,
        resumed: bool,
        rows_before: u64,
        now: &crate::checkpoint::Counters,
        complete: bool,
    ) -> BackfillSummary {
        let resumed_from = resumed.then(|| {
            // At the end of an input (a `--limit` reached there): the next one's row 1.
            let (mut at, mut row) = (base.resume.input as usize, base.resume.row);
            let rows_of = |i: usize| base.input_rows.get(i).copied().unwrap_or(0);
            if rows_of(at) > 0 && row >= rows_of(at) && at + 1 < base.inputs.len() {
                (at, row) = (at + 1, 0);
            }
            let input = base.inputs.get(at).map_or("?", |f| f.path.as_str());
            let done = crate::checkpoint::fraction_done(base)
                .map_or_else(String::new, |f| format!(" ({:.1}% done)", f * 100.0));
            format!("{input} row {}{done}", thousands(row + 1))
        });
        BackfillSummary {
            name: name.to_string(),
            checkpoint: checkpoint.display().to_string(),
            resumed,
            resumed_from,
            this_run_first_row: rows_before + 1,
            this_run_last_row: now.rows_done,
            rows_done: now.rows_done,
            rows_rejected: now.rows_rejected,
            calls_delivered: now.calls_delivered,
            requests: now.requests,
            runs: now.runs,
            complete,
        }
    }
}

impl Summary {
    /// The summary of a run that found its backfill finished: every counter at zero
    /// (nothing was sent), but the rejects the earlier runs left.
    pub fn already_complete(
        checkpoint: &std::path::Path,
        inputs: usize,
        rejects: &std::path::Path,
        rows_rejected_total: u64,
        base: &Checkpoint,
    ) -> Summary {
        let name = base.backfill.as_ref().map_or("", |b| b.name.as_str());
        let c = &base.counters;
        let backfill = BackfillSummary {
            name: name.to_string(),
            checkpoint: checkpoint.display().to_string(),
            resumed: true,
            resumed_from: None,
            this_run_first_row: c.rows_done + 1,
            this_run_last_row: c.rows_done,
            rows_done: c.rows_done,
            rows_rejected: c.rows_rejected,
            calls_delivered: c.calls_delivered,
            requests: c.requests,
            runs: c.runs,
            complete: true,
        };
        Summary {
            backfill: Some(backfill),
            outcome: Outcome::AlreadyComplete,
            note: Some(format!(
                "already complete according to {} (use --restart to send everything again)",
                checkpoint.display()
            )),
            inputs: inputs as u64,
            rejects_file: rejects.display().to_string(),
            rows_rejected_total,
            ..Summary::default()
        }
    }

    /// The run's figures: the packer's totals, the collector's deliveries (and `base`,
    /// the checkpoint the run started from, for the rejects file's total) and the
    /// senders' retries, with the calls the API refused in strict mode counted as
    /// rejected rows too (exactly one row per call when the mapping makes one call per
    /// row).
    pub fn fill(
        &mut self,
        totals: &PackTotals,
        outcome: &CollectOutcome,
        base: Option<&Checkpoint>,
        a: &AttemptCounts,
    ) {
        // Counted by the senders as they happen, so they include the retries of
        // requests that never finished (a failed run, a drain timeout).
        (self.retries, self.throttled, self.retries_no_answer) =
            (a.retries, a.throttled, a.retries_no_answer);
        let d = outcome.delivered;
        self.calls_delivered = d.calls;
        self.calls_rejected_by_server = d.refused;
        self.requests = d.requests;
        self.request_bytes = d.request_bytes;
        self.rows_read = totals.rows;
        self.rows_rejected = totals.rows_rejected;
        self.rows_not_sampled = totals.rows_skipped;
        self.rows_mapped = totals.rows - totals.rows_rejected - totals.rows_skipped;
        self.rejected_by_reason = totals
            .rejected_by_reason
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.calls_built = totals.calls;
        self.calls_already_delivered = totals.calls_already_delivered;
        self.requests_split = a.split;
        self.values_fixed = totals.fixes.clone();
        self.calls_by_type = CallKind::ALL
            .iter()
            .zip(totals.calls_by_type)
            .filter(|&(_, n)| n > 0)
            .map(|(k, n)| (k.as_str().to_string(), n))
            .collect();
        let refused = d.refused;
        if refused > 0 {
            self.rows_rejected += refused;
            self.rows_mapped = self.rows_mapped.saturating_sub(refused);
            *self
                .rejected_by_reason
                .entry("invalid_call".into())
                .or_default() += refused;
        }
        self.calls_undelivered = self
            .calls_built
            .saturating_sub(self.calls_delivered + refused);
        // What the rejects file holds: the earlier runs' lines and the ones this run wrote
        // for acknowledged work. A run that stops early has found more bad rows than that
        // (`rows_rejected`); the rest are found again when it resumes.
        self.rows_rejected_total =
            outcome.counters.rows_rejected + base.map_or(0, |b| b.counters.rows_rejected);
    }

    /// Records what the mapping never reached ([`crate::map::coverage`]).
    pub fn set_coverage(&mut self, c: Coverage) {
        self.never_matched = c.never_matched;
        self.unmapped_keys = c.unmapped_keys;
    }

    pub fn finish(&mut self, elapsed: std::time::Duration) {
        self.elapsed_secs = elapsed.as_secs_f64();
        self.rows_per_sec = if self.elapsed_secs > 0.0 {
            self.rows_read as f64 / self.elapsed_secs
        } else {
            0.0
        };
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = self.request_bytes as f64 / 1e6;
        writeln!(
            f,
            "cdp-backfill: {}{}",
            self.note.as_deref().unwrap_or(self.outcome.as_str()),
            if self.dry_run {
                " (dry run: nothing sent)"
            } else {
                ""
            }
        )?;
        writeln!(f, "  inputs            {:>14}", thousands(self.inputs))?;
        writeln!(f, "  rows read         {:>14}", thousands(self.rows_read))?;
        writeln!(f, "    mapped          {:>14}", thousands(self.rows_mapped))?;
        writeln!(
            f,
            "    rejected        {:>14}",
            thousands(self.rows_rejected)
        )?;
        for (reason, count) in &self.rejected_by_reason {
            sub_row(f, reason, *count)?;
        }
        if self.rows_not_sampled > 0 {
            writeln!(
                f,
                "    not sampled     {:>14}",
                thousands(self.rows_not_sampled)
            )?;
        }
        if !self.values_fixed.is_empty() {
            writeln!(f, "  values fixed (by column)")?;
            for (col, v) in &self.values_fixed {
                writeln!(f, "      {col:<14} {}", v.describe())?;
            }
        }
        writeln!(f, "  calls built       {:>14}", thousands(self.calls_built))?;
        for (kind, count) in &self.calls_by_type {
            sub_row(f, kind, *count)?;
        }
        let verb = if self.dry_run { "packed" } else { "delivered" };
        writeln!(
            f,
            "  calls {verb:<11} {:>14}",
            thousands(self.calls_delivered)
        )?;
        if self.calls_rejected_by_server > 0 {
            writeln!(
                f,
                "  calls refused     {:>14}  (invalid, by the API)",
                thousands(self.calls_rejected_by_server)
            )?;
        }
        if self.calls_undelivered > 0 {
            writeln!(
                f,
                "  calls undelivered {:>14}",
                thousands(self.calls_undelivered)
            )?;
        }
        writeln!(
            f,
            "  requests          {:>14}  ({mb:.1} MB)",
            thousands(self.requests)
        )?;
        writeln!(
            f,
            "  retries           {:>14}  (429s: {}, after no answer: {})",
            thousands(self.retries),
            thousands(self.throttled),
            thousands(self.retries_no_answer)
        )?;
        if self.paused_by_429_secs > 0.0 || self.throttled > 0 {
            writeln!(f, "  paused by 429s    {:>13.1}s", self.paused_by_429_secs)?;
        }
        if self.requests_split > 0 {
            writeln!(
                f,
                "  requests split    {:>14}  (refused in strict mode, halved to find the invalid calls)",
                thousands(self.requests_split)
            )?;
        }
        if self.calls_already_delivered > 0 {
            writeln!(
                f,
                "  aliases skipped   {:>14}  (delivered before the checkpoint's position by the earlier run)",
                thousands(self.calls_already_delivered)
            )?;
        }
        if self.concurrency_peak > 0 {
            writeln!(
                f,
                "  concurrency peak  {:>14}  (the limit; most in flight at once: {})",
                thousands(self.concurrency_peak),
                thousands(self.in_flight_peak)
            )?;
        }
        writeln!(
            f,
            "  elapsed           {:>13.2}s  ({} rows/s)",
            self.elapsed_secs,
            thousands(self.rows_per_sec as u64)
        )?;
        if self.rows_rejected > 0 {
            writeln!(f, "  rejects file      {}", self.rejects_file)?;
        }
        let coverage = Coverage {
            never_matched: self.never_matched.clone(),
            unmapped_keys: self.unmapped_keys.clone(),
        };
        for line in coverage.lines() {
            writeln!(f, "  mapping: {line}")?;
        }
        if let Some(b) = &self.backfill {
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BackfillSummary {
    /// The backfill's lines under a run's table: which backfill, whether and where this
    /// run resumed, the rows it covered, and the totals of every run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = thousands;
        writeln!(f, "  backfill          {} ({})", self.name, self.checkpoint)?;
        if let Some(from) = &self.resumed_from {
            writeln!(f, "    resumed from    {from}")?;
        }
        if self.this_run_last_row >= self.this_run_first_row {
            writeln!(
                f,
                "    this run        rows {}–{}",
                t(self.this_run_first_row),
                t(self.this_run_last_row)
            )?;
        } else {
            writeln!(f, "    this run        no rows")?;
        }
        let runs = format!(
            "all {} run{}",
            t(self.runs),
            if self.runs == 1 { "" } else { "s" }
        );
        writeln!(
            f,
            "    {runs:<15} {} rows done, {} calls delivered, {} rejected, {} requests{}",
            t(self.rows_done),
            t(self.calls_delivered),
            t(self.rows_rejected),
            t(self.requests),
            if self.complete { "; complete" } else { "" }
        )
    }
}

/// `      name      1,234`: a reason or call type under its row, its count ending in
/// the column of the counts above (column 34), however long the name; a name too long
/// for that keeps one space before its count.
fn sub_row(f: &mut fmt::Formatter<'_>, name: &str, count: u64) -> fmt::Result {
    let count = thousands(count);
    let width = (34 - 6usize)
        .saturating_sub(name.chars().count())
        .max(count.len() + 1);
    writeln!(f, "      {name}{count:>width$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every count of the table ends in one column, whatever the length of the reason or
    /// call type beside it (`missing_timestamp`, 17 characters, used to push its count
    /// three columns right).
    #[test]
    fn counts_line_up_whatever_the_length_of_a_reason() {
        let s = Summary {
            rows_read: 1_234_567,
            rows_mapped: 1_234_000,
            rows_rejected: 567,
            rejected_by_reason: [
                ("missing_timestamp", 500),
                ("bad_timestamp", 60),
                ("a_reason_longer_than_the_column_itself", 7),
                ("x", 0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            calls_built: 1_234_000,
            calls_by_type: [("track", 1_000_000), ("identify", 234_000)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Summary::default()
        };
        let text = s.to_string();
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("rows read"))
            .take_while(|l| !l.contains("calls delivered") && !l.contains("calls packed"))
            .collect();
        assert_eq!(rows.len(), 10, "{text}");
        for row in rows.iter().filter(|r| !r.contains("longer_than")) {
            assert!(row.ends_with(|c: char| c.is_ascii_digit()), "{row:?}");
            assert_eq!(row.len(), 34, "{row:?} ends off the column:\n{text}");
        }
        // A name too long for the column keeps a space before its count.
        assert!(
            text.contains("a_reason_longer_than_the_column_itself 7"),
            "{text}"
        );
    }
}
