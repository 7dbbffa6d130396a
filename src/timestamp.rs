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
//!
//! Range: what is written is always a four-digit year, 0000 to 9999 ([`MIN_MS`] ..=
//! [`MAX_MS`]). An instant outside that range has no `YYYY-...` form, so
//! [`write_iso_millis`] refuses it ([`OutOfRange`]) rather than wrap it, and the encoder
//! rejects the row naming the value. A leap second (`:60`) is taken only where one can
//! be, the last second of a UTC day (23:59:60 once the offset is applied); it is read as
//! the first instant of the next second, as Unix time counts it.

use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type UnixMillis = i64;

/// Why a timestamp was refused. The text goes into the reject reason with the value.
pub type TsError = &'static str;

/// 0000-01-01T00:00:00.000Z, the first instant with a four-digit year.
pub const MIN_MS: UnixMillis = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z, the last one.
pub const MAX_MS: UnixMillis = 253_402_300_799_999;

/// Whether `ms` can be written as `YYYY-MM-DDTHH:MM:SS.sssZ` (years 0000 to 9999).
#[inline]
pub fn in_range(ms: UnixMillis) -> bool {
    (MIN_MS..=MAX_MS).contains(&ms)
}

/// An instant outside years 0000-9999: it has no RFC 3339 form, so it is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is outside the years 0000-9999 (it would be {})", iso_millis(*.0))]
pub struct OutOfRange(pub UnixMillis);

/// The reason given for a leap second anywhere but 23:59:60 UTC.
const MISPLACED_LEAP: TsError =
    "has a leap second (:60) that is not 23:59:60 UTC, the only second a leap second can be";

/// A leap second (`:60`, read as the next second's first instant) is only real at the
/// end of a UTC day: the instant it was read as must lie in a UTC day's first second.
#[inline]
fn leap_second_fits(ms: UnixMillis) -> bool {
    ms.rem_euclid(86_400_000) < 1000
}

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
    let (secs_of_day, millis, leap, rest) = parse_time(rest)?;
    let local = (date_days * 86_400 + secs_of_day) * 1000 + millis;
    let ms = if rest.is_empty() {
        match tz {
            Some(tz) => local_to_utc(tz, local)?,
            None => {
                return Err("has no UTC offset (add Z or ±HH:MM, or set a timezone in the mapping)")
            }
        }
    } else {
        local - parse_offset(rest)? * 1000
    };
    if leap && !leap_second_fits(ms) {
        return Err(MISPLACED_LEAP);
    }
    Ok(ms)
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
    if sec == 60 && !leap_second_fits(local - offset_secs * 1000) {
        // The general path gives the reason.
        return None;
    }
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

