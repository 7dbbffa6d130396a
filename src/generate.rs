//! Deterministic generator of realistic event CSVs for tests, benchmarks and rehearsals.
//!
//! Same `(rows, seed)`, same bytes. The data has realistic widths, non-ASCII text, a few
//! large fields, and planted bad rows that a correct run must reject (reported in
//! [`Generated::bad_rows`] so tests can compare): rows with no id, with a bad timestamp,
//! and with a field that makes the call exceed the 32,000-byte call limit.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The header of generated files, matched by `fixtures/events.toml`.
pub const HEADER: &str = "user_id,anonymous_id,event,timestamp,plan,amount,currency,country,city,item_count,is_trial,description\n";

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub rows: u64,
    pub bytes: u64,
    /// 0-based data rows that must be rejected, with the reason code expected.
    pub bad_rows: Vec<(u64, &'static str)>,
}

/// splitmix64: tiny, fast, and good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const EVENTS: &[&str] = &[
    "Order Completed",
    "Product Viewed",
    "Signed Up",
    "Cart Updated",
    "Subscription Renewed",
    "Email Opened",
    "Checkout Started",
    "Coupon Applied",
];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "JPY", "BRL"];
const PLACES: &[(&str, &str)] = &[
    ("US", "New York"),
    ("BR", "São Paulo"),
    ("CH", "Zürich"),
    ("JP", "東京"),
    ("RU", "Москва"),
    ("FR", "Saint-Étienne"),
    ("DE", "Köln"),
    ("IN", "Bengaluru"),
    ("EG", "القاهرة"),
    ("US", "San José"),
];
const WORDS: &[&str] = &[
    "great",
    "product",
    "delivery",
    "late",
    "quality",
    "naïve",
    "café",
    "refund",
    "\"quoted\"",
    "size",
    "colour",
    "déjà vu",
    "👍",
    "fast",
    "with, comma",
    "return",
    "gift",
    "new\nline",
    "price",
    "💡",
];
const OFFSETS: &[&str] = &[
    "Z",
    "+00:00",
    "-05:00",
    "+09:00",
    "+05:30",
    ".250Z",
    ".123456+01:00",
];

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s
}

/// Writes `rows` data rows (plus the header) to `w`.
pub fn generate(w: &mut impl Write, rows: u64, seed: u64) -> std::io::Result<Generated> {
    let mut rng = Rng::new(seed);
    let mut g = Generated {
        rows,
        ..Default::default()
    };
    w.write_all(HEADER.as_bytes())?;
    g.bytes += HEADER.len() as u64;
    let mut line = Vec::with_capacity(64 * 1024);
    for row in 0..rows {
        line.clear();
        // About 1 row in 500 is planted bad, each kind equally often.
        let bad = match rng.below(1500) {
            0 => Some("missing_id"),
            1 => Some("bad_timestamp"),
            2 => Some("call_too_large"),
            _ => None,
        };
        let user = rng.below(200_000);
        let known = rng.below(10) < 8;
        if bad != Some("missing_id") && known {
            line.extend_from_slice(format!("u{user:06}").as_bytes());
        }
        line.push(b',');
        if bad != Some("missing_id") && (!known || rng.below(4) == 0) {
            line.extend_from_slice(format!("anon-{:016x}", rng.next_u64()).as_bytes());
        }
        line.push(b',');
        csv_field(&mut line, rng.pick(EVENTS));
        line.push(b',');
        if bad == Some("bad_timestamp") {
            line.extend_from_slice(
                rng.pick(&[
                    "not a date",
                    "2021-02-30T10:00:00Z",
                    "1969-07-20T20:17:40Z",
                    "2024-01-01 12:00",
                ])
                .as_bytes(),
            );
        } else {
            let days = rng.below(6 * 365) as i64 + crate::timestamp::days_from_civil(2019, 1, 1);
            let secs = rng.below(86_400) as i64;
            let t = days * 86_400 + secs;
            let dt = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
            line.extend_from_slice(dt.format("%Y-%m-%dT%H:%M:%S").to_string().as_bytes());
            line.extend_from_slice(rng.pick(OFFSETS).as_bytes());
        }
        line.push(b',');
        line.extend_from_slice(rng.pick(PLANS).as_bytes());
        line.push(b',');
        line.extend_from_slice(format!("{}.{:02}", rng.below(2000), rng.below(100)).as_bytes());
        line.push(b',');
        line.extend_from_slice(rng.pick(CURRENCIES).as_bytes());
        line.push(b',');
        let (country, city) = PLACES[rng.below(PLACES.len() as u64) as usize];
        line.extend_from_slice(country.as_bytes());
        line.push(b',');
        csv_field(&mut line, city);
        line.push(b',');
        line.extend_from_slice(rng.below(20).to_string().as_bytes());
        line.push(b',');
        line.extend_from_slice(if rng.below(3) == 0 { b"true" } else { b"false" });
        line.push(b',');
        let desc = if bad == Some("call_too_large") {
            words(&mut rng, 6000)
        } else if rng.below(1000) == 0 {
            // A large field that still fits in a call.
            words(&mut rng, 1500)
        } else {
            {
                let n = 3 + rng.below(12) as usize;
                words(&mut rng, n)
            }
        };
        csv_field(&mut line, &desc);
        line.push(b'\n');
        w.write_all(&line)?;
        g.bytes += line.len() as u64;
        if let Some(reason) = bad {
            g.bad_rows.push((row, reason));
        }
    }
    w.flush()?;
    Ok(g)
}

