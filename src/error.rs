//! Errors returned by the coordinator.

use std::borrow::Cow;

/// Standard and Vigil-specific JSON-RPC error codes: what the server answers and the client
/// reads (also as `vigil::rpc::code` with the `server` feature).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object (or an empty or oversized batch).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad parameters; `data` names the field and the rule.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL: i64 = -32603;
    /// Rate limited; `data.retryAfterMs`.
    pub const RATE_LIMITED: i64 = -32000;
    /// The store is unavailable.
    pub const STORE_UNAVAILABLE: i64 = -32001;
    /// The call timed out.
    pub const TIMEOUT: i64 = -32002;
    /// Not authorized.
    pub const UNAUTHORIZED: i64 = -32004;
}

/// A piece of input that broke a rule. `field` is the name the caller used (`id`, `roles[3]`,
/// `metadata`, `ttl`), `rule` says what was expected, in words a client can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct ValidationError {
    /// The offending field.
    pub field: Cow<'static, str>,
    /// The rule it broke.
    pub rule: String,
}

impl ValidationError {
    /// Builds an error for `field` breaking `rule`.
    pub fn new(field: impl Into<Cow<'static, str>>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// Everything that can go wrong on the coordinator's control path. The heartbeat hot path never
/// fails: an unknown instance is answered `alive: false`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke an input rule; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The configuration given to [`Coordinator::start`](crate::Coordinator::start) is unusable.
    #[error("bad configuration: {0}")]
    Config(ValidationError),
    /// The registry is full ([`Limits::max_instances`](crate::Limits::max_instances)).
    #[error("capacity reached: at most {0} instances may be registered")]
    Capacity(usize),
    /// An actor did not answer within [`Config::call_timeout`](crate::Config::call_timeout).
    #[error("timed out after {0:?} waiting for the {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The coordinator is shutting down or has shut down.
    #[error("the coordinator is shut down")]
    ShutDown,
    /// The caller must be a live registered instance (to claim, or to hold a lease) and is not.
    #[error("instance {0} is not registered and alive")]
    NotAlive(String),
    /// A lease was asked for on behalf of a claim that is not current.
    #[error("stale claim on task {0}")]
    StaleClaim(String),
    /// An actor could not be spawned or reached.
    #[error("actor failure: {0}")]
    Actor(String),
    /// The store cannot take writes now (circuit open, or no acknowledgement in time), or —
    /// from [`Coordinator::start`](crate::Coordinator::start) — could not be read back or
    /// reserve terms for recovery; the message names what failed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
}
