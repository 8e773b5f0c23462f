//! What a run measured: per-method histograms (hdrhistogram, microseconds), a latency timeline,
//! errors by code; the summary table and the side-by-side comparison.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded (a minute); longer ones are recorded as a minute.
const MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

/// Latency percentiles of one method, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Calls measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// The figure for a quantile: 1.0 is the maximum; others round down to the nearest
    /// reported percentile.
    pub fn at(&self, quantile: f64) -> u64 {
        match quantile {
            q if q >= 1.0 => self.max_us,
            q if q >= 0.999 => self.p999_us,
            q if q >= 0.99 => self.p99_us,
            q if q >= 0.9 => self.p90_us,
            _ => self.p50_us,
        }
    }
}

/// Latency of all calls in one slice of the run's time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Slice {
    /// Start of the slice, seconds from the start of sending.
    pub t_s: f64,
    /// Calls whose intended send time fell in the slice.
    pub count: u64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// One bar of the latency histogram: calls whose latency was at most `le_us` (and above the
/// previous bar's bound).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Upper bound, microseconds.
    pub le_us: u64,
    /// Calls.
    pub count: u64,
}

/// The task mix's bookkeeping.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskTally {
    /// Flows started (each creates one task).
    pub flows: u64,
    /// Tasks created.
    pub created: u64,
    /// Claims that returned a task.
    pub claimed: u64,
    /// Claims that found nothing pending (another flow took it first).
    pub claims_empty: u64,
    /// Step heartbeats answered `ok`.
    pub step_heartbeats: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Step heartbeats or completions answered `stale_claim`.
    pub stale_claims: u64,
}

/// What a run did to its own workers and tasks on the target when it ended.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cleanup {
    /// The run's tag: its workers' role and id prefix, its tasks' role.
    pub run: String,
    /// Left in place on purpose (`--keep`): nothing was removed.
    pub kept: bool,
    /// Workers unregistered.
    pub workers_unregistered: u64,
    /// Tasks deleted (with their claims and the leases those held).
    pub tasks_deleted: u64,
    /// Cleanup calls that failed.
    pub failures: u64,
    /// The first of those failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

