//! The connection layer shared by [`Client`](super::Client) and the load and chaos harnesses:
//! an HTTP/1.1 connection pool (hyper, keep-alive, `TCP_NODELAY`, one request in flight per
//! connection) and a WebSocket connection whose answers are matched to requests in send order
//! (the server answers a connection's frames in order). Frames the server pushes on its own
//! (`{"method": "event", …}` after `events.subscribe`) are not answers and are skipped.
//!
//! Every connection attempt (TCP connect plus the HTTP or WebSocket handshake) is bounded by a
//! connect timeout, so a blackholed address or a server that never answers the upgrade fails
//! instead of hanging.
//!
//! Errors are [`TransportError`]s, each naming the target; their words are in
//! [`super::error`], the one place the client's messages are written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::ClientError;
pub(crate) use super::error::ConnectFailure;
pub(crate) use super::error::NOT_ACTIVE;
pub(crate) use super::error::TransportError;
use super::error::bad_target;
pub(crate) use super::error::not_json_rpc;

// The load harness reads it here (feature `cli`).
#[cfg_attr(not(feature = "cli"), allow(unused_imports))]
pub use super::error::TRANSPORT_FAILURE;

/// `host:port` and the path prefix (no trailing `/`) of an `http://` target.
pub(crate) fn parse_target(target: &str) -> Result<(String, String), String> {
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| bad_target(target))?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    if authority.is_empty() {
        return Err(format!("`{target}` has no host: use http://HOST:PORT"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let path = if path == "/" { String::new() } else { path };
    Ok((authority, path))
}

/// What a standby said about the active coordinator (the `data` of its −32008 answer, or the
/// body of its `/ws` or `/healthz` refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standby {
    /// The active's base URL (`scheme://host:port`), `None` while a takeover is under way.
    pub active: Option<String>,
    /// The active's epoch, when known.
    pub epoch: Option<u64>,
}

impl Standby {
    /// Reads `{"active": url|null, "epoch": E|null, …}`.
    fn of_data(data: Option<&Value>) -> Self {
        Standby {
            active: data
                .and_then(|d| d.get("active"))
                .and_then(Value::as_str)
                .map(str::to_string),
            epoch: data.and_then(|d| d.get("epoch")).and_then(Value::as_u64),
        }
    }
}

/// Whether `body` mentions the code −32008 at all: a byte search, so that answers that cannot
/// be a standby's are not parsed twice.
pub(crate) fn mentions_not_active(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"-32008";
    body.len() >= NEEDLE.len() && body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// The −32008 error object of one JSON-RPC answer, as a [`Standby`].
fn standby_of_answer(answer: &Value) -> Option<Standby> {
    let error = answer.get("error")?;
    (error.get("code").and_then(Value::as_i64) == Some(NOT_ACTIVE))
        .then(|| Standby::of_data(error.get("data")))
}

/// A standby's answer: one JSON-RPC answer with error −32008, or a batch whose every entry is
/// one (a standby answers each entry so; nothing ran). `None` for anything else, checked with
/// a byte search before any parsing. A batch where only some entries are −32008 is `None`:
/// the others ran, so the batch as a whole must not be sent again.
pub(crate) fn standby_answer(body: &[u8]) -> Option<Standby> {
    if !mentions_not_active(body) {
        return None;
    }
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(answers) if !answers.is_empty() => {
            let all: Option<Vec<Standby>> = answers.iter().map(standby_of_answer).collect();
            all?.into_iter().next()
        }
        answer @ Value::Object(_) => standby_of_answer(&answer),
        _ => None,
    }
}

/// A standby's refusal of a non-RPC request (`/ws` upgrade, `/healthz`):
/// `{"status": "standby", "role": "standby", "active": …, "epoch": …}`, or a −32008 answer.
pub(crate) fn standby_body(body: &str) -> Option<Standby> {
    if !body.contains("standby") && !mentions_not_active(body.as_bytes()) {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    if value.get("role").and_then(Value::as_str) == Some("standby")
        || value.get("status").and_then(Value::as_str) == Some("standby")
    {
        return Some(Standby::of_data(Some(&value)));
    }
    standby_answer(body.as_bytes())
}

/// What a standby said, when `e` is its refusal: an HTTP error status whose body is a
/// standby's (`/ws` refused with 503 `{"role":"standby","active":…}`, or a −32008 answer under
/// an error status). Nothing ran then.
pub(crate) fn standby_refusal(e: &TransportError) -> Option<Standby> {
    match e {
        TransportError::Status { body, .. } => standby_body(body),
        _ => None,
    }
}

/// The origin of an `http://` target (`host:port`, lower case, port 80 when absent): two
/// targets with the same origin reach the same server, whatever their paths or trailing
/// slashes. `None` for a target that is not `http://`.
pub(crate) fn origin(target: &str) -> Option<String> {
    let (authority, _) = parse_target(target.trim()).ok()?;
    Some(authority.to_ascii_lowercase())
}

/// The base URLs of a `--target` list: one URL, or several separated by commas
/// (`http://a:7420,http://b:7420`), each checked as [`parse_target`] does.
pub(crate) fn parse_targets(list: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = list.split(',').map(|u| u.trim().to_string()).collect();
    if urls.iter().any(String::is_empty) {
        return Err(format!(
            "`{list}` has an empty URL: give one URL, or several separated by commas \
             (http://HOST:PORT,http://HOST:PORT)"
        ));
    }
    for url in &urls {
        parse_target(url)?;
    }
    Ok(urls)
}

/// `Bearer <token>` for an optional token.
pub(crate) fn bearer(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// The body of one JSON-RPC request with named parameters.
pub(crate) fn request_body(method: &str, params: &Value, id: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "method": method, "params": params, "id": id
    }))
    .expect("a JSON value always serializes")
}

