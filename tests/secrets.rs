//! The API key never leaks (issue 9).
//!
//! Backfills run with a sentinel key, given through `CDP_API_KEY` and through
//! `--api-key-file`, against receivers on 127.0.0.1: a run that succeeds, one the
//! receiver refuses (401, a different key), one with retries, one killed with SIGKILL
//! mid-run and resumed, a dry run, `--help`, `status`. Each test then searches every byte
//! the tool wrote (every file under its temp dir: rejects, checkpoint, summary JSON,
//! HTML report, dry-run output, the receiver's record) and printed (stdout, stderr) for
//! the key and for its HTTP Basic form, `base64("KEY:")`, with and without padding.
//! The key file itself lives in a separate directory that is not searched.
//!
//! Object storage (issue 22): a run reading from and keeping its state in a bucket
//! (s3s-fs on 127.0.0.1) never shows the store's secret key, in its output, its files or
//! the state it writes to the bucket; a signed URL's signature is shown `REDACTED`.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cdp_backfill::config::{ApiKey, Limits};
use cdp_backfill::serve::{Faults, ServeConfig, Server};

const KEY: &str = "sk_SENTINEL_7f3a9c2e51d84b06";

/// Every form in which the key could leak.
fn needles() -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD;
    let nb = base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let with_colon = format!("{KEY}:");
    let mut v = vec![
        KEY.as_bytes().to_vec(),
        // The distinctive half alone, in case the key is cut or wrapped.
        b"SENTINEL_7f3a9c2e".to_vec(),
        b.encode(&with_colon).into_bytes(),
        nb.encode(&with_colon).into_bytes(),
        url.encode(&with_colon).into_bytes(),
        b.encode(KEY).into_bytes(),
        nb.encode(KEY).into_bytes(),
    ];
    // The Basic token's first 24 characters encode the first 18 bytes exactly, whatever
    // follows: this finds the token even when it is truncated.
    v.push(nb.encode(&with_colon.as_bytes()[..18]).into_bytes());
    v.sort();
    v.dedup();
    v
}

fn assert_no_key_in(what: &str, bytes: &[u8]) {
    for n in needles() {
        assert!(
            !bytes.windows(n.len()).any(|w| w == n.as_slice()),
            "the key (as {:?}) appears in {what}",
            String::from_utf8_lossy(&n)
        );
    }
}

/// Searches every file under `dir` (recursively) for the key.
fn assert_no_key_under(dir: &Path) -> usize {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_no_key_in(&p.display().to_string(), &std::fs::read(&p).unwrap());
                files += 1;
            }
        }
    }
    files
}

fn assert_output_clean(o: &Output) {
    assert_no_key_in("stdout", &o.stdout);
    assert_no_key_in("stderr", &o.stderr);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A key file with the sentinel key and `mode`, in its own directory.
fn key_file(mode: u32) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("key");
    std::fs::write(&p, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    (d, p)
}

/// A receiver requiring `key`, recording into `dir/received.ndjson`.
fn receiver(dir: &Path, key: &str, faults: Faults) -> Server {
    Server::start(ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        api_key: Some(ApiKey::new(key)),
        limits: Limits::default(),
        record: Some(dir.join("received.ndjson")),
        faults,
    })
    .expect("the receiver starts on loopback")
}

/// The work dir: the events fixture and its mapping copied in, so every path the tool
/// writes is under it.
fn workdir() -> common::Workdir {
    common::Workdir::with_fixtures(&["events.csv", "events.toml"])
}

/// `run` with every output the tool can write, into `dir`.
fn run_cmd(dir: &Path, endpoint: &str) -> Command {
    let mut c = common::bin();
    c.current_dir(dir).args([
        "run",
        "events.csv",
        "--mapping",
        "events.toml",
        "--endpoint",
        endpoint,
        "--rejects",
        "rejects.ndjson",
        "--checkpoint",
        "state/checkpoint.json",
        "--summary-json",
        "summary.json",
        "--report",
        "report.html",
        "--backoff-base",
        "0.01",
        "--backoff-cap",
        "0.05",
        "--progress",
        "always",
        "--progress-interval",
        "0.1",
    ]);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    c
}

#[test]
fn a_successful_run_with_the_key_from_the_environment_leaks_nothing() {
    let dir = workdir();
    let server = receiver(dir.dir(), KEY, Faults::default());
    let o = common::run(run_cmd(dir.dir(), &server.base_url()).env("CDP_API_KEY", KEY));
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(server.stats().calls_accepted > 0);
    assert_output_clean(&o);
    let status = common::run(
        common::bin()
            .current_dir(dir.dir())
            .args(["status", "state/checkpoint.json"]),
    );
    assert!(status.status.success(), "{}", common::stderr(&status));
    assert_output_clean(&status);
    drop(server);
    assert!(assert_no_key_under(dir.dir()) >= 6);
}

