//! `system.discover`: every method this server dispatches, with a JSON-Schema-like description
//! of its parameters, in ClaudeBench's shape (`{methods: [{name, description, inputSchema,
//! metadata}]}`).
//!
//! The catalogue is one table; unit tests hold it to the dispatcher's method list
//! ([`METHODS`](super::METHODS)) both ways, and check that every schema parses, so a method
//! added to one and not the other fails the build's tests.

use serde_json::{Value, json};

use super::{Params, READ_ONLY_METHODS, RpcError};

/// One method of the catalogue.
pub(crate) struct MethodDoc {
    /// The method name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its parameters as JSON-Schema text (`type`, `properties`, `required`; aliases listed in
    /// `x-aliases`).
    pub input_schema: &'static str,
}

const OBJECT: &str = r#"{"type":"object","properties":{},"required":[]}"#;

/// Every method of the JSON-RPC surface, `events.subscribe` (WebSocket only) and the `chaos.*`
/// methods (served only with fault injection) included.
pub(crate) const CATALOGUE: &[MethodDoc] = &[
    MethodDoc {
        name: "system.register",
        description: "Register an instance (or refresh it while alive) with its roles; answers its epoch and leadership",
        input_schema: r#"{"type":"object","properties":{
            "id":{"type":"string","minLength":1,"maxLength":256,"x-aliases":["instanceId"]},
            "roles":{"type":"array","items":{"type":"string","minLength":1,"maxLength":64},"maxItems":32},
            "metadata":{"type":"object","properties":{"workingDirectory":{"type":"string"}}},
            "ttlMs":{"type":"integer","minimum":1000,"maximum":3600000,"x-aliases":["ttl_ms"]}},
            "required":["id","roles"]}"#,
    },
    MethodDoc {
        name: "system.heartbeat",
        description: "Heartbeat of a registered instance; alive:false (never an error) for an unknown or expired one",
        input_schema: r#"{"type":"object","properties":{
            "instanceId":{"type":"string","minLength":1,"x-aliases":["id"]}},
            "required":["instanceId"]}"#,
    },
    MethodDoc {
        name: "system.unregister",
        description: "Unregister an instance: its tasks go back to pending, its leases are released; idempotent",
        input_schema: r#"{"type":"object","properties":{
            "instanceId":{"type":"string","minLength":1,"x-aliases":["id"]},
            "sessionId":{"type":"string","minLength":1},
            "timestamp":{"type":"number"}},
            "required":["instanceId"]}"#,
    },
    MethodDoc {
        name: "system.check_health",
        description: "Sort registered instances into those heard from within timeout ms and those silent longer (reports only)",
        input_schema: r#"{"type":"object","properties":{
            "timeout":{"type":"integer","minimum":0,"maximum":86400000}},"required":[]}"#,
    },
    MethodDoc {
        name: "system.get_state",
        description: "Instances, tasks and recent events (each at most limit), the leader, the term and task counts",
        input_schema: r#"{"type":"object","properties":{
            "instanceId":{"type":"string","minLength":1,"x-aliases":["id"]},
            "limit":{"type":"integer","minimum":0,"maximum":1000,"default":100},
            "taskLimit":{"type":"integer","minimum":0,"maximum":1000},
            "after":{"type":"string"}},"required":[]}"#,
    },
    MethodDoc {
        name: "system.health",
        description: "Overall status (healthy, degraded, unhealthy) and services (redis, postgres, mcp, store)",
        input_schema: OBJECT,
    },
    MethodDoc {
        name: "system.metrics",
        description: "Calls, latency, memory, tasks and instances measured by this server; per-method figures with detailed",
        input_schema: r#"{"type":"object","properties":{
            "detailed":{"type":"boolean"}},"required":[]}"#,
    },
    MethodDoc {
        name: "system.discover",
        description: "The methods this server dispatches and their parameters",
        input_schema: r#"{"type":"object","properties":{
            "domain":{"type":"string"}},"required":[]}"#,
    },
    MethodDoc {
        name: "task.create",
        description: "Create a pending task",
        input_schema: r#"{"type":"object","properties":{
            "text":{"type":"string"},
            "payload":{},
            "metadata":{"type":"object"},
            "priority":{"type":"integer","minimum":0,"maximum":100,"default":50},
            "maxAttempts":{"type":"integer","minimum":1,"maximum":100,"default":3,"x-aliases":["max_attempts"]},
            "requiresLocks":{"type":"array","items":{"oneOf":[{"type":"string"},{"type":"object","properties":{"key":{"type":"string"},"mode":{"type":"string","enum":["exclusive","shared"]}},"required":["key"]}]},"x-aliases":["requires_locks"]},
            "requestId":{"type":"string","minLength":1,"maxLength":128,"x-aliases":["request_id"]},
            "role":{"type":"string","minLength":1,"maxLength":64}},
            "required":[],"x-oneOfRequired":["text","payload"]}"#,
    },
    MethodDoc {
        name: "task.claim",
        description: "Claim up to maxTasks of the best pending tasks for a live instance; each with a claim token",
        input_schema: r#"{"type":"object","properties":{
            "workerId":{"type":"string","minLength":1,"x-aliases":["instanceId","worker_id"]},
            "maxTasks":{"type":"integer","minimum":1,"maximum":100,"default":1,"x-aliases":["max_tasks"]},
            "role":{"type":"string","minLength":1,"maxLength":64}},
            "required":["workerId"]}"#,
    },
    MethodDoc {
        name: "task.heartbeat",
        description: "Keep a claim (and its leases) alive; stale_claim once it has ended",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id","stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]},
            "workerId":{"type":"string","minLength":1,"x-aliases":["worker_id","instanceId"]},
            "extendLeasesSec":{"type":"integer","minimum":0,"maximum":86400,"default":900,"x-aliases":["extend_leases_sec"]}},
            "required":["taskId"],
            "x-oneOfRequired":["claimToken","workerId"]}"#,
    },
    MethodDoc {
        name: "task.complete",
        description: "Complete a claimed task",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id","stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]},
            "workerId":{"type":"string","minLength":1,"x-aliases":["worker_id","instanceId"]},
            "result":{}},
            "required":["taskId"]}"#,
    },
    MethodDoc {
        name: "task.fail",
        description: "Fail a claimed task: pending again while attempts remain, else failed",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id","stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]},
            "workerId":{"type":"string","minLength":1,"x-aliases":["worker_id","instanceId"]},
            "error":{}},
            "required":["taskId"]}"#,
    },
    MethodDoc {
        name: "task.get",
        description: "One task by id",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id","stepId","step_id"]}},
            "required":["taskId"]}"#,
    },
    MethodDoc {
        name: "task.list",
        description: "A page of tasks, filtered and ordered",
        input_schema: r#"{"type":"object","properties":{
            "status":{"type":"string","enum":["pending","in_progress","completed","failed"]},
            "assignedTo":{"type":"string","x-aliases":["assignee","workerId"]},
            "priority":{"type":"integer","minimum":0,"maximum":100},
            "role":{"type":"string"},
            "limit":{"type":"integer","minimum":0,"maximum":1000,"default":100},
            "offset":{"type":"integer","minimum":0},
            "after":{"type":["string","integer"]},
            "orderBy":{"type":"string","enum":["createdAt","updatedAt","priority","status","assignedTo"]},
            "order":{"type":"string","enum":["asc","desc"]}},
            "required":[]}"#,
    },
    MethodDoc {
        name: "task.update",
        description: "Change a task's text, status, priority or metadata",
        input_schema: r#"{"type":"object","properties":{
            "id":{"type":["string","integer"],"x-aliases":["taskId"]},
            "updates":{"type":"object","properties":{
                "text":{"type":"string"},
                "status":{"type":"string","enum":["pending","in_progress","completed","failed"]},
                "priority":{"type":"integer","minimum":0,"maximum":100},
                "metadata":{"type":"object"}},"required":[]}},
            "required":["id","updates"]}"#,
    },
    MethodDoc {
        name: "task.assign",
        description: "Assign a pending task to an instance",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id"]},
            "instanceId":{"type":"string","minLength":1,"x-aliases":["workerId"]}},
            "required":["taskId","instanceId"]}"#,
    },
    MethodDoc {
        name: "task.unassign",
        description: "Take a task back from its assignee: pending again",
        input_schema: r#"{"type":"object","properties":{
            "taskId":{"type":["string","integer"],"x-aliases":["id"]}},
            "required":["taskId"]}"#,
    },
    MethodDoc {
        name: "task.delete",
        description: "Delete a task",
        input_schema: r#"{"type":"object","properties":{
            "id":{"type":["string","integer"],"x-aliases":["taskId"]}},
            "required":["id"]}"#,
    },
    MethodDoc {
        name: "lease.acquire",
        description: "Acquire a lease on a key for a holder (or for a claim); answers its fencing token",
        input_schema: r#"{"type":"object","properties":{
            "key":{"type":"string"},
            "holder":{"type":"string","x-aliases":["instanceId"]},
            "taskId":{"type":["string","integer"],"x-aliases":["stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]},
            "mode":{"type":"string","enum":["exclusive","shared"],"default":"exclusive"},
            "ttlSec":{"type":"integer","minimum":0,"x-aliases":["ttl_sec"]}},
            "required":["key"],"x-oneOfRequired":["holder","taskId"]}"#,
    },
    MethodDoc {
        name: "lease.renew",
        description: "Renew a held lease",
        input_schema: r#"{"type":"object","properties":{
            "key":{"type":"string"},
            "holder":{"type":"string","x-aliases":["instanceId"]},
            "taskId":{"type":["string","integer"],"x-aliases":["stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]},
            "ttlSec":{"type":"integer","minimum":0,"x-aliases":["ttl_sec"]}},
            "required":["key"],"x-oneOfRequired":["holder","taskId"]}"#,
    },
    MethodDoc {
        name: "lease.release",
        description: "Release a held lease",
        input_schema: r#"{"type":"object","properties":{
            "key":{"type":"string"},
            "holder":{"type":"string","x-aliases":["instanceId"]},
            "taskId":{"type":["string","integer"],"x-aliases":["stepId","step_id"]},
            "claimToken":{"type":"string","x-aliases":["claim_token"]}},
            "required":["key"],"x-oneOfRequired":["holder","taskId"]}"#,
    },
    MethodDoc {
        name: "lease.list",
        description: "A page of leases, ordered by key then fencing token",
        input_schema: r#"{"type":"object","properties":{
            "prefix":{"type":"string"},
            "limit":{"type":"integer","minimum":0,"maximum":1000,"default":100},
            "after":{"type":"string"}},"required":[]}"#,
    },
    MethodDoc {
        name: "events.subscribe",
        description: "WebSocket only: push events ({method: \"event\", params}) of the given types from now on",
        input_schema: r#"{"type":"object","properties":{
            "types":{"type":"array","items":{"type":"string"}}},"required":[]}"#,
    },
    MethodDoc {
        name: "chaos.kill",
        description: "Fault injection (operator, --chaos): kill or panic an actor",
        input_schema: r#"{"type":"object","properties":{
            "actor":{"type":"string","enum":["instance","leader","persister"]},
            "how":{"type":"string","enum":["kill","panic"],"default":"kill"},
            "ids":{"type":"array","items":{"type":"string"}}},
            "required":["actor"]}"#,
    },
    MethodDoc {
        name: "chaos.status",
        description: "Fault injection (operator, --chaos): the actors' state",
        input_schema: OBJECT,
    },
    MethodDoc {
        name: "chaos.verify_store",
        description: "Fault injection (operator, --chaos): compare the store with memory",
        input_schema: OBJECT,
    },
];

