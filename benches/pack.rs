//! The packer in calls/s: realistic calls (the encoder's output for generated events)
//! pushed through `pack::Packer` with the vendor's limits, bodies handed out and dropped
//! as the packer thread hands them on. And `--gzip`: one full request body (about 500 KB
//! of the same calls) compressed at levels 1, 2, 3, 6 and 9 by the sender's own
//! `send::gzip` (flate2 on zlib-rs), and by miniz_oxide, flate2's default backend, for
//! comparison (raw deflate: no gzip header or CRC, which cost little next to deflate).
//!
//! Quick check: `cargo bench --bench pack -- --test`.

mod common;

use std::hint::black_box;

use cdp_backfill::config::GzipLevel;
use cdp_backfill::pack::Packer;
use cdp_backfill::send;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ROWS: u64 = 20_000;

fn pack(c: &mut Criterion) {
    let (arena, ranges) = common::encoded_calls(ROWS);
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(ranges.len() as u64));
    g.bench_function("events", |b| {
        b.iter(|| {
            let mut packer = Packer::new(Default::default());
            let mut bodies = 0u32;
            for &(start, len) in &ranges {
                let call = &arena[start..start + len];
                if let Ok(Some(body)) = packer.push(black_box(call)) {
                    bodies += body.calls;
                }
            }
            if let Some(body) = packer.finish() {
                bodies += body.calls;
            }
            assert_eq!(bodies as usize, ranges.len());
        })
    });
    g.finish();
}

/// The first full request body the packer makes of the generated events.
fn full_body() -> Vec<u8> {
    let (arena, ranges) = common::encoded_calls(ROWS);
    let mut packer = Packer::new(Default::default());
    for &(start, len) in &ranges {
        if let Ok(Some(body)) = packer.push(&arena[start..start + len]) {
            return body.bytes;
        }
    }
    panic!("{ROWS} rows do not fill a request body");
}

fn gzip(c: &mut Criterion) {
    let body = full_body();
    let mut g = c.benchmark_group("gzip");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for level in [1u8, 2, 3, 6, 9] {
        let z = send::gzip(&body, GzipLevel::new(level).unwrap()).unwrap();
        let m = miniz_oxide::deflate::compress_to_vec(&body, level);
        eprintln!(
            "level {level}: {} bytes -> zlib-rs {} ({:.2}x), miniz_oxide {} ({:.2}x)",
            body.len(),
            z.len(),
            body.len() as f64 / z.len() as f64,
            m.len(),
            body.len() as f64 / m.len() as f64
        );
        g.bench_with_input(BenchmarkId::new("zlib-rs", level), &level, |b, &l| {
            let l = GzipLevel::new(l).unwrap();
            b.iter(|| send::gzip(black_box(&body), l).unwrap().len())
        });
        g.bench_with_input(BenchmarkId::new("miniz_oxide", level), &level, |b, &l| {
            b.iter(|| miniz_oxide::deflate::compress_to_vec(black_box(&body), l).len())
        });
    }
    g.finish();
}

criterion_group!(benches, pack, gzip);
criterion_main!(benches);
