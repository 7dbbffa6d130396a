//! What a run checks and opens before its stages start: the mapping against every input,
//! the run's own files, the checkpoint and its locks, the transport; and the backfill's
//! part of the summary at the end.

use super::*;

/// The backfill's part of the summary: where this run resumed, the rows it covered and
/// the totals of every run (`now`).
pub(super) fn backfill_summary(
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
pub(super) fn trial_note(cfg: &RunConfig, s: &Summary) -> Option<String> {
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
pub(super) struct Ready {
    pub(super) cfg: RunConfig,
    /// The backfill's directory in the state directory, if it has one.
    pub(super) dir: Option<PathBuf>,
    pub(super) plan: Plan,
    pub(super) durable: Option<Durable>,
    pub(super) _rejects_lock: Option<std::fs::File>,
    /// Where reading starts, and (for a shard) where it stops.
    pub(super) start: Position,
    pub(super) stop: Option<Stop>,
}

pub(super) enum Preflight {
    Ready(Box<Ready>),
    /// The checkpoint says the backfill finished: nothing to do.
    AlreadyComplete(Box<Summary>),
}

/// Everything checked before anything is read or sent, and before anything on disk
/// changes (but an earlier run's summary and report, which must not pass for this
/// run's): the mapping against every input, the run's own files, the checkpoint (loaded
/// and matched, or written afresh) and the locks.
pub(super) fn preflight(cfg: &RunConfig, src: &SourceOptions) -> Result<Preflight, RunError> {
    let spec = crate::map::load(&cfg.mapping_path)?;
    // Never read as inputs: what the run writes, its mapping, its API key file and the
    // state directory.
    let mut own: Vec<PathBuf> = cfg.own_files.iter().map(|f| f.path.clone()).collect();
    own.push(cfg.mapping_path.clone());
    own.push(cfg.state_dir.clone());
    let objects = object_runtime(
        cfg.inputs
            .iter()
            .chain(cfg.checkpoint.iter())
            .map(PathBuf::as_path),
        cfg.read_retry,
    )?;
    let inputs = source::discover_excluding(&cfg.inputs, src, &own, objects.as_ref())?;
    InputInfo::prefetch_identities(&inputs);
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
    // A shard reads from its start (scanned for on its first run only) to its stop.
    let listed = plan.inputs.clone();
    let shard_range = |find_start| match cfg.shard {
        Some(s) => source::shard::range(&listed, src, s, find_start).map(Some),
        None => Ok(None),
    };
    let stop = shard_range(false)?.and_then(|r| r.stop);
    let first_start = || -> Result<Position, SourceError> {
        Ok(shard_range(true)?.map_or_else(Position::default, |r| r.start))
    };
    let durable = Durable::open(
        &cfg,
        src,
        &plan.inputs,
        &found.backfill,
        objects.as_ref(),
        || first_start().map_err(|e| CheckpointError::Shard(e.to_string())),
    )?;
    let start = match &durable {
        Some(d) => d.base.resume,
        None => first_start()?,
    };
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
        start,
        stop,
    })))
}

/// `cfg` with the checkpoint and rejects paths of its backfill ([`state::resolve`]), and
/// those among its own files (never read, never written over).
pub(super) fn with_paths(cfg: &RunConfig, found: &state::Resolved) -> RunConfig {
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
pub(super) fn note_same_content(inputs: &[Arc<InputInfo>], quiet: bool) -> Result<(), RunError> {
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
pub(super) fn say(cfg: &RunConfig, line: &str) {
    if !cfg.quiet {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// Where requests go: nowhere (a dry run, perhaps writing them to `--output`), the
/// built-in receiver on loopback (which lives as long as the run), or a URL.
#[allow(clippy::type_complexity)]
pub(super) fn transport(
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

/// The object-store runtime, when any of `urls` (inputs, state) is in object storage.
/// Its two worker threads are the run's, like every other thread: created here.
/// `retry_for`: how long a failing read is retried without progress.
pub(crate) fn object_runtime<'a>(
    urls: impl IntoIterator<Item = &'a std::path::Path>,
    retry_for: std::time::Duration,
) -> Result<Option<Arc<ObjectRuntime>>, RunError> {
    if !source::any_remote(urls) {
        return Ok(None);
    }
    ObjectRuntime::new(retry_for)
        .map(|rt| Some(Arc::new(rt)))
        .map_err(RunError::Spawn)
}
