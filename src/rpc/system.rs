//! `system.*`: ClaudeBench's instance methods, with the same names, input rules and result
//! shapes (apps/server/src/schemas/system.schema.ts), and Vigil's extra fields beside them.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::stats::{CallStats, resident_bytes};
use super::{Params, RpcError, to_json};
use crate::coordinator::Coordinator;
use crate::model::{Authority, InstanceStatus, InstanceView, RegisterRequest, StateQuery};
use crate::work::task::TaskQuery;

const ID: &[&str] = &["id", "instanceId"];
const INSTANCE_ID: &[&str] = &["instanceId", "id"];

/// `system.register {id|instanceId, roles, metadata?, ttlMs?}` →
/// `{registered, epoch, isLeader, leader, term, refreshed}`. As ClaudeBench: `id` a string of
/// at least one character, `roles` a required array of strings, `metadata.workingDirectory` a
/// string when present.
pub async fn register(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    // The coordinator's rule (1–256 characters, no whitespace) covers ClaudeBench's `min(1)`.
    let id = p.str(ID)?;
    let roles = p.strings(&["roles"])?;
    let mut request = RegisterRequest::new(id).roles(roles);
    if let Some(metadata) = p.opt_value(&["metadata"]) {
        if let Some(dir) = metadata.get("workingDirectory")
            && !dir.is_string()
            && !dir.is_null()
        {
            return Err(RpcError::invalid_params(
                "metadata.workingDirectory",
                "must be a string",
            ));
        }
        request = request.metadata(metadata.clone());
    }
    if let Some(ttl) = p.opt_u64(&["ttlMs", "ttl_ms"], u64::from(u32::MAX))? {
        request = request.ttl(Duration::from_millis(ttl));
    }
    let registration = c.register_as(request, a).await?;
    to_json(&registration)
}

/// `system.heartbeat {instanceId}` → `{alive, isLeader, term}`; never an error for an unknown
/// instance, −32602 for an empty id.
pub async fn heartbeat(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.non_empty_str(INSTANCE_ID)?;
    to_json(&c.heartbeat_as(id, a).await?)
}

/// `system.unregister {instanceId, sessionId?, timestamp?}` → `{unregistered: true,
/// tasksReassigned, wasRegistered}`. Idempotent, as ClaudeBench: an unknown, expired or already
/// unregistered id answers `unregistered: true` with `tasksReassigned: 0` (`wasRegistered`
/// tells the two apart). Another principal's live instance is still −32002.
pub async fn unregister(c: &Coordinator, p: Params, a: &Authority) -> Result<Value, RpcError> {
    let id = p.non_empty_str(INSTANCE_ID)?;
    // ClaudeBench requires these two; Vigil takes them as optional but not as nonsense.
    p.opt_non_empty_str(&["sessionId"])?;
    p.opt_number(&["timestamp"])?;
    let unregistration = c.unregister_as(id, a).await?;
    Ok(json!({
        "unregistered": true,
        "tasksReassigned": unregistration.tasks_reassigned,
        "wasRegistered": unregistration.unregistered,
    }))
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

/// ClaudeBench's instance status for Vigil's liveness and whether the instance holds claims:
/// `OFFLINE` once expired or unregistered, `IDLE` while suspect (silent past its TTL minus the
/// grace: ClaudeBench's web app shows a silent instance as IDLE before OFFLINE), `BUSY` while
/// active and holding a claim, `ACTIVE` otherwise.
pub(crate) fn claudebench_status(status: InstanceStatus, claims: usize) -> &'static str {
    match status {
        InstanceStatus::Expired | InstanceStatus::Unregistered => "OFFLINE",
        InstanceStatus::Suspect => "IDLE",
        InstanceStatus::Active if claims > 0 => "BUSY",
        InstanceStatus::Active => "ACTIVE",
    }
}

