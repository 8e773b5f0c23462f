//! The liveness clock's lag while the control path is hammered (issue 17).
//!
//! ```text
//! cargo bench --bench clock_lag                 # per ticker priority: 2 s idle, 10 s, 10 s
//! CLOCK_LAG_SECS=30 CLOCK_LAG_HOGS=4 cargo bench --bench clock_lag
//! ```
//!
//! The heartbeat hot path stamps with a coarse clock that a ticker advances every
//! millisecond. Control-plane work holds a blocking mutex (the work lock), which parks the
//! runtime's worker threads; if the ticker ran on them it could fall behind. This bench starts
//! a coordinator on a default multi-thread runtime (one worker per core), and 64 caller tasks
//! that loop over the control path through the public API: create a task, claim it, complete
//! it, acquire a lease and release it. Meanwhile a separate OS thread samples the clock's lag
//! at random intervals (200–800 µs apart, so the samples do not alias with the 1 ms tick),
//! first with no load (2 s), then under load (`CLOCK_LAG_SECS`, default 10 s), then under the
//! same load plus `CLOCK_LAG_HOGS` busy processes (default: one per core) standing in for other
//! work on the machine. It does all that twice in one run: with the ticker thread at normal
//! priority, then at real-time priority (`Config::clock_realtime`, the default; refused without
//! the privilege, which the output says). It prints
//!
//! * `lag ms`: precise minus coarse time in whole ms — what the hot path is off by. At most 1
//!   while the ticker keeps up (a heartbeat's stamp, coarse + 1 tick, is then never early);
//! * `lag µs`: the real time since the start of the coarse reading's millisecond — the
//!   ticker's delay plus up to 1 ms of truncation, so up to ~2 ms with a punctual ticker;
//!
//! each as p50 / p99 / p99.9 / max, and the control operations done per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use vigil::work::lease::LeaseMode;
use vigil::work::task::TaskSpec;
use vigil::{Config, Coordinator, LeaseOutcome, LeaseOwner, RegisterRequest};

const CALLERS: usize = 64;

/// Lag histograms: whole ms and µs.
struct Lag {
    ms: Histogram<u64>,
    us: Histogram<u64>,
}

/// Samples the clock's lag at random intervals until `stop`.
fn sample(coordinator: Coordinator, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Lag> {
    std::thread::spawn(move || {
        let mut lag = Lag {
            ms: Histogram::new_with_bounds(1, 60_000, 3).unwrap(),
            us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        };
        let mut rng = rand::rng();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(rng.random_range(200..800)));
            let (ms, real) = coordinator.bench_clock_lag();
            // hdrhistogram records values >= its lowest bound; 0 counts as 0.
            lag.ms.saturating_record(ms);
            lag.us.saturating_record(real.as_micros() as u64);
        }
        lag
    })
}

fn report(label: &str, lag: &Lag) {
    let q = |h: &Histogram<u64>| {
        format!(
            "p50 {} p99 {} p99.9 {} max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    };
    let over_1ms = lag.ms.count_between(2, u64::MAX);
    println!(
        "{label}: {} samples; lag ms: {}; lag µs: {}; samples > 1 ms behind: {} ({:.3} %)",
        lag.ms.len(),
        q(&lag.ms),
        q(&lag.us),
        over_1ms,
        100.0 * over_1ms as f64 / lag.ms.len().max(1) as f64
    );
}

/// One caller: create, claim, complete, acquire, release, until `stop`. It yields to the
/// runtime between calls, as a caller whose requests arrive over a connection does: with an
/// in-memory store none of these calls waits on anything, and a loop that never yields would
/// hold a worker thread forever whatever the clock's ticker does.
async fn caller(c: Coordinator, worker: String, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        c.create_task(TaskSpec::new(json!({"job": n, "by": worker})))
            .await
            .expect("create");
        tokio::task::yield_now().await;
        // Another caller may take the task this one created; claim whatever is first.
        for claimed in c.claim(&worker, 1).await.expect("claim") {
            c.complete_task(claimed.task.id, claimed.claim_token.as_str(), None)
                .await
                .expect("complete");
        }
        tokio::task::yield_now().await;
        let key = format!("bench/{worker}/{}", n % 8);
        let outcome = c
            .acquire_lease(
                &key,
                LeaseOwner::Instance(worker.clone()),
                LeaseMode::Exclusive,
                None,
            )
            .await
            .expect("acquire");
        assert!(matches!(outcome, LeaseOutcome::Granted(_)), "{outcome:?}");
        tokio::task::yield_now().await;
        assert!(
            c.release_lease(&key, LeaseOwner::Instance(worker.clone()))
                .await
                .expect("release")
        );
        tokio::task::yield_now().await;
        n += 1;
        ops.fetch_add(5, Ordering::Relaxed);
    }
}

/// Busy processes standing in for other work on the machine (a build, another service): one
/// shell loop each, at normal priority, stopped by their ids when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("spawning a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Samples for `secs` while 64 callers hammer `coordinator`'s control path; returns the lag and
/// the operations per second.
fn under_callers(rt: &tokio::runtime::Runtime, coordinator: &Coordinator, secs: u64) -> (Lag, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            rt.spawn(caller(
                coordinator.clone(),
                format!("caller-{i:02}"),
                Arc::clone(&stop),
                Arc::clone(&ops),
            ))
        })
        .collect();
    // Let the callers get going before sampling.
    std::thread::sleep(Duration::from_millis(200));
    let ops_before = ops.load(Ordering::Relaxed);
    let started = Instant::now();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(coordinator.clone(), Arc::clone(&sampler_stop));
    std::thread::sleep(Duration::from_secs(secs));
    sampler_stop.store(true, Ordering::Relaxed);
    let lag = sampler.join().unwrap();
    let done = ops.load(Ordering::Relaxed) - ops_before;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for c in callers {
            c.await.expect("caller");
        }
    });
    (lag, done as f64 / took.as_secs_f64())
}

fn main() {
    let secs: u64 = std::env::var("CLOCK_LAG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: usize = std::env::var("CLOCK_LAG_HOGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cores);
    // The default multi-thread runtime: one worker thread per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The ticker at normal priority, then as configured by default (real-time where permitted),
    // in one run.
    for realtime in [false, true] {
        let coordinator = rt.block_on(async {
            let c = Coordinator::start(Config {
                ttl: Duration::from_secs(3600),
                clock_realtime: realtime,
                ..Config::default()
            })
            .await
            .expect("start");
            for i in 0..CALLERS {
                c.register(RegisterRequest::new(format!("caller-{i:02}")))
                    .await
                    .expect("register");
            }
            c
        });
        let priority = if coordinator.bench_clock_realtime() {
            "real-time priority"
        } else if realtime {
            "normal priority (real-time refused)"
        } else {
            "normal priority"
        };
        println!("ticker at {priority}:");

        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample(coordinator.clone(), Arc::clone(&stop));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        report("  idle", &sampler.join().unwrap());

        let (lag, rate) = under_callers(&rt, &coordinator, secs);
        report(&format!("  {CALLERS} callers"), &lag);
        println!(
            "  control path: {rate:.0} operations/s (create, claim, complete, acquire, release)"
        );
        if hogs > 0 {
            let busy = Hogs::start(hogs);
            let (lag, rate) = under_callers(&rt, &coordinator, secs);
            drop(busy);
            report(
                &format!("  {CALLERS} callers + {hogs} busy processes"),
                &lag,
            );
            println!("  control path: {rate:.0} operations/s");
        }
        rt.block_on(coordinator.shutdown());
    }
}
