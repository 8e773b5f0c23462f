//! The harness's side of each transport: HTTP (hyper, one request in flight per connection,
//! bodies written straight into bytes and answers read into small structs rather than JSON
//! trees), WebSocket text and binary frames (answers matched in order, as the server answers
//! a connection's frames in order), and an embedded coordinator.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::Coordinator;
use crate::rpc::binary::{AnswerFrame, BeatResult, HeartbeatFrame};
use crate::rpc::{Dispatcher, Params, RpcLimits};

/// Error code recorded for a call that got no JSON-RPC answer (connection refused or lost,
/// an unreadable answer, an answer missing from a batch).
pub const TRANSPORT_FAILURE: i64 = -1;

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
        /// Base URL, e.g. `http://127.0.0.1:7420`.
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per request.
        batch: usize,
    },
    /// JSON-RPC text frames over `GET /ws`, `batch` heartbeats per frame.
    Ws {
        /// Base URL, e.g. `http://127.0.0.1:7420` (`/ws` is appended).
        target: String,
        /// Bearer token.
        token: Option<String>,
        /// Heartbeats per frame.
        batch: usize,
    },
    /// Binary heartbeat frames (bincode) over `GET /ws`, `batch` ids per frame; other calls
    /// (registration, the task mix) go as text frames on the same connections.
    WsBinary {
        /// Base URL.
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

fn heartbeat_body(quoted: &[String], first: usize, n: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(n * 96 + 2);
    let id = |k: usize| quoted[(first + k) % quoted.len()].as_str();
    if n == 1 {
        push_heartbeat(&mut body, id(0), 0);
    } else {
        body.push(b'[');
        for k in 0..n {
            if k > 0 {
                body.push(b',');
            }
            push_heartbeat(&mut body, id(k), k);
        }
        body.push(b']');
    }
    body
}

fn call_body(method: &str, params: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "method": method, "params": params, "id": 1
    }))
    .expect("a JSON value always serializes")
}

/// The answer of one JSON-RPC call: its `result`, or the error code.
fn call_result(body: &[u8]) -> Result<Value, i64> {
    let mut answer: Value = serde_json::from_slice(body).map_err(|_| TRANSPORT_FAILURE)?;
    if let Some(code) = answer.pointer("/error/code") {
        return Err(code.as_i64().unwrap_or(TRANSPORT_FAILURE));
    }
    answer
        .get_mut("result")
        .map(Value::take)
        .ok_or(TRANSPORT_FAILURE)
}

/// `host:port` and the path prefix of an `http://` target.
fn parse_target(target: &str) -> Result<(String, String), String> {
    let rest = target.strip_prefix("http://").ok_or_else(|| {
        format!("the target must be an http:// URL (TLS is not supported), got {target:?}")
    })?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    if authority.is_empty() {
        return Err(format!("no host in target {target:?}"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = if path == "/" { String::new() } else { path };
    Ok((authority, path))
}

/// HTTP/1.1 connections, each carrying one request at a time; made when needed and kept.
struct HttpPool {
    authority: String,
    rpc_path: String,
    auth: Option<String>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl HttpPool {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, i64> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|_| TRANSPORT_FAILURE)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|_| TRANSPORT_FAILURE)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn post(&self, body: Vec<u8>) -> Result<Bytes, i64> {
        let pooled = self.idle.lock().pop();
        let mut sender = match pooled {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect().await?;
        }
        let mut request = hyper::Request::post(&self.rpc_path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| TRANSPORT_FAILURE)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| TRANSPORT_FAILURE)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| TRANSPORT_FAILURE)?
            .to_bytes();
        self.idle.lock().push(sender);
        if !status.is_success() {
            return Err(-i64::from(status.as_u16()));
        }
        Ok(bytes)
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    Message,
>;

/// One WebSocket; answers come back in the order frames were sent, so each waiter is queued
/// under the same lock that sends its frame.
struct WsConn {
    sink: tokio::sync::Mutex<Sink>,
    waiting: Arc<Mutex<VecDeque<oneshot::Sender<Message>>>>,
}

impl WsConn {
    async fn open(url: &str, auth: Option<&str>) -> Result<Self, String> {
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("{url}: {e}"))?;
        if let Some(auth) = auth {
            request.headers_mut().insert(
                hyper::header::AUTHORIZATION,
                auth.parse()
                    .map_err(|_| "the token is not a valid header")?,
            );
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        let (sink, mut stream) = socket.split();
        let waiting: Arc<Mutex<VecDeque<oneshot::Sender<Message>>>> = Arc::default();
        let queue = Arc::clone(&waiting);
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Text(_) | Message::Binary(_))
                    && let Some(waiter) = queue.lock().pop_front()
                {
                    let _ = waiter.send(message);
                }
            }
            // Closed: every waiter's sender is dropped, so each gets a transport failure.
            queue.lock().clear();
        });
        Ok(Self {
            sink: tokio::sync::Mutex::new(sink),
            waiting,
        })
    }

    async fn exchange(&self, message: Message) -> Result<Message, i64> {
        let (tx, rx) = oneshot::channel();
        {
            let mut sink = self.sink.lock().await;
            self.waiting.lock().push_back(tx);
            if sink.send(message).await.is_err() {
                return Err(TRANSPORT_FAILURE);
            }
        }
        rx.await.map_err(|_| TRANSPORT_FAILURE)
    }
}

