//! The registry: who is registered, and the shared state each instance's actor and the
//! heartbeat hot path meet on.
//!
//! * The hot path finds an instance's [`RegistryEntry`] in a concurrent map and updates one
//!   atomic word of its [`HotCell`] (see [`cell`]).
//! * The [`InstanceActor`] owns the timer and is the only one that moves an instance to
//!   `Suspect` or `Expired`.
//! * The [`ClusterSupervisor`] is the only one that inserts or removes entries.
//!
//! Because the slot and its cell — not the actor — hold the liveness, a killed actor loses
//! nothing: its replacement reads the slot and carries on.
//!
//! [`InstanceActor`]: crate::actors::instance::InstanceActor
//! [`ClusterSupervisor`]: crate::actors::supervisor::ClusterSupervisor

pub mod cell;

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::ActorCell;

pub use cell::{CellRef, HotArena, HotCell, Renewal, Transition};

use crate::clock::MonoMs;
use crate::model::{Epoch, InstanceId, LeaderView, Term};

/// The parts of an instance that change only on (re-)registration.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Roles.
    pub roles: Vec<String>,
    /// Metadata object.
    pub metadata: serde_json::Value,
    /// Monotonic ms of the registration that started this epoch.
    pub registered_at: MonoMs,
}

/// One registered instance in one epoch. It dereferences to its [`CellRef`], so
/// `slot.liveness()`, `slot.status()` and the transitions read as what they are.
#[derive(Debug)]
pub struct InstanceSlot {
    /// The instance id.
    pub id: InstanceId,
    /// The epoch this slot belongs to; a new epoch is a new slot.
    pub epoch: Epoch,
    /// The principal this instance is bound to for its epoch (`None`: registered by an
    /// operator or on a server without identities).
    pub owner: Option<Arc<str>>,
    cell: Option<CellRef>,
    arena: Arc<HotArena>,
    finalized: AtomicBool,
    /// Whether the arena's counts by status still count this slot: from its creation until it
    /// leaves the registry ([`uncount`](Self::uncount)) or is dropped, whichever comes first.
    counted: AtomicBool,
    info: RwLock<InstanceInfo>,
    actor: Mutex<Option<ActorCell>>,
}

impl Deref for InstanceSlot {
    type Target = CellRef;

    #[inline]
    fn deref(&self) -> &CellRef {
        // Present from construction until `drop`.
        self.cell.as_ref().expect("cell present until drop")
    }
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            self.arena.release(cell, *self.counted.get_mut());
        }
    }
}

impl InstanceSlot {
    /// A fresh, active slot last seen at `now`, its cell taken from `arena`.
    pub fn new(
        arena: &Arc<HotArena>,
        id: InstanceId,
        epoch: Epoch,
        ttl_ms: u64,
        now: MonoMs,
        roles: Vec<String>,
        metadata: serde_json::Value,
    ) -> Self {
        let cell = arena.acquire(&id, now, ttl_ms);
        Self {
            id,
            epoch,
            owner: None,
            cell: Some(cell),
            arena: Arc::clone(arena),
            finalized: AtomicBool::new(false),
            counted: AtomicBool::new(true),
            info: RwLock::new(InstanceInfo {
                roles,
                metadata,
                registered_at: now,
            }),
            actor: Mutex::new(None),
        }
    }

    /// The same slot, bound to `owner` for its epoch.
    pub fn owned_by(mut self, owner: Option<Arc<str>>) -> Self {
        self.owner = owner;
        self
    }

    /// Sets when the instance first registered (a slot recovered from the store).
    pub fn set_registered_at(&self, at: MonoMs) {
        self.info.write().registered_at = at;
    }

    /// The registry entry for this slot.
    pub fn entry(self: &Arc<Self>) -> RegistryEntry {
        RegistryEntry {
            cell: self.cell.clone().expect("cell present until drop"),
            epoch: self.epoch,
            slot: Arc::clone(self),
        }
    }

