//! `--sent-at now`: `sentAt` stamped with the time of each attempt, bytes kept exact.
//!
//! The encoder ends every call with a fixed-width placeholder,
//! `,"sentAt":"0000-00-00T00:00:00.000Z"`, so the packer's byte-exact sizes already count
//! the final value. Before each attempt the sender calls [`restamp`], which copies the
//! body with every placeholder replaced by the current time (same width: limits hold).
//! The queued body keeps its placeholders, so a retry gets a fresh time too.
//!
//! The placeholder cannot come from user data: inside a JSON string its quotes would be
//! escaped, and the encoder writes it only as a call's last top-level key.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::timestamp;

/// What every call ends with (before its closing `}`) under `--sent-at now`.
pub const SENT_AT_PLACEHOLDER: &[u8] = b",\"sentAt\":\"0000-00-00T00:00:00.000Z\"";

/// Set once a chunk was encoded with placeholders, so runs without `--sent-at` pay one
/// relaxed load per attempt and no scan.
static IN_USE: AtomicBool = AtomicBool::new(false);

pub(crate) fn note_in_use() {
    IN_USE.store(true, Ordering::Relaxed);
}

/// A copy of `body` with every placeholder set to `now_ms` (gzipped when `gzip`), or
/// `None` when the body holds no placeholder and can be sent as it is.
pub fn restamp_at(body: &[u8], now_ms: i64, gzip: bool) -> Option<Arc<Vec<u8>>> {
    if !IN_USE.load(Ordering::Relaxed) {
        return None;
    }
    // The value's position inside the placeholder: after `,"sentAt":`.
    const AT: usize = 10;
    let finder = memchr::memmem::Finder::new(SENT_AT_PLACEHOLDER);
    let mut hits = finder.find_iter(body).peekable();
    hits.peek()?;
    let mut stamp = Vec::with_capacity(26);
    timestamp::write_iso_millis(&mut stamp, now_ms.max(0));
    let mut out = body.to_vec();
    for at in hits {
        out[at + AT..at + AT + stamp.len()].copy_from_slice(&stamp);
    }
    if gzip {
        let mut z = flate2::write::GzEncoder::new(
            Vec::with_capacity(out.len() / 4 + 64),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        if z.write_all(&out).is_err() {
            return None;
        }
        out = z.finish().ok()?;
    }
    Some(Arc::new(out))
}

/// [`restamp_at`] with the current time: the sender's hook.
pub fn restamp(body: &[u8], gzip: bool) -> Option<Arc<Vec<u8>>> {
    restamp_at(body, chrono::Utc::now().timestamp_millis(), gzip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_stamped_and_the_length_kept() {
        let call = |i: u32| {
            let mut v = format!("{{\"type\":\"track\",\"i\":{i}").into_bytes();
            v.extend_from_slice(SENT_AT_PLACEHOLDER);
            v.push(b'}');
            v
        };
        let mut body = b"{\"batch\":[".to_vec();
        body.extend(call(0));
        body.push(b',');
        body.extend(call(1));
        body.extend_from_slice(b"]}");
        note_in_use();
        let out = restamp_at(&body, 1_700_000_000_123, false).unwrap();
        assert_eq!(out.len(), body.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for c in v["batch"].as_array().unwrap() {
            assert_eq!(c["sentAt"], "2023-11-14T22:13:20.123Z");
        }
        assert!(restamp_at(b"{\"batch\":[{}]}", 0, false).is_none());
        // The original keeps its placeholders for the next attempt.
        assert!(memchr::memmem::find(&body, SENT_AT_PLACEHOLDER).is_some());
    }
}
