//! The packing stage: mapped chunks in, requests out.
//!
//! Mapped chunks arrive from the parallel mappers in any order; this stage restores input
//! order by sequence number, keys calls by their batch-level `context`/`integrations`
//! ([`KeyedPacker`], at most [`MAX_OPEN_BODIES`] bodies open at once), gives each alias
//! call a request of its own to `/v1/alias` (the batch schema does not list alias), and
//! hands out [`Request`]s in the order they close. Reject lines ride along with the first
//! request whose resume position is past their row, so the collector writes them in
//! acknowledgement order, never ahead of the checkpoint.
//!
//! The door: [`pack`] takes [`Mapped`] chunks and gives [`Request`]s and, at the end,
//! [`PackTotals`]. A run sends the requests; `validate` only counts them, so its figures
//! are the run's by construction.
//!
//! Checkpoint rule: a request's `resume` is the start of the oldest row that still has a
//! call not yet handed out: the minimum over the open bodies' first calls and over the
//! bodies closed in the same step but queued after it, or, when none is open, the row
//! being packed (or the end of the input). Requests complete in `seq` order for the
//! checkpoint, so once a request and all before it are acknowledged, every call before its
//! `resume` has been delivered. The positions only grow: new bodies start at newer rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::{resume_points, Body, KeyedPacker, Packed, Spares, TooLarge};
use crate::config::Limits;
use crate::map::encode::{write_call_reject, EmitKind, Mapped, Reject};
use crate::map::fixes::ValueFixes;
use crate::map::spec::CallKind;
use crate::source::Position;

/// Where a call came from, so a call the server refuses can be reported by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOrigin {
    pub input: u32,
    /// 0-based data row.
    pub row: u64,
}

/// An alias call by where it comes from: its row, and which of the row's alias calls it
/// is (a mapping may emit more than one). A checkpoint lists the aliases delivered past
/// its resume position, so a resume does not send them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AliasAt {
    pub input: u32,
    pub row: u64,
    /// 0 for the row's first alias call.
    pub nth: u32,
}

impl AliasAt {
    /// True when a resume at `resume` reads this call's row again.
    pub fn is_at_or_after(&self, resume: Position) -> bool {
        (self.input, self.row) >= (resume.input, resume.row)
    }
}

/// One request to send (or, with no body, a marker that only moves the checkpoint).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Order of creation; the checkpoint advances over a contiguous prefix of these.
    pub seq: u64,
    pub path: &'static str,
    pub body: Option<Arc<Vec<u8>>>,
    pub calls: u32,
    /// End offset of each call inside `body` (calls are separated by one comma), so a
    /// refused request can be split without re-parsing it.
    pub call_ends: Vec<u32>,
    /// The row each call came from, in the same order.
    pub origins: Vec<CallOrigin>,
    /// Where to resume once this and every earlier request is acknowledged.
    pub resume: Position,
    /// Reject lines of rows before `resume` not yet written. The collector writes them
    /// when this request joins the acknowledged prefix, so the rejects file never runs
    /// ahead of the checkpoint.
    pub rejects: Vec<u8>,
    /// For a request to `/v1/alias`: which call it carries. Its `resume` may lie before
    /// its own row (a batch body holding older rows is still open), so once delivered
    /// the checkpoint lists it until the watermark passes its row.
    pub alias: Option<AliasAt>,
}

/// What the packing stage counted.
#[derive(Debug, Default)]
pub struct PackTotals {
    pub rows: u64,
    pub rows_rejected: u64,
    /// Rows read but left out by `--sample`.
    pub rows_skipped: u64,
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    pub calls: u64,
    /// Indexed by `CallKind as usize`: an array add per call, not a map search.
    pub calls_by_type: [u64; CallKind::ALL.len()],
    /// Alias calls of rows read again on resume that an earlier run delivered (the
    /// checkpoint lists them): not sent again, and not counted in `calls`.
    pub calls_already_delivered: u64,
    /// A chunk that could not be read: packing stopped before it.
    pub failed: Option<String>,
    /// Values cleaned, dropped or kept as text, per column, with examples.
    pub fixes: BTreeMap<String, ValueFixes>,
    /// Per input index: which of its registered columns had a value in some row read
    /// (by [`crate::source::ColumnRef::Path`] index). CSV inputs have none.
    pub present: BTreeMap<u32, Vec<bool>>,
    /// Packing stopped because the input looked wrong ([`StopRules`]).
    pub stopped: Option<Stopped>,
}

