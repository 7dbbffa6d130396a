//! One pass over a request body: checks that it is JSON, splits a batch into its calls,
//! catches any object that repeats a key, and reads, for each call, every field the
//! vendor's schemas say something about (into [`CallFacts`]), so that `schema.rs` can
//! judge the call without reading it again.
//!
//! This is the receiver's hot path (it runs beside the benchmarked engine), so it reads
//! each byte once, builds no tree and allocates nothing for plain input: strings are
//! kept as slices of the body and unescaped only when a rule must compare one that has
//! an escape, and the keys of the open objects sit in a reused stack.
//!
//! Invariants: it accepts exactly the JSON that serde_json accepts (the tests hold it to
//! that, on edited bodies too), up to 128 levels of nesting ([`MAX_DEPTH`]); a repeated
//! key is found whatever its escapes (`"a"` and `"\u0061"` are one key); the raw slice
//! handed over for a call is its bytes exactly as received. The caller has already
//! checked that the body is UTF-8, so every slice taken at an ASCII delimiter is a
//! valid `str`.

use std::borrow::Cow;

// The bytes a JSON string must escape, found as the engine's writer finds them.
#[cfg(target_arch = "x86_64")]
use crate::json::specials16;
use crate::json::specials_swar as specials;

/// The body is not JSON (or nests deeper than serde_json would read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Nesting levels read; a deeper body is refused as not JSON. serde_json's recursion
/// limit is the same 128 when it parses into types (it has none when it only skips a
/// value), and a receiver that recurses must stop somewhere.
const MAX_DEPTH: u32 = 128;
/// Up to this many keys an object's keys are compared as they come; a larger object
/// has them sorted once when it closes, so a hostile object of many keys costs
/// n log n, not n².
const LINEAR_KEYS: usize = 32;

/// What a JSON value is, as a schema's `type` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    #[default]
    Absent,
    Null,
    Bool,
    /// A number with no fractional part (JSON Schema counts `1.0` as an integer).
    Integer,
    Number,
    String,
    Object,
    Array,
}

impl Kind {
    /// "a string", "null", ...: for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Absent => "missing",
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Integer | Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Object => "an object",
            Kind::Array => "an array",
        }
    }
}

/// A string as received: the slice between its quotes, unescaped only on demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Text<'a> {
    /// Between the quotes, escapes as written.
    inner: &'a str,
    escaped: bool,
}

impl<'a> Text<'a> {
    /// The string's value.
    #[inline(always)]
    pub(crate) fn value(self) -> Cow<'a, str> {
        if self.escaped {
            self.unescaped()
        } else {
            Cow::Borrowed(self.inner)
        }
    }

    /// Rare: only strings with an escape get here. A lone surrogate (valid JSON
    /// grammar, no valid string) stays as written.
    #[cold]
    #[inline(never)]
    fn unescaped(self) -> Cow<'a, str> {
        serde_json::from_str::<String>(&format!("\"{}\"", self.inner))
            .map_or(Cow::Borrowed(self.inner), Cow::Owned)
    }

    /// Whether the value equals `s`, without unescaping when it has no escape.
    #[inline]
    pub(crate) fn is(self, s: &str) -> bool {
        if self.escaped {
            self.value() == s
        } else {
            self.inner == s
        }
    }
}

/// One member's value, as much of it as the rules read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub kind: Kind,
    /// The string, when `kind` is `String`.
    pub text: Text<'a>,
}

impl<'a> Field<'a> {
    /// The string, if this is one.
    pub(crate) fn str(self) -> Option<Text<'a>> {
        (self.kind == Kind::String).then_some(self.text)
    }

    pub(crate) fn is_str(self) -> bool {
        self.kind == Kind::String
    }

    pub(crate) fn present(self) -> bool {
        self.kind != Kind::Absent
    }
}

/// The first breach of a schema found inside an object, as a message ("context.channel
/// must be ..."). Only built when there is one.
pub(crate) type Breach = Option<String>;

fn breach(b: &mut Breach, message: impl FnOnce() -> String) {
    if b.is_none() {
        *b = Some(message());
    }
}

/// A call's `context` (or a batch's): `context_common`, the web-only part
/// (`context_non_mobile`: `campaign`, `page`) and the mobile-only part
/// (`context_mobile`: `app`, `device`, `network`, `os`), each with its first breach.
#[derive(Debug, Default)]
pub(crate) struct Context<'a> {
    pub kind: Kind,
    pub common: Breach,
    pub web: Breach,
    pub mobile: Breach,
    pub device: Kind,
    pub device_token: Kind,
    pub device_type: Field<'a>,
}

/// `integrations`: an object of booleans.
#[derive(Debug, Default)]
pub(crate) struct Integrations<'a> {
    pub kind: Kind,
    /// The first member that is not a boolean, and what it is.
    pub not_bool: Option<(Cow<'a, str>, Kind)>,
}

/// The `traits` members the identify and group schemas type.
#[derive(Debug, Default)]
pub(crate) struct Traits<'a> {
    pub kind: Kind,
    pub email: Kind,
    pub created_at: Field<'a>,
    pub unsubscribed: Kind,
    /// `cio_subscription_preferences`: an object whose `topics` and `channels` are
    /// objects of booleans.
    pub subscription: Kind,
    pub subscription_breach: Breach,
    pub object_type_id: Kind,
    pub relationship_attributes: Kind,
}

