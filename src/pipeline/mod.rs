//! The only module that creates the run's threads and channels: the whole data flow on
//! one screen.
//!
//! ```text
//!         ┌── free chunks ◀──┐
//!         ▼                  │
//!  reader ──pool.spawn──▶ mappers ──mapped──▶ packer ──requests──▶ gate ──gated──▶ senders ×N ──acks──▶ collector
//!         ▲                                   │  ▲              forwarder                             (this thread)
//!         └───── free mapped buffers ◀────────┘  └─────────────── spent bodies ◀───────────────────────────┘
//!
//!  source::read   map (rayon)       pack::stage      checkpoint::window   send      checkpoint::collect
//! ```
//!
//! Each stage is a room with one door: the reader hands [`Chunk`]s, the mappers [`Mapped`]
//! chunks, the packer [`Request`]s, the senders [`Ack`]s; the collector gives back a
//! [`CollectOutcome`], and the summary is made from it, the packer's [`PackTotals`] and
//! the senders' [`Attempts`]. The gate forwarder holds each request until the durable
//! window ([`Window::forward`]) has room, so a crash replays at most `2 × concurrency`
//! requests.
//!
//! Every channel is bounded and every buffer is recycled, so memory does not grow with
//! the input: at most `pool` chunks of rows and `pool` mapped chunks exist at once, and
//! at most [`QUEUE_AHEAD`] packed requests wait for the gate and as many more for a
//! sender, however many senders there are (each request holds its body). Mapping runs
//! on rayon in parallel; the packer restores input order by sequence number.
//!
//! The senders and the gate forwarder run on threads that own what they use, and so do
//! the reader and the packer: a run whose requests still hang after the drain timeout
//! returns ([`RunError::Abandoned`]) and leaves the stuck senders behind; the process
//! exits from `main`. `validate` runs the same reader, mappers and packer (`Front`) and
//! counts the requests instead of sending them.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::checkpoint::collect::{CollectOutcome, Collector};
use crate::checkpoint::durable::Durable;
use crate::checkpoint::{self, rejects, state, window::Window, CheckpointError, WriteError};
use crate::config::{
    ConcurrencySetting, Endpoint, Limits, OwnFile, RunConfig, DEFAULT_CONCURRENCY, MAX_CONCURRENCY,
};
use crate::error::RunError;
use crate::map::compile::{compile, CompiledMapping};
use crate::map::coverage::{coverage, Coverage};
use crate::map::encode::{map_chunk, EncodeOptions, Mapped};
use crate::map::message_id::{self, SeedScheme};
use crate::map::spec::MappingSpec;
use crate::pack::{stage, AliasAt, PackTotals, Packer, Request, Spares, StopRules, Stopped};
use crate::progress::{Progress, Senders};
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, Attempts, Delivery, Gate, RetryPolicy};
use crate::serve::{ServeConfig, Server};
use crate::source::read::{ReadEnd, Reading};
use crate::source::remote::ObjectRuntime;
use crate::source::shard::Stop;
use crate::source::{self, Chunk, InputInfo, Position, SourceError, SourceOptions};
use crate::summary::{Outcome, Summary};

mod front;
mod prepare;

pub(crate) use front::{Front, Plan, Span};
pub(crate) use prepare::object_runtime;
use prepare::*;

/// The most requests queued for the gate, and for the senders past it: deep enough to
/// ride out the packer's bursts, not as deep as `--concurrency` is wide, since each holds
/// a body of up to the request limit (at `--concurrency 128` queues of 2x and 1x the
/// concurrency held 384 bodies, about 190 MB).
pub const QUEUE_AHEAD: usize = 16;

/// Bytes of spent request bodies kept for reuse at most (beyond those of the queues).
const SPARE_BYTES: usize = 32 << 20;

