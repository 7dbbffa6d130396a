//! Writing JSON straight into byte buffers.
//!
//! Calls are encoded by appending to a reused `Vec<u8>`: no `serde_json::Value` and no
//! allocation per row. String escaping copies whole runs of bytes that need no escape,
//! found eight bytes at a time.

/// Bytes that must be escaped inside a JSON string: `"`, `\` and the C0 controls.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, quotes included.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_str_body(out, s.as_bytes());
    out.push(b'"');
}

/// Appends the escaped body of a string whose bytes are already known to be valid UTF-8.
#[inline]
pub fn write_str_body(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..i]);
        let b = bytes[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Index of the first byte at or after `i` that needs escaping.
///
/// Eight bytes are tested at a time (SWAR): most field text has no byte to escape, and a
/// byte-at-a-time table lookup was the encoder's largest cost after UTF-8 validation.
/// `has_less(x, n)` is non-zero exactly when some byte of `x` is below `n` (n <= 128;
/// "Bit Twiddling Hacks"), so a word that passes holds no `"`, `\` or control byte,
/// and a word that fails holds one, which the table then finds.
#[inline]
fn next_escape(bytes: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn has_less(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * n as u64) & !x & HIGHS
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * b'"' as u64);
        let backslash = w ^ (ONES * b'\\' as u64);
        if has_less(w, 0x20) | has_less(quote, 1) | has_less(backslash, 1) != 0 {
            break;
        }
        i += 8;
    }
    bytes
        .get(i..)?
        .iter()
        .position(|&b| NEEDS_ESCAPE[b as usize])
        .map(|p| i + p)
}

#[inline]
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[inline]
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a finite float in the shortest form that reads back to the same value.
/// Callers reject or null non-finite values first: JSON has no NaN or Infinity.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    debug_assert!(v.is_finite());
    out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

/// True when `b` is a JSON number exactly as written (RFC 8259 grammar): so it can be
/// copied into the output as a number without changing a digit.
pub fn is_json_number(b: &[u8]) -> bool {
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i = 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let s = i;
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let s = i;
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// True when `b` is one JSON document whose strings are valid UTF-8 with no lone
/// surrogate escapes. (`serde::de::IgnoredAny` is not enough: serde_json skips ignored
/// strings without checking them, so such text passed into a call made the body invalid
/// JSON; found by the fuzzer, issue 9.) Allocates only for strings with escapes.
pub fn is_valid(b: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Valid;
    impl<'de> Deserialize<'de> for Valid {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Valid)
        }
    }
    impl<'de> Visitor<'de> for Valid {
        type Value = Valid;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_unit<E>(self) -> Result<Valid, E> {
            Ok(Valid)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Valid, A::Error> {
            while s.next_element::<Valid>()?.is_some() {}
            Ok(Valid)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Valid, A::Error> {
            while m.next_entry::<Valid, Valid>()?.is_some() {}
            Ok(Valid)
        }
    }
    serde_json::from_slice::<Valid>(b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut v = Vec::new();
        write_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_match_serde_json() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak\r\ttab",
            "\u{0}\u{1f}\u{7f}",
            "naïve café 東京 🎉",
            "",
        ] {
            assert_eq!(enc(s), serde_json::to_string(s).unwrap(), "for {s:?}");
        }
    }

    #[test]
    fn escapes_at_every_offset_of_a_word() {
        // An escape at each position of the 8-byte words, and in the tail after them.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '~', 'é', '\u{7f}'] {
            for len in 0..40 {
                for at in 0..len {
                    let s: String = (0..len)
                        .map(|i| if i == at { special } else { 'a' })
                        .collect();
                    assert_eq!(enc(&s), serde_json::to_string(&s).unwrap(), "for {s:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_serde_json(s in "\\PC*|[\"\\\\\u{0}-\u{1f}a-z]{0,40}") {
            proptest::prop_assert_eq!(enc(&s), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "12", "1.5", "1e10", "-2.5E-3", "1.50"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "01", "+1", "1.", ".5", "1e", "0x10", "1_000", "NaN", " 1",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}
