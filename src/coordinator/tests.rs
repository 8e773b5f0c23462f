//! The write-through rules when the store fails, on tokio's paused clock, against a store whose
//! behaviour the test switches: up, refusing at once (a dead Redis) or hanging until its
//! response timeout (a stopped one). The same rules over HTTP against a real `redis-server`
//! are in `tests/suite/persistence.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

use super::{Coordinator, LeaseOwner};
use crate::config::Config;
use crate::error::Error;
use crate::events::EventKind;
use crate::model::RegisterRequest;
use crate::store::{
    Applied, BoxFuture, Breaker, FLUSH_PART, HeartbeatWrite, Snapshot, Store, StoreError,
    WriteBatch,
};
use crate::work::lease::LeaseMode;
use crate::work::records::TaskRecord;
use crate::work::task::{CompleteStatus, StepStatus, TaskId, TaskQuery, TaskSpec, TaskStatus};

const STORE_WAIT: Duration = Duration::from_millis(400);
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a hung store takes to fail a call (its response timeout).
const HANG: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Up,
    /// Refuses every write at once.
    Down,
    /// Answers every write with a failure after [`HANG`].
    Hung,
}

/// A store kept in maps, whose behaviour the test switches.
#[derive(Debug, Default)]
struct FakeStore {
    mode: Mutex<Mode>,
    instances: Mutex<BTreeMap<String, u64>>,
    tasks: Mutex<BTreeMap<TaskId, TaskRecord>>,
    leases: Mutex<BTreeMap<String, Vec<u64>>>,
    /// Entities written by each successful apply.
    applies: Mutex<Vec<usize>>,
}

impl FakeStore {
    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn task(&self, id: TaskId) -> Option<TaskRecord> {
        self.tasks.lock().get(&id).cloned()
    }
}

impl Store for FakeStore {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn apply<'a>(&'a self, batch: &'a WriteBatch) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(async move {
            let mode = *self.mode.lock();
            match mode {
                Mode::Up => {}
                Mode::Down => return Err(StoreError("connection refused".into())),
                Mode::Hung => {
                    tokio::time::sleep(HANG).await;
                    return Err(StoreError("response timed out".into()));
                }
            }
            let mut instances = self.instances.lock();
            for (r, _) in &batch.instances {
                instances.insert(r.id.to_string(), r.epoch.0);
            }
            for id in &batch.instances_gone {
                instances.remove(id.as_str());
            }
            let mut tasks = self.tasks.lock();
            for r in &batch.tasks {
                tasks.insert(r.id, r.clone());
            }
            for id in &batch.tasks_gone {
                tasks.remove(id);
            }
            let mut leases = self.leases.lock();
            for (r, _) in &batch.leases {
                let tokens = r.grants.iter().map(|g| g.fencing_token).collect();
                leases.insert(r.key.to_string(), tokens);
            }
            for key in &batch.leases_gone {
                leases.remove(key.as_str());
            }
            self.applies.lock().push(
                batch.instances.len()
                    + batch.instances_gone.len()
                    + batch.tasks.len()
                    + batch.tasks_gone.len()
                    + batch.leases.len()
                    + batch.leases_gone.len(),
            );
            Ok(Applied::default())
        })
    }

    fn heartbeat<'a>(&'a self, _: &'a HeartbeatWrite) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn load(&self, _: usize) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }

    fn reserve_terms(&self, _: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        // Terms are not what these tests are about: unlimited, as in memory.
        Box::pin(async { Ok(u64::MAX) })
    }
}

fn not_durable<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::NotDurable(_)))
}

