//! The tools: their descriptions and schemas, and what each one calls.
//!
//! Results are built as the `…Out` types below and serialized, so that a result always
//! matches the `outputSchema` generated from the same type.

use std::collections::BTreeMap;

use rmcp::model::{Tool, ToolAnnotations};
use rmcp::schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::args::{Args, bad, step_id_of};
use super::{Backend, Fallbacks};
use crate::error::code;
use crate::rpc::{Principal, RpcError};
use crate::work::lease::{LeaseGrant, LeaseHolder};
use crate::work::task::{
    ClaimedTask, CompleteStatus, Completion, FailStatus, Failure, StepHeartbeat, StepStatus,
    TaskView,
};

/// The names of every tool, in the order `tools/list` gives them.
pub const TOOL_NAMES: &[&str] = &[
    "heartbeat",
    "complete_step",
    "fail_step",
    "get_my_context",
    "read_step_output",
    "register",
    "claim_step",
    "create_task",
    "acquire_lease",
    "renew_lease",
    "release_lease",
    "list_leases",
    "cluster_state",
];

/// One call's surroundings.
pub(crate) struct Cx<'a, B> {
    pub backend: &'a B,
    pub fallbacks: &'a Fallbacks,
    pub principal: Option<&'a Principal>,
}

/// Parameter names of Vigil's methods → the tool argument a caller knows them by.
const RENAMES: &[(&str, &str)] = &[
    ("taskId", "step_id"),
    ("stepId", "step_id"),
    ("claimToken", "claim_token"),
    ("extendLeasesSec", "extend_leases_sec"),
    ("workerId", "worker_id"),
    ("maxTasks", "max_tasks"),
    ("maxAttempts", "max_attempts"),
    ("requiresLocks", "requires_locks"),
    ("requestId", "request_id"),
    ("ttlMs", "ttl_ms"),
    ("ttlSec", "ttl_sec"),
];

/// `e` with the parameter it names renamed to the tool's argument (`extendLeasesSec` →
/// `extend_leases_sec`), so that every error names what the agent sent.
fn renamed(mut e: RpcError, extra: &[(&str, &str)]) -> RpcError {
    let Some(field) = e
        .data
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return e;
    };
    let rename = extra.iter().chain(RENAMES).find_map(|(from, to)| {
        let rest = field.strip_prefix(from)?;
        (rest.is_empty() || rest.starts_with(['[', '.'])).then(|| format!("{to}{rest}"))
    });
    if let Some(new) = rename {
        e.message = e.message.replacen(&field, &new, 1);
        if let Some(data) = e.data.as_mut() {
            data["field"] = json!(new);
        }
    }
    e
}

fn internal(method: &str, e: impl std::fmt::Display) -> RpcError {
    RpcError::new(
        code::INTERNAL,
        format!("unexpected answer to {method}: {e}"),
    )
}

/// The refusal of a step tool that has no claim token: never an unfenced write.
fn token_required() -> RpcError {
    RpcError {
        code: code::INVALID_PARAMS,
        message: "claim_token is required (argument or SORTIE_CLAIM_TOKEN)".into(),
        data: Some(json!({"field": "claim_token", "reason": "is required"})),
    }
}

/// Whether `e` is the coordinator's "stale claim" refusal (a lease call under a claim that is
/// over).
fn is_stale_claim(e: &RpcError) -> bool {
    e.code == code::INVALID_PARAMS && e.message.contains("stale claim")
}

impl<B: Backend> Cx<'_, B> {
    async fn rpc(
        &self,
        method: &str,
        params: Value,
        extra: &[(&str, &str)],
    ) -> Result<Value, RpcError> {
        self.backend
            .call(method, params, self.principal)
            .await
            .map_err(|e| renamed(e, extra))
    }

    async fn rpc_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let value = self.rpc(method, params, &[]).await?;
        serde_json::from_value(value).map_err(|e| internal(method, e))
    }

    /// The step: the `step_id` argument, else the environment's.
    fn step_id(&self, a: &Args) -> Result<u64, RpcError> {
        self.opt_step_id(a)?.ok_or_else(|| {
            if self.fallbacks.from_env {
                bad("step_id", "is required (argument or SORTIE_STEP_ID)")
            } else {
                bad("step_id", "is required")
            }
        })
    }

    fn opt_step_id(&self, a: &Args) -> Result<Option<u64>, RpcError> {
        match a.value("step_id") {
            Some(Value::String(s)) if s.trim().is_empty() => {}
            Some(v) => return step_id_of("step_id", v).map(Some),
            None => {}
        }
        match &self.fallbacks.step_id {
            Some(s) => step_id_of(super::STEP_ID_VAR, &Value::String(s.clone())).map(Some),
            None => Ok(None),
        }
    }

    /// The claim token: the `claim_token` argument, else the environment's; refused without.
    fn claim_token(&self, a: &Args) -> Result<String, RpcError> {
        match a.opt_str("claim_token")? {
            Some(t) if !t.trim().is_empty() => Ok(t.to_string()),
            _ => self
                .fallbacks
                .claim_token
                .clone()
                .ok_or_else(token_required),
        }
    }
}