/// Whether `s` is a `date-time` as the spec's JSON Schema means it (RFC 3339 §5.6):
/// `YYYY-MM-DD(T|t)HH:MM:SS[.f+](Z|z|±HH:MM)`, a real calendar day, and `:60` only at
/// 23:59:60 UTC. [`parse_rfc3339`] reads more (a space for `T`, no seconds, `,` before
/// the fraction, `+0530`); this is what a value sent as a date-time must look like.
pub fn is_rfc3339(s: &[u8]) -> bool {
    let shape = s.len() >= 20
        && matches!(s[10], b'T' | b't')
        && s[16] == b':'
        && match s[19] {
            b'.' => s[20..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .is_some_and(|n| n > 0 && offset_shape(&s[20 + n..])),
            _ => offset_shape(&s[19..]),
        };
    shape && parse_rfc3339(s).is_ok()
}

/// `Z`, `z` or `±HH:MM`.
fn offset_shape(s: &[u8]) -> bool {
    matches!(s, [b'Z' | b'z']) || matches!(s, [b'+' | b'-', _, _, b':', _, _])
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
    use chrono::Timelike;
    const NO_MATCH: &str = "does not match the mapping's timestamp format";
    // chrono reads second 60 on any minute, as a nanosecond count past 10^9 (which its
    // millisecond count folds into the next second): the leap check below needs to know.
    let (local, leap) = match kind {
        PatternKind::Instant => {
            let d = chrono::DateTime::parse_from_str(s, pattern).map_err(|_| NO_MATCH)?;
            let ms = d.timestamp_millis();
            if d.nanosecond() >= 1_000_000_000 && !leap_second_fits(ms) {
                return Err(MISPLACED_LEAP);
            }
            return Ok(ms);
        }
        PatternKind::DateTime => {
            let d = chrono::NaiveDateTime::parse_from_str(s, pattern).map_err(|_| NO_MATCH)?;
            (
                d.and_utc().timestamp_millis(),
                d.nanosecond() >= 1_000_000_000,
            )
        }
        PatternKind::Date => (
            chrono::NaiveDate::parse_from_str(s, pattern)
                .map_err(|_| NO_MATCH)?
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis(),
            false,
        ),
    };
    let ms = match tz {
        Some(tz) => local_to_utc(tz, local)?,
        None => local,
    };
    if leap && !leap_second_fits(ms) {
        return Err(MISPLACED_LEAP);
    }
    Ok(ms)
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

/// `HH:MM[:SS[.fff]]` → (seconds of day, millis, whether the second is a leap second,
/// rest). Second 60 is folded into the next minute by the arithmetic; the caller checks
/// that the instant it names is 23:59:60 UTC.
fn parse_time(s: &[u8]) -> Result<(i64, i64, bool, &[u8]), TsError> {
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
    Ok((h * 3600 + mi * 60 + sec, millis, sec == 60, rest))
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

/// `YYYY-MM-DDTHH:MM:SS.sssZ` (no quotes), for messages and reports. An instant outside
/// years 0000-9999 is shown in ISO 8601's expanded form (`+10000-01-01T...`,
/// `-0001-12-31T...`), which no call ever carries: it only names a value in a reason.
pub fn iso_millis(ms: UnixMillis) -> String {
    let mut v = Vec::with_capacity(26);
    if write_iso_millis(&mut v, ms).is_ok() {
        return String::from_utf8_lossy(&v).trim_matches('"').to_string();
    }
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let sign = if y < 0 { '-' } else { '+' };
    format!(
        "{sign}{:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        y.unsigned_abs(),
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// Appends `"YYYY-MM-DDTHH:MM:SS.sssZ"` (with quotes), or refuses an instant outside
/// years 0000-9999 (nothing is written then): such a year has no four-digit form, and
/// writing it modulo 10,000 would send another date.
#[inline]
pub fn write_iso_millis(out: &mut Vec<u8>, ms: UnixMillis) -> Result<(), OutOfRange> {
    if !in_range(ms) {
        return Err(OutOfRange(ms));
    }
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    // Every field is in range: the year by the check above, the others by construction
    // (month, day, and the remainders).
    put_minute(&mut b, [y, mo, d, sod / 3600, sod / 60 % 60]);
    b[18..20].copy_from_slice(&DIGIT_PAIRS[(sod % 60) as usize]);
    b[21] = b'0' + (milli / 100) as u8;
    b[22..24].copy_from_slice(&DIGIT_PAIRS[(milli % 100) as usize]);
    out.extend_from_slice(&b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: &str) -> Result<String, TsError> {
        let ms = parse_rfc3339(s.as_bytes())?;
        let mut v = Vec::new();
        write_iso_millis(&mut v, ms).map_err(|_| "out of range")?;
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
        write_iso_millis(&mut v, ms).unwrap();
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
            write_iso_millis(&mut v, r.unwrap()).unwrap();
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
        let (secs_of_day, millis, leap, rest) = parse_time(rest)?;
        let local = (date_days * 86_400 + secs_of_day) * 1000 + millis;
        if rest.is_empty() {
            return Err("no offset");
        }
        let ms = local - parse_offset(rest)? * 1000;
        if leap && !leap_second_fits(ms) {
            return Err("leap");
        }
        Ok(ms)
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
        fn iso_writer_matches_digit_by_digit(ms in MIN_MS..=MAX_MS) {
            let mut fast = Vec::new();
            write_iso_millis(&mut fast, ms).unwrap();
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
        /// Over every i64: the writer writes a four-digit year that reads back as the
        /// same instant, or refuses exactly the instants outside 0000-9999.
        #[test]
        fn the_writer_never_writes_a_year_outside_0000_to_9999(
            ms in proptest::prop_oneof![
                proptest::num::i64::ANY,
                MIN_MS - 100_000..MIN_MS + 100_000,
                MAX_MS - 100_000..MAX_MS + 100_000,
            ],
        ) {
            let mut v = Vec::new();
            match write_iso_millis(&mut v, ms) {
                Ok(()) => {
                    proptest::prop_assert!(in_range(ms));
                    proptest::prop_assert_eq!(v.len(), 26);
                    let text = &v[1..25];
                    proptest::prop_assert!(text[..4].iter().all(u8::is_ascii_digit));
                    proptest::prop_assert_eq!(parse_rfc3339(text), Ok(ms));
                }
                Err(OutOfRange(at)) => {
                    proptest::prop_assert_eq!(at, ms);
                    proptest::prop_assert!(!in_range(ms));
                    proptest::prop_assert!(v.is_empty());
                }
            }
        }

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
                    write_iso_millis(&mut want, ms).unwrap();
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
        assert_eq!(
            parse_iso_rewrite(b"2023-12-31T23:59:60Z").map(|(_, t)| t),
            Some(None),
            "a leap second rolls over: the writer's arithmetic"
        );
        assert_eq!(ok("2023-03-06T12:21Z"), None);
    }

    #[test]
    fn fast_iso_path_edges() {
        for ok in [
            "2024-02-29T23:59:59.999Z",
            "2016-12-31T23:59:60Z",
            "2016-12-31T18:59:60.5-05:00",
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
            "2023-03-06T12:21:60Z",
        ] {
            assert_eq!(parse_iso_fast(general.as_bytes()), None, "{general}");
        }
    }

    #[test]
    fn a_year_outside_0000_to_9999_is_refused_not_wrapped() {
        // Once this wrote "0000-01-01T00:00:00.000Z" for the first instant of 10000.
        let mut v = Vec::new();
        assert_eq!(
            write_iso_millis(&mut v, MAX_MS + 1),
            Err(OutOfRange(MAX_MS + 1))
        );
        assert_eq!(
            write_iso_millis(&mut v, MIN_MS - 1),
            Err(OutOfRange(MIN_MS - 1))
        );
        assert!(v.is_empty(), "nothing is written for a refused instant");
        write_iso_millis(&mut v, MAX_MS).unwrap();
        write_iso_millis(&mut v, MIN_MS).unwrap();
        assert_eq!(
            v,
            b"\"9999-12-31T23:59:59.999Z\"\"0000-01-01T00:00:00.000Z\""
        );
        // Parsed values that land outside the range: the instant is returned (its reason
        // is given by whoever writes it), never text with a wrapped year.
        let ms = parse_rfc3339(b"9999-12-31T23:00:00-02:00").unwrap();
        assert_eq!(ms, MAX_MS + 1 + 3_600_000, "10000-01-01T01:00:00Z");
        assert_eq!(
            parse_iso_rewrite(b"9999-12-31T23:00:00-02:00").map(|(_, t)| t),
            Some(None)
        );
        assert!(write_iso_millis(&mut Vec::new(), ms).is_err());
        let ms = parse_rfc3339(b"0000-01-01T00:30:00+01:00").unwrap();
        assert!(write_iso_millis(&mut Vec::new(), ms).is_err());
        // Messages show such an instant in ISO 8601's expanded form.
        assert_eq!(iso_millis(MAX_MS + 1), "+10000-01-01T00:00:00.000Z");
        assert_eq!(iso_millis(MIN_MS - 1), "-0001-12-31T23:59:59.999Z");
        assert_eq!(
            OutOfRange(-99_999_999_999_000).to_string(),
            "is outside the years 0000-9999 (it would be -1199-02-15T14:13:21.000Z)"
        );
    }

    #[test]
    fn a_leap_second_is_taken_only_at_23_59_60_utc() {
        for (leap, next) in [
            ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000Z"),
            ("2016-12-31T23:59:60.250Z", "2017-01-01T00:00:00.250Z"),
            ("2016-12-31T18:59:60-05:00", "2017-01-01T00:00:00.000Z"),
            ("2017-01-01T05:29:60+05:30", "2017-01-01T00:00:00.000Z"),
            ("2016-12-31 23:59:60Z", "2017-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(iso(leap).as_deref(), Ok(next), "{leap}");
        }
        for bad in [
            "2023-03-06T12:21:60Z",
            "2016-12-31T23:59:60+01:00",
            "2016-12-31T23:58:60Z",
            "2016-12-31T22:59:60Z",
        ] {
            assert_eq!(parse_rfc3339(bad.as_bytes()), Err(MISPLACED_LEAP), "{bad}");
        }
        // In a time zone: 00:59:60 in Paris (UTC+1 in winter) is 23:59:60 UTC.
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert!(parse_iso(b"2017-01-01T00:59:60", Some(paris)).is_ok());
        assert_eq!(
            parse_iso(b"2016-12-31T23:59:60", Some(paris)),
            Err(MISPLACED_LEAP)
        );
        // And through chrono's patterns, which read :60 on any minute.
        let p = "%Y-%m-%d %H:%M:%S";
        assert_eq!(
            parse_pattern("2016-12-31 23:59:60", p, PatternKind::DateTime, None),
            parse_rfc3339(b"2017-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_pattern("2016-12-31 12:00:60", p, PatternKind::DateTime, None),
            Err(MISPLACED_LEAP)
        );
        let p = "%Y-%m-%d %H:%M:%S %z";
        assert_eq!(
            parse_pattern("2016-12-31 12:00:60 +0000", p, PatternKind::Instant, None),
            Err(MISPLACED_LEAP)
        );
        assert!(parse_pattern("2016-12-31 18:59:60 -0500", p, PatternKind::Instant, None).is_ok());
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
