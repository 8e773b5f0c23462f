//! The event bus: every change of an instance or of the leadership is published on a tokio
//! broadcast channel (for subscribers: the WebSocket push, tests, embedding services) and kept
//! in a bounded history (for [`Coordinator::state`](crate::Coordinator::state)).
//!
//! Events are control-path only — a heartbeat never emits one — so building them may allocate.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::model::{Epoch, InstanceId, Term};
use crate::model::{LeaseKey, TaskBrief, TaskId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// An instance registered (a new epoch) or registered again while alive (`refreshed`).
    #[serde(rename = "instance.registered")]
    InstanceRegistered,
    /// An instance has been silent for TTL − grace.
    #[serde(rename = "instance.suspect")]
    InstanceSuspect,
    /// An instance has been silent for its TTL and is gone.
    #[serde(rename = "instance.expired")]
    InstanceExpired,
    /// An instance left on its own request.
    #[serde(rename = "instance.unregistered")]
    InstanceUnregistered,
    /// A new leader was elected; `term` is its term.
    #[serde(rename = "leader.elected")]
    LeaderElected,
    /// The leader left and nobody is alive to follow it; `term` is the leaderless term.
    #[serde(rename = "leader.vacant")]
    LeaderVacant,
    /// A task was created.
    #[serde(rename = "task.created")]
    TaskCreated,
    /// A task was claimed by a worker.
    #[serde(rename = "task.claimed")]
    TaskClaimed,
    /// A task was completed.
    #[serde(rename = "task.completed")]
    TaskCompleted,
    /// A worker reported a failed attempt, or a task ran out of attempts.
    #[serde(rename = "task.failed")]
    TaskFailed,
    /// A task was taken back from a departed worker or a stale step, or its claim was undone
    /// because the store did not acknowledge it, and is pending again (see `reason`).
    #[serde(rename = "task.reassigned")]
    TaskReassigned,
    /// A task's creation was undone because the store did not acknowledge it: the task no
    /// longer exists (`task.create` answered −32001).
    #[serde(rename = "task.withdrawn")]
    TaskWithdrawn,
    /// An operator assigned a pending task to an instance (`task.assign`): only it claims it.
    #[serde(rename = "task.assigned")]
    TaskAssigned,
    /// A pending task's assignment was removed (`task.unassign`, or its instance left).
    #[serde(rename = "task.unassigned")]
    TaskUnassigned,
    /// An operator changed a task's text, priority, metadata or status (`task.update`).
    #[serde(rename = "task.updated")]
    TaskUpdated,
    /// An operator deleted a task (`task.delete`); its claim, if any, is over.
    #[serde(rename = "task.deleted")]
    TaskDeleted,
    /// A lease was granted.
    #[serde(rename = "lease.acquired")]
    LeaseAcquired,
    /// A lease was released (by its holder, or with its claim or instance).
    #[serde(rename = "lease.released")]
    LeaseReleased,
    /// A lease lapsed without renewal and was removed.
    #[serde(rename = "lease.expired")]
    LeaseExpired,
}

