//! Resource leases through the coordinator: conflicts, claims' locks, release on every path,
//! extension by step heartbeats, and the reaper.

use std::time::Duration;

use crate::common::{Harness, of_kind, settle};
use serde_json::json;
use vigil::work::lease::LeaseMode::{self, Exclusive, Shared};
use vigil::work::task::{StepStatus, TaskSpec};
use vigil::{Config, EventKind, LeaseOutcome, LeaseOwner};

fn inst(id: &str) -> LeaseOwner {
    LeaseOwner::Instance(id.into())
}

async fn granted(h: &Harness, key: &str, who: &str, mode: LeaseMode) -> bool {
    matches!(
        h.coordinator
            .acquire_lease(key, inst(who), mode, None)
            .await
            .unwrap(),
        LeaseOutcome::Granted(_)
    )
}

async fn lease_keys(h: &Harness) -> Vec<String> {
    let mut keys: Vec<String> = h
        .coordinator
        .list_leases(None)
        .unwrap()
        .into_iter()
        .map(|g| g.key.to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(start_paused = true)]
async fn the_conflict_matrix_through_the_api() {
    let h = Harness::default().await;
    for w in ["a", "b", "c"] {
        h.register(w).await;
    }
    assert!(granted(&h, "repo/src", "a", Shared).await);
    assert!(
        granted(&h, "repo/src", "b", Shared).await,
        "shared + shared"
    );
    assert!(
        !granted(&h, "repo/src", "c", Exclusive).await,
        "exclusive vs shared"
    );
    assert!(
        !granted(&h, "repo", "c", Exclusive).await,
        "ancestor exclusive vs shared"
    );
    assert!(
        granted(&h, "repo", "c", Shared).await,
        "ancestor shared vs shared"
    );
    assert!(
        !granted(&h, "repo/src/main.rs", "c", Exclusive).await,
        "descendant"
    );
    assert!(granted(&h, "repo/docs", "c", Exclusive).await, "sibling");
    assert!(
        granted(&h, "repo/srcx", "c", Exclusive).await,
        "prefix of the text, not a child"
    );
    // Conflicts name the holds in the way.
    match h
        .coordinator
        .acquire_lease("repo", inst("a"), Exclusive, None)
        .await
        .unwrap()
    {
        LeaseOutcome::Conflict(found) => {
            let keys: Vec<String> = found.iter().map(|c| c.key.to_string()).collect();
            assert!(keys.contains(&"repo/docs".to_string()), "{keys:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn sorties_section_separator_conflicts_across_levels_and_at_claim() {
    let h = Harness::default().await;
    for w in ["a", "b", "c", "runner"] {
        h.register(w).await;
    }
    // `§` separates levels like `/`, and the two mix.
    assert!(granted(&h, "file:ch01.tex§PLXDX", "a", Shared).await);
    assert!(
        granted(&h, "file:ch01.tex", "b", Shared).await,
        "shared ancestor vs shared descendant"
    );
    assert!(
        !granted(&h, "file:ch01.tex", "c", Exclusive).await,
        "exclusive ancestor vs a shared hold below it"
    );
    assert!(
        !granted(&h, "file:ch01.tex§PLXDX§fig1", "c", Exclusive).await,
        "exclusive descendant vs shared ancestors"
    );
    assert!(
        granted(&h, "file:ch01.tex§QRSTU", "c", Shared).await,
        "a sibling section, shared like its ancestor"
    );
    assert!(granted(&h, "file:ch03.tex§A", "a", Exclusive).await);
    assert!(
        granted(&h, "file:ch03.tex§B", "c", Exclusive).await,
        "exclusive sibling sections"
    );
    assert!(
        !granted(&h, "file:ch03.tex", "b", Shared).await,
        "shared ancestor vs exclusive descendants"
    );
    assert!(
        granted(&h, "file:ch01.texx", "c", Exclusive).await,
        "a text prefix, not a child"
    );
    assert!(granted(&h, "repo/src§lock", "c", Exclusive).await);
    assert!(
        !granted(&h, "repo", "a", Shared).await,
        "ancestor across both separators"
    );
    assert!(
        granted(&h, "repo/src/lock", "a", Exclusive).await,
        "`repo/src/lock` and `repo/src§lock` are siblings"
    );
    // The refused acquirer is told what is in the way, under either separator.
    match h
        .coordinator
        .acquire_lease("repo/src", inst("b"), Exclusive, None)
        .await
        .unwrap()
    {
        LeaseOutcome::Conflict(found) => {
            let mut keys: Vec<String> = found.iter().map(|c| c.key.to_string()).collect();
            keys.sort();
            assert_eq!(keys, ["repo/src/lock", "repo/src§lock"]);
        }
        other => panic!("{other:?}"),
    }
    // Empty levels are refused, as `a//b` is.
    for bad in ["a§§b", "§a", "a§", "a/§b"] {
        let err = h
            .coordinator
            .acquire_lease(bad, inst("a"), Exclusive, None)
            .await
            .unwrap_err();
        assert!(matches!(err, vigil::Error::Invalid(_)), "{bad:?}: {err:?}");
    }
    // A listing by prefix includes the descendants under `§`.
    let listed: Vec<String> = h
        .coordinator
        .list_leases(Some("file:ch01.tex"))
        .unwrap()
        .into_iter()
        .map(|g| g.key.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "file:ch01.tex",
            "file:ch01.tex§PLXDX",
            "file:ch01.tex§QRSTU"
        ]
    );
    // A task's required `§` locks conflict at claim: the task whose section is held stays
    // pending; the one on another section is claimed.
    let blocked = h
        .coordinator
        .create_task(TaskSpec::new(json!("edit PLXDX")).lock("file:ch01.tex§PLXDX", Exclusive))
        .await
        .unwrap();
    let free = h
        .coordinator
        .create_task(TaskSpec::new(json!("edit ch02")).lock("file:ch02.tex§PLXDX", Exclusive))
        .await
        .unwrap();
    let claimed = h.coordinator.claim("runner", 2).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].task.id, free.id);
    assert_eq!(
        h.coordinator.get_task(blocked.id).unwrap().status,
        vigil::work::task::TaskStatus::Pending
    );
    // Its locks now block the ancestor file, exclusive or shared.
    assert!(!granted(&h, "file:ch02.tex", "a", Shared).await);
    // Once the shared holds on the section and the file are gone, the blocked task is claimed.
    for (key, who) in [("file:ch01.tex§PLXDX", "a"), ("file:ch01.tex", "b")] {
        assert!(h.coordinator.release_lease(key, inst(who)).await.unwrap());
    }
    let next = h.coordinator.claim("runner", 1).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task.id, blocked.id);
}

