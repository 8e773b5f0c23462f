//! Test harness: a coordinator on tokio's paused clock, with helpers to move time and to let
//! the actor tree catch up.
#![allow(dead_code)]

use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use vigil::{Config, Coordinator, Event, EventKind, RegisterRequest, Registration};

/// A coordinator started at a known instant.
pub struct Harness {
    pub coordinator: Coordinator,
    pub t0: Instant,
    pub events: broadcast::Receiver<Event>,
}

impl Harness {
    pub async fn start(config: Config) -> Self {
        let t0 = Instant::now();
        let coordinator = Coordinator::start(config)
            .await
            .expect("coordinator starts");
        let events = coordinator.subscribe();
        Self {
            coordinator,
            t0,
            events,
        }
    }

    pub async fn default() -> Self {
        Self::start(Config::default()).await
    }

    /// Milliseconds since start on the paused clock.
    pub fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Sleeps until `ms` after start, then lets every actor that woke at that instant finish.
    pub async fn at(&self, ms: u64) {
        tokio::time::sleep_until(self.t0 + Duration::from_millis(ms)).await;
        settle().await;
    }

    pub async fn register(&self, id: &str) -> Registration {
        self.coordinator
            .register(RegisterRequest::new(id).roles(["worker"]))
            .await
            .expect("registration succeeds")
    }

    /// Every event received so far.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    pub fn status_of(&self, id: &str) -> Option<vigil::InstanceStatus> {
        self.coordinator
            .state_with(&vigil::StateQuery {
                instance_id: Some(id.into()),
                limit: None,
                after: None,
            })
            .instances
            .first()
            .map(|i| i.status)
    }

    /// The current leader's id.
    pub fn leader(&self) -> Option<String> {
        self.coordinator
            .state_with(&vigil::StateQuery {
                instance_id: None,
                limit: Some(0),
                after: None,
            })
            .leader
            .leader
            .map(|l| l.to_string())
    }
}

/// Lets ready tasks run without moving the paused clock.
pub async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

pub fn of_kind(events: &[Event], kind: EventKind) -> Vec<&Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

#[cfg(feature = "server")]
/// A JSON-RPC server over `coordinator config` on a free loopback port, run until the sender
/// is used or dropped: (base URL, coordinator, stop).
pub async fn serve(
    config: Config,
    server: vigil::server::ServerConfig,
) -> (String, Coordinator, tokio::sync::oneshot::Sender<()>) {
    let coordinator = Coordinator::start(config).await.unwrap();
    let server = vigil::server::Server::bind(
        coordinator.clone(),
        &vigil::server::ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..server
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (url, coordinator, stop)
}

#[cfg(feature = "cli")]
/// JSON-RPC over HTTP to `target`, `batch` heartbeats per request, no token.
pub fn http(target: impl Into<String>, batch: usize) -> vigil::load::Transport {
    vigil::load::Transport::Http {
        target: target.into(),
        token: None,
        batch,
    }
}

#[cfg(feature = "server")]
/// Reads the welcome every WebSocket on `/ws` receives first — a JSON-RPC notification
/// `connected` that is also ClaudeBench's `{"type":"connected"}` — and answers it.
pub async fn welcome<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("a welcome within 5 s")
        .expect("a frame")
        .expect("a readable frame");
    let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
        panic!("the welcome is a text frame: {frame:?}");
    };
    let welcome: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    assert_eq!(welcome["method"], "connected", "{welcome}");
    welcome
}
