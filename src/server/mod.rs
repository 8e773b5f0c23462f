//! The HTTP server: JSON-RPC 2.0 over `POST /rpc` and `POST /rpc/batch`, over WebSocket at
//! `GET /ws` (with pushed events), health at `GET /healthz`, Prometheus text at `GET /metrics`,
//! with the guards of DESIGN.md — a body limit (HTTP 413), an optional bearer
//! token (HTTP 401), a per-instance heartbeat rate limit (−32000 with `retryAfterMs`) and a
//! per-call timeout (−32002). [`Server`] also bounds connections: header, body and idle
//! timeouts and a cap on open connections (see `conn.rs`).

mod conn;
mod metrics;
mod rate;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::coordinator::Coordinator;
use crate::rpc::{Dispatcher, RpcLimits};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default 127.0.0.1:7420).
    pub listen: SocketAddr,
    /// Bearer token required on /rpc, /rpc/batch, /ws and /metrics, if set.
    pub token: Option<String>,
    /// Largest request body (default 1 MiB); larger is HTTP 413.
    pub max_body_bytes: usize,
    /// Most requests in one batch (default 1000).
    pub max_batch: usize,
    /// Time allowed per call (default 2 s).
    pub call_timeout: Duration,
    /// Heartbeats allowed per instance per minute (default 1000; 0 disables the limit).
    pub heartbeats_per_minute: u32,
    /// Serve the `chaos.*` fault-injection methods (default off).
    pub chaos: bool,
    /// How long a client has to send a request's head — request line and headers — counted
    /// from the connection's opening for its first request and from the first byte for later
    /// ones (default 10 s); then the connection is closed without an answer. Bytes trickling
    /// in do not extend it. Applies to connections [`Server`] accepts.
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body, counted from its head (default 30 s:
    /// a body of `max_body_bytes` at 35 KB/s); then the request is answered HTTP 408 and the
    /// connection closed. Applies to connections [`Server`] accepts.
    pub body_read_timeout: Duration,
    /// How long a connection may be silent (default 120 s): a keep-alive connection between
    /// requests (no byte from the client; [`Server`] only), and a WebSocket without a frame
    /// from the client, which is pinged after half of it so that a client whose WebSocket
    /// library answers pings stays connected. The default outlasts the 90 s after which
    /// hyper's and reqwest's pools drop idle connections, so clients close first.
    pub idle_timeout: Duration,
    /// Most connections open at once, WebSockets included (default 10 000). At the cap
    /// [`Server`] stops accepting: new connections wait in the listen backlog until one
    /// closes. Keep it below the process's open-file limit (`ulimit -n`).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            token: None,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            call_timeout: Duration::from_secs(2),
            heartbeats_per_minute: 1000,
            chaos: false,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    /// Checks the connection limits: every timeout above zero, and between 1 and
    /// 4 294 967 295 connections (fewer on 32-bit targets). The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be above zero"));
            }
        }
        self.connection_limits().map(|_| ())
    }

    fn connection_limits(&self) -> Result<conn::Limits, String> {
        let most = tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        let max_connections = u32::try_from(self.max_connections)
            .ok()
            .filter(|&n| n > 0 && n as usize <= most)
            .ok_or_else(|| {
                format!(
                    "max_connections must be between 1 and {most}, not {}",
                    self.max_connections
                )
            })?;
        Ok(conn::Limits {
            header_read: self.header_read_timeout,
            body_read: self.body_read_timeout,
            idle: self.idle_timeout,
            max_connections,
        })
    }
}

#[derive(Clone)]
struct AppState {
    dispatcher: Dispatcher,
    token: Option<Arc<str>>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
    max_body_bytes: usize,
    /// A WebSocket silent this long is pinged at half of it and closed at all of it.
    idle_timeout: Duration,
    /// Turns `true` when the [`Server`] shuts down: WebSockets then close.
    closing: Arc<watch::Sender<bool>>,
}

/// Builds the router over `coordinator`. Installs the Prometheus recorder first (once per
/// process) so the dispatcher's counters reach `/metrics`.
pub fn router(coordinator: Coordinator, config: &ServerConfig) -> Router {
    app(coordinator, config).0
}

