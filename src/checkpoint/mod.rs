//! The checkpoint: a durable watermark of acknowledged work, and the stage that keeps it.
//!
//! This file is the format: what the file holds, how it is loaded, checked against a run
//! and stored. Around it: [`window`] bounds what a crash can replay; [`durable`] is this
//! run's checkpoint (opened, matched, written, with [`durable::config_hash`]);
//! [`rejects`] is the rejects file the checkpoint counts, and the locks that keep a second
//! run off both; [`acks`] folds acknowledgements that arrive in any order into the
//! contiguous prefix a checkpoint may cover; [`collect`] is the stage at the end of the
//! pipeline that does all of this as acknowledgements arrive.
//!
//! It records where to resume (the position after the longest prefix of requests the
//! server acknowledged), how long the rejects file was at that point, fingerprints of the
//! inputs and a hash of everything that shapes the emitted calls, so a resume can refuse
//! when the input or the mapping changed. Writes are atomic and durable: a temporary file
//! in the same directory, fsync, rename over the old one, fsync the directory. A crash at
//! any moment leaves either the old or the new checkpoint, never a torn one.

pub mod acks;
pub mod collect;
pub mod durable;
#[cfg(feature = "object-store")]
pub mod object;
pub mod rejects;
pub mod state;
pub mod window;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::map::message_id::SeedScheme;
use crate::pack::AliasAt;
use crate::source::{InputInfo, Position};

/// Bump when the format changes; an unknown version is refused, never guessed at.
/// Version 2 records each input's content identity and messageId seed, and the seed
/// scheme; version 1 files (no seeds: ids from the path as given) are still read and
/// resume with the ids they started with ([`SeedScheme::Path`]).
pub const VERSION: u32 = 2;
/// The oldest version this build still reads.
pub const OLDEST_VERSION: u32 = 1;
/// How much of an input's head and tail the fingerprint hashes.
const SAMPLE: u64 = 1 << 20;

/// What identifies an input cheaply, even for a terabyte file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u128,
    /// xxh3-64 of the first and last MiB (the whole file when smaller), hex; empty for
    /// an object, whose ETag says the same.
    pub sample_hash: String,
    /// An object's ETag, as listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// An object's version, when the store keeps versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The content identity ([`crate::source::identity`]): what finds the input again
    /// whatever its path. Absent in version 1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The messageId seed its calls were (or will be) made with, 16 hex digits. Absent
    /// in version 1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

impl Fingerprint {
    /// Whether `self` (recorded) and `now` are the same input: by content identity when
    /// both have one and the ids do not depend on the path, else by path.
    fn same_input(&self, now: &Fingerprint, scheme: SeedScheme) -> bool {
        match (&self.identity, &now.identity, scheme) {
            (Some(a), Some(b), SeedScheme::Content) => a == b,
            _ => self.path == now.path,
        }
    }

    /// Whether the bytes are as they were: size, samples, modification time, an object's
    /// ETag and version (and the identity, when both have one).
    fn unchanged(&self, now: &Fingerprint) -> bool {
        self.size == now.size
            && self.sample_hash == now.sample_hash
            && self.modified_ns == now.modified_ns
            && match (&self.identity, &now.identity) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
            // An object's ETag and version, as listed.
            && self.e_tag == now.e_tag
            && self.version == now.version
    }
}

/// What a backfill is, beyond its inputs: how it is named in the state directory and
/// found again ([`state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Backfill {
    /// Its name: the directory of its files in the state directory
    /// (`<mapping stem>-<8 hex>`, or `<plan stem>.<step>` for a plan's step).
    pub name: String,
    /// The mapping file's stem (or the plan's step), which a resume must share.
    pub mapping: String,
    /// The mapping's namespace.
    pub namespace: String,
}

