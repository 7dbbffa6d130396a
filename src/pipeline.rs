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

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::checkpoint::collect::{CollectOutcome, Collector};
use crate::checkpoint::durable::Durable;
use crate::checkpoint::{self, rejects, state, window::Window, WriteError};
use crate::config::{
    ConcurrencySetting, Endpoint, Limits, OwnFile, RunConfig, DEFAULT_CONCURRENCY, MAX_CONCURRENCY,
};
use crate::error::RunError;
use crate::map::compile::{compile, CompiledMapping};
use crate::map::encode::{map_chunk, EncodeOptions, Mapped};
use crate::map::message_id::{self, SeedScheme};
use crate::map::spec::MappingSpec;
use crate::pack::{stage, AliasAt, PackTotals, Packer, Request, Spares};
use crate::progress::{Progress, Senders};
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, Attempts, Delivery, Gate, RetryPolicy};
use crate::serve::{ServeConfig, Server};
use crate::source::read::{ReadEnd, Reading};
use crate::source::{self, Chunk, InputInfo, Position, SourceError, SourceOptions};
use crate::summary::{Outcome, Summary};

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
    } = match preflight(cfg, src)? {
        Preflight::Ready(r) => *r,
        Preflight::AlreadyComplete(s) => return Ok(*s),
    };
    // From here on, the configuration with this backfill's own paths.
    let cfg = &cfg;
    let start = durable
        .as_ref()
        .map_or_else(Position::default, |d| d.base.resume);
    // `--limit N` counts the rows of the inputs in order, those of earlier runs too.
    let rows_before = durable.as_ref().map_or(0, Durable::rows_done_before);
    let span = Span {
        start,
        limit: cfg.limit.map(|n| n.saturating_sub(rows_before)),
    };
    let rejects_len0 = durable.as_ref().map_or(0, |d| d.base.rejects_len);
    // Before the rejects file is touched: a run that cannot start its threads changes
    // nothing on disk.
    let mappers = Arc::new(mapper_pool().map_err(RunError::Threads)?);
    let rejects_file = rejects::open(&cfg.rejects_path, rejects_len0)?;
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
            gzip: cfg.gzip && !cfg.dry_run,
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
    // Complete only if everything was read and delivered.
    if let Some(d) = &durable {
        let complete = matches!(read_result, Ok(ReadEnd::AllRead))
            && fatal.is_none()
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
            &outcome.aliases(),
        )?;
        let now = d.totals(at, &outcome.counters, &rows);
        summary.backfill = Some(backfill_summary(d, rows_before, &now, complete));
    }
    summary.fill(&totals, &outcome, base, &attempts.counts());
    if !cfg.dry_run {
        summary.paused_by_429_secs = delivery.gate.paused_total().as_secs_f64();
        summary.concurrency_peak = delivery.flow.peak() as u64;
    }
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

/// The backfill's part of the summary: where this run resumed, the rows it covered and
/// the totals of every run (`now`).
fn backfill_summary(
    d: &Durable,
    rows_before: u64,
    now: &checkpoint::Counters,
    complete: bool,
) -> crate::summary::BackfillSummary {
    let name = d.base.backfill.as_ref().map_or("", |b| b.name.as_str());
    crate::summary::BackfillSummary::new(
        name,
        &d.path,
        &d.base,
        d.resumed,
        rows_before,
        now,
        complete,
    )
}

/// What a trial's summary says of the full run: a `--limit` trial's checkpoint says
/// where it resumes; a `--sample` trial's rows go again.
fn trial_note(cfg: &RunConfig, s: &Summary) -> Option<String> {
    let t = crate::progress::thousands;
    match s.outcome {
        Outcome::LimitReached => Some(format!(
            "limit reached: the first {} rows are done (checkpoint {}). The same command without --limit sends the rest, under the messageIds it would have given them: nothing is sent twice",
            t(cfg.limit.unwrap_or(0)),
            cfg.checkpoint.as_ref().map_or_else(String::new, |p| p.display().to_string())
        )),
        Outcome::Sampled => Some(format!(
            "sampled: one row in every {} of each input was sent ({} calls), under the messageIds the full run gives them; no checkpoint moved. The full run sends every row: the sampled ones go again with the same messageIds, and the API drops the repeats",
            cfg.sample.unwrap_or(1),
            t(s.calls_delivered)
        )),
        _ => None,
    }
}

