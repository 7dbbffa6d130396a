//! One request: route it, and for a POST to an API route go through the steps the real
//! API takes, in order: fault injection, the simulated round trip, authentication, body
//! decoding and the hard cap, the size limits, JSON parsing, per-call validation, and
//! finally acceptance (counted and recorded).
//!
//! The body is always read to its end before answering, even for an early refusal, so an
//! HTTP/1.1 connection stays in step and the client never meets a reset while still
//! sending. Only a body that cannot be read to its end (over the hard cap) closes the
//! connection after the answer. A hang-up (an injected drop, a client gone mid-body) is
//! an error returned to hyper: it closes an HTTP/1.1 connection unanswered and resets an
//! HTTP/2 stream, which is what a dropped request looks like to a client of either.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::body::{self, BodyError, BodyLimits, Encoding, Received};
use super::faults::Verdict;
use super::scan::{self, CallFacts, Malformed};
use super::schema;
use super::stats::{bump, State};
use super::validate::{self, CallType, Route};
use super::{lock, Scratch, Shared};

/// Floor for the hard cap, so a small configured limit still lets the receiver read
/// (and report) a moderately oversized body instead of refusing it outright.
const MIN_HARD_CAP: u64 = 16 * 1024 * 1024;
/// The hard cap is this many times the request limit (for gzip: decompressed).
const HARD_CAP_FACTOR: u64 = 8;

/// What the API answers a request it took: an empty object.
const OK_BODY: &[u8] = b"{}";

/// The connection is to be dropped (HTTP/1.1) or the stream reset (HTTP/2), unanswered.
#[derive(Debug, thiserror::Error)]
#[error("request dropped without an answer")]
pub(crate) struct Hangup;

/// The response type of every route.
pub(crate) type Answer = Response<Full<Bytes>>;

/// Answers one request.
pub(crate) async fn serve(shared: &Shared, req: Request<Incoming>) -> Result<Answer, Hangup> {
    let version = req.version();
    let route = Route::from_path(req.uri().path());
    let wants_close = wants_close(version, req.headers());
    match (req.method(), route, req.uri().path()) {
        (&Method::POST, Some(route), _) => post(shared, req, route).await,
        (&Method::GET, _, "/health") => {
            let mut r = answer(version, 200, Bytes::from_static(b"ok"), wants_close);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        (&Method::GET, _, "/stats") => {
            let stats = lock(&shared.state).stats.clone();
            let body =
                serde_json::to_vec(&stats).unwrap_or_else(|_| error_body("cannot serialise stats"));
            Ok(answer(version, 200, body.into(), wants_close))
        }
        _ => Ok(answer(
            version,
            404,
            error_body("not found").into(),
            wants_close,
        )),
    }
}

/// Whether an HTTP/1 client asked to close after this request (HTTP/1.0 closes unless
/// it asks to keep alive).
fn wants_close(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => !has("keep-alive"),
        Version::HTTP_11 => has("close"),
        _ => false,
    }
}

/// A response with a JSON (or given) body. On HTTP/1 it says whether the connection
/// stays open (hyper closes it after a `Connection: close`); HTTP/2 has no such header.
fn answer(version: Version, status: u16, body: Bytes, close: bool) -> Answer {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if matches!(version, Version::HTTP_10 | Version::HTTP_11) {
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static(if close { "close" } else { "keep-alive" }),
        );
    }
    r
}

/// The parts of a request head a POST acts on.
struct Head<'h> {
    content_length: Option<u64>,
    encoding: Encoding,
    authorization: Option<&'h str>,
    strict: bool,
}

impl<'h> Head<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        Head {
            content_length: text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
            encoding: Encoding::of(text(header::CONTENT_ENCODING)),
            authorization: text(header::AUTHORIZATION),
            // The spec: "When set to `1`, enables strict validation ... When not set or
            // set to any other value, the API operates in permissive mode".
            strict: headers
                .get("x-strict-mode")
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"1"),
        }
    }
}