/// The router, and the signal that closes its WebSockets.
fn app(coordinator: Coordinator, config: &ServerConfig) -> (Router, Arc<watch::Sender<bool>>) {
    let prometheus = metrics::install();
    let limiter =
        rate::HeartbeatLimiter::per_minute(coordinator.clone(), config.heartbeats_per_minute);
    let mut dispatcher = Dispatcher::new(
        coordinator,
        RpcLimits {
            max_batch: config.max_batch,
            call_timeout: config.call_timeout,
        },
    );
    dispatcher = dispatcher.with_chaos(config.chaos);
    if config.chaos && cfg!(feature = "fault-injection") {
        tracing::warn!("chaos.* fault injection is enabled: any caller can kill actors");
    } else if config.chaos {
        tracing::warn!("chaos.* was asked for, but this build has no fault injection: refused");
    }
    if let Some(limiter) = limiter {
        dispatcher = dispatcher.with_guard(Arc::new(limiter));
    }
    let state = AppState {
        dispatcher,
        token: config.token.as_deref().map(Arc::from),
        metrics: prometheus,
        max_body_bytes: config.max_body_bytes,
        idle_timeout: config.idle_timeout,
        closing: Arc::new(watch::channel(false).0),
    };
    let closing = state.closing.clone();
    let mut rpc = Router::new()
        .route("/rpc", post(rpc_any))
        .route("/rpc/batch", post(rpc_batch))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics_page));
    // Without a token there is nothing to check: no middleware on the per-request path.
    if state.token.is_some() {
        rpc = rpc.layer(middleware::from_fn_with_state(state.clone(), require_token));
    }
    let rpc = rpc.layer(DefaultBodyLimit::max(config.max_body_bytes));
    let router = Router::new()
        .merge(rpc)
        .route("/healthz", get(healthz))
        .with_state(state);
    (router, closing)
}

/// A server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
    limits: conn::Limits,
    closing: Arc<watch::Sender<bool>>,
}

impl Server {
    /// Binds `config.listen`. A configuration that [`ServerConfig::validate`] refuses is an
    /// `InvalidInput` error.
    pub async fn bind(coordinator: Coordinator, config: &ServerConfig) -> std::io::Result<Self> {
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        config.validate().map_err(invalid)?;
        let limits = config.connection_limits().map_err(invalid)?;
        let listener = TcpListener::bind(config.listen).await?;
        let (router, closing) = app(coordinator, config);
        Ok(Self {
            listener,
            router,
            limits,
            closing,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves HTTP/1.1 (with WebSocket upgrades) until `shutdown` completes, within the
    /// connection limits of its [`ServerConfig`]. Then it stops accepting, answers the
    /// requests in flight, closes idle connections and WebSockets (close code 1001), and
    /// returns once every connection has closed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        conn::serve(
            self.listener,
            self.router,
            self.limits,
            self.closing,
            shutdown,
        )
        .await
    }
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| token_matches(p, token)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Compares a presented bearer token with the configured one in constant time (`subtle`): how
/// long it takes does not depend on how much of the token is right, so it cannot be guessed
/// byte by byte. Tokens of a different length are refused at once, which reveals the length
/// only.
fn token_matches(presented: &str, configured: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(configured.as_bytes()).into()
}

fn json_response(answer: Option<Value>) -> Response {
    bytes_response(answer.and_then(|v| serde_json::to_vec(&v).ok()))
}

fn bytes_response(answer: Option<Vec<u8>>) -> Response {
    match answer {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
    }
}

async fn rpc_any(State(state): State<AppState>, body: Bytes) -> Response {
    bytes_response(state.dispatcher.handle_body_bytes(&body).await)
}

async fn rpc_batch(State(state): State<AppState>, body: Bytes) -> Response {
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => state.dispatcher.handle_batch(items).await,
        Ok(_) => Some(serde_json::json!({
            "jsonrpc": "2.0",
            "error": {"code": crate::rpc::code::INVALID_REQUEST,
                      "message": "invalid request: /rpc/batch takes an array"},
            "id": null
        })),
        Err(_) => state.dispatcher.handle_body(&body).await, // the parse error, as /rpc gives it
    };
    json_response(answer)
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    let page = metrics::render(state.dispatcher.coordinator(), state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let instances = state.dispatcher.coordinator().instance_count();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"status": "ok", "instances": instances}).to_string(),
    )
        .into_response()
}
