//! Parquet bytes → ParquetSource → map_chunk with a `rest` mapping, so every column is
//! decoded. The reader needs a seekable file, so the bytes go to a temp file first.
//!
//! Random bytes rarely get past the footer, so the first byte picks a mode: raw bytes
//! as the file, or a valid file (several column types, rows derived from the input)
//! with the rest of the input as (position, xor) patches and an optional truncation.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow_array::types::Int32Type;
use cdp_backfill::source::parquet::ParquetSource;
use cdp_backfill::source::{Format, InputInfo, Opened};
use cdp_backfill_fuzz::{map_all, spec, PARQUET_MAPPING};
use libfuzzer_sys::fuzz_target;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("cdp-fuzz-{}.parquet", std::process::id())))
}

/// A small valid file whose values come from `seed`.
fn valid(seed: &[u8], rows: usize, dict: bool) -> Vec<u8> {
    let b = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
    let ints: Int64Array = (0..rows)
        .map(|i| (b(i) % 5 != 0).then(|| (b(i) as i64) << (b(i + 1) % 60)))
        .collect();
    let floats: Float64Array = (0..rows)
        .map(|i| match b(i) % 4 {
            0 => Some(f64::NAN),
            1 => Some(f64::INFINITY),
            2 => None,
            _ => Some(b(i) as f64 / 3.0),
        })
        .collect();
    let strs: StringArray = (0..rows)
        .map(|i| (b(i) % 3 != 0).then(|| String::from_utf8_lossy(&seed[..i.min(seed.len())]).into_owned()))
        .collect();
    let bools: BooleanArray = (0..rows).map(|i| (b(i) % 3 != 0).then_some(b(i) % 2 == 0)).collect();
    let bin: BinaryArray = (0..rows).map(|i| Some(&seed[..(i * 3).min(seed.len())])).collect();
    let ts = TimestampMillisecondArray::from_iter((0..rows).map(|i| Some((b(i) as i64) * 86_400_000_000)));
    let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(
        (0..rows).map(|i| (b(i) % 4 != 0).then(|| (0..b(i) % 5).map(|k| Some(k as i32)).collect::<Vec<_>>())),
    );
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("i", Arc::new(ints)),
        ("f", Arc::new(floats)),
        ("s", Arc::new(strs)),
        ("b", Arc::new(bools)),
        ("bin", Arc::new(bin)),
        ("ts", Arc::new(ts)),
        ("l", Arc::new(lists)),
    ];
    let batch = RecordBatch::try_from_iter(cols).expect("the columns have equal lengths");
    let props = WriterProperties::builder()
        .set_dictionary_enabled(dict)
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let (seed, patches) = rest.split_at(rest.len().min(16));
        let mut f = valid(seed, 1 + (mode as usize >> 2) % 9, mode & 2 == 0);
        let n = f.len();
        for p in patches.chunks_exact(3) {
            // Bias toward the footer, where the metadata (sizes, offsets) lives.
            let back = u16::from_le_bytes([p[0], p[1]]) as usize % n;
            f[n - 1 - back] ^= p[2];
        }
        if patches.len() % 3 == 1 {
            f.truncate(n - (patches[patches.len() - 1] as usize % n));
        }
        f
    };
    let p = path();
    if std::fs::write(p, &bytes).is_err() {
        return;
    }
    let info = Arc::new(InputInfo::new(0, p.clone(), Format::Parquet));
    let Ok(src) = ParquetSource::open(info.clone(), 0) else {
        return;
    };
    let mut opened = Opened::Parquet(src);
    map_all(&mut opened, &info, &spec(PARQUET_MAPPING));
});
