//! One CSV record out of a byte buffer, parsed in place.
//!
//! The reader thread is the one serial stage of a run, and the `csv` crate's byte-at-a-time
//! state machine was most of its time (a fifth of a whole dry run). This parser jumps
//! from one special byte to the next with `memchr` and leaves field bytes where they are:
//! a field is a `(start, end)` span of the chunk's own input buffer, so nothing is copied.
//! Only a quoted field with doubled quotes (`""`) is rewritten, in place, to its unescaped
//! bytes (it only gets shorter), and the bytes it freed become spaces, so the record's
//! bytes stay valid UTF-8 whenever its fields are (the mapper checks a record once, as a
//! whole, and then only that each field starts and ends on a character boundary: a
//! record csv-core rewrites has no delimiters left between its fields).
//!
//! The result is exactly the `csv` crate's (csv-core with its defaults: CR, LF or CRLF
//! ends a record, blank lines are skipped, `""` is a quote inside quotes, a quote inside
//! an unquoted field is data, a UTF-8 BOM opens the stream), down to each record's byte
//! offset and line. Anything unusual (a quote followed by other bytes, an unclosed quote
//! at the end, a delimiter or quote that is itself CR or LF) is handed to csv-core itself
//! for that one record, so odd files parse as they always did. The tests compare the two
//! on random input.

use csv_core::ReadRecordResult;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What [`Parser::parse`] found at a record start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A record; its fields were appended. `end`: the buffer index just past the bytes it
    /// consumed (its terminator included, or only the CR of a CRLF, as csv-core does).
    Record { end: usize, newlines: u64 },
    /// The record does not end within the buffer: read more and parse it again (nothing
    /// was appended and the buffer is unchanged).
    NeedMore,
    /// End of input: only blank lines were left (consumed up to `end`).
    End { end: usize, newlines: u64 },
}

/// A field: `buf[start..end]`.
pub type Span = (usize, usize);

pub struct Parser {
    delimiter: u8,
    quote: u8,
    /// False when the delimiter or quote make the fast path's shortcuts wrong.
    fast: bool,
    /// Boxed: its tables are large and it is rarely used.
    core: Box<csv_core::Reader>,
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Fields of the record being parsed that hold `""` and must be unescaped.
    unescape: Vec<usize>,
    /// A copy of the field being unescaped (see [`unescape_in_place`]).
    scratch: Vec<u8>,
    /// Rewrite records in place (unescape `""`, csv-core's output over the input). Off
    /// only to count a record's fields while keeping its bytes as read.
    pub(super) in_place: bool,
    /// After [`Parser::parse`] returned a record: the index of its field whose opening
    /// quote was never closed, so that csv-core read the rest of the input into it.
    pub unclosed: Option<usize>,
}

impl Parser {
    pub fn new(delimiter: u8, quote: u8) -> Self {
        let special = |b: u8| b == b'\r' || b == b'\n';
        Parser {
            delimiter,
            quote,
            fast: delimiter != quote && !special(delimiter) && !special(quote),
            core: Box::new(
                csv_core::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .quote(quote)
                    .build(),
            ),
            out: Vec::new(),
            ends: Vec::new(),
            unescape: Vec::new(),
            scratch: Vec::new(),
            in_place: true,
            unclosed: None,
        }
    }

    /// False when the delimiter or quote is CR or LF, or both are one byte: then records
    /// cannot be found by a scan for line ends and quotes.
    pub fn is_fast(&self) -> bool {
        self.fast
    }

