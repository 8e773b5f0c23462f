//! Work distribution throughput: claims/s and completions/s with 100k pending tasks and 1k
//! live workers.
//!
//! ```text
//! cargo bench --bench work
//! ```
//!
//! Before each timed batch the queue is topped up (untimed) so that at least 100k tasks are
//! pending when the batch starts; claims go round-robin over the 1k workers, one task each.
//! `complete` times completing tasks claimed (untimed) just before.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde_json::json;
use vigil::work::task::{ClaimedTask, TaskSpec};
use vigil::{Config, Coordinator, RegisterRequest};

const PENDING: usize = 100_000;
const WORKERS: usize = 1_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (coordinator, workers) = rt.block_on(async {
        let c = Coordinator::start(Config {
            ttl: Duration::from_secs(3600),
            ..Config::default()
        })
        .await
        .expect("start");
        let workers: Vec<String> = (0..WORKERS).map(|i| format!("worker-{i:04}")).collect();
        for w in &workers {
            c.register(RegisterRequest::new(w.as_str()))
                .await
                .expect("register");
        }
        (c, workers)
    });
    let top_up = |extra: usize| {
        rt.block_on(async {
            let pending = coordinator.task_counts()["pending"];
            for i in pending..PENDING + extra {
                coordinator
                    .create_task(TaskSpec::new(json!({"job": i})).priority((i % 101) as u8))
                    .await
                    .expect("create");
            }
        })
    };
    let claim_n = |n: usize| -> Vec<ClaimedTask> {
        rt.block_on(async {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let mut got = coordinator
                    .claim(&workers[i % WORKERS], 1)
                    .await
                    .expect("claim");
                out.append(&mut got);
            }
            out
        })
    };
    let complete_all = |claims: &[ClaimedTask]| {
        rt.block_on(async {
            for c in claims {
                coordinator
                    .complete_task(c.task.id, c.claim_token.as_str(), Some(json!("ok")))
                    .await
                    .expect("complete");
            }
        })
    };

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("work");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("claim/100k-pending/1k-workers", |b| {
        b.iter_custom(|iters| {
            top_up(iters as usize);
            let start = Instant::now();
            let claims = claim_n(iters as usize);
            let took = start.elapsed();
            assert_eq!(claims.len(), iters as usize);
            complete_all(&claims);
            took
        })
    });
    group.bench_function("complete/100k-pending/1k-workers", |b| {
        b.iter_custom(|iters| {
            top_up(iters as usize);
            let claims = claim_n(iters as usize);
            let start = Instant::now();
            complete_all(&claims);
            start.elapsed()
        })
    });
    group.finish();
    criterion.final_summary();
    rt.block_on(coordinator.shutdown());
}
