//! What ClaudeBench's clients do to tasks besides claiming them: edit, assign, unassign and
//! delete them (operator actions), and end them without the claim token — accepted only from
//! the task's live assignee or an operator, and never leaving the holder's token usable
//! (docs/work.md, "Without a claim token").

use super::*;
use crate::error::ValidationError;
use task::TaskUpdate;

/// Who ends a task without presenting its claim token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The instance the task is assigned to or claimed by, checked live in this epoch by the
    /// caller: a zombie (an older epoch) or another instance is refused.
    Assignee(InstanceId, Epoch),
    /// An operator (or a caller of a server without tokens), on no worker's behalf.
    Operator,
}

impl Actor {
    fn name(&self) -> String {
        match self {
            Actor::Assignee(id, _) => id.to_string(),
            Actor::Operator => "operator".to_string(),
        }
    }

    /// Whether this actor may end a task held or reserved by `holder`.
    fn may_end(&self, holder: &(InstanceId, Epoch)) -> bool {
        match self {
            Actor::Assignee(id, epoch) => holder.0 == *id && holder.1 == *epoch,
            Actor::Operator => true,
        }
    }
}

fn refuse(field: &'static str, rule: impl Into<String>) -> ValidationError {
    ValidationError::new(field, rule)
}

fn finished_rule(id: TaskId, status: TaskStatus) -> String {
    format!("task {id} is already {}", status.as_str())
}

impl WorkBook {
    /// The status of task `id`, if the book has it.
    pub fn status_of(&self, id: TaskId) -> Option<TaskStatus> {
        self.tasks.get(&id).map(|t| t.status)
    }

    fn existing(&self, id: TaskId, field: &'static str) -> Result<&Task, ValidationError> {
        self.tasks
            .get(&id)
            .ok_or_else(|| refuse(field, format!("no task {id}")))
    }

    /// Files pending task `id` under its `reserved` holder: it leaves the shared pending queue
    /// (no other worker's claim scans it) for the holder's own.
    fn reserve(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.get(&id)
            && let Some(holder) = task.reserved.clone()
        {
            let key = pending_key(task);
            self.unqueue(id);
            self.reserved_by.entry(holder).or_default().insert(key);
        }
    }

    /// Ends the reservation of pending task `id`: it goes back to the shared pending queue, in
    /// its place. Answers the instance it was reserved for.
    pub(super) fn release_reservation(&mut self, id: TaskId) -> Option<(InstanceId, Epoch)> {
        let holder = self.unreserve(id)?;
        if self
            .tasks
            .get(&id)
            .is_some_and(|t| t.status == TaskStatus::Pending)
        {
            self.queue(id);
        }
        Some(holder)
    }

    /// Clears the reservation of `id`, if any (task and index), and leaves it out of every
    /// queue: the caller claims, finishes or removes it, or queues it again.
    pub(super) fn unreserve(&mut self, id: TaskId) -> Option<(InstanceId, Epoch)> {
        let task = self.tasks.get_mut(&id)?;
        let holder = task.reserved.take()?;
        let key = pending_key(task);
        if let Some(keys) = self.reserved_by.get_mut(&holder) {
            keys.remove(&key);
            if keys.is_empty() {
                self.reserved_by.remove(&holder);
            }
        }
        Some(holder)
    }

    /// Ends task `id` as `status` (completed or failed for good) on `actor`'s word: its claim,
    /// if any, is over (leases released, the token stale: the holder's later calls answer
    /// `stale_claim`), its reservation is dropped, and it is retired.
    fn finish_without_token(
        &mut self,
        op: &mut Op,
        id: TaskId,
        status: TaskStatus,
        actor: &Actor,
        result: Option<serde_json::Value>,
        error: Option<String>,
    ) {
        let was = self.tasks[&id].status;
        let reserved = if was == TaskStatus::Claimed {
            self.end_claim(op, id);
            None
        } else {
            self.unqueue(id);
            self.unreserve(id)
        };
        let task = self.tasks.get_mut(&id).expect("exists");
        task.token = None;
        task.finished_at = Some(op.now);
        task.updated_at = op.now;
        task.finished_by = Some(actor.name());
        if status == TaskStatus::Completed {
            task.result = result;
        } else {
            task.error = error.or_else(|| Some(format!("failed by {}", actor.name())));
        }
        self.transition(id, status);
        let mut task = self.tasks[&id].clone();
        if task.assignee.is_none() {
            task.assignee = reserved; // the event names the instance it was assigned to
        }
        let kind = if status == TaskStatus::Completed {
            EventKind::TaskCompleted
        } else {
            EventKind::TaskFailed
        };
        op.task_event(
            kind,
            &task,
            Some(format!("without a claim token, by {}", actor.name())),
        );
        self.retire(op, id);
    }

