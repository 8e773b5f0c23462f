//! The harness's side of each transport: HTTP (hyper, one request in flight per connection,
//! bodies written straight into bytes and answers read into small structs rather than JSON
//! trees), WebSocket text and binary frames (answers matched in order, as the server answers
//! a connection's frames in order), and an embedded coordinator.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::Coordinator;
use crate::client::transport::{self, HttpPool, NOT_ACTIVE, TransportError, WsConn};
use crate::rpc::binary::{AnswerFrame, BeatResult, HeartbeatFrame};
use crate::rpc::{Dispatcher, Params, RpcLimits};

pub use crate::client::transport::TRANSPORT_FAILURE;

/// What one heartbeat got.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Alive(bool),
    Error(i64),
}

/// How calls reach the coordinator.
#[derive(Debug, Clone)]
pub enum Transport {
    /// JSON-RPC over HTTP (`POST /rpc`), `batch` heartbeats per request (1 = one per request).
    Http {
        /// Base URL, e.g. `http://127.0.0.1:7420`, or several separated by commas: calls go
        /// to the first that can be reached and follow a standby's −32008 to the active.
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per request.
        batch: usize,
    },
    /// JSON-RPC text frames over `GET /ws`, `batch` heartbeats per frame.
    Ws {
        /// Base URL, e.g. `http://127.0.0.1:7420` (`/ws` is appended), or several separated
        /// by commas (as for HTTP).
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per frame.
        batch: usize,
    },
    /// Binary heartbeat frames (bincode) over `GET /ws`, `batch` ids per frame; other calls
    /// (registration, the task mix) go as text frames on the same connections.
    WsBinary {
        /// Base URL, or several separated by commas (as for HTTP).
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per frame.
        batch: usize,
    },
    /// An embedded coordinator, no network: heartbeats call [`Coordinator::heartbeat`], other
    /// calls go through the JSON-RPC dispatcher.
    Inproc(Coordinator),
}

impl Transport {
    /// Heartbeats per request or frame.
    pub fn batch(&self) -> usize {
        match self {
            Transport::Http { batch, .. }
            | Transport::Ws { batch, .. }
            | Transport::WsBinary { batch, .. } => (*batch).max(1),
            Transport::Inproc(_) => 1,
        }
    }

    /// Where calls go: the server's base URL (or the comma-separated list), or `inproc` for an
    /// embedded coordinator.
    pub fn target(&self) -> &str {
        match self {
            Transport::Http { target, .. }
            | Transport::Ws { target, .. }
            | Transport::WsBinary { target, .. } => target,
            Transport::Inproc(_) => "inproc",
        }
    }

