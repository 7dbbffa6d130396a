//! This run's checkpoint: opened (loaded and matched, or started), and written with what
//! every write of it repeats.
//!
//! A checkpoint covers a contiguous prefix of acknowledged requests; the collector
//! ([`super::collect`]) decides when, this says what. The hash of the mapping and of every
//! option that shapes the calls ([`config_hash`]) makes a resume with another mapping or
//! other limits a refusal, never a silent mix.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::rejects::{lock_checkpoint, lock_rejects};
use super::{
    check_matches, fingerprint, load, store, Backfill, Checkpoint, CheckpointError, Counters,
    WriteError, VERSION,
};
use crate::config::{Endpoint, RunConfig};
use crate::map::message_id::{self, SeedScheme};
use crate::pack::AliasAt;
use crate::source::{self, FileId, InputInfo, Position, SourceOptions, STDIN_ARG};

/// The checkpoint of this run: where it lives and what every write of it repeats.
pub struct Durable {
    pub path: PathBuf,
    /// As loaded (resuming) or as started; `resume`, `rejects_len` and counters are the
    /// starting point of this run.
    pub base: Checkpoint,
    pub resumed: bool,
    /// Each input's messageId seed, as the checkpoint records them: a resumed backfill
    /// keeps the seeds (and the scheme) it started with.
    pub seeds: Vec<u64>,
    /// The checkpoint's lock, taken before it is read, and the rejects file's, taken
    /// once the checkpoint is known to fit this run and before it is written.
    _locks: [Option<File>; 2],
}

impl Durable {
    /// The run's checkpoint: `None` when it keeps none. A matching checkpoint is loaded
    /// (it says where to resume); a new one is written before anything is sent, so a
    /// crash at any point leaves one. Refuses a checkpoint that does not fit this run,
    /// and a checkpoint or rejects file another run holds. Notes on inputs that changed
    /// where they may go to stderr.
    pub fn open(
        cfg: &RunConfig,
        src: &SourceOptions,
        inputs: &[Arc<InputInfo>],
        backfill: &Backfill,
    ) -> Result<Option<Durable>, CheckpointError> {
        let Some(path) = cfg.checkpoint.clone() else {
            return Ok(None);
        };
        let checkpoint_lock = lock_checkpoint(&path)?;
        let prints = fingerprints(inputs)?;
        let endpoint = endpoint_of(cfg);
        let config_hash = config_hash(cfg, src)?;
        let existing = if cfg.restart { None } else { load(&path)? };
        if let Some(mut cp) = existing {
            let notes = check_matches(&mut cp, &path, &endpoint, &config_hash, &prints)?;
            let seeds = seeds_of(&mut cp, &path, inputs, &backfill.namespace)?;
            // A version 1 checkpoint learns its name and is written as version 2 from
            // now on (it keeps its path and its seed scheme).
            cp.backfill.get_or_insert_with(|| backfill.clone());
            cp.version = VERSION;
            for n in notes {
                // Not `eprintln!`: a closed stderr must not stop the run.
                let _ = writeln!(std::io::stderr(), "note: {n}");
            }
            let recorded = Path::new(&cp.rejects_file);
            if FileId::of(recorded) != FileId::of(&cfg.rejects_path) {
                if cp.rejects_len > 0 {
                    return Err(CheckpointError::RejectsElsewhere {
                        checkpoint: path,
                        len: cp.rejects_len,
                        recorded: cp.rejects_file,
                        given: cfg.rejects_path.clone(),
                    });
                }
                // Nothing rejected yet: the rejects go where this run says.
                cp.rejects_file = source::absolute(&cfg.rejects_path).display().to_string();
            }
            let rejects_lock = lock_rejects(&cfg.rejects_path, cp.rejects_len == 0)?;
            return Ok(Some(Durable {
                _locks: [checkpoint_lock, rejects_lock],
                path,
                base: cp,
                resumed: true,
                seeds,
            }));
        }
        let mut base = Checkpoint {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            written_at: String::new(),
            endpoint,
            seeds: SeedScheme::Content,
            backfill: Some(backfill.clone()),
            config_hash,
            inputs: prints,
            resume: Position::default(),
            complete: false,
            drained: false,
            // Absolute, so that a resume from another directory finds the same file.
            rejects_file: source::absolute(&cfg.rejects_path).display().to_string(),
            rejects_len: 0,
            input_rows: vec![0; inputs.len()],
            counters: Default::default(),
            aliases_beyond: Vec::new(),
        };
        let seeds = seeds_of(&mut base, &path, inputs, &backfill.namespace)?;
        // Written before anything is sent, so a crash at any point leaves a checkpoint.
        let d = Durable {
            _locks: [checkpoint_lock, lock_rejects(&cfg.rejects_path, true)?],
            path,
            base,
            resumed: false,
            seeds,
        };
        d.store(
            Position::default(),
            0,
            &Default::default(),
            false,
            &d.base.input_rows,
            &[],
        )
        .map_err(CheckpointError::First)?;
        Ok(Some(d))
    }

