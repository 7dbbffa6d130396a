//! Issue 23: every call the engine emits is what the vendor's spec allows, byte for byte.
//! Every call of every fixture mapping is validated against the spec with the
//! `jsonschema` crate, every body is checked for repeated keys, and the same inputs are
//! delivered to the local receiver over loopback in strict mode (the engine sends
//! `X-Strict-Mode: 1`), which must refuse none. Then each finding of the issue on its
//! own: integration names and values, instants outside years 0000-9999, leap seconds,
//! the alias context, the sentAt placeholder inside user data, the reserved traits the
//! spec types, group's object type, and the Report Content Event.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use common::dry_run_lines as dry_run;
use common::spec::{assert_valid, calls_of, repeated_key, schema_for};
use common::{fixture, receiver, recorded_calls, stderr, Workdir};

mod common;

const PLACEHOLDER: &str = "0000-00-00T00:00:00.000Z";

fn rejects(d: &Workdir) -> Vec<Value> {
    common::read_lines(&d.path("rejects.ndjson"))
}

/// Each reject's row and detail.
fn rows_and_details(d: &Workdir) -> Vec<(u64, String)> {
    rejects(d)
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a body is JSON"))
        .collect()
}

/// Delivers `input` to a receiver of this test's own on 127.0.0.1 (strict mode: the
/// engine asks for it by default); returns the process output, the receiver's figures
/// and the recorded calls.
fn deliver(
    d: &Workdir,
    input: &Path,
    mapping: &Path,
    extra: &[&str],
) -> (Output, cdp_backfill::serve::Stats, Vec<Value>) {
    // Each delivery is a backfill of its own, started afresh.
    for f in ["cp.json", "delivered-rejects.ndjson"] {
        let _ = std::fs::remove_file(d.path(f));
    }
    let (server, record) = receiver(d.dir(), Default::default());
    let out = d
        .cmd()
        .arg("run")
        .arg(input)
        .arg("--mapping")
        .arg(mapping)
        .args(["--endpoint", &server.base_url()])
        .args([
            "--checkpoint",
            "cp.json",
            "--rejects",
            "delivered-rejects.ndjson",
        ])
        .args(extra)
        .output()
        .expect("run the binary");
    let stats = server.shutdown();
    let calls = recorded_calls(&record);
    let _ = std::fs::remove_file(record);
    (out, stats, calls)
}

fn assert_no_violation(stats: &cdp_backfill::serve::Stats, what: &str) {
    let v = &stats.violations;
    assert_eq!(
        (
            v.invalid_calls,
            v.invalid_requests,
            v.malformed_bodies,
            v.call_too_large,
            v.request_too_large
        ),
        (0, 0, 0, 0, 0),
        "{what}: the receiver (strict mode) refused something: {stats:?}"
    );
}

