//! `vigil load` checks its own bookkeeping against a real in-process server.

use std::process::Command;
use std::time::Duration;

use vigil::load::{LoadConfig, LoadReport, Rate, Transport};
use vigil::server::ServerConfig;
use vigil::{Config, Coordinator};

async fn server() -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    crate::common::serve(Config::default(), ServerConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_a_minute_is_kept_and_accounted_for() {
    let (url, coordinator, stop) = server().await;
    let report = vigil::load::run(LoadConfig {
        workers: 10,
        prefix: "lt".into(),
        rate: "1000/min".parse().unwrap(),
        duration: Duration::from_secs(4),
        concurrency: 16,
        ..LoadConfig::new(crate::common::http(url, 1))
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
    // The server saw them, every worker alive, and the run unregistered them at the end.
    assert_eq!(report.cleanup.as_ref().unwrap().workers_unregistered, 10);
    assert_eq!(coordinator.instance_count(), 0);
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
        "heartbeats",
        "timeline",
        "histogram",
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
        workers: 1,
        prefix: "hot".into(),
        rate: Rate::PerSecond(2000.0),
        duration: Duration::from_secs(1),
        concurrency: 8,
        ..LoadConfig::new(crate::common::http(url, 5))
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

fn accounted(report: &LoadReport) {
    let errors: u64 = report.errors.values().sum();
    assert_eq!(report.sent, report.answered + errors, "{report:?}");
    let measured: u64 = report.latency.values().map(|p| p.count).sum();
    assert_eq!(measured, report.sent, "every call is measured once");
    let timeline: u64 = report.timeline.iter().map(|s| s.count).sum();
    assert_eq!(timeline, report.sent, "every call is on the timeline once");
    let histogram: u64 = report.histogram.iter().map(|b| b.count).sum();
    assert_eq!(
        histogram, report.heartbeats,
        "every heartbeat is in the histogram"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_transports_keep_the_books_and_the_pace() {
    let (url, coordinator, stop) = server().await;
    for (name, transport) in [
        (
            "ws",
            Transport::Ws {
                target: url.clone(),
                token: None,
                batch: 1,
            },
        ),
        (
            "ws-binary batch 4",
            Transport::WsBinary {
                target: url.clone(),
                token: None,
                batch: 4,
            },
        ),
    ] {
        let report = vigil::load::run(LoadConfig {
            workers: 40,
            prefix: name.replace(' ', "-"),
            rate: Rate::PerSecond(400.0),
            duration: Duration::from_secs(2),
            connections: 3,
            ..LoadConfig::new(transport)
        })
        .await
        .unwrap();
        assert_eq!(report.transport, name);
        accounted(&report);
        assert_eq!(report.errors.len(), 0, "{report:?}");
        assert_eq!(report.alive_false, 0);
        assert_eq!(report.heartbeats, 800, "{name}: 2 s at 400/s");
        assert!(
            (report.achieved_rate - 400.0).abs() / 400.0 < 0.02,
            "{name}: achieved {}",
            report.achieved_rate
        );
        // Its workers were unregistered over the same transport when it ended.
        assert_eq!(report.cleanup.unwrap().workers_unregistered, 40, "{name}");
    }
    assert_eq!(coordinator.instance_count(), 0);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_report_the_rate_limit_as_its_json_code() {
    let (url, coordinator, stop) = server().await;
    let report = vigil::load::run(LoadConfig {
        workers: 1,
        prefix: "bin-hot".into(),
        rate: Rate::PerSecond(2000.0),
        duration: Duration::from_secs(1),
        ..LoadConfig::new(Transport::WsBinary {
            target: url,
            token: None,
            batch: 10,
        })
    })
    .await
    .unwrap();
    accounted(&report);
    assert!(
        report.errors.get(&-32000).copied().unwrap_or(0) > 0,
        "{report:?}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_mix_runs_whole_flows_and_measures_each_method() {
    let (url, coordinator, stop) = server().await;
    let report = vigil::load::run(LoadConfig {
        workers: 8,
        prefix: "mix".into(),
        rate: Rate::PerSecond(200.0),
        duration: Duration::from_secs(2),
        tasks: Some(25.0),
        keep: true, // to count on the server what the run did
        ..LoadConfig::new(crate::common::http(url, 1))
    })
    .await
    .unwrap();
    accounted(&report);
    assert_eq!(report.errors.len(), 0, "{report:?}");
    let tasks = report.tasks.clone().expect("a task tally");
    assert_eq!(tasks.flows, 50, "2 s at 25 flows/s");
    assert_eq!(tasks.created, 50);
    assert_eq!(tasks.claimed + tasks.claims_empty, 50);
    assert_eq!(tasks.completed, tasks.claimed, "{tasks:?}");
    assert_eq!(tasks.step_heartbeats, 2 * tasks.claimed);
    assert_eq!(tasks.stale_claims, 0);
    for method in [
        "system.heartbeat",
        "task.create",
        "task.claim",
        "task.heartbeat",
        "task.complete",
    ] {
        assert!(
            report.latency.get(method).is_some_and(|p| p.count > 0),
            "no latency for {method}: {:?}",
            report.latency.keys()
        );
    }
    assert_eq!(report.latency["task.create"].count, 50);
    assert_eq!(
        report.sent,
        400 + 50 + 50 + 2 * tasks.claimed + tasks.claimed
    );
    // The server agrees.
    let counts = coordinator.task_counts();
    assert_eq!(
        counts.get("completed").copied().unwrap_or(0) as u64,
        tasks.completed,
        "{counts:?}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_alternates_between_two_servers_and_gives_ratios() {
    let (a_url, a_coord, a_stop) = server().await;
    let (b_url, b_coord, b_stop) = server().await;
    let config = |target: &str| LoadConfig {
        workers: 10,
        prefix: "cmp".into(),
        rate: Rate::PerSecond(300.0),
        duration: Duration::from_secs(2),
        ..LoadConfig::new(crate::common::http(target, 1))
    };
    let started = std::time::Instant::now();
    let c = vigil::load::compare(config(&a_url), "a".into(), config(&b_url), "b".into(), 4)
        .await
        .unwrap();
    // Each side sent for its 2 s, in four slices of 0.5 s.
    assert!(started.elapsed() >= Duration::from_secs(4));
    for r in [&c.a, &c.b] {
        accounted(r);
        assert_eq!(r.errors.len(), 0, "{r:?}");
        assert_eq!(r.heartbeats, 600, "4 slices × 150");
        assert!((r.elapsed_s - 2.0).abs() < 0.2, "{}", r.elapsed_s);
        // The timeline covers the side's own sending time, not the other's.
        let last = r.timeline.last().unwrap().t_s;
        assert!(last < 2.1, "timeline ends at {last}");
    }
    for figure in ["achieved rate /s", "system.heartbeat p99 µs"] {
        let ratio = c.ratios[figure].expect("A's figure is not zero");
        assert!(ratio > 0.0, "{figure}: {ratio}");
    }
    let rate = c.ratios["achieved rate /s"].unwrap();
    assert!((rate - 1.0).abs() < 0.02, "same rate on both sides: {rate}");
    assert!(c.table().contains("B/A"));
    // Both servers saw their own workers, and both sides cleaned up.
    for (r, coord) in [(&c.a, &a_coord), (&c.b, &b_coord)] {
        assert_eq!(r.cleanup.as_ref().unwrap().workers_unregistered, 10);
        assert_eq!(coord.instance_count(), 0);
    }
    let _ = (a_stop.send(()), b_stop.send(()));
    a_coord.shutdown().await;
    b_coord.shutdown().await;
}

#[test]
fn plot_writes_both_charts_and_usage_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("vigil-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("run.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["load", "--transport", "inproc", "--workers", "5"])
        .args(["--rate", "500/s", "--duration", "500ms", "--tasks", "20/s"])
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("task.complete"), "{table}");
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawing.starts_with("<svg"),
        "{}",
        &drawing[..80.min(drawing.len())]
    );
    assert!(drawing.contains("by intended send time"));
    assert!(drawing.contains("heartbeat latency histogram"));
    assert!(drawing.contains("vigil load: inproc over inproc, rate 500/s (30000/min), 0.5 s"));
    assert!(
        drawing.contains("latency, ms (log"),
        "the histogram in ms too"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("wrote plot: {}", svg.display())),
        "{stderr}"
    );
    assert!(drawing.contains("<polyline"), "latency lines");
    assert!(drawing.matches("<rect").count() > 3, "histogram bars");
    std::fs::remove_dir_all(&dir).unwrap();

    let usage = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("load")
            .args(args)
            .output()
            .unwrap()
    };
    let pigeon = usage(&["--transport", "pigeon"]);
    assert_eq!(pigeon.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&pigeon.stderr).contains("ws-binary"));
    let no_redis = usage(&["--transport", "inproc", "--compare", "write-through"]);
    assert_eq!(no_redis.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_redis.stderr).contains("--redis"));
    let tasks_max = usage(&["--transport", "inproc", "--tasks", "max"]);
    assert_eq!(tasks_max.status.code(), Some(2));
}
