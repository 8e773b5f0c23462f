//! ClaudeBench's task contract over the real server (issue 15, points 2–4): the task shape in
//! every answer, `task.list`'s filters and order, `task.update` / `assign` / `unassign` /
//! `delete`, and completing without a claim token — only as the live assignee or an operator.

use serde_json::{Value, json};
use vigil::Config;
use vigil::server::ServerConfig;

const OPS: &str = "operator-token-0123456789";
const ALICE: &str = "alice-token-0123456789ab";

/// A JSON-RPC call with an optional bearer token: the whole answer.
async fn call(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// The result of a call that must succeed.
async fn ok(url: &str, method: &str, params: Value) -> Value {
    let answer = call(url, None, method, params).await;
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// The error of a call that must fail.
async fn refused(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let answer = call(url, token, method, params).await;
    assert!(
        answer.get("result").is_none(),
        "{method} must fail: {answer}"
    );
    answer["error"].clone()
}

fn is_iso(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 24 && s.ends_with('Z') && humantime::parse_rfc3339(s).is_ok())
}

/// Every answer that carries a task carries ClaudeBench's fields, with Vigil's beside them.
#[tokio::test]
async fn every_answer_carries_claudebench_task_fields() {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    ok(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    let created = ok(
        &url,
        "task.create",
        json!({"text": "review PR 12", "priority": 70, "metadata": {"repo": "vigil"}}),
    )
    .await;
    assert_eq!(created["text"], "review PR 12");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["priority"], 70);
    assert_eq!(created["metadata"], json!({"repo": "vigil"}));
    assert_eq!(created["assignedTo"], Value::Null);
    assert!(is_iso(&created["createdAt"]), "{created}");
    assert!(is_iso(&created["updatedAt"]), "{created}");
    assert_eq!(created["completedAt"], Value::Null);
    assert!(
        created["createdAtMs"].is_u64() && created["attempts"] == 0,
        "{created}"
    );
    assert_eq!(created["payload"]["text"], "review PR 12");

    let claim = ok(&url, "task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(claim["task"]["status"], "in_progress");
    assert_eq!(claim["task"]["assignedTo"], "w1");
    let listed = ok(&url, "task.list", json!({"status": "in_progress"})).await;
    assert_eq!(listed["tasks"][0]["assignedTo"], "w1");
    assert_eq!(listed["totalCount"], 1);
    let token = claim["claimToken"].as_str().unwrap();
    let done = ok(
        &url,
        "task.complete",
        json!({"id": created["id"], "claimToken": token, "result": {"ok": true}}),
    )
    .await;
    assert_eq!(
        (done["status"].clone(), done["id"].clone()),
        (json!("completed"), created["id"].clone())
    );
    assert!(is_iso(&done["completedAt"]), "{done}");
    let task = ok(&url, "task.get", json!({"id": created["id"]})).await;
    assert!(is_iso(&task["completedAt"]), "{task}");
    assert_eq!(task["result"], json!({"ok": true}));
    // A task created with a payload and no text still has a text to show.
    let raw = ok(&url, "task.create", json!({"payload": {"n": 1}})).await;
    assert_eq!(raw["text"], r#"{"n":1}"#);
    // ClaudeBench's limits on text.
    let e = refused(&url, None, "task.create", json!({"text": ""})).await;
    assert_eq!(
        (e["code"].clone(), e["data"]["field"].clone()),
        (json!(-32602), json!("text"))
    );
    let e = refused(&url, None, "task.create", json!({"text": "a".repeat(501)})).await;
    assert_eq!(e["data"]["field"], "text");
}

/// `task.list`: ClaudeBench's filters, order, offset and counts; an unknown filter is an error.
#[tokio::test]
async fn task_list_filters_orders_and_pages_as_claudebench() {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    ok(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    for (text, priority) in [("a", 10), ("b", 90), ("c", 50), ("d", 90)] {
        ok(
            &url,
            "task.create",
            json!({"text": text, "priority": priority}),
        )
        .await;
    }
    ok(&url, "task.claim", json!({"workerId": "w1"})).await; // b: highest priority, oldest
    let texts = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap().to_string())
            .collect()
    };
    // Default: newest first.
    let all = ok(&url, "task.list", json!({})).await;
    assert_eq!(texts(&all), ["d", "c", "b", "a"]);
    assert_eq!(
        (all["totalCount"].clone(), all["hasMore"].clone()),
        (json!(4), json!(false))
    );
    let page = ok(&url, "task.list", json!({"limit": 2, "offset": 1})).await;
    assert_eq!(texts(&page), ["c", "b"]);
    assert_eq!(
        (page["totalCount"].clone(), page["hasMore"].clone()),
        (json!(4), json!(true))
    );
    let by_priority = ok(
        &url,
        "task.list",
        json!({"orderBy": "priority", "order": "asc"}),
    )
    .await;
    assert_eq!(texts(&by_priority), ["a", "c", "b", "d"]);
    let mine = ok(&url, "task.list", json!({"assignedTo": "w1"})).await;
    assert_eq!(texts(&mine), ["b"]);
    let mine = ok(&url, "task.list", json!({"assignee": "w1"})).await;
    assert_eq!(texts(&mine), ["b"], "Vigil's own name still works");
    let pending90 = ok(
        &url,
        "task.list",
        json!({"status": "pending", "priority": 90}),
    )
    .await;
    assert_eq!(texts(&pending90), ["d"]);
    let claimed = ok(&url, "task.list", json!({"status": "claimed"})).await;
    assert_eq!(texts(&claimed), ["b"], "the old name is still read");
    // ClaudeBench clients' extras are fine; a filter Vigil does not know is refused.
    ok(&url, "task.list", json!({"sessionId": "s", "timestamp": 1})).await;
    for (params, field) in [
        (json!({"assigned_to": "w1"}), "assigned_to"),
        (json!({"metadata": {"board": "web"}}), "metadata"),
        (json!({"status": "INVALID"}), "status"),
        (json!({"orderBy": "text"}), "orderBy"),
        (json!({"order": "up"}), "order"),
        (json!({"after": "t-1", "order": "desc"}), "after"),
        (json!({"limit": 1001}), "limit"),
    ] {
        let e = refused(&url, None, "task.list", params.clone()).await;
        assert_eq!(
            (e["code"].clone(), e["data"]["field"].clone()),
            (json!(-32602), json!(field)),
            "{params}"
        );
    }
}

/// `task.update`: text, priority, metadata on any task; status through the state machine.
#[tokio::test]
async fn task_update_edits_and_moves_tasks_through_the_state_machine() {
    let (url, c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    ok(
        &url,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    let t = ok(
        &url,
        "task.create",
        json!({"text": "old", "priority": 85, "metadata": {"a": 1}}),
    )
    .await;
    let id = t["id"].clone();
    let updated = ok(
        &url,
        "task.update",
        json!({"id": id, "updates": {"text": "new", "priority": 20, "metadata": {"b": 2}}}),
    )
    .await;
    assert_eq!(
        (
            updated["text"].clone(),
            updated["priority"].clone(),
            updated["metadata"].clone()
        ),
        (json!("new"), json!(20), json!({"a": 1, "b": 2}))
    );
    assert!(updated["updatedAtMs"].as_u64() >= t["updatedAtMs"].as_u64());
    // Partial updates keep the rest; an empty update is fine.
    let same = ok(&url, "task.update", json!({"id": id, "updates": {}})).await;
    assert_eq!(
        (same["text"].clone(), same["priority"].clone()),
        (json!("new"), json!(20))
    );
    // in_progress needs an assignee to claim it for.
    let e = refused(
        &url,
        None,
        "task.update",
        json!({"id": id, "updates": {"status": "in_progress"}}),
    )
    .await;
    assert_eq!(e["data"]["field"], "updates.status");
    ok(
        &url,
        "task.assign",
        json!({"taskId": id, "instanceId": "w1"}),
    )
    .await;
    let moved = ok(
        &url,
        "task.update",
        json!({"id": id, "updates": {"status": "in_progress"}}),
    )
    .await;
    assert_eq!(
        (moved["status"].clone(), moved["assignedTo"].clone()),
        (json!("in_progress"), json!("w1"))
    );
    // Nobody holds that claim's token: its live holder keeps it alive without one.
    let beat = ok(
        &url,
        "task.heartbeat",
        json!({"taskId": id, "workerId": "w1"}),
    )
    .await;
    assert_eq!(beat["status"], "ok");
    ok(
        &url,
        "system.register",
        json!({"id": "w9", "roles": ["worker"]}),
    )
    .await;
    let beat = ok(
        &url,
        "task.heartbeat",
        json!({"taskId": id, "workerId": "w9"}),
    )
    .await;
    assert_eq!(beat["status"], "stale_claim", "another instance");
    let e = refused(&url, None, "task.heartbeat", json!({"taskId": id})).await;
    assert_eq!(e["data"]["field"], "claimToken");
    // completed by an operator: recorded as such.
    let done = ok(
        &url,
        "task.update",
        json!({"id": id, "updates": {"status": "completed"}}),
    )
    .await;
    assert_eq!(
        (done["status"].clone(), done["finishedBy"].clone()),
        (json!("completed"), json!("operator"))
    );
    let e = refused(
        &url,
        None,
        "task.update",
        json!({"id": id, "updates": {"status": "failed"}}),
    )
    .await;
    assert_eq!(
        e["data"]["field"], "updates.status",
        "a finished task is reopened first"
    );
    // Reopen: pending again, with fresh attempts, claimable.
    let reopened = ok(
        &url,
        "task.update",
        json!({"id": id, "updates": {"status": "pending"}}),
    )
    .await;
    assert_eq!(
        (reopened["status"].clone(), reopened["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    let claim = ok(&url, "task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(claim["taskId"], id);
    // Setting a claimed task pending takes the claim back: its token is stale.
    let token = claim["claimToken"].as_str().unwrap().to_string();
    ok(
        &url,
        "task.update",
        json!({"id": id, "updates": {"status": "pending"}}),
    )
    .await;
    let beat = ok(
        &url,
        "task.heartbeat",
        json!({"taskId": id, "claimToken": token}),
    )
    .await;
    assert_eq!(beat["status"], "stale_claim");
    assert_eq!(
        c.get_task(id.as_str().unwrap().parse().unwrap())
            .unwrap()
            .attempts,
        0,
        "no attempt counted"
    );
    // Bad input, as ClaudeBench's schema refuses it.
    for (params, field) in [
        (json!({"updates": {"text": "x"}}), "id"),
        (json!({"id": "", "updates": {"text": "x"}}), "id"),
        (json!({"id": id}), "updates"),
        (
            json!({"id": id, "updates": {"text": "a".repeat(501)}}),
            "updates.text",
        ),
        (
            json!({"id": id, "updates": {"status": "INVALID"}}),
            "updates.status",
        ),
        (
            json!({"id": id, "updates": {"priority": -1}}),
            "updates.priority",
        ),
        (
            json!({"id": id, "updates": {"priority": 101}}),
            "updates.priority",
        ),
        (
            json!({"id": id, "updates": {"colour": "red"}}),
            "updates.colour",
        ),
        (json!({"id": "t-999", "updates": {"text": "x"}}), "id"),
    ] {
        let e = refused(&url, None, "task.update", params.clone()).await;
        assert_eq!(
            (e["code"].clone(), e["data"]["field"].clone()),
            (json!(-32602), json!(field)),
            "{params}"
        );
    }
}

/// `task.assign` pushes a pending task to a live instance, which alone claims it (first);
/// `task.unassign` gives it back; `task.delete` removes a task and ends its claim.
#[tokio::test]
async fn assign_unassign_and_delete() {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    for w in ["w1", "w2"] {
        ok(
            &url,
            "system.register",
            json!({"id": w, "roles": ["worker"]}),
        )
        .await;
    }
    let first = ok(
        &url,
        "task.create",
        json!({"text": "first", "priority": 90}),
    )
    .await;
    let second = ok(
        &url,
        "task.create",
        json!({"text": "second", "priority": 10}),
    )
    .await;
    let assigned = ok(
        &url,
        "task.assign",
        json!({"taskId": first["id"], "instanceId": "w2"}),
    )
    .await;
    assert_eq!(assigned["taskId"], first["id"]);
    assert_eq!(assigned["instanceId"], "w2");
    assert!(is_iso(&assigned["assignedAt"]), "{assigned}");
    let task = ok(&url, "task.get", json!({"id": first["id"]})).await;
    assert_eq!(
        (task["status"].clone(), task["assignedTo"].clone()),
        (json!("pending"), json!("w2"))
    );
    // Double assignment to another instance is refused; to the same one changes nothing.
    let e = refused(
        &url,
        None,
        "task.assign",
        json!({"taskId": first["id"], "instanceId": "w1"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "taskId");
    ok(
        &url,
        "task.assign",
        json!({"taskId": first["id"], "instanceId": "w2"}),
    )
    .await;
    // w1 cannot take it, though it is the best pending task; w2's claim takes it first.
    let w1 = ok(&url, "task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(w1["taskId"], second["id"]);
    let w2 = ok(&url, "task.claim", json!({"workerId": "w2"})).await;
    assert_eq!(w2["taskId"], first["id"]);
    // Unknown instance or task.
    let third = ok(&url, "task.create", json!({"text": "third"})).await;
    let e = refused(
        &url,
        None,
        "task.assign",
        json!({"taskId": third["id"], "instanceId": "ghost"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "instanceId");
    let e = refused(
        &url,
        None,
        "task.assign",
        json!({"taskId": "t-999", "instanceId": "w1"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "taskId");
    // Unassign a claimed task: back to pending, the holder's token stale.
    let token = w2["claimToken"].as_str().unwrap();
    let un = ok(&url, "task.unassign", json!({"taskId": first["id"]})).await;
    assert_eq!(un["previousAssignment"], "w2");
    assert!(is_iso(&un["unassignedAt"]), "{un}");
    let done = ok(
        &url,
        "task.complete",
        json!({"taskId": first["id"], "claimToken": token}),
    )
    .await;
    assert_eq!(done["status"], "stale_claim");
    let un = ok(&url, "task.unassign", json!({"taskId": first["id"]})).await;
    assert_eq!(un["previousAssignment"], Value::Null, "nothing to unassign");
    // Delete a claimed task: gone, its claim over.
    let w1_token = w1["claimToken"].as_str().unwrap();
    let deleted = ok(&url, "task.delete", json!({"id": second["id"]})).await;
    assert_eq!(
        (deleted["id"].clone(), deleted["deleted"].clone()),
        (second["id"].clone(), json!(true))
    );
    assert!(is_iso(&deleted["deletedAt"]));
    let e = refused(&url, None, "task.get", json!({"id": second["id"]})).await;
    assert_eq!(e["code"], -32602);
    let beat = ok(
        &url,
        "task.heartbeat",
        json!({"taskId": second["id"], "claimToken": w1_token}),
    )
    .await;
    assert_eq!(beat["status"], "stale_claim");
    let e = refused(&url, None, "task.delete", json!({"id": second["id"]})).await;
    assert_eq!(e["data"]["field"], "id");
}

/// An assigned task whose instance leaves goes back to every worker.
#[tokio::test]
async fn an_assignment_ends_with_its_instance() {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    for w in ["w1", "w2"] {
        ok(
            &url,
            "system.register",
            json!({"id": w, "roles": ["worker"]}),
        )
        .await;
    }
    let t = ok(&url, "task.create", json!({"text": "x"})).await;
    ok(
        &url,
        "task.assign",
        json!({"taskId": t["id"], "instanceId": "w2"}),
    )
    .await;
    ok(&url, "system.unregister", json!({"instanceId": "w2"})).await;
    let task = ok(&url, "task.get", json!({"id": t["id"]})).await;
    assert_eq!(task["assignedTo"], Value::Null);
    let claim = ok(&url, "task.claim", json!({"workerId": "w1"})).await;
    assert_eq!(claim["taskId"], t["id"]);
}

/// Completing without a claim token: accepted from the live assignee (same id and epoch) or an
/// operator; a zombie, another worker, or a worker principal acting as nobody is refused; the
/// holder's token is stale afterwards; a repeated tokenless completion is an error, a repeated
/// one with the same token stays idempotent.
#[tokio::test]
async fn completing_without_a_token_keeps_fencing() {
    use vigil::rpc::Role;
    use vigil::server::NamedToken;
    let (url, c, _stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some(OPS.into()),
            tokens: vec![NamedToken {
                name: "alice".into(),
                role: Role::Worker,
                token: ALICE.into(),
            }],
            ..ServerConfig::default()
        },
    )
    .await;
    let alice = Some(ALICE);
    let ops = Some(OPS);
    for w in ["w1", "w2"] {
        call(
            &url,
            alice,
            "system.register",
            json!({"id": w, "roles": ["worker"]}),
        )
        .await;
    }
    let create = |text: &'static str| {
        let url = url.clone();
        async move {
            call(&url, ops, "task.create", json!({"text": text})).await["result"]["id"].clone()
        }
    };
    // The live assignee completes its claim without the token.
    let t1 = create("one").await;
    let claim = call(&url, alice, "task.claim", json!({"workerId": "w1"})).await;
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    let e = refused(
        &url,
        alice,
        "task.complete",
        json!({"id": t1, "workerId": "w2"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "workerId", "another worker: {e}");
    let e = refused(&url, alice, "task.complete", json!({"id": t1})).await;
    assert_eq!(
        e["code"],
        vigil::rpc::code::UNAUTHORIZED,
        "a worker principal naming no worker is not an operator: {e}"
    );
    let done = call(
        &url,
        alice,
        "task.complete",
        json!({"id": t1, "workerId": "w1", "result": 7}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let task = c.get_task(t1.as_str().unwrap().parse().unwrap()).unwrap();
    assert_eq!(
        (task.finished_by.as_deref(), task.result),
        (Some("w1"), Some(json!(7)))
    );
    // Its token is stale now; a repeated tokenless completion is an error.
    let again = call(
        &url,
        alice,
        "task.complete",
        json!({"id": t1, "claimToken": token}),
    )
    .await;
    assert_eq!(again["result"]["status"], "stale_claim");
    let e = refused(
        &url,
        alice,
        "task.complete",
        json!({"id": t1, "workerId": "w1"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "id");

    // A zombie: w1 claims, expires, re-registers (a new epoch): its tokenless call is refused.
    let t2 = create("two").await;
    call(&url, alice, "task.claim", json!({"workerId": "w1"})).await;
    call(
        &url,
        alice,
        "system.unregister",
        json!({"instanceId": "w1"}),
    )
    .await;
    call(
        &url,
        alice,
        "system.register",
        json!({"id": "w1", "roles": ["worker"]}),
    )
    .await;
    let e = refused(
        &url,
        alice,
        "task.complete",
        json!({"id": t2, "workerId": "w1"}),
    )
    .await;
    assert_eq!(
        e["code"], -32602,
        "the task went back to pending, unassigned: {e}"
    );
    // An operator completes a claimed task: the holder's token goes stale.
    let claim = call(&url, alice, "task.claim", json!({"workerId": "w2"})).await;
    assert_eq!(claim["result"]["taskId"], t2);
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    let done = call(
        &url,
        ops,
        "task.complete",
        json!({"id": t2, "result": "by hand"}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    let task = c.get_task(t2.as_str().unwrap().parse().unwrap()).unwrap();
    assert_eq!(task.finished_by.as_deref(), Some("operator"));
    let beat = call(
        &url,
        alice,
        "task.heartbeat",
        json!({"taskId": t2, "claimToken": token}),
    )
    .await;
    assert_eq!(beat["result"]["status"], "stale_claim");
    // A pending task assigned to nobody cannot be completed (as ClaudeBench); an unknown one
    // neither.
    let t3 = create("three").await;
    let e = refused(&url, ops, "task.complete", json!({"id": t3})).await;
    assert_eq!(e["data"]["field"], "id");
    let e = refused(&url, ops, "task.complete", json!({"id": "t-999"})).await;
    assert_eq!(e["data"]["field"], "id");
    // Assigned, not claimed: its assignee may complete it.
    call(
        &url,
        ops,
        "task.assign",
        json!({"taskId": t3, "instanceId": "w2"}),
    )
    .await;
    let done = call(
        &url,
        alice,
        "task.complete",
        json!({"id": t3, "workerId": "w2"}),
    )
    .await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    // Unless it requires locks, which only a claim takes.
    let locked = call(
        &url,
        ops,
        "task.create",
        json!({"text": "migrate", "requiresLocks": ["db/main"]}),
    )
    .await;
    let locked = locked["result"]["id"].clone();
    call(
        &url,
        ops,
        "task.assign",
        json!({"taskId": locked, "instanceId": "w2"}),
    )
    .await;
    let e = refused(
        &url,
        alice,
        "task.complete",
        json!({"id": locked, "workerId": "w2"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "id", "{e}");
    call(&url, ops, "task.delete", json!({"id": locked})).await;

    // task.fail without a token: the attempt counts, the task is pending for everyone.
    let t4 = create("four").await;
    call(&url, alice, "task.claim", json!({"workerId": "w2"})).await;
    let e = refused(
        &url,
        alice,
        "task.fail",
        json!({"id": t4, "workerId": "w1"}),
    )
    .await;
    assert_eq!(e["data"]["field"], "workerId");
    let failed = call(
        &url,
        alice,
        "task.fail",
        json!({"id": t4, "workerId": "w2", "error": "no"}),
    )
    .await;
    assert_eq!(
        (
            failed["result"]["status"].clone(),
            failed["result"]["retryCount"].clone()
        ),
        (json!("pending"), json!(1)),
        "{failed}"
    );
    // Operator-only calls refuse a worker principal.
    for (method, params) in [
        ("task.assign", json!({"taskId": t4, "instanceId": "w1"})),
        ("task.unassign", json!({"taskId": t4})),
        ("task.update", json!({"id": t4, "updates": {"priority": 1}})),
        ("task.delete", json!({"id": t4})),
    ] {
        let e = refused(&url, alice, method, params).await;
        assert_eq!(e["code"], vigil::rpc::code::UNAUTHORIZED, "{method}: {e}");
    }
}
