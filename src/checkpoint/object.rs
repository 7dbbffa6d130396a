//! The checkpoint and the rejects in object storage (`--checkpoint s3://bucket/run/`),
//! so that a shard restarted on another machine resumes where the lost one stopped.
//!
//! Object storage has no rename and no append, but it has conditional puts, and they are
//! enough:
//! - **the checkpoint object is its own lease.** It names its owner and generation. The
//!   first run creates it create-only (`If-None-Match: *`); every later write is
//!   `If-Match` the ETag of the owner's own previous write, and the collector writes at
//!   least every `ttl / 3` even when nothing moved (a heartbeat). A second process that
//!   finds the lease unreleased watches it: if its ETag changes within `ttl` (default
//!   30 s) the holder is alive and the second process is refused; if it stays the same
//!   for `ttl`, the holder is gone and the newcomer takes over with `If-Match` that ETag,
//!   generation + 1. No clocks of two machines are compared. Of two newcomers racing for
//!   one dead lease, exactly one wins. A holder that stalled past `ttl` and wakes finds
//!   its next write refused (the ETag moved): it stops without writing (fencing); what it
//!   sent meanwhile is within the usual replay bound, under the same messageIds. A run
//!   that ends cleanly writes `released`, and its successor takes over at once.
//! - **the rejects are numbered parts**, `PREFIX/000000.ndjson`, `000001.ndjson`, …, each
//!   written create-only when the rejects file would be synced (before the checkpoint
//!   that counts it) or when [`PART_BYTES`] are buffered. A resume deletes the parts
//!   past the length the checkpoint counts: the object form of cutting the file back.
//!
//! A store without conditional puts (`AWS_CONDITIONAL_PUT=disabled`) cannot hold state
//! safely and is refused.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Checkpoint, CheckpointError, LeaseRecord, WriteError};
use crate::source::remote::locate::{locate, StoreEnv};
use crate::source::remote::redact::{describe, redact_text};
use crate::source::remote::ObjectRuntime;
use object_store::path::Path as Key;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

/// Bytes of rejects buffered before a part is written anyway.
pub const PART_BYTES: usize = 8 << 20;

/// This process's name as a lease owner: the host (a pod's name) and the pid.
pub fn owner_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "host".into());
    format!("{host}/{}", std::process::id())
}

/// A checkpoint object and the lease this process holds on it.
pub struct ObjectState {
    rt: Arc<ObjectRuntime>,
    store: Arc<dyn ObjectStore>,
    key: Key,
    /// The URL, redacted.
    pub display: String,
    pub ttl: Duration,
    lease: Mutex<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    owner: String,
    generation: u64,
    /// The version of our last write; `None` before the first (then create-only, or
    /// `If-Match` the dead holder's version being taken over).
    version: Option<UpdateVersion>,
    take_over: Option<UpdateVersion>,
}

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(redact_text(&e.to_string()))
}

impl ObjectState {
    /// The checkpoint object at `url`.
    pub fn open(
        rt: &Arc<ObjectRuntime>,
        url: &str,
        ttl: Duration,
    ) -> Result<ObjectState, CheckpointError> {
        let env = StoreEnv::from_process();
        if env
            .var("AWS_CONDITIONAL_PUT")
            .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
        {
            return Err(CheckpointError::Corrupt {
                path: crate::source::remote::redact::redact_url(url),
                why: "AWS_CONDITIONAL_PUT=disabled: state in object storage needs conditional puts (S3, GCS, Azure, R2 and MinIO have them); keep the checkpoint on a local disk instead".into(),
            });
        }
        let loc = locate(url, &env).map_err(|e| CheckpointError::Corrupt {
            path: crate::source::remote::redact::redact_url(url),
            why: e.to_string(),
        })?;
        Ok(ObjectState {
            rt: rt.clone(),
            store: loc.store,
            key: loc.path,
            display: loc.display,
            ttl,
            lease: Mutex::new(Held {
                owner: owner_name(),
                generation: 0,
                version: None,
                take_over: None,
            }),
        })
    }

    fn read_error(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Read {
            path: self.display.clone(),
            source: io_other(e),
        }
    }

