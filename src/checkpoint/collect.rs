//! The collector: the pipeline's last stage, on the thread that started the run.
//!
//! It folds acknowledgements, in request order ([`InOrder`]), into the rejects file and
//! the checkpoint: a request's reject lines are written once it and every request before
//! it are acknowledged, then the checkpoint (after the rejects file is synced), so the
//! two never disagree. It gives the durable window's permits back once a checkpoint on
//! disk covers their requests, and watches for an
//! interrupt: stop reading, drain, then stop (or, past the drain timeout, give up on the
//! requests still hanging).
//!
//! The door: [`Ack`]s in, a [`CollectOutcome`] out; what it counts the summary takes.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::acks::InOrder;
use super::durable::Durable;
use super::rejects::RejectsFile;
use super::window::Window;
use super::{Counters, WriteError};
use crate::pack::AliasAt;
use crate::send::{Ack, AckResult};
use crate::source::Position;

/// What the server accepted, as the summary counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub calls: u64,
    /// Calls the server refused as invalid (strict mode): reject lines now.
    pub refused: u64,
    /// HTTP requests accepted (with strict mode's split, the pieces), and their bodies'
    /// bytes, uncompressed.
    pub requests: u64,
    pub request_bytes: u64,
}

/// What the collector saw by the time every sender was done.
#[derive(Debug, Default)]
pub struct CollectOutcome {
    /// Why a request failed for good (the first one), if one did.
    pub fatal: Option<String>,
    /// The rejects file or the checkpoint could not be written: the run stopped.
    pub io_error: Option<WriteError>,
    /// Resume position after the acknowledged prefix, if it moved.
    pub watermark: Option<Position>,
    pub rejects_len: u64,
    /// This run's part of the checkpoint's counters.
    pub counters: Counters,
    pub delivered: Delivered,
    pub interrupted: bool,
    /// Every request was acknowledged (none failed or was skipped).
    pub all_acknowledged: bool,
    /// Calls and requests the server accepted after the first that failed: counted as
    /// delivered, but the checkpoint cannot pass the failed request, so a resume sends
    /// them again (with the same messageIds).
    pub beyond: (u64, u64),
    /// Requests still hung when the drain timeout ended: the senders are stuck in them,
    /// so the run reports and returns without them.
    pub abandoned: bool,
    /// Alias calls delivered and counted at or past the watermark (an earlier run's
    /// too, until the watermark passes them): the checkpoint lists them so that a
    /// resume, which reads their rows again, does not send them again.
    pub aliases_beyond: BTreeSet<AliasAt>,
}

impl CollectOutcome {
    /// [`CollectOutcome::aliases_beyond`] as the checkpoint stores it.
    pub fn aliases(&self) -> Vec<AliasAt> {
        self.aliases_beyond.iter().copied().collect()
    }
}

impl CollectOutcome {
    /// Why a run whose requests still hang after the drain timeout stopped, and how to
    /// go on (`failed`: what else went wrong before).
    pub fn abandoned_why(
        &self,
        checkpointing: bool,
        drain_timeout: Duration,
        failed: &Option<String>,
    ) -> String {
        let again = self
            .resent_beyond("after the first hanging one")
            .map_or_else(String::new, |b| format!("; {b}"));
        let next = if checkpointing {
            format!("the checkpoint is up to date: rerun the same command to resume (the requests still in flight are sent again{again})")
        } else {
            "no checkpoint was kept: a rerun starts from the beginning".to_string()
        };
        let why = format!(
            "requests still in flight after --drain-timeout ({}s); {next}",
            drain_timeout.as_secs()
        );
        match failed {
            Some(f) => format!("{f}; then {why}"),
            None => why,
        }
    }

    /// Says that [`CollectOutcome::beyond`] was accepted past a request that did not
    /// finish (`after` says where), counted as delivered, and is sent again on resume;
    /// `None` when there is none.
    pub fn resent_beyond(&self, after: &str) -> Option<String> {
        let (calls, requests) = self.beyond;
        (calls > 0).then(|| {
            format!(
                "{calls} calls in {requests} request{} {after} were accepted, and are counted as delivered; a resume sends them again, with the messageIds they had, so the API can drop the repeats",
                if requests == 1 { "" } else { "s" }
            )
        })
    }
}

