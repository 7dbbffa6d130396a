//! Cleaning number text: `$1,234.50`, `USD 1,234.56`, `(12.50)`, `1.234,56 €`, `15%`,
//! ` 42 ` become plain JSON numbers.
//!
//! Only the encoder's slow path calls this: a value that is already a plain number is
//! written as it is, so a clean column costs nothing more than before. The result goes
//! into a buffer on the caller's stack (a number longer than [`MAX_NUMBER`] bytes is not
//! one), so cleaning allocates nothing.
//!
//! Thousands separators must group digits by three (the first group one to three
//! digits; Indian two-digit groups before the last three are accepted too), so that a
//! decimal comma read under the wrong `decimal` setting (`12,5` with `decimal = "."`) is
//! an error rather than a number ten times too large.

use super::spec::Clean;

/// The longest cleaned number, in bytes.
pub const MAX_NUMBER: usize = 64;

/// Currency symbols stripped at either end under `clean = "currency"` (ISO codes and
/// other letters, up to three, are stripped too: `USD`, `EUR`, `kr`, `R$`).
const SYMBOLS: &[&str] = &[
    "$", "€", "£", "¥", "₹", "₩", "₽", "₺", "₪", "฿", "₫", "₴", "₦", "¢", "₱", "₡", "₲", "₵", "₸",
    "₼", "₾", "﷼",
];

/// Spaces that may surround a value or separate thousands: ASCII white space, no-break
/// space, narrow no-break space and thin space (what spreadsheets and `fr_FR` write).
fn space_at(b: &[u8]) -> usize {
    match b {
        [c, ..] if c.is_ascii_whitespace() => 1,
        [0xC2, 0xA0, ..] => 2,
        [0xE2, 0x80, 0xAF, ..] | [0xE2, 0x80, 0x89, ..] => 3,
        _ => 0,
    }
}

