//! The gate every attempt passes before it goes on the wire: the request-rate limiter, the
//! optional call-rate limiter, and the run-wide pause that a 429 starts.
//!
//! Invariants:
//! - Requests leave at least `(1 + RATE_SAFETY_MARGIN) / rate` seconds apart (GCRA with a
//!   burst of 1: no burst at all, not even at the start), so no one-second window holds
//!   more than `rate` departures, and `rate + 1` departures span at least
//!   `1 + RATE_SAFETY_MARGIN` seconds: the server still sees at most `rate` in any second
//!   when network jitter brings two requests closer by up to `RATE_SAFETY_MARGIN` seconds
//!   (20 ms at the default margin) over that stretch.
//! - While a pause is on, nothing leaves; a permit granted just before a pause started is
//!   given back (not held), so the end of a pause is not a burst.
//! - Every wait sleeps (never spins) and notices `stop` within 100 ms.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How much slower than the nominal rate requests are spaced: 2%, so a run reaches 98%
/// of `--rate` while tolerating 20 ms of arrival jitter per second of requests.
pub const RATE_SAFETY_MARGIN: f64 = 0.02;

/// The longest single sleep, so a stop is noticed promptly.
const SLICE: Duration = Duration::from_millis(100);

/// The shared gate.
pub struct Gate {
    requests: Option<DefaultDirectRateLimiter>,
    /// The call-rate limiter and its burst (the most cells one `check_n` may take).
    calls: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    clock: DefaultClock,
    pause_until: Mutex<Option<Instant>>,
}

/// The GCRA quota for `per_sec` cells a second, spaced by the safety margin.
fn spaced(per_sec: u32) -> Option<Quota> {
    if per_sec == 0 {
        return None;
    }
    Quota::with_period(Duration::from_secs_f64(
        (1.0 + RATE_SAFETY_MARGIN) / per_sec as f64,
    ))
}

impl Gate {
    /// `rate`: requests per second (`None`: no limit). `calls_rate`: calls per second,
    /// charged per request by its number of calls (`None`: no limit). Its burst is a
    /// tenth of a second's worth; a request with more calls than that is charged in
    /// pieces, so it waits as long as its calls need, never fails.
    pub fn new(rate: Option<u32>, calls_rate: Option<u32>) -> Self {
        let requests = rate.and_then(spaced).map(RateLimiter::direct);
        let calls = calls_rate.and_then(|r| {
            let burst = NonZeroU32::new((r / 10).max(1))?;
            Some((RateLimiter::direct(spaced(r)?.allow_burst(burst)), burst))
        });
        Gate {
            requests,
            calls,
            clock: DefaultClock::default(),
            pause_until: Mutex::new(None),
        }
    }

    /// How long the 429 pause still has to run, if one is on.
    fn paused_for(&self) -> Option<Duration> {
        let until = *self.pause_until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Blocks until a request of `calls` calls may go. Returns false when `stop` was set
    /// meanwhile (the request must then not be sent).
    pub fn wait(&self, stop: &AtomicBool, calls: u32) -> bool {
        if let Some((limiter, burst)) = &self.calls {
            let mut left = calls;
            while left > 0 {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let n = NonZeroU32::new(left.min(burst.get())).unwrap_or(NonZeroU32::MIN);
                match limiter.check_n(n) {
                    Ok(Ok(())) => left -= n.get(),
                    Ok(Err(not_until)) => {
                        std::thread::sleep(not_until.wait_time_from(self.clock.now()).min(SLICE))
                    }
                    // Cannot happen: `n` never exceeds the burst. Charging nothing
                    // would break the limit, so charge the burst instead.
                    Err(_) => left = left.saturating_sub(burst.get()),
                }
            }
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            if let Some(d) = self.paused_for() {
                std::thread::sleep(d.min(SLICE));
                continue;
            }
            let Some(limiter) = &self.requests else {
                return true;
            };
            match limiter.check() {
                // A pause that began while this worker waited wins: the permit is
                // dropped and taken again after the pause.
                Ok(()) if self.paused_for().is_none() => return true,
                Ok(()) => {}
                Err(not_until) => {
                    std::thread::sleep(not_until.wait_time_from(self.clock.now()).min(SLICE))
                }
            }
        }
    }

    /// Pauses every worker for `d` (after a 429). An earlier, longer pause stays.
    pub fn pause(&self, d: Duration) {
        let mut p = self.pause_until.lock().unwrap_or_else(|p| p.into_inner());
        let t = Instant::now() + d;
        if p.is_none_or(|old| old < t) {
            *p = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_by_the_rate_and_the_margin() {
        let gate = Gate::new(Some(200), None);
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        for _ in 0..21 {
            assert!(gate.wait(&stop, 1));
        }
        // 20 intervals of 1.02 / 200 s = 102 ms.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(101), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");
    }

    #[test]
    fn calls_rate_charges_each_call_even_past_the_burst() {
        // 1000 calls/s, burst 100: 300 calls need at least ~0.2 s after the burst.
        let gate = Gate::new(None, Some(1000));
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(gate.wait(&stop, 300));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(195), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn a_pause_holds_everyone_and_a_stop_ends_the_wait() {
        let gate = Gate::new(None, None);
        let stop = AtomicBool::new(false);
        gate.pause(Duration::from_millis(150));
        gate.pause(Duration::from_millis(10)); // shorter: the longer one stays
        let t0 = Instant::now();
        assert!(gate.wait(&stop, 1));
        assert!(t0.elapsed() >= Duration::from_millis(145));

        gate.pause(Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        assert!(!gate.wait(&stop, 1));
        assert!(t0.elapsed() < Duration::from_millis(50));
    }
}