/// Runs tool `name`; `None` when there is no such tool.
pub(crate) async fn call<B: Backend>(
    cx: &Cx<'_, B>,
    name: &str,
    args: Map<String, Value>,
) -> Option<Result<Value, RpcError>> {
    let outcome = match name {
        "heartbeat" => heartbeat(cx, args).await,
        "complete_step" => complete_step(cx, args).await,
        "fail_step" => fail_step(cx, args).await,
        "get_my_context" => get_my_context(cx, args).await,
        "read_step_output" => read_step_output(cx, args).await,
        "register" => register(cx, args).await,
        "claim_step" => claim_step(cx, args).await,
        "create_task" => create_task(cx, args).await,
        "acquire_lease" => lease_call(cx, LeaseOp::Acquire, args).await,
        "renew_lease" => lease_call(cx, LeaseOp::Renew, args).await,
        "release_lease" => lease_call(cx, LeaseOp::Release, args).await,
        "list_leases" => list_leases(cx, args).await,
        "cluster_state" => cluster_state(cx, args).await,
        _ => return None,
    };
    Some(outcome)
}

fn out<T: Serialize>(value: &T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|e| RpcError::new(code::INTERNAL, e.to_string()))
}

fn task_ref(step: u64) -> String {
    format!("t-{step}")
}

// ---------------------------------------------------------------------------------------------
// Results.

/// `ok` or `stale_claim`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
enum BeatStatus {
    /// The claim is current; the step's leases were extended.
    Ok,
    /// The claim is over: stop working on this step at once, do not retry.
    StaleClaim,
}

/// The answer to `heartbeat`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct HeartbeatOut {
    /// `ok`, or `stale_claim`: your claim is over — stop at once, do not retry.
    status: BeatStatus,
    /// The step (the N of `t-N`).
    step_id: u64,
    /// Keys of this claim's leases that had lapsed before this heartbeat and are gone: do not
    /// rely on them any more.
    lost_leases: Vec<String>,
    /// Wall-clock ms (Unix epoch) the remaining leases now run to; null when none was
    /// extended.
    leases_expire_at_ms: Option<u64>,
}

/// `done` or `stale_claim`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
enum DoneStatus {
    /// Completed (completing twice with the same claim is harmless).
    Done,
    /// The claim is over; nothing changed.
    StaleClaim,
}

/// The answer to `complete_step`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct CompleteOut {
    /// `done`, or `stale_claim` (nothing changed: stop, do not retry).
    status: DoneStatus,
    /// The step.
    step_id: u64,
}

/// `pending`, `failed` or `stale_claim`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "snake_case")]
enum FailOutStatus {
    /// Put back for another attempt.
    Pending,
    /// Out of attempts: failed for good.
    Failed,
    /// The claim is over; nothing changed.
    StaleClaim,
}

/// The answer to `fail_step`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct FailOut {
    /// `pending` (will be retried), `failed` (for good) or `stale_claim` (nothing changed).
    status: FailOutStatus,
    /// The step.
    step_id: u64,
    /// Attempts used so far.
    retry_count: u32,
    /// Attempts allowed.
    max_retries: u32,
    /// Whether it will be tried again.
    can_retry: bool,
}

/// A lock a task needs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct LockOut {
    /// The lease key.
    key: String,
    /// `exclusive` or `shared`.
    mode: String,
}

/// A task (a step), never with its claim token.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct TaskOut {
    /// The step: the N of `t-N`.
    step_id: u64,
    /// The task id, `t-N`.
    id: String,
    /// What is to be done (the payload's `text`, else the payload as JSON).
    text: String,
    /// `pending`, `in_progress`, `completed` or `failed`.
    status: String,
    /// 0–100, higher first.
    priority: u8,
    /// Attempts used so far (failures and claims taken back).
    attempts: u32,
    /// Attempts allowed.
    max_attempts: u32,
    /// The task's payload.
    payload: Value,
    /// Locks taken with the claim.
    requires_locks: Vec<LockOut>,
    /// The instance it is assigned to or claimed by.
    assigned_to: Option<String>,
    /// The role a worker must be registered with to claim it (none: any worker).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// The result given on completion (`{"summary": …}` from complete_step).
    result: Option<Value>,
    /// The last error (a failure, or why the claim was taken back).
    error: Option<String>,
}

impl From<TaskView> for TaskOut {
    fn from(t: TaskView) -> Self {
        Self {
            step_id: t.id.0,
            id: t.id.to_string(),
            text: t.text,
            status: serde_json::to_value(t.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            priority: t.priority,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            payload: t.payload,
            requires_locks: t
                .requires_locks
                .into_iter()
                .map(|l| LockOut {
                    key: l.key.to_string(),
                    mode: mode_name(l.mode).into(),
                })
                .collect(),
            assigned_to: t.assigned_to.map(|i| i.to_string()),
            role: t.role,
            result: t.result,
            error: t.error,
        }
    }
}

fn mode_name(mode: crate::work::lease::LeaseMode) -> &'static str {
    match mode {
        crate::work::lease::LeaseMode::Exclusive => "exclusive",
        crate::work::lease::LeaseMode::Shared => "shared",
    }
}