/// The `properties` members the page schema and the semantic events type.
#[derive(Debug, Default)]
pub(crate) struct Properties<'a> {
    pub kind: Kind,
    /// page: `category`, `url`, `referrer`, `path`, `search` (strings).
    pub page_breach: Option<(&'static str, Kind)>,
    pub object_id: Kind,
    pub object_type_id: Kind,
    /// Report Delivery Event: `deliveryId`, `recipient`, `reason`, `actionValue`,
    /// `href` (strings).
    pub delivery_breach: Option<(&'static str, Kind)>,
    pub metric: Field<'a>,
    pub activity_type: Kind,
    pub action_type: Field<'a>,
    pub content_id: Kind,
    pub template_id: Kind,
}

/// Everything the rules read of one call.
#[derive(Debug, Default)]
pub(crate) struct CallFacts<'a> {
    /// The call is a JSON object (if not, nothing else is filled).
    pub object: bool,
    /// A key repeated in some object of the call (the first found).
    pub duplicate: Option<Cow<'a, str>>,
    pub ty: Field<'a>,
    pub message_id: Field<'a>,
    pub user_id: Field<'a>,
    pub anonymous_id: Field<'a>,
    pub event: Field<'a>,
    pub group_id: Field<'a>,
    pub previous_id: Field<'a>,
    pub name: Field<'a>,
    pub timestamp: Field<'a>,
    pub sent_at: Field<'a>,
    pub received_at: Field<'a>,
    pub original_timestamp: Field<'a>,
    pub version: Kind,
    pub context: Context<'a>,
    pub integrations: Integrations<'a>,
    pub traits: Traits<'a>,
    pub properties: Properties<'a>,
}

/// What the rules read of a batch body around its calls.
#[derive(Debug, Default)]
pub(crate) struct BodyFacts<'a> {
    /// The body is a JSON object.
    pub object: bool,
    /// The kind of its `batch` member.
    pub batch: Kind,
    pub context: Context<'a>,
    pub integrations: Integrations<'a>,
    /// A key repeated outside the calls (the first found).
    pub duplicate: Option<Cow<'a, str>>,
}

/// The keys of the open objects, reused across requests: their place in the body (or,
/// for a key with an escape, in `unescaped`), and a fingerprint to compare first.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    spans: Vec<KeySpan>,
    unescaped: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct KeySpan {
    fingerprint: u64,
    at: u32,
    len: u32,
    /// In `Keys::unescaped` rather than the body.
    own: bool,
}

/// Reads a batch body: hands each call to `each` in order (its bytes exactly as
/// received, and its facts), and returns the facts of the body around them.
pub(crate) fn batch<'a>(
    body: &'a str,
    keys: &mut Keys,
    each: &mut impl FnMut(&'a str, &CallFacts<'a>),
) -> Result<BodyFacts<'a>, Malformed> {
    let mut s = Scanner::new(body, keys);
    let mut facts = BodyFacts::default();
    let mut call = CallFacts::default();
    s.ws();
    if s.peek() == Some(b'{') {
        facts.object = true;
        s.object(0, |s, key| match key {
            "batch" if s.peek() == Some(b'[') => {
                facts.batch = Kind::Array;
                s.calls(&mut call, each)
            }
            "batch" => {
                facts.batch = s.field(1)?.kind;
                Ok(())
            }
            "context" => s.context(1, &mut facts.context),
            "integrations" => s.integrations(1, &mut facts.integrations),
            _ => s.skip(1),
        })?;
    } else {
        s.skip(0)?;
    }
    s.end()?;
    facts.duplicate = s.dup.take();
    Ok(facts)
}

/// Reads a single call's body (`/v1/track` and the like) into `facts`, and returns the
/// call's bytes without surrounding whitespace.
pub(crate) fn single<'a>(
    body: &'a str,
    keys: &mut Keys,
    facts: &mut CallFacts<'a>,
) -> Result<&'a str, Malformed> {
    let mut s = Scanner::new(body, keys);
    s.ws();
    let start = s.i;
    if s.peek() == Some(b'{') {
        s.call(0, facts)?;
    } else {
        *facts = CallFacts::default();
        s.skip(0)?;
    }
    let raw = &body[start..s.i];
    s.end()?;
    Ok(raw)
}

struct Scanner<'a, 'k> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    keys: &'k mut Keys,
    /// The first repeated key since it was last taken.
    dup: Option<Cow<'a, str>>,
    /// Where the last number read started.
    number_start: usize,
}

/// The index of the first `"`, `\` or control byte in `b` from `i` on, or `b.len()`.
///
/// On x86_64, sixteen bytes at a time with SSE2 (part of the x86_64 baseline, so no
/// runtime detection). `b` is the whole body, so a string almost always has sixteen
/// bytes after it and one block holds a short string's end: one load and one mask,
/// with no per-string set-up and no tail handling in the common case. Only the last
/// fifteen bytes of a body take the portable path.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    while let Some(block) = b.get(i..i + 16) {
        let m = specials16(block);
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    find_special_swar(b, i)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn find_special(b: &[u8], i: usize) -> usize {
    find_special_swar(b, i)
}

