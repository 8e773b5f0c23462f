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
    /// The store cannot take the write and **nothing was changed**: refused before the change
    /// (circuit open), or the change was undone because the store did not acknowledge it.
    /// `data.applied` is `false`.
    pub const STORE_UNAVAILABLE: i64 = -32001;
    /// Not authorized: the caller's principal may not act on this instance (or on a task or
    /// lease it holds), or the method needs an operator; nothing changed. `data.reason`,
    /// `data.instanceId`. ClaudeBench's `UNAUTHORIZED` code.
    pub const UNAUTHORIZED: i64 = -32002;
    /// A capacity limit is reached (`--max-tasks` live tasks); `data.reason`, `data.limit`.
    /// Nothing changed; retry once work has drained.
    pub const CAPACITY: i64 = -32003;
    /// This answer would take the response past its byte budget (`--max-answer-bytes`); the
    /// call only read, and may be asked again alone or for fewer items. `data.reason` is
    /// `answer_budget`.
    pub const ANSWER_TOO_LARGE: i64 = -32005;
    /// The change **was made** (in memory, where every answer comes from) but the store did not
    /// acknowledge it in time; it is written when the store is back. Retrying the call is safe.
    /// `data.applied` is `true`.
    pub const NOT_DURABLE: i64 = -32006;
    /// The call timed out; its outcome is unknown (it may or may not have taken effect).
    /// (ClaudeBench uses −32002 for `UNAUTHORIZED`, so the timeout has a code of its own.)
    pub const TIMEOUT: i64 = -32007;
    /// This coordinator is not the active one of several (`vigil serve --ha`, docs/ha.md):
    /// **nothing ran**; send the request to the active coordinator. `data.role` is `standby`,
    /// `data.active` the active's URL (`null` while a takeover is under way) and `data.epoch`
    /// its epoch (`null` when unknown).
    pub const NOT_ACTIVE: i64 = -32008;
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
    /// As many tasks are live (pending or claimed) as
    /// [`Limits::max_tasks`](crate::Limits::max_tasks) allows; the task was not created.
    #[error("capacity reached: at most {0} live (pending or claimed) tasks")]
    TooManyTasks(usize),
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
    /// The store cannot take writes now, and nothing was changed: the call was refused before
    /// changing anything (circuit open), or its change was undone because the store did not
    /// acknowledge it (`create_task`, `claim`; see docs/persistence.md). From
    /// [`Coordinator::start`](crate::Coordinator::start): the store could not be read back or
    /// reserve terms for recovery; the message names what failed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The caller's principal may not act on this instance (or on a task or lease it holds);
    /// nothing was changed.
    #[error("forbidden: {reason} ({instance})")]
    Forbidden {
        /// The instance acted on.
        instance: String,
        /// Why, as told to the caller.
        reason: &'static str,
    },
    /// The change was made in memory — answers reflect it from now on — but the store did not
    /// acknowledge it within [`Config::store_wait`](crate::Config::store_wait); it is written
    /// when the store is back (a crash before then loses it). Retrying the call is safe: each
    /// write-through call that keeps its change is idempotent (see docs/persistence.md).
    #[error("not yet durable: {0}")]
    NotDurable(String),
    /// This coordinator is not (or no longer) the active one of several (see
    /// [`ActiveGate`](crate::ActiveGate) and docs/ha.md): nothing was changed that will last;
    /// the call belongs at the active coordinator.
    #[error("not the active coordinator{}", match .active {
        Some(url) => format!(" (the active one is at {url})"),
        None => String::new(),
    })]
    NotActive {
        /// The active coordinator's URL, when known.
        active: Option<String>,
        /// The active coordinator's epoch, when known.
        epoch: Option<u64>,
    },
}
