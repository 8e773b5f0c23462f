//! Vigil's MCP server driven by a real MCP client (issue 16, point 7): the official Python SDK
//! (`mcp` 2.3.0, pinned) runs tests/mcp/sortie_flow.py against a `vigil serve` started here on
//! loopback, over stdio (`vigil mcp --target URL`, the binary of this build) and over streamable
//! HTTP (`POST /mcp`), each time in both of the SDK's connection modes (`legacy`: the initialize
//! handshake; `auto`: probe, then fall back). The script prints one JSON line of what it saw;
//! this side checks it and, over JSON-RPC, what the world became.
//!
//! The interpreter is `$VIGIL_MCP_PYTHON`, else `target/mcp-venv/bin/python`, which README's
//! test command creates. Without it these tests fail (they do not skip).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use vigil::Config;
use vigil::server::ServerConfig;

/// The SDK version the venv must hold.
const SDK: &str = "2.3.0";
/// A script takes 1–3 s; this bound only stops a hung one (which is then killed).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const OPS: &str = "operator-token-0123456789";

#[derive(Clone, Copy, Debug)]
enum Transport {
    Stdio,
    Http,
}

/// The python of the venv holding the SDK; a clear failure when it is missing.
fn python() -> PathBuf {
    let path = std::env::var_os("VIGIL_MCP_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no python with the MCP SDK at {}: create it with `python3 -m venv target/mcp-venv && \
         target/mcp-venv/bin/pip install mcp=={SDK}` (README's test command does), or point \
         VIGIL_MCP_PYTHON at a python that has mcp=={SDK}",
        path.display()
    );
    path
}

/// Runs `scenario` of tests/mcp/sortie_flow.py against the server at `url`: its JSON report,
/// after checking it passed in both modes with the pinned SDK.
async fn run(
    scenario: &str,
    transport: Transport,
    url: &str,
    token: Option<&str>,
    opts: Value,
) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/sortie_flow.py");
    let mut command = tokio::process::Command::new(python());
    command.arg(script).arg(scenario);
    match transport {
        Transport::Stdio => command.args([
            "--transport",
            "stdio",
            "--vigil",
            env!("CARGO_BIN_EXE_vigil"),
            "--target",
            url,
        ]),
        Transport::Http => command.args(["--transport", "http", "--url", &format!("{url}/mcp")]),
    };
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command
        .args(["--opts", &opts.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The agent's environment is what the script passes, nothing inherited.
        .env_remove("SORTIE_STEP_ID")
        .env_remove("SORTIE_CLAIM_TOKEN")
        .env_remove("VIGIL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // On timeout the child is dropped, which kills it (by its own pid, nothing else).
        .kill_on_drop(true);
    let child = command.spawn().expect("the venv's python starts");
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("{scenario} over {transport:?} did not finish within {SCRIPT_TIMEOUT:?}: killed")
        })
        .expect("the script's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!("{scenario} over {transport:?}: no JSON report\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    assert!(
        output.status.success() && report["ok"] == true,
        "{scenario} over {transport:?} failed ({}):\n{}\nstderr:\n{stderr}",
        output.status,
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(report["sdk"], SDK, "the venv holds mcp=={SDK}: {report}");
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        assert!(
            observed.is_object() && observed.get("error").is_none(),
            "{scenario} over {transport:?}, mode {mode}: {observed}"
        );
    }
    report
}

/// A JSON-RPC call as the runner would make it; the result of one that must succeed.
async fn rpc(url: &str, token: Option<&str>, method: &str, params: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

fn with_operator_token() -> ServerConfig {
    ServerConfig {
        token: Some(OPS.into()),
        ..ServerConfig::default()
    }
}

/// Expired instances are noticed and their claims taken back within ~100 ms.
fn fast_sweep() -> Config {
    let mut config = Config {
        sweep_interval: Duration::from_millis(100),
        ..Config::default()
    };
    config.limits.min_ttl = Duration::from_millis(100);
    config
}

const SORTIE_TOOLS: [&str; 5] = [
    "heartbeat",
    "complete_step",
    "fail_step",
    "get_my_context",
    "read_step_output",
];
const VIGIL_TOOLS: [&str; 8] = [
    "register",
    "claim_step",
    "create_task",
    "acquire_lease",
    "renew_lease",
    "release_lease",
    "list_leases",
    "cluster_state",
];

async fn tools_are_listed_with_schemas(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(Config::default(), with_operator_token()).await;
    let report = run("tools", transport, &url, Some(OPS), json!({})).await;
    // Both ways of connecting were taken: the initialize handshake, and the stateless protocol
    // rmcp answers `server/discover` with (auto falls back to the handshake without it).
    assert_eq!(report["modes"]["legacy"]["era"], "handshake", "{report}");
    assert_eq!(report["modes"]["auto"]["era"], "modern", "{report}");
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        for tool in SORTIE_TOOLS.iter().chain(&VIGIL_TOOLS) {
            for list in ["tools", "with_output_schema"] {
                assert!(
                    observed[list].as_array().unwrap().contains(&json!(tool)),
                    "{mode}: {tool} in {list}: {observed}"
                );
            }
        }
    }
}

#[tokio::test]
async fn stdio_lists_sortie_and_vigil_tools_with_schemas() {
    tools_are_listed_with_schemas(Transport::Stdio).await;
}

#[tokio::test]
async fn http_lists_sortie_and_vigil_tools_with_schemas() {
    tools_are_listed_with_schemas(Transport::Http).await;
}

/// The whole step through the tools; then the world as JSON-RPC sees it.
async fn a_step_flows_through_the_tools(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(Config::default(), with_operator_token()).await;
    let report = run("flow", transport, &url, Some(OPS), json!({})).await;
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        assert_eq!(observed["heartbeats"], json!(["ok", "ok"]), "{observed}");
        assert_eq!(
            observed["complete"],
            json!(["done", "done", "stale_claim"]),
            "{observed}"
        );
        assert_eq!(observed["fail"], "pending", "{observed}");
        let step = observed["step_id"].as_u64().unwrap();
        let task = rpc(
            &url,
            Some(OPS),
            "task.get",
            json!({"id": format!("t-{step}")}),
        )
        .await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(
            task["result"],
            json!({"summary": "chapter 1 written"}),
            "{task}"
        );
        let flaky = observed["flaky_step_id"].as_u64().unwrap();
        let task = rpc(
            &url,
            Some(OPS),
            "task.get",
            json!({"id": format!("t-{flaky}")}),
        )
        .await;
        assert_eq!(
            (&task["status"], &task["attempts"]),
            (&json!("completed"), &json!(1)),
            "{task}"
        );
    }
    // Every lease of this server (its only leases were the flow's locks).
    let leases = rpc(&url, Some(OPS), "lease.list", json!({})).await;
    assert!(leases["leases"].is_array(), "{leases}");
    assert_eq!(
        leases["leases"],
        json!([]),
        "completion released the locks: {leases}"
    );
}

