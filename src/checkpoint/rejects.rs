//! The rejects file and the locks: what a checkpoint counts besides positions, and what
//! keeps a second run off this run's files.
//!
//! The rejects file is opened afresh or, resuming, cut back to the length the checkpoint
//! recorded ([`open`]), so it never holds a line twice. A run locks its checkpoint
//! (through a hidden `.NAME.lock` file beside it, since the checkpoint itself is replaced
//! by each write) and its rejects file, with `flock`, which dies with the process.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{CheckpointError, WriteError};
use crate::config::{OwnFile, RunConfig};

/// Opens the rejects file: created afresh, or (resuming) cut back to the length the
/// checkpoint recorded, so it never holds a line twice.
///
/// The cut itself runs on a thread of its own: freeing what an earlier run left (7.5 ms
/// for a 30 MB rejects file, so about a quarter of a second per GB) is kernel work the
/// pipeline need not wait for. Every write, flush and sync waits for it first, so
/// nothing is ever written before it and then cut away.
pub fn open(path: &Path, keep: u64) -> Result<RejectsFile, CheckpointError> {
    let io = |source| {
        CheckpointError::Write(WriteError {
            what: "--rejects",
            path: path.to_path_buf(),
            source,
        })
    };
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create(keep == 0)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && keep > 0 => {
            return Err(CheckpointError::RejectsMissing {
                path: path.to_path_buf(),
                len: keep,
            })
        }
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len < keep {
        return Err(CheckpointError::RejectsShorter {
            path: path.to_path_buf(),
            found: len,
            len: keep,
        });
    }
    // Opened without O_APPEND, so writes start at 0; a pipe or a terminal (which
    // cannot seek) is only ever opened afresh.
    if keep > 0 {
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(keep)).map_err(io)?;
    }
    let cut = if len > keep {
        let f = cut_handle(&file).map_err(io)?;
        Some(
            std::thread::Builder::new()
                .name("rejects-cut".into())
                .spawn(move || f.set_len(keep))
                .map_err(io)?,
        )
    } else {
        None
    };
    Ok(RejectsFile {
        sink: Sink::File {
            file,
            cut,
            failed: None,
        },
    })
}

/// A run that starts its rejects file afresh (a new backfill, `--restart`, a run that
/// keeps no checkpoint) may not take one that another backfill's checkpoint counts
/// (finished or not: a finished backfill's rejects are its record), or it would cut
/// that backfill's rejects away. Looks through the state directory, the old default
/// checkpoint and the `--checkpoint` a run without one names.
pub fn refuse_counted_elsewhere(cfg: &RunConfig) -> Result<(), CheckpointError> {
    let fresh = cfg
        .checkpoint
        .as_ref()
        .is_none_or(|p| cfg.restart || !p.exists());
    if !fresh {
        return Ok(());
    }
    let named: Vec<std::path::PathBuf> = cfg
        .own_files
        .iter()
        .filter(|f| f.flag == "--checkpoint")
        .map(|OwnFile { path, .. }| path.clone())
        .collect();
    match super::state::counted_elsewhere(
        &cfg.rejects_path,
        cfg.checkpoint.as_deref(),
        &cfg.state_dir,
        &named,
    ) {
        Some((checkpoint, len)) => Err(CheckpointError::CountedElsewhere {
            rejects: cfg.rejects_path.clone(),
            checkpoint,
            len,
        }),
        None => Ok(()),
    }
}

/// Locks the rejects file (a regular file, or none yet) for this run: two runs writing
/// one rejects file would interleave their lines. `create`: make the file if it is not
/// there (false when a checkpoint counts lines in it: then [`open`] reports it
/// missing, and a refused run leaves nothing behind).
pub fn lock_rejects(path: &Path, create: bool) -> Result<Option<File>, CheckpointError> {
    if crate::source::remote::is_object_url(&path.to_string_lossy()) {
        return Ok(None); // parts in object storage: the checkpoint's lease guards them
    }
    if std::fs::metadata(path).map_or(!create, |m| !m.is_file()) {
        return Ok(None); // a pipe or a device: nothing to cut, nothing to guard
    }
    // Found before anything is sent (and before a fresh checkpoint is written).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| CheckpointError::RejectsUnopenable {
            path: path.to_path_buf(),
            source,
        })?;
    lock_exclusive(file, path, "its rejects file")
}

