//! Supervision: killed or panicking actors are restarted on their shared state, and a killed
//! actor never makes a live instance look dead.

use std::time::Duration;

use crate::common::{Harness, of_kind, settle};
use vigil::faults::Strike;
use vigil::{Config, EventKind, InstanceStatus, RegisterRequest};

#[tokio::test(start_paused = true)]
async fn a_killed_instance_actor_is_restarted_and_keeps_its_deadline() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    h.at(10_000).await;
    let faults = h.coordinator.faults();
    let before = faults.instance_actor("w1").unwrap();
    assert!(faults.kill_instance("w1"));
    settle().await;
    let after = faults.instance_actor("w1").unwrap();
    assert_ne!(before, after);
    let view = faults.inspect_instance("w1").await.unwrap();
    assert_eq!(view.status, InstanceStatus::Active);
    // The restarted actor armed the suspect point of the original registration.
    assert_eq!(
        view.armed_for,
        Some(vigil::faults::CLOCK_ORIGIN_MS + 25_000)
    );
    // And the instance still expires on time — the restart did not extend it.
    h.at(30_000).await;
    assert_eq!(h.status_of("w1"), None);
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceExpired).len(), 1);
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(sup.instance_restarts, 1);
    assert_eq!(sup.instance_actors, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_instance_actor_is_restarted() {
    let h = Harness::default().await;
    h.register("w1").await;
    assert!(h.coordinator.faults().strike_instance("w1", Strike::Panic));
    settle().await;
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(sup.instance_restarts, 1);
    assert_eq!(sup.instance_actors, 1);
    assert!(h.coordinator.heartbeat("w1").await.alive);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_land_while_the_actor_is_down() {
    let mut h = Harness::default().await;
    h.register("w1").await;
    h.at(29_000).await;
    // Kill the actor and heartbeat before the supervisor has had a chance to restart it.
    assert!(h.coordinator.faults().kill_instance("w1"));
    assert!(h.coordinator.heartbeat_now("w1").alive);
    h.at(31_000).await;
    assert_eq!(h.status_of("w1"), Some(InstanceStatus::Active));
    assert!(of_kind(&h.drain_events(), EventKind::InstanceExpired).is_empty());
}

/// 1000 instances heartbeat every second (TTL 3 s) while their actors are killed at random,
/// 100 kills per simulated second for 10 s: no instance may expire.
#[tokio::test(start_paused = true)]
async fn killing_1000_instance_actors_gives_zero_false_expiries() {
    let config = Config {
        ttl: Duration::from_secs(3),
        grace: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::start(config).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("worker-{i:04}")).collect();
    for id in &ids {
        h.coordinator
            .register(RegisterRequest::new(id.as_str()))
            .await
            .unwrap();
    }
    let mut seed = 42u64;
    let mut random = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut kills = 0;
    for tick in 1..=1000u64 {
        // Every 10 ms: one kill.
        let victim = &ids[random(ids.len())];
        if h.coordinator.faults().kill_instance(victim) {
            kills += 1;
        }
        // Every second: everyone heartbeats (spread over the second in 10 slices).
        let slice = (tick % 100) as usize;
        if slice.is_multiple_of(10) {
            for id in ids.iter().skip(slice / 10 * 100).take(100) {
                assert!(h.coordinator.heartbeat_now(id).alive, "{id} at {tick}0 ms");
            }
        }
        h.at(tick * 10).await;
    }
    let events = h.drain_events();
    assert!(of_kind(&events, EventKind::InstanceExpired).is_empty());
    assert_eq!(h.coordinator.instance_count(), 1000);
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert!(kills >= 990, "kills {kills}");
    assert_eq!(sup.instance_restarts, kills);
    assert_eq!(
        sup.instance_actors, 1000,
        "every instance has its actor back"
    );
    // After the chaos, the instances still expire normally once they fall silent.
    h.at(10_000 + 3_001).await;
    assert_eq!(h.coordinator.instance_count(), 0);
}
