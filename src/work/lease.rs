//! Resource leases: time-limited holds on hierarchical keys.
//!
//! Keys are paths split by [`SEPARATOR`] (`repo/src/main.rs`) or Sortie's
//! [`SORTIE_SEPARATOR`] `§` (`file:ch01.tex§PLXDX`), mixed freely. Two holds conflict when their
//! keys are equal or one is an ancestor of the other, and at least one of them is exclusive:
//!
//! | held \ wanted           | shared        | exclusive |
//! |-------------------------|---------------|-----------|
//! | shared, same key        | ok            | conflict  |
//! | exclusive, same key     | conflict      | conflict  |
//! | ancestor or descendant  | as above      | as above  |
//! | sibling (`a/x` vs `a/y`)| ok            | ok        |
//!
//! A key's ancestors are looked up one by one (at most one per separator in it); its
//! descendants lie in two ranges of the ordered table, `key/…` and `key§…`
//! (`LeaseKey::descendant_ranges`), so no conflict check scans the table.
//!
//! A holder never conflicts with itself. Every grant carries a fencing token from one counter
//! that only grows, so a resource can refuse a write that presents an older token than one it
//! has already seen. A lease past its expiry counts as gone for conflicts at once; the sweep
//! reaps it and publishes `lease.expired`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::clock::MonoMs;
use crate::model::work::{ClaimToken, TaskId};
use crate::model::{Epoch, InstanceId, Page};

pub use crate::model::work::{LeaseKey, MAX_KEY_CHARS, SEPARATOR, SEPARATORS, SORTIE_SEPARATOR};

/// Exclusive or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LeaseMode {
    /// One holder; conflicts with any other hold on the key, its ancestors or descendants.
    #[default]
    Exclusive,
    /// Many holders; conflicts only with exclusive holds.
    Shared,
}

/// Who holds a lease: a task's claim (released with the claim) or an instance (released when
/// it expires or unregisters, like an etcd lease bound to a session). Serialized, a claim
/// holder shows its task and not its token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LeaseHolder {
    /// A claim on a task.
    #[serde(rename_all = "camelCase")]
    Claim {
        /// The task.
        task_id: TaskId,
        /// The claim token. Never serialized: a lease view names the claim by its task, and the
        /// token is shown only in the answer to the claim that minted it. (The store keeps it
        /// in [`GrantRecord::claim_token`](crate::work::records::GrantRecord::claim_token).)
        /// Read back as redacted when absent.
        #[serde(skip_serializing, default = "ClaimToken::redacted")]
        claim_token: ClaimToken,
    },
    /// An instance, in one epoch.
    #[serde(rename_all = "camelCase")]
    Instance {
        /// The instance.
        instance_id: InstanceId,
        /// Its epoch.
        epoch: Epoch,
    },
}

/// One granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseGrant {
    /// The key.
    pub key: LeaseKey,
    /// The mode.
    pub mode: LeaseMode,
    /// The holder.
    pub holder: LeaseHolder,
    /// Monotonic fencing token of this grant.
    pub fencing_token: u64,
    /// Monotonic ms when it was granted.
    #[serde(skip)]
    pub acquired_at: MonoMs,
    /// Monotonic ms when it lapses unless renewed.
    #[serde(skip)]
    pub expires_at: MonoMs,
    /// Wall-clock ms when it lapses.
    pub expires_at_ms: u64,
}

impl LeaseGrant {
    /// Whether it has lapsed at `now`.
    pub fn expired(&self, now: MonoMs) -> bool {
        now >= self.expires_at
    }
}

/// A conflicting hold, as reported to a refused acquirer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseConflict {
    /// The key that is held.
    pub key: LeaseKey,
    /// How it is held.
    pub mode: LeaseMode,
}

/// Every lease, by key, with two indexes so no operation walks the table: the keys each holder
/// holds (a claim's or an instance's leases are found and released without a scan) and the
/// grants in order of expiry (the sweep reaps only what is due).
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    by_key: BTreeMap<LeaseKey, Vec<LeaseGrant>>,
    by_holder: HashMap<LeaseHolder, BTreeSet<LeaseKey>, ahash::RandomState>,
    /// The instances (with their epochs) that hold leases, in order: the sweep's safety net
    /// walks them a bounded chunk at a time.
    instance_holders: BTreeSet<(InstanceId, Epoch)>,
    /// Grants by (expiry, fencing token): a fencing token names one grant (a holder's
    /// re-acquisition keeps its token), so the pair is unique.
    by_expiry: BTreeMap<(MonoMs, u64), LeaseKey>,
    next_fencing_token: u64,
}

