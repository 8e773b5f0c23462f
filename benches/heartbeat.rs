//! In-process heartbeat throughput and latency, and resident memory per instance.
//!
//! ```text
//! cargo bench --bench heartbeat
//! ```
//!
//! * `heartbeat/one-task/N` — one thread heartbeating N registered instances round-robin;
//! * `heartbeat/two-tasks/N` — two threads at once (the machine has 2 cores), throughput is the
//!   sum of both;
//! * before criterion runs, the bench registers 100k instances in a fresh coordinator and
//!   prints the growth of resident memory per instance, then times 4M single heartbeats
//!   individually on two threads and prints their latency percentiles (the clock read around
//!   each call is included, so these are upper bounds);
//! * then it registers 100k instances with a 10 s TTL, lets them fall silent and prints how
//!   late after the TTL each expiry was noticed, and how soon a new leader followed the old.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use vigil::{Config, Coordinator, RegisterRequest};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> Config {
    Config {
        // Long TTL: nothing may expire while the bench runs.
        ttl: Duration::from_secs(3600),
        ..Config::default()
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("worker-{i:06}")).collect()
}

fn populate(rt: &tokio::runtime::Runtime, n: usize) -> (Coordinator, Arc<Vec<String>>) {
    let ids = ids(n);
    let coordinator = rt.block_on(async {
        let c = Coordinator::start(config()).await.expect("start");
        for id in &ids {
            c.register(RegisterRequest::new(id.as_str()).roles(["worker"]))
                .await
                .expect("register");
        }
        c
    });
    // The callers' copies of the ids, allocated together after the registry was built: a server
    // reads the id out of a request buffer that is hot in its cache, so the bench must not
    // charge each heartbeat a cache miss on an id string scattered among 100k actors.
    let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    (coordinator, Arc::new(ids))
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `total` heartbeats split over `threads` threads and returns the wall time.
fn hammer(
    coordinator: &Coordinator,
    ids: &Arc<Vec<String>>,
    threads: usize,
    total: u64,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = coordinator.clone();
            let ids = Arc::clone(ids);
            s.spawn(move || {
                let n = ids.len();
                let per = total / threads as u64;
                let mut i = (t * n / threads) % n;
                for _ in 0..per {
                    black_box(c.heartbeat_now(black_box(&ids[i])));
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn memory_and_latency() {
    let rt = runtime();
    let before = resident_bytes();
    let start = Instant::now();
    let (coordinator, ids) = populate(&rt, 100_000);
    let took = start.elapsed();
    // Let the actors arm their timers before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let after = resident_bytes();
    let per = (after.saturating_sub(before)) as f64 / 100_000.0;
    println!(
        "memory: {:.0} bytes ({:.2} KiB) resident per registered instance at 100k \
         (RSS {:.1} MiB -> {:.1} MiB); registering 100k took {:.2?} ({:.0}/s)",
        per,
        per / 1024.0,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        took,
        100_000.0 / took.as_secs_f64()
    );

    let per_thread = 2_000_000u64;
    let histograms: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let c = coordinator.clone();
                let ids = Arc::clone(&ids);
                s.spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
                    let n = ids.len();
                    let mut i = t * n / 2;
                    for _ in 0..per_thread {
                        let t0 = Instant::now();
                        black_box(c.heartbeat_now(black_box(&ids[i])));
                        h.saturating_record(t0.elapsed().as_nanos() as u64);
                        i = (i + 1) % n;
                    }
                    h
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = histograms[0].clone();
    all.add(&histograms[1]).unwrap();
    println!(
        "latency: {} heartbeats on 2 threads, 100k instances: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (includes ~40 ns of clock reads)",
        all.len(),
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    rt.block_on(coordinator.shutdown());
}

/// Registers 100k instances with a 10 s TTL, lets them all fall silent, and measures how late
/// each expiry is noticed (event time − last heartbeat − TTL) and how long after the leader's
/// expiry its successor is elected.
fn expiry_lateness() {
    let rt = runtime();
    let n = 100_000;
    let ttl = Duration::from_secs(10);
    let (lateness, takeover) = rt.block_on(async {
        let c = Coordinator::start(Config {
            ttl,
            event_capacity: 2 * n,
            ..Config::default()
        })
        .await
        .expect("start");
        let mut events = c.subscribe();
        for id in ids(n) {
            c.register(RegisterRequest::new(id))
                .await
                .expect("register");
        }
        let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000, 3).unwrap();
        let mut first_expiry_at = None;
        let mut takeover = None;
        let mut expired = 0;
        let deadline = tokio::time::Instant::now() + ttl * 3;
        while expired < n {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(e)) => e,
                _ => break,
            };
            match event.kind {
                vigil::EventKind::InstanceExpired => {
                    expired += 1;
                    let late =
                        event.at_ms - event.last_seen_ms.unwrap_or(0) - ttl.as_millis() as u64;
                    lateness.saturating_record(late.max(1));
                    first_expiry_at.get_or_insert(event.at_ms);
                }
                vigil::EventKind::LeaderElected
                    if event.previous_leader.is_some() && takeover.is_none() =>
                {
                    takeover = first_expiry_at.map(|t| event.at_ms - t);
                }
                _ => {}
            }
        }
        assert_eq!(expired, n, "every instance expired and was reported");
        c.shutdown().await;
        (lateness, takeover)
    });
    println!(
        "expiry: {} instances (TTL 10 s) noticed after TTL by p50 {} ms, p99 {} ms, max {} ms \
         (1 ms resolution); first new leader elected {} ms after the old leader expired",
        lateness.len(),
        lateness.value_at_quantile(0.5),
        lateness.value_at_quantile(0.99),
        lateness.max(),
        takeover.map_or("?".to_string(), |t| t.to_string())
    );
}

fn heartbeat_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("heartbeat");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for &n in &SIZES {
        let (coordinator, ids) = populate(&rt, n);
        for (label, threads) in [("one-task", 1usize), ("two-tasks", 2usize)] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    // Criterion counts `iters` elements; run them split over the threads.
                    hammer(&coordinator, &ids, threads, iters.max(threads as u64))
                })
            });
        }
        rt.block_on(coordinator.shutdown());
    }
    group.finish();
}

fn main() {
    memory_and_latency();
    expiry_lateness();
    let mut criterion = Criterion::default().configure_from_args();
    heartbeat_throughput(&mut criterion);
    criterion.final_summary();
}
