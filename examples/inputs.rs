//! Writes one data set as CSV, NDJSON and Parquet, value for value, from a fixed seed.
//!
//! Usage: `cargo run --release --example inputs -- DIR ROWS [NAME] [ROW_GROUP_ROWS]`
//! writes `DIR/NAME.csv`, `DIR/NAME.ndjson` and `DIR/NAME.parquet` (NAME defaults to
//! `typed`). The checked-in fixtures were made with
//! `cargo run --example inputs -- fixtures 40 typed 16` (16-row row groups, so resume
//! tests cross row-group boundaries); the throughput inputs of BENCHMARKS.md with
//! `cargo run --release --example inputs -- target/bench 2000000 big`.
//!
//! Every row is a track event: ids (some rows have only an anonymous id, some no ids at
//! all), an RFC 3339 timestamp (a millisecond UTC timestamp in Parquet), a float amount,
//! an integer, a boolean, text with quotes and non-ASCII letters, a list of tags and an
//! address object (JSON text in the CSV; a list and a struct in Parquet).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const EVENTS: [&str; 4] = [
    "Checkout Started",
    "Order Completed",
    "Product Viewed",
    "Signed Up",
];
const PLANS: [&str; 3] = ["free", "pro", "team"];
const CITIES: [&str; 6] = [
    "Zürich",
    "São Paulo",
    "Kraków",
    "Oslo",
    "Saint \"Q\", Inc",
    "東京",
];
const TAGS: [&str; 5] = ["new", "vip", "beta", "café", "b2b"];

