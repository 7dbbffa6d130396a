//! The local receiver over real HTTP on 127.0.0.1: hand-written requests on std
//! `TcpStream`s, so every byte on the wire is the test's choice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cdp_backfill::config::{ApiKey, Limits};
use cdp_backfill::serve::{ServeConfig, Server, Stats};

/// A response as the test reads it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    /// The API's error messages: `{"meta":{"errors":["..."]}}`, and nothing else.
    fn errors(&self) -> Vec<String> {
        let json = self.json();
        let errors = json["meta"]["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("not the API's error shape: {}", self.body));
        assert_eq!(json.as_object().map(|o| o.len()), Some(1), "{}", self.body);
        errors
            .iter()
            .map(|e| e.as_str().expect("each error is a string").to_string())
            .collect()
    }
    /// The API's answer to a request taken: `{}`.
    fn is_taken(&self) -> bool {
        self.status == 200 && self.json() == serde_json::json!({})
    }
}

/// The messageId an error message names (`batch[3] (messageId "m3"): ...`).
fn message_id_in(error: &str) -> Option<String> {
    let rest = error.split_once("(messageId ")?.1;
    let (quoted, _) = rest.split_once("): ")?;
    serde_json::from_str(quoted).ok()
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(server: &Server) -> Conn {
        let stream = TcpStream::connect(server.local_addr()).expect("connect to the receiver");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write request");
    }

    /// Reads one response; `None` when the server closed without answering.
    fn read_reply(&mut self) -> Option<Reply> {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp
            .parse(&head)
            .expect("response head parses")
            .is_complete());
        let status = resp.code.expect("status");
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader
            .read_exact(&mut body)
            .expect("read response body");
        Some(Reply {
            status,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
        })
    }

    /// POSTs `body` to `path` with extra header lines, and reads the answer.
    fn post(&mut self, path: &str, extra: &[&str], body: &[u8]) -> Option<Reply> {
        self.send(&request(path, extra, body));
        self.read_reply()
    }

    /// True when the server has closed this connection.
    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }
}

fn request(path: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n");
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn start(configure: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut cfg = ServeConfig::default();
    configure(&mut cfg);
    Server::start(cfg).expect("receiver starts")
}

fn post(server: &Server, path: &str, extra: &[&str], body: &[u8]) -> Reply {
    Conn::open(server)
        .post(path, extra, body)
        .expect("the receiver answers")
}

fn batch(calls: &[String]) -> String {
    format!(r#"{{"batch":[{}]}}"#, calls.join(","))
}

fn track(id: &str) -> String {
    format!(
        r#"{{"type":"track","userId":"u-{id}","event":"Viewed","messageId":"{id}","timestamp":"2024-03-01T10:00:00.000Z"}}"#
    )
}

const STRICT: &str = "X-Strict-Mode: 1";

#[test]
fn accepted_batch_is_counted_and_recorded_byte_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("calls.ndjson");
    let server = start(|c| c.record = Some(record.clone()));
    // Deliberately not normalised: spaces after colons, nested values, escapes.
    let calls = [
        r#"{"type":"identify","userId":"u1","messageId":"m1","traits":{"name": "A \"quoted\" name","tags":[1, 2]}}"#,
        r#"{"type":"track","anonymousId":"a1","event":"Signed Up","messageId":"m2","properties":{"plan":"pro"}}"#,
        r#"{"type":"group","groupId":"g1","userId":"u1","messageId":"m3"}"#,
        r#"{"type":"page","userId":"u1","name":"Home","messageId":"m4"}"#,
    ];
    let body = format!(
        r#"{{"context":{{"library":{{"name":"test"}}}},"batch":[{}],"integrations":{{"All":true}}}}"#,
        calls.join(", ")
    );
    let reply = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert!(reply.is_taken(), "{} {}", reply.status, reply.body);

    let stats = server.shutdown();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.requests_by_path["/v1/batch"], 1);
    assert_eq!(stats.responses_by_status["200"], 1);
    assert_eq!(stats.calls_accepted, 4);
    assert_eq!(stats.calls_by_type["identify"], 1);
    assert_eq!(stats.calls_by_type["track"], 1);
    assert_eq!(stats.calls_by_type["group"], 1);
    assert_eq!(stats.calls_by_type["page"], 1);
    assert_eq!(stats.unique_message_ids, 4);
    assert_eq!(stats.duplicate_message_ids, 0);
    assert_eq!(stats.bytes, body.len() as u64);
    assert_eq!(stats.largest_request_bytes, body.len() as u64);
    assert_eq!(
        stats.largest_call_bytes,
        calls.iter().map(|c| c.len()).max().unwrap_or(0) as u64
    );

    let recorded = std::fs::read_to_string(&record).expect("record file");
    assert_eq!(recorded, calls.map(|c| format!("{c}\n")).concat());
}

#[test]
fn duplicate_message_ids_are_counted() {
    let server = start(|_| {});
    let first = batch(&[track("a"), track("b"), track("a")]);
    let second = batch(&[track("b"), track("c")]);
    assert_eq!(
        post(&server, "/v1/batch", &[STRICT], first.as_bytes()).status,
        200
    );
    assert_eq!(
        post(&server, "/v1/batch", &[STRICT], second.as_bytes()).status,
        200
    );
    let stats = server.shutdown();
    assert_eq!(stats.calls_accepted, 5);
    assert_eq!(stats.unique_message_ids, 3);
    assert_eq!(stats.duplicate_message_ids, 2);
}

