//! `--shard K/N` (issue 22): N processes split the inputs into disjoint, contiguous
//! ranges whose union is exactly a single run, under a single run's messageIds.
//!
//! The inputs live in object storage (s3s-fs on 127.0.0.1, `tests/common/s3.rs`): a
//! large plain CSV whose quoted fields hold newlines (split at record boundaries found
//! by the parser), a gzip part (never split), Parquet parts (split between row groups).

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, Workdir};
use s3::Server;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An export in the server's bucket under `s/`; the mapping that reads all of it.
fn export(w: &Workdir, server: &Server) -> std::path::PathBuf {
    let c = server.client();
    let big = w.generate("big.csv", 24_000, 9);
    c.put("s/part-0000.csv", std::fs::read(&big).unwrap());
    let small = w.generate("small.csv", 3_000, 4);
    c.put("s/part-0001.csv.gz", gzip(&std::fs::read(&small).unwrap()));
    let more = w.generate("more.csv", 9_000, 6);
    c.put("s/part-0002.csv", std::fs::read(&more).unwrap());
    c.put("s/_SUCCESS", Vec::new());
    fixture("events.toml")
}

/// Every call of `bodies` (request bodies, one per line), by messageId.
fn calls(bodies: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for l in bodies.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for c in v["batch"].as_array().unwrap() {
            out.push((c["messageId"].as_str().unwrap().to_string(), c.clone()));
        }
    }
    out
}

fn dry_run(w: &Workdir, server: &Server, mapping: &Path, extra: &[&str], out: &str) -> String {
    let out = w.path(out);
    let mut cmd = w.cmd();
    cmd.args([
        "run",
        "s3://exports/s/",
        "--dry-run",
        "--quiet",
        "--mapping",
    ])
    .arg(mapping)
    .arg("--output")
    .arg(&out)
    .args(extra)
    .envs(Server::env(&server.endpoint()));
    let o = common::run(&mut cmd);
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{extra:?}: {}",
        common::stderr(&o)
    );
    std::fs::read_to_string(&out).unwrap_or_default()
}

#[test]
fn shards_of_a_dry_run_add_up_to_the_single_run_exactly() {
    let w = Workdir::new();
    let server = Server::start();
    let mapping = export(&w, &server);
    let whole = calls(&dry_run(&w, &server, &mapping, &[], "whole.ndjson"));
    assert!(whole.len() > 30_000, "{}", whole.len());
    for n in [2u32, 3, 4, 7] {
        let mut union: Vec<(String, serde_json::Value)> = Vec::new();
        let mut sizes = Vec::new();
        for k in 0..n {
            let shard = format!("{k}/{n}");
            let part = calls(&dry_run(
                &w,
                &server,
                &mapping,
                &[
                    "--shard",
                    &shard,
                    "--rejects",
                    &format!("rejects-{k}.ndjson"),
                ],
                &format!("shard-{k}.ndjson"),
            ));
            sizes.push(part.len());
            union.extend(part);
        }
        // Every call once, none twice, none new: the same ids, the same calls.
        assert_eq!(union.len(), whole.len(), "N={n}: shard sizes {sizes:?}");
        let by_id: HashMap<&str, &serde_json::Value> =
            whole.iter().map(|(id, c)| (id.as_str(), c)).collect();
        let mut seen = HashSet::new();
        for (id, c) in &union {
            assert!(seen.insert(id.clone()), "N={n}: {id} sent by two shards");
            assert_eq!(by_id.get(id.as_str()), Some(&c), "N={n}: {id} differs");
        }
        // Balanced by bytes, within the largest unit that cannot be split.
        assert!(sizes.iter().all(|&s| s > 0), "N={n}: {sizes:?}");
    }
}

/// The ids of every call a receiver recorded, with how often each came.
fn received(record: &Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for c in common::recorded_calls(record) {
        *m.entry(c["messageId"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

fn shard_cmd(
    w: &Workdir,
    server: &Server,
    base: &str,
    mapping: &Path,
    k: u32,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = w.cmd();
    cmd.args(["run", "s3://exports/s/", "--quiet", "--mapping"])
        .arg(mapping)
        .args([
            "--endpoint",
            base,
            "--checkpoint",
            "state/",
            "--concurrency",
            "2",
        ])
        .arg("--shard")
        .arg(format!("{k}/4"))
        .args(extra)
        .envs(Server::env(&server.endpoint()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn four_shards_one_killed_and_rerun_deliver_every_call_once_but_the_replay_bound() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("state")).unwrap();
    let server = Server::start();
    let mapping = export(&w, &server);
    let whole = calls(&dry_run(&w, &server, &mapping, &[], "whole.ndjson"));
    let expected: HashSet<String> = whole.iter().map(|(id, _)| id.clone()).collect();
    let (receiver, record) = common::receiver(w.dir(), Default::default());
    let base = receiver.base_url();
    // --rate 40 for the workspace: 10 requests a second each, slow enough to kill one.
    let mut children: Vec<(u32, Child)> = (0..4)
        .map(|k| {
            let c = shard_cmd(&w, &server, &base, &mapping, k, &["--rate", "40"])
                .spawn()
                .unwrap();
            (k, c)
        })
        .collect();
    // Kill shard 1 once its checkpoint moved past its start.
    let cp = w.path("state/shard-0001-of-0004.checkpoint.json");
    let t = Instant::now();
    loop {
        let moved = std::fs::read_to_string(&cp)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["counters"]["calls_delivered"].as_u64().unwrap_or(0) > 0);
        if moved {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "shard 1 never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = &mut children[1].1;
    killed.kill().unwrap(); // SIGKILL
    let _ = killed.wait();
    for (k, c) in children.iter_mut().filter(|(k, _)| *k != 1) {
        let out = c.wait().unwrap();
        assert!(matches!(out.code(), Some(0 | 3)), "shard {k}: {out:?}");
    }
    // The killed shard, run again, resumes from its checkpoint.
    let out = common::run(&mut shard_cmd(&w, &server, &base, &mapping, 1, &[]));
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        common::stderr(&out)
    );
    let got = received(&record);
    let got_ids: HashSet<String> = got.keys().cloned().collect();
    assert_eq!(got_ids.len(), expected.len());
    assert!(
        got_ids == expected,
        "the union is not the single run's set of messageIds"
    );
    // Repeats: only from the killed shard, at most its window of 2 x concurrency
    // requests of at most 500 calls each (and each repeat carries its first id).
    let repeats: usize = got.values().map(|n| n - 1).sum();
    assert!(repeats <= 2 * 2 * 500, "{repeats} repeats");
    // status combines the four checkpoints.
    let out = common::run(w.cmd().args(["status", "state/"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 of 4 shards have a checkpoint"), "{text}");
    assert!(text.contains("every shard is done"), "{text}");
    let delivered: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("calls delivered"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(delivered >= expected.len() as u64, "{text}");
}
