//! Encoding rows into calls: the hot path.
//!
//! A chunk of rows becomes one [`Mapped`]: the calls' JSON back to back in one byte arena,
//! the reject lines in another, and a list of [`Emit`]s in row order saying which is
//! which. Nothing is allocated per row once the buffers have grown; a row's output is
//! rolled back by truncation when any of its calls fails, so a row is either mapped whole
//! or rejected whole.

use std::sync::Arc;

use super::clean::{clean_number, cleaned_int, loose_bool, MAX_NUMBER};
use super::compile::{
    ColumnValue, CompiledCall, CompiledMapping, KindSource, OutKind, OutNode, Spread, TemplatePart,
    TsFormat, UnixUnit, ValueSource,
};
use super::fixes::{ColumnFixes, Fix};
use super::message_id::write_message_id;
use super::reserved::Judge;
use super::semantic::Semantic;
use super::spec::{CallKind, ColType, EmptyPolicy, OnError};
use crate::json;
use crate::source::{Chunk, Field, InputInfo, Position, Row};
use crate::timestamp::{self, UnixMillis};

/// What one step of a row produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitKind {
    Call(CallKind),
    /// The row's batch-level `,"context":{..},"integrations":{..}` (possibly empty), in
    /// the calls arena just before the row's calls. The packer keys requests on these
    /// bytes and appends them after the batch array. Emitted only when the mapping has
    /// batch-level context or integrations.
    Context,
    /// A reject line, with its reason code.
    Reject(&'static str),
}

/// One call or reject of a chunk, in row order; `len` bytes of the matching arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    /// Row index within the chunk.
    pub row: u32,
    pub len: u32,
    pub kind: EmitKind,
}

/// A mapped chunk. Reused from chunk to chunk.
#[derive(Default)]
pub struct Mapped {
    pub seq: u64,
    pub input: Option<Arc<InputInfo>>,
    pub calls: Vec<u8>,
    pub rejects: Vec<u8>,
    pub emits: Vec<Emit>,
    /// Byte offset of each row's start.
    pub row_offsets: Vec<u64>,
    pub first_row: u64,
    pub rows: u32,
    /// Rows left out by `--sample` (neither mapped nor rejected).
    pub skipped: u32,
    /// Position just past the chunk's last row.
    pub end: Position,
    /// The chunk's rows could not be read (nothing else is set): the run stops here.
    pub failed: Option<String>,
    /// Values cleaned, dropped or kept as text in the chunk's mapped rows, per column
    /// slot of the mapping ([`CompiledMapping::value_columns`], named by `fix_columns`).
    /// Empty when there were none. The packer adds them up.
    pub fixes: Vec<ColumnFixes>,
    pub fix_columns: Option<Arc<[String]>>,
    /// Per column registered on the input (by [`crate::source::ColumnRef::Path`] index):
    /// whether any row of the chunk had a value there. `None`: every column had (CSV).
    pub present: Option<Vec<bool>>,
    /// The fixes of the row being mapped, kept until the row is known to map whole.
    row_fixes: RowFixes,
}

/// One fixed value of the row being mapped: its column slot, what became of it, and
/// where its text is in [`RowFixes::text`].
#[derive(Debug, Clone, Copy)]
struct FixEvent {
    slot: u32,
    fix: Fix,
    start: u32,
    end: u32,
}

/// The fixes of one row, staged until the row is known to map: a row rejected later
/// (a missing id after a dropped property) counts none of them. Reused row to row.
#[derive(Debug, Default)]
pub struct RowFixes {
    events: Vec<FixEvent>,
    text: Vec<u8>,
}

impl RowFixes {
    fn clear(&mut self) {
        self.events.clear();
        self.text.clear();
    }

    #[cold]
    fn record(&mut self, slot: u32, fix: Fix, value: &[u8]) {
        let start = self.text.len() as u32;
        // A long value is cut: it is only an example.
        self.text.extend_from_slice(&value[..value.len().min(200)]);
        self.events.push(FixEvent {
            slot,
            fix,
            start,
            end: self.text.len() as u32,
        });
    }
}

impl Mapped {
    /// Position of row `i` of this chunk.
    pub fn row_position(&self, i: u32) -> Position {
        Position {
            input: self.end.input,
            row: self.first_row + i as u64,
            offset: self.row_offsets[i as usize],
        }
    }
}

/// A row-level failure: the reason code and a human explanation naming column and value.
#[derive(Debug)]
pub struct Reject {
    pub code: &'static str,
    pub detail: String,
}

#[cold]
fn reject(code: &'static str, detail: String) -> Reject {
    Reject { code, detail }
}

/// Settings the encoder needs besides the mapping.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub max_call_bytes: usize,
    /// Timestamps after this instant are rejected.
    pub latest_ms: UnixMillis,
    /// `--sent-at now`: end every call with [`SENT_AT_PLACEHOLDER`], which the sender
    /// overwrites with the send time on each attempt (same width, so sizes stay exact).
    pub sent_at: bool,
    /// `--sample K`: map only rows whose number is a multiple of K (1: every row).
    pub sample: u64,
}

impl EncodeOptions {
    /// Whether row `row_no` of an input is left out by `--sample`.
    #[inline]
    fn skips(&self, row_no: u64) -> bool {
        self.sample > 1 && row_no % self.sample != 0
    }
}

pub use super::sent_at::SENT_AT_PLACEHOLDER;

/// Maps every row of `chunk` into `out` (cleared first).
pub fn map_chunk(chunk: &Chunk, mapping: &CompiledMapping, opts: &EncodeOptions, out: &mut Mapped) {
    out.failed = None;
    out.calls.clear();
    out.rejects.clear();
    out.emits.clear();
    out.row_offsets.clear();
    if opts.sent_at {
        super::sent_at::note_in_use();
    }
    // One reference count per chunk, not per row.
    let input = chunk.input().clone();
    out.input = Some(input.clone());
    out.first_row = chunk.first_row();
    out.rows = chunk.len() as u32;
    out.skipped = 0;
    out.end = chunk.end();
    for f in &mut out.fixes {
        f.clear();
    }
    out.fix_columns = Some(mapping.value_columns.clone());
    match chunk.present() {
        Some(p) => {
            let v = out.present.get_or_insert_with(Vec::new);
            v.clear();
            v.extend_from_slice(p);
        }
        None => out.present = None,
    }
    for i in 0..chunk.len() {
        out.row_offsets.push(chunk.row_offset(i));
    }
    match chunk {
        Chunk::Csv(c) => {
            let utf8 = c.is_utf8();
            for i in 0..c.len {
                map_row(&c.row_in(i, utf8), i as u32, mapping, opts, out, &input);
            }
        }
        Chunk::Ndjson(c) => {
            for i in 0..c.len {
                map_row(&c.row(i), i as u32, mapping, opts, out, &input);
            }
        }
        Chunk::Parquet(c) => {
            for i in 0..c.len {
                map_row(&c.row(i), i as u32, mapping, opts, out, &input);
            }
        }
    }
}

fn map_row<R: Row>(
    row: &R,
    i: u32,
    m: &CompiledMapping,
    opts: &EncodeOptions,
    out: &mut Mapped,
    input: &InputInfo,
) {
    let row_no = out.first_row + i as u64;
    if opts.skips(row_no) {
        out.skipped += 1;
        return;
    }
    let calls_mark = out.calls.len();
    let emits_mark = out.emits.len();
    out.row_fixes.clear();
    let result = match row.source_problem() {
        Some(p) => Err(reject(row.problem_code(), p)),
        None => encode_calls(row, row_no, m, opts, out, i),
    };
    if result.is_ok() && !out.row_fixes.events.is_empty() {
        fold_fixes(out, m, row_no);
    }
    if let Err(r) = result {
        out.calls.truncate(calls_mark);
        out.emits.truncate(emits_mark);
        let start = out.rejects.len();
        write_reject_line(
            &mut out.rejects,
            input,
            row_no,
            row,
            out.row_offsets[i as usize],
            &r,
        );
        out.emits.push(Emit {
            row: i,
            len: (out.rejects.len() - start) as u32,
            kind: EmitKind::Reject(r.code),
        });
    }
}