/// When the packing stage stops a run early: the input is clearly not what the mapping
/// or `--format` expects, or too much of it is rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopRules {
    /// If this many first rows (or all rows of a smaller input) are all rejected for
    /// the same reason, stop (0: never).
    pub same_reason_rows: u64,
    /// `--max-reject-rate`: stop once more than this share of the rows read (at least
    /// `same_reason_rows` of them, or at the end) is rejected.
    pub max_reject_rate: Option<f64>,
}

impl Default for StopRules {
    fn default() -> Self {
        StopRules {
            same_reason_rows: EARLY_STOP_ROWS,
            max_reject_rate: None,
        }
    }
}

/// Rows looked at before a run is stopped for rejecting them all for one reason.
pub const EARLY_STOP_ROWS: u64 = 1000;
/// The fewest rows of a whole (smaller) input that, all rejected for one reason, stop
/// the run as wrong.
pub const EARLY_STOP_MIN_ROWS: u64 = 10;

/// Why the packing stage stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    /// Every one of the first `rows` rows was rejected with `reason`.
    SameReason { rows: u64, reason: &'static str },
    /// `rejected` of `rows` rows were rejected, more than `limit` allows.
    RejectRate {
        rows: u64,
        rejected: u64,
        limit: f64,
    },
}

impl Stopped {
    /// The reasons that say the input is not in the format read.
    fn format_reason(reason: &str) -> bool {
        matches!(
            reason,
            "bad_json" | "field_count" | "invalid_utf8" | "record_too_large" | "unclosed_quote"
        )
    }

    /// What happened and what to do, for the user.
    pub fn message(&self) -> String {
        match self {
            Stopped::SameReason { rows, reason } => {
                let what = if Self::format_reason(reason) {
                    "the input is probably not in the format it is read as: check --format (and --delimiter for CSV)"
                } else {
                    "the mapping probably does not fit the input: check the column names, ids and types in the mapping (cdp-backfill validate shows the first rejects)"
                };
                format!(
                    "stopped early: all of the first {rows} rows were rejected as {reason}, so {what}. The rejects file has their lines; nothing more was read"
                )
            }
            Stopped::RejectRate {
                rows,
                rejected,
                limit,
            } => format!(
                "stopped: {rejected} of {rows} rows read were rejected ({:.1}%), more than --max-reject-rate {:.1}% allows; see the rejects file",
                *rejected as f64 * 100.0 / (*rows).max(1) as f64,
                limit * 100.0
            ),
        }
    }
}

impl PackTotals {
    /// Adds one mapped chunk's value fixes and present columns (after its rows).
    fn add_chunk(&mut self, m: &Mapped) {
        if let Some(names) = &m.fix_columns {
            let source = m.input.as_deref().map_or("", |i| i.display.as_str());
            for (slot, f) in m.fixes.iter().enumerate() {
                if f.is_empty() {
                    continue;
                }
                let Some(name) = names.get(slot) else {
                    continue;
                };
                match self.fixes.get_mut(name) {
                    Some(v) => v.add(f, source),
                    None => {
                        let mut v = ValueFixes::default();
                        v.add(f, source);
                        self.fixes.insert(name.clone(), v);
                    }
                }
            }
        }
        if let Some(p) = &m.present {
            let v = self.present.entry(m.end.input).or_default();
            if v.len() < p.len() {
                v.resize(p.len(), false);
            }
            for (a, b) in v.iter_mut().zip(p) {
                *a |= *b;
            }
        }
    }

    /// Whether the rows counted so far call for a stop (`at_end`: the input is done).
    fn should_stop(&self, rules: &StopRules, at_end: bool) -> Option<Stopped> {
        // A smaller input counts from EARLY_STOP_MIN_ROWS rows: one or two bad rows are
        // a data problem (a huge record, a missing id), not a wrong format or mapping.
        let enough = self.rows >= rules.same_reason_rows
            || (at_end && self.rows >= EARLY_STOP_MIN_ROWS.min(rules.same_reason_rows));
        if rules.same_reason_rows > 0
            && enough
            && self.calls == 0
            && self.rows_rejected == self.rows
            && self.rejected_by_reason.len() == 1
        {
            let reason = self.rejected_by_reason.keys().next().copied().unwrap_or("");
            return Some(Stopped::SameReason {
                rows: self.rows,
                reason,
            });
        }
        let limit = rules.max_reject_rate?;
        let enough = self.rows >= rules.same_reason_rows.max(1) || (at_end && self.rows > 0);
        (enough && self.rows_rejected as f64 > limit * self.rows as f64).then_some(
            Stopped::RejectRate {
                rows: self.rows,
                rejected: self.rows_rejected,
                limit,
            },
        )
    }
}