#[test]
fn oversize_request_is_a_silent_200_without_strict_and_a_400_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("calls.ndjson");
    let server = start(|c| {
        c.limits = Limits {
            max_request_bytes: 1_000,
            max_call_bytes: 1_000,
        };
        c.record = Some(record.clone());
    });
    let calls: Vec<String> = (0..20).map(|i| track(&format!("m{i}"))).collect();
    let body = batch(&calls);
    assert!(body.len() > 1_000);

    let lax = post(&server, "/v1/batch", &[], body.as_bytes());
    assert_eq!(lax.status, 200, "{}", lax.body);
    let strict = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert_eq!(strict.status, 400);
    let error = strict.errors().concat();
    assert!(
        error.contains("1000") && error.contains(&body.len().to_string()),
        "{error}"
    );

    let stats = server.shutdown();
    assert_eq!(stats.calls_accepted, 0);
    assert_eq!(stats.bytes, 0);
    assert_eq!(stats.violations.request_too_large, 2);
    assert_eq!(stats.largest_request_bytes, body.len() as u64);
    assert_eq!(std::fs::read_to_string(&record).expect("record file"), "");
}

#[test]
fn oversize_call_drops_the_whole_request_without_strict_and_is_a_400_with_it() {
    let server = start(|c| {
        c.limits = Limits {
            max_request_bytes: 10_000,
            max_call_bytes: 200,
        };
    });
    let big = format!(
        r#"{{"type":"identify","userId":"u","messageId":"big","traits":{{"bio":"{}"}}}}"#,
        "x".repeat(300)
    );
    let body = batch(&[track("small"), big.clone()]);

    assert_eq!(post(&server, "/v1/batch", &[], body.as_bytes()).status, 200);
    let strict = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert_eq!(strict.status, 400);
    let errors = strict.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("batch[1] is ")
            && errors[0].contains(&format!("{} bytes", big.len()))
            && errors[0].contains("200-byte call limit"),
        "{errors:?}"
    );

    let stats = server.shutdown();
    assert_eq!(
        stats.calls_accepted, 0,
        "the small call goes down with the big one"
    );
    assert_eq!(stats.calls_dropped, 2, "both calls of the silent 200");
    assert_eq!(stats.violations.call_too_large, 2);
    assert_eq!(stats.largest_call_bytes, big.len() as u64);
}

#[test]
fn alias_inside_a_batch_is_invalid_but_fine_on_its_own_route() {
    let server = start(|_| {});
    let alias =
        r#"{"type":"alias","previousId":"old","userId":"new","messageId":"al1"}"#.to_string();
    let body = batch(&[track("t1"), alias.clone()]);

    let strict = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert_eq!(strict.status, 400);
    let errors = strict.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("batch[1] (messageId \"al1\"): "));
    assert_eq!(message_id_in(&errors[0]).as_deref(), Some("al1"));
    assert!(errors[0].contains("alias calls are not allowed in a batch"));

    // Without strict mode the valid call goes through and the alias is dropped.
    assert_eq!(post(&server, "/v1/batch", &[], body.as_bytes()).status, 200);
    let single = post(&server, "/v1/alias", &[STRICT], alias.as_bytes());
    assert_eq!(single.status, 200, "{}", single.body);

    let stats = server.shutdown();
    assert_eq!(stats.violations.invalid_calls, 2);
    assert_eq!(stats.calls_by_type["track"], 1);
    assert_eq!(stats.calls_by_type["alias"], 1);
    assert_eq!(stats.requests_by_path["/v1/alias"], 1);
}

#[test]
fn calls_without_ids_or_required_fields_are_invalid() {
    let server = start(|_| {});
    let body = batch(&[
        r#"{"type":"identify","messageId":"no-id","traits":{}}"#.into(),
        r#"{"type":"track","userId":"u","messageId":"no-event"}"#.into(),
        r#"{"type":"group","userId":"u","messageId":"no-group"}"#.into(),
        r#"{"type":"identify","userId":"u","messageId":"bad-ts","timestamp":"last tuesday"}"#
            .into(),
        track("fine"),
    ]);
    let reply = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert_eq!(reply.status, 400);
    let got = reply.errors();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[0].starts_with("batch[0] (messageId \"no-id\"): "));
    assert!(got[0].contains("userId or anonymousId"));
    assert!(got[1].starts_with("batch[1] ") && got[1].contains("event"));
    assert!(got[2].starts_with("batch[2] ") && got[2].contains("groupId"));
    assert!(got[3].starts_with("batch[3] ") && got[3].contains("RFC 3339"));

    let lax = post(&server, "/v1/batch", &[], body.as_bytes());
    assert_eq!(lax.status, 200);
    let stats = server.shutdown();
    assert_eq!(stats.violations.invalid_calls, 8);
    assert_eq!(stats.calls_accepted, 1);
}

