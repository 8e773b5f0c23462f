//! Work distribution: claims, fencing tokens, step heartbeats, completion, failure and the
//! sweep that takes work back.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{Harness, of_kind, settle};
use serde_json::json;
use vigil::work::lease::LeaseMode;
use vigil::work::task::{CompleteStatus, FailStatus, StepStatus, TaskQuery, TaskSpec, TaskStatus};
use vigil::{Config, Coordinator, Error, EventKind, LeaseOwner, RegisterRequest};

fn short_steps() -> Config {
    Config {
        step_timeout: Duration::from_secs(60),
        ..Config::default()
    }
}

/// Keeps `ids` alive from `from_ms` to `to_ms` (heartbeats every 10 s).
async fn keep_alive(h: &Harness, ids: &[&str], from_ms: u64, to_ms: u64) {
    let mut t = from_ms;
    while t < to_ms {
        t = (t + 10_000).min(to_ms);
        h.at(t).await;
        for id in ids {
            assert!(h.coordinator.heartbeat_now(id).alive, "{id} at {t} ms");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_gets_the_highest_priority_then_the_oldest_task() {
    let h = Harness::default().await;
    let low = h
        .coordinator
        .create_task(TaskSpec::new(json!("low")).priority(10))
        .await
        .unwrap();
    let first_high = h
        .coordinator
        .create_task(TaskSpec::new(json!("h1")).priority(90))
        .await
        .unwrap();
    let default = h
        .coordinator
        .create_task(TaskSpec::new(json!("d")))
        .await
        .unwrap();
    let second_high = h
        .coordinator
        .create_task(TaskSpec::new(json!("h2")).priority(90))
        .await
        .unwrap();
    assert_eq!(default.priority, 50);
    // The worker registers after the tasks exist.
    h.register("late").await;
    let claimed = h.coordinator.claim("late", 10).await.unwrap();
    let order: Vec<_> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(order, [first_high.id, second_high.id, default.id, low.id]);
    let tokens: HashSet<_> = claimed.iter().map(|c| c.claim_token.clone()).collect();
    assert_eq!(tokens.len(), 4, "a fresh token per claim");
    assert!(h.coordinator.claim("late", 10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_put_back_keeps_its_place_in_the_order() {
    let h = Harness::default().await;
    h.register("w").await;
    let a = h
        .coordinator
        .create_task(TaskSpec::new(json!("a")))
        .await
        .unwrap();
    let b = h
        .coordinator
        .create_task(TaskSpec::new(json!("b")))
        .await
        .unwrap();
    let claimed = h.coordinator.claim("w", 1).await.unwrap();
    assert_eq!(claimed[0].task.id, a.id);
    let failure = h
        .coordinator
        .fail_task(a.id, claimed[0].claim_token.as_str(), Some("boom".into()))
        .await
        .unwrap();
    assert_eq!(failure.status, FailStatus::Pending);
    // a is older than b, so it comes first again.
    let again = h.coordinator.claim("w", 2).await.unwrap();
    assert_eq!(
        again.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        [a.id, b.id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claimers_never_get_the_same_task() {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let workers: Vec<String> = (0..32).map(|i| format!("racer-{i}")).collect();
    for w in &workers {
        coordinator
            .register(RegisterRequest::new(w.as_str()))
            .await
            .unwrap();
    }
    // One task, 32 claimers at once: exactly one winner.
    let only = coordinator
        .create_task(TaskSpec::new(json!(1)))
        .await
        .unwrap();
    let handles: Vec<_> = workers
        .iter()
        .map(|w| {
            let c = coordinator.clone();
            let w = w.clone();
            tokio::spawn(async move { c.claim(&w, 1).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for handle in handles {
        let got = handle.await.unwrap();
        if let Some(claim) = got.first() {
            assert_eq!(claim.task.id, only.id);
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    // 2000 tasks, 32 claimers looping until the queue is empty: each task claimed once.
    for i in 0..2000 {
        coordinator
            .create_task(TaskSpec::new(json!(i)))
            .await
            .unwrap();
    }
    let handles: Vec<_> = workers
        .iter()
        .map(|w| {
            let c = coordinator.clone();
            let w = w.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = c.claim(&w, 3).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.task.id));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for handle in handles {
        for id in handle.await.unwrap() {
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 2000);
    coordinator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn only_a_live_registered_instance_may_claim() {
    let h = Harness::default().await;
    h.coordinator
        .create_task(TaskSpec::new(json!(1)))
        .await
        .unwrap();
    assert!(matches!(
        h.coordinator.claim("stranger", 1).await,
        Err(Error::NotAlive(_))
    ));
    h.register("w").await;
    h.at(30_000).await; // expired
    assert!(matches!(
        h.coordinator.claim("w", 1).await,
        Err(Error::NotAlive(_))
    ));
    assert_eq!(h.coordinator.task_counts()["pending"], 1);
}

#[tokio::test(start_paused = true)]
async fn completion_is_fenced_by_the_claim_token_and_idempotent() {
    let mut h = Harness::default().await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!({"n": 1})))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    let wrong = h
        .coordinator
        .complete_task(task.id, "not-the-token", Some(json!("x")))
        .await
        .unwrap();
    assert_eq!(wrong.status, CompleteStatus::StaleClaim);
    assert_eq!(
        h.coordinator.get_task(task.id).unwrap().status,
        TaskStatus::Claimed
    );
    let token = claim.claim_token.as_str();
    let done = h
        .coordinator
        .complete_task(task.id, token, Some(json!("ok")))
        .await
        .unwrap();
    assert_eq!(done.status, CompleteStatus::Completed);
    let again = h
        .coordinator
        .complete_task(task.id, token, Some(json!("other")))
        .await
        .unwrap();
    assert_eq!(again.status, CompleteStatus::Completed);
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(
        view.result,
        Some(json!("ok")),
        "the second completion changed nothing"
    );
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::TaskCompleted).len(), 1);
    // Other calls with the token after completion are stale.
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::StaleClaim);
    let fail = h.coordinator.fail_task(task.id, token, None).await.unwrap();
    assert_eq!(fail.status, FailStatus::StaleClaim);
}

#[tokio::test(start_paused = true)]
async fn a_poison_task_fails_for_good_after_max_attempts() {
    let h = Harness::default().await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("poison")).max_attempts(3))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
        let f = h
            .coordinator
            .fail_task(task.id, claim.claim_token.as_str(), Some("crash".into()))
            .await
            .unwrap();
        outcomes.push((f.status, f.retry_count, f.can_retry));
    }
    assert_eq!(
        outcomes,
        [
            (FailStatus::Pending, 1, true),
            (FailStatus::Pending, 2, true),
            (FailStatus::Failed, 3, false)
        ]
    );
    assert!(h.coordinator.claim("w", 1).await.unwrap().is_empty());
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Failed);
    assert_eq!(view.error.as_deref(), Some("crash"));
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_workers_keep_dying_ends_failed_instead_of_looping() {
    let h = Harness::default().await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("kills its worker")).max_attempts(2))
        .await
        .unwrap();
    for round in 0..2u64 {
        h.register("w").await;
        assert_eq!(h.coordinator.claim("w", 1).await.unwrap().len(), 1);
        h.at((round + 1) * 40_000).await; // the worker dies with the task
        assert_eq!(h.status_of("w"), None);
    }
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Failed);
    assert_eq!(view.attempts, 2);
    assert!(
        view.error.unwrap().contains("w (epoch"),
        "names the dead holder"
    );
    h.register("w").await;
    assert!(h.coordinator.claim("w", 1).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dead_workers_tasks_are_reassigned_once_and_the_old_holder_is_fenced_off() {
    let mut h = Harness::default().await;
    h.register("doomed").await;
    h.register("survivor").await;
    for i in 0..3 {
        h.coordinator
            .create_task(TaskSpec::new(json!(i)))
            .await
            .unwrap();
    }
    let old = h.coordinator.claim("doomed", 3).await.unwrap();
    assert_eq!(old.len(), 3);
    // "doomed" stops heartbeating and expires at 30 s; "survivor" keeps going.
    keep_alive(&h, &["survivor"], 0, 30_000).await;
    settle().await;
    assert_eq!(h.coordinator.task_counts()["pending"], 3);
    let new = h.coordinator.claim("survivor", 3).await.unwrap();
    assert_eq!(new.len(), 3);
    for (o, n) in old.iter().zip(&new) {
        let stale = h
            .coordinator
            .complete_task(o.task.id, o.claim_token.as_str(), Some(json!("zombie")))
            .await
            .unwrap();
        assert_eq!(stale.status, CompleteStatus::StaleClaim);
        let done = h
            .coordinator
            .complete_task(n.task.id, n.claim_token.as_str(), Some(json!("fresh")))
            .await
            .unwrap();
        assert_eq!(done.status, CompleteStatus::Completed);
    }
    for o in &old {
        let view = h.coordinator.get_task(o.task.id).unwrap();
        assert_eq!(view.result, Some(json!("fresh")));
        assert_eq!(view.attempts, 1, "the lost attempt counts");
    }
    // Later sweeps do not reassign them again.
    keep_alive(&h, &["survivor"], 30_000, 40_000).await;
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::TaskReassigned).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn unregistering_reports_how_many_tasks_went_back() {
    let h = Harness::default().await;
    h.register("w").await;
    for i in 0..2 {
        h.coordinator
            .create_task(TaskSpec::new(json!(i)))
            .await
            .unwrap();
    }
    h.coordinator.claim("w", 2).await.unwrap();
    let out = h.coordinator.unregister("w").await.unwrap();
    assert!(out.unregistered);
    assert_eq!(out.tasks_reassigned, 2);
    assert_eq!(h.coordinator.task_counts()["pending"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_resurrected_zombie_cannot_overwrite_the_rerun() {
    let mut h = Harness::start(short_steps()).await;
    h.register("slow").await;
    h.register("fast").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("job")))
        .await
        .unwrap();
    let zombie = h.coordinator.claim("slow", 1).await.unwrap().remove(0);
    // "slow" stays registered (heartbeats) but its step hangs: no step heartbeat for 60 s.
    keep_alive(&h, &["slow", "fast"], 0, 61_000).await;
    settle().await;
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Pending, "reset by the sweep");
    let rerun = h.coordinator.claim("fast", 1).await.unwrap().remove(0);
    let done = h
        .coordinator
        .complete_task(task.id, rerun.claim_token.as_str(), Some(json!("rerun")))
        .await
        .unwrap();
    assert_eq!(done.status, CompleteStatus::Completed);
    // The zombie wakes up and tries everything.
    let t = zombie.claim_token.as_str();
    let beat = h
        .coordinator
        .task_heartbeat(task.id, t, Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::StaleClaim);
    let c = h
        .coordinator
        .complete_task(task.id, t, Some(json!("zombie")))
        .await
        .unwrap();
    assert_eq!(c.status, CompleteStatus::StaleClaim);
    let f = h
        .coordinator
        .fail_task(task.id, t, Some("zombie".into()))
        .await
        .unwrap();
    assert_eq!(f.status, FailStatus::StaleClaim);
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.result, Some(json!("rerun")));
    assert_eq!(view.status, TaskStatus::Completed);
    let events = h.drain_events();
    let reassigned = of_kind(&events, EventKind::TaskReassigned);
    assert_eq!(reassigned.len(), 1);
    assert!(
        reassigned[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("step timeout")
    );
}

#[tokio::test(start_paused = true)]
async fn step_heartbeats_keep_a_long_step_alive() {
    let h = Harness::start(short_steps()).await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("long")))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    for t in (10_000..=200_000).step_by(10_000) {
        h.at(t).await;
        h.coordinator.heartbeat_now("w");
        let beat = h
            .coordinator
            .task_heartbeat(task.id, claim.claim_token.as_str(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(beat.status, StepStatus::Ok, "at {t} ms");
    }
    assert_eq!(
        h.coordinator.get_task(task.id).unwrap().status,
        TaskStatus::Claimed
    );
}

#[tokio::test(start_paused = true)]
async fn list_filters_by_status_and_assignee() {
    let h = Harness::default().await;
    h.register("a").await;
    h.register("b").await;
    for i in 0..5 {
        h.coordinator
            .create_task(TaskSpec::new(json!(i)))
            .await
            .unwrap();
    }
    h.coordinator.claim("a", 2).await.unwrap();
    h.coordinator.claim("b", 1).await.unwrap();
    let by_a = h.coordinator.list_tasks(&TaskQuery {
        assignee: Some("a".into()),
        ..TaskQuery::default()
    });
    assert_eq!(by_a.len(), 2);
    let pending = h.coordinator.list_tasks(&TaskQuery {
        status: Some(TaskStatus::Pending),
        limit: Some(1),
        ..TaskQuery::default()
    });
    assert_eq!(pending.len(), 1);
    let counts = h.coordinator.task_counts();
    assert_eq!((counts["pending"], counts["claimed"]), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn task_input_rules_are_enforced() {
    let h = Harness::default().await;
    let cases: Vec<(TaskSpec, &str)> = vec![
        (TaskSpec::new(json!("x".repeat(64 * 1024))), "payload"),
        (TaskSpec::new(json!(1)).priority(101), "priority"),
        (TaskSpec::new(json!(1)).max_attempts(0), "maxAttempts"),
        (TaskSpec::new(json!(1)).max_attempts(101), "maxAttempts"),
        (
            TaskSpec::new(json!(1)).lock("a//b", LeaseMode::Exclusive),
            "requiresLocks[0].key",
        ),
        (
            TaskSpec::new(json!(1))
                .lock("a", LeaseMode::Exclusive)
                .lock("a", LeaseMode::Shared),
            "requiresLocks[1].key",
        ),
    ];
    for (spec, field) in cases {
        match h.coordinator.create_task(spec.clone()).await {
            Err(Error::Invalid(e)) => assert_eq!(e.field, field, "{spec:?}"),
            other => panic!("{spec:?}: {other:?}"),
        }
    }
    let mut many = TaskSpec::new(json!(1));
    for i in 0..33 {
        many = many.lock(&format!("k{i}"), LeaseMode::Shared);
    }
    assert!(
        matches!(h.coordinator.create_task(many).await, Err(Error::Invalid(e)) if e.field == "requiresLocks")
    );
    h.register("w").await;
    assert!(
        matches!(h.coordinator.claim("w", 0).await, Err(Error::Invalid(e)) if e.field == "maxTasks")
    );
    assert!(
        matches!(h.coordinator.claim("w", 101).await, Err(Error::Invalid(e)) if e.field == "maxTasks")
    );
    assert!(
        matches!(h.coordinator.claim("bad id", 1).await, Err(Error::Invalid(e)) if e.field == "workerId")
    );
    assert_eq!(h.coordinator.task_counts()["pending"], 0);
    // A lease owner that is not a live instance.
    assert!(matches!(
        h.coordinator
            .acquire_lease(
                "k",
                LeaseOwner::Instance("ghost".into()),
                LeaseMode::Shared,
                None
            )
            .await,
        Err(Error::NotAlive(_))
    ));
}

/// `Limits::max_tasks` caps live (pending and claimed) tasks; a refused creation changes
/// nothing, and a task that fails for good (finished) makes room.
#[tokio::test(start_paused = true)]
async fn live_tasks_are_capped_and_a_refused_creation_changes_nothing() {
    let mut h = Harness::start(Config {
        limits: vigil::Limits {
            max_tasks: 2,
            ..vigil::Limits::default()
        },
        ..Config::default()
    })
    .await;
    h.register("w").await;
    let spec = |n: u32| TaskSpec::new(json!({"n": n})).max_attempts(1);
    h.coordinator.create_task(spec(1)).await.unwrap();
    h.coordinator.create_task(spec(2)).await.unwrap();
    h.drain_events();
    assert!(matches!(
        h.coordinator.create_task(spec(3)).await,
        Err(Error::TooManyTasks(2))
    ));
    settle().await;
    assert!(of_kind(&h.drain_events(), EventKind::TaskCreated).is_empty());
    assert_eq!(h.coordinator.task_counts()["pending"], 2);
    // Claimed still counts; failed for good does not.
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    assert!(matches!(
        h.coordinator.create_task(spec(4)).await,
        Err(Error::TooManyTasks(2))
    ));
    let token = claim.claim_token.as_str().to_string();
    let failed = h
        .coordinator
        .fail_task(claim.task.id, &token, None)
        .await
        .unwrap();
    assert_eq!(failed.status, FailStatus::Failed);
    assert_eq!(h.coordinator.live_task_count(), 1);
    let made = h.coordinator.create_task(spec(5)).await.unwrap();
    assert_eq!(made.payload, json!({"n": 5}));
    let listed = h.coordinator.list_tasks_page(&TaskQuery::default());
    assert_eq!((listed.total, listed.truncated), (3, false));
}

/// Registers `id` with a short TTL, as a Sortie-style runner would before claiming and exiting.
async fn register_runner(h: &Harness, id: &str, ttl: Duration) -> vigil::Registration {
    h.coordinator
        .register(RegisterRequest::new(id).roles(["worker"]).ttl(ttl))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn step_heartbeats_keep_a_short_lived_runners_claim_alive_until_they_stop() {
    const TTL: u64 = 10_000;
    let mut h = Harness::default().await;
    let registered = register_runner(&h, "runner", Duration::from_millis(TTL)).await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("agent step")).max_attempts(3))
        .await
        .unwrap();
    let claim = h.coordinator.claim("runner", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    // The runner exits: no instance heartbeat from now on. Only the agent's step heartbeats
    // arrive, every TTL/2, for six TTLs — with the token, and tokenless from the holder.
    let mut t = 0;
    for n in 1..=12 {
        t = n * TTL / 2;
        h.at(t).await;
        let beat = if n % 2 == 0 {
            h.coordinator
                .task_heartbeat(task.id, token, Duration::ZERO)
                .await
                .unwrap()
        } else {
            h.coordinator
                .task_heartbeat_without_token(task.id, "runner", Duration::ZERO)
                .await
                .unwrap()
        };
        assert_eq!(beat.status, StepStatus::Ok, "at {t} ms");
        let status = h.status_of("runner");
        assert!(
            status.is_some_and(|s| s.is_alive()),
            "at {t} ms: {status:?}"
        );
    }
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Claimed);
    assert_eq!(view.attempts, 0);
    let state = h.coordinator.state();
    let runner = state.instances.iter().find(|i| i.id.as_str() == "runner");
    assert_eq!(
        runner.unwrap().epoch,
        registered.epoch,
        "the same incarnation"
    );
    // The agent dies: the heartbeats stop. The instance lives out its TTL, then expires and
    // the task is taken back, its attempt counted.
    h.at(t + TTL - 1_000).await;
    assert!(h.status_of("runner").is_some_and(|s| s.is_alive()));
    assert_eq!(
        h.coordinator.get_task(task.id).unwrap().status,
        TaskStatus::Claimed
    );
    h.at(t + TTL + 1_000).await;
    assert_eq!(h.status_of("runner"), None, "expired and removed");
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Pending);
    assert_eq!(view.attempts, 1, "the lost attempt counts");
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::TaskReassigned).len(), 1);
    // A late step heartbeat or completion changes nothing.
    let late = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(late.status, StepStatus::StaleClaim);
    let late = h
        .coordinator
        .complete_task(task.id, token, Some(json!("late")))
        .await
        .unwrap();
    assert_eq!(late.status, CompleteStatus::StaleClaim);
    assert_eq!(h.status_of("runner"), None, "nothing brought it back");
}

#[tokio::test(start_paused = true)]
async fn a_stale_step_heartbeat_refreshes_no_instance() {
    const TTL: u64 = 10_000;
    let h = Harness::default().await;
    register_runner(&h, "first", Duration::from_millis(TTL)).await;
    register_runner(&h, "second", Duration::from_millis(TTL)).await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!("step")).max_attempts(3))
        .await
        .unwrap();
    let old = h.coordinator.claim("first", 1).await.unwrap().remove(0);
    let failed = h
        .coordinator
        .fail_task(task.id, old.claim_token.as_str(), Some("gave up".into()))
        .await
        .unwrap();
    assert_eq!(failed.status, FailStatus::Pending);
    let current = h.coordinator.claim("second", 1).await.unwrap().remove(0);
    assert_eq!(current.task.id, task.id);
    // Only the old token beats: it is stale, and keeps neither its former holder nor the
    // current one alive.
    for t in (TTL / 2..=2 * TTL).step_by((TTL / 2) as usize) {
        h.at(t).await;
        let beat = h
            .coordinator
            .task_heartbeat(task.id, old.claim_token.as_str(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(beat.status, StepStatus::StaleClaim, "at {t} ms");
    }
    assert_eq!(h.status_of("first"), None, "expired after its TTL");
    assert_eq!(h.status_of("second"), None, "expired after its TTL");
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Pending);
    assert_eq!(view.attempts, 2, "the failure and the take-back");
}
