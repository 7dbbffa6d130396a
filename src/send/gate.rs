//! The gate every attempt passes before it goes on the wire: the request-rate limiter, the
//! optional call-rate limiter, and the run-wide pause that a 429 starts.
//!
//! The request rate is enforced twice, for two different jobs:
//! - a ceiling: a log of the last `rate` departures; a request may leave only if fewer
//!   than `rate` left in the last `1 + RATE_SAFETY_MARGIN` seconds. So no one-second window
//!   holds more than `rate` departures, and the server still sees at most `rate` in any
//!   second when network jitter brings requests closer by up to `RATE_SAFETY_MARGIN`
//!   seconds (20 ms). The log is work-conserving: a late wake-up does not cost capacity,
//!   so a run reaches about `rate / (1 + RATE_SAFETY_MARGIN)` (98%).
//! - smoothing: a GCRA pacer at `PACE_FACTOR × rate` with a burst of 1, so requests are
//!   spread over the second instead of leaving `rate` at once. There is no burst: at the
//!   start as later, requests leave at most `PACE_FACTOR × rate` per second until the
//!   ceiling holds them.
//!
//! The pacer follows the adaptive rate ([`Rate`]): after a 429 it paces at the rate the
//! server showed it takes, and probes back up towards `--rate`, which the ceiling keeps
//! exact whatever the pacer does.
//!
//! While a pause is on nothing leaves; a permit granted just before a pause started is not
//! used, so the end of a pause is not a burst. The time paused is summed for the summary.
//! Every wait sleeps (never spins) and notices `stop` within 100 ms.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::adapt::{Rate, Signal};

/// The ceiling counts `rate` departures per `1 + RATE_SAFETY_MARGIN` seconds: a run
/// reaches 98% of `--rate` and tolerates 20 ms of arrival jitter.
pub const RATE_SAFETY_MARGIN: f64 = 0.02;

/// The pacer runs this much faster than the ceiling, so its own late wake-ups do not
/// hold the run below the ceiling.
const PACE_FACTOR: f64 = 1.1;

/// The longest single sleep, so a stop is noticed promptly.
const SLICE: Duration = Duration::from_millis(100);

/// The shared gate.
pub struct Gate {
    requests: Option<(Mutex<Pacer>, Mutex<Ceiling>)>,
    /// The call-rate limiter and its burst (the most cells one `check_n` may take).
    calls: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    clock: DefaultClock,
    pause: Mutex<Pause>,
}

/// The pacer and the adaptive rate it follows.
struct Pacer {
    limiter: DefaultDirectRateLimiter,
    rate: Rate,
}

impl Pacer {
    /// A pacer at `rate` a second: a little faster than the ceiling while the rate is the
    /// ceiling (which then binds, exactly), and at the rate itself below it.
    fn limiter(rate: f64, ceiling: f64) -> Option<DefaultDirectRateLimiter> {
        let pace = if rate >= ceiling {
            rate * PACE_FACTOR
        } else {
            rate
        };
        Some(RateLimiter::direct(spaced(pace)?))
    }
}

/// The run-wide 429 pause, and the time paused so far.
#[derive(Default)]
struct Pause {
    until: Option<Instant>,
    total: Duration,
}

/// The GCRA quota for `per_sec` cells a second.
fn spaced(per_sec: f64) -> Option<Quota> {
    if per_sec <= 0.0 {
        return None;
    }
    Quota::with_period(Duration::from_secs_f64(1.0 / per_sec))
}

/// At most `max` departures in any `window`: the times of the last `max` of them.
struct Ceiling {
    max: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl Ceiling {
    fn new(max: u32) -> Self {
        Ceiling {
            max: max as usize,
            window: Duration::from_secs_f64(1.0 + RATE_SAFETY_MARGIN),
            // Grows to `max` only if the run gets there.
            times: VecDeque::with_capacity((max as usize).min(4096)),
        }
    }

    /// Records a departure at `now` if one may leave, else says how long to wait.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(&t) = self.times.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
        if self.times.len() < self.max {
            self.times.push_back(now);
            return Ok(());
        }
        let oldest = self.times.front().copied().unwrap_or(now);
        Err((oldest + self.window).saturating_duration_since(now))
    }
}

impl Gate {
    /// `rate`: requests per second (`None`: no limit). `calls_rate`: calls per second,
    /// charged per request by its number of calls (`None`: no limit). Its burst is a
    /// tenth of a second's worth; a request with more calls than that is charged in
    /// pieces, so it waits as long as its calls need, never fails.
    pub fn new(rate: Option<u32>, calls_rate: Option<u32>) -> Self {
        let requests = rate.filter(|&r| r > 0).and_then(|r| {
            let pacer = Pacer {
                limiter: Pacer::limiter(r as f64, r as f64)?,
                rate: Rate::new(r as f64, Instant::now()),
            };
            Some((Mutex::new(pacer), Mutex::new(Ceiling::new(r))))
        });
        let calls = calls_rate.and_then(|r| {
            let burst = NonZeroU32::new((r / 10).max(1))?;
            let quota = spaced(r as f64 / (1.0 + RATE_SAFETY_MARGIN))?;
            Some((RateLimiter::direct(quota.allow_burst(burst)), burst))
        });
        Gate {
            requests,
            calls,
            clock: DefaultClock::default(),
            pause: Mutex::new(Pause::default()),
        }
    }

