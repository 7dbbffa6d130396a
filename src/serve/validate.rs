//! Parsing request bodies into calls and checking each call the way the API does.
//!
//! This runs beside the benchmarked engine, so it never builds a `serde_json::Value`:
//! the batch is split into borrowed raw calls in one pass, and each call is read into a
//! small borrowed struct that skips every field the checks do not need. A call's raw
//! bytes are kept exactly as received, for the size limit and for the record file.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The call types the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallType {
    pub(crate) const ALL: [CallType; 6] = [
        CallType::Identify,
        CallType::Track,
        CallType::Page,
        CallType::Screen,
        CallType::Group,
        CallType::Alias,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            CallType::Identify => "identify",
            CallType::Track => "track",
            CallType::Page => "page",
            CallType::Screen => "screen",
            CallType::Group => "group",
            CallType::Alias => "alias",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<CallType> {
        CallType::ALL.into_iter().find(|t| t.name() == s)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Where a POST went: the batch endpoint or one of the single-call endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Batch,
    Single(CallType),
}

impl Route {
    /// Maps a request path (without query) to an API route.
    pub(crate) fn from_path(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest == "batch" {
            Some(Route::Batch)
        } else {
            CallType::from_name(rest).map(Route::Single)
        }
    }

    /// The canonical path, used as the `requests_by_path` key so a client cannot grow
    /// that map with made-up paths.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Batch => "/v1/batch",
            Route::Single(CallType::Identify) => "/v1/identify",
            Route::Single(CallType::Track) => "/v1/track",
            Route::Single(CallType::Page) => "/v1/page",
            Route::Single(CallType::Screen) => "/v1/screen",
            Route::Single(CallType::Group) => "/v1/group",
            Route::Single(CallType::Alias) => "/v1/alias",
        }
    }
}

/// A batch body. Other top-level keys (`context`, `integrations`, `sentAt`, ...) are
/// skipped: they apply to every call and nothing here validates them.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// Splits a body into its raw calls. An error means the body is not the JSON the route
/// expects at all (a malformed body, answered 400 whatever the mode).
pub(crate) fn split_calls(route: Route, body: &str) -> Result<Vec<&RawValue>, serde_json::Error> {
    match route {
        Route::Batch => serde_json::from_str::<BatchBody<'_>>(body).map(|b| b.batch),
        Route::Single(_) => serde_json::from_str::<&RawValue>(body).map(|c| vec![c]),
    }
}

/// The few fields the checks read. `Cow` borrows unless the string has escapes.
/// Filled by serde here, or by the one-pass scan (`scan.rs`) for plain calls.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CallFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(rename = "groupId", borrow, default)]
    group_id: Option<Cow<'a, str>>,
    #[serde(rename = "previousId", borrow, default)]
    previous_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

impl<'a> CallFields<'a> {
    /// The field behind bit `bit` of the scan's seen-mask (`scan::wanted`).
    pub(crate) fn slot(&mut self, bit: u8) -> &mut Option<Cow<'a, str>> {
        match bit {
            0 => &mut self.kind,
            1 => &mut self.message_id,
            2 => &mut self.user_id,
            3 => &mut self.anonymous_id,
            4 => &mut self.event,
            5 => &mut self.group_id,
            6 => &mut self.previous_id,
            _ => &mut self.timestamp,
        }
    }
}

/// A call that passed the checks.
#[derive(Debug)]
pub(crate) struct ValidCall<'a> {
    pub ty: CallType,
    pub message_id: Option<Cow<'a, str>>,
    /// The body had no `type`; the single-call route implied it.
    pub type_implied: bool,
}

/// A call that failed: the reason, and its messageId when it could be read.
#[derive(Debug)]
pub(crate) struct InvalidCall<'a> {
    pub message_id: Option<Cow<'a, str>>,
    pub reason: Cow<'static, str>,
}

