//! Shared helpers for integration tests: a temp dir per test, the real binary, and the
//! in-process local receiver on an ephemeral loopback port.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

pub fn read_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}
