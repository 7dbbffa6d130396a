//! The mapping, checked against one input's columns and compiled for the encoder.
//!
//! Every column name is resolved into a [`ColumnRef`] here, once per input, before any
//! row is read; a name the input does not have is a configuration error that lists the
//! columns it does have. JSON keys and constants are pre-encoded to bytes so the encoder
//! only copies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono_tz::Tz;

use super::json;
use super::spec::{
    CallKind, CallSpec, ColType, EmptyPolicy, FieldDetail, FieldSpec, KindSpec, MappingSpec,
    PayloadSpec, TsFormatName,
};
use super::timestamp::PatternKind;
use crate::source::{ColumnRef, Schema};

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
    /// group: written as a string of digits.
    pub object_type_id: Option<ValueSource>,
    pub previous_id: Option<ValueSource>,
    pub timestamp: Option<ValueSource>,
    pub message_id: Option<ValueSource>,
    /// traits (identify, group) or properties (the others).
    pub payload: Vec<OutNode>,
    /// Call-level `context`, written inside the call.
    pub context: Vec<OutNode>,
}

/// The whole mapping compiled against one input.
#[derive(Debug, Clone)]
pub struct CompiledMapping {
    pub calls: Vec<CompiledCall>,
    pub max_future_ms: i64,
    /// Batch-level `context` and `integrations`: the request they go in is chosen by
    /// their bytes, so calls with different values never share a request.
    pub batch_context: Vec<OutNode>,
    pub batch_integrations: Vec<OutNode>,
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
                "mapping{}: {what} names column \"{name}\", which {} does not have. Its columns are: {}{more}. Fix the name in the mapping file.",
                self.spec.locate(name),
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
        format: Option<&TsFormatName>,
        tz: Option<Tz>,
    ) -> Result<ColumnValue, CompileError> {
        let col = self.resolve(name, what)?;
        let colspec = self.spec.columns.get(name);
        let ty = ty
            .or_else(|| colspec.and_then(|c| c.ty()))
            .unwrap_or(self.spec.defaults.ty);
        let empty = empty
            .or_else(|| colspec.and_then(|c| c.empty()))
            .unwrap_or(self.spec.defaults.empty);
        let tz = tz
            .or_else(|| colspec.and_then(|c| c.timezone()).map(|t| t.0))
            .or(self.spec.defaults.timezone.map(|t| t.0));
        let format = format.or_else(|| colspec.and_then(|c| c.format()));
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
                self.column_value(name, what, default_ty, None, None, None)?,
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
                d.format.as_ref(),
                d.timezone.map(|t| t.0),
            )?));
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

    /// A table of output path → field (context, integrations).
    fn tree(
        &self,
        fields: &BTreeMap<String, FieldSpec>,
        what: &str,
    ) -> Result<Vec<OutNode>, CompileError> {
        let mut nodes = Vec::new();
        for (out, f) in fields {
            let v = self.value(f, &format!("{what} \"{out}\""), None)?;
            insert_path(&mut nodes, out, v)?;
        }
        Ok(nodes)
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
                PayloadSpec::Rest => {
                    let used = used_columns(spec, c);
                    for name in schema.column_names() {
                        if !used.contains(&name) {
                            let v = cx.column_value(
                                &name,
                                &what("traits/properties"),
                                None,
                                None,
                                None,
                                None,
                            )?;
                            // A column name with dots is one key here, not a path.
                            payload.push(OutNode {
                                key: key_bytes(&name),
                                name: name.clone(),
                                kind: OutKind::Leaf(ValueSource::Column(v)),
                            });
                        }
                    }
                }
                PayloadSpec::Columns(cols) => {
                    for name in cols {
                        let v = cx.column_value(
                            name,
                            &what("traits/properties"),
                            None,
                            None,
                            None,
                            None,
                        )?;
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
        let context = match &c.context {
            Some(t) => cx.tree(t, &what("context"))?,
            None => Vec::new(),
        };
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
            context,
        };
        check_required(&compiled, &what(""))?;
        calls.push(compiled);
    }
    let batch_context = cx.tree(&spec.context, "[context]")?;
    let batch_integrations = cx.tree(&spec.integrations, "[integrations]")?;
    Ok(CompiledMapping {
        calls,
        max_future_ms: (spec.defaults.max_future_hours as i64).saturating_mul(3_600_000),
        batch_context,
        batch_integrations,
    })
}

/// A constant semantic event's required fields must be mapped at all (a row can still
/// lack a value; the encoder rejects those rows naming the field).
fn check_semantic(
    c: &CompiledCall,
    need: &dyn Fn(bool, &str) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    use super::encode::Semantic;
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
            // The one semantic event the spec lets go without a person.
            let delivery = matches!(&c.event, Some(ValueSource::Const(b)) if b == b"\"Report Delivery Event\"");
            need(
                delivery || c.user_id.is_some() || c.anonymous_id.is_some(),
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
