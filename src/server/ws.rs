//! `GET /ws`: JSON-RPC 2.0 over WebSocket text frames, plus `events.subscribe {types?}` after
//! which events are pushed as `{"jsonrpc":"2.0","method":"event","params":{…}}`; and, on the
//! same socket, ClaudeBench's WebSocket protocol (`{"action": "subscribe" | "unsubscribe" |
//! "execute" | "ping", …}` frames, see [`claudebench`]).
//!
//! Binary frames carry batches of heartbeats encoded with bincode (see [`crate::rpc::binary`]),
//! each answered by one binary frame.
//!
//! Each text frame is one request or a batch, answered by one text frame (none for
//! notifications), exactly as on `POST /rpc`. `events.subscribe` is handled by the connection
//! itself, since the subscription belongs to it; it must be sent as a single request. A
//! subscriber that falls more than the event capacity behind is told how many events it
//! missed with an `events.lagged` notification instead of being disconnected.
//!
//! A text frame is told apart by its shape: a JSON object with an `action` member and no
//! `jsonrpc` member is ClaudeBench's; everything else (objects with `jsonrpc`, arrays, what is
//! not JSON) is JSON-RPC. Every connection first receives a welcome that both protocols read:
//! `{"jsonrpc":"2.0","method":"connected","params":{"clientId","timestamp"},"type":"connected",
//! "clientId","timestamp"}` — a JSON-RPC notification (clients skip it as they skip pushed
//! events) that is also ClaudeBench's `{"type":"connected"}` message. An error answered to a
//! frame that is not a request at all (−32700 parse error, −32600 with `id` null) also carries
//! ClaudeBench's `"type":"error"` and `timestamp`, so a ClaudeBench client sees its error frame.
//!
//! **Idle timeout.** A connection that receives no frame from the client (a request, a ping, a
//! pong, anything) for half the idle timeout is sent a ping; after the whole idle timeout it is
//! closed (close code 1000, "idle timeout"). A subscriber that only listens stays connected as
//! long as its WebSocket library answers pings. A frame the client does not take within the idle
//! timeout (it stopped reading) closes the connection too. When the [`super::Server`] shuts down,
//! every WebSocket is closed with code 1001.
//!
//! `GET /ws` without a WebSocket upgrade is HTTP 426 (Upgrade Required); `GET /ws/stats` counts
//! the open WebSockets and their subscriptions (ClaudeBench's `getWebSocketStats` shape).

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::AppState;
use crate::events::{Event, EventKind};
use crate::rpc::{Principal, RpcError, code, metrics};

pub(super) mod claudebench;

use claudebench::{Client, Patterns};

pub(super) use claudebench::{WsClients, stats};

/// The WebSocket subprotocol `/ws` speaks when a client asks for one.
const WS_SUBPROTOCOL: &str = "vigil.v1";

pub(super) async fn upgrade(
    State(mut state): State<AppState>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // ClaudeBench answers a plain GET on its WebSocket route 426, as RFC 9110 §15.5.22
        // has it, naming the protocol to upgrade to.
        Err(rejection) => {
            return (
                StatusCode::UPGRADE_REQUIRED,
                [
                    (header::UPGRADE, "websocket"),
                    (header::CONNECTION, "Upgrade"),
                ],
                format!(
                    "{}: this endpoint takes WebSocket upgrades only\n",
                    rejection.body_text()
                ),
            )
                .into_response();
        }
    };
    // Every call on the connection acts for the principal of the token that opened it.
    state.dispatcher = super::dispatcher_for(&state, principal);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect::<String>());
    // A frame is held to the same limit as an HTTP body. A browser that sent its token as a
    // subprotocol (`vigil.bearer.…`, see `super::BEARER_SUBPROTOCOL`) also offers `vigil.v1`,
    // the one subprotocol the upgrade ever answers: the token is never echoed.
    ws.protocols([WS_SUBPROTOCOL])
        .max_message_size(state.max_body_bytes)
        .max_frame_size(state.max_body_bytes)
        .on_upgrade(move |socket| connection(state, socket, user_agent))
}

