//! The mapping, checked against one input's columns and compiled for the encoder.
//!
//! Every column name is resolved into a [`ColumnRef`] here, once per input, before any
//! row is read; a name the input does not have is a configuration error that lists the
//! columns it does have. A name the input's header holds more than once is one too, when
//! the mapping uses it (by name, or through `"rest"`): a row could only ever be read from
//! the first of those columns, so the others would be dropped without a word (and `"rest"`
//! would send one key twice). Duplicates the mapping never uses stay harmless. JSON keys
//! and constants are pre-encoded to bytes so the encoder only copies them.
//!
//! Output paths split at dots (`address.city`); a dot that is part of a name is written
//! `\.` (a backslash `\\`), see [`path_segments`]. `[integrations]` keys are destination
//! names, never paths (`"Customer.io Data Pipelines"` is one key), and their values are
//! booleans: a constant must be one, a column's value is read as one. Names the spec
//! types (`traits.email`, `context.ip`, ...) get their rule from [`super::reserved`]
//! here, once, so the encoder checks only those nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;

use super::reserved::{self, Field, Place, Reserved, Rule, Shape, When};
use super::spec::{
    CallKind, CallSpec, Clean, ColType, DecimalSep, EmptyPolicy, FieldDetail, FieldSpec, KindSpec,
    MappingSpec, Merged, OnError, PayloadSpec, TsFormatName,
};
use super::suggest;
use crate::json;
use crate::source::{ColumnRef, Schema};
use crate::timestamp::PatternKind;

/// A mapping error found while compiling against an input. Names what is wrong and
/// what would be valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// How a timestamp column's text is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsFormat {
    /// RFC 3339 / ISO 8601; without an offset only when the column has a time zone.
    Rfc3339,
    /// `YYYY-MM-DD`, midnight in the column's time zone.
    Date,
    /// Unix time; `None` means the unit is chosen by magnitude.
    Unix(Option<UnixUnit>),
    /// A chrono strftime pattern.
    Pattern(Arc<str>, PatternKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// A column read with its type and empty policy.
#[derive(Debug, Clone)]
pub struct ColumnValue {
    pub col: ColumnRef,
    pub name: String,
    pub ty: ColType,
    pub empty: EmptyPolicy,
    pub ts_format: TsFormat,
    /// Zone of offset-less timestamps.
    pub tz: Option<Tz>,
    /// The call's own `timestamp`: the API takes none before 1970 or far ahead, so such a
    /// value rejects the row. A timestamp elsewhere (a birth date in traits, a plan's
    /// end in properties) is any date at all.
    pub event_time: bool,
    /// How an `int` or `float` text that is not a plain number is cleaned.
    pub clean: Clean,
    /// The decimal separator of cleaned numbers (`b'.'` or `b','`).
    pub decimal: u8,
    /// What a value that does not parse becomes; always `Reject` for ids and the call's
    /// own timestamp.
    pub on_error: OnError,
    /// This column's index in [`CompiledMapping::value_columns`], under which its
    /// cleaned, dropped and kept values are counted.
    pub slot: u32,
}

/// The options a field or a `[columns]` entry may give a column value.
#[derive(Debug, Clone, Copy, Default)]
struct FieldOpts<'a> {
    ty: Option<ColType>,
    empty: Option<EmptyPolicy>,
    format: Option<&'a TsFormatName>,
    tz: Option<Tz>,
    clean: Option<Clean>,
    decimal: Option<DecimalSep>,
    on_error: Option<OnError>,
}

impl<'a> FieldOpts<'a> {
    fn of(d: &'a FieldDetail) -> Self {
        FieldOpts {
            ty: d.ty,
            empty: d.empty,
            format: d.format.as_ref(),
            tz: d.timezone.map(|t| t.0),
            clean: d.clean,
            decimal: d.decimal,
            on_error: d.on_error,
        }
    }
}

/// What a value is for: an id or the call's timestamp cannot be dropped or kept as
/// text, since the call cannot be sent without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Ids and names (`userId`, `event`, ...): strings.
    Id,
    /// The call's own timestamp.
    EventTime,
    /// Traits, properties, context, integrations.
    Value,
}

#[derive(Debug, Clone)]
pub enum TemplatePart {
    Lit(String),
    Col(ColumnRef, String),
}

/// A value of the output.
#[derive(Debug, Clone)]
pub enum ValueSource {
    Column(ColumnValue),
    /// Pre-encoded JSON.
    Const(Vec<u8>),
    Template(Vec<TemplatePart>),
}

/// A node of a call's traits/properties tree. `key` is pre-encoded as `"key":`.
#[derive(Debug, Clone)]
pub struct OutNode {
    pub key: Vec<u8>,
    pub name: String,
    pub kind: OutKind,
    /// A column whose value is one JSON object per row, its members written in this
    /// node's place ([`Schema::spreads`]: NDJSON's keys first seen after the sample; or an
    /// object column given as the whole traits or properties). Not a kind of its own:
    /// checking it costs the encoder one load per node.
    pub spread: Option<Box<Spread>>,
    /// A name the spec types (`traits.email`, `context.ip`, an integration): the value
    /// written here is checked against it. `None` for nearly every node (one load).
    pub reserved: Option<Box<Reserved>>,
}

