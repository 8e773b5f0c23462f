//! Chaos runs: faults injected under load, every invariant checked. Each run is seeded and
//! prints its seed; `VIGIL_CHAOS_SEED` reruns one, `VIGIL_CHAOS_DURATION` (e.g. `5m`) makes
//! them soaks.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use vigil::chaos::disrupt::ServeProcess;
use vigil::chaos::{ChaosConfig, ChaosReport, Disruptor};
use vigil::load::Transport;
use vigil::server::ServerConfig;
use vigil::store::{RedisConfig, StoreConfig};
use vigil::{Config, Coordinator};

use crate::redis_server::RedisServer;

fn seeded(default_seed: u64, duration: Duration) -> ChaosConfig {
    let seed = std::env::var("VIGIL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let duration = std::env::var("VIGIL_CHAOS_DURATION")
        .ok()
        .and_then(|d| humantime::parse_duration(&d).ok())
        .unwrap_or(duration);
    eprintln!("chaos seed {seed} (rerun with VIGIL_CHAOS_SEED={seed}), duration {duration:?}");
    ChaosConfig {
        seed,
        duration,
        ..ChaosConfig::default()
    }
}

fn assert_clean(report: &ChaosReport) {
    eprintln!("{}", report.table());
    assert_eq!(report.violations(), 0, "{}", report.table());
}

async fn chaos_server(config: Config) -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    let server = ServerConfig {
        chaos: true,
        ..ServerConfig::default()
    };
    crate::common::serve(config, server).await
}

fn http(url: &str) -> Transport {
    crate::common::http(url, 1)
}

