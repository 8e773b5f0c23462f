//! `task.*`: ClaudeBench's task methods with Sortie's step aliases (`stepId`, `step_id`,
//! `extend_leases_sec`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Params, RpcError, to_json};
use crate::coordinator::Coordinator;
use crate::coordinator::check_text;
use crate::model::Authority;
use crate::work::lease::{LeaseKey, LeaseMode};
use crate::work::task::{
    CompleteStatus, LockSpec, TaskId, TaskOrder, TaskQuery, TaskSpec, TaskStatus, TaskUpdate,
};

const TASK_ID: &[&str] = &["taskId", "id", "stepId", "step_id"];
const TOKEN: &[&str] = &["claimToken", "claim_token"];
const WORKER: &[&str] = &["workerId", "worker_id", "instanceId"];

fn parse_locks(p: &Params) -> Result<Vec<LockSpec>, RpcError> {
    let Some((name, value)) = p.find(&["requiresLocks", "requires_locks"]) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(RpcError::invalid_params(name, "must be an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            // A bare key is an exclusive lock.
            Value::String(key) => Ok(LockSpec {
                key: LeaseKey::parse_field(key, &format!("{name}[{i}]"))?,
                mode: LeaseMode::Exclusive,
            }),
            Value::Object(_) => serde_json::from_value::<LockSpec>(item.clone())
                .map_err(|e| RpcError::invalid_params(format!("{name}[{i}]"), e.to_string())),
            _ => Err(RpcError::invalid_params(
                format!("{name}[{i}]"),
                "must be a key or {key, mode}",
            )),
        })
        .collect()
}

/// `task.create {text|payload, priority?, maxAttempts?, requiresLocks?, requestId?, role?}` →
/// `{id, status, priority, createdAt, …}`. A `requestId` the coordinator still knows answers
/// the task it created (a safe retry); a `role` lets only workers registered with it claim
/// the task.
pub async fn create(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let payload = match (p.opt_value(&["payload"]), p.opt_str(&["text"])?) {
        (Some(payload), _) => payload.clone(),
        (None, Some(text)) => {
            check_text(text, "text")?;
            match p.opt_value(&["metadata"]) {
                None => json!({"text": text}),
                Some(Value::Object(metadata)) => json!({"text": text, "metadata": metadata}),
                Some(_) => return Err(RpcError::invalid_params("metadata", "must be an object")),
            }
        }
        (None, None) => {
            return Err(RpcError::invalid_params(
                "text",
                "text or payload is required",
            ));
        }
    };
    let mut spec = TaskSpec::new(payload);
    if let Some(priority) = p.opt_u64(&["priority"], 100)? {
        spec = spec.priority(priority as u8);
    }
    if let Some(attempts) = p.opt_u64(&["maxAttempts", "max_attempts"], u64::from(u32::MAX))? {
        spec = spec.max_attempts(attempts as u32);
    }
    spec.requires_locks = parse_locks(&p)?;
    spec.request_id = p.opt_str(&["requestId", "request_id"])?.map(str::to_string);
    spec.role = p.opt_str(&["role"])?.map(str::to_string);
    to_json(&c.create_task_as(spec, a).await?)
}

/// `task.claim {workerId, maxTasks?, role?}` → `{claimed, taskId?, claimToken?, task?,
/// tasks}`. With `role`, only tasks that require exactly that role (the worker must have it).
pub async fn claim(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let worker = p.str(&["workerId", "instanceId", "worker_id"])?;
    let max = p.opt_u64(&["maxTasks", "max_tasks"], 1_000)?.unwrap_or(1) as usize;
    let role = p.opt_str(&["role"])?;
    let claims = c.claim_as(worker, max, role, a).await?;
    let mut value = json!({"claimed": !claims.is_empty(), "tasks": to_json(&claims)?});
    if let Some(first) = claims.first() {
        value["taskId"] = json!(first.task.id);
        value["claimToken"] = json!(first.claim_token);
        value["task"] = to_json(&first.task)?;
        value["leases"] = to_json(&first.leases)?;
    }
    Ok(value)
}

