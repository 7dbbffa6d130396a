//! The mapping file: how rows become calls, as the user writes it (TOML, serde).
//!
//! This is the user-facing shape only; [`super::compile`] checks it against an input's
//! columns and turns it into the form the encoder runs. Unknown keys are errors
//! (`deny_unknown_fields`) so a typo never silently drops data.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Mixed into every messageId, so two different backfills of the same file
    /// (say, a re-export) can be told apart. Changing it changes every id.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub defaults: Defaults,
    /// Per-column types and empty-value handling, by column name.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Batch-level `context`: sent at the top of each request and applied by the API to
    /// every call in it. Constants, columns or templates by output path (`ip`,
    /// `device.type`); per-row values make the packer split requests by value.
    #[serde(default)]
    pub context: BTreeMap<String, FieldSpec>,
    /// Batch-level `integrations` (e.g. `All = { const = false }`), as `context`.
    #[serde(default)]
    pub integrations: BTreeMap<String, FieldSpec>,
    /// One entry per call made from each row, in order.
    #[serde(rename = "call", default)]
    pub calls: Vec<CallSpec>,
    /// The file this came from, for error locations; set by [`super::load`].
    #[serde(skip)]
    pub source: Option<SpecSource>,
}

/// Path and text of a mapping file, so errors found after parsing (column names checked
/// against an input) can still point at a line and column.
#[derive(Debug, Clone, Default)]
pub struct SpecSource {
    pub path: String,
    pub text: String,
}

impl MappingSpec {
    /// ` (mapping.toml line L, column C)` for the first place `name` appears as a value
    /// (a quoted string, or a `{name}` template placeholder) in the mapping file, or an
    /// empty string when the text is not known. A text search rather than parser spans:
    /// the untagged-by-hand field enums do not carry spans, and the first mention is
    /// where a user looks anyway.
    pub fn locate(&self, name: &str) -> String {
        let Some(src) = &self.source else {
            return String::new();
        };
        let needles = [
            format!("\"{name}\""),
            format!("'{name}'"),
            format!("{{{name}}}"),
        ];
        // A bare key at the start of a line (`[columns]` entries): skip the newline.
        let keys = [format!("\n{name} ="), format!("\n{name}=")];
        let at = needles
            .iter()
            .filter_map(|n| src.text.find(n.as_str()))
            .chain(
                keys.iter()
                    .filter_map(|k| src.text.find(k.as_str()).map(|i| i + 1)),
            )
            .min();
        match at {
            Some(i) => {
                let before = &src.text[..i];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
                format!(" ({} line {line}, column {col})", src.path)
            }
            None => format!(" ({})", src.path),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(rename = "type", default)]
    pub ty: ColType,
    #[serde(default)]
    pub empty: EmptyPolicy,
    /// Timestamps later than now plus this many hours are rejected (clock or unit mix-ups).
    #[serde(default = "default_future_hours")]
    pub max_future_hours: u64,
    /// Time zone of timestamps written without an offset (naive date-times, dates,
    /// strftime formats without `%z`). Without it such values are rejected.
    pub timezone: Option<TimeZoneName>,
    /// Cleaning of every `int` and `float` column that names none of its own.
    pub clean: Option<Clean>,
    /// The decimal separator of cleaned numbers (`"."` or `","`).
    pub decimal: Option<DecimalSep>,
    /// What a trait, property or context value that does not parse becomes. Ids and the
    /// call's own timestamp always reject the row.
    pub on_error: Option<OnError>,
}

fn default_future_hours() -> u64 {
    24
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ty: ColType::default(),
            empty: EmptyPolicy::default(),
            max_future_hours: default_future_hours(),
            timezone: None,
            clean: None,
            decimal: None,
            on_error: None,
        }
    }
}

/// How a column's text is typed in the JSON sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColType {
    /// Numbers and booleans written as such when the text is exactly a JSON number
    /// (at most 15 significant digits, so no reader loses precision) or `true`/`false`;
    /// anything else stays a string.
    #[default]
    Auto,
    String,
    Int,
    Float,
    Bool,
    /// The text is a JSON document, inserted as a value.
    Json,
    /// A timestamp, written as UTC ISO 8601.
    Timestamp,
}