async fn post(shared: &Shared, req: Request<Incoming>, route: Route) -> Result<Answer, Hangup> {
    let version = req.version();
    let (parts, incoming) = req.into_parts();
    let wants_close = wants_close(version, &parts.headers);
    let head = Head::of(&parts.headers);
    let (index, verdict) = arrive(shared, route, version);
    // Settled however this ends, a client that hangs up mid-wait included.
    let _in_flight = InFlight(shared);
    let hard_cap = (shared.limits.max_request_bytes as u64)
        .saturating_mul(HARD_CAP_FACTOR)
        .max(MIN_HARD_CAP);
    let mut scratch = shared.scratch.take();
    let limits = BodyLimits {
        keep: shared.limits.max_request_bytes,
        cap: hard_cap,
    };
    // Refused before a byte is read: hyper then never sends `100 Continue`, so a client
    // that asked first does not send a body over the cap to a closed door.
    let (body, wire) = if head.content_length.is_some_and(|n| n > hard_cap) {
        drop(incoming);
        (Err(BodyError::TooLarge), 0)
    } else {
        body::read(
            incoming,
            head.encoding,
            limits,
            shared.bandwidth.as_ref(),
            &mut scratch.body,
        )
        .await
    };
    let mut delta = Delta {
        wire_bytes: wire,
        ..Delta::default()
    };
    if body == Err(BodyError::Io) {
        // The client is gone; a drop it was going to get anyway still counts.
        delta.dropped = u64::from(verdict == Verdict::Drop);
        settle(shared, &delta, &[]);
        shared
            .scratch
            .put(scratch, 2 * shared.limits.max_request_bytes.max(1 << 20));
        return Err(Hangup);
    }
    let mut reply = match faults(verdict, &mut delta) {
        Err(Hangup) => None,
        Ok(Some(reply)) => Some(reply),
        Ok(None) => {
            let wait = shared.faults.latency(index);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            scratch.ids.clear();
            Some(checks(
                shared,
                &mut scratch,
                &head,
                route,
                body,
                hard_cap,
                &mut delta,
            ))
        }
    };
    if let Some(r) = &mut reply {
        // A body not read to its end leaves unread bytes on the wire, whatever the answer.
        r.close |= body == Err(BodyError::TooLarge);
    }
    delta.status = reply.as_ref().map(|r| r.status);
    settle(shared, &delta, &scratch.ids);
    shared
        .scratch
        .put(scratch, 2 * shared.limits.max_request_bytes.max(1 << 20));
    let Some(r) = reply else {
        return Err(Hangup);
    };
    let mut response = answer(version, r.status, r.body, wants_close || r.close);
    if let Some(secs) = r.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(response)
}

/// One POST being handled, for `max_in_flight`: counted by [`arrive`], given back on drop.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// What one POST changes in the stats, applied under one lock at the end.
#[derive(Default)]
struct Delta {
    status: Option<u16>,
    request_bytes: u64,
    wire_bytes: u64,
    largest_call: u64,
    request_too_large: u64,
    call_too_large: u64,
    invalid_calls: u64,
    invalid_requests: u64,
    calls_dropped: u64,
    malformed: u64,
    auth_failures: u64,
    failures: u64,
    throttled: u64,
    dropped: u64,
    injected_invalid: u64,
    rps_limited: u64,
    /// Accepted calls by [`CallType::index`]; their messageId hashes are in `Scratch::ids`.
    accepted: Option<[u64; 6]>,
}

/// The answer to a POST.
struct Reply {
    status: u16,
    body: Bytes,
    retry_after: Option<u64>,
    /// Close the connection after answering (HTTP/1).
    close: bool,
}

impl Reply {
    fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            body: body.into(),
            retry_after: None,
            close: false,
        }
    }
    fn ok() -> Self {
        Reply::new(200, Bytes::from_static(OK_BODY))
    }
    fn error(status: u16, message: &str) -> Self {
        Reply::new(status, error_body(message))
    }
}