/// A slice of a step's output.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ReadOut {
    /// The step.
    step_id: u64,
    /// The field read: `output`, `payload`, `text` or `error`.
    field: String,
    /// The first character given.
    offset: u64,
    /// The characters from `offset`, at most `limit` of them.
    content: String,
    /// The field's whole length, in characters.
    total_length: u64,
    /// Whether characters follow: read again from `offset` + the length of `content`.
    has_more: bool,
}

/// The answer to `register`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct RegisterOut {
    /// Always true (a refused registration is an error).
    registered: bool,
    /// The instance id.
    id: String,
    /// Its epoch: unchanged when a live instance registered again, new otherwise.
    epoch: u64,
    /// True when this refreshed a live instance instead of starting a new epoch.
    refreshed: bool,
    /// Whether this instance leads.
    is_leader: bool,
    /// The current leader, if any.
    leader: Option<String>,
    /// The current leadership term.
    term: u64,
}

/// A lease.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct LeaseOut {
    /// The key.
    key: String,
    /// `exclusive` or `shared`.
    mode: String,
    /// Fencing token of this grant: present it to the resource so that it can refuse a
    /// holder whose lease was lost.
    fencing_token: u64,
    /// Wall-clock ms (Unix epoch) it lapses unless renewed.
    expires_at_ms: u64,
    /// The holder: a step's claim (`step_id`) or an instance (`instance_id`, `epoch`).
    holder: HolderOut,
}

/// Who holds a lease.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct HolderOut {
    /// `claim` or `instance`.
    kind: String,
    /// The step, for a claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<u64>,
    /// The instance, for an instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    /// The instance's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

impl From<LeaseGrant> for LeaseOut {
    fn from(g: LeaseGrant) -> Self {
        let holder = match g.holder {
            LeaseHolder::Claim { task_id, .. } => HolderOut {
                kind: "claim".into(),
                step_id: Some(task_id.0),
                instance_id: None,
                epoch: None,
            },
            LeaseHolder::Instance { instance_id, epoch } => HolderOut {
                kind: "instance".into(),
                step_id: None,
                instance_id: Some(instance_id.to_string()),
                epoch: Some(epoch.0),
            },
        };
        Self {
            key: g.key.to_string(),
            mode: mode_name(g.mode).into(),
            fencing_token: g.fencing_token,
            expires_at_ms: g.expires_at_ms,
            holder,
        }
    }
}

/// One claimed step.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ClaimedOut {
    /// The step.
    step_id: u64,
    /// The claim token: pass it to heartbeat, complete_step, fail_step and step leases.
    claim_token: String,
    /// The task.
    task: TaskOut,
    /// The leases taken for its locks.
    leases: Vec<LeaseOut>,
}

/// The answer to `claim_step`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ClaimOut {
    /// Whether a step was claimed.
    claimed: bool,
    /// The (first) step claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<u64>,
    /// Its claim token.
    #[serde(skip_serializing_if = "Option::is_none")]
    claim_token: Option<String>,
    /// Its task.
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<TaskOut>,
    /// The leases taken for its locks.
    leases: Vec<LeaseOut>,
    /// Every step claimed (the first included), when max_tasks > 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<ClaimedOut>>,
}

/// A conflicting hold.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ConflictOut {
    /// The key held.
    key: String,
    /// How it is held.
    mode: String,
}

/// The answer to `acquire_lease`, `renew_lease` or `release_lease`.
#[derive(Debug, Default, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct LeaseCallOut {
    /// acquire_lease: whether the lease was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    acquired: Option<bool>,
    /// renew_lease: whether it was renewed (false: not held any more).
    #[serde(skip_serializing_if = "Option::is_none")]
    renewed: Option<bool>,
    /// release_lease: whether a hold was released.
    #[serde(skip_serializing_if = "Option::is_none")]
    released: Option<bool>,
    /// `stale_claim` when the step's claim is over (nothing changed: stop, do not retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// The key.
    key: String,
    /// Fencing token of the grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    fencing_token: Option<u64>,
    /// Wall-clock ms it lapses unless renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    /// acquire_lease refused: the holds in the way.
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<Vec<ConflictOut>>,
}

/// The answer to `list_leases`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ListLeasesOut {
    /// The leases, by key.
    leases: Vec<LeaseOut>,
    /// How many match in all.
    total: u64,
    /// Whether more match than were listed.
    truncated: bool,
}

/// An instance.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct InstanceOut {
    /// The id.
    id: String,
    /// `active`, `suspect`, `expired` or `unregistered`.
    state: String,
    /// Its epoch.
    epoch: u64,
    /// Its roles.
    roles: Vec<String>,
    /// Whether it leads.
    is_leader: bool,
    /// Wall-clock ms of its last heartbeat.
    last_seen_ms: u64,
    /// Its TTL, ms.
    ttl_ms: u64,
    /// How many steps it holds claimed.
    task_count: u64,
}

/// The answer to `cluster_state`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ClusterOut {
    /// The leader, if any.
    leader: Option<String>,
    /// The leadership term.
    term: u64,
    /// At most `limit` instances, by id.
    instances: Vec<InstanceOut>,
    /// How many instances there are in all.
    instance_count: u64,
    /// Whether more instances exist than were listed.
    truncated: bool,
    /// Tasks by status.
    task_counts: BTreeMap<String, u64>,
}