    /// How long the 429 pause still has to run, if one is on.
    fn paused_for(&self) -> Option<Duration> {
        let until = self.pause.lock().unwrap_or_else(|p| p.into_inner()).until;
        until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// The sending rate now, requests a second (`None`: no limit).
    pub fn rate(&self) -> Option<f64> {
        let (pacer, _) = self.requests.as_ref()?;
        Some(
            pacer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rate
                .current(),
        )
    }

    /// How long 429s have paused the run so far.
    pub fn paused_total(&self) -> Duration {
        let p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        // A pause still running counts up to now.
        let running = p
            .until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .unwrap_or_default();
        p.total.saturating_sub(running)
    }

    /// What an attempt's answer says about the server's pace. `hold`: how long answers
    /// to requests already sent may still come (a round trip, plus a pause that starts
    /// now). Returns the new rate when it changed.
    pub fn answered(&self, now: Instant, signal: Signal, hold: Duration) -> Option<f64> {
        let (pacer, ceiling) = self.requests.as_ref()?;
        let mut p = pacer.lock().unwrap_or_else(|p| p.into_inner());
        let changed = p.rate.on_answer(now, signal, hold)?;
        let ceiling = ceiling.lock().unwrap_or_else(|p| p.into_inner()).max as f64;
        if let Some(l) = Pacer::limiter(changed, ceiling) {
            p.limiter = l;
        }
        Some(changed)
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
            let Some((pacer, ceiling)) = &self.requests else {
                return true;
            };
            let paced = pacer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .limiter
                .check();
            if let Err(not_until) = paced {
                std::thread::sleep(not_until.wait_time_from(self.clock.now()).min(SLICE));
                continue;
            }
            // A pause that began while this worker waited wins: the pacer's permit is
            // dropped and taken again after the pause.
            if self.paused_for().is_some() {
                continue;
            }
            let taken = ceiling
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(Instant::now());
            match taken {
                Ok(()) => return true,
                Err(wait) => std::thread::sleep(wait.min(SLICE)),
            }
        }
    }

    /// Pauses every worker for `d` (after a 429). An earlier, longer pause stays.
    pub fn pause(&self, d: Duration) {
        let mut p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let t = now + d;
        if p.until.is_none_or(|old| old < t) {
            // Only the time this pause adds to one still running counts.
            let from = p.until.filter(|&old| old > now).unwrap_or(now);
            p.total += t - from;
            p.until = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_paced_a_little_faster_than_the_rate() {
        let gate = Gate::new(Some(200), None);
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        for _ in 0..21 {
            assert!(gate.wait(&stop, 1));
        }
        // 20 intervals of 1 / 220 s = 91 ms; the ceiling (200 a second) does not bind.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(90), "{took:?}");
        assert!(took < Duration::from_millis(400), "{took:?}");
    }

    #[test]
    fn the_ceiling_admits_max_per_window_and_frees_as_they_age() {
        let mut c = Ceiling::new(3);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(c.take(t0), Ok(()));
        assert_eq!(c.take(t0 + ms(100)), Ok(()));
        assert_eq!(c.take(t0 + ms(200)), Ok(()));
        assert_eq!(c.take(t0 + ms(500)), Err(ms(520)));
        assert_eq!(c.take(t0 + ms(1019)), Err(ms(1)));
        assert_eq!(c.take(t0 + ms(1020)), Ok(()));
        assert_eq!(c.take(t0 + ms(1030)), Err(ms(90)));
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

        assert!(gate.paused_total() >= Duration::from_millis(145));
        assert!(gate.paused_total() <= Duration::from_millis(160));

        gate.pause(Duration::from_secs(60));
        stop.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        assert!(!gate.wait(&stop, 1));
        assert!(t0.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn the_pacer_follows_the_adaptive_rate_and_never_passes_the_ceiling() {
        let gate = Gate::new(Some(100), None);
        assert_eq!(gate.rate(), Some(100.0));
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        // 20 answers in 200 ms, then a 429: the server took 100 a second; cut to 90.
        for i in 0..20 {
            gate.answered(
                t0 + Duration::from_millis(10 * i),
                Signal::Answered {
                    rtt: Duration::from_millis(1),
                },
                Duration::from_millis(1),
            );
        }
        let cut = gate.answered(
            t0 + Duration::from_millis(200),
            Signal::Throttled,
            Duration::from_secs(1),
        );
        // (The gate's controller started a moment before t0: 100 a second, give or take.)
        let cut = cut.expect("a 429 cuts the rate");
        assert!((89.0..=90.0).contains(&cut), "{cut}");
        assert_eq!(gate.rate(), Some(cut));
        // Paced at 90 a second now: 10 more take about 100 ms (9 intervals of 11.1 ms).
        let start = Instant::now();
        for _ in 0..10 {
            assert!(gate.wait(&stop, 1));
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
    }
}
