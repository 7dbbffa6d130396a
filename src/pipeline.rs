//! The only module that creates threads and channels: the whole data flow on one screen.
//!
//! ```text
//!  reader ──pool.spawn───▶ mappers ──mapped──▶ packer ──requests──▶ senders ×N ──acks──▶ collector
//!    ▲  ▲                     │                   │                                  (this thread)
//!    │  └──── free chunks ◀───┘                   │
//!    └──────────── free mapped buffers ◀──────────┘
//! ```
//!
//! Every channel is bounded and every buffer is recycled, so memory does not grow with
//! the input: at most `pool` chunks of rows and `pool` mapped chunks exist at once, and
//! at most 16 packed requests wait for the gate and 16 more for a sender, however many
//! senders there are (each request holds its body). Mapping runs on rayon in
//! parallel; the packer restores input order by sequence number before packing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, SendTimeoutError, Sender};

use crate::checkpoint::{self, window::Window, Checkpoint};
use crate::config::{Endpoint, Limits, OwnFile, RunConfig};
use crate::map::compile::{compile, CompiledMapping};
use crate::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped, Reject};
use crate::map::spec::CallKind;
use crate::pack::{resume_points, KeyedPacker, Packed, Packer, Spares, TooLarge};
use crate::progress::Progress;
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, AckResult, CallOrigin, Gate, RetryPolicy, Work};
use crate::source::{self, Chunk, FileId, InputInfo, Position, SourceOptions};
use crate::summary::Summary;
use crate::RunError;

/// The most requests queued for the gate, and for the senders past it; see `run_with_progress`.
const QUEUE_AHEAD: usize = 16;

/// Runs a backfill to the end (or to the first fatal error).
pub fn run(cfg: &RunConfig, src_opts: &SourceOptions) -> Result<Summary, RunError> {
    run_with_progress(cfg, src_opts, &Progress::hidden())
}

