//! Bad input: no byte sequence or JSON shape makes the dispatcher panic or answer outside
//! JSON-RPC 2.0, each class of bad input gets its own error code, and a flood of bad or
//! excessive requests neither grows memory without bound nor starves well-behaved callers.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vigil::rpc::{Dispatcher, RpcLimits, code};
use vigil::server::ServerConfig;
use vigil::{Config, Coordinator};

/// One runtime and one coordinator for every generated case.
fn fixture() -> &'static (tokio::runtime::Runtime, Dispatcher) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Dispatcher)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let coordinator = rt.block_on(Coordinator::start(Config::default())).unwrap();
        (rt, Dispatcher::new(coordinator, RpcLimits::default()))
    })
}

fn answer(body: &[u8]) -> Option<Value> {
    let (rt, d) = fixture();
    rt.block_on(d.handle_body(body))
}

fn error_code(answer: &Value) -> Option<i64> {
    answer.pointer("/error/code").and_then(Value::as_i64)
}

/// Every answer object is a JSON-RPC 2.0 response: version, exactly one of result and error,
/// an id, and an integer error code with a message.
fn well_formed(a: &Value) -> Result<(), String> {
    let o = a.as_object().ok_or(format!("not an object: {a}"))?;
    if o.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(format!("no jsonrpc 2.0: {a}"));
    }
    if o.contains_key("result") == o.contains_key("error") {
        return Err(format!("not exactly one of result and error: {a}"));
    }
    if !o.contains_key("id") {
        return Err(format!("no id: {a}"));
    }
    if let Some(e) = o.get("error")
        && (e.get("code").and_then(Value::as_i64).is_none()
            || e.get("message").and_then(Value::as_str).is_none())
    {
        return Err(format!("malformed error: {a}"));
    }
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        "[a-z]-[0-9]{1,3}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const PARAM_NAMES: &[&str] = &[
    "id",
    "instanceId",
    "roles",
    "metadata",
    "ttlMs",
    "timeout",
    "limit",
    "text",
    "payload",
    "priority",
    "maxAttempts",
    "requiresLocks",
    "workerId",
    "maxTasks",
    "taskId",
    "stepId",
    "claimToken",
    "claim_token",
    "extendLeasesSec",
    "result",
    "error",
    "status",
    "assignee",
    "key",
    "holder",
    "mode",
    "ttlSec",
    "prefix",
];