#[test]
fn a_key_file_works_and_a_shared_one_gets_a_chmod_warning() {
    let dir = workdir();
    let server = receiver(dir.dir(), KEY, Faults::default());
    let (_kd, key) = key_file(0o600);
    let o = common::run(
        run_cmd(dir.dir(), &server.base_url())
            .arg("--api-key-file")
            .arg(&key),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(!common::stderr(&o).contains("warning: --api-key-file"));
    assert_output_clean(&o);

    let (_kd2, shared) = key_file(0o644);
    let o = common::run(
        run_cmd(dir.dir(), &server.base_url())
            .args(["--restart", "--api-key-file"])
            .arg(&shared),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(
        err.contains(&format!(
            "warning: --api-key-file {} is accessible to other users (mode 644); restrict it with: chmod 600 {}",
            shared.display(),
            shared.display()
        )),
        "{err}"
    );
    assert_output_clean(&o);
    drop(server);
    assert_no_key_under(dir.dir());
}

#[test]
fn a_refused_key_fails_the_run_without_showing_either_key() {
    let dir = workdir();
    // The receiver wants another key: every request is answered 401.
    let server = receiver(dir.dir(), "sk_OTHER_key_0000", Faults::default());
    let (_kd, key) = key_file(0o600);
    let o = common::run(
        run_cmd(dir.dir(), &server.base_url())
            .arg("--api-key-file")
            .arg(&key),
    );
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("sk_OTHER"), "{err}");
    assert_output_clean(&o);
    let st = server.stats();
    assert_eq!(st.calls_accepted, 0);
    assert!(st.violations.auth_failures > 0, "{st:?}");
    drop(server);
    assert_no_key_under(dir.dir());
}

#[test]
fn retries_leak_nothing() {
    let dir = workdir();
    let server = receiver(
        dir.dir(),
        KEY,
        Faults {
            fail_rate: 0.5,
            throttle_rate: 0.2,
            retry_after_secs: 0,
            seed: 9,
            ..Faults::default()
        },
    );
    let o = common::run(
        run_cmd(dir.dir(), &server.base_url())
            .env("CDP_API_KEY", KEY)
            .args([
                "--max-retries",
                "30",
                "--max-request-bytes",
                "4000",
                "--max-call-bytes",
                "3000",
            ]),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.dir().join("summary.json")).unwrap()).unwrap();
    assert!(
        summary.to_string().contains("retr"),
        "the summary counts retries: {summary}"
    );
    let st = server.stats();
    assert!(st.injected.failures + st.injected.throttled > 0, "{st:?}");
    assert_output_clean(&o);
    drop(server);
    assert_no_key_under(dir.dir());
}

#[test]
fn a_run_killed_mid_way_and_resumed_leaks_nothing() {
    let dir = workdir();
    // A bigger input, sent slowly, so the kill lands mid-run.
    let gen = common::run(common::bin().current_dir(dir.dir()).args([
        "generate",
        "--rows",
        "20000",
        "--seed",
        "3",
        "--out",
        "events.csv",
    ]));
    assert!(gen.status.success(), "{}", common::stderr(&gen));
    let server = receiver(
        dir.dir(),
        KEY,
        Faults {
            latency_ms: 30,
            ..Faults::default()
        },
    );
    let mut child = run_cmd(dir.dir(), &server.base_url())
        .env("CDP_API_KEY", KEY)
        .args([
            "--rate",
            "20",
            "--max-request-bytes",
            "40000",
            "--concurrency",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.dir().join("killed-stderr.txt")).unwrap())
        .spawn()
        .unwrap();
    let cp = dir.dir().join("state/checkpoint.json");
    let t = Instant::now();
    while !cp.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the kill: {}",
        std::fs::read_to_string(dir.dir().join("killed-stderr.txt")).unwrap()
    );
    // SIGKILL: no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cp.exists(), "a checkpoint was written before the kill");
    assert_no_key_under(dir.dir());

    let o = common::run(
        run_cmd(dir.dir(), &server.base_url())
            .env("CDP_API_KEY", KEY)
            .args(["--rate", "1000", "--max-request-bytes", "40000"]),
    );
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}",
        common::stderr(&o)
    );
    assert_output_clean(&o);
    drop(server);
    assert_no_key_under(dir.dir());
}

#[test]
fn a_dry_run_and_the_help_texts_leak_nothing() {
    let dir = workdir();
    let (_kd, key) = key_file(0o600);
    let o = common::run(
        common::bin()
            .current_dir(dir.dir())
            .env("CDP_API_KEY", KEY)
            .args([
                "run",
                "events.csv",
                "--mapping",
                "events.toml",
                "--dry-run",
                "--output",
                "bodies.ndjson",
                "--rejects",
                "rejects.ndjson",
                "--summary-json",
                "summary.json",
            ]),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(
        std::fs::metadata(dir.dir().join("bodies.ndjson"))
            .unwrap()
            .len()
            > 0
    );
    assert_output_clean(&o);
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["serve", "--help"],
        vec!["--version"],
    ] {
        let o = common::run(
            common::bin()
                .env("CDP_API_KEY", KEY)
                .args(&args)
                .arg("--api-key-file")
                .arg(&key),
        );
        assert_output_clean(&o);
        let o = common::run(common::bin().env("CDP_API_KEY", KEY).args(&args));
        assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
        assert_output_clean(&o);
    }
    assert_no_key_under(dir.dir());
}

