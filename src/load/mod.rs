//! `vigil load`: the load harness.
//!
//! It registers `workers` instances (`{prefix}-{run}-0 … {prefix}-{run}-{N−1}`, with the role
//! `{prefix}-{run}`, the run's tag: see [`LoadConfig::tag`]) and sends heartbeats
//! **open loop**: the i-th request is due at `start + i × batch / rate`, whether or not earlier
//! ones have been answered, and its latency is measured from that *intended* time — so a stall
//! shows up as the latency of every call it delayed (no coordinated omission). `rate = max` is
//! closed loop instead: `concurrency` callers send as fast as answers come back.
//!
//! With a task mix ([`LoadConfig::tasks`]) flows start open loop at their own rate beside the
//! heartbeats; each flow creates a task, claims one as a worker, sends two step heartbeats with
//! the claim token and completes it. A flow's first call is measured from its intended start,
//! each later call from the answer to the one before it.
//!
//! Everything a run makes is marked as its own: its tasks require its tag as their role (and
//! carry it in `metadata.vigilLoad`), and its claims ask for that role only, so it never
//! claims another's task and no other worker can claim its tasks. When it ends — done, failed
//! or interrupted — it deletes its tasks and unregisters its workers, unless
//! [`LoadConfig::keep`]. With a task mix it first refuses a target that has pending or claimed
//! tasks of others, unless [`LoadConfig::force`].
//!
//! [`compare`] runs one scenario against two targets in alternation (A, B, A, B, …) and
//! reports the ratio of every figure, so that both sides share the machine's conditions.

pub(crate) mod client;
mod plot;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use client::{TRANSPORT_FAILURE, Transport};
pub use plot::write_svg;
pub use report::{Bucket, Cleanup, Comparison, LoadReport, Percentiles, Slice, TaskTally};

use client::{Client, Outcome};
use report::Recorder;

/// The heartbeat method's name in reports.
pub const HEARTBEAT: &str = "system.heartbeat";

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where calls go.
    pub transport: Transport,
    /// Instances to register and heartbeat for.
    pub workers: usize,
    /// The first part of the run's tag (`vigil-load`).
    pub prefix: String,
    /// This run's id, the second part of its tag (random by default).
    pub run_id: String,
    /// Leave the run's workers and tasks on the target when it ends.
    pub keep: bool,
    /// Run the task mix even when the target has other pending or claimed tasks.
    pub force: bool,
    /// Heartbeat rate.
    pub rate: Rate,
    /// How long to send.
    pub duration: Duration,
    /// Calls (requests, frames, task flows) in flight at most; callers for `max`.
    pub concurrency: usize,
    /// WebSocket connections for the ws transports (HTTP connections are made as needed, up
    /// to `concurrency`).
    pub connections: usize,
    /// Task flows started per second, if any.
    pub tasks: Option<f64>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl LoadConfig {
    /// A configuration with the CLI's defaults: 100 workers, 1000/min for 10 s over `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            workers: 100,
            prefix: "vigil-load".into(),
            run_id: new_run_id(),
            keep: false,
            force: false,
            rate: Rate::PerSecond(1000.0 / 60.0),
            duration: Duration::from_secs(10),
            concurrency: 256,
            connections: 4,
            tasks: None,
            progress: false,
        }
    }

    /// The run's tag, `{prefix}-{run_id}`: the role of its workers and of its tasks, and the
    /// prefix of its worker ids.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.prefix, self.run_id)
    }

    fn validate(&self) -> Result<(), String> {
        if self.run_id.is_empty()
            || !self
                .run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "a run id is letters, digits, '-' and '_', got {:?}",
                self.run_id
            ));
        }
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "--prefix must be non-empty, without spaces, got {:?}",
                self.prefix
            ));
        }
        let tag = self.tag().chars().count();
        if tag > MAX_TAG_CHARS {
            return Err(format!(
                "the run's tag {:?} has {tag} characters; it is a role, at most {MAX_TAG_CHARS}: \
                 shorten --prefix or --run-id",
                self.tag()
            ));
        }
        if self.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if let Some(t) = self.tasks
            && !(t > 0.0 && t.is_finite())
        {
            return Err(format!("a task rate must be positive, got {t}"));
        }
        Ok(())
    }
}

