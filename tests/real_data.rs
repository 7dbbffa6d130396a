//! Real-world data end to end (issue 20): values cleaned into numbers, per-value error
//! policies counted per column, nested NDJSON and Parquet paths, object payloads, call
//! types from a column in any case, names that never matched, the early stop, and a
//! starter mapping that delivers a CRM export as written. Each test runs the real binary
//! against the local receiver and checks the calls it accepted, value for value.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use cdp_backfill::serve::Faults;
use common::Workdir;

mod common;

/// Runs a backfill of `input` with `mapping` into a fresh receiver; returns the output,
/// the calls it accepted (in the order received) and the summary JSON.
fn deliver(
    w: &Workdir,
    input: &Path,
    mapping: &Path,
    extra: &[&str],
) -> (Output, Vec<Value>, Value) {
    let (server, record) = common::receiver(w.dir(), Faults::default());
    let url = server.base_url();
    let out = common::run(
        w.cmd()
            .arg("run")
            .arg(input)
            .arg("--mapping")
            .arg(mapping)
            .args(["--endpoint", &url, "--no-checkpoint", "--progress", "never"])
            .args([
                "--summary-json",
                "summary.json",
                "--rejects",
                "rejects.ndjson",
            ])
            .args(extra),
    );
    server.shutdown();
    let calls = common::recorded_calls(&record);
    let summary = std::fs::read_to_string(w.path("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out, calls, summary)
}

/// Runs `inspect --emit-mapping starter.toml` on `input` (with `extra` options), checks
/// that the starter holds each of `needles`, and returns inspect's output and the starter.
fn emit_starter(w: &Workdir, input: &Path, extra: &[&str], needles: &[&str]) -> (String, String) {
    let out = common::run(
        w.cmd()
            .arg("inspect")
            .arg(input)
            .args(extra)
            .args(["--emit-mapping", "starter.toml"]),
    );
    assert_eq!(code(&out), Some(0), "{}", common::stderr(&out));
    let starter = std::fs::read_to_string(w.path("starter.toml")).unwrap();
    for needle in needles {
        assert!(
            starter.contains(needle),
            "{needle:?} missing from:\n{starter}"
        );
    }
    (String::from_utf8_lossy(&out.stdout).into_owned(), starter)
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn crm() -> PathBuf {
    common::fixture("crm_contacts.csv")
}

const CRM_MAPPING: &str = r#"
[defaults]
timezone = "UTC"

[columns]
"Lifetime Value" = { type = "float", clean = "currency" }
"Discount" = { clean = "percent" }
"Opt In" = "bool"
"Account Number" = "string"
"Created Date" = { type = "timestamp", format = "%m/%d/%Y %H:%M" }
"Last Activity" = { type = "timestamp", format = "%m/%d/%Y" }

[[call]]
type = "identify"
user_id = "Contact ID"
timestamp = "Created Date"
traits = { from = "rest", keep = ["Created Date"] }
"#;

#[test]
fn currency_percent_and_yes_no_arrive_as_numbers_and_booleans_ids_as_text_on_the_right_day() {
    let w = Workdir::new();
    let mapping = w.write("crm.toml", CRM_MAPPING);
    let (out, calls, summary) = deliver(&w, &crm(), &mapping, &[]);
    assert_eq!(code(&out), Some(3), "{}", common::stderr(&out));
    assert_eq!(calls.len(), 5, "every row with an id: {calls:?}");
    let by_id = |id: &str| -> &Value {
        calls
            .iter()
            .find(|c| c["userId"] == id)
            .unwrap_or_else(|| panic!("no call for {id}"))
    };
    let ana = by_id("0031U00001AbCdE");
    assert_eq!(ana["timestamp"], "2019-02-27T17:06:00.000Z");
    assert_eq!(ana["traits"]["Lifetime Value"], json!(325.0));
    assert!(ana["traits"]["Lifetime Value"].is_number());
    assert_eq!(ana["traits"]["Discount"], json!(15));
    assert_eq!(ana["traits"]["Opt In"], json!(true));
    assert_eq!(ana["traits"]["Company"], "Acme, Inc.");
    // 19 digits: a JSON number would be rounded to ...2300.
    assert_eq!(ana["traits"]["Account Number"], "4000123456789012345");
    // The timestamp column is kept as a trait too, as the column type reads it.
    assert_eq!(ana["traits"]["Created Date"], "2019-02-27T17:06:00.000Z");
    assert_eq!(ana["traits"]["Last Activity"], "2021-03-04T00:00:00.000Z");
    let bo = by_id("0031U00001AbCdF");
    assert_eq!(bo["traits"]["Lifetime Value"], json!(4737.25));
    assert_eq!(bo["traits"]["Opt In"], json!(false));
    assert_eq!(bo["traits"]["Discount"], json!(0));
    assert_eq!(
        by_id("0031U00001AbCdG")["traits"]["Lifetime Value"],
        json!(1234.56)
    );
    assert_eq!(
        by_id("0031U00001AbCdH")["traits"]["Lifetime Value"],
        json!(-12.5)
    );
    assert_eq!(
        by_id("0031U00001AbCdI")["traits"]["Lifetime Value"],
        json!(1_000_000.0)
    );
    assert_eq!(by_id("0031U00001AbCdI")["traits"]["First Name"], "Élodie");
    assert_eq!(summary["rejected_by_reason"], json!({"missing_id": 1}));
    // The row without an id counts none of its values.
    let fixed = &summary["values_fixed"];
    assert_eq!(fixed["Lifetime Value"]["cleaned"], 5, "{fixed}");
    assert_eq!(fixed["Discount"]["cleaned"], 5, "{fixed}");
    assert_eq!(fixed["Lifetime Value"]["examples"][0]["value"], "$325.00");
    assert_eq!(fixed["Lifetime Value"]["examples"][0]["row"], 1);
    let text = common::stderr(&out);
    assert!(text.contains("values fixed"), "{text}");
}

#[test]
fn values_that_do_not_parse_are_omitted_nulled_or_kept_and_counted_per_column() {
    let w = Workdir::new();
    let input = w.write(
        "orders.csv",
        "id,a,b,c,d\nu1,1.5,2,3,2024-01-01\nu2,n/a,x,y,someday\nu3,,7,ok,2024-02-30\n",
    );
    let mapping = w.write(
        "m.toml",
        r#"
[defaults]
on_error = "omit"
[columns]
a = "float"
b = { type = "int", on_error = "null" }
c = { type = "float", on_error = "keep" }
d = { type = "timestamp", format = "date", timezone = "UTC" }
[[call]]
type = "identify"
user_id = "id"
traits = ["a", "b", "c", "d"]
"#,
    );
    let (out, calls, summary) = deliver(&w, &input, &mapping, &[]);
    assert_eq!(code(&out), Some(0), "{}", common::stderr(&out));
    let traits: Vec<&Value> = calls.iter().map(|c| &c["traits"]).collect();
    assert_eq!(
        *traits[0],
        json!({"a": 1.5, "b": 2, "c": 3, "d": "2024-01-01T00:00:00.000Z"})
    );
    assert_eq!(*traits[1], json!({"b": null, "c": "y"}));
    assert_eq!(*traits[2], json!({"b": 7, "c": "ok"}));
    let f = &summary["values_fixed"];
    assert_eq!(f["a"]["omitted"], 1, "{f}");
    assert_eq!(f["b"]["nulled"], 1, "{f}");
    assert_eq!(f["c"]["kept"], 2, "{f}");
    assert_eq!(f["d"]["omitted"], 2, "{f}");
    assert_eq!(
        f["a"]["examples"][0],
        json!({"source": input.display().to_string(), "row": 2, "fix": "omitted", "value": "n/a"})
    );
    // The id itself still rejects: on_error is not allowed there.
    let bad = w.write(
        "bad.toml",
        "[[call]]\ntype = \"identify\"\nuser_id = { column = \"id\", on_error = \"keep\" }\n",
    );
    let (out, _, _) = deliver(&w, &input, &bad, &[]);
    assert_eq!(code(&out), Some(2));
    assert!(common::stderr(&out).contains("on_error is not allowed here"));
}

#[test]
fn a_starter_mapping_for_the_crm_export_delivers_every_row_with_an_id_as_written() {
    let w = Workdir::new();
    let (shown, starter) = emit_starter(
        &w,
        &crm(),
        &[],
        &[
            "user_id = \"Contact ID\"",
            "\"Lifetime Value\" = { type = \"float\", clean = \"currency\" }",
            "\"Discount\" = { type = \"float\", clean = \"percent\" }",
            "\"Account Number\" = \"string\"",
            "\"Opt In\" = \"bool\"",
            "\"Created Date\" = { type = \"timestamp\", format = \"%m/%d/%Y %H:%M\" }",
            "WARNING: column \"Last Activity\"",
            "timezone = \"UTC\"",
            "FILL IN",
        ],
    );
    assert!(
        shown.contains("column \"Last Activity\": every value reads as %m/%d/%Y and as %d/%m/%Y"),
        "{shown}"
    );
    let (out, calls, summary) = deliver(&w, &crm(), &w.path("starter.toml"), &[]);
    assert_eq!(code(&out), Some(3), "{}\n{starter}", common::stderr(&out));
    assert_eq!(
        summary["rejected_by_reason"],
        json!({"missing_id": 1}),
        "{starter}"
    );
    assert_eq!(calls.len(), 5);
    let ana = calls
        .iter()
        .find(|c| c["userId"] == "0031U00001AbCdE")
        .unwrap();
    assert_eq!(ana["traits"]["Lifetime Value"], json!(325.0), "{starter}");
    assert_eq!(ana["traits"]["Account Number"], "4000123456789012345");
    assert_eq!(ana["timestamp"], "2019-02-27T17:06:00.000Z");
    assert_eq!(ana["traits"]["Email"], "ana@example.com");
}

#[test]
fn ndjson_call_types_from_a_column_in_any_case_with_nested_ids_and_merged_properties() {
    let w = Workdir::new();
    let (out, calls, summary) = deliver(
        &w,
        &common::fixture("nested_events.ndjson"),
        &common::fixture("nested_events.toml"),
        &[],
    );
    assert_eq!(code(&out), Some(0), "{}", common::stderr(&out));
    let types: Vec<&str> = calls.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["identify", "track", "track", "page", "track"]);
    assert_eq!(calls[0]["userId"], "u-1");
    assert_eq!(
        calls[0]["traits"],
        json!({"email": "ana@example.com", "plan": "pro"})
    );
    assert!(calls[0].get("properties").is_none());
    assert_eq!(
        calls[1]["properties"],
        json!({"total": 1234.5, "order_id": "1234567890123456789", "currency": "USD", "items": [{"sku": "A-1", "qty": 2}]})
    );
    assert_eq!(calls[3]["name"], "Pricing");
    assert_eq!(calls[4]["properties"]["total"], "n/a");
    let f = &summary["values_fixed"]["properties.total"];
    // "$1,234.50" cleaned, "99.90" a number already, "n/a" kept.
    assert_eq!(
        (f["cleaned"].as_u64(), f["kept"].as_u64()),
        (Some(1), Some(1)),
        "{f}"
    );
}

#[test]
fn a_misspelt_path_is_named_with_the_nearest_key_and_strict_mapping_sends_nothing() {
    let w = Workdir::new();
    let input = common::fixture("nested_events.ndjson");
    let mapping = w.write(
        "typo.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user.id\"\nevent = { const = \"Order\" }\nproperties = { total = \"properties.totl\", currency = \"properties.currency\" }\n",
    );
    let out = common::run(w.cmd().arg("validate").arg(&input).args([
        "--mapping",
        "typo.toml",
        "--report-json",
        "r.json",
        "--show-calls",
        "1",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "\"properties.totl\" had no value in any row: did you mean \"properties.total\"?"
        ),
        "{text}"
    );
    assert!(
        text.contains("keys in the data that nothing maps:"),
        "{text}"
    );
    assert!(
        text.contains("first 1 call(s), as sent:\n{\n  \"type\": \"track\""),
        "{text}"
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(w.path("r.json")).unwrap()).unwrap();
    assert_eq!(
        r["never_matched"],
        json!([{"path": "properties.totl", "suggestion": "properties.total"}])
    );
    assert!(r["unmapped_keys"]
        .as_array()
        .unwrap()
        .contains(&json!("properties.total")));
    let strict = common::run(w.cmd().arg("validate").arg(&input).args([
        "--mapping",
        "typo.toml",
        "--strict-mapping",
    ]));
    assert_eq!(code(&strict), Some(2));
    // A run refuses before sending anything.
    let (out, calls, _) = deliver(&w, &input, &mapping, &["--strict-mapping"]);
    assert_eq!(code(&out), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("did you mean \"properties.total\""));
    assert!(calls.is_empty(), "nothing may be sent: {calls:?}");
    // Without the flag it runs, and the summary names the path.
    let (out, calls, summary) = deliver(&w, &input, &mapping, &[]);
    assert_eq!(code(&out), Some(0), "{}", common::stderr(&out));
    assert_eq!(calls.len(), 5);
    assert_eq!(summary["never_matched"][0]["path"], "properties.totl");
}

#[test]
fn a_csv_read_as_ndjson_stops_after_its_first_rows_with_exit_2_and_sends_nothing() {
    let w = Workdir::new();
    let input = w.generate("contacts.csv", 5000, 1);
    let mapping = w.write(
        "m.toml",
        "[[call]]\ntype = \"identify\"\nuser_id = \"user_id\"\n",
    );
    let (out, calls, summary) = deliver(&w, &input, &mapping, &["--format", "ndjson"]);
    let err = common::stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(err.contains("stopped early: all of the first"), "{err}");
    assert!(err.contains("--format"), "{err}");
    assert!(calls.is_empty());
    assert!(summary["rows_read"].as_u64().unwrap() < 5000, "{summary}");
    assert_eq!(summary["outcome"], "failed");
    // A mapping that fits nothing points at the mapping instead.
    let wrong = w.write(
        "wrong.toml",
        "[[call]]\ntype = \"identify\"\nuser_id = \"nobody\"\n",
    );
    let csv = w.write("few.csv", format!("nobody,x\n{}", ",1\n".repeat(12)));
    let (out, _, _) = deliver(&w, &csv, &wrong, &[]);
    assert_eq!(code(&out), Some(2));
    assert!(common::stderr(&out).contains("the mapping probably does not fit"));
    // --max-reject-rate stops a run that rejects too much.
    let half = w.write("half.csv", "id,v\nu1,1\n,2\nu2,3\n,4\n");
    let (out, _, _) = deliver(
        &w,
        &half,
        &w.write(
            "id.toml",
            "[[call]]\ntype = \"identify\"\nuser_id = \"id\"\n",
        ),
        &["--max-reject-rate", "10%"],
    );
    assert_eq!(code(&out), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("--max-reject-rate"));
}

#[test]
fn parquet_struct_fields_map_keys_and_list_items_are_reached_by_path() {
    let w = Workdir::new();
    let mapping = w.write(
        "p.toml",
        r#"
[[call]]
type = "track"
user_id = "user.id"
event = "event"
timestamp = "ts"
properties = { city = "address.city", plan = "attrs.plan", first_tag = "/tags/0", amount = "amount" }
"#,
    );
    let input = common::fixture("nested.parquet");
    let (out, calls, summary) = deliver(&w, &input, &mapping, &[]);
    assert_eq!(code(&out), Some(3), "{}", common::stderr(&out));
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["userId"], "u-1");
    assert_eq!(
        calls[0]["properties"],
        json!({"city": "Zürich", "plan": "pro", "first_tag": "vip", "amount": 12.5})
    );
    // Row 2's map has no `plan` key; row 3's list is empty.
    assert_eq!(
        calls[1]["properties"],
        json!({"city": "Kraków", "first_tag": "beta", "amount": 99.0})
    );
    assert_eq!(
        calls[2]["properties"],
        json!({"city": "Lyon", "plan": "team", "amount": -12.5})
    );
    assert_eq!(summary["rejected_by_reason"], json!({"missing_id": 1}));
    // A struct field that does not exist is a mapping error with a suggestion.
    let typo = w.write(
        "t.toml",
        "[[call]]\ntype = \"track\"\nuser_id = \"user.idd\"\nevent = \"event\"\n",
    );
    let (out, _, _) = deliver(&w, &input, &typo, &[]);
    assert_eq!(code(&out), Some(2));
    assert!(
        common::stderr(&out).contains("did you mean \"user.id\"?"),
        "{}",
        common::stderr(&out)
    );
    // A map key no row has is named at the end.
    let never = w.write("n.toml", "[[call]]\ntype = \"track\"\nuser_id = \"user.id\"\nevent = \"event\"\nproperties = { x = \"attrs.plna\" }\n");
    let (_, _, summary) = deliver(&w, &input, &never, &[]);
    assert_eq!(summary["never_matched"][0]["path"], "attrs.plna");
}

#[test]
fn mapping_errors_suggest_the_nearest_name() {
    let w = Workdir::new();
    let input = w.write("in.csv", "user_id,event\nu1,E\n");
    for (text, needle) in [
        ("[[call]]\ntype = \"trak\"\nuser_id = \"user_id\"\n", "did you mean \"track\"?"),
        ("[[call]]\ntype = \"track\"\nuser_idd = \"user_id\"\nevent = \"event\"\n", "did you mean `user_id`?"),
        ("[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"evnt\"\n", "did you mean \"event\"?"),
        ("[columns]\nevent = \"strng\"\n[[call]]\ntype = \"track\"\nuser_id = \"user_id\"\nevent = \"event\"\n", "did you mean `string`?"),
        ("[[call]]\ntype = \"identify\"\nuser_id = \"user_id\"\nproperties = \"rest\"\n", "an identify call does not carry properties: write traits instead"),
    ] {
        let m = w.write("m.toml", text);
        let (out, _, _) = deliver(&w, &input, &m, &[]);
        assert_eq!(code(&out), Some(2), "{text}");
        assert!(common::stderr(&out).contains(needle), "{needle:?}: {}", common::stderr(&out));
    }
    // Call types in any case, in the mapping and in the rows.
    let m = w.write(
        "ok.toml",
        "[[call]]\ntype = \"Track\"\nuser_id = \"user_id\"\nevent = \"event\"\n",
    );
    let (out, calls, _) = deliver(&w, &input, &m, &[]);
    assert_eq!(code(&out), Some(0), "{}", common::stderr(&out));
    assert_eq!(calls[0]["type"], "track");
}

/// A warehouse export that mixes call types, in any case, with the user id inside an
/// object, a 20-digit id, money and percentages inside the `props` object and US dates.
const MIXED: &str = r#"{"Type":"IDENTIFY","user":{"id":12345678901234567890,"email":"a@x.io"},"created_at":"02/27/2019 17:06","props":{"ltv":"$1,200.00"}}
{"Type":"track","event":"Order Completed","user":{"id":"u-2"},"created_at":"03/13/2019 08:00","props":{"total":"4,737.25","currency":"USD","discount":"15%"}}
{"Type":"Track","event":"Order Completed","user":{"id":"u-3"},"created_at":"12/01/2019 10:00","props":{"total":"USD 12.00","currency":"USD","discount":"0%"}}
{"Type":"page","name":"Home","user":{"id":"u-3"},"created_at":"12/02/2019 10:00","props":{"url":"/"}}
{"Type":"screen","name":"Cart","anonymousId":"anon-9","created_at":"12/03/2019 10:00","props":{"items":3}}
"#;

#[test]
fn a_starter_for_mixed_call_types_has_one_table_per_type_and_delivers_them_typed() {
    let w = Workdir::new();
    let input = w.write("mixed.ndjson", MIXED);
    let (_, starter) = emit_starter(
        &w,
        &input,
        &[],
        &[
            "type = { column = \"Type\", only = [\"identify\"] }",
            "type = { column = \"Type\", only = [\"track\"] }",
            "type = { column = \"Type\", only = [\"page\"] }",
            "type = { column = \"Type\", only = [\"screen\"] }",
            "user_id = \"user.id\"",
            "\"props.total\" = { type = \"float\", clean = \"currency\" }",
            "\"props.discount\" = { type = \"float\", clean = \"percent\" }",
            "properties = { from = \"props\", fields = {",
        ],
    );
    assert!(!starter.contains("only = [\"group\"]"), "{starter}");
    let (out, calls, summary) = deliver(&w, &input, &w.path("starter.toml"), &[]);
    assert_eq!(code(&out), Some(0), "{}\n{starter}", common::stderr(&out));
    let types: Vec<&str> = calls.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["identify", "track", "track", "page", "screen"]);
    // 20 digits: an id as text, and inside the object a string too (a number would be
    // rounded by the API).
    assert_eq!(calls[0]["userId"], "12345678901234567890");
    assert_eq!(calls[0]["traits"]["user"]["id"], "12345678901234567890");
    assert_eq!(calls[0]["timestamp"], "2019-02-27T17:06:00.000Z");
    // identify rows do not carry the track rows' event or name columns.
    assert!(calls[0]["traits"].get("event").is_none(), "{}", calls[0]);
    assert_eq!(
        calls[1]["properties"],
        json!({"total": 4737.25, "discount": 15, "currency": "USD"}),
        "{starter}"
    );
    assert_eq!(calls[1]["event"], "Order Completed");
    assert_eq!(calls[2]["properties"]["total"], json!(12.0));
    assert_eq!(calls[3]["name"], "Home");
    assert_eq!(calls[3]["properties"], json!({"url": "/"}));
    assert_eq!(calls[4]["anonymousId"], "anon-9");
    assert_eq!(calls[4]["properties"], json!({"items": 3}));
    assert_eq!(
        summary["values_fixed"]["props.total"]["cleaned"], 2,
        "{summary}"
    );
}

#[test]
fn a_row_whose_type_no_table_takes_is_rejected_by_name() {
    let w = Workdir::new();
    let input = w.write("mixed.ndjson", MIXED);
    let mapping = w.write(
        "only.toml",
        r#"
[[call]]
type = { column = "Type", only = ["Track", "page"] }
user_id = "user.id"
anonymous_id = "anonymousId"
event = "event"
name = "name"
properties = "props"
"#,
    );
    let (out, calls, summary) = deliver(&w, &input, &mapping, &[]);
    assert_eq!(code(&out), Some(3), "{}", common::stderr(&out));
    let types: Vec<&str> = calls.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["track", "track", "page"]);
    assert_eq!(summary["rejected_by_reason"], json!({"bad_call_type": 2}));
    let rejects = std::fs::read_to_string(w.path("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("no [[call]] table takes \\\"identify\\\" rows"),
        "{rejects}"
    );
    assert!(rejects.contains("\\\"screen\\\" rows"), "{rejects}");
    let typo = w.write(
        "typo.toml",
        "[[call]]\ntype = { column = \"Type\", only = [\"trak\"] }\nuser_id = \"user.id\"\n",
    );
    let (out, _, _) = deliver(&w, &input, &typo, &[]);
    assert_eq!(code(&out), Some(2));
    assert!(
        common::stderr(&out)
            .contains("\"trak\" in `only` is not a call type (did you mean \"track\"?)"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_starter_for_a_european_export_reads_decimal_commas_and_day_first_dates() {
    let w = Workdir::new();
    let mut csv = String::from(
        "\u{feff}Customer ID;E-Mail;Tarif;Umsatz;Rabatt;Date of Birth;Letzter Kauf;Kontonummer\r\n",
    );
    for (i, (amount, birth, last)) in [
        ("1.234,56 €", "27.02.1985", "13.03.2024 14:05"),
        ("EUR 99,90", "01.12.1990", "02.04.2024 09:00"),
        ("12.000,00", "15.06.1959", "30.04.2024 18:30"),
        ("0,50 €", "03.01.2000", "01.05.2024 00:00"),
    ]
    .iter()
    .enumerate()
    {
        csv.push_str(&format!(
            "K-100{i};p{i}@example.de;T-{i}0;\"{amount}\";{}%;{birth};{last};1234567890123456{i}\r\n",
            i * 5
        ));
    }
    let input = w.write("kunden.csv", csv);
    let (_, starter) = emit_starter(
        &w,
        &input,
        &["--delimiter", ";"],
        &[
            "user_id = \"Customer ID\"",
            "\"Umsatz\" = { type = \"float\", clean = \"currency\", decimal = \",\" }",
            "\"Letzter Kauf\" = { type = \"timestamp\", format = \"%d.%m.%Y %H:%M\" }",
            "\"Date of Birth\" = { type = \"timestamp\", format = \"%d.%m.%Y\" }",
            "\"Kontonummer\" = \"string\"",
            // Not the birth date (1959 is before what the API takes as a call's time).
            "timestamp = \"Letzter Kauf\"",
        ],
    );
    let (out, calls, summary) = deliver(&w, &input, &w.path("starter.toml"), &["--delimiter", ";"]);
    assert_eq!(code(&out), Some(0), "{}\n{starter}", common::stderr(&out));
    assert_eq!(calls.len(), 4, "{summary}");
    // "K-1000" is an id, not the number -1000 with a currency code "K".
    assert_eq!(calls[0]["userId"], "K-1000");
    assert_eq!(calls[0]["timestamp"], "2024-03-13T14:05:00.000Z");
    let t = &calls[0]["traits"];
    assert_eq!(t["Umsatz"], json!(1234.56), "{t}");
    // A code, not -0 with a currency code "T".
    assert_eq!(t["Tarif"], "T-00", "{t}");
    assert_eq!(t["Date of Birth"], "1985-02-27T00:00:00.000Z");
    assert_eq!(t["Kontonummer"], "12345678901234560");
    assert_eq!(calls[1]["traits"]["Umsatz"], json!(99.9));
    assert_eq!(calls[1]["traits"]["Rabatt"], json!(5));
    assert_eq!(calls[2]["traits"]["Umsatz"], json!(12000.0));
    assert_eq!(
        calls[2]["traits"]["Date of Birth"],
        "1959-06-15T00:00:00.000Z"
    );
}

#[test]
fn a_parquet_starter_keeps_17_digit_integers_exact_at_the_top_and_inside_structs() {
    let w = Workdir::new();
    let input = common::fixture("nested.parquet");
    let (_, starter) = emit_starter(
        &w,
        &input,
        &[],
        &[
            "\"account\" = \"string\"",
            "user_id = \"user.id\"",
            "traits = { email = \"user.email\" }",
        ],
    );
    let (out, calls, summary) = deliver(&w, &input, &w.path("starter.toml"), &[]);
    assert_eq!(code(&out), Some(3), "{}\n{starter}", common::stderr(&out));
    assert_eq!(summary["rejected_by_reason"], json!({"missing_id": 1}));
    let track = &calls[0];
    assert_eq!(track["type"], "track");
    assert_eq!(track["properties"]["account"], "12345678901234567");
    // Inside the struct, passed through whole by "rest": a string too, not the
    // rounded 90071992547409936.
    assert_eq!(track["properties"]["user"]["crm_id"], "90071992547409930");
    assert_eq!(calls[2]["properties"]["user"]["crm_id"], json!(7));
    assert_eq!(calls[1]["traits"], json!({"email": "a@example.com"}));
}
