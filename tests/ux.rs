//! The terminal experience, through the real binary: progress lines when stderr is not a
//! terminal, the summary JSON's figures adding up, the HTML report, exit codes, and one
//! clear message (never a panic) for each of the mistakes users make.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cdp_backfill::Summary;
use common::*;

/// Writes a generated event CSV of `rows` rows into `dir`; returns its path and the
/// number of bad rows planted in it.
fn generated(dir: &Path, rows: u64) -> (std::path::PathBuf, u64) {
    let path = dir.join("events.csv");
    let out = run(bin()
        .args([
            "generate",
            "--rows",
            &rows.to_string(),
            "--seed",
            "3",
            "--out",
        ])
        .arg(&path));
    assert!(out.status.success(), "{}", stderr(&out));
    // "wrote N rows to P (K planted bad rows)"
    let e = stderr(&out);
    let planted = e
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("generate says how many bad rows it planted: {e}"));
    (path, planted)
}

/// `cdp-backfill run INPUT --mapping fixtures/events.toml` in `dir`; the caller adds the rest.
fn run_events(dir: &Path, input: &Path) -> Command {
    let mut c = bin();
    c.current_dir(dir)
        .arg("run")
        .arg(input)
        .arg("--mapping")
        .arg(fixture("events.toml"));
    c
}

/// Sends SIGINT to `pid`, as Ctrl-C would.
fn interrupt(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -INT {pid}");
}

fn summary(p: &Path) -> Summary {
    serde_json::from_slice(&std::fs::read(p).expect("the summary JSON was written"))
        .expect("the summary JSON parses as a Summary")
}

/// Asserts the invariants every summary keeps.
fn assert_adds_up(s: &Summary) {
    assert_eq!(s.rows_read, s.rows_mapped + s.rows_rejected, "rows: {s:?}");
    assert_eq!(
        s.calls_built,
        s.calls_delivered + s.calls_rejected_by_server + s.calls_undelivered,
        "calls: {s:?}"
    );
    assert_eq!(
        s.rejected_by_reason.values().sum::<u64>(),
        s.rows_rejected,
        "reasons: {s:?}"
    );
    assert_eq!(
        s.calls_by_type.values().sum::<u64>(),
        s.calls_built,
        "types: {s:?}"
    );
}

/// One parsed `progress:` line.
#[derive(Debug, Default, Clone, Copy)]
struct Line {
    percent: Option<f64>,
    calls_delivered: u64,
    rows: u64,
    in_flight: u64,
    retries: u64,
    throttled: u64,
    rejected: u64,
}

fn parse_progress(stderr: &str) -> Vec<Line> {
    let num = |s: &str| {
        s.replace(',', "")
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("a number: {s}"))
    };
    stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // The number before the first occurrence of `label` (one or two words).
            let before = |label: &[&str]| {
                let i = (1..w.len())
                    .find(|&i| w[i..].starts_with(label))
                    .unwrap_or_else(|| panic!("{label:?} in {l}"));
                num(w[i - 1])
            };
            let mut line = Line::default();
            if let Some(p) = w[1].strip_suffix('%') {
                line.percent = Some(p.parse().unwrap());
            }
            line.calls_delivered = before(&["calls", "delivered"]);
            line.rows = before(&["rows"]);
            before(&["calls/s"]);
            line.in_flight = before(&["in", "flight"]);
            line.retries = before(&["retries"]);
            line.throttled = before(&["throttled"]);
            line.rejected = before(&["rejected"]);
            line
        })
        .collect()
}