/// [`find_special`] eight bytes at a time, portably.
#[inline]
fn find_special_swar(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let m = specials(u64::from_le_bytes(w));
        if m != 0 {
            return i + m.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// A cheap summary of a key's bytes: equal keys have equal fingerprints. Its first
/// and last eight bytes (overlapping when shorter than sixteen) and its length.
fn fingerprint(k: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(k) {
        *d = *s;
    }
    let tail = k.len().checked_sub(8).map_or(0, |e| load8(&k[e..]));
    u64::from_le_bytes(w) ^ tail.rotate_left(29) ^ (k.len() as u64)
}

/// [`fingerprint`] of the key at `b[at..at + len]`, with whole-word loads where the
/// body goes on for eight bytes past the key's start (it nearly always does: a key is
/// followed by its closing quote, a colon and a value).
#[inline(always)]
fn fingerprint_at(b: &[u8], at: usize, len: usize) -> u64 {
    let Some(word) = b.get(at..at + 8) else {
        return fingerprint(&b[at..at + len]);
    };
    let head = if len >= 8 {
        load8(word)
    } else {
        load8(word) & ((1u64 << (8 * len)) - 1)
    };
    let tail = if len >= 8 {
        load8(&b[at + len - 8..])
    } else {
        0
    };
    head ^ tail.rotate_left(29) ^ (len as u64)
}

#[inline(always)]
fn load8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// What a member must be, for [`Scanner::members`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Any,
    Str,
    Bool,
    /// A string, one of these.
    OneOf(&'static [&'static str]),
    /// An array of strings.
    Strings,
}

impl Expect {
    fn accepts(self, f: Field<'_>, all: bool) -> bool {
        match self {
            Expect::Any => true,
            Expect::Str => f.kind == Kind::String,
            Expect::Bool => f.kind == Kind::Bool,
            Expect::OneOf(names) => f.str().is_some_and(|t| names.iter().any(|n| t.is(n))),
            Expect::Strings => f.kind == Kind::Array && all,
        }
    }

    fn describe(self) -> String {
        match self {
            Expect::Any => "anything".into(),
            Expect::Str => "a string".into(),
            Expect::Bool => "true or false".into(),
            Expect::OneOf(names) => {
                let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                format!("one of {}", quoted.join(", "))
            }
            Expect::Strings => "an array of strings".into(),
        }
    }
}

const CHANNELS: &[&str] = &["browser", "server", "mobile"];
const DEVICE_TYPES: &[&str] = &["android", "ios"];

impl<'a, 'k> Scanner<'a, 'k> {
    fn new(body: &'a str, keys: &'k mut Keys) -> Self {
        keys.spans.clear();
        keys.unescaped.clear();
        Scanner {
            b: body.as_bytes(),
            text: body,
            i: 0,
            keys,
            dup: None,
            number_start: 0,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Result<u8, Malformed> {
        let c = *self.b.get(self.i).ok_or(Malformed)?;
        self.i += 1;
        Ok(c)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), Malformed> {
        if self.next()? == c {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Only whitespace may follow the value.
    fn end(&mut self) -> Result<(), Malformed> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// At a `"`: reads a string. Checks what serde_json checks: no control characters,
    /// only the JSON escapes, four hex digits after `\u`.
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'a>, Malformed> {
        let start = self.i;
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            self.i = find_special(self.b, self.i);
            match self.next()? {
                b'"' => {
                    // Between two ASCII quotes of a UTF-8 text: a whole str.
                    return Ok(Text {
                        inner: &self.text[start + 1..self.i - 1],
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                if !self.next()?.is_ascii_hexdigit() {
                                    return Err(Malformed);
                                }
                            }
                        }
                        _ => return Err(Malformed),
                    }
                }
                _ => return Err(Malformed), // a control byte
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Malformed> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: an integer or not.
    #[inline(always)]
    fn number(&mut self) -> Result<Kind, Malformed> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(Malformed);
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(Malformed),
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            plain = false;
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            plain = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Malformed);
            }
        }
        self.number_start = start;
        Ok(if plain { Kind::Integer } else { Kind::Number })
    }

    /// The kind of a member the rules type as an integer: a number with a fraction or
    /// an exponent is one too when it is whole (`1.0`, `1e3`), as JSON Schema counts.
    /// Only asked of those few members, so other numbers are never parsed.
    fn integer_kind(&self, f: Field<'a>) -> Kind {
        if f.kind != Kind::Number {
            return f.kind;
        }
        let whole = self.text[self.number_start..self.i]
            .parse::<f64>()
            .is_ok_and(|v| v.is_finite() && v.fract() == 0.0);
        if whole {
            Kind::Integer
        } else {
            Kind::Number
        }
    }