/// Params that look like the real thing: known names with values of any type.
fn params() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(PARAM_NAMES), json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn method() -> impl Strategy<Value = String> {
    let known: Vec<String> = vigil::rpc::METHODS
        .iter()
        .filter(|m| !m.starts_with("chaos."))
        .map(|m| m.to_string())
        .collect();
    prop_oneof![
        4 => prop::sample::select(known),
        1 => "[a-z.]{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Arbitrary bytes: never a panic; what is not JSON is −32700 with id null.
    #[test]
    fn arbitrary_bytes_are_answered_or_refused(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let parsed = serde_json::from_slice::<Value>(&body);
        let a = answer(&body);
        if parsed.is_err() {
            let a = a.expect("a parse error is answered");
            prop_assert_eq!(error_code(&a), Some(code::PARSE_ERROR));
            prop_assert_eq!(&a["id"], &Value::Null);
            prop_assert!(well_formed(&a).is_ok(), "{}", a);
        }
    }

    /// JSON that is not a request object: −32600; in a batch, one −32600 per element; an
    /// empty batch, one −32600.
    #[test]
    fn values_that_are_not_requests_are_invalid(
        v in prop_oneof![
            json_value().prop_filter("not a request", |v| !v.is_object() && !v.is_array()),
            Just(json!([])),
            prop::collection::vec(
                json_value().prop_filter("not an object", |v| !v.is_object()),
                1..5,
            )
            .prop_map(Value::Array),
        ]
    ) {
        let a = answer(v.to_string().as_bytes()).expect("answered");
        match v.as_array() {
            Some(items) if !items.is_empty() => {
                let answers = a.as_array().expect("a batch answer");
                prop_assert_eq!(answers.len(), items.len());
                for x in answers {
                    prop_assert_eq!(error_code(x), Some(code::INVALID_REQUEST), "{}", x);
                    prop_assert!(well_formed(x).is_ok());
                }
            }
            _ => {
                prop_assert_eq!(error_code(&a), Some(code::INVALID_REQUEST), "{}", a);
                prop_assert!(well_formed(&a).is_ok());
            }
        }
    }

    /// Request-shaped objects with every field possibly wrong: the right code for each class,
    /// and a known method with any params answers a result or −32602, never an internal error.
    #[test]
    fn each_class_of_bad_request_gets_its_code(
        version in prop_oneof![4 => Just(json!("2.0")), 1 => json_value()],
        method in prop_oneof![6 => method().prop_map(Value::String), 1 => json_value()],
        params in prop_oneof![6 => params(), 1 => json_value()],
        id in prop_oneof![4 => any::<u32>().prop_map(|n| json!(n)), 1 => json_value()],
    ) {
        let mut request = Map::new();
        request.insert("jsonrpc".into(), version.clone());
        request.insert("method".into(), method.clone());
        request.insert("params".into(), params.clone());
        request.insert("id".into(), id.clone());
        let a = answer(Value::Object(request).to_string().as_bytes()).expect("not a notification");
        prop_assert!(well_formed(&a).is_ok(), "{}", a);
        let expected_class = if !matches!(id, Value::Null | Value::String(_) | Value::Number(_))
            || version != json!("2.0")
            || !method.is_string()
        {
            Some(code::INVALID_REQUEST)
        } else if params.is_array() {
            Some(code::INVALID_PARAMS)
        } else if !(params.is_object() || params.is_null()) {
            Some(code::INVALID_REQUEST)
        } else if !vigil::rpc::METHODS.contains(&method.as_str().unwrap())
            || method.as_str().unwrap().starts_with("chaos.")
        {
            Some(code::METHOD_NOT_FOUND) // unknown, or chaos.* on a dispatcher without --chaos
        } else {
            None
        };
        match expected_class {
            Some(c) => prop_assert_eq!(error_code(&a), Some(c), "{}", a),
            None => {
                let got = error_code(&a);
                prop_assert!(
                    got.is_none() || got == Some(code::INVALID_PARAMS),
                    "{} {} answered {}", method, params, a
                );
                if got.is_none() {
                    prop_assert_eq!(&a["id"], &id);
                }
            }
        }
    }
}

async fn flood_server(
    config: ServerConfig,
) -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    let (url, coordinator, stop) = crate::common::serve(Config::default(), config).await;
    (format!("{url}/rpc"), coordinator, stop)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One client floods (heartbeats over its rate limit, oversized bodies, deeply nested JSON,
/// huge batches) while another heartbeats politely: the polite one is always answered, fast,
/// and the process's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_starves_no_one_and_grows_no_memory() {
    let (url, coordinator, stop) = flood_server(ServerConfig {
        max_body_bytes: 256 * 1024,
        heartbeats_per_minute: 600,
        ..ServerConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    for id in ["flooder", "polite"] {
        let r: Value = client
            .post(&url)
            .json(&json!({"jsonrpc": "2.0", "method": "system.register", "params": {"roles": ["worker"], "id": id}, "id": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r.get("result").is_some(), "{r}");
    }
    let big = vec![b' '; 1024 * 1024]; // 1 MiB: over the 256 KiB limit
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)); // 400 KB, over too
    let deep_small = format!(
        r#"{{"jsonrpc":"2.0","method":"system.heartbeat","params":{{"instanceId":{}1{}}},"id":1}}"#,
        "[".repeat(60_000),
        "]".repeat(60_000)
    ); // 120 KB, under the limit: the parser's depth limit must refuse it
    let huge_batch = {
        let one = json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "flooder"}, "id": 1});
        Value::Array(vec![one; 2000]).to_string() // over the 1000-call batch limit
    };
    // 50 heartbeats of one instance per request: its budget (600/min) is gone in a few rounds.
    let rate_batch = {
        let one = json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "flooder"}, "id": 1});
        Value::Array(vec![one; 50]).to_string()
    };
    let rss_before = rss_bytes();
    let deadline = Instant::now() + Duration::from_secs(8);
    let flood = {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut codes: std::collections::BTreeMap<String, u64> = Default::default();
            let mut rounds = 0u64;
            while Instant::now() < deadline && rounds < 400 {
                rounds += 1;
                let bodies: [(&str, Vec<u8>); 4] = [
                    ("rate", rate_batch.clone().into_bytes()),
                    ("big", big.clone()),
                    (
                        "deep",
                        if rounds.is_multiple_of(2) {
                            deep.clone().into_bytes()
                        } else {
                            deep_small.clone().into_bytes()
                        },
                    ),
                    ("batch", huge_batch.clone().into_bytes()),
                ];
                let sends = bodies.into_iter().map(|(kind, body)| {
                    let (client, url) = (client.clone(), url.clone());
                    async move {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        let outcome = match r {
                            Err(_) => "transport error".to_string(),
                            Ok(r) if !r.status().is_success() => {
                                format!("HTTP {}", r.status().as_u16())
                            }
                            Ok(r) => match r.json::<Value>().await {
                                Ok(v) => format!(
                                    "{}",
                                    v.pointer("/error/code")
                                        .or_else(|| v.pointer("/0/error/code"))
                                        .cloned()
                                        .unwrap_or(json!("ok"))
                                ),
                                Err(_) => "unreadable".into(),
                            },
                        };
                        (kind, outcome)
                    }
                });
                for (kind, outcome) in futures_util::future::join_all(sends).await {
                    *codes.entry(format!("{kind}: {outcome}")).or_default() += 1;
                }
            }
            codes
        }
    };
    let polite = {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut worst = Duration::ZERO;
            let mut answered = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let r: Value = client
                    .post(&url)
                    .json(&json!({"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "polite"}, "id": 1}))
                    .send()
                    .await
                    .expect("the polite client is always served")
                    .json()
                    .await
                    .unwrap();
                assert_eq!(r["result"]["alive"], true, "{r}");
                worst = worst.max(sent.elapsed());
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (answered, worst)
        }
    };
    let (codes, (answered, worst)) = tokio::join!(flood, polite);
    let rss_after = rss_bytes();
    eprintln!(
        "flood outcomes: {codes:#?}\npolite: {answered} answered, worst {worst:?}; RSS {} → {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(answered >= 50, "{answered}");
    assert!(
        worst < Duration::from_millis(500),
        "polite heartbeat took {worst:?}"
    );
    // Each class is refused the way it should be. (The server may answer 413 and close before
    // the client has finished sending a body; the client then sees the connection reset.)
    let allowed = |k: &str| {
        k.ends_with(": transport error")
            || matches!(
                k,
                "rate: \"ok\""
                    | "rate: -32000"
                    | "big: HTTP 413"
                    | "deep: HTTP 413"
                    | "deep: -32700"
                    | "batch: -32600"
            )
    };
    assert!(codes.keys().all(|k| allowed(k)), "{codes:?}");
    assert!(codes.keys().any(|k| k == "rate: -32000"), "{codes:?}");
    assert!(codes.keys().any(|k| k == "big: HTTP 413"), "{codes:?}");
    assert!(codes.keys().any(|k| k == "batch: -32600"), "{codes:?}");
    assert!(
        codes.keys().any(|k| k == "deep: -32700"),
        "the depth limit answered: {codes:?}"
    );
    // 400 rounds pushed over 500 MB of bodies; memory must not follow.
    assert!(
        rss_after < rss_before + 128 * 1024 * 1024,
        "RSS grew from {} to {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}
