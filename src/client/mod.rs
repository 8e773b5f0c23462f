//! A worker client for a Vigil server, in the spirit of etcd's `clientv3/concurrency`.
//!
//! * [`Client`] — a connection to one or more `vigil serve` addresses over HTTP or WebSocket,
//!   with an optional bearer token, following a standby (`vigil serve --ha`) to the active
//!   coordinator; typed calls for every method a worker needs, and
//!   [`Client::call`] for the rest.
//! * [`Session`] — a registered instance that keeps itself alive with heartbeats from a
//!   background task, signals the moment it is lost, and registers again.
//! * [`Election`] — who leads in which term, as seen by a session; wait until this session
//!   leads and use the term as a fencing token.
//! * [`Claim`] — a claimed task: step heartbeats that extend its leases in the background,
//!   an immediate `stale` signal, completion or failure.
//! * [`Lease`] — a resource lease held by an instance, with its fencing token.
//!
//! ```no_run
//! use std::time::Duration;
//! use vigil::client::{Claim, Client, Election, Session, SessionOptions};
//!
//! # async fn demo() -> Result<(), vigil::client::ClientError> {
//! let client = Client::builder()
//!     .url("http://127.0.0.1:7420")
//!     .token("s3cret")
//!     .connect()
//!     .await?;
//! let session = Session::new(
//!     &client,
//!     SessionOptions::new("worker-1").roles(["worker"]).ttl(Duration::from_secs(10)),
//! )
//! .await?;
//! println!("registered in epoch {}", session.epoch());
//!
//! // Work on tasks until the session is lost.
//! let lost = session.lost();
//! tokio::pin!(lost);
//! loop {
//!     let Some(mut claim) = Claim::next(&client, session.id()).await? else {
//!         tokio::select! {
//!             reason = &mut lost => { println!("lost: {reason}"); break; }
//!             _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
//!         }
//!     };
//!     claim.keep_alive(Duration::from_secs(5), Some(Duration::from_secs(60)));
//!     tokio::select! {
//!         _ = claim.stale() => println!("task {} was taken back", claim.id()),
//!         _ = tokio::time::sleep(Duration::from_millis(100)) => {
//!             claim.complete(Some(serde_json::json!({"ok": true}))).await?;
//!         }
//!     }
//! }
//!
//! // Leader-only work, fenced by the term.
//! let election = Election::new(&session);
//! let term = election.wait_leader().await?;
//! println!("leading in term {term}");
//! session.close().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::coordinator::LeaseOutcome;
use crate::error::code;
use crate::events::Event;
use crate::model::{
    Heartbeat, InstanceId, InstanceView, LeaderView, RegisterRequest, Registration, Term,
    Unregistration,
};
use crate::work::lease::{LeaseConflict, LeaseGrant, LeaseMode};
use crate::work::task::{
    ClaimedTask, Completion, Failure, LockSpec, StepHeartbeat, TaskId, TaskView,
};

mod claim;
mod election;
mod error;
mod lease;
mod session;
pub(crate) mod transport;

pub use claim::{Claim, ClaimError, ClaimState};
pub use election::{Election, Leadership};
pub use error::ClientError;
pub use lease::{Acquire, Lease, LeaseError};
pub use session::{LostReason, Session, SessionOptions, SessionState};

use transport::{HttpPool, TransportError, WsConn};

/// How calls reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// `POST /rpc`, a pool of keep-alive HTTP/1.1 connections.
    #[default]
    Http,
    /// Text frames on one `GET /ws` WebSocket per server, reopened when it breaks.
    WebSocket,
}

/// The call timeout when none is set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a connection attempt (TCP connect plus handshake) may take.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound on one connection attempt: the call timeout shared among the URLs, at most
/// [`MAX_CONNECT_TIMEOUT`] (and at least 10 ms).
fn connect_timeout(timeout: Duration, urls: usize) -> Duration {
    (timeout / u32::try_from(urls.max(1)).unwrap_or(u32::MAX))
        .min(MAX_CONNECT_TIMEOUT)
        .max(Duration::from_millis(10))
}

