//! One connection: read a request, answer it, repeat while the client keeps it alive.
//!
//! A POST to an API route goes through the steps the real API takes, in order: fault
//! injection, authentication, body decoding and the hard cap, the size limits, JSON
//! parsing, per-call validation, and finally acceptance (counted and recorded). The
//! body is always read to its end before answering, even for an early refusal, so the
//! connection stays in step and the client never meets a reset while still sending.
//! Only a body that cannot be read to its end (over the hard cap, broken chunking)
//! closes the connection after the answer.

use std::borrow::Cow;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::faults::Verdict;
use super::http::{self, BodyError, BodyLimits, Encoding, Head, HeadError, Method, Response};
use super::scan;
use super::stats::{bump, State};
use super::validate::{self, CallFields, CallType, Route};
use super::{lock, Shared};

/// How long a connection may sit idle (or stall mid-request) before it is closed, so
/// abandoned keep-alive connections do not hold one of the connection slots forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The connection's read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Floor for the hard cap, so a small configured limit still lets the receiver read
/// (and report) a moderately oversized body instead of refusing it outright.
const MIN_HARD_CAP: u64 = 16 * 1024 * 1024;
/// The hard cap is this many times the request limit (for gzip: decompressed).
const HARD_CAP_FACTOR: u64 = 8;

const OK_BODY: &[u8] = br#"{"ok":true}"#;

/// Buffers reused across the requests of one connection.
struct Conn {
    reader: BufReader<TcpStream>,
    head: Vec<u8>,
    body: Vec<u8>,
    out: Vec<u8>,
    lines: Vec<u8>,
    ids: Vec<u128>,
}

/// Serves one accepted connection until it closes, fails, or the server stops.
pub(crate) fn serve_connection(shared: &Shared, stream: TcpStream) {
    // Responses are single writes; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    // A client that never reads its answers must not pin this thread forever.
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let mut conn = Conn {
        reader: BufReader::with_capacity(READ_BUFFER, stream),
        head: Vec::new(),
        body: Vec::new(),
        out: Vec::new(),
        lines: Vec::new(),
        ids: Vec::new(),
    };
    while !shared.stop.load(Ordering::Acquire) {
        let head = match http::read_head(&mut conn.reader, &mut conn.head) {
            Ok(Some(head)) => head,
            Ok(None) | Err(HeadError::Gone) => break,
            Err(HeadError::TooLarge) => {
                let body = error_body("request head too large");
                let _ = Response::json(431, &body, false)
                    .write_to(conn.reader.get_ref(), &mut conn.out);
                break;
            }
            Err(HeadError::Bad(why)) => {
                let body = error_body(why);
                let _ = Response::json(400, &body, false)
                    .write_to(conn.reader.get_ref(), &mut conn.out);
                break;
            }
        };
        if !handle(shared, &mut conn, head) {
            break;
        }
        // A connection that once carried a huge body should not keep that much memory
        // while it idles.
        if conn.body.capacity() > 2 * shared.limits.max_request_bytes.max(1 << 20) {
            conn.body = Vec::new();
        }
    }
    let _ = conn.reader.get_ref().shutdown(Shutdown::Both);
}

/// Answers one request; false when the connection must close.
fn handle(shared: &Shared, conn: &mut Conn, head: Head) -> bool {
    let route = Route::from_path(&head.path);
    match (head.method, route, head.path.as_str()) {
        (Method::Post, Some(route), _) => handle_post(shared, conn, &head, route),
        (Method::Get, _, "/health") => {
            let keep = head.keep_alive && !head.has_body();
            let mut r = Response::json(200, b"ok", keep);
            r.content_type = "text/plain";
            r.write_to(conn.reader.get_ref(), &mut conn.out).is_ok() && keep
        }
        (Method::Get, _, "/stats") => {
            let keep = head.keep_alive && !head.has_body();
            let stats = lock(&shared.state).stats.clone();
            let body =
                serde_json::to_vec(&stats).unwrap_or_else(|_| error_body("cannot serialise stats"));
            Response::json(200, &body, keep)
                .write_to(conn.reader.get_ref(), &mut conn.out)
                .is_ok()
                && keep
        }
        _ => {
            // A body we do not route is not read, so the connection cannot go on.
            let keep = head.keep_alive && !head.has_body();
            let body = error_body("not found");
            Response::json(404, &body, keep)
                .write_to(conn.reader.get_ref(), &mut conn.out)
                .is_ok()
                && keep
        }
    }
}

