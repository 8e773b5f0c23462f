//! The harness's side of each transport: HTTP (hyper, one request in flight per connection,
//! bodies written straight into bytes and answers read into small structs rather than JSON
//! trees), WebSocket text and binary frames (answers matched in order, as the server answers
//! a connection's frames in order), and an embedded coordinator.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::Coordinator;
use crate::client::transport::{self, HttpPool, TransportError, WsConn};
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

    /// Where calls go: the server's base URL, or `inproc` for an embedded coordinator.
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
    transport::request_body(method, params, 1)
}

/// The answer of one JSON-RPC call: its `result`, or the error code.
fn call_result(body: &[u8]) -> Result<Value, i64> {
    transport::decode_answer(body).map_err(|e| e.code())
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
                client.link = Link::Inproc {
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
        let link = match transport {
            Transport::Http { target, token, .. } => {
                Link::Http(HttpPool::new(target, transport::bearer(token.as_deref()))?)
            }
            Transport::Ws { target, token, .. } | Transport::WsBinary { target, token, .. } => {
                let url = transport::ws_url(target)?;
                let auth = transport::bearer(token.as_deref());
                let mut conns = Vec::new();
                for _ in 0..connections.max(1) {
                    conns.push(
                        WsConn::open(&url, auth.as_deref())
                            .await
                            .map_err(|e| crate::client::ClientError::from(e).to_string())?,
                    );
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
                Err(e) => vec![Outcome::Error(e.code()); n],
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
                    Err(e) => vec![Outcome::Error(e.code()); n],
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
            Link::Http(pool) => call_result(
                &pool
                    .post(call_body(method, &params))
                    .await
                    .map_err(|e| e.code())?,
            ),
            Link::Ws { conns, next, .. } => {
                let text =
                    String::from_utf8(call_body(method, &params)).expect("serde_json writes UTF-8");
                let answer = Self::ws_conn(conns, next)
                    .exchange_text(text)
                    .await
                    .map_err(|e| e.code())?;
                call_result(answer.as_bytes())
            }
        }
    }

    /// Registers every worker with `roles` (batches of 500 over the network).
    pub async fn register_all(&self, roles: &[String]) -> Result<(), String> {
        if let Link::Inproc { coordinator, .. } = &self.link {
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
            let answer = match &self.link {
                Link::Http(pool) => pool.post(body).await.map(|b| b.to_vec()),
                Link::Ws { conns, next, .. } => {
                    let text = String::from_utf8(body).expect("serde_json writes UTF-8");
                    Self::ws_conn(conns, next)
                        .exchange_text(text)
                        .await
                        .map(String::into_bytes)
                }
                Link::Inproc { .. } => unreachable!("handled above"),
            }
            .map_err(|e: TransportError| {
                format!(
                    "registering workers: {}",
                    crate::client::ClientError::from(e)
                )
            })?;
            let answers: Vec<Value> = serde_json::from_slice(&answer).map_err(|_| {
                let url = match &self.link {
                    Link::Http(pool) => pool.base().to_string(),
                    _ => "the target".to_string(),
                };
                format!(
                    "registering workers: {}",
                    transport::not_json_rpc(&url, &answer)
                )
            })?;
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
}
