//! Instance liveness: the state machine Active → Suspect → Expired on the paused clock.

use std::time::Duration;

use crate::common::{Harness, of_kind, settle};
use vigil::{Config, EventKind, InstanceStatus, RegisterRequest};

#[tokio::test(start_paused = true)]
async fn expires_exactly_at_ttl_and_not_before() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    h.at(29_999).await;
    assert!(h.status_of("w1").is_some_and(InstanceStatus::is_alive));
    assert!(of_kind(&h.drain_events(), EventKind::InstanceExpired).is_empty());
    h.at(30_000).await;
    assert_eq!(h.status_of("w1"), None, "gone from the registry at TTL");
    let events = h.drain_events();
    let expired = of_kind(&events, EventKind::InstanceExpired);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].instance_id.as_ref().unwrap().as_str(), "w1");
    assert!(!h.coordinator.heartbeat("w1").await.alive);
}

#[tokio::test(start_paused = true)]
async fn becomes_suspect_at_ttl_minus_grace() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    h.at(24_999).await;
    assert_eq!(h.status_of("w1"), Some(InstanceStatus::Active));
    h.at(25_000).await;
    assert_eq!(h.status_of("w1"), Some(InstanceStatus::Suspect));
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceSuspect).len(), 1);
    // A heartbeat brings a suspect instance back to active.
    assert!(h.coordinator.heartbeat("w1").await.alive);
    assert_eq!(h.status_of("w1"), Some(InstanceStatus::Active));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_one_ms_before_ttl_keeps_the_instance_alive() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    h.at(29_999).await;
    let beat = h.coordinator.heartbeat("w1").await;
    assert!(beat.alive);
    h.at(30_000).await;
    h.at(59_998).await;
    assert!(h.status_of("w1").is_some_and(InstanceStatus::is_alive));
    // The heartbeat at 29 999 ms moves the deadline to 59 999 ms, give or take one clock tick
    // (1 ms), never earlier.
    h.at(60_001).await;
    assert_eq!(h.status_of("w1"), None);
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceExpired).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn steady_heartbeats_keep_an_instance_alive_indefinitely() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    for second in 1..=30u64 {
        h.at(second * 10_000).await;
        assert!(h.coordinator.heartbeat("w1").await.alive, "at {second}0 s");
    }
    let events = h.drain_events();
    assert!(of_kind(&events, EventKind::InstanceExpired).is_empty());
    assert!(of_kind(&events, EventKind::InstanceSuspect).is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_id_is_not_alive_and_is_not_registered_by_a_heartbeat() {
    let h = Harness::default().await;
    let beat = h.coordinator.heartbeat("nobody").await;
    assert!(!beat.alive);
    assert!(!beat.is_leader);
    assert_eq!(h.coordinator.instance_count(), 0);
    // Malformed ids are just unknown on the hot path.
    assert!(!h.coordinator.heartbeat("").await.alive);
    assert!(!h.coordinator.heartbeat("has space").await.alive);
}

#[tokio::test(start_paused = true)]
async fn expired_instance_is_not_resurrected_by_a_heartbeat() {
    let h = Harness::default().await;
    h.register("w1").await;
    h.at(30_000).await;
    assert!(!h.coordinator.heartbeat("w1").await.alive);
    h.at(30_500).await;
    assert!(!h.coordinator.heartbeat("w1").await.alive);
    assert_eq!(h.coordinator.instance_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn re_registering_a_live_instance_keeps_its_epoch_and_updates_it() {
    let h = Harness::default().await;
    let first = h.register("w1").await;
    h.at(20_000).await;
    let again = h
        .coordinator
        .register(
            RegisterRequest::new("w1")
                .roles(["relay", "worker"])
                .metadata(serde_json::json!({"zone": "b"})),
        )
        .await
        .unwrap();
    assert_eq!(again.epoch, first.epoch);
    assert!(again.refreshed);
    let state = h.coordinator.state();
    assert_eq!(state.instances.len(), 1);
    assert_eq!(state.instances[0].roles, ["relay", "worker"]);
    assert_eq!(
        state.instances[0].metadata,
        serde_json::json!({"zone": "b"})
    );
    // Registration counts as a heartbeat: alive past the first deadline.
    h.at(45_000).await;
    assert!(h.status_of("w1").is_some_and(InstanceStatus::is_alive));
    h.at(50_001).await;
    assert_eq!(h.status_of("w1"), None);
}

#[tokio::test(start_paused = true)]
async fn registering_after_expiry_starts_a_new_epoch() {
    let h = Harness::default().await;
    let first = h.register("w1").await;
    h.at(30_000).await;
    let second = h.register("w1").await;
    assert!(second.epoch > first.epoch);
    assert!(!second.refreshed);
    assert!(h.coordinator.heartbeat("w1").await.alive);
}

#[tokio::test(start_paused = true)]
async fn registering_after_unregistering_starts_a_new_epoch() {
    let h = Harness::default().await;
    let first = h.register("w1").await;
    assert!(h.coordinator.unregister("w1").await.unwrap().unregistered);
    assert!(!h.coordinator.heartbeat("w1").await.alive);
    let second = h.register("w1").await;
    assert!(second.epoch > first.epoch);
}

#[tokio::test(start_paused = true)]
async fn unregistering_an_unknown_id_answers_false() {
    let mut h = Harness::default().await;
    assert!(
        !h.coordinator
            .unregister("nobody")
            .await
            .unwrap()
            .unregistered
    );
    h.register("w1").await;
    assert!(h.coordinator.unregister("w1").await.unwrap().unregistered);
    assert!(
        !h.coordinator.unregister("w1").await.unwrap().unregistered,
        "twice"
    );
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceUnregistered).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn per_instance_ttl_is_honoured() {
    let h = Harness::default().await;
    h.coordinator
        .register(RegisterRequest::new("short").ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    h.register("long").await;
    // Grace is clamped to half the TTL: suspect at 1 s.
    h.at(1_000).await;
    assert_eq!(h.status_of("short"), Some(InstanceStatus::Suspect));
    h.at(2_000).await;
    assert_eq!(h.status_of("short"), None);
    assert_eq!(h.status_of("long"), Some(InstanceStatus::Active));
}

#[tokio::test(start_paused = true)]
async fn check_health_sorts_instances_by_silence() {
    let h = Harness::default().await;
    h.register("quiet").await;
    h.register("chatty").await;
    h.at(10_000).await;
    h.coordinator.heartbeat("chatty").await;
    h.at(15_000).await;
    let report = h.coordinator.check_health(Some(Duration::from_secs(8)));
    assert_eq!(
        report
            .healthy
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>(),
        ["chatty"]
    );
    assert_eq!(
        report.failed.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        ["quiet"]
    );
    // Reporting does not expire anything.
    assert_eq!(h.coordinator.instance_count(), 2);
    let all = h.coordinator.check_health(None);
    assert_eq!(all.healthy.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything_and_is_idempotent() {
    let h = Harness::start(Config::default()).await;
    h.register("w1").await;
    h.coordinator.shutdown().await;
    h.coordinator.shutdown().await;
    assert!(!h.coordinator.heartbeat("w1").await.alive);
    assert!(matches!(
        h.coordinator.register(RegisterRequest::new("w2")).await,
        Err(vigil::Error::ShutDown)
    ));
}

/// The instance page is read off the ordered ids: in id order, from the cursor, without the
/// departed, and each id once across expiry, unregistration and re-registration.
#[tokio::test(start_paused = true)]
async fn the_instance_page_follows_registrations_and_departures_in_id_order() {
    let h = Harness::default().await;
    for id in ["w3", "w1", "w4", "w2", "w5"] {
        h.register(id).await;
    }
    let ids = |state: vigil::ClusterState| -> Vec<String> {
        state
            .instances
            .iter()
            .map(|i| i.id.as_str().to_string())
            .collect()
    };
    let page = |after: Option<&str>, limit: usize| vigil::StateQuery {
        limit: Some(limit),
        after: after.map(str::to_string),
        ..Default::default()
    };
    let first = h.coordinator.state_with(&page(None, 2));
    assert!(first.truncated);
    assert_eq!(ids(first), ["w1", "w2"]);
    let last = h.coordinator.state_with(&page(Some("w3"), 2));
    assert!(!last.truncated);
    assert_eq!(ids(last), ["w4", "w5"]);
    // w2 leaves, w4 expires (the others heartbeat), w2 comes back in a new epoch.
    h.coordinator.unregister("w2").await.unwrap();
    h.at(20_000).await;
    for id in ["w1", "w3", "w5"] {
        assert!(h.coordinator.heartbeat(id).await.alive);
    }
    h.at(30_000).await;
    assert_eq!(h.status_of("w4"), None);
    h.register("w2").await;
    let all = h.coordinator.state_with(&page(None, 10));
    assert_eq!(all.instance_count, 4);
    assert_eq!(ids(all), ["w1", "w2", "w3", "w5"]);
}

/// The counts by state (`/metrics`, `system.health`) are kept by the transitions themselves:
/// they follow every one — suspect, back to active, expired, unregistered, re-registered —
/// count only what is registered (an expired leader's slot, still held by the leadership
/// record until the next election, is not), and come to nothing at shutdown.
#[tokio::test(start_paused = true)]
async fn counts_by_state_follow_every_transition_and_only_registered_instances() {
    let h = Harness::default().await;
    let counts = |h: &Harness| {
        let c = h.coordinator.instance_counts();
        let n = |s: InstanceStatus| c.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
        (
            n(InstanceStatus::Active),
            n(InstanceStatus::Suspect),
            n(InstanceStatus::Expired) + n(InstanceStatus::Unregistered),
        )
    };
    h.register("a").await;
    h.at(1).await;
    h.register("b").await;
    h.register("c").await;
    settle().await;
    assert_eq!(h.leader().as_deref(), Some("a"));
    assert_eq!(counts(&h), (3, 0, 0));
    // All three go suspect at 25 s; b heartbeats back, c unregisters.
    h.at(25_001).await;
    assert_eq!(counts(&h), (0, 3, 0));
    assert!(h.coordinator.heartbeat("b").await.alive);
    assert_eq!(counts(&h), (1, 2, 0));
    assert!(h.coordinator.unregister("c").await.unwrap().unregistered);
    settle().await;
    assert_eq!(counts(&h), (1, 1, 0), "the unregistered one is gone");
    // The leader a expires at 30 s; b leads after it.
    h.at(30_001).await;
    assert_eq!(h.status_of("a"), None);
    assert_eq!(counts(&h), (1, 0, 0), "the expired leader is not counted");
    assert_eq!(h.coordinator.instance_count(), 1);
    assert_eq!(h.leader().as_deref(), Some("b"));
    // A new epoch of a is counted once.
    h.register("a").await;
    settle().await;
    assert_eq!(counts(&h), (2, 0, 0));
    h.coordinator.shutdown().await;
    assert_eq!(
        counts(&h),
        (0, 0, 0),
        "nothing is registered after shutdown"
    );
}
