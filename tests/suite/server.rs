//! End-to-end over HTTP: a real server on an ephemeral loopback port, a real HTTP client.

use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use vigil::server::{Server, ServerConfig};
use vigil::{Config, Coordinator};

struct TestServer {
    addr: SocketAddr,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    coordinator: Coordinator,
}

impl TestServer {
    async fn start(config: ServerConfig) -> Self {
        let coordinator = Coordinator::start(Config::default()).await.unwrap();
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config
        };
        let server = Server::bind(coordinator.clone(), &config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            coordinator,
        }
    }

    async fn default() -> Self {
        Self::start(ServerConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Option<Value>) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        // Only JSON-RPC answers are JSON; 401 and 413 carry plain text.
        let body =
            (status == 200 && !text.is_empty()).then(|| serde_json::from_str(&text).unwrap());
        (status, body)
    }

    async fn rpc_value(&self, body: Value) -> (u16, Option<Value>) {
        self.post_raw("/rpc", body.to_string()).await
    }

    /// Calls `method` and returns its result, panicking on an error.
    async fn call(&self, method: &str, params: Value) -> Value {
        let (status, body) = self
            .rpc_value(json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
            .await;
        assert_eq!(status, 200);
        let body = body.unwrap();
        assert!(body.get("error").is_none(), "{method}: {body}");
        body["result"].clone()
    }

    /// Calls `method` and returns its error object.
    async fn call_err(&self, method: &str, params: Value) -> Value {
        let (_, body) = self
            .rpc_value(json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
            .await;
        let body = body.unwrap();
        assert!(body.get("result").is_none(), "{method} should fail: {body}");
        body["error"].clone()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.coordinator.shutdown().await;
    }
}

#[tokio::test]
async fn a_claudebench_shaped_session() {
    let s = TestServer::default().await;
    let reg = s
        .call(
            "system.register",
            json!({"id": "worker-claude-001", "roles": ["worker"], "metadata": {"v": 1}}),
        )
        .await;
    assert_eq!(reg["registered"], true);
    assert_eq!(reg["isLeader"], true);
    assert_eq!(reg["term"], 1);
    let beat = s
        .call(
            "system.heartbeat",
            json!({"instanceId": "worker-claude-001"}),
        )
        .await;
    assert_eq!(beat, json!({"alive": true, "isLeader": true, "term": 1}));
    let unknown = s
        .call("system.heartbeat", json!({"instanceId": "nobody"}))
        .await;
    assert_eq!(unknown["alive"], false);
    let task = s
        .call("task.create", json!({"text": "review PR", "priority": 70}))
        .await;
    assert_eq!(task["status"], "pending");
    assert!(task["createdAt"].is_string());
    assert!(task["createdAtMs"].is_u64());
    let claim = s
        .call("task.claim", json!({"workerId": "worker-claude-001"}))
        .await;
    assert_eq!(claim["claimed"], true);
    assert_eq!(claim["taskId"], task["id"]);
    let state = s.call("system.get_state", json!({})).await;
    assert_eq!(state["leader"], "worker-claude-001");
    assert_eq!(state["taskCounts"]["in_progress"], 1);
    assert_eq!(state["instances"][0]["status"], "BUSY", "{state}");
    assert_eq!(state["tasks"][0]["id"], task["id"], "{state}");
    let health = s
        .call("system.check_health", json!({"timeout": 60000}))
        .await;
    assert_eq!(health["healthy"], json!(["worker-claude-001"]));
    let out = s
        .call(
            "system.unregister",
            json!({"instanceId": "worker-claude-001", "sessionId": "s-1", "timestamp": 1}),
        )
        .await;
    assert_eq!(
        out,
        json!({"unregistered": true, "tasksReassigned": 1, "wasRegistered": true})
    );
    let task = s.call("task.get", json!({"id": task["id"]})).await;
    assert_eq!(task["status"], "pending");
    assert_eq!(
        s.call("system.health", json!({})).await["status"],
        "healthy"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_sortie_shaped_session() {
    let s = TestServer::default().await;
    for w in ["a", "b"] {
        s.call(
            "system.register",
            json!({"id": w, "roles": ["step-runner"]}),
        )
        .await;
    }
    let task = s
        .call("task.create", json!({"payload": {"step": 1}, "requiresLocks": ["repo/src", {"key": "repo/docs", "mode": "shared"}]}))
        .await;
    let claim = s.call("task.claim", json!({"workerId": "a"})).await;
    let token = claim["claimToken"].as_str().unwrap().to_string();
    assert_eq!(claim["leases"].as_array().unwrap().len(), 2);
    let step_id = task["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("t-")
        .parse::<u64>()
        .unwrap();
    let beat = s
        .call(
            "task.heartbeat",
            json!({"step_id": step_id, "claim_token": token, "extend_leases_sec": 600}),
        )
        .await;
    assert_eq!(beat["status"], "ok");
    assert_eq!(beat["step_id"], step_id);
    // "a" leaves; its step goes back and "b" takes it.
    s.call("system.unregister", json!({"instanceId": "a"}))
        .await;
    let again = s.call("task.claim", json!({"workerId": "b"})).await;
    assert_eq!(again["taskId"], task["id"]);
    let stale = s
        .call(
            "task.heartbeat",
            json!({"stepId": step_id, "claimToken": token}),
        )
        .await;
    assert_eq!(stale["status"], "stale_claim");
    let done = s
        .call(
            "task.complete",
            json!({"taskId": task["id"], "claimToken": again["claimToken"], "result": "ok"}),
        )
        .await;
    assert_eq!(done["status"], "completed");
    s.stop().await;
}

#[tokio::test]
async fn json_rpc_to_the_letter() {
    let s = TestServer::default().await;
    // Ids of every allowed kind come back as sent.
    for id in [json!("abc"), json!(7), json!(null)] {
        let (_, body) = s
            .rpc_value(json!({"jsonrpc": "2.0", "method": "system.health", "id": id}))
            .await;
        assert_eq!(body.unwrap()["id"], id);
    }
    // A notification alone: 204, no body.
    let (status, body) = s
        .rpc_value(
            json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "x"}}),
        )
        .await;
    assert_eq!((status, body), (204, None));
    // A batch: notifications are left out, order and ids kept.
    let (status, body) = s
        .rpc_value(json!([
            {"jsonrpc": "2.0", "method": "system.health", "id": "a"},
            {"jsonrpc": "2.0", "method": "system.health"},
            {"jsonrpc": "2.0", "method": "no.such", "id": "b"}
        ]))
        .await;
    assert_eq!(status, 200);
    let body = body.unwrap();
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(answers[1]["error"]["code"], -32601);
    // All notifications: 204.
    let (status, _) = s
        .rpc_value(json!([{"jsonrpc": "2.0", "method": "system.health"}]))
        .await;
    assert_eq!(status, 204);
    // Empty batch.
    let (_, body) = s.rpc_value(json!([])).await;
    assert_eq!(body.unwrap()["error"]["code"], -32600);
    // Malformed JSON.
    let (status, body) = s.post_raw("/rpc", "{\"jsonrpc\": ").await;
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert_eq!(body["error"]["code"], -32700);
    assert_eq!(body["id"], Value::Null);
    // Wrong version, missing method, bad id type, a non-object.
    for bad in [
        json!({"jsonrpc": "1.0", "method": "system.health", "id": 1}),
        json!({"jsonrpc": "2.0", "id": 1}),
        json!({"jsonrpc": "2.0", "method": "system.health", "id": {"x": 1}}),
        json!(42),
    ] {
        let (_, body) = s.rpc_value(bad.clone()).await;
        assert_eq!(body.unwrap()["error"]["code"], -32600, "{bad}");
    }
    // Bad params name the field.
    let err = s
        .call_err(
            "system.register",
            json!({"roles": ["worker"], "id": "has space"}),
        )
        .await;
    assert_eq!(err["code"], -32602);
    assert_eq!(err["data"]["field"], "id");
    let err = s.call_err("system.heartbeat", json!({})).await;
    assert_eq!(err["data"]["field"], "instanceId");
    let err = s
        .call_err("task.create", json!({"text": "x", "priority": 101}))
        .await;
    assert_eq!(err["data"]["field"], "priority");
    let err = s
        .call_err(
            "lease.acquire",
            json!({"key": "a", "holder": "w", "mode": "weird"}),
        )
        .await;
    assert_eq!(err["data"]["field"], "mode");
    // /rpc/batch takes arrays only.
    let (_, body) = s
        .post_raw(
            "/rpc/batch",
            json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}).to_string(),
        )
        .await;
    assert_eq!(body.unwrap()["error"]["code"], -32600);
    let (_, body) = s
        .post_raw(
            "/rpc/batch",
            json!([{"jsonrpc": "2.0", "method": "system.health", "id": 1}]).to_string(),
        )
        .await;
    assert_eq!(body.unwrap()[0]["result"]["status"], "healthy");
    s.stop().await;
}