impl EventKind {
    /// The dotted name used on the wire (`instance.expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceRegistered => "instance.registered",
            Self::InstanceSuspect => "instance.suspect",
            Self::InstanceExpired => "instance.expired",
            Self::InstanceUnregistered => "instance.unregistered",
            Self::LeaderElected => "leader.elected",
            Self::LeaderVacant => "leader.vacant",
            Self::TaskCreated => "task.created",
            Self::TaskClaimed => "task.claimed",
            Self::TaskCompleted => "task.completed",
            Self::TaskFailed => "task.failed",
            Self::TaskReassigned => "task.reassigned",
            Self::TaskWithdrawn => "task.withdrawn",
            Self::TaskAssigned => "task.assigned",
            Self::TaskUnassigned => "task.unassigned",
            Self::TaskUpdated => "task.updated",
            Self::TaskDeleted => "task.deleted",
            Self::LeaseAcquired => "lease.acquired",
            Self::LeaseReleased => "lease.released",
            Self::LeaseExpired => "lease.expired",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Sequence number, increasing by one per event of this coordinator.
    pub seq: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The instance concerned (for `leader.elected`, the new leader).
    pub instance_id: Option<InstanceId>,
    /// Its epoch.
    pub epoch: Option<Epoch>,
    /// The term, for leader events; the term current when the event was made otherwise.
    pub term: Term,
    /// For `leader.elected` and `leader.vacant`: the leader that went before, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub previous_leader: Option<InstanceId>,
    /// For instance events: wall-clock ms of the instance's last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_seen_ms: Option<u64>,
    /// For `instance.registered`: the instance's roles.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub roles: Option<Vec<String>>,
    /// For task events (and leases held by a claim): the task.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task_id: Option<TaskId>,
    /// For task events: the task after the event (text, status, priority, attempts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task: Option<Box<TaskBrief>>,
    /// For lease events: the key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease_key: Option<LeaseKey>,
    /// For lease events: the grant's fencing token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fencing_token: Option<u64>,
    /// Why it happened, where that is not obvious (a reassignment, a failure).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Wall-clock ms when the event happened.
    pub at_ms: u64,
}

impl Event {
    /// An event of `kind` in `term` at `at_ms`, with every optional field empty. The bus
    /// numbers it when it is published.
    pub fn new(kind: EventKind, term: Term, at_ms: u64) -> Self {
        Self {
            seq: 0,
            kind,
            instance_id: None,
            epoch: None,
            term,
            previous_leader: None,
            last_seen_ms: None,
            roles: None,
            task_id: None,
            task: None,
            lease_key: None,
            fencing_token: None,
            reason: None,
            at_ms,
        }
    }
}

/// Where the bus also hands every event it publishes, in order, under the bus's lock (the
/// store's journal implements it). Must not block.
pub(crate) trait EventSink: Send + Sync + std::fmt::Debug {
    /// Takes note of `event`.
    fn record(&self, event: &Event);
}

/// Publishes events and keeps the most recent ones.
#[derive(Debug)]
pub(crate) struct EventBus {
    sender: broadcast::Sender<Event>,
    recent: Mutex<Recent>,
    capacity: usize,
    sink: Option<std::sync::Arc<dyn EventSink>>,
}

#[derive(Debug, Default)]
struct Recent {
    next_seq: u64,
    events: VecDeque<Event>,
}

impl EventBus {
    /// A bus with a broadcast of `channel_capacity` and a history of `recent` events; every
    /// event is also handed to `sink`, if given (the store's journal).
    pub fn new(
        channel_capacity: usize,
        recent: usize,
        sink: Option<std::sync::Arc<dyn EventSink>>,
    ) -> Self {
        let (sender, _) = broadcast::channel(channel_capacity.max(1));
        Self {
            sender,
            recent: Mutex::new(Recent {
                next_seq: 1,
                events: VecDeque::with_capacity(recent),
            }),
            capacity: recent,
            sink,
        }
    }

    /// Puts back history recovered from the store; numbering goes on after it.
    pub fn restore(&self, events: Vec<Event>) {
        let mut recent = self.recent.lock();
        for event in events {
            recent.next_seq = recent.next_seq.max(event.seq + 1);
            if self.capacity > 0 {
                if recent.events.len() == self.capacity {
                    recent.events.pop_front();
                }
                recent.events.push_back(event);
            }
        }
    }

    /// Numbers `event`, records it and sends it to subscribers. Numbering and sending happen
    /// under one lock so subscribers see events in sequence order.
    pub fn publish(&self, mut event: Event) {
        let mut recent = self.recent.lock();
        event.seq = recent.next_seq;
        recent.next_seq += 1;
        tracing::debug!(
            seq = event.seq,
            kind = event.kind.as_str(),
            instance = event.instance_id.as_ref().map(InstanceId::as_str),
            term = event.term.0,
            "event"
        );
        if self.capacity > 0 {
            if recent.events.len() == self.capacity {
                recent.events.pop_front();
            }
            recent.events.push_back(event.clone());
        }
        if let Some(sink) = &self.sink {
            sink.record(&event);
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }

    /// A new subscription, receiving every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// The most recent `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let recent = self.recent.lock();
        let skip = recent.events.len().saturating_sub(limit);
        recent.events.iter().skip(skip).cloned().collect()
    }
}