/// ClaudeBench's instance `health` for Vigil's liveness.
fn claudebench_health(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Active => "healthy",
        InstanceStatus::Suspect => "degraded",
        InstanceStatus::Expired | InstanceStatus::Unregistered => "unhealthy",
    }
}

/// One instance as `system.get_state` shows it: Vigil's view, with ClaudeBench's `status`,
/// `health`, `lastSeen` (ms, a number) and `lastHeartbeat` (ISO 8601), Vigil's own status
/// under `state`, and `taskCount` (claims held).
fn instance_json(view: &InstanceView, claims: usize) -> Result<Value, RpcError> {
    let mut value = to_json(view)?;
    if let Value::Object(map) = &mut value {
        map.insert("state".into(), json!(view.status.as_str()));
        map.insert(
            "status".into(),
            json!(claudebench_status(view.status, claims)),
        );
        map.insert("health".into(), json!(claudebench_health(view.status)));
        map.insert("lastSeen".into(), json!(view.last_seen_ms));
        map.insert(
            "lastHeartbeat".into(),
            json!(crate::work::task::iso_ms(view.last_seen_ms)),
        );
        map.insert("taskCount".into(), json!(claims));
    }
    Ok(value)
}

/// `system.get_state {instanceId?, limit?, after?}` → `{instances, tasks, recentEvents,
/// instanceCount, truncated, nextAfter?, leader, term, leadership, taskCounts, nowMs,
/// graceMs}`.
///
/// As ClaudeBench, `instances`, `tasks` and `recentEvents` are arrays: at most `limit` each
/// (default 100, at most 1000). Instances are ordered by id (those after the id `after` only);
/// tasks in id order (ClaudeBench's order is Redis's `KEYS` order, which is none), serialized
/// as `task.list` shows them; recent events oldest first. `taskCounts` counts tasks by status.
pub async fn get_state(c: &Coordinator, p: Params) -> Result<Value, RpcError> {
    let limit = p.list_limit()?;
    let query = StateQuery {
        instance_id: p.opt_non_empty_str(INSTANCE_ID)?.map(str::to_string),
        limit: Some(limit),
        after: p.opt_str(&["after"])?.map(str::to_string),
    };
    let state = c.state_with(&query);
    let held: Vec<_> = state
        .instances
        .iter()
        .map(|i| (i.id.clone(), i.epoch))
        .collect();
    let claims = c.claims_held(&held);
    let instances = state
        .instances
        .iter()
        .zip(claims)
        .map(|(view, claims)| instance_json(view, claims))
        .collect::<Result<Vec<_>, _>>()?;
    // `taskLimit` (default: `limit`) bounds the tasks alone: 0 leaves them out, for callers
    // that want the instances (the MCP `cluster_state` tool).
    let task_limit = p
        .opt_u64(&["taskLimit"], crate::model::MAX_LIST_LIMIT as u64)?
        .map_or(limit, |n| n as usize);
    let tasks = if task_limit == 0 {
        Vec::new()
    } else {
        c.list_tasks_page(&TaskQuery {
            limit: Some(task_limit),
            ..TaskQuery::default()
        })
        .items
    };
    let mut value = json!({
        "instances": instances,
        "tasks": to_json(&tasks)?,
        "recentEvents": to_json(&state.recent_events)?,
        "instanceCount": state.instance_count,
        "truncated": state.truncated,
        "leader": state.leader.leader,
        "term": state.leader.term,
        "leadership": to_json(&state.leader)?,
        "taskCounts": task_counts(c),
        // For a display of time left (the status page): the server's wall clock when it
        // answered, and the configured grace (an instance turns suspect at its TTL minus the
        // smaller of the grace and half its TTL).
        "nowMs": wall_now_ms(),
        "graceMs": c.config().grace.as_millis() as u64,
    });
    if state.truncated
        && let Some(last) = state.instances.last()
    {
        value["nextAfter"] = json!(last.id);
    }
    Ok(value)
}

