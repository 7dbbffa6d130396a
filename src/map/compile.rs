//! The mapping, checked against one input's columns and compiled for the encoder.
//!
//! Every column name is resolved into a [`ColumnRef`] here, once per input, before any
//! row is read; a name the input does not have is a configuration error that lists the
//! columns it does have. JSON keys and constants are pre-encoded to bytes so the encoder
//! only copies them.

use std::collections::BTreeSet;

use super::json;
use super::spec::{
    CallKind, CallSpec, ColType, EmptyPolicy, FieldDetail, FieldSpec, KindSpec, MappingSpec,
    PayloadSpec,
};
use crate::source::{ColumnRef, Schema};

/// A mapping error found while compiling against an input. Names what is wrong and
/// what would be valid.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// How a timestamp column's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsFormat {
    Rfc3339,
    /// Unix time; `None` means the unit is chosen by magnitude.
    Unix(Option<UnixUnit>),
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
}

#[derive(Debug, Clone)]
pub enum OutKind {
    Leaf(ValueSource),
    Object(Vec<OutNode>),
}

#[derive(Debug, Clone)]
pub enum KindSource {
    Const(CallKind),
    Column(ColumnRef, String),
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
    pub previous_id: Option<ValueSource>,
    pub timestamp: Option<ValueSource>,
    pub message_id: Option<ValueSource>,
    /// traits (identify, group) or properties (the others).
    pub payload: Vec<OutNode>,
}

/// The whole mapping compiled against one input.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    pub calls: Vec<CompiledCall>,
    pub max_future_ms: i64,
}

struct Ctx<'a> {
    spec: &'a MappingSpec,
    schema: &'a dyn Schema,
    input: &'a str,
}

impl Ctx<'_> {
    fn resolve(&self, name: &str, what: &str) -> Result<ColumnRef, CompileError> {
        self.schema.resolve(name).ok_or_else(|| {
            let cols = self.schema.column_names();
            let shown: Vec<&str> = cols.iter().take(40).map(String::as_str).collect();
            let more = if cols.len() > 40 {
                format!(" (and {} more)", cols.len() - 40)
            } else {
                String::new()
            };
            CompileError(format!(
                "mapping: {what} names column \"{name}\", which {} does not have. Its columns are: {}{more}. Fix the name in the mapping file.",
                self.input,
                shown.join(", ")
            ))
        })
    }

    fn column_value(
        &self,
        name: &str,
        what: &str,
        ty: Option<ColType>,
        empty: Option<EmptyPolicy>,
        format: Option<&str>,
    ) -> Result<ColumnValue, CompileError> {
        let col = self.resolve(name, what)?;
        let colspec = self.spec.columns.get(name);
        let ty = ty
            .or_else(|| colspec.and_then(|c| c.ty()))
            .unwrap_or(self.spec.defaults.ty);
        let empty = empty
            .or_else(|| colspec.and_then(|c| c.empty()))
            .unwrap_or(self.spec.defaults.empty);
        let ts_format = match format {
            None | Some("rfc3339") | Some("iso8601") => TsFormat::Rfc3339,
            Some("unix") => TsFormat::Unix(None),
            Some("unix_s") => TsFormat::Unix(Some(UnixUnit::Seconds)),
            Some("unix_ms") => TsFormat::Unix(Some(UnixUnit::Millis)),
            Some("unix_us") => TsFormat::Unix(Some(UnixUnit::Micros)),
            Some("unix_ns") => TsFormat::Unix(Some(UnixUnit::Nanos)),
            Some(other) => {
                return Err(CompileError(format!(
                    "mapping: {what} has format \"{other}\"; valid formats are rfc3339, unix, unix_s, unix_ms, unix_us, unix_ns"
                )))
            }
        };
        Ok(ColumnValue {
            col,
            name: name.to_string(),
            ty,
            empty,
            ts_format,
        })
    }

    fn value(
        &self,
        f: &FieldSpec,
        what: &str,
        default_ty: Option<ColType>,
    ) -> Result<ValueSource, CompileError> {
        match f {
            FieldSpec::Column(name) => Ok(ValueSource::Column(
                self.column_value(name, what, default_ty, None, None)?,
            )),
            FieldSpec::Detail(d) => self.detail(d, what, default_ty),
        }
    }

    fn detail(
        &self,
        d: &FieldDetail,
        what: &str,
        default_ty: Option<ColType>,
    ) -> Result<ValueSource, CompileError> {
        let n = d.column.is_some() as u8 + d.constant.is_some() as u8 + d.template.is_some() as u8;
        if n != 1 {
            return Err(CompileError(format!(
                "mapping: {what} must have exactly one of `column`, `const` or `template`"
            )));
        }
        if let Some(name) = &d.column {
            return Ok(ValueSource::Column(self.column_value(
                name,
                what,
                d.ty.or(default_ty),
                d.empty,
                d.format.as_deref(),
            )?));
        }
        if let Some(c) = &d.constant {
            let bytes = serde_json::to_vec(c).map_err(|e| {
                CompileError(format!("mapping: {what}: constant cannot be JSON: {e}"))
            })?;
            return Ok(ValueSource::Const(bytes));
        }
        let t = d.template.as_deref().unwrap_or_default();
        Ok(ValueSource::Template(self.template(t, what)?))
    }

    fn template(&self, t: &str, what: &str) -> Result<Vec<TemplatePart>, CompileError> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| {
                CompileError(format!(
                    "mapping: {what}: template \"{t}\" has a `{{` without a closing `}}`"
                ))
            })?;
            let name = &after[..close];
            if name.is_empty() {
                return Err(CompileError(format!(
                    "mapping: {what}: template \"{t}\" has an empty placeholder `{{}}`"
                )));
            }
            parts.push(TemplatePart::Col(
                self.resolve(name, what)?,
                name.to_string(),
            ));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Lit(rest.to_string()));
        }
        Ok(parts)
    }
}

