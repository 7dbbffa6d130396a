//! Timestamps in, UTC `YYYY-MM-DDTHH:MM:SS.sssZ` out.
//!
//! The common case (RFC 3339 / ISO 8601 with an offset) is parsed by hand without
//! allocating; the result is milliseconds since the Unix epoch. Fractions beyond
//! milliseconds are truncated, never rounded, so a value never moves into the next second.

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type UnixMillis = i64;

/// Why a timestamp was refused. The text goes into the reject reason with the value.
pub type TsError = &'static str;

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.fff...]](Z|z|±HH:MM|±HHMM|±HH)`.
pub fn parse_rfc3339(s: &[u8]) -> Result<UnixMillis, TsError> {
    let (date_days, rest) = parse_date(s)?;
    let rest = match rest.first() {
        Some(b'T' | b't' | b' ') => &rest[1..],
        None => return Err("has no time of day (use a date-only format to accept this)"),
        _ => return Err("expected 'T' between date and time"),
    };
    let (secs_of_day, millis, rest) = parse_time(rest)?;
    let offset_secs = parse_offset(rest)?;
    Ok((date_days * 86_400 + secs_of_day - offset_secs) * 1000 + millis)
}

fn digits(s: &[u8], n: usize) -> Result<i64, TsError> {
    if s.len() < n {
        return Err("is too short");
    }
    let mut v = 0i64;
    for &b in &s[..n] {
        if !b.is_ascii_digit() {
            return Err("has a non-digit where a digit belongs");
        }
        v = v * 10 + (b - b'0') as i64;
    }
    Ok(v)
}

/// `YYYY-MM-DD` → (days since epoch, rest).
pub(crate) fn parse_date(s: &[u8]) -> Result<(i64, &[u8]), TsError> {
    let y = digits(s, 4)?;
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return Err("is not an ISO 8601 date (YYYY-MM-DD)");
    }
    let m = digits(&s[5..], 2)?;
    let d = digits(&s[8..], 2)?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err("is not a valid calendar date");
    }
    Ok((days_from_civil(y, m, d), &s[10..]))
}

/// `HH:MM[:SS[.fff]]` → (seconds of day, millis, rest).
fn parse_time(s: &[u8]) -> Result<(i64, i64, &[u8]), TsError> {
    let h = digits(s, 2)?;
    if s.get(2) != Some(&b':') {
        return Err("is not an ISO 8601 time (HH:MM:SS)");
    }
    let mi = digits(&s[3..], 2)?;
    let mut rest = &s[5..];
    let mut sec = 0;
    let mut millis = 0;
    if rest.first() == Some(&b':') {
        sec = digits(&rest[1..], 2)?;
        rest = &rest[3..];
        if matches!(rest.first(), Some(b'.' | b',')) {
            let frac = &rest[1..];
            let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 {
                return Err("has an empty fraction of a second");
            }
            for i in 0..3 {
                millis = millis * 10
                    + frac
                        .get(i)
                        .filter(|_| i < n)
                        .map_or(0, |b| (b - b'0') as i64);
            }
            rest = &frac[n..];
        }
    }
    // 60 is a leap second; it is folded into the next second's first instant by arithmetic.
    if h > 23 || mi > 59 || sec > 60 {
        return Err("has an hour, minute or second out of range");
    }
    Ok((h * 3600 + mi * 60 + sec, millis, rest))
}

fn parse_offset(s: &[u8]) -> Result<i64, TsError> {
    match s.first() {
        Some(b'Z' | b'z') if s.len() == 1 => Ok(0),
        Some(&sign @ (b'+' | b'-')) => {
            let h = digits(&s[1..], 2)?;
            let m = match s.len() {
                3 => 0,
                5 => digits(&s[3..], 2)?,
                6 if s[3] == b':' => digits(&s[4..], 2)?,
                _ => return Err("has a malformed UTC offset"),
            };
            if h > 23 || m > 59 {
                return Err("has a UTC offset out of range");
            }
            let off = h * 3600 + m * 60;
            Ok(if sign == b'-' { -off } else { off })
        }
        None => Err("has no UTC offset (add Z or ±HH:MM, or set a timezone in the mapping)"),
        _ => Err("has unexpected text after the time"),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends `"YYYY-MM-DDTHH:MM:SS.sssZ"` (with quotes) for a non-negative instant.
pub fn write_iso_millis(out: &mut Vec<u8>, ms: UnixMillis) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    let put = |b: &mut [u8; 26], at: usize, v: i64, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 1, y, 4);
    put(&mut b, 6, mo, 2);
    put(&mut b, 9, d, 2);
    put(&mut b, 12, sod / 3600, 2);
    put(&mut b, 15, sod / 60 % 60, 2);
    put(&mut b, 18, sod % 60, 2);
    put(&mut b, 21, milli, 3);
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> Result<String, TsError> {
        let ms = parse_rfc3339(s.as_bytes())?;
        let mut v = Vec::new();
        write_iso_millis(&mut v, ms);
        Ok(String::from_utf8(v).unwrap().trim_matches('"').to_string())
    }

    #[test]
    fn rfc3339_forms_normalise_to_utc_millis() {
        let cases = [
            ("2024-03-05T10:20:30Z", "2024-03-05T10:20:30.000Z"),
            ("2024-03-05T10:20:30.123456789Z", "2024-03-05T10:20:30.123Z"),
            ("2024-03-05T10:20:30.9+02:00", "2024-03-05T08:20:30.900Z"),
            ("2024-03-05 10:20:30-0530", "2024-03-05T15:50:30.000Z"),
            ("2024-03-05T23:30:00-01", "2024-03-06T00:30:00.000Z"),
            ("2024-02-29T00:00Z", "2024-02-29T00:00:00.000Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
            ("2000-01-01T00:00:00+14:00", "1999-12-31T10:00:00.000Z"),
        ];
        for (input, want) in cases {
            assert_eq!(iso(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-03-05T10:20:30",
            "2024-03-05",
            "2024-03-05T25:00:00Z",
            "2024-03-05T10:20:30Zjunk",
            "2024-03-05T10:20:30.Z",
        ] {
            assert!(parse_rfc3339(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
