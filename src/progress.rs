//! What a person watching a backfill sees while it runs, and what the run report charts
//! afterwards. The only module that knows indicatif.
//!
//! One [`Progress`] lives for a run. The reader bumps it once per chunk ([`Progress::read`]),
//! the gate forwarder once per request handed to the senders ([`Progress::forwarded`]),
//! and the collector, through [`crate::checkpoint::collect::Watch`], once per
//! acknowledgement ([`Progress::ack`]) and once per loop turn ([`Progress::tick`], at most
//! every 50 ms). Retries and 429s it reads from the senders' own counts
//! ([`crate::send::Attempts`]). Nothing here runs per row: the counters the
//! reader touches are atomics, the rest is state only the collector's thread uses (behind
//! an uncontended mutex, since the struct is shared by reference).
//!
//! Output, by [`ProgressMode`]: on a terminal, a two-line bar (input read out of the
//! total, ETA, then rows, calls/s, requests in flight, retries, 429s, rejects); when stderr
//! is not a terminal, a plain `progress: ...` line every few seconds;
//! nothing with `--quiet` or `--progress never`. [`bar`] is the one factory for bars: it
//! returns a hidden bar when nothing should be drawn (hyperfine's habit).
//!
//! The tick also samples the counters once per second into a bounded [`Sample`] series
//! (at most [`MAX_SAMPLES`] points; when full, every other point is dropped and the
//! interval doubles — the counters are cumulative, so rates stay exact), which with the
//! call-size and request-fill histograms is what `--report` draws.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::send::{Flow, Gate};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::Limits;
use crate::send::{Ack, AckResult, Attempts};
use crate::source::{Chunk, Format, InputInfo, Position};

/// Most points the time series keeps.
pub const MAX_SAMPLES: usize = 2048;
/// Seconds between plain progress lines when stderr is not a terminal.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Call-size histogram buckets (log-linear: four per power of two).
const SIZE_BUCKETS: usize = 64;
/// Request-fill histogram buckets (5% each).
const FILL_BUCKETS: usize = 20;

/// `--progress`: when to draw bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines every few seconds otherwise.
    #[default]
    Auto,
    /// Bars even when stderr does not look like a terminal (some IDE consoles, `docker`
    /// without `-t`).
    Always,
    /// No progress output (the summary is still printed).
    Never,
}