/// `task.heartbeat {taskId|stepId|step_id, claimToken | workerId, extendLeasesSec?=900}` →
/// `{status: ok|stale_claim, taskId, step_id, lostLeases}`.
pub async fn heartbeat(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let extend = p
        .opt_u64(&["extendLeasesSec", "extend_leases_sec"], 24 * 3600)?
        .unwrap_or(900);
    let extend = Duration::from_secs(extend);
    let answer = match (p.opt_str(TOKEN)?, p.opt_str(WORKER)?) {
        (Some(token), _) => c.task_heartbeat_as(id, token, extend, a).await?,
        // The live holder of the claim, without the token (see docs/work.md).
        (None, Some(worker)) => {
            c.task_heartbeat_without_token_as(id, worker, extend, a)
                .await?
        }
        (None, None) => {
            return Err(RpcError::invalid_params(
                "claimToken",
                "is required (also accepted as claim_token), or workerId for the claim's live holder",
            ));
        }
    };
    let mut value = to_json(&answer)?;
    value["step_id"] = json!(id.0);
    Ok(value)
}

/// `task.complete {taskId|id, claimToken?, workerId?, result?}` →
/// `{status: completed|stale_claim, taskId, id, completedAt?}`. With a claim token it is fenced
/// by it (idempotent for the same token). Without, as ClaudeBench's clients call it: from the
/// task's live assignee (`workerId`) or, naming no worker, an operator (see docs/work.md).
pub async fn complete(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let result = p.opt_value(&["result"]).cloned();
    let done = match p.opt_str(TOKEN)? {
        Some(token) => c.complete_task_as(id, token, result, a).await?,
        None => {
            let worker = p.opt_str(WORKER)?;
            c.complete_without_token_as(id, worker, result, a).await?
        }
    };
    let mut value = to_json(&done)?;
    value["id"] = json!(id);
    if done.status == CompleteStatus::Completed
        && let Some(at) = c.get_task(id).and_then(|t| t.completed_at)
    {
        value["completedAt"] = json!(at);
    }
    Ok(value)
}

/// `task.fail {taskId|id, claimToken?, workerId?, error?}` →
/// `{status: pending|failed|stale_claim, retryCount, maxRetries, canRetry}`; without a claim
/// token on the terms of `task.complete`.
pub async fn fail(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let error = match p.opt_value(&["error"]) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let failed = match p.opt_str(TOKEN)? {
        Some(token) => c.fail_task_as(id, token, error, a).await?,
        None => {
            let worker = p.opt_str(WORKER)?;
            c.fail_without_token_as(id, worker, error, a).await?
        }
    };
    let mut value = to_json(&failed)?;
    value["id"] = json!(id);
    Ok(value)
}

/// `task.update {id, updates: {text?, status?, priority?, metadata?}}` → the task.
pub async fn update(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(&["id", "taskId"])?;
    let Some(Value::Object(updates)) = p.opt_value(&["updates"]) else {
        return Err(RpcError::invalid_params(
            "updates",
            "is required: an object",
        ));
    };
    let mut update = TaskUpdate::default();
    for (name, value) in updates {
        let field = || format!("updates.{name}");
        match (name.as_str(), value) {
            (_, Value::Null) => {}
            ("text", Value::String(text)) => update.text = Some(text.clone()),
            ("status", Value::String(status)) => {
                update.status = Some(TaskStatus::parse(status).ok_or_else(|| {
                    RpcError::invalid_params(field(), format!("must be {STATUSES}, got {status:?}"))
                })?);
            }
            ("priority", v) => match v.as_u64() {
                Some(n) if n <= 100 => update.priority = Some(n as u8),
                _ => {
                    return Err(RpcError::invalid_params(
                        field(),
                        format!("must be an integer within 0..=100, got {v}"),
                    ));
                }
            },
            ("metadata", Value::Object(m)) => update.metadata = Some(m.clone()),
            ("text" | "status" | "metadata", v) => {
                return Err(RpcError::invalid_params(
                    field(),
                    format!("has the wrong type: {v}"),
                ));
            }
            (other, _) => {
                return Err(RpcError::invalid_params(
                    field(),
                    format!("unknown: {other:?} is not text, status, priority or metadata"),
                ));
            }
        }
    }
    to_json(&c.update_task_as(id, update, a).await?)
}

/// `task.assign {taskId, instanceId}` → `{taskId, instanceId, assignedAt, previousAssignment}`.
pub async fn assign(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(&["taskId", "id"])?;
    let instance = p.str(&["instanceId", "workerId"])?;
    let previous = c.assign_task_as(id, instance, a).await?;
    Ok(json!({
        "taskId": id,
        "instanceId": instance,
        "assignedAt": assigned_at(c, id),
        "previousAssignment": previous,
    }))
}

/// `task.unassign {taskId}` → `{taskId, previousAssignment, unassignedAt}`.
pub async fn unassign(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(&["taskId", "id"])?;
    let previous = c.unassign_task_as(id, a).await?;
    Ok(json!({
        "taskId": id,
        "previousAssignment": previous,
        "unassignedAt": assigned_at(c, id),
    }))
}