/// What a run is given besides its configuration: ways to reach it while it runs.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Set (by a signal handler) to stop reading and drain.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// Runs a backfill to the end (or to the first fatal error), reporting progress (and
/// recording what `--report` draws) into `progress`.
pub fn run(
    cfg: &RunConfig,
    src: &SourceOptions,
    hooks: &Hooks,
    progress: &Arc<Progress>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let Ready {
        cfg,
        dir,
        plan,
        durable,
        _rejects_lock,
        start,
        stop,
    } = match preflight(cfg, src)? {
        Preflight::Ready(r) => *r,
        Preflight::AlreadyComplete(s) => return Ok(*s),
    };
    // From here on, the configuration with this backfill's own paths.
    let cfg = &cfg;
    // `--limit N` counts the rows of the inputs in order, those of earlier runs too.
    let rows_before = durable.as_ref().map_or(0, Durable::rows_done_before);
    let span = Span {
        start,
        stop,
        limit: cfg.limit.map(|n| n.saturating_sub(rows_before)),
    };
    let rejects_len0 = durable.as_ref().map_or(0, |d| d.base.rejects_len);
    // Before the rejects file is touched: a run that cannot start its threads changes
    // nothing on disk.
    let mappers = Arc::new(mapper_pool().map_err(RunError::Threads)?);
    // With the state in object storage, the rejects are parts beside the checkpoint.
    let rejects_file = match durable
        .as_ref()
        .and_then(|d| d.remote_rejects(&cfg.rejects_path, rejects_len0))
    {
        Some(parts) => parts?,
        None => rejects::open(&cfg.rejects_path, rejects_len0)?,
    };
    let (transport, dry, local) = transport(cfg)?;
    let limit = match (cfg.dry_run, cfg.concurrency) {
        (true, _) => send::Limit::Fixed(1),
        (false, ConcurrencySetting::Fixed(n)) => send::Limit::Fixed(n),
        (false, ConcurrencySetting::Auto) => send::Limit::Auto(send::adapt::Bounds {
            min: 1,
            max: MAX_CONCURRENCY,
            initial: DEFAULT_CONCURRENCY,
        }),
    };
    // One sender thread per request that may ever be on the wire; an idle one waits for
    // a permit and holds no body.
    let concurrency = limit.max();
    let attempts = Arc::new(Attempts::default());

    // Bodies come back from the senders once their requests are done: at most the two
    // queues and the requests on the wire hold one at once. The spares kept for reuse
    // are capped in bytes, so 256 senders do not mean 256 idle bodies held.
    let spares = Spares::new(
        (2 * concurrency + 2 * QUEUE_AHEAD + 4)
            .min(SPARE_BYTES / cfg.limits.max_request_bytes.max(1))
            .max(2 * QUEUE_AHEAD),
        cfg.limits.max_request_bytes,
    );
    let flow = Arc::new(send::Flow::new(limit));
    let gate = Arc::new(match cfg.dry_run {
        true => Gate::new(None, None),
        false => Gate::new(Some(cfg.rate_per_sec), cfg.events_rate_per_sec),
    });
    progress.begin(
        &plan.inputs,
        start,
        cfg.limits,
        Senders {
            attempts: attempts.clone(),
            flow: (!cfg.dry_run).then(|| flow.clone()),
            gate: (!cfg.dry_run).then(|| gate.clone()),
        },
    );
    let delivery = Delivery {
        flow: flow.clone(),
        transport,
        gate,
        policy: RetryPolicy {
            max_retries: cfg.max_retries,
            base: cfg.backoff_base,
            cap: cfg.backoff_cap,
            strict: cfg.strict,
            gzip: cfg.gzip.filter(|_| !cfg.dry_run),
        },
        stop: Arc::new(AtomicBool::new(false)),
        inputs: plan.inputs.clone(),
        attempts: attempts.clone(),
        spares: spares.clone(),
    };

    // --- the stages: reader, mappers and packer; the gate forwarder; the senders.
    let halt_reading = Arc::new(AtomicBool::new(false));
    let input_rows = Arc::new(Mutex::new(match &durable {
        Some(d) => d.base.input_rows.clone(),
        None => vec![0; plan.inputs.len()],
    }));
    let (front, packed) = Front::start(
        &plan,
        src,
        span,
        cfg.chunk_rows,
        &mappers,
        vec![delivery.stop.clone(), halt_reading.clone()],
        &input_rows,
        progress,
        spares.clone(),
        (concurrency * 2).min(QUEUE_AHEAD),
        // Aliases an earlier run delivered past its checkpoint: not sent again.
        durable
            .as_ref()
            .map(|d| d.base.aliases_beyond.iter().copied().collect())
            .unwrap_or_default(),
        Box::new(|_| {}),
    );
    // Requests sent but not yet covered by a durable checkpoint: what a crash can replay.
    let window = Arc::new(Window::following(flow.clone()));
    let (gated_tx, gated) = bounded::<Request>(concurrency.min(QUEUE_AHEAD));
    let (win, checkpointing, p) = (window.clone(), durable.is_some(), progress.clone());
    let (stop, halted) = (delivery.stop.clone(), halt_reading.clone());
    let forwarding = Arc::new(AtomicBool::new(true));
    let still = forwarding.clone();
    spawn("gate", move || {
        win.forward(packed, gated_tx, checkpointing, &stop, &halted, || {
            p.forwarded()
        });
        still.store(false, Ordering::SeqCst);
    })?;
    let (ack_tx, acks) = unbounded::<Ack>();
    // As many senders as requests may be on the wire: with `--concurrency auto`, as many
    // as the limit has reached, more started as it grows (256 idle senders from the
    // start cost a loopback run a fifth more CPU in wake-ups and lock traffic).
    let sender = move |rx: &Receiver<Request>, tx: &Sender<Ack>, d: &Delivery| {
        let (rx, tx, d) = (rx.clone(), tx.clone(), d.clone());
        spawn("sender", move || send::worker(rx, tx, &d))
    };
    let first = flow.peak().min(concurrency);
    for _ in 0..first {
        sender(&gated, &ack_tx, &delivery)?;
    }
    if first < concurrency {
        let (f, d) = (flow.clone(), delivery.clone());
        spawn("senders", move || {
            let mut n = first;
            // Until the gate forwarder is done: the senders started by then drain what
            // it handed on.
            while n < concurrency && forwarding.load(Ordering::Relaxed) {
                while n < f.peak().min(concurrency) {
                    if sender(&gated, &ack_tx, &d).is_err() {
                        return;
                    }
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })?;
    } else {
        drop((gated, ack_tx));
    }

    // --- the collector, on this thread, until every sender is done.
    let outcome = Collector {
        rejects: BufWriter::with_capacity(1 << 16, rejects_file),
        rejects_len: rejects_len0,
        rejects_path: &cfg.rejects_path,
        durable: durable.as_ref(),
        window: &window,
        input_rows: &input_rows,
        interval: cfg.checkpoint_interval,
        interrupt: hooks.interrupt.as_deref(),
        drain_timeout: cfg.drain_timeout,
        halt_reading: &halt_reading,
        stop: &delivery.stop,
        quiet: cfg.quiet,
        watch: &**progress,
    }
    .run(acks);

    // --- the end: the last checkpoint and the summary.
    let mut summary = Summary {
        inputs: plan.inputs.len() as u64,
        rejects_file: cfg.rejects_path.display().to_string(),
        dry_run: cfg.dry_run,
        ..Summary::default()
    };
    let base = durable.as_ref().map(|d| &d.base);
    if outcome.abandoned {
        let a = &attempts;
        return Err(abandoned(cfg, summary, &outcome, base, front, a, started));
    }
    let (read_result, totals) = front.join()?;
    if let Some(e) = outcome.io_error {
        return Err(RunError::Write(e));
    }
    let fatal = outcome.fatal.clone();
    let stopped = totals.stopped.clone();
    // Complete only if everything was read and delivered.
    if let Some(d) = &durable {
        let complete = matches!(read_result, Ok(ReadEnd::AllRead))
            && fatal.is_none()
            && stopped.is_none()
            && !outcome.interrupted
            && outcome.all_acknowledged;
        let rows = lock(&input_rows).clone();
        let at = outcome.watermark.unwrap_or(d.base.resume);
        let drained = outcome.all_acknowledged;
        // The last write also releases an object-storage checkpoint's lease.
        d.finish(
            at,
            outcome.rejects_len,
            &outcome.counters,
            complete,
            drained,
            &rows,
            &outcome.aliases(),
        )?;
        let now = d.totals(at, &outcome.counters, &rows);
        summary.backfill = Some(backfill_summary(d, rows_before, &now, complete));
    }
    summary.fill(&totals, &outcome, base, &attempts.counts());
    if !cfg.dry_run {
        summary.paused_by_429_secs = delivery.gate.paused_total().as_secs_f64();
        summary.concurrency_peak = delivery.flow.peak() as u64;
        summary.in_flight_peak = delivery.flow.busiest() as u64;
    }
    summary.set_coverage(plan.coverage(&totals.present));
    if let (Some(d), Some(p)) = (&dry, &cfg.output) {
        d.flush().map_err(|source| WriteError {
            what: "--output",
            path: p.clone(),
            source,
        })?;
    }
    if let Some(server) = local {
        server.shutdown();
    }
    summary.finish(started.elapsed());
    if outcome.interrupted && read_result.is_ok() && fatal.is_none() {
        summary.outcome = Outcome::Interrupted;
        let checkpoint = durable.map(|d| d.path);
        let summary = Box::new(summary);
        return Err(RunError::Interrupted {
            summary,
            checkpoint,
        });
    }
    if let Some(why) = stopped.filter(|_| fatal.is_none() && read_result.is_ok()) {
        summary.outcome = Outcome::Failed;
        // Nothing was delivered when every row so far was rejected: a checkpoint would
        // only make the corrected run refuse (its mapping or --format changed), so none
        // is left.
        let same_reason = matches!(why, Stopped::SameReason { .. });
        if let Some(d) = durable.as_ref().filter(|_| same_reason) {
            let _ = std::fs::remove_file(&d.path);
        }
        return Err(RunError::Stopped {
            summary: Box::new(summary),
            cause: why.message(),
            usage: same_reason,
        });
    }
    let cause = match (read_result, fatal) {
        (Err(e), _) => e.to_string(),
        (Ok(_), Some(why)) => {
            let again = if durable.is_some() {
                "The checkpoint stays before this request; the same command resumes from there"
            } else {
                "No checkpoint was kept: a rerun starts from the beginning"
            };
            let beyond = outcome
                .resent_beyond("sent after it")
                .map_or_else(String::new, |b| format!(" ({b})"));
            format!("{why}. {again}{beyond}")
        }
        (Ok(end), None) => {
            summary.outcome = match (end, cfg.sample) {
                (_, Some(k)) if k > 1 => Outcome::Sampled,
                (ReadEnd::Limit, _) => Outcome::LimitReached,
                _ => Outcome::Completed,
            };
            summary.note = trial_note(cfg, &summary);
            if let (Outcome::Sampled, Some(dir), false) = (summary.outcome, &dir, cfg.dry_run) {
                let trial = state::Trial {
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    every: cfg.sample.unwrap_or(1),
                    rows: summary.rows_read,
                    calls_delivered: summary.calls_delivered,
                };
                // The trial's record only informs later runs; losing it loses nothing.
                if let Err(e) = state::record_trial(dir, &trial) {
                    log::warn!("cannot record the trial in {}: {e}", dir.display());
                }
            }
            return Ok(summary);
        }
    };
    summary.outcome = Outcome::Failed;
    let summary = Box::new(summary);
    Err(RunError::Partial { summary, cause })
}

/// Rows of each input that `run --strict-mapping` reads before sending anything.
pub const STRICT_MAPPING_ROWS: usize = 1000;

/// The `--strict-mapping` refusal: every mapped name with no value in `rows` rows.
pub fn strict_mapping_message(c: &Coverage, rows: usize) -> String {
    let lines: Vec<String> = c
        .lines()
        .into_iter()
        .take(c.never_matched.len())
        .map(|l| format!("  {l}"))
        .collect();
    format!(
        "--strict-mapping: {} mapped column(s) or path(s) had no value in the first {rows} rows of the inputs; nothing was sent. Fix the names in the mapping (or leave out --strict-mapping):\n{}",
        c.never_matched.len(),
        lines.join("\n")
    )
}

/// Runs `jobs` at once, each on a thread of its own, and returns their results in
/// order: a plan's steps that may overlap. One job runs on this thread.
pub fn together<'a, T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>) -> Vec<T> {
    if jobs.len() <= 1 {
        return jobs.into_iter().map(|j| j()).collect();
    }
    std::thread::scope(|s| {
        let running: Vec<_> = jobs.into_iter().map(|j| s.spawn(j)).collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Starts a named thread that owns what it uses: it may outlive the run (a sender stuck
/// in a request past the drain timeout).
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), RunError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(RunError::Spawn)
}

/// Ends a run whose requests still hang after the drain timeout: the checkpoint is
/// already written, and the senders cannot be joined (they are inside their requests),
/// so the summary is completed from the reader's and packer's ends (they stop soon after
/// reading halts: the gate discards what the stuck senders cannot take) and returned in
/// the error, with where things stand. The stuck senders are left behind.
fn abandoned(
    cfg: &RunConfig,
    mut summary: Summary,
    outcome: &CollectOutcome,
    base: Option<&checkpoint::Checkpoint>,
    front: Front,
    attempts: &Attempts,
    started: Instant,
) -> RunError {
    // Reading stopped when the interrupt came, so both end within moments; a stage that
    // does not (a read blocked on a pipe) is left behind, and so is the summary.
    let until = Instant::now() + Duration::from_secs(2);
    while !front.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ended = if front.is_finished() {
        front.join().ok()
    } else {
        None
    };
    // What else went wrong before the interrupt, as the normal end reports it.
    let failed = outcome
        .fatal
        .clone()
        .or_else(|| outcome.io_error.as_ref().map(|e| e.to_string()))
        .or_else(|| {
            ended
                .as_ref()
                .and_then(|(r, _)| r.as_ref().err().map(|e| e.to_string()))
        });
    let why = outcome.abandoned_why(cfg.checkpoint.is_some(), cfg.drain_timeout, &failed);
    summary.calls_delivered = outcome.delivered.calls;
    let complete = ended.is_some();
    if let Some((_, totals)) = &ended {
        summary.fill(totals, outcome, base, &attempts.counts());
        summary.finish(started.elapsed());
        summary.outcome = match failed {
            Some(_) => Outcome::Failed,
            None => Outcome::Interrupted,
        };
    }
    RunError::Abandoned {
        summary: Box::new(summary),
        complete,
        why,
    }
}

/// How many nice levels below the rest of the run the mapper threads are scheduled.
///
/// On a machine with fewer cores than busy threads, the reader and the packer (each one
/// thread, in input order) must not wait behind the parallel mapping, or every mapper
/// runs dry behind them. With the mappers at a lower priority, a contested core goes to
/// the serial stages first and the mappers take whatever is left. The mappers also give
/// way to any other thread at the run's own priority, in this process or another (a
/// backfill's bulk yields to other work on the machine). A 1M-row dry run on two cores,
/// 16 interleaved triples: median 0.395 s at equal priority, 0.38 s five levels lower,
/// 0.37 s ten levels lower (faster in 13 of 16); see BENCHMARKS.md.
const MAPPER_NICE: i32 = 10;

/// The run's mapper threads (`RAYON_NUM_THREADS`, else one per core), each at
/// [`MAPPER_NICE`] levels below the thread that starts the run.
pub(crate) fn mapper_pool() -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("mapper-{i}"))
        .start_handler(|_| lower_priority(MAPPER_NICE))
        .build()
}

/// Lowers the calling thread's scheduling priority by `steps` nice levels (at most to
/// 19). Linux only: there `nice` applies to the calling thread, not the process.
fn lower_priority(steps: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: `nice` is a plain system call on an integer; it reads and writes no memory
    // of ours. A failure (-1) leaves the priority as it was, which is harmless.
    unsafe {
        libc::nice(steps);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = steps;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapper threads give way to the reader and the packer on a contested core.
    #[cfg(target_os = "linux")]
    #[test]
    fn mapper_threads_run_below_the_thread_that_starts_the_run() {
        fn nice() -> i32 {
            // SAFETY: a plain system call on integers. On Linux, `who = 0` names the
            // calling thread.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        }
        let here = nice();
        let pool = mapper_pool().expect("the mapper threads start");
        assert_eq!(pool.install(nice), (here + MAPPER_NICE).min(19));
    }
}
