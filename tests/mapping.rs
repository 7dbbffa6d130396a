//! The mapping language end to end: every kind of call the engine emits is validated
//! against the vendor's OpenAPI schemas (/work/shared/spec, copied at
//! `SPEC` below), timestamps in every supported form, per-row context splitting requests,
//! semantic-event rejects, mapping errors with locations, and the `inspect` and
//! `validate` commands. Each test drives the real binary in its own temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cdp-backfill");
const SPEC: &str = "/work/shared/spec/pipelines-openapi.json";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The OpenAPI document, or the copy kept with the fixtures when the shared one is absent.
fn spec_doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC)
            .or_else(|_| std::fs::read_to_string(fixtures().join("pipelines-openapi.json")))
            .expect("the vendor's OpenAPI spec");
        serde_json::from_str(&text).expect("the spec is JSON")
    })
}

/// Validates `instance` against `components.schemas.<name>`: the whole document is the
/// root (so its `#/components/schemas/...` references resolve) with a `$ref` added.
fn schema_errors(name: &str, instance: &Value) -> Vec<String> {
    let mut root = spec_doc().clone();
    let obj = root.as_object_mut().expect("the spec is an object");
    obj.insert("$ref".into(), json!(format!("#/components/schemas/{name}")));
    obj.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    let v = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("the spec compiles as JSON Schema");
    v.iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

fn assert_valid(name: &str, instance: &Value) {
    let errs = schema_errors(name, instance);
    assert!(
        errs.is_empty(),
        "{name} schema refuses {instance}:\n{}",
        errs.join("\n")
    );
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("a temp dir"))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.0.path());
        c
    }
    /// `run --dry-run --output bodies.ndjson`; returns the process output and the bodies.
    fn dry_run(&self, input: &Path, mapping: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
        let out = self
            .cmd()
            .arg("run")
            .arg(input)
            .arg("--mapping")
            .arg(mapping)
            .args(["--dry-run", "--output", "bodies.ndjson", "--rejects", "rejects.ndjson"])
            .args(extra)
            .output()
            .expect("run the binary");
        let text = std::fs::read_to_string(self.path("bodies.ndjson")).unwrap_or_default();
        let bodies = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("each body is JSON"))
            .collect();
        (out, bodies)
    }
    fn rejects(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("rejects.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each reject line is JSON"))
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every call in the bodies, with its body's batch-level context/integrations merged in
/// (as the API applies them), and whether it came alone (alias) or in a batch.
fn calls_of(bodies: &[Value]) -> Vec<Value> {
    let mut calls = Vec::new();
    for b in bodies {
        match b.get("batch") {
            Some(items) => {
                for it in items.as_array().expect("batch is an array") {
                    let mut c = it.clone();
                    for k in ["context", "integrations"] {
                        if let Some(v) = b.get(k) {
                            c.as_object_mut().unwrap().entry(k).or_insert(v.clone());
                        }
                    }
                    calls.push(c);
                }
            }
            None => calls.push(b.clone()),
        }
    }
    calls
}

/// The schema a call must satisfy: its type's, or for a semantic event its own.
fn schema_for(call: &Value) -> &'static str {
    match (call["type"].as_str(), call["event"].as_str()) {
        (Some("track"), Some("Device Created or Updated")) => "create_update_device",
        (Some("track"), Some("Device Deleted")) => "delete_device",
        (Some("track"), Some("User Deleted")) => "delete_person",
        (Some("track"), Some("User Suppressed")) => "suppress_person",
        (Some("track"), Some("User Unsuppressed")) => "unsuppress_person",
        (Some("track"), Some("Relationship Deleted")) => "relationship_deleted",
        (Some("track"), Some("Object Deleted")) => "group_deleted",
        (Some("track"), Some("Report Delivery Event")) => "report_delivery_event",
        (Some("alias"), _) => "alias_all",
        (Some("identify"), _) => "identify",
        (Some("track"), _) => "track",
        (Some("page"), _) => "page",
        (Some("screen"), _) => "screen",
        (Some("group"), _) => "group",
        _ => panic!("a call of no known type: {call}"),
    }
}

#[test]
fn the_validator_catches_a_misnamed_field_or_a_wrong_type() {
    let good = json!({"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}});
    assert_valid("identify", &good);
    let misnamed = json!({"type": "identify", "userid": "u1", "traits": {"email": "a@b.c"}});
    assert!(!schema_errors("identify", &misnamed).is_empty(), "userid must fail");
    let wrong_type = json!({"type": "identifyy", "userId": "u1"});
    assert!(!schema_errors("identify", &wrong_type).is_empty(), "a wrong type must fail");
    let track = json!({"type": "track", "userId": "u1", "event": "E", "timestamp": "2024-03-05T10:20:30.000Z"});
    assert_valid("track", &track);
    let bad_ts = json!({"type": "track", "userId": "u1", "event": "E", "timestamp": "yesterday"});
    assert!(!schema_errors("track", &bad_ts).is_empty(), "a bad date-time must fail");
    let no_event = json!({"type": "track", "userId": "u1", "name": "E"});
    assert!(!schema_errors("track", &no_event).is_empty(), "track without event must fail");
    let alias = json!({"type": "alias", "userId": "u1", "previous_id": "p"});
    assert!(!schema_errors("alias_all", &alias).is_empty(), "previous_id must fail");
    let device = json!({"type": "track", "userId": "u1", "event": "Device Deleted", "context": {"device": {"tokn": "t"}}});
    assert!(!schema_errors("delete_device", &device).is_empty(), "device.tokn must fail");
}
