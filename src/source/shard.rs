//! `--shard K/N`: which contiguous part of the inputs one of N processes reads.
//!
//! The inputs are laid end to end on one line of stored bytes, in input order, and cut
//! at `k × total / N` (k = 1 … N−1). Each cut is snapped to a boundary where reading can
//! start exactly:
//! - between two inputs, for a compressed text input (a stream cannot be entered in the
//!   middle): the nearer of its start and its end;
//! - between two row groups of a Parquet input (their stored sizes from the footer): the
//!   nearest group boundary;
//! - at a record boundary in a plain CSV or NDJSON input: the first record that starts
//!   at or after the cut. That record is found by the real parser reading from the
//!   input's first byte, never by looking for "the next newline": a quoted CSV field
//!   may hold newlines, and from the middle of a file nothing tells whether a newline is
//!   inside quotes. A record belongs to the range that holds its first byte, so the shard
//!   before a cut reads on past it to finish the record it is in.
//!
//! Shard k reads from cut k (exact: input, row, byte) up to cut k+1 ([`Stop`]: a row
//! belongs to the shard before the cut when it starts before it). The ranges are
//! disjoint and cover every row once; row numbers still count from each input's
//! start, so the messageIds are exactly those of a single run. Only the start is
//! scanned for, and only on a shard's first run: a resume starts at its checkpoint, and
//! the stop is a byte or row number, known without reading.
//!
//! Every shard computes the same cuts from the same listing; the checkpoint records a
//! hash of the listing and N ([`plan_hash`]), which `status` compares across shards.
//! Imbalance is at most the largest unit that cannot be split (a compressed input, a row
//! group).

use std::sync::Arc;

pub use crate::config::Shard;

use super::compress::Compression;
use super::{open, Format, InputInfo, Position, SourceError, SourceOptions};

/// Where a shard stops: a row of input `input` belongs to the shard only when it comes
/// before row `row` and starts before byte `offset` (the unused one is `u64::MAX`);
/// inputs past `input` do not belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub input: u32,
    pub row: u64,
    pub offset: u64,
}

impl Stop {
    /// True for a row at `(input, row, offset)` that is past the stop.
    pub fn excludes(&self, input: u32, row: u64, offset: u64) -> bool {
        input > self.input || (input == self.input && (row >= self.row || offset >= self.offset))
    }
}

/// A shard's range: where it starts (exact) and where it stops (`None`: at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: Position,
    pub stop: Option<Stop>,
}

/// How an input can be cut.
enum Cuttable {
    /// Only at its start or end.
    Whole,
    /// At row-group boundaries: cumulative (bytes, rows) at each group's end.
    Groups(Vec<(u64, u64)>),
    /// At any record boundary.
    Records,
}

/// Where a cut lands, before it is made exact.
enum Cut {
    /// The start of input `i` (`i` may be the input count: the end).
    InputStart(u32),
    /// Parquet input `input`, before row `row` (the first of group `group`).
    Group { input: u32, row: u64, group: u64 },
    /// Plain text input `input`: the first record starting at or after byte `byte`.
    Byte { input: u32, byte: u64 },
}

/// The range of shard `shard` over `inputs`. `find_start`: the exact start is needed (a
/// first run; a resume starts at its checkpoint instead, and skips the scan).
pub fn range(
    inputs: &[Arc<InputInfo>],
    opts: &SourceOptions,
    shard: Shard,
    find_start: bool,
) -> Result<Range, SourceError> {
    let mut line = Vec::with_capacity(inputs.len());
    for info in inputs {
        line.push((info.size(), cuttable(info, opts)?));
    }
    let total: u64 = line.iter().map(|(s, _)| s).sum();
    let at = |k: u32| -> Cut {
        if k == 0 {
            return Cut::InputStart(0);
        }
        if k >= shard.n {
            return Cut::InputStart(inputs.len() as u32);
        }
        cut(&line, (total as u128 * k as u128 / shard.n as u128) as u64)
    };
    let start = match (find_start, at(shard.k)) {
        (false, _) | (_, Cut::InputStart(0)) => Position::default(),
        (true, c) => exact(inputs, opts, c)?,
    };
    let stop = match at(shard.k + 1) {
        Cut::InputStart(i) if i as usize >= inputs.len() => None,
        Cut::InputStart(i) => Some(Stop {
            input: i,
            row: 0,
            offset: u64::MAX,
        }),
        Cut::Group { input, row, .. } => Some(Stop {
            input,
            row,
            offset: u64::MAX,
        }),
        Cut::Byte { input, byte } => Some(Stop {
            input,
            row: u64::MAX,
            offset: byte,
        }),
    };
    Ok(Range { start, stop })
}

fn cuttable(info: &Arc<InputInfo>, opts: &SourceOptions) -> Result<Cuttable, SourceError> {
    if info.stdin.is_some() {
        return Err(SourceError::Other(
            "standard input cannot be read in shards: write it to a file first".into(),
        ));
    }
    Ok(match info.format {
        Format::Parquet => {
            if info.parquet_groups.get().is_none() {
                open(info, opts)?; // reads the footer
            }
            let groups = info.parquet_groups.get().cloned().unwrap_or_default();
            let stored: u64 = groups.iter().map(|g| g.bytes).sum::<u64>().max(1);
            let size = info.size();
            let (mut bytes, mut rows) = (0u64, 0u64);
            Cuttable::Groups(
                groups
                    .iter()
                    .map(|g| {
                        bytes += g.bytes;
                        rows += g.rows;
                        // Spread over the file's size, footer and all.
                        ((size as u128 * bytes as u128 / stored as u128) as u64, rows)
                    })
                    .collect(),
            )
        }
        _ if info.compression != Compression::None => Cuttable::Whole,
        _ => Cuttable::Records,
    })
}