#[test]
fn progress_lines_without_a_terminal_count_up_to_the_summary_and_the_report_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, planted) = generated(dir.path(), 20_000);
    let (sum, report, rejects) = (
        dir.path().join("summary.json"),
        dir.path().join("report.html"),
        dir.path().join("rejects.ndjson"),
    );
    let out = run(run_events(dir.path(), &input)
        .args([
            "--endpoint",
            "local",
            "--no-checkpoint",
            "--rate",
            "12",
            "--max-request-bytes",
            "200000",
        ])
        .args(["--progress-interval", "0.2"])
        .arg("--rejects")
        .arg(&rejects)
        .arg("--summary-json")
        .arg(&sum)
        .arg("--report")
        .arg(&report)
        .stderr(Stdio::piped()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "planted rejects → 3\n{err}");
    let s = summary(&sum);
    assert_adds_up(&s);
    assert_eq!(s.outcome, "completed");
    assert_eq!(s.rows_read, 20_000);
    assert_eq!(s.rows_rejected, planted);
    assert_eq!(s.calls_undelivered, 0);
    assert_eq!(s.calls_delivered, s.calls_built);
    assert_eq!(read_lines(&rejects).len() as u64, s.rows_rejected);

    // The run lasts over a second (12 requests/s), so several lines were printed, and
    // no bar (no terminal escape codes).
    let lines = parse_progress(&err);
    assert!(lines.len() >= 3, "progress lines every 0.2 s:\n{err}");
    assert!(
        !err.contains('\x1b'),
        "no escape codes without a terminal:\n{err}"
    );
    for w in lines.windows(2) {
        assert!(
            w[0].rows <= w[1].rows
                && w[0].rejected <= w[1].rejected
                && w[0].calls_delivered <= w[1].calls_delivered,
            "{lines:?}"
        );
        assert!(w[0].percent <= w[1].percent, "{lines:?}");
    }
    for l in &lines {
        let p = l
            .percent
            .expect("a plain file's size is known, so a percentage is shown");
        assert!((0.0..=100.0).contains(&p), "{l:?}");
        assert!(
            l.rows <= s.rows_read && l.rejected <= s.rows_rejected,
            "{l:?}"
        );
        assert!(
            l.calls_delivered <= s.calls_delivered,
            "calls delivered, never more than the summary's: {l:?}"
        );
        // 12 requests/s at a loopback round trip never need more than the 8 to start.
        assert!(
            l.in_flight <= 8,
            "at most the concurrency's limit in flight: {l:?}"
        );
        assert_eq!(
            (l.retries, l.throttled),
            (0, 0),
            "the local receiver never throttles"
        );
    }
    assert!(
        lines.iter().any(|l| l.in_flight > 0 && l.rows > 0),
        "{lines:?}"
    );
    // Lines come before the summary table, which comes before the report's path.
    let table = err
        .find("cdp-backfill: completed")
        .expect("the summary table is printed");
    assert!(err.rfind("progress:").unwrap() < table);
    assert!(err.contains("report: "), "{err}");

    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for needle in [
        "Calls delivered per second",
        "Retries and 429s",
        "Call sizes",
        "Request fill",
        "Rejects by reason",
        "Settings",
        "<svg",
        "bad_timestamp",
    ] {
        assert!(html.contains(needle), "the report shows {needle}");
    }
    for fetch in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(
            !html.contains(fetch),
            "the report fetches nothing ({fetch})"
        );
    }
    assert!(html.contains(&cdp_backfill::progress::thousands(s.calls_delivered)));
}