/// Cumulative counters over every run of this backfill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rows_done: u64,
    pub rows_rejected: u64,
    pub calls_delivered: u64,
    pub requests: u64,
    pub runs: u64,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub tool_version: String,
    /// RFC 3339, UTC.
    pub written_at: String,
    /// The base URL (or `local`); never the key.
    pub endpoint: String,
    /// How the inputs' messageId seeds are made: `content` since version 2, `path` for
    /// a backfill started by version 1 (absent in those files).
    #[serde(default)]
    pub seeds: SeedScheme,
    /// The backfill's name and what finds it again in the state directory; absent for
    /// version 1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
    /// xxh3-64 of the mapping file and of the options that change the emitted calls.
    pub config_hash: String,
    pub inputs: Vec<Fingerprint>,
    /// Everything before this position is delivered or rejected.
    pub resume: Position,
    /// True once every input is done.
    pub complete: bool,
    /// Written as its run ended with every request it handed out acknowledged and
    /// counted: nothing past `resume` reached the server. Otherwise (a crash, a kill, a
    /// failed request, a drain timeout) requests past it may have, with rows of inputs
    /// not reached yet, so those inputs may not change before a resume either.
    #[serde(default)]
    pub drained: bool,
    pub rejects_file: String,
    /// Length of the rejects file that matches `resume`; a resume truncates to it.
    pub rejects_len: u64,
    /// Rows of each input once it has been read to the end (0 until then).
    pub input_rows: Vec<u64>,
    pub counters: Counters,
    /// Set for one shard of a sharded backfill (`--shard K/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
    /// Where this checkpoint's reading began (a shard's start; the beginning otherwise).
    #[serde(default)]
    pub start: Position,
    /// Alias calls delivered (and counted) at or past `resume`: each goes in a request
    /// of its own, which may be acknowledged while a batch body holding older rows is
    /// still open and holds the watermark back. A resume reads their rows again and
    /// does not send these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases_beyond: Vec<AliasAt>,
    /// Who holds a checkpoint kept in object storage (see `object`); `None` on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRecord>,
}

/// Who holds a checkpoint object, and whether they let go of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// `host/pid` of the holder (a pod's name in Kubernetes).
    pub owner: String,
    /// Taken over this many times, plus one.
    pub generation: u64,
    /// Written by a run that ended: the next one takes over at once.
    pub released: bool,
}

/// Which shard a checkpoint is, and of what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub k: u32,
    pub n: u32,
    /// [`crate::source::shard::plan_hash`] of the inputs every shard must agree on.
    pub plan_hash: String,
}

