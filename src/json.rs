//! Writing JSON straight into byte buffers.
//!
//! Calls are encoded by appending to a reused `Vec<u8>`: no `serde_json::Value` and no
//! allocation per row. String escaping copies whole runs of bytes that need no escape,
//! found sixteen bytes at a time (SSE2 on x86_64, eight with SWAR elsewhere).

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

/// Appends `b` to `out`, like `extend_from_slice`, but without a call to `memcpy` for
/// the short copies (keys, ids, field values) that make up most of a call: a slice of at
/// most 64 bytes is copied with overlapping loads and stores. Longer slices go to
/// `memcpy` as usual.
#[inline(always)]
pub fn extend_short(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n > 64 {
        out.extend_from_slice(b);
        return;
    }
    out.reserve(n);
    // SAFETY: `reserve(n)` leaves room for `n` more bytes after `len`, and every store
    // below lands in `dst[0..n]`; every load reads `src[0..n]`, inside `b` (the pairs
    // overlap when `n` is not a power of two, which is harmless: same bytes, same
    // places). `b` cannot alias the spare capacity of `out` (it is borrowed shared while
    // `out` is borrowed mutably). The first `n` bytes after `len` are then initialised.
    unsafe {
        let dst = out.as_mut_ptr().add(out.len());
        let src = b.as_ptr();
        if n > 32 {
            let a = (src as *const u128).read_unaligned();
            let b = (src.add(16) as *const u128).read_unaligned();
            let c = (src.add(n - 32) as *const u128).read_unaligned();
            let d = (src.add(n - 16) as *const u128).read_unaligned();
            (dst as *mut u128).write_unaligned(a);
            (dst.add(16) as *mut u128).write_unaligned(b);
            (dst.add(n - 32) as *mut u128).write_unaligned(c);
            (dst.add(n - 16) as *mut u128).write_unaligned(d);
        } else if n >= 16 {
            let lo = (src as *const u128).read_unaligned();
            let hi = (src.add(n - 16) as *const u128).read_unaligned();
            (dst as *mut u128).write_unaligned(lo);
            (dst.add(n - 16) as *mut u128).write_unaligned(hi);
        } else if n >= 8 {
            let lo = (src as *const u64).read_unaligned();
            let hi = (src.add(n - 8) as *const u64).read_unaligned();
            (dst as *mut u64).write_unaligned(lo);
            (dst.add(n - 8) as *mut u64).write_unaligned(hi);
        } else if n >= 4 {
            let lo = (src as *const u32).read_unaligned();
            let hi = (src.add(n - 4) as *const u32).read_unaligned();
            (dst as *mut u32).write_unaligned(lo);
            (dst.add(n - 4) as *mut u32).write_unaligned(hi);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(out.len() + n);
    }
}

/// Appends `s` as a JSON string literal, quotes included.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes())
}

/// [`write_str`] for bytes already known to be valid UTF-8.
///
/// This, [`is_json_number`] and [`is_canonical_i64`] are always inlined: the encoder calls
/// them for every value, and LLVM stopped inlining them into `encode::write_object` once
/// this module left `map/` (a dry run took 1.4% more instructions).
#[inline(always)]
pub fn write_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    write_str_body(out, bytes);
    out.push(b'"');
}

/// Appends the escaped body of a string whose bytes are already known to be valid UTF-8.
#[inline]
pub fn write_str_body(out: &mut Vec<u8>, bytes: &[u8]) {
    // Most field text has nothing to escape: one test, one copy.
    match next_escape(bytes, 0) {
        None => extend_short(out, bytes),
        Some(first) => write_escaped(out, bytes, first),
    }
}

/// [`write_str_body`] for text whose first byte to escape is at `first` (found once,
/// not again here).
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], first: usize) {
    let mut start = 0;
    let mut at = Some(first);
    while let Some(i) = at {
        extend_short(out, &bytes[start..i]);
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
        at = next_escape(bytes, start);
    }
    extend_short(out, &bytes[start..]);
}

