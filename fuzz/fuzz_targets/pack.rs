//! The packers with random limits and call sizes: every body within the limit and valid
//! JSON, every call in exactly one body (or refused only when it cannot fit), in order.
#![no_main]

use cdp_backfill::config::Limits;
use cdp_backfill::pack::{KeyedPacker, Packed, Packer};
use libfuzzer_sys::fuzz_target;

/// A call of exactly `len` bytes (at least 12) carrying its index.
fn call(i: usize, len: usize) -> Vec<u8> {
    let head = format!("{{\"i\":{i},\"p\":\"");
    let pad = len.saturating_sub(head.len() + 2);
    let mut v = head.into_bytes();
    v.extend(std::iter::repeat_n(b'x', pad));
    v.extend_from_slice(b"\"}");
    v
}

fn key(k: u8) -> Vec<u8> {
    if k == 0 {
        Vec::new()
    } else {
        format!(",\"context\":{{\"k\":{k}}}").into_bytes()
    }
}

fn items(bytes: &[u8], limit: usize) -> Vec<usize> {
    assert!(bytes.len() <= limit, "body {} > limit {limit}", bytes.len());
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("a body is JSON");
    v["batch"]
        .as_array()
        .expect("a body has a batch array")
        .iter()
        .map(|c| c["i"].as_u64().expect("each call has i") as usize)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let max_request = 40 + u16::from_le_bytes([data[0], data[1]]) as usize % 4000;
    let max_call = 12 + u16::from_le_bytes([data[2], data[3]]) as usize % 2000;
    let max_open = 1 + (data[4] % 4) as usize;
    let limits = Limits {
        max_request_bytes: max_request,
        max_call_bytes: max_call,
    };
    let calls: Vec<(u8, usize)> = data[5..]
        .chunks(2)
        .map(|c| (c[0] % 3, 12 + c.get(1).copied().unwrap_or(0) as usize * 9))
        .collect();

    // Packer.
    let mut p = Packer::new(limits);
    let mut seen = Vec::new();
    let mut want = Vec::new();
    for (i, &(_, n)) in calls.iter().enumerate() {
        let c = call(i, n);
        match p.push(&c) {
            Ok(closed) => {
                want.push(i);
                if let Some(b) = closed {
                    assert_eq!(b.call_ends.len(), b.calls as usize);
                    seen.extend(items(&b.bytes, max_request));
                }
            }
            Err(e) => assert!(c.len() > p.max_call() && e.len == c.len()),
        }
    }
    if let Some(b) = p.finish() {
        seen.extend(items(&b.bytes, max_request));
    }
    assert_eq!(seen, want, "calls lost, duplicated or reordered");

    // KeyedPacker.
    let mut kp = KeyedPacker::new(limits, max_open);
    let mut out: Vec<Packed<usize>> = Vec::new();
    let mut got = vec![0u8; calls.len()];
    let mut refused = vec![false; calls.len()];
    let drain = |out: &mut Vec<Packed<usize>>, got: &mut Vec<u8>| {
        for b in out.drain(..) {
            let ids = items(&b.body.bytes, max_request);
            assert_eq!(ids, b.tags);
            for i in ids {
                got[i] += 1;
            }
        }
    };
    for (i, &(k, n)) in calls.iter().enumerate() {
        let c = call(i, n);
        if kp.push(&key(k), &c, i, &mut out).is_err() {
            assert!(c.len() > kp.max_call(&key(k)));
            refused[i] = true;
        }
        assert!(kp.open_bodies() <= max_open);
        drain(&mut out, &mut got);
        if let Some(&oldest) = kp.oldest_open() {
            for j in 0..oldest {
                assert!(got[j] == 1 || refused[j], "call {j} before the checkpoint still open");
            }
        }
    }
    while let Some(b) = kp.finish_one() {
        out.push(b);
        drain(&mut out, &mut got);
    }
    for i in 0..calls.len() {
        assert_eq!(got[i] as usize + refused[i] as usize, 1, "call {i}");
    }
});
