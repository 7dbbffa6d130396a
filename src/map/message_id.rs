//! Deterministic messageIds.
//!
//! `messageId = uuid_v8(xxh3_128(seed ‖ row ‖ call_index))`, where `seed` is derived from
//! the mapping's namespace and the input's content identity
//! ([`crate::source::identity`]): [`content_seed`]. The same input, read by the same
//! mapping, gives the same ids on every run, from any path spelling, directory or
//! machine, so a call replayed after a crash is the same call and the receiver can
//! de-duplicate it.
//!
//! Backfills started before content identities (checkpoint version 1) seeded ids with
//! the input's path as given ([`input_seed`], [`SeedScheme::Path`]); they resume with
//! that scheme, so their ids never change half way. Standard input, which cannot be
//! identified before it is read, keeps the path scheme (`<stdin>`).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::source::{ContentIdentity, InputInfo, SourceError};

/// How a backfill's input seeds are made; the checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SeedScheme {
    /// `namespace ‖ 0 ‖ path as shown`: backfills started before version 2 checkpoints.
    #[default]
    Path,
    /// `namespace ‖ 0 ‖ "v2" ‖ content identity`: every backfill started since.
    Content,
}

/// The per-input part of every messageId of a backfill started today: the namespace
/// and the input's content identity.
pub fn content_seed(namespace: &str, id: &ContentIdentity) -> u64 {
    let mut buf = Vec::with_capacity(namespace.len() + 3 + 40);
    buf.extend_from_slice(namespace.as_bytes());
    buf.push(0);
    buf.extend_from_slice(b"v2");
    buf.extend_from_slice(&id.to_bytes());
    xxh3_64(&buf)
}

/// The seed of each input under `scheme`: its content identity (read once per input)
/// under [`SeedScheme::Content`], its path as shown under [`SeedScheme::Path`];
/// standard input always by its name.
pub fn seeds(
    scheme: SeedScheme,
    namespace: &str,
    inputs: &[std::sync::Arc<InputInfo>],
) -> Result<Vec<u64>, SourceError> {
    inputs
        .iter()
        .map(|i| match (scheme, i.identity()?) {
            (SeedScheme::Content, Some(id)) => Ok(content_seed(namespace, &id)),
            _ => Ok(input_seed(namespace, &i.display)),
        })
        .collect()
}

/// The messageId of a call derived from many rows rather than made from one (one
/// identify per person): `uuid_v8(xxh3_128(namespace ‖ 0 ‖ what ‖ 0 ‖ key))`, the same
/// whatever order the rows came in.
pub fn derived_message_id(out: &mut [u8; 36], namespace: &str, what: &str, key: &[u8]) {
    let mut buf = Vec::with_capacity(namespace.len() + what.len() + key.len() + 2);
    buf.extend_from_slice(namespace.as_bytes());
    buf.push(0);
    buf.extend_from_slice(what.as_bytes());
    buf.push(0);
    buf.extend_from_slice(key);
    write_uuid(out, xxh3_128(&buf));
}

/// The per-input part of every messageId under [`SeedScheme::Path`] (and for standard
/// input): the namespace and the input's path as shown.
pub fn input_seed(namespace: &str, input_path: &str) -> u64 {
    let mut buf = Vec::with_capacity(namespace.len() + input_path.len() + 1);
    buf.extend_from_slice(namespace.as_bytes());
    buf.push(0);
    buf.extend_from_slice(input_path.as_bytes());
    xxh3_64(&buf)
}

/// Writes the 36-character UUID form of the id for (`seed`, `row`, `call_index`) into `out`.
#[inline]
pub fn write_message_id(out: &mut [u8; 36], seed: u64, row: u64, call_index: u32) {
    let mut key = [0u8; 20];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&row.to_le_bytes());
    key[16..].copy_from_slice(&call_index.to_le_bytes());
    write_uuid(out, xxh3_128(&key));
}

/// The UUID form of a 128-bit hash.
#[inline]
fn write_uuid(out: &mut [u8; 36], hash: u128) {
    let mut h = hash.to_be_bytes();
    // RFC 9562 UUIDv8 ("custom"): version nibble 8, variant bits 10.
    h[6] = (h[6] & 0x0f) | 0x80;
    h[8] = (h[8] & 0x3f) | 0x80;
    // Fixed positions and a byte-to-two-digits table: the loop unrolls into 16 stores,
    // about half the instructions of branching on the dash positions per byte.
    for (b, &at) in h.iter().zip(HEX_AT.iter()) {
        out[at..at + 2].copy_from_slice(&HEX_PAIRS[*b as usize]);
    }
    for at in [8, 13, 18, 23] {
        out[at] = b'-';
    }
}

/// Where the two hex digits of each hash byte go in `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const HEX_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The two lowercase hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// The id as a `String` (tests and tools; the hot path uses [`write_message_id`]).
pub fn message_id(seed: u64, row: u64, call_index: u32) -> String {
    let mut buf = [0u8; 36];
    write_message_id(&mut buf, seed, row, call_index);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let s = input_seed("", "events.csv");
        let a = message_id(s, 0, 0);
        assert_eq!(a, message_id(s, 0, 0));
        assert_ne!(a, message_id(s, 1, 0));
        assert_ne!(a, message_id(s, 0, 1));
        assert_ne!(a, message_id(input_seed("", "other.csv"), 0, 0));
        assert_ne!(a, message_id(input_seed("ns", "events.csv"), 0, 0));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "UUID version 8: {a}");
    }

    #[test]
    fn id_scheme_is_pinned() {
        // Changing the scheme would make a resumed run re-send calls under new ids.
        insta::assert_snapshot!(message_id(input_seed("", "events.csv"), 41, 1), @"206e8e8f-52da-8c5e-9071-fec2c73448cd");
        let id = ContentIdentity {
            size: 1234,
            head: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            tail: 7,
        };
        insta::assert_snapshot!(message_id(content_seed("crm", &id), 41, 1), @"43fe438c-13a5-88fe-b915-b0895d4a1222");
        let mut d = [0u8; 36];
        derived_message_id(&mut d, "crm", "identify-latest", b"user-1");
        insta::assert_snapshot!(String::from_utf8_lossy(&d), @"ac2d59d5-7859-8be0-87af-b7a6e01747fa");
    }

    /// The content seed depends on the namespace and every part of the identity, and
    /// never equals the path seed of the same namespace.
    #[test]
    fn content_seeds_differ_by_namespace_and_identity() {
        let id = ContentIdentity {
            size: 1,
            head: 2,
            tail: 3,
        };
        let s = content_seed("ns", &id);
        assert_ne!(s, content_seed("ns2", &id));
        assert_ne!(s, content_seed("ns", &ContentIdentity { size: 9, ..id }));
        assert_ne!(s, content_seed("ns", &ContentIdentity { head: 9, ..id }));
        assert_ne!(s, content_seed("ns", &ContentIdentity { tail: 9, ..id }));
        let mut a = [0u8; 36];
        let mut b = [0u8; 36];
        derived_message_id(&mut a, "ns", "identify-latest", b"u1");
        derived_message_id(&mut b, "ns", "identify-first", b"u1");
        assert_ne!(a, b);
    }
}
