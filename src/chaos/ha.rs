//! High-availability chaos (`vigil chaos --spawn --ha N`): N `vigil serve --ha` children on one
//! Redis, disruptors that kill the active coordinator or stop it (SIGSTOP) for longer than the
//! lease and resume it, and a monitor that watches every child's `/healthz` for the
//! high-availability invariants:
//!
//! * **one active per epoch**: no epoch is ever reported active by two children, and no poll
//!   round finds two children answering 200;
//! * **a deposed epoch never answers as active**: once epoch E was seen active, no child answers
//!   200 with an epoch below E (its writes are refused by Redis in any case; the store check at
//!   the end compares what stayed).
//!
//! The figures: **takeover** (kill, stop or partition of the active → the first write a
//! successor acknowledges: a probe task only the `chaos-probe` role may claim, deleted at
//! once), the **zombie window** (resuming a stopped former active → its first 429) and the
//! **partitioned step-down** (cutting the active off from Redis → its first 429).
//!
//! The partition is loopback-only: with relays, each child reaches Redis through a TCP relay
//! of its own (a relay), which the disruptor cuts — it stops forwarding and holds every
//! connection open without answering, as a dropped network does — and heals. (Network
//! namespaces would need root and `ip`; the relay needs neither.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::disrupt::free_port;
use super::{Disruptor, DisruptorReport, Invariant};
use crate::client::transport::{HttpPool, bearer, request_body};

/// The lease timings the children run with: short, so a chaos run sees many takeovers.
pub const LEASE: Duration = Duration::from_secs(2);
/// The renew deadline of the children.
pub const RENEW_DEADLINE: Duration = Duration::from_millis(1200);
/// The retry period of the children.
pub const RETRY: Duration = Duration::from_millis(200);

/// The role of the probe tasks: no worker of the workload has it, so none claims them.
const PROBE_ROLE: &str = "chaos-probe";

struct Node {
    port: u16,
    /// Its HTTP connections (the operator token on each request, if any).
    pool: Arc<HttpPool>,
    child: Mutex<Option<Child>>,
    /// Its own way to Redis, when the group was started with relays.
    relay: Option<Relay>,
}

impl Node {
    fn pid(&self) -> Option<u32> {
        self.child.lock().as_ref().map(Child::id)
    }

    fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self
            .pid()
            .ok_or_else(|| format!("the child on port {} is not running", self.port))?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill {signal} {pid}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {pid} failed"))
        }
    }

    /// How long after `since` the child first answered `/healthz` 429 (a standby), polled
    /// every 5 ms; `None` if it did not within `within`.
    async fn stepped_down(&self, since: Instant, within: Duration) -> Option<Duration> {
        loop {
            if let Some((429, _)) = health(&self.pool, Duration::from_secs(2)).await {
                return Some(since.elapsed());
            }
            if since.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn kill(&self) {
        if let Some(mut c) = self.child.lock().take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the monitor saw.
#[derive(Default)]
struct Observed {
    /// epoch → the children seen active under it.
    actives: std::collections::BTreeMap<u64, std::collections::BTreeSet<usize>>,
    highest: u64,
    /// (invariant, checked, violations, examples)
    one_per_epoch: (u64, u64, Vec<String>),
    deposed: (u64, u64, Vec<String>),
    takeovers: Vec<Duration>,
    zombie_windows: Vec<Duration>,
    partitioned_step_downs: Vec<Duration>,
}

/// Checks one round of `/healthz` answers: the children that answered 200, with their epochs.
fn observe(o: &mut Observed, round: &[(usize, u64)]) {
    let many = round.len();
    note(&mut o.one_per_epoch, many <= 1, || {
        format!("{many} coordinators answered 200 in one round: {round:?}")
    });
    for &(i, epoch) in round {
        let highest = o.highest;
        note(&mut o.deposed, epoch >= highest, || {
            format!("child {i} answered as active under epoch {epoch} after {highest}")
        });
        o.highest = highest.max(epoch);
        let seen = o.actives.entry(epoch).or_default();
        seen.insert(i);
        let holders = seen.clone();
        note(&mut o.one_per_epoch, holders.len() == 1, || {
            format!("epoch {epoch} active on children {holders:?}")
        });
    }
}

fn note(entry: &mut (u64, u64, Vec<String>), holds: bool, describe: impl FnOnce() -> String) {
    entry.0 += 1;
    if !holds {
        entry.1 += 1;
        if entry.2.len() < 5 {
            entry.2.push(describe());
        }
    }
}

/// N `vigil serve --ha --chaos` children on one Redis and the monitor of their `/healthz`.
pub struct HaGroup {
    program: PathBuf,
    redis: String,
    args: Vec<String>,
    nodes: Vec<Node>,
    observed: Arc<Mutex<Observed>>,
    monitoring: Arc<AtomicBool>,
    /// Held by a disruptor while it works: one fault of the group at a time (a kill and a
    /// pause picking the same active at once would each undo the other's).
    busy: tokio::sync::Mutex<()>,
}

impl HaGroup {
    /// Starts `n` children (`program serve --chaos --ha --listen 127.0.0.1:PORT --redis R`
    /// with the short lease timings, then `extra`) and waits until one is active. `redis`:
    /// the Redis URL; with `relayed`, a `redis://127.0.0.1:PORT` one, which each child reaches
    /// through a relay of its own (for [`HaGroup::partition_active`]). `token`: the
    /// operator token the children require, if any.
    pub async fn start(
        program: PathBuf,
        n: usize,
        redis: &str,
        relayed: bool,
        extra: Vec<String>,
        token: Option<String>,
    ) -> Result<Self, String> {
        if n < 2 {
            return Err("--ha needs at least 2 coordinators".into());
        }
        let mut args = vec![
            "serve".to_string(),
            "--chaos".into(),
            "--ha".into(),
            "--ha-lease".into(),
            humantime::format_duration(LEASE).to_string(),
            "--ha-renew-deadline".into(),
            humantime::format_duration(RENEW_DEADLINE).to_string(),
            "--ha-retry".into(),
            humantime::format_duration(RETRY).to_string(),
            "--ui".into(),
            "false".into(),
        ];
        args.extend(extra);
        let upstream = if relayed {
            let port = redis
                .strip_prefix("redis://127.0.0.1:")
                .map(|rest| rest.trim_end_matches('/'))
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("relays need a redis://127.0.0.1:PORT URL, not {redis}"))?;
            Some(port)
        } else {
            None
        };
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let relay = match upstream {
                Some(port) => Some(Relay::start(port).await?),
                None => None,
            };
            let port = free_port()?;
            let pool = HttpPool::new(
                &format!("http://127.0.0.1:{port}"),
                bearer(token.as_deref()),
            )?;
            nodes.push(Node {
                port,
                pool: Arc::new(pool.with_connect_timeout(Duration::from_secs(2))),
                child: Mutex::new(None),
                relay,
            });
        }
        let redis = redis.to_string();
        let group = Self {
            program,
            redis,
            args,
            nodes,
            observed: Arc::default(),
            monitoring: Arc::new(AtomicBool::new(true)),
            busy: tokio::sync::Mutex::new(()),
        };
        for i in 0..n {
            group.spawn(i)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while group.active().await.is_none() {
            if Instant::now() > deadline {
                return Err("no coordinator of the group became active within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        group.monitor();
        Ok(group)
    }

    fn spawn(&self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let mut args = self.args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{}", node.port)]);
        let redis = match &node.relay {
            Some(relay) => format!("redis://127.0.0.1:{}/", relay.port),
            None => self.redis.clone(),
        };
        args.extend(["--redis".into(), redis]);
        let child = Command::new(&self.program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(super::disrupt::child_log(&format!("ha-{}", node.port)))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
        *node.child.lock() = Some(child);
        Ok(())
    }

    /// Every child's base URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The child answering `/healthz` 200 now, with its epoch.
    async fn active(&self) -> Option<(usize, u64)> {
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some((200, body)) = health(&node.pool, Duration::from_secs(2)).await {
                return Some((i, body["epoch"].as_u64().unwrap_or(0)));
            }
        }
        None
    }

    /// Polls every child's `/healthz` every 100 ms until the group is dropped, checking the
    /// invariants.
    fn monitor(&self) {
        let pools: Vec<Arc<HttpPool>> = self.nodes.iter().map(|n| Arc::clone(&n.pool)).collect();
        let observed = Arc::clone(&self.observed);
        let monitoring = Arc::clone(&self.monitoring);
        tokio::spawn(async move {
            while monitoring.load(Ordering::Relaxed) {
                // All at once, each within 500 ms: a 200 means the child's renew deadline
                // (1.2 s) was ahead, so no successor can be active within 0.8 s of it, and a
                // round spans less than that.
                let answers = futures_util::future::join_all(
                    pools
                        .iter()
                        .map(|pool| health(pool, Duration::from_millis(500))),
                )
                .await;
                let round: Vec<(usize, u64)> = answers
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, answer)| match answer {
                        Some((200, body)) => Some((i, body["epoch"].as_u64().unwrap_or(0))),
                        _ => None,
                    })
                    .collect();
                observe(&mut observed.lock(), &round);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Writes a probe task to whichever child takes it (the successor), and deletes it:
    /// when it was acknowledged. Bounded by `within`.
    async fn probe_write(&self, skip: usize, within: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + within;
        loop {
            for (i, node) in self.nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
                let create = json!({"text": "chaos probe", "role": PROBE_ROLE});
                let answer = call(&node.pool, "task.create", &create).await;
                if let Some(answer) = answer
                    && let Some(id) = answer["result"]["id"].as_str()
                {
                    let at = Instant::now();
                    let _ = call(&self.nodes[i].pool, "task.delete", &json!({"taskId": id})).await;
                    return Ok(at);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no successor acknowledged a write within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for some child to be active, at most `within`.
    async fn wait_active(&self, within: Duration) -> Result<(usize, u64), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(active) = self.active().await {
                return Ok(active);
            }
            if Instant::now() > deadline {
                return Err(format!("no active coordinator within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The disruptor that kills the active child (SIGKILL) and starts it again as a standby
    /// once a successor acknowledged a write.
    pub fn kill_active(&self) -> KillActive<'_> {
        KillActive(self)
    }

    /// The disruptor that stops the active child (SIGSTOP) for longer than the lease, waits for
    /// a successor, and resumes it.
    pub fn pause_active(&self) -> PauseActive<'_> {
        PauseActive(self)
    }

    /// The disruptor that cuts the active child off from Redis (its relay), waits for a
    /// successor and for the cut-off one to step down, and heals the cut. Needs relays.
    pub fn partition_active(&self) -> PartitionActive<'_> {
        PartitionActive(self)
    }

    fn report(&self) -> DisruptorReport {
        let o = self.observed.lock();
        DisruptorReport {
            invariants: vec![
                (Invariant::OneActivePerEpoch, o.one_per_epoch.clone()),
                (Invariant::DeposedNeverActive, o.deposed.clone()),
            ],
            figures: vec![
                ("takeover".into(), o.takeovers.clone()),
                ("zombie window".into(), o.zombie_windows.clone()),
                (
                    "partitioned step-down".into(),
                    o.partitioned_step_downs.clone(),
                ),
            ],
        }
    }
}

impl Drop for HaGroup {
    fn drop(&mut self) {
        self.monitoring.store(false, Ordering::Relaxed);
        for node in &self.nodes {
            node.kill();
        }
    }
}

/// See [`HaGroup::kill_active`].
pub struct KillActive<'a>(&'a HaGroup);

impl Disruptor for KillActive<'_> {
    fn name(&self) -> String {
        "active coordinator SIGKILL".into()
    }

    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let group = self.0;
            let _one_at_a_time = group.busy.lock().await;
            let (victim, _) = group.wait_active(Duration::from_secs(30)).await?;
            let killed = Instant::now();
            group.nodes[victim].kill();
            let acked = group.probe_write(victim, Duration::from_secs(60)).await?;
            group.observed.lock().takeovers.push(acked - killed);
            group.spawn(victim)
        })
    }

    fn report(&self) -> DisruptorReport {
        self.0.report()
    }
}

/// See [`HaGroup::pause_active`].
pub struct PauseActive<'a>(&'a HaGroup);

impl Disruptor for PauseActive<'_> {
    fn name(&self) -> String {
        "active coordinator SIGSTOP past the lease".into()
    }

    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let group = self.0;
            let _one_at_a_time = group.busy.lock().await;
            let (victim, _) = group.wait_active(Duration::from_secs(30)).await?;
            let node = &group.nodes[victim];
            let stopped = Instant::now();
            node.signal("-STOP")?;
            let acked = group.probe_write(victim, Duration::from_secs(60)).await;
            // Past the lease for sure, whatever happened.
            tokio::time::sleep_until(stopped + LEASE + Duration::from_millis(500)).await;
            let resumed = Instant::now();
            node.signal("-CONT")?;
            let acked = acked?;
            group.observed.lock().takeovers.push(acked - stopped);
            let window = node
                .stepped_down(resumed, Duration::from_secs(10))
                .await
                .ok_or("the resumed former active never stepped down")?;
            group.observed.lock().zombie_windows.push(window);
            Ok(())
        })
    }

    fn report(&self) -> DisruptorReport {
        self.0.report()
    }
}

