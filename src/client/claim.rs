//! [`Claim`]: a claimed task with its fencing token.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Client, ClientError};
use crate::work::lease::{LeaseGrant, LeaseKey};
use crate::work::task::{
    ClaimToken, ClaimedTask, CompleteStatus, Completion, FailStatus, Failure, StepHeartbeat,
    StepStatus, TaskId, TaskView,
};

/// What the step heartbeats of a claim have learnt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimState {
    /// The server answered `stale_claim`: the task was taken back (its step timed out, the
    /// worker expired), finished by someone else, or never claimed with this token. Stop
    /// working on it; nothing done under this claim will be accepted. Also set when the step
    /// heartbeats stopped on a permanent error (see [`error`](Self::error)): the claim can no
    /// longer be kept, and the server will take the task back.
    pub stale: bool,
    /// Leases of this claim that lapsed before a heartbeat could extend them: do not rely on
    /// them any more. The server reports them; the client also adds every lease of the claim
    /// once their expiry passed without a successful extension (during an outage).
    pub lost_leases: Vec<LeaseKey>,
    /// Wall-clock ms the remaining leases run to after the last extension.
    pub leases_expire_at_ms: Option<u64>,
    /// Step heartbeats answered `ok` so far.
    pub heartbeats: u64,
    /// The permanent error (an unauthorized or invalid call, an unreadable answer) that
    /// stopped the step heartbeats, if any.
    pub error: Option<String>,
}

/// A [`Claim::complete`] or [`Claim::fail`] that did not get through, with the claim, so the
/// call can be made again (its step heartbeats run again as before the call). Converts into
/// its [`ClientError`] for `?`.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ClaimError {
    /// What went wrong; [`ClientError::is_transient`] says whether retrying may help.
    pub error: ClientError,
    /// The claim, unchanged.
    pub claim: Box<Claim>,
}

impl From<ClaimError> for ClientError {
    fn from(e: ClaimError) -> Self {
        e.error
    }
}

