//! Control-plane cost against the amount of *unrelated* state (issue 17, point 4), and claims/s
//! of racing claimers on the one work lock (issue 17, point 3).
//!
//! ```text
//! cargo bench --bench scale
//! ```
//!
//! (`--features server` is in the default set: without it the `/metrics` render and the
//! `system.get_state` call through the JSON-RPC dispatcher are left out.)
//!
//! ## Scaling
//!
//! Three coordinators live side by side, holding N = 1 k, 10 k and 100 k unrelated tasks and N
//! unrelated leases, with N / 10 registered workers:
//!
//! * tasks: 45 % finished (40 % completed, 5 % failed; the finished-task retention is set to
//!   this count, so every measured completion evicts the oldest, as in a long-running
//!   coordinator), 25 % claimed, round-robin over the workers, each holding one required lock,
//!   30 % pending at priorities 0–99, a third of them requiring a lock; and beside them as many
//!   again (30 % of N) pending at priority 100 that require the role `elsewhere`, which no
//!   worker has (issue 18: a claim must pass over them at no cost);
//! * leases: N / 4 required locks of the claimed tasks, N / 4 more leases held by those claims
//!   (`acquire_lease` under the claim), N / 2 held by the workers as instances (a tenth of
//!   those shared, five workers to a key); keys spread over N / 50 tenant prefixes with 16
//!   sub-prefixes each.
//!
//! Each operation is then timed on each coordinator by one extra worker, `bench-0`, whose own
//! tasks (priority 100, so they are claimed first) and leases (under `bench/`) concern none of
//! that state: claim one task, claim one task narrowed to its role `bench` (`claim_role`, past
//! the `elsewhere` tasks ahead of it in priority and age), complete a claimed task, a step heartbeat, lease acquire / renew /
//! release, `get_state` (`state_with` limited to 100 as `system.get_state` asks for it, and
//! `task_counts`; with `server` also the whole `system.get_state` call through the
//! dispatcher), the `/metrics` render (with `server`), one sweep tick (`bench_sweep_tick`), and
//! one write-behind flush scan (`bench_flush_scan`, after 10 workers' last-seen times moved,
//! through `bench_move`: a heartbeat within the millisecond of the worker's previous one
//! moves nothing, and at 1 k the same 100 workers come round every 10 scans). Whatever
//! a measured call leaves behind (a claim, a lease) is undone outside the timed part, so the
//! unrelated state stays the same throughout. Criterion sizes its samples by wall time, the
//! untimed parts included: where those are slow (completing the claims `claim` took costs
//! milliseconds at 100 k today) a sample holds fewer calls, and the run stays short.
//!
//! At the end a table is printed from the same run: per operation the time per call at each
//! size (the median over criterion's samples of the sample's mean), and the 100 k / 1 k ratio.
//!
//! ## Contention
//!
//! After the criterion groups, a plain timed pass (not a criterion group: its configurations
//! take turns, so that the load of a shared machine falls on all of them alike): one more
//! coordinator with 100 k pending tasks, raced by 1, 2, 4 and 8 claimer tasks (one worker each)
//! on the multi-thread runtime (2 worker threads), one task per claim, all on the one work
//! lock; and for comparison 2 claimers on 2 separate coordinators (50 k pending each, no lock
//! shared): the ceiling a perfectly sharded work book would reach on this machine. Each race
//! claims [`CLAIMS_PER_RACE`] tasks; [`ROUNDS`] rounds; claimed tasks are completed and as many
//! new ones created outside the timed part. Prints claims/s (median, min, max). Skipped with
//! `VIGIL_SCALE_CONTENTION=0`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use tokio::runtime::Runtime;
use vigil::work::lease::LeaseMode;
use vigil::work::task::{ClaimedTask, TaskId, TaskSpec};
use vigil::{Config, Coordinator, LeaseOutcome, LeaseOwner, RegisterRequest, StateQuery};

/// The amounts of unrelated tasks (and of unrelated leases).
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Criterion samples per benchmark.
const SAMPLES: usize = 10;
/// The worker that makes every measured call.
const BENCH: &str = "bench-0";
/// Workers that send a heartbeat before each flush scan.
const MOVED_PER_FLUSH: usize = 10;
/// Pending tasks in the contention runs.
const CONTENTION_PENDING: usize = 100_000;
/// Rounds of the contention pass.
const ROUNDS: usize = 7;
/// Claims per race in the contention pass.
const CLAIMS_PER_RACE: u64 = 40_000;
/// Claimer counts in the contention runs.
const CLAIMERS: [usize; 4] = [1, 2, 4, 8];

