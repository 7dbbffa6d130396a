//! A file the run writes fills up: the run stops (exit 1) naming the file and the cause,
//! and, once there is room again, the same command resumes and ends exact: every valid
//! call delivered (under the messageId it always had), every rejected row in the rejects
//! file once.
//!
//! The failure is the kernel's own: the child runs under `RLIMIT_FSIZE` with SIGXFSZ
//! ignored, so a write past the limit fails with EFBIG ("File too large"), as a write to a
//! full disk fails with ENOSPC. No privileges are needed, and no test is skipped. Each
//! write site is covered: the rejects file (it used to leave a checkpoint counting reject
//! bytes that were never written, so every later run refused: "shorter than the
//! checkpoint recorded"), the checkpoint (its failure used to be reported under the
//! rejects file's name), `--output`, `--summary-json` and `--report`.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use cdp_backfill::checkpoint::Checkpoint;
use cdp_backfill::serve::Faults;
use common::Workdir;

mod common;

/// `cmd`, run with every file it writes limited to `bytes` (RLIMIT_FSIZE), SIGXFSZ
/// ignored so that a write past it fails instead of killing the process.
fn limited(cmd: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: between fork and exec the closure only makes two async-signal-safe system
    // calls on values it owns.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        })
    }
}

/// `rows` rows: with `rejects`, every fifth without a user id and with a 30 kB note (a reject whose line
/// carries the whole record, so one request's reject lines together pass the 64 KiB the
/// collector buffers, and go to the file in one write), the others valid track calls.
fn input(w: &Workdir, rows: usize, rejects: bool) {
    let mut csv = String::from("user_id,event,timestamp,note\n");
    for i in 0..rows {
        let (uid, note) = if rejects && i % 5 == 1 {
            (String::new(), format!("{i:06}{}", "n".repeat(30_000)))
        } else {
            (format!("u{i}"), String::new())
        };
        csv.push_str(&format!("{uid},Viewed,2024-05-01T10:00:00Z,{note}\n"));
    }
    w.write("in.csv", csv);
    w.write(
        "in.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\nproperties = \"rest\"\n",
    );
}

/// `run in.csv` to `url` with small requests, so there are many checkpoints.
fn backfill(w: &Workdir, url: &str) -> Command {
    let mut c = w.cmd();
    c.args(["run", "in.csv", "--mapping", "in.toml", "--endpoint", url])
        .args(["--max-request-bytes", "4000", "--max-call-bytes", "3000"])
        .args(["--rate", "100000", "-q"])
        // Pinned: the bound on what a resume sends again is the durable window, 2 x the
        // concurrency, and `auto` may raise the concurrency as far as 256.
        .args(["--concurrency", "8"]);
    c
}

/// The messageIds and the rejected rows (1-based) a dry run of the same input makes.
fn expected(w: &Workdir) -> (HashSet<String>, Vec<u64>) {
    let o = common::run(w.cmd().args([
        "run",
        "in.csv",
        "--mapping",
        "in.toml",
        "--dry-run",
        "-q",
        "--max-request-bytes",
        "4000",
        "--max-call-bytes",
        "3000",
        "--output",
        "dry.ndjson",
        "--rejects",
        "dry.rejects.ndjson",
    ]));
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}",
        common::stderr(&o)
    );
    let ids = common::read_lines(&w.path("dry.ndjson"))
        .iter()
        .flat_map(|b| b["batch"].as_array().unwrap().clone())
        .map(|c| c["messageId"].as_str().unwrap().to_string())
        .collect();
    (ids, rejected_rows(&w.path("dry.rejects.ndjson")))
}

fn rejected_rows(p: &Path) -> Vec<u64> {
    let mut rows: Vec<u64> = common::read_lines(p)
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    rows.sort_unstable();
    rows
}

/// Every row appears once: no reject line twice, none missing.
fn assert_once_each(got: &[u64], want: &[u64]) {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for r in got {
        *counts.entry(*r).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "rejected rows written more than once: {twice:?}"
    );
    assert_eq!(
        got, want,
        "the rejects file holds other rows than a dry run rejects"
    );
}

fn checkpoint(w: &Workdir) -> Checkpoint {
    serde_json::from_slice(&std::fs::read(cp_path(w)).unwrap()).unwrap()
}

/// The checkpoint and the rejects file of the test's one backfill, in the state
/// directory.
fn cp_path(w: &Workdir) -> std::path::PathBuf {
    common::backfill_dir(w.dir()).join("checkpoint.json")
}

fn rejects_path(w: &Workdir) -> std::path::PathBuf {
    common::backfill_dir(w.dir()).join("rejects.ndjson")
}