// ---------------------------------------------------------------------------------------------
// Arguments, for the input schemas only (the calls read their arguments with `Args`).

#[allow(dead_code)]
mod input {
    use rmcp::schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
    use serde_json::Value;

    fn step_id(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The step: an integer such as 17, or \"t-17\".",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^(t-)?[0-9]+$"}
            ]
        })
    }

    fn any_json(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"description": "Any JSON value."})
    }

    fn locks(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "default": [],
            "items": {"anyOf": [
                {"type": "string", "description": "a key, locked exclusively"},
                {"type": "object", "properties": {
                    "key": {"type": "string"},
                    "mode": {"type": "string", "enum": ["exclusive", "shared"]}
                }, "required": ["key"]}
            ]}
        })
    }

    /// heartbeat.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Heartbeat {
        /// Your step (default: SORTIE_STEP_ID of the stdio server's environment).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// Move every lease of the step to now + this many seconds; 0 or less: heartbeat only.
        #[schemars(extend("default" = 900))]
        extend_leases_sec: Option<i64>,
        /// The claim token your claim answered (default: SORTIE_CLAIM_TOKEN of the stdio
        /// server's environment). Required: no write without it.
        claim_token: Option<String>,
    }

    /// complete_step.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Complete {
        /// Your step (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// What you did and found: stored as the step's result `{"summary": …}`, visible to
        /// whoever reads the step's output.
        #[schemars(extend("default" = ""))]
        summary: Option<String>,
        /// The claim token (default: SORTIE_CLAIM_TOKEN). Required.
        claim_token: Option<String>,
    }

    /// fail_step.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Fail {
        /// Your step (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// What went wrong and why you cannot go on.
        #[schemars(extend("default" = ""))]
        error: Option<String>,
        /// The claim token (default: SORTIE_CLAIM_TOKEN). Required.
        claim_token: Option<String>,
    }

    /// get_my_context.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Context {
        /// The step (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
    }

    /// read_step_output.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Read {
        /// The step to read.
        #[schemars(schema_with = "step_id")]
        step_id: Value,
        /// First character to read.
        #[schemars(extend("default" = 0))]
        offset: Option<u64>,
        /// Most characters to read (at most 1 000 000).
        #[schemars(extend("default" = 8000))]
        limit: Option<u64>,
        /// `output` (the result's summary, else the result as JSON), `payload`, `text` or
        /// `error`.
        #[schemars(extend("default" = "output", "enum" = ["output", "payload", "text", "error"]))]
        field: Option<String>,
    }

    /// register.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Register {
        /// The instance id to register (1–256 characters, no whitespace).
        instance_id: String,
        /// Its roles.
        #[schemars(extend("default" = ["worker"]))]
        roles: Option<Vec<String>>,
        /// Its TTL in ms: it expires unless heard from within it (default: the server's).
        ttl_ms: Option<u64>,
    }

    /// claim_step.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Claim {
        /// The live instance claiming (see register).
        worker_id: String,
        /// Most steps to claim at once.
        #[schemars(extend("default" = 1))]
        max_tasks: Option<u64>,
        /// Only steps that require exactly this role (the instance must be registered with
        /// it); without it, steps requiring no role or one of the instance's roles.
        role: Option<String>,
    }

    /// create_task.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Create {
        /// What is to be done (stored as the payload `{"text": …}`); or give `payload`.
        text: Option<String>,
        /// The task's payload, any JSON (instead of `text`).
        #[serde(default)]
        #[schemars(schema_with = "any_json")]
        payload: Option<Value>,
        /// 0–100, higher first.
        #[schemars(extend("default" = 50))]
        priority: Option<u64>,
        /// Attempts allowed before it fails for good.
        #[schemars(extend("default" = 3))]
        max_attempts: Option<u64>,
        /// Lease keys a claim must take with the task (all or nothing): a key (exclusive) or
        /// `{key, mode}`.
        #[serde(default)]
        #[schemars(schema_with = "locks")]
        requires_locks: Option<Value>,
        /// An id for safe retries: the same request id answers the task it created.
        request_id: Option<String>,
        /// Only an instance registered with this role may claim it (1–64 characters).
        role: Option<String>,
    }

    /// acquire_lease.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Acquire {
        /// The resource key; `/` or `§` separate levels (a key conflicts with its ancestors
        /// and descendants).
        key: String,
        /// `exclusive` or `shared`.
        #[schemars(extend("default" = "exclusive", "enum" = ["exclusive", "shared"]))]
        mode: Option<String>,
        /// Lease time in seconds (default: the server's).
        ttl_sec: Option<u64>,
        /// The holder, when an instance holds it: its id. Otherwise give step_id and
        /// claim_token (a step's lease, released with its claim).
        holder: Option<String>,
        /// The step holding it (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// The step's claim token (default: SORTIE_CLAIM_TOKEN).
        claim_token: Option<String>,
    }

    /// renew_lease.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Renew {
        /// The key.
        key: String,
        /// New lease time in seconds from now (default: the server's).
        ttl_sec: Option<u64>,
        /// The instance holding it, or give step_id and claim_token.
        holder: Option<String>,
        /// The step holding it (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// The step's claim token (default: SORTIE_CLAIM_TOKEN).
        claim_token: Option<String>,
    }

    /// release_lease.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct Release {
        /// The key.
        key: String,
        /// The instance holding it, or give step_id and claim_token.
        holder: Option<String>,
        /// The step holding it (default: SORTIE_STEP_ID).
        #[serde(default)]
        #[schemars(schema_with = "step_id")]
        step_id: Option<Value>,
        /// The step's claim token (default: SORTIE_CLAIM_TOKEN).
        claim_token: Option<String>,
    }

    /// list_leases.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct ListLeases {
        /// Only this key and its descendants (`a/b` lists `a/b` and `a/b/c`).
        prefix: Option<String>,
        /// Most leases to list (at most 1000).
        #[schemars(extend("default" = 100))]
        limit: Option<u64>,
    }

    /// cluster_state.
    #[derive(JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    pub struct ClusterState {
        /// Most instances to list (at most 1000).
        #[schemars(extend("default" = 100))]
        limit: Option<u64>,
    }
}