/// Builds a [`Client`]: base URLs, transport, token, call timeout.
#[derive(Clone, Default)]
pub struct ClientBuilder {
    urls: Vec<String>,
    transport: TransportKind,
    token: Option<String>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("urls", &self.urls)
            .field("transport", &self.transport)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientBuilder {
    /// Adds a base URL (`http://127.0.0.1:7420`). Several are tried in order; a call moves to
    /// the next when a connection cannot be made, and follows a standby's −32008 to the active
    /// coordinator (see [`Client`], "Several servers, and standbys").
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Adds several base URLs.
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// HTTP (default) or WebSocket.
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    /// The bearer token the server was started with (`--token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets or clears the token.
    pub fn token_opt(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// How long a call may wait for its answer once its request is sent (default 10 s).
    /// Each connection attempt gets its own, shorter bound: the timeout divided by the number
    /// of URLs, at most 2 s — so a blackholed address costs at most that before the next URL
    /// is tried.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks the URLs and connects to the first server that answers (a TCP connection for
    /// HTTP, the WebSocket upgrade for WebSocket — so a wrong token shows here with the
    /// WebSocket transport, at the first call with HTTP). Each attempt is bounded by the
    /// connect timeout (see [`timeout`](Self::timeout)), so this fails rather than hangs on an
    /// address that never answers.
    pub async fn connect(self) -> Result<Client, ClientError> {
        if self.urls.is_empty() {
            return Err(ClientError::InvalidUrl(
                "no server URL given (e.g. http://127.0.0.1:7420)".into(),
            ));
        }
        let auth = transport::bearer(self.token.as_deref());
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let connect_timeout = connect_timeout(timeout, self.urls.len());
        let mut endpoints = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            endpoints.push(Arc::new(
                Endpoint::new(url, self.transport, auth.clone(), connect_timeout)
                    .map_err(ClientError::InvalidUrl)?,
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                endpoints: parking_lot::RwLock::new(endpoints),
                current: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                timeout,
                transport: self.transport,
                auth,
                connect_timeout,
            }),
        };
        client.warm_up().await?;
        Ok(client)
    }
}

enum Link {
    Http(HttpPool),
    Ws {
        url: String,
        auth: Option<String>,
        /// The open connection, if any.
        conn: parking_lot::Mutex<Option<Arc<WsConn>>>,
        /// Held while a connection is being opened, so concurrent calls open one.
        opening: tokio::sync::Mutex<()>,
    },
}

struct Endpoint {
    base: String,
    link: Link,
    /// Bounds each connection attempt (TCP connect plus handshake).
    connect_timeout: Duration,
}

impl Endpoint {
    /// An endpoint for the base URL `url` (checked; nothing is connected yet).
    fn new(
        url: &str,
        transport: TransportKind,
        auth: Option<String>,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let link = match transport {
            TransportKind::Http => {
                Link::Http(HttpPool::new(url, auth)?.with_connect_timeout(connect_timeout))
            }
            TransportKind::WebSocket => Link::Ws {
                url: transport::ws_url(url)?,
                auth,
                conn: parking_lot::Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
            },
        };
        Ok(Endpoint {
            base: url.to_string(),
            link,
            connect_timeout,
        })
    }

    async fn ws(&self) -> Result<Arc<WsConn>, TransportError> {
        let Link::Ws {
            url,
            auth,
            conn,
            opening,
        } = &self.link
        else {
            unreachable!("only for WebSocket endpoints")
        };
        let open = |slot: &Option<Arc<WsConn>>| slot.as_ref().filter(|c| !c.is_closed()).cloned();
        if let Some(c) = open(&conn.lock()) {
            return Ok(c);
        }
        let _opening = opening.lock().await;
        if let Some(c) = open(&conn.lock()) {
            return Ok(c);
        }
        let c = Arc::new(WsConn::open_within(url, auth.as_deref(), self.connect_timeout).await?);
        *conn.lock() = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Forgets `ws` if it is still the endpoint's connection: the next call opens a new one.
    fn drop_ws(&self, ws: &Arc<WsConn>) {
        if let Link::Ws { conn, .. } = &self.link {
            let mut slot = conn.lock();
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, ws)) {
                *slot = None;
            }
        }
    }

