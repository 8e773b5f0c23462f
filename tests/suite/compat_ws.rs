//! ClaudeBench's WebSocket protocol on `/ws` (its `transports/websocket.ts` and the tests in
//! `apps/server/tests/frontend/websocket-transport.test.ts`, `transports.test.ts`), beside
//! Vigil's JSON-RPC frames, over the real server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vigil::Config;
use vigil::rpc::Role;
use vigil::server::{NamedToken, ServerConfig};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url` (with `token`, if any) and its welcome.
async fn open(url: &str, token: Option<&str>) -> (Ws, Value) {
    let mut request = format!("{}/ws", url.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let welcome = crate::common::welcome(&mut ws).await;
    (ws, welcome)
}

async fn send(ws: &mut Ws, frame: impl Into<String>) {
    ws.send(Message::Text(frame.into().into())).await.unwrap();
}

/// The next text frame (pings skipped), within 5 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        match next {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// Every text frame arriving within `quiet` of the previous one.
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = m {
            frames.push(serde_json::from_str(t.as_str()).unwrap());
        }
    }
    frames
}

async fn rpc(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

async fn serve() -> (String, tokio::sync::oneshot::Sender<()>) {
    let (url, _, stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    (url, stop)
}

const OPS: &str = "ops-0123456789abcdef";
const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";

/// A server with an operator token and two worker principals, and a heartbeat limit of
/// `beats` a minute.
async fn serve_with_principals(beats: u32) -> (String, tokio::sync::oneshot::Sender<()>) {
    let named = |name: &str, token: &str| NamedToken {
        name: name.into(),
        role: Role::Worker,
        token: token.into(),
    };
    let (url, _, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some(OPS.into()),
            tokens: vec![named("alice", ALICE), named("bob", BOB)],
            heartbeats_per_minute: beats,
            ..ServerConfig::default()
        },
    )
    .await;
    (url, stop)
}

#[tokio::test]
async fn welcome_ping_and_bad_frames_answer_as_claudebench_does() {
    let (url, stop) = serve().await;
    let (mut ws, welcome) = open(&url, None).await;
    assert!(
        welcome["clientId"].as_str().unwrap().starts_with("ws-"),
        "{welcome}"
    );
    assert!(welcome["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    // It is a JSON-RPC notification too (no id: nothing to answer).
    assert_eq!(welcome["jsonrpc"], "2.0");
    assert!(welcome.get("id").is_none());
    assert_eq!(welcome["params"]["clientId"], welcome["clientId"]);

    send(&mut ws, json!({"action": "ping"}).to_string()).await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert!(pong["timestamp"].is_u64());

    // Not JSON: ClaudeBench's error frame, which is also the JSON-RPC parse error.
    send(&mut ws, "invalid json").await;
    let error = recv(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unexpected"),
        "{error}"
    );
    assert_eq!(error["error"]["code"], -32700);
    assert_eq!(error["id"], Value::Null);

    for (frame, names) in [
        (json!({"action": "invalid_action"}), "action"),
        (json!({"action": "subscribe"}), "events"),
        (json!({"action": "subscribe", "events": "task.*"}), "events"),
        (json!({"action": "unsubscribe", "events": [1]}), "events[0]"),
        (json!({"action": "execute"}), "request"),
        (
            json!({"action": "execute", "request": {"method": "system.health", "id": 1}}),
            "request.jsonrpc",
        ),
        (json!({"action": 7}), "action"),
    ] {
        send(&mut ws, frame.to_string()).await;
        let error = recv(&mut ws).await;
        assert_eq!(error["type"], "error", "{frame} → {error}");
        assert_eq!(error["error"]["code"], -32602, "{frame} → {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(names), "{frame} → {message}");
        assert!(error["timestamp"].is_u64());
    }
    // A subscription past the bound is refused whole.
    let many: Vec<String> = (0..101).map(|i| format!("t{i}.*")).collect();
    send(
        &mut ws,
        json!({"action": "subscribe", "events": many}).to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "error");
    let _ = stop.send(());
}

#[tokio::test]
async fn a_task_wildcard_gets_claudebench_envelopes_until_unsubscribed() {
    let (url, stop) = serve().await;
    let (mut ws, _) = open(&url, None).await;
    send(
        &mut ws,
        json!({"action": "subscribe", "events": ["task.*"]}).to_string(),
    )
    .await;
    let subscribed = recv(&mut ws).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["events"], json!(["task.*"]));

    let created = rpc(
        &url,
        None,
        "task.create",
        json!({"text": "Test task for wildcard", "priority": 70}),
    )
    .await;
    let task_id = created["result"]["id"].as_str().unwrap().to_string();
    let event = recv(&mut ws).await;
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["event"], "task.created");
    assert!(event["timestamp"].is_u64());
    let data = &event["data"];
    assert_eq!(data["type"], "task.created");
    assert!(data["id"].as_str().unwrap().starts_with("evt-"), "{data}");
    assert!(data["timestamp"].is_u64());
    assert!(data["metadata"].is_object());
    let payload = &data["payload"];
    assert_eq!(payload["id"], task_id.as_str());
    assert_eq!(payload["text"], "Test task for wildcard");
    assert_eq!(payload["status"], "pending");
    assert_eq!(payload["priority"], 70);
    let created_at = payload["createdAt"].as_str().unwrap();
    assert!(
        created_at.len() == 24 && created_at.ends_with('Z') && created_at.contains('T'),
        "ISO 8601 like JavaScript's toISOString: {created_at}"
    );

    // Not a task event: filtered out (it would arrive before the claim's events).
    rpc(
        &url,
        None,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    let claim = rpc(&url, None, "task.claim", json!({"workerId": "w1"})).await;
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    let claimed = recv(&mut ws).await;
    assert_eq!(claimed["event"], "task.claimed", "{claimed}");
    assert_eq!(claimed["data"]["payload"]["taskId"], task_id.as_str());
    assert_eq!(claimed["data"]["payload"]["workerId"], "w1");
    assert_eq!(claimed["data"]["payload"]["status"], "in_progress");
    assert_eq!(claimed["data"]["payload"]["assignedTo"], "w1");
    // Not `instanceId`: ClaudeBench's relay would drop it as its own instance's event.
    assert!(claimed["data"]["payload"].get("instanceId").is_none());
    let done = rpc(
        &url,
        None,
        "task.complete",
        json!({"taskId": task_id, "claimToken": token}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let completed = recv(&mut ws).await;
    assert_eq!(completed["event"], "task.completed", "{completed}");
    assert_eq!(completed["data"]["payload"]["id"], task_id.as_str());
    assert_eq!(completed["data"]["payload"]["status"], "completed");
    assert_eq!(completed["data"]["metadata"]["completedBy"], "w1");
    for frame in [&event, &claimed, &completed] {
        assert!(!frame.to_string().contains(&token), "{frame}");
    }

    send(
        &mut ws,
        json!({"action": "unsubscribe", "events": ["task.*"]}).to_string(),
    )
    .await;
    let unsubscribed = recv(&mut ws).await;
    assert_eq!(unsubscribed["type"], "unsubscribed", "{unsubscribed}");
    assert_eq!(unsubscribed["events"], json!(["task.*"]));
    rpc(&url, None, "task.create", json!({"text": "unseen"})).await;
    send(&mut ws, json!({"action": "ping"}).to_string()).await;
    let mut frames = vec![recv(&mut ws).await];
    frames.extend(drain(&mut ws, Duration::from_millis(300)).await);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "pong");

    // `*` takes everything, instance events included, with their payload.
    send(
        &mut ws,
        json!({"action": "subscribe", "events": ["*"]}).to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    rpc(
        &url,
        None,
        "system.register",
        json!({"id": "w2", "roles": ["docs"]}),
    )
    .await;
    let registered = recv(&mut ws).await;
    assert_eq!(registered["event"], "instance.registered", "{registered}");
    assert_eq!(registered["data"]["payload"]["id"], "w2");
    assert_eq!(registered["data"]["payload"]["roles"], json!(["docs"]));
    let _ = stop.send(());
}

#[tokio::test]
async fn execute_answers_in_json_rpc_through_the_same_dispatcher() {
    let (url, stop) = serve_with_principals(2).await;
    let (mut ws, _) = open(&url, Some(BOB)).await;
    send(
        &mut ws,
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "system.health", "params": {}, "id": "test-1"}})
            .to_string(),
    )
    .await;
    let health = recv(&mut ws).await;
    assert_eq!(health["jsonrpc"], "2.0", "{health}");
    assert_eq!(health["id"], "test-1");
    assert!(health["result"]["status"].is_string());
    assert!(health["result"]["services"].is_object());

    // The principal of the socket's token: bob may not act on alice's instance.
    let registered = rpc(
        &url,
        Some(ALICE),
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    assert_eq!(registered["result"]["registered"], true, "{registered}");
    send(
        &mut ws,
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "system.unregister", "params": {"instanceId": "w-alice"}, "id": 2}})
            .to_string(),
    )
    .await;
    let refused = recv(&mut ws).await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
    assert_eq!(refused["id"], 2);

    // The heartbeat rate limit (2 a minute here) counts executed heartbeats too.
    let beat = |id: u64| {
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w-bob"}, "id": id}})
            .to_string()
    };
    send(
        &mut ws,
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "system.register", "params": {"id": "w-bob", "roles": ["worker"]}, "id": 3}})
            .to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["result"]["registered"], true);
    let mut codes = Vec::new();
    for id in 10..13 {
        send(&mut ws, beat(id)).await;
        let answer = recv(&mut ws).await;
        assert_eq!(answer["id"], id);
        codes.push(answer["error"]["code"].as_i64());
    }
    assert_eq!(codes, [None, None, Some(-32000)]);

    // A notification is run and not answered.
    send(
        &mut ws,
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "system.health"}})
            .to_string(),
    )
    .await;
    send(&mut ws, json!({"action": "ping"}).to_string()).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    let _ = stop.send(());
}

#[tokio::test]
async fn json_rpc_frames_and_claudebench_frames_share_a_connection() {
    let (url, stop) = serve().await;
    let (mut ws, _) = open(&url, None).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "method": "system.register", "params": {"id": "w1", "roles": ["worker"]}, "id": "r1"})
            .to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["result"]["registered"], true);
    send(
        &mut ws,
        json!({"action": "subscribe", "events": ["task.created"]}).to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "method": "events.subscribe", "params": {"types": ["task.created"]}, "id": 2})
            .to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["result"]["subscribed"], true);
    rpc(&url, None, "task.create", json!({"text": "both"})).await;
    let mut pushed = vec![recv(&mut ws).await, recv(&mut ws).await];
    pushed.sort_by_key(|f| f["method"].is_string());
    assert_eq!(pushed[0]["type"], "event", "{pushed:?}");
    assert_eq!(pushed[0]["data"]["payload"]["text"], "both");
    assert_eq!(pushed[1]["method"], "event", "{pushed:?}");
    assert_eq!(pushed[1]["params"]["type"], "task.created");
    // JSON-RPC frames and batches are answered as before; an object with `jsonrpc` and
    // `action` is JSON-RPC.
    send(
        &mut ws,
        json!([{"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w1"}, "id": 10}])
            .to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await[0]["result"]["alive"], true);
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "action": "ping", "method": "system.heartbeat", "params": {"instanceId": "w1"}, "id": 11})
            .to_string(),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["result"]["alive"], true, "{answer}");
    // An invalid JSON-RPC request keeps its JSON-RPC error (with id) and no ClaudeBench type.
    send(
        &mut ws,
        json!({"jsonrpc": "1.0", "method": "system.health", "id": 12}).to_string(),
    )
    .await;
    let invalid = recv(&mut ws).await;
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");
    assert_eq!(invalid["id"], 12);
    assert!(invalid.get("type").is_none(), "{invalid}");
    let _ = stop.send(());
}

#[tokio::test]
async fn a_plain_get_is_426_and_stats_count_the_open_sockets() {
    let (url, stop) = serve_with_principals(1000).await;
    let http = reqwest::Client::new();
    let plain = http
        .get(format!("{url}/ws"))
        .bearer_auth(OPS)
        .header("connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    assert_eq!(plain.headers()["upgrade"], "websocket");
    // Both behind the token.
    let anonymous = http.get(format!("{url}/ws/stats")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let stats = |token: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let answer = http
                .get(format!("{url}/ws/stats"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.unwrap()
        }
    };
    let empty = stats(OPS).await;
    assert_eq!(empty["totalClients"], 0, "{empty}");
    assert_eq!(empty["subscriptions"], json!({}));
    assert_eq!(empty["clients"], json!([]));

    let (mut a, welcome_a) = open(&url, Some(ALICE)).await;
    let (mut b, welcome_b) = open(&url, Some(BOB)).await;
    send(
        &mut a,
        json!({"action": "subscribe", "events": ["task.*", "instance.registered"]}).to_string(),
    )
    .await;
    send(
        &mut b,
        json!({"action": "subscribe", "events": ["task.*"]}).to_string(),
    )
    .await;
    recv(&mut a).await;
    recv(&mut b).await;
    let all = stats(OPS).await;
    assert_eq!(all["totalClients"], 2, "{all}");
    assert_eq!(
        all["subscriptions"],
        json!({"task.*": 2, "instance.registered": 1})
    );
    let ids: Vec<&Value> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&welcome_a["clientId"], &welcome_b["clientId"]]);
    assert_eq!(
        all["clients"][0]["subscriptions"],
        json!(["task.*", "instance.registered"])
    );
    assert!(all["clients"][0]["metadata"]["connectedAt"].is_u64());
    // A worker sees the counts, and only its own sockets.
    let bobs = stats(BOB).await;
    assert_eq!(bobs["totalClients"], 2);
    assert_eq!(bobs["clients"].as_array().unwrap().len(), 1, "{bobs}");
    assert_eq!(bobs["clients"][0]["id"], welcome_b["clientId"]);

    a.close(None).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let now = stats(OPS).await;
        if now["totalClients"] == 1 {
            assert_eq!(now["subscriptions"], json!({"task.*": 1}));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
}

/// The next pushed event of type `kind` (others skipped), within 5 s.
async fn event_of(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..100 {
        let frame = recv(ws).await;
        if frame["type"] == "event" && frame["event"] == kind {
            return frame;
        }
    }
    panic!("no {kind} event among 100 frames");
}

/// One session the way ClaudeBench's web app drives it (`apps/web/src/services/event-client.ts`
/// and its components): a WebSocket subscribed to everything, a health + state batch on `/rpc`
/// with the client's top-level `metadata` member, create, list, assign, move the card to
/// in progress, complete without a token, and the events of each step on the socket.
#[tokio::test]
async fn a_web_app_session_end_to_end() {
    let (url, stop) = serve().await;
    let (mut ws, welcome) = open(&url, None).await;
    assert_eq!(welcome["type"], "connected");
    send(
        &mut ws,
        json!({"action": "subscribe", "events": ["*"]}).to_string(),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");

    let meta = json!({"sessionId": "web-1", "timestamp": 1});
    let batch: Value = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!([
            {"jsonrpc": "2.0", "method": "system.health", "params": {}, "id": 1, "metadata": meta},
            {"jsonrpc": "2.0", "method": "system.get_state", "params": {}, "id": 2, "metadata": meta},
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let health = &batch[0]["result"];
    assert_eq!(
        health["services"]["redis"], false,
        "no Redis configured: {health}"
    );
    assert_eq!(health["services"]["postgres"], false);
    assert!(batch[1]["result"]["instances"].is_array(), "{batch}");
    assert!(batch[1]["result"]["tasks"].is_array(), "{batch}");

    let ok = |v: Value| {
        assert!(v.get("error").is_none(), "{v}");
        v["result"].clone()
    };
    ok(rpc(
        &url,
        None,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await);
    let task = ok(rpc(
        &url,
        None,
        "task.create",
        json!({"text": "Fix the login page", "priority": 75, "metadata": {"board": "web"}}),
    )
    .await);
    let created = event_of(&mut ws, "task.created").await;
    assert_eq!(created["data"]["payload"]["text"], "Fix the login page");
    let listed = ok(rpc(&url, None, "task.list", json!({"limit": 50})).await);
    assert_eq!(listed["totalCount"], 1);
    let card = &listed["tasks"][0];
    assert_eq!(
        (card["text"].clone(), card["status"].clone()),
        (json!("Fix the login page"), json!("pending"))
    );
    assert!(
        card["createdAt"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{card}"
    );

    ok(rpc(
        &url,
        None,
        "task.assign",
        json!({"taskId": task["id"], "instanceId": "w1"}),
    )
    .await);
    let assigned = event_of(&mut ws, "task.assigned").await;
    assert_eq!(assigned["data"]["payload"]["taskId"], task["id"]);
    assert_eq!(assigned["data"]["payload"]["instanceId"], "w1");
    let moved = ok(rpc(
        &url,
        None,
        "task.update",
        json!({"id": task["id"], "updates": {"status": "in_progress"}}),
    )
    .await);
    assert_eq!(
        (moved["status"].clone(), moved["assignedTo"].clone()),
        (json!("in_progress"), json!("w1"))
    );
    event_of(&mut ws, "task.updated").await;
    let done = ok(rpc(
        &url,
        None,
        "task.complete",
        json!({"id": task["id"], "result": {"fixed": true}}),
    )
    .await);
    assert_eq!(done["status"], "completed");
    let completed = event_of(&mut ws, "task.completed").await;
    assert_eq!(completed["data"]["payload"]["status"], "completed");
    assert!(!completed.to_string().contains("claimToken"), "{completed}");

    // The web app's own calls over the socket, answered in JSON-RPC.
    send(
        &mut ws,
        json!({"action": "execute", "request": {"jsonrpc": "2.0", "method": "task.list", "params": {"status": "completed"}, "id": 9}})
            .to_string(),
    )
    .await;
    let answer = loop {
        let frame = recv(&mut ws).await;
        if frame["id"] == 9 {
            break frame;
        }
    };
    assert_eq!(answer["result"]["totalCount"], 1, "{answer}");
    let state = ok(rpc(&url, None, "system.get_state", json!({})).await);
    assert_eq!(state["instances"][0]["status"], "ACTIVE", "{state}");
    assert_eq!(state["tasks"][0]["status"], "completed", "{state}");
    let metrics = ok(rpc(&url, None, "system.metrics", json!({})).await);
    assert!(
        metrics["eventsProcessed"].as_u64().is_some_and(|n| n >= 8),
        "{metrics}"
    );
    let _ = stop.send(());
}
