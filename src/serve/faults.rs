//! Fault injection and the one-second request windows.
//!
//! Every decision here is a pure function of a seed and a number (the request's arrival
//! index, or a hash of a call's messageId), so a run with the same seed and the same
//! request order sees the same faults, and a call that is retried or bisected keeps its
//! verdict. There is deliberately no `rand` dependency: splitmix64 is enough to spread
//! the bits and is trivially reproducible.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Faults;

/// What the fault plan does with one request, decided when its head arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// Close the connection without answering.
    Drop,
    /// 429 because of `throttle_rate`.
    Throttle {
        retry_after_secs: u64,
    },
    /// 429 because more than `max_rps` requests were admitted in the last second.
    RpsLimited {
        retry_after_secs: u64,
    },
    /// A 500, 502 or 503.
    Fail {
        status: u16,
    },
}

/// Distinct salts so the drop, throttle and fail draws for one request are independent.
const SALT_DROP: u64 = 0x6472_6f70;
const SALT_THROTTLE: u64 = 0x7468_726f;
const SALT_FAIL: u64 = 0x6661_696c;
const SALT_FAIL_STATUS: u64 = 0x7374_6174;
const SALT_JITTER: u64 = 0x6a69_7474;

/// The standard splitmix64 finaliser: a bijection with good avalanche.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from 53 bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// One draw for (seed, index, salt). `rate >= 1` always hits, `rate <= 0` (or NaN) never.
fn hits(seed: u64, index: u64, salt: u64, rate: f64) -> bool {
    rate > 0.0 && unit(splitmix64(seed ^ splitmix64(index ^ splitmix64(salt)))) < rate
}

impl Faults {
    /// Seconds a throttled request is told to wait; the CLI's 0 means "the minimum".
    fn throttle_retry_after(&self) -> u64 {
        self.retry_after_secs.max(1)
    }

    /// The verdict for the request with arrival index `index` (0-based, counting every
    /// POST), given the admission window for `max_rps`. `now` is its arrival time.
    pub(crate) fn decide(&self, index: u64, admitted: &mut Window, now: Instant) -> Verdict {
        if hits(self.seed, index, SALT_DROP, self.drop_rate) {
            return Verdict::Drop;
        }
        if hits(self.seed, index, SALT_THROTTLE, self.throttle_rate) {
            return Verdict::Throttle {
                retry_after_secs: self.throttle_retry_after(),
            };
        }
        if let Some(max) = self.max_rps {
            // Only admitted requests fill the window: counting the rejected ones too
            // would lock out a client that keeps knocking, which is not what a rate
            // limit that "frees" after a second means.
            admitted.evict(now);
            if admitted.len() >= max as usize {
                return Verdict::RpsLimited {
                    retry_after_secs: admitted.secs_until_slot_frees(now),
                };
            }
            admitted.push(now);
        }
        if hits(self.seed, index, SALT_FAIL, self.fail_rate) {
            let pick = splitmix64(self.seed ^ splitmix64(index ^ SALT_FAIL_STATUS)) % 3;
            let status = [500, 502, 503][pick as usize];
            return Verdict::Fail { status };
        }
        Verdict::Pass
    }

    /// How long the request with arrival index `index` waits before it is answered:
    /// `latency_ms`, moved by a uniform draw in `[-latency_jitter_ms, +latency_jitter_ms]`
    /// (never below zero). A function of the seed and the index, like every fault, so a
    /// rerun with the same seed and the same order sees the same delays. Uniform rather
    /// than normal: its bounds are hard, so tests and benchmarks can reason about them.
    pub(crate) fn latency(&self, index: u64) -> Duration {
        let base = self.latency_ms as f64;
        let jitter = self.latency_jitter_ms as f64;
        let ms = if jitter > 0.0 {
            let u = unit(splitmix64(self.seed ^ splitmix64(index ^ SALT_JITTER)));
            (base + jitter * (2.0 * u - 1.0)).max(0.0)
        } else {
            base
        };
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// Whether `invalid_rate` marks a call invalid. `key` is the messageId (or, for a
    /// call without one, its raw bytes): a pure function of it, so a retried or
    /// bisected call gets the same verdict wherever it travels.
    pub(crate) fn injects_invalid(&self, key: &[u8]) -> bool {
        self.invalid_rate > 0.0
            && unit(xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)) < self.invalid_rate
    }
}

/// Arrival times within the last second: a sliding window, not a fixed one, so the
/// count is the true maximum over any one-second interval (the maximum is always
/// reached by a window that ends at an arrival).
#[derive(Debug, Default)]
pub(crate) struct Window {
    times: VecDeque<Instant>,
}

const ONE_SECOND: Duration = Duration::from_secs(1);