/// What one POST changes in the stats, applied under one lock at the end.
#[derive(Default)]
struct Delta {
    status: Option<u16>,
    request_bytes: u64,
    largest_call: u64,
    request_too_large: u64,
    call_too_large: u64,
    invalid_calls: u64,
    malformed: u64,
    auth_failures: u64,
    failures: u64,
    throttled: u64,
    dropped: u64,
    injected_invalid: u64,
    rps_limited: u64,
    /// Accepted calls by [`CallType::index`]; their messageId hashes are in `Conn::ids`.
    accepted: Option<[u64; 6]>,
}

/// The answer to a POST: a response, or a hang-up.
struct Reply {
    status: u16,
    body: Cow<'static, [u8]>,
    retry_after: Option<u64>,
    close: bool,
}

impl Reply {
    fn new(status: u16, body: impl Into<Cow<'static, [u8]>>) -> Self {
        Reply {
            status,
            body: body.into(),
            retry_after: None,
            close: false,
        }
    }
    fn ok() -> Self {
        Reply::new(200, OK_BODY)
    }
    fn error(status: u16, message: &str) -> Self {
        Reply::new(status, error_body(message))
    }
}

fn handle_post(shared: &Shared, conn: &mut Conn, head: &Head, route: Route) -> bool {
    let verdict = arrive(shared, route);
    let hard_cap = (shared.limits.max_request_bytes as u64)
        .saturating_mul(HARD_CAP_FACTOR)
        .max(MIN_HARD_CAP);
    // Ask for the body only when it will be read: a client told 100 for a body over
    // the hard cap would send it all to a closed door.
    if head.expect_continue
        && head.has_body()
        && head.content_length.is_none_or(|n| n <= hard_cap)
        && http::write_continue(conn.reader.get_ref()).is_err()
    {
        return false;
    }
    let limits = BodyLimits {
        keep: shared.limits.max_request_bytes,
        cap: hard_cap,
    };
    let body = http::read_body(&mut conn.reader, head, limits, &mut conn.body);

    let mut delta = Delta::default();
    conn.ids.clear();
    let reply = decide(
        shared, conn, head, route, verdict, body, hard_cap, &mut delta,
    );
    let keep = match &reply {
        Some(r) => {
            delta.status = Some(r.status);
            head.keep_alive && !r.close
        }
        None => false,
    };
    settle(shared, &delta, &conn.ids);
    match reply {
        Some(r) => {
            let response = Response {
                status: r.status,
                content_type: "application/json",
                body: &r.body,
                retry_after: r.retry_after,
                keep_alive: keep,
            };
            response
                .write_to(conn.reader.get_ref(), &mut conn.out)
                .is_ok()
                && keep
        }
        None => false,
    }
}

/// Counts the arrival and decides its faults, under the lock (the `max_rps` window is
/// shared by every connection).
fn arrive(shared: &Shared, route: Route) -> Verdict {
    let now = Instant::now();
    let mut guard = lock(&shared.state);
    let st: &mut State = &mut guard;
    let index = st.stats.requests;
    st.stats.requests += 1;
    bump(&mut st.stats.requests_by_path, route.path(), 1);
    let in_last_second = st.arrivals.push(now) as u64;
    st.stats.max_requests_in_any_1s = st.stats.max_requests_in_any_1s.max(in_last_second);
    shared.faults.decide(index, &mut st.admitted, now)
}

/// Everything between reading the body and answering. `None` means hang up unanswered.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn decide(
    shared: &Shared,
    conn: &mut Conn,
    head: &Head,
    route: Route,
    verdict: Verdict,
    body: Result<u64, BodyError>,
    hard_cap: u64,
    delta: &mut Delta,
) -> Option<Reply> {
    if matches!(body, Err(BodyError::Io)) {
        // The client is gone; a drop it was going to get anyway still counts.
        delta.dropped = u64::from(verdict == Verdict::Drop);
        return None;
    }
    // Bodies we could not read to their end leave unread bytes on the wire.
    let close = matches!(body, Err(BodyError::TooLarge | BodyError::BadFraming));
    let mut reply = faults_and_checks(shared, conn, head, route, verdict, body, hard_cap, delta)?;
    reply.close |= close;
    Some(reply)
}