#[test]
fn there_is_no_api_key_flag() {
    let o =
        common::run(common::bin().args(["run", "x.csv", "--mapping", "m.toml", "--api-key", KEY]));
    assert_eq!(o.status.code(), Some(2));
    assert_output_clean(&o);
}

#[test]
fn credentials_in_the_endpoint_url_are_refused_and_never_shown() {
    let dir = workdir();
    for url in [
        "https://user:PASSWD55@127.0.0.1:9",
        "http://user:PASSWD55@127.0.0.1:9",
        "https://PASSWD55@cdp.customer.io",
        "https://user:pa/PASSWD55@cdp.customer.io",
        "user:PASSWD55@cdp.customer.io",
    ] {
        let mut c = run_cmd(dir.dir(), url);
        c.env("CDP_API_KEY", KEY);
        let o = common::run(&mut c);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{url}: {err}");
        assert!(!err.contains("PASSWD55"), "{url}: {err}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("PASSWD55"),
            "{url}"
        );
        assert_output_clean(&o);
    }
    // Refused before anything is written: no checkpoint (which would record the endpoint).
    assert!(!dir.dir().join("state/checkpoint.json").exists());
    assert!(!dir.dir().join("rejects.ndjson").exists());
    let o = common::run(
        run_cmd(dir.dir(), "https://user:PASSWD55@127.0.0.1:9").env("CDP_API_KEY", KEY),
    );
    assert!(
        common::stderr(&o).contains("the URL holds a user name or password"),
        "{}",
        common::stderr(&o)
    );
}

#[test]
fn plain_http_is_refused_for_hosts_that_only_look_like_loopback() {
    for url in [
        "http://127.0.0.1.evil.com",
        "http://localhost.evil.com",
        "http://user@evil.com",
        "http://127.0.0.1:8080@evil.com",
        "http://[::1]@evil.com",
    ] {
        for via_env in [false, true] {
            let mut c = common::bin();
            c.env("CDP_API_KEY", KEY)
                .args(["run", "x.csv", "--mapping", "m.toml"]);
            if via_env {
                c.env("CDP_ENDPOINT", url);
            } else {
                c.args(["--endpoint", url]);
            }
            let o = common::run(&mut c);
            assert_eq!(o.status.code(), Some(2), "{url}: {}", common::stderr(&o));
            assert!(
                common::stderr(&o).contains("plain http:// is allowed only for loopback"),
                "{url}: {}",
                common::stderr(&o)
            );
            assert_output_clean(&o);
        }
    }
}

/// `needle` appears nowhere in `bytes`.
fn assert_absent(what: &str, bytes: &[u8], needle: &str) {
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "{needle:?} appears in {what}"
    );
}

#[test]
fn object_storage_credentials_and_signed_queries_never_reach_output() {
    let dir = workdir();
    let server = s3::Server::start();
    let c = server.client();
    c.put(
        "in/events.csv",
        std::fs::read(dir.path("events.csv")).unwrap(),
    );
    let receiver = receiver(dir.dir(), KEY, Faults::default());
    let o = common::run(
        common::bin()
            .current_dir(dir.dir())
            .args(["-vv", "run", "s3://exports/in/", "--mapping", "events.toml"])
            .args(["--endpoint", &receiver.base_url()])
            .args(["--checkpoint", "s3://exports/state/"])
            .args(["--summary-json", "summary.json", "--report", "report.html"])
            .envs(s3::Server::env(&server.endpoint()))
            .env("CDP_API_KEY", KEY),
    );
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert_output_clean(&o);
    for (what, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        assert_absent(what, bytes, s3::SECRET_KEY);
    }
    // The state in the bucket: the checkpoint and the rejects parts.
    let state = c.list("state");
    assert!(state.len() >= 2, "{state:?}");
    for key in &state {
        let bytes = c.get(key).unwrap();
        assert_absent(key, &bytes, s3::SECRET_KEY);
        assert_no_key_in(key, &bytes);
    }
    let mut stack = vec![dir.dir().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_absent(
                    &p.display().to_string(),
                    &std::fs::read(&p).unwrap(),
                    s3::SECRET_KEY,
                );
            }
        }
    }
    assert_no_key_under(dir.dir());

    // A signed query on an https URL: refused, its signature never shown.
    let o = common::run(common::bin().current_dir(dir.dir()).args([
        "run",
        "https://example.com/export/x.csv?X-Amz-Credential=AKIDSENTINEL&X-Amz-Signature=SIGSENTINEL",
        "--mapping",
        "events.toml",
        "--dry-run",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(err.contains("X-Amz-Signature=REDACTED"), "{err}");
    for needle in ["SIGSENTINEL", "AKIDSENTINEL"] {
        assert_absent("stderr", &o.stderr, needle);
    }
}