/// Adds the row's fixes to the chunk's counts, keeping the first few as examples.
#[cold]
fn fold_fixes(out: &mut Mapped, m: &CompiledMapping, row_no: u64) {
    if out.fixes.len() < m.value_columns.len() {
        out.fixes
            .resize_with(m.value_columns.len(), ColumnFixes::default);
    }
    for e in &out.row_fixes.events {
        let Some(f) = out.fixes.get_mut(e.slot as usize) else {
            continue;
        };
        *f.count(e.fix) += 1;
        let shown = f.examples.iter().filter(|x| x.1 == e.fix).count();
        if shown < ColumnFixes::EXAMPLES {
            let text = &out.row_fixes.text[e.start as usize..e.end as usize];
            f.examples
                .push((row_no, e.fix, String::from_utf8_lossy(text).into_owned()));
        }
    }
}

/// One NDJSON line: `{"source","row","line","offset","reason","detail","record"}`.
/// `row` is 1-based (the first data row is row 1).
pub fn write_reject_line<R: Row>(
    out: &mut Vec<u8>,
    input: &InputInfo,
    row_no: u64,
    row: &R,
    offset: u64,
    r: &Reject,
) {
    open_reject(out, &input.display, row_no);
    out.extend_from_slice(b",\"line\":");
    match row.line() {
        crate::source::LINE_UNKNOWN => out.extend_from_slice(b"null"),
        line => json::write_u64(out, line),
    }
    out.extend_from_slice(b",\"offset\":");
    json::write_u64(out, offset);
    reason_fields(out, r);
    out.extend_from_slice(b",\"record\":");
    row.write_record_json(out);
    out.extend_from_slice(b"}\n");
}

/// A reject line for a call refused after mapping (by the packer's limit check or by
/// the API in strict mode): `{"source","row","reason","detail","call"}`, the record
/// being the call itself.
pub fn write_call_reject(
    out: &mut Vec<u8>,
    input: Option<&InputInfo>,
    row: u64,
    call: &[u8],
    r: &Reject,
) {
    open_reject(out, input.map_or("", |i| i.display.as_str()), row);
    reason_fields(out, r);
    out.extend_from_slice(b",\"call\":");
    out.extend_from_slice(call);
    out.extend_from_slice(b"}\n");
}

/// `{"source":…,"row":…` — how every reject line starts; `row` is written 1-based.
fn open_reject(out: &mut Vec<u8>, source: &str, row_no: u64) {
    out.extend_from_slice(b"{\"source\":");
    json::write_str(out, source);
    out.extend_from_slice(b",\"row\":");
    json::write_u64(out, row_no + 1);
}

/// `,"reason":…,"detail":…`
fn reason_fields(out: &mut Vec<u8>, r: &Reject) {
    out.extend_from_slice(b",\"reason\":");
    json::write_str(out, r.code);
    out.extend_from_slice(b",\"detail\":");
    json::write_str(out, &r.detail);
}

fn encode_calls<R: Row>(
    row: &R,
    row_no: u64,
    m: &CompiledMapping,
    opts: &EncodeOptions,
    out: &mut Mapped,
    i: u32,
) -> Result<(), Reject> {
    if m.has_batch_context() {
        let start = out.calls.len();
        write_batch_context(&mut out.calls, row, m, opts, &mut out.row_fixes)?;
        out.emits.push(Emit {
            row: i,
            len: (out.calls.len() - start) as u32,
            kind: EmitKind::Context,
        });
    }
    // A row whose type every table reading it leaves out (`only`) makes no call: that is
    // an error, not a silent skip.
    let mut left_out = None;
    let mut made = false;
    for (ci, call) in m.calls.iter().enumerate() {
        let start = out.calls.len();
        let kind = encode_call(
            row,
            row_no,
            ci as u32,
            m.seed,
            call,
            opts,
            &mut out.calls,
            &mut out.row_fixes,
        )
        .map_err(|mut r| {
            if m.calls.len() > 1 {
                r.detail = format!("call #{}: {}", ci + 1, r.detail);
            }
            r
        })?;
        let kind = match kind {
            Made::Call(kind) => kind,
            Made::LeftOut(kind) => {
                left_out = Some((kind, &call.kind));
                continue;
            }
        };
        made = true;
        let len = out.calls.len() - start;
        if len > opts.max_call_bytes {
            return Err(reject(
                "call_too_large",
                format!(
                    "call #{} ({}) is {len} bytes; the API drops calls over {} bytes. Trim the largest fields or leave them out of the mapping.",
                    ci + 1,
                    kind.as_str(),
                    opts.max_call_bytes
                ),
            ));
        }
        out.emits.push(Emit {
            row: i,
            len: len as u32,
            kind: EmitKind::Call(kind),
        });
    }
    if let (Some((kind, KindSource::Column(_, name, _))), false) = (left_out, made) {
        return Err(reject(
            "bad_call_type",
            format!(
                "column {name}: no [[call]] table takes \"{}\" rows (it is in no table's `only` list); add it to one, or leave the row out of the input",
                kind.as_str()
            ),
        ));
    }
    Ok(())
}

/// What one `[[call]]` table made of a row.
enum Made {
    Call(CallKind),
    /// Nothing: the row's type (from a column) is not in the table's `only` list.
    LeftOut(CallKind),
}

/// `,"context":{..},"integrations":{..}`, each left out when it comes out empty.
fn write_batch_context<R: Row>(
    out: &mut Vec<u8>,
    row: &R,
    m: &CompiledMapping,
    opts: &EncodeOptions,
    fixes: &mut RowFixes,
) -> Result<(), Reject> {
    let mut judge = Judge::batch();
    for (key, nodes) in [
        (&b",\"context\":"[..], &m.batch_context),
        (&b",\"integrations\":"[..], &m.batch_integrations),
    ] {
        if nodes.is_empty() {
            continue;
        }
        let mark = out.len();
        out.extend_from_slice(key);
        if m.batch_checks {
            write_object::<R, true>(out, row, nodes, opts, fixes, &mut judge)?;
        } else {
            write_object::<R, false>(out, row, nodes, opts, fixes, &mut judge)?;
        }
        if out.ends_with(b"{}") {
            out.truncate(mark);
        }
    }
    judge.end_context().map_err(|why| reject("bad_value", why))
}

/// Writes `,"key":value` for an optional id-like field; returns whether it was written.
/// Inlined into `encode_call`: one call frame per call, not one per id.
#[inline(always)]
fn write_opt_field<R: Row>(
    out: &mut Vec<u8>,
    row: &R,
    key: &[u8],
    v: &Option<ValueSource>,
    opts: &EncodeOptions,
) -> Result<bool, Reject> {
    let Some(v) = v else { return Ok(false) };
    let mark = out.len();
    out.push(b',');
    json::extend_short(out, key);
    let wrote = write_value(out, row, v, opts, true)?.any();
    if !wrote {
        out.truncate(mark);
    }
    Ok(wrote)
}

