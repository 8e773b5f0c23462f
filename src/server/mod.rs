//! The HTTP server: JSON-RPC 2.0 over `POST /rpc` and `POST /rpc/batch`, over WebSocket at
//! `GET /ws` (with pushed events, and ClaudeBench's WebSocket protocol beside it; `GET
//! /ws/stats` counts the sockets), health at `GET /healthz`, Prometheus text at `GET /metrics`,
//! MCP at `POST /mcp` (with the `mcp` feature; see [`crate::mcp`]), the status page at `GET /`
//! (docs/ui.md; served without a token, it asks the API with the user's), with the guards of
//! DESIGN.md — a body limit (HTTP 413), bearer tokens (HTTP 401 without a
//! valid one) naming a principal whose role bounds what it may act on (−32002), a
//! per-instance heartbeat rate limit (−32000 with `retryAfterMs`) and a per-call timeout
//! (−32007). [`Server`] also bounds connections: header, body and idle
//! timeouts and a cap on open connections (see `conn.rs`).

mod conn;
mod direct;
mod metrics;
mod rate;
mod standby;
mod ui;
mod ws;

pub use standby::ActiveInfo;

/// The scrape-time part of the `GET /metrics` page of `coordinator` (its gauges, without the
/// recorder's counters), for `benches/scale.rs`. Not API.
#[doc(hidden)]
pub fn bench_metrics_render(coordinator: &Coordinator) -> String {
    metrics::render(coordinator, None)
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::Full;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::coordinator::Coordinator;
use crate::error::{Error, ValidationError};
use crate::rpc::{Dispatcher, Principal, Role, RpcLimits};

/// A named bearer token and the role of the principal it stands for (`vigil serve --tokens
/// FILE`). Its `Debug` form hides the token.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// The principal's name: instances it registers are bound to it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The bearer token (at least 16 bytes).
    pub token: String,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The shortest token a token file may hold.
pub const MIN_NAMED_TOKEN_BYTES: usize = 16;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default 127.0.0.1:7420).
    pub listen: SocketAddr,
    /// The operator's bearer token (principal `operator`). With it or any [`tokens`], every
    /// call to /rpc, /rpc/batch, /ws and /metrics needs a valid token.
    ///
    /// [`tokens`]: ServerConfig::tokens
    pub token: Option<String>,
    /// Named tokens, each an operator or a worker principal (default none).
    pub tokens: Vec<NamedToken>,
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
    /// Serve MCP at `POST /mcp` (default on; needs the `mcp` feature), behind the same
    /// bearer tokens and body limit as `/rpc`. `system.health` reports it as `services.mcp`.
    pub mcp: bool,
    /// Serve the status page at `GET /` and its assets under `/ui/` (default on; see
    /// docs/ui.md). The page is static and served without a token; what it shows it asks
    /// `/rpc` and `/ws` for with the user's token. Off, [`Server`] answers `GET /` with a 404
    /// saying so.
    pub ui: bool,
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
    /// The coordinator epoch of an active coordinator among several (`vigil serve --ha`,
    /// docs/ha.md; default `None`): `/healthz` then adds `"role": "active"` and `"epoch"`, and
    /// `/metrics` `vigil_ha_active 1` and `vigil_ha_epoch`.
    pub ha_epoch: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            token: None,
            tokens: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            call_timeout: Duration::from_secs(2),
            max_answer_bytes: crate::rpc::DEFAULT_MAX_ANSWER_BYTES,
            heartbeats_per_minute: 1000,
            chaos: false,
            mcp: true,
            ui: true,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
            ha_epoch: None,
        }
    }
}