    /// A short name for reports: `http`, `http batch 100`, `ws`, `ws-binary batch 100`, `inproc`.
    pub fn name(&self) -> String {
        let (name, batch) = match self {
            Transport::Http { batch, .. } => ("http", *batch),
            Transport::Ws { batch, .. } => ("ws", *batch),
            Transport::WsBinary { batch, .. } => ("ws-binary", *batch),
            Transport::Inproc(_) => ("inproc", 1),
        };
        if batch > 1 {
            format!("{name} batch {batch}")
        } else {
            name.to_string()
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    result: Option<BeatAnswer>,
    #[serde(default)]
    error: Option<ErrorAnswer>,
}

#[derive(Deserialize)]
struct BeatAnswer {
    alive: bool,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: i64,
}

impl Answer {
    fn outcome(&self) -> Outcome {
        match (&self.result, &self.error) {
            (Some(r), _) => Outcome::Alive(r.alive),
            (None, Some(e)) => Outcome::Error(e.code),
            (None, None) => Outcome::Error(TRANSPORT_FAILURE),
        }
    }
}

/// Reads heartbeat answers (one object or a batch array) without building a JSON tree.
fn beat_outcomes(body: &[u8], n: usize) -> Vec<Outcome> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let mut out: Vec<Outcome> = if first == Some(&b'[') {
        match serde_json::from_slice::<Vec<Answer>>(body) {
            Ok(answers) => answers.iter().map(Answer::outcome).collect(),
            Err(_) => Vec::new(),
        }
    } else {
        match serde_json::from_slice::<Answer>(body) {
            Ok(answer) => vec![answer.outcome()],
            Err(_) => Vec::new(),
        }
    };
    // A missing answer is a failure too, so sent = answered + errors always holds.
    out.resize(n, Outcome::Error(TRANSPORT_FAILURE));
    out
}

/// Appends `{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":ID},"id":K}`.
fn push_heartbeat(body: &mut Vec<u8>, quoted_id: &str, k: usize) {
    body.extend_from_slice(
        br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"#,
    );
    body.extend_from_slice(quoted_id.as_bytes());
    body.extend_from_slice(br#"},"id":"#);
    body.extend_from_slice(k.to_string().as_bytes());
    body.push(b'}');
}

/// The heartbeats of workers `indices` (wrapping): one request, or a batch (`id` k for the
/// k-th) when there are several.
fn heartbeat_body_of(quoted: &[String], indices: &[usize]) -> Vec<u8> {
    let mut body = Vec::with_capacity(indices.len() * 96 + 2);
    let id = |i: usize| quoted[i % quoted.len()].as_str();
    if let [one] = indices {
        push_heartbeat(&mut body, id(*one), 0);
    } else {
        body.push(b'[');
        for (k, &i) in indices.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            push_heartbeat(&mut body, id(i), k);
        }
        body.push(b']');
    }
    body
}

fn call_body(method: &str, params: &Value) -> Vec<u8> {
    transport::request_body(method, params, 1)
}

/// The answer of one JSON-RPC call: its `result`, or the error code.
fn call_result(body: &[u8]) -> Result<Value, i64> {
    transport::decode_answer(body).map_err(|e| e.code())
}

/// A connection to one server.
enum Link {
    Http(HttpPool),
    Ws {
        conns: Vec<WsConn>,
        next: AtomicUsize,
    },
}

/// One server the client may call: a URL given, or an active coordinator a standby named.
struct Target {
    base: String,
    /// Made at the first call that goes there.
    link: tokio::sync::OnceCell<Link>,
}

/// How links to the servers are made.
struct Spec {
    kind: Kind,
    auth: Option<String>,
    connections: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Ws,
    WsBinary,
}

/// Where calls go: servers over the network (the URLs given, then any active followed outside
/// them, with the index of the one calls go to), or an embedded coordinator.
enum Mode {
    Remote {
        targets: RwLock<Vec<Arc<Target>>>,
        current: AtomicUsize,
        spec: Spec,
    },
    Inproc {
        coordinator: Coordinator,
        dispatcher: Dispatcher,
    },
}

/// How long a call follows standbys (−32008, nothing ran) before it gives up with that code.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause while no coordinator is active; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between rounds while no coordinator is active.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The most servers a client keeps: the URLs given plus actives followed outside them.
const MAX_TARGETS: usize = 64;

/// A connected client of one transport.
pub(crate) struct Client {
    mode: Mode,
    /// Instance ids.
    pub ids: Vec<String>,
    /// The same ids as JSON strings, ready to splice into bodies.
    quoted: Vec<String>,
    seq: std::sync::atomic::AtomicU64,
    /// Answers −32008 (a standby: nothing ran, sent again to the active), counting each
    /// entry of a batch.
    redirected: AtomicU64,
}

/// Follows standbys for one call: where to go next and how long to pause.
struct Follow {
    /// Set at the first pause, so calls that meet no standby never read the clock.
    deadline: Option<tokio::time::Instant>,
    backoff: Duration,
    /// Targets tried in this call: standbys, and those that could not be connected to (a
    /// standby may name an active that is gone until its lease runs out).
    tried: Vec<usize>,
}

impl Follow {
    fn new() -> Self {
        Self {
            deadline: None,
            backoff: FIRST_BACKOFF,
            tried: Vec::new(),
        }
    }
}

impl Client {
    /// Connects (`connections` WebSockets for the ws transports; HTTP connections are made as
    /// calls need them).
    pub async fn connect(
        transport: &Transport,
        ids: Vec<String>,
        connections: usize,
    ) -> Result<Self, String> {
        Self::open(transport, ids, connections, false).await
    }

    /// As [`connect`](Self::connect), with `chaos.*` served by an embedded coordinator (a
    /// server must be started with `--chaos` for them).
    pub async fn connect_with_chaos(
        transport: &Transport,
        ids: Vec<String>,
        connections: usize,
    ) -> Result<Self, String> {
        Self::open(transport, ids, connections, true).await
    }