/// `(iterations, time)` of every `iter_custom` call, by operation and size, in call order.
type Records = Arc<Mutex<BTreeMap<(&'static str, usize), Vec<(u64, Duration)>>>>;

/// One coordinator holding `n` unrelated tasks and leases, and what `bench-0` keeps on it.
struct World {
    n: usize,
    coordinator: Coordinator,
    workers: Vec<String>,
    /// A task `bench-0` holds claimed, with a required lock, for step heartbeats.
    beating: (TaskId, String),
    /// A lease `bench-0` holds, for renewals.
    renewed: &'static str,
    #[cfg(feature = "server")]
    dispatcher: vigil::rpc::Dispatcher,
    /// Round-robin position of the workers that beat before a flush scan.
    next_beat: usize,
}

fn config(finished: usize) -> Config {
    Config {
        ttl: Duration::from_secs(3600),
        // Only the measured sweeps: the LeaderActor's own would land in other measurements.
        sweep_interval: Duration::from_secs(3600),
        finished_task_retention: finished,
        ..Config::default()
    }
}

fn key(n: usize, i: usize, leaf: &str) -> String {
    let tenants = (n / 50).max(1);
    format!("t{:05}/r{:02}/{leaf}{i}", i % tenants, (i / tenants) % 16)
}

async fn register(c: &Coordinator, id: &str) {
    c.register(RegisterRequest::new(id))
        .await
        .expect("register");
}

async fn claim_one(c: &Coordinator, worker: &str) -> ClaimedTask {
    let mut got = c.claim(worker, 1).await.expect("claim");
    assert_eq!(got.len(), 1, "{worker} claimed nothing");
    got.pop().expect("one task")
}

async fn complete(c: &Coordinator, claimed: &ClaimedTask) {
    c.complete_task(
        claimed.task.id,
        claimed.claim_token.as_str(),
        Some(json!("ok")),
    )
    .await
    .expect("complete");
}

fn granted(outcome: LeaseOutcome) {
    assert!(
        matches!(outcome, LeaseOutcome::Granted(_)),
        "lease refused: {outcome:?}"
    );
}

impl World {
    async fn build(n: usize) -> Self {
        let started = Instant::now();
        let finished = n * 45 / 100;
        let claimed = n / 4;
        let pending = n - finished - claimed;
        let coordinator = Coordinator::start(config(finished)).await.expect("start");
        let c = &coordinator;
        let workers: Vec<String> = (0..n / 10).map(|i| format!("worker-{i:06}")).collect();
        for w in &workers {
            register(c, w).await;
        }
        c.register(RegisterRequest::new(BENCH).roles(["bench"]))
            .await
            .expect("register");
        let worker = |i: usize| workers[i % workers.len()].as_str();

        // Finished: created, claimed in batches of 100 and completed (one in nine failed).
        let mut made = 0;
        while made < finished {
            let batch = (finished - made).min(100);
            for i in made..made + batch {
                let spec = TaskSpec::new(json!({"job": i, "kind": "done"}));
                let spec = if i % 9 == 0 {
                    spec.max_attempts(1)
                } else {
                    spec
                };
                c.create_task(spec).await.expect("create");
            }
            let got = c.claim(worker(made / 100), batch).await.expect("claim");
            assert_eq!(got.len(), batch);
            for t in &got {
                if t.task.max_attempts == 1 {
                    c.fail_task(t.task.id, t.claim_token.as_str(), Some("no".into()))
                        .await
                        .expect("fail");
                } else {
                    complete(c, t).await;
                }
            }
            made += batch;
        }

        // Claimed, round-robin over the workers: each with a required lock and one more lease
        // under its claim.
        for i in 0..claimed {
            c.create_task(
                TaskSpec::new(json!({"job": i, "kind": "running"}))
                    .lock(&key(n, i, "lock"), LeaseMode::Exclusive),
            )
            .await
            .expect("create");
            let t = claim_one(c, worker(i)).await;
            assert_eq!(t.leases.len(), 1);
            let owner = LeaseOwner::Claim {
                task_id: t.task.id,
                claim_token: t.claim_token.as_str().to_string(),
            };
            granted(
                c.acquire_lease(&key(n, i, "out"), owner, LeaseMode::Exclusive, None)
                    .await
                    .expect("acquire"),
            );
        }

        // Held by the workers as instances; a tenth shared on one key per tenant.
        for i in 0..n / 2 {
            let (k, holder, mode) = if i % 10 == 0 {
                // Five consecutive workers share each config key.
                let shared = i / 10;
                let group = shared / 5;
                let tenant = group % (n / 50).max(1);
                (
                    format!("t{tenant:05}/config{group}"),
                    worker(shared),
                    LeaseMode::Shared,
                )
            } else {
                (key(n, i, "file"), worker(i), LeaseMode::Exclusive)
            };
            let owner = LeaseOwner::Instance(holder.to_string());
            granted(
                c.acquire_lease(&k, owner, mode, None)
                    .await
                    .expect("acquire"),
            );
        }

        // Pending last, below bench-0's priority 100; a third need a (free) lock.
        for i in 0..pending {
            let spec = TaskSpec::new(json!({"job": i, "kind": "queued"})).priority((i % 100) as u8);
            let spec = if i % 3 == 0 {
                spec.lock(&key(n, i, "queue"), LeaseMode::Exclusive)
            } else {
                spec
            };
            c.create_task(spec).await.expect("create");
        }

        // Pending tasks for a role nobody has, ahead of everything in the pending order.
        for i in 0..pending {
            c.create_task(
                TaskSpec::new(json!({"elsewhere": i}))
                    .priority(100)
                    .role("elsewhere"),
            )
            .await
            .expect("create");
        }

        // bench-0's own: a claim with a required lock that it keeps beating, a lease it renews.
        c.create_task(
            TaskSpec::new(json!({"job": "beating"}))
                .priority(100)
                .lock("bench/beating", LeaseMode::Exclusive),
        )
        .await
        .expect("create");
        let t = claim_one(c, BENCH).await;
        let beating = (t.task.id, t.claim_token.as_str().to_string());
        let renewed = "bench/renewed";
        granted(
            c.acquire_lease(
                renewed,
                LeaseOwner::Instance(BENCH.into()),
                LeaseMode::Exclusive,
                None,
            )
            .await
            .expect("acquire"),
        );
        // Empties the list of moved instances: later scans find only what moved since.
        c.bench_flush_scan();

        let counts = c.task_counts();
        let leases = c.list_leases(None).expect("leases").len();
        eprintln!(
            "scale: {n} built in {:.1} s: tasks {counts:?}, {leases} leases, {} instances",
            started.elapsed().as_secs_f64(),
            c.instance_count()
        );
        Self {
            n,
            #[cfg(feature = "server")]
            dispatcher: vigil::rpc::Dispatcher::new(
                coordinator.clone(),
                vigil::rpc::RpcLimits::default(),
            ),
            coordinator,
            workers,
            beating,
            renewed,
            next_beat: 0,
        }
    }

    /// Creates `count` tasks that require bench-0's role `bench`, at priority 100 (after the
    /// `elsewhere` ones in the pending order: created later).
    async fn bench_role_tasks(&self, count: u64) {
        for i in 0..count {
            self.coordinator
                .create_task(
                    TaskSpec::new(json!({"bench": i}))
                        .priority(100)
                        .role("bench"),
                )
                .await
                .expect("create");
        }
    }

    /// Creates `count` tasks for bench-0 (priority 100: they are claimed before any other).
    async fn bench_tasks(&self, count: u64) {
        for i in 0..count {
            self.coordinator
                .create_task(TaskSpec::new(json!({"bench": i})).priority(100))
                .await
                .expect("create");
        }
    }

    fn bench_keys(prefix: &str, count: u64) -> Vec<String> {
        (0..count).map(|i| format!("bench/{prefix}/{i}")).collect()
    }

    fn owner() -> LeaseOwner {
        LeaseOwner::Instance(BENCH.into())
    }
}

/// Times one operation at every size, recording each `iter_custom` call.
fn scaling<F>(
    criterion: &mut Criterion,
    worlds: &mut [World],
    records: &Records,
    op: &'static str,
    mut run: F,
) where
    F: FnMut(&mut World, u64) -> Duration,
{
    let mut group = criterion.benchmark_group(op);
    group.sample_size(SAMPLES);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for world in worlds.iter_mut() {
        let n = world.n;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let took = run(world, iters);
                records
                    .lock()
                    .expect("records")
                    .entry((op, n))
                    .or_default()
                    .push((iters, took));
                took
            })
        });
    }
    group.finish();
}

