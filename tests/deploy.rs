//! `deploy/`: the Kubernetes Indexed Job and the Dockerfile, checked offline. (CI also
//! runs `kubernetes-validate --strict` against the API schemas and `hadolint`; this test
//! checks what a schema cannot: that the pieces agree with each other and with the tool,
//! and that the Job's pods, run as it runs them, finish the backfill exactly.)

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use clap::Parser;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

/// The manifest's documents.
fn documents() -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy("job.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .collect()
}

fn s(v: &serde_yaml::Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

#[test]
fn the_job_is_an_indexed_job_whose_shards_match_its_completions() {
    let docs = documents();
    let job = docs
        .iter()
        .find(|d| d["kind"] == "Job")
        .expect("a Job in deploy/job.yaml");
    assert_eq!(s(&job["apiVersion"]), "batch/v1");
    let spec = &job["spec"];
    assert_eq!(s(&spec["completionMode"]), "Indexed");
    let completions = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(completions));
    assert!(spec["backoffLimitPerIndex"].as_u64().unwrap() >= 1);
    let pod = &spec["template"]["spec"];
    // backoffLimitPerIndex requires it; a new pod resumes the shard's checkpoint.
    assert_eq!(s(&pod["restartPolicy"]), "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    // The failure policy names this container.
    let rules = spec["podFailurePolicy"]["rules"].as_sequence().unwrap();
    assert!(rules
        .iter()
        .filter(|r| !r["onExitCodes"].is_null())
        .all(|r| r["onExitCodes"]["containerName"] == c["name"]));

    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| s(a).to_string())
        .collect();
    let shard = args
        .iter()
        .find_map(|a| a.strip_prefix("--shard="))
        .expect("--shard=$(JOB_COMPLETION_INDEX)/N");
    assert_eq!(shard, format!("$(JOB_COMPLETION_INDEX)/{completions}"));
    let checkpoint = args
        .iter()
        .find_map(|a| a.strip_prefix("--checkpoint="))
        .expect("--checkpoint in object storage");
    assert!(
        cdp_backfill::source::remote::is_object_url(checkpoint) && checkpoint.ends_with('/'),
        "{checkpoint}: the state must survive the pod, as a prefix in object storage"
    );
    // Exit 3 (finished with rejects) would make the Job retry a finished shard.
    assert!(
        args.iter().any(|a| a == "--rejects-exit-code=0"),
        "{args:?}"
    );
    // The grace period outlasts the drain, so SIGTERM ends in a checkpoint.
    let drain: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout="))
        .map_or(30, |d| d.parse().unwrap());
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain);

    // The API key comes from a Secret, never from the manifest.
    let env = c["env"].as_sequence().unwrap();
    let key = env
        .iter()
        .find(|e| e["name"] == "CDP_API_KEY")
        .expect("CDP_API_KEY in env");
    assert!(key["value"].is_null());
    assert!(!key["valueFrom"]["secretKeyRef"]["name"].is_null());

    // The tool accepts every argument, for every index.
    for i in 0..completions {
        let argv: Vec<String> = std::iter::once("cdp-backfill".to_string())
            .chain(
                args.iter()
                    .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &i.to_string())),
            )
            .collect();
        if let Err(e) = cdp_backfill::cli::Cli::try_parse_from(&argv) {
            panic!("index {i}: the manifest's arguments do not parse: {e}");
        }
    }
}

#[test]
fn the_image_is_multi_stage_and_runs_the_binary_as_a_user_that_is_not_root() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(text.contains("--locked"), "the build uses Cargo.lock");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0);
    // The manifest runs the image as the same user.
    let docs = documents();
    let job = docs.iter().find(|d| d["kind"] == "Job").unwrap();
    assert_eq!(
        job["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(uid as u64)
    );
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/cdp-backfill\"]"));
}

/// The Job's container arguments, with the `EDIT` values pointed at this test's bucket,
/// receiver and mapping, for index `i`.
fn pod_args(i: u64, receiver: &str, mapping: &str) -> Vec<String> {
    let docs = documents();
    let job = docs.iter().find(|d| d["kind"] == "Job").unwrap();
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            s(a).replace("$(JOB_COMPLETION_INDEX)", &i.to_string())
                .replace("s3://acme-exports/", "s3://exports/")
                .replace("s3://acme-backfill-state/", "s3://exports/state/")
                .replace("--endpoint=us", &format!("--endpoint={receiver}"))
                .replace("/config/mapping.toml", mapping)
        })
        .collect()
}