impl OutNode {
    fn new(name: &str, kind: OutKind) -> OutNode {
        OutNode {
            key: key_bytes(name),
            name: name.to_string(),
            kind,
            spread: None,
            reserved: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum OutKind {
    Leaf(ValueSource),
    Object(Vec<OutNode>),
}

/// An object column whose members are written in a node's place ([`OutNode::spread`]).
#[derive(Debug, Clone)]
pub struct Spread {
    pub col: ColumnRef,
    /// The column's name, for reject reasons.
    pub name: String,
    /// Keys (JSON-encoded, quotes included) left out: the explicit fields beside it (they
    /// win, so no key is written twice) and `exclude`. Empty: the members are copied
    /// whole.
    pub skip: Vec<Vec<u8>>,
    /// A value that is not an object is a bad value (an object column the user named);
    /// false for NDJSON's later keys, which are an object or nothing.
    pub strict: bool,
    /// What a value that is not an object becomes (see [`ColumnValue::on_error`]).
    pub on_error: OnError,
    pub slot: u32,
}

#[derive(Debug, Clone)]
pub enum KindSource {
    Const(CallKind),
    /// The type read from a column (its name for messages), and the types this call is
    /// made for (`only`; `None`: every type).
    Column(ColumnRef, String, Option<Vec<CallKind>>),
}

/// One call of the mapping, ready to encode.
#[derive(Debug, Clone)]
pub struct CompiledCall {
    pub kind: KindSource,
    pub user_id: Option<ValueSource>,
    pub anonymous_id: Option<ValueSource>,
    pub event: Option<ValueSource>,
    pub name: Option<ValueSource>,
    pub group_id: Option<ValueSource>,
    /// group: written as a string of digits.
    pub object_type_id: Option<ValueSource>,
    pub previous_id: Option<ValueSource>,
    pub timestamp: Option<ValueSource>,
    pub message_id: Option<ValueSource>,
    /// traits (identify, group) or properties (the others); with the type from a column
    /// and both given, the traits.
    pub payload: Vec<OutNode>,
    /// With the type from a column and both `traits` and `properties` given: the
    /// properties, for the rows whose type carries properties.
    pub properties: Option<Vec<OutNode>>,
    /// Call-level `context`, written inside the call.
    pub context: Vec<OutNode>,
    /// Some node of `payload` (of `context`) carries a name the spec types
    /// ([`OutNode::reserved`]): the encoder checks that tree's values.
    pub payload_checks: bool,
    pub context_checks: bool,
}

/// The whole mapping compiled against one input.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    pub calls: Vec<CompiledCall>,
    /// The per-input part of every messageId: the mapping's namespace and the input's
    /// path as given ([`super::message_id::input_seed`]).
    pub seed: u64,
    pub max_future_ms: i64,
    /// Batch-level `context` and `integrations`: the request they go in is chosen by
    /// their bytes, so calls with different values never share a request.
    pub batch_context: Vec<OutNode>,
    pub batch_integrations: Vec<OutNode>,
    /// The names of the columns whose values are counted when cleaned, dropped or kept
    /// as text, indexed by [`ColumnValue::slot`].
    pub value_columns: Arc<[String]>,
    /// Column names, keys and nested paths the input is known to hold (its header, a
    /// Parquet schema's struct fields, the keys of an NDJSON sample), for suggestions.
    pub known_paths: Arc<[String]>,
    /// For NDJSON, keys and nested paths of the sampled rows (else empty): what the
    /// mapping might have missed.
    pub sampled_paths: Arc<[String]>,
    /// True when some call takes `"rest"`: then every top-level key is sent.
    pub uses_rest: bool,
    /// Some node of the batch context or integrations carries a name the spec types.
    pub batch_checks: bool,
}

impl CompiledMapping {
    /// True when rows carry batch-level context or integrations.
    pub fn has_batch_context(&self) -> bool {
        !self.batch_context.is_empty() || !self.batch_integrations.is_empty()
    }
}

struct Ctx<'a> {
    spec: &'a MappingSpec,
    schema: &'a dyn Schema,
    input: &'a str,
    /// Column names the schema holds more than once, with their 1-based positions.
    dups: BTreeMap<String, Vec<usize>>,
}

/// Names that occur more than once in `names`, with their 1-based positions.
pub(crate) fn duplicate_names(names: &[String]) -> BTreeMap<String, Vec<usize>> {
    let mut at: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        at.entry(n.as_str()).or_default().push(i + 1);
    }
    at.into_iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(n, p)| (n.to_string(), p))
        .collect()
}

/// `1 and 3`, `2, 4 and 7`.
fn list_positions(p: &[usize]) -> String {
    let strs: Vec<String> = p.iter().map(usize::to_string).collect();
    match strs.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => strs.concat(),
    }
}