/// What an empty (or null) value becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmptyPolicy {
    /// Leave the key out.
    #[default]
    Omit,
    Null,
    /// An empty string.
    Empty,
}

/// How a number's text is cleaned before it is parsed, when it is not already a plain
/// number (the common case costs nothing). Surrounding spaces are always trimmed from
/// typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Clean {
    /// Only surrounding spaces.
    #[default]
    None,
    /// Currency symbols and codes (`$`, `€`, `USD`), thousands separators, and a
    /// negative amount in parentheses: `$1,234.50`, `USD 1,234.56`, `(12.50)`,
    /// `1.234,56 €` (with `decimal = ","`).
    Currency,
    /// A trailing percent sign, and thousands separators: `"15%"` is 15 (not 0.15).
    Percent,
}

/// The decimal separator of numbers that are cleaned: `"."` (the default; `,` then
/// separates thousands) or `","` (`.` then separates thousands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecimalSep(pub u8);

impl DecimalSep {
    pub const DOT: DecimalSep = DecimalSep(b'.');
}

impl<'de> Deserialize<'de> for DecimalSep {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "." => Ok(DecimalSep(b'.')),
            "," => Ok(DecimalSep(b',')),
            _ => Err(de::Error::custom(format!(
                "decimal = \"{s}\" is not a decimal separator; use \".\" (1,234.56) or \",\" (1.234,56)"
            ))),
        }
    }
}

/// What a trait, property or context value that does not parse as its type becomes.
/// Every value dropped or kept as text is counted per column in the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The whole row is rejected (the default).
    #[default]
    Reject,
    /// The value is left out of the call.
    Omit,
    /// The value is sent as `null`.
    Null,
    /// The value is sent as its original text, a string.
    Keep,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Reject => "reject",
            OnError::Omit => "omit",
            OnError::Null => "null",
            OnError::Keep => "keep",
        }
    }
}

/// `column = "int"` or `column = { type = "int", empty = "null" }`.
#[derive(Debug, Clone)]
pub enum ColumnSpec {
    Type(ColType),
    Full(ColumnDetail),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDetail {
    #[serde(rename = "type")]
    pub ty: Option<ColType>,
    pub empty: Option<EmptyPolicy>,
    /// Timestamp format for this column (see [`TsFormatName`]).
    pub format: Option<TsFormatName>,
    /// Time zone of this column's offset-less timestamps.
    pub timezone: Option<TimeZoneName>,
    /// How numbers are cleaned ([`Clean`]); alone, it makes the column a `float`.
    pub clean: Option<Clean>,
    pub decimal: Option<DecimalSep>,
    /// What a value that does not parse becomes ([`OnError`]).
    pub on_error: Option<OnError>,
}

impl ColumnSpec {
    pub fn ty(&self) -> Option<ColType> {
        match self {
            ColumnSpec::Type(t) => Some(*t),
            ColumnSpec::Full(d) => d.ty,
        }
    }
    pub fn empty(&self) -> Option<EmptyPolicy> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.empty,
        }
    }
    pub fn format(&self) -> Option<&TsFormatName> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.format.as_ref(),
        }
    }
    pub fn timezone(&self) -> Option<&TimeZoneName> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.timezone.as_ref(),
        }
    }
    pub fn clean(&self) -> Option<Clean> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.clean,
        }
    }
    pub fn decimal(&self) -> Option<DecimalSep> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.decimal,
        }
    }
    pub fn on_error(&self) -> Option<OnError> {
        match self {
            ColumnSpec::Type(_) => None,
            ColumnSpec::Full(d) => d.on_error,
        }
    }
}

/// The six call types of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl CallKind {
    pub const ALL: [CallKind; 6] = [
        CallKind::Identify,
        CallKind::Track,
        CallKind::Page,
        CallKind::Screen,
        CallKind::Group,
        CallKind::Alias,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Identify => "identify",
            CallKind::Track => "track",
            CallKind::Page => "page",
            CallKind::Screen => "screen",
            CallKind::Group => "group",
            CallKind::Alias => "alias",
        }
    }
    /// A call type by name, in any case (`track`, `Track`, `TRACK`).
    pub fn parse(s: &str) -> Option<CallKind> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
    /// The key under which a call's free-form fields go.
    pub fn payload_key(self) -> &'static str {
        match self {
            CallKind::Identify | CallKind::Group => "traits",
            _ => "properties",
        }
    }
}

