//! Trust: what one caller can learn or do to another's work over the wire.

use serde_json::{Value, json};
use vigil::Config;
use vigil::server::ServerConfig;

async fn rpc(client: &reqwest::Client, url: &str, method: &str, params: Value) -> Value {
    client
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A claim token is a capability: it appears in the answer to the claim that minted it and
/// nowhere else — not in lease views (list, conflicts), task views, the state, or events.
#[tokio::test]
async fn a_claim_token_is_shown_only_to_its_claimer() {
    let (url, coordinator, stop) =
        crate::common::serve(Config::default(), ServerConfig::default()).await;
    let mut events = coordinator.subscribe();
    let http = reqwest::Client::new();
    for id in ["worker-a", "intruder"] {
        rpc(
            &http,
            &url,
            "system.register",
            json!({"roles": ["worker"], "id": id}),
        )
        .await;
    }
    let created = rpc(
        &http,
        &url,
        "task.create",
        json!({"text": "build", "requiresLocks": [{"key": "repo/src", "mode": "exclusive"}]}),
    )
    .await;
    let task_id = created["result"]["id"].as_str().unwrap().to_string();
    let claim = rpc(&http, &url, "task.claim", json!({"workerId": "worker-a"})).await;
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32, "{claim}");

    // Everything another caller can read.
    let views = [
        rpc(&http, &url, "lease.list", json!({})).await,
        rpc(&http, &url, "lease.list", json!({"prefix": "repo"})).await,
        rpc(&http, &url, "task.get", json!({"taskId": task_id})).await,
        rpc(&http, &url, "task.list", json!({})).await,
        rpc(&http, &url, "system.get_state", json!({})).await,
        // A conflicting acquisition names who holds the key.
        rpc(
            &http,
            &url,
            "lease.acquire",
            json!({"key": "repo/src/main.rs", "holder": "intruder"}),
        )
        .await,
    ];
    // The views do show the holder's claim (by task), just not its token.
    assert_eq!(
        views[0]["result"]["leases"][0]["holder"]["taskId"], task_id,
        "{}",
        views[0]
    );
    for view in &views {
        let text = view.to_string();
        assert!(
            !text.contains(&token),
            "a view leaks the claim token: {text}"
        );
    }
    let mut seen = 0;
    while let Ok(event) = events.try_recv() {
        let text = serde_json::to_string(&event).unwrap();
        assert!(
            !text.contains(&token),
            "an event leaks the claim token: {text}"
        );
        seen += 1;
    }
    assert!(seen >= 3, "events were published ({seen})");
    // The claimer's token still works.
    let done = rpc(
        &http,
        &url,
        "task.complete",
        json!({"taskId": task_id, "claimToken": token}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// With a token configured, a wrong token of the same length is refused like any other.
#[tokio::test]
async fn a_wrong_bearer_token_is_refused() {
    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some("right-token".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    for (token, status) in [
        (Some("right-token"), 200),
        (Some("wrong-token"), 401),
        (Some("right-toke"), 401),
        (Some("right-token-and-more"), 401),
        (None, 401),
    ] {
        let mut request = http
            .post(format!("{url}/rpc"))
            .json(&json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(
            request.send().await.unwrap().status().as_u16(),
            status,
            "{token:?}"
        );
    }
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// Over HTTP: heartbeats for ids nobody registered are answered `alive: false` and never rate
/// limited (they take no limiter entry); a registered instance is limited per id.
#[tokio::test]
async fn only_registered_instances_are_rate_limited() {
    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            heartbeats_per_minute: 2,
            ..ServerConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let beat = rpc(
            &http,
            &url,
            "system.heartbeat",
            json!({"instanceId": "ghost"}),
        )
        .await;
        assert_eq!(beat["result"]["alive"], false, "{beat}");
    }
    rpc(
        &http,
        &url,
        "system.register",
        json!({"roles": ["worker"], "id": "w1"}),
    )
    .await;
    let codes: Vec<Value> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let beat = rpc(&http, &url, "system.heartbeat", json!({"instanceId": "w1"})).await;
            out.push(beat["error"]["code"].clone());
        }
        out
    };
    assert_eq!(
        codes,
        [Value::Null, Value::Null, json!(-32000)],
        "{codes:?}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

const OPS: &str = "ops-0123456789abcdef";
const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";

/// A server with an operator token and two worker principals, alice and bob.
async fn with_principals() -> (String, vigil::Coordinator, tokio::sync::oneshot::Sender<()>) {
    use vigil::rpc::Role;
    use vigil::server::NamedToken;
    let named = |name: &str, role, token: &str| NamedToken {
        name: name.into(),
        role,
        token: token.into(),
    };
    crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some(OPS.into()),
            tokens: vec![
                named("alice", Role::Worker, ALICE),
                named("bob", Role::Worker, BOB),
            ],
            ..ServerConfig::default()
        },
    )
    .await
}

/// A JSON-RPC call with a bearer token.
async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: &str,
    params: Value,
) -> Value {
    let answer = http
        .post(format!("{url}/rpc"))
        .bearer_auth(token)
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{method}");
    answer.json().await.unwrap()
}

/// A WebSocket to the server at `url`, opened with `token`.
async fn websocket_as(
    url: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/ws", url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(request).await.unwrap().0;
    crate::common::welcome(&mut ws).await;
    ws
}

fn forbidden(answer: &Value) -> bool {
    answer["error"]["code"] == -32002 && answer["error"]["data"]["reason"].is_string()
}

/// A worker principal can do nothing as another principal's instance: not unregister it,
/// re-register it (with a short TTL, to have it expire), heartbeat it, claim as it, or take,
/// renew or release leases as it — and none of those attempts changes anything. An operator
/// may act on it (that is how a stuck worker is evicted).
#[tokio::test]
async fn a_worker_cannot_act_as_another_principals_instance() {
    let (url, coordinator, stop) = with_principals().await;
    let http = reqwest::Client::new();
    let reg = call(
        &http,
        &url,
        ALICE,
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"], "ttlMs": 60_000}),
    )
    .await;
    assert_eq!(reg["result"]["registered"], true, "{reg}");
    let reg = call(
        &http,
        &url,
        BOB,
        "system.register",
        json!({"roles": ["worker"], "id": "w-bob"}),
    )
    .await;
    assert_eq!(reg["result"]["registered"], true, "{reg}");
    let lease = call(
        &http,
        &url,
        ALICE,
        "lease.acquire",
        json!({"key": "db/main", "holder": "w-alice"}),
    )
    .await;
    assert_eq!(lease["result"]["acquired"], true, "{lease}");
    call(&http, &url, OPS, "task.create", json!({"text": "job"})).await;

    let attempts = [
        ("system.unregister", json!({"instanceId": "w-alice"})),
        (
            "system.register",
            json!({"roles": ["worker"], "id": "w-alice", "ttlMs": 1000}),
        ),
        ("system.heartbeat", json!({"instanceId": "w-alice"})),
        ("task.claim", json!({"workerId": "w-alice"})),
        (
            "lease.acquire",
            json!({"key": "db/other", "holder": "w-alice"}),
        ),
        (
            "lease.renew",
            json!({"key": "db/main", "holder": "w-alice", "ttlSec": 1}),
        ),
        (
            "lease.release",
            json!({"key": "db/main", "holder": "w-alice"}),
        ),
    ];
    for (method, params) in &attempts {
        let answer = call(&http, &url, BOB, method, params.clone()).await;
        assert!(forbidden(&answer), "{method}: {answer}");
        assert!(
            !answer.to_string().contains("\"alice\""),
            "the refusal does not name the owner: {answer}"
        );
    }
    // Nothing changed: alive, same TTL, lease held, task still pending.
    let state = call(
        &http,
        &url,
        OPS,
        "system.get_state",
        json!({"instanceId": "w-alice"}),
    )
    .await;
    let instance = &state["result"]["instances"][0];
    assert_eq!(instance["state"], "active", "{state}");
    assert_eq!(instance["status"], "ACTIVE", "{state}");
    assert_eq!(instance["ttlMs"], 60_000, "{state}");
    assert_eq!(instance["owner"], "alice", "{state}");
    let leases = call(&http, &url, OPS, "lease.list", json!({})).await;
    assert_eq!(
        leases["result"]["leases"].as_array().unwrap().len(),
        1,
        "{leases}"
    );
    let pending = call(&http, &url, OPS, "task.list", json!({"status": "pending"})).await;
    assert_eq!(
        pending["result"]["tasks"].as_array().unwrap().len(),
        1,
        "{pending}"
    );

    // Its own principal may do all of it.
    let beat = call(
        &http,
        &url,
        ALICE,
        "system.heartbeat",
        json!({"instanceId": "w-alice"}),
    )
    .await;
    assert_eq!(beat["result"]["alive"], true, "{beat}");
    let renew = call(
        &http,
        &url,
        ALICE,
        "lease.renew",
        json!({"key": "db/main", "holder": "w-alice"}),
    )
    .await;
    assert_eq!(renew["result"]["renewed"], true, "{renew}");
    // Bob's own instance is his to use.
    let beat = call(
        &http,
        &url,
        BOB,
        "system.heartbeat",
        json!({"instanceId": "w-bob"}),
    )
    .await;
    assert_eq!(beat["result"]["alive"], true, "{beat}");
    // A worker cannot act on an instance an operator registered either.
    call(
        &http,
        &url,
        OPS,
        "system.register",
        json!({"roles": ["worker"], "id": "w-ops"}),
    )
    .await;
    let answer = call(
        &http,
        &url,
        ALICE,
        "system.heartbeat",
        json!({"instanceId": "w-ops"}),
    )
    .await;
    assert!(forbidden(&answer), "{answer}");
    // The operator evicts alice's instance.
    let gone = call(
        &http,
        &url,
        OPS,
        "system.unregister",
        json!({"instanceId": "w-alice"}),
    )
    .await;
    assert_eq!(gone["result"]["unregistered"], true, "{gone}");
    // Once it is gone, the id is free: bob may register it afresh, bound to him.
    let again = call(
        &http,
        &url,
        BOB,
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    assert_eq!(again["result"]["registered"], true, "{again}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// A claim token that reaches another principal does not let it act for the claimer: step
/// heartbeat, complete, fail and leases under the claim are refused; the claimer's own calls
/// work. A wrong token is still just `stale_claim`.
#[tokio::test]
async fn a_leaked_claim_token_does_not_let_another_principal_act() {
    let (url, coordinator, stop) = with_principals().await;
    let http = reqwest::Client::new();
    call(
        &http,
        &url,
        ALICE,
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    let created = call(&http, &url, BOB, "task.create", json!({"text": "job"})).await;
    let task = created["result"]["id"].as_str().unwrap().to_string();
    let claim = call(
        &http,
        &url,
        ALICE,
        "task.claim",
        json!({"workerId": "w-alice"}),
    )
    .await;
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    let attempts = [
        (
            "task.heartbeat",
            json!({"taskId": task, "claimToken": token}),
        ),
        (
            "task.complete",
            json!({"taskId": task, "claimToken": token}),
        ),
        ("task.fail", json!({"taskId": task, "claimToken": token})),
        (
            "lease.acquire",
            json!({"key": "out/a", "taskId": task, "claimToken": token}),
        ),
    ];
    for (method, params) in &attempts {
        let answer = call(&http, &url, BOB, method, params.clone()).await;
        assert!(forbidden(&answer), "{method}: {answer}");
    }
    let stale = call(
        &http,
        &url,
        BOB,
        "task.complete",
        json!({"taskId": task, "claimToken": "0".repeat(32)}),
    )
    .await;
    assert_eq!(stale["result"]["status"], "stale_claim", "{stale}");
    let done = call(
        &http,
        &url,
        ALICE,
        "task.complete",
        json!({"taskId": task, "claimToken": token}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    // Nor does the idempotent repeat of a completion answer another principal.
    let again = call(
        &http,
        &url,
        BOB,
        "task.complete",
        json!({"taskId": task, "claimToken": token}),
    )
    .await;
    assert!(forbidden(&again), "{again}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// Over WebSocket the principal is the one whose token opened the connection, for JSON frames
/// and binary heartbeat frames alike.
#[tokio::test]
async fn a_websocket_acts_for_the_principal_that_opened_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use vigil::rpc::binary::{AnswerFrame, BeatResult, HeartbeatFrame};
    let (url, coordinator, stop) = with_principals().await;
    let http = reqwest::Client::new();
    call(
        &http,
        &url,
        ALICE,
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    let mut ws = websocket_as(&url, BOB).await;
    let frame = json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "w-alice"}, "id": 1});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(text))) = ws.next().await else {
        panic!("no answer")
    };
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert!(forbidden(&answer), "{answer}");
    let beats = HeartbeatFrame::new(7, vec!["w-alice".into(), "nobody".into()]).encode();
    ws.send(Message::Binary(beats.into())).await.unwrap();
    let Some(Ok(Message::Binary(bytes))) = ws.next().await else {
        panic!("no answer")
    };
    match AnswerFrame::decode(&bytes).unwrap() {
        AnswerFrame::Results { results, .. } => {
            assert_eq!(results[0], BeatResult::Forbidden);
            assert!(matches!(results[1], BeatResult::Beat { alive: false, .. }));
        }
        other => panic!("{other:?}"),
    }
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// The token file's checks: short, duplicated or clashing tokens refuse to start a server.
#[tokio::test]
async fn bad_token_sets_are_refused_at_bind() {
    use vigil::rpc::Role;
    use vigil::server::NamedToken;
    let named = |name: &str, token: &str| NamedToken {
        name: name.into(),
        role: Role::Worker,
        token: token.into(),
    };
    let coordinator = vigil::Coordinator::start(Config::default()).await.unwrap();
    let cases = [
        (None, vec![named("a", "short")], "at least 16"),
        (None, vec![named("a", ALICE), named("a", BOB)], "twice"),
        (None, vec![named("a", ALICE), named("b", ALICE)], "same"),
        (Some(ALICE), vec![named("a", ALICE)], "--token"),
        (Some(""), vec![], "empty"),
    ];
    for (token, tokens, why) in cases {
        let config = ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            token: token.map(str::to_string),
            tokens,
            ..ServerConfig::default()
        };
        let e = vigil::server::Server::bind(coordinator.clone(), &config)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    coordinator.shutdown().await;
}

/// Another principal's refused heartbeats do not spend an instance's rate-limit budget: bob
/// cannot starve alice's worker of heartbeats (and so have it expire and take its id), over
/// JSON or binary frames.
#[tokio::test]
async fn refused_heartbeats_do_not_spend_the_owners_rate_limit() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use vigil::rpc::Role;
    use vigil::rpc::binary::{AnswerFrame, BeatResult, HeartbeatFrame};
    use vigil::server::NamedToken;
    let named = |name: &str, token: &str| NamedToken {
        name: name.into(),
        role: Role::Worker,
        token: token.into(),
    };
    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            heartbeats_per_minute: 3,
            tokens: vec![named("alice", ALICE), named("bob", BOB)],
            ..ServerConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    call(
        &http,
        &url,
        ALICE,
        "system.register",
        json!({"id": "w-alice", "roles": ["worker"]}),
    )
    .await;
    for _ in 0..5 {
        let answer = call(
            &http,
            &url,
            BOB,
            "system.heartbeat",
            json!({"instanceId": "w-alice"}),
        )
        .await;
        assert!(forbidden(&answer), "{answer}");
    }
    let mut ws = websocket_as(&url, BOB).await;
    let beats = HeartbeatFrame::new(1, vec!["w-alice".into(); 5]).encode();
    ws.send(Message::Binary(beats.into())).await.unwrap();
    let Some(Ok(Message::Binary(bytes))) = ws.next().await else {
        panic!("no answer")
    };
    match AnswerFrame::decode(&bytes).unwrap() {
        AnswerFrame::Results { results, .. } => {
            assert!(
                results.iter().all(|r| *r == BeatResult::Forbidden),
                "{results:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Alice's own budget is whole: three heartbeats a minute, all answered.
    for _ in 0..3 {
        let beat = call(
            &http,
            &url,
            ALICE,
            "system.heartbeat",
            json!({"instanceId": "w-alice"}),
        )
        .await;
        assert_eq!(beat["result"]["alive"], true, "{beat}");
    }
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// A `requestId` lives in the scope of the principal that sent it: another principal using the
/// same id gets a task of its own (it can neither pre-empt nor replay it), while a retry by the
/// same principal returns the same task.
#[tokio::test]
async fn request_ids_are_scoped_by_principal() {
    let (url, coordinator, stop) = with_principals().await;
    let http = reqwest::Client::new();
    let create = |token: &'static str, text: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            call(
                &http,
                &url,
                token,
                "task.create",
                json!({"text": text, "requestId": "nightly-1"}),
            )
            .await
        }
    };
    // Bob takes the id first, with other parameters.
    let bobs = create(BOB, "bob's job").await;
    assert!(bobs["result"]["id"].is_string(), "{bobs}");
    let first = create(ALICE, "alice's job").await;
    let retry = create(ALICE, "alice's job").await;
    assert!(first["result"]["id"].is_string(), "{first}");
    assert_eq!(
        first["result"]["id"], retry["result"]["id"],
        "a retry is the same task"
    );
    assert_ne!(
        first["result"]["id"], bobs["result"]["id"],
        "bob's id is his own"
    );
    let replay = create(BOB, "bob's job").await;
    assert_eq!(replay["result"]["id"], bobs["result"]["id"]);
    let _ = stop.send(());
    coordinator.shutdown().await;
}