#[test]
fn auth_is_401_with_a_wrong_or_missing_key_and_200_with_the_right_one() {
    let key = ApiKey::new("sk_test_SENTINEL");
    let server = start(|c| c.api_key = Some(key.clone()));
    let body = batch(&[track("a")]);
    let right = format!("Authorization: {}", key.basic_auth_header());
    let wrong = format!(
        "Authorization: {}",
        ApiKey::new("sk_test_other").basic_auth_header()
    );

    let missing = post(&server, "/v1/batch", &[STRICT], body.as_bytes());
    assert_eq!(missing.status, 401);
    assert_eq!(missing.errors().len(), 1);
    assert!(!missing.body.contains("SENTINEL"));
    assert_eq!(
        post(&server, "/v1/batch", &[STRICT, &wrong], body.as_bytes()).status,
        401
    );
    assert_eq!(
        post(&server, "/v1/batch", &[STRICT, &right], body.as_bytes()).status,
        200
    );

    let mut conn = Conn::open(&server);
    conn.send(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    let stats_reply = conn.read_reply().expect("stats answer");
    assert!(!stats_reply.body.contains("SENTINEL"));
    let served: Stats = serde_json::from_str(&stats_reply.body).expect("GET /stats is Stats");

    let stats = server.shutdown();
    assert_eq!(served, stats);
    assert_eq!(stats.violations.auth_failures, 2);
    assert_eq!(stats.responses_by_status["401"], 2);
    assert_eq!(stats.calls_accepted, 1);
}

#[test]
fn gzip_body_is_decompressed_and_limits_apply_to_the_decompressed_size() {
    let server = start(|c| {
        c.limits = Limits {
            max_request_bytes: 5_000,
            max_call_bytes: 1_000,
        }
    });
    let gzip = |data: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).expect("in-memory gzip");
        enc.finish().expect("in-memory gzip")
    };
    let small = batch(&[track("g1"), track("g2")]);
    let reply = post(
        &server,
        "/v1/batch",
        &[STRICT, "Content-Encoding: gzip"],
        &gzip(small.as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Compresses far below the limit, but is over it once decompressed.
    let calls: Vec<String> = (0..100).map(|i| track(&format!("z{i}"))).collect();
    let large = batch(&calls);
    let packed = gzip(large.as_bytes());
    assert!(packed.len() < 5_000 && large.len() > 5_000);
    let reply = post(
        &server,
        "/v1/batch",
        &[STRICT, "Content-Encoding: gzip"],
        &packed,
    );
    assert_eq!(reply.status, 400);

    let corrupt = post(
        &server,
        "/v1/batch",
        &[STRICT, "Content-Encoding: gzip"],
        b"not gzip at all",
    );
    assert_eq!(corrupt.status, 400);

    let stats = server.shutdown();
    assert_eq!(stats.calls_accepted, 2);
    assert_eq!(stats.bytes, small.len() as u64);
    assert_eq!(stats.violations.request_too_large, 1);
    assert_eq!(stats.violations.malformed_bodies, 1);
}

#[test]
fn expect_100_continue_gets_100_then_200_promptly() {
    let server = start(|_| {});
    let body = batch(&[track("e1")]);
    let mut conn = Conn::open(&server);
    let started = Instant::now();
    conn.send(
        format!(
            "POST /v1/batch HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = conn.read_reply().expect("interim answer");
    assert_eq!(interim.status, 100);
    conn.send(body.as_bytes());
    let last = conn.read_reply().expect("final answer");
    assert_eq!(last.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.shutdown().calls_accepted, 1);
}

#[test]
fn a_real_http_client_posting_a_large_body_is_not_delayed() {
    // curl (inside isahc) sends `Expect: 100-continue` for large bodies and waits a
    // second for the 100 unless the server answers it.
    use isahc::config::Configurable;
    let server = start(|c| {
        c.limits = Limits {
            max_request_bytes: 4_000_000,
            max_call_bytes: 32_000,
        }
    });
    let calls: Vec<String> = (0..12_000).map(|i| track(&format!("big-{i}"))).collect();
    let body = batch(&calls);
    assert!(body.len() > 1_100_000);
    let request = isahc::Request::post(format!("{}/v1/batch", server.base_url()))
        .header("X-Strict-Mode", "1")
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.into_bytes())
        .expect("request builds");
    let started = Instant::now();
    let response = isahc::send(request).expect("isahc gets an answer");
    let elapsed = started.elapsed();
    assert_eq!(response.status().as_u16(), 200);
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    assert_eq!(server.shutdown().calls_accepted, 12_000);
}

#[test]
fn drop_rate_one_closes_without_an_answer() {
    let server = start(|c| c.faults.drop_rate = 1.0);
    let mut conn = Conn::open(&server);
    assert!(conn
        .post("/v1/batch", &[], batch(&[track("d")]).as_bytes())
        .is_none());
    let stats = server.shutdown();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.injected.dropped, 1);
    assert!(stats.responses_by_status.is_empty());
    assert_eq!(stats.calls_accepted, 0);
}

#[test]
fn throttle_rate_one_gives_429_with_retry_after() {
    let server = start(|c| {
        c.faults.throttle_rate = 1.0;
        c.faults.retry_after_secs = 7;
    });
    let reply = post(&server, "/v1/batch", &[], batch(&[track("t")]).as_bytes());
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("Retry-After"), Some("7"));
    let stats = server.shutdown();
    assert_eq!(stats.injected.throttled, 1);
    assert_eq!(stats.calls_accepted, 0);

    let server = start(|c| c.faults.throttle_rate = 1.0);
    let reply = post(&server, "/v1/batch", &[], batch(&[track("t")]).as_bytes());
    assert_eq!(reply.header("Retry-After"), Some("1"), "0 means 1");
}

#[test]
fn fail_rate_one_gives_5xx_and_keeps_the_connection() {
    let server = start(|c| c.faults.fail_rate = 1.0);
    let mut conn = Conn::open(&server);
    for _ in 0..5 {
        let reply = conn
            .post("/v1/batch", &[], batch(&[track("f")]).as_bytes())
            .expect("answer");
        assert!([500, 502, 503].contains(&reply.status), "{}", reply.status);
    }
    assert_eq!(server.shutdown().injected.failures, 5);
}

#[test]
fn max_rps_is_enforced_and_the_busiest_second_reported() {
    let server = start(|c| c.faults.max_rps = Some(5));
    let mut conn = Conn::open(&server);
    let body = batch(&[track("r")]);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let reply = conn
            .post("/v1/batch", &[], body.as_bytes())
            .expect("answer");
        if reply.status == 429 {
            let secs: u64 = reply
                .header("Retry-After")
                .expect("Retry-After on a 429")
                .parse()
                .expect("integer seconds");
            assert!(secs >= 1);
        }
        statuses.push(reply.status);
    }
    let stats = server.shutdown();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(stats.injected.rps_limited, 7);
    assert_eq!(
        stats.max_requests_in_any_1s, 12,
        "refused requests count as arrivals"
    );
}