/// Index of the first byte at or after `i` that needs escaping.
///
/// On x86_64, sixteen bytes are tested at a time with SSE2 (part of the x86_64 baseline,
/// so no runtime detection), and the last partial block is tested by re-reading the
/// final sixteen bytes of the string, so only strings shorter than sixteen bytes reach
/// the portable scan below. Most field text has no byte to escape.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn next_escape(bytes: &[u8], mut i: usize) -> Option<usize> {
    let n = bytes.len();
    if n < 16 {
        // Most strings are short (ids, names, codes): one test of the whole rest,
        // and the byte search only when it holds an escape.
        let rest = bytes.get(i..)?;
        if !short_has_escape(rest) {
            return None;
        }
        return next_escape_swar(bytes, i);
    }
    // Bit k set when byte k of the 16 at `at` is `"`, `\` or below 0x20.
    let mask_at = |at: usize| specials16(&bytes[at..at + 16]);
    while i + 16 <= n {
        let m = mask_at(i);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i >= n {
        return None;
    }
    // The tail: the last sixteen bytes, minus those already tested.
    let base = n - 16;
    let m = mask_at(base) >> (i - base);
    (m != 0).then(|| i + m.trailing_zeros() as usize)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn next_escape(bytes: &[u8], i: usize) -> Option<usize> {
    next_escape_swar(bytes, i)
}

/// Bit `k` set when byte `k` of `block` (sixteen bytes) is `"`, `\` or below 0x20: the
/// bytes a JSON string must escape. SSE2, part of the x86_64 baseline. Also the
/// receiver's string scan (`serve::scan`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn specials16(block: &[u8]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let block: &[u8; 16] = block.try_into().expect("sixteen bytes");
    // SAFETY: `block` is sixteen bytes, so the unaligned 16-byte load stays inside it;
    // SSE2 is always present on x86_64.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let ctl = _mm_set1_epi8(0x1f);
        let hit = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            ),
            // v <= 0x1f (unsigned) exactly when max(v, 0x1f) == 0x1f.
            _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
        );
        _mm_movemask_epi8(hit) as u32
    }
}

/// True when some byte of `b` (shorter than 16 bytes) is `"`, `\` or below 0x20: the
/// SWAR test of [`next_escape_swar`] on two overlapping words that cover `b`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn short_has_escape(b: &[u8]) -> bool {
    let n = b.len();
    debug_assert!(n < 16);
    let word = |at: usize, len: usize| -> u64 {
        let mut w = [b'a'; 8];
        w[..len].copy_from_slice(&b[at..at + len]);
        u64::from_le_bytes(w)
    };
    let (lo, hi) = match n {
        8.. => (word(0, 8), word(n - 8, 8)),
        4.. => {
            let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
            // Pad with a harmless byte ('a') so only the real bytes can trip the test.
            (lo as u64 | 0x6161_6161 << 32, hi as u64 | 0x6161_6161 << 32)
        }
        0 => return false,
        _ => return b.iter().any(|&c| NEEDS_ESCAPE[c as usize]),
    };
    swar_has_escape(lo) | swar_has_escape(hi)
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// True when some byte of the word is `"`, `\` or below 0x20.
#[inline(always)]
fn swar_has_escape(w: u64) -> bool {
    specials_swar(w) != 0
}

/// The high bit of each byte of `w` (eight bytes, little-endian) that is `"`, `\` or
/// below 0x20. `has_less(x, n)` marks the bytes of `x` below `n` (n <= 128; "Bit
/// Twiddling Hacks"); a borrow can also mark a byte above a marked one, never below, so
/// `trailing_zeros() / 8` is the first such byte. Also the receiver's (`serve::scan`).
#[inline(always)]
pub(crate) fn specials_swar(w: u64) -> u64 {
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn has_less(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * n as u64) & !x & HIGHS
    }
    let quote = w ^ (ONES * b'"' as u64);
    let backslash = w ^ (ONES * b'\\' as u64);
    has_less(w, 0x20) | has_less(quote, 1) | has_less(backslash, 1)
}

