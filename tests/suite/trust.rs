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
        rpc(&http, &url, "system.register", json!({"id": id})).await;
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
    rpc(&http, &url, "system.register", json!({"id": "w1"})).await;
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
