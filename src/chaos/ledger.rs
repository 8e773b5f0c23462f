//! What the chaos driver was told (acknowledged operations, observed terms and leaders) and
//! the invariants checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::{ChaosReport, InvariantResult};

/// The promises a chaos run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Invariant {
    /// No live instance is declared expired.
    NoFalseExpiry,
    /// Every acknowledged registration, task and lease is present.
    AcknowledgedPresent,
    /// No observer sees the term go back.
    TermsNeverGoBack,
    /// At most one leader per term.
    OneLeaderPerTerm,
    /// The dead expire and their tasks and leases are taken back, each task once per death.
    DeadWorkTakenBack,
    /// A task is completed at most once.
    CompletedAtMostOnce,
    /// A stale claim token changes nothing.
    StaleClaimRefused,
    /// Fencing tokens of a key only grow.
    FencingGrows,
    /// After the run, the store holds what memory holds.
    StoreEqualsMemory,
    /// No call acting for another principal's instance succeeds.
    NoForeignAction,
    /// No answer or event read by another principal carries a claim token.
    NoTokenLeak,
    /// High availability: no epoch is active on two coordinators, nor two at once.
    OneActivePerEpoch,
    /// High availability: once an epoch was active, no lower one answers as active.
    DeposedNeverActive,
}

impl Invariant {
    const ALL: [Invariant; 13] = [
        Invariant::NoFalseExpiry,
        Invariant::AcknowledgedPresent,
        Invariant::TermsNeverGoBack,
        Invariant::OneLeaderPerTerm,
        Invariant::DeadWorkTakenBack,
        Invariant::CompletedAtMostOnce,
        Invariant::StaleClaimRefused,
        Invariant::FencingGrows,
        Invariant::StoreEqualsMemory,
        Invariant::NoForeignAction,
        Invariant::NoTokenLeak,
        Invariant::OneActivePerEpoch,
        Invariant::DeposedNeverActive,
    ];

    fn statement(self) -> &'static str {
        match self {
            Invariant::NoFalseExpiry => {
                "an instance heartbeating within its TTL is never answered alive:false"
            }
            Invariant::AcknowledgedPresent => {
                "every acknowledged registration, task and lease of the living is there at the end"
            }
            Invariant::TermsNeverGoBack => "no caller ever sees a lower term than before",
            Invariant::OneLeaderPerTerm => "no term has two leaders",
            Invariant::DeadWorkTakenBack => {
                "the dead expire; their tasks are taken back exactly once, their leases released"
            }
            Invariant::CompletedAtMostOnce => "no task is completed under two claims",
            Invariant::StaleClaimRefused => {
                "a dead worker's claim token is answered stale_claim and changes nothing"
            }
            Invariant::FencingGrows => "each grant of a key has a larger fencing token",
            Invariant::StoreEqualsMemory => "after the run Redis holds exactly what memory holds",
            Invariant::NoForeignAction => {
                "the adversary (another principal) can act as no worker, not even with a leaked claim token"
            }
            Invariant::NoTokenLeak => {
                "no answer or event the adversary reads carries a claim token"
            }
            Invariant::OneActivePerEpoch => {
                "no epoch is active on two coordinators, and no two answer as active at once"
            }
            Invariant::DeposedNeverActive => {
                "once an epoch was active, no coordinator answers as active under a lower one"
            }
        }
    }
}

/// How much earlier than its TTL an expiry must come to count as false: the server's clock
/// starts a TTL when it handles the heartbeat, after the driver sent it, so none is needed;
/// this only absorbs timer rounding.
const EXPIRY_SLACK: Duration = Duration::from_millis(20);

const EXAMPLES: usize = 5;

pub(crate) struct WorkerState {
    pub id: String,
    pub doomed: bool,
    pub dead_at: Option<Instant>,
    pub in_flight: bool,
    registered: bool,
    /// Send time of the last heartbeat (or registration) answered alive.
    last_ack: Option<Instant>,
    last_term: u64,
}

#[derive(Default)]
struct TaskLedger {
    /// (worker, claim token), in the order the claims were answered.
    claims: Vec<(usize, String)>,
    /// Claim tokens whose completion was answered `completed`.
    completions: BTreeSet<String>,
}