/// Where the byte `c` of the line lands.
fn cut(line: &[(u64, Cuttable)], c: u64) -> Cut {
    let mut base = 0u64;
    for (i, (size, how)) in line.iter().enumerate() {
        let i = i as u32;
        if c < base + size {
            let local = c - base;
            return match how {
                _ if local == 0 => Cut::InputStart(i),
                Cuttable::Whole => match local * 2 < *size {
                    true => Cut::InputStart(i),
                    false => Cut::InputStart(i + 1),
                },
                Cuttable::Groups(ends) => {
                    // The group boundary nearest the cut: (byte, rows before it, group).
                    let mut best = (0u64, 0u64, 0u64);
                    for (g, &(end, rows)) in ends.iter().enumerate() {
                        if end.abs_diff(local) < best.0.abs_diff(local) {
                            best = (end, rows, g as u64 + 1);
                        }
                    }
                    let (_, row, group) = best;
                    if group == 0 {
                        Cut::InputStart(i)
                    } else if group as usize >= ends.len() {
                        Cut::InputStart(i + 1)
                    } else {
                        Cut::Group {
                            input: i,
                            row,
                            group,
                        }
                    }
                }
                Cuttable::Records => Cut::Byte {
                    input: i,
                    byte: local,
                },
            };
        }
        base += size;
    }
    Cut::InputStart(line.len() as u32)
}

/// The exact position of a cut: a plain text cut is found by reading the input from its
/// start with the real parser, to the first record starting at or after the byte.
fn exact(inputs: &[Arc<InputInfo>], opts: &SourceOptions, c: Cut) -> Result<Position, SourceError> {
    Ok(match c {
        Cut::InputStart(i) => Position {
            input: i,
            row: 0,
            offset: 0,
        },
        Cut::Group { input, row, group } => Position {
            input,
            row,
            offset: group,
        },
        Cut::Byte { input, byte } => {
            let info = &inputs[input as usize];
            let mut src = open(info, opts)?;
            let mut chunk = src.new_chunk(info);
            loop {
                src.fill(&mut chunk, 4096)?;
                if chunk.is_empty() {
                    // The cut falls in the last record: the next input starts the shard.
                    return Ok(Position {
                        input: input + 1,
                        row: 0,
                        offset: 0,
                    });
                }
                if let Some(i) = (0..chunk.len()).find(|&i| chunk.row_offset(i) >= byte) {
                    return Ok(Position {
                        input,
                        row: chunk.first_row() + i as u64,
                        offset: chunk.row_offset(i),
                    });
                }
            }
        }
    })
}

/// A hash of what every shard must agree on: N and the inputs' identities in order.
pub fn plan_hash(n: u32, prints: &[String]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&n.to_le_bytes());
    for p in prints {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_arguments_parse_and_rates_divide_exactly() {
        assert_eq!(Shard::parse("3/8").unwrap(), Shard { k: 3, n: 8 });
        assert!(Shard::parse("8/8").is_err());
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("x/4").is_err());
        assert!(Shard::parse("4").is_err());
        assert_eq!(Shard { k: 3, n: 8 }.file_stem(), "shard-0003-of-0008");
        for (total, n) in [
            (1000u32, 3u32),
            (7, 7),
            (3000, 4),
            (1001, 10),
            (u32::MAX, 9),
        ] {
            let parts: Vec<u32> = (0..n)
                .map(|k| Shard { k, n }.share(total).unwrap())
                .collect();
            assert_eq!(parts.iter().map(|&p| p as u64).sum::<u64>(), total as u64);
            assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
        }
        assert_eq!(Shard { k: 0, n: 4 }.share(3), None);
    }

    #[test]
    fn cuts_snap_to_the_boundaries_each_kind_of_input_allows() {
        let line = vec![
            (100, Cuttable::Whole),
            (100, Cuttable::Groups(vec![(30, 10), (60, 20), (100, 30)])),
            (100, Cuttable::Records),
        ];
        assert!(matches!(cut(&line, 0), Cut::InputStart(0)));
        assert!(matches!(cut(&line, 49), Cut::InputStart(0)));
        assert!(matches!(cut(&line, 50), Cut::InputStart(1)));
        assert!(matches!(cut(&line, 100), Cut::InputStart(1)));
        assert!(matches!(
            cut(&line, 135),
            Cut::Group {
                input: 1,
                row: 10,
                group: 1
            }
        ));
        assert!(matches!(
            cut(&line, 150),
            Cut::Group {
                input: 1,
                row: 20,
                group: 2
            }
        ));
        assert!(matches!(cut(&line, 195), Cut::InputStart(2)));
        assert!(matches!(cut(&line, 250), Cut::Byte { input: 2, byte: 50 }));
        assert!(matches!(cut(&line, 300), Cut::InputStart(3)));
    }

    #[test]
    fn a_stop_takes_rows_before_it_only() {
        let s = Stop {
            input: 2,
            row: u64::MAX,
            offset: 500,
        };
        assert!(!s.excludes(1, 10_000, 1 << 40));
        assert!(!s.excludes(2, 7, 499));
        assert!(s.excludes(2, 8, 500));
        assert!(s.excludes(3, 0, 0));
        let s = Stop {
            input: 2,
            row: 0,
            offset: u64::MAX,
        };
        assert!(s.excludes(2, 0, 0));
    }
}
