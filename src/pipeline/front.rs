//! The stages before the senders, shared by a run and `validate`: the plan (the inputs
//! and the mapping compiled against each), the reader, the mappers on rayon and the
//! packing stage, on threads of their own.

use super::*;

/// Objects opened at once to read their columns ([`Plan::new`]).
const OPENS_AT_ONCE: usize = 8;

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
        InputInfo::prefetch_identities(&inputs);
        let mut mappings = Vec::with_capacity(inputs.len());
        // Content seeds, as a new backfill (or a run without a checkpoint) uses; a
        // resumed one may [`Plan::reseed`].
        let seeds = message_id::seeds(SeedScheme::Content, &spec.namespace, &inputs)?;
        // Each input opened for its columns, the mapping compiled against them. An
        // object's open waits a round trip for its first bytes: when the inputs are
        // objects, they are opened OPENS_AT_ONCE at a time (on threads of their own),
        // so a thousand of them a WAN away wait for a thousand / OPENS_AT_ONCE round
        // trips, not a thousand. Otherwise they open in turn.
        let compile_one = |info: &Arc<InputInfo>| -> Result<CompiledMapping, RunError> {
            let opened = source::open(info, src)?;
            Ok(compile(spec, opened.schema(), &info.display)?)
        };
        let remote = inputs.iter().filter(|i| i.object.is_some()).count();
        let at_once = if remote > 1 { OPENS_AT_ONCE } else { 1 };
        let mut seeds = seeds.into_iter();
        for batch in inputs.chunks(at_once) {
            let compiled: Vec<Result<CompiledMapping, RunError>> = match batch {
                [one] => vec![compile_one(one)],
                _ => std::thread::scope(|s| {
                    // A thread the system will not give opens its input here instead.
                    let open = |info| {
                        std::thread::Builder::new()
                            .name("open".into())
                            .spawn_scoped(s, move || compile_one(info))
                            .map_err(|_| info)
                    };
                    let running: Vec<_> = batch.iter().map(open).collect();
                    running
                        .into_iter()
                        .map(|h| match h {
                            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                            Err(info) => compile_one(info),
                        })
                        .collect()
                }),
            };
            // The first failure in input order, as opening them in turn would find.
            for (m, seed) in compiled.into_iter().zip(&mut seeds) {
                let mut m = m?;
                m.seed = seed;
                mappings.push(Arc::new(m));
            }
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
    /// Where a shard's reading stops (`None`: at the end of the inputs).
    pub stop: Option<Stop>,
    /// Rows to read at most from `start` (`--limit`, less what earlier runs did).
    pub limit: Option<u64>,
}

/// The reader and the mappers, running: mapped chunks come out of `mapped` (in any
/// order, numbered), and their buffers go back through `free_mapped`.
pub(super) struct Mapping {
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
        let (limits, rules) = (plan.limits, plan.rules);
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
                rules,
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

    pub(super) fn is_finished(&self) -> bool {
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
pub(super) fn start_mapping(
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
            stop: span.stop,
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
pub(super) struct Dispatch {
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
