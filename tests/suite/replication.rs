//! Acknowledged means replicated (issue 19, point 3): with a Redis replica, a write-through
//! call is answered only once `WAIT` confirmed that the replica has its write; write-behind
//! heartbeat flushes send no `WAIT`. Each test runs its own primary (and replica) on loopback.

use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;
use vigil::store::{RedisConfig, StoreConfig, WaitReplicas};
use vigil::work::task::TaskSpec;
use vigil::{Config, Coordinator, Error, RegisterRequest};

fn config(url: String, wait: WaitReplicas) -> Config {
    let mut rc = RedisConfig::new(url);
    rc.flush_interval = Duration::from_millis(50);
    rc.wait_replicas = wait;
    Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    }
}

/// Whether `server` holds `key` (read over a connection of its own).
async fn holds(server: &RedisServer, key: &str) -> bool {
    let n: u64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    n == 1
}

/// (a) Primary and replica, `auto`: every acknowledged `task.create` is on the replica the
/// moment the answer arrives — read from the replica right after, with no wait — because the
/// flush that acknowledged it ended with a `WAIT 1` that the replica answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_task_is_on_the_replica_when_acknowledged() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start();
        let replica = RedisServer::replica_of(&primary).await;
        let c = Coordinator::start(config(primary.url(), WaitReplicas::Auto))
            .await
            .unwrap();
        let before = primary.calls("wait").await;
        for i in 0..20 {
            let task = c
                .create_task(TaskSpec::new(serde_json::json!(format!("task {i}"))))
                .await
                .unwrap();
            let key = format!("cb:task:{}", task.id);
            assert!(
                holds(&replica, &key).await,
                "{key} acknowledged but not on the replica"
            );
        }
        let waits = primary.calls("wait").await - before;
        assert!(
            waits >= 20,
            "{waits} WAIT calls for 20 write-through creates"
        );
        c.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// (b) The replica hangs (SIGSTOP; the primary still counts it as connected): a write-through
