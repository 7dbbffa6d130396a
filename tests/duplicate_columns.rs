//! A CSV header that holds a column name twice: refused before anything is read or sent
//! when the mapping uses that name (by name or through `"rest"`), harmless otherwise.

use std::path::Path;
use std::process::Output;

mod common;

const REST: &str =
    "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\nproperties = \"rest\"\n";

/// Runs `cdp-backfill run dup.csv --dry-run` in `dir`, writing only inside `dir`.
fn dry_run(dir: &Path, header_and_rows: &str, mapping: &str) -> Output {
    std::fs::write(dir.join("dup.csv"), header_and_rows).expect("write the input");
    run_input(dir, "dup.csv", mapping)
}

/// Runs `cdp-backfill run INPUT --dry-run` in `dir` with `mapping` as m.toml.
fn run_input(dir: &Path, input: &str, mapping: &str) -> Output {
    std::fs::write(dir.join("m.toml"), mapping).expect("write the mapping");
    common::bin()
        .current_dir(dir)
        .args([
            "run",
            input,
            "--mapping",
            "m.toml",
            "--dry-run",
            "--output",
            "out.ndjson",
            "--rejects",
            "rej.ndjson",
            "--checkpoint",
            "cp.json",
            "-q",
        ])
        .output()
        .expect("run the binary")
}

fn assert_nothing_written(dir: &Path) {
    for f in ["out.ndjson", "rej.ndjson", "cp.json"] {
        assert!(!dir.join(f).exists(), "{f} was written");
    }
}

#[test]
fn rest_over_a_duplicated_header_name_stops_with_exit_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dry_run(dir.path(), "uid,ev,a,a\nu1,E,first,second\n", REST);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("dup.csv has 2 columns named \"a\""), "{err}");
    assert!(err.contains("(columns 3 and 4 of its header)"), "{err}");
    assert!(err.contains("properties = \"rest\""), "{err}");
    assert!(
        err.contains("Rename one of them in the header of dup.csv"),
        "{err}"
    );
    assert_nothing_written(dir.path());
}

#[test]
fn a_mapped_id_column_named_twice_in_the_header_stops_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dry_run(dir.path(), "uid,ev,uid,b\nu1,E,u2,x\n", REST);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("user_id names column \"uid\""), "{err}");
    assert!(err.contains("dup.csv has 2 columns named \"uid\""), "{err}");
    assert!(err.contains("(columns 1 and 3 of its header)"), "{err}");
    assert_nothing_written(dir.path());
}

#[test]
fn a_duplicated_header_name_the_mapping_never_uses_is_sent_as_usual() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mapping =
        "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\nproperties = [\"b\"]\n";
    let out = dry_run(dir.path(), "uid,ev,x,b,x\nu1,E,1,bee,2\n", mapping);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let sent = std::fs::read_to_string(dir.path().join("out.ndjson")).expect("dry-run output");
    assert!(sent.contains("\"properties\":{\"b\":\"bee\"}"), "{sent}");
}

#[test]
fn a_parquet_schema_with_a_duplicated_name_is_refused_the_same_way() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;
    let col = |v: &str| -> ArrayRef { Arc::new(StringArray::from_iter_values([v])) };
    // Arrow and Parquet schemas do not require unique field names.
    let batch = RecordBatch::try_from_iter([
        ("uid", col("u1")),
        ("ev", col("E")),
        ("a", col("first")),
        ("a", col("second")),
    ])
    .expect("a batch with a repeated field name");
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None)
        .expect("parquet writer");
    w.write(&batch).expect("write the batch");
    w.close().expect("close the parquet file");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("dup.parquet"), bytes).expect("write the input");
    let out = run_input(dir.path(), "dup.parquet", REST);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(
        err.contains("dup.parquet has 2 columns named \"a\" (columns 3 and 4"),
        "{err}"
    );
    assert_nothing_written(dir.path());
}
