//! This run's checkpoint: opened (loaded and matched, or started), and written with what
//! every write of it repeats.
//!
//! A checkpoint covers a contiguous prefix of acknowledged requests; the collector
//! ([`super::collect`]) decides when, this says what. The hash of the mapping and of every
//! option that shapes the calls ([`config_hash`]) makes a resume with another mapping or
//! other limits a refusal, never a silent mix.
//!
//! A checkpoint URL (`--checkpoint s3://bucket/run/…`) keeps the checkpoint and the
//! rejects in object storage instead ([`super::object`]): no local locks, a lease on the
//! checkpoint object, and a heartbeat ([`Durable::heartbeat`]).

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
use crate::source::remote::{is_object_url, ObjectRuntime};
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
    /// The checkpoint object and its lease, for state in object storage.
    #[cfg(feature = "object-store")]
    remote: Option<super::object::ObjectState>,
}

/// `p` as a checkpoint records it: an object URL as given, a file as an absolute path
/// (so that a resume from another directory finds the same file).
fn recorded(p: &Path) -> String {
    let text = p.to_string_lossy();
    match is_object_url(&text) {
        true => source::remote::redact::redact_url(&text),
        false => source::absolute(p).display().to_string(),
    }
}

/// The same rejects file or prefix.
fn same_rejects(a: &Path, b: &Path) -> bool {
    let (ta, tb) = (a.to_string_lossy(), b.to_string_lossy());
    match is_object_url(&ta) || is_object_url(&tb) {
        true => source::remote::redact::redact_url(&ta) == source::remote::redact::redact_url(&tb),
        false => FileId::of(a) == FileId::of(b),
    }
}