/// The `result` of one JSON-RPC answer, or its error object as [`ClientError::Rpc`]; an
/// answer that is not JSON-RPC is [`ClientError::NotVigil`] naming `url`.
pub(crate) fn decode_answer_from(url: &str, body: &[u8]) -> Result<Value, ClientError> {
    let Ok(mut answer) = serde_json::from_slice::<Value>(body) else {
        return Err(not_json_rpc(url, body));
    };
    if let Some(error) = answer.get_mut("error") {
        let code = error.get("code").and_then(Value::as_i64);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let data = error.get_mut("data").map(Value::take);
        return match code {
            Some(code) => Err(ClientError::Rpc {
                code,
                message,
                data,
            }),
            None => Err(ClientError::Decode(format!(
                "an error object without a code: {error}"
            ))),
        };
    }
    match answer.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(not_json_rpc(url, body)),
    }
}

/// [`decode_answer_from`] for callers that keep only the error's code (the load harness).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn decode_answer(body: &[u8]) -> Result<Value, ClientError> {
    decode_answer_from("the server", body)
}

/// How long a connection attempt (TCP connect and handshake) may take when nobody says
/// otherwise: the load and chaos harnesses, and [`WsConn::open`].
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/1.1 connections to one server, each carrying one request at a time; made when needed
/// and kept for the next request.
pub(crate) struct HttpPool {
    /// The target as given, `http://host:port[/prefix]` (named in errors).
    base: String,
    authority: String,
    /// The path prefix, without a trailing `/` (empty for none).
    prefix: String,
    rpc_path: String,
    auth: Option<String>,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl HttpPool {
    /// A pool for `target` (`http://host:port[/prefix]`), requests going to `<prefix>/rpc`
    /// with `auth` as the `Authorization` header. Connects lazily, each connection attempt
    /// bounded by [`DEFAULT_CONNECT_TIMEOUT`].
    pub(crate) fn new(target: &str, auth: Option<String>) -> Result<Self, String> {
        let (authority, path) = parse_target(target)?;
        Ok(Self {
            base: target.trim_end_matches('/').to_string(),
            authority,
            rpc_path: format!("{path}/rpc"),
            prefix: path,
            auth,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Bounds each connection attempt (TCP connect plus handshake) by `timeout`.
    pub(crate) fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let attempt = async {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| self.connect_failed(ConnectFailure::of_io(&e)))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| {
                        self.connect_failed(ConnectFailure::Other(format!("HTTP handshake: {e}")))
                    })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(self.connect_failed(ConnectFailure::TimedOut(self.connect_timeout)))
            })
    }

    fn connect_failed(&self, why: ConnectFailure) -> TransportError {
        TransportError::Connect {
            url: self.base.clone(),
            why,
        }
    }

    /// Opens one connection and keeps it for the next request: checks the server is there.
    pub(crate) async fn warm_up(&self) -> Result<(), TransportError> {
        let sender = self.connect().await?;
        self.idle.lock().push(sender);
        Ok(())
    }

