//! The durable copy of the coordinator's state.
//!
//! Memory decides; the store mirrors. Every change is made in memory first (under the same
//! locks as without a store) and recorded in the journal as "this instance / task / lease
//! / the term changed". The `Persister` actor turns those marks into writes of the entity's
//! *current* state, so writes are idempotent, coalesce naturally (ten changes of one task
//! between two flushes are one write) and can be retried after a failure without any ordering
//! concerns. The set of pending marks is bounded by the
//! number of entities.
//!
//! * Control-plane calls (register, unregister, task and lease calls) are **written through**:
//!   the call returns once the persister has flushed everything up to and including its change.
//!   While the store's circuit breaker is open they fail fast with [`Error::StoreUnavailable`]
//!   before changing anything; a change the store does not acknowledge within
//!   [`Config::store_wait`](crate::Config::store_wait) is undone ([`Error::StoreUnavailable`])
//!   or reported as [`Error::NotDurable`] (docs/persistence.md lists the rule of each call).
//! * Heartbeat timestamps are **written behind**: the persister scans for instances whose
//!   last-seen time moved and writes them in pipelined batches every flush interval — or, with
//!   [`PersistMode::WriteThrough`], each heartbeat is one synchronous script call, the way
//!   ClaudeBench does it.
//!
//! [`MemoryStore`] keeps nothing (the default: state lives in memory only); [`RedisStore`]
//! keeps the key layout of docs/persistence.md.

mod breaker;
mod failures;
#[cfg(feature = "redis")]
mod fields;
mod journal;
#[cfg(feature = "redis")]
mod lease;
#[cfg(feature = "redis")]
mod redis;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::config::{PersistMode, RestartGrace, StoreConfig, WaitReplicas};
#[cfg(feature = "redis")]
pub use crate::config::{RedisConfig, TYPE_STREAM_MAX_LEN};
pub(crate) use breaker::{Admission, Breaker, BreakerState};
pub(crate) use journal::{Dirty, Journal};
// The coordinator lease: `vigil serve --ha` and embedders with an election of their own.
#[cfg(feature = "redis")]
pub use lease::{Acquire, CoordLease, Renewal};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use crate::error::Error;
use crate::events::Event;
use crate::model::{Epoch, InstanceId, InstanceStatus, Term};
use crate::work::lease::LeaseKey;
use crate::work::records::{LeaseRecord, TaskRecord, WorkCounters};
use crate::work::task::TaskId;

/// Most entities (instances, tasks, leases) one flush writes per store call and reads per hold
/// of the work lock; a flush of more — a full rewrite after a failure — is written in parts.
pub const FLUSH_PART: usize = 500;

/// A boxed future, so [`Store`] can be used as a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Whether the store refused the write because this coordinator's epoch
    /// ([`RedisConfig::fence_epoch`]) is no longer the coordinator lease's: another coordinator
    /// took over. Not a store failure: retrying cannot succeed, and the caller must stop
    /// writing.
    pub fn is_fenced(&self) -> bool {
        self.0.starts_with(FENCED)
    }
}

/// The prefix of a fenced [`StoreError`].
const FENCED: &str = "FENCED: ";

impl StoreError {
    /// Whether the write reached the primary but fewer replicas confirmed it than
    /// [`RedisConfig::wait_replicas`] asks, within [`RedisConfig::wait_timeout`]
    /// (`NOT_REPLICATED k/n in t ms`). Nothing was lost on the primary: the write is retried
    /// as it is (no full rewrite), and whoever waits on it is not answered "written".
    pub fn is_not_replicated(&self) -> bool {
        self.0.starts_with(NOT_REPLICATED)
    }
}

/// The prefix of a [`StoreError`] for a write that `WAIT` found on too few replicas.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const NOT_REPLICATED: &str = "NOT_REPLICATED ";

