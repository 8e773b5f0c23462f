//! The registry: one shared slot per registered instance.
//!
//! A slot is what the heartbeat hot path and the instance's actor share. The hot path finds the
//! slot in a concurrent map and updates one atomic word; the [`InstanceActor`] owns the timer
//! and is the only one that moves a slot to `Suspect` or `Expired`; the
//! [`ClusterSupervisor`] is the only one that inserts or removes slots. Because the slot — not
//! the actor — holds the liveness, a killed actor loses nothing: its replacement reads the slot
//! and carries on.
//!
//! ## The liveness word
//!
//! Status and last-seen time are packed into one `AtomicU64` (2 bits of status, 62 bits of
//! milliseconds since the clock's start) so that a heartbeat and an expiry are each a single
//! compare-and-swap. Either the heartbeat lands first — and the actor, re-reading the word,
//! sees the fresh time and re-arms — or the expiry lands first and the heartbeat answers
//! `alive: false`. An instance is never answered "alive" after it was recorded expired, and a
//! heartbeat never resurrects it.
//!
//! [`InstanceActor`]: crate::actors::instance::InstanceActor
//! [`ClusterSupervisor`]: crate::actors::supervisor::ClusterSupervisor

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::ActorRef;

use crate::actors::instance::InstanceMsg;
use crate::clock::MonoMs;
use crate::model::{Epoch, InstanceId, InstanceStatus, LeaderView, Term};

const STATUS_SHIFT: u32 = 62;
const SEEN_MASK: u64 = (1 << STATUS_SHIFT) - 1;

fn pack(status: InstanceStatus, seen: MonoMs) -> u64 {
    let bits = match status {
        InstanceStatus::Active => 0,
        InstanceStatus::Suspect => 1,
        InstanceStatus::Expired => 2,
        InstanceStatus::Unregistered => 3,
    };
    (bits << STATUS_SHIFT) | (seen & SEEN_MASK)
}

fn unpack(word: u64) -> (InstanceStatus, MonoMs) {
    let status = match word >> STATUS_SHIFT {
        0 => InstanceStatus::Active,
        1 => InstanceStatus::Suspect,
        2 => InstanceStatus::Expired,
        _ => InstanceStatus::Unregistered,
    };
    (status, word & SEEN_MASK)
}

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

/// The outcome of an attempt to move a slot to a terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The slot moved.
    Done,
    /// Not yet: the deadline lies ahead, at this monotonic ms.
    NotDue(MonoMs),
    /// The slot was already terminal.
    AlreadyTerminal(InstanceStatus),
}

/// One registered instance in one epoch.
#[derive(Debug)]
pub struct InstanceSlot {
    /// The instance id.
    pub id: InstanceId,
    /// The epoch this slot belongs to; a new epoch is a new slot.
    pub epoch: Epoch,
    liveness: AtomicU64,
    ttl_ms: AtomicU64,
    leads_term: AtomicU64,
    finalized: AtomicBool,
    info: RwLock<InstanceInfo>,
    actor: Mutex<Option<ActorRef<InstanceMsg>>>,
}

impl InstanceSlot {
    /// A fresh, active slot last seen at `now`.
    pub fn new(
        id: InstanceId,
        epoch: Epoch,
        ttl_ms: u64,
        now: MonoMs,
        roles: Vec<String>,
        metadata: serde_json::Value,
    ) -> Self {
        Self {
            id,
            epoch,
            liveness: AtomicU64::new(pack(InstanceStatus::Active, now)),
            ttl_ms: AtomicU64::new(ttl_ms),
            leads_term: AtomicU64::new(0),
            finalized: AtomicBool::new(false),
            info: RwLock::new(InstanceInfo {
                roles,
                metadata,
                registered_at: now,
            }),
            actor: Mutex::new(None),
        }
    }