    /// A client acting for another principal than the driver's, for the chaos adversary: a
    /// worker principal of its own on an embedded coordinator, else the transport with the
    /// adversary's `token`.
    pub async fn connect_adversary(
        transport: &Transport,
        token: Option<&str>,
    ) -> Result<Self, String> {
        let transport = match transport {
            Transport::Inproc(c) => {
                let mut client = Self::open(transport, Vec::new(), 1, false).await?;
                client.mode = Mode::Inproc {
                    coordinator: c.clone(),
                    dispatcher: Dispatcher::new(c.clone(), RpcLimits::default())
                        .for_principal(crate::rpc::Principal::worker("adversary")),
                };
                return Ok(client);
            }
            Transport::Http { target, batch, .. } => Transport::Http {
                target: target.clone(),
                token: token.map(str::to_string),
                batch: *batch,
            },
            Transport::Ws { target, batch, .. } => Transport::Ws {
                target: target.clone(),
                token: token.map(str::to_string),
                batch: *batch,
            },
            Transport::WsBinary { target, batch, .. } => Transport::WsBinary {
                target: target.clone(),
                token: token.map(str::to_string),
                batch: *batch,
            },
        };
        Self::open(&transport, Vec::new(), 1, false).await
    }

    async fn open(
        transport: &Transport,
        ids: Vec<String>,
        connections: usize,
        chaos: bool,
    ) -> Result<Self, String> {
        let remote = |target: &str, token: &Option<String>, kind| -> Result<Mode, String> {
            let targets = transport::parse_targets(target)?
                .into_iter()
                .map(|base| {
                    Arc::new(Target {
                        base,
                        link: tokio::sync::OnceCell::new(),
                    })
                })
                .collect();
            Ok(Mode::Remote {
                targets: RwLock::new(targets),
                current: AtomicUsize::new(0),
                spec: Spec {
                    kind,
                    auth: transport::bearer(token.as_deref()),
                    connections: connections.max(1),
                },
            })
        };
        let mode = match transport {
            Transport::Http { target, token, .. } => remote(target, token, Kind::Http)?,
            Transport::Ws { target, token, .. } => remote(target, token, Kind::Ws)?,
            Transport::WsBinary { target, token, .. } => remote(target, token, Kind::WsBinary)?,
            Transport::Inproc(c) => Mode::Inproc {
                coordinator: c.clone(),
                dispatcher: Dispatcher::new(c.clone(), RpcLimits::default()).with_chaos(chaos),
            },
        };
        let quoted = ids
            .iter()
            .map(|id| serde_json::to_string(id).expect("a string always serializes"))
            .collect();
        let client = Self {
            mode,
            ids,
            quoted,
            seq: Default::default(),
            redirected: AtomicU64::new(0),
        };
        // The WebSockets are opened now, so a target that refuses them fails here.
        if let Mode::Remote { spec, .. } = &client.mode
            && spec.kind != Kind::Http
        {
            client
                .link(&mut Follow::new())
                .await
                .map_err(|e| crate::client::ClientError::from(e).to_string())?;
        }
        Ok(client)
    }

    /// Answers −32008 counted so far (each batch entry once per time it was sent).
    pub fn redirected(&self) -> u64 {
        self.redirected.load(Ordering::Relaxed)
    }

    /// The base URL calls currently go to (`inproc` for an embedded coordinator).
    pub fn current_target(&self) -> String {
        match &self.mode {
            Mode::Remote {
                targets, current, ..
            } => {
                let targets = targets.read();
                targets[current.load(Ordering::Relaxed) % targets.len()]
                    .base
                    .clone()
            }
            Mode::Inproc { .. } => "inproc".into(),
        }
    }

