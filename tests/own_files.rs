//! A run never reads, overwrites or shares the files it writes: an output that is an input,
//! the mapping or another output is refused before anything is touched; a directory input
//! leaves out the run's own checkpoint, rejects and summary; a rejects file that a
//! checkpoint counts is not cut by a run that is not resuming that checkpoint; and a second
//! run of the same command at the same time is refused.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The work dir: the events fixture and its mapping copied in, so every path the tool
/// writes is under it.
fn workdir() -> common::Workdir {
    common::Workdir::with_fixtures(&["events.csv", "events.toml"])
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    common::run(common::bin().current_dir(dir).args(args))
}

/// `run events.csv --mapping events.toml --endpoint local` and `extra`, in `dir`.
fn backfill(dir: &Path, extra: &[&str]) -> std::process::Output {
    run_in(dir, &[&BACKFILL[..], extra].concat())
}

const BACKFILL: [&str; 6] = [
    "run",
    "events.csv",
    "--mapping",
    "events.toml",
    "--endpoint",
    "local",
];

fn summary(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

#[test]
fn an_output_that_is_an_input_the_mapping_or_another_output_is_refused_untouched() {
    let d = workdir();
    let dir = d.dir();
    let csv = std::fs::read(dir.join("events.csv")).unwrap();
    let toml = std::fs::read(dir.join("events.toml")).unwrap();
    std::os::unix::fs::symlink("events.csv", dir.join("link.csv")).unwrap();
    std::fs::write(dir.join("events.toml.key"), "sk_test_key\n").unwrap();
    for (extra, says) in [
        (
            &["--rejects", "events.csv"][..],
            "--rejects events.csv is an input (events.csv)",
        ),
        (&["--rejects", "./events.csv"][..], "is an input ("),
        (
            &["--checkpoint", "events.csv", "--restart"][..],
            "--checkpoint events.csv is an input",
        ),
        (
            &["--rejects", "link.csv"][..],
            "--rejects link.csv is an input (events.csv)",
        ),
        (
            &["--rejects", "events.toml", "--no-checkpoint"][..],
            "is the mapping file",
        ),
        (
            &["--rejects", "ck.json", "--checkpoint", "ck.json"][..],
            "--checkpoint ck.json is also the --rejects file",
        ),
        (
            &["--summary-json", "r.ndjson", "--rejects", "r.ndjson"][..],
            "also the --rejects file",
        ),
        (
            &["--dry-run", "--output", "link.csv"][..],
            "--output link.csv is an input",
        ),
        // Files the run owns but does not write: its key file, an unused checkpoint.
        (
            &[
                "--rejects",
                "events.toml.key",
                "--api-key-file",
                "events.toml.key",
            ][..],
            "--rejects events.toml.key is the --api-key-file file",
        ),
        (
            &[
                "--dry-run",
                "--checkpoint",
                "ck.json",
                "--rejects",
                "ck.json",
            ][..],
            "is the --checkpoint file",
        ),
    ] {
        let o = backfill(dir, extra);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert_eq!(
            std::fs::read(dir.join("events.csv")).unwrap(),
            csv,
            "{extra:?}"
        );
        assert_eq!(
            std::fs::read(dir.join("events.toml")).unwrap(),
            toml,
            "{extra:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("events.toml.key")).unwrap(),
            "sk_test_key\n",
            "{extra:?}"
        );
        for f in [
            "cdp-backfill.checkpoint.json",
            "cdp-backfill.rejects.ndjson",
            "ck.json",
            "r.ndjson",
        ] {
            assert!(!dir.join(f).exists(), "{extra:?} wrote {f}");
        }
        assert!(
            !dir.join(".cdp-backfill").exists(),
            "{extra:?} made a state directory"
        );
    }
}

#[test]
fn devices_may_take_several_outputs() {
    let d = workdir();
    let o = backfill(
        d.dir(),
        &[
            "--dry-run",
            "--output",
            "/dev/null",
            "--rejects",
            "/dev/null",
            "--summary-json",
            "/dev/null",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
}

#[test]
fn a_directory_input_leaves_out_the_runs_own_files() {
    let d = common::Workdir::new();
    let export = d.dir().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::copy(common::fixture("events.csv"), export.join("events.csv")).unwrap();
    // A key file there too (`.txt` reads as CSV): never an input, never shown.
    std::fs::write(export.join("key.txt"), "sk_SENTINEL_in_the_export\n").unwrap();
    let mapping = common::fixture("events.toml");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            ".",
            "--mapping",
            mapping.to_str().unwrap(),
            "--endpoint",
            "local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(
            ["--summary-json", "s.json", "--api-key-file", "key.txt"]
                .iter()
                .map(|s| s.to_string()),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The first run writes the checkpoint, the rejects and s.json (NDJSON by name) into
    // the directory it reads; the second finds them there, the third starts over.
    for (i, extra) in [&[][..], &[][..], &["--restart"][..]]
        .into_iter()
        .enumerate()
    {
        let o = common::run(common::bin().current_dir(&export).args(args(extra)));
        assert_eq!(o.status.code(), Some(3), "run {i}: {}", common::stderr(&o));
        assert!(!common::stderr(&o).contains("SENTINEL"), "run {i}");
        let s = summary(&export, "s.json");
        assert_eq!(s["inputs"], 1, "run {i}: {s}");
        if i != 1 {
            assert_eq!(s["rows_read"], 40, "run {i}: {s}");
        } else {
            assert!(
                s["outcome"].as_str().unwrap().contains("already complete"),
                "{s}"
            );
        }
    }
}

/// The old default paths, named.
const OLD_PATHS: [&str; 2] = ["--checkpoint", "cdp-backfill.checkpoint.json"];

/// A completed backfill's checkpoint, made to look unfinished with its rejects counted.
fn unfinished_backfill(dir: &Path) -> Vec<u8> {
    let o = backfill(dir, &OLD_PATHS);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let path = dir.join("cdp-backfill.checkpoint.json");
    let mut cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(cp["rejects_len"].as_u64().unwrap() > 0, "{cp}");
    cp["complete"] = false.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&cp).unwrap()).unwrap();
    std::fs::read(dir.join("cdp-backfill.rejects.ndjson")).unwrap()
}

#[test]
fn a_rejects_file_counted_by_an_unfinished_checkpoint_is_not_cut_by_another_run() {
    let d = workdir();
    let dir = d.dir();
    let rejects = unfinished_backfill(dir);
    // A rehearsal that keeps no checkpoint, into that backfill's rejects file.
    let o = run_in(
        dir,
        &[
            "run",
            "events.csv",
            "--mapping",
            "events.toml",
            "--dry-run",
            "--rejects",
            "cdp-backfill.rejects.ndjson",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o)
            .contains("that the backfill recorded in cdp-backfill.checkpoint.json counts"),
        "{}",
        common::stderr(&o)
    );
    // A resume that names another rejects file.
    std::fs::write(dir.join("important.ndjson"), "keep me\n").unwrap();
    let o = backfill(
        dir,
        &[&OLD_PATHS[..], &["--rejects", "important.ndjson"]].concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("cdp-backfill.rejects.ndjson (restore it if it is gone)"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("important.ndjson")).unwrap(),
        "keep me\n"
    );
    assert_eq!(
        std::fs::read(dir.join("cdp-backfill.rejects.ndjson")).unwrap(),
        rejects
    );
    // With another rejects path, or its own default one, the rehearsal runs.
    let o = backfill(dir, &["--dry-run", "--rejects", "dry.ndjson"]);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let o = backfill(dir, &["--dry-run"]);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read(dir.join("cdp-backfill.rejects.ndjson")).unwrap(),
        rejects
    );
}