#[allow(clippy::too_many_arguments)] // the row, where it is, the call and the two buffers
fn encode_call<R: Row>(
    row: &R,
    row_no: u64,
    call_index: u32,
    seed: u64,
    call: &CompiledCall,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
    fixes: &mut RowFixes,
) -> Result<Made, Reject> {
    let kind = match &call.kind {
        KindSource::Const(k) => *k,
        KindSource::Column(col, name, only) => {
            let text = field_text(row.field(col), name)?;
            let kind = CallKind::parse(text.trim()).ok_or_else(|| {
                reject(
                    "bad_call_type",
                    format!("column {name}: \"{text}\" is not a call type (identify, track, page, screen, group, alias)"),
                )
            })?;
            if only.as_ref().is_some_and(|o| !o.contains(&kind)) {
                return Ok(Made::LeftOut(kind));
            }
            kind
        }
    };
    let start = out.len();
    out.extend_from_slice(b"{\"type\":\"");
    json::extend_short(out, kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"messageId\":");
    let has_id = match &call.message_id {
        Some(v) => write_value(out, row, v, opts, true)?.any(),
        None => false,
    };
    if !has_id {
        let mut id = [0u8; 36];
        write_message_id(&mut id, seed, row_no, call_index);
        out.push(b'"');
        out.extend_from_slice(&id);
        out.push(b'"');
    }
    let has_user = write_opt_field(out, row, b"\"userId\":", &call.user_id, opts)?;
    let has_anon = write_opt_field(out, row, b"\"anonymousId\":", &call.anonymous_id, opts)?;
    let mut semantic = None;
    match kind {
        CallKind::Track => {
            let mark = out.len();
            if !write_opt_field(out, row, b"\"event\":", &call.event, opts)? {
                return Err(reject(
                    "missing_event",
                    format!("the row has no event name{}", source_hint(&call.event)),
                ));
            }
            semantic = Semantic::of(&out[mark + b",\"event\":".len()..]);
        }
        CallKind::Page | CallKind::Screen => {
            write_opt_field(out, row, b"\"name\":", &call.name, opts)?;
        }
        CallKind::Group => {
            if !write_opt_field(out, row, b"\"groupId\":", &call.group_id, opts)? {
                return Err(reject(
                    "missing_group_id",
                    format!("the row has no groupId{}", source_hint(&call.group_id)),
                ));
            }
        }
        CallKind::Alias => {
            if !has_user {
                return Err(reject(
                    "missing_id",
                    format!("an alias call needs a userId{}", source_hint(&call.user_id)),
                ));
            }
            if !write_opt_field(out, row, b"\"previousId\":", &call.previous_id, opts)? {
                return Err(reject(
                    "missing_previous_id",
                    format!(
                        "an alias call needs a previousId{}",
                        source_hint(&call.previous_id)
                    ),
                ));
            }
        }
        CallKind::Identify => {}
    }
    let needs_id = kind != CallKind::Alias && !semantic.is_some_and(Semantic::needs_no_person);
    if needs_id && !has_user && !has_anon {
        return Err(reject(
            "missing_id",
            format!(
                "the row has neither a userId{} nor an anonymousId{}; a {} call needs one",
                source_hint(&call.user_id),
                source_hint(&call.anonymous_id),
                kind.as_str()
            ),
        ));
    }
    if let Some(ts) = &call.timestamp {
        let mark = out.len();
        out.extend_from_slice(b",\"timestamp\":");
        if !write_value_inline(out, row, ts, opts, false)?.any() {
            out.truncate(mark);
            return Err(reject(
                "missing_timestamp",
                format!("the row has no timestamp{}", source_hint(&call.timestamp)),
            ));
        }
    }
    let mut judge = Judge::new(kind, !has_anon);
    // With the type from a column, traits and properties may both be given: each row
    // takes the one its type carries.
    let payload = match (&call.properties, kind.payload_key()) {
        (Some(p), "properties") => p,
        _ => &call.payload,
    };
    // group: the object type goes in traits, as `objectTypeId` (what the vendor's group
    // documentation and every example of the spec send) and as `object_type_id` (the
    // name the spec's group schema declares); README, "group and objectTypeId".
    let object_type = match kind {
        CallKind::Group => write_object_type_id(out, row, call, opts)?,
        _ => None,
    };
    if let Some(v) = object_type {
        out.extend_from_slice(b",\"object_type_id\":");
        out.extend_from_within(v);
        if call.payload_checks {
            write_members::<R, true>(out, row, payload, opts, fixes, &mut judge, true)?;
        } else {
            write_members::<R, false>(out, row, payload, opts, fixes, &mut judge, true)?;
        }
        out.push(b'}');
    } else if !payload.is_empty() && kind != CallKind::Alias {
        out.extend_from_slice(match kind.payload_key() {
            "traits" => b",\"traits\":",
            _ => b",\"properties\":",
        });
        if call.payload_checks {
            write_object::<R, true>(out, row, payload, opts, fixes, &mut judge)?;
        } else {
            write_object::<R, false>(out, row, payload, opts, fixes, &mut judge)?;
        }
    }
    if !call.context.is_empty() {
        let mark = out.len();
        out.extend_from_slice(b",\"context\":");
        if call.context_checks {
            write_object::<R, true>(out, row, &call.context, opts, fixes, &mut judge)?;
            judge
                .end_context()
                .map_err(|why| reject("bad_value", why))?;
        } else {
            write_object::<R, false>(out, row, &call.context, opts, fixes, &mut judge)?;
        }
        if out.ends_with(b"{}") {
            out.truncate(mark);
        }
    }
    if opts.sent_at {
        out.extend_from_slice(SENT_AT_PLACEHOLDER);
    }
    out.push(b'}');
    if let Some(ev) = semantic {
        ev.check(&out[start..])
            .map_err(|detail| reject("semantic_event", detail))?;
    }
    Ok(Made::Call(kind))
}

/// `,"traits":{"objectTypeId":"N"` (the traits object left open for the rest of the
/// group's traits): the spec wants a stringified integer; a number is quoted, and
/// anything but digits is a reject naming the value. Returns where the value (`"N"`)
/// was written, when it was (nothing is written when the row has none).
fn write_object_type_id<R: Row>(
    out: &mut Vec<u8>,
    row: &R,
    call: &CompiledCall,
    opts: &EncodeOptions,
) -> Result<Option<std::ops::Range<usize>>, Reject> {
    let mark = out.len();
    const KEY: &[u8] = b"\"traits\":{\"objectTypeId\":";
    if !write_opt_field(out, row, KEY, &call.object_type_id, opts)? {
        return Ok(None);
    }
    let v = mark + 1 + KEY.len();
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let written = &out[v..];
    if written.len() >= 2 && written[0] == b'"' && digits(&written[1..written.len() - 1]) {
        return Ok(Some(v..out.len()));
    }
    if digits(written) {
        out.insert(v, b'"');
        out.push(b'"');
        return Ok(Some(v..out.len()));
    }
    Err(reject(
        "bad_value",
        format!(
            "objectTypeId {} is not an integer (object type ids are stringified integers such as \"1\")",
            shown(written)
        ),
    ))
}

fn source_hint(v: &Option<ValueSource>) -> String {
    match v {
        Some(ValueSource::Column(c)) => format!(" (column {} is empty)", c.name),
        Some(_) => String::new(),
        None => " (the mapping gives none)".into(),
    }
}

/// An object of `nodes`. `CHECK`: some node of the tree carries a name the spec types
/// ([`OutNode::reserved`], decided when the mapping is compiled); without one the check
/// is compiled out, so a mapping that places no such name pays nothing for it.
fn write_object<R: Row, const CHECK: bool>(
    out: &mut Vec<u8>,
    row: &R,
    nodes: &[OutNode],
    opts: &EncodeOptions,
    fixes: &mut RowFixes,
    judge: &mut Judge,
) -> Result<(), Reject> {
    out.push(b'{');
    write_members::<R, CHECK>(out, row, nodes, opts, fixes, judge, false)?;
    out.push(b'}');
    Ok(())
}