    async fn warm_up(&self) -> Result<(), TransportError> {
        match &self.link {
            Link::Http(pool) => pool.warm_up().await,
            Link::Ws { .. } => self.ws().await.map(|_| ()),
        }
    }

    /// Sends `body` and waits up to `timeout` for the answer, once a connection is there
    /// (making one is bounded by the connect timeout, and fails with
    /// [`TransportError::Connect`] only: nothing was sent then).
    async fn exchange(&self, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let no_answer = || TransportError::TimedOut {
            url: self.base.clone(),
            after: timeout,
            method: None,
        };
        match &self.link {
            Link::Http(pool) => {
                let sender = pool.checkout().await?;
                match tokio::time::timeout(timeout, pool.post_on(sender, body)).await {
                    Ok(answer) => answer.map(|b| b.to_vec()),
                    Err(_) => Err(no_answer()),
                }
            }
            Link::Ws { .. } => {
                let ws = self.ws().await?;
                let text = String::from_utf8(body).expect("serde_json writes UTF-8");
                let answer = match tokio::time::timeout(timeout, ws.exchange_text(text)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(no_answer()),
                };
                if answer.is_err() {
                    // Broken, or silent for a whole call timeout (perhaps half-open): reopen
                    // on the next call rather than queue behind it.
                    self.drop_ws(&ws);
                }
                answer.map(String::into_bytes)
            }
        }
    }
}

/// The failure of every endpoint tried: the one, or all of them.
fn unreachable(mut failures: Vec<TransportError>) -> TransportError {
    if failures.len() == 1 {
        failures.remove(0)
    } else {
        TransportError::Unreachable(failures)
    }
}

struct Inner {
    /// The URLs given, in order, then any active coordinator a standby named that was not
    /// among them (see [`Client`], "Standbys"). Only ever appended to.
    endpoints: parking_lot::RwLock<Vec<Arc<Endpoint>>>,
    /// Where calls go first: the index of the server that answered last.
    current: AtomicUsize,
    next_id: AtomicU64,
    timeout: Duration,
    /// For endpoints added when following a standby.
    transport: TransportKind,
    auth: Option<String>,
    connect_timeout: Duration,
}

/// The first pause while no coordinator is active (a takeover under way); it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between rounds while no coordinator is active.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The most endpoints a client keeps: the URLs given plus actives followed outside them.
const MAX_ENDPOINTS: usize = 64;

/// What one round of [`Client::exchange`] got from the endpoint at `index`.
enum Reply {
    /// An answer (anything but a standby's).
    Answer(Vec<u8>),
    /// A standby's −32008 (or its refusal of the WebSocket): nothing ran.
    Standby(transport::Standby),
}

/// A connection to a Vigil server (or a list of them, tried in order). Cheap to clone: clones
/// share the connections.
///
/// # Several servers, and standbys
///
/// A call goes to the server that answered last. When no connection can be made to it, the
/// call moves on to the next URL (nothing was sent). When the server answers that it is a
/// standby (`vigil serve --ha`: JSON-RPC error −32008, or `/ws` refused with 503 and the same
/// data), nothing ran there, so the call is sent again:
///
/// * to the active coordinator the standby names (`data.active`). It is matched against the
///   URLs given by origin (host and port; paths and trailing slashes aside). **An active that
///   is not among them is followed all the same** when it is an `http://` URL: the client
///   adds it to its list (the bearer token goes to it too, as it is a member of the same
///   cluster). An active URL it cannot use fails the call with a message naming it;
/// * while no coordinator is active (`data.active` is `null`: a takeover under way), to the
///   next URL in turn, pausing 100 ms, then 200, 400, 500, 500 ms… between rounds until the
///   call timeout, and then the call fails: "no active coordinator among A, B within 10 s
///   (a takeover may be under way) …" ([`ClientError::Transport`], which
///   [`is_transient`](ClientError::is_transient)).
///
/// The client remembers where the active answered ([`current_url`](Self::current_url)), so
/// later calls go straight there. Each request is followed on its own, over HTTP as over
/// WebSocket. An answer is checked for −32008 with a byte search before anything is parsed,
/// so other answers cost nothing more.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("urls", &self.urls())
            .finish()
    }
}