/// Where a value comes from: `"column_name"`, or a table with exactly one of
/// `column`, `const` or `template`, plus optional typing.
#[derive(Debug, Clone)]
pub enum FieldSpec {
    Column(String),
    Detail(FieldDetail),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDetail {
    pub column: Option<String>,
    #[serde(rename = "const")]
    pub constant: Option<toml::Value>,
    /// Text with `{column}` placeholders, e.g. `"Order {status}"`.
    pub template: Option<Template>,
    #[serde(rename = "type")]
    pub ty: Option<ColType>,
    pub empty: Option<EmptyPolicy>,
    /// Timestamp format (see [`TsFormatName`]).
    pub format: Option<TsFormatName>,
    /// Time zone of offset-less timestamps.
    pub timezone: Option<TimeZoneName>,
    pub clean: Option<Clean>,
    pub decimal: Option<DecimalSep>,
    pub on_error: Option<OnError>,
}

/// A call's traits or properties:
/// - `"rest"`: every column the call does not use otherwise;
/// - `"column"`: an object column (an NDJSON object, a Parquet struct or map, a JSON
///   text column), whose members become the traits or properties;
/// - `["a", "b"]`: columns, each under its own name (a dotted name makes a path);
/// - `{ out = field, ... }`: a table of output path → field;
/// - `{ from = "rest" | "column", exclude = [..], keep = [..], fields = { .. } }`: the
///   members of `from`, less `exclude`, merged with `fields` (an explicit field wins over
///   a member of the same name); `keep` names columns the call uses otherwise (its
///   timestamp column, say) that `"rest"` sends too.
#[derive(Debug, Clone)]
pub enum PayloadSpec {
    /// `"rest"`, the only keyword.
    Rest,
    /// An object column, spread.
    Object(String),
    Columns(Vec<String>),
    Fields(BTreeMap<String, FieldSpec>),
    Merged(Merged),
}

/// `{ from = ..., exclude = [...], keep = [...], fields = {...} }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merged {
    /// `"rest"` or an object column.
    pub from: String,
    /// Columns (for `"rest"`) or keys (for an object column) left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Columns the call uses otherwise that `"rest"` still sends (e.g. the timestamp's).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Explicit fields, by output path; they win over members of the same name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
}

