//! Hostile input: messy exports must never crash, hang or exhaust memory (issue 9).
//!
//! Each case generates its input at test time into its own temp dir (large ones are
//! streamed to disk, never held in the test's memory), runs the real binary with a
//! deadline while sampling its peak RSS (`VmHWM` in `/proc/<pid>/status`), and asserts:
//! the exact exit code and message or reject reason; no "panicked" on stderr; the run
//! ended before its deadline; peak RSS under a stated bound; every body written by
//! `--dry-run --output` and every rejects line is valid JSON.
//!
//! Sizes (chosen to keep the suite well under a minute on 2 cores while the property
//! still holds): a 100 MB CSV field (the default 16 MiB `--max-record-bytes`, so it is
//! over the 64 MiB hard stop); a 3 MB field under a 1 MiB limit (a reject, the run goes
//! on); a gzip bomb of about 2 MB that expands to 2 GiB.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Workdir;

mod common;

/// Peak RSS allowed for any run here, with the default 16 MiB record limit: one record
/// held up to the 64 MiB hard stop (the csv crate may double its buffer to 128 MiB),
/// plus the chunks in flight. Measured peaks are far lower (see the issue 9 notes).
const RSS_BOUND_KB: u64 = 400 * 1024;
const DEADLINE: Duration = Duration::from_secs(40);

/// What a bounded run of the binary showed.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    peak_rss_kb: u64,
    elapsed: Duration,
    dir: PathBuf,
}

impl Outcome {
    fn rejects(&self) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join("rejects.ndjson"))
    }
    fn bodies(&self) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join("bodies.ndjson"))
    }
    fn calls(&self) -> Vec<serde_json::Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b["batch"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(p).unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{} holds a line that is not JSON ({e}): {}",
                    p.display(),
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                )
            })
        })
        .collect()
}

/// Runs `cdp-backfill run <args> --dry-run --output bodies.ndjson --rejects rejects.ndjson`
/// in `dir`, killing it at the deadline, and checks the properties every case shares.
fn run(dir: &Path, args: &[&str]) -> Outcome {
    let mut cmd = common::bin();
    cmd.current_dir(dir)
        .arg("run")
        .args(args)
        .args([
            "--dry-run",
            "--output",
            "bodies.ndjson",
            "--rejects",
            "rejects.ndjson",
        ])
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout.txt")).unwrap())
        .stderr(File::create(dir.join("stderr.txt")).unwrap());
    let m = common::run_measured(&mut cmd, DEADLINE);
    let (status, peak) = (m.status, m.peak_rss_kib);
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        peak < RSS_BOUND_KB,
        "{args:?}: peak RSS {peak} kB is over the bound of {RSS_BOUND_KB} kB"
    );
    let o = Outcome {
        code: status.code(),
        stderr,
        peak_rss_kb: peak,
        elapsed: m.elapsed,
        dir: dir.to_path_buf(),
    };
    // Whatever happened, what was written is well-formed.
    o.bodies();
    o.rejects();
    eprintln!(
        "{args:?}: exit {:?} in {:.2?}, peak RSS {} kB",
        o.code, o.elapsed, o.peak_rss_kb
    );
    o
}

const CSV_MAPPING: &str = r#"
[columns]
amount = "float"
[[call]]
type = "track"
user_id = "user_id"
event = "event"
timestamp = "ts"
properties = "rest"
"#;

const NDJSON_MAPPING: &str = r#"
[[call]]
type = "track"
user_id = "user_id"
event = "event"
properties = "rest"
"#;

/// A test's own directory holding both mappings and `files`.
fn workdir(files: &[(&str, &[u8])]) -> Workdir {
    let w = Workdir::new();
    w.write("csv.toml", CSV_MAPPING);
    w.write("ndjson.toml", NDJSON_MAPPING);
    for (name, bytes) in files {
        w.write(name, bytes);
    }
    w
}

const ROW: &str = "u1,Signed Up,2024-01-02T03:04:05Z,1.5\n";
const HEADER: &str = "user_id,event,ts,amount\n";

fn reasons(o: &Outcome) -> Vec<String> {
    o.rejects()
        .iter()
        .map(|r| format!("{}@{}", r["reason"].as_str().unwrap(), r["row"]))
        .collect()
}

