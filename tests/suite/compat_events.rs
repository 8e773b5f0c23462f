//! Events where ClaudeBench's tools listen, with the Redis store: each event's envelope is
//! PUBLISHed on the channel named by its type (ClaudeBench's relay, `scripts/
//! claude_event_relay.py`, `psubscribe`s `task.*`, `hook.*`, `system.*`, `instance.*`) and
//! appended to ClaudeBench's per-type stream `cb:stream:<type>` — written behind, with the
//! Persister's flush, never one per heartbeat.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vigil::Config;
use vigil::server::ServerConfig;
use vigil::store::{RedisConfig, StoreConfig};

use crate::redis_server::RedisServer;

fn config(redis: &RedisServer) -> Config {
    let mut rc = RedisConfig::new(redis.url());
    rc.flush_interval = Duration::from_millis(50);
    Config {
        store: StoreConfig::Redis(rc),
        ..Config::default()
    }
}

/// A relay-like listener: `PSUBSCRIBE`s `patterns` with its own connection and hands on every
/// message as (channel, pattern, payload).
async fn listen(
    redis: &RedisServer,
    patterns: &[&str],
) -> mpsc::UnboundedReceiver<(String, String, Value)> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    for p in patterns {
        pubsub.psubscribe(*p).await.unwrap();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(m) = messages.next().await {
            let payload: String = m.get_payload().unwrap();
            let pattern: String = m.get_pattern().unwrap_or_default();
            let value = serde_json::from_str(&payload).expect("every message is JSON");
            if tx
                .send((m.get_channel_name().to_string(), pattern, value))
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// Messages until one of type `kind` arrived (within 5 s); all of them.
async fn until(
    messages: &mut mpsc::UnboundedReceiver<(String, String, Value)>,
    kind: &str,
) -> Vec<(String, String, Value)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout_at(deadline, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} message within 5 s; got {seen:?}"))
            .unwrap();
        let done = m.0 == kind;
        seen.push(m);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_events_reach_pub_sub_and_per_type_streams() {
    let redis = RedisServer::start();
    let (url, coordinator, stop) =
        crate::common::serve(config(&redis), ServerConfig::default()).await;
    let mut messages = listen(&redis, &["task.*", "hook.*", "system.*", "instance.*"]).await;

    rpc(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["relay"]}),
    )
    .await;
    let registered = until(&mut messages, "instance.registered").await;
    let (channel, pattern, event) = registered.last().unwrap();
    assert_eq!(
        (channel.as_str(), pattern.as_str()),
        ("instance.registered", "instance.*")
    );
    assert_eq!(event["type"], "instance.registered", "{event}");
    assert_eq!(event["payload"]["id"], "w1");
    // ClaudeBench's relay drops events whose payload.instanceId is its own; ClaudeBench's
    // instance.registered has none, so neither has Vigil's.
    assert!(event["payload"].get("instanceId").is_none(), "{event}");
    assert_eq!(event["payload"]["roles"], json!(["relay"]));

    let created = rpc(
        &url,
        "task.create",
        json!({"text": "index the docs", "priority": 80}),
    )
    .await;
    let task_id = created["id"].as_str().unwrap().to_string();
    let claim = rpc(&url, "task.claim", json!({"workerId": "w1"})).await;
    let token = claim["claimToken"].as_str().unwrap().to_string();
    rpc(
        &url,
        "task.complete",
        json!({"taskId": task_id, "claimToken": token}),
    )
    .await;
    let mut seen = until(&mut messages, "task.completed").await;
    seen.extend(registered);
    let kinds: Vec<&str> = seen.iter().map(|m| m.0.as_str()).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("{kind} in {kinds:?}"))
    };
    // In order, each on its own type's channel; leader events are on no pattern the relay
    // listens to.
    assert!(
        at("task.created") < at("task.claimed") && at("task.claimed") < at("task.completed"),
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k.starts_with("leader.")), "{kinds:?}");
    let created_msg = &seen[at("task.created")].2;
    assert_eq!(created_msg["payload"]["id"], task_id.as_str());
    assert_eq!(created_msg["payload"]["text"], "index the docs");
    assert_eq!(created_msg["payload"]["status"], "pending");
    assert_eq!(created_msg["payload"]["priority"], 80);
    assert!(created_msg["payload"]["createdAt"].is_string());
    assert_eq!(seen[at("task.claimed")].2["payload"]["workerId"], "w1");
    assert_eq!(
        seen[at("task.completed")].2["payload"]["status"],
        "completed"
    );
    for (_, _, m) in &seen {
        assert!(
            !m.to_string().contains(&token),
            "a claim token on pub/sub: {m}"
        );
    }

    // The per-type stream holds the same envelope, under field `data`.
    let mut conn = redis.connection().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("cb:stream:task.created")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (field, data) = &entries[0].1[0];
    assert_eq!(field, "data");
    let stored: Value = serde_json::from_str(data).unwrap();
    assert_eq!(&stored, created_msg);
    for kind in [
        "instance.registered",
        "task.claimed",
        "task.completed",
        "leader.elected",
    ] {
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("cb:stream:{kind}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 1, "cb:stream:{kind}");
    }
    // Vigil's own history stream is still written.
    let len: u64 = redis::cmd("XLEN")
        .arg("cb:stream:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(len >= 5, "cb:stream:events holds {len}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_publish_and_stream_nothing() {
    let redis = RedisServer::start();
    let (url, coordinator, stop) =
        crate::common::serve(config(&redis), ServerConfig::default()).await;
    rpc(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    // Everything the registration published has been flushed before listening starts.
    let mut conn = redis.connection().await;
    let started = Instant::now();
    loop {
        let len: u64 = redis::cmd("XLEN")
            .arg("cb:stream:leader.elected")
            .query_async(&mut conn)
            .await
            .unwrap();
        if len == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never flushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut messages = listen(&redis, &["*"]).await;
    let streams_before: Vec<String> = redis::cmd("KEYS")
        .arg("cb:stream:*")
        .query_async(&mut conn)
        .await
        .unwrap();

    // 300 heartbeats over ten flush intervals.
    let http = reqwest::Client::new();
    for _ in 0..30 {
        let batch: Vec<Value> = (0..10)
            .map(|i| json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w1"}, "id": i}))
            .collect();
        let answer: Value = http
            .post(format!("{url}/rpc"))
            .json(&batch)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer[9]["result"]["alive"], true, "{answer}");
        tokio::time::sleep(Duration::from_millis(17)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut during = Vec::new();
    while let Ok(m) = messages.try_recv() {
        during.push(m);
    }
    assert!(during.is_empty(), "heartbeats published {during:?}");
    let mut streams_after: Vec<String> = redis::cmd("KEYS")
        .arg("cb:stream:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut before = streams_before;
    before.sort();
    streams_after.sort();
    assert_eq!(
        before, streams_after,
        "no stream per heartbeat (ClaudeBench's cb:stream:system.heartbeat)"
    );

    // The listener does hear what is not a heartbeat.
    rpc(&url, "task.create", json!({"text": "after the beats"})).await;
    let seen = until(&mut messages, "task.created").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_type_streams_are_capped_and_publishing_can_be_turned_off() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    if let StoreConfig::Redis(rc) = &mut config.store {
        rc.type_stream_max_len = 10;
        rc.publish_events = false;
    }
    let (url, coordinator, stop) = crate::common::serve(config, ServerConfig::default()).await;
    let mut messages = listen(&redis, &["*"]).await;
    let batch: Vec<Value> = (0..250)
        .map(|i| json!({"jsonrpc": "2.0", "method": "task.create", "params": {"text": format!("t{i}")}, "id": i}))
        .collect();
    let answers: Value = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answers
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["result"]["id"].is_string()),
        "{answers}"
    );
    let mut conn = redis.connection().await;
    let xlen = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("XLEN")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // MAXLEN ~ trims whole stream nodes (100 entries by default): at most the cap plus a node.
    let typed = xlen("cb:stream:task.created").await;
    assert!(
        (10..=110).contains(&typed),
        "cb:stream:task.created holds {typed}"
    );
    assert!(xlen("cb:stream:events").await >= 250);
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg("cb:stream:task.created")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let newest: Value = serde_json::from_str(&last[0].1[0].1).unwrap();
    assert_eq!(newest["payload"]["text"], "t249", "the newest are kept");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        messages.try_recv().is_err(),
        "published although turned off"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// One session the way ClaudeBench's relay (`scripts/claude_event_relay.py`) drives it:
/// register with roles and a working directory, heartbeat, `PSUBSCRIBE` its four patterns and
/// read each message's `type` and `payload`; re-register when a heartbeat answers `alive:
/// false`; unregister with `sessionId` and `timestamp` at the end (idempotently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_session_end_to_end() {
    let redis = RedisServer::start();
    let (url, _coordinator, stop) =
        crate::common::serve(config(&redis), ServerConfig::default()).await;
    let mut messages = listen(&redis, &["task.*", "hook.*", "system.*", "instance.*"]).await;
    let register = json!({
        "id": "relay-1",
        "roles": ["general", "backend", "relay"],
        "metadata": {"workingDirectory": "/tmp/project"},
    });
    assert_eq!(
        rpc(&url, "system.register", register.clone()).await["registered"],
        true
    );
    let seen = until(&mut messages, "instance.registered").await;
    let (_, pattern, event) = seen.last().unwrap();
    assert_eq!(pattern, "instance.*");
    assert_eq!(event["payload"]["id"], "relay-1");
    assert_eq!(
        event["payload"]["roles"],
        json!(["general", "backend", "relay"])
    );
    assert_eq!(
        rpc(&url, "system.heartbeat", json!({"instanceId": "relay-1"})).await["alive"],
        true
    );

    // Work made by someone else reaches the relay, not filtered as its own.
    let task = rpc(&url, "task.create", json!({"text": "index the docs"})).await;
    let seen = until(&mut messages, "task.created").await;
    let (_, pattern, event) = seen.last().unwrap();
    assert_eq!(pattern, "task.*");
    assert_eq!(
        (
            event["payload"]["id"].clone(),
            event["payload"]["text"].clone()
        ),
        (task["id"].clone(), json!("index the docs"))
    );
    assert_ne!(event["payload"]["instanceId"], "relay-1");

    // The relay was dropped (here: unregistered by someone else): its heartbeat says so, and it
    // registers again, as the relay does.
    rpc(&url, "system.unregister", json!({"instanceId": "relay-1"})).await;
    until(&mut messages, "instance.unregistered").await;
    assert_eq!(
        rpc(&url, "system.heartbeat", json!({"instanceId": "relay-1"})).await["alive"],
        false
    );
    assert_eq!(
        rpc(&url, "system.register", register).await["registered"],
        true
    );
    until(&mut messages, "instance.registered").await;
    assert_eq!(
        rpc(&url, "system.heartbeat", json!({"instanceId": "relay-1"})).await["alive"],
        true
    );

    let bye = json!({"instanceId": "relay-1", "sessionId": "session-1", "timestamp": 1_764_000_000_000u64});
    assert_eq!(
        rpc(&url, "system.unregister", bye.clone()).await["unregistered"],
        true
    );
    assert_eq!(
        rpc(&url, "system.unregister", bye).await["unregistered"],
        true,
        "idempotent"
    );
    let seen = until(&mut messages, "instance.unregistered").await;
    assert!(
        seen.iter()
            .all(|(_, _, e)| !e.to_string().contains("claimToken"))
    );
    let _ = stop.send(());
}
