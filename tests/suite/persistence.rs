//! The Redis store, against a real `redis-server` each test starts for itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;
use vigil::store::{PersistMode, RedisConfig, RedisStore, RestartGrace, Store, StoreConfig};
use vigil::work::task::{TaskQuery, TaskSpec, TaskStatus};
use vigil::{Config, Coordinator, Error, LeaseOwner, RegisterRequest};

fn config(redis: &RedisServer, tweak: impl FnOnce(&mut RedisConfig)) -> Config {
    let mut rc = RedisConfig::new(redis.url());
    rc.flush_interval = Duration::from_millis(100);
    // Below the short store waits and response timeouts some tests set (validated); these
    // servers have no replica, so no WAIT is sent anyway.
    rc.wait_timeout = Duration::from_millis(100);
    tweak(&mut rc);
    Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    }
}

/// `config` with its Redis settings changed by `tweak`.
fn with_redis(config: &Config, tweak: impl FnOnce(&mut RedisConfig)) -> Config {
    let mut config = config.clone();
    if let StoreConfig::Redis(rc) = &mut config.store {
        tweak(rc);
    }
    config
}

async fn start(redis: &RedisServer) -> Coordinator {
    Coordinator::start(config(redis, |_| {})).await.unwrap()
}

/// Instances (id → epoch), tasks (id → status, assignee) and leases (key → fencing tokens).
type View = (
    BTreeMap<String, u64>,
    BTreeMap<String, (TaskStatus, Option<(String, u64)>)>,
    BTreeMap<String, Vec<u64>>,
);

