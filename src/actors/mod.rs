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
pub mod supervisor;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock::LivenessClock;
use crate::config::Config;
use crate::events::{Event, EventBus, EventKind};
use crate::model::Epoch;
use crate::registry::{HotArena, InstanceSlot, Leadership, Registry};

/// What the actors and the coordinator handle share.
#[derive(Debug)]
pub struct ClusterContext {
    /// The configuration the coordinator started with.
    pub config: Config,
    /// The liveness clock.
    pub clock: Arc<LivenessClock>,
    /// Live instances by id.
    pub registry: Registry,
    /// The leader and the term.
    pub leadership: Leadership,
    /// The event bus.
    pub events: EventBus,
    /// Where instances' hot cells are allocated.
    pub arena: Arc<HotArena>,
    next_epoch: AtomicU64,
    shutting_down: AtomicBool,
}

impl ClusterContext {
    /// A fresh context for `config`.
    pub fn new(config: Config) -> Self {
        let clock = LivenessClock::new(config.clock_tick);
        let events = EventBus::new(config.event_capacity, config.recent_events);
        Self {
            config,
            clock,
            registry: crate::registry::new_registry(),
            leadership: Leadership::default(),
            events,
            arena: Arc::default(),
            next_epoch: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// A new epoch, greater than every one handed out before.
    pub fn next_epoch(&self) -> Epoch {
        Epoch(self.next_epoch.fetch_add(1, Ordering::Relaxed))
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

    /// Publishes an instance event about `slot`.
    pub fn publish_instance_event(&self, kind: EventKind, slot: &InstanceSlot) {
        let (_, seen) = slot.liveness();
        self.events.publish(Event {
            seq: 0,
            kind,
            instance_id: Some(slot.id.clone()),
            epoch: Some(slot.epoch),
            term: self.leadership.term(),
            previous_leader: None,
            last_seen_ms: Some(self.clock.wall_ms(seen)),
            at_ms: self.clock.now_wall_ms(),
        });
    }
}
