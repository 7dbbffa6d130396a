//! Plan files (issue 21, item 3), with real processes and the local receiver: a
//! three-step migration (identify from a users CSV, group from a companies NDJSON with
//! an inline mapping, track from events Parquet) interrupted with Ctrl-C and then with
//! `kill -9` in its second step, resumed to the same calls as an uninterrupted run, each
//! step's calls after every call of the step before; `validate PLAN` and `run PLAN`
//! checking every step before anything is sent; overlapping steps; `status PLAN`; and
//! `inspect DIR --emit-plan`.

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PEOPLE: &str = r#"namespace = "acme"
[[call]]
type = "identify"
user_id = "user_id"
anonymous_id = "anonymous_id"
timestamp = "timestamp"
traits = { plan = "plan", country = "country" }
"#;

const PLAN: &str = r#"# The migration: people, their companies, then their events.
[[step]]
name = "people"
inputs = ["../export/users.csv"]
mapping = "people.toml"

[[step]]
name = "companies"
inputs = ["../export/companies.ndjson"]
[step.mapping]
namespace = "acme"
[[step.mapping.call]]
type = "group"
user_id = "user_id"
group_id = "company_id"
timestamp = "ts"
traits = { name = "name" }

[[step]]
name = "events"
inputs = ["../export/events/"]
mapping = "typed.toml"
"#;

/// `export/` (users.csv, companies.ndjson, events/typed.parquet) and `mig/` (the plan
/// and its mapping files) in `w`.
fn migration(w: &Workdir) {
    std::fs::create_dir_all(w.path("export/events")).unwrap();
    std::fs::create_dir(w.path("mig")).unwrap();
    cdp_backfill::generate::generate_file(&w.path("export/users.csv"), 3_000, 21).unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(w.path("export/companies.ndjson")).unwrap());
    for i in 0..12_000 {
        writeln!(
            f,
            r#"{{"company_id":"co-{}","user_id":"user-{i}","name":"Company {} with a longer name","ts":"2023-02-01T00:00:00Z"}}"#,
            i % 700,
            i % 700
        )
        .unwrap();
    }
    f.flush().unwrap();
    std::fs::copy(
        fixture("typed.parquet"),
        w.path("export/events/typed.parquet"),
    )
    .unwrap();
    std::fs::copy(fixture("typed.toml"), w.path("mig/typed.toml")).unwrap();
    std::fs::write(w.path("mig/people.toml"), PEOPLE).unwrap();
    std::fs::write(w.path("mig/migration.toml"), PLAN).unwrap();
}

/// `run mig/migration.toml` in `w` against `url`, slow enough to interrupt (`--rate
/// 40`) unless `extra` sets the rate.
fn plan_run(w: &Workdir, url: &str, extra: &[&str]) -> Command {
    let mut c = w.cmd();
    c.args(["run", "mig/migration.toml", "--endpoint", url])
        .args([
            "--max-request-bytes",
            "20000",
            "--max-call-bytes",
            "8000",
            "--concurrency",
            "2",
        ])
        .args(extra);
    if !extra.contains(&"--rate") {
        c.args(["--rate", "40"]);
    }
    c
}

