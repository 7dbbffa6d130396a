//! Timestamps in, UTC `YYYY-MM-DDTHH:MM:SS.sssZ` out.
//!
//! The common case (RFC 3339 / ISO 8601 with an offset) is parsed by hand without
//! allocating; the result is milliseconds since the Unix epoch. Fractions beyond
//! milliseconds are truncated, never rounded, so a value never moves into the next second.
//!
//! Values without an offset are read in a time zone named in the mapping (chrono-tz).
//! Wall-clock times that do not exist or exist twice around a DST change are resolved by
//! one documented rule ([`local_to_utc`]): a time in a gap (spring forward) is shifted
//! forward by the length of the gap, as PostgreSQL and most databases do, and an
//! ambiguous time (fall back) is the earlier of its two instants.

use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type UnixMillis = i64;

/// Why a timestamp was refused. The text goes into the reject reason with the value.
pub type TsError = &'static str;

/// Parses `YYYY-MM-DD[T| ]HH:MM[:SS[.fff...]](Z|z|±HH:MM|±HHMM|±HH)`.
pub fn parse_rfc3339(s: &[u8]) -> Result<UnixMillis, TsError> {
    parse_iso(s, None)
}

/// Like [`parse_rfc3339`], but a value without an offset is a wall-clock time in `tz`
/// (when given). A value with an offset always uses its own offset.
pub fn parse_iso(s: &[u8], tz: Option<Tz>) -> Result<UnixMillis, TsError> {
    if let Some(ms) = parse_iso_fast(s) {
        return Ok(ms);
    }
    let (date_days, rest) = parse_date(s)?;
    let rest = match rest.first() {
        Some(b'T' | b't' | b' ') => &rest[1..],
        None => return Err("has no time of day (use format = \"date\" to accept dates)"),
        _ => return Err("expected 'T' between date and time"),
    };
    let (secs_of_day, millis, rest) = parse_time(rest)?;
    let local = (date_days * 86_400 + secs_of_day) * 1000 + millis;
    if rest.is_empty() {
        return match tz {
            Some(tz) => local_to_utc(tz, local),
            None => Err("has no UTC offset (add Z or ±HH:MM, or set a timezone in the mapping)"),
        };
    }
    let offset_secs = parse_offset(rest)?;
    Ok(local - offset_secs * 1000)
}

/// The common shape, `YYYY-MM-DD(T|t| )HH:MM:SS[(.|,)f+](Z|z|±HH:MM|±HHMM|±HH)`, read at
/// fixed positions. `None` for anything else, valid or not: [`parse_iso`] then takes the
/// general path, which gives the same instant or the precise error. Every check here is
/// one the general path makes, so both agree on every input this accepts.
#[inline]
fn parse_iso_fast(s: &[u8]) -> Option<UnixMillis> {
    parse_iso_fields(s).map(|(ms, _)| ms)
}

/// The fast path of [`parse_iso`] (`None`: take the general path, which may still
/// succeed), with what [`write_iso_millis`] would write for it (when the value has no
/// leap second and its offset is whole minutes): for a value already in UTC its own
/// digits rearranged; otherwise its fields moved by the offset, at most one day either
/// way. Either way the writer's calendar arithmetic (divisions) is skipped.
#[inline]
pub fn parse_iso_rewrite(s: &[u8]) -> Option<(UnixMillis, Option<[u8; 26]>)> {
    let (ms, fields) = parse_iso_fields(s)?;
    let text = fields.and_then(|f| {
        let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
        b[21..24].copy_from_slice(&f.millis);
        if f.offset_minutes == 0 {
            b[1..11].copy_from_slice(&s[..10]);
            b[12..20].copy_from_slice(&s[11..19]);
            return Some(b);
        }
        let (mut y, mut m, mut d) = (f.y, f.m, f.d);
        let mut t = f.h * 60 + f.mi - f.offset_minutes;
        if t < 0 {
            t += 1440;
            d -= 1;
            if d == 0 {
                m -= 1;
                if m == 0 {
                    (y, m) = (y - 1, 12);
                }
                d = days_in_month(y, m);
            }
        } else if t >= 1440 {
            t -= 1440;
            d += 1;
            if d > days_in_month(y, m) {
                (d, m) = (1, m + 1);
                if m == 13 {
                    (y, m) = (y + 1, 1);
                }
            }
        }
        if !(0..=9999).contains(&y) {
            return None;
        }
        put_minute(&mut b, [y, m, d, t / 60, t % 60]);
        b[18..20].copy_from_slice(&s[17..19]);
        Some(b)
    });
    Some((ms, text))
}

