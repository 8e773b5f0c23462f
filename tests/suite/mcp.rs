//! MCP over the wire: `POST /mcp` on a running server (streamable HTTP, stateless, JSON
//! answers, bearer tokens) and `vigil mcp` over stdio, forwarding to that server.

use serde_json::{Value, json};
use vigil::Config;
use vigil::server::ServerConfig;

const OPS: &str = "ops-0123456789abcdef";
const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdef";

/// A server with an operator token and two worker principals, alice and bob.
async fn with_principals(
    server: ServerConfig,
) -> (String, vigil::Coordinator, tokio::sync::oneshot::Sender<()>) {
    use vigil::rpc::Role;
    use vigil::server::NamedToken;
    let named = |name: &str, token: &str| NamedToken {
        name: name.into(),
        role: Role::Worker,
        token: token.into(),
    };
    crate::common::serve(
        Config::default(),
        ServerConfig {
            token: Some(OPS.into()),
            tokens: vec![named("alice", ALICE), named("bob", BOB)],
            ..server
        },
    )
    .await
}

/// POSTs one MCP message to `/mcp` the way a streamable-HTTP client does.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    message: &Value,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{url}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(message.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// One MCP request answered as JSON: its `result`.
async fn request(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: u64,
    method: &str,
    params: Value,
) -> Value {
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let response = post(http, url, Some(token), &message).await;
    assert_eq!(response.status(), 200, "{method}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{method}: JSON answers, not an event stream"
    );
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "{method}: stateless, no session"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["id"], id, "{answer}");
    answer["result"].clone()
}