async fn redis_view(redis: &RedisServer) -> View {
    let store = RedisStore::connect(&RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let snap = store.load(0).await.unwrap();
    assert!(snap.skipped.is_empty(), "{:?}", snap.skipped);
    (
        snap.instances
            .iter()
            .map(|r| (r.id.to_string(), r.epoch.0))
            .collect(),
        snap.tasks
            .iter()
            .map(|t| {
                let holder = t.assignee.as_ref().map(|(id, e)| (id.to_string(), e.0));
                (t.id.to_string(), (t.status, holder))
            })
            .collect(),
        snap.leases
            .iter()
            .map(|l| {
                let tokens = l.grants.iter().map(|g| g.fencing_token).collect();
                (l.key.to_string(), tokens)
            })
            .collect(),
    )
}

async fn memory_view(c: &Coordinator) -> View {
    let state = c.state();
    let tasks = c.list_tasks(&TaskQuery {
        limit: Some(10_000),
        ..TaskQuery::default()
    });
    let mut leases: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for g in c.list_leases(None).unwrap() {
        leases
            .entry(g.key.to_string())
            .or_default()
            .push(g.fencing_token);
    }
    (
        state
            .instances
            .iter()
            .map(|i| (i.id.to_string(), i.epoch.0))
            .collect(),
        tasks
            .iter()
            .map(|t| {
                let holder = t
                    .assigned_to
                    .as_ref()
                    .zip(t.assignee_epoch)
                    .map(|(id, e)| (id.to_string(), e.0));
                (t.id.to_string(), (t.status, holder))
            })
            .collect(),
        leases,
    )
}

async fn assert_redis_equals_memory(c: &Coordinator, redis: &RedisServer) {
    c.flush().await.expect("flush");
    let (memory, stored) = (memory_view(c).await, redis_view(redis).await);
    assert_eq!(stored, memory, "Redis differs from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_layout_is_readable_by_claudebench_tooling() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    c.register(RegisterRequest::new("w1").roles(["worker"]))
        .await
        .unwrap();
    let task = c
        .create_task(TaskSpec::new(serde_json::json!("build")))
        .await
        .unwrap();
    let mut con = redis.connection().await;
    // Acknowledged means written: no wait needed.
    let hash: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("cb:instance:w1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(hash["status"], "active");
    assert_eq!(hash["id"], "w1");
    assert_eq!(hash["roles"], r#"["worker"]"#);
    let last_seen: u64 = hash["lastSeen"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now.abs_diff(last_seen) < 5_000, "{last_seen} vs {now}");
    assert!(hash["lastHeartbeat"].ends_with('Z'));
    let ttl: i64 = redis::cmd("PTTL")
        .arg("cb:instance:w1")
        .query_async(&mut con)
        .await
        .unwrap();
    // The TTL, plus the retention that lets a restarted coordinator still find the record.
    let retention = RedisConfig::new("").record_retention.as_millis() as i64;
    assert!(
        ttl > 20_000 + retention && ttl <= 30_000 + retention,
        "{ttl}"
    );
    let active: bool = redis::cmd("SISMEMBER")
        .arg("cb:instances:active")
        .arg("w1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(active);
    let status: String = redis::cmd("HGET")
        .arg(format!("cb:task:{}", task.id))
        .arg("status")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(status, "pending");
    let queued: Vec<String> = redis::cmd("ZRANGE")
        .arg("cb:queue:tasks:pending")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(queued, vec![task.id.to_string()]);
    let term: u64 = redis::cmd("GET")
        .arg("cb:leader:term")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(term, c.leader_view().term.0);
    let leader: String = redis::cmd("GET")
        .arg("cb:leader:current")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(leader, "w1");
    // Unregistering removes the record and the set member in the same script.
    c.unregister("w1").await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg("cb:instance:w1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!exists);
    assert_redis_equals_memory(&c, &redis).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_heartbeats_within_a_flush_interval_are_one_write() {
    let redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_millis(400)
    }))
    .await
    .unwrap();
    c.register(RegisterRequest::new("busy")).await.unwrap();
    // Let any flush of the registration settle, then count script calls.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let before = redis.calls("evalsha").await;
    let started = Instant::now();
    for _ in 0..10_000 {
        assert!(c.heartbeat_now("busy").alive);
        // Spread over a few milliseconds so last-seen really moves.
        if started.elapsed() < Duration::from_millis(5) {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the heartbeats must fit in one flush interval"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = redis.calls("evalsha").await;
    assert_eq!(after - before, 1, "one heartbeat-flush script call");
    // And it carried the latest timestamp.
    let stored: u64 = redis::cmd("HGET")
        .arg("cb:instance:busy")
        .arg("lastSeen")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let memory = c.state().instances[0].last_seen_ms;
    assert_eq!(stored, memory);
    c.shutdown().await;
}

/// Write-behind finds moved heartbeats in the list the hot path keeps, not by walking the
/// registry: over many flushes, with heartbeats landing while flushes run, every instance's
/// last heartbeat reaches Redis — an instance re-registered in a new epoch's too — and an
/// instance that left is not written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_writes_every_moved_heartbeat() {
    let redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_millis(20)
    }))
    .await
    .unwrap();
    let ids: Vec<String> = (0..3000).map(|i| format!("w{i:04}")).collect();
    for id in &ids {
        c.register(RegisterRequest::new(id.as_str())).await.unwrap();
    }
    // A changing seventh of the instances heartbeats every few ms for a second: some move
    // between two flushes, some during one, most several times.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(1) {
        for (i, id) in ids.iter().enumerate() {
            if (i + round) % 7 == 0 {
                assert!(c.heartbeat_now(id).alive);
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(c.unregister("w0000").await.unwrap().unregistered);
    let epoch = c
        .register(RegisterRequest::new("w0000"))
        .await
        .unwrap()
        .epoch;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(c.heartbeat_now("w0000").alive);
    assert!(c.unregister("w0001").await.unwrap().unregistered);
    // Quiet for several flush intervals: no flush, no call, writes what is left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let memory: BTreeMap<String, (u64, u64)> = c
        .state()
        .instances
        .iter()
        .map(|i| (i.id.to_string(), (i.epoch.0, i.last_seen_ms)))
        .collect();
    assert_eq!(memory.len(), ids.len() - 1);
    assert_eq!(memory["w0000"].0, epoch.0);
    let store = RedisStore::connect(&RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let stored: BTreeMap<String, (u64, u64)> = store
        .load(0)
        .await
        .unwrap()
        .instances
        .iter()
        .map(|r| (r.id.to_string(), (r.epoch.0, r.last_seen_ms)))
        .collect();
    let differ: Vec<_> = memory
        .iter()
        .filter(|(id, m)| stored.get(*id) != Some(m))
        .map(|(id, m)| (id, m, stored.get(id)))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} instances differ (id, memory, Redis): {:?}",
        differ.len(),
        memory.len(),
        &differ[..differ.len().min(5)]
    );
    assert_eq!(stored.len(), memory.len(), "w0001 left and stays gone");
    // And what was compared moved: every instance heartbeated after it registered.
    let state = c.state();
    let unmoved = state
        .instances
        .iter()
        .filter(|i| i.last_seen_ms <= i.registered_at_ms)
        .count();
    assert_eq!(unmoved, 0, "every instance heartbeated");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_load_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start();
    let c = Coordinator::start(Config {
        call_timeout: Duration::from_millis(500),
        store_wait: Duration::from_millis(300),
        ..config(&redis, |rc| {
            rc.flush_interval = Duration::from_millis(50);
            rc.breaker_open_for = Duration::from_millis(500);
            rc.response_timeout = Duration::from_millis(300);
        })
    })
    .await
    .unwrap();
    let load = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut acked_instances = Vec::new();
            let mut acked_tasks = Vec::new();
            let (mut refused, mut heartbeats_answered) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut i = 0;
            while Instant::now() < deadline {
                let id = format!("w{i}");
                match c.register(RegisterRequest::new(id.as_str())).await {
                    Ok(_) => acked_instances.push(id),
                    // Refused, or registered but not acknowledged: no promise either way.
                    Err(Error::StoreUnavailable(_) | Error::NotDurable(_)) => refused += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
                match c
                    .create_task(TaskSpec::new(serde_json::json!(format!("job {i}"))))
                    .await
                {
                    Ok(t) => acked_tasks.push(t.id),
                    Err(Error::StoreUnavailable(_)) => refused += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
                // Heartbeats are answered from memory whatever the store does.
                for id in acked_instances.iter().rev().take(5) {
                    assert!(c.heartbeat_now(id).alive);
                    heartbeats_answered += 1;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked_instances, acked_tasks, refused, heartbeats_answered)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_ne!(c.store_status().state, "ok", "the outage is noticed");
    redis.restart(); // empty: it kept nothing
    let (instances, tasks, refused, answered) = load.await.unwrap();
    assert!(refused > 0, "calls during the outage were refused");
    assert!(answered > 100);
    // Wait for the breaker's probe and the full rewrite.
    let started = Instant::now();
    while c.flush().await.is_err() || c.store_status().state != "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stored_instances, stored_tasks, _) = redis_view(&redis).await;
    for id in &instances {
        assert!(
            stored_instances.contains_key(id),
            "acknowledged {id} missing"
        );
    }
    for id in &tasks {
        assert!(
            stored_tasks.contains_key(&id.to_string()),
            "acknowledged {id} missing"
        );
    }
    assert_redis_equals_memory(&c, &redis).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_refuses_writes_fast_and_keeps_heartbeats() {
    let mut redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_millis(20);
        rc.breaker_failures = 3;
        rc.breaker_open_for = Duration::from_secs(1);
        rc.response_timeout = Duration::from_millis(200);
    }))
    .await
    .unwrap();
    c.register(RegisterRequest::new("w1")).await.unwrap();
    redis.stop();
    // Failures pile up at the flush interval until the circuit opens.
    let started = Instant::now();
    while c.store_status().state != "open" {
        let _ = c.create_task(TaskSpec::new(serde_json::json!("x"))).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "circuit never opened"
        );
    }
    let t = Instant::now();
    let refused = c
        .create_task(TaskSpec::new(serde_json::json!("refused")))
        .await;
    assert!(
        matches!(refused, Err(Error::StoreUnavailable(_))),
        "{refused:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "fails fast: {:?}",
        t.elapsed()
    );
    assert!(c.heartbeat_now("w1").alive);
    redis.restart();
    let started = Instant::now();
    while c.store_status().state != "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "circuit never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.create_task(TaskSpec::new(serde_json::json!("after")))
        .await
        .unwrap();
    assert_redis_equals_memory(&c, &redis).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_noscript_inside_pipelines() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    c.register(RegisterRequest::new("w1")).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let task = c
        .create_task(TaskSpec::new(serde_json::json!("after flush")))
        .await
        .unwrap();
    c.register(RegisterRequest::new("w2")).await.unwrap();
    let (instances, tasks, _) = redis_view(&redis).await;
    assert!(instances.contains_key("w2"));
    assert!(tasks.contains_key(&task.id.to_string()));
    c.shutdown().await;
}

/// Registers "keeper" (TTL 60 s) and "goner" (TTL 1 s) and creates `tasks` pending tasks.
async fn keeper_and_goner(c: &Coordinator, tasks: usize) {
    c.register(RegisterRequest::new("keeper").ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    c.register(RegisterRequest::new("goner").ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    for i in 0..tasks {
        c.create_task(TaskSpec::new(serde_json::json!(format!("t{i}"))))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_and_garbage_is_reported_not_fatal() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    keeper_and_goner(&c, 3).await;
    let kept = c.claim("keeper", 1).await.unwrap().remove(0);
    let lost = c.claim("goner", 1).await.unwrap().remove(0);
    let lease = match c
        .acquire_lease(
            "res/db",
            LeaseOwner::Instance("keeper".into()),
            Default::default(),
            None,
        )
        .await
        .unwrap()
    {
        vigil::LeaseOutcome::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    let term_before = c.leader_view().term.0;
    // Garbage beside the good records.
    let mut con = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("cb:instance:junk")
        .arg("not a hash")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("cb:task:t-77")
        .arg("id")
        .arg("t-77")
        .arg("status")
        .arg("exploded")
        .query_async(&mut con)
        .await
        .unwrap();
    // A crash: nothing written after this moment, no final flush.
    c.faults().crash().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // "goner" lapses meanwhile
    // Trusting the last flush, the lapsed instance is expired at once (the default gives it a
    // TTL from the restart: `a_restart_gives_every_listed_instance_a_full_ttl`).
    let c = Coordinator::start(config(&redis, |rc| {
        rc.restart_grace = RestartGrace::SinceLastFlush
    }))
    .await
    .unwrap();
    let report = c.recovery_report().unwrap();
    let skipped: Vec<&str> = report.skipped.iter().map(|(k, _)| k.as_str()).collect();
    assert!(skipped.contains(&"cb:instance:junk"), "{skipped:?}");
    assert!(skipped.contains(&"cb:task:t-77"), "{skipped:?}");
    assert_eq!(report.instances_restored, 1);
    assert_eq!(report.instances_expired, 1);
    assert_eq!(report.tasks_reassigned, 1);
    assert!(c.heartbeat_now("keeper").alive);
    assert!(!c.heartbeat_now("goner").alive);
    assert!(c.leader_view().term.0 > term_before, "the term goes on");
    let lost_now = c.get_task(lost.task.id).unwrap();
    assert_eq!(lost_now.status, TaskStatus::Pending);
    assert_eq!(lost_now.attempts, 1);
    // The surviving claim still holds, with its token; the lease kept its fencing token.
    let done = c
        .complete_task(kept.task.id, kept.claim_token.as_str(), None)
        .await
        .unwrap();
    assert_eq!(done.status, vigil::work::task::CompleteStatus::Completed);
    let leases = c.list_leases(Some("res")).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].fencing_token, lease.fencing_token);
    // The next fencing token is past every recovered one.
    let next = c
        .acquire_lease(
            "res/other",
            LeaseOwner::Instance("keeper".into()),
            Default::default(),
            None,
        )
        .await
        .unwrap();
    match next {
        vigil::LeaseOutcome::Granted(g) => assert!(g.fencing_token > lease.fencing_token),
        other => panic!("{other:?}"),
    }
    let _: () = redis::cmd("DEL")
        .arg("cb:instance:junk")
        .arg("cb:task:t-77")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_redis_equals_memory(&c, &redis).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_heartbeats_are_one_script_call_each() {
    let redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.persist = PersistMode::WriteThrough;
        rc.flush_interval = Duration::from_secs(5);
    }))
    .await
    .unwrap();
    c.register(RegisterRequest::new("w1")).await.unwrap();
    let before = redis.calls("evalsha").await;
    for _ in 0..50 {
        assert!(c.heartbeat("w1").await.alive);
    }
    assert_eq!(redis.calls("evalsha").await - before, 50);
    c.shutdown().await;
}

/// The real thing: `vigil serve --redis` killed with SIGKILL and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_recovers_everything_acknowledged() {
    use serde_json::{Value, json};
    use std::process::{Command, Stdio};
    let redis = RedisServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis",
                &redis.url(),
                "--flush-interval",
                "100ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vigil starts")
    };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/rpc");
    let call = |method: &'static str, params: Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
            let answer: Value = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(answer.get("error").is_none(), "{method}: {answer}");
            answer["result"].clone()
        }
    };
    let wait_up = || async {
        let started = Instant::now();
        while client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut server = spawn();
    wait_up().await;
    call(
        "system.register",
        json!({"roles": ["worker"], "id": "stays", "ttlMs": 60_000}),
    )
    .await;
    call(
        "system.register",
        json!({"roles": ["worker"], "id": "dies", "ttlMs": 1_000}),
    )
    .await;
    let mut task_ids = Vec::new();
    for i in 0..4 {
        let t = call("task.create", json!({"text": format!("job {i}")})).await;
        task_ids.push(t["id"].as_str().unwrap().to_string());
    }
    let kept = call("task.claim", json!({"workerId": "stays"})).await;
    let lost = call("task.claim", json!({"workerId": "dies"})).await;
    let lease = call(
        "lease.acquire",
        json!({"key": "db/main", "holder": "stays", "ttlSec": 600}),
    )
    .await;
    let term_before = call("system.get_state", json!({})).await["term"]
        .as_u64()
        .unwrap();
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await; // "dies" lapses while down
    let mut server = spawn();
    let restarted = Instant::now();
    wait_up().await;
    let ids = |state: &Value| -> Vec<String> {
        let mut ids: Vec<String> = state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    // The restart cannot know whether "dies" kept heartbeating after the last flush: it gets
    // one full TTL from the restart, then expires like any silent instance.
    let state = call("system.get_state", json!({})).await;
    assert_eq!(ids(&state), vec!["dies", "stays"]);
    assert!(state["term"].as_u64().unwrap() > term_before);
    loop {
        let state = call("system.get_state", json!({})).await;
        if ids(&state) == vec!["stays"] {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "\"dies\" never expired: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        restarted.elapsed() >= Duration::from_secs(1),
        "expired before a TTL from the restart"
    );
    // Every acknowledged task is there; the dead worker's went back to pending.
    for id in &task_ids {
        let t = call("task.get", json!({"taskId": id})).await;
        assert_eq!(t["id"], *id);
    }
    let lost_task = call("task.get", json!({"taskId": lost["taskId"]})).await;
    assert_eq!(lost_task["status"], "pending");
    // The surviving claim holds, fenced by its token; a stale token is refused.
    let stale = call(
        "task.complete",
        json!({"taskId": lost["taskId"], "claimToken": lost["claimToken"]}),
    )
    .await;
    assert_eq!(stale["status"], "stale_claim");
    let done = call(
        "task.complete",
        json!({"taskId": kept["taskId"], "claimToken": kept["claimToken"]}),
    )
    .await;
    assert_eq!(done["status"], "completed");
    // The lease survived with its fencing token.
    let renewed = call(
        "lease.renew",
        json!({"key": "db/main", "holder": "stays", "ttlSec": 600}),
    )
    .await;
    assert_eq!(renewed["fencingToken"], lease["fencingToken"], "{renewed}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// A heartbeat not yet flushed when the coordinator dies must not make the instance expire
/// early after recovery: even trusting the last flush, recovery assumes heartbeats up to one
/// flush interval after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_never_expires_an_instance_early() {
    let redis = RedisServer::start();
    // The guarantee of the stricter policy (the default is more generous still).
    let cfg = || {
        config(&redis, |rc| {
            rc.flush_interval = Duration::from_millis(300);
            rc.restart_grace = RestartGrace::SinceLastFlush;
        })
    };
    let c = Coordinator::start(cfg()).await.unwrap();
    let t0 = Instant::now();
    c.register(RegisterRequest::new("w").ttl(Duration::from_millis(1500)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(c.heartbeat_now("w").alive); // the real last heartbeat: t0 + 1 s
    c.faults().crash().await;
    let c = Coordinator::start(cfg()).await.unwrap();
    // Past the stored deadline (t0 + 1.5 s), before the real one (t0 + 2.5 s).
    tokio::time::sleep(
        (t0 + Duration::from_millis(1900)).saturating_duration_since(Instant::now()),
    )
    .await;
    let state = c.state();
    assert_eq!(state.instances.len(), 1, "w expired early after the crash");
    assert!(state.instances[0].status.is_alive());
    c.shutdown().await;
}

/// Over HTTP: with Redis gone and the circuit open, writes answer −32001, heartbeats still
/// answer from memory, and `system.health` says degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_an_open_circuit_is_minus_32001_and_degraded_health() {
    use serde_json::{Value, json};
    use vigil::server::{Server, ServerConfig};
    let mut redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_millis(20);
        rc.breaker_failures = 3;
        rc.breaker_open_for = Duration::from_secs(30);
        rc.response_timeout = Duration::from_millis(200);
    }))
    .await
    .unwrap();
    let server = Server::bind(
        c.clone(),
        &ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/rpc", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let rpc = |method: &'static str, params: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 7});
            client
                .post(&url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        rpc("system.register", json!({"roles": ["worker"], "id": "w1"})).await["result"]["registered"],
        true
    );
    let health = rpc("system.health", json!({})).await;
    assert_eq!(health["result"]["status"], "healthy", "{health}");
    // ClaudeBench's `services.redis`: a Redis store, answering.
    assert_eq!(health["result"]["services"]["redis"], true, "{health}");
    assert_eq!(health["result"]["services"]["postgres"], false, "{health}");
    redis.stop();
    let started = Instant::now();
    while c.store_status().state != "open" {
        let _ = rpc("task.create", json!({"text": "x"})).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "circuit never opened"
        );
    }
    let refused = rpc("task.create", json!({"text": "refused"})).await;
    assert_eq!(refused["error"]["code"], -32001, "{refused}");
    assert_eq!(refused["id"], 7);
    let beat = rpc("system.heartbeat", json!({"instanceId": "w1"})).await;
    assert_eq!(beat["result"]["alive"], true);
    let health = rpc("system.health", json!({})).await;
    assert_eq!(health["result"]["status"], "degraded", "{health}");
    assert_eq!(health["result"]["services"]["storeState"], "open");
    assert_eq!(health["result"]["services"]["redis"], false, "{health}");
    let _ = stop.send(());
    c.shutdown().await;
}

/// A graceful stop writes what was still waiting: the last heartbeat timestamps reach Redis
/// even when the flush interval has not come round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_pending_heartbeats() {
    let redis = RedisServer::start();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_secs(60)
    }))
    .await
    .unwrap();
    c.register(RegisterRequest::new("w1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(c.heartbeat_now("w1").alive);
    let memory = c.state().instances[0].last_seen_ms;
    let stored = || async {
        redis::cmd("HGET")
            .arg("cb:instance:w1")
            .arg("lastSeen")
            .query_async::<u64>(&mut redis.connection().await)
            .await
            .unwrap()
    };
    assert!(stored().await < memory, "not written before the stop");
    c.shutdown().await;
    assert_eq!(stored().await, memory);
}

/// `vigil load --compare` of the two persist modes, each an embedded coordinator on the same
/// Redis under its own prefix: write-through must cost one script per heartbeat, so it is
/// the slower side at saturation, and each side's keys land under its own prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_compares_write_behind_with_write_through() {
    let redis = RedisServer::start();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["load", "--transport", "inproc", "--redis", &redis.url()])
        .args([
            "--compare",
            "write-through",
            "--rate",
            "max",
            "--concurrency",
            "8",
        ])
        .args([
            "--workers",
            "20",
            "--duration",
            "1s",
            "--rounds",
            "2",
            "--json",
        ])
        .args(["--store-prefix", "cmp:", "--keep"]) // kept, to be counted below
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["a_label"], "write-behind");
    assert_eq!(c["b_label"], "write-through");
    for side in ["a", "b"] {
        assert!(c[side]["heartbeats"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c[side]["errors"], serde_json::json!({}), "{side}: {c}");
    }
    let ratio = c["ratios"]["achieved rate /s"].as_f64().unwrap();
    assert!(
        ratio < 1.0,
        "write-through is not faster than write-behind: {ratio}"
    );
    let mut conn = redis.connection().await;
    for prefix in ["cmp:a:", "cmp:b:"] {
        let live: u64 = redis::cmd("SCARD")
            .arg(format!("{prefix}instances:active"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(live, 20, "{prefix}");
    }
}

/// An election is written behind, so a crash right after one can lose its term. Recovery must
/// still never hand that term out again (found by the chaos suite's invariant "one leader per
/// term": a term announced in heartbeat answers, lost, and reissued to another leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_lost_in_a_crash_is_never_reissued() {
    let redis = RedisServer::start();
    let slow = || {
        config(&redis, |rc| rc.flush_interval = Duration::from_secs(30)) // no flush by itself
    };
    let c = Coordinator::start(slow()).await.unwrap();
    c.register(RegisterRequest::new("first").ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    c.register(RegisterRequest::new("second").ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let stored_term = c.leader_view().term.0;
    // "first" leads and expires; "second" is elected in a new term, announced at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let announced = loop {
        let beat = c.heartbeat("second").await;
        if beat.is_leader {
            break beat.term.0;
        }
        assert!(Instant::now() < deadline, "no election");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(announced > stored_term);
    c.faults().crash().await; // the Persister dies first: the new term never reaches Redis
    let c = Coordinator::start(slow()).await.unwrap();
    assert_eq!(
        c.recovery_report().unwrap().term,
        stored_term,
        "the election was lost"
    );
    // "first" gets a TTL from the restart (it may have heartbeated after the last flush) and
    // leads again until it expires; then "second". Every term from now on is past the lost one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let beat = c.heartbeat("second").await;
        assert!(
            beat.term.0 > announced,
            "term {} after recovery, {announced} was announced before the crash",
            beat.term.0
        );
        if beat.is_leader {
            break;
        }
        assert!(Instant::now() < deadline, "second never led again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

/// By default a restart cannot tell a worker that died just before the crash from one that
/// kept heartbeating after the last flush: every instance the store lists gets a full TTL from
/// the restart, and the silent one expires then, its task going back to pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_gives_every_listed_instance_a_full_ttl() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    keeper_and_goner(&c, 1).await;
    let lost = c.claim("goner", 1).await.unwrap().remove(0);
    c.faults().crash().await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // past goner's stored deadline
    let restarting = Instant::now();
    let c = start(&redis).await;
    let report = c.recovery_report().unwrap();
    assert_eq!(report.instances_restored, 2, "{report:?}");
    assert_eq!(report.instances_renewed, 1, "{report:?}");
    assert_eq!(report.instances_expired, 0, "{report:?}");
    assert_eq!(report.tasks_reassigned, 0, "{report:?}");
    let held = c.get_task(lost.task.id).unwrap();
    assert_eq!(held.status, TaskStatus::Claimed, "held until goner expires");
    // goner stays silent: it expires one TTL after the restart, not before.
    loop {
        let state = c.state();
        if !state.instances.iter().any(|i| i.id.as_str() == "goner") {
            break;
        }
        assert!(
            restarting.elapsed() < Duration::from_secs(5),
            "goner never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        restarting.elapsed() >= Duration::from_secs(1),
        "goner expired {:?} after the restart, before its TTL",
        restarting.elapsed()
    );
    assert!(c.heartbeat_now("keeper").alive);
    assert!(!c.heartbeat_now("goner").alive);
    let back = c.get_task(lost.task.id).unwrap();
    assert_eq!(back.status, TaskStatus::Pending);
    assert_eq!(back.attempts, 1);
    assert_redis_equals_memory(&c, &redis).await;
    c.shutdown().await;
}

/// Live workers at a crash after a Redis outage longer than their TTL, while the circuit is
/// still open (no heartbeat written since the outage began), under `grace`: how many of the
/// five are alive right after the restart, and whether the claim of one of them still holds.
async fn outage_then_crash(grace: RestartGrace) -> (usize, bool) {
    let mut redis = RedisServer::start_durable();
    let config = config(&redis, |_| {});
    let cfg = || Config {
        call_timeout: Duration::from_millis(500),
        store_wait: Duration::from_millis(300),
        ..with_redis(&config, |rc| {
            rc.flush_interval = Duration::from_millis(50);
            rc.response_timeout = Duration::from_millis(200);
            rc.breaker_failures = 3;
            rc.breaker_open_for = Duration::from_secs(10);
            rc.restart_grace = grace;
        })
    };
    let c = Coordinator::start(cfg()).await.unwrap();
    let ids: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    for id in &ids {
        c.register(RegisterRequest::new(id.as_str()).ttl(Duration::from_secs(1)))
            .await
            .unwrap();
    }
    c.create_task(TaskSpec::new(serde_json::json!("job")))
        .await
        .unwrap();
    let claim = c.claim("w0", 1).await.unwrap().remove(0);
    c.flush().await.unwrap();
    // Workers heartbeat every 100 ms throughout; memory answers them while Redis is away.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = {
        let (c, ids, stop) = (c.clone(), ids.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for id in &ids {
                    assert!(c.heartbeat_now(id).alive, "{id} expired during the outage");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    redis.stop();
    tokio::time::sleep(Duration::from_millis(2000)).await; // twice the TTL
    redis.restart(); // with its data
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.store_status().state,
        "open",
        "the crash must come while the circuit still keeps writes off"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beating.await.unwrap();
    c.faults().crash().await; // within 100 ms of every worker's last heartbeat
    let c = Coordinator::start(cfg()).await.unwrap();
    let alive = ids.iter().filter(|id| c.heartbeat_now(id).alive).count();
    let holds = c
        .complete_task(claim.task.id, claim.claim_token.as_str(), None)
        .await
        .is_ok_and(|done| done.status == vigil::work::task::CompleteStatus::Completed);
    c.shutdown().await;
    (alive, holds)
}

/// The sequence the 3-minute chaos soak found: Redis away for longer than the TTL, back, the
/// coordinator SIGKILLed before its circuit lets writes through again. By default every worker
/// that kept heartbeating is still alive after the restart and its claim holds; trusting the
/// last flush expires all of them (the trade-off that policy documents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_longer_than_the_ttl_then_a_crash_expires_no_live_worker() {
    assert_eq!(outage_then_crash(RestartGrace::FullTtl).await, (5, true));
    assert_eq!(
        outage_then_crash(RestartGrace::SinceLastFlush).await,
        (0, false)
    );
}

/// A lease held by a claim survives a restart with its claim: the store keeps the claim's token
/// (in the grant record, never in a view), so the claimer's step heartbeats still extend it and
/// nobody else can take the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_lease_survives_a_restart_with_its_token() {
    use vigil::work::lease::LeaseMode;
    use vigil::work::task::StepStatus;
    let redis = RedisServer::start();
    let c = start(&redis).await;
    c.register(RegisterRequest::new("w1").ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    c.create_task(TaskSpec::new(serde_json::json!("build")).lock("repo/src", LeaseMode::Exclusive))
        .await
        .unwrap();
    let claim = c.claim("w1", 1).await.unwrap().remove(0);
    let fence = claim.leases[0].fencing_token;
    // What Redis holds names the claim's token outside the holder object.
    let mut con = redis.connection().await;
    let grants: String = redis::cmd("HGET")
        .arg("cb:lease:repo/src")
        .arg("grants")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(grants.contains(claim.claim_token.as_str()), "{grants}");
    c.shutdown().await;
    let c = start(&redis).await;
    let beat = c
        .task_heartbeat(
            claim.task.id,
            claim.claim_token.as_str(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(beat.status, StepStatus::Ok);
    assert!(beat.lost_leases.is_empty(), "{beat:?}");
    let leases = c.list_leases(Some("repo")).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].fencing_token, fence);
    c.register(RegisterRequest::new("w2")).await.unwrap();
    assert!(matches!(
        c.acquire_lease(
            "repo/src",
            LeaseOwner::Instance("w2".into()),
            Default::default(),
            None
        )
        .await
        .unwrap(),
        vigil::LeaseOutcome::Conflict(_)
    ));
    c.shutdown().await;
}

/// Finished tasks evicted by the retention limit are deleted from the store too, so Redis does
/// not grow without bound and a restart reads back what memory holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_evicted_by_retention_leave_the_store() {
    let redis = RedisServer::start();
    let config = Config {
        finished_task_retention: 2,
        ..config(&redis, |_| {})
    };
    let c = Coordinator::start(config.clone()).await.unwrap();
    c.register(RegisterRequest::new("w1").ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    for i in 0..5 {
        c.create_task(TaskSpec::new(serde_json::json!(i)))
            .await
            .unwrap();
        let claim = c.claim("w1", 1).await.unwrap().remove(0);
        c.complete_task(claim.task.id, claim.claim_token.as_str(), None)
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    let (_, tasks, _) = redis_view(&redis).await;
    assert_eq!(
        tasks.keys().cloned().collect::<Vec<_>>(),
        ["t-4", "t-5"],
        "only the retained finished tasks are stored"
    );
    assert!(c.verify_store().await.unwrap().differences.is_empty());
    c.shutdown().await;
    let c = Coordinator::start(config).await.unwrap();
    assert_eq!(c.recovery_report().unwrap().tasks, 2);
    c.shutdown().await;
}

/// An instance stays bound to the principal that registered it across a restart: the store
/// keeps the binding, and another worker principal is still refused after recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instances_principal_survives_a_restart() {
    use vigil::rpc::{Dispatcher, Principal, RpcLimits};
    let redis = RedisServer::start();
    let call = |d: &Dispatcher, method: &str, params: serde_json::Value| {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        let d = d.clone();
        async move { d.handle_value(body).await.unwrap() }
    };
    let c = start(&redis).await;
    let alice =
        Dispatcher::new(c.clone(), RpcLimits::default()).for_principal(Principal::worker("alice"));
    let reg = call(
        &alice,
        "system.register",
        serde_json::json!({"id": "w1", "roles": ["worker"], "ttlMs": 60_000}),
    )
    .await;
    assert_eq!(reg["result"]["registered"], true, "{reg}");
    c.shutdown().await;
    let mut con = redis.connection().await;
    let owner: String = redis::cmd("HGET")
        .arg("cb:instance:w1")
        .arg("owner")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(owner, "alice");

    let c = start(&redis).await;
    let bob =
        Dispatcher::new(c.clone(), RpcLimits::default()).for_principal(Principal::worker("bob"));
    let refused = call(
        &bob,
        "system.unregister",
        serde_json::json!({"instanceId": "w1"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
    let alice = bob.for_principal(Principal::worker("alice"));
    let beat = call(
        &alice,
        "system.heartbeat",
        serde_json::json!({"instanceId": "w1"}),
    )
    .await;
    assert_eq!(beat["result"]["alive"], true, "{beat}");
    c.shutdown().await;
}

/// JSON-RPC over HTTP to one server, with the time each call took.
struct Rpc {
    client: reqwest::Client,
    url: String,
}

impl Rpc {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{base}/rpc"),
        }
    }

    async fn call(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.timed(method, params).await.0
    }

    async fn timed(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> (serde_json::Value, Duration) {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        let sent = Instant::now();
        let answer = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        (answer, sent.elapsed())
    }
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL: connections refused.
    Killed,
    /// SIGSTOP: connections open, nothing answered.
    Frozen,
}

/// A store that stops answering, over the real HTTP server: each write-through call answers
/// within the store wait — before the call timeout, never −32007 — with what happened:
/// `system.register` −32006 (`applied: true`: registered, not yet durable), `task.create` and
/// `task.claim` −32001 (`applied: false`: undone, nothing changed). When the store is back, a
/// create retried with its request id is made once, the task is claimable, and the store
/// equals memory.
async fn an_outage_over_http(outage: Outage) {
    use serde_json::json;
    let mut redis = RedisServer::start();
    let call_timeout = Duration::from_millis(1500);
    let store_wait = Duration::from_millis(600);
    let (url, c, stop) = crate::common::serve(
        Config {
            call_timeout,
            store_wait,
            ..config(&redis, |rc| {
                rc.flush_interval = Duration::from_millis(50);
                rc.response_timeout = Duration::from_millis(200);
                // The circuit stays closed: under test is a call waiting on a store that does
                // not answer, not the fast refusal of an open circuit (tested above).
                rc.breaker_failures = 100_000;
            })
        },
        vigil::server::ServerConfig {
            // With the frozen store, a server timeout set below the store wait: the dispatcher
            // raises it to the coordinator's call timeout, so it still never fires first.
            call_timeout: match outage {
                Outage::Killed => call_timeout,
                Outage::Frozen => Duration::from_millis(200),
            },
            ..vigil::server::ServerConfig::default()
        },
    )
    .await;
    let rpc = Rpc::new(&url);
    assert_eq!(
        rpc.call("system.register", json!({"roles": ["worker"], "id": "w1"}))
            .await["result"]["registered"],
        true
    );
    let created = rpc
        .call(
            "task.create",
            json!({"text": "first", "requiresLocks": ["repo/src"]}),
        )
        .await;
    let t1 = created["result"]["id"].clone();
    assert!(t1.is_string(), "{created}");

    match outage {
        Outage::Killed => redis.stop(),
        Outage::Frozen => redis.pause(),
    }
    let quick = |took: Duration, what: &str| {
        assert!(
            took >= store_wait && took < call_timeout,
            "{outage:?}: {what} answered after {took:?} (store wait {store_wait:?}, call timeout {call_timeout:?})"
        );
    };
    // Registered, not yet durable.
    let (answer, took) = rpc
        .timed("system.register", json!({"roles": ["worker"], "id": "w2"}))
        .await;
    assert_eq!(answer["error"]["code"], -32006, "{outage:?}: {answer}");
    assert_eq!(answer["error"]["data"]["applied"], true, "{answer}");
    quick(took, "system.register");
    let beat = rpc
        .call("system.heartbeat", json!({"instanceId": "w2"}))
        .await;
    assert_eq!(
        beat["result"]["alive"], true,
        "the registration stands: {beat}"
    );
    // Not created.
    let (answer, took) = rpc
        .timed(
            "task.create",
            json!({"text": "during", "requestId": "req-1"}),
        )
        .await;
    assert_eq!(answer["error"]["code"], -32001, "{outage:?}: {answer}");
    assert_eq!(answer["error"]["data"]["applied"], false, "{answer}");
    quick(took, "task.create");
    let listed = rpc.call("task.list", json!({})).await;
    assert_eq!(
        listed["result"]["tasks"].as_array().unwrap().len(),
        1,
        "only the first task exists: {listed}"
    );
    // Not claimed: the task is pending as before, its lock free.
    let (answer, took) = rpc.timed("task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(answer["error"]["code"], -32001, "{outage:?}: {answer}");
    assert_eq!(answer["error"]["data"]["applied"], false, "{answer}");
    quick(took, "task.claim");
    let task = rpc.call("task.get", json!({"taskId": t1})).await;
    assert_eq!(task["result"]["status"], "pending", "{task}");
    assert_eq!(task["result"]["attempts"], 0, "{task}");
    assert_eq!(
        task["result"]["assignee"],
        serde_json::Value::Null,
        "{task}"
    );
    let leases = rpc.call("lease.list", json!({})).await;
    assert_eq!(leases["result"]["leases"], json!([]), "{leases}");

    match outage {
        Outage::Killed => redis.restart(), // empty
        Outage::Frozen => redis.resume(),  // goes on with what it was sent meanwhile
    }
    let started = Instant::now();
    while c.flush().await.is_err() || c.store_status().state != "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{outage:?}: the store did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The retried create is made once.
    let first = rpc
        .call(
            "task.create",
            json!({"text": "during", "requestId": "req-1"}),
        )
        .await;
    let again = rpc
        .call(
            "task.create",
            json!({"text": "during", "requestId": "req-1"}),
        )
        .await;
    assert!(first["result"]["id"].is_string(), "{first}");
    assert_eq!(again["result"]["id"], first["result"]["id"], "{again}");
    assert_eq!(again["result"]["requestId"], "req-1", "{again}");
    // The first task can be claimed, with its lock.
    let claimed = rpc.call("task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(claimed["result"]["taskId"], t1, "{claimed}");
    assert_eq!(
        claimed["result"]["leases"][0]["key"], "repo/src",
        "{claimed}"
    );
    let check = c.verify_store().await.unwrap();
    assert!(
        check.differences.is_empty(),
        "{outage:?}: {:?}",
        check.differences
    );
    assert_eq!((check.instances, check.tasks, check.leases), (2, 2, 1));
    assert_redis_equals_memory(&c, &redis).await;
    let _ = stop.send(());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_killed_store_answers_what_changed_before_the_call_timeout() {
    an_outage_over_http(Outage::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_frozen_store_answers_what_changed_before_the_call_timeout() {
    an_outage_over_http(Outage::Frozen).await;
}

/// 50 000 tasks, a Redis that fails and comes back empty: the Persister rewrites everything,
/// in parts of at most `FLUSH_PART` entities, each read under its own hold of the work lock —
/// so a caller (here `get_task`, which takes that lock) never waits long — and the store
/// equals memory afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rewrite_of_50k_tasks_holds_the_work_lock_briefly() {
    use vigil::store::{FLUSH_PART, WriteBatch};
    use vigil::work::records::TaskRecord;
    use vigil::work::task::TaskId;
    const TASKS: u64 = 50_000;
    let mut redis = RedisServer::start();
    // Straight into the store, then a coordinator that recovers them.
    let store = RedisStore::connect(&RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let tasks = (1..=TASKS)
        .map(|i| TaskRecord {
            id: TaskId(i),
            seq: i,
            status: TaskStatus::Pending,
            priority: 50,
            payload: serde_json::json!({"n": i, "text": "x".repeat(200)}),
            attempts: 0,
            max_attempts: 3,
            locks: Vec::new(),
            role: None,
            assignee: None,
            claim_token: None,
            created_at_ms: now,
            updated_at_ms: None,
            reserved_for: None,
            finished_by: None,
            claimed_at_ms: None,
            heartbeat_at_ms: None,
            finished_at_ms: None,
            result: None,
            error: None,
            request_id: None,
            request_owner: None,
        })
        .collect();
    store
        .apply(&WriteBatch {
            tasks,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let c = Coordinator::start(config(&redis, |rc| {
        rc.flush_interval = Duration::from_millis(100);
        rc.response_timeout = Duration::from_millis(500);
        rc.breaker_failures = 100_000;
    }))
    .await
    .unwrap();
    assert_eq!(c.recovery_report().unwrap().tasks, TASKS as usize);
    redis.stop();
    let started = Instant::now();
    while c.store_status().state == "ok" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no failure seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile a caller on a thread of its own measures how long it waits for the work lock.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                assert!(c.get_task(TaskId(1)).is_some());
                worst = worst.max(asked.elapsed());
                std::thread::sleep(Duration::from_micros(200));
            }
            worst
        })
    };
    redis.restart(); // empty
    let started = Instant::now();
    loop {
        let view = c.faults().inspect_persister().await.unwrap();
        if view.resyncs > 0 && c.store_status().state == "ok" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rewrite did not finish: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rewrite = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst_wait = probe.join().unwrap();
    let view = c.faults().inspect_persister().await.unwrap();
    eprintln!(
        "rewrite of {TASKS} tasks: {rewrite:?}, {} parts, largest {} entities, longest work-lock \
         hold {:?}, worst get_task wait {worst_wait:?}",
        view.parts, view.largest_part, view.longest_lock_hold
    );
    assert!(view.largest_part <= FLUSH_PART, "{view:?}");
    assert!(view.parts >= TASKS / FLUSH_PART as u64, "{view:?}");
    assert!(
        view.longest_lock_hold < Duration::from_millis(100),
        "the work lock was held for {:?}",
        view.longest_lock_hold
    );
    let check = c.verify_store().await.unwrap();
    assert_eq!(check.tasks, TASKS as usize);
    assert!(check.differences.is_empty(), "{:?}", check.differences);
    c.shutdown().await;
}

/// Registers w1, w2, w3 and unregisters w3, so its epoch (3) is in `meta:counters` only;
/// acquires a lease (fencing token 1) and releases it, so the token is in the counters only.
async fn counters_only_the_store_remembers(c: &Coordinator) {
    for id in ["w1", "w2", "w3"] {
        c.register(RegisterRequest::new(id)).await.unwrap();
    }
    assert!(c.unregister("w3").await.unwrap().unregistered);
    let grant = match c
        .acquire_lease(
            "res/x",
            LeaseOwner::Instance("w1".into()),
            Default::default(),
            None,
        )
        .await
        .unwrap()
    {
        vigil::LeaseOutcome::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(grant.fencing_token, 1);
    assert!(
        c.release_lease("res/x", LeaseOwner::Instance("w1".into()))
            .await
            .unwrap()
    );
}

/// The error `Coordinator::start` fails with (a start that succeeds is shut down and fails the
/// test).
async fn refused(config: Config) -> Error {
    match Coordinator::start(config).await {
        Ok(c) => {
            c.shutdown().await;
            panic!("the coordinator started")
        }
        Err(e) => e,
    }
}

/// Issue 14, point 4. A read error during recovery — here `meta:counters` holding the wrong
/// Redis type, then a counter that does not parse, then a term that does not parse — fails the
/// start with an error naming the key, instead of taking it for "no counters" and handing out
/// epochs and fencing tokens again. Nothing is reset; once the key is readable, the start
/// continues past every counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_counter_or_term_fails_the_start_and_resets_nothing() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    counters_only_the_store_remembers(&c).await;
    c.shutdown().await;
    let mut con = redis.connection().await;
    let saved: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("cb:meta:counters")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        saved.iter().any(|(k, v)| k == "lastEpoch" && v == "3"),
        "{saved:?}"
    );
    let restore_counters = |mut con: redis::aio::MultiplexedConnection| {
        let saved = saved.clone();
        async move {
            let _: () = redis::cmd("DEL")
                .arg("cb:meta:counters")
                .query_async(&mut con)
                .await
                .unwrap();
            let mut cmd = redis::cmd("HSET");
            cmd.arg("cb:meta:counters");
            for (k, v) in &saved {
                cmd.arg(k).arg(v);
            }
            let _: () = cmd.query_async(&mut con).await.unwrap();
        }
    };
    // 1. The wrong type.
    let _: () = redis::cmd("DEL")
        .arg("cb:meta:counters")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("cb:meta:counters")
        .arg("not a hash")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = refused(config(&redis, |_| {})).await;
    let text = err.to_string();
    assert!(matches!(err, Error::StoreUnavailable(_)), "{err:?}");
    assert!(text.contains("cb:meta:counters"), "{text}");
    assert!(text.contains("does not start"), "{text}");
    let kept: String = redis::cmd("GET")
        .arg("cb:meta:counters")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(kept, "not a hash", "the failed start wrote nothing over it");
    // 2. A counter that does not parse.
    restore_counters(con.clone()).await;
    let _: () = redis::cmd("HSET")
        .arg("cb:meta:counters")
        .arg("lastEpoch")
        .arg("three")
        .query_async(&mut con)
        .await
        .unwrap();
    let text = refused(config(&redis, |_| {})).await.to_string();
    assert!(
        text.contains("lastEpoch") && text.contains("three"),
        "{text}"
    );
    // 3. A term that does not parse.
    restore_counters(con.clone()).await;
    let term: String = redis::cmd("GET")
        .arg("cb:leader:term")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("cb:leader:term")
        .arg("7th")
        .query_async(&mut con)
        .await
        .unwrap();
    let text = refused(config(&redis, |_| {})).await.to_string();
    assert!(
        text.contains("cb:leader:term") && text.contains("7th"),
        "{text}"
    );
    // Readable again: epochs and fencing tokens go on past the ones only the counters knew.
    let _: () = redis::cmd("SET")
        .arg("cb:leader:term")
        .arg(&term)
        .query_async(&mut con)
        .await
        .unwrap();
    let c = start(&redis).await;
    let w4 = c.register(RegisterRequest::new("w4")).await.unwrap();
    assert!(w4.epoch.0 > 3, "epoch {} handed out again", w4.epoch.0);
    match c
        .acquire_lease(
            "res/y",
            LeaseOwner::Instance("w4".into()),
            Default::default(),
            None,
        )
        .await
        .unwrap()
    {
        vigil::LeaseOutcome::Granted(g) => assert!(g.fencing_token > 1, "{g:?}"),
        other => panic!("{other:?}"),
    }
    c.shutdown().await;
}

/// Issue 14, point 4: a malformed record is not silently dropped. An instance record that does
/// not parse (its id listed in `instances:active`) and an event entry that does not parse are
/// listed in the recovery report and left in the store exactly as they were — the instance is
/// not taken for lapsed and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_reported_and_left_in_the_store() {
    let redis = RedisServer::start();
    let c = start(&redis).await;
    c.register(RegisterRequest::new("good")).await.unwrap();
    c.shutdown().await;
    let mut con = redis.connection().await;
    let _: () = redis::cmd("HSET")
        .arg("cb:instance:bad")
        .arg("id")
        .arg("bad")
        .arg("epoch")
        .arg("not a number")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("cb:instances:active")
        .arg("bad")
        .query_async(&mut con)
        .await
        .unwrap();
    let entry: String = redis::cmd("XADD")
        .arg("cb:stream:events")
        .arg("*")
        .arg("type")
        .arg("instance.registered")
        .arg("data")
        .arg("{truncated")
        .query_async(&mut con)
        .await
        .unwrap();
    let c = start(&redis).await;
    let report = c.recovery_report().unwrap();
    let skipped: BTreeMap<&str, &str> = report
        .skipped
        .iter()
        .map(|(k, why)| (k.as_str(), why.as_str()))
        .collect();
    assert!(skipped["cb:instance:bad"].contains("epoch"), "{skipped:?}");
    assert!(
        skipped.contains_key(format!("cb:stream:events {entry}").as_str()),
        "{skipped:?}"
    );
    assert_eq!(report.instances_restored, 1);
    assert_eq!(
        report.instances_expired, 0,
        "the unreadable one is not lapsed"
    );
    c.flush().await.unwrap();
    let epoch: String = redis::cmd("HGET")
        .arg("cb:instance:bad")
        .arg("epoch")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(epoch, "not a number", "left as it was");
    let listed: bool = redis::cmd("SISMEMBER")
        .arg("cb:instances:active")
        .arg("bad")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(listed);
    c.shutdown().await;
}

/// Issue 14, point 5. Redis stops taking writes (`CLIENT PAUSE WRITE`: flushes hang, nothing
/// fails fast) while the leader leaves again and again — up to 1100 elections, more than the
/// gap of 1000 a restart used to leave above the stored term — and then the coordinator
/// crashes. Terms are reserved in the store before they are used, so elections stop at the
/// reserved ceiling while the store cannot take the next reservation, and every term after
/// the recovery lies above every term handed out before, none of which was flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_every_term_is_above_every_term_handed_out_before() {
    const WORKERS: usize = 1100;
    let redis = RedisServer::start();
    let cfg = Config {
        event_capacity: 8 * WORKERS,
        call_timeout: Duration::from_millis(300),
        store_wait: Duration::from_millis(200),
        ..config(&redis, |rc| rc.flush_interval = Duration::from_secs(600))
    };
    let c = Coordinator::start(cfg.clone()).await.unwrap();
    for i in 0..WORKERS {
        c.register(RegisterRequest::new(format!("w{i:04}")))
            .await
            .unwrap();
    }
    let stored_term = c.leader_view().term.0;
    let mut con = redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query_async(&mut con)
        .await
        .unwrap();
    // The leader unregisters; as soon as the next one is elected, it unregisters too. Each
    // call waits for a flush that cannot happen (and fails after the call timeout), but its
    // change — and the election — happened in memory at once.
    let mut events = c.subscribe();
    let mut announced = stored_term;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let Some(leader) = c.leader_view().leader else {
            break;
        };
        let caller = c.clone();
        calls.spawn(async move { caller.unregister(leader.as_str()).await });
        let changed = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match events.recv().await {
                    Ok(e)
                        if matches!(
                            e.kind,
                            vigil::EventKind::LeaderElected | vigil::EventKind::LeaderVacant
                        ) =>
                    {
                        break e.term.0;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("event stream: {e}"),
                }
            }
        })
        .await;
        match changed {
            Ok(term) => announced = announced.max(term),
            Err(_) => break, // no election: no reserved term left
        }
    }
    eprintln!(
        "{} terms handed out after the last flush",
        announced - stored_term
    );
    c.faults().crash().await; // the Persister dies first
    while let Some(call) = calls.join_next().await {
        let _ = call.unwrap(); // each failed after the call timeout, or succeeded before
    }
    drop(c); // its connection closes: its blocked writes never run
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut con)
        .await
        .unwrap();
    let in_store: u64 = redis::cmd("GET")
        .arg("cb:leader:term")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        in_store, stored_term,
        "no election after the pause was flushed"
    );
    let c = Coordinator::start(cfg).await.unwrap();
    let report = c.recovery_report().unwrap();
    assert_eq!(report.term, stored_term);
    assert!(
        report.term_resumed > announced,
        "resumed at {}, {announced} was handed out before the crash",
        report.term_resumed
    );
    let view = c.leader_view();
    assert!(view.term.0 > announced, "{view:?} vs {announced}");
    let fresh = c.register(RegisterRequest::new("fresh")).await.unwrap();
    assert!(fresh.term.0 > announced, "{fresh:?} vs {announced}");
    c.shutdown().await;
}