fn conflicts(wanted: LeaseMode, held: LeaseMode) -> bool {
    wanted == LeaseMode::Exclusive || held == LeaseMode::Exclusive
}

type Entry<'a> = (&'a LeaseKey, &'a Vec<LeaseGrant>);

impl LeaseTable {
    fn descendants<'a>(&'a self, key: &LeaseKey) -> impl Iterator<Item = Entry<'a>> + use<'a> {
        use std::ops::Bound;
        key.descendant_ranges()
            .into_iter()
            .flat_map(move |(from, to)| {
                self.by_key
                    .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(to.as_str())))
            })
    }

    /// The live holds that stand in the way of `holder` taking `key` in `mode` at `now`.
    pub fn conflicts(
        &self,
        key: &LeaseKey,
        mode: LeaseMode,
        holder: &LeaseHolder,
        now: MonoMs,
    ) -> Vec<LeaseConflict> {
        let mut found = Vec::new();
        let mut check = |grants: &Vec<LeaseGrant>| {
            for g in grants {
                if &g.holder != holder && !g.expired(now) && conflicts(mode, g.mode) {
                    found.push(LeaseConflict {
                        key: g.key.clone(),
                        mode: g.mode,
                    });
                }
            }
        };
        if let Some(grants) = self.by_key.get(key) {
            check(grants);
        }
        for ancestor in key.ancestors() {
            if let Some(grants) = self.by_key.get(ancestor) {
                check(grants);
            }
        }
        for (_, grants) in self.descendants(key) {
            check(grants);
        }
        found
    }

    /// The grants on exactly `key`.
    pub fn grants(&self, key: &LeaseKey) -> Option<&[LeaseGrant]> {
        self.by_key
            .get(key)
            .map(Vec::as_slice)
            .filter(|g| !g.is_empty())
    }

    /// Every key with a grant.
    pub fn keys(&self) -> impl Iterator<Item = &LeaseKey> {
        self.by_key.keys()
    }

    /// The last fencing token handed out.
    pub fn last_fencing_token(&self) -> u64 {
        self.next_fencing_token
    }

    /// Moves the fencing counter forward to at least `last` (never back).
    pub fn advance_fencing_token(&mut self, last: u64) {
        self.next_fencing_token = self.next_fencing_token.max(last);
    }

    /// Puts back a grant recovered from the store.
    pub fn restore(&mut self, grant: LeaseGrant) {
        self.next_fencing_token = self.next_fencing_token.max(grant.fencing_token);
        self.insert(grant);
    }

    /// Files a new grant in the table and its indexes.
    fn insert(&mut self, grant: LeaseGrant) {
        self.index_holder(&grant.holder, &grant.key);
        self.by_expiry
            .insert((grant.expires_at, grant.fencing_token), grant.key.clone());
        self.by_key
            .entry(grant.key.clone())
            .or_default()
            .push(grant);
    }

    fn index_holder(&mut self, holder: &LeaseHolder, key: &LeaseKey) {
        let keys = self.by_holder.entry(holder.clone()).or_default();
        if keys.is_empty()
            && let LeaseHolder::Instance { instance_id, epoch } = holder
        {
            self.instance_holders.insert((instance_id.clone(), *epoch));
        }
        keys.insert(key.clone());
    }

    fn unindex_holder(&mut self, holder: &LeaseHolder, key: &LeaseKey) {
        if let Some(keys) = self.by_holder.get_mut(holder) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_holder.remove(holder);
                if let LeaseHolder::Instance { instance_id, epoch } = holder {
                    self.instance_holders.remove(&(instance_id.clone(), *epoch));
                }
            }
        }
    }

    /// Grants `key` in `mode` to `holder` until `expires_at`, or answers the conflicting holds.
    /// A holder that already holds `key` keeps its grant and fencing token, with the new mode
    /// and expiry.
    pub fn acquire(
        &mut self,
        key: LeaseKey,
        mode: LeaseMode,
        holder: LeaseHolder,
        now: MonoMs,
        expires_at: MonoMs,
        wall: impl Fn(MonoMs) -> u64,
    ) -> Result<LeaseGrant, Vec<LeaseConflict>> {
        let found = self.conflicts(&key, mode, &holder, now);
        if !found.is_empty() {
            return Err(found);
        }
        if let Some(existing) = self
            .by_key
            .get_mut(&key)
            .and_then(|grants| grants.iter_mut().find(|g| g.holder == holder))
        {
            existing.mode = mode;
            let token = existing.fencing_token;
            let before = std::mem::replace(&mut existing.expires_at, expires_at);
            existing.expires_at_ms = wall(expires_at);
            let grant = existing.clone();
            self.by_expiry.remove(&(before, token));
            self.by_expiry.insert((expires_at, token), key);
            return Ok(grant);
        }
        self.next_fencing_token += 1;
        let grant = LeaseGrant {
            key,
            mode,
            holder,
            fencing_token: self.next_fencing_token,
            acquired_at: now,
            expires_at,
            expires_at_ms: wall(expires_at),
        };
        self.insert(grant.clone());
        Ok(grant)
    }

    /// Extends `holder`'s unexpired grant on `key` to `expires_at`.
    pub fn renew(
        &mut self,
        key: &LeaseKey,
        holder: &LeaseHolder,
        now: MonoMs,
        expires_at: MonoMs,
        wall: impl Fn(MonoMs) -> u64,
    ) -> Option<LeaseGrant> {
        let grant = self
            .by_key
            .get_mut(key)?
            .iter_mut()
            .find(|g| &g.holder == holder && !g.expired(now))?;
        let before = std::mem::replace(&mut grant.expires_at, expires_at);
        grant.expires_at_ms = wall(expires_at);
        let grant = grant.clone();
        self.by_expiry.remove(&(before, grant.fencing_token));
        self.by_expiry
            .insert((expires_at, grant.fencing_token), key.clone());
        Some(grant)
    }

    /// Removes `holder`'s grant on `key`.
    pub fn release(&mut self, key: &LeaseKey, holder: &LeaseHolder) -> Option<LeaseGrant> {
        let grants = self.by_key.get_mut(key)?;
        let index = grants.iter().position(|g| &g.holder == holder)?;
        let grant = grants.swap_remove(index);
        if grants.is_empty() {
            self.by_key.remove(key);
        }
        self.by_expiry
            .remove(&(grant.expires_at, grant.fencing_token));
        self.unindex_holder(holder, key);
        Some(grant)
    }

    /// Removes every grant of `holder`, found through the holder index.
    pub fn release_holder(&mut self, holder: &LeaseHolder) -> Vec<LeaseGrant> {
        let keys: Vec<LeaseKey> = self
            .by_holder
            .get(holder)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .filter_map(|key| self.release(key, holder))
            .collect()
    }

    /// Removes at most `limit` grants lapsed at `now`, soonest-expired first, found through
    /// the expiry index: fewer than `limit` returned means none lapsed is left.
    pub fn reap(&mut self, now: MonoMs, limit: usize) -> Vec<LeaseGrant> {
        let due: Vec<((MonoMs, u64), LeaseKey)> = self
            .by_expiry
            .range(..(now + 1, 0))
            .take(limit)
            .map(|(at, key)| (*at, key.clone()))
            .collect();
        let mut reaped = Vec::with_capacity(due.len());
        for (at, key) in due {
            let holder = self
                .by_key
                .get(&key)
                .and_then(|grants| grants.iter().find(|g| g.fencing_token == at.1))
                .map(|g| g.holder.clone());
            match holder.and_then(|h| self.release(&key, &h)) {
                Some(grant) => reaped.push(grant),
                None => {
                    // Unreachable while the index is kept in step; never loop on it.
                    debug_assert!(false, "expiry index names a missing grant on {key}");
                    self.by_expiry.remove(&at);
                }
            }
        }
        reaped
    }

    /// `holder`'s grants, through the holder index.
    pub fn held_by(&self, holder: &LeaseHolder) -> Vec<LeaseGrant> {
        let Some(keys) = self.by_holder.get(holder) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|key| self.by_key.get(key))
            .flat_map(|grants| grants.iter().filter(|g| &g.holder == holder))
            .cloned()
            .collect()
    }

    /// How many instances (in an epoch) hold leases.
    pub fn instance_holder_count(&self) -> usize {
        self.instance_holders.len()
    }

    /// The instances (with their epochs) holding leases, in order, after `after` (from the
    /// first when `None`).
    pub fn instance_holders_after<'a>(
        &'a self,
        after: Option<&(InstanceId, Epoch)>,
    ) -> impl Iterator<Item = &'a (InstanceId, Epoch)> + 'a {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.instance_holders.range((from, Bound::Unbounded))
    }

    /// Every lease under `prefix` (the key itself and its descendants), or all.
    pub fn list(&self, prefix: Option<&LeaseKey>) -> Vec<LeaseGrant> {
        match prefix {
            None => self.by_key.values().flatten().cloned().collect(),
            Some(key) => self
                .by_key
                .get(key)
                .into_iter()
                .flatten()
                .chain(self.descendants(key).flat_map(|(_, g)| g))
                .cloned()
                .collect(),
        }
    }

    /// Checks that the indexes agree with the table (tests).
    #[cfg(test)]
    pub fn check_indexes(&self) {
        let grants: Vec<&LeaseGrant> = self.by_key.values().flatten().collect();
        assert_eq!(grants.len(), self.by_expiry.len(), "expiry index size");
        for g in &grants {
            assert_eq!(
                self.by_expiry.get(&(g.expires_at, g.fencing_token)),
                Some(&g.key),
                "expiry index entry of {g:?}"
            );
            assert!(
                self.by_holder
                    .get(&g.holder)
                    .is_some_and(|keys| keys.contains(&g.key)),
                "holder index entry of {g:?}"
            );
        }
        let indexed: usize = self.by_holder.values().map(BTreeSet::len).sum();
        assert_eq!(indexed, grants.len(), "holder index size");
        let instances = self
            .by_holder
            .keys()
            .filter(|h| matches!(h, LeaseHolder::Instance { .. }))
            .count();
        assert_eq!(instances, self.instance_holders.len(), "instance holders");
    }

    /// One page of the grants under `prefix` (or all), ordered by key and then fencing token:
    /// at most `limit` after the cursor `after`, and how many there are in all. Without a
    /// prefix the page starts at the cursor and the count is the index's size: its cost is the
    /// page's, not the table's. Under a prefix the count walks that subtree.
    pub fn page(
        &self,
        prefix: Option<&LeaseKey>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Page<LeaseGrant> {
        use std::ops::Bound;
        // The prefix itself, then its descendants under `/`, then under `§`: ascending key
        // order, which the cursor relies on.
        let (keys, mut total): (Box<dyn Iterator<Item = Entry<'_>>>, Option<usize>) = match prefix {
            None => {
                let from = after.map_or(Bound::Unbounded, |(k, _)| Bound::Included(k));
                (
                    Box::new(self.by_key.range::<str, _>((from, Bound::Unbounded))),
                    Some(self.len()),
                )
            }
            Some(key) => (
                Box::new(
                    self.by_key
                        .get_key_value(key)
                        .into_iter()
                        .chain(self.descendants(key)),
                ),
                None,
            ),
        };
        let counting = total.is_none();
        let mut counted = 0;
        let mut items = Vec::new();
        let mut truncated = false;
        for (key, grants) in keys {
            counted += grants.len();
            if truncated || after.is_some_and(|(k, _)| key.as_str() < k) {
                if counting {
                    continue;
                }
                break;
            }
            let mut sorted: Vec<&LeaseGrant> = grants.iter().collect();
            sorted.sort_by_key(|g| g.fencing_token);
            for g in sorted {
                if after.is_some_and(|(k, t)| key.as_str() == k && g.fencing_token <= t) {
                    continue;
                }
                if items.len() == limit {
                    truncated = true;
                    break;
                }
                items.push(g.clone());
            }
        }
        Page {
            items,
            total: *total.get_or_insert(counted),
            truncated,
        }
    }

    /// How many grants are held (every grant is in the expiry index once).
    pub fn len(&self) -> usize {
        self.by_expiry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> LeaseKey {
        LeaseKey::parse(k).unwrap()
    }

    fn holder(n: u64) -> LeaseHolder {
        LeaseHolder::Instance {
            instance_id: InstanceId::parse(&format!("w{n}"), &Default::default()).unwrap(),
            epoch: Epoch(n),
        }
    }

    fn acquire(t: &mut LeaseTable, k: &str, mode: LeaseMode, h: u64) -> bool {
        t.acquire(key(k), mode, holder(h), 0, 1000, |m| m).is_ok()
    }

    /// Each case on an empty table: `held` granted to one holder, then whether `wanted` is
    /// granted to another.
    fn check_matrix(cases: &[(&str, LeaseMode, &str, LeaseMode, bool)]) {
        for &(held, held_mode, wanted, wanted_mode, granted) in cases {
            let mut t = LeaseTable::default();
            assert!(acquire(&mut t, held, held_mode, 1));
            assert_eq!(
                acquire(&mut t, wanted, wanted_mode, 2),
                granted,
                "{held} {held_mode:?} then {wanted} {wanted_mode:?}"
            );
            t.check_indexes();
        }
    }

    #[test]
    fn the_conflict_matrix() {
        use LeaseMode::{Exclusive as X, Shared as S};
        // (held key, held mode, wanted key, wanted mode, granted?)
        let cases = [
            ("a/b", S, "a/b", S, true),
            ("a/b", S, "a/b", X, false),
            ("a/b", X, "a/b", S, false),
            ("a/b", X, "a/b", X, false),
            ("a", X, "a/b", S, false),   // ancestor exclusive
            ("a", S, "a/b", X, false),   // ancestor shared vs exclusive
            ("a", S, "a/b", S, true),    // shared all the way
            ("a/b/c", S, "a", X, false), // descendant
            ("a/b/c", X, "a", S, false),
            ("a/b/c", S, "a", S, true),
            ("a/x", X, "a/y", X, true),  // siblings
            ("a/b", X, "a/bc", X, true), // not a descendant: a prefix of the text only
            ("ab", X, "a", X, true),
        ];
        check_matrix(&cases);
    }

    #[test]
    fn a_holder_never_conflicts_with_itself_and_keeps_its_token() {
        let mut t = LeaseTable::default();
        let first = t
            .acquire(key("a"), LeaseMode::Exclusive, holder(1), 0, 100, |m| m)
            .unwrap();
        let again = t
            .acquire(key("a"), LeaseMode::Exclusive, holder(1), 10, 200, |m| m)
            .unwrap();
        assert_eq!(first.fencing_token, again.fencing_token);
        assert_eq!(again.expires_at, 200);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn fencing_tokens_only_grow() {
        let mut t = LeaseTable::default();
        let a = t
            .acquire(key("a"), LeaseMode::Exclusive, holder(1), 0, 100, |m| m)
            .unwrap();
        t.release(&key("a"), &holder(1)).unwrap();
        let b = t
            .acquire(key("a"), LeaseMode::Exclusive, holder(2), 0, 100, |m| m)
            .unwrap();
        assert!(b.fencing_token > a.fencing_token);
    }

    #[test]
    fn an_expired_lease_no_longer_conflicts_and_is_reaped() {
        let mut t = LeaseTable::default();
        t.acquire(key("a"), LeaseMode::Exclusive, holder(1), 0, 100, |m| m)
            .unwrap();
        assert!(
            t.acquire(key("a"), LeaseMode::Exclusive, holder(2), 99, 200, |m| m)
                .is_err()
        );
        assert!(
            t.renew(&key("a"), &holder(1), 100, 300, |m| m).is_none(),
            "lapsed"
        );
        let reaped = t.reap(100, usize::MAX);
        assert_eq!(reaped.len(), 1);
        assert!(
            t.acquire(key("a"), LeaseMode::Exclusive, holder(2), 100, 200, |m| m)
                .is_ok()
        );
    }

    #[test]
    fn keys_are_validated() {
        for bad in ["", "/a", "a/", "a//b", "a\nb", "a§§b", "§a", "a§", "a/§b"] {
            assert!(LeaseKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LeaseKey::parse(&"k".repeat(513)).is_err());
        assert!(LeaseKey::parse("repo/src/main.rs").is_ok());
        assert!(LeaseKey::parse("file:ch01.tex§PLXDX").is_ok());
    }

    #[test]
    fn list_by_prefix() {
        let mut t = LeaseTable::default();
        for (k, h) in [("a", 1), ("a/b", 2), ("a/c/d", 3), ("ab", 4), ("b", 5)] {
            assert!(acquire(&mut t, k, LeaseMode::Shared, h));
        }
        let under_a: Vec<String> = t
            .list(Some(&key("a")))
            .into_iter()
            .map(|g| g.key.to_string())
            .collect();
        assert_eq!(under_a, ["a", "a/b", "a/c/d"]);
        assert_eq!(t.list(None).len(), 5);
    }

    #[test]
    fn sorties_separator_separates_levels_like_the_slash() {
        use LeaseMode::{Exclusive as X, Shared as S};
        // (held key, held mode, wanted key, wanted mode, granted?)
        let cases = [
            ("file:ch01.tex", X, "file:ch01.tex§PLXDX", S, false), // ancestor exclusive
            ("file:ch01.tex", S, "file:ch01.tex§PLXDX", X, false), // ancestor shared vs excl.
            ("file:ch01.tex", S, "file:ch01.tex§PLXDX", S, true),  // shared all the way
            ("file:ch01.tex§PLXDX", S, "file:ch01.tex", X, false), // descendant
            ("file:ch01.tex§PLXDX", X, "file:ch01.tex", S, false),
            ("file:ch01.tex§PLXDX", S, "file:ch01.tex", S, true),
            ("file:ch01.tex§sec1§PLXDX", X, "file:ch01.tex", X, false), // two levels down
            ("file:ch01.tex§A", X, "file:ch01.tex§B", X, true),         // siblings
            ("a§b", X, "a§bc", X, true),                                // a prefix of the text only
            ("a§b", X, "a¨", X, true),                                  // the range's upper bound
            ("a¢", X, "a", X, true), // a two-byte char before `§`
            // Mixed freely, either way round.
            ("repo", X, "repo/src§lock", X, false),
            ("repo/src", X, "repo/src§lock", S, false),
            ("repo§x", X, "repo§x/y", X, false),
            ("repo/src§lock", S, "repo", X, false),
            ("repo/src§lock", X, "repo/src/lock", X, true), // siblings across separators
            ("repo/src§lock", X, "repo§src/lock", X, true), // different ancestors
            ("a/b", X, "a§b", X, true),
        ];
        check_matrix(&cases);
    }

    #[test]
    fn conflicts_are_found_under_both_separators_at_once() {
        let mut t = LeaseTable::default();
        for (k, h) in [
            ("a/x", 1),
            ("a§y", 2),
            ("a0", 3),
            ("ab", 4),
            ("a¨", 5),
            ("a", 6),
        ] {
            assert!(acquire(&mut t, k, LeaseMode::Shared, h));
        }
        let found = t.conflicts(&key("a"), LeaseMode::Exclusive, &holder(9), 0);
        let mut keys: Vec<&str> = found.iter().map(|c| c.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["a", "a/x", "a§y"]);
        // The holder of `a` itself sees only the others.
        let found = t.conflicts(&key("a"), LeaseMode::Exclusive, &holder(6), 0);
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn list_and_page_by_prefix_cover_both_separators_in_key_order() {
        let mut t = LeaseTable::default();
        let held = [
            "a", "a/b", "a/c§d", "a0", "a¢", "a§b", "a§b/c", "a¨", "ab", "b", "b§a",
        ];
        for (h, k) in held.into_iter().enumerate() {
            assert!(acquire(&mut t, k, LeaseMode::Shared, h as u64));
        }
        let under_a: Vec<String> = t
            .list(Some(&key("a")))
            .into_iter()
            .map(|g| g.key.to_string())
            .collect();
        assert_eq!(under_a, ["a", "a/b", "a/c§d", "a§b", "a§b/c"]);
        // Paged two at a time, the cursor walks the same keys in the same order.
        let mut paged = Vec::new();
        let mut after: Option<(String, u64)> = None;
        loop {
            let page = t.page(
                Some(&key("a")),
                after.as_ref().map(|(k, f)| (k.as_str(), *f)),
                2,
            );
            assert_eq!(page.total, 5);
            let last = page
                .items
                .last()
                .map(|g| (g.key.to_string(), g.fencing_token));
            paged.extend(page.items.into_iter().map(|g| g.key.to_string()));
            if !page.truncated {
                break;
            }
            after = last;
        }
        assert_eq!(paged, under_a);
        let under_ab: Vec<String> = t
            .list(Some(&key("a§b")))
            .into_iter()
            .map(|g| g.key.to_string())
            .collect();
        assert_eq!(under_ab, ["a§b", "a§b/c"]);
    }
}