/// What a connection subscribed to: Vigil's `events.subscribe` (`rpc`: `None` when not
/// subscribed, `Some(None)` for all types) and ClaudeBench's patterns. One receiver serves
/// both; it exists while either has something.
#[derive(Default)]
struct Subscriptions {
    receiver: Option<broadcast::Receiver<Event>>,
    rpc: Option<Option<Vec<EventKind>>>,
    patterns: Patterns,
}

impl Subscriptions {
    fn rpc_wants(&self, event: &Event) -> bool {
        self.rpc
            .as_ref()
            .is_some_and(|t| t.as_ref().is_none_or(|t| t.contains(&event.kind)))
    }

    /// Opens the receiver when something is subscribed and none is open; closes it when
    /// nothing is left (so nothing queues up for nobody).
    fn sync_receiver(&mut self, state: &AppState) {
        let wanted = self.rpc.is_some() || !self.patterns.is_empty();
        if !wanted {
            self.receiver = None;
        } else if self.receiver.is_none() {
            self.receiver = Some(state.dispatcher.coordinator().subscribe());
        }
    }
}

async fn next_event(
    receiver: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
    match receiver {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn connection(state: AppState, mut socket: WebSocket, user_agent: Option<String>) {
    let idle = state.idle_timeout;
    let mut closing = state.closing.subscribe();
    let client = state
        .ws_clients
        .open(state.dispatcher.principal(), user_agent);
    let mut subs = Subscriptions::default();
    // When the client was last heard from, and whether it was pinged since.
    let mut heard = Instant::now();
    let mut pinged = false;
    let timer = tokio::time::sleep(idle / 2);
    tokio::pin!(timer);
    if !send(&mut socket, client.welcome(), idle).await {
        return;
    }
    loop {
        let mut outgoing: Vec<Message> = Vec::new();
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { return };
                heard = Instant::now();
                pinged = false;
                match message {
                    Message::Text(text) => {
                        let reply = handle_text(&state, &client, text.as_str(), &mut subs).await;
                        match reply {
                            Reply::Value(v) => outgoing.push(Message::Text(v.to_string().into())),
                            Reply::Bytes(b) => {
                                if let Ok(t) = String::from_utf8(b) {
                                    outgoing.push(Message::Text(t.into()));
                                }
                            }
                            Reply::Nothing => {}
                        }
                    }
                    Message::Binary(bytes) => {
                        let answer = state.dispatcher.handle_binary(&bytes).await;
                        outgoing.push(Message::Binary(answer.encode().into()));
                    }
                    Message::Close(_) => return,
                    _ => {} // ping/pong are answered by the library
                }
            }
            event = next_event(&mut subs.receiver) => {
                match event {
                    Ok(event) => {
                        if subs.rpc_wants(&event) {
                            let params = serde_json::to_value(&event).unwrap_or(Value::Null);
                            outgoing.push(rpc_event(params));
                        }
                        if subs.patterns.matches(event.kind.as_str()) {
                            outgoing.push(Message::Text(claudebench::event_frame(&event).into()));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        if subs.rpc.is_some() {
                            outgoing.push(rpc_event(json!({"type": "events.lagged", "missed": missed})));
                        }
                        if !subs.patterns.is_empty() {
                            outgoing.push(Message::Text(claudebench::lagged_frame(missed).into()));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            () = &mut timer => {
                // The timer runs to the next half-period since the client was last heard.
                let silent = heard.elapsed();
                if silent < idle / 2 {
                    timer.as_mut().reset(heard + idle / 2);
                } else if silent >= idle || pinged {
                    tracing::debug!(?silent, "closing an idle WebSocket");
                    close(&mut socket, close_code::NORMAL, "idle timeout", idle).await;
                    return;
                } else {
                    pinged = true;
                    timer.as_mut().reset(heard + idle);
                    outgoing.push(Message::Ping(Default::default()));
                }
            }
            () = super::conn::until_set(&mut closing) => {
                close(&mut socket, close_code::AWAY, "server shutting down", idle).await;
                return;
            }
        }
        for message in outgoing {
            if !send(&mut socket, message, idle).await {
                return;
            }
        }
    }
}

fn rpc_event(params: Value) -> Message {
    let note = json!({"jsonrpc": "2.0", "method": "event", "params": params});
    Message::Text(note.to_string().into())
}

/// Sends `message`. A client that stops reading cannot hold the connection: a frame it does
/// not take within the idle timeout ends it (`false`).
async fn send(socket: &mut WebSocket, message: Message, idle: Duration) -> bool {
    matches!(
        tokio::time::timeout(idle, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame (bounded by `within`); the connection ends when the caller returns.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, within: Duration) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(within, socket.send(frame)).await;
}

enum Reply {
    Value(Value),
    Bytes(Vec<u8>),
    Nothing,
}

async fn handle_text(
    state: &AppState,
    client: &Client,
    text: &str,
    subs: &mut Subscriptions,
) -> Reply {
    if let Some(frame) = claudebench::frame(text) {
        let reply = claudebench::handle(state, client, frame, &mut subs.patterns).await;
        subs.sync_receiver(state);
        return reply.map_or(Reply::Nothing, Reply::Value);
    }
    // Only a frame that mentions the method pays for a full parse here.
    if text.contains("events.subscribe")
        && let Ok(value) = serde_json::from_str::<Value>(text)
        && value.get("method").and_then(Value::as_str) == Some("events.subscribe")
    {
        let started = std::time::Instant::now();
        let result = subscribe(state, &value, subs);
        let took = started.elapsed();
        if result.is_ok() {
            client.set_rpc_subscriber(true);
        }
        metrics::record(
            "events.subscribe",
            metrics::outcome_label(result.as_ref().map(|_| ())),
            took,
        );
        state
            .dispatcher
            .record_call("events.subscribe", result.is_ok(), took);
        let Some(id) = value.get("id").cloned() else {
            return Reply::Nothing;
        };
        return Reply::Value(match result {
            Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
            Err(e) => json!({"jsonrpc": "2.0", "error": e.to_value(), "id": id}),
        });
    }
    match state.dispatcher.handle_body_bytes(text.as_bytes()).await {
        Some(bytes) => match not_a_request(&bytes) {
            Some(error) => Reply::Value(error),
            None => Reply::Bytes(bytes),
        },
        None => Reply::Nothing,
    }
}

/// The answer to a frame that is not a request at all — a JSON-RPC −32700 (not JSON) or
/// −32600 with `id` null — with ClaudeBench's `"type":"error"` and `timestamp` added, and, for
/// a parse error, a message that says "Unexpected" as a JavaScript JSON parser's does.
/// `None` for every other answer (only answers that mention either code are parsed).
fn not_a_request(answer: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(answer).ok()?;
    if !(text.contains("-32700") || text.contains("-32600")) || text.len() > 4096 {
        return None;
    }
    let mut value: Value = serde_json::from_str(text).ok()?;
    let error_code = value.pointer("/error/code").and_then(Value::as_i64)?;
    if !value.get("id").is_some_and(Value::is_null)
        || !(error_code == code::PARSE_ERROR || error_code == code::INVALID_REQUEST)
    {
        return None;
    }
    if error_code == code::PARSE_ERROR
        && let Some(message) = value.pointer_mut("/error/message")
        && let Some(text) = message.as_str()
    {
        *message = Value::from(format!("Unexpected input: {text}"));
    }
    value["type"] = Value::from("error");
    value["timestamp"] = Value::from(claudebench::now_ms());
    Some(value)
}

fn subscribe(
    state: &AppState,
    request: &Value,
    subs: &mut Subscriptions,
) -> Result<Value, RpcError> {
    let types = match request.pointer("/params/types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut kinds = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let kind: EventKind = serde_json::from_value(item.clone()).map_err(|_| {
                    RpcError::invalid_params(
                        format!("types[{i}]"),
                        format!("unknown event type {item}"),
                    )
                })?;
                kinds.push(kind);
            }
            Some(kinds)
        }
        Some(_) => {
            return Err(RpcError::invalid_params(
                "types",
                "must be an array of event types",
            ));
        }
    };
    let names: Option<Vec<&str>> = types
        .as_ref()
        .map(|t| t.iter().map(|k| k.as_str()).collect());
    subs.rpc = Some(types);
    subs.sync_receiver(state);
    Ok(json!({"subscribed": true, "types": names}))
}
