//! JSON-RPC 2.0: the envelope, the error codes, parameter parsing and the method table.
//!
//! One module per method family, each holding its parameter parsing and its handler:
//! `system` (`system.*`, ClaudeBench's names and shapes), `task` (`task.*`, with Sortie's
//! aliases) and `lease` (`lease.*`). This module knows nothing of HTTP or WebSocket: a
//! transport hands it a body and gets back the body to send (or nothing, for notifications).

pub mod binary;
#[cfg(feature = "fault-injection")]
mod chaos;
mod discover;
mod fast;
mod lease;
pub(crate) mod metrics;
mod params;
mod principal;
mod stats;
mod system;
mod task;

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::coordinator::Coordinator;
use crate::error::Error;
pub use params::Params;
pub use principal::{Principal, Role};

pub use crate::error::code;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Details: for invalid params `{field, reason}`.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// `-32602` for `field` breaking `reason`.
    pub fn invalid_params(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let field = field.into();
        let reason = reason.into();
        Self {
            code: code::INVALID_PARAMS,
            message: format!("invalid params: {field}: {reason}"),
            data: Some(json!({"field": field, "reason": reason})),
        }
    }

    /// The error object as JSON.
    pub fn to_value(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }
}

impl From<crate::error::ValidationError> for RpcError {
    fn from(e: crate::error::ValidationError) -> Self {
        RpcError::invalid_params(e.field.to_string(), e.rule)
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(v) => v.into(),
            Error::NotAlive(id) => RpcError {
                code: code::INVALID_PARAMS,
                message: format!("instance {id} is not registered and alive"),
                data: Some(
                    json!({"field": "workerId", "reason": "not a live registered instance"}),
                ),
            },
            Error::StaleClaim(id) => {
                RpcError::invalid_params("claimToken", format!("stale claim on task {id}"))
            }
            Error::TooManyTasks(n) => RpcError {
                code: code::CAPACITY,
                message: format!(
                    "capacity reached: at most {n} live (pending or claimed) tasks; the task \
                     was not created"
                ),
                data: Some(json!({"reason": "max_tasks", "limit": n})),
            },
            Error::Capacity(n) => RpcError::new(
                code::INTERNAL,
                format!("capacity reached: at most {n} instances"),
            ),
            Error::Timeout(after, who) => RpcError::new(
                code::TIMEOUT,
                format!(
                    "timed out after {} ms waiting for the {who}",
                    after.as_millis()
                ),
            ),
            Error::Forbidden { instance, reason } => RpcError {
                code: code::UNAUTHORIZED,
                message: format!("forbidden: {reason}"),
                data: Some(json!({"reason": reason, "instanceId": instance})),
            },
            Error::StoreUnavailable(why) => RpcError {
                code: code::STORE_UNAVAILABLE,
                message: format!("store unavailable, nothing was changed: {why}"),
                data: Some(json!({"applied": false})),
            },
            Error::NotDurable(why) => RpcError {
                code: code::NOT_DURABLE,
                message: format!("applied but not yet durable: {why}"),
                data: Some(json!({"applied": true})),
            },
            Error::NotActive { active, epoch } => not_active(active.as_deref(), epoch),
            other => RpcError::new(code::INTERNAL, other.to_string()),
        }
    }
}

/// The −32008 error of a coordinator that is not the active one: `data` names the active's URL
/// and epoch when known (`null` otherwise). Nothing ran.
pub fn not_active(active: Option<&str>, epoch: Option<u64>) -> RpcError {
    RpcError {
        code: code::NOT_ACTIVE,
        message: "not the active coordinator".into(),
        data: Some(json!({"role": "standby", "active": active, "epoch": epoch})),
    }
}