/// What the preflight leaves for the run: the configuration with the backfill's paths,
/// the plan, the checkpoint, and the rejects file's lock when no checkpoint holds it.
struct Ready {
    cfg: RunConfig,
    /// The backfill's directory in the state directory, if it has one.
    dir: Option<PathBuf>,
    plan: Plan,
    durable: Option<Durable>,
    _rejects_lock: Option<std::fs::File>,
}

enum Preflight {
    Ready(Box<Ready>),
    /// The checkpoint says the backfill finished: nothing to do.
    AlreadyComplete(Box<Summary>),
}

/// Everything checked before anything is read or sent, and before anything on disk
/// changes (but an earlier run's summary and report, which must not pass for this
/// run's): the mapping against every input, the run's own files, the checkpoint (loaded
/// and matched, or written afresh) and the locks.
fn preflight(cfg: &RunConfig, src: &SourceOptions) -> Result<Preflight, RunError> {
    let spec = crate::map::load(&cfg.mapping_path)?;
    // Never read as inputs: what the run writes, its mapping, its API key file and the
    // state directory.
    let mut own: Vec<PathBuf> = cfg.own_files.iter().map(|f| f.path.clone()).collect();
    own.push(cfg.mapping_path.clone());
    own.push(cfg.state_dir.clone());
    let inputs = source::discover_excluding(&cfg.inputs, src, &own)?;
    note_same_content(&inputs, cfg.quiet)?;
    // The backfill's own checkpoint and rejects file: named, found by content in the
    // state directory, or new.
    let found = state::resolve(cfg, src, &spec.namespace, &inputs)?;
    let cfg = with_paths(cfg, &found);
    for n in &found.notes {
        say(&cfg, &format!("note: {n}"));
    }
    source::refuse_overwriting(&cfg.own_files, &inputs, Some(&cfg.mapping_path))?;
    // An earlier run's summary or report must not pass for this run's when this one ends
    // without writing them (a refused configuration, a second Ctrl-C, a crash).
    for f in cfg.own_files.iter().filter(|f| f.at_end) {
        if std::fs::metadata(&f.path).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&f.path);
        }
    }
    let mut plan = Plan::new(&spec, inputs, src, cfg.limits, cfg.sent_at)?;
    if let Some(k) = cfg.sample {
        plan.sample(k);
    }
    if cfg.checkpoint.is_some() {
        rejects::refuse_unsyncable(&cfg.rejects_path)?;
    }
    for n in found.prepare()? {
        say(&cfg, &format!("note: {n}"));
    }
    rejects::refuse_counted_elsewhere(&cfg)?;
    // A matching checkpoint says where to start; a mismatching one stops the run here.
    let durable = Durable::open(&cfg, src, &plan.inputs, &found.backfill)?;
    // A resumed backfill keeps the seeds it started with (a version 1 checkpoint: the
    // path as typed); a new one seeds by content, as `Plan::new` did.
    if let Some(d) = &durable {
        plan.reseed(&d.seeds);
    }
    // Held to the end of the run (a checkpoint holds its own): a second run of the same
    // command stops here.
    let rejects_lock = match durable {
        Some(_) => None,
        None => rejects::lock_rejects(&cfg.rejects_path, true)?,
    };
    if let Some(d) = &durable {
        if d.base.complete {
            let (n, rejected) = (plan.inputs.len(), d.base.counters.rows_rejected);
            let s = Summary::already_complete(&d.path, n, &cfg.rejects_path, rejected, &d.base);
            return Ok(Preflight::AlreadyComplete(Box::new(s)));
        }
        say(&cfg, &d.starting_at(&plan.inputs));
    }
    Ok(Preflight::Ready(Box::new(Ready {
        cfg,
        dir: found.dir,
        plan,
        durable,
        _rejects_lock: rejects_lock,
    })))
}

