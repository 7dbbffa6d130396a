//! The state directory: one directory per backfill, so backfills in one working
//! directory never collide.
//!
//! ```text
//! .cdp-backfill/                       --state DIR (CDP_BACKFILL_STATE), by default here
//!   events-3f2a9c1e/                   <mapping stem>-<8 hex>: one backfill
//!     checkpoint.json  .checkpoint.json.lock  rejects.ndjson
//!   migration.people/                  <plan stem>.<step>: a plan's step
//!   events-3f2a9c1e.restarted-20261207T101500Z/   what --restart set aside
//! ```
//!
//! A backfill's name is fixed when it starts: the mapping file's stem and 8 hex digits
//! of xxh3(namespace ‖ stem ‖ the sorted content identities of its inputs). Inputs not
//! started yet may change before a resume, so a run finds its backfill again **by
//! content** ([`find`]): a checkpoint of the same mapping stem and namespace whose
//! started inputs have the identities of this run's first inputs, in order. A moved or
//! renamed export resumes; a different export starts a backfill of its own.
//!
//! Invariants: a run never empties or replaces a rejects file (or a checkpoint) that
//! another backfill's checkpoint counts ([`counted_elsewhere`]); `--restart` of a
//! backfill in the state directory moves its directory aside ([`set_aside`]) rather than
//! deleting anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;

use super::durable::{config_hash, endpoint_of, fingerprints};
use super::{check_matches, load, Backfill, Checkpoint, CheckpointError};
use crate::config::{RunConfig, LEGACY_CHECKPOINT_PATH};
use crate::map::message_id::SeedScheme;
use crate::source::{FileId, InputInfo, SourceOptions};

/// The checkpoint's file name inside a backfill's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// The rejects file's name inside a backfill's directory.
pub const REJECTS_FILE: &str = "rejects.ndjson";
/// Where the rejects of a run that keeps no checkpoint go by default (a dry run, or
/// `--no-checkpoint`): beside the backfill's, never over them.
pub const UNCHECKED_REJECTS_FILE: &str = "rejects.no-checkpoint.ndjson";
/// Where a `--sample` trial records itself.
pub const TRIALS_FILE: &str = "trials.ndjson";

/// `<stem>-<8 hex>`: the name of a new backfill of `inputs` (content identities, or
/// `-` for standard input) with the mapping `stem` and `namespace`.
pub fn name_for(stem: &str, namespace: &str, inputs: &[String]) -> String {
    let mut sorted: Vec<&str> = inputs.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut h = Xxh3::new();
    h.update(namespace.as_bytes());
    h.update(&[0]);
    h.update(stem.as_bytes());
    for i in sorted {
        h.update(&[0]);
        h.update(i.as_bytes());
    }
    format!("{}-{:08x}", safe_name(stem), h.digest() as u32)
}

/// A file name made of `s`: characters other than letters, digits, `-`, `_` and `.`
/// become `_`, and a leading `.` too (a hidden directory would pass unseen).
pub fn safe_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// One backfill of the state directory, as `status` lists them.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
    /// `None`: a directory without a checkpoint (a dry run's rejects, a trial).
    pub checkpoint: Result<Option<Checkpoint>, CheckpointError>,
    /// Set aside by `--restart` (`NAME.restarted-TIME`).
    pub restarted: bool,
}

impl Entry {
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }
}

