//! The chaos driver: a workload with faults injected while it runs, and the invariants checked
//! during and after it.
//!
//! The workload (over any [`Transport`]: JSON-RPC over HTTP or WebSocket to a server started
//! with `--chaos`, or an embedded coordinator): `workers` instances heartbeat open loop at
//! `heartbeat_rate`; task flows create tasks, claim them, step-heartbeat and complete them;
//! workers acquire, and sometimes release, exclusive leases. `doomed` workers really die
//! part-way through: they claim tasks and take leases, then stop heartbeating, so their work
//! must be taken back. Meanwhile `chaos.kill` kills InstanceActors, the LeaderActor and the
//! Persister at the configured rates, and [`Disruptor`]s may restart Redis or the whole
//! process (SIGKILL) at their own intervals ([`disrupt`] has both).
//!
//! Every random choice (victims, doomed workers, when they die, who claims) comes from `seed`,
//! so a run's faults are reproducible from the seed it prints; their exact timing is not.
//!
//! The invariants ([`Invariant`]), each counted as checked and violated:
//! * a live instance (one that kept heartbeating within its TTL) is never declared expired;
//! * every acknowledged registration, task and lease is present at the end;
//! * terms never go back for any observer, and each term has at most one leader;
//! * every task of a really dead worker is taken back exactly once, and completed at most once;
//! * no write with a stale claim token is applied (the dead workers' tokens are tried);
//! * fencing tokens of a key only grow;
//! * the store equals memory after the run (`chaos.verify_store`; with Redis only);
//! * an adversary — another principal, a worker token of its own — can act as no worker: it
//!   unregisters, re-registers, heartbeats, claims and takes leases as live workers, and tries
//!   their live claim tokens as if they had leaked, and every call must be refused (−32002);
//! * no answer or event the adversary reads carries a claim token.

pub mod disrupt;
pub mod ha;
mod ledger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::load::Transport;
use crate::load::client::Client;
pub use ledger::Invariant;
use ledger::Ledger;

/// TTL of the driver's leases (never renewed).
const LEASE_TTL: Duration = Duration::from_secs(60);

/// A fault the driver cannot inject by JSON-RPC: restarting Redis, or killing the coordinator
/// process and starting it again. `disrupt` returns once the system is back.
pub trait Disruptor: Send + Sync {
    /// What it does, for the report (e.g. `redis restart`).
    fn name(&self) -> String;
    /// Injects the fault and brings the system back.
    fn disrupt(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
    /// What it observed besides the faults: invariants it checks and timings it measured
    /// (none by default). Read once, after the workload.
    fn report(&self) -> DisruptorReport {
        DisruptorReport::default()
    }
}

/// One invariant's tally: (checked, violations, the first examples).
pub type Tally = (u64, u64, Vec<String>);

/// What a [`Disruptor`] observed (see [`ha`]).
#[derive(Debug, Clone, Default)]
pub struct DisruptorReport {
    /// Per invariant: (checked, violations, first examples).
    pub invariants: Vec<(Invariant, Tally)>,
    /// Timings by name (e.g. `takeover`).
    pub figures: Vec<(String, Vec<Duration>)>,
}

/// One chaos run.
#[derive(Clone)]
pub struct ChaosConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// How long the workload runs (the final checks come after).
    pub duration: Duration,
    /// Instances.
    pub workers: usize,
    /// Of those, how many really die part-way (between 20 % and 50 % of the run).
    pub doomed: usize,
    /// Their TTL (short, so the dead expire within the run).
    pub ttl: Duration,
    /// Heartbeats per second, over all live workers.
    pub heartbeat_rate: f64,
    /// Task flows started per second.
    pub task_rate: f64,
    /// Lease acquisitions per second.
    pub lease_rate: f64,
    /// InstanceActor kills per second.
    pub instance_kills: f64,
    /// LeaderActor kills per second.
    pub leader_kills: f64,
    /// Persister kills per second (only meaningful with a store).
    pub persister_kills: f64,
    /// The adversary's attempts per second (0: none).
    pub adversary_rate: f64,
    /// The adversary's bearer token, a `worker` principal's, for a server (an embedded
    /// coordinator gives it a worker principal of its own). Without one, against a server,
    /// there is no adversary.
    pub adversary_token: Option<String>,
    /// Id prefix.
    pub prefix: String,
}

