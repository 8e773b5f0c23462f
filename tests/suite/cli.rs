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

#[tokio::test]
async fn status_prints_instances_leader_and_tasks() {
    use vigil::server::{Server, ServerConfig};
    let coordinator = vigil::Coordinator::start(vigil::Config::default())
        .await
        .unwrap();
    for id in ["alpha", "beta-long-name"] {
        coordinator
            .register(vigil::RegisterRequest::new(id).roles(["worker", "relay"]))
            .await
            .unwrap();
    }
    coordinator
        .create_task(vigil::work::task::TaskSpec::new(serde_json::json!("x")))
        .await
        .unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::bind(coordinator.clone(), &config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["status", "--target", &format!("http://{addr}")])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    // Columns are aligned: STATE starts at the same offset in every row.
    let col = lines[0].find("STATE").unwrap();
    assert_eq!(&lines[1][col..col + 6], "active");
    assert_eq!(&lines[2][col..col + 6], "active");
    assert!(lines[1].starts_with("alpha") && lines[1].trim_end().ends_with('*'));
    assert!(text.contains("leader: alpha  term: 1"), "{text}");
    assert!(text.contains("pending 1"), "{text}");
    // Unreachable target: a clear error, non-zero exit.
    let _ = stop.send(());
    coordinator.shutdown().await;
    let down = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["status", "--target", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
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