/// Reject lines waiting for a request to carry them are flushed as a marker beyond this.
const MAX_PENDING_REJECT_BYTES: usize = 1 << 20;
/// Most request bodies open at once, one per distinct batch-level `context` /
/// `integrations` value. Bounds memory (this many bodies of up to max-request bytes).
pub const MAX_OPEN_BODIES: usize = 16;
/// An open body whose first call is this many calls older than the newest is closed even
/// though not full, so a rare context value cannot hold the checkpoint back for long.
const MAX_OPEN_LAG_CALLS: u64 = 50_000;

/// What the packer keeps of each call in an open body.
#[derive(Debug, Clone, Copy)]
struct CallTag {
    origin: CallOrigin,
    /// Where the call's row starts: a checkpoint may not pass it while the call is unsent.
    at: Position,
    /// The call's number in input order (for [`MAX_OPEN_LAG_CALLS`]).
    n: u64,
}

/// Reject lines not yet handed to a request, each with the position of its row, so a
/// request takes exactly the lines of rows before its resume position.
#[derive(Default)]
struct PendingRejects {
    bytes: Vec<u8>,
    /// (row position, end of its line in `bytes` + `base`), in row order.
    rows: std::collections::VecDeque<(Position, usize)>,
    /// Bytes already taken, so the ends above stay valid without rewriting them.
    base: usize,
}

