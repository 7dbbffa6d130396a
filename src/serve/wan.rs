//! The simulated uplink: a bandwidth cap on the request bytes the receiver reads, shared
//! by every connection and stream, as a token bucket.
//!
//! It exists so tests and benchmarks can play a WAN whose client uplink, not the CPU, is
//! the limit, and show what `--gzip` and HTTP/2 buy there. The cap applies to bytes as
//! they arrive on the wire (compressed, for a gzip body), because that is what a link
//! carries. Reading is what gets slowed: while the receiver waits, it does not poll the
//! body, so HTTP/1.1 stops reading the socket and HTTP/2 stops returning flow-control
//! credit, and the client's sends back up as they would behind a slow link.
//!
//! The bucket runs on debt: a reader takes the tokens its frame needs at once, and if
//! that leaves the bucket negative, waits until the debt would be paid. Readers that
//! arrive meanwhile see a deeper debt and wait longer, so the link is shared in arrival
//! order and the rate over any stretch longer than the burst is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

/// Bytes per second for one Mbit/s (decimal, as link speeds are quoted).
const BYTES_PER_MBIT: f64 = 125_000.0;
/// How much the bucket may hold when idle: 10 ms at the line rate, and at least one
/// Ethernet frame, so a burst after a pause is what a real link would pass.
const BURST_SECONDS: f64 = 0.01;
const MIN_BURST_BYTES: f64 = 1_500.0;

/// A shared cap on the rate request bytes are read.
#[derive(Debug)]
pub(crate) struct Bandwidth {
    bytes_per_sec: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Negative while readers wait for bytes already granted.
    tokens: f64,
    at: Instant,
}

impl Bandwidth {
    /// A cap of `mbps` megabits per second; `None` when there is no cap (0, negative,
    /// or not a number).
    pub(crate) fn new(mbps: f64, now: Instant) -> Option<Bandwidth> {
        if !(mbps > 0.0 && mbps.is_finite()) {
            return None;
        }
        let bytes_per_sec = mbps * BYTES_PER_MBIT;
        let burst = (bytes_per_sec * BURST_SECONDS).max(MIN_BURST_BYTES);
        Some(Bandwidth {
            bytes_per_sec,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: now,
            }),
        })
    }

    /// Takes `bytes` from the bucket at `now`, and returns how long the reader must wait
    /// before it may go on (zero while the bucket covers them).
    pub(crate) fn take(&self, bytes: usize, now: Instant) -> Duration {
        let mut b = lock(&self.state);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = b.at.max(now);
        b.tokens = (b.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.bytes_per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cap_for_zero_negative_or_nan() {
        let now = Instant::now();
        assert!(Bandwidth::new(0.0, now).is_none());
        assert!(Bandwidth::new(-1.0, now).is_none());
        assert!(Bandwidth::new(f64::NAN, now).is_none());
        assert!(Bandwidth::new(f64::INFINITY, now).is_none());
    }

    #[test]
    fn the_burst_passes_at_once_and_the_rest_waits_at_the_line_rate() {
        let t0 = Instant::now();
        // 8 Mbit/s = 1,000,000 bytes/s; burst 10,000 bytes.
        let bw = Bandwidth::new(8.0, t0).expect("a cap");
        assert_eq!(bw.take(10_000, t0), Duration::ZERO);
        // The next 100 kB owe 0.1 s.
        let wait = bw.take(100_000, t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // A second reader at the same moment queues behind the first.
        let wait = bw.take(50_000, t0);
        assert!((wait.as_secs_f64() - 0.15).abs() < 1e-9, "{wait:?}");
        // Once the debt is paid, an idle bucket refills only up to the burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(bw.take(10_000, later), Duration::ZERO);
        assert!(bw.take(1, later) > Duration::ZERO);
    }

    #[test]
    fn many_readers_share_the_rate_exactly() {
        // Simulated clock: each reader sleeps what it is told, frames of 16 kB from four
        // readers interleaved; the last grant ends when the total over the rate says.
        let t0 = Instant::now();
        let bw = Bandwidth::new(80.0, t0).expect("a cap"); // 10 MB/s
        let mut ready = [t0; 4];
        let mut total = 0usize;
        for round in 0..250 {
            let r = round % 4;
            let wait = bw.take(16_000, ready[r]);
            ready[r] += wait;
            total += 16_000;
        }
        let end = ready.iter().max().copied().unwrap_or(t0);
        let expected = (total as f64 - 100_000.0) / 10_000_000.0;
        let got = end.duration_since(t0).as_secs_f64();
        assert!((got - expected).abs() < 0.002, "{got} vs {expected}");
    }
}
