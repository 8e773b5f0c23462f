//! The work-distribution half of the [`Coordinator`] API: tasks and leases.
//!
//! Every call validates its input first (a violation is [`Error::Invalid`] naming the field
//! and changes nothing), then runs one short critical section on the work book.
//!
//! With a store, every call that changes something waits for the store to acknowledge it, up
//! to [`Config::store_wait`](crate::Config::store_wait) from the call's start. When the store
//! does not, `create_task` and `claim` undo their change and answer
//! [`Error::StoreUnavailable`] (nothing changed); the other calls keep theirs — each is safe to
//! repeat — and answer [`Error::NotDurable`]. docs/persistence.md states the rule per call.

use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use crate::error::{Error, ValidationError};
use crate::model::InstanceId;
use crate::work::lease::{LeaseConflict, LeaseGrant, LeaseHolder, LeaseKey, LeaseMode};
use crate::work::task::{
    ClaimToken, ClaimedTask, Completion, Failure, StepHeartbeat, TaskId, TaskQuery, TaskSpec,
    TaskView,
};
use crate::work::{RequestIdTaken, Undo};

/// Who asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOwner {
    /// A live registered instance; its leases go when it expires or unregisters.
    Instance(String),
    /// A current claim on a task; its leases go when the claim ends.
    Claim {
        /// The task.
        task_id: TaskId,
        /// The claim token.
        claim_token: String,
    },
}

/// The answer to a lease acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Granted.
    Granted(LeaseGrant),
    /// Refused: these holds conflict.
    Conflict(Vec<LeaseConflict>),
}

impl Coordinator {
    /// Creates a pending task. Payload ≤ 64 KiB serialized, priority 0–100 (default 50),
    /// max attempts 1–100 (default 3), at most 32 required locks with valid keys, an optional
    /// request id of 1–128 characters without control characters.
    ///
    /// A `request_id` the coordinator still knows (its task has not been evicted by the
    /// finished-task retention) returns that task instead of creating another; with other
    /// parameters it is [`Error::Invalid`] (`requestId`).
    ///
    /// With a store: if the store does not acknowledge the new task within
    /// [`Config::store_wait`](crate::Config::store_wait), the task is withdrawn (a
    /// `task.withdrawn` event) and the answer is [`Error::StoreUnavailable`]: nothing was
    /// created. Only if it was claimed meanwhile does it stay, answered
    /// [`Error::NotDurable`].
    pub async fn create_task(&self, spec: TaskSpec) -> Result<TaskView, Error> {
        let started = Instant::now();
        self.ensure_running()?;
        let limits = &self.ctx().config.limits;
        self.check_payload_size("payload", &spec.payload)?;
        let priority = spec.priority.unwrap_or(50);
        if priority > 100 {
            return Err(ValidationError::new(
                "priority",
                format!("must lie within 0..=100, got {priority}"),
            )
            .into());
        }
        let max_attempts = spec.max_attempts.unwrap_or(3);
        if max_attempts == 0 || max_attempts > limits.max_attempts {
            return Err(ValidationError::new(
                "maxAttempts",
                format!(
                    "must lie within 1..={}, got {max_attempts}",
                    limits.max_attempts
                ),
            )
            .into());
        }
        if spec.requires_locks.len() > limits.max_task_locks {
            return Err(ValidationError::new(
                "requiresLocks",
                format!(
                    "at most {} locks, got {}",
                    limits.max_task_locks,
                    spec.requires_locks.len()
                ),
            )
            .into());
        }
        let mut locks = Vec::with_capacity(spec.requires_locks.len());
        for (i, lock) in spec.requires_locks.into_iter().enumerate() {
            let key = LeaseKey::parse_field(lock.key.as_str(), &format!("requiresLocks[{i}].key"))?;
            if locks
                .iter()
                .any(|l: &crate::work::task::LockSpec| l.key == key)
            {
                return Err(ValidationError::new(
                    format!("requiresLocks[{i}].key"),
                    format!("{key} is listed twice"),
                )
                .into());
            }
            locks.push(crate::work::task::LockSpec {
                key,
                mode: lock.mode,
            });
        }
        if let Some(request) = &spec.request_id {
            check_request_id(request)?;
        }
        self.store_ready()?;
        let (view, created) = self
            .ctx()
            .with_work(|work, op| {
                work.create(
                    op,
                    spec.payload,
                    priority,
                    max_attempts,
                    locks,
                    spec.request_id,
                )
            })
            .map_err(|RequestIdTaken(id)| {
                ValidationError::new(
                    "requestId",
                    format!("already used by task {id}, created with other parameters"),
                )
            })?;
        let written = self.written(started).await;
        if !created {
            // A repeated request: answer for the task the first one made — unless that one
            // was undone meanwhile (its own wait failed).
            if self.get_task(view.id).is_none() {
                return Err(Error::StoreUnavailable(format!(
                    "the create with this request id was undone (the store did not acknowledge \
                     it); task {} does not exist",
                    view.id
                )));
            }
            return written.map(|()| view);
        }
        match written {
            Err(Error::NotDurable(why)) => {
                let undo = self.ctx().with_work(|work, op| {
                    work.withdraw(
                        op,
                        view.id,
                        "creation undone: the store did not acknowledge it",
                    )
                });
                match undo {
                    Undo::Undone | Undo::Gone => {
                        tracing::warn!(task = %view.id, "task creation undone: the store did not acknowledge it");
                        Err(Error::StoreUnavailable(format!(
                            "the store did not acknowledge the new task in time; it was not \
                             created (task {} withdrawn)",
                            view.id
                        )))
                    }
                    Undo::Kept => Err(Error::NotDurable(format!(
                        "{why}; task {} exists (it was claimed meanwhile)",
                        view.id
                    ))),
                }
            }
            Err(e) => Err(e),
            Ok(()) => Ok(view),
        }
    }