    /// The holder (claim) or assignee (reservation) of unfinished task `id` that `actor` must
    /// match, after settling a claim whose required lock lapsed.
    fn holder_for(
        &mut self,
        op: &mut Op,
        id: TaskId,
        field: &'static str,
    ) -> Result<(InstanceId, Epoch), ValidationError> {
        if let Some(token) = self.existing(id, field)?.token.clone() {
            self.settle_lapsed(op, id, &token);
        }
        let task = self.existing(id, field)?;
        match task.status {
            TaskStatus::Completed | TaskStatus::Failed => {
                Err(refuse(field, finished_rule(id, task.status)))
            }
            TaskStatus::Claimed => Ok(task.assignee.clone().expect("a claimed task has a holder")),
            TaskStatus::Pending => task.reserved.clone().ok_or_else(|| {
                refuse(
                    field,
                    format!(
                        "task {id} is not assigned to any instance: claim it, or assign it first"
                    ),
                )
            }),
        }
    }

    /// A step heartbeat of `id` without its claim token, from the live instance holding its
    /// claim (a claim made for it by `task.update {status: in_progress}`, whose token went to
    /// nobody, stays alive this way). Anything else — another instance, an older epoch, a task
    /// not claimed — is `stale_claim`, as a wrong token is.
    pub fn step_heartbeat_without_token(
        &mut self,
        op: &mut Op,
        id: TaskId,
        worker: &(InstanceId, Epoch),
        extend_ms: u64,
    ) -> StepHeartbeat {
        let token = self
            .tasks
            .get(&id)
            .filter(|t| t.status == TaskStatus::Claimed && t.assignee.as_ref() == Some(worker))
            .and_then(|t| t.token.clone());
        match token {
            Some(token) => self.step_heartbeat(op, id, &token, extend_ms),
            None => StepHeartbeat {
                status: StepStatus::StaleClaim,
                task_id: id,
                lost_leases: Vec::new(),
                leases_expire_at_ms: None,
            },
        }
    }

    /// Completes `id` without its claim token (ClaudeBench's `task.complete {id, result}`):
    /// from its live assignee, or an operator. Completing a finished task again is refused.
    pub fn complete_without_token(
        &mut self,
        op: &mut Op,
        id: TaskId,
        actor: &Actor,
        result: Option<serde_json::Value>,
        field: &'static str,
    ) -> Result<Completion, ValidationError> {
        let holder = self.holder_for(op, id, field)?;
        if !actor.may_end(&holder) {
            return Err(refuse(
                "workerId",
                format!("task {id} is not assigned to this instance (in this epoch)"),
            ));
        }
        let task = &self.tasks[&id];
        if matches!(actor, Actor::Assignee(..))
            && task.status == TaskStatus::Pending
            && !task.locks.is_empty()
        {
            // Its work must run under its locks, which only a claim takes.
            return Err(refuse(
                field,
                format!("task {id} requires locks: claim it (task.claim) before completing it"),
            ));
        }
        self.finish_without_token(op, id, TaskStatus::Completed, actor, result, None);
        Ok(Completion {
            status: CompleteStatus::Completed,
            task_id: id,
        })
    }

