//! The reserved fields the vendor's spec types, and the check of a written value
//! against them.
//!
//! The spec leaves traits, properties and context open ("any JSON shape") except for a
//! few names it types: `traits.email` is a string and `traits.createdAt` a date-time in
//! identify, `traits.object_type_id` a string in group, page's `properties.url` a
//! string, `context.ip` a string, `context.device.type` `ios` or `android`, and so on
//! (the tables below, read from `components.schemas`). A call that gives such a name
//! another shape is refused by the API, so the mapper refuses the row first, naming the
//! field and the value ([`super::compile`] attaches the tables' entries to the output
//! nodes of those names once; the encoder checks only those nodes).
//!
//! Where the spec reads a field two ways the check reads it as the spec does with its
//! `oneOf` taken as `anyOf` (as the receiver does, `src/serve/schema.rs`): identify's
//! `unsubscribed` and `cio_subscription_preferences` are typed only in its userId
//! branch, so a call that also carries an anonymousId may hold anything there; a call's
//! context is the web context (`campaign`, `page`) or the mobile one (`app`, `device`,
//! `network`, `os`): a page call's must be web, a screen call's mobile, and any other
//! call's is refused only when it fits neither. Semantic events' own fields are checked
//! by [`super::semantic`].
//!
//! The check of a JSON value (an object column placed at `context.device`, NDJSON's
//! later keys spread into traits) walks it with serde without building it: nothing is
//! allocated unless the value is refused.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::spec::CallKind;

/// What the spec says a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    String,
    /// A string in RFC 3339 `date-time` form.
    DateTime,
    Bool,
    Array,
    /// A string, one of these.
    OneOf(&'static [&'static str]),
    /// An object whose named members are typed by `fields`, and every other member by
    /// `rest` (when given).
    Object {
        fields: &'static [Field],
        rest: Option<&'static Shape>,
    },
}

/// Which reading of the spec types the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only identify's userId branch: ignored when the call carries an anonymousId.
    KnownUser,
    /// Only the web context (`context_non_mobile`).
    Web,
    /// Only the mobile context (`context_mobile`).
    Mobile,
}

/// A reserved name and its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    pub when: When,
}

const fn f(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        when: When::Always,
    }
}

const fn object(fields: &'static [Field]) -> Shape {
    Shape::Object { fields, rest: None }
}

const STRING: Shape = Shape::String;
const BOOL: Shape = Shape::Bool;

/// identify's `traits` (`components.schemas.identify`).
pub const IDENTIFY_TRAITS: &[Field] = &[
    f("email", Shape::String),
    f("createdAt", Shape::DateTime),
    Field {
        name: "unsubscribed",
        shape: Shape::Bool,
        when: When::KnownUser,
    },
    Field {
        name: "cio_subscription_preferences",
        shape: object(&[
            f(
                "topics",
                Shape::Object {
                    fields: &[],
                    rest: Some(&BOOL),
                },
            ),
            f(
                "channels",
                Shape::Object {
                    fields: &[],
                    rest: Some(&BOOL),
                },
            ),
        ]),
        when: When::KnownUser,
    },
];

/// group's `traits` (`components.schemas.group`).
pub const GROUP_TRAITS: &[Field] = &[
    f("object_type_id", Shape::String),
    f("relationshipAttributes", object(&[])),
];

/// page's `properties` (`components.schemas.page`).
pub const PAGE_PROPERTIES: &[Field] = &[
    f("category", Shape::String),
    f("url", Shape::String),
    f("title", Shape::String),
    f("referrer", Shape::String),
    f("path", Shape::String),
    f("search", Shape::String),
];

const CONTEXT_PAGE: &[Field] = &[
    f("name", Shape::String),
    f("path", Shape::String),
    f("referrer", Shape::String),
    f("search", Shape::String),
    f("title", Shape::String),
    f("url", Shape::String),
    f("keywords", Shape::Array),
];

const fn web(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        when: When::Web,
    }
}

const fn mobile(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        when: When::Mobile,
    }
}

