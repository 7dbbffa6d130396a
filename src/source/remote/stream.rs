//! An object as a `std::io::Read`, from any byte offset.
//!
//! A producer task on the [`ObjectRuntime`] GETs the object's bytes and hands the body's
//! chunks to the reading thread through a channel; a semaphore of [`BUFFER`] bytes
//! bounds what is held between the network and the reader, whatever the object's size,
//! and stalls the body (TCP back-pressure) while the pipeline is slower than the network.
//!
//! A reader opened for what it may read only the start of (a header, a sample, a
//! resume's first rows) asks for [`FIRST_WINDOW`] bytes, then four times more each
//! time once the reader has taken half of the last window, then, once a window would
//! be as large as the buffer, the rest: a run opens every input once to read its
//! header, and that open must not pull megabytes it then throws away. The reading
//! stage's reader ([`StreamOptions::whole`]) asks for all of it at once.
//!
//! Every GET carries `If-Match: <ETag as listed>` and its answer's ETag and size are
//! checked again here (s3s-fs, for one, ignores `If-Match` on GET): an object replaced
//! during the run fails the read instead of splicing two versions. A body that breaks
//! (reset, read timeout, a 5xx on the re-request) is re-requested from the first byte
//! not delivered, with backoff, until it has failed for [`StreamOptions::retry_for`]
//! without progress (`--read-retry-secs`); progress starts the count again, so an
//! hour-long read survives scattered faults. object_store's own retry runs underneath,
//! per request, within the same budget.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};
use tokio::sync::{mpsc, Semaphore};

use super::object::{changed, classify, is_fatal};
use super::{RemoteError, RemoteObject};

/// Bytes held between the network and the reader at most.
pub const BUFFER: usize = 8 << 20;
/// The first request's length at most.
pub const FIRST_WINDOW: u64 = 256 << 10;
/// Progress that resets the count of failures.
const PROGRESS: u64 = 1 << 20;

/// How a stream retries.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub buffer: usize,
    /// How long the read may keep failing without delivering [`PROGRESS`] bytes before
    /// it fails (`--read-retry-secs`).
    pub retry_for: Duration,
    pub init_backoff: Duration,
    pub max_backoff: Duration,
    /// Ask for the whole rest at once, with no [`FIRST_WINDOW`]: for a reader that is
    /// known to read on (the reading stage's, [`super::RemoteObject::prefetch`]).
    pub whole: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            buffer: BUFFER,
            retry_for: super::DEFAULT_RETRY_FOR,
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            whole: false,
        }
    }
}

/// The reading end. Dropping it stops the producer.
pub struct ObjectReader {
    rx: mpsc::UnboundedReceiver<Result<Bytes, RemoteError>>,
    cur: Bytes,
    sem: Arc<Semaphore>,
    /// Permits held by `cur`, given back once it is consumed.
    held: usize,
    buffer: usize,
    pos: u64,
    end: u64,
    display: String,
}

