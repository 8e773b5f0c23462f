//! What a standby coordinator serves (`vigil serve --ha`, docs/ha.md): the same endpoints,
//! each saying "not here" in its own way, so that clients and load balancers find the active
//! coordinator.
//!
//! * `POST /rpc`, `POST /rpc/batch`: every request (each entry of a batch) is answered with the
//!   −32008 error, whose `data` names the active coordinator's URL and epoch ([`ActiveInfo`]);
//!   notifications get nothing, as JSON-RPC wants. Nothing runs.
//! * `GET /healthz`: HTTP 429 (as Vault's standbys answer) with `{"status": "standby", …}`, so
//!   that a load balancer checking for 200 routes to the active one.
//! * `GET /ws`, `POST /mcp`, `GET /`: HTTP 503 with the same JSON.
//! * `GET /metrics`: `vigil_ha_active 0`, `vigil_ha_epoch` (the active's), and the process's
//!   counters (`vigil_ha_takeovers_total`, `vigil_ha_step_downs_total`, …).
//!
//! The bearer tokens and the body limit apply as on the active server.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{App, Identities, Server, ServerConfig, authorize, unauthorized};
use crate::rpc::code;

/// What a standby knows of the active coordinator, from the coordinator lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveInfo {
    /// The URL the active coordinator advertises (`None` while no coordinator is active).
    pub url: Option<String>,
    /// Its epoch (`None` when unknown).
    pub epoch: Option<u64>,
}

#[derive(Clone)]
struct StandbyState {
    active: watch::Receiver<ActiveInfo>,
    identities: Option<Arc<Identities>>,
}

impl StandbyState {
    fn active(&self) -> ActiveInfo {
        self.active.borrow().clone()
    }

    /// `None` when the request may go on; the 401 otherwise.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let identities = self.identities.as_ref()?;
        authorize(identities, headers).is_none().then(unauthorized)
    }
}

impl Server {
    /// A standby's server on `listener` (see the module documentation): answers from
    /// `active`, which the caller keeps current. Must be called inside a tokio runtime.
    pub fn standby(
        config: &ServerConfig,
        listener: std::net::TcpListener,
        active: watch::Receiver<ActiveInfo>,
    ) -> std::io::Result<Self> {
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        config.validate().map_err(invalid)?;
        let limits = config.connection_limits().map_err(invalid)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let state = StandbyState {
            active,
            identities: Identities::new(config).map(Arc::new),
        };
        let router = Router::new()
            .route("/rpc", post(rpc))
            .route("/rpc/batch", post(rpc))
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .fallback(any(elsewhere))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .with_state(state);
        Ok(Self {
            listener,
            app: App {
                router,
                direct: None,
                closing: Arc::new(watch::channel(false).0),
            },
            limits,
        })
    }
}

/// The JSON every non-RPC answer of a standby carries.
fn body(active: &ActiveInfo) -> String {
    json!({
        "status": "standby",
        "role": "standby",
        "active": active.url,
        "epoch": active.epoch,
    })
    .to_string()
}

/// `GET /healthz` on a standby (and on a deposed active): HTTP 429.
pub(super) fn health(active: &ActiveInfo) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "application/json")],
        body(active),
    )
        .into_response()
}

/// The high-availability lines of `/metrics`.
pub(super) fn ha_metrics(active: bool, epoch: Option<u64>) -> String {
    let mut out = String::from(
        "# HELP vigil_ha_active 1 on the active coordinator, 0 on a standby\n\
         # TYPE vigil_ha_active gauge\n",
    );
    out.push_str(&format!("vigil_ha_active {}\n", u8::from(active)));
    if let Some(epoch) = epoch {
        out.push_str(
            "# HELP vigil_ha_epoch The coordinator epoch: this one's when active, the active's \
             when standby\n# TYPE vigil_ha_epoch gauge\n",
        );
        out.push_str(&format!("vigil_ha_epoch {epoch}\n"));
    }
    out
}