/// Limits and guards applied by [`Dispatcher`].
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Most requests in one batch (default 1000).
    pub max_batch: usize,
    /// Time allowed per call (default 2 s); past it the call answers −32007 (outcome unknown).
    /// [`Dispatcher::new`] raises it to the coordinator's own
    /// [`Config::call_timeout`](crate::Config::call_timeout) if it is shorter, so that a
    /// write-through call always answers with the store's verdict (its store wait ends at
    /// [`Config::store_wait`](crate::Config::store_wait), below the coordinator's call
    /// timeout) rather than with a timeout.
    pub call_timeout: Duration,
    /// Byte budget of one response, a batch's answer array or a single answer (default
    /// 16 MiB). The answer of a call that only reads (`system.get_state`, `task.list`, …) that
    /// would take the response past it is replaced by a −32005 error for that entry; the rest
    /// of the batch goes on. Answers of calls that change state are always sent whole.
    pub max_answer_bytes: usize,
}

/// Default of [`RpcLimits::max_answer_bytes`]: 16 MiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            call_timeout: Duration::from_secs(2),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// The methods that only read. Their answers count against the response's byte budget and are
/// replaced by an error when they would exceed it; dropping the answer of a call that changed
/// state (a claim, an acquisition) would lose what it handed out, so those are always sent.
pub const READ_ONLY_METHODS: &[&str] = &[
    "system.check_health",
    "system.get_state",
    "system.health",
    "system.metrics",
    "system.discover",
    "task.get",
    "task.list",
    "lease.list",
    "chaos.status",
    "chaos.verify_store",
];

/// One request's answer, with the method's metrics label when the method only reads (its
/// answer may then be refused for the byte budget).
struct Answered {
    answer: Value,
    reads: Option<&'static str>,
}

/// Per-caller guard consulted before a method runs (the server's rate limiter).
pub trait Guard: Send + Sync {
    /// `Err` to refuse the call. `instance` is the calling instance where the method names
    /// one (`instanceId` of `system.heartbeat`).
    fn check(&self, method: &str, instance: Option<&str>) -> Result<(), RpcError>;
}

/// Decodes requests, runs methods on a [`Coordinator`], encodes answers.
#[derive(Clone)]
pub struct Dispatcher {
    coordinator: Coordinator,
    limits: RpcLimits,
    guard: Option<std::sync::Arc<dyn Guard>>,
    heartbeat_metrics: metrics::HeartbeatMetrics,
    chaos: bool,
    mcp: bool,
    listen: Option<std::net::SocketAddr>,
    stats: std::sync::Arc<stats::CallStats>,
    principal: Principal,
    authority: crate::model::Authority,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("limits", &self.limits)
            .field("principal", &self.principal)
            .finish()
    }
}

/// The methods this dispatcher serves.
pub const METHODS: &[&str] = &[
    "system.register",
    "system.heartbeat",
    "system.unregister",
    "system.check_health",
    "system.get_state",
    "system.health",
    "system.metrics",
    "system.discover",
    "task.create",
    "task.claim",
    "task.heartbeat",
    "task.complete",
    "task.fail",
    "task.get",
    "task.list",
    "task.update",
    "task.assign",
    "task.unassign",
    "task.delete",
    "lease.acquire",
    "lease.renew",
    "lease.release",
    "lease.list",
    "chaos.kill",
    "chaos.status",
    "chaos.verify_store",
];

impl Dispatcher {
    /// A dispatcher over `coordinator`. A call timeout shorter than the coordinator's is
    /// raised to it (with a warning): see [`RpcLimits::call_timeout`].
    pub fn new(coordinator: Coordinator, mut limits: RpcLimits) -> Self {
        let floor = coordinator.config().call_timeout;
        if limits.call_timeout < floor {
            tracing::warn!(
                asked_ms = limits.call_timeout.as_millis() as u64,
                raised_to_ms = floor.as_millis() as u64,
                "the JSON-RPC call timeout is below the coordinator's; raised to it so that \
                 write-through calls answer with the store's verdict, not a timeout"
            );
            limits.call_timeout = floor;
        }
        Self {
            coordinator,
            limits,
            guard: None,
            heartbeat_metrics: metrics::HeartbeatMetrics::resolve(),
            chaos: false,
            mcp: false,
            listen: None,
            stats: std::sync::Arc::new(stats::CallStats::new()),
            principal: Principal::anonymous(),
            authority: crate::model::Authority::Any,
        }
    }