/// A call's `context` (`context_common`, `context_non_mobile`, `context_mobile`).
pub const CONTEXT: &[Field] = &[
    f("active", Shape::Bool),
    f("ip", Shape::String),
    f("locale", Shape::String),
    f("userAgent", Shape::String),
    f("channel", Shape::OneOf(&["browser", "server", "mobile"])),
    web(
        "campaign",
        Shape::Object {
            fields: &[
                f("name", Shape::String),
                f("source", Shape::String),
                f("medium", Shape::String),
                f("term", Shape::String),
                f("content", Shape::String),
            ],
            rest: Some(&STRING),
        },
    ),
    web("page", object(CONTEXT_PAGE)),
    mobile(
        "app",
        object(&[
            f("name", Shape::String),
            f("version", Shape::String),
            f("build", Shape::String),
            f("namespace", Shape::String),
        ]),
    ),
    mobile(
        "device",
        object(&[
            f("id", Shape::String),
            f("advertisingId", Shape::String),
            f("manufacturer", Shape::String),
            f("model", Shape::String),
            f("name", Shape::String),
            f("type", Shape::OneOf(&["android", "ios"])),
            f("version", Shape::String),
        ]),
    ),
    mobile(
        "network",
        object(&[
            f("bluetooth", Shape::Bool),
            f("carrier", Shape::String),
            f("cellular", Shape::Bool),
            f("wifi", Shape::Bool),
        ]),
    ),
    mobile(
        "os",
        object(&[f("name", Shape::String), f("version", Shape::String)]),
    ),
];

/// An `[integrations]` value: `true` or `false`, nothing else (`components.schemas.integrations`).
pub const INTEGRATION: Field = f("", Shape::Bool);

/// The reserved names of a call kind's traits or properties.
pub fn payload_fields(kind: CallKind) -> &'static [Field] {
    match kind {
        CallKind::Identify => IDENTIFY_TRAITS,
        CallKind::Group => GROUP_TRAITS,
        CallKind::Page => PAGE_PROPERTIES,
        _ => &[],
    }
}

/// The bit of `kind` in a set of kinds.
pub const fn kind_bit(kind: CallKind) -> u8 {
    1 << kind as u8
}

/// Where the output node sits, for the name shown in a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// traits or properties, whichever the call kind uses.
    Payload,
    Context,
    Integrations,
}

/// A reserved field's entry on an output node: what is checked there, for which kinds
/// of call, and the node's path from its root (`email`, `device.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub rule: Rule,
    /// Call kinds ([`kind_bit`]) the rule holds for; a payload's rules depend on the kind
    /// (traits of identify, properties of page), which a type column sets per row.
    pub kinds: u8,
    pub place: Place,
    pub path: Box<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The node's value is this field.
    Field(Field),
    /// The node spreads an object's members into traits or properties: each member the
    /// call kind's [`payload_fields`] name is checked.
    PayloadMembers,
}

/// Which context schema a call's context must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSchema {
    /// Web or mobile: refused only when it fits neither.
    Any,
    Web,
    Mobile,
}

impl ContextSchema {
    pub fn of(kind: CallKind) -> ContextSchema {
        match kind {
            CallKind::Page => ContextSchema::Web,
            CallKind::Screen => ContextSchema::Mobile,
            _ => ContextSchema::Any,
        }
    }
}

/// What the encoder knows of the call being written, for the rules that depend on it,
/// and the context's misfits while it is being written.
#[derive(Debug)]
pub struct Judge {
    /// [`kind_bit`] of the call (every bit for a batch's context).
    pub kind: u8,
    /// The call's kind (none for a batch's context).
    pub call: Option<CallKind>,
    /// traits or properties, for names in reasons.
    pub payload_key: &'static str,
    /// The call has no anonymousId: identify's userId branch types more traits.
    pub known_user: bool,
    pub context: ContextSchema,
    /// Under [`ContextSchema::Any`], why the context is not web, and why not mobile.
    web_misfit: Option<String>,
    mobile_misfit: Option<String>,
}

impl Judge {
    pub fn new(kind: CallKind, known_user: bool) -> Judge {
        Judge {
            kind: kind_bit(kind),
            call: Some(kind),
            payload_key: kind.payload_key(),
            known_user,
            context: ContextSchema::of(kind),
            web_misfit: None,
            mobile_misfit: None,
        }
    }

    /// For a request's batch-level context and integrations.
    pub fn batch() -> Judge {
        Judge {
            kind: u8::MAX,
            call: None,
            payload_key: "properties",
            known_user: false,
            context: ContextSchema::Any,
            web_misfit: None,
            mobile_misfit: None,
        }
    }