#[test]
fn quiet_prints_nothing_and_never_prints_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| {
        let mut c = run_events(dir.path(), &fixture("events.csv"));
        c.args([
            "--endpoint",
            "local",
            "--no-checkpoint",
            "--progress-interval",
            "0.1",
        ])
        .args(extra);
        c
    };
    let out = run(&mut base(&["-q"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stderr(&out), "", "--quiet prints nothing but errors");
    assert!(out.stdout.is_empty());
    let out = run(&mut base(&[
        "--progress",
        "never",
        "--rate",
        "5",
        "--max-request-bytes",
        "20000",
        "--max-call-bytes",
        "4000",
    ]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!stderr(&out).contains("progress:"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cdp-backfill: completed"),
        "the summary is still shown"
    );
}

#[test]
fn verbose_logs_go_to_stderr_and_never_hold_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = receiver(dir.path(), Default::default());
    let report = dir.path().join("r.html");
    let sum = dir.path().join("s.json");
    let out = run(bin()
        .current_dir(dir.path())
        .env("CDP_API_KEY", "sk_SENTINEL_do_not_print")
        .args(["-vv", "run"])
        .arg(fixture("all_calls.csv"))
        .arg("--mapping")
        .arg(fixture("all_calls.toml"))
        .args(["--endpoint", &server.base_url(), "--no-checkpoint"])
        .arg("--report")
        .arg(&report)
        .arg("--summary-json")
        .arg(&sum));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[info cdp_backfill::cli]"),
        "-v and more log: {err}"
    );
    assert!(
        err.contains("[debug cdp_backfill::progress]"),
        "-vv logs debug: {err}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    for text in [&err, &html, &std::fs::read_to_string(&sum).unwrap()] {
        assert!(!text.contains("SENTINEL"), "the key is never printed");
    }
    assert!(html.contains("given (not shown)"));
    // RUST_LOG overrides -v.
    let out = run(bin()
        .current_dir(dir.path())
        .env("RUST_LOG", "off")
        .args(["-vv", "run"])
        .arg(fixture("all_calls.csv"))
        .arg("--mapping")
        .arg(fixture("all_calls.toml"))
        .args(["--endpoint", "local", "--no-checkpoint"]));
    assert!(!stderr(&out).contains("[info"), "{}", stderr(&out));
    server.shutdown();
}

/// Runs the binary in `dir` with `args`; asserts the exit code, that the error is one
/// `error: ` message naming every `needles` and never a panic or a debug dump.
fn mistake(dir: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let out = run(bin()
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_BACKTRACE"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}:\n{err}");
    assert!(
        err.starts_with("error: "),
        "{args:?} starts with `error: `:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: the message names {n:?}:\n{err}");
    }
    for dump in [
        "panicked",
        "RUST_BACKTRACE",
        "Os {",
        "kind:",
        "Error {",
        "Some(",
        "\"}",
    ] {
        assert!(
            !err.contains(dump),
            "{args:?}: no debug dump ({dump}):\n{err}"
        );
    }
}

