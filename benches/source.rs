//! Sources in MB/s of input: open a file and fill reusable chunks until it is exhausted,
//! exactly as the reader thread does (`source::open` + `Opened::fill`), after the mapping
//! (`fixtures/events.toml`) has been resolved against the input, as a run does first (so
//! NDJSON and Parquet extract only the mapped columns; events.toml maps all of them).
//!
//! The same 20,000 generated rows in each format; throughput is in bytes of that
//! format's file, so compare formats by `time`, not by MB/s.
//!
//! Quick check: `cargo bench --bench source -- --test`.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use cdp_backfill::source::{self, InputInfo, SourceOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// About 3 MB of CSV: large enough that per-file costs (open, header) are noise.
const ROWS: u64 = 20_000;

/// Reads the whole input; returns the rows read so the work cannot be optimised away.
fn read_all(input: &Arc<InputInfo>) -> usize {
    let mut src = source::open(input, &SourceOptions::default()).expect("the bench input opens");
    let mut chunk = src.new_chunk(input);
    let mut rows = 0;
    loop {
        src.fill(&mut chunk, common::CHUNK_ROWS)
            .expect("generated inputs read cleanly");
        if chunk.is_empty() {
            return rows;
        }
        rows += chunk.len();
    }
}

fn sources(c: &mut Criterion) {
    let mut g = c.benchmark_group("source");
    for (format, bytes) in [
        ("csv", common::csv_bytes(ROWS)),
        ("ndjson", common::ndjson_bytes(ROWS)),
        ("parquet", common::parquet_bytes(ROWS)),
    ] {
        let path = common::input_file(&format!("source-events.{format}"), &bytes);
        let input = common::input_info(&path);
        common::events_mapping(&input);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format, |b| {
            b.iter(|| {
                let rows = read_all(black_box(&input));
                assert_eq!(rows as u64, ROWS);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sources);
criterion_main!(benches);