#[tokio::test]
async fn stdio_step_flows_through_the_tools() {
    a_step_flows_through_the_tools(Transport::Stdio).await;
}

#[tokio::test]
async fn http_step_flows_through_the_tools() {
    a_step_flows_through_the_tools(Transport::Http).await;
}

/// A runner registers and claims over JSON-RPC (`task.claim`), then hands the step to the
/// agent: over stdio through SORTIE_STEP_ID / SORTIE_CLAIM_TOKEN, over HTTP as arguments.
async fn a_runner_claim_is_worked_through_mcp(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(Config::default(), with_operator_token()).await;
    let ops = Some(OPS);
    rpc(
        &url,
        ops,
        "system.register",
        json!({"id": "runner-1", "roles": ["worker"]}),
    )
    .await;
    let mut claims = serde_json::Map::new();
    // The step id in each of its accepted forms: "t-N", "N", N.
    for (name, form) in [("legacy", 0), ("auto", 1), ("extra", 2)] {
        let task = rpc(
            &url,
            ops,
            "task.create",
            json!({"text": format!("step {name}")}),
        )
        .await;
        let claim = rpc(&url, ops, "task.claim", json!({"workerId": "runner-1"})).await;
        assert_eq!(claim["taskId"], task["id"], "{claim}");
        let id = task["id"].as_str().unwrap();
        let n: u64 = id.strip_prefix("t-").unwrap().parse().unwrap();
        let step_id = match form {
            0 => json!(id),
            1 => json!(n.to_string()),
            _ => json!(n),
        };
        claims.insert(
            name.into(),
            json!({"step_id": step_id, "claim_token": claim["claimToken"], "id": id}),
        );
    }
    let report = run("runner", transport, &url, ops, json!({"claims": claims})).await;
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        assert_eq!(
            observed["statuses"],
            json!(["ok", "ok", "done", "stale_claim"]),
            "{observed}"
        );
        let task = rpc(&url, ops, "task.get", json!({"id": claims[mode]["id"]})).await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(
            task["result"],
            json!({"summary": format!("done by the {mode} agent")}),
            "{task}"
        );
    }
    let extra = rpc(&url, ops, "task.get", json!({"id": claims["extra"]["id"]})).await;
    assert_eq!(extra["status"], "in_progress", "{extra}");
}