impl Client {
    /// A builder: add URLs, choose the transport, set a token.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects over HTTP without a token to the first of `urls` that answers.
    pub async fn connect<I, S>(urls: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder().urls(urls).connect().await
    }

    /// The base URL calls currently go to: the server that answered last (after following a
    /// standby, the active coordinator it named).
    pub fn current_url(&self) -> String {
        self.endpoint(self.inner.current.load(Ordering::Relaxed))
            .base
            .clone()
    }

    /// Every base URL the client knows: those given, then any active it followed outside them.
    fn urls(&self) -> Vec<String> {
        self.inner
            .endpoints
            .read()
            .iter()
            .map(|e| e.base.clone())
            .collect()
    }

    fn endpoint_count(&self) -> usize {
        self.inner.endpoints.read().len()
    }

    /// The endpoint at `i` (modulo their count).
    fn endpoint(&self, i: usize) -> Arc<Endpoint> {
        let endpoints = self.inner.endpoints.read();
        Arc::clone(&endpoints[i % endpoints.len()])
    }

    async fn warm_up(&self) -> Result<(), ClientError> {
        let n = self.endpoint_count();
        let mut failures = Vec::new();
        for i in 0..n {
            match self.endpoint(i).warm_up().await {
                Ok(()) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                // A standby refusing the WebSocket answers: calls will follow it.
                Err(e) if transport::standby_refusal(&e).is_some() => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.before_sending() => failures.push(e),
                Err(other) => return Err(other.into()),
            }
        }
        Err(unreachable(failures).into())
    }

    /// The index of the endpoint for the active's URL `active`: one with the same origin, or
    /// a new one added for it. Errors when `active` is not a URL this client can use.
    fn endpoint_for(&self, standby: &str, active: &str) -> Result<usize, TransportError> {
        let bad = |why: String| TransportError::BadActive {
            url: standby.to_string(),
            active: active.to_string(),
            why,
        };
        let origin = transport::origin(active)
            .ok_or_else(|| bad(transport::parse_target(active).err().unwrap_or_default()))?;
        let same = |e: &Endpoint| transport::origin(&e.base).as_deref() == Some(origin.as_str());
        if let Some(i) = self.inner.endpoints.read().iter().position(|e| same(e)) {
            return Ok(i);
        }
        let endpoint = Endpoint::new(
            active.trim_end_matches('/'),
            self.inner.transport,
            self.inner.auth.clone(),
            self.inner.connect_timeout,
        )
        .map_err(bad)?;
        let mut endpoints = self.inner.endpoints.write();
        if let Some(i) = endpoints.iter().position(|e| same(e)) {
            return Ok(i);
        }
        if endpoints.len() >= MAX_ENDPOINTS {
            return Err(bad(format!(
                "this client already follows {MAX_ENDPOINTS} addresses"
            )));
        }
        endpoints.push(Arc::new(endpoint));
        tracing::info!(url = %active, "vigil client: following an active coordinator not among the URLs given");
        Ok(endpoints.len() - 1)
    }