    /// Status and last-seen time, read together.
    pub fn liveness(&self) -> (InstanceStatus, MonoMs) {
        unpack(self.liveness.load(Ordering::Acquire))
    }

    /// The status.
    pub fn status(&self) -> InstanceStatus {
        self.liveness().0
    }

    /// The TTL in ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    /// The deadline after a heartbeat at `seen`.
    pub fn deadline_after(&self, seen: MonoMs) -> MonoMs {
        seen + self.ttl_ms()
    }

    /// The hot path: records a heartbeat stamped `stamp` if the instance is alive and its
    /// deadline (judged by the coarse time `coarse_now`) has not passed. Returns whether the
    /// instance is alive. Never allocates, never blocks; one CAS at most (none when the word
    /// already holds `stamp`, which spares the cache line when a worker heartbeats faster than
    /// the clock ticks).
    #[inline]
    pub fn touch(&self, stamp: MonoMs, coarse_now: MonoMs) -> bool {
        let ttl = self.ttl_ms();
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() || coarse_now >= seen + ttl {
                return false;
            }
            if status == InstanceStatus::Active && seen >= stamp {
                return true;
            }
            let next = pack(InstanceStatus::Active, seen.max(stamp));
            match self.liveness.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves an active slot to `Suspect` if `now` is at or past `suspect_at(seen)`. Returns true
    /// when it moved.
    pub fn mark_suspect(&self, now: MonoMs, grace_ms: u64) -> bool {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if status != InstanceStatus::Active || now < self.suspect_at(seen, grace_ms) {
                return false;
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(InstanceStatus::Suspect, seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// When an instance last seen at `seen` becomes suspect: `grace` before its deadline, the
    /// grace being at most half the TTL.
    pub fn suspect_at(&self, seen: MonoMs, grace_ms: u64) -> MonoMs {
        let ttl = self.ttl_ms();
        seen + ttl - grace_ms.min(ttl / 2)
    }

    /// Moves the slot to `Expired` if its deadline passed at `now`.
    pub fn expire_if_due(&self, now: MonoMs) -> Transition {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() {
                return Transition::AlreadyTerminal(status);
            }
            let deadline = self.deadline_after(seen);
            if now < deadline {
                return Transition::NotDue(deadline);
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(InstanceStatus::Expired, seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Transition::Done,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves a live slot to `Unregistered`.
    pub fn unregister(&self) -> Transition {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() {
                return Transition::AlreadyTerminal(status);
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(InstanceStatus::Unregistered, seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Transition::Done,
                Err(actual) => current = actual,
            }
        }
    }

    /// A re-registration of a live instance: records it as a heartbeat at the precise time
    /// `now` and replaces roles, metadata and TTL. Returns false (and changes nothing) when the
    /// slot is terminal or its deadline passed — the caller then starts a new epoch.
    pub fn refresh(
        &self,
        now: MonoMs,
        roles: Vec<String>,
        metadata: serde_json::Value,
        ttl_ms: u64,
    ) -> bool {
        // Hold the info lock across the liveness change so a concurrent `view()` sees both.
        let mut info = self.info.write();
        if !self.touch(now, now) {
            return false;
        }
        info.roles = roles;
        info.metadata = metadata;
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
        true
    }

    /// Marks this slot as finalized (removed from the registry, leader told, event sent).
    /// Returns true only for the first caller, which makes finalization idempotent.
    pub fn claim_finalization(&self) -> bool {
        !self.finalized.swap(true, Ordering::AcqRel)
    }

    /// The term this instance was elected in (0: never).
    pub fn leads_term(&self) -> u64 {
        self.leads_term.load(Ordering::Acquire)
    }

    /// Records that this instance leads in `term`. Must be written *before* the shared term is
    /// published, so that a heartbeat reading the new term also sees this.
    pub fn set_leads_term(&self, term: Term) {
        self.leads_term.store(term.0, Ordering::Release);
    }

    /// A copy of roles, metadata and registration time.
    pub fn info(&self) -> InstanceInfo {
        self.info.read().clone()
    }

    /// The actor currently running this slot.
    pub fn actor(&self) -> Option<ActorRef<InstanceMsg>> {
        self.actor.lock().clone()
    }

    /// Records the actor running this slot.
    pub fn set_actor(&self, actor: Option<ActorRef<InstanceMsg>>) {
        *self.actor.lock() = actor;
    }
}

/// The shared leadership record. Written only by the `LeaderActor` (one at a time: a restarted
/// one starts after the old one is gone), read by everyone. It outlives the actor, so a
/// restarted `LeaderActor` goes on from the same term.
#[derive(Debug, Default)]
pub struct Leadership {
    term: AtomicU64,
    current: RwLock<LeaderRecord>,
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
    /// The current term (acquire: a reader that sees term `t` also sees the slot marked for `t`).
    #[inline]
    pub fn term(&self) -> Term {
        Term(self.term.load(Ordering::Acquire))
    }

    /// The current record.
    pub fn record(&self) -> LeaderRecord {
        self.current.read().clone()
    }

    /// Installs `slot` (or a vacancy) as leader of `term`.
    pub fn install(&self, term: Term, slot: Option<Arc<InstanceSlot>>, now: MonoMs) {
        if let Some(slot) = &slot {
            slot.set_leads_term(term);
        }
        let mut current = self.current.write();
        *current = LeaderRecord { slot, since: now };
        self.term.store(term.0, Ordering::Release);
    }

    /// Whether `slot` leads in `term`.
    #[inline]
    pub fn leads(slot: &InstanceSlot, term: Term) -> bool {
        term.0 != 0 && slot.leads_term() == term.0
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

/// The map from instance id to its live slot. Keys are looked up by `&str`, hashed with aHash
/// (fast and randomly seeded, so worker-chosen ids cannot be crafted to collide).
pub type Registry = DashMap<InstanceId, Arc<InstanceSlot>, ahash::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(ttl: u64) -> InstanceSlot {
        let id = InstanceId::parse("w", &Default::default()).unwrap();
        InstanceSlot::new(id, Epoch(1), ttl, 0, vec![], serde_json::json!({}))
    }

    #[test]
    fn packing_round_trips_every_status() {
        for status in [
            InstanceStatus::Active,
            InstanceStatus::Suspect,
            InstanceStatus::Expired,
            InstanceStatus::Unregistered,
        ] {
            assert_eq!(unpack(pack(status, 123_456)), (status, 123_456));
        }
    }

    #[test]
    fn touch_refreshes_until_the_deadline_and_never_after_expiry() {
        let s = slot(1000);
        assert!(s.touch(500, 499));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 500));
        // A stale stamp never moves last-seen backwards.
        assert!(s.touch(400, 499));
        assert_eq!(s.liveness().1, 500);
        assert_eq!(s.expire_if_due(1499), Transition::NotDue(1500));
        assert_eq!(s.expire_if_due(1500), Transition::Done);
        assert!(!s.touch(1501, 1500));
        assert_eq!(s.status(), InstanceStatus::Expired);
    }

    #[test]
    fn heartbeat_after_the_deadline_does_not_resurrect() {
        let s = slot(1000);
        // The actor has not run yet, but the coarse clock says the deadline passed.
        assert!(!s.touch(1001, 1000));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 0));
    }

    #[test]
    fn suspect_is_cleared_by_a_heartbeat() {
        let s = slot(10_000);
        assert!(!s.mark_suspect(4_999, 5_000));
        assert!(s.mark_suspect(5_000, 5_000));
        assert_eq!(s.status(), InstanceStatus::Suspect);
        assert!(s.touch(6_000, 6_000));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 6_000));
    }

    #[test]
    fn grace_is_at_most_half_the_ttl() {
        let s = slot(1000);
        assert_eq!(s.suspect_at(0, 5000), 500);
    }
}