#[test]
fn invalid_rate_gives_each_message_id_the_same_verdict_every_time() {
    let server = start(|c| {
        c.faults.invalid_rate = 0.5;
        c.faults.seed = 1234;
    });
    let calls: Vec<String> = (0..40).map(|i| track(&format!("iv{i}"))).collect();
    let rejected = |calls: &[String]| -> Vec<String> {
        let reply = post(&server, "/v1/batch", &[STRICT], batch(calls).as_bytes());
        if reply.status == 200 {
            return Vec::new();
        }
        let mut ids: Vec<String> = reply
            .errors()
            .iter()
            .map(|e| message_id_in(e).expect("each error names its messageId"))
            .collect();
        ids.sort();
        ids
    };
    let first = rejected(&calls);
    assert!(!first.is_empty() && first.len() < 40, "{first:?}");
    assert_eq!(rejected(&calls), first, "a retry sees the same verdicts");

    // Bisection: the same calls in halves, in another order.
    let mut reversed = calls.clone();
    reversed.reverse();
    let mut halves = rejected(&reversed[..20]);
    halves.extend(rejected(&reversed[20..]));
    halves.sort();
    assert_eq!(halves, first);

    let stats = server.shutdown();
    assert_eq!(stats.injected.invalid, 3 * first.len() as u64);
}

#[test]
fn malformed_json_is_400_with_or_without_strict() {
    let server = start(|_| {});
    for body in [&b"{\"batch\":[{"[..], b"", b"\xff\xfe", b"{\"batch\":[]} x"] {
        assert_eq!(post(&server, "/v1/batch", &[], body).status, 400);
        let strict = post(&server, "/v1/batch", &[STRICT], body);
        assert_eq!(strict.status, 400);
        assert_eq!(strict.errors().len(), 1);
    }
    assert_eq!(post(&server, "/v1/track", &[], b"{\"userId\":").status, 400);
    let stats = server.shutdown();
    assert_eq!(stats.violations.malformed_bodies, 9);
    assert_eq!(stats.responses_by_status["400"], 9);
}

/// Issue 23: JSON that the batch schema refuses (not an object, `batch` not an array)
/// is a validation failure like any other: 400 in strict mode, and without it the
/// API's silent 200 with nothing taken. (It used to be a 400 in both modes, as if it
/// were not JSON at all.)
#[test]
fn json_the_batch_schema_refuses_is_400_in_strict_mode_and_a_silent_200_without() {
    let server = start(|_| {});
    for body in [
        &b"[1,2]"[..],
        b"{\"batch\":{}}",
        b"\"batch\"",
        b"{\"batch\":[],\"batch\":[]}",
    ] {
        let lax = post(&server, "/v1/batch", &[], body);
        assert!(lax.is_taken(), "{} {}", lax.status, lax.body);
        let strict = post(&server, "/v1/batch", &[STRICT], body);
        assert_eq!(strict.status, 400, "{}", strict.body);
        assert_eq!(strict.errors().len(), 1, "{}", strict.body);
    }
    let stats = server.shutdown();
    assert_eq!(stats.violations.invalid_requests, 8);
    assert_eq!(stats.violations.malformed_bodies, 0);
    assert_eq!(stats.calls_accepted, 0);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(|_| {});
    let mut conn = Conn::open(&server);
    for i in 0..5 {
        let reply = conn
            .post(
                "/v1/batch",
                &[STRICT],
                batch(&[track(&format!("k{i}"))]).as_bytes(),
            )
            .expect("answer");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("Connection"), Some("keep-alive"));
    }
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let health = conn.read_reply().expect("health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    // Two requests in one write (pipelining), then an explicit close.
    let mut two = request("/v1/batch", &[], batch(&[track("p1")]).as_bytes());
    two.extend(request(
        "/v1/batch",
        &["Connection: close"],
        batch(&[track("p2")]).as_bytes(),
    ));
    conn.send(&two);
    assert_eq!(conn.read_reply().expect("first").status, 200);
    let last = conn.read_reply().expect("second");
    assert_eq!(last.status, 200);
    assert_eq!(last.header("Connection"), Some("close"));
    assert!(conn.is_closed());
    assert_eq!(server.shutdown().calls_accepted, 7);
}

#[test]
fn chunked_bodies_are_accepted() {
    let server = start(|_| {});
    let body = batch(&[track("c1"), track("c2")]);
    let (a, b) = body.split_at(body.len() / 2);
    let raw = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{STRICT}\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut conn = Conn::open(&server);
    conn.send(raw.as_bytes());
    assert_eq!(conn.read_reply().expect("answer").status, 200);
    assert_eq!(server.shutdown().calls_accepted, 2);
}

#[test]
fn single_call_routes_imply_the_type_and_record_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("calls.ndjson");
    let server = start(|c| c.record = Some(record.clone()));
    let reply = post(
        &server,
        "/v1/track",
        &[STRICT],
        br#"{"userId":"u","event":"E","messageId":"s1"}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mismatch = post(
        &server,
        "/v1/identify",
        &[STRICT],
        br#"{"type":"track","userId":"u","event":"E"}"#,
    );
    assert_eq!(mismatch.status, 400);
    let stats = server.shutdown();
    assert_eq!(stats.calls_by_type["track"], 1);
    assert_eq!(
        std::fs::read_to_string(&record).expect("record"),
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"messageId\":\"s1\"}\n"
    );
}