impl Durable {
    /// The run's checkpoint: `None` when it keeps none. A matching checkpoint is loaded
    /// (it says where to resume); a new one is written before anything is sent, so a
    /// crash at any point leaves one. Refuses a checkpoint that does not fit this run,
    /// and a checkpoint or rejects file another run holds. Notes on inputs that changed
    /// where they may go to stderr.
    ///
    /// A shard's checkpoint records the shard and the plan its cuts came from, and a new
    /// one starts at `first_start()` (the shard's start, scanned for only then).
    ///
    /// A checkpoint URL is opened on `objects` and its lease taken (waiting up to
    /// `lease_ttl` to see whether its holder is alive).
    pub fn open(
        cfg: &RunConfig,
        src: &SourceOptions,
        inputs: &[Arc<InputInfo>],
        backfill: &Backfill,
        objects: Option<&Arc<ObjectRuntime>>,
        first_start: impl FnOnce() -> Result<Position, CheckpointError>,
    ) -> Result<Option<Durable>, CheckpointError> {
        let Some(path) = cfg.checkpoint.clone() else {
            return Ok(None);
        };
        let url = path.to_string_lossy().into_owned();
        let is_remote = is_object_url(&url);
        let rejects_remote = is_object_url(&cfg.rejects_path.to_string_lossy());
        if rejects_remote && !is_remote {
            return Err(CheckpointError::Remote {
                path: path.display().to_string(),
                why: "--rejects is in object storage but the checkpoint is not: keep both in object storage (give --checkpoint a URL), or both on disk".into(),
            });
        }
        #[cfg(feature = "object-store")]
        let remote = match (is_remote, objects) {
            (true, Some(rt)) => Some(super::object::ObjectState::open(rt, &url, cfg.lease_ttl)?),
            _ => None,
        };
        if is_remote && (cfg!(not(feature = "object-store")) || objects.is_none()) {
            return Err(CheckpointError::Remote {
                path: source::remote::redact::redact_url(&url),
                why: "this cdp-backfill was built without the object-store feature".into(),
            });
        }
        let checkpoint_lock = match is_remote {
            true => None,
            false => lock_checkpoint(&path)?,
        };
        // Messages show a URL redacted.
        let path = match is_remote {
            true => PathBuf::from(source::remote::redact::redact_url(&url)),
            false => path,
        };
        let prints = fingerprints(inputs)?;
        let endpoint = endpoint_of(cfg);
        let config_hash = config_hash(cfg, src)?;
        let shard = cfg.shard.map(|s| super::ShardRecord {
            k: s.k,
            n: s.n,
            plan_hash: plan_hash(s.n, &prints),
        });
        #[cfg(feature = "object-store")]
        let existing = match &remote {
            // The lease is taken even to start over: its holder may be alive.
            Some(r) => r.load_and_acquire()?.filter(|_| !cfg.restart),
            None if cfg.restart => None,
            None => load(&path)?,
        };
        #[cfg(not(feature = "object-store"))]
        let existing = if cfg.restart { None } else { load(&path)? };
        if let Some(mut cp) = existing {
            if cp.shard != shard {
                let what = |r: &Option<super::ShardRecord>| match r {
                    None => "an unsharded run".to_string(),
                    Some(r) => format!("shard {}/{} of inputs with plan {}", r.k, r.n, r.plan_hash),
                };
                return Err(CheckpointError::Mismatch {
                    path: path.display().to_string(),
                    why: format!(
                        "it was written for {}, this run is {} (a sharded backfill's shards must all see the same inputs: the same listing, sizes and contents)",
                        what(&cp.shard),
                        what(&shard)
                    ),
                });
            }
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
            let recorded_at = Path::new(&cp.rejects_file);
            if !same_rejects(recorded_at, &cfg.rejects_path) {
                if cp.rejects_len > 0 {
                    return Err(CheckpointError::RejectsElsewhere {
                        checkpoint: path,
                        len: cp.rejects_len,
                        recorded: cp.rejects_file,
                        given: cfg.rejects_path.clone(),
                    });
                }
                // Nothing rejected yet: the rejects go where this run says.
                cp.rejects_file = recorded(&cfg.rejects_path);
            }
            let rejects_lock = match rejects_remote {
                true => None,
                false => lock_rejects(&cfg.rejects_path, cp.rejects_len == 0)?,
            };
            return Ok(Some(Durable {
                _locks: [checkpoint_lock, rejects_lock],
                path,
                base: cp,
                resumed: true,
                #[cfg(feature = "object-store")]
                remote,
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
            rejects_file: recorded(&cfg.rejects_path),
            rejects_len: 0,
            input_rows: vec![0; inputs.len()],
            counters: Default::default(),
            shard,
            start: Position::default(),
            lease: None,
            aliases_beyond: Vec::new(),
        };
        let rejects_lock = match rejects_remote {
            true => None,
            false => lock_rejects(&cfg.rejects_path, true)?,
        };
        base.start = first_start()?;
        base.resume = base.start;
        let seeds = seeds_of(&mut base, &path, inputs, &backfill.namespace)?;
        // Written before anything is sent, so a crash at any point leaves a checkpoint.
        let d = Durable {
            _locks: [checkpoint_lock, rejects_lock],
            path,
            base,
            resumed: false,
            #[cfg(feature = "object-store")]
            remote,
            seeds,
        };
        d.store(
            d.base.start,
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
        let cp = self.next(
            resume,
            rejects_len,
            run,
            complete,
            false,
            input_rows,
            aliases,
        );
        self.write(&cp, false)
    }

    /// The run's last checkpoint, as [`Durable::store`] but saying whether the run
    /// `drained`: it ended with every request it handed out acknowledged and counted, so
    /// nothing past `resume` was sent but `aliases`. In object storage it also releases
    /// the lease, so that the next run takes over at once.
    #[allow(clippy::too_many_arguments)] // each is one field of the file
    pub fn finish(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &Counters,
        complete: bool,
        drained: bool,
        input_rows: &[u64],
        aliases: &[AliasAt],
    ) -> Result<(), WriteError> {
        let cp = self.next(
            resume,
            rejects_len,
            run,
            complete,
            drained,
            input_rows,
            aliases,
        );
        self.write(&cp, true)
    }

    /// How often the checkpoint must be written even when nothing moved: a checkpoint
    /// in object storage is the lease, and an unchanged one looks dead after its ttl.
    pub fn heartbeat(&self) -> Option<std::time::Duration> {
        #[cfg(feature = "object-store")]
        if let Some(r) = &self.remote {
            return Some(r.ttl / 3);
        }
        None
    }

    /// The rejects of a run whose state is in object storage: numbered parts under
    /// `url`, cut back to `keep` bytes. `None` for a checkpoint on disk.
    pub fn remote_rejects(
        &self,
        url: &Path,
        keep: u64,
    ) -> Option<Result<super::rejects::RejectsFile, CheckpointError>> {
        #[cfg(feature = "object-store")]
        if let Some(r) = &self.remote {
            return Some(
                r.rejects(&url.to_string_lossy(), keep)
                    .map(super::rejects::RejectsFile::parts),
            );
        }
        let _ = (url, keep);
        None
    }

    fn write(&self, cp: &Checkpoint, last: bool) -> Result<(), WriteError> {
        #[cfg(feature = "object-store")]
        if let Some(r) = &self.remote {
            return r.store(cp, last);
        }
        let _ = last;
        store(&self.path, cp)
    }

    #[allow(clippy::too_many_arguments)] // a checkpoint's fields
    fn next(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &Counters,
        complete: bool,
        drained: bool,
        input_rows: &[u64],
        aliases: &[AliasAt],
    ) -> Checkpoint {
        let mut cp = self.base.clone();
        cp.written_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        cp.resume = resume;
        cp.rejects_len = rejects_len;
        cp.complete = complete;
        cp.drained = drained;
        cp.input_rows = input_rows.to_vec();
        cp.aliases_beyond = aliases.to_vec();
        cp.counters = self.totals(resume, run, input_rows);
        cp
    }

    /// The backfill's counters over every run, this one's (`run`) included, with the
    /// checkpoint at `resume`.
    pub fn totals(&self, resume: Position, run: &Counters, input_rows: &[u64]) -> Counters {
        Counters {
            rows_done: rows_between(self.base.start, resume, input_rows),
            rows_rejected: self.base.counters.rows_rejected + run.rows_rejected,
            calls_delivered: self.base.counters.calls_delivered + run.calls_delivered,
            requests: self.base.counters.requests + run.requests,
            runs: self.base.counters.runs + 1,
        }
    }

    /// Rows of the backfill done before this run: those before its resume position
    /// (from where a shard's reading began).
    pub fn rows_done_before(&self) -> u64 {
        rows_between(self.base.start, self.base.resume, &self.base.input_rows)
    }
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

/// Rows from `start` (included) to `resume` (excluded), given each input's row count
/// once it was read to the end.
fn rows_between(start: Position, resume: Position, input_rows: &[u64]) -> u64 {
    if resume.input <= start.input {
        return resume.row.saturating_sub(start.row);
    }
    let rows = |i: u32| input_rows.get(i as usize).copied().unwrap_or(0);
    let between: u64 = (start.input + 1..resume.input).map(rows).sum();
    rows(start.input).saturating_sub(start.row) + between + resume.row
}

/// The plan hash of a sharded run: N and every input's identity, in order.
fn plan_hash(n: u32, prints: &[super::Fingerprint]) -> String {
    let ids: Vec<String> = prints
        .iter()
        .map(|p| {
            format!(
                "{}|{}|{}|{}|{}",
                p.path,
                p.size,
                p.sample_hash,
                p.e_tag.as_deref().unwrap_or(""),
                p.version.as_deref().unwrap_or("")
            )
        })
        .collect();
    crate::source::shard::plan_hash(n, &ids)
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