    /// A re-registration: if the instance is alive at the precise time `now`, records it as a
    /// heartbeat then and replaces roles, metadata and TTL ([`Renewal::Renewed`]); otherwise
    /// the slot is terminal when this returns — expired now if its deadline had passed — and
    /// the caller finalizes it and starts a new epoch. One compare-and-swap decides (see
    /// [`CellRef::renew`]), so a concurrent heartbeat cannot leave it alive after a verdict of
    /// death.
    pub fn refresh(
        &self,
        now: MonoMs,
        roles: Vec<String>,
        metadata: serde_json::Value,
        ttl_ms: u64,
    ) -> Renewal {
        // Hold the info lock across the liveness change so a concurrent reader sees both.
        let mut info = self.info.write();
        let verdict = self.renew(now);
        if verdict == Renewal::Renewed {
            info.roles = roles;
            info.metadata = metadata;
            self.set_ttl_ms(ttl_ms);
        }
        verdict
    }

    /// Marks this slot as finalized (removed from the registry, leader told, event sent).
    /// Returns true only for the first caller, which makes finalization idempotent.
    pub fn claim_finalization(&self) -> bool {
        !self.finalized.swap(true, Ordering::AcqRel)
    }

    /// Takes this slot out of the arena's counts by status, once: when it leaves the registry,
    /// so the counts are of registered instances, however long something else (the leadership
    /// record, an actor winding down) still holds the slot. Called with the slot terminal
    /// (its status can no longer change), or at shutdown.
    pub fn uncount(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.arena.uncount(self.status());
        }
    }

    /// A copy of roles, metadata and registration time.
    pub fn info(&self) -> InstanceInfo {
        self.info.read().clone()
    }

    /// A copy of the roles alone (without the metadata [`info`](Self::info) also copies).
    pub fn roles(&self) -> Vec<String> {
        self.info.read().roles.clone()
    }

    /// The actor currently running this slot (untyped: the registry does not know the actor's
    /// messages; the actors module turns it back into its typed reference).
    pub fn actor(&self) -> Option<ActorCell> {
        self.actor.lock().clone()
    }

    /// Records the actor running this slot.
    pub fn set_actor(&self, actor: Option<ActorCell>) {
        *self.actor.lock() = actor;
    }
}

/// What the registry maps an id to: the hot cell, reachable without touching the slot (which
/// lives elsewhere on the heap), and the slot itself for the control path.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    /// The instance's hot cell.
    pub cell: CellRef,
    /// The slot's epoch, beside the cell: checking "is this instance live in this epoch" reads
    /// the entry and the cell, not the slot (which lives elsewhere on the heap).
    pub epoch: Epoch,
    /// The instance's slot.
    pub slot: Arc<InstanceSlot>,
}

/// The map from instance id to its live entry. Keys are looked up by `&str`, hashed with aHash
/// (fast and randomly seeded, so worker-chosen ids cannot be crafted to collide).
pub type Registry = DashMap<InstanceId, RegistryEntry, ahash::RandomState>;

/// Shards of the registry. Every lookup takes its shard's read lock, an atomic write to the
/// lock's cache line; with many shards two cores rarely touch the same line. 256 shards of an
/// empty map cost a few tens of KiB.
const REGISTRY_SHARDS: usize = 256;

/// An empty registry.
pub fn new_registry() -> Registry {
    DashMap::with_capacity_and_hasher_and_shard_amount(
        0,
        ahash::RandomState::new(),
        REGISTRY_SHARDS,
    )
}

/// The shared leadership record. Written only by the `LeaderActor` (one at a time: a restarted
/// one starts after the old one is gone) — and by recovery, before any actor runs — read by
/// everyone. It outlives the actor, so a restarted `LeaderActor` goes on from the same term.
///
/// It also holds the **term ceiling**: the highest term the store has durably reserved. A term
/// above it is never installed, so a restart, resuming above the stored ceiling, never hands a
/// term out twice. Without a durable store the ceiling is unbounded.
#[derive(Debug)]
pub struct Leadership {
    term: AtomicU64,
    ceiling: AtomicU64,
    current: RwLock<LeaderRecord>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self {
            term: AtomicU64::new(0),
            ceiling: AtomicU64::new(u64::MAX),
            current: RwLock::default(),
        }
    }
}