/// Counts the arrival and decides its faults, under the lock (the `max_rps` window is
/// shared by every connection). Returns the arrival index too.
fn arrive(shared: &Shared, route: Route, version: Version) -> (u64, Verdict) {
    let now = Instant::now();
    let mut guard = lock(&shared.state);
    let st: &mut State = &mut guard;
    let index = st.stats.requests;
    st.stats.requests += 1;
    bump(&mut st.stats.requests_by_path, route.path(), 1);
    bump(&mut st.stats.requests_by_version, version_key(version), 1);
    let in_last_second = st.arrivals.push(now) as u64;
    st.stats.max_requests_in_any_1s = st.stats.max_requests_in_any_1s.max(in_last_second);
    st.in_flight += 1;
    st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
    let first = *st.first_arrival.get_or_insert(now);
    st.stats.arrival_span_secs = now.duration_since(first).as_secs_f64();
    (index, shared.faults.decide(index, &mut st.admitted, now))
}

/// The `requests_by_version` key.
fn version_key(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "other",
    }
}

/// Step 1, the injected faults: a hang-up, an answer, or `None` to go on.
fn faults(verdict: Verdict, delta: &mut Delta) -> Result<Option<Reply>, Hangup> {
    match verdict {
        Verdict::Pass => Ok(None),
        Verdict::Drop => {
            delta.dropped = 1;
            Err(Hangup)
        }
        Verdict::Throttle { retry_after_secs } | Verdict::RpsLimited { retry_after_secs } => {
            if matches!(verdict, Verdict::Throttle { .. }) {
                delta.throttled = 1;
            } else {
                delta.rps_limited = 1;
            }
            let mut r = Reply::error(
                429,
                "rate limited; retry after the Retry-After header's seconds",
            );
            r.retry_after = Some(retry_after_secs);
            Ok(Some(r))
        }
        Verdict::Fail { status } => {
            delta.failures = 1;
            Ok(Some(Reply::error(status, "injected failure")))
        }
    }
}