    /// `resuming from PATH: INPUT at row N (x% done)`, or `checkpoint: PATH` for a new one.
    pub fn starting_at(&self, inputs: &[Arc<InputInfo>]) -> String {
        let start = self.base.resume;
        if !self.resumed {
            return format!("checkpoint: {}", self.path.display());
        }
        let done = super::fraction_done(&self.base)
            .map_or_else(String::new, |f| format!(" ({:.1}% done)", f * 100.0));
        format!(
            "resuming from {}: {} at row {}{done}",
            self.path.display(),
            inputs[start.input as usize].display,
            start.row + 1,
        )
    }

    /// Writes a checkpoint taken while the run goes on: requests past `resume` may be on
    /// their way (not drained). `run`: this run's counters, added to the base's;
    /// `aliases`: the alias calls delivered and counted at or past `resume`.
    pub fn store(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &Counters,
        complete: bool,
        input_rows: &[u64],
        aliases: &[AliasAt],
    ) -> Result<(), WriteError> {
        self.store_as(
            resume,
            rejects_len,
            run,
            complete,
            false,
            input_rows,
            aliases,
        )
    }

    /// [`Durable::store`], saying whether the run `drained`: it ended with every request
    /// it handed out acknowledged and counted, so nothing past `resume` was sent but
    /// `aliases`.
    #[allow(clippy::too_many_arguments)] // each is one field of the file
    pub fn store_as(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &Counters,
        complete: bool,
        drained: bool,
        input_rows: &[u64],
        aliases: &[AliasAt],
    ) -> Result<(), WriteError> {
        let mut cp = self.base.clone();
        cp.written_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        cp.resume = resume;
        cp.rejects_len = rejects_len;
        cp.complete = complete;
        cp.drained = drained;
        cp.input_rows = input_rows.to_vec();
        cp.aliases_beyond = aliases.to_vec();
        cp.counters = self.totals(resume, run, input_rows);
        store(&self.path, &cp)
    }

    /// The backfill's counters over every run, this one's (`run`) included, with the
    /// checkpoint at `resume`.
    pub fn totals(&self, resume: Position, run: &Counters, input_rows: &[u64]) -> Counters {
        Counters {
            rows_done: rows_before(resume, input_rows),
            rows_rejected: self.base.counters.rows_rejected + run.rows_rejected,
            calls_delivered: self.base.counters.calls_delivered + run.calls_delivered,
            requests: self.base.counters.requests + run.requests,
            runs: self.base.counters.runs + 1,
        }
    }

    /// Rows of the backfill done before this run: those before its resume position.
    pub fn rows_done_before(&self) -> u64 {
        rows_before(self.base.resume, &self.base.input_rows)
    }
}

/// Rows of the inputs, in order, before `at`.
fn rows_before(at: Position, input_rows: &[u64]) -> u64 {
    input_rows.iter().take(at.input as usize).sum::<u64>() + at.row
}

/// Every input's fingerprint; standard input cannot be resumed, so it has none.
pub fn fingerprints(inputs: &[Arc<InputInfo>]) -> Result<Vec<super::Fingerprint>, CheckpointError> {
    inputs
        .iter()
        .map(|i| {
            if i.path.as_os_str() == STDIN_ARG {
                return Err(CheckpointError::Stdin);
            }
            fingerprint(i).map_err(|source| CheckpointError::Fingerprint {
                input: i.display.clone(),
                source,
            })
        })
        .collect()
}

/// The endpoint as a checkpoint records it: the base URL, or `local`.
pub fn endpoint_of(cfg: &RunConfig) -> String {
    match &cfg.endpoint {
        Endpoint::Local => "local".to_string(),
        Endpoint::Url(u) => u.clone(),
    }
}

/// The seeds of `cp`'s inputs (which list this run's inputs) under its scheme, written
/// into it. A seed already recorded for an input must come out the same: the calls of
/// its rows were sent with it.
fn seeds_of(
    cp: &mut Checkpoint,
    path: &Path,
    inputs: &[Arc<InputInfo>],
    namespace: &str,
) -> Result<Vec<u64>, CheckpointError> {
    let seeds = message_id::seeds(cp.seeds, namespace, inputs).map_err(CheckpointError::Input)?;
    for (f, seed) in cp.inputs.iter_mut().zip(&seeds) {
        let hex = format!("{seed:016x}");
        if let Some(recorded) = &f.seed {
            if *recorded != hex {
                return Err(CheckpointError::Mismatch {
                    path: path.display().to_string(),
                    why: format!(
                        "the messageIds of {} were made with seed {recorded}, this run would use {hex} (the namespace or the input changed)",
                        f.path
                    ),
                });
            }
        }
        f.seed = Some(hex);
    }
    Ok(seeds)
}

/// Hash of the mapping file and of every option that changes the emitted calls.
pub fn config_hash(cfg: &RunConfig, src: &SourceOptions) -> Result<String, CheckpointError> {
    let mapping = std::fs::read(&cfg.mapping_path).map_err(|source| CheckpointError::Mapping {
        path: cfg.mapping_path.clone(),
        source,
    })?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&mapping);
    // sentAt changes the bytes of every call (a placeholder is reserved in each).
    h.update(
        format!(
            "{:?}|{:?}|{:?}|{}",
            src.format, src.csv, cfg.limits, cfg.sent_at
        )
        .as_bytes(),
    );
    Ok(format!("{:016x}", h.digest()))
}
