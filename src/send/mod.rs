//! Delivery: sender workers that take packed [`Request`]s, wait at the shared [`Gate`],
//! post, classify the answer ([`retry::classify`]) and report an [`Ack`] per request. They
//! count their retries and 429s into [`Attempts`] as they happen, which the progress
//! display and the summary read; this module knows of neither. What the senders share is
//! one owned [`Delivery`], so a sender stuck in a request can outlive the run.
//!
//! A request is never dropped: it is acknowledged as delivered (its refused calls, if
//! strict mode refused some, as reject lines), or the run stops with the request
//! unacknowledged so the checkpoint stays behind it. Running out of retries stops the run
//! (every worker finishes the attempt it has on the wire, then sends nothing more); it
//! never skips the request. A 429 pauses every worker (the whole run slows down), not
//! only the one that saw it.
//!
//! Strict mode: a request refused as invalid (400) is split in halves, recursively, until
//! the refused calls stand alone; the others are delivered in the smaller requests, the
//! refused ones become reject lines carrying the server's answer. The split reuses the
//! body's bytes through `Request::call_ends`, so nothing is re-encoded.

pub mod adapt;
pub mod flow;
pub mod gate;
pub mod retry;
pub mod transport;

use std::io::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::GzipLevel;
use crate::map::encode::Reject;
use crate::pack::{CallOrigin, Request, Spares};
use crate::source::InputInfo;
use adapt::Signal;
pub use flow::{Flow, FlowNow, Limit};
pub use gate::Gate;
use retry::{backoff, classify, Decision};
use transport::Transport;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckResult {
    /// Every call was accepted, or refused as invalid and turned into a reject line.
    Delivered,
    /// A marker, passed straight through.
    Marker,
    /// The run stopped before this request was (wholly) sent.
    Skipped,
    /// Retrying could not deliver it; the run stops.
    Failed(String),
}

/// What happened to one [`Request`].
#[derive(Debug, Clone)]
pub struct Ack {
    pub request: Request,
    pub result: AckResult,
    /// Calls the server accepted (all of them unless strict mode refused some).
    pub delivered_calls: u32,
    /// Reject lines for calls the server refused as invalid (strict mode), NDJSON.
    pub server_rejects: Vec<u8>,
    /// HTTP requests the server accepted, and their bodies' bytes (uncompressed): the
    /// request itself, or the pieces strict mode split it into.
    pub accepted_requests: u32,
    pub accepted_bytes: u64,
    /// The length of the request's body, if it had one. The sender gives the body itself
    /// back to the packer ([`Delivery::spares`]) once the request is done, so bodies
    /// waiting in the acknowledgements (behind a slow request, or a collector short of
    /// CPU) take no memory.
    pub body_len: Option<usize>,
}

/// How requests are sent and retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt before the run stops.
    pub max_retries: u32,
    /// Backoff: a uniform draw from `[0, min(cap, base·2^attempt)]`.
    pub base: Duration,
    pub cap: Duration,
    /// Requests carry `X-Strict-Mode: 1`, so a 400 means "some calls are invalid".
    pub strict: bool,
    /// Compress bodies (`Content-Encoding: gzip`) at this level; once per body, not per
    /// attempt (unless `--sent-at now` restamps the body for the attempt).
    pub gzip: Option<GzipLevel>,
}

/// Pause for a 429 that names no `Retry-After`.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// A small xorshift for jitter: no need for a crypto RNG, nor for a dependency.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let id = std::thread::current().id();
        let h = xxhash_rust::xxh3::xxh3_64(format!("{t}{id:?}").as_bytes());
        Jitter(h | 1)
    }
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Retries and 429s, counted by the senders as they happen (so a storm of 429s shows at
/// once, and a run that stops counts the retries of requests that never finished). The
/// progress display and the summary read these; nothing here knows of either.
#[derive(Debug, Default)]
pub struct Attempts {
    retries: AtomicU64,
    throttled: AtomicU64,
    retries_no_answer: AtomicU64,
    split: AtomicU64,
}

/// [`Attempts`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCounts {
    /// Attempts sent again.
    pub retries: u64,
    /// 429 answers received.
    pub throttled: u64,
    /// Of `retries`, those after an attempt that got no answer.
    pub retries_no_answer: u64,
    /// Requests refused as invalid in strict mode and split to find the refused calls.
    pub split: u64,
}

