//! The spec's `format: date-time` (JSON Schema 2020-12, that is RFC 3339 §5.6), checked
//! without a general date parser: the receiver reads a timestamp or two per call.
//!
//! `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)`: a year of exactly four digits (so
//! 0000-9999), a real calendar day, hour < 24, minute < 60, second < 60, or 60 only where
//! a leap second can be, the last second of a UTC day (23:59:60 after the offset is
//! applied); one or more fraction digits; `T` and `Z` in either case (RFC 3339 §5.6's
//! note). chrono's `parse_from_rfc3339` takes `:60` on any minute, which is why this
//! does not ask it. Its reference is the `jsonschema` crate's format check (the audit of
//! issue 23 used a JSON Schema validator), against which the tests hold it.

/// Whether `s` is an RFC 3339 date-time as JSON Schema's `date-time` format means it.
pub(crate) fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(year), Some(month), Some(day)) = (digits(b, 0, 4), digits(b, 5, 2), digits(b, 8, 2))
    else {
        return false;
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return false;
    }
    let leap_year = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap_year => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) =
        (digits(b, 11, 2), digits(b, 14, 2), digits(b, 17, 2))
    else {
        return false;
    };
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return false;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    // Minutes since midnight UTC of this time's minute.
    let local = (hour * 60 + minute) as i32;
    let utc = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => local,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            let (Some(oh), Some(om)) = (digits(b, i + 1, 2), digits(b, i + 4, 2)) else {
                return false;
            };
            if b[i + 3] != b':' || oh > 23 || om > 59 {
                return false;
            }
            let offset = (oh * 60 + om) as i32;
            // Local time = UTC + offset, so UTC = local - offset.
            if sign == b'+' {
                local - offset
            } else {
                local + offset
            }
        }
        _ => return false,
    };
    second < 60 || utc.rem_euclid(24 * 60) == 23 * 60 + 59
}

/// The number written by the `len` ASCII digits at `at`, if they are all digits.
#[inline]
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    b.get(at..at + len)?.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit's reference: a JSON Schema validator asserting `format: date-time`.
    fn reference() -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({"type": "string", "format": "date-time"}))
            .expect("the schema compiles")
    }

    /// The reference reads two and four digits at once with a bit trick that also
    /// takes the six bytes after '9' (`:` to `?`) for digits, so it calls
    /// `":016-12-31T23:59:60Z"` valid. Such strings are left out of the comparison.
    fn reads_a_colon_as_a_digit(s: &str) -> bool {
        let b = s.as_bytes();
        let mut at: Vec<usize> = vec![0, 1, 2, 3, 5, 6, 8, 9];
        if let Some(t) = b.iter().position(|&c| c == b'T' || c == b't') {
            at.extend([1, 2, 4, 5, 7, 8].map(|k| t + k));
        }
        if b.len() >= 6 {
            at.extend([5, 4, 2, 1].map(|k| b.len() - k));
        }
        at.iter()
            .any(|&i| b.get(i).is_some_and(|c| (b':'..=b'?').contains(c)))
    }

    #[test]
    fn the_usual_shapes_pass_and_the_wrong_ones_do_not() {
        for ok in [
            "2024-03-01T10:00:00.000Z",
            "2024-03-01t10:00:00z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999999-02:00",
            "2016-12-31T23:59:60Z",
            "2016-12-31T18:59:60-05:00",
            "2017-01-01T00:59:60+01:00",
            "2020-02-29T12:00:00+05:30",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-03-01",
            "2024-03-01 10:00:00Z",
            "2024-03-01T10:00:00",
            "2024-03-01T10:00:60Z",
            "2024-03-01T23:59:60+01:00",
            "2021-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00Zjunk",
            "last tuesday",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn agrees_with_the_json_schema_reference_on_edited_timestamps() {
        let v = reference();
        let alphabet = b"0123456789-:T.Zzt+ 6";
        let mut passed = 0;
        for base in [
            &b"2016-12-31T23:59:60.123Z"[..],
            b"2024-02-29T12:30:59+05:30",
            b"2023-06-30T18:59:60-05:00",
        ] {
            for b in super::super::mutations(base, alphabet, 40_000) {
                let s = String::from_utf8(b).expect("ASCII edits");
                if reads_a_colon_as_a_digit(&s) {
                    continue;
                }
                let want = v.is_valid(&serde_json::Value::String(s.clone()));
                assert_eq!(is_date_time(&s), want, "{s:?}");
                passed += usize::from(want);
            }
        }
        // Enough edits keep a valid date-time for the comparison to mean something.
        assert!(passed > 3_000, "{passed}");
    }

    #[test]
    fn leap_seconds_only_at_the_last_second_of_a_utc_day_for_every_offset() {
        let v = reference();
        for oh in 0..24 {
            for om in [0, 15, 30, 45, 59] {
                for sign in ['+', '-'] {
                    for (h, m) in [(23, 59), (0, 59), (12, 0), (oh, om), (23 - oh, 59 - om)] {
                        let s = format!("2016-12-31T{h:02}:{m:02}:60{sign}{oh:02}:{om:02}");
                        let want = v.is_valid(&serde_json::Value::String(s.clone()));
                        assert_eq!(is_date_time(&s), want, "{s}");
                    }
                }
            }
        }
    }
}