    /// The same dispatcher acting for `principal` (the default is [`Principal::anonymous`],
    /// an operator). A worker principal may act only on the instances it registered, and on
    /// the tasks and leases they hold; a call acting for another principal's instance is
    /// −32002 with `data.reason`, and `chaos.*` needs an operator.
    pub fn for_principal(&self, principal: Principal) -> Self {
        let mut dispatcher = self.clone();
        dispatcher.authority = principal.authority();
        dispatcher.principal = principal;
        dispatcher
    }

    /// The principal this dispatcher acts for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Serves the `chaos.*` fault-injection methods (off unless asked for).
    pub fn with_chaos(mut self, enabled: bool) -> Self {
        self.chaos = enabled;
        self
    }

    /// Reports the MCP endpoint as served (`system.health`'s `services.mcp`; default off).
    /// The one switch to flip where `/mcp` is mounted.
    pub fn with_mcp(mut self, served: bool) -> Self {
        self.mcp = served;
        self
    }

    /// The address the server is bound to, reported by `system.health` as `listen` (default
    /// none: `null`, as for a router mounted in another application).
    pub fn with_listen(mut self, listen: std::net::SocketAddr) -> Self {
        self.listen = Some(listen);
        self
    }

    /// Counts one call of `method` (`events.subscribe` and other methods answered outside
    /// [`call`](Self::call)) in the figures `system.metrics` reads.
    pub fn record_call(&self, method: &str, ok: bool, took: Duration) {
        self.stats.record(method, ok, took);
    }