/// `cfg` with the checkpoint and rejects paths of its backfill ([`state::resolve`]), and
/// those among its own files (never read, never written over).
fn with_paths(cfg: &RunConfig, found: &state::Resolved) -> RunConfig {
    let mut cfg = cfg.clone();
    cfg.rejects_path = found.rejects.clone();
    if cfg.checkpoint.is_some() {
        cfg.checkpoint = found.checkpoint.clone();
    }
    // In the order the command line gives them (a clash is named at the second file).
    let mine = |flag: &'static str, path: &PathBuf| OwnFile {
        flag,
        path: path.clone(),
        written: true,
        at_end: false,
    };
    let at = |own: &[OwnFile], flag: &str| own.iter().position(|f| f.flag == flag && f.written);
    match at(&cfg.own_files, "--rejects") {
        Some(i) => cfg.own_files[i].path = cfg.rejects_path.clone(),
        None => cfg
            .own_files
            .insert(0, mine("--rejects", &cfg.rejects_path)),
    }
    if let Some(p) = cfg.checkpoint.clone() {
        match at(&cfg.own_files, "--checkpoint") {
            Some(i) => cfg.own_files[i].path = p,
            None => cfg.own_files.insert(1, mine("--checkpoint", &p)),
        }
    }
    cfg
}

/// Notes inputs whose bytes are the same (same content identity): they get the same
/// messageIds, so the API keeps one copy of their calls.
fn note_same_content(inputs: &[Arc<InputInfo>], quiet: bool) -> Result<(), RunError> {
    if inputs.len() < 2 || quiet {
        return Ok(());
    }
    let mut seen: std::collections::HashMap<source::ContentIdentity, &str> =
        std::collections::HashMap::with_capacity(inputs.len());
    for i in inputs {
        let Some(id) = i.identity()? else { continue };
        if let Some(first) = seen.insert(id, &i.display) {
            let _ = writeln!(
                std::io::stderr(),
                "note: {} has the same content as {first}: its calls get the same messageIds, so the API keeps one copy of each",
                i.display
            );
        }
    }
    Ok(())
}

/// A line on stderr unless quiet. Not `eprintln!`: a closed stderr stops nothing.
fn say(cfg: &RunConfig, line: &str) {
    if !cfg.quiet {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
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
        cfg.concurrency.max(),
        cfg.http_version,
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
        // Content seeds, as a new backfill (or a run without a checkpoint) uses; a
        // resumed one may [`Plan::reseed`].
        let seeds = message_id::seeds(SeedScheme::Content, &spec.namespace, &inputs)?;
        for (info, seed) in inputs.iter().zip(seeds) {
            let opened = source::open(info, src)?;
            let mut m = compile(spec, opened.schema(), &info.display)?;
            m.seed = seed;
            mappings.push(Arc::new(m));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let encode = Arc::new(EncodeOptions {
            max_call_bytes: Packer::new(limits).max_call(),
            latest_ms: now_ms.saturating_add(mappings.first().map_or(0, |m| m.max_future_ms)),
            sent_at,
            sample: 1,
        });
        Ok(Plan {
            inputs: inputs.into(),
            limits,
            mappings: mappings.into(),
            encode,
        })
    }
}

impl Plan {
    /// `--sample K`: map only every K-th row of each input.
    pub fn sample(&mut self, every: u64) {
        Arc::make_mut(&mut self.encode).sample = every.max(1);
    }

    /// Makes each input's messageIds with `seeds` (those a resumed checkpoint records).
    pub fn reseed(&mut self, seeds: &[u64]) {
        self.mappings = self
            .mappings
            .iter()
            .zip(seeds)
            .map(|(m, &seed)| {
                if m.seed == seed {
                    m.clone()
                } else {
                    Arc::new(CompiledMapping {
                        seed,
                        ..(**m).clone()
                    })
                }
            })
            .collect();
    }
}

/// The stages before the senders: the reader, the mappers and the packer, on threads of
/// their own. A run sends the requests they make; `validate` counts them.
pub(crate) struct Front {
    reader: JoinHandle<Result<ReadEnd, SourceError>>,
    packer: JoinHandle<PackTotals>,
}

/// Where the front starts reading, and how much it reads at most.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    pub start: Position,
    /// Rows to read at most from `start` (`--limit`, less what earlier runs did).
    pub limit: Option<u64>,
}

