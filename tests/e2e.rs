//! End to end: the real binary reads CSV, maps, packs and sends to the local receiver over
//! loopback; what arrives is compared with what the input says should arrive.

mod common;

/// Each test keeps its checkpoint in its own temp dir, never in the repository.
fn ckpt(dir: &tempfile::TempDir) -> [String; 2] {
    [
        "--checkpoint".into(),
        dir.path().join("cp.json").display().to_string(),
    ]
}

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;

/// The bundled events fixture, backfilled to `endpoint` with a checkpoint in `dir`.
fn backfill_events(dir: &tempfile::TempDir, endpoint: &str) -> Command {
    let mut c = bin();
    c.current_dir(repo())
        .args([
            "run",
            "fixtures/events.csv",
            "--mapping",
            "fixtures/events.toml",
        ])
        .args(["--endpoint", endpoint])
        .args(ckpt(dir));
    c
}

use cdp_backfill::map::message_id::message_id;
use common::*;

#[test]
fn readme_first_command_delivers_or_rejects_every_fixture_row() {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let summary = dir.path().join("summary.json");
    // An earlier run's longer rejects file: replaced, none of it left behind.
    std::fs::write(&rejects, "{\"source\":\"old\",\"row\":1}\n".repeat(100_000)).unwrap();
    let out = run(bin()
        .current_dir(repo())
        .args([
            "run",
            "fixtures/events.csv",
            "--mapping",
            "fixtures/events.toml",
            "--endpoint",
            "local",
        ])
        .arg("--rejects")
        .arg(&rejects)
        .args(ckpt(&dir))
        .arg("--summary-json")
        .arg(&summary));
    assert_eq!(
        out.status.code(),
        Some(3),
        "rejects present → exit 3\n{}",
        stderr(&out)
    );
    let s: cdp_backfill::Summary =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s.rows_read, 40);
    assert_eq!(s.rows_mapped + s.rows_rejected, s.rows_read);
    assert_eq!(s.calls_delivered, s.calls_built);
    assert_eq!(s.rows_rejected, 4);
    let reasons: BTreeMap<String, u64> = s.rejected_by_reason.clone();
    assert_eq!(reasons.get("bad_timestamp"), Some(&2));
    assert_eq!(reasons.get("missing_id"), Some(&1));
    assert_eq!(reasons.get("call_too_large"), Some(&1));
    let lines = read_lines(&rejects);
    assert_eq!(lines.len(), 4);
    let rows: Vec<u64> = lines.iter().map(|l| l["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![8, 16, 24, 32], "planted rows, 1-based");
    for l in &lines {
        assert_eq!(l["source"], "fixtures/events.csv");
        assert!(l["detail"].as_str().unwrap().len() > 10);
        assert!(l["record"].is_object());
    }
    assert!(stderr(&out).contains("rows read"), "summary printed");
}

#[test]
fn a_generated_100k_row_csv_arrives_exactly_packed_full_and_within_limits() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    let g = cdp_backfill::generate::generate_file(&input, 100_000, 11).unwrap();
    let (server, record) = receiver(dir.path(), Default::default());
    let rejects = dir.path().join("rejects.ndjson");
    let input_arg = input.display().to_string();
    let out = run(bin()
        .args(["run", &input_arg, "--mapping"])
        .arg(fixture("events.toml"))
        .args(["--endpoint", &server.base_url(), "--rate", "100000"])
        .args(ckpt(&dir))
        .arg("--rejects")
        .arg(&rejects));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let stats = server.shutdown();

    let bad: BTreeMap<u64, &str> = g.bad_rows.iter().copied().collect();
    let seed = seed_of("", &input);
    let expected: HashSet<String> = (0..g.rows)
        .filter(|r| !bad.contains_key(r))
        .map(|r| message_id(seed, r, 0))
        .collect();
    let calls = recorded_calls(&record);
    assert_eq!(
        calls.len(),
        expected.len(),
        "one call per good row, no duplicates"
    );
    assert_eq!(message_ids(&calls), expected);
    assert_eq!(stats.duplicate_message_ids, 0);

    // Nothing the real API would drop.
    assert_eq!(stats.violations.request_too_large, 0);
    assert_eq!(stats.violations.call_too_large, 0);
    assert_eq!(stats.violations.invalid_calls, 0);
    assert!(stats.largest_request_bytes <= 500_000);
    assert!(stats.largest_call_bytes <= 32_000);

    // Rejects are exactly the planted rows, each with its reason.
    let got: BTreeMap<u64, String> = read_lines(&rejects)
        .iter()
        .map(|l| {
            (
                l["row"].as_u64().unwrap() - 1,
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<u64, String> = bad.iter().map(|(r, why)| (*r, why.to_string())).collect();
    assert_eq!(got, want);

    // Requests are full: on average at least 95% of the limit, leaving out the last one
    // (bounded here by the limit itself).
    assert!(stats.requests >= 2);
    let avg_but_last =
        (stats.bytes - 500_000.min(stats.bytes)) as f64 / (stats.requests - 1) as f64;
    assert!(
        avg_but_last >= 0.95 * 500_000.0,
        "average fill {avg_but_last} bytes"
    );
}

#[test]
fn calls_arrive_exactly_as_the_rows_said() {
    let dir = tempfile::tempdir().unwrap();
    let (server, record) = receiver(dir.path(), Default::default());
    let out = run(backfill_events(&dir, &server.base_url())
        .arg("--rejects")
        .arg(dir.path().join("r.ndjson")));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    server.shutdown();
    let calls = recorded_calls(&record);
    let first = &calls[0];
    // Row 1 of fixtures/events.csv, typed by fixtures/events.toml.
    assert_eq!(first["type"], "track");
    assert_eq!(first["anonymousId"], "anon-12a764fb66abc9cf");
    assert!(first.get("userId").is_none(), "empty user_id is left out");
    assert_eq!(first["event"], "Checkout Started");
    assert_eq!(first["timestamp"], "2023-03-06T12:21:12.000Z");
    assert_eq!(first["properties"]["amount"], serde_json::json!(1522.0));
    assert_eq!(first["properties"]["item_count"], 11);
    assert_eq!(first["properties"]["is_trial"], false);
    assert_eq!(first["properties"]["city"], "Zürich");
    assert!(first["properties"]["description"]
        .as_str()
        .unwrap()
        .contains("\"quoted\""));
    assert!(
        first.get("sentAt").is_none(),
        "sentAt is left out by default"
    );
    let keys: BTreeSet<&str> = first["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert!(
        !keys.contains("user_id") && !keys.contains("timestamp"),
        "mapped columns are not repeated as properties: {keys:?}"
    );
}

#[test]
fn a_mapping_naming_a_missing_column_fails_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _record) = receiver(dir.path(), Default::default());
    let mapping = dir.path().join("bad.toml");
    std::fs::write(
        &mapping,
        "[[call]]\ntype = \"track\"\nuser_id = \"customer_id\"\nevent = \"event\"\n",
    )
    .unwrap();
    let out = run(bin()
        .current_dir(repo())
        .args(["run", "fixtures/events.csv", "--mapping"])
        .arg(&mapping)
        .args(["--endpoint", &server.base_url()])
        .args(ckpt(&dir))
        .arg("--rejects")
        .arg(dir.path().join("r.ndjson")));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("\"customer_id\""), "{err}");
    assert!(
        err.contains("user_id, anonymous_id, event, timestamp"),
        "lists the header: {err}"
    );
    assert_eq!(server.shutdown().requests, 0, "nothing was sent");
}

