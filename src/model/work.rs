//! The identities of work: task ids, claim tokens and lease keys. They live below the work
//! book (in the model) because events, the store and the wire all name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ValidationError;

/// A task's id: `t-17` on the wire; `17` is accepted too (Sortie's integer step ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t-{}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("t-")
            .unwrap_or(s)
            .parse()
            .map(TaskId)
            .map_err(|_| format!("a task id is `t-<number>` or a number, got {s:?}"))
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(TaskId(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Where a task stands. On the wire the names are ClaudeBench's: `pending`, `in_progress`,
/// `completed`, `failed` (`claimed`, Vigil's earlier name, is still read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a worker.
    Pending,
    /// Held by a worker under a claim token (`in_progress` on the wire).
    #[serde(rename = "in_progress", alias = "claimed")]
    Claimed,
    /// Done (terminal).
    Completed,
    /// Out of attempts, or failed by an operator (terminal).
    Failed,
}

impl TaskStatus {
    /// The wire name (`in_progress` for a claimed task).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Reads a wire name; `claimed` is accepted for `in_progress`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "in_progress" | "claimed" => Some(Self::Claimed),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What a task event says of its task, so a listener can show it without asking: the text
/// (when the payload has one), status, priority and attempts. Never the claim token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskBrief {
    /// `payload.text` when it is a string (ClaudeBench's task text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Status after the event.
    pub status: TaskStatus,
    /// Priority 0–100.
    pub priority: u8,
    /// Attempts used so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
}

/// The fencing token of one claim: 128 random bits in hex. Every call on a claimed task must
/// present it; a wrong or old one is answered `stale_claim` and changes nothing.
///
/// A token is a capability: its `Debug` form is redacted, so it cannot reach a log through a
/// `{:?}` of anything that holds it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimToken(String);

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimToken(<redacted>)")
    }
}

impl ClaimToken {
    /// A fresh random token.
    pub fn mint() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The placeholder of a token that was not shown (a lease view read back by a client).
    /// It matches no claim.
    pub fn redacted() -> Self {
        Self(String::new())
    }

    /// A token as a caller presents it.
    pub fn from_presented(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Separates the levels of a lease key (`repo/src/main.rs`).
pub const SEPARATOR: char = '/';

/// Sortie's level separator, `§` (U+00A7, two bytes in UTF-8): it separates levels exactly as
/// [`SEPARATOR`] does, and the two mix freely (`file:ch01.tex§PLXDX`, `repo/src§lock`).
pub const SORTIE_SEPARATOR: char = '\u{a7}';

/// Every character that separates the levels of a lease key, in ascending order.
pub const SEPARATORS: [char; 2] = [SEPARATOR, SORTIE_SEPARATOR];

/// Each separator with the character that follows it: `[key + sep, key + next)` holds exactly
/// the keys that start with `key + sep`, because no character lies between the two.
const SEPARATOR_BOUNDS: [(char, char); 2] = [('/', '0'), ('\u{a7}', '\u{a8}')];

/// Longest lease key, in characters.
pub const MAX_KEY_CHARS: usize = 512;

/// A validated, hierarchical resource key. Shared text: the lease table's indexes hold copies
/// of it, and a copy is a reference count, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseKey(std::sync::Arc<str>);

impl LeaseKey {
    /// Validates `key`: 1–512 characters, no control characters, no empty level (`a//b`,
    /// `a§§b`, `a/§b`, a leading or trailing separator — `/` or `§`).
    pub fn parse(key: &str) -> Result<Self, ValidationError> {
        Self::parse_field(key, "key")
    }

    pub(crate) fn parse_field(key: &str, field: &str) -> Result<Self, ValidationError> {
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(ValidationError::new(
                field.to_string(),
                format!("a lease key must have 1 to {MAX_KEY_CHARS} characters, got {chars}"),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field.to_string(),
                "a lease key must not contain control characters",
            ));
        }
        if key.split(SEPARATORS).any(str::is_empty) {
            return Err(ValidationError::new(
                field.to_string(),
                format!(
                    "a lease key's levels, split by '{SEPARATOR}' or '{SORTIE_SEPARATOR}', must \
                     not be empty"
                ),
            ));
        }
        Ok(Self(key.into()))
    }

    /// A key taken as given, for builders; validation happens where it is used.
    pub(crate) fn unchecked(key: &str) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Proper ancestors, nearest last (`a`, `a/b` for `a/b/c`; `a`, `a/b` for `a/b§c`): the
    /// key cut before each separator, `/` or `§`. Byte indices of the separators are char
    /// boundaries, so the cuts are valid text.
    pub(crate) fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0
            .match_indices(SEPARATORS)
            .map(move |(i, _)| &self.0[..i])
    }