/// A task claimed by a worker, with the claim token that fences every call on it.
///
/// [`keep_alive`](Self::keep_alive) starts step heartbeats (`task.heartbeat`, extending the
/// claim's leases) from a background task; [`stale`](Self::stale) resolves the moment one is
/// answered `stale_claim` (or the heartbeats stop on a permanent error), and
/// [`leases_lost`](Self::leases_lost) when a lease of the claim is lost — reported by the
/// server, or its expiry passed without an extension. [`complete`](Self::complete) and
/// [`fail`](Self::fail) consume the claim and stop the heartbeats, as does dropping it (the
/// server then takes the task back when its step times out); when they fail, the error hands
/// the claim back for another try.
///
/// The claim token is a secret of the worker: `Debug` prints it redacted, and the client never
/// logs it.
pub struct Claim {
    client: Client,
    task: TaskView,
    token: ClaimToken,
    leases: Vec<LeaseGrant>,
    state: Arc<watch::Sender<ClaimState>>,
    /// When the claim's leases lapse locally unless extended (none without leases).
    leases_until: Arc<Mutex<Option<Instant>>>,
    keeper: Option<JoinHandle<()>>,
    /// The arguments of the running [`keep_alive`](Self::keep_alive), to restart it.
    keep: Option<(Duration, Option<Duration>)>,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leases: Vec<(&str, u64)> = self
            .leases
            .iter()
            .map(|l| (l.key.as_str(), l.fencing_token))
            .collect();
        f.debug_struct("Claim")
            .field("task_id", &self.task.id)
            .field("claim_token", &self.token) // ClaimToken's Debug is redacted
            .field("leases", &leases)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl Claim {
    pub(crate) fn from_claimed(client: Client, claimed: ClaimedTask) -> Self {
        let leases_until = claimed
            .leases
            .iter()
            .map(|l| super::local_deadline(l.expires_at_ms))
            .min();
        Self {
            client,
            task: claimed.task,
            token: claimed.claim_token,
            leases: claimed.leases,
            state: Arc::new(watch::channel(ClaimState::default()).0),
            leases_until: Arc::new(Mutex::new(leases_until)),
            keeper: None,
            keep: None,
        }
    }

    /// Claims the best pending task for the live instance `worker_id`; `None` when nothing
    /// claimable is pending.
    pub async fn next(client: &Client, worker_id: &str) -> Result<Option<Claim>, ClientError> {
        Ok(client.claim(worker_id, 1).await?.pop())
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    /// The task as it was when claimed.
    pub fn task(&self) -> &TaskView {
        &self.task
    }

    /// The task's payload.
    pub fn payload(&self) -> &Value {
        &self.task.payload
    }

    /// The leases acquired for the task's required locks (each with its fencing token). Note
    /// that a grant's `holder` carries the claim token: do not log the grants whole.
    pub fn leases(&self) -> &[LeaseGrant] {
        &self.leases
    }

    /// The claim token, for calls the client has no method for (such as `lease.acquire` held
    /// by the claim). Keep it out of logs.
    pub fn claim_token(&self) -> &str {
        self.token.as_str()
    }

    /// What the step heartbeats learnt so far.
    pub fn state(&self) -> ClaimState {
        self.state.borrow().clone()
    }

    /// Whether the claim is known to be stale.
    pub fn is_stale(&self) -> bool {
        self.state.borrow().stale
    }

    /// Every change of [`ClaimState`].
    pub fn watch(&self) -> watch::Receiver<ClaimState> {
        self.state.subscribe()
    }

    /// Resolves the moment a step heartbeat (or a completion) is answered `stale_claim`, or
    /// the step heartbeats stop on a permanent error (at once if it was already). Never
    /// resolves for a claim that stays current.
    pub fn stale(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.state.subscribe();
        async move {
            // The sender lives as long as the claim; once it is gone, wait forever.
            if rx.wait_for(|s| s.stale).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves the moment a lease of the claim is known lost (at once if one was): the
    /// server reported it lapsed, or its expiry passed without a successful extension. The
    /// task may still be claimed, but whatever its locks protect is no longer protected.
    /// Never resolves for a claim without leases.
    pub fn leases_lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let state = Arc::clone(&self.state);
        let until = Arc::clone(&self.leases_until);
        let keys: Vec<LeaseKey> = self.leases.iter().map(|l| l.key.clone()).collect();
        let mut rx = state.subscribe();
        async move {
            loop {
                if !rx.borrow_and_update().lost_leases.is_empty() {
                    return;
                }
                let deadline = *until.lock();
                tokio::select! {
                    _ = rx.changed() => {}
                    () = sleep_until_some(deadline) => lapse(&state, &until, &keys),
                }
            }
        }
    }

    /// Starts step heartbeats every `every`, each extending the claim's leases by `extend`
    /// (the server's 900 s when `None`; zero for no extension). Replaces an earlier loop. The
    /// loop stops at the first `stale_claim`, at a permanent error (marking the claim stale),
    /// and with the claim. When the leases' expiry passes without a successful extension,
    /// they are added to [`ClaimState::lost_leases`].
    pub fn keep_alive(&mut self, every: Duration, extend: Option<Duration>) {
        if let Some(old) = self.keeper.take() {
            old.abort();
        }
        self.keep = Some((every, extend));
        let every = every.max(Duration::from_millis(10));
        let client = self.client.clone();
        let task_id = self.task.id;
        let token = self.token.clone();
        let state = Arc::clone(&self.state);
        let until = Arc::clone(&self.leases_until);
        let keys: Vec<LeaseKey> = self.leases.iter().map(|l| l.key.clone()).collect();
        self.keeper = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut failures = 0u32;
            loop {
                let deadline = *until.lock();
                tokio::select! {
                    _ = tick.tick() => {}
                    () = sleep_until_some(deadline) => {
                        lapse(&state, &until, &keys);
                        continue;
                    }
                }
                let sent = Instant::now();
                match client.task_heartbeat(task_id, token.as_str(), extend).await {
                    Ok(step) => {
                        failures = 0;
                        if record(&state, &until, &step, sent, extend) {
                            tracing::warn!(task = %task_id, "claim is stale: stopping its heartbeats");
                            return;
                        }
                    }
                    Err(e) if !e.is_transient() => {
                        tracing::warn!(task = %task_id, error = %e,
                                       "step heartbeat refused: stopping them, the claim is lost");
                        state.send_modify(|s| {
                            s.stale = true;
                            s.error = Some(e.to_string());
                        });
                        return;
                    }
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(task = %task_id, error = %e, "step heartbeat failed");
                        } else {
                            tracing::debug!(task = %task_id, error = %e, failures,
                                            "step heartbeat failed again");
                        }
                        failures += 1;
                    }
                }
            }
        }));
    }

    /// One step heartbeat now, extending the leases by `extend` (the server's 900 s when
    /// `None`). A `stale_claim` answer is returned (not an error) and signalled.
    pub async fn heartbeat(&self, extend: Option<Duration>) -> Result<StepHeartbeat, ClientError> {
        let sent = Instant::now();
        let step = self
            .client
            .task_heartbeat(self.task.id, self.token.as_str(), extend)
            .await?;
        record(&self.state, &self.leases_until, &step, sent, extend);
        Ok(step)
    }

    fn stop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }

    /// Restarts the step heartbeats stopped for a call that failed, and hands the claim back.
    fn give_back(mut self, error: ClientError) -> ClaimError {
        if let Some((every, extend)) = self.keep {
            self.keep_alive(every, extend);
        }
        ClaimError {
            error,
            claim: Box::new(self),
        }
    }

    /// Completes the task with `result`. Check [`Completion::status`]: `stale_claim` means the
    /// result was not accepted. When the call fails, the [`ClaimError`] holds the claim (its
    /// heartbeats running again) to try again — keep a copy of `result` for that.
    pub async fn complete(mut self, result: Option<Value>) -> Result<Completion, ClaimError> {
        self.stop();
        match self
            .client
            .complete(self.task.id, self.token.as_str(), result)
            .await
        {
            Ok(done) => {
                if done.status == CompleteStatus::StaleClaim {
                    self.mark_stale();
                }
                Ok(done)
            }
            Err(error) => Err(self.give_back(error)),
        }
    }

    /// Reports a failure: the task goes back to pending while attempts remain. When the call
    /// fails, the [`ClaimError`] holds the claim to try again.
    pub async fn fail(mut self, error: Option<&str>) -> Result<Failure, ClaimError> {
        self.stop();
        match self
            .client
            .fail(self.task.id, self.token.as_str(), error)
            .await
        {
            Ok(failed) => {
                if failed.status == FailStatus::StaleClaim {
                    self.mark_stale();
                }
                Ok(failed)
            }
            Err(e) => Err(self.give_back(e)),
        }
    }

    fn mark_stale(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.stale, true));
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The claim's leases lapsed locally: every one of them is lost (unless an extension moved
/// the deadline meanwhile).
fn lapse(state: &watch::Sender<ClaimState>, until: &Mutex<Option<Instant>>, keys: &[LeaseKey]) {
    {
        let mut until = until.lock();
        if until.is_none_or(|t| t > Instant::now()) {
            return;
        }
        *until = None;
    }
    tracing::warn!("the claim's leases lapsed without an extension");
    state.send_if_modified(|s| {
        let mut changed = false;
        for key in keys {
            if !s.lost_leases.contains(key) {
                s.lost_leases.push(key.clone());
                changed = true;
            }
        }
        changed
    });
}

/// Takes in a step heartbeat's answer (its request sent at `sent`, extending by `extend`);
/// true when it was `stale_claim`.
fn record(
    state: &watch::Sender<ClaimState>,
    until: &Mutex<Option<Instant>>,
    step: &StepHeartbeat,
    sent: Instant,
    extend: Option<Duration>,
) -> bool {
    let stale = step.status == StepStatus::StaleClaim;
    if !stale && let Some(expires_at_ms) = step.leases_expire_at_ms {
        let mut until = until.lock();
        if until.is_some() {
            // The server extended from when the heartbeat arrived, after it was sent.
            *until = Some(match extend {
                Some(d) if !d.is_zero() => sent + Duration::from_secs(super::ceil_secs(d)),
                _ => super::local_deadline(expires_at_ms),
            });
        }
    }
    state.send_modify(|s| {
        if stale {
            s.stale = true;
        } else {
            s.heartbeats += 1;
            s.leases_expire_at_ms = step.leases_expire_at_ms;
        }
        for key in &step.lost_leases {
            if !s.lost_leases.contains(key) {
                s.lost_leases.push(key.clone());
            }
        }
    });
    stale
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop();
    }
}
