//! The only module that creates threads and channels: the whole data flow on one screen.
//!
//! ```text
//!  reader ──chunks──▶ dispatcher ──rayon──▶ packer ──requests──▶ senders ×N ──acks──▶ collector
//!    ▲                     │                  │                                   (this thread)
//!    └──── free chunks ◀───┘                  └──▶ rejects file
//! ```
//!
//! Every channel is bounded and every buffer is recycled, so memory does not grow with
//! the input: at most `pool` chunks of rows and `pool` mapped chunks exist at once, and
//! at most `2 × concurrency` packed requests wait for a sender. Mapping runs on rayon in
//! parallel; the packer restores input order by sequence number before packing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::config::{Endpoint, Limits, RunConfig};
use crate::map::compile::{compile, CompiledMapping};
use crate::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped};
use crate::pack::Packer;
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, AckResult, Gate, RetryPolicy, Work};
use crate::source::{self, Chunk, InputInfo, Position, SourceOptions};
use crate::summary::Summary;
use crate::RunError;

/// Runs a backfill to the end (or to the first fatal error).
pub fn run(cfg: &RunConfig, src_opts: &SourceOptions) -> Result<Summary, RunError> {
    let started = Instant::now();
    let spec = crate::map::load(&cfg.mapping_path)?;
    let inputs = source::discover(&cfg.inputs, &spec.namespace, src_opts)?;

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
    });

    let rejects_file = File::create(&cfg.rejects_path).map_err(|source| RunError::Io {
        path: cfg.rejects_path.display().to_string(),
        source,
    })?;

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
    let gate = Gate::new((!cfg.dry_run).then_some(cfg.rate_per_sec));
    let policy = RetryPolicy {
        max_retries: cfg.max_retries,
        base: cfg.backoff_base,
        cap: cfg.backoff_cap,
        strict: cfg.strict,
    };

    let pool = rayon::current_num_threads() * 2 + 2;
    let (raw_tx, raw_rx) = bounded::<(u64, Chunk)>(pool);
    let (free_raw_tx, free_raw_rx) = bounded::<Chunk>(pool);
    let (mapped_tx, mapped_rx) = bounded::<Mapped>(pool);
    let (free_mapped_tx, free_mapped_rx) = bounded::<Mapped>(pool);
    for _ in 0..pool {
        free_mapped_tx
            .send(Mapped::default())
            .expect("the pool channel has room for `pool` buffers");
    }
    let (work_tx, work_rx) = bounded::<Work>(concurrency * 2);
    let (ack_tx, ack_rx) = unbounded::<Ack>();
    let stop = AtomicBool::new(false);

    let mut summary = Summary {
        inputs: inputs.len() as u64,
        rejects_file: cfg.rejects_path.display().to_string(),
        dry_run: cfg.dry_run,
        ..Summary::default()
    };

    let (read_result, pack_result, fatal) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let r = read_inputs(
                &inputs,
                src_opts,
                cfg.chunk_rows,
                pool,
                free_raw_rx,
                raw_tx,
                &stop,
            );
            if r.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            r
        });
        s.spawn(|| {
            dispatch(
                raw_rx,
                free_raw_tx,
                mapped_tx,
                free_mapped_rx,
                &mappings,
                &encode_opts,
            )
        });
        let packer = s.spawn(|| pack(mapped_rx, free_mapped_tx, work_tx, rejects_file, cfg.limits));
        for _ in 0..concurrency {
            let (rx, tx) = (work_rx.clone(), ack_tx.clone());
            let (t, g, st) = (&*transport, &gate, &stop);
            s.spawn(move || send::worker(rx, tx, t, g, policy, st));
        }
        drop(work_rx);
        drop(ack_tx);
        let fatal = collect(ack_rx, &mut summary);
        let read_result = reader
            .join()
            .unwrap_or_else(|_| Err(source::SourceError::Other("reader thread panicked".into())));
        let pack_result = packer
            .join()
            .unwrap_or_else(|_| Err(RunError::Delivery("packer thread panicked".into())));
        (read_result, pack_result, fatal)
    });

    let totals = pack_result?;
    summary.rows_read = totals.rows;
    summary.rows_rejected = totals.rows_rejected;
    summary.rows_mapped = totals.rows - totals.rows_rejected;
    summary.rejected_by_reason = totals
        .rejected_by_reason
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    summary.calls_built = totals.calls;
    summary.calls_by_type = totals
        .calls_by_type
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    summary.calls_undelivered = summary.calls_built.saturating_sub(summary.calls_delivered);
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
    if let Err(e) = read_result {
        summary.outcome = "failed".into();
        return Err(RunError::Partial {
            summary: Box::new(summary),
            cause: e.to_string(),
        });
    }
    if let Some(why) = fatal {
        summary.outcome = "failed".into();
        return Err(RunError::Partial {
            summary: Box::new(summary),
            cause: why,
        });
    }
    summary.outcome = "completed".into();
    Ok(summary)
}