/// Steps 2 on, after the faults and the simulated round trip.
fn checks(
    shared: &Shared,
    scratch: &mut Scratch,
    head: &Head<'_>,
    route: Route,
    body: Result<Received, BodyError>,
    hard_cap: u64,
    delta: &mut Delta,
) -> Reply {
    // 2. Auth.
    if let Some(expected) = &shared.auth {
        if !authorized(head.authorization, expected) {
            delta.auth_failures = 1;
            return Reply::error(
                401,
                "missing or wrong Authorization: send HTTP Basic auth with the API key as the user name and an empty password",
            );
        }
    }

    // 3. Body.
    let size = match body {
        Ok(r) => r.size,
        Err(BodyError::TooLarge) => {
            delta.request_too_large = 1;
            return Reply::error(
                413,
                &format!("request body over the receiver's hard cap of {hard_cap} bytes"),
            );
        }
        Err(BodyError::BadGzip) => {
            delta.malformed = 1;
            return Reply::error(
                400,
                "Content-Encoding is gzip but the body is not valid gzip",
            );
        }
        // Answered before the checks (a hang-up); here only for completeness.
        Err(BodyError::Io) => return Reply::error(400, "the body ended early"),
    };
    if head.encoding == Encoding::Unsupported {
        delta.malformed = 1;
        return Reply::error(415, "unsupported Content-Encoding; send gzip or none");
    }
    delta.request_bytes = size;

    // 4. The request limit.
    let strict = head.strict;
    let max_request = shared.limits.max_request_bytes as u64;
    if size > max_request {
        delta.request_too_large = 1;
        return if strict {
            Reply::error(
                400,
                &format!("request body is {size} bytes, over the {max_request}-byte request limit"),
            )
        } else {
            // What the real API does: a 200, and the request does not go through.
            Reply::ok()
        };
    }

    // 5. Parse, and look at every call once, in one pass (`scan`): its size for the
    // call limit, its verdict (`schema`) for validation.
    let Scratch {
        body: raw,
        lines,
        ids,
        accepted,
        keys,
    } = scratch;
    let Ok(text) = simdutf8::basic::from_utf8(raw) else {
        delta.malformed = 1;
        return Reply::error(400, "body is not UTF-8");
    };
    accepted.clear();
    ids.clear();
    let mut tally = Tally {
        shared,
        route,
        base: text.as_ptr() as usize,
        max_call: shared.limits.max_call_bytes as u64,
        count: 0,
        largest: 0,
        too_large: 0,
        first_over: None,
        injected_invalid: 0,
        invalid: Vec::new(),
        accepted,
        ids,
    };
    let scanned = match route {
        Route::Batch => scan::batch(text, keys, &mut |raw, f| tally.call(raw, f))
            .map(|b| schema::body(&b).err()),
        Route::Single(_) => {
            let mut f = CallFacts::default();
            scan::single(text, keys, &mut f).map(|raw| {
                tally.call(raw, &f);
                None
            })
        }
    };
    let request_error = match scanned {
        Ok(e) => e,
        Err(Malformed) => {
            delta.malformed = 1;
            // The scan accepts what serde_json accepts; serde says where it broke.
            let why = serde_json::from_str::<serde::de::IgnoredAny>(text)
                .err()
                .map_or_else(|| "nested too deep".to_string(), |e| e.to_string());
            return Reply::error(400, &format!("body is not JSON: {why}"));
        }
    };
    let Tally {
        count,
        largest,
        too_large,
        first_over,
        injected_invalid,
        invalid,
        ..
    } = tally;

    // The call limit: checked on the raw bytes as received, for every call, before
    // any of them is accepted.
    delta.largest_call = largest;
    delta.call_too_large = too_large;
    if let Some((index, len)) = first_over {
        let max_call = shared.limits.max_call_bytes as u64;
        return if strict {
            let label = call_label(route, index);
            Reply::error(
                400,
                &format!("{label} is {len} bytes, over the {max_call}-byte call limit"),
            )
        } else {
            delta.calls_dropped = count as u64;
            Reply::ok()
        };
    }

    // Validation: what the body says around the calls, then each call.
    delta.injected_invalid = injected_invalid;
    delta.invalid_calls = invalid.len() as u64;
    if request_error.is_some() {
        delta.invalid_requests = 1;
        if !strict {
            // What the real API does without strict mode: 200, and nothing goes through.
            delta.calls_dropped = count as u64;
            return Reply::ok();
        }
    }
    if strict && (request_error.is_some() || !invalid.is_empty()) {
        let messages = request_error
            .iter()
            .map(|why| why.to_string())
            .chain(invalid.iter().map(|e| e.describe(route)));
        return Reply::new(400, errors_body(messages, invalid.len() + 1));
    }
    delta.calls_dropped = invalid.len() as u64;

    // 6. Accept. The record is written before anything is counted, so a failed write
    // is answered 500 (the client retries) and the stats never claim unrecorded calls.
    let mut by_type = [0u64; 6];
    lines.clear();
    for call in accepted.iter() {
        by_type[call.ty.index()] += 1;
        if shared.record.is_some() {
            let implied = call.implied.then_some(call.ty);
            let raw = &text[call.at as usize..(call.at + call.len) as usize];
            validate::record_line(raw, implied, lines);
        }
    }
    if let Some(rec) = &shared.record {
        if !lines.is_empty() {
            let mut file = lock(&rec.file);
            // One write per request, so lines from concurrent requests never interleave
            // and a killed process leaves only whole lines behind.
            if let Err(e) = file.write_all(lines).and_then(|()| file.flush()) {
                drop(file);
                if !rec.warned.swap(true, Ordering::Relaxed) {
                    // Not `eprintln!`: a closed stderr must not take the receiver down.
                    let _ = writeln!(
                        std::io::stderr(),
                        "cdp-backfill serve: cannot write the record file {}: {e}; answering 500",
                        rec.path.display()
                    );
                }
                ids.clear();
                return Reply::error(500, "cannot write the record file");
            }
        }
    }
    delta.accepted = Some(by_type);
    Reply::ok()
}

