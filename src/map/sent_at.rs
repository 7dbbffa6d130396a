//! `--sent-at now`: `sentAt` stamped with the time of each attempt, bytes kept exact.
//!
//! The encoder ends every call with a fixed-width placeholder,
//! `,"sentAt":"0000-00-00T00:00:00.000Z"`, so the packer's byte-exact sizes already count
//! the final value. Before each attempt the sender calls [`restamp`], which copies the
//! body with every placeholder replaced by the current time (same width: limits hold).
//! The queued body keeps its placeholders, so a retry gets a fresh time too.
//!
//! Placeholders are found where they were written, never by searching the body: each
//! call's end is known (`Request::call_ends`, kept by the packer and by strict mode's
//! split), and the encoder writes the placeholder as the call's last member, just
//! before its closing `}`. The same bytes inside user data (a JSON column holding
//! `"sentAt":"0000-00-00T00:00:00.000Z"`) are never at such a place, so they are sent as
//! they were read. A call whose last bytes are not the placeholder is left alone.

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

/// A copy of `body` with the placeholder of each call set to `now_ms`, or `None` when
/// the body holds no placeholder and can be sent as it is. The sender compresses the
/// copy (with `--gzip`) as it does any body.
/// `call_ends`: where each call of the body ends (one past its closing `}`).
pub fn restamp_at(body: &[u8], call_ends: &[u32], now_ms: i64) -> Option<Arc<Vec<u8>>> {
    if !IN_USE.load(Ordering::Relaxed) {
        return None;
    }
    // The value's position inside the placeholder: after `,"sentAt":`.
    const AT: usize = 10;
    let n = SENT_AT_PLACEHOLDER.len();
    let placeholder_of = |end: u32| {
        let end = end as usize;
        let at = end.checked_sub(1 + n)?;
        (body.get(at..end - 1) == Some(SENT_AT_PLACEHOLDER)).then_some(at)
    };
    let mut stamp = Vec::with_capacity(26);
    // The clock reads years 0000-9999 (a clock past them is no time to send at).
    if timestamp::write_iso_millis(&mut stamp, now_ms.clamp(0, timestamp::MAX_MS)).is_err() {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    for &end in call_ends {
        if let Some(at) = placeholder_of(end) {
            let out = out.get_or_insert_with(|| body.to_vec());
            out[at + AT..at + AT + stamp.len()].copy_from_slice(&stamp);
        }
    }
    out.map(Arc::new)
}

/// [`restamp_at`] with the current time: the sender's hook.
pub fn restamp(body: &[u8], call_ends: &[u32]) -> Option<Arc<Vec<u8>>> {
    restamp_at(body, call_ends, chrono::Utc::now().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch body of `calls` (each a call's JSON before its sentAt) and its call ends.
    fn body(calls: &[String]) -> (Vec<u8>, Vec<u32>) {
        let mut body = b"{\"batch\":[".to_vec();
        let mut ends = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(c.as_bytes());
            body.extend_from_slice(SENT_AT_PLACEHOLDER);
            body.push(b'}');
            ends.push(body.len() as u32);
        }
        body.extend_from_slice(b"]}");
        (body, ends)
    }

    #[test]
    fn every_placeholder_is_stamped_and_the_length_kept() {
        let (body, ends) = body(&[
            "{\"type\":\"track\",\"i\":0".to_string(),
            "{\"type\":\"track\",\"i\":1".to_string(),
        ]);
        note_in_use();
        let out = restamp_at(&body, &ends, 1_700_000_000_123).unwrap();
        assert_eq!(out.len(), body.len());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for c in v["batch"].as_array().unwrap() {
            assert_eq!(c["sentAt"], "2023-11-14T22:13:20.123Z");
        }
        assert!(restamp_at(b"{\"batch\":[{}]}", &[12], 0).is_none());
        // The original keeps its placeholders for the next attempt.
        assert!(memchr::memmem::find(&body, SENT_AT_PLACEHOLDER).is_some());
    }

    #[test]
    fn the_placeholder_inside_user_data_is_sent_as_it_was_read() {
        // A JSON column holding the placeholder's very bytes, as a property, in the
        // middle of a call and as the last property before the call's own sentAt.
        let user = r#"{"type":"track","properties":{"raw":{"a":1,"sentAt":"0000-00-00T00:00:00.000Z"},"sentAt":"0000-00-00T00:00:00.000Z"}"#;
        let (body, ends) = body(&[user.to_string(), user.to_string()]);
        assert_eq!(
            memchr::memmem::find_iter(&body, SENT_AT_PLACEHOLDER).count(),
            6,
            "the user's bytes look exactly like placeholders"
        );
        note_in_use();
        let out = restamp_at(&body, &ends, 1_700_000_000_123).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for c in v["batch"].as_array().unwrap() {
            assert_eq!(c["sentAt"], "2023-11-14T22:13:20.123Z");
            assert_eq!(c["properties"]["sentAt"], "0000-00-00T00:00:00.000Z");
            assert_eq!(c["properties"]["raw"]["sentAt"], "0000-00-00T00:00:00.000Z");
        }
        // Ends that do not point at a placeholder change nothing.
        assert!(restamp_at(&body, &[30, 31], 1).is_none());
    }
}