    fn ws_conn<'a>(conns: &'a [WsConn], next: &AtomicUsize) -> &'a WsConn {
        &conns[next.fetch_add(1, Ordering::Relaxed) % conns.len()]
    }

    /// The current target's link, made if needed. A target that cannot be connected to (or
    /// a standby refusing the WebSocket) moves calls to the next one, or to the active it
    /// names.
    async fn link(&self, follow: &mut Follow) -> Result<(usize, Arc<Target>), TransportError> {
        let Mode::Remote {
            targets,
            current,
            spec,
        } = &self.mode
        else {
            unreachable!("only for remote clients")
        };
        let mut failures = Vec::new();
        loop {
            let (i, target, n) = {
                let t = targets.read();
                let i = current.load(Ordering::Relaxed) % t.len();
                (i, Arc::clone(&t[i]), t.len())
            };
            match target
                .link
                .get_or_try_init(|| open_link(&target.base, spec))
                .await
            {
                Ok(_) => return Ok((i, target)),
                Err(e) => {
                    if let Some(standby) = transport::standby_refusal(&e) {
                        self.redirected.fetch_add(1, Ordering::Relaxed);
                        self.follow(i, &standby, follow).await?;
                        continue;
                    }
                    if !e.before_sending() {
                        return Err(e);
                    }
                    follow.tried.push(i);
                    failures.push(e);
                    if failures.len() >= n {
                        return Err(if failures.len() == 1 {
                            failures.remove(0)
                        } else {
                            TransportError::Unreachable(failures)
                        });
                    }
                    let _ = current.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
        }
    }

    /// After target `i` answered as a standby: moves calls to the active it names (added when
    /// it is not among the targets), or while it names none to the next target after a pause
    /// (100 ms doubling to 500 ms). Fails with [`TransportError::NoActive`] once the call has
    /// followed for [`FOLLOW_TIMEOUT`].
    async fn follow(
        &self,
        i: usize,
        standby: &transport::Standby,
        follow: &mut Follow,
    ) -> Result<(), TransportError> {
        let Mode::Remote {
            targets, current, ..
        } = &self.mode
        else {
            unreachable!("only for remote clients")
        };
        follow.tried.push(i);
        let here = targets.read()[i].base.clone();
        let next = match &standby.active {
            Some(active) => Some(target_for(targets, &here, active)?).filter(|&j| j != i),
            None => None,
        };
        let n = targets.read().len();
        let (j, pause) = match next {
            Some(j) if !follow.tried.contains(&j) => (j, false),
            Some(j) => (j, true),
            None => ((i + 1) % n, true),
        };
        current.store(j, Ordering::Relaxed);
        if pause {
            let now = tokio::time::Instant::now();
            let deadline = *follow.deadline.get_or_insert(now + FOLLOW_TIMEOUT);
            if now >= deadline {
                return Err(TransportError::NoActive {
                    urls: targets.read().iter().map(|t| t.base.clone()).collect(),
                    after: FOLLOW_TIMEOUT,
                });
            }
            tokio::time::sleep(follow.backoff.min(deadline - now)).await;
            follow.backoff = (follow.backoff * 2).min(MAX_BACKOFF);
        }
        Ok(())
    }

    /// Sends a JSON body on `link` (a POST, or a text frame).
    async fn send_json(link: &Link, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        match link {
            Link::Http(pool) => pool.post(body).await.map(|b| b.to_vec()),
            Link::Ws { conns, next, .. } => {
                let text = String::from_utf8(body).expect("bodies are built from UTF-8");
                Self::ws_conn(conns, next)
                    .exchange_text(text)
                    .await
                    .map(String::into_bytes)
            }
        }
    }

    /// Sends the JSON body `body()` to the current target and returns the answer, sending it
    /// again where a standby sends it (see [`follow`](Self::follow)).
    async fn exchange_json(&self, body: impl Fn() -> Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let mut follow = Follow::new();
        loop {
            let (i, target) = self.link(&mut follow).await?;
            let link = target.link.get().expect("made by link()");
            let answer = match Self::send_json(link, body()).await {
                Ok(answer) => answer,
                Err(e) => match transport::standby_refusal(&e) {
                    Some(standby) => {
                        self.redirected.fetch_add(1, Ordering::Relaxed);
                        self.follow(i, &standby, &mut follow).await?;
                        continue;
                    }
                    None => return Err(e),
                },
            };
            match transport::standby_answer(&answer) {
                None => return Ok(answer),
                Some(standby) => {
                    let entries = if answer.trim_ascii_start().starts_with(b"[") {
                        serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&answer)
                            .map_or(1, |a| a.len())
                    } else {
                        1
                    };
                    self.redirected.fetch_add(entries as u64, Ordering::Relaxed);
                    self.follow(i, &standby, &mut follow).await?;
                }
            }
        }
    }

    /// Heartbeats for workers `first .. first + n` (wrapping); one outcome each. Heartbeats a
    /// standby answered (−32008: nothing ran) are sent again to the active and counted in
    /// [`redirected`](Self::redirected), not as failures.
    pub async fn heartbeats(&self, first: usize, n: usize) -> Vec<Outcome> {
        match &self.mode {
            Mode::Inproc { coordinator, .. } => {
                let mut out = Vec::with_capacity(n);
                for k in 0..n {
                    let id = &self.ids[(first + k) % self.ids.len()];
                    out.push(Outcome::Alive(coordinator.heartbeat(id).await.alive));
                }
                out
            }
            Mode::Remote { spec, .. } if spec.kind == Kind::WsBinary => {
                self.binary_heartbeats(first, n).await
            }
            Mode::Remote { .. } => self.json_heartbeats(first, n).await,
        }
    }

    async fn json_heartbeats(&self, first: usize, n: usize) -> Vec<Outcome> {
        let mut out = vec![Outcome::Error(TRANSPORT_FAILURE); n];
        // The positions still to send: all, then those a standby answered.
        let mut todo: Vec<usize> = (0..n).collect();
        let mut follow = Follow::new();
        loop {
            let (i, target) = match self.link(&mut follow).await {
                Ok(t) => t,
                Err(e) => {
                    for &k in &todo {
                        out[k] = Outcome::Error(e.code());
                    }
                    return out;
                }
            };
            let link = target.link.get().expect("made by link()");
            let indices: Vec<usize> = todo.iter().map(|k| first + k).collect();
            let body = heartbeat_body_of(&self.quoted, &indices);
            let answer = match Self::send_json(link, body).await {
                Ok(answer) => answer,
                Err(e) => {
                    let code = match transport::standby_refusal(&e) {
                        Some(standby) => match self.follow(i, &standby, &mut follow).await {
                            Ok(()) => {
                                self.redirected
                                    .fetch_add(todo.len() as u64, Ordering::Relaxed);
                                continue;
                            }
                            Err(e) => e.code(),
                        },
                        None => e.code(),
                    };
                    for &k in &todo {
                        out[k] = Outcome::Error(code);
                    }
                    return out;
                }
            };
            let got = beat_outcomes(&answer, todo.len());
            let mut again = Vec::new();
            for (&k, outcome) in todo.iter().zip(got) {
                match outcome {
                    Outcome::Error(NOT_ACTIVE) => again.push(k),
                    other => out[k] = other,
                }
            }
            if again.is_empty() {
                return out;
            }
            self.redirected
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            let standby = transport::standby_answer(&answer).unwrap_or_else(|| {
                // Only some entries said −32008 (a coordinator stepping down mid-batch):
                // read the first of them.
                first_standby(&answer)
            });
            if let Err(e) = self.follow(i, &standby, &mut follow).await {
                for &k in &again {
                    out[k] = Outcome::Error(e.code());
                }
                return out;
            }
            todo = again;
        }
    }

    async fn binary_heartbeats(&self, first: usize, n: usize) -> Vec<Outcome> {
        let target = match self.link(&mut Follow::new()).await {
            Ok((_, target)) => target,
            Err(e) => return vec![Outcome::Error(e.code()); n],
        };
        let Some(Link::Ws { conns, next, .. }) = target.link.get() else {
            unreachable!("binary heartbeats go over WebSockets")
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ids = (0..n)
            .map(|k| Cow::Borrowed(self.ids[(first + k) % self.ids.len()].as_str()))
            .collect();
        let frame = HeartbeatFrame::new(seq, ids).encode();
        let answer = match Self::ws_conn(conns, next)
            .exchange(Message::Binary(frame.into()))
            .await
        {
            Ok(Message::Binary(bytes)) => AnswerFrame::decode(&bytes).ok(),
            Ok(_) => None,
            Err(e) => return vec![Outcome::Error(e.code()); n],
        };
        let mut out: Vec<Outcome> = match answer {
            Some(AnswerFrame::Results { results, .. }) => results
                .iter()
                .map(|r| match r {
                    BeatResult::Beat { alive, .. } => Outcome::Alive(*alive),
                    // The same code the JSON transports get for a rate-limited call.
                    BeatResult::RateLimited { .. } => {
                        Outcome::Error(crate::rpc::code::RATE_LIMITED)
                    }
                    BeatResult::Forbidden => Outcome::Error(crate::rpc::code::UNAUTHORIZED),
                })
                .collect(),
            Some(AnswerFrame::Error { code, .. }) => vec![Outcome::Error(code); n],
            None => Vec::new(),
        };
        out.resize(n, Outcome::Error(TRANSPORT_FAILURE));
        out
    }

    /// One JSON-RPC call: its result, or the error code.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, i64> {
        match &self.mode {
            Mode::Inproc { dispatcher, .. } => {
                let map = match params {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                dispatcher
                    .call(method, Params::new(map))
                    .await
                    .map_err(|e| e.code)
            }
            Mode::Remote { .. } => call_result(
                &self
                    .exchange_json(|| call_body(method, &params))
                    .await
                    .map_err(|e| e.code())?,
            ),
        }
    }

    /// Registers every worker with `roles` (batches of 500 over the network).
    pub async fn register_all(&self, roles: &[String]) -> Result<(), String> {
        if let Mode::Inproc { coordinator, .. } = &self.mode {
            for id in &self.ids {
                coordinator
                    .register(crate::RegisterRequest::new(id.as_str()).roles(roles.iter().cloned()))
                    .await
                    .map_err(|e| format!("registering {id}: {e}"))?;
            }
            return Ok(());
        }
        for chunk in self.ids.chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(k, id)| {
                    serde_json::json!({"jsonrpc": "2.0", "method": "system.register",
                                       "params": {"id": id, "roles": roles}, "id": k})
                })
                .collect();
            let body = serde_json::to_vec(&batch).expect("a JSON value always serializes");
            let answer =
                self.exchange_json(|| body.clone())
                    .await
                    .map_err(|e: TransportError| {
                        format!(
                            "registering workers: {}",
                            crate::client::ClientError::from(e)
                        )
                    })?;
            let answers: Vec<Value> = serde_json::from_slice(&answer).map_err(|_| {
                format!(
                    "registering workers: {}",
                    transport::not_json_rpc(&self.current_target(), &answer)
                )
            })?;
            if let Some(e) = answers.iter().find_map(|a| a.get("error")) {
                return Err(format!("registering workers: {e}"));
            }
        }
        Ok(())
    }
}

