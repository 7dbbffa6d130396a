//! A migration: a plan file's ordered steps (`cdp-backfill run migration.toml`).
//!
//! ```toml
//! [[step]]
//! name = "people"
//! inputs = ["export/users.csv"]     # relative to the plan file
//! mapping = "people.toml"           # a mapping file (relative to the plan), or inline:
//! [[step]]
//! name = "companies"
//! inputs = ["export/companies.ndjson"]
//! [step.mapping]
//! namespace = "acme"
//! [[step.mapping.call]]
//! type = "group"
//! ...
//! ```
//!
//! Each step is a backfill of its own, named `<plan stem>.<step>` in the state
//! directory, so a rerun of the plan finds each step's checkpoint: complete steps say so
//! and are skipped, the step that was running resumes, the later ones start. A step
//! starts once the one before it has ended complete, every request acknowledged (people
//! exist before their events), unless it says `overlap = true`: then it runs together
//! with the step before it. An inline mapping is written to
//! `<state>/<plan stem>.<step>.mapping.toml` (only when its text changes), so the run
//! reads, hashes and names it like any mapping file.
//!
//! This module reads plans, checks every step before anything is sent ([`check`]),
//! gives each step its configuration ([`Step::configure`]), sums the steps' summaries
//! ([`PlanSummary`]) and writes starter plans ([`starter_plan`]); `cli` runs the steps.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, state};
use crate::config::{OwnFile, RunConfig};
use crate::error::RunError;
use crate::progress::thousands;
use crate::source::{self, Format, SourceOptions};
use crate::summary::{Outcome, Summary};

/// A plan file that cannot be used: nothing was read or sent.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plan file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("plan file {path}, step {step}: {message}")]
    Step {
        path: String,
        step: String,
        message: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanToml {
    #[serde(rename = "step", default)]
    steps: Vec<StepToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToml {
    name: String,
    inputs: Vec<String>,
    mapping: toml::Value,
    format: Option<String>,
    delimiter: Option<String>,
    quote: Option<String>,
    no_header: Option<bool>,
    #[serde(default)]
    overlap: bool,
    derive: Option<DeriveToml>,
}

/// `derive = { identify_per = "user_id", latest_by = "timestamp" }` (or `first_by`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeriveToml {
    identify_per: String,
    latest_by: Option<String>,
    first_by: Option<String>,
    /// The sort's memory budget, MiB.
    memory_mb: Option<usize>,
}

/// The sort's memory budget when a plan sets none, MiB.
pub const DEFAULT_DERIVE_MEMORY_MB: usize = 128;

/// A plan, read and checked: its steps in order.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    /// The plan file, as given.
    pub path: PathBuf,
    /// Its file stem (made safe): the first part of every step's backfill name.
    pub stem: String,
    pub steps: Vec<Step>,
}

/// Where a step's mapping comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StepMapping {
    /// A mapping file (relative to the plan, resolved).
    File(PathBuf),
    /// A `[step.mapping]` table, as mapping-file text.
    Inline(String),
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    /// `<plan stem>.<name>`: its directory in the state directory.
    pub backfill: String,
    /// Relative to the plan file, resolved.
    pub inputs: Vec<PathBuf>,
    pub mapping: StepMapping,
    format: Option<Format>,
    delimiter: Option<u8>,
    quote: Option<u8>,
    no_header: Option<bool>,
    /// Runs together with the step before it, not after it.
    pub overlap: bool,
    /// One row per person, derived from the inputs, is what the mapping reads.
    pub derive: Option<crate::derive::Derive>,
}

