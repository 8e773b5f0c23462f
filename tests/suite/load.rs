//! `vigil load` checks its own bookkeeping against a real in-process server.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use vigil::load::{LoadConfig, Rate, Transport};
use vigil::server::{Server, ServerConfig};
use vigil::{Config, Coordinator};

async fn server() -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let server = Server::bind(
        coordinator.clone(),
        &ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (url, coordinator, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_a_minute_is_kept_and_accounted_for() {
    let (url, coordinator, stop) = server().await;
    let report = vigil::load::run(LoadConfig {
        transport: Transport::Http {
            target: url,
            token: None,
            batch: 1,
        },
        workers: 10,
        prefix: "lt".into(),
        rate: "1000/min".parse().unwrap(),
        duration: Duration::from_secs(4),
        concurrency: 16,
    })
    .await
    .unwrap();
    let errors: u64 = report.errors.values().sum();
    assert_eq!(report.sent, report.answered + errors, "{report:?}");
    assert_eq!(errors, 0, "{report:?}");
    assert_eq!(report.alive_false, 0);
    // 4 s at 1000/min: 67 calls, the first at 0 ms, the last at 3960 ms.
    assert_eq!(report.sent, 67);
    let target = 1000.0 / 60.0;
    assert!(
        (report.achieved_rate - target).abs() / target < 0.02,
        "achieved {} vs {target}",
        report.achieved_rate
    );
    // The server saw them: every worker registered and alive.
    assert_eq!(coordinator.instance_count(), 10);
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "transport",
        "sent",
        "answered",
        "errors",
        "aliveFalse",
        "targetRate",
        "achievedRate",
        "elapsedS",
        "latency",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
    let p = &json["latency"]["system.heartbeat"];
    for field in ["count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(p[field].as_u64().is_some(), "missing {field} in {p}");
    }
    assert_eq!(p["count"], 67);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_code() {
    let (url, coordinator, stop) = server().await;
    // Rate-limited at 1000/min per instance: one worker at 2000/s exceeds its budget at once.
    let report = vigil::load::run(LoadConfig {
        transport: Transport::Http {
            target: url,
            token: None,
            batch: 5,
        },
        workers: 1,
        prefix: "hot".into(),
        rate: Rate::PerSecond(2000.0),
        duration: Duration::from_secs(1),
        concurrency: 8,
    })
    .await
    .unwrap();
    let errors: u64 = report.errors.values().sum();
    assert_eq!(report.sent, report.answered + errors);
    assert!(
        report.errors.get(&-32000).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[test]
fn the_exit_status_follows_the_slo_and_the_error_budget() {
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["load", "--transport", "inproc", "--workers", "5"])
            .args(["--rate", "200/s", "--duration", "500ms", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&["--slo", "p50=10s"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["sent"], 100);
    let missed = run(&["--slo", "max=0ms"]);
    assert_eq!(missed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missed.stderr).contains("SLO missed"));
    let bad = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["load", "--rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a bad rate is a usage error");
}
