//! Write-behind against write-through, side by side in one run, with a private redis-server.
//!
//! ```text
//! cargo bench --bench persist --features chaos        # needs redis-server on PATH (apt-get install redis-server)
//! ```
//!
//! 1. Heartbeats/s through `Coordinator::heartbeat` (the call the server makes), 10k registered
//!    instances, 64 concurrent callers, 3 s each: `--persist write-behind` vs `write-through`.
//! 2. Redis commands/s with write-behind while an open-loop heartbeat rate grows tenfold:
//!    1k instances at 10k/s → 100k/s, and 10k instances at 10k/s → 100k/s. Two counts:
//!    commands the coordinator sends (EVALSHA and HSET calls) and every command Redis runs,
//!    those inside the scripts included (INFO stats `total_commands_processed`).
//! 3. Recovery: 100k instance records (plus 10k tasks) written to Redis, then the time
//!    `Coordinator::start` takes to come up serving all of them.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil::store::{
    InstanceRecord, PersistMode, RedisConfig, RedisStore, Store, StoreConfig, WriteBatch,
};
use vigil::work::task::TaskSpec;
use vigil::{Config, Coordinator, RegisterRequest};

const INSTANCES: usize = 10_000;
const CALLERS: usize = 64;

struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("vigil-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        Self { child, port, dir }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
    async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut con = redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut con).await.unwrap()
    }
    /// Calls of one command from INFO commandstats.
    async fn calls(&self, command: &str) -> u64 {
        let info: String = self.cmd(&["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    async fn commands_processed(&self) -> u64 {
        let info: String = self.cmd(&["INFO", "stats"]).await;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(redis: &Redis, persist: PersistMode) -> Config {
    let mut rc = RedisConfig::new(redis.url());
    rc.persist = persist;
    Config {
        ttl: Duration::from_secs(600),
        store: StoreConfig::Redis(rc),
        ..Config::default()
    }
}

async fn with_instances(
    redis: &Redis,
    persist: PersistMode,
    n: usize,
) -> (Coordinator, Arc<Vec<String>>) {
    let _: () = redis.cmd(&["FLUSHALL"]).await;
    let c = Coordinator::start(config(redis, persist)).await.unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("worker-{i:05}")).collect();
    for id in &ids {
        c.register(RegisterRequest::new(id.as_str())).await.unwrap();
    }
    (c, Arc::new(ids))
}

/// Closed loop: `CALLERS` tasks heartbeating round-robin for `secs`.
async fn saturate(c: &Coordinator, ids: &Arc<Vec<String>>, secs: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CALLERS {
        let (c, ids, count) = (c.clone(), Arc::clone(ids), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            let mut i = k;
            let mut n = 0u64;
            while Instant::now() < deadline {
                for _ in 0..64 {
                    assert!(c.heartbeat(&ids[i % ids.len()]).await.alive);
                    i += CALLERS;
                    n += 1;
                }
                tokio::task::yield_now().await;
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Open loop at `rate`/s for `secs`; returns (EVALSHA calls/s, all Redis commands/s,
/// heartbeats/s achieved).
async fn redis_load_at(
    redis: &Redis,
    c: &Coordinator,
    ids: &Arc<Vec<String>>,
    rate: u64,
    secs: u64,
) -> (f64, f64, f64) {
    let evalsha = redis.calls("evalsha").await;
    let before = redis.commands_processed().await;
    let started = Instant::now();
    let per_tick = rate / 1000; // one batch per millisecond
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(secs) {
        interval.tick().await;
        for _ in 0..per_tick {
            c.heartbeat_now(&ids[i % ids.len()]);
            i += 1;
            sent += 1;
        }
    }
    let took = started.elapsed().as_secs_f64();
    let after = redis.commands_processed().await;
    let evalsha = redis.calls("evalsha").await - evalsha;
    // The INFO calls themselves are commands too.
    (
        evalsha as f64 / took,
        (after - before - 2) as f64 / took,
        sent as f64 / took,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start();
    rt.block_on(async {
        println!(
            "== heartbeats/s, {INSTANCES} instances, {CALLERS} callers, Coordinator::heartbeat"
        );
        let mut results = Vec::new();
        for mode in [PersistMode::WriteBehind, PersistMode::WriteThrough] {
            let (c, ids) = with_instances(&redis, mode, INSTANCES).await;
            let before = redis.commands_processed().await;
            let rate = saturate(&c, &ids, 3).await;
            let commands = redis.commands_processed().await - before;
            println!("{mode:?}: {rate:>12.0} heartbeats/s  ({commands} Redis commands in 3 s)");
            results.push(rate);
            c.shutdown().await;
        }
        println!(
            "write-behind / write-through: {:.1}x",
            results.first().unwrap_or(&0.0) / results.last().unwrap_or(&1.0)
        );

        println!("\n== Redis commands/s as the heartbeat rate grows (write-behind)");
        for n in [1_000, 10_000] {
            let (c, ids) = with_instances(&redis, PersistMode::WriteBehind, n).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            for rate in [10_000, 100_000] {
                let (evalsha, all, achieved) = redis_load_at(&redis, &c, &ids, rate, 5).await;
                println!(
                    "{n:>6} instances, {achieved:>7.0} heartbeats/s → {evalsha:>5.1} EVALSHA/s, \
                     {all:>8.1} Redis commands/s incl. inside scripts"
                );
            }
            c.shutdown().await;
        }

        println!("\n== recovery of 100k instances");
        let _: () = redis.cmd(&["FLUSHALL"]).await;
        let _: () = redis.cmd(&["CONFIG", "RESETSTAT"]).await;
        let store = RedisStore::connect(&RedisConfig::new(redis.url()))
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for chunk in 0..100 {
            let mut batch = WriteBatch::default();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                let record: InstanceRecord = serde_json::from_value(serde_json::json!({
                    "id": format!("w-{i:06}"), "roles": ["worker"], "status": "active",
                    "lastSeen": now, "epoch": i + 1, "ttlMs": 600_000,
                    "metadata": {}, "registeredAt": now,
                }))
                .unwrap();
                batch.instances.push((record, 600_000));
            }
            store.apply(&batch).await.unwrap();
        }
        let seed = Coordinator::start(config(&redis, PersistMode::WriteBehind))
            .await
            .unwrap();
        for i in 0..10_000 {
            seed.create_task(TaskSpec::new(serde_json::json!({"n": i})))
                .await
                .unwrap();
        }
        seed.faults().crash().await;
        let started = Instant::now();
        let c = Coordinator::start(config(&redis, PersistMode::WriteBehind))
            .await
            .unwrap();
        let took = started.elapsed();
        let report = c.recovery_report().unwrap();
        let stats: String = redis.cmd(&["INFO", "commandstats"]).await;
        for line in stats
            .lines()
            .filter(|l| l.contains("scan") || l.contains("smembers"))
        {
            println!("  redis {line}");
        }
        println!(
            "recovered {} instances and {} tasks in {:.2} s (reading Redis: {:.2} s; term {})",
            report.instances_restored,
            report.tasks,
            took.as_secs_f64(),
            report.loaded_in.as_secs_f64(),
            report.term
        );
        assert_eq!(report.instances_restored, 100_000);
        c.shutdown().await;
    });
}