/// Column names a call reads for its ids, event, timestamp and type, so that `"rest"`
/// leaves them out of traits/properties.
fn used_columns(c: &CallSpec) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut add = |f: &Option<FieldSpec>| match f {
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
        &c.previous_id,
        &c.timestamp,
        &c.message_id,
    ] {
        add(f);
    }
    if let KindSpec::Column { column } = &c.kind {
        used.insert(column.clone());
    }
    used
}

/// Inserts a leaf at a dotted output path, creating intermediate objects.
fn insert_path(
    nodes: &mut Vec<OutNode>,
    path: &str,
    value: ValueSource,
) -> Result<(), CompileError> {
    let (head, tail) = match path.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (path, None),
    };
    if head.is_empty() {
        return Err(CompileError(format!(
            "mapping: output path \"{path}\" has an empty segment"
        )));
    }
    let pos = nodes.iter().position(|n| n.name == head);
    match (tail, pos) {
        (None, None) => {
            nodes.push(OutNode {
                key: key_bytes(head),
                name: head.to_string(),
                kind: OutKind::Leaf(value),
            });
            Ok(())
        }
        (Some(t), None) => {
            let mut children = Vec::new();
            insert_path(&mut children, t, value)?;
            nodes.push(OutNode {
                key: key_bytes(head),
                name: head.to_string(),
                kind: OutKind::Object(children),
            });
            Ok(())
        }
        (Some(t), Some(i)) => match &mut nodes[i].kind {
            OutKind::Object(children) => insert_path(children, t, value),
            OutKind::Leaf(_) => Err(CompileError(format!(
                "mapping: output \"{head}\" is both a value and an object (at \"{path}\")"
            ))),
        },
        (None, Some(_)) => Err(CompileError(format!(
            "mapping: output \"{path}\" is given twice"
        ))),
    }
}

fn key_bytes(k: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 3);
    json::write_str(&mut v, k);
    v.push(b':');
    v
}

/// Compiles `spec` against `schema`. `input` names the input in error messages.
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
    };
    for name in spec.columns.keys() {
        cx.resolve(name, &format!("[columns] entry \"{name}\""))?;
    }
    let mut calls = Vec::with_capacity(spec.calls.len());
    for (i, c) in spec.calls.iter().enumerate() {
        let what = |field: &str| format!("call #{} {field}", i + 1);
        let kind = match &c.kind {
            KindSpec::Const(k) => KindSource::Const(*k),
            KindSpec::Column { column } => {
                KindSource::Column(cx.resolve(column, &what("type"))?, column.clone())
            }
        };
        let id = |f: &Option<FieldSpec>, name: &str| -> Result<Option<ValueSource>, CompileError> {
            f.as_ref()
                .map(|f| cx.value(f, &what(name), Some(ColType::String)))
                .transpose()
        };
        let mut payload = Vec::new();
        let payload_spec = match (&c.traits, &c.properties) {
            (Some(_), Some(_)) => {
                return Err(CompileError(format!(
                    "{}: give either traits or properties, not both",
                    what("")
                )))
            }
            (Some(p), None) | (None, Some(p)) => Some(p),
            (None, None) => None,
        };
        if let Some(p) = payload_spec {
            match p {
                PayloadSpec::Keyword(k) if k == "rest" => {
                    let used = used_columns(c);
                    for name in schema.column_names() {
                        if !used.contains(&name) {
                            let v = cx.column_value(&name, &what("traits/properties"), None, None, None)?;
                            insert_path(&mut payload, &name, ValueSource::Column(v))?;
                        }
                    }
                }
                PayloadSpec::Keyword(k) => {
                    return Err(CompileError(format!(
                        "{}: traits/properties = \"{k}\" is not valid; use \"rest\", a list of columns, or a table of output = column",
                        what("")
                    )))
                }
                PayloadSpec::Columns(cols) => {
                    for name in cols {
                        let v = cx.column_value(name, &what("traits/properties"), None, None, None)?;
                        insert_path(&mut payload, name, ValueSource::Column(v))?;
                    }
                }
                PayloadSpec::Fields(fields) => {
                    for (out, f) in fields {
                        let v = cx.value(f, &what(&format!("output \"{out}\"")), None)?;
                        insert_path(&mut payload, out, v)?;
                    }
                }
            }
        }
        let timestamp = c
            .timestamp
            .as_ref()
            .map(|f| cx.value(f, &what("timestamp"), Some(ColType::Timestamp)))
            .transpose()?;
        let compiled = CompiledCall {
            kind,
            user_id: id(&c.user_id, "user_id")?,
            anonymous_id: id(&c.anonymous_id, "anonymous_id")?,
            event: id(&c.event, "event")?,
            name: id(&c.name, "name")?,
            group_id: id(&c.group_id, "group_id")?,
            previous_id: id(&c.previous_id, "previous_id")?,
            timestamp,
            message_id: id(&c.message_id, "message_id")?,
            payload,
        };
        check_required(&compiled, &what(""))?;
        calls.push(compiled);
    }
    Ok(CompiledMapping {
        calls,
        max_future_ms: (spec.defaults.max_future_hours as i64).saturating_mul(3_600_000),
    })
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
            need(
                c.user_id.is_some() || c.anonymous_id.is_some(),
                "user_id or anonymous_id",
            )?;
            need(c.event.is_some(), "event")
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