fn per_call(samples: &[(u64, Duration)]) -> Option<Duration> {
    // The warm-up calls come first; the last SAMPLES are criterion's samples.
    let measured = &samples[samples.len().saturating_sub(SAMPLES)..];
    let mut each: Vec<f64> = measured
        .iter()
        .filter(|(iters, _)| *iters > 0)
        .map(|(iters, took)| took.as_secs_f64() / *iters as f64)
        .collect();
    if each.is_empty() {
        return None;
    }
    each.sort_by(f64::total_cmp);
    Some(Duration::from_secs_f64(each[each.len() / 2]))
}

fn show(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn print_table(ops: &[&'static str], records: &Records) {
    let records = records.lock().expect("records");
    println!("\nscale: time per call against unrelated tasks and leases (median of samples)\n");
    println!("| operation | 1 k | 10 k | 100 k | 100 k / 1 k |\n|---|---:|---:|---:|---:|");
    for op in ops {
        let cells: Vec<Option<Duration>> = SIZES
            .iter()
            .map(|n| records.get(&(*op, *n)).and_then(|s| per_call(s)))
            .collect();
        let mut row = format!("| {op} |");
        for cell in &cells {
            row += &format!(" {} |", cell.map_or("–".into(), show));
        }
        let ratio = match (cells[0], cells[2]) {
            (Some(small), Some(large)) if !small.is_zero() => {
                format!("{:.1}×", large.as_secs_f64() / small.as_secs_f64())
            }
            _ => "–".into(),
        };
        println!("{row} {ratio} |");
    }
}

/// Claims `iters` tasks (rounded up to a multiple of `claimers`) with `claimers` concurrent
/// tasks, claimer `i` as worker `claimer-i` on `coordinators[i % len]`, and answers how long it
/// took. Afterwards, untimed: completes the claimed tasks and creates as many new pending ones
/// on each coordinator, so every race starts with the same queue.
fn race(rt: &Runtime, coordinators: &[Coordinator], claimers: usize, iters: u64) -> Duration {
    let each = iters.div_ceil(claimers as u64);
    let (took, claimed) = rt.block_on(async {
        let start = Arc::new(tokio::sync::Barrier::new(claimers + 1));
        let handles: Vec<_> = (0..claimers)
            .map(|i| {
                let c = coordinators[i % coordinators.len()].clone();
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    let worker = format!("claimer-{i}");
                    let mut got = Vec::with_capacity(each as usize);
                    start.wait().await;
                    for _ in 0..each {
                        got.push(claim_one(&c, &worker).await);
                    }
                    got
                })
            })
            .collect();
        start.wait().await;
        let began = Instant::now();
        let mut claimed = Vec::with_capacity(claimers);
        for h in handles {
            claimed.push(h.await.expect("claimer"));
        }
        (began.elapsed(), claimed)
    });
    rt.block_on(async {
        for (i, got) in claimed.iter().enumerate() {
            let c = &coordinators[i % coordinators.len()];
            for t in got {
                complete(c, t).await;
            }
            fill(c, got.len()).await;
        }
    });
    took
}

