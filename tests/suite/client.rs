//! The worker client (`vigil::client`) against a real server on a loopback port. Real sockets
//! and real time: TTLs are 1 s and every wait is bounded by `tokio::time::timeout`.

use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;
use vigil::client::{
    Acquire, Claim, Client, ClientError, Election, Lease, LostReason, Session, SessionOptions,
    SessionState, TransportKind,
};
use vigil::server::ServerConfig;
use vigil::work::lease::LeaseMode;
use vigil::work::task::{CompleteStatus, LockSpec, TaskStatus};
use vigil::{Config, Coordinator, InstanceStatus, RegisterRequest};

const TTL: Duration = Duration::from_secs(1);
/// A bound on any wait that should take about one TTL.
const BOUND: Duration = Duration::from_secs(10);

async fn server(token: Option<&str>) -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    crate::common::serve(
        Config {
            ttl: TTL,
            grace: Duration::from_millis(300),
            ..Config::default()
        },
        ServerConfig {
            token: token.map(str::to_string),
            ..ServerConfig::default()
        },
    )
    .await
}

async fn client(url: &str, transport: TransportKind) -> Client {
    Client::builder()
        .url(url)
        .transport(transport)
        .connect()
        .await
        .expect("the client connects")
}

fn options(id: &str) -> SessionOptions {
    SessionOptions::new(id).roles(["worker"]).ttl(TTL)
}

fn status(c: &Coordinator, id: &str) -> Option<InstanceStatus> {
    c.state_with(&vigil::StateQuery {
        instance_id: Some(id.into()),
        limit: None,
        after: None,
    })
    .instances
    .first()
    .map(|i| i.status)
}

async fn session_outlives_several_ttls(transport: TransportKind) {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, transport).await;
    let session = Session::new(&client, options("keeper")).await.unwrap();
    let epoch = session.epoch();
    assert_eq!(session.ttl(), TTL);
    // Nothing is lost for four TTLs: the background heartbeats keep the instance alive.
    let lost = timeout(4 * TTL, session.lost()).await;
    assert!(lost.is_err(), "lost: {lost:?}");
    assert_eq!(
        session.state(),
        SessionState::Alive {
            epoch,
            generation: 0
        }
    );
    assert!(status(&coordinator, "keeper").is_some_and(InstanceStatus::is_alive));
    let closed = session.close().await.unwrap();
    assert!(closed.unregistered);
    assert!(!status(&coordinator, "keeper").is_some_and(InstanceStatus::is_alive));
}

#[tokio::test]
async fn session_outlives_several_ttls_over_http() {
    session_outlives_several_ttls(TransportKind::Http).await;
}

#[tokio::test]
async fn session_outlives_several_ttls_over_websocket() {
    session_outlives_several_ttls(TransportKind::WebSocket).await;
}

async fn session_lost_and_reregistered(transport: TransportKind) {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, transport).await;
    let session = Session::new(&client, options("phoenix")).await.unwrap();
    let first = session.epoch();
    let lost = session.lost();
    let mut states = session.watch();
    // Removed from the side: the next heartbeat answers alive: false.
    assert!(
        coordinator
            .unregister("phoenix")
            .await
            .unwrap()
            .unregistered
    );
    let reason = timeout(BOUND, lost).await.expect("the loss is signalled");
    assert_eq!(reason, LostReason::Expired);
    // ... and the session registers again, in a newer epoch.
    let state = timeout(
        BOUND,
        states.wait_for(|s| matches!(s, SessionState::Alive { epoch, .. } if *epoch > first)),
    )
    .await
    .expect("re-registered in time")
    .unwrap()
    .clone();
    let SessionState::Alive { epoch, .. } = state else {
        unreachable!()
    };
    assert!(epoch > first);
    assert_eq!(session.epoch(), epoch);
    assert!(status(&coordinator, "phoenix").is_some_and(InstanceStatus::is_alive));
    // The new epoch has its own loss signal, pending while it lives.
    assert!(timeout(2 * TTL, session.lost()).await.is_err());
}

#[tokio::test]
async fn lost_session_is_signalled_and_registers_again_over_http() {
    session_lost_and_reregistered(TransportKind::Http).await;
}

