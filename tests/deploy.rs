//! `deploy/`: the Kubernetes Indexed Job and the Dockerfile, checked offline. (CI also
//! runs `kubernetes-validate --strict` against the API schemas and `hadolint`; this test
//! checks what a schema cannot: that the pieces agree with each other and with the tool.)

use std::path::PathBuf;

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