/// registration is answered `NotDurable` once the store wait (1.5 s) ran out — its flushes
/// reached the primary, but `WAIT 1` came back 0 — and a `task.create` is withdrawn
/// (`StoreUnavailable`). Once the replica resumes, the retried write reaches it, and calls are
/// acknowledged again — without a full rewrite of the state, which the primary never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_makes_write_through_calls_not_durable_until_it_resumes() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let primary = RedisServer::start();
        let replica = RedisServer::replica_of(&primary).await;
        let c = Coordinator::start(config(primary.url(), WaitReplicas::Auto))
            .await
            .unwrap();
        c.register(RegisterRequest::new("w0")).await.unwrap();
        let store_wait = c.config().store_wait;
        {
            let _paused = replica.paused();
            let asked = Instant::now();
            match c.register(RegisterRequest::new("w1")).await {
                Err(Error::NotDurable(why)) => {
                    let took = asked.elapsed();
                    assert!(
                        took >= store_wait - Duration::from_millis(100)
                            && took < store_wait + Duration::from_secs(1),
                        "answered after {took:?}: {why}"
                    );
                }
                other => panic!("expected NotDurable, got {other:?}"),
            }
            assert!(
                holds(&primary, "cb:instance:w1").await,
                "written on the primary"
            );
            match c.create_task(TaskSpec::new(serde_json::json!("x"))).await {
                Err(Error::StoreUnavailable(why)) => assert!(why.contains("withdrawn"), "{why}"),
                other => panic!("expected the create to be undone, got {other:?}"),
            }
        } // resumed here (also if an assertion above failed)
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holds(&replica, "cb:instance:w1").await {
            assert!(
                Instant::now() < deadline,
                "the registration never reached the resumed replica"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let task = c
            .create_task(TaskSpec::new(serde_json::json!("after")))
            .await
            .unwrap();
        assert!(holds(&replica, &format!("cb:task:{}", task.id)).await);
        // The primary lost nothing: the failed flushes were retried as they were, with no
        // full rewrite of the state (which follows any other failure).
        let view = c.faults().inspect_persister().await.unwrap();
        assert!(view.failures >= 2, "{view:?}");
        assert_eq!(view.resyncs, 0, "{view:?}");
        c.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// (c) No replica: `auto` waits for none — calls are acknowledged as before, and no `WAIT` is
/// sent. A fixed 1 with no replica cannot be met: the coordinator does not even start, since
/// recovery's term reservation is not replicated, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replica_auto_waits_for_none_and_a_fixed_one_refuses_to_start() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start();
        let c = Coordinator::start(config(primary.url(), WaitReplicas::Auto))
            .await
            .unwrap();
        c.register(RegisterRequest::new("w1")).await.unwrap();
        c.create_task(TaskSpec::new(serde_json::json!("x")))
            .await
            .unwrap();
        assert_eq!(primary.calls("wait").await, 0, "no replica: no WAIT");
        c.shutdown().await;

        let started = Instant::now();
        match Coordinator::start(config(primary.url(), WaitReplicas::Fixed(1))).await {
            Err(Error::StoreUnavailable(why)) => {
                assert!(why.contains("NOT_REPLICATED 0/1 in "), "{why}");
                assert!(why.contains("reserve terms"), "{why}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "WAIT ran its timeout"
        );
    })
    .await
    .expect("bounded");
}

/// (d) Write-behind heartbeat flushes (heartbeats and the flush mark alone) send no `WAIT`,
/// even with a replica; the next write-through call does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_only_flushes_send_no_wait() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start();
        let _replica = RedisServer::replica_of(&primary).await;
        let c = Coordinator::start(config(primary.url(), WaitReplicas::Auto))
            .await
            .unwrap();
        c.register(RegisterRequest::new("w1")).await.unwrap();
        // The registration's flush (and the election's) are written; wait until the count
        // of WAITs stands still for a few flush intervals.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = primary.calls("wait").await;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = primary.calls("wait").await;
            if now == last {
                break;
            }
            last = now;
            assert!(
                Instant::now() < deadline,
                "WAITs kept coming without writes"
            );
        }
        assert!(last >= 1, "the registration waited");
        let scripts = primary.calls("evalsha").await;
        for _ in 0..20 {
            assert!(c.heartbeat("w1").await.alive);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            primary.calls("evalsha").await >= scripts + 5,
            "heartbeat flushes were written"
        );
        assert_eq!(
            primary.calls("wait").await,
            last,
            "a heartbeat-only flush sent WAIT"
        );
        c.create_task(TaskSpec::new(serde_json::json!("x")))
            .await
            .unwrap();
        assert!(
            primary.calls("wait").await > last,
            "a write-through call waits"
        );
        c.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// `vigil serve` with `VIGIL_HA_WAIT_REPLICAS=1` (the flag's environment variable): acknowledged
/// while the replica is there; once it is gone (killed), `system.register` over JSON-RPC
/// answers -32006 (not durable) after the store wait.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_one_replica_required_answers_not_durable_without_it() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let primary = RedisServer::start();
        let mut replica = RedisServer::replica_of(&primary).await;
        let (port, _lock) = crate::redis_server::free_port();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis", &primary.url(), "--ha-wait-timeout", "300ms"])
            .env("VIGIL_HA_WAIT_REPLICAS", "1")
            .env_remove("VIGIL_TOKEN")
            .env_remove("VIGIL_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "vigil serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let register = |id: &'static str| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body = serde_json::json!({
                    "jsonrpc": "2.0", "id": 1, "method": "system.register",
                    "params": {"id": id, "roles": ["worker"]},
                });
                let answer: serde_json::Value = http
                    .post(format!("{url}/rpc"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer
            }
        };
        let ok = register("w1").await;
        assert!(ok["result"]["registered"] == true, "{ok}");
        assert!(primary.calls("wait").await >= 1);

        replica.stop();
        let asked = Instant::now();
        let refused = register("w2").await;
        assert_eq!(refused["error"]["code"], -32006, "{refused}");
        assert!(
            asked.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            asked.elapsed()
        );
        assert!(
            holds(&primary, "cb:instance:w2").await,
            "kept on the primary"
        );
        let _ = child.start_kill();
        let _ = child.wait().await;
    })
    .await
    .expect("bounded");
}