fn tool<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    Tool::new(name, description, Map::new())
        .with_input_schema::<I>()
        .with_output_schema::<O>()
        .with_annotations(annotations)
}

fn reads() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}

fn writes(destructive: bool, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

/// Every tool, in the order of [`TOOL_NAMES`].
pub(crate) fn list() -> Vec<Tool> {
    use input::*;
    vec![
        tool::<Heartbeat, HeartbeatOut>(
            "heartbeat",
            "Tell Vigil you are still working on your step, and extend the step's leases \
             (extend_leases_sec from now; 0 = heartbeat only). Call it regularly while you work, \
             well within the lease time (every few minutes with the default 900 s). \
             status \"ok\": carry on; lost_leases lists leases that had already lapsed and are \
             gone — do not rely on them. status \"stale_claim\": your claim on this step is over \
             (taken back, finished, or the token is wrong) — stop working on it at once and do \
             not retry. Needs the step's claim token (argument or SORTIE_CLAIM_TOKEN).",
            writes(false, true),
        ),
        tool::<Complete, CompleteOut>(
            "complete_step",
            "Mark your step as done, with a summary of what you did and found (stored as the \
             step's result and readable by others with read_step_output). Releases the step's \
             leases. Call it once, when the work is finished. \"stale_claim\": your claim was \
             over and nothing was recorded — stop, do not retry. Needs the claim token.",
            writes(false, true),
        ),
        tool::<Fail, FailOut>(
            "fail_step",
            "Report that you cannot complete your step, with the error. The step goes back to \
             pending for another attempt (status \"pending\", can_retry true) or, out of \
             attempts, fails for good (\"failed\"). Releases the step's leases; stop working on \
             it afterwards. \"stale_claim\": your claim was over and nothing changed. Needs the \
             claim token.",
            writes(true, false),
        ),
        tool::<Context, TaskOut>(
            "get_my_context",
            "Read the step you are working on: its text, payload, status, attempts, locks and \
             any earlier result or error. Changes nothing. Call it first, to learn what to do.",
            reads(),
        ),
        tool::<Read, ReadOut>(
            "read_step_output",
            "Read a slice (in characters) of a step's output — its result's summary, else the \
             result as JSON — or of its payload, text or error; for steps whose output you \
             build on. Changes nothing. Page with offset while has_more is true.",
            reads(),
        ),
        tool::<Register, RegisterOut>(
            "register",
            "Register an instance (a worker) with Vigil, or refresh it while it is alive. It \
             must be heard from within its TTL (a registration, or heartbeats of the steps it \
             claimed) or it expires and its claims are taken back. Needed before claim_step.",
            writes(false, true),
        ),
        tool::<Claim, ClaimOut>(
            "claim_step",
            "Claim the next pending step(s) for a live registered instance, with the leases \
             its locks need (all or nothing). Answers the step and its claim_token: keep the \
             token, every later heartbeat, complete_step and fail_step needs it. With role, \
             only steps that require that role. claimed false: nothing to do now.",
            writes(false, false),
        ),
        tool::<Create, TaskOut>(
            "create_task",
            "Create a task (a step) for some worker to claim: text or a JSON payload, a \
             priority, attempts allowed and the lease keys a claim must take. With request_id, \
             retrying the same call answers the same task instead of creating another. With \
             role, only an instance registered with that role may claim it.",
            writes(false, false),
        ),
        tool::<Acquire, LeaseCallOut>(
            "acquire_lease",
            "Take a lease on a resource key (exclusive or shared) for a step (step_id and \
             claim_token: released with the claim) or an instance (holder). acquired false: \
             someone holds it (see conflicts) — try later. Keys are hierarchical (`/` or `§`): \
             a key conflicts with its ancestors and descendants. Present fencing_token to the \
             resource. status \"stale_claim\": the step's claim is over — stop.",
            writes(false, false),
        ),
        tool::<Renew, LeaseCallOut>(
            "renew_lease",
            "Extend a lease you hold. renewed false: you do not hold it any more (it lapsed or \
             was released) — stop using the resource. A step's leases are also extended by \
             heartbeat.",
            writes(false, true),
        ),
        tool::<Release, LeaseCallOut>(
            "release_lease",
            "Give up a lease you hold, when you are done with the resource before your step \
             ends (complete_step and fail_step release a step's leases anyway).",
            writes(true, true),
        ),
        tool::<ListLeases, ListLeasesOut>(
            "list_leases",
            "List the live leases (optionally those under the key prefix: that key and its \
             descendants): who holds what, until when. Changes nothing.",
            reads(),
        ),
        tool::<ClusterState, ClusterOut>(
            "cluster_state",
            "Show the cluster: the leader and term, the instances (state, roles, last seen, \
             steps held) and task counts by status. Changes nothing.",
            reads(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Calls.

async fn heartbeat<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["step_id", "extend_leases_sec", "claim_token"])?;
    let step = cx.step_id(&a)?;
    let extend = a
        .opt_int("extend_leases_sec", i64::MIN, i64::MAX)?
        .unwrap_or(900)
        .max(0);
    let token = cx.claim_token(&a)?;
    let beat: StepHeartbeat = cx
        .rpc_as(
            "task.heartbeat",
            json!({"taskId": task_ref(step), "claimToken": token, "extendLeasesSec": extend}),
        )
        .await?;
    out(&HeartbeatOut {
        status: match beat.status {
            StepStatus::Ok => BeatStatus::Ok,
            StepStatus::StaleClaim => BeatStatus::StaleClaim,
        },
        step_id: step,
        lost_leases: beat.lost_leases.iter().map(|k| k.to_string()).collect(),
        leases_expire_at_ms: beat.leases_expire_at_ms,
    })
}

async fn complete_step<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["step_id", "summary", "claim_token"])?;
    let step = cx.step_id(&a)?;
    let summary = a.opt_str("summary")?.unwrap_or_default();
    let token = cx.claim_token(&a)?;
    let done: Completion = cx
        .rpc_as(
            "task.complete",
            json!({"taskId": task_ref(step), "claimToken": token,
                   "result": {"summary": summary}}),
        )
        .await?;
    out(&CompleteOut {
        status: match done.status {
            CompleteStatus::Completed => DoneStatus::Done,
            CompleteStatus::StaleClaim => DoneStatus::StaleClaim,
        },
        step_id: step,
    })
}

async fn fail_step<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["step_id", "error", "claim_token"])?;
    let step = cx.step_id(&a)?;
    let error = a.opt_str("error")?.unwrap_or_default();
    let token = cx.claim_token(&a)?;
    let failed: Failure = cx
        .rpc_as(
            "task.fail",
            json!({"taskId": task_ref(step), "claimToken": token, "error": error}),
        )
        .await?;
    out(&FailOut {
        status: match failed.status {
            FailStatus::Pending => FailOutStatus::Pending,
            FailStatus::Failed => FailOutStatus::Failed,
            FailStatus::StaleClaim => FailOutStatus::StaleClaim,
        },
        step_id: step,
        retry_count: failed.retry_count,
        max_retries: failed.max_retries,
        can_retry: failed.can_retry,
    })
}

