//! A private `redis-server` for one test: a free loopback port, its own temp dir, no
//! persistence (unless asked), stopped and removed on drop. Tests never touch a server they did
//! not start. `redis-server` must be installed (`.ci/run` installs Debian's package).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    lock: PathBuf,
    /// Keeps its data across restarts (AOF, fsync always).
    durable: bool,
    /// More `redis-server` arguments (`--replicaof 127.0.0.1 P`, …), given on every start.
    extra: Vec<String>,
}

/// A loopback port nothing listens on, reserved like [`reserve_port`]'s until the guard drops.
pub fn free_port() -> (u16, PortLock) {
    let (port, lock) = reserve_port();
    (port, PortLock(lock))
}

/// Removes a port's lock file on drop.
pub struct PortLock(PathBuf);

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A free loopback port, reserved for this test across processes: nextest runs tests in
/// parallel processes, and a server stopped mid-test must not find its port taken by another
/// test's server when it restarts. A lock file per port (created exclusively, removed on drop)
/// keeps other tests from picking it meanwhile.
fn reserve_port() -> (u16, PathBuf) {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let lock = std::env::temp_dir().join(format!("vigil-test-port-{port}.lock"));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_ok()
        {
            return (port, lock);
        }
    }
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that keeps its data across [`RedisServer::restart`] (append-only file, fsync
    /// always), like a production Redis coming back from an outage.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    /// A server started with `extra` arguments too (e.g. `["--replicaof", "127.0.0.1", "P"]`).
    pub fn start_args(extra: &[&str]) -> Self {
        Self::start_full(false, extra)
    }

    fn start_with(durable: bool) -> Self {
        Self::start_full(durable, &[])
    }

    fn start_full(durable: bool, extra: &[&str]) -> Self {
        let (port, lock) = reserve_port();
        let dir = std::env::temp_dir().join(format!("vigil-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port,
            dir,
            lock,
            durable,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--save",
                "",
                "--appendonly",
                if self.durable { "yes" } else { "no" },
                "--appendfsync",
                "always",
                "--protected-mode",
                "yes",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"+PONG")
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data is gone unless it is durable).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is answered (a hung
    /// Redis). [`resume`](Self::resume) thaws it; `stop` and drop kill it either way.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT): it goes on with what it was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// A replica of `primary` (`--replicaof`), returned once it is in sync: its link is up
    /// and the primary lists it online (at most 10 s) — the primary marks it so only after
    /// the replica's first acknowledgement, a moment after the replica's link is up.
    pub async fn replica_of(primary: &RedisServer) -> Self {
        let replica = Self::start_args(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let linked = query::<String>(replica.port, redis::cmd("INFO").arg("replication"))
                .await
                .is_ok_and(|info| info.contains("master_link_status:up"));
            let counted = query::<String>(primary.port, redis::cmd("INFO").arg("replication"))
                .await
                .is_ok_and(|info| info.contains("state=online"));
            if linked && counted {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on port {} did not sync with {} in 10 s",
                replica.port,
                primary.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`pause`](Self::pause), thawed again when the guard drops — also when the test fails.
    pub fn paused(&self) -> Paused<'_> {
        self.pause();
        Paused(self)
    }

    /// Starts it again on the same port as a replica of `primary` (empty: it syncs from it).
    pub fn restart_as_replica_of(&mut self, primary: u16) {
        self.stop();
        self.extra = vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ];
        self.spawn();
    }

    /// Starts it again on the same port: empty, or with its data if durable.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `calls` of a command from INFO commandstats (e.g. "evalsha").
    pub async fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A server paused by [`RedisServer::paused`]; dropping it resumes the server (SIGCONT).
pub struct Paused<'a>(&'a RedisServer);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if let Some(child) = &self.0.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// A sentinel process of a [`SentinelSet`].
struct SentinelProcess {
    child: Child,
    port: u16,
    lock: PathBuf,
}

/// A Redis Sentinel deployment for one test, all private on loopback: a primary, one replica
/// of it and three sentinels (quorum 2, down-after 1 s, failover-timeout 5 s) monitoring it as
/// [`SentinelSet::MASTER`]. Their configuration files live in a temp dir of their own (the
/// sentinels rewrite them). Drop kills every process (by its pid) and removes the files.
pub struct SentinelSet {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<SentinelProcess>,
    dir: PathBuf,
}

impl SentinelSet {
    /// The monitored master's name.
    pub const MASTER: &'static str = "vm";

    /// Starts the five processes and waits (at most 20 s) until the replica is in sync and
    /// every sentinel knows the replica and the two other sentinels.
    pub async fn start() -> Self {
        let primary = RedisServer::start();
        let port = primary.port.to_string();
        let replica = RedisServer::start_args(&["--replicaof", "127.0.0.1", &port]);
        let dir = std::env::temp_dir().join(format!(
            "vigil-sentinel-{}-{}",
            std::process::id(),
            primary.port
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let (port, lock) = reserve_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {m} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 5000\n\
                     sentinel parallel-syncs {m} 1\n",
                    dir.display(),
                    m = Self::MASTER,
                    p = primary.port,
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            sentinels.push(SentinelProcess { child, port, lock });
        }
        let set = Self {
            primary,
            replica,
            sentinels,
            dir,
        };
        set.wait_ready().await;
        set
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ready().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel set did not become ready in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&self) -> bool {
        let Ok(info) =
            query::<String>(self.replica.port, redis::cmd("INFO").arg("replication")).await
        else {
            return false;
        };
        if !info.contains("master_link_status:up") {
            return false;
        }
        for s in &self.sentinels {
            let replicas = query::<Vec<redis::Value>>(
                s.port,
                redis::cmd("SENTINEL").arg("replicas").arg(Self::MASTER),
            )
            .await;
            if !replicas.is_ok_and(|r| !r.is_empty()) {
                return false;
            }
            let master = query::<std::collections::HashMap<String, String>>(
                s.port,
                redis::cmd("SENTINEL").arg("master").arg(Self::MASTER),
            )
            .await;
            if !master.is_ok_and(|m| m.get("num-other-sentinels").map(String::as_str) == Some("2"))
            {
                return false;
            }
        }
        true
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/vm`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::MASTER)
    }

    /// The port the sentinels name as the primary now (asked of the first that answers).
    pub async fn primary_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            if let Ok((_host, port)) = query::<(String, u16)>(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(Self::MASTER),
            )
            .await
            {
                return Some(port);
            }
        }
        None
    }

    /// `SENTINEL FAILOVER`: the sentinels promote the replica and demote the live primary to a
    /// replica of it (which then answers writes with READONLY).
    pub async fn force_failover(&self) {
        let _: () = query(
            self.sentinels[0].port,
            redis::cmd("SENTINEL").arg("failover").arg(Self::MASTER),
        )
        .await
        .unwrap();
    }

    /// Waits (at most `within`) until the replica's replication offset reaches the primary's,
    /// so that everything written to the primary so far survives its loss.
    pub async fn wait_replicated(&self, within: Duration) {
        let offset = |info: &str, field: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().parse().ok())
        };
        let deadline = Instant::now() + within;
        loop {
            let primary: String = query(self.primary.port, redis::cmd("INFO").arg("replication"))
                .await
                .unwrap();
            let replica: String = query(self.replica.port, redis::cmd("INFO").arg("replication"))
                .await
                .unwrap();
            let wrote = offset(&primary, "master_repl_offset:").unwrap();
            if offset(&replica, "slave_repl_offset:").is_some_and(|r| r >= wrote) {
                return;
            }
            assert!(Instant::now() < deadline, "the replica did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One command to the server on `port` over a fresh connection.
async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut con).await
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            let _ = s.child.kill();
            let _ = s.child.wait();
            let _ = std::fs::remove_file(&s.lock);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