/// The portable scan: eight bytes at a time (SWAR), then a table for the tail. A word
/// that passes holds no `"`, `\` or control byte, and a word that fails holds one,
/// which the table then finds.
#[inline]
fn next_escape_swar(bytes: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if swar_has_escape(u64::from_le_bytes(word)) {
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
#[inline(always)]
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

/// True when `b` is an integer written exactly as `i64` formats it (no sign but `-`, no
/// leading zero, no `-0`) and short enough (at most 18 digits) that it cannot overflow:
/// then parsing it and writing the `i64` back gives `b` itself, so it can be copied.
#[inline(always)]
pub fn is_canonical_i64(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    match digits {
        [b'0'] => digits.len() == b.len(),
        [b'1'..=b'9', rest @ ..] => rest.len() < 18 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// For text that [`is_json_number`]: true when its value is a finite `f64`. Without an
/// exponent, 300 characters hold at most a 300-digit integer part, below 1e300, so the
/// value is finite without parsing it; otherwise (`1e400`) it is parsed.
#[inline]
pub fn json_number_is_finite(b: &[u8]) -> bool {
    if b.len() <= 300 && !b.iter().any(|&c| c == b'e' || c == b'E') {
        return true;
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// The deepest nesting of arrays and objects [`write_minified`] accepts: serde_json's
/// recursion limit (128, of which opening the 128th level is refused).
pub const MAX_DEPTH: u32 = 127;

/// JSON's insignificant whitespace: space, tab, line feed, carriage return.
static IS_WS: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

/// Appends the JSON document `b` to `out` without its insignificant whitespace (so a
/// body stays one line; strings are copied exactly as written, escapes and all), and
/// returns true; or, when `b` is not one document that [`is_valid`] accepts, returns
/// false and leaves `out` as it was. `utf8`: `b` is already known to be valid UTF-8.
///
/// One pass over the bytes, checking as it goes what serde_json checks: the grammar,
/// raw control bytes and escapes in strings (`\u` escapes of surrogates must pair up),
/// numbers that overflow a double (`1e400`), and nesting deeper than [`MAX_DEPTH`].
/// Nothing is parsed into values and nothing is allocated. Strings are copied sixteen
/// bytes at a time, each block stored whole while it is searched for a quote, a
/// backslash or a control byte. Property tests and the `json` fuzz target hold it to
/// serde_json's verdict and to a byte-by-byte minifier's output.
pub fn write_minified(out: &mut Vec<u8>, b: &[u8], utf8: bool) -> bool {
    // Outside strings every valid byte is ASCII, so checking the whole text is checking
    // its strings.
    if !utf8 && simdutf8::basic::from_utf8(b).is_err() {
        return false;
    }
    let start = out.len();
    // The output is never longer than the text; sixteen bytes more take the overhang of
    // the block stores.
    out.resize(start + b.len() + 16, 0);
    let mut m = Minify {
        b,
        i: 0,
        dst: &mut out[start..],
        w: 0,
    };
    match m.document() {
        Some(()) => {
            let w = m.w;
            out.truncate(start + w);
            true
        }
        None => {
            out.truncate(start);
            false
        }
    }
}

/// [`write_minified`]'s cursor: text read up to `b[i]`, output written up to `dst[w]`.
/// `w <= i` always (whitespace is dropped, everything else copied), so a sixteen-byte
/// store at `w` fits in `dst` whenever sixteen bytes can be read at `i`.
struct Minify<'a> {
    b: &'a [u8],
    i: usize,
    dst: &'a mut [u8],
    w: usize,
}

impl Minify<'_> {
    /// The whole text: one value between optional whitespace. `None` at the first byte
    /// serde_json would refuse.
    fn document(&mut self) -> Option<()> {
        // Bit k: whether the container at depth k + 1 (counted from the innermost) is an
        // object. MAX_DEPTH < 128 levels fit.
        let mut objects: u128 = 0;
        let mut depth = 0u32;
        'value: loop {
            self.skip_ws();
            let c = *self.b.get(self.i)?;
            match c {
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    self.put(c);
                    self.skip_ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.b.get(self.i) == Some(&close) {
                        self.put(close);
                    } else {
                        depth += 1;
                        objects = objects << 1 | (c == b'{') as u128;
                        if c == b'{' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => {
                    let end = number_end(self.b, self.i)?;
                    self.copy_to(end);
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // After a value: a comma, the end of its container, or the end of the text.
            loop {
                self.skip_ws();
                if depth == 0 {
                    return (self.i == self.b.len()).then_some(());
                }
                let in_object = objects & 1 == 1;
                match self.b.get(self.i) {
                    Some(b',') => {
                        self.put(b',');
                        if in_object {
                            self.skip_ws();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(&c @ b'}') if in_object => self.put(c),
                    Some(&c @ b']') if !in_object => self.put(c),
                    _ => return None,
                }
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while self.b.get(self.i).is_some_and(|&c| IS_WS[c as usize]) {
            self.i += 1;
        }
    }

    /// Copies `c`, the byte at `b[i]`.
    #[inline(always)]
    fn put(&mut self, c: u8) {
        self.dst[self.w] = c;
        self.w += 1;
        self.i += 1;
    }

    /// Copies `b[i..end]` (a number or a literal: short).
    #[inline(always)]
    fn copy_to(&mut self, end: usize) {
        let (i, w, len) = (self.i, self.w, end - self.i);
        if len <= 16 && i + 16 <= self.b.len() {
            self.dst[w..w + 16].copy_from_slice(&self.b[i..i + 16]);
        } else {
            self.dst[w..w + len].copy_from_slice(&self.b[i..end]);
        }
        self.i = end;
        self.w += len;
    }

    /// A key and its colon, at `b[i]` (after any whitespace).
    #[inline(always)]
    fn key(&mut self) -> Option<()> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        if self.b.get(self.i) != Some(&b':') {
            return None;
        }
        self.put(b':');
        Some(())
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        if self.b.get(self.i..end)? != word {
            return None;
        }
        self.copy_to(end);
        Some(())
    }

    /// The string whose opening quote is at `b[i]`, up to and including its closing
    /// quote.
    #[inline(always)]
    fn string(&mut self) -> Option<()> {
        self.put(b'"');
        let n = self.b.len();
        loop {
            let (i, w) = (self.i, self.w);
            let at = if i + 16 <= n {
                let block: &[u8; 16] = self.b[i..i + 16].try_into().expect("sixteen bytes");
                self.dst[w..w + 16].copy_from_slice(block);
                let m = specials16(block);
                if m == 0 {
                    self.i += 16;
                    self.w += 16;
                    continue;
                }
                i + m.trailing_zeros() as usize
            } else {
                // The last bytes of the text: one at a time.
                let mut j = i;
                while j < n && !NEEDS_ESCAPE[self.b[j] as usize] {
                    j += 1;
                }
                if j == n {
                    return None;
                }
                self.dst[w..w + (j - i)].copy_from_slice(&self.b[i..j]);
                j
            };
            self.w += at - i;
            self.i = at;
            match self.b[at] {
                b'"' => {
                    self.put(b'"');
                    return Some(());
                }
                b'\\' => {
                    let end = escape_end(self.b, at + 1)?;
                    let len = end - at;
                    self.dst[self.w..self.w + len].copy_from_slice(&self.b[at..end]);
                    self.i = end;
                    self.w += len;
                }
                // A raw control byte.
                _ => return None,
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn specials16(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (k, &c)| m | (NEEDS_ESCAPE[c as usize] as u32) << k)
}

/// The index just past the escape whose letter is at `b[i]` (after its backslash).
/// As serde_json (which refuses strings that are not Unicode): a `\u` escape of a
/// leading surrogate must be followed by one of a trailing surrogate, and a trailing
/// surrogate cannot come first.
#[inline]
fn escape_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let unit = hex4(b, i + 1)?;
            let i = i + 5;
            match unit {
                0xDC00..=0xDFFF => None,
                0xD800..=0xDBFF => {
                    if b.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    matches!(hex4(b, i + 2)?, 0xDC00..=0xDFFF).then_some(i + 6)
                }
                _ => Some(i),
            }
        }
        _ => None,
    }
}

/// The four hex digits at `b[i..i + 4]` as a UTF-16 code unit.
#[inline]
fn hex4(b: &[u8], i: usize) -> Option<u16> {
    let mut v = 0u16;
    for &c in b.get(i..i + 4)? {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v << 4 | d as u16;
    }
    Some(v)
}

/// The index just past the number that starts at `b[i]` (RFC 8259 grammar), when its
/// value is one serde_json accepts: it refuses a number that overflows a double.
#[inline(always)]
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if b[i] == b'-' {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => {
            i += 1;
            while digit(i) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digit(i) {
            return None;
        }
        while digit(i) {
            i += 1;
        }
    }
    let mut exp_digits = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digit(i) {
            return None;
        }
        while digit(i) {
            i += 1;
            exp_digits += 1;
        }
    }
    // Finite without parsing: without an exponent, at most 300 characters are below
    // 1e300; with one of at most two digits, 100 characters are below 1e100 * 1e99.
    // Anything else (rare) is put to serde_json itself, whose rounding decides.
    let len = i - start;
    let surely_finite = match exp_digits {
        0 => len <= 300,
        1 | 2 => len <= 100,
        _ => false,
    };
    (surely_finite || is_valid(&b[start..i])).then_some(i)
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
    use proptest::strategy::{Just, Strategy};

    fn enc(s: &str) -> String {
        let mut v = Vec::new();
        write_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn extend_short_copies_every_length_exactly() {
        let src: Vec<u8> = (0..140u8).map(|i| i.wrapping_mul(37)).collect();
        for pre in [0, 1, 7, 30] {
            for n in 0..=src.len() {
                for from in [0, 1, 3] {
                    let b = &src[from..(from + n).min(src.len())];
                    let mut got = vec![0xee; pre];
                    got.shrink_to_fit();
                    extend_short(&mut got, b);
                    let mut want = vec![0xee; pre];
                    want.extend_from_slice(b);
                    assert_eq!(got, want, "pre {pre}, len {n}, from {from}");
                }
            }
        }
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

    /// The escape scan from every start offset agrees with a byte-by-byte search, for the
    /// vector scan (blocks of 16 and the overlapping tail) and the portable one alike.
    fn scan_matches_naive(bytes: &[u8]) {
        for from in 0..=bytes.len() {
            let naive = bytes[from..]
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
                .map(|p| from + p);
            assert_eq!(next_escape(bytes, from), naive, "{bytes:?} from {from}");
            assert_eq!(
                next_escape_swar(bytes, from),
                naive,
                "{bytes:?} from {from}"
            );
        }
    }

    #[test]
    fn escape_scan_finds_every_escape_from_every_offset() {
        for len in 0..70 {
            for at in 0..len {
                for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    scan_matches_naive(&v);
                    // A second escape after the first, and bytes at the edges of the
                    // range (0x20, 0x7f, 0x80, 0xff) that need none.
                    if at + 3 < len {
                        v[at + 3] = b'"';
                    }
                    v[0] = if at == 0 { v[0] } else { 0x80 };
                    v[len - 1] = if at == len - 1 { v[len - 1] } else { 0xff };
                    scan_matches_naive(&v);
                }
            }
            let clean: Vec<u8> = (0..len)
                .map(|i| [0x20, 0x7f, 0x80, 0xff, b'!'][i % 5])
                .collect();
            scan_matches_naive(&clean);
        }
    }

    proptest::proptest! {
        #[test]
        fn escape_scan_matches_naive_search(v in proptest::collection::vec(proptest::prop_oneof![Just(b'a'), Just(b'"'), Just(b'\\'), 0u8..0x20, 0x7fu8..=0xff], 0..80)) {
            scan_matches_naive(&v);
        }

        /// Includes strings dense with bytes to escape, of every length around the
        /// 16-byte blocks the escape scan tests.
        #[test]
        fn escaping_matches_serde_json(s in "\\PC*|[\"\\\\\u{0}-\u{1f}a-zé🎉]{0,100}") {
            proptest::prop_assert_eq!(enc(&s), serde_json::to_string(&s).unwrap());
        }
    }

    proptest::proptest! {
        /// The integer fast path copies exactly what parsing and writing back would give.
        #[test]
        fn canonical_i64_copies_what_parse_and_write_give(s in "-?[0-9]{0,22}|[+ ]?[0-9]{1,3}|-?0[0-9]{0,3}") {
            if is_canonical_i64(s.as_bytes()) {
                let v: i64 = s.parse().unwrap();
                let mut out = Vec::new();
                write_i64(&mut out, v);
                proptest::prop_assert_eq!(out, s.as_bytes());
            }
        }

        /// The finiteness shortcut agrees with parsing, for every JSON number.
        #[test]
        fn finite_shortcut_agrees_with_parse(s in "-?(0|[1-9][0-9]{0,3}|[1-9]0{290,320})(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?") {
            proptest::prop_assume!(is_json_number(s.as_bytes()));
            let parsed = s.parse::<f64>().map(f64::is_finite).unwrap_or(false);
            proptest::prop_assert_eq!(json_number_is_finite(s.as_bytes()), parsed);
        }
    }

    #[test]
    fn canonical_i64_and_finite_shortcuts_at_their_edges() {
        for ok in ["0", "7", "-7", "123456789012345678", "-123456789012345678"] {
            assert!(is_canonical_i64(ok.as_bytes()), "{ok}");
        }
        for no in [
            "",
            "-",
            "-0",
            "00",
            "007",
            "+5",
            " 1",
            "1 ",
            "1234567890123456789",
            "1.0",
            "1e3",
        ] {
            assert!(!is_canonical_i64(no.as_bytes()), "{no}");
        }
        let big = |n: usize| format!("1{}", "0".repeat(n - 1));
        assert!(json_number_is_finite(big(300).as_bytes()));
        assert!(json_number_is_finite(big(308).as_bytes()));
        assert!(!json_number_is_finite(big(310).as_bytes()));
        assert!(!json_number_is_finite(b"1e400"));
        assert!(!json_number_is_finite(b"-1E309"));
        assert!(json_number_is_finite(b"1e-400"));
        assert!(json_number_is_finite(b"1.7976931348623157e308"));
    }

    /// The minifier [`write_minified`] replaced: whitespace outside strings dropped, byte
    /// by byte, on text already checked. The reference for its output.
    fn minify_bytewise(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut in_str, mut esc) = (false, false);
        for &ch in b {
            if in_str {
                out.push(ch);
                if esc {
                    esc = false;
                } else if ch == b'\\' {
                    esc = true;
                } else if ch == b'"' {
                    in_str = false;
                }
            } else if !matches!(ch, b' ' | b'\n' | b'\r' | b'\t') {
                in_str = ch == b'"';
                out.push(ch);
            }
        }
        out
    }

    /// [`write_minified`] accepts exactly what serde_json accepts ([`is_valid`]), writes
    /// what the byte-by-byte minifier writes, and leaves the buffer alone when it
    /// refuses, whether or not the text is known to be UTF-8.
    fn minified_agrees(b: &[u8]) {
        let want = is_valid(b);
        let known = std::str::from_utf8(b).is_ok();
        for utf8 in [false, known] {
            let mut out = b"prefix".to_vec();
            let ok = write_minified(&mut out, b, utf8);
            assert_eq!(ok, want, "verdict for {:?}", String::from_utf8_lossy(b));
            if ok {
                assert_eq!(
                    String::from_utf8_lossy(&out[6..]),
                    String::from_utf8_lossy(&minify_bytewise(b)),
                    "output for {:?}",
                    String::from_utf8_lossy(b)
                );
            } else {
                assert_eq!(out, b"prefix");
            }
        }
    }

    /// JSON text: every kind of value, strings with every kind of escape (paired and lone
    /// surrogates too), numbers of every shape, whitespace of every kind between tokens.
    fn json_text() -> impl Strategy<Value = String> {
        let ws = "[ \t\n\r]{0,2}";
        let leaf = proptest::prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,4})?",
            "\"([a-z é🎉\u{7f}]|\\\\[\"\\\\/bfnrtx]|\\\\u[0-9a-fA-F]{4}|\\\\u[dD][89abAB][0-9a-fA-F]{2}(\\\\u[dD][0-9a-fA-F]{3})?){0,8}\"",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let member = (ws, inner.clone(), ws, ws, ws);
            proptest::prop_oneof![
                proptest::collection::vec(member.clone(), 0..6).prop_map(|items| {
                    let body: Vec<String> = items
                        .into_iter()
                        .map(|(a, v, b, _, _)| format!("{a}{v}{b}"))
                        .collect();
                    format!("[{}]", body.join(","))
                }),
                proptest::collection::vec(("[a-z\"\\\\é]{0,3}", member), 0..6).prop_map(|items| {
                    let body: Vec<String> = items
                        .into_iter()
                        .map(|(k, (a, v, b, c, d))| {
                            let k = serde_json::to_string(&k).unwrap();
                            format!("{a}{k}{b}:{c}{v}{d}")
                        })
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
        .prop_flat_map(move |v| (ws, Just(v), ws).prop_map(|(a, v, b)| format!("{a}{v}{b}")))
    }

    /// A byte that breaks JSON in an interesting way where it lands.
    fn json_byte() -> impl Strategy<Value = u8> {
        proptest::prop_oneof![
            proptest::sample::select(
                b"{}[]\",:\\/u0123456789abcdefABCDEF.eE+-tnrlsx \t\n\r".to_vec()
            ),
            proptest::sample::select(vec![0u8, 0x1f, 0x7f, 0xc3, 0xa9, 0xed, 0xa0, 0xff]),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn minified_json_matches_serde_json_on_valid_text(s in json_text()) {
            minified_agrees(s.as_bytes());
        }

        /// Valid text with up to three bytes deleted, inserted or replaced.
        #[test]
        fn minified_json_matches_serde_json_on_damaged_text(
            s in json_text(),
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0..3u8, json_byte()), 1..4),
        ) {
            let mut b = s.into_bytes();
            for (at, op, byte) in edits {
                let i = at.index(b.len() + 1);
                match op {
                    0 if i < b.len() => { b.remove(i); }
                    1 => b.insert(i, byte),
                    _ if i < b.len() => b[i] = byte,
                    _ => b.push(byte),
                }
            }
            minified_agrees(&b);
        }

        #[test]
        fn minified_json_matches_serde_json_on_token_soup(b in proptest::collection::vec(json_byte(), 0..40)) {
            minified_agrees(&b);
        }

        /// Numbers at and past the range of a double, where serde_json's own rounding
        /// decides.
        #[test]
        fn minified_json_matches_serde_json_on_numbers_at_the_edge(
            s in "-?(0|[1-9][0-9]{0,3}|17976931348623157[0-9]{0,3}|[1-9]0{290,320})(\\.[0-9]{0,20})?([eE][+-]?(0|3[0-2][0-9]|[0-9]{1,12}))?"
        ) {
            minified_agrees(s.as_bytes());
            minified_agrees(format!("[{s}, {s}]").as_bytes());
        }
    }

    #[test]
    fn minified_json_at_its_edges() {
        for text in [
            "",
            " ",
            "{}",
            "[]",
            " [ ] ",
            "{ }",
            "[,]",
            "[1,]",
            "{\"a\":1,}",
            "{,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{1:2}",
            "\"\\ud83c\\udf81\"",
            "\"\\ud83c\"",
            "\"\\ud83c\\u0041\"",
            "\"\\udf81\"",
            "\"\\ud83c\\ud83c\"",
            "\"\\ud83c\\n\"",
            "\"\\ud83c\\udf8\"",
            "\"\\ud83c\\",
            "\"\\ud83c",
            "\"\\u12\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "\"a\tb\"",
            "\"a\u{7f}b\"",
            "01",
            "-",
            "-0",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E-7",
            "0.0e0",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "1e308",
            "1e309",
            "-1e309",
            "1e-400",
            "0e999999999999",
            "1e999999999999",
            "123456789012345678901234567890",
            "tru",
            "nul",
            "falsey",
            "null null",
            "\"a\"b",
            "[\"a\" \"b\"]",
            "{\"a\":1 \"b\":2}",
            "{\"k\": [1, 2, {\"x\": null}], \"é\": \"🎉\"}",
            "\u{feff}{}",
            "{}\u{0}",
            "[1]\n\r\t ",
        ] {
            minified_agrees(text.as_bytes());
        }
        minified_agrees(format!("1{}", "0".repeat(308)).as_bytes());
        minified_agrees(format!("1{}", "0".repeat(309)).as_bytes());
        minified_agrees(format!("1{}.5", "0".repeat(300)).as_bytes());
        minified_agrees(b"\"\xff\"");
        minified_agrees(b"\"\xc3\xa9\"");
        minified_agrees(b"\"\xed\xa0\x80\"");
        minified_agrees(b"\xc3\xa9");
    }

    #[test]
    fn minified_json_nests_as_deep_as_serde_json() {
        for depth in [1, 126, 127, 128, 129, 300] {
            let open = |d: usize, s: &str| s.repeat(d);
            for (o, c) in [("[", "]"), ("{\"k\":", "}"), ("[ {\"k\" : ", "} ]")] {
                for inner in ["", "1", "[]", "{}"] {
                    let text = format!("{}{inner}{}", open(depth, o), open(depth, c));
                    minified_agrees(text.as_bytes());
                }
            }
        }
        // What the limit is: serde_json's recursion limit of 128, the 128th refused.
        let deep = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
        assert!(is_valid(deep(MAX_DEPTH as usize).as_bytes()));
        assert!(!is_valid(deep(MAX_DEPTH as usize + 1).as_bytes()));
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
