//! Acknowledgements arrive in any order; a checkpoint may cover only a contiguous prefix.
//!
//! Requests are numbered in the order the packer made them (`seq` 0, 1, 2, ...). Senders
//! finish them in any order, and a request may fail or be skipped. [`InOrder`] holds the
//! early arrivals and gives back, one by one, the items that extend the prefix of
//! requests that are all done: an item that is not done (a failed request) stops the
//! prefix there for good, since nothing after it may be counted as covered (vector's
//! `lib/vector-buffers/src/topology/acks.rs` does the same for its buffers).
//!
//! Invariant (tests below): items come out in `seq` order, each once, with no gap; an
//! item that is not done never comes out, and neither does anything after it.

use std::collections::BTreeMap;

/// Out-of-order items in, the contiguous done prefix out.
#[derive(Debug)]
pub struct InOrder<T> {
    /// The `seq` the prefix waits for.
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> InOrder<T> {
    /// Takes item number `seq`, in whatever order they come.
    pub fn push(&mut self, seq: u64, item: T) {
        self.waiting.insert(seq, item);
    }

    /// The next item of the prefix, if it has arrived and `done` says it is done; a
    /// not-done item stays where it is and holds the prefix.
    pub fn pop(&mut self, done: impl Fn(&T) -> bool) -> Option<T> {
        let entry = self.waiting.first_entry()?;
        if *entry.key() != self.next || !done(entry.get()) {
            return None;
        }
        self.next += 1;
        Some(entry.remove())
    }

    /// The items past the prefix: arrived, but held back by a gap or a not-done item.
    pub fn held(&self) -> impl Iterator<Item = &T> {
        self.waiting.values()
    }

    /// True when nothing is held back.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pushes `order` (each `(seq, done)`) and pops after every push, as the collector
    /// does; returns what came out.
    fn fold(order: &[(u64, bool)]) -> (Vec<u64>, InOrder<(u64, bool)>) {
        let mut f = InOrder::default();
        let mut out = Vec::new();
        for &(seq, done) in order {
            f.push(seq, (seq, done));
            while let Some((s, _)) = f.pop(|&(_, d)| d) {
                out.push(s);
            }
        }
        (out, f)
    }

    #[test]
    fn out_of_order_acknowledgements_come_out_as_a_contiguous_prefix() {
        let (out, f) = fold(&[(2, true), (0, true), (3, true), (1, true)]);
        assert_eq!(out, [0, 1, 2, 3]);
        assert!(f.is_empty());
        // A gap holds what came after it.
        let (out, f) = fold(&[(0, true), (2, true), (3, true)]);
        assert_eq!(out, [0]);
        assert_eq!(f.held().map(|&(s, _)| s).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_request_that_is_not_done_stops_the_prefix_for_good() {
        let (out, f) = fold(&[(0, true), (1, false), (2, true), (3, true)]);
        assert_eq!(out, [0]);
        assert_eq!(
            f.held().copied().collect::<Vec<_>>(),
            [(1, false), (2, true), (3, true)]
        );
    }

    proptest! {
        /// Any arrival order of `n` items with one possibly failed: the prefix is
        /// exactly the items before the first failed one (all of them when none failed).
        #[test]
        fn the_prefix_is_every_item_before_the_first_not_done(
            order in (1usize..40).prop_flat_map(|n| Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle()),
            failed in proptest::option::of(0u64..40),
        ) {
            let items: Vec<(u64, bool)> = order.iter().map(|&s| (s, Some(s) != failed)).collect();
            let (out, f) = fold(&items);
            let n = order.len() as u64;
            let end = failed.filter(|&x| x < n).unwrap_or(n);
            prop_assert_eq!(out, (0..end).collect::<Vec<_>>());
            prop_assert_eq!(f.held().count() as u64, n - end);
        }
    }
}