    /// Reports a failed attempt of `id` without its claim token: from its live assignee, or an
    /// operator. As with a token, the attempt counts; the task goes back to pending (to every
    /// worker) until it is out of attempts.
    pub fn fail_without_token(
        &mut self,
        op: &mut Op,
        id: TaskId,
        actor: &Actor,
        error: Option<String>,
        field: &'static str,
    ) -> Result<Failure, ValidationError> {
        let holder = self.holder_for(op, id, field)?;
        if !actor.may_end(&holder) {
            return Err(refuse(
                "workerId",
                format!("task {id} is not assigned to this instance (in this epoch)"),
            ));
        }
        let why = error.unwrap_or_else(|| format!("failed by {}", actor.name()));
        let status = if self.tasks[&id].status == TaskStatus::Claimed {
            self.take_back(op, id, why, false)
        } else {
            // Assigned, never claimed: the attempt counts all the same, and the task goes back
            // to every worker.
            let holder = self.release_reservation(id);
            let task = self.tasks.get_mut(&id).expect("exists");
            task.attempts += 1;
            if task.attempts >= task.max_attempts {
                self.finish_without_token(op, id, TaskStatus::Failed, actor, None, Some(why));
                FailStatus::Failed
            } else {
                task.error = Some(why.clone());
                task.updated_at = op.now;
                let mut task = task.clone();
                task.assignee = holder;
                op.task_event(EventKind::TaskFailed, &task, Some(why));
                FailStatus::Pending
            }
        };
        if let Some(task) = self.tasks.get_mut(&id)
            && status == FailStatus::Failed
        {
            task.finished_by = Some(actor.name());
        }
        let task = &self.tasks[&id];
        Ok(Failure {
            status,
            task_id: id,
            retry_count: task.attempts,
            max_retries: task.max_attempts,
            can_retry: status == FailStatus::Pending,
        })
    }

    /// Assigns pending task `id` to the live instance `(instance, epoch)`: it stays pending,
    /// and only that instance claims it (its next `task.claim` takes it first). Assigning it
    /// again to the same instance changes nothing; to another, or once claimed, is refused.
    pub fn assign(
        &mut self,
        op: &mut Op,
        id: TaskId,
        instance: &InstanceId,
        epoch: Epoch,
    ) -> Result<Option<InstanceId>, ValidationError> {
        let task = self.existing(id, "taskId")?;
        match task.status {
            TaskStatus::Pending => {}
            TaskStatus::Claimed => {
                return Err(refuse(
                    "taskId",
                    format!("task {id} is already in progress on an instance; unassign it first"),
                ));
            }
            status => return Err(refuse("taskId", finished_rule(id, status))),
        }
        match &task.reserved {
            Some((current, e)) if current == instance && *e == epoch => {
                return Ok(Some(current.clone()));
            }
            Some(_) => {
                return Err(refuse(
                    "taskId",
                    format!("task {id} is already assigned to another instance; unassign it first"),
                ));
            }
            None => {}
        }
        let task = self.tasks.get_mut(&id).expect("exists");
        task.reserved = Some((instance.clone(), epoch));
        task.updated_at = op.now;
        self.reserve(id);
        let mut task = self.tasks[&id].clone();
        // The event names the instance it is assigned to.
        task.assignee = Some((instance.clone(), epoch));
        op.task_event(EventKind::TaskAssigned, &task, None);
        Ok(None)
    }

    /// Removes the assignment of `id`: a pending task goes back to every worker; a claimed one
    /// is taken from its holder (its token stale, its leases released, no attempt counted) and
    /// is pending again. Answers the instance it was assigned to (`None`: it was not).
    pub fn unassign(
        &mut self,
        op: &mut Op,
        id: TaskId,
        why: &str,
    ) -> Result<Option<InstanceId>, ValidationError> {
        let task = self.existing(id, "taskId")?;
        match task.status {
            TaskStatus::Pending => {
                let Some(previous) = self.release_reservation(id) else {
                    return Ok(None);
                };
                let task = self.tasks.get_mut(&id).expect("exists");
                task.updated_at = op.now;
                let mut task = task.clone();
                task.assignee = Some(previous.clone());
                op.task_event(EventKind::TaskUnassigned, &task, Some(why.to_string()));
                Ok(Some(previous.0))
            }
            TaskStatus::Claimed => {
                let previous = task.assignee.clone();
                let token = task.token.clone().expect("a claimed task has a token");
                self.unclaim(op, id, &token, why);
                Ok(previous.map(|(id, _)| id))
            }
            status => Err(refuse("taskId", finished_rule(id, status))),
        }
    }

    /// Deletes task `id` whatever its state: a claim on it is over (token stale, leases
    /// released). The store deletes its record.
    pub fn delete(&mut self, op: &mut Op, id: TaskId) -> Result<(), ValidationError> {
        let status = self.existing(id, "id")?.status;
        match status {
            TaskStatus::Claimed => self.end_claim(op, id),
            TaskStatus::Pending => {
                self.unqueue(id);
                self.unreserve(id);
            }
            TaskStatus::Completed | TaskStatus::Failed => {}
        }
        let task = self.remove_task(id).expect("exists");
        if let Some(key) = task.request_key() {
            self.by_request.remove(&key);
        }
        op.task_event(EventKind::TaskDeleted, &task, None);
        Ok(())
    }