    /// Sends `body` to the current server, moving on to the next one when no connection can
    /// be made (nothing was sent then, so this never runs a call twice). Each attempt to
    /// connect is bounded by the connect timeout; once sent, the answer by `timeout`.
    /// Returns the endpoint's index with what it answered; the indices of those that could
    /// not be connected to go to `tried`.
    async fn round(
        &self,
        body: &[u8],
        timeout: Duration,
        tried: &mut Vec<usize>,
    ) -> Result<(usize, Reply), TransportError> {
        let n = self.endpoint_count();
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = self.endpoint(i);
            match endpoint.exchange(body.to_vec(), timeout).await {
                Ok(answer) => {
                    if k > 0 {
                        self.inner.current.store(i, Ordering::Relaxed);
                        tracing::info!(url = %endpoint.base, "vigil client: switched server");
                    }
                    return Ok(match transport::standby_answer(&answer) {
                        Some(standby) => (i, Reply::Standby(standby)),
                        None => (i, Reply::Answer(answer)),
                    });
                }
                Err(e) => {
                    if let Some(standby) = transport::standby_refusal(&e) {
                        return Ok((i, Reply::Standby(standby)));
                    }
                    if e.before_sending() {
                        tried.push(i);
                        failures.push(e);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Err(unreachable(failures))
    }

    /// Sends `body` and returns the answer with the base URL that gave it, following standbys
    /// to the active coordinator (see [`Client`], "Several servers, and standbys").
    async fn exchange(&self, body: Vec<u8>) -> Result<(Vec<u8>, String), TransportError> {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut timeout = self.inner.timeout;
        let mut backoff = FIRST_BACKOFF;
        // The endpoints tried during this call: standbys, and those not reachable (a standby
        // may name an active that is gone until its lease runs out).
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let (i, standby) = match self.round(&body, timeout, &mut tried).await? {
                (i, Reply::Answer(answer)) => return Ok((answer, self.endpoint(i).base.clone())),
                (i, Reply::Standby(standby)) => (i, standby),
            };
            let here = self.endpoint(i).base.clone();
            tried.push(i);
            let next = match &standby.active {
                Some(active) => Some(self.endpoint_for(&here, active)?).filter(|&j| j != i),
                None => None,
            };
            tracing::debug!(standby = %here, active = ?standby.active, epoch = ?standby.epoch,
                            "vigil client: a standby answered");
            // Straight to a named active not yet tried in this call; otherwise the next URL
            // after a pause (a takeover under way, standbys naming each other, or naming an
            // active that cannot be reached).
            let (j, pause) = match next {
                Some(j) if !tried.contains(&j) => (j, false),
                Some(j) => (j, true),
                None => ((i + 1) % self.endpoint_count(), true),
            };
            self.inner.current.store(j, Ordering::Relaxed);
            if pause {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(TransportError::NoActive {
                        urls: self.urls(),
                        after: self.inner.timeout,
                    });
                }
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // What is left of the call timeout, for the answer of the next attempt.
            timeout = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(10));
        }
    }

    /// One JSON-RPC call with named parameters: its `result`, or the error.
    ///
    /// `events.subscribe` is refused ([`ClientError::Usage`]): the client has no event stream,
    /// and the events the server would push on the connection are no answers to calls.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        if method == "events.subscribe" {
            return Err(ClientError::Usage(
                "events.subscribe is not supported by vigil::client (it has no event stream): \
                 open a WebSocket to /ws for events"
                    .into(),
            ));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = transport::request_body(method, &params, id);
        let (answer, url) = self.exchange(body).await.map_err(|e| match e {
            TransportError::TimedOut { url, after, .. } => TransportError::TimedOut {
                url,
                after,
                method: Some(method.to_string()),
            }
            .into(),
            other => ClientError::from(other),
        })?;
        transport::decode_answer_from(&url, &answer)
    }