    /// The checkpoint's bytes and version; `None` when there is none.
    fn get(&self) -> Result<Option<(Vec<u8>, UpdateVersion)>, CheckpointError> {
        let (store, key) = (self.store.clone(), self.key.clone());
        let got = self.rt.block_on(async move {
            match store.get_opts(&key, GetOptions::default()).await {
                Ok(r) => {
                    let v = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    r.bytes().await.map(|b| Some((b.to_vec(), v)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| self.read_error(describe(&e)))
    }

    /// Loads the checkpoint, and takes the lease on it: at once when there is none or it
    /// was released; after watching it unchanged for the ttl otherwise. Refused (Busy)
    /// when its holder is alive.
    pub fn load_and_acquire(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let Some((bytes, seen)) = self.get()? else {
            return Ok(None);
        };
        let cp = super::parse(&bytes, &self.display)?;
        let lease = cp.lease.clone();
        let mut seen = seen;
        if let Some(l) = lease.as_ref().filter(|l| !l.released) {
            let started = Instant::now();
            let step = (self.ttl / 10).max(Duration::from_millis(50));
            while started.elapsed() < self.ttl {
                std::thread::sleep(step);
                match self.get()? {
                    Some((_, now)) if now == seen => {}
                    Some((b, now)) => {
                        let holder = super::parse(&b, &self.display)
                            .ok()
                            .and_then(|c| c.lease)
                            .unwrap_or_else(|| l.clone());
                        if holder.released {
                            // Released while we watched: take it as it is now.
                            seen = now;
                            break;
                        }
                        return Err(CheckpointError::Held {
                            path: self.display.clone(),
                            owner: holder.owner,
                            generation: holder.generation,
                        });
                    }
                    None => {
                        return Err(self.read_error(
                            "the checkpoint was deleted while this run waited for its lease",
                        ))
                    }
                }
            }
        }
        let mut held = self.held();
        held.generation = lease.map_or(0, |l| l.generation) + 1;
        held.take_over = Some(seen);
        drop(held);
        // The checkpoint as it is when taken over (re-read if it was released meanwhile).
        match self.get()? {
            Some((b, _)) => super::parse(&b, &self.display).map(Some),
            None => Ok(Some(cp)),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `cp` as this process's: create-only the first time, else `If-Match` our
    /// last version (or the version taken over). `released`: the run is ending.
    pub fn store(&self, cp: &Checkpoint, released: bool) -> Result<(), WriteError> {
        let mut held = self.held();
        if held.generation == 0 {
            held.generation = 1;
        }
        let mut cp = cp.clone();
        cp.lease = Some(LeaseRecord {
            owner: held.owner.clone(),
            generation: held.generation,
            released,
        });
        let err = |source: io::Error| WriteError {
            what: "checkpoint",
            path: self.display.clone().into(),
            source,
        };
        let body = serde_json::to_vec_pretty(&cp).map_err(|e| err(io_other(e)))?;
        let mode = match (&held.version, &held.take_over) {
            (Some(v), _) | (None, Some(v)) => PutMode::Update(v.clone()),
            (None, None) => PutMode::Create,
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        let put = self.rt.block_on(async move {
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            store.put_opts(&key, PutPayload::from(body), opts).await
        });
        match put {
            Ok(r) => {
                held.version = Some(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                });
                held.take_over = None;
                Ok(())
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "another process took this checkpoint's lease (this one was generation {} of {}): it now runs this backfill, and this process stops without writing",
                        held.generation, held.owner
                    ),
                )))
            }
            Err(e) => Err(err(io_other(describe(&e)))),
        }
    }

    /// The rejects parts under `url`, cut back to `keep` bytes.
    pub fn rejects(&self, url: &str, keep: u64) -> Result<ObjectRejects, CheckpointError> {
        ObjectRejects::open(&self.rt, url, keep)
    }
}

/// What `cdp-backfill status URL` finds in object storage.
pub enum Found {
    /// One checkpoint: the object `url` names, or `checkpoint.json` under a prefix.
    One(Box<Checkpoint>),
    /// A sharded backfill's checkpoints, by shard: `shard-K-of-N.checkpoint.json` under
    /// the prefix, or `NAME.shard-K-of-N.EXT` beside a checkpoint object `NAME.EXT`
    /// (the names `--shard` gives them), each with its URL.
    Shards(Vec<(std::path::PathBuf, Checkpoint)>),
    Nothing,
}

/// The checkpoint or the shard checkpoints at `url`, read without taking any lease.
pub fn find(rt: &Arc<ObjectRuntime>, url: &str) -> Result<Found, CheckpointError> {
    let shown = crate::source::remote::redact::redact_url(url);
    let read_error = |e: &dyn std::fmt::Display| CheckpointError::Read {
        path: shown.clone(),
        source: io_other(e),
    };
    let loc = locate(url, &StoreEnv::from_process()).map_err(|e| read_error(&e))?;
    let get = |key: Key| -> Result<Option<Checkpoint>, CheckpointError> {
        let store = loc.store.clone();
        let at = loc.show(&key);
        let got = rt.block_on(async move {
            match store.get(&key).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        match got.map_err(|e| read_error(&e))? {
            Some(b) => super::parse(&b, &at).map(Some),
            None => Ok(None),
        }
    };
    // The object itself, or a prefix's single checkpoint.
    let dir = loc.is_prefix;
    let single = match dir {
        true => loc.path.clone().join("checkpoint.json"),
        false => loc.path.clone(),
    };
    if let Some(cp) = get(single)? {
        return Ok(Found::One(Box::new(cp)));
    }
    // Shard checkpoints under the prefix, or beside the object.
    let key = loc.path.as_ref().to_string();
    let parent = match dir {
        true => key.clone(),
        false => key
            .rsplit_once('/')
            .map_or_else(String::new, |(p, _)| p.to_string()),
    };
    let is_shard = super::shard_names(dir, &key);
    let store = loc.store.clone();
    let prefix = (!parent.is_empty()).then(|| Key::from(parent.as_str()));
    let listed = rt.block_on(async move {
        store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|l| l.objects)
    });
    let mut found = Vec::new();
    for o in listed.map_err(|e| read_error(&e))? {
        let name = o.location.filename().unwrap_or("").to_string();
        if is_shard(&name) {
            let at = loc.show(&o.location);
            if let Some(cp) = get(o.location)? {
                found.push((std::path::PathBuf::from(at), cp));
            }
        }
    }
    found.sort_by_key(|(_, cp)| cp.shard.as_ref().map_or(0, |s| s.k));
    match found.is_empty() {
        // A prefix named without its slash, as a local directory may be.
        true if !dir && !url.contains('?') => find(rt, &format!("{url}/")),
        true => Ok(Found::Nothing),
        false => Ok(Found::Shards(found)),
    }
}

/// The rejects as numbered create-only parts under a prefix.
pub struct ObjectRejects {
    rt: Arc<ObjectRuntime>,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    display: String,
    next: u64,
    buf: Vec<u8>,
}

impl ObjectRejects {
    /// Opens the parts under `url`, keeping the first ones that add up to `keep` bytes
    /// and deleting the rest (written after the last checkpoint).
    pub fn open(
        rt: &Arc<ObjectRuntime>,
        url: &str,
        keep: u64,
    ) -> Result<ObjectRejects, CheckpointError> {
        use futures::TryStreamExt;
        let env = StoreEnv::from_process();
        let shown = crate::source::remote::redact::redact_url(url);
        let loc = locate(url, &env).map_err(|e| CheckpointError::RejectsUnopenable {
            path: shown.clone().into(),
            source: io_other(e),
        })?;
        let (store, prefix) = (loc.store.clone(), loc.path.clone());
        let listed =
            rt.block_on(async move { store.list(Some(&prefix)).try_collect::<Vec<_>>().await });
        let mut parts = listed.map_err(|e| CheckpointError::RejectsUnopenable {
            path: shown.clone().into(),
            source: io_other(describe(&e)),
        })?;
        parts.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let (mut total, mut kept) = (0u64, 0u64);
        let mut extra = Vec::new();
        for p in parts {
            if total < keep {
                total += p.size;
                kept += 1;
            } else {
                extra.push(p.location);
            }
        }
        if total != keep {
            return Err(match total < keep {
                true if total == 0 => CheckpointError::RejectsMissing {
                    path: shown.into(),
                    len: keep,
                },
                _ => CheckpointError::RejectsShorter {
                    path: shown.into(),
                    found: total,
                    len: keep,
                },
            });
        }
        if !extra.is_empty() {
            let store = loc.store.clone();
            let gone = rt.block_on(async move {
                for p in extra {
                    store.delete(&p).await?;
                }
                Ok::<_, object_store::Error>(())
            });
            gone.map_err(|e| CheckpointError::RejectsUnopenable {
                path: shown.clone().into(),
                source: io_other(describe(&e)),
            })?;
        }
        Ok(ObjectRejects {
            rt: rt.clone(),
            store: loc.store,
            prefix: loc.path,
            display: shown,
            next: kept,
            buf: Vec::new(),
        })
    }

    /// Writes what is buffered as the next part, create-only.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let key = self.prefix.clone().join(format!("{:06}.ndjson", self.next));
        let body = std::mem::take(&mut self.buf);
        let store = self.store.clone();
        let put = self.rt.block_on(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store.put_opts(&key, PutPayload::from(body), opts).await
        });
        match put {
            Ok(_) => {
                self.next += 1;
                Ok(())
            }
            Err(e) => Err(io::Error::other(format!(
                "{}: cannot write part {}: {}",
                self.display,
                self.next,
                describe(&e)
            ))),
        }
    }
}

impl io::Write for ObjectRejects {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= PART_BYTES {
            self.sync()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
