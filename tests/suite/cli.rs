//! The `vigil` binary: `serve` runs until SIGTERM and exits cleanly; bad flags are refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_runs_until_sigterm_and_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "serve",
            "--ttl",
            "10s",
            "--grace",
            "2s",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil starts");
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_refuses_a_ttl_outside_the_limits() {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--ttl", "10ms"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("ttl"), "{err}");
}

#[test]
fn serve_refuses_unusable_resource_limits() {
    for (args, named) in [
        (["--max-answer-bytes", "100"], "max-answer-bytes"),
        (["--max-tasks", "0"], "max_tasks"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

/// A server on a free loopback port over `coordinator`: (base URL, stop).
async fn serve_on(
    coordinator: &vigil::Coordinator,
    token: Option<&str>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use vigil::server::{Server, ServerConfig};
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_string),
        ..ServerConfig::default()
    };
    let server = Server::bind(coordinator.clone(), &config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

/// `vigil ARGS`: (exit code, stdout, stderr).
async fn vigil(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_TOKEN")
        .env_remove("VIGIL_TARGET")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A loopback port nobody listens on.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn status_prints_server_store_leader_then_instances_in_natural_order() {
    let coordinator = vigil::Coordinator::start(vigil::Config::default())
        .await
        .unwrap();
    // Registered in this order, the first registered leads: w-10 sorts after w-2 naturally
    // but before it as text, and --limit 2 cuts it off.
    for id in ["w-10", "w-2", "w-1", "w-3"] {
        coordinator
            .register(vigil::RegisterRequest::new(id).roles(["worker", "relay"]))
            .await
            .unwrap();
    }
    coordinator
        .create_task(vigil::work::task::TaskSpec::new(serde_json::json!("x")))
        .await
        .unwrap();
    let (url, stop) = serve_on(&coordinator, None).await;
    let (code, text, err) = vigil(&["status", "--target", &url]).await;
    assert_eq!(code, Some(0), "{text}{err}");
    let lines: Vec<&str> = text.lines().collect();
    let addr = url.trim_start_matches("http://");
    assert!(
        lines[0].starts_with(&format!(
            "vigil {} at {addr}, up ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert_eq!(lines[1], "store: memory, ok, 0 writes pending", "{text}");
    assert_eq!(lines[2], "leader: w-10  term: 1", "{text}");
    let header = lines.iter().position(|l| l.starts_with("ID")).unwrap();
    let ids: Vec<&str> = lines[header + 1..header + 5]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["w-1", "w-2", "w-3", "w-10"], "{text}");
    // Columns are aligned: STATE starts at the same offset in every row.
    let col = lines[header].find("STATE").unwrap();
    assert_eq!(&lines[header + 1][col..col + 6], "active");
    assert!(lines[header + 4].trim_end().ends_with('*'), "{text}");
    assert!(text.contains("tasks: pending 1"), "{text}");

    // --limit 2 would show w-1 and w-2 only: the leader is shown as well.
    let (_, text, _) = vigil(&["status", "--target", &url, "--limit", "2"]).await;
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("w-"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ["w-1", "w-2", "w-10"], "{text}");
    assert!(text.contains("(3 of 4 instances shown"), "{text}");

    // --json: one document with stable names.
    let (code, json, _) = vigil(&["status", "--target", &url, "--json"]).await;
    assert_eq!(code, Some(0));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["server"]["listen"], addr);
    assert!(doc["server"]["uptimeMs"].is_u64());
    assert_eq!(doc["store"]["kind"], "memory");
    assert_eq!(doc["store"]["state"], "ok");
    assert_eq!(doc["leader"], "w-10");
    assert_eq!(doc["leaderAlive"], true);
    assert_eq!(doc["instances"][0]["id"], "w-1");
    assert_eq!(doc["instances"][3]["isLeader"], true);
    assert!(
        doc["instances"][0]["lastSeen"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(doc["tasks"]["pending"], 1);
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["problems"], serde_json::json!([]));
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test]
async fn status_says_when_there_are_no_instances_or_all_expired() {
    let coordinator = vigil::Coordinator::start(vigil::Config {
        ttl: Duration::from_secs(1),
        grace: Duration::from_millis(500),
        ..vigil::Config::default()
    })
    .await
    .unwrap();
    let (url, stop) = serve_on(&coordinator, None).await;
    let (code, text, _) = vigil(&["status", "--target", &url]).await;
    assert_eq!(code, Some(0));
    assert!(text.contains("no instances registered"), "{text}");
    assert!(!text.contains("ID "), "no bare headers: {text}");
    for id in ["a", "b"] {
        coordinator
            .register(vigil::RegisterRequest::new(id))
            .await
            .unwrap();
    }
    let mut events = coordinator.subscribe();
    let mut expired = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while expired < 2 {
            if events.recv().await.unwrap().kind == vigil::EventKind::InstanceExpired {
                expired += 1;
            }
        }
    })
    .await
    .expect("both expire");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (code, text, _) = vigil(&["status", "--target", &url]).await;
        if text.contains("all 2 instances expired") {
            assert_eq!(code, Some(0), "nobody is live: nothing degraded");
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("leader: none"), "{text}");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// A store that fails makes `vigil status` say so and exit 3.
#[cfg(feature = "chaos")]
#[tokio::test]
async fn status_exits_3_while_the_store_fails() {
    let mut redis = super::redis_server::RedisServer::start();
    let mut rc = vigil::store::RedisConfig::new(redis.url());
    rc.flush_interval = Duration::from_millis(50);
    let coordinator = vigil::Coordinator::start(vigil::Config {
        store: vigil::store::StoreConfig::Redis(rc),
        ..vigil::Config::default()
    })
    .await
    .unwrap();
    coordinator
        .register(vigil::RegisterRequest::new("w-1"))
        .await
        .unwrap();
    let (url, stop) = serve_on(&coordinator, None).await;
    let (code, text, _) = vigil(&["status", "--target", &url]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("store: redis, ok"), "{text}");
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while coordinator.store_status().state == "ok" {
        assert!(Instant::now() < deadline, "the store never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, text, _) = vigil(&["status", "--target", &url]).await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("DEGRADED: the store"), "{text}");
    let (_, json, _) = vigil(&["status", "--target", &url, "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["healthy"], false);
    assert_ne!(doc["store"]["state"], "ok");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[tokio::test]
async fn system_health_tells_version_uptime_and_listen_address() {
    let coordinator = vigil::Coordinator::start(vigil::Config::default())
        .await
        .unwrap();
    let (url, stop) = serve_on(&coordinator, None).await;
    let client = vigil::client::Client::connect([url.as_str()])
        .await
        .unwrap();
    let health = client
        .call("system.health", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptimeMs"].is_u64(), "{health}");
    assert_eq!(health["listen"], url.trim_start_matches("http://"));
    // ClaudeBench's fields are still there.
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["services"]["coordinator"], "up");
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// A TCP listener that accepts connections and never answers; runs until dropped.
async fn silent_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

/// A web server that answers every request with an HTML page.
async fn html_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let page = "<!DOCTYPE html><html><body>It works!</body></html>";
                let _ = socket
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                            page.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

/// Each way a target can be unusable, over real sockets, in the words of `vigil status`:
/// what is wrong and the flag or step that fixes it.
#[tokio::test]
async fn status_errors_say_what_to_fix() {
    let coordinator = vigil::Coordinator::start(vigil::Config::default())
        .await
        .unwrap();
    let (secured, stop) = serve_on(&coordinator, Some("s3cret")).await;
    let refused = format!("http://{}", closed_port());
    let (silent, silent_task) = silent_listener().await;
    let silent = format!("http://{silent}");
    let (html, html_task) = html_server().await;
    let html = format!("http://{html}");
    let cases: [(&[&str], String); 6] = [
        (
            &["--target", "localhost:7420"],
            "`localhost:7420` has no scheme: use http://localhost:7420".into(),
        ),
        (
            &["--target", &refused],
            format!("nothing listens at {refused}: is `vigil serve` running there? (--target)"),
        ),
        (
            &["--target", &secured],
            format!("{secured} needs a token: pass --token or set VIGIL_TOKEN"),
        ),
        (
            &["--target", &secured, "--token", "wrong"],
            format!("{secured} refused the token (HTTP 401)"),
        ),
        (
            &["--target", &silent, "--timeout", "300ms"],
            format!("{silent} did not answer system.health within 300 ms"),
        ),
        (
            &["--target", &html],
            format!("{html} is not a Vigil server: it answered a web page"),
        ),
    ];
    for (args, expected) in cases {
        let argv: Vec<&str> = std::iter::once("status")
            .chain(args.iter().copied())
            .collect();
        let (code, out, err) = vigil(&argv).await;
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.starts_with(&format!("vigil status: {expected}")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("builder error") && !err.contains("is the server up"));
    }
    let (code, _, _) = vigil(&["status", "--target", &secured, "--token", "s3cret"]).await;
    assert_eq!(code, Some(0));
    silent_task.abort();
    html_task.abort();
    let _ = stop.send(());
    coordinator.shutdown().await;
}

/// `load`, `chaos` and `mcp` use the same words.
#[tokio::test]
async fn load_chaos_and_mcp_errors_say_what_to_fix() {
    let coordinator = vigil::Coordinator::start(vigil::Config::default())
        .await
        .unwrap();
    let (secured, stop) = serve_on(&coordinator, Some("s3cret")).await;
    let refused = format!("http://{}", closed_port());
    let (code, _, err) = vigil(&["load", "--target", "localhost:7420", "--duration", "1s"]).await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("`localhost:7420` has no scheme: use http://localhost:7420"),
        "{err}"
    );
    for transport in ["http", "ws"] {
        let (code, _, err) = vigil(&[
            "load",
            "--target",
            &refused,
            "--transport",
            transport,
            "--duration",
            "1s",
        ])
        .await;
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&format!("nothing listens at {refused}")),
            "{transport}: {err}"
        );
    }
    let (code, _, err) = vigil(&["load", "--target", &secured, "--duration", "1s"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "vigil load: {secured} needs a token: pass --token or set VIGIL_TOKEN"
        )),
        "{err}"
    );
    let (code, _, err) = vigil(&["chaos", "--target", &secured, "--duration", "1s"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("vigil chaos: {secured} needs a token")),
        "{err}"
    );
    let (code, _, err) = vigil(&["chaos", "--target", &refused, "--duration", "1s"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing listens at"), "{err}");
    let (code, _, err) = vigil(&["mcp", "--target", "localhost:7420"]).await;
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`localhost:7420` has no scheme: use http://localhost:7420"),
        "{err}"
    );
    let _ = stop.send(());
    coordinator.shutdown().await;
}

#[test]
fn serve_reads_a_toml_config_file_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.join("vigil.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\nttl = \"20s\"\ngrace = \"3s\"\nheartbeat-rate = 10\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config", file.to_str().unwrap(), "--grace", "4s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil starts");
    // The file's address is the one listened on.
    let started = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("nothing listens on the configured port: {e}"),
        }
    };
    use std::io::{Read, Write};
    let body =
        r#"{"jsonrpc":"2.0","method":"system.register","params":{"id":"w","roles":[]},"id":1}"#;
    write!(
        stream,
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"registered\":true"), "{answer}");
    child.kill().unwrap();
    child.wait().unwrap();

    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nttll = \"1s\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("ttll") && err.contains("vigil.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lines a child writes to stderr, read as they come.
struct Stderr {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Stderr {
    fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let pipe = child.stderr.take().expect("stderr piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self { lines }
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line matches, within `limit`; that line.
    fn wait_for(&self, limit: Duration, what: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.all().into_iter().find(|l| what(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {limit:?}:\n{}",
                self.all().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `vigil serve` on a free port with `extra` flags, stderr piped: (child, base URL, stderr).
fn spawn_serve(extra: &[&str]) -> (std::process::Child, String, Stderr) {
    let addr = closed_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("VIGIL_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = Stderr::of(&mut child);
    stderr.wait_for(Duration::from_secs(20), |l| l.contains("Ctrl-C stops"));
    (child, format!("http://{addr}"), stderr)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `vigil serve`'s log, piped: no colour codes, each event once with wall-clock times, and a
/// startup line naming every endpoint.
#[test]
fn serve_logs_each_event_once_without_colour_codes() {
    let (child, url, stderr) = spawn_serve(&["--ttl", "1s", "--grace", "500ms"]);
    let startup = stderr.wait_for(Duration::from_secs(1), |l| l.contains("Ctrl-C stops"));
    for endpoint in ["/rpc", "/ws", "/metrics", "/healthz", "GET /,", "/mcp"] {
        assert!(startup.contains(endpoint), "{endpoint}: {startup}");
    }
    assert!(startup.contains("store memory"), "{startup}");
    let body = r#"{"jsonrpc":"2.0","method":"system.register","params":{"id":"w-1","roles":["worker"]},"id":1}"#;
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        write!(
            s,
            "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("\"registered\":true"), "{answer}");
    }
    // It expires after a second without heartbeats; the leader leaves with it.
    stderr.wait_for(Duration::from_secs(10), |l| l.contains("leader.vacant"));
    stop(child);
    let lines = stderr.all();
    let text = lines.join("\n");
    assert!(!text.contains("\x1b["), "ANSI codes in a pipe:\n{text}");
    for event in [
        "instance.registered instance=w-1",
        "instance.suspect instance=w-1",
        "instance.expired instance=w-1",
        "leader.elected instance=w-1",
    ] {
        let n = lines.iter().filter(|l| l.contains(event)).count();
        assert_eq!(n, 1, "{event} logged {n} times:\n{text}");
    }
    // Nothing else says it again in other words.
    for twice in ["instance registered", "instance expired", "leader elected"] {
        assert!(!text.contains(twice), "{twice}:\n{text}");
    }
    // Wall-clock times, never the process's monotonic milliseconds.
    let expired = lines
        .iter()
        .find(|l| l.contains("instance.expired"))
        .unwrap();
    let seen = expired.split("last_seen=").nth(1).unwrap();
    assert!(
        seen.starts_with("20") && seen.split_whitespace().next().unwrap().ends_with('Z'),
        "{expired}"
    );
}

/// The store URL in the startup line hides its password; repeated store failures are a few
/// lines with counts, not one per flush; the recovery is one line.
#[cfg(feature = "chaos")]
#[test]
fn serve_hides_the_store_password_and_summarizes_store_failures() {
    let mut redis = super::redis_server::RedisServer::start();
    // A password-less Redis accepts any password for the user `default`.
    let url = format!("redis://default:s3cret@127.0.0.1:{}", redis.port);
    let (child, _, stderr) = spawn_serve(&["--redis", &url, "--flush-interval", "50ms"]);
    let startup = stderr.wait_for(Duration::from_secs(1), |l| l.contains("Ctrl-C stops"));
    assert!(
        startup.contains(&format!("redis://default:****@127.0.0.1:{}", redis.port)),
        "{startup}"
    );
    assert!(!stderr.all().join("\n").contains("s3cret"));

    // Redis down: a flush fails every 50 ms or so.
    redis.stop();
    let store_lines = || {
        stderr
            .all()
            .into_iter()
            .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("store"))
            .collect::<Vec<_>>()
    };
    let counted = stderr.wait_for(Duration::from_secs(15), |l| {
        l.contains("failed writes") && l.contains("circuit open")
    });
    assert!(counted.contains("20 failed writes"), "{counted}");
    // Another second of failures (probes wait 10 s): nothing more.
    std::thread::sleep(Duration::from_secs(1));
    let lines = store_lines();
    assert!(
        lines.len() <= 3,
        "{} store lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines[0].contains("store flush failed"), "{lines:?}");
    stop(child);
}

/// A short outage: the first failure, then one line when the store answers again.
#[cfg(feature = "chaos")]
#[test]
fn serve_logs_one_line_when_the_store_recovers() {
    let mut redis = super::redis_server::RedisServer::start();
    let (child, _, stderr) = spawn_serve(&["--redis", &redis.url(), "--flush-interval", "50ms"]);
    redis.stop();
    stderr.wait_for(Duration::from_secs(10), |l| {
        l.contains("store flush failed")
    });
    redis.restart();
    let recovered = stderr.wait_for(Duration::from_secs(15), |l| {
        l.contains("store flush recovered")
    });
    assert!(recovered.contains("failed writes"), "{recovered}");
    let failures = stderr
        .all()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("store"))
        .count();
    assert!(failures <= 2, "{}", stderr.all().join("\n"));
    stop(child);
}
