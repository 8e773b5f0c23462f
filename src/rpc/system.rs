//! `system.*`: ClaudeBench's instance methods, with the same names and result shapes.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Params, RpcError, to_json};
use crate::coordinator::Coordinator;
use crate::model::{Authority, RegisterRequest, StateQuery};

const ID: &[&str] = &["id", "instanceId"];
const INSTANCE_ID: &[&str] = &["instanceId", "id"];

/// `system.register {id|instanceId, roles, metadata?, ttlMs?}` →
/// `{registered, epoch, isLeader, leader, term, refreshed}`.
pub async fn register(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.str(ID)?;
    let mut request = RegisterRequest::new(id);
    if let Some(roles) = p.opt_strings(&["roles"])? {
        request = request.roles(roles);
    }
    if let Some(metadata) = p.opt_value(&["metadata"]) {
        request = request.metadata(metadata.clone());
    }
    if let Some(ttl) = p.opt_u64(&["ttlMs", "ttl_ms"], u64::from(u32::MAX))? {
        request = request.ttl(Duration::from_millis(ttl));
    }
    let registration = c.register_as(request, a).await?;
    to_json(&registration)
}

/// `system.heartbeat {instanceId}` → `{alive, isLeader, term}`; never an error for an unknown
/// instance.
pub async fn heartbeat(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.str(INSTANCE_ID)?;
    to_json(&c.heartbeat_as(id, a).await?)
}

/// `system.unregister {instanceId}` → `{unregistered, tasksReassigned}`.
pub async fn unregister(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.str(INSTANCE_ID)?;
    to_json(&c.unregister_as(id, a).await?)
}

/// `system.check_health {timeout?}` (ms) → `{healthy, failed, reassigned}`.
pub async fn check_health(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let timeout = p
        .opt_u64(&["timeout"], 24 * 3600 * 1000)?
        .map(Duration::from_millis);
    let report = c.check_health(timeout);
    let mut value = to_json(&report)?;
    // Vigil takes tasks back when an instance expires, not when a health check is run; the
    // field is kept for ClaudeBench clients and is always empty.
    value["reassigned"] = json!({});
    Ok(value)
}

/// `system.get_state {instanceId?, limit?, after?}` → `{instances, instanceCount, truncated,
/// nextAfter?, leader, term, leadership, tasks, recentEvents}`: at most `limit` instances
/// (default 100, at most 1000) ordered by id, those after the id `after` only, and at most
/// `limit` recent events. `tasks` are counts by status.
pub async fn get_state(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let query = StateQuery {
        instance_id: p.opt_str(INSTANCE_ID)?.map(str::to_string),
        limit: Some(p.list_limit()?),
        after: p.opt_str(&["after"])?.map(str::to_string),
    };
    let state = c.state_with(&query);
    let tasks = c.task_counts();
    let mut value = json!({
        "instances": to_json(&state.instances)?,
        "instanceCount": state.instance_count,
        "truncated": state.truncated,
        "leader": state.leader.leader,
        "term": state.leader.term,
        "leadership": to_json(&state.leader)?,
        "tasks": tasks,
        "recentEvents": to_json(&state.recent_events)?,
    });
    if state.truncated
        && let Some(last) = state.instances.last()
    {
        value["nextAfter"] = json!(last.id);
    }
    Ok(value)
}

/// `system.health` → `{status, services}`: `degraded` while the store is failing or its
/// circuit is open (heartbeats are still answered from memory; writes fail with −32001).
pub async fn health(c: &Coordinator, _p: Params) -> Result<Value, RpcError> {
    let store = c.store_status();
    let status = if store.state == "ok" {
        "healthy"
    } else {
        "degraded"
    };
    Ok(json!({
        "status": status,
        "services": {
            "store": store.kind,
            "storeState": store.state,
            "pendingWrites": store.pending_entities,
            "pendingEvents": store.pending_events,
            "coordinator": "up",
            "instances": c.instance_count(),
        }
    }))
}