/// The wall clock in ms since the Unix epoch (0 on a clock set before 1970).
fn wall_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Task counts by status under the wire's status names (`in_progress` for a claimed task).
fn task_counts(c: &Coordinator) -> Map<String, Value> {
    c.task_counts()
        .into_iter()
        .map(|(status, n)| {
            let status = if status == "claimed" {
                "in_progress"
            } else {
                status
            };
            (status.to_string(), json!(n))
        })
        .collect()
}

/// What `system.health` tells about the server itself.
#[derive(Debug, Clone, Copy)]
pub struct ServerFacts {
    /// Whether `POST /mcp` is served.
    pub mcp: bool,
    /// The address the server is bound to, if it is a `Server` (not a mounted router).
    pub listen: Option<std::net::SocketAddr>,
    /// How long the server has been up.
    pub uptime: Duration,
}

/// `system.health` → `{status, services: {redis, postgres, mcp, store, storeState,
/// pendingWrites, pendingEvents, coordinator, instances}, instanceStates, version, uptimeMs,
/// listen}`.
///
/// `services` as ClaudeBench's clients read them: `redis` true only while a Redis store is
/// configured and its circuit is closed without failures, `postgres` always false (Vigil has
/// none), `mcp` whether this server mounts the MCP endpoint. `status` follows ClaudeBench's
/// rule over instances — `healthy` when every registered instance is active, `degraded` when
/// at least half are alive (active or suspect), `unhealthy` otherwise — with two changes: no
/// instances at all is `healthy` (the coordinator is fine; ClaudeBench says `degraded`), and a
/// store that is failing or whose circuit is open makes it at least `degraded` (heartbeats are
/// still answered from memory; writes fail with −32001).
///
/// Vigil's own fields beside ClaudeBench's: `version` (the crate's), `uptimeMs` (since the
/// server started), `listen` (the bound address, `null` for a router mounted elsewhere).
pub async fn health(c: &Coordinator, _p: Params, server: &ServerFacts) -> Result<Value, RpcError> {
    let store = c.store_status();
    let counts = c.instance_counts();
    let count = |s: InstanceStatus| {
        counts
            .iter()
            .find(|(status, _)| *status == s)
            .map_or(0, |(_, n)| *n)
    };
    let active = count(InstanceStatus::Active);
    let suspect = count(InstanceStatus::Suspect);
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let by_instances = if active == total {
        0
    } else if (active + suspect) * 2 >= total {
        1
    } else {
        2
    };
    let by_store = usize::from(store.state != "ok");
    let status = ["healthy", "degraded", "unhealthy"][by_instances.max(by_store)];
    Ok(json!({
        "status": status,
        "services": {
            "redis": store.kind == "redis" && store.state == "ok",
            "postgres": false,
            "mcp": server.mcp,
            "store": store.kind,
            "storeState": store.state,
            "pendingWrites": store.pending_entities,
            "pendingEvents": store.pending_events,
            "coordinator": "up",
            "instances": c.instance_count(),
        },
        "instanceStates": counts
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), json!(n)))
            .collect::<Map<String, Value>>(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeMs": server.uptime.as_millis() as u64,
        "listen": server.listen.map(|a| a.to_string()),
    }))
}

