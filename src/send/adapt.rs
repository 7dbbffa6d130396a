//! Adaptive concurrency and adaptive rate: two small controllers that the senders feed
//! with what each answer says, and that the gate and the sender permits read.
//!
//! Both are pure: time is an argument, never read from the clock, so their decisions are
//! tested as tables and traces with a simulated clock (the style of `retry.rs`).
//!
//! **Concurrency** ([`Concurrency`]) keeps as many requests on the wire as the sending rate
//! needs at the measured round trip (Little's law: in flight = rate × round trip, times
//! [`HEADROOM`]), and no more:
//! - it grows by one request per answer while the limit binds (every permit in use) and
//!   the rate needs more, which doubles it every round trip, as TCP's slow start does, so
//!   a run against a 150 ms API reaches its rate within a few round trips;
//! - it shrinks back towards what the rate needs by one per answer when it holds more
//!   than that (each permit can hold a request body, so spare permits cost memory);
//! - it cuts multiplicatively on trouble (additive increase, multiplicative decrease):
//!   by [`THROTTLE_CUT`] on a 429 and by [`OVERLOAD_CUT`] on a 5xx, a timeout or a dropped
//!   connection, at most once per round trip (the answers already on their way from
//!   before a cut are the same congestion, not a new one), and by [`QUEUE_CUT`] when the
//!   round trip grows well past its baseline (the server or the uplink is queuing: more
//!   requests in flight would only wait longer, as Vector's adaptive request
//!   concurrency and Netflix's gradient limiter observe), but never below what the rate
//!   needs at the round trip measured (a round trip inflated by a busy CPU must not
//!   starve a rate the server takes: 429s and errors say when it does not);
//! - it stays within `min..=max` (1..=256 by default; `max` also bounds memory).
//!
//! **Rate** ([`Rate`]) starts at the `--rate` ceiling and never exceeds it. A 429 means the
//! server's pace is below ours: the rate drops to [`RATE_CUT`] of what the server accepted
//! over the last second (not of the rate we asked for, which may be far above what was
//! actually sent), once per congestion episode. After a quiet second it probes back up,
//! by [`RATE_PROBE`] of the rate it was cut to, per second: slowly, so a server limit is
//! met a few requests at a time, not with a burst of 429s. The 429's `Retry-After` pause
//! is the gate's business, and stays global.

use std::time::{Duration, Instant};

/// In flight = rate × round trip × this: room for round-trip jitter and for the answers
/// that come back in bursts.
pub const HEADROOM: f64 = 1.5;
/// The concurrency limit after a 429, as a fraction of what it was.
pub const THROTTLE_CUT: f64 = 0.75;
/// The concurrency limit after a 5xx, a timeout or a dropped connection.
pub const OVERLOAD_CUT: f64 = 0.5;
/// The concurrency limit when the round trip says requests are queuing.
pub const QUEUE_CUT: f64 = 0.9;
/// The round trip counts as queuing above this multiple of its baseline...
pub const QUEUE_TOLERANCE: f64 = 2.0;
/// ...plus this, so that a loopback round trip of a few hundred microseconds does not
/// look like queuing when it doubles.
pub const QUEUE_SLACK: Duration = Duration::from_millis(5);
/// The sending rate after a 429, as a fraction of what the server accepted in the last
/// second.
pub const RATE_CUT: f64 = 0.9;
/// Each quiet second raises the rate by this fraction of the rate it was last cut to.
pub const RATE_PROBE: f64 = 0.03;
/// The rate never drops below this many requests a second.
pub const MIN_RATE: f64 = 1.0;

/// What one answer says about the path to the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A 2xx (or a 400 in strict mode: the server answered, promptly) after `rtt` on the
    /// wire.
    Answered { rtt: Duration },
    /// A 429.
    Throttled,
    /// A 5xx, a timeout, a dropped or refused connection: the server or the path is
    /// overloaded.
    Overloaded,
}

