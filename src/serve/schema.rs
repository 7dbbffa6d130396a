//! What the vendor's OpenAPI spec (`shared/spec/pipelines-openapi.json`) requires of a
//! call, translated into direct checks over the facts `scan.rs` read: the schemas are
//! applied without a schema engine, so the receiver's cost per call stays a few
//! comparisons.
//!
//! How the spec is read, and why (each a choice where the spec can be read two ways):
//! - `oneOf` is read as `anyOf`. The spec's alternatives overlap (a call with both
//!   `userId` and `anonymousId` fits both identify branches; most contexts fit both the
//!   web and the mobile context), so read exactly it would refuse its own examples.
//! - A `track` whose `event` is one of the reserved names is held to that semantic
//!   event's schema (`create_update_device`, ..., `report_content_event`); any other
//!   event to the plain track branches. Read as `anyOf`, a plain branch would excuse
//!   every semantic event from its own required fields.
//! - Every call is held to the common fields of its type (`all_common_fields`,
//!   `page_common_fields`, `mobile_common_fields`): `integrations` of booleans,
//!   `messageId` a string, the four timestamps date-times, `context` as the type's
//!   context schema allows. The spec ties them to identify, track, page, screen and
//!   group; for alias it defines `alias_all` (alias with the common fields) beside the
//!   bare `alias` its endpoint names, and for the semantic events it lists no common
//!   fields at all. A call's common fields mean the same whatever carries it, so they
//!   are checked on every call.
//! - A call in a batch is held both to the batch schema's item alternative and to its
//!   type's own endpoint schema. The batch alternatives are abridged copies (no common
//!   fields, no semantic events, `properties.category` only for page), and the API
//!   documents a batch as a list of those same calls.
//! - `type` may be left out where the route sets it: a single-call endpoint (the spec
//!   marks `type` read-only, "set automatically by the request method"), and a batch
//!   item that fits the identify alternative, the only one that does not require
//!   `type`; such an item is an identify.
//! - What the schemas do not require is not required: `userId: ""` is a string, a
//!   `Report Delivery Event` needs no ids, `/v1/group` requires nothing, `{}` is a
//!   valid (empty) batch.

use std::borrow::Cow;

use super::datetime::is_date_time;
use super::scan::{BodyFacts, CallFacts, Context, Field, Integrations, Kind, Text};
use super::validate::{CallType, Route};

/// A call that passed the checks.
#[derive(Debug)]
pub(crate) struct ValidCall<'a> {
    pub ty: CallType,
    pub message_id: Option<Cow<'a, str>>,
    /// The call had no `type`; the route (or the batch's identify alternative) implied it.
    pub type_implied: bool,
}

/// A call that failed: the reason, and its messageId when it could be read.
#[derive(Debug)]
pub(crate) struct InvalidCall<'a> {
    pub message_id: Option<Cow<'a, str>>,
    pub reason: Cow<'static, str>,
}

/// Which of the spec's context schemas applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContextSchema {
    /// `all_common_fields`: web or mobile.
    Any,
    /// `page_common_fields`: `context_non_mobile`.
    Web,
    /// `mobile_common_fields`: `context_mobile`.
    Mobile,
}

/// The semantic events: track calls whose `event` is a reserved name. The engine's
/// mapper keeps a list of its own (`map::encode::Semantic`); the receiver does not borrow
/// it, so that a mistake in one is caught by the other rather than shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    DeviceUpdated,
    DeviceDeleted,
    UserDeleted,
    UserSuppressed,
    UserUnsuppressed,
    RelationshipDeleted,
    ObjectDeleted,
    ReportDelivery,
    ReportContent,
}

const SEMANTIC: [(Semantic, &str); 9] = [
    (Semantic::DeviceUpdated, "Device Created or Updated"),
    (Semantic::DeviceDeleted, "Device Deleted"),
    (Semantic::UserDeleted, "User Deleted"),
    (Semantic::UserSuppressed, "User Suppressed"),
    (Semantic::UserUnsuppressed, "User Unsuppressed"),
    (Semantic::RelationshipDeleted, "Relationship Deleted"),
    (Semantic::ObjectDeleted, "Object Deleted"),
    (Semantic::ReportDelivery, "Report Delivery Event"),
    (Semantic::ReportContent, "Report Content Event"),
];