/// A coordinator on a fake store whose breaker opens after `breaker_failures` failures.
async fn start(breaker_failures: u32) -> (Coordinator, Arc<FakeStore>) {
    let store = Arc::new(FakeStore::default());
    let config = Config {
        call_timeout: CALL_TIMEOUT,
        store_wait: STORE_WAIT,
        ..Config::default()
    };
    let c = Coordinator::start_with_store(
        config,
        Arc::clone(&store) as Arc<dyn Store>,
        Breaker::new(breaker_failures, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    (c, store)
}

/// Flushes until the store takes it (a hung store first fails the write it holds).
async fn recovered(c: &Coordinator) {
    for _ in 0..20 {
        if c.flush().await.is_ok() {
            return;
        }
    }
    panic!("the store did not recover");
}

/// Memory and the fake store hold the same instances, tasks (status, holder) and leases.
fn assert_store_equals_memory(c: &Coordinator, store: &FakeStore) {
    let memory_instances: BTreeMap<String, u64> = c
        .state()
        .instances
        .iter()
        .map(|i| (i.id.to_string(), i.epoch.0))
        .collect();
    assert_eq!(*store.instances.lock(), memory_instances);
    let memory_tasks: BTreeMap<TaskId, (TaskStatus, Option<String>)> = c
        .list_tasks(&TaskQuery {
            limit: Some(10_000),
            ..TaskQuery::default()
        })
        .into_iter()
        .map(|t| (t.id, (t.status, t.assigned_to.map(|a| a.to_string()))))
        .collect();
    let stored_tasks: BTreeMap<TaskId, (TaskStatus, Option<String>)> = store
        .tasks
        .lock()
        .values()
        .map(|t| {
            let holder = t.assignee.as_ref().map(|(id, _)| id.to_string());
            (t.id, (t.status, holder))
        })
        .collect();
    assert_eq!(stored_tasks, memory_tasks);
    let mut memory_leases: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for g in c.list_leases(None).unwrap() {
        memory_leases
            .entry(g.key.to_string())
            .or_default()
            .push(g.fencing_token);
    }
    assert_eq!(*store.leases.lock(), memory_leases);
}

#[tokio::test(start_paused = true)]
async fn a_claim_the_store_does_not_acknowledge_is_undone() {
    for mode in [Mode::Down, Mode::Hung] {
        let (c, store) = start(1000).await;
        c.register(RegisterRequest::new("w1")).await.unwrap();
        let task = c
            .create_task(TaskSpec::new(json!("job")).lock("repo/src", LeaseMode::Exclusive))
            .await
            .unwrap();
        let mut events = c.subscribe();
        store.set(mode);
        let started = Instant::now();
        let refused = c.claim("w1", 1).await;
        let took = started.elapsed();
        assert!(
            matches!(refused, Err(Error::StoreUnavailable(_))),
            "{mode:?}: {refused:?}"
        );
        // The store's verdict, within the store wait, before the call timeout.
        assert!(
            took >= STORE_WAIT && took < CALL_TIMEOUT,
            "{mode:?}: {took:?}"
        );
        // Memory is as before the claim: pending in its place, no holder, no lease.
        let view = c.get_task(task.id).unwrap();
        assert_eq!(view.status, TaskStatus::Pending, "{mode:?}");
        assert_eq!(view.attempts, 0);
        assert_eq!(view.assigned_to, None);
        assert_eq!(view.claimed_at_ms, None);
        assert!(c.list_leases(None).unwrap().is_empty());
        let mut kinds = Vec::new();
        while let Ok(e) = events.try_recv() {
            kinds.push((e.kind, e.reason));
        }
        let kinds: Vec<EventKind> = kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(
            kinds,
            [
                EventKind::TaskClaimed,
                EventKind::LeaseAcquired,
                EventKind::LeaseReleased,
                EventKind::TaskReassigned,
            ],
            "{mode:?}"
        );
        // The undo reaches the store once it is back: no claim, no lease there.
        store.set(Mode::Up);
        recovered(&c).await;
        let stored = store.task(task.id).unwrap();
        assert_eq!(stored.status, TaskStatus::Pending);
        assert_eq!(stored.claim_token, None);
        assert_store_equals_memory(&c, &store);
        // And the task can be claimed again, with a fresh token.
        let again = c.claim("w1", 1).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].task.id, task.id);
        assert_eq!(store.task(task.id).unwrap().status, TaskStatus::Claimed);
        c.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_the_store_does_not_acknowledge_is_withdrawn_and_a_request_id_retries_safely() {
    let (c, store) = start(1000).await;
    let spec = || TaskSpec::new(json!({"job": 1})).request_id("req-1");
    let mut events = c.subscribe();
    store.set(Mode::Down);
    let refused = c.create_task(spec()).await;
    assert!(
        matches!(refused, Err(Error::StoreUnavailable(_))),
        "{refused:?}"
    );
    assert!(c.list_tasks(&TaskQuery::default()).is_empty(), "undone");
    let kinds: Vec<EventKind> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EventKind::TaskCreated, EventKind::TaskWithdrawn]);
    store.set(Mode::Up);
    recovered(&c).await;
    // The retry creates it (the first attempt left nothing behind) ...
    let first = c.create_task(spec()).await.unwrap();
    assert_eq!(first.request_id.as_deref(), Some("req-1"));
    // ... and a repeat answers the same task instead of a second one.
    let again = c.create_task(spec()).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(c.task_counts()["pending"], 1);
    // The same request id with other parameters is refused.
    let other = c
        .create_task(TaskSpec::new(json!({"job": 2})).request_id("req-1"))
        .await;
    assert!(
        matches!(&other, Err(Error::Invalid(v)) if v.field == "requestId"),
        "{other:?}"
    );
    for bad in [String::new(), "x".repeat(129), "a\nb".into()] {
        let refused = c.create_task(TaskSpec::new(json!(1)).request_id(bad)).await;
        assert!(
            matches!(&refused, Err(Error::Invalid(v)) if v.field == "requestId"),
            "{refused:?}"
        );
    }
    assert_store_equals_memory(&c, &store);
    assert_eq!(
        store.task(first.id).unwrap().request_id.as_deref(),
        Some("req-1")
    );
    c.shutdown().await;
}