impl PendingRejects {
    fn push(&mut self, at: Position, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.rows.push_back((at, self.base + self.bytes.len()));
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Takes the lines of rows before `resume`.
    fn take_before(&mut self, resume: Position) -> Vec<u8> {
        let mut cut = self.base;
        while let Some(&(at, end)) = self.rows.front() {
            if at >= resume {
                break;
            }
            cut = end;
            self.rows.pop_front();
        }
        let n = cut - self.base;
        self.base = cut;
        if n == self.bytes.len() {
            // The next lines go into a buffer of the same size: growing a fresh one by
            // doubling (reject lines can be tens of kB) copied more than it wrote.
            let cap = self.bytes.capacity();
            return std::mem::replace(&mut self.bytes, Vec::with_capacity(cap));
        }
        let rest = self.bytes.split_off(n);
        std::mem::replace(&mut self.bytes, rest)
    }
}

/// Restores input order and packs calls into requests. Reject lines ride along with the
/// first request whose resume position is past their row, so that the collector writes
/// them in acknowledgement order and never ahead of the checkpoint.
///
/// Calls whose rows carry different batch-level context go to different bodies
/// ([`KeyedPacker`]); alias calls, which the batch schema does not list, each become a
/// request of their own to `/v1/alias`.
///
/// `tap` sees each chunk, in input order, before it is packed (`validate` tallies its
/// calls there). Resume positions follow the checkpoint rule of the module doc. Alias
/// calls listed in `delivered` (an earlier run delivered them past its checkpoint) are
/// neither sent nor counted again.
#[allow(clippy::too_many_arguments)] // the stage's channels, limits, resume state, stop rules and tap
pub fn pack(
    start: Position,
    mapped: Receiver<Mapped>,
    free_mapped: Sender<Mapped>,
    requests: Sender<Request>,
    limits: Limits,
    spares: Spares,
    delivered: &HashSet<AliasAt>,
    rules: StopRules,
    tap: &mut dyn FnMut(&Mapped),
) -> PackTotals {
    let mut packer: KeyedPacker<CallTag> =
        KeyedPacker::new(limits, MAX_OPEN_BODIES).recycling(spares);
    let mut closed: Vec<Packed<CallTag>> = Vec::new();
    let mut totals = PackTotals::default();
    let mut pending: HashMap<u64, Mapped> = HashMap::new();
    let mut next = 0u64;
    let mut work_seq = 0u64;
    // Where reading started: the last request's resume when no row is read (a resume
    // that reads nothing, such as a `--limit` already reached, must not move the
    // checkpoint back to the first row).
    let mut end = start;
    let mut rejects = PendingRejects::default();
    // The current row's batch-level context bytes (the packer's key) and its row.
    let mut key: Vec<u8> = Vec::new();
    let mut key_row: Option<(u64, u32)> = None;
    let mut call_no = 0u64;
    // The row of the last alias call, and how many alias calls that row had so far.
    let mut alias_row: Option<(u64, u32)> = None;
    let mut alias_nth = 0u32;
    let mut gone = false;
    let mut send = |w: Request| {
        if !gone && requests.send(w).is_err() {
            gone = true;
        }
    };
    let mut make = |path: &'static str,
                    body: Option<Body>,
                    origins: Vec<CallOrigin>,
                    resume: Position,
                    rejects: Vec<u8>,
                    alias: Option<AliasAt>| {
        let (calls, call_ends, body) = match body {
            Some(b) => (b.calls, b.call_ends, Some(Arc::new(b.bytes))),
            None => (0, Vec::new(), None),
        };
        let w = Request {
            seq: work_seq,
            path,
            calls,
            call_ends,
            body,
            origins,
            resume,
            rejects,
            alias,
        };
        work_seq += 1;
        w
    };
    'chunks: for m in mapped {
        pending.insert(m.seq, m);
        while let Some(mut m) = pending.remove(&next) {
            if let Some(e) = m.failed.take() {
                // Nothing from here on is packed, so no checkpoint passes this chunk.
                totals.failed = Some(e);
                break 'chunks;
            }
            next += 1;
            tap(&m);
            let input = m.end.input;
            let mut off = 0usize;
            let mut rej_off = 0usize;
            for e in &m.emits {
                let len = e.len as usize;
                let at = m.row_position(e.row);
                match e.kind {
                    EmitKind::Context => {
                        key.clear();
                        key.extend_from_slice(&m.calls[off..off + len]);
                        off += len;
                        key_row = Some((m.seq, e.row));
                    }
                    EmitKind::Call(kind) => {
                        let bytes = &m.calls[off..off + len];
                        off += len;
                        if key_row != Some((m.seq, e.row)) {
                            key.clear();
                        }
                        let alias = (kind == CallKind::Alias).then(|| {
                            if alias_row != Some((m.seq, e.row)) {
                                alias_row = Some((m.seq, e.row));
                                alias_nth = 0;
                            }
                            alias_nth += 1;
                            AliasAt {
                                input,
                                row: at.row,
                                nth: alias_nth - 1,
                            }
                        });
                        if alias.is_some_and(|a| delivered.contains(&a)) {
                            // Delivered by the run that wrote the checkpoint, past its
                            // resume position: sending it again would count it twice.
                            totals.calls_already_delivered += 1;
                            continue;
                        }
                        totals.calls_by_type[kind as usize] += 1;
                        totals.calls += 1;
                        call_no += 1;
                        let origin = CallOrigin { input, row: at.row };
                        let tag = CallTag {
                            origin,
                            at,
                            n: call_no,
                        };
                        let result = if kind == CallKind::Alias {
                            alias_body(bytes, &key, limits.max_call_bytes).map(|body| {
                                // A request of its own; the checkpoint may not pass its
                                // row (later calls of the row) nor any open body.
                                let resume = packer.oldest_open().map_or(at, |t| t.at.min(at));
                                let calls = vec![body.len() as u32];
                                let b = Body {
                                    bytes: body,
                                    calls: 1,
                                    call_ends: calls,
                                };
                                let w = make(
                                    "/v1/alias",
                                    Some(b),
                                    vec![origin],
                                    resume,
                                    rejects.take_before(resume),
                                    alias,
                                );
                                send(w);
                            })
                        } else {
                            packer.push(&key, bytes, tag, &mut closed)
                        };
                        if let Err(too_large) = result {
                            // The mapper refuses calls over the limit first; this is a
                            // second line of defence (context bytes count here), never
                            // a silent drop.
                            let r = Reject {
                                code: "call_too_large",
                                detail: too_large.to_string(),
                            };
                            let mut line = Vec::new();
                            write_call_reject(&mut line, m.input.as_deref(), at.row, bytes, &r);
                            rejects.push(at, &line);
                            totals.rows_rejected += 1;
                            *totals
                                .rejected_by_reason
                                .entry("call_too_large")
                                .or_default() += 1;
                        }
                        // A rare context value must not pin the checkpoint for long.
                        while packer
                            .oldest_open()
                            .is_some_and(|t| t.n + MAX_OPEN_LAG_CALLS < call_no)
                        {
                            closed.extend(packer.finish_one());
                        }
                        for w in hand_out(&mut closed, &packer, at, &mut rejects, &mut make) {
                            send(w);
                        }
                    }
                    EmitKind::Reject(code) => {
                        rejects.push(at, &m.rejects[rej_off..rej_off + len]);
                        rej_off += len;
                        totals.rows_rejected += 1;
                        *totals.rejected_by_reason.entry(code).or_default() += 1;
                        if rejects.len() > MAX_PENDING_REJECT_BYTES {
                            // A marker may not move past calls still open: close the
                            // bodies that hold rows up to this one first.
                            while packer.oldest_open().is_some_and(|t| t.at <= at) {
                                closed.extend(packer.finish_one());
                            }
                            let next_row = Position {
                                row: at.row + 1,
                                offset: m
                                    .row_offsets
                                    .get(e.row as usize + 1)
                                    .copied()
                                    .unwrap_or(m.end.offset),
                                ..at
                            };
                            for w in
                                hand_out(&mut closed, &packer, next_row, &mut rejects, &mut make)
                            {
                                send(w);
                            }
                            let resume = packer.oldest_open().map_or(next_row, |t| t.at);
                            let w = make(
                                "/v1/batch",
                                None,
                                Vec::new(),
                                resume,
                                rejects.take_before(resume),
                                None,
                            );
                            send(w);
                        }
                    }
                }
            }
            totals.rows += m.rows as u64;
            totals.rows_skipped += m.skipped as u64;
            totals.add_chunk(&m);
            end = m.end;
            let _ = free_mapped.send(m);
            // Checked between chunks: the rows of this one are all packed, so the
            // reject lines so far go out with the last marker below.
            totals.stopped = totals.should_stop(&rules, false);
            if totals.stopped.is_some() {
                break 'chunks;
            }
        }
    }
    if totals.stopped.is_none() && totals.failed.is_none() {
        totals.stopped = totals.should_stop(&rules, true);
    }
    while let Some(p) = packer.finish_one() {
        closed.push(p);
    }
    let mut last = hand_out(&mut closed, &packer, end, &mut rejects, &mut make);
    match last.last_mut() {
        Some(w) => {
            w.resume = end;
            w.rejects.extend_from_slice(&rejects.take_before(Position {
                input: u32::MAX,
                ..end
            }));
        }
        None => last.push(make(
            "/v1/batch",
            None,
            Vec::new(),
            end,
            rejects.take_before(Position {
                input: u32::MAX,
                ..end
            }),
            None,
        )),
    }
    for w in last {
        send(w);
    }
    totals
}

