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

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::checkpoint::collect::{CollectOutcome, Collector};
use crate::checkpoint::durable::Durable;
use crate::checkpoint::{self, rejects, window::Window, WriteError};
use crate::config::{Endpoint, Limits, RunConfig};
use crate::error::RunError;
use crate::map::compile::{compile, CompiledMapping};
use crate::map::coverage::{coverage, Coverage};
use crate::map::encode::{map_chunk, EncodeOptions, Mapped};
use crate::map::spec::MappingSpec;
use crate::pack::{stage, PackTotals, Packer, Request, Spares, StopRules, Stopped};
use crate::progress::Progress;
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, Attempts, Delivery, Gate, RetryPolicy};
use crate::serve::{ServeConfig, Server};
use crate::source::read::Reading;
use crate::source::{self, Chunk, InputInfo, Position, SourceError, SourceOptions};
use crate::summary::{Outcome, Summary};

/// The most requests queued for the gate, and for the senders past it: deep enough to
/// ride out the packer's bursts, not as deep as `--concurrency` is wide, since each holds
/// a body of up to the request limit (at `--concurrency 128` queues of 2x and 1x the
/// concurrency held 384 bodies, about 190 MB).
pub const QUEUE_AHEAD: usize = 16;

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
        plan,
        durable,
        _rejects_lock,
    } = match preflight(cfg, src)? {
        Preflight::Ready(r) => r,
        Preflight::AlreadyComplete(s) => return Ok(s),
    };
    let start = durable
        .as_ref()
        .map_or_else(Position::default, |d| d.base.resume);
    let rejects_len0 = durable.as_ref().map_or(0, |d| d.base.rejects_len);
    // Before the rejects file is touched: a run that cannot start its threads changes
    // nothing on disk.
    let mappers = Arc::new(mapper_pool().map_err(RunError::Threads)?);
    let rejects_file = rejects::open(&cfg.rejects_path, rejects_len0)?;
    let (transport, dry, local) = transport(cfg)?;
    let concurrency = if cfg.dry_run {
        1
    } else {
        cfg.concurrency.max(1)
    };
    let attempts = Arc::new(Attempts::default());
    progress.begin(
        &plan.inputs,
        start,
        cfg.limits,
        concurrency,
        attempts.clone(),
    );
    let delivery = Delivery {
        transport,
        gate: Arc::new(match cfg.dry_run {
            true => Gate::new(None, None),
            false => Gate::new(Some(cfg.rate_per_sec), cfg.events_rate_per_sec),
        }),
        policy: RetryPolicy {
            max_retries: cfg.max_retries,
            base: cfg.backoff_base,
            cap: cfg.backoff_cap,
            strict: cfg.strict,
            gzip: cfg.gzip && !cfg.dry_run,
        },
        stop: Arc::new(AtomicBool::new(false)),
        inputs: plan.inputs.clone(),
        attempts: attempts.clone(),
    };

    // --- the stages: reader, mappers and packer; the gate forwarder; the senders.
    let halt_reading = Arc::new(AtomicBool::new(false));
    let input_rows = Arc::new(Mutex::new(match &durable {
        Some(d) => d.base.input_rows.clone(),
        None => vec![0; plan.inputs.len()],
    }));
    // Bodies come back from the collector: at most the two queues, the senders' own and
    // the acknowledgements not yet folded can be in flight at once.
    let spares = Spares::new(
        2 * concurrency + 2 * QUEUE_AHEAD + 4,
        cfg.limits.max_request_bytes,
    );
    let (front, packed) = Front::start(
        &plan,
        src,
        start,
        cfg.chunk_rows,
        &mappers,
        vec![delivery.stop.clone(), halt_reading.clone()],
        &input_rows,
        progress,
        spares.clone(),
        (concurrency * 2).min(QUEUE_AHEAD),
        Box::new(|_| {}),
    );
    // Requests sent but not yet covered by a durable checkpoint: what a crash can replay.
    let window = Arc::new(Window::new(2 * concurrency));
    let (gated_tx, gated) = bounded::<Request>(concurrency.min(QUEUE_AHEAD));
    let (win, checkpointing, p) = (window.clone(), durable.is_some(), progress.clone());
    let (stop, halted) = (delivery.stop.clone(), halt_reading.clone());
    spawn("gate", move || {
        win.forward(packed, gated_tx, checkpointing, &stop, &halted, || {
            p.forwarded()
        })
    })?;
    let (ack_tx, acks) = unbounded::<Ack>();
    for _ in 0..concurrency {
        let (rx, tx, d) = (gated.clone(), ack_tx.clone(), delivery.clone());
        spawn("sender", move || send::worker(rx, tx, &d))?;
    }
    drop((gated, ack_tx));

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
        spares,
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
        let complete = read_result.is_ok()
            && fatal.is_none()
            && stopped.is_none()
            && !outcome.interrupted
            && outcome.all_acknowledged;
        let rows = lock(&input_rows).clone();
        let at = outcome.watermark.unwrap_or(d.base.resume);
        let drained = outcome.all_acknowledged;
        d.store_as(
            at,
            outcome.rejects_len,
            &outcome.counters,
            complete,
            drained,
            &rows,
        )?;
    }
    summary.fill(&totals, &outcome, base, &attempts.counts());
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
        (Ok(()), Some(why)) => {
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
        (Ok(()), None) => {
            summary.outcome = Outcome::Completed;
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

/// What the preflight leaves for the run: the plan, the checkpoint, and the rejects
/// file's lock when no checkpoint holds it.
struct Ready {
    plan: Plan,
    durable: Option<Durable>,
    _rejects_lock: Option<std::fs::File>,
}

enum Preflight {
    Ready(Ready),
    /// The checkpoint says the backfill finished: nothing to do.
    AlreadyComplete(Summary),
}

/// Everything checked before anything is read or sent, and before anything on disk
/// changes (but an earlier run's summary and report, which must not pass for this
/// run's): the mapping against every input, the run's own files, the checkpoint (loaded
/// and matched, or written afresh) and the locks.
fn preflight(cfg: &RunConfig, src: &SourceOptions) -> Result<Preflight, RunError> {
    let spec = crate::map::load(&cfg.mapping_path)?;
    // Never read as inputs: what the run writes, its mapping and its API key file.
    let mut own: Vec<PathBuf> = cfg.own_files.iter().map(|f| f.path.clone()).collect();
    own.push(cfg.mapping_path.clone());
    let inputs = source::discover_excluding(&cfg.inputs, src, &own)?;
    source::refuse_overwriting(&cfg.own_files, &inputs, Some(&cfg.mapping_path))?;
    // An earlier run's summary or report must not pass for this run's when this one ends
    // without writing them (a refused configuration, a second Ctrl-C, a crash).
    for f in cfg.own_files.iter().filter(|f| f.at_end) {
        if std::fs::metadata(&f.path).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&f.path);
        }
    }
    let mut plan = Plan::new(&spec, inputs, src, cfg.limits, cfg.sent_at)?;
    plan.rules.max_reject_rate = cfg.max_reject_rate;
    if cfg.strict_mapping {
        let c = plan.preview(src, STRICT_MAPPING_ROWS)?;
        if !c.never_matched.is_empty() {
            return Err(RunError::StrictMapping(strict_mapping_message(
                &c,
                STRICT_MAPPING_ROWS,
            )));
        }
    }
    if cfg.checkpoint.is_some() {
        rejects::refuse_unsyncable(&cfg.rejects_path)?;
    } else {
        rejects::refuse_taking_unfinished(cfg)?;
    }
    // A matching checkpoint says where to start; a mismatching one stops the run here.
    let durable = Durable::open(cfg, src, &plan.inputs)?;
    // Held to the end of the run (a checkpoint holds its own): a second run of the same
    // command stops here.
    let rejects_lock = match durable {
        Some(_) => None,
        None => rejects::lock_rejects(&cfg.rejects_path, true)?,
    };
    if let Some(d) = &durable {
        if d.base.complete {
            let (n, rejected) = (plan.inputs.len(), d.base.counters.rows_rejected);
            let s = Summary::already_complete(&d.path, n, &cfg.rejects_path, rejected);
            return Ok(Preflight::AlreadyComplete(s));
        }
        if !cfg.quiet {
            // Not `eprintln!`: a closed stderr stops nothing.
            let _ = writeln!(std::io::stderr(), "{}", d.starting_at(&plan.inputs));
        }
    }
    Ok(Preflight::Ready(Ready {
        plan,
        durable,
        _rejects_lock: rejects_lock,
    }))
}

