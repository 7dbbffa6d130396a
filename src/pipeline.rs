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
use crate::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped, Reject};
use crate::pack::Packer;
use crate::send::transport::{DryRunTransport, HttpTransport, Transport};
use crate::send::{self, Ack, AckResult, CallOrigin, Gate, RetryPolicy, Work};
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
    let rejects_path = cfg.rejects_path.display().to_string();

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
        let packer = s.spawn(|| pack(mapped_rx, free_mapped_tx, work_tx, cfg.limits));
        for _ in 0..concurrency {
            let (rx, tx) = (work_rx.clone(), ack_tx.clone());
            let (t, g, st) = (&*transport, &gate, &stop);
            s.spawn(move || send::worker(rx, tx, t, g, policy, st));
        }
        drop(work_rx);
        drop(ack_tx);
        let (fatal, rejects_result) = collect(ack_rx, &mut summary, rejects_file, &rejects_path);
        let read_result = reader
            .join()
            .unwrap_or_else(|_| Err(source::SourceError::Other("reader thread panicked".into())));
        let pack_result = packer
            .join()
            .map_err(|_| RunError::Delivery("packer thread panicked".into()))
            .and_then(|t| rejects_result.map(|_| t));
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

/// Reject lines waiting for a request to carry them are flushed as a marker beyond this.
const MAX_PENDING_REJECT_BYTES: usize = 1 << 20;