impl Default for ChaosConfig {
    /// 200 workers (10 doomed, TTL 3 s) at 1000 heartbeats/s, 20 task flows/s, 5 lease
    /// acquisitions/s, 100 InstanceActor kills/s, one LeaderActor kill/s, for 15 s.
    fn default() -> Self {
        Self {
            seed: 1,
            duration: Duration::from_secs(15),
            workers: 200,
            doomed: 10,
            ttl: Duration::from_secs(3),
            heartbeat_rate: 1000.0,
            task_rate: 20.0,
            lease_rate: 5.0,
            instance_kills: 100.0,
            leader_kills: 1.0,
            persister_kills: 0.0,
            adversary_rate: 10.0,
            adversary_token: None,
            prefix: "chaos".into(),
        }
    }
}

impl std::fmt::Debug for ChaosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosConfig")
            .field("seed", &self.seed)
            .field("duration", &self.duration)
            .field("workers", &self.workers)
            .field("doomed", &self.doomed)
            .finish_non_exhaustive()
    }
}

/// One invariant's line in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvariantResult {
    /// Which.
    pub invariant: Invariant,
    /// What it means.
    pub statement: &'static str,
    /// Observations checked against it.
    pub checked: u64,
    /// Violations found.
    pub violations: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChaosReport {
    /// The seed (rerun with it to get the same faults).
    pub seed: u64,
    /// Seconds of workload.
    pub duration_s: f64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Operations acknowledged, by method.
    pub operations: BTreeMap<String, u64>,
    /// Calls that got no answer (server down) or an error, by method and code.
    pub unacknowledged: BTreeMap<String, u64>,
    /// The invariants.
    pub invariants: Vec<InvariantResult>,
    /// Timings the disruptors measured, in milliseconds, by name (`takeover`: a kill or stop
    /// of the active coordinator → the first write a successor acknowledged; `zombie window`:
    /// the resume of a stopped former active → its first 429).
    pub figures: BTreeMap<String, Vec<f64>>,
}

impl ChaosReport {
    /// Violations over all invariants.
    pub fn violations(&self) -> u64 {
        self.invariants.iter().map(|i| i.violations).sum()
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "seed {}  workload {:.1} s  faults {}  operations {}  violations {}\n",
            self.seed,
            self.duration_s,
            self.faults.values().sum::<u64>(),
            self.operations.values().sum::<u64>(),
            self.violations()
        );
        out.push_str("faults:");
        for (k, n) in &self.faults {
            out.push_str(&format!("  {k} {n}"));
        }
        out.push_str("\noperations:");
        for (k, n) in &self.operations {
            out.push_str(&format!("  {k} {n}"));
        }
        if !self.unacknowledged.is_empty() {
            out.push_str("\nunacknowledged:");
            for (k, n) in &self.unacknowledged {
                out.push_str(&format!("  {k} {n}"));
            }
        }
        for (name, ms) in &self.figures {
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            out.push_str(&format!(
                "\n{name}: {} times, min {:.0} ms, median {:.0} ms, max {:.0} ms",
                sorted.len(),
                sorted[0],
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            ));
        }
        out.push_str(&format!(
            "\n{:<22} {:>9} {:>10}  statement\n",
            "invariant", "checked", "violations"
        ));
        for i in &self.invariants {
            out.push_str(&format!(
                "{:<22} {:>9} {:>10}  {}\n",
                format!("{:?}", i.invariant),
                i.checked,
                i.violations,
                i.statement
            ));
            for e in &i.examples {
                out.push_str(&format!("    {e}\n"));
            }
        }
        out
    }
}