    /// Parses the record that starts at `buf[at]`; `buf[..filled]` holds input, `eof` says
    /// no more will come. `first`: this is the stream's first record (a BOM is skipped).
    pub fn parse(
        &mut self,
        buf: &mut [u8],
        at: usize,
        filled: usize,
        eof: bool,
        first: bool,
        fields: &mut Vec<Span>,
    ) -> Parsed {
        self.unclosed = None;
        let mut i = at;
        if first {
            if filled - at < BOM.len() && !eof && BOM.starts_with(&buf[at..filled]) {
                return Parsed::NeedMore;
            }
            if buf[at..filled].starts_with(BOM) {
                i += BOM.len();
            }
        }
        let body = i;
        // Blank lines before the record belong to its read, as in csv-core.
        let mut newlines = 0;
        while i < filled && (buf[i] == b'\n' || buf[i] == b'\r') {
            newlines += (buf[i] == b'\n') as u64;
            i += 1;
        }
        if i == filled {
            if !eof {
                return Parsed::NeedMore;
            }
            return Parsed::End {
                end: filled,
                newlines,
            };
        }
        if !self.fast {
            return self.slow(buf, at, i, filled, eof, fields);
        }
        let mark = fields.len();
        self.unescape.clear();
        let (d, q) = (self.delimiter, self.quote);
        let end = 'record: loop {
            // At the start of a field.
            if i == filled {
                if !eof {
                    fields.truncate(mark);
                    return Parsed::NeedMore;
                }
                fields.push((i, i));
                break filled;
            }
            if buf[i] != q {
                match find_field_end(buf, i, filled, d) {
                    Some(j) => {
                        fields.push((i, j));
                        if buf[j] == d {
                            i = j + 1;
                            continue;
                        }
                        newlines += (buf[j] == b'\n') as u64;
                        break j + 1;
                    }
                    None if eof => {
                        fields.push((i, filled));
                        break filled;
                    }
                    None => {
                        fields.truncate(mark);
                        return Parsed::NeedMore;
                    }
                }
            }
            let start = i + 1;
            let mut r = start;
            let mut doubled = false;
            loop {
                let found = scan_quoted(buf, &mut r, filled, q, &mut newlines, &mut doubled)
                    .or_else(|| find_quote_or_lf(buf, r, filled, q));
                let Some(close) = found else {
                    let field = fields.len() - mark;
                    fields.truncate(mark);
                    if !eof {
                        return Parsed::NeedMore;
                    }
                    // An unclosed quote at the end of input: csv-core's reading of it,
                    // which takes everything after the quote into this field.
                    let parsed = self.slow(buf, at, body, filled, eof, fields);
                    if let Parsed::Record { .. } = parsed {
                        self.unclosed = Some(field);
                    }
                    return parsed;
                };
                if buf[close] == b'\n' {
                    // A line break inside quotes: data, but it counts as a line.
                    newlines += 1;
                    r = close + 1;
                    continue;
                }
                if close + 1 == filled {
                    if !eof {
                        fields.truncate(mark);
                        return Parsed::NeedMore;
                    }
                    self.note(fields, doubled);
                    fields.push((start, close));
                    break 'record filled;
                }
                let next = buf[close + 1];
                if next == q {
                    doubled = true;
                    r = close + 2;
                    continue;
                }
                if next == d {
                    self.note(fields, doubled);
                    fields.push((start, close));
                    i = close + 2;
                    continue 'record;
                }
                if next == b'\n' || next == b'\r' {
                    self.note(fields, doubled);
                    fields.push((start, close));
                    newlines += (next == b'\n') as u64;
                    break 'record close + 2;
                }
                // Bytes after a closing quote: csv-core's reading of it.
                fields.truncate(mark);
                return self.slow(buf, at, body, filled, eof, fields);
            }
        };
        if self.in_place {
            for &f in &self.unescape {
                fields[f] = unescape_in_place(buf, fields[f], q, &mut self.scratch);
            }
        }
        Parsed::Record { end, newlines }
    }

    /// Remembers that the field about to be pushed holds doubled quotes.
    fn note(&mut self, fields: &[Span], doubled: bool) {
        if doubled {
            self.unescape.push(fields.len());
        }
    }

    /// csv-core on one record (`buf[from..]`, past any BOM), its output written back
    /// over the record's own bytes.
    fn slow(
        &mut self,
        buf: &mut [u8],
        at: usize,
        from: usize,
        filled: usize,
        eof: bool,
        fields: &mut Vec<Span>,
    ) -> Parsed {
        // From the start state, and past csv-core's own BOM check (which looks only at
        // its first input): one blank line moves it there and is dropped.
        self.core.reset();
        let _ = self.core.read_record(b"\n", &mut [0], &mut [0]);
        let input = &buf[from..filled];
        if self.out.len() < input.len() + 1 {
            self.out.resize(input.len() + 1, 0);
        }
        if self.ends.is_empty() {
            self.ends.resize(64, 0);
        }
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        loop {
            let (res, i, o, e) =
                self.core
                    .read_record(&input[nin..], &mut self.out[nout..], &mut self.ends[nend..]);
            nin += i;
            nout += o;
            nend += e;
            match res {
                ReadRecordResult::InputEmpty if !eof => return Parsed::NeedMore,
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => break,
                ReadRecordResult::End => {
                    return Parsed::End {
                        end: filled,
                        newlines: count_newlines(&buf[at..filled]),
                    }
                }
            }
        }
        let end = from + nin;
        let newlines = count_newlines(&buf[at..end]);
        if self.in_place {
            buf[from..from + nout].copy_from_slice(&self.out[..nout]);
            buf[from + nout..end].fill(b' ');
        }
        let mut prev = from;
        for &e in &self.ends[..nend] {
            fields.push((prev, from + e));
            prev = from + e;
        }
        Parsed::Record { end, newlines }
    }
}