/// Longest run tag: it is a role (1–64 characters).
const MAX_TAG_CHARS: usize = 64;

/// Cleanup calls in flight at once.
const CLEANUP_CONCURRENCY: usize = 32;

/// A fresh run id: 8 hex digits.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Locks the recorder for one update.
type Shared = Arc<Mutex<Recorder>>;

/// One side of a run: a connected, registered client and what it has measured so far.
struct Harness {
    config: LoadConfig,
    client: Arc<Client>,
    recorder: Shared,
    permits: Arc<Semaphore>,
}

impl Harness {
    /// Connects (and, for a task mix without `force`, checks the target for others' work);
    /// registers nothing.
    async fn new(config: LoadConfig, total: Duration) -> Result<Self, String> {
        config.validate()?;
        let tag = config.tag();
        let ids = (0..config.workers).map(|i| format!("{tag}-{i}")).collect();
        let client = Client::connect(&config.transport, ids, config.connections).await?;
        if config.tasks.is_some() && !config.force {
            refuse_foreign_work(&client, &tag).await?;
        }
        // About 150 points on the timeline, none shorter than 10 ms.
        let slice = (total / 150).max(Duration::from_millis(10));
        Ok(Self {
            recorder: Arc::new(Mutex::new(Recorder::new(slice, config.tasks.is_some()))),
            permits: Arc::new(Semaphore::new(config.concurrency)),
            client: Arc::new(client),
            config,
        })
    }

