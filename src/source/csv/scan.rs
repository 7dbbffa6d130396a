//! Where a block of CSV input can be cut into whole records, found without parsing it.
//!
//! The reader is the one serial stage of a run. Parsing a block (finding every field) is
//! most of its work, but to hand the block on it only needs to know where the block's
//! last whole record ends, how many records it holds and how many lines it spans. This
//! scan answers that 64 bytes at a time with bit masks, in the manner of simdjson and
//! simdcsv: a prefix XOR of the quote positions tells which bytes are inside quotes, and
//! a CR or LF outside quotes that follows a byte other than CR or LF ends a record
//! (csv-core skips blank lines, and ends a record on the first byte of its terminator).
//! The block is then parsed, field by field, on a mapper thread.
//!
//! The masks agree with csv-core only when every quote is where RFC 4180 puts it. So the
//! scan gives up (returns `None`, and the reader parses that block itself, as before)
//! on any quote that opens a field anywhere but at its start, any closing quote followed
//! by something other than a delimiter, a line end or a second quote, an unclosed quote
//! at the end of the input, or a record longer than the caller's limit. Whenever it does
//! answer, the answer is exactly what parsing would have found: the tests in `csv.rs`
//! read random input through both paths and compare them with the `csv` crate.

/// Whole records at the start of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Just past the last record's first terminator byte (or the end of the input).
    pub end: usize,
    pub records: usize,
    /// LF bytes in `buf[..end]`.
    pub newlines: u64,
}

/// Scans `buf`, which starts at a record boundary (not at the stream's start: no BOM),
/// for at most `max_records` whole records. `eof`: nothing follows `buf`. `None`: the
/// block must be parsed serially (see the module doc), or holds no whole record.
pub fn scan(
    buf: &[u8],
    delimiter: u8,
    quote: u8,
    eof: bool,
    max_records: usize,
    max_len: usize,
) -> Option<Cut> {
    let n = buf.len();
    let (d, q) = (delimiter, quote);
    // May an opening quote follow this byte (it ends a field, or closes a quote)?
    let sep = |c: u8| c == d || c == b'\n' || c == b'\r';
    // All ones while the previous word ended inside quotes.
    let mut inside = 0u64;
    // Bit 0: the byte before this word may precede an opening quote (a delimiter, a line
    // end, a closing quote, or the block's start).
    let mut prev_sep = 1u64;
    // Bit 0: the byte before this word is a line end outside quotes (or the block's start,
    // where leading line ends are blank lines).
    let mut prev_end = 1u64;
    // The last byte of the previous word closed a quote; what follows it is not checked.
    let mut open_close = false;
    let (mut records, mut last_end) = (0usize, 0usize);
    let mut base = 0;
    while base < n {
        let len = (n - base).min(64);
        let word = &buf[base..base + len];
        let top = len - 1;
        let (quotes, term) = masks(word, q);
        if open_close && !(word[0] == q || sep(word[0])) {
            return None;
        }
        let unquoted_end;
        if quotes == 0 && inside == 0 {
            // Most words: no quote in or around them, so no quoting rule to check.
            unquoted_end = term;
            prev_sep = sep(word[top]) as u64;
            open_close = false;
        } else {
            let delimiters = byte_mask(word, d);
            let valid = if len == 64 { !0 } else { (1u64 << len) - 1 };
            let follows = quotes | delimiters | term;
            // Bit i: inside quotes after byte i, then before it.
            let after = prefix_xor(quotes) ^ inside;
            let before = (after << 1) | (inside & 1);
            let opening = quotes & !before;
            let closing = quotes & before;
            // A closing quote must be followed by a quote (`""`), a delimiter or a line
            // end; the last byte's follower is in the next word.
            if closing & !(follows >> 1) & (valid >> 1) != 0 {
                return None;
            }
            let seps = delimiters | term | closing;
            if opening & !((seps << 1) | prev_sep) != 0 {
                return None;
            }
            unquoted_end = term & !before;
            open_close = closing >> top & 1 == 1;
            prev_sep = seps >> top & 1;
            inside = if after >> top & 1 == 1 { !0 } else { 0 };
        }
        let mut ends = unquoted_end & !((unquoted_end << 1) | prev_end);
        prev_end = unquoted_end >> top & 1;
        while ends != 0 {
            let end = base + ends.trailing_zeros() as usize + 1;
            if end - last_end > max_len {
                return None;
            }
            records += 1;
            last_end = end;
            if records == max_records {
                return Some(cut(buf, end, records));
            }
            ends &= ends - 1;
        }
        base += len;
    }
    if !eof {
        return (records > 0).then(|| cut(buf, last_end, records));
    }
    if inside != 0 {
        // An unclosed quote at the end of the input: csv-core's own rules apply.
        return None;
    }
    // What follows the last terminator is one more record unless it is all blank lines.
    if buf[last_end..].iter().any(|&b| b != b'\n' && b != b'\r') {
        if n - last_end > max_len {
            return None;
        }
        records += 1;
    }
    Some(cut(buf, n, records))
}

