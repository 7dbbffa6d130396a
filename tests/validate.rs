//! `validate` predicts what a run sends: its counts are a dry run's, for any mapping and
//! input, because it runs the run's own reader, mappers and packing stage and only counts
//! the requests (it used to copy the packer's walk, and missed the close of a body whose
//! context value stays rare, so it said 137 requests where a run made 163).

use proptest::prelude::*;
use serde_json::Value;

use common::Workdir;

mod common;

/// What `validate` and a dry run both count, from their JSON reports.
#[derive(Debug, PartialEq)]
struct Counts {
    rows: Value,
    rows_rejected: Value,
    rejected_by_reason: Value,
    calls_by_type: Value,
    requests: Value,
    request_bytes: Value,
}

/// `validate` and `run --dry-run` of `input` with `mapping` and `limits`, in `w`.
fn both(w: &Workdir, input: &str, mapping: &str, limits: &[&str]) -> (Counts, Counts) {
    let v = w
        .cmd()
        .args([
            "validate",
            input,
            "--mapping",
            mapping,
            "--report-json",
            "v.json",
        ])
        .args(limits)
        .output()
        .unwrap();
    assert!(
        matches!(v.status.code(), Some(0 | 3)),
        "validate: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let _ = std::fs::remove_file(w.path("s.json"));
    let d = w
        .cmd()
        .args(["run", input, "--mapping", mapping, "--dry-run", "-q"])
        .args(["--summary-json", "s.json", "--rejects", "r.ndjson"])
        .args(limits)
        .output()
        .unwrap();
    assert!(
        matches!(d.status.code(), Some(0 | 3)),
        "dry run: {}",
        String::from_utf8_lossy(&d.stderr)
    );
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(w.path(name)).unwrap()).unwrap()
    };
    let (v, s) = (read("v.json"), read("s.json"));
    (
        Counts {
            rows: v["rows"].clone(),
            rows_rejected: v["rows_rejected"].clone(),
            rejected_by_reason: v["rejected_by_reason"].clone(),
            calls_by_type: v["calls_by_type"].clone(),
            requests: v["requests"].clone(),
            request_bytes: v["request_bytes"]["total"].clone(),
        },
        Counts {
            rows: s["rows_read"].clone(),
            rows_rejected: s["rows_rejected"].clone(),
            rejected_by_reason: s["rejected_by_reason"].clone(),
            calls_by_type: s["calls_by_type"].clone(),
            requests: s["requests"].clone(),
            request_bytes: s["request_bytes"].clone(),
        },
    )
}

/// A small xorshift, so the inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 100,000 rows whose event keys the requests by context: eight common event names and
/// four rare ones, so a rare value's body stays open for more than the packer's lag
/// limit (50,000 calls) and is closed before it is full.
#[test]
fn validate_counts_what_a_dry_run_sends_when_a_context_column_keys_the_requests() {
    let w = Workdir::new();
    let common = [
        "Order Completed",
        "Product Viewed",
        "Signed Up",
        "Cart Updated",
        "Subscription Renewed",
        "Email Opened",
        "Checkout Started",
        "Coupon Applied",
    ];
    let rare = ["Rare One", "Rare Two", "Rare Three", "Rare Four"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut csv = String::from("user_id,event,timestamp,note\n");
    for i in 0..100_000u64 {
        let r = rng.next();
        let event = match r % 20_000 {
            0..=3 => rare[(r % 4) as usize],
            _ => common[(r >> 20) as usize % common.len()],
        };
        let note = "x".repeat((i % 40) as usize);
        csv.push_str(&format!(
            "u{},{event},2024-01-{:02}T10:00:00Z,{note}\n",
            i % 997,
            1 + i % 28
        ));
    }
    w.write("ctx.csv", csv);
    w.write(
        "ctx.toml",
        "[context]\nlocale = \"event\"\n\n[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\ntimestamp = \"timestamp\"\nproperties = \"rest\"\n",
    );
    let (validated, dry) = both(&w, "ctx.csv", "ctx.toml", &[]);
    assert_eq!(validated, dry);
    assert!(dry.requests.as_u64().unwrap() > 40, "{dry:?}");
}

/// A mapping drawn at random: one to three calls of the batch types or alias, maybe a
/// batch-level context keyed by a column, over a CSV whose cells may be empty (so rows
/// go missing ids) or long (so calls go over the limit).
#[derive(Debug, Clone)]
struct Case {
    calls: Vec<&'static str>,
    context: Option<u64>,
    rows: Vec<(u64, u64, usize, bool)>,
    max_request_bytes: usize,
    max_call_bytes: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(
            prop::sample::select(vec!["track", "identify", "page", "group", "alias"]),
            1..4,
        ),
        prop::option::of(1u64..24),
        prop::collection::vec((0u64..50, 0u64..1000, 0usize..1500, any::<bool>()), 0..300),
        1500usize..12_000,
        400usize..1400,
    )
        .prop_map(|(calls, context, rows, req, call)| Case {
            calls,
            context,
            rows,
            max_request_bytes: req.max(call + 16),
            max_call_bytes: call,
        })
}

fn write_case(w: &Workdir, c: &Case) {
    let mut csv = String::from("uid,key,ts,blob,old\n");
    for (i, (uid, key, blob, empty)) in c.rows.iter().enumerate() {
        let uid = if *empty && i % 3 == 0 {
            String::new()
        } else {
            format!("u{uid}")
        };
        let key = c.context.map_or(0, |k| key % k);
        csv.push_str(&format!(
            "{uid},k{key},2024-02-{:02}T08:00:00Z,{},o{i}\n",
            1 + i % 28,
            "b".repeat(*blob)
        ));
    }
    w.write("p.csv", csv);
    let mut toml = String::new();
    if c.context.is_some() {
        toml.push_str("[context]\n\"app.key\" = \"key\"\n\n");
    }
    for kind in &c.calls {
        toml.push_str(&format!("[[call]]\ntype = \"{kind}\"\nuser_id = \"uid\"\n"));
        match *kind {
            "track" => toml.push_str("event = { template = \"Seen {key}\" }\ntimestamp = \"ts\"\nproperties = [\"blob\"]\n"),
            "identify" => toml.push_str("traits = [\"blob\", \"key\"]\n"),
            "page" => toml.push_str("name = \"key\"\ntimestamp = \"ts\"\n"),
            "group" => toml.push_str("group_id = \"key\"\ntraits = [\"blob\"]\n"),
            _ => toml.push_str("previous_id = \"old\"\n"),
        }
        toml.push('\n');
    }
    w.write("p.toml", toml);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// For any mapping and input, `validate` counts the rows, rejects, calls, requests and
    /// request bytes a dry run makes.
    #[test]
    fn validate_and_a_dry_run_agree_on_every_count(c in case()) {
        let w = Workdir::new();
        write_case(&w, &c);
        let limits = [
            "--max-request-bytes".to_string(),
            c.max_request_bytes.to_string(),
            "--max-call-bytes".to_string(),
            c.max_call_bytes.to_string(),
        ];
        let limits: Vec<&str> = limits.iter().map(String::as_str).collect();
        let (validated, dry) = both(&w, "p.csv", "p.toml", &limits);
        prop_assert_eq!(&validated.rows, &Value::from(c.rows.len()));
        prop_assert_eq!(validated, dry);
    }
}