/// The Job's N pods, run as it runs them (its arguments, an environment holding only
/// what the manifest and the cluster give, a working directory nothing may be written
/// to), against an export in the test's S3 server: each exits 0, together they deliver
/// every call of the export exactly once, they write nothing outside the bucket, and
/// `status` of the state prefix says every shard is done. A pod run again for a finished
/// index (a retried or re-created Job) exits 0 without sending.
#[test]
fn the_jobs_pods_deliver_the_export_exactly_once_between_them() {
    let w = common::Workdir::new();
    let server = s3::Server::start();
    let c = server.client();
    let export = w.path("export");
    std::fs::create_dir(&export).unwrap();
    for (i, rows) in [6_000u64, 2_500, 4_000].into_iter().enumerate() {
        let part = w.generate(&format!("export/part-{i:04}.csv"), rows, 30 + i as u64);
        c.put(
            &format!("events/2024/part-{i:04}.csv"),
            std::fs::read(&part).unwrap(),
        );
    }
    c.put("events/2024/_SUCCESS", Vec::new());
    // What one local run of the same files sends.
    let mapping = common::fixture("events.toml");
    let dry = common::run(
        w.cmd()
            .args([
                "run",
                "export",
                "--dry-run",
                "--quiet",
                "--output",
                "whole.ndjson",
            ])
            .arg("--mapping")
            .arg(&mapping),
    );
    assert_eq!(dry.status.code(), Some(3), "{}", common::stderr(&dry));
    let mut expected: Vec<String> = std::fs::read_to_string(w.path("whole.ndjson"))
        .unwrap()
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["messageId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    expected.sort();

    let (receiver, record) = common::receiver(w.dir(), Default::default());
    let pod_dir = w.path("pod");
    std::fs::create_dir(&pod_dir).unwrap();
    let completions = documents().iter().find(|d| d["kind"] == "Job").unwrap()["spec"]
        ["completions"]
        .as_u64()
        .unwrap();
    let pod = |i: u64| {
        let mut cmd = common::bin();
        cmd.current_dir(&pod_dir)
            .env_clear()
            .args(pod_args(
                i,
                &receiver.base_url(),
                &mapping.to_string_lossy(),
            ))
            .env("CDP_API_KEY", "key-from-the-secret")
            .env("HOSTNAME", format!("cdp-backfill-{i}-x7k2p"))
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .envs(s3::Server::env(&server.endpoint()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let pods: Vec<_> = (0..completions)
        .map(|i| (i, pod(i).spawn().unwrap()))
        .collect();
    for (i, p) in pods {
        let out = p.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "pod {i}: {}",
            common::stderr(&out)
        );
    }
    let mut got = common::message_ids(&common::recorded_calls(&record))
        .into_iter()
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the pods' calls are not the local run's");
    let mut count: HashMap<String, usize> = HashMap::new();
    for call in common::recorded_calls(&record) {
        *count
            .entry(call["messageId"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "a call was sent twice");
    // A finished index run again: exit 0, nothing sent.
    let again = common::run(&mut pod(1));
    assert_eq!(again.status.code(), Some(0), "{}", common::stderr(&again));
    assert_eq!(common::recorded_calls(&record).len(), expected.len());
    // Nothing written where the pod runs (its root filesystem is read-only).
    let left: Vec<_> = std::fs::read_dir(&pod_dir).unwrap().collect();
    assert!(left.is_empty(), "the pods wrote {left:?}");
    let state = common::run(
        common::bin()
            .args(["status", "s3://exports/state/events-2024/"])
            .envs(s3::Server::env(&server.endpoint())),
    );
    let text = String::from_utf8_lossy(&state.stdout);
    assert!(
        text.contains(&format!(
            "{completions} of {completions} shards have a checkpoint"
        )) && text.contains("every shard is done"),
        "{text}"
    );
}
