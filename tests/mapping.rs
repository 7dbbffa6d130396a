//! The mapping language end to end: every kind of call the engine emits is validated
//! against the vendor's OpenAPI schemas (`../shared/spec` beside the repository, or the
//! copy in `fixtures/`), timestamps in every supported form, per-row context splitting requests,
//! semantic-event rejects, mapping errors with locations, and the `inspect` and
//! `validate` commands. Each test drives the real binary in its own temp dir.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use common::spec::{assert_valid, calls_of, schema_errors, schema_errors_in, schema_for};
use common::Workdir;

mod common;

fn fixtures() -> PathBuf {
    common::repo().join("fixtures")
}

/// `run --dry-run --output bodies.ndjson`; returns the process output and the bodies.
fn dry_run(d: &Workdir, input: &Path, mapping: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
    let (out, lines) = common::dry_run_lines(d, input, mapping, extra);
    let bodies = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each body is JSON"))
        .collect();
    (out, bodies)
}

/// The rejects file of the last run in `d`.
fn rejects(d: &Workdir) -> Vec<Value> {
    std::fs::read_to_string(d.path("rejects.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each reject line is JSON"))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_spec_one_of_is_read_as_any_of() {
    // The spec's own example context fails its literal oneOf and passes as anyOf.
    let track = json!({"type": "track", "userId": "u", "event": "E", "context": {"ip": "8.8.8.8"}});
    assert!(!schema_errors_in("track", &track, false).is_empty());
    assert_valid("track", &track);
    // Still a schema: a context that is not an object fails.
    let bad = json!({"type": "track", "userId": "u", "event": "E", "context": "8.8.8.8"});
    assert!(!schema_errors("track", &bad).is_empty());
    let both = json!({"type": "identify", "userId": "u", "anonymousId": "a"});
    assert!(!schema_errors_in("identify", &both, false).is_empty());
    assert_valid("identify", &both);
}

#[test]
fn the_validator_catches_a_misnamed_field_or_a_wrong_type() {
    let good = json!({"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}});
    assert_valid("identify", &good);
    let misnamed = json!({"type": "identify", "userid": "u1", "traits": {"email": "a@b.c"}});
    assert!(
        !schema_errors("identify", &misnamed).is_empty(),
        "userid must fail"
    );
    let wrong_type = json!({"type": "identifyy", "userId": "u1"});
    assert!(
        !schema_errors("identify", &wrong_type).is_empty(),
        "a wrong type must fail"
    );
    let track = json!({"type": "track", "userId": "u1", "event": "E", "timestamp": "2024-03-05T10:20:30.000Z"});
    assert_valid("track", &track);
    let bad_ts = json!({"type": "track", "userId": "u1", "event": "E", "timestamp": "yesterday"});
    assert!(
        !schema_errors("track", &bad_ts).is_empty(),
        "a bad date-time must fail"
    );
    let no_event = json!({"type": "track", "userId": "u1", "name": "E"});
    assert!(
        !schema_errors("track", &no_event).is_empty(),
        "track without event must fail"
    );
    let alias = json!({"type": "alias", "userId": "u1", "previous_id": "p"});
    assert!(
        !schema_errors("alias_all", &alias).is_empty(),
        "previous_id must fail"
    );
    let device = json!({"type": "track", "userId": "u1", "event": "Device Deleted", "context": {"device": {"tokn": "t"}}});
    assert!(
        !schema_errors("delete_device", &device).is_empty(),
        "device.tokn must fail"
    );
}

fn count_types(calls: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for c in calls {
        *m.entry(c["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn all_six_call_types_match_the_spec_with_and_without_context() {
    let d = Workdir::new();
    let (out, bodies) = dry_run(
        &d,
        &fixtures().join("all_calls.csv"),
        &fixtures().join("all_calls.toml"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = calls_of(&bodies);
    let types = count_types(&calls);
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert_eq!(types.get(t), Some(&3), "{t}: {types:?}");
    }
    for c in &calls {
        assert_valid(schema_for(c), c);
        // The same call without its context and integrations is valid too.
        let mut bare = c.clone();
        bare.as_object_mut().unwrap().remove("context");
        bare.as_object_mut().unwrap().remove("integrations");
        assert_valid(schema_for(&bare), &bare);
    }
    // Batch bodies as a whole, and alias calls never inside one.
    for b in &bodies {
        if let Some(items) = b.get("batch") {
            assert_valid("batch", b);
            assert!(items
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["type"] != "alias"));
        } else {
            assert_eq!(
                b["type"], "alias",
                "a body outside a batch is an alias: {b}"
            );
        }
    }
    // Field names and shapes the spec asks for.
    let group = calls.iter().find(|c| c["type"] == "group").unwrap();
    // In traits, as the vendor's documentation (objectTypeId) and the spec's group schema
    // (object_type_id) name it; a stringified integer.
    assert_eq!(group["traits"]["objectTypeId"], "2");
    assert_eq!(group["traits"]["object_type_id"], "2");
    assert!(group.get("objectTypeId").is_none(), "{group}");
    let identify = calls.iter().find(|c| c["type"] == "identify").unwrap();
    assert_eq!(identify["traits"]["address"]["city"], "Zürich");
    assert_eq!(
        identify["traits"]["meta"],
        json!({"source": "crm", "tags": [1, 2]})
    );
    assert_eq!(identify["timestamp"], "2024-03-05T10:20:30.000Z");
    let track = calls.iter().find(|c| c["type"] == "track").unwrap();
    assert_eq!(track["properties"]["label"], "Plan pro for Ann Lee");
    assert_eq!(track["properties"]["revenue"], 12.5);
    let page = calls.iter().find(|c| c["type"] == "page").unwrap();
    assert_eq!(page["name"], "Home");
    let alias = calls.iter().find(|c| c["type"] == "alias").unwrap();
    assert_eq!(
        (alias["userId"].as_str(), alias["previousId"].as_str()),
        (Some("u1"), Some("a1"))
    );
}

#[test]
fn semantic_events_match_their_schemas_and_a_missing_required_field_is_rejected_by_name() {
    let d = Workdir::new();
    let (out, bodies) = dry_run(
        &d,
        &fixtures().join("semantic.csv"),
        &fixtures().join("semantic.toml"),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "rows were rejected: {}",
        stderr(&out)
    );
    let calls = calls_of(&bodies);
    let events: Vec<&str> = calls.iter().map(|c| c["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "Device Created or Updated",
            "Device Deleted",
            "User Deleted",
            "User Suppressed",
            "User Unsuppressed",
            "Relationship Deleted",
            "Object Deleted",
            "Report Delivery Event",
            "Checkout Started"
        ]
    );
    for c in &calls {
        assert_valid(schema_for(c), c);
        assert_valid("track", c);
    }
    let rejects = rejects(&d);
    let got: Vec<(u64, &str)> = rejects
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["detail"].as_str().unwrap()))
        .collect();
    let want = [
        (9, "context.device.token"),
        (10, "context.device.type"),
        (11, "userId"),
        (12, "properties.objectId"),
        (13, "properties.metric"),
        (14, "properties.deliveryId"),
        (15, "properties.objectId"),
    ];
    assert_eq!(got.len(), want.len(), "{rejects:?}");
    for ((row, detail), (wrow, field)) in got.iter().zip(want) {
        assert_eq!(*row, wrow);
        assert!(
            detail.contains(field),
            "row {row}: {detail} should name {field}"
        );
    }
    assert!(rejects.iter().all(|r| r["reason"] == "semantic_event"));
}

#[test]
fn rows_with_different_context_never_share_a_request() {
    let d = Workdir::new();
    let mut csv = String::from("user_id,event,ip,n\n");
    for i in 0..300 {
        let ip = ["10.0.0.1", "10.0.0.2", "192.168.1.9"][(i * 7 / 3) % 3];
        csv.push_str(&format!("u{i},Viewed,{ip},{i}\n"));
    }
    let input = d.write("ctx.csv", &csv);
    let mapping = d.write(
        "ctx.toml",
        r#"
[context]
ip = "ip"
[integrations]
All = { const = true }
[[call]]
type = "track"
user_id = "user_id"
event = "event"
properties = { row_ip = "ip", n = "n" }
"#,
    );
    let (out, bodies) = dry_run(
        &d,
        &input,
        &mapping,
        &["--max-request-bytes", "2000", "--max-call-bytes", "400"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(d.path("bodies.ndjson")).unwrap();
    for line in text.lines() {
        assert!(line.len() <= 2000, "a body of {} bytes", line.len());
    }
    let mut seen = vec![0u32; 300];
    let mut last_n_by_ip: std::collections::HashMap<String, i64> = Default::default();
    for b in &bodies {
        let ip = b["context"]["ip"]
            .as_str()
            .expect("every body carries its context");
        assert_eq!(b["integrations"], json!({"All": true}));
        for c in b["batch"].as_array().unwrap() {
            assert_eq!(
                c["properties"]["row_ip"], ip,
                "a call in a body of another context"
            );
            assert!(
                c.get("context").is_none(),
                "batch-level context is not repeated per call"
            );
            let n = c["properties"]["n"].as_i64().unwrap();
            seen[n as usize] += 1;
            // Order is kept within one context value.
            let last = last_n_by_ip.entry(ip.to_string()).or_insert(-1);
            assert!(n > *last, "call {n} after {last} for {ip}");
            *last = n;
        }
    }
    assert!(seen.iter().all(|&k| k == 1), "every row exactly once");
    assert!(
        bodies.len() >= 6,
        "small limit: several bodies per context ({})",
        bodies.len()
    );
}

#[test]
fn the_local_receiver_accepts_every_call_type_including_alias_on_its_own_route() {
    let d = Workdir::new();
    let out = d
        .cmd()
        .arg("run")
        .arg(fixtures().join("all_calls.csv"))
        .arg("--mapping")
        .arg(fixtures().join("all_calls.toml"))
        .args([
            "--endpoint",
            "local",
            "--local-record",
            "rec.ndjson",
            "--rejects",
            "rejects.ndjson",
            "--summary-json",
            "s.json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("s.json")).unwrap()).unwrap();
    assert_eq!(s["calls_delivered"], 18, "{s}");
    assert_eq!(
        s["requests"], 6,
        "3 batches (one per context) + 3 alias requests: {s}"
    );
}

/// One track call per timestamp column, its event naming the column.
fn ts_mapping(cols: &[(&str, &str)], defaults: &str) -> String {
    let mut m = format!("[defaults]\n{defaults}\n");
    for (col, spec) in cols {
        m.push_str(&format!(
            "[[call]]\ntype = \"track\"\nuser_id = \"u\"\nevent = {{ const = \"{col}\" }}\ntimestamp = {{ column = \"{col}\"{spec} }}\n"
        ));
    }
    m
}

/// (row, event) → timestamp, from the bodies.
fn timestamps(bodies: &[Value]) -> Vec<(String, String)> {
    calls_of(bodies)
        .iter()
        .map(|c| {
            (
                format!(
                    "{}#{}",
                    c["event"].as_str().unwrap(),
                    c["userId"].as_str().unwrap()
                ),
                c["timestamp"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn timestamps_in_every_form_become_utc_milliseconds() {
    let d = Workdir::new();
    let input = d.write(
        "ts.csv",
        "u,iso,naive,date,pat,s,ms,us,ns,auto\n\
         r1,2024-03-05T10:20:30.123+02:00,2024-03-10T02:30:00,2024-02-29,05/03/2024 10:20,1709634030,1709634030123,1709634030123456,1709634030123456789,1709634030\n\
         r2,2024-03-05T10:20:30.98765Z,2024-11-03T01:30:00,2024-12-31,31/12/2023 23:59,0,1,1000,1000000,1709634030123\n\
         r3,2024-03-05 10:20:30-05:30,2024-07-01 12:00:00.5,2024-07-01,01/07/2024 00:00,1,2,3,4,1709634030123456\n\
         r4,1970-01-01T00:00:00Z,2024-01-01T00:00:00Z,1970-01-01,01/01/1970 01:00,2,3,4,5,1709634030123456789\n",
    );
    let mapping = d.write(
        "ts.toml",
        ts_mapping(
            &[
                ("iso", ""),
                ("naive", ", timezone = \"America/New_York\""),
                ("date", ", format = \"date\""),
                (
                    "pat",
                    ", format = \"%d/%m/%Y %H:%M\", timezone = \"Europe/Paris\"",
                ),
                ("s", ", format = \"unix_s\""),
                ("ms", ", format = \"unix_ms\""),
                ("us", ", format = \"unix_us\""),
                ("ns", ", format = \"unix_ns\""),
                ("auto", ", format = \"unix\""),
            ],
            "timezone = \"UTC\"",
        ),
    );
    let (out, bodies) = dry_run(&d, &input, &mapping, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: std::collections::BTreeMap<String, String> = timestamps(&bodies).into_iter().collect();
    let want = [
        ("iso#r1", "2024-03-05T08:20:30.123Z"),
        ("iso#r2", "2024-03-05T10:20:30.987Z"),
        ("iso#r3", "2024-03-05T15:50:30.000Z"),
        ("iso#r4", "1970-01-01T00:00:00.000Z"),
        // DST gap in New York: 02:30 does not exist, shifted forward to 03:30 EDT.
        ("naive#r1", "2024-03-10T07:30:00.000Z"),
        // DST overlap: 01:30 happens twice, the earlier (EDT) instant.
        ("naive#r2", "2024-11-03T05:30:00.000Z"),
        ("naive#r3", "2024-07-01T16:00:00.500Z"),
        // An explicit offset wins over the zone.
        ("naive#r4", "2024-01-01T00:00:00.000Z"),
        ("date#r1", "2024-02-29T00:00:00.000Z"),
        ("date#r2", "2024-12-31T00:00:00.000Z"),
        ("date#r3", "2024-07-01T00:00:00.000Z"),
        ("date#r4", "1970-01-01T00:00:00.000Z"),
        ("pat#r1", "2024-03-05T09:20:00.000Z"),
        ("pat#r2", "2023-12-31T22:59:00.000Z"),
        ("pat#r3", "2024-06-30T22:00:00.000Z"),
        ("pat#r4", "1970-01-01T00:00:00.000Z"),
        ("s#r1", "2024-03-05T10:20:30.000Z"),
        ("s#r2", "1970-01-01T00:00:00.000Z"),
        ("s#r3", "1970-01-01T00:00:01.000Z"),
        ("s#r4", "1970-01-01T00:00:02.000Z"),
        ("ms#r1", "2024-03-05T10:20:30.123Z"),
        ("ms#r2", "1970-01-01T00:00:00.001Z"),
        ("us#r1", "2024-03-05T10:20:30.123Z"),
        ("us#r2", "1970-01-01T00:00:00.001Z"),
        ("ns#r1", "2024-03-05T10:20:30.123Z"),
        ("ns#r2", "1970-01-01T00:00:00.001Z"),
        // By magnitude: seconds, milliseconds, microseconds, nanoseconds.
        ("auto#r1", "2024-03-05T10:20:30.000Z"),
        ("auto#r2", "2024-03-05T10:20:30.123Z"),
        ("auto#r3", "2024-03-05T10:20:30.123Z"),
        ("auto#r4", "2024-03-05T10:20:30.123Z"),
    ];
    for (k, v) in want {
        assert_eq!(got.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(got.len(), 36, "every call of every row");
}

#[test]
fn unparseable_pre_1970_and_far_future_timestamps_are_rejected_with_the_value() {
    let d = Workdir::new();
    let input = d.write(
        "bad.csv",
        "u,t\nr1,yesterday\nr2,1969-12-31T23:59:59Z\nr3,2999-01-01T00:00:00Z\nr4,2024-03-05T10:20:30\nr5,2024-03-05T10:20:30Z\n",
    );
    let mapping = d.write(
        "bad.toml",
        ts_mapping(&[("t", "")], "max_future_hours = 24"),
    );
    let (out, bodies) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(calls_of(&bodies).len(), 1);
    let rejects = rejects(&d);
    let details: Vec<&str> = rejects
        .iter()
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details.len(), 4, "{details:?}");
    for (detail, value, why) in [
        (details[0], "yesterday", ""),
        (details[1], "1969-12-31T23:59:59Z", "before 1970"),
        (details[2], "2999-01-01T00:00:00Z", "future"),
        (details[3], "2024-03-05T10:20:30", "no UTC offset"),
    ] {
        assert!(detail.contains(value) && detail.contains(why), "{detail}");
    }
    assert!(rejects.iter().all(|r| r["reason"] == "bad_timestamp"));
    // The margin is configurable: a large one lets 2999 through.
    let mapping = d.write(
        "far.toml",
        ts_mapping(&[("t", "")], "max_future_hours = 10000000"),
    );
    let (_, bodies) = dry_run(&d, &input, &mapping, &[]);
    let ts: Vec<String> = timestamps(&bodies).into_iter().map(|(_, t)| t).collect();
    assert_eq!(ts, ["2999-01-01T00:00:00.000Z", "2024-03-05T10:20:30.000Z"]);

    // Only the call's own timestamp is held to the API's range: a birth date before
    // 1970 or a plan's end years ahead, typed as timestamps in traits, are sent as
    // they are (they used to reject the row).
    let input = d.write(
        "people.csv",
        "u,t,born,plan_ends\nr1,2024-03-05T10:20:30Z,1965-03-01,2031-01-01\n",
    );
    let mapping = d.write(
        "people.toml",
        "[columns]\nborn = { type = \"timestamp\", format = \"date\", timezone = \"UTC\" }\nplan_ends = { type = \"timestamp\", format = \"date\", timezone = \"UTC\" }\n[[call]]\ntype = \"identify\"\nuser_id = \"u\"\ntimestamp = \"t\"\ntraits = \"rest\"\n",
    );
    std::fs::remove_file(d.path("bodies.ndjson")).unwrap();
    let (out, bodies) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let calls = calls_of(&bodies);
    assert_eq!(calls[0]["traits"]["born"], "1965-03-01T00:00:00.000Z");
    assert_eq!(calls[0]["traits"]["plan_ends"], "2031-01-01T00:00:00.000Z");
}

#[test]
fn mapping_errors_name_the_line_and_column_and_stop_before_anything_is_read() {
    let d = Workdir::new();
    let input = d.write("in.csv", "user_id,event,ts\nu1,E,2024-03-05T10:20:30Z\n");
    let base = "[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\n";
    let cases: &[(&str, String, &[&str])] = &[
        ("unknown key", format!("{base}event = \"event\"\nuser_idd = \"x\"\n"), &["line 5", "user_idd", "expected one of"]),
        ("unknown column", format!("{base}event = \"evnt\"\n"), &["line 4, column 9", "\"evnt\"", "Its columns are: user_id, event, ts"]),
        ("bad call type", "[[call]]\ntype = \"trak\"\n".to_string(), &["line 2, column 8", "identify, track, page, screen, group or alias"]),
        ("bare number", format!("{base}event = 42\n"), &["line 4, column 9", "{ const = 42 }"]),
        ("bad column type", format!("[columns]\nts = \"flaot\"\n{base}event = \"event\"\n"), &["line 2, column 6", "`float`"]),
        ("bad empty policy", format!("{base}event = {{ column = \"event\", empty = \"blank\" }}\n"), &["line 4", "`omit`, `null`, `empty`"]),
        ("bad template", format!("{base}event = {{ template = \"Order {{status\" }}\n"), &["line 4, column 22", "without a closing"]),
        ("template column", format!("{base}event = {{ template = \"Order {{status}}\" }}\n"), &["line 4, column 29", "\"status\""]),
        ("unknown time zone", format!("[defaults]\ntimezone = \"Mars/Olympus\"\n{base}event = \"event\"\n"), &["line 2, column 12", "IANA"]),
        ("bad format", format!("{base}event = \"event\"\ntimestamp = {{ column = \"ts\", format = \"unix_sec\" }}\n"), &["line 5", "unix_ms"]),
        ("two sources", format!("{base}event = {{ column = \"event\", const = \"E\" }}\n"), &["line 4", "exactly one of"]),
        ("bad payload", format!("{base}event = \"event\"\nproperties = \"all\"\n"), &["line 5, column 14", "\"rest\""]),
        (
            "unknown [columns] entry",
            format!("[columns]\namount = \"float\"\n{base}event = \"event\"\n"),
            &["line 2, column 1", "\"amount\""],
        ),
        (
            "semantic event without its field",
            format!("{base}event = {{ const = \"Device Deleted\" }}\n"),
            &["call #1", "device.token"],
        ),
        ("zone needed", format!("{base}event = \"event\"\ntimestamp = {{ column = \"ts\", format = \"%Y-%m-%d\" }}\n"), &["line 5", "timezone"]),
        // Ids and names are strings: a type would send a number or an object.
        (
            "typed id",
            "[[call]]\ntype = \"track\"\nuser_id = { column = \"user_id\", type = \"int\" }\nevent = \"event\"\n".to_string(),
            &["call #1 user_id: type = \"int\" is not allowed here", "leave `type` out"],
        ),
        ("boolean event", format!("{base}event = {{ const = true }}\n"), &["call #1 event: const = true is not allowed here"]),
        (
            "one pair of brackets",
            "[call]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\n".to_string(),
            &["line 1, column 1", "hint: write each call as [[call]]"],
        ),
    ];
    for (what, text, needles) in cases {
        let mapping = d.write("bad.toml", text);
        let (out, _) = dry_run(&d, &input, &mapping, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{what}: {n:?} missing from:\n{err}");
        }
        assert!(
            !d.path("bodies.ndjson").exists(),
            "{what}: nothing may be written"
        );
    }
}

#[test]
fn the_call_type_can_come_from_a_column_in_a_mixed_file() {
    let d = Workdir::new();
    let input = d.write(
        "mixed.csv",
        "kind,user_id,event,name,group,prev\n\
         identify,u1,,,,\n\
         track,u1,Paid,,,\n\
         page,u1,,Home,,\n\
         screen,u1,,Feed,,\n\
         group,u1,,,g1,\n\
         alias,u1,,,,p1\n\
         tracking,u1,Paid,,,\n",
    );
    let mapping = d.write(
        "mixed.toml",
        "[[call]]\ntype = { column = \"kind\" }\nuser_id = \"user_id\"\nevent = \"event\"\nname = \"name\"\ngroup_id = \"group\"\nprevious_id = \"prev\"\n",
    );
    let (out, bodies) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = calls_of(&bodies);
    let types: Vec<&str> = calls.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["alias", "identify", "track", "page", "screen", "group"]
    );
    for c in &calls {
        assert_valid(schema_for(c), c);
    }
    let rejects = rejects(&d);
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["reason"], "bad_call_type");
    assert!(rejects[0]["detail"]
        .as_str()
        .unwrap()
        .contains("\"tracking\""));
}

#[test]
fn column_types_and_empty_policies_are_applied_exactly() {
    let d = Workdir::new();
    let input = d.write(
        "typed.csv",
        "id,i,f,b,j,s,auto,n_omit,n_null,n_empty\n\
         u1,42,1.50,yes,\"{\"\"a\"\": [1, 2]}\",007,12.5,,,\n\
         u2,-7,3,0,[],x,true,1,2,3\n\
         u3,4.5,1,1,[],x,x,,,\n",
    );
    let mapping = d.write(
        "typed.toml",
        r#"
[columns]
i = "int"
f = "float"
b = "bool"
j = "json"
s = "string"
n_omit = { type = "int", empty = "omit" }
n_null = { type = "int", empty = "null" }
n_empty = { type = "int", empty = "empty" }

[[call]]
type = "identify"
user_id = "id"
traits = { i = "i", f = "f", b = "b", j = "j", s = "s", auto = "auto", "nested.omit" = "n_omit", "nested.null" = "n_null", "nested.empty" = "n_empty" }
"#,
    );
    let (out, bodies) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = calls_of(&bodies);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0]["traits"],
        json!({"i": 42, "f": 1.5, "b": true, "j": {"a": [1, 2]}, "s": "007", "auto": 12.5,
               "nested": {"null": null, "empty": ""}})
    );
    assert_eq!(
        calls[1]["traits"],
        json!({"i": -7, "f": 3, "b": false, "j": [], "s": "x", "auto": true,
               "nested": {"omit": 1, "null": 2, "empty": 3}})
    );
    let r = rejects(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["reason"], "bad_value");
    assert!(r[0]["detail"]
        .as_str()
        .unwrap()
        .contains("column i: \"4.5\" is not an integer"));
}

#[test]
fn message_ids_are_deterministic_unless_mapped_from_a_column() {
    let d = Workdir::new();
    let input = d.write("m.csv", "u,mid\nu1,my-id-1\nu2,\n");
    let mapping = d.write(
        "m.toml",
        "namespace = \"crm\"\n[[call]]\ntype = \"identify\"\nuser_id = \"u\"\nmessage_id = \"mid\"\n[[call]]\ntype = \"identify\"\nuser_id = \"u\"\n",
    );
    let ids = |d: &Workdir| -> Vec<String> {
        let (out, bodies) = dry_run(d, &input, &mapping, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        calls_of(&bodies)
            .iter()
            .map(|c| c["messageId"].as_str().unwrap().to_string())
            .collect()
    };
    let a = ids(&d);
    assert_eq!(a, ids(&d), "the same input and mapping give the same ids");
    assert_eq!(a[0], "my-id-1");
    // An empty column falls back to the deterministic id, distinct per row and call.
    assert_eq!(a[1].len(), 36);
    let uniq: std::collections::BTreeSet<&String> = a.iter().collect();
    assert_eq!(uniq.len(), 4);
    // The namespace is part of the id.
    let other = d.write(
        "m2.toml",
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replace("crm", "crm2"),
    );
    let (_, bodies) = dry_run(&d, &input, &other, &[]);
    let b = calls_of(&bodies);
    assert_ne!(b[1]["messageId"], json!(a[1]));
}

#[test]
fn sent_at_is_left_out_by_default_and_stamped_at_send_time_when_asked() {
    let d = Workdir::new();
    let input = fixtures().join("all_calls.csv");
    let mapping = fixtures().join("all_calls.toml");
    let (_, plain) = dry_run(&d, &input, &mapping, &[]);
    assert!(calls_of(&plain).iter().all(|c| c.get("sentAt").is_none()));
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (out, stamped) = dry_run(&d, &input, &mapping, &["--sent-at", "now"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    let calls = calls_of(&stamped);
    assert_eq!(calls.len(), 18);
    for c in &calls {
        let t = c["sentAt"].as_str().expect("every call has sentAt");
        assert_eq!(t.len(), 24, "{t}");
        let t = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        assert!(t >= before && t <= after, "{t} is the send time");
        assert_valid(schema_for(c), c);
    }
}

/// The starter mapping is used as written: numeric ids (which it used to write twice in
/// `[columns]`, a TOML error) and an NDJSON object named like an id (which it used to
/// pick as `user_id`) included.
#[test]
fn a_starter_mapping_runs_unchanged_with_numeric_ids_and_nested_objects() {
    let d = Workdir::new();
    let csv = d.write(
        "num.csv",
        "user_id,event,timestamp,amount\n123,Buy,2024-03-05T10:20:30Z,1.5\n124,Buy,2024-03-05T10:21:30Z,2\n",
    );
    let ndjson = d.write(
        "nested.ndjson",
        "{\"id\":1,\"user\":{\"email\":\"a@x\"},\"event\":\"E\",\"ts\":\"2024-03-05T10:20:30Z\"}\n{\"id\":2,\"user\":{\"email\":\"b@x\"},\"event\":\"E\",\"ts\":\"2024-03-05T10:20:31Z\"}\n",
    );
    for (input, mapping, user_ids) in [
        (&csv, "num.toml", ["123", "124"]),
        (&ndjson, "nested.toml", ["1", "2"]),
    ] {
        let out = d
            .cmd()
            .arg("inspect")
            .arg(input)
            .args(["--emit-mapping", mapping])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let (out, bodies) = dry_run(&d, input, &d.path(mapping), &[]);
        let starter = std::fs::read_to_string(d.path(mapping)).unwrap();
        assert_eq!(out.status.code(), Some(0), "{}\n{starter}", stderr(&out));
        let calls = calls_of(&bodies);
        let got: Vec<&str> = calls
            .iter()
            .filter(|c| c["type"] == "track")
            .map(|c| c["userId"].as_str().unwrap())
            .collect();
        assert_eq!(got, user_ids, "{starter}");
        std::fs::remove_file(d.path("bodies.ndjson")).unwrap();
    }
}

#[test]
fn inspect_profiles_an_input_and_emits_a_mapping_that_validates() {
    let d = Workdir::new();
    let out = d
        .cmd()
        .arg("inspect")
        .arg(fixtures().join("events.csv"))
        .args(["--emit-mapping", "starter.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "40 rows read, 12 columns",
        "timestamp (rfc3339)",
        "range: 20",
        "amount\n    type: float",
        "is_trial\n    type: bool",
        "samples:",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let starter = std::fs::read_to_string(d.path("starter.toml")).unwrap();
    for needle in [
        "user_id = \"user_id\"",
        "anonymous_id = \"anonymous_id\"",
        "event = \"event\"",
        "timestamp = \"timestamp\"",
    ] {
        assert!(
            starter.contains(needle),
            "{needle:?} missing from:\n{starter}"
        );
    }
    let out = d
        .cmd()
        .arg("validate")
        .arg(fixtures().join("events.csv"))
        .args(["--mapping", "starter.toml", "--report-json", "report.json"])
        .output()
        .unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"], 40, "{}", stderr(&out));
    assert_eq!(report["calls_by_type"]["track"], 36, "{report}");
}

#[test]
fn validate_reports_counts_rejects_time_range_and_sizes_without_sending() {
    let d = Workdir::new();
    let out = d
        .cmd()
        .arg("validate")
        .arg(fixtures().join("events.csv"))
        .arg("--mapping")
        .arg(fixtures().join("events.toml"))
        .args([
            "--report-json",
            "report.json",
            "--max-request-bytes",
            "20000",
            "--max-call-bytes",
            "19000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing was sent"), "{text}");
    assert!(text.contains("first rejects:"), "{text}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("report.json")).unwrap()).unwrap();
    assert_eq!(r["rows"], 40);
    assert_eq!(r["rows_rejected"], 4);
    assert_eq!(r["calls_by_type"], json!({"track": 36}));
    assert_eq!(
        r["rejected_by_reason"],
        json!({"bad_timestamp": 2, "call_too_large": 1, "missing_id": 1})
    );
    assert_eq!(r["call_bytes"]["count"], 36);
    assert!(r["request_bytes"]["max"].as_u64().unwrap() <= 20000);
    assert!(r["requests"].as_u64().unwrap() >= 1);
    assert!(r["first_timestamp"].as_str().unwrap() <= r["last_timestamp"].as_str().unwrap());
    assert_eq!(r["first_rejects"].as_array().unwrap().len(), 4);
    // The call over the limit carries its whole record: the text report shows the start
    // of that line and its length, the JSON report all of it.
    assert!(
        text.lines().all(|l| l.len() < 1000),
        "a reject line was shown whole: {text}"
    );
    assert!(
        text.contains("bytes in all; --report-json keeps the whole line)"),
        "{text}"
    );
    assert!(r["first_rejects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().len() > 10_000));
}

#[test]
fn emitted_payloads_are_pinned() {
    // The messageIds are seeded by the input's content and the namespace, so they are the
    // same on every machine and from any directory.
    let d = Workdir::new();
    for f in ["all_calls.csv", "all_calls.toml"] {
        std::fs::copy(fixtures().join(f), d.path(f)).unwrap();
    }
    let (out, _) = dry_run(
        &d,
        Path::new("all_calls.csv"),
        Path::new("all_calls.toml"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bodies = std::fs::read_to_string(d.path("bodies.ndjson")).unwrap();
    insta::assert_snapshot!(bodies);
}

#[test]
fn a_quote_that_is_also_the_delimiter_is_a_usage_error() {
    for flags in [["--quote", ","], ["--delimiter", "\""]] {
        let o = common::bin()
            .args(["run", "x.csv", "--mapping", "m.toml", "--dry-run"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains("--delimiter and --quote are both"),
            "{flags:?}: {err}"
        );
    }
}