/// InstanceActors killed at 100/s under 1000 heartbeats/s, over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_actor_kills_under_load_break_no_promise() {
    let (url, coordinator, stop) = chaos_server(Config::default()).await;
    let config = ChaosConfig {
        instance_kills: 100.0,
        leader_kills: 0.0,
        ..seeded(7, Duration::from_secs(12))
    };
    let report = vigil::chaos::run(http(&url), config, &[]).await.unwrap();
    assert_clean(&report);
    assert!(report.faults["kill instance"] >= 500, "{:?}", report.faults);
    assert!(report.operations["system.heartbeat"] >= 8_000);
    assert!(report.operations.get("task.complete").copied().unwrap_or(0) > 50);
    let sup = coordinator.faults().inspect_supervisor().await.unwrap();
    assert_eq!(
        sup.instance_actors, sup.instances,
        "every instance has its actor"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

fn invariant(
    report: &ChaosReport,
    which: vigil::chaos::Invariant,
) -> &vigil::chaos::InvariantResult {
    report
        .invariants
        .iter()
        .find(|i| i.invariant == which)
        .unwrap()
}

/// An adversary with a worker token of its own tries, all run long, to act as the workers
/// (which the driver registered as the operator) and to use their claim tokens, and reads every
/// view for tokens: nothing it tries succeeds, and it sees no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adversary_can_act_as_no_worker_and_sees_no_token() {
    use vigil::chaos::Invariant::{NoForeignAction, NoTokenLeak};
    const OPS: &str = "chaos-operator-0123456789";
    const MALLORY: &str = "chaos-adversary-0123456789";
    let server = ServerConfig {
        chaos: true,
        token: Some(OPS.into()),
        tokens: vec![vigil::server::NamedToken {
            name: "mallory".into(),
            role: vigil::rpc::Role::Worker,
            token: MALLORY.into(),
        }],
        ..ServerConfig::default()
    };
    let (url, coordinator, stop) = crate::common::serve(Config::default(), server).await;
    let config = ChaosConfig {
        instance_kills: 20.0,
        leader_kills: 0.5,
        adversary_rate: 40.0,
        adversary_token: Some(MALLORY.into()),
        ..seeded(13, Duration::from_secs(8))
    };
    let transport = Transport::Http {
        target: url.clone(),
        token: Some(OPS.into()),
        batch: 1,
    };
    let report = vigil::chaos::run(transport, config, &[]).await.unwrap();
    assert_clean(&report);
    assert!(
        invariant(&report, NoForeignAction).checked >= 200,
        "{}",
        report.table()
    );
    assert!(
        invariant(&report, NoTokenLeak).checked >= 100,
        "{}",
        report.table()
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// The adversary's invariant can fail: on a server without principals every caller is the
/// anonymous operator, so the "adversary" acts as the workers and the run reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_principals_the_adversary_succeeds_and_is_reported() {
    let (url, coordinator, stop) = chaos_server(Config::default()).await;
    let config = ChaosConfig {
        instance_kills: 0.0,
        leader_kills: 0.0,
        adversary_rate: 20.0,
        adversary_token: Some("ignored-by-an-open-server".into()),
        ..seeded(17, Duration::from_secs(3))
    };
    let report = vigil::chaos::run(http(&url), config, &[]).await.unwrap();
    let foreign = invariant(&report, vigil::chaos::Invariant::NoForeignAction);
    assert!(foreign.violations > 0, "{}", report.table());
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// The LeaderActor killed every second, with the Persister killed every two, on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_persister_kills_keep_terms_and_the_store_straight() {
    let redis = RedisServer::start();
    let mut rc = RedisConfig::new(redis.url());
    rc.flush_interval = Duration::from_millis(100);
    let (url, coordinator, stop) = chaos_server(Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    })
    .await;
    let config = ChaosConfig {
        instance_kills: 20.0,
        leader_kills: 1.0,
        persister_kills: 0.5,
        ..seeded(11, Duration::from_secs(12))
    };
    let report = vigil::chaos::run(http(&url), config, &[]).await.unwrap();
    assert_clean(&report);
    assert!(report.faults["kill leader"] >= 10, "{:?}", report.faults);
    assert!(report.faults["kill persister"] >= 5, "{:?}", report.faults);
    let store = report
        .invariants
        .iter()
        .find(|i| i.invariant == vigil::chaos::Invariant::StoreEqualsMemory)
        .unwrap();
    assert!(store.checked > 0, "the store was compared");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// Restarts its redis-server (empty), holding it down for a second each time.
struct RedisRestarter(Arc<Mutex<RedisServer>>);

impl Disruptor for RedisRestarter {
    fn name(&self) -> String {
        "redis restart".into()
    }
    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let redis = Arc::clone(&self.0);
            tokio::task::spawn_blocking(move || redis.lock().stop())
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let redis = Arc::clone(&self.0);
            tokio::task::spawn_blocking(move || redis.lock().restart())
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Redis stopped (for a second) and restarted empty, twice, mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_nothing_acknowledged() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let mut rc = RedisConfig::new(redis.lock().url());
    rc.flush_interval = Duration::from_millis(100);
    rc.breaker_open_for = Duration::from_millis(500);
    let coordinator = Coordinator::start(Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    })
    .await
    .unwrap();
    let config = ChaosConfig {
        instance_kills: 50.0,
        leader_kills: 0.5,
        ..seeded(13, Duration::from_secs(12))
    };
    let restarter = RedisRestarter(Arc::clone(&redis));
    let report = vigil::chaos::run(
        Transport::Inproc(coordinator.clone()),
        config,
        &[(&restarter, Duration::from_secs(4))],
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert_eq!(report.faults["redis restart"], 2, "{:?}", report.faults);
    coordinator.shutdown().await;
}

/// The coordinator process (`vigil serve --chaos --redis`) killed with SIGKILL and restarted
/// on Redis, twice, mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_process_restarts_with_every_promise_kept() {
    let redis = RedisServer::start();
    let server = ServeProcess::start(
        env!("CARGO_BIN_EXE_vigil").into(),
        vec![
            "--redis".into(),
            redis.url(),
            "--flush-interval".into(),
            "100ms".into(),
        ],
    )
    .await
    .unwrap();
    let config = ChaosConfig {
        instance_kills: 20.0,
        leader_kills: 0.5,
        ..seeded(17, Duration::from_secs(14))
    };
    let report = vigil::chaos::run(
        http(&server.url()),
        config,
        &[(&server, Duration::from_secs(5))],
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert_eq!(report.faults["process SIGKILL + restart"], 2);
}

/// `vigil chaos --spawn`: the command starts its own `vigil serve --chaos`, runs, prints the
/// invariants table and exits 0; against a server without --chaos it says so and exits 1;
/// contradictory flags are usage errors.
#[test]
fn the_chaos_command_runs_and_refuses_what_it_cannot_do() {
    let vigil = || Command::new(env!("CARGO_BIN_EXE_vigil"));
    let out = vigil()
        .args(["chaos", "--spawn", "--seed", "5", "--duration", "4s"])
        .args([
            "--workers",
            "50",
            "--doomed",
            "3",
            "--ttl",
            "2s",
            "--heartbeat-rate",
            "500",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("violations 0"), "{table}");
    for invariant in ["NoFalseExpiry", "OneLeaderPerTerm", "StaleClaimRefused"] {
        assert!(table.contains(invariant), "{table}");
    }
    // The spawned server has principals, so the adversary ran and was refused every time.
    for invariant in ["NoForeignAction", "NoTokenLeak"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(invariant))
            .unwrap_or_else(|| panic!("{invariant}: {table}"));
        let checked: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(checked >= 10, "{line}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed 5"));

    // A server without --chaos.
    let port = vigil::chaos::disrupt::free_port().unwrap();
    let mut plain = vigil()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up);
    let refused = vigil()
        .args([
            "chaos",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    let _ = plain.kill();
    let _ = plain.wait();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--chaos"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let usage = vigil()
        .args(["chaos", "--sigkill-every", "5s"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// High availability under chaos: three `vigil serve --ha` children on one private Redis, the
/// workload following the active one, while the active is killed, stopped past its lease and
/// cut off from Redis in turn. Every invariant holds — none of the workload's, and one active
/// per epoch, no deposed epoch answering as active — and each fault is followed by a takeover
/// (its time measured: kill, stop or cut → the successor's first acknowledged write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_takeovers_under_kills_pauses_and_partitions_keep_every_invariant() {
    use vigil::chaos::ha::HaGroup;
    let redis = RedisServer::start();
    let group = HaGroup::start(
        env!("CARGO_BIN_EXE_vigil").into(),
        3,
        &redis.url(),
        true,
        vec![
            "--flush-interval".into(),
            "100ms".into(),
            "--heartbeat-rate".into(),
            "0".into(),
        ],
        None,
    )
    .await
    .unwrap();
    let config = ChaosConfig {
        instance_kills: 10.0,
        leader_kills: 0.5,
        ..seeded(23, Duration::from_secs(24))
    };
    let (kill, pause, cut) = (
        group.kill_active(),
        group.pause_active(),
        group.partition_active(),
    );
    let report = vigil::chaos::run(
        http(&group.urls().join(",")),
        config,
        &[
            (&kill, Duration::from_secs(6)),
            (&pause, Duration::from_secs(11)),
            (&cut, Duration::from_secs(16)),
        ],
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert!(
        report.faults["active coordinator SIGKILL"] >= 2,
        "{report:?}"
    );
    assert!(report.faults["active coordinator SIGSTOP past the lease"] >= 1);
    assert!(report.faults["active coordinator cut off from Redis"] >= 1);
    let checked = |name: &str| {
        report
            .invariants
            .iter()
            .find(|i| format!("{:?}", i.invariant) == name)
            .map_or(0, |i| i.checked)
    };
    assert!(checked("OneActivePerEpoch") > 50, "{}", report.table());
    assert!(checked("DeposedNeverActive") > 10, "{}", report.table());
    assert!(report.figures["takeover"].len() >= 4, "{}", report.table());
    assert!(!report.figures["zombie window"].is_empty());
    println!("{}", report.table());
}
