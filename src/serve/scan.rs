//! One validating pass over a `/v1/batch` body: finds each call's raw bytes and, in the
//! same pass, the few top-level fields of each call that the checks read.
//!
//! This is the receiver's hot path (it runs beside the benchmarked engine), so it
//! replaces three passes (UTF-8, serde's split into raw values, serde's re-read of each
//! call) with one, and allocates nothing.
//!
//! Invariant: it is never laxer than serde_json. It accepts only what serde_json
//! accepts and, for what it accepts, yields exactly what the serde path
//! (`validate::split_calls` then `validate::check_call`) would. Anything it does not
//! handle itself (a top-level key with an escape, a call key with an escape, a wanted
//! field that is not a plain string or null, a repeated wanted field, deep nesting,
//! any malformed JSON) is handed back: the whole body as [`Fallback`], or one call
//! without its fields, and the serde path decides, with its own messages.
//! The caller has already checked that the body is UTF-8, so every slice taken at an
//! ASCII delimiter is valid `str`.

use std::borrow::Cow;

use super::validate::CallFields;
// The bytes a JSON string must escape, found as the engine's writer finds them.
#[cfg(target_arch = "x86_64")]
use crate::json::specials16;
use crate::json::specials_swar as specials;

/// The scan cannot vouch for this body: run the serde path on it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fallback;

/// Nesting beyond this is left to serde_json.
const MAX_DEPTH: u32 = 128;

/// Splits a batch body into its calls, reading each call's wanted fields on the way,
/// and hands each to `each` in order: its bytes exactly as received (no surrounding
/// whitespace), and its fields, or `None` when serde must read the call itself. On
/// `Err` some calls may have been handed over already: the caller starts again.
pub(crate) fn batch<'a>(
    body: &'a str,
    each: &mut impl FnMut(&'a str, Option<&CallFields<'a>>),
) -> Result<(), Fallback> {
    let mut s = Scanner {
        b: body.as_bytes(),
        text: body,
        i: 0,
    };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    let mut seen_batch = false;
    if s.peek() == Some(b'}') {
        return Err(Fallback); // no "batch": serde's error
    }
    loop {
        let (key, escaped) = s.string()?;
        if escaped {
            return Err(Fallback);
        }
        s.ws();
        s.expect(b':')?;
        s.ws();
        if key == b"batch" {
            if seen_batch {
                return Err(Fallback); // duplicate field: serde's error
            }
            seen_batch = true;
            s.calls(each)?;
        } else {
            s.value(1)?;
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return Err(Fallback),
        }
    }
    s.ws();
    if !seen_batch || s.i != s.b.len() {
        return Err(Fallback);
    }
    Ok(())
}

struct Scanner<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
}

/// Which wanted field a key names, as a bit in `CallFields`' seen-mask.
fn wanted(key: &[u8]) -> Option<u8> {
    Some(match key {
        b"type" => 0,
        b"messageId" => 1,
        b"userId" => 2,
        b"anonymousId" => 3,
        b"event" => 4,
        b"groupId" => 5,
        b"previousId" => 6,
        b"timestamp" => 7,
        _ => return None,
    })
}

/// The index of the first `"`, `\` or control byte in `b` from `i` on, or `b.len()`.
///
/// On x86_64, sixteen bytes at a time with SSE2 (part of the x86_64 baseline, so no
/// runtime detection). `b` is the whole body, so a string almost always has sixteen
/// bytes after it and one block holds a short string's end: one load and one mask,
/// with no per-string set-up and no tail handling in the common case. Only the last
/// fifteen bytes of a body take the portable path.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    while let Some(block) = b.get(i..i + 16) {
        let m = specials16(block);
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    find_special_swar(b, i)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn find_special(b: &[u8], i: usize) -> usize {
    find_special_swar(b, i)
}

