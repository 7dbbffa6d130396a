//! Cleaning values written loosely in exports: here, booleans (`Yes`, ` n `, `OFF`).
//!
//! One conversion for every place the mapping language wants a boolean: a `bool`
//! column, and every `[integrations]` value (the spec allows only booleans there). Issue
//! 20's value cleaning (branch `real-data`) keeps its number cleaning in this file too;
//! this is the same `loose_bool`, so the two merge as one.
//!
//! Only the encoder's slow path calls this (a value that is already `true` or `false` is
//! taken as it is), and it allocates nothing.

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