/// Opens `obj` at byte `offset`.
pub fn open_at(obj: &RemoteObject, offset: u64, opts: StreamOptions) -> io::Result<ObjectReader> {
    let size = obj.meta.size;
    if offset > size {
        return Err(io::Error::other(format!(
            "{}: cannot resume at byte {offset}: the object is only {size} bytes long, so it changed since the checkpoint was written",
            obj.display
        )));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let sem = Arc::new(Semaphore::new(opts.buffer));
    let buffer = opts.buffer;
    let producer = Producer {
        store: obj.store.clone(),
        meta: obj.meta.clone(),
        pos: offset,
        tx,
        sem: sem.clone(),
        opts,
        display: obj.display.clone(),
    };
    obj.rt.spawn(producer.run());
    Ok(ObjectReader {
        rx,
        cur: Bytes::new(),
        sem,
        held: 0,
        buffer,
        pos: offset,
        end: size,
        display: obj.display.clone(),
    })
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.cur.is_empty() {
            if self.held > 0 {
                self.sem.add_permits(self.held);
                self.held = 0;
            }
            if self.pos >= self.end {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.held = b.len().min(self.buffer);
                    self.cur = b;
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: the read stopped at byte {} of {}",
                            self.display, self.pos, self.end
                        ),
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        // Wakes a producer waiting for permits: it then finds the channel closed.
        self.rx.close();
        self.sem.close();
    }
}

struct Producer {
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    pos: u64,
    tx: mpsc::UnboundedSender<Result<Bytes, RemoteError>>,
    sem: Arc<Semaphore>,
    opts: StreamOptions,
    display: String,
}

/// How one request ended.
enum Ended {
    /// Its range is delivered.
    Done,
    /// The reader is gone.
    Dropped,
    Failed(RemoteError, bool),
}

impl Producer {
    async fn run(mut self) {
        let end = self.meta.size;
        // The window asked for now (`None`: the rest), and where it ends.
        let mut window = (!self.opts.whole).then_some(FIRST_WINDOW);
        let mut window_end = window.map_or(end, |w| end.min(self.pos.saturating_add(w)));
        // Since when the read has failed without progress.
        let mut failing: Option<tokio::time::Instant> = None;
        let mut backoff = self.opts.init_backoff;
        while self.pos < end {
            let before = self.pos;
            match self.request(window_end).await {
                Ended::Done => {
                    if let Some(w) = window {
                        if self.pos < end && !self.reader_wants_more(w).await {
                            return;
                        }
                        // Four times larger each time, until a window would be as
                        // large as the buffer: then the rest.
                        window = Some(w * 4).filter(|&n| n < self.opts.buffer as u64);
                        window_end = window.map_or(end, |w| end.min(self.pos.saturating_add(w)));
                    }
                    continue;
                }
                Ended::Dropped => return,
                Ended::Failed(e, fatal) => {
                    let now = tokio::time::Instant::now();
                    if self.pos - before >= PROGRESS {
                        failing = None;
                        backoff = self.opts.init_backoff;
                    }
                    let since = *failing.get_or_insert(now);
                    let left = self.opts.retry_for.saturating_sub(now - since);
                    if fatal || left.is_zero() {
                        let _ = self.tx.send(Err(e));
                        return;
                    }
                    log::warn!(
                        "{}: read failed at byte {} ({e}); retrying in {:.1} s",
                        self.display,
                        self.pos,
                        backoff.min(left).as_secs_f64()
                    );
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
            }
        }
    }

    /// After a window of `window` bytes: waits until the reader has taken at least half
    /// of it, so an open that reads only a header (or a reader dropped early) never
    /// pulls the rest of the object; false if the reader is gone. Half, not all: the
    /// next GET's round trip overlaps the reading of the other half.
    async fn reader_wants_more(&self, window: u64) -> bool {
        let want = self.opts.buffer.saturating_sub(window as usize / 2).max(1) as u32;
        match self.sem.acquire_many(want).await {
            Ok(p) => {
                drop(p);
                true
            }
            Err(_) => false,
        }
    }

    /// GETs `pos..until` and hands the body on.
    async fn request(&mut self, until: u64) -> Ended {
        let get = GetOptions {
            range: Some(GetRange::Bounded(self.pos..until)),
            if_match: self.meta.e_tag.clone(),
            version: self.meta.version.clone(),
            ..Default::default()
        };
        let r = match self.store.get_opts(&self.meta.location, get).await {
            Ok(r) => r,
            Err(e) => {
                let fatal = is_fatal(&e);
                return Ended::Failed(classify(&self.display, &self.meta, self.pos, e), fatal);
            }
        };
        if changed(&self.meta, &r.meta) {
            return Ended::Failed(
                RemoteError::Changed {
                    object: self.display.clone(),
                    e_tag: self.meta.e_tag.clone().unwrap_or_default(),
                },
                true,
            );
        }
        let mut body = r.into_stream();
        loop {
            match body.next().await {
                Some(Ok(b)) if b.is_empty() => {}
                Some(Ok(mut b)) => {
                    // Never past the range asked for, whatever the server sent.
                    let left = until.saturating_sub(self.pos);
                    if b.len() as u64 > left {
                        b.truncate(left as usize);
                    }
                    let n = b.len();
                    // A chunk larger than the whole budget takes all of it.
                    let want = n.min(self.opts.buffer) as u32;
                    match self.sem.acquire_many(want).await {
                        Ok(p) => p.forget(),
                        Err(_) => return Ended::Dropped,
                    }
                    self.pos += n as u64;
                    if self.tx.send(Ok(b)).is_err() {
                        return Ended::Dropped;
                    }
                    if self.pos >= until {
                        return Ended::Done;
                    }
                }
                Some(Err(e)) => {
                    return Ended::Failed(classify(&self.display, &self.meta, self.pos, e), false)
                }
                None if self.pos >= until => return Ended::Done,
                None => {
                    return Ended::Failed(
                        RemoteError::Read {
                            object: self.display.clone(),
                            at: self.pos,
                            why: format!("the body ended early, at byte {} of {until}", self.pos),
                        },
                        false,
                    )
                }
            }
        }
    }
}
