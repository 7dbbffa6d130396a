//! Checkpoint and resume with real processes: SIGKILL at random moments, SIGINT, and the
//! refusals that protect a backfill from resuming against changed inputs.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cdp_backfill::map::message_id::message_id;
use common::*;

const CONCURRENCY: usize = 2;

fn backfill(dir: &Path, input: &Path, endpoint: &str, extra: &[&str]) -> Command {
    let mut c = bin();
    c.current_dir(dir)
        .arg("run")
        .arg(input)
        .arg("--mapping")
        .arg(fixture("events.toml"))
        .args([
            "--endpoint",
            endpoint,
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .args([
            "--checkpoint",
            "cp.json",
            "--rejects",
            "rejects.ndjson",
            "-q",
        ])
        .args(extra);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

fn resume_row(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("cp.json")).ok()?;
    let v: serde_json::Value =
        serde_json::from_str(&text).expect("a checkpoint on disk is always whole");
    Some((v["resume"]["input"].as_u64()?, v["resume"]["row"].as_u64()?))
}

/// A tiny deterministic PRNG for kill times (no test should be flaky by design).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_replays_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    let g = cdp_backfill::generate::generate_file(&input, 200_000, 21).unwrap();
    let (server, record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    // ~150 requests at 25/s: a full run takes about 6 s, and ten kills at most 4.5 s,
    // so every kill lands mid-run.
    let extra = ["--rate", "25"];

    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut kills = 0;
    let mut last = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        assert!(Instant::now() < deadline, "the backfill did not finish");
        let mut child = spawn(backfill(dir.path(), &input, &url, &extra));
        if kills < 10 {
            std::thread::sleep(Duration::from_millis(100 + next(&mut rng) % 350));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                if let Some(now) = resume_row(dir.path()) {
                    assert!(
                        now >= last,
                        "checkpoint moved backwards: {last:?} -> {now:?}"
                    );
                    last = now;
                }
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        break out.status;
    };
    assert!(kills >= 10, "only {kills} kills landed");
    assert_eq!(status.code(), Some(3), "finished with the planted rejects");
    let stats = server.shutdown();

    let bad: HashSet<u64> = g.bad_rows.iter().map(|(r, _)| *r).collect();
    let seed = seed_of("", &input);
    let expected: HashSet<String> = (0..g.rows)
        .filter(|r| !bad.contains(r))
        .map(|r| message_id(seed, r, 0))
        .collect();

    // Every call arrived; repeats are the very same bytes.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut by_id: HashMap<String, &str> = HashMap::new();
    let mut duplicates = 0u64;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["messageId"].as_str().unwrap().to_string();
        match by_id.get(&id) {
            Some(prev) => {
                assert_eq!(
                    *prev, line,
                    "a replayed call differs from the first delivery"
                );
                duplicates += 1;
            }
            None => {
                by_id.insert(id, line);
            }
        }
    }
    let got: HashSet<String> = by_id.keys().cloned().collect();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the received messageIds differ from the expected set"
    );
    assert_eq!(duplicates, stats.duplicate_message_ids);

    // The README's bound: at most 2 × concurrency requests per crash, each at most
    // max-request-bytes / smallest call.
    let smallest_call = text.lines().map(str::len).min().unwrap() as u64;
    let per_request = 500_000 / smallest_call + 1;
    let bound = kills as u64 * 2 * CONCURRENCY as u64 * per_request;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates > bound {bound}"
    );

    // The rejects file holds each planted row exactly once despite the kills.
    let rejected: Vec<u64> = read_lines(&dir.path().join("rejects.ndjson"))
        .iter()
        .map(|l| l["row"].as_u64().unwrap() - 1)
        .collect();
    let unique: HashSet<u64> = rejected.iter().copied().collect();
    assert_eq!(
        rejected.len(),
        unique.len(),
        "a reject line was written twice"
    );
    assert_eq!(unique, bad);
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cp.json")).unwrap())
            .unwrap();
    assert_eq!(cp["complete"], true);
}

