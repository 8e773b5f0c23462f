//! A service embedding Vigil: three workers register and heartbeat; the leader falls silent,
//! expires, and leadership moves on. Every event is printed as it happens.
//!
//! ```text
//! cargo run --release --example embed
//! ```
//!
//! TTLs are short (3 s, suspect after 2 s) so the whole story takes about five seconds.

use std::time::Duration;

use vigil::{Config, Coordinator, EventKind, RegisterRequest};

#[tokio::main]
async fn main() -> Result<(), vigil::Error> {
    let coordinator = Coordinator::start(Config {
        ttl: Duration::from_secs(3),
        grace: Duration::from_secs(1),
        ..Config::default()
    })
    .await?;

    // Print every event from a task of its own.
    let mut events = coordinator.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            let who = e.instance_id.as_ref().map_or("-", |i| i.as_str());
            println!(
                "  event #{:<2} {:<22} {:<10} term {}",
                e.seq,
                e.kind.as_str(),
                who,
                e.term
            );
            if e.kind == EventKind::LeaderElected && e.previous_leader.is_some() {
                println!(
                    "  -> leadership moved from {} to {who}",
                    e.previous_leader.as_ref().map_or("-", |p| p.as_str())
                );
            }
        }
    });

    println!("registering three workers");
    for id in ["worker-a", "worker-b", "worker-c"] {
        let reg = coordinator
            .register(
                RegisterRequest::new(id)
                    .roles(["worker"])
                    .metadata(serde_json::json!({"pid": std::process::id()})),
            )
            .await?;
        println!(
            "{id}: epoch {} leader {} term {}",
            reg.epoch,
            reg.leader.as_ref().map_or("-", |l| l.as_str()),
            reg.term
        );
    }

    println!("worker-b and worker-c heartbeat every 500 ms; worker-a (the leader) goes silent");
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for id in ["worker-b", "worker-c"] {
            let beat = coordinator.heartbeat(id).await;
            if round % 2 == 1 && beat.is_leader {
                println!(
                    "{id} heartbeat: alive {} leads term {}",
                    beat.alive, beat.term
                );
            }
        }
    }

    let beat = coordinator.heartbeat("worker-a").await;
    println!("worker-a heartbeat after expiry: alive {}", beat.alive);
    let state = coordinator.state();
    println!(
        "state: {} instances, leader {} in term {}",
        state.instance_count,
        state.leader.leader.as_ref().map_or("-", |l| l.as_str()),
        state.leader.term
    );
    for instance in &state.instances {
        println!(
            "  {:<10} {:?} epoch {} leader {}",
            instance.id, instance.status, instance.epoch, instance.is_leader
        );
    }

    coordinator.shutdown().await;
    printer.abort();
    Ok(())
}
