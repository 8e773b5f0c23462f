//! Clients and the active coordinator (issue 19): the Rust client, `vigil load` and
//! `vigil status` given several URLs follow a standby's −32008 to the active one.
//!
//! The standby here is a test-only axum server answering the standby contract exactly (every
//! JSON-RPC request, each batch entry, gets −32008 with `data: {role, active, epoch}`; `/ws`
//! is refused with 503 and `/healthz` with 429, both with `{status, role, active, epoch}`);
//! the active is a real in-process `vigil` server. Real sockets and real time; every wait is
//! bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::timeout;
use vigil::client::{Client, ClientError, TransportKind};
use vigil::server::ServerConfig;
use vigil::{Config, Coordinator};

/// A bound on any call that should succeed at once.
const BOUND: Duration = Duration::from_secs(10);

/// A test-only standby: what it names as the active can be changed while it runs.
#[derive(Clone)]
struct Standby {
    url: String,
    active: Arc<parking_lot::Mutex<Option<String>>>,
    /// Requests on `/rpc` and `/ws` (not `/healthz`).
    hits: Arc<AtomicUsize>,
}

impl Standby {
    async fn start(active: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let standby = Standby {
            url: format!("http://{}", listener.local_addr().unwrap()),
            active: Arc::new(parking_lot::Mutex::new(active.map(str::to_string))),
            hits: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/rpc", axum::routing::post(rpc))
            .route("/healthz", axum::routing::get(healthz))
            .route("/ws", axum::routing::get(ws))
            .with_state(standby.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        standby
    }

    fn name(&self, active: Option<&str>) {
        *self.active.lock() = active.map(str::to_string);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn epoch(&self) -> Value {
        if self.active.lock().is_some() {
            json!(7)
        } else {
            Value::Null
        }
    }

    fn role(&self) -> Value {
        json!({"status": "standby", "role": "standby", "active": *self.active.lock(),
               "epoch": self.epoch()})
    }
}

/// The standby's answer to one request: −32008, or nothing for a notification.
fn not_active(standby: &Standby, request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    Some(json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": -32008, "message": "not the active coordinator",
        "data": {"role": "standby", "active": *standby.active.lock(), "epoch": standby.epoch()}}}))
}

async fn rpc(State(standby): State<Standby>, body: Bytes) -> Response {
    standby.hits.fetch_add(1, Ordering::SeqCst);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let answer = match &request {
        Value::Array(entries) => {
            let answers: Vec<Value> = entries
                .iter()
                .filter_map(|e| not_active(&standby, e))
                .collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        one => not_active(&standby, one),
    };
    match answer {
        Some(answer) => axum::Json(answer).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn healthz(State(standby): State<Standby>) -> Response {
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(standby.role())).into_response()
}

async fn ws(State(standby): State<Standby>) -> Response {
    standby.hits.fetch_add(1, Ordering::SeqCst);
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(standby.role())).into_response()
}

/// A real coordinator and server: (base URL, coordinator, stop).
async fn active() -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    crate::common::serve(Config::default(), ServerConfig::default()).await
}

async fn client(urls: &[&str], transport: TransportKind, call_timeout: Duration) -> Client {
    Client::builder()
        .urls(urls.iter().copied())
        .transport(transport)
        .timeout(call_timeout)
        .connect()
        .await
        .expect("the client connects")
}

/// `system.health` through `client`, answered by a real Vigil.
async fn health(client: &Client) -> Value {
    let answer = timeout(BOUND, client.call("system.health", json!({})))
        .await
        .expect("an answer within the bound")
        .expect("the active answers");
    assert!(
        answer.pointer("/services/coordinator").is_some(),
        "{answer}"
    );
    answer
}

#[tokio::test]
async fn a_client_given_a_standby_first_calls_the_active_and_then_goes_straight_there() {
    for transport in [TransportKind::Http, TransportKind::WebSocket] {
        let (url, _coordinator, _stop) = active().await;
        let standby = Standby::start(Some(&url)).await;
        let client = client(&[&standby.url, &url], transport, BOUND).await;
        health(&client).await;
        assert_eq!(client.current_url(), url, "{transport:?}");
        let after_first = standby.hits();
        assert!(
            after_first >= 1,
            "{transport:?}: the standby was asked first"
        );
        // Later calls go straight to the active.
        for _ in 0..3 {
            health(&client).await;
        }
        assert_eq!(standby.hits(), after_first, "{transport:?}");
        // A registration made through the client is the real coordinator's.
        let registered = client
            .register(&vigil::RegisterRequest::new("w-1").roles(["worker"]))
            .await
            .unwrap();
        assert_eq!(registered.id.as_str(), "w-1");
    }
}

