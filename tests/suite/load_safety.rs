//! `vigil load` aimed at a server with other people's work on it (issue 18, point 9): it marks
//! what it makes as its own, claims only its own tasks, refuses `--tasks` beside foreign work
//! unless forced, and leaves nothing behind — in the server or in Redis — unless `--keep`.
//! Tasks that require a role, over the wire and through a restart from Redis.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::redis_server::RedisServer;
use serde_json::{Value, json};
use vigil::load::{LoadConfig, Rate};
use vigil::server::ServerConfig;
use vigil::store::{RedisConfig, StoreConfig};
use vigil::work::task::{TaskId, TaskQuery, TaskSpec, TaskStatus};
use vigil::{Config, RegisterRequest};

fn redis_config(redis: &RedisServer) -> Config {
    let mut rc = RedisConfig::new(redis.url());
    rc.flush_interval = Duration::from_millis(50);
    Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    }
}

/// A short task-mix run against `url` as run `run_id`.
fn load(url: &str, run_id: &str, force: bool, keep: bool) -> LoadConfig {
    LoadConfig {
        workers: 6,
        run_id: run_id.into(),
        rate: Rate::PerSecond(50.0),
        duration: Duration::from_millis(1500),
        tasks: Some(20.0),
        force,
        keep,
        concurrency: 16,
        ..LoadConfig::new(crate::common::http(url, 1))
    }
}

/// Every key under `cb:` in `redis`, sorted.
async fn keys(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("cb:*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// The members of every sorted set and set under `cb:` (the pending order, the indexes).
async fn index_members(redis: &RedisServer) -> BTreeSet<String> {
    let mut con = redis.connection().await;
    let mut members = BTreeSet::new();
    for key in keys(redis).await {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        let found: Vec<String> = match kind.as_str() {
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap(),
            _ => Vec::new(),
        };
        members.extend(found);
    }
    members
}

/// A user's pending task survives `vigil load --tasks --force` untouched — never claimed, no
/// event about it, its attempts and update time as they were — while the run does its whole
/// task mix with its own tasks; afterwards none of the run's workers or tasks is left in the
/// server, nor any key or index entry of them in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_run_leaves_a_users_task_alone_and_nothing_of_its_own_behind() {
    let redis = RedisServer::start();
    let (url, coordinator, stop) =
        crate::common::serve(redis_config(&redis), ServerConfig::default()).await;
    // A user's worker and task (the worker could claim it, and does not during the run).
    coordinator
        .register(RegisterRequest::new("user-worker").roles(["worker"]))
        .await
        .unwrap();
    let user_task = coordinator
        .create_task(TaskSpec::new(json!({"text": "the user's"})).priority(100))
        .await
        .unwrap();
    // Everything said about the user's task while the run goes on, until told to stop.
    let mut events = coordinator.subscribe();
    let watched = user_task.id;
    let (stop_watching, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let (mut about, mut lagged) = (Vec::new(), 0u64);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) if e.task_id == Some(watched) => about.push(e),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => lagged += n,
                    Err(RecvError::Closed) => break,
                },
                _ = &mut stopped => {
                    // What is already sent, then done.
                    loop {
                        match events.try_recv() {
                            Ok(e) if e.task_id == Some(watched) => about.push(e),
                            Ok(_) => {}
                            Err(TryRecvError::Lagged(n)) => lagged += n,
                            Err(_) => break,
                        }
                    }
                    break;
                }
            }
        }
        (about, lagged)
    });
    let report = vigil::load::run(load(&url, "forced", true, false))
        .await
        .unwrap();
    let tasks = report.tasks.clone().unwrap();
    assert_eq!(tasks.flows, 30, "1.5 s at 20 flows/s");
    assert_eq!(tasks.claimed, tasks.created, "{tasks:?}");
    assert_eq!(tasks.completed, tasks.claimed, "{tasks:?}");
    let cleanup = report.cleanup.clone().unwrap();
    assert_eq!(cleanup.run, "vigil-load-forced");
    assert_eq!(
        (
            cleanup.workers_unregistered,
            cleanup.tasks_deleted,
            cleanup.failures
        ),
        (6, 30, 0),
        "{cleanup:?}"
    );
    assert!(report.table().contains("cleaned up run vigil-load-forced"));
    // The user's task: as it was.
    let now = coordinator.get_task(user_task.id).unwrap();
    assert_eq!(now.status, TaskStatus::Pending);
    assert_eq!(now.attempts, 0);
    assert_eq!(now.assigned_to, None);
    assert_eq!(now.updated_at_ms, user_task.updated_at_ms, "never changed");
    assert_eq!(now.claimed_at_ms, None);
    // Nothing of the run in the server: only the user's worker and task.
    assert_eq!(coordinator.instance_count(), 1);
    let all = coordinator.list_tasks(&TaskQuery::default());
    assert_eq!(all.iter().map(|t| t.id).collect::<Vec<_>>(), [user_task.id]);
    // Nor in Redis, once flushed.
    coordinator.flush().await.unwrap();
    let stored = keys(&redis).await;
    let task_keys: Vec<&String> = stored
        .iter()
        .filter(|k| k.starts_with("cb:task:"))
        .collect();
    assert_eq!(
        task_keys,
        [&format!("cb:task:{}", user_task.id)],
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|k| k.contains("vigil-load")),
        "{stored:?}"
    );
    let members = index_members(&redis).await;
    assert!(
        !members.iter().any(|m| m.contains("vigil-load")),
        "{members:?}"
    );
    for m in &members {
        if let Ok(id) = m.parse::<TaskId>() {
            assert_eq!(
                id, user_task.id,
                "a task of the run in an index: {members:?}"
            );
        }
    }
    let _ = stop_watching.send(());
    let (about, lagged) = watcher.await.unwrap();
    let _ = stop.send(());
    coordinator.shutdown().await;
    assert_eq!(lagged, 0, "every event was seen");
    assert!(about.is_empty(), "events about the user's task: {about:?}");
}