/// Every body of every fixture mapping, with and without `--sent-at now`: no object
/// repeats a key, every call fits its schema (a semantic event its own, an alias
/// `alias_all`), every batch fits `batch`; and the receiver in strict mode takes all of
/// them.
#[test]
fn every_call_of_every_fixture_mapping_fits_the_spec_and_repeats_no_key() {
    let d = Workdir::new();
    // fixtures/rich.toml maps generated rows (`generate --shape rich`).
    let out = d
        .cmd()
        .args([
            "generate", "--shape", "rich", "--rows", "300", "--out", "rich.csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pairs: Vec<(std::path::PathBuf, std::path::PathBuf)> = [
        ("all_calls.csv", "all_calls.toml"),
        ("semantic.csv", "semantic.toml"),
        ("events.csv", "events.toml"),
        ("typed.csv", "typed.toml"),
        ("typed.ndjson", "typed.toml"),
        ("typed.parquet", "typed.toml"),
        ("spec_exact.csv", "spec_exact.toml"),
    ]
    .into_iter()
    .map(|(i, m)| (fixture(i), fixture(m)))
    .collect();
    pairs.push((d.path("rich.csv"), fixture("rich.toml")));
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    let mut events = std::collections::BTreeSet::new();
    let (mut with_own_context, mut alias_with_context, mut batch_integrations) = (0, 0, 0);
    for (input, mapping) in &pairs {
        for extra in [&[][..], &["--sent-at", "now"][..]] {
            let what = format!("{} with {} {extra:?}", input.display(), mapping.display());
            let (out, lines) = dry_run(&d, input, mapping, extra);
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{what}: {}",
                stderr(&out)
            );
            assert!(!lines.is_empty(), "{what}: no bodies");
            for line in &lines {
                assert_eq!(
                    repeated_key(line.as_bytes()),
                    None,
                    "{what}: a repeated key in {line}"
                );
            }
            let bodies = parsed(&lines);
            for b in &bodies {
                if b.get("batch").is_some() {
                    assert_valid("batch", b);
                    batch_integrations += usize::from(b.get("integrations").is_some());
                } else {
                    assert_eq!(b["type"], "alias", "{what}: {b}");
                    alias_with_context += usize::from(b.get("context").is_some());
                }
            }
            let delivered = parsed(&lines);
            for c in calls_of(&delivered) {
                assert_valid(schema_for(&c), &c);
                if extra.is_empty() {
                    *types
                        .entry(c["type"].as_str().unwrap().to_string())
                        .or_default() += 1;
                    if c["type"] == "track" {
                        events.insert(c["event"].as_str().unwrap().to_string());
                    }
                }
            }
            for b in bodies.iter().filter_map(|b| b["batch"].as_array()) {
                with_own_context += b.iter().filter(|c| c.get("context").is_some()).count();
            }
            // A rejected row is rejected for what the fixture says (semantic.csv's rows
            // missing a required field, events.csv's four bad rows), never for the spec
            // checks of issue 23.
            for r in rejects(&d) {
                assert!(
                    !r["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("the API's spec types it"),
                    "{what}: {r}"
                );
            }
        }
    }
    for t in ["identify", "track", "page", "screen", "group", "alias"] {
        assert!(types.get(t).is_some_and(|n| *n > 0), "{t}: {types:?}");
    }
    for e in cdp_backfill::map::semantic::Semantic::ALL
        .iter()
        .map(|(_, n)| *n)
        .filter(|n| *n != "Report Content Event")
    {
        assert!(events.contains(e), "{e} is among the fixtures' events");
    }
    assert!(with_own_context > 0 && alias_with_context > 0 && batch_integrations > 0);

    // The receiver in strict mode refuses none of them.
    for (input, mapping) in [
        ("all_calls.csv", "all_calls.toml"),
        ("semantic.csv", "semantic.toml"),
        ("typed.parquet", "typed.toml"),
        ("spec_exact.csv", "spec_exact.toml"),
    ] {
        for extra in [&[][..], &["--sent-at", "now"][..]] {
            let (dry, lines) = dry_run(&d, &fixture(input), &fixture(mapping), extra);
            let want = calls_of(&parsed(&lines)).len();
            let (out, stats, calls) = deliver(&d, &fixture(input), &fixture(mapping), extra);
            assert_eq!(out.status.code(), dry.status.code(), "{}", stderr(&out));
            assert_no_violation(&stats, input);
            assert_eq!(calls.len(), want, "{input}: every call delivered");
        }
    }
}

/// The fixture's own calls, as the API reads them.
fn spec_exact_calls(d: &Workdir, extra: &[&str]) -> Vec<Value> {
    let (out, lines) = dry_run(
        d,
        &fixture("spec_exact.csv"),
        &fixture("spec_exact.toml"),
        extra,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    calls_of(&parsed(&lines))
}

#[test]
fn integration_names_keep_their_dots_and_their_values_are_booleans() {
    let d = Workdir::new();
    let calls = spec_exact_calls(&d, &[]);
    let by_user = |u: &str| {
        calls
            .iter()
            .find(|c| c["type"] == "identify" && c["userId"] == u)
            .unwrap()
    };
    // yes / No / OFF, read as booleans; the dotted name is one key.
    for (user, braze) in [("u1", true), ("u2", false), ("u3", false)] {
        assert_eq!(
            by_user(user)["integrations"],
            json!({"Customer.io Data Pipelines": true, "Braze Cloud Mode (Actions)": braze})
        );
    }
    // An output path's `\.` is a dot inside a name.
    assert_eq!(by_user("u1")["traits"]["plan.name"], "pro");
    assert!(by_user("u1")["traits"].get("plan").is_none());

    // A constant that is not a boolean is a mapping error naming the key and the fix.
    let input = d.write("i.csv", "user_id,flag\nu1,yes\nu2,maybe\nu3,\nu4,1\nu5,2\n");
    let write_mapping = |integrations: &str| {
        d.write(
            "m.toml",
            format!(
                "[integrations]\n{integrations}\n[[call]]\ntype = \"identify\"\nuser_id = \"user_id\"\n"
            ),
        )
    };
    for (line, hint) in [
        (
            "\"Customer.io Data Pipelines\" = { const = \"off\" }",
            "const = false",
        ),
        ("Braze = { const = 1 }", "write { const = true }"),
        (
            "Braze = { const = \"sometimes\" }",
            "{ const = true } or { const = false }",
        ),
        ("Braze = { template = \"{flag}\" }", "template"),
        ("Braze = { column = \"flag\", type = \"string\" }", "type"),
        ("Braze = { column = \"flag\", empty = \"null\" }", "empty"),
    ] {
        let (out, _) = dry_run(&d, &input, &write_mapping(line), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(
            err.contains("[integrations]") && err.contains(hint),
            "{line}: {err}"
        );
    }
    // From a column: a row whose value is not clearly a boolean is rejected by name; an
    // empty value leaves the destination out.
    let (out, lines) = dry_run(&d, &input, &write_mapping("\"a.b\" = \"flag\""), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = calls_of(&parsed(&lines));
    let mut got: Vec<(String, Value)> = calls
        .iter()
        .map(|c| {
            (
                c["userId"].as_str().unwrap().to_string(),
                c.get("integrations").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    // Rows with different integrations go to different requests.
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("u1".to_string(), json!({"a.b": true})),
            ("u3".to_string(), Value::Null),
            ("u4".to_string(), json!({"a.b": true})),
        ]
    );
    let rejected: Vec<(u64, String)> = rows_and_details(&d);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected[0].1.contains("\"maybe\"") && rejected[0].1.contains("boolean"));
    assert!(rejected[1].1.contains("\"2\""), "{rejected:?}");

    // A backslash that escapes nothing in an output path is a mapping error.
    let bad = d.write(
        "bad.toml",
        "[[call]]\ntype = \"identify\"\nuser_id = \"user_id\"\ntraits = { 'a\\b' = \"flag\" }\n",
    );
    let (out, _) = dry_run(&d, &input, &bad, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("backslash"), "{}", stderr(&out));
}

/// Instants outside years 0000-9999, in traits, properties or context as well as the
/// call's own timestamp, reject the row with the value (and for a unix value the unit
/// it was read in); a leap second is taken only at 23:59:60 UTC.
#[test]
fn instants_outside_years_0000_to_9999_and_misplaced_leap_seconds_reject_the_row() {
    let d = Workdir::new();
    let input = d.write(
        "t.csv",
        "user_id,iso,secs,guess\n\
         ok1,9999-12-31T21:00:00-02:00,253402300799,1700000000\n\
         ok2,0000-01-01T00:00:00Z,-62167219200,1700000000000\n\
         ok3,2016-12-31T23:59:60Z,0,-1\n\
         ok4,2017-01-01T05:29:60.5+05:30,1,1700000000000000\n\
         bad1,9999-12-31T23:00:00-02:00,0,0\n\
         bad2,0000-01-01T00:30:00+01:00,0,0\n\
         bad3,2020-01-01T00:00:00Z,1700000000000,0\n\
         bad4,2020-01-01T00:00:00Z,0,-99999999999\n\
         bad5,2023-03-06T12:21:60Z,0,0\n\
         bad6,2020-01-01T00:00:00Z,253402300800,0\n",
    );
    let mapping = d.write(
        "t.toml",
        "[columns]\n\
         iso = \"timestamp\"\n\
         secs = { type = \"timestamp\", format = \"unix_s\" }\n\
         guess = { type = \"timestamp\", format = \"unix\" }\n\
         [[call]]\n\
         type = \"identify\"\n\
         user_id = \"user_id\"\n\
         traits = { iso = \"iso\", secs = \"secs\" }\n\
         context = { \"app.guess\" = \"guess\" }\n",
    );
    let (out, lines) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = calls_of(&parsed(&lines));
    let got: Vec<[&str; 4]> = calls
        .iter()
        .map(|c| {
            [
                c["userId"].as_str().unwrap(),
                c["traits"]["iso"].as_str().unwrap(),
                c["traits"]["secs"].as_str().unwrap(),
                c["context"]["app"]["guess"].as_str().unwrap(),
            ]
        })
        .collect();
    assert_eq!(
        got,
        [
            [
                "ok1",
                "9999-12-31T23:00:00.000Z",
                "9999-12-31T23:59:59.000Z",
                "2023-11-14T22:13:20.000Z"
            ],
            [
                "ok2",
                "0000-01-01T00:00:00.000Z",
                "0000-01-01T00:00:00.000Z",
                "2023-11-14T22:13:20.000Z"
            ],
            [
                "ok3",
                "2017-01-01T00:00:00.000Z",
                "1970-01-01T00:00:00.000Z",
                "1969-12-31T23:59:59.000Z"
            ],
            [
                "ok4",
                "2017-01-01T00:00:00.500Z",
                "1970-01-01T00:00:01.000Z",
                "2023-11-14T22:13:20.000Z"
            ],
        ]
    );
    for c in &calls {
        assert_valid("identify", c);
    }
    let want = [
        (
            5,
            "\"9999-12-31T23:00:00-02:00\"",
            "+10000-01-01T01:00:00.000Z",
        ),
        (
            6,
            "\"0000-01-01T00:30:00+01:00\"",
            "-0001-12-31T23:30:00.000Z",
        ),
        (
            7,
            "\"1700000000000\" read in seconds (format = \"unix_s\")",
            "+55840-11-08T22:13:20.000Z",
        ),
        (
            8,
            "\"-99999999999\" read in seconds (the unit its magnitude suggests)",
            "-1199-02-15",
        ),
        (9, "\"2023-03-06T12:21:60Z\"", "leap second"),
        (
            10,
            "\"253402300800\" read in seconds",
            "+10000-01-01T00:00:00.000Z",
        ),
    ];
    let got = rejects(&d);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (r, (row, value, more)) in got.iter().zip(want) {
        let detail = r["detail"].as_str().unwrap();
        assert_eq!(r["row"], row, "{r}");
        assert_eq!(r["reason"], "bad_timestamp", "{r}");
        assert!(detail.contains(value) && detail.contains(more), "{detail}");
    }
}

/// The alias body: the batch's context and the call's own, merged into one `context`
/// (the call's values win); the local receiver, which refuses a repeated key, takes it.
#[test]
fn an_alias_with_a_context_of_its_own_sends_one_merged_context() {
    let d = Workdir::new();
    let (out, lines) = dry_run(
        &d,
        &fixture("spec_exact.csv"),
        &fixture("spec_exact.toml"),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let aliases: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with("{\"batch\""))
        .collect();
    assert_eq!(aliases.len(), 3);
    for a in &aliases {
        assert_eq!(a.matches("\"context\":").count(), 1, "{a}");
        assert_eq!(repeated_key(a.as_bytes()), None, "{a}");
    }
    let first: Value = serde_json::from_str(aliases[0]).unwrap();
    assert_eq!(
        first["context"],
        json!({"ip": "10.0.0.1", "locale": "de-CH", "device": {"id": "dev-1"}})
    );
    assert_eq!(
        first["integrations"],
        json!({"Customer.io Data Pipelines": true, "Braze Cloud Mode (Actions)": true})
    );
    let (out, stats, calls) = deliver(
        &d,
        &fixture("spec_exact.csv"),
        &fixture("spec_exact.toml"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_violation(&stats, "spec_exact");
    let alias = calls.iter().find(|c| c["type"] == "alias").unwrap();
    assert_eq!(alias["context"]["locale"], "de-CH");
}

/// `--sent-at now` stamps each call's own sentAt, found by the call's end, and leaves
/// the very same bytes inside user data as they were read.
#[test]
fn sent_at_now_never_rewrites_user_data_that_looks_like_its_placeholder() {
    let d = Workdir::new();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (out, stats, calls) = deliver(
        &d,
        &fixture("spec_exact.csv"),
        &fixture("spec_exact.toml"),
        &["--sent-at", "now"],
    );
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_violation(&stats, "spec_exact --sent-at now");
    assert_eq!(calls.len(), 18);
    for c in &calls {
        let t = chrono::DateTime::parse_from_rfc3339(c["sentAt"].as_str().unwrap()).unwrap();
        assert!(t >= before && t <= after, "{c}");
    }
    let track = calls
        .iter()
        .find(|c| c["type"] == "track" && c["userId"] == "u1")
        .unwrap();
    assert_eq!(
        track["properties"]["raw"],
        json!({"n": 1, "sentAt": PLACEHOLDER}),
        "the user's bytes arrive as they were read"
    );
    // The dry run writes the same: user data untouched, each call stamped.
    let calls = spec_exact_calls(&d, &["--sent-at", "now"]);
    let track = calls
        .iter()
        .find(|c| c["type"] == "track" && c["userId"] == "u1")
        .unwrap();
    assert_eq!(track["properties"]["raw"]["sentAt"], PLACEHOLDER);
    assert_ne!(track["sentAt"], PLACEHOLDER);
}

/// Names the spec types (identify's `traits.email` string and `traits.createdAt`
/// date-time, group's `traits.object_type_id`, page's `properties.url`, the context's
/// `ip`, `device.type`, ...) reject a row giving them another shape, naming the field
/// and the value; the other rows are delivered, and the receiver in strict mode takes
/// them all.
#[test]
fn reserved_names_the_spec_types_reject_a_row_with_another_shape() {
    let d = Workdir::new();
    let input = d.write(
        "users.ndjson",
        concat!(
            r#"{"id":"u1","email":"a@x.io","createdAt":"2024-01-02T03:04:05Z","url":"https://x.io","kind":"ios"}"#,
            "\n",
            r#"{"id":"u2","email":{"primary":"b@x.io"},"createdAt":"2024-01-02T03:04:05Z","url":"https://x.io","kind":"ios"}"#,
            "\n",
            r#"{"id":"u3","email":"c@x.io","createdAt":"yesterday","url":"https://x.io","kind":"ios"}"#,
            "\n",
            r#"{"id":"u4","email":"d@x.io","createdAt":"2024-01-02T03:04:05Z","url":42,"kind":"ios"}"#,
            "\n",
            r#"{"id":"u5","email":"e@x.io","createdAt":"2024-01-02T03:04:05Z","url":"https://x.io","kind":"windows"}"#,
            "\n",
            r#"{"id":"u6","email":"f@x.io","createdAt":"2024-01-02T03:04:05Z","url":"https://x.io","kind":"android","later":{"x":1}}"#,
            "\n",
            r#"{"id":"u7","email":"g@x.io","createdAt":"2024-01-02T03:04:05Z","url":"https://x.io","kind":"ios","later":{"x":2},"unsubscribed":"no"}"#,
            "\n",
        ),
    );
    let mapping = d.write(
        "users.toml",
        r#"
[[call]]
type = "identify"
user_id = "id"
traits = "rest"

[[call]]
type = "page"
user_id = "id"
name = { const = "Home" }
properties = { url = "url" }

[[call]]
type = "screen"
user_id = "id"
name = { const = "Feed" }
context = { "device.type" = "kind" }
"#,
    );
    let (out, lines) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for c in calls_of(&parsed(&lines)) {
        assert_valid(schema_for(&c), &c);
    }
    let got: Vec<(u64, String)> = rejects(&d)
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "bad_value", "{r}");
            (
                r["row"].as_u64().unwrap(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        (
            2,
            "traits.email must be a string",
            "{\"primary\":\"b@x.io\"}",
        ),
        (
            3,
            "traits.createdAt must be an RFC 3339 date-time",
            "\"yesterday\"",
        ),
        (4, "properties.url must be a string", "42"),
        (
            5,
            "context.device.type must be one of android, ios",
            "\"windows\"",
        ),
        (7, "traits.unsubscribed must be true or false", "\"no\""),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((row, detail), (wrow, field, value)) in got.iter().zip(want) {
        assert_eq!(*row, wrow, "{detail}");
        assert!(detail.contains(field) && detail.contains(value), "{detail}");
    }
    let (out, stats, calls) = deliver(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_no_violation(&stats, "users.ndjson");
    assert_eq!(calls.len(), 6, "rows 1 and 6, three calls each");
}

/// group: the object type id is sent in traits, as `objectTypeId` (the vendor's group
/// documentation and the spec's examples) and `object_type_id` (its group schema);
/// mapping it as a trait as well would send one key twice, a mapping error.
#[test]
fn group_sends_its_object_type_in_traits_under_both_documented_names() {
    let d = Workdir::new();
    let calls = spec_exact_calls(&d, &[]);
    let groups: Vec<&Value> = calls.iter().filter(|c| c["type"] == "group").collect();
    assert_eq!(groups.len(), 3);
    for (g, id) in groups.iter().zip(["2", "1", "7"]) {
        assert_eq!(g["traits"]["objectTypeId"], id, "{g}");
        assert_eq!(g["traits"]["object_type_id"], id, "{g}");
        assert!(g.get("objectTypeId").is_none(), "{g}");
        assert_valid("group", g);
    }
    let input = d.write("g.csv", "user_id,company,kind\nu1,c1,2\n");
    let mapping = d.write(
        "g.toml",
        "[[call]]\ntype = \"group\"\nuser_id = \"user_id\"\ngroup_id = \"company\"\nobject_type_id = \"kind\"\ntraits = { objectTypeId = \"kind\" }\n",
    );
    let (out, _) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("objectTypeId"), "{}", stderr(&out));
}

/// The ninth semantic event: `Report Content Event` needs `properties.activityType`,
/// and types `actionType`, `contentId` and `templateId`; like a delivery report it
/// needs no person.
#[test]
fn a_report_content_event_is_checked_against_its_schema() {
    let d = Workdir::new();
    let input = d.write(
        "c.csv",
        "activity,action,content,template\n\
         viewed,viewed_content,12,3\n\
         clicked,clicked_content,,\n\
         ,viewed_content,1,1\n\
         viewed,looked,1,1\n",
    );
    let mapping = d.write(
        "c.toml",
        "[columns]\ncontent = \"int\"\ntemplate = \"int\"\n\
         [[call]]\ntype = \"track\"\nevent = { const = \"Report Content Event\" }\n\
         properties = { activityType = \"activity\", actionType = \"action\", contentId = \"content\", templateId = \"template\" }\n",
    );
    let (out, lines) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let calls = calls_of(&parsed(&lines));
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert!(c.get("userId").is_none() && c.get("anonymousId").is_none());
        assert_valid("report_content_event", c);
    }
    let got: Vec<(u64, String)> = rows_and_details(&d);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, 3);
    assert!(got[0].1.contains("properties.activityType"), "{got:?}");
    assert_eq!(got[1].0, 4);
    assert!(got[1].1.contains("\"looked\""), "{got:?}");
    let (out, stats, calls) = deliver(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_no_violation(&stats, "report content");
    assert_eq!(calls.len(), 2);
    // Without activityType at all the mapping is refused before anything is read.
    let mapping = d.write(
        "c2.toml",
        "[[call]]\ntype = \"track\"\nevent = { const = \"Report Content Event\" }\nproperties = { actionType = \"action\" }\n",
    );
    let (out, _) = dry_run(&d, &input, &mapping, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("activityType"), "{}", stderr(&out));
}
