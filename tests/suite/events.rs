//! Events: what is published, with which fields, and the bounded history in `state()`.

use crate::common::{Harness, settle};
use vigil::{Config, EventKind, Term};

#[tokio::test(start_paused = true)]
async fn the_lifecycle_publishes_each_event_with_ids_epochs_terms_and_times() {
    let mut h = Harness::default().await;
    let a = h.register("a").await;
    let b = h.register("b").await;
    assert!(h.coordinator.unregister("b").await.unwrap().unregistered);
    h.at(30_000).await;
    settle().await;
    let events = h.drain_events();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::InstanceRegistered,
            EventKind::LeaderElected,
            EventKind::InstanceRegistered,
            EventKind::InstanceUnregistered,
            EventKind::InstanceSuspect,
            EventKind::InstanceExpired,
            EventKind::LeaderVacant,
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    let elected = &events[1];
    assert_eq!(elected.instance_id.as_ref().unwrap().as_str(), "a");
    assert_eq!(elected.epoch, Some(a.epoch));
    assert_eq!(elected.term, Term(1));
    let unregistered = &events[3];
    assert_eq!(unregistered.epoch, Some(b.epoch));
    let expired = &events[5];
    assert_eq!(expired.epoch, Some(a.epoch));
    assert_eq!(expired.at_ms - expired.last_seen_ms.unwrap(), 30_000);
    assert_eq!(events[6].term, Term(2));
    // The wire names.
    let json = serde_json::to_value(expired).unwrap();
    assert_eq!(json["type"], "instance.expired");
    assert_eq!(json["instanceId"], "a");
}

#[tokio::test(start_paused = true)]
async fn state_keeps_a_bounded_history_of_recent_events() {
    let config = Config {
        recent_events: 4,
        ..Config::default()
    };
    let h = Harness::start(config).await;
    for i in 0..10 {
        h.register(&format!("w{i}")).await;
    }
    let state = h.coordinator.state();
    assert_eq!(state.recent_events.len(), 4);
    let ids: Vec<&str> = state
        .recent_events
        .iter()
        .map(|e| e.instance_id.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(ids, ["w6", "w7", "w8", "w9"]);
    assert_eq!(state.instance_count, 10);
    let limited = h.coordinator.state_with(&vigil::StateQuery {
        instance_id: None,
        limit: Some(2),
        after: None,
    });
    assert_eq!(limited.instances.len(), 2);
    assert_eq!(limited.recent_events.len(), 2);
    assert_eq!(limited.instances[0].id.as_str(), "w0");
}

#[tokio::test(start_paused = true)]
async fn state_shows_each_instance_with_its_leadership() {
    let h = Harness::default().await;
    h.register("a").await;
    h.at(2_000).await;
    h.register("b").await;
    let state = h.coordinator.state();
    let a = &state.instances[0];
    assert!(a.is_leader);
    assert_eq!(a.roles, ["worker"]);
    assert_eq!(a.ttl_ms, 30_000);
    assert_eq!(state.instances[1].last_seen_ms - a.last_seen_ms, 2_000);
    assert!(!state.instances[1].is_leader);
    assert_eq!(state.leader.leader.as_ref().unwrap().as_str(), "a");
}