#[test]
fn hostile_requests_get_answers_not_panics() {
    let server = start(|_| {});
    // A Content-Length far beyond anything we would read: refused before reading.
    let mut conn = Conn::open(&server);
    conn.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999\r\n\r\n{");
    let reply = conn.read_reply().expect("413");
    assert_eq!(reply.status, 413);
    assert!(conn.is_closed());

    // Garbage instead of a head.
    let mut conn = Conn::open(&server);
    conn.send(b"\x16\x03\x01 not http at all\r\n\r\n");
    assert_eq!(conn.read_reply().expect("400").status, 400);

    // A body cut short by the client.
    let mut conn = Conn::open(&server);
    conn.send(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"batch\":");
    conn.reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(conn.read_reply().is_none());

    // Unknown routes, and the server is still fine afterwards.
    assert_eq!(post(&server, "/v2/batch", &[], b"{}").status, 404);
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            &[STRICT],
            batch(&[track("ok")]).as_bytes()
        )
        .status,
        200
    );
    let stats = server.shutdown();
    assert_eq!(stats.violations.request_too_large, 1);
    assert_eq!(stats.calls_accepted, 1);
}

/// One case of [`answers_follow_the_vendor_spec`]: a body posted to a route, and whether
/// the API's schemas take it (`None`) or refuse it with a message holding the text.
struct Case {
    what: &'static str,
    path: &'static str,
    body: String,
    refused: Option<&'static str>,
}

fn case(what: &'static str, path: &'static str, body: &str, refused: Option<&'static str>) -> Case {
    Case {
        what,
        path,
        body: body.to_string(),
        refused,
    }
}