/// [`find_special`] eight bytes at a time, portably.
#[inline]
fn find_special_swar(b: &[u8], mut i: usize) -> usize {
    // Eight bytes at a time, then one by one.
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = specials(u64::from_le_bytes(w));
        if m != 0 {
            return i + m.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Result<u8, Fallback> {
        let c = *self.b.get(self.i).ok_or(Fallback)?;
        self.i += 1;
        Ok(c)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), Fallback> {
        if self.next()? == c {
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// At a `"`: reads a string and returns its raw content and whether it holds an
    /// escape. Checks what serde_json checks when it skips a string: no control
    /// characters, only the JSON escapes, four hex digits after `\u`.
    #[inline(always)]
    fn string(&mut self) -> Result<(&'a [u8], bool), Fallback> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = find_special(self.b, self.i);
            match self.next()? {
                b'"' => return Ok((&self.b[start..self.i - 1], escaped)),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.next()?.is_ascii_hexdigit() {
                                    return Err(Fallback);
                                }
                            }
                        }
                        _ => return Err(Fallback),
                    }
                }
                _ => return Err(Fallback), // a control byte
            }
        }
    }

    /// Skips one value, validating it as serde_json would when ignoring it.
    fn value(&mut self, depth: u32) -> Result<(), Fallback> {
        match self.peek().ok_or(Fallback)? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(Fallback);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.member(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b'}' => return Ok(()),
                        _ => return Err(Fallback),
                    }
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Fallback);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.member(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Ok(()),
                        _ => return Err(Fallback),
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Fallback),
        }
    }

    /// A value inside an object or array. Strings, numbers and booleans, most such
    /// values, are read here, with no call (a call frame per property was a tenth of
    /// the scan).
    #[inline(always)]
    fn member(&mut self, depth: u32) -> Result<(), Fallback> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            _ => self.value(depth),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Fallback> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    #[inline(always)]
    fn number(&mut self) -> Result<(), Fallback> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Fallback);
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(Fallback),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Fallback);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Fallback);
            }
        }
        Ok(())
    }

    /// The `batch` array: each element's raw span, and for objects their fields.
    fn calls(
        &mut self,
        each: &mut impl FnMut(&'a str, Option<&CallFields<'a>>),
    ) -> Result<(), Fallback> {
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        // One set of fields, refilled for each call.
        let mut fields = CallFields::default();
        loop {
            let start = self.i;
            let plain = if self.peek() == Some(b'{') {
                self.call(&mut fields)?
            } else {
                self.value(2)?;
                false
            };
            each(&self.text[start..self.i], plain.then_some(&fields));
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Ok(()),
                _ => return Err(Fallback),
            }
        }
    }

    /// One call object: skips it, reading its wanted fields into `f`; false when they
    /// are not plain (serde must read them).
    fn call(&mut self, f: &mut CallFields<'a>) -> Result<bool, Fallback> {
        self.expect(b'{')?;
        *f = CallFields::default();
        let mut seen = 0u8;
        let mut plain = true;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(true);
        }
        loop {
            let (key, key_escaped) = self.string()?;
            plain &= !key_escaped;
            self.ws();
            self.expect(b':')?;
            self.ws();
            match wanted(key).filter(|_| plain) {
                Some(bit) => {
                    if seen & (1 << bit) != 0 {
                        plain = false; // serde: duplicate field
                    }
                    seen |= 1 << bit;
                    let value = match self.peek() {
                        Some(b'"') => {
                            let (v, escaped) = self.string()?;
                            if escaped {
                                plain = false; // serde unescapes (and checks surrogates)
                                None
                            } else {
                                // Between two ASCII quotes of a UTF-8 text: a whole str.
                                let start = self.i - 1 - v.len();
                                Some(Cow::Borrowed(&self.text[start..self.i - 1]))
                            }
                        }
                        Some(b'n') => {
                            self.literal(b"null")?;
                            None
                        }
                        _ => {
                            self.value(2)?;
                            plain = false; // serde: invalid type
                            None
                        }
                    };
                    *f.slot(bit) = value;
                }
                None => self.value(2)?,
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => break,
                _ => return Err(Fallback),
            }
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::{check_call, check_fields, split_calls, Route};
    use super::*;

    /// What the serde path makes of a body: per call, its raw text and the verdict.
    fn by_serde(body: &str) -> Option<Vec<(String, String)>> {
        let calls = split_calls(Route::Batch, body).ok()?;
        Some(
            calls
                .iter()
                .map(|c| {
                    (
                        c.get().to_string(),
                        verdict(check_call(Route::Batch, c.get())),
                    )
                })
                .collect(),
        )
    }

    fn verdict(
        r: Result<super::super::validate::ValidCall<'_>, super::super::validate::InvalidCall<'_>>,
    ) -> String {
        match r {
            Ok(v) => format!("ok {:?} {:?} {}", v.ty, v.message_id, v.type_implied),
            Err(e) => format!("invalid {:?} {}", e.message_id, e.reason),
        }
    }

    /// The scan's result, finished by the serde path where it hands a call back.
    fn by_scan(body: &str) -> Result<Vec<(String, String)>, Fallback> {
        let mut out = Vec::new();
        batch(body, &mut |raw, fields| {
            let v = match fields {
                Some(f) => check_fields(Route::Batch, f),
                None => check_call(Route::Batch, raw),
            };
            out.push((raw.to_string(), verdict(v)));
        })?;
        Ok(out)
    }

    /// Which calls of `body` the scan hands back to serde.
    fn handed_back(body: &str) -> Result<Vec<bool>, Fallback> {
        let mut out = Vec::new();
        batch(body, &mut |_, fields| out.push(fields.is_none()))?;
        Ok(out)
    }

    /// Either the scan agrees with serde, or it falls back on a body serde refuses or
    /// that it chose not to handle.
    fn agrees(body: &str) -> bool {
        match by_scan(body) {
            Ok(got) => by_serde(body).as_ref() == Some(&got),
            Err(Fallback) => true,
        }
    }

    #[test]
    fn plain_batches_are_read_in_one_pass_like_serde() {
        let body = r#" {"context":{"a":[1,2.5e3,-0,true,false,null,"x\"y\u00e9"]},"batch":[{"type":"track","userId":"u1","event":"E","messageId":"m1","properties":{"n":[{}],"s":"a\\b"}} , {"type":"identify","anonymousId":"a","timestamp":"2024-01-02T03:04:05Z","userId":null},{"type":"bogus"},{"type":"group","groupId":""},[1],"s",{}],"sentAt":"x"} "#;
        let got = by_scan(body).expect("the scan handles this body");
        assert_eq!(Some(&got), by_serde(body).as_ref());
        assert_eq!(got.len(), 7);
        assert_eq!(got[0].1, r#"ok Track Some("m1") false"#);
        assert!(got[0].0.starts_with(r#"{"type":"track""#) && got[0].0.ends_with("}}"));
    }

    #[test]
    fn calls_it_cannot_vouch_for_go_to_serde_with_the_same_verdict() {
        for call in [
            r#"{"type":"track","userId":"u","event":"E","messageId":"a\"b"}"#,
            r#"{"type":"identify","userId":7}"#,
            r#"{"type":"identify","type":"track","userId":"u"}"#,
            r#"{"typ\u0065":"identify","userId":"u"}"#,
            r#"{"type":"identify","userId":"\ud800"}"#,
        ] {
            let body = format!(r#"{{"batch":[{call}]}}"#);
            assert_eq!(handed_back(&body), Ok(vec![true]), "{call}");
            assert!(agrees(&body), "{call}");
        }
    }

    #[test]
    fn never_accepts_what_serde_refuses() {
        for body in [
            "",
            "{}",
            "[]",
            r#"{"batch":[]"#,
            r#"{"batch":[]} x"#,
            r#"{"batch":[],"batch":[]}"#,
            r#"{"b\u0061tch":[{"type":"group","groupId":"g"}]}"#,
            r#"{"batch":null}"#,
            r#"{"batch":[{"a":01}]}"#,
            r#"{"batch":[{"a":1.}]}"#,
            r#"{"batch":[{"a":-}]}"#,
            r#"{"batch":[{"a":1e}]}"#,
            r#"{"batch":[{"a":tru}]}"#,
            r#"{"batch":[{"a":"\x"}]}"#,
            r#"{"batch":[{"a":"\u12g4"}]}"#,
            "{\"batch\":[{\"a\":\"tab\there\"}]}",
            r#"{"batch":[{"a":1,}]}"#,
            r#"{"batch":[{"a":1},]}"#,
            r#"{"batch":[{"a" 1}]}"#,
            r#"{"batch":[{1:1}]}"#,
            r#"[[{"type":"group","groupId":"g"}]]"#,
            "{\"batch\":[{\"type\":\"track\"}]}\n\t ",
        ] {
            assert!(agrees(body), "{body:?}");
        }
        let deep = format!(r#"{{"batch":[{}]}}"#, "[".repeat(300) + &"]".repeat(300));
        assert_eq!(by_scan(&deep), Err(Fallback));
        assert!(by_serde(&deep).is_some());
    }

    #[test]
    fn mutated_bodies_are_judged_as_serde_judges_them() {
        let base = r#"{"batch":[{"type":"track","messageId":"m-1","userId":"u1","event":"Order \"x\" é","timestamp":"2024-01-02T03:04:05.678Z","properties":{"amount":-12.5e-3,"n":[0,1,true,false,null],"o":{}}},{"type":"identify","anonymousId":"a","traits":{"s":"\u00e9\n"}},{"type":"group","groupId":"g","userId":null}],"context":{"library":{"name":"x"}}}"#;
        let alphabet = br#"{}[]:,"\ u0aeE.-+1tfnlrsx"#;
        assert_eq!(by_scan(base).map(|c| c.len()), Ok(3));
        assert!(agrees(base));
        let mut scanned = 0;
        for b in super::super::mutations(base.as_bytes(), alphabet, 3000) {
            let Ok(body) = std::str::from_utf8(&b) else {
                continue;
            };
            assert!(agrees(body), "{body}");
            scanned += usize::from(by_scan(body).is_ok());
        }
        // Most mutations break the JSON; enough of them must still take the fast path.
        assert!(scanned > 100, "{scanned}");
    }

    #[test]
    fn sixteen_byte_search_agrees_with_the_portable_one() {
        // Every special byte at every offset of a block, near the end of the input too.
        for len in 0..48 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'a', 0x7f, 0xc3, 0xff] {
                    let mut b = vec![b'x'; len];
                    if at < len {
                        b[at] = special;
                    }
                    for from in 0..=len {
                        assert_eq!(
                            find_special(&b, from),
                            find_special_swar(&b, from),
                            "len {len} at {at} byte {special} from {from}"
                        );
                    }
                }
            }
        }
    }

    /// `cargo test --release --lib serve::scan -- --ignored --nocapture`: time per call
    /// of the scan over bench-like calls, and of the string search alone, both ways.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_the_scan() {
        let call = r#"{"type":"track","messageId":"c3a9e4e0-7fea-8f3c-93ce-f348a4b2ce99","userId":"u130209","anonymousId":"anon-12a764fb66abc9cf","event":"Checkout Started","timestamp":"2023-03-06T12:21:12.000Z","properties":{"plan":"pro","amount":1522.00,"currency":"EUR","country":"CH","city":"Zürich","item_count":11,"is_trial":false,"description":"new\nline \"quoted\" new\nline price café déjà vu naïve quality late 👍"}}"#;
        let n = 1300;
        let body = format!("{{\"batch\":[{}]}}", vec![call; n].join(","));
        let rounds = 300;
        let t = std::time::Instant::now();
        let mut calls = 0;
        for _ in 0..rounds {
            batch(&body, &mut |_, f| calls += usize::from(f.is_some())).expect("scans");
        }
        let per = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
        assert_eq!(calls, rounds * n);
        println!("scan: {per:.0} ns/call");
        let b = body.as_bytes();
        let starts: Vec<usize> = (0..b.len())
            .filter(|&i| b[i] == b'"')
            .map(|i| i + 1)
            .collect();
        for (name, f) in [
            ("sse2", find_special as fn(&[u8], usize) -> usize),
            ("swar", find_special_swar),
        ] {
            let t = std::time::Instant::now();
            let mut sum = 0;
            for _ in 0..rounds {
                for &i in &starts {
                    sum += std::hint::black_box(f)(b, i);
                }
            }
            let per = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
            println!("{name}: {per:.0} ns/call of string searches ({sum})");
        }
    }

    #[test]
    fn strings_of_every_length_end_at_their_quote() {
        for n in 0..40 {
            let s = "é".repeat(n / 2) + &"x".repeat(n % 2);
            for tail in ["", "\\n", "\\\"", "\\u00e9z"] {
                let body = format!(
                    r#"{{"batch":[{{"type":"track","userId":"{s}","event":"{s}{tail}"}}]}}"#
                );
                assert!(by_scan(&body).is_ok(), "{body}");
                assert!(agrees(&body), "{body}");
            }
        }
    }
}