/// One acknowledged lease grant.
struct Grant {
    holder: usize,
    token: u64,
    released: bool,
    /// Before this the grant cannot have lapsed: its TTL counted from before it was sent.
    held_until: Instant,
}

pub(crate) struct Ledger {
    pub workers: Vec<WorkerState>,
    pub operations: BTreeMap<String, u64>,
    pub unacknowledged: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    /// When the last disruption (a process or Redis restart) finished.
    pub last_disruption: Option<Instant>,
    tasks: BTreeMap<String, TaskLedger>,
    /// key → its grants, oldest first.
    leases: BTreeMap<String, Vec<Grant>>,
    leaders: BTreeMap<u64, BTreeSet<String>>,
    results: BTreeMap<Invariant, (u64, u64, Vec<String>)>,
    /// Every claim token handed to a claimer.
    minted: std::collections::HashSet<String>,
    /// Timings the disruptors measured, by name.
    figures: BTreeMap<String, Vec<Duration>>,
}

/// The 32-hex-digit words of `text`: the shape of a claim token.
fn token_like(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 32)
}

fn term_of(answer: &Value) -> Option<u64> {
    answer.get("term").and_then(Value::as_u64)
}

impl Ledger {
    pub fn new(ids: Vec<String>, doomed: &[usize]) -> Self {
        Self {
            workers: ids
                .into_iter()
                .enumerate()
                .map(|(w, id)| WorkerState {
                    id,
                    doomed: doomed.contains(&w),
                    dead_at: None,
                    in_flight: false,
                    registered: false,
                    last_ack: None,
                    last_term: 0,
                })
                .collect(),
            operations: BTreeMap::new(),
            unacknowledged: BTreeMap::new(),
            faults: BTreeMap::new(),
            last_disruption: None,
            tasks: BTreeMap::new(),
            leases: BTreeMap::new(),
            leaders: BTreeMap::new(),
            results: BTreeMap::new(),
            minted: Default::default(),
            figures: BTreeMap::new(),
        }
    }

    fn check(&mut self, invariant: Invariant, holds: bool, describe: impl FnOnce() -> String) {
        let entry = self.results.entry(invariant).or_default();
        entry.0 += 1;
        if !holds {
            entry.1 += 1;
            if entry.2.len() < EXAMPLES {
                entry.2.push(describe());
            }
        }
    }

    fn observe_term(&mut self, w: usize, term: u64) {
        let last = self.workers[w].last_term;
        let id = &self.workers[w].id;
        let describe = || format!("{id} saw term {term} after {last}");
        let holds = term >= last;
        let message = (!holds).then(describe);
        self.check(Invariant::TermsNeverGoBack, holds, || {
            message.unwrap_or_default()
        });
        self.workers[w].last_term = last.max(term);
    }

    fn observe_leader(&mut self, term: u64, leader: &str) {
        self.leaders
            .entry(term)
            .or_default()
            .insert(leader.to_string());
    }

    pub fn registered(&mut self, w: usize, sent: Instant, answer: &Value) {
        self.workers[w].registered = true;
        self.workers[w].last_ack = Some(sent);
        if let Some(term) = term_of(answer) {
            self.observe_term(w, term);
            if let Some(leader) = answer.get("leader").and_then(Value::as_str) {
                self.observe_leader(term, leader);
            }
        }
    }

    pub fn may_heartbeat(&self, w: usize) -> bool {
        let s = &self.workers[w];
        s.registered && !s.in_flight && s.dead_at.is_none()
    }

    /// Records a heartbeat's answer; true when the worker must register again.
    pub fn heartbeat_answered(
        &mut self,
        w: usize,
        sent: Instant,
        answer: &Value,
        ttl: Duration,
    ) -> bool {
        let alive = answer
            .get("alive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(term) = term_of(answer) {
            self.observe_term(w, term);
            if alive && answer.get("isLeader") == Some(&Value::Bool(true)) {
                let id = self.workers[w].id.clone();
                self.observe_leader(term, &id);
            }
        }
        let last_ack = self.workers[w].last_ack;
        if alive {
            self.check(Invariant::NoFalseExpiry, true, String::new);
            self.workers[w].last_ack = Some(sent);
            return false;
        }
        // alive:false for a worker that never stopped: false unless its TTL had run out since
        // the last heartbeat that was answered (the server was unreachable that long).
        let within = last_ack.is_some_and(|t| sent + EXPIRY_SLACK < t + ttl);
        let id = self.workers[w].id.clone();
        self.check(Invariant::NoFalseExpiry, !within, || {
            format!(
                "{id} answered alive:false {} ms after its last acknowledged heartbeat (TTL {} ms)",
                last_ack.map_or(0, |t| (sent - t).as_millis()),
                ttl.as_millis()
            )
        });
        self.workers[w].registered = false;
        true
    }