/// An object's members, after `{` (and after members already written when `any`).
#[inline(always)]
fn write_members<R: Row, const CHECK: bool>(
    out: &mut Vec<u8>,
    row: &R,
    nodes: &[OutNode],
    opts: &EncodeOptions,
    fixes: &mut RowFixes,
    judge: &mut Judge,
    mut any: bool,
) -> Result<(), Reject> {
    for n in nodes {
        if let Some(s) = &n.spread {
            // An object's members, written in the node's place (NDJSON's keys first seen
            // after the sampled rows, or an object column as a whole payload).
            let mark = out.len();
            if any {
                out.push(b',');
            }
            let wrote = match row.field(&s.col) {
                // The common case: compact JSON from the source, copied whole.
                Field::Json(obj)
                    if s.skip.is_empty() && obj.len() >= 2 && obj.first() == Some(&b'{') =>
                {
                    if let Some(r) = n.reserved.as_ref().filter(|_| CHECK && obj.len() > 2) {
                        judge
                            .check(r, obj)
                            .map_err(|why| reject("bad_value", why))?;
                    }
                    out.extend_from_slice(&obj[1..obj.len() - 1]);
                    obj.len() > 2
                }
                f => write_spread(out, f, s, fixes)?,
            };
            if wrote {
                any = true;
            } else {
                out.truncate(mark);
            }
            continue;
        }
        let mark = out.len();
        if any {
            out.push(b',');
        }
        json::extend_short(out, &n.key);
        let value = out.len();
        let wrote = match &n.kind {
            OutKind::Leaf(v) => {
                let at = out.len();
                match write_value_inline(out, row, v, opts, false) {
                    Ok(Wrote::Nothing) => false,
                    Ok(Wrote::Value) => true,
                    Ok(Wrote::Cleaned) => {
                        note_cleaned(row, v, fixes);
                        true
                    }
                    Err(r) => bad_value_policy(out, at, row, v, r, fixes)?,
                }
            }
            // An object whose every value is omitted is omitted too: `{}` says nothing,
            // and an empty `context.device` would even make the call ambiguous.
            OutKind::Object(children) => {
                write_object::<R, CHECK>(out, row, children, opts, fixes, judge)?;
                !out.ends_with(b"{}")
            }
        };
        if wrote {
            any = true;
            // A name the spec types (rare): its value is checked.
            if let Some(r) = n.reserved.as_ref().filter(|_| CHECK) {
                judge
                    .check(r, &out[value..])
                    .map_err(|why| reject("bad_value", why))?;
            }
        } else {
            out.truncate(mark);
        }
    }
    Ok(())
}

/// What writing a value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Nothing: the value is to be omitted.
    Nothing,
    Value,
    /// The value, cleaned ([`super::clean`]) into its type.
    Cleaned,
}

impl Wrote {
    #[inline(always)]
    fn any(self) -> bool {
        self != Wrote::Nothing
    }
    #[inline(always)]
    fn from(wrote: bool) -> Wrote {
        if wrote {
            Wrote::Value
        } else {
            Wrote::Nothing
        }
    }
}

/// Counts a cleaned value, with the text it was cleaned from.
#[cold]
fn note_cleaned<R: Row>(row: &R, v: &ValueSource, fixes: &mut RowFixes) {
    if let ValueSource::Column(c) = v {
        let f = row.field(&c.col);
        fixes.record(c.slot, Fix::Cleaned, field_text_lossy(&f).as_bytes());
    }
}

/// A trait, property or context value that did not parse: what its column's `on_error`
/// says (the key is written; `at` is just after it), counted with its text. `Reject`
/// (the default) rejects the row as before.
#[cold]
#[inline(never)]
fn bad_value_policy<R: Row>(
    out: &mut Vec<u8>,
    at: usize,
    row: &R,
    v: &ValueSource,
    r: Reject,
    fixes: &mut RowFixes,
) -> Result<bool, Reject> {
    let ValueSource::Column(c) = v else {
        return Err(r);
    };
    out.truncate(at);
    let f = row.field(&c.col);
    let text = field_text_lossy(&f);
    let fix = match c.on_error {
        OnError::Reject => return Err(r),
        OnError::Omit => Fix::Omitted,
        OnError::Null => {
            out.extend_from_slice(b"null");
            Fix::Nulled
        }
        OnError::Keep => {
            json::write_str(out, &text);
            Fix::Kept
        }
    };
    fixes.record(c.slot, fix, text.as_bytes());
    Ok(fix != Fix::Omitted)
}

/// An object column's members, less its `skip` keys, in place (the caller wrote the
/// comma before them, if any). A value that is not an object is a bad value of the
/// column (`on_error` applies; a spread has no key of its own, so anything but
/// `reject` leaves it out), or nothing for NDJSON's later keys.
#[cold]
#[inline(never)]
fn write_spread(
    out: &mut Vec<u8>,
    f: Field<'_>,
    s: &Spread,
    fixes: &mut RowFixes,
) -> Result<bool, Reject> {
    let (text, compact) = match f {
        Field::Missing | Field::Null => return Ok(false),
        Field::Json(b) => (b, true),
        Field::Raw(b) | Field::Text(b) => (b, false),
        Field::Str(t) => (t.as_bytes(), false),
        // A number or a boolean: never an object (the text is only for the check).
        _ => (&b"0"[..], false),
    };
    if !compact && text.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let members = if compact || json::is_valid(text) {
        json::object_members(text)
    } else {
        None
    };
    let Some(members) = members else {
        if !s.strict {
            return Ok(false);
        }
        let shown_value = field_text_lossy(&f);
        if s.on_error == OnError::Reject {
            return Err(reject(
                "bad_value",
                format!(
                    "column {}: \"{}\" is not a JSON object, where the mapping takes its members as the traits or properties",
                    s.name,
                    shown(shown_value.as_bytes())
                ),
            ));
        }
        fixes.record(s.slot, Fix::Omitted, shown_value.as_bytes());
        return Ok(false);
    };
    let start = out.len();
    for (k, v) in members {
        if s.skip.iter().any(|x| x.as_slice() == k) {
            continue;
        }
        if out.len() > start {
            out.push(b',');
        }
        out.extend_from_slice(k);
        out.push(b':');
        // Members follow the rule of top-level values: a long integer goes as a string.
        json::write_json_exact(out, v, compact);
    }
    Ok(out.len() > start)
}

/// A field's value as text, for examples and `on_error = "keep"` (invalid UTF-8
/// replaced).
fn field_text_lossy<'a>(f: &Field<'a>) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    match *f {
        Field::Raw(b) | Field::Text(b) | Field::Json(b) => String::from_utf8_lossy(b),
        Field::Str(s) => Cow::Borrowed(s),
        Field::Missing | Field::Null => Cow::Borrowed(""),
        other => field_text(other, "").unwrap_or(Cow::Borrowed("")),
    }
}

/// The text of a field used as a call type or template part.
fn field_text<'a>(f: Field<'a>, name: &str) -> Result<std::borrow::Cow<'a, str>, Reject> {
    use std::borrow::Cow;
    Ok(match f {
        Field::Missing | Field::Null => Cow::Borrowed(""),
        Field::Raw(b) => Cow::Borrowed(utf8(b, name)?),
        // Known valid: the check cannot fail (templates and call types are rare next
        // to field values, so the second look is cheap here).
        Field::Text(b) => Cow::Borrowed(utf8(b, name)?),
        Field::Str(s) => Cow::Borrowed(s),
        Field::Int(v) => Cow::Owned(v.to_string()),
        Field::UInt(v) => Cow::Owned(v.to_string()),
        Field::Float(v) => Cow::Owned(v.to_string()),
        Field::Bool(v) => Cow::Borrowed(if v { "true" } else { "false" }),
        Field::Json(b) => Cow::Owned(String::from_utf8_lossy(b).into_owned()),
        // Nanoseconds in an i64 are years 1677 to 2262: always a four-digit year.
        Field::TimestampNanos(n) => Cow::Owned(timestamp::iso_millis(n.div_euclid(1_000_000))),
    })
}

fn utf8<'a>(b: &'a [u8], name: &str) -> Result<&'a str, Reject> {
    std::str::from_utf8(b).map_err(|e| {
        reject(
            "invalid_utf8",
            format!(
                "column {name}: invalid UTF-8 at byte {} of the value; re-export the file as UTF-8",
                e.valid_up_to()
            ),
        )
    })
}

