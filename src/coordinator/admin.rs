//! Task calls of ClaudeBench's clients beyond claiming: `update`, `assign`, `unassign`,
//! `delete` (operator actions), and completing or failing a task without its claim token —
//! only as the task's live assignee (same id and epoch) or as an operator, so fencing holds:
//! a zombie or a re-registered incarnation is refused, and an operator's action makes the
//! holder's token stale. See docs/work.md, "Without a claim token".

use tokio::time::Instant;

use super::Coordinator;
use crate::error::{Error, ValidationError};
use crate::model::{Authority, InstanceId};
use crate::work::admin::Actor;
use crate::work::task::{
    Completion, Failure, StepHeartbeat, StepStatus, TaskId, TaskStatus, TaskUpdate, TaskView,
};

/// Longest task text (ClaudeBench's limit).
pub const MAX_TEXT_CHARS: usize = 500;

impl Coordinator {
    /// Completes task `id` without its claim token. With `worker`, the call is the task's
    /// assignee speaking: `worker` must be live and hold the task's claim (or be the instance
    /// it is assigned to) in its current epoch. Without, it is an operator's action, recorded
    /// as such on the task (`finishedBy`) and in its event. Either way the claim's token is
    /// stale afterwards and its leases are released. Completing a finished task, or a pending
    /// task assigned to nobody, is [`Error::Invalid`].
    pub async fn complete_without_token(
        &self,
        id: TaskId,
        worker: Option<&str>,
        result: Option<serde_json::Value>,
    ) -> Result<Completion, Error> {
        self.complete_without_token_as(id, worker, result, &Authority::Any)
            .await
    }