/// Locks the checkpoint for this run, through a hidden file beside it (the checkpoint
/// itself is replaced by each write): a second run on the same checkpoint stops before
/// it reads the checkpoint, whatever its other paths.
pub fn lock_checkpoint(path: &Path) -> Result<Option<File>, CheckpointError> {
    let name = path
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let lock = path.with_file_name(format!(".{name}.lock"));
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
    else {
        return Ok(None); // the checkpoint's own write reports an unwritable directory
    };
    lock_exclusive(file, path, "its checkpoint")
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `file`, held as long as the returned handle (and
/// released by the kernel if the process dies). Busy: another run holds `path`.
fn lock_exclusive(
    file: File,
    path: &Path,
    what: &'static str,
) -> Result<Option<File>, CheckpointError> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: `flock` takes a file descriptor that `file` keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(CheckpointError::Busy {
                    path: path.to_path_buf(),
                    what,
                });
            }
            // A file system without locks (some network mounts): run unguarded.
            log::warn!("cannot lock {}: {e}", path.display());
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(Some(file))
}

/// A run that keeps a checkpoint counts the rejects file's length and syncs the file
/// before each checkpoint, which only a regular file allows: a pipe, a terminal or a
/// device is refused before the checkpoint or anything else is touched, not at the first
/// checkpoint after requests went out. (A path that does not exist yet becomes a file.)
pub fn refuse_unsyncable(path: &Path) -> Result<(), CheckpointError> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    if m.is_dir() {
        return Err(CheckpointError::RejectsIsDirectory {
            path: path.to_path_buf(),
        });
    }
    if !m.is_file() {
        return Err(CheckpointError::RejectsNotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The file again, for the thread that cuts it back: on Linux a second open file
/// description of the same file (through /proc/self/fd), closed as soon as the cut is
/// done. ext4 flushes a file cut to nothing when the next description of it is
/// released; releasing this one does that while the file is still empty. Through a mere
/// duplicate of the run's own description, ext4 instead wrote back every line of the run
/// when the run closed the file, on the way to exit (1.3–7.9 ms for 30 MB, against
/// 0.02 ms). Elsewhere, or without /proc, a duplicate.
fn cut_handle(file: &File) -> std::io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let again = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(f) = again {
            return Ok(f);
        }
    }
    file.try_clone()
}

/// The rejects file, positioned where this run writes, while an earlier run's lines
/// past that point may still be being cut away ([`open`]).
///
/// A run killed (SIGKILL, a second Ctrl-C) in the moment before the cut finishes leaves
/// the earlier lines in place, where an `O_TRUNC` open would not have: the next run
/// cuts them, and no checkpoint can count them (one is written only after a sync,
/// which waits for the cut).
///
/// With the state in object storage it is a series of parts instead
/// ([`super::object::ObjectRejects`]): a sync writes what was buffered as the next part.
pub struct RejectsFile {
    sink: Sink,
}

enum Sink {
    File {
        file: File,
        cut: Option<std::thread::JoinHandle<std::io::Result<()>>>,
        /// Why the cut failed, if it did: every later write fails too, so no line of
        /// this run lands among an earlier run's.
        failed: Option<(std::io::ErrorKind, String)>,
    },
    #[cfg(feature = "object-store")]
    Parts(super::object::ObjectRejects),
}

impl RejectsFile {
    /// Rejects written as numbered parts in object storage.
    #[cfg(feature = "object-store")]
    pub fn parts(parts: super::object::ObjectRejects) -> RejectsFile {
        RejectsFile {
            sink: Sink::Parts(parts),
        }
    }

    /// Where writes go, once nothing is left beyond where this run writes.
    fn ready(&mut self) -> std::io::Result<&mut dyn Write> {
        match &mut self.sink {
            Sink::File { file, cut, failed } => {
                if let Some(cut) = cut.take() {
                    let done = cut.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other(
                            "the thread cutting the file back panicked",
                        ))
                    });
                    if let Err(e) = done {
                        *failed = Some((e.kind(), format!("cannot cut it back: {e}")));
                    }
                }
                match failed {
                    Some((kind, why)) => Err(std::io::Error::new(*kind, why.clone())),
                    None => Ok(file),
                }
            }
            #[cfg(feature = "object-store")]
            Sink::Parts(p) => Ok(p),
        }
    }

    /// Makes everything written so far durable: the file synced, or the buffered lines
    /// written as the next part.
    pub fn sync_data(&mut self) -> std::io::Result<()> {
        self.ready()?;
        match &mut self.sink {
            Sink::File { file, .. } => file.sync_data(),
            #[cfg(feature = "object-store")]
            Sink::Parts(p) => p.sync(),
        }
    }
}