fn count_newlines(b: &[u8]) -> u64 {
    if b.len() < 32 {
        return b.iter().filter(|&&c| c == b'\n').count() as u64;
    }
    memchr::memchr_iter(b'\n', b).count() as u64
}

/// Sixteen bytes at a time with SSE2, which every x86_64 CPU has. The block is loaded as
/// two bounds-checked words (the compiler makes one load of it); the only `unsafe` is
/// calling the SSE2 intrinsics themselves, which takes no pointers. Most fields end
/// within the first block.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };

    #[inline(always)]
    fn word(buf: &[u8], at: usize) -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        i64::from_le_bytes(b)
    }

    /// The first byte equal to `a`, `b` or `c` in `buf[i..end]`.
    #[inline(always)]
    pub fn find3(buf: &[u8], mut i: usize, end: usize, a: u8, b: u8, c: u8) -> Option<usize> {
        while i + 16 <= end {
            let (lo, hi) = (word(buf, i), word(buf, i + 8));
            // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always
            // available; they only compute on values (no memory access).
            let m = unsafe {
                let v = _mm_set_epi64x(hi, lo);
                let hit = _mm_or_si128(
                    _mm_or_si128(
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(a as i8)),
                        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)),
                    ),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8)),
                );
                _mm_movemask_epi8(hit)
            };
            if m != 0 {
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 16;
        }
        buf[i..end]
            .iter()
            .position(|&x| x == a || x == b || x == c)
            .map(|k| i + k)
    }
}

/// The first delimiter, CR or LF in `buf[i..end]`: where an unquoted field ends.
#[cfg(target_arch = "x86_64")]
#[inline]
fn find_field_end(buf: &[u8], i: usize, end: usize, d: u8) -> Option<usize> {
    sse2::find3(buf, i, end, d, b'\n', b'\r')
}

/// The first quote `q` or LF in `buf[i..end]` (inside quotes, where LF is data but
/// still counts as a line).
#[cfg(target_arch = "x86_64")]
#[inline]
fn find_quote_or_lf(buf: &[u8], i: usize, end: usize, q: u8) -> Option<usize> {
    sse2::find3(buf, i, end, q, b'\n', b'\n')
}

/// Elsewhere, `memchr` (SIMD where the platform has it).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn find_field_end(buf: &[u8], i: usize, end: usize, d: u8) -> Option<usize> {
    memchr::memchr3(d, b'\n', b'\r', &buf[i..end]).map(|k| i + k)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn find_quote_or_lf(buf: &[u8], i: usize, end: usize, q: u8) -> Option<usize> {
    memchr::memchr2(q, b'\n', &buf[i..end]).map(|k| i + k)
}