/// Whether `path` names a plan rather than an input: a `.toml` file (inputs are never
/// TOML).
pub fn looks_like_plan(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Reads and checks a plan file: at least one step, names unique and made of letters,
/// digits, `-` and `_`, every step with inputs and a mapping (a path or a table).
pub fn load(path: &Path) -> Result<MigrationPlan, PlanError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |message: String| PlanError::Invalid {
        path: shown.clone(),
        message,
    };
    let raw: PlanToml = toml::from_str(&text).map_err(|e| {
        let mut m = e.to_string().trim_end().to_string();
        if m.contains("unknown field") && text.contains("[[call]]") {
            m.push_str("\nhint: this looks like a mapping file; run it with --mapping, or put it in a plan's [[step]] as `mapping = \"FILE\"`");
        }
        invalid(m)
    })?;
    if raw.steps.is_empty() {
        return Err(invalid(
            "no [[step]] tables: a plan lists its steps in order, each `[[step]]` with `name`, `inputs` and `mapping` (to run one mapping file, give it with --mapping)".into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let rel = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() || base.as_os_str().is_empty() || p.as_os_str() == "-" {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let stem = state::safe_name(
        &path
            .file_stem()
            .map_or_else(|| "plan".into(), |s| s.to_string_lossy()),
    );
    let mut seen = BTreeSet::new();
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, s) in raw.steps.into_iter().enumerate() {
        let bad = |message: String| PlanError::Step {
            path: shown.clone(),
            step: if s.name.is_empty() {
                format!("#{}", i + 1)
            } else {
                s.name.clone()
            },
            message,
        };
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "name {:?}: a step's name is made of letters, digits, '-' and '_' (it names the step's backfill, {stem}.NAME)",
                s.name
            )));
        }
        if !seen.insert(s.name.clone()) {
            return Err(bad("two steps have this name; each needs its own".into()));
        }
        if s.inputs.is_empty() {
            return Err(bad(
                "`inputs` is empty: list the step's files or directories".into(),
            ));
        }
        if s.inputs.iter().any(|p| p == "-") {
            return Err(bad(
                "standard input (-) cannot be a plan's input: it cannot be resumed".into(),
            ));
        }
        if i == 0 && s.overlap {
            return Err(bad(
                "`overlap = true` on the first step: it says a step may run together with the one before it".into(),
            ));
        }
        let mapping = match &s.mapping {
            toml::Value::String(p) => StepMapping::File(rel(p)),
            toml::Value::Table(t) => {
                let text = toml::to_string(t).map_err(|e| bad(format!("mapping: {e}")))?;
                // Checked now, so a typo stops the plan before its first step.
                crate::map::spec::parse(&text)
                    .map_err(|e| bad(format!("[step.mapping]: {}", e.to_string().trim_end())))?;
                StepMapping::Inline(format!(
                    "# Written by cdp-backfill from {shown}, step {} ([step.mapping]).\n# Edit the plan, not this file: the run writes it again when the plan's table changes.\n{text}",
                    s.name
                ))
            }
            _ => return Err(bad(
                "`mapping` is a mapping file's path (a string) or an inline table ([step.mapping])"
                    .into(),
            )),
        };
        let one_byte = |what: &str, v: &Option<String>| -> Result<Option<u8>, PlanError> {
            match v.as_deref() {
                None => Ok(None),
                Some("\\t" | "tab" | "\t") => Ok(Some(b'\t')),
                Some(c) if c.len() == 1 => Ok(Some(c.as_bytes()[0])),
                Some(c) => Err(bad(format!("{what} {c:?} is not a single ASCII character"))),
            }
        };
        let derive = match &s.derive {
            None => None,
            Some(d) => {
                let (by, pick) = match (&d.latest_by, &d.first_by) {
                    (Some(c), None) => (c.clone(), crate::derive::Pick::Latest),
                    (None, Some(c)) => (c.clone(), crate::derive::Pick::First),
                    _ => {
                        return Err(bad(
                            "derive needs one of latest_by or first_by: the timestamp column that picks each person's row".into(),
                        ))
                    }
                };
                let mb = d.memory_mb.unwrap_or(DEFAULT_DERIVE_MEMORY_MB);
                if !(16..=65_536).contains(&mb) {
                    return Err(bad(format!(
                        "derive.memory_mb = {mb}: give between 16 and 65536 (MiB)"
                    )));
                }
                Some(crate::derive::Derive {
                    key: d.identify_per.clone(),
                    by,
                    pick,
                    memory: mb << 20,
                })
            }
        };
        let format = match s.format.as_deref() {
            None => None,
            Some(f) => Some(Format::parse(f).ok_or_else(|| {
                bad(format!(
                    "format {f:?} is not csv, tsv, ndjson, jsonl, json or parquet"
                ))
            })?),
        };
        steps.push(Step {
            backfill: format!("{stem}.{}", s.name),
            inputs: s.inputs.iter().map(|p| rel(p)).collect(),
            mapping,
            format,
            delimiter: one_byte("delimiter", &s.delimiter)?,
            quote: one_byte("quote", &s.quote)?,
            no_header: s.no_header,
            overlap: s.overlap,
            derive,
            name: s.name,
        });
    }
    Ok(MigrationPlan {
        path: path.to_path_buf(),
        stem,
        steps,
    })
}

