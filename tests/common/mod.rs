//! The one harness of the integration tests: the real binary (with `CDP_API_KEY` and
//! `CDP_ENDPOINT` cleared, so the environment a test runs in cannot change what it
//! tests), a temp dir per test ([`Workdir`]), the repository's fixtures and the shared
//! API spec, the in-process local receiver on an ephemeral loopback port, and one probe
//! of a child's peak memory ([`run_measured`]); [`spec`] holds the vendor spec as JSON Schema.
#![allow(dead_code)]

pub mod spec;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use cdp_backfill::config::Limits;
use cdp_backfill::serve::{Faults, ServeConfig, Server};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdp-backfill"));
    c.env_remove("CDP_API_KEY").env_remove("CDP_ENDPOINT");
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("fixtures").join(name)
}

/// The vendor's OpenAPI document: the shared copy beside the repository
/// (`../shared/spec`), else the one kept with the fixtures.
pub fn openapi_spec() -> PathBuf {
    let shared = repo().join("../shared/spec/pipelines-openapi.json");
    if shared.is_file() {
        shared
    } else {
        fixture("pipelines-openapi.json")
    }
}

/// A temp dir of a test's own, removed when the test ends, and the binary run in it.
pub struct Workdir(tempfile::TempDir);

impl Workdir {
    pub fn new() -> Workdir {
        Workdir(tempfile::tempdir().expect("a temp dir"))
    }

    /// A work dir holding copies of the named fixtures, so every path the tool writes
    /// is under it.
    pub fn with_fixtures(names: &[&str]) -> Workdir {
        let w = Workdir::new();
        for f in names {
            std::fs::copy(fixture(f), w.path(f)).expect("copy a fixture");
        }
        w
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        self.0.path()
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `name`; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write a test file");
        p
    }

    /// A generated event CSV of `rows` rows (`cdp-backfill generate`'s generator).
    pub fn generate(&self, name: &str, rows: u64, seed: u64) -> PathBuf {
        let p = self.path(name);
        cdp_backfill::generate::generate_file(&p, rows, seed).expect("generate an input");
        p
    }

    /// The binary, run in this directory.
    pub fn cmd(&self) -> Command {
        let mut c = bin();
        c.current_dir(self.0.path());
        c
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Workdir::new()
    }
}

/// `run INPUT --mapping MAPPING --dry-run --output bodies.ndjson --rejects
/// rejects.ndjson` in `d` (both files removed first): the process output and each body's
/// line as written.
pub fn dry_run_lines(
    d: &Workdir,
    input: &Path,
    mapping: &Path,
    extra: &[&str],
) -> (Output, Vec<String>) {
    let _ = std::fs::remove_file(d.path("bodies.ndjson"));
    let _ = std::fs::remove_file(d.path("rejects.ndjson"));
    let out = d
        .cmd()
        .arg("run")
        .arg(input)
        .arg("--mapping")
        .arg(mapping)
        .args([
            "--dry-run",
            "--output",
            "bodies.ndjson",
            "--rejects",
            "rejects.ndjson",
        ])
        .args(extra)
        .output()
        .expect("run the binary");
    let text = std::fs::read_to_string(d.path("bodies.ndjson")).unwrap_or_default();
    (out, text.lines().map(String::from).collect())
}

/// What [`run_measured`] saw of a child.
pub struct Measured {
    pub status: ExitStatus,
    /// The child's peak resident memory, KiB, from the kernel's own accounting of it
    /// (`wait4`'s `ru_maxrss`).
    pub peak_rss_kib: u64,
    pub elapsed: Duration,
}

impl Measured {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` (its stdio as the caller set it) to its end and measures its peak memory;
/// kills it and fails the test if it runs past `deadline`. `ru_maxrss` starts from this
/// process's resident memory at the spawn; a caller that bounds the child's memory from
/// below checks [`own_rss_kib`] against it.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which also reports its memory
pub fn run_measured(cmd: &mut Command, deadline: Duration) -> Measured {
    use std::os::unix::process::ExitStatusExt;
    let started = Instant::now();
    let mut child = cmd.spawn().expect("the binary starts");
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of a plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own unwaited child; both pointers are to live locals.
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(got >= 0, "wait4: {}", std::io::Error::last_os_error());
        if got == pid {
            return Measured {
                status: ExitStatus::from_raw(status),
                peak_rss_kib: usage.ru_maxrss as u64,
                elapsed: started.elapsed(),
            };
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung: still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This test process's resident memory now, KiB.
pub fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked:\n{stderr}"
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A receiver on 127.0.0.1 recording accepted calls into `dir/received.ndjson`.
pub fn receiver(dir: &Path, faults: Faults) -> (Server, PathBuf) {
    let record = dir.join("received.ndjson");
    let server = Server::start(ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        limits: Limits::default(),
        record: Some(record.clone()),
        faults,
    })
    .expect("the receiver starts on loopback");
    (server, record)
}

/// Every recorded call, parsed.
pub fn recorded_calls(record: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each recorded line is one JSON call"))
        .collect()
}

pub fn message_ids(calls: &[serde_json::Value]) -> HashSet<String> {
    calls
        .iter()
        .map(|c| {
            c["messageId"]
                .as_str()
                .expect("every call has a messageId")
                .to_string()
        })
        .collect()
}

/// The directory of the one backfill in `dir`'s default state directory
/// (`.cdp-backfill/NAME/`, as a run without `--checkpoint` keeps it).
pub fn backfill_dir(dir: &Path) -> PathBuf {
    let state = dir.join(".cdp-backfill");
    let found: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("no state directory {}: {e}", state.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().contains(".restarted-"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one backfill in {}: {found:?}",
        state.display()
    );
    found.into_iter().next().expect("one backfill")
}

/// The messageId seed a new backfill gives `input` under `namespace`: its content
/// identity's ([`cdp_backfill::map::message_id::content_seed`]).
pub fn seed_of(namespace: &str, input: &Path) -> u64 {
    let id = cdp_backfill::source::ContentIdentity::of_file(input).expect("read the input");
    cdp_backfill::map::message_id::content_seed(namespace, &id)
}

pub fn read_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Sends SIGINT (Ctrl-C) to a child.
pub fn interrupt(pid: u32) {
    assert!(Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success());
}
