//! One identify per person from an events table (issue 21, item 4), with real processes
//! and the local receiver: a plan's step with `derive = { identify_per, latest_by }` (or
//! `first_by`) sends exactly one identify per distinct user id, with the traits of that
//! user's latest (first) row, checked against a brute-force pass over the same rows,
//! with a memory budget small enough that the sort spills runs to disk; the same events
//! in another order give the same messageIds; a derivation killed mid-send resumes over
//! the derived file it made, to the same calls.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const MAPPING: &str = r#"namespace = "acme"
[[call]]
type = "identify"
user_id = "user_id"
timestamp = "timestamp"
traits = { plan = "plan", last_event = "event" }
"#;

const PLAN: &str = r#"[[step]]
name = "latest"
inputs = ["events/"]
mapping = "people.toml"
derive = { identify_per = "user_id", latest_by = "timestamp", memory_mb = 16 }

[[step]]
name = "first"
inputs = ["events/"]
mapping = "people.toml"
derive = { identify_per = "user_id", first_by = "timestamp", memory_mb = 16 }
"#;

/// One event row: its line and the parts the brute force needs.
struct Event {
    line: String,
    user: Option<String>,
    ts: Option<i64>,
    event: String,
    plan: String,
}

/// `rows` events of `users` distinct users (some rows without a user id, some with a
/// bad timestamp), pseudo-random and reproducible.
fn events(rows: u64, users: u64) -> Vec<Event> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = 1_672_531_200_000i64; // 2023-01-01
    (0..rows)
        .map(|i| {
            let r = next();
            let user = (i % 97 != 5).then(|| format!("u-{}", r % users));
            let ts = (i % 89 != 3).then(|| base + (next() % 31_536_000) as i64 * 1000);
            let event = format!("Event {}", next() % 1000);
            let plan = format!("plan-{}", r % 7);
            let ts_text = ts.map_or_else(|| "yesterday".to_string(), cdp_backfill::timestamp::iso_millis);
            let uid = user
                .as_ref()
                .map_or_else(|| "null".to_string(), |u| format!("\"{u}\""));
            let line = format!(
                r#"{{"user_id":{uid},"timestamp":"{ts_text}","event":"{event}","plan":"{plan}","note":"row {i} of a longer export with some padding"}}"#
            );
            Event {
                line,
                user,
                ts,
                event,
                plan,
            }
        })
        .collect()
}

/// Each user's winning row: the greatest (latest) or least (first) (timestamp, line).
fn brute_force(rows: &[Event], latest: bool) -> HashMap<String, (String, String)> {
    let mut best: HashMap<&str, &Event> = HashMap::new();
    for e in rows {
        let (Some(u), Some(ts)) = (&e.user, e.ts) else {
            continue;
        };
        let better = match best.get(u.as_str()) {
            None => true,
            Some(b) => {
                let o = (ts, &e.line).cmp(&(b.ts.unwrap(), &b.line));
                if latest {
                    o.is_gt()
                } else {
                    o.is_lt()
                }
            }
        };
        if better {
            best.insert(u, e);
        }
    }
    best.into_iter()
        .map(|(u, e)| (u.to_string(), (e.event.clone(), e.plan.clone())))
        .collect()
}

/// `dir/events/part-N.ndjson` (the rows in `parts` files, in order), the mapping and
/// the plan.
fn write_export(dir: &Path, rows: &[&Event], parts: usize) {
    std::fs::create_dir_all(dir.join("events")).unwrap();
    for (n, part) in rows.chunks(rows.len().div_ceil(parts)).enumerate() {
        let f = std::fs::File::create(dir.join(format!("events/part-{n}.ndjson"))).unwrap();
        let mut f = std::io::BufWriter::new(f);
        for e in part {
            writeln!(f, "{}", e.line).unwrap();
        }
        f.flush().unwrap();
    }
    std::fs::write(dir.join("people.toml"), MAPPING).unwrap();
    std::fs::write(dir.join("plan.toml"), PLAN).unwrap();
}