async fn healthz(State(state): State<StandbyState>) -> Response {
    health(&state.active())
}

async fn metrics(State(state): State<StandbyState>, headers: HeaderMap) -> Response {
    if let Some(refused) = state.refuse(&headers) {
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            // The process's counters too (calls, takeovers, step-downs), when Vigil's recorder
            // is the process's.
            let mut page = ha_metrics(false, state.active().epoch);
            if let Some(handle) = super::metrics::install() {
                page.push_str(&handle.render());
            }
            page
        },
    )
        .into_response()
}

/// `/ws`, `/mcp`, the page and anything else: HTTP 503 with where the active one is.
async fn elsewhere(State(state): State<StandbyState>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        body(&state.active()),
    )
        .into_response()
}

/// Every request answered −32008 (a parse error and an invalid request as JSON-RPC wants
/// them: nothing could be run either way).
async fn rpc(State(state): State<StandbyState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = state.refuse(&headers) {
        return refused;
    }
    match answer(&body, &state.active()) {
        Some(answer) => (
            [(header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The answer to `body` on a standby: `None` when it holds only notifications.
fn answer(body: &[u8], active: &ActiveInfo) -> Option<Value> {
    let error = |id: Value, code: i64, message: &str, data: Value| {
        json!({"jsonrpc": "2.0", "error": {"code": code, "message": message, "data": data},
               "id": id})
    };
    let not_active = |id: Value| {
        let e = crate::rpc::not_active(active.url.as_deref(), active.epoch);
        error(id, e.code, &e.message, e.data.unwrap_or(Value::Null))
    };
    let one = |request: &Value| match request {
        Value::Object(fields) => fields.get("id").map(|id| not_active(id.clone())),
        _ => Some(error(
            Value::Null,
            code::INVALID_REQUEST,
            "invalid request: not an object",
            Value::Null,
        )),
    };
    match serde_json::from_slice::<Value>(body) {
        Err(e) => Some(error(
            Value::Null,
            code::PARSE_ERROR,
            &format!("parse error: {e}"),
            Value::Null,
        )),
        Ok(Value::Array(items)) if items.is_empty() => Some(error(
            Value::Null,
            code::INVALID_REQUEST,
            "invalid request: empty batch",
            Value::Null,
        )),
        Ok(Value::Array(items)) => {
            let answers: Vec<Value> = items.iter().filter_map(one).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        Ok(request) => one(&request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_refused_with_where_the_active_one_is() {
        let active = ActiveInfo {
            url: Some("http://127.0.0.1:7421".into()),
            epoch: Some(7),
        };
        let single = answer(
            br#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{},"id":4}"#,
            &active,
        )
        .unwrap();
        assert_eq!(single["id"], 4);
        assert_eq!(single["error"]["code"], code::NOT_ACTIVE);
        assert_eq!(single["error"]["data"]["active"], "http://127.0.0.1:7421");
        assert_eq!(single["error"]["data"]["epoch"], 7);
        assert_eq!(single["error"]["data"]["role"], "standby");
        let batch = answer(
            br#"[{"jsonrpc":"2.0","method":"a","id":"x"},{"jsonrpc":"2.0","method":"b"},3]"#,
            &ActiveInfo::default(),
        )
        .unwrap();
        let batch = batch.as_array().unwrap();
        assert_eq!(batch.len(), 2, "the notification gets nothing: {batch:?}");
        assert_eq!(batch[0]["id"], "x");
        assert_eq!(batch[0]["error"]["data"]["active"], Value::Null);
        assert_eq!(batch[1]["error"]["code"], code::INVALID_REQUEST);
        assert_eq!(
            answer(br#"{"jsonrpc":"2.0","method":"a"}"#, &active),
            None,
            "a notification alone: nothing"
        );
        assert_eq!(
            answer(b"{", &active).unwrap()["error"]["code"],
            code::PARSE_ERROR
        );
        assert_eq!(
            answer(b"[]", &active).unwrap()["error"]["code"],
            code::INVALID_REQUEST
        );
    }
}