/// A value's local fields and offset, for [`parse_iso_rewrite`].
struct Local {
    y: i64,
    m: i64,
    d: i64,
    h: i64,
    mi: i64,
    offset_minutes: i64,
    /// The three millisecond digits as written (padded with zeros).
    millis: [u8; 3],
}

/// The fast parse; also, when the second is not a leap second (which rolls over into the
/// next minute) and the offset is whole minutes, the fields the output can be built
/// from without calendar arithmetic.
#[inline(always)]
fn parse_iso_fields(s: &[u8]) -> Option<(UnixMillis, Option<Local>)> {
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    // Digits are checked all at once: any byte that is not one makes some value >= 10.
    let v = |i: usize| s[i].wrapping_sub(b'0');
    let digits = [
        v(0),
        v(1),
        v(2),
        v(3),
        v(5),
        v(6),
        v(8),
        v(9),
        v(11),
        v(12),
        v(14),
        v(15),
        v(17),
        v(18),
    ];
    if digits.iter().any(|&x| x >= 10) {
        return None;
    }
    let two = |k: usize| digits[k] as i64 * 10 + digits[k + 1] as i64;
    let y = two(0) * 100 + two(2);
    let (m, day) = (two(4), two(6));
    let (h, mi, sec) = (two(8), two(10), two(12));
    if !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    let mut milli_digits = *b"000";
    if let Some((b'.' | b',', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // The first three digits, padded with zeros: truncated, never rounded.
        milli_digits[..n.min(3)].copy_from_slice(&frac[..n.min(3)]);
        for d in milli_digits {
            millis = millis * 10 + (d - b'0') as i64;
        }
        rest = &frac[n..];
    }
    if rest.is_empty() {
        return None;
    }
    let offset_secs = parse_offset(rest).ok()?;
    let local = (days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + millis;
    let fields = (offset_secs % 60 == 0 && sec < 60).then_some(Local {
        y,
        m,
        d: day,
        h,
        mi,
        offset_minutes: offset_secs / 60,
        millis: milli_digits,
    });
    Some((local - offset_secs * 1000, fields))
}

/// `YYYY-MM-DD`: midnight of that day in `tz` (UTC when `None`).
pub fn parse_date_only(s: &[u8], tz: Option<Tz>) -> Result<UnixMillis, TsError> {
    let (days, rest) = parse_date(s)?;
    if !rest.is_empty() {
        return Err("is not a date (YYYY-MM-DD)");
    }
    let local = days * 86_400_000;
    match tz {
        Some(tz) => local_to_utc(tz, local),
        None => Ok(local),
    }
}

/// What a strftime pattern holds, decided once when the mapping is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// Has `%z`-like offset (or `%s`): the value names an instant by itself.
    Instant,
    /// A date and a time of day, read in the mapping's time zone.
    DateTime,
    /// A date only: midnight in the mapping's time zone.
    Date,
}

impl PatternKind {
    pub fn of(pattern: &str) -> PatternKind {
        use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
        let mut has_time = false;
        for item in StrftimeItems::new(pattern) {
            match item {
                Item::Fixed(Fixed::TimezoneOffset)
                | Item::Fixed(Fixed::TimezoneOffsetColon)
                | Item::Fixed(Fixed::TimezoneOffsetColonZ)
                | Item::Fixed(Fixed::TimezoneOffsetZ)
                | Item::Fixed(Fixed::TimezoneOffsetDoubleColon)
                | Item::Fixed(Fixed::TimezoneOffsetTripleColon)
                | Item::Fixed(Fixed::RFC2822)
                | Item::Fixed(Fixed::RFC3339)
                | Item::Numeric(Numeric::Timestamp, _) => return PatternKind::Instant,
                Item::Numeric(
                    Numeric::Hour | Numeric::Hour12 | Numeric::Minute | Numeric::Second,
                    _,
                ) => has_time = true,
                _ => {}
            }
        }
        if has_time {
            PatternKind::DateTime
        } else {
            PatternKind::Date
        }
    }
}

/// Parses `s` with a chrono strftime `pattern`. Offset-less values are read in `tz`
/// (UTC when `None`; the compiler insists on a zone for those patterns).
pub fn parse_pattern(
    s: &str,
    pattern: &str,
    kind: PatternKind,
    tz: Option<Tz>,
) -> Result<UnixMillis, TsError> {
    const NO_MATCH: &str = "does not match the mapping's timestamp format";
    let local = match kind {
        PatternKind::Instant => {
            return chrono::DateTime::parse_from_str(s, pattern)
                .map(|d| d.timestamp_millis())
                .map_err(|_| NO_MATCH)
        }
        PatternKind::DateTime => chrono::NaiveDateTime::parse_from_str(s, pattern)
            .map_err(|_| NO_MATCH)?
            .and_utc()
            .timestamp_millis(),
        PatternKind::Date => chrono::NaiveDate::parse_from_str(s, pattern)
            .map_err(|_| NO_MATCH)?
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis(),
    };
    match tz {
        Some(tz) => local_to_utc(tz, local),
        None => Ok(local),
    }
}

/// The instant of a wall-clock time in `tz`. `local` is the wall clock as milliseconds
/// since 1970-01-01T00:00 (as if it were UTC).
///
/// DST rule: a wall-clock time that falls in a gap (clocks jump forward, e.g. 02:30 on
/// the spring-forward night in New York) is read with the offset in force before the gap,
/// which lands it as many minutes after the jump as it was after the gap's start (02:30
/// EST = 03:30 EDT). A time that occurs twice (clocks go back) is the earlier instant
/// (01:30 EDT, not 01:30 EST).
pub fn local_to_utc(tz: Tz, local: UnixMillis) -> Result<UnixMillis, TsError> {
    let naive = chrono::DateTime::from_timestamp_millis(local)
        .ok_or("is out of range")?
        .naive_utc();
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(d) => Ok(d.timestamp_millis()),
        chrono::LocalResult::Ambiguous(early, _) => Ok(early.timestamp_millis()),
        chrono::LocalResult::None => {
            // The offset a day earlier is the one before the gap: zones do not change
            // offset twice within a day.
            let before = chrono::DateTime::from_timestamp_millis(local - 86_400_000)
                .ok_or("is out of range")?
                .naive_utc();
            let off = tz.offset_from_utc_datetime(&before).fix().local_minus_utc() as i64;
            Ok(local - off * 1000)
        }
    }
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
#[inline]
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

/// `"00"` to `"99"`.
static DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// Writes year (0 to 9999), month, day, hour and minute into `"YYYY-MM-DDTHH:MM:..."`,
/// two digits per table lookup.
#[inline(always)]
fn put_minute(b: &mut [u8; 26], [y, mo, d, h, mi]: [i64; 5]) {
    for (at, v) in [
        (1, y / 100),
        (3, y % 100),
        (6, mo),
        (9, d),
        (12, h),
        (15, mi),
    ] {
        b[at..at + 2].copy_from_slice(&DIGIT_PAIRS[v as usize]);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` (no quotes), for messages and reports; years 0 to 9999.
pub fn iso_millis(ms: UnixMillis) -> String {
    let mut v = Vec::with_capacity(26);
    write_iso_millis(&mut v, ms);
    String::from_utf8_lossy(&v).trim_matches('"').to_string()
}

/// Appends `"YYYY-MM-DDTHH:MM:SS.sssZ"` (with quotes) for a non-negative instant.
pub fn write_iso_millis(out: &mut Vec<u8>, ms: UnixMillis) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    if (0..=9999).contains(&y) {
        // Every field but the year is in range by construction (month, day, and the
        // remainders above).
        put_minute(&mut b, [y, mo, d, sod / 3600, sod / 60 % 60]);
        b[18..20].copy_from_slice(&DIGIT_PAIRS[(sod % 60) as usize]);
        b[21] = b'0' + (milli / 100) as u8;
        b[22..24].copy_from_slice(&DIGIT_PAIRS[(milli % 100) as usize]);
        out.extend_from_slice(&b);
        return;
    }
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

    fn iso_in(s: &str, tz: &str) -> String {
        let tz: Tz = tz.parse().unwrap();
        let ms = parse_iso(s.as_bytes(), Some(tz)).unwrap();
        let mut v = Vec::new();
        write_iso_millis(&mut v, ms);
        String::from_utf8(v).unwrap().trim_matches('"').to_string()
    }

    #[test]
    fn naive_times_are_read_in_the_zone_with_the_documented_dst_rule() {
        let cases = [
            // Plain winter and summer times.
            (
                "2024-01-15T12:00:00",
                "America/New_York",
                "2024-01-15T17:00:00.000Z",
            ),
            (
                "2024-07-15T12:00:00",
                "America/New_York",
                "2024-07-15T16:00:00.000Z",
            ),
            (
                "2024-07-15 12:00:00.250",
                "Europe/Paris",
                "2024-07-15T10:00:00.250Z",
            ),
            // Gap (spring forward 02:00 -> 03:00): shifted forward by the gap.
            (
                "2024-03-10T02:30:00",
                "America/New_York",
                "2024-03-10T07:30:00.000Z",
            ),
            (
                "2024-03-31T02:15:00",
                "Europe/Paris",
                "2024-03-31T01:15:00.000Z",
            ),
            // Just before and after the gap.
            (
                "2024-03-10T01:59:59",
                "America/New_York",
                "2024-03-10T06:59:59.000Z",
            ),
            (
                "2024-03-10T03:00:00",
                "America/New_York",
                "2024-03-10T07:00:00.000Z",
            ),
            // Overlap (fall back 02:00 -> 01:00): the earlier instant (EDT).
            (
                "2024-11-03T01:30:00",
                "America/New_York",
                "2024-11-03T05:30:00.000Z",
            ),
            (
                "2024-10-27T02:30:00",
                "Europe/Paris",
                "2024-10-27T00:30:00.000Z",
            ),
            // An explicit offset wins over the zone.
            (
                "2024-07-15T12:00:00Z",
                "Europe/Paris",
                "2024-07-15T12:00:00.000Z",
            ),
            (
                "2024-07-15T12:00:00+01:00",
                "America/New_York",
                "2024-07-15T11:00:00.000Z",
            ),
            // Southern hemisphere and a half-hour zone.
            (
                "2024-01-15T12:00:00",
                "Australia/Sydney",
                "2024-01-15T01:00:00.000Z",
            ),
            (
                "2024-01-15T12:00:00",
                "Asia/Kolkata",
                "2024-01-15T06:30:00.000Z",
            ),
        ];
        for (input, tz, want) in cases {
            assert_eq!(iso_in(input, tz), want, "{input} in {tz}");
        }
        assert!(parse_iso(b"2024-01-15T12:00:00", None).is_err());
    }

    #[test]
    fn dates_and_patterns_parse_in_the_zone() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let ms = |r: Result<UnixMillis, TsError>| {
            let mut v = Vec::new();
            write_iso_millis(&mut v, r.unwrap());
            String::from_utf8(v).unwrap().trim_matches('"').to_string()
        };
        assert_eq!(
            ms(parse_date_only(b"2024-02-29", None)),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            ms(parse_date_only(b"2024-02-29", Some(ny))),
            "2024-02-29T05:00:00.000Z"
        );
        assert!(parse_date_only(b"2024-02-30", None).is_err());
        assert!(parse_date_only(b"2024-02-28T00:00", None).is_err());
        let p = "%d/%m/%Y %H:%M";
        assert_eq!(PatternKind::of(p), PatternKind::DateTime);
        assert_eq!(
            ms(parse_pattern(
                "05/03/2024 10:20",
                p,
                PatternKind::DateTime,
                None
            )),
            "2024-03-05T10:20:00.000Z"
        );
        assert_eq!(
            ms(parse_pattern(
                "05/03/2024 10:20",
                p,
                PatternKind::DateTime,
                Some(ny)
            )),
            "2024-03-05T15:20:00.000Z"
        );
        assert!(parse_pattern("2024-03-05 10:20", p, PatternKind::DateTime, None).is_err());
        let p = "%m/%d/%Y";
        assert_eq!(PatternKind::of(p), PatternKind::Date);
        assert_eq!(
            ms(parse_pattern("03/05/2024", p, PatternKind::Date, None)),
            "2024-03-05T00:00:00.000Z"
        );
        let p = "%Y-%m-%d %H:%M:%S %z";
        assert_eq!(PatternKind::of(p), PatternKind::Instant);
        assert_eq!(
            ms(parse_pattern(
                "2024-03-05 10:20:00 +0200",
                p,
                PatternKind::Instant,
                Some(ny)
            )),
            "2024-03-05T08:20:00.000Z"
        );
    }

    /// The general path alone (what `parse_iso` did before its fast path).
    fn parse_iso_general(s: &[u8]) -> Result<UnixMillis, TsError> {
        let (date_days, rest) = parse_date(s)?;
        let rest = match rest.first() {
            Some(b'T' | b't' | b' ') => &rest[1..],
            None => return Err("none"),
            _ => return Err("sep"),
        };
        let (secs_of_day, millis, rest) = parse_time(rest)?;
        let local = (date_days * 86_400 + secs_of_day) * 1000 + millis;
        if rest.is_empty() {
            return Err("no offset");
        }
        Ok(local - parse_offset(rest)? * 1000)
    }

    proptest::proptest! {
        /// Whatever the fast path accepts, the general path reads as the same instant.
        #[test]
        fn fast_iso_path_agrees_with_the_general_one(
            s in "[0-9]{4}-[0-1][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9]([.,][0-9]{0,12})?(Z|z|[+-][0-2][0-9](:?[0-6][0-9])?|ZZ|)",
            noise in proptest::option::of((0usize..30, 0u8..128)),
        ) {
            let mut b = s.into_bytes();
            if let Some((at, byte)) = noise {
                if at < b.len() {
                    b[at] = byte;
                }
            }
            if let Some(ms) = parse_iso_fast(&b) {
                proptest::prop_assert_eq!(Ok(ms), parse_iso_general(&b));
            }
            // And `parse_iso` as a whole matches the general path (no zone given).
            match parse_iso_general(&b) {
                Ok(ms) => proptest::prop_assert_eq!(parse_iso(&b, None), Ok(ms)),
                Err(_) => proptest::prop_assert!(parse_iso(&b, None).is_err()),
            }
        }

        /// The table writer matches the digit-by-digit one for every representable day.
        #[test]
        fn iso_writer_matches_digit_by_digit(ms in 0i64..253_402_300_800_000) {
            let mut fast = Vec::new();
            write_iso_millis(&mut fast, ms);
            let secs = ms.div_euclid(1000);
            let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            let want = format!(
                "\"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z\"",
                sod / 3600,
                sod / 60 % 60,
                sod % 60,
                ms.rem_euclid(1000)
            );
            proptest::prop_assert_eq!(String::from_utf8(fast).unwrap(), want);
        }
    }

    proptest::proptest! {
        /// The rewrite gives exactly what parsing and writing give, across day, month
        /// and year ends and offsets up to a day.
        #[test]
        fn utc_rewrite_matches_parse_then_write(
            s in "([0-9]{4}-[0-1][0-9]-[0-3][0-9]|[0-9]{2}(00|04|99)-(01-01|02-2[89]|03-01|12-31))[Tt ][0-2][0-9]:[0-5][0-9]:[0-6][0-9]([.,][0-9]{0,5})?(Z|z|[+-]00(:?00)?|[+-][0-2][0-9](:?[0-5][0-9])?)",
        ) {
            if let Some((ms, text)) = parse_iso_rewrite(s.as_bytes()) {
                proptest::prop_assert_eq!(Ok(ms), parse_iso(s.as_bytes(), None));
                if let Some(text) = text {
                    let mut want = Vec::new();
                    write_iso_millis(&mut want, ms);
                    proptest::prop_assert_eq!(&text[..], &want[..], "{}", s);
                }
            }
        }
    }

    #[test]
    fn the_rewrite_moves_fields_by_the_offset_and_leaves_leap_seconds_alone() {
        let ok = |s: &str| {
            parse_iso_rewrite(s.as_bytes())
                .and_then(|(_, t)| t)
                .map(|t| String::from_utf8(t.to_vec()).unwrap())
        };
        for (value, utc) in [
            ("2023-03-06 12:21:12.1z", "2023-03-06T12:21:12.100Z"),
            (
                "2023-03-06t12:21:12.123456-00:00",
                "2023-03-06T12:21:12.123Z",
            ),
            ("2023-03-06T12:21:12+0000", "2023-03-06T12:21:12.000Z"),
            ("2023-03-06T12:21:12+01:00", "2023-03-06T11:21:12.000Z"),
            ("2024-03-01T05:00:00.5+09:30", "2024-02-29T19:30:00.500Z"),
            ("1999-12-31T20:00:00-04:00", "2000-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(ok(value), Some(format!("\"{utc}\"")), "{value}");
        }
        assert_eq!(ok("9999-12-31T23:00:00-02:00"), None, "past year 9999");
        assert_eq!(ok("2023-12-31T23:59:60Z"), None, "a leap second rolls over");
        assert_eq!(ok("2023-03-06T12:21Z"), None);
    }

    #[test]
    fn fast_iso_path_edges() {
        for ok in [
            "2024-02-29T23:59:59.999Z",
            "2023-03-06T12:21:60Z",
            "2023-03-06 12:21:12,5+05:30",
            "2023-03-06t12:21:12.123456789-0530",
            "0000-01-01T00:00:00Z",
            "2023-03-06T12:21:12-05",
        ] {
            assert!(parse_iso_fast(ok.as_bytes()).is_some(), "{ok}");
            assert_eq!(
                parse_iso_fast(ok.as_bytes()).ok_or("x"),
                parse_iso_general(ok.as_bytes()),
                "{ok}"
            );
        }
        for general in [
            "2023-03-06T12:21Z",
            "2023-02-29T00:00:00Z",
            "2023-03-06T12:21:12",
            "2023-03-06T12:21:12.Z",
            "2023-03-06T24:00:00Z",
            "2023-03-06T12:21:12ZZ",
            "2023-03-06T12:21:12+5:30",
        ] {
            assert_eq!(parse_iso_fast(general.as_bytes()), None, "{general}");
        }
        // Years beyond four digits still go through the digit-by-digit writer.
        let mut v = Vec::new();
        write_iso_millis(&mut v, 253_402_300_800_000);
        assert_eq!(v, b"\"0000-01-01T00:00:00.000Z\"");
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