#[tokio::test]
async fn a_client_given_only_a_standby_follows_the_active_it_names() {
    for transport in [TransportKind::Http, TransportKind::WebSocket] {
        let (url, coordinator, _stop) = active().await;
        // The standby names the active with a trailing slash: the same server.
        let standby = Standby::start(Some(&format!("{url}/"))).await;
        let client = client(&[&standby.url], transport, BOUND).await;
        client
            .register(&vigil::RegisterRequest::new("w-1").roles(["worker"]))
            .await
            .unwrap();
        assert_eq!(client.current_url(), url, "{transport:?}");
        assert_eq!(coordinator.instance_count(), 1, "{transport:?}");
        let after_first = standby.hits();
        health(&client).await;
        health(&client).await;
        assert_eq!(
            standby.hits(),
            after_first,
            "{transport:?}: straight to the active"
        );
    }
}

#[tokio::test]
async fn a_takeover_under_way_holds_the_call_until_an_active_is_named() {
    let (url, _coordinator, _stop) = active().await;
    let standby = Standby::start(None).await;
    let client = client(&[&standby.url], TransportKind::Http, BOUND).await;
    // The standby names the active once it has refused three times (two pauses: 100 + 200 ms).
    let naming = {
        let (standby, url) = (standby.clone(), url.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + BOUND;
            while standby.hits() < 3 {
                assert!(Instant::now() < deadline, "the client stopped asking");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            standby.name(Some(&url));
        })
    };
    let started = Instant::now();
    health(&client).await;
    let took = started.elapsed();
    naming.await.unwrap();
    assert!(took >= Duration::from_millis(300), "{took:?}: it paused");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(client.current_url(), url);
    // 3 or 4 refusals: three before the name, at most one more in the same pause.
    assert!((3..=4).contains(&standby.hits()), "{}", standby.hits());
}

#[tokio::test]
async fn no_active_within_the_call_timeout_is_a_clear_error() {
    let a = Standby::start(None).await;
    let b = Standby::start(None).await;
    let client = client(
        &[&a.url, &b.url],
        TransportKind::Http,
        Duration::from_secs(1),
    )
    .await;
    let started = Instant::now();
    let err = timeout(BOUND, client.call("system.health", json!({})))
        .await
        .expect("it gives up by itself")
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "no active coordinator among {}, {} within 1 s (a takeover may be under way): those \
             that answered are standbys (JSON-RPC error -32008); nothing ran, so the call can \
             be repeated",
            a.url, b.url
        )
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_millis(1800), "{took:?}");
    // Paused between rounds (100, 200, 400, 500 ms…): about five requests, not a hot loop.
    let asked = a.hits() + b.hits();
    assert!((4..=8).contains(&asked), "{asked} requests");
    assert!(a.hits() >= 2 && b.hits() >= 2, "each in turn");
}

#[tokio::test]
async fn standbys_naming_each_other_do_not_make_a_hot_loop() {
    let a = Standby::start(None).await;
    let b = Standby::start(Some(&a.url)).await;
    a.name(Some(&b.url));
    let client = client(&[&a.url], TransportKind::Http, Duration::from_secs(1)).await;
    let err = timeout(BOUND, client.call("system.health", json!({})))
        .await
        .expect("it gives up by itself")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("no active coordinator among"),
        "{err}"
    );
    // b was added to the list as the active a named.
    assert!(err.to_string().contains(&b.url), "{err}");
    let asked = a.hits() + b.hits();
    assert!((4..=10).contains(&asked), "{asked} requests");
}

/// A loopback URL nobody listens on.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn a_named_active_that_is_gone_is_retried_with_pauses_not_in_a_hot_loop() {
    // The active was killed; the standby names it until its lease runs out.
    let gone = closed_url();
    let standby = Standby::start(Some(&gone)).await;
    let client = client(&[&standby.url], TransportKind::Http, Duration::from_secs(1)).await;
    let started = Instant::now();
    let err = timeout(BOUND, client.call("system.health", json!({})))
        .await
        .expect("it gives up by itself")
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "no active coordinator among {}, {gone} within 1 s",
            standby.url
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(1800));
    assert!(
        (3..=8).contains(&standby.hits()),
        "{} requests",
        standby.hits()
    );
}

#[tokio::test]
async fn an_active_the_client_cannot_use_is_named_in_the_error() {
    let standby = Standby::start(Some("https://10.0.0.1:7420")).await;
    let client = client(&[&standby.url], TransportKind::Http, BOUND).await;
    let err = timeout(BOUND, client.call("system.health", json!({})))
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{} is a standby and names https://10.0.0.1:7420 as the active coordinator",
            standby.url
        )),
        "{text}"
    );
    assert!(text.contains("TLS"), "{text}");
    assert_eq!(standby.hits(), 1, "refused at once");
}

