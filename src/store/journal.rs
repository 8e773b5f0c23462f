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
#[derive(Debug, Default, Clone)]
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
    /// Instances, tasks and leases marked.
    pub fn entities(&self) -> usize {
        self.instances.len() + self.tasks.len() + self.leases.len()
    }

    /// Whether nothing at all is marked.
    pub fn is_empty(&self) -> bool {
        self.entities() == 0
            && !self.term
            && !self.counters
            && !self.everything
            && self.events.is_empty()
            && self.dropped_events == 0
    }

    /// Splits the marks into parts of at most `max` entities each (instances first, then
    /// tasks, then leases), appended to `parts`; the first part also carries the counters (so
    /// that, written first, they are never behind a record already stored), the last part the
    /// term and the events. Nothing is appended when nothing is marked. `everything` is
    /// left out: the caller turns it into concrete marks first.
    pub fn split_into(mut self, max: usize, parts: &mut Vec<Dirty>) {
        let max = max.max(1);
        self.everything = false;
        if self.is_empty() {
            return;
        }
        let mut counters = std::mem::take(&mut self.counters);
        loop {
            let mut part = Dirty {
                counters: std::mem::take(&mut counters),
                ..Dirty::default()
            };
            let mut room = max;
            move_some(&mut self.instances, &mut part.instances, &mut room);
            move_some(&mut self.tasks, &mut part.tasks, &mut room);
            move_some(&mut self.leases, &mut part.leases, &mut room);
            if self.entities() == 0 {
                part.term = self.term;
                part.events = std::mem::take(&mut self.events);
                part.dropped_events = self.dropped_events;
                parts.push(part);
                return;
            }
            parts.push(part);
        }
    }

    /// Forgets the marks of `part`, which the store acknowledged (what is left is what a
    /// failure or a dead Persister must put back).
    pub fn forget(&mut self, part: &Dirty) {
        for id in &part.instances {
            self.instances.remove(id);
        }
        for id in &part.tasks {
            self.tasks.remove(id);
        }
        for key in &part.leases {
            self.leases.remove(key);
        }
        if part.term {
            self.term = false;
        }
        if part.counters {
            self.counters = false;
        }
        if !part.events.is_empty() || part.dropped_events > 0 {
            self.events.clear();
            self.dropped_events = 0;
        }
    }

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

/// Moves up to `room` items from `from` to `to`.
fn move_some<T: std::hash::Hash + Eq + Clone>(
    from: &mut HashSet<T>,
    to: &mut HashSet<T>,
    room: &mut usize,
) {
    if *room == 0 || from.is_empty() {
        return;
    }
    if from.len() <= *room {
        *room -= from.len();
        to.extend(std::mem::take(from));
        return;
    }
    let moved: Vec<T> = from.iter().take(*room).cloned().collect();
    for item in moved {
        from.remove(&item);
        to.insert(item);
    }
    *room = 0;
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
                TaskCreated | TaskClaimed | TaskCompleted | TaskFailed | TaskReassigned
                | TaskWithdrawn | TaskAssigned | TaskUnassigned | TaskUpdated | TaskDeleted => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_mark_set_splits_into_bounded_parts_counters_first_term_last() {
        let mut d = Dirty::default();
        for i in 0..1234 {
            d.tasks.insert(TaskId(i));
        }
        for i in 0..10 {
            d.instances.insert(
                InstanceId::parse(&format!("w{i}"), &crate::config::Limits::default()).unwrap(),
            );
        }
        d.leases.insert(LeaseKey::unchecked("a/b"));
        d.term = true;
        d.counters = true;
        d.events.push_back(Event::new(
            EventKind::LeaderElected,
            crate::model::Term(1),
            0,
        ));
        let all = d.clone();
        let mut parts = Vec::new();
        d.split_into(500, &mut parts);
        assert_eq!(parts.len(), 3); // 1245 entities
        assert!(parts.iter().all(|p| p.entities() <= 500));
        assert_eq!(parts.iter().map(Dirty::entities).sum::<usize>(), 1245);
        let (last, before) = parts.split_last().unwrap();
        assert!(last.term && !last.counters && last.events.len() == 1);
        assert!(parts[0].counters);
        assert!(before.iter().all(|p| !p.term && p.events.is_empty()));
        assert!(parts[1..].iter().all(|p| !p.counters));
        // Forgetting every acknowledged part leaves nothing to put back.
        let mut left = all;
        for p in &parts[..2] {
            left.forget(p);
        }
        assert_eq!(left.entities(), parts[2].entities());
        left.forget(&parts[2]);
        assert!(left.is_empty(), "{left:?}");
        // Nothing marked: no part.
        let mut none = Vec::new();
        Dirty::default().split_into(500, &mut none);
        assert!(none.is_empty());
    }
}