#[test]
fn each_user_mistake_is_one_clear_message_with_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("events.csv"), d.join("ev.csv")).unwrap();
    std::fs::copy(fixture("events.toml"), d.join("map.toml")).unwrap();
    std::fs::create_dir(d.join("adir")).unwrap();
    std::fs::write(
        d.join("broken.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = [\n",
    )
    .unwrap();
    std::fs::write(
        d.join("nocol.toml"),
        "[[call]]\ntype = \"track\"\nuser_id = \"no_such_column\"\nevent = \"event\"\n",
    )
    .unwrap();
    let run_args = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "run",
            "ev.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "local",
            "--no-checkpoint",
        ];
        v.extend_from_slice(extra);
        v
    };
    // Missing input.
    mistake(
        d,
        &[
            "run",
            "missing.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "local",
        ],
        1,
        &["missing.csv", "No such file"],
    );
    // An input that cannot be read: a path under a regular file (chmod 000 does not stop
    // root, which the tests may run as).
    mistake(
        d,
        &[
            "run",
            "ev.csv/x.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "local",
        ],
        1,
        &["ev.csv/x.csv"],
    );
    // A directory with no inputs in it.
    mistake(
        d,
        &[
            "run",
            "adir",
            "--mapping",
            "map.toml",
            "--endpoint",
            "local",
        ],
        1,
        &["adir", "no input files"],
    );
    // Mapping: missing, a directory, bad TOML (line and column), a column the input lacks.
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "nope.toml",
            "--endpoint",
            "local",
        ],
        2,
        &["nope.toml"],
    );
    mistake(
        d,
        &["run", "ev.csv", "--mapping", "adir", "--endpoint", "local"],
        2,
        &["adir", "directory"],
    );
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "broken.toml",
            "--endpoint",
            "local",
        ],
        2,
        &["broken.toml", "line 3"],
    );
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "nocol.toml",
            "--endpoint",
            "local",
            "--no-checkpoint",
        ],
        2,
        &["no_such_column"],
    );
    // No key for a remote endpoint.
    mistake(
        d,
        &["run", "ev.csv", "--mapping", "map.toml", "--endpoint", "us"],
        2,
        &["CDP_API_KEY", "--api-key-file"],
    );
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "us",
            "--api-key-file",
            "ev.csv/key",
        ],
        2,
        &["--api-key-file", "ev.csv/key"],
    );
    // No endpoint at all.
    mistake(
        d,
        &["run", "ev.csv", "--mapping", "map.toml"],
        2,
        &["--endpoint", "CDP_ENDPOINT"],
    );
    // Options: unknown, bad values.
    mistake(d, &run_args(&["--frobnicate"]), 2, &["--frobnicate"]);
    mistake(d, &run_args(&["--rate", "fast"]), 2, &["--rate", "fast"]);
    mistake(d, &run_args(&["--rate", "0"]), 2, &["--rate", "at least 1"]);
    mistake(d, &run_args(&["--concurrency", "0"]), 2, &["--concurrency"]);
    for level in ["0", "10", "fast"] {
        mistake(
            d,
            &run_args(&["--gzip-level", level]),
            2,
            &["--gzip-level", level, "from 1 (fastest) to 9 (smallest)"],
        );
    }
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "ftp://example.com",
        ],
        2,
        &["--endpoint", "ftp://example.com"],
    );
    mistake(
        d,
        &[
            "run",
            "ev.csv",
            "--mapping",
            "map.toml",
            "--endpoint",
            "http://example.com",
        ],
        2,
        &["http://", "https://"],
    );
    mistake(
        d,
        &run_args(&["--output", "bodies.ndjson"]),
        2,
        &["--dry-run"],
    );
    mistake(
        d,
        &run_args(&["--delimiter", ";;"]),
        2,
        &["--delimiter", ";;"],
    );
    mistake(d, &run_args(&["--format", "xml"]), 2, &["xml", "csv"]);
    mistake(
        d,
        &run_args(&["--progress", "sometimes"]),
        2,
        &["--progress", "sometimes"],
    );
    mistake(
        d,
        &run_args(&["--max-call-bytes", "10"]),
        2,
        &["--max-call-bytes"],
    );
    // Outputs that cannot be written are found before the run starts.
    mistake(
        d,
        &run_args(&["--summary-json", "adir"]),
        2,
        &["--summary-json", "adir", "directory"],
    );
    mistake(
        d,
        &run_args(&["--report", "no/such/dir/r.html"]),
        2,
        &["--report", "no/such/dir", "does not exist"],
    );
    // `status` of a checkpoint that does not exist.
    mistake(
        d,
        &["status", "nope.checkpoint.json"],
        1,
        &["nope.checkpoint.json"],
    );
    mistake(d, &["completions", "tcsh"], 2, &["tcsh", "bash"]);
    mistake(d, &["frobnicate"], 2, &["frobnicate"]);
    // `validate` and `inspect` never write over what they read (they used to: the input
    // was truncated, or replaced by a starter mapping).
    let before = std::fs::read(d.join("ev.csv")).unwrap();
    let mapping = std::fs::read(d.join("map.toml")).unwrap();
    let validate = ["validate", "ev.csv", "--mapping", "map.toml"];
    for (outputs, says) in [
        (
            &["--output", "ev.csv"][..],
            "--output ev.csv is an input (ev.csv)",
        ),
        (
            &["--report-json", "map.toml"][..],
            "--report-json map.toml is the mapping file (map.toml)",
        ),
        (
            &["--output", "./out.ndjson", "--report-json", "out.ndjson"][..],
            "--report-json out.ndjson is also the --output file",
        ),
    ] {
        let args: Vec<&str> = validate.iter().chain(outputs).copied().collect();
        mistake(d, &args, 2, &[says, "a path of its own"]);
    }
    mistake(
        d,
        &["inspect", "ev.csv", "--emit-mapping", "ev.csv"],
        2,
        &["--emit-mapping ev.csv already exists", "does not overwrite"],
    );
    mistake(
        d,
        &["inspect", "ev.csv", "--emit-mapping", "map.toml"],
        2,
        &["--emit-mapping map.toml already exists"],
    );
    assert_eq!(
        std::fs::read(d.join("ev.csv")).unwrap(),
        before,
        "the input is intact"
    );
    assert_eq!(
        std::fs::read(d.join("map.toml")).unwrap(),
        mapping,
        "the mapping is intact"
    );
}