/// Turns closed bodies into requests, oldest first. Each one's resume is the minimum of
/// the oldest open call and the first calls of the bodies queued after it in this step
/// (`fallback` when none), and it carries the reject lines of rows before that.
fn hand_out(
    closed: &mut Vec<Packed<CallTag>>,
    packer: &KeyedPacker<CallTag>,
    fallback: Position,
    rejects: &mut PendingRejects,
    make: &mut impl FnMut(
        &'static str,
        Option<crate::pack::Body>,
        Vec<CallOrigin>,
        Position,
        Vec<u8>,
        Option<AliasAt>,
    ) -> Request,
) -> Vec<Request> {
    if closed.is_empty() {
        return Vec::new();
    }
    let open_min = packer.oldest_open().map_or(fallback, |t| t.at);
    let resumes = resume_points(closed, open_min, |t| t.at);
    closed
        .drain(..)
        .zip(resumes)
        .map(|(p, resume)| {
            let origins = p.tags.iter().map(|t| t.origin).collect();
            make(
                "/v1/batch",
                Some(p.body),
                origins,
                resume,
                rejects.take_before(resume),
                None,
            )
        })
        .collect()
}

/// The body of an alias request: the call itself, with the row's batch-level context
/// and integrations (if any) as its own top-level keys, since an alias is not sent in a
/// batch. Where the call has a `context` of its own, the two are merged into one (the
/// call's values win, objects merged member by member), as the API merges a batch's
/// context into each of its calls: a body never holds one key twice. The call's last
/// member (the sentAt placeholder, when there is one) stays last.
pub fn alias_body(call: &[u8], key: &[u8], max_call: usize) -> Result<Vec<u8>, TooLarge> {
    let mut body = Vec::with_capacity(call.len() + key.len());
    if key.is_empty() || call.len() < 2 {
        body.extend_from_slice(call);
    } else {
        let mut batch = Vec::with_capacity(key.len() + 1);
        batch.push(b'{');
        batch.extend_from_slice(&key[1..]);
        batch.push(b'}');
        match (members(&batch), members(call)) {
            (Some(batch), Some(own)) => {
                body.push(b'{');
                let mut first = true;
                // The batch's keys the call does not have, first (as before).
                for (k, v) in &batch {
                    if !own.iter().any(|(o, _)| o == k) {
                        put_member(&mut body, &mut first, k, v.get().as_bytes());
                    }
                }
                for (k, v) in &own {
                    match batch.iter().find(|(b, _)| b == k) {
                        Some((_, base)) => {
                            let merged = merge(base.get().as_bytes(), v.get().as_bytes());
                            put_member(&mut body, &mut first, k, &merged);
                        }
                        None => put_member(&mut body, &mut first, k, v.get().as_bytes()),
                    }
                }
                body.push(b'}');
            }
            // Both are the encoder's own JSON objects, so they always parse; were one
            // not to, the old layout still sends everything.
            _ => {
                body.push(b'{');
                body.extend_from_slice(&key[1..]);
                body.push(b',');
                body.extend_from_slice(&call[1..]);
            }
        }
    }
    if body.len() > max_call {
        return Err(TooLarge {
            len: body.len(),
            limit: max_call,
        });
    }
    Ok(body)
}