/// Where requests go: nowhere (a dry run, perhaps writing them to `--output`), the
/// built-in receiver on loopback (which lives as long as the run), or a URL.
#[allow(clippy::type_complexity)]
fn transport(
    cfg: &RunConfig,
) -> Result<
    (
        Arc<dyn Transport>,
        Option<Arc<DryRunTransport>>,
        Option<Server>,
    ),
    RunError,
> {
    if cfg.dry_run {
        let d = Arc::new(match &cfg.output {
            Some(p) => DryRunTransport::writing_to(p).map_err(|source| WriteError {
                what: "--output",
                path: p.clone(),
                source,
            })?,
            None => DryRunTransport::new(None),
        });
        return Ok((d.clone(), Some(d), None));
    }
    let (base, local) = match &cfg.endpoint {
        Endpoint::Url(u) => (u.clone(), None),
        Endpoint::Local => {
            let server = Server::start(ServeConfig {
                limits: cfg.limits,
                record: cfg.local_record.clone(),
                ..Default::default()
            })?;
            (server.base_url(), Some(server))
        }
    };
    let http = HttpTransport::new(
        &base,
        cfg.api_key.as_ref(),
        cfg.strict,
        cfg.connect_timeout,
        cfg.request_timeout,
        cfg.concurrency,
    )?;
    Ok((Arc::new(http), None, local))
}