fn space_before(b: &[u8]) -> usize {
    match b {
        [.., c] if c.is_ascii_whitespace() => 1,
        [.., 0xC2, 0xA0] => 2,
        [.., 0xE2, 0x80, 0xAF] | [.., 0xE2, 0x80, 0x89] => 3,
        _ => 0,
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    loop {
        let n = space_at(b);
        if n == 0 {
            break;
        }
        b = &b[n..];
    }
    loop {
        let n = space_before(b);
        if n == 0 {
            break;
        }
        b = &b[..b.len() - n];
    }
    b
}

/// Strips one currency symbol or code from the start of `b`.
fn strip_currency_start(b: &[u8]) -> Option<&[u8]> {
    if let Some(s) = SYMBOLS.iter().find(|s| b.starts_with(s.as_bytes())) {
        return Some(&b[s.len()..]);
    }
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    (1..=3)
        .contains(&letters)
        .then(|| &b[letters..])
        .filter(|rest| next_to_code(rest, false))
}

/// Whether what follows a currency code at the start (or precedes one at the end,
/// `at_end`) can be an amount: a digit, a space or a symbol. A code joined by anything
/// else (`K-1001`, `A.5`) is part of an id.
fn next_to_code(rest: &[u8], at_end: bool) -> bool {
    let (c, space, symbol) = if at_end {
        (
            rest.last(),
            space_before(rest),
            SYMBOLS.iter().any(|s| rest.ends_with(s.as_bytes())),
        )
    } else {
        (
            rest.first(),
            space_at(rest),
            SYMBOLS.iter().any(|s| rest.starts_with(s.as_bytes())),
        )
    };
    c.is_some_and(u8::is_ascii_digit) || space > 0 || symbol
}

fn strip_currency_end(b: &[u8]) -> Option<&[u8]> {
    if let Some(s) = SYMBOLS.iter().find(|s| b.ends_with(s.as_bytes())) {
        return Some(&b[..b.len() - s.len()]);
    }
    let letters = b
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    (1..=3)
        .contains(&letters)
        .then(|| &b[..b.len() - letters])
        .filter(|rest| next_to_code(rest, true))
}

/// Writes `b` cleaned as a plain JSON number (`-1234.56`) into `buf` and returns its
/// length, or `None` when `b` is not a number even cleaned. `decimal` is `b'.'` or
/// `b','`; the other one, spaces and `'` separate thousands.
pub fn clean_number(
    b: &[u8],
    clean: Clean,
    decimal: u8,
    buf: &mut [u8; MAX_NUMBER],
) -> Option<usize> {
    let mut b = trim(b);
    let mut negative = false;
    // Signs, parentheses, symbols and percent signs, in whatever order they come
    // (`-$12`, `$-12`, `($12.50)`, `USD 1,234`): each pass takes at least one away.
    for _ in 0..8 {
        let before = b.len();
        if let Some(rest) = b
            .strip_prefix(b"-")
            .or_else(|| b.strip_prefix("−".as_bytes()))
        {
            negative = !negative;
            b = rest;
        } else if let Some(rest) = b.strip_prefix(b"+") {
            b = rest;
        }
        if clean == Clean::Currency {
            if let Some(inner) = b.strip_prefix(b"(").and_then(|r| r.strip_suffix(b")")) {
                negative = !negative;
                b = inner;
            }
            if let Some(rest) = strip_currency_start(b) {
                b = rest;
            }
            if let Some(rest) = strip_currency_end(b) {
                b = rest;
            }
        }
        if clean == Clean::Percent {
            if let Some(rest) = b.strip_suffix(b"%") {
                b = rest;
            }
        }
        b = trim(b);
        if b.len() == before {
            break;
        }
    }
    write_plain(b, negative, decimal, buf)
}

/// Digits with thousands separators and one decimal separator, as a JSON number.
fn write_plain(b: &[u8], negative: bool, decimal: u8, buf: &mut [u8; MAX_NUMBER]) -> Option<usize> {
    let is_group = |rest: &[u8]| -> usize {
        match rest.first() {
            Some(&c) if c == decimal => 0,
            Some(b',' | b'.' | b'\'') => 1,
            _ => space_at(rest),
        }
    };
    let mut n = 0usize;
    let mut push = |c: u8, n: &mut usize| -> Option<()> {
        *buf.get_mut(*n)? = c;
        *n += 1;
        Some(())
    };
    if negative {
        push(b'-', &mut n)?;
    }
    let int_start = n;
    let mut i = 0;
    // Lengths of the digit groups of the integer part, for the grouping rule.
    let mut group = 0usize;
    let mut groups = 0usize;
    let mut first_group = 0usize;
    let mut short_group = false;
    let mut leading = true;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            group += 1;
            // Leading zeros are not JSON (`007`): keep one only if nothing follows.
            if leading && c == b'0' {
                i += 1;
                continue;
            }
            leading = false;
            push(c, &mut n)?;
            i += 1;
            continue;
        }
        let sep = is_group(&b[i..]);
        if sep == 0 {
            break;
        }
        // A separator needs digits on both sides.
        if group == 0 || !b.get(i + sep).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        if groups == 0 {
            first_group = group;
        } else if group != 3 {
            short_group |= group == 2;
            if group != 2 {
                return None;
            }
        }
        groups += 1;
        group = 0;
        i += sep;
    }
    if group == 0 && (groups > 0 || i == 0) {
        return None;
    }
    if groups > 0 {
        // The last group is three digits; earlier ones three (or two, Indian style).
        if group != 3 || first_group > 3 || (short_group && first_group > 2) {
            return None;
        }
    }
    if n == int_start {
        push(b'0', &mut n)?;
    }
    if i < b.len() {
        if b[i] != decimal {
            return None;
        }
        i += 1;
        let frac = &b[i..];
        if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        push(b'.', &mut n)?;
        for &c in frac {
            push(c, &mut n)?;
        }
    }
    Some(n)
}

/// A cleaned number (from [`clean_number`]) as an integer: a fraction of zeros only is
/// dropped (`$325.00` is 325); any other fraction is not an integer.
pub fn cleaned_int(text: &[u8]) -> Option<i64> {
    let int = match text.iter().position(|&c| c == b'.') {
        Some(dot) if text[dot + 1..].iter().all(|&c| c == b'0') => &text[..dot],
        Some(_) => return None,
        None => text,
    };
    std::str::from_utf8(int).ok()?.parse().ok()
}