impl Attempts {
    /// A retry about to be sent (`no_answer`: the attempt before it got none).
    pub fn retried(&self, no_answer: bool) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if no_answer {
            self.retries_no_answer.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A 429 received.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused in strict mode is being split.
    pub fn split(&self) {
        self.split.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> AttemptCounts {
        AttemptCounts {
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries_no_answer: self.retries_no_answer.load(Ordering::Relaxed),
            split: self.split.load(Ordering::Relaxed),
        }
    }
}

/// What every sender shares, owned, so a sender thread can outlive the run that started
/// it: a sender stuck in a request after the drain timeout is left behind, and the run
/// returns without it.
#[derive(Clone)]
pub struct Delivery {
    pub transport: Arc<dyn Transport>,
    pub gate: Arc<Gate>,
    pub policy: RetryPolicy,
    /// Set when a request failed for good (by the sender that saw it) or the run stops:
    /// nothing more is sent.
    pub stop: Arc<AtomicBool>,
    /// The inputs, to name them in reject lines.
    pub inputs: Arc<[Arc<InputInfo>]>,
    pub attempts: Arc<Attempts>,
    /// Permits for requests on the wire, and the adaptive concurrency behind them.
    pub flow: Arc<Flow>,
    /// Where spent bodies go back to the packer.
    pub spares: Spares,
}

/// One sender: runs until `rx` closes. It takes a permit ([`Flow`]) before it takes a
/// request, and gives it back once the request is acknowledged, so bodies exist only for
/// requests that may be sent. After `stop` is set it sends nothing more and acknowledges
/// the rest as skipped.
pub fn worker(rx: Receiver<Request>, acks: Sender<Ack>, d: &Delivery) {
    let mut s = Poster {
        transport: &*d.transport,
        gate: &d.gate,
        flow: &d.flow,
        policy: d.policy,
        stop: &d.stop,
        jitter: Jitter::new(),
        attempts: &d.attempts,
    };
    loop {
        let permit = d.flow.acquire(&d.stop);
        let Ok(request) = rx.recv() else {
            if let Some(p) = permit {
                d.flow.release(p);
            }
            return;
        };
        // Without a permit (stopping) the request is only acknowledged as skipped.
        let ack = deliver(request, &mut s, &d.inputs);
        if let Some(p) = permit {
            d.flow.release(p);
        }
        if matches!(ack.result, AckResult::Failed(_)) {
            d.stop.store(true, Ordering::SeqCst);
        }
        let mut ack = ack;
        if let Some(body) = ack.request.body.take() {
            ack.body_len = Some(body.len());
            // Nothing sends it again: unless a clone is still alive somewhere, the
            // packer can reuse the buffer.
            if let Ok(bytes) = Arc::try_unwrap(body) {
                d.spares.give(bytes);
            }
        }
        if acks.send(ack).is_err() {
            return;
        }
    }
}

/// The end of one body's attempts.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Accepted,
    /// Strict mode refused some of its calls; the server's answer.
    Refused(String),
    /// Retries ran out, or retrying cannot help.
    Failed(String),
    /// The run is stopping; the body was not sent (or its answer is unknown).
    Stopped,
}

/// Why a split delivery ended early.
enum Halt {
    Failed(String),
    Stopped,
}

/// A worker's means to post one body until it has an answer.
struct Poster<'a> {
    transport: &'a dyn Transport,
    gate: &'a Gate,
    flow: &'a Flow,
    policy: RetryPolicy,
    stop: &'a AtomicBool,
    jitter: Jitter,
    /// Counts retries and 429s as they happen, not when their request is finally
    /// acknowledged.
    attempts: &'a Attempts,
}

