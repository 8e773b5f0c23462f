//! Disruptors for `vigil chaos --spawn`: a `vigil serve` child killed with SIGKILL and started
//! again, and a private `redis-server` stopped and started again (empty).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use super::Disruptor;

/// A free loopback port.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

async fn wait_for_port(port: u16, what: &str) -> Result<(), String> {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!(
        "{what} did not listen on 127.0.0.1:{port} within 5 s"
    ))
}

fn stop(child: &Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().take() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
}

/// A `vigil serve --chaos` child process on loopback.
pub struct ServeProcess {
    program: PathBuf,
    args: Vec<String>,
    /// Its port.
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl ServeProcess {
    /// Starts `program serve --chaos --listen 127.0.0.1:PORT EXTRA…` and waits until it listens.
    pub async fn start(program: PathBuf, extra: Vec<String>) -> Result<Self, String> {
        let port = free_port()?;
        let mut args = vec![
            "serve".to_string(),
            "--chaos".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra);
        let p = Self {
            program,
            args,
            port,
            child: Mutex::new(None),
        };
        p.spawn().await?;
        Ok(p)
    }

    /// Starts the child and waits until it listens. Like a process supervisor, starts it again
    /// when it exits first (`vigil serve` refuses to start while its Redis is unreachable, as
    /// recovery must read the store), for up to 30 s.
    async fn spawn(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let child = Command::new(&self.program)
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
            *self.child.lock() = Some(child);
            loop {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(());
                }
                let exited = self
                    .child
                    .lock()
                    .as_mut()
                    .is_none_or(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "vigil serve did not listen on 127.0.0.1:{} within 30 s",
                        self.port
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if std::time::Instant::now() > deadline {
                return Err("vigil serve kept exiting for 30 s (is its Redis up?)".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        stop(&self.child);
    }
}

impl Disruptor for ServeProcess {
    fn name(&self) -> String {
        "process SIGKILL + restart".into()
    }
    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            stop(&self.child);
            self.spawn().await
        })
    }
}

/// A private `redis-server` in a temp dir on loopback: with an append-only file fsynced on
/// every write (`durable`), so a restart keeps every acknowledged write, or without any
/// persistence, so it comes back empty.
pub struct RedisProcess {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    durable: bool,
    child: Mutex<Option<Child>>,
    /// How long it stays down when disrupted.
    pub down_for: Duration,
}

impl RedisProcess {
    /// Starts one.
    pub async fn start(durable: bool) -> Result<Self, String> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("vigil-chaos-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let r = Self {
            port,
            dir,
            durable,
            child: Mutex::new(None),
            down_for: Duration::from_secs(1),
        };
        r.spawn().await?;
        Ok(r)
    }

    async fn spawn(&self) -> Result<(), String> {
        let persistence: &[&str] = if self.durable {
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]
        } else {
            &["--save", "", "--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(persistence)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server (is it installed?): {e}"))?;
        *self.child.lock() = Some(child);
        wait_for_port(self.port, "redis-server").await
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        stop(&self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Disruptor for RedisProcess {
    fn name(&self) -> String {
        if self.durable {
            "redis restart".into()
        } else {
            "redis restart (empty)".into()
        }
    }
    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            stop(&self.child);
            tokio::time::sleep(self.down_for).await;
            self.spawn().await
        })
    }
}