#[tokio::test]
async fn load_counts_a_standbys_answers_as_redirected_over_http_and_ws() {
    for (transport, batch) in [("http", 5), ("ws", 5), ("http", 1)] {
        let (url, _coordinator, _stop) = active().await;
        let standby = Standby::start(Some(&url)).await;
        let target = format!("{},{url}", standby.url);
        let transport = match transport {
            "ws" => vigil::load::Transport::Ws {
                target,
                token: None,
                batch,
            },
            _ => vigil::load::Transport::Http {
                target,
                token: None,
                batch,
            },
        };
        let name = transport.name();
        let report = timeout(
            Duration::from_secs(30),
            vigil::load::run(vigil::load::LoadConfig {
                workers: 10,
                rate: vigil::load::Rate::PerSecond(100.0),
                duration: Duration::from_millis(500),
                connections: 1,
                ..vigil::load::LoadConfig::new(transport)
            }),
        )
        .await
        .expect("the run ends")
        .expect("the run succeeds");
        assert!(report.errors.is_empty(), "{name}: {:?}", report.errors);
        assert_eq!(report.answered, report.sent, "{name}");
        assert!(report.heartbeats > 0, "{name}");
        // HTTP: the first batch (the ten registrations) was answered −32008 entry by entry,
        // then everything went to the active. WebSocket: the standby refused the upgrade once.
        let expected = if name.starts_with("ws") { 1 } else { 10 };
        assert_eq!(report.redirected, expected, "{name}");
        assert!(
            report.table().contains(&format!("redirected {expected}:")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn load_given_a_standby_first_registers_and_heartbeats_at_the_active() {
    let (url, coordinator, _stop) = active().await;
    let standby = Standby::start(Some(&url)).await;
    // Registered straight at the active, so that the standby first sees heartbeat batches.
    let direct = Client::connect([url.as_str()]).await.unwrap();
    let ids: Vec<String> = (0..5).map(|i| format!("b-{i}")).collect();
    for id in &ids {
        direct
            .register(&vigil::RegisterRequest::new(id.as_str()).roles(["worker"]))
            .await
            .unwrap();
    }
    let report = timeout(
        Duration::from_secs(30),
        vigil::load::run(vigil::load::LoadConfig {
            workers: 5,
            prefix: "b".into(),
            run_id: "x".into(),
            rate: vigil::load::Rate::PerSecond(50.0),
            duration: Duration::from_millis(300),
            ..vigil::load::LoadConfig::new(vigil::load::Transport::Http {
                target: format!("{},{url}", standby.url),
                token: None,
                batch: 5,
            })
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.alive_false, 0);
    assert_eq!(report.redirected, 5, "one batch of registrations");
    assert!(coordinator.instance_count() >= 5);
}

/// `vigil ARGS`: (exit code, stdout, stderr).
async fn vigil(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_TOKEN")
        .env_remove("VIGIL_TARGET")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn vigil_status_and_load_take_a_list_and_name_the_active() {
    let (url, _coordinator, _stop) = active().await;
    let standby = Standby::start(Some(&url)).await;
    let target = format!("{},{url}", standby.url);

    let (code, out, err) = vigil(&["status", "--target", &target]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("active: {url} answered (--target {target})")),
        "{out}"
    );
    // Each URL's role from its /healthz: 429 standby, 200 active, no answer unreachable.
    let gone = closed_url();
    assert!(
        out.contains(&format!(
            "coordinators: {} standby (epoch 7), {url} active\n",
            standby.url
        )),
        "{out}"
    );
    let three = format!("{target},{gone}");
    let (code, out, err) = vigil(&["status", "--json", "--target", &three]).await;
    assert_eq!(code, Some(0), "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["answeredBy"], url.as_str(), "{status}");
    assert_eq!(
        status["coordinators"],
        json!([
            {"url": standby.url, "role": "standby", "epoch": 7},
            {"url": url, "role": "active", "epoch": null},
            {"url": gone, "role": "unreachable", "epoch": null},
        ]),
        "{status}"
    );

    let (code, out, err) = vigil(&[
        "load",
        "--target",
        &target,
        "--workers",
        "5",
        "--batch",
        "5",
        "--rate",
        "50/s",
        "--duration",
        "500ms",
        "--no-progress",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("redirected 5:"), "{out}");
    assert!(!out.contains("errors -"), "{out}");

    // Each URL of the list is checked, in the usual words.
    let (code, _, err) = vigil(&["status", "--target", &format!("{url},localhost:1")]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("`localhost:1` has no scheme: use http://localhost:1"),
        "{err}"
    );
    let (code, _, err) = vigil(&["load", "--target", &format!("{url},")]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("has an empty URL"), "{err}");
}