/// [`run`], reporting progress (and recording what `--report` draws) into `progress`.
pub fn run_with_progress(
    cfg: &RunConfig,
    src_opts: &SourceOptions,
    progress: &Progress,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let spec = crate::map::load(&cfg.mapping_path)?;
    // Never read as inputs: what the run writes, its mapping and its API key file.
    let own: Vec<PathBuf> = cfg
        .own_files
        .iter()
        .map(|f| f.path.clone())
        .chain([cfg.mapping_path.clone()])
        .collect();
    let inputs = source::discover_excluding(&cfg.inputs, &spec.namespace, src_opts, &own)?;
    source::refuse_overwriting(&cfg.own_files, &inputs, Some(&cfg.mapping_path))
        .map_err(RunError::Config)?;
    // An earlier run's summary or report must not pass for this run's when this one ends
    // without writing them (a refused configuration, a second Ctrl-C, a crash).
    for f in cfg.own_files.iter().filter(|f| f.at_end) {
        if std::fs::metadata(&f.path).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&f.path);
        }
    }

    // Resolve the mapping against every input before anything is read or sent.
    let mut mappings = Vec::with_capacity(inputs.len());
    for info in &inputs {
        let opened = source::open(info, src_opts)?;
        mappings.push(Arc::new(compile(&spec, opened.schema(), &info.display)?));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let encode_opts = Arc::new(EncodeOptions {
        max_call_bytes: Packer::new(cfg.limits).max_call(),
        latest_ms: now_ms.saturating_add(mappings.first().map_or(0, |m| m.max_future_ms)),
        sent_at: cfg.sent_at,
    });

    // Before the checkpoint is touched: a run refused here changes nothing on disk.
    if cfg.checkpoint.is_some() {
        refuse_unsyncable_rejects(&cfg.rejects_path)?;
    } else {
        refuse_taking_unfinished_rejects(cfg)?;
    }
    // A matching checkpoint says where to start; a mismatching one stops the run here.
    let durable = Durable::open(cfg, src_opts, &inputs)?;
    // Held to the end of the run (a checkpoint holds its own): a second run of the same
    // command stops here.
    let _rejects_lock = match durable {
        Some(_) => None,
        None => lock_rejects(&cfg.rejects_path, true)?,
    };
    let start = durable
        .as_ref()
        .map_or(Position::default(), |d| d.base.resume);
    if let Some(d) = durable.as_ref().filter(|d| d.base.complete) {
        return Ok(Summary {
            outcome: format!(
                "already complete according to {} (use --restart to send everything again)",
                d.path.display()
            ),
            inputs: inputs.len() as u64,
            rejects_file: cfg.rejects_path.display().to_string(),
            rows_rejected_total: d.base.counters.rows_rejected,
            ..Summary::default()
        });
    }
    if !cfg.quiet {
        if let Some(d) = &durable {
            if d.resumed {
                let done = crate::checkpoint::fraction_done(&d.base)
                    .map_or_else(String::new, |f| format!(" ({:.1}% done)", f * 100.0));
                eprintln!(
                    "resuming from {}: {} at row {}{done}",
                    d.path.display(),
                    inputs[start.input as usize].display,
                    start.row + 1,
                );
            } else {
                eprintln!("checkpoint: {}", d.path.display());
            }
        }
    }
    let rejects_len0 = durable.as_ref().map_or(0, |d| d.base.rejects_len);
    // Before the rejects file is touched: a run that cannot start its threads changes
    // nothing on disk.
    let mappers = mapper_pool().map_err(|e| RunError::Io {
        path: "cannot start the mapper threads".into(),
        source: std::io::Error::other(e),
    })?;
    let rejects_file = open_rejects(&cfg.rejects_path, rejects_len0)?;

    // The receiver for `--endpoint local` lives as long as the run.
    let mut local = None;
    let dry: Option<Arc<DryRunTransport>>;
    let transport: Arc<dyn Transport> = if cfg.dry_run {
        let out: Option<Box<dyn Write + Send>> = match &cfg.output {
            Some(p) => Some(Box::new(BufWriter::with_capacity(
                1 << 20,
                File::create(p).map_err(|source| RunError::Io {
                    path: p.display().to_string(),
                    source,
                })?,
            ))),
            None => None,
        };
        let d = Arc::new(DryRunTransport::new(out));
        dry = Some(d.clone());
        d
    } else {
        dry = None;
        let base = match &cfg.endpoint {
            Endpoint::Url(u) => u.clone(),
            Endpoint::Local => {
                let server = crate::serve::Server::start(crate::serve::ServeConfig {
                    addr: "127.0.0.1:0"
                        .parse()
                        .expect("a literal socket address parses"),
                    api_key: None,
                    limits: cfg.limits,
                    record: cfg.local_record.clone(),
                    faults: Default::default(),
                })?;
                let url = server.base_url();
                local = Some(server);
                url
            }
        };
        Arc::new(
            HttpTransport::new(
                &base,
                cfg.api_key.as_ref(),
                cfg.strict,
                cfg.connect_timeout,
                cfg.request_timeout,
                cfg.concurrency,
            )
            .map_err(RunError::Delivery)?,
        )
    };
    let concurrency = if cfg.dry_run {
        1
    } else {
        cfg.concurrency.max(1)
    };
    progress.begin(&inputs, start, cfg.limits, concurrency);
    let gate = if cfg.dry_run {
        Gate::new(None, None)
    } else {
        Gate::new(Some(cfg.rate_per_sec), cfg.events_rate_per_sec)
    };
    let policy = RetryPolicy {
        max_retries: cfg.max_retries,
        base: cfg.backoff_base,
        cap: cfg.backoff_cap,
        strict: cfg.strict,
        gzip: cfg.gzip && !cfg.dry_run,
    };

    // Chunks (and mapped buffers) in flight. Four per mapper thread keep a thread that
    // is descheduled mid-chunk from stalling the in-order packer and, behind it, every
    // other thread: with two per thread a 1M-row dry run idled a core 15% of the time
    // (perf stat -r 5: 0.44-0.45 s against 0.41-0.43 s with four). Capped so memory
    // stays flat on many cores (each is a 512 KiB block and its mapped calls).
    let pool = (mappers.current_num_threads() * 4 + 4).min(64);
    let (free_raw_tx, free_raw_rx) = bounded::<Chunk>(pool);
    let (mapped_tx, mapped_rx) = bounded::<Mapped>(pool);
    let (free_mapped_tx, free_mapped_rx) = bounded::<Mapped>(pool);
    for _ in 0..pool {
        free_mapped_tx
            .send(Mapped::default())
            .expect("the pool channel has room for `pool` buffers");
    }
    // The queues ahead of the senders: deep enough to ride out the packer's bursts, but
    // not as deep as --concurrency is wide, since each entry holds a body of up to the
    // request limit (at --concurrency 128 they held 384 bodies, about 190 MB).
    let (work_tx, packed_rx) = bounded::<Work>((concurrency * 2).min(QUEUE_AHEAD));
    let (gated_tx, work_rx) = bounded::<Work>(concurrency.min(QUEUE_AHEAD));
    // Requests sent but not yet covered by a durable checkpoint: what a crash can replay.
    let window = Window::new(2 * concurrency);
    let halt_reading = AtomicBool::new(false);
    let input_rows: Mutex<Vec<u64>> = Mutex::new(
        durable
            .as_ref()
            .map_or_else(|| vec![0; inputs.len()], |d| d.base.input_rows.clone()),
    );
    let (ack_tx, ack_rx) = unbounded::<Ack>();
    // Bodies come back from the collector: at most the two queues, the senders' own and
    // the acknowledgements not yet folded can be in flight at once.
    let spares = Spares::new(
        2 * concurrency + 2 * QUEUE_AHEAD + 4,
        cfg.limits.max_request_bytes,
    );
    let stop = AtomicBool::new(false);
    let rejects_path = cfg.rejects_path.display().to_string();

    let mut summary = Summary {
        inputs: inputs.len() as u64,
        rejects_file: cfg.rejects_path.display().to_string(),
        dry_run: cfg.dry_run,
        ..Summary::default()
    };

    let (read_result, pack_result, outcome) = std::thread::scope(|s| {
        let dispatch = Dispatch {
            free_raw: free_raw_tx,
            mapped: mapped_tx,
            free_mapped: free_mapped_rx,
            mappings: &mappings,
            opts: &encode_opts,
            mappers: &mappers,
        };
        // The reader owns the dispatch, so the packer sees the mapped channel close
        // when reading is done.
        let (inputs, stop_ref, halt_ref, rows_ref) = (&inputs, &stop, &halt_reading, &input_rows);
        let reader = s.spawn(move || {
            let r = read_inputs(
                inputs,
                src_opts,
                start,
                cfg.chunk_rows,
                pool,
                free_raw_rx,
                &dispatch,
                &[stop_ref, halt_ref],
                rows_ref,
                progress,
            );
            // A read error ends reading but not delivery: every row read before the
            // damage is still mapped, sent and checkpointed, then the run reports it.
            r
        });
        let spares_in = spares.clone();
        let packer = s.spawn(|| pack(mapped_rx, free_mapped_tx, work_tx, cfg.limits, spares_in));
        // Holds each request until the durable window has room. Owns `gated_tx`, so the
        // senders see the channel close when the packer is done.
        // After an interrupt it forwards nothing more, not even a request it was waiting
        // to forward, and discards the rest, so the packer is never blocked (even with
        // every sender stuck in a request, as when the drain times out): every request a
        // sender was handed is still delivered, so nothing delivered can lie beyond the
        // watermark and a resume replays nothing.
        let (win, st, checkpointing, halted, prog) =
            (&window, &stop, durable.is_some(), &halt_reading, progress);
        s.spawn(move || {
            let is_halted = || halted.load(Ordering::Relaxed);
            for mut w in packed_rx {
                if is_halted() {
                    continue;
                }
                let has_body = w.body.is_some();
                let permit = has_body
                    && checkpointing
                    && win.acquire(|| st.load(Ordering::Relaxed) || is_halted());
                // The senders may all be stuck in requests (a drain that times out):
                // wait for room only until an interrupt.
                let handed = !is_halted()
                    && loop {
                        match gated_tx.send_timeout(w, std::time::Duration::from_millis(50)) {
                            Ok(()) => break true,
                            Err(SendTimeoutError::Timeout(_)) if is_halted() => break false,
                            Err(SendTimeoutError::Timeout(back)) => w = back,
                            Err(SendTimeoutError::Disconnected(_)) => return,
                        }
                    };
                if !handed {
                    if permit {
                        win.release(1);
                    }
                    continue;
                }
                if has_body {
                    prog.forwarded();
                }
            }
        });
        for _ in 0..concurrency {
            let (rx, tx) = (work_rx.clone(), ack_tx.clone());
            let (t, g, st, ins) = (&*transport, &gate, &stop, &inputs[..]);
            s.spawn(move || send::worker(rx, tx, t, g, policy, st, ins, progress));
        }
        drop(work_rx);
        drop(ack_tx);
        let c = Collector {
            summary: &mut summary,
            rejects: BufWriter::with_capacity(1 << 16, rejects_file),
            rejects_len: rejects_len0,
            rejects_path: &rejects_path,
            durable: durable.as_ref(),
            window: &window,
            input_rows: &input_rows,
            interval: cfg.checkpoint_interval,
            interrupt: cfg.interrupt.as_deref(),
            drain_timeout: cfg.drain_timeout,
            halt_reading: &halt_reading,
            stop: &stop,
            quiet: cfg.quiet,
            progress,
            spares,
        };
        let outcome = c.run(ack_rx);
        if outcome.abandoned {
            let durable_base = durable.as_ref().map(|d| &d.base);
            abandon(
                cfg,
                &mut summary,
                &outcome,
                durable_base,
                reader,
                packer,
                progress,
                started,
            );
        }
        let read_result = reader
            .join()
            .unwrap_or_else(|_| Err(source::SourceError::Other("reader thread panicked".into())));
        let pack_result = packer
            .join()
            .map_err(|_| RunError::Delivery("packer thread panicked".into()));
        (read_result, pack_result, outcome)
    });
    let fatal = outcome.fatal.clone();
    // A chunk the mapper could not read ends the run as a read error does.
    let read_result = match (read_result, &pack_result) {
        (
            Ok(()),
            Ok(PackTotals {
                failed: Some(e), ..
            }),
        ) => Err(source::SourceError::Other(e.clone())),
        (r, _) => r,
    };
    if let Some(e) = &outcome.io_error {
        return Err(RunError::Io {
            path: rejects_path.clone(),
            source: std::io::Error::other(e.clone()),
        });
    }
    // The last checkpoint of this run: complete only if everything was read and delivered.
    if let Some(d) = &durable {
        let complete = read_result.is_ok()
            && fatal.is_none()
            && !outcome.interrupted
            && outcome.all_acknowledged;
        d.write(&outcome, complete, &input_rows)?;
    }

    fill_summary(&mut summary, pack_result?, progress);
    if let Some(d) = &dry {
        d.flush().map_err(|source| RunError::Io {
            path: cfg
                .output
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source,
        })?;
    }
    if let Some(server) = local {
        server.shutdown();
    }
    summary.finish(started.elapsed());
    summary.rows_rejected_total = rejected_total(&outcome, durable.as_ref().map(|d| &d.base));
    if outcome.interrupted && read_result.is_ok() && fatal.is_none() {
        summary.outcome = "interrupted".into();
        return Err(RunError::Interrupted {
            summary: Box::new(summary),
            checkpoint: durable.as_ref().map(|d| d.path.display().to_string()),
        });
    }
    if let Err(e) = read_result {
        summary.outcome = "failed".into();
        return Err(RunError::Partial {
            summary: Box::new(summary),
            cause: e.to_string(),
        });
    }
    if let Some(why) = fatal {
        summary.outcome = "failed".into();
        let again = if durable.is_some() {
            "The checkpoint stays before this request; the same command resumes from there"
        } else {
            "No checkpoint was kept: a rerun starts from the beginning"
        };
        let beyond = resent_beyond(outcome.beyond, "sent after it")
            .map_or_else(String::new, |b| format!(" ({b})"));
        return Err(RunError::Partial {
            summary: Box::new(summary),
            cause: format!("{why}. {again}{beyond}"),
        });
    }
    summary.outcome = "completed".into();
    Ok(summary)
}