/// Reads every input in order into chunks. Stops early when `stop` is set.
fn read_inputs(
    inputs: &[Arc<InputInfo>],
    opts: &SourceOptions,
    chunk_rows: usize,
    pool: usize,
    free: Receiver<Chunk>,
    out: Sender<(u64, Chunk)>,
    stop: &AtomicBool,
) -> Result<(), source::SourceError> {
    let mut seq = 0;
    let mut created = 0;
    let mut spare: Option<Chunk> = None;
    for info in inputs {
        let mut src = source::open(info, opts)?;
        loop {
            if stop.load(Ordering::Relaxed) {
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
            src.fill(&mut chunk, chunk_rows)?;
            if chunk.is_empty() {
                spare = Some(chunk);
                break;
            }
            if out.send((seq, chunk)).is_err() {
                return Ok(());
            }
            seq += 1;
        }
    }
    Ok(())
}

/// Hands each chunk to rayon for mapping; returns chunks to the reader when done.
fn dispatch(
    raw: Receiver<(u64, Chunk)>,
    free_raw: Sender<Chunk>,
    mapped: Sender<Mapped>,
    free_mapped: Receiver<Mapped>,
    mappings: &[Arc<CompiledMapping>],
    opts: &Arc<EncodeOptions>,
) {
    for (seq, chunk) in raw {
        let Ok(mut out) = free_mapped.recv() else {
            return;
        };
        let mapping = mappings[chunk.input().index as usize].clone();
        let (free_raw, mapped, opts) = (free_raw.clone(), mapped.clone(), opts.clone());
        rayon::spawn(move || {
            map_chunk(&chunk, &mapping, &opts, &mut out);
            out.seq = seq;
            let _ = free_raw.send(chunk);
            let _ = mapped.send(out);
        });
    }
}

/// What the packer counted.
#[derive(Debug, Default)]
struct PackTotals {
    rows: u64,
    rows_rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    calls: u64,
    calls_by_type: BTreeMap<&'static str, u64>,
}

/// Restores input order, packs calls into requests, writes rejects.
fn pack(
    mapped: Receiver<Mapped>,
    free_mapped: Sender<Mapped>,
    work: Sender<Work>,
    rejects_file: File,
    limits: Limits,
) -> Result<PackTotals, RunError> {
    let mut rejects = BufWriter::with_capacity(1 << 16, rejects_file);
    let mut rejects_len = 0u64;
    let mut packer = Packer::new(limits);
    let mut totals = PackTotals::default();
    let mut pending: HashMap<u64, Mapped> = HashMap::new();
    let mut next = 0u64;
    let mut work_seq = 0u64;
    let mut end = Position::default();
    let mut receivers_gone = false;
    let emit = |w: Work, gone: &mut bool| {
        if !*gone && work.send(w).is_err() {
            *gone = true;
        }
    };
    for m in mapped {
        pending.insert(m.seq, m);
        while let Some(m) = pending.remove(&next) {
            next += 1;
            let (mut call_off, mut rej_off) = (0usize, 0usize);
            let mut chunk_rejects = 0u64;
            for e in &m.emits {
                let len = e.len as usize;
                match e.kind {
                    EmitKind::Call(kind) => {
                        let bytes = &m.calls[call_off..call_off + len];
                        call_off += len;
                        *totals.calls_by_type.entry(kind.as_str()).or_default() += 1;
                        // The mapper already refused calls over the limit.
                        let closed = packer
                            .push(bytes)
                            .map_err(|e| RunError::Delivery(format!("internal: {e}")))?;
                        if let Some(body) = closed {
                            let w = Work {
                                seq: work_seq,
                                path: "/v1/batch",
                                calls: body.calls,
                                body: Some(Arc::new(body.bytes)),
                                resume: m.row_position(e.row),
                                rejects_len,
                            };
                            work_seq += 1;
                            emit(w, &mut receivers_gone);
                        }
                    }
                    EmitKind::Reject(code) => {
                        rejects
                            .write_all(&m.rejects[rej_off..rej_off + len])
                            .map_err(|source| RunError::Io {
                                path: "rejects file".into(),
                                source,
                            })?;
                        rej_off += len;
                        rejects_len += len as u64;
                        chunk_rejects += 1;
                        *totals.rejected_by_reason.entry(code).or_default() += 1;
                    }
                }
            }
            totals.calls += m.emits.len() as u64 - chunk_rejects;
            totals.rows += m.rows as u64;
            totals.rows_rejected += chunk_rejects;
            end = m.end;
            let _ = free_mapped.send(m);
        }
    }
    let last = packer.finish();
    let w = Work {
        seq: work_seq,
        path: "/v1/batch",
        calls: last.as_ref().map_or(0, |b| b.calls),
        body: last.map(|b| Arc::new(b.bytes)),
        resume: end,
        rejects_len,
    };
    emit(w, &mut receivers_gone);
    rejects.flush().map_err(|source| RunError::Io {
        path: "rejects file".into(),
        source,
    })?;
    Ok(totals)
}

/// Folds acknowledgements into the summary. Returns the first fatal failure, if any.
fn collect(acks: Receiver<Ack>, summary: &mut Summary) -> Option<String> {
    let mut fatal = None;
    for ack in acks {
        summary.retries += ack.retries as u64;
        summary.throttled += ack.throttled as u64;
        match ack.result {
            AckResult::Delivered => {
                summary.calls_delivered += ack.work.calls as u64;
                summary.requests += 1;
                summary.request_bytes += ack.work.body.as_ref().map_or(0, |b| b.len() as u64);
            }
            AckResult::Marker | AckResult::Skipped => {}
            AckResult::Failed(why) => {
                fatal.get_or_insert(why);
            }
        }
    }
    fatal
}