    fn prefix(&self, place: Place) -> &'static str {
        match place {
            Place::Payload => self.payload_key,
            Place::Context => "context",
            Place::Integrations => "integrations",
        }
    }

    /// Whether a field typed `when` is checked on this call; `Err` refuses it at once.
    fn applies(&self, when: When) -> bool {
        match when {
            When::Always => true,
            When::KnownUser => self.known_user,
            When::Web => self.context != ContextSchema::Mobile,
            When::Mobile => self.context != ContextSchema::Web,
        }
    }

    /// A misfit of a field typed `when`: refused at once, or (a web or mobile field of a
    /// context that may be either) noted until the whole context is known.
    fn misfit(&mut self, when: When, why: String) -> Result<(), String> {
        match (when, self.context) {
            (When::Web, ContextSchema::Any) => {
                self.web_misfit.get_or_insert(why);
                Ok(())
            }
            (When::Mobile, ContextSchema::Any) => {
                self.mobile_misfit.get_or_insert(why);
                Ok(())
            }
            _ => Err(why),
        }
    }

    /// After a context is written: refused when it fit neither the web nor the mobile
    /// context. Clears what it noted.
    pub fn end_context(&mut self) -> Result<(), String> {
        match (self.web_misfit.take(), self.mobile_misfit.take()) {
            (Some(w), Some(m)) => Err(format!(
                "the context fits neither the spec's web context ({w}) nor its mobile one ({m})"
            )),
            _ => Ok(()),
        }
    }

    /// Checks `value` (the JSON just written for a node carrying `r`).
    #[cold]
    pub fn check(&mut self, r: &Reserved, value: &[u8]) -> Result<(), String> {
        if r.kinds & self.kind == 0 {
            return Ok(());
        }
        let (shape, when) = match r.rule {
            Rule::Field(field) => (field.shape, field.when),
            Rule::PayloadMembers => match self.call.map(payload_fields) {
                Some(fields) if !fields.is_empty() => {
                    (Shape::Object { fields, rest: None }, When::Always)
                }
                _ => return Ok(()),
            },
        };
        if !self.applies(when) {
            return Ok(());
        }
        let Err(m) = walk(value, &shape, self) else {
            return Ok(());
        };
        let prefix = self.prefix(r.place);
        let mut at = match (r.place, r.path.is_empty()) {
            (_, true) => prefix.to_string(),
            (Place::Integrations, false) => format!("{prefix}.{:?}", &*r.path),
            (_, false) => format!("{prefix}.{}", r.path),
        };
        if !m.path.is_empty() {
            at.push('.');
            at.push_str(&m.path);
        }
        let why = format!(
            "{at} must be {} (the API's spec types it), not {}{}",
            m.want, m.got, m.hint
        );
        self.misfit(when, why)
    }
}

/// Why a value does not fit a shape: where inside it, what was wanted and what came.
#[derive(Debug, Default)]
struct Misfit {
    /// Path inside the value (`topics.topic_1`), empty for the value itself.
    path: String,
    want: String,
    got: String,
    hint: &'static str,
}

fn want_of(shape: &Shape) -> String {
    match shape {
        Shape::String => "a string".into(),
        Shape::DateTime => "an RFC 3339 date-time string (YYYY-MM-DDTHH:MM:SS.sssZ)".into(),
        Shape::Bool => "true or false".into(),
        Shape::Array => "an array".into(),
        Shape::OneOf(names) => format!("one of {}", names.join(", ")),
        Shape::Object { .. } => "an object".into(),
    }
}

/// What to do about a misfit of `shape`; `number`: the value given was a number.
fn hint_of(shape: &Shape, number: bool) -> &'static str {
    match shape {
        Shape::String | Shape::OneOf(_) if number => {
            "; give the column type = \"string\" if its values are text that looks like a number (\"2.0\", \"94128\")"
        }
        Shape::DateTime => {
            "; give the column type = \"timestamp\" (and its format) so that it is written as one"
        }
        Shape::Bool => {
            "; give the column type = \"bool\" (yes/no, y/n, 1/0, true/false, on/off become booleans)"
        }
        _ => "",
    }
}

