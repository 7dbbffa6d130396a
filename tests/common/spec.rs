//! The vendor's OpenAPI spec as JSON Schema (the `jsonschema` crate, draft 2020-12,
//! formats asserted), for tests that validate what the engine emits, and a check that no
//! object in a body repeats a key (which a parsed `serde_json::Value` would hide).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

/// The OpenAPI document ([`super::openapi_spec`]).
pub fn spec_doc() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text =
            std::fs::read_to_string(super::openapi_spec()).expect("the vendor's OpenAPI spec");
        serde_json::from_str(&text).expect("the spec is JSON")
    })
}

/// The spec writes its alternatives as `oneOf`, but they overlap: `context` is
/// `oneOf: [context_non_mobile, context_mobile]`, both open objects sharing
/// `context_common`, so the spec's own example context `{"ip": "8.8.8.8"}` matches both;
/// identify is `oneOf: [Known User (userId), Anonymous User (anonymousId)]`, so a call
/// with both ids (how anonymous history is merged) matches both. A literal `oneOf` would
/// refuse the spec's own examples, so we read every `oneOf` as `anyOf`: each call must
/// still satisfy one alternative fully. `the_spec_one_of_is_read_as_any_of` pins this
/// down, and the misnamed-field tests show the validator still catches mistakes.
pub fn patch_one_of(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(alts) = o.remove("oneOf") {
                o.insert("anyOf".into(), alts);
            }
            for x in o.values_mut() {
                patch_one_of(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(patch_one_of),
        _ => {}
    }
}

type Validators = Mutex<BTreeMap<(String, bool), Arc<jsonschema::Validator>>>;

/// The validator of `components.schemas.<name>`, built once per schema: the whole
/// document is the root (so its `#/components/schemas/...` references resolve) with a
/// `$ref` added.
fn validator(name: &str, patched: bool) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (name.to_string(), patched);
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return Arc::clone(v);
    }
    let mut root = spec_doc().clone();
    if patched {
        patch_one_of(&mut root);
    }
    let obj = root.as_object_mut().expect("the spec is an object");
    obj.insert("$ref".into(), json!(format!("#/components/schemas/{name}")));
    obj.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    let v = Arc::new(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .expect("the spec compiles as JSON Schema"),
    );
    cache.lock().unwrap().insert(key, Arc::clone(&v));
    v
}

/// What `components.schemas.<name>` finds wrong with `instance` (`oneOf` read as
/// `anyOf`, see [`patch_one_of`]).
pub fn schema_errors(name: &str, instance: &Value) -> Vec<String> {
    schema_errors_in(name, instance, true)
}

/// [`schema_errors`], with the spec's `oneOf` read literally when `patched` is false.
pub fn schema_errors_in(name: &str, instance: &Value, patched: bool) -> Vec<String> {
    validator(name, patched)
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

pub fn assert_valid(name: &str, instance: &Value) {
    let errs = schema_errors(name, instance);
    assert!(
        errs.is_empty(),
        "{name} schema refuses {instance}:\n{}",
        errs.join("\n")
    );
}

/// Every call in the bodies, with its body's batch-level context/integrations merged in
/// (as the API applies them), and whether it came alone (alias) or in a batch.
pub fn calls_of(bodies: &[Value]) -> Vec<Value> {
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
pub fn schema_for(call: &Value) -> &'static str {
    match (call["type"].as_str(), call["event"].as_str()) {
        (Some("track"), Some("Device Created or Updated")) => "create_update_device",
        (Some("track"), Some("Device Deleted")) => "delete_device",
        (Some("track"), Some("User Deleted")) => "delete_person",
        (Some("track"), Some("User Suppressed")) => "suppress_person",
        (Some("track"), Some("User Unsuppressed")) => "unsuppress_person",
        (Some("track"), Some("Relationship Deleted")) => "relationship_deleted",
        (Some("track"), Some("Object Deleted")) => "group_deleted",
        (Some("track"), Some("Report Delivery Event")) => "report_delivery_event",
        (Some("track"), Some("Report Content Event")) => "report_content_event",
        (Some("alias"), _) => "alias_all",
        (Some("identify"), _) => "identify",
        (Some("track"), _) => "track",
        (Some("page"), _) => "page",
        (Some("screen"), _) => "screen",
        (Some("group"), _) => "group",
        _ => panic!("a call of no known type: {call}"),
    }
}

/// The first key repeated within one object of `json` (at any depth), with the path of
/// that object; `None` when no object repeats a key. Panics on text that is not JSON.
pub fn repeated_key(json: &[u8]) -> Option<String> {
    struct Walk<'a> {
        path: String,
        found: &'a mut Option<String>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            loop {
                let path = format!("{}[{i}]", self.path);
                let walk = Walk {
                    path,
                    found: &mut *self.found,
                };
                if seq.next_element_seed(walk)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                let path = format!("{}.{k}", self.path);
                if !seen.insert(k) && self.found.is_none() {
                    *self.found = Some(path.clone());
                }
                map.next_value_seed(Walk {
                    path,
                    found: &mut *self.found,
                })?;
            }
            Ok(())
        }
    }
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    Walk {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut de)
    .expect("the body is JSON");
    de.end().expect("one JSON value");
    found
}
