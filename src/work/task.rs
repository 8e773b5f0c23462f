//! Tasks: the units of work Vigil hands out, and the answers of the calls made on them.

use serde::{Deserialize, Serialize};

use crate::model::{Epoch, InstanceId};
use crate::work::lease::{LeaseGrant, LeaseKey, LeaseMode};

pub use crate::model::work::{ClaimToken, TaskBrief, TaskId, TaskStatus};

/// A lock a task needs while it runs: acquired, all or nothing, when it is claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockSpec {
    /// The resource key.
    pub key: LeaseKey,
    /// Exclusive (default) or shared.
    #[serde(default)]
    pub mode: LeaseMode,
}

/// What a caller sends to create a task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Any JSON, at most 64 KiB serialized.
    pub payload: serde_json::Value,
    /// 0–100, higher first; default 50.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Attempts before the task fails for good; default 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Locks to hold while it runs.
    #[serde(default)]
    pub requires_locks: Vec<LockSpec>,
    /// The client's idempotency key (1–128 characters, no control characters): a create with a
    /// request id the coordinator still knows returns that task instead of creating another
    /// (and is refused if its parameters differ). Makes a retry safe when the outcome of the
    /// first attempt is unknown (a timeout, a lost connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The role a worker must be registered with to claim it (1–64 characters, no control
    /// characters, as instance roles); absent: any worker may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl TaskSpec {
    /// A task carrying `payload`, with the defaults.
    pub fn new(payload: serde_json::Value) -> Self {
        Self {
            payload,
            ..Self::default()
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the attempts.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets the request id (idempotency key).
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Requires a worker registered with `role` to claim it.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Adds a required lock.
    pub fn lock(mut self, key: &str, mode: LeaseMode) -> Self {
        // An invalid key is kept as text and refused by validation with its position.
        self.requires_locks.push(LockSpec {
            key: LeaseKey::unchecked(key),
            mode,
        });
        self
    }
}

/// A task as callers see it (without its claim token, which only the claimer holds), in
/// ClaudeBench's shape — `text`, `status` (`pending`, `in_progress`, `completed`, `failed`),
/// `assignedTo`, `metadata`, `result`, `error` and ISO-8601 `createdAt` / `updatedAt` /
/// `completedAt` — with Vigil's own fields beside them (`payload`, `attempts`,
/// `requiresLocks`, times in wall-clock ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// Id.
    pub id: TaskId,
    /// ClaudeBench's task text: `payload.text` when it is a string, else the payload as
    /// compact JSON (at most 500 characters).
    pub text: String,
    /// Status.
    pub status: TaskStatus,
    /// Priority.
    pub priority: u8,
    /// The instance it is assigned to or claimed by (`assignee` is read too).
    #[serde(alias = "assignee")]
    pub assigned_to: Option<InstanceId>,
    /// That instance's epoch.
    pub assignee_epoch: Option<Epoch>,
    /// `payload.metadata`, when the payload has one.
    pub metadata: Option<serde_json::Value>,
    /// Result given on completion.
    pub result: Option<serde_json::Value>,
    /// Last error (a failure, or why it was taken back).
    pub error: Option<String>,
    /// Creation, ISO-8601.
    pub created_at: String,
    /// Last change of status, assignment or content, ISO-8601.
    pub updated_at: String,
    /// Completion or final failure, ISO-8601.
    pub completed_at: Option<String>,
    /// Who ended it without the claim's token: `operator`, or its assignee's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
    /// Payload.
    pub payload: serde_json::Value,
    /// Attempts used so far (failed or taken back).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Locks it needs.
    pub requires_locks: Vec<LockSpec>,
    /// The role a worker must be registered with to claim it (absent: any worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Wall ms of creation.
    pub created_at_ms: u64,
    /// Wall ms of the last change.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Wall ms of the current claim.
    pub claimed_at_ms: Option<u64>,
    /// Wall ms of the last step heartbeat.
    pub heartbeat_at_ms: Option<u64>,
    /// Wall ms of completion or final failure.
    pub finished_at_ms: Option<u64>,
    /// The request id it was created with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What `task.update` changes; `None` leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskUpdate {
    /// New text (`payload.text`), 1–500 characters.
    pub text: Option<String>,
    /// New status, through the state machine (see docs/work.md).
    pub status: Option<TaskStatus>,
    /// New priority, 0–100.
    pub priority: Option<u8>,
    /// Keys merged into `payload.metadata`.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// ClaudeBench's text of a task with `payload`.
pub(crate) fn text_of(payload: &serde_json::Value) -> String {
    match payload.get("text").and_then(serde_json::Value::as_str) {
        Some(text) => text.to_string(),
        None => {
            let mut text = payload.to_string();
            if let Some((cut, _)) = text.char_indices().nth(500) {
                text.truncate(cut);
            }
            text
        }
    }
}

pub(crate) use crate::clock::iso_ms;

/// One task handed to a worker by a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedTask {
    /// The task.
    pub task: TaskView,
    /// The claim token to present on every later call.
    pub claim_token: ClaimToken,
    /// The leases acquired for its required locks.
    pub leases: Vec<LeaseGrant>,
}

