//! Pages of list-shaped answers: the limits every list obeys and the [`Page`] a list answers.
//! Each list reads its page off an ordered index from the cursor, so a page costs its own size,
//! not the size of the list.
//!
//! Every list over the wire (`system.get_state` instances and recent events, `task.list`,
//! `lease.list`) is ordered by id and returns at most `limit` items, [`DEFAULT_LIST_LIMIT`] when
//! the caller names none and never more than [`MAX_LIST_LIMIT`]. A caller pages by passing the
//! last id it saw as `after`.

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