impl MigrationPlan {
    /// The steps in waves: each wave starts once the one before it ended complete; the
    /// steps of one wave (a step and those after it with `overlap = true`) run together.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            match waves.last_mut() {
                Some(w) if s.overlap => w.push(i),
                _ => waves.push(vec![i]),
            }
        }
        waves
    }
}

impl Step {
    /// Where an inline mapping is written (in the state directory, beside the step's
    /// own directory, so `--restart` setting that aside keeps it in place).
    pub fn inline_mapping_path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(format!("{}.mapping.toml", self.backfill))
    }

    /// The step's mapping file: its path, or its inline table written to the state
    /// directory (only when the text differs, so its hash holds across runs).
    pub fn mapping_file(&self, state_dir: &Path) -> Result<PathBuf, PlanError> {
        match &self.mapping {
            StepMapping::File(p) => Ok(p.clone()),
            StepMapping::Inline(text) => {
                let p = self.inline_mapping_path(state_dir);
                if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
                    let write = |e| PlanError::Write {
                        path: p.display().to_string(),
                        source: e,
                    };
                    std::fs::create_dir_all(state_dir).map_err(write)?;
                    std::fs::write(&p, text).map_err(|e| PlanError::Write {
                        path: p.display().to_string(),
                        source: e,
                    })?;
                }
                Ok(p)
            }
        }
    }

    /// The step's input options: the command line's, with the step's own on top.
    pub fn source_options(&self, base: &SourceOptions) -> SourceOptions {
        let mut src = *base;
        if self.format.is_some() {
            src.format = self.format;
        }
        if let Some(d) = self.delimiter {
            src.csv.delimiter = d;
        }
        if let Some(q) = self.quote {
            src.csv.quote = q;
        }
        if let Some(n) = self.no_header {
            src.csv.has_header = !n;
        }
        src
    }

    /// The run configuration of this step: `base` (the command line's) with the step's
    /// inputs, mapping and backfill name, its own `--report` file
    /// (`REPORT-STEM.<step>.html`), and no summary file (the plan writes one).
    pub fn configure(&self, base: &RunConfig, mapping: PathBuf) -> RunConfig {
        let mut cfg = base.clone();
        cfg.inputs = self.inputs.clone();
        cfg.mapping_path = mapping;
        cfg.backfill_name = Some(self.backfill.clone());
        cfg.own_files = base
            .own_files
            .iter()
            .filter(|f| f.flag != "--summary-json")
            .map(|f| match f.flag {
                "--report" => OwnFile {
                    path: self.report_path(&f.path),
                    ..f.clone()
                },
                _ => f.clone(),
            })
            .collect();
        cfg
    }

    /// For a step that derives one row per person: the derived file (NDJSON, in the
    /// state directory), made now from the step's inputs unless the one made before is
    /// of these very inputs (their content identities), with the same settings (a
    /// resume, or a rerun of a complete step, reuses it). Returns `cfg`/`src` reading
    /// it, and what was derived; `None` when `stop()` interrupted the derivation
    /// (nothing was written). A step that derives nothing runs as it is.
    pub fn derive_input(
        &self,
        cfg: &RunConfig,
        src: &SourceOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<(RunConfig, SourceOptions, DerivedFile)>, RunError> {
        if self.derive.is_none() {
            return Ok(Some((cfg.clone(), *src, DerivedFile::default())));
        }
        let Some((path, src, made)) = self.derived(&cfg.inputs, &cfg.state_dir, src, stop)? else {
            return Ok(None);
        };
        let mut cfg = cfg.clone();
        cfg.inputs = vec![path];
        Ok(Some((cfg, src, made)))
    }

    /// [`Step::derive_input`]'s work: the derived file's path, the options that read it,
    /// and how it was made.
    pub fn derived(
        &self,
        inputs: &[PathBuf],
        state_dir: &Path,
        src: &SourceOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<(PathBuf, SourceOptions, DerivedFile)>, RunError> {
        let Some(d) = &self.derive else {
            return Ok(Some((PathBuf::new(), *src, DerivedFile::default())));
        };
        let state_dir = &state_dir.to_path_buf();
        let out = state_dir.join(format!("{}.derived.ndjson", self.backfill));
        let record = state_dir.join(format!("{}.derived.json", self.backfill));
        let inputs =
            source::discover_excluding(inputs, src, std::slice::from_ref(state_dir), None)?;
        let mut identities = Vec::with_capacity(inputs.len());
        for i in &inputs {
            identities.push(
                i.identity()?
                    .map_or_else(|| "-".into(), |id| id.to_string()),
            );
        }
        let write_err = |p: &Path, e: std::io::Error| {
            RunError::Source(source::SourceError::Other(format!(
                "cannot write {}: {e}",
                p.display()
            )))
        };
        let earlier: Option<DerivedFile> = std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let now_identity = || -> Option<String> {
            source::ContentIdentity::of_file(&out)
                .ok()
                .map(|i| i.to_string())
        };
        let reused = earlier.filter(|e| {
            e.derive.as_ref() == Some(d)
                && e.inputs == identities
                && Some(&e.output) == now_identity().as_ref()
        });
        let made = match reused {
            Some(mut e) => {
                e.reused = true;
                e
            }
            None => {
                std::fs::create_dir_all(state_dir).map_err(|e| write_err(state_dir, e))?;
                let tmp = state_dir.join(format!("{}.derive-tmp", self.backfill));
                let Some(stats) = crate::derive::derive(&inputs, src, d, &out, &tmp, stop)? else {
                    return Ok(None);
                };
                let e = DerivedFile {
                    derive: Some(d.clone()),
                    inputs: identities,
                    output: now_identity().unwrap_or_default(),
                    path: out.display().to_string(),
                    stats,
                    reused: false,
                };
                let json = serde_json::to_vec_pretty(&e).unwrap_or_default();
                std::fs::write(&record, json).map_err(|x| write_err(&record, x))?;
                e
            }
        };
        let mut src = *src;
        src.format = Some(Format::Ndjson);
        Ok(Some((out, src, made)))
    }

    /// `report.html` → `report.<step>.html`.
    pub fn report_path(&self, report: &Path) -> PathBuf {
        let stem = report
            .file_stem()
            .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
        report.with_file_name(format!("{stem}.{}.html", self.name))
    }
}

/// Checks every step before anything is sent: each mapping reads, each step's inputs
/// are found, and each mapping resolves against each of its inputs' columns (a missing
/// column stops the plan here, not after hours of earlier steps). Returns the step that
/// failed with the error.
/// A step that derives one row per person is checked against the inputs it derives
/// from (the derived rows have their columns), and its key and timestamp columns too.
pub fn check(
    plan: &MigrationPlan,
    steps: &[(String, RunConfig, SourceOptions)],
) -> Result<(), (String, RunError)> {
    for (step, (name, cfg, src)) in plan.steps.iter().zip(steps) {
        let one = || -> Result<(), RunError> {
            let spec = crate::map::load(&cfg.mapping_path)?;
            let inputs = source::discover_excluding(
                &cfg.inputs,
                src,
                std::slice::from_ref(&cfg.state_dir),
                None,
            )?;
            if let Some(d) = &step.derive {
                for info in &inputs {
                    let opened = source::open(info, src)?;
                    for (col, what) in [(&d.key, "identify_per"), (&d.by, "its timestamp")] {
                        if opened.schema().resolve(col).is_none() {
                            return Err(RunError::Source(source::SourceError::Other(format!(
                                "{}: derive's {what} names the column {col:?}, which this input does not have (its columns: {})",
                                info.display,
                                opened.schema().column_names().join(", ")
                            ))));
                        }
                    }
                }
            }
            crate::pipeline::Plan::new(&spec, inputs, src, cfg.limits, cfg.sent_at)?;
            Ok(())
        };
        one().map_err(|e| (name.clone(), e))?;
    }
    Ok(())
}

/// A step's derived file, and how it was made (kept beside it as
/// `<backfill>.derived.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DerivedFile {
    /// Absent (default) for a step that derives nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<crate::derive::Derive>,
    /// The content identities of the inputs it was derived from.
    pub inputs: Vec<String>,
    /// The derived file's content identity.
    pub output: String,
    pub path: String,
    pub stats: crate::derive::Derived,
    /// Made by an earlier run of these very inputs, not now.
    #[serde(default)]
    pub reused: bool,
}