/// The messageIds of each call type in a record, and the calls in arrival order.
fn by_type(calls: &[serde_json::Value], kind: &str) -> HashSet<String> {
    calls
        .iter()
        .filter(|c| c["type"] == kind)
        .map(|c| c["messageId"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the record holds `n` complete lines of calls of `kind`.
fn wait_for(record: &Path, kind: &str, n: usize, child: &mut Child) {
    let needle = format!("\"type\":\"{kind}\"");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(record).unwrap_or_default();
        let complete = text.rsplit_once('\n').map_or("", |(a, _)| a);
        if complete.lines().filter(|l| l.contains(&needle)).count() >= n {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {n} {kind} calls arrived"
        );
        assert!(Instant::now() < deadline, "no {kind} calls in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The plan run uninterrupted in one directory, and in another (another "machine")
/// interrupted twice in its second step (Ctrl-C, then `kill -9`) and resumed: the same
/// calls arrive (the same messageIds, content-based); every identify before every
/// group, every group before every track; the resumed run says step 1 is complete, the
/// summary shows each step and the total, `status PLAN` and `status` list the steps.
#[test]
fn a_three_step_plan_interrupted_and_killed_in_its_second_step_resumes_exact_and_in_order() {
    // The reference: uninterrupted.
    let reference = Workdir::new();
    migration(&reference);
    let (server, record) = receiver(reference.dir(), Default::default());
    let url = server.base_url();
    let o = run(&mut plan_run(&reference, &url, &["-q", "--rate", "1000"]));
    assert_eq!(o.status.code(), Some(3), "rows without ids: {}", stderr(&o));
    server.shutdown();
    let want = recorded_calls(&record);
    let (people, companies, events) = (
        by_type(&want, "identify"),
        by_type(&want, "group"),
        by_type(&want, "track"),
    );
    assert!(people.len() > 2_900, "{}", people.len());
    assert_eq!(companies.len(), 12_000);
    assert_eq!(
        events.len(),
        39,
        "typed.parquet: 40 rows, one without an id"
    );
    assert_eq!(want.len(), people.len() + companies.len() + events.len());

    // Interrupted (Ctrl-C, then kill -9) in the companies step, and resumed.
    let w = Workdir::new();
    migration(&w);
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let mut child = plan_run(&w, &url, &["-q"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&record, "group", 100, &mut child);
    interrupt(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(130), "Ctrl-C in step 2");
    let mut child = plan_run(&w, &url, &["-q"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = std::fs::read_to_string(&record).unwrap().lines().count();
    wait_for(&record, "group", 3_000, &mut child);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(std::fs::read_to_string(&record).unwrap().lines().count() > before);
    let cp = w.path(".cdp-backfill/migration.companies/checkpoint.json");
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(cp).unwrap()).unwrap();
    assert_eq!(cp["complete"], false, "killed inside step 2: {cp}");

    let o = run(&mut plan_run(
        &w,
        &url,
        &["--summary-json", "s.json", "--rate", "1000"],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(
        text.contains("plan mig/migration.toml: step 1/3 people"),
        "{text}"
    );
    assert!(
        text.contains("already complete"),
        "step 1 is skipped: {text}"
    );
    let stats = server.shutdown();
    let got = recorded_calls(&record);
    assert_eq!(by_type(&got, "identify"), people, "the same ids, every one");
    assert_eq!(by_type(&got, "group"), companies);
    assert_eq!(by_type(&got, "track"), events);
    // Replays after kill -9 carry the ids they had; nothing else arrives twice.
    assert_eq!(
        got.len() as u64 - stats.duplicate_message_ids,
        want.len() as u64
    );
    // Each step after every call of the one before.
    let index = |kind: &str| -> Vec<usize> {
        got.iter()
            .enumerate()
            .filter(|(_, c)| c["type"] == kind)
            .map(|(i, _)| i)
            .collect()
    };
    let (i, g, t) = (index("identify"), index("group"), index("track"));
    assert!(
        i.last() < g.first(),
        "every identify before the first group"
    );
    assert!(g.last() < t.first(), "every group before the first track");

    // The plan's summary: each step and the total.
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    assert_eq!(s["outcome"], "completed", "{s}");
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["outcome"], "already complete");
    assert_eq!(steps[1]["outcome"], "completed");
    assert_eq!(steps[1]["backfill"], "migration.companies");
    assert_eq!(steps[1]["summary"]["backfill"]["resumed"], true);
    assert_eq!(steps[1]["summary"]["backfill"]["runs"], 3, "{s}");
    assert_eq!(steps[2]["outcome"], "completed");
    assert_eq!(s["total"]["steps_complete"], 3);
    assert_eq!(s["total"]["rows_done_all_runs"], 3_000 + 12_000 + 40);
    assert_eq!(
        s["total"]["calls_delivered_all_runs"].as_u64().unwrap(),
        // Calls a kill -9 left unacknowledged are counted when a resume delivers them.
        got.len() as u64 - stats.duplicate_message_ids,
        "{s}"
    );
    assert!(text.contains("3/3 complete"), "{text}");

    let o = run(w.cmd().args(["status", "mig/migration.toml"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("3/3 steps complete") && out.contains("every step is complete"),
        "{out}"
    );
    let o = run(w.cmd().arg("status"));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "migration.people",
        "migration.companies",
        "migration.events",
    ] {
        assert!(out.contains(name), "{out}");
    }
    // The inline mapping, written where the run reads it.
    assert!(w
        .path(".cdp-backfill/migration.companies.mapping.toml")
        .is_file());
}

/// A plan whose third step names a column its input lacks: `validate PLAN` reports
/// every step and exits 2 naming it; `run PLAN` refuses before its first step sends
/// anything; `status PLAN` says no step started.
#[test]
fn every_step_is_checked_before_anything_is_sent() {
    let w = Workdir::new();
    migration(&w);
    let broken = PLAN.replace("mapping = \"typed.toml\"", "mapping = \"people.toml\"");
    std::fs::write(w.path("mig/migration.toml"), broken).unwrap();
    let (server, _record) = receiver(w.dir(), Default::default());
    let url = server.base_url();

    let o = run(w.cmd().args(["validate", "mig/migration.toml"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}{}", stderr(&o));
    assert!(
        out.contains("== step 1/3 people") && out.contains("== step 2/3 companies"),
        "{out}"
    );
    assert!(stderr(&o).contains("step events:"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("country"),
        "names the column: {}",
        stderr(&o)
    );

    let o = run(&mut plan_run(&w, &url, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("step events"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Nothing was sent"), "{}", stderr(&o));
    assert_eq!(server.stats().requests, 0);
    let o = run(w.cmd().args(["status", "mig/migration.toml"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("0/3 steps complete") && out.contains("continues with step people"),
        "{out}"
    );

    // The fixed plan validates (rejects: exit 3) and runs.
    std::fs::write(w.path("mig/migration.toml"), PLAN).unwrap();
    let o = run(w.cmd().args(["validate", "mig/migration.toml"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("every step can run"), "{}", stderr(&o));
    server.shutdown();
}

/// `overlap = true`: the step runs together with the one before it; both complete, and
/// a rerun finds both complete.
#[test]
fn overlapping_steps_run_together_and_both_complete() {
    let w = Workdir::new();
    migration(&w);
    let plan = PLAN.replace(
        "name = \"companies\"",
        "name = \"companies\"\noverlap = true",
    );
    std::fs::write(w.path("mig/migration.toml"), plan).unwrap();
    let (server, record) = receiver(w.dir(), Default::default());
    let url = server.base_url();
    let o = run(&mut plan_run(
        &w,
        &url,
        &["--summary-json", "s.json", "--rate", "1000"],
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("step 2/3 companies (overlapping the step before)"));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    assert_eq!(s["total"]["steps_complete"], 3, "{s}");
    let calls = recorded_calls(&record);
    assert_eq!(by_type(&calls, "group").len(), 12_000);
    assert!(by_type(&calls, "identify").len() > 2_900);
    let o = run(&mut plan_run(&w, &url, &["-q"]));
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        recorded_calls(&record).len(),
        calls.len(),
        "nothing sent again"
    );
    server.shutdown();
}

/// Flags that belong to one backfill are refused with a plan; a mapping file given as
/// the input without `--mapping` is told apart from a plan.
#[test]
fn a_plan_refuses_one_backfills_flags_and_a_mapping_is_not_a_plan() {
    let w = Workdir::new();
    migration(&w);
    for flag in [
        &["--limit", "10"][..],
        &["--checkpoint", "c.json"],
        &["--rejects", "r.ndjson"],
    ] {
        let o = run(w
            .cmd()
            .args(["run", "mig/migration.toml", "--endpoint", "local"])
            .args(flag));
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("is not for a plan"), "{}", stderr(&o));
    }
    let o = run(w
        .cmd()
        .args(["run", "mig/people.toml", "--endpoint", "local"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("looks like a mapping file"),
        "{}",
        stderr(&o)
    );
    let o = run(w
        .cmd()
        .args(["run", "export/users.csv", "--endpoint", "local"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--mapping FILE is required"),
        "{}",
        stderr(&o)
    );
}

/// `inspect DIR --emit-plan` writes a plan with one step per kind of file (the users
/// CSV, the companies NDJSON, and two event CSVs of the same columns as one step), the
/// steps without an event column first, and a starter mapping for each; the plan
/// validates and runs; it never overwrites a file.
#[test]
fn inspect_emit_plan_writes_one_step_per_kind_of_file() {
    let w = Workdir::new();
    std::fs::create_dir_all(w.path("export/events")).unwrap();
    cdp_backfill::generate::generate_file(&w.path("export/events/2023.csv"), 500, 1).unwrap();
    cdp_backfill::generate::generate_file(&w.path("export/events/2024.csv"), 500, 2).unwrap();
    std::fs::write(
        w.path("export/users.csv"),
        "user_id,email,created_at\nu1,a@example.com,2023-01-01T00:00:00Z\nu2,b@example.com,2023-01-02T00:00:00Z\n",
    )
    .unwrap();
    std::fs::write(
        w.path("export/companies.ndjson"),
        "{\"id\":\"c1\",\"name\":\"One\"}\n{\"id\":\"c2\",\"name\":\"Two\"}\n",
    )
    .unwrap();
    let o = run(w
        .cmd()
        .args(["inspect", "export", "--emit-plan", "plan.toml"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = std::fs::read_to_string(w.path("plan.toml")).unwrap();
    let names: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("name = "))
        .collect();
    assert_eq!(names.len(), 3, "{plan}");
    assert_eq!(names[2], "\"events\"", "events last: {plan}");
    assert!(plan.contains("export/events/2023.csv") && plan.contains("export/events/2024.csv"));
    for n in &names {
        let n = n.trim_matches('"');
        assert!(w.path(&format!("plan.{n}.toml")).is_file(), "{n}: {plan}");
    }
    let o = run(w.cmd().args(["validate", "plan.toml"]));
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    let (server, _record) = receiver(w.dir(), Default::default());
    let o = run(w
        .cmd()
        .args(["run", "plan.toml", "-q", "--endpoint", &server.base_url()]));
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    assert!(server.stats().requests > 0);
    server.shutdown();
    // Never over a file.
    let before = std::fs::read(w.path("plan.toml")).unwrap();
    let o = run(w
        .cmd()
        .args(["inspect", "export", "--emit-plan", "plan.toml"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(w.path("plan.toml")).unwrap(), before);
}

/// A step's input options: a semicolon-separated CSV without a header row, read with
/// `delimiter = ";"` and `no_header = true` (columns 1, 2, 3), while the step before it
/// reads an ordinary CSV with the command line's options.
#[test]
fn a_steps_input_options_apply_to_that_step_only() {
    let w = Workdir::new();
    std::fs::write(
        w.path("users.csv"),
        "user_id,email\nu1,a@example.com\nu2,b@example.com\n",
    )
    .unwrap();
    std::fs::write(
        w.path("logins.txt"),
        "u1;Logged In;2023-01-01T00:00:00Z\nu2;Logged In;2023-01-02T00:00:00Z\nu1;Logged Out;2023-01-03T00:00:00Z\n",
    )
    .unwrap();
    std::fs::write(
        w.path("plan.toml"),
        r#"[[step]]
name = "users"
inputs = ["users.csv"]
[step.mapping]
[[step.mapping.call]]
type = "identify"
user_id = "user_id"
traits = { email = "email" }

[[step]]
name = "logins"
inputs = ["logins.txt"]
format = "csv"
delimiter = ";"
no_header = true
[step.mapping]
[[step.mapping.call]]
type = "track"
user_id = "1"
event = "2"
timestamp = "3"
"#,
    )
    .unwrap();
    let (server, record) = receiver(w.dir(), Default::default());
    let o = run(w
        .cmd()
        .args(["run", "plan.toml", "-q", "--endpoint", &server.base_url()]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    server.shutdown();
    let calls = recorded_calls(&record);
    let events: Vec<&str> = calls
        .iter()
        .filter(|c| c["type"] == "track")
        .map(|c| c["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["Logged In", "Logged In", "Logged Out"]);
    assert_eq!(calls.iter().filter(|c| c["type"] == "identify").count(), 2);
}
