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