    /// Applies `update` to task `id` (ClaudeBench's `task.update`): text, priority and metadata
    /// (merged into `payload.metadata`) on any task; a status change through the state machine:
    /// `pending` takes a claim back (no attempt counted) or reopens a finished task with fresh
    /// attempts; `in_progress` claims an assigned task for its assignee; `completed` and
    /// `failed` end it as an operator would. Nothing changes when any part is refused.
    pub fn update(
        &mut self,
        op: &mut Op,
        id: TaskId,
        update: &TaskUpdate,
        max_payload_bytes: usize,
    ) -> Result<TaskView, ValidationError> {
        let task = self.existing(id, "id")?;
        let from = task.status;
        if (update.text.is_some() || update.metadata.is_some()) && !task.payload.is_object() {
            return Err(refuse(
                "updates",
                format!(
                    "task {id}'s payload is not an object: its text and metadata cannot be set"
                ),
            ));
        }
        let to = update.status.filter(|s| *s != from);
        match (from, to) {
            (TaskStatus::Pending, Some(TaskStatus::Claimed)) if task.reserved.is_none() => {
                return Err(refuse(
                    "updates.status",
                    format!(
                        "task {id} goes in_progress when a worker claims it: assign it to an instance first"
                    ),
                ));
            }
            (TaskStatus::Completed | TaskStatus::Failed, Some(s)) if s != TaskStatus::Pending => {
                return Err(refuse(
                    "updates.status",
                    format!(
                        "{}; reopen it (status pending) first",
                        finished_rule(id, from)
                    ),
                ));
            }
            _ => {}
        }
        // The new payload (only when text or metadata change), checked before anything
        // changes: merges must not grow it past the limit a create has.
        let mut changes = Vec::new();
        let payload = if update.text.is_some() || update.metadata.is_some() {
            let mut payload = task.payload.clone();
            if let Some(text) = &update.text {
                payload["text"] = serde_json::Value::String(text.clone());
                changes.push("text");
            }
            if let Some(metadata) = &update.metadata {
                let merged = payload
                    .as_object_mut()
                    .expect("checked: an object")
                    .entry("metadata")
                    .or_insert_with(|| serde_json::json!({}));
                if !merged.is_object() {
                    *merged = serde_json::json!({});
                }
                let merged = merged.as_object_mut().expect("an object");
                for (k, v) in metadata {
                    merged.insert(k.clone(), v.clone());
                }
                changes.push("metadata");
            }
            let size = serde_json::to_vec(&payload).map_or(usize::MAX, |v| v.len());
            if size > max_payload_bytes {
                return Err(refuse(
                    "updates",
                    format!(
                        "the task's payload would be {size} bytes serialized; at most {max_payload_bytes}"
                    ),
                ));
            }
            Some(payload)
        } else {
            None
        };
        // The status first: it is the only part that can still be refused (locks held).
        if let Some(to) = to {
            self.change_status(op, id, from, to)?;
            changes.push("status");
        }
        // Then the content; the queue key moves with the priority.
        let pending = self.tasks[&id].status == TaskStatus::Pending;
        let reserved = if pending {
            self.unqueue(id);
            self.unreserve(id)
        } else {
            None
        };
        let task = self.tasks.get_mut(&id).expect("exists");
        if let Some(payload) = payload {
            task.payload = payload;
        }
        if let Some(priority) = update.priority {
            task.priority = priority;
            changes.push("priority");
        }
        task.updated_at = op.now;
        if pending {
            task.reserved = reserved;
            if task.reserved.is_some() {
                self.reserve(id);
            } else {
                self.queue(id);
            }
        }
        let task = self.tasks[&id].clone();
        op.task_event(EventKind::TaskUpdated, &task, Some(changes.join(",")));
        Ok(self.view(&task, op))
    }