struct Rec {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    event: &'static str,
    ts_ms: i64,
    plan: &'static str,
    amount: f64,
    amount_text: String,
    item_count: i64,
    is_trial: bool,
    city: &'static str,
    tags: Vec<&'static str>,
    zip: String,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn rec(i: u64) -> Rec {
    let r = splitmix(i ^ 0x5EED);
    let pick = |shift: u32, n: usize| ((r >> shift) as usize) % n;
    let has_user = i % 9 != 4;
    let has_anon = i % 3 == 0 || !has_user;
    // Cents whose last digit is not 0, so "12.35" reads back as 12.35 in every format.
    let mut cents = (r >> 8) % 500_000;
    if cents % 10 == 0 {
        cents += 1;
    }
    let amount_text = format!("{}.{:02}", cents / 100, cents % 100);
    let tags = (0..pick(20, 3))
        .map(|k| TAGS[(pick(24, 5) + k) % 5])
        .collect();
    Rec {
        user_id: has_user.then(|| format!("user-{}", 1000 + (r >> 40) % 5000)),
        // Row 13 has no id at all: every format rejects it the same way.
        anonymous_id: (has_anon && i != 13).then(|| format!("anon-{:016x}", r)),
        event: EVENTS[pick(2, 4)],
        // Hourly from 2023-01-01, wrapping after three years so that large inputs stay
        // in the past.
        ts_ms: 1_672_531_200_000 + (i as i64 * 3_607_000) % 94_608_000_000 + (r % 1000) as i64,
        plan: PLANS[pick(5, 3)],
        amount: amount_text.parse().unwrap_or(0.0),
        amount_text,
        item_count: (r >> 33) as i64 % 40,
        is_trial: r & 1 == 1,
        city: CITIES[pick(12, 6)],
        tags,
        zip: format!("{:05}", (r >> 16) % 100_000),
    }
}

fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn tags_json(r: &Rec) -> String {
    let items: Vec<String> = r.tags.iter().map(|t| json_str(t)).collect();
    format!("[{}]", items.join(","))
}

fn address_json(r: &Rec) -> String {
    format!(
        "{{\"city\":{},\"zip\":{}}}",
        json_str(r.city),
        json_str(&r.zip)
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const COLUMNS: &str =
    "user_id,anonymous_id,event,timestamp,plan,amount,item_count,is_trial,city,tags,address";

fn write_csv(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(w, "{COLUMNS}")?;
    for i in 0..rows {
        let r = rec(i);
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.user_id.as_deref().unwrap_or(""),
            r.anonymous_id.as_deref().unwrap_or(""),
            r.event,
            iso(r.ts_ms),
            r.plan,
            r.amount_text,
            r.item_count,
            r.is_trial,
            csv_field(r.city),
            csv_field(&tags_json(&r)),
            csv_field(&address_json(&r)),
        )?;
    }
    w.flush()
}

fn write_ndjson(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for i in 0..rows {
        let r = rec(i);
        // A missing user id is an absent key; a missing anonymous id an explicit null.
        let user = match &r.user_id {
            Some(u) => format!("\"user_id\":{},", json_str(u)),
            None => String::new(),
        };
        let anon = match &r.anonymous_id {
            Some(a) => json_str(a),
            None => "null".into(),
        };
        writeln!(
            w,
            "{{{user}\"anonymous_id\":{anon},\"event\":{},\"timestamp\":{},\"plan\":{},\"amount\":{},\"item_count\":{},\"is_trial\":{},\"city\":{},\"tags\":{},\"address\":{}}}",
            json_str(r.event),
            json_str(&iso(r.ts_ms)),
            json_str(r.plan),
            r.amount_text,
            r.item_count,
            r.is_trial,
            json_str(r.city),
            tags_json(&r),
            address_json(&r),
        )?;
    }
    w.flush()
}

fn batch(from: u64, to: u64) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let recs: Vec<Rec> = (from..to).map(rec).collect();
    let mut tags = ListBuilder::new(StringBuilder::new());
    for r in &recs {
        for t in &r.tags {
            tags.values().append_value(t);
        }
        tags.append(true);
    }
    let address = StructArray::from(vec![
        (
            Arc::new(Field::new("city", DataType::Utf8, false)),
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.city))) as ArrayRef,
        ),
        (
            Arc::new(Field::new("zip", DataType::Utf8, false)),
            Arc::new(StringArray::from_iter_values(
                recs.iter().map(|r| r.zip.as_str()),
            )),
        ),
    ]);
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter(
                recs.iter().map(|r| r.user_id.as_deref()),
            )),
        ),
        (
            "anonymous_id",
            Arc::new(StringArray::from_iter(
                recs.iter().map(|r| r.anonymous_id.as_deref()),
            )),
        ),
        (
            "event",
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.event))),
        ),
        (
            "timestamp",
            Arc::new(
                TimestampMillisecondArray::from_iter_values(recs.iter().map(|r| r.ts_ms))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "plan",
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.plan))),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                recs.iter().map(|r| r.amount),
            )),
        ),
        (
            "item_count",
            Arc::new(Int64Array::from_iter_values(
                recs.iter().map(|r| r.item_count),
            )),
        ),
        (
            "is_trial",
            Arc::new(BooleanArray::from_iter(
                recs.iter().map(|r| Some(r.is_trial)),
            )),
        ),
        (
            "city",
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.city))),
        ),
        ("tags", Arc::new(tags.finish())),
        ("address", Arc::new(address)),
    ];
    RecordBatch::try_from_iter_with_nullable(cols.into_iter().map(|(n, a)| (n, a, true)))
}

fn write_parquet(
    path: &Path,
    rows: u64,
    group_rows: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let first = batch(0, rows.min(1))?;
    let mut w = ArrowWriter::try_new(File::create(path)?, first.schema(), Some(props))?;
    let step = 65_536u64;
    let mut from = 0;
    while from < rows {
        let to = (from + step).min(rows);
        w.write(&batch(from, to)?)?;
        from = to;
    }
    w.close()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(rows)) = (args.first(), args.get(1).and_then(|r| r.parse().ok())) else {
        eprintln!("usage: inputs DIR ROWS [NAME] [ROW_GROUP_ROWS]");
        return ExitCode::from(2);
    };
    let name = args.get(2).map_or("typed", String::as_str);
    let group_rows = args.get(3).and_then(|g| g.parse().ok()).unwrap_or(1 << 20);
    let dir = Path::new(dir);
    let result: Result<(), Box<dyn std::error::Error>> = std::fs::create_dir_all(dir)
        .map_err(Into::into)
        .and_then(|_| write_csv(&dir.join(format!("{name}.csv")), rows).map_err(Into::into))
        .and_then(|_| write_ndjson(&dir.join(format!("{name}.ndjson")), rows).map_err(Into::into))
        .and_then(|_| write_parquet(&dir.join(format!("{name}.parquet")), rows, group_rows));
    match result {
        Ok(()) => {
            eprintln!(
                "wrote {rows} rows to {}/{name}.{{csv,ndjson,parquet}}",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