/// Bounds for [`Concurrency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: usize,
    pub max: usize,
    /// Where the limit starts, before any round trip is measured.
    pub initial: usize,
}

/// An exponentially weighted moving average of seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<f64>);

impl Ewma {
    fn add(&mut self, x: f64, alpha: f64) {
        self.0 = Some(match self.0 {
            Some(m) => m + alpha * (x - m),
            None => x,
        });
    }
}

/// The adaptive concurrency limit. See the module doc.
#[derive(Debug, Clone)]
pub struct Concurrency {
    bounds: Bounds,
    limit: f64,
    /// The recent round trip: follows changes within a few answers.
    rtt: Ewma,
    /// The baseline round trip: the least seen over the last 15 to 30 seconds.
    base: WindowedMin,
    /// No cut before this (one round trip after the last one).
    hold: Option<Instant>,
    /// When a request last went out with every permit in use: more concurrency is
    /// something the run could use only while that was within the last round trip.
    reached: Option<Instant>,
    /// Below this the limit grows by one per answer (doubling per round trip); above it,
    /// by one per round trip. Set by each cut, as TCP's slow-start threshold.
    threshold: f64,
}

/// How fast the recent round trip follows each answer.
const RTT_ALPHA: f64 = 0.25;
/// The baseline round trip forgets what it saw after one to two of these.
const BASE_WINDOW: Duration = Duration::from_secs(15);

/// The least value seen over the last one to two windows (two buckets that rotate): a
/// baseline round trip that a queue holding steady cannot drag up, as an average would,
/// and that still follows a route that got longer, within half a minute.
#[derive(Debug, Clone, Copy, Default)]
struct WindowedMin {
    current: Option<(Instant, f64)>,
    previous: Option<f64>,
}

impl WindowedMin {
    fn add(&mut self, now: Instant, x: f64) {
        match &mut self.current {
            Some((start, m)) if now.saturating_duration_since(*start) < BASE_WINDOW => {
                *m = m.min(x);
            }
            cur => {
                self.previous = cur.map(|(_, m)| m);
                *cur = Some((now, x));
            }
        }
    }