/// [`generate`] into a file.
pub fn generate_file(path: &Path, rows: u64, seed: u64) -> std::io::Result<Generated> {
    generate_file_as(path, Shape::Events, rows, seed)
}

/// What kind of rows to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// [`generate`]: twelve columns of about 200 bytes, `fixtures/events.toml`.
    #[default]
    Events,
    /// [`generate_rich`]: fifteen columns of about 570 bytes with a JSON column,
    /// `fixtures/rich.toml`.
    Rich,
}

/// [`generate`] or [`generate_rich`] into a file.
pub fn generate_file_as(
    path: &Path,
    shape: Shape,
    rows: u64,
    seed: u64,
) -> std::io::Result<Generated> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    match shape {
        Shape::Events => generate(&mut w, rows, seed),
        Shape::Rich => generate_rich(&mut w, rows, seed),
    }
}

/// The header of [`generate_rich`]'s files, matched by `fixtures/rich.toml`.
pub const RICH_HEADER: &str = "user_id,anonymous_id,event,timestamp,session_id,plan,amount,quantity,is_trial,signed_up_at,score,country,ip,user_agent,cart\n";

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "okhttp/4.12.0",
];
const PRODUCTS: &[&str] = &[
    "Trail Shoe",
    "Wool Socks",
    "Rain Jacket \"Storm\"",
    "Café Mug",
    "Backpack 30L",
    "Headlamp",
    "Water Bottle",
    "Gift Card 🎁",
];
const SHIPPING: &[&str] = &["standard", "express", "pickup"];

