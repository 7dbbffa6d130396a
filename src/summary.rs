//! The run's figures: what every row and call became. Printed as a table at the end and
//! available as JSON for scripts.
//!
//! Invariants the tests check: `rows_read = rows_mapped + rows_rejected`, and
//! `calls_built = calls_delivered + calls_rejected_by_server + calls_undelivered`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::progress::thousands;

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// `completed`, `failed` or `interrupted`.
    pub outcome: String,
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
    pub elapsed_secs: f64,
    pub rows_per_sec: f64,
    pub rejects_file: String,
    /// Rows rejected by this run and by the earlier runs of a resumed backfill: what the
    /// rejects file holds, and what decides exit code 3.
    pub rows_rejected_total: u64,
    pub dry_run: bool,
}

impl Summary {
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
            self.outcome,
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
            // Sub-rows line up with the rows above (a long name pushes its count right).
            writeln!(f, "      {reason:<14}{:>14}", thousands(*count))?;
        }
        writeln!(f, "  calls built       {:>14}", thousands(self.calls_built))?;
        for (kind, count) in &self.calls_by_type {
            writeln!(f, "      {kind:<14}{:>14}", thousands(*count))?;
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
        writeln!(
            f,
            "  elapsed           {:>13.2}s  ({} rows/s)",
            self.elapsed_secs,
            thousands(self.rows_per_sec as u64)
        )?;
        if self.rows_rejected > 0 {
            writeln!(f, "  rejects file      {}", self.rejects_file)?;
        }
        Ok(())
    }
}