impl DerivedFile {
    /// What a run says of it.
    pub fn describe(&self, step: &str) -> String {
        let Some(d) = &self.derive else {
            return String::new();
        };
        let t = thousands;
        let x = &self.stats;
        let how = match d.pick {
            crate::derive::Pick::Latest => "latest",
            crate::derive::Pick::First => "first",
        };
        let skipped = x.rows_without_key + x.rows_bad_timestamp + x.rows_broken;
        format!(
            "step {step}: {} {} (one row each, the {how} by {}) {} from {} rows{} in {}{}",
            t(x.keys),
            d.key,
            d.by,
            if self.reused {
                "derived earlier"
            } else {
                "derived"
            },
            t(x.rows_read),
            if skipped > 0 {
                format!(
                    " ({} without {}, {} without a timestamp, {} broken: left out)",
                    t(x.rows_without_key),
                    d.key,
                    t(x.rows_bad_timestamp),
                    t(x.rows_broken)
                )
            } else {
                String::new()
            },
            self.path,
            if x.spilled_runs > 0 {
                format!(", sorted in {} runs on disk", x.spilled_runs)
            } else {
                String::new()
            }
        )
    }
}

/// One step as the plan's summary shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepSummary {
    pub name: String,
    /// Its backfill's name in the state directory.
    pub backfill: String,
    /// `not started` for a step the plan did not reach; else its run's outcome.
    pub outcome: String,
    /// This run of the step (absent when it did not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// What a step that derives one row per person derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<DerivedFile>,
}