type Members<'a> = Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>;

/// An object's members in order, their values as written; `None` for anything else.
fn members(json: &[u8]) -> Option<Members<'_>> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    use std::borrow::Cow;
    struct Key<'a>(Cow<'a, str>);
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct K;
            impl<'de> Visitor<'de> for K {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(K)
        }
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
            let mut out = Vec::new();
            while let Some(Key(k)) = map.next_key()? {
                out.push((k, map.next_value()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let m = (&mut de).deserialize_map(V).ok()?;
    de.end().ok()?;
    Some(m)
}

/// `base` and `over` merged: objects member by member (recursively), `over` winning;
/// anything else is `over`.
fn merge(base: &[u8], over: &[u8]) -> Vec<u8> {
    let (Some(b), Some(o)) = (members(base), members(over)) else {
        return over.to_vec();
    };
    let mut out = Vec::with_capacity(base.len() + over.len());
    out.push(b'{');
    let mut first = true;
    for (k, v) in &b {
        match o.iter().find(|(ok, _)| ok == k) {
            Some((_, ov)) => {
                let m = merge(v.get().as_bytes(), ov.get().as_bytes());
                put_member(&mut out, &mut first, k, &m);
            }
            None => put_member(&mut out, &mut first, k, v.get().as_bytes()),
        }
    }
    for (k, v) in &o {
        if !b.iter().any(|(bk, _)| bk == k) {
            put_member(&mut out, &mut first, k, v.get().as_bytes());
        }
    }
    out.push(b'}');
    out
}

/// `,"key":value` (no comma before the first).
fn put_member(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &[u8]) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    crate::json::write_str(out, key);
    out.push(b':');
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACEHOLDER: &str = r#","sentAt":"0000-00-00T00:00:00.000Z""#;

    #[test]
    fn an_alias_gets_one_context_merged_from_the_batch_and_its_own() {
        let call = format!(
            r#"{{"type":"alias","messageId":"m","userId":"u","previousId":"p","context":{{"ip":"1.1.1.1","device":{{"id":"d1"}}}}{PLACEHOLDER}}}"#
        );
        let key = br#","context":{"ip":"9.9.9.9","locale":"fr-FR","device":{"id":"d0","model":"X"}},"integrations":{"All":true}"#;
        let body = alias_body(call.as_bytes(), key, 32_000).unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"integrations":{{"All":true}},"type":"alias","messageId":"m","userId":"u","previousId":"p","context":{{"ip":"1.1.1.1","locale":"fr-FR","device":{{"id":"d1","model":"X"}}}}{PLACEHOLDER}}}"#
            )
        );
        // The sentAt placeholder stays the call's last member, found by its end.
        assert!(text.ends_with(&format!("{PLACEHOLDER}}}")));
        // Without a context of its own, the batch's is the call's.
        let bare = br#"{"type":"alias","userId":"u","previousId":"p"}"#;
        let body = alias_body(bare, key, 32_000).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"context":{"ip":"9.9.9.9","locale":"fr-FR","device":{"id":"d0","model":"X"}},"integrations":{"All":true},"type":"alias","userId":"u","previousId":"p"}"#
        );
        // No batch key: the call as it is; and the limit counts the merged body.
        assert_eq!(alias_body(bare, b"", 32_000).unwrap(), bare.to_vec());
        assert!(alias_body(bare, key, 100).is_err());
    }
}