#[tokio::test(start_paused = true)]
async fn fencing_tokens_grow_with_every_grant() {
    let h = Harness::default().await;
    h.register("a").await;
    h.register("b").await;
    let mut last = 0;
    for round in 0..5 {
        let who = if round % 2 == 0 { "a" } else { "b" };
        let grant = match h
            .coordinator
            .acquire_lease("db", inst(who), Exclusive, None)
            .await
            .unwrap()
        {
            LeaseOutcome::Granted(g) => g,
            other => panic!("{other:?}"),
        };
        assert!(grant.fencing_token > last);
        last = grant.fencing_token;
        assert!(h.coordinator.release_lease("db", inst(who)).await.unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn a_partial_conflict_takes_nothing() {
    let h = Harness::default().await;
    h.register("holder").await;
    h.register("w").await;
    assert!(granted(&h, "b", "holder", Exclusive).await);
    let task = h
        .coordinator
        .create_task(
            TaskSpec::new(json!(1))
                .lock("a", Exclusive)
                .lock("b", Shared),
        )
        .await
        .unwrap();
    let free = h
        .coordinator
        .create_task(TaskSpec::new(json!(2)).lock("c", Exclusive))
        .await
        .unwrap();
    let claimed = h.coordinator.claim("w", 2).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the lockable task");
    assert_eq!(claimed[0].task.id, free.id);
    assert_eq!(lease_keys(&h).await, ["b", "c"], "\"a\" was not taken");
    // Once "b" is free, the blocked task is claimable, still first in line.
    assert!(
        h.coordinator
            .release_lease("b", inst("holder"))
            .await
            .unwrap()
    );
    let next = h.coordinator.claim("w", 1).await.unwrap();
    assert_eq!(next[0].task.id, task.id);
    assert_eq!(next[0].leases.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn complete_fail_and_expiry_release_the_claims_leases() {
    let mut h = Harness::default().await;
    h.register("w").await;
    for key in ["x", "y", "z"] {
        h.coordinator
            .create_task(TaskSpec::new(json!(key)).lock(key, Exclusive))
            .await
            .unwrap();
    }
    let claims = h.coordinator.claim("w", 3).await.unwrap();
    assert_eq!(lease_keys(&h).await, ["x", "y", "z"]);
    h.coordinator
        .complete_task(claims[0].task.id, claims[0].claim_token.as_str(), None)
        .await
        .unwrap();
    assert_eq!(lease_keys(&h).await, ["y", "z"]);
    h.coordinator
        .fail_task(claims[1].task.id, claims[1].claim_token.as_str(), None)
        .await
        .unwrap();
    assert_eq!(lease_keys(&h).await, ["z"]);
    h.at(30_000).await; // "w" expires
    settle().await;
    assert!(lease_keys(&h).await.is_empty());
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::LeaseAcquired).len(), 3);
    assert_eq!(of_kind(&events, EventKind::LeaseReleased).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_instances_own_leases_go_when_it_expires_or_unregisters() {
    let h = Harness::default().await;
    h.register("a").await;
    h.register("b").await;
    assert!(granted(&h, "cfg", "a", Exclusive).await);
    assert!(granted(&h, "cache", "b", Shared).await);
    h.coordinator.unregister("b").await.unwrap();
    assert_eq!(lease_keys(&h).await, ["cfg"]);
    h.at(30_000).await;
    assert!(lease_keys(&h).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn step_heartbeats_extend_leases_and_report_lost_ones() {
    let config = Config {
        lease_ttl: Duration::from_secs(60),
        ..Config::default()
    };
    let mut h = Harness::start(config).await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)).lock("k1", Exclusive))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    // A lease the claim takes on later, with a short TTL.
    let short = h
        .coordinator
        .acquire_lease(
            "k2",
            LeaseOwner::Claim {
                task_id: task.id,
                claim_token: token.into(),
            },
            Exclusive,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert!(matches!(short, LeaseOutcome::Granted(_)));
    h.at(4_000).await;
    h.coordinator.heartbeat_now("w");
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::Ok);
    assert!(beat.lost_leases.is_empty());
    let leases = h.coordinator.list_leases(None).unwrap();
    assert!(
        leases
            .iter()
            .all(|g| g.expires_at_ms == beat.leases_expire_at_ms.unwrap())
    );
    // Extension 0: a heartbeat only, the leases keep their expiry (124 s).
    h.at(20_000).await;
    h.coordinator.heartbeat_now("w");
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::ZERO)
        .await
        .unwrap();
    assert!(beat.lost_leases.is_empty() && beat.leases_expire_at_ms.is_none());
    for t in (30_000..=130_000).step_by(10_000) {
        h.at(t).await;
        h.coordinator.heartbeat_now("w");
    }
    // Past 124 s both lapsed. k1 is a lock the task requires, so the claim ended with it: the
    // reaper (every second) removed both leases, said so with lease.expired, and took the task
    // back. The late heartbeat is told its claim is stale. Nothing was lost silently.
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::StaleClaim);
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::LeaseExpired).len(), 2);
    let back = of_kind(&events, EventKind::TaskReassigned);
    assert_eq!(back.len(), 1, "{events:?}");
    assert!(h.coordinator.list_leases(None).unwrap().is_empty());
    let task = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(task.status, vigil::work::task::TaskStatus::Pending);
    assert_eq!(task.attempts, 1);
    assert!(
        task.error.as_deref().unwrap().contains("k1"),
        "{:?}",
        task.error
    );
}