    /// A call whose result is read as `T`.
    async fn typed<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let value = self.call(method, params).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode(format!("{method}: {e}")))
    }

    /// `system.register`: registers `request.id` (or refreshes it while it is alive, keeping
    /// its epoch) — the same request type an embedded `Coordinator::register` takes. Its TTL
    /// is the coordinator's default when `None`.
    pub async fn register(&self, request: &RegisterRequest) -> Result<Registration, ClientError> {
        let mut params = json!({"id": request.id, "roles": request.roles});
        if let Some(ttl) = request.ttl {
            params["ttlMs"] = json!(ttl.as_millis() as u64);
        }
        if let Some(metadata) = &request.metadata {
            params["metadata"] = metadata.clone();
        }
        self.typed("system.register", params).await
    }

    /// `system.heartbeat`: `alive: false` (not an error) for an unknown or expired id.
    pub async fn heartbeat(&self, id: &str) -> Result<Heartbeat, ClientError> {
        self.typed("system.heartbeat", json!({"instanceId": id}))
            .await
    }

    /// `system.unregister`. [`Unregistration::unregistered`] is whether the instance was
    /// registered and alive (the server's `wasRegistered`; its `unregistered` is always true,
    /// as ClaudeBench's).
    pub async fn unregister(&self, id: &str) -> Result<Unregistration, ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            unregistered: bool,
            tasks_reassigned: usize,
            was_registered: Option<bool>,
        }
        let wire: Wire = self
            .typed("system.unregister", json!({"instanceId": id}))
            .await?;
        Ok(Unregistration {
            unregistered: wire.was_registered.unwrap_or(wire.unregistered),
            tasks_reassigned: wire.tasks_reassigned,
        })
    }

    /// `system.get_state`: at most `limit` instances, ordered by id (the server's default, 100,
    /// when `None`; at most 1000). [`ClusterView::truncated`] tells whether more follow;
    /// [`state_after`](Self::state_after) reads the next page.
    pub async fn state(&self, limit: Option<usize>) -> Result<ClusterView, ClientError> {
        let mut params = json!({});
        if let Some(limit) = limit {
            params["limit"] = json!(limit);
        }
        self.typed("system.get_state", params).await
    }

    /// `system.get_state` for the instances whose id sorts after `after` (the
    /// [`next_after`](ClusterView::next_after) of the previous page): at most `limit` of them.
    pub async fn state_after(
        &self,
        after: &str,
        limit: Option<usize>,
    ) -> Result<ClusterView, ClientError> {
        let mut params = json!({"after": after});
        if let Some(limit) = limit {
            params["limit"] = json!(limit);
        }
        self.typed("system.get_state", params).await
    }

    /// One instance as `system.get_state` shows it, if it is registered.
    pub async fn instance(&self, id: &str) -> Result<Option<InstanceView>, ClientError> {
        let view: ClusterView = self
            .typed("system.get_state", json!({"instanceId": id, "limit": 1}))
            .await?;
        Ok(view.instances.into_iter().find(|i| i.id.as_str() == id))
    }

    /// The leader, its epoch and the term (`system.get_state` without instances).
    pub async fn leader(&self) -> Result<LeaderView, ClientError> {
        Ok(self.state(Some(0)).await?.leadership)
    }

    /// `task.create`: a pending task carrying `payload`, `priority` 0–100 (50 when `None`),
    /// holding `locks` while it runs.
    pub async fn create_task(
        &self,
        payload: Value,
        priority: Option<u8>,
        locks: &[LockSpec],
    ) -> Result<TaskView, ClientError> {
        let mut params = json!({"payload": payload});
        if let Some(priority) = priority {
            params["priority"] = json!(priority);
        }
        if !locks.is_empty() {
            params["requiresLocks"] = serde_json::to_value(locks)
                .map_err(|e| ClientError::Decode(format!("encoding locks: {e}")))?;
        }
        self.typed("task.create", params).await
    }

    /// `task.get`.
    pub async fn task(&self, task_id: TaskId) -> Result<TaskView, ClientError> {
        self.typed("task.get", json!({"taskId": task_id})).await
    }

    /// `task.claim`: up to `max` (1–100) tasks for the live instance `worker_id`, each as a
    /// [`Claim`]; empty when nothing claimable is pending.
    pub async fn claim(&self, worker_id: &str, max: usize) -> Result<Vec<Claim>, ClientError> {
        self.claim_with(json!({"workerId": worker_id, "maxTasks": max.max(1)}))
            .await
    }

    /// [`claim`](Self::claim) narrowed to the tasks that require exactly `role` (`task.create
    /// {role}`), which `worker_id` must be registered with (else −32602, field `role`). Tasks
    /// that require no role, or another one, are left for other claims.
    pub async fn claim_role(
        &self,
        worker_id: &str,
        role: &str,
        max: usize,
    ) -> Result<Vec<Claim>, ClientError> {
        self.claim_with(json!({"workerId": worker_id, "role": role, "maxTasks": max.max(1)}))
            .await
    }

    async fn claim_with(&self, params: Value) -> Result<Vec<Claim>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            tasks: Vec<ClaimedTask>,
        }
        let answer: Answer = self.typed("task.claim", params).await?;
        Ok(answer
            .tasks
            .into_iter()
            .map(|c| Claim::from_claimed(self.clone(), c))
            .collect())
    }

    /// `task.heartbeat`: a step heartbeat, extending the claim's leases by `extend` (the
    /// server's 900 s when `None`; zero for a heartbeat only).
    pub async fn task_heartbeat(
        &self,
        task_id: TaskId,
        claim_token: &str,
        extend: Option<Duration>,
    ) -> Result<StepHeartbeat, ClientError> {
        let mut params = json!({"taskId": task_id, "claimToken": claim_token});
        if let Some(extend) = extend {
            params["extendLeasesSec"] = json!(ceil_secs(extend));
        }
        self.typed("task.heartbeat", params).await
    }

    /// `task.complete`: `status` is `stale_claim` (not an error) when the token is old.
    pub async fn complete(
        &self,
        task_id: TaskId,
        claim_token: &str,
        result: Option<Value>,
    ) -> Result<Completion, ClientError> {
        let mut params = json!({"taskId": task_id, "claimToken": claim_token});
        if let Some(result) = result {
            params["result"] = result;
        }
        self.typed("task.complete", params).await
    }

    /// `task.fail`: back to pending while attempts remain, failed for good otherwise.
    pub async fn fail(
        &self,
        task_id: TaskId,
        claim_token: &str,
        error: Option<&str>,
    ) -> Result<Failure, ClientError> {
        let mut params = json!({"taskId": task_id, "claimToken": claim_token});
        if let Some(error) = error {
            params["error"] = json!(error);
        }
        self.typed("task.fail", params).await
    }

    /// `lease.acquire` for the instance `holder`; `ttl` rounds up to whole seconds (900 s
    /// when `None`).
    pub async fn lease_acquire(
        &self,
        key: &str,
        holder: &str,
        mode: LeaseMode,
        ttl: Option<Duration>,
    ) -> Result<LeaseOutcome, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            acquired: bool,
            #[serde(default)]
            lease: Option<LeaseGrant>,
            #[serde(default)]
            conflicts: Vec<LeaseConflict>,
        }
        let mut params = json!({"key": key, "holder": holder, "mode": mode});
        if let Some(ttl) = ttl {
            params["ttlSec"] = json!(ceil_secs(ttl));
        }
        let answer: Answer = self.typed("lease.acquire", params).await?;
        match (answer.acquired, answer.lease) {
            (true, Some(grant)) => Ok(LeaseOutcome::Granted(grant)),
            (true, None) => Err(ClientError::Decode(
                "lease.acquire: acquired without a lease".into(),
            )),
            (false, _) => Ok(LeaseOutcome::Conflict(answer.conflicts)),
        }
    }

    /// `lease.renew`: the new terms, or `None` when `holder` no longer holds `key`.
    pub async fn lease_renew(
        &self,
        key: &str,
        holder: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<LeaseRenewal>, ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            renewed: bool,
            fencing_token: Option<u64>,
            expires_at: Option<u64>,
        }
        let mut params = json!({"key": key, "holder": holder});
        if let Some(ttl) = ttl {
            params["ttlSec"] = json!(ceil_secs(ttl));
        }
        let answer: Answer = self.typed("lease.renew", params).await?;
        Ok(
            match (answer.renewed, answer.fencing_token, answer.expires_at) {
                (true, Some(fencing_token), Some(expires_at_ms)) => Some(LeaseRenewal {
                    fencing_token,
                    expires_at_ms,
                }),
                _ => None,
            },
        )
    }

    /// `lease.release`: whether `holder` held `key`.
    pub async fn lease_release(&self, key: &str, holder: &str) -> Result<bool, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            released: bool,
        }
        let answer: Answer = self
            .typed("lease.release", json!({"key": key, "holder": holder}))
            .await?;
        Ok(answer.released)
    }
}