    pub fn doomed(&self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&w| self.workers[w].doomed)
            .collect()
    }

    pub fn die(&mut self, w: usize) {
        self.workers[w].dead_at = Some(Instant::now());
    }

    pub fn last_death(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|s| s.dead_at).max()
    }

    fn alive(&self, w: usize) -> bool {
        self.workers[w].dead_at.is_none()
    }

    /// A live, registered worker for a claim: doomed (not yet dead) ones when asked and there
    /// are any, else one of the others.
    pub fn pick_claimer(&self, doomed: bool, choice: u64) -> Option<usize> {
        let pool = |want_doomed: bool| -> Vec<usize> {
            (0..self.workers.len())
                .filter(|&w| {
                    let s = &self.workers[w];
                    s.doomed == want_doomed && s.dead_at.is_none() && s.registered
                })
                .collect()
        };
        let mut candidates = pool(doomed);
        if candidates.is_empty() {
            candidates = pool(false);
        }
        (!candidates.is_empty()).then(|| candidates[(choice % candidates.len() as u64) as usize])
    }

    pub fn task_created(&mut self, id: &str) {
        self.tasks.entry(id.to_string()).or_default();
    }

    /// One call of the adversary acting as a worker it does not own: `refused` is whether the
    /// answer refused it (`None`: inconclusive, e.g. the server was down).
    pub fn foreign_attempt(
        &mut self,
        what: &str,
        refused: Option<bool>,
        answer: impl FnOnce() -> String,
    ) {
        if let Some(refused) = refused {
            self.check(Invariant::NoForeignAction, refused, || {
                format!("{what} succeeded for the adversary: {}", answer())
            });
        }
    }

    /// A text the adversary read (`what`): any claim token in it is a leak.
    pub fn adversary_read(&mut self, what: &str, text: &str) {
        let leaked: Vec<&str> = token_like(text)
            .filter(|t| self.minted.contains(*t))
            .collect();
        self.check(Invariant::NoTokenLeak, leaked.is_empty(), || {
            format!("{what} showed claim token(s) {leaked:?} to the adversary")
        });
    }

    /// Claim tokens of live claims of living workers, as if leaked through another channel.
    pub fn live_claims(&self) -> Vec<(String, String)> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.completions.is_empty())
            .filter_map(|(id, t)| {
                let (w, token) = t.claims.last()?;
                (self.alive(*w) && !self.workers[*w].doomed).then(|| (id.clone(), token.clone()))
            })
            .collect()
    }

    pub fn task_claimed(&mut self, id: &str, w: usize, token: &str) {
        self.minted.insert(token.to_string());
        self.tasks
            .entry(id.to_string())
            .or_default()
            .claims
            .push((w, token.to_string()));
    }

    pub fn task_completion(&mut self, id: &str, token: &str, answer: &Value) {
        if answer.get("status").and_then(Value::as_str) != Some("completed") {
            return;
        }
        let t = self.tasks.entry(id.to_string()).or_default();
        t.completions.insert(token.to_string());
        let n = t.completions.len();
        self.check(Invariant::CompletedAtMostOnce, n <= 1, || {
            format!("task {id} completed under {n} claim tokens")
        });
    }

    /// (task, token) of every claim held by a worker that died.
    pub fn zombie_claims(&self) -> Vec<(String, String)> {
        self.tasks
            .iter()
            .flat_map(|(id, t)| {
                t.claims
                    .iter()
                    .filter(|(w, _)| !self.alive(*w))
                    .map(move |(_, token)| (id.clone(), token.clone()))
            })
            .collect()
    }

    pub fn zombie_answer(&mut self, task: &str, answer: &Value) {
        let status = answer.get("status").and_then(Value::as_str).unwrap_or("?");
        self.check(
            Invariant::StaleClaimRefused,
            status == "stale_claim",
            || format!("a dead worker's completion of {task} was answered {status}"),
        );
    }

    /// `token` granted to `w` on `key`, by a call sent at `sent` for `ttl`.
    pub fn lease_acquired(
        &mut self,
        key: &str,
        w: usize,
        token: u64,
        sent: Instant,
        ttl: Duration,
    ) {
        let grants = self.leases.entry(key.to_string()).or_default();
        // A holder acquiring what it still holds gets its grant back, same token, new TTL.
        if let Some(last) = grants
            .last_mut()
            .filter(|g| g.holder == w && g.token == token && !g.released)
        {
            last.held_until = sent + ttl;
            self.check(Invariant::FencingGrows, true, String::new);
            return;
        }
        let previous = grants.iter().map(|g| g.token).max().unwrap_or(0);
        grants.push(Grant {
            holder: w,
            token,
            released: false,
            held_until: sent + ttl,
        });
        self.check(Invariant::FencingGrows, token > previous, || {
            format!("{key} granted with fencing token {token} after {previous}")
        });
    }

    pub fn lease_released(&mut self, key: &str, token: u64) {
        if let Some(g) = self
            .leases
            .get_mut(key)
            .and_then(|g| g.iter_mut().find(|g| g.token == token))
        {
            g.released = true;
        }
    }

    pub fn disruption_failed(&mut self, name: &str, error: &str) {
        *self
            .unacknowledged
            .entry(format!("{name} failed: {error}"))
            .or_default() += 1;
    }

    /// Checks the end state read from the server.
    pub fn final_state(
        &mut self,
        state: Result<Value, i64>,
        tasks: Result<Value, i64>,
        leases: Result<Value, i64>,
        leases_read_by: Instant,
        store: Result<Value, i64>,
    ) {
        let read = |what: &str, r: &Result<Value, i64>| -> Option<String> {
            r.as_ref()
                .err()
                .map(|code| format!("reading {what} at the end failed with {code}"))
        };
        for (what, r) in [
            ("system.get_state", &state),
            ("task.list", &tasks),
            ("lease.list", &leases),
        ] {
            if let Some(e) = read(what, r) {
                self.check(Invariant::AcknowledgedPresent, false, || e);
            }
        }
        if let Ok(state) = &state {
            let present: BTreeMap<&str, &Value> = state["instances"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| Some((i.get("id")?.as_str()?, i)))
                        .collect()
                })
                .unwrap_or_default();
            for w in 0..self.workers.len() {
                let id = self.workers[w].id.clone();
                let there = present.contains_key(id.as_str());
                if self.alive(w) {
                    self.check(Invariant::AcknowledgedPresent, there, || {
                        format!("live instance {id} is missing")
                    });
                } else {
                    self.check(Invariant::DeadWorkTakenBack, !there, || {
                        format!("dead instance {id} is still listed")
                    });
                }
            }
            let max_seen = self.workers.iter().map(|s| s.last_term).max().unwrap_or(0);
            let term = state.get("term").and_then(Value::as_u64).unwrap_or(0);
            self.check(Invariant::TermsNeverGoBack, term >= max_seen, || {
                format!("final term {term} is below {max_seen}, seen earlier")
            });
        }
        let leaders = std::mem::take(&mut self.leaders);
        for (term, set) in &leaders {
            self.check(Invariant::OneLeaderPerTerm, set.len() <= 1, || {
                format!("term {term} had leaders {set:?}")
            });
        }
        self.leaders = leaders;
        if let Ok(tasks) = &tasks {
            self.check_tasks(tasks);
        }
        if let Ok(leases) = &leases {
            self.check_leases(leases, leases_read_by);
        }
        match store {
            Ok(check) if check["store"] == "memory" => {}
            Ok(check) => {
                let differences: Vec<String> = check["differences"]
                    .as_array()
                    .map(|d| d.iter().map(|x| x.to_string()).collect())
                    .unwrap_or_default();
                if differences.is_empty() {
                    self.check(Invariant::StoreEqualsMemory, true, String::new);
                }
                for d in differences {
                    self.check(Invariant::StoreEqualsMemory, false, || d);
                }
            }
            Err(code) => self.check(Invariant::StoreEqualsMemory, false, || {
                format!("chaos.verify_store failed with {code}")
            }),
        }
    }

    fn check_tasks(&mut self, tasks: &Value) {
        let listed: BTreeMap<String, Value> = tasks["tasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| Some((t.get("id")?.as_str()?.to_string(), t.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let ledger = std::mem::take(&mut self.tasks);
        for (id, t) in &ledger {
            let Some(task) = listed.get(id) else {
                self.check(Invariant::AcknowledgedPresent, false, || {
                    format!("acknowledged task {id} is missing")
                });
                continue;
            };
            self.check(Invariant::AcknowledgedPresent, true, String::new);
            let dead_claims = t.claims.iter().filter(|(w, _)| !self.alive(*w)).count() as u64;
            if dead_claims == 0 {
                continue;
            }
            let attempts = task.get("attempts").and_then(Value::as_u64).unwrap_or(0);
            // A task whose attempts ran out ends `failed` and keeps its last assignee.
            let claimed = task.get("status").and_then(Value::as_str) == Some("in_progress");
            let assignee = task.get("assignedTo").and_then(Value::as_str);
            let held_by_dead = claimed
                && assignee.is_some_and(|a| {
                    self.workers
                        .iter()
                        .any(|s| s.dead_at.is_some() && s.id == a)
                });
            self.check(
                Invariant::DeadWorkTakenBack,
                attempts == dead_claims && !held_by_dead,
                || {
                    format!(
                        "task {id}: {dead_claims} claim(s) by dead workers, {attempts} attempt(s) \
                         taken back, assignee {assignee:?}"
                    )
                },
            );
            let zombie = task.pointer("/result/zombie") == Some(&Value::Bool(true));
            self.check(Invariant::StaleClaimRefused, !zombie, || {
                format!("task {id} carries a dead worker's result")
            });
        }
        self.tasks = ledger;
    }

    /// `leases` was answered by `read_by`: grants whose TTL may have run out by then are not
    /// expected (the driver never renews).
    fn check_leases(&mut self, leases: &Value, read_by: Instant) {
        let listed: BTreeSet<(String, u64)> = leases["leases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        Some((
                            g.get("key")?.as_str()?.to_string(),
                            g.get("fencingToken")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ledger = std::mem::take(&mut self.leases);
        for (key, grants) in &ledger {
            // Only the last grant of a key can still hold it; earlier ones were released.
            let Some(last) = grants.last() else {
                continue;
            };
            let token = last.token;
            let there = listed.contains(&(key.clone(), token));
            if !self.alive(last.holder) {
                self.check(Invariant::DeadWorkTakenBack, !there, || {
                    format!("lease {key} ({token}) of a dead worker is still held")
                });
            } else if !last.released && last.held_until > read_by {
                self.check(Invariant::AcknowledgedPresent, there, || {
                    format!("acknowledged lease {key} ({token}) is missing")
                });
            }
        }
        self.leases = ledger;
    }

    /// Adds what a disruptor observed. Disruptors that share one source (the kill and the
    /// pause of one group) report it each: per invariant and per figure, the largest count
    /// is kept, not the sum.
    pub fn disruptor_report(&mut self, report: super::DisruptorReport) {
        for (invariant, (checked, violations, examples)) in report.invariants {
            let entry = self.results.entry(invariant).or_default();
            if checked > entry.0 {
                *entry = (checked, violations, examples);
            }
        }
        for (name, samples) in report.figures {
            let entry = self.figures.entry(name).or_default();
            if samples.len() > entry.len() {
                *entry = samples;
            }
        }
    }

    pub fn report(&self, seed: u64, workload: Duration) -> ChaosReport {
        ChaosReport {
            figures: self
                .figures
                .iter()
                .filter(|(_, samples)| !samples.is_empty())
                .map(|(name, samples)| {
                    let ms = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
                    (name.clone(), ms)
                })
                .collect(),
            seed,
            duration_s: workload.as_secs_f64(),
            faults: self.faults.clone(),
            operations: self.operations.clone(),
            unacknowledged: self.unacknowledged.clone(),
            invariants: Invariant::ALL
                .iter()
                .map(|&invariant| {
                    let (checked, violations, examples) =
                        self.results.get(&invariant).cloned().unwrap_or_default();
                    InvariantResult {
                        invariant,
                        statement: invariant.statement(),
                        checked,
                        violations,
                        examples,
                    }
                })
                .collect(),
        }
    }
}
