//! The receiver's counters: the public [`Stats`] snapshot and the state behind it.
//!
//! All of it sits behind one mutex that a request takes twice at most (on arrival and
//! when it is answered), with everything computable outside the lock (parsing,
//! hashing, the record line) done before taking it. Map keys are `&'static str`
//! lookups, so a request allocates nothing here once a key exists.
//!
//! Invariant: every POST to an API route is counted in `requests` on arrival, and then
//! in exactly one of `responses_by_status` or `injected.dropped` (or neither, when the
//! client vanished mid-body and there was no one to answer).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::faults::Window;

/// What the receiver saw. Served as JSON by `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// POSTs to API routes (`/v1/batch` and the single-call routes), whatever the answer.
    pub requests: u64,
    /// The same, by route path, e.g. `"/v1/batch"`.
    pub requests_by_path: BTreeMap<String, u64>,
    /// The same, by HTTP version: `"HTTP/1.1"`, `"HTTP/2"` (or `"HTTP/1.0"`).
    #[serde(default)]
    pub requests_by_version: BTreeMap<String, u64>,
    /// Answers to those POSTs by status code (as a string, so the JSON is an object).
    pub responses_by_status: BTreeMap<String, u64>,
    /// Calls accepted (recorded, when recording).
    pub calls_accepted: u64,
    /// Calls answered 200 but not taken, as the API drops them without strict mode:
    /// invalid calls, and every call of a request dropped for a call over the size
    /// limit or for what the body says around its calls. (A body over the request limit
    /// is not read, so its calls are not counted here.)
    #[serde(default)]
    pub calls_dropped: u64,
    /// Accepted calls by type (`"identify"`, `"track"`, ...).
    pub calls_by_type: BTreeMap<String, u64>,
    /// Distinct messageIds among the accepted calls.
    pub unique_message_ids: u64,
    /// Accepted calls whose messageId had been accepted before.
    pub duplicate_message_ids: u64,
    /// Decompressed body bytes of requests that had calls accepted (all of them or,
    /// without strict mode, the valid ones; the whole body counts either way).
    pub bytes: u64,
    /// Request body bytes as they came over the wire (compressed, for gzip bodies), of
    /// every POST to an API route, read to its end or not: what the simulated uplink
    /// (`Faults::bandwidth_mbps`) carried.
    #[serde(default)]
    pub wire_bytes: u64,
    pub violations: Violations,
    /// The largest decompressed request body read, accepted or not.
    pub largest_request_bytes: u64,
    /// The largest single call seen, accepted or not.
    pub largest_call_bytes: u64,
    /// The most POSTs that arrived within any one second, including refused ones.
    pub max_requests_in_any_1s: u64,
    /// The most POSTs being handled at once (from arrival to answer, the injected
    /// latency included): the client's concurrency as the server saw it.
    #[serde(default)]
    pub max_in_flight: u64,
    /// Seconds from the first POST's arrival to the last's: with `requests`, the pace
    /// the client kept, without its start-up and its end.
    #[serde(default)]
    pub arrival_span_secs: f64,
    pub injected: Injected,
}

/// Requests or calls the real API would refuse or silently drop.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Violations {
    /// Requests over `max_request_bytes` (or over the hard cap).
    pub request_too_large: u64,
    /// Calls over `max_call_bytes`.
    pub call_too_large: u64,
    /// Calls failing validation (including those marked by `invalid_rate`).
    pub invalid_calls: u64,
    /// Requests whose body fails the spec around its calls: not an object, a `batch`
    /// that is not an array, a bad batch-level `context` or `integrations`, a key
    /// repeated outside the calls. None of their calls is taken.
    #[serde(default)]
    pub invalid_requests: u64,
    /// Bodies that are not the JSON the route expects, or not decodable.
    pub malformed_bodies: u64,
    /// Requests with a missing or wrong `Authorization`.
    pub auth_failures: u64,
}

/// Faults the receiver injected on purpose.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Injected {
    /// 500/502/503 answers from `fail_rate`.
    pub failures: u64,
    /// 429 answers from `throttle_rate`.
    pub throttled: u64,
    /// Connections closed without an answer from `drop_rate`.
    pub dropped: u64,
    /// Otherwise valid calls marked invalid by `invalid_rate`.
    pub invalid: u64,
    /// 429 answers because of `max_rps`.
    pub rps_limited: u64,
}

/// The xxh3-128 hashes of accepted messageIds: an open-addressing table (linear
/// probing, at most half full) of the hashes themselves, since they are already
/// random and hashing them again would only cost time.
///
/// Why not `HashSet<u128>`: with a million ids the table is tens of MB, so nearly every
/// insert is a cache miss (~10% of the receiver's time). Here a request's ids are
/// inserted together and each slot is prefetched a few ids ahead, so the misses
/// overlap. Exactness is that of the 128-bit hash, as before. The hash 0 marks an
/// empty slot, so an id hashing to 0 is remembered apart.
#[derive(Default)]
pub(crate) struct IdSet {
    slots: Vec<u128>,
    len: usize,
    has_zero: bool,
}