/// The rule for required locks (docs/work.md): a claim holds every lock its task requires for
/// as long as it lasts; once one lapses the claim is over. Here the lapsed lock is taken by
/// someone else before the reaper runs — the old claim can then neither heartbeat, complete
/// nor fail, so two claims never act under the same exclusive key.
#[tokio::test(start_paused = true)]
async fn a_claim_whose_required_lock_lapsed_can_no_longer_act() {
    let config = Config {
        lease_ttl: Duration::from_secs(60),
        sweep_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let h = Harness::start(config).await;
    h.register("w1").await;
    h.register("w2").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)).lock("repo/x", Exclusive))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w1", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    // Step heartbeats without extending the leases (Sortie's extend_leases_sec = 0).
    for t in (20_000..=60_000).step_by(20_000) {
        h.at(t).await;
        h.coordinator.heartbeat_now("w1");
        h.coordinator.heartbeat_now("w2");
    }
    h.at(61_000).await;
    // The lapsed lease no longer holds the key: another holder gets it.
    assert!(granted(&h, "repo/x", "w2", Exclusive).await);
    let complete = h
        .coordinator
        .complete_task(task.id, token, None)
        .await
        .unwrap();
    assert_eq!(
        complete.status,
        vigil::work::task::CompleteStatus::StaleClaim
    );
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::StaleClaim);
    let fail = h.coordinator.fail_task(task.id, token, None).await.unwrap();
    assert_eq!(fail.status, vigil::work::task::FailStatus::StaleClaim);
    let view = h.coordinator.get_task(task.id).unwrap();
    assert_eq!(view.status, vigil::work::task::TaskStatus::Pending);
    assert_eq!(view.attempts, 1);
    // Leases under the old claim are refused as well.
    let owner = LeaseOwner::Claim {
        task_id: task.id,
        claim_token: token.into(),
    };
    assert!(matches!(
        h.coordinator
            .acquire_lease("repo/y", owner, Exclusive, None)
            .await,
        Err(vigil::Error::StaleClaim(_))
    ));
}