#[allow(clippy::too_many_arguments)] // see `decide`
fn faults_and_checks(
    shared: &Shared,
    conn: &mut Conn,
    head: &Head,
    route: Route,
    verdict: Verdict,
    body: Result<u64, BodyError>,
    hard_cap: u64,
    delta: &mut Delta,
) -> Option<Reply> {
    // 1. Faults.
    match verdict {
        Verdict::Pass => {}
        Verdict::Drop => {
            delta.dropped = 1;
            return None;
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
            return Some(r);
        }
        Verdict::Fail { status } => {
            delta.failures = 1;
            return Some(Reply::error(status, "injected failure"));
        }
    }
    if shared.faults.latency_ms > 0 {
        std::thread::sleep(Duration::from_millis(shared.faults.latency_ms));
    }

    // 2. Auth.
    if let Some(expected) = &shared.auth {
        let given = head.authorization.as_deref().unwrap_or_default();
        if !same_secret(given.as_bytes(), expected.as_bytes()) {
            delta.auth_failures = 1;
            return Some(Reply::error(
                401,
                "missing or wrong Authorization: send HTTP Basic auth with the API key as the user name and an empty password",
            ));
        }
    }

    // 3. Body.
    let size = match body {
        Ok(size) => size,
        Err(BodyError::TooLarge) => {
            delta.request_too_large = 1;
            return Some(Reply::error(
                413,
                &format!("request body over the receiver's hard cap of {hard_cap} bytes"),
            ));
        }
        Err(BodyError::BadFraming) => {
            delta.malformed = 1;
            return Some(Reply::error(400, "malformed chunked body"));
        }
        Err(BodyError::BadGzip) => {
            delta.malformed = 1;
            return Some(Reply::error(
                400,
                "Content-Encoding is gzip but the body is not valid gzip",
            ));
        }
        Err(BodyError::Io) => return None,
    };
    if head.encoding == Encoding::Unsupported {
        delta.malformed = 1;
        return Some(Reply::error(
            415,
            "unsupported Content-Encoding; send gzip or none",
        ));
    }
    delta.request_bytes = size;

    // 4. The request limit.
    let strict = head.strict;
    let max_request = shared.limits.max_request_bytes as u64;
    if size > max_request {
        delta.request_too_large = 1;
        return Some(if strict {
            Reply::new(
                400,
                limit_body(
                    &format!(
                        "request body is {size} bytes, over the {max_request}-byte request limit"
                    ),
                    None,
                    size,
                    max_request,
                ),
            )
        } else {
            // What the real API does: a 200, and the request does not go through.
            Reply::ok()
        });
    }

    // 5. Parse, and look at every call once: its size for the call limit, its verdict
    // for validation. One pass over a plain batch (`scan`), serde for anything else.
    let Ok(text) = simdutf8::basic::from_utf8(&conn.body) else {
        delta.malformed = 1;
        return Some(Reply::error(400, "body is not UTF-8"));
    };
    let mut tally = Tally {
        shared,
        route,
        max_call: shared.limits.max_call_bytes as u64,
        count: 0,
        largest: 0,
        too_large: 0,
        first_over: None,
        injected_invalid: 0,
        invalid: Vec::new(),
        valid: Vec::new(),
        ids: std::mem::take(&mut conn.ids),
    };
    let scanned =
        route == Route::Batch && scan::batch(text, &mut |raw, f| tally.call(raw, f)).is_ok();
    if !scanned {
        tally.restart();
        match validate::split_calls(route, text) {
            Ok(raws) => raws.iter().for_each(|r| tally.call(r.get(), None)),
            Err(e) => {
                conn.ids = tally.ids;
                delta.malformed = 1;
                let what = if route == Route::Batch {
                    "body is not a JSON object with a \"batch\" array"
                } else {
                    "body is not JSON"
                };
                return Some(Reply::error(400, &format!("{what}: {e}")));
            }
        }
    }
    let Tally {
        largest,
        too_large,
        first_over,
        injected_invalid,
        invalid,
        valid,
        ids,
        ..
    } = tally;
    conn.ids = ids;

    // The call limit: checked on the raw bytes as received, for every call, before
    // any of them is accepted.
    delta.largest_call = largest;
    delta.call_too_large = too_large;
    if let Some((index, len)) = first_over {
        let max_call = shared.limits.max_call_bytes as u64;
        return Some(if strict {
            Reply::new(
                400,
                limit_body(
                    &format!("call {index} is {len} bytes, over the {max_call}-byte call limit"),
                    Some(index),
                    len,
                    max_call,
                ),
            )
        } else {
            Reply::ok()
        });
    }

    // Validation.
    delta.injected_invalid = injected_invalid;
    delta.invalid_calls = invalid.len() as u64;
    if strict && !invalid.is_empty() {
        let body = serde_json::to_vec(&InvalidBody {
            error: "invalid calls",
            invalid: &invalid,
        })
        .unwrap_or_else(|_| error_body("invalid calls"));
        return Some(Reply::new(400, body));
    }

    // 6. Accept. The record is written before anything is counted, so a failed write
    // is answered 500 (the client retries) and the stats never claim unrecorded calls.
    let mut by_type = [0u64; 6];
    conn.lines.clear();
    for call in &valid {
        by_type[call.ty.index()] += 1;
        if shared.record.is_some() {
            let implied = call.implied.then_some(call.ty);
            validate::record_line(call.raw, implied, &mut conn.lines);
        }
    }
    if let Some(rec) = &shared.record {
        if !conn.lines.is_empty() {
            let mut file = lock(&rec.file);
            // One write per request, so lines from concurrent requests never interleave
            // and a killed process leaves only whole lines behind.
            if let Err(e) = file.write_all(&conn.lines).and_then(|()| file.flush()) {
                drop(file);
                if !rec.warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "cdp-backfill serve: cannot write the record file {}: {e}; answering 500",
                        rec.path.display()
                    );
                }
                conn.ids.clear();
                return Some(Reply::error(500, "cannot write the record file"));
            }
        }
    }
    delta.accepted = Some(by_type);
    Some(Reply::ok())
}