const METRICS: &[&str] = &["delivered", "clicked", "converted", "opened"];
const ACTION_TYPES: &[&str] = &["viewed_content", "clicked_content"];

type Check = Result<(), Cow<'static, str>>;

/// Checks what a batch body says around its calls (the `batch` schema's own members).
/// An error refuses every call of the request.
pub(crate) fn body(b: &BodyFacts<'_>) -> Check {
    if !b.object {
        return Err("the body must be a JSON object (with a \"batch\" array)".into());
    }
    if let Some(k) = &b.duplicate {
        return Err(repeated(k));
    }
    if !matches!(b.batch, Kind::Absent | Kind::Array) {
        return Err(format!("batch must be an array, not {}", b.batch.describe()).into());
    }
    context(&b.context, ContextSchema::Any)?;
    integrations(&b.integrations)?;
    Ok(())
}

/// Checks one call sent to `route`.
pub(crate) fn call<'a>(route: Route, f: &CallFacts<'a>) -> Result<ValidCall<'a>, InvalidCall<'a>> {
    let message_id = f.message_id.str().map(Text::value);
    let fail = |reason: Cow<'static, str>| InvalidCall {
        message_id: message_id.clone(),
        reason,
    };
    if !f.object {
        return Err(fail("call is not a JSON object".into()));
    }
    if let Some(k) = &f.duplicate {
        return Err(fail(repeated(k)));
    }
    let (ty, type_implied) = call_type(route, f).map_err(fail)?;
    judge(route, ty, f).map_err(fail)?;
    Ok(ValidCall {
        ty,
        message_id: message_id.clone(),
        type_implied,
    })
}

fn repeated(key: &str) -> Cow<'static, str> {
    format!("the key {key:?} appears twice in one object (the API would read only one of them)")
        .into()
}