/// An instance as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Id.
    pub id: InstanceId,
    /// Roles.
    pub roles: Vec<String>,
    /// Status.
    pub status: InstanceStatus,
    /// Last heartbeat, wall ms.
    #[serde(rename = "lastSeen")]
    pub last_seen_ms: u64,
    /// Epoch.
    pub epoch: Epoch,
    /// TTL.
    pub ttl_ms: u64,
    /// Metadata.
    pub metadata: serde_json::Value,
    /// Registered at, wall ms.
    #[serde(rename = "registeredAt")]
    pub registered_at_ms: u64,
    /// The principal the instance is bound to (absent: an operator's or an open server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A heartbeat timestamp to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatWrite {
    /// Id.
    pub id: InstanceId,
    /// Last heartbeat, wall ms.
    pub last_seen_ms: u64,
    /// Status.
    pub status: InstanceStatus,
    /// Key lifetime from now (the instance's remaining TTL).
    pub expire_in_ms: u64,
}

/// The leader and term as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TermRecord {
    /// Term.
    pub term: Term,
    /// Leader, if any.
    pub leader: Option<InstanceId>,
    /// Leader's epoch.
    pub epoch: Option<Epoch>,
}

/// One flush: current states to write and entities to delete.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Instances registered or changed (with their key lifetime from now).
    pub instances: Vec<(InstanceRecord, u64)>,
    /// Instances gone.
    pub instances_gone: Vec<InstanceId>,
    /// Heartbeat timestamps.
    pub heartbeats: Vec<HeartbeatWrite>,
    /// Tasks changed.
    pub tasks: Vec<TaskRecord>,
    /// Tasks gone (dropped by retention).
    pub tasks_gone: Vec<TaskId>,
    /// Leases changed (with their key lifetime from now).
    pub leases: Vec<(LeaseRecord, u64)>,
    /// Leases gone.
    pub leases_gone: Vec<LeaseKey>,
    /// The leader and term, if changed.
    pub term: Option<TermRecord>,
    /// Counters, if changed.
    pub counters: Option<Counters>,
    /// Events to append to the stream.
    pub events: Vec<Event>,
    /// On a flush-interval tick: when it ran (wall ms), written as `lastFlush`.
    pub flush_mark: Option<u64>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
            && self.instances_gone.is_empty()
            && self.heartbeats.is_empty()
            && self.tasks.is_empty()
            && self.tasks_gone.is_empty()
            && self.leases.is_empty()
            && self.leases_gone.is_empty()
            && self.term.is_none()
            && self.counters.is_none()
            && self.events.is_empty()
            && self.flush_mark.is_none()
    }
}

/// Counters that only move forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Work counters.
    #[serde(flatten)]
    pub work: WorkCounters,
    /// The last epoch handed out.
    pub last_epoch: u64,
    /// When heartbeat timestamps were last flushed (wall ms; read back on recovery only).
    #[serde(default)]
    pub last_flush_ms: u64,
    /// The highest term reserved for use ([`Store::reserve_terms`]); 0 when none was ever
    /// reserved (a store written before reservations existed). Every term handed out is at or
    /// below it, so recovery resumes above it.
    #[serde(default)]
    pub term_reserved: u64,
}

/// How many terms the LeaderActor reserves in the store at a time. Terms are handed out only
/// up to the reserved ceiling; when fewer than half a block remain, the next block is reserved
/// ahead, in the background. A restart resumes above the ceiling, so it skips the unused rest
/// of the reservation (at most one and a half blocks) — and never reuses a term, however many
/// elections a crash interrupted.
pub const TERM_BLOCK: u64 = 1000;

/// What a heartbeat flush found: instances whose key was gone (expired in the store while
/// memory still had them), to be written in full next time.
#[derive(Debug, Default)]
pub struct Applied {
    /// Instances to rewrite in full.
    pub missing_instances: Vec<InstanceId>,
}

/// Everything recovered on start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Instances whose key was found.
    pub instances: Vec<InstanceRecord>,
    /// Instances listed as active whose key had expired (their TTL lapsed while down).
    pub lapsed: Vec<InstanceId>,
    /// Tasks.
    pub tasks: Vec<TaskRecord>,
    /// Leases.
    pub leases: Vec<LeaseRecord>,
    /// Leader and term.
    pub term: Option<TermRecord>,
    /// Counters.
    pub counters: Counters,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
    /// Records that could not be read (a malformed instance, task or lease hash, an invalid
    /// id in `instances:active`, an event that does not parse), with the reason: left in the
    /// store as they are, not loaded.
    pub skipped: Vec<(String, String)>,
}