impl Ctx<'_> {
    /// The error for a used column name that the input holds at several `positions`.
    /// `uses` says how the mapping uses it, e.g. `names column "a"`.
    fn duplicate(
        &self,
        at: &str,
        what: &str,
        uses: &str,
        name: &str,
        positions: &[usize],
    ) -> CompileError {
        let named = if name.is_empty() {
            "without a name".to_string()
        } else {
            format!("named \"{name}\"")
        };
        CompileError(format!(
            "mapping{}: {what} {uses}, but {} has {} columns {named} (columns {} of its header{}): only the first of them would ever be read and the others silently dropped. Rename one of them in the header of {} so that each column has its own name.",
            self.spec.locate(at),
            self.input,
            positions.len(),
            list_positions(positions),
            if name.is_empty() { "; trailing delimiters?" } else { "" },
            self.input,
        ))
    }

    fn resolve(&self, name: &str, what: &str) -> Result<ColumnRef, CompileError> {
        if let Some(positions) = self.dups.get(name) {
            let uses = format!("names column \"{name}\"");
            return Err(self.duplicate(name, what, &uses, name, positions));
        }
        self.schema
            .resolve(name)
            .ok_or_else(|| self.unknown_column(name, what, ""))
    }

    /// The error for a name the input does not have, with the nearest name it has.
    fn unknown_column(&self, name: &str, what: &str, hint: &str) -> CompileError {
        let cols = self.schema.column_names();
        let shown: Vec<&str> = cols.iter().take(40).map(String::as_str).collect();
        let more = if cols.len() > 40 {
            format!(" (and {} more)", cols.len() - 40)
        } else {
            String::new()
        };
        let known = self.schema.known_paths();
        CompileError(format!(
            "mapping{}: {what} names column \"{name}\"{}, which {} does not have. Its columns are: {}{more}. Fix the name in the mapping file{hint}.",
            self.spec.locate(name),
            suggest::did_you_mean(name, known.iter().map(String::as_str)),
            self.input,
            shown.join(", ")
        ))
    }

    fn column_value(
        &self,
        name: &str,
        what: &str,
        o: FieldOpts<'_>,
        role: Role,
    ) -> Result<ColumnValue, CompileError> {
        let col = self.resolve(name, what)?;
        let colspec = self.spec.columns.get(name);
        let d = &self.spec.defaults;
        // A `clean` of the field or the column's own entry, with no type given, makes
        // the column a float: cleaning is for numbers. `[defaults] clean` only applies
        // to columns typed int or float.
        let own_clean = o.clean.or_else(|| colspec.and_then(|c| c.clean()));
        let ty =
            o.ty.or_else(|| colspec.and_then(|c| c.ty()))
                .unwrap_or(match own_clean {
                    Some(c) if c != Clean::None && role == Role::Value => ColType::Float,
                    _ => d.ty,
                });
        let numeric = matches!(ty, ColType::Int | ColType::Float);
        if own_clean.is_some_and(|c| c != Clean::None) && !numeric {
            return Err(CompileError(format!(
                "mapping{}: {what}: clean applies to numbers, but the value is typed \"{}\"; give it type = \"float\" or \"int\", or leave clean out",
                self.spec.locate(name),
                format!("{ty:?}").to_lowercase()
            )));
        }
        let clean = if numeric {
            own_clean.or(d.clean).unwrap_or_default()
        } else {
            Clean::None
        };
        let decimal = o
            .decimal
            .or_else(|| colspec.and_then(|c| c.decimal()))
            .or(d.decimal)
            .unwrap_or(DecimalSep::DOT)
            .0;
        if o.on_error.is_some_and(|e| e != OnError::Reject) && role != Role::Value {
            return Err(CompileError(format!(
                "mapping{}: {what}: on_error is not allowed here: a call cannot be sent without its ids, names and timestamp, so a bad value there always rejects the row",
                self.spec.locate(name)
            )));
        }
        let on_error = match role {
            Role::Value => o
                .on_error
                .or_else(|| colspec.and_then(|c| c.on_error()))
                .or(d.on_error)
                .unwrap_or_default(),
            Role::Id | Role::EventTime => OnError::Reject,
        };
        let empty = o
            .empty
            .or_else(|| colspec.and_then(|c| c.empty()))
            .unwrap_or(d.empty);
        let tz =
            o.tz.or_else(|| colspec.and_then(|c| c.timezone()).map(|t| t.0))
                .or(d.timezone.map(|t| t.0));
        let format = o.format.or_else(|| colspec.and_then(|c| c.format()));
        let ts_format = match format.map(|f| f.0.as_str()) {
            None | Some("rfc3339") | Some("iso8601") => TsFormat::Rfc3339,
            Some("date") => TsFormat::Date,
            Some("unix") => TsFormat::Unix(None),
            Some("unix_s") => TsFormat::Unix(Some(UnixUnit::Seconds)),
            Some("unix_ms") => TsFormat::Unix(Some(UnixUnit::Millis)),
            Some("unix_us") => TsFormat::Unix(Some(UnixUnit::Micros)),
            Some("unix_ns") => TsFormat::Unix(Some(UnixUnit::Nanos)),
            Some(p) => TsFormat::Pattern(Arc::from(p), PatternKind::of(p)),
        };
        let needs_zone = match &ts_format {
            TsFormat::Date => true,
            TsFormat::Pattern(_, k) => *k != PatternKind::Instant,
            _ => false,
        };
        if ty == ColType::Timestamp && needs_zone && tz.is_none() {
            return Err(CompileError(format!(
                "mapping{}: {what}: timestamp format \"{}\" has no UTC offset, so the time zone must be named: add timezone = \"UTC\" (or the zone the values were written in, e.g. \"Europe/Paris\") to the field, the [columns] entry or [defaults]",
                self.spec.locate(name),
                format.map_or("", |f| f.0.as_str())
            )));
        }
        Ok(ColumnValue {
            col,
            name: name.to_string(),
            ty,
            empty,
            ts_format,
            tz,
            event_time: role == Role::EventTime,
            clean,
            decimal,
            on_error,
            slot: 0,
        })
    }

    fn value(
        &self,
        f: &FieldSpec,
        what: &str,
        default_ty: Option<ColType>,
        role: Role,
    ) -> Result<ValueSource, CompileError> {
        match f {
            FieldSpec::Column(name) => Ok(ValueSource::Column(self.column_value(
                name,
                what,
                FieldOpts {
                    ty: default_ty,
                    ..FieldOpts::default()
                },
                role,
            )?)),
            FieldSpec::Detail(d) => self.detail(d, what, default_ty, role),
        }
    }

    fn detail(
        &self,
        d: &FieldDetail,
        what: &str,
        default_ty: Option<ColType>,
        role: Role,
    ) -> Result<ValueSource, CompileError> {
        let n = d.column.is_some() as u8 + d.constant.is_some() as u8 + d.template.is_some() as u8;
        if n != 1 {
            return Err(CompileError(format!(
                "mapping: {what} must have exactly one of `column`, `const` or `template`"
            )));
        }
        if let Some(name) = &d.column {
            let o = FieldOpts {
                ty: d.ty.or(default_ty),
                ..FieldOpts::of(d)
            };
            return Ok(ValueSource::Column(self.column_value(name, what, o, role)?));
        }
        if let Some(c) = &d.constant {
            let bytes = serde_json::to_vec(c).map_err(|e| {
                CompileError(format!("mapping: {what}: constant cannot be JSON: {e}"))
            })?;
            return Ok(ValueSource::Const(bytes));
        }
        let t = d.template.as_ref().map_or("", |t| t.0.as_str());
        Ok(ValueSource::Template(self.template(t, what)?))
    }

    /// A table of output path → field (context, integrations, payloads).
    fn tree(
        &self,
        fields: &BTreeMap<String, FieldSpec>,
        what: &str,
    ) -> Result<Vec<OutNode>, CompileError> {
        let mut nodes = Vec::new();
        for (out, f) in fields {
            let v = self.value(f, &format!("{what} \"{out}\""), None, Role::Value)?;
            insert_path(&mut nodes, out, &path_segments(out)?, v)?;
        }
        Ok(nodes)
    }

    /// `[integrations]`: each key one destination name (dots and all), each value a
    /// boolean. A constant must be `true` or `false`; a column's text is read as a
    /// boolean (yes/no, y/n, 1/0, t/f, true/false, on/off, any case) and a row whose value
    /// is none of those is rejected; an empty value leaves the destination out (null is
    /// not a boolean either).
    fn integrations(
        &self,
        fields: &BTreeMap<String, FieldSpec>,
    ) -> Result<Vec<OutNode>, CompileError> {
        let mut nodes = Vec::new();
        for (name, f) in fields {
            let what = format!("[integrations] \"{name}\"");
            if name.is_empty() {
                return Err(CompileError(format!(
                    "mapping{}: {what}: an empty destination name",
                    self.spec.locate(name)
                )));
            }
            if let FieldSpec::Detail(d) = f {
                if let Some(ty) = d.ty.filter(|t| !matches!(t, ColType::Bool | ColType::Auto)) {
                    return Err(CompileError(format!(
                        "mapping{}: {what}: type = \"{}\" is not allowed here: integrations values are booleans (the spec allows nothing else); leave `type` out",
                        self.spec.locate(name),
                        format!("{ty:?}").to_lowercase()
                    )));
                }
                if let Some(e) = d.empty.filter(|e| *e != EmptyPolicy::Omit) {
                    return Err(CompileError(format!(
                        "mapping{}: {what}: empty = \"{}\" is not allowed here: it would send {}, and integrations values are booleans; an empty value leaves the destination out",
                        self.spec.locate(name),
                        format!("{e:?}").to_lowercase(),
                        if e == EmptyPolicy::Null { "null" } else { "\"\"" }
                    )));
                }
                if let Some(c) = &d.constant {
                    if !c.is_bool() {
                        let clear = match c {
                            toml::Value::String(t) => super::clean::loose_bool(t.as_bytes()),
                            toml::Value::Integer(1) => Some(true),
                            toml::Value::Integer(0) => Some(false),
                            _ => None,
                        };
                        let hint = match clear {
                            Some(b) => format!("; write {{ const = {b} }}"),
                            None => "; write { const = true } or { const = false }".to_string(),
                        };
                        return Err(CompileError(format!(
                            "mapping{}: {what}: const = {c} is not a boolean, and integrations values are booleans (the spec allows nothing else){hint}",
                            self.spec.locate(name)
                        )));
                    }
                }
                if d.template.is_some() {
                    return Err(CompileError(format!(
                        "mapping{}: {what}: a template makes text, and integrations values are booleans; read the value from a column, or give a constant true or false",
                        self.spec.locate(name)
                    )));
                }
            }
            let v = match self.value(f, &what, Some(ColType::Bool), Role::Value)? {
                ValueSource::Column(c) => ValueSource::Column(ColumnValue {
                    ty: ColType::Bool,
                    empty: EmptyPolicy::Omit,
                    ..c
                }),
                v => v,
            };
            let checked = matches!(v, ValueSource::Column(_));
            let mut node = OutNode::new(name, OutKind::Leaf(v));
            if checked {
                node.reserved = Some(Box::new(Reserved {
                    rule: Rule::Field(reserved::INTEGRATION),
                    kinds: u8::MAX,
                    place: Place::Integrations,
                    path: name.as_str().into(),
                }));
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// A payload column: typed by `[columns]` and `[defaults]`.
    fn payload_column(&self, name: &str, what: &str) -> Result<ValueSource, CompileError> {
        Ok(ValueSource::Column(self.column_value(
            name,
            what,
            FieldOpts::default(),
            Role::Value,
        )?))
    }

    /// An object column spread in place, less `skip`.
    fn spread(&self, name: &str, what: &str, skip: &[&str]) -> Result<OutNode, CompileError> {
        let col = self.resolve(name, what).map_err(|e| {
            if self.schema.resolve(name).is_none() {
                self.unknown_column(
                    name,
                    what,
                    ", or use \"rest\" for every column not used otherwise",
                )
            } else {
                e
            }
        })?;
        let colspec = self.spec.columns.get(name);
        let on_error = colspec
            .and_then(|c| c.on_error())
            .or(self.spec.defaults.on_error)
            .unwrap_or_default();
        Ok(OutNode {
            key: Vec::new(),
            name: name.to_string(),
            // Unused: the spread decides what is written.
            kind: OutKind::Leaf(ValueSource::Const(Vec::new())),
            spread: Some(Box::new(Spread {
                col,
                name: name.to_string(),
                skip: skip.iter().map(|k| encoded_key(k)).collect(),
                strict: true,
                on_error,
                slot: 0,
            })),
            reserved: None,
        })
    }

    fn template(&self, t: &str, what: &str) -> Result<Vec<TemplatePart>, CompileError> {
        let owned = super::spec::Template(t.to_string());
        let parts = owned
            .parts()
            .map_err(|e| CompileError(format!("mapping: {what}: {e}")))?;
        parts
            .into_iter()
            .map(|(is_col, text)| {
                Ok(if is_col {
                    TemplatePart::Col(self.resolve(text, what)?, text.to_string())
                } else {
                    TemplatePart::Lit(text.to_string())
                })
            })
            .collect()
    }

    /// The nodes of one payload spec (`what` names it, e.g. `call #1 properties`).
    fn payload(
        &self,
        c: &CallSpec,
        p: &PayloadSpec,
        what: &str,
    ) -> Result<Vec<OutNode>, CompileError> {
        let mut nodes = Vec::new();
        match p {
            PayloadSpec::Rest => self.rest(c, &mut nodes, what, &[], &[], &[])?,
            PayloadSpec::Object(name) => nodes.push(self.spread(name, what, &[])?),
            PayloadSpec::Columns(cols) => {
                for name in cols {
                    let v = self.payload_column(name, what)?;
                    // A listed column goes under its name as a path (`a.b` nests); a
                    // table names the output path itself, escapes and all.
                    let segments: Vec<String> = name.split('.').map(String::from).collect();
                    insert_path(&mut nodes, name, &segments, v)?;
                }
            }
            PayloadSpec::Fields(fields) => {
                for (out, f) in fields {
                    let v = self.value(f, &format!("{what} \"{out}\""), None, Role::Value)?;
                    insert_path(&mut nodes, out, &path_segments(out)?, v)?;
                }
            }
            PayloadSpec::Merged(m) => self.merged(c, m, &mut nodes, what)?,
        }
        Ok(nodes)
    }

    /// `{ from = ..., exclude, keep, fields }`: the explicit fields first, then the
    /// members of `from` that none of them names.
    fn merged(
        &self,
        c: &CallSpec,
        m: &Merged,
        nodes: &mut Vec<OutNode>,
        what: &str,
    ) -> Result<(), CompileError> {
        for (out, f) in &m.fields {
            let v = self.value(f, &format!("{what} \"{out}\""), None, Role::Value)?;
            insert_path(nodes, out, &path_segments(out)?, v)?;
        }
        // Top-level names the explicit fields take: a member of the same name would be
        // a repeated key.
        let explicit: Vec<&str> = m
            .fields
            .keys()
            .map(|k| k.split('.').next().unwrap_or(k))
            .collect();
        let mut skip: Vec<&str> = explicit.clone();
        skip.extend(m.exclude.iter().map(String::as_str));
        if m.from == "rest" {
            let read: Vec<String> = m.fields.values().filter_map(field_column).collect();
            let read: Vec<&str> = read.iter().map(String::as_str).collect();
            return self.rest(c, nodes, what, &skip, &read, &m.keep);
        }
        if !m.keep.is_empty() {
            return Err(CompileError(format!(
                "mapping{}: {what}: keep only goes with from = \"rest\" (it names columns the call uses otherwise that \"rest\" should still send)",
                self.spec.locate(&m.keep[0])
            )));
        }
        nodes.push(self.spread(&m.from, what, &skip)?);
        Ok(())
    }

    /// `"rest"`: every column the call does not use otherwise, less `skip` (explicit
    /// output names and `exclude`) and the columns in `read` (read by explicit fields),
    /// plus `keep`.
    fn rest(
        &self,
        c: &CallSpec,
        nodes: &mut Vec<OutNode>,
        what: &str,
        skip: &[&str],
        read: &[&str],
        keep: &[String],
    ) -> Result<(), CompileError> {
        let mut used = used_columns(self.spec, c);
        used.extend(read.iter().map(|s| s.to_string()));
        let names = self.schema.column_names();
        for k in keep {
            if !names.contains(k) && !self.schema.spreads_unknown() {
                return Err(self.unknown_column(k, &format!("{what} keep"), ""));
            }
            used.remove(k);
        }
        for x in skip {
            // An excluded name the input does not have is a typo, unless keys can appear
            // after the sample (NDJSON).
            if !names.iter().any(|n| n == x) && !self.schema.spreads_unknown() && !used.contains(*x)
            {
                let is_field = c.traits.iter().chain(&c.properties).any(|p| {
                    matches!(p, PayloadSpec::Merged(m) if m.fields.keys().any(|k| k.split('.').next() == Some(x)))
                });
                if !is_field {
                    return Err(self.unknown_column(x, &format!("{what} exclude"), ""));
                }
            }
        }
        // A used duplicate is refused where it is named, with that field in the
        // message; here only the ones "rest" itself would take.
        if let Some((name, positions)) = names
            .iter()
            .filter(|n| !used.contains(*n) && !skip.contains(&n.as_str()))
            .find_map(|n| self.dups.get(n).map(|p| (n, p)))
        {
            let uses = format!("takes every column not otherwise used, so column \"{name}\" too");
            return Err(self.duplicate(
                "rest",
                &format!("{what} = \"rest\""),
                &uses,
                name,
                positions,
            ));
        }
        for name in names {
            if used.contains(&name) || skip.contains(&name.as_str()) {
                continue;
            }
            let v = self.payload_column(&name, what)?;
            // A column name with dots is one key here, not a path.
            nodes.push(OutNode::new(&name, OutKind::Leaf(v)));
        }
        // NDJSON's later keys spread: the same names are left out of them.
        if !skip.is_empty() {
            for n in nodes.iter_mut() {
                if self.schema.spreads(&n.name) {
                    if let OutKind::Leaf(ValueSource::Column(c)) = &n.kind {
                        n.spread = Some(Box::new(Spread {
                            col: c.col.clone(),
                            name: n.name.clone(),
                            skip: skip.iter().map(|k| encoded_key(k)).collect(),
                            strict: false,
                            on_error: OnError::Reject,
                            slot: 0,
                        }));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The column a field reads, if it reads one.
fn field_column(f: &FieldSpec) -> Option<String> {
    match f {
        FieldSpec::Column(n) => Some(n.clone()),
        FieldSpec::Detail(d) => d.column.clone(),
    }
}

/// `"key"`: a key as JSON-encoded in an object, without the colon.
fn encoded_key(k: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 2);
    json::write_str(&mut v, k);
    v
}

/// Column names a call reads for its ids, event, timestamp and type, so that `"rest"`
/// leaves them out of traits/properties.
fn used_columns(spec: &MappingSpec, c: &CallSpec) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut add = |f: Option<&FieldSpec>| match f {
        Some(FieldSpec::Column(n)) => {
            used.insert(n.clone());
        }
        Some(FieldSpec::Detail(d)) => {
            if let Some(n) = &d.column {
                used.insert(n.clone());
            }
        }
        None => {}
    };
    for f in [
        &c.user_id,
        &c.anonymous_id,
        &c.event,
        &c.name,
        &c.group_id,
        &c.object_type_id,
        &c.previous_id,
        &c.timestamp,
        &c.message_id,
    ] {
        add(f.as_ref());
    }
    let trees = [
        Some(&spec.context),
        Some(&spec.integrations),
        c.context.as_ref(),
    ];
    for t in trees.into_iter().flatten() {
        for f in t.values() {
            add(Some(f));
        }
    }
    if let KindSpec::Column { column, .. } = &c.kind {
        used.insert(column.clone());
    }
    used
}

/// The names along an output path: it splits at dots (`address.city` is `city` inside
/// `address`); `\.` is a dot inside a name and `\\` a backslash, so `a\.b.c` is `c`
/// inside `a.b`. Any other backslash, and an empty name, are mapping errors.
pub fn path_segments(path: &str) -> Result<Vec<String>, CompileError> {
    let mut segments = Vec::new();
    let mut seg = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => segments.push(std::mem::take(&mut seg)),
            '\\' => match chars.next() {
                Some(e @ ('.' | '\\')) => seg.push(e),
                other => {
                    return Err(CompileError(format!(
                        "mapping: output path \"{path}\" has a backslash before {}; in an output path `\\.` is a dot inside a name and `\\\\` a backslash (write the key in single quotes in TOML: 'a\\.b' = ...)",
                        other.map_or("its end".to_string(), |c| format!("`{c}`"))
                    )))
                }
            },
            c => seg.push(c),
        }
    }
    segments.push(seg);
    if segments.iter().any(String::is_empty) {
        return Err(CompileError(format!(
            "mapping: output path \"{path}\" has an empty segment"
        )));
    }
    Ok(segments)
}

/// Inserts a leaf at an output path (its `segments`), creating intermediate objects.
fn insert_path(
    nodes: &mut Vec<OutNode>,
    path: &str,
    segments: &[String],
    value: ValueSource,
) -> Result<(), CompileError> {
    let (head, tail) = match segments {
        [head, tail @ ..] => (head.as_str(), tail),
        [] => {
            return Err(CompileError(format!(
                "mapping: output path \"{path}\" has an empty segment"
            )))
        }
    };
    let pos = nodes.iter().position(|n| n.name == head);
    match (tail.is_empty(), pos) {
        (true, None) => {
            nodes.push(OutNode::new(head, OutKind::Leaf(value)));
            Ok(())
        }
        (false, None) => {
            let mut children = Vec::new();
            insert_path(&mut children, path, tail, value)?;
            nodes.push(OutNode::new(head, OutKind::Object(children)));
            Ok(())
        }
        (false, Some(i)) => match &mut nodes[i].kind {
            OutKind::Object(children) => insert_path(children, path, tail, value),
            OutKind::Leaf(_) => Err(CompileError(format!(
                "mapping: output \"{head}\" is both a value and an object (at \"{path}\")"
            ))),
        },
        (true, Some(_)) => Err(CompileError(format!(
            "mapping: output \"{path}\" is given twice"
        ))),
    }
}

/// Gives the nodes named by `fields` their rule (for the call kinds in `kinds`), and
/// the members of an object node the rules of its field's members. `parent` is the
/// path so far, `when` the reading of the spec the parent holds under.
fn attach(
    nodes: &mut [OutNode],
    fields: &'static [Field],
    rest: Option<&'static Shape>,
    kinds: u8,
    place: Place,
    parent: &str,
    when: When,
) {
    for n in nodes {
        let path = if parent.is_empty() {
            n.name.clone()
        } else {
            format!("{parent}.{}", n.name)
        };
        if n.spread.is_some() {
            // The members a row spreads here are checked against the payload's names
            // of the row's own call kind (only traits and properties spread).
            if place == Place::Payload && parent.is_empty() {
                let kinds = n.reserved.as_ref().map_or(0, |r| r.kinds) | kinds;
                n.reserved = Some(Box::new(Reserved {
                    rule: Rule::PayloadMembers,
                    kinds,
                    place,
                    path: parent.into(),
                }));
            }
            continue;
        }
        let field = match fields.iter().find(|f| f.name == n.name) {
            Some(f) => Field {
                // A member's reading is its parent's (the mobile context's `device.type`).
                when: if f.when == When::Always { when } else { f.when },
                ..*f
            },
            None => match rest {
                Some(shape) => Field {
                    name: "",
                    shape: *shape,
                    when,
                },
                None => continue,
            },
        };
        match (&mut n.kind, field.shape) {
            // An object built by the mapping is an object: its members are what to check.
            (OutKind::Object(children), Shape::Object { fields, rest }) => {
                attach(children, fields, rest, kinds, place, &path, field.when)
            }
            // A `string` column where the spec wants a string: the encoder writes every
            // value of it as a string (numbers, booleans and JSON as their text) and
            // leaves an empty one out, so there is nothing to check.
            (OutKind::Leaf(ValueSource::Column(c)), Shape::String)
                if c.ty == ColType::String && c.empty == EmptyPolicy::Omit => {}
            // A value written here (or an object where the spec wants something else):
            // the value is checked.
            (kind, shape) => {
                // A `timestamp` column writes a string only as the writer's RFC 3339
                // form (an NDJSON object or boolean would pass as it is): where a
                // date-time goes, being a string is the whole check.
                let field = match (kind, shape) {
                    (OutKind::Leaf(ValueSource::Column(c)), Shape::DateTime)
                        if c.ty == ColType::Timestamp =>
                    {
                        Field {
                            shape: Shape::String,
                            ..field
                        }
                    }
                    _ => field,
                };
                n.reserved = Some(Box::new(Reserved {
                    rule: Rule::Field(field),
                    kinds,
                    place,
                    path: path.into(),
                }));
            }
        }
    }
}

fn key_bytes(k: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 3);
    json::write_str(&mut v, k);
    v.push(b':');
    v
}

/// A constant id or name as a JSON string: a string as it is, a number as its digits;
/// anything else is a mapping error.
fn id_constant(bytes: &[u8], what: &str) -> Result<Vec<u8>, CompileError> {
    match bytes.first() {
        Some(b'"') => Ok(bytes.to_vec()),
        Some(b'-' | b'0'..=b'9') => {
            let mut out = Vec::with_capacity(bytes.len() + 2);
            crate::json::write_str_bytes(&mut out, bytes);
            Ok(out)
        }
        _ => Err(CompileError(format!(
            "mapping: {what}: const = {} is not allowed here: ids and names are strings (or numbers, sent as their digits)",
            String::from_utf8_lossy(bytes)
        ))),
    }
}

/// Compiles `spec` against `schema`. `input` is the input's path as shown (in error
/// messages), which with the mapping's namespace seeds every messageId.
pub fn compile(
    spec: &MappingSpec,
    schema: &dyn Schema,
    input: &str,
) -> Result<CompiledMapping, CompileError> {
    if spec.calls.is_empty() {
        return Err(CompileError(
            "mapping: no [[call]] tables; add at least one, e.g. [[call]] type = \"track\"".into(),
        ));
    }
    let cx = Ctx {
        spec,
        schema,
        input,
        dups: duplicate_names(&schema.column_names()),
    };
    for name in spec.columns.keys() {
        cx.resolve(name, &format!("[columns] entry \"{name}\""))?;
    }
    let mut calls = Vec::with_capacity(spec.calls.len());
    for (i, c) in spec.calls.iter().enumerate() {
        let what = |field: &str| format!("call #{} {field}", i + 1);
        let kind = match &c.kind {
            KindSpec::Const(k) => KindSource::Const(*k),
            KindSpec::Column { column, only } => KindSource::Column(
                cx.resolve(column, &what("type"))?,
                column.clone(),
                only.clone(),
            ),
        };
        // Ids and names are JSON strings in the spec: a column's text as it is (numbers as
        // their digits), a constant string or number, or a template.
        let id = |f: &Option<FieldSpec>, name: &str| -> Result<Option<ValueSource>, CompileError> {
            let Some(f) = f else { return Ok(None) };
            if let FieldSpec::Detail(FieldDetail { ty: Some(ty), .. }) = f {
                if *ty != ColType::String {
                    return Err(CompileError(format!(
                        "mapping: {}: type = \"{}\" is not allowed here: ids and names are sent as strings (numbers as their digits); leave `type` out",
                        what(name),
                        format!("{ty:?}").to_lowercase()
                    )));
                }
            }
            Ok(Some(
                match cx.value(f, &what(name), Some(ColType::String), Role::Id)? {
                    ValueSource::Const(bytes) => {
                        ValueSource::Const(id_constant(&bytes, &what(name))?)
                    }
                    v => v,
                },
            ))
        };
        let (payload, properties) = call_payloads(&cx, c, &what)?;
        let timestamp = c
            .timestamp
            .as_ref()
            .map(|f| {
                cx.value(
                    f,
                    &what("timestamp"),
                    Some(ColType::Timestamp),
                    Role::EventTime,
                )
            })
            .transpose()?;
        let context = match &c.context {
            Some(t) => cx.tree(t, &what("context"))?,
            None => Vec::new(),
        };
        // group sends its object type id in traits (see encode's group arm): a mapped
        // `objectTypeId` or `object_type_id` trait beside it would be one key twice.
        let may_group = matches!(
            kind,
            KindSource::Const(CallKind::Group) | KindSource::Column(..)
        );
        if may_group && c.object_type_id.is_some() {
            if let Some(n) = payload
                .iter()
                .find(|n| n.name == "object_type_id" || n.name == "objectTypeId")
            {
                return Err(CompileError(format!(
                    "mapping{}: {}: object_type_id is sent as traits.objectTypeId and traits.object_type_id, so traits may not map \"{}\" as well; drop one of them",
                    spec.locate("object_type_id"),
                    what("traits"),
                    n.name
                )));
            }
        }
        let compiled = CompiledCall {
            kind,
            user_id: id(&c.user_id, "user_id")?,
            anonymous_id: id(&c.anonymous_id, "anonymous_id")?,
            event: id(&c.event, "event")?,
            name: id(&c.name, "name")?,
            group_id: id(&c.group_id, "group_id")?,
            object_type_id: id(&c.object_type_id, "object_type_id")?,
            previous_id: id(&c.previous_id, "previous_id")?,
            timestamp,
            message_id: id(&c.message_id, "message_id")?,
            payload,
            properties,
            context,
            payload_checks: false,
            context_checks: false,
        };
        check_required(&compiled, &what(""))?;
        calls.push(compiled);
    }
    let mut batch_context = cx.tree(&spec.context, "[context]")?;
    let mut batch_integrations = cx.integrations(&spec.integrations)?;
    for c in &mut calls {
        mark_spreads(&mut c.payload, schema);
        if let Some(p) = &mut c.properties {
            mark_spreads(p, schema);
        }
        mark_spreads(&mut c.context, schema);
        attach_payload(c);
        attach_context(&mut c.context);
        c.payload_checks =
            any_reserved(&c.payload) || c.properties.as_deref().is_some_and(any_reserved);
        c.context_checks = any_reserved(&c.context);
    }
    mark_spreads(&mut batch_context, schema);
    mark_spreads(&mut batch_integrations, schema);
    attach_context(&mut batch_context);
    let batch_checks = any_reserved(&batch_context) || any_reserved(&batch_integrations);
    let mut m = CompiledMapping {
        calls,
        seed: super::message_id::input_seed(&spec.namespace, input),
        max_future_ms: (spec.defaults.max_future_hours as i64).saturating_mul(3_600_000),
        batch_context,
        batch_integrations,
        batch_checks,
        value_columns: Arc::from(Vec::new()),
        known_paths: schema.known_paths().into(),
        sampled_paths: schema.sampled_paths().into(),
        uses_rest: spec.calls.iter().any(|c| {
            c.traits.iter().chain(&c.properties).any(|p| {
                matches!(p, PayloadSpec::Rest)
                    || matches!(p, PayloadSpec::Merged(m) if m.from == "rest")
            })
        }),
    };
    m.value_columns = assign_slots(&mut m).into();
    Ok(m)
}

/// Gives every column value and object spread of the mapping its slot, one per column
/// name, and returns the names by slot.
fn assign_slots(m: &mut CompiledMapping) -> Vec<String> {
    fn slot(names: &mut Vec<String>, name: &str) -> u32 {
        match names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                names.push(name.to_string());
                (names.len() - 1) as u32
            }
        }
    }
    fn nodes(ns: &mut [OutNode], names: &mut Vec<String>) {
        for n in ns {
            if let Some(s) = &mut n.spread {
                s.slot = slot(names, &s.name);
                continue;
            }
            match &mut n.kind {
                OutKind::Leaf(ValueSource::Column(c)) => c.slot = slot(names, &c.name),
                OutKind::Leaf(_) => {}
                OutKind::Object(children) => nodes(children, names),
            }
        }
    }
    let mut names = Vec::new();
    for c in &mut m.calls {
        nodes(&mut c.payload, &mut names);
        if let Some(p) = &mut c.properties {
            nodes(p, &mut names);
        }
        nodes(&mut c.context, &mut names);
    }
    nodes(&mut m.batch_context, &mut names);
    nodes(&mut m.batch_integrations, &mut names);
    names
}

/// A call's payload nodes, and its properties when the type comes from a column and
/// both traits and properties are given. With a constant type the payload must be the
/// one that type carries.
fn call_payloads(
    cx: &Ctx<'_>,
    c: &CallSpec,
    what: &dyn Fn(&str) -> String,
) -> Result<(Vec<OutNode>, Option<Vec<OutNode>>), CompileError> {
    const WHICH: &str = "identify and group calls carry traits; track, page and screen calls carry properties; alias calls neither";
    if let KindSpec::Const(kind) = c.kind {
        let (given, wanted) = match (&c.traits, &c.properties) {
            (Some(_), _) if kind.payload_key() != "traits" || kind == CallKind::Alias => {
                ("traits", kind.payload_key())
            }
            (_, Some(_)) if kind.payload_key() != "properties" || kind == CallKind::Alias => {
                ("properties", kind.payload_key())
            }
            _ => ("", ""),
        };
        if !given.is_empty() {
            let fix = if kind == CallKind::Alias {
                "leave it out".to_string()
            } else {
                format!("write {wanted} instead")
            };
            let article = match kind {
                CallKind::Identify | CallKind::Alias => "an",
                _ => "a",
            };
            return Err(CompileError(format!(
                "mapping{}: {}: {article} {} call does not carry {given}: {fix} ({WHICH})",
                cx.spec.locate(given),
                what(given),
                kind.as_str()
            )));
        }
    }
    let mut payload = Vec::new();
    let mut properties = None;
    match (&c.traits, &c.properties) {
        (Some(t), Some(p)) => {
            // Both: only with the type from a column (a constant type refused above).
            payload = cx.payload(c, t, &what("traits"))?;
            properties = Some(cx.payload(c, p, &what("properties"))?);
        }
        (Some(p), None) => payload = cx.payload(c, p, &what("traits"))?,
        (None, Some(p)) => payload = cx.payload(c, p, &what("properties"))?,
        (None, None) => {}
    }
    Ok((payload, properties))
}

/// Whether a node of the tree carries a name the spec types.
fn any_reserved(nodes: &[OutNode]) -> bool {
    nodes.iter().any(|n| {
        n.reserved.is_some()
            || matches!(&n.kind, OutKind::Object(children) if any_reserved(children))
    })
}

/// The rules of the names the spec types in a context (a call's or a batch's).
fn attach_context(nodes: &mut [OutNode]) {
    attach(
        nodes,
        reserved::CONTEXT,
        None,
        u8::MAX,
        Place::Context,
        "",
        When::Always,
    );
}

/// The rules of the names the spec types in a call's traits or properties: those of its
/// kind, or with a type column those of every kind, each holding for its own kind.
fn attach_payload(c: &mut CompiledCall) {
    let one;
    let kinds: &[CallKind] = match c.kind {
        KindSource::Const(k) => {
            one = [k];
            &one
        }
        KindSource::Column(..) => &CallKind::ALL,
    };
    for &k in kinds {
        let fields = reserved::payload_fields(k);
        // With both traits and properties given, each kind's names are checked in the
        // tree that kind carries.
        let tree = match &mut c.properties {
            Some(p) if k.payload_key() == "properties" => p,
            _ => &mut c.payload,
        };
        if !fields.is_empty() {
            attach(
                tree,
                fields,
                None,
                reserved::kind_bit(k),
                Place::Payload,
                "",
                When::Always,
            );
        }
    }
}

/// Marks every leaf named after a column the schema spreads, and reading a column, as
/// [`OutNode::spread`]: decided once here rather than by name for every row.
fn mark_spreads(nodes: &mut [OutNode], schema: &dyn Schema) {
    for n in nodes {
        match &mut n.kind {
            OutKind::Object(children) => mark_spreads(children, schema),
            OutKind::Leaf(ValueSource::Column(c)) if schema.spreads(&n.name) => {
                n.spread = Some(Box::new(Spread {
                    col: c.col.clone(),
                    name: n.name.clone(),
                    skip: Vec::new(),
                    strict: false,
                    on_error: OnError::Reject,
                    slot: c.slot,
                }));
            }
            OutKind::Leaf(_) => {}
        }
    }
}

/// A constant semantic event's required fields must be mapped at all (a row can still
/// lack a value; the encoder rejects those rows naming the field).
fn check_semantic(
    c: &CompiledCall,
    need: &dyn Fn(bool, &str) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    use super::semantic::Semantic;
    let Some(ValueSource::Const(b)) = &c.event else {
        return Ok(());
    };
    let Some(ev) = Semantic::of(b) else {
        return Ok(());
    };
    let has = |nodes: &[OutNode], path: &[&str]| {
        let mut nodes = nodes;
        for (i, seg) in path.iter().enumerate() {
            match nodes.iter().find(|n| n.name == *seg) {
                Some(OutNode {
                    kind: OutKind::Object(children),
                    ..
                }) if i + 1 < path.len() => nodes = children,
                Some(OutNode {
                    kind: OutKind::Leaf(_),
                    ..
                }) if i + 1 == path.len() => return true,
                _ => return false,
            }
        }
        false
    };
    match ev {
        Semantic::DeviceUpdated | Semantic::DeviceDeleted => {
            need(c.user_id.is_some(), "user_id (a device event needs userId)")?;
            need(
                has(&c.context, &["device", "token"]),
                "context = { \"device.token\" = ... } (the spec requires context.device.token in the call)",
            )
        }
        Semantic::UserDeleted | Semantic::UserSuppressed | Semantic::UserUnsuppressed => {
            need(c.user_id.is_some(), "user_id (this event needs userId)")
        }
        Semantic::RelationshipDeleted => {
            need(c.user_id.is_some(), "user_id (this event needs userId)")?;
            need(has(&c.payload, &["objectId"]), "properties.objectId")
        }
        Semantic::ObjectDeleted => {
            need(
                c.anonymous_id.is_some(),
                "anonymous_id (the spec's group_deleted schema requires anonymousId)",
            )?;
            need(has(&c.payload, &["objectId"]), "properties.objectId")
        }
        Semantic::ReportDelivery => {
            need(has(&c.payload, &["deliveryId"]), "properties.deliveryId")?;
            need(has(&c.payload, &["metric"]), "properties.metric")
        }
        Semantic::ReportContent => need(
            has(&c.payload, &["activityType"]),
            "properties.activityType",
        ),
    }
}

/// Fields a constant call type needs in the mapping itself (a row can still lack them).
fn check_required(c: &CompiledCall, what: &str) -> Result<(), CompileError> {
    let KindSource::Const(kind) = c.kind else {
        return Ok(());
    };
    let need = |ok: bool, field: &str| {
        if ok {
            Ok(())
        } else {
            Err(CompileError(format!(
                "mapping: {what}({}) needs `{field}`",
                kind.as_str()
            )))
        }
    };
    match kind {
        CallKind::Identify | CallKind::Page | CallKind::Screen => need(
            c.user_id.is_some() || c.anonymous_id.is_some(),
            "user_id or anonymous_id",
        ),
        CallKind::Track => {
            // The semantic events the spec lets go without a person.
            let no_person = matches!(&c.event, Some(ValueSource::Const(b))
                if super::semantic::Semantic::of(b).is_some_and(|s| s.needs_no_person()));
            need(
                no_person || c.user_id.is_some() || c.anonymous_id.is_some(),
                "user_id or anonymous_id",
            )?;
            need(c.event.is_some(), "event")?;
            check_semantic(c, &need)
        }
        CallKind::Group => {
            need(
                c.user_id.is_some() || c.anonymous_id.is_some(),
                "user_id or anonymous_id",
            )?;
            need(c.group_id.is_some(), "group_id")
        }
        CallKind::Alias => {
            need(c.user_id.is_some(), "user_id")?;
            need(c.previous_id.is_some(), "previous_id")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::spec;

    /// A CSV-like header: the first of duplicate names resolves, as `CsvHeader` does.
    fn header(names: &[&str]) -> crate::source::NamesSchema {
        crate::source::NamesSchema::of(names)
    }

    fn compile_err(mapping: &str, names: &[&str]) -> String {
        let spec = spec::parse(mapping).expect("test mapping parses");
        match compile(&spec, &header(names), "dup.csv") {
            Ok(_) => panic!("mapping compiled against {names:?}, expected a duplicate error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_duplicate_column_named_by_the_mapping_is_refused_with_its_positions() {
        let m =
            "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\nproperties = [\"b\"]\n";
        let e = compile_err(m, &["uid", "ev", "uid", "b"]);
        assert!(e.contains("call #1 user_id"), "{e}");
        assert!(e.contains("dup.csv has 2 columns named \"uid\""), "{e}");
        assert!(e.contains("(columns 1 and 3 of its header)"), "{e}");
        assert!(
            e.contains("Rename one of them in the header of dup.csv"),
            "{e}"
        );

        // Every way of naming a column goes through the same check.
        let cols = "[columns]\nb = { type = \"int\" }\n[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\n";
        let e = compile_err(cols, &["uid", "ev", "b", "b", "b"]);
        assert!(e.contains("[columns] entry \"b\""), "{e}");
        assert!(
            e.contains("3 columns named \"b\" (columns 3, 4 and 5"),
            "{e}"
        );
        let tmpl =
            "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = { template = \"{ev}!\" }\n";
        let e = compile_err(tmpl, &["uid", "ev", "ev"]);
        assert!(e.contains("names column \"ev\""), "{e}");
    }

    #[test]
    fn rest_refuses_a_duplicate_column_it_would_send() {
        let m = "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\nproperties = \"rest\"\n";
        let e = compile_err(m, &["uid", "ev", "a", "a"]);
        assert!(e.contains("call #1 properties = \"rest\""), "{e}");
        assert!(e.contains("column \"a\""), "{e}");
        assert!(
            e.contains("dup.csv has 2 columns named \"a\" (columns 3 and 4"),
            "{e}"
        );
        assert!(e.contains("Rename one of them"), "{e}");

        // "rest" leaves `uid` out, but user_id still reads it: refused there.
        let e = compile_err(m, &["uid", "ev", "uid", "b"]);
        assert!(e.contains("call #1 user_id names column \"uid\""), "{e}");
        assert!(e.contains("(columns 1 and 3 of its header)"), "{e}");
    }

    #[test]
    fn a_duplicate_column_the_mapping_never_uses_is_harmless() {
        let m =
            "[[call]]\ntype = \"track\"\nuser_id = \"uid\"\nevent = \"ev\"\nproperties = [\"b\"]\n";
        let spec = spec::parse(m).expect("test mapping parses");
        let schema = header(&["uid", "ev", "x", "b", "x"]);
        let compiled = compile(&spec, &schema, "dup.csv").expect("an unused duplicate is harmless");
        assert_eq!(compiled.calls[0].payload.len(), 1);
        assert_eq!(compiled.calls[0].payload[0].name, "b");
    }

    #[test]
    fn positions_are_listed_in_prose() {
        assert_eq!(list_positions(&[1, 3]), "1 and 3");
        assert_eq!(list_positions(&[2, 4, 7]), "2, 4 and 7");
    }
}
