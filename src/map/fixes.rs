//! Values that were not sent as they were read: cleaned into their type, or, not
//! parsing, dropped, sent as null or kept as text (`on_error`). The mappers count them
//! per column and chunk ([`ColumnFixes`], with a few examples); the packing stage adds
//! the chunks up in input order into [`ValueFixes`] per column, which the summary,
//! `validate` and the report show, so no value is changed or dropped without a word.

use serde::{Deserialize, Serialize};

/// What became of a value that was not sent as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fix {
    /// Cleaned into a number (`$1,234.50`, ` 42 `).
    Cleaned,
    /// Did not parse: left out (`on_error = "omit"`).
    Omitted,
    /// Did not parse: sent as null (`on_error = "null"`).
    Nulled,
    /// Did not parse: sent as its text (`on_error = "keep"`).
    Kept,
}

impl Fix {
    pub fn as_str(self) -> &'static str {
        match self {
            Fix::Cleaned => "cleaned",
            Fix::Omitted => "omitted",
            Fix::Nulled => "sent as null",
            Fix::Kept => "kept as text",
        }
    }
}

/// One column's fixes in a chunk.
#[derive(Debug, Clone, Default)]
pub struct ColumnFixes {
    pub cleaned: u64,
    pub omitted: u64,
    pub nulled: u64,
    pub kept: u64,
    /// The first few fixed values of the chunk: (0-based row, fix, the value as read).
    pub examples: Vec<(u64, Fix, String)>,
}

impl ColumnFixes {
    /// Examples kept per column and kind of fix.
    pub const EXAMPLES: usize = 3;

    pub fn is_empty(&self) -> bool {
        self.cleaned + self.omitted + self.nulled + self.kept == 0
    }

    pub fn count(&mut self, fix: Fix) -> &mut u64 {
        match fix {
            Fix::Cleaned => &mut self.cleaned,
            Fix::Omitted => &mut self.omitted,
            Fix::Nulled => &mut self.nulled,
            Fix::Kept => &mut self.kept,
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = ColumnFixes {
            examples: std::mem::take(&mut self.examples),
            ..ColumnFixes::default()
        };
        self.examples.clear();
    }
}

/// One column's fixes over a whole run or validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValueFixes {
    /// Values cleaned into numbers (`$1,234.50` → 1234.50).
    pub cleaned: u64,
    /// Values that did not parse, left out (`on_error = "omit"`).
    pub omitted: u64,
    /// Values that did not parse, sent as null (`on_error = "null"`).
    pub nulled: u64,
    /// Values that did not parse, sent as their text (`on_error = "keep"`).
    pub kept: u64,
    /// The first few of each kind, in input order.
    pub examples: Vec<FixExample>,
}

/// One fixed value: where it was and what it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FixExample {
    pub source: String,
    /// 1-based data row.
    pub row: u64,
    /// `cleaned`, `omitted`, `sent as null` or `kept as text`.
    pub fix: String,
    /// The value as read.
    pub value: String,
}

impl ValueFixes {
    /// Values dropped or kept as text (not cleaned).
    pub fn failed(&self) -> u64 {
        self.omitted + self.nulled + self.kept
    }

    /// Adds one chunk's counts of this column (rows numbered from `first_row`, 0-based,
    /// in `source`).
    pub fn add(&mut self, c: &ColumnFixes, source: &str) {
        self.cleaned += c.cleaned;
        self.omitted += c.omitted;
        self.nulled += c.nulled;
        self.kept += c.kept;
        for (row, fix, value) in &c.examples {
            let shown = self
                .examples
                .iter()
                .filter(|e| e.fix == fix.as_str())
                .count();
            if shown < ColumnFixes::EXAMPLES {
                self.examples.push(FixExample {
                    source: source.to_string(),
                    row: row + 1,
                    fix: fix.as_str().to_string(),
                    value: value.clone(),
                });
            }
        }
    }

    /// `12 cleaned, 3 kept as text (row 7: "N/A", ...)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.cleaned, "cleaned"),
            (self.omitted, "omitted"),
            (self.nulled, "sent as null"),
            (self.kept, "kept as text"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let examples: Vec<String> = self
            .examples
            .iter()
            .take(4)
            .map(|e| format!("row {} {:?} {}", e.row, e.value, e.fix))
            .collect();
        if examples.is_empty() {
            parts.join(", ")
        } else {
            format!("{} (e.g. {})", parts.join(", "), examples.join("; "))
        }
    }
}