/// `system.discover {domain?}` → `{methods: [{name, description, inputSchema, metadata}]}`:
/// the catalogue, the `chaos.*` methods only where they are served, those whose name starts
/// with `domain.` only when `domain` is given.
pub(crate) fn discover(p: &Params, chaos_served: bool) -> Result<Value, RpcError> {
    let domain = p.opt_str(&["domain"])?;
    let methods: Vec<Value> = CATALOGUE
        .iter()
        .filter(|m| chaos_served || !m.name.starts_with("chaos."))
        .filter(|m| {
            domain.is_none_or(|d| {
                m.name
                    .strip_prefix(d)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
        })
        .map(|m| {
            let schema: Value = serde_json::from_str(m.input_schema)
                .map_err(|e| RpcError::new(super::code::INTERNAL, e.to_string()))?;
            let mut metadata = json!({"readOnly": READ_ONLY_METHODS.contains(&m.name)});
            if m.name == "events.subscribe" {
                metadata["transport"] = json!("ws");
            }
            Ok(json!({
                "name": m.name,
                "description": m.description,
                "inputSchema": schema,
                "metadata": metadata,
            }))
        })
        .collect::<Result<_, RpcError>>()?;
    Ok(json!({"methods": methods}))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The catalogue and the dispatcher's method list name the same methods (plus
    /// `events.subscribe`, served by the WebSocket transport).
    #[test]
    fn the_catalogue_lists_exactly_the_dispatched_methods() {
        let listed: BTreeSet<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        let dispatched: BTreeSet<&str> = super::super::METHODS
            .iter()
            .copied()
            .chain(["events.subscribe"])
            .collect();
        assert_eq!(listed, dispatched);
        assert_eq!(listed.len(), CATALOGUE.len(), "a method is listed twice");
    }

    /// Every schema is a JSON object schema whose required names are properties.
    #[test]
    fn every_schema_parses_and_requires_only_its_properties() {
        for m in CATALOGUE {
            let schema: Value =
                serde_json::from_str(m.input_schema).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            assert_eq!(schema["type"], "object", "{}", m.name);
            let properties = schema["properties"].as_object().unwrap();
            for required in schema["required"].as_array().unwrap() {
                let name = required.as_str().unwrap();
                assert!(properties.contains_key(name), "{}: {name}", m.name);
            }
            assert!(!m.description.is_empty(), "{}", m.name);
        }
    }
}
