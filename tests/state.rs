//! State in object storage (issue 22): `--checkpoint s3://…/` keeps the checkpoint and
//! the rejects (numbered create-only parts) in the bucket, the checkpoint object being a
//! lease written with conditional puts. Against s3s-fs on 127.0.0.1 (`tests/common/s3.rs`),
//! whose conditional PUTs the test wrapper makes atomic, as S3's are.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, Workdir};
use s3::Server;

fn cmd(w: &Workdir, server: &Server, base: &str, extra: &[&str]) -> Command {
    let mut c = w.cmd();
    c.args(["run", "s3://exports/in/", "--quiet", "--mapping"])
        .arg(fixture("events.toml"))
        .args([
            "--endpoint",
            base,
            "--checkpoint",
            "s3://exports/state/run-1/",
        ])
        .args(["--lease-ttl", "2", "--concurrency", "2"])
        // Small requests (about 130 calls), so that A is mid-way for a while at 5 a
        // second and the replay bound is a small part of the whole.
        .args(["--max-request-bytes", "50000"])
        .args(extra)
        .envs(Server::env(&server.endpoint()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn checkpoint(server: &Server) -> Option<serde_json::Value> {
    let bytes = server.client().get("state/run-1/checkpoint.json")?;
    serde_json::from_slice(&bytes).ok()
}

fn received(record: &std::path::Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for c in common::recorded_calls(record) {
        *m.entry(c["messageId"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn a_second_process_is_refused_a_dead_ones_lease_is_taken_over_and_the_union_is_exact() {
    let w = Workdir::new();
    let server = Server::start();
    let c = server.client();
    let csv = w.generate("events.csv", 12_000, 8);
    c.put("in/events.csv", std::fs::read(&csv).unwrap());
    // What a single local run sends, and rejects.
    let out = common::run(
        w.cmd()
            .args([
                "run",
                "events.csv",
                "--dry-run",
                "--quiet",
                "--output",
                "whole.ndjson",
                "--max-request-bytes",
                "50000",
            ])
            .arg("--mapping")
            .arg(fixture("events.toml"))
            .args(["--rejects", "local-rejects.ndjson"]),
    );
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let bodies: Vec<serde_json::Value> = std::fs::read_to_string(w.path("whole.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: HashSet<String> = bodies
        .iter()
        .flat_map(|v| {
            v["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["messageId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    // The replay bound: 2 × --concurrency requests sent but not yet checkpointed.
    let per_request = bodies
        .iter()
        .map(|v| v["batch"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert!(bodies.len() > 50, "{} requests", bodies.len());
    let (receiver, record) = common::receiver(w.dir(), Default::default());
    let base = receiver.base_url();

    // A: slow (5 requests a second), holds the lease.
    let mut a = cmd(&w, &server, &base, &["--rate", "5"]).spawn().unwrap();
    let t = Instant::now();
    let delivered = |v: &serde_json::Value| v["counters"]["calls_delivered"].as_u64().unwrap_or(0);
    while checkpoint(&server).is_none_or(|v| delivered(&v) == 0) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "A never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lease = checkpoint(&server).unwrap()["lease"].clone();
    assert_eq!(lease["generation"], 1, "{lease}");
    assert_eq!(lease["released"], false);

    // status reads it from the bucket, without taking the lease: A holds it.
    let st = common::run(
        w.cmd()
            .args(["status", "s3://exports/state/run-1/"])
            .envs(Server::env(&server.endpoint())),
    );
    assert_eq!(st.status.code(), Some(0), "{}", common::stderr(&st));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("a resume would continue s3://exports/in/events.csv")
            && text.contains("held by")
            && text.contains("(generation 1)"),
        "{text}"
    );

    // B on the same state while A runs: refused, after watching the lease move.
    let b = common::run(&mut cmd(&w, &server, &base, &[]));
    assert_eq!(b.status.code(), Some(2), "{}", common::stderr(&b));
    let err = common::stderr(&b);
    assert!(
        err.contains("running elsewhere")
            && err.contains("s3://exports/state/run-1/checkpoint.json"),
        "{err}"
    );

    // A dies without a word; C takes over once the lease stayed still for its ttl.
    a.kill().unwrap();
    let _ = a.wait();
    let t = Instant::now();
    let c_run = common::run(&mut cmd(&w, &server, &base, &[]));
    assert!(
        matches!(c_run.status.code(), Some(3)),
        "{}",
        common::stderr(&c_run)
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "took over before the ttl"
    );
    let cp = checkpoint(&server).unwrap();
    assert_eq!(cp["complete"], true);
    assert_eq!(cp["lease"]["generation"], 2, "{}", cp["lease"]);
    assert_eq!(cp["lease"]["released"], true);

    // Every call delivered; repeats only within A's replay window.
    let got = received(&record);
    let got_ids: HashSet<String> = got.keys().cloned().collect();
    assert!(
        got_ids == expected,
        "{} of {} ids",
        got_ids.len(),
        expected.len()
    );
    let repeats: usize = got.values().map(|n| n - 1).sum();
    assert!(
        repeats <= 2 * 2 * per_request,
        "{repeats} repeats, more than 4 requests of {per_request} calls"
    );

    // The rejects, as parts: every rejected row once, as a local run rejects them.
    let parts = c.list("state/run-1/rejects");
    assert!(!parts.is_empty());
    let mut rejected: Vec<u64> = Vec::new();
    for p in &parts {
        let text = String::from_utf8(c.get(p).unwrap()).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["source"], "s3://exports/in/events.csv", "{v}");
            rejected.push(v["row"].as_u64().unwrap());
        }
    }
    let local: Vec<u64> = common::read_lines(&w.path("local-rejects.ndjson"))
        .iter()
        .map(|v| v["row"].as_u64().unwrap())
        .collect();
    rejected.sort_unstable();
    assert_eq!(rejected, local);
    // The total the checkpoint counts is what the parts hold.
    let bytes: u64 = parts.iter().map(|p| c.get(p).unwrap().len() as u64).sum();
    assert_eq!(cp["rejects_len"].as_u64(), Some(bytes));

    // status of the checkpoint object itself; of a prefix holding none, a clear no.
    for (url, code) in [
        ("s3://exports/state/run-1/checkpoint.json", 0),
        ("s3://exports/state/run-2/", 1),
    ] {
        let st = common::run(
            w.cmd()
                .args(["status", url])
                .envs(Server::env(&server.endpoint())),
        );
        assert_eq!(st.status.code(), Some(code), "{}", common::stderr(&st));
        match code {
            0 => assert!(
                String::from_utf8_lossy(&st.stdout).contains("every input is done"),
                "{}",
                String::from_utf8_lossy(&st.stdout)
            ),
            _ => assert!(
                common::stderr(&st).contains("no checkpoint at s3://exports/state/run-2/"),
                "{}",
                common::stderr(&st)
            ),
        }
    }

    // Finished and released: the next run says so at once.
    let again = common::run(&mut cmd(&w, &server, &base, &[]));
    assert!(
        matches!(again.status.code(), Some(0 | 3)),
        "{}",
        common::stderr(&again)
    );
}