/// Totals over the steps: this run's, and over every run of each step's backfill.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlanTotals {
    pub rows_read: u64,
    pub calls_delivered: u64,
    pub rows_rejected: u64,
    /// Every run of every step.
    pub rows_done_all_runs: u64,
    pub calls_delivered_all_runs: u64,
    pub rows_rejected_all_runs: u64,
    pub steps_complete: u64,
}

/// A plan's run: each step and the total.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanSummary {
    pub plan: String,
    /// `completed` when every step is complete; else the outcome of the step that
    /// stopped the plan.
    pub outcome: String,
    /// The step that stopped the plan, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    pub steps: Vec<StepSummary>,
    pub total: PlanTotals,
}

impl PlanSummary {
    /// Every step not started yet.
    pub fn new(plan: &MigrationPlan) -> PlanSummary {
        PlanSummary {
            plan: plan.path.display().to_string(),
            outcome: "not started".into(),
            stopped_at: None,
            steps: plan
                .steps
                .iter()
                .map(|s| StepSummary {
                    name: s.name.clone(),
                    backfill: s.backfill.clone(),
                    outcome: "not started".into(),
                    summary: None,
                    derived: None,
                })
                .collect(),
            total: PlanTotals::default(),
        }
    }

    /// Records step `i`'s run.
    pub fn set(&mut self, i: usize, s: Summary) {
        self.steps[i].outcome = s.outcome.to_string();
        self.steps[i].summary = Some(s);
    }

    /// Records what step `i` derived.
    pub fn set_derived(&mut self, i: usize, d: DerivedFile) {
        self.steps[i].derived = d.derive.is_some().then_some(d);
    }

