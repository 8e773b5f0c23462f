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
use crate::model::{Authority, InstanceId, MAX_LIST_LIMIT, Page};
use crate::work::lease::{LeaseConflict, LeaseGrant, LeaseHolder, LeaseKey, LeaseMode};
use crate::work::task::{
    ClaimToken, ClaimedTask, Completion, Failure, StepHeartbeat, StepStatus, TaskId, TaskQuery,
    TaskSpec, TaskView,
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
    /// request id of 1–128 characters without control characters. With
    /// [`Limits::max_tasks`](crate::Limits::max_tasks) tasks already live (pending or claimed)
    /// a new task is refused with [`Error::TooManyTasks`] and nothing changes.
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
        self.create_task_as(spec, &Authority::Any).await
    }

    /// [`create_task`](Self::create_task) on `authority`: its `request_id` lives in the scope
    /// of `authority`'s principal, so no other principal can pre-empt or replay it.
    pub(crate) async fn create_task_as(
        &self,
        spec: TaskSpec,
        authority: &Authority,
    ) -> Result<TaskView, Error> {
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
        if let Some(role) = &spec.role {
            crate::model::check_role(role, limits, "role")?;
        }
        self.store_ready()?;
        let max_tasks = limits.max_tasks;
        // Counted under the work lock, before anything changes: a refused task leaves no trace
        // in memory, in the events or in the store. A repeated request is not a new task.
        let request = spec
            .request_id
            .map(|id| (authority.binds().map(|name| name.to_string()), id));
        let (view, created) = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let repeat = request.as_ref().is_some_and(|r| work.knows_request(r));
            if !repeat && work.live_tasks() >= max_tasks {
                return Err(Error::TooManyTasks(max_tasks));
            }
            work.create(
                op,
                spec.payload,
                priority,
                max_attempts,
                locks,
                spec.role,
                request,
            )
            .map_err(|RequestIdTaken(id)| {
                ValidationError::new(
                    "requestId",
                    format!("already used by task {id}, created with other parameters"),
                )
                .into()
            })
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

    /// Tasks by status and assignee, in id order, after `query.after`, at most `limit`
    /// (default 100, at most 1000).
    pub fn list_tasks(&self, query: &TaskQuery) -> Vec<TaskView> {
        self.list_tasks_page(query).items
    }

    /// As [`list_tasks`](Self::list_tasks), with how many tasks match in all and whether more
    /// follow the page.
    pub fn list_tasks_page(&self, query: &TaskQuery) -> Page<TaskView> {
        let ctx = self.ctx();
        let op = crate::work::Op::new(&ctx.clock, ctx.leadership.term());
        ctx.work.lock().list(query, &op)
    }

    /// How many tasks are live (pending or claimed); at most
    /// [`Limits::max_tasks`](crate::Limits::max_tasks).
    pub fn live_task_count(&self) -> usize {
        self.ctx().work.lock().live_tasks()
    }

    /// How many tasks each of `instances` (id and epoch) holds claimed, in their order, read
    /// under one lock.
    pub fn claims_held(&self, instances: &[(InstanceId, crate::model::Epoch)]) -> Vec<usize> {
        let work = self.ctx().work.lock();
        instances
            .iter()
            .map(|(id, epoch)| work.claims_held(id, *epoch))
            .collect()
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
    ///
    /// A task created with a `role` goes only to a worker registered with that role: an
    /// unfiltered claim by any other worker passes over it (at no cost: see docs/work.md).
    pub async fn claim(&self, worker: &str, max_tasks: usize) -> Result<Vec<ClaimedTask>, Error> {
        self.claim_as(worker, max_tasks, None, &Authority::Any)
            .await
    }

    /// [`claim`](Self::claim) narrowed to the tasks that require exactly `role`, which
    /// `worker` must be registered with (else [`Error::Invalid`], field `role`). Tasks that
    /// require no role, or another one, are left alone.
    pub async fn claim_role(
        &self,
        worker: &str,
        role: &str,
        max_tasks: usize,
    ) -> Result<Vec<ClaimedTask>, Error> {
        self.claim_as(worker, max_tasks, Some(role), &Authority::Any)
            .await
    }

    /// [`claim`](Self::claim) on `authority`, which must be allowed to act as `worker`;
    /// with `only`, [`claim_role`](Self::claim_role).
    pub(crate) async fn claim_as(
        &self,
        worker: &str,
        max_tasks: usize,
        only: Option<&str>,
        authority: &Authority,
    ) -> Result<Vec<ClaimedTask>, Error> {
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
        if let Some(role) = only {
            crate::model::check_role(role, &ctx.config.limits, "role")?;
        }
        self.store_ready()?;
        let claimed = ctx.with_work(|work, op| -> Result<_, Error> {
            // Checked under the work lock: a departure takes the instance's tasks back under
            // the same lock, after marking it terminal, so no claim can slip in between.
            let epoch = self.live_epoch(&id, authority)?;
            let roles = self.roles_in_epoch(&id, epoch);
            if let Some(role) = only
                && !roles.iter().any(|r| r == role)
            {
                return Err(ValidationError::new(
                    "role",
                    format!(
                        "instance {id} is not registered with role {role:?}; only a worker \
                         with the role may claim its tasks"
                    ),
                )
                .into());
            }
            let claimant = crate::work::Claimant {
                roles: &roles,
                only,
            };
            Ok(work.claim(op, &id, epoch, &claimant, max_tasks))
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
    ///
    /// An `ok` step heartbeat also refreshes the liveness of the instance holding the claim,
    /// in the claim's epoch, as its own heartbeat would (not counted by the server's
    /// heartbeat rate limit): a short-lived runner may register, claim and exit while the
    /// agent's step heartbeats keep the claim alive. It never revives an instance already
    /// expired, nor one re-registered in another epoch; a stale token refreshes nothing.
    pub async fn task_heartbeat(
        &self,
        id: TaskId,
        claim_token: &str,
        extend_leases: Duration,
    ) -> Result<StepHeartbeat, Error> {
        self.task_heartbeat_as(id, claim_token, extend_leases, &Authority::Any)
            .await
    }

    /// [`task_heartbeat`](Self::task_heartbeat) on `authority`, which must be allowed to act
    /// as the claiming instance.
    pub(crate) async fn task_heartbeat_as(
        &self,
        id: TaskId,
        claim_token: &str,
        extend_leases: Duration,
        authority: &Authority,
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
        let (beat, holder) = self.ctx().with_work(|work, op| -> Result<_, Error> {
            self.check_claimer(work, op.now, id, &token, authority)?;
            let beat = work.step_heartbeat(op, id, &token, extend_ms);
            let holder = match work.claimer(id, &token, op.now) {
                Some((instance, epoch, true)) if beat.status == StepStatus::Ok => {
                    self.refresh_claim_holder(instance, epoch)
                }
                _ => None,
            };
            Ok((beat, holder))
        })?;
        if let Some(holder) = holder {
            self.write_liveness_through(holder.as_str()).await;
        }
        self.written(started).await?;
        Ok(beat)
    }

    /// Refreshes the liveness of `instance` in `epoch`, the holder of a claim that just had an
    /// `ok` step heartbeat: a registry lookup and the hot cell's touch, as
    /// [`heartbeat_now`](Self::heartbeat_now) does — no actor message, no rate limit (it is
    /// not a client heartbeat). Nothing happens if the id is registered in another epoch, or
    /// if the instance is no longer alive: a touch never revives an expired cell (its
    /// departure takes the claim back). Returns the instance when it was refreshed.
    pub(super) fn refresh_claim_holder(
        &self,
        instance: &InstanceId,
        epoch: crate::model::Epoch,
    ) -> Option<InstanceId> {
        let ctx = self.ctx();
        let entry = ctx
            .registry
            .get(instance.as_str())
            .filter(|e| e.epoch == epoch)?;
        entry
            .cell
            .touch(ctx.clock.heartbeat_stamp(), ctx.clock.coarse_ms())
            .then(|| instance.clone())
    }

    /// Completes a task under its claim; idempotent for the same token, `stale_claim` for any
    /// other. Releases the claim's leases.
    pub async fn complete_task(
        &self,
        id: TaskId,
        claim_token: &str,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, Error> {
        self.complete_task_as(id, claim_token, result, &Authority::Any)
            .await
    }

    /// [`complete_task`](Self::complete_task) on `authority`, which must be allowed to act as
    /// the claiming instance.
    pub(crate) async fn complete_task_as(
        &self,
        id: TaskId,
        claim_token: &str,
        result: Option<serde_json::Value>,
        authority: &Authority,
    ) -> Result<Completion, Error> {
        let started = Instant::now();
        if let Some(result) = &result {
            self.check_payload_size("result", result)?;
        }
        let token = ClaimToken::from_presented(claim_token);
        self.store_ready()?;
        let done = self.ctx().with_work(|work, op| -> Result<_, Error> {
            self.check_claimer(work, op.now, id, &token, authority)?;
            Ok(work.complete(op, id, &token, result))
        })?;
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
        self.fail_task_as(id, claim_token, error, &Authority::Any)
            .await
    }

    /// [`fail_task`](Self::fail_task) on `authority`, which must be allowed to act as the
    /// claiming instance.
    pub(crate) async fn fail_task_as(
        &self,
        id: TaskId,
        claim_token: &str,
        error: Option<String>,
        authority: &Authority,
    ) -> Result<Failure, Error> {
        let started = Instant::now();
        if let Some(error) = &error
            && error.len() > 8 * 1024
        {
            return Err(ValidationError::new("error", "at most 8192 bytes").into());
        }
        let token = ClaimToken::from_presented(claim_token);
        self.store_ready()?;
        let failed = self.ctx().with_work(|work, op| -> Result<_, Error> {
            self.check_claimer(work, op.now, id, &token, authority)?;
            Ok(work.fail(op, id, &token, error))
        })?;
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
        self.acquire_lease_as(key, owner, mode, ttl, &Authority::Any)
            .await
    }

    /// [`acquire_lease`](Self::acquire_lease) on `authority`, which must be allowed to act as
    /// the holder (the instance, or the claim's instance).
    pub(crate) async fn acquire_lease_as(
        &self,
        key: &str,
        owner: LeaseOwner,
        mode: LeaseMode,
        ttl: Option<Duration>,
        authority: &Authority,
    ) -> Result<LeaseOutcome, Error> {
        let started = Instant::now();
        self.ensure_running()?;
        let key = LeaseKey::parse(key)?;
        let ttl_ms = self.lease_ttl_ms(ttl)?;
        self.store_ready()?;
        let outcome = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, op.now, &owner, authority)?;
            not_a_required_lock(work, &holder, &key, "re-acquired")?;
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
        self.renew_lease_as(key, owner, ttl, &Authority::Any).await
    }

    /// [`renew_lease`](Self::renew_lease) on `authority`, which must be allowed to act as the
    /// holder.
    pub(crate) async fn renew_lease_as(
        &self,
        key: &str,
        owner: LeaseOwner,
        ttl: Option<Duration>,
        authority: &Authority,
    ) -> Result<Option<LeaseGrant>, Error> {
        let started = Instant::now();
        let key = LeaseKey::parse(key)?;
        let ttl_ms = self.lease_ttl_ms(ttl)?;
        self.store_ready()?;
        let grant = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, op.now, &owner, authority)?;
            Ok(work.renew_lease(op, &key, &holder, ttl_ms))
        })?;
        if grant.is_some() {
            self.written(started).await?;
        }
        Ok(grant)
    }

    /// Releases `owner`'s lease on `key`; answers whether there was one.
    pub async fn release_lease(&self, key: &str, owner: LeaseOwner) -> Result<bool, Error> {
        self.release_lease_as(key, owner, &Authority::Any).await
    }

    /// [`release_lease`](Self::release_lease) on `authority`, which must be allowed to act as
    /// the holder.
    pub(crate) async fn release_lease_as(
        &self,
        key: &str,
        owner: LeaseOwner,
        authority: &Authority,
    ) -> Result<bool, Error> {
        let started = Instant::now();
        let key = LeaseKey::parse(key)?;
        self.store_ready()?;
        let released = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let holder = self.resolve_owner(work, op.now, &owner, authority)?;
            not_a_required_lock(work, &holder, &key, "released")?;
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

    /// One page of the leases under `prefix` (or all), ordered by key and then fencing token:
    /// at most `limit` (clamped to [`MAX_LIST_LIMIT`]) of those after `after` (the key and
    /// fencing token of the last lease of the previous page), with how many there are in all.
    pub fn list_leases_page(
        &self,
        prefix: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Page<LeaseGrant>, Error> {
        let prefix = prefix.map(LeaseKey::parse).transpose()?;
        let limit = limit.min(MAX_LIST_LIMIT);
        Ok(self
            .ctx()
            .work
            .lock()
            .list_leases_page(prefix.as_ref(), after, limit))
    }

    /// Runs one sweep now (the LeaderActor runs one every `sweep_interval`).
    /// All of it: chunk after chunk, each under its own hold of the work lock, until nothing
    /// due is left and the safety net has been round every holder once.
    pub(crate) fn sweep_now(&self) -> crate::work::Sweep {
        let ctx = self.ctx();
        let mut total = crate::work::Sweep::default();
        ctx.work.lock().restart_sweep_round();
        loop {
            let (report, round_done) = ctx.with_work(|work, op| {
                let report = work.sweep(op, crate::work::SWEEP_CHUNK, |id, epoch| {
                    ctx.is_live(id, epoch)
                });
                (report, work.sweep_round_done())
            });
            total += report;
            if !report.more && round_done {
                return total;
            }
        }
    }

    /// The roles `id` is registered with in `epoch` (none if it is not in that epoch now).
    pub(super) fn roles_in_epoch(
        &self,
        id: &InstanceId,
        epoch: crate::model::Epoch,
    ) -> Vec<String> {
        let slot = self
            .ctx()
            .registry
            .get(id.as_str())
            .filter(|e| e.epoch == epoch)
            .map(|e| std::sync::Arc::clone(&e.slot));
        slot.map(|s| s.roles()).unwrap_or_default()
    }

    /// The epoch of `id` if it is a live instance `authority` may act as.
    pub(super) fn live_epoch(
        &self,
        id: &InstanceId,
        authority: &Authority,
    ) -> Result<crate::model::Epoch, Error> {
        let (epoch, owner) = self
            .ctx()
            .registry
            .get(id.as_str())
            .filter(|e| e.cell.status().is_alive())
            .map(|e| (e.slot.epoch, e.slot.owner.clone()))
            .ok_or_else(|| Error::NotAlive(id.to_string()))?;
        if !authority.permits(owner.as_deref()) {
            return Err(Error::Forbidden {
                instance: id.to_string(),
                reason: authority.refusal(owner.as_deref()),
            });
        }
        Ok(epoch)
    }

    /// Refuses a current claim on `task_id` held by an instance `authority` may not act as. A
    /// token that is not current is left to the call itself to answer `stale_claim`.
    fn check_claimer(
        &self,
        work: &crate::work::WorkBook,
        now: crate::clock::MonoMs,
        task_id: TaskId,
        token: &ClaimToken,
        authority: &Authority,
    ) -> Result<(), Error> {
        if *authority == Authority::Any {
            return Ok(());
        }
        let Some((instance, epoch, current)) = work.claimer(task_id, token, now) else {
            return Ok(());
        };
        let slot = self
            .ctx()
            .registry
            .get(instance.as_str())
            .filter(|e| e.epoch == epoch)
            .map(|e| e.slot.owner.clone());
        let owner = match slot {
            Some(owner) => owner,
            // A completed task's claimer is gone: repeating the completion changes nothing.
            None if !current => return Ok(()),
            None => None,
        };
        if authority.permits(owner.as_deref()) {
            Ok(())
        } else {
            Err(Error::Forbidden {
                instance: instance.to_string(),
                reason: authority.refusal(owner.as_deref()),
            })
        }
    }

    fn resolve_owner(
        &self,
        work: &crate::work::WorkBook,
        now: crate::clock::MonoMs,
        owner: &LeaseOwner,
        authority: &Authority,
    ) -> Result<LeaseHolder, Error> {
        let ctx = self.ctx();
        match owner {
            LeaseOwner::Instance(id) => {
                let id = InstanceId::parse(id, &ctx.config.limits).map_err(|mut e| {
                    e.field = "holder".into();
                    e
                })?;
                let epoch = self.live_epoch(&id, authority)?;
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
                if !work.claim_is_current(*task_id, &token, now) {
                    return Err(Error::StaleClaim(task_id.to_string()));
                }
                self.check_claimer(work, now, *task_id, &token, authority)?;
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

    pub(super) fn check_payload_size(
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

/// Refuses a lease call under a claim on a lock its task requires: such a lease is held as the
/// task asked for the whole claim (extended by `task.heartbeat` or `lease.renew`, released by
/// `task.complete` or `task.fail`) and cannot be `what` on its own.
fn not_a_required_lock(
    work: &crate::work::WorkBook,
    holder: &LeaseHolder,
    key: &LeaseKey,
    what: &str,
) -> Result<(), Error> {
    match holder {
        LeaseHolder::Claim {
            task_id,
            claim_token,
        } if work.is_required_lock(*task_id, claim_token, key) => Err(ValidationError::new(
            "key",
            format!(
                "{key} is a lock task {task_id} requires: it is held as the task asked for the \
                 whole claim (extended by task.heartbeat or lease.renew, released by \
                 task.complete or task.fail) and cannot be {what} on its own"
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

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
