//! High availability (issue 19): several `vigil serve --ha` processes on one private Redis, one
//! active and the others standing by; a takeover when the active is killed, and a stopped
//! (SIGSTOP) active that is deposed and steps down when it resumes. Plus the gate in process:
//! past it a coordinator answers −32008 and expires nobody.
//!
//! The processes use short lease timings (lease 2 s, renew deadline 1.2 s, retry 200 ms), so
//! a takeover takes about 2 s; every wait is bounded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::redis_server::{PortLock, RedisServer, free_port};

const LEASE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(200);

/// One `vigil serve --ha` process, killed (by its pid) when dropped.
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
    _lock: PortLock,
}

impl Node {
    fn start(redis: &RedisServer, dir: &std::path::Path, name: &str) -> Self {
        let (port, lock) = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis", &redis.url(), "--ha"])
            .args(["--ha-lease", "2s", "--ha-renew-deadline", "1200ms"])
            .args(["--ha-retry", "200ms", "--ttl", "6s", "--grace", "1s"])
            .args(["--flush-interval", "100ms", "--ui", "false"])
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("vigil serve starts");
        Self {
            child,
            port,
            log,
            _lock: lock,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {signal}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for the processes' logs, removed when dropped.
struct LogDir(PathBuf);

impl LogDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vigil-ha-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// `/healthz`: the status code and the body, `None` when nothing answers.
async fn health(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = client.get(format!("{url}/healthz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// One JSON-RPC call: the whole answer object.
async fn rpc(client: &reqwest::Client, url: &str, method: &str, params: Value) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = client
        .post(format!("{url}/rpc"))
        .json(&body)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// Waits until exactly one of `nodes` answers `/healthz` 200 and every other one 429: the
/// index of the active one and its epoch.
async fn one_active(client: &reqwest::Client, nodes: &[&Node], within: Duration) -> (usize, u64) {
    let deadline = Instant::now() + within;
    loop {
        let mut active = Vec::new();
        let mut standby = 0;
        for (i, node) in nodes.iter().enumerate() {
            match health(client, &node.url()).await {
                Some((200, body)) => active.push((i, body["epoch"].as_u64().unwrap())),
                Some((429, body)) => {
                    assert_eq!(body["status"], "standby", "{body}");
                    standby += 1;
                }
                _ => {}
            }
        }
        assert!(
            active.len() <= 1,
            "two active coordinators at once: {active:?}"
        );
        if active.len() == 1 && standby == nodes.len() - 1 {
            return active[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single active coordinator within {within:?} (active {active:?}, {standby} standby)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that heartbeats every 300 ms to whichever coordinator is active, following the
/// −32008 answers' `data.active`; counts the answers `alive: false` (a false expiry).
struct Worker {
    stop: Arc<AtomicBool>,
    dead_answers: Arc<AtomicU64>,
    alive_answers: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn start(urls: Vec<String>, id: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let dead_answers = Arc::new(AtomicU64::new(0));
        let alive_answers = Arc::new(AtomicU64::new(0));
        let (s, d, a) = (stop.clone(), dead_answers.clone(), alive_answers.clone());
        let task = tokio::spawn(async move {
            let client = http();
            let mut at = 0;
            while !s.load(Ordering::Relaxed) {
                let url = urls[at % urls.len()].clone();
                match rpc(&client, &url, "system.heartbeat", json!({"instanceId": id})).await {
                    Some(answer) if answer["result"]["alive"] == true => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(answer) if answer["result"]["alive"] == false => {
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(answer) if answer["error"]["code"] == -32008 => {
                        // Not here: to the active one if named, else the next.
                        match answer["error"]["data"]["active"].as_str() {
                            Some(active) => {
                                at = urls.iter().position(|u| u == active).unwrap_or(at + 1)
                            }
                            None => at += 1,
                        }
                        continue;
                    }
                    _ => at += 1, // unreachable (killed): the next one
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self {
            stop,
            dead_answers,
            alive_answers,
            task,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.alive_answers.load(Ordering::Relaxed),
            self.dead_answers.load(Ordering::Relaxed),
        )
    }
}

fn term_of(answer: &Value) -> u64 {
    answer["result"]["term"]
        .as_u64()
        .unwrap_or_else(|| panic!("no term in {answer}"))
}

/// Three coordinators on one Redis: one active (200), two standbys (429, naming it, and
/// answering −32008). Kill the active with SIGKILL: a standby takes over within lease + retry
/// + recovery, with every acknowledged task and claim, the heartbeating worker still alive
///   (never answered `alive: false`), and terms above the new epoch's floor. Prints the takeover
///   time: from the kill to the first acknowledged write by the successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_active_with_nothing_acknowledged_lost() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let redis = RedisServer::start();
        let dir = LogDir::new();
        let nodes: Vec<Node> = ["a", "b", "c"]
            .iter()
            .map(|n| Node::start(&redis, dir.path(), n))
            .collect();
        let refs: Vec<&Node> = nodes.iter().collect();
        let client = http();
        let (first, epoch) = one_active(&client, &refs, Duration::from_secs(20)).await;
        let active = nodes[first].url();
        // The standbys say where the active one is, on /healthz and on every call.
        for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != first) {
            let (status, body) = health(&client, &node.url()).await.unwrap();
            assert_eq!(
                (status, body["active"].as_str()),
                (429, Some(active.as_str())),
                "{i}"
            );
            let refused = rpc(&client, &node.url(), "task.list", json!({}))
                .await
                .unwrap();
            assert_eq!(refused["error"]["code"], -32008, "{refused}");
            assert_eq!(refused["error"]["data"]["active"], active.as_str());
            assert_eq!(refused["error"]["data"]["epoch"], epoch);
        }
        let registered = rpc(
            &client,
            &active,
            "system.register",
            json!({"id": "w1", "roles": ["worker"]}),
        )
        .await
        .unwrap();
        let old_term = term_of(&registered);
        assert!(old_term >> vigil::EPOCH_SHIFT >= epoch, "{registered}");
        let urls: Vec<String> = nodes.iter().map(Node::url).collect();
        let worker = Worker::start(urls.clone(), "w1");
        let mut acked = Vec::new();
        for i in 0..5 {
            let created = rpc(
                &client,
                &active,
                "task.create",
                json!({"text": format!("t{i}")}),
            )
            .await
            .unwrap();
            acked.push(created["result"]["id"].as_str().unwrap().to_string());
        }
        let claimed = rpc(&client, &active, "task.claim", json!({"workerId": "w1"}))
            .await
            .unwrap();
        let claimed_id = claimed["result"]["taskId"]
            .as_str()
            .unwrap_or_else(|| panic!("{claimed}"))
            .to_string();

        let killed = Instant::now();
        nodes[first].signal("-KILL");
        // The first acknowledged write by the successor: a create on whichever answers.
        let (successor, took) = 'found: loop {
            assert!(killed.elapsed() < Duration::from_secs(20), "no takeover");
            for (i, url) in urls.iter().enumerate().filter(|(i, _)| *i != first) {
                let answer = rpc(&client, url, "task.create", json!({"text": "after"})).await;
                if let Some(answer) = answer
                    && answer["result"]["id"].is_string()
                {
                    acked.push(answer["result"]["id"].as_str().unwrap().to_string());
                    break 'found (i, killed.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!("takeover: kill -> first acknowledged write by the successor in {took:?}");
        assert!(
            took < LEASE + RETRY + Duration::from_secs(4),
            "the takeover took {took:?}"
        );
        let rest: Vec<&Node> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, n)| n)
            .collect();
        let (now_active, new_epoch) = one_active(&client, &rest, Duration::from_secs(5)).await;
        assert_eq!(rest[now_active].url(), urls[successor]);
        assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
        let successor = &urls[successor];
        for id in &acked {
            let got = rpc(&client, successor, "task.get", json!({"taskId": id}))
                .await
                .unwrap();
            assert_eq!(
                got["result"]["id"],
                id.as_str(),
                "acknowledged task lost: {got}"
            );
        }
        let still = rpc(
            &client,
            successor,
            "task.get",
            json!({"taskId": claimed_id}),
        )
        .await
        .unwrap();
        assert_eq!(still["result"]["status"], "in_progress", "{still}");
        assert_eq!(still["result"]["assignedTo"], "w1", "{still}");
        // The worker kept heartbeating through the takeover: alive on the successor, and a
        // term above everything the first epoch could hand out.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let beat = rpc(
            &client,
            successor,
            "system.heartbeat",
            json!({"instanceId": "w1"}),
        )
        .await
        .unwrap();
        assert_eq!(beat["result"]["alive"], true, "{beat}");
        let new_term = term_of(&beat);
        assert!(new_term > old_term, "term {new_term} after {old_term}");
        assert!(new_term >> vigil::EPOCH_SHIFT >= new_epoch, "{new_term}");
        let state = rpc(
            &client,
            successor,
            "system.get_state",
            json!({"limit": 100}),
        )
        .await
        .unwrap();
        let expired = state["result"]["recentEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "instance.expired")
            .count();
        assert_eq!(
            expired, 0,
            "an instance expired across the takeover: {state}"
        );
        let (alive, dead) = worker.stop().await;
        assert!(alive >= 3, "the worker's heartbeats: {alive} alive");
        assert_eq!(dead, 0, "the worker was answered alive: false {dead} times");
        let log = nodes[first].log();
        assert!(log.contains("active: serving"), "{log}");
    })
    .await
    .expect("bounded");
}

/// The zombie: the active is stopped (SIGSTOP) for longer than the lease; a standby takes
/// over; the old one, resumed, is past its renew deadline on the monotonic clock and steps
/// down at once: it answers 429 and −32008 naming the successor, expired nobody, elected
/// nobody, and wrote nothing (the successor's state is whole). Prints the zombie window: from
/// the resume to its first 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_active_is_deposed_and_steps_down_when_it_resumes() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let redis = RedisServer::start();
        let dir = LogDir::new();
        let nodes: Vec<Node> = ["a", "b"]
            .iter()
            .map(|n| Node::start(&redis, dir.path(), n))
            .collect();
        let refs: Vec<&Node> = nodes.iter().collect();
        let client = http();
        let (first, epoch) = one_active(&client, &refs, Duration::from_secs(20)).await;
        let zombie = &nodes[first];
        let other = &nodes[1 - first];
        rpc(
            &client,
            &zombie.url(),
            "system.register",
            json!({"id": "w1", "roles": ["worker"]}),
        )
        .await
        .unwrap();
        let urls: Vec<String> = nodes.iter().map(Node::url).collect();
        let worker = Worker::start(urls, "w1");
        // An instance that stops heartbeating now: its TTL (6 s) runs out while the zombie
        // is stopped, so a zombie that expired it on resuming would say so.
        rpc(
            &client,
            &zombie.url(),
            "system.register",
            json!({"id": "quiet", "roles": ["worker"], "ttl": 2500}),
        )
        .await
        .unwrap();
        zombie.signal("-STOP");
        let (_, new_epoch) = one_active(&client, &[other], Duration::from_secs(10)).await;
        assert!(new_epoch > epoch);
        let created = rpc(
            &client,
            &other.url(),
            "task.create",
            json!({"text": "during"}),
        )
        .await
        .unwrap();
        let task = created["result"]["id"].as_str().unwrap().to_string();
        // Past the lease for sure, then resume.
        tokio::time::sleep(LEASE + Duration::from_millis(500)).await;
        let resumed = Instant::now();
        zombie.signal("-CONT");
        let window = loop {
            if let Some((429, _)) = health(&client, &zombie.url()).await {
                break resumed.elapsed();
            }
            assert!(
                resumed.elapsed() < Duration::from_secs(5),
                "the zombie never stepped down"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!("zombie window: resume -> first 429 in {window:?}");
        // Deposed, it answers 429 at once; as a standby, it soon names the successor.
        loop {
            let (status, body) = health(&client, &zombie.url()).await.unwrap_or_default();
            if body["active"] == other.url().as_str() {
                assert_eq!(status, 429);
                break;
            }
            assert!(
                resumed.elapsed() < Duration::from_secs(5),
                "the deposed one never named the successor: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = rpc(
            &client,
            &zombie.url(),
            "system.heartbeat",
            json!({"instanceId": "w1"}),
        )
        .await
        .unwrap();
        assert_eq!(refused["error"]["code"], -32008, "{refused}");
        assert_eq!(refused["error"]["data"]["active"], other.url().as_str());
        // The successor holds what it acknowledged; the worker was never expired.
        let got = rpc(&client, &other.url(), "task.get", json!({"taskId": task}))
            .await
            .unwrap();
        assert_eq!(got["result"]["id"], task.as_str(), "{got}");
        let (alive, dead) = worker.stop().await;
        assert!(alive >= 3, "{alive}");
        assert_eq!(dead, 0, "the worker was answered alive: false {dead} times");
        let log = zombie.log();
        assert!(log.contains("stepping down"), "{log}");
        let after_resume = log.split("stepping down").nth(1).unwrap_or_default();
        // (A write in flight when it was stopped may still be refused as FENCED on resuming:
        // refused is the point. It starts none after.)
        for word in ["instance.expired", "leader.elected"] {
            assert!(
                !after_resume.contains(word),
                "the zombie logged {word} after resuming: {log}"
            );
        }
        assert!(!log.contains("instance.expired"), "{log}");
    })
    .await
    .expect("bounded");
}

/// In process: a coordinator whose gate shut answers every call −32008 (the fast heartbeat
/// path too), refuses writes with `NotActive`, and expires nobody however long it waits.
#[tokio::test(start_paused = true)]
async fn past_its_gate_a_coordinator_refuses_calls_and_expires_nobody() {
    use vigil::{ActiveGate, Config, Coordinator, Error, InstanceStatus, RegisterRequest};
    let gate = ActiveGate::open_until(std::time::Instant::now() + Duration::from_secs(3600));
    let config = Config {
        ttl: Duration::from_secs(2),
        grace: Duration::from_millis(500),
        ..Config::default()
    };
    let c = Coordinator::start_gated(config, gate.clone())
        .await
        .unwrap();
    c.register(RegisterRequest::new("w1")).await.unwrap();
    c.register(RegisterRequest::new("w2")).await.unwrap();
    assert_eq!(
        c.leader_view().leader.as_ref().map(|l| l.as_str()),
        Some("w1")
    );
    gate.close();
    tokio::time::sleep(Duration::from_secs(10)).await;
    crate::common::settle().await;
    let state = c.state();
    for view in &state.instances {
        assert_eq!(view.status, InstanceStatus::Active, "{view:?}");
    }
    assert_eq!(
        state.leader.leader.as_ref().map(|l| l.as_str()),
        Some("w1"),
        "no new election"
    );
    assert!(matches!(
        c.register(RegisterRequest::new("w3")).await,
        Err(Error::NotActive { .. })
    ));
    #[cfg(feature = "server")]
    {
        let d = vigil::rpc::Dispatcher::new(c.clone(), vigil::rpc::RpcLimits::default());
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"system.heartbeat","params":{"instanceId":"w1"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"system.get_state","params":{}}"#,
        ] {
            let answer = d.handle_body_bytes(body.as_bytes()).await.unwrap();
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["error"]["code"], -32008, "{answer}");
            assert_eq!(answer["error"]["data"]["role"], "standby");
        }
    }
    c.abandon().await;
}

/// Redis Cluster layout: with a prefix carrying a hash tag (`{cb}:`), every key Vigil writes —
/// records, indexes, streams, counters, the coordinator lease — starts with it, so all of them
/// (and so every script's keys) hash to one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_hash_tag_prefix_every_key_is_in_one_slot() {
    use vigil::store::{CoordLease, RedisConfig, StoreConfig};
    use vigil::work::task::TaskSpec;
    use vigil::{Config, Coordinator, LeaseOwner, RegisterRequest};
    let redis = RedisServer::start();
    let mut rc = RedisConfig::new(redis.url());
    rc.prefix = "{cb}:".into();
    let lease = CoordLease::connect(&rc).await.unwrap();
    let holder = CoordLease::holder_id();
    let vigil::store::Acquire::Acquired { epoch } = lease
        .try_acquire(&holder, "http://127.0.0.1:1", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("the lease is free")
    };
    rc.fence_epoch = Some(epoch);
    let c = Coordinator::start(Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    })
    .await
    .unwrap();
    c.register(RegisterRequest::new("w1").roles(["worker"]))
        .await
        .unwrap();
    c.heartbeat("w1").await;
    c.create_task(TaskSpec::new(json!("t"))).await.unwrap();
    c.claim("w1", 1).await.unwrap();
    c.acquire_lease(
        "k",
        LeaseOwner::Instance("w1".into()),
        vigil::work::lease::LeaseMode::Exclusive,
        None,
    )
    .await
    .unwrap();
    c.flush().await.unwrap();
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 6, "{keys:?}");
    for key in &keys {
        assert!(
            key.starts_with("{cb}:"),
            "{key} is outside the hash tag: {keys:?}"
        );
    }
    c.shutdown().await;
}
