//! `task.*`: ClaudeBench's task methods with Sortie's step aliases (`stepId`, `step_id`,
//! `extend_leases_sec`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Params, RpcError, to_json};
use crate::coordinator::Coordinator;
use crate::model::Authority;
use crate::work::lease::{LeaseKey, LeaseMode};
use crate::work::task::{LockSpec, TaskQuery, TaskSpec, TaskStatus};

const TASK_ID: &[&str] = &["taskId", "id", "stepId", "step_id"];
const TOKEN: &[&str] = &["claimToken", "claim_token"];

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

/// `task.create {text|payload, priority?, maxAttempts?, requiresLocks?, requestId?}` →
/// `{id, status, priority, createdAt, …}`. A `requestId` the coordinator still knows answers
/// the task it created (a safe retry).
pub async fn create(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let payload = match (p.opt_value(&["payload"]), p.opt_str(&["text"])?) {
        (Some(payload), _) => payload.clone(),
        (None, Some(text)) => json!({"text": text, "metadata": p.opt_value(&["metadata"])}),
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
    let view = c.create_task_as(spec, a).await?;
    let mut value = to_json(&view)?;
    value["createdAt"] = json!(view.created_at_ms);
    Ok(value)
}

/// `task.claim {workerId, maxTasks?}` → `{claimed, taskId?, claimToken?, task?, tasks}`.
pub async fn claim(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let worker = p.str(&["workerId", "instanceId", "worker_id"])?;
    let max = p.opt_u64(&["maxTasks", "max_tasks"], 1_000)?.unwrap_or(1) as usize;
    let claims = c.claim_as(worker, max, a).await?;
    let mut value = json!({"claimed": !claims.is_empty(), "tasks": to_json(&claims)?});
    if let Some(first) = claims.first() {
        value["taskId"] = json!(first.task.id);
        value["claimToken"] = json!(first.claim_token);
        value["task"] = to_json(&first.task)?;
        value["leases"] = to_json(&first.leases)?;
    }
    Ok(value)
}

/// `task.heartbeat {taskId|stepId|step_id, claimToken, extendLeasesSec?=900}` →
/// `{status: ok|stale_claim, taskId, step_id, lostLeases}`.
pub async fn heartbeat(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let token = p.str(TOKEN)?;
    let extend = p
        .opt_u64(&["extendLeasesSec", "extend_leases_sec"], 24 * 3600)?
        .unwrap_or(900);
    let answer = c
        .task_heartbeat_as(id, token, Duration::from_secs(extend), a)
        .await?;
    let mut value = to_json(&answer)?;
    value["step_id"] = json!(id.0);
    Ok(value)
}

/// `task.complete {taskId|id, claimToken, result?}` → `{status: completed|stale_claim, taskId}`.
pub async fn complete(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let token = p.str(TOKEN)?;
    let result = p.opt_value(&["result"]).cloned();
    to_json(&c.complete_task_as(id, token, result, a).await?)
}

/// `task.fail {taskId|id, claimToken, error?}` →
/// `{status: pending|failed|stale_claim, retryCount, maxRetries, canRetry}`.
pub async fn fail(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    let token = p.str(TOKEN)?;
    let error = match p.opt_value(&["error"]) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    to_json(&c.fail_task_as(id, token, error, a).await?)
}

/// `task.get {taskId|id}` → the task.
pub async fn get(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let id = p.task_id(TASK_ID)?;
    match c.get_task(id) {
        Some(view) => to_json(&view),
        None => Err(RpcError::invalid_params("taskId", format!("no task {id}"))),
    }
}

/// `task.list {status?, assignee?, limit?, after?}` → `{tasks, total, truncated, nextAfter?}`:
/// at most `limit` tasks (default 100, at most 1000) in id order, those after the task id
/// `after` only; `total` counts every match.
pub async fn list(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let status = match p.opt_str(&["status"])? {
        None => None,
        Some("pending") => Some(TaskStatus::Pending),
        Some("claimed") => Some(TaskStatus::Claimed),
        Some("completed") => Some(TaskStatus::Completed),
        Some("failed") => Some(TaskStatus::Failed),
        Some(other) => {
            return Err(RpcError::invalid_params(
                "status",
                format!("must be pending, claimed, completed or failed, got {other:?}"),
            ));
        }
    };
    let after = match p.find(&["after"]) {
        None => None,
        Some(_) => Some(p.task_id(&["after"])?),
    };
    let query = TaskQuery {
        status,
        assignee: p.opt_str(&["assignee", "workerId"])?.map(str::to_string),
        limit: Some(p.list_limit()?),
        after,
    };
    let page = c.list_tasks_page(&query);
    let mut value = json!({
        "tasks": to_json(&page.items)?,
        "total": page.total,
        "truncated": page.truncated,
    });
    if page.truncated
        && let Some(last) = page.items.last()
    {
        value["nextAfter"] = json!(last.id);
    }
    Ok(value)
}
