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
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["ok"], true);

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
    let error = strict.json()["error"]
        .as_str()
        .expect("error text")
        .to_string();
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
    let json = strict.json();
    assert_eq!(json["index"], 1);
    assert_eq!(json["limit"], 200);
    assert_eq!(json["bytes"], big.len() as u64);
    assert!(
        json["error"].as_str().expect("error").contains("200"),
        "{json}"
    );

    let stats = server.shutdown();
    assert_eq!(
        stats.calls_accepted, 0,
        "the small call goes down with the big one"
    );
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
    let json = strict.json();
    assert_eq!(json["error"], "invalid calls");
    assert_eq!(json["invalid"][0]["index"], 1);
    assert_eq!(json["invalid"][0]["messageId"], "al1");
    assert!(json["invalid"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("alias"));

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
    let json = reply.json();
    let invalid = json["invalid"].as_array().expect("invalid list");
    let got: Vec<(u64, &str, &str)> = invalid
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["messageId"].as_str().expect("messageId"),
                e["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{json}");
    assert_eq!((got[0].0, got[0].1), (0, "no-id"));
    assert!(got[0].2.contains("userId or anonymousId"));
    assert!(got[1].2.contains("event"));
    assert!(got[2].2.contains("groupId"));
    assert!(got[3].2.contains("RFC 3339"));

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
    assert!(missing.json()["error"].is_string());
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
        let mut ids: Vec<String> = reply.json()["invalid"]
            .as_array()
            .expect("invalid list")
            .iter()
            .map(|e| e["messageId"].as_str().expect("messageId").to_string())
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
    for body in [
        &b"{\"batch\":[{"[..],
        b"",
        b"[1,2]",
        b"{\"batch\":{}}",
        b"\xff\xfe",
    ] {
        assert_eq!(post(&server, "/v1/batch", &[], body).status, 400);
        assert_eq!(post(&server, "/v1/batch", &[STRICT], body).status, 400);
    }
    assert_eq!(post(&server, "/v1/track", &[], b"{\"userId\":").status, 400);
    let stats = server.shutdown();
    assert_eq!(stats.violations.malformed_bodies, 11);
    assert_eq!(stats.responses_by_status["400"], 11);
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