async fn get_task<B: Backend>(cx: &Cx<'_, B>, step: u64) -> Result<TaskView, RpcError> {
    cx.rpc_as("task.get", json!({"taskId": task_ref(step)}))
        .await
}

async fn get_my_context<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["step_id"])?;
    let step = cx.step_id(&a)?;
    out(&TaskOut::from(get_task(cx, step).await?))
}

/// Most characters `read_step_output` gives at once.
const MAX_READ: i64 = 1_000_000;

async fn read_step_output<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["step_id", "offset", "limit", "field"])?;
    let step = match a.value("step_id") {
        Some(v) => step_id_of("step_id", v)?,
        None => return Err(bad("step_id", "is required")),
    };
    let offset = a.opt_int("offset", 0, i64::MAX)?.unwrap_or(0) as usize;
    let limit = a.opt_int("limit", 0, MAX_READ)?.unwrap_or(8000) as usize;
    let field = a.opt_str("field")?.unwrap_or("output");
    if !["output", "payload", "text", "error"].contains(&field) {
        return Err(bad(
            "field",
            format!("must be output, payload, text or error, got {field:?}"),
        ));
    }
    let task = get_task(cx, step).await?;
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let whole = match field {
        "output" => match &task.result {
            Some(result) => match result.get("summary") {
                Some(Value::String(summary)) => summary.clone(),
                _ => as_text(result),
            },
            None => String::new(),
        },
        "payload" => as_text(&task.payload),
        "text" => task.text.clone(),
        _ => task.error.clone().unwrap_or_default(),
    };
    let total = whole.chars().count();
    let content: String = whole.chars().skip(offset).take(limit).collect();
    let shown = content.chars().count();
    out(&ReadOut {
        step_id: step,
        field: field.to_string(),
        offset: offset as u64,
        content,
        total_length: total as u64,
        has_more: offset.saturating_add(shown) < total,
    })
}