/// Who leads, as recorded in [`Leadership`].
#[derive(Debug, Clone, Default)]
pub struct LeaderRecord {
    /// The leader's slot, `None` while vacant.
    pub slot: Option<Arc<InstanceSlot>>,
    /// Monotonic ms of the last change.
    pub since: MonoMs,
}

impl Leadership {
    /// The current term (acquire: a reader that sees term `t` also sees the cell marked for `t`).
    #[inline]
    pub fn term(&self) -> Term {
        Term(self.term.load(Ordering::Acquire))
    }

    /// The current record.
    pub fn record(&self) -> LeaderRecord {
        self.current.read().clone()
    }

    /// The highest term that may be installed (`u64::MAX` without a durable store).
    pub fn ceiling(&self) -> u64 {
        self.ceiling.load(Ordering::Acquire)
    }

    /// Sets the term ceiling to what the store reserved (at start, before any election).
    pub fn set_ceiling(&self, ceiling: u64) {
        self.ceiling.store(ceiling, Ordering::Release);
    }

    /// Raises the term ceiling to `ceiling` once the store acknowledged that reservation.
    pub fn raise_ceiling(&self, ceiling: u64) {
        self.ceiling.fetch_max(ceiling, Ordering::AcqRel);
    }

    /// Installs `slot` (or a vacancy) as leader of `term`, which must lie within the ceiling.
    pub fn install(&self, term: Term, slot: Option<Arc<InstanceSlot>>, now: MonoMs) {
        debug_assert!(
            term.0 <= self.ceiling(),
            "term {} above the reserved ceiling {}",
            term.0,
            self.ceiling()
        );
        if let Some(slot) = &slot {
            slot.set_leads_term(term);
        }
        let mut current = self.current.write();
        *current = LeaderRecord { slot, since: now };
        self.term.store(term.0, Ordering::Release);
    }

    /// Whether the instance of `cell` leads in `term`.
    #[inline]
    pub fn leads(cell: &HotCell, term: Term) -> bool {
        term.0 != 0 && cell.leads_term() == term.0
    }

    /// The leader as shown to callers.
    pub fn view(&self, wall: impl Fn(MonoMs) -> u64) -> LeaderView {
        let record = self.record();
        LeaderView {
            leader: record.slot.as_ref().map(|s| s.id.clone()),
            epoch: record.slot.as_ref().map(|s| s.epoch),
            term: self.term(),
            since_ms: wall(record.since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(arena: &Arc<HotArena>, id: &str) -> Arc<InstanceSlot> {
        Arc::new(InstanceSlot::new(
            arena,
            InstanceId::cursor(id),
            Epoch(1),
            1000,
            0,
            Vec::new(),
            serde_json::Value::Null,
        ))
    }

    /// A slot is counted from its creation until it leaves the registry, however long
    /// something else (here a clone, as the leadership record keeps its leader's) holds it
    /// afterwards, and is never taken out of the counts twice.
    #[test]
    fn a_slot_is_counted_until_it_leaves_the_registry_and_only_once() {
        let arena = Arc::new(HotArena::default());
        let (a, b) = (slot(&arena, "a"), slot(&arena, "b"));
        assert_eq!(arena.counts(), [2, 0, 0, 0]);
        let held = Arc::clone(&a);
        assert_eq!(a.unregister(), Transition::Done);
        assert_eq!(arena.counts(), [1, 0, 0, 1]);
        a.uncount();
        assert_eq!(arena.counts(), [1, 0, 0, 0], "out of the registry");
        a.uncount();
        drop(a);
        assert_eq!(
            arena.counts(),
            [1, 0, 0, 0],
            "still held elsewhere: nothing changes"
        );
        drop(held);
        assert_eq!(arena.counts(), [1, 0, 0, 0], "dropped: not taken out twice");
        // Dropped without leaving the registry first (a registration that failed before it):
        // taken out once, on drop.
        drop(b);
        assert_eq!(arena.counts(), [0, 0, 0, 0]);
    }
}