/// See [`HaGroup::partition_active`].
pub struct PartitionActive<'a>(&'a HaGroup);

impl Disruptor for PartitionActive<'_> {
    fn name(&self) -> String {
        "active coordinator cut off from Redis".into()
    }

    fn disrupt(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let group = self.0;
            let _one_at_a_time = group.busy.lock().await;
            let (victim, _) = group.wait_active(Duration::from_secs(30)).await?;
            let node = &group.nodes[victim];
            let relay = node
                .relay
                .as_ref()
                .ok_or("the group was started without relays")?;
            let cut = Instant::now();
            relay.cut(true);
            let result = async {
                // It still answers HTTP: it must step down on its own, at its renew deadline.
                let took = node
                    .stepped_down(cut, Duration::from_secs(30))
                    .await
                    .ok_or("the cut-off active never stepped down")?;
                group.observed.lock().partitioned_step_downs.push(took);
                let acked = group.probe_write(victim, Duration::from_secs(60)).await?;
                group.observed.lock().takeovers.push(acked - cut);
                Ok(())
            }
            .await;
            relay.cut(false);
            result
        })
    }

    fn report(&self) -> DisruptorReport {
        self.0.report()
    }
}

/// A TCP relay on loopback to a Redis port, which can be cut: while cut it forwards nothing
/// and holds every connection — old and new — open without a byte, as a dropped network
/// does; healing closes the held connections, so clients reconnect.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: u16) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("relay: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("relay: {e}"))?
            .port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let mut client = client;
                    if !*watch.borrow() {
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = watch.wait_for(|cut| *cut) => {}
                        }
                        drop(server);
                    }
                    // Cut: hold the connection silently until healed, then close it.
                    let _ = watch.wait_for(|cut| !*cut).await;
                });
            }
        });
        Ok(Self { port, cut, task })
    }

    fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A child's `/healthz` within `within`: the status and the JSON body (`Null` if not JSON).
/// `None` when nothing answers.
async fn health(pool: &HttpPool, within: Duration) -> Option<(u16, Value)> {
    let (status, body) = tokio::time::timeout(within, pool.get("/healthz"))
        .await
        .ok()?
        .ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One JSON-RPC call to a child within 2 s: the whole answer object, `None` without an
/// HTTP 2xx answer.
async fn call(pool: &HttpPool, method: &str, params: &Value) -> Option<Value> {
    let body = request_body(method, params, 1);
    let answer = tokio::time::timeout(Duration::from_secs(2), pool.post(body))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&answer).ok()
}
