//! Writes `fixtures/nested.parquet`: four events with nested data, for the tests of
//! nested paths into Parquet (struct fields, map keys, list indices).
//!
//! Usage: `cargo run --example nested_parquet -- fixtures/nested.parquet`.
//!
//! Columns: `user` (struct of `id`, `email` and a 17-digit integer `crm_id`; no id in
//! row 4), `address` (struct of `city` and `zip`), `attrs` (map of string to string; row
//! 2 lacks the `plan` key), `tags` (list of strings), `event`, `amount` (float), `account`
//! (17-digit integers) and `ts` (timestamp, ms, UTC).

use std::fs::File;
use std::process::ExitCode;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, MapBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field};
use parquet::arrow::ArrowWriter;

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: nested_parquet OUT.parquet");
        return ExitCode::from(2);
    };
    let strings = |v: &[Option<&str>]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let user = StructArray::from(vec![
        (
            Arc::new(Field::new("id", DataType::Utf8, true)),
            strings(&[Some("u-1"), Some("u-2"), Some("u-3"), None]),
        ),
        (
            Arc::new(Field::new("email", DataType::Utf8, true)),
            strings(&[Some("a@example.com"), Some("b@example.com"), None, None]),
        ),
        (
            Arc::new(Field::new("crm_id", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![
                Some(90_071_992_547_409_930),
                Some(7),
                None,
                Some(12_345_678_901_234_567),
            ])) as ArrayRef,
        ),
    ]);
    let address = StructArray::from(vec![
        (
            Arc::new(Field::new("city", DataType::Utf8, true)),
            strings(&[Some("Zürich"), Some("Kraków"), Some("Lyon"), Some("Oslo")]),
        ),
        (
            Arc::new(Field::new("zip", DataType::Utf8, true)),
            strings(&[Some("8001"), Some("30-001"), None, Some("0150")]),
        ),
    ]);
    let mut attrs = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for row in [
        &[("plan", "pro"), ("source", "ads")][..],
        &[("source", "organic")],
        &[("plan", "team")],
        &[("plan", "free")],
    ] {
        for (k, v) in row {
            attrs.keys().append_value(k);
            attrs.values().append_value(v);
        }
        attrs.append(true).expect("a map row");
    }
    let mut tags = ListBuilder::new(StringBuilder::new());
    for row in [&["vip", "beta"][..], &["beta"], &[], &["new"]] {
        for t in row {
            tags.values().append_value(t);
        }
        tags.append(true);
    }
    let batch = RecordBatch::try_from_iter(vec![
        ("user", Arc::new(user) as ArrayRef),
        ("address", Arc::new(address)),
        ("attrs", Arc::new(attrs.finish())),
        ("tags", Arc::new(tags.finish())),
        (
            "event",
            strings(&[Some("Paid"), Some("Paid"), Some("Refunded"), Some("Paid")]),
        ),
        (
            "amount",
            Arc::new(Float64Array::from(vec![12.5, 99.0, -12.5, 7.25])),
        ),
        // 17-digit account numbers: above 2^53, so never a JSON number.
        (
            "account",
            Arc::new(Int64Array::from(vec![
                12_345_678_901_234_567,
                12_345_678_901_234_568,
                98_765_432_109_876_543,
                10_000_000_000_000_001,
            ])),
        ),
        (
            "ts",
            Arc::new(
                TimestampMillisecondArray::from(vec![
                    1_709_634_030_000,
                    1_709_720_430_000,
                    1_709_806_830_000,
                    1_709_893_230_000,
                ])
                .with_timezone("UTC"),
            ),
        ),
    ])
    .expect("a valid batch");
    let file = match File::create(&out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot create {out}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("a writer");
    w.write(&batch).expect("the batch is written");
    w.close().expect("the file is closed");
    ExitCode::SUCCESS
}