    /// Installs a guard (rate limiting).
    pub fn with_guard(mut self, guard: std::sync::Arc<dyn Guard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Handles a whole body: one request or a batch. `None` when nothing is to be sent back
    /// (a notification, or a batch of notifications only).
    pub async fn handle_body(&self, body: &[u8]) -> Option<Value> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(rejected(
                    Value::Null,
                    RpcError::new(code::PARSE_ERROR, format!("parse error: {e}")),
                ));
            }
        };
        self.handle_value(value).await
    }

    /// Handles a parsed body.
    pub async fn handle_value(&self, value: Value) -> Option<Value> {
        match value {
            Value::Array(items) => self.handle_batch(items).await,
            single => self.handle_one(single).await,
        }
    }

    /// Handles a batch (JSON-RPC 2.0 §6).
    pub async fn handle_batch(&self, items: Vec<Value>) -> Option<Value> {
        if items.is_empty() {
            return Some(rejected(
                Value::Null,
                RpcError::new(code::INVALID_REQUEST, "invalid request: empty batch"),
            ));
        }
        if items.len() > self.limits.max_batch {
            return Some(rejected(
                Value::Null,
                RpcError::new(
                    code::INVALID_REQUEST,
                    format!(
                        "invalid request: a batch may hold at most {} requests, got {}",
                        self.limits.max_batch,
                        items.len()
                    ),
                ),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut used = 2; // `[` and `]`
        for item in items {
            if let Some(answered) = self.answer(item).await {
                let comma = usize::from(!out.is_empty());
                let (answer, bytes) = self.fit(answered, used + comma);
                used += comma + bytes;
                out.push(answer);
            }
        }
        (!out.is_empty()).then_some(Value::Array(out))
    }

    /// Handles one request object. An answer of a read-only method larger than the byte budget
    /// is replaced by the −32005 error.
    pub async fn handle_one(&self, value: Value) -> Option<Value> {
        let answered = self.answer(value).await?;
        if answered.reads.is_none() {
            return Some(answered.answer);
        }
        Some(self.fit(answered, 0).0)
    }

    /// `answered` if it fits in the budget after `used` bytes, else the −32005 error in its
    /// place; with its encoded length.
    fn fit(&self, answered: Answered, used: usize) -> (Value, usize) {
        let bytes = encoded_len(&answered.answer);
        match answered.reads {
            Some(method) if used.saturating_add(bytes) > self.limits.max_answer_bytes => {
                let error = self.over_budget(&answered.answer, method, bytes);
                let bytes = encoded_len(&error);
                (error, bytes)
            }
            _ => (answered.answer, bytes),
        }
    }

    /// The −32005 answer that replaces `answer` (of `bytes` bytes, to `method`), which would
    /// take the response past the budget.
    fn over_budget(&self, answer: &Value, method: &'static str, bytes: usize) -> Value {
        let budget = self.limits.max_answer_bytes;
        metrics::record_over_budget(method);
        tracing::debug!(
            method,
            bytes,
            budget,
            "answer refused: over the response byte budget"
        );
        let error = RpcError {
            code: code::ANSWER_TOO_LARGE,
            message: format!(
                "answer too large: the answer to {method} ({bytes} bytes) would take the \
                 response past its budget of {budget} bytes; ask for fewer items (limit, after) \
                 or in a request of its own"
            ),
            data: Some(json!({
                "reason": "answer_budget",
                "method": method,
                "answerBytes": bytes,
                "budgetBytes": budget,
            })),
        };
        error_response(answer.get("id").cloned().unwrap_or(Value::Null), error)
    }

    /// Runs one request object: its answer (`None` for a notification).
    async fn answer(&self, value: Value) -> Option<Answered> {
        let unread = |answer| {
            Some(Answered {
                answer,
                reads: None,
            })
        };
        let Value::Object(mut request) = value else {
            return unread(rejected(
                Value::Null,
                RpcError::new(code::INVALID_REQUEST, "invalid request: not an object"),
            ));
        };
        // A request without an `id` member is a notification; `"id": null` is not.
        let id = request.remove("id");
        let notification = id.is_none();
        let id_value = id.unwrap_or(Value::Null);
        if !matches!(id_value, Value::Null | Value::String(_) | Value::Number(_)) {
            return unread(rejected(
                Value::Null,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: id must be a string, a number or null",
                ),
            ));
        }
        if request.get("jsonrpc") != Some(&Value::String("2.0".into())) {
            return unread(rejected(
                id_value,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: jsonrpc must be \"2.0\"",
                ),
            ));
        }
        let Some(Value::String(method)) = request.remove("method") else {
            return unread(rejected(
                id_value,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: method must be a string",
                ),
            ));
        };
        let params = match request.remove("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(Value::Array(_)) => {
                let e = RpcError::invalid_params("params", "must be an object (named parameters)");
                return (!notification).then(|| Answered {
                    answer: rejected(id_value, e),
                    reads: None,
                });
            }
            Some(_) => {
                return unread(rejected(
                    id_value,
                    RpcError::new(
                        code::INVALID_REQUEST,
                        "invalid request: params must be an object",
                    ),
                ));
            }
        };
        let reads = READ_ONLY_METHODS
            .contains(&method.as_str())
            .then(|| metrics::method_label(&method));
        let result = self.call(&method, Params::new(params)).await;
        if notification {
            return None;
        }
        let answer = match result {
            Ok(value) => json!({"jsonrpc": "2.0", "result": value, "id": id_value}),
            Err(e) => error_response(id_value, e),
        };
        Some(Answered { answer, reads })
    }

    /// Runs `method`, under the guard and the call timeout, and records it in the metrics.
    pub async fn call(&self, method: &str, params: Params) -> Result<Value, RpcError> {
        let started = Instant::now();
        let result = self.call_unmetered(method, params).await;
        let took = started.elapsed();
        metrics::record(
            metrics::method_label(method),
            metrics::outcome_label(result.as_ref().map(|_| ())),
            took,
        );
        self.stats.record(method, result.is_ok(), took);
        result
    }

    async fn call_unmetered(&self, method: &str, params: Params) -> Result<Value, RpcError> {
        // A deposed coordinator (high availability) answers nothing but −32008.
        self.coordinator.ensure_active()?;
        if let Some(guard) = &self.guard {
            let instance = if method == "system.heartbeat" {
                params.opt_str(&["instanceId", "id"]).ok().flatten()
            } else {
                None
            };
            if let Some(id) = instance {
                // Another principal's refused heartbeat must not spend the instance's budget.
                self.coordinator.may_act_as(id, &self.authority)?;
            }
            guard.check(method, instance)?;
        }
        let timeout = self.limits.call_timeout;
        match tokio::time::timeout(timeout, self.route(method, params)).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::new(
                code::TIMEOUT,
                format!("{method} timed out after {} ms", timeout.as_millis()),
            )),
        }
    }

    async fn route(&self, method: &str, params: Params) -> Result<Value, RpcError> {
        let c = &self.coordinator;
        let a = &self.authority;
        match method {
            "system.register" => system::register(c, params, a).await,
            "system.heartbeat" => system::heartbeat(c, params, a).await,
            "system.unregister" => system::unregister(c, params, a).await,
            "system.check_health" => system::check_health(c, params).await,
            "system.get_state" => system::get_state(c, params).await,
            "system.health" => {
                let server = system::ServerFacts {
                    mcp: self.mcp,
                    listen: self.listen,
                    uptime: self.stats.uptime(),
                };
                system::health(c, params, &server).await
            }
            "system.metrics" => system::metrics(c, params, &self.stats).await,
            "system.discover" => {
                discover::discover(&params, self.chaos && cfg!(feature = "fault-injection"))
            }
            "task.create" => task::create(c, params, a).await,
            "task.claim" => task::claim(c, params, a).await,
            "task.heartbeat" => task::heartbeat(c, params, a).await,
            "task.complete" => task::complete(c, params, a).await,
            "task.fail" => task::fail(c, params, a).await,
            "task.get" => task::get(c, params).await,
            "task.list" => task::list(c, params).await,
            "task.update" => task::update(c, params, a).await,
            "task.assign" => task::assign(c, params, a).await,
            "task.unassign" => task::unassign(c, params, a).await,
            "task.delete" => task::delete(c, params, a).await,
            "lease.acquire" => lease::acquire(c, params, a).await,
            "lease.renew" => lease::renew(c, params, a).await,
            "lease.release" => lease::release(c, params, a).await,
            "lease.list" => lease::list(c, params).await,
            "chaos.kill" | "chaos.status" | "chaos.verify_store"
                if !self.chaos || cfg!(not(feature = "fault-injection")) =>
            {
                Err(chaos_disabled(method))
            }
            "chaos.kill" | "chaos.status" | "chaos.verify_store"
                if self.principal.role() != Role::Operator =>
            {
                Err(RpcError {
                    code: code::UNAUTHORIZED,
                    message: format!("forbidden: {method} needs an operator token"),
                    data: Some(json!({"reason": "needs an operator token"})),
                })
            }
            #[cfg(feature = "fault-injection")]
            "chaos.kill" => chaos::kill(c, params).await,
            #[cfg(feature = "fault-injection")]
            "chaos.status" => chaos::status(c, params).await,
            #[cfg(feature = "fault-injection")]
            "chaos.verify_store" => chaos::verify_store(c, params).await,
            other => Err(RpcError {
                code: code::METHOD_NOT_FOUND,
                message: format!("method not found: {other}"),
                data: Some(json!({"method": other})),
            }),
        }
    }
}

