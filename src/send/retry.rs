//! What to do with a response: one pure function, tested as a table.

use std::time::Duration;

/// The verdict on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Success,
    /// Try again later; `after` is the server's `Retry-After`, if it gave one.
    /// `throttled` marks a 429, which slows the whole run down, not just this request.
    Retry {
        after: Option<Duration>,
        throttled: bool,
        why: String,
    },
    /// Strict mode refused some calls as invalid: isolate them, send the rest.
    Invalid { why: String },
    /// Retrying cannot help; stop the run with this message.
    Fatal { why: String },
}

/// The outcome of one attempt, as the transport reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Response {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// No answer: connection refused or reset, timeout, DNS failure...
    NoResponse { why: String, fatal: bool },
}

/// Classifies an attempt. `strict`: the request carried `X-Strict-Mode: 1`.
pub fn classify(a: &Attempt, strict: bool) -> Decision {
    match a {
        Attempt::NoResponse { why, fatal: false } => Decision::Retry {
            after: None,
            throttled: false,
            why: why.clone(),
        },
        Attempt::NoResponse { why, fatal: true } => Decision::Fatal { why: why.clone() },
        Attempt::Response {
            status,
            retry_after,
            body,
        } => {
            let text = || format!("HTTP {status}: {}", short(body));
            match *status {
                200..=299 => Decision::Success,
                429 => Decision::Retry {
                    after: *retry_after,
                    throttled: true,
                    why: text(),
                },
                408 | 500 | 502..=599 => Decision::Retry {
                    after: *retry_after,
                    throttled: false,
                    why: text(),
                },
                400 if strict => Decision::Invalid { why: short(body) },
                401 | 403 => Decision::Fatal {
                    why: format!(
                        "{}. The API refused the key: check CDP_API_KEY (or --api-key-file) and that the key belongs to this region (--endpoint us or eu).",
                        text()
                    ),
                },
                404 => Decision::Fatal {
                    why: format!(
                        "{}. --endpoint takes the API's base URL, such as https://cdp.customer.io: drop any /v1/batch (or other path) from it.",
                        text()
                    ),
                },
                413 => Decision::Fatal {
                    why: format!(
                        "{}. The server refused the request size; lower --max-request-bytes.",
                        text()
                    ),
                },
                _ => Decision::Fatal { why: text() },
            }
        }
    }
}

/// Parses `Retry-After`: delta-seconds, or an HTTP date (then relative to `now`).
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let when = std::time::UNIX_EPOCH + Duration::from_secs(when.timestamp().max(0) as u64);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Full-jitter exponential backoff: a uniform draw from `[0, min(cap, base·2^attempt)]`,
/// never shorter than what the server asked for.
pub fn backoff(
    attempt: u32,
    base: Duration,
    cap: Duration,
    asked: Option<Duration>,
    unit_random: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let jittered = exp.mul_f64(unit_random.clamp(0.0, 1.0));
    match asked {
        Some(a) => jittered.max(a),
        None => jittered,
    }
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Attempt {
        Attempt::Response {
            status,
            retry_after: None,
            body: "x".into(),
        }
    }

    #[test]
    fn decisions_by_status() {
        use Decision::*;
        let table: &[(u16, bool, &str)] = &[
            (200, true, "success"),
            (204, true, "success"),
            (400, true, "invalid"),
            (400, false, "fatal"),
            (401, true, "fatal"),
            (403, true, "fatal"),
            (404, true, "fatal"),
            (408, true, "retry"),
            (413, true, "fatal"),
            (429, true, "retry"),
            (500, true, "retry"),
            (501, true, "fatal"),
            (502, true, "retry"),
            (503, true, "retry"),
            (504, true, "retry"),
        ];
        for &(status, strict, want) in table {
            let got = match classify(&resp(status), strict) {
                Success => "success",
                Retry { .. } => "retry",
                Invalid { .. } => "invalid",
                Fatal { .. } => "fatal",
            };
            assert_eq!(got, want, "status {status} strict {strict}");
        }
        assert!(matches!(
            classify(&resp(429), true),
            Retry {
                throttled: true,
                ..
            }
        ));
        assert!(matches!(
            classify(
                &Attempt::NoResponse {
                    why: "reset".into(),
                    fatal: false
                },
                true
            ),
            Retry {
                throttled: false,
                ..
            }
        ));
    }

    #[test]
    fn auth_failures_explain_key_and_region() {
        let Decision::Fatal { why } = classify(&resp(401), true) else {
            panic!()
        };
        assert!(
            why.contains("CDP_API_KEY") && why.contains("region"),
            "{why}"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // 1_700_000_030 = Tue, 14 Nov 2023 22:13:50 GMT
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry_after() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(0, base, cap, None, 1.0), base);
        assert_eq!(backoff(3, base, cap, None, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, cap, None, 1.0), cap);
        assert_eq!(backoff(3, base, cap, None, 0.0), Duration::ZERO);
        assert_eq!(
            backoff(0, base, cap, Some(Duration::from_secs(5)), 0.5),
            Duration::from_secs(5)
        );
    }
}