fn present(v: &Option<Cow<'_, str>>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// Checks one raw call sent to `route`, reading its fields with serde.
pub(crate) fn check_call(route: Route, text: &str) -> Result<ValidCall<'_>, InvalidCall<'_>> {
    if !text.starts_with('{') {
        return Err(InvalidCall {
            message_id: None,
            reason: "call is not a JSON object".into(),
        });
    }
    let f: CallFields<'_> = serde_json::from_str(text).map_err(|e| InvalidCall {
        message_id: None,
        // serde's message names the field and the type it wanted ("invalid type:
        // integer, expected a string"): exactly what the sender needs to fix.
        reason: format!("call fields are malformed: {e}").into(),
    })?;
    check_fields(route, &f)
}

/// Checks a call's fields, however they were read. By reference, so the scan's fields
/// are not moved around (they are ~200 bytes) on their way here.
pub(crate) fn check_fields<'a>(
    route: Route,
    f: &CallFields<'a>,
) -> Result<ValidCall<'a>, InvalidCall<'a>> {
    let fail = |reason: Cow<'static, str>, message_id: Option<Cow<'a, str>>| {
        Err(InvalidCall { message_id, reason })
    };

    let (ty, type_implied) = match (route, f.kind.as_deref()) {
        (Route::Batch, None) => return fail("call has no type".into(), f.message_id.clone()),
        (Route::Batch, Some(name)) => match CallType::from_name(name) {
            // The vendor's batch schema lists identify, track, page, screen and group
            // only; alias calls must go to /v1/alias.
            Some(CallType::Alias) => {
                return fail(
                    "alias calls are not allowed in a batch; send them to /v1/alias".into(),
                    f.message_id.clone(),
                )
            }
            Some(t) => (t, false),
            None => {
                return fail(
                    format!("unknown call type {name:?}").into(),
                    f.message_id.clone(),
                )
            }
        },
        (Route::Single(t), None) => (t, true),
        (Route::Single(t), Some(name)) if name == t.name() => (t, false),
        (Route::Single(t), Some(name)) => {
            return fail(
                format!("call type {name:?} sent to {}", Route::Single(t).path()).into(),
                f.message_id.clone(),
            )
        }
    };

    let has_identity = present(&f.user_id) || present(&f.anonymous_id);
    let problem: Option<&'static str> = match ty {
        CallType::Identify if !has_identity => Some("identify call needs userId or anonymousId"),
        CallType::Track if !has_identity => Some("track call needs userId or anonymousId"),
        CallType::Track if !present(&f.event) => Some("track call needs event"),
        CallType::Page if !has_identity => Some("page call needs userId or anonymousId"),
        CallType::Screen if !has_identity => Some("screen call needs userId or anonymousId"),
        CallType::Group if !present(&f.group_id) => Some("group call needs groupId"),
        CallType::Alias if !present(&f.previous_id) || !present(&f.user_id) => {
            Some("alias call needs previousId and userId")
        }
        _ => None,
    };
    if let Some(p) = problem {
        return fail(p.into(), f.message_id.clone());
    }
    if let Some(ts) = f.timestamp.as_deref() {
        if !plain_utc_timestamp(ts) && chrono::DateTime::parse_from_rfc3339(ts).is_err() {
            return fail(
                format!("timestamp {ts:?} is not an RFC 3339 date-time").into(),
                f.message_id.clone(),
            );
        }
    }
    Ok(ValidCall {
        ty,
        message_id: f.message_id.clone(),
        type_implied,
    })
}

/// Appends `raw` to `out` as one NDJSON line. Usually the bytes exactly as received;
/// a call with a line break in it (only possible as whitespace between tokens, since
/// JSON strings escape them) is compacted so the line stays one line, and a call to a
/// single-call route without a `type` gets one, so every recorded line says what it is.
pub(crate) fn record_line(raw: &str, implied: Option<CallType>, out: &mut Vec<u8>) {
    let bytes = raw.as_bytes();
    let multiline = memchr::memchr2(b'\n', b'\r', bytes).is_some();
    match implied {
        Some(t) => {
            let mut compact = Vec::new();
            let body: &[u8] = if multiline {
                compact_json(bytes, &mut compact);
                &compact
            } else {
                bytes
            };
            // `body` is an object (checked before a call is accepted), so it starts
            // with '{'; after it either a member or, for `{}`, the closing brace.
            let inner = body.get(1..).unwrap_or_default();
            let inner_trimmed = inner.trim_ascii_start();
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(t.name().as_bytes());
            out.push(b'"');
            if !inner_trimmed.starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(inner);
        }
        None if multiline => compact_json(bytes, out),
        None => out.extend_from_slice(bytes),
    }
    out.push(b'\n');
}

