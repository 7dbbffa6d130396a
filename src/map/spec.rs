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
    /// One entry per call made from each row, in order.
    #[serde(rename = "call")]
    pub calls: Vec<CallSpec>,
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

/// `column = "int"` or `column = { type = "int", empty = "null" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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
    pub fn parse(s: &str) -> Option<CallKind> {
        CallKind::ALL.into_iter().find(|k| k.as_str() == s)
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
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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
    pub template: Option<String>,
    #[serde(rename = "type")]
    pub ty: Option<ColType>,
    pub empty: Option<EmptyPolicy>,
    /// Timestamp format: `rfc3339` (default), `unix` (unit by magnitude), `unix_s`,
    /// `unix_ms`, `unix_us`, `unix_ns`.
    pub format: Option<String>,
}

/// `"rest"` (every column the call does not use otherwise), a list of columns (each sent
/// under its own name), or a table of output path → field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PayloadSpec {
    Keyword(String),
    Columns(Vec<String>),
    Fields(BTreeMap<String, FieldSpec>),
}

/// The call type: a constant (`type = "track"`) or read from a column per row
/// (`type = { column = "kind" }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KindSpec {
    Const(CallKind),
    Column { column: String },
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
    pub previous_id: Option<FieldSpec>,
    pub timestamp: Option<FieldSpec>,
    pub message_id: Option<FieldSpec>,
    pub traits: Option<PayloadSpec>,
    pub properties: Option<PayloadSpec>,
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