#[tokio::test]
async fn lost_session_is_signalled_and_registers_again_over_websocket() {
    session_lost_and_reregistered(TransportKind::WebSocket).await;
}

#[tokio::test]
async fn session_without_reregistration_stays_lost() {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let session = Session::new(&client, options("once").reregister(false))
        .await
        .unwrap();
    coordinator.unregister("once").await.unwrap();
    assert_eq!(
        timeout(BOUND, session.lost()).await.unwrap(),
        LostReason::Expired
    );
    assert!(
        timeout(2 * TTL, async {
            let mut w = session.watch();
            w.wait_for(|s| matches!(s, SessionState::Alive { .. }))
                .await
                .map(|_| ())
        })
        .await
        .is_err()
    );
    assert!(!status(&coordinator, "once").is_some_and(InstanceStatus::is_alive));
}

#[tokio::test]
async fn session_is_lost_when_the_server_is_gone() {
    let (url, _coordinator, stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let session = Session::new(&client, options("stranded").reregister(false))
        .await
        .unwrap();
    let lost = session.lost();
    drop(stop);
    match timeout(BOUND, lost).await.expect("the loss is signalled") {
        LostReason::Unreachable(why) => assert!(!why.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn leadership_passes_to_the_second_session_with_a_higher_term() {
    let (url, _coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let first = Session::new(&client, options("elder")).await.unwrap();
    let second = Session::new(&client, options("younger")).await.unwrap();
    let (e1, e2) = (Election::new(&first), Election::new(&second));
    let term1 = timeout(BOUND, e1.wait_leader()).await.unwrap().unwrap();
    assert!(e1.is_leader());
    assert!(!e2.is_leader());
    let (leader, term) = e2.leader();
    assert_eq!(leader.as_ref().map(|l| l.as_str()), Some("elder"));
    assert_eq!(term, term1);

    let waiting = tokio::spawn({
        let e2 = e2.clone();
        async move { e2.wait_leader().await }
    });
    first.close().await.unwrap();
    assert!(!e1.is_leader(), "a closed session does not lead");
    let term2 = timeout(BOUND, waiting).await.unwrap().unwrap().unwrap();
    assert!(term2 > term1, "{term2} > {term1}");
    let (leader, term) = e2.leader();
    assert_eq!(leader.as_ref().map(|l| l.as_str()), Some("younger"));
    assert_eq!(term, term2);
    // The first election now sees the second session lead.
    let refreshed = e1.refresh().await.unwrap();
    assert_eq!(refreshed.term, term2);
    assert!(!refreshed.is_leader);
}

#[tokio::test]
async fn claimed_task_is_kept_alive_and_completed() {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let session = Session::new(&client, options("worker-1")).await.unwrap();
    assert!(Claim::next(&client, "worker-1").await.unwrap().is_none());
    let created = client
        .create_task(
            json!({"job": "index"}),
            Some(80),
            &[LockSpec {
                key: vigil::work::lease::LeaseKey::parse("repo/src").unwrap(),
                mode: LeaseMode::Exclusive,
            }],
        )
        .await
        .unwrap();
    assert_eq!(created.status, TaskStatus::Pending);
    let mut claim = Claim::next(&client, session.id()).await.unwrap().unwrap();
    assert_eq!(claim.id(), created.id);
    assert_eq!(claim.payload(), &json!({"job": "index"}));
    assert_eq!(claim.leases().len(), 1);
    // The token never shows in Debug.
    let debug = format!("{claim:?}");
    assert!(!debug.contains(claim.claim_token()), "{debug}");
    assert!(debug.contains("redacted"));

    claim.keep_alive(Duration::from_millis(100), Some(Duration::from_secs(60)));
    let mut state = claim.watch();
    timeout(BOUND, state.wait_for(|s| s.heartbeats >= 3))
        .await
        .expect("step heartbeats go on")
        .unwrap();
    assert!(!claim.is_stale());
    assert!(claim.state().leases_expire_at_ms.is_some());

    let done = claim.complete(Some(json!({"ok": true}))).await.unwrap();
    assert_eq!(done.status, CompleteStatus::Completed);
    let task = client.task(created.id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.result, Some(json!({"ok": true})));
    assert_eq!(
        coordinator.get_task(created.id).map(|t| t.status),
        Some(TaskStatus::Completed)
    );
    session.close().await.unwrap();
}

/// `claim_role` takes only the tasks that require its role; a plain claim by a worker without
/// the role never sees them.
#[tokio::test]
async fn a_claim_by_role_takes_only_the_tasks_requiring_it() {
    let (url, _coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    for (id, roles) in [("gpu-1", json!(["gpu"])), ("cpu-1", json!(["cpu"]))] {
        client
            .call("system.register", json!({"id": id, "roles": roles}))
            .await
            .unwrap();
    }
    let plain = client
        .create_task(json!({"job": "plain"}), Some(90), &[])
        .await
        .unwrap();
    let gpu = client
        .call(
            "task.create",
            json!({"payload": {"job": "render"}, "role": "gpu", "priority": 10}),
        )
        .await
        .unwrap();
    // The CPU worker's plain claim skips the GPU task and takes the plain one.
    let taken = client.claim("cpu-1", 10).await.unwrap();
    assert_eq!(taken.iter().map(|c| c.id()).collect::<Vec<_>>(), [plain.id]);
    // A claim by role takes the GPU task, though a plain claim would rank it lower.
    let taken = client.claim_role("gpu-1", "gpu", 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id().to_string(), gpu["id"].as_str().unwrap());
    // A worker without the role is refused, naming the field.
    let refused = client.claim_role("cpu-1", "gpu", 1).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            vigil::client::ClientError::Rpc { code: -32602, .. }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("role"), "{refused}");
}

#[tokio::test]
async fn stale_claim_is_signalled_at_once() {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::WebSocket).await;
    let session = Session::new(&client, options("worker-2")).await.unwrap();
    let created = client.create_task(json!("work"), None, &[]).await.unwrap();
    let mut claim = Claim::next(&client, "worker-2").await.unwrap().unwrap();
    claim.keep_alive(Duration::from_millis(100), Some(Duration::ZERO));
    let stale = claim.stale();
    // An operator removes the worker: its task goes back to pending under no claim.
    coordinator.unregister("worker-2").await.unwrap();
    timeout(BOUND, stale)
        .await
        .expect("stale_claim is signalled");
    assert!(claim.is_stale());
    let done = claim.complete(None).await.unwrap();
    assert_eq!(done.status, CompleteStatus::StaleClaim);
    // The task is claimable again (by the re-registered session).
    let _ = timeout(
        BOUND,
        session.watch().wait_for(
            |s| matches!(s, SessionState::Alive { epoch, .. } if *epoch > vigil::Epoch(0)),
        ),
    )
    .await;
    let again = timeout(BOUND, async {
        loop {
            if let Ok(Some(c)) = Claim::next(&client, "worker-2").await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the task is claimed again");
    assert_eq!(again.id(), created.id);
    assert_eq!(again.task().attempts, 1);
    let failed = again.fail(Some("giving up")).await.unwrap();
    assert!(failed.can_retry);
}

#[tokio::test]
async fn leases_are_fenced_renewed_and_released() {
    let (url, _coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let a = Session::new(&client, options("holder-a")).await.unwrap();
    let b = Session::new(&client, options("holder-b")).await.unwrap();
    let ttl = Some(Duration::from_secs(5));

    let Acquire::Held(mut first) =
        Lease::acquire(&client, "db/users", a.id(), LeaseMode::Exclusive, ttl)
            .await
            .unwrap()
    else {
        panic!("the key is free")
    };
    let token1 = first.fencing_token();
    let expires = first.expires_at_ms();
    match Lease::acquire(&client, "db/users", b.id(), LeaseMode::Exclusive, ttl)
        .await
        .unwrap()
    {
        Acquire::Conflict(conflicts) => {
            assert_eq!(conflicts[0].key.as_str(), "db/users");
        }
        Acquire::Held(l) => panic!("granted twice: {l:?}"),
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(first.renew().await.unwrap());
    assert_eq!(first.fencing_token(), token1, "a renewal keeps the token");
    assert!(first.expires_at_ms() >= expires);
    first.keep_alive(Duration::from_millis(100));
    assert!(first.release().await.unwrap());

    let second = Lease::acquire(&client, "db/users", b.id(), LeaseMode::Exclusive, ttl)
        .await
        .unwrap()
        .held()
        .expect("free after the release");
    let token2 = second.fencing_token();
    assert!(token2 > token1, "{token2} > {token1}");
    let lost = second.lost();
    // The holder leaves: its leases go with it, and the next renewal says so.
    b.close().await.unwrap();
    assert!(!second.renew().await.unwrap());
    timeout(BOUND, lost).await.expect("the loss is signalled");
    assert!(second.is_lost());
    drop(second);

    let third = Lease::acquire(&client, "db/users", a.id(), LeaseMode::Shared, ttl)
        .await
        .unwrap()
        .held()
        .unwrap();
    assert!(third.fencing_token() > token2);
    // The typed calls on the client directly.
    assert!(
        client
            .lease_renew("db/users", a.id(), None)
            .await
            .unwrap()
            .is_some()
    );
    assert!(client.lease_release("db/users", a.id()).await.unwrap());
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthorized() {
    let (url, _coordinator, _stop) = server(Some("s3cret")).await;
    for transport in [TransportKind::Http, TransportKind::WebSocket] {
        for token in [None, Some("wrong".to_string())] {
            let error = match Client::builder()
                .url(&url)
                .transport(transport)
                .token_opt(token.clone())
                .connect()
                .await
            {
                // HTTP connects without asking; the first call is refused.
                Ok(client) => client.heartbeat("x").await.unwrap_err(),
                Err(e) => e,
            };
            assert!(
                matches!(&error, ClientError::Unauthorized { url: u, token_sent }
                    if *u == url && *token_sent == token.is_some()),
                "{transport:?} {token:?}: {error:?}"
            );
            let expected = if token.is_some() {
                format!(
                    "{url} refused the token (HTTP 401): pass the token the server was \
                     started with (--token or VIGIL_TOKEN)"
                )
            } else {
                format!("{url} needs a token: pass --token or set VIGIL_TOKEN")
            };
            assert_eq!(error.to_string(), expected);
        }
        let client = Client::builder()
            .url(&url)
            .transport(transport)
            .token("s3cret")
            .connect()
            .await
            .unwrap();
        assert!(!client.heartbeat("nobody").await.unwrap().alive);
    }
}

#[tokio::test]
async fn bad_urls_and_dead_servers_are_clear_errors() {
    let error = Client::connect(["127.0.0.1:7420"]).await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidUrl(_)), "{error:?}");
    assert!(error.to_string().contains("http://"), "{error}");
    let error = Client::connect(["https://example.com"]).await.unwrap_err();
    assert!(error.to_string().contains("TLS"), "{error}");

    // A port nobody listens on.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead = format!("http://{addr}");
    for transport in [TransportKind::Http, TransportKind::WebSocket] {
        let error = Client::builder()
            .url(&dead)
            .transport(transport)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("nothing listens at {dead}: is `vigil serve` running there? (--target)")
        );
    }
}

#[tokio::test]
async fn the_next_url_is_tried_when_one_is_down() {
    let (url, _coordinator, _stop) = server(None).await;
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead = format!("http://{addr}");
    for transport in [TransportKind::Http, TransportKind::WebSocket] {
        let client = Client::builder()
            .urls([dead.as_str(), url.as_str()])
            .transport(transport)
            .connect()
            .await
            .unwrap();
        assert_eq!(client.current_url(), url);
        let reg = client
            .register(&RegisterRequest::new("fallback").ttl(TTL))
            .await
            .unwrap();
        assert!(reg.registered);
    }
}

#[tokio::test]
async fn raw_calls_and_rpc_errors() {
    let (url, _coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let health = client.call("system.health", json!({})).await.unwrap();
    assert_eq!(health["status"], "healthy");
    let error = client.call("no.such", json!({})).await.unwrap_err();
    assert_eq!(error.code(), -32601);
    let error = client
        .register(&RegisterRequest::new("has space"))
        .await
        .unwrap_err();
    match &error {
        ClientError::Rpc { code, data, .. } => {
            assert_eq!(*code, -32602);
            assert_eq!(data.as_ref().unwrap()["field"], "id");
        }
        other => panic!("{other:?}"),
    }
    let reg = client
        .register(
            &RegisterRequest::new("w")
                .roles(["worker"])
                .ttl(TTL)
                .metadata(json!({"zone": "a"})),
        )
        .await
        .unwrap();
    let state = client.state(None).await.unwrap();
    assert_eq!(state.instance_count, 1);
    assert_eq!(state.instances[0].metadata, json!({"zone": "a"}));
    assert_eq!(state.leader.as_ref().map(|l| l.as_str()), Some("w"));
    assert_eq!(client.leader().await.unwrap().term, reg.term);
    assert!(client.unregister("w").await.unwrap().unregistered);
}

// ---------------------------------------------------------------------------------------------
// Helpers for failure cases: a server on a chosen port, a TCP proxy that can go silent or down,
// and a scripted WebSocket server.

/// A server on `addr` (retrying the bind while the port is being released), with the handle of
/// its run task so a test can wait until it has stopped.
async fn serve_on(
    addr: std::net::SocketAddr,
) -> (
    Coordinator,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let coordinator = Coordinator::start(Config {
        ttl: TTL,
        grace: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .unwrap();
    let server = timeout(BOUND, async {
        loop {
            match vigil::server::Server::bind(
                coordinator.clone(),
                &ServerConfig {
                    listen: addr,
                    ..ServerConfig::default()
                },
            )
            .await
            {
                Ok(server) => return server,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the port is free again");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (coordinator, stop, run)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Bytes flow both ways.
    Pass,
    /// Requests reach the server; its answers are swallowed (a half-dead network).
    Mute,
    /// Every connection is closed, new ones at once.
    Down,
}

/// A TCP proxy in front of a server.
struct Proxy {
    url: String,
    mode: tokio::sync::watch::Sender<Mode>,
}

impl Proxy {
    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<Mode>,
    answers: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == Mode::Down) => return,
        };
        if answers && *mode.borrow() == Mode::Mute {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn proxy(upstream: &str) -> Proxy {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (mode, rx) = tokio::sync::watch::channel(Mode::Pass);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if *rx.borrow() == Mode::Down {
                continue;
            }
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, rx.clone(), false));
            tokio::spawn(pump(sr, cw, rx.clone(), true));
        }
    });
    Proxy { url, mode }
}

/// A WebSocket server that answers every request with its `params` as the result, after first
/// pushing an `event` notification; requests for `hang` are never answered. Counts the
/// connections it accepted and those that closed.
struct FakeWs {
    url: String,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn fake_ws() -> FakeWs {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (o, c) = (Arc::clone(&opened), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            o.fetch_add(1, Ordering::SeqCst);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    while let Some(Ok(message)) = ws.next().await {
                        let Message::Text(text) = message else {
                            continue;
                        };
                        let request: serde_json::Value = serde_json::from_str(&text).unwrap();
                        if request["method"] == "hang" {
                            continue;
                        }
                        let push = json!({"jsonrpc": "2.0", "method": "event",
                                          "params": {"type": "noise"}});
                        let answer = json!({"jsonrpc": "2.0", "result": request["params"],
                                            "id": request["id"]});
                        if ws
                            .send(Message::Text(push.to_string().into()))
                            .await
                            .is_err()
                            || ws
                                .send(Message::Text(answer.to_string().into()))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    FakeWs {
        url,
        opened,
        closed,
    }
}

async fn ws_client(url: &str, call_timeout: Duration) -> Client {
    Client::builder()
        .url(url)
        .transport(TransportKind::WebSocket)
        .timeout(call_timeout)
        .connect()
        .await
        .expect("the client connects")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn election_starts_afresh_after_an_in_memory_restart() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{addr}");
    let (first_server, stop, run) = serve_on(addr).await;
    let client = client(&url, TransportKind::Http).await;
    // Term 2 on the first server: the elder leads, leaves, and the session takes over.
    let elder = Session::new(&client, options("elder")).await.unwrap();
    let session = Session::new(&client, options("survivor")).await.unwrap();
    let election = Election::new(&session);
    elder.close().await.unwrap();
    let term = timeout(BOUND, election.wait_leader())
        .await
        .unwrap()
        .unwrap();
    assert!(term >= vigil::Term(2), "{term}");

    // The server restarts without its state: terms start at 1 again.
    let lost = session.lost();
    drop(stop);
    timeout(BOUND, run).await.unwrap().unwrap().unwrap();
    first_server.shutdown().await;
    let (_second_server, _stop, _run) = serve_on(addr).await;
    assert_eq!(timeout(BOUND, lost).await.unwrap(), LostReason::Expired);
    let again = timeout(BOUND, election.wait_leader())
        .await
        .expect("leads again on the new server")
        .unwrap();
    assert!(again < term, "{again} < {term}");
    assert!(election.is_leader());
    assert_eq!(
        election.leader().0.as_ref().map(|l| l.as_str()),
        Some("survivor")
    );
}

#[tokio::test]
async fn a_session_that_cannot_hear_the_server_steps_down_within_a_ttl() {
    let (url, coordinator, _stop) = server(None).await;
    let proxy = proxy(&url).await;
    let client = client(&proxy.url, TransportKind::Http).await;
    let session = Session::new(
        &client,
        options("deaf").heartbeat_every(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    let election = Election::new(&session);
    timeout(BOUND, election.wait_leader())
        .await
        .unwrap()
        .unwrap();
    let epoch = session.epoch();
    let lost = session.lost(); // not polled until after the re-registration

    // Heartbeats still reach the server (it keeps the instance), but no answer comes back.
    let muted = tokio::time::Instant::now();
    proxy.set(Mode::Mute);
    let mut leadership = election.watch();
    timeout(BOUND, leadership.wait_for(|l| !l.is_leader))
        .await
        .unwrap()
        .unwrap();
    let took = muted.elapsed();
    assert!(
        took <= TTL + Duration::from_millis(250),
        "stepped down after {took:?}"
    );
    assert!(status(&coordinator, "deaf").is_some_and(InstanceStatus::is_alive));

    // Back: the re-registration refreshes the same epoch, in the next generation ...
    proxy.set(Mode::Pass);
    let mut states = session.watch();
    timeout(
        BOUND,
        states
            .wait_for(|s| matches!(s, SessionState::Alive { generation, .. } if *generation >= 1)),
    )
    .await
    .expect("registered again")
    .unwrap();
    assert_eq!(session.epoch(), epoch);
    // ... and the loss of the first generation is still reported.
    match timeout(Duration::from_millis(200), lost).await {
        Ok(LostReason::Unreachable(_)) => {}
        other => panic!("{other:?}"),
    }
    // The new generation leads again.
    timeout(BOUND, election.wait_leader())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_session_does_not_adopt_a_registration_made_by_someone_else() {
    let (url, coordinator, _stop) = server(None).await;
    let proxy = proxy(&url).await;
    let proxied = client(&proxy.url, TransportKind::Http).await;
    let direct = client(&url, TransportKind::Http).await;
    let ours = Session::new(&proxied, options("twin")).await.unwrap();
    let our_epoch = ours.epoch();
    let lost = ours.lost();

    proxy.set(Mode::Down);
    assert!(matches!(
        timeout(BOUND, lost).await.unwrap(),
        LostReason::Unreachable(_)
    ));
    // The server expires it, and another process registers the same id.
    timeout(BOUND, async {
        while status(&coordinator, "twin").is_some_and(InstanceStatus::is_alive) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server expires the instance");
    let theirs = Session::new(&direct, options("twin")).await.unwrap();
    assert_ne!(theirs.epoch(), our_epoch);

    proxy.set(Mode::Pass);
    let mut states = ours.watch();
    let state = timeout(
        BOUND,
        states.wait_for(|s| {
            matches!(
                s,
                SessionState::Lost {
                    reason: LostReason::Taken { .. }
                }
            )
        }),
    )
    .await
    .expect("the conflict is reported")
    .unwrap()
    .clone();
    assert_eq!(
        state,
        SessionState::Lost {
            reason: LostReason::Taken {
                was: our_epoch,
                now: theirs.epoch()
            }
        }
    );
    assert_eq!(ours.epoch(), our_epoch, "the other epoch is not adopted");
    match timeout(BOUND, Election::new(&ours).wait_leader()).await {
        Ok(Err(e @ ClientError::SessionEnded(_))) => assert!(!e.is_transient()),
        other => panic!("{other:?}"),
    }
    // It stays that way.
    tokio::time::sleep(TTL).await;
    assert!(matches!(ours.state(), SessionState::Lost { .. }));
    assert!(theirs.is_alive());
}

#[tokio::test]
async fn wait_leader_fails_when_the_session_is_lost_for_good() {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let _elder = Session::new(&client, options("elder")).await.unwrap();
    let session = Session::new(&client, options("follower").reregister(false))
        .await
        .unwrap();
    let election = Election::new(&session);
    let waiting = tokio::spawn({
        let election = election.clone();
        async move { election.wait_leader().await }
    });
    coordinator.unregister("follower").await.unwrap();
    match timeout(BOUND, waiting).await.expect("wait_leader ends") {
        Ok(Err(e @ ClientError::SessionEnded(_))) => assert!(!e.is_transient(), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_heartbeat_period_not_below_the_ttl_is_refused() {
    let (url, coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let error = Session::new(&client, options("slow").heartbeat_every(TTL))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Usage(_)), "{error:?}");
    assert!(
        error.to_string().contains("shorter than the TTL"),
        "{error}"
    );
    assert!(status(&coordinator, "slow").is_none());
    // With the server's TTL (30 s by default here: the test server's 1 s), checked once known.
    let error = Session::new(
        &client,
        SessionOptions::new("slow").heartbeat_every(Duration::from_secs(60)),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ClientError::Usage(_)), "{error:?}");
    assert!(!status(&coordinator, "slow").is_some_and(InstanceStatus::is_alive));
}

#[tokio::test]
async fn websocket_skips_pushed_frames_and_refuses_events_subscribe() {
    let fake = fake_ws().await;
    let client = ws_client(&fake.url, BOUND).await;
    for n in 0..20 {
        let answer = client.call("echo", json!({"n": n})).await.unwrap();
        assert_eq!(answer, json!({"n": n}));
    }
    // Concurrent calls each get their own answer.
    let calls: Vec<_> = (0..50)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { (n, client.call("echo", json!({"n": n})).await) })
        })
        .collect();
    for call in calls {
        let (n, answer) = timeout(BOUND, call).await.unwrap().unwrap();
        assert_eq!(answer.unwrap(), json!({"n": n}));
    }
    let error = client
        .call("events.subscribe", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Usage(_)), "{error:?}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn cancelled_websocket_calls_do_not_shift_later_answers() {
    let fake = fake_ws().await;
    let client = ws_client(&fake.url, BOUND).await;
    // Give up on many calls at every stage: before the frame is sent, while it is, after.
    let abandoned: Vec<_> = (0..200u64)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let _ = timeout(
                    Duration::from_micros((n * 37) % 600),
                    client.call("echo", json!({"n": n})),
                )
                .await;
            })
        })
        .collect();
    for a in abandoned {
        a.await.unwrap();
    }
    for n in 1000..1020 {
        let answer = timeout(BOUND, client.call("echo", json!({"n": n})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, json!({"n": n}));
    }
}

#[tokio::test]
async fn a_websocket_call_timeout_reopens_the_connection() {
    use std::sync::atomic::Ordering;
    let fake = fake_ws().await;
    let client = ws_client(&fake.url, Duration::from_millis(300)).await;
    let error = client.call("hang", json!({})).await.unwrap_err();
    assert!(error.is_transient());
    assert!(
        error
            .to_string()
            .contains("did not answer hang within 300 ms"),
        "{error}"
    );
    // The next call goes out on a new connection, and gets its own answer.
    let answer = client.call("echo", json!({"n": 1})).await.unwrap();
    assert_eq!(answer, json!({"n": 1}));
    assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
    // Dropping the client closes its socket.
    drop(client);
    timeout(BOUND, async {
        while fake.closed.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every connection is closed");
}

#[tokio::test]
async fn a_server_that_never_answers_the_upgrade_is_given_up_on() {
    let (url, _coordinator, _stop) = server(None).await;
    // Accepts TCP connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let started = tokio::time::Instant::now();
    let error = Client::builder()
        .url(&silent_url)
        .transport(TransportKind::WebSocket)
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // First in the list, it costs at most its share of the timeout.
    let started = tokio::time::Instant::now();
    let client = Client::builder()
        .urls([silent_url.as_str(), url.as_str()])
        .transport(TransportKind::WebSocket)
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.current_url(), url);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(client.heartbeat("nobody").await.is_ok());
}

#[tokio::test]
async fn failed_completion_and_release_hand_the_claim_and_lease_back() {
    let (url, _coordinator, _stop) = server(None).await;
    let proxy = proxy(&url).await;
    let direct = client(&url, TransportKind::Http).await;
    let proxied = Client::builder()
        .url(&proxy.url)
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let _session = Session::new(&direct, options("retrier")).await.unwrap();
    let created = direct.create_task(json!("job"), None, &[]).await.unwrap();
    let claim = Claim::next(&proxied, "retrier").await.unwrap().unwrap();
    let Acquire::Held(lease) = Lease::acquire(
        &proxied,
        "files/a",
        "retrier",
        LeaseMode::Exclusive,
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap() else {
        panic!("the key is free")
    };
    let token = lease.fencing_token();

    proxy.set(Mode::Down);
    let failed = claim.complete(Some(json!({"ok": 1}))).await.unwrap_err();
    assert!(failed.error.is_transient(), "{:?}", failed.error);
    let failed_release = lease.release().await.unwrap_err();
    assert!(failed_release.error.is_transient());
    proxy.set(Mode::Pass);

    let done = failed.claim.complete(Some(json!({"ok": 1}))).await.unwrap();
    assert_eq!(done.status, CompleteStatus::Completed);
    assert_eq!(
        direct.task(created.id).await.unwrap().status,
        TaskStatus::Completed
    );
    assert_eq!(failed_release.lease.fencing_token(), token);
    assert!(failed_release.lease.release().await.unwrap());
}

#[tokio::test]
async fn leases_are_lost_when_their_expiry_passes_during_an_outage() {
    let (url, _coordinator, _stop) = crate::common::serve(
        Config {
            ttl: TTL,
            grace: Duration::from_millis(300),
            lease_ttl: Duration::from_secs(1),
            ..Config::default()
        },
        ServerConfig::default(),
    )
    .await;
    let proxy = proxy(&url).await;
    let direct = client(&url, TransportKind::Http).await;
    let proxied = Client::builder()
        .url(&proxy.url)
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    // The worker stays alive through its own connection.
    let _session = Session::new(&direct, options("outage")).await.unwrap();
    let mut lease = Lease::acquire(
        &proxied,
        "db/x",
        "outage",
        LeaseMode::Exclusive,
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap()
    .held()
    .unwrap();
    lease.keep_alive(Duration::from_millis(200));
    direct
        .create_task(
            json!("locked"),
            None,
            &[LockSpec {
                key: vigil::work::lease::LeaseKey::parse("repo/y").unwrap(),
                mode: LeaseMode::Exclusive,
            }],
        )
        .await
        .unwrap();
    let mut claim = Claim::next(&proxied, "outage").await.unwrap().unwrap();
    claim.keep_alive(Duration::from_millis(200), Some(Duration::from_secs(1)));
    // Renewals work while the server can be reached.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!lease.is_lost());
    assert!(claim.state().lost_leases.is_empty());

    let (lost, leases_lost) = (lease.lost(), claim.leases_lost());
    proxy.set(Mode::Down);
    let down = tokio::time::Instant::now();
    timeout(BOUND, lost)
        .await
        .expect("the lease is lost in time");
    assert!(
        down.elapsed() <= Duration::from_millis(1500),
        "{:?}",
        down.elapsed()
    );
    assert!(lease.is_lost());
    timeout(BOUND, leases_lost)
        .await
        .expect("the claim's leases are lost in time");
    assert_eq!(claim.state().lost_leases.len(), 1);
}

#[tokio::test]
async fn step_heartbeats_stop_on_a_permanent_error() {
    let (url, _coordinator, _stop) = server(None).await;
    let client = client(&url, TransportKind::Http).await;
    let _session = Session::new(&client, options("refused")).await.unwrap();
    client.create_task(json!("x"), None, &[]).await.unwrap();
    let mut claim = Claim::next(&client, "refused").await.unwrap().unwrap();
    // More than the server allows: every heartbeat would be refused as invalid.
    claim.keep_alive(
        Duration::from_millis(50),
        Some(Duration::from_secs(48 * 3600)),
    );
    timeout(BOUND, claim.stale())
        .await
        .expect("signalled as stale");
    let state = claim.state();
    assert!(state.error.is_some(), "{state:?}");
    assert_eq!(state.heartbeats, 0);
}