/// Shows a value in a reject reason, shortened so a huge field does not flood the file.
fn shown(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Writes one value. Returns `Ok(false)` (and writes nothing) when it is to be omitted.
/// `is_id`: ids are never null or empty strings; empty means absent.
fn write_value<R: Row>(
    out: &mut Vec<u8>,
    row: &R,
    v: &ValueSource,
    opts: &EncodeOptions,
    is_id: bool,
) -> Result<Wrote, Reject> {
    write_value_inline(out, row, v, opts, is_id)
}

/// [`write_value`], inlined into [`write_object`]'s loop: one call frame per object
/// instead of one per value.
#[inline(always)]
fn write_value_inline<R: Row>(
    out: &mut Vec<u8>,
    row: &R,
    v: &ValueSource,
    opts: &EncodeOptions,
    is_id: bool,
) -> Result<Wrote, Reject> {
    match v {
        ValueSource::Const(bytes) => {
            json::extend_short(out, bytes);
            Ok(Wrote::Value)
        }
        ValueSource::Template(parts) => {
            out.push(b'"');
            for p in parts {
                match p {
                    TemplatePart::Lit(s) => json::write_str_body(out, s.as_bytes()),
                    TemplatePart::Col(col, name) => {
                        let f = row.field(col);
                        if is_id && matches!(f, Field::Bool(_) | Field::Json(_)) {
                            return Err(not_text_in_template(name, f));
                        }
                        let t = field_text(f, name)?;
                        json::write_str_body(out, t.as_bytes());
                    }
                }
            }
            out.push(b'"');
            Ok(Wrote::Value)
        }
        ValueSource::Column(c) => write_column(out, row.field(&c.col), c, opts, is_id),
    }
}

fn write_empty(out: &mut Vec<u8>, c: &ColumnValue, is_id: bool) -> bool {
    if is_id {
        return false;
    }
    match c.empty {
        EmptyPolicy::Omit => false,
        EmptyPolicy::Null => {
            out.extend_from_slice(b"null");
            true
        }
        EmptyPolicy::Empty => {
            out.extend_from_slice(b"\"\"");
            true
        }
    }
}

#[cold]
#[inline(never)]
fn bad(c: &ColumnValue, value: &[u8], what: &str) -> Reject {
    reject(
        "bad_value",
        format!("column {}: \"{}\" is not {what}", c.name, shown(value)),
    )
}

// Inlined into its one caller, `write_value`: one call frame per value, not two.
#[inline(always)]
fn write_column(
    out: &mut Vec<u8>,
    f: Field<'_>,
    c: &ColumnValue,
    opts: &EncodeOptions,
    is_id: bool,
) -> Result<Wrote, Reject> {
    match f {
        Field::Missing => Ok(Wrote::Nothing),
        Field::Null => Ok(Wrote::from(write_empty(out, c, is_id))),
        Field::Raw(b) | Field::Json(b) if b.is_empty() => {
            Ok(Wrote::from(write_empty(out, c, is_id)))
        }
        Field::Str("") | Field::Text(b"") => Ok(Wrote::from(write_empty(out, c, is_id))),
        Field::Raw(b) => write_text(out, b, false, c, opts, false),
        Field::Text(b) => write_text(out, b, true, c, opts, false),
        Field::Str(s) => write_text(out, s.as_bytes(), true, c, opts, true),
        Field::Int(v) => write_number_field(
            out,
            c,
            opts,
            v as f64,
            || itoa::Buffer::new().format(v).to_string(),
            Some(v),
        ),
        Field::UInt(v) => write_number_field(
            out,
            c,
            opts,
            v as f64,
            || itoa::Buffer::new().format(v).to_string(),
            i64::try_from(v).ok(),
        ),
        Field::Float(v) => {
            if !v.is_finite() {
                return Ok(Wrote::from(write_empty(out, c, is_id)));
            }
            write_number_field(
                out,
                c,
                opts,
                v,
                || ryu::Buffer::new().format_finite(v).to_string(),
                None,
            )
        }
        // Ids and names (`userId`, `anonymousId`, `groupId`, `event`, ...) are strings in
        // the spec, and numbers are written as their digits, but an object, an array or
        // a boolean there is a mapping or export mistake: rejected, never sent as text.
        Field::Bool(_) | Field::Json(_) if is_id => Err(not_text(c, f)),
        Field::Bool(v) => {
            match c.ty {
                ColType::String => json::write_str(out, if v { "true" } else { "false" }),
                _ => out.extend_from_slice(if v { b"true" } else { b"false" }),
            }
            Ok(Wrote::Value)
        }
        Field::Json(b) => {
            match c.ty {
                ColType::String => json::write_str(out, &String::from_utf8_lossy(b)),
                // Nested integers of more than 15 digits go as strings, as top-level ones.
                _ => json::write_json_exact(out, b, true),
            }
            Ok(Wrote::Value)
        }
        Field::TimestampNanos(n) => {
            // The source saturates an instant nanoseconds cannot hold (a Parquet
            // timestamp in s, ms or µs, or a date, outside 1677-09-21..2262-04-11): it is
            // not that instant, so it is refused rather than sent as the limit.
            if n == i64::MAX || n == i64::MIN {
                return Err(reject(
                    "bad_timestamp",
                    format!(
                        "column {}: a timestamp {}, outside 1677-09-21..2262-04-11, the range typed timestamp columns are read in; write the column as text or as a number and give it a timestamp format",
                        c.name,
                        if n == i64::MAX { "after 2262-04-11" } else { "before 1677-09-21" }
                    ),
                ));
            }
            let ms = n.div_euclid(1_000_000);
            match c.ty {
                ColType::Int => json::write_i64(out, ms),
                _ => write_ts(out, ms, c, opts, None, || timestamp::iso_millis(ms))?,
            }
            Ok(Wrote::Value)
        }
    }
}

/// The reject for a value that cannot be an id or a name.
#[cold]
fn not_text(c: &ColumnValue, f: Field<'_>) -> Reject {
    not_text_named(&c.name, f, "")
}

/// [`not_text`] for a column placed in an id's or a name's template.
#[cold]
fn not_text_in_template(name: &str, f: Field<'_>) -> Reject {
    not_text_named(name, f, " (in a template)")
}

fn not_text_named(name: &str, f: Field<'_>, place: &str) -> Reject {
    let (what, text) = match f {
        Field::Bool(v) => ("a boolean", v.to_string()),
        Field::Json(b) if b.first() == Some(&b'[') => ("a JSON array", shown(b)),
        Field::Json(b) => ("a JSON object", shown(b)),
        _ => ("neither a string nor a number", String::new()),
    };
    reject(
        "bad_value",
        format!(
            "column {name}{place}: {text} is {what}, where the call needs a string (an id or a name). If the id is inside it, map that field by its path (for example user_id = \"{name}.id\"); otherwise fix the export"
        ),
    )
}

/// A typed number from a typed source, written as the column's type asks.
fn write_number_field(
    out: &mut Vec<u8>,
    c: &ColumnValue,
    opts: &EncodeOptions,
    as_f64: f64,
    text: impl Fn() -> String,
    as_i64: Option<i64>,
) -> Result<Wrote, Reject> {
    match c.ty {
        ColType::String => json::write_str(out, &text()),
        ColType::Timestamp => {
            let Some(v) = as_i64 else {
                return Err(bad(c, text().as_bytes(), "a unix timestamp"));
            };
            let unit = unit_of(&c.ts_format, v);
            let ms =
                unix_to_ms(v, unit).ok_or_else(|| out_of_range(c, &text(), None, Some(unit)))?;
            write_ts(out, ms, c, opts, Some(unit), &text)?;
        }
        ColType::Int => match as_i64 {
            Some(v) => json::write_i64(out, v),
            None if as_f64.fract() == 0.0 && as_f64.abs() < 9.0e15 => {
                json::write_i64(out, as_f64 as i64)
            }
            None => return Err(bad(c, text().as_bytes(), "an integer")),
        },
        // 1 and 0 are booleans; another number is not clearly one.
        ColType::Bool if as_f64 == 1.0 => out.extend_from_slice(b"true"),
        ColType::Bool if as_f64 == 0.0 => out.extend_from_slice(b"false"),
        ColType::Bool => return Err(bad(c, text().as_bytes(), "a boolean (1 or 0)")),
        _ => {
            let t = text();
            // As for CSV text under `auto`: an integer of more than 15 significant digits
            // goes as a string, since JSON readers that hold numbers as doubles (the
            // API's among them) would round it (1234567890123456789 → ...800). Only a
            // text of 16 bytes or more can be one, so most numbers skip the scan.
            if c.ty == ColType::Auto
                && t.len() > 15
                && t.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && significant_digits(t.as_bytes()) > 15
            {
                json::write_str(out, &t);
            } else {
                out.extend_from_slice(t.as_bytes());
            }
        }
    }
    Ok(Wrote::Value)
}

fn significant_digits(b: &[u8]) -> usize {
    let mantissa = b.split(|&c| c == b'e' || c == b'E').next().unwrap_or(b);
    let digits = mantissa.iter().filter(|c| c.is_ascii_digit());
    let n = digits.clone().count();
    let leading_zeros = mantissa
        .iter()
        .filter(|c| c.is_ascii_digit())
        .take_while(|&&c| c == b'0')
        .count();
    n - leading_zeros
}

/// Text (CSV field, or typed string) written as the column's type asks.
/// `text`: the same bytes when already known to be UTF-8 (not checked again).
/// `typed_string`: the source said this is a string, so `auto` keeps it one.
///
/// Inlined into `write_value` (one call frame per value); the rarer types are written
/// by out-of-line functions so that frame stays small.
#[inline(always)]
fn write_text(
    out: &mut Vec<u8>,
    b: &[u8],
    // `b` is known to be valid UTF-8 (else it is checked before it is written as text).
    valid: bool,
    c: &ColumnValue,
    opts: &EncodeOptions,
    typed_string: bool,
) -> Result<Wrote, Reject> {
    match c.ty {
        ColType::String => write_text_str(out, b, valid, c)?,
        ColType::Auto if typed_string => write_text_str(out, b, valid, c)?,
        ColType::Auto => {
            // A JSON number whose value overflows a double (`1e400`) is valid JSON text,
            // but receivers reject it or read infinity: `auto` keeps such text a string
            // (issue 9).
            // Most text (names, codes) starts with a letter: one byte rules out all three.
            let may_be_literal = matches!(b.first(), Some(b'-' | b'0'..=b'9' | b't' | b'f'));
            let literal = may_be_literal
                && (b == b"true"
                    || b == b"false"
                    || (json::is_json_number(b)
                        && significant_digits(b) <= 15
                        && json::json_number_is_finite(b)));
            if literal {
                json::extend_short(out, b);
            } else {
                write_text_str(out, b, valid, c)?;
            }
        }
        // The common case: the text is already what writing the integer gives.
        ColType::Int if json::is_canonical_i64(b) => json::extend_short(out, b),
        // Anything else (`+5`, `007`, `$1,200`, bad) is parsed or cleaned out of line.
        ColType::Int => return write_int_text(out, b, c),
        // A finite JSON number is copied as written; parsing it only to check it would
        // cost more than the rest of the field.
        ColType::Float if json::is_json_number(b) && json::json_number_is_finite(b) => {
            json::extend_short(out, b)
        }
        ColType::Float => return write_float_text(out, b, c),
        ColType::Bool => {
            let v = match b {
                b"true" | b"1" => true,
                b"false" | b"0" => false,
                // Any case, trimmed: yes/no, y/n, t/f, on/off, True/FALSE ...
                _ => loose_bool(b).ok_or_else(|| {
                    bad(
                        c,
                        b,
                        "a boolean (true/false, yes/no, y/n, t/f, on/off, 1/0)",
                    )
                })?,
            };
            out.extend_from_slice(if v { b"true" } else { b"false" });
        }
        ColType::Json => write_json_text(out, b, valid, c)?,
        ColType::Timestamp => write_ts_text(out, b, c, opts)?,
    }
    Ok(Wrote::Value)
}

/// Text as a JSON string, checked for UTF-8 first unless known `valid`.
#[inline(always)]
fn write_text_str(out: &mut Vec<u8>, b: &[u8], valid: bool, c: &ColumnValue) -> Result<(), Reject> {
    if !valid {
        utf8(b, &c.name)?;
    }
    json::write_str_bytes(out, b);
    Ok(())
}

/// An `int` column's text that is not already a canonical integer (`+5`, `007`), then
/// cleaned (`$1,200`, ` 42 `), else bad.
#[inline(never)]
fn write_int_text(out: &mut Vec<u8>, b: &[u8], c: &ColumnValue) -> Result<Wrote, Reject> {
    if let Some(v) = std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        json::write_i64(out, v);
        return Ok(Wrote::Value);
    }
    let mut buf = [0u8; MAX_NUMBER];
    let v = clean_number(b, c.clean, c.decimal, &mut buf)
        .and_then(|n| cleaned_int(&buf[..n]))
        .ok_or_else(|| bad(c, b, &not_a_number(c, "an integer")))?;
    json::write_i64(out, v);
    Ok(Wrote::Cleaned)
}