#[test]
fn a_100_mb_csv_field_stops_the_run_with_a_clear_error_and_bounded_memory() {
    let dir = workdir(&[]);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.path("big.csv")).unwrap());
    w.write_all(HEADER.as_bytes()).unwrap();
    w.write_all(ROW.as_bytes()).unwrap();
    w.write_all(b"u2,\"").unwrap();
    let block = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        w.write_all(&block).unwrap();
    }
    w.write_all(b"\",2024-01-02T03:04:05Z,1\n").unwrap();
    w.write_all(ROW.as_bytes()).unwrap();
    drop(w);
    let o = run(dir.dir(), &["big.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("big.csv")
            && o.stderr
                .contains("the record starting at byte 62 is longer than 67108864 bytes")
            && o.stderr.contains("--max-record-bytes"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_csv_record_over_max_record_bytes_is_rejected_and_the_run_goes_on() {
    let mut text = format!("{HEADER}{ROW}u2,\"");
    text.push_str(&"y".repeat(3 << 20));
    text.push_str(&format!("\",2024-01-02T03:04:05Z,1\n{ROW}"));
    let dir = workdir(&[("long.csv", text.as_bytes())]);
    let o = run(
        dir.dir(),
        &[
            "long.csv",
            "--mapping",
            "csv.toml",
            "--max-record-bytes",
            "1048576",
        ],
    );
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.calls().len(), 2);
    let rej = o.rejects();
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0]["row"], 2);
    assert_eq!(rej[0]["reason"], "record_too_large");
    assert_eq!(rej[0]["line"], 3);
    let detail = rej[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("3145757 bytes, longer than --max-record-bytes (1048576)"),
        "{detail}"
    );
    // The record itself is not copied into the rejects file.
    assert!(std::fs::metadata(dir.path("rejects.ndjson")).unwrap().len() < 4096);
}

#[test]
fn an_ndjson_line_over_max_record_bytes_is_rejected_without_buffering_it() {
    let dir = workdir(&[]);
    let mut w = BufWriter::new(File::create(dir.path("long.ndjson")).unwrap());
    w.write_all(b"{\"user_id\":\"u1\",\"event\":\"E\"}\n{\"user_id\":\"u2\",\"event\":\"")
        .unwrap();
    let block = vec![b'z'; 1 << 20];
    for _ in 0..48 {
        w.write_all(&block).unwrap();
    }
    w.write_all(b"\"}\n{\"user_id\":\"u3\",\"event\":\"E\"}\n")
        .unwrap();
    drop(w);
    let o = run(
        dir.dir(),
        &[
            "long.ndjson",
            "--mapping",
            "ndjson.toml",
            "--max-record-bytes",
            "1048576",
        ],
    );
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.calls().len(), 2);
    assert_eq!(reasons(&o), vec!["record_too_large@2"]);
    assert!(o.rejects()[0]["detail"]
        .as_str()
        .unwrap()
        .contains("longer than 1048576 bytes"));
    // 48 MB on one line; the reader keeps at most 1 MiB of it.
    assert!(o.peak_rss_kb < 150 * 1024, "peak RSS {} kB", o.peak_rss_kb);
}