impl Poster<'_> {
    /// Posts `body` (of `calls` calls, ending at `call_ends`) through the gate, retrying
    /// as `classify` says. `seq` names the request in log lines.
    fn send(
        &mut self,
        seq: u64,
        path: &str,
        body: &Arc<Vec<u8>>,
        calls: u32,
        call_ends: &[u32],
    ) -> Sent {
        let wire = match on_wire(body.clone(), self.policy.gzip) {
            Ok(w) => w,
            Err(why) => return Sent::Failed(why),
        };
        let mut attempt = 0u32;
        loop {
            if !self.gate.wait(self.stop, calls) {
                return Sent::Stopped;
            }
            // Issue 4 hook (`--sent-at now`): stamp the calls' fixed-width sentAt
            // placeholders, found by the calls' ends, with this attempt's time
            // (map/sent_at.rs); None otherwise.
            let stamped = match crate::map::sent_at::restamp(body, call_ends)
                .map(|b| on_wire(b, self.policy.gzip))
                .transpose()
            {
                Ok(s) => s,
                Err(why) => return Sent::Failed(why),
            };
            let started = Instant::now();
            self.flow.sent(started);
            let outcome = self.transport.post(
                path,
                stamped.as_ref().unwrap_or(&wire),
                self.policy.gzip.is_some(),
            );
            self.flow.back();
            let now = Instant::now();
            let answered = !matches!(outcome, retry::Attempt::NoResponse { .. });
            let decision = classify(&outcome, self.policy.strict);
            self.feed(now, now - started, &decision);
            match decision {
                Decision::Success => return Sent::Accepted,
                Decision::Invalid { why } => return Sent::Refused(why),
                Decision::Fatal { why } => {
                    // Name where it went: a 404 is most often a pasted full URL.
                    let url = crate::config::strip_userinfo(&self.transport.url(path));
                    return Sent::Failed(format!("{why} (POST {url})"));
                }
                Decision::Retry {
                    after,
                    throttled,
                    why,
                } => {
                    if throttled {
                        self.attempts.throttled();
                        self.gate.pause(after.unwrap_or(DEFAULT_THROTTLE_PAUSE));
                    }
                    if attempt >= self.policy.max_retries {
                        return Sent::Failed(format!(
                            "a request still failed after {} attempt{} (--max-retries {}); the server last answered: {why}",
                            attempt + 1,
                            if attempt == 0 { "" } else { "s" },
                            self.policy.max_retries
                        ));
                    }
                    let p = self.policy;
                    let wait = backoff(attempt, p.base, p.cap, after, self.jitter.unit());
                    attempt += 1;
                    log::info!(
                        "request {seq}: {why} (POST {}); retry {attempt} of {} in {:.2}s{}",
                        crate::config::strip_userinfo(&self.transport.url(path)),
                        p.max_retries,
                        wait.as_secs_f64(),
                        match (throttled, after) {
                            (true, Some(a)) =>
                                format!(", Retry-After {}s, every sender paused", a.as_secs_f64()),
                            (true, None) => format!(
                                ", no Retry-After, every sender paused {}s",
                                DEFAULT_THROTTLE_PAUSE.as_secs()
                            ),
                            _ => String::new(),
                        }
                    );
                    if !sleep_unless_stopped(wait, self.stop) {
                        return Sent::Stopped;
                    }
                    // Counted once it is about to go: a run that stops during the
                    // backoff sent no retry.
                    self.attempts.retried(!answered);
                }
            }
        }
    }
}

impl Poster<'_> {
    /// Feeds one attempt's answer to the adaptive concurrency and rate.
    fn feed(&self, now: Instant, rtt: Duration, decision: &Decision) {
        let (signal, pause) = match decision {
            Decision::Success | Decision::Invalid { .. } => (Signal::Answered { rtt }, None),
            Decision::Retry {
                throttled: true,
                after,
                ..
            } => (
                Signal::Throttled,
                Some(after.unwrap_or(DEFAULT_THROTTLE_PAUSE)),
            ),
            Decision::Retry { .. } => (Signal::Overloaded, None),
            Decision::Fatal { .. } => return,
        };
        let rate = self.gate.rate().unwrap_or(f64::INFINITY);
        self.flow.answered(now, signal, rate);
        // Answers to requests already on the wire may come for a round trip more (and
        // the pause, if one starts): they are the same episode.
        let hold = self.flow.rtt().unwrap_or(rtt) + pause.unwrap_or_default();
        if let Some(r) = self.gate.answered(now, signal, hold) {
            log::info!("sending rate now {r:.1} requests/s");
        }
    }
}

/// `body` as it goes on the wire: gzipped at `level`, or as it is (`None`).
fn on_wire(body: Arc<Vec<u8>>, level: Option<GzipLevel>) -> Result<Arc<Vec<u8>>, String> {
    match level {
        None => Ok(body),
        Some(level) => gzip(&body, level)
            .map(Arc::new)
            .map_err(|e| format!("cannot gzip a request body: {e}")),
    }
}

/// `body` gzipped at `level`: the one place request bodies are compressed (public for
/// the benchmark of the levels, benches/pack.rs).
pub fn gzip(body: &[u8], level: GzipLevel) -> std::io::Result<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::new(u32::from(level.get())),
    );
    z.write_all(body)?;
    z.finish()
}

