//! Permits for requests on the wire: how many senders may be inside a request at once.
//!
//! A sender takes a permit before it takes a request from the queue, and gives it back
//! when the request is acknowledged, so a request body exists only while its sender may
//! send it: memory is bounded by the limit, not by the number of sender threads. The limit
//! is pinned (`--concurrency N`) or follows [`Concurrency`] (`--concurrency auto`), which
//! every attempt's answer feeds.
//!
//! Waits sleep on a condition variable (never spin) and notice `stop` within 100 ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::adapt::{Bounds, Concurrency, Signal};

/// The longest single wait, so a stop is noticed promptly.
const SLICE: Duration = Duration::from_millis(100);

/// How the number of requests on the wire is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Always this many (`--concurrency N`).
    Fixed(usize),
    /// Adaptive within these bounds (`--concurrency auto`).
    Auto(Bounds),
}

impl Limit {
    /// The most requests that can ever be on the wire at once: the sender threads to
    /// start, and what the queues and the checkpoint window are sized for.
    pub fn max(&self) -> usize {
        match *self {
            Limit::Fixed(n) => n.max(1),
            Limit::Auto(b) => b.max.max(1),
        }
    }
}

/// What the progress line shows of the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowNow {
    /// Requests allowed on the wire now.
    pub limit: usize,
    /// Permits held: requests being sent, waiting at the gate or backing off.
    pub in_flight: usize,
    /// The recent round trip, once one was measured.
    pub rtt: Option<Duration>,
}

struct State {
    in_flight: usize,
    /// The highest limit so far.
    peak: usize,
    /// Attempts on the wire now (between [`Flow::sent`] and [`Flow::back`]): permits
    /// count senders waiting for work or at the gate too.
    on_wire: usize,
    /// The most attempts on the wire at once.
    busiest: usize,
    adaptive: Option<Concurrency>,
    fixed: usize,
}

impl State {
    fn limit(&self) -> usize {
        self.adaptive
            .as_ref()
            .map_or(self.fixed, Concurrency::limit)
    }
}

/// The shared permits. See the module doc.
pub struct Flow {
    state: Mutex<State>,
    freed: Condvar,
}

/// A held permit; given back by [`Flow::release`].
#[derive(Debug)]
#[must_use = "a permit must be given back with Flow::release"]
pub struct Permit(());

