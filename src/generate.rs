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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    generate(&mut w, rows, seed)
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