/// Folds acknowledgements, in request order, into the rejects file and the checkpoint. A request's reject lines are written once it and every request before it
/// are acknowledged, then the checkpoint (after the rejects file is synced), so the two
/// never disagree. Also watches for an interrupt: stop reading, drain, then stop.
pub struct Collector<'a> {
    pub rejects: BufWriter<RejectsFile>,
    /// The rejects file's length as this run starts.
    pub rejects_len: u64,
    pub rejects_path: &'a Path,
    pub durable: Option<&'a Durable>,
    pub window: &'a Window,
    /// Rows of each input once read to the end (the reader fills them in).
    pub input_rows: &'a Mutex<Vec<u64>>,
    /// How often a checkpoint is written at least.
    pub interval: Duration,
    /// Set by a signal: stop reading, drain, stop.
    pub interrupt: Option<&'a AtomicBool>,
    pub drain_timeout: Duration,
    /// Set here on an interrupt: the reader stops, the gate forwards nothing more.
    pub halt_reading: &'a AtomicBool,
    /// Set here when the rejects file or the checkpoint cannot be written: the senders
    /// send nothing more.
    pub stop: &'a AtomicBool,
    pub quiet: bool,
    /// Told of every acknowledgement and every loop turn (the progress display).
    pub watch: &'a dyn Watch,
}

/// What watches the collector: told of each acknowledgement as it arrives, in any order,
/// and of each turn of the collector's loop (at most every 50 ms).
pub trait Watch {
    fn ack(&self, ack: &Ack);
    fn tick(&self);
}