struct Driver {
    config: ChaosConfig,
    client: Client,
    adversary: Option<Client>,
    ledger: Mutex<Ledger>,
    start: Instant,
}

impl Driver {
    async fn call(&self, method: &'static str, params: Value) -> Result<Value, i64> {
        let result = self.client.call(method, params).await;
        let mut l = self.ledger.lock();
        match &result {
            Ok(_) => *l.operations.entry(method.to_string()).or_default() += 1,
            Err(code) => {
                *l.unacknowledged
                    .entry(format!("{method} {code}"))
                    .or_default() += 1
            }
        }
        result
    }

    fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream)
    }

    async fn register(&self, w: usize) -> bool {
        let id = self.ledger.lock().workers[w].id.clone();
        let ttl_ms = self.config.ttl.as_millis() as u64;
        let sent = Instant::now();
        match self
            .call(
                "system.register",
                json!({"id": id, "roles": ["worker"], "ttlMs": ttl_ms}),
            )
            .await
        {
            Ok(answer) => {
                self.ledger.lock().registered(w, sent, &answer);
                true
            }
            Err(_) => false,
        }
    }

    /// Heartbeats, round robin over the live workers, open loop.
    async fn heartbeats(self: &Arc<Self>, until: Instant) {
        let interval = Duration::from_secs_f64(1.0 / self.config.heartbeat_rate);
        let mut tick = tokio::time::interval(interval.max(Duration::from_micros(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let per_tick = if interval < Duration::from_micros(100) {
            (Duration::from_micros(100).as_secs_f64() / interval.as_secs_f64()).round() as usize
        } else {
            1
        };
        let mut next = 0usize;
        let mut calls = tokio::task::JoinSet::new();
        while Instant::now() < until {
            tick.tick().await;
            for _ in 0..per_tick {
                let n = self.config.workers;
                let Some(w) = (0..n)
                    .map(|k| (next + k) % n)
                    .find(|&w| self.ledger.lock().may_heartbeat(w))
                else {
                    break;
                };
                next = w + 1;
                self.ledger.lock().workers[w].in_flight = true;
                let driver = Arc::clone(self);
                calls.spawn(async move { driver.heartbeat(w).await });
            }
            while calls.try_join_next().is_some() {}
        }
        while calls.join_next().await.is_some() {}
    }

    async fn heartbeat(&self, w: usize) {
        let id = self.ledger.lock().workers[w].id.clone();
        let sent = Instant::now();
        let result = self
            .call("system.heartbeat", json!({"instanceId": id}))
            .await;
        let again = {
            let mut l = self.ledger.lock();
            l.workers[w].in_flight = false;
            match result {
                Ok(answer) => l.heartbeat_answered(w, sent, &answer, self.config.ttl),
                Err(_) => false,
            }
        };
        if again {
            self.register(w).await;
        }
    }

    /// Task flows.
    async fn tasks(self: &Arc<Self>, until: Instant) {
        if self.config.task_rate <= 0.0 {
            return;
        }
        let mut rng = self.rng(1);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.config.task_rate));
        let mut flows = tokio::task::JoinSet::new();
        let mut n = 0u64;
        while Instant::now() < until {
            tick.tick().await;
            // A third of the claims go to doomed workers still alive, so that dead workers
            // hold work to be taken back.
            let pick_doomed = rng.random_bool(1.0 / 3.0);
            let choice = rng.random::<u64>();
            let driver = Arc::clone(self);
            n += 1;
            flows.spawn(async move { driver.task_flow(n, pick_doomed, choice).await });
            while flows.try_join_next().is_some() {}
        }
        while flows.join_next().await.is_some() {}
    }

    async fn task_flow(&self, n: u64, pick_doomed: bool, choice: u64) {
        let Ok(task) = self
            .call("task.create", json!({"text": format!("chaos task {n}")}))
            .await
        else {
            return;
        };
        let Some(task_id) = task.get("id").and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        self.ledger.lock().task_created(&task_id);
        let Some(w) = self.ledger.lock().pick_claimer(pick_doomed, choice) else {
            return;
        };
        let worker = self.ledger.lock().workers[w].id.clone();
        let Ok(claim) = self.call("task.claim", json!({"workerId": worker})).await else {
            return;
        };
        let (Some(id), Some(token)) = (
            claim.get("taskId").and_then(Value::as_str),
            claim.get("claimToken").and_then(Value::as_str),
        ) else {
            return;
        };
        let (id, token) = (id.to_string(), token.to_string());
        self.ledger.lock().task_claimed(&id, w, &token);
        if self.ledger.lock().workers[w].doomed {
            return; // held until its worker dies
        }
        let step = json!({"taskId": id, "claimToken": token, "extendLeasesSec": 0});
        if self.call("task.heartbeat", step).await.is_err() {
            return;
        }
        let done = json!({"taskId": id, "claimToken": token, "result": {"n": n}});
        if let Ok(answer) = self.call("task.complete", done).await {
            self.ledger.lock().task_completion(&id, &token, &answer);
        }
    }

    /// Lease acquisitions (and releases of about half); never renewed, so a grant that is not
    /// released lapses after [`LEASE_TTL`].
    async fn leases(self: &Arc<Self>, until: Instant) {
        if self.config.lease_rate <= 0.0 {
            return;
        }
        let mut rng = self.rng(2);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.config.lease_rate));
        while Instant::now() < until {
            tick.tick().await;
            let key = format!("chaos/{}", rng.random_range(0..20));
            let choice = rng.random::<u64>();
            let release = rng.random_bool(0.5);
            let Some(w) = self
                .ledger
                .lock()
                .pick_claimer(rng.random_bool(0.25), choice)
            else {
                continue;
            };
            let holder = self.ledger.lock().workers[w].id.clone();
            let acquire = json!({"key": key, "holder": holder, "ttlSec": LEASE_TTL.as_secs()});
            let sent = Instant::now();
            let Ok(answer) = self.call("lease.acquire", acquire).await else {
                continue;
            };
            if answer["acquired"] != true {
                continue;
            }
            let token = answer["fencingToken"].as_u64().unwrap_or(0);
            self.ledger
                .lock()
                .lease_acquired(&key, w, token, sent, LEASE_TTL);
            if release && !self.ledger.lock().workers[w].doomed {
                let params = json!({"key": key, "holder": holder});
                if let Ok(answer) = self.call("lease.release", params).await
                    && answer["released"] == true
                {
                    self.ledger.lock().lease_released(&key, token);
                }
            }
        }
    }

    /// The doomed workers stop heartbeating, each at a seeded moment between 20 % and 50 %
    /// of the run.
    async fn dooms(&self) {
        let mut rng = self.rng(3);
        let d = self.config.duration.as_secs_f64();
        let mut deaths: Vec<(f64, usize)> = self
            .ledger
            .lock()
            .doomed()
            .into_iter()
            .map(|w| (rng.random_range(0.2 * d..0.5 * d), w))
            .collect();
        deaths.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at, w) in deaths {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(at)).await;
            self.ledger.lock().die(w);
        }
    }

    /// `chaos.kill` of `actor` at `rate` per second.
    async fn kills(&self, actor: &'static str, rate: f64, stream: u64, until: Instant) {
        if rate <= 0.0 {
            return;
        }
        let mut rng = self.rng(stream);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.tick().await; // not at once
        while Instant::now() < until {
            tick.tick().await;
            let params = if actor == "instance" {
                let w = rng.random_range(0..self.config.workers);
                let id = self.ledger.lock().workers[w].id.clone();
                json!({"actor": "instance", "ids": [id]})
            } else {
                json!({"actor": actor})
            };
            if let Ok(answer) = self.client.call("chaos.kill", params).await
                && answer["killed"].as_u64().unwrap_or(0) > 0
            {
                *self
                    .ledger
                    .lock()
                    .faults
                    .entry(format!("kill {actor}"))
                    .or_default() += 1;
            }
        }
    }

    /// The adversary: another principal that reads every view and tries, against living
    /// workers, every call that acts as them — and their live claim tokens, as if leaked.
    async fn adversary(&self, until: Instant) {
        let Some(adversary) = &self.adversary else {
            return;
        };
        if self.config.adversary_rate <= 0.0 {
            return;
        }
        let mut rng = self.rng(20);
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.config.adversary_rate));
        let mut round = 0usize;
        while Instant::now() < until {
            tick.tick().await;
            round += 1;
            // Read a view, as any principal may.
            let (method, params) = match round % 3 {
                0 => ("task.list", json!({"limit": crate::model::MAX_LIST_LIMIT})),
                1 => ("lease.list", json!({"limit": crate::model::MAX_LIST_LIMIT})),
                _ => (
                    "system.get_state",
                    json!({"limit": crate::model::MAX_LIST_LIMIT}),
                ),
            };
            if let Ok(answer) = adversary.call(method, params).await {
                self.ledger
                    .lock()
                    .adversary_read(method, &answer.to_string());
            }
            // Act as a living worker.
            let victim = {
                let l = self.ledger.lock();
                let living: Vec<usize> = (0..l.workers.len())
                    .filter(|&w| !l.workers[w].doomed && l.workers[w].dead_at.is_none())
                    .collect();
                (!living.is_empty()).then(|| {
                    l.workers[living[rng.random_range(0..living.len())]]
                        .id
                        .clone()
                })
            };
            if let Some(id) = victim {
                let key = format!("chaos/{}", rng.random_range(0..20));
                let (method, params) = match round % 7 {
                    0 => ("system.unregister", json!({"instanceId": id})),
                    1 => (
                        "system.register",
                        json!({"id": id, "roles": ["worker"], "ttlMs": 1000}),
                    ),
                    2 => ("system.heartbeat", json!({"instanceId": id})),
                    3 => ("task.claim", json!({"workerId": id})),
                    4 => (
                        "lease.acquire",
                        json!({"key": key, "holder": id, "ttlSec": 1}),
                    ),
                    5 => (
                        "lease.renew",
                        json!({"key": key, "holder": id, "ttlSec": 1}),
                    ),
                    _ => ("lease.release", json!({"key": key, "holder": id})),
                };
                let result = adversary.call(method, params).await;
                let refused = match &result {
                    Err(code) if *code == crate::rpc::code::UNAUTHORIZED => Some(true),
                    Err(_) => None,
                    // The victim died meanwhile: the (idempotent) unregister changed nothing.
                    Ok(answer) if answer["wasRegistered"] == false => Some(true),
                    Ok(_) => Some(false),
                };
                self.ledger
                    .lock()
                    .foreign_attempt(method, refused, || format!("{result:?}"));
            }
            // Use a living worker's claim token, as if it had leaked.
            let leaked = {
                let claims = self.ledger.lock().live_claims();
                (!claims.is_empty()).then(|| claims[rng.random_range(0..claims.len())].clone())
            };
            if let Some((task, token)) = leaked {
                let (method, params) = if round.is_multiple_of(2) {
                    (
                        "task.heartbeat",
                        json!({"taskId": task, "claimToken": token, "extendLeasesSec": 0}),
                    )
                } else {
                    (
                        "task.complete",
                        json!({"taskId": task, "claimToken": token, "result": {"adversary": true}}),
                    )
                };
                let result = adversary.call(method, params).await;
                let refused = match &result {
                    Err(code) if *code == crate::rpc::code::UNAUTHORIZED => Some(true),
                    // The claim ended meanwhile: refused as stale, changed nothing.
                    Ok(answer) if answer["status"] == "stale_claim" => Some(true),
                    Ok(_) => Some(false),
                    Err(_) => None,
                };
                self.ledger
                    .lock()
                    .foreign_attempt(method, refused, || format!("{result:?}"));
            }
        }
    }

    async fn disruptions(&self, d: &dyn Disruptor, every: Duration, until: Instant) {
        if every.is_zero() {
            return; // only observes (its report is read at the end)
        }
        let mut at = self.start + every;
        while at < until {
            tokio::time::sleep_until(at).await;
            match d.disrupt().await {
                Ok(()) => {
                    let mut l = self.ledger.lock();
                    *l.faults.entry(d.name()).or_default() += 1;
                    l.last_disruption = Some(Instant::now());
                }
                Err(e) => self.ledger.lock().disruption_failed(&d.name(), &e),
            }
            at += every;
        }
    }

    /// The final checks, once the workload has stopped.
    async fn verify(&self) {
        // Let the dead expire and their work be taken back: TTL plus a margin for the sweep. A
        // coordinator restarted after a death gives every instance it recovers a full TTL from
        // the restart (the default restart grace), so count from the later of the two.
        let (last_death, last_restart) = {
            let l = self.ledger.lock();
            (l.last_death(), l.last_disruption)
        };
        if let Some(dead_at) = last_death {
            let from = last_restart.map_or(dead_at, |r| r.max(dead_at));
            let settle = from + self.config.ttl + Duration::from_secs(2);
            tokio::time::sleep_until(settle).await;
        }
        // Zombies: each dead worker's claim tokens must be refused.
        let zombies = self.ledger.lock().zombie_claims();
        for (task, token) in zombies {
            let params = json!({"taskId": task, "claimToken": token, "result": {"zombie": true}});
            if let Ok(answer) = self.client.call("task.complete", params).await {
                self.ledger.lock().zombie_answer(&task, &answer);
            }
        }
        let state = read_all(&self.client, "system.get_state", "instances").await;
        let tasks = read_all(&self.client, "task.list", "tasks").await;
        let leases = read_all(&self.client, "lease.list", "leases").await;
        let leases_read_by = Instant::now();
        // After a Redis outage the breaker keeps writes off for its open period (10 s by
        // default): wait for it rather than report the store as different.
        let mut store = self.client.call("chaos.verify_store", json!({})).await;
        // Two breaker periods: a probe may fail once more while Redis settles.
        let patience = Instant::now() + Duration::from_secs(30);
        while store == Err(crate::rpc::code::STORE_UNAVAILABLE) && Instant::now() < patience {
            tokio::time::sleep(Duration::from_millis(500)).await;
            store = self.client.call("chaos.verify_store", json!({})).await;
        }
        let mut l = self.ledger.lock();
        l.final_state(state, tasks, leases, leases_read_by, store);
    }
}