impl ProgressMode {
    pub fn parse(s: &str) -> Option<ProgressMode> {
        match s {
            "auto" => Some(ProgressMode::Auto),
            "always" => Some(ProgressMode::Always),
            "never" => Some(ProgressMode::Never),
            _ => None,
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy)]
pub struct ProgressOptions {
    pub mode: ProgressMode,
    /// `--quiet`: nothing at all.
    pub quiet: bool,
    /// Between plain lines (non-terminal output).
    pub log_interval: Duration,
}

impl Default for ProgressOptions {
    fn default() -> Self {
        ProgressOptions {
            mode: ProgressMode::Auto,
            quiet: false,
            log_interval: DEFAULT_LOG_INTERVAL,
        }
    }
}

/// The one factory for bars: hidden unless bars should be drawn.
pub fn bar(opts: &ProgressOptions, total: Option<u64>) -> ProgressBar {
    let target = match (opts.quiet, opts.mode) {
        (true, _) | (_, ProgressMode::Never) => return ProgressBar::hidden(),
        (false, ProgressMode::Auto) if !std::io::stderr().is_terminal() => {
            return ProgressBar::hidden()
        }
        (false, ProgressMode::Auto) => ProgressDrawTarget::stderr_with_hz(5),
        (false, ProgressMode::Always) => {
            ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::buffered_stderr()), 5)
        }
    };
    let template = if total.is_some() {
        "{spinner:.green} {elapsed_precise} [{wide_bar:.cyan/blue}] {percent:>3}%  {bytes}/{total_bytes}  ETA {eta}\n  {msg}"
    } else {
        "{spinner:.green} {elapsed_precise}  {bytes} read\n  {msg}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::with_draw_target(total, target).with_style(style);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// How far through one input a position is, in bytes of the input file.
#[derive(Debug, Clone, Copy)]
enum Extent {
    /// Plain CSV/NDJSON: a row's offset is its byte offset in the file.
    Bytes(u64),
    /// Parquet: the file's size, spread evenly over its rows (from the footer).
    Rows { size: u64, rows: u64 },
    /// Compressed or standard input: no honest fraction until the input ends.
    Unknown(u64),
}

impl Extent {
    fn of(info: &InputInfo) -> Extent {
        use crate::source::compress::Compression;
        if info.stdin.is_some() {
            return Extent::Unknown(0);
        }
        let size = info.size();
        if info.compression != Compression::None {
            return Extent::Unknown(size);
        }
        if info.format == Format::Parquet {
            // Known once the run opened the input (an object's footer is not read again).
            let known = info.parquet_groups.get();
            let rows =
                known
                    .map(|g| g.iter().map(|g| g.rows).sum())
                    .or_else(|| match &info.object {
                        Some(_) => None,
                        None => parquet_rows(&info.path),
                    });
            return match rows {
                Some(rows) => Extent::Rows { size, rows },
                None => Extent::Unknown(size),
            };
        }
        Extent::Bytes(size)
    }

    fn size(self) -> u64 {
        match self {
            Extent::Bytes(s) | Extent::Unknown(s) | Extent::Rows { size: s, .. } => s,
        }
    }

    fn done(self, at: Position) -> u64 {
        match self {
            Extent::Bytes(s) => at.offset.min(s),
            Extent::Rows { size, rows } if rows > 0 => {
                (size as u128 * at.row.min(rows) as u128 / rows as u128) as u64
            }
            _ => 0,
        }
    }
}

/// Row count from a Parquet footer (only the footer is read).
fn parquet_rows(path: &std::path::Path) -> Option<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = std::fs::File::open(path).ok()?;
    let r = SerializedFileReader::new(f).ok()?;
    u64::try_from(r.metadata().file_metadata().num_rows()).ok()
}

/// The counters at one moment (cumulative since the run started).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub rows_read: u64,
    pub bytes_read: u64,
    pub calls_delivered: u64,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub rejected: u64,
    pub in_flight: u64,
    /// Requests allowed in flight (the adaptive concurrency's limit), 0 when unknown.
    #[serde(default)]
    pub limit: u64,
    /// The recent round trip in milliseconds, 0 before one is measured.
    #[serde(default)]
    pub rtt_ms: f64,
    /// The sending rate now (requests a second), 0 when unbounded.
    #[serde(default)]
    pub rate: f64,
}

/// What the progress display reads of the senders.
#[derive(Default, Clone)]
pub struct Senders {
    /// Their counts of retries and 429s.
    pub attempts: Arc<Attempts>,
    /// Requests in flight, their limit and the round trip.
    pub flow: Option<Arc<Flow>>,
    /// The sending rate.
    pub gate: Option<Arc<Gate>>,
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A bounded, evenly spaced series: when full, every other point goes and the spacing
/// doubles.
#[derive(Debug, Clone)]
struct Series {
    points: Vec<Sample>,
    every: Duration,
    next: Duration,
}

impl Series {
    fn new() -> Series {
        Series {
            points: Vec::new(),
            every: Duration::from_secs(1),
            next: Duration::ZERO,
        }
    }

    /// Records `s` if its time has come (or `force`); says whether it did.
    fn offer(&mut self, at: Duration, s: Sample, force: bool) -> bool {
        if at < self.next && !force {
            return false;
        }
        if self.points.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every *= 2;
        }
        self.points.push(s);
        self.next = at + self.every;
        true
    }
}

