//! Mapping and its primitives.
//!
//! - `map/events_{csv,ndjson,parquet}`: `map_chunk` with `fixtures/events.toml` over
//!   chunks already in memory, in rows/s (one thread; a run maps chunks on every core).
//! - `map/rich_csv`: the same with `fixtures/rich.toml` over `generate --shape rich` rows
//!   (fifteen columns, about 570 bytes, nine typed properties, one a JSON object held in
//!   a text column): the mapper on rich rows (issue 19).
//! - `json/write_minified`: the JSON-column path alone: checking and minifying the
//!   `cart` values of those rows (quotes undone, as the mapper sees them), in bytes/s.
//! - `timestamp/*`: `parse_rfc3339` on the offset forms the generator writes, in values/s.
//! - `message_id`: `write_message_id`, in ids/s.
//!
//! Quick check: `cargo bench --bench map -- --test`.

mod common;

use std::hint::black_box;

use cdp_backfill::json::write_minified;
use cdp_backfill::map::encode::{map_chunk, EmitKind, Mapped};
use cdp_backfill::map::message_id::write_message_id;
use cdp_backfill::timestamp::parse_rfc3339;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

const ROWS: u64 = 20_000;

fn map_events(c: &mut Criterion) {
    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(ROWS));
    for (format, bytes) in [
        ("csv", common::csv_bytes(ROWS)),
        ("ndjson", common::ndjson_bytes(ROWS)),
        ("parquet", common::parquet_bytes(ROWS)),
    ] {
        let file = format!("map-events.{format}");
        map_rows(
            &mut g,
            &format!("events_{format}"),
            &file,
            &bytes,
            "events.toml",
        );
    }
    g.finish();
}

fn map_rich(c: &mut Criterion) {
    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(ROWS));
    let bytes = common::rich_csv_bytes(ROWS);
    map_rows(&mut g, "rich_csv", "map-rich.csv", &bytes, "rich.toml");
    g.finish();
}

/// `map_chunk` over `bytes` (written to `file`, read into chunks in memory) with
/// `fixtures/<fixture>`, benched as `name`.
fn map_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    file: &str,
    bytes: &[u8],
    fixture: &str,
) {
    let path = common::input_file(file, bytes);
    let input = common::input_info(&path);
    let mapping = common::fixture_mapping(&input, fixture);
    let opts = common::encode_options();
    let chunks = common::read_chunks(&input);
    let mut out = Mapped::default();

    // The work is what we think it is: nearly every row becomes one call.
    let mut calls = 0;
    for chunk in &chunks {
        map_chunk(chunk, &mapping, &opts, &mut out);
        calls += out
            .emits
            .iter()
            .filter(|e| matches!(e.kind, EmitKind::Call(_)))
            .count();
    }
    assert!(calls as u64 > ROWS * 99 / 100, "{name}: only {calls} calls");

    g.bench_function(name, |b| {
        b.iter(|| {
            for chunk in &chunks {
                map_chunk(black_box(chunk), &mapping, &opts, &mut out);
            }
            black_box(out.calls.len())
        })
    });
}

/// The `cart` column of the rich rows, as the mapper sees it (quotes undone).
fn cart_values() -> Vec<Vec<u8>> {
    let bytes = common::rich_csv_bytes(ROWS);
    let mut rdr = csv::ReaderBuilder::new().from_reader(&bytes[..]);
    let col = rdr
        .byte_headers()
        .expect("the rich header")
        .iter()
        .position(|h| h == b"cart")
        .expect("a cart column");
    rdr.byte_records()
        .map(|r| r.expect("generated rows parse")[col].to_vec())
        .collect()
}

fn json_column(c: &mut Criterion) {
    let values = cart_values();
    let bytes: usize = values.iter().map(Vec::len).sum();
    // As a run maps them: the chunk's text is known to be UTF-8.
    let utf8 = values.iter().all(|v| std::str::from_utf8(v).is_ok());
    assert!(utf8, "generated carts are UTF-8");
    let mut out = Vec::with_capacity(1024);
    let valid = values
        .iter()
        .filter(|v| {
            out.clear();
            write_minified(&mut out, v, utf8)
        })
        .count();
    // Nearly every cart is a JSON object (the generator spoils a few on purpose).
    assert!(valid * 100 > values.len() * 99, "only {valid} valid carts");
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("write_minified", |b| {
        b.iter(|| {
            let mut ok = 0;
            for v in &values {
                out.clear();
                ok += write_minified(&mut out, black_box(v), utf8) as usize;
            }
            ok
        })
    });
    g.finish();
}

fn timestamps(c: &mut Criterion) {
    // The forms the generator writes, cycled so branch prediction sees a mix.
    let values: &[&[u8]] = &[
        b"2023-03-06T12:21:12Z",
        b"2021-11-30T23:59:59+00:00",
        b"2020-02-29T08:00:00-05:00",
        b"2024-07-01T00:00:01+09:00",
        b"2019-01-01T12:34:56+05:30",
        b"2022-06-15T10:20:30.250Z",
        b"2023-12-31T23:59:59.123456+01:00",
    ];
    let mut g = c.benchmark_group("timestamp");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("parse_rfc3339", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for v in values {
                sum = sum.wrapping_add(parse_rfc3339(black_box(v)).expect("valid timestamps"));
            }
            sum
        })
    });
    g.finish();
}

fn message_ids(c: &mut Criterion) {
    const N: u64 = 1000;
    let mut g = c.benchmark_group("message_id");
    g.throughput(Throughput::Elements(N));
    g.bench_function("write_message_id", |b| {
        let mut buf = [0u8; 36];
        b.iter(|| {
            let mut acc = 0u8;
            for row in 0..N {
                write_message_id(&mut buf, black_box(0x5eed), row, 0);
                acc ^= buf[35];
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    map_events,
    map_rich,
    json_column,
    timestamps,
    message_ids
);
criterion_main!(benches);