fn deliver(request: Request, s: &mut Poster<'_>, inputs: &[Arc<InputInfo>]) -> Ack {
    let mut ack = Ack {
        request,
        result: AckResult::Skipped,
        delivered_calls: 0,
        server_rejects: Vec::new(),
        accepted_requests: 0,
        accepted_bytes: 0,
        body_len: None,
    };
    let Some(body) = ack.request.body.clone() else {
        ack.result = AckResult::Marker;
        return ack;
    };
    let (path, seq) = (ack.request.path, ack.request.seq);
    let why = match s.send(seq, path, &body, ack.request.calls, &ack.request.call_ends) {
        Sent::Accepted => {
            ack.result = AckResult::Delivered;
            ack.delivered_calls = ack.request.calls;
            ack.accepted_requests = 1;
            ack.accepted_bytes = body.len() as u64;
            return ack;
        }
        Sent::Stopped => return ack,
        Sent::Failed(why) => {
            ack.result = AckResult::Failed(why);
            return ack;
        }
        Sent::Refused(why) => why,
    };
    // A request of one call that is not a batch (an alias, sent alone to /v1/alias): the
    // answer is about that call, so it is a reject line, and the run goes on.
    if ack.request.calls == 1 && !body.starts_with(BATCH_PREFIX) {
        if let Some(&origin) = ack.request.origins.first() {
            log::info!("request {seq}: {path} refused as invalid in strict mode ({why}); its call goes to the rejects file");
            invalid_call(&mut ack.server_rejects, inputs, origin, &body, why);
            ack.result = AckResult::Delivered;
            return ack;
        }
    }
    // Borrowed by the split while `ack` counts the pieces accepted; put back below.
    let call_ends = std::mem::take(&mut ack.request.call_ends);
    let origins = std::mem::take(&mut ack.request.origins);
    let Some(split) = Split::new(&body, &call_ends, origins.len()) else {
        ack.request.call_ends = call_ends;
        ack.request.origins = origins;
        ack.result = AckResult::Failed(format!(
            "the API refused a request as invalid (strict mode) and its calls cannot be told apart to isolate the bad ones: {why}"
        ));
        return ack;
    };
    s.attempts.split();
    log::info!(
        "request {seq}: refused as invalid in strict mode ({why}); splitting its {} calls to find the refused ones",
        split.len()
    );
    let mut b = Bisect {
        split: &split,
        seq,
        path,
        origins: &origins,
        inputs,
        delivered: 0,
        rejects: Vec::new(),
    };
    let halted = b.run(s, 0..split.len(), Some(why), &mut ack);
    let (delivered, rejects) = (b.delivered, b.rejects);
    ack.request.call_ends = call_ends;
    ack.request.origins = origins;
    match halted {
        Ok(_) => {
            ack.result = AckResult::Delivered;
            ack.delivered_calls = delivered;
            ack.server_rejects = rejects;
        }
        // Some halves may have been accepted already: a resume sends them again with
        // the same messageIds, which is what messageIds are for.
        Err(Halt::Stopped) => {}
        Err(Halt::Failed(why)) => ack.result = AckResult::Failed(why),
    }
    ack
}

/// The calls of a body, addressable by index, and the bytes around them.
struct Split<'a> {
    body: &'a [u8],
    ends: &'a [u32],
}

/// What every batch body starts with (see `pack.rs`).
const BATCH_PREFIX: &[u8] = b"{\"batch\":[";