/// Every backfill directory under `state`, by name. Nothing when there is no state
/// directory yet.
pub fn entries(state: &Path) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(state) else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        // A plan step's sort, while it derives its rows: not a backfill.
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".derive-tmp"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dir = e.path();
            Entry {
                checkpoint: load(&dir.join(CHECKPOINT_FILE)),
                restarted: name.contains(".restarted-"),
                name,
                dir,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// How many of `cp`'s inputs have had rows sent: every one once it is complete (or
/// when it did not end drained, any could have), else those before the resume position
/// and the one it is in, if begun.
pub fn started_inputs(cp: &Checkpoint) -> usize {
    if cp.complete {
        return cp.inputs.len();
    }
    let begun = cp.resume.row > 0 || cp.resume.offset > 0;
    (cp.resume.input as usize + begun as usize).min(cp.inputs.len())
}

/// Whether `cp` records the backfill of `mapping`/`namespace` over `inputs` (this
/// run's content identities, in order): the inputs it started are this run's first
/// ones; a complete one has exactly these inputs; one with no input started yet, exactly
/// the name a new backfill of these inputs would get.
pub fn records(cp: &Checkpoint, backfill: &Backfill, inputs: &[String]) -> bool {
    let Some(meta) = &cp.backfill else {
        return false;
    };
    if meta.mapping != backfill.mapping || meta.namespace != backfill.namespace {
        return false;
    }
    let started = started_inputs(cp);
    if started == 0 {
        return meta.name == backfill.name;
    }
    if cp.complete && cp.inputs.len() != inputs.len() {
        return false;
    }
    // Content seeds only: a version 1 backfill is found at its old path instead.
    cp.seeds == SeedScheme::Content
        && inputs.len() >= started
        && cp.inputs[..started]
            .iter()
            .zip(inputs)
            .all(|(old, now)| old.identity.as_deref() == Some(now.as_str()))
}

/// The backfill of the state directory that this run continues, if any: the one that
/// [`records`] it with the most inputs started (then the most recently written).
/// Directories set aside by `--restart` are never continued.
pub fn find(state: &Path, backfill: &Backfill, inputs: &[String]) -> Option<Entry> {
    entries(state)
        .into_iter()
        .filter(|e| !e.restarted)
        .filter(|e| matches!(&e.checkpoint, Ok(Some(cp)) if records(cp, backfill, inputs)))
        .max_by_key(|e| match &e.checkpoint {
            Ok(Some(cp)) => (started_inputs(cp), cp.written_at.clone()),
            _ => (0, String::new()),
        })
}

/// Moves a backfill's directory aside as `NAME.restarted-<UTC time>` (`--restart`):
/// its checkpoint and rejects stay on disk, and `status` lists them.
pub fn set_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let name = dir
        .file_name()
        .map_or_else(|| "backfill".into(), |n| n.to_string_lossy().into_owned());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let to = dir.with_file_name(format!("{name}.restarted-{stamp}"));
    std::fs::rename(dir, &to)?;
    Ok(to)
}

/// A checkpoint other than `except` that counts lines in the rejects file `rejects`:
/// among the state directory's backfills, the old default checkpoint in the working
/// directory, and `also` (a checkpoint this run names but does not keep). Whatever its
/// outcome: a finished backfill's rejects are still its record. Returns the checkpoint's
/// path and how many bytes of the file it counts.
pub fn counted_elsewhere(
    rejects: &Path,
    except: Option<&Path>,
    state: &Path,
    also: &[PathBuf],
) -> Option<(PathBuf, u64)> {
    // A file that is not there holds nothing to lose (and a path alone would match the
    // path a set-aside checkpoint recorded).
    if std::fs::metadata(rejects).is_err() {
        return None;
    }
    let target = FileId::of(rejects)?;
    let except = except.and_then(FileId::of);
    let legacy = PathBuf::from(crate::config::LEGACY_CHECKPOINT_PATH);
    let candidates = entries(state)
        .into_iter()
        .map(|e| e.checkpoint_path())
        .chain(std::iter::once(legacy))
        .chain(also.iter().cloned());
    for path in candidates {
        if except.is_some() && FileId::of(&path) == except {
            continue;
        }
        let Ok(Some(cp)) = load(&path) else { continue };
        if cp.rejects_len > 0 && FileId::of(Path::new(&cp.rejects_file)) == Some(target.clone()) {
            return Some((path, cp.rejects_len));
        }
    }
    None
}

/// How a backfill stands, in a word or two, from its checkpoint.
pub fn outcome(cp: &Checkpoint) -> &'static str {
    match (cp.complete, cp.drained) {
        (true, _) => "complete",
        // Ended with every request acknowledged: an interrupt, a --limit trial, a read
        // error.
        (false, true) => "stopped (resumable)",
        // A crash, kill -9, a failed request or a drain timeout.
        (false, false) => "stopped abruptly (resumable)",
    }
}

/// Where a run keeps its checkpoint and rejects file, once its backfill is known.
#[derive(Debug)]
pub struct Resolved {
    /// `None` for a run that keeps none.
    pub checkpoint: Option<PathBuf>,
    pub rejects: PathBuf,
    pub backfill: Backfill,
    /// The backfill's directory in the state directory (`None` with an explicit
    /// `--checkpoint` or the old default checkpoint).
    pub dir: Option<PathBuf>,
    /// `--restart`: the directory to set aside before the run starts afresh.
    set_aside: Option<PathBuf>,
    /// What the run should say about it (a checkpoint found at the old default path, an
    /// earlier state set aside by `--restart`).
    pub notes: Vec<String>,
}

