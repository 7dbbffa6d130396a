//! Packing: the greedy packer here (pure, no I/O), and the packing stage of a run in
//! [`stage`] (input order, context keys, rejects carried to the collector), whose
//! [`Request`] is what the senders send.
//!
//! Calls arrive as encoded JSON, in input order. Next-fit: a call goes into the open
//! request body if the body, with the call, its comma and the closing bytes, stays within
//! `max_request_bytes`; otherwise the open body is closed and handed out and a new one
//! starts. The size checked is the exact length of the body as sent, so a request over
//! the limit (which the API would answer 200 and silently drop) cannot be built.
//!
//! Invariants (proptest below): no body exceeds the limit; every call lands in exactly one
//! body, or is refused as too large; order is preserved.
//!
//! [`KeyedPacker`] does the same for calls that carry a batch-level `context` /
//! `integrations` (the API applies those to every call of a request, so calls with
//! different values must not share one). It keeps at most `max_open` bodies open, one per
//! key, each ending in its own `],"context":{..}}` suffix whose bytes count against the
//! limit. Open bodies are kept in the order of their first call, so the first one holds
//! the oldest call not yet handed out: that is what the checkpoint may not pass.

pub mod stage;

use crate::config::Limits;
use crossbeam_channel::{Receiver, Sender};

pub use stage::{AliasAt, CallOrigin, PackTotals, Request};

const PREFIX: &[u8] = b"{\"batch\":[";
const SUFFIX: &[u8] = b"]}";

/// A call that can never be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call of {len} bytes exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    pub len: usize,
    pub limit: usize,
}

/// A closed request body and the number of calls in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub calls: u32,
    /// End offset of each call in `bytes`; call `i` starts one byte (the comma, or the
    /// opening bracket) after call `i - 1` ends.
    pub call_ends: Vec<u32>,
}

/// Spent request bodies on their way back to the packer. A run reuses a handful of
/// bodies instead of asking the allocator for a fresh `max_request_bytes` buffer per
/// request, which glibc serves with new pages: a page fault every 4 KB written.
#[derive(Debug, Clone)]
pub struct Spares {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    min_capacity: usize,
}

impl Spares {
    /// Keeps at most `n` spare buffers, each of at least `min_capacity` bytes.
    pub fn new(n: usize, min_capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(n.max(1));
        Spares {
            tx,
            rx,
            min_capacity,
        }
    }

    /// Hands a body back for reuse; a small one, or one beyond the bound, is dropped.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() >= self.min_capacity {
            buf.clear();
            let _ = self.tx.try_send(buf);
        }
    }

    /// An empty buffer of at least `capacity` bytes, reused when one is spare.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.rx.try_recv().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }
}

/// Packs calls into `/v1/batch` bodies.
#[derive(Debug)]
pub struct Packer {
    limits: Limits,
    /// `]}`, or `],"context":{..}}` for a keyed body.
    suffix: Vec<u8>,
    body: Vec<u8>,
    calls: u32,
    call_ends: Vec<u32>,
    spares: Option<Spares>,
}

impl Packer {
    pub fn new(limits: Limits) -> Self {
        Packer::with_context(limits, b"")
    }

    /// A packer whose bodies end with `context` (`,"context":{..},"integrations":{..}`,
    /// or empty) after the batch array.
    pub fn with_context(limits: Limits, context: &[u8]) -> Self {
        let mut suffix = Vec::with_capacity(context.len() + 2);
        suffix.push(b']');
        suffix.extend_from_slice(context);
        suffix.push(b'}');
        Packer {
            limits,
            suffix,
            body: Vec::new(),
            calls: 0,
            call_ends: Vec::new(),
            spares: None,
        }
    }

    /// Takes each new body from `spares` when one is there.
    pub fn recycling(mut self, spares: Option<Spares>) -> Self {
        self.spares = spares;
        self
    }

    /// The largest call that fits in an empty body under these limits.
    pub fn max_call(&self) -> usize {
        max_call_with(self.limits, self.suffix.len())
    }

    /// Exact size of the open body if it were closed now.
    pub fn open_len(&self) -> usize {
        if self.calls == 0 {
            0
        } else {
            self.body.len() + self.suffix.len()
        }
    }

