//! What a write-behind flush costs to find the heartbeats it must write, and what finding them
//! costs the heartbeat hot path (issue 17).
//!
//! ```text
//! cargo bench --bench flush_scan
//! ```
//!
//! * `scan`: with N instances registered (1k, 10k, 100k) and only 100 of them heartbeating
//!   between two flushes, the time one flush takes to find those 100 (no store I/O: the
//!   coordinator's `bench_flush_scan` hook, the function the Persister calls). 300 rounds per
//!   size: wait for the coarse clock to move, heartbeat 100 instances spread over the registry
//!   (untimed), time the scan, check it found exactly the 100. Then the same with the 100
//!   registered side by side (neighbours in memory). Prints p50 / p99 per size and the
//!   100k / 1k ratio of the spread-out medians.
//! * `hot path`: one thread heartbeats all 100k instances round-robin, 20 rounds, timing each
//!   round; between rounds, either nothing happens (a heartbeat then finds its instance
//!   already marked as moved, as between two flushes) or a flush scan runs (untimed), so every
//!   heartbeat of the next round is the first since a flush — the most a flush can cost the
//!   hot path. Prints the median ns per heartbeat of each.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vigil::{Config, Coordinator, RegisterRequest};

const MOVING: usize = 100;
const ROUNDS: usize = 300;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("worker-{i:06}")).collect()
}

fn start(rt: &tokio::runtime::Runtime, ids: &[String]) -> Coordinator {
    rt.block_on(async {
        let c = Coordinator::start(Config {
            // Nothing may expire while the bench runs.
            ttl: Duration::from_secs(3600),
            ..Config::default()
        })
        .await
        .expect("start");
        for id in ids {
            c.register(RegisterRequest::new(id.as_str()))
                .await
                .expect("register");
        }
        c
    })
}

/// Waits until the coarse clock has moved, so that the next heartbeat moves last-seen.
fn next_tick() {
    std::thread::sleep(Duration::from_millis(2));
}

/// Times the scan at `n` instances, the moving ones `spread` over the registry (instance
/// `k * n / 100`) or side by side (registered one after the other). Returns the median in ns.
fn scan_one(c: &Coordinator, ids: &[String], spread: bool) -> u64 {
    let n = ids.len();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    for round in 0..ROUNDS {
        next_tick();
        for k in 0..MOVING {
            let i = if spread { k * n / MOVING } else { k };
            assert!(c.heartbeat_now(&ids[(i + round) % n]).alive);
        }
        let t0 = Instant::now();
        let found = black_box(c.bench_flush_scan());
        h.saturating_record(t0.elapsed().as_nanos() as u64);
        assert_eq!(found, MOVING, "round {round}");
    }
    println!(
        "scan: {n:>6} instances, {MOVING} moved {}: p50 {:>9} ns, p99 {:>9} ns, max {:>9} ns",
        if spread {
            "(spread out)   "
        } else {
            "(side by side) "
        },
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    h.value_at_quantile(0.5)
}

fn scan(rt: &tokio::runtime::Runtime, n: usize) -> u64 {
    let ids = ids(n);
    let c = start(rt, &ids);
    // Everything registered counts as written once; start from a clean slate.
    c.bench_flush_scan();
    let spread = scan_one(&c, &ids, true);
    scan_one(&c, &ids, false);
    rt.block_on(c.shutdown());
    spread
}

fn hot_path(rt: &tokio::runtime::Runtime) {
    let n = 100_000;
    let ids = ids(n);
    let c = start(rt, &ids);
    let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    for flush_between in [false, true] {
        let mut per_round = Vec::new();
        for _ in 0..20 {
            next_tick();
            if flush_between {
                black_box(c.bench_flush_scan());
            }
            let t0 = Instant::now();
            for id in &ids {
                black_box(c.heartbeat_now(black_box(id)));
            }
            per_round.push(t0.elapsed().as_nanos() as f64 / n as f64);
        }
        per_round.sort_by(f64::total_cmp);
        println!(
            "hot path: 100k instances round-robin, {}: median {:.1} ns per heartbeat \
             (min {:.1}, max {:.1})",
            if flush_between {
                "a flush scan between rounds (every heartbeat the first since a flush)"
            } else {
                "no flush between rounds"
            },
            per_round[per_round.len() / 2],
            per_round[0],
            per_round[per_round.len() - 1]
        );
    }
    rt.block_on(c.shutdown());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let small = scan(&rt, 1_000);
    scan(&rt, 10_000);
    let large = scan(&rt, 100_000);
    println!(
        "scan: 100k / 1k (spread out) = {:.2}",
        large as f64 / small.max(1) as f64
    );
    hot_path(&rt);
}