impl Collector<'_> {
    /// Folds acknowledgements until every sender is done (or the drain times out).
    pub fn run(mut self, acks: Receiver<Ack>) -> CollectOutcome {
        use crossbeam_channel::RecvTimeoutError;
        let mut o = CollectOutcome {
            rejects_len: self.rejects_len,
            all_acknowledged: true,
            ..Default::default()
        };
        if let Some(d) = self.durable {
            // Still past the watermark until it moves beyond them.
            o.aliases_beyond = d.base.aliases_beyond.iter().copied().collect();
        }
        let mut in_order: InOrder<Ack> = InOrder::default();
        // Permits of requests folded into the watermark but not yet durable.
        let mut unreleased = 0usize;
        let mut dirty = false;
        let mut last_write = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let first = match acks.recv_timeout(Duration::from_millis(50)) {
                Ok(a) => Some(a),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for ack in first
                .into_iter()
                .chain(std::iter::from_fn(|| acks.try_recv().ok()))
            {
                self.watch.ack(&ack);
                match &ack.result {
                    AckResult::Failed(why) => {
                        o.fatal.get_or_insert(why.clone());
                        o.all_acknowledged = false;
                        self.window.release(1);
                    }
                    AckResult::Skipped => {
                        o.all_acknowledged = false;
                        if ack.body_len.is_some() {
                            self.window.release(1);
                        }
                    }
                    _ => {}
                }
                in_order.push(ack.request.seq, ack);
                // The watermark stops at a request that failed or was skipped; later
                // ones are not counted as done.
                while let Some(ack) =
                    in_order.pop(|a| matches!(a.result, AckResult::Delivered | AckResult::Marker))
                {
                    self.fold(&ack, &mut o);
                    if ack.body_len.is_some() {
                        unreleased += 1;
                    }
                    dirty = true;
                }
            }
            // Interrupt: stop reading and hand no new request to the senders; the requests
            // they already hold finish (so a resume replays none of them), within the
            // drain timeout.
            self.watch.tick();
            if let Some(flag) = self.interrupt {
                if flag.load(Ordering::Relaxed) && drain_deadline.is_none() {
                    o.interrupted = true;
                    self.halt_reading.store(true, Ordering::SeqCst);
                    drain_deadline = Some(Instant::now() + self.drain_timeout);
                    if !self.quiet {
                        // Not `eprintln!`: a closed stderr must not stop the drain.
                        let _ = writeln!(
                            std::io::stderr(),
                            "interrupted: reading stopped; the requests already handed to the senders (in flight, and those queued for them) finish, for at most {}s (--drain-timeout). Interrupt again (Ctrl-C) to quit at once.",
                            self.drain_timeout.as_secs()
                        );
                    }
                }
            }
            if drain_deadline.is_some_and(|d| Instant::now() > d) {
                // A request is still hanging after the drain timeout. Record what is
                // acknowledged and leave; the hanging request is replayed on resume.
                if let Some(d) = self.durable.filter(|_| o.io_error.is_none()) {
                    let rows = lock(self.input_rows).clone();
                    // Only what is on disk may be counted.
                    if self.sync_rejects().is_ok() {
                        let _ = d.store(
                            o.watermark.unwrap_or(d.base.resume),
                            o.rejects_len,
                            &o.counters,
                            false,
                            &rows,
                            &o.aliases(),
                        );
                    }
                } else {
                    let _ = self.flush_rejects();
                }
                // The senders are stuck in their requests, so the run cannot wind down:
                // it reports and returns without them.
                o.abandoned = true;
                o.all_acknowledged = false;
                break;
            }
            let due = last_write.elapsed() >= self.interval || self.window.is_half_full();
            // A checkpoint that is also a lease is written even when nothing moved.
            let beat = self
                .durable
                .and_then(|d| d.heartbeat())
                .is_some_and(|h| last_write.elapsed() >= h);
            // After a write failed, no checkpoint is written: the last one stands.
            if ((dirty && due) || beat) && o.io_error.is_none() {
                if let Some(d) = self.durable {
                    if let Err(e) = self.sync_rejects().and_then(|_| {
                        let rows = lock(self.input_rows).clone();
                        d.store(
                            o.watermark.unwrap_or(d.base.resume),
                            o.rejects_len,
                            &o.counters,
                            false,
                            &rows,
                            &o.aliases(),
                        )
                    }) {
                        // Without a checkpoint, going on would risk unbounded replays.
                        o.io_error.get_or_insert(e);
                        self.stop.store(true, Ordering::SeqCst);
                    }
                }
                self.window.release(std::mem::take(&mut unreleased));
                dirty = false;
                last_write = Instant::now();
            }
            if self.durable.is_none() {
                self.window.release(std::mem::take(&mut unreleased));
            }
        }
        if !in_order.is_empty() {
            o.all_acknowledged = false;
        }
        // Requests answered 2xx after one that failed did arrive: the summary says so,
        // though the watermark (and so the checkpoint and the rejects file) stops before
        // the failed one.
        for ack in in_order.held() {
            if ack.result == AckResult::Delivered {
                // Calls the server refused in such a request stay undelivered here: their
                // reject lines are written when a resume sends the request again.
                let d = &mut o.delivered;
                d.calls += ack.delivered_calls as u64;
                d.requests += ack.accepted_requests as u64;
                d.request_bytes += ack.accepted_bytes;
                o.beyond.0 += ack.delivered_calls as u64;
                o.beyond.1 += 1;
            }
        }
        // The final checkpoint counts the rejects file's length, so the file must be on
        // disk first. With no checkpoint (a dry run, --no-checkpoint) nothing relies on
        // that: writing the file out is enough, and the run does not wait for the disk.
        let end = if self.durable.is_some() {
            self.sync_rejects()
        } else {
            self.flush_rejects()
        };
        if let Err(e) = end {
            o.io_error.get_or_insert(e);
        }
        o
    }

    /// Counts one acknowledged request, writes its reject lines and moves the watermark
    /// past it. Once the rejects file or the checkpoint could not be written, nothing
    /// moves any more: no later checkpoint may count bytes that are not on disk, so what
    /// the server accepts from then on is delivered but sent again on resume.
    fn fold(&mut self, ack: &Ack, o: &mut CollectOutcome) {
        let delivered = ack.result == AckResult::Delivered;
        if delivered {
            let d = &mut o.delivered;
            d.calls += ack.delivered_calls as u64;
            d.refused += ack.request.calls.saturating_sub(ack.delivered_calls) as u64;
            // What the server accepted: with strict mode's split, the pieces.
            d.requests += ack.accepted_requests as u64;
            d.request_bytes += ack.accepted_bytes;
        }
        let beyond = |o: &mut CollectOutcome| {
            if delivered {
                o.beyond.0 += ack.delivered_calls as u64;
                o.beyond.1 += 1;
            }
        };
        if o.io_error.is_some() {
            return beyond(o);
        }
        let mut lines = 0;
        let mut len = 0;
        for part in [&ack.request.rejects, &ack.server_rejects] {
            if part.is_empty() {
                continue;
            }
            if let Err(e) = self.rejects.write_all(part) {
                // Some of it may be in the file, past what any checkpoint counts: a
                // resume cuts it away. The run stops here.
                o.io_error = Some(self.rejects_error(e));
                self.stop.store(true, Ordering::SeqCst);
                return beyond(o);
            }
            len += part.len() as u64;
            lines += memchr::memchr_iter(b'\n', part).count() as u64;
        }
        o.rejects_len += len;
        o.counters.rows_rejected += lines;
        if delivered {
            o.counters.calls_delivered += ack.delivered_calls as u64;
            o.counters.requests += ack.accepted_requests as u64;
        }
        let at = ack.request.resume;
        o.watermark = Some(at);
        if let (true, Some(alias)) = (delivered, ack.request.alias) {
            o.aliases_beyond.insert(alias);
        }
        // Those of rows before the watermark are behind the checkpoint now.
        if o.aliases_beyond
            .first()
            .is_some_and(|a| !a.is_at_or_after(at))
        {
            let from = AliasAt {
                input: at.input,
                row: at.row,
                nth: 0,
            };
            o.aliases_beyond = o.aliases_beyond.split_off(&from);
        }
    }

    fn rejects_error(&self, source: std::io::Error) -> WriteError {
        WriteError {
            what: "--rejects",
            path: self.rejects_path.to_path_buf(),
            source,
        }
    }

    /// Makes the rejects file durable up to what was written, before a checkpoint says so.
    fn sync_rejects(&mut self) -> Result<(), WriteError> {
        self.flush_rejects()?;
        self.rejects
            .get_mut()
            .sync_data()
            .map_err(|e| self.rejects_error(e))
    }

    fn flush_rejects(&mut self) -> Result<(), WriteError> {
        self.rejects.flush().map_err(|e| self.rejects_error(e))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
