//! What the mapping never reached: mapped columns and paths that had no value in any
//! row read, with the nearest name the input does hold ("`properties.totl`: did you mean
//! `properties.total`?"), and, for NDJSON without `"rest"`, keys of the data that no
//! field maps.
//!
//! The sources note per chunk which of the names resolved on an input had a value
//! ([`crate::source::Chunk::present`]); the packing stage ORs them per input; this module
//! turns that into names once the rows are read. CSV columns are in every row, so only
//! NDJSON and Parquet paths can go unmatched.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::compile::CompiledMapping;
use super::suggest;
use crate::source::{ndjson::LATER_KEYS, InputInfo};

/// A mapped column or path that had no value in any row read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Unmatched {
    pub path: String,
    /// The nearest name or path the input holds, if one is near.
    pub suggestion: Option<String>,
}

/// What the mapping reached of the inputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Coverage {
    /// Mapped names with no value in any row read.
    pub never_matched: Vec<Unmatched>,
    /// Keys and nested paths of NDJSON rows (of the first 1,000 of each input) that no
    /// field maps, when no call takes `"rest"`.
    pub unmapped_keys: Vec<String>,
}

impl Coverage {
    pub fn is_empty(&self) -> bool {
        self.never_matched.is_empty() && self.unmapped_keys.is_empty()
    }

    /// One line per finding, for the summary and `validate`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for u in &self.never_matched {
            out.push(match &u.suggestion {
                Some(s) => format!(
                    "\"{}\" had no value in any row: did you mean \"{s}\"?",
                    u.path
                ),
                None => format!("\"{}\" had no value in any row", u.path),
            });
        }
        if !self.unmapped_keys.is_empty() {
            const SHOWN: usize = 20;
            let more = self.unmapped_keys.len().saturating_sub(SHOWN);
            let keys: Vec<&str> = self
                .unmapped_keys
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect();
            out.push(format!(
                "keys in the data that nothing maps: {}{}",
                keys.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
        out
    }
}

/// `"/a/b"` as `a.b`, for comparing pointers with dotted paths.
fn dotted(name: &str) -> String {
    match name.strip_prefix('/') {
        Some(p) => p
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect::<Vec<_>>()
            .join("."),
        None => name.to_string(),
    }
}

/// The coverage of `mappings` (one per input, in input order) given what the rows
/// held: `present[input]` flags, by [`crate::source::ColumnRegistry`] index, the names
/// that had a value in some row.
pub fn coverage(
    inputs: &[Arc<InputInfo>],
    mappings: &[&CompiledMapping],
    present: &BTreeMap<u32, Vec<bool>>,
) -> Coverage {
    // Per name: (seen on an input with rows, matched on any).
    let mut names: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut known: Vec<String> = Vec::new();
    let mut unmapped: Vec<String> = Vec::new();
    for (info, m) in inputs.iter().zip(mappings) {
        let Some(flags) = present.get(&info.index) else {
            continue;
        };
        let registered = info.columns.snapshot();
        for (k, name) in registered.iter().enumerate() {
            if name == LATER_KEYS {
                continue;
            }
            let hit = flags.get(k).copied().unwrap_or(false);
            let e = names.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                (false, false)
            });
            e.0 = true;
            e.1 |= hit;
        }
        known.extend(m.known_paths.iter().cloned());
        if !m.uses_rest {
            let mapped: Vec<String> = registered.iter().map(|n| dotted(n)).collect();
            for p in m.sampled_paths.iter() {
                let covered = mapped.iter().any(|n| {
                    p == n
                        || (p.starts_with(n.as_str()) && p.as_bytes().get(n.len()) == Some(&b'.'))
                });
                if !covered && !unmapped.contains(p) {
                    unmapped.push(p.clone());
                }
            }
        }
    }
    known.sort();
    known.dedup();
    let never_matched = order
        .into_iter()
        .filter(|n| matches!(names.get(n), Some((true, false))))
        .map(|path| {
            let suggestion = suggest::nearest(&dotted(&path), known.iter().map(String::as_str))
                .map(str::to_string);
            Unmatched { path, suggestion }
        })
        .collect();
    Coverage {
        never_matched,
        unmapped_keys: unmapped,
    }
}
