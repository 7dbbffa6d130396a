//! Delivery: sender workers that take packed requests, wait for the shared rate limiter,
//! post, classify the answer ([`retry::classify`]) and report an [`Ack`] per request.
//!
//! A request is never dropped: it is acknowledged as delivered, or the run stops with the
//! request unacknowledged so the checkpoint stays behind it. A 429 pauses every worker
//! (the whole run slows down), not only the one that saw it.

pub mod retry;
pub mod transport;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::source::Position;
use retry::{backoff, classify, Decision};
use transport::Transport;

/// Where a call came from, so a call the server refuses can be reported by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOrigin {
    pub input: u32,
    /// 0-based data row.
    pub row: u64,
}

/// One request to send (or, with no body, a marker that only moves the checkpoint).
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// Order of creation; the checkpoint advances over a contiguous prefix of these.
    pub seq: u64,
    pub path: &'static str,
    pub body: Option<Arc<Vec<u8>>>,
    pub calls: u32,
    /// End offset of each call inside `body` (calls are separated by one comma), so a
    /// refused request can be split without re-parsing it.
    pub call_ends: Vec<u32>,
    /// The row each call came from, in the same order.
    pub origins: Vec<CallOrigin>,
    /// Where to resume once this and every earlier request is acknowledged.
    pub resume: Position,
    /// Reject lines of rows before `resume` not yet written. The collector writes them
    /// when this work joins the acknowledged prefix, so the rejects file never runs ahead
    /// of the checkpoint.
    pub rejects: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckResult {
    Delivered,
    /// A marker, passed straight through.
    Marker,
    /// The run stopped before this request was sent.
    Skipped,
    /// Retrying could not deliver it; the run stops.
    Failed(String),
}

/// What happened to one [`Work`].
#[derive(Debug, Clone)]
pub struct Ack {
    pub work: Work,
    pub result: AckResult,
    pub retries: u32,
    pub throttled: u32,
    /// Calls the server accepted (all of them unless strict mode refused some).
    pub delivered_calls: u32,
    /// Reject lines for calls the server refused as invalid (strict mode), NDJSON.
    pub server_rejects: Vec<u8>,
}

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
    pub strict: bool,
}

/// The shared gate every request passes: the rate limiter and the 429 pause.
pub struct Gate {
    limiter: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    pause_until: Mutex<Option<Instant>>,
}

impl Gate {
    /// `rate`: requests per second, or `None` for no limit. Burst 1: requests are spaced
    /// evenly, so no one-second window sees more than `rate` of them.
    pub fn new(rate: Option<u32>) -> Self {
        let limiter = rate
            .and_then(NonZeroU32::new)
            .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(NonZeroU32::MIN)));
        Gate {
            limiter,
            clock: DefaultClock::default(),
            pause_until: Mutex::new(None),
        }
    }

    /// Blocks until a request may go. Sleeps; never spins.
    pub fn wait(&self, stop: &AtomicBool) {
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let until = *self.pause_until.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = until {
                let now = Instant::now();
                if t > now {
                    std::thread::sleep((t - now).min(Duration::from_millis(200)));
                    continue;
                }
            }
            let Some(l) = &self.limiter else { return };
            match l.check() {
                Ok(()) => return,
                Err(not_until) => {
                    std::thread::sleep(not_until.wait_time_from(self.clock.now()));
                }
            }
        }
    }

    /// Pauses every worker for `d` (after a 429).
    pub fn pause(&self, d: Duration) {
        let mut p = self.pause_until.lock().unwrap_or_else(|p| p.into_inner());
        let t = Instant::now() + d;
        if p.is_none_or(|old| old < t) {
            *p = Some(t);
        }
    }
}

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

/// One sender worker: runs until `rx` closes. After `stop` is set it sends nothing more
/// and acknowledges the rest as skipped.
pub fn worker(
    rx: Receiver<Work>,
    acks: Sender<Ack>,
    transport: &dyn Transport,
    gate: &Gate,
    policy: RetryPolicy,
    stop: &AtomicBool,
) {
    let mut jitter = Jitter::new();
    for work in rx {
        let ack = deliver(work, transport, gate, policy, stop, &mut jitter);
        if matches!(ack.result, AckResult::Failed(_)) {
            stop.store(true, Ordering::SeqCst);
        }
        if acks.send(ack).is_err() {
            return;
        }
    }
}

fn deliver(
    work: Work,
    transport: &dyn Transport,
    gate: &Gate,
    policy: RetryPolicy,
    stop: &AtomicBool,
    jitter: &mut Jitter,
) -> Ack {
    let mut ack = Ack {
        work,
        result: AckResult::Skipped,
        retries: 0,
        throttled: 0,
        delivered_calls: 0,
        server_rejects: Vec::new(),
    };
    let Some(body) = ack.work.body.clone() else {
        ack.result = AckResult::Marker;
        return ack;
    };
    let mut attempt = 0u32;
    loop {
        gate.wait(stop);
        if stop.load(Ordering::Relaxed) {
            return ack;
        }
        let outcome = transport.post(ack.work.path, &body);
        match classify(&outcome, policy.strict) {
            Decision::Success => {
                ack.result = AckResult::Delivered;
                ack.delivered_calls = ack.work.calls;
                return ack;
            }
            Decision::Retry {
                after,
                throttled,
                why,
            } => {
                if throttled {
                    ack.throttled += 1;
                    gate.pause(after.unwrap_or(Duration::from_secs(1)));
                }
                if attempt >= policy.max_retries {
                    ack.result = AckResult::Failed(format!(
                        "request {} still failing after {} attempts; last answer: {why}",
                        ack.work.seq,
                        attempt + 1
                    ));
                    return ack;
                }
                let wait = backoff(attempt, policy.base, policy.cap, after, jitter.unit());
                attempt += 1;
                ack.retries += 1;
                sleep_unless_stopped(wait, stop);
            }
            Decision::Invalid { why } => {
                ack.result = AckResult::Failed(format!(
                    "the API refused request {} as invalid (strict mode): {why}",
                    ack.work.seq
                ));
                return ack;
            }
            Decision::Fatal { why } => {
                ack.result = AckResult::Failed(why);
                return ack;
            }
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}