async fn register<B: Backend>(cx: &Cx<'_, B>, args: Map<String, Value>) -> Result<Value, RpcError> {
    let a = Args::new(args, &["instance_id", "roles", "ttl_ms"])?;
    let id = a.str("instance_id")?;
    let roles = a
        .opt_strings("roles")?
        .unwrap_or_else(|| vec!["worker".into()]);
    let mut params = json!({"id": id, "roles": roles});
    if let Some(ttl) = a.opt_int("ttl_ms", 1, i64::from(u32::MAX))? {
        params["ttlMs"] = json!(ttl);
    }
    let renames = [("id", "instance_id"), ("instanceId", "instance_id")];
    let value = cx.rpc("system.register", params, &renames).await?;
    let reg: crate::model::Registration =
        serde_json::from_value(value).map_err(|e| internal("system.register", e))?;
    out(&RegisterOut {
        registered: reg.registered,
        id: reg.id.to_string(),
        epoch: reg.epoch.0,
        refreshed: reg.refreshed,
        is_leader: reg.is_leader,
        leader: reg.leader.map(|l| l.to_string()),
        term: reg.term.0,
    })
}

async fn claim_step<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["worker_id", "max_tasks", "role"])?;
    let worker = a.str("worker_id")?;
    let max = a.opt_int("max_tasks", 1, 1000)?.unwrap_or(1);
    let renames = [("instanceId", "worker_id")];
    let mut params = json!({"workerId": worker, "maxTasks": max});
    if let Some(role) = a.opt_str("role")? {
        params["role"] = json!(role);
    }
    let value = cx.rpc("task.claim", params, &renames).await?;
    let tasks: Vec<ClaimedTask> = value
        .get("tasks")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| internal("task.claim", e))?
        .unwrap_or_default();
    let claimed: Vec<ClaimedOut> = tasks
        .into_iter()
        .map(|c| ClaimedOut {
            step_id: c.task.id.0,
            claim_token: c.claim_token.as_str().to_string(),
            task: c.task.into(),
            leases: c.leases.into_iter().map(LeaseOut::from).collect(),
        })
        .collect();
    let mut answer = ClaimOut {
        claimed: !claimed.is_empty(),
        step_id: None,
        claim_token: None,
        task: None,
        leases: Vec::new(),
        tasks: None,
    };
    if let Some(first) = claimed.first() {
        answer.step_id = Some(first.step_id);
        answer.claim_token = Some(first.claim_token.clone());
    }
    if max > 1 {
        answer.task = claimed.first().map(|c| c.task.clone());
        answer.leases = claimed
            .first()
            .map(|c| c.leases.clone())
            .unwrap_or_default();
        answer.tasks = Some(claimed);
    } else if let Some(first) = claimed.into_iter().next() {
        answer.task = Some(first.task);
        answer.leases = first.leases;
    }
    out(&answer)
}

async fn create_task<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(
        args,
        &[
            "text",
            "payload",
            "priority",
            "max_attempts",
            "requires_locks",
            "request_id",
            "role",
        ],
    )?;
    let mut params = Map::new();
    match (a.opt_str("text")?, a.value("payload")) {
        (Some(_), Some(_)) => return Err(bad("payload", "give text or payload, not both")),
        (Some(text), None) => {
            params.insert("text".into(), json!(text));
        }
        (None, Some(payload)) => {
            params.insert("payload".into(), payload.clone());
        }
        (None, None) => return Err(bad("text", "text or payload is required")),
    }
    params.insert(
        "priority".into(),
        json!(a.opt_int("priority", 0, 100)?.unwrap_or(50)),
    );
    params.insert(
        "maxAttempts".into(),
        json!(
            a.opt_int("max_attempts", 1, i64::from(u32::MAX))?
                .unwrap_or(3)
        ),
    );
    if let Some(locks) = a.value("requires_locks") {
        params.insert("requires_locks".into(), locks.clone());
    }
    if let Some(id) = a.opt_str("request_id")? {
        params.insert("requestId".into(), json!(id));
    }
    if let Some(role) = a.opt_str("role")? {
        params.insert("role".into(), json!(role));
    }
    let task: TaskView = cx.rpc_as("task.create", Value::Object(params)).await?;
    out(&TaskOut::from(task))
}

#[derive(Clone, Copy, PartialEq)]
enum LeaseOp {
    Acquire,
    Renew,
    Release,
}

/// The holder's parameters — `{holder}` or `{taskId, claimToken}` — and the step, if a step
/// holds it.
fn lease_holder<B: Backend>(
    cx: &Cx<'_, B>,
    a: &Args,
) -> Result<(Map<String, Value>, Option<u64>), RpcError> {
    let mut params = Map::new();
    if let Some(holder) = a.opt_str("holder")? {
        if a.has("step_id") {
            return Err(bad(
                "holder",
                "give holder (an instance) or step_id with claim_token (a step), not both",
            ));
        }
        if a.has("claim_token") {
            return Err(bad(
                "claim_token",
                "goes with step_id; an instance holder (holder) needs none",
            ));
        }
        params.insert("holder".into(), json!(holder));
        return Ok((params, None));
    }
    let Some(step) = cx.opt_step_id(a)? else {
        return Err(bad(
            "holder",
            "is required: an instance id, or give step_id and claim_token for a step's lease",
        ));
    };
    params.insert("taskId".into(), json!(task_ref(step)));
    params.insert("claimToken".into(), json!(cx.claim_token(a)?));
    Ok((params, Some(step)))
}