/// Serializes a result, mapping the (never expected) failure to an internal error.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|e| RpcError::new(code::INTERNAL, e.to_string()))
}

/// An error answer for a request refused before any method ran, counted in the metrics.
fn rejected(id: Value, error: RpcError) -> Value {
    metrics::record_rejected(&error);
    error_response(id, error)
}

/// The length of `value` encoded as compact JSON, without building the bytes.
fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn error_response(id: Value, error: RpcError) -> Value {
    json!({"jsonrpc": "2.0", "error": error.to_value(), "id": id})
}

/// The error for a chaos method on a server without `--chaos`.
fn chaos_disabled(method: &str) -> RpcError {
    RpcError {
        code: code::METHOD_NOT_FOUND,
        message: format!(
            "{method} is disabled: fault injection needs a server built with the `chaos` feature and started with --chaos"
        ),
        data: Some(json!({"method": method})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Coordinator, RegisterRequest};

    /// The heartbeat fast path and the general decoder give the same answers.
    #[tokio::test]
    async fn fast_and_general_paths_agree() {
        let c = Coordinator::start(Config::default()).await.unwrap();
        c.register(RegisterRequest::new("w1")).await.unwrap();
        let d = Dispatcher::new(c.clone(), RpcLimits::default());
        let bodies = [
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":1}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"id":"w1"},"id":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"nobody"},"id":null}"#,
            r#"{"id":-3,"params":{"instanceId":"w1","extra":true},"method":"system.heartbeat","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"}}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{},"id":2}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":""},"id":2}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"","id":"w1"},"id":2}"#,
            r#"[{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":""},"id":5}]"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":5},"id":3}"#,
            r#"{"jsonrpc":"1.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":4}"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":[1]}"#,
            r#"[{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":1},{"jsonrpc":"2.0","method":"system.health","id":2},{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"}}]"#,
            r#"[{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"}}]"#,
            r#"[]"#,
            r#"{"jsonrpc":"2.0","method":"system.heartbeat","params":{"instanceId":"w1"},"id":1"#,
        ];
        for body in bodies {
            let general = d.handle_body(body.as_bytes()).await;
            let fast = d
                .handle_body_bytes(body.as_bytes())
                .await
                .map(|b| serde_json::from_slice::<Value>(&b).unwrap());
            // Parse errors carry serde's message, identical on both paths.
            assert_eq!(fast, general, "{body}");
        }
        c.shutdown().await;
    }

    /// Every method the dispatcher lists (and `system.discover` shows) is routed: called with
    /// no parameters it answers something other than "method not found" (chaos served).
    #[tokio::test]
    async fn every_listed_method_is_dispatched() {
        let c = Coordinator::start(Config::default()).await.unwrap();
        let d = Dispatcher::new(c.clone(), RpcLimits::default()).with_chaos(true);
        for method in METHODS {
            if cfg!(not(feature = "fault-injection")) && method.starts_with("chaos.") {
                continue;
            }
            let answer = d.call(method, Params::default()).await;
            let not_found = matches!(&answer, Err(e) if e.code == code::METHOD_NOT_FOUND);
            assert!(
                !not_found,
                "{method} is listed but not dispatched: {answer:?}"
            );
        }
        let unknown = d.call("no.such", Params::default()).await.unwrap_err();
        assert_eq!(unknown.code, code::METHOD_NOT_FOUND);
        c.shutdown().await;
    }

    /// `chaos.*` needs an operator: a worker principal is refused even where chaos is served.
    #[cfg(feature = "fault-injection")]
    #[tokio::test]
    async fn chaos_methods_need_an_operator() {
        let c = Coordinator::start(Config::default()).await.unwrap();
        let d = Dispatcher::new(c.clone(), RpcLimits::default()).with_chaos(true);
        let body = json!({"jsonrpc": "2.0", "method": "chaos.status", "id": 1});
        let worker = d.for_principal(Principal::worker("w"));
        let refused = worker.handle_value(body.clone()).await.unwrap();
        assert_eq!(refused["error"]["code"], code::UNAUTHORIZED, "{refused}");
        let operator = d.for_principal(Principal::operator("ops"));
        let answered = operator.handle_value(body).await.unwrap();
        assert!(answered["result"].is_object(), "{answered}");
        c.shutdown().await;
    }
}