    fn get(&self) -> Option<f64> {
        let cur = self.current.map(|(_, m)| m);
        match (cur, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Concurrency {
    pub fn new(bounds: Bounds) -> Self {
        let min = bounds.min.max(1);
        let max = bounds.max.max(min);
        let bounds = Bounds {
            min,
            max,
            initial: bounds.initial.clamp(min, max),
        };
        Concurrency {
            bounds,
            limit: bounds.initial as f64,
            rtt: Ewma::default(),
            base: WindowedMin::default(),
            hold: None,
            reached: None,
            threshold: f64::INFINITY,
        }
    }

    /// Requests that may be on the wire at once now.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(self.bounds.min, self.bounds.max)
    }

    /// The most it may ever allow.
    pub fn max(&self) -> usize {
        self.bounds.max
    }

    /// The recent round trip, once one was measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.0.map(Duration::from_secs_f64)
    }

    /// What `rate` requests a second need in flight at the recent round trip (with
    /// headroom); `None` before a round trip is known or when the rate is unbounded.
    pub fn needed(&self, rate: f64) -> Option<f64> {
        let rtt = self.rtt.0?;
        // (Less a hair, so that float noise in the average does not round up.)
        let n = (rate * rtt * HEADROOM + 1.0 - 1e-6).ceil();
        n.is_finite().then_some(n)
    }

    /// A request went on the wire at `now`; `in_flight` counts it.
    pub fn sent(&mut self, now: Instant, in_flight: usize) {
        if in_flight >= self.limit() {
            self.reached = Some(now);
        }
    }

    /// Takes one answer; `rate`: the sending rate now, in requests a second
    /// (`f64::INFINITY` for none).
    pub fn on_answer(&mut self, now: Instant, signal: Signal, rate: f64) {
        let held = self.hold.is_some_and(|h| now < h);
        match signal {
            Signal::Throttled if !held => self.cut(now, THROTTLE_CUT),
            Signal::Overloaded if !held => self.cut(now, OVERLOAD_CUT),
            Signal::Throttled | Signal::Overloaded => {}
            Signal::Answered { rtt } => {
                let secs = rtt.as_secs_f64();
                self.rtt.add(secs, RTT_ALPHA);
                self.base.add(now, secs);
                let (recent, base) = (self.rtt.0.unwrap_or(secs), self.base.get().unwrap_or(secs));
                let queuing = recent > base * QUEUE_TOLERANCE + QUEUE_SLACK.as_secs_f64();
                let needed = self.needed(rate);
                let binds = self.reached.is_some_and(|t| {
                    now.saturating_duration_since(t).as_secs_f64() <= recent * 1.5
                });
                // Queuing trims only what the rate does not need at the round trip it
                // sees: a round trip inflated by a busy CPU (a loaded machine, a
                // loopback receiver) must not starve a rate the server takes.
                let spare = needed.is_none_or(|n| self.limit > n);
                if queuing && spare {
                    if !held {
                        self.cut(now, QUEUE_CUT);
                        if let Some(n) = needed {
                            self.limit = self.limit.max(n);
                        }
                    }
                } else if needed.is_none_or(|n| self.limit < n) {
                    if binds {
                        self.limit += if self.limit < self.threshold {
                            1.0
                        } else {
                            1.0 / self.limit
                        };
                        if let Some(n) = needed {
                            self.limit = self.limit.min(n);
                        }
                    }
                } else if let Some(n) = needed {
                    // More permits than the rate needs: give one back per answer.
                    self.limit = (self.limit - 1.0).max(n);
                }
            }
        }
        self.limit = self
            .limit
            .clamp(self.bounds.min as f64, self.bounds.max as f64);
    }

    fn cut(&mut self, now: Instant, by: f64) {
        self.limit *= by;
        self.threshold = self.limit;
        self.reached = None;
        // The answers to requests sent before this cut belong to the same episode.
        let rtt = self.rtt().unwrap_or(Duration::from_secs(1));
        self.hold = Some(now + rtt);
    }
}

/// Counts of answers in the last second, in tenths: enough to estimate the server's pace
/// without keeping a timestamp per request.
#[derive(Debug, Clone)]
struct LastSecond {
    /// Counts per 100 ms slot; slot `i` covers tenths `t` with `t % 10 == i`.
    slots: [u64; 10],
    /// The tenth (since `origin`) the newest slot belongs to.
    newest: u64,
    origin: Instant,
}

impl LastSecond {
    fn new(origin: Instant) -> Self {
        LastSecond {
            slots: [0; 10],
            newest: 0,
            origin,
        }
    }

    fn tenth(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() / 100) as u64
    }

    fn advance(&mut self, now: Instant) {
        let t = self.tenth(now);
        if t > self.newest {
            for k in (self.newest + 1)..=t.min(self.newest + 10) {
                self.slots[(k % 10) as usize] = 0;
            }
            self.newest = t;
        }
    }

    fn add(&mut self, now: Instant) {
        self.advance(now);
        self.slots[(self.newest % 10) as usize] += 1;
    }

    /// Answers in the last second, as a rate. Before a whole second has passed, the count
    /// so far over the time so far (at least a tenth).
    fn per_sec(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let n: u64 = self.slots.iter().sum();
        let span = now
            .saturating_duration_since(self.origin)
            .as_secs_f64()
            .clamp(0.1, 1.0);
        n as f64 / span
    }
}