#[test]
fn help_lists_exit_codes_and_every_subcommand_has_examples() {
    let out = run(bin().arg("--help"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in ["Exit codes", "130", "CDP_API_KEY", "completions"] {
        assert!(text.contains(needle), "--help mentions {needle}:\n{text}");
    }
    for sub in [
        "run",
        "serve",
        "generate",
        "status",
        "inspect",
        "validate",
        "completions",
    ] {
        let out = run(bin().args([sub, "--help"]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            text.contains("Example"),
            "{sub} --help has examples:\n{text}"
        );
    }
    let out = run(bin().args(["run", "--help"]));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--progress",
        "--report",
        "--summary-json",
        "--quiet",
        "--verbose",
        "[env: CDP_ENDPOINT=",
    ] {
        assert!(text.contains(flag), "run --help shows {flag}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(bin().args(["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cdp-backfill") && text.contains("mapping"),
            "{shell}"
        );
    }
}

#[test]
fn exit_codes_zero_and_three_and_interrupt_130() {
    let dir = tempfile::tempdir().unwrap();
    let go = |csv: &str, toml: &str| {
        run(bin()
            .current_dir(dir.path())
            .arg("run")
            .arg(fixture(csv))
            .arg("--mapping")
            .arg(fixture(toml))
            .args(["--endpoint", "local", "--no-checkpoint", "-q"]))
    };
    assert_eq!(
        go("all_calls.csv", "all_calls.toml").status.code(),
        Some(0),
        "every row delivered"
    );
    assert_eq!(
        go("events.csv", "events.toml").status.code(),
        Some(3),
        "some rows rejected"
    );

    // Interrupted: a slow run (2 requests/s) gets SIGINT, drains, keeps its checkpoint.
    let (input, _) = generated(dir.path(), 20_000);
    let sum = dir.path().join("s.json");
    let child = run_events(dir.path(), &input)
        .args([
            "--endpoint",
            "local",
            "--rate",
            "2",
            "--concurrency",
            "2",
            "--max-request-bytes",
            "100000",
        ])
        .arg("--summary-json")
        .arg(&sum)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    interrupt(child.id());
    let out: Output = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "drained promptly"
    );
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("Resume with the same command"), "{err}");
    let s = summary(&sum);
    assert_eq!(s.outcome, "interrupted");
    assert_eq!(
        s.calls_built,
        s.calls_delivered + s.calls_rejected_by_server + s.calls_undelivered
    );
    assert!(
        s.calls_delivered < s.calls_built && s.calls_delivered > 0,
        "stopped early: {s:?}"
    );
    // Among this test's backfills, the interrupted one is kept, unfinished.
    let unfinished = std::fs::read_dir(dir.path().join(".cdp-backfill"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("checkpoint.json")).ok())
        .filter(|t| serde_json::from_slice::<serde_json::Value>(t).unwrap()["complete"] == false)
        .count();
    assert_eq!(unfinished, 1);
}

/// A receiver on loopback that answers every request after `latency_ms`.
fn slow_receiver(dir: &Path, latency_ms: u64) -> (cdp_backfill::serve::Server, std::path::PathBuf) {
    receiver(
        dir,
        cdp_backfill::serve::Faults {
            latency_ms,
            ..Default::default()
        },
    )
}