    /// Reads one value: a string's text, a scalar's kind, and skips (checking) an
    /// object or an array.
    #[inline(always)]
    fn field(&mut self, depth: u32) -> Result<Field<'a>, Malformed> {
        let kind = match self.peek().ok_or(Malformed)? {
            b'"' => {
                return Ok(Field {
                    kind: Kind::String,
                    text: self.string()?,
                })
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => {
                self.literal(b"true")?;
                Kind::Bool
            }
            b'f' => {
                self.literal(b"false")?;
                Kind::Bool
            }
            b'n' => {
                self.literal(b"null")?;
                Kind::Null
            }
            b'{' => {
                self.object(depth, |s, _| s.skip(depth + 1))?;
                Kind::Object
            }
            b'[' => {
                self.array(depth, |s| s.skip(depth + 1).map(|()| true))?;
                Kind::Array
            }
            _ => return Err(Malformed),
        };
        Ok(Field {
            kind,
            text: Text::default(),
        })
    }

    /// Skips one value, checking it.
    #[inline(always)]
    fn skip(&mut self, depth: u32) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            _ => self.field(depth).map(|_| ()),
        }
    }

    /// At a `[`: reads an array, each element with `element` (which returns whether
    /// the element was what the caller wanted); returns whether all of them were.
    fn array(
        &mut self,
        depth: u32,
        mut element: impl FnMut(&mut Self) -> Result<bool, Malformed>,
    ) -> Result<bool, Malformed> {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        self.expect(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(true);
        }
        let mut all = true;
        loop {
            all &= element(self)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Ok(all),
                _ => return Err(Malformed),
            }
        }
    }

    /// At a `{`: reads an object, handing each key (unescaped) to `member`, which must
    /// read the value. Notes a repeated key in `self.dup`.
    #[inline(always)]
    fn object(
        &mut self,
        depth: u32,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let base = self.keys.spans.len();
        loop {
            let key = self.string()?;
            let name = key.value();
            self.note_key(base, key, &name);
            self.ws();
            self.expect(b':')?;
            self.ws();
            member(self, &name)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => break,
                _ => return Err(Malformed),
            }
        }
        self.close_keys(base);
        Ok(())
    }

    /// Remembers a key of the object whose keys start at `base`, comparing it with the
    /// earlier ones while the object is small.
    #[inline(always)]
    fn note_key(&mut self, base: usize, key: Text<'a>, name: &str) {
        let bytes = name.as_bytes();
        let fp = if key.escaped {
            fingerprint(bytes)
        } else {
            let at = key.inner.as_ptr() as usize - self.b.as_ptr() as usize;
            fingerprint_at(self.b, at, bytes.len())
        };
        let open = &self.keys.spans[base..];
        if open.len() < LINEAR_KEYS {
            for k in open {
                if k.fingerprint == fp && self.key_bytes(k) == bytes {
                    self.dup.get_or_insert_with(|| key.value());
                    break;
                }
            }
        }
        let span = if key.escaped {
            let at = self.keys.unescaped.len();
            self.keys.unescaped.extend_from_slice(bytes);
            KeySpan {
                fingerprint: fp,
                at: at as u32,
                len: bytes.len() as u32,
                own: true,
            }
        } else {
            let at = key.inner.as_ptr() as usize - self.b.as_ptr() as usize;
            KeySpan {
                fingerprint: fp,
                at: at as u32,
                len: bytes.len() as u32,
                own: false,
            }
        };
        self.keys.spans.push(span);
    }

    fn key_bytes(&self, k: &KeySpan) -> &[u8] {
        let (at, len) = (k.at as usize, k.len as usize);
        if k.own {
            &self.keys.unescaped[at..at + len]
        } else {
            &self.b[at..at + len]
        }
    }

    /// Closes the object whose keys start at `base`: a large one has its keys sorted
    /// and compared once; then they are forgotten.
    fn close_keys(&mut self, base: usize) {
        if self.keys.spans.len() - base > LINEAR_KEYS {
            let mut open = self.keys.spans.split_off(base);
            open.sort_unstable_by(|a, b| {
                a.fingerprint
                    .cmp(&b.fingerprint)
                    .then_with(|| self.key_bytes(a).cmp(self.key_bytes(b)))
            });
            if let Some(w) = open
                .windows(2)
                .find(|w| self.key_bytes(&w[0]) == self.key_bytes(&w[1]))
            {
                let name = String::from_utf8_lossy(self.key_bytes(&w[0])).into_owned();
                self.dup.get_or_insert(Cow::Owned(name));
            }
        }
        self.keys.spans.truncate(base);
    }

    /// The `batch` array: each element's raw span and facts.
    fn calls(
        &mut self,
        f: &mut CallFacts<'a>,
        each: &mut impl FnMut(&'a str, &CallFacts<'a>),
    ) -> Result<(), Malformed> {
        self.array(1, |s| {
            let start = s.i;
            if s.peek() == Some(b'{') {
                s.call(2, f)?;
            } else {
                *f = CallFacts::default();
                s.skip(2)?;
            }
            each(&s.text[start..s.i], f);
            Ok(true)
        })
        .map(|_| ())
    }

    /// One call object, read into `f`.
    fn call(&mut self, depth: u32, f: &mut CallFacts<'a>) -> Result<(), Malformed> {
        *f = CallFacts {
            object: true,
            ..CallFacts::default()
        };
        let outer = self.dup.take();
        let d = depth + 1;
        self.object(depth, |s, key| {
            let slot = match key {
                "type" => &mut f.ty,
                "messageId" => &mut f.message_id,
                "userId" => &mut f.user_id,
                "anonymousId" => &mut f.anonymous_id,
                "event" => &mut f.event,
                "groupId" => &mut f.group_id,
                "previousId" => &mut f.previous_id,
                "name" => &mut f.name,
                "timestamp" => &mut f.timestamp,
                "sentAt" => &mut f.sent_at,
                "receivedAt" => &mut f.received_at,
                "originalTimestamp" => &mut f.original_timestamp,
                "version" => {
                    f.version = s.field(d)?.kind;
                    return Ok(());
                }
                "context" => return s.context(d, &mut f.context),
                "integrations" => return s.integrations(d, &mut f.integrations),
                "traits" => return s.traits(d, &mut f.traits),
                "properties" => return s.properties(d, &mut f.properties),
                _ => return s.skip(d),
            };
            *slot = s.field(d)?;
            Ok(())
        })?;
        f.duplicate = std::mem::replace(&mut self.dup, outer);
        Ok(())
    }

    /// An object whose members are checked by `expect(key)`; the first breach goes to
    /// `b` as "`path`.key must be ...". `seen` gets every member read. Returns the
    /// value's kind (anything but an object is read and left to the caller to judge).
    fn members(
        &mut self,
        depth: u32,
        path: &str,
        b: &mut Breach,
        expect: impl Fn(&str) -> Expect,
        mut seen: impl FnMut(&str, Field<'a>),
    ) -> Result<Kind, Malformed> {
        if self.peek() != Some(b'{') {
            return Ok(self.field(depth)?.kind);
        }
        let d = depth + 1;
        self.object(depth, |s, key| {
            let e = expect(key);
            let (f, all) = match e {
                Expect::Any => {
                    let f = s.field(d)?;
                    (f, true)
                }
                Expect::Strings if s.peek() == Some(b'[') => {
                    let all = s.array(d, |s| Ok(s.field(d + 1)?.kind == Kind::String))?;
                    (
                        Field {
                            kind: Kind::Array,
                            text: Text::default(),
                        },
                        all,
                    )
                }
                _ => (s.field(d)?, true),
            };
            if !e.accepts(f, all) {
                breach(b, || format!("{path}.{key} must be {}", e.describe()));
            }
            seen(key, f);
            Ok(())
        })?;
        Ok(Kind::Object)
    }

    /// `context`: `context_common`, then the web-only and mobile-only members.
    fn context(&mut self, depth: u32, c: &mut Context<'a>) -> Result<(), Malformed> {
        if self.peek() != Some(b'{') {
            c.kind = self.field(depth)?.kind;
            return Ok(());
        }
        c.kind = Kind::Object;
        let d = depth + 1;
        self.object(depth, |s, key| {
            let (common, web, mobile) = (&mut c.common, &mut c.web, &mut c.mobile);
            let e = match key {
                "active" => Expect::Bool,
                "ip" | "locale" | "userAgent" => Expect::Str,
                "channel" => Expect::OneOf(CHANNELS),
                "campaign" => {
                    // Every member a string: the named ones and "Additional UTM
                    // Parameters" alike.
                    let k = s.members(d, "context.campaign", web, |_| Expect::Str, |_, _| {})?;
                    object_or(web, k, "context.campaign");
                    return Ok(());
                }
                "page" => {
                    let k = s.members(
                        d,
                        "context.page",
                        web,
                        |k| match k {
                            "name" | "path" | "referrer" | "search" | "url" => Expect::Str,
                            "keywords" => Expect::Strings,
                            _ => Expect::Any,
                        },
                        |_, _| {},
                    )?;
                    object_or(web, k, "context.page");
                    return Ok(());
                }
                "app" => {
                    let k = s.members(
                        d,
                        "context.app",
                        mobile,
                        |k| match k {
                            "name" | "version" | "build" | "namespace" => Expect::Str,
                            _ => Expect::Any,
                        },
                        |_, _| {},
                    )?;
                    object_or(mobile, k, "context.app");
                    return Ok(());
                }
                "device" => {
                    let (token, ty) = (&mut c.device_token, &mut c.device_type);
                    let k = s.members(
                        d,
                        "context.device",
                        mobile,
                        |k| match k {
                            "id" | "advertisingId" | "manufacturer" | "model" | "name"
                            | "version" => Expect::Str,
                            "type" => Expect::OneOf(DEVICE_TYPES),
                            _ => Expect::Any,
                        },
                        |k, f| match k {
                            "token" => *token = f.kind,
                            "type" => *ty = f,
                            _ => {}
                        },
                    )?;
                    c.device = k;
                    object_or(mobile, k, "context.device");
                    return Ok(());
                }
                "network" => {
                    let k = s.members(
                        d,
                        "context.network",
                        mobile,
                        |k| match k {
                            "bluetooth" | "cellular" | "wifi" => Expect::Bool,
                            "carrier" => Expect::Str,
                            _ => Expect::Any,
                        },
                        |_, _| {},
                    )?;
                    object_or(mobile, k, "context.network");
                    return Ok(());
                }
                "os" => {
                    let k = s.members(
                        d,
                        "context.os",
                        mobile,
                        |k| match k {
                            "name" | "version" => Expect::Str,
                            _ => Expect::Any,
                        },
                        |_, _| {},
                    )?;
                    object_or(mobile, k, "context.os");
                    return Ok(());
                }
                _ => return s.skip(d),
            };
            let f = s.field(d)?;
            if !e.accepts(f, true) {
                breach(common, || format!("context.{key} must be {}", e.describe()));
            }
            Ok(())
        })
    }

    /// `integrations`: an object of booleans.
    fn integrations(&mut self, depth: u32, n: &mut Integrations<'a>) -> Result<(), Malformed> {
        if self.peek() != Some(b'{') {
            n.kind = self.field(depth)?.kind;
            return Ok(());
        }
        n.kind = Kind::Object;
        let d = depth + 1;
        self.object(depth, |s, key| {
            let k = s.field(d)?.kind;
            if k != Kind::Bool && n.not_bool.is_none() {
                n.not_bool = Some((Cow::Owned(key.to_string()), k));
            }
            Ok(())
        })
    }

    /// `traits`: the members the identify and group schemas type.
    fn traits(&mut self, depth: u32, t: &mut Traits<'a>) -> Result<(), Malformed> {
        if self.peek() != Some(b'{') {
            t.kind = self.field(depth)?.kind;
            return Ok(());
        }
        t.kind = Kind::Object;
        let d = depth + 1;
        self.object(depth, |s, key| {
            match key {
                "email" => t.email = s.field(d)?.kind,
                "createdAt" => t.created_at = s.field(d)?,
                "unsubscribed" => t.unsubscribed = s.field(d)?.kind,
                "object_type_id" => t.object_type_id = s.field(d)?.kind,
                "relationshipAttributes" => t.relationship_attributes = s.field(d)?.kind,
                "cio_subscription_preferences" => {
                    let b = &mut t.subscription_breach;
                    let k = if s.peek() == Some(b'{') {
                        let dd = d + 1;
                        s.object(d, |s, key| match key {
                            "topics" | "channels" => {
                                let path = format!("traits.cio_subscription_preferences.{key}");
                                let k = s.members(dd, &path, b, |_| Expect::Bool, |_, _| {})?;
                                object_or(b, k, &path);
                                Ok(())
                            }
                            _ => s.skip(dd),
                        })?;
                        Kind::Object
                    } else {
                        s.field(d)?.kind
                    };
                    t.subscription = k;
                }
                _ => s.skip(d)?,
            }
            Ok(())
        })
    }

    /// `properties`: the members the page schema and the semantic events type.
    fn properties(&mut self, depth: u32, p: &mut Properties<'a>) -> Result<(), Malformed> {
        if self.peek() != Some(b'{') {
            p.kind = self.field(depth)?.kind;
            return Ok(());
        }
        p.kind = Kind::Object;
        let d = depth + 1;
        self.object(depth, |s, key| {
            let f = s.field(d)?;
            let k = f.kind;
            match key {
                "category" | "url" | "referrer" | "path" | "search"
                    if k != Kind::String && p.page_breach.is_none() =>
                {
                    p.page_breach = Some((page_key(key), k));
                }
                "objectId" => p.object_id = k,
                "objectTypeId" => p.object_type_id = s.integer_kind(f),
                "deliveryId" | "recipient" | "reason" | "actionValue" | "href"
                    if k != Kind::String && p.delivery_breach.is_none() =>
                {
                    p.delivery_breach = Some((delivery_key(key), k));
                }
                "metric" => p.metric = f,
                "activityType" => p.activity_type = k,
                "actionType" => p.action_type = f,
                "contentId" => p.content_id = s.integer_kind(f),
                "templateId" => p.template_id = s.integer_kind(f),
                _ => {}
            }
            Ok(())
        })
    }
}