/// The event as ClaudeBench's event bus shapes it, `{id, type, payload, metadata, timestamp}`:
/// what its Redis pub/sub channels and `{prefix}stream:<type>` streams carry, and the `data`
/// of its WebSocket `{"type":"event"}` frames. The one place that shape is built.
///
/// * `id` is `evt-<atMs>-<seq>`: the same for every copy of one event (WebSocket, pub/sub,
///   stream), so a consumer that sees one twice can tell.
/// * `type` is Vigil's event name ([`EventKind::as_str`]); `timestamp` is `atMs`.
/// * `payload` holds the facts the event carries, named as ClaudeBench's handlers name them,
///   by the event's domain (the part of its name before the dot), so a kind added later is
///   shaped without a change here: every `task.*` event has `id` and `taskId` (the task),
///   `text` (when the payload has one), `status` (wire name), `priority`, `attempts`,
///   `maxAttempts`, `assignedTo` (its worker, when it has one) and `<verb>At` (ISO 8601:
///   `createdAt` for `task.created`, `updatedAt` for `task.updated`, …); `task.claimed` adds
///   ClaudeBench's `workerId`, `task.assigned` its `instanceId`. Every `instance.*` event has
///   `id`, `epoch`, `lastSeen` (ms), `timestamp` and, on registration, `roles`; `leader.*`
///   events have `leaderId` and `epoch` of the new leader (absent when vacant) and
///   `previousLeader`; `lease.*` events have `key`, `fencingToken` and the holder (`taskId`
///   or `holderId`). Every payload has `term`, and `reason` whenever the event has one.
///   `instanceId` appears only where ClaudeBench puts it (`task.assigned`): ClaudeBench's relay
///   drops events whose `payload.instanceId` is its own instance.
/// * `metadata` is `{"source": "vigil", "seq", "term"}`, plus ClaudeBench's `completedBy` on
///   `task.completed`.
///
/// Claim tokens are never part of an [`Event`], so they cannot appear here.
#[cfg_attr(
    not(any(feature = "server", feature = "redis")),
    allow(dead_code, reason = "used by the WebSocket push and the Redis store")
)]
pub(crate) fn claudebench_envelope(event: &Event) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let name = event.kind.as_str();
    let (domain, verb) = name.split_once('.').unwrap_or((name, ""));
    let mut p = Map::new();
    let mut put = |key: &str, value: Value| {
        p.insert(key.to_string(), value);
    };
    let instance = event.instance_id.as_ref().map(|i| Value::from(i.as_str()));
    match domain {
        "task" => {
            if let Some(id) = event.task_id {
                put("id", json!(id));
                put("taskId", json!(id));
            }
            if let Some(task) = &event.task {
                if let Some(text) = &task.text {
                    put("text", json!(text));
                }
                put("status", json!(task.status.as_str()));
                put("priority", json!(task.priority));
                put("attempts", json!(task.attempts));
                put("maxAttempts", json!(task.max_attempts));
            }
            if let Some(worker) = &instance {
                put("assignedTo", worker.clone());
                match verb {
                    "claimed" => put("workerId", worker.clone()),
                    "assigned" => put("instanceId", worker.clone()),
                    _ => {}
                }
            }
            if !verb.is_empty() {
                put(
                    &format!("{verb}At"),
                    json!(crate::clock::iso_ms(event.at_ms)),
                );
            }
        }
        "instance" => {
            if let Some(id) = &instance {
                put("id", id.clone());
            }
            if let Some(roles) = &event.roles {
                put("roles", json!(roles));
            }
            put("timestamp", json!(event.at_ms));
        }
        "leader" => {
            if let Some(id) = &instance {
                put("leaderId", id.clone());
            }
            if let Some(previous) = &event.previous_leader {
                put("previousLeader", json!(previous.as_str()));
            }
        }
        "lease" => {
            if let Some(id) = event.task_id {
                put("taskId", json!(id));
            }
            if let Some(id) = &instance {
                put("holderId", id.clone());
            }
        }
        _ => {
            if let Some(id) = event.task_id {
                put("taskId", json!(id));
            }
            if let Some(id) = &instance {
                put("instanceId", id.clone());
            }
        }
    }
    if let Some(epoch) = event.epoch {
        put("epoch", json!(epoch.0));
    }
    if let Some(seen) = event.last_seen_ms {
        put("lastSeen", json!(seen));
    }
    if let Some(key) = &event.lease_key {
        put("key", json!(key.as_str()));
    }
    if let Some(token) = event.fencing_token {
        put("fencingToken", json!(token));
    }
    if let Some(reason) = &event.reason {
        put("reason", json!(reason));
    }
    put("term", json!(event.term.0));
    let mut metadata = json!({"source": "vigil", "seq": event.seq, "term": event.term.0});
    if event.kind == EventKind::TaskCompleted
        && let Some(worker) = instance
    {
        metadata["completedBy"] = worker;
    }
    json!({
        "id": format!("evt-{}-{}", event.at_ms, event.seq),
        "type": name,
        "payload": p,
        "metadata": metadata,
        "timestamp": event.at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskBrief, TaskStatus};

    #[test]
    fn iso_8601_matches_javascript_to_iso_string() {
        assert_eq!(crate::clock::iso_ms(0), "1970-01-01T00:00:00.000Z");
        // new Date(1709251199999).toISOString() (a leap year's last day of February)
        assert_eq!(
            crate::clock::iso_ms(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            crate::clock::iso_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            crate::clock::iso_ms(4_102_444_800_123),
            "2100-01-01T00:00:00.123Z"
        );
    }

    #[test]
    fn task_created_has_claudebench_payload_and_no_claim_token() {
        let mut e = Event::new(EventKind::TaskCreated, Term(3), 1_709_251_199_999);
        e.seq = 7;
        e.task_id = Some(TaskId(42));
        e.task = Some(Box::new(TaskBrief {
            text: Some("write docs".into()),
            status: TaskStatus::Pending,
            priority: 60,
            attempts: 0,
            max_attempts: 3,
        }));
        let v = claudebench_envelope(&e);
        assert_eq!(v["id"], "evt-1709251199999-7");
        assert_eq!(v["type"], "task.created");
        assert_eq!(v["timestamp"], 1_709_251_199_999u64);
        let p = &v["payload"];
        assert_eq!(p["id"], "t-42");
        assert_eq!(p["text"], "write docs");
        assert_eq!(p["status"], "pending");
        assert_eq!(p["priority"], 60);
        assert_eq!(p["createdAt"], "2024-02-29T23:59:59.999Z");
        assert_eq!(v["metadata"]["seq"], 7);
        assert!(!v.to_string().to_lowercase().contains("token"), "{v}");
    }

    #[test]
    fn claimed_names_the_worker_and_a_new_kind_is_shaped_by_its_domain() {
        let mut e = Event::new(EventKind::TaskClaimed, Term(1), 5);
        e.task_id = Some(TaskId(9));
        e.instance_id = Some(InstanceId::parse("w1", &crate::config::Limits::default()).unwrap());
        e.epoch = Some(Epoch(2));
        let v = claudebench_envelope(&e);
        assert_eq!(v["payload"]["taskId"], "t-9");
        assert_eq!(v["payload"]["workerId"], "w1");
        assert_eq!(v["payload"]["claimedAt"], "1970-01-01T00:00:00.005Z");

        let mut r = Event::new(EventKind::InstanceRegistered, Term(1), 5);
        r.instance_id = Some(InstanceId::parse("w1", &crate::config::Limits::default()).unwrap());
        r.roles = Some(vec!["worker".into()]);
        let v = claudebench_envelope(&r);
        assert_eq!(v["payload"]["id"], "w1");
        assert_eq!(v["payload"]["roles"], serde_json::json!(["worker"]));
    }
}