/// Calls whose change stands answer `NotDurable`: the change is in memory, answers reflect
/// it, a repeat is safe, and the store gets it once it is back.
#[tokio::test(start_paused = true)]
async fn calls_that_keep_their_change_answer_not_durable_and_are_safe_to_repeat() {
    let (c, store) = start(1000).await;
    c.register(RegisterRequest::new("w1")).await.unwrap();
    let task = c.create_task(TaskSpec::new(json!("job"))).await.unwrap();
    let claim = c.claim("w1", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str().to_string();
    store.set(Mode::Hung);

    let started = Instant::now();
    let registered = c.register(RegisterRequest::new("w2")).await;
    let took = started.elapsed();
    assert!(not_durable(&registered), "{registered:?}");
    assert!(took >= STORE_WAIT && took < CALL_TIMEOUT, "{took:?}");
    assert!(c.heartbeat_now("w2").alive, "the registration stands");
    let beat = c
        .task_heartbeat(task.id, &token, Duration::from_secs(60))
        .await;
    assert!(not_durable(&beat), "{beat:?}");
    let lease = c
        .acquire_lease(
            "db/main",
            LeaseOwner::Instance("w2".into()),
            LeaseMode::Exclusive,
            None,
        )
        .await;
    assert!(not_durable(&lease), "{lease:?}");
    let fencing = c.list_leases(None).unwrap()[0].fencing_token;
    let done = c.complete_task(task.id, &token, Some(json!("ok"))).await;
    assert!(not_durable(&done), "{done:?}");
    assert_eq!(c.get_task(task.id).unwrap().status, TaskStatus::Completed);

    store.set(Mode::Up);
    recovered(&c).await;
    // Repeats answer as the first call took effect, and now durably.
    assert!(
        c.register(RegisterRequest::new("w2"))
            .await
            .unwrap()
            .refreshed
    );
    assert_eq!(
        c.task_heartbeat(task.id, &token, Duration::ZERO)
            .await
            .unwrap()
            .status,
        StepStatus::StaleClaim,
        "the task is completed"
    );
    assert_eq!(
        c.complete_task(task.id, &token, Some(json!("ok")))
            .await
            .unwrap()
            .status,
        CompleteStatus::Completed
    );
    let again = c
        .acquire_lease(
            "db/main",
            LeaseOwner::Instance("w2".into()),
            LeaseMode::Exclusive,
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(&again, super::LeaseOutcome::Granted(g) if g.fencing_token == fencing),
        "{again:?}"
    );
    store.set(Mode::Hung);
    let gone = c.unregister("w2").await;
    assert!(not_durable(&gone), "{gone:?}");
    assert!(!c.heartbeat_now("w2").alive);
    store.set(Mode::Up);
    recovered(&c).await;
    assert!(!c.unregister("w2").await.unwrap().unregistered);
    assert_store_equals_memory(&c, &store);
    c.shutdown().await;
}

/// When the circuit opens during the wait, nothing will be attempted before the probe: the
/// call answers at once instead of waiting out the store wait.
#[tokio::test(start_paused = true)]
async fn a_wait_ends_when_the_circuit_opens() {
    let (c, store) = start(1).await;
    store.set(Mode::Down);
    let started = Instant::now();
    let refused = c.create_task(TaskSpec::new(json!("x"))).await;
    assert!(
        matches!(refused, Err(Error::StoreUnavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < STORE_WAIT, "{:?}", started.elapsed());
    assert_eq!(c.store_status().state, "open");
    assert!(c.list_tasks(&TaskQuery::default()).is_empty());
    // Now refused before anything changes.
    let refused = c.create_task(TaskSpec::new(json!("y"))).await;
    assert!(matches!(refused, Err(Error::StoreUnavailable(_))));
    assert_eq!(c.task_counts()["pending"], 0);
    c.shutdown().await;
}

/// After a failure the Persister rewrites everything — in parts of at most `FLUSH_PART`
/// entities, each one store call (and one short hold of the work lock), the journal's own
/// marks first.
#[tokio::test(start_paused = true)]
async fn a_full_rewrite_is_written_in_bounded_parts() {
    let (c, store) = start(1000).await;
    const TASKS: usize = 50_000;
    for i in 0..TASKS {
        c.ctx()
            .with_work(|work, op| {
                work.create(op, json!(i), 50, 3, Vec::new(), None, None)
                    .map(|_| ())
            })
            .unwrap();
    }
    recovered(&c).await;
    assert_eq!(store.tasks.lock().len(), TASKS);
    store.set(Mode::Down);
    assert!(c.flush().await.is_err());
    // The store lost everything meanwhile (a Redis restarted without persistence).
    store.tasks.lock().clear();
    store.applies.lock().clear();
    store.set(Mode::Up);
    recovered(&c).await;
    assert_eq!(store.tasks.lock().len(), TASKS, "rewritten in full");
    let applies = store.applies.lock().clone();
    assert!(
        applies.len() >= TASKS / FLUSH_PART,
        "{} parts",
        applies.len()
    );
    assert!(
        applies.iter().all(|&n| n <= FLUSH_PART),
        "a part over {FLUSH_PART}: {:?}",
        applies.iter().max()
    );
    let missing = (1..=TASKS as u64)
        .filter(|&i| store.task(TaskId(i)).map(|t| t.status) != Some(TaskStatus::Pending))
        .count();
    assert_eq!(missing, 0, "every task is back in the store, pending");
    c.shutdown().await;
}