    pub fn open_calls(&self) -> u32 {
        self.calls
    }

    fn fits(&self, len: usize) -> bool {
        let size = if self.calls == 0 {
            PREFIX.len() + len + self.suffix.len()
        } else {
            self.body.len() + 1 + len + self.suffix.len()
        };
        size <= self.limits.max_request_bytes
    }

    /// Adds a call. When it does not fit in the open body, that body is closed and
    /// returned, and the call starts the next one.
    pub fn push(&mut self, call: &[u8]) -> Result<Option<Body>, TooLarge> {
        if call.len() > self.max_call() {
            return Err(TooLarge {
                len: call.len(),
                limit: self.max_call(),
            });
        }
        let closed = if self.fits(call.len()) {
            None
        } else {
            self.finish()
        };
        if self.calls == 0 {
            if self.body.capacity() == 0 {
                let max = self.limits.max_request_bytes;
                self.body = match &self.spares {
                    Some(s) => s.take(max),
                    None => Vec::with_capacity(max),
                };
            }
            self.body.extend_from_slice(PREFIX);
        } else {
            self.body.push(b',');
        }
        self.body.extend_from_slice(call);
        self.call_ends.push(self.body.len() as u32);
        self.calls += 1;
        Ok(closed)
    }

    /// Closes and returns the open body, if it holds any call.
    pub fn finish(&mut self) -> Option<Body> {
        if self.calls == 0 {
            return None;
        }
        self.body.extend_from_slice(&self.suffix);
        let calls = std::mem::take(&mut self.calls);
        // The next body will likely hold as many calls: size its list now rather than
        // growing it by doubling.
        let ends = Vec::with_capacity(self.call_ends.len());
        Some(Body {
            bytes: std::mem::take(&mut self.body),
            calls,
            call_ends: std::mem::replace(&mut self.call_ends, ends),
        })
    }
}

fn max_call_with(limits: Limits, suffix_len: usize) -> usize {
    limits.max_call_bytes.min(
        limits
            .max_request_bytes
            .saturating_sub(PREFIX.len() + suffix_len),
    )
}

/// A closed keyed body with the tags of its calls, in order.
#[derive(Debug)]
pub struct Packed<T> {
    pub body: Body,
    pub tags: Vec<T>,
}

struct Open<T> {
    key: Vec<u8>,
    packer: Packer,
    tags: Vec<T>,
}

/// Packs calls into bodies keyed by their batch-level context bytes (see the module
/// doc). `T` is whatever the caller needs back per call (its row, for the checkpoint).
pub struct KeyedPacker<T> {
    limits: Limits,
    max_open: usize,
    /// Non-empty bodies, ordered by their first call.
    open: Vec<Open<T>>,
    spares: Option<Spares>,
}

impl<T> KeyedPacker<T> {
    /// `max_open` (at least 1) bounds memory: at most that many bodies are open at once;
    /// a call with a new key beyond it closes the body with the oldest first call.
    pub fn new(limits: Limits, max_open: usize) -> Self {
        KeyedPacker {
            limits,
            max_open: max_open.max(1),
            open: Vec::new(),
            spares: None,
        }
    }

    /// Takes each new body from `spares` when one is there.
    pub fn recycling(mut self, spares: Spares) -> Self {
        self.spares = Some(spares);
        self
    }

    /// The largest call that fits in an empty body with this key.
    pub fn max_call(&self, key: &[u8]) -> usize {
        max_call_with(self.limits, key.len() + SUFFIX.len())
    }

