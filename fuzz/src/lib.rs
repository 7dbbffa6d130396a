//! Shared harness for the fuzz targets: the fixed mappings, and one function that runs a
//! source through the mapper and checks what came out.
//!
//! The oracle, besides "no panic, no hang, no runaway memory" (libFuzzer's own checks):
//! every call the mapper emits is one valid JSON object no larger than the call limit,
//! every reject line is one valid JSON object ending in a newline, and the emits cover
//! the chunk's rows in order.

use std::sync::Arc;

use cdp_backfill::map::compile::compile;
use cdp_backfill::map::encode::{map_chunk, EmitKind, EncodeOptions, Mapped};
use cdp_backfill::map::spec::{self, MappingSpec};
use cdp_backfill::source::{Format, InputInfo, Opened};

/// A mapping over the columns of [`CSV_HEADER`] that uses every column type, templates,
/// constants, a call type read from a column, and `rest`.
pub const CSV_MAPPING: &str = r#"
namespace = "fuzz"
[columns]
amount = { type = "float", empty = "null" }
n = "int"
flag = "bool"
meta = { type = "json", empty = "omit" }
ts = { type = "timestamp" }

[[call]]
type = "track"
user_id = "user_id"
anonymous_id = { template = "anon-{n}" }
event = "event"
timestamp = "ts"
properties = "rest"

[[call]]
type = { column = "kind" }
user_id = "user_id"
name = { const = "fixed" }
traits = ["amount", "flag", "meta"]
"#;

/// The header [`CSV_MAPPING`] compiles against.
pub const CSV_HEADER: &[u8] = b"user_id,event,ts,amount,n,flag,meta,kind\n";

/// A mapping over NDJSON paths: top-level keys, dotted paths, JSON pointers, `rest`.
pub const NDJSON_MAPPING: &str = r#"
namespace = "fuzz"
[columns]
amount = "float"
"user.age" = "int"
[[call]]
type = "track"
user_id = "user.id"
anonymous_id = "/ids/0"
event = "event"
timestamp = "ts"
properties = "rest"
[[call]]
type = "identify"
user_id = "user.id"
traits = { age = "user.age", amount = "amount", deep = "/a/b/c" }
"#;

/// A mapping for any Parquet schema: constants and `rest` only, so it always compiles.
pub const PARQUET_MAPPING: &str = r#"
namespace = "fuzz"
[[call]]
type = "track"
anonymous_id = { const = "a" }
event = { const = "e" }
properties = "rest"
"#;

pub fn spec(text: &str) -> MappingSpec {
    spec::parse(text).expect("the fixed fuzz mappings parse")
}

pub fn input(format: Format) -> Arc<InputInfo> {
    let name = match format {
        Format::Csv => "fuzz.csv",
        Format::Ndjson => "fuzz.ndjson",
        Format::Parquet => "fuzz.parquet",
    };
    Arc::new(InputInfo::new(0, name.into(), format))
}

pub const MAX_CALL_BYTES: usize = 32_000;

/// Compiles `spec` against `opened`'s schema and maps every row, in small chunks,
/// checking the oracle. Compile errors are fine (the input decided the schema).
pub fn map_all(opened: &mut Opened, info: &Arc<InputInfo>, spec: &MappingSpec) {
    let Ok(mapping) = compile(spec, opened.schema(), &info.display) else {
        return;
    };
    let opts = EncodeOptions {
        max_call_bytes: MAX_CALL_BYTES,
        latest_ms: 4_102_444_800_000, // 2100-01-01
        sent_at: false,
    };
    let mut chunk = opened.new_chunk(info);
    let mut out = Mapped::default();
    // Bounded: a source that never reports its end is a hang, which this turns into
    // a failed assertion rather than a libFuzzer timeout.
    for _ in 0..100_000 {
        if opened.fill(&mut chunk, 7).is_err() {
            return;
        }
        if chunk.is_empty() {
            return;
        }
        map_chunk(&chunk, &mapping, &opts, &mut out);
        check(&out, chunk.len());
    }
    panic!("the source never reached the end of a small input");
}

fn check(out: &Mapped, rows: usize) {
    let (mut c, mut r) = (0usize, 0usize);
    let mut last_row = 0u32;
    for e in &out.emits {
        assert!(e.row >= last_row, "emits out of row order");
        assert!((e.row as usize) < rows, "emit for a row past the chunk");
        last_row = e.row;
        let len = e.len as usize;
        match e.kind {
            EmitKind::Call(_) => {
                let bytes = &out.calls[c..c + len];
                assert!(len <= MAX_CALL_BYTES, "a call over the call limit was emitted");
                let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
                    panic!("call is not JSON ({e}): {}", String::from_utf8_lossy(bytes))
                });
                assert!(v.is_object());
                c += len;
            }
            EmitKind::Context => c += len,
            EmitKind::Reject(_) => {
                let bytes = &out.rejects[r..r + len];
                assert_eq!(bytes.last(), Some(&b'\n'));
                let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
                    panic!("reject is not JSON ({e}): {}", String::from_utf8_lossy(bytes))
                });
                assert!(v.is_object());
                r += len;
            }
        }
    }
    assert_eq!(c, out.calls.len());
    assert_eq!(r, out.rejects.len());
}