/// A typed member that is there but is not an object breaches `b`.
fn object_or(b: &mut Breach, k: Kind, path: &str) {
    if k != Kind::Object {
        breach(b, || {
            format!("{path} must be an object, not {}", k.describe())
        });
    }
}

fn page_key(k: &str) -> &'static str {
    match k {
        "category" => "category",
        "url" => "url",
        "referrer" => "referrer",
        "path" => "path",
        _ => "search",
    }
}

fn delivery_key(k: &str) -> &'static str {
    match k {
        "deliveryId" => "deliveryId",
        "recipient" => "recipient",
        "reason" => "reason",
        "actionValue" => "actionValue",
        _ => "href",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    /// serde_json's verdict on a body: JSON or not.
    fn serde_accepts(body: &str) -> bool {
        serde_json::from_str::<IgnoredAny>(body).is_ok()
    }

    /// The reference for repeated keys: serde_json walking the value, keeping each
    /// object's (unescaped) keys in a set.
    fn serde_repeats(body: &str) -> Option<String> {
        struct Walk<'r>(&'r mut Option<String>);
        impl<'de> Visitor<'de> for Walk<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    m.next_value_seed(Seed(&mut *self.0))?;
                    if !seen.insert(k.clone()) && self.0.is_none() {
                        *self.0 = Some(k);
                    }
                }
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
                while s.next_element_seed(Seed(&mut *self.0))?.is_some() {}
                Ok(())
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
        }
        struct Seed<'r>(&'r mut Option<String>);
        impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(Walk(self.0))
            }
        }
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(body);
        serde::de::DeserializeSeed::deserialize(Seed(&mut found), &mut de).ok()?;
        found
    }

    /// What the scan makes of a batch body: its calls' raw text and their repeated
    /// keys, and the body's own repeated key; `Err` when it is not JSON.
    #[allow(clippy::type_complexity)]
    fn scanned(body: &str) -> Result<(Vec<(String, Option<String>)>, Option<String>), Malformed> {
        let mut keys = Keys::default();
        let mut calls = Vec::new();
        let facts = batch(body, &mut keys, &mut |raw, f| {
            calls.push((raw.to_string(), f.duplicate.as_deref().map(str::to_string)))
        })?;
        Ok((calls, facts.duplicate.map(Cow::into_owned)))
    }

    /// The scan and serde_json agree on whether `body` is JSON, on how a batch splits
    /// into calls, and on whether some object repeats a key.
    fn agrees(body: &str) {
        let ours = scanned(body);
        assert_eq!(ours.is_ok(), serde_accepts(body), "JSON or not: {body:?}");
        let Ok((calls, outer)) = ours else { return };
        let any_dup = outer.is_some() || calls.iter().any(|(_, d)| d.is_some());
        assert_eq!(any_dup, serde_repeats(body).is_some(), "repeats: {body:?}");
        #[derive(serde::Deserialize)]
        struct B<'a> {
            #[serde(borrow)]
            batch: Vec<&'a RawValue>,
        }
        if let Ok(b) = serde_json::from_str::<B<'_>>(body) {
            if !any_dup {
                let raws: Vec<&str> = b.batch.iter().map(|r| r.get()).collect();
                let ours: Vec<&str> = calls.iter().map(|(r, _)| r.as_str()).collect();
                assert_eq!(ours, raws, "split: {body:?}");
            }
        }
    }

    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        for body in [
            "",
            "{}",
            "[]",
            "null",
            r#"{"batch":[]"#,
            r#"{"batch":[]} x"#,
            r#"{"batch":[{"a":01}]}"#,
            r#"{"batch":[{"a":1.}]}"#,
            r#"{"batch":[{"a":-}]}"#,
            r#"{"batch":[{"a":1e}]}"#,
            r#"{"batch":[{"a":tru}]}"#,
            r#"{"batch":[{"a":"\x"}]}"#,
            r#"{"batch":[{"a":"\u12g4"}]}"#,
            "{\"batch\":[{\"a\":\"tab\there\"}]}",
            r#"{"batch":[{"a":1,}]}"#,
            r#"{"batch":[{"a":1},]}"#,
            r#"{"batch":[{"a" 1}]}"#,
            r#"{"batch":[{1:1}]}"#,
            " {\"batch\":[{\"type\":\"track\"}]}\n\t ",
            r#"{"context":{"a":[1,2.5e3,-0,true,false,null,"x\"y\u00e9"]},"batch":[{"type":"track","userId":"u1"} , [1],"s",{}],"sentAt":"x"}"#,
        ] {
            agrees(body);
        }
        // Up to 128 levels (the body's object and the batch array are two of them) as
        // serde_json; deeper is refused.
        for depth in [100, 125, 126, 127, 300] {
            let body = format!(
                r#"{{"batch":[{}]}}"#,
                "[".repeat(depth) + &"]".repeat(depth)
            );
            if depth + 2 <= MAX_DEPTH as usize {
                agrees(&body);
            } else {
                assert_eq!(scanned(&body).err(), Some(Malformed), "{depth}");
            }
        }
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth_and_through_escapes() {
        let cases = [
            (r#"{"batch":[{"a":1,"a":2}]}"#, Some("a")),
            (r#"{"batch":[{"a":1,"\u0061":2}]}"#, Some("a")),
            (
                r#"{"batch":[{"p":{"x":[{"k":1,"j":2,"k":3}]}}]}"#,
                Some("k"),
            ),
            (r#"{"batch":[{"a":{"b":1},"b":{"b":1}}]}"#, None),
            (r#"{"batch":[{"ab":1,"a\u0062c":2,"abc":3}]}"#, Some("abc")),
            (r#"{"batch":[],"context":{},"context":{}}"#, Some("context")),
        ];
        for (body, want) in cases {
            let (calls, outer) = scanned(body).expect("JSON");
            let found = outer.or_else(|| calls.into_iter().find_map(|(_, d)| d));
            assert_eq!(found.as_deref(), want, "{body}");
            agrees(body);
        }
        // A large object takes the sorted path: a repeat anywhere in it is found.
        for (n, at) in [(40, 39), (200, 1), (200, 150), (1000, 999)] {
            let mut members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":1"#)).collect();
            members.push(format!(r#""k{at}":2"#));
            let body = format!(r#"{{"batch":[{{{}}}]}}"#, members.join(","));
            let (calls, _) = scanned(&body).expect("JSON");
            assert_eq!(calls[0].1.as_deref(), Some(format!("k{at}").as_str()));
            members.pop();
            let body = format!(r#"{{"batch":[{{{}}}]}}"#, members.join(","));
            assert_eq!(scanned(&body).expect("JSON").0[0].1, None);
        }
    }

    #[test]
    fn edited_bodies_are_judged_as_serde_judges_them() {
        let base = r#"{"batch":[{"type":"track","messageId":"m-1","userId":"u1","event":"Order \"x\" é","timestamp":"2024-01-02T03:04:05.678Z","properties":{"amount":-12.5e-3,"n":[0,1,true,false,null],"o":{"a":1,"b":2}}},{"type":"identify","anonymousId":"a","traits":{"s":"\u00e9\n","t":1}},{"type":"group","groupId":"g","userId":null}],"context":{"library":{"name":"x","v":"y"}}}"#;
        let alphabet = br#"{}[]:,"\ u0aeE.-+1tfnlrsxb"#;
        agrees(base);
        let mut json = 0;
        for b in super::super::mutations(base.as_bytes(), alphabet, 20_000) {
            let Ok(body) = std::str::from_utf8(&b) else {
                continue;
            };
            agrees(body);
            json += usize::from(serde_accepts(body));
        }
        // Most edits break the JSON; enough must keep it for this to test the rest.
        assert!(json > 1_000, "{json}");
    }

    #[test]
    fn strings_of_every_length_and_escape_end_at_their_quote() {
        for n in 0..40 {
            let s = "é".repeat(n / 2) + &"x".repeat(n % 2);
            for tail in ["", "\\n", "\\\"", "\\u00e9z"] {
                let body = format!(
                    r#"{{"batch":[{{"type":"track","userId":"{s}","event":"{s}{tail}"}}]}}"#
                );
                agrees(&body);
                let mut keys = Keys::default();
                batch(&body, &mut keys, &mut |_, f| {
                    let want: String =
                        serde_json::from_str(&format!("\"{s}{tail}\"")).expect("JSON string");
                    assert_eq!(f.event.text.value(), want);
                    assert!(f.event.text.is(&want));
                })
                .expect("JSON");
            }
        }
    }

    #[test]
    fn fingerprints_from_the_body_equal_those_of_the_key_alone() {
        let body: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
        for at in 0..body.len() {
            for len in 0..=body.len() - at {
                assert_eq!(
                    fingerprint_at(&body, at, len),
                    fingerprint(&body[at..at + len]),
                    "at {at} len {len}"
                );
            }
        }
    }

    #[test]
    fn sixteen_byte_search_agrees_with_the_portable_one() {
        // Every special byte at every offset of a block, near the end of the input too.
        for len in 0..48 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'a', 0x7f, 0xc3, 0xff] {
                    let mut b = vec![b'x'; len];
                    if at < len {
                        b[at] = special;
                    }
                    for from in 0..=len {
                        assert_eq!(
                            find_special(&b, from),
                            find_special_swar(&b, from),
                            "len {len} at {at} byte {special} from {from}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_are_integers_when_whole() {
        let kinds = |v: &str| {
            let body = format!(r#"{{"batch":[{{"properties":{{"objectTypeId":{v}}}}}]}}"#);
            let mut k = Kind::Absent;
            batch(&body, &mut Keys::default(), &mut |_, f| {
                k = f.properties.object_type_id
            })
            .expect("JSON");
            k
        };
        assert_eq!(kinds("1"), Kind::Integer);
        assert_eq!(kinds("-0"), Kind::Integer);
        assert_eq!(kinds("1.0"), Kind::Integer);
        assert_eq!(kinds("1e3"), Kind::Integer);
        assert_eq!(kinds("1.5"), Kind::Number);
        assert_eq!(kinds("1e-3"), Kind::Number);
    }

    /// `cargo test --release --lib serve::scan -- --ignored --nocapture`: time per call
    /// of the scan over bench-like calls.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_the_scan() {
        let call = r#"{"type":"track","messageId":"c3a9e4e0-7fea-8f3c-93ce-f348a4b2ce99","userId":"u130209","anonymousId":"anon-12a764fb66abc9cf","event":"Checkout Started","timestamp":"2023-03-06T12:21:12.000Z","properties":{"plan":"pro","amount":1522.00,"currency":"EUR","country":"CH","city":"Zürich","item_count":11,"is_trial":false,"description":"new\nline \"quoted\" new\nline price café déjà vu naïve quality late 👍"}}"#;
        let n = 1300;
        let body = format!("{{\"batch\":[{}]}}", vec![call; n].join(","));
        let rounds = 300;
        let mut keys = Keys::default();
        let t = std::time::Instant::now();
        let mut calls = 0;
        for _ in 0..rounds {
            batch(&body, &mut keys, &mut |_, f| calls += usize::from(f.object)).expect("scans");
        }
        let per = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
        assert_eq!(calls, rounds * n);
        println!("scan: {per:.0} ns/call");
    }
}