/// Inside a quoted field from `*r`: steps over whole blocks of sixteen bytes, while the
/// byte after a block is there to look at too, counting line feeds and noting doubled
/// quotes (`doubled`), up to the first quote that is not doubled, which it returns (the
/// closing quote, or a stray one the caller hands to csv-core). `None`: fewer than
/// seventeen bytes are left, and `*r` is where to go on one quote at a time.
///
/// A JSON object in a CSV field has a doubled quote every few bytes: one test of a bit
/// per quote, instead of one search per quote.
#[inline(always)]
fn scan_quoted(
    buf: &[u8],
    r: &mut usize,
    filled: usize,
    q: u8,
    newlines: &mut u64,
    doubled: &mut bool,
) -> Option<usize> {
    while *r + 17 <= filled {
        let at = *r;
        let block: &[u8; 16] = buf[at..at + 16].try_into().expect("sixteen bytes");
        let (mut quotes, lfs) = (byte_mask(block, q), byte_mask(block, b'\n'));
        // The twin of a quote in the block's last byte opens the next block.
        let mut twin_after = false;
        while quotes != 0 {
            let p = quotes.trailing_zeros() as usize;
            if buf[at + p + 1] != q {
                // (`count_ones` is a dozen instructions on baseline x86_64: skipped for
                // the usual block without a line feed.)
                if lfs != 0 {
                    *newlines += (lfs & ((1 << p) - 1)).count_ones() as u64;
                }
                return Some(at + p);
            }
            *doubled = true;
            twin_after = p == 15;
            quotes &= !(3 << p);
        }
        if lfs != 0 {
            *newlines += lfs.count_ones() as u64;
        }
        *r = at + 16 + twin_after as usize;
    }
    None
}

/// Rewrites a quoted field's `""` pairs as `"`, in place; the freed tail becomes spaces.
///
/// A JSON object in a CSV field has a doubled quote every few bytes, so this moves the
/// bytes sixteen at a time from a copy of the field (`scratch`, reused): each step finds
/// the next quote in a block, stores the whole block where its bytes go (what lands past
/// the quote is overwritten by the next step), keeps that quote and skips its twin. No
/// store reaches past the field, and none can overwrite a byte not yet read, since reads
/// come from the copy. The parser has seen every quote inside the field doubled.
fn unescape_in_place(buf: &mut [u8], (start, end): Span, quote: u8, scratch: &mut Vec<u8>) -> Span {
    let len = end - start;
    scratch.clear();
    scratch.extend_from_slice(&buf[start..end]);
    // Padding, so that every block read stays inside the copy; never a quote.
    scratch.resize(len + 16, !quote);
    let (mut w, mut r) = (start, 0);
    while r < len {
        let block: &[u8; 16] = scratch[r..r + 16]
            .try_into()
            .expect("the padding leaves sixteen bytes");
        // Bytes of the field to move: up to and including a quote, else the whole block.
        let (take, skip) = match byte_mask(block, quote) {
            0 => {
                let n = 16.min(len - r);
                (n, n)
            }
            m => {
                let k = m.trailing_zeros() as usize;
                (k + 1, k + 2)
            }
        };
        if w + 16 <= end {
            buf[w..w + 16].copy_from_slice(block);
        } else {
            buf[w..w + take].copy_from_slice(&block[..take]);
        }
        w += take;
        r += skip;
    }
    buf[w..end].fill(b' ');
    (start, w)
}