/// Opens a link to `base` as `spec` says (for WebSockets, all of its connections).
async fn open_link(base: &str, spec: &Spec) -> Result<Link, TransportError> {
    let bad = |why: String| TransportError::Connect {
        url: base.to_string(),
        why: crate::client::transport::ConnectFailure::Other(why),
    };
    match spec.kind {
        Kind::Http => Ok(Link::Http(
            HttpPool::new(base, spec.auth.clone()).map_err(bad)?,
        )),
        Kind::Ws | Kind::WsBinary => {
            let url = transport::ws_url(base).map_err(bad)?;
            let mut conns = Vec::with_capacity(spec.connections);
            for _ in 0..spec.connections {
                conns.push(WsConn::open(&url, spec.auth.as_deref()).await?);
            }
            Ok(Link::Ws {
                conns,
                next: AtomicUsize::new(0),
            })
        }
    }
}

/// The index of the target for the active's URL `active` (named by the standby at `here`):
/// one with the same origin, or a new one added for it (an `http://` URL only).
fn target_for(
    targets: &RwLock<Vec<Arc<Target>>>,
    here: &str,
    active: &str,
) -> Result<usize, TransportError> {
    let bad = |why: String| TransportError::BadActive {
        url: here.to_string(),
        active: active.to_string(),
        why,
    };
    let origin = transport::origin(active)
        .ok_or_else(|| bad(transport::parse_target(active).err().unwrap_or_default()))?;
    let same = |t: &Target| transport::origin(&t.base).as_deref() == Some(origin.as_str());
    if let Some(i) = targets.read().iter().position(|t| same(t)) {
        return Ok(i);
    }
    let mut targets = targets.write();
    if let Some(i) = targets.iter().position(|t| same(t)) {
        return Ok(i);
    }
    if targets.len() >= MAX_TARGETS {
        return Err(bad(format!("already following {MAX_TARGETS} addresses")));
    }
    targets.push(Arc::new(Target {
        base: active.trim_end_matches('/').to_string(),
        link: tokio::sync::OnceCell::new(),
    }));
    Ok(targets.len() - 1)
}

