//! The packer in calls/s: realistic calls (the encoder's output for generated events)
//! pushed through `pack::Packer` with the vendor's limits, bodies handed out and dropped
//! as the packer thread hands them on.
//!
//! Quick check: `cargo bench --bench pack -- --test`.

mod common;

use std::hint::black_box;

use cdp_backfill::pack::Packer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

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

criterion_group!(benches, pack);
criterion_main!(benches);