fn identifies(calls: &[serde_json::Value]) -> HashMap<String, (String, String)> {
    calls
        .iter()
        .filter(|c| c["type"] == "identify")
        .map(|c| {
            (
                c["userId"].as_str().unwrap().to_string(),
                (
                    c["traits"]["last_event"].as_str().unwrap().to_string(),
                    c["traits"]["plan"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// 300,000 rows of 60,000 users, under a 16 MiB budget (the sort spills runs): the
/// `latest` step sends one identify per user with the traits of that user's latest row,
/// the `first` step those of the first, both exactly the brute force's; rows without a
/// user id or a timestamp are left out and counted.
#[test]
fn one_identify_per_user_with_the_latest_or_first_rows_traits_exactly() {
    let rows = events(300_000, 60_000);
    let w = Workdir::new();
    write_export(w.dir(), &rows.iter().collect::<Vec<_>>(), 3);
    let (server, record) = receiver(w.dir(), Default::default());
    let o = run(w.cmd().args([
        "run",
        "plan.toml",
        "--endpoint",
        &server.base_url(),
        "--summary-json",
        "s.json",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(text.contains("sorted in"), "spilled to disk: {text}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    let d = &s["steps"][0]["derived"]["stats"];
    assert_eq!(d["rows_read"], 300_000, "{s}");
    assert!(d["spilled_runs"].as_u64().unwrap() >= 2, "{s}");
    let without_key = rows.iter().filter(|e| e.user.is_none()).count() as u64;
    assert_eq!(d["rows_without_key"], without_key, "{s}");
    server.shutdown();

    let calls = recorded_calls(&record);
    let (latest, first) = calls.split_at(calls.len() / 2);
    let want_latest = brute_force(&rows, true);
    let want_first = brute_force(&rows, false);
    assert_eq!(d["keys"], want_latest.len() as u64);
    assert_eq!(latest.len(), want_latest.len(), "one identify per user");
    assert!(identifies(latest) == want_latest, "the latest rows' traits");
    assert_eq!(first.len(), want_first.len());
    assert!(identifies(first) == want_first, "the first rows' traits");
    assert_ne!(
        want_latest, want_first,
        "the two picks differ on this input"
    );
    assert_eq!(message_ids(&calls).len(), calls.len(), "every id once");
}

/// The same events in reverse order and other files ("another machine"): the same
/// derived rows and messageIds. A run killed (`kill -9`) while sending resumes over the
/// derived file it made ("derived earlier") and ends with the same calls.
#[test]
fn the_ids_do_not_depend_on_row_order_and_a_killed_step_resumes() {
    let rows = events(60_000, 20_000);
    let (a, b) = (Workdir::new(), Workdir::new());
    write_export(a.dir(), &rows.iter().collect::<Vec<_>>(), 2);
    write_export(b.dir(), &rows.iter().rev().collect::<Vec<_>>(), 5);
    let (server, record) = receiver(a.dir(), Default::default());
    let url = server.base_url();
    let plan = |w: &Workdir| {
        let mut c = w.cmd();
        c.args(["run", "plan.toml", "--endpoint", &url]).args([
            "--max-request-bytes",
            "20000",
            "--max-call-bytes",
            "8000",
        ]);
        c
    };
    let o = run(plan(&a).arg("-q"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reference = recorded_calls(&record);
    let want = message_ids(&reference);
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let mut child = plan(&b)
        .args(["--rate", "30"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&record) < reference.len() + 2_000 {
        assert!(child.try_wait().unwrap().is_none(), "ended too soon");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let o = run(&mut plan(&b));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("derived earlier"),
        "the resume reuses the derived file: {}",
        stderr(&o)
    );
    let got = recorded_calls(&record).split_off(reference.len());
    assert!(
        message_ids(&got) == want,
        "the same ids, whatever the order"
    );
    assert_eq!(identifies(&got), identifies(&reference));
    let stats = server.shutdown();
    assert_eq!(
        got.len() as u64 - (stats.duplicate_message_ids - reference.len() as u64),
        want.len() as u64,
        "only replays of the killed run arrive twice"
    );
}

/// A derive step naming a column its input lacks stops the plan, naming it, before
/// anything is sent (NDJSON has no header: the rows tell).
#[test]
fn a_derive_column_the_input_lacks_is_refused_before_sending() {
    let rows = events(100, 10);
    let w = Workdir::new();
    write_export(w.dir(), &rows.iter().collect::<Vec<_>>(), 1);
    std::fs::write(
        w.path("plan.toml"),
        PLAN.replace("latest_by = \"timestamp\"", "latest_by = \"updated_at\""),
    )
    .unwrap();
    let (server, _record) = receiver(w.dir(), Default::default());
    let o = run(w
        .cmd()
        .args(["run", "plan.toml", "--endpoint", &server.base_url()]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no row with both a user_id and a timestamp in updated_at"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("99 have no timestamp in updated_at"));
    assert_eq!(server.stats().requests, 0);
    server.shutdown();
}

/// The measurement behind BENCHMARKS.md: 1,000,000 distinct users (2,000,000 rows,
/// every one valid, each user twice), a dry run of a derive step with the default
/// budget, its peak RSS. The rows are written as they are made, so this process stays
/// small (a child's peak counts the parent's pages at the fork).
/// `cargo test --test derive one_million -- --ignored --nocapture`.
#[test]
#[ignore]
fn one_million_users_peak_rss() {
    let (rows, users) = (2_000_000u64, 1_000_000u64);
    let w = Workdir::new();
    std::fs::create_dir(w.path("events")).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for part in 0..4 {
        let f = std::fs::File::create(w.path(&format!("events/part-{part}.ndjson"))).unwrap();
        let mut f = std::io::BufWriter::new(f);
        for i in (part * rows / 4)..((part + 1) * rows / 4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ts = cdp_backfill::timestamp::iso_millis(
                1_672_531_200_000 + (x % 31_536_000_000) as i64,
            );
            writeln!(
                f,
                r#"{{"user_id":"u-{}","timestamp":"{ts}","event":"Event {}","plan":"plan-{}","note":"row {i} of a longer export with some padding"}}"#,
                (i * 7_919) % users,
                x % 1000,
                x % 7
            )
            .unwrap();
        }
        f.flush().unwrap();
    }
    std::fs::write(w.path("people.toml"), MAPPING).unwrap();
    std::fs::write(
        w.path("plan.toml"),
        PLAN.split("[[step]]\nname = \"first\"")
            .next()
            .unwrap()
            .replace(", memory_mb = 16", ""),
    )
    .unwrap();
    let own = own_rss_kib();
    let m = run_measured(
        w.cmd().args([
            "run",
            "plan.toml",
            "--dry-run",
            "--summary-json",
            "s.json",
            "-q",
        ]),
        Duration::from_secs(900),
    );
    assert_eq!(m.code(), Some(0));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    let d = &s["steps"][0]["derived"]["stats"];
    assert_eq!(d["keys"], users, "{s}");
    println!(
        "{users} users, {rows} rows: peak RSS {} MiB (this test process: {} MiB), {:.1} s, {} runs spilled",
        m.peak_rss_kib / 1024,
        own / 1024,
        m.elapsed.as_secs_f64(),
        d["spilled_runs"]
    );
}