#[tokio::test]
async fn limits_on_body_and_batch_size() {
    let s = TestServer::start(ServerConfig {
        max_body_bytes: 4096,
        max_batch: 3,
        ..ServerConfig::default()
    })
    .await;
    let big = json!({"jsonrpc": "2.0", "method": "task.create", "params": {"text": "x".repeat(5000)}, "id": 1});
    let (status, _) = s.rpc_value(big).await;
    assert_eq!(status, 413);
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"jsonrpc": "2.0", "method": "system.health", "id": i}))
        .collect();
    let (_, body) = s.rpc_value(Value::Array(batch)).await;
    assert_eq!(body.unwrap()["error"]["code"], -32600);
    s.stop().await;
}

#[tokio::test]
async fn a_bearer_token_guards_rpc() {
    let s = TestServer::start(ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    })
    .await;
    let request = json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}).to_string();
    let (status, _) = s.post_raw("/rpc", request.clone()).await;
    assert_eq!(status, 401);
    let wrong = s
        .client
        .post(s.url("/rpc"))
        .bearer_auth("nope")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = s
        .client
        .post(s.url("/rpc"))
        .bearer_auth("s3cret")
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // Health stays open for probes.
    let health = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn heartbeats_are_rate_limited_per_instance() {
    let s = TestServer::start(ServerConfig {
        heartbeats_per_minute: 5,
        ..ServerConfig::default()
    })
    .await;
    for w in ["noisy", "calm"] {
        s.call("system.register", json!({"roles": ["worker"], "id": w}))
            .await;
    }
    for _ in 0..5 {
        assert_eq!(
            s.call("system.heartbeat", json!({"instanceId": "noisy"}))
                .await["alive"],
            true
        );
    }
    let err = s
        .call_err("system.heartbeat", json!({"instanceId": "noisy"}))
        .await;
    assert_eq!(err["code"], -32000);
    let retry = err["data"]["retryAfterMs"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 12_000, "{retry}");
    // Another instance is not affected.
    assert_eq!(
        s.call("system.heartbeat", json!({"instanceId": "calm"}))
            .await["alive"],
        true
    );
    s.stop().await;
}