/// Claims per race of the contention pass: none with `VIGIL_SCALE_CONTENTION=0`, a few under
/// `--test`.
fn contention_races() -> u64 {
    if std::env::var("VIGIL_SCALE_CONTENTION").is_ok_and(|v| v == "0") {
        0
    } else if std::env::args().any(|a| a == "--test") {
        1_000
    } else {
        CLAIMS_PER_RACE
    }
}

/// Creates `count` pending tasks on `c`, priorities spread over 0–100.
async fn fill(c: &Coordinator, count: usize) {
    for i in 0..count {
        c.create_task(TaskSpec::new(json!({"job": i})).priority((i % 101) as u8))
            .await
            .expect("create");
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut worlds: Vec<World> = SIZES
        .iter()
        .map(|n| rt.block_on(World::build(*n)))
        .collect();
    let records: Records = Arc::default();
    let mut criterion = Criterion::default().configure_from_args();
    let c = &mut criterion;
    let mut ops = Vec::new();
    let mut bench = |name: &'static str, run: &mut dyn FnMut(&mut World, u64) -> Duration| {
        ops.push(name);
        scaling(c, &mut worlds, &records, name, run);
    };

    bench("claim", &mut |w, iters| {
        rt.block_on(async {
            w.bench_tasks(iters).await;
            let c = &w.coordinator;
            let mut claimed = Vec::with_capacity(iters as usize);
            let start = Instant::now();
            for _ in 0..iters {
                claimed.push(claim_one(c, BENCH).await);
            }
            let took = start.elapsed();
            for t in &claimed {
                complete(c, t).await;
            }
            took
        })
    });
    bench(
        "claim_role (past 0.3 N of another role)",
        &mut |w, iters| {
            rt.block_on(async {
                w.bench_role_tasks(iters).await;
                let c = &w.coordinator;
                let mut claimed = Vec::with_capacity(iters as usize);
                let start = Instant::now();
                for _ in 0..iters {
                    let mut got = c.claim_role(BENCH, "bench", 1).await.expect("claim");
                    assert_eq!(got.len(), 1, "bench-0 claimed nothing of its role");
                    claimed.push(got.pop().expect("one task"));
                }
                let took = start.elapsed();
                for t in &claimed {
                    complete(c, t).await;
                }
                took
            })
        },
    );
    bench("complete", &mut |w, iters| {
        rt.block_on(async {
            w.bench_tasks(iters).await;
            let c = &w.coordinator;
            let mut claimed = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                claimed.push(claim_one(c, BENCH).await);
            }
            let start = Instant::now();
            for t in &claimed {
                complete(c, t).await;
            }
            start.elapsed()
        })
    });
    bench("task_heartbeat", &mut |w, iters| {
        rt.block_on(async {
            let c = &w.coordinator;
            let (id, token) = &w.beating;
            let start = Instant::now();
            for _ in 0..iters {
                let beat = c
                    .task_heartbeat(*id, token, Duration::from_secs(600))
                    .await
                    .expect("heartbeat");
                assert_eq!(beat.status, vigil::work::task::StepStatus::Ok);
            }
            start.elapsed()
        })
    });
    bench("lease acquire", &mut |w, iters| {
        rt.block_on(async {
            let c = &w.coordinator;
            let keys = World::bench_keys("acquire", iters);
            let start = Instant::now();
            for k in &keys {
                let outcome = c
                    .acquire_lease(k, World::owner(), LeaseMode::Exclusive, None)
                    .await
                    .expect("acquire");
                black_box(&outcome);
            }
            let took = start.elapsed();
            for k in &keys {
                assert!(c.release_lease(k, World::owner()).await.expect("release"));
            }
            took
        })
    });
    bench("lease renew", &mut |w, iters| {
        rt.block_on(async {
            let c = &w.coordinator;
            let start = Instant::now();
            for _ in 0..iters {
                let grant = c
                    .renew_lease(w.renewed, World::owner(), Some(Duration::from_secs(900)))
                    .await
                    .expect("renew");
                assert!(grant.is_some());
            }
            start.elapsed()
        })
    });
    bench("lease release", &mut |w, iters| {
        rt.block_on(async {
            let c = &w.coordinator;
            let keys = World::bench_keys("release", iters);
            for k in &keys {
                granted(
                    c.acquire_lease(k, World::owner(), LeaseMode::Exclusive, None)
                        .await
                        .expect("acquire"),
                );
            }
            let start = Instant::now();
            for k in &keys {
                assert!(c.release_lease(k, World::owner()).await.expect("release"));
            }
            start.elapsed()
        })
    });
    bench(
        "get_state (state_with 100 + task_counts)",
        &mut |w, iters| {
            let c = &w.coordinator;
            let query = StateQuery {
                limit: Some(vigil::DEFAULT_LIST_LIMIT),
                ..StateQuery::default()
            };
            let start = Instant::now();
            for _ in 0..iters {
                black_box(c.state_with(&query));
                black_box(c.task_counts());
            }
            start.elapsed()
        },
    );
    #[cfg(feature = "server")]
    bench("system.get_state (RPC, limit 100)", &mut |w, iters| {
        rt.block_on(async {
            let request = json!({
                "jsonrpc": "2.0", "id": 1, "method": "system.get_state", "params": {"limit": 100}
            });
            let start = Instant::now();
            for _ in 0..iters {
                let answer = w.dispatcher.handle_value(request.clone()).await;
                assert!(answer.is_some_and(|a| a.get("result").is_some()));
            }
            start.elapsed()
        })
    });
    #[cfg(feature = "server")]
    bench("/metrics render", &mut |w, iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(vigil::server::bench_metrics_render(&w.coordinator));
        }
        start.elapsed()
    });
    bench("sweep tick", &mut |w, iters| {
        let c = &w.coordinator;
        let start = Instant::now();
        for _ in 0..iters {
            assert_eq!(c.bench_sweep_tick(), 0, "nothing is due");
        }
        start.elapsed()
    });
    bench("flush scan", &mut |w, iters| {
        // Whatever earlier benchmarks moved is taken first, untimed.
        w.coordinator.bench_flush_scan();
        let mut took = Duration::ZERO;
        for _ in 0..iters {
            // Each moves its instance's last-seen time (a heartbeat within the millisecond of
            // the instance's previous one would not: at 1 k, where the same 100 workers come
            // round every 10 scans, most scans would then find nothing).
            for _ in 0..MOVED_PER_FLUSH {
                let id = &w.workers[w.next_beat % w.workers.len()];
                w.next_beat += 1;
                assert!(w.coordinator.bench_move(id));
            }
            let start = Instant::now();
            let found = w.coordinator.bench_flush_scan();
            took += start.elapsed();
            assert_eq!(found, MOVED_PER_FLUSH, "every scan finds the same moves");
        }
        took
    });

    criterion.final_summary();
    print_table(&ops, &records);
    rt.block_on(async {
        for w in &worlds {
            w.coordinator.shutdown().await;
        }
    });
    drop(worlds);
    let races = contention_races();
    if races > 0 {
        contention(&rt, races);
    }
}

