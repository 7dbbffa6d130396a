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

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use super::faults::Window;

/// What the receiver saw. Served as JSON by `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// POSTs to API routes (`/v1/batch` and the single-call routes), whatever the answer.
    pub requests: u64,
    /// The same, by route path, e.g. `"/v1/batch"`.
    pub requests_by_path: BTreeMap<String, u64>,
    /// Answers to those POSTs by status code (as a string, so the JSON is an object).
    pub responses_by_status: BTreeMap<String, u64>,
    /// Calls accepted (recorded, when recording).
    pub calls_accepted: u64,
    /// Accepted calls by type (`"identify"`, `"track"`, ...).
    pub calls_by_type: BTreeMap<String, u64>,
    /// Distinct messageIds among the accepted calls.
    pub unique_message_ids: u64,
    /// Accepted calls whose messageId had been accepted before.
    pub duplicate_message_ids: u64,
    /// Decompressed body bytes of requests that had calls accepted (all of them or,
    /// without strict mode, the valid ones; the whole body counts either way).
    pub bytes: u64,
    pub violations: Violations,
    /// The largest decompressed request body read, accepted or not.
    pub largest_request_bytes: u64,
    /// The largest single call seen, accepted or not.
    pub largest_call_bytes: u64,
    /// The most POSTs that arrived within any one second, including refused ones.
    pub max_requests_in_any_1s: u64,
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

/// The keys are already xxh3-128 hashes; hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a non-u128 key sneaks in; fold it rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

pub(crate) type IdSet = HashSet<u128, BuildHasherDefault<PassThrough>>;

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
    }
}