impl Write for RejectsFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ready()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ready()?.flush()
    }
}

impl Drop for RejectsFile {
    /// A run that ends without writing still leaves the file cut back, as it would
    /// have after an `O_TRUNC` open.
    fn drop(&mut self) {
        if let Sink::File { cut, .. } = &mut self.sink {
            if let Some(cut) = cut.take() {
                let _ = cut.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an earlier run left is cut back before anything of this run is written,
    /// even when the write comes at once (the cut of 8 MB runs on its own thread).
    #[test]
    fn the_rejects_file_is_cut_back_before_this_run_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.ndjson");
        let old = b"{\"old\":1}\n".repeat(800_000);
        let read = || std::fs::read(&path).unwrap();

        // Afresh: the old lines go, the new ones start the file.
        std::fs::write(&path, &old).unwrap();
        let mut f = open(&path, 0).unwrap();
        f.write_all(b"new\n").unwrap();
        drop(f);
        assert_eq!(read(), b"new\n");

        // Resuming: kept up to the recorded length, written after it, synced.
        std::fs::write(&path, [&b"kept\n"[..], &old].concat()).unwrap();
        let mut f = open(&path, 5).unwrap();
        f.write_all(b"more\n").unwrap();
        f.sync_data().unwrap();
        drop(f);
        assert_eq!(read(), b"kept\nmore\n");

        // A run that writes nothing still leaves the file cut back.
        std::fs::write(&path, &old).unwrap();
        drop(open(&path, 0).unwrap());
        assert_eq!(read(), b"");

        // Shorter than the checkpoint says: refused, and left as it is.
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(
            open(&path, 100),
            Err(CheckpointError::RejectsShorter { .. })
        ));
        assert_eq!(read(), b"short\n");
    }

    /// `--rejects` naming a FIFO (or /dev/stderr and the like): a pipe cannot seek, and
    /// need not.
    #[cfg(target_os = "linux")]
    #[test]
    fn rejects_can_go_to_a_named_pipe() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("rejects.fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a plain system call on a NUL-terminated path that outlives it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read_to_string(fifo).unwrap()
        });
        // With a checkpoint it is refused before anything is opened (or sent): the
        // checkpoint syncs the file, which a pipe cannot do.
        assert!(matches!(
            refuse_unsyncable(&fifo),
            Err(e @ CheckpointError::RejectsNotAFile { .. }) if e.to_string().contains("--no-checkpoint")
        ));
        assert!(matches!(
            refuse_unsyncable(dir.path()),
            Err(e @ CheckpointError::RejectsIsDirectory { .. }) if e.to_string().contains("is a directory")
        ));
        assert!(refuse_unsyncable(&dir.path().join("new.ndjson")).is_ok());
        let mut f = open(&fifo, 0).unwrap();
        f.write_all(b"line\n").unwrap();
        f.flush().unwrap();
        drop(f);
        assert_eq!(reader.join().unwrap(), "line\n");
    }

    /// The cut goes through an open file description of its own (so ext4's flush of a
    /// file cut to nothing happens when the cut is done, not when the run closes it).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_cut_goes_through_a_description_of_its_own() {
        use std::io::Seek;
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("r")).unwrap();
        f.write_all(b"0123456789").unwrap();
        let mut again = cut_handle(&f).unwrap();
        // A duplicate would share the run's offset (10); a description of its own
        // starts at 0.
        assert_eq!(again.stream_position().unwrap(), 0);
        assert_eq!(f.stream_position().unwrap(), 10);
    }

    /// A cut that failed fails every later write, not just the first.
    #[test]
    fn a_failed_cut_fails_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RejectsFile {
            sink: Sink::File {
                file: File::create(dir.path().join("r")).unwrap(),
                cut: Some(std::thread::spawn(|| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "sealed",
                    ))
                })),
                failed: None,
            },
        };
        for _ in 0..3 {
            let e = f.write(b"x").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("sealed"), "{e}");
        }
        assert!(f.flush().is_err() && f.sync_data().is_err());
    }
}