#[test]
fn a_second_run_of_the_same_command_at_the_same_time_is_refused() {
    let d = workdir();
    let dir = d.dir();
    let args = [
        &BACKFILL[..],
        &[
            "--rate",
            "2",
            "--max-request-bytes",
            "2000",
            "--max-call-bytes",
            "1900",
            "--progress",
            "never",
        ],
        &OLD_PATHS[..],
    ]
    .concat();
    let mut first: std::process::Child = common::bin()
        .current_dir(dir)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds its checkpoint (it takes ~10 s to send at 2 requests/s).
    let t0 = Instant::now();
    while !dir.join("cdp-backfill.checkpoint.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = run_in(dir, &args);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o)
        .contains("another run is using cdp-backfill.checkpoint.json (its checkpoint)"));
    // Another rejects file does not get round the checkpoint's lock.
    let o = run_in(dir, &[&args[..], &["--rejects", "other.ndjson"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(!dir.join("other.ndjson").exists());
    let o = run_in(dir, &[&args[..], &["--restart"]].concat());
    assert_eq!(
        o.status.code(),
        Some(2),
        "--restart too: {}",
        common::stderr(&o)
    );
    // A run killed outright leaves no lock behind: the same command (faster) resumes.
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait().unwrap();
    let fast: Vec<&str> = args
        .iter()
        .map(|a| if *a == "2" { "1000" } else { a })
        .collect();
    let o = run_in(dir, &fast);
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
}

#[test]
fn an_interrupted_run_counts_the_reject_lines_its_rejects_file_holds() {
    let d = workdir();
    let dir = d.dir();
    // Every fifth row has no id: rejected, its line written once its request is delivered.
    let mut csv = String::from("user_id,anonymous_id,event,timestamp,plan,amount,currency,country,city,item_count,is_trial,description\n");
    for i in 0..600 {
        let id = if i % 5 == 0 {
            String::new()
        } else {
            format!("u{i}")
        };
        csv.push_str(&format!(
            "{id},,Ev,2023-01-01T00:00:00Z,pro,1.5,EUR,DE,Köln,1,false,row {i}\n"
        ));
    }
    std::fs::write(dir.join("rows.csv"), csv).unwrap();
    let mut run = common::bin()
        .current_dir(dir)
        .args([
            "run",
            "rows.csv",
            "--mapping",
            "events.toml",
            "--endpoint",
            "local",
            "--rate",
            "20",
            "--max-request-bytes",
            "3000",
            "--max-call-bytes",
            "2900",
            "--summary-json",
            "s.json",
            "--progress",
            "never",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(130));
    let s = summary(dir, "s.json");
    let lines = std::fs::read_to_string(common::backfill_dir(dir).join("rejects.ndjson"))
        .unwrap()
        .lines()
        .count() as u64;
    assert!(lines > 0, "nothing was rejected before the interrupt: {s}");
    assert_eq!(s["rows_rejected_total"], lines, "{s}");
    assert!(s["rows_rejected"].as_u64().unwrap() >= lines, "{s}");
}

#[test]
fn a_rejects_path_that_cannot_be_written_is_a_usage_error_before_anything_is_written() {
    let d = workdir();
    let dir = d.dir();
    let o = backfill(dir, &["--rejects", "nodir/r.ndjson"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("--rejects nodir/r.ndjson: cannot open it for writing"));
    assert!(
        !dir.join(".cdp-backfill").exists()
            || !common::backfill_dir(dir).join("checkpoint.json").exists(),
        "a refused run wrote a checkpoint"
    );
}
