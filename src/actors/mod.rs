//! The actor tree.
//!
//! ```text
//! ClusterSupervisor ─┬─ InstanceActor (one per registered instance: TTL timer, state machine)
//!                    ├─ InstanceActor …
//!                    └─ LeaderActor   (election, term)
//! ```
//!
//! The actors own *decisions* (when an instance is suspect or expired, who leads); the state
//! those decisions are made on lives in the [`ClusterContext`] they share with the heartbeat
//! hot path. That split is what lets a killed actor be replaced without losing anything: the
//! [`supervisor::ClusterSupervisor`] restarts it on the same shared state.

pub mod instance;
pub mod leader;
pub mod persister;
pub mod supervisor;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock::LivenessClock;
use crate::config::Config;
use crate::events::{Event, EventBus, EventKind};
use crate::model::Epoch;
use crate::registry::{HotArena, InstanceSlot, Leadership, Registry};
use crate::work::{Op, WorkBook, WorkSettings};

/// What the actors and the coordinator handle share.
#[derive(Debug)]
pub struct ClusterContext {
    /// The configuration the coordinator started with.
    pub config: Config,
    /// The liveness clock.
    pub clock: Arc<LivenessClock>,
    /// Live instances by id.
    pub registry: Registry,
    /// The registered ids in order, for pages of instances without a walk over the registry.
    /// Changed only by the supervisor (one at a time), through [`admit`](Self::admit) and
    /// [`evict`](Self::evict); it may name an id for the moment between its removal from the
    /// registry and from here, so readers skip ids the registry no longer has.
    pub registry_order: parking_lot::RwLock<std::collections::BTreeSet<crate::model::InstanceId>>,
    /// The leader and the term.
    pub leadership: Leadership,
    /// The event bus.
    pub events: EventBus,
    /// Where instances' hot cells are allocated.
    pub arena: Arc<HotArena>,
    /// Tasks and leases.
    pub work: parking_lot::Mutex<WorkBook>,
    /// The durable store, when there is one.
    pub persistence: Option<Arc<crate::store::Persistence>>,
    /// With high availability, whether this coordinator may still act as the active one.
    pub gate: Option<crate::clock::ActiveGate>,
    next_epoch: AtomicU64,
    shutting_down: AtomicBool,
}

impl ClusterContext {
    /// A fresh context for `config`, journaling changes for `persistence` if given.
    pub fn new(config: Config, persistence: Option<Arc<crate::store::Persistence>>) -> Self {
        let clock = LivenessClock::new(config.clock_tick);
        let events = EventBus::new(
            config.event_capacity,
            config.recent_events,
            persistence
                .as_ref()
                .map(|p| Arc::clone(&p.journal) as Arc<dyn crate::events::EventSink>),
        );
        let work = WorkBook::new(WorkSettings {
            step_timeout_ms: config.step_timeout.as_millis() as u64,
            claim_lease_ttl_ms: config.lease_ttl.as_millis() as u64,
            finished_retention: config.finished_task_retention,
            claim_scan_limit: 10_000,
        });
        Self {
            config,
            clock,
            registry: crate::registry::new_registry(),
            registry_order: parking_lot::RwLock::default(),
            leadership: Leadership::default(),
            events,
            arena: Arc::default(),
            work: parking_lot::Mutex::new(work),
            persistence,
            gate: None,
            next_epoch: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Whether this coordinator may act as the active one: always without a gate; with one,
    /// until its deadline passes or it is closed. Past it nothing expires, no leader is
    /// elected and no sweep runs: a successor may already own the cluster.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.is_open())
    }

    /// Puts `slot` in the registry (replacing any slot under its id) and in the id order.
    pub fn admit(&self, slot: &Arc<InstanceSlot>) {
        self.registry.insert(slot.id.clone(), slot.entry());
        self.registry_order.write().insert(slot.id.clone());
    }

    /// Takes `slot` out of the registry if it is still the one under its id (a newer epoch's
    /// slot stays), its id out of the order when nothing is left under it, and the slot out of
    /// the counts by status.
    pub fn evict(&self, slot: &Arc<InstanceSlot>) {
        self.registry
            .remove_if(&slot.id, |_, current| Arc::ptr_eq(&current.slot, slot));
        slot.uncount();
        if !self.registry.contains_key(slot.id.as_str()) {
            self.registry_order.write().remove(&slot.id);
        }
    }

    /// A new epoch, greater than every one handed out before.
    pub fn next_epoch(&self) -> Epoch {
        Epoch(self.next_epoch.fetch_add(1, Ordering::Relaxed))
    }

    /// The last epoch handed out (0: none).
    pub fn last_epoch(&self) -> u64 {
        self.next_epoch.load(Ordering::Relaxed) - 1
    }

    /// Makes the next epoch greater than `last` (recovery).
    pub fn advance_epoch(&self, last: u64) {
        self.next_epoch.fetch_max(last + 1, Ordering::Relaxed);
    }

    /// The grace period in ms (each instance clamps it to half its TTL).
    pub fn grace_ms(&self) -> u64 {
        self.config.grace.as_millis() as u64
    }

    /// Marks the coordinator as stopping: supervisors stop restarting actors.
    pub fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::AcqRel)
    }

    /// Whether the coordinator is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Runs `f` on the work book under its lock and publishes the events it produced before
    /// letting go, so event order is the order operations took effect in. (Lock order: the
    /// work lock, then the event bus; a registry guard is never held while taking either.)
    pub fn with_work<R>(&self, f: impl FnOnce(&mut WorkBook, &mut Op) -> R) -> R {
        let mut work = self.work.lock();
        let mut op = Op::new(&self.clock, self.leadership.term());
        let result = f(&mut work, &mut op);
        for event in op.events {
            self.events.publish(event);
        }
        if let Some(p) = &self.persistence {
            for id in op.touched_tasks {
                p.journal.touch_task(id);
            }
            for key in &op.touched_leases {
                p.journal.touch_lease(key);
            }
        }
        result
    }

    /// Whether `id` is registered and alive in `epoch`.
    pub fn is_live(&self, id: &crate::model::InstanceId, epoch: Epoch) -> bool {
        self.registry
            .get(id.as_str())
            .is_some_and(|e| e.epoch == epoch && e.cell.status().is_alive())
    }

    /// Publishes an instance event about `slot`.
    pub fn publish_instance_event(&self, kind: EventKind, slot: &InstanceSlot) {
        let (_, seen) = slot.liveness();
        let mut event = Event::new(kind, self.leadership.term(), self.clock.now_wall_ms());
        event.instance_id = Some(slot.id.clone());
        event.epoch = Some(slot.epoch);
        event.last_seen_ms = Some(self.clock.wall_ms(seen));
        if kind == EventKind::InstanceRegistered {
            event.roles = Some(slot.roles());
        }
        self.events.publish(event);
    }
}