async fn lease_call<B: Backend>(
    cx: &Cx<'_, B>,
    op: LeaseOp,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let known: &[&str] = match op {
        LeaseOp::Acquire => &["key", "mode", "ttl_sec", "holder", "step_id", "claim_token"],
        LeaseOp::Renew => &["key", "ttl_sec", "holder", "step_id", "claim_token"],
        LeaseOp::Release => &["key", "holder", "step_id", "claim_token"],
    };
    let a = Args::new(args, known)?;
    let key = a.str("key")?.to_string();
    let (mut params, step) = lease_holder(cx, &a)?;
    params.insert("key".into(), json!(key));
    if op == LeaseOp::Acquire {
        let mode = a.opt_str("mode")?.unwrap_or("exclusive");
        if !["exclusive", "shared"].contains(&mode) {
            return Err(bad(
                "mode",
                format!("must be exclusive or shared, got {mode:?}"),
            ));
        }
        params.insert("mode".into(), json!(mode));
    }
    if op != LeaseOp::Release
        && let Some(ttl) = a.opt_int("ttl_sec", 1, i64::from(u32::MAX))?
    {
        params.insert("ttlSec".into(), json!(ttl));
    }
    let method = match op {
        LeaseOp::Acquire => "lease.acquire",
        LeaseOp::Renew => "lease.renew",
        LeaseOp::Release => "lease.release",
    };
    let mut answer = LeaseCallOut {
        key,
        ..LeaseCallOut::default()
    };
    let set = |answer: &mut LeaseCallOut, ok: bool| match op {
        LeaseOp::Acquire => answer.acquired = Some(ok),
        LeaseOp::Renew => answer.renewed = Some(ok),
        LeaseOp::Release => answer.released = Some(ok),
    };
    let value = match cx.rpc(method, Value::Object(params), &[]).await {
        Ok(value) => value,
        // A step whose claim is over: Sortie's answer, not an error.
        Err(e) if step.is_some() && is_stale_claim(&e) => {
            set(&mut answer, false);
            answer.status = Some("stale_claim".into());
            return out(&answer);
        }
        Err(e) => return Err(e),
    };
    let flag = match op {
        LeaseOp::Acquire => "acquired",
        LeaseOp::Renew => "renewed",
        LeaseOp::Release => "released",
    };
    let ok = value
        .get(flag)
        .and_then(Value::as_bool)
        .ok_or_else(|| internal(method, format!("no {flag} in {value}")))?;
    set(&mut answer, ok);
    answer.fencing_token = value.get("fencingToken").and_then(Value::as_u64);
    answer.expires_at_ms = value.get("expiresAt").and_then(Value::as_u64);
    if op == LeaseOp::Acquire && !ok {
        let conflicts = value
            .get("conflicts")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|c| ConflictOut {
                        key: str_of(c, "key"),
                        mode: str_of(c, "mode"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        answer.conflicts = Some(conflicts);
    }
    out(&answer)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

async fn list_leases<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["prefix", "limit"])?;
    let mut params = json!({"limit": a.opt_int("limit", 0, 1000)?.unwrap_or(100)});
    if let Some(prefix) = a.opt_str("prefix")? {
        params["prefix"] = json!(prefix);
    }
    let value = cx.rpc("lease.list", params, &[]).await?;
    let leases: Vec<LeaseGrant> = value
        .get("leases")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| internal("lease.list", e))?
        .unwrap_or_default();
    out(&ListLeasesOut {
        leases: leases.into_iter().map(LeaseOut::from).collect(),
        total: u64_of(&value, "total"),
        truncated: value
            .get("truncated")
            .and_then(Value::as_bool)
            .unwrap_or_default(),
    })
}

async fn cluster_state<B: Backend>(
    cx: &Cx<'_, B>,
    args: Map<String, Value>,
) -> Result<Value, RpcError> {
    let a = Args::new(args, &["limit"])?;
    let limit = a.opt_int("limit", 0, 1000)?.unwrap_or(100);
    let state = cx
        .rpc(
            "system.get_state",
            json!({"limit": limit, "taskLimit": 0}),
            &[],
        )
        .await?;
    let instances = state
        .get("instances")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| InstanceOut {
                    id: str_of(i, "id"),
                    state: str_of(i, "state"),
                    epoch: u64_of(i, "epoch"),
                    roles: i
                        .get("roles")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    is_leader: i
                        .get("isLeader")
                        .and_then(Value::as_bool)
                        .unwrap_or_default(),
                    last_seen_ms: u64_of(i, "lastSeenMs"),
                    ttl_ms: u64_of(i, "ttlMs"),
                    task_count: u64_of(i, "taskCount"),
                })
                .collect()
        })
        .unwrap_or_default();
    let task_counts = state
        .get("taskCounts")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    out(&ClusterOut {
        leader: state
            .get("leader")
            .and_then(Value::as_str)
            .map(str::to_string),
        term: u64_of(&state, "term"),
        instances,
        instance_count: u64_of(&state, "instanceCount"),
        truncated: state
            .get("truncated")
            .and_then(Value::as_bool)
            .unwrap_or_default(),
        task_counts,
    })
}