/// A file the run writes that the system would not write: which file, where, and the
/// system's own error (its kind kept: a full disk is `StorageFull`, a file over
/// `RLIMIT_FSIZE` is `FileTooLarge`).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {what} {}: {source}", path.display())]
pub struct WriteError {
    /// What the file is to the run: `checkpoint`, `--rejects`, `--output`, ...
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Why a checkpoint (or the rejects file it counts) cannot be used or kept. Each says the
/// way out.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt or truncated ({why}). It was not used: nothing was sent. Inspect it, or start over with --restart.")]
    Corrupt { path: String, why: String },
    #[error("checkpoint {path} has version {found}, this cdp-backfill understands versions {OLDEST_VERSION} to {VERSION}. Use the cdp-backfill that wrote it, or start over with --restart.")]
    Version { path: String, found: u64 },
    #[error("checkpoint {path} does not match this run: {why}. Resuming would lose or duplicate rows. Run the same command as before, or start over with --restart (or choose another --checkpoint).")]
    Mismatch { path: String, why: String },
    /// Written while the run went on, or as it ended.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The first checkpoint, written before anything is sent: a path that cannot be
    /// written is a usage error, found before any work.
    #[error(transparent)]
    First(WriteError),
    /// Another run holds the lock on `path`.
    #[error("another run is using {} ({what}) now: wait for it to end. Two runs of one backfill at once would send everything twice.", path.display())]
    Busy { path: PathBuf, what: &'static str },
    #[error("standard input cannot be resumed: pass --no-checkpoint, or save the data to a file")]
    Stdin,
    /// A checkpoint in object storage whose holder is alive: another process runs it.
    #[error("{path} is being written by {owner} (lease generation {generation}): this backfill (or shard) is running elsewhere now, and two processes on it would send everything twice. Wait for it to end; a process that died is taken over once its checkpoint has stayed unchanged for the lease time (--lease-ttl)")]
    Held {
        path: String,
        owner: String,
        generation: u64,
    },
    /// The checkpoint is an object URL, in a build without object storage or in a
    /// combination that cannot work.
    #[error("--checkpoint {path}: {why}")]
    Remote { path: String, why: String },
    /// A shard's start could not be found (its inputs could not be read).
    #[error("cannot find where this shard starts: {0}")]
    Shard(String),
    /// An input could not be read to find its content identity.
    #[error(transparent)]
    Input(crate::source::SourceError),
    #[error("cannot read {input} to fingerprint it: {source}")]
    Fingerprint {
        input: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read mapping file {}: {source}", path.display())]
    Mapping {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint counts rejects in another file than this run's `--rejects`.
    #[error("{} counts {len} bytes of this backfill's rejects in {recorded}, but this run names --rejects {}: resuming would cut that file, and leave the earlier rejects elsewhere. Resume with --rejects {recorded} (restore it if it is gone), or start over with --restart.", checkpoint.display(), given.display())]
    RejectsElsewhere {
        checkpoint: PathBuf,
        len: u64,
        recorded: String,
        given: PathBuf,
    },
    #[error("the rejects file {} is missing, and the checkpoint counts {len} bytes of rejects in it. Restore it, or start over with --restart.", path.display())]
    RejectsMissing { path: PathBuf, len: u64 },
    #[error("the rejects file {} is shorter ({found} bytes) than the checkpoint recorded ({len} bytes): it was truncated or replaced. Restore it, or start over with --restart.", path.display())]
    RejectsShorter { path: PathBuf, found: u64, len: u64 },
    #[error("--rejects {}: cannot open it for writing: {source}. Create its directory, or name another path.", path.display())]
    RejectsUnopenable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--rejects {} is a directory: name a file (in it, or anywhere else).", path.display())]
    RejectsIsDirectory { path: PathBuf },
    #[error("--rejects {} is not a regular file: a checkpoint counts the rejects file's length and syncs it to disk, which only a regular file allows (not a pipe, a terminal or a device). Name a file, or add --no-checkpoint (or --dry-run) to send rejects there.", path.display())]
    RejectsNotAFile { path: PathBuf },
    /// A run that starts its rejects file afresh (a new backfill, `--restart`, a run
    /// without a checkpoint) would empty one that another backfill's checkpoint counts.
    #[error("{} holds {len} bytes of rejects that the backfill recorded in {} counts, and this run would start that file afresh. Give this run another --rejects path (or leave --rejects out: each backfill keeps its own in the state directory).", rejects.display(), checkpoint.display())]
    CountedElsewhere {
        rejects: PathBuf,
        checkpoint: PathBuf,
        len: u64,
    },
    /// `--restart` named a checkpoint that records another backfill.
    #[error("--restart would replace {}, which records another backfill (other inputs: {rows} rows done, {rejected} rejected rows in {}). Give this backfill its own --checkpoint (or leave --checkpoint out: each backfill keeps its own in the state directory); to discard that backfill, delete its files yourself.", checkpoint.display(), rejects.display())]
    RestartOther {
        checkpoint: PathBuf,
        rejects: PathBuf,
        rows: u64,
        rejected: u64,
    },
    /// The state directory (or a backfill's directory in it) cannot be made or changed.
    #[error("state directory {}: {source}. Create it, or name another with --state.", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CheckpointError {
    /// True when the run stopped before it read or sent anything because of how it was
    /// started (its flags, its files, another run): a usage error. Reading an input or
    /// writing a file that fails is not.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            CheckpointError::Fingerprint { .. }
                | CheckpointError::Input(_)
                | CheckpointError::Mapping { .. }
                | CheckpointError::Shard(_)
                | CheckpointError::Write(_)
        )
    }
}

/// Fingerprints an input: a file by its size, modification time and a hash of its ends;
/// an object by its identity as listed (size, modification time, ETag and version).
pub fn fingerprint(input: &InputInfo) -> std::io::Result<Fingerprint> {
    if let Some(obj) = &input.object {
        let listed = obj.identity();
        let identity = input
            .identity()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map(|id| id.to_string());
        return Ok(Fingerprint {
            path: input.display.clone(),
            size: listed.size,
            modified_ns: listed.modified_ns,
            sample_hash: String::new(),
            e_tag: listed.e_tag,
            version: listed.version,
            identity,
            seed: None,
        });
    }
    let mut f = File::open(&input.path)?;
    let meta = f.metadata()?;
    let size = meta.len();
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; SAMPLE.min(size) as usize];
    f.read_exact(&mut buf)?;
    h.update(&buf);
    if size > SAMPLE {
        let tail = SAMPLE.min(size - SAMPLE);
        f.seek(SeekFrom::Start(size - tail))?;
        buf.resize(tail as usize, 0);
        f.read_exact(&mut buf)?;
        h.update(&buf);
    }
    let identity = input
        .identity()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map(|id| id.to_string());
    Ok(Fingerprint {
        path: input.display.clone(),
        size,
        modified_ns,
        sample_hash: format!("{:016x}", h.digest()),
        e_tag: None,
        version: None,
        identity,
        seed: None,
    })
}