/// Reads every input in order into chunks, starting at `start`. Stops early when any of
/// `halt` is set. Records each finished input's row count in `input_rows`.
#[allow(clippy::too_many_arguments)]
fn read_inputs(
    inputs: &[Arc<InputInfo>],
    opts: &SourceOptions,
    start: Position,
    chunk_rows: usize,
    pool: usize,
    free: Receiver<Chunk>,
    out: &Dispatch<'_>,
    halt: &[&AtomicBool],
    input_rows: &Mutex<Vec<u64>>,
    progress: &Progress,
) -> Result<(), source::SourceError> {
    let mut seq = 0;
    let mut created = 0;
    let mut spare: Option<Chunk> = None;
    // The reader is the one serial stage. With three or more mapper threads its CSV
    // parse would cap a run (about 0.9 GB/s; see BENCHMARKS.md), so it only scans each
    // block for whole records (2+ GB/s) and the mappers parse in parallel. With fewer,
    // the run is CPU-bound and the scan's extra instructions would cost more than they
    // free.
    let defer_parsing = out.mappers.current_num_threads() >= 3;
    let halted = || halt.iter().any(|h| h.load(Ordering::Relaxed));
    for info in inputs.iter().skip(start.input as usize) {
        let mut src = if info.index == start.input {
            source::open_at(info, opts, start)?
        } else {
            source::open(info, opts)?
        };
        let mut rows = if info.index == start.input {
            start.row
        } else {
            0
        };
        loop {
            if halted() {
                return Ok(());
            }
            let mut chunk = match spare.take().or_else(|| free.try_recv().ok()) {
                Some(c) => c,
                None if created < pool => {
                    created += 1;
                    src.new_chunk(info)
                }
                None => match free.recv() {
                    Ok(c) => c,
                    Err(_) => return Ok(()),
                },
            };
            if std::mem::discriminant(&chunk) != std::mem::discriminant(&src.new_chunk(info)) {
                chunk = src.new_chunk(info);
            }
            if defer_parsing {
                src.fill_deferred(&mut chunk, chunk_rows)?;
            } else {
                src.fill(&mut chunk, chunk_rows)?;
            }
            if chunk.is_empty() {
                spare = Some(chunk);
                break;
            }
            rows = chunk.first_row() + chunk.len() as u64;
            progress.read(&chunk);
            if !out.map(seq, chunk) {
                return Ok(());
            }
            seq += 1;
        }
        if let Some(r) = lock(input_rows).get_mut(info.index as usize) {
            *r = rows;
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the rejects file: created afresh, or (resuming) cut back to the length the
/// checkpoint recorded, so it never holds a line twice.
///
/// The cut itself runs on a thread of its own: freeing what an earlier run left (7.5 ms
/// for a 30 MB rejects file, so about a quarter of a second per GB) is kernel work the
/// pipeline need not wait for. Every write, flush and sync waits for it first, so
/// nothing is ever written before it and then cut away.
fn open_rejects(path: &std::path::Path, keep: u64) -> Result<RejectsFile, RunError> {
    let io = |source| RunError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create(keep == 0)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && keep > 0 => {
            return Err(RunError::Config(format!(
                "the rejects file {} is missing, and the checkpoint counts {keep} bytes of rejects in it. Restore it, or start over with --restart.",
                path.display()
            )))
        }
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len < keep {
        return Err(RunError::Config(format!(
            "the rejects file {} is shorter ({len} bytes) than the checkpoint recorded ({keep} bytes): it was truncated or replaced. Restore it, or start over with --restart.",
            path.display()
        )));
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
        file,
        cut,
        failed: None,
    })
}

/// The packer's totals and the senders' retry counts into the summary, with the calls the API refused in strict mode
/// counted as rejected rows too (exactly one row per call when the mapping makes one
/// call per row).
fn fill_summary(summary: &mut Summary, totals: PackTotals, progress: &Progress) {
    // Counted by the senders as they happen, so they include the retries of requests
    // that never finished (a failed run, a drain timeout).
    (
        summary.retries,
        summary.throttled,
        summary.retries_no_answer,
    ) = progress.attempts();
    summary.rows_read = totals.rows;
    summary.rows_rejected = totals.rows_rejected;
    summary.rows_mapped = totals.rows - totals.rows_rejected;
    summary.rejected_by_reason = totals
        .rejected_by_reason
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    summary.calls_built = totals.calls;
    summary.calls_by_type = CallKind::ALL
        .iter()
        .zip(totals.calls_by_type)
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| (k.as_str().to_string(), n))
        .collect();
    let refused = summary.calls_rejected_by_server;
    if refused > 0 {
        summary.rows_rejected += refused;
        summary.rows_mapped = summary.rows_mapped.saturating_sub(refused);
        *summary
            .rejected_by_reason
            .entry("invalid_call".into())
            .or_default() += refused;
    }
    summary.calls_undelivered = summary
        .calls_built
        .saturating_sub(summary.calls_delivered + refused);
}

/// Says that `beyond` (calls, requests) was accepted past a request that did not finish
/// (`after` says where), counted as delivered, and is sent again on resume; `None` when
/// there is none.
fn resent_beyond((calls, requests): (u64, u64), after: &str) -> Option<String> {
    (calls > 0).then(|| {
        format!(
            "{calls} calls in {requests} request{} {after} were accepted, and are counted as delivered; a resume sends them again, with the messageIds they had, so the API can drop the repeats",
            if requests == 1 { "" } else { "s" }
        )
    })
}

/// What the rejects file holds: the earlier runs' lines and the ones this run wrote for
/// acknowledged work. A run that stops early has found more bad rows than that
/// (`rows_rejected`); the rest are found again when it resumes.
fn rejected_total(outcome: &CollectOutcome, base: Option<&Checkpoint>) -> u64 {
    outcome.counters.rows_rejected + base.map_or(0, |b| b.counters.rows_rejected)
}

/// Ends a run whose requests still hang after the drain timeout: the checkpoint is
/// already written, and the senders cannot be joined (they are inside their requests),
/// so this completes the summary from the reader's and packer's ends (they stop soon
/// after reading halts: the gate discards what the stuck senders cannot take), hands it
/// to `cfg.on_abandon`, says where things stand and exits with 130. Never returns.
#[allow(clippy::too_many_arguments)] // one call site, inside the thread scope
fn abandon(
    cfg: &RunConfig,
    summary: &mut Summary,
    outcome: &CollectOutcome,
    base: Option<&Checkpoint>,
    reader: std::thread::ScopedJoinHandle<'_, Result<(), source::SourceError>>,
    packer: std::thread::ScopedJoinHandle<'_, PackTotals>,
    progress: &Progress,
    started: Instant,
) -> ! {
    use std::io::Write as _;
    // Reading stopped when the interrupt came, so both end within moments; a stage that
    // does not is left behind, and so is the summary.
    let until = Instant::now() + std::time::Duration::from_secs(2);
    while !(reader.is_finished() && packer.is_finished()) && Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ended = reader.is_finished() && packer.is_finished();
    let (read, totals) = if ended {
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(source::SourceError::Other("reader thread panicked".into())));
        (read, packer.join().ok())
    } else {
        (Ok(()), None)
    };
    // What else went wrong before the interrupt, as the normal end reports it.
    let failed = outcome
        .fatal
        .clone()
        .or_else(|| outcome.io_error.clone())
        .or_else(|| read.err().map(|e| e.to_string()))
        .or_else(|| totals.as_ref().and_then(|t| t.failed.clone()));
    let again = resent_beyond(outcome.beyond, "after the first hanging one")
        .map_or_else(String::new, |b| format!("; {b}"));
    let next = if cfg.checkpoint.is_some() {
        format!("the checkpoint is up to date: rerun the same command to resume (the requests still in flight are sent again{again})")
    } else {
        "no checkpoint was kept: a rerun starts from the beginning".to_string()
    };
    let mut why = format!(
        "requests still in flight after --drain-timeout ({}s); {next}",
        cfg.drain_timeout.as_secs()
    );
    if let Some(f) = &failed {
        why = format!("{f}; then {why}");
    }
    progress.finish();
    let written = match (totals, &cfg.on_abandon) {
        (Some(totals), Some(hook)) => {
            fill_summary(summary, totals, progress);
            summary.finish(started.elapsed());
            summary.rows_rejected_total = rejected_total(outcome, base);
            summary.outcome = if failed.is_some() {
                "failed"
            } else {
                "interrupted"
            }
            .into();
            (hook.0)(summary, &progress.recorded(), &why);
            true
        }
        _ => false,
    };
    // A closed stderr must not turn the exit into a panic inside the thread scope, which
    // would wait for the stuck senders.
    let _ = writeln!(
        std::io::stderr(),
        "error: {why}. {} calls were delivered.{}",
        summary.calls_delivered,
        if written || cfg.on_abandon.is_none() {
            ""
        } else {
            " No summary file or report is written."
        }
    );
    std::process::exit(130);
}