/// Finds (or names) this run's backfill and the paths of its files: an explicit
/// `--checkpoint`/`--rejects` wins; else its directory in the state directory, found
/// by content ([`find`]), or a checkpoint at the old default path that matches the run
/// (resumed where it is, with a note), or a new directory. Changes nothing on disk
/// ([`Resolved::prepare`] does, once the run is known to start). Refuses `--restart` of
/// an explicit checkpoint that records another backfill.
pub fn resolve(
    cfg: &RunConfig,
    src: &SourceOptions,
    namespace: &str,
    inputs: &[Arc<InputInfo>],
) -> Result<Resolved, CheckpointError> {
    let stem = match &cfg.backfill_name {
        Some(n) => n.clone(),
        None => safe_name(
            &cfg.mapping_path
                .file_stem()
                .map_or_else(|| "mapping".into(), |s| s.to_string_lossy()),
        ),
    };
    let idents = identities(inputs)?;
    let mut backfill = Backfill {
        name: cfg
            .backfill_name
            .clone()
            .unwrap_or_else(|| name_for(&stem, namespace, &idents)),
        mapping: stem,
        namespace: namespace.to_string(),
    };
    let mut notes = Vec::new();
    let given_rejects = cfg.rejects_given.then(|| cfg.rejects_path.clone());
    if cfg.checkpoint_given {
        let path = cfg.checkpoint.clone().unwrap_or_default();
        let existing = load(&path).ok().flatten();
        if let (true, Some(cp)) = (cfg.restart && cfg.checkpoint.is_some(), &existing) {
            if !records_loosely(cp, &backfill, &idents, inputs) {
                return Err(CheckpointError::RestartOther {
                    checkpoint: path,
                    rejects: PathBuf::from(&cp.rejects_file),
                    rows: cp.counters.rows_done,
                    rejected: cp.counters.rows_rejected,
                });
            }
        }
        // Resuming: the rejects file the checkpoint records; else one beside it.
        let rejects = given_rejects.unwrap_or_else(|| match &existing {
            Some(cp) if !cfg.restart && cfg.checkpoint.is_some() => PathBuf::from(&cp.rejects_file),
            _ => rejects_beside(&path),
        });
        return Ok(Resolved {
            checkpoint: cfg.checkpoint.clone(),
            rejects,
            backfill,
            dir: None,
            set_aside: None,
            notes,
        });
    }
    let state = &cfg.state_dir;
    let dir = match &cfg.backfill_name {
        Some(name) => state.join(name),
        None => match find(state, &backfill, &idents) {
            Some(e) => {
                backfill.name = e.name.clone();
                e.dir
            }
            None => {
                if cfg.checkpoint.is_some() && !cfg.restart {
                    if let Some(r) = legacy(cfg, src, inputs, &backfill, given_rejects.clone())? {
                        return Ok(r);
                    }
                }
                state.join(&backfill.name)
            }
        },
    };
    // Set aside once the run is known to start (`Resolved::prepare`).
    let set_aside = (cfg.restart && cfg.checkpoint.is_some() && dir.join(CHECKPOINT_FILE).exists())
        .then(|| dir.clone());
    let (checkpoint, rejects) = match cfg.checkpoint {
        Some(_) => (Some(dir.join(CHECKPOINT_FILE)), dir.join(REJECTS_FILE)),
        None => (None, dir.join(UNCHECKED_REJECTS_FILE)),
    };
    // A full run starting after trials: say what goes again.
    if cfg.checkpoint.is_some() && !dir.join(CHECKPOINT_FILE).exists() {
        notes.extend(trials(&dir));
    }
    Ok(Resolved {
        checkpoint,
        rejects: given_rejects.unwrap_or(rejects),
        backfill,
        dir: Some(dir),
        set_aside,
        notes,
    })
}

/// A `--sample` trial of the backfill in `dir`, recorded so that later runs say what
/// it sent (one JSON line in [`TRIALS_FILE`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// RFC 3339, UTC.
    pub at: String,
    /// One row in this many of each input was sent.
    pub every: u64,
    pub rows: u64,
    pub calls_delivered: u64,
}

