//! What the dispatcher reports through the [`metrics`] facade: calls by method and outcome, and
//! the time each call spent in the dispatcher (decoding excluded), by method.
//!
//! Labels are always `'static` strings from fixed tables — a caller cannot grow the label set
//! by inventing method names (they are all counted as `unknown`). Whoever installs a recorder
//! sees these; `vigil serve` installs the Prometheus one behind `GET /metrics`.

use std::time::Duration;

use metrics::{Counter, Histogram};

use super::{METHODS, RpcError, code};

pub use crate::telemetry::{ANSWERS_OVER_BUDGET, CALLS, DURATION};

/// Registers the descriptions (HELP lines) with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(CALLS, "JSON-RPC calls by method and outcome");
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time a JSON-RPC call spent in the dispatcher, by method"
    );
    metrics::describe_counter!(
        ANSWERS_OVER_BUDGET,
        "Answers of read-only calls refused (-32005) for the response byte budget, by method"
    );
}

/// The label for `method`: itself when served, `unknown` otherwise.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .copied()
        .chain(["events.subscribe"])
        .find(|m| *m == method)
        .unwrap_or("unknown")
}

/// The label for an outcome.
pub fn outcome_label(result: Result<(), &RpcError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) => match e.code {
            code::PARSE_ERROR => "parse_error",
            code::INVALID_REQUEST => "invalid_request",
            code::METHOD_NOT_FOUND => "method_not_found",
            code::INVALID_PARAMS => "invalid_params",
            code::INTERNAL => "internal",
            code::RATE_LIMITED => "rate_limited",
            code::STORE_UNAVAILABLE => "store_unavailable",
            code::TIMEOUT => "timeout",
            code::NOT_DURABLE => "not_durable",
            code::UNAUTHORIZED => "unauthorized",
            code::CAPACITY => "capacity",
            code::ANSWER_TOO_LARGE => "answer_too_large",
            code::NOT_ACTIVE => "not_active",
            _ => "error",
        },
    }
}

/// Records one call.
pub fn record(method: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(CALLS, "method" => method, "outcome" => outcome).increment(1);
    metrics::histogram!(DURATION, "method" => method).record(took.as_secs_f64());
}

/// Records a request refused before it named a usable method (bad JSON, bad envelope).
pub fn record_rejected(error: &RpcError) {
    metrics::counter!(CALLS, "method" => "none", "outcome" => outcome_label(Err(error)))
        .increment(1);
}

/// Records an answer of `method` (a served method's label) refused for the byte budget. The
/// call itself was already counted, with the outcome it had.
pub fn record_over_budget(method: &'static str) {
    metrics::counter!(ANSWERS_OVER_BUDGET, "method" => method).increment(1);
}

/// Handles for the heartbeat fast path, resolved once so a heartbeat pays no registry lookup.
#[derive(Clone)]
pub(super) struct HeartbeatMetrics {
    pub ok: Counter,
    pub duration: Histogram,
}

impl HeartbeatMetrics {
    pub fn resolve() -> Self {
        Self {
            ok: metrics::counter!(CALLS, "method" => "system.heartbeat", "outcome" => "ok"),
            duration: metrics::histogram!(DURATION, "method" => "system.heartbeat"),
        }
    }
}
