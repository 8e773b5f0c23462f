//! `GET /ws`: JSON-RPC 2.0 over WebSocket text frames, plus `events.subscribe {types?}` after
//! which events are pushed as `{"jsonrpc":"2.0","method":"event","params":{…}}`.
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
//! **Idle timeout.** A connection that receives no frame from the client (a request, a ping, a
//! pong, anything) for half the idle timeout is sent a ping; after the whole idle timeout it is
//! closed (close code 1000, "idle timeout"). A subscriber that only listens stays connected as
//! long as its WebSocket library answers pings. A frame the client does not take within the idle
//! timeout (it stopped reading) closes the connection too. When the [`super::Server`] shuts down,
//! every WebSocket is closed with code 1001.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::AppState;
use crate::events::{Event, EventKind};
use crate::rpc::{RpcError, metrics};

pub(super) async fn upgrade(
    State(mut state): State<AppState>,
    principal: Option<axum::extract::Extension<crate::rpc::Principal>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Every call on the connection acts for the principal of the token that opened it.
    state.dispatcher = super::dispatcher_for(&state, principal);
    // A frame is held to the same limit as an HTTP body.
    ws.max_message_size(state.max_body_bytes)
        .max_frame_size(state.max_body_bytes)
        .on_upgrade(move |socket| connection(state, socket))
}

/// Which events a connection asked for (`None`: all).
struct Subscription {
    receiver: broadcast::Receiver<Event>,
    types: Option<Vec<EventKind>>,
}

impl Subscription {
    fn wants(&self, event: &Event) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&event.kind))
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Result<Event, broadcast::error::RecvError> {
    match sub {
        Some(s) => s.receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn connection(state: AppState, mut socket: WebSocket) {
    let idle = state.idle_timeout;
    let mut closing = state.closing.subscribe();
    let mut subscription: Option<Subscription> = None;
    // When the client was last heard from, and whether it was pinged since.
    let mut heard = Instant::now();
    let mut pinged = false;
    let timer = tokio::time::sleep(idle / 2);
    tokio::pin!(timer);
    loop {
        let outgoing = tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { return };
                heard = Instant::now();
                pinged = false;
                match message {
                    Message::Text(text) => match handle_text(&state, text.as_str(), &mut subscription).await {
                        Reply::Value(v) => Some(Message::Text(v.to_string().into())),
                        Reply::Bytes(b) => String::from_utf8(b).ok().map(|t| Message::Text(t.into())),
                        Reply::Nothing => None,
                    },
                    Message::Binary(bytes) => {
                        let answer = state.dispatcher.handle_binary(&bytes).await;
                        Some(Message::Binary(answer.encode().into()))
                    }
                    Message::Close(_) => return,
                    _ => None, // ping/pong are answered by the library
                }
            }
            event = next_event(&mut subscription) => {
                let params = match event {
                    Ok(event) => {
                        if !subscription.as_ref().is_some_and(|s| s.wants(&event)) {
                            continue;
                        }
                        serde_json::to_value(&event).unwrap_or(Value::Null)
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        json!({"type": "events.lagged", "missed": missed})
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let note = json!({"jsonrpc": "2.0", "method": "event", "params": params});
                Some(Message::Text(note.to_string().into()))
            }
            () = &mut timer => {
                // The timer runs to the next half-period since the client was last heard.
                let silent = heard.elapsed();
                if silent < idle / 2 {
                    timer.as_mut().reset(heard + idle / 2);
                    None
                } else if silent >= idle || pinged {
                    tracing::debug!(?silent, "closing an idle WebSocket");
                    close(&mut socket, close_code::NORMAL, "idle timeout", idle).await;
                    return;
                } else {
                    pinged = true;
                    timer.as_mut().reset(heard + idle);
                    Some(Message::Ping(Default::default()))
                }
            }
            () = super::conn::until_set(&mut closing) => {
                close(&mut socket, close_code::AWAY, "server shutting down", idle).await;
                return;
            }
        };
        // A client that stops reading cannot hold the connection: a frame it does not take
        // within the idle timeout closes it.
        if let Some(message) = outgoing
            && !matches!(
                tokio::time::timeout(idle, socket.send(message)).await,
                Ok(Ok(()))
            )
        {
            return;
        }
    }
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
    text: &str,
    subscription: &mut Option<Subscription>,
) -> Reply {
    // Only a frame that mentions the method pays for a full parse here.
    if text.contains("events.subscribe")
        && let Ok(value) = serde_json::from_str::<Value>(text)
        && value.get("method").and_then(Value::as_str) == Some("events.subscribe")
    {
        let started = std::time::Instant::now();
        let result = subscribe(state, &value, subscription);
        let took = started.elapsed();
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
        Some(bytes) => Reply::Bytes(bytes),
        None => Reply::Nothing,
    }
}

fn subscribe(
    state: &AppState,
    request: &Value,
    subscription: &mut Option<Subscription>,
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
    *subscription = Some(Subscription {
        receiver: state.dispatcher.coordinator().subscribe(),
        types,
    });
    Ok(json!({"subscribed": true, "types": names}))
}
