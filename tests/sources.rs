//! Inputs: CSV, NDJSON and Parquet, compressed streams, directories, globs and stdin,
//! bad input, and resuming at a position (`source::open_at`) for every format.
//!
//! The end-to-end tests drive the real binary with `--dry-run --output FILE` (one request
//! body per line); the resume tests use the library's source API directly.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;

use cdp_backfill::source::{self, Format, InputInfo, Position, SourceOptions};

use common::fixture;

mod common;

struct Run {
    out: Output,
    /// Every call sent, in order, with its messageId removed (it depends on the path).
    calls: Vec<serde_json::Value>,
    rejects: Vec<serde_json::Value>,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// `cdp-backfill run INPUTS --mapping MAPPING --dry-run --output ... EXTRA`.
fn run(dir: &Path, inputs: &[&str], mapping: &Path, extra: &[&str], stdin: Option<&[u8]>) -> Run {
    let output = dir.join("bodies.ndjson");
    let rejects = dir.join("rejects.ndjson");
    let _ = std::fs::remove_file(&output);
    let mut cmd = common::bin();
    cmd.arg("run")
        .args(inputs)
        .arg("--mapping")
        .arg(mapping)
        .arg("--dry-run")
        .arg("--output")
        .arg(&output)
        .arg("--rejects")
        .arg(&rejects)
        .arg("--quiet")
        .args(extra)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let mut calls = Vec::new();
    for line in std::fs::read_to_string(&output).unwrap_or_default().lines() {
        let body: serde_json::Value = serde_json::from_str(line).unwrap();
        for mut c in body["batch"].as_array().unwrap().iter().cloned() {
            c.as_object_mut().unwrap().remove("messageId");
            calls.push(c);
        }
    }
    let rejects = std::fs::read_to_string(&rejects)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run {
        out,
        calls,
        rejects,
    }
}

fn typed_run(dir: &Path, input: &Path) -> Run {
    run(
        dir,
        &[input.to_str().unwrap()],
        &fixture("typed.toml"),
        &[],
        None,
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn the_same_rows_as_csv_ndjson_and_parquet_give_identical_calls() {
    let dir = tempfile::tempdir().unwrap();
    let csv = typed_run(dir.path(), &fixture("typed.csv"));
    let ndjson = typed_run(dir.path(), &fixture("typed.ndjson"));
    let parquet = typed_run(dir.path(), &fixture("typed.parquet"));
    // 40 rows, row 13 (0-based) has no id at all: 39 calls and one reject, exit 3.
    for r in [&csv, &ndjson, &parquet] {
        assert_eq!(r.code(), 3, "{}", r.stderr());
        assert_eq!(r.calls.len(), 39);
        assert_eq!(r.rejects.len(), 1);
        assert_eq!(r.rejects[0]["row"], 14);
        assert_eq!(r.rejects[0]["reason"], "missing_id");
    }
    assert_eq!(csv.calls, ndjson.calls);
    assert_eq!(csv.calls, parquet.calls);
    // Types survive: numbers, booleans, nested values, UTC timestamps.
    let first = &parquet.calls[0];
    assert_eq!(first["timestamp"], "2023-01-01T00:00:00.052Z");
    assert_eq!(first["properties"]["amount"], 1969.37);
    assert_eq!(first["properties"]["item_count"], 22);
    assert_eq!(first["properties"]["is_trial"], false);
    assert_eq!(first["properties"]["tags"], serde_json::json!([]));
    assert_eq!(first["properties"]["address"]["zip"], "94128");
    // A row whose anonymous id is null (NDJSON) or empty (CSV) has no anonymousId.
    assert!(parquet.calls[1].get("anonymousId").is_none());
    // Rejects say where the row is: CSV and NDJSON by line and byte offset.
    assert_eq!(ndjson.rejects[0]["line"], 14);
    assert_eq!(csv.rejects[0]["line"], 15);
    assert!(ndjson.rejects[0]["offset"].as_u64().unwrap() > 0);
    assert_eq!(parquet.rejects[0]["record"]["event"], "Signed Up");
}

#[test]
fn gzip_and_zstd_inputs_read_like_plain_ones_by_name_or_by_magic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let plain = typed_run(dir.path(), &fixture("typed.csv"));
    let csv = std::fs::read(fixture("typed.csv")).unwrap();
    let ndjson = std::fs::read(fixture("typed.ndjson")).unwrap();
    std::fs::write(dir.path().join("a.csv.gz"), gzip(&csv)).unwrap();
    std::fs::write(
        dir.path().join("a.ndjson.zst"),
        zstd::encode_all(&ndjson[..], 3).unwrap(),
    )
    .unwrap();
    // Named .csv but gzip inside: the magic bytes decide.
    std::fs::write(dir.path().join("b.csv"), gzip(&csv)).unwrap();
    for name in ["a.csv.gz", "a.ndjson.zst", "b.csv"] {
        let r = typed_run(dir.path(), &dir.path().join(name));
        assert_eq!(r.code(), 3, "{name}: {}", r.stderr());
        assert_eq!(r.calls, plain.calls, "{name}");
    }
}

#[test]
fn directories_and_globs_read_every_part_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("export");
    std::fs::create_dir_all(parts.join("sub")).unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&std::fs::read(fixture("typed.ndjson")).unwrap())
        .unwrap()
        .lines()
        .map(|l| Box::leak(l.to_string().into_boxed_str()) as &str)
        .collect();
    let part = |ls: &[&str]| format!("{}\n", ls.join("\n")).into_bytes();
    std::fs::write(parts.join("part-0000.ndjson"), part(&lines[..10])).unwrap();
    std::fs::write(
        parts.join("part-0001.ndjson.gz"),
        gzip(&part(&lines[10..25])),
    )
    .unwrap();
    std::fs::write(
        parts.join("sub").join("part-0002.jsonl"),
        part(&lines[25..]),
    )
    .unwrap();
    // Markers exporters leave beside the data are skipped.
    std::fs::write(parts.join("_SUCCESS"), b"").unwrap();
    std::fs::write(parts.join(".part-0000.ndjson.crc"), b"xx").unwrap();
    let whole = typed_run(dir.path(), &fixture("typed.ndjson"));
    let by_dir = typed_run(dir.path(), &parts);
    assert_eq!(by_dir.code(), 3, "{}", by_dir.stderr());
    assert_eq!(by_dir.calls, whole.calls);
    let by_glob = run(
        dir.path(),
        &["export/part-*", "export/sub/*.jsonl"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_eq!(by_glob.code(), 3, "{}", by_glob.stderr());
    assert_eq!(by_glob.calls, whole.calls);
    // A file named twice (the directory, a glob over it, another spelling of one part) is
    // read once: it used to be sent once per naming, under different messageIds.
    let overlapping = run(
        dir.path(),
        &["export", "export/part-*", "./export/part-0000.ndjson"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_eq!(overlapping.code(), 3, "{}", overlapping.stderr());
    assert_eq!(overlapping.calls, whole.calls);
    assert!(
        overlapping
            .stderr()
            .contains("note: ./export/part-0000.ndjson is the same file as export/part-0000.ndjson; it is read once"),
        "{}",
        overlapping.stderr()
    );

    let none = run(
        dir.path(),
        &["export/*.parquet"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_eq!(none.code(), 1);
    assert!(
        none.stderr().contains("matches no files"),
        "{}",
        none.stderr()
    );
}

#[test]
fn standard_input_reads_csv_or_ndjson_given_a_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = typed_run(dir.path(), &fixture("typed.ndjson"));
    let ndjson = std::fs::read(fixture("typed.ndjson")).unwrap();
    let r = run(
        dir.path(),
        &["-"],
        &fixture("typed.toml"),
        &["--format", "ndjson"],
        Some(&ndjson),
    );
    assert_eq!(r.code(), 3, "{}", r.stderr());
    assert_eq!(r.calls, file.calls);
    assert_eq!(r.rejects[0]["source"], "<stdin>");

    let csv = std::fs::read(fixture("typed.csv")).unwrap();
    let r = run(
        dir.path(),
        &["-"],
        &fixture("typed.toml"),
        &["--format", "csv"],
        Some(&gzip(&csv)),
    );
    assert_eq!(r.code(), 3, "{}", r.stderr());
    assert_eq!(r.calls, file.calls);

    let r = run(dir.path(), &["-"], &fixture("typed.toml"), &[], Some(b""));
    assert_ne!(r.code(), 0);
    assert!(r.stderr().contains("--format"), "{}", r.stderr());
}

#[test]
fn bad_ndjson_lines_are_rejected_with_line_and_offset_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        r#"{"user_id":"u1","event":"E","timestamp":"2023-01-01T00:00:00Z","user":{"plan":"pro"}}"#;
    let mut text = Vec::new();
    text.extend_from_slice(good.as_bytes());
    text.extend_from_slice(b"\n{\"user_id\":\"u2\",\"event\":\n");
    text.extend_from_slice(
        b"{\"user_id\":\"u\xff3\",\"event\":\"E\",\"timestamp\":\"2023-01-01T00:00:00Z\"}\n",
    );
    text.extend_from_slice(good.as_bytes());
    text.push(b'\n');
    std::fs::write(dir.path().join("in.ndjson"), &text).unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\nproperties = { plan = \"/user/plan\" }\n",
    )
    .unwrap();
    let r = run(
        dir.path(),
        &["in.ndjson"],
        &dir.path().join("m.toml"),
        &[],
        None,
    );
    assert_eq!(r.code(), 3, "{}", r.stderr());
    assert_eq!(r.calls.len(), 2);
    assert_eq!(r.calls[1]["properties"]["plan"], "pro");
    assert_eq!(r.rejects.len(), 2);
    let first_len = good.len() as u64 + 1;
    assert_eq!(r.rejects[0]["line"], 2);
    assert_eq!(r.rejects[0]["offset"], first_len);
    assert!(r.rejects[0]["detail"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert_eq!(r.rejects[1]["line"], 3);
    assert!(r.rejects[1]["detail"].as_str().unwrap().contains("UTF-8"));
}

#[test]
fn damaged_inputs_stop_with_an_error_naming_the_file_after_the_rows_before_it() {
    let dir = tempfile::tempdir().unwrap();
    // A gzip stream cut in half: the rows before the cut are delivered, then exit 1.
    let mut big = Vec::new();
    let csv = std::fs::read(fixture("typed.csv")).unwrap();
    let header_end = csv.iter().position(|&b| b == b'\n').unwrap() + 1;
    big.extend_from_slice(&csv);
    for _ in 0..200 {
        big.extend_from_slice(&csv[header_end..]);
    }
    let gz = gzip(&big);
    std::fs::write(dir.path().join("cut.csv.gz"), &gz[..gz.len() / 2]).unwrap();
    let r = run(
        dir.path(),
        &["cut.csv.gz"],
        &fixture("typed.toml"),
        &["--chunk-rows", "64"],
        None,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(r.stderr().contains("cut.csv.gz"), "{}", r.stderr());
    // The rows before the cut are still mapped and sent before the run stops.
    assert!(
        r.calls.len() > 1000,
        "{} calls sent before the damage",
        r.calls.len()
    );
    // The source hands on every row before the cut, then the error.
    let (rows, err) = rows_until_error(&dir.path().join("cut.csv.gz"));
    assert!(rows > 1000, "{rows} rows before the damage");
    assert!(err.contains("cut.csv.gz"), "{err}");

    // A Parquet file without its footer.
    let pq = std::fs::read(fixture("typed.parquet")).unwrap();
    std::fs::write(dir.path().join("cut.parquet"), &pq[..pq.len() - 100]).unwrap();
    let r = run(
        dir.path(),
        &["cut.parquet"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_ne!(r.code(), 0);
    assert!(
        r.stderr().contains("cut.parquet") && r.stderr().contains("Parquet"),
        "{}",
        r.stderr()
    );

    // A Parquet file whose last row group's pages are overwritten: the rows of the
    // groups before it are delivered, and the error names the row group.
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(fixture("typed.parquet")).unwrap(),
    )
    .unwrap()
    .metadata()
    .clone();
    assert_eq!(meta.num_row_groups(), 3);
    let mut bad = pq.clone();
    for col in meta.row_group(2).columns() {
        let (start, len) = col.byte_range();
        for b in &mut bad[start as usize..(start + len) as usize] {
            *b = 0xAA;
        }
    }
    std::fs::write(dir.path().join("bad.parquet"), &bad).unwrap();
    let r = run(
        dir.path(),
        &["bad.parquet"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(
        r.stderr().contains("bad.parquet") && r.stderr().contains("row group 2"),
        "{}",
        r.stderr()
    );
    let (rows, err) = rows_until_error(&dir.path().join("bad.parquet"));
    assert_eq!(rows, 32, "the rows of groups 0 and 1");
    assert!(err.contains("row group 2 (rows 33 to 40)"), "{err}");
}

/// Reads an input through the source API until it fails: rows read, and the error.
fn rows_until_error(path: &Path) -> (usize, String) {
    let opts = SourceOptions::default();
    let info = source::discover(&[path.to_path_buf()], &opts).unwrap()[0].clone();
    let mut opened = source::open(&info, &opts).unwrap();
    let mut chunk = opened.new_chunk(&info);
    let mut rows = 0;
    loop {
        match opened.fill(&mut chunk, 64) {
            Ok(()) if chunk.is_empty() => panic!("{} read to the end", path.display()),
            Ok(()) => rows += chunk.len(),
            Err(e) => return (rows, e.to_string()),
        }
    }
}

#[test]
fn empty_and_header_only_inputs_say_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.csv"), b"").unwrap();
    std::fs::write(
        dir.path().join("header.csv"),
        b"user_id,anonymous_id,event,timestamp,plan,amount,item_count,is_trial,city,tags,address\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.ndjson"), b"").unwrap();
    let r = run(
        dir.path(),
        &["empty.csv"],
        &fixture("typed.toml"),
        &[],
        None,
    );
    assert_ne!(r.code(), 0);
    assert!(r.stderr().contains("empty.csv is empty"), "{}", r.stderr());
    let r = typed_run(dir.path(), &dir.path().join("header.csv"));
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert!(r.stderr().contains("no data rows"), "{}", r.stderr());
    let r = typed_run(dir.path(), &dir.path().join("empty.ndjson"));
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert!(r.stderr().contains("no rows"), "{}", r.stderr());
}

/// Every row of an input: (row number, position offset, line, record JSON).
type RowInfo = (u64, u64, u64, String);

fn read_rows(info: &Arc<InputInfo>, opened: &mut source::Opened) -> Vec<RowInfo> {
    let mut chunk = opened.new_chunk(info);
    let mut rows = Vec::new();
    loop {
        opened.fill(&mut chunk, 7).unwrap();
        if chunk.is_empty() {
            return rows;
        }
        for i in 0..chunk.len() {
            let mut rec = Vec::new();
            let line = chunk.with_row(i, |r| {
                r.write_record_json(&mut rec);
                r.line()
            });
            rows.push((
                chunk.first_row() + i as u64,
                chunk.row_offset(i),
                line,
                String::from_utf8(rec).unwrap(),
            ));
        }
    }
}

fn check_resume(path: &Path, format: Format) {
    let opts = SourceOptions {
        format: Some(format),
        ..SourceOptions::default()
    };
    let info = source::discover(&[path.to_path_buf()], &opts).unwrap()[0].clone();
    let full = read_rows(&info, &mut source::open(&info, &opts).unwrap());
    assert_eq!(full.len(), 40, "{}", path.display());
    for k in [1usize, 6, 7, 15, 16, 17, 33, 39] {
        let pos = Position {
            input: 0,
            row: full[k].0,
            offset: full[k].1,
        };
        let mut opened = source::open_at(&info, &opts, pos).unwrap();
        let rest = read_rows(&info, &mut opened);
        assert_eq!(
            rest.len(),
            full.len() - k,
            "{} resumed at row {k}",
            path.display()
        );
        for (r, f) in rest.iter().zip(&full[k..]) {
            // Row, byte offset and record are exact; a seek leaves line numbers unknown
            // (0) rather than paying a scan of everything before the offset.
            assert_eq!(
                (r.0, r.1, &r.3),
                (f.0, f.1, &f.3),
                "{} resumed at row {k}",
                path.display()
            );
            assert!(
                r.2 == f.2 || r.2 == source::LINE_UNKNOWN,
                "{} line {} vs {}",
                path.display(),
                r.2,
                f.2
            );
        }
    }
}

#[test]
fn open_at_resumes_every_format_exactly_at_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::fs::read(fixture("typed.csv")).unwrap();
    let ndjson = std::fs::read(fixture("typed.ndjson")).unwrap();
    std::fs::write(dir.path().join("t.csv.gz"), gzip(&csv)).unwrap();
    std::fs::write(
        dir.path().join("t.ndjson.zst"),
        zstd::encode_all(&ndjson[..], 3).unwrap(),
    )
    .unwrap();
    check_resume(&fixture("typed.csv"), Format::Csv);
    check_resume(&fixture("typed.ndjson"), Format::Ndjson);
    // 16-row row groups: resuming at rows 15, 16, 17 and 33 crosses group boundaries.
    check_resume(&fixture("typed.parquet"), Format::Parquet);
    check_resume(&dir.path().join("t.csv.gz"), Format::Csv);
    check_resume(&dir.path().join("t.ndjson.zst"), Format::Ndjson);
}

#[test]
fn open_at_a_row_past_the_end_says_the_input_changed() {
    let opts = SourceOptions::default();
    for name in ["typed.csv", "typed.parquet"] {
        let info = source::discover(&[fixture(name)], &opts).unwrap()[0].clone();
        let pos = Position {
            input: 0,
            row: 1000,
            offset: 1 << 30,
        };
        let err = source::open_at(&info, &opts, pos)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("changed since the checkpoint"), "{err}");
    }
}

#[test]
fn ndjson_rest_keeps_keys_that_first_appear_after_the_sampled_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..source::ndjson::SAMPLE_ROWS + 5 {
        text.push_str(&format!(
            "{{\"user_id\":\"u{i}\",\"event\":\"E\",\"n\":{i}}}\n"
        ));
    }
    text.push_str("{\"user_id\":\"u\",\"event\":\"E\",\"n\":1,\"late\":{\"deep\":[1,2.5,null]},\"flag\":true}\n");
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\nproperties = \"rest\"\n",
    )
    .unwrap();
    let r = run(
        dir.path(),
        &["in.jsonl"],
        &dir.path().join("m.toml"),
        &[],
        None,
    );
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(r.calls.len(), source::ndjson::SAMPLE_ROWS + 6);
    assert_eq!(r.calls[0]["properties"], serde_json::json!({"n": 0}));
    assert_eq!(
        r.calls.last().unwrap()["properties"],
        serde_json::json!({"n": 1, "late": {"deep": [1, 2.5, null]}, "flag": true})
    );
}

/// With three or more mapper threads the reader only scans CSV blocks for whole records
/// and the mappers parse them; with fewer it parses them itself. Both must deliver the
/// same bytes: calls, messageIds, reject lines with their rows, lines and offsets.
#[test]
fn csv_parsed_by_the_mappers_or_by_the_reader_gives_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("user_id,event,timestamp,note\r\n");
    for i in 0..5000 {
        let note = match i % 7 {
            0 => format!("\"line one\nline \"\"{i}\"\" two\""),
            1 => "plain, or not".replace(',', ";"),
            2 => format!("\"crlf\r\ninside {i}\""),
            3 => "\"\"".to_string(),
            _ => format!("n{i}"),
        };
        text.push_str(&format!(
            "u{i},Signed Up,2024-01-0{}T10:00:00Z,{note}\r\n",
            i % 9 + 1
        ));
        if i % 997 == 0 {
            text.push_str("\r\n\n");
        }
        if i == 2500 {
            // A quote inside an unquoted field: csv-core's rules, parsed by the reader.
            text.push_str("u-odd,Signed Up,2024-01-01T10:00:00Z,a\"b\n");
            // A row with too few fields: a reject with its line and offset.
            text.push_str("u-short,Signed Up\n");
        }
    }
    std::fs::write(dir.path().join("in.csv"), &text).unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\nproperties = \"rest\"\n",
    )
    .unwrap();
    let outputs: Vec<(Vec<u8>, Vec<u8>)> = ["1", "4"]
        .iter()
        .map(|threads| {
            let out = common::bin()
                .args(["run", "in.csv", "--mapping", "m.toml", "--dry-run"])
                .args(["--output", "bodies.ndjson", "--rejects", "rejects.ndjson"])
                .args(["--chunk-rows", "100", "--no-checkpoint", "--quiet"])
                .env("RAYON_NUM_THREADS", threads)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(3),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                std::fs::read(dir.path().join("bodies.ndjson")).unwrap(),
                std::fs::read(dir.path().join("rejects.ndjson")).unwrap(),
            )
        })
        .collect();
    let calls = String::from_utf8_lossy(&outputs[0].0)
        .matches("\"type\":\"track\"")
        .count();
    assert_eq!(calls, 5001);
    assert!(outputs[0].1.windows(7).any(|w| w == b"u-short"));
    assert!(
        outputs[0] == outputs[1],
        "the two runs' bodies or rejects differ"
    );
}