/// How far ahead of the insert the slot of a later id is prefetched.
const PREFETCH_AHEAD: usize = 8;

impl IdSet {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds `id`; false if it was already there.
    #[cfg(test)]
    pub fn insert(&mut self, id: u128) -> bool {
        self.insert_all(&[id]) == 0
    }

    /// Adds every id in order; returns how many were already there (counting a repeat
    /// within `ids` too, exactly as inserting them one by one).
    pub fn insert_all(&mut self, ids: &[u128]) -> u64 {
        self.reserve(ids.len());
        let mask = self.slots.len() - 1;
        let mut repeats = 0;
        for (k, &id) in ids.iter().enumerate() {
            if let Some(&ahead) = ids.get(k + PREFETCH_AHEAD) {
                prefetch(&self.slots[ahead as usize & mask]);
            }
            if id == 0 {
                if self.has_zero {
                    repeats += 1;
                } else {
                    self.has_zero = true;
                    self.len += 1;
                }
                continue;
            }
            let mut at = id as usize & mask;
            loop {
                let slot = &mut self.slots[at];
                if *slot == 0 {
                    *slot = id;
                    self.len += 1;
                    break;
                }
                if *slot == id {
                    repeats += 1;
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        repeats
    }

    /// Room for `more` ids with the table at most half full.
    fn reserve(&mut self, more: usize) {
        let need = (self.len + more).saturating_mul(2).max(1 << 10);
        if need <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0; need.next_power_of_two()]);
        let mask = self.slots.len() - 1;
        for id in old.into_iter().filter(|&id| id != 0) {
            let mut at = id as usize & mask;
            while self.slots[at] != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = id;
        }
    }
}

/// A hint to start loading `slot`'s cache line; no effect on results.
#[inline(always)]
fn prefetch(slot: &u128) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline; a prefetch never faults and the
    // pointer comes from a reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((slot as *const u128).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Everything mutable, behind the server's one mutex.
#[derive(Default)]
pub(crate) struct State {
    pub stats: Stats,
    /// xxh3-128 of each accepted messageId: 16 bytes an id rather than the string.
    pub seen_ids: IdSet,
    /// All POST arrivals in the last second, for `max_requests_in_any_1s`.
    pub arrivals: Window,
    /// Admitted arrivals in the last second, for `max_rps`.
    pub admitted: Window,
    /// POSTs arrived and not yet settled, for `max_in_flight`.
    pub in_flight: u64,
    /// When the first POST arrived, for `arrival_span_secs`.
    pub first_arrival: Option<std::time::Instant>,
}

/// Adds `n` under `key` without allocating once the key exists.
pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if n == 0 {
        return;
    }
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            map.insert(key.to_string(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_through_json_with_string_status_keys() {
        let mut s = Stats::default();
        bump(&mut s.responses_by_status, "200", 3);
        bump(&mut s.responses_by_status, "200", 1);
        bump(&mut s.calls_by_type, "track", 0);
        s.violations.call_too_large = 2;
        let json = serde_json::to_string(&s).expect("Stats serialises");
        assert!(
            json.contains(r#""responses_by_status":{"200":4}"#),
            "{json}"
        );
        assert!(json.contains(r#""calls_by_type":{}"#), "{json}");
        let back: Stats = serde_json::from_str(&json).expect("Stats deserialises");
        assert_eq!(back, s);
    }

    #[test]
    fn id_set_tells_repeats() {
        let mut ids = IdSet::default();
        let h = xxhash_rust::xxh3::xxh3_128(b"m1");
        assert!(ids.insert(h));
        assert!(!ids.insert(h));
        assert!(ids.insert(xxhash_rust::xxh3::xxh3_128(b"m2")));
        assert!(ids.insert(0));
        assert!(!ids.insert(0));
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn id_set_counts_repeats_like_a_hash_set_across_growth() {
        let mut ids = IdSet::default();
        let mut reference = std::collections::HashSet::new();
        // Many ids sharing low bits (long probe runs), repeats within and across
        // batches, and batches big enough to grow the table several times.
        let all: Vec<u128> = (0..20_000u128)
            .map(|k| ((k % 7_000) << 64) | ((k % 7_000) * 4096))
            .collect();
        for batch in all.chunks(1_300) {
            let expected = batch.iter().filter(|&&id| !reference.insert(id)).count() as u64;
            assert_eq!(ids.insert_all(batch), expected);
            assert_eq!(ids.len(), reference.len());
        }
        assert_eq!(ids.len(), 7_000);
    }
}