/// Races 1, 2, 4, 8 claimers on one coordinator, and 2 on two; prints claims/s.
fn contention(rt: &Runtime, races: u64) {
    let max_claimers = *CLAIMERS.iter().max().expect("claimers");
    let (shared, split) = rt.block_on(async {
        let start = || Coordinator::start(config(100_000));
        let shared = start().await.expect("start");
        for i in 0..max_claimers {
            register(&shared, &format!("claimer-{i}")).await;
        }
        fill(&shared, CONTENTION_PENDING).await;
        let split = [start().await.expect("start"), start().await.expect("start")];
        for (i, c) in split.iter().enumerate() {
            register(c, &format!("claimer-{i}")).await;
            fill(c, CONTENTION_PENDING / split.len()).await;
        }
        (shared, split)
    });
    let mut runs: Vec<(String, &[Coordinator], usize)> = CLAIMERS
        .iter()
        .map(|&k| {
            (
                format!("{k} claimers, one lock"),
                std::slice::from_ref(&shared),
                k,
            )
        })
        .collect();
    runs.push(("2 claimers, two coordinators".into(), &split[..], 2));
    // Every configuration once per round, in turn: a change in the machine's load falls on
    // all of them alike.
    let mut rates = vec![Vec::new(); runs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, coordinators, claimers)) in runs.iter().enumerate() {
            let claims = races.div_ceil(*claimers as u64) * *claimers as u64;
            let took = race(rt, coordinators, *claimers, races);
            rates[i].push(claims as f64 / took.as_secs_f64());
        }
    }
    println!(
        "\ncontention: claims/s, one claim per call, {} k pending, 2 runtime threads; \
         {races} claims per race, median [min max] of {ROUNDS} rounds\n",
        CONTENTION_PENDING / 1000
    );
    println!("| claimers | claims/s | vs 1 claimer |\n|---|---:|---:|");
    let median = |r: &mut Vec<f64>| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let alone = median(&mut rates[0]);
    for ((label, _, _), r) in runs.iter().zip(&mut rates) {
        let m = median(r);
        println!(
            "| {label} | {:.0} k/s [{:.0} {:.0}] | {:.2}× |",
            m / 1e3,
            r[0] / 1e3,
            r[r.len() - 1] / 1e3,
            m / alone
        );
    }
    rt.block_on(async {
        shared.shutdown().await;
        for c in &split {
            c.shutdown().await;
        }
    });
}