/// A checkpoint counts the rejects file and syncs it, which a device or a pipe cannot
/// do: refused up front, before the checkpoint or anything else is touched, not at the
/// first checkpoint after requests went out.
#[cfg(target_os = "linux")]
#[test]
fn rejects_to_a_device_with_a_checkpoint_fail_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _record) = receiver(dir.path(), Default::default());
    let out = run(backfill_events(&dir, &server.base_url()).args(["--rejects", "/dev/null"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-checkpoint"), "{}", stderr(&out));
    assert_eq!(server.shutdown().requests, 0, "nothing was sent");
    assert!(
        !dir.path().join("cp.json").exists(),
        "nor a checkpoint written, which a rerun would resume from"
    );
}

#[test]
fn dry_run_writes_each_body_as_sent_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bodies = dir.path().join("bodies.ndjson");
    let input = dir.path().join("e.csv");
    cdp_backfill::generate::generate_file(&input, 5_000, 3).unwrap();
    let out = run(bin()
        .arg("run")
        .arg(&input)
        .arg("--mapping")
        .arg(fixture("events.toml"))
        .args(["--dry-run", "--max-request-bytes", "100000"])
        .arg("--output")
        .arg(&bodies)
        .arg("--rejects")
        .arg(dir.path().join("r.ndjson")));
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    let text = std::fs::read_to_string(&bodies).unwrap();
    let mut calls = 0;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 5);
    for l in &lines {
        assert!(l.len() <= 100_000, "body of {} bytes", l.len());
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        calls += v["batch"].as_array().unwrap().len();
    }
    assert!(stderr(&out).contains("dry run"), "{}", stderr(&out));
    assert!(calls > 4900);
}

#[test]
fn a_remote_endpoint_without_a_key_is_refused_up_front() {
    let out = run(bin().current_dir(repo()).args([
        "run",
        "fixtures/events.csv",
        "--mapping",
        "fixtures/events.toml",
        "--endpoint",
        "us",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("CDP_API_KEY"), "{}", stderr(&out));
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused() {
    let out = run(bin().current_dir(repo()).env("CDP_API_KEY", "k").args([
        "run",
        "fixtures/events.csv",
        "--mapping",
        "fixtures/events.toml",
        "--endpoint",
        "http://example.com",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
}