    /// A connection ready for a request: an idle one, or a new one. Fails only with
    /// [`TransportError::Connect`] (nothing was sent).
    pub(crate) async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        loop {
            let pooled = self.idle.lock().pop();
            match pooled {
                Some(mut sender) if !sender.is_closed() => {
                    if sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let mut sender = self.connect().await?;
        sender.ready().await.map_err(|e| {
            self.connect_failed(ConnectFailure::Other(format!("connection not ready: {e}")))
        })?;
        Ok(sender)
    }

    /// `GET <prefix><path>` on a connection of its own: the status and the body, whatever
    /// the status.
    // Used by `vigil status` (feature `cli`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Bytes), TransportError> {
        let mut sender = self.connect().await?;
        let mut request = hyper::Request::get(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority);
        if let Some(auth) = &self.auth {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.failed(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }

    /// POSTs `body` to the RPC path; the answer's body on a 2xx status.
    // Used by the load harness (feature `cli`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) async fn post(&self, body: Vec<u8>) -> Result<Bytes, TransportError> {
        let sender = self.checkout().await?;
        self.post_on(sender, body).await
    }

    /// POSTs `body` on `sender` (from [`checkout`](Self::checkout)), which goes back to the
    /// pool once the answer is read.
    pub(crate) async fn post_on(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        body: Vec<u8>,
    ) -> Result<Bytes, TransportError> {
        let mut request = hyper::Request::post(&self.rpc_path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.failed(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.failed(format!("reading the answer: {e}")))?
            .to_bytes();
        self.idle.lock().push(sender);
        if status == hyper::StatusCode::UNAUTHORIZED {
            return Err(TransportError::Unauthorized {
                url: self.base.clone(),
                token_sent: self.auth.is_some(),
            });
        }
        if !status.is_success() {
            return Err(TransportError::Status {
                url: self.base.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned(),
            });
        }
        Ok(bytes)
    }

    fn failed(&self, why: String) -> TransportError {
        TransportError::Failed {
            url: self.base.clone(),
            why,
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The `http://` target of a `ws://…/ws` URL (named in errors).
fn http_base(ws_url: &str) -> String {
    let rest = ws_url.strip_prefix("ws://").unwrap_or(ws_url);
    format!("http://{}", rest.strip_suffix("/ws").unwrap_or(rest))
}

/// The `ws://…/ws` URL of an `http://` target.
pub(crate) fn ws_url(target: &str) -> Result<String, String> {
    let (authority, path) = parse_target(target)?;
    Ok(format!("ws://{authority}{path}/ws"))
}

/// Whether a text frame is a message the server pushed on its own (a JSON object with a
/// `method` member, such as an `event` notification) rather than an answer. Answers never
/// have a top-level `method`, so only frames mentioning it are parsed.
fn is_push(text: &str) -> bool {
    text.contains("\"method\"")
        && serde_json::from_str::<Value>(text)
            .is_ok_and(|v| v.as_object().is_some_and(|o| o.contains_key("method")))
}

/// The waiters of one connection, in the order their frames were sent. Once `closed`, nothing
/// is queued any more, so no waiter can be stranded behind a reader that has ended.
#[derive(Default)]
struct Waiters {
    closed: bool,
    queue: VecDeque<oneshot::Sender<Message>>,
}

/// Marks the connection closed and drops every waiter (each then gets a transport failure).
fn close_waiters(waiters: &Mutex<Waiters>) {
    let drained = {
        let mut w = waiters.lock();
        w.closed = true;
        std::mem::take(&mut w.queue)
    };
    drop(drained);
}

/// One WebSocket. The server answers a connection's frames in order, so answers are matched
/// to requests in send order. A writer task owns the sending half and queues each waiter just
/// before its frame goes out; a reader task hands each answer frame to the waiter at the head
/// of the queue. Callers only talk to the writer through a channel, so a caller that gives up
/// (a timeout, a dropped future) cannot leave a waiter queued without its frame, or a frame
/// sent without its waiter: the pairing never shifts. Dropping the connection ends both
/// tasks and closes the socket.
pub(crate) struct WsConn {
    /// The `http://` target (named in errors).
    base: String,
    requests: mpsc::UnboundedSender<(Message, oneshot::Sender<Message>)>,
    waiters: Arc<Mutex<Waiters>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl WsConn {
    /// Opens `url` (`ws://host:port/ws`) with `auth` as the `Authorization` header, giving
    /// up after [`DEFAULT_CONNECT_TIMEOUT`].
    // Used by the load harness (feature `cli`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) async fn open(url: &str, auth: Option<&str>) -> Result<Self, TransportError> {
        Self::open_within(url, auth, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Opens `url` with `auth`, giving up when the TCP connection and the WebSocket upgrade
    /// together take longer than `timeout`.
    pub(crate) async fn open_within(
        url: &str,
        auth: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let socket = tokio::time::timeout(timeout, Self::handshake(url, auth))
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Connect {
                    url: http_base(url),
                    why: ConnectFailure::TimedOut(timeout),
                })
            })?;
        let (mut sink, mut stream) = socket.split();
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let (requests, mut incoming) =
            mpsc::unbounded_channel::<(Message, oneshot::Sender<Message>)>();

        let queue = Arc::clone(&waiters);
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                match &message {
                    Message::Text(text) if is_push(text.as_str()) => {}
                    Message::Text(_) | Message::Binary(_) => {
                        let waiter = queue.lock().queue.pop_front();
                        if let Some(waiter) = waiter {
                            // A waiter whose caller gave up is dropped here: its answer has
                            // been consumed, so the next answer goes to the next waiter.
                            let _ = waiter.send(message);
                        }
                    }
                    Message::Close(_) => break,
                    _ => {} // ping/pong are answered by the library
                }
            }
            close_waiters(&queue);
        });

        let queue = Arc::clone(&waiters);
        let writer = tokio::spawn(async move {
            'outer: while let Some(first) = incoming.recv().await {
                // Queue and write every request waiting now, then flush once.
                let mut next = Some(first);
                while let Some((message, waiter)) = next.take() {
                    {
                        let mut w = queue.lock();
                        if w.closed {
                            break 'outer;
                        }
                        w.queue.push_back(waiter);
                    }
                    if sink.feed(message).await.is_err() {
                        break 'outer;
                    }
                    next = incoming.try_recv().ok();
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            // The connection is dropped or broken: fail whoever still waits.
            close_waiters(&queue);
            incoming.close();
            let _ = sink.close().await;
        });

        Ok(Self {
            base: http_base(url),
            requests,
            waiters,
            reader,
            writer,
        })
    }

    async fn handshake(url: &str, auth: Option<&str>) -> Result<Socket, TransportError> {
        let base = http_base(url);
        let connect = |why| TransportError::Connect {
            url: base.clone(),
            why,
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| connect(ConnectFailure::Other(e.to_string())))?;
        if let Some(auth) = auth {
            request.headers_mut().insert(
                hyper::header::AUTHORIZATION,
                auth.parse().map_err(|_| {
                    connect(ConnectFailure::Other(
                        "the token is not a valid HTTP header value".into(),
                    ))
                })?,
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::Error::Http(response))
                if response.status() == hyper::StatusCode::UNAUTHORIZED =>
            {
                Err(TransportError::Unauthorized {
                    url: base.clone(),
                    token_sent: auth.is_some(),
                })
            }
            Err(tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(TransportError::Status {
                    url: base.clone(),
                    status: response.status().as_u16(),
                    body,
                })
            }
            Err(tungstenite::Error::Io(e)) => Err(connect(ConnectFailure::of_io(&e))),
            Err(e) => Err(connect(ConnectFailure::Other(e.to_string()))),
        }
    }

    /// Whether the server closed the connection (or it broke).
    pub(crate) fn is_closed(&self) -> bool {
        self.waiters.lock().closed || self.requests.is_closed()
    }

    /// Sends `message` and waits for the answer frame matched to it. Giving up on the answer
    /// (dropping the future) leaves the connection usable.
    pub(crate) async fn exchange(&self, message: Message) -> Result<Message, TransportError> {
        let failed = |why: &str| TransportError::Failed {
            url: self.base.clone(),
            why: why.into(),
        };
        let closed = || failed("the WebSocket connection is closed");
        if self.is_closed() {
            return Err(closed());
        }
        let (tx, rx) = oneshot::channel();
        self.requests.send((message, tx)).map_err(|_| closed())?;
        rx.await
            .map_err(|_| failed("the WebSocket connection closed before the answer"))
    }

    /// Sends a text frame and returns the text answer.
    pub(crate) async fn exchange_text(&self, text: String) -> Result<String, TransportError> {
        match self.exchange(Message::Text(text.into())).await? {
            Message::Text(answer) => Ok(answer.as_str().to_owned()),
            _ => Err(TransportError::Failed {
                url: self.base.clone(),
                why: "a binary frame answered a text frame".into(),
            }),
        }
    }
}

impl Drop for WsConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        close_waiters(&self.waiters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDBY: &str = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32008,"message":"not the active coordinator","data":{"role":"standby","active":"http://127.0.0.1:7421","epoch":7}}}"#;
    const TAKEOVER: &str = r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32008,"message":"not the active coordinator","data":{"role":"standby","active":null,"epoch":null}}}"#;

    #[test]
    fn a_standbys_answer_is_recognised_single_or_batch() {
        let named = Standby {
            active: Some("http://127.0.0.1:7421".into()),
            epoch: Some(7),
        };
        assert_eq!(standby_answer(STANDBY.as_bytes()), Some(named.clone()));
        assert_eq!(
            standby_answer(TAKEOVER.as_bytes()),
            Some(Standby {
                active: None,
                epoch: None
            })
        );
        // A batch whose every entry is −32008: nothing ran.
        let batch = format!("[{STANDBY},{TAKEOVER}]");
        assert_eq!(standby_answer(batch.as_bytes()), Some(named));
        // A batch where another entry ran is not sent again as a whole.
        let mixed = format!(r#"[{STANDBY},{{"jsonrpc":"2.0","id":3,"result":{{"alive":true}}}}]"#);
        assert_eq!(standby_answer(mixed.as_bytes()), None);
        // −32008 inside a result is no standby's answer; other errors neither.
        let result = br#"{"jsonrpc":"2.0","id":1,"result":{"note":"-32008"}}"#;
        assert!(mentions_not_active(result));
        assert_eq!(standby_answer(result), None);
        let other = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"slow down"}}"#;
        assert!(!mentions_not_active(other));
        assert_eq!(standby_answer(other), None);
        // A refused WebSocket upgrade carries the /healthz body.
        let refusal = TransportError::Status {
            url: "http://h:1".into(),
            status: 503,
            body: r#"{"status":"standby","role":"standby","active":null,"epoch":null}"#.into(),
        };
        assert_eq!(
            standby_refusal(&refusal),
            Some(Standby {
                active: None,
                epoch: None
            })
        );
        let busy = TransportError::Status {
            url: "http://h:1".into(),
            status: 503,
            body: "overloaded".into(),
        };
        assert_eq!(standby_refusal(&busy), None);
    }

    #[test]
    fn origins_compare_host_and_port_only() {
        assert_eq!(
            origin("http://127.0.0.1:7421/"),
            origin("http://127.0.0.1:7421")
        );
        assert_eq!(origin("http://Host:7421/vigil"), origin("http://host:7421"));
        assert_eq!(origin("http://h"), origin("http://h:80"));
        assert_ne!(origin("http://h:7420"), origin("http://h:7421"));
        assert_eq!(origin("https://h:7421"), None);
    }

    #[test]
    fn target_lists_are_checked_url_by_url() {
        assert_eq!(
            parse_targets("http://a:1, http://b:2").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(
            parse_targets("http://a:1,b:2").unwrap_err(),
            "`b:2` has no scheme: use http://b:2"
        );
        assert!(
            parse_targets("http://a:1,,http://b:2")
                .unwrap_err()
                .contains("has an empty URL")
        );
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
        assert!(parse_target("https://h").unwrap_err().contains("TLS"));
        assert!(
            parse_target("127.0.0.1:7420")
                .unwrap_err()
                .contains("http://")
        );
        assert!(parse_target("http:///x").is_err());
    }

    #[test]
    fn answers_are_decoded() {
        let ok = br#"{"jsonrpc":"2.0","result":{"alive":true},"id":1}"#;
        assert_eq!(decode_answer(ok).unwrap()["alive"], true);
        let err = br#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"bad","data":{"field":"id"}},"id":1}"#;
        match decode_answer(err) {
            Err(ClientError::Rpc {
                code,
                message,
                data,
            }) => {
                assert_eq!(code, -32602);
                assert_eq!(message, "bad");
                assert_eq!(data.unwrap()["field"], "id");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_answer(b"garbage"),
            Err(ClientError::NotVigil { .. })
        ));
        assert!(matches!(
            decode_answer(br#"{"hello":"world"}"#),
            Err(ClientError::NotVigil { .. })
        ));
    }

    #[test]
    fn pushed_frames_are_told_from_answers() {
        assert!(is_push(
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"registered"}}"#
        ));
        assert!(!is_push(
            r#"{"jsonrpc":"2.0","result":{"alive":true},"id":1}"#
        ));
        // An error naming the method in its data is still an answer.
        assert!(!is_push(
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"m","data":{"method":"x"}},"id":2}"#
        ));
        assert!(!is_push(r#"[{"jsonrpc":"2.0","result":1,"id":1}]"#));
    }

    #[test]
    fn statuses_become_clear_errors() {
        let e: ClientError = TransportError::Unauthorized {
            url: "http://h:1".into(),
            token_sent: false,
        }
        .into();
        assert!(e.to_string().contains("needs a token"), "{e}");
        let too_large = TransportError::Status {
            url: "http://h:1".into(),
            status: 413,
            body: String::new(),
        };
        assert_eq!(too_large.code(), -413);
    }
}