/// Every page of a list method (`system.get_state`, `task.list`, `lease.list`): the first
/// page's answer with `field` holding the items of all pages, read `MAX_LIST_LIMIT` at a time
/// by following `nextAfter`.
async fn read_all(client: &Client, method: &str, field: &str) -> Result<Value, i64> {
    let mut params = json!({"limit": crate::model::MAX_LIST_LIMIT});
    if method == "task.list" {
        // The cursor pages through id order (task.list's own default is newest first).
        params["order"] = json!("asc");
    }
    let mut all = client.call(method, params.clone()).await?;
    let mut next = all.get("nextAfter").cloned();
    // Bounded: 10 000 pages are ten million items, far beyond any chaos run.
    for _ in 0..10_000 {
        let Some(after) = next.take() else { break };
        params["after"] = after;
        let mut page = client.call(method, params.clone()).await?;
        next = page.get("nextAfter").cloned();
        if let (Some(items), Some(more)) = (
            all.get_mut(field).and_then(Value::as_array_mut),
            page.get_mut(field).and_then(Value::as_array_mut),
        ) {
            items.append(more);
        }
    }
    Ok(all)
}

/// Runs the workload with its faults for `config.duration`, then checks every invariant.
/// Each disruptor runs every its interval (first after one interval); one given a zero
/// interval never runs, and only its [`Disruptor::report`] counts.
pub async fn run(
    transport: Transport,
    config: ChaosConfig,
    disruptors: &[(&dyn Disruptor, Duration)],
) -> Result<ChaosReport, String> {
    if config.workers == 0 || config.doomed >= config.workers {
        return Err("--workers must exceed --doomed".into());
    }
    if config.heartbeat_rate.is_nan() || config.heartbeat_rate <= 0.0 {
        return Err("--heartbeat-rate must be positive".into());
    }
    let per_worker = config.heartbeat_rate / (config.workers - config.doomed) as f64;
    if per_worker * config.ttl.as_secs_f64() < 3.0 {
        return Err(format!(
            "{:.2} heartbeats per worker per TTL: raise the rate or the TTL so each worker \
             beats at least three times per TTL",
            per_worker * config.ttl.as_secs_f64()
        ));
    }
    let ids: Vec<String> = (0..config.workers)
        .map(|i| format!("{}-{i}", config.prefix))
        .collect();
    let client = Client::connect_with_chaos(&transport, ids.clone(), 4).await?;
    let adversary = match (&transport, &config.adversary_token) {
        _ if config.adversary_rate <= 0.0 => None,
        (Transport::Inproc(_), _) | (_, Some(_)) => {
            Some(Client::connect_adversary(&transport, config.adversary_token.as_deref()).await?)
        }
        (_, None) => None,
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut doomed: Vec<usize> = (0..config.workers).collect();
    for i in 0..config.doomed {
        let j = rng.random_range(i..config.workers);
        doomed.swap(i, j);
    }
    doomed.truncate(config.doomed);
    let driver = Arc::new(Driver {
        ledger: Mutex::new(Ledger::new(ids, &doomed)),
        client,
        adversary,
        start: Instant::now(),
        config: config.clone(),
    });
    if let Err(code) = driver.client.call("chaos.status", json!({})).await {
        return Err(format!(
            "chaos.status answered {code}: start the server with --chaos"
        ));
    }
    for w in 0..config.workers {
        if !driver.register(w).await {
            return Err(format!(
                "registering {}-{w} failed: is the server up (and started with --chaos)?",
                config.prefix
            ));
        }
    }
    let driver_ref = &driver;
    let started = driver.start;
    let until = started + config.duration;
    // The live workers heartbeat until every part of the workload is done, disruptions
    // included: one that outlasts the run (a failover being waited for) must not leave them
    // silent past their TTL.
    let rest = async {
        tokio::join!(
            driver_ref.tasks(until),
            driver_ref.leases(until),
            driver_ref.dooms(),
            driver_ref.kills("instance", config.instance_kills, 10, until),
            driver_ref.kills("leader", config.leader_kills, 11, until),
            driver_ref.kills("persister", config.persister_kills, 12, until),
            driver_ref.adversary(until),
            futures_util::future::join_all(
                disruptors
                    .iter()
                    .map(|(d, every)| driver_ref.disruptions(*d, *every, until))
            ),
        )
    };
    tokio::select! {
        _ = driver_ref.heartbeats(until + Duration::from_secs(3600)) => {}
        _ = rest => {}
    }
    let workload = started.elapsed();
    // Live workers keep heartbeating while the dead settle and the checks run.
    let keep_alive = async {
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = driver_ref.heartbeats(far) => {}
            _ = driver_ref.verify() => {}
        }
    };
    keep_alive.await;
    let mut l = driver.ledger.lock();
    for (d, _) in disruptors {
        l.disruptor_report(d.report());
    }
    Ok(l.report(config.seed, workload))
}