enum Link {
    Http(HttpPool),
    Ws {
        conns: Vec<WsConn>,
        next: AtomicUsize,
        binary: bool,
    },
    Inproc {
        coordinator: Coordinator,
        dispatcher: Dispatcher,
    },
}

/// A connected client of one transport.
pub(crate) struct Client {
    link: Link,
    /// Instance ids.
    pub ids: Vec<String>,
    /// The same ids as JSON strings, ready to splice into bodies.
    quoted: Vec<String>,
    seq: std::sync::atomic::AtomicU64,
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

    async fn open(
        transport: &Transport,
        ids: Vec<String>,
        connections: usize,
        chaos: bool,
    ) -> Result<Self, String> {
        let auth = |token: &Option<String>| token.as_ref().map(|t| format!("Bearer {t}"));
        let link = match transport {
            Transport::Http { target, token, .. } => {
                let (authority, path) = parse_target(target)?;
                Link::Http(HttpPool {
                    authority,
                    rpc_path: format!("{path}/rpc"),
                    auth: auth(token),
                    idle: Mutex::new(Vec::new()),
                })
            }
            Transport::Ws { target, token, .. } | Transport::WsBinary { target, token, .. } => {
                let (authority, path) = parse_target(target)?;
                let url = format!("ws://{authority}{path}/ws");
                let auth = auth(token);
                let mut conns = Vec::new();
                for _ in 0..connections.max(1) {
                    conns.push(WsConn::open(&url, auth.as_deref()).await?);
                }
                Link::Ws {
                    conns,
                    next: AtomicUsize::new(0),
                    binary: matches!(transport, Transport::WsBinary { .. }),
                }
            }
            Transport::Inproc(c) => Link::Inproc {
                coordinator: c.clone(),
                dispatcher: Dispatcher::new(c.clone(), RpcLimits::default()).with_chaos(chaos),
            },
        };
        let quoted = ids
            .iter()
            .map(|id| serde_json::to_string(id).expect("a string always serializes"))
            .collect();
        Ok(Self {
            link,
            ids,
            quoted,
            seq: Default::default(),
        })
    }