/// `system.metrics {detailed?}` → ClaudeBench's `systemMetricsOutput`, filled from what this
/// server measures (its dispatcher's call counters since it started, the coordinator's counts,
/// the process's resident memory). What Vigil does not measure is left out, never made up:
/// `circuitBreaker` (the store breaker keeps no success/trip totals), `cache` (no cache),
/// `counters`, `mcpCalls`, `systemHealthCheck`, `scaling.loadBalance` / `totalLoad`, and
/// per-handler `rateLimitHits`, `cacheHitRate`, `lastCalled`.
pub async fn metrics(c: &Coordinator, p: Params, stats: &CallStats) -> Result<Value, RpcError> {
    let detailed = p.opt_bool(&["detailed"])?.unwrap_or(false);
    let figures = stats.figures();
    let calls: u64 = figures.iter().map(|f| f.calls).sum();
    let total_time: Duration = figures.iter().map(|f| f.total).sum();
    let average_ms = if calls == 0 {
        0.0
    } else {
        total_time.as_secs_f64() * 1000.0 / calls as f64
    };
    let uptime = stats.uptime();
    let throughput = calls as f64 / uptime.as_secs_f64().max(1e-3);
    let counts = c.task_counts();
    let tasks = |s: &str| counts.get(s).copied().unwrap_or(0);
    let mut value = json!({
        "eventsProcessed": calls,
        "tasksCompleted": tasks("completed"),
        "averageLatency": average_ms,
        "uptimeMs": uptime.as_millis() as u64,
    });
    if let Some(rss) = resident_bytes() {
        // ClaudeBench reports megabytes (of its heap); Vigil its resident set, in MB too.
        value["memoryUsage"] = json!((rss as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0);
        value["memoryUsageBytes"] = json!(rss);
    }
    if !detailed {
        return Ok(value);
    }
    let pending = tasks("pending");
    let active = c
        .instance_counts()
        .iter()
        .find(|(s, _)| *s == InstanceStatus::Active)
        .map_or(0, |(_, n)| *n);
    let system_success: u64 = figures
        .iter()
        .filter(|f| f.method.starts_with("system."))
        .map(|f| f.calls - f.errors)
        .sum();
    let store_circuit = match c.store_status().state {
        "open" => "OPEN",
        "half-open" => "HALF_OPEN",
        _ => "CLOSED",
    };
    let handlers: Map<String, Value> = figures
        .iter()
        .map(|f| {
            // No per-method breakers: the store's breaker refuses the methods that write.
            let circuit = if super::READ_ONLY_METHODS.contains(&f.method) {
                "CLOSED"
            } else {
                store_circuit
            };
            let entry = json!({
                "totalCalls": f.calls,
                "successCount": f.calls - f.errors,
                "errorCount": f.errors,
                "avgResponseTime": f.average_ms(),
                "circuitState": circuit,
            });
            (f.method.to_string(), entry)
        })
        .collect();
    value["queue"] = json!({"depth": pending, "pending": pending, "throughput": throughput});
    value["global"] = json!({
        "taskSuccess": tasks("completed"),
        "taskFailure": tasks("failed"),
        "systemSuccess": system_success,
        "totalEvents": calls,
        "totalTasks": counts.values().sum::<usize>(),
        "avgLatency": average_ms,
        "throughput": throughput,
    });
    value["scaling"] = json!({"instanceCount": c.instance_count()});
    value["current"] = json!({
        "eventsTotal": calls,
        "queueDepth": pending,
        "instancesActive": active,
        "tasksPending": pending,
        "tasksCompleted": tasks("completed"),
        "metricsStartTime": stats.started_wall_ms(),
    });
    value["handlers"] = Value::Object(handlers);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_match_javascript() {
        use crate::work::task::iso_ms;
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        // new Date(1700000000123).toISOString()
        assert_eq!(iso_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // A leap day: new Date(Date.UTC(2024, 1, 29, 23, 59, 59, 999)).getTime()
        assert_eq!(iso_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn status_names_follow_claudebench() {
        assert_eq!(claudebench_status(InstanceStatus::Active, 0), "ACTIVE");
        assert_eq!(claudebench_status(InstanceStatus::Active, 2), "BUSY");
        assert_eq!(claudebench_status(InstanceStatus::Suspect, 2), "IDLE");
        assert_eq!(claudebench_status(InstanceStatus::Expired, 0), "OFFLINE");
        assert_eq!(
            claudebench_status(InstanceStatus::Unregistered, 0),
            "OFFLINE"
        );
    }
}
