//! The API's routes and call types, and the record file's lines.
//!
//! A call's raw bytes are kept exactly as received (for the size limit and the record
//! file); `scan.rs` reads them and `schema.rs` judges them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