/// A durable copy of the state.
pub trait Store: Send + Sync + Debug {
    /// A short name (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Writes a batch. Idempotent: writing the same batch twice leaves the same state.
    fn apply<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<Applied, StoreError>>;

    /// Writes one heartbeat now (write-through mode).
    fn heartbeat<'a>(&'a self, beat: &'a HeartbeatWrite) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Reads everything back. Any read that fails, and any counter or term that does not
    /// parse, is an error (recovery must not take it for "nothing stored" and hand out again
    /// what was handed out before); a malformed instance, task or lease record or event is
    /// left in the store untouched and listed in [`Snapshot::skipped`].
    fn load(&self, recent_events: usize) -> BoxFuture<'_, Result<Snapshot, StoreError>>;

    /// Durably raises the reserved term ceiling to at least `ceiling` and answers the ceiling
    /// now stored (never lower than before). Awaited before any term above the previous
    /// ceiling is used, so no term is handed out that a restart could hand out again.
    fn reserve_terms(&self, ceiling: u64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// How many times the store moved to another server (a Redis Sentinel failover); 0 for a
    /// store that never moves. A move lets the circuit breaker probe at once: the failures
    /// that opened it were the old server's.
    fn generation(&self) -> u64 {
        0
    }
}

/// Keeps nothing: state lives in memory only.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn apply<'a>(&'a self, _: &'a WriteBatch) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(async { Ok(Applied::default()) })
    }
    fn heartbeat<'a>(&'a self, _: &'a HeartbeatWrite) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn load(&self, _: usize) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }
    /// Nothing survives a restart, so no term can be reused: every term is available.
    fn reserve_terms(&self, _: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(u64::MAX) })
    }
}

/// How far the Persister got: the journal sequence the store has acknowledged, and how many
/// flushes failed (so that waiters wake on a failure and can see the circuit open).
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    durable: u64,
    failures: u64,
}