/// Reads a checkpoint. `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    parse(&text, &path.display().to_string()).map(Some)
}

/// A checkpoint's bytes, checked (`shown`: where they came from, for messages).
pub fn parse(text: &[u8], shown: &str) -> Result<Checkpoint, CheckpointError> {
    let path = shown;
    let corrupt = |why: String| CheckpointError::Corrupt {
        path: path.to_string(),
        why,
    };
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
    let version = v
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("no version field".into()))?;
    if !(OLDEST_VERSION as u64..=VERSION as u64).contains(&version) {
        return Err(CheckpointError::Version {
            path: path.to_string(),
            found: version,
        });
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// Checks that `cp` was written for this very run, and takes in what may change between
/// runs: the inputs the backfill has not started yet (index past the one being read, or
/// that one before its first row) may be changed, added or removed, since none of their
/// rows were sent; `cp` then lists the inputs as they are now. Returns a note for each
/// such change. The inputs already read, or being read, must be as they were.
pub fn check_matches(
    cp: &mut Checkpoint,
    path: &Path,
    endpoint: &str,
    config_hash: &str,
    inputs: &[Fingerprint],
) -> Result<Vec<String>, CheckpointError> {
    let mismatch = |why: String| CheckpointError::Mismatch {
        path: path.display().to_string(),
        why,
    };
    if cp.config_hash != config_hash {
        return Err(mismatch(
            "the mapping file or an option that shapes the calls (CSV dialect, size limits, format) changed".into(),
        ));
    }
    if cp.endpoint != endpoint {
        return Err(mismatch(format!(
            "it was written for endpoint {}, this run sends to {endpoint}",
            cp.endpoint
        )));
    }
    let at = cp.resume.input as usize;
    let begun = cp.resume.row > 0 || cp.resume.offset > 0;
    // Inputs with rows already sent: done, or being read; after a run that did not end
    // drained, possibly any of them.
    let fixed = if cp.complete || !cp.drained {
        cp.inputs.len()
    } else {
        (at + begun as usize).min(cp.inputs.len())
    };
    let sent = |j: usize| {
        if j == at && !cp.complete {
            cp.resume.row
        } else {
            cp.input_rows.get(j).copied().unwrap_or(0)
        }
    };
    let scheme = cp.seeds;
    let mut notes = Vec::new();
    for (j, old) in cp.inputs.iter().enumerate().take(fixed) {
        let Some(new) = inputs.get(j) else {
            return Err(mismatch(format!(
                "input {} ({} of its rows already sent) is no longer among this run's inputs",
                old.path,
                sent(j)
            )));
        };
        if !old.same_input(new, scheme) && old.path != new.path {
            let why = match scheme {
                SeedScheme::Content => format!(
                    "input {} ({} of its rows already sent) is now {}, whose content is not the same",
                    old.path,
                    sent(j),
                    new.path
                ),
                // Version 1 backfills seeded their ids with the path as typed.
                SeedScheme::Path => format!(
                    "input {} ({} of its rows already sent) is now {}: this backfill was started by an older cdp-backfill, whose messageIds depend on the path as typed, so name it exactly as before",
                    old.path,
                    sent(j),
                    new.path
                ),
            };
            return Err(mismatch(why));
        }
        if !old.unchanged(new) {
            return Err(mismatch(format!(
                "input {} changed since the checkpoint was written (size, content, ETag or modification time), and {} of its rows were already sent",
                old.path,
                sent(j)
            )));
        }
        if old.path != new.path {
            notes.push(format!(
                "{} is now named {} (same content): it is resumed with the messageIds it had",
                old.path, new.path
            ));
        }
    }
    if cp.complete && inputs.len() != cp.inputs.len() {
        return Err(mismatch(format!(
            "it lists {} inputs, this run has {}",
            cp.inputs.len(),
            inputs.len()
        )));
    }
    let rest = &inputs[fixed.min(inputs.len())..];
    for new in rest {
        // By content first, then by path (a file edited in place keeps its name).
        let old = &cp.inputs[fixed..];
        let found = old
            .iter()
            .find(|o| o.same_input(new, scheme))
            .or_else(|| old.iter().find(|o| o.path == new.path));
        match found {
            None => notes.push(format!("{} is new since the checkpoint: it will be read", new.path)),
            Some(o) if !o.unchanged(new) => notes.push(format!(
                "{} changed since the checkpoint, before any of its rows were sent: it is read as it is now",
                new.path
            )),
            Some(_) => {}
        }
    }
    for old in &cp.inputs[fixed..] {
        if !rest
            .iter()
            .any(|n| old.same_input(n, scheme) || old.path == n.path)
        {
            notes.push(format!(
                "{} is no longer among the inputs; none of its rows had been sent",
                old.path
            ));
        }
    }
    // The inputs as they are now (their order past `fixed` may differ without any note);
    // those with rows sent keep the seed their calls were made with.
    let recorded: Vec<Option<String>> = cp.inputs.iter().map(|f| f.seed.clone()).collect();
    cp.inputs = inputs.to_vec();
    for (f, seed) in cp.inputs.iter_mut().zip(recorded).take(fixed) {
        f.seed = seed;
    }
    cp.input_rows.resize(fixed, 0);
    cp.input_rows.resize(inputs.len(), 0);
    Ok(notes)
}

/// Writes `cp` atomically and durably.
pub fn store(path: &Path, cp: &Checkpoint) -> Result<(), WriteError> {
    let err = |source| WriteError {
        what: "checkpoint",
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut bytes = serde_json::to_vec_pretty(cp).map_err(|e| err(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How far through the inputs `cp` is, 0.0 to 1.0, by bytes. `None` when the input being
/// read is Parquet or compressed: its position is a row group or a decompressed offset,
/// which says nothing against the file's size.
pub fn fraction_done(cp: &Checkpoint) -> Option<f64> {
    if cp.complete {
        return Some(1.0);
    }
    let total: u64 = cp.inputs.iter().map(|i| i.size).sum();
    if total == 0 {
        return Some(0.0);
    }
    let i = cp.resume.input as usize;
    let before: u64 = cp.inputs.iter().take(i).map(|f| f.size).sum();
    let within = match cp.inputs.get(i) {
        _ if cp.resume.row == 0 => 0,
        Some(f) if positions_are_bytes(&f.path) && cp.resume.offset <= f.size => cp.resume.offset,
        Some(_) => return None,
        None => 0,
    };
    Some((before + within) as f64 / total as f64)
}

/// A plain CSV or NDJSON file, whose resume offset is a byte of the file itself.
fn positions_are_bytes(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    ![".parquet", ".gz", ".zst", ".zstd"]
        .iter()
        .any(|ext| p.ends_with(ext))
}

/// Who holds an unfinished checkpoint kept in object storage: `, held by host/pid
/// (generation 2)`, or `, released` when its last run ended; empty on disk.
fn lease_note(cp: &Checkpoint) -> String {
    match &cp.lease {
        Some(l) if l.released => format!(", released by {} (generation {})", l.owner, l.generation),
        Some(l) => format!(
            ", held by {} (generation {}) unless it stopped writing",
            l.owner, l.generation
        ),
        None => String::new(),
    }
}

/// `cdp-backfill status`: a human description of a checkpoint.
pub fn describe(cp: &Checkpoint) -> String {
    let mut s = String::new();
    let done = match fraction_done(cp) {
        Some(f) => format!("{:.1}%", f * 100.0),
        None => format!(
            "{} of {} inputs, and part of the next (Parquet or compressed: not measured in bytes)",
            cp.resume.input,
            cp.inputs.len()
        ),
    };
    s.push_str(&format!(
        "checkpoint written {} by cdp-backfill {}\n",
        cp.written_at, cp.tool_version
    ));
    s.push_str(&format!("  endpoint         {}\n", cp.endpoint));
    s.push_str(&format!("  done             {done}\n"));
    s.push_str(&format!("  rows done        {}\n", cp.counters.rows_done));
    s.push_str(&format!(
        "  rows rejected    {}  ({}, {} bytes)\n",
        cp.counters.rows_rejected, cp.rejects_file, cp.rejects_len
    ));
    s.push_str(&format!(
        "  calls delivered  {}\n",
        cp.counters.calls_delivered
    ));
    s.push_str(&format!("  requests         {}\n", cp.counters.requests));
    s.push_str(&format!("  runs             {}\n", cp.counters.runs));
    if cp.complete {
        s.push_str(
            "  a resume would do nothing: every input is done (use --restart to send again)\n",
        );
    } else {
        let input = cp
            .inputs
            .get(cp.resume.input as usize)
            .map_or("?", |f| f.path.as_str());
        let byte = if positions_are_bytes(input) {
            format!(" (byte {})", cp.resume.offset)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  a resume would continue {input} at row {}{byte}, input {} of {}\n",
            cp.resume.row + 1,
            cp.resume.input + 1,
            cp.inputs.len()
        ));
        if cp.lease.is_some() {
            s.push_str(&format!("  lease           {}\n", &lease_note(cp)[2..]));
        }
    }
    s
}

/// The checkpoints of a sharded backfill found at `path`: the `shard-K-of-N.checkpoint.json`
/// files in a directory, or the `NAME.shard-K-of-N.EXT` files beside a checkpoint path,
/// sorted by shard. Empty when there are none.
pub fn find_shards(path: &Path) -> Result<Vec<(PathBuf, Checkpoint)>, CheckpointError> {
    let is_shard = shard_names(path.is_dir(), &path.to_string_lossy());
    let dir = match path.is_dir() {
        true => path.to_path_buf(),
        false => match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_shard(&name) {
            let p = e.path();
            if let Some(cp) = load(&p)? {
                found.push((p, cp));
            }
        }
    }
    found.sort_by_key(|(_, cp)| cp.shard.as_ref().map_or(0, |s| s.k));
    Ok(found)
}

/// Which names in the same directory (or under the same prefix) are the shard
/// checkpoints of `path` (`cli::shard_path`'s names): in a directory (`dir`),
/// `shard-K-of-N.checkpoint.json`; beside a checkpoint file `NAME.EXT`,
/// `NAME.shard-K-of-N.EXT`.
pub fn shard_names(dir: bool, path: &str) -> impl Fn(&str) -> bool {
    let (prefix, suffix) = match dir {
        true => ("shard-".to_string(), ".checkpoint.json".to_string()),
        false => {
            let name = path.rsplit('/').next().unwrap_or(path);
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
            (format!("{stem}.shard-"), format!(".{ext}"))
        }
    };
    move |name: &str| {
        name.len() > prefix.len() + suffix.len()
            && name.starts_with(&prefix)
            && name.ends_with(&suffix)
            && name.contains("-of-")
    }
}

/// `cdp-backfill status` of a sharded backfill: each shard's line, the totals, and what
/// does not add up (missing shards, shards of another N or another plan).
pub fn describe_shards(shards: &[(PathBuf, Checkpoint)]) -> String {
    let mut s = String::new();
    let n = shards
        .iter()
        .filter_map(|(_, c)| c.shard.as_ref().map(|r| r.n))
        .max()
        .unwrap_or(0);
    let mut total = Counters::default();
    let mut rejects = 0u64;
    s.push_str(&format!(
        "sharded backfill: {} of {n} shards have a checkpoint\n",
        shards.len()
    ));
    for (p, cp) in shards {
        let k = cp.shard.as_ref().map_or(0, |r| r.k);
        let state = if cp.complete {
            "done".to_string()
        } else {
            format!(
                "at {} row {}{}",
                cp.inputs
                    .get(cp.resume.input as usize)
                    .map_or("?", |f| f.path.as_str()),
                cp.resume.row + 1,
                lease_note(cp)
            )
        };
        s.push_str(&format!(
            "  shard {k:>3}/{n}  {state}; rows done {}, rejected {}, calls delivered {}, written {} ({})\n",
            cp.counters.rows_done,
            cp.counters.rows_rejected,
            cp.counters.calls_delivered,
            cp.written_at,
            p.display()
        ));
        total.rows_done += cp.counters.rows_done;
        total.rows_rejected += cp.counters.rows_rejected;
        total.calls_delivered += cp.counters.calls_delivered;
        total.requests += cp.counters.requests;
        rejects += cp.rejects_len;
    }
    s.push_str(&format!("  rows done        {}\n", total.rows_done));
    s.push_str(&format!(
        "  rows rejected    {}  ({rejects} bytes of rejects)\n",
        total.rows_rejected
    ));
    s.push_str(&format!("  calls delivered  {}\n", total.calls_delivered));
    s.push_str(&format!("  requests         {}\n", total.requests));
    let done = shards.iter().filter(|(_, c)| c.complete).count();
    let missing: Vec<String> = (0..n)
        .filter(|k| {
            !shards
                .iter()
                .any(|(_, c)| c.shard.as_ref().is_some_and(|r| r.k == *k))
        })
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        s.push_str(&format!(
            "  shards not started (no checkpoint): {}\n",
            missing.join(", ")
        ));
    }
    let plans: std::collections::BTreeSet<(u32, &str)> = shards
        .iter()
        .filter_map(|(_, c)| c.shard.as_ref().map(|r| (r.n, r.plan_hash.as_str())))
        .collect();
    if plans.len() > 1 {
        s.push_str("  warning: the shards were started with different N or different inputs; their ranges may overlap or leave gaps\n");
    }
    s.push_str(&match (done, missing.is_empty()) {
        (d, true) if d == shards.len() => "  every shard is done\n".to_string(),
        (d, _) => format!("  {d} of {n} shards done\n"),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            tool_version: "0.1.0".into(),
            written_at: "2026-11-28T12:00:00Z".into(),
            endpoint: "local".into(),
            seeds: SeedScheme::Path,
            backfill: None,
            config_hash: "abc".into(),
            inputs: vec![Fingerprint {
                path: "a.csv".into(),
                size: 100,
                modified_ns: 5,
                sample_hash: "00".into(),
                e_tag: None,
                version: None,
                identity: None,
                seed: None,
            }],
            resume: Position {
                input: 0,
                row: 10,
                offset: 50,
            },
            complete: false,
            drained: true,
            rejects_file: "r.ndjson".into(),
            rejects_len: 0,
            input_rows: vec![0],
            counters: Counters::default(),
            shard: None,
            start: Position::default(),
            lease: None,
            aliases_beyond: vec![AliasAt {
                input: 0,
                row: 12,
                nth: 0,
            }],
        }
    }

    #[test]
    fn store_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        store(&p, &sample()).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sample()));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!((fraction_done(&sample()).unwrap() - 0.5).abs() < 1e-9);
    }

    /// A Parquet or compressed input's position is not a byte of the file: no percentage
    /// (it showed 0.0% part way through a Parquet file, and 100% with a gzip file's rows
    /// still to go), and no byte.
    #[test]
    fn parquet_and_compressed_positions_are_not_read_as_bytes_of_the_file() {
        for path in ["a.parquet", "a.csv.gz", "b.ndjson.zst"] {
            let mut cp = sample();
            cp.inputs[0].path = path.into();
            cp.resume.offset = 500;
            assert_eq!(fraction_done(&cp), None, "{path}");
            let text = describe(&cp);
            assert!(text.contains("not measured in bytes"), "{text}");
            assert!(
                text.contains(&format!("continue {path} at row 11, input 1 of 1")),
                "{text}"
            );
            // Not started yet: nothing of it is done, whatever it is.
            cp.resume.row = 0;
            cp.resume.offset = 0;
            assert_eq!(fraction_done(&cp), Some(0.0));
        }
        assert!(describe(&sample()).contains("done             50.0%"));
        assert!(describe(&sample()).contains("at row 11 (byte 50)"));
    }

    fn print(path: &str, size: u64) -> Fingerprint {
        Fingerprint {
            path: path.into(),
            size,
            modified_ns: 5,
            sample_hash: "00".into(),
            e_tag: None,
            version: None,
            identity: None,
            seed: None,
        }
    }

    /// Inputs not reached may change or move after a drained stop, and the checkpoint
    /// then lists them as they are (a new order left unrecorded skipped rows on the next
    /// resume); after a stop that was not drained, none may change.
    #[test]
    fn inputs_not_reached_may_change_only_after_a_drained_stop() {
        let mut cp = sample();
        cp.inputs = vec![print("a.csv", 100), print("b.csv", 10), print("c.csv", 20)];
        cp.input_rows = vec![0, 0, 0];
        let p = Path::new("cp.json");
        let reordered = [print("a.csv", 100), print("c.csv", 20), print("b.csv", 10)];
        let notes = check_matches(&mut cp, p, "local", "abc", &reordered).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(cp.inputs, reordered);

        let changed = [print("a.csv", 100), print("c.csv", 21), print("b.csv", 10)];
        let notes = check_matches(&mut cp.clone(), p, "local", "abc", &changed).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");

        cp.drained = false;
        let err = check_matches(&mut cp, p, "local", "abc", &changed).unwrap_err();
        assert!(err.to_string().contains("c.csv changed since"), "{err}");
        // The input being read may never change.
        cp.drained = true;
        let mut changed_a = reordered.clone();
        changed_a[0].size = 101;
        let err = check_matches(&mut cp, p, "local", "abc", &changed_a).unwrap_err();
        assert!(
            err.to_string().contains("10 of its rows were already sent"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_truncated_and_future_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        let full = serde_json::to_string_pretty(&sample()).unwrap();
        fs::write(&p, &full[..full.len() / 2]).unwrap();
        assert!(matches!(load(&p), Err(CheckpointError::Corrupt { .. })));
        fs::write(&p, "garbage").unwrap();
        assert!(matches!(load(&p), Err(CheckpointError::Corrupt { .. })));
        fs::write(&p, full.replace("\"version\": 2", "\"version\": 99")).unwrap();
        assert!(matches!(
            load(&p),
            Err(CheckpointError::Version { found: 99, .. })
        ));
        assert!(load(&dir.path().join("none.json")).unwrap().is_none());
    }
}