/// Bit `k` set when `block[k]` is `byte`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn byte_mask(block: &[u8; 16], byte: u8) -> u32 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: `block` is sixteen bytes, so the unaligned 16-byte load stays inside it;
    // SSE2 is part of the x86_64 baseline.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn byte_mask(block: &[u8; 16], byte: u8) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (k, &b)| m | ((b == byte) as u32) << k)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records as (fields, byte offset, line).
    pub(in crate::source::csv) type Rows = Vec<(Vec<Vec<u8>>, u64, u64)>;

    /// Every record as (fields, byte offset, line) by the `csv` crate.
    pub(in crate::source::csv) fn by_csv_crate(input: &[u8], d: u8, q: u8) -> Rows {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(d)
            .quote(q)
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while rdr.read_byte_record(&mut rec).unwrap() {
            let p = rec.position().unwrap();
            out.push((rec.iter().map(|f| f.to_vec()).collect(), p.byte(), p.line()));
        }
        out
    }

    /// The same by [`Parser`], fed `step` bytes at a time as the reader would (a record
    /// that does not fit is parsed again once more bytes are there).
    fn by_parser(input: &[u8], d: u8, q: u8, step: usize) -> Rows {
        let mut p = Parser::new(d, q);
        let mut buf = input.to_vec();
        let mut filled = 0;
        let (mut at, mut line, mut first) = (0, 1u64, true);
        let mut fields = Vec::new();
        let mut out = Vec::new();
        loop {
            let eof = filled == buf.len();
            match p.parse(&mut buf, at, filled, eof, first, &mut fields) {
                Parsed::NeedMore => {
                    assert!(!eof, "NeedMore at the end of input");
                    filled = (filled + step).min(buf.len());
                }
                Parsed::End { .. } => break,
                Parsed::Record { end, newlines } => {
                    let f = fields.iter().map(|&(s, e)| buf[s..e].to_vec()).collect();
                    out.push((f, at as u64, line));
                    assert!(
                        std::str::from_utf8(&buf[at..end]).is_ok()
                            || std::str::from_utf8(input).is_err(),
                        "unescaping left invalid UTF-8"
                    );
                    fields.clear();
                    line += newlines;
                    at = end;
                    first = false;
                }
            }
        }
        out
    }

    fn same(input: &[u8]) {
        for (d, q) in [(b',', b'"'), (b';', b'\''), (b'\t', b'"')] {
            let want = by_csv_crate(input, d, q);
            for step in [1, 3, 7, 64, input.len().max(1)] {
                assert_eq!(
                    by_parser(input, d, q, step),
                    want,
                    "input {:?}, step {step}, delimiter {:?}",
                    String::from_utf8_lossy(input),
                    d as char
                );
            }
        }
    }

    #[test]
    fn matches_the_csv_crate_on_the_cases_that_matter() {
        for case in [
            &b""[..],
            b"a,b,c\n1,2,3\n",
            b"a,b\r\n1,2\r\n\r\n3,4",
            b"a,b\r1,2\r3",
            b"\n\n\na\n\n",
            b"\xEF\xBB\xBFa,b\n1,2\n",
            b"\xEF\xBB\xBF",
            b"\"a \"\"quoted\"\" \nline\",b\n\"\",\"\"\"\"\n",
            b"\"unclosed,a\nb\n",
            b"\"x\"y,z\n",
            b"a\"b,c\"\n",
            b"a,\n,\n",
            b"\"a\"",
            b"\"a\"\r",
            b"\"caf\xC3\xA9 \"\"\xF0\x9F\x91\x8D\"\"\",\xC3\xA9\n",
            b"\"\xC3\",\"\xA9\"\n",
            b"a,b\n\xEF\xBB\xBFc,d\n",
        ] {
            same(case);
        }
    }

    #[test]
    fn a_delimiter_that_is_a_line_end_goes_the_slow_way_and_still_matches() {
        let input = b"a\rb\nc,d\r\n\"e\rf\"\n";
        for (d, q) in [(b'\r', b'"'), (b',', b'\n'), (b',', b',')] {
            let want = by_csv_crate(input, d, q);
            assert_eq!(by_parser(input, d, q, 2), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_the_csv_crate_on_random_input(
            input in proptest::collection::vec(
                prop_oneof![
                    Just(b'a'), Just(b','), Just(b'"'), Just(b'\n'), Just(b'\r'),
                    Just(b';'), Just(b'\''), Just(b'\t'), Just(0xC3), Just(0xA9),
                    Just(0xEF), Just(0xBB), Just(0xBF), Just(b' '),
                ],
                0..120,
            )
        ) {
            same(&input);
        }

        /// Quoted fields dense with doubled quotes (a JSON object in a CSV field), of
        /// every length around the sixteen-byte blocks the unescaping moves.
        #[test]
        fn matches_the_csv_crate_on_fields_dense_with_doubled_quotes(
            fields in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        4 => Just(&b"a"[..]), 3 => Just(&b"\"\""[..]), 1 => Just(&b","[..]),
                        1 => Just(&b"\xC3\xA9"[..]), 1 => Just(&b"\n"[..]), 1 => Just(&b" "[..]),
                    ],
                    0..60,
                ),
                1..4,
            )
        ) {
            let mut input = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    input.push(b',');
                }
                input.push(b'"');
                input.extend(f.iter().copied().flatten());
                input.push(b'"');
            }
            input.extend_from_slice(b"\nnext,row\n");
            same(&input);
        }

        /// Long runs of plain bytes, so fields cross the word-at-a-time scan's edges.
        #[test]
        fn matches_the_csv_crate_on_long_fields(
            input in proptest::collection::vec(
                prop_oneof![
                    30 => Just(b'a'), 2 => Just(b','), 2 => Just(b'"'), 1 => Just(b'\n'),
                    1 => Just(b'\r'), 1 => Just(0xC3), 1 => Just(0xA9),
                ],
                0..400,
            )
        ) {
            same(&input);
        }
    }
}