    /// Adds a call under `key`; bodies it closes are appended to `out`, oldest first.
    /// Inlined: the packing stage calls it for every call.
    #[inline]
    pub fn push(
        &mut self,
        key: &[u8],
        call: &[u8],
        tag: T,
        out: &mut Vec<Packed<T>>,
    ) -> Result<(), TooLarge> {
        let limit = self.max_call(key);
        if call.len() > limit {
            return Err(TooLarge {
                len: call.len(),
                limit,
            });
        }
        // Most mappings have no batch context: one open body, an empty key. Lengths
        // first, so that case costs no `memcmp` call per call.
        let same = |o: &Open<T>| o.key.len() == key.len() && (key.is_empty() || o.key == key);
        let mut i = match self.open.iter().position(same) {
            Some(i) => i,
            None => {
                if self.open.len() >= self.max_open {
                    let oldest = self.open.remove(0);
                    out.extend(close(oldest));
                }
                self.open.push(Open {
                    key: key.to_vec(),
                    packer: Packer::with_context(self.limits, key).recycling(self.spares.clone()),
                    tags: Vec::new(),
                });
                self.open.len() - 1
            }
        };
        let o = &mut self.open[i];
        let closed = o
            .packer
            .push(call)
            .expect("the call was checked against this key's max_call above");
        if let Some(body) = closed {
            let tags = Vec::with_capacity(o.tags.len());
            out.push(Packed {
                body,
                tags: std::mem::replace(&mut o.tags, tags),
            });
            // This key's body now starts with `call`, the newest call: move it last to
            // keep the open bodies ordered by their first call.
            let o = self.open.remove(i);
            self.open.push(o);
            i = self.open.len() - 1;
        }
        self.open[i].tags.push(tag);
        Ok(())
    }

    /// The tag of the oldest call still in an open body: a checkpoint taken now must not
    /// pass it.
    pub fn oldest_open(&self) -> Option<&T> {
        self.open.first().and_then(|o| o.tags.first())
    }

    /// Number of open bodies.
    pub fn open_bodies(&self) -> usize {
        self.open.len()
    }

    /// Closes the open body with the oldest first call, if any.
    pub fn finish_one(&mut self) -> Option<Packed<T>> {
        if self.open.is_empty() {
            return None;
        }
        close(self.open.remove(0))
    }
}

/// Resume positions for bodies closed in one step, handed out oldest first.
///
/// The checkpoint advances over acknowledged requests in hand-out order, so once body
/// `i` and all before it are acknowledged, the input may resume at `resume[i]` only if
/// no call before that position is still unsent: not in an open body (`open_min`: the
/// position of the oldest open call, or of the next call to pack when none is open), nor
/// in a body closed in the same step but handed out after `i`. Hence
/// `resume[i] = min(open_min, first call of closed[j] for j > i)`.
pub fn resume_points<T, P: Ord + Copy>(
    closed: &[Packed<T>],
    open_min: P,
    at: impl Fn(&T) -> P,
) -> Vec<P> {
    let mut resumes = vec![open_min; closed.len()];
    let mut later = open_min;
    for i in (0..closed.len()).rev() {
        resumes[i] = later;
        if let Some(t) = closed[i].tags.first() {
            later = later.min(at(t));
        }
    }
    resumes
}

