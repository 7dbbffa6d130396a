//! `status`: how far the backfills in the state directory got, listed, or one of them
//! described. Reads checkpoints only; never changes anything.

use std::path::Path;

use crate::checkpoint::state;
use crate::checkpoint::{self, Checkpoint, CheckpointError};
use crate::config::LEGACY_CHECKPOINT_PATH;
use crate::progress::thousands;

/// `status` without an argument: every backfill in `state` (and the old default
/// checkpoint of the working directory, when there is one), one line each with its
/// progress, rows, calls delivered, rejects, outcome and last write, then its inputs.
pub fn describe_all(state: &Path) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<(String, Result<Option<Checkpoint>, CheckpointError>, bool)> =
        state::entries(state)
            .into_iter()
            .map(|e| (e.name, e.checkpoint, e.restarted))
            .collect();
    if let Ok(Some(cp)) = checkpoint::load(Path::new(LEGACY_CHECKPOINT_PATH)) {
        rows.push((LEGACY_CHECKPOINT_PATH.to_string(), Ok(Some(cp)), false));
    }
    let mut s = String::new();
    if rows.is_empty() {
        let _ = writeln!(
            s,
            "no backfills in {} (a run keeps its state there; see --state)",
            state.display()
        );
        return s;
    }
    let _ = writeln!(s, "backfills in {} ({}):", state.display(), rows.len());
    let _ = writeln!(
        s,
        "  {:<34} {:>7} {:>13} {:>15} {:>10}  {:<30} last written",
        "name", "done", "rows", "calls delivered", "rejected", "outcome"
    );
    for (name, cp, restarted) in rows {
        match cp {
            Ok(Some(cp)) => {
                let done = checkpoint::fraction_done(&cp)
                    .map_or_else(|| "?".to_string(), |f| format!("{:.1}%", f * 100.0));
                let outcome = if restarted {
                    "set aside by --restart"
                } else {
                    state::outcome(&cp)
                };
                let t = thousands;
                let _ = writeln!(
                    s,
                    "  {name:<34} {done:>7} {:>13} {:>15} {:>10}  {outcome:<30} {}",
                    t(cp.counters.rows_done),
                    t(cp.counters.calls_delivered),
                    t(cp.counters.rows_rejected),
                    cp.written_at
                );
                let inputs: Vec<&str> = cp.inputs.iter().map(|f| f.path.as_str()).collect();
                let shown = match inputs.len() {
                    0..=3 => inputs.join(", "),
                    n => format!("{}, ... ({n} inputs)", inputs[..2].join(", ")),
                };
                let _ = writeln!(s, "      inputs: {shown}");
            }
            Ok(None) => {
                let _ = writeln!(
                    s,
                    "  {name:<34} no checkpoint (the rejects of a dry run or a trial)"
                );
            }
            Err(e) => {
                let _ = writeln!(s, "  {name:<34} unreadable: {e}");
            }
        }
    }
    let _ = writeln!(s, "details: cdp-backfill status NAME");
    s
}