/// The first −32008 of a batch answer where only some entries are.
fn first_standby(answer: &[u8]) -> transport::Standby {
    serde_json::from_slice::<Vec<Value>>(answer)
        .ok()
        .and_then(|entries| {
            entries.into_iter().find_map(|e| {
                transport::standby_answer(&serde_json::to_vec(&e).unwrap_or_default())
            })
        })
        .unwrap_or(transport::Standby {
            active: None,
            epoch: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_rpc() {
        let quoted = vec![r#""a""#.to_string(), r#""b\"q""#.to_string()];
        let one: Value = serde_json::from_slice(&heartbeat_body_of(&quoted, &[1])).unwrap();
        assert_eq!(one["method"], "system.heartbeat");
        assert_eq!(one["params"]["instanceId"], "b\"q");
        let batch: Value = serde_json::from_slice(&heartbeat_body_of(&quoted, &[1, 2, 3])).unwrap();
        let ids: Vec<&str> = batch
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["params"]["instanceId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b\"q", "a", "b\"q"]);
        assert_eq!(batch[2]["id"], 2);
    }

    /// A server answering heartbeats at `/rpc`: entries whose position is in `refuse` get a
    /// standby's −32008 naming `active`, the others `alive: true`. Counts the heartbeats it
    /// answered alive.
    async fn beat_server(
        refuse: fn(usize) -> bool,
        active: Option<String>,
    ) -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let alive = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&alive);
        let app = axum::Router::new().route(
            "/rpc",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (counted, active) = (Arc::clone(&counted), active.clone());
                async move {
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    let entries = match request {
                        Value::Array(a) => a,
                        one => vec![one],
                    };
                    let answers: Vec<Value> = entries
                        .iter()
                        .enumerate()
                        .map(|(k, e)| {
                            if refuse(k) {
                                serde_json::json!({"jsonrpc": "2.0", "id": e["id"], "error": {
                                    "code": -32008, "message": "not the active coordinator",
                                    "data": {"role": "standby", "active": active, "epoch": 3}}})
                            } else {
                                counted.fetch_add(1, Ordering::SeqCst);
                                serde_json::json!({"jsonrpc": "2.0", "id": e["id"],
                                                   "result": {"alive": true}})
                            }
                        })
                        .collect();
                    axum::Json(Value::Array(answers))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, alive)
    }

    fn http(target: &str) -> Transport {
        Transport::Http {
            target: target.into(),
            token: None,
            batch: 4,
        }
    }

    #[tokio::test]
    async fn heartbeat_batches_a_standby_answers_are_sent_to_the_active() {
        let ids: Vec<String> = (0..4).map(|i| format!("w-{i}")).collect();
        let (active, beats) = beat_server(|_| false, None).await;
        let (standby, _) = beat_server(|_| true, Some(active.clone())).await;
        let client = Client::connect(&http(&standby), ids.clone(), 1)
            .await
            .unwrap();
        let out = client.heartbeats(0, 4).await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Alive(true))),
            "{out:?}"
        );
        assert_eq!(client.redirected(), 4);
        assert_eq!(beats.load(Ordering::SeqCst), 4);
        assert_eq!(client.current_target(), active);

        // A coordinator stepping down mid-batch: only the entries it refused go again.
        let (active, beats) = beat_server(|_| false, None).await;
        let (stepping_down, answered) = beat_server(|k| k > 0, Some(active.clone())).await;
        let client = Client::connect(&http(&stepping_down), ids, 1)
            .await
            .unwrap();
        let out = client.heartbeats(0, 4).await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Alive(true))),
            "{out:?}"
        );
        assert_eq!(answered.load(Ordering::SeqCst), 1);
        assert_eq!(
            beats.load(Ordering::SeqCst),
            3,
            "the three refused, once each"
        );
        assert_eq!(client.redirected(), 3);
    }

    #[test]
    fn answers_are_read_and_missing_ones_are_failures() {
        let body =
            br#"[{"jsonrpc":"2.0","result":{"alive":false,"isLeader":false,"term":1},"id":0},
                        {"jsonrpc":"2.0","error":{"code":-32000,"message":"slow down"},"id":1}]"#;
        let out = beat_outcomes(body, 3);
        assert!(matches!(out[0], Outcome::Alive(false)));
        assert!(matches!(out[1], Outcome::Error(-32000)));
        assert!(matches!(out[2], Outcome::Error(TRANSPORT_FAILURE)));
        assert!(matches!(
            beat_outcomes(b"garbage", 1)[0],
            Outcome::Error(-1)
        ));
    }
}