/// A value as shown in a reason, shortened.
fn shown(value: &[u8]) -> String {
    let s = String::from_utf8_lossy(value);
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Checks a JSON value against `shape`. Values are the encoder's own output, so they
/// are valid JSON.
fn walk(value: &[u8], shape: &Shape, judge: &Judge) -> Result<(), Misfit> {
    // Most values are scalars or unchecked objects: their first byte says enough.
    let first = value.first().copied().unwrap_or(b'n');
    let kind_ok = match shape {
        Shape::String | Shape::DateTime | Shape::OneOf(_) => first == b'"',
        Shape::Bool => value == b"true" || value == b"false",
        Shape::Array => first == b'[',
        Shape::Object { .. } => first == b'{',
    };
    if !kind_ok {
        return Err(Misfit {
            want: want_of(shape),
            got: format!("{} ({})", describe(first), shown(value)),
            hint: hint_of(shape, first == b'-' || first.is_ascii_digit()),
            ..Misfit::default()
        });
    }
    let simple = match shape {
        Shape::String | Shape::Bool | Shape::Array => true,
        Shape::Object { fields, rest } => fields.is_empty() && rest.is_none(),
        _ => false,
    };
    if simple {
        return Ok(());
    }
    // A string without escapes (nearly every one) is its bytes: no parser needed.
    if let (Shape::DateTime | Shape::OneOf(_), [b'"', inner @ .., b'"']) = (shape, value) {
        if !inner.contains(&b'\\') {
            let ok = match shape {
                Shape::OneOf(names) => names.iter().any(|n| n.as_bytes() == inner),
                _ => crate::timestamp::is_rfc3339(inner),
            };
            return if ok {
                Ok(())
            } else {
                Err(Misfit {
                    want: want_of(shape),
                    got: format!("{:?}", String::from_utf8_lossy(inner)),
                    hint: hint_of(shape, false),
                    ..Misfit::default()
                })
            };
        }
    }
    let mut misfit = None;
    let mut de = serde_json::Deserializer::from_slice(value);
    let walked = Seed {
        shape,
        judge,
        misfit: &mut misfit,
    }
    .deserialize(&mut de);
    match (walked, misfit) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(m)) => Err(m),
        (Err(e), None) => Err(Misfit {
            want: want_of(shape),
            got: e.to_string(),
            ..Misfit::default()
        }),
    }
}

fn describe(first: u8) -> &'static str {
    match first {
        b'"' => "a string",
        b'{' => "an object",
        b'[' => "an array",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// Walks a value with its shape, allocating nothing unless it refuses it (then the
/// first misfit goes into `misfit`, and the walk stops with an error).
struct Seed<'a> {
    shape: &'a Shape,
    judge: &'a Judge,
    misfit: &'a mut Option<Misfit>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_> {
    fn fail<E: de::Error>(self, got: String) -> Result<(), E> {
        *self.misfit = Some(Misfit {
            want: want_of(self.shape),
            hint: hint_of(self.shape, got.starts_with("a number")),
            got,
            ..Misfit::default()
        });
        Err(E::custom("misfit"))
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&want_of(self.shape))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let ok = match self.shape {
            Shape::String => true,
            Shape::DateTime => crate::timestamp::is_rfc3339(v.as_bytes()),
            Shape::OneOf(names) => names.contains(&v),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let got = format!("{v:?}");
            self.fail(got)
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if matches!(self.shape, Shape::Bool) {
            Ok(())
        } else {
            self.fail(format!("a boolean ({v})"))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.fail(format!("a number ({v})"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.fail(format!("a number ({v})"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.fail(format!("a number ({v})"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.fail("null".into())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !matches!(self.shape, Shape::Array) {
            return self.fail("an array".into());
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Shape::Object { fields, rest } = *self.shape else {
            return self.fail("an object".into());
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let name = key.as_str();
            let (shape, when) = match fields.iter().find(|f| f.name == name) {
                Some(f) => (Some(&f.shape), f.when),
                None => (rest, When::Always),
            };
            let Some(shape) = shape.filter(|_| self.judge.applies(when)) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let inner = Seed {
                shape,
                judge: self.judge,
                misfit: &mut *self.misfit,
            };
            if let Err(e) = map.next_value_seed(inner) {
                if let Some(m) = self.misfit.as_mut() {
                    m.path = if m.path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{name}.{}", m.path)
                    };
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A member name, borrowed when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}