/// The call type: a constant (`type = "track"`) or read from a column per row
/// (`type = { column = "kind" }`), optionally for some types only
/// (`type = { column = "kind", only = ["track", "page"] }`: rows of other types make no
/// call from this table).
#[derive(Debug, Clone)]
pub enum KindSpec {
    Const(CallKind),
    Column {
        column: String,
        only: Option<Vec<CallKind>>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    #[serde(rename = "type")]
    pub kind: KindSpec,
    pub user_id: Option<FieldSpec>,
    pub anonymous_id: Option<FieldSpec>,
    pub event: Option<FieldSpec>,
    /// page and screen: the page or screen name.
    pub name: Option<FieldSpec>,
    pub group_id: Option<FieldSpec>,
    /// group: `objectTypeId`, sent as a stringified integer (the API assumes 1 without it).
    pub object_type_id: Option<FieldSpec>,
    pub previous_id: Option<FieldSpec>,
    pub timestamp: Option<FieldSpec>,
    pub message_id: Option<FieldSpec>,
    pub traits: Option<PayloadSpec>,
    pub properties: Option<PayloadSpec>,
    /// Call-level `context`, written inside each call (e.g. `device.token` for the device
    /// semantic events). For values shared by a request use the top-level `[context]`.
    pub context: Option<BTreeMap<String, FieldSpec>>,
}

// Hand-written `Deserialize` for the either/or shapes. serde's `untagged` would answer a
// typo with "data did not match any variant" and no useful location; these say which
// shapes are valid, and because the error is raised while the value is deserialized,
// `toml` reports the line and column of that value.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use std::fmt;

const FIELD_SHAPES: &str = "a column name (\"user_id\") or a table with one of `column`, `const` or `template`, e.g. { const = \"Signed Up\" } or { template = \"Order {status}\" }";

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(FIELD_SHAPES)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                if v.is_empty() {
                    return Err(E::custom(format!(
                        "an empty column name; expected {FIELD_SHAPES}"
                    )));
                }
                Ok(FieldSpec::Column(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let d = FieldDetail::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let n = d.column.is_some() as u8
                    + d.constant.is_some() as u8
                    + d.template.is_some() as u8;
                if n != 1 {
                    return Err(de::Error::custom(
                        "a field table needs exactly one of `column`, `const` or `template`",
                    ));
                }
                Ok(FieldSpec::Detail(d))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldSpec, E> {
                Err(E::custom(format!(
                    "a bare value names a column; for the constant {v} write {{ const = {v} }}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldSpec, E> {
                Err(E::custom(format!(
                    "a bare value names a column; for the constant {v} write {{ const = {v} }}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldSpec, E> {
                Err(E::custom(format!(
                    "a bare value names a column; for the constant {v} write {{ const = {v} }}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for PayloadSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PayloadSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"rest\", an object column, a list of column names, a table of output path = field, or { from = ..., fields = {...} }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PayloadSpec, E> {
                match v {
                    "rest" => Ok(PayloadSpec::Rest),
                    "" => Err(E::custom("an empty column name; use \"rest\" (every column not used otherwise), an object column, a list of columns [\"a\", \"b\"], or a table { out = \"column\" }")),
                    _ => Ok(PayloadSpec::Object(v.to_string())),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PayloadSpec, A::Error> {
                let mut cols = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    cols.push(c);
                }
                Ok(PayloadSpec::Columns(cols))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PayloadSpec, A::Error> {
                // A table with `from` is the merged form; any other is output path → field.
                let t = toml::Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if t.contains_key("from") {
                    let m = Merged::deserialize(toml::Value::Table(t)).map_err(|e| {
                        de::Error::custom(format!(
                            "{} (a table with `from` takes from, exclude, keep and fields; an output named \"from\" goes under fields)",
                            e.message().trim_end()
                        ))
                    })?;
                    return Ok(PayloadSpec::Merged(m));
                }
                let m = BTreeMap::<String, FieldSpec>::deserialize(toml::Value::Table(t))
                    .map_err(|e| de::Error::custom(e.message().trim_end()))?;
                Ok(PayloadSpec::Fields(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for KindSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Col {
            column: String,
            only: Option<Vec<OnlyKind>>,
        }
        /// A call type named in `only`, in any case, with the nearest name suggested.
        struct OnlyKind(CallKind);
        impl<'de> Deserialize<'de> for OnlyKind {
            fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = String::deserialize(d)?;
                CallKind::parse(&v).map(OnlyKind).ok_or_else(|| {
                    let names = CallKind::ALL.map(CallKind::as_str);
                    de::Error::custom(format!(
                        "\"{v}\" in `only` is not a call type{}; use identify, track, page, screen, group or alias",
                        super::suggest::did_you_mean(&v, names)
                    ))
                })
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KindSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a call type (identify, track, page, screen, group, alias) or { column = \"kind\" } (optionally with only = [\"track\", ...])")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KindSpec, E> {
                CallKind::parse(v).map(KindSpec::Const).ok_or_else(|| {
                    let names = CallKind::ALL.map(CallKind::as_str);
                    E::custom(format!("\"{v}\" is not a call type{}; use identify, track, page, screen, group or alias, or {{ column = \"kind\" }} to read it from a column", super::suggest::did_you_mean(v, names)))
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KindSpec, A::Error> {
                let c = Col::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let only = c
                    .only
                    .map(|v| v.into_iter().map(|k| k.0).collect::<Vec<_>>());
                if only.as_ref().is_some_and(Vec::is_empty) {
                    return Err(de::Error::custom(
                        "`only` is empty: name the call types this table makes, e.g. only = [\"track\"]",
                    ));
                }
                Ok(KindSpec::Column {
                    column: c.column,
                    only,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ColumnSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a type (auto, string, int, float, bool, json, timestamp) or a table { type = ..., empty = ..., format = ..., timezone = ... }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ColumnSpec, E> {
                ColType::deserialize(de::value::StrDeserializer::<E>::new(v)).map(ColumnSpec::Type)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ColumnSpec, A::Error> {
                ColumnDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ColumnSpec::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// An IANA time zone name, checked when the mapping is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZoneName(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<chrono_tz::Tz>().map(TimeZoneName).map_err(|_| {
            de::Error::custom(format!(
                "unknown time zone \"{s}\"; use an IANA name such as \"UTC\", \"Europe/Paris\" or \"America/New_York\""
            ))
        })
    }
}

/// A timestamp format: `rfc3339` (alias `iso8601`; the default: date-time with an offset,
/// or without one when a `timezone` is set), `date` (`YYYY-MM-DD`, midnight in the time
/// zone), `unix` (unit by magnitude), `unix_s`, `unix_ms`, `unix_us`, `unix_ns`, or a
/// chrono strftime pattern containing `%` (e.g. `"%d/%m/%Y %H:%M"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsFormatName(pub String);

pub const TS_FORMATS: &str = "rfc3339, iso8601, date, unix, unix_s, unix_ms, unix_us, unix_ns, or a strftime pattern such as \"%d/%m/%Y %H:%M\"";

impl<'de> Deserialize<'de> for TsFormatName {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let named = matches!(
            s.as_str(),
            "rfc3339" | "iso8601" | "date" | "unix" | "unix_s" | "unix_ms" | "unix_us" | "unix_ns"
        );
        if named {
            return Ok(TsFormatName(s));
        }
        if s.contains('%') {
            // chrono reports a bad specifier only when parsing; check the pattern now.
            let bad = chrono::format::StrftimeItems::new(&s)
                .any(|i| matches!(i, chrono::format::Item::Error));
            if bad {
                return Err(de::Error::custom(format!(
                    "\"{s}\" is not a valid strftime pattern (see chrono's format::strftime docs)"
                )));
            }
            return Ok(TsFormatName(s));
        }
        let named = [
            "rfc3339", "iso8601", "date", "unix", "unix_s", "unix_ms", "unix_us", "unix_ns",
        ];
        Err(de::Error::custom(format!(
            "unknown timestamp format \"{s}\"{}; valid formats are {TS_FORMATS}",
            super::suggest::did_you_mean(&s, named)
        )))
    }
}

/// A template with `{column}` placeholders, its syntax checked when the mapping is read
/// (the column names are checked against each input later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

impl Template {
    /// Literal and placeholder parts, in order: `(false, text)` or `(true, column)`.
    pub fn parts(&self) -> Result<Vec<(bool, &str)>, String> {
        let t = self.0.as_str();
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push((false, &rest[..open]));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template \"{t}\" has a `{{` without a closing `}}`"))?;
            let name = &after[..close];
            if name.is_empty() || name.contains('{') {
                return Err(format!(
                    "template \"{t}\" has an empty or nested placeholder; write {{column_name}}"
                ));
            }
            parts.push((true, name));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!(
                "template \"{t}\" has a `}}` without an opening `{{`"
            ));
        }
        if !rest.is_empty() {
            parts.push((false, rest));
        }
        Ok(parts)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = Template(String::deserialize(d)?);
        t.parts().map_err(de::Error::custom)?;
        Ok(t)
    }
}

/// Parses a mapping file's text. Errors carry the line and column (from `toml`).
pub fn parse(text: &str) -> Result<MappingSpec, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_mapping_parses() {
        let m = parse(
            r#"
            namespace = "crm"
            [columns]
            amount = "float"
            meta = { type = "json", empty = "null" }
            [[call]]
            type = "identify"
            user_id = "user_id"
            traits = ["email", "name"]
            [[call]]
            type = "track"
            user_id = "user_id"
            event = { const = "Signed Up" }
            timestamp = { column = "ts", format = "unix_ms" }
            properties = "rest"
            "#,
        )
        .unwrap();
        assert_eq!(m.calls.len(), 2);
        assert_eq!(m.columns["amount"].ty(), Some(ColType::Float));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = parse("[[call]]\ntype = \"track\"\nuser_idd = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("user_idd"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }
}
