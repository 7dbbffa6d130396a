//! The greedy packer: pure, no I/O.
//!
//! Calls arrive as encoded JSON, in input order. Next-fit: a call goes into the open
//! request body if the body, with the call, its comma and the closing bytes, stays within
//! `max_request_bytes`; otherwise the open body is closed and handed out and a new one
//! starts. The size checked is the exact length of the body as sent, so a request over
//! the limit (which the API would answer 200 and silently drop) cannot be built.
//!
//! Invariants (proptest below): no body exceeds the limit; every call lands in exactly one
//! body, or is refused as too large; order is preserved.

use crate::config::Limits;

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

/// Packs calls into `/v1/batch` bodies.
#[derive(Debug)]
pub struct Packer {
    limits: Limits,
    body: Vec<u8>,
    calls: u32,
    call_ends: Vec<u32>,
}

impl Packer {
    pub fn new(limits: Limits) -> Self {
        Packer {
            limits,
            body: Vec::new(),
            calls: 0,
            call_ends: Vec::new(),
        }
    }

    /// The largest call that fits in an empty body under these limits.
    pub fn max_call(&self) -> usize {
        self.limits.max_call_bytes.min(
            self.limits
                .max_request_bytes
                .saturating_sub(PREFIX.len() + SUFFIX.len()),
        )
    }

    /// Exact size of the open body if it were closed now.
    pub fn open_len(&self) -> usize {
        if self.calls == 0 {
            0
        } else {
            self.body.len() + SUFFIX.len()
        }
    }

    pub fn open_calls(&self) -> u32 {
        self.calls
    }

    fn fits(&self, len: usize) -> bool {
        let size = if self.calls == 0 {
            PREFIX.len() + len + SUFFIX.len()
        } else {
            self.body.len() + 1 + len + SUFFIX.len()
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
                self.body.reserve(self.limits.max_request_bytes);
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
        self.body.extend_from_slice(SUFFIX);
        let calls = std::mem::take(&mut self.calls);
        Some(Body {
            bytes: std::mem::take(&mut self.body),
            calls,
            call_ends: std::mem::take(&mut self.call_ends),
        })
    }
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
        // 3 calls of 10 bytes: 10 + 10+1+10+1+10 + 2 = 44 bytes.
        let limits = Limits {
            max_request_bytes: 44,
            max_call_bytes: 32,
        };
        let mut p = Packer::new(limits);
        for i in 0..3 {
            assert_eq!(p.push(&call(i, 10)).unwrap(), None);
        }
        let b = p.finish().unwrap();
        assert_eq!(b.bytes.len(), 44);
        assert_eq!(b.calls, 3);
        serde_json::from_slice::<serde_json::Value>(&b.bytes).unwrap();

        let mut p = Packer::new(Limits {
            max_request_bytes: 43,
            ..limits
        });
        for i in 0..2 {
            p.push(&call(i, 10)).unwrap();
        }
        let closed = p.push(&call(2, 10)).unwrap().unwrap();
        assert_eq!(closed.calls, 2);
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

    proptest! {
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