fn assert_stopped_naming(o: &Output, file: &str) {
    let err = common::stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot write {file}")) && err.contains("File too large"),
        "the message names {file} and the cause: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_full_rejects_file_stops_the_run_and_the_same_command_resumes_exact() {
    let w = Workdir::new();
    input(&w, 1_200, true);
    let (want_ids, want_rejects) = expected(&w);
    assert_eq!(want_rejects.len(), 240);
    let (server, record) = common::receiver(w.dir(), Faults::default());
    // About 7 MB of reject lines against a 1 MiB limit.
    let o = common::run(limited(&mut backfill(&w, &server.base_url()), 1 << 20));
    let rejects = rejects_path(&w);
    assert_stopped_naming(&o, &format!("--rejects {}", ".cdp-backfill/"));
    assert!(common::stderr(&o).contains("/rejects.ndjson"));
    let on_disk = std::fs::metadata(&rejects).unwrap().len();
    let cp = checkpoint(&w);
    assert!(
        cp.rejects_len <= on_disk && cp.rejects_len <= 1 << 20,
        "the checkpoint counts {} bytes of rejects, {on_disk} are on disk",
        cp.rejects_len
    );
    assert!(!cp.complete);

    // Room again: the same command resumes (it used to refuse forever) and ends exact.
    let o = common::run(&mut backfill(&w, &server.base_url()));
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(common::stderr(&o).is_empty(), "{}", common::stderr(&o));
    assert!(checkpoint(&w).complete);
    let calls = common::recorded_calls(&record);
    assert_eq!(
        common::message_ids(&calls),
        want_ids,
        "every valid call, none other"
    );
    assert_once_each(&rejected_rows(&rejects), &want_rejects);
    // What was sent twice is only what the server accepted after the last checkpoint
    // before the failure: the durable window (2 x --concurrency requests) bounds it.
    assert!(
        calls.len() - want_ids.len() <= 16 * 40,
        "{} calls sent again",
        calls.len() - want_ids.len()
    );
    server.shutdown();
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_naming_it_and_the_run_resumes_exact() {
    let w = Workdir::new();
    // No rejects: the checkpoint is the only file that grows.
    input(&w, 2_000, false);
    let (want_ids, want_rejects) = expected(&w);
    let (server, record) = common::receiver(w.dir(), Faults::default());
    // The first checkpoint, written before anything is sent, is the smallest one: its
    // position, rejects length and counters are zero. Find its size from a finished
    // run's.
    let o = common::run(&mut backfill(&w, &server.base_url()));
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let mut first = checkpoint(&w);
    first.resume = Default::default();
    first.complete = false;
    first.drained = false;
    first.rejects_len = 0;
    first.input_rows = vec![0; first.input_rows.len()];
    first.counters = cdp_backfill::checkpoint::Counters {
        runs: 1,
        ..Default::default()
    };
    let first_len = serde_json::to_vec_pretty(&first).unwrap().len() as u64 + 1;
    for f in [cp_path(&w), rejects_path(&w), w.path("received.ndjson")] {
        std::fs::remove_file(f).unwrap();
    }
    // A fresh receiver, recording afresh (the old one holds the removed record open).
    drop(server);
    let (server, _) = common::receiver(w.dir(), Faults::default());

    // Every later checkpoint is longer: its resume offset alone has two digits more.
    let o = common::run(limited(
        &mut backfill(&w, &server.base_url()),
        first_len + 1,
    ));
    assert_stopped_naming(&o, "checkpoint .cdp-backfill/");
    assert!(
        !common::stderr(&o).contains("rejects"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(
        std::fs::read(cp_path(&w)).unwrap().len() as u64,
        first_len,
        "the first checkpoint stands"
    );

    let o = common::run(&mut backfill(&w, &server.base_url()));
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(checkpoint(&w).complete);
    let calls = common::recorded_calls(&record);
    assert_eq!(common::message_ids(&calls), want_ids);
    assert_once_each(&rejected_rows(&rejects_path(&w)), &want_rejects);
    server.shutdown();
}

#[test]
fn a_full_output_file_stops_a_dry_run_naming_it() {
    let w = Workdir::new();
    input(&w, 600, true);
    let o = common::run(limited(
        w.cmd().args([
            "run",
            "in.csv",
            "--mapping",
            "in.toml",
            "--dry-run",
            "-q",
            "--output",
            "bodies.ndjson",
            "--rejects",
            "/dev/null",
        ]),
        32 * 1024,
    ));
    assert_stopped_naming(&o, "--output bodies.ndjson");
}

/// The summary and the report are written as the run ends; with no room for them the
/// run says which and why, and the same command then writes them.
#[test]
fn a_summary_or_report_that_cannot_be_written_is_named() {
    let w = Workdir::new();
    let mut csv = String::from("user_id,event,timestamp\n");
    for i in 0..200 {
        csv.push_str(&format!("u{i},Viewed,2024-05-01T10:00:00Z\n"));
    }
    w.write("in.csv", csv);
    w.write(
        "in.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\n",
    );
    for (flag, file, limit) in [
        ("--summary-json", "s.json", 100),
        ("--report", "r.html", 4096),
    ] {
        let cmd = || {
            let mut c = w.cmd();
            c.args([
                "run",
                "in.csv",
                "--mapping",
                "in.toml",
                "--endpoint",
                "local",
            ])
            .args(["--no-checkpoint", "-q", flag, file]);
            c
        };
        let o = common::run(limited(&mut cmd(), limit));
        assert_stopped_naming(&o, &format!("{flag} {file}"));
        let o = common::run(&mut cmd());
        assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
        assert!(std::fs::metadata(w.path(file)).unwrap().len() > limit);
    }
}