/// How an answer names a call: its place in the batch, or the one call of the body.
fn call_label(route: Route, index: usize) -> String {
    match route {
        Route::Batch => format!("batch[{index}]"),
        Route::Single(_) => "the call".into(),
    }
}

/// A valid call, as acceptance needs it: where it sits in the body.
pub(crate) struct Accepted {
    at: u32,
    len: u32,
    ty: CallType,
    /// The route implied the type (the call has no `type` of its own).
    implied: bool,
}

/// A refused call, kept only as long as its request is answered.
struct InvalidEntry<'a> {
    index: usize,
    message_id: Option<Cow<'a, str>>,
    reason: Cow<'static, str>,
}

impl InvalidEntry<'_> {
    /// One of the answer's `meta.errors`.
    fn describe(&self, route: Route) -> String {
        let label = call_label(route, self.index);
        match &self.message_id {
            Some(id) => format!("{label} (messageId {id:?}): {}", self.reason),
            None => format!("{label}: {}", self.reason),
        }
    }
}

/// Every call of one request, looked at once, in order: its size for the call limit,
/// its verdict for validation, and for a valid call what acceptance needs (the hash
/// of its messageId goes to `ids`).
struct Tally<'a, 's> {
    shared: &'s Shared,
    route: Route,
    /// The body's address, to keep accepted calls as offsets.
    base: usize,
    max_call: u64,
    count: usize,
    largest: u64,
    too_large: u64,
    /// The first call over the limit: its index and size.
    first_over: Option<(usize, u64)>,
    injected_invalid: u64,
    invalid: Vec<InvalidEntry<'a>>,
    accepted: &'s mut Vec<Accepted>,
    ids: &'s mut Vec<u128>,
}

impl<'a> Tally<'a, '_> {
    fn call(&mut self, raw: &'a str, facts: &CallFacts<'a>) {
        let index = self.count;
        self.count += 1;
        let len = raw.len() as u64;
        self.largest = self.largest.max(len);
        if len > self.max_call {
            self.too_large += 1;
            self.first_over.get_or_insert((index, len));
        }
        match schema::call(self.route, facts) {
            Ok(call) => {
                let key = call
                    .message_id
                    .as_deref()
                    .map_or(raw.as_bytes(), str::as_bytes);
                if self.shared.faults.injects_invalid(key) {
                    self.injected_invalid += 1;
                    self.invalid.push(InvalidEntry {
                        index,
                        message_id: call.message_id,
                        reason: "rejected by invalid_rate fault injection".into(),
                    });
                } else {
                    if let Some(id) = call.message_id.as_deref() {
                        self.ids.push(xxhash_rust::xxh3::xxh3_128(id.as_bytes()));
                    }
                    self.accepted.push(Accepted {
                        at: (raw.as_ptr() as usize - self.base) as u32,
                        len: raw.len() as u32,
                        ty: call.ty,
                        implied: call.type_implied,
                    });
                }
            }
            Err(bad) => self.invalid.push(InvalidEntry {
                index,
                message_id: bad.message_id,
                reason: bad.reason,
            }),
        }
    }
}

/// Applies one request's changes to the shared stats.
fn settle(shared: &Shared, d: &Delta, ids: &[u128]) {
    let mut guard = lock(&shared.state);
    let st: &mut State = &mut guard;
    let s = &mut st.stats;
    if let Some(status) = d.status {
        bump(&mut s.responses_by_status, status_key(status), 1);
    }
    s.wire_bytes += d.wire_bytes;
    s.largest_request_bytes = s.largest_request_bytes.max(d.request_bytes);
    s.largest_call_bytes = s.largest_call_bytes.max(d.largest_call);
    let v = &mut s.violations;
    v.request_too_large += d.request_too_large;
    v.call_too_large += d.call_too_large;
    v.invalid_calls += d.invalid_calls;
    v.invalid_requests += d.invalid_requests;
    s.calls_dropped += d.calls_dropped;
    v.malformed_bodies += d.malformed;
    v.auth_failures += d.auth_failures;
    let inj = &mut s.injected;
    inj.failures += d.failures;
    inj.throttled += d.throttled;
    inj.dropped += d.dropped;
    inj.invalid += d.injected_invalid;
    inj.rps_limited += d.rps_limited;
    if let Some(by_type) = d.accepted {
        if by_type.iter().any(|&n| n > 0) {
            s.bytes += d.request_bytes;
        }
        for t in CallType::ALL {
            let n = by_type[t.index()];
            s.calls_accepted += n;
            bump(&mut s.calls_by_type, t.name(), n);
        }
        s.duplicate_message_ids += st.seen_ids.insert_all(ids);
        s.unique_message_ids = st.seen_ids.len() as u64;
    }
}