/// A `tools/call`: (is_error, structured content).
async fn tool(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    args: Value,
) -> (bool, Value) {
    let result = request(
        http,
        url,
        token,
        7,
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
    .await;
    let text = result["content"][0]["text"].as_str().unwrap().to_string();
    let is_error = result["isError"] == true;
    if is_error {
        // No structured content on an error: the detail is JSON in the second text block.
        assert!(result.get("structuredContent").is_none(), "{result}");
        let detail = result["content"][1]["text"].as_str().unwrap();
        return (true, serde_json::from_str(detail).unwrap());
    }
    let structured = result["structuredContent"].clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), structured);
    (is_error, structured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_acts_for_the_tokens_principal() {
    let (url, coordinator, stop) = with_principals(ServerConfig::default()).await;
    let http = reqwest::Client::new();

    // The same bearer tokens as /rpc.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "suite", "version": "1"}}});
    assert_eq!(post(&http, &url, None, &init).await.status(), 401);
    assert_eq!(
        post(&http, &url, Some("wrong-0123456789abcdef"), &init)
            .await
            .status(),
        401
    );

    let result = request(&http, &url, ALICE, 1, "initialize", init["params"].clone()).await;
    assert_eq!(result["serverInfo"]["name"], "vigil");
    assert!(result["capabilities"]["tools"].is_object());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        post(&http, &url, Some(ALICE), &initialized).await.status(),
        202
    );

    let list = request(&http, &url, ALICE, 2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vigil::mcp::TOOL_NAMES);
    assert!(
        list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["outputSchema"]["type"] == "object")
    );

    // Alice registers, creates and claims a step; her heartbeat is fenced by her token.
    let (e, reg) = tool(
        &http,
        &url,
        ALICE,
        "register",
        json!({"instance_id": "w-alice"}),
    )
    .await;
    assert!(!e, "{reg}");
    let (e, _) = tool(
        &http,
        &url,
        ALICE,
        "create_task",
        json!({"text": "alice's step"}),
    )
    .await;
    assert!(!e);
    let (e, claim) = tool(
        &http,
        &url,
        ALICE,
        "claim_step",
        json!({"worker_id": "w-alice"}),
    )
    .await;
    assert!(!e && claim["claimed"] == true, "{claim}");
    let step = claim["step_id"].clone();
    let token = claim["claim_token"].clone();
    let (e, beat) = tool(
        &http,
        &url,
        ALICE,
        "heartbeat",
        json!({"step_id": step, "claim_token": token}),
    )
    .await;
    assert!(!e);
    assert_eq!(beat["status"], "ok");

    // Bob, another worker principal, is refused on her step even with her claim token.
    for name in ["heartbeat", "complete_step", "fail_step"] {
        let (e, refused) = tool(
            &http,
            &url,
            BOB,
            name,
            json!({"step_id": step, "claim_token": token}),
        )
        .await;
        assert!(e, "{name}: {refused}");
        assert_eq!(
            refused["error"]["code"],
            vigil::rpc::code::UNAUTHORIZED,
            "{name}: {refused}"
        );
    }
    // No claim token: refused, never an unfenced write (no env fallbacks over HTTP).
    let (e, refused) = tool(
        &http,
        &url,
        ALICE,
        "complete_step",
        json!({"step_id": step}),
    )
    .await;
    assert!(e);
    assert_eq!(refused["error"]["data"]["field"], "claim_token");
    let (e, done) = tool(
        &http,
        &url,
        ALICE,
        "complete_step",
        json!({"step_id": step, "claim_token": token, "summary": "ok"}),
    )
    .await;
    assert!(!e);
    assert_eq!(done["status"], "done");

    // A bad argument is a tool error, not a protocol failure; an unknown tool is one.
    let (e, bad) = tool(
        &http,
        &url,
        ALICE,
        "heartbeat",
        json!({"step_id": "seventeen", "claim_token": "x"}),
    )
    .await;
    assert!(e);
    assert_eq!(bad["error"]["data"]["field"], "step_id");
    let message = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope", "arguments": {}}});
    let answer: Value = post(&http, &url, Some(ALICE), &message)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["error"]["code"], -32602, "{answer}");

    // system.health reports the endpoint.
    let health: Value = http
        .post(format!("{url}/rpc"))
        .bearer_auth(OPS)
        .json(&json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["result"]["services"]["mcp"], true, "{health}");

    // rmcp's Host check: the loopback names pass (above), another name is refused.
    let foreign = http
        .post(format!("{url}/mcp"))
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(ALICE)
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_keeps_the_body_limit_and_can_be_turned_off() {
    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            max_body_bytes: 4096,
            ..ServerConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_task", "arguments": {"text": "x".repeat(8192)}}});
    assert_eq!(post(&http, &url, None, &big).await.status(), 413);
    let _ = stop.send(());
    coordinator.shutdown().await;

    let (url, coordinator, stop) = crate::common::serve(
        Config::default(),
        ServerConfig {
            mcp: false,
            ..ServerConfig::default()
        },
    )
    .await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    assert_eq!(post(&http, &url, None, &init).await.status(), 404);
    let health: Value = http
        .post(format!("{url}/rpc"))
        .json(&json!({"jsonrpc": "2.0", "method": "system.health", "id": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["result"]["services"]["mcp"], false, "{health}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `vigil mcp --target URL` over stdio: JSON-RPC lines in, JSON-RPC lines out — nothing else on
/// stdout, even with debug logging — with the SORTIE_* fallbacks and the token's principal.
#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_forwards_to_the_server() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let (url, coordinator, stop) = with_principals(ServerConfig::default()).await;
    let http = reqwest::Client::new();
    // Alice's step, claimed over /mcp, as a runner would before starting the agent.
    tool(
        &http,
        &url,
        ALICE,
        "register",
        json!({"instance_id": "w-alice"}),
    )
    .await;
    tool(
        &http,
        &url,
        ALICE,
        "create_task",
        json!({"text": "stdio step"}),
    )
    .await;
    let (_, claim) = tool(
        &http,
        &url,
        ALICE,
        "claim_step",
        json!({"worker_id": "w-alice"}),
    )
    .await;
    let step = claim["step_id"].as_u64().unwrap();
    let token = claim["claim_token"].as_str().unwrap().to_string();

    let spawn = |bearer: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["mcp", "--target", &url, "--token", bearer])
            .env_remove("VIGIL_TARGET")
            .env_remove("VIGIL_TOKEN")
            .env("VIGIL_LOG", "debug")
            .env("SORTIE_STEP_ID", step.to_string())
            .env("SORTIE_CLAIM_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "suite", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        // Step and token from the environment.
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "heartbeat", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": "get_my_context", "arguments": {}}}),
        // The token as an argument: even at debug it must not reach the logs.
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "heartbeat", "arguments": {"step_id": step, "claim_token": token}}}),
    ];
    let run = |bearer: &'static str| {
        let lines = lines.clone();
        let mut child = spawn(bearer);
        async move {
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut answers = Vec::new();
            for line in &lines {
                stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
                if line.get("id").is_none() {
                    continue;
                }
                let out =
                    tokio::time::timeout(std::time::Duration::from_secs(20), stdout.next_line())
                        .await
                        .expect("an answer in time")
                        .unwrap()
                        .expect("a line");
                let answer: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
                    panic!("stdout holds only protocol frames, got {out:?}: {e}")
                });
                assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
                assert_eq!(answer["id"], line["id"], "{answer}");
                answers.push(answer);
            }
            drop(stdin);
            let rest = tokio::time::timeout(std::time::Duration::from_secs(20), stdout.next_line())
                .await
                .expect("stdout closes once stdin does")
                .unwrap();
            assert_eq!(rest, None, "nothing else on stdout");
            let output = child.wait_with_output().await.unwrap();
            assert!(output.status.success(), "{output:?}");
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            (answers, stderr)
        }
    };

    let (answers, stderr) = run(ALICE).await;
    assert!(!stderr.is_empty(), "logs go to stderr");
    assert_eq!(answers[4]["result"]["structuredContent"]["status"], "ok");
    assert!(
        !stderr.contains(&token),
        "no claim token in the logs, even at debug"
    );
    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "vigil");
    assert_eq!(
        answers[1]["result"]["tools"].as_array().unwrap().len(),
        vigil::mcp::TOOL_NAMES.len()
    );
    let beat = &answers[2]["result"];
    assert_eq!(beat["isError"], false, "{beat}");
    assert_eq!(beat["structuredContent"]["status"], "ok", "{beat}");
    assert_eq!(beat["structuredContent"]["step_id"], step);
    assert_eq!(
        answers[3]["result"]["structuredContent"]["text"],
        "stdio step"
    );

    // With bob's token the same environment is refused: the token's principal acts.
    let (answers, _) = run(BOB).await;
    let refused = &answers[2]["result"];
    assert_eq!(refused["isError"], true, "{refused}");
    let detail: Value =
        serde_json::from_str(refused["content"][1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(detail["error"]["code"], vigil::rpc::code::UNAUTHORIZED);
    let _ = stop.send(());
    coordinator.shutdown().await;
}