/// The adaptive sending rate. See the module doc.
#[derive(Debug, Clone)]
pub struct Rate {
    ceiling: f64,
    current: f64,
    /// The rate last cut to: each probe step is a fraction of it.
    cut_to: f64,
    /// The last cut or probe step: the next step waits a second after it.
    last_change: Option<Instant>,
    /// Probe steps since the last cut: each is a quarter step larger than the first.
    probes: u32,
    /// No cut before this: the answers to requests sent before the last cut.
    hold: Option<Instant>,
    accepted: LastSecond,
    cuts: u64,
}

impl Rate {
    /// `ceiling`: the `--rate` never exceeded. `start`: when sending starts.
    pub fn new(ceiling: f64, start: Instant) -> Self {
        let ceiling = ceiling.max(MIN_RATE);
        Rate {
            ceiling,
            current: ceiling,
            cut_to: ceiling,
            last_change: None,
            probes: 0,
            hold: None,
            accepted: LastSecond::new(start),
            cuts: 0,
        }
    }

    /// Requests a second allowed now; never above the ceiling.
    pub fn current(&self) -> f64 {
        self.current
    }

    /// How many times a 429 lowered the rate.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Takes one answer. `hold`: how long answers to requests already sent may still
    /// arrive (the round trip, plus any `Retry-After` pause that starts now). Returns the
    /// new rate when it changed.
    pub fn on_answer(&mut self, now: Instant, signal: Signal, hold: Duration) -> Option<f64> {
        let before = self.current;
        match signal {
            Signal::Answered { .. } => {
                self.accepted.add(now);
                let quiet = self
                    .last_change
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
                if self.current < self.ceiling && quiet {
                    let step =
                        (self.cut_to * RATE_PROBE).max(1.0) * (1.0 + self.probes as f64 / 4.0);
                    self.current = (self.current + step).min(self.ceiling);
                    self.probes += 1;
                    self.last_change = Some(now);
                }
            }
            Signal::Throttled => {
                if self.hold.is_none_or(|h| now >= h) {
                    let pace = self.accepted.per_sec(now).max(self.current / 2.0);
                    self.current =
                        (self.current.min(pace) * RATE_CUT).clamp(MIN_RATE, self.ceiling);
                    self.cut_to = self.current;
                    self.probes = 0;
                    self.last_change = Some(now);
                    self.hold = Some(now + hold);
                    self.cuts += 1;
                } else {
                    // Still the same episode; but probing waits a quiet second again.
                    self.last_change = Some(now);
                }
            }
            Signal::Overloaded => {}
        }
        (self.current != before).then_some(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bounds() -> Bounds {
        Bounds {
            min: 1,
            max: 256,
            initial: 8,
        }
    }

    /// What answers a simulated request gets, and after how long: `(signal, rtt)` for the
    /// request sent at `now` with `in_flight` on the wire.
    type Server<'a> = dyn FnMut(Instant, usize) -> (Signal, Duration) + 'a;

    /// Senders with unlimited work, at most `rate` requests a second and the controller's
    /// limit on the wire, for `secs` simulated seconds in 100 µs steps. Returns the end
    /// and how many answers came.
    fn simulate(
        c: &mut Concurrency,
        t0: Instant,
        rate: f64,
        secs: f64,
        server: &mut Server<'_>,
    ) -> (Instant, u64) {
        let step = Duration::from_micros(100);
        let mut answers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>> =
            Default::default();
        let mut signals = std::collections::HashMap::new();
        let (mut id, mut answered) = (0u64, 0u64);
        let mut allowance = 1.0f64;
        let mut now = t0;
        let end = t0 + Duration::from_secs_f64(secs);
        while now < end {
            while answers.peek().is_some_and(|r| r.0 .0 <= now) {
                let std::cmp::Reverse((_, k)) = answers.pop().unwrap();
                c.on_answer(now, signals.remove(&k).unwrap(), rate);
                answered += 1;
            }
            allowance = (allowance + rate * step.as_secs_f64()).min(1.0);
            while answers.len() < c.limit() && allowance >= 1.0 - 1e-9 {
                allowance -= 1.0;
                c.sent(now, answers.len() + 1);
                let (signal, rtt) = server(now, answers.len() + 1);
                id += 1;
                signals.insert(id, signal);
                answers.push(std::cmp::Reverse((now + rtt, id)));
            }
            now += step;
        }
        (now, answered)
    }

    fn after(rtt: Duration) -> impl FnMut(Instant, usize) -> (Signal, Duration) {
        move |_, _| (Signal::Answered { rtt }, rtt)
    }

    /// Round trips uniform in `lo..hi`, from a fixed seed.
    fn jittered(lo: Duration, hi: Duration) -> impl FnMut(Instant, usize) -> (Signal, Duration) {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        move |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let rtt = lo + (hi - lo).mul_f64((x >> 11) as f64 / (1u64 << 53) as f64);
            (Signal::Answered { rtt }, rtt)
        }
    }

    #[test]
    fn concurrency_rises_to_what_the_rate_needs_at_the_round_trip() {
        let t0 = Instant::now();
        for (rtt_ms, rate) in [(150, 200.0), (20, 200.0), (400, 200.0), (150, 1000.0)] {
            let mut c = Concurrency::new(bounds());
            let rtt = rtt_ms * MS;
            // Within 5 s of the first request...
            let (now, _) = simulate(&mut c, t0, rate, 5.0, &mut after(rtt));
            // ... 90% of the rate is sustained,
            let (_, answered) = simulate(&mut c, now, rate, 10.0, &mut after(rtt));
            assert!(
                answered as f64 >= 0.9 * 10.0 * rate,
                "rtt {rtt_ms} ms, rate {rate}: {answered} in 10 s"
            );
            // with no more in flight than the rate needs (rate × rtt × 1.5 + 1).
            let needed = c.needed(rate).unwrap() as usize;
            assert!(c.limit() <= needed, "{} > {needed}", c.limit());
            assert!(
                c.limit() as f64 >= rate * rtt.as_secs_f64(),
                "{}",
                c.limit()
            );
        }
    }

    #[test]
    fn concurrency_keeps_the_rate_when_the_round_trip_jitters() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        let mut server = jittered(100 * MS, 200 * MS);
        let (now, _) = simulate(&mut c, t0, 200.0, 5.0, &mut server);
        let (_, answered) = simulate(&mut c, now, 200.0, 10.0, &mut server);
        assert!(answered >= 1800, "{answered} in 10 s");
        assert!(c.limit() <= 50, "{}", c.limit());
    }