    /// Fills the outcome and the totals once the plan has ended (`stopped`: the step
    /// that stopped it).
    pub fn finish(&mut self, stopped: Option<usize>) {
        let mut t = PlanTotals::default();
        for s in self.steps.iter().filter_map(|s| s.summary.as_ref()) {
            t.rows_read += s.rows_read;
            t.calls_delivered += s.calls_delivered;
            t.rows_rejected += s.rows_rejected;
            if let Some(b) = &s.backfill {
                t.rows_done_all_runs += b.rows_done;
                t.calls_delivered_all_runs += b.calls_delivered;
                t.rows_rejected_all_runs += b.rows_rejected;
                t.steps_complete += b.complete as u64;
            }
        }
        self.total = t;
        match stopped {
            Some(i) => {
                self.outcome = self.steps[i].outcome.clone();
                self.stopped_at = Some(self.steps[i].name.clone());
            }
            None => self.outcome = Outcome::Completed.to_string(),
        }
    }
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = thousands;
        let stopped = self
            .stopped_at
            .as_ref()
            .map_or_else(String::new, |s| format!(" at step {s}"));
        writeln!(f, "plan {}: {}{stopped}", self.plan, self.outcome)?;
        writeln!(
            f,
            "  {:<22} {:<18} {:>11} {:>13} {:>15} {:>10}",
            "step", "outcome", "rows (run)", "rows (all)", "delivered (all)", "rejected"
        )?;
        for s in &self.steps {
            let (run, all, delivered, rejected) = match &s.summary {
                Some(x) => match &x.backfill {
                    Some(b) => (
                        t(x.rows_read),
                        t(b.rows_done),
                        t(b.calls_delivered),
                        t(b.rows_rejected),
                    ),
                    None => (
                        t(x.rows_read),
                        "-".into(),
                        t(x.calls_delivered),
                        t(x.rows_rejected),
                    ),
                },
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            writeln!(
                f,
                "  {:<22} {:<18} {run:>11} {all:>13} {delivered:>15} {rejected:>10}",
                s.name, s.outcome
            )?;
        }
        let x = &self.total;
        writeln!(
            f,
            "  {:<22} {:<18} {:>11} {:>13} {:>15} {:>10}",
            "total",
            format!("{}/{} complete", x.steps_complete, self.steps.len()),
            t(x.rows_read),
            t(x.rows_done_all_runs),
            t(x.calls_delivered_all_runs),
            t(x.rows_rejected_all_runs)
        )
    }
}

/// `status PLAN`: each step's backfill in `state` (progress, rows, calls, rejects,
/// outcome) and the total.
pub fn describe(plan: &MigrationPlan, state_dir: &Path) -> String {
    use std::fmt::Write as _;
    let t = thousands;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan {} ({} steps), state in {}:",
        plan.path.display(),
        plan.steps.len(),
        state_dir.display()
    );
    let _ = writeln!(
        s,
        "  {:<22} {:>7} {:>13} {:>15} {:>10}  outcome",
        "step", "done", "rows", "delivered", "rejected"
    );
    let (mut rows, mut calls, mut rejected, mut complete) = (0, 0, 0, 0);
    let mut next: Option<&str> = None;
    for step in &plan.steps {
        let path = state_dir.join(&step.backfill).join(state::CHECKPOINT_FILE);
        match checkpoint::load(&path) {
            Ok(Some(cp)) => {
                let done = checkpoint::fraction_done(&cp)
                    .map_or_else(|| "?".to_string(), |f| format!("{:.1}%", f * 100.0));
                let c = &cp.counters;
                let _ = writeln!(
                    s,
                    "  {:<22} {done:>7} {:>13} {:>15} {:>10}  {}",
                    step.name,
                    t(c.rows_done),
                    t(c.calls_delivered),
                    t(c.rows_rejected),
                    state::outcome(&cp)
                );
                rows += c.rows_done;
                calls += c.calls_delivered;
                rejected += c.rows_rejected;
                complete += cp.complete as u64;
                if !cp.complete && next.is_none() {
                    next = Some(&step.name);
                }
            }
            Ok(None) => {
                let _ = writeln!(
                    s,
                    "  {:<22} {:>7} {:>13} {:>15} {:>10}  not started",
                    step.name, "-", "-", "-", "-"
                );
                if next.is_none() {
                    next = Some(&step.name);
                }
            }
            Err(e) => {
                let _ = writeln!(s, "  {:<22} unreadable: {e}", step.name);
            }
        }
    }
    let _ = writeln!(
        s,
        "  {:<22} {:>7} {:>13} {:>15} {:>10}  {complete}/{} steps complete",
        "total",
        "",
        t(rows),
        t(calls),
        t(rejected),
        plan.steps.len()
    );
    match next {
        Some(n) => {
            let _ = writeln!(
                s,
                "a rerun of the plan (the same command) continues with step {n}"
            );
        }
        None => {
            let _ = writeln!(s, "every step is complete");
        }
    }
    s
}

