//! Leader election: who leads, when it changes, and the term as a fencing token.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Harness, of_kind, settle};
#[cfg(feature = "chaos")]
use vigil::faults::Strike;
use vigil::{Event, EventKind, Term};

/// Asserts the leader events form a valid history: terms strictly increase and each term has
/// at most one leader.
fn assert_one_leader_per_term(events: &[Event]) {
    let mut by_term: BTreeMap<u64, String> = BTreeMap::new();
    let mut last = 0;
    for e in events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LeaderElected | EventKind::LeaderVacant))
    {
        assert!(e.term.0 > last, "terms must strictly increase: {events:#?}");
        last = e.term.0;
        let who = e
            .instance_id
            .as_ref()
            .map_or("<vacant>".to_string(), |i| i.to_string());
        assert!(
            by_term.insert(e.term.0, who).is_none(),
            "two leaders in term {}",
            e.term.0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_instance_leads_and_heartbeats_say_so() {
    let mut h = Harness::default().await;
    let a = h.register("a").await;
    assert!(a.is_leader);
    assert_eq!(a.term, Term(1));
    let b = h.register("b").await;
    assert!(!b.is_leader);
    assert_eq!(b.leader.as_ref().unwrap().as_str(), "a");
    let beat_a = h.coordinator.heartbeat("a").await;
    let beat_b = h.coordinator.heartbeat("b").await;
    assert!(beat_a.is_leader && !beat_b.is_leader);
    assert_eq!(beat_a.term, Term(1));
    let events = h.drain_events();
    let elected = of_kind(&events, EventKind::LeaderElected);
    assert_eq!(elected.len(), 1);
    assert_eq!(elected[0].instance_id.as_ref().unwrap().as_str(), "a");
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_is_elected_the_moment_the_leader_expires() {
    let mut h = Harness::default().await;
    h.register("a").await;
    h.at(1_000).await;
    h.register("b").await;
    h.register("c").await;
    // b and c keep heartbeating; a falls silent.
    for t in (5_000..=30_000).step_by(5_000) {
        h.at(t).await;
        h.coordinator.heartbeat("b").await;
        h.coordinator.heartbeat("c").await;
    }
    // At 30 000 ms a expired and, in the same instant, b (the oldest live epoch) took over.
    assert_eq!(h.status_of("a"), None);
    assert_eq!(h.leader().as_deref(), Some("b"));
    let beat = h.coordinator.heartbeat("b").await;
    assert!(beat.is_leader);
    assert_eq!(beat.term, Term(2));
    assert!(!h.coordinator.heartbeat("c").await.is_leader);
    let events = h.drain_events();
    let expired = of_kind(&events, EventKind::InstanceExpired)[0].clone();
    let elected = of_kind(&events, EventKind::LeaderElected);
    assert_eq!(elected.len(), 2);
    assert_eq!(elected[1].previous_leader.as_ref().unwrap().as_str(), "a");
    assert_eq!(elected[1].at_ms, expired.at_ms, "re-elected at once");
    assert_one_leader_per_term(&events);
}

#[tokio::test(start_paused = true)]
async fn unregistering_the_leader_hands_over_and_the_last_one_leaves_a_vacancy() {
    let mut h = Harness::default().await;
    h.register("a").await;
    h.register("b").await;
    assert!(h.coordinator.unregister("a").await.unwrap().unregistered);
    settle().await;
    assert_eq!(h.leader().as_deref(), Some("b"));
    assert!(h.coordinator.unregister("b").await.unwrap().unregistered);
    settle().await;
    assert_eq!(h.leader(), None);
    let state = h.coordinator.state();
    assert_eq!(state.leader.term, Term(3));
    // The next registration leads in a fresh term.
    let c = h.register("c").await;
    assert!(c.is_leader);
    assert_eq!(c.term, Term(4));
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::LeaderVacant).len(), 1);
    assert_one_leader_per_term(&events);
}

#[tokio::test(start_paused = true)]
async fn a_suspect_instance_is_passed_over_when_an_active_one_exists() {
    let h = Harness::default().await;
    h.register("old").await;
    h.at(1_000).await;
    h.register("older-but-silent").await; // epoch 2, will be suspect
    h.at(2_000).await;
    h.register("young").await; // epoch 3
    // At 26 s "older-but-silent" is suspect; "old" (leader) keeps silent too and expires at 30 s.
    for t in (5_000..=30_000).step_by(5_000) {
        h.at(t).await;
        h.coordinator.heartbeat("young").await;
    }
    assert_eq!(h.leader().as_deref(), Some("young"));
}

#[cfg(feature = "chaos")]
#[tokio::test(start_paused = true)]
async fn killing_the_leader_actor_keeps_the_term_and_the_leader() {
    let mut h = Harness::default().await;
    h.register("a").await;
    h.register("b").await;
    let faults = h.coordinator.faults();
    let before = faults.leader_actor().await.unwrap();
    assert!(faults.strike_leader(Strike::Kill).await);
    settle().await;
    let after = faults.leader_actor().await.unwrap();
    assert_ne!(before, after, "restarted");
    let view = h.coordinator.faults().inspect_leader().await.unwrap();
    assert_eq!(view.leader.term, Term(1));
    assert_eq!(view.leader.leader.unwrap().as_str(), "a");
    assert_eq!(view.candidates, 2);
    assert_eq!(view.elections, 0, "the restarted actor did not re-elect");
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(sup.leader_restarts, 1);
    assert!(h.coordinator.heartbeat("a").await.is_leader);
    assert_one_leader_per_term(&h.drain_events());
}

#[cfg(feature = "chaos")]
#[tokio::test(start_paused = true)]
async fn a_panicking_leader_actor_is_restarted_too() {
    let h = Harness::default().await;
    h.register("a").await;
    assert!(h.coordinator.faults().strike_leader(Strike::Panic).await);
    settle().await;
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(sup.leader_restarts, 1);
    assert!(h.coordinator.heartbeat("a").await.is_leader);
}

#[cfg(feature = "chaos")]
#[tokio::test(start_paused = true)]
async fn repeated_leader_actor_kills_never_give_two_leaders_in_one_term() {
    let mut h = Harness::default().await;
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for i in 0..8 {
        h.register(&format!("w{i}")).await;
    }
    let mut joined = 8;
    for round in 0..60u64 {
        // Kill the LeaderActor, sometimes right before the leader leaves, so the departure
        // lands while the actor is down or restarting.
        h.coordinator.faults().strike_leader(Strike::Kill).await;
        match next() % 3 {
            0 => {
                if let Some(leader) = h.leader() {
                    assert!(
                        h.coordinator
                            .unregister(&leader)
                            .await
                            .unwrap()
                            .unregistered
                    );
                }
            }
            1 => {
                h.register(&format!("w{joined}")).await;
                joined += 1;
            }
            _ => {}
        }
        h.at(round * 100 + 100).await;
        let beats: Vec<_> = (0..joined)
            .map(|i| h.coordinator.heartbeat_now(&format!("w{i}")))
            .collect();
        let leaders = beats.iter().filter(|b| b.is_leader).count();
        let alive = beats.iter().filter(|b| b.alive).count();
        assert!(leaders <= 1, "round {round}: {leaders} leaders");
        if alive > 0 {
            assert_eq!(leaders, 1, "round {round}: live instances but no leader");
        }
    }
    let events = h.drain_events();
    assert!(of_kind(&events, EventKind::LeaderElected).len() > 5);
    assert_one_leader_per_term(&events);
    let sup = h.coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(sup.leader_restarts, 60);
}

/// Issue 14, point 5, end to end: many instances, the leader among them, expire at the same
/// instant while a younger one keeps heartbeating. Leadership moves once, to the live one, in
/// one new term. (On the paused clock the InstanceActors record every expiry before the
/// LeaderActor hears of the leader's; `actors::leader::tests` drives the LeaderActor's state
/// with candidates past their deadline whose actors have not woken, the case that used to
/// elect a chain of dead instances.)
#[tokio::test(start_paused = true)]
async fn a_mass_expiry_moves_leadership_once_to_the_live_instance() {
    const DOOMED: usize = 200;
    let mut h = Harness::default().await;
    for i in 0..DOOMED {
        h.coordinator
            .register(
                vigil::RegisterRequest::new(format!("doomed-{i}")).ttl(Duration::from_secs(1)),
            )
            .await
            .unwrap();
    }
    h.coordinator
        .register(vigil::RegisterRequest::new("survivor").ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(h.leader().as_deref(), Some("doomed-0"));
    let term_before = h.coordinator.leader_view().term;
    h.at(500).await;
    assert!(h.coordinator.heartbeat("survivor").await.alive);
    h.drain_events();
    // Every doomed instance's deadline is this instant.
    h.at(1_000).await;
    for _ in 0..10 {
        settle().await;
    }
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceExpired).len(), DOOMED);
    let changes: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LeaderElected | EventKind::LeaderVacant))
        .map(|e| {
            (
                e.kind,
                e.instance_id.as_ref().map(|i| i.to_string()),
                e.term.0,
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![(
            EventKind::LeaderElected,
            Some("survivor".to_string()),
            term_before.0 + 1
        )],
        "one change of leader, to the live instance"
    );
    let beat = h.coordinator.heartbeat("survivor").await;
    assert!(beat.is_leader);
    assert_eq!(beat.term, Term(term_before.0 + 1));
}

/// Issue 14, point 5, end to end: when every instance expires at once, leadership goes to a
/// vacancy in one step — the term rises by one, not once per dead instance.
#[tokio::test(start_paused = true)]
async fn a_mass_expiry_of_everyone_is_one_vacancy() {
    const DOOMED: usize = 200;
    let mut h = Harness::default().await;
    for i in 0..DOOMED {
        h.coordinator
            .register(
                vigil::RegisterRequest::new(format!("doomed-{i}")).ttl(Duration::from_secs(1)),
            )
            .await
            .unwrap();
    }
    let term_before = h.coordinator.leader_view().term;
    h.drain_events();
    h.at(1_000).await;
    for _ in 0..10 {
        settle().await;
    }
    let events = h.drain_events();
    assert_eq!(of_kind(&events, EventKind::InstanceExpired).len(), DOOMED);
    assert!(
        of_kind(&events, EventKind::LeaderElected).is_empty(),
        "{events:#?}"
    );
    assert_eq!(of_kind(&events, EventKind::LeaderVacant).len(), 1);
    assert_eq!(h.coordinator.leader_view().term, Term(term_before.0 + 1));
    assert_eq!(h.leader(), None);
}
