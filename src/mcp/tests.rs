//! Unit tests of the tool router over an in-process backend.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::*;
use crate::rpc::RpcLimits;
use crate::{Config, Coordinator};

/// The dispatcher backend, recording every call it forwards.
#[derive(Clone)]
struct Recording {
    inner: DispatcherBackend,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Backend for Recording {
    async fn call(
        &self,
        method: &str,
        params: Value,
        principal: Option<&Principal>,
    ) -> Result<Value, RpcError> {
        self.calls.lock().push((method.to_string(), params.clone()));
        self.inner.call(method, params, principal).await
    }
}

struct Fixture {
    coordinator: Coordinator,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    backend: Recording,
}

impl Fixture {
    async fn start() -> Self {
        let coordinator = Coordinator::start(Config::default()).await.unwrap();
        let dispatcher = Dispatcher::new(coordinator.clone(), RpcLimits::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let backend = Recording {
            inner: DispatcherBackend::new(dispatcher),
            calls: Arc::clone(&calls),
        };
        Self {
            coordinator,
            calls,
            backend,
        }
    }

    fn server(&self, fallbacks: Fallbacks) -> VigilMcp<Recording> {
        VigilMcp::new(self.backend.clone(), fallbacks)
    }

    fn methods(&self) -> Vec<String> {
        self.calls.lock().iter().map(|(m, _)| m.clone()).collect()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Calls `name` and answers its structured content, checked against its output schema's
/// top-level properties and required keys; panics on a tool error.
async fn ok<B: Backend>(server: &VigilMcp<B>, name: &str, args: Value) -> Value {
    let result = server
        .call_tool_as(name, obj(args), None)
        .await
        .expect("a tool");
    assert_eq!(result.is_error, Some(false), "{name}: {result:?}");
    let value = result
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(result.content.len(), 1, "{name}: one text block");
    let text = result.content[0].as_text().expect("text").text.clone();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        value,
        "{name}: the text holds the same JSON"
    );
    let tool = server.tools().iter().find(|t| t.name == name).unwrap();
    let schema = tool.output_schema.as_ref().expect("an output schema");
    let properties = schema["properties"].as_object().unwrap();
    for key in value.as_object().expect("an object").keys() {
        assert!(
            properties.contains_key(key),
            "{name}: {key} not in its schema"
        );
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        assert!(
            value.get(key.as_str().unwrap()).is_some(),
            "{name}: required {key} missing from {value}"
        );
    }
    value
}

/// Calls `name`, expecting a tool error: its error object (the second text block), with the
/// first text block checked.
async fn err<B: Backend>(server: &VigilMcp<B>, name: &str, args: Value) -> Value {
    err_as(server, name, args, None).await
}

async fn err_as<B: Backend>(
    server: &VigilMcp<B>,
    name: &str,
    args: Value,
    principal: Option<&Principal>,
) -> Value {
    let result = server
        .call_tool_as(name, obj(args), principal)
        .await
        .expect("a tool");
    assert_eq!(result.is_error, Some(true), "{name}: {result:?}");
    assert!(
        result.structured_content.is_none(),
        "{name}: no structured content on an error (TS hosts check it against the schema)"
    );
    let detail: Value =
        serde_json::from_str(&result.content[1].as_text().unwrap().text).expect("JSON detail");
    let error = detail["error"].clone();
    let text = &result.content[0].as_text().unwrap().text;
    assert!(
        text.contains(&error["code"].to_string())
            && text.contains(error["message"].as_str().unwrap()),
        "{name}: the text holds code and message: {text}"
    );
    error
}

/// Registers `worker`, creates a task locking `file:<worker>.tex`, claims it: (step, token).
async fn claimed<B: Backend>(server: &VigilMcp<B>, worker: &str) -> (u64, String) {
    ok(server, "register", json!({"instance_id": worker})).await;
    ok(
        server,
        "create_task",
        json!({"text": "write chapter 1", "requires_locks": [format!("file:{worker}.tex")]}),
    )
    .await;
    let claim = ok(server, "claim_step", json!({"worker_id": worker})).await;
    assert_eq!(claim["claimed"], true, "{claim}");
    assert_eq!(
        claim["leases"][0]["key"],
        format!("file:{worker}.tex"),
        "{claim}"
    );
    let step = claim["step_id"].as_u64().unwrap();
    assert_eq!(claim["task"]["step_id"], step);
    assert_eq!(claim["task"]["id"], format!("t-{step}"));
    (step, claim["claim_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_tool_list_has_every_tool_with_schemas_and_agent_descriptions() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    let names: Vec<&str> = server.tools().iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, TOOL_NAMES);
    for tool in server.tools() {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        let output = tool.output_schema.as_ref().expect("output schema");
        assert_eq!(output["type"], "object", "{}", tool.name);
        assert!(
            tool.description.as_ref().unwrap().len() > 80,
            "{}",
            tool.name
        );
    }
    for name in ["heartbeat", "complete_step", "fail_step"] {
        let tool = server.tools().iter().find(|t| t.name == name).unwrap();
        assert!(tool.description.as_ref().unwrap().contains("stale_claim"));
        let properties = tool.input_schema["properties"].as_object().unwrap();
        assert!(properties.contains_key("claim_token"), "{name}");
        assert!(properties.contains_key("step_id"), "{name}");
    }
    let unknown = server.call_tool_as("no_such_tool", Map::new(), None).await;
    assert!(unknown.is_none());
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn a_step_from_claim_to_completion_and_then_stale() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    let (step, token) = claimed(&server, "w1").await;

    let beat = ok(
        &server,
        "heartbeat",
        json!({"step_id": step, "claim_token": token, "extend_leases_sec": 60}),
    )
    .await;
    assert_eq!(beat["status"], "ok");
    assert_eq!(beat["step_id"], step);
    assert_eq!(beat["lost_leases"], json!([]));
    assert!(beat["leases_expire_at_ms"].as_u64().unwrap() > 0);
    // Only the heartbeat: no lease moves.
    let only = ok(
        &server,
        "heartbeat",
        json!({"step_id": format!("t-{step}"), "claim_token": token, "extend_leases_sec": -5}),
    )
    .await;
    assert_eq!(only["status"], "ok");
    assert_eq!(only["leases_expire_at_ms"], Value::Null);

    let context = ok(
        &server,
        "get_my_context",
        json!({"step_id": step.to_string()}),
    )
    .await;
    assert_eq!(context["status"], "in_progress");
    assert_eq!(context["text"], "write chapter 1");
    assert_eq!(context["assigned_to"], "w1");
    assert_eq!(context["requires_locks"][0]["mode"], "exclusive");
    assert!(context.get("claim_token").is_none(), "never the token");

    let leases = ok(&server, "list_leases", json!({"prefix": "file:w1.tex"})).await;
    assert_eq!(leases["leases"][0]["holder"]["step_id"], step, "{leases}");

    let summary = "Wrote ché 1 in full.";
    let done = ok(
        &server,
        "complete_step",
        json!({"step_id": step, "claim_token": token, "summary": summary}),
    )
    .await;
    assert_eq!(done, json!({"status": "done", "step_id": step}));
    let task = f
        .coordinator
        .get_task(crate::work::task::TaskId(step))
        .unwrap();
    assert_eq!(task.result, Some(json!({"summary": summary})));

    let read = ok(
        &server,
        "read_step_output",
        json!({"step_id": step, "offset": 6, "limit": 5}),
    )
    .await;
    assert_eq!(read["content"], "ché 1");
    assert_eq!(read["total_length"], summary.chars().count());
    assert_eq!(read["has_more"], true);
    let tail = ok(
        &server,
        "read_step_output",
        json!({"step_id": step, "offset": 11, "field": "output"}),
    )
    .await;
    assert_eq!(tail["content"], " in full.");
    assert_eq!(tail["has_more"], false);
    let text = ok(
        &server,
        "read_step_output",
        json!({"step_id": step, "field": "text"}),
    )
    .await;
    assert_eq!(text["content"], "write chapter 1");

    // The claim is over: every step tool says so and changes nothing.
    let stale = ok(
        &server,
        "heartbeat",
        json!({"step_id": step, "claim_token": token}),
    )
    .await;
    assert_eq!(stale["status"], "stale_claim");
    let failed = ok(
        &server,
        "fail_step",
        json!({"step_id": step, "claim_token": token}),
    )
    .await;
    assert_eq!(failed["status"], "stale_claim");
    let lease = ok(
        &server,
        "acquire_lease",
        json!({"key": "file:other", "step_id": step, "claim_token": token}),
    )
    .await;
    assert_eq!(lease["acquired"], false);
    assert_eq!(lease["status"], "stale_claim");
    let task = f
        .coordinator
        .get_task(crate::work::task::TaskId(step))
        .unwrap();
    assert_eq!(task.status, crate::work::task::TaskStatus::Completed);
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn failing_a_step_puts_it_back_until_out_of_attempts() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    ok(
        &server,
        "register",
        json!({"instance_id": "w1", "roles": ["worker"]}),
    )
    .await;
    let task = ok(
        &server,
        "create_task",
        json!({"payload": {"text": "flaky", "n": 1}, "max_attempts": 2, "priority": 70}),
    )
    .await;
    assert_eq!(task["max_attempts"], 2);
    assert_eq!(task["priority"], 70);
    for (attempt, status, can_retry) in [(1, "pending", true), (2, "failed", false)] {
        let claim = ok(
            &server,
            "claim_step",
            json!({"worker_id": "w1", "max_tasks": 2}),
        )
        .await;
        assert_eq!(claim["tasks"].as_array().unwrap().len(), 1, "{claim}");
        assert_eq!(
            claim["task"], claim["tasks"][0]["task"],
            "the first at the top too"
        );
        let token = claim["claim_token"].as_str().unwrap();
        let failed = ok(
            &server,
            "fail_step",
            json!({"step_id": claim["step_id"], "claim_token": token, "error": "boom"}),
        )
        .await;
        assert_eq!(failed["status"], status, "attempt {attempt}: {failed}");
        assert_eq!(failed["retry_count"], attempt);
        assert_eq!(failed["max_retries"], 2);
        assert_eq!(failed["can_retry"], can_retry);
    }
    let step = task["step_id"].clone();
    let error = ok(
        &server,
        "read_step_output",
        json!({"step_id": step, "field": "error"}),
    )
    .await;
    assert_eq!(error["content"], "boom");
    let none = ok(&server, "claim_step", json!({"worker_id": "w1"})).await;
    assert_eq!(none["claimed"], false);
    f.coordinator.shutdown().await;
}

/// `create_task {role}` makes a step only an instance with that role claims; `claim_step
/// {role}` narrows a claim to it; the task shows its role.
#[tokio::test]
async fn a_step_requiring_a_role_goes_only_to_an_instance_with_it() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    for (id, roles) in [("cpu", json!(["cpu"])), ("gpu", json!(["gpu"]))] {
        ok(
            &server,
            "register",
            json!({"instance_id": id, "roles": roles}),
        )
        .await;
    }
    let task = ok(
        &server,
        "create_task",
        json!({"text": "render", "role": "gpu"}),
    )
    .await;
    assert_eq!(task["role"], "gpu", "{task}");
    let none = ok(&server, "claim_step", json!({"worker_id": "cpu"})).await;
    assert_eq!(none["claimed"], false, "{none}");
    let refused = err(
        &server,
        "claim_step",
        json!({"worker_id": "cpu", "role": "gpu"}),
    )
    .await;
    assert!(refused.to_string().contains("role"), "{refused}");
    let claim = ok(
        &server,
        "claim_step",
        json!({"worker_id": "gpu", "role": "gpu"}),
    )
    .await;
    assert_eq!(claim["step_id"], task["step_id"], "{claim}");
    assert_eq!(claim["task"]["role"], "gpu");
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_naming_the_argument() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    let (step, token) = claimed(&server, "w1").await;
    let before = f.methods().len();
    for (tool, args, field) in [
        (
            "heartbeat",
            json!({"step_id": "step-3", "claim_token": token}),
            "step_id",
        ),
        (
            "heartbeat",
            json!({"step_id": true, "claim_token": token}),
            "step_id",
        ),
        (
            "heartbeat",
            json!({"step_id": step, "claim_token": token, "extend_leases_sec": "soon"}),
            "extend_leases_sec",
        ),
        (
            "heartbeat",
            json!({"stepId": step, "claim_token": token}),
            "stepId",
        ),
        (
            "complete_step",
            json!({"step_id": step, "claim_token": token, "summary": 5}),
            "summary",
        ),
        ("read_step_output", json!({}), "step_id"),
        (
            "read_step_output",
            json!({"step_id": step, "field": "secrets"}),
            "field",
        ),
        (
            "read_step_output",
            json!({"step_id": step, "limit": -1}),
            "limit",
        ),
        ("register", json!({"roles": ["worker"]}), "instance_id"),
        (
            "register",
            json!({"instance_id": "w2", "roles": "worker"}),
            "roles",
        ),
        (
            "claim_step",
            json!({"worker_id": "w1", "max_tasks": 0}),
            "max_tasks",
        ),
        ("create_task", json!({}), "text"),
        (
            "create_task",
            json!({"text": "x", "priority": 101}),
            "priority",
        ),
        ("acquire_lease", json!({"key": "k"}), "holder"),
        (
            "acquire_lease",
            json!({"key": "k", "holder": "w1", "mode": "mine"}),
            "mode",
        ),
        (
            "acquire_lease",
            json!({"key": "k", "holder": "w1", "step_id": step}),
            "holder",
        ),
        ("list_leases", json!({"limit": 5000}), "limit"),
        ("cluster_state", json!({"limit": "all"}), "limit"),
    ] {
        let error = err(&server, tool, args.clone()).await;
        assert_eq!(
            error["code"],
            crate::error::code::INVALID_PARAMS,
            "{tool} {args}"
        );
        assert_eq!(error["data"]["field"], field, "{tool} {args}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    assert_eq!(f.methods().len(), before, "nothing reached Vigil");

    // Vigil's own refusals come back under the tool's argument names.
    let error = err(
        &server,
        "heartbeat",
        json!({"step_id": step, "claim_token": token, "extend_leases_sec": 10_000_000}),
    )
    .await;
    assert_eq!(error["data"]["field"], "extend_leases_sec", "{error}");
    let error = err(&server, "claim_step", json!({"worker_id": "nobody"})).await;
    assert_eq!(error["data"]["field"], "worker_id", "{error}");
    let error = err(
        &server,
        "create_task",
        json!({"text": "x", "requires_locks": [{"key": ""}]}),
    )
    .await;
    assert!(
        error["data"]["field"]
            .as_str()
            .unwrap()
            .starts_with("requires_locks"),
        "{error}"
    );
    let error = err(&server, "get_my_context", json!({"step_id": 999})).await;
    assert_eq!(error["code"], crate::error::code::INVALID_PARAMS);
    assert_eq!(error["data"]["field"], "step_id", "{error}");
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn no_claim_token_is_refused_before_anything_is_written() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    let (step, _token) = claimed(&server, "w1").await;
    let before = f.methods().len();
    for tool in ["heartbeat", "complete_step", "fail_step"] {
        for token in [json!(null), json!(""), json!("  ")] {
            let error = err(
                &server,
                tool,
                json!({"step_id": step, "claim_token": token}),
            )
            .await;
            assert_eq!(
                error["message"], "claim_token is required (argument or SORTIE_CLAIM_TOKEN)",
                "{tool}"
            );
            assert_eq!(error["data"]["field"], "claim_token");
        }
    }
    let error = err(
        &server,
        "release_lease",
        json!({"key": "file:w1.tex", "step_id": step}),
    )
    .await;
    assert_eq!(error["data"]["field"], "claim_token");
    assert_eq!(f.methods().len(), before, "no call was forwarded");
    let task = f
        .coordinator
        .get_task(crate::work::task::TaskId(step))
        .unwrap();
    assert_eq!(task.status, crate::work::task::TaskStatus::Claimed);
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn environment_fallbacks_apply_only_where_the_argument_is_absent() {
    let f = Fixture::start().await;
    let setup = f.server(Fallbacks::none());
    let (step, token) = claimed(&setup, "w1").await;
    let (other, _) = claimed(&setup, "w2").await;
    let env = |step: String, token: String| {
        Fallbacks::from_lookup(move |name| match name {
            STEP_ID_VAR => Some(step.clone()),
            CLAIM_TOKEN_VAR => Some(token.clone()),
            _ => None,
        })
    };
    let server = f.server(env(format!("t-{step}"), token.clone()));

    // Both from the environment.
    let beat = ok(&server, "heartbeat", json!({})).await;
    assert_eq!(beat["status"], "ok");
    assert_eq!(beat["step_id"], step);
    let context = ok(&server, "get_my_context", json!({})).await;
    assert_eq!(context["step_id"], step);

    // An explicit step wins over SORTIE_STEP_ID (and the env token is not that step's).
    f.calls.lock().clear();
    let beat = ok(&server, "heartbeat", json!({"step_id": other})).await;
    assert_eq!(beat["step_id"], other);
    assert_eq!(beat["status"], "stale_claim");
    let (method, params) = f.calls.lock()[0].clone();
    assert_eq!(method, "task.heartbeat");
    assert_eq!(params["taskId"], format!("t-{other}"));
    assert_eq!(params["claimToken"], token.as_str());

    // An explicit token wins over SORTIE_CLAIM_TOKEN; an empty one falls back to it.
    let beat = ok(
        &server,
        "heartbeat",
        json!({"claim_token": "not-the-token"}),
    )
    .await;
    assert_eq!(beat["status"], "stale_claim");
    let beat = ok(
        &server,
        "heartbeat",
        json!({"claim_token": "", "step_id": ""}),
    )
    .await;
    assert_eq!(beat["status"], "ok");

    // A step lease from the environment too.
    let lease = ok(
        &server,
        "acquire_lease",
        json!({"key": "file:w1.tex/part2"}),
    )
    .await;
    assert_eq!(lease["acquired"], true, "{lease}");
    let list = ok(&server, "list_leases", json!({"prefix": "file:w1.tex"})).await;
    assert_eq!(
        list["total"], 2,
        "the step's own lock and its descendant: {list}"
    );

    // A malformed environment names the variable; no environment, no fallback.
    let broken = f.server(env("seventeen".into(), token.clone()));
    let error = err(&broken, "heartbeat", json!({})).await;
    assert_eq!(error["data"]["field"], STEP_ID_VAR, "{error}");
    let empty = f.server(Fallbacks::from_lookup(|_| Some(String::new())));
    let error = err(&empty, "heartbeat", json!({})).await;
    assert_eq!(error["data"]["field"], "step_id");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("SORTIE_STEP_ID")
    );
    let http = f.server(Fallbacks::none());
    let error = err(&http, "heartbeat", json!({})).await;
    assert_eq!(error["message"], "invalid params: step_id: is required");
    let error = err(&http, "heartbeat", json!({"step_id": step})).await;
    assert_eq!(error["data"]["field"], "claim_token");
    assert!(format!("{:?}", env("1".into(), "s3cret".into())).contains("<redacted>"));
    assert!(!format!("{:?}", env("1".into(), "s3cret".into())).contains("s3cret"));
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn a_worker_principal_cannot_act_on_another_principals_step() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    let alice = Principal::worker("alice");
    let bob = Principal::worker("bob");
    let as_alice = |name: &'static str, args: Value| {
        let server = server.clone();
        let alice = alice.clone();
        async move {
            let result = server
                .call_tool_as(name, obj(args), Some(&alice))
                .await
                .unwrap();
            assert_eq!(result.is_error, Some(false), "{name}: {result:?}");
            result.structured_content.unwrap()
        }
    };
    as_alice("register", json!({"instance_id": "w-alice"})).await;
    as_alice("create_task", json!({"text": "alice's"})).await;
    let claim = as_alice("claim_step", json!({"worker_id": "w-alice"})).await;
    let (step, token) = (claim["step_id"].clone(), claim["claim_token"].clone());

    for tool in ["heartbeat", "complete_step", "fail_step"] {
        let error = err_as(
            &server,
            tool,
            json!({"step_id": step, "claim_token": token}),
            Some(&bob),
        )
        .await;
        assert_eq!(
            error["code"],
            crate::error::code::UNAUTHORIZED,
            "{tool}: {error}"
        );
    }
    let error = err_as(
        &server,
        "claim_step",
        json!({"worker_id": "w-alice"}),
        Some(&bob),
    )
    .await;
    assert_eq!(error["code"], crate::error::code::UNAUTHORIZED, "{error}");
    let beat = as_alice("heartbeat", json!({"step_id": step, "claim_token": token})).await;
    assert_eq!(beat["status"], "ok");
    f.coordinator.shutdown().await;
}

#[tokio::test]
async fn instance_leases_conflict_along_the_key_hierarchy() {
    let f = Fixture::start().await;
    let server = f.server(Fallbacks::none());
    ok(&server, "register", json!({"instance_id": "a"})).await;
    ok(&server, "register", json!({"instance_id": "b"})).await;
    let got = ok(
        &server,
        "acquire_lease",
        json!({"key": "repo/src", "holder": "a", "ttl_sec": 30}),
    )
    .await;
    assert_eq!(got["acquired"], true);
    assert!(got["fencing_token"].as_u64().is_some());
    let refused = ok(
        &server,
        "acquire_lease",
        json!({"key": "repo/src/lib.rs", "holder": "b"}),
    )
    .await;
    assert_eq!(refused["acquired"], false);
    assert_eq!(refused["conflicts"][0]["key"], "repo/src");
    let renewed = ok(
        &server,
        "renew_lease",
        json!({"key": "repo/src", "holder": "a"}),
    )
    .await;
    assert_eq!(renewed["renewed"], true);
    let not_held = ok(
        &server,
        "renew_lease",
        json!({"key": "repo/src", "holder": "b"}),
    )
    .await;
    assert_eq!(not_held["renewed"], false);
    let released = ok(
        &server,
        "release_lease",
        json!({"key": "repo/src", "holder": "a"}),
    )
    .await;
    assert_eq!(released["released"], true);
    let state = ok(&server, "cluster_state", json!({"limit": 1})).await;
    assert_eq!(state["instance_count"], 2);
    assert_eq!(state["instances"].as_array().unwrap().len(), 1);
    assert_eq!(state["truncated"], true);
    assert_eq!(state["leader"], "a");
    f.coordinator.shutdown().await;
}

#[test]
fn allowed_hosts_follow_the_listen_address() {
    let at = |s: &str| allowed_hosts(s.parse().unwrap());
    assert!(
        at("127.0.0.1:7420")
            .unwrap()
            .contains(&"localhost".to_string())
    );
    assert_eq!(at("10.1.2.3:7420").unwrap(), vec!["10.1.2.3".to_string()]);
    assert_eq!(at("0.0.0.0:7420"), None);
    assert_eq!(at("[::]:7420"), None);
}

/// On a server with tokens, a call that reaches the backend without a principal is refused:
/// it is never served as the operator.
#[tokio::test]
async fn a_call_without_a_principal_is_refused_where_tokens_exist() {
    let c = Coordinator::start(Config::default()).await.unwrap();
    let dispatcher = Dispatcher::new(c.clone(), RpcLimits::default());
    let strict = DispatcherBackend::new(dispatcher.clone()).requiring_principal(true);
    let refused = strict
        .call("system.health", json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code, crate::rpc::code::UNAUTHORIZED);
    let alice = Principal::worker("alice");
    assert!(
        strict
            .call("system.health", json!({}), Some(&alice))
            .await
            .is_ok()
    );
    let open = DispatcherBackend::new(dispatcher);
    assert!(open.call("system.health", json!({}), None).await.is_ok());
    c.shutdown().await;
}
