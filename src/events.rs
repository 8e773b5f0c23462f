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
    /// Wall-clock ms when the event happened.
    pub at_ms: u64,
}

/// Publishes events and keeps the most recent ones.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    recent: Mutex<Recent>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Recent {
    next_seq: u64,
    events: VecDeque<Event>,
}

impl EventBus {
    /// A bus with a broadcast of `channel_capacity` and a history of `recent` events.
    pub fn new(channel_capacity: usize, recent: usize) -> Self {
        let (sender, _) = broadcast::channel(channel_capacity.max(1));
        Self {
            sender,
            recent: Mutex::new(Recent {
                next_seq: 1,
                events: VecDeque::with_capacity(recent),
            }),
            capacity: recent,
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
