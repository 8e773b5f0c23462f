//! What changed since the last flush: marks, not data. The persister reads the current state
//! of each marked entity when it flushes, so the journal never holds more than one mark per
//! entity, whatever the rate of change — bounded by the number of entities.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::events::{Event, EventKind, EventSink};
use crate::model::InstanceId;
use crate::model::{LeaseKey, TaskId};

/// Events waiting for the stream beyond this are dropped oldest first (the stream is history,
/// capped anyway; the state it describes is written in full).
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// Entities changed since the last flush.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Instances registered, refreshed or gone.
    pub instances: HashSet<InstanceId>,
    /// Tasks changed.
    pub tasks: HashSet<TaskId>,
    /// Lease keys changed.
    pub leases: HashSet<LeaseKey>,
    /// The leader or term changed.
    pub term: bool,
    /// A counter moved (task id, fencing token, epoch).
    pub counters: bool,
    /// Write everything (after lost marks, or on request).
    pub everything: bool,
    /// Events for the stream, in order.
    pub events: VecDeque<Event>,
    /// Events dropped because too many were waiting.
    pub dropped_events: u64,
}

impl Dirty {
    fn merge_older(&mut self, older: Dirty) {
        self.instances.extend(older.instances);
        self.tasks.extend(older.tasks);
        self.leases.extend(older.leases);
        self.term |= older.term;
        self.counters |= older.counters;
        self.everything |= older.everything;
        let mut events = older.events;
        events.append(&mut self.events);
        while events.len() > MAX_PENDING_EVENTS {
            events.pop_front();
            self.dropped_events += 1;
        }
        self.events = events;
        self.dropped_events += older.dropped_events;
    }
}

/// The journal.
#[derive(Debug, Default)]
pub struct Journal {
    dirty: Mutex<Dirty>,
    seq: AtomicU64,
    wake: Notify,
}

impl Journal {
    /// How many changes have been journaled.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Wakes the persister to flush now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for a wake-up.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn mark(&self, f: impl FnOnce(&mut Dirty)) {
        let mut dirty = self.dirty.lock();
        f(&mut dirty);
        // Bumped under the lock: a flush that takes the marks takes every change up to the
        // sequence it reads.
        self.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a published event: marks what it is about and queues it for the stream.
    pub fn record_event(&self, event: &Event) {
        self.mark(|d| {
            use EventKind::*;
            match event.kind {
                InstanceRegistered | InstanceSuspect | InstanceExpired | InstanceUnregistered => {
                    if let Some(id) = &event.instance_id {
                        d.instances.insert(id.clone());
                    }
                    d.counters |= event.kind == InstanceRegistered;
                }
                LeaderElected | LeaderVacant => d.term = true,
                TaskCreated | TaskClaimed | TaskCompleted | TaskFailed | TaskReassigned => {
                    if let Some(id) = event.task_id {
                        d.tasks.insert(id);
                    }
                    d.counters |= event.kind == TaskCreated;
                }
                LeaseAcquired | LeaseReleased | LeaseExpired => {
                    if let Some(key) = &event.lease_key {
                        d.leases.insert(key.clone());
                    }
                    d.counters |= event.kind == LeaseAcquired;
                }
            }
            if d.events.len() >= MAX_PENDING_EVENTS {
                d.events.pop_front();
                d.dropped_events += 1;
            }
            d.events.push_back(event.clone());
        });
    }

    /// Marks a task changed without an event (a step heartbeat).
    pub fn touch_task(&self, id: TaskId) {
        self.mark(|d| {
            d.tasks.insert(id);
        });
    }

    /// Marks a lease changed without an event (a renewal).
    pub fn touch_lease(&self, key: &LeaseKey) {
        self.mark(|d| {
            d.leases.insert(key.clone());
        });
    }

    /// Marks an instance changed without an event (a re-registration's new roles or TTL).
    pub fn touch_instance(&self, id: &InstanceId) {
        self.mark(|d| {
            d.instances.insert(id.clone());
        });
    }

    /// Marks the term changed without an event (the term a recovery resumes at).
    pub fn touch_term(&self) {
        self.mark(|d| d.term = true);
    }

    /// Takes every mark, and the sequence they cover.
    pub fn take(&self) -> (Dirty, u64) {
        let mut dirty = self.dirty.lock();
        let seq = self.seq.load(Ordering::Acquire);
        (std::mem::take(&mut *dirty), seq)
    }

    /// Puts back marks whose flush failed (newer marks win where both exist).
    pub fn put_back(&self, older: Dirty) {
        self.dirty.lock().merge_older(older);
    }

    /// How many entities are marked and events wait (for health and tests).
    pub fn pending(&self) -> (usize, usize) {
        let d = self.dirty.lock();
        (
            d.instances.len() + d.tasks.len() + d.leases.len() + usize::from(d.term),
            d.events.len(),
        )
    }
}

impl EventSink for Journal {
    fn record(&self, event: &Event) {
        self.record_event(event);
    }
}