/// A `float` column's text that is not a finite JSON number as written (`1.`), then
/// cleaned (`$1,234.50`, `15%`, `1.234,56`), else bad.
#[inline(never)]
fn write_float_text(out: &mut Vec<u8>, b: &[u8], c: &ColumnValue) -> Result<Wrote, Reject> {
    if let Some(v) = std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        if !v.is_finite() {
            return Err(bad(c, b, "a finite number (JSON has no NaN or Infinity)"));
        }
        if json::is_json_number(b) {
            out.extend_from_slice(b);
        } else {
            json::write_f64(out, v);
        }
        return Ok(Wrote::Value);
    }
    let mut buf = [0u8; MAX_NUMBER];
    let n = clean_number(b, c.clean, c.decimal, &mut buf)
        .ok_or_else(|| bad(c, b, &not_a_number(c, "a number")))?;
    out.extend_from_slice(&buf[..n]);
    Ok(Wrote::Cleaned)
}

/// What a number column's value is not, with the cleaning that was tried.
#[cold]
fn not_a_number(c: &ColumnValue, what: &str) -> String {
    use super::spec::Clean;
    let sep = if c.decimal == b',' { "," } else { "." };
    match c.clean {
        Clean::None => format!("{what} (for currency or percent text, add clean = \"currency\" or \"percent\" to the column)"),
        Clean::Currency => format!("{what}, even cleaned as currency with decimal = \"{sep}\""),
        Clean::Percent => format!("{what}, even cleaned as a percentage with decimal = \"{sep}\""),
    }
}

/// A `json` column's text, checked and copied without its whitespace in one pass.
/// `valid`: `b` is known to be UTF-8.
#[inline(never)]
fn write_json_text(
    out: &mut Vec<u8>,
    b: &[u8],
    valid: bool,
    c: &ColumnValue,
) -> Result<(), Reject> {
    let mark = out.len();
    if !json::write_minified(out, b, valid) {
        return Err(bad(c, b, "valid JSON"));
    }
    // Integers of more than 15 digits inside it go as strings, as top-level ones do
    // (rare: only a value holding a run of 16 digits is written a second time).
    if json::has_long_digit_run(&out[mark..]) {
        let minified = out.split_off(mark);
        json::write_json_exact(out, &minified, true);
    }
    Ok(())
}

#[inline(never)]
fn write_ts_text(
    out: &mut Vec<u8>,
    b: &[u8],
    c: &ColumnValue,
    opts: &EncodeOptions,
) -> Result<(), Reject> {
    if c.ts_format == TsFormat::Rfc3339 {
        if let Some((ms, text)) = timestamp::parse_iso_rewrite(b) {
            // The rewrite is given only for years 0000-9999 (and no leap second).
            match text {
                Some(text) => {
                    check_range(ms, c, opts, || shown(b))?;
                    out.extend_from_slice(&text)
                }
                None => write_ts(out, ms, c, opts, None, || shown(b))?,
            }
            return Ok(());
        }
    }
    let ms = parse_ts_text(b, c)?;
    let unit = match c.ts_format {
        TsFormat::Unix(_) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(|v| unit_of(&c.ts_format, v)),
        _ => None,
    };
    write_ts(out, ms, c, opts, unit, || shown(b))
}

/// Writes a timestamp once it passed its checks: an instant outside years 0000-9999
/// (which has no `YYYY-` form) rejects the row naming the value, wherever it is, and
/// the call's own timestamp is held to the API's range ([`check_range`]). `unit`: how a
/// unix value was read, for the reason.
fn write_ts(
    out: &mut Vec<u8>,
    ms: UnixMillis,
    c: &ColumnValue,
    opts: &EncodeOptions,
    unit: Option<UnixUnit>,
    shown_value: impl FnOnce() -> String,
) -> Result<(), Reject> {
    if !timestamp::in_range(ms) {
        return Err(out_of_range(c, &shown_value(), Some(ms), unit));
    }
    check_range(ms, c, opts, shown_value)?;
    timestamp::write_iso_millis(out, ms).map_err(|e| out_of_range(c, &e.to_string(), None, unit))
}