/// A batch of one call.
fn one(call: &str) -> String {
    format!(r#"{{"batch":[{call}]}}"#)
}

/// Issue 23's list, and the spec's typed fields: each body to its route, in strict mode
/// (400 with the API's `{"meta":{"errors":[...]}}`, or `{}`) and without it (always a
/// 200 `{}`; what strict mode refuses is dropped and counted).
#[test]
fn answers_follow_the_vendor_spec() {
    let t = |extra: &str| {
        format!(r#"{{"type":"track","userId":"u","event":"E","messageId":"m"{extra}}}"#)
    };
    let rde = |props: &str| {
        format!(r#"{{"type":"track","event":"Report Delivery Event","properties":{props}}}"#)
    };
    let device = |ctx: &str| {
        format!(
            r#"{{"type":"track","userId":"u","event":"Device Created or Updated","context":{ctx}}}"#
        )
    };
    let cases = [
        // Issue 23, one by one.
        case(
            "Report Delivery Event with no ids: the spec requires none",
            "/v1/batch",
            &one(&rde(r#"{"deliveryId":"d1","metric":"opened"}"#)),
            None,
        ),
        case(
            "Report Delivery Event needs properties",
            "/v1/batch",
            &one(r#"{"type":"track","event":"Report Delivery Event"}"#),
            Some("needs properties"),
        ),
        case(
            "Report Delivery Event metric from the enum",
            "/v1/batch",
            &one(&rde(r#"{"deliveryId":"d1","metric":"bounced"}"#)),
            Some("properties.metric"),
        ),
        case(
            "a batch group needs an id",
            "/v1/batch",
            &one(r#"{"type":"group","groupId":"g"}"#),
            Some("group call needs userId or anonymousId"),
        ),
        case(
            "a batch group needs groupId",
            "/v1/batch",
            &one(r#"{"type":"group","userId":"u"}"#),
            Some("group call needs groupId"),
        ),
        case("/v1/group requires nothing", "/v1/group", "{}", None),
        case("{} to /v1/batch is an empty batch", "/v1/batch", "{}", None),
        case(
            "an item without type fits the batch's identify",
            "/v1/batch",
            &one(r#"{"userId":"u","traits":{"plan":"pro"}}"#),
            None,
        ),
        case(
            "an item without type or ids fits nothing",
            "/v1/batch",
            &one(r#"{"traits":{"plan":"pro"}}"#),
            Some("identify call needs userId or anonymousId"),
        ),
        case(
            "userId \"\" is a string",
            "/v1/batch",
            &one(r#"{"type":"identify","userId":""}"#),
            None,
        ),
        case(
            "userId must be a string",
            "/v1/batch",
            &one(r#"{"type":"identify","userId":7}"#),
            Some("userId must be a string"),
        ),
        // integrations: destination names map to booleans.
        case(
            "integrations hold booleans",
            "/v1/batch",
            &one(&t(
                r#","integrations":{"All":false,"Customer.io Data Pipelines":true}"#,
            )),
            None,
        ),
        case(
            "a dotted name split into objects (finding 1)",
            "/v1/batch",
            &one(&t(
                r#","integrations":{"Customer":{"io Data Pipelines":true}}"#,
            )),
            Some(r#"integrations."Customer" must be true or false"#),
        ),
        case(
            "a string for a boolean (finding 2)",
            "/v1/batch",
            &one(&t(r#","integrations":{"Salesforce":"off"}"#)),
            Some("must be true or false"),
        ),
        case(
            "batch-level integrations too",
            "/v1/batch",
            &format!(r#"{{"batch":[{}],"integrations":{{"x":"yes"}}}}"#, t("")),
            Some("integrations"),
        ),
        // Repeated keys (finding 5), escapes included.
        case(
            "a repeated context in an alias",
            "/v1/alias",
            r#"{"previousId":"p","userId":"u","context":{"ip":"1.2.3.4"},"context":{"locale":"en"}}"#,
            Some(r#"the key "context" appears twice"#),
        ),
        case(
            "a repeated key deep inside",
            "/v1/batch",
            &one(&t(r#","properties":{"a":{"b":[{"c":1,"c":2}]}}"#)),
            Some(r#""c" appears twice"#),
        ),
        case(
            "a repeated key spelled with an escape",
            "/v1/batch",
            &one(&t(r#","\u0065vent":"F""#)),
            Some(r#""event" appears twice"#),
        ),
        case(
            "a repeated key around the calls",
            "/v1/batch",
            &format!(r#"{{"batch":[{}],"context":{{}},"context":{{}}}}"#, t("")),
            Some("appears twice"),
        ),
        // Date-times (findings 3 and 4).
        case(
            "a leap second at 23:59:60 UTC",
            "/v1/batch",
            &one(&t(r#","timestamp":"2016-12-31T18:59:60-05:00""#)),
            None,
        ),
        case(
            "a leap second elsewhere",
            "/v1/batch",
            &one(&t(r#","timestamp":"2024-03-01T10:00:60Z""#)),
            Some("RFC 3339"),
        ),
        case(
            "a five-digit year",
            "/v1/batch",
            &one(&t(r#","timestamp":"10000-01-01T00:00:00.000Z""#)),
            Some("RFC 3339"),
        ),
        case(
            "sentAt is a date-time",
            "/v1/batch",
            &one(&t(r#","sentAt":"0000-00-00T00:00:00.000Z""#)),
            Some("sentAt"),
        ),
        case(
            "originalTimestamp is a date-time",
            "/v1/batch",
            &one(&t(r#","originalTimestamp":"yesterday""#)),
            Some("originalTimestamp"),
        ),
        case(
            "an alias's timestamp too (alias_all)",
            "/v1/alias",
            r#"{"previousId":"p","userId":"u","timestamp":"soon"}"#,
            Some("timestamp"),
        ),
        // Reserved traits (finding 7).
        case(
            "traits.email is a string",
            "/v1/batch",
            &one(r#"{"type":"identify","userId":"u","traits":{"email":{"a":"b"}}}"#),
            Some("traits.email must be a string"),
        ),
        case(
            "traits.createdAt is a date-time",
            "/v1/batch",
            &one(
                r#"{"type":"identify","userId":"u","traits":{"createdAt":"2024-02-30T00:00:00Z"}}"#,
            ),
            Some("traits.createdAt"),
        ),
        case(
            "traits.unsubscribed is a boolean",
            "/v1/batch",
            &one(r#"{"type":"identify","userId":"u","traits":{"unsubscribed":"yes"}}"#),
            Some("traits.unsubscribed"),
        ),
        case(
            "subscription topics are booleans",
            "/v1/batch",
            &one(
                r#"{"type":"identify","userId":"u","traits":{"cio_subscription_preferences":{"topics":{"topic_1":1}}}}"#,
            ),
            Some("traits.cio_subscription_preferences.topics.topic_1"),
        ),
        case(
            "group traits.object_type_id is a string",
            "/v1/batch",
            &one(r#"{"type":"group","groupId":"g","userId":"u","traits":{"object_type_id":1}}"#),
            Some("traits.object_type_id"),
        ),
        // Context.
        case(
            "context.channel from the enum",
            "/v1/batch",
            &one(&t(r#","context":{"channel":"tv"}"#)),
            Some("context.channel"),
        ),
        case(
            "a track's device.type is free (the web context does not type it)",
            "/v1/batch",
            &one(&t(r#","context":{"device":{"type":"windows"}}"#)),
            None,
        ),
        case(
            "a screen's device.type is android or ios",
            "/v1/batch",
            &one(r#"{"type":"screen","userId":"u","context":{"device":{"type":"windows"}}}"#),
            Some("context.device.type"),
        ),
        case(
            "a page's context is the web one",
            "/v1/batch",
            &one(r#"{"type":"page","userId":"u","context":{"page":{"url":5}}}"#),
            Some("context.page.url"),
        ),
        case(
            "a context neither web nor mobile",
            "/v1/batch",
            &one(&t(
                r#","context":{"page":{"keywords":[1]},"app":{"name":2}}"#,
            )),
            Some("fits neither"),
        ),
        case(
            "context is an object",
            "/v1/batch",
            &one(&t(r#","context":[]"#)),
            Some("context must be an object"),
        ),
        // Semantic events.
        case(
            "Device Created or Updated with its token",
            "/v1/batch",
            &one(&device(r#"{"device":{"token":"tk","type":"ios"}}"#)),
            None,
        ),
        case(
            "Device Created or Updated without a token",
            "/v1/batch",
            &one(&device(r#"{"device":{"type":"ios"}}"#)),
            Some("context.device.token"),
        ),
        case(
            "Device Created or Updated with a device type off the enum",
            "/v1/batch",
            &one(&device(r#"{"device":{"token":"tk","type":"windows"}}"#)),
            Some("context.device.type"),
        ),
        case(
            "Relationship Deleted needs properties.objectId",
            "/v1/batch",
            &one(r#"{"type":"track","userId":"u","event":"Relationship Deleted","properties":{}}"#),
            Some("properties.objectId"),
        ),
        case(
            "an objectTypeId of 1.0 is an integer",
            "/v1/batch",
            &one(
                r#"{"type":"track","userId":"u","event":"Relationship Deleted","properties":{"objectId":"o","objectTypeId":1.0}}"#,
            ),
            None,
        ),
        case(
            "an objectTypeId of \"1\" is not",
            "/v1/batch",
            &one(
                r#"{"type":"track","userId":"u","event":"Relationship Deleted","properties":{"objectId":"o","objectTypeId":"1"}}"#,
            ),
            Some("properties.objectTypeId"),
        ),
        case(
            "Object Deleted needs anonymousId",
            "/v1/batch",
            &one(
                r#"{"type":"track","userId":"u","event":"Object Deleted","properties":{"objectId":"o"}}"#,
            ),
            Some("anonymousId"),
        ),
        case(
            "User Deleted needs userId",
            "/v1/batch",
            &one(r#"{"type":"track","anonymousId":"a","event":"User Deleted"}"#),
            Some("needs userId"),
        ),
        // Other typed fields.
        case(
            "page properties.url is a string",
            "/v1/batch",
            &one(r#"{"type":"page","userId":"u","properties":{"url":5}}"#),
            Some("properties.url"),
        ),
        case(
            "version is a number",
            "/v1/batch",
            &one(&t(r#","version":"2""#)),
            Some("version"),
        ),
        case(
            "messageId is a string",
            "/v1/batch",
            &one(r#"{"type":"identify","userId":"u","messageId":7}"#),
            Some("messageId must be a string"),
        ),
        case(
            "properties is an object",
            "/v1/track",
            r#"{"userId":"u","event":"E","properties":[1]}"#,
            Some("properties must be an object"),
        ),
    ];
    let server = start(|_| {});
    let mut refused = 0;
    for c in &cases {
        let strict = post(&server, c.path, &[STRICT], c.body.as_bytes());
        match c.refused {
            None => assert!(
                strict.is_taken(),
                "{}: {} {}\n{}",
                c.what,
                strict.status,
                strict.body,
                c.body
            ),
            Some(text) => {
                refused += 1;
                assert_eq!(
                    strict.status, 400,
                    "{}: {}\n{}",
                    c.what, strict.body, c.body
                );
                let errors = strict.errors();
                assert!(
                    errors.iter().any(|e| e.contains(text)),
                    "{}: {errors:?} should say {text:?}",
                    c.what
                );
            }
        }
        let lax = post(&server, c.path, &[], c.body.as_bytes());
        assert!(
            lax.is_taken(),
            "{} without strict mode: {}",
            c.what,
            lax.body
        );
    }
    let stats = server.shutdown();
    let taken = cases.len() - refused;
    // The taken cases: one call each, twice, except the empty batch and /v1/group {}.
    assert_eq!(stats.calls_accepted, 2 * (taken as u64 - 1));
    assert_eq!(
        stats.violations.invalid_calls + stats.violations.invalid_requests,
        refused as u64 * 2
    );
    assert_eq!(
        stats.calls_dropped, refused as u64,
        "each refused body holds one call, dropped once without strict mode"
    );
}

#[test]
fn x_strict_mode_true_is_not_strict_mode() {
    // The spec: strict "when set to `1`"; any other value is permissive.
    let server = start(|_| {});
    let bad = one(r#"{"type":"identify"}"#);
    for value in ["true", "yes", "0", ""] {
        let header = format!("X-Strict-Mode: {value}");
        let reply = post(&server, "/v1/batch", &[&header], bad.as_bytes());
        assert!(reply.is_taken(), "X-Strict-Mode: {value}: {}", reply.body);
    }
    assert_eq!(
        post(
            &server,
            "/v1/batch",
            &["X-Strict-Mode:  1 "],
            bad.as_bytes()
        )
        .status,
        400
    );
    let stats = server.shutdown();
    assert_eq!(stats.calls_dropped, 4);
    assert_eq!(stats.violations.invalid_calls, 5);
}

#[test]
fn basic_auth_scheme_in_any_case_is_accepted() {
    let key = ApiKey::new("sk_test_case");
    let server = start(|c| c.api_key = Some(key.clone()));
    let token = key
        .basic_auth_header()
        .split_once(' ')
        .map(|(_, t)| t.to_string())
        .expect("Basic TOKEN");
    let body = batch(&[track("c")]);
    for scheme in ["Basic", "basic", "BASIC"] {
        let header = format!("Authorization: {scheme} {token}");
        let reply = post(&server, "/v1/batch", &[STRICT, &header], body.as_bytes());
        assert!(
            reply.is_taken(),
            "{scheme}: {} {}",
            reply.status,
            reply.body
        );
    }
    let stats = server.shutdown();
    assert_eq!(stats.violations.auth_failures, 0);
}

#[test]
fn batch_items_without_type_are_recorded_as_identify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("calls.ndjson");
    let server = start(|c| c.record = Some(record.clone()));
    let reply = post(
        &server,
        "/v1/batch",
        &[STRICT],
        one(r#"{"userId":"u","messageId":"i1"}"#).as_bytes(),
    );
    assert!(reply.is_taken(), "{}", reply.body);
    let stats = server.shutdown();
    assert_eq!(stats.calls_by_type["identify"], 1);
    assert_eq!(
        std::fs::read_to_string(&record).expect("record"),
        "{\"type\":\"identify\",\"userId\":\"u\",\"messageId\":\"i1\"}\n"
    );
}

/// HTTP/2 with prior knowledge (h2c) and HTTP/1.1 on the same port, from a real client
/// (curl, inside isahc): both are answered, and counted by version.
#[test]
fn http2_and_http11_requests_both_reach_the_receiver_and_are_counted() {
    use isahc::config::{Configurable, VersionNegotiation};
    let server = start(|_| {});
    let url = format!("{}/v1/batch", server.base_url());
    let send = |client: &isahc::HttpClient, id: &str| {
        let request = isahc::Request::post(&url)
            .header("X-Strict-Mode", "1")
            .header("Content-Type", "application/json")
            .body(batch(&[track(id)]).into_bytes())
            .expect("request builds");
        let mut response = client.send(request).expect("an answer");
        let version = response.version();
        let mut body = String::new();
        response
            .body_mut()
            .read_to_string(&mut body)
            .expect("a text body");
        (response.status().as_u16(), version, body)
    };
    let h2 = isahc::HttpClient::builder()
        .version_negotiation(VersionNegotiation::http2())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let h1 = isahc::HttpClient::builder()
        .version_negotiation(VersionNegotiation::http11())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for i in 0..5 {
        let (status, version, body) = send(&h2, &format!("h2-{i}"));
        assert_eq!((status, body.as_str()), (200, "{}"));
        assert_eq!(version, isahc::http::Version::HTTP_2);
    }
    for i in 0..3 {
        let (status, version, body) = send(&h1, &format!("h1-{i}"));
        assert_eq!((status, body.as_str()), (200, "{}"));
        assert_eq!(version, isahc::http::Version::HTTP_11);
    }
    // A refusal over HTTP/2 has the same shape.
    let request = isahc::Request::post(&url)
        .header("X-Strict-Mode", "1")
        .body(one(r#"{"type":"identify"}"#).into_bytes())
        .expect("request builds");
    let mut refused = h2.send(request).expect("an answer");
    assert_eq!(refused.status().as_u16(), 400);
    let mut text = String::new();
    refused
        .body_mut()
        .read_to_string(&mut text)
        .expect("a text body");
    assert!(text.contains("\"meta\":{\"errors\":["), "{text}");
    let stats = server.shutdown();
    assert_eq!(stats.requests_by_version["HTTP/2"], 6);
    assert_eq!(stats.requests_by_version["HTTP/1.1"], 3);
    assert_eq!(stats.calls_accepted, 8);
}

/// Many requests multiplexed on HTTP/2 connections at once (as an engine with a
/// concurrency window would send them), with a dropped-request fault: every request is
/// either answered or reset, and the counts add up.
#[test]
fn http2_streams_in_parallel_with_drops_add_up() {
    use isahc::config::{Configurable, VersionNegotiation};
    let server = start(|c| {
        c.faults.drop_rate = 0.2;
        c.faults.seed = 3;
        c.faults.latency_ms = 20;
    });
    let url = format!("{}/v1/batch", server.base_url());
    let client = isahc::HttpClient::builder()
        .version_negotiation(VersionNegotiation::http2())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let answered = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (client, url, answered) = (&client, &url, &answered);
            s.spawn(move || {
                for i in 0..10 {
                    let request = isahc::Request::post(url)
                        .body(batch(&[track(&format!("p{t}-{i}"))]).into_bytes())
                        .expect("request builds");
                    if let Ok(r) = client.send(request) {
                        assert_eq!(r.status().as_u16(), 200);
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let stats = server.shutdown();
    let answered = answered.into_inner();
    assert_eq!(stats.requests, 80);
    assert_eq!(stats.requests_by_version["HTTP/2"], 80);
    assert_eq!(stats.injected.dropped + answered, 80, "{stats:?}");
    assert!(stats.injected.dropped > 0 && answered > 0);
    assert_eq!(stats.calls_accepted, answered);
}

/// The simulated uplink: bodies from several connections at once are read no faster
/// than the cap together, and every wire byte is counted. Only a lower bound on time
/// is asserted (a loaded machine is slower, never faster).
#[test]
fn bandwidth_cap_is_shared_by_all_connections() {
    // 4 Mbit/s = 500,000 bytes/s.
    let server = start(|c| c.faults.bandwidth_mbps = 4.0);
    let bodies: Vec<String> = (0..4)
        .map(|c| {
            let calls: Vec<String> = (0..1_000).map(|i| track(&format!("bw{c}-{i}"))).collect();
            batch(&calls)
        })
        .collect();
    let total: usize = bodies.iter().map(String::len).sum();
    assert!(total > 400_000, "{total}");
    let started = Instant::now();
    std::thread::scope(|s| {
        for body in &bodies {
            let server = &server;
            s.spawn(move || {
                let reply = post(server, "/v1/batch", &[STRICT], body.as_bytes());
                assert!(reply.is_taken(), "{}", reply.body);
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    // All of it but the bucket's burst (10 ms of the rate) waits for the cap.
    let floor = (total as f64 - 5_000.0) / 500_000.0;
    assert!(
        elapsed >= floor * 0.95,
        "{elapsed:.3}s for {total} bytes, floor {floor:.3}s"
    );
    let stats = server.shutdown();
    assert_eq!(stats.wire_bytes, total as u64);
    assert_eq!(stats.calls_accepted, 4_000);
}

/// Gzip bodies are capped at their compressed size, which is what makes `--gzip` pay
/// on a slow uplink.
#[test]
fn bandwidth_cap_counts_compressed_bytes() {
    let server = start(|c| c.faults.bandwidth_mbps = 2.0);
    let calls: Vec<String> = (0..2_000).map(|i| track(&format!("gz{i}"))).collect();
    let body = batch(&calls);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body.as_bytes()).expect("in-memory gzip");
    let packed = enc.finish().expect("in-memory gzip");
    assert!(packed.len() * 4 < body.len());
    let reply = post(
        &server,
        "/v1/batch",
        &[STRICT, "Content-Encoding: gzip"],
        &packed,
    );
    assert!(reply.is_taken(), "{}", reply.body);
    let stats = server.shutdown();
    assert_eq!(stats.wire_bytes, packed.len() as u64);
    assert_eq!(stats.bytes, body.len() as u64);
}

/// Latency with jitter: every answer waits at least latency - jitter; the draws are
/// the seed's (the unit tests check their spread).
#[test]
fn latency_jitter_delays_every_answer_within_its_bounds() {
    let server = start(|c| {
        c.faults.latency_ms = 60;
        c.faults.latency_jitter_ms = 40;
        c.faults.seed = 11;
    });
    let mut conn = Conn::open(&server);
    for i in 0..6 {
        let started = Instant::now();
        let reply = conn
            .post(
                "/v1/batch",
                &[STRICT],
                batch(&[track(&format!("j{i}"))]).as_bytes(),
            )
            .expect("answer");
        let took = started.elapsed();
        assert!(reply.is_taken());
        assert!(took >= Duration::from_millis(19), "{took:?}");
    }
    assert_eq!(server.shutdown().calls_accepted, 6);
}