impl Flow {
    pub fn new(limit: Limit) -> Self {
        let (adaptive, fixed) = match limit {
            Limit::Fixed(n) => (None, n.max(1)),
            Limit::Auto(b) => (Some(Concurrency::new(b)), b.max.max(1)),
        };
        Flow {
            state: Mutex::new(State {
                in_flight: 0,
                peak: 0,
                on_wire: 0,
                busiest: 0,
                adaptive,
                fixed,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a permit; `None` once `stop` is set.
    pub fn acquire(&self, stop: &AtomicBool) -> Option<Permit> {
        let mut s = self.lock();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if s.in_flight < s.limit() {
                s.in_flight += 1;
                return Some(Permit(()));
            }
            s = self
                .freed
                .wait_timeout(s, SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Gives a permit back.
    pub fn release(&self, permit: Permit) {
        let Permit(()) = permit;
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        drop(s);
        self.freed.notify_one();
    }

    /// An attempt goes on the wire now (its sender holds a permit).
    pub fn sent(&self, now: Instant) {
        let mut s = self.lock();
        let n = s.in_flight;
        s.on_wire += 1;
        s.busiest = s.busiest.max(s.on_wire);
        if let Some(c) = s.adaptive.as_mut() {
            c.sent(now, n);
        }
    }

    /// An attempt is off the wire: answered, failed or timed out.
    pub fn back(&self) {
        let mut s = self.lock();
        s.on_wire = s.on_wire.saturating_sub(1);
    }

    /// What an attempt's answer says; `rate`: the gate's sending rate now, requests a
    /// second. A limit that grew wakes the senders waiting for a permit.
    pub fn answered(&self, now: Instant, signal: Signal, rate: f64) {
        let mut s = self.lock();
        let before = s.limit();
        if let Some(c) = s.adaptive.as_mut() {
            c.on_answer(now, signal, rate);
        }
        let now_limit = s.limit();
        s.peak = s.peak.max(before).max(now_limit);
        let grew = now_limit > before;
        drop(s);
        if grew {
            self.freed.notify_all();
        }
    }

    /// The highest limit so far (the limit itself before any answer).
    pub fn peak(&self) -> usize {
        let s = self.lock();
        s.peak.max(s.limit())
    }

    /// The most attempts on the wire at once: at most [`Self::peak`], and what the
    /// limit was actually used for.
    pub fn busiest(&self) -> usize {
        self.lock().busiest
    }

    /// The most requests ever allowed on the wire at once.
    pub fn bound(&self) -> usize {
        let s = self.lock();
        s.adaptive.as_ref().map_or(s.fixed, Concurrency::max)
    }

    /// The recent round trip, if measured (adaptive only).
    pub fn rtt(&self) -> Option<Duration> {
        self.lock().adaptive.as_ref().and_then(Concurrency::rtt)
    }

    pub fn now(&self) -> FlowNow {
        let s = self.lock();
        FlowNow {
            limit: s.limit(),
            in_flight: s.in_flight,
            rtt: s.adaptive.as_ref().and_then(Concurrency::rtt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn permits_are_bounded_by_the_limit_and_a_stop_ends_the_wait() {
        let flow = Arc::new(Flow::new(Limit::Fixed(2)));
        let stop = Arc::new(AtomicBool::new(false));
        let a = flow.acquire(&stop).unwrap();
        let _b = flow.acquire(&stop).unwrap();
        assert_eq!(flow.now().in_flight, 2);
        // A third waits until one is given back.
        let t = std::thread::spawn({
            let (flow, stop) = (flow.clone(), stop.clone());
            move || flow.acquire(&stop).is_some()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished());
        flow.release(a);
        assert!(t.join().unwrap());
        // Full again: a stop ends the wait with no permit.
        let t = std::thread::spawn({
            let (flow, stop) = (flow.clone(), stop.clone());
            move || flow.acquire(&stop).is_none()
        });
        stop.store(true, Ordering::SeqCst);
        assert!(t.join().unwrap());
    }

    #[test]
    fn an_adaptive_limit_that_grows_lets_waiting_senders_in() {
        let flow = Flow::new(Limit::Auto(Bounds {
            min: 1,
            max: 8,
            initial: 1,
        }));
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        let p = flow.acquire(&stop).unwrap();
        flow.sent(t0);
        assert_eq!(flow.now().limit, 1);
        // Every permit in use when the answer came, and the rate wants more.
        flow.answered(
            t0 + Duration::from_millis(100),
            Signal::Answered {
                rtt: Duration::from_millis(100),
            },
            100.0,
        );
        assert_eq!(flow.now().limit, 2);
        let q = flow.acquire(&stop).unwrap();
        assert_eq!(flow.now().in_flight, 2);
        flow.release(p);
        flow.release(q);
        assert_eq!(flow.now().in_flight, 0);
        assert_eq!(flow.rtt(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn the_busiest_count_is_attempts_on_the_wire_and_the_peak_keeps_the_first_limit() {
        let flow = Flow::new(Limit::Auto(Bounds {
            min: 1,
            max: 64,
            initial: 8,
        }));
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        // Three senders hold permits; one request goes out at a time.
        let permits: Vec<_> = (0..3).map(|_| flow.acquire(&stop).unwrap()).collect();
        flow.sent(t0);
        flow.back();
        flow.sent(t0);
        assert_eq!(flow.busiest(), 1, "idle permits are not requests in flight");
        flow.sent(t0);
        assert_eq!(flow.busiest(), 2);
        flow.back();
        flow.back();
        // A 429 cuts the first limit: the peak is still the 8 that was allowed.
        flow.answered(t0 + Duration::from_millis(50), Signal::Throttled, 100.0);
        assert!(flow.now().limit < 8, "{:?}", flow.now());
        assert_eq!(flow.peak(), 8);
        for p in permits {
            flow.release(p);
        }
    }
}
