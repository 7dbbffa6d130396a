//! Stable identity of inputs and state per backfill (issue 21, items 1 and 2), with real
//! processes and the local receiver: messageIds do not depend on how a path is spelled,
//! where the export directory lives or which machine reads it; backfills run in one
//! directory never collide; `--restart` never empties another backfill's rejects; a
//! version 1 checkpoint (ids from the path as typed) resumes with the ids it started with.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cdp_backfill::map::message_id::{input_seed, message_id};
use common::*;

/// `run INPUT --mapping events.toml --endpoint URL -q` in `dir`.
fn backfill(dir: &Path, input: &str, url: &str, extra: &[&str]) -> Command {
    let mut c = bin();
    c.current_dir(dir)
        .args(["run", input, "--mapping"])
        .arg(fixture("events.toml"))
        .args(["--endpoint", url, "-q"])
        .args(extra);
    c
}

/// The messageIds of a dry run's request bodies.
fn dry_run_ids(dir: &Path, input: &str) -> HashSet<String> {
    let out = dir.join("bodies.ndjson");
    let _ = std::fs::remove_file(&out);
    let o = run(bin()
        .current_dir(dir)
        .args(["run", input, "--mapping"])
        .arg(fixture("events.toml"))
        .args(["--dry-run", "-q", "--output"])
        .arg(&out));
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{input}: {}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let mut ids = HashSet::new();
    for body in text.lines() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        for call in v["batch"].as_array().unwrap() {
            ids.insert(call["messageId"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// `a.csv`, `./a.csv`, the absolute path, `../export/a.csv` from a sibling directory,
/// the export directory moved, and a copy on "another machine" (another directory,
/// another working directory) all give the same messageIds; a file of the same name with
/// other bytes gives others.
#[test]
fn ids_are_the_same_for_every_spelling_a_moved_export_and_another_machine() {
    let w = Workdir::new();
    let export = w.path("export");
    std::fs::create_dir_all(export.join("2023")).unwrap();
    std::fs::create_dir_all(export.join("2024")).unwrap();
    std::fs::create_dir(w.path("elsewhere")).unwrap();
    let a = export.join("a.csv");
    let g = cdp_backfill::generate::generate_file(&a, 3_000, 7).unwrap();
    let reference = dry_run_ids(&export, "a.csv");
    assert_eq!(
        reference.len(),
        3_000 - g.bad_rows.len(),
        "one id per good row"
    );
    let same = |dir: &Path, input: &str| {
        let ids = dry_run_ids(dir, input);
        assert!(
            ids == reference,
            "{input} from {}: other ids",
            dir.display()
        );
    };
    same(&export, "./a.csv");
    same(&export, a.to_str().unwrap());
    same(&w.path("elsewhere"), "../export/a.csv");
    // The whole export directory moved.
    std::fs::rename(&export, w.path("moved")).unwrap();
    same(&w.path("moved"), "a.csv");
    // Another machine: a copy of the file, another directory, another working directory.
    let other = Workdir::new();
    std::fs::create_dir(other.path("data")).unwrap();
    std::fs::copy(w.path("moved/a.csv"), other.path("data/part.csv")).unwrap();
    same(other.dir(), "data/part.csv");
    // The ids are the content seed's (what issue 22's object reader computes too).
    let seed = seed_of("", &other.path("data/part.csv"));
    let all: HashSet<String> = (0..3_000).map(|r| message_id(seed, r, 0)).collect();
    assert!(reference.is_subset(&all), "the ids are the content seed's");

    // Two files of one name with different bytes never share an id.
    let moved = w.path("moved");
    cdp_backfill::generate::generate_file(&moved.join("2023/events.csv"), 500, 1).unwrap();
    cdp_backfill::generate::generate_file(&moved.join("2024/events.csv"), 500, 2).unwrap();
    let y23 = dry_run_ids(&moved, "2023/events.csv");
    let y24 = dry_run_ids(&moved, "2024/events.csv");
    assert!(y23.is_disjoint(&y24));
}

/// Two backfills into the receiver from two "machines" (separate directories and state,
/// copies of one export): the second sends only ids the first sent, so the API keeps one
/// copy of each call.
#[test]
fn two_machines_backfilling_one_export_send_the_same_ids() {
    let (m1, m2) = (Workdir::new(), Workdir::new());
    let input = m1.path("events.csv");
    let g = cdp_backfill::generate::generate_file(&input, 2_000, 11).unwrap();
    std::fs::create_dir(m2.path("copy")).unwrap();
    std::fs::copy(&input, m2.path("copy/events.csv")).unwrap();
    let (server, record) = receiver(m1.dir(), Default::default());
    let url = server.base_url();
    let o = run(&mut backfill(m1.dir(), "events.csv", &url, &[]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let first = message_ids(&recorded_calls(&record));
    let o = run(&mut backfill(m2.dir(), "./copy/events.csv", &url, &[]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let stats = server.shutdown();
    assert_eq!(first.len(), 2_000 - g.bad_rows.len());
    assert_eq!(stats.duplicate_message_ids, first.len() as u64);
    assert!(message_ids(&recorded_calls(&record)) == first);
}

/// A backfill interrupted (Ctrl-C), its export directory then moved and named by another
/// path: the same backfill resumes (found by content in the state directory), and every
/// row arrives once.
#[test]
fn a_moved_export_resumes_where_it_stopped() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("export")).unwrap();
    let g = cdp_backfill::generate::generate_file(&w.path("export/events.csv"), 20_000, 3).unwrap();
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let child = backfill(w.dir(), "export/events.csv", &url, &["--rate", "10"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    std::fs::rename(w.path("export"), w.path("moved-export")).unwrap();
    let abs = w.path("moved-export/events.csv");
    let out = run(&mut backfill(
        w.dir(),
        abs.to_str().unwrap(),
        &url,
        &["--summary-json", "s.json"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    assert_eq!(s["backfill"]["resumed"], true, "{s}");
    assert_eq!(s["backfill"]["runs"], 2, "{s}");
    let stats = server.shutdown();
    assert_eq!(
        stats.duplicate_message_ids, 0,
        "a drained stop replays nothing"
    );
    assert_eq!(
        message_ids(&recorded_calls(&record)).len() as u64,
        g.rows - g.bad_rows.len() as u64
    );
    // One backfill in the state directory, not two.
    let _ = backfill_dir(w.dir());
}

/// An NDJSON backfill, then a Parquet one, in the same directory with the default
/// paths: both complete without `--restart` (the second used to be refused, and the
/// advised `--restart` emptied the first one's rejects); each keeps its own rejects, a
/// rerun of the first says it is complete, and `status` lists both.
#[test]
fn two_backfills_in_one_directory_both_complete_without_restart() {
    let w = Workdir::with_fixtures(&["typed.ndjson", "typed.parquet", "typed.toml"]);
    let (server, _record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let run_typed = |input: &str| {
        run(w.cmd().args([
            "run",
            input,
            "--mapping",
            "typed.toml",
            "--endpoint",
            &url,
            "-q",
        ]))
    };
    let o = run_typed("typed.ndjson");
    assert_eq!(o.status.code(), Some(3), "row 14 has no id: {}", stderr(&o));
    let state = w.path(".cdp-backfill");
    let first: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
    assert_eq!(first.len(), 1);
    let first_dir = first.into_iter().next().unwrap().unwrap().path();
    let first_rejects = std::fs::read(first_dir.join("rejects.ndjson")).unwrap();
    assert_eq!(first_rejects.iter().filter(|&&b| b == b'\n').count(), 1);

    let o = run_typed("typed.parquet");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 2);
    assert_eq!(
        std::fs::read(first_dir.join("rejects.ndjson")).unwrap(),
        first_rejects,
        "the first backfill's rejects are untouched"
    );
    let sent = server.stats().requests;
    let o = run(w.cmd().args([
        "run",
        "typed.ndjson",
        "--mapping",
        "typed.toml",
        "--endpoint",
        &url,
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("already complete"), "{}", stderr(&o));
    assert_eq!(server.stats().requests, sent, "nothing sent again");

    let o = run(w.cmd().arg("status"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains("backfills in .cdp-backfill (2)"), "{text}");
    assert_eq!(text.matches("typed-").count(), 2, "{text}");
    assert_eq!(text.matches("complete").count(), 2, "{text}");
    assert!(text.contains("inputs: typed.ndjson") && text.contains("inputs: typed.parquet"));
    // One of them by name.
    let name = first_dir.file_name().unwrap().to_str().unwrap();
    let o = run(w.cmd().args(["status", name]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("every input is done"));
    server.shutdown();
}

/// `--restart` never empties or replaces what another backfill's checkpoint counts: an
/// explicit checkpoint of another backfill is refused, and so is a rejects file another
/// checkpoint counts. In the state directory, `--restart` of a backfill sets its old state
/// aside (kept, listed) and leaves the other backfills alone.
#[test]
fn restart_refuses_to_empty_another_backfills_rejects() {
    let w = Workdir::with_fixtures(&["typed.ndjson", "typed.parquet", "typed.toml"]);
    let (server, _record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let typed = |input: &str, extra: &[&str]| {
        run(w
            .cmd()
            .args([
                "run",
                input,
                "--mapping",
                "typed.toml",
                "--endpoint",
                &url,
                "-q",
            ])
            .args(extra))
    };
    // The first backfill, at the old default paths.
    let old = ["--checkpoint", "cdp-backfill.checkpoint.json"];
    assert_eq!(typed("typed.ndjson", &old).status.code(), Some(3));
    let rejects = std::fs::read(w.path("cdp-backfill.rejects.ndjson")).unwrap();
    let checkpoint = std::fs::read(w.path("cdp-backfill.checkpoint.json")).unwrap();
    assert!(!rejects.is_empty());

    // Another backfill told to restart over it: refused, nothing touched.
    let o = typed("typed.parquet", &[&old[..], &["--restart"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("which records another backfill"),
        "{}",
        stderr(&o)
    );
    // Another backfill told to write its rejects into the first one's file: refused.
    let o = typed(
        "typed.parquet",
        &["--rejects", "cdp-backfill.rejects.ndjson", "--restart"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("counts, and this run would start that file afresh"));
    assert_eq!(
        std::fs::read(w.path("cdp-backfill.rejects.ndjson")).unwrap(),
        rejects
    );
    assert_eq!(
        std::fs::read(w.path("cdp-backfill.checkpoint.json")).unwrap(),
        checkpoint
    );

    // In the state directory: a backfill, restarted; its old state is kept and listed.
    assert_eq!(typed("typed.parquet", &[]).status.code(), Some(3));
    let dir = backfill_dir(w.dir());
    let before = std::fs::read(dir.join("rejects.ndjson")).unwrap();
    let o = typed("typed.parquet", &["--restart"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let kept: Vec<_> = std::fs::read_dir(w.path(".cdp-backfill"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".restarted-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(kept[0].join("rejects.ndjson")).unwrap(),
        before
    );
    let o = run(w.cmd().arg("status"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("set aside by --restart"));
    // The first backfill is as it was.
    assert_eq!(
        std::fs::read(w.path("cdp-backfill.rejects.ndjson")).unwrap(),
        rejects
    );
    server.shutdown();
}

/// A checkpoint of the format before content identities (version 1: no seeds, ids from
/// the path as typed), at the old default path, is found by a run without
/// `--checkpoint` and resumed with the ids it started with. The version 1 file is built
/// from a checkpoint of this very code, as the old code wrote them.
#[test]
fn a_version_1_checkpoint_resumes_with_the_ids_it_started_with() {
    let w = Workdir::new();
    let g = cdp_backfill::generate::generate_file(&w.path("events.csv"), 20_000, 5).unwrap();
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let old = ["--checkpoint", "cdp-backfill.checkpoint.json"];
    let slow = ["--rate", "5", "--concurrency", "1"];
    let child = backfill(w.dir(), "events.csv", &url, &[&old[..], &slow].concat())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    interrupt(child.id());
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let path = w.path("cdp-backfill.checkpoint.json");
    let mut cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let resume_row = cp["resume"]["row"].as_u64().unwrap();
    assert!(resume_row > 0 && resume_row < 20_000);
    // What version 1 wrote: no seeds, no backfill, no identities.
    cp["version"] = 1.into();
    let o = cp.as_object_mut().unwrap();
    o.remove("seeds");
    o.remove("backfill");
    for f in cp["inputs"].as_array_mut().unwrap() {
        let f = f.as_object_mut().unwrap();
        f.remove("identity");
        f.remove("seed");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&cp).unwrap()).unwrap();
    let before = recorded_calls(&record).len();

    let out = run(&mut backfill(w.dir(), "events.csv", &url, &[]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Resumed where it is (-q: no note), not a new backfill in the state directory.
    assert!(
        !w.path(".cdp-backfill").exists()
            || std::fs::read_dir(w.path(".cdp-backfill"))
                .unwrap()
                .next()
                .is_none()
    );
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(after["complete"], true);
    assert_eq!(
        after["seeds"], "path",
        "it keeps the scheme it started with"
    );
    assert_eq!(after["version"], 2);
    server.shutdown();
    // Every call of this run has the old scheme's id: the path as typed.
    let seed = input_seed("", "events.csv");
    let bad: HashSet<u64> = g.bad_rows.iter().map(|(r, _)| *r).collect();
    let expected: HashSet<String> = (resume_row..g.rows)
        .filter(|r| !bad.contains(r))
        .map(|r| message_id(seed, r, 0))
        .collect();
    let got = message_ids(&recorded_calls(&record)[before..]);
    assert!(
        got == expected,
        "{} ids received, {} expected, {} in common",
        got.len(),
        expected.len(),
        got.intersection(&expected).count()
    );
}