/// The inputs and the mapping compiled against each: what the front of the pipeline
/// reads and maps.
pub(crate) struct Plan {
    pub inputs: Arc<[Arc<InputInfo>]>,
    limits: Limits,
    mappings: Arc<[Arc<CompiledMapping>]>,
    encode: Arc<EncodeOptions>,
    /// When the packing stage stops the run early.
    pub rules: StopRules,
}

impl Plan {
    /// Resolves `spec` against every input before anything is read or sent.
    pub fn new(
        spec: &MappingSpec,
        inputs: Vec<Arc<InputInfo>>,
        src: &SourceOptions,
        limits: Limits,
        sent_at: bool,
    ) -> Result<Plan, RunError> {
        let mut mappings = Vec::with_capacity(inputs.len());
        for info in &inputs {
            let opened = source::open(info, src)?;
            mappings.push(Arc::new(compile(spec, opened.schema(), &info.display)?));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let encode = Arc::new(EncodeOptions {
            max_call_bytes: Packer::new(limits).max_call(),
            latest_ms: now_ms.saturating_add(mappings.first().map_or(0, |m| m.max_future_ms)),
            sent_at,
        });
        Ok(Plan {
            inputs: inputs.into(),
            limits,
            mappings: mappings.into(),
            encode,
            rules: StopRules::default(),
        })
    }

    /// What the mapping reached, given which registered names had values
    /// ([`PackTotals::present`]).
    pub fn coverage(&self, present: &BTreeMap<u32, Vec<bool>>) -> Coverage {
        let mappings: Vec<&CompiledMapping> = self.mappings.iter().map(|m| &**m).collect();
        coverage(&self.inputs, &mappings, present)
    }

    /// The coverage of the first `rows` rows of each input, read before anything is
    /// sent (`--strict-mapping`): which mapped names have a value in none of them.
    pub fn preview(&self, src: &SourceOptions, rows: usize) -> Result<Coverage, RunError> {
        let mut present = BTreeMap::new();
        for info in self.inputs.iter() {
            let mut opened = source::open(info, src)?;
            let mut chunk = opened.new_chunk(info);
            opened.fill(&mut chunk, rows.max(1))?;
            chunk.materialize().map_err(SourceError::Other)?;
            if let (false, Some(p)) = (chunk.is_empty(), chunk.present()) {
                present.insert(info.index, p.to_vec());
            }
        }
        Ok(self.coverage(&present))
    }
}

/// The stages before the senders: the reader, the mappers and the packer, on threads of
/// their own. A run sends the requests they make; `validate` counts them.
pub(crate) struct Front {
    reader: JoinHandle<Result<(), SourceError>>,
    packer: JoinHandle<PackTotals>,
}

impl Front {
    /// Starts reading at `start` and returns the requests' channel (`queue` deep).
    /// Reading stops early once any of `halt` is set.
    #[allow(clippy::too_many_arguments)] // run and validate: the plan and the stage's knobs
    pub fn start(
        plan: &Plan,
        src: &SourceOptions,
        start: Position,
        chunk_rows: usize,
        mappers: &Arc<rayon::ThreadPool>,
        halt: Vec<Arc<AtomicBool>>,
        input_rows: &Arc<Mutex<Vec<u64>>>,
        progress: &Arc<Progress>,
        spares: Spares,
        queue: usize,
        mut tap: Box<dyn FnMut(&Mapped) + Send>,
    ) -> (Front, Receiver<Request>) {
        // Chunks (and mapped buffers) in flight. Four per mapper thread keep a thread that
        // is descheduled mid-chunk from stalling the in-order packer and, behind it, every
        // other thread: with two per thread a 1M-row dry run idled a core 15% of the time
        // (perf stat -r 5: 0.44-0.45 s against 0.41-0.43 s with four). Capped so memory
        // stays flat on many cores (each is a 512 KiB block and its mapped calls).
        let pool = (mappers.current_num_threads() * 4 + 4).min(64);
        let (free_raw_tx, free_raw) = bounded::<Chunk>(pool);
        let (mapped_tx, mapped) = bounded::<Mapped>(pool);
        let (free_mapped_tx, free_mapped_rx) = bounded::<Mapped>(pool);
        for _ in 0..pool {
            let _ = free_mapped_tx.send(Mapped::default());
        }
        let (requests_tx, requests) = bounded::<Request>(queue);
        // The reader owns the dispatch, so the packer sees the mapped channel close when
        // reading is done.
        let dispatch = Dispatch {
            free_raw: free_raw_tx,
            mapped: mapped_tx,
            free_mapped: free_mapped_rx,
            mappings: plan.mappings.clone(),
            opts: plan.encode.clone(),
            mappers: mappers.clone(),
        };
        let (inputs, src) = (plan.inputs.clone(), *src);
        let (rows, progress) = (input_rows.clone(), progress.clone());
        let reader = std::thread::spawn(move || {
            let reading = Reading {
                inputs: &inputs,
                opts: &src,
                start,
                chunk_rows,
                pool,
                // The reader is the one serial stage. With three or more mapper threads
                // its CSV parse would cap a run (about 0.9 GB/s; see BENCHMARKS.md), so
                // it only scans each block for whole records (2+ GB/s) and the mappers
                // parse in parallel. With fewer, the run is CPU-bound and the scan's
                // extra instructions would cost more than they free.
                defer_parsing: dispatch.mappers.current_num_threads() >= 3,
            };
            // A read error ends reading but not delivery: every row read before the
            // damage is still mapped, sent and checkpointed, then the run reports it.
            reading.run(
                &free_raw,
                || halt.iter().any(|h| h.load(Ordering::Relaxed)),
                |seq, chunk| {
                    progress.read(&chunk);
                    dispatch.map(seq, chunk)
                },
                |input, n| {
                    if let Some(r) = lock(&rows).get_mut(input as usize) {
                        *r = n;
                    }
                },
            )
        });
        let (limits, rules) = (plan.limits, plan.rules);
        let packer = std::thread::spawn(move || {
            stage::pack(
                mapped,
                free_mapped_tx,
                requests_tx,
                limits,
                spares,
                rules,
                &mut *tap,
            )
        });
        (Front { reader, packer }, requests)
    }