/// A run that keeps no checkpoint (a dry run, `--no-checkpoint`) starts its rejects file
/// afresh, so it may not take the one an unfinished backfill's checkpoint (at the
/// `--checkpoint` path, by default in this directory) counts: a rehearsal would cut away
/// that backfill's rejects.
fn refuse_taking_unfinished_rejects(cfg: &RunConfig) -> Result<(), RunError> {
    let Some(OwnFile { path, .. }) = cfg.own_files.iter().find(|f| f.flag == "--checkpoint") else {
        return Ok(());
    };
    // A checkpoint that cannot be read is not this run's business: it reads none.
    let Ok(Some(cp)) = checkpoint::load(path) else {
        return Ok(());
    };
    if cp.complete
        || cp.rejects_len == 0
        || FileId::of(std::path::Path::new(&cp.rejects_file)) != FileId::of(&cfg.rejects_path)
    {
        return Ok(());
    }
    Err(RunError::Config(format!(
        "{} holds the rejects of the unfinished backfill recorded in {}, and this run keeps no checkpoint, so it would start that file afresh. Give this run another --rejects path.",
        cfg.rejects_path.display(),
        path.display()
    )))
}

/// Locks the rejects file (a regular file, or none yet) for this run: two runs writing
/// one rejects file would interleave their lines. `create`: make the file if it is not
/// there (false when a checkpoint counts lines in it: then [`open_rejects`] reports it
/// missing, and a refused run leaves nothing behind).
fn lock_rejects(path: &std::path::Path, create: bool) -> Result<Option<File>, RunError> {
    if std::fs::metadata(path).map_or(!create, |m| !m.is_file()) {
        return Ok(None); // a pipe or a device: nothing to cut, nothing to guard
    }
    // Found before anything is sent (and before a fresh checkpoint is written).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            RunError::Config(format!(
                "--rejects {}: cannot open it for writing: {e}. Create its directory, or name another path.",
                path.display()
            ))
        })?;
    lock_exclusive(file, path, "its rejects file")
}