/// Copies valid JSON without the whitespace between tokens.
fn compact_json(json: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
}

/// True for the common shape `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with a real calendar
/// date, hour < 24, minute < 60, second < 60 and 1 to 9 fraction digits: a strict subset
/// of what `chrono::DateTime::parse_from_rfc3339` accepts, checked without its general
/// parser (it was ~5% of the receiver's time). False means "ask chrono", not "invalid".
fn plain_utc_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let rest = &b[19..];
    let zone = match rest.strip_prefix(b".") {
        Some(frac) => {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return false;
            }
            &frac[n..]
        }
        None => rest,
    };
    zone == b"Z"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(route: Route, json: &str) -> Result<CallType, String> {
        let raw: &RawValue = serde_json::from_str(json).expect("test JSON is valid");
        check_call(route, raw.get())
            .map(|v| v.ty)
            .map_err(|e| e.reason.into_owned())
    }

    #[test]
    fn routes_map_paths_and_back() {
        assert_eq!(Route::from_path("/v1/batch"), Some(Route::Batch));
        assert_eq!(
            Route::from_path("/v1/track/"),
            Some(Route::Single(CallType::Track))
        );
        assert_eq!(Route::from_path("/v1/nope"), None);
        assert_eq!(Route::from_path("/batch"), None);
        for t in CallType::ALL {
            let r = Route::Single(t);
            assert_eq!(Route::from_path(r.path()), Some(r));
        }
    }

    #[test]
    fn batch_keeps_raw_calls_and_ignores_other_keys() {
        let body =
            r#"{"context":{"a":[1,2]},"batch":[{"type":"track"},  {"x" : 1}],"integrations":{}}"#;
        let calls = split_calls(Route::Batch, body).expect("valid batch");
        let raws: Vec<&str> = calls.iter().map(|c| c.get()).collect();
        assert_eq!(raws, vec![r#"{"type":"track"}"#, r#"{"x" : 1}"#]);
    }

    #[test]
    fn malformed_or_batchless_bodies_are_errors() {
        assert!(split_calls(Route::Batch, r#"{"batch":[{]}"#).is_err());
        assert!(split_calls(Route::Batch, r#"{"calls":[]}"#).is_err());
        assert!(split_calls(Route::Batch, "").is_err());
        assert!(split_calls(Route::Single(CallType::Track), "{").is_err());
    }

    #[test]
    fn valid_calls_pass() {
        let b = Route::Batch;
        assert_eq!(
            check(b, r#"{"type":"identify","userId":"u"}"#),
            Ok(CallType::Identify)
        );
        assert_eq!(
            check(b, r#"{"type":"track","anonymousId":"a","event":"E"}"#),
            Ok(CallType::Track)
        );
        assert_eq!(
            check(
                b,
                r#"{"type":"page","userId":"u","properties":{"deep":[{"x":null}]}}"#
            ),
            Ok(CallType::Page)
        );
        assert_eq!(
            check(b, r#"{"type":"screen","userId":"u"}"#),
            Ok(CallType::Screen)
        );
        assert_eq!(
            check(b, r#"{"type":"group","groupId":"g"}"#),
            Ok(CallType::Group)
        );
        assert_eq!(
            check(
                b,
                r#"{"type":"identify","userId":"u","timestamp":"2024-01-02T03:04:05.678Z"}"#
            ),
            Ok(CallType::Identify)
        );
        let alias = Route::Single(CallType::Alias);
        assert_eq!(
            check(alias, r#"{"previousId":"p","userId":"u"}"#),
            Ok(CallType::Alias)
        );
    }

    #[test]
    fn invalid_calls_say_why() {
        let b = Route::Batch;
        let cases = [
            (r#"{"userId":"u"}"#, "call has no type"),
            (
                r#"{"type":"alias","previousId":"p","userId":"u"}"#,
                "alias calls are not allowed",
            ),
            (r#"{"type":"bogus"}"#, "unknown call type"),
            (
                r#"{"type":"identify"}"#,
                "identify call needs userId or anonymousId",
            ),
            (
                r#"{"type":"identify","userId":""}"#,
                "identify call needs userId or anonymousId",
            ),
            (r#"{"type":"track","userId":"u"}"#, "track call needs event"),
            (
                r#"{"type":"group","userId":"u"}"#,
                "group call needs groupId",
            ),
            (
                r#"{"type":"identify","userId":"u","timestamp":"yesterday"}"#,
                "not an RFC 3339",
            ),
            (r#"{"type":"identify","userId":7}"#, "malformed"),
            (r#"[1]"#, "not a JSON object"),
        ];
        for (json, want) in cases {
            let got = check(b, json).expect_err(json);
            assert!(got.contains(want), "{json}: {got}");
        }
        let alias = Route::Single(CallType::Alias);
        assert!(check(alias, r#"{"previousId":"p"}"#).is_err());
        let id = Route::Single(CallType::Identify);
        assert!(check(id, r#"{"type":"track","userId":"u","event":"e"}"#)
            .expect_err("type mismatch")
            .contains("sent to /v1/identify"));
    }

    #[test]
    fn escaped_message_ids_are_unescaped() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"type":"identify","userId":"u","messageId":"a\"b"}"#)
                .expect("valid");
        let v = check_call(Route::Batch, raw.get()).expect("valid call");
        assert_eq!(v.message_id.as_deref(), Some("a\"b"));
    }

    #[test]
    fn plain_timestamps_are_a_subset_of_what_chrono_accepts() {
        let accepts = |ts: &str| chrono::DateTime::parse_from_rfc3339(ts).is_ok();
        // The shapes the fast path exists for.
        for ts in [
            "2023-03-06T12:21:12.000Z",
            "2020-08-16T17:15:04.250Z",
            "2020-02-29T23:59:59Z",
            "0000-01-01T00:00:00.123456789Z",
        ] {
            assert!(plain_utc_timestamp(ts), "{ts}");
            assert!(accepts(ts), "{ts}");
        }
        // Every day number of every month of a few years, leap or not.
        for year in [1900, 1999, 2000, 2023, 2024, 2100] {
            for month in 0..=13 {
                for day in 0..=32 {
                    let ts = format!("{year:04}-{month:02}-{day:02}T10:20:30Z");
                    assert_eq!(plain_utc_timestamp(&ts), accepts(&ts), "{ts}");
                }
            }
        }
        // Random edits of plain timestamps: the fast path never accepts what chrono
        // refuses (it may decline what chrono accepts, e.g. offsets).
        let alphabet = b"0123456789-:T.Zzt +x9";
        let mut fast = 0;
        for b in super::super::mutations(b"2024-02-29T23:59:59.123Z", alphabet, 50_000) {
            let ts = String::from_utf8(b).expect("ASCII");
            if plain_utc_timestamp(&ts) {
                fast += 1;
                assert!(accepts(&ts), "fast path accepted {ts:?}, chrono refuses it");
            }
        }
        assert!(fast > 1_000, "the edits should keep many plain: {fast}");
    }

    #[test]
    fn record_lines_are_raw_compact_or_typed() {
        let mut out = Vec::new();
        record_line(r#"{"a": 1}"#, None, &mut out);
        record_line("{\"a\":\n 1, \"s\":\"x y\\\"\\n\"}", None, &mut out);
        record_line(r#"{"userId":"u"}"#, Some(CallType::Identify), &mut out);
        record_line("{ }", Some(CallType::Page), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "{\"a\": 1}\n{\"a\":1,\"s\":\"x y\\\"\\n\"}\n{\"type\":\"identify\",\"userId\":\"u\"}\n{\"type\":\"page\" }\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
    }
}