fn close<T>(mut o: Open<T>) -> Option<Packed<T>> {
    o.packer.finish().map(|body| Packed { body, tags: o.tags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A call of exactly `len` bytes that carries its index, so order can be checked.
    fn call(i: usize, len: usize) -> Vec<u8> {
        let head = format!("{{\"i\":{i},\"p\":\"");
        let pad = len.saturating_sub(head.len() + 2);
        let mut v = head.into_bytes();
        v.extend(std::iter::repeat_n(b'x', pad));
        v.extend_from_slice(b"\"}");
        v
    }

    #[test]
    fn a_body_exactly_at_the_limit_is_allowed_and_one_byte_more_is_not() {
        // 3 calls of 20 bytes: 10 + 20+1+20+1+20 + 2 = 74 bytes.
        assert_eq!(call(0, 20).len(), 20);
        let limits = Limits {
            max_request_bytes: 74,
            max_call_bytes: 32,
        };
        let mut p = Packer::new(limits);
        for i in 0..3 {
            assert_eq!(p.push(&call(i, 20)).unwrap(), None);
        }
        let b = p.finish().unwrap();
        assert_eq!(b.bytes.len(), 74);
        assert_eq!(b.calls, 3);
        serde_json::from_slice::<serde_json::Value>(&b.bytes).unwrap();

        let mut p = Packer::new(Limits {
            max_request_bytes: 73,
            ..limits
        });
        for i in 0..2 {
            p.push(&call(i, 20)).unwrap();
        }
        let closed = p.push(&call(2, 20)).unwrap().unwrap();
        assert_eq!(closed.calls, 2);
    }

    #[test]
    fn a_body_given_back_is_the_next_one_filled() {
        let limits = Limits {
            max_request_bytes: 1000,
            max_call_bytes: 100,
        };
        let spares = Spares::new(2, limits.max_request_bytes);
        let mut p = Packer::new(limits).recycling(Some(spares.clone()));
        p.push(&call(0, 50)).unwrap();
        let first = p.finish().unwrap();
        let at = first.bytes.as_ptr();
        spares.give(first.bytes);
        p.push(&call(1, 50)).unwrap();
        let second = p.finish().unwrap();
        assert_eq!(
            second.bytes.as_ptr(),
            at,
            "a fresh buffer instead of the spare"
        );
        assert!(second.bytes.starts_with(PREFIX) && second.bytes.ends_with(SUFFIX));
        assert_eq!(second.bytes.len(), PREFIX.len() + 50 + SUFFIX.len());
        // A buffer too small to hold a body is not kept.
        spares.give(Vec::with_capacity(10));
        assert!(spares.rx.is_empty());
    }

    #[test]
    fn a_call_over_the_call_limit_is_refused() {
        let mut p = Packer::new(Limits {
            max_request_bytes: 1000,
            max_call_bytes: 20,
        });
        assert_eq!(p.push(&call(0, 21)), Err(TooLarge { len: 21, limit: 20 }));
        assert!(p.finish().is_none());
    }

    fn key(k: usize) -> Vec<u8> {
        if k == 0 {
            Vec::new()
        } else {
            format!(",\"context\":{{\"ip\":\"10.0.0.{k}\"}}").into_bytes()
        }
    }

    #[test]
    fn a_keyed_body_counts_its_context_bytes() {
        let k = key(7);
        // 2 calls of 20: 10 + 20 + 1 + 20 + 1 + k + 1.
        let exact = PREFIX.len() + 41 + 1 + k.len() + 1;
        let limits = Limits {
            max_request_bytes: exact,
            max_call_bytes: 32,
        };
        let mut p = KeyedPacker::new(limits, 4);
        let mut out = Vec::new();
        p.push(&k, &call(0, 20), 0, &mut out).unwrap();
        p.push(&k, &call(1, 20), 1, &mut out).unwrap();
        assert!(out.is_empty());
        out.extend(p.finish_one());
        assert_eq!(out[0].body.bytes.len(), exact);
        let v: serde_json::Value = serde_json::from_slice(&out[0].body.bytes).unwrap();
        assert_eq!(v["context"]["ip"], "10.0.0.7");
        let mut p = KeyedPacker::new(
            Limits {
                max_request_bytes: exact - 1,
                ..limits
            },
            4,
        );
        let mut out = Vec::new();
        p.push(&k, &call(0, 20), 0, &mut out).unwrap();
        p.push(&k, &call(1, 20), 1, &mut out).unwrap();
        assert_eq!(out.len(), 1, "one byte less splits the pair");
    }

    proptest! {
        #[test]
        fn keyed_packing_keeps_every_call_once_within_limits_and_never_checkpoints_past_an_unsent_call(
            calls in prop::collection::vec((0usize..5, 8usize..300), 0..300),
            max_request in 120usize..2000,
            max_open in 1usize..4,
        ) {
            let limits = Limits { max_request_bytes: max_request, max_call_bytes: 300 };
            let mut p = KeyedPacker::new(limits, max_open);
            let mut out: Vec<Packed<usize>> = Vec::new();
            // Handed-out bodies in order: (call indices, resume position).
            let mut works: Vec<(Vec<usize>, usize)> = Vec::new();
            let mut refused = Vec::new();
            let hand_out = |out: &mut Vec<Packed<usize>>, open_min: usize, works: &mut Vec<(Vec<usize>, usize)>| -> Result<(), TestCaseError> {
                let resumes = resume_points(out, open_min, |&t| t);
                for (b, resume) in out.drain(..).zip(resumes) {
                    prop_assert!(b.body.bytes.len() <= max_request, "body {} > {}", b.body.bytes.len(), max_request);
                    let v: serde_json::Value = serde_json::from_slice(&b.body.bytes).unwrap();
                    let items = v["batch"].as_array().unwrap();
                    prop_assert_eq!(items.len(), b.tags.len());
                    let mut last = None;
                    for (it, &tag) in items.iter().zip(&b.tags) {
                        let i = it["i"].as_u64().unwrap() as usize;
                        prop_assert_eq!(i, tag);
                        // Order within a key, and one key per body.
                        prop_assert!(last < Some(i));
                        last = Some(i);
                        let want = String::from_utf8(key(calls[i].0)).unwrap();
                        let got = v.get("context").map(|c| format!(",\"context\":{c}")).unwrap_or_default();
                        prop_assert_eq!(want, got);
                    }
                    works.push((b.tags, resume));
                }
                Ok(())
            };
            for (i, &(k, n)) in calls.iter().enumerate() {
                if p.push(&key(k), &call(i, n), i, &mut out).is_err() {
                    refused.push(i);
                }
                let open_min = p.oldest_open().copied().unwrap_or(i + 1);
                hand_out(&mut out, open_min, &mut works)?;
                prop_assert!(p.open_bodies() <= max_open);
            }
            while let Some(b) = p.finish_one() {
                out.push(b);
            }
            hand_out(&mut out, calls.len(), &mut works)?;
            // Every call exactly once (or refused as too large).
            let mut seen = vec![0u32; calls.len()];
            for (tags, _) in &works {
                for &t in tags {
                    seen[t] += 1;
                }
            }
            for (i, &n) in seen.iter().enumerate() {
                prop_assert_eq!(n, if refused.contains(&i) { 0 } else { 1 }, "call {}", i);
            }
            for &i in &refused {
                prop_assert!(call(i, calls[i].1).len() > p.max_call(&key(calls[i].0)));
            }
            // The checkpoint: once works 0..=k are acknowledged, resuming at resume[k]
            // skips no unsent call; and resume positions never go back.
            let mut sent = vec![false; calls.len()];
            for &i in &refused {
                sent[i] = true;
            }
            let mut prev = 0;
            for (tags, resume) in &works {
                for &t in tags {
                    sent[t] = true;
                }
                prop_assert!(sent[..*resume].iter().all(|&s| s), "resume {} passes an unsent call", resume);
                prop_assert!(*resume >= prev);
                prev = *resume;
            }
        }

        #[test]
        fn packing_keeps_every_call_once_in_order_and_within_limits(
            sizes in prop::collection::vec(8usize..400, 0..300),
            max_request in 60usize..2000,
            max_call in 8usize..400,
        ) {
            let limits = Limits { max_request_bytes: max_request, max_call_bytes: max_call };
            let mut p = Packer::new(limits);
            let mut bodies = Vec::new();
            let mut refused = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                match p.push(&call(i, n)) {
                    Ok(Some(b)) => bodies.push(b),
                    Ok(None) => {}
                    Err(_) => refused.push(i),
                }
            }
            bodies.extend(p.finish());
            let mut seen = Vec::new();
            for b in &bodies {
                prop_assert!(b.bytes.len() <= max_request, "body {} > {}", b.bytes.len(), max_request);
                let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
                let items = v["batch"].as_array().unwrap();
                prop_assert_eq!(items.len() as u32, b.calls);
                prop_assert!(b.calls > 0);
                for (k, it) in items.iter().enumerate() {
                    seen.push(it["i"].as_u64().unwrap() as usize);
                    // call_ends locate each call exactly.
                    let start = if k == 0 { PREFIX.len() } else { b.call_ends[k - 1] as usize + 1 };
                    let slice = &b.bytes[start..b.call_ends[k] as usize];
                    prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(slice).unwrap(), it.clone());
                }
            }
            let max_fit = max_call.min(max_request - PREFIX.len() - SUFFIX.len());
            let expected: Vec<usize> = (0..sizes.len()).filter(|i| !refused.contains(i)).collect();
            prop_assert_eq!(seen, expected);
            for &i in &refused {
                prop_assert!(call(i, sizes[i]).len() > max_fit);
            }
            // Next-fit: each body but the last could not take the first call of the next.
            for w in bodies.windows(2) {
                let next_first = serde_json::from_slice::<serde_json::Value>(&w[1].bytes).unwrap()["batch"][0]["i"].as_u64().unwrap() as usize;
                let next_len = call(next_first, sizes[next_first]).len();
                prop_assert!(w[0].bytes.len() + 1 + next_len > max_request);
            }
        }
    }
}