/// Locks the checkpoint for this run, through a hidden file beside it (the checkpoint
/// itself is replaced by each write): a second run on the same checkpoint stops before
/// it reads the checkpoint, whatever its other paths.
fn lock_checkpoint(path: &std::path::Path) -> Result<Option<File>, RunError> {
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
    path: &std::path::Path,
    what: &str,
) -> Result<Option<File>, RunError> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: `flock` takes a file descriptor that `file` keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(RunError::Config(format!(
                    "another run is using {} ({what}) now: wait for it to end. Two runs of one backfill at once would send everything twice.",
                    path.display()
                )));
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
fn refuse_unsyncable_rejects(path: &std::path::Path) -> Result<(), RunError> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    if m.is_dir() {
        return Err(RunError::Config(format!(
            "--rejects {} is a directory: name a file (in it, or anywhere else).",
            path.display()
        )));
    }
    if !m.is_file() {
        return Err(RunError::Config(format!(
            "--rejects {} is not a regular file: a checkpoint counts the rejects file's length and syncs it to disk, which only a regular file allows (not a pipe, a terminal or a device). Name a file, or add --no-checkpoint (or --dry-run) to send rejects there.",
            path.display()
        )));
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
/// past that point may still be being cut away ([`open_rejects`]).
///
/// A run killed (SIGKILL, a second Ctrl-C) in the moment before the cut finishes leaves
/// the earlier lines in place, where an `O_TRUNC` open would not have: the next run
/// cuts them, and no checkpoint can count them (one is written only after a sync,
/// which waits for the cut).
struct RejectsFile {
    file: File,
    cut: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Why the cut failed, if it did: every later write fails too, so no line of this
    /// run lands among an earlier run's.
    failed: Option<(std::io::ErrorKind, String)>,
}

impl RejectsFile {
    /// The file, once nothing is left beyond where this run writes.
    fn ready(&mut self) -> std::io::Result<&mut File> {
        if let Some(cut) = self.cut.take() {
            let done = cut.join().unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the thread cutting the file back panicked",
                ))
            });
            if let Err(e) = done {
                self.failed = Some((e.kind(), format!("cannot cut it back: {e}")));
            }
        }
        match &self.failed {
            Some((kind, why)) => Err(std::io::Error::new(*kind, why.clone())),
            None => Ok(&mut self.file),
        }
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        self.ready()?.sync_data()
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
        if let Some(cut) = self.cut.take() {
            let _ = cut.join();
        }
    }
}

/// The checkpoint of this run: where it lives and what every write of it repeats.
struct Durable {
    path: std::path::PathBuf,
    /// As loaded (resuming) or as started; `resume`, `rejects_len` and counters are the
    /// starting point of this run.
    base: Checkpoint,
    resumed: bool,
    /// The checkpoint's lock, taken before it is read, and the rejects file's, taken
    /// once the checkpoint is known to fit this run and before it is written.
    _locks: [Option<File>; 2],
}

impl Durable {
    fn open(
        cfg: &RunConfig,
        src: &SourceOptions,
        inputs: &[Arc<InputInfo>],
    ) -> Result<Option<Durable>, RunError> {
        let Some(path) = cfg.checkpoint.clone() else {
            return Ok(None);
        };
        let ck = |e: checkpoint::CheckpointError| RunError::Checkpoint(Box::new(e));
        let checkpoint_lock = lock_checkpoint(&path)?;
        let mut prints = Vec::with_capacity(inputs.len());
        for i in inputs {
            if i.path.as_os_str() == "-" {
                return Err(RunError::Config(
                    "standard input cannot be resumed: pass --no-checkpoint, or save the data to a file".into(),
                ));
            }
            prints.push(checkpoint::fingerprint(i).map_err(|source| RunError::Io {
                path: i.display.clone(),
                source,
            })?);
        }
        let endpoint = match &cfg.endpoint {
            Endpoint::Local => "local".to_string(),
            Endpoint::Url(u) => u.clone(),
        };
        let config_hash = config_hash(cfg, src)?;
        let existing = if cfg.restart {
            None
        } else {
            checkpoint::load(&path).map_err(ck)?
        };
        if let Some(mut cp) = existing {
            let notes = checkpoint::check_matches(&mut cp, &path, &endpoint, &config_hash, &prints)
                .map_err(ck)?;
            for n in notes {
                eprintln!("note: {n}");
            }
            let recorded = std::path::Path::new(&cp.rejects_file);
            if FileId::of(recorded) != FileId::of(&cfg.rejects_path) {
                if cp.rejects_len > 0 {
                    return Err(RunError::Config(format!(
                        "{} counts {} bytes of this backfill's rejects in {}, but this run names --rejects {}: resuming would cut that file, and leave the earlier rejects elsewhere. Resume with --rejects {} (restore it if it is gone), or start over with --restart.",
                        path.display(),
                        cp.rejects_len,
                        cp.rejects_file,
                        cfg.rejects_path.display(),
                        cp.rejects_file
                    )));
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
            }));
        }
        let base = Checkpoint {
            version: checkpoint::VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            written_at: String::new(),
            endpoint,
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
        };
        // Written before anything is sent, so a crash at any point leaves a checkpoint.
        let d = Durable {
            _locks: [checkpoint_lock, lock_rejects(&cfg.rejects_path, true)?],
            path,
            base,
            resumed: false,
        };
        d.store(
            Position::default(),
            0,
            &Default::default(),
            false,
            &d.base.input_rows,
        )?;
        Ok(Some(d))
    }

    /// Writes a checkpoint taken while the run goes on: requests past `resume` may be on
    /// their way (not drained).
    fn store(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &checkpoint::Counters,
        complete: bool,
        input_rows: &[u64],
    ) -> Result<(), RunError> {
        self.store_as(resume, rejects_len, run, complete, false, input_rows)
    }

    fn store_as(
        &self,
        resume: Position,
        rejects_len: u64,
        run: &checkpoint::Counters,
        complete: bool,
        drained: bool,
        input_rows: &[u64],
    ) -> Result<(), RunError> {
        let mut cp = self.base.clone();
        cp.written_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        cp.resume = resume;
        cp.rejects_len = rejects_len;
        cp.complete = complete;
        cp.drained = drained;
        cp.input_rows = input_rows.to_vec();
        let before: u64 = input_rows.iter().take(resume.input as usize).sum();
        cp.counters = checkpoint::Counters {
            rows_done: before + resume.row,
            rows_rejected: self.base.counters.rows_rejected + run.rows_rejected,
            calls_delivered: self.base.counters.calls_delivered + run.calls_delivered,
            requests: self.base.counters.requests + run.requests,
            runs: self.base.counters.runs + 1,
        };
        checkpoint::store(&self.path, &cp).map_err(|e| RunError::Checkpoint(Box::new(e)))
    }

    fn write(
        &self,
        o: &CollectOutcome,
        complete: bool,
        input_rows: &Mutex<Vec<u64>>,
    ) -> Result<(), RunError> {
        let rows = lock(input_rows).clone();
        // Every request handed out was acknowledged and counted: none is past `resume`.
        self.store_as(
            o.watermark.unwrap_or(self.base.resume),
            o.rejects_len,
            &o.counters,
            complete,
            o.all_acknowledged,
            &rows,
        )
    }
}

