//! ClaudeBench's WebSocket protocol on `/ws` (its `transports/websocket.ts`), beside Vigil's
//! JSON-RPC frames.
//!
//! | client frame | answer |
//! |---|---|
//! | `{"action":"subscribe","events":[pattern…]}` | `{"type":"subscribed","events":[…],"timestamp"}` |
//! | `{"action":"unsubscribe","events":[pattern…]}` | `{"type":"unsubscribed","events":[…],"timestamp"}` |
//! | `{"action":"execute","request":{"jsonrpc":"2.0","method",…}}` | the JSON-RPC answer (none for a notification) |
//! | `{"action":"ping"}` | `{"type":"pong","timestamp"}` |
//! | anything else with an `action` | `{"type":"error","error":{"message","code":-32602},"timestamp"}` |
//!
//! A pattern is an event type (`task.created`), a prefix wildcard (`task.*`: every type that
//! starts with `task.`) or `*` (everything); patterns naming no Vigil event are accepted, as
//! ClaudeBench accepts them, and match nothing. A subscribed event is pushed as
//! `{"type":"event","event":<type>,"data":<envelope>,"timestamp"}`, the envelope being
//! [`claudebench_envelope`]. `execute` runs through the connection's dispatcher — the principal
//! of the token that opened the socket, the rate limits, the answer budget — as a JSON-RPC frame
//! does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::super::AppState;
use crate::events::{Event, claudebench_envelope};
use crate::rpc::{Principal, Role, code};

/// Most patterns one connection may hold (a subscription past it is refused).
pub(crate) const MAX_PATTERNS: usize = 100;
/// Longest pattern, in bytes.
pub(crate) const MAX_PATTERN_BYTES: usize = 200;
/// Default and largest number of clients listed by `/ws/stats` (`?limit=`), and of distinct
/// patterns it counts.
const STATS_LIMIT: usize = 100;
const STATS_MAX_LIMIT: usize = 1000;

/// Wall-clock milliseconds (the `timestamp` of ClaudeBench's frames).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection's ClaudeBench subscription patterns, in the order they were added.
#[derive(Debug, Default, Clone)]
pub(crate) struct Patterns(Vec<String>);

impl Patterns {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches the event type `name` (ClaudeBench's `matchesPattern`).
    pub(crate) fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| matches(p, name))
    }

    fn contains(&self, pattern: &str) -> bool {
        self.0.iter().any(|p| p == pattern)
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    pattern == "*"
        || pattern == name
        || pattern.strip_suffix(".*").is_some_and(|prefix| {
            name.strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('.'))
        })
}

/// The frame as a ClaudeBench action: a JSON object with an `action` member and no `jsonrpc`
/// member. Only frames that start with `{` and mention `"action"` are parsed here.
pub(crate) fn frame(text: &str) -> Option<Map<String, Value>> {
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') || !text.contains("\"action\"") {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) if o.contains_key("action") && !o.contains_key("jsonrpc") => Some(o),
        _ => None,
    }
}

/// ClaudeBench's error frame (`code` −32602 for a malformed frame, as its schema check gives).
fn error(message: impl Into<String>) -> Value {
    json!({
        "type": "error",
        "error": {"message": message.into(), "code": code::INVALID_PARAMS},
        "timestamp": now_ms(),
    })
}

