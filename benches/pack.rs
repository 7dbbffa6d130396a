//! The packer in calls/s: realistic calls (the encoder's output for generated events)
//! pushed through `pack::Packer` with the vendor's limits, bodies handed out and dropped
//! as the packer thread hands them on.
//!
//! Quick check: `cargo bench --bench pack -- --test`.

mod common;

use std::hint::black_box;

use cdp_backfill::map::encode::{map_chunk, EmitKind, Mapped};
use cdp_backfill::pack::Packer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROWS: u64 = 20_000;

/// The encoded calls of a generated input, each as its own byte range.
fn encoded_calls() -> (Vec<u8>, Vec<(usize, usize)>) {
    let bytes = common::csv_bytes(ROWS);
    let path = common::input_file("pack-events.csv", &bytes);
    let input = common::input_info(&path);
    let mapping = common::events_mapping(&input);
    let opts = common::encode_options();
    let mut arena = Vec::new();
    let mut ranges = Vec::new();
    let mut out = Mapped::default();
    for chunk in common::read_chunks(&input) {
        map_chunk(&chunk, &mapping, &opts, &mut out);
        let mut at = 0;
        for e in &out.emits {
            match e.kind {
                EmitKind::Call(_) => {
                    let call = &out.calls[at..at + e.len as usize];
                    ranges.push((arena.len(), call.len()));
                    arena.extend_from_slice(call);
                    at += e.len as usize;
                }
                // Batch-level context bytes share the calls arena; events.toml has none.
                EmitKind::Context => at += e.len as usize,
                EmitKind::Reject(_) => {}
            }
        }
    }
    (arena, ranges)
}

fn pack(c: &mut Criterion) {
    let (arena, ranges) = encoded_calls();
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