/// The reject for an instant outside years 0000-9999 (or beyond an i64 of
/// milliseconds): the value, the year it would be, and for a unix value the unit it was
/// read in.
#[cold]
#[inline(never)]
fn out_of_range(
    c: &ColumnValue,
    value: &str,
    ms: Option<UnixMillis>,
    unit: Option<UnixUnit>,
) -> Reject {
    let would = match ms {
        Some(ms) => format!(" (it would be {})", timestamp::iso_millis(ms)),
        None => String::new(),
    };
    let (read, fix) = match (unit, &c.ts_format) {
        (Some(u), TsFormat::Unix(Some(_))) => (
            format!(" read in {} (format = \"{}\")", unit_name(u), unit_format(u)),
            "; if the column holds another unit, set its format to that unit",
        ),
        (Some(u), _) => (
            format!(" read in {} (the unit its magnitude suggests)", unit_name(u)),
            "; name the column's unit with format = \"unix_s\", \"unix_ms\", \"unix_us\" or \"unix_ns\"",
        ),
        (None, _) => (String::new(), ""),
    };
    reject(
        "bad_timestamp",
        format!(
            "column {}: \"{value}\"{read} is outside the years 0000-9999{would}, which no timestamp can be sent as{fix}",
            c.name
        ),
    )
}

fn unit_name(u: UnixUnit) -> &'static str {
    match u {
        UnixUnit::Seconds => "seconds",
        UnixUnit::Millis => "milliseconds",
        UnixUnit::Micros => "microseconds",
        UnixUnit::Nanos => "nanoseconds",
    }
}

fn unit_format(u: UnixUnit) -> &'static str {
    match u {
        UnixUnit::Seconds => "unix_s",
        UnixUnit::Millis => "unix_ms",
        UnixUnit::Micros => "unix_us",
        UnixUnit::Nanos => "unix_ns",
    }
}

fn unit_of(f: &TsFormat, v: i64) -> UnixUnit {
    match f {
        TsFormat::Unix(Some(u)) => *u,
        // By magnitude: seconds until year 5138, then ms, µs, ns.
        _ => match v.unsigned_abs() {
            0..100_000_000_000 => UnixUnit::Seconds,
            100_000_000_000..100_000_000_000_000 => UnixUnit::Millis,
            100_000_000_000_000..100_000_000_000_000_000 => UnixUnit::Micros,
            _ => UnixUnit::Nanos,
        },
    }
}

fn unix_to_ms(v: i64, unit: UnixUnit) -> Option<UnixMillis> {
    match unit {
        UnixUnit::Seconds => v.checked_mul(1000),
        UnixUnit::Millis => Some(v),
        UnixUnit::Micros => Some(v.div_euclid(1000)),
        UnixUnit::Nanos => Some(v.div_euclid(1_000_000)),
    }
}

fn parse_ts_text(b: &[u8], c: &ColumnValue) -> Result<UnixMillis, Reject> {
    let fail = |why: &str| {
        reject(
            "bad_timestamp",
            format!("column {}: \"{}\" {why}", c.name, shown(b)),
        )
    };
    match &c.ts_format {
        TsFormat::Rfc3339 => timestamp::parse_iso(b, c.tz).map_err(fail),
        TsFormat::Date => timestamp::parse_date_only(b, c.tz).map_err(fail),
        TsFormat::Pattern(p, kind) => {
            let s = std::str::from_utf8(b).map_err(|_| fail("is not valid UTF-8"))?;
            timestamp::parse_pattern(s.trim(), p, *kind, c.tz).map_err(fail)
        }
        TsFormat::Unix(_) => {
            let s = std::str::from_utf8(b).map_err(|_| fail("is not a unix timestamp"))?;
            let v: i64 = s
                .trim()
                .parse()
                .map_err(|_| fail("is not a unix timestamp (an integer)"))?;
            let unit = unit_of(&c.ts_format, v);
            unix_to_ms(v, unit).ok_or_else(|| out_of_range(c, &shown(b), None, Some(unit)))
        }
    }
}

fn check_range(
    ms: UnixMillis,
    c: &ColumnValue,
    opts: &EncodeOptions,
    shown_value: impl FnOnce() -> String,
) -> Result<(), Reject> {
    if !c.event_time {
        return Ok(());
    }
    if ms < 0 {
        return Err(reject(
            "bad_timestamp",
            format!(
                "column {}: \"{}\" is before 1970-01-01, which the API does not accept",
                c.name,
                shown_value()
            ),
        ));
    }
    if ms > opts.latest_ms {
        return Err(reject(
            "bad_timestamp",
            format!(
                "column {}: \"{}\" is further in the future than the mapping allows (defaults.max_future_hours); check the unit or the time zone",
                c.name,
                shown_value()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::compile::compile;
    use crate::map::spec;
    use crate::source::{ndjson::LATER_KEYS, ColumnRef, NamesSchema};
    use proptest::prelude::*;

    /// A row of texts: `None` is a missing field, `"<null>"` a null, text starting
    /// with `{` a JSON object (as NDJSON hands nested objects over).
    struct TestRow(Vec<Option<String>>);

    impl Row for TestRow {
        fn field(&self, col: &ColumnRef) -> Field<'_> {
            let ColumnRef::Index(i) = col else {
                return Field::Missing;
            };
            match self.0.get(*i).and_then(|v| v.as_deref()) {
                None => Field::Missing,
                Some("<null>") => Field::Null,
                Some(s) if s.starts_with('{') => Field::Json(s.as_bytes()),
                Some(s) => Field::Text(s.as_bytes()),
            }
        }
        fn write_record_json(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"{}");
        }
        fn source_problem(&self) -> Option<String> {
            None
        }
        fn line(&self) -> u64 {
            0
        }
    }

    const COLUMNS: [&str; 6] = ["a", "b", "c", "d", "e", LATER_KEYS];

    /// Properties with omitted, null and empty-string values, constants, a template and
    /// objects nested three deep, some of which come out `{}`.
    const MAPPING: &str = r#"
[columns]
a = { empty = "omit" }
b = { empty = "null" }
c = { empty = "empty", type = "string" }
d = { type = "int" }

[context]
"x.y" = "a"
"x.z.w" = "b"

[[call]]
type = "track"
user_id = "e"
event = { const = "Ev" }
properties = { a = "a", "o.b" = "b", "o.p.q" = "a", "o.p.r" = "d", "o.s" = "c", k = { const = 1 }, "t.u" = { template = "{a}-{b}" }, "v.w.x" = "a", z = "d" }
context = { "device.token" = "a", "device.type" = "d" }
"#;

    fn opts() -> EncodeOptions {
        EncodeOptions {
            max_call_bytes: 1 << 20,
            latest_ms: i64::MAX,
            sent_at: false,
            sample: 1,
        }
    }

    /// The object `write_object` writes (after a prefix it must leave alone), or the
    /// reject's code and detail.
    fn written(nodes: &[OutNode], row: &TestRow) -> Result<Vec<u8>, String> {
        let mut out = b"prefix".to_vec();
        write_object::<_, true>(
            &mut out,
            row,
            nodes,
            &opts(),
            &mut RowFixes::default(),
            &mut Judge::batch(),
        )
        .map_err(|r| format!("{}: {}", r.code, r.detail))?;
        assert!(out.starts_with(b"prefix"));
        Ok(out.split_off(6))
    }

    /// No object nested in `v` is empty: `{}` says nothing and is dropped with its key.
    fn no_empty_member(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m.values().all(|c| {
                !matches!(c, serde_json::Value::Object(o) if o.is_empty()) && no_empty_member(c)
            }),
            serde_json::Value::Array(a) => a.iter().all(no_empty_member),
            _ => true,
        }
    }

    fn value() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            Just(Some("<null>".to_string())),
            Just(Some("7".to_string())),
            Just(Some("x\"y".to_string())),
            Just(Some("1.5".to_string())),
        ]
    }

    fn later_keys() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("{}".to_string())),
            Just(Some("{\"m\":1}".to_string())),
            Just(Some("{\"m\":{},\"n\":[]}".to_string())),
        ]
    }

    proptest! {
        /// For every mix of missing, null, empty and present values, an object is one
        /// JSON object with no empty object in it, or a reject naming the column.
        #[test]
        fn objects_are_json_without_empty_members(
            vals in proptest::collection::vec(value(), 5),
            later in later_keys(),
        ) {
            let spec = spec::parse(MAPPING).expect("test mapping parses");
            let schema = NamesSchema::of(&COLUMNS);
            let m = compile(&spec, &schema, "test").expect("test mapping compiles");
            let mut fields = vals;
            fields.push(later);
            let row = TestRow(fields);
            let call = &m.calls[0];
            // "rest": every column one key, LATER_KEYS inline.
            let rest = spec::parse("[[call]]\ntype = \"identify\"\nuser_id = \"e\"\ntraits = \"rest\"\n")
                .expect("rest mapping parses");
            let r = compile(&rest, &schema, "test").expect("rest mapping compiles");
            for nodes in [&call.payload, &call.context, &m.batch_context, &r.calls[0].payload] {
                match written(nodes, &row) {
                    Ok(out) => {
                        let mut v: serde_json::Value = serde_json::from_slice(&out)
                            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
                        prop_assert!(v.is_object());
                        // LATER_KEYS members ("m", "n") are the source's own JSON, copied
                        // as they are, `{}` included.
                        if let Some(o) = v.as_object_mut() {
                            o.remove("m");
                            o.remove("n");
                        }
                        prop_assert!(no_empty_member(&v), "{}", v);
                    }
                    Err(e) => prop_assert!(e.starts_with("bad_value: column d:"), "{}", e),
                }
            }
        }
    }

    /// A timestamp column of every format, as traits of identify (no range check there).
    const TS_MAPPING: &str = r#"