/// `task.delete {id}` → `{id, deleted, deletedAt}`.
pub async fn delete(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(&["id", "taskId"])?;
    c.delete_task_as(id, a).await?;
    Ok(json!({
        "id": id,
        "deleted": true,
        "deletedAt": crate::work::task::iso_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        ),
    }))
}

/// The task's last change, ISO-8601 (the moment an assignment was made or removed).
fn assigned_at(c: &Coordinator, id: TaskId) -> Option<String> {
    c.get_task(id).map(|t| t.updated_at)
}

/// `task.get {taskId|id}` → the task.
pub async fn get(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    match c.get_task(id) {
        Some(view) => to_json(&view),
        None => Err(RpcError::invalid_params("taskId", format!("no task {id}"))),
    }
}

/// The parameters `task.list` knows (besides what every ClaudeBench client sends); any other is
/// refused rather than silently ignored.
const LIST_PARAMS: &[&str] = &[
    "status",
    "assignedTo",
    "assignee",
    "workerId",
    "priority",
    "role",
    "limit",
    "offset",
    "orderBy",
    "order",
    "after",
    "sessionId",
    "timestamp",
];

const STATUSES: &str = "pending, in_progress, completed or failed";

/// `task.list {status?, assignedTo?, priority?, limit?, offset?, orderBy?, order?, after?}` →
/// `{tasks, totalCount, hasMore, total, truncated, nextAfter?}`: ClaudeBench's filters and
/// order (default: newest first), at most `limit` tasks (100, at most 1000) after skipping
/// `offset`; or, with `after` (a task id), Vigil's cursor over id order.
pub async fn list(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    if let Some(unknown) = p.names().find(|n| !LIST_PARAMS.contains(n)) {
        return Err(RpcError::invalid_params(
            unknown,
            format!(
                "unknown filter; task.list takes {}",
                LIST_PARAMS[..10].join(", ")
            ),
        ));
    }
    let status = match p.opt_str(&["status"])? {
        None => None,
        Some(name) => Some(TaskStatus::parse(name).ok_or_else(|| {
            RpcError::invalid_params("status", format!("must be {STATUSES}, got {name:?}"))
        })?),
    };
    let order_by = match p.opt_str(&["orderBy"])? {
        None => None,
        Some(name) => Some(TaskOrder::parse(name).ok_or_else(|| {
            RpcError::invalid_params(
                "orderBy",
                format!(
                    "must be createdAt, updatedAt, priority, status or assignedTo, got {name:?}"
                ),
            )
        })?),
    };
    let descending = match p.opt_str(&["order"])? {
        None => None,
        Some("asc") => Some(false),
        Some("desc") => Some(true),
        Some(other) => {
            return Err(RpcError::invalid_params(
                "order",
                format!("must be asc or desc, got {other:?}"),
            ));
        }
    };
    let after = match p.find(&["after"]) {
        None => None,
        Some(_) => Some(p.task_id(&["after"])?),
    };
    let offset = p.opt_u64(&["offset"], u64::from(u32::MAX))?.unwrap_or(0) as usize;
    if after.is_some()
        && (order_by.is_some_and(|o| o != TaskOrder::CreatedAt)
            || descending == Some(true)
            || offset > 0)
    {
        return Err(RpcError::invalid_params(
            "after",
            "pages through id order only: not with orderBy, order desc or offset",
        ));
    }
    let query = TaskQuery {
        status,
        assignee: p
            .opt_str(&["assignedTo", "assignee", "workerId"])?
            .map(str::to_string),
        priority: p.opt_u64(&["priority"], 100)?.map(|n| n as u8),
        role: p.opt_str(&["role"])?.map(str::to_string),
        limit: Some(p.list_limit()?),
        after,
        offset,
        order_by: order_by.unwrap_or_default(),
        // ClaudeBench's default is newest first; a cursor pages upwards.
        descending: descending.unwrap_or(after.is_none()),
    };
    let page = c.list_tasks_page(&query);
    let mut value = json!({
        "tasks": to_json(&page.items)?,
        "totalCount": page.total,
        "hasMore": page.truncated,
        "total": page.total,
        "truncated": page.truncated,
    });
    if page.truncated
        && query.order_by == TaskOrder::CreatedAt
        && !query.descending
        && query.offset == 0
        && let Some(last) = page.items.last()
    {
        value["nextAfter"] = json!(last.id);
    }
    Ok(value)
}