/// A valid call, as acceptance needs it.
struct Accepted<'a> {
    raw: &'a str,
    ty: CallType,
    /// The route implied the type (the call has no `type` of its own).
    implied: bool,
}

/// Every call of one request, looked at once, in order: its size for the call limit,
/// its verdict for validation, and for a valid call what acceptance needs (the hash
/// of its messageId goes to `ids`).
struct Tally<'a, 's> {
    shared: &'s Shared,
    route: Route,
    max_call: u64,
    count: usize,
    largest: u64,
    too_large: u64,
    /// The first call over the limit: its index and size.
    first_over: Option<(usize, u64)>,
    injected_invalid: u64,
    invalid: Vec<InvalidEntry<'a>>,
    valid: Vec<Accepted<'a>>,
    ids: Vec<u128>,
}

impl<'a> Tally<'a, '_> {
    /// `fields`: the call's fields when the scan read them; `None` to read them here.
    fn call(&mut self, raw: &'a str, fields: Option<&CallFields<'a>>) {
        let index = self.count;
        self.count += 1;
        let len = raw.len() as u64;
        self.largest = self.largest.max(len);
        if len > self.max_call {
            self.too_large += 1;
            self.first_over.get_or_insert((index, len));
        }
        let checked = match fields {
            Some(f) => validate::check_fields(self.route, f),
            None => validate::check_call(self.route, raw),
        };
        match checked {
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
                    self.valid.push(Accepted {
                        raw,
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

    /// Forgets every call, for a second look at the body.
    fn restart(&mut self) {
        self.count = 0;
        self.largest = 0;
        self.too_large = 0;
        self.first_over = None;
        self.injected_invalid = 0;
        self.invalid.clear();
        self.valid.clear();
        self.ids.clear();
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
    s.largest_request_bytes = s.largest_request_bytes.max(d.request_bytes);
    s.largest_call_bytes = s.largest_call_bytes.max(d.largest_call);
    let v = &mut s.violations;
    v.request_too_large += d.request_too_large;
    v.call_too_large += d.call_too_large;
    v.invalid_calls += d.invalid_calls;
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

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

pub(crate) fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_else(|_| b"{}".to_vec())
}

#[derive(Serialize)]
struct LimitBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    bytes: u64,
    limit: u64,
}

fn limit_body(message: &str, index: Option<usize>, bytes: u64, limit: u64) -> Vec<u8> {
    serde_json::to_vec(&LimitBody {
        error: message,
        index,
        bytes,
        limit,
    })
    .unwrap_or_else(|_| error_body(message))
}

#[derive(Serialize)]
struct InvalidEntry<'a> {
    index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<Cow<'a, str>>,
    reason: Cow<'static, str>,
}

#[derive(Serialize)]
struct InvalidBody<'a, 'b> {
    error: &'static str,
    invalid: &'b [InvalidEntry<'a>],
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
    fn error_bodies_are_json_even_with_quotes() {
        let b = error_body("bad \"thing\"\n");
        let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
        assert_eq!(v["error"], "bad \"thing\"\n");
        let b = limit_body("too big", Some(3), 40_000, 32_000);
        assert_eq!(
            String::from_utf8(b).expect("utf-8"),
            r#"{"error":"too big","index":3,"bytes":40000,"limit":32000}"#
        );
    }

    #[test]
    fn every_status_we_send_has_its_own_key() {
        for s in [200, 400, 401, 413, 415, 429, 500, 502, 503] {
            assert_eq!(status_key(s), s.to_string());
        }
    }
}
