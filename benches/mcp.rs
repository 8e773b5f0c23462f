//! Latency of one MCP tool call (issue 16, point 9): `--calls` (2000) sequential `heartbeat`
//! calls on a claimed step, each timed from send to answer, over
//!
//! * `POST /rpc` — the JSON-RPC `task.heartbeat` the tool forwards to (the baseline);
//! * `POST /mcp` — the `heartbeat` tool over streamable HTTP (stateless, JSON answers);
//! * stdio — the `heartbeat` tool of a spawned `vigil mcp --target URL` (this build's binary),
//!   which forwards it over `POST /rpc`: one more process and one more HTTP hop.
//!
//! ```sh
//! cargo bench --bench mcp                  # 2000 calls per transport
//! cargo bench --bench mcp -- --calls 500
//! ```
//!
//! The server runs in this process on a free loopback port (a 2-thread runtime); every wait is
//! bounded and the child is killed at the end. Prints p50, p99, max and calls/s per transport.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vigil::server::{Server, ServerConfig};
use vigil::{Config, Coordinator};

const WARMUP: usize = 200;
const BOUND: Duration = Duration::from_secs(10);

fn calls() -> usize {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--calls" {
            return args.next().and_then(|n| n.parse().ok()).expect("--calls N");
        }
    }
    2000
}

fn report(name: &str, h: &Histogram<u64>, took: Duration) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<34} n={:<5} p50 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs   {:>7.0} calls/s",
        h.len(),
        us(0.5),
        us(0.99),
        h.max() as f64 / 1000.0,
        h.len() as f64 / took.as_secs_f64()
    );
}

/// Times `n` calls of `call` after a warm-up.
async fn measure<F, Fut>(n: usize, mut call: F) -> (Histogram<u64>, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    for _ in 0..WARMUP {
        check(tokio::time::timeout(BOUND, call()).await.expect("in time"));
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let answer = tokio::time::timeout(BOUND, call()).await.expect("in time");
        h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
        check(answer);
    }
    (h, started.elapsed())
}

/// Every answer must be a current claim's heartbeat, whatever its transport's envelope.
fn check(answer: Value) {
    let status = answer["result"]["status"]
        .as_str()
        .or_else(|| answer["result"]["structuredContent"]["status"].as_str());
    assert_eq!(status, Some("ok"), "{answer}");
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    http.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn main() {
    let n = calls();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(n));
}

async fn run(n: usize) {
    let coordinator = Coordinator::start(Config::default()).await.unwrap();
    let server = Server::bind(
        coordinator.clone(),
        &ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            heartbeats_per_minute: 0,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let rpc = format!("{base}/rpc");
    let call = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    post(
        &http,
        &rpc,
        &call(
            "system.register",
            json!({"id": "bench", "roles": ["worker"], "ttlMs": 600_000}),
        ),
    )
    .await;
    post(
        &http,
        &rpc,
        &call(
            "task.create",
            json!({"text": "bench step", "requiresLocks": ["bench/file"]}),
        ),
    )
    .await;
    let claim = post(
        &http,
        &rpc,
        &call("task.claim", json!({"workerId": "bench"})),
    )
    .await;
    let step = claim["result"]["taskId"].as_str().unwrap().to_string();
    let token = claim["result"]["claimToken"].as_str().unwrap().to_string();
    let number: u64 = step.trim_start_matches("t-").parse().unwrap();
    println!(
        "MCP heartbeat latency, {n} sequential calls per transport after {WARMUP} warm-up calls"
    );

    // JSON-RPC, the baseline.
    let body = call(
        "task.heartbeat",
        json!({"taskId": step, "claimToken": token}),
    );
    let (h, took) = measure(n, || post(&http, &rpc, &body)).await;
    report("JSON-RPC task.heartbeat POST /rpc", &h, took);

    // MCP over streamable HTTP.
    let mcp = format!("{base}/mcp");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "heartbeat", "arguments": {"step_id": number, "claim_token": token}}});
    let (h, took) = measure(n, || post(&http, &mcp, &body)).await;
    report("MCP heartbeat POST /mcp", &h, took);

    // MCP over stdio, through `vigil mcp`.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["mcp", "--target", &base])
        .env_remove("VIGIL_TOKEN")
        .env("SORTIE_STEP_ID", number.to_string())
        .env("SORTIE_CLAIM_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = std::sync::Arc::new(tokio::sync::Mutex::new(child.stdin.take().unwrap()));
    let stdout = std::sync::Arc::new(tokio::sync::Mutex::new(
        BufReader::new(child.stdout.take().unwrap()).lines(),
    ));
    let exchange = |line: Value| {
        let stdin = stdin.clone();
        let stdout = stdout.clone();
        async move {
            let mut stdin = stdin.lock().await;
            stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            stdin.flush().await.unwrap();
            if line.get("id").is_none() {
                return Value::Null;
            }
            let out = stdout.lock().await.next_line().await.unwrap().unwrap();
            serde_json::from_str(&out).unwrap()
        }
    };
    exchange(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}}),
    )
    .await;
    exchange(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "heartbeat", "arguments": {}}});
    let (h, took) = measure(n, || exchange(line.clone())).await;
    report("MCP heartbeat stdio (vigil mcp)", &h, took);

    drop(stdin);
    let _ = tokio::time::timeout(BOUND, child.wait()).await;
    let _ = child.kill().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(BOUND, serving).await;
    coordinator.shutdown().await;
}