/// A boolean in any case, trimmed: true/false, t/f, yes/no, y/n, on/off, 1/0.
pub fn loose_bool(b: &[u8]) -> Option<bool> {
    let t = trim(b);
    if t.len() > 5 {
        return None;
    }
    let mut lower = [0u8; 5];
    for (d, s) in lower.iter_mut().zip(t) {
        *d = s.to_ascii_lowercase();
    }
    match &lower[..t.len()] {
        b"true" | b"t" | b"yes" | b"y" | b"on" | b"1" => Some(true),
        b"false" | b"f" | b"no" | b"n" | b"off" | b"0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str, how: Clean, decimal: u8) -> Option<String> {
        let mut buf = [0u8; MAX_NUMBER];
        let n = clean_number(s.as_bytes(), how, decimal, &mut buf)?;
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    #[test]
    fn currency_in_the_usual_styles_becomes_a_plain_number() {
        let c = |s| clean(s, Clean::Currency, b'.');
        assert_eq!(c("$325.00").as_deref(), Some("325.00"));
        assert_eq!(c("4,737.25").as_deref(), Some("4737.25"));
        assert_eq!(c("USD 1,234.56").as_deref(), Some("1234.56"));
        assert_eq!(c("(12.50)").as_deref(), Some("-12.50"));
        assert_eq!(c("-$1,000").as_deref(), Some("-1000"));
        assert_eq!(c("$-7").as_deref(), Some("-7"));
        assert_eq!(c(" £0.99 ").as_deref(), Some("0.99"));
        assert_eq!(c("1 234 567.5 EUR").as_deref(), Some("1234567.5"));
        assert_eq!(c("US$12").as_deref(), Some("12"));
        assert_eq!(c("12,34,567.00").as_deref(), Some("1234567.00"));
        let eu = |s| clean(s, Clean::Currency, b',');
        assert_eq!(eu("1.234,56 €").as_deref(), Some("1234.56"));
        assert_eq!(eu("12,5").as_deref(), Some("12.5"));
        assert_eq!(eu("€ 1 234,5").as_deref(), Some("1234.5"));
    }

    #[test]
    fn what_is_not_a_number_stays_an_error() {
        let c = |s| clean(s, Clean::Currency, b'.');
        for bad in [
            "", "$", "N/A", "12,5", "1,2345", "1..2", "1.2.3", "12.", ".5x", "$12abc4", "--",
            "K-1001", "AB-12", "12-X", "X.5",
        ] {
            assert_eq!(c(bad), None, "{bad:?}");
        }
        assert_eq!(clean("15%", Clean::None, b'.'), None);
        assert_eq!(clean("$5", Clean::Percent, b'.'), None);
    }

    #[test]
    fn percent_and_spaces_and_leading_zeros() {
        assert_eq!(clean("15%", Clean::Percent, b'.').as_deref(), Some("15"));
        assert_eq!(
            clean("1,200.5 %", Clean::Percent, b'.').as_deref(),
            Some("1200.5")
        );
        assert_eq!(clean(" 42 ", Clean::None, b'.').as_deref(), Some("42"));
        assert_eq!(clean("007", Clean::None, b'.').as_deref(), Some("7"));
        assert_eq!(clean("0.5", Clean::None, b'.').as_deref(), Some("0.5"));
        assert_eq!(clean("-0", Clean::None, b'.').as_deref(), Some("-0"));
        assert_eq!(cleaned_int(b"325.00"), Some(325));
        assert_eq!(cleaned_int(b"325.5"), None);
    }

    #[test]
    fn booleans_in_any_case() {
        for t in ["Yes", "Y", "on", "TRUE", " t ", "1"] {
            assert_eq!(loose_bool(t.as_bytes()), Some(true), "{t}");
        }
        for f in ["No", "n", "OFF", "False", "0"] {
            assert_eq!(loose_bool(f.as_bytes()), Some(false), "{f}");
        }
        assert_eq!(loose_bool(b"maybe"), None);
    }
}
