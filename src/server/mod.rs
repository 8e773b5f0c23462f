//! The HTTP server: JSON-RPC 2.0 over `POST /rpc` and `POST /rpc/batch`, over WebSocket at
//! `GET /ws` (with pushed events), health at `GET /healthz`, Prometheus text at `GET /metrics`,
//! with the guards of DESIGN.md — a body limit (HTTP 413), an optional bearer
//! token (HTTP 401), a per-instance heartbeat rate limit (−32000 with `retryAfterMs`) and a
//! per-call timeout (−32002).

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
    /// Byte budget of one response, on `/rpc`, `/rpc/batch` and each WebSocket answer frame
    /// (default 16 MiB): an answer of a read-only call that would exceed it is replaced by a
    /// −32005 error (see [`RpcLimits::max_answer_bytes`]).
    pub max_answer_bytes: usize,
    /// Heartbeats allowed per instance per minute (default 1000; 0 disables the limit).
    pub heartbeats_per_minute: u32,
    /// Serve the `chaos.*` fault-injection methods (default off).
    pub chaos: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            token: None,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            call_timeout: Duration::from_secs(2),
            max_answer_bytes: crate::rpc::DEFAULT_MAX_ANSWER_BYTES,
            heartbeats_per_minute: 1000,
            chaos: false,
        }
    }
}

#[derive(Clone)]
struct AppState {
    dispatcher: Dispatcher,
    token: Option<Arc<str>>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
    max_body_bytes: usize,
}

/// Builds the router over `coordinator`. Installs the Prometheus recorder first (once per
/// process) so the dispatcher's counters reach `/metrics`.
pub fn router(coordinator: Coordinator, config: &ServerConfig) -> Router {
    let prometheus = metrics::install();
    let limiter =
        rate::HeartbeatLimiter::per_minute(coordinator.clone(), config.heartbeats_per_minute);
    let mut dispatcher = Dispatcher::new(
        coordinator,
        RpcLimits {
            max_batch: config.max_batch,
            call_timeout: config.call_timeout,
            max_answer_bytes: config.max_answer_bytes,
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
    };
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
    Router::new()
        .merge(rpc)
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// A server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// Binds `config.listen`.
    pub async fn bind(coordinator: Coordinator, config: &ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Self {
            listener,
            router: router(coordinator, config),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; in-flight requests finish first.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        // Answers are small and go out at once: no Nagle delay on them.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
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
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'[') {
        // The same path as a batch on /rpc: the fast heartbeats and the byte budget.
        return bytes_response(state.dispatcher.handle_body_bytes(&body).await);
    }
    let answer = match serde_json::from_slice::<Value>(&body) {
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