/// The instant on this client's monotonic clock matching the server's wall-clock
/// `expires_at_ms` (as far as the two wall clocks agree).
pub(crate) fn local_deadline(expires_at_ms: u64) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    tokio::time::Instant::now() + Duration::from_millis(expires_at_ms.saturating_sub(now_ms))
}

/// Whole seconds, rounded up (a lease TTL of 1.5 s is 2 s, never 1).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A renewed lease's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// The grant's fencing token (unchanged by a renewal).
    pub fencing_token: u64,
    /// Wall-clock ms when it now lapses.
    pub expires_at_ms: u64,
}

/// The answer of `system.get_state`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Registered instances, ordered by id (at most the limit asked for). The server shows
    /// ClaudeBench's status names under `status` and Vigil's under `state`; this reads the
    /// latter.
    #[serde(default, deserialize_with = "vigil_instances")]
    pub instances: Vec<InstanceView>,
    /// How many instances are registered in all.
    pub instance_count: usize,
    /// Whether registered instances follow the last one in `instances`.
    #[serde(default)]
    pub truncated: bool,
    /// The id to ask for the next page with ([`Client::state_after`]), when `truncated`.
    #[serde(default)]
    pub next_after: Option<String>,
    /// The leader's id.
    pub leader: Option<InstanceId>,
    /// The current term.
    pub term: Term,
    /// The leader, its epoch, the term and when leadership last changed.
    pub leadership: LeaderView,
    /// Task counts by status (`pending`, `in_progress`, `completed`, `failed`): the server's
    /// `taskCounts`.
    #[serde(default, rename = "taskCounts")]
    pub task_counts: Map<String, Value>,
    /// The most recent events, oldest first.
    #[serde(default)]
    pub recent_events: Vec<Event>,
}

impl ClusterView {
    /// The count of tasks in `status` (`pending`, `in_progress` — also asked as `claimed` —,
    /// `completed`, `failed`).
    pub fn task_count(&self, status: &str) -> u64 {
        let status = if status == "claimed" {
            "in_progress"
        } else {
            status
        };
        self.task_counts
            .get(status)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// `system.get_state`'s instances as [`InstanceView`]s: Vigil's own status is under `state`
/// (`status` holds ClaudeBench's `ACTIVE`/`IDLE`/`BUSY`/`OFFLINE`).
fn vigil_instances<'de, D>(d: D) -> Result<Vec<InstanceView>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = Vec::<Map<String, Value>>::deserialize(d)?;
    raw.into_iter()
        .map(|mut i| {
            if let Some(state) = i.remove("state") {
                i.insert("status".into(), state);
            }
            serde_json::from_value(Value::Object(i)).map_err(serde::de::Error::custom)
        })
        .collect()
}

/// An [`InstanceId`] for an id the server already accepted (no validation here).
pub(crate) fn instance_id(id: &str) -> InstanceId {
    serde_json::from_value(Value::String(id.to_string()))
        .expect("an instance id deserializes from any string")
}