/// The call's type, and whether the route implied it.
fn call_type(route: Route, f: &CallFacts<'_>) -> Result<(CallType, bool), Cow<'static, str>> {
    let name = match f.ty.kind {
        Kind::Absent => {
            return Ok(match route {
                Route::Batch => (CallType::Identify, true),
                Route::Single(t) => (t, true),
            })
        }
        Kind::String => f.ty.text.value(),
        k => return Err(format!("type must be a string, not {}", k.describe()).into()),
    };
    match route {
        Route::Batch => match CallType::from_name(&name) {
            // The batch schema lists identify, track, page, screen and group only.
            Some(CallType::Alias) => {
                Err("alias calls are not allowed in a batch; send them to /v1/alias".into())
            }
            Some(t) => Ok((t, false)),
            None => Err(format!("unknown call type {name:?}").into()),
        },
        Route::Single(t) if name == t.name() => Ok((t, false)),
        Route::Single(t) => {
            Err(format!("call type {name:?} sent to {}", Route::Single(t).path()).into())
        }
    }
}

/// A string member: absent or a string.
fn string(f: Field<'_>, what: &str) -> Check {
    match f.kind {
        Kind::Absent | Kind::String => Ok(()),
        k => Err(format!("{what} must be a string, not {}", k.describe()).into()),
    }
}

/// A kind that must be absent or `want`.
fn kind(k: Kind, want: Kind, what: &str) -> Check {
    if k == Kind::Absent || k == want || (want == Kind::Number && k == Kind::Integer) {
        Ok(())
    } else {
        Err(format!("{what} must be {}, not {}", want.describe(), k.describe()).into())
    }
}

/// A date-time member: absent or an RFC 3339 date-time string.
fn date_time(f: Field<'_>, what: &str) -> Check {
    string(f, what)?;
    match f.str() {
        Some(t) if !is_date_time(&t.value()) => Err(format!(
            "{what} {:?} is not an RFC 3339 date-time (years 0000-9999, a leap second only at 23:59:60 UTC)",
            t.value()
        )
        .into()),
        _ => Ok(()),
    }
}

/// A string member that must be one of `names` when present.
fn one_of(f: Field<'_>, names: &[&str], what: &str) -> Check {
    string(f, what)?;
    match f.str() {
        Some(t) if !names.iter().any(|n| t.is(n)) => Err(format!(
            "{what} must be one of {}, not {:?}",
            names.join(", "),
            t.value()
        )
        .into()),
        _ => Ok(()),
    }
}

fn integrations(n: &Integrations<'_>) -> Check {
    kind(n.kind, Kind::Object, "integrations")?;
    match &n.not_bool {
        Some((key, k)) => Err(format!(
            "integrations.{key:?} must be true or false, not {}",
            k.describe()
        )
        .into()),
        None => Ok(()),
    }
}

fn context(c: &Context<'_>, schema: ContextSchema) -> Check {
    kind(c.kind, Kind::Object, "context")?;
    if let Some(b) = &c.common {
        return Err(b.clone().into());
    }
    let (web, mobile) = (&c.web, &c.mobile);
    match schema {
        ContextSchema::Web => web.clone().map_or(Ok(()), |b| Err(b.into())),
        ContextSchema::Mobile => mobile.clone().map_or(Ok(()), |b| Err(b.into())),
        ContextSchema::Any => match (web, mobile) {
            (Some(w), Some(m)) => Err(format!(
                "context fits neither the web context ({w}) nor the mobile one ({m})"
            )
            .into()),
            _ => Ok(()),
        },
    }
}

/// The common fields of every call.
fn common(f: &CallFacts<'_>, schema: ContextSchema) -> Check {
    string(f.message_id, "messageId")?;
    date_time(f.timestamp, "timestamp")?;
    date_time(f.sent_at, "sentAt")?;
    date_time(f.received_at, "receivedAt")?;
    date_time(f.original_timestamp, "originalTimestamp")?;
    kind(f.version, Kind::Number, "version")?;
    integrations(&f.integrations)?;
    context(&f.context, schema)
}

/// The type's own schema, its common fields, and in a batch the batch's alternative.
fn judge(route: Route, ty: CallType, f: &CallFacts<'_>) -> Check {
    let in_batch = route == Route::Batch;
    let (user, anon) = (f.user_id, f.anonymous_id);
    match ty {
        CallType::Identify => {
            common(f, ContextSchema::Any)?;
            identify(f)
        }
        CallType::Track => {
            common(f, ContextSchema::Any)?;
            match f.event.kind {
                Kind::Absent => return Err("track call needs event".into()),
                Kind::String => {}
                k => return Err(format!("event must be a string, not {}", k.describe()).into()),
            }
            // The batch's track alternatives: userId (a string), or anonymousId absent
            // or a string; `properties` an object in both, semantic events included.
            if in_batch {
                if !user.is_str() && anon.present() && !anon.is_str() {
                    string(anon, "anonymousId")?;
                }
                kind(f.properties.kind, Kind::Object, "properties")?;
            }
            let event = f.event.text;
            match SEMANTIC.iter().find(|(_, n)| event.is(n)) {
                Some(&(s, name)) => semantic(s, name, f),
                None => {
                    if !(user.is_str() || anon.is_str() || f.group_id.is_str()) {
                        ids_wrong_type(f)?;
                        return Err("track call needs userId or anonymousId (or groupId)".into());
                    }
                    kind(f.properties.kind, Kind::Object, "properties")
                }
            }
        }
        CallType::Page | CallType::Screen => {
            let page = ty == CallType::Page;
            common(
                f,
                if page {
                    ContextSchema::Web
                } else {
                    ContextSchema::Mobile
                },
            )?;
            if !(user.is_str() || anon.is_str()) {
                ids_wrong_type(f)?;
                return Err(format!("{} call needs userId or anonymousId", ty.name()).into());
            }
            string(f.name, "name")?;
            kind(f.properties.kind, Kind::Object, "properties")?;
            if page {
                if let Some((key, k)) = f.properties.page_breach {
                    return Err(
                        format!("properties.{key} must be a string, not {}", k.describe()).into(),
                    );
                }
            }
            Ok(())
        }
        CallType::Group => {
            common(f, ContextSchema::Any)?;
            string(f.group_id, "groupId")?;
            if in_batch {
                // The batch's group alternatives require groupId and an id.
                if !f.group_id.is_str() {
                    return Err("group call needs groupId".into());
                }
                if !(user.is_str() || anon.is_str()) {
                    ids_wrong_type(f)?;
                    return Err("group call needs userId or anonymousId".into());
                }
            } else if !(matches!(user.kind, Kind::Absent | Kind::String)
                || matches!(anon.kind, Kind::Absent | Kind::String))
            {
                ids_wrong_type(f)?;
            }
            let t = &f.traits;
            kind(t.kind, Kind::Object, "traits")?;
            kind(t.object_type_id, Kind::String, "traits.object_type_id")?;
            kind(
                t.relationship_attributes,
                Kind::Object,
                "traits.relationshipAttributes",
            )
        }
        CallType::Alias => {
            common(f, ContextSchema::Any)?;
            string(f.previous_id, "previousId")?;
            string(user, "userId")?;
            if !(f.previous_id.is_str() && user.is_str()) {
                return Err("alias call needs previousId and userId".into());
            }
            Ok(())
        }
    }
}

/// For a call missing its ids: the better message when one is there but not a string.
fn ids_wrong_type(f: &CallFacts<'_>) -> Check {
    string(f.user_id, "userId")?;
    string(f.anonymous_id, "anonymousId")
}

/// identify: a userId branch and an anonymousId branch, sharing `traits.email` and
/// `traits.createdAt`; only the userId branch types `unsubscribed` and
/// `cio_subscription_preferences`, and declares anonymousId a string.
fn identify(f: &CallFacts<'_>) -> Check {
    let t = &f.traits;
    kind(t.kind, Kind::Object, "traits")?;
    kind(t.email, Kind::String, "traits.email")?;
    date_time(t.created_at, "traits.createdAt")?;
    if f.anonymous_id.is_str() {
        return Ok(());
    }
    if !f.user_id.is_str() {
        ids_wrong_type(f)?;
        return Err("identify call needs userId or anonymousId".into());
    }
    string(f.anonymous_id, "anonymousId")?;
    kind(t.unsubscribed, Kind::Bool, "traits.unsubscribed")?;
    kind(
        t.subscription,
        Kind::Object,
        "traits.cio_subscription_preferences",
    )?;
    match &t.subscription_breach {
        Some(b) => Err(b.clone().into()),
        None => Ok(()),
    }
}

/// A semantic event's own schema.
fn semantic(s: Semantic, name: &str, f: &CallFacts<'_>) -> Check {
    let needs = |what: &str| -> Check { Err(format!("a {name:?} event needs {what}").into()) };
    let p = &f.properties;
    let user = |f: &CallFacts<'_>| -> Check {
        string(f.user_id, "userId")?;
        if f.user_id.is_str() {
            Ok(())
        } else {
            needs("userId")
        }
    };
    match s {
        Semantic::DeviceUpdated | Semantic::DeviceDeleted => {
            user(f)?;
            let c = &f.context;
            if c.kind != Kind::Object || c.device != Kind::Object {
                return needs("context.device.token");
            }
            match c.device_token {
                Kind::String => {}
                Kind::Absent => return needs("context.device.token"),
                k => {
                    return Err(format!(
                        "context.device.token must be a string, not {}",
                        k.describe()
                    )
                    .into())
                }
            }
            one_of(c.device_type, &["ios", "android"], "context.device.type")
        }
        Semantic::UserDeleted | Semantic::UserSuppressed | Semantic::UserUnsuppressed => {
            user(f)?;
            kind(p.kind, Kind::Object, "properties")
        }
        Semantic::RelationshipDeleted | Semantic::ObjectDeleted => {
            if s == Semantic::RelationshipDeleted {
                user(f)?;
            } else {
                string(f.anonymous_id, "anonymousId")?;
                if !f.anonymous_id.is_str() {
                    return needs("anonymousId (the spec's group_deleted schema requires it)");
                }
            }
            if p.kind == Kind::Absent {
                return needs("properties");
            }
            kind(p.kind, Kind::Object, "properties")?;
            kind(p.object_id, Kind::String, "properties.objectId")?;
            if s == Semantic::RelationshipDeleted && p.object_id == Kind::Absent {
                return needs("properties.objectId");
            }
            kind(p.object_type_id, Kind::Integer, "properties.objectTypeId")
        }
        Semantic::ReportDelivery | Semantic::ReportContent => {
            if p.kind == Kind::Absent {
                return needs("properties");
            }
            kind(p.kind, Kind::Object, "properties")?;
            if s == Semantic::ReportDelivery {
                if let Some((key, k)) = p.delivery_breach {
                    return Err(
                        format!("properties.{key} must be a string, not {}", k.describe()).into(),
                    );
                }
                one_of(p.metric, METRICS, "properties.metric")
            } else {
                if p.activity_type == Kind::Absent {
                    return needs("properties.activityType");
                }
                one_of(p.action_type, ACTION_TYPES, "properties.actionType")?;
                kind(p.content_id, Kind::Integer, "properties.contentId")?;
                kind(p.template_id, Kind::Integer, "properties.templateId")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The translation held to the spec itself: the vendor's schemas, read as the module
    //! doc says (`oneOf` as `anyOf`, semantic events by name, common fields on every
    //! call, batch items under both schemas, `type` implied by the route), are compiled
    //! with the `jsonschema` crate, and every call of a large generated corpus must get
    //! the same verdict from both.

    use super::super::scan::{self, Keys};
    use super::*;
    use serde_json::{json, Value};

    const NAMES: [&str; 9] = [
        "Device Created or Updated",
        "Device Deleted",
        "User Deleted",
        "User Suppressed",
        "User Unsuppressed",
        "Relationship Deleted",
        "Object Deleted",
        "Report Delivery Event",
        "Report Content Event",
    ];
    const SEMANTIC_SCHEMAS: [&str; 9] = [
        "create_update_device",
        "delete_device",
        "delete_person",
        "suppress_person",
        "unsuppress_person",
        "relationship_deleted",
        "group_deleted",
        "report_delivery_event",
        "report_content_event",
    ];

    fn spec() -> Value {
        // The vendor's spec beside the repository when it is there, else the copy in
        // fixtures/ (a clone on its own, as CI has it).
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = repo.join("../shared/spec/pipelines-openapi.json");
        let path = if shared.exists() {
            shared
        } else {
            repo.join("fixtures/pipelines-openapi.json")
        };
        let text =
            std::fs::read_to_string(&path).expect("the vendor spec (../shared or fixtures/)");
        serde_json::from_str(&text).expect("the spec is JSON")
    }

    /// `oneOf` read as `anyOf`, everywhere.
    fn any_of(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(x) = m.remove("oneOf") {
                    m.insert("anyOf".into(), x);
                }
                m.values_mut().for_each(any_of);
            }
            Value::Array(a) => a.iter_mut().for_each(any_of),
            _ => {}
        }
    }

    /// The schema a call of `ty` is held to at its own endpoint, in this reading.
    fn endpoint(schemas: &Value, ty: CallType) -> Value {
        let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
        match ty {
            CallType::Track => {
                let plain = schemas["track"]["anyOf"][0].clone();
                let semantic: Vec<Value> = SEMANTIC_SCHEMAS.iter().map(|n| r(n)).collect();
                json!({"allOf": [
                    r("all_common_fields"),
                    {"properties": {"type": {"enum": ["track"]}}},
                    {
                        "if": {"required": ["event"], "properties": {"event": {"enum": NAMES}}},
                        "then": {"anyOf": semantic},
                        "else": plain,
                    },
                ]})
            }
            CallType::Alias => r("alias_all"),
            t => r(t.name()),
        }
    }

    struct Reference {
        validators: Vec<(Route, CallType, jsonschema::Validator)>,
    }

    impl Reference {
        fn new() -> Self {
            let mut spec = spec();
            any_of(&mut spec);
            let components = spec["components"].clone();
            let schemas = &components["schemas"];
            let batch_item = schemas["batch"]["properties"]["batch"]["items"].clone();
            let mut validators = Vec::new();
            for ty in CallType::ALL {
                let mut one = |route: Route, schema: Value| {
                    let mut root = schema;
                    root["components"] = components.clone();
                    let v = jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .should_validate_formats(true)
                        .build(&root)
                        .expect("the reading compiles");
                    validators.push((route, ty, v));
                };
                one(Route::Single(ty), endpoint(schemas, ty));
                if ty != CallType::Alias {
                    one(
                        Route::Batch,
                        json!({"allOf": [batch_item.clone(), endpoint(schemas, ty)]}),
                    );
                }
            }
            Reference { validators }
        }

        /// The verdict on `call` sent to `route`; `None` where no schema applies (a
        /// wrong or unknown `type`, an alias in a batch: refused either way).
        fn judge(&self, route: Route, call: &Value) -> Option<bool> {
            let mut call = call.clone();
            let ty = match (route, call.get("type")) {
                (_, Some(Value::String(t))) => CallType::from_name(t)?,
                (_, Some(_)) => return Some(false),
                (Route::Batch, None) => CallType::Identify,
                (Route::Single(t), None) => {
                    // The endpoint sets it.
                    call["type"] = json!(t.name());
                    t
                }
            };
            if let Route::Single(t) = route {
                if t != ty {
                    return None;
                }
            }
            let (_, _, v) = self
                .validators
                .iter()
                .find(|(r, t, _)| *r == route && *t == ty)?;
            Some(v.is_valid(&call))
        }
    }

    /// What the receiver makes of `text` sent to `route`.
    fn ours(route: Route, text: &str) -> Option<bool> {
        let mut keys = Keys::default();
        let mut facts = scan::CallFacts::default();
        let verdict = match route {
            Route::Batch => {
                let body = format!(r#"{{"batch":[{text}]}}"#);
                let mut got = None;
                scan::batch(&body, &mut keys, &mut |_, f| {
                    got = Some(call(route, f).map(|_| ()).map_err(|e| e.reason));
                })
                .ok()?;
                got?
            }
            Route::Single(_) => {
                scan::single(text, &mut keys, &mut facts).ok()?;
                call(route, &facts).map(|_| ()).map_err(|e| e.reason)
            }
        };
        Some(verdict.is_ok())
    }

    /// Calls of every type, then each with one member set to each value of a palette,
    /// at every path the schemas name (and a few they do not).
    fn corpus() -> Vec<Value> {
        let bases = [
            json!({"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}}),
            json!({"type": "identify", "anonymousId": "a"}),
            json!({"type": "track", "userId": "u", "event": "Signed Up", "properties": {"plan": "pro"}}),
            json!({"type": "track", "anonymousId": "a", "event": "E", "context": {"ip": "1.2.3.4"}}),
            json!({"type": "track", "groupId": "g", "event": "E"}),
            json!({"type": "track", "userId": "u", "event": "Device Created or Updated", "context": {"device": {"token": "t", "type": "ios"}}}),
            json!({"type": "track", "userId": "u", "event": "Device Deleted", "context": {"device": {"token": "t"}}}),
            json!({"type": "track", "userId": "u", "event": "User Deleted"}),
            json!({"type": "track", "userId": "u", "event": "User Suppressed", "timestamp": "2024-01-01T00:00:00Z"}),
            json!({"type": "track", "userId": "u", "event": "Relationship Deleted", "properties": {"objectId": "o", "objectTypeId": 2}}),
            json!({"type": "track", "anonymousId": "a", "event": "Object Deleted", "properties": {"objectId": "o"}}),
            json!({"type": "track", "event": "Report Delivery Event", "properties": {"deliveryId": "d", "metric": "opened"}}),
            json!({"type": "track", "event": "Report Content Event", "properties": {"activityType": "x", "actionType": "viewed_content", "contentId": 3}}),
            json!({"type": "page", "userId": "u", "name": "Home", "properties": {"url": "https://x", "category": "c"}}),
            json!({"type": "page", "anonymousId": "a", "context": {"page": {"keywords": ["a"]}, "campaign": {"name": "n", "utm_x": "y"}}}),
            json!({"type": "screen", "userId": "u", "name": "S", "context": {"app": {"name": "n"}, "os": {"name": "ios"}, "network": {"wifi": true}}}),
            json!({"type": "group", "groupId": "g", "userId": "u", "traits": {"object_type_id": "1", "relationshipAttributes": {}}}),
            json!({"type": "group", "groupId": "g", "anonymousId": "a"}),
            json!({"type": "alias", "previousId": "p", "userId": "u", "integrations": {"All": true}}),
            json!({"userId": "u", "messageId": "m", "sentAt": "2024-01-01T00:00:00.5+01:00", "version": 2}),
        ];
        let paths: &[&[&str]] = &[
            &["type"],
            &["userId"],
            &["anonymousId"],
            &["groupId"],
            &["previousId"],
            &["event"],
            &["name"],
            &["messageId"],
            &["timestamp"],
            &["sentAt"],
            &["receivedAt"],
            &["originalTimestamp"],
            &["version"],
            &["integrations"],
            &["integrations", "Segment.io"],
            &["context"],
            &["context", "active"],
            &["context", "ip"],
            &["context", "channel"],
            &["context", "campaign"],
            &["context", "campaign", "source"],
            &["context", "page"],
            &["context", "page", "url"],
            &["context", "page", "keywords"],
            &["context", "app"],
            &["context", "app", "build"],
            &["context", "device"],
            &["context", "device", "type"],
            &["context", "device", "token"],
            &["context", "device", "model"],
            &["context", "network", "cellular"],
            &["context", "os", "version"],
            &["context", "other"],
            &["traits"],
            &["traits", "email"],
            &["traits", "createdAt"],
            &["traits", "unsubscribed"],
            &["traits", "cio_subscription_preferences"],
            &["traits", "cio_subscription_preferences", "topics"],
            &["traits", "cio_subscription_preferences", "channels"],
            &["traits", "object_type_id"],
            &["traits", "relationshipAttributes"],
            &["properties"],
            &["properties", "url"],
            &["properties", "category"],
            &["properties", "objectId"],
            &["properties", "objectTypeId"],
            &["properties", "deliveryId"],
            &["properties", "metric"],
            &["properties", "activityType"],
            &["properties", "actionType"],
            &["properties", "contentId"],
            &["properties", "href"],
            &["extra"],
        ];
        let palette = [
            json!("s"),
            json!(""),
            json!(1),
            json!(1.5),
            json!(2.0),
            json!(true),
            json!(null),
            json!({}),
            json!([]),
            json!(["a"]),
            json!([1]),
            json!({"topic_1": true}),
            json!({"topic_1": "y"}),
            json!("2024-02-29T23:59:60-00:00"),
            json!("2024-02-29T23:59:59Z"),
            json!("ios"),
            json!("windows"),
            json!("opened"),
            json!("server"),
            json!("identify"),
            json!("track"),
            json!("alias"),
            json!("bogus"),
            json!("Report Delivery Event"),
            json!("Device Deleted"),
            json!("clicked_content"),
        ];
        let mut out = Vec::new();
        for base in &bases {
            out.push(base.clone());
            for path in paths {
                for v in &palette {
                    let mut c = base.clone();
                    let mut at = &mut c;
                    for (i, key) in path.iter().enumerate() {
                        if !at.is_object() {
                            break;
                        }
                        if i + 1 == path.len() {
                            at[*key] = v.clone();
                        } else {
                            if !at.get(*key).is_some_and(Value::is_object) {
                                at[*key] = json!({});
                            }
                            at = &mut at[*key];
                        }
                    }
                    out.push(c);
                }
            }
            // Without each top-level member in turn.
            if let Some(m) = base.as_object() {
                for k in m.keys() {
                    let mut c = base.clone();
                    c.as_object_mut().map(|m| m.remove(k));
                    out.push(c);
                }
            }
        }
        out
    }

    #[test]
    fn every_call_gets_the_verdict_the_spec_gives_it() {
        let reference = Reference::new();
        let corpus = corpus();
        let (mut compared, mut valid) = (0, 0);
        for c in &corpus {
            let text = serde_json::to_string(c).expect("a Value serialises");
            for route in [Route::Batch]
                .into_iter()
                .chain(CallType::ALL.map(Route::Single))
            {
                let Some(want) = reference.judge(route, c) else {
                    continue;
                };
                let got = ours(route, &text).expect("valid JSON scans");
                assert_eq!(got, want, "{route:?} {text}");
                compared += 1;
                valid += usize::from(want);
            }
        }
        // Enough of both verdicts for the comparison to mean something.
        assert!(compared > 20_000 && valid > 5_000, "{compared} {valid}");
    }
}
