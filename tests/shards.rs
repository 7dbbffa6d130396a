//! `--shard K/N` (issue 22): N processes split the inputs into disjoint, contiguous
//! ranges whose union is exactly a single run, under a single run's messageIds.
//!
//! The inputs live in object storage (s3s-fs on 127.0.0.1, `tests/common/s3.rs`): a
//! large plain CSV whose quoted fields hold newlines (split at record boundaries found
//! by the parser), a gzip part (never split), a Parquet part of 8 row groups (split
//! between groups) and another plain CSV.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
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
    let groups = w.path("groups.parquet");
    events_parquet(&groups, 8_000, 8);
    c.put("s/part-0002.parquet", std::fs::read(&groups).unwrap());
    let more = w.generate("more.csv", 9_000, 6);
    c.put("s/part-0003.csv", std::fs::read(&more).unwrap());
    c.put("s/_SUCCESS", Vec::new());
    fixture("events.toml")
}

/// Events the fixture mapping reads, as Parquet of `rows` rows in `groups` row groups
/// (every 97th row has no user or anonymous id: rejected).
fn events_parquet(path: &Path, rows: usize, groups: usize) {
    use arrow_array::StringArray;
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    let text = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
        Arc::new((0..rows).map(f).collect::<StringArray>())
    };
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            text(&|i| (i % 97 != 0).then(|| format!("pq{i}"))),
        ),
        ("anonymous_id", text(&|_| None)),
        ("event", text(&|i| Some(format!("Parquet Event {}", i % 5)))),
        (
            "timestamp",
            text(&|i| Some(format!("2021-03-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60))),
        ),
        ("plan", text(&|i| Some(["free", "pro"][i % 2].to_string()))),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| i as f64 / 4.0),
            )),
        ),
        (
            "item_count",
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|i| (i % 9) as i64),
            )),
        ),
        (
            "is_trial",
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 3 == 0)))),
        ),
        (
            "description",
            text(&|i| Some(format!("row {i}, \"quoted\"\nline"))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows / groups))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut wr = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    wr.write(&batch).unwrap();
    wr.close().unwrap();
    let meta = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(path).unwrap(),
        )
        .unwrap(),
    )
    .clone();
    assert_eq!(meta.num_row_groups(), groups);
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

/// A dry run of the whole export: its bodies.
fn dry_run(w: &Workdir, server: &Server, mapping: &Path, extra: &[&str], out: &str) -> String {
    dry_run_of(w, server, "s3://exports/s/", mapping, extra, out)
}