    /// Connects and registers the workers, unless `interrupt` comes first. When registration
    /// fails or is interrupted, the workers registered so far are unregistered again.
    async fn start(
        config: LoadConfig,
        total: Duration,
        mut interrupt: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<Self, String> {
        let harness = tokio::select! {
            harness = Self::new(config, total) => harness?,
            () = &mut interrupt => return Err("interrupted before the run started".into()),
        };
        let tag = harness.config.tag();
        let registered = tokio::select! {
            result = harness.client.register_all(std::slice::from_ref(&tag)) => result,
            () = &mut interrupt => Err("interrupted while registering the workers".into()),
        };
        if let Err(e) = registered {
            // Some may have been registered before the failure.
            let cleanup = harness.clean_up().await;
            return Err(format!("{e}; {cleanup}"));
        }
        Ok(harness)
    }

    /// Removes what the run made, unless it is to be kept: deletes every task that requires
    /// the run's tag (listed by role; a claim on one ends with it, releasing its leases), then
    /// unregisters every worker.
    async fn clean_up(&self) -> Cleanup {
        let mut cleanup = Cleanup {
            run: self.config.tag(),
            kept: self.config.keep,
            ..Cleanup::default()
        };
        if self.config.keep {
            return cleanup;
        }
        let fail = |cleanup: &mut Cleanup, what: String| {
            cleanup.failures += 1;
            cleanup.first_failure.get_or_insert(what);
        };
        // Tasks: a page of the run's tasks at a time, until none is left or a page deletes
        // nothing (deletion refused, e.g. a worker's token). Bounded: each round removes a page.
        let params = json!({"role": cleanup.run, "limit": 1000, "order": "asc"});
        for _ in 0..10_000 {
            let page = match self.client.call("task.list", params.clone()).await {
                Ok(page) => page,
                Err(code) => {
                    fail(&mut cleanup, format!("task.list: error {code}"));
                    break;
                }
            };
            let ids: Vec<Value> = page["tasks"]
                .as_array()
                .map(|tasks| tasks.iter().map(|t| t["id"].clone()).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                break;
            }
            let results = self
                .each(ids, |id| ("task.delete", json!({"id": id})))
                .await;
            let deleted = results.iter().filter(|r| r.is_ok()).count() as u64;
            cleanup.tasks_deleted += deleted;
            for e in results.into_iter().filter_map(Result::err) {
                fail(&mut cleanup, format!("task.delete: error {e}"));
            }
            if deleted == 0 {
                break;
            }
        }
        let ids: Vec<Value> = self.client.ids.iter().map(|id| json!(id)).collect();
        let results = self
            .each(ids, |id| ("system.unregister", json!({"instanceId": id})))
            .await;
        for result in results {
            match result {
                Ok(answer) if answer["wasRegistered"] == false => {}
                Ok(_) => cleanup.workers_unregistered += 1,
                Err(code) => fail(&mut cleanup, format!("system.unregister: error {code}")),
            }
        }
        cleanup
    }

    /// One call per item, [`CLEANUP_CONCURRENCY`] at a time; the results in no set order.
    async fn each(
        &self,
        items: Vec<Value>,
        call: impl Fn(Value) -> (&'static str, Value),
    ) -> Vec<Result<Value, i64>> {
        let mut results = Vec::with_capacity(items.len());
        let mut calls = JoinSet::new();
        for item in items {
            if calls.len() >= CLEANUP_CONCURRENCY
                && let Some(done) = calls.join_next().await
            {
                results.push(done.unwrap_or(Err(TRANSPORT_FAILURE)));
            }
            let (method, params) = call(item);
            let client = Arc::clone(&self.client);
            calls.spawn(async move { client.call(method, params).await });
        }
        while let Some(done) = calls.join_next().await {
            results.push(done.unwrap_or(Err(TRANSPORT_FAILURE)));
        }
        results
    }

    /// Sends for `duration`, then waits for every answer.
    async fn run_slice(&self, duration: Duration) -> Result<(), String> {
        let start = Instant::now();
        let deadline = start + duration;
        let (paced, ()) = tokio::join!(
            self.heartbeat_loop(start, deadline),
            self.task_loop(start, deadline),
        );
        let (heartbeats, span) = paced?;
        // The last due time falls short of the deadline; the slice still lasts its duration.
        tokio::time::sleep_until(deadline).await;
        let spent = start.elapsed().max(duration);
        let mut r = self.recorder.lock();
        r.paced_heartbeats += heartbeats;
        r.paced_span += span;
        r.elapsed += spent;
        r.active_before += spent;
        Ok(())
    }

    /// Heartbeats from `start` to `deadline`; returns (requests × batch paced, span) for an
    /// open loop.
    async fn heartbeat_loop(
        &self,
        start: Instant,
        deadline: Instant,
    ) -> Result<(f64, f64), String> {
        let batch = self.config.transport.batch();
        let mut calls = JoinSet::new();
        let record = {
            let recorder = Arc::clone(&self.recorder);
            move |intended: Instant, outcomes: Vec<Outcome>| {
                let latency = intended.elapsed();
                let mut r = recorder.lock();
                r.latency(HEARTBEAT, intended - start, latency, outcomes.len() as u64);
                for o in outcomes {
                    match o {
                        Outcome::Alive(alive) => {
                            r.alive_false += u64::from(!alive);
                            r.outcome(Ok(()));
                        }
                        Outcome::Error(code) => r.outcome(Err(code)),
                    }
                }
            }
        };
        let count_sent = |n: usize| {
            let mut r = self.recorder.lock();
            r.sent += n as u64;
            r.heartbeats += n as u64;
        };
        let mut paced = (0.0, 0.0);
        match self.config.rate {
            Rate::PerSecond(rate) => {
                let mut due = pacer(start, batch as f64 / rate, deadline);
                let mut count: u64 = 0;
                let mut first_send: Option<Instant> = None;
                let mut last_send = start;
                while let Some((i, intended)) = due.recv().await {
                    let permit = Arc::clone(&self.permits)
                        .acquire_owned()
                        .await
                        .map_err(|e| e.to_string())?;
                    let now = Instant::now();
                    first_send.get_or_insert(now);
                    last_send = now;
                    let (client, record) = (Arc::clone(&self.client), record.clone());
                    let first = (i as usize * batch) % client.ids.len();
                    count_sent(batch);
                    calls.spawn(async move {
                        let outcomes = client.heartbeats(first, batch).await;
                        record(intended, outcomes);
                        drop(permit);
                    });
                    count += 1;
                    while calls.try_join_next().is_some() {}
                }
                // The pace actually kept: requests over the span between the first and the
                // last send, one interval per gap.
                if let Some(first) = first_send
                    && count > 1
                {
                    paced = (
                        (count - 1) as f64 * batch as f64,
                        (last_send - first).as_secs_f64(),
                    );
                }
            }
            Rate::Max => {
                let callers = self.config.concurrency;
                let sent = Arc::new(AtomicU64::new(0));
                for k in 0..callers {
                    let (client, record, sent) =
                        (Arc::clone(&self.client), record.clone(), Arc::clone(&sent));
                    calls.spawn(async move {
                        let mut next = k * batch;
                        while Instant::now() < deadline {
                            let intended = Instant::now();
                            sent.fetch_add(batch as u64, Ordering::Relaxed);
                            let outcomes = client.heartbeats(next, batch).await;
                            record(intended, outcomes);
                            next += batch * callers;
                        }
                    });
                }
                while calls.join_next().await.is_some() {}
                count_sent(sent.load(Ordering::Relaxed) as usize);
            }
        }
        while calls.join_next().await.is_some() {}
        Ok(paced)
    }

    /// Task flows at `tasks` per second from `start` to `deadline`.
    async fn task_loop(&self, start: Instant, deadline: Instant) {
        let Some(rate) = self.config.tasks else {
            return;
        };
        let mut flows = JoinSet::new();
        let mut due = pacer(start, 1.0 / rate, deadline);
        while let Some((i, intended)) = due.recv().await {
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                break;
            };
            let (client, recorder) = (Arc::clone(&self.client), Arc::clone(&self.recorder));
            let worker = client.ids[i as usize % client.ids.len()].clone();
            let tag = self.config.tag();
            flows.spawn(async move {
                task_flow(&client, &recorder, &worker, &tag, i, start, intended).await;
                drop(permit);
            });
            while flows.try_join_next().is_some() {}
        }
        while flows.join_next().await.is_some() {}
    }

    fn report(&self) -> LoadReport {
        let r = self.recorder.lock();
        let achieved = match self.config.rate {
            Rate::PerSecond(_) if r.paced_span > 0.0 => r.paced_heartbeats / r.paced_span,
            _ => r.heartbeats as f64 / r.elapsed.as_secs_f64().max(1e-9),
        };
        let mut report = r.report(
            self.config.transport.target().to_string(),
            self.config.transport.name(),
            match self.config.rate {
                Rate::PerSecond(r) => Some(r),
                Rate::Max => None,
            },
            achieved,
            r.elapsed,
        );
        report.redirected = self.client.redirected();
        report
    }

    fn progress_message(&self) -> String {
        let r = self.recorder.lock();
        format!("{} sent, {} errors", r.sent, r.error_count())
    }
}

/// The open loop's clock: `(i, start + i × interval)` for each due time before `deadline`,
/// delivered when it comes. An OS thread keeps it, sleeping until each time (tokio's timer has
/// millisecond resolution, and spinning on the runtime would take a core from the server on a
/// shared machine). When the sender falls behind, due times queue (up to 64k) and are sent
/// late — measured from their intended time all the same.
fn pacer(
    start: Instant,
    interval_s: f64,
    deadline: Instant,
) -> tokio::sync::mpsc::Receiver<(u64, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::channel(65_536);
    let (start, deadline) = (start.into_std(), deadline.into_std());
    std::thread::Builder::new()
        .name("vigil-load-pacer".into())
        .spawn(move || {
            for i in 0u64.. {
                let intended = start + Duration::from_secs_f64(i as f64 * interval_s);
                if intended >= deadline {
                    break;
                }
                // Sleep to just short of the time (the OS oversleeps by tens of µs), then spin
                // the rest.
                let now = std::time::Instant::now();
                if let Some(wait) = intended.checked_duration_since(now)
                    && wait > Duration::from_micros(30)
                {
                    std::thread::sleep(wait - Duration::from_micros(30));
                }
                while std::time::Instant::now() < intended {
                    std::hint::spin_loop();
                }
                if tx.blocking_send((i, Instant::from_std(intended))).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the pacer thread");
    rx
}

/// One task's life: create (requiring the run's `tag` as its role), claim (as `worker`, of
/// the tasks requiring `tag` only), two step heartbeats, complete.
async fn task_flow(
    client: &Client,
    recorder: &Mutex<Recorder>,
    worker: &str,
    tag: &str,
    n: u64,
    start: Instant,
    intended: Instant,
) {
    let mut at = intended;
    let mut call = async |method: &'static str, params: Value| {
        recorder.lock().sent += 1;
        let result = client.call(method, params).await;
        let now = Instant::now();
        let mut r = recorder.lock();
        r.latency(method, at - start, now - at, 1);
        r.outcome(result.as_ref().map(|_| ()).map_err(|c| *c));
        at = now;
        result.ok()
    };
    recorder.lock().tasks.get_or_insert_default().flows += 1;
    let tally = |f: &dyn Fn(&mut TaskTally)| f(recorder.lock().tasks.get_or_insert_default());
    if call(
        "task.create",
        json!({"text": format!("load task {n}"), "priority": 50, "role": tag,
               "metadata": {"vigilLoad": tag}}),
    )
    .await
    .is_none()
    {
        return;
    }
    tally(&|t| t.created += 1);
    let Some(claim) = call("task.claim", json!({"workerId": worker, "role": tag})).await else {
        return;
    };
    let (Some(task), Some(token)) = (
        claim.get("taskId").cloned(),
        claim.get("claimToken").cloned(),
    ) else {
        tally(&|t| t.claims_empty += 1);
        return;
    };
    tally(&|t| t.claimed += 1);
    for _ in 0..2 {
        let params = json!({"taskId": task, "claimToken": token, "extendLeasesSec": 0});
        match call("task.heartbeat", params).await {
            Some(answer) if answer["status"] == "ok" => tally(&|t| t.step_heartbeats += 1),
            Some(_) => {
                tally(&|t| t.stale_claims += 1);
                return;
            }
            None => return,
        }
    }
    let params = json!({"taskId": task, "claimToken": token, "result": {"ok": true}});
    match call("task.complete", params).await {
        Some(answer) if answer["status"] == "completed" => tally(&|t| t.completed += 1),
        Some(_) => tally(&|t| t.stale_claims += 1),
        None => {}
    }
}

fn progress_bar(show: bool, total: Duration) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    // Hidden by indicatif itself when stderr is not a terminal.
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Runs one slice of `side` while keeping `bar` current (`base`: the bar's position when the
/// slice starts; `sides`: whose counts to show).
async fn slice_with_progress(
    side: &Harness,
    duration: Duration,
    bar: &ProgressBar,
    base: u64,
    sides: &[&Harness],
) -> Result<(), String> {
    let done = tokio::sync::Notify::new();
    let sending = async {
        let result = side.run_slice(duration).await;
        done.notify_one();
        result
    };
    let ticking = async {
        if bar.is_hidden() {
            return;
        }
        let started = Instant::now();
        loop {
            bar.set_position(base + started.elapsed().as_millis() as u64);
            let counts: Vec<String> = sides.iter().map(|h| h.progress_message()).collect();
            bar.set_message(counts.join(" | "));
            tokio::select! {
                _ = done.notified() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    };
    let (result, ()) = tokio::join!(sending, ticking);
    bar.set_position(base + duration.as_millis() as u64);
    result
}

/// Registers the workers, runs the load, cleans up (see [`LoadConfig::keep`]) and reports.
pub async fn run(config: LoadConfig) -> Result<LoadReport, String> {
    run_until(config, std::future::pending()).await
}

/// [`run`], stopped early when `interrupt` completes (Ctrl-C): the run then cleans up all the
/// same and answers an error that says what it cleaned up.
pub async fn run_until(
    config: LoadConfig,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<LoadReport, String> {
    let duration = config.duration;
    let bar = progress_bar(config.progress, duration);
    tokio::pin!(interrupt);
    let harness = Harness::start(config, duration, interrupt.as_mut()).await?;
    let sides = [&harness];
    let outcome = tokio::select! {
        result = slice_with_progress(&harness, duration, &bar, 0, &sides) => result,
        () = &mut interrupt => Err("interrupted".into()),
    };
    bar.finish_and_clear();
    let cleanup = harness.clean_up().await;
    match outcome {
        Ok(()) => {
            let mut report = harness.report();
            report.cleanup = Some(cleanup);
            Ok(report)
        }
        Err(e) => Err(format!("{e}; {cleanup}")),
    }
}

/// Runs the scenario of `a` and `b` (the same but for the transport) in alternation, `rounds`
/// slices each of `duration / rounds`, and pairs the reports. Both sides register their
/// workers before either sends.
pub async fn compare(
    a: LoadConfig,
    a_label: String,
    b: LoadConfig,
    b_label: String,
    rounds: u32,
) -> Result<Comparison, String> {
    compare_until(a, a_label, b, b_label, rounds, std::future::pending()).await
}

/// [`compare`], stopped early when `interrupt` completes; both sides clean up all the same.
pub async fn compare_until(
    a: LoadConfig,
    a_label: String,
    b: LoadConfig,
    b_label: String,
    rounds: u32,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Comparison, String> {
    let rounds = rounds.max(1);
    let duration = a.duration;
    let slice = duration / rounds;
    if slice.is_zero() {
        return Err("--duration is too short for the number of rounds".into());
    }
    let bar = progress_bar(a.progress, duration * 2);
    tokio::pin!(interrupt);
    let a = Harness::start(a, duration, interrupt.as_mut()).await?;
    let b = match Harness::start(b, duration, interrupt.as_mut()).await {
        Ok(b) => b,
        Err(e) => return Err(format!("{e}; A: {}", a.clean_up().await)),
    };
    let step = slice.as_millis() as u64;
    let alternate = async {
        for round in 0..u64::from(rounds) {
            slice_with_progress(&a, slice, &bar, 2 * round * step, &[&a, &b]).await?;
            slice_with_progress(&b, slice, &bar, (2 * round + 1) * step, &[&a, &b]).await?;
        }
        Ok::<(), String>(())
    };
    let outcome = tokio::select! {
        result = alternate => result,
        () = &mut interrupt => Err("interrupted".into()),
    };
    bar.finish_and_clear();
    let (a_cleanup, b_cleanup) = (a.clean_up().await, b.clean_up().await);
    match outcome {
        Ok(()) => {
            let (mut a_report, mut b_report) = (a.report(), b.report());
            a_report.cleanup = Some(a_cleanup);
            b_report.cleanup = Some(b_cleanup);
            Ok(Comparison::new(a_label, a_report, b_label, b_report))
        }
        Err(e) => Err(format!("{e}; A: {a_cleanup}; B: {b_cleanup}")),
    }
}

/// Refuses a target that has pending or claimed tasks not of this run (tagged `tag`): the
/// task mix would share its queue, limits and store with them.
async fn refuse_foreign_work(client: &Client, tag: &str) -> Result<(), String> {
    let mut counts = Vec::new();
    for status in ["pending", "in_progress"] {
        let page = client
            .call("task.list", json!({"status": status, "limit": 1}))
            .await
            .map_err(|code| {
                format!("checking the target for other work (task.list): error {code}")
            })?;
        counts.push(page["totalCount"].as_u64().unwrap_or(0));
    }
    let (pending, claimed) = (counts[0], counts[1]);
    if pending + claimed > 0 {
        return Err(format!(
            "the target has {pending} pending and {claimed} claimed task(s) that are not this \
             run's; --tasks would create and claim tasks beside them (its claims take only its \
             own tasks, role {tag}, but they share the server's queue, limits and store). \
             Aim it at a server of its own, or add --force to run anyway"
        ));
    }
    Ok(())
}

/// Heartbeats per second, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop at this many heartbeats per second.
    PerSecond(f64),
    /// Closed loop, saturating.
    Max,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `1000/min`, `50k/s`, `200/s`, `max`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("a rate is N/s, N/min or max, got {s:?}"))?;
        let (digits, scale) = match n.strip_suffix(['k', 'K']) {
            Some(d) => (d, 1000.0),
            None => (n, 1.0),
        };
        let n: f64 = digits
            .parse()
            .map_err(|_| format!("{n:?} is not a number in rate {s:?}"))?;
        let per = match unit {
            "s" | "sec" => 1.0,
            "min" | "m" => 60.0,
            other => return Err(format!("unknown rate unit {other:?} (s or min)")),
        };
        let rate = n * scale / per;
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!("a rate must be positive, got {s:?}"));
        }
        Ok(Rate::PerSecond(rate))
    }
}

/// A latency objective: `p99=5ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Quantile, e.g. 0.99.
    pub quantile: f64,
    /// Bound.
    pub bound: Duration,
}

impl std::str::FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, bound) = s
            .split_once('=')
            .ok_or_else(|| format!("an SLO is pNN=DURATION, e.g. p99=5ms, got {s:?}"))?;
        let quantile = match p {
            "p50" => 0.5,
            "p90" => 0.9,
            "p99" => 0.99,
            "p99.9" | "p999" => 0.999,
            "max" => 1.0,
            other => {
                return Err(format!(
                    "unknown percentile {other:?} (p50, p90, p99, p99.9, max)"
                ));
            }
        };
        let bound = humantime::parse_duration(bound)
            .map_err(|e| format!("{bound:?} is not a duration: {e}"))?;
        Ok(Slo { quantile, bound })
    }
}

impl std::fmt::Display for Slo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.quantile {
            q if q >= 1.0 => "max",
            q if q >= 0.999 => "p99.9",
            q if q >= 0.99 => "p99",
            q if q >= 0.9 => "p90",
            _ => "p50",
        };
        write!(f, "{p}={}", humantime::format_duration(self.bound))
    }
}

impl Slo {
    /// Whether `report` meets it (every method).
    pub fn met_by(&self, report: &LoadReport) -> bool {
        report
            .latency
            .values()
            .all(|p| u128::from(p.at(self.quantile)) <= self.bound.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_slos_parse() {
        assert_eq!(
            "1000/min".parse::<Rate>().unwrap(),
            Rate::PerSecond(1000.0 / 60.0)
        );
        assert_eq!("50k/s".parse::<Rate>().unwrap(), Rate::PerSecond(50_000.0));
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10/h".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        let slo: Slo = "p99=5ms".parse().unwrap();
        assert_eq!(slo.quantile, 0.99);
        assert_eq!(slo.bound, Duration::from_millis(5));
        assert!("p42=1ms".parse::<Slo>().is_err());
    }
}