/// A durable store in use: the store, the journal of changes not yet written, the breaker, and
/// how far writes have been acknowledged.
#[derive(Debug)]
pub(crate) struct Persistence {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Changes not yet written.
    pub journal: Arc<Journal>,
    /// The circuit breaker around the store.
    pub breaker: Breaker,
    /// How heartbeats are written.
    pub mode: PersistMode,
    /// How often heartbeats are flushed.
    pub flush_interval: Duration,
    /// Every mark taken by a flush and not yet acknowledged by the store; put back if its
    /// Persister dies mid-way. A flush written in several parts removes each part once it is
    /// acknowledged.
    pub in_flight: parking_lot::Mutex<Option<Dirty>>,
    /// Set after a failure: the next successful flush rewrites everything, in case the store
    /// lost data meanwhile (a Redis restarted without persistence).
    pub resync: std::sync::atomic::AtomicBool,
    progress: watch::Sender<Progress>,
    /// Repeated failures, logged in summary (see [`failures`]).
    /// One summary per kind of write (`flush`, `heartbeat`, `term reservation`), so a kind
    /// that succeeds does not end the episode of one that keeps failing.
    failures: parking_lot::Mutex<Vec<(&'static str, failures::FailureLog)>>,
    /// Whether `failures` is counting an outage: a success checks this before the lock.
    failing: std::sync::atomic::AtomicBool,
    /// Set once a write was refused as fenced ([`StoreError::is_fenced`]); the HA controller
    /// watches it to step down.
    fenced: watch::Sender<bool>,
    /// The store's [`Store::generation`] last seen by [`Persistence::notice_moves`].
    seen_generation: std::sync::atomic::AtomicU64,
}

// Without the `redis` feature no store backend exists to build one.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Persistence {
    /// Persistence through `store`.
    pub fn new(
        store: Arc<dyn Store>,
        mode: PersistMode,
        flush_interval: Duration,
        breaker: Breaker,
    ) -> Self {
        Self {
            store,
            journal: Arc::default(),
            breaker,
            mode,
            flush_interval,
            in_flight: parking_lot::Mutex::new(None),
            resync: std::sync::atomic::AtomicBool::new(false),
            progress: watch::Sender::new(Progress::default()),
            failures: parking_lot::Mutex::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
            fenced: watch::Sender::new(false),
            seen_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// After the store moved to another server (see [`Store::generation`]), lets the breaker
    /// probe at once instead of waiting out its open period.
    pub fn notice_moves(&self) {
        let now = self.store.generation();
        let seen = self
            .seen_generation
            .swap(now, std::sync::atomic::Ordering::AcqRel);
        if now != seen {
            self.breaker.probe_now();
        }
    }

    /// Records that the store refused a write as fenced (`error`, for the log): logged at
    /// error level the first time only, and sets the flag [`Persistence::fenced`] watches.
    pub fn note_fenced(&self, what: &'static str, error: &StoreError) {
        if !self.fenced.send_replace(true) {
            // Write-through callers waiting for durability learn it at once.
            self.progress.send_modify(|_| ());
            tracing::error!(
                write = what,
                %error,
                "the store refused a write: another coordinator holds the lease; stop writing"
            );
        }
    }

    /// Whether a write was refused as fenced, as a watch: it turns `true` at the first
    /// [`Persistence::note_fenced`] and stays so.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    /// Logs a failed store write (`what`: `flush`, `heartbeat`, `term reservation`) in
    /// summary: the first failure, the breaker opening (`opened`), then at most one line every
    /// [`failures::SUMMARY_EVERY`] with the count — never a line per failure.
    ///
    /// A fenced refusal (`error` is a [`StoreError::is_fenced`] displayed) goes to
    /// [`Persistence::note_fenced`] instead: one error line, the watch set. Its callers still
    /// count it as a failure (breaker, retry) until the HA controller reacts to the watch.
    pub fn store_failed(&self, what: &'static str, error: &str, opened: bool) {
        use failures::Line;
        use std::sync::atomic::Ordering;
        if let Some(fenced) = error
            .strip_prefix("store: ")
            .filter(|e| e.starts_with(FENCED))
        {
            self.note_fenced(what, &StoreError(fenced.to_string()));
            return;
        }
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = {
            let mut logs = self.failures.lock();
            let index = match logs.iter().position(|(kind, _)| *kind == what) {
                Some(index) => index,
                None => {
                    logs.push((what, failures::FailureLog::default()));
                    logs.len() - 1
                }
            };
            let line = logs[index]
                .1
                .failed(tokio::time::Instant::now(), wall_ms, opened);
            self.failing.store(true, Ordering::Release);
            line
        };
        let every = failures::SUMMARY_EVERY.as_secs();
        match line {
            Some(Line::First) => tracing::warn!(
                error,
                "store {what} failed; retrying (further failures are counted and logged every \
                 {every} s until the store answers)"
            ),
            Some(Line::Opened { total, over }) => tracing::error!(
                error,
                failures = total,
                "store failing: {total} failed writes in {:.1} s; circuit open: writes are \
                 refused (-32001) until a probe succeeds",
                over.as_secs_f64()
            ),
            Some(Line::Summary {
                since_last,
                over,
                total,
                started_wall_ms,
            }) => tracing::warn!(
                error,
                failures = since_last,
                total,
                "store {what} still failing: {since_last} failed writes in {:.0} s, {total} \
                 since {}",
                over.as_secs_f64(),
                crate::clock::iso_ms(started_wall_ms)
            ),
            Some(Line::Recovered { .. }) | None => {}
        }
    }

    /// A store write of kind `what` succeeded: logs that kind's recovery once after its
    /// failures. Cheap when nothing failed (one atomic load).
    pub fn store_ok(&self, what: &'static str) {
        use std::sync::atomic::Ordering;
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let line = {
            let mut logs = self.failures.lock();
            let line = logs
                .iter_mut()
                .find(|(kind, _)| *kind == what)
                .and_then(|(_, log)| log.succeeded(tokio::time::Instant::now()));
            let still = logs.iter().any(|(_, log)| log.failing());
            self.failing.store(still, Ordering::Release);
            line
        };
        if let Some(failures::Line::Recovered { total, over }) = line {
            tracing::info!(
                failures = total,
                "store {what} recovered after {total} failed writes over {:.1} s",
                over.as_secs_f64()
            );
        }
    }

    /// Refuses a write-through call while the breaker is open (nothing has changed yet).
    pub fn check_available(&self) -> Result<(), Error> {
        self.notice_moves();
        match self.breaker.state() {
            BreakerState::Open { retry_in } => Err(Error::StoreUnavailable(format!(
                "circuit open after repeated failures; next attempt in {} ms",
                retry_in.as_millis()
            ))),
            _ => Ok(()),
        }
    }

    /// Waits until every change journaled so far is in the store, until `deadline` at most.
    /// Gives up early when the circuit opens meanwhile (nothing will be attempted before the
    /// next probe). The error is [`Error::NotDurable`]: the changes are in memory, not yet in
    /// the store; the caller decides whether to undo its own. Once a write was refused as
    /// fenced ([`Persistence::note_fenced`]) it is [`Error::NotActive`] at once: another
    /// coordinator owns the store.
    pub async fn wait_durable(&self, deadline: tokio::time::Instant) -> Result<(), Error> {
        let target = self.journal.seq();
        self.journal.wake();
        let mut rx = self.progress.subscribe();
        let open = || matches!(self.breaker.state(), BreakerState::Open { .. });
        let fenced = || *self.fenced.borrow();
        let waited = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|p| p.durable >= target || open() || fenced()),
        )
        .await;
        match waited {
            Ok(Ok(p)) if p.durable >= target => Ok(()),
            // Refused by the store: another coordinator took over, and this one's memory is
            // about to go. The change will not last; the caller goes to the active one.
            Ok(Ok(_)) if fenced() => Err(Error::NotActive {
                active: None,
                epoch: None,
            }),
            Ok(Ok(_)) => Err(Error::NotDurable(
                "the store failed repeatedly and its circuit opened".into(),
            )),
            Ok(Err(_)) => Err(Error::NotDurable("the persister stopped".into())),
            Err(_) => Err(Error::NotDurable(
                "the store did not acknowledge the change in time".into(),
            )),
        }
    }