/// A step heartbeat that finds a required lock lapsed (before the reaper did) ends the claim
/// and names the lock.
#[tokio::test(start_paused = true)]
async fn a_step_heartbeat_reports_the_required_lock_that_ended_its_claim() {
    let config = Config {
        sweep_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let h = Harness::start(config).await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)).lock("repo/x", Shared))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    // The default lease TTL (900 s) is shorter than the step timeout (1800 s): heartbeats that
    // do not extend the leases keep the claim from timing out, not its locks.
    for t in (10_000..=900_000).step_by(10_000) {
        h.at(t).await;
        h.coordinator.heartbeat_now("w");
        if t % 100_000 != 0 {
            continue;
        }
        let beat = h
            .coordinator
            .task_heartbeat(task.id, token, Duration::ZERO)
            .await
            .unwrap();
        let expect = if t < 900_000 {
            StepStatus::Ok
        } else {
            StepStatus::StaleClaim
        };
        assert_eq!(beat.status, expect, "at {t} ms");
        if t == 900_000 {
            let lost: Vec<&str> = beat.lost_leases.iter().map(|k| k.as_str()).collect();
            assert_eq!(lost, ["repo/x"]);
        }
    }
    assert_eq!(
        h.coordinator.get_task(task.id).unwrap().status,
        vigil::work::task::TaskStatus::Pending
    );
}

/// A lock the task requires cannot be released on its own: it lasts the whole claim.
#[tokio::test(start_paused = true)]
async fn a_required_lock_cannot_be_released_apart_from_its_claim() {
    let h = Harness::default().await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)).lock("repo/x", Exclusive))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    let owner = LeaseOwner::Claim {
        task_id: task.id,
        claim_token: claim.claim_token.as_str().into(),
    };
    match h.coordinator.release_lease("repo/x", owner.clone()).await {
        Err(vigil::Error::Invalid(e)) => assert_eq!(e.field, "key"),
        other => panic!("{other:?}"),
    }
    assert_eq!(lease_keys(&h).await, ["repo/x"]);
    // Nor weakened: acquiring it again under the claim (say, shared) is refused.
    match h
        .coordinator
        .acquire_lease(
            "repo/x",
            owner.clone(),
            Shared,
            Some(Duration::from_secs(1)),
        )
        .await
    {
        Err(vigil::Error::Invalid(e)) => assert_eq!(e.field, "key"),
        other => panic!("{other:?}"),
    }
    let held = h.coordinator.list_leases(None).unwrap();
    assert_eq!(held[0].mode, Exclusive);
    // A lease the claim took on its own is its to release.
    h.coordinator
        .acquire_lease("scratch", owner.clone(), Exclusive, None)
        .await
        .unwrap();
    assert!(h.coordinator.release_lease("scratch", owner).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_lease_reported_by_the_step_heartbeat_before_the_reaper_runs() {
    let config = Config {
        sweep_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let h = Harness::start(config).await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    let token = claim.claim_token.as_str();
    let owner = LeaseOwner::Claim {
        task_id: task.id,
        claim_token: token.into(),
    };
    h.coordinator
        .acquire_lease("scratch", owner, Shared, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    h.at(2_000).await;
    let beat = h
        .coordinator
        .task_heartbeat(task.id, token, Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::Ok);
    assert_eq!(
        beat.lost_leases
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        ["scratch"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_reaper_removes_lapsed_leases_and_says_so() {
    let mut h = Harness::default().await;
    h.register("w").await;
    h.coordinator
        .acquire_lease("tmp", inst("w"), Exclusive, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    h.at(2_000).await;
    assert_eq!(lease_keys(&h).await, ["tmp"]);
    h.at(4_000).await;
    assert!(lease_keys(&h).await.is_empty());
    let events = h.drain_events();
    let expired = of_kind(&events, EventKind::LeaseExpired);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease_key.as_ref().unwrap().as_str(), "tmp");
    // Renewing a lapsed lease is refused; it must be acquired again.
    assert!(
        h.coordinator
            .renew_lease("tmp", inst("w"), None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_for_a_stale_claim_is_refused() {
    let h = Harness::default().await;
    h.register("w").await;
    let task = h
        .coordinator
        .create_task(TaskSpec::new(json!(1)))
        .await
        .unwrap();
    let claim = h.coordinator.claim("w", 1).await.unwrap().remove(0);
    h.coordinator
        .complete_task(task.id, claim.claim_token.as_str(), None)
        .await
        .unwrap();
    let owner = LeaseOwner::Claim {
        task_id: task.id,
        claim_token: claim.claim_token.as_str().into(),
    };
    assert!(matches!(
        h.coordinator
            .acquire_lease("k", owner, Exclusive, None)
            .await,
        Err(vigil::Error::StaleClaim(_))
    ));
}
