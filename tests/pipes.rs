//! A reader that goes away is not an error: `cdp-backfill inspect big.ndjson.gz | head -1`
//! used to end with `failed printing to stdout: Broken pipe` and exit 101. Every
//! subcommand, its output on a real pipe whose reading end is closed (at once, or after
//! one line as `head -1` does), ends as it would have otherwise, quietly: exit 0 here (or
//! 141, a shell's code for a process killed by SIGPIPE), never a panic.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Workdir;

mod common;

/// A small CSV every row of which maps, so a run or a validation exits 0.
fn clean_input(w: &Workdir) {
    let mut csv = String::from("user_id,event,timestamp,plan\n");
    for i in 0..2_000 {
        csv.push_str(&format!("u{i},Signed Up,2024-03-01T10:00:00Z,pro\n"));
    }
    w.write("clean.csv", csv);
    w.write(
        "clean.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\nproperties = \"rest\"\n",
    );
}

/// How the pipe is left.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// The reading end is closed before the command writes anything.
    AtOnce,
    /// One line is read, then the reading end is closed (`| head -1`).
    AfterOneLine,
}

/// Runs `cmd` with stdout (and, with `stderr_too`, stderr) on a pipe closed as `close`
/// says; returns the exit code and whatever of stderr was kept.
fn closed_pipe(mut cmd: Command, close: Close, stderr_too: bool) -> (Option<i32>, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    let out = child.stdout.take().expect("stdout is piped");
    match close {
        Close::AtOnce => drop(out),
        Close::AfterOneLine => {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
        }
    }
    let mut err = child.stderr.take().expect("stderr is piped");
    let kept = if stderr_too {
        drop(err);
        String::new()
    } else {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    };
    let code = wait(&mut child, Duration::from_secs(60));
    (code, kept)
}

fn wait(child: &mut Child, deadline: Duration) -> Option<i32> {
    let started = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            // Killed by SIGPIPE is what a shell reports as 141.
            return st.code().or(st.signal().map(|s| 128 + s));
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_quiet(what: &str, (code, stderr): (Option<i32>, String)) {
    assert!(
        matches!(code, Some(0 | 141)),
        "{what}: exit {code:?}, not 0 or 141\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{what}: {stderr}");
}

#[test]
fn every_subcommand_ends_quietly_when_its_reader_goes_away() {
    let w = Workdir::new();
    clean_input(&w);
    // A large compressed NDJSON input, as in the report.
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(w.path("big.ndjson.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    for i in 0..20_000 {
        writeln!(
            gz,
            r#"{{"user_id":"u{i}","event":"Viewed","n":{i},"tag":"t{}"}}"#,
            i % 7
        )
        .unwrap();
    }
    gz.finish().unwrap();
    // A checkpoint for `status`.
    let o = common::run(w.cmd().args([
        "run",
        "clean.csv",
        "--mapping",
        "clean.toml",
        "--endpoint",
        "local",
        "-q",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));

    let cmd = |args: &[&str]| {
        let mut c = w.cmd();
        c.args(args);
        c
    };
    for close in [Close::AtOnce, Close::AfterOneLine] {
        let say = |what: &str| format!("{what} ({close:?})");
        assert_quiet(
            &say("inspect"),
            closed_pipe(cmd(&["inspect", "big.ndjson.gz"]), close, false),
        );
        assert_quiet(
            &say("validate"),
            closed_pipe(
                cmd(&["validate", "clean.csv", "--mapping", "clean.toml"]),
                close,
                false,
            ),
        );
        assert_quiet(&say("status"), closed_pipe(cmd(&["status"]), close, false));
        assert_quiet(
            &say("completions"),
            closed_pipe(cmd(&["completions", "bash"]), close, false),
        );
        assert_quiet(
            &say("--help"),
            closed_pipe(cmd(&["run", "--help"]), close, false),
        );
        // `run` and `generate` write to stderr: both ends closed.
        assert_quiet(
            &say("run"),
            closed_pipe(
                cmd(&[
                    "run",
                    "clean.csv",
                    "--mapping",
                    "clean.toml",
                    "--endpoint",
                    "local",
                    "--no-checkpoint",
                    "--progress",
                    "always",
                ]),
                close,
                true,
            ),
        );
        assert_quiet(
            &say("run -v"),
            closed_pipe(
                cmd(&[
                    "run",
                    "clean.csv",
                    "--mapping",
                    "clean.toml",
                    "--dry-run",
                    "-vv",
                ]),
                close,
                true,
            ),
        );
        assert_quiet(
            &say("generate"),
            closed_pipe(
                cmd(&["generate", "--rows", "100", "--out", "g.csv"]),
                close,
                true,
            ),
        );
    }
}

/// `serve` prints its stats on stdout when it stops: a closed stdout then is no panic.
#[test]
fn serve_ends_quietly_when_its_reader_goes_away() {
    let w = Workdir::new();
    let mut child = w
        .cmd()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let code = wait(&mut child, Duration::from_secs(30));
    assert_quiet("serve", (code, rest));
}