#[test]
fn sigint_drains_in_flight_requests_so_a_resume_sends_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    let g = cdp_backfill::generate::generate_file(&input, 60_000, 5).unwrap();
    let (server, record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    // --restart on the first run: the printed resume command must leave it out.
    let extra = ["--rate", "20", "--restart"];
    let child = spawn(backfill(dir.path(), &input, &url, &extra));
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Resume with the same command"), "{err}");
    assert!(
        err.contains("--checkpoint cp.json"),
        "prints the command: {err}"
    );
    assert!(
        !err.contains("--restart"),
        "the resume command must not start over: {err}"
    );
    let (_, row) = resume_row(dir.path()).unwrap();
    assert!(row > 0 && row < g.rows, "stopped part way: {row}");

    let out = run(&mut backfill(
        dir.path(),
        &input,
        &url,
        &["--rate", "10000"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let stats = server.shutdown();
    assert_eq!(
        stats.duplicate_message_ids, 0,
        "a graceful stop replays nothing"
    );
    assert_eq!(
        recorded_calls(&record).len() as u64,
        g.rows - g.bad_rows.len() as u64
    );
}

#[test]
fn a_completed_backfill_is_not_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    cdp_backfill::generate::generate_file(&input, 2_000, 8).unwrap();
    let (server, _record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    assert_eq!(
        run(&mut backfill(dir.path(), &input, &url, &[]))
            .status
            .code(),
        Some(3)
    );
    let first = server.stats().requests;
    let out = run(&mut backfill(dir.path(), &input, &url, &[]));
    // Exit 3 still: the backfill is complete and its rejects file holds rows.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).is_empty() || !stderr(&out).contains("error"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.stats().requests, first, "nothing sent again");
    let out = run(bin().current_dir(dir.path()).args(["status", "cp.json"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("every input is done"));
    // --restart sends it all again, deliberately.
    assert_eq!(
        run(&mut backfill(dir.path(), &input, &url, &["--restart"]))
            .status
            .code(),
        Some(3)
    );
    assert!(server.shutdown().requests >= 2 * first);
}

/// Stops a run part way with SIGINT, so a checkpoint with a mid-file position exists.
fn interrupted_run(dir: &Path, input: &Path, url: &str) {
    let child = spawn(backfill(dir, input, url, &["--rate", "10"]));
    std::thread::sleep(Duration::from_millis(600));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resuming_refuses_changed_inputs_mappings_and_damaged_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.csv");
    cdp_backfill::generate::generate_file(&input, 30_000, 9).unwrap();
    let (server, _record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    interrupted_run(dir.path(), &input, &url);
    let cp = std::fs::read_to_string(dir.path().join("cp.json")).unwrap();
    let sent = server.stats().requests;

    let refused = |extra: &[&str], want: &str| {
        let out = run(&mut backfill(dir.path(), &input, &url, extra));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(want) && err.contains("--restart"), "{err}");
    };

    // A changed input.
    let original = std::fs::read(&input).unwrap();
    let mut appended = original.clone();
    appended
        .extend_from_slice(b"u1,,Signed Up,2024-01-01T00:00:00Z,free,1.00,USD,US,X,1,false,x\n");
    std::fs::write(&input, &appended).unwrap();
    refused(&[], "changed since the checkpoint");
    std::fs::write(&input, &original).unwrap();
    // Restoring the bytes still changes the modification time: refused too, by design.
    refused(&[], "changed since the checkpoint");
    // Put the recorded fingerprint back by re-pointing the checkpoint at the new mtime.
    let v: serde_json::Value = serde_json::from_str(&cp).unwrap();
    let meta = std::fs::metadata(&input).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut fixed = v.clone();
    fixed["inputs"][0]["modified_ns"] = serde_json::json!(mtime);
    let fixed_text = serde_json::to_string_pretty(&fixed).unwrap();
    std::fs::write(dir.path().join("cp.json"), &fixed_text).unwrap();

    // A changed mapping option.
    refused(&["--max-call-bytes", "20000"], "mapping file or an option");
    // A corrupt and a truncated checkpoint.
    std::fs::write(dir.path().join("cp.json"), "{ not json").unwrap();
    refused(&[], "corrupt");
    std::fs::write(
        dir.path().join("cp.json"),
        &fixed_text[..fixed_text.len() / 2],
    )
    .unwrap();
    refused(&[], "corrupt");
    // An unknown version.
    std::fs::write(
        dir.path().join("cp.json"),
        fixed_text.replace("\"version\": 2", "\"version\": 7"),
    )
    .unwrap();
    refused(&[], "version 7");
    assert_eq!(server.stats().requests, sent, "no refusal sent anything");

    // With the checkpoint restored, the same command resumes and finishes.
    std::fs::write(dir.path().join("cp.json"), &fixed_text).unwrap();
    let out = run(&mut backfill(
        dir.path(),
        &input,
        &url,
        &["--rate", "10000"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    server.shutdown();
}

/// Inputs a backfill has not started may change, appear or go before a resume (none of
/// their rows were sent; a resume used to be refused, and only --restart, which sends
/// everything again, got past it), while an input with rows already sent must stay as
/// it was. Every row arrives once.
#[test]
fn inputs_not_yet_started_may_change_or_be_added_before_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let (a, b, c) = (
        parts.join("a.csv"),
        parts.join("b.csv"),
        parts.join("c.csv"),
    );
    cdp_backfill::generate::generate_file(&a, 30_000, 21).unwrap();
    cdp_backfill::generate::generate_file(&b, 1_500, 22).unwrap();
    let (server, record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    interrupted_run(dir.path(), &parts, &url);
    assert_eq!(
        resume_row(dir.path()).map(|(input, _)| input),
        Some(0),
        "stopped in a.csv"
    );

    // b.csv changes and c.csv appears while a.csv is still being sent.
    let mut more = std::fs::read(&b).unwrap();
    more.extend_from_slice(b"u1,,Signed Up,2024-01-01T00:00:00Z,free,1.00,USD,US,X,1,false,x\n");
    std::fs::write(&b, more).unwrap();
    cdp_backfill::generate::generate_file(&c, 500, 23).unwrap();
    let out = run(&mut backfill(dir.path(), &parts, &url, &[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("b.csv changed since the checkpoint, before any of its rows were sent: it is read as it is now"),
        "{err}"
    );
    assert!(
        err.contains("c.csv is new since the checkpoint: it will be read"),
        "{err}"
    );
    let stats = server.stats();
    assert_eq!(stats.duplicate_message_ids, 0, "{stats:?}");
    let calls = recorded_calls(&record);
    let rejects = read_lines(&dir.path().join("rejects.ndjson"));
    assert_eq!(
        message_ids(&calls).len() + rejects.len(),
        30_000 + 1_501 + 500,
        "every row arrived once or is a reject"
    );

    // An input whose rows were sent may not change.
    let mut more = std::fs::read(&a).unwrap();
    more.extend_from_slice(b"u1,,Signed Up,2024-01-01T00:00:00Z,free,1.00,USD,US,X,1,false,x\n");
    std::fs::write(&a, more).unwrap();
    let out = run(&mut backfill(dir.path(), &parts, &url, &[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("a.csv changed since the checkpoint was written"),
        "{err}"
    );
    assert!(err.contains("rows were already sent"), "{err}");
    server.shutdown();
}

/// After a run that did not end drained (here `kill -9`), requests past the checkpoint
/// may have reached the server with rows of inputs not reached yet, under messageIds a
/// changed file would reuse for other rows: then no input may change before a resume.
#[test]
fn after_a_kill_no_input_may_change_before_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let (a, b) = (parts.join("a.csv"), parts.join("b.csv"));
    cdp_backfill::generate::generate_file(&a, 30_000, 31).unwrap();
    cdp_backfill::generate::generate_file(&b, 1_000, 32).unwrap();
    let (server, _record) = receiver(dir.path(), Default::default());
    let url = server.base_url();
    let child = spawn(backfill(dir.path(), &parts, &url, &["--rate", "10"]));
    std::thread::sleep(Duration::from_millis(800));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait_with_output();
    assert!(resume_row(dir.path()).is_some(), "a checkpoint was written");
    let mut more = std::fs::read(&b).unwrap();
    more.extend_from_slice(b"u1,,Signed Up,2024-01-01T00:00:00Z,free,1.00,USD,US,X,1,false,x\n");
    std::fs::write(&b, more).unwrap();
    let out = run(&mut backfill(dir.path(), &parts, &url, &[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("b.csv changed since the checkpoint was written"),
        "{err}"
    );
    server.shutdown();
}