/// Restores input order and packs calls into requests. Reject lines ride along with the
/// next request so that the collector writes them in acknowledgement order.
fn pack(
    mapped: Receiver<Mapped>,
    free_mapped: Sender<Mapped>,
    work: Sender<Work>,
    limits: Limits,
) -> PackTotals {
    let mut packer = Packer::new(limits);
    let mut totals = PackTotals::default();
    let mut pending: HashMap<u64, Mapped> = HashMap::new();
    let mut next = 0u64;
    let mut work_seq = 0u64;
    let mut end = Position::default();
    // Origins of the calls in the open body, and where its first call's row starts.
    let mut origins: Vec<CallOrigin> = Vec::new();
    let mut open_start: Option<Position> = None;
    let mut rejects: Vec<u8> = Vec::new();
    let mut gone = false;
    let mut emit = |w: Work| {
        if !gone && work.send(w).is_err() {
            gone = true;
        }
    };
    let mut make = |body: Option<crate::pack::Body>,
                    origins: Vec<CallOrigin>,
                    resume: Position,
                    rejects: Vec<u8>| {
        let w = Work {
            seq: work_seq,
            path: "/v1/batch",
            calls: body.as_ref().map_or(0, |b| b.calls),
            call_ends: body
                .as_ref()
                .map(|b| b.call_ends.clone())
                .unwrap_or_default(),
            body: body.map(|b| Arc::new(b.bytes)),
            origins,
            resume,
            rejects,
        };
        work_seq += 1;
        w
    };
    for m in mapped {
        pending.insert(m.seq, m);
        while let Some(m) = pending.remove(&next) {
            next += 1;
            let input = m.end.input;
            let (mut call_off, mut rej_off) = (0usize, 0usize);
            let mut chunk_rejects = 0u64;
            for e in &m.emits {
                let len = e.len as usize;
                match e.kind {
                    EmitKind::Call(kind) => {
                        let bytes = &m.calls[call_off..call_off + len];
                        call_off += len;
                        *totals.calls_by_type.entry(kind.as_str()).or_default() += 1;
                        let row_pos = m.row_position(e.row);
                        match packer.push(bytes) {
                            Ok(Some(body)) => {
                                // Everything before this call's row is done once `body`
                                // and all before it are acknowledged.
                                let w = make(
                                    Some(body),
                                    std::mem::take(&mut origins),
                                    row_pos,
                                    std::mem::take(&mut rejects),
                                );
                                emit(w);
                                open_start = None;
                            }
                            Ok(None) => {}
                            Err(too_large) => {
                                // The mapper refuses calls over the limit first; this is a
                                // second line of defence, never a silent drop.
                                let r = Reject {
                                    code: "call_too_large",
                                    detail: too_large.to_string(),
                                };
                                write_call_reject(
                                    &mut rejects,
                                    m.input.as_deref(),
                                    row_pos.row,
                                    bytes,
                                    &r,
                                );
                                totals.rows_rejected += 1;
                                *totals
                                    .rejected_by_reason
                                    .entry("call_too_large")
                                    .or_default() += 1;
                                continue;
                            }
                        }
                        open_start.get_or_insert(row_pos);
                        origins.push(CallOrigin {
                            input,
                            row: row_pos.row,
                        });
                    }
                    EmitKind::Reject(code) => {
                        rejects.extend_from_slice(&m.rejects[rej_off..rej_off + len]);
                        rej_off += len;
                        chunk_rejects += 1;
                        *totals.rejected_by_reason.entry(code).or_default() += 1;
                        if rejects.len() > MAX_PENDING_REJECT_BYTES {
                            // A marker may not move past calls still in the open body.
                            let next_row = m.row_position(e.row);
                            let resume = open_start.unwrap_or(Position {
                                row: next_row.row + 1,
                                offset: m
                                    .row_offsets
                                    .get(e.row as usize + 1)
                                    .copied()
                                    .unwrap_or(m.end.offset),
                                ..next_row
                            });
                            let w = make(None, Vec::new(), resume, std::mem::take(&mut rejects));
                            emit(w);
                        }
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
    let w = make(packer.finish(), origins, end, rejects);
    emit(w);
    totals
}

/// A reject line for a call refused after mapping (its record is the call itself).
pub fn write_call_reject(
    out: &mut Vec<u8>,
    input: Option<&InputInfo>,
    row: u64,
    call: &[u8],
    r: &Reject,
) {
    use crate::map::json;
    out.extend_from_slice(b"{\"source\":");
    json::write_str(out, input.map_or("", |i| i.display.as_str()));
    out.extend_from_slice(b",\"row\":");
    json::write_u64(out, row + 1);
    out.extend_from_slice(b",\"reason\":");
    json::write_str(out, r.code);
    out.extend_from_slice(b",\"detail\":");
    json::write_str(out, &r.detail);
    out.extend_from_slice(b",\"call\":");
    out.extend_from_slice(call);
    out.extend_from_slice(b"}\n");
}

/// Folds acknowledgements into the summary, in request order: a request's rejects are
/// written once it and every request before it are acknowledged. Returns the first fatal
/// failure, if any.
fn collect(
    acks: Receiver<Ack>,
    summary: &mut Summary,
    rejects_file: File,
    rejects_path: &str,
) -> (Option<String>, Result<(), RunError>) {
    let mut rejects = BufWriter::with_capacity(1 << 16, rejects_file);
    let mut write_err = None;
    let mut fatal = None;
    let mut waiting: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut next = 0u64;
    for ack in acks {
        summary.retries += ack.retries as u64;
        summary.throttled += ack.throttled as u64;
        if let AckResult::Failed(why) = &ack.result {
            fatal.get_or_insert(why.clone());
        }
        waiting.insert(ack.work.seq, ack);
        while let Some(ack) = waiting.remove(&next) {
            let done = matches!(ack.result, AckResult::Delivered | AckResult::Marker);
            if !done {
                // The watermark stops here; later work is not counted as done.
                waiting.insert(next, ack);
                break;
            }
            next += 1;
            if ack.result == AckResult::Delivered {
                summary.calls_delivered += ack.delivered_calls as u64;
                summary.requests += 1;
                summary.request_bytes += ack.work.body.as_ref().map_or(0, |b| b.len() as u64);
            }
            if write_err.is_none() {
                if let Err(e) = rejects
                    .write_all(&ack.work.rejects)
                    .and_then(|_| rejects.write_all(&ack.server_rejects))
                {
                    write_err = Some(e);
                }
            }
        }
    }
    // Work acknowledged after the watermark stopped still reached the server.
    for ack in waiting.values() {
        if ack.result == AckResult::Delivered {
            summary.calls_delivered += ack.delivered_calls as u64;
            summary.requests += 1;
            summary.request_bytes += ack.work.body.as_ref().map_or(0, |b| b.len() as u64);
        }
    }
    let flushed = match write_err {
        Some(e) => Err(e),
        None => rejects.flush(),
    };
    (
        fatal,
        flushed.map_err(|source| RunError::Io {
            path: rejects_path.to_string(),
            source,
        }),
    )
}
