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

/// Where a spawned `vigil serve` writes its log: nowhere, unless `VIGIL_CHAOS_LOGS` names a
/// directory, where it appends to `NAME.log`.
pub(super) fn child_log(name: &str) -> Stdio {
    let Some(dir) = std::env::var_os("VIGIL_CHAOS_LOGS") else {
        return Stdio::null();
    };
    let path = std::path::Path::new(&dir).join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
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
                .stderr(child_log(&format!("serve-{}", self.port)))
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

/// A private Redis Sentinel deployment on loopback for `vigil chaos --spawn-sentinel`: two data
/// nodes (a primary and its replica) and three sentinels (quorum 2, down-after 1 s,
/// failover-timeout 5 s) monitoring them as [`SentinelRedis::MASTER`]. As a [`Disruptor`] it
/// kills the current primary (SIGKILL), waits until the sentinels promote the replica, and
/// starts the killed node again as a replica of the new primary: the next disruption kills
/// the other one. Drop kills every process and removes the temp dir.
pub struct SentinelRedis {
    dir: PathBuf,
    /// The data nodes' ports and processes.
    data: [(u16, Mutex<Option<Child>>); 2],
    sentinels: Vec<(u16, Mutex<Option<Child>>)>,
}

impl SentinelRedis {
    /// The monitored master's name.
    pub const MASTER: &'static str = "vigil-chaos";

    /// Starts the five processes and waits (at most 30 s) until the replica is in sync and
    /// every sentinel knows it and the two other sentinels.
    pub async fn start() -> Result<Self, String> {
        let first = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "vigil-chaos-sentinel-{}-{first}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let set = Self {
            data: [(first, Mutex::new(None)), (free_port()?, Mutex::new(None))],
            sentinels: (0..3)
                .map(|_| free_port().map(|p| (p, Mutex::new(None))))
                .collect::<Result<_, _>>()?,
            dir,
        };
        set.spawn_data(0, None).await?;
        set.spawn_data(1, Some(first)).await?;
        for (port, child) in &set.sentinels {
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {m} 127.0.0.1 {first} 2\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 5000\n\
                     sentinel parallel-syncs {m} 1\n",
                    set.dir.display(),
                    m = Self::MASTER,
                ),
            )
            .map_err(|e| format!("{}: {e}", conf.display()))?;
            let sentinel = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting a sentinel (is redis-server installed?): {e}"))?;
            *child.lock() = Some(sentinel);
            wait_for_port(*port, "redis sentinel").await?;
        }
        set.wait_ready(Duration::from_secs(30)).await?;
        Ok(set)
    }

    async fn spawn_data(&self, i: usize, replica_of: Option<u16>) -> Result<(), String> {
        let (port, child) = &self.data[i];
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir);
        if let Some(primary) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let started = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server (is it installed?): {e}"))?;
        *child.lock() = Some(started);
        wait_for_port(*port, "redis-server").await
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/vigil-chaos`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::MASTER)
    }

    /// The primary's port as the first answering sentinel names it.
    async fn primary(&self) -> Option<u16> {
        for (port, _) in &self.sentinels {
            let named: Result<(String, u16), _> = query(
                *port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(Self::MASTER),
            )
            .await;
            if let Ok((_, primary)) = named {
                return Some(primary);
            }
        }
        None
    }

    /// Whether the replica of `primary` is in sync and every sentinel knows it and the others.
    async fn ready_on(&self, primary: u16) -> bool {
        let Some((replica, _)) = self.data.iter().find(|(p, _)| *p != primary) else {
            return false;
        };
        let info: Result<String, _> = query(*replica, redis::cmd("INFO").arg("replication")).await;
        if !info.is_ok_and(|i| i.contains("master_link_status:up")) {
            return false;
        }
        for (port, _) in &self.sentinels {
            let master: Result<std::collections::HashMap<String, String>, _> = query(
                *port,
                redis::cmd("SENTINEL").arg("master").arg(Self::MASTER),
            )
            .await;
            let Ok(master) = master else { return false };
            let knows = master.get("num-other-sentinels").map(String::as_str) == Some("2")
                && master.get("num-slaves").map(String::as_str) == Some("1")
                && master.get("port").and_then(|p| p.parse::<u16>().ok()) == Some(primary);
            if !knows {
                return false;
            }
        }
        true
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(primary) = self.primary().await
                && self.ready_on(primary).await
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the sentinel deployment was not ready within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One command to the server on `port` over a fresh connection, within 2 s.
async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    let ask = async {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        cmd.query_async(&mut con).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .map_err(|_| format!("127.0.0.1:{port} did not answer within 2 s"))?
}

impl Drop for SentinelRedis {
    fn drop(&mut self) {
        for (_, child) in self.sentinels.iter().chain(self.data.iter()) {
            stop(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Disruptor for SentinelRedis {
    fn name(&self) -> String {
        "redis primary SIGKILL under sentinel".into()
    }

    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let primary = self.primary().await.ok_or("no sentinel names a primary")?;
            let i = self
                .data
                .iter()
                .position(|(p, _)| *p == primary)
                .ok_or_else(|| format!("the sentinels name an unknown primary {primary}"))?;
            stop(&self.data[i].1);
            let other = self.data[1 - i].0;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while self.primary().await != Some(other) {
                if std::time::Instant::now() > deadline {
                    return Err("the sentinels did not promote the replica within 30 s".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Back as a replica of the new primary (empty: it syncs from it).
            self.spawn_data(i, Some(other)).await?;
            self.wait_ready(Duration::from_secs(30)).await
        })
    }
}