/// `ok` or `stale_claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The claim is current.
    Ok,
    /// The token is wrong or old: the task was taken back, finished, or never claimed with it.
    StaleClaim,
}

/// The answer to a step heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepHeartbeat {
    /// `ok` or `stale_claim`.
    pub status: StepStatus,
    /// The task.
    pub task_id: TaskId,
    /// Leases of this claim that had lapsed before this heartbeat and are gone: the worker
    /// must not rely on them any more (Sortie never told its workers).
    pub lost_leases: Vec<LeaseKey>,
    /// Wall ms the remaining leases now run to (none when not extended).
    pub leases_expire_at_ms: Option<u64>,
}

/// `completed` or `stale_claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompleteStatus {
    /// Completed (now, or already by this same claim: completing twice is idempotent).
    Completed,
    /// The token is wrong or old; nothing changed.
    StaleClaim,
}

/// The answer to a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// Outcome.
    pub status: CompleteStatus,
    /// The task.
    pub task_id: TaskId,
}

/// `pending`, `failed` or `stale_claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailStatus {
    /// Put back for another attempt.
    Pending,
    /// Out of attempts: failed for good.
    Failed,
    /// The token is wrong or old; nothing changed.
    StaleClaim,
}

/// The answer to a failure report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Outcome.
    pub status: FailStatus,
    /// The task.
    pub task_id: TaskId,
    /// Attempts used so far.
    pub retry_count: u32,
    /// Attempts allowed.
    pub max_retries: u32,
    /// Whether it will be tried again.
    pub can_retry: bool,
}

/// Which tasks to list, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskQuery {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only tasks assigned to or claimed by this instance.
    pub assignee: Option<String>,
    /// Only this priority.
    #[serde(default)]
    pub priority: Option<u8>,
    /// Only tasks requiring exactly this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// At most this many: [`DEFAULT_LIST_LIMIT`](crate::model::DEFAULT_LIST_LIMIT)
    /// (100) when `None`, at most [`MAX_LIST_LIMIT`](crate::model::MAX_LIST_LIMIT) (1000; a
    /// larger limit is taken as that).
    pub limit: Option<usize>,
    /// Only tasks whose id is above this one (the last id of the previous page); only with the
    /// default order.
    pub after: Option<TaskId>,
    /// Skip this many matching tasks first (ClaudeBench's `offset`).
    #[serde(default)]
    pub offset: usize,
    /// The order: by creation (the default; creation order is id order), last update,
    /// priority, status or assignee, ties by id.
    #[serde(default)]
    pub order_by: TaskOrder,
    /// Newest / highest first. The Rust API's default is ascending (id order, the one `after`
    /// pages through); ClaudeBench's `task.list` defaults to descending.
    #[serde(default)]
    pub descending: bool,
}

/// What [`TaskQuery`] orders by (ClaudeBench's `orderBy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskOrder {
    /// Creation time, which is id order.
    #[default]
    CreatedAt,
    /// Last change of status, assignment or content.
    UpdatedAt,
    /// Priority.
    Priority,
    /// Status (`pending`, `in_progress`, `completed`, `failed`, by name).
    Status,
    /// Assignee id (unassigned first).
    AssignedTo,
}

impl TaskOrder {
    /// Reads ClaudeBench's `orderBy` name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "createdAt" => Some(Self::CreatedAt),
            "updatedAt" => Some(Self::UpdatedAt),
            "priority" => Some(Self::Priority),
            "status" => Some(Self::Status),
            "assignedTo" => Some(Self::AssignedTo),
            _ => None,
        }
    }
}
