//! ClaudeBench compatibility of `system.*` and of the error codes, over the real server
//! (issue 15, points 1 and 7): input rules as ClaudeBench's schemas, an idempotent unregister,
//! `system.get_state`'s arrays and status names, `system.health`'s services, `system.metrics`
//! from real counters, `system.discover`, and ClaudeBench's `UNAUTHORIZED` code.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use vigil::Config;
use vigil::server::ServerConfig;

/// One JSON-RPC request over HTTP (optionally with a bearer token): the whole answer.
async fn rpc_as(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200, "{method}");
    answer.json().await.unwrap()
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    rpc_as(url, None, method, params).await
}

/// The result of a call that must succeed.
async fn result(url: &str, method: &str, params: Value) -> Value {
    let answer = rpc(url, method, params).await;
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// Asserts `answer` is −32602 naming `field`.
fn invalid(answer: &Value, field: &str) {
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert_eq!(answer["error"]["data"]["field"], field, "{answer}");
    assert!(answer["error"]["data"]["reason"].is_string(), "{answer}");
}

async fn serve() -> (String, vigil::Coordinator, tokio::sync::oneshot::Sender<()>) {
    crate::common::serve(Config::default(), ServerConfig::default()).await
}

/// `instanceId` is a string of at least one character: an empty one is −32602 (not
/// `alive: false`) on the JSON heartbeat — alone (the fast path), in a batch and over
/// WebSocket — on binary heartbeat frames, on `system.unregister` and `system.get_state`.
#[tokio::test]
async fn an_empty_instance_id_is_invalid_params_everywhere() {
    let (url, coordinator, stop) = serve().await;
    result(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    for method in ["system.heartbeat", "system.unregister", "system.get_state"] {
        invalid(
            &rpc(&url, method, json!({"instanceId": ""})).await,
            "instanceId",
        );
    }
    invalid(
        &rpc(&url, "system.heartbeat", json!({"id": ""})).await,
        "id",
    );
    // A batch of heartbeats takes the fast path item by item.
    let batch: Value = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!([
            {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w1"}, "id": 1},
            {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": ""}, "id": 2},
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch[0]["result"]["alive"], true, "{batch}");
    invalid(&batch[1], "instanceId");
    // WebSocket text frames.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/ws", url.replacen("http", "ws", 1)))
            .await
            .unwrap();
    crate::common::welcome(&mut ws).await;
    let frame = json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": ""}, "id": 3});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    invalid(&answer, "instanceId");
    // Binary heartbeat frames: the frame is refused, nothing beats.
    use vigil::rpc::binary::{AnswerFrame, HeartbeatFrame};
    let frame = HeartbeatFrame::new(9, vec!["w1".into(), "".into()]).encode();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer = AnswerFrame::decode(&answer.into_data()).unwrap();
    assert!(
        matches!(
            answer,
            AnswerFrame::Error {
                seq: 9,
                code: -32602,
                ..
            }
        ),
        "{answer:?}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.register` as ClaudeBench's schema: `roles` is a required array of strings, and
/// `metadata.workingDirectory` a string; nothing is registered otherwise. `sessionId` and
/// `timestamp` of `system.unregister`, when sent, are a non-empty string and a number.
#[tokio::test]
async fn register_and_unregister_inputs_follow_claudebench_schemas() {
    let (url, coordinator, stop) = serve().await;
    invalid(
        &rpc(&url, "system.register", json!({"id": "w1"})).await,
        "roles",
    );
    invalid(
        &rpc(
            &url,
            "system.register",
            json!({"id": "w1", "roles": "worker"}),
        )
        .await,
        "roles",
    );
    invalid(
        &rpc(
            &url,
            "system.register",
            json!({"id": "w1", "roles": ["worker", 7]}),
        )
        .await,
        "roles[1]",
    );
    invalid(
        &rpc(
            &url,
            "system.register",
            json!({"id": "w1", "roles": [], "metadata": {"workingDirectory": 5}}),
        )
        .await,
        "metadata.workingDirectory",
    );
    invalid(
        &rpc(&url, "system.register", json!({"id": "", "roles": []})).await,
        "id",
    );
    assert_eq!(coordinator.instance_count(), 0, "nothing was registered");
    // An empty roles array is allowed, as ClaudeBench's `z.array(z.string())`.
    let registered = result(
        &url,
        "system.register",
        json!({"id": "w1", "roles": [], "metadata": {"workingDirectory": "/src"}}),
    )
    .await;
    assert_eq!(registered["registered"], true);
    invalid(
        &rpc(
            &url,
            "system.unregister",
            json!({"instanceId": "w1", "sessionId": ""}),
        )
        .await,
        "sessionId",
    );
    invalid(
        &rpc(
            &url,
            "system.unregister",
            json!({"instanceId": "w1", "timestamp": "now"}),
        )
        .await,
        "timestamp",
    );
    assert_eq!(
        coordinator.instance_count(),
        1,
        "the refused unregisters changed nothing"
    );
    let gone = result(
        &url,
        "system.unregister",
        json!({"instanceId": "w1", "sessionId": "s-1", "timestamp": 1_700_000_000_000u64}),
    )
    .await;
    assert_eq!(gone["unregistered"], true);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.unregister` is idempotent, as ClaudeBench's: an unknown id, and one already
/// unregistered, answer `unregistered: true`, `tasksReassigned: 0` (`wasRegistered: false`).
#[tokio::test]
async fn unregister_of_an_unknown_or_departed_instance_answers_unregistered() {
    let (url, coordinator, stop) = serve().await;
    let unknown = result(&url, "system.unregister", json!({"instanceId": "nobody"})).await;
    assert_eq!(
        unknown,
        json!({"unregistered": true, "tasksReassigned": 0, "wasRegistered": false})
    );
    result(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    result(&url, "task.create", json!({"text": "job"})).await;
    let claim = result(&url, "task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(claim["claimed"], true, "{claim}");
    let first = result(&url, "system.unregister", json!({"instanceId": "w1"})).await;
    assert_eq!(
        first,
        json!({"unregistered": true, "tasksReassigned": 1, "wasRegistered": true})
    );
    let again = result(&url, "system.unregister", json!({"instanceId": "w1"})).await;
    assert_eq!(
        again,
        json!({"unregistered": true, "tasksReassigned": 0, "wasRegistered": false})
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

const OPS: &str = "ops-0123456789abcdef";
const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";

/// Forbidden is ClaudeBench's `UNAUTHORIZED`, −32002: another principal's live instance
/// cannot be unregistered (idempotence does not open that door) nor heartbeated, and
/// `chaos.*`-style operator methods aside, the refusal carries `data.reason`.
#[tokio::test]
async fn acting_on_another_principals_live_instance_is_minus_32002() {
    use vigil::rpc::Role;
    use vigil::server::NamedToken;
    let named = |name: &str, token: &str| NamedToken {
        name: name.into(),
        role: Role::Worker,
        token: token.into(),
    };
    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some(OPS.into()),
            tokens: vec![named("alice", ALICE), named("bob", BOB)],
            ..ServerConfig::default()
        },
    )
    .await;
    let registered = rpc_as(
        &url,
        Some(ALICE),
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    assert_eq!(registered["result"]["registered"], true, "{registered}");
    for (method, params) in [
        ("system.unregister", json!({"instanceId": "w-alice"})),
        ("system.heartbeat", json!({"instanceId": "w-alice"})),
    ] {
        let refused = rpc_as(&url, Some(BOB), method, params).await;
        assert_eq!(refused["error"]["code"], -32002, "{method}: {refused}");
        assert_eq!(
            refused["error"]["data"]["instanceId"], "w-alice",
            "{refused}"
        );
        assert!(refused["error"]["data"]["reason"].is_string(), "{refused}");
    }
    assert_eq!(coordinator.instance_count(), 1, "still registered");
    // Bob may "unregister" an id nobody holds: idempotent, nothing to protect.
    let free = rpc_as(
        &url,
        Some(BOB),
        "system.unregister",
        json!({"instanceId": "free"}),
    )
    .await;
    assert_eq!(free["result"]["unregistered"], true, "{free}");
    let own = rpc_as(
        &url,
        Some(ALICE),
        "system.unregister",
        json!({"instanceId": "w-alice"}),
    )
    .await;
    assert_eq!(own["result"]["wasRegistered"], true, "{own}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.get_state` answers ClaudeBench's arrays — `instances`, `tasks`, `recentEvents`,
/// each bounded by `limit` — with ClaudeBench's status names (`BUSY` while holding a claim,
/// `ACTIVE` otherwise), `lastSeen` in ms and `lastHeartbeat` in ISO 8601, Vigil's own status
/// under `state`, and the task counts under `taskCounts`.
#[tokio::test]
async fn get_state_answers_claudebench_arrays_and_status_names() {
    let (url, coordinator, stop) = serve().await;
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for id in ["a-busy", "b-free"] {
        result(
            &url,
            "system.register",
            json!({"id": id, "roles": ["worker"]}),
        )
        .await;
    }
    for i in 0..3 {
        result(&url, "task.create", json!({"text": format!("job {i}")})).await;
    }
    result(&url, "task.claim", json!({"workerId": "a-busy"})).await;
    let state = result(&url, "system.get_state", json!({})).await;
    let instances = state["instances"].as_array().expect("an array");
    assert_eq!(instances.len(), 2, "{state}");
    let (busy, free) = (&instances[0], &instances[1]);
    assert_eq!(busy["id"], "a-busy");
    assert_eq!(busy["status"], "BUSY", "{busy}");
    assert_eq!(busy["taskCount"], 1);
    assert_eq!(free["status"], "ACTIVE", "{free}");
    for i in instances {
        assert_eq!(i["state"], "active", "{i}");
        assert_eq!(i["health"], "healthy", "{i}");
        let seen = i["lastSeen"].as_u64().expect("ms, a number");
        assert!(seen >= before_ms.saturating_sub(1000), "{i}");
        assert_eq!(i["lastSeen"], i["lastSeenMs"]);
        let iso = i["lastHeartbeat"].as_str().expect("ISO text");
        assert!(iso.ends_with('Z') && iso.len() == 24, "{iso}");
        assert!(i["roles"].is_array() && i["epoch"].is_u64(), "{i}");
    }
    let tasks = state["tasks"].as_array().expect("an array");
    assert_eq!(tasks.len(), 3, "{state}");
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.trim_start_matches("t-").parse::<u64>().unwrap());
    assert_eq!(ids, sorted, "tasks in id order");
    assert!(
        tasks.iter().all(|t| t.get("claimToken").is_none()),
        "no claim token in the state"
    );
    assert!(state["recentEvents"].is_array());
    assert_eq!(state["taskCounts"]["pending"], 2, "{state}");
    assert_eq!(state["taskCounts"]["in_progress"], 1, "{state}");
    assert_eq!(state["instanceCount"], 2);
    assert_eq!(state["leader"], "a-busy");
    assert!(state["term"].is_u64() && state["leadership"].is_object());
    // Every list is bounded by `limit`.
    let small = result(&url, "system.get_state", json!({"limit": 1})).await;
    assert_eq!(small["instances"].as_array().unwrap().len(), 1);
    assert_eq!(small["tasks"].as_array().unwrap().len(), 1);
    assert!(small["recentEvents"].as_array().unwrap().len() <= 1);
    assert_eq!(small["truncated"], true);
    assert_eq!(small["nextAfter"], "a-busy");
    invalid(
        &rpc(&url, "system.get_state", json!({"limit": 1001})).await,
        "limit",
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// An instance that stops heartbeating shows as `IDLE` (suspect) in `system.get_state` and
/// makes `system.health` `degraded`; once it has expired the cluster is `healthy` again.
#[tokio::test]
async fn a_silent_instance_is_idle_and_the_cluster_degraded() {
    let (url, coordinator, stop) = serve().await;
    result(
        &url,
        "system.register",
        json!({"id": "steady", "roles": ["worker"], "ttlMs": 60_000}),
    )
    .await;
    result(
        &url,
        "system.register",
        json!({"id": "silent", "roles": ["worker"], "ttlMs": 1_000}),
    )
    .await;
    let started = Instant::now();
    let mut seen_idle = false;
    while started.elapsed() < Duration::from_secs(5) {
        let state = result(&url, "system.get_state", json!({"instanceId": "silent"})).await;
        let health = result(&url, "system.health", json!({})).await;
        match state["instances"][0]["status"].as_str() {
            Some("IDLE") => {
                seen_idle = true;
                // Suspect: still alive, so half the instances are; ClaudeBench's rule says
                // degraded. (The health call came after the state call: suspect or gone.)
                assert_ne!(health["status"], "unhealthy", "{health}");
                assert_eq!(state["instances"][0]["state"], "suspect");
                assert_eq!(state["instances"][0]["health"], "degraded");
            }
            Some("ACTIVE") => {}
            None => break, // expired and removed
            Some(other) => assert_eq!(other, "OFFLINE", "{state}"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(seen_idle, "the silent instance was never shown IDLE");
    // Gone: only the steady one is left, all active.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = result(&url, "system.health", json!({})).await;
        if health["status"] == "healthy" && health["services"]["instances"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.health` reports `services` as ClaudeBench's clients read them: `redis` false
/// without Redis, `postgres` false, `mcp` true exactly when `/mcp` is served (with the `mcp`
/// feature, unless `ServerConfig::mcp` is off), Vigil's details beside.
#[tokio::test]
async fn health_reports_claudebench_services_truthfully() {
    let (url, coordinator, stop) = serve().await;
    let health = result(&url, "system.health", json!({})).await;
    assert_eq!(
        health["status"], "healthy",
        "no instances: the coordinator is fine"
    );
    let services = &health["services"];
    assert_eq!(services["redis"], false, "{health}");
    assert_eq!(services["postgres"], false);
    assert_eq!(services["mcp"], cfg!(feature = "mcp"));
    assert_eq!(services["store"], "memory");
    assert_eq!(services["storeState"], "ok");
    assert_eq!(services["coordinator"], "up");
    assert_eq!(health["instanceStates"]["active"], 0);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.metrics` answers ClaudeBench's shape from this server's own counters: the calls it
/// answered, their mean time, completed tasks, resident memory; with `detailed`, per-method
/// figures, the queue, and current counts. Nothing it does not measure is shown.
#[tokio::test]
async fn metrics_come_from_real_counters() {
    let (url, coordinator, stop) = serve().await;
    let first = result(&url, "system.metrics", json!({})).await;
    // Nothing was answered before this call (it is counted once done).
    assert_eq!(first["eventsProcessed"], 0, "{first}");
    assert_eq!(first["tasksCompleted"], 0);
    assert!(first.get("queue").is_none() && first.get("handlers").is_none());
    #[cfg(target_os = "linux")]
    {
        let mb = first["memoryUsage"].as_f64().expect("RSS in MB on Linux");
        assert!(mb > 1.0 && mb < 4096.0, "{first}");
    }
    result(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    for _ in 0..5 {
        result(&url, "system.heartbeat", json!({"instanceId": "w1"})).await;
    }
    invalid(
        &rpc(&url, "system.heartbeat", json!({"instanceId": ""})).await,
        "instanceId",
    );
    result(&url, "task.create", json!({"text": "a"})).await;
    result(&url, "task.create", json!({"text": "b"})).await;
    let claim = result(&url, "task.claim", json!({"workerId": "w1"})).await;
    let done = result(
        &url,
        "task.complete",
        json!({"taskId": claim["taskId"], "claimToken": claim["claimToken"]}),
    )
    .await;
    assert_eq!(done["status"], "completed");
    let m = result(&url, "system.metrics", json!({"detailed": true})).await;
    // metrics, register, 6 heartbeats, 2 creates, claim, complete.
    assert_eq!(m["eventsProcessed"], 12, "{m}");
    assert_eq!(m["tasksCompleted"], 1);
    assert!(m["averageLatency"].as_f64().unwrap() > 0.0, "{m}");
    let beat = &m["handlers"]["system.heartbeat"];
    assert_eq!(beat["totalCalls"], 6, "{m}");
    assert_eq!(beat["successCount"], 5);
    assert_eq!(beat["errorCount"], 1);
    assert!(beat["avgResponseTime"].as_f64().unwrap() > 0.0);
    assert_eq!(beat["circuitState"], "CLOSED");
    assert_eq!(m["handlers"]["task.create"]["totalCalls"], 2);
    assert!(m["handlers"].get("lease.acquire").is_none(), "never called");
    assert_eq!(m["queue"]["depth"], 1);
    assert_eq!(m["queue"]["pending"], 1);
    assert!(m["queue"]["throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(m["current"]["instancesActive"], 1);
    assert_eq!(m["current"]["tasksPending"], 1);
    assert_eq!(m["current"]["tasksCompleted"], 1);
    assert_eq!(m["current"]["eventsTotal"], 12);
    assert!(m["current"]["metricsStartTime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(m["scaling"]["instanceCount"], 1);
    assert_eq!(m["global"]["taskSuccess"], 1);
    assert_eq!(m["global"]["totalTasks"], 2);
    // 1 metrics + 1 register + 5 heartbeats answered without error.
    assert_eq!(m["global"]["systemSuccess"], 7);
    for absent in [
        "circuitBreaker",
        "cache",
        "counters",
        "mcpCalls",
        "systemHealthCheck",
    ] {
        assert!(m.get(absent).is_none(), "{absent} is not measured: {m}");
    }
    invalid(
        &rpc(&url, "system.metrics", json!({"detailed": "yes"})).await,
        "detailed",
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `system.discover` lists every method the server answers, each with a parameter schema;
/// every listed method is answered (not −32601), `domain` filters, `chaos.*` only where served.
#[tokio::test]
async fn discover_lists_what_the_server_dispatches() {
    let (url, coordinator, stop) = serve().await;
    let all = result(&url, "system.discover", json!({})).await;
    let methods = all["methods"].as_array().unwrap();
    let names: BTreeSet<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for m in methods {
        assert_eq!(m["inputSchema"]["type"], "object", "{m}");
        assert!(
            m["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{m}"
        );
        assert!(m["metadata"]["readOnly"].is_boolean(), "{m}");
    }
    for expected in [
        "system.register",
        "system.heartbeat",
        "system.unregister",
        "system.check_health",
        "system.get_state",
        "system.health",
        "system.metrics",
        "system.discover",
        "task.create",
        "task.claim",
        "task.list",
        "task.update",
        "task.assign",
        "task.unassign",
        "task.delete",
        "lease.acquire",
        "events.subscribe",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("chaos.")),
        "chaos is not served here"
    );
    let heartbeat = methods
        .iter()
        .find(|m| m["name"] == "system.heartbeat")
        .unwrap();
    assert_eq!(heartbeat["inputSchema"]["required"], json!(["instanceId"]));
    assert_eq!(
        heartbeat["inputSchema"]["properties"]["instanceId"]["minLength"],
        1
    );
    let register = methods
        .iter()
        .find(|m| m["name"] == "system.register")
        .unwrap();
    assert_eq!(register["inputSchema"]["required"], json!(["id", "roles"]));
    // Every listed JSON-RPC method is answered by the dispatcher (the task methods another
    // change adds are checked by the unit test `every_listed_method_is_dispatched`).
    for name in &names {
        if [
            "events.subscribe",
            "task.update",
            "task.assign",
            "task.unassign",
            "task.delete",
        ]
        .contains(name)
        {
            continue;
        }
        let answer = rpc(&url, name, json!({})).await;
        assert_ne!(answer["error"]["code"], -32601, "{name}: {answer}");
    }
    let system = result(&url, "system.discover", json!({"domain": "system"})).await;
    let system: Vec<&str> = system["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(system.len(), 8, "{system:?}");
    assert!(system.iter().all(|n| n.starts_with("system.")));
    let none = result(&url, "system.discover", json!({"domain": "sys"})).await;
    assert_eq!(none["methods"], json!([]), "a domain is a whole prefix");
    invalid(
        &rpc(&url, "system.discover", json!({"domain": 1})).await,
        "domain",
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// The call timeout has its own code, −32007, distinct from ClaudeBench's −32002
/// (`UNAUTHORIZED`), and the Rust client still reads it as transient.
#[test]
fn timeout_and_unauthorized_codes_are_claudebench_s() {
    use vigil::rpc::code;
    assert_eq!(code::RATE_LIMITED, -32000);
    assert_eq!(code::STORE_UNAVAILABLE, -32001);
    assert_eq!(code::UNAUTHORIZED, -32002);
    assert_eq!(code::TIMEOUT, -32007);
    let timeout = vigil::client::ClientError::Rpc {
        code: code::TIMEOUT,
        message: "timed out".into(),
        data: None,
    };
    assert!(timeout.is_transient());
    let forbidden = vigil::client::ClientError::Rpc {
        code: code::UNAUTHORIZED,
        message: "forbidden".into(),
        data: None,
    };
    assert!(!forbidden.is_transient());
    assert_eq!(
        vigil::client::ClientError::Unauthorized {
            url: String::new(),
            token_sent: false
        }
        .code(),
        -32002
    );
}