/// The `events` member: an array of strings, each a pattern within bounds.
fn events(frame: &Map<String, Value>) -> Result<Vec<String>, Value> {
    let Some(Value::Array(items)) = frame.get("events") else {
        return Err(error(
            "events: expected an array of event types or patterns",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else {
            return Err(error(format!("events[{i}]: expected a string")));
        };
        if s.is_empty() || s.len() > MAX_PATTERN_BYTES {
            return Err(error(format!(
                "events[{i}]: a pattern is 1 to {MAX_PATTERN_BYTES} bytes"
            )));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// Handles one ClaudeBench frame: the answer to send, if any.
pub(crate) async fn handle(
    state: &AppState,
    client: &Client,
    frame: Map<String, Value>,
    patterns: &mut Patterns,
) -> Option<Value> {
    let action = frame
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match action.as_str() {
        "ping" => Some(json!({"type": "pong", "timestamp": now_ms()})),
        "subscribe" => {
            let events = match events(&frame) {
                Ok(e) => e,
                Err(e) => return Some(e),
            };
            let mut added = patterns.clone();
            for e in &events {
                if !added.contains(e) {
                    added.0.push(e.clone());
                }
            }
            if added.0.len() > MAX_PATTERNS {
                return Some(error(format!(
                    "events: a connection holds at most {MAX_PATTERNS} patterns"
                )));
            }
            *patterns = added;
            client.set_patterns(patterns);
            Some(json!({"type": "subscribed", "events": events, "timestamp": now_ms()}))
        }
        "unsubscribe" => {
            let events = match events(&frame) {
                Ok(e) => e,
                Err(e) => return Some(e),
            };
            patterns.0.retain(|p| !events.contains(p));
            client.set_patterns(patterns);
            Some(json!({"type": "unsubscribed", "events": events, "timestamp": now_ms()}))
        }
        "execute" => {
            let mut frame = frame;
            let Some(Value::Object(request)) = frame.remove("request") else {
                return Some(error("request: expected a JSON-RPC 2.0 request object"));
            };
            if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                return Some(error("request.jsonrpc: expected \"2.0\""));
            }
            if !request.get("method").is_some_and(Value::is_string) {
                return Some(error("request.method: expected a string"));
            }
            state.dispatcher.handle_one(Value::Object(request)).await
        }
        other => Some(error(format!(
            "action: expected subscribe, unsubscribe, execute or ping, got {:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// ClaudeBench's push of `event`: `{"type":"event","event":<type>,"data":<envelope>,
/// "timestamp"}`.
pub(crate) fn event_frame(event: &Event) -> String {
    json!({
        "type": "event",
        "event": event.kind.as_str(),
        "data": claudebench_envelope(event),
        "timestamp": now_ms(),
    })
    .to_string()
}

/// What a ClaudeBench subscriber is sent when it fell `missed` events behind: an event of type
/// `events.lagged` (sent whatever its patterns, since it may have missed any of them).
pub(crate) fn lagged_frame(missed: u64) -> String {
    let now = now_ms();
    json!({
        "type": "event",
        "event": "events.lagged",
        "data": {
            "id": format!("evt-{now}-lagged"),
            "type": "events.lagged",
            "payload": {"missed": missed},
            "metadata": {"source": "vigil"},
            "timestamp": now,
        },
        "timestamp": now,
    })
    .to_string()
}

/// One open WebSocket, as `/ws/stats` lists it.
#[derive(Debug, Clone)]
struct Entry {
    client_id: String,
    principal: Arc<str>,
    patterns: Vec<String>,
    rpc_subscriber: bool,
    connected_at: u64,
    user_agent: Option<String>,
}

/// The open WebSockets (bounded by the server's connection cap), for `/ws/stats`.
#[derive(Debug, Default)]
pub(crate) struct WsClients {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl WsClients {
    /// Registers a connection opened by `principal`; it is listed until the [`Client`] drops.
    pub(crate) fn open(
        self: &Arc<Self>,
        principal: &Principal,
        user_agent: Option<String>,
    ) -> Client {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let connected_at = now_ms();
        let client_id = format!("ws-{connected_at}-{key:x}");
        self.open.lock().insert(
            key,
            Entry {
                client_id: client_id.clone(),
                principal: Arc::from(principal.name()),
                patterns: Vec::new(),
                rpc_subscriber: false,
                connected_at,
                user_agent,
            },
        );
        Client {
            key,
            client_id,
            clients: Arc::clone(self),
        }
    }
}

/// A connection's entry in [`WsClients`]; removed when dropped.
#[derive(Debug)]
pub(crate) struct Client {
    key: u64,
    client_id: String,
    clients: Arc<WsClients>,
}

impl Client {
    /// The welcome sent first on every connection: a JSON-RPC notification `connected` that is
    /// also ClaudeBench's `{"type":"connected","clientId","timestamp"}`.
    pub(crate) fn welcome(&self) -> axum::extract::ws::Message {
        let now = now_ms();
        let welcome = json!({
            "jsonrpc": "2.0",
            "method": "connected",
            "params": {"clientId": self.client_id, "timestamp": now},
            "type": "connected",
            "clientId": self.client_id,
            "timestamp": now,
        });
        axum::extract::ws::Message::Text(welcome.to_string().into())
    }

    fn set_patterns(&self, patterns: &Patterns) {
        if let Some(e) = self.clients.open.lock().get_mut(&self.key) {
            e.patterns.clone_from(&patterns.0);
        }
    }

    /// Notes that the connection subscribed with `events.subscribe`.
    pub(crate) fn set_rpc_subscriber(&self, on: bool) {
        if let Some(e) = self.clients.open.lock().get_mut(&self.key) {
            e.rpc_subscriber = on;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.clients.open.lock().remove(&self.key);
    }
}

/// `?limit=` of `/ws/stats`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StatsQuery {
    limit: Option<usize>,
}

/// `GET /ws/stats`: ClaudeBench's `{totalClients, subscriptions: {pattern: n}, clients: [{id,
/// subscriptions, metadata: {connectedAt, userAgent}}]}` from the open connections, plus
/// `eventsSubscribers` (connections subscribed with `events.subscribe`). `clients` lists at
/// most `limit` (default 100, at most 1000) connections, newest last — a worker principal's
/// only its own; `subscriptions` counts every connection's patterns, the `limit` most used.
pub(crate) async fn stats(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    Query(query): Query<StatsQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(STATS_LIMIT).clamp(1, STATS_MAX_LIMIT);
    let own_only = principal
        .as_ref()
        .filter(|p| p.0.role() == Role::Worker)
        .map(|p| p.0.name().to_string());
    let mut entries: Vec<(u64, Entry)> = {
        let open = state.ws_clients.open.lock();
        open.iter().map(|(k, e)| (*k, e.clone())).collect()
    };
    entries.sort_by_key(|(k, _)| *k);
    let total = entries.len();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut rpc_subscribers = 0u64;
    for (_, e) in &entries {
        for p in &e.patterns {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        rpc_subscribers += u64::from(e.rpc_subscriber);
    }
    let mut counted: Vec<(&str, u64)> = counts.into_iter().collect();
    counted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let truncated = counted.len() > limit;
    let subscriptions: Map<String, Value> = counted
        .into_iter()
        .take(limit)
        .map(|(p, n)| (p.to_string(), Value::from(n)))
        .collect();
    let visible: Vec<&Entry> = entries
        .iter()
        .map(|(_, e)| e)
        .filter(|e| own_only.as_deref().is_none_or(|me| *e.principal == *me))
        .collect();
    let skip = visible.len().saturating_sub(limit);
    let clients: Vec<Value> = visible[skip..]
        .iter()
        .map(|e| {
            json!({
                "id": e.client_id,
                "subscriptions": e.patterns,
                "metadata": {"connectedAt": e.connected_at, "userAgent": e.user_agent},
            })
        })
        .collect();
    let body = json!({
        "totalClients": total,
        "subscriptions": subscriptions,
        "subscriptionsTruncated": truncated,
        "clients": clients,
        "eventsSubscribers": rpc_subscribers,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_claudebench_matches_them() {
        assert!(matches("*", "task.created"));
        assert!(matches("task.*", "task.created"));
        assert!(matches("task.created", "task.created"));
        assert!(!matches("task.*", "tasks.created"));
        assert!(!matches("task.*", "task"));
        assert!(!matches("task.c*", "task.created"));
        assert!(!matches("instance.*", "task.created"));
    }

    #[test]
    fn only_objects_with_action_and_without_jsonrpc_are_claudebench_frames() {
        assert!(frame(r#" {"action":"ping"}"#).is_some());
        assert!(frame(r#"{"jsonrpc":"2.0","action":"ping","method":"x"}"#).is_none());
        assert!(frame(r#"[{"action":"ping"}]"#).is_none());
        assert!(frame(r#"{"method":"system.health","params":{"action":1}}"#).is_none());
        assert!(frame("invalid json").is_none());
    }
}