/// The cut at `end`, with its lines counted (one SIMD pass of `memchr`).
fn cut(buf: &[u8], end: usize, records: usize) -> Cut {
    Cut {
        end,
        records,
        newlines: memchr::memchr_iter(b'\n', &buf[..end]).count() as u64,
    }
}

/// Bit `i` of the result: the XOR of bits `0..=i` of `x` (odd number of quotes so far).
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The quote and line-end (CR or LF) masks of up to 64 bytes: bit `i` set where byte
/// `i` is one (bits past `b.len()` are clear).
#[inline(always)]
fn masks(b: &[u8], q: u8) -> (u64, u64) {
    if let Ok(b) = <&[u8; 64]>::try_from(b) {
        return masks64(b, q);
    }
    let (mut quotes, mut term) = (0, 0);
    for (i, &c) in b.iter().enumerate() {
        quotes |= ((c == q) as u64) << i;
        term |= ((c == b'\n' || c == b'\r') as u64) << i;
    }
    (quotes, term)
}

/// Bit `i` set where byte `i` of `b` (up to 64 bytes) is `c`.
fn byte_mask(b: &[u8], c: u8) -> u64 {
    if let Ok(b) = <&[u8; 64]>::try_from(b) {
        // The quote mask of `c` is the mask of `c`.
        return masks64(b, c).0;
    }
    b.iter()
        .enumerate()
        .fold(0, |m, (i, &x)| m | ((x == c) as u64) << i)
}

/// Sixteen bytes at a time with SSE2, which every x86_64 CPU has. The bytes are loaded as
/// words of a fixed-size array (no bounds checks; the compiler makes one load of each
/// sixteen); the only `unsafe` is calling the intrinsics, which compute on values and
/// take no pointers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn masks64(b: &[u8; 64], q: u8) -> (u64, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        i64::from_le_bytes(w)
    };
    let (mut quotes, mut term) = (0u64, 0u64);
    for k in 0..4 {
        let at = k * 16;
        // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always
        // available; they only compute on values (no memory access).
        let (qm, tm) = unsafe {
            let v = _mm_set_epi64x(word(at + 8), word(at));
            let hit = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
            (
                _mm_movemask_epi8(hit(q)) as u16,
                _mm_movemask_epi8(_mm_or_si128(hit(b'\n'), hit(b'\r'))) as u16,
            )
        };
        quotes |= (qm as u64) << at;
        term |= (tm as u64) << at;
    }
    (quotes, term)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn masks64(b: &[u8; 64], q: u8) -> (u64, u64) {
    let (mut quotes, mut term) = (0, 0);
    for (i, &c) in b.iter().enumerate() {
        quotes |= ((c == q) as u64) << i;
        term |= ((c == b'\n' || c == b'\r') as u64) << i;
    }
    (quotes, term)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: &str, eof: bool) -> Option<(usize, usize, u64)> {
        scan(s.as_bytes(), b',', b'"', eof, usize::MAX, usize::MAX)
            .map(|c| (c.end, c.records, c.newlines))
    }

    #[test]
    fn records_end_on_the_first_terminator_byte_and_blank_lines_are_skipped() {
        assert_eq!(cut("a,b\r\nc\n\n\nd", false), Some((7, 2, 2)));
        assert_eq!(cut("a,b\r\nc\n\n\nd", true), Some((10, 3, 4)));
        assert_eq!(cut("\n\nx\n", false), Some((4, 1, 3)));
        assert_eq!(cut("a\n\r\n", true), Some((4, 1, 2)));
    }

    #[test]
    fn line_ends_inside_quotes_do_not_end_records() {
        assert_eq!(cut("\"a\nb\",\"c\"\"\"\nx", false), Some((12, 1, 2)));
        let long = format!("\"{}\n{}\"\n", "x".repeat(70), "y".repeat(70));
        assert_eq!(cut(&long, false), Some((long.len(), 1, 2)));
    }

    #[test]
    fn odd_quoting_is_left_to_the_parser() {
        assert_eq!(cut("ab\"c\n", true), None);
        assert_eq!(cut("\"ab\"c\n", true), None);
        assert_eq!(cut("\"open\n", true), None);
        // A closing quote whose follower is in the next word.
        let s = format!("{},\"x\"y\n", "a".repeat(60));
        assert_eq!(s.find("\"y"), Some(63));
        assert_eq!(cut(&s, true), None);
    }

    #[test]
    fn stops_at_the_record_and_length_limits() {
        let b = b"a\nb\nc\n";
        let c = scan(b, b',', b'"', false, 2, 100).unwrap();
        assert_eq!((c.end, c.records, c.newlines), (4, 2, 2));
        assert_eq!(scan(b"a\nbbbbbb\n", b',', b'"', false, 9, 5), None);
        assert_eq!(scan(b"abc", b',', b'"', false, 9, 5), None);
    }
}