/// Appends `trial` to the backfill's [`TRIALS_FILE`].
pub fn record_trial(dir: &Path, trial: &Trial) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut line = serde_json::to_vec(trial).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(TRIALS_FILE))?
        .write_all(&line)
}

/// What a run should say of the trials recorded in `dir`: their calls go again.
fn trials(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join(TRIALS_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Trial>(l).ok())
        .map(|t| {
            format!(
                "a --sample {} trial of this backfill ({}) sent {} calls: this run sends them again with the same messageIds, and the API drops the repeats",
                t.every, t.at, t.calls_delivered
            )
        })
        .collect()
}

impl Resolved {
    /// Makes the backfill's directory (after setting its earlier state aside, with
    /// `--restart`): called once everything that could refuse the run before it touches
    /// anything has passed. Returns what to say about it.
    pub fn prepare(&self) -> Result<Vec<String>, CheckpointError> {
        let mut notes = Vec::new();
        if let Some(dir) = &self.set_aside {
            let kept = set_aside(dir).map_err(|source| CheckpointError::StateDir {
                path: dir.clone(),
                source,
            })?;
            notes.push(format!(
                "--restart: this backfill's earlier checkpoint and rejects are kept in {}",
                kept.display()
            ));
        }
        if let Some(dir) = &self.dir {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(notes)
    }
}

/// The content identity of each input as text (`-` for standard input).
fn identities(inputs: &[Arc<InputInfo>]) -> Result<Vec<String>, CheckpointError> {
    inputs
        .iter()
        .map(|i| {
            Ok(i.identity()
                .map_err(CheckpointError::Input)?
                .map_or_else(|| "-".to_string(), |id| id.to_string()))
        })
        .collect()
}

/// `cp.json` → `cp.rejects.ndjson`, `x.checkpoint.json` → `x.rejects.ndjson` (so the old
/// default `cdp-backfill.checkpoint.json` keeps `cdp-backfill.rejects.ndjson`).
pub fn rejects_beside(checkpoint: &Path) -> PathBuf {
    let name = checkpoint
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let stem = name
        .strip_suffix(".checkpoint.json")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    checkpoint.with_file_name(format!("{stem}.rejects.ndjson"))
}

/// Whether `cp` is this backfill's, for `--restart` of an explicit checkpoint: by
/// [`records`] when it knows its backfill, else (a version 1 file) by the paths of the
/// inputs it started.
fn records_loosely(
    cp: &Checkpoint,
    backfill: &Backfill,
    idents: &[String],
    inputs: &[Arc<InputInfo>],
) -> bool {
    if cp.backfill.is_some() {
        // The mapping may have changed (a reason to restart): compare the inputs only.
        let mut same = backfill.clone();
        if let Some(m) = &cp.backfill {
            same.mapping = m.mapping.clone();
            same.namespace = m.namespace.clone();
            if started_inputs(cp) == 0 {
                same.name = m.name.clone();
                return cp
                    .inputs
                    .iter()
                    .all(|f| idents.iter().any(|i| f.identity.as_deref() == Some(i)));
            }
        }
        return records(cp, &same, idents);
    }
    let started = started_inputs(cp).max(1).min(cp.inputs.len());
    inputs.len() >= started
        && cp.inputs[..started]
            .iter()
            .zip(inputs)
            .all(|(f, i)| f.path == i.display)
}

/// The old default checkpoint (`cdp-backfill.checkpoint.json` in the working directory),
/// if it is this very run's: it is resumed where it is, with its rejects file.
fn legacy(
    cfg: &RunConfig,
    src: &SourceOptions,
    inputs: &[Arc<InputInfo>],
    backfill: &Backfill,
    given_rejects: Option<PathBuf>,
) -> Result<Option<Resolved>, CheckpointError> {
    let path = PathBuf::from(LEGACY_CHECKPOINT_PATH);
    let Ok(Some(mut cp)) = load(&path) else {
        return Ok(None);
    };
    let Ok(prints) = fingerprints(inputs) else {
        return Ok(None);
    };
    let hash = config_hash(cfg, src)?;
    if check_matches(&mut cp, &path, &endpoint_of(cfg), &hash, &prints).is_err() {
        return Ok(None);
    }
    let note = format!(
        "resuming the backfill recorded in {LEGACY_CHECKPOINT_PATH} (the default before state directories), where it is"
    );
    Ok(Some(Resolved {
        checkpoint: Some(path),
        rejects: given_rejects.unwrap_or_else(|| PathBuf::from(&cp.rejects_file)),
        backfill: backfill.clone(),
        dir: None,
        set_aside: None,
        notes: vec![note],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Counters, Fingerprint, VERSION};
    use crate::source::Position;

    fn cp(name: &str, ids: &[&str], resume: Position, complete: bool) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            tool_version: "t".into(),
            written_at: "2026-01-01T00:00:00Z".into(),
            endpoint: "local".into(),
            seeds: SeedScheme::Content,
            backfill: Some(Backfill {
                name: name.into(),
                mapping: "events".into(),
                namespace: "ns".into(),
            }),
            config_hash: "h".into(),
            inputs: ids
                .iter()
                .map(|i| Fingerprint {
                    path: format!("{i}.csv"),
                    size: 1,
                    modified_ns: 1,
                    sample_hash: "0".into(),
                    identity: Some(i.to_string()),
                    seed: None,
                    e_tag: None,
                    version: None,
                })
                .collect(),
            resume,
            complete,
            drained: true,
            rejects_file: "r".into(),
            rejects_len: 0,
            input_rows: vec![0; ids.len()],
            counters: Counters::default(),
            shard: None,
            start: Position::default(),
            lease: None,
            aliases_beyond: Vec::new(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A backfill is found again by the content of the inputs it started, in order;
    /// inputs it has not started may differ; another mapping or namespace never matches.
    #[test]
    fn a_backfill_is_found_by_the_content_of_its_started_inputs() {
        let me = Backfill {
            name: name_for("events", "ns", &ids(&["A", "B"])),
            mapping: "events".into(),
            namespace: "ns".into(),
        };
        let at_b = Position {
            input: 1,
            row: 5,
            offset: 9,
        };
        let c = cp("x", &["A", "B", "C"], at_b, false);
        assert!(records(&c, &me, &ids(&["A", "B", "D"])));
        assert!(records(&c, &me, &ids(&["A", "B"])));
        assert!(!records(&c, &me, &ids(&["B", "A"])));
        assert!(!records(&c, &me, &ids(&["A"])));
        let other = Backfill {
            namespace: "other".into(),
            ..me.clone()
        };
        assert!(!records(&c, &other, &ids(&["A", "B"])));
        // Nothing started: only the very same set of inputs (its name) matches.
        let fresh = cp(&me.name, &["A", "B"], Position::default(), false);
        assert!(records(&fresh, &me, &ids(&["B", "A"])));
        let fresh = cp("events-00000000", &["A", "B"], Position::default(), false);
        assert!(!records(&fresh, &me, &ids(&["A", "B"])));
        // Complete: exactly its inputs.
        let done = cp("x", &["A", "B"], Position::default(), true);
        assert!(records(&done, &me, &ids(&["A", "B"])));
        assert!(!records(&done, &me, &ids(&["A", "B", "C"])));
        // A version 1 checkpoint (path seeds) is never found by content.
        let mut old = c.clone();
        old.seeds = SeedScheme::Path;
        assert!(!records(&old, &me, &ids(&["A", "B"])));
    }

    #[test]
    fn names_are_stable_safe_and_depend_on_every_part() {
        let n = name_for("events", "ns", &ids(&["A", "B"]));
        assert_eq!(n, name_for("events", "ns", &ids(&["B", "A"])));
        assert!(
            n.starts_with("events-") && n.len() == "events-".len() + 8,
            "{n}"
        );
        assert_ne!(n, name_for("events", "ns2", &ids(&["A", "B"])));
        assert_ne!(n, name_for("events", "ns", &ids(&["A", "C"])));
        assert_eq!(safe_name(".hidden/x y"), "_.hidden_x_y");
    }

    #[test]
    fn set_aside_keeps_the_files_and_entries_list_them() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("events-1");
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join(REJECTS_FILE), "x\n").unwrap();
        let moved = set_aside(&b).unwrap();
        assert!(!b.exists());
        assert_eq!(std::fs::read(moved.join(REJECTS_FILE)).unwrap(), b"x\n");
        let e = entries(dir.path());
        assert_eq!(e.len(), 1);
        assert!(e[0].restarted && e[0].name.starts_with("events-1.restarted-"));
    }
}