impl Window {
    /// Forgets arrivals more than a second before `now`.
    pub(crate) fn evict(&mut self, now: Instant) {
        while let Some(&t) = self.times.front() {
            if now.saturating_duration_since(t) >= ONE_SECOND {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records an arrival and returns how many arrived within the second up to it.
    pub(crate) fn push(&mut self, now: Instant) -> usize {
        self.evict(now);
        self.times.push_back(now);
        self.times.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// Whole seconds (at least 1, as Retry-After has no fractions) until the oldest
    /// arrival leaves the window.
    fn secs_until_slot_frees(&self, now: Instant) -> u64 {
        let wait = self
            .times
            .front()
            .map(|&t| (t + ONE_SECOND).saturating_duration_since(now))
            .unwrap_or(Duration::ZERO);
        (wait.as_millis() as u64).div_ceil(1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_zero_and_one_never_and_always_hit() {
        for i in 0..1000 {
            assert!(!hits(7, i, SALT_DROP, 0.0));
            assert!(hits(7, i, SALT_DROP, 1.0));
            assert!(!hits(7, i, SALT_DROP, f64::NAN));
        }
    }

    #[test]
    fn a_rate_hits_about_that_fraction_and_is_reproducible() {
        let n = 20_000;
        let count = (0..n).filter(|&i| hits(42, i, SALT_FAIL, 0.25)).count();
        assert!((4_500..5_500).contains(&count), "{count}");
        let again = (0..n).filter(|&i| hits(42, i, SALT_FAIL, 0.25)).count();
        assert_eq!(count, again);
    }

    #[test]
    fn fail_verdicts_use_only_5xx_gateway_statuses() {
        let f = Faults {
            fail_rate: 1.0,
            ..Faults::default()
        };
        let mut w = Window::default();
        let now = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            match f.decide(i, &mut w, now) {
                Verdict::Fail { status } => {
                    seen.insert(status);
                }
                v => panic!("unexpected {v:?}"),
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![500, 502, 503]);
    }

    #[test]
    fn throttle_retry_after_zero_means_one() {
        let f = Faults {
            throttle_rate: 1.0,
            ..Faults::default()
        };
        let v = f.decide(0, &mut Window::default(), Instant::now());
        assert_eq!(
            v,
            Verdict::Throttle {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn max_rps_admits_that_many_per_second_then_frees() {
        let f = Faults {
            max_rps: Some(3),
            ..Faults::default()
        };
        let mut w = Window::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(f.decide(i, &mut w, t0), Verdict::Pass);
        }
        assert_eq!(
            f.decide(3, &mut w, t0 + Duration::from_millis(10)),
            Verdict::RpsLimited {
                retry_after_secs: 1
            }
        );
        assert_eq!(f.decide(4, &mut w, t0 + ONE_SECOND), Verdict::Pass);
    }

    #[test]
    fn invalid_verdict_depends_only_on_the_key() {
        let f = Faults {
            invalid_rate: 0.5,
            seed: 9,
            ..Faults::default()
        };
        let hits: Vec<bool> = (0..100)
            .map(|i| f.injects_invalid(format!("m{i}").as_bytes()))
            .collect();
        let again: Vec<bool> = (0..100)
            .map(|i| f.injects_invalid(format!("m{i}").as_bytes()))
            .collect();
        assert_eq!(hits, again);
        let n = hits.iter().filter(|&&h| h).count();
        assert!((25..75).contains(&n), "{n}");
    }

    #[test]
    fn latency_jitter_stays_in_its_bounds_spreads_and_is_reproducible() {
        let f = Faults {
            latency_ms: 100,
            latency_jitter_ms: 40,
            seed: 5,
            ..Faults::default()
        };
        let draws: Vec<Duration> = (0..10_000).map(|i| f.latency(i)).collect();
        let (lo, hi) = (Duration::from_millis(60), Duration::from_millis(140));
        assert!(draws.iter().all(|d| (lo..=hi).contains(d)));
        // Each quarter of the range gets about a quarter of the draws.
        for q in 0..4u64 {
            let from = Duration::from_millis(60 + 20 * q);
            let to = from + Duration::from_millis(20);
            let n = draws.iter().filter(|d| (from..to).contains(*d)).count();
            assert!((2_200..2_800).contains(&n), "quarter {q}: {n}");
        }
        assert_eq!(draws, (0..10_000).map(|i| f.latency(i)).collect::<Vec<_>>());
        // Jitter larger than the latency is cut at zero, never negative.
        let wide = Faults {
            latency_ms: 10,
            latency_jitter_ms: 50,
            ..Faults::default()
        };
        assert!((0..1000).any(|i| wide.latency(i) == Duration::ZERO));
        // No jitter: exactly the latency.
        let plain = Faults {
            latency_ms: 7,
            ..Faults::default()
        };
        assert_eq!(plain.latency(3), Duration::from_millis(7));
    }

    #[test]
    fn window_counts_arrivals_in_the_last_second() {
        let mut w = Window::default();
        let t0 = Instant::now();
        assert_eq!(w.push(t0), 1);
        assert_eq!(w.push(t0 + Duration::from_millis(500)), 2);
        assert_eq!(w.push(t0 + Duration::from_millis(999)), 3);
        assert_eq!(w.push(t0 + Duration::from_millis(1000)), 3);
        assert_eq!(w.push(t0 + Duration::from_millis(2500)), 1);
    }
}