/// `auto` counts only replicas online: one still in its initial sync (held in `wait_bgsave` by
/// the primary's `repl-diskless-sync-delay`) cannot acknowledge anything, and waiting for it
/// would fail every write — here the start itself, whose term reservation waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_does_not_wait_for_a_replica_still_syncing() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start_args(&["--repl-diskless-sync-delay", "10"]);
        let _replica =
            RedisServer::start_args(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        let info = || async {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut primary.connection().await)
                .await
                .unwrap();
            info
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !info().await.contains("state=wait_bgsave") {
            assert!(Instant::now() < deadline, "the replica never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let c = Coordinator::start(config(primary.url(), WaitReplicas::Auto))
            .await
            .unwrap();
        c.create_task(TaskSpec::new(serde_json::json!("x")))
            .await
            .unwrap();
        let now = info().await;
        assert!(
            now.contains("connected_slaves:1") && now.contains("state=wait_bgsave"),
            "the replica was syncing throughout: {now}"
        );
        assert_eq!(primary.calls("wait").await, 0);
        c.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A write refused by the fencing check stays `FENCED`, even when the `WAIT` behind it would
/// also fall short (one replica asked for, none there): fenced is "stop writing", never
/// "retry until replicated".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_stays_fenced_not_unreplicated() {
    use vigil::store::{RedisStore, Store, WriteBatch};
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start();
        let _: () = redis::cmd("HSET")
            .arg("cb:coordinator")
            .arg("epoch")
            .arg(2)
            .query_async(&mut primary.connection().await)
            .await
            .unwrap();
        let mut rc = RedisConfig::new(primary.url());
        rc.fence_epoch = Some(1);
        rc.wait_replicas = WaitReplicas::Fixed(1);
        let store = RedisStore::connect(&rc).await.unwrap();
        let e = store.reserve_terms(1000).await.unwrap_err();
        assert!(e.is_fenced() && !e.is_not_replicated(), "{e}");
        let batch = WriteBatch {
            instances_gone: vec![
                vigil::model::InstanceId::parse("w1", &vigil::Limits::default()).unwrap(),
            ],
            ..WriteBatch::default()
        };
        let e = store.apply(&batch).await.unwrap_err();
        assert!(e.is_fenced() && !e.is_not_replicated(), "{e}");
        // The same writes under the current epoch: written, then not replicated.
        rc.fence_epoch = Some(2);
        let store = RedisStore::connect(&rc).await.unwrap();
        let e = store.apply(&batch).await.unwrap_err();
        assert!(e.is_not_replicated() && !e.is_fenced(), "{e}");
        assert!(e.to_string().contains("NOT_REPLICATED 0/1 in "), "{e}");
    })
    .await
    .expect("bounded");
}

/// The coordinator lease's acquisition is confirmed on a replica before `vigil serve --ha`
/// serves under it: with the replica in sync, `replicated` is true and the replica holds the
/// new epoch; with the replica stopped, it is false within the wait timeout (the caller then
/// gives the lease up); without a replica, nothing is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coordinator_epoch_is_confirmed_on_a_replica_before_it_is_used() {
    use vigil::store::{Acquire, CoordLease};
    tokio::time::timeout(Duration::from_secs(30), async {
        let primary = RedisServer::start();
        let alone = CoordLease::connect(&RedisConfig::new(primary.url()))
            .await
            .unwrap();
        assert!(alone.replicated().await.unwrap(), "no replica: no wait");
        let replica = RedisServer::replica_of(&primary).await;
        let mut rc = RedisConfig::new(primary.url());
        rc.wait_timeout = Duration::from_millis(300);
        let lease = CoordLease::connect(&rc).await.unwrap();
        let Acquire::Acquired { epoch } = lease
            .try_acquire("a", "http://127.0.0.1:1", Duration::from_secs(30))
            .await
            .unwrap()
        else {
            panic!("the lease is free")
        };
        assert!(lease.replicated().await.unwrap());
        let mut on_replica = replica.connection().await;
        let stored: u64 = redis::cmd("HGET")
            .arg("cb:coordinator")
            .arg("epoch")
            .query_async(&mut on_replica)
            .await
            .unwrap();
        assert_eq!(stored, epoch, "the replica has the new epoch at once");
        lease.release(epoch, "a").await.unwrap();
        let paused = replica.paused();
        let Acquire::Acquired { .. } = lease
            .try_acquire("b", "http://127.0.0.1:2", Duration::from_secs(30))
            .await
            .unwrap()
        else {
            panic!("released")
        };
        let started = Instant::now();
        assert!(!lease.replicated().await.unwrap(), "the replica is stopped");
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(paused);
    })
    .await
    .expect("bounded");
}