fn dry_run_of(
    w: &Workdir,
    server: &Server,
    input: &str,
    mapping: &Path,
    extra: &[&str],
    out: &str,
) -> String {
    let out = w.path(out);
    let mut cmd = w.cmd();
    cmd.args(["run", input, "--dry-run", "--quiet", "--mapping"])
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
    // The calls of the big plain CSV alone.
    let big: HashSet<String> = calls(&dry_run_of(
        &w,
        &server,
        "s3://exports/s/part-0000.csv",
        &mapping,
        &["--rejects", "big-rejects.ndjson"],
        "big.ndjson",
    ))
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    // Which parts some N split between two shards or more.
    let (mut csv_split, mut parquet_split) = (false, false);
    for n in [2u32, 3, 4, 7] {
        let mut union: Vec<(String, serde_json::Value)> = Vec::new();
        let mut sizes = Vec::new();
        let (mut csv_shards, mut parquet_shards) = (0, 0);
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
            let event = |c: &serde_json::Value, p: &str| {
                c["event"].as_str().is_some_and(|e| e.starts_with(p))
            };
            parquet_shards += part.iter().any(|(_, c)| event(c, "Parquet Event")) as u32;
            csv_shards += part.iter().any(|(id, _)| big.contains(id)) as u32;
            union.extend(part);
        }
        eprintln!("N={n}: {sizes:?}, parquet in {parquet_shards} shards");
        parquet_split |= parquet_shards > 1;
        csv_split |= csv_shards > 1;
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
    assert!(
        parquet_split,
        "no N split the Parquet part between row groups"
    );
    assert!(csv_split);
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

/// Shard `k` of 4, its state under `state` (a directory or a bucket prefix).
fn shard_cmd(
    w: &Workdir,
    server: &Server,
    (base, state): (&str, &str),
    mapping: &Path,
    k: u32,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = w.cmd();
    cmd.args(["run", "s3://exports/s/", "--quiet", "--mapping"])
        .arg(mapping)
        .args(["--endpoint", base, "--checkpoint", state])
        .args(["--concurrency", "2", "--lease-ttl", "2"])
        // Requests of about 130 calls: many of them, and a small replay bound.
        .args(["--max-request-bytes", "50000"])
        .arg("--shard")
        .arg(format!("{k}/4"))
        .args(extra)
        .envs(Server::env(&server.endpoint()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The four shards of the export with their state in the bucket (what the Kubernetes Job
/// does): one killed with SIGKILL once it has delivered something, and run again (it
/// takes its dead predecessor's lease over after the ttl and resumes).
#[test]
fn four_shards_one_killed_and_rerun_deliver_every_call_once_but_the_replay_bound() {
    let w = Workdir::new();
    let server = Server::start();
    let mapping = export(&w, &server);
    let whole_bodies = dry_run(
        &w,
        &server,
        &mapping,
        &["--max-request-bytes", "50000"],
        "whole.ndjson",
    );
    let whole = calls(&whole_bodies);
    let expected: HashSet<String> = whole.iter().map(|(id, _)| id.clone()).collect();
    let per_request = whole_bodies.lines().map(|l| calls(l).len()).max().unwrap();
    let (receiver, record) = common::receiver(w.dir(), Default::default());
    let target = (receiver.base_url(), "s3://exports/state/");
    let target = (target.0.as_str(), target.1);
    // --rate 40 for the workspace: 10 requests a second each, slow enough to kill one.
    let mut children: Vec<(u32, Child)> = (0..4)
        .map(|k| {
            let c = shard_cmd(&w, &server, target, &mapping, k, &["--rate", "40"])
                .spawn()
                .unwrap();
            (k, c)
        })
        .collect();
    // Kill shard 1 once its checkpoint moved past its start.
    let client = server.client();
    let t = Instant::now();
    loop {
        let moved = client
            .get("state/shard-0001-of-0004.checkpoint.json")
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
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
    // The killed shard, run again, takes the lease over and resumes from its checkpoint.
    let out = common::run(&mut shard_cmd(&w, &server, target, &mapping, 1, &[]));
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
    // requests.
    let repeats: usize = got.values().map(|n| n - 1).sum();
    assert!(
        repeats <= 2 * 2 * per_request,
        "{repeats} repeats, more than 4 requests of {per_request} calls"
    );
    // Each shard's rejects are parts of its own; together, every rejected row once.
    let parts = client.list("state/");
    let mut rejected = HashSet::new();
    for p in parts.iter().filter(|p| p.contains(".rejects/")) {
        for l in String::from_utf8(client.get(p).unwrap()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let at = (v["source"].as_str().unwrap().to_string(), v["row"].as_u64());
            assert!(rejected.insert(at), "{l} rejected twice");
        }
    }
    let whole_rejects = common::read_lines(&w.path("cdp-backfill.rejects.ndjson"));
    assert_eq!(rejected.len(), whole_rejects.len(), "{parts:?}");
    // status combines the four checkpoints in the bucket.
    let out = common::run(
        w.cmd()
            .args(["status", "s3://exports/state/"])
            .envs(Server::env(&server.endpoint())),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert!(text.contains("4 of 4 shards have a checkpoint"), "{text}");
    assert!(text.contains("every shard is done"), "{text}");
    let delivered: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("calls delivered"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(delivered >= expected.len() as u64, "{text}");
}

/// `status` of shards whose state is on a local disk: a state directory, and the files
/// beside a `--checkpoint FILE`; a missing shard is named.
#[test]
fn status_combines_the_shard_checkpoints_of_a_directory_or_beside_a_file() {
    let w = Workdir::new();
    std::fs::create_dir(w.path("state")).unwrap();
    let server = Server::start();
    let mapping = export(&w, &server);
    // Every shard has rejected rows: exit 3, or what --rejects-exit-code says (0 in the
    // Kubernetes Job, which would retry a 3).
    for (state, shards, code) in [
        ("state/", [0u32, 1, 2, 3], 0),
        ("run.json", [0, 1, 3, 3], 3),
    ] {
        for k in shards {
            let exit = code.to_string();
            let extra = ["--rejects-exit-code", exit.as_str()];
            let extra = if code == 0 { &extra[..] } else { &[] };
            let o = common::run(&mut shard_cmd(
                &w,
                &server,
                ("local", state),
                &mapping,
                k,
                extra,
            ));
            assert_eq!(o.status.code(), Some(code), "{}", common::stderr(&o));
        }
        let out = common::run(w.cmd().args(["status", state]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
        match state {
            "state/" => {
                assert!(text.contains("4 of 4 shards have a checkpoint"), "{text}");
                assert!(text.contains("every shard is done"), "{text}");
            }
            _ => {
                assert!(text.contains("3 of 4 shards have a checkpoint"), "{text}");
                assert!(
                    text.contains("shards not started (no checkpoint): 2"),
                    "{text}"
                );
                assert!(w.path("run.shard-0003-of-0004.json").is_file());
            }
        }
    }
}

/// `--rate` and `--events-rate` are the workspace's budget: a shard refuses one too small
/// to share, naming it, before anything is read.
#[test]
fn a_rate_below_the_number_of_shards_is_refused() {
    let w = Workdir::new();
    for (flag, value) in [("--rate", "3"), ("--events-rate", "2")] {
        let o = common::run(
            w.cmd()
                .args([
                    "run",
                    "nothing.csv",
                    "--endpoint",
                    "local",
                    "--shard",
                    "1/4",
                ])
                .arg("--mapping")
                .arg(fixture("events.toml"))
                .args([flag, value]),
        );
        assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
        let err = common::stderr(&o);
        assert!(
            err.contains(&format!(
                "{flag} {value} is the whole workspace's budget, shared by 4 shards"
            )),
            "{err}"
        );
    }
}