    /// The ranges of keys that are descendants, one per separator, in ascending key order:
    /// `[key/, key0)` holds exactly the keys starting with `key/` (`0` follows `/`), and
    /// `[key§, key¨)` exactly those starting with `key§` (`¨`, U+00A8, follows `§`, U+00A7;
    /// in UTF-8 both are `0xC2` and one byte that differs by one, so the byte order agrees).
    /// Every key of the first range sorts before every key of the second (`0` < `0xC2`).
    pub(crate) fn descendant_ranges(&self) -> [(String, String); 2] {
        SEPARATOR_BOUNDS
            .map(|(sep, next)| (format!("{}{sep}", self.0), format!("{}{next}", self.0)))
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for LeaseKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_token_never_shows_in_debug_output() {
        let token = ClaimToken::mint();
        let shown = format!("{token:?} {:?}", Some(vec![token.clone()]));
        assert!(!shown.contains(token.as_str()), "{shown}");
        assert!(shown.contains("redacted"));
    }

    fn key(k: &str) -> LeaseKey {
        LeaseKey::parse(k).unwrap()
    }

    #[test]
    fn each_separators_bound_is_the_next_character() {
        for (i, (sep, next)) in SEPARATOR_BOUNDS.into_iter().enumerate() {
            assert_eq!(sep, SEPARATORS[i]);
            assert_eq!(char::from_u32(sep as u32 + 1), Some(next));
        }
        assert_eq!(SORTIE_SEPARATOR, '§');
        assert_eq!(SORTIE_SEPARATOR.len_utf8(), 2);
    }

    #[test]
    fn both_separators_split_levels_and_empty_levels_are_refused() {
        for bad in [
            "a§§b", "§a", "a§", "§", "a/§b", "a§/b", "a//b", "/a", "a/", "/",
        ] {
            let err = LeaseKey::parse(bad).unwrap_err();
            assert_eq!(err.field, "key", "{bad:?}");
            assert!(err.rule.contains("must not be empty"), "{bad:?}: {err:?}");
        }
        for good in ["file:ch01.tex§PLXDX", "repo/src§lock", "a§b/c§d"] {
            assert!(LeaseKey::parse(good).is_ok(), "{good:?}");
        }
        // `§` counts as one character of the 512.
        let longest = format!("{}a", "a§".repeat(255)); // 511 characters, 766 bytes
        assert!(LeaseKey::parse(&format!("{longest}b")).is_ok());
        assert!(
            LeaseKey::parse(&format!("{longest}§b")).is_err(),
            "513 characters"
        );
    }

    #[test]
    fn ancestors_cut_at_either_separator() {
        let k = key("file:a/b.tex§sec1§PLXDX");
        assert_eq!(
            k.ancestors().collect::<Vec<_>>(),
            ["file:a", "file:a/b.tex", "file:a/b.tex§sec1"]
        );
        assert_eq!(key("a/b/c").ancestors().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(key("a§b/c").ancestors().collect::<Vec<_>>(), ["a", "a§b"]);
        assert_eq!(key("plain").ancestors().count(), 0);
    }

    #[test]
    fn the_descendant_ranges_hold_exactly_the_descendants() {
        let ranges = key("a").descendant_ranges();
        // The `/` range is byte for byte what it always was.
        assert_eq!(ranges[0], ("a/".to_string(), "a0".to_string()));
        assert_eq!(ranges[1], ("a§".to_string(), "a¨".to_string()));
        assert!(ranges[0].1 < ranges[1].0, "ascending, disjoint");
        let keys = [
            "a",
            "a/b",
            "a/b§c",
            "a§b",
            "a§b/c",
            "a§§",
            "a0",
            "a¢",
            "a¨",
            "a©",
            "ab",
            "a.",
            "a-",
            "a/",
            "a§",
            "aé",
            "b",
            "b/a",
            "b§a",
            "a\u{10000}",
        ];
        for k in keys {
            let by_text = k.starts_with("a/") || k.starts_with("a§");
            let by_range = ranges
                .iter()
                .any(|(from, to)| from.as_str() <= k && k < to.as_str());
            assert_eq!(by_text, by_range, "{k:?}");
        }
    }
}