/// Without `--force` a task-mix run refuses a server with someone's pending work, says why and
/// what to do, and changes nothing: no worker registered, no task created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_force_a_run_refuses_foreign_work_and_changes_nothing() {
    let (url, coordinator, stop) =
        crate::common::serve(Config::default(), ServerConfig::default()).await;
    let user_task = coordinator
        .create_task(TaskSpec::new(json!("the user's")))
        .await
        .unwrap();
    let refused = vigil::load::run(load(&url, "polite", false, false))
        .await
        .unwrap_err();
    assert!(refused.contains("1 pending"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    assert_eq!(coordinator.instance_count(), 0);
    assert_eq!(coordinator.list_tasks(&TaskQuery::default()).len(), 1);
    let now = coordinator.get_task(user_task.id).unwrap();
    assert_eq!(
        (now.status, now.attempts, now.updated_at_ms),
        (TaskStatus::Pending, 0, user_task.updated_at_ms)
    );
    // Heartbeats alone (no --tasks) never touch tasks: they run, and clean up.
    let mut beats = load(&url, "beats", false, false);
    beats.tasks = None;
    let report = vigil::load::run(beats).await.unwrap();
    assert_eq!(report.cleanup.unwrap().workers_unregistered, 6);
    assert_eq!(coordinator.instance_count(), 0);
    // The command line says the same, and exits 1.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "load",
            "--target",
            &url,
            "--tasks",
            "5/s",
            "--duration",
            "1s",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("add --force"), "{stderr}");
    assert_eq!(coordinator.instance_count(), 0);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// With `--keep` the run's workers and tasks stay, marked: ids and role carry the run's tag,
/// and each task its tag in the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_the_runs_workers_and_tasks_remain_marked_as_its_own() {
    let redis = RedisServer::start();
    let (url, coordinator, stop) =
        crate::common::serve(redis_config(&redis), ServerConfig::default()).await;
    let report = vigil::load::run(load(&url, "kept", false, true))
        .await
        .unwrap();
    let cleanup = report.cleanup.unwrap();
    assert!(cleanup.kept && cleanup.workers_unregistered == 0 && cleanup.tasks_deleted == 0);
    assert_eq!(coordinator.instance_count(), 6);
    let state = coordinator.state();
    for i in &state.instances {
        assert!(i.id.as_str().starts_with("vigil-load-kept-"), "{i:?}");
        assert_eq!(i.roles, ["vigil-load-kept"]);
    }
    let tasks = coordinator.list_tasks(&TaskQuery {
        role: Some("vigil-load-kept".into()),
        ..TaskQuery::default()
    });
    assert_eq!(tasks.len(), 30);
    for t in &tasks {
        assert_eq!(t.metadata, Some(json!({"vigilLoad": "vigil-load-kept"})));
    }
    coordinator.flush().await.unwrap();
    let stored = keys(&redis).await;
    let instances = stored
        .iter()
        .filter(|k| k.starts_with("cb:instance:vigil-load-kept-"))
        .count();
    assert_eq!(instances, 6, "{stored:?}");
    assert_eq!(
        stored.iter().filter(|k| k.starts_with("cb:task:")).count(),
        30
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// A run stopped early (Ctrl-C in the CLI) cleans up all the same and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_cleans_up_all_the_same() {
    let (url, coordinator, stop) =
        crate::common::serve(Config::default(), ServerConfig::default()).await;
    let mut config = load(&url, "stopped", false, false);
    config.duration = Duration::from_secs(60);
    let started = std::time::Instant::now();
    let error = vigil::load::run_until(config, tokio::time::sleep(Duration::from_millis(700)))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30), "stopped early");
    assert!(error.starts_with("interrupted"), "{error}");
    assert!(
        error.contains("cleaned up run vigil-load-stopped: unregistered 6 worker(s)"),
        "{error}"
    );
    assert_eq!(coordinator.instance_count(), 0);
    assert!(coordinator.list_tasks(&TaskQuery::default()).is_empty());
    let _ = stop.send(());
    coordinator.shutdown().await;
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let answer = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&body)
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