impl std::fmt::Display for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kept {
            return write!(
                f,
                "kept run {run}: its workers ({run}-N) and tasks (role {run}) stay on the \
                 target (--keep)",
                run = self.run
            );
        }
        write!(
            f,
            "cleaned up run {}: unregistered {} worker(s), deleted {} task(s)",
            self.run, self.workers_unregistered, self.tasks_deleted
        )?;
        if self.failures > 0 {
            write!(
                f,
                "; {} cleanup call(s) failed, the first: {}",
                self.failures,
                self.first_failure.as_deref().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Where the calls went: the server's URL, or `inproc`.
    pub target: String,
    /// Transport name.
    pub transport: String,
    /// Calls sent (heartbeats, plus the task mix's calls).
    pub sent: u64,
    /// Calls answered without a JSON-RPC error.
    pub answered: u64,
    /// Calls that failed, by JSON-RPC code (−1: no answer; −N: HTTP status N).
    pub errors: BTreeMap<i64, u64>,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Heartbeats answered `alive: false`.
    pub alive_false: u64,
    /// Answers −32008 from a standby (each batch entry counted): nothing ran there, and the
    /// call was sent again to the active coordinator, so these are not errors.
    pub redirected: u64,
    /// The heartbeat rate asked for (per second; `null` for max).
    pub target_rate: Option<f64>,
    /// The heartbeat rate achieved: for an open loop, the pace actually kept between the first
    /// and the last send; for `max`, heartbeats / elapsed.
    pub achieved_rate: f64,
    /// Seconds spent sending.
    pub elapsed_s: f64,
    /// Latency from intended send time to answer, by method.
    pub latency: BTreeMap<String, Percentiles>,
    /// The task mix, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskTally>,
    /// Latency of all calls over time.
    pub timeline: Vec<Slice>,
    /// Heartbeat latency histogram (powers of two).
    pub histogram: Vec<Bucket>,
    /// What the run removed (or kept) on the target when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<Cleanup>,
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// Three significant digits or so, whatever the size.
fn fmt_ratio(r: f64) -> String {
    match r.abs() {
        a if a >= 100.0 => format!("{r:.0}"),
        a if a >= 10.0 => format!("{r:.1}"),
        a if a >= 0.1 => format!("{r:.2}"),
        _ => format!("{r:.4}"),
    }
}

impl LoadReport {
    /// Errors over sent.
    pub fn error_rate(&self) -> f64 {
        let errors: u64 = self.errors.values().sum();
        if self.sent == 0 {
            0.0
        } else {
            errors as f64 / self.sent as f64
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let target = self
            .target_rate
            .map_or("max".to_string(), |r| format!("{r:.1}/s"));
        out.push_str(&format!(
            "transport {}  sent {}  answered {}  errors {}  heartbeats {}  alive:false {}\n",
            self.transport,
            self.sent,
            self.answered,
            self.errors.values().sum::<u64>(),
            self.heartbeats,
            self.alive_false
        ));
        out.push_str(&format!(
            "heartbeat rate: target {target}, achieved {:.1}/s over {:.2} s\n",
            self.achieved_rate, self.elapsed_s
        ));
        out.push_str(&format!(
            "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "method", "count", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (method, p) in &self.latency {
            out.push_str(&format!(
                "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                method,
                p.count,
                fmt_us(p.p50_us),
                fmt_us(p.p90_us),
                fmt_us(p.p99_us),
                fmt_us(p.p999_us),
                fmt_us(p.max_us)
            ));
        }
        if let Some(t) = &self.tasks {
            out.push_str(&format!(
                "tasks: flows {} created {} claimed {} (empty claims {}) step heartbeats {} \
                 completed {} stale claims {}\n",
                t.flows,
                t.created,
                t.claimed,
                t.claims_empty,
                t.step_heartbeats,
                t.completed,
                t.stale_claims
            ));
        }
        for (code, n) in &self.errors {
            out.push_str(&format!("errors {code}: {n}\n"));
        }
        if self.redirected > 0 {
            out.push_str(&format!(
                "redirected {}: answered -32008 by a standby, sent again to the active\n",
                self.redirected
            ));
        }
        if let Some(cleanup) = &self.cleanup {
            out.push_str(&format!("{cleanup}\n"));
        }
        out
    }

    /// Named figures for comparisons: the achieved rate, then each method's percentiles.
    pub fn figures(&self) -> Vec<(String, f64)> {
        let mut figures = vec![
            ("achieved rate /s".to_string(), self.achieved_rate),
            (
                "errors".to_string(),
                self.errors.values().sum::<u64>() as f64,
            ),
        ];
        for (method, p) in &self.latency {
            for (name, us) in [
                ("p50", p.p50_us),
                ("p90", p.p90_us),
                ("p99", p.p99_us),
                ("p99.9", p.p999_us),
                ("max", p.max_us),
            ] {
                figures.push((format!("{method} {name} µs"), us as f64));
            }
        }
        figures
    }
}

/// Two runs of one scenario, made in alternation, and the ratio of each figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// What A was (a target URL or a persist mode).
    pub a_label: String,
    /// What B was.
    pub b_label: String,
    /// A's report.
    pub a: LoadReport,
    /// B's report.
    pub b: LoadReport,
    /// B / A for each figure (`null` where A is 0).
    pub ratios: BTreeMap<String, Option<f64>>,
}

impl Comparison {
    /// Pairs two reports.
    pub fn new(a_label: String, a: LoadReport, b_label: String, b: LoadReport) -> Self {
        let b_figures: BTreeMap<String, f64> = b.figures().into_iter().collect();
        let ratios = a
            .figures()
            .into_iter()
            .filter_map(|(name, av)| {
                let bv = *b_figures.get(&name)?;
                Some((name, (av != 0.0).then(|| bv / av)))
            })
            .collect();
        Self {
            a_label,
            b_label,
            a,
            b,
            ratios,
        }
    }

    /// The side-by-side table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "A: {} ({})\nB: {} ({})\n",
            self.a_label, self.a.transport, self.b_label, self.b.transport
        );
        out.push_str(&format!(
            "{:<34} {:>12} {:>12} {:>8}\n",
            "figure", "A", "B", "B/A"
        ));
        let b: BTreeMap<String, f64> = self.b.figures().into_iter().collect();
        for (name, av) in self.a.figures() {
            let Some(bv) = b.get(&name) else { continue };
            let ratio = self.ratios.get(&name).copied().flatten();
            out.push_str(&format!(
                "{:<34} {:>12.1} {:>12.1} {:>8}\n",
                name,
                av,
                bv,
                ratio.map_or("-".to_string(), fmt_ratio)
            ));
        }
        out
    }
}

/// Collects measurements while a run goes on.
pub(crate) struct Recorder {
    methods: BTreeMap<&'static str, Histogram<u64>>,
    slices: Vec<Histogram<u64>>,
    slice: Duration,
    /// Sending time of the slices already finished (for alternating runs).
    pub active_before: Duration,
    pub answered: u64,
    pub errors: BTreeMap<i64, u64>,
    pub alive_false: u64,
    pub sent: u64,
    pub heartbeats: u64,
    pub tasks: Option<TaskTally>,
    /// Open loop: heartbeats paced between the first and last send of each slice…
    pub paced_heartbeats: f64,
    /// …and those spans, in seconds.
    pub paced_span: f64,
    /// Sending time, all slices.
    pub elapsed: Duration,
}

impl Recorder {
    /// A recorder whose timeline has `slice`-long slices.
    pub fn new(slice: Duration, with_tasks: bool) -> Self {
        Self {
            methods: BTreeMap::new(),
            slices: Vec::new(),
            slice: slice.max(Duration::from_millis(1)),
            active_before: Duration::ZERO,
            answered: 0,
            errors: BTreeMap::new(),
            alive_false: 0,
            sent: 0,
            heartbeats: 0,
            tasks: with_tasks.then(TaskTally::default),
            paced_heartbeats: 0.0,
            paced_span: 0.0,
            elapsed: Duration::ZERO,
        }
    }

    /// Records `n` calls of `method` intended at `offset` (time since the current slice of
    /// sending began) that took `latency`.
    pub fn latency(&mut self, method: &'static str, offset: Duration, latency: Duration, n: u64) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        let _ = self
            .methods
            .entry(method)
            .or_insert_with(histogram)
            .record_n(us, n);
        let at = self.active_before + offset;
        let index = (at.as_nanos() / self.slice.as_nanos()) as usize;
        if self.slices.len() <= index {
            self.slices.resize_with(index + 1, histogram);
        }
        let _ = self.slices[index].record_n(us, n);
    }

    /// Counts one call's outcome.
    pub fn outcome(&mut self, result: Result<(), i64>) {
        match result {
            Ok(()) => self.answered += 1,
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    /// Errors so far.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report.
    pub fn report(
        &self,
        target: String,
        transport: String,
        target_rate: Option<f64>,
        achieved_rate: f64,
        elapsed: Duration,
    ) -> LoadReport {
        let timeline = self
            .slices
            .iter()
            .enumerate()
            .map(|(i, h)| Slice {
                t_s: (self.slice * i as u32).as_secs_f64(),
                count: h.len(),
                p50_us: if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.5)
                },
                p99_us: if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.99)
                },
                max_us: h.max(),
            })
            .collect();
        let histogram = self
            .methods
            .get(super::HEARTBEAT)
            .map(|h| {
                h.iter_log(1, 2.0)
                    .map(|v| Bucket {
                        le_us: v.value_iterated_to(),
                        count: v.count_since_last_iteration(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        LoadReport {
            target,
            transport,
            sent: self.sent,
            answered: self.answered,
            errors: self.errors.clone(),
            heartbeats: self.heartbeats,
            alive_false: self.alive_false,
            redirected: 0,
            target_rate,
            achieved_rate,
            elapsed_s: elapsed.as_secs_f64(),
            latency: self
                .methods
                .iter()
                .map(|(m, h)| (m.to_string(), Percentiles::of(h)))
                .collect(),
            tasks: self.tasks.clone(),
            timeline,
            histogram,
            cleanup: None,
        }
    }
}