    /// A task by id.
    pub fn get_task(&self, id: TaskId) -> Option<TaskView> {
        let ctx = self.ctx();
        let op = crate::work::Op::new(&ctx.clock, ctx.leadership.term());
        ctx.work.lock().get(id, &op)
    }

    /// Tasks by status and assignee, in id order, at most `limit` (default 100, cap 10 000).
    pub fn list_tasks(&self, query: &TaskQuery) -> Vec<TaskView> {
        let ctx = self.ctx();
        let op = crate::work::Op::new(&ctx.clock, ctx.leadership.term());
        ctx.work.lock().list(query, &op)
    }

    /// Counts of tasks by status (`pending`, `claimed`, `completed`, `failed`).
    pub fn task_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        self.ctx().work.lock().counts()
    }

    /// Claims up to `max_tasks` (1–100) of the best pending tasks for `worker`, which must be a
    /// live registered instance. Each comes with a fresh claim token and the leases of its
    /// required locks. An empty answer means nothing claimable is pending.
    ///
    /// With a store: if the store does not acknowledge the claim within
    /// [`Config::store_wait`](crate::Config::store_wait), the claim is undone — its tasks go
    /// back to pending in their places, the leases it took are released, its tokens are dead —
    /// and the answer is [`Error::StoreUnavailable`]: nothing is claimed.
    pub async fn claim(&self, worker: &str, max_tasks: usize) -> Result<Vec<ClaimedTask>, Error> {
        let started = Instant::now();
        self.ensure_running()?;
        let ctx = self.ctx();
        let id = InstanceId::parse(worker, &ctx.config.limits).map_err(|mut e| {
            e.field = "workerId".into();
            e
        })?;
        if max_tasks == 0 || max_tasks > ctx.config.limits.max_claim {
            return Err(ValidationError::new(
                "maxTasks",
                format!(
                    "must lie within 1..={}, got {max_tasks}",
                    ctx.config.limits.max_claim
                ),
            )
            .into());
        }
        self.store_ready()?;
        let claimed = ctx.with_work(|work, op| -> Result<_, Error> {
            // Checked under the work lock: a departure takes the instance's tasks back under
            // the same lock, after marking it terminal, so no claim can slip in between.
            let epoch = ctx
                .registry
                .get(id.as_str())
                .filter(|e| e.cell.status().is_alive())
                .map(|e| e.slot.epoch)
                .ok_or_else(|| Error::NotAlive(id.to_string()))?;
            Ok(work.claim(op, &id, epoch, max_tasks))
        })?;
        if !claimed.is_empty() {
            match self.written(started).await {
                Ok(()) => {}
                Err(Error::NotDurable(_)) => {
                    ctx.with_work(|work, op| {
                        for c in &claimed {
                            work.unclaim(
                                op,
                                c.task.id,
                                &c.claim_token,
                                "claim undone: the store did not acknowledge it",
                            );
                        }
                    });
                    tracing::warn!(worker = %id, tasks = claimed.len(), "claim undone: the store did not acknowledge it");
                    return Err(Error::StoreUnavailable(format!(
                        "the store did not acknowledge the claim in time; it was undone and \
                         its {} task(s) are pending again",
                        claimed.len()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(claimed)
    }

    /// A step heartbeat (Sortie's `heartbeat(step_id, extend_leases_sec)`): `ok` if
    /// `claim_token` is the task's current claim, `stale_claim` otherwise (also for an unknown
    /// task). Extends the claim's leases to now + `extend_leases` (zero: heartbeat only) and
    /// reports leases that had already lapsed.
    pub async fn task_heartbeat(
        &self,
        id: TaskId,
        claim_token: &str,
        extend_leases: Duration,
    ) -> Result<StepHeartbeat, Error> {
        let started = Instant::now();
        let max = self.ctx().config.limits.max_lease_ttl;
        if extend_leases > max {
            return Err(ValidationError::new(
                "extendLeasesSec",
                format!(
                    "at most {} s, got {} s",
                    max.as_secs(),
                    extend_leases.as_secs()
                ),
            )
            .into());
        }
        let token = ClaimToken::from_presented(claim_token);
        let extend_ms = extend_leases.as_millis() as u64;
        self.store_ready()?;
        let beat = self
            .ctx()
            .with_work(|work, op| work.step_heartbeat(op, id, &token, extend_ms));
        self.written(started).await?;
        Ok(beat)
    }

    /// Completes a task under its claim; idempotent for the same token, `stale_claim` for any
    /// other. Releases the claim's leases.
    pub async fn complete_task(
        &self,
        id: TaskId,
        claim_token: &str,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, Error> {
        let started = Instant::now();
        if let Some(result) = &result {
            self.check_payload_size("result", result)?;
        }
        let token = ClaimToken::from_presented(claim_token);
        self.store_ready()?;
        let done = self
            .ctx()
            .with_work(|work, op| work.complete(op, id, &token, result));
        self.written(started).await?;
        Ok(done)
    }

    /// Reports a failed attempt under the claim; the task goes back to pending until it has
    /// used its attempts, then fails for good. Releases the claim's leases.
    pub async fn fail_task(
        &self,
        id: TaskId,
        claim_token: &str,
        error: Option<String>,
    ) -> Result<Failure, Error> {
        let started = Instant::now();
        if let Some(error) = &error
            && error.len() > 8 * 1024
        {
            return Err(ValidationError::new("error", "at most 8192 bytes").into());
        }
        let token = ClaimToken::from_presented(claim_token);
        self.store_ready()?;
        let failed = self
            .ctx()
            .with_work(|work, op| work.fail(op, id, &token, error));
        self.written(started).await?;
        Ok(failed)
    }

    /// Acquires a lease on `key` for `owner` (default TTL: the config's `lease_ttl`).
    pub async fn acquire_lease(
        &self,
        key: &str,
        owner: LeaseOwner,
        mode: LeaseMode,
        ttl: Option<Duration>,
    ) -> Result<LeaseOutcome, Error> {
        let started = Instant::now();
        self.ensure_running()?;
        let key = LeaseKey::parse(key)?;
        let ttl_ms = self.lease_ttl_ms(ttl)?;
        self.store_ready()?;
        let outcome = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, &owner)?;
            Ok(match work.acquire_lease(op, key, mode, holder, ttl_ms) {
                Ok(grant) => LeaseOutcome::Granted(grant),
                Err(conflicts) => LeaseOutcome::Conflict(conflicts),
            })
        })?;
        if matches!(outcome, LeaseOutcome::Granted(_)) {
            self.written(started).await?;
        }
        Ok(outcome)
    }

    /// Renews `owner`'s live lease on `key`; `None` if it holds none (or it lapsed).
    pub async fn renew_lease(
        &self,
        key: &str,
        owner: LeaseOwner,
        ttl: Option<Duration>,
    ) -> Result<Option<LeaseGrant>, Error> {
        let started = Instant::now();
        let key = LeaseKey::parse(key)?;
        let ttl_ms = self.lease_ttl_ms(ttl)?;
        self.store_ready()?;
        let grant = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, &owner)?;
            Ok(work.renew_lease(op, &key, &holder, ttl_ms))
        })?;
        if grant.is_some() {
            self.written(started).await?;
        }
        Ok(grant)
    }

    /// Releases `owner`'s lease on `key`; answers whether there was one.
    pub async fn release_lease(&self, key: &str, owner: LeaseOwner) -> Result<bool, Error> {
        let started = Instant::now();
        let key = LeaseKey::parse(key)?;
        self.store_ready()?;
        let released = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, &owner)?;
            Ok(work.release_lease(op, &key, &holder).is_some())
        })?;
        if released {
            self.written(started).await?;
        }
        Ok(released)
    }

    /// Leases on `prefix` and below, or all.
    pub fn list_leases(&self, prefix: Option<&str>) -> Result<Vec<LeaseGrant>, Error> {
        let prefix = prefix.map(LeaseKey::parse).transpose()?;
        Ok(self.ctx().work.lock().list_leases(prefix.as_ref()))
    }

    /// Runs one sweep now (the LeaderActor runs one every `sweep_interval`).
    pub(crate) fn sweep_now(&self) -> crate::work::Sweep {
        let ctx = self.ctx();
        ctx.with_work(|work, op| work.sweep(op, |id, epoch| ctx.is_live(id, epoch)))
    }

    fn resolve_owner(
        &self,
        work: &crate::work::WorkBook,
        owner: &LeaseOwner,
    ) -> Result<LeaseHolder, Error> {
        let ctx = self.ctx();
        match owner {
            LeaseOwner::Instance(id) => {
                let id = InstanceId::parse(id, &ctx.config.limits).map_err(|mut e| {
                    e.field = "holder".into();
                    e
                })?;
                let epoch = ctx
                    .registry
                    .get(id.as_str())
                    .filter(|e| e.cell.status().is_alive())
                    .map(|e| e.slot.epoch)
                    .ok_or_else(|| Error::NotAlive(id.to_string()))?;
                Ok(LeaseHolder::Instance {
                    instance_id: id,
                    epoch,
                })
            }
            LeaseOwner::Claim {
                task_id,
                claim_token,
            } => {
                let token = ClaimToken::from_presented(claim_token.as_str());
                if !work.claim_is_current(*task_id, &token) {
                    return Err(Error::StaleClaim(task_id.to_string()));
                }
                Ok(LeaseHolder::Claim {
                    task_id: *task_id,
                    claim_token: token,
                })
            }
        }
    }

    fn lease_ttl_ms(&self, ttl: Option<Duration>) -> Result<u64, Error> {
        let config = &self.ctx().config;
        let ttl = ttl.unwrap_or(config.lease_ttl);
        let (min, max) = (config.limits.min_lease_ttl, config.limits.max_lease_ttl);
        if ttl < min || ttl > max {
            return Err(ValidationError::new(
                "ttlSec",
                format!(
                    "must lie within {}..={} s, got {} ms",
                    min.as_secs(),
                    max.as_secs(),
                    ttl.as_millis()
                ),
            )
            .into());
        }
        Ok(ttl.as_millis() as u64)
    }

    fn check_payload_size(
        &self,
        field: &'static str,
        value: &serde_json::Value,
    ) -> Result<(), Error> {
        let max = self.ctx().config.limits.max_payload_bytes;
        let size = serde_json::to_vec(value)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max {
            return Err(ValidationError::new(
                field,
                format!("at most {max} bytes when serialized, got {size}"),
            )
            .into());
        }
        Ok(())
    }
}

/// Most characters of a task's request id.
const MAX_REQUEST_ID_CHARS: usize = 128;

fn check_request_id(request: &str) -> Result<(), ValidationError> {
    let chars = request.chars().count();
    if chars == 0 || chars > MAX_REQUEST_ID_CHARS {
        return Err(ValidationError::new(
            "requestId",
            format!("must be 1..={MAX_REQUEST_ID_CHARS} characters, got {chars}"),
        ));
    }
    if request.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "requestId",
            "must not contain control characters",
        ));
    }
    Ok(())
}