fn status_key(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => "other",
    }
}

/// Whether `given` (an `Authorization` value) is Basic auth with the credentials of
/// `expected` (`Basic base64("KEY:")`). The scheme is matched without regard to case,
/// and may be followed by several spaces (RFC 7235 §2.1); the credentials are compared
/// in constant time.
fn authorized(given: Option<&str>, expected: &str) -> bool {
    let Some((scheme, token)) = given.map(str::trim).and_then(|g| g.split_once(' ')) else {
        return false;
    };
    let want = expected.split_once(' ').map_or(expected, |(_, t)| t);
    scheme.eq_ignore_ascii_case("basic")
        && same_secret(token.trim_start().as_bytes(), want.as_bytes())
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's error shape, `{"meta":{"errors":["..."]}}`, with at most
/// [`MAX_ERRORS`] messages (and a last one saying how many more there were).
fn errors_body(messages: impl Iterator<Item = String>, total: usize) -> Vec<u8> {
    let mut errors: Vec<String> = messages.take(MAX_ERRORS).collect();
    if total > MAX_ERRORS && errors.len() == MAX_ERRORS {
        errors.push("... and more (only the first 100 are listed)".into());
    }
    let body = serde_json::json!({ "meta": { "errors": errors } });
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

/// Messages listed in one answer at most: a batch of a thousand bad calls says enough
/// with its first hundred.
const MAX_ERRORS: usize = 100;

/// An answer's body with one error message.
pub(crate) fn error_body(message: &str) -> Vec<u8> {
    errors_body(std::iter::once(message.to_string()), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"Basic abc", b"Basic abc"));
        assert!(!same_secret(b"Basic abd", b"Basic abc"));
        assert!(!same_secret(b"Basic ab", b"Basic abc"));
        assert!(!same_secret(b"", b"Basic abc"));
    }

    #[test]
    fn basic_auth_scheme_is_case_blind_and_the_token_exact() {
        let expected = "Basic a2V5Og==";
        for ok in [
            "Basic a2V5Og==",
            "basic a2V5Og==",
            "BASIC   a2V5Og==",
            " bAsIc a2V5Og== ",
        ] {
            assert!(authorized(Some(ok), expected), "{ok:?}");
        }
        for bad in [
            "Basic a2V5Og=",
            "Bearer a2V5Og==",
            "Basica2V5Og==",
            "Basic",
            "",
            "Basic a2V5OG==",
        ] {
            assert!(!authorized(Some(bad), expected), "{bad:?}");
        }
        assert!(!authorized(None, expected));
    }

    #[test]
    fn error_bodies_are_the_apis_shape_even_with_quotes() {
        let b = error_body("bad \"thing\"\n");
        let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"meta": {"errors": ["bad \"thing\"\n"]}})
        );
        let many = errors_body((0..500).map(|i| i.to_string()), 500);
        let v: serde_json::Value = serde_json::from_slice(&many).expect("JSON");
        let errors = v["meta"]["errors"].as_array().expect("a list");
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert!(errors[MAX_ERRORS].as_str().unwrap_or("").contains("more"));
        assert_eq!(OK_BODY, b"{}");
    }

    #[test]
    fn every_status_we_send_has_its_own_key() {
        for s in [200, 400, 401, 413, 415, 429, 500, 502, 503] {
            assert_eq!(status_key(s), s.to_string());
        }
    }
}