    fn is_finished(&self) -> bool {
        self.reader.is_finished() && self.packer.is_finished()
    }

    /// Waits for both stages. A chunk the mappers could not read ends the run as a read
    /// error does.
    pub fn join(self) -> Result<(Result<(), SourceError>, PackTotals), RunError> {
        let read = self
            .reader
            .join()
            .map_err(|_| RunError::Panicked("reader"))?;
        let totals = self
            .packer
            .join()
            .map_err(|_| RunError::Panicked("packer"))?;
        let read = match (read, &totals.failed) {
            (Ok(()), Some(e)) => Err(SourceError::Other(e.clone())),
            (r, _) => r,
        };
        Ok((read, totals))
    }
}

/// Hands chunks to rayon for mapping, from the reader's own thread (a thread of its own
/// between them was one more wake-up per chunk on two busy cores).
struct Dispatch {
    /// Where mapped chunks go back to the reader.
    free_raw: Sender<Chunk>,
    mapped: Sender<Mapped>,
    /// Buffers for mapped calls, back from the packer: at most `pool` chunks are in
    /// flight, so the reader waits here when the mappers or the packer fall behind.
    free_mapped: Receiver<Mapped>,
    mappings: Arc<[Arc<CompiledMapping>]>,
    opts: Arc<EncodeOptions>,
    mappers: Arc<rayon::ThreadPool>,
}

impl Dispatch {
    /// Maps chunk number `seq` on a mapper thread. False when the run is shutting down.
    fn map(&self, seq: u64, mut chunk: Chunk) -> bool {
        let Ok(mut out) = self.free_mapped.recv() else {
            return false;
        };
        let mapping = self.mappings[chunk.input().index as usize].clone();
        let (free_raw, mapped, opts) = (
            self.free_raw.clone(),
            self.mapped.clone(),
            self.opts.clone(),
        );
        self.mappers.spawn(move || {
            // The reader may have only scanned a CSV block: its rows are parsed here,
            // in parallel with other chunks.
            match chunk.materialize() {
                Ok(()) => map_chunk(&chunk, &mapping, &opts, &mut out),
                Err(e) => out.failed = Some(e),
            }
            out.seq = seq;
            let _ = free_raw.send(chunk);
            let _ = mapped.send(out);
        });
        true
    }
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