/// Appends `s` as a JSON string the way an exporter would write it: `ascii` escapes every
/// non-ASCII character as `\uXXXX` (surrogate pairs beyond the BMP), as Python's
/// `json.dumps` does by default; otherwise UTF-8 is written as it is.
fn json_str(out: &mut String, s: &str, ascii: bool) {
    use std::fmt::Write as _;
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A cart as an exporter writes a JSON column: an object of about 300 bytes with a list
/// of items, nested objects, numbers, a null and a boolean, `", "` and `": "` between
/// members (as Python's `json.dumps`), and now and then non-ASCII text escaped.
fn cart_json(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write as _;
    let ascii = rng.below(2) == 0;
    let _ = write!(
        out,
        "{{\"cart_id\": \"c-{:08x}\", \"items\": [",
        rng.next_u64() as u32
    );
    let items = 1 + rng.below(2);
    for i in 0..items {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{{\"sku\": \"SKU-{:05}\", \"name\": ",
            rng.below(100_000)
        );
        json_str(out, rng.pick(PRODUCTS), ascii);
        let _ = write!(
            out,
            ", \"qty\": {}, \"price\": {}.{:02}}}",
            1 + rng.below(4),
            rng.below(300),
            rng.below(100)
        );
    }
    let (_, city) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let _ = write!(out, "], \"coupon\": ");
    if rng.below(4) == 0 {
        let _ = write!(out, "\"SAVE{}\"", 5 * (1 + rng.below(4)));
    } else {
        out.push_str("null");
    }
    let _ = write!(
        out,
        ", \"shipping\": {{\"method\": \"{}\", \"cost\": {}.{}, \"address\": {{\"city\": ",
        rng.pick(SHIPPING),
        rng.below(20),
        rng.below(10)
    );
    json_str(out, city, ascii);
    let _ = write!(
        out,
        ", \"zip\": \"{:05}\"}}}}, \"gift\": {}, \"weight_kg\": {}.{:03}}}",
        rng.below(100_000),
        if rng.below(5) == 0 { "true" } else { "false" },
        rng.below(20),
        rng.below(1000)
    );
}

/// Writes `rows` rich rows (plus [`RICH_HEADER`]) to `w`: the shape of a product
/// analytics export, fifteen columns and about 570 bytes a row, mapped by
/// `fixtures/rich.toml` into a track call with nine typed properties (a float, an int,
/// a boolean, a timestamp, a second float, strings, and the `cart` column, a JSON object
/// of about 300 bytes held as text) and two context fields. About one row in 2,000 has
/// a cart cut short (invalid JSON), which a correct run rejects (`bad_value`); they are
/// listed in [`Generated::bad_rows`]. Same `(rows, seed)`, same bytes.
pub fn generate_rich(w: &mut impl Write, rows: u64, seed: u64) -> std::io::Result<Generated> {
    use std::fmt::Write as _;
    let mut rng = Rng::new(seed);
    let mut g = Generated {
        rows,
        ..Default::default()
    };
    w.write_all(RICH_HEADER.as_bytes())?;
    g.bytes += RICH_HEADER.len() as u64;
    let mut line = Vec::with_capacity(4096);
    let mut s = String::with_capacity(1024);
    let iso = |rng: &mut Rng, s: &mut String, first_year: i64, years: u64| {
        let days =
            rng.below(years * 365) as i64 + crate::timestamp::days_from_civil(first_year, 1, 1);
        let t = days * 86_400 + rng.below(86_400) as i64;
        let dt = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let _ = write!(s, "{}", dt.format("%Y-%m-%dT%H:%M:%S"));
        s.push_str(rng.pick(OFFSETS));
    };
    for row in 0..rows {
        line.clear();
        let bad = rng.below(2000) == 0;
        let user = rng.below(200_000);
        let known = rng.below(10) < 8;
        s.clear();
        if known {
            let _ = write!(s, "u{user:06}");
        }
        s.push(',');
        if !known || rng.below(4) == 0 {
            let _ = write!(s, "anon-{:016x}", rng.next_u64());
        }
        s.push(',');
        s.push_str(rng.pick(EVENTS));
        s.push(',');
        iso(&mut rng, &mut s, 2019, 6);
        let _ = write!(s, ",s-{:016x},{},", rng.next_u64(), rng.pick(PLANS));
        let _ = write!(
            s,
            "{}.{:02},{},{},",
            rng.below(2000),
            rng.below(100),
            1 + rng.below(20),
            if rng.below(3) == 0 { "true" } else { "false" }
        );
        iso(&mut rng, &mut s, 2015, 4);
        let (country, _) = PLACES[rng.below(PLACES.len() as u64) as usize];
        let _ = write!(
            s,
            ",0.{:04},{country},{}.{}.{}.{},",
            rng.below(10_000),
            1 + rng.below(223),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        );
        line.extend_from_slice(s.as_bytes());
        csv_field(&mut line, rng.pick(USER_AGENTS));
        line.push(b',');
        s.clear();
        cart_json(&mut rng, &mut s);
        if bad {
            // Cut in the middle: the object is never closed.
            let mut cut = s.len() / 2;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            g.bad_rows.push((row, "bad_value"));
        }
        csv_field(&mut line, &s);
        line.push(b'\n');
        w.write_all(&line)?;
        g.bytes += line.len() as u64;
    }
    w.flush()?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&mut a, 2000, 7).unwrap();
        generate(&mut b, 2000, 7).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        generate(&mut c, 2000, 8).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn output_is_valid_csv_with_planted_rows() {
        let mut v = Vec::new();
        let g = generate(&mut v, 5000, 1).unwrap();
        let mut r = csv::Reader::from_reader(&v[..]);
        let n = r
            .byte_records()
            .map(|r| assert_eq!(r.unwrap().len(), 12))
            .count();
        assert_eq!(n, 5000);
        assert!(!g.bad_rows.is_empty());
    }
}