/// Hash of the mapping file and of every option that changes the emitted calls.
fn config_hash(cfg: &RunConfig, src: &SourceOptions) -> Result<String, RunError> {
    let mapping = std::fs::read(&cfg.mapping_path).map_err(|source| RunError::Io {
        path: cfg.mapping_path.display().to_string(),
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
fn mapper_pool() -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
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

/// Hands chunks to rayon for mapping, from the reader's own thread (a thread of its own
/// between them was one more wake-up per chunk on two busy cores).
struct Dispatch<'a> {
    /// Where mapped chunks go back to the reader.
    free_raw: Sender<Chunk>,
    mapped: Sender<Mapped>,
    /// Buffers for mapped calls, back from the packer: at most `pool` chunks are in
    /// flight, so the reader waits here when the mappers or the packer fall behind.
    free_mapped: Receiver<Mapped>,
    mappings: &'a [Arc<CompiledMapping>],
    opts: &'a Arc<EncodeOptions>,
    mappers: &'a rayon::ThreadPool,
}

impl Dispatch<'_> {
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

/// What the packer counted.
#[derive(Debug, Default)]
struct PackTotals {
    rows: u64,
    rows_rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    calls: u64,
    /// Indexed by `CallKind as usize`: an array add per call, not a map search.
    calls_by_type: [u64; CallKind::ALL.len()],
    /// A chunk that could not be read: packing stopped before it.
    failed: Option<String>,
}

/// Reject lines waiting for a request to carry them are flushed as a marker beyond this.
const MAX_PENDING_REJECT_BYTES: usize = 1 << 20;
/// Most request bodies open at once, one per distinct batch-level `context` /
/// `integrations` value. Bounds memory (this many bodies of up to max-request bytes).
const MAX_OPEN_BODIES: usize = 16;
/// An open body whose first call is this many calls older than the newest is closed even
/// though not full, so a rare context value cannot hold the checkpoint back for long.
const MAX_OPEN_LAG_CALLS: u64 = 50_000;

/// What the packer keeps of each call in an open body.
#[derive(Debug, Clone, Copy)]
struct CallTag {
    origin: CallOrigin,
    /// Where the call's row starts: a checkpoint may not pass it while the call is unsent.
    at: Position,
    /// The call's number in input order (for [`MAX_OPEN_LAG_CALLS`]).
    n: u64,
}

/// Reject lines not yet handed to a request, each with the position of its row, so a
/// request takes exactly the lines of rows before its resume position.
#[derive(Default)]
struct PendingRejects {
    bytes: Vec<u8>,
    /// (row position, end of its line in `bytes` + `base`), in row order.
    rows: std::collections::VecDeque<(Position, usize)>,
    /// Bytes already taken, so the ends above stay valid without rewriting them.
    base: usize,
}

impl PendingRejects {
    fn push(&mut self, at: Position, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.rows.push_back((at, self.base + self.bytes.len()));
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Takes the lines of rows before `resume`.
    fn take_before(&mut self, resume: Position) -> Vec<u8> {
        let mut cut = self.base;
        while let Some(&(at, end)) = self.rows.front() {
            if at >= resume {
                break;
            }
            cut = end;
            self.rows.pop_front();
        }
        let n = cut - self.base;
        self.base = cut;
        if n == self.bytes.len() {
            // The next lines go into a buffer of the same size: growing a fresh one by
            // doubling (reject lines can be tens of kB) copied more than it wrote.
            let cap = self.bytes.capacity();
            return std::mem::replace(&mut self.bytes, Vec::with_capacity(cap));
        }
        let rest = self.bytes.split_off(n);
        std::mem::replace(&mut self.bytes, rest)
    }
}

/// Restores input order and packs calls into requests. Reject lines ride along with the
/// first request whose resume position is past their row, so that the collector writes
/// them in acknowledgement order and never ahead of the checkpoint.
///
/// Calls whose rows carry different batch-level context go to different bodies
/// ([`KeyedPacker`]); alias calls, which the batch schema does not list, each become a
/// request of their own to `/v1/alias`.
///
/// Checkpoint rule: a request's `resume` is the start of the oldest row that still has a
/// call not yet handed out — the minimum over the open bodies' first calls and over the
/// bodies closed in the same step but queued after it — or, when none is open, the row
/// being packed (or the end of the input). Handed-out requests complete in `seq` order
/// for the checkpoint, so once a request and all before it are acknowledged, every call
/// before its `resume` has been delivered. The positions only grow: new bodies start at
/// newer rows.
fn pack(
    mapped: Receiver<Mapped>,
    free_mapped: Sender<Mapped>,
    work: Sender<Work>,
    limits: Limits,
    spares: Spares,
) -> PackTotals {
    let mut packer: KeyedPacker<CallTag> =
        KeyedPacker::new(limits, MAX_OPEN_BODIES).recycling(spares);
    let mut closed: Vec<Packed<CallTag>> = Vec::new();
    let mut totals = PackTotals::default();
    let mut pending: HashMap<u64, Mapped> = HashMap::new();
    let mut next = 0u64;
    let mut work_seq = 0u64;
    let mut end = Position::default();
    let mut rejects = PendingRejects::default();
    // The current row's batch-level context bytes (the packer's key) and its row.
    let mut key: Vec<u8> = Vec::new();
    let mut key_row: Option<(u64, u32)> = None;
    let mut call_no = 0u64;
    let mut gone = false;
    let mut send = |w: Work| {
        if !gone && work.send(w).is_err() {
            gone = true;
        }
    };
    let mut make = |path: &'static str,
                    body: Option<crate::pack::Body>,
                    origins: Vec<CallOrigin>,
                    resume: Position,
                    rejects: Vec<u8>| {
        let (calls, call_ends, body) = match body {
            Some(b) => (b.calls, b.call_ends, Some(Arc::new(b.bytes))),
            None => (0, Vec::new(), None),
        };
        let w = Work {
            seq: work_seq,
            path,
            calls,
            call_ends,
            body,
            origins,
            resume,
            rejects,
        };
        work_seq += 1;
        w
    };
    'chunks: for m in mapped {
        pending.insert(m.seq, m);
        while let Some(mut m) = pending.remove(&next) {
            if let Some(e) = m.failed.take() {
                // Nothing from here on is packed, so no checkpoint passes this chunk.
                totals.failed = Some(e);
                break 'chunks;
            }
            next += 1;
            let input = m.end.input;
            let mut off = 0usize;
            let mut rej_off = 0usize;
            for e in &m.emits {
                let len = e.len as usize;
                let at = m.row_position(e.row);
                match e.kind {
                    EmitKind::Context => {
                        key.clear();
                        key.extend_from_slice(&m.calls[off..off + len]);
                        off += len;
                        key_row = Some((m.seq, e.row));
                    }
                    EmitKind::Call(kind) => {
                        let bytes = &m.calls[off..off + len];
                        off += len;
                        if key_row != Some((m.seq, e.row)) {
                            key.clear();
                        }
                        totals.calls_by_type[kind as usize] += 1;
                        totals.calls += 1;
                        call_no += 1;
                        let origin = CallOrigin { input, row: at.row };
                        let tag = CallTag {
                            origin,
                            at,
                            n: call_no,
                        };
                        let result = if kind == CallKind::Alias {
                            alias_body(bytes, &key, limits.max_call_bytes).map(|body| {
                                // A request of its own; the checkpoint may not pass its
                                // row (later calls of the row) nor any open body.
                                let resume = packer.oldest_open().map_or(at, |t| t.at.min(at));
                                let calls = vec![body.len() as u32];
                                let b = crate::pack::Body {
                                    bytes: body,
                                    calls: 1,
                                    call_ends: calls,
                                };
                                let w = make(
                                    "/v1/alias",
                                    Some(b),
                                    vec![origin],
                                    resume,
                                    rejects.take_before(resume),
                                );
                                send(w);
                            })
                        } else {
                            packer.push(&key, bytes, tag, &mut closed)
                        };
                        if let Err(too_large) = result {
                            // The mapper refuses calls over the limit first; this is a
                            // second line of defence (context bytes count here), never
                            // a silent drop.
                            let r = Reject {
                                code: "call_too_large",
                                detail: too_large.to_string(),
                            };
                            let mut line = Vec::new();
                            crate::map::encode::write_call_reject(
                                &mut line,
                                m.input.as_deref(),
                                at.row,
                                bytes,
                                &r,
                            );
                            rejects.push(at, &line);
                            totals.rows_rejected += 1;
                            *totals
                                .rejected_by_reason
                                .entry("call_too_large")
                                .or_default() += 1;
                        }
                        // A rare context value must not pin the checkpoint for long.
                        while packer
                            .oldest_open()
                            .is_some_and(|t| t.n + MAX_OPEN_LAG_CALLS < call_no)
                        {
                            closed.extend(packer.finish_one());
                        }
                        for w in hand_out(&mut closed, &packer, at, &mut rejects, &mut make) {
                            send(w);
                        }
                    }
                    EmitKind::Reject(code) => {
                        rejects.push(at, &m.rejects[rej_off..rej_off + len]);
                        rej_off += len;
                        totals.rows_rejected += 1;
                        *totals.rejected_by_reason.entry(code).or_default() += 1;
                        if rejects.len() > MAX_PENDING_REJECT_BYTES {
                            // A marker may not move past calls still open: close the
                            // bodies that hold rows up to this one first.
                            while packer.oldest_open().is_some_and(|t| t.at <= at) {
                                closed.extend(packer.finish_one());
                            }
                            let next_row = Position {
                                row: at.row + 1,
                                offset: m
                                    .row_offsets
                                    .get(e.row as usize + 1)
                                    .copied()
                                    .unwrap_or(m.end.offset),
                                ..at
                            };
                            for w in
                                hand_out(&mut closed, &packer, next_row, &mut rejects, &mut make)
                            {
                                send(w);
                            }
                            let resume = packer.oldest_open().map_or(next_row, |t| t.at);
                            let w = make(
                                "/v1/batch",
                                None,
                                Vec::new(),
                                resume,
                                rejects.take_before(resume),
                            );
                            send(w);
                        }
                    }
                }
            }
            totals.rows += m.rows as u64;
            end = m.end;
            let _ = free_mapped.send(m);
        }
    }
    while let Some(p) = packer.finish_one() {
        closed.push(p);
    }
    let mut last = hand_out(&mut closed, &packer, end, &mut rejects, &mut make);
    match last.last_mut() {
        Some(w) => {
            w.resume = end;
            w.rejects.extend_from_slice(&rejects.take_before(Position {
                input: u32::MAX,
                ..end
            }));
        }
        None => last.push(make(
            "/v1/batch",
            None,
            Vec::new(),
            end,
            rejects.take_before(Position {
                input: u32::MAX,
                ..end
            }),
        )),
    }
    for w in last {
        send(w);
    }
    totals
}

/// Turns closed bodies into requests, oldest first. Each one's resume is the minimum of
/// the oldest open call and the first calls of the bodies queued after it in this step
/// (`fallback` when none), and it carries the reject lines of rows before that.
fn hand_out(
    closed: &mut Vec<Packed<CallTag>>,
    packer: &KeyedPacker<CallTag>,
    fallback: Position,
    rejects: &mut PendingRejects,
    make: &mut impl FnMut(
        &'static str,
        Option<crate::pack::Body>,
        Vec<CallOrigin>,
        Position,
        Vec<u8>,
    ) -> Work,
) -> Vec<Work> {
    if closed.is_empty() {
        return Vec::new();
    }
    let open_min = packer.oldest_open().map_or(fallback, |t| t.at);
    let resumes = resume_points(closed, open_min, |t| t.at);
    closed
        .drain(..)
        .zip(resumes)
        .map(|(p, resume)| {
            let origins = p.tags.iter().map(|t| t.origin).collect();
            make(
                "/v1/batch",
                Some(p.body),
                origins,
                resume,
                rejects.take_before(resume),
            )
        })
        .collect()
}

/// The body of an alias request: the call itself, with the row's batch-level context
/// (if any) as its own top-level keys, since an alias is not sent in a batch.
pub(crate) fn alias_body(call: &[u8], key: &[u8], max_call: usize) -> Result<Vec<u8>, TooLarge> {
    let mut body = Vec::with_capacity(call.len() + key.len());
    if key.is_empty() || call.len() < 2 {
        body.extend_from_slice(call);
    } else {
        // `{` + `"context":..` (the key without its leading comma) + `,` + the rest.
        body.push(b'{');
        body.extend_from_slice(&key[1..]);
        body.push(b',');
        body.extend_from_slice(&call[1..]);
    }
    if body.len() > max_call {
        return Err(TooLarge {
            len: body.len(),
            limit: max_call,
        });
    }
    Ok(body)
}

/// What the collector saw by the time every sender was done.
#[derive(Debug, Default)]
struct CollectOutcome {
    fatal: Option<String>,
    io_error: Option<String>,
    /// Resume position after the acknowledged prefix, if it moved.
    watermark: Option<Position>,
    rejects_len: u64,
    counters: checkpoint::Counters,
    interrupted: bool,
    /// Every piece of work was acknowledged (none failed or was skipped).
    all_acknowledged: bool,
    /// Calls and requests the server accepted after the first that failed: counted as
    /// delivered in the summary, but the checkpoint cannot pass the failed request, so a
    /// resume sends them again (with the same messageIds).
    beyond: (u64, u64),
    /// Requests still hung when the drain timeout ended: the senders are stuck in them,
    /// so the run reports and exits instead of winding down.
    abandoned: bool,
}

/// Folds acknowledgements, in request order, into the summary, the rejects file and the
/// checkpoint. A request's reject lines are written once it and every request before it
/// are acknowledged, then the checkpoint (after the rejects file is synced), so the two
/// never disagree. Also watches for an interrupt: stop reading, drain, then stop.
struct Collector<'a> {
    summary: &'a mut Summary,
    rejects: BufWriter<RejectsFile>,
    rejects_len: u64,
    rejects_path: &'a str,
    durable: Option<&'a Durable>,
    window: &'a Window,
    input_rows: &'a Mutex<Vec<u64>>,
    interval: std::time::Duration,
    interrupt: Option<&'a AtomicBool>,
    drain_timeout: std::time::Duration,
    halt_reading: &'a AtomicBool,
    stop: &'a AtomicBool,
    quiet: bool,
    progress: &'a Progress,
    /// Where folded requests' bodies go back to the packer.
    spares: Spares,
}

impl Collector<'_> {
    fn run(mut self, acks: Receiver<Ack>) -> CollectOutcome {
        use crossbeam_channel::RecvTimeoutError;
        let mut o = CollectOutcome {
            rejects_len: self.rejects_len,
            all_acknowledged: true,
            ..Default::default()
        };
        let mut waiting: BTreeMap<u64, Ack> = BTreeMap::new();
        let mut next = 0u64;
        // Permits of requests folded into the watermark but not yet durable.
        let mut unreleased = 0usize;
        let mut dirty = false;
        let mut last_write = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let first = match acks.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(a) => Some(a),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            for ack in first
                .into_iter()
                .chain(std::iter::from_fn(|| acks.try_recv().ok()))
            {
                self.progress.ack(&ack);
                match &ack.result {
                    AckResult::Failed(why) => {
                        o.fatal.get_or_insert(why.clone());
                        o.all_acknowledged = false;
                        self.window.release(1);
                    }
                    AckResult::Skipped => {
                        o.all_acknowledged = false;
                        if ack.work.body.is_some() {
                            self.window.release(1);
                        }
                    }
                    _ => {}
                }
                waiting.insert(ack.work.seq, ack);
                while let Some(ack) = waiting.remove(&next) {
                    if !matches!(ack.result, AckResult::Delivered | AckResult::Marker) {
                        // The watermark stops here; later work is not counted as done.
                        waiting.insert(next, ack);
                        break;
                    }
                    next += 1;
                    self.fold(&ack, &mut o);
                    if let Some(body) = ack.work.body {
                        unreleased += 1;
                        // The senders are done with it: unless a clone is still alive
                        // somewhere, the packer can reuse the buffer.
                        if let Ok(bytes) = Arc::try_unwrap(body) {
                            self.spares.give(bytes);
                        }
                    }
                    dirty = true;
                }
            }
            // Interrupt: stop reading and hand no new request to the senders; the requests
            // they already hold finish (so a resume replays none of them), within the
            // drain timeout.
            self.progress.tick();
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
                if let Some(d) = self.durable {
                    let rows = lock(self.input_rows).clone();
                    let _ = self.sync_rejects();
                    let _ = d.store(
                        o.watermark.unwrap_or(d.base.resume),
                        o.rejects_len,
                        &o.counters,
                        false,
                        &rows,
                    );
                } else {
                    // `exit` drops nothing: the buffered reject lines go out now or never.
                    let _ = self.flush_rejects();
                }
                // The senders are stuck in their requests, so the run cannot wind down:
                // `abandon` reports and exits.
                o.abandoned = true;
                o.all_acknowledged = false;
                break;
            }
            let due = last_write.elapsed() >= self.interval || self.window.is_half_full();
            if dirty && due {
                if let Some(d) = self.durable {
                    if let Err(e) = self.sync_rejects().and_then(|_| {
                        let rows = lock(self.input_rows).clone();
                        d.store(
                            o.watermark.unwrap_or(d.base.resume),
                            o.rejects_len,
                            &o.counters,
                            false,
                            &rows,
                        )
                        .map_err(|e| e.to_string())
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
        if !waiting.is_empty() {
            o.all_acknowledged = false;
        }
        // Requests answered 2xx after one that failed did arrive: the summary says so,
        // though the watermark (and so the checkpoint and the rejects file) stops before
        // the failed one.
        for ack in waiting.values() {
            if ack.result == AckResult::Delivered {
                // Calls the server refused in such a request stay undelivered here: their
                // reject lines are written when a resume sends the request again.
                let s = &mut *self.summary;
                s.calls_delivered += ack.delivered_calls as u64;
                s.requests += ack.accepted_requests as u64;
                s.request_bytes += ack.accepted_bytes;
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

    /// Counts one acknowledged piece of work and writes its reject lines.
    fn fold(&mut self, ack: &Ack, o: &mut CollectOutcome) {
        let s = &mut *self.summary;
        if ack.result == AckResult::Delivered {
            s.calls_delivered += ack.delivered_calls as u64;
            s.calls_rejected_by_server += ack.work.calls.saturating_sub(ack.delivered_calls) as u64;
            // What the server accepted: with strict mode's split, the pieces.
            s.requests += ack.accepted_requests as u64;
            s.request_bytes += ack.accepted_bytes;
            o.counters.calls_delivered += ack.delivered_calls as u64;
            o.counters.requests += ack.accepted_requests as u64;
        }
        for part in [&ack.work.rejects, &ack.server_rejects] {
            if part.is_empty() {
                continue;
            }
            if let Err(e) = self.rejects.write_all(part) {
                o.io_error
                    .get_or_insert(format!("cannot write {}: {e}", self.rejects_path));
            }
            o.rejects_len += part.len() as u64;
            o.counters.rows_rejected += memchr::memchr_iter(b'\n', part).count() as u64;
        }
        o.watermark = Some(ack.work.resume);
    }

    /// Makes the rejects file durable up to what was written, before a checkpoint says so.
    fn sync_rejects(&mut self) -> Result<(), String> {
        self.flush_rejects()?;
        self.rejects
            .get_mut()
            .sync_data()
            .map_err(|e| format!("cannot write {}: {e}", self.rejects_path))
    }

    fn flush_rejects(&mut self) -> Result<(), String> {
        self.rejects
            .flush()
            .map_err(|e| format!("cannot write {}: {e}", self.rejects_path))
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
        let mut f = open_rejects(&path, 0).unwrap();
        f.write_all(b"new\n").unwrap();
        drop(f);
        assert_eq!(read(), b"new\n");

        // Resuming: kept up to the recorded length, written after it, synced.
        std::fs::write(&path, [&b"kept\n"[..], &old].concat()).unwrap();
        let mut f = open_rejects(&path, 5).unwrap();
        f.write_all(b"more\n").unwrap();
        f.sync_data().unwrap();
        drop(f);
        assert_eq!(read(), b"kept\nmore\n");

        // A run that writes nothing still leaves the file cut back.
        std::fs::write(&path, &old).unwrap();
        drop(open_rejects(&path, 0).unwrap());
        assert_eq!(read(), b"");

        // Shorter than the checkpoint says: refused, and left as it is.
        std::fs::write(&path, b"short\n").unwrap();
        assert!(matches!(open_rejects(&path, 100), Err(RunError::Config(_))));
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
            refuse_unsyncable_rejects(&fifo),
            Err(RunError::Config(m)) if m.contains("--no-checkpoint")
        ));
        assert!(matches!(
            refuse_unsyncable_rejects(dir.path()),
            Err(RunError::Config(m)) if m.contains("is a directory")
        ));
        assert!(refuse_unsyncable_rejects(&dir.path().join("new.ndjson")).is_ok());
        let mut f = open_rejects(&fifo, 0).unwrap();
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
            file: File::create(dir.path().join("r")).unwrap(),
            cut: Some(std::thread::spawn(|| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "sealed",
                ))
            })),
            failed: None,
        };
        for _ in 0..3 {
            let e = f.write(b"x").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("sealed"), "{e}");
        }
        assert!(f.flush().is_err() && f.sync_data().is_err());
    }

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