/// One kind of file found by [`starter_plan`]: the files of one format and one set of
/// columns, and the profile of the first.
struct Kind {
    format: Format,
    columns: Vec<String>,
    files: Vec<PathBuf>,
    profile: crate::inspect::Profile,
}

/// `inspect DIR --emit-plan PLAN`: one step per kind of file under `dir` (same format,
/// same columns), each with a starter mapping written beside the plan
/// (`<plan stem>.<step>.toml`). Steps without an event column (people, companies) come
/// first, then those with one (their events). Writes nothing when any file to write
/// exists already. Returns the files written.
pub fn starter_plan(
    dir: &Path,
    plan: &Path,
    src: &SourceOptions,
) -> Result<Vec<PathBuf>, PlanError> {
    let plan_shown = plan.display().to_string();
    let invalid = |message: String| PlanError::Invalid {
        path: plan_shown.clone(),
        message,
    };
    let files = source::discover(&[dir.to_path_buf()], src).map_err(|e| invalid(e.to_string()))?;
    let mut kinds: Vec<Kind> = Vec::new();
    for f in &files {
        let opts = crate::inspect::InspectOptions {
            input: f.path.clone(),
            max_rows: 1_000,
            samples: 3,
        };
        let profile = crate::inspect::inspect(&opts, src).map_err(|e| invalid(e.to_string()))?;
        let mut columns: Vec<String> = profile.columns.iter().map(|c| c.name.clone()).collect();
        columns.sort();
        match kinds
            .iter_mut()
            .find(|k| k.format == f.format && k.columns == columns)
        {
            Some(k) => k.files.push(f.path.clone()),
            None => kinds.push(Kind {
                format: f.format,
                columns,
                files: vec![f.path.clone()],
                profile,
            }),
        }
    }
    if kinds.is_empty() {
        return Err(invalid(format!("no input files under {}", dir.display())));
    }
    // People and companies before the events that name them.
    let has_event = |k: &Kind| {
        k.columns.iter().any(|c| {
            matches!(
                c.to_ascii_lowercase().as_str(),
                "event" | "event_name" | "event_type" | "action"
            )
        })
    };
    kinds.sort_by_key(has_event);
    let plan_dir = plan.parent().unwrap_or(Path::new(""));
    let plan_stem = state::safe_name(
        &plan
            .file_stem()
            .map_or_else(|| "plan".into(), |s| s.to_string_lossy()),
    );
    // Paths in the plan are relative to it: as found when the plan is written here,
    // else absolute.
    let in_plan = |p: &Path| -> String {
        if plan_dir.as_os_str().is_empty() || p.is_absolute() {
            p.display().to_string()
        } else {
            std::path::absolute(p)
                .map_or_else(|_| p.display().to_string(), |a| a.display().to_string())
        }
    };
    let mut names = BTreeSet::new();
    let mut steps = Vec::new();
    for k in &kinds {
        let first = &k.files[0];
        // The directory that holds them (when it is not the one named), else the file's
        // stem.
        let parent = first
            .parent()
            .filter(|p| *p != dir && k.files.iter().all(|f| f.parent() == Some(p)));
        let base = match parent.and_then(|p| p.file_name()) {
            Some(n) => n.to_string_lossy().into_owned(),
            None => first
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                .split('.')
                .next()
                .unwrap_or("")
                .to_string(),
        };
        let mut name: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() {
            name = "step".into();
        }
        let mut unique = name.clone();
        let mut n = 2;
        while !names.insert(unique.clone()) {
            unique = format!("{name}-{n}");
            n += 1;
        }
        let mapping = plan_dir.join(format!("{plan_stem}.{unique}.toml"));
        steps.push((unique, k, mapping));
    }
    let mut targets: Vec<PathBuf> = vec![plan.to_path_buf()];
    targets.extend(steps.iter().map(|(_, _, m)| m.clone()));
    if let Some(t) = targets
        .iter()
        .find(|t| std::fs::symlink_metadata(t).is_ok())
    {
        return Err(invalid(format!(
            "{} already exists; inspect does not overwrite files (it may be a plan or a mapping you edited). Give another plan path, or remove that file first.",
            t.display()
        )));
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Starter plan for {} (written by `cdp-backfill inspect --emit-plan`): one step per\n# kind of file found (same format, same columns), each with a starter mapping.\n# Steps run in order, each once the one before it is fully acknowledged: put people\n# and companies before their events. Check each mapping, then:\n#   cdp-backfill validate {plan_shown}\n#   cdp-backfill run {plan_shown} --endpoint us",
        dir.display()
    );
    for (name, k, mapping) in &steps {
        let _ = writeln!(text, "\n[[step]]\nname = \"{name}\"");
        let inputs: Vec<String> = k.files.iter().map(|f| toml_str(&in_plan(f))).collect();
        let _ = writeln!(text, "inputs = [{}]", inputs.join(", "));
        let mapping_name = mapping
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let _ = writeln!(text, "mapping = {}", toml_str(&mapping_name));
        let _ = writeln!(
            text,
            "# {} {} file{}, columns: {}",
            k.files.len(),
            k.format.as_str(),
            if k.files.len() == 1 { "" } else { "s" },
            k.profile
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut written = Vec::new();
    let write = |p: &Path, body: &str| -> Result<(), PlanError> {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .map_err(|source| PlanError::Write {
                path: p.display().to_string(),
                source,
            })
    };
    for (_, k, mapping) in &steps {
        write(mapping, &crate::inspect::starter_mapping(&k.profile))?;
        written.push(mapping.clone());
    }
    write(plan, &text)?;
    written.push(plan.to_path_buf());
    Ok(written)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as `m.toml` in a directory of its own (tests run in parallel).
    fn plan(text: &str) -> Result<MigrationPlan, PlanError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cdp-plan-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.toml");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    #[test]
    fn steps_resolve_relative_to_the_plan_and_group_into_waves() {
        let p = plan(
            "[[step]]\nname = \"a\"\ninputs = [\"x.csv\"]\nmapping = \"a.toml\"\n\
             [[step]]\nname = \"b\"\ninputs = [\"/abs/y.csv\"]\nmapping = \"b.toml\"\n\
             [[step]]\nname = \"c\"\ninputs = [\"z\"]\noverlap = true\ndelimiter = \";\"\n\
             [step.mapping]\n[[step.mapping.call]]\ntype = \"identify\"\nuser_id = \"id\"\n",
        )
        .unwrap();
        assert_eq!(p.stem, "m");
        assert_eq!(p.steps[0].backfill, "m.a");
        // Beside the plan, not in the working directory.
        assert_eq!(p.steps[0].inputs[0], p.path.with_file_name("x.csv"));
        assert_eq!(p.steps[1].inputs[0], PathBuf::from("/abs/y.csv"));
        assert!(matches!(&p.steps[2].mapping, StepMapping::Inline(t) if t.contains("identify")));
        assert_eq!(p.waves(), vec![vec![0], vec![1, 2]]);
        let src = p.steps[2].source_options(&SourceOptions::default());
        assert_eq!(src.csv.delimiter, b';');
    }

    #[test]
    fn bad_plans_are_refused_naming_the_step() {
        for (text, want) in [
            ("", "no [[step]] tables"),
            ("[[step]]\nname = \"a b\"\ninputs = [\"x\"]\nmapping = \"m\"\n", "step a b: name"),
            (
                "[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmapping = \"m\"\n[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmapping = \"m\"\n",
                "two steps have this name",
            ),
            ("[[step]]\nname = \"a\"\ninputs = []\nmapping = \"m\"\n", "`inputs` is empty"),
            ("[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmapping = 3\n", "`mapping` is a mapping file's path"),
            ("[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmapping = \"m\"\noverlap = true\n", "on the first step"),
            ("[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmapping = \"m\"\nformat = \"xls\"\n", "format \"xls\""),
            ("[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmaping = \"m\"\n", "unknown field"),
            (
                "[[step]]\nname = \"a\"\ninputs = [\"x\"]\n[step.mapping]\n[[step.mapping.call]]\ntype = \"nope\"\n",
                "step a: [step.mapping]",
            ),
        ] {
            let e = plan(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