/// Over the wire: `task.create {role}` shows the role in every answer that carries the task;
/// a worker without the role passes over it in an unfiltered claim and is refused a claim
/// narrowed to it; a worker with it claims it; `task.list {role}` filters by it; and after a
/// restart from Redis the role still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_requiring_a_role_goes_only_to_a_worker_with_it_also_after_a_restart() {
    let redis = RedisServer::start();
    let (url, coordinator, stop) =
        crate::common::serve(redis_config(&redis), ServerConfig::default()).await;
    let created = rpc(
        &url,
        "task.create",
        json!({"text": "gpu work", "role": "gpu", "priority": 90}),
    )
    .await;
    assert_eq!(created["result"]["role"], "gpu", "{created}");
    let plain = rpc(&url, "task.create", json!({"text": "anyone's"})).await;
    assert!(plain["result"].get("role").is_none(), "{plain}");
    let bad = rpc(&url, "task.create", json!({"text": "x", "role": ""})).await;
    assert_eq!(bad["error"]["data"]["field"], "role", "{bad}");
    for (id, roles) in [("cpu-1", json!(["cpu"])), ("gpu-1", json!(["gpu", "cpu"]))] {
        rpc(&url, "system.register", json!({"id": id, "roles": roles})).await;
    }
    // Unfiltered, the cpu worker gets the plain task, though the gpu task is better.
    let cpu = rpc(
        &url,
        "task.claim",
        json!({"workerId": "cpu-1", "maxTasks": 5}),
    )
    .await;
    let got: Vec<&Value> = cpu["result"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["task"]["id"])
        .collect();
    assert_eq!(got, [&plain["result"]["id"]], "{cpu}");
    let refused = rpc(
        &url,
        "task.claim",
        json!({"workerId": "cpu-1", "role": "gpu"}),
    )
    .await;
    assert_eq!(refused["error"]["data"]["field"], "role", "{refused}");
    let listed = rpc(&url, "task.list", json!({"role": "gpu"})).await;
    assert_eq!(listed["result"]["totalCount"], 1, "{listed}");
    assert_eq!(listed["result"]["tasks"][0]["role"], "gpu");
    // Restart from Redis: the role is recovered with the task.
    coordinator.flush().await.unwrap();
    let _ = stop.send(());
    coordinator.shutdown().await;
    let (url, coordinator, stop) =
        crate::common::serve(redis_config(&redis), ServerConfig::default()).await;
    let id: TaskId = serde_json::from_value(created["result"]["id"].clone()).unwrap();
    assert_eq!(
        coordinator.get_task(id).unwrap().role.as_deref(),
        Some("gpu")
    );
    for (id, roles) in [("cpu-2", json!(["cpu"])), ("gpu-2", json!(["gpu"]))] {
        rpc(&url, "system.register", json!({"id": id, "roles": roles})).await;
    }
    let none = rpc(&url, "task.claim", json!({"workerId": "cpu-2"})).await;
    assert_eq!(none["result"]["claimed"], false, "{none}");
    let gpu = rpc(
        &url,
        "task.claim",
        json!({"workerId": "gpu-2", "role": "gpu"}),
    )
    .await;
    assert_eq!(gpu["result"]["task"]["role"], "gpu", "{gpu}");
    assert_eq!(gpu["result"]["taskId"], created["result"]["id"]);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// Ctrl-C (SIGINT) stops `vigil load` early: it unregisters its workers, says what it cleaned
/// up, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_the_command_line_cleans_up_and_exits_1() {
    let (url, coordinator, stop) =
        crate::common::serve(Config::default(), ServerConfig::default()).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "load",
            "--target",
            &url,
            "--workers",
            "7",
            "--run-id",
            "sigint",
        ])
        .args(["--rate", "50/s", "--duration", "60s", "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once its workers are registered, it is sending.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while coordinator.instance_count() < 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("it stops soon after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted; cleaned up run vigil-load-sigint: unregistered 7 worker(s)"),
        "{stderr}"
    );
    assert_eq!(coordinator.instance_count(), 0);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// Interrupted while its workers are still being registered, a run unregisters the ones
/// registered so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_while_registering_unregisters_those_registered() {
    let (url, coordinator, stop) =
        crate::common::serve(Config::default(), ServerConfig::default()).await;
    let mut config = load(&url, "early", false, false);
    config.workers = 20_000;
    config.tasks = None;
    let error = vigil::load::run_until(config, tokio::time::sleep(Duration::from_millis(20)))
        .await
        .unwrap_err();
    assert!(
        error.starts_with(
            "interrupted while registering the workers; cleaned up run vigil-load-early"
        ),
        "{error}"
    );
    assert_eq!(coordinator.instance_count(), 0);
    let _ = stop.send(());
    coordinator.shutdown().await;
}
