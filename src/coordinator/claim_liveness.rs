//! Claim liveness, at the level of the hot cell: what an `ok` step heartbeat does to the
//! liveness of the claim's holder when its epoch does not match, and when the holder was
//! recorded expired but its claim not yet taken back (the race between a step heartbeat and a
//! departure). On tokio's paused clock; the end-to-end behaviour is in `tests/suite/tasks.rs`.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::Coordinator;
use crate::config::Config;
use crate::model::{Epoch, InstanceId, InstanceStatus, RegisterRequest};
use crate::work::task::{CompleteStatus, StepStatus, TaskSpec, TaskStatus};

const TTL: Duration = Duration::from_secs(10);

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

async fn start() -> (Coordinator, Instant) {
    let t0 = Instant::now();
    let c = Coordinator::start(Config::default()).await.unwrap();
    c.register(RegisterRequest::new("w").roles(["worker"]).ttl(TTL))
        .await
        .unwrap();
    (c, t0)
}

fn liveness(c: &Coordinator, id: &str) -> Option<(Epoch, InstanceStatus, u64)> {
    c.inner.ctx.registry.get(id).map(|e| {
        let (status, seen) = e.cell.liveness();
        (e.slot.epoch, status, seen)
    })
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s, &Default::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_claim_holder_is_refreshed_only_in_its_epoch_and_never_revived() {
    let (c, t0) = start().await;
    let (epoch, _, seen) = liveness(&c, "w").unwrap();
    tokio::time::sleep_until(t0 + Duration::from_secs(4)).await;
    settle().await;
    // Another epoch of the same id: nothing moves.
    assert_eq!(c.refresh_claim_holder(&id("w"), Epoch(epoch.0 + 1)), None);
    assert_eq!(liveness(&c, "w").unwrap().2, seen);
    // Its own epoch: refreshed, as by a heartbeat now.
    assert_eq!(c.refresh_claim_holder(&id("w"), epoch), Some(id("w")));
    let (_, status, refreshed) = liveness(&c, "w").unwrap();
    assert_eq!(status, InstanceStatus::Active);
    assert!(refreshed >= seen + 4_000, "{seen} → {refreshed}");
    // Unknown id: nothing.
    assert_eq!(c.refresh_claim_holder(&id("nobody"), epoch), None);
    // Recorded expired (the actor's compare-and-swap landed first): never alive again.
    let cell = c.inner.ctx.registry.get("w").unwrap().cell.clone();
    assert!(matches!(
        cell.expire_if_due(u64::MAX),
        crate::registry::Transition::Done
    ));
    assert_eq!(c.refresh_claim_holder(&id("w"), epoch), None);
    assert_eq!(cell.liveness(), (InstanceStatus::Expired, refreshed));
    assert!(!c.heartbeat_now("w").alive);
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_heartbeat_racing_the_departure_answers_the_book_and_revives_nothing() {
    let (c, t0) = start().await;
    let task = c
        .create_task(TaskSpec::new(json!("step")).max_attempts(3))
        .await
        .unwrap();
    let claim = c.claim("w", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    let (_, _, seen) = liveness(&c, "w").unwrap();
    // The holder is recorded expired; its departure has not run yet (no await in between).
    let cell = c.inner.ctx.registry.get("w").unwrap().cell.clone();
    assert!(matches!(
        cell.expire_if_due(u64::MAX),
        crate::registry::Transition::Done
    ));
    // The step heartbeat answers what the work book says under its lock — the claim is still
    // there — but the expired holder stays expired.
    let beat = c
        .task_heartbeat(task.id, token, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::Ok);
    assert_eq!(cell.liveness(), (InstanceStatus::Expired, seen));
    let beat = c
        .task_heartbeat_without_token(task.id, "w", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        beat.to_string().contains("not registered and alive"),
        "{beat}"
    );
    assert_eq!(cell.liveness(), (InstanceStatus::Expired, seen));
    // The instance actor wakes, finds it expired, and the departure takes the claim back.
    tokio::time::sleep_until(t0 + TTL + Duration::from_secs(1)).await;
    settle().await;
    assert!(liveness(&c, "w").is_none(), "removed");
    let view = c.get_task(task.id).unwrap();
    assert_eq!(view.status, TaskStatus::Pending);
    assert_eq!(view.attempts, 1, "the take-back counts an attempt");
    let late = c
        .task_heartbeat(task.id, token, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(late.status, StepStatus::StaleClaim);
    let late = c.complete_task(task.id, token, None).await.unwrap();
    assert_eq!(late.status, CompleteStatus::StaleClaim);
    c.shutdown().await;
}
