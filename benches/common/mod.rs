//! Inputs shared by the benches: generated from a fixed seed, written once per bench
//! binary under `target/bench-inputs/`, so every run measures the same bytes.

#![allow(dead_code)] // each bench binary uses a different subset

use std::path::PathBuf;
use std::sync::Arc;

use cdp_backfill::map::compile::{compile, CompiledMapping};
use cdp_backfill::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped};
use cdp_backfill::pack::Packer;
use cdp_backfill::source::{self, Chunk, InputInfo, SourceOptions};

/// The generator's seed for every bench input.
pub const SEED: u64 = 1;
/// Rows per chunk, as a run uses by default.
pub const CHUNK_ROWS: usize = cdp_backfill::config::DEFAULT_CHUNK_ROWS;

/// The generated event CSV of `rows` rows, as bytes.
pub fn csv_bytes(rows: u64) -> Vec<u8> {
    let mut v = Vec::new();
    cdp_backfill::generate::generate(&mut v, rows, SEED).expect("writing into a Vec cannot fail");
    v
}

/// The generated rich CSV (`generate --shape rich`, `fixtures/rich.toml`) of `rows`
/// rows, as bytes.
pub fn rich_csv_bytes(rows: u64) -> Vec<u8> {
    let mut v = Vec::new();
    cdp_backfill::generate::generate_rich(&mut v, rows, SEED)
        .expect("writing into a Vec cannot fail");
    v
}

/// Writes `bytes` to `target/bench-inputs/<name>` (once) and returns the path.
pub fn input_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-inputs");
    std::fs::create_dir_all(&dir).expect("target/ is writable");
    let path = dir.join(name);
    let fresh = std::fs::read(&path)
        .map(|old| old == bytes)
        .unwrap_or(false);
    if !fresh {
        std::fs::write(&path, bytes).expect("target/ is writable");
    }
    path
}

/// The input as a run would see it (messageId seed, format from the extension).
pub fn input_info(path: &std::path::Path) -> Arc<InputInfo> {
    let mut found = source::discover(&[path.to_path_buf()], &SourceOptions::default())
        .expect("the bench input exists and has a known extension");
    found.remove(0)
}

/// `fixtures/events.toml` compiled against `input`'s header.
pub fn events_mapping(input: &Arc<InputInfo>) -> CompiledMapping {
    fixture_mapping(input, "events.toml")
}

/// `fixtures/<name>` compiled against `input`'s header.
pub fn fixture_mapping(input: &Arc<InputInfo>, name: &str) -> CompiledMapping {
    let spec = cdp_backfill::map::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .expect("the fixture mapping parses");
    let opened = source::open(input, &SourceOptions::default()).expect("the bench input opens");
    compile(&spec, opened.schema(), &input.display).expect("the fixture fits generated inputs")
}

pub fn encode_options() -> EncodeOptions {
    EncodeOptions {
        max_call_bytes: Packer::new(Default::default()).max_call(),
        // Far in the future: no generated timestamp is refused for being late.
        latest_ms: i64::MAX / 2,
        sent_at: false,
        sample: 1,
    }
}

/// Reads the whole input into chunks of [`CHUNK_ROWS`] rows, kept in memory, so the
/// mapping bench measures mapping alone.
pub fn read_chunks(input: &Arc<InputInfo>) -> Vec<Chunk> {
    let mut src = source::open(input, &SourceOptions::default()).expect("the bench input opens");
    let mut chunks = Vec::new();
    loop {
        let mut c = src.new_chunk(input);
        src.fill(&mut c, CHUNK_ROWS)
            .expect("generated inputs read cleanly");
        if c.is_empty() {
            return chunks;
        }
        chunks.push(c);
    }
}

/// The encoded calls of `rows` generated events (`fixtures/events.toml`), back to back in
/// one arena, each as its own byte range (start, length).
pub fn encoded_calls(rows: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
    let bytes = csv_bytes(rows);
    let path = input_file(&format!("calls-{rows}.csv"), &bytes);
    let input = input_info(&path);
    let mapping = events_mapping(&input);
    let opts = encode_options();
    let mut arena = Vec::new();
    let mut ranges = Vec::new();
    let mut out = Mapped::default();
    for chunk in read_chunks(&input) {
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

/// The generated events as NDJSON, one object per row with typed values (numbers and
/// booleans as JSON numbers and booleans), empty fields left out, as an export would
/// write them. The rows are those of [`csv_bytes`].
pub fn ndjson_bytes(rows: u64) -> Vec<u8> {
    let csv = csv_bytes(rows);
    let mut rdr = csv::Reader::from_reader(&csv[..]);
    let names: Vec<String> = rdr
        .headers()
        .expect("generated CSV has a header")
        .iter()
        .map(str::to_string)
        .collect();
    let mut out = Vec::with_capacity(csv.len() * 2);
    for rec in rdr.records() {
        let rec = rec.expect("generated CSV is valid");
        let mut obj = serde_json::Map::new();
        for (name, v) in names.iter().zip(rec.iter()) {
            if v.is_empty() {
                continue;
            }
            let value = match name.as_str() {
                "amount" => v
                    .parse::<f64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| v.into()),
                "item_count" => v
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| v.into()),
                "is_trial" => serde_json::Value::Bool(v == "true"),
                _ => v.into(),
            };
            obj.insert(name.clone(), value);
        }
        serde_json::to_writer(&mut out, &obj).expect("writing into a Vec cannot fail");
        out.push(b'\n');
    }
    out
}

/// The generated events as Parquet (default writer properties: one row group for a
/// bench-sized input), typed as [`ndjson_bytes`] types them; empty fields are nulls.
pub fn parquet_bytes(rows: u64) -> Vec<u8> {
    use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    let csv = csv_bytes(rows);
    let mut rdr = csv::Reader::from_reader(&csv[..]);
    let names: Vec<String> = rdr
        .headers()
        .expect("generated CSV has a header")
        .iter()
        .map(str::to_string)
        .collect();
    let ty = |name: &str| match name {
        "amount" => DataType::Float64,
        "item_count" => DataType::Int64,
        "is_trial" => DataType::Boolean,
        _ => DataType::Utf8,
    };
    let mut strings: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
    let (mut amount, mut count, mut trial) = (
        Float64Builder::new(),
        Int64Builder::new(),
        BooleanBuilder::new(),
    );
    for rec in rdr.records() {
        let rec = rec.expect("generated CSV is valid");
        for (i, (name, v)) in names.iter().zip(rec.iter()).enumerate() {
            let v = (!v.is_empty()).then_some(v);
            match name.as_str() {
                "amount" => amount.append_option(v.and_then(|v| v.parse().ok())),
                "item_count" => count.append_option(v.and_then(|v| v.parse().ok())),
                "is_trial" => trial.append_option(v.map(|v| v == "true")),
                _ => strings[i].append_option(v),
            }
        }
    }
    let columns: Vec<ArrayRef> = names
        .iter()
        .enumerate()
        .map(|(i, name)| -> ArrayRef {
            match name.as_str() {
                "amount" => Arc::new(amount.finish()),
                "item_count" => Arc::new(count.finish()),
                "is_trial" => Arc::new(trial.finish()),
                _ => Arc::new(strings[i].finish()),
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, ty(n), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema");
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)
        .expect("an in-memory Parquet writer opens");
    w.write(&batch).expect("writing into a Vec cannot fail");
    w.close().expect("writing into a Vec cannot fail");
    out
}