    /// Marks everything up to `seq` as written.
    pub fn mark_durable(&self, seq: u64) {
        self.progress.send_if_modified(|p| {
            if seq > p.durable {
                p.durable = seq;
                true
            } else {
                false
            }
        });
    }

    /// Records a failed flush (wakes waiters, which give up if the circuit opened).
    pub fn flush_failed(&self) {
        self.progress.send_modify(|p| p.failures += 1);
    }

    /// How far writes are acknowledged.
    #[cfg(feature = "chaos")]
    pub fn durable_seq(&self) -> u64 {
        self.progress.borrow().durable
    }
}

#[cfg(test)]
mod fenced_tests {
    use super::*;

    #[test]
    fn a_fenced_failure_sets_the_watch_once_and_others_do_not() {
        let p = Persistence::new(
            Arc::new(MemoryStore),
            PersistMode::WriteBehind,
            Duration::from_millis(250),
            Breaker::new(3, Duration::from_secs(10)),
        );
        let watch = p.fenced();
        p.store_failed("flush", "store: pipeline: connection refused", false);
        assert!(!*watch.borrow(), "an ordinary failure is not fenced");
        let fenced = StoreError(format!("{FENCED}store epoch is 7, ours 6"));
        assert!(fenced.is_fenced());
        assert!(!StoreError("reserving terms: FENCED: x".into()).is_fenced());
        p.store_failed("flush", &fenced.to_string(), false);
        assert!(*watch.borrow(), "the watch turns on");
        p.store_failed("heartbeat", &fenced.to_string(), false);
        assert!(*p.fenced().borrow(), "and stays on");
    }
}