    #[test]
    fn concurrency_reaches_the_needed_level_within_a_few_round_trips() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        // 8 → 31 at 150 ms and 200 a second: doubling per round trip takes two.
        simulate(&mut c, t0, 200.0, 0.45, &mut after(150 * MS));
        assert!(c.limit() >= 31, "{}", c.limit());
    }

    #[test]
    fn concurrency_is_bounded_by_max_and_grows_only_while_it_binds() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        simulate(&mut c, t0, 1000.0, 10.0, &mut after(400 * MS));
        assert_eq!(c.limit(), 256);

        // Answers while fewer are in flight than allowed do not raise it.
        let mut c = Concurrency::new(bounds());
        for i in 0..100 {
            c.sent(t0 + i * MS, 2);
            c.on_answer(t0 + i * MS, Signal::Answered { rtt: 100 * MS }, 1000.0);
        }
        assert_eq!(c.limit(), 8);
    }

    #[test]
    fn concurrency_follows_the_round_trip_down() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        let (now, _) = simulate(&mut c, t0, 200.0, 5.0, &mut after(400 * MS));
        assert!((81..=121).contains(&c.limit()), "{}", c.limit());
        simulate(&mut c, now, 200.0, 2.0, &mut after(20 * MS));
        assert!((5..=7).contains(&c.limit()), "{}", c.limit());
    }

    #[test]
    fn concurrency_cuts_once_per_round_trip_on_429s_and_5xx() {
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        let (now, _) = simulate(&mut c, t0, 200.0, 5.0, &mut after(150 * MS));
        let before = c.limit();
        assert!(before >= 31, "{before}");
        // A burst of 429s within one round trip: one cut.
        for i in 0..10 {
            c.on_answer(now + i * MS, Signal::Throttled, 200.0);
        }
        assert_eq!(c.limit(), (before as f64 * THROTTLE_CUT) as usize);
        // A round trip later, a 5xx cuts again, by half.
        let cut = c.limit();
        c.on_answer(now + 200 * MS, Signal::Overloaded, 200.0);
        assert_eq!(c.limit(), (cut as f64 * OVERLOAD_CUT) as usize);
        // And it grows back, a request per round trip (after a cut there is no
        // doubling): from 11 to 31 takes 20 round trips, 3 s.
        let (then, _) = simulate(&mut c, now + 400 * MS, 200.0, 1.5, &mut after(150 * MS));
        assert!(c.limit() < 31, "{}", c.limit());
        simulate(&mut c, then, 200.0, 3.0, &mut after(150 * MS));
        assert!(c.limit() >= 31, "{}", c.limit());
    }

    #[test]
    fn concurrency_stops_growing_and_backs_off_when_the_round_trip_queues() {
        // No rate limit (a loopback run) against a server that does 4 requests a
        // millisecond in order, after 1 ms of latency: beyond about 4 in flight, more
        // only wait longer. The limit grows while the round trip holds, then settles
        // where the queue shows (2 × 1.25 ms + 5 ms of round trip: about 25 queued),
        // far from the maximum.
        let t0 = Instant::now();
        let mut c = Concurrency::new(bounds());
        let mut busy_until = t0;
        let mut server = |now: Instant, _| {
            busy_until = busy_until.max(now) + Duration::from_micros(250);
            let rtt = busy_until - now + MS;
            (Signal::Answered { rtt }, rtt)
        };
        let mut seen = vec![];
        let mut now = t0;
        for _ in 0..20 {
            now = simulate(&mut c, now, f64::INFINITY, 0.5, &mut server).0;
            seen.push(c.limit());
        }
        assert!(seen[5..].iter().all(|l| (8..=45).contains(l)), "{seen:?}");
    }

    /// A server admitting `cap` requests in any sliding second, answering 429 above it,
    /// against a sender that goes as fast as the rate controller allows. Returns
    /// (requests sent, requests throttled).
    fn against_a_rate_limited_server(cap: usize, ceiling: f64, secs: u64) -> (u64, u64, Rate) {
        let t0 = Instant::now();
        let mut rate = Rate::new(ceiling, t0);
        let mut admitted: std::collections::VecDeque<Instant> = Default::default();
        let (mut sent, mut throttled) = (0u64, 0u64);
        let mut now = t0;
        let mut paused_until = t0;
        let end = t0 + Duration::from_secs(secs);
        let rtt = 20 * MS;
        while now < end {
            now += Duration::from_secs_f64(1.0 / rate.current());
            if now < paused_until {
                now = paused_until;
            }
            sent += 1;
            while admitted
                .front()
                .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
            {
                admitted.pop_front();
            }
            let answer_at = now + rtt;
            if admitted.len() < cap {
                admitted.push_back(now);
                rate.on_answer(answer_at, Signal::Answered { rtt }, rtt);
            } else {
                throttled += 1;
                // Retry-After: 1 s, a global pause.
                paused_until = answer_at + Duration::from_secs(1);
                rate.on_answer(answer_at, Signal::Throttled, rtt + Duration::from_secs(1));
            }
        }
        (sent, throttled, rate)
    }

    #[test]
    fn rate_learns_the_servers_pace_with_few_429s() {
        let (sent, throttled, rate) = against_a_rate_limited_server(100, 1000.0, 120);
        // At most 5% of requests answered 429 (the target), and most of the
        // server's allowance used.
        assert!(throttled * 20 <= sent, "{throttled} of {sent} throttled");
        assert!(
            sent >= 120 * 70,
            "only {sent} sent in 120 s against a 100/s server"
        );
        assert!(rate.current() <= 110.0, "rate {}", rate.current());
        assert!(rate.cuts() >= 2);
    }

    #[test]
    fn rate_never_exceeds_the_ceiling_and_probes_back_up_slowly() {
        let t0 = Instant::now();
        let mut r = Rate::new(200.0, t0);
        assert_eq!(r.current(), 200.0);
        // 100 answered in the first half second, then a 429.
        for i in 0..100 {
            r.on_answer(t0 + i * 5 * MS, Signal::Answered { rtt: MS }, MS);
        }
        assert_eq!(
            r.on_answer(t0 + 500 * MS, Signal::Throttled, Duration::from_secs(1)),
            Some(180.0)
        );
        // The server accepted 200 a second (100 in half a second): cut to 90% of that.
        assert_eq!(r.current(), 180.0);
        // More 429s of the same episode change nothing.
        assert_eq!(r.on_answer(t0 + 900 * MS, Signal::Throttled, MS), None);
        // After a quiet second, steps of 3% of 180 (5.4), a quarter step more each
        // second: 185.4, 192.15, 200 (capped), a second apart.
        let mut now = t0 + 2 * Duration::from_secs(1);
        let mut seen = vec![];
        while r.current() < 200.0 {
            if let Some(x) = r.on_answer(now, Signal::Answered { rtt: MS }, MS) {
                seen.push((x * 100.0).round() / 100.0);
            }
            now += 100 * MS;
        }
        assert_eq!(seen, [185.4, 192.15, 200.0]);
        r.on_answer(
            now + Duration::from_secs(5),
            Signal::Answered { rtt: MS },
            MS,
        );
        assert_eq!(r.current(), 200.0);
    }

    #[test]
    fn rate_cut_is_of_what_the_server_accepted_not_of_the_ceiling() {
        let t0 = Instant::now();
        let mut r = Rate::new(1000.0, t0);
        // Only 10 answers in the first second (the run was slow to start), then a 429.
        for i in 0..10 {
            r.on_answer(t0 + i * 100 * MS, Signal::Answered { rtt: MS }, MS);
        }
        r.on_answer(t0 + 1000 * MS, Signal::Throttled, MS);
        // The server took 10 a second, but one episode halves the rate at most.
        assert_eq!(r.current(), 450.0);
        // A 200 a second server, 429 after a second: cut to 90% of 200.
        let mut r = Rate::new(1000.0, t0);
        for i in 0..200 {
            r.on_answer(t0 + i * 5 * MS, Signal::Answered { rtt: MS }, MS);
        }
        r.on_answer(t0 + 1000 * MS, Signal::Throttled, MS);
        assert_eq!(r.current(), 450.0);
        r.on_answer(t0 + 2000 * MS, Signal::Throttled, MS);
        // ... a second later, the second episode: 90% of min(450, 200... counted over
        // the last second, in which none were answered): half of 450, then 90%.
        assert_eq!(r.current(), 202.5);
        // Never below the minimum.
        let mut r = Rate::new(1.5, t0);
        r.on_answer(t0 + 10 * MS, Signal::Throttled, MS);
        assert_eq!(r.current(), MIN_RATE);
    }

    #[test]
    fn the_last_second_counts_slide() {
        let t0 = Instant::now();
        let mut w = LastSecond::new(t0);
        for i in 0..20 {
            w.add(t0 + i * 100 * MS);
        }
        // At 1.95 s: the answers at 1.0 .. 1.9 s are in the last second's slots.
        assert_eq!(w.per_sec(t0 + 1950 * MS), 10.0);
        // Five seconds of silence empty it.
        assert_eq!(w.per_sec(t0 + 7 * Duration::from_secs(1)), 0.0);
    }
}
