//! Metric names and the recorders the core calls, below every module that counts something.
//!
//! Counters go through the [`metrics`](https://docs.rs/metrics) facade when the `metrics`
//! feature is on (the `server` feature turns it on); whoever installs a recorder sees them —
//! `vigil serve` installs the Prometheus one behind `GET /metrics`. Without the feature the
//! recorders compile to nothing.

/// Counter: flushes of pending writes to the store.
pub const STORE_FLUSHES: &str = "vigil_store_flushes_total";
/// Counter: store operations that failed.
pub const STORE_FAILURES: &str = "vigil_store_failures_total";
/// Counter: JSON-RPC calls by `method` and `outcome`.
pub const CALLS: &str = "vigil_rpc_calls_total";
/// Histogram: seconds a JSON-RPC call spent in the dispatcher, by `method`.
pub const DURATION: &str = "vigil_rpc_call_duration_seconds";
/// Counter: answers of read-only calls replaced by −32005 because they would have taken the
/// response past its byte budget, by `method`.
pub const ANSWERS_OVER_BUDGET: &str = "vigil_rpc_answers_over_budget_total";

/// The bucket bounds (seconds) of [`DURATION`]: 1 µs to 2.5 s.
pub const DURATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counts one flush of pending writes to the store.
#[inline]
pub(crate) fn store_flushed() {
    #[cfg(feature = "metrics")]
    metrics::counter!(STORE_FLUSHES).increment(1);
}

/// Counts one failed store operation.
#[inline]
pub(crate) fn store_failed() {
    #[cfg(feature = "metrics")]
    metrics::counter!(STORE_FAILURES).increment(1);
}

/// Registers the descriptions (HELP lines) of the store counters with the installed recorder
/// and shows them at zero.
#[cfg(feature = "metrics")]
pub fn describe_store() {
    metrics::describe_counter!(STORE_FLUSHES, "Flushes of pending writes to the store");
    metrics::describe_counter!(STORE_FAILURES, "Store operations that failed");
    metrics::counter!(STORE_FLUSHES).increment(0);
    metrics::counter!(STORE_FAILURES).increment(0);
}