impl<'a> Split<'a> {
    /// `None` unless `ends` describes `calls` comma-separated calls inside `body`.
    fn new(body: &'a [u8], ends: &'a [u32], calls: usize) -> Option<Self> {
        if ends.is_empty() || ends.len() != calls || !body.starts_with(BATCH_PREFIX) {
            return None;
        }
        let mut start = BATCH_PREFIX.len();
        for (i, &end) in ends.iter().enumerate() {
            let end = end as usize;
            if end <= start || end > body.len() || (i > 0 && body[start - 1] != b',') {
                return None;
            }
            start = end + 1;
        }
        Some(Split { body, ends })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn call(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 {
            BATCH_PREFIX.len()
        } else {
            self.ends[i - 1] as usize + 1
        };
        &self.body[start..self.ends[i] as usize]
    }

    /// A body holding the calls in `r`, with the original's prefix and whatever follows
    /// its last call (`]}`, or top-level keys after the array), and its calls' ends.
    fn body(&self, r: Range<usize>) -> (Vec<u8>, Vec<u32>) {
        let suffix = &self.body[*self.ends.last().unwrap_or(&0) as usize..];
        let mut out = Vec::with_capacity(BATCH_PREFIX.len() + suffix.len() + 64 * r.len());
        let mut ends = Vec::with_capacity(r.len());
        out.extend_from_slice(BATCH_PREFIX);
        for i in r.clone() {
            if i > r.start {
                out.push(b',');
            }
            out.extend_from_slice(self.call(i));
            ends.push(out.len() as u32);
        }
        out.extend_from_slice(suffix);
        (out, ends)
    }
}

/// Isolates the refused calls of one request by halving.
struct Bisect<'a> {
    split: &'a Split<'a>,
    /// The request's number, for log lines.
    seq: u64,
    path: &'a str,
    origins: &'a [CallOrigin],
    inputs: &'a [Arc<InputInfo>],
    delivered: u32,
    rejects: Vec<u8>,
}

impl Bisect<'_> {
    /// Delivers the valid calls of `r` and rejects the others. `refused`: the server's
    /// answer when `r` is already known to hold a refused call (so it is not sent again).
    /// Returns whether all of `r` was accepted.
    fn run(
        &mut self,
        s: &mut Poster<'_>,
        r: Range<usize>,
        refused: Option<String>,
        ack: &mut Ack,
    ) -> Result<bool, Halt> {
        let why = match refused {
            Some(why) => why,
            None => {
                let (body, ends) = self.split.body(r.clone());
                let body = Arc::new(body);
                match s.send(self.seq, self.path, &body, r.len() as u32, &ends) {
                    Sent::Accepted => {
                        self.delivered += r.len() as u32;
                        ack.accepted_requests += 1;
                        ack.accepted_bytes += body.len() as u64;
                        return Ok(true);
                    }
                    Sent::Refused(why) => why,
                    Sent::Failed(why) => return Err(Halt::Failed(why)),
                    Sent::Stopped => return Err(Halt::Stopped),
                }
            }
        };
        if r.len() == 1 {
            self.reject(r.start, why);
            return Ok(false);
        }
        let mid = r.start + r.len() / 2;
        let left_ok = self.run(s, r.start..mid, None, ack)?;
        // The whole was refused and its left half accepted: the right half holds a
        // refused call, so it need not be tried whole (unless it is one call, whose own
        // answer is the best reason to report).
        let right_known = (left_ok && r.end - mid > 1).then_some(why);
        self.run(s, mid..r.end, right_known, ack)?;
        Ok(false)
    }

    fn reject(&mut self, i: usize, why: String) {
        let call = self.split.call(i);
        invalid_call(&mut self.rejects, self.inputs, self.origins[i], call, why);
    }
}

/// Writes the reject line of a call the API refused as invalid (strict mode), with its
/// answer.
fn invalid_call(
    out: &mut Vec<u8>,
    inputs: &[Arc<InputInfo>],
    origin: CallOrigin,
    call: &[u8],
    why: String,
) {
    let input = inputs.get(origin.input as usize).map(|i| &**i);
    let r = Reject {
        code: "invalid_call",
        detail: why,
    };
    crate::map::encode::write_call_reject(out, input, origin.row, call, &r);
}