#[tokio::test]
async fn stdio_runner_claim_is_worked_with_env_fallbacks() {
    a_runner_claim_is_worked_through_mcp(Transport::Stdio).await;
}

#[tokio::test]
async fn http_runner_claim_is_worked_with_arguments() {
    a_runner_claim_is_worked_through_mcp(Transport::Http).await;
}

/// A short-lived runner's instance (1.5 s TTL) kept alive by the agent's step heartbeats alone
/// for 1.5 TTLs; then the agent dies: its instance expires, its step goes to another worker,
/// its late calls are stale.
async fn a_dead_agents_step_is_reassigned(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(fast_sweep(), ServerConfig::default()).await;
    let report = run(
        "dead_agent",
        transport,
        &url,
        None,
        json!({"ttl_ms": 1500, "wait_s": 6}),
    )
    .await;
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        assert_eq!(
            observed["late"],
            json!(["stale_claim", "stale_claim", "stale_claim"]),
            "{observed}"
        );
        // It did heartbeat past its instance's TTL (every 375 ms for 2.25 s; a loaded machine
        // may manage fewer, but a TTL has passed between its first and its last).
        assert!(observed["beats"].as_u64().unwrap() >= 2, "{observed}");
        let step = observed["step_id"].as_u64().unwrap();
        let task = rpc(&url, None, "task.get", json!({"id": format!("t-{step}")})).await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["result"], json!({"summary": "finished"}), "{task}");
        assert_eq!(task["attempts"], 1, "the take-back counted one: {task}");
    }
}

#[tokio::test]
async fn stdio_dead_agents_step_is_reassigned_and_its_late_calls_are_stale() {
    a_dead_agents_step_is_reassigned(Transport::Stdio).await;
}

#[tokio::test]
async fn http_dead_agents_step_is_reassigned_and_its_late_calls_are_stale() {
    a_dead_agents_step_is_reassigned(Transport::Http).await;
}

/// `§` keys: a held ancestor blocks the claim, siblings do not conflict.
async fn section_keys_conflict_with_ancestors_only(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    let report = run("locks", transport, &url, None, json!({})).await;
    for mode in ["legacy", "auto"] {
        let observed = &report["modes"][mode];
        assert_eq!(observed["blocked"], false, "{observed}");
        assert_eq!(observed["sibling_claimed"], true, "{observed}");
    }
    // Every lease of this server: the editor released the chapter, both claims completed.
    let leases = rpc(&url, None, "lease.list", json!({})).await;
    assert!(leases["leases"].is_array(), "{leases}");
    assert_eq!(leases["leases"], json!([]), "{leases}");
}

#[tokio::test]
async fn stdio_section_keys_conflict_with_ancestors_not_siblings() {
    section_keys_conflict_with_ancestors_only(Transport::Stdio).await;
}

#[tokio::test]
async fn http_section_keys_conflict_with_ancestors_not_siblings() {
    section_keys_conflict_with_ancestors_only(Transport::Http).await;
}

/// Bad arguments are tool errors naming the argument; the session survives them.
async fn bad_arguments_are_tool_errors(transport: Transport) {
    let (url, _c, _stop) = crate::common::serve(Config::default(), ServerConfig::default()).await;
    let report = run("bad_args", transport, &url, None, json!({})).await;
    for mode in ["legacy", "auto"] {
        let errors = &report["modes"][mode]["errors"];
        for (case, argument) in [
            ("step_id_abc", "step_id"),
            ("no_claim_token", "claim_token"),
            ("no_step_id", "step_id"),
            ("negative_offset", "offset"),
        ] {
            let text = errors[case].as_str().unwrap();
            assert!(text.contains(argument), "{mode}, {case}: {text}");
        }
    }
}

#[tokio::test]
async fn stdio_bad_arguments_are_tool_errors_naming_the_argument() {
    bad_arguments_are_tool_errors(Transport::Stdio).await;
}

#[tokio::test]
async fn http_bad_arguments_are_tool_errors_naming_the_argument() {
    bad_arguments_are_tool_errors(Transport::Http).await;
}