/// A second Ctrl-C while the first drains slow requests stops at once, says so (it used
/// to exit without a word), and leaves a checkpoint the same command resumes from: every
/// row then arrives, the repeats with the messageIds they had.
#[test]
fn a_second_interrupt_stops_at_once_with_a_message_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = generated(dir.path(), 5_000);
    let (slow, record) = slow_receiver(dir.path(), 5_000);
    let args = |endpoint: &str| {
        let mut c = run_events(dir.path(), &input);
        c.args([
            "--endpoint",
            endpoint,
            "--max-request-bytes",
            "100000",
            "-q",
        ])
        .args(["--summary-json", "s.json"]);
        c
    };
    // Two SIGINTs, 300 ms apart, while requests are in flight (each answered after 5 s);
    // returns the run's output and how long it took to stop after the second.
    let interrupted_twice = |extra: &[&str]| {
        let child = args(&slow.base_url())
            .args(["--rate", "4", "--concurrency", "2"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        interrupt(child.id());
        std::thread::sleep(Duration::from_millis(300));
        let second = Instant::now();
        interrupt(child.id());
        let out: Output = child.wait_with_output().unwrap();
        (out, second.elapsed())
    };

    // Without a checkpoint, it says a rerun starts over (not "resume").
    let (out, _) = interrupted_twice(&["--no-checkpoint"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted again: stopping now, exit code 130. No checkpoint was kept: a rerun starts from the beginning."),
        "{err}"
    );

    let (out, took) = interrupted_twice(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    // Well before the 5 s the drain would have waited.
    assert!(
        took < Duration::from_millis(3500),
        "it waited for the drain: {took:?}"
    );
    assert!(
        err.contains("interrupted again: stopping now, exit code 130. The last checkpoint written (in .cdp-backfill) is valid; resume with:"),
        "{err}"
    );
    assert!(
        err.contains("--rate 4 --concurrency 2"),
        "the command is given: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let checkpoint = backfill_dir(dir.path()).join("checkpoint.json");
    let text = std::fs::read_to_string(&checkpoint).expect("the checkpoint is kept");
    serde_json::from_str::<serde_json::Value>(&text).expect("the checkpoint is whole JSON");
    let (addr, endpoint) = (slow.local_addr(), slow.base_url());
    slow.shutdown();

    // The same command resumes and finishes, against a receiver on the same address
    // (the checkpoint names the endpoint) that now answers at once.
    let record2 = dir.path().join("received-after.ndjson");
    let fast = cdp_backfill::serve::Server::start(cdp_backfill::serve::ServeConfig {
        addr,
        api_key: None,
        limits: Default::default(),
        record: Some(record2.clone()),
        faults: Default::default(),
    })
    .expect("the receiver starts again on the same port");
    let out = run(&mut args(&endpoint));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let s = summary(&dir.path().join("s.json"));
    assert_eq!(s.outcome, "completed", "{s:?}");
    let stats = fast.shutdown();
    let mut ids = message_ids(&recorded_calls(&record));
    ids.extend(message_ids(&recorded_calls(&record2)));
    assert_eq!(stats.calls_accepted, s.calls_delivered);
    assert_eq!(
        ids.len() as u64 + s.rows_rejected_total,
        5_000,
        "every row arrived once or is a reject"
    );
}

/// Requests that still hang when --drain-timeout ends: the run exits 130 and says where
/// things stand, with or without a checkpoint (it used to claim one either way), and
/// writes its summary and report as an interrupted run does (it used to write neither:
/// the senders are stuck in their requests, so the run cannot return).
#[test]
fn a_drain_timeout_says_what_was_delivered_and_how_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // Far more requests than the queues ahead of the senders hold: with every sender
    // stuck, the gate must still let the packer (and so the summary's totals) finish.
    let (input, _) = generated(dir.path(), 60_000);
    let (slow, _) = slow_receiver(dir.path(), 6_000);
    for (extra, says) in [
        (
            &["--no-checkpoint"][..],
            "no checkpoint was kept: a rerun starts from the beginning",
        ),
        (
            &[][..],
            "the checkpoint is up to date: rerun the same command to resume",
        ),
    ] {
        let summary = dir.path().join("summary.json");
        let report = dir.path().join("report.html");
        let _ = std::fs::remove_file(&summary);
        let _ = std::fs::remove_file(&report);
        let child = run_events(dir.path(), &input)
            .args(["--endpoint", &slow.base_url(), "--drain-timeout", "1"])
            .args(["--max-request-bytes", "100000", "--rate", "4", "-q"])
            .arg("--summary-json")
            .arg(&summary)
            .arg("--report")
            .arg(&report)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let signalled = Instant::now();
        interrupt(child.id());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(
            signalled.elapsed() < Duration::from_millis(4500),
            "the drain timeout held: {:?}",
            signalled.elapsed()
        );
        assert!(
            err.contains("requests still in flight after --drain-timeout (1s); ")
                && err.contains(says),
            "{extra:?}: {err}"
        );
        assert!(!err.contains("No summary file"), "{err}");
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).expect("the summary is written"))
                .unwrap();
        assert_eq!(s["outcome"], "interrupted", "{s}");
        let delivered = s["calls_delivered"].as_u64().unwrap();
        assert!(
            err.contains(&format!(" {delivered} calls were delivered.")),
            "the summary and the message agree: {s}\n{err}"
        );
        // Reading stopped at the interrupt; what was read is counted, and adds up.
        let read = s["rows_read"].as_u64().unwrap();
        assert!(read > 0, "{s}");
        assert_eq!(
            read,
            s["rows_mapped"].as_u64().unwrap() + s["rows_rejected"].as_u64().unwrap(),
            "{s}"
        );
        assert!(
            s["calls_undelivered"].as_u64().unwrap() > 0,
            "a request was still hanging: {s}"
        );
        let html = std::fs::read_to_string(&report).expect("the report is written");
        assert!(
            html.contains("--drain-timeout"),
            "the report says why it stopped"
        );
    }
    slow.shutdown();
}

/// A summary or report left by an earlier run is removed as the run starts (once its
/// paths are known not to be inputs), so a run that ends without writing its own (a
/// refused mapping here; a second Ctrl-C, a crash) never leaves the old one to be read
/// as its outcome. Before, an old `"outcome": "completed"` stayed in place.
#[test]
fn an_earlier_runs_summary_and_report_do_not_outlive_a_run_that_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = generated(dir.path(), 50);
    let mapping = dir.path().join("bad.toml");
    std::fs::write(
        &mapping,
        "[[call]]\ntype = \"track\"\nuser_id = \"no_such_column\"\nevent = \"event\"\n",
    )
    .unwrap();
    let summary = dir.path().join("s.json");
    let report = dir.path().join("r.html");
    std::fs::write(&summary, r#"{"outcome":"completed"}"#).unwrap();
    std::fs::write(&report, "<html>old</html>").unwrap();
    let out = run(bin()
        .current_dir(dir.path())
        .arg("run")
        .arg(&input)
        .arg("--mapping")
        .arg(&mapping)
        .args(["--endpoint", "local", "--no-checkpoint", "-q"])
        .arg("--summary-json")
        .arg(&summary)
        .arg("--report")
        .arg(&report));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("no_such_column"), "{}", stderr(&out));
    assert!(!summary.exists(), "the old summary is gone");
    assert!(!report.exists(), "the old report is gone");
    // An input named as an output is refused before anything is removed.
    let out = run(bin()
        .current_dir(dir.path())
        .arg("run")
        .arg(&input)
        .arg("--mapping")
        .arg(fixture("events.toml"))
        .args(["--endpoint", "local", "--no-checkpoint", "-q"])
        .arg("--summary-json")
        .arg(&input));
    assert_ne!(out.status.code(), Some(0));
    assert!(input.exists(), "the input is untouched");
}

