//! Pages of list-shaped answers: the limits every list obeys, the [`Page`] a list answers, and
//! the selection of the first items after a cursor without sorting the whole list.
//!
//! Every list over the wire (`system.get_state` instances and recent events, `task.list`,
//! `lease.list`) is ordered by id and returns at most `limit` items, [`DEFAULT_LIST_LIMIT`] when
//! the caller names none and never more than [`MAX_LIST_LIMIT`]. A caller pages by passing the
//! last id it saw as `after`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// How many items a list answers when the caller gives no `limit` (100).
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// The largest `limit` a list accepts (1000); the JSON-RPC methods refuse a larger one with
/// −32602 naming `limit`, the Rust API clamps to it where it takes a limit.
pub const MAX_LIST_LIMIT: usize = 1000;

/// One page of a list ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// How many items match the query in all pages together (the cursor aside).
    pub total: usize,
    /// Whether more items follow the last one: ask again with its id as `after`.
    pub truncated: bool,
}

/// An item ordered by its key alone.
struct Keyed<K, T>(K, T);

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Ord, T> Eq for Keyed<K, T> {}

impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Keeps the `limit` smallest keys above a cursor out of items offered in any order, in
/// O(n log limit) time and O(limit) memory, and whether any key beyond them was offered.
///
/// Ask [`wants`](Self::wants) before building an item, so that only items that may make the
/// page are built (cloned, viewed).
pub(crate) struct FirstAfter<K, T> {
    after: Option<K>,
    /// `limit + 1`: one more than the page, to know whether more follow.
    keep: usize,
    heap: BinaryHeap<Keyed<K, T>>,
}

impl<K: Ord, T> FirstAfter<K, T> {
    /// The first `limit` items with a key above `after` (all keys when `None`).
    pub fn new(after: Option<K>, limit: usize) -> Self {
        let keep = limit.saturating_add(1);
        Self {
            after,
            keep,
            heap: BinaryHeap::with_capacity(keep.min(MAX_LIST_LIMIT + 1)),
        }
    }

    /// Whether an item with `key` would be kept now.
    pub fn wants(&self, key: &K) -> bool {
        if self.after.as_ref().is_some_and(|a| key <= a) {
            return false;
        }
        self.heap.len() < self.keep || self.heap.peek().is_some_and(|top| *key < top.0)
    }

    /// Offers an item; kept if it is among the smallest so far.
    pub fn offer(&mut self, key: K, item: T) {
        if !self.wants(&key) {
            return;
        }
        self.heap.push(Keyed(key, item));
        if self.heap.len() > self.keep {
            self.heap.pop();
        }
    }

    /// The kept items in key order, and whether more followed them.
    pub fn finish(self) -> (Vec<(K, T)>, bool) {
        let mut items: Vec<(K, T)> = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .map(|Keyed(k, t)| (k, t))
            .collect();
        let truncated = items.len() == self.keep;
        if truncated {
            items.pop();
        }
        (items, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(keys: &[u32], after: Option<u32>, limit: usize) -> (Vec<u32>, bool) {
        let mut page = FirstAfter::new(after, limit);
        for &k in keys {
            page.offer(k, ());
        }
        let (items, truncated) = page.finish();
        (items.into_iter().map(|(k, ())| k).collect(), truncated)
    }

    #[test]
    fn keeps_the_smallest_keys_after_the_cursor_in_order() {
        let keys = [9, 3, 7, 1, 5, 8, 2, 6, 4, 0];
        assert_eq!(first(&keys, None, 3), (vec![0, 1, 2], true));
        assert_eq!(first(&keys, Some(2), 3), (vec![3, 4, 5], true));
        assert_eq!(first(&keys, Some(6), 3), (vec![7, 8, 9], false));
        assert_eq!(first(&keys, Some(9), 3), (vec![], false));
        assert_eq!(first(&keys, None, 0), (vec![], true));
        assert_eq!(first(&[], None, 0), (vec![], false));
        assert_eq!(first(&keys, None, usize::MAX), ((0..10).collect(), false));
    }

    #[test]
    fn paging_visits_every_key_once() {
        // A scrambled permutation of 0..1000.
        let keys: Vec<u32> = (0..1000u32).map(|i| (i * 617) % 1000).collect();
        let mut seen: Vec<u32> = Vec::new();
        let mut after = None;
        for _ in 0..100 {
            let (page, truncated) = first(&keys, after, 37);
            seen.extend(&page);
            after = page.last().copied();
            if !truncated {
                break;
            }
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