    /// The status part of [`update`](Self::update), `from` ≠ `to`, already checked allowed.
    fn change_status(
        &mut self,
        op: &mut Op,
        id: TaskId,
        from: TaskStatus,
        to: TaskStatus,
    ) -> Result<(), ValidationError> {
        match to {
            TaskStatus::Pending if from == TaskStatus::Claimed => {
                let token = self.tasks[&id].token.clone().expect("claimed");
                self.unclaim(op, id, &token, "set pending by an operator");
            }
            TaskStatus::Pending => {
                // Reopen a finished task with fresh attempts.
                self.transition(id, TaskStatus::Pending);
                let task = self.tasks.get_mut(&id).expect("exists");
                task.attempts = 0;
                task.token = None;
                task.assignee = None;
                task.claimed_at = None;
                task.heartbeat_at = None;
                task.finished_at = None;
                task.finished_by = None;
                task.result = None;
                task.error = None;
                task.updated_at = op.now;
                self.queue(id);
            }
            TaskStatus::Claimed => {
                let (worker, epoch) = self.tasks[&id].reserved.clone().expect("checked: assigned");
                let key = pending_key(&self.tasks[&id]);
                if self.claim_one(op, key, &worker, epoch).is_none() {
                    return Err(refuse(
                        "updates.status",
                        format!("task {id}'s required locks are held now; it stays pending"),
                    ));
                }
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                self.finish_without_token(op, id, to, &Actor::Operator, None, None);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LivenessClock;
    use crate::model::Term;
    use std::time::Duration;

    fn book() -> WorkBook {
        WorkBook::new(WorkSettings {
            step_timeout_ms: 1_800_000,
            claim_lease_ttl_ms: 900_000,
            finished_retention: 100,
            claim_scan_limit: 1000,
        })
    }

    fn id(name: &str) -> InstanceId {
        InstanceId::parse(name, &crate::config::Limits::default()).unwrap()
    }

    fn check(book: &WorkBook) {
        book.check_indexes();
    }

    fn create(book: &mut WorkBook, op: &mut Op, text: &str, priority: u8) -> TaskId {
        let payload = serde_json::json!({"text": text});
        book.create(op, payload, priority, 3, Vec::new(), None, None)
            .unwrap()
            .0
            .id
    }

    /// Assignment, priority changes, claims, unassignment, tokenless endings, reopening,
    /// deletion and departures keep every index consistent, step by step.
    #[tokio::test]
    async fn operator_actions_keep_every_index_consistent() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut op = Op::new(&clock, Term(1));
        let mut b = book();
        let (w1, w2) = (id("w1"), id("w2"));
        let a = create(&mut b, &mut op, "a", 90);
        let c = create(&mut b, &mut op, "c", 10);
        b.assign(&mut op, a, &w2, Epoch(1)).unwrap();
        check(&b);
        // w1 does not see w2's task, although it is the best one.
        let got = b.claim(&mut op, &w1, Epoch(1), &Claimant::default(), 5);
        assert_eq!(got.iter().map(|t| t.task.id).collect::<Vec<_>>(), [c]);
        check(&b);
        // A priority change moves the reserved task within its assignee's queue.
        let update = TaskUpdate {
            priority: Some(5),
            ..TaskUpdate::default()
        };
        b.update(&mut op, a, &update, 65_536).unwrap();
        check(&b);
        assert!(
            b.reserved_by[&(w2.clone(), Epoch(1))]
                .iter()
                .any(|k| k.2 == a && k.0.0 == 5)
        );
        // An older epoch of w2 may not end it; the live one may.
        let zombie = Actor::Assignee(w2.clone(), Epoch(0));
        assert!(
            b.complete_without_token(&mut op, a, &zombie, None, "id")
                .is_err()
        );
        let failed = b
            .fail_without_token(
                &mut op,
                a,
                &Actor::Assignee(w2.clone(), Epoch(1)),
                None,
                "id",
            )
            .unwrap();
        assert_eq!(
            (failed.status, failed.retry_count),
            (FailStatus::Pending, 1)
        );
        check(&b);
        assert!(
            b.tasks[&a].reserved.is_none(),
            "a failure ends the assignment"
        );
        // Assign again, then w2 leaves: the task is everyone's again.
        b.assign(&mut op, a, &w2, Epoch(1)).unwrap();
        b.release_instance(&mut op, &w2, Epoch(1), "expired");
        check(&b);
        assert!(b.pending.iter().any(|k| k.2 == a));
        // Claimed by w1, completed by an operator: the token is stale.
        let claim = b
            .claim(&mut op, &w1, Epoch(1), &Claimant::default(), 1)
            .remove(0);
        assert_eq!(claim.task.id, a);
        b.complete_without_token(&mut op, a, &Actor::Operator, None, "id")
            .unwrap();
        check(&b);
        let again = b.complete(&mut op, a, &claim.claim_token, None);
        assert_eq!(again.status, CompleteStatus::StaleClaim);
        assert!(
            b.complete_without_token(&mut op, a, &Actor::Operator, None, "id")
                .is_err()
        );
        // Reopen, then set in_progress for an assignee, then unassign (no attempt counted).
        let reopen = TaskUpdate {
            status: Some(TaskStatus::Pending),
            ..TaskUpdate::default()
        };
        b.update(&mut op, a, &reopen, 65_536).unwrap();
        check(&b);
        assert_eq!(b.tasks[&a].attempts, 0);
        b.assign(&mut op, a, &w1, Epoch(1)).unwrap();
        let start = TaskUpdate {
            status: Some(TaskStatus::Claimed),
            ..TaskUpdate::default()
        };
        b.update(&mut op, a, &start, 65_536).unwrap();
        check(&b);
        let beat = b.step_heartbeat_without_token(&mut op, a, &(w1.clone(), Epoch(1)), 0);
        assert_eq!(beat.status, StepStatus::Ok);
        let beat = b.step_heartbeat_without_token(&mut op, a, &(w2.clone(), Epoch(1)), 0);
        assert_eq!(beat.status, StepStatus::StaleClaim);
        assert_eq!(b.unassign(&mut op, a, "test").unwrap(), Some(w1.clone()));
        check(&b);
        assert_eq!(b.tasks[&a].attempts, 0);
        // Delete: a claimed one, a reserved one, a finished one.
        b.claim(&mut op, &w1, Epoch(1), &Claimant::default(), 1);
        b.delete(&mut op, a).unwrap();
        check(&b);
        let d = create(&mut b, &mut op, "d", 50);
        b.assign(&mut op, d, &w1, Epoch(1)).unwrap();
        b.delete(&mut op, d).unwrap();
        check(&b);
        b.complete_without_token(
            &mut op,
            c,
            &Actor::Assignee(w1.clone(), Epoch(1)),
            None,
            "id",
        )
        .unwrap();
        b.delete(&mut op, c).unwrap();
        check(&b);
        assert!(b.tasks.is_empty());
    }

    /// The assignee cannot complete an assigned task that requires locks without claiming it:
    /// its work must run under them. An update cannot grow the payload past the limit.
    #[tokio::test]
    async fn locks_and_payload_limits_hold_without_a_token() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut op = Op::new(&clock, Term(1));
        let mut b = book();
        let w1 = id("w1");
        let lock = LockSpec {
            key: LeaseKey::unchecked("db/migrate"),
            mode: LeaseMode::Exclusive,
        };
        let payload = serde_json::json!({"text": "migrate"});
        let (t, _) = b
            .create(&mut op, payload, 50, 3, vec![lock], None, None)
            .unwrap();
        b.assign(&mut op, t.id, &w1, Epoch(1)).unwrap();
        let assignee = Actor::Assignee(w1.clone(), Epoch(1));
        let refused = b.complete_without_token(&mut op, t.id, &assignee, None, "id");
        assert!(refused.unwrap_err().rule.contains("requires locks"));
        // Once claimed (under its lock), the assignee completes it without the token.
        b.claim(&mut op, &w1, Epoch(1), &Claimant::default(), 1);
        b.complete_without_token(&mut op, t.id, &assignee, None, "id")
            .unwrap();
        check(&b);
        // Metadata merges stop at the payload limit, and nothing changes.
        let big =
            serde_json::Map::from_iter([("k".to_string(), serde_json::json!("x".repeat(900)))]);
        let update = TaskUpdate {
            metadata: Some(big),
            ..TaskUpdate::default()
        };
        assert!(b.update(&mut op, t.id, &update, 1024).is_ok());
        let more =
            serde_json::Map::from_iter([("k2".to_string(), serde_json::json!("y".repeat(900)))]);
        let update = TaskUpdate {
            metadata: Some(more),
            ..TaskUpdate::default()
        };
        assert!(b.update(&mut op, t.id, &update, 1024).is_err());
        assert!(b.tasks[&t.id].payload["metadata"].get("k2").is_none());
    }
}