/// The reader and the mappers, running: mapped chunks come out of `mapped` (in any
/// order, numbered), and their buffers go back through `free_mapped`.
struct Mapping {
    reader: JoinHandle<Result<ReadEnd, SourceError>>,
    mapped: Receiver<Mapped>,
    free_mapped: Sender<Mapped>,
}

impl Front {
    /// Starts reading at `span.start` and returns the requests' channel (`queue` deep).
    /// Reading stops early once any of `halt` is set.
    #[allow(clippy::too_many_arguments)] // run and validate: the plan and the stage's knobs
    pub fn start(
        plan: &Plan,
        src: &SourceOptions,
        span: Span,
        chunk_rows: usize,
        mappers: &Arc<rayon::ThreadPool>,
        halt: Vec<Arc<AtomicBool>>,
        input_rows: &Arc<Mutex<Vec<u64>>>,
        progress: &Arc<Progress>,
        spares: Spares,
        queue: usize,
        delivered: HashSet<AliasAt>,
        mut tap: Box<dyn FnMut(&Mapped) + Send>,
    ) -> (Front, Receiver<Request>) {
        let m = start_mapping(
            plan, src, span, chunk_rows, mappers, halt, input_rows, progress,
        );
        let (requests_tx, requests) = bounded::<Request>(queue);
        let limits = plan.limits;
        let (mapped, free_mapped) = (m.mapped, m.free_mapped);
        let start = span.start;
        let packer = std::thread::spawn(move || {
            stage::pack(
                start,
                mapped,
                free_mapped,
                requests_tx,
                limits,
                spares,
                &delivered,
                &mut *tap,
            )
        });
        (
            Front {
                reader: m.reader,
                packer,
            },
            requests,
        )
    }

    fn is_finished(&self) -> bool {
        self.reader.is_finished() && self.packer.is_finished()
    }

    /// Waits for both stages. A chunk the mappers could not read ends the run as a read
    /// error does.
    pub fn join(self) -> Result<(Result<ReadEnd, SourceError>, PackTotals), RunError> {
        let read = self
            .reader
            .join()
            .map_err(|_| RunError::Panicked("reader"))?;
        let totals = self
            .packer
            .join()
            .map_err(|_| RunError::Panicked("packer"))?;
        let read = match (read, &totals.failed) {
            (Ok(_), Some(e)) => Err(SourceError::Other(e.clone())),
            (r, _) => r,
        };
        Ok((read, totals))
    }
}

/// Starts the reader (on a thread of its own) and the mappers (on `mappers`).
#[allow(clippy::too_many_arguments)]
fn start_mapping(
    plan: &Plan,
    src: &SourceOptions,
    span: Span,
    chunk_rows: usize,
    mappers: &Arc<rayon::ThreadPool>,
    halt: Vec<Arc<AtomicBool>>,
    input_rows: &Arc<Mutex<Vec<u64>>>,
    progress: &Arc<Progress>,
) -> Mapping {
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
    // The reader owns the dispatch, so the consumer sees the mapped channel close when
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
            start: span.start,
            chunk_rows,
            pool,
            // The reader is the one serial stage. With three or more mapper threads
            // its CSV parse would cap a run (about 0.9 GB/s; see BENCHMARKS.md), so
            // it only scans each block for whole records (2+ GB/s) and the mappers
            // parse in parallel. With fewer, the run is CPU-bound and the scan's
            // extra instructions would cost more than they free.
            defer_parsing: dispatch.mappers.current_num_threads() >= 3,
            limit: span.limit,
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
    Mapping {
        reader,
        mapped,
        free_mapped: free_mapped_tx,
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