[columns]
a = { type = "timestamp", format = "unix" }
b = { type = "timestamp", format = "unix_s" }
c = { type = "timestamp", format = "unix_ms" }
d = { type = "timestamp", format = "unix_us" }
e = { type = "timestamp", format = "rfc3339" }

[[call]]
type = "identify"
user_id = { const = "u" }
traits = { a = "a", b = "b", c = "c", d = "d", e = "e" }
"#;

    /// Text of an RFC 3339-ish timestamp over the whole range of its fields: every year
    /// 0000-9999, second 60 included, offsets up to ±23:59, fractions of any length.
    fn iso_text() -> impl Strategy<Value = String> {
        (
            0i64..=9999,
            1u32..=12,
            1u32..=31,
            0u32..=23,
            0u32..=59,
            0u32..=60,
            proptest::option::of("[0-9]{1,12}"),
            prop_oneof![
                Just("Z".to_string()),
                (any::<bool>(), 0u32..=23, 0u32..=59).prop_map(|(neg, h, m)| format!(
                    "{}{h:02}:{m:02}",
                    if neg { '-' } else { '+' }
                ))
            ],
        )
            .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
                let frac = frac.map_or(String::new(), |f| format!(".{f}"));
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
            })
    }

    proptest! {
        /// Over the full range of inputs (any i64 in any unix unit, any RFC 3339 text
        /// with any year, second and offset): a timestamp is written with a four-digit
        /// year, 0000 to 9999, that reads back as an RFC 3339 date-time, or the row is
        /// rejected as a bad timestamp. Never a wrapped or garbled year.
        #[test]
        fn a_timestamp_is_written_with_a_year_in_0000_to_9999_or_rejected(
            col in 0usize..5,
            unix in prop_oneof![
                any::<i64>(),
                -100_000_000_000_000i64..100_000_000_000_000,
                (timestamp::MIN_MS - 10_000_000)..(timestamp::MAX_MS + 10_000_000),
            ],
            iso in iso_text(),
        ) {
            let spec = spec::parse(TS_MAPPING).expect("test mapping parses");
            let schema = NamesSchema::of(&COLUMNS);
            let m = compile(&spec, &schema, "test").expect("test mapping compiles");
            let mut fields = vec![None; 6];
            fields[col] = Some(if col == 4 { iso.clone() } else { unix.to_string() });
            let row = TestRow(fields);
            match written(&m.calls[0].payload, &row) {
                Ok(out) => {
                    let v: serde_json::Value = serde_json::from_slice(&out)
                        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    let name = COLUMNS[col];
                    let t = v[name].as_str().ok_or_else(|| TestCaseError::fail(format!("{v}")))?;
                    prop_assert_eq!(t.len(), 24, "{}", t);
                    prop_assert!(t.as_bytes()[..4].iter().all(u8::is_ascii_digit), "{}", t);
                    prop_assert!(timestamp::is_rfc3339(t.as_bytes()), "{}", t);
                    let ms = timestamp::parse_rfc3339(t.as_bytes()).unwrap();
                    prop_assert!(timestamp::in_range(ms), "{}", t);
                }
                Err(e) => prop_assert!(e.starts_with("bad_timestamp: "), "{}", e),
            }
        }
    }

    #[test]
    fn empty_objects_are_dropped_with_their_key_and_comma() {
        let spec = spec::parse(MAPPING).expect("test mapping parses");
        let schema = NamesSchema::of(&COLUMNS);
        let m = compile(&spec, &schema, "test").expect("test mapping compiles");
        let row = TestRow(vec![None, None, None, None, None, None]);
        let mut out = Vec::new();
        write_object::<_, true>(
            &mut out,
            &row,
            &m.calls[0].payload,
            &opts(),
            &mut RowFixes::default(),
            &mut Judge::batch(),
        )
        .expect("writes");
        // Missing values are dropped whatever their empty policy, so `o` (three deep)
        // and `v` come out `{}` and go with their keys; the constant and template stay.
        assert_eq!(out, br#"{"k":1,"t":{"u":"-"}}"#);
        let row = TestRow(vec![
            Some("q".into()),
            Some(String::new()),
            None,
            Some("x".into()),
            None,
            None,
        ]);
        let mut out = Vec::new();
        let r = write_object::<_, true>(
            &mut out,
            &row,
            &m.calls[0].payload,
            &opts(),
            &mut RowFixes::default(),
            &mut Judge::batch(),
        );
        assert_eq!(
            r.map_err(|r| r.detail).unwrap_err(),
            "column d: \"x\" is not an integer (for currency or percent text, add clean = \"currency\" or \"percent\" to the column)"
        );
        let row = TestRow(vec![
            Some("q".into()),
            Some(String::new()),
            None,
            None,
            None,
            None,
        ]);
        let mut out = Vec::new();
        write_object::<_, true>(
            &mut out,
            &row,
            &m.calls[0].payload,
            &opts(),
            &mut RowFixes::default(),
            &mut Judge::batch(),
        )
        .expect("writes");
        assert_eq!(
            out,
            br#"{"a":"q","k":1,"o":{"b":null,"p":{"q":"q"}},"t":{"u":"q-"},"v":{"w":{"x":"q"}}}"#
        );
    }

    #[test]
    fn objects_nest_to_any_depth() {
        let schema = NamesSchema::of(&COLUMNS);
        for depth in [1, 64, 65, 200] {
            let path = vec!["n"; depth].join(".");
            let text = format!(
                "[[call]]\ntype = \"identify\"\nuser_id = \"e\"\ntraits = {{ \"{path}\" = \"a\" }}\n"
            );
            let spec = spec::parse(&text).expect("deep mapping parses");
            let m = compile(&spec, &schema, "test").expect("deep mapping compiles");
            let row = TestRow(vec![Some("v".into()), None, None, None, None, None]);
            let want = "{\"n\":".repeat(depth) + "\"v\"" + &"}".repeat(depth);
            assert_eq!(written(&m.calls[0].payload, &row), Ok(want.into_bytes()));
            // All empty: every level goes, with its key.
            let row = TestRow(vec![None, None, None, None, None, None]);
            assert_eq!(written(&m.calls[0].payload, &row), Ok(b"{}".to_vec()));
        }
    }
}
