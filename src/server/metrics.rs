//! `GET /metrics`: Prometheus text.
//!
//! Two sources, one page:
//!
//! * counters and histograms recorded through the [`metrics`] facade as things happen — calls
//!   by method and outcome, call latency, store flushes and failures — kept by the process-wide
//!   Prometheus recorder that [`install`] sets up;
//! * gauges read from the coordinator at scrape time — instances by state, leader term and
//!   presence, tasks by state — written directly, so they are exact for this server even when
//!   several coordinators share a process.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::coordinator::Coordinator;
use crate::rpc::metrics as rpc_metrics;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global `metrics` recorder, once. `None`
/// when the embedding program installed another recorder first: Vigil's counters then go to
/// that recorder, and `/metrics` shows only the scrape-time gauges.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(crate::telemetry::DURATION.to_string()),
                    crate::telemetry::DURATION_BUCKETS,
                )
                .expect("non-empty bucket list")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder is already installed; /metrics shows gauges only"
                );
                return None;
            }
            rpc_metrics::describe();
            crate::telemetry::describe_store();
            // Histogram samples wait in a buffer until upkeep folds them into buckets; fold
            // every second so the buffer stays small at millions of calls per second.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("vigil-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; samples fold at scrape");
            }
            Some(handle)
        })
        .as_ref()
}

/// The page: scrape-time gauges of `coordinator`, then the recorder's metrics.
pub fn render(coordinator: &Coordinator, handle: Option<&PrometheusHandle>) -> String {
    let mut out = String::with_capacity(4096);
    gauge_header(&mut out, "vigil_instances", "Registered instances by state");
    for (status, n) in coordinator.instance_counts() {
        let _ = writeln!(out, "vigil_instances{{state=\"{}\"}} {n}", status.as_str());
    }
    let leader = coordinator.leader_view();
    gauge_header(&mut out, "vigil_leader_term", "Current leadership term");
    let _ = writeln!(out, "vigil_leader_term {}", leader.term.0);
    gauge_header(
        &mut out,
        "vigil_leader_present",
        "1 while a leader is elected",
    );
    let _ = writeln!(
        out,
        "vigil_leader_present {}",
        u8::from(leader.leader.is_some())
    );
    gauge_header(&mut out, "vigil_tasks", "Tasks by state");
    for (state, n) in coordinator.task_counts() {
        let _ = writeln!(out, "vigil_tasks{{state=\"{state}\"}} {n}");
    }
    if let Some(handle) = handle {
        out.push('\n');
        out.push_str(&handle.render());
    }
    out
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}