#[test]
fn an_unclosed_quote_at_the_end_of_a_file_is_a_reject() {
    let text = format!("{HEADER}{ROW}u2,\"Signed Up,2024-01-02T03:04:05Z,1\n");
    let dir = workdir(&[("q.csv", text.as_bytes())]);
    let o = run(dir.dir(), &["q.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.calls().len(), 1);
    assert_eq!(reasons(&o), vec!["unclosed_quote@2"]);
    let detail = o.rejects()[0]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with(
            "the quote that opens field 2 (event) is never closed, so the rest of the input"
        ),
        "{detail}"
    );

    // In the last column the field count comes out right, and the rows after the quote
    // used to be sent inside one field of one call, without a word.
    let text = format!("{HEADER}{ROW}u2,E,2024-01-02T03:04:05Z,\"1\nu3,E,2024-01-02T03:04:05Z,2\nu4,E,2024-01-02T03:04:05Z,3\n");
    std::fs::write(dir.path("last.csv"), text).unwrap();
    std::fs::remove_file(dir.path("bodies.ndjson")).unwrap();
    let o = run(dir.dir(), &["last.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.calls().len(), 1, "only the row before the quote is sent");
    assert_eq!(reasons(&o), vec!["unclosed_quote@2"]);
    let detail = o.rejects()[0]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("the quote that opens field 4 (amount) is never closed, so the rest of the input, lines 3 to 5, was read into this one field"),
        "{detail}"
    );
}

#[test]
fn a_quote_closed_lines_later_leaves_a_short_row_whose_reason_points_at_it() {
    // The quote closes at the next quote, two lines on: one short row holds them all.
    let text = format!("{HEADER}u1,\"Signed Up,2024-01-02T03:04:05Z,1\nu2,E,2024-01-02T03:04:05Z,2\nu3,E,2024-01-02T03:04:05Z,\"3\"\n{ROW}");
    let dir = workdir(&[("q.csv", text.as_bytes())]);
    let o = run(dir.dir(), &["q.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    let detail = o.rejects()[0]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("expected 4 fields (as in the header), found 2; field 2 holds a line break, so a quote in it was probably never closed"),
        "{detail}"
    );
    assert_eq!(
        o.calls().len(),
        1,
        "the row after it is read as it should be"
    );
    // A multi-line field that is properly quoted gets no such hint when the count is off.
    let text = format!("{HEADER}u1,\"Signed\nUp\",2024-01-02T03:04:05Z\n");
    std::fs::write(dir.path("ok.csv"), text).unwrap();
    std::fs::remove_file(dir.path("bodies.ndjson")).unwrap();
    let o = run(dir.dir(), &["ok.csv", "--mapping", "csv.toml"]);
    let detail = o.rejects()[0]["detail"].as_str().unwrap().to_string();
    assert_eq!(
        detail, "expected 4 fields (as in the header), found 3",
        "{detail}"
    );
}

#[test]
fn nul_bytes_and_invalid_utf8_are_rejects_or_escaped_never_crashes() {
    let csv = b"user_id,event,ts,amount\nu\x001,E\x00,2024-01-02T03:04:05Z,1\nu2,\xff\xfe,2024-01-02T03:04:05Z,1\nu3,E,2024-01-02T03:04:05Z,\xc3\n";
    let ndjson = b"{\"user_id\":\"u\\u00001\",\"event\":\"E\"}\n{\"user_id\":\"u\x002\",\"event\":\"E\"}\n{\"user_id\":\"u3\",\"event\":\"\xff\"}\n\x00\x00\x00\n";
    let dir = workdir(&[("n.csv", csv), ("n.ndjson", ndjson)]);
    let o = run(dir.dir(), &["n.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    let calls = o.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["userId"], "u\u{0}1");
    assert_eq!(calls[0]["event"], "E\u{0}");
    assert_eq!(reasons(&o), vec!["invalid_utf8@2", "bad_value@3"]);

    let o = run(dir.dir(), &["n.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    let calls = o.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["userId"], "u\u{0}1");
    assert_eq!(
        reasons(&o),
        vec!["bad_json@2", "invalid_utf8@3", "bad_json@4"]
    );
}

#[test]
fn a_header_that_is_not_utf8_is_an_error_naming_the_column_not_a_changed_key() {
    let mut csv = b"user_id,event,ts,amount,caf\xe9\n".to_vec();
    csv.extend_from_slice(b"u1,Signed Up,2024-01-02T03:04:05Z,1.5,x\n");
    let dir = workdir(&[("latin1.csv", &csv)]);
    let o = run(dir.dir(), &["latin1.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("latin1.csv: column 5 of the header") && o.stderr.contains("UTF-8"),
        "{}",
        o.stderr
    );
    assert!(o.calls().is_empty(), "nothing is sent");
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_column_name() {
    let csv = format!("\u{feff}{HEADER}{ROW}");
    let ndjson = "\u{feff}{\"user_id\":\"u1\",\"event\":\"E\"}\n";
    let dir = workdir(&[
        ("bom.csv", csv.as_bytes()),
        ("bom.ndjson", ndjson.as_bytes()),
    ]);
    let o = run(dir.dir(), &["bom.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.calls()[0]["userId"], "u1");
    let o = run(dir.dir(), &["bom.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.calls()[0]["userId"], "u1");
}

#[test]
fn cr_lf_and_crlf_line_ends_all_read_as_rows() {
    for (name, end) in [("lf.csv", "\n"), ("cr.csv", "\r"), ("crlf.csv", "\r\n")] {
        let text = format!("{HEADER}{ROW}{ROW}{ROW}").replace('\n', end);
        let dir = workdir(&[(name, text.as_bytes())]);
        let o = run(dir.dir(), &[name, "--mapping", "csv.toml"]);
        assert_eq!(o.code, Some(0), "{name}: {}", o.stderr);
        let calls = o.calls();
        assert_eq!(calls.len(), 3, "{name}");
        assert_eq!(calls[2]["properties"]["amount"], 1.5, "{name}");
    }
    let text = "{\"user_id\":\"u1\",\"event\":\"E\"}\r\n{\"user_id\":\"u2\",\"event\":\"E\"}\r\n";
    let dir = workdir(&[("crlf.ndjson", text.as_bytes())]);
    let o = run(dir.dir(), &["crlf.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.calls().len(), 2);
}

#[test]
fn a_header_of_100000_columns_is_read() {
    let dir = workdir(&[]);
    let mut w = BufWriter::new(File::create(dir.path("wide.csv")).unwrap());
    w.write_all(b"user_id,event,ts").unwrap();
    for i in 0..100_000 {
        write!(w, ",c{i}").unwrap();
    }
    w.write_all(b"\nu1,E,2024-01-02T03:04:05Z").unwrap();
    for _ in 0..100_000 {
        w.write_all(b",").unwrap();
    }
    w.write_all(b"\n").unwrap();
    drop(w);
    std::fs::write(
        dir.path("wide.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\nproperties = [\"c0\", \"c99999\"]\n",
    )
    .unwrap();
    let o = run(dir.dir(), &["wide.csv", "--mapping", "wide.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.calls().len(), 1);
}

#[test]
fn ndjson_nested_100000_levels_deep_is_a_reject() {
    let depth = 100_000;
    let mut line = String::from("{\"user_id\":\"u1\",\"event\":\"E\",\"deep\":");
    line.push_str(&"[".repeat(depth));
    line.push_str(&"]".repeat(depth));
    line.push_str("}\n{\"user_id\":\"u2\",\"event\":\"E\"}\n");
    let dir = workdir(&[("deep.ndjson", line.as_bytes())]);
    let o = run(dir.dir(), &["deep.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(o.calls().len(), 1);
    assert_eq!(reasons(&o), vec!["bad_json@1"]);
}

#[test]
fn huge_and_negative_zero_numbers_and_duplicate_keys_give_valid_json_or_a_refusal() {
    let csv = "user_id,event,ts,amount,n\nu1,E,2024-01-02T03:04:05Z,1e400,-0\nu2,E,2024-01-02T03:04:05Z,-0,1e400\n";
    let ndjson = "{\"user_id\":\"u1\",\"event\":\"E\",\"x\":1e400}\n{\"user_id\":\"u2\",\"event\":\"E\",\"x\":-0,\"y\":-0.0}\n{\"user_id\":\"u3\",\"user_id\":\"u4\",\"event\":\"E\"}\n";
    let dup = "user_id,event,ts,amount,amount\nu1,E,2024-01-02T03:04:05Z,1,2\n";
    let dir = workdir(&[
        ("n.csv", csv.as_bytes()),
        ("n.ndjson", ndjson.as_bytes()),
        ("dup.csv", dup.as_bytes()),
    ]);
    let o = run(dir.dir(), &["n.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    // 1e400 is not a float (it overflows): a reject, never `inf` in the JSON.
    assert_eq!(reasons(&o), vec!["bad_value@1"]);
    let calls = o.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["properties"]["amount"], -0.0);
    assert_eq!(calls[0]["properties"]["n"], "1e400");

    let o = run(dir.dir(), &["n.ndjson", "--mapping", "ndjson.toml"]);
    let calls = o.calls();
    let rej = reasons(&o);
    assert_eq!(calls.len() + rej.len(), 3, "{rej:?}");
    assert_eq!(
        o.code,
        Some(if rej.is_empty() { 0 } else { 3 }),
        "{}",
        o.stderr
    );

    // A header naming `amount` twice: which value the mapping means is ambiguous, so the
    // run stops before sending (the second value used to be dropped without a word).
    std::fs::remove_file(dir.path("bodies.ndjson")).unwrap();
    let o = run(dir.dir(), &["dup.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("dup.csv has 2 columns named \"amount\" (columns 4 and 5 of its header)"),
        "{}",
        o.stderr
    );
    assert!(!dir.path("bodies.ndjson").exists());
}

#[test]
fn an_object_array_or_boolean_where_an_id_or_event_belongs_is_a_reject_not_its_text() {
    // An id column holding an object is a mapping or export mistake. It used to be sent
    // as its text (`"userId":"{\"a\":1}"`), a user nobody can find again. Numbers
    // stay ids, written as their digits.
    let ndjson = concat!(
        "{\"user_id\":{\"a\":1},\"event\":\"E\"}\n",
        "{\"user_id\":[1,2],\"event\":\"E\"}\n",
        "{\"user_id\":true,\"event\":\"E\"}\n",
        "{\"user_id\":\"u4\",\"event\":{\"name\":\"E\"}}\n",
        "{\"user_id\":12345,\"event\":\"E\"}\n",
        "{\"user_id\":\"u6\",\"event\":\"E\",\"flag\":true,\"obj\":{\"a\":1}}\n",
    );
    let dir = workdir(&[("ids.ndjson", ndjson.as_bytes())]);
    let o = run(dir.dir(), &["ids.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(
        reasons(&o),
        vec!["bad_value@1", "bad_value@2", "bad_value@3", "bad_value@4"]
    );
    let details: Vec<String> = o
        .rejects()
        .iter()
        .map(|r| r["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        details[0].starts_with(
            "column user_id: {\"a\":1} is a JSON object, where the call needs a string"
        ),
        "{details:?}"
    );
    assert!(details[1].contains("[1,2] is a JSON array"), "{details:?}");
    assert!(details[2].contains("true is a boolean"), "{details:?}");
    assert!(details[3].starts_with("column event: "), "{details:?}");
    // The rejected rows keep their record as read.
    assert_eq!(o.rejects()[0]["record"]["user_id"]["a"], 1);
    let calls = o.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["userId"], "12345");
    // Properties are not ids: booleans and objects stay what they are there.
    assert_eq!(calls[1]["properties"]["flag"], true);
    assert_eq!(calls[1]["properties"]["obj"]["a"], 1);

    // Nor is an id built by a template any different; a constant number is its digits.
    let template = "[[call]]\ntype = \"track\"\nuser_id = { template = \"user-{user_id}\" }\nanonymous_id = { const = 42 }\nevent = \"event\"\n";
    std::fs::write(dir.path("template.toml"), template).unwrap();
    std::fs::remove_file(dir.path("bodies.ndjson")).unwrap();
    let o = run(dir.dir(), &["ids.ndjson", "--mapping", "template.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(
        reasons(&o),
        vec!["bad_value@1", "bad_value@2", "bad_value@3", "bad_value@4"]
    );
    assert!(
        o.rejects()[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("column user_id (in a template): {\"a\":1} is a JSON object"),
        "{:?}",
        o.rejects()[0]
    );
    let calls = o.calls();
    assert_eq!(calls[0]["userId"], "user-12345");
    assert_eq!(calls[0]["anonymousId"], "42");
}

#[test]
fn integers_too_long_for_a_double_go_as_strings_as_in_csv() {
    // CSV text of more than 15 significant digits already went as a string under auto;
    // the same integer typed in NDJSON went as a number, which the API's JSON reader
    // rounds (1234567890123456789 arrives as 1234567890123456800).
    let ndjson = "{\"user_id\":\"u1\",\"event\":\"E\",\"big\":1234567890123456789,\"neg\":-9007199254740993,\"small\":123456789012345,\"f\":1.5}\n";
    let csv = "user_id,event,ts,amount,big\nu1,E,2024-01-02T03:04:05Z,1,1234567890123456789\n";
    let dir = workdir(&[
        ("big.ndjson", ndjson.as_bytes()),
        ("big.csv", csv.as_bytes()),
    ]);
    let o = run(dir.dir(), &["big.ndjson", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let p = &o.calls()[0]["properties"];
    assert_eq!(p["big"], "1234567890123456789");
    assert_eq!(p["neg"], "-9007199254740993");
    assert_eq!(p["small"], 123456789012345u64);
    assert_eq!(p["f"], 1.5);
    std::fs::remove_file(dir.path("bodies.ndjson")).unwrap();
    let o = run(dir.dir(), &["big.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.calls()[0]["properties"]["big"], "1234567890123456789");
}

/// Writes `members` gzip members, each `member_bytes` of `byte`, without ever holding
/// the expansion in memory: one member is compressed once from a small buffer and
/// repeated (concatenated members are one stream, as `cat a.gz b.gz`).
fn write_bomb(path: &Path, byte: u8, member_bytes: usize, members: usize) -> u64 {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![byte; 1 << 16];
    for _ in 0..member_bytes / block.len() {
        enc.write_all(&block).unwrap();
    }
    let member = enc.finish().unwrap();
    let mut f = BufWriter::new(File::create(path).unwrap());
    for _ in 0..members {
        f.write_all(&member).unwrap();
    }
    f.flush().unwrap();
    (member.len() * members) as u64
}

#[test]
fn a_gzip_bomb_is_streamed_in_bounded_memory() {
    let dir = workdir(&[]);
    // 32 members of 64 MiB of NUL bytes: about 2 MB on disk, 2 GiB expanded, one line.
    let size = write_bomb(&dir.path("bomb.ndjson.gz"), 0, 64 << 20, 32);
    assert!(size < 4 << 20, "the bomb is {size} bytes");
    let o = run(dir.dir(), &["bomb.ndjson.gz", "--mapping", "ndjson.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(reasons(&o), vec!["record_too_large@1"]);
    assert!(o.rejects()[0]["detail"]
        .as_str()
        .unwrap()
        .contains("longer than 16777216 bytes"));
    // The line itself is not copied into the rejects file.
    assert!(std::fs::metadata(dir.path("rejects.ndjson")).unwrap().len() < 4096);
    // The same bytes as CSV: one record of NULs, stopped at the hard limit.
    std::fs::rename(dir.path("bomb.ndjson.gz"), dir.path("bomb.csv.gz")).unwrap();
    let o = run(dir.dir(), &["bomb.csv.gz", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("longer than 67108864 bytes"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_truncated_gzip_stream_is_a_clear_error() {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(HEADER.as_bytes()).unwrap();
    for i in 0..20_000 {
        writeln!(enc, "u{i},Signed Up,2024-01-02T03:04:05Z,{i}").unwrap();
    }
    let mut gz = enc.finish().unwrap();
    gz.truncate(gz.len() / 2);
    let dir = workdir(&[("t.csv.gz", &gz)]);
    let o = run(dir.dir(), &["t.csv.gz", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("t.csv.gz") && o.stderr.contains("read failed"),
        "{}",
        o.stderr
    );
}

fn small_parquet() -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..1000).map(|i| format!("u{i}")),
    ));
    let ev: ArrayRef = Arc::new(StringArray::from_iter_values((0..1000).map(|_| "E")));
    let n: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
    let batch = RecordBatch::try_from_iter([("user_id", ids), ("event", ev), ("n", n)]).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// Replaces every thrift varint `from` in the footer metadata with `to` and fixes the
/// footer length.
fn patch_footer(file: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let n = file.len();
    let meta_len = u32::from_le_bytes(file[n - 8..n - 4].try_into().unwrap()) as usize;
    let meta_start = n - 8 - meta_len;
    let meta = &file[meta_start..n - 8];
    let mut new_meta = Vec::new();
    let mut i = 0;
    let mut hits = 0;
    while i < meta.len() {
        if meta[i..].starts_with(from) {
            new_meta.extend_from_slice(to);
            i += from.len();
            hits += 1;
        } else {
            new_meta.push(meta[i]);
            i += 1;
        }
    }
    assert!(hits > 0, "the footer holds the value to patch");
    let mut out = file[..meta_start].to_vec();
    out.extend_from_slice(&new_meta);
    out.extend_from_slice(&(new_meta.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

#[test]
fn parquet_metadata_claiming_enormous_sizes_is_a_clear_error() {
    let good = small_parquet();
    let n = good.len();
    // num_rows = 1000 is the zigzag varint 2000 = d0 0f; make it about 2^62.
    let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    let rows = patch_footer(&good, &[0xd0, 0x0f], &huge);
    // The footer claims 2 GiB of metadata.
    let mut len = good.clone();
    len[n - 8..n - 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    // Every byte of the metadata's second half set to 0xff (sizes, offsets, counts).
    let mut smash = good.clone();
    let meta_len = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
    for b in &mut smash[n - 8 - meta_len / 2..n - 8] {
        *b = 0xff;
    }
    let dir = workdir(&[
        ("good.parquet", &good),
        ("rows.parquet", &rows),
        ("len.parquet", &len),
        ("smash.parquet", &smash),
        ("empty.parquet", b""),
    ]);
    std::fs::write(
        dir.path("pq.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\nproperties = \"rest\"\n",
    )
    .unwrap();
    // Row counts in the metadata are not trusted for reading: the pages say 1000.
    for name in ["good.parquet", "rows.parquet"] {
        let o = run(dir.dir(), &[name, "--mapping", "pq.toml"]);
        assert_eq!(o.code, Some(0), "{name}: {}", o.stderr);
        assert_eq!(o.calls().len(), 1000, "{name}");
    }
    for name in ["len.parquet", "smash.parquet", "empty.parquet"] {
        let o = run(dir.dir(), &[name, "--mapping", "pq.toml"]);
        assert_eq!(o.code, Some(1), "{name}: {}", o.stderr);
        assert!(
            o.stderr.starts_with("error: ") && o.stderr.contains(name),
            "{name}: {}",
            o.stderr
        );
    }
}

#[test]
fn empty_and_header_only_files_say_so() {
    let dir = workdir(&[
        ("empty.csv", b""),
        ("header.csv", HEADER.as_bytes()),
        ("empty.ndjson", b""),
        ("blank.ndjson", b"\n\n  \n"),
    ]);
    let o = run(dir.dir(), &["empty.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("empty.csv is empty: it has no header row"),
        "{}",
        o.stderr
    );
    let o = run(dir.dir(), &["header.csv", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("header.csv has a header but no data rows"),
        "{}",
        o.stderr
    );
    assert_eq!(o.calls().len(), 0);
    for name in ["empty.ndjson", "blank.ndjson"] {
        let o = run(dir.dir(), &[name, "--mapping", "ndjson.toml"]);
        assert_eq!(o.code, Some(0), "{name}: {}", o.stderr);
        assert_eq!(o.calls().len(), 0);
    }
}

#[test]
fn a_symlink_loop_under_a_directory_input_is_not_followed() {
    let dir = workdir(&[]);
    let data = dir.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.csv"), format!("{HEADER}{ROW}")).unwrap();
    std::os::unix::fs::symlink(&data, data.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink("self", data.join("self")).unwrap();
    let o = run(dir.dir(), &["data", "--mapping", "csv.toml"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.calls().len(), 1);
    let o = run(dir.dir(), &["data/**/*.csv", "--mapping", "csv.toml"]);
    assert!(matches!(o.code, Some(0 | 1)), "{}", o.stderr);
    if o.code == Some(0) {
        assert!(!o.calls().is_empty());
    }
}

#[test]
fn the_rss_probe_sees_a_process_that_allocates() {
    // Guards the measurement itself: a run that reads a 48 MB field into memory (CSV,
    // under a 64 MiB limit) must show a peak RSS of at least that.
    let mut text = format!("{HEADER}u2,\"");
    text.push_str(&"y".repeat(48 << 20));
    text.push_str("\",2024-01-02T03:04:05Z,1\n");
    let dir = workdir(&[("mid.csv", text.as_bytes())]);
    drop(text);
    let o = run(
        dir.dir(),
        &[
            "mid.csv",
            "--mapping",
            "csv.toml",
            "--max-record-bytes",
            "67108864",
        ],
    );
    assert!(o.peak_rss_kb > 48 * 1024, "peak RSS {} kB", o.peak_rss_kb);
    let mut s = String::new();
    File::open(dir.path("stderr.txt"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(o.code, Some(3), "{s}");
}

/// Found by the csv fuzz target: a `json` column whose text has a lone surrogate escape
/// or invalid UTF-8 inside a string passed the check (serde_json skips ignored strings)
/// and made the request body invalid JSON.
#[test]
fn a_json_column_with_a_lone_surrogate_or_invalid_utf8_is_a_reject() {
    let csv = b"user_id,event,meta\nu1,E,\"{\"\"\\ud800\"\":1}\"\nu2,E,\"{\"\"a\"\":\"\"\xe6\xe6\"\"}\"\nu3,E,\"[1,{\"\"b\"\":\"\"\\ud83d\\ude00\"\"}]\"\n";
    let dir = workdir(&[("j.csv", csv)]);
    std::fs::write(
        dir.path("j.toml"),
        "[columns]\nmeta = \"json\"\n[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\nproperties = \"rest\"\n",
    )
    .unwrap();
    let o = run(dir.dir(), &["j.csv", "--mapping", "j.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert_eq!(reasons(&o), vec!["bad_value@1", "bad_value@2"]);
    let calls = o.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["properties"]["meta"][1]["b"], "\u{1f600}");
}

/// Found by the parquet fuzz target: a column chunk whose metadata offset is negative
/// made the `parquet` crate panic ("column start and length should not be negative").
/// The file (4,765 bytes, generated by the fuzz target and patched by one byte) is kept
/// here gzipped and base64-encoded.
#[test]
fn a_parquet_column_chunk_at_a_negative_offset_is_a_clear_error() {
    use base64::Engine as _;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(NEGATIVE_OFFSET_PARQUET_GZ_B64.replace('\n', ""))
        .unwrap();
    let mut file = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut file)
        .unwrap();
    assert_eq!(file.len(), 4765);
    let dir = workdir(&[("neg.parquet", &file)]);
    std::fs::write(
        dir.path("pq.toml"),
        "[[call]]\ntype = \"track\"\nanonymous_id = { const = \"a\" }\nevent = { const = \"e\" }\nproperties = \"rest\"\n",
    )
    .unwrap();
    let o = run(dir.dir(), &["neg.parquet", "--mapping", "pq.toml"]);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("neg.parquet: the Parquet metadata is damaged: row group 0, column 6 claims 64 bytes at offset -289"),
        "{}",
        o.stderr
    );
}

const NEGATIVE_OFFSET_PARQUET_GZ_B64: &str = "
H4sICJLcCmsCA25lZy5wYXJxdWV0AJ1WXWhURxSeO3tz3SSb3c12Z9wbrxJsM2xsNGvRNJYgvZvNj3ZjY2ixtsUm0SRGoqbZ
GK0IhjyUtoiID8WHItKCD6WUPuRBxFobivQhD1X6Ay2UIEVEghUqxYc89Jy5v7t7N7S97N6ZOXPOd37mm7nTbw5sZSprZI15
aEiCEIVYzx27ZYQlWKKFaSwOf40QCsJQlRKixXbW8/is1T49G2inKZZdkiX9djilrOaJsCiL4gzxzxCA2MQ25VFuI4Uk0h3N
ash7m8EizMJ+0NBzaJdhGddu8Jf1SeJ7Bn96eyIuMw80lUmHXZeKnUDIKtZGtrGFRYpSaMep0F8xGroQAvs4i+cZ9YrWGEM7
kJamTklgjZ+edWpdscaaU2PLjVWOP7/5ehVHgSWmmO8gG3RKVe3W9fTIWxH/gBRGYiXjw89O/5vqu1VfbJhD/KXfdn4Yqlx9
EPqrB2ob2IbSEsjFCBlEFrC03k+IWwbqt6KKVIfJPL4SUk0WpViNYBgplnJAw251Jd0qALtQxD+hAFSapR2oeHkJrzJ0p/og
y5K69Vn7x9Uy2kqKahFbnZqpxSTAtxqC7aYnqJ4KOwcBdN2zgOqcNguqEkvF4aGviyqkWRANNC0tAIAClJgqBP8lQpBp9q5F
lCInMg53Z3rTqjWlhpzwdKFpejfkUuO3hz3m66Ki2ixU+l/y0Kw1djslIF5GPmG1u5h6Kla6NyrlaO2DgBydJVAhRwI5wrb1
2z8hxNd1EkAVRdbWLTfxHDu89XX9hpiXgv8SYbyUpAGiovxsivq6Afkpdn5EF5Tq3UhHohs8x7ZxVDD4vOJ2L1HZhWLgaJGy
jD2xEGKb5EQCR9dUOcLu5SqWs7vnNfaC3V3RXMilNVKq8wiOLoZdyJvVNmSvDKLGhZyrZS/b3Ue1LuSNiGt5pc6GjOPobp07
cTvKhJxolMnE5Ai7D2MWJNThi97I0NTU8ZPvFA4eHjk6xKKwv5toShknrAbbUcIi2BaaSN6Q2xpHwyglqdDw+DHUJyk6XWhK
5M8lDENSYzvoTMAZoeU7cKSm1InxApARPIK5Oj49cpTwqN6hnxHEYKq+nWhxYMA4I1zjk3xS5ETY8I4E75zgNB0gra8neos8
Val16lLSsQN3POELDSzJP4+zboKeahxPo66neUWcMtpI2t2U3vasr8dtWQ6Mnzr+cwPj/HGc5SVwxAEuSOBD/JC4RMUDxWij
aTiYUoEh4iaWQS43MFjRerZJYhG9CU4EKLKEyvCMWKQdgAMwisQx8Mvhy/GDdRDKfcfcCQUXx81yISRWKKZpn30VAoLzm19e
B8FcSNhoztrAAkuwGT4jrqliOWR4J6V3tHCsY5k0wBXh1zHo6wm2U7qhlpt2ZUIyRTIE/EX4rAI/cblKfKsa1gFs7WQggm8U
lEyzd0YT/gN6e5pgWcJ/reKaCEMD17FA/h3gB8R5TdyrMrzD3OtxNR0gDWagionel4k+U5mBK5q4pf0fCq4g8mwymILDfFgs
rRFfrTHa1LT9NXG+KoFrH2m24r1owPovJu2FKSfjxXAHIAaRUZp/aUBQH7FKZLyqwE/crBYLYUy59Hvl+5gFBtkLHr7DAOcZ
21ORoPM14kG14X3mSglaKg0k6BImMsdXJ6i11edqxe81hkVFm55q2jeqQE/n80r43+jrFkd6LiE971VBm6RB/KSSn49qxUKt
4X2IvR53eFQkDean9H1uPea5NoiflOd5XtyIiCsROMiyicBTFrP9FDG+X8tayplI+SgfFVfqxHJEcty5AXh3gcCFjjdb0V1b
D4v9xInOz0Yq2Xi3rgNQFQWuDyVslOY/YmDXU8FspPwIPyJuR8VcFEMru1yUXzcCQ20EPw8xzD9S7EAAJykf4APiUkwsRw3v
auL15IqVSQM5+f4GSGdBX52TKp/gE+JhTNyMGdZ9x+YkSftGwZx0r0SEf4K+ZhuQkw9UToFv0CbxJpSKmAMDr+57yboypGar
WvHZMZY1TXOvaT2vmOZJs3PM3I0iaE0za8/shbFp7jItkdPCcxB7GUToM7tMsx+hcn04M4mvHqnUha8T/S+2tp5CULPPRs3m
ukwXqlO+XsOo9rfOtLbKqeyYrdrV2S0tjzzf2truCJ3IperQGwMTw3s9vGF87ckBXPvr2M25Rsf3u92uPM47EM4jQznU2yeR
um0vuZOWUqc9lvFAvRwkD79zGyYhp3p2Tw6PZTM4Ltbv6vH0cwelPqL2YGk79+O4p1i/2xdhF4aQdVPPnrZ7+1CYGzP77RB3
2Uoy3163Zn1O/uBiDEvc48/bqd+b9vpb+W8ry7/HbwHrY+GPYZ1Br2BNeUFnTS9eSQ2S0ieHpt49MTK9earQODMyVRg/fqyx
LbNl65aMfgaupC2EGMU/sgLXgn5zYOs/7SAR+J0SAAA=
";

/// Fuzz crash (parquet target): a damaged data page made the parquet/arrow crates panic
/// while decoding definition levels. It must be an error naming the file and row group.
#[test]
fn a_damaged_parquet_page_is_an_error_naming_the_row_group_not_a_panic() {
    let dir = Workdir::new();
    let mapping = dir.path("m.toml");
    std::fs::write(
        &mapping,
        "[[call]]\ntype = \"track\"\nuser_id = { const = \"u\" }\nevent = { const = \"E\" }\nproperties = \"rest\"\n",
    )
    .unwrap();
    let fixture = common::fixture("hostile/damaged-page.parquet");
    let out = dir
        .cmd()
        .arg("run")
        .arg(&fixture)
        .arg("--mapping")
        .arg(&mapping)
        .args(["--dry-run", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("damaged-page.parquet") && err.contains("row group 2"),
        "{err}"
    );
}