/// What the report draws, taken at the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recorded {
    pub samples: Vec<Sample>,
    /// (smallest size, largest size, calls) per bucket from the smallest call's to the
    /// largest's.
    pub call_sizes: Vec<(u64, u64, u64)>,
    /// Requests per 5% of `--max-request-bytes` filled (20 buckets).
    pub request_fill: Vec<u64>,
    pub max_request_bytes: u64,
    /// Input bytes in total, when every input's size is known.
    pub bytes_total: Option<u64>,
}

#[derive(Debug)]
enum Shown {
    /// Drawn once [`Progress::begin`] knows the total; the bar lives in `ACTIVE`.
    Bar,
    Lines,
    Nothing,
}

/// State only the collector's thread touches.
#[derive(Debug)]
struct State {
    acked_with_body: u64,
    calls_delivered: u64,
    requests: u64,
    rejected: u64,
    call_sizes: [u64; SIZE_BUCKETS],
    fill: [u64; FILL_BUCKETS],
    series: Series,
    /// The last few per-second samples, for the current calls/s.
    recent: std::collections::VecDeque<Sample>,
    next_line: Instant,
    finished: bool,
}

/// Live counters and their display for one run. See the module docs.
#[derive(Debug)]
pub struct Progress {
    opts: ProgressOptions,
    started: Instant,
    shown: Shown,
    rows_read: AtomicU64,
    bytes_read: AtomicU64,
    forwarded: AtomicU64,
    /// Where the reader is: the input's index and the row.
    at_input: AtomicU64,
    at_row: AtomicU64,
    layout: Mutex<Layout>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct Layout {
    extents: Vec<Extent>,
    /// Bytes of the inputs before each one.
    before: Vec<u64>,
    total: Option<u64>,
    max_request_bytes: u64,
    /// The inputs' names, for `file i/n`.
    names: Vec<String>,
    senders: Senders,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bucket of a call of `len` bytes: 0 for under 16, then four per power of two.
fn size_bucket(len: u64) -> usize {
    if len < 16 {
        return 0;
    }
    let e = 63 - len.leading_zeros() as usize;
    let sub = ((len >> (e - 2)) & 3) as usize;
    ((e - 4) * 4 + sub + 1).min(SIZE_BUCKETS - 1)
}

/// The smallest length in bucket `b`.
fn bucket_low(b: usize) -> u64 {
    if b == 0 {
        return 0;
    }
    let (e, sub) = ((b - 1) / 4 + 4, (b - 1) % 4);
    (4 + sub as u64) << (e - 2)
}

/// `1234567` → `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3725` s → `1:02:05`; `65` → `1:05`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl Progress {
    /// Progress shown as `opts` says (call [`Progress::begin`] once the inputs are known).
    pub fn new(opts: ProgressOptions) -> Progress {
        let shown = if opts.quiet || opts.mode == ProgressMode::Never {
            Shown::Nothing
        } else if opts.mode == ProgressMode::Auto && !std::io::stderr().is_terminal() {
            Shown::Lines
        } else {
            Shown::Bar
        };
        let now = Instant::now();
        Progress {
            opts,
            started: now,
            shown,
            rows_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            at_input: AtomicU64::new(0),
            at_row: AtomicU64::new(0),
            layout: Mutex::new(Layout::default()),
            state: Mutex::new(State {
                acked_with_body: 0,
                calls_delivered: 0,
                requests: 0,
                rejected: 0,
                call_sizes: [0; SIZE_BUCKETS],
                fill: [0; FILL_BUCKETS],
                series: Series::new(),
                recent: Default::default(),
                next_line: now + opts.log_interval,
                finished: false,
            }),
        }
    }

    /// Counts but shows nothing (library callers, tests).
    pub fn hidden() -> Progress {
        Progress::new(ProgressOptions {
            mode: ProgressMode::Never,
            ..Default::default()
        })
    }

    /// Learns the inputs' sizes (file metadata; Parquet row counts from footers), where
    /// the run starts and where the senders count their retries, and starts drawing.
    pub fn begin(
        &self,
        inputs: &[Arc<InputInfo>],
        start: Position,
        limits: Limits,
        senders: Senders,
    ) {
        let extents: Vec<Extent> = inputs.iter().map(|i| Extent::of(i)).collect();
        let mut before = Vec::with_capacity(extents.len());
        let mut sum = 0u64;
        for e in &extents {
            before.push(sum);
            sum += e.size();
        }
        let known = extents.iter().all(|e| !matches!(e, Extent::Unknown(_)));
        let total = known.then_some(sum);
        let mut l = lock(&self.layout);
        *l = Layout {
            extents,
            before,
            total,
            max_request_bytes: limits.max_request_bytes as u64,
            names: inputs.iter().map(|i| i.display.clone()).collect(),
            senders,
        };
        self.at_input.store(start.input as u64, Ordering::Relaxed);
        self.at_row.store(start.row, Ordering::Relaxed);
        let done = l.done_at(start);
        drop(l);
        self.bytes_read.store(done, Ordering::Relaxed);
        if let Shown::Bar = self.shown {
            let pb = bar(&self.opts, total);
            pb.set_position(done);
            pb.reset_eta();
            *lock(&ACTIVE) = Some(pb);
        }
        log::debug!(
            "inputs: {} ({} bytes known)",
            inputs.len(),
            total.unwrap_or(0)
        );
    }

    /// The reader finished filling `chunk` (once per chunk).
    pub fn read(&self, chunk: &Chunk) {
        self.rows_read
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let end = chunk.end();
        let done = lock(&self.layout).done_at(end);
        self.bytes_read.fetch_max(done, Ordering::Relaxed);
        self.at_input.store(end.input as u64, Ordering::Relaxed);
        self.at_row.store(end.row, Ordering::Relaxed);
    }

    /// A request went to the senders.
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// One acknowledgement, in whatever order they arrive.
    pub fn ack(&self, ack: &Ack) {
        let max_req = lock(&self.layout).max_request_bytes.max(1);
        let mut st = lock(&self.state);
        for part in [&ack.request.rejects, &ack.server_rejects] {
            st.rejected += memchr::memchr_iter(b'\n', part).count() as u64;
        }
        let Some(body_len) = ack.body_len else {
            return;
        };
        st.acked_with_body += 1;
        if ack.result != AckResult::Delivered {
            return;
        }
        st.requests += 1;
        st.calls_delivered += ack.delivered_calls as u64;
        let fill = (body_len as u64 * FILL_BUCKETS as u64 / max_req) as usize;
        st.fill[fill.min(FILL_BUCKETS - 1)] += 1;
        // `call_ends[i]` is where call i ends; calls are separated by one comma, and a
        // batch body starts with `{"batch":[`, so the first call's start is unknown here:
        // it is measured against the previous end + 1 for all but the first.
        let mut prev: Option<u32> = None;
        for &end in &ack.request.call_ends {
            if let Some(p) = prev {
                st.call_sizes[size_bucket(end.saturating_sub(p + 1) as u64)] += 1;
            }
            prev = Some(end);
        }
        if let (Some(&first), n) = (ack.request.call_ends.first(), ack.request.call_ends.len()) {
            // The first call: estimate from the body's prefix (`{"batch":[` is 10 bytes).
            let len = if n == 1 && ack.request.path != "/v1/batch" {
                body_len as u64
            } else {
                (first as u64).saturating_sub(10)
            };
            st.call_sizes[size_bucket(len)] += 1;
        }
    }

    fn sample(&self, st: &State) -> Sample {
        let l = lock(&self.layout);
        let attempts = l.senders.attempts.counts();
        let (in_flight, limit, rtt_ms) = match &l.senders.flow {
            Some(f) => {
                let now = f.now();
                let rtt = now.rtt.map_or(0.0, |r| r.as_secs_f64() * 1e3);
                (now.in_flight as u64, now.limit as u64, rtt)
            }
            None => {
                let n = self.forwarded.load(Ordering::Relaxed);
                (n.saturating_sub(st.acked_with_body), 0, 0.0)
            }
        };
        let rate = l
            .senders
            .gate
            .as_ref()
            .and_then(|g| g.rate())
            .unwrap_or(0.0);
        drop(l);
        Sample {
            t: self.started.elapsed().as_secs_f64(),
            rows_read: self.rows_read.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            calls_delivered: st.calls_delivered,
            requests: st.requests,
            retries: attempts.retries,
            throttled: attempts.throttled,
            rejected: st.rejected,
            in_flight,
            limit,
            rtt_ms,
            rate,
        }
    }

    /// Called by the collector every loop turn: samples once per second, redraws, and
    /// prints a plain line when one is due.
    pub fn tick(&self) {
        let mut st = lock(&self.state);
        if st.finished {
            return;
        }
        let at = self.started.elapsed();
        let s = self.sample(&st);
        let sampled = st.series.offer(at, s, false);
        if sampled {
            st.recent.push_back(s);
            if st.recent.len() > 6 {
                st.recent.pop_front();
            }
        }
        match &self.shown {
            Shown::Bar => {
                if let Some(pb) = lock(&ACTIVE).as_ref() {
                    pb.set_position(s.bytes_read);
                    pb.set_message(self.message(&st, &s));
                }
            }
            Shown::Lines if Instant::now() >= st.next_line => {
                st.next_line = Instant::now() + self.opts.log_interval;
                let line = self.line(&st, &s);
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            _ => {}
        }
    }

    /// Calls per second over the last few seconds.
    fn calls_per_sec(st: &State, now: &Sample) -> f64 {
        match st.recent.front() {
            Some(old) if now.t - old.t > 0.5 => {
                (now.calls_delivered - old.calls_delivered.min(now.calls_delivered)) as f64
                    / (now.t - old.t)
            }
            _ if now.t > 0.0 => now.calls_delivered as f64 / now.t,
            _ => 0.0,
        }
    }

    fn message(&self, st: &State, s: &Sample) -> String {
        let mut out = format!(
            "{} calls delivered ({} rows read) · {} calls/s · {} in flight{} · {} retries · {} throttled · {} rejected",
            thousands(s.calls_delivered),
            thousands(s.rows_read),
            thousands(Self::calls_per_sec(st, s).round() as u64),
            s.in_flight,
            Self::network(s),
            thousands(s.retries),
            thousands(s.throttled),
            thousands(s.rejected)
        );
        out.push_str(&self.file_at());
        out
    }

    /// ` (limit 24, rtt 152 ms, 200 req/s)`: the adaptive concurrency's limit, the round
    /// trip and the sending rate, as far as they are known.
    fn network(s: &Sample) -> String {
        let mut parts = Vec::new();
        if s.limit > 0 {
            parts.push(format!("limit {}", s.limit));
        }
        if s.rtt_ms > 0.0 {
            parts.push(format!("rtt {:.0} ms", s.rtt_ms));
        }
        if s.rate > 0.0 {
            parts.push(format!("{:.0} req/s", s.rate));
        }
        if parts.is_empty() {
            return String::new();
        }
        format!(" ({})", parts.join(", "))
    }

    /// ` [file 2/5 b.csv.gz, row 1,234]` for several inputs or one whose size says
    /// nothing of the position (compressed, standard input); empty otherwise.
    fn file_at(&self) -> String {
        let l = lock(&self.layout);
        let n = l.names.len();
        let i = self.at_input.load(Ordering::Relaxed) as usize;
        let unknown = matches!(l.extents.get(i), Some(Extent::Unknown(_)));
        if n == 0 || (n == 1 && !unknown) {
            return String::new();
        }
        let Some(name) = l.names.get(i.min(n - 1)) else {
            return String::new();
        };
        format!(
            " [file {}/{n} {name}, row {}]",
            i.min(n - 1) + 1,
            thousands(self.at_row.load(Ordering::Relaxed))
        )
    }

    /// `progress: 41.2% 1,200,000 calls delivered 1,234,567 rows 98,765 calls/s 3 in flight (limit 24, rtt 152 ms, 200 req/s) 12 retries 4 throttled 17 rejected [file 2/5 b.csv.gz, row 1,234] (0:12 elapsed, eta 0:17)`
    fn line(&self, st: &State, s: &Sample) -> String {
        let total = lock(&self.layout).total;
        let mut out = String::from("progress:");
        let mut eta = None;
        if let Some(t) = total.filter(|&t| t > 0) {
            let frac = (s.bytes_read as f64 / t as f64).min(1.0);
            out.push_str(&format!(" {:.1}%", frac * 100.0));
            if frac > 0.0 && frac < 1.0 {
                eta = Some(s.t * (1.0 - frac) / frac);
            }
        }
        out.push_str(&format!(
            " {} calls delivered {} rows {} calls/s {} in flight{} {} retries {} throttled {} rejected{} ({} elapsed",
            thousands(s.calls_delivered),
            thousands(s.rows_read),
            thousands(Self::calls_per_sec(st, s).round() as u64),
            s.in_flight,
            Self::network(s),
            thousands(s.retries),
            thousands(s.throttled),
            thousands(s.rejected),
            self.file_at(),
            clock(s.t)
        ));
        if let Some(e) = eta {
            out.push_str(&format!(", eta {}", clock(e)));
        }
        out.push(')');
        out
    }

    /// Ends the display (clears the bar) and takes the last sample. Idempotent.
    pub fn finish(&self) {
        let mut st = lock(&self.state);
        if st.finished {
            return;
        }
        st.finished = true;
        let s = self.sample(&st);
        st.series.offer(self.started.elapsed(), s, true);
        match &self.shown {
            Shown::Bar => {
                if let Some(pb) = lock(&ACTIVE).take() {
                    pb.finish_and_clear();
                }
            }
            // No closing line: the summary that follows says it all, and an error
            // message stays the first thing a failed run prints.
            Shown::Lines | Shown::Nothing => {}
        }
    }

    /// The series and histograms, for the report.
    pub fn recorded(&self) -> Recorded {
        let st = lock(&self.state);
        let mut samples = st.series.points.clone();
        if !st.finished {
            samples.push(self.sample(&st));
        }
        // After `sample`, which takes the layout lock itself.
        let l = lock(&self.layout);
        // Every bucket from the smallest to the largest seen, so gaps show as gaps.
        let first = st.call_sizes.iter().position(|&n| n > 0).unwrap_or(0);
        let last = st
            .call_sizes
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |l| l + 1);
        let call_sizes = (first..last)
            .map(|b| {
                (
                    bucket_low(b),
                    bucket_low(b + 1).saturating_sub(1),
                    st.call_sizes[b],
                )
            })
            .collect();
        Recorded {
            samples,
            call_sizes,
            request_fill: st.fill.to_vec(),
            max_request_bytes: l.max_request_bytes,
            bytes_total: l.total,
        }
    }
}

impl crate::checkpoint::collect::Watch for Progress {
    fn ack(&self, ack: &Ack) {
        Progress::ack(self, ack)
    }
    fn tick(&self) {
        Progress::tick(self)
    }
}

impl Layout {
    fn done_at(&self, at: Position) -> u64 {
        let i = at.input as usize;
        match (self.before.get(i), self.extents.get(i)) {
            (Some(b), Some(e)) => b + e.done(at),
            // Past the last input: everything.
            _ => {
                self.before.last().copied().unwrap_or(0)
                    + self.extents.last().map_or(0, |e| e.size())
            }
        }
    }
}

/// The bar being drawn (one run per process), so log lines can be printed above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A tiny logger: `-v` info, `-vv` debug, `-vvv` trace (default: warnings); `RUST_LOG`
/// (`error`, `warn`, `info`, `debug`, `trace`, `off`, or `cdp_backfill=LEVEL`) overrides.
/// Lines go to stderr, above the progress bar; with `json`, one JSON object a line
/// (`ts`, `level`, `target`, `message`). Nothing logged ever holds the API key: the key
/// is only ever formatted as `ApiKey`'s redacted form.
pub fn init_logger(verbose: u8, json: bool) {
    let mut level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if let Ok(spec) = std::env::var("RUST_LOG") {
        for part in spec.split(',') {
            let (target, lvl) = part.split_once('=').unwrap_or(("", part));
            if !target.is_empty() && !target.starts_with("cdp_backfill") {
                continue;
            }
            if let Ok(l) = lvl.trim().parse::<log::LevelFilter>() {
                level = l;
            }
        }
    }
    static TEXT: StderrLogger = StderrLogger { json: false };
    static JSON: StderrLogger = StderrLogger { json: true };
    if log::set_logger(if json { &JSON } else { &TEXT }).is_ok() {
        log::set_max_level(level);
    }
}

struct StderrLogger {
    json: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level() && m.target().starts_with("cdp_backfill")
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = r.level().as_str().to_ascii_lowercase();
        let line = if self.json {
            serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "level": level,
                "target": r.target(),
                "message": r.args().to_string(),
            })
            .to_string()
        } else {
            format!("[{level} {}] {}", r.target(), r.args())
        };
        match lock(&ACTIVE).as_ref() {
            // A closed stderr loses the line and stops nothing.
            Some(pb) => pb.suspend(|| {
                let _ = writeln!(std::io::stderr(), "{line}");
            }),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_ordered_and_contain_their_lengths() {
        for len in [0u64, 15, 16, 17, 20, 24, 31, 32, 100, 1000, 32_768, 1 << 20] {
            let b = size_bucket(len);
            assert!(
                bucket_low(b) <= len,
                "{len} in bucket {b} starting {}",
                bucket_low(b)
            );
            if b + 1 < SIZE_BUCKETS {
                assert!(len < bucket_low(b + 1), "{len} below next bucket");
            }
        }
        assert_eq!(size_bucket(16), 1);
        assert_eq!(bucket_low(1), 16);
        assert_eq!(bucket_low(5), 32);
    }

    #[test]
    fn series_stays_bounded_and_keeps_the_first_point() {
        let mut s = Series::new();
        for i in 0..(MAX_SAMPLES as u64 * 3) {
            let at = Duration::from_secs(i);
            s.offer(
                at,
                Sample {
                    t: i as f64,
                    calls_delivered: i,
                    ..Default::default()
                },
                false,
            );
        }
        assert!(s.points.len() <= MAX_SAMPLES);
        assert_eq!(s.points[0].t, 0.0);
        let gaps: Vec<f64> = s.points.windows(2).map(|w| w[1].t - w[0].t).collect();
        assert!(gaps.iter().all(|&g| g >= 1.0));
    }

    #[test]
    fn recorded_before_and_after_finish_holds_the_last_sample() {
        let p = Progress::hidden();
        p.begin(
            &[],
            Position::default(),
            Limits::default(),
            Default::default(),
        );
        p.forwarded();
        assert_eq!(p.recorded().samples.last().map(|s| s.in_flight), Some(1));
        p.finish();
        p.finish();
        assert_eq!(p.recorded().samples.len(), 1);
        assert_eq!(p.recorded().request_fill.len(), FILL_BUCKETS);
    }

    #[test]
    fn thousands_and_clock_format() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clock(65.0), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