impl ServerConfig {
    /// Checks the tokens: names and tokens unique, names non-empty, named tokens at least
    /// [`MIN_NAMED_TOKEN_BYTES`] long, none equal to the operator's `token`.
    pub fn validate_tokens(&self) -> Result<(), Error> {
        let refuse = |rule: String| Err(Error::Config(ValidationError::new("tokens", rule)));
        if self.token.as_deref() == Some("") {
            return Err(Error::Config(ValidationError::new(
                "token",
                "must not be empty",
            )));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.name.is_empty() || t.name.chars().any(|c| c.is_control()) {
                return refuse(format!("token {i}: name must be non-empty printable text"));
            }
            if t.token.len() < MIN_NAMED_TOKEN_BYTES {
                return refuse(format!(
                    "token {:?}: at least {MIN_NAMED_TOKEN_BYTES} bytes, got {}",
                    t.name,
                    t.token.len()
                ));
            }
            if t.name == "operator" && self.token.is_some() {
                return refuse(format!(
                    "token {:?}: the name operator belongs to --token",
                    t.name
                ));
            }
            if self.token.as_deref() == Some(t.token.as_str()) {
                return refuse(format!("token {:?}: same token as --token", t.name));
            }
            for other in &self.tokens[..i] {
                if other.name == t.name {
                    return refuse(format!("name {:?} is listed twice", t.name));
                }
                if other.token == t.token {
                    return refuse(format!(
                        "tokens {:?} and {:?} are the same",
                        other.name, t.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Bearer tokens and the principals they stand for.
struct Identities {
    tokens: Vec<(Box<[u8]>, Principal)>,
}

impl Identities {
    fn new(config: &ServerConfig) -> Option<Self> {
        let operator = config
            .token
            .iter()
            .map(|t| (t.as_bytes().into(), Principal::operator("operator")));
        let named = config.tokens.iter().map(|t| {
            let principal = match t.role {
                Role::Operator => Principal::operator(&t.name),
                Role::Worker => Principal::worker(&t.name),
            };
            (t.token.as_bytes().into(), principal)
        });
        let tokens: Vec<_> = operator.chain(named).collect();
        (!tokens.is_empty()).then_some(Self { tokens })
    }

    /// The principal of `presented`. Every configured token is compared, each in constant
    /// time, so how long it takes tells nothing about which one (nearly) matched.
    fn principal(&self, presented: &str) -> Option<&Principal> {
        let mut found = None;
        for (token, principal) in &self.tokens {
            if token_matches(presented, token) {
                found = Some(principal);
            }
        }
        found
    }
}

impl ServerConfig {
    /// Checks the tokens ([`validate_tokens`](Self::validate_tokens)) and the connection
    /// limits: every timeout above zero, and between 1 and 4 294 967 295 connections (fewer on
    /// 32-bit targets). The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_tokens().map_err(|e| e.to_string())?;
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
    identities: Option<Arc<Identities>>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
    max_body_bytes: usize,
    /// A WebSocket silent this long is pinged at half of it and closed at all of it.
    idle_timeout: Duration,
    /// Turns `true` when the [`Server`] shuts down: WebSockets then close.
    closing: Arc<watch::Sender<bool>>,
    /// The open WebSockets, for `/ws/stats`.
    ws_clients: Arc<ws::WsClients>,
    /// [`ServerConfig::ha_epoch`].
    ha_epoch: Option<u64>,
}

/// Builds the router over `coordinator`. Installs the Prometheus recorder first (once per
/// process) so the dispatcher's counters reach `/metrics`. Fails with [`Error::Config`] when
/// the tokens do not pass [`ServerConfig::validate_tokens`]. With [`ServerConfig::ui`] it
/// serves the status page at `/` (and `/ui/…`); it sets no fallback, so unknown paths are the
/// merging application's to answer.
pub fn router(coordinator: Coordinator, config: &ServerConfig) -> Result<Router, Error> {
    config.validate_tokens()?;
    Ok(app(coordinator, config, None).router)
}

/// What a [`Server`] serves.
struct App {
    router: Router,
    /// `POST /rpc` as the router serves it, without the router (see `direct.rs`); `None` on
    /// a standby.
    direct: Option<Arc<direct::DirectRpc>>,
    /// Turns `true` when the server shuts down: WebSockets then close.
    closing: Arc<watch::Sender<bool>>,
}

/// The router, its direct `POST /rpc`, and the signal that closes its WebSockets. `bound`:
/// the address a [`Server`] listens on (`system.health`'s `listen`).
fn app(coordinator: Coordinator, config: &ServerConfig, bound: Option<SocketAddr>) -> App {
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
    if let Some(bound) = bound {
        dispatcher = dispatcher.with_listen(bound);
    }
    let mcp = config.mcp && cfg!(feature = "mcp");
    if config.mcp && !mcp {
        tracing::warn!("MCP was asked for, but this build has no `mcp` feature: /mcp not served");
    }
    dispatcher = dispatcher.with_mcp(mcp);
    if config.chaos && cfg!(feature = "fault-injection") {
        tracing::warn!(
            "chaos.* fault injection is enabled: any operator (any caller, without tokens) can kill actors"
        );
    } else if config.chaos {
        tracing::warn!("chaos.* was asked for, but this build has no fault injection: refused");
    }
    if let Some(limiter) = limiter {
        dispatcher = dispatcher.with_guard(Arc::new(limiter));
    }
    let state = AppState {
        dispatcher,
        identities: Identities::new(config).map(Arc::new),
        metrics: prometheus,
        max_body_bytes: config.max_body_bytes,
        idle_timeout: config.idle_timeout,
        closing: Arc::new(watch::channel(false).0),
        ws_clients: Arc::default(),
        ha_epoch: config.ha_epoch,
    };
    let closing = state.closing.clone();
    let direct = Arc::new(direct::DirectRpc {
        dispatcher: state.dispatcher.clone(),
        identities: state.identities.clone(),
        max_body_bytes: state.max_body_bytes,
    });
    let mut rpc = Router::new()
        .route("/rpc", post(rpc_any))
        .route("/rpc/batch", post(rpc_batch))
        .route("/ws", get(ws::upgrade))
        .route("/ws/stats", get(ws::stats))
        .route("/metrics", get(metrics_page));
    #[cfg(feature = "mcp")]
    if mcp {
        // The in-process backend acts for the principal `require_token` puts in the request.
        // With tokens, a call that arrives without a principal is refused, never served as
        // the operator.
        let backend = crate::mcp::DispatcherBackend::new(state.dispatcher.clone())
            .requiring_principal(state.identities.is_some());
        let server = crate::mcp::VigilMcp::new(backend, crate::mcp::Fallbacks::none());
        rpc = rpc.route_service(
            "/mcp",
            crate::mcp::http_service(server, config.max_body_bytes, config.listen),
        );
    }
    // Without tokens there is nothing to check: no middleware on the per-request path, and
    // every caller is the anonymous operator.
    if state.identities.is_some() {
        rpc = rpc.layer(middleware::from_fn_with_state(state.clone(), require_token));
    }
    let rpc = rpc.layer(DefaultBodyLimit::max(config.max_body_bytes));
    let mut router = Router::new().merge(rpc).route("/healthz", get(healthz));
    if config.ui {
        // Outside the token middleware: the page is static, the same for everyone.
        router = router.route("/", get(ui::index));
        for &(path, content_type, body) in &ui::ASSETS[1..] {
            router = router.route(
                path,
                get(move || async move { ui::asset(content_type, body) }),
            );
        }
    }
    let router = router.with_state(state);
    App {
        router,
        direct: Some(direct),
        closing,
    }
}

/// A server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: App,
    limits: conn::Limits,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `config.listen`. A configuration that [`ServerConfig::validate`] refuses is an
    /// `InvalidInput` error.
    pub async fn bind(coordinator: Coordinator, config: &ServerConfig) -> std::io::Result<Self> {
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        config.validate().map_err(invalid)?;
        let listener = TcpListener::bind(config.listen).await?;
        Self::serving(coordinator, config, listener)
    }

    /// A server on a listener already bound (`config.listen` is ignored): the socket outlives
    /// the server, so that clients wait in its backlog while one server gives way to another
    /// (`vigil serve --ha` switching between standby and active). Must be called inside a
    /// tokio runtime.
    pub fn on_listener(
        coordinator: Coordinator,
        config: &ServerConfig,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Self> {
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        config.validate().map_err(invalid)?;
        listener.set_nonblocking(true)?;
        Self::serving(coordinator, config, TcpListener::from_std(listener)?)
    }

    fn serving(
        coordinator: Coordinator,
        config: &ServerConfig,
        listener: TcpListener,
    ) -> std::io::Result<Self> {
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let limits = config.connection_limits().map_err(invalid)?;
        let bound = listener.local_addr()?;
        let mut app = app(coordinator, config, Some(bound));
        // An unknown path is a short 404 naming the endpoints, and `GET /` one saying the page
        // is off when it is. Only here: `router()` leaves fallbacks to the application that
        // merges it (axum refuses to merge two routers that both have one).
        let ui = config.ui;
        app.router = app
            .router
            .fallback(move |method, uri| ui::not_found(ui, method, uri));
        Ok(Self {
            listener,
            app,
            limits,
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
        conn::serve(self.listener, self.app, self.limits, shutdown).await
    }
}

/// Finds the caller's principal from its bearer token (HTTP 401 without a valid one) and
/// hands it to the handlers as a request extension.
async fn require_token(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(identities) = &state.identities {
        let headers = request.headers();
        // The subprotocol counts on the WebSocket endpoint only (a nested router sees its
        // own paths, the prefix stripped): elsewhere a token travels in `Authorization`.
        let ws = request.method() == axum::http::Method::GET && request.uri().path() == "/ws";
        let principal = authorize(identities, headers)
            .or_else(|| {
                ws.then(|| authorize_ws_subprotocol(identities, headers))
                    .flatten()
            })
            .cloned();
        let Some(principal) = principal else {
            return unauthorized();
        };
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

/// The principal of the request's bearer token, if it names one.
fn authorize<'a>(identities: &'a Identities, headers: &HeaderMap) -> Option<&'a Principal> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|p| identities.principal(p))
}

/// The subprotocol a browser's WebSocket carries its bearer token in: `vigil.bearer.` and the
/// token in base64url without padding. Browsers cannot set `Authorization` on a WebSocket, so
/// the status page offers `["vigil.v1", "vigil.bearer.<base64url(token)>"]` and the upgrade
/// answers `vigil.v1`, never the token.
const BEARER_SUBPROTOCOL: &str = "vigil.bearer.";

/// The principal of a token sent as a WebSocket subprotocol (see [`BEARER_SUBPROTOCOL`]): only
/// on a WebSocket upgrade request (to `GET /ws`, which the caller checks) without an
/// `Authorization` header (a header, right or wrong, is what counts when present).
fn authorize_ws_subprotocol<'a>(
    identities: &'a Identities,
    headers: &HeaderMap,
) -> Option<&'a Principal> {
    use base64::Engine;
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade || headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix(BEARER_SUBPROTOCOL))
        .filter_map(|encoded| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
        })
        .filter_map(|token| String::from_utf8(token).ok())
        .find_map(|token| identities.principal(&token))
}

/// HTTP 401: no bearer token, or one that names nobody.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

/// The dispatcher acting for the request's principal (the anonymous operator on a server
/// without tokens).
fn dispatcher_for(state: &AppState, principal: Option<Extension<Principal>>) -> Dispatcher {
    match principal {
        Some(Extension(principal)) => state.dispatcher.for_principal(principal),
        None => state.dispatcher.clone(),
    }
}

/// Compares a presented bearer token with a configured one in constant time (`subtle`): how
/// long it takes does not depend on how much of the token is right, so it cannot be guessed
/// byte by byte. Tokens of a different length are refused at once, which reveals the length
/// only.
fn token_matches(presented: &str, configured: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(configured).into()
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

/// The answer of `POST /rpc`: the JSON-RPC answer's bytes (HTTP 200, `application/json`), or
/// HTTP 204 for notifications; the same as axum's `([(CONTENT_TYPE, …)], bytes)` response,
/// without boxing the body. (The router's route adds `content-length`; hyper writes the same
/// header where nobody did.) Shared by the router and `direct.rs`.
fn rpc_response(answer: Option<Vec<u8>>) -> axum::http::Response<Full<Bytes>> {
    let Some(bytes) = answer else {
        let mut response = axum::http::Response::new(Full::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        return response;
    };
    let mut response = axum::http::Response::new(Full::new(Bytes::from(bytes)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn rpc_any(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let answer = match principal {
        None => state.dispatcher.handle_body_bytes(&body).await,
        Some(_) => {
            dispatcher_for(&state, principal)
                .handle_body_bytes(&body)
                .await
        }
    };
    rpc_response(answer).map(axum::body::Body::new)
}

async fn rpc_batch(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let dispatcher = dispatcher_for(&state, principal);
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'[') {
        // The same path as a batch on /rpc: the fast heartbeats and the byte budget.
        return bytes_response(dispatcher.handle_body_bytes(&body).await);
    }
    let answer = match serde_json::from_slice::<Value>(&body) {
        Ok(_) => Some(serde_json::json!({
            "jsonrpc": "2.0",
            "error": {"code": crate::rpc::code::INVALID_REQUEST,
                      "message": "invalid request: /rpc/batch takes an array"},
            "id": null
        })),
        Err(_) => dispatcher.handle_body(&body).await, // the parse error, as /rpc gives it
    };
    json_response(answer)
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    let mut page = metrics::render(state.dispatcher.coordinator(), state.metrics);
    if let Some(epoch) = state.ha_epoch {
        let active = state.dispatcher.coordinator().ensure_active().is_ok();
        page.push_str(&standby::ha_metrics(active, Some(epoch)));
    }
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
    let coordinator = state.dispatcher.coordinator();
    let instances = coordinator.instance_count();
    let mut body = serde_json::json!({"status": "ok", "instances": instances});
    if let Some(epoch) = state.ha_epoch {
        if coordinator.ensure_active().is_err() {
            // Deposed, and about to give way to the standby server.
            return standby::health(&standby::ActiveInfo::default());
        }
        body["role"] = "active".into();
        body["epoch"] = epoch.into();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