    fn ws_conn<'a>(conns: &'a [WsConn], next: &AtomicUsize) -> &'a WsConn {
        &conns[next.fetch_add(1, Ordering::Relaxed) % conns.len()]
    }

    /// Heartbeats for workers `first .. first + n` (wrapping); one outcome each.
    pub async fn heartbeats(&self, first: usize, n: usize) -> Vec<Outcome> {
        match &self.link {
            Link::Inproc { coordinator, .. } => {
                let mut out = Vec::with_capacity(n);
                for k in 0..n {
                    let id = &self.ids[(first + k) % self.ids.len()];
                    out.push(Outcome::Alive(coordinator.heartbeat(id).await.alive));
                }
                out
            }
            Link::Http(pool) => match pool.post(heartbeat_body(&self.quoted, first, n)).await {
                Ok(body) => beat_outcomes(&body, n),
                Err(code) => vec![Outcome::Error(code); n],
            },
            Link::Ws {
                conns,
                next,
                binary: false,
            } => {
                let body = heartbeat_body(&self.quoted, first, n);
                let text = String::from_utf8(body).expect("bodies are built from UTF-8");
                match Self::ws_conn(conns, next)
                    .exchange(Message::Text(text.into()))
                    .await
                {
                    Ok(Message::Text(answer)) => beat_outcomes(answer.as_bytes(), n),
                    Ok(_) => vec![Outcome::Error(TRANSPORT_FAILURE); n],
                    Err(code) => vec![Outcome::Error(code); n],
                }
            }
            Link::Ws {
                conns,
                next,
                binary: true,
            } => {
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
                    Err(code) => return vec![Outcome::Error(code); n],
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
                        })
                        .collect(),
                    Some(AnswerFrame::Error { code, .. }) => vec![Outcome::Error(code); n],
                    None => Vec::new(),
                };
                out.resize(n, Outcome::Error(TRANSPORT_FAILURE));
                out
            }
        }
    }

    /// One JSON-RPC call: its result, or the error code.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, i64> {
        match &self.link {
            Link::Inproc { dispatcher, .. } => {
                let map = match params {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                dispatcher
                    .call(method, Params::new(map))
                    .await
                    .map_err(|e| e.code)
            }
            Link::Http(pool) => call_result(&pool.post(call_body(method, &params)).await?),
            Link::Ws { conns, next, .. } => {
                let text =
                    String::from_utf8(call_body(method, &params)).expect("serde_json writes UTF-8");
                match Self::ws_conn(conns, next)
                    .exchange(Message::Text(text.into()))
                    .await?
                {
                    Message::Text(answer) => call_result(answer.as_bytes()),
                    _ => Err(TRANSPORT_FAILURE),
                }
            }
        }
    }

    /// Registers every worker (batches of 500 over the network).
    pub async fn register_all(&self) -> Result<(), String> {
        if let Link::Inproc { coordinator, .. } = &self.link {
            for id in &self.ids {
                coordinator
                    .register(crate::RegisterRequest::new(id.as_str()))
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
                                       "params": {"id": id, "roles": ["worker"]}, "id": k})
                })
                .collect();
            let body = serde_json::to_vec(&batch).expect("a JSON value always serializes");
            let answer = match &self.link {
                Link::Http(pool) => pool.post(body).await.map(|b| b.to_vec()),
                Link::Ws { conns, next, .. } => {
                    let text = String::from_utf8(body).expect("serde_json writes UTF-8");
                    match Self::ws_conn(conns, next)
                        .exchange(Message::Text(text.into()))
                        .await
                    {
                        Ok(Message::Text(t)) => Ok(t.as_bytes().to_vec()),
                        Ok(_) => Err(TRANSPORT_FAILURE),
                        Err(code) => Err(code),
                    }
                }
                Link::Inproc { .. } => unreachable!("handled above"),
            }
            .map_err(|code| format!("registering workers: error {code} (is the server up?)"))?;
            let answers: Vec<Value> = serde_json::from_slice(&answer)
                .map_err(|e| format!("registering workers: unreadable answer: {e}"))?;
            if let Some(e) = answers.iter().find_map(|a| a.get("error")) {
                return Err(format!("registering workers: {e}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_rpc() {
        let quoted = vec![r#""a""#.to_string(), r#""b\"q""#.to_string()];
        let one: Value = serde_json::from_slice(&heartbeat_body(&quoted, 1, 1)).unwrap();
        assert_eq!(one["method"], "system.heartbeat");
        assert_eq!(one["params"]["instanceId"], "b\"q");
        let batch: Value = serde_json::from_slice(&heartbeat_body(&quoted, 1, 3)).unwrap();
        let ids: Vec<&str> = batch
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["params"]["instanceId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b\"q", "a", "b\"q"]);
        assert_eq!(batch[2]["id"], 2);
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

    #[test]
    fn targets_are_parsed() {
        assert_eq!(
            parse_target("http://127.0.0.1:7420").unwrap(),
            ("127.0.0.1:7420".to_string(), String::new())
        );
        assert_eq!(
            parse_target("http://h/vigil/").unwrap(),
            ("h:80".to_string(), "/vigil".to_string())
        );
        assert!(parse_target("https://h").is_err());
        assert!(parse_target("http:///x").is_err());
    }
}