    /// [`complete_without_token`](Self::complete_without_token) on `authority`: acting as
    /// `worker` needs the right to act as it; acting as nobody needs an operator.
    pub(crate) async fn complete_without_token_as(
        &self,
        id: TaskId,
        worker: Option<&str>,
        result: Option<serde_json::Value>,
        authority: &Authority,
    ) -> Result<Completion, Error> {
        let started = Instant::now();
        if let Some(result) = &result {
            self.check_payload_size("result", result)?;
        }
        let worker = self.worker(worker)?;
        self.store_ready()?;
        let done = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let actor = self.actor(worker.as_ref(), authority, id)?;
            Ok(work.complete_without_token(op, id, &actor, result, "id")?)
        })?;
        tracing::debug!(task = %id, by = worker.as_ref().map_or("operator", |w| w.as_str()), "task completed without a claim token");
        self.written(started).await?;
        Ok(done)
    }

    /// A step heartbeat of task `id` without its claim token, from `worker`, which must be live
    /// and hold the task's claim in its current epoch (else `stale_claim`, as for a wrong
    /// token). For claims whose token went to nobody (`update_task` to `in_progress`) and for
    /// ClaudeBench-style workers that never saw a token. An `ok` one refreshes `worker`'s
    /// liveness, as [`task_heartbeat`](Self::task_heartbeat) does.
    pub async fn task_heartbeat_without_token(
        &self,
        id: TaskId,
        worker: &str,
        extend_leases: std::time::Duration,
    ) -> Result<StepHeartbeat, Error> {
        self.task_heartbeat_without_token_as(id, worker, extend_leases, &Authority::Any)
            .await
    }

    /// [`task_heartbeat_without_token`](Self::task_heartbeat_without_token) on `authority`,
    /// which must be allowed to act as `worker`.
    pub(crate) async fn task_heartbeat_without_token_as(
        &self,
        id: TaskId,
        worker: &str,
        extend_leases: std::time::Duration,
        authority: &Authority,
    ) -> Result<StepHeartbeat, Error> {
        let started = Instant::now();
        let worker = self.worker(Some(worker))?.expect("given");
        let extend_ms = extend_leases.as_millis() as u64;
        self.store_ready()?;
        let (beat, refreshed) = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let epoch = self.live_epoch_named(&worker, authority, "workerId")?;
            let beat =
                work.step_heartbeat_without_token(op, id, &(worker.clone(), epoch), extend_ms);
            // As with the token: the claim's holder is alive as long as its step heartbeats.
            let refreshed = (beat.status == StepStatus::Ok)
                .then(|| self.refresh_claim_holder(&worker, epoch))
                .flatten();
            Ok((beat, refreshed))
        })?;
        if let Some(holder) = refreshed {
            self.write_liveness_through(holder.as_str()).await;
        }
        self.written(started).await?;
        Ok(beat)
    }

    /// Reports a failed attempt of task `id` without its claim token, on the same terms as
    /// [`complete_without_token`](Self::complete_without_token). The attempt counts: the task
    /// goes back to pending for every worker, or fails for good when out of attempts.
    pub async fn fail_without_token(
        &self,
        id: TaskId,
        worker: Option<&str>,
        error: Option<String>,
    ) -> Result<Failure, Error> {
        self.fail_without_token_as(id, worker, error, &Authority::Any)
            .await
    }

    /// [`fail_without_token`](Self::fail_without_token) on `authority`.
    pub(crate) async fn fail_without_token_as(
        &self,
        id: TaskId,
        worker: Option<&str>,
        error: Option<String>,
        authority: &Authority,
    ) -> Result<Failure, Error> {
        let started = Instant::now();
        if let Some(error) = &error
            && error.len() > 8 * 1024
        {
            return Err(ValidationError::new("error", "at most 8192 bytes").into());
        }
        let worker = self.worker(worker)?;
        self.store_ready()?;
        let failed = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let actor = self.actor(worker.as_ref(), authority, id)?;
            Ok(work.fail_without_token(op, id, &actor, error, "id")?)
        })?;
        self.written(started).await?;
        Ok(failed)
    }

    /// Assigns pending task `id` to the live instance `instance` (an operator pushing work):
    /// the task stays pending and only that instance claims it — first, at its next claim.
    /// Answers the instance it was already assigned to (the same one: assigning twice changes
    /// nothing). Refused for a claimed or finished task, one assigned to another instance, an
    /// instance that is not live, or one not registered with the role the task requires. If the instance leaves before claiming it, the task goes
    /// back to every worker.
    pub async fn assign_task(
        &self,
        id: TaskId,
        instance: &str,
    ) -> Result<Option<InstanceId>, Error> {
        self.assign_task_as(id, instance, &Authority::Any).await
    }

    /// [`assign_task`](Self::assign_task) on `authority`, which must be an operator's.
    pub(crate) async fn assign_task_as(
        &self,
        id: TaskId,
        instance: &str,
        authority: &Authority,
    ) -> Result<Option<InstanceId>, Error> {
        let started = Instant::now();
        operator_only(authority, id)?;
        let instance =
            InstanceId::parse(instance, &self.ctx().config.limits).map_err(|mut e| {
                e.field = "instanceId".into();
                e
            })?;
        self.store_ready()?;
        let previous = self.ctx().with_work(|work, op| -> Result<_, Error> {
            let epoch = self.live_epoch_named(&instance, &Authority::Any, "instanceId")?;
            if let Some(role) = work.role_of(id)
                && !self
                    .roles_in_epoch(&instance, epoch)
                    .iter()
                    .any(|r| r == role)
            {
                return Err(ValidationError::new(
                    "instanceId",
                    format!(
                        "task {id} requires role {role:?}, which instance {instance} is not \
                         registered with"
                    ),
                )
                .into());
            }
            Ok(work.assign(op, id, &instance, epoch)?)
        })?;
        self.written(started).await?;
        Ok(previous)
    }

    /// Removes task `id`'s assignment: a pending task goes back to every worker; a claimed
    /// task is taken from its holder (its token stale, leases released, no attempt counted)
    /// and is pending again. Answers the instance it was assigned to, if any.
    pub async fn unassign_task(&self, id: TaskId) -> Result<Option<InstanceId>, Error> {
        self.unassign_task_as(id, &Authority::Any).await
    }

    /// [`unassign_task`](Self::unassign_task) on `authority`, which must be an operator's.
    pub(crate) async fn unassign_task_as(
        &self,
        id: TaskId,
        authority: &Authority,
    ) -> Result<Option<InstanceId>, Error> {
        let started = Instant::now();
        operator_only(authority, id)?;
        self.store_ready()?;
        let previous = self.ctx().with_work(|work, op| -> Result<_, Error> {
            Ok(work.unassign(op, id, "unassigned by an operator")?)
        })?;
        self.written(started).await?;
        Ok(previous)
    }

    /// Deletes task `id`, whatever its state; a claim on it is over (token stale, leases
    /// released) and the store's record is deleted.
    pub async fn delete_task(&self, id: TaskId) -> Result<(), Error> {
        self.delete_task_as(id, &Authority::Any).await
    }

    /// [`delete_task`](Self::delete_task) on `authority`, which must be an operator's.
    pub(crate) async fn delete_task_as(
        &self,
        id: TaskId,
        authority: &Authority,
    ) -> Result<(), Error> {
        let started = Instant::now();
        operator_only(authority, id)?;
        self.store_ready()?;
        self.ctx()
            .with_work(|work, op| -> Result<_, Error> { Ok(work.delete(op, id)?) })?;
        self.written(started).await?;
        Ok(())
    }

    /// Changes task `id`'s text, priority, metadata (merged) or status (ClaudeBench's
    /// `task.update`). A status goes through the state machine: `Pending` takes a claim back
    /// (no attempt counted) or reopens a finished task with fresh attempts; `Claimed`
    /// (`in_progress`) claims an assigned task for its assignee; `Completed` / `Failed` end it
    /// as an operator. Refused parts change nothing.
    pub async fn update_task(&self, id: TaskId, update: TaskUpdate) -> Result<TaskView, Error> {
        self.update_task_as(id, update, &Authority::Any).await
    }

    /// [`update_task`](Self::update_task) on `authority`, which must be an operator's.
    pub(crate) async fn update_task_as(
        &self,
        id: TaskId,
        update: TaskUpdate,
        authority: &Authority,
    ) -> Result<TaskView, Error> {
        let started = Instant::now();
        operator_only(authority, id)?;
        if let Some(text) = &update.text {
            check_text(text, "updates.text")?;
        }
        if let Some(priority) = update.priority
            && priority > 100
        {
            return Err(ValidationError::new(
                "updates.priority",
                format!("must lie within 0..=100, got {priority}"),
            )
            .into());
        }
        if let Some(metadata) = &update.metadata {
            self.check_payload_size(
                "updates.metadata",
                &serde_json::Value::Object(metadata.clone()),
            )?;
        }
        self.store_ready()?;
        let limits = &self.ctx().config.limits;
        let (max_payload, max_tasks) = (limits.max_payload_bytes, limits.max_tasks);
        let view = self.ctx().with_work(|work, op| -> Result<_, Error> {
            // Reopening a finished task makes it live again: the cap on live tasks holds.
            let reopens = update.status == Some(TaskStatus::Pending)
                && work
                    .status_of(id)
                    .is_some_and(|s| matches!(s, TaskStatus::Completed | TaskStatus::Failed));
            if reopens && work.live_tasks() >= max_tasks {
                return Err(Error::TooManyTasks(max_tasks));
            }
            Ok(work.update(op, id, &update, max_payload)?)
        })?;
        self.written(started).await?;
        Ok(view)
    }

    /// The worker a tokenless call names, parsed; acting as it is checked under the work lock.
    fn worker(&self, worker: Option<&str>) -> Result<Option<InstanceId>, Error> {
        worker
            .map(|w| {
                InstanceId::parse(w, &self.ctx().config.limits).map_err(|mut e| {
                    e.field = "workerId".into();
                    Error::from(e)
                })
            })
            .transpose()
    }

    /// Who a tokenless call acts as: the named worker, live in its current epoch and one
    /// `authority` may act as; or, naming none, an operator.
    fn actor(
        &self,
        worker: Option<&InstanceId>,
        authority: &Authority,
        id: TaskId,
    ) -> Result<Actor, Error> {
        match worker {
            Some(worker) => {
                let epoch = self.live_epoch_named(worker, authority, "workerId")?;
                Ok(Actor::Assignee(worker.clone(), epoch))
            }
            None => {
                operator_only(authority, id)?;
                Ok(Actor::Operator)
            }
        }
    }
}

impl Coordinator {
    /// The epoch of live instance `id` that `authority` may act as; an instance that is not
    /// live is −32602 naming `field` (the parameter the caller named it in).
    fn live_epoch_named(
        &self,
        id: &InstanceId,
        authority: &Authority,
        field: &'static str,
    ) -> Result<crate::model::Epoch, Error> {
        self.live_epoch(id, authority).map_err(|e| match e {
            Error::NotAlive(_) => {
                ValidationError::new(field, format!("instance {id} is not registered and alive"))
                    .into()
            }
            e => e,
        })
    }
}

/// Refuses an action on task `id` unless `authority` is an operator's (or the server has no
/// tokens).
fn operator_only(authority: &Authority, id: TaskId) -> Result<(), Error> {
    if *authority == Authority::Any {
        return Ok(());
    }
    Err(Error::Forbidden {
        instance: id.to_string(),
        reason: "only an operator may do this to a task",
    })
}

/// A task text: 1–500 characters.
pub(crate) fn check_text(text: &str, field: &'static str) -> Result<(), ValidationError> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must have 1 to {MAX_TEXT_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}
