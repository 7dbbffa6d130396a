//! What an input *is*, independent of where it is: the content identity that seeds its
//! messageIds.
//!
//! An input's identity is `size ‖ xxh3_128(first 64 KiB) ‖ xxh3_128(last 64 KiB)` of its
//! bytes as stored (the compressed bytes of a `.gz`/`.zst` file). Under 64 KiB the head
//! and the tail are both the whole file, so every byte counts. It is the same whatever
//! the path is called (`a.csv`, `./a.csv`, `/home/me/export/a.csv`), wherever the export
//! directory lives, on whichever machine, and whether the bytes come from a local disk
//! or from object storage (two ranged reads: `bytes=0-65535` and the suffix
//! `bytes=-65536`; [`ContentIdentity::from_parts`] takes them from any reader).
//!
//! Invariants: two inputs with different sizes, heads or tails have different
//! identities (`2023/events.csv` and `2024/events.csv` never share one); two inputs
//! with the very same bytes have the same identity (they are the same data). An edited
//! file that keeps its size, its first and its last 64 KiB keeps its identity: to send
//! corrected data again, change the mapping's `namespace` (true of any id scheme, since
//! the API drops repeats of an id).

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use xxhash_rust::xxh3::xxh3_128;

/// How many bytes of an input's head, and of its tail, the identity hashes.
pub const IDENTITY_SAMPLE: u64 = 64 * 1024;

/// An input's content identity. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentIdentity {
    pub size: u64,
    pub head: u128,
    pub tail: u128,
}

impl ContentIdentity {
    /// The identity of an input of `size` bytes whose first `min(size, 64 KiB)` bytes are
    /// `head` and whose last `min(size, 64 KiB)` bytes are `tail`: what a remote reader
    /// computes from two ranged reads. The lengths are checked so a short read cannot
    /// pass for an identity.
    pub fn from_parts(size: u64, head: &[u8], tail: &[u8]) -> Result<ContentIdentity, String> {
        let want = IDENTITY_SAMPLE.min(size) as usize;
        if head.len() != want || tail.len() != want {
            return Err(format!(
                "content identity of a {size}-byte input needs its first and last {want} bytes; got {} and {}",
                head.len(),
                tail.len()
            ));
        }
        Ok(ContentIdentity {
            size,
            head: xxh3_128(head),
            tail: xxh3_128(tail),
        })
    }

    /// The identity of a local file: two reads of at most 64 KiB.
    pub fn of_file(path: &Path) -> std::io::Result<ContentIdentity> {
        let mut f = std::fs::File::open(path)?;
        let size = f.metadata()?.len();
        let n = IDENTITY_SAMPLE.min(size) as usize;
        let mut head = vec![0u8; n];
        f.read_exact(&mut head)?;
        let mut tail = vec![0u8; n];
        if size > IDENTITY_SAMPLE {
            f.seek(SeekFrom::Start(size - n as u64))?;
            f.read_exact(&mut tail)?;
        } else {
            tail.copy_from_slice(&head);
        }
        ContentIdentity::from_parts(size, &head, &tail).map_err(std::io::Error::other)
    }

    /// The bytes the seed hashes: size, head and tail, little-endian.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..24].copy_from_slice(&self.head.to_le_bytes());
        b[24..].copy_from_slice(&self.tail.to_le_bytes());
        b
    }

    /// Parses the [`fmt::Display`] form (`SIZE:HEAD:TAIL`, hex hashes), as the
    /// checkpoint records it.
    pub fn parse(s: &str) -> Option<ContentIdentity> {
        let mut parts = s.split(':');
        let size = parts.next()?.parse().ok()?;
        let head = u128::from_str_radix(parts.next()?, 16).ok()?;
        let tail = u128::from_str_radix(parts.next()?, 16).ok()?;
        parts
            .next()
            .is_none()
            .then_some(ContentIdentity { size, head, tail })
    }
}

impl fmt::Display for ContentIdentity {
    /// `SIZE:HEAD:TAIL`, the hashes as 32 hex digits each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:032x}:{:032x}", self.size, self.head, self.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(bytes: &[u8]) -> ContentIdentity {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, bytes).unwrap();
        ContentIdentity::of_file(&p).unwrap()
    }

    /// The file reader and the parts a remote reader feeds agree, small and large.
    #[test]
    fn a_file_and_its_two_ranged_reads_give_one_identity() {
        for size in [0usize, 1, 1000, 65_536, 65_537, 131_072, 300_000] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let n = size.min(IDENTITY_SAMPLE as usize);
            let parts =
                ContentIdentity::from_parts(size as u64, &bytes[..n], &bytes[size - n..]).unwrap();
            assert_eq!(id_of(&bytes), parts, "size {size}");
            assert_eq!(ContentIdentity::parse(&parts.to_string()), Some(parts));
        }
        assert!(ContentIdentity::from_parts(10, b"abc", b"abc").is_err());
    }

    /// A change in the head, the tail or the size changes the identity; a change in the
    /// middle of a large file does not (documented: change the namespace to resend).
    #[test]
    fn head_tail_and_size_make_the_identity() {
        let base: Vec<u8> = (0..300_000).map(|i| (i % 13) as u8).collect();
        let id = id_of(&base);
        let mut head = base.clone();
        head[10] ^= 1;
        let mut tail = base.clone();
        tail[299_990] ^= 1;
        let mut middle = base.clone();
        middle[150_000] ^= 1;
        let mut longer = base.clone();
        longer.push(0);
        assert_ne!(id_of(&head), id);
        assert_ne!(id_of(&tail), id);
        assert_ne!(id_of(&longer), id);
        assert_eq!(id_of(&middle), id);
        // Small files: every byte counts.
        let mut small = base[..100_000].to_vec();
        let small_id = id_of(&small);
        small[70_000] ^= 1;
        assert_ne!(id_of(&small), small_id);
    }
}