/// Retries and 429s are counted as they happen, not when their request is finally
/// acknowledged: here every answer is a 429 asking for a minute's pause, Ctrl-C comes
/// while the senders wait, and the drain timeout ends the run with no request finished.
/// The summary still counts every 429 the receiver sent (it used to say 0).
#[test]
fn throttling_is_counted_even_when_no_request_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = generated(dir.path(), 5_000);
    let (server, _) = receiver(
        dir.path(),
        cdp_backfill::serve::Faults {
            throttle_rate: 1.0,
            retry_after_secs: 60,
            ..Default::default()
        },
    );
    let summary_path = dir.path().join("s.json");
    let child = run_events(dir.path(), &input)
        .args([
            "--endpoint",
            &server.base_url(),
            "--drain-timeout",
            "1",
            "-q",
        ])
        .args(["--max-request-bytes", "100000", "--no-checkpoint"])
        .arg("--summary-json")
        .arg(&summary_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let stats = server.shutdown();
    let sent_429 = stats.responses_by_status.get("429").copied().unwrap_or(0);
    assert!(sent_429 > 0, "{stats:?}");
    let s = summary(&summary_path);
    assert_eq!(s.calls_delivered, 0);
    assert_eq!(s.throttled, sent_429, "{}", stderr(&out));
}