/// Sleeps `d` in slices; returns false (early) once `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::retry::Attempt;
    use super::*;
    use std::sync::Mutex;

    /// Answers from a script: refuses (400) any body holding a `"bad"` call, counts posts.
    struct Fake {
        status: Option<u16>,
        posts: Mutex<Vec<String>>,
    }

    impl Transport for Fake {
        fn url(&self, path: &str) -> String {
            format!("http://fake{path}")
        }

        fn post(&self, _: &str, body: &Arc<Vec<u8>>, _: bool) -> Attempt {
            let text = String::from_utf8_lossy(body).into_owned();
            self.posts.lock().unwrap().push(text.clone());
            let status = match self.status {
                Some(s) => s,
                None if text.contains("bad") => 400,
                None => 200,
            };
            Attempt::Response {
                status,
                retry_after: None,
                body: format!("answer {status}"),
            }
        }
    }

    fn work(calls: &[&str]) -> Request {
        let mut body = BATCH_PREFIX.to_vec();
        let mut call_ends = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(c.as_bytes());
            call_ends.push(body.len() as u32);
        }
        body.extend_from_slice(b"],\"context\":{\"k\":1}}");
        Request {
            seq: 0,
            path: "/v1/batch",
            body: Some(Arc::new(body)),
            calls: calls.len() as u32,
            call_ends,
            origins: (0..calls.len() as u64)
                .map(|row| CallOrigin { input: 0, row })
                .collect(),
            ..Request::default()
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            strict: true,
            gzip: None,
        }
    }

    fn run(fake: &Fake, w: Request) -> Ack {
        run_counted(fake, w, &Attempts::default())
    }

    /// As `run`, counting retries and 429s into `attempts`.
    fn run_counted(fake: &Fake, w: Request, attempts: &Attempts) -> Ack {
        let gate = Gate::new(None, None);
        let flow = Flow::new(Limit::Fixed(1));
        let stop = AtomicBool::new(false);
        let mut p = Poster {
            transport: fake,
            gate: &gate,
            flow: &flow,
            policy: policy(),
            stop: &stop,
            jitter: Jitter::new(),
            attempts,
        };
        deliver(w, &mut p, &[])
    }

    #[test]
    fn sub_bodies_keep_prefix_and_suffix() {
        let w = work(&[r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        let body = w.body.clone().unwrap();
        let s = Split::new(&body, &w.call_ends, 3).expect("well formed");
        assert_eq!(s.call(1), br#"{"b":2}"#);
        let (sub, ends) = s.body(1..3);
        assert_eq!(
            String::from_utf8(sub).unwrap(),
            r#"{"batch":[{"b":2},{"c":3}],"context":{"k":1}}"#
        );
        // The ends of the calls in the smaller body: `{"batch":[` + 7, a comma, 7.
        assert_eq!(ends, [17, 25]);
        assert!(Split::new(&body, &w.call_ends, 2).is_none());
        assert!(Split::new(&body, &[5, 12], 2).is_none());
    }

    #[test]
    fn refused_calls_are_isolated_and_the_rest_delivered() {
        let calls = [
            r#"{"n":0}"#,
            r#"{"n":"bad1"}"#,
            r#"{"n":2}"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#,
            r#"{"n":"bad5"}"#,
            r#"{"n":6}"#,
        ];
        let fake = Fake {
            status: None,
            posts: Mutex::new(Vec::new()),
        };
        let ack = run(&fake, work(&calls));
        assert_eq!(ack.result, AckResult::Delivered);
        assert_eq!(ack.delivered_calls, 5);
        let lines: Vec<serde_json::Value> = ack
            .server_rejects
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["row"], 2);
        assert_eq!(lines[0]["reason"], "invalid_call");
        assert_eq!(lines[0]["detail"], "answer 400");
        assert_eq!(lines[0]["call"]["n"], "bad1");
        assert_eq!(lines[1]["row"], 6);
        // Every accepted body together holds each good call exactly once.
        let posts = fake.posts.lock().unwrap();
        let mut accepted: Vec<String> = Vec::new();
        for p in posts.iter().filter(|p| !p.contains("bad")) {
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            assert_eq!(v["context"]["k"], 1);
            for c in v["batch"].as_array().unwrap() {
                accepted.push(c["n"].to_string());
            }
        }
        accepted.sort();
        assert_eq!(accepted, ["0", "2", "3", "4", "6"]);
    }

    #[test]
    fn running_out_of_retries_fails_naming_the_answer() {
        let fake = Fake {
            status: Some(503),
            posts: Mutex::new(Vec::new()),
        };
        let attempts = Attempts::default();
        let ack = run_counted(&fake, work(&[r#"{"n":0}"#]), &attempts);
        let AckResult::Failed(why) = &ack.result else {
            panic!("{:?}", ack.result)
        };
        assert!(
            why.contains("HTTP 503") && why.contains("3 attempts"),
            "{why}"
        );
        assert_eq!(attempts.counts().retries, 2);
        assert_eq!(ack.delivered_calls, 0);
        assert_eq!(fake.posts.lock().unwrap().len(), 3);
    }

    #[test]
    fn gzip_round_trips_at_every_level() {
        let body = br#"{"batch":[{"type":"track"}]}"#.repeat(20);
        for level in GzipLevel::MIN..=GzipLevel::MAX {
            let z = gzip(&body, GzipLevel::new(level).unwrap()).unwrap();
            assert!(z.len() < body.len());
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut out)
                .unwrap();
            assert_eq!(out, body, "level {level}");
        }
    }
}