/// The value of the sample `name` (with its labels, exactly as rendered) on a metrics page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_page_counts_calls_and_shows_state() {
    let s = TestServer::start(ServerConfig {
        token: Some("m3trics".into()),
        ..ServerConfig::default()
    })
    .await;
    let unauthorized = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let scrape = || async {
        let response = s
            .client
            .get(s.url("/metrics"))
            .bearer_auth("m3trics")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        response.text().await.unwrap()
    };
    let rpc = |body: Value| {
        s.client
            .post(s.url("/rpc"))
            .bearer_auth("m3trics")
            .body(body.to_string())
            .send()
    };
    let before = scrape().await;
    let hb_ok = r#"vigil_rpc_calls_total{method="system.heartbeat",outcome="ok"}"#;
    let reg_ok = r#"vigil_rpc_calls_total{method="system.register",outcome="ok"}"#;
    let bad = r#"vigil_rpc_calls_total{method="system.register",outcome="invalid_params"}"#;
    let unknown = r#"vigil_rpc_calls_total{method="unknown",outcome="method_not_found"}"#;
    let count = |page: &str, name: &str| sample(page, name).unwrap_or(0.0);
    for id in ["a", "b", "c"] {
        rpc(json!({"jsonrpc": "2.0", "method": "system.register", "params": {"roles": ["worker"], "id": id}, "id": 1}))
            .await
            .unwrap();
    }
    for _ in 0..7 {
        rpc(json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "a"}, "id": 1}))
            .await
            .unwrap();
    }
    rpc(json!({"jsonrpc": "2.0", "method": "system.register", "params": {"roles": ["worker"], "id": ""}, "id": 1}))
        .await
        .unwrap();
    rpc(json!({"jsonrpc": "2.0", "method": "no.such", "id": 1}))
        .await
        .unwrap();
    rpc(json!({"jsonrpc": "2.0", "method": "task.create", "params": {"text": "t"}, "id": 1}))
        .await
        .unwrap();
    s.coordinator.unregister("c").await.unwrap();
    let after = scrape().await;
    // Calls by method and outcome (the recorder is process-wide: compare with the first page).
    assert!(
        count(&after, hb_ok) - count(&before, hb_ok) >= 7.0,
        "{after}"
    );
    assert!(
        count(&after, reg_ok) - count(&before, reg_ok) >= 3.0,
        "{after}"
    );
    assert!(count(&after, bad) - count(&before, bad) >= 1.0, "{after}");
    assert!(
        count(&after, unknown) - count(&before, unknown) >= 1.0,
        "{after}"
    );
    // The latency histogram, by method, with its buckets.
    assert!(
        count(
            &after,
            r#"vigil_rpc_call_duration_seconds_count{method="system.heartbeat"}"#
        ) >= 7.0,
        "{after}"
    );
    assert!(after.contains(
        r#"vigil_rpc_call_duration_seconds_bucket{method="system.heartbeat",le="0.001"}"#
    ));
    assert!(after.contains("# TYPE vigil_rpc_call_duration_seconds histogram"));
    // Scrape-time gauges of this server's coordinator, exact.
    assert_eq!(
        sample(&after, r#"vigil_instances{state="active"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&after, r#"vigil_instances{state="suspect"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&after, r#"vigil_tasks{state="pending"}"#), Some(1.0));
    assert_eq!(sample(&after, r#"vigil_tasks{state="claimed"}"#), Some(0.0));
    assert_eq!(sample(&after, "vigil_leader_present"), Some(1.0));
    let term = s.coordinator.leader_view().term.0 as f64;
    assert_eq!(sample(&after, "vigil_leader_term"), Some(term));
    // Store counters are present (zero with the in-memory store).
    assert!(
        sample(&after, "vigil_store_flushes_total").is_some(),
        "{after}"
    );
    assert!(
        sample(&after, "vigil_store_failures_total").is_some(),
        "{after}"
    );
    s.stop().await;
}

mod websocket {
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;
    use vigil::server::ServerConfig;

    use super::TestServer;

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn connect(s: &TestServer) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
            .await
            .unwrap();
        crate::common::welcome(&mut ws).await;
        ws
    }

    async fn send(ws: &mut Ws, v: Value) {
        ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    async fn recv(ws: &mut Ws) -> Value {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        match next {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn json_rpc_over_websocket_and_pushed_events() {
        let s = TestServer::default().await;
        let mut ws = connect(&s).await;
        send(&mut ws, json!({"jsonrpc": "2.0", "method": "system.register", "params": {"roles": ["worker"], "id": "w1"}, "id": "r1"})).await;
        let answer = recv(&mut ws).await;
        assert_eq!(answer["id"], "r1");
        assert_eq!(answer["result"]["registered"], true);
        send(&mut ws, json!({"jsonrpc": "2.0", "method": "events.subscribe", "params": {"types": ["instance.registered", "task.created"]}, "id": 2})).await;
        let sub = recv(&mut ws).await;
        assert_eq!(sub["result"]["subscribed"], true);
        // Another client acts; this one is told.
        s.call("system.register", json!({"roles": ["worker"], "id": "w2"}))
            .await;
        let event = recv(&mut ws).await;
        assert_eq!(event["method"], "event");
        assert_eq!(event["params"]["type"], "instance.registered");
        assert_eq!(event["params"]["instanceId"], "w2");
        // Filtered out: leader events; let through: task.created.
        s.call("task.create", json!({"text": "x"})).await;
        let event = recv(&mut ws).await;
        assert_eq!(event["params"]["type"], "task.created");
        // A batch and a notification over the socket.
        send(&mut ws, json!([
            {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w1"}, "id": 10},
            {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w1"}}
        ])).await;
        let batch = recv(&mut ws).await;
        assert_eq!(batch.as_array().unwrap().len(), 1);
        assert_eq!(batch[0]["result"]["alive"], true);
        // Bad subscription types are named.
        send(&mut ws, json!({"jsonrpc": "2.0", "method": "events.subscribe", "params": {"types": ["nope"]}, "id": 3})).await;
        let err = recv(&mut ws).await;
        assert_eq!(err["error"]["code"], -32602);
        assert_eq!(err["error"]["data"]["field"], "types[0]");
        ws.close(None).await.unwrap();
        s.stop().await;
    }

    #[tokio::test]
    async fn websocket_needs_the_token_too() {
        let s = TestServer::start(ServerConfig {
            token: Some("t0k".into()),
            ..ServerConfig::default()
        })
        .await;
        let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr)).await;
        assert!(refused.is_err(), "upgrade without a token is refused");
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", s.addr).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", "Bearer t0k".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        crate::common::welcome(&mut ws).await;
        send(
            &mut ws,
            json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["result"]["status"], "healthy");
        s.stop().await;
    }

    async fn exchange(ws: &mut Ws, frame: Vec<u8>) -> vigil::rpc::binary::AnswerFrame {
        ws.send(Message::Binary(frame.into())).await.unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .unwrap()
            .unwrap();
        match next {
            Message::Binary(b) => vigil::rpc::binary::AnswerFrame::decode(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn binary_frames_carry_heartbeat_batches() {
        use vigil::rpc::binary::{AnswerFrame, BeatResult, HeartbeatFrame};
        let s = TestServer::start(ServerConfig {
            heartbeats_per_minute: 3,
            max_batch: 50,
            ..ServerConfig::default()
        })
        .await;
        s.call("system.register", json!({"roles": ["worker"], "id": "b1"}))
            .await;
        s.call("system.register", json!({"roles": ["worker"], "id": "b2"}))
            .await;
        let term = s.coordinator.leader_view().term.0;
        let mut ws = connect(&s).await;
        let ids = vec![
            "b1".into(),
            "b2".into(),
            "ghost".into(),
            "b1".into(),
            "b1".into(),
            "b1".into(),
        ];
        let answer = exchange(&mut ws, HeartbeatFrame::new(42, ids).encode()).await;
        let AnswerFrame::Results { seq, results, .. } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(seq, 42);
        let beat = |alive, is_leader| BeatResult::Beat {
            alive,
            is_leader,
            term,
        };
        assert_eq!(
            &results[..5],
            &[
                beat(true, true),
                beat(true, false),
                beat(false, false),
                beat(true, true),
                beat(true, true)
            ]
        );
        // The fourth heartbeat of b1 in this window is over the limit of 3 per minute.
        assert_eq!(results.len(), 6);
        assert!(
            matches!(results[5], BeatResult::RateLimited { retry_after_ms } if retry_after_ms > 0),
            "{results:?}"
        );
        // Too many ids, a wrong version, garbage: one error frame each, nothing changed.
        let many = (0..51).map(|i| format!("x{i}").into()).collect();
        let answer = exchange(&mut ws, HeartbeatFrame::new(1, many).encode()).await;
        assert!(
            matches!(
                answer,
                AnswerFrame::Error {
                    seq: 1,
                    code: -32600,
                    ..
                }
            ),
            "{answer:?}"
        );
        let mut wrong = HeartbeatFrame::new(2, vec!["b2".into()]);
        wrong.version = 9;
        let answer = exchange(&mut ws, wrong.encode()).await;
        assert!(
            matches!(
                answer,
                AnswerFrame::Error {
                    seq: 2,
                    code: -32600,
                    ..
                }
            ),
            "{answer:?}"
        );
        let answer = exchange(&mut ws, vec![1, 0, 5, 200]).await;
        assert!(
            matches!(
                answer,
                AnswerFrame::Error {
                    seq: 0,
                    code: -32700,
                    ..
                }
            ),
            "{answer:?}"
        );
        // Text frames still work on the same connection.
        send(&mut ws, json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "b2"}, "id": 5})).await;
        assert_eq!(recv(&mut ws).await["result"]["alive"], true);
        ws.close(None).await.unwrap();
        s.stop().await;
    }
}

/// `server::router` nested into an application's own axum router (what
/// `examples/embed_server.rs` does): the application's routes and Vigil's answer side by side,
/// with Vigil's token guarding only Vigil's routes.
#[tokio::test]
async fn the_router_mounts_into_an_application_beside_its_own_routes() {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "hello from the application" }),
        )
        .nest(
            "/vigil",
            vigil::server::router(
                coordinator.clone(),
                &ServerConfig {
                    token: Some("t0k".into()),
                    ..ServerConfig::default()
                },
            )
            .unwrap(),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let client = reqwest::Client::new();
    let hello = client
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), "hello from the application");
    let register = json!({"jsonrpc": "2.0", "method": "system.register",
                          "params": {"id": "w1", "roles": ["worker"]}, "id": 1});
    let refused = client
        .post(format!("http://{addr}/vigil/rpc"))
        .json(&register)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "Vigil's routes keep their token");
    let answer: Value = client
        .post(format!("http://{addr}/vigil/rpc"))
        .bearer_auth("t0k")
        .json(&register)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["registered"], true, "{answer}");
    assert!(coordinator.heartbeat_now("w1").alive);
    let health = client
        .get(format!("http://{addr}/vigil/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// One raw HTTP/1.1 exchange on a fresh connection: `request` sent as is, the whole answer read
/// (head, and a body of its `content-length`, or up to the close), its `date` line dropped.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let whole = |got: &[u8]| {
        let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        });
        let status_has_no_body =
            head.starts_with("http/1.1 204") || head.starts_with("http/1.0 204");
        let length = if status_has_no_body { Some(0) } else { length };
        length
            .filter(|n| got.len() >= end + 4 + n)
            .map(|n| end + 4 + n)
    };
    let size = loop {
        if let Some(size) = whole(&got) {
            break size;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("no whole answer: {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0) | Err(_)) => break got.len(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    String::from_utf8_lossy(&got[..size])
        .split("\r\n")
        .filter(|line| !line.to_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn post_rpc(target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: vigil\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// `Server` answers `POST /rpc` beside the router (`src/server/direct.rs`); those answers are
/// byte for byte (all but the date) what the router gives, served by `axum::serve`: answers,
/// notifications, errors, a body over the limit (with and without a length), bodies in
/// chunks, HTTP/1.0, a query string, a missing or wrong token, another principal's instance.
#[tokio::test]
async fn the_direct_rpc_route_answers_as_the_router_does() {
    const WORKER: &str = "worker-token-0123456789";
    for tokens in [false, true] {
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_body_bytes: 1024,
            token: tokens.then(|| "operator-s3cret".to_string()),
            tokens: if tokens {
                vec![vigil::server::NamedToken {
                    name: "w".into(),
                    role: vigil::rpc::Role::Worker,
                    token: WORKER.into(),
                }]
            } else {
                Vec::new()
            },
            ..ServerConfig::default()
        };
        // The same state behind each: a coordinator with the same instances.
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        for direct in [true, false] {
            let coordinator = Coordinator::start(Config::default()).await.unwrap();
            for id in ["w1", "w2"] {
                coordinator
                    .register(vigil::RegisterRequest::new(id))
                    .await
                    .unwrap();
            }
            let (stop, stopped) = oneshot::channel::<()>();
            if direct {
                let server = Server::bind(coordinator.clone(), &config).await.unwrap();
                addrs.push(server.local_addr().unwrap());
                tokio::spawn(server.run(async move {
                    let _ = stopped.await;
                }));
            } else {
                let router = vigil::server::router(coordinator.clone(), &config).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await
                });
            }
            stops.push((stop, coordinator));
        }
        let auth = if tokens {
            "Authorization: Bearer operator-s3cret\r\n"
        } else {
            ""
        };
        let beat =
            br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":7}"#;
        let big = format!(
            r#"{{"jsonrpc":"2.0","method":"task.create","params":{{"text":"{}"}},"id":1}}"#,
            "x".repeat(2000)
        );
        let chunked = |body: &[u8], split: usize| {
            let (a, b) = body.split_at(split);
            let mut request = format!(
                "POST /rpc HTTP/1.1\r\nHost: vigil\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                a.len()
            )
            .into_bytes();
            request.extend_from_slice(a);
            request.extend_from_slice(format!("\r\n{:x}\r\n", b.len()).as_bytes());
            request.extend_from_slice(b);
            request.extend_from_slice(b"\r\n0\r\n\r\n");
            request
        };
        let mut requests: Vec<(&str, Vec<u8>)> = vec![
            ("heartbeat", post_rpc("/rpc", auth, beat)),
            ("query string", post_rpc("/rpc?x=1", auth, beat)),
            (
                "notification",
                post_rpc(
                    "/rpc",
                    auth,
                    br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"}}"#,
                ),
            ),
            (
                "unknown instance",
                post_rpc(
                    "/rpc",
                    auth,
                    br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"id":"nobody"},"id":"s"}"#,
                ),
            ),
            (
                "batch",
                post_rpc(
                    "/rpc",
                    auth,
                    br#"[{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":1},{"jsonrpc":"2.0","method":"nope","id":2}]"#,
                ),
            ),
            ("parse error", post_rpc("/rpc", auth, b"{")),
            ("empty body", post_rpc("/rpc", auth, b"")),
            (
                "another method",
                post_rpc("/rpc", auth, br#"{"jsonrpc":"2.0","method":"task.list","id":3}"#),
            ),
            ("too large", post_rpc("/rpc", auth, big.as_bytes())),
            ("chunked", chunked(beat, 20)),
            ("chunked, too large", chunked(big.as_bytes(), 700)),
            (
                "HTTP/1.0",
                [
                    format!(
                        "POST /rpc HTTP/1.0\r\n{auth}Content-Length: {}\r\n\r\n",
                        beat.len()
                    )
                    .as_bytes(),
                    beat,
                ]
                .concat(),
            ),
            (
                "GET",
                format!("GET /rpc HTTP/1.1\r\nHost: vigil\r\n{auth}\r\n").into_bytes(),
            ),
        ];
        if tokens {
            requests.extend([
                ("no token", post_rpc("/rpc", "", beat)),
                (
                    "wrong token",
                    post_rpc("/rpc", "Authorization: Bearer operator-s3cre7\r\n", beat),
                ),
                (
                    "worker, another's instance",
                    post_rpc("/rpc", &format!("Authorization: Bearer {WORKER}\r\n"), beat),
                ),
            ]);
        }
        for (what, request) in &requests {
            let direct = exchange(addrs[0], request).await;
            let router = exchange(addrs[1], request).await;
            assert_eq!(direct, router, "{what} (tokens: {tokens})");
            let status = match *what {
                "notification" => "204",
                "too large" | "chunked, too large" => "413",
                "GET" => "405",
                "no token" | "wrong token" => "401",
                _ => "200",
            };
            assert!(
                direct.starts_with(&format!("HTTP/1.1 {status} "))
                    || direct.starts_with(&format!("HTTP/1.0 {status} ")),
                "{what}: {direct}"
            );
        }
        for (stop, coordinator) in stops {
            let _ = stop.send(());
            coordinator.shutdown().await;
        }
    }
}
