//! Work distribution: tasks with fencing claim tokens, step heartbeats, resource leases, and
//! the sweep that takes work back from workers that died.
//!
//! All of it lives in one `WorkBook` behind one mutex in the cluster context. One lock makes
//! the properties that matter easy to see: racing claimers are serialized (one winner per
//! task), a claim's locks are acquired all or nothing, and "take back the tasks of a departed
//! instance" cannot interleave with a claim by that instance. Every operation is a short,
//! synchronous critical section — no `.await` under the lock — so the lock is never held for
//! longer than the operation's own work.
//!
//! See `docs/work.md` for the model, the state machine and the fencing rules.

pub(crate) mod admin;
pub mod lease;
pub mod records;
pub mod task;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::clock::{LivenessClock, MonoMs};
use crate::events::{Event, EventKind};
use crate::model::page::FirstAfter;
use crate::model::{DEFAULT_LIST_LIMIT, Epoch, InstanceId, MAX_LIST_LIMIT, Page, TaskBrief, Term};
use lease::{LeaseConflict, LeaseGrant, LeaseHolder, LeaseKey, LeaseMode, LeaseTable};
use task::{
    ClaimToken, ClaimedTask, CompleteStatus, Completion, FailStatus, Failure, LockSpec,
    StepHeartbeat, StepStatus, TaskId, TaskOrder, TaskQuery, TaskStatus, TaskView,
};

/// The context of one operation on the work book: the time it happens at, the term, and the
/// events it produces (published by the caller once the lock is released).
#[derive(Debug)]
pub(crate) struct Op {
    /// Monotonic ms of the operation.
    pub now: MonoMs,
    /// The clock, to turn monotonic times into wall times.
    pub clock: Arc<LivenessClock>,
    /// The current term, stamped on events.
    pub term: Term,
    /// Events produced.
    pub events: Vec<Event>,
    /// Tasks changed without an event (step heartbeats), for the store.
    pub touched_tasks: Vec<TaskId>,
    /// Leases changed without an event (renewals), for the store.
    pub touched_leases: Vec<LeaseKey>,
}

impl Op {
    /// An operation happening now.
    pub fn new(clock: &Arc<LivenessClock>, term: Term) -> Self {
        Self {
            now: clock.precise_ms(),
            clock: Arc::clone(clock),
            term,
            events: Vec::new(),
            touched_tasks: Vec::new(),
            touched_leases: Vec::new(),
        }
    }

    fn wall(&self, ms: MonoMs) -> u64 {
        self.clock.wall_ms(ms)
    }

    fn task_event(&mut self, kind: EventKind, task: &Task, reason: Option<String>) {
        let mut event = Event::new(kind, self.term, self.wall(self.now));
        event.task_id = Some(task.id);
        event.task = Some(Box::new(TaskBrief {
            text: task
                .payload
                .get("text")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            status: task.status,
            priority: task.priority,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
        }));
        if let Some((id, epoch)) = &task.assignee {
            event.instance_id = Some(id.clone());
            event.epoch = Some(*epoch);
        }
        event.reason = reason;
        self.events.push(event);
    }

    fn lease_event(&mut self, kind: EventKind, grant: &LeaseGrant) {
        let mut event = Event::new(kind, self.term, self.wall(self.now));
        event.lease_key = Some(grant.key.clone());
        event.fencing_token = Some(grant.fencing_token);
        match &grant.holder {
            LeaseHolder::Claim { task_id, .. } => event.task_id = Some(*task_id),
            LeaseHolder::Instance { instance_id, epoch } => {
                event.instance_id = Some(instance_id.clone());
                event.epoch = Some(*epoch);
            }
        }
        self.events.push(event);
    }
}

/// Settings the work book needs.
#[derive(Debug, Clone)]
pub(crate) struct WorkSettings {
    /// A claimed task whose last step heartbeat is older than this is taken back.
    pub step_timeout_ms: u64,
    /// TTL of leases acquired for a task's required locks.
    pub claim_lease_ttl_ms: u64,
    /// Finished (completed or failed) tasks kept for `get`/`list`; the oldest go first.
    pub finished_retention: usize,
    /// Most pending tasks a claim looks at before giving up on finding lockable ones.
    pub claim_scan_limit: usize,
}

/// A task as the book holds it.
#[derive(Debug, Clone)]
struct Task {
    id: TaskId,
    seq: u64,
    status: TaskStatus,
    priority: u8,
    payload: serde_json::Value,
    attempts: u32,
    max_attempts: u32,
    locks: Vec<LockSpec>,
    assignee: Option<(InstanceId, Epoch)>,
    token: Option<ClaimToken>,
    created_at: MonoMs,
    /// Last change of status, assignment or content (not step heartbeats).
    updated_at: MonoMs,
    /// Pending, but assigned by an operator to this instance (`task.assign`): only it claims it.
    reserved: Option<(InstanceId, Epoch)>,
    /// Who ended it, when not the claim's own token: `operator`, or the assignee's id.
    finished_by: Option<String>,
    claimed_at: Option<MonoMs>,
    heartbeat_at: Option<MonoMs>,
    finished_at: Option<MonoMs>,
    result: Option<serde_json::Value>,
    error: Option<String>,
    /// The client's request id of the `create` that made it (see [`WorkBook::create`]).
    request_id: Option<String>,
    /// The principal whose request it was (`None`: an operator's, or an open server's).
    request_owner: Option<String>,
}

/// A request id in the scope of the principal that sent it: two principals never share one,
/// so none can pre-empt or replay another's.
pub(crate) type RequestKey = (Option<String>, String);

impl Task {
    /// Its request id in the scope of its principal.
    fn request_key(&self) -> Option<RequestKey> {
        Some((self.request_owner.clone(), self.request_id.clone()?))
    }
}

/// What undoing a change the store did not acknowledge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Undone: memory is as if the call had not been made.
    Undone,
    /// Already gone by another path (a concurrent undo of the same request, or — for a claim —
    /// a take-back when its worker departed): there is nothing left of it to undo.
    Gone,
    /// Not undone: something else has built on it meanwhile (a created task was claimed).
    Kept,
}

/// A `create` whose request id is already taken by a task with other parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestIdTaken(pub TaskId);

/// The pending order, the same everywhere: highest priority first, then oldest (creation
/// order). A task put back keeps its creation sequence, so it goes back to its place.
type PendingKey = (Reverse<u8>, u64, TaskId);

fn pending_key(task: &Task) -> PendingKey {
    (Reverse(task.priority), task.seq, task.id)
}

/// Tasks, the pending queue and the leases.
#[derive(Debug)]
pub(crate) struct WorkBook {
    settings: WorkSettings,
    tasks: HashMap<TaskId, Task>,
    pending: BTreeSet<PendingKey>,
    /// Claimed tasks by holder, so a departure finds its tasks without a scan.
    claimed_by: BTreeMap<(InstanceId, Epoch), BTreeSet<TaskId>>,
    /// Pending tasks assigned to an instance (`task.assign`), in the pending order.
    reserved_by: BTreeMap<(InstanceId, Epoch), BTreeSet<PendingKey>>,
    finished: VecDeque<TaskId>,
    leases: LeaseTable,
    next_task: u64,
    /// Tasks by the request id of the `create` that made them, for as long as the book holds
    /// the task.
    by_request: HashMap<RequestKey, TaskId>,
}

impl WorkBook {
    /// An empty book.
    pub fn new(settings: WorkSettings) -> Self {
        Self {
            settings,
            tasks: HashMap::new(),
            pending: BTreeSet::new(),
            claimed_by: BTreeMap::new(),
            reserved_by: BTreeMap::new(),
            finished: VecDeque::new(),
            leases: LeaseTable::default(),
            next_task: 0,
            by_request: HashMap::new(),
        }
    }

    /// Creates a pending task from validated parts, and answers it with `true` (created).
    ///
    /// With a `request_id` already used by a task the book still holds, nothing is created: the
    /// answer is that task, with `false`, if it was created with the same payload, priority,
    /// attempts and locks, and [`RequestIdTaken`] otherwise. This makes a retried create safe
    /// when the first attempt's outcome is unknown.
    pub fn create(
        &mut self,
        op: &mut Op,
        payload: serde_json::Value,
        priority: u8,
        max_attempts: u32,
        locks: Vec<LockSpec>,
        request: Option<RequestKey>,
    ) -> Result<(TaskView, bool), RequestIdTaken> {
        if let Some(existing) = request
            .as_ref()
            .and_then(|r| self.by_request.get(r))
            .and_then(|id| self.tasks.get(id))
        {
            let same = existing.payload == payload
                && existing.priority == priority
                && existing.max_attempts == max_attempts
                && existing.locks == locks;
            return if same {
                Ok((self.view(existing, op), false))
            } else {
                Err(RequestIdTaken(existing.id))
            };
        }
        self.next_task += 1;
        let task = Task {
            id: TaskId(self.next_task),
            seq: self.next_task,
            status: TaskStatus::Pending,
            priority,
            payload,
            attempts: 0,
            max_attempts,
            locks,
            assignee: None,
            token: None,
            created_at: op.now,
            updated_at: op.now,
            reserved: None,
            finished_by: None,
            claimed_at: None,
            heartbeat_at: None,
            finished_at: None,
            result: None,
            error: None,
            request_id: request.as_ref().map(|(_, id)| id.clone()),
            request_owner: request.as_ref().and_then(|(owner, _)| owner.clone()),
        };
        self.pending.insert(pending_key(&task));
        if let Some(key) = request {
            self.by_request.insert(key, task.id);
        }
        op.task_event(EventKind::TaskCreated, &task, None);
        let view = self.view(&task, op);
        self.tasks.insert(task.id, task);
        Ok((view, true))
    }

    /// Undoes the creation of `id`: removes it if it is still pending and untouched (never
    /// claimed), with a `task.withdrawn` event. The event marks it for the store, which then
    /// deletes whatever it may have received of it.
    pub fn withdraw(&mut self, op: &mut Op, id: TaskId, why: &str) -> Undo {
        let Some(task) = self.tasks.get(&id) else {
            return Undo::Gone;
        };
        if task.status != TaskStatus::Pending || task.attempts > 0 {
            return Undo::Kept;
        }
        self.pending.remove(&pending_key(task));
        self.unreserve(id);
        let task = self.tasks.remove(&id).expect("exists");
        if let Some(key) = task.request_key() {
            self.by_request.remove(&key);
        }
        op.task_event(EventKind::TaskWithdrawn, &task, Some(why.to_string()));
        Undo::Undone
    }

    /// Undoes the claim of `id` under `token`: releases the leases it took and puts the task
    /// back to pending in its place, as if it had never been claimed (a claim counts no
    /// attempt, so there is none to give back). The token is dead from here on. `Gone` when
    /// the claim already ended (its worker departed and the task was taken back).
    pub fn unclaim(&mut self, op: &mut Op, id: TaskId, token: &ClaimToken, why: &str) -> Undo {
        let claimed = self
            .tasks
            .get(&id)
            .is_some_and(|t| t.status == TaskStatus::Claimed && t.token.as_ref() == Some(token));
        if !claimed {
            return Undo::Gone;
        }
        self.end_claim(op, id);
        let task = self.tasks.get_mut(&id).expect("claimed task exists");
        task.status = TaskStatus::Pending;
        task.claimed_at = None;
        task.heartbeat_at = None;
        task.updated_at = op.now;
        let task = task.clone();
        // The event names the worker whose claim was undone; then the claim is forgotten.
        op.task_event(EventKind::TaskReassigned, &task, Some(why.to_string()));
        self.pending.insert(pending_key(&task));
        let task = self.tasks.get_mut(&id).expect("exists");
        task.assignee = None;
        task.token = None;
        Undo::Undone
    }

    /// A task by id.
    pub fn get(&self, id: TaskId, op: &Op) -> Option<TaskView> {
        self.tasks.get(&id).map(|t| self.view(t, op))
    }

    /// One page of the tasks matching `query`, in its order.
    pub fn list(&self, query: &TaskQuery, op: &Op) -> Page<TaskView> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .min(MAX_LIST_LIMIT);
        let matches = |t: &Task| {
            query.status.is_none_or(|s| t.status == s)
                && query.priority.is_none_or(|p| t.priority == p)
                && query.assignee.as_deref().is_none_or(|a| {
                    t.assignee
                        .as_ref()
                        .or(t.reserved.as_ref())
                        .is_some_and(|(id, _)| id.as_str() == a)
                })
        };
        if query.order_by != TaskOrder::CreatedAt || query.descending || query.offset > 0 {
            // Only the first `offset + limit` in order are sorted: a selection, then a sort of
            // that head, with keys compared in place (no allocation per task).
            let mut hits: Vec<&Task> = self.tasks.values().filter(|t| matches(t)).collect();
            let total = hits.len();
            let by_key = |a: &&Task, b: &&Task| -> std::cmp::Ordering {
                let key = match query.order_by {
                    TaskOrder::CreatedAt => std::cmp::Ordering::Equal,
                    TaskOrder::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                    TaskOrder::Priority => a.priority.cmp(&b.priority),
                    TaskOrder::Status => a.status.as_str().cmp(b.status.as_str()),
                    TaskOrder::AssignedTo => {
                        let (x, y) = (
                            a.assignee.as_ref().or(a.reserved.as_ref()),
                            b.assignee.as_ref().or(b.reserved.as_ref()),
                        );
                        x.map(|(id, _)| id.as_str())
                            .cmp(&y.map(|(id, _)| id.as_str()))
                    }
                };
                let order = key.then(a.id.cmp(&b.id));
                if query.descending {
                    order.reverse()
                } else {
                    order
                }
            };
            let head = (query.offset + limit).min(total);
            if head < total {
                hits.select_nth_unstable_by(head, by_key);
                hits.truncate(head);
            }
            hits.sort_unstable_by(by_key);
            let items: Vec<TaskView> = hits
                .iter()
                .skip(query.offset)
                .take(limit)
                .map(|t| self.view(t, op))
                .collect();
            let truncated = query.offset + items.len() < total;
            return Page {
                items,
                total,
                truncated,
            };
        }
        let mut page = FirstAfter::new(query.after, limit);
        let mut total = 0;
        for t in self.tasks.values() {
            if matches(t) {
                total += 1;
                page.offer(t.id, ());
            }
        }
        let (ids, truncated) = page.finish();
        Page {
            items: ids
                .iter()
                .filter_map(|(id, ())| self.tasks.get(id))
                .map(|t| self.view(t, op))
                .collect(),
            total,
            truncated,
        }
    }

    /// Whether `request` names a task this book still holds.
    pub fn knows_request(&self, request: &RequestKey) -> bool {
        self.by_request
            .get(request)
            .is_some_and(|id| self.tasks.contains_key(id))
    }

    /// How many tasks are live (pending or claimed): all but the finished ones kept for
    /// `get`/`list`.
    pub fn live_tasks(&self) -> usize {
        self.tasks.len().saturating_sub(self.finished.len())
    }

    /// Counts of tasks by status.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::from([
            ("pending", 0),
            ("claimed", 0),
            ("completed", 0),
            ("failed", 0),
        ]);
        for t in self.tasks.values() {
            let key = match t.status {
                TaskStatus::Pending => "pending",
                TaskStatus::Claimed => "claimed",
                TaskStatus::Completed => "completed",
                TaskStatus::Failed => "failed",
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    /// Hands the best pending tasks whose locks can all be acquired to `worker` (a live
    /// instance in `epoch`), at most `max`. A task whose locks conflict is skipped and stays
    /// pending in its place.
    pub fn claim(
        &mut self,
        op: &mut Op,
        worker: &InstanceId,
        epoch: Epoch,
        max: usize,
    ) -> Vec<ClaimedTask> {
        let mut claimed = Vec::new();
        // Tasks an operator assigned to this instance first, in the pending order.
        let mine: Vec<PendingKey> = self
            .reserved_by
            .get(&(worker.clone(), epoch))
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default();
        for key in mine {
            if claimed.len() >= max {
                break;
            }
            if let Some(task) = self.claim_one(op, key, worker, epoch) {
                claimed.push(task);
            }
        }
        let mut cursor: Option<PendingKey> = None;
        let mut scanned = 0;
        while claimed.len() < max && scanned < self.settings.claim_scan_limit {
            let next = match &cursor {
                None => self.pending.iter().next(),
                Some(after) => self
                    .pending
                    .range((Bound::Excluded(*after), Bound::Unbounded))
                    .next(),
            };
            let Some(key) = next.cloned() else { break };
            scanned += 1;
            cursor = Some(key);
            if let Some(task) = self.claim_one(op, key, worker, epoch) {
                claimed.push(task);
            }
        }
        claimed
    }

    /// Claims the pending task at `key` for `worker` if its locks can all be had now.
    fn claim_one(
        &mut self,
        op: &mut Op,
        key: PendingKey,
        worker: &InstanceId,
        epoch: Epoch,
    ) -> Option<ClaimedTask> {
        let id = key.2;
        let token = ClaimToken::mint();
        let holder = LeaseHolder::Claim {
            task_id: id,
            claim_token: token.clone(),
        };
        let locks = self.tasks.get(&id).map(|t| t.locks.clone())?;
        // On conflicts the task stays pending, in its place.
        let leases = self.acquire_all(op, &locks, &holder)?;
        self.pending.remove(&key);
        self.unreserve(id);
        let task = self.tasks.get_mut(&id).expect("pending task exists");
        task.status = TaskStatus::Claimed;
        task.assignee = Some((worker.clone(), epoch));
        task.token = Some(token.clone());
        task.claimed_at = Some(op.now);
        task.heartbeat_at = Some(op.now);
        task.updated_at = op.now;
        self.claimed_by
            .entry((worker.clone(), epoch))
            .or_default()
            .insert(id);
        let task = self.tasks.get(&id).expect("exists");
        op.task_event(EventKind::TaskClaimed, task, None);
        for grant in &leases {
            op.lease_event(EventKind::LeaseAcquired, grant);
        }
        Some(ClaimedTask {
            task: self.view(task, op),
            claim_token: token,
            leases,
        })
    }

    /// Acquires every lock or none.
    fn acquire_all(
        &mut self,
        op: &Op,
        locks: &[LockSpec],
        holder: &LeaseHolder,
    ) -> Option<Vec<LeaseGrant>> {
        let expires = op.now + self.settings.claim_lease_ttl_ms;
        let mut granted: Vec<LeaseGrant> = Vec::with_capacity(locks.len());
        for lock in locks {
            let clock = Arc::clone(&op.clock);
            match self.leases.acquire(
                lock.key.clone(),
                lock.mode,
                holder.clone(),
                op.now,
                expires,
                |ms| clock.wall_ms(ms),
            ) {
                Ok(grant) => granted.push(grant),
                Err(_) => {
                    for g in &granted {
                        self.leases.release(&g.key, holder);
                    }
                    return None;
                }
            }
        }
        Some(granted)
    }

    /// The task if `token` is its current claim and the claim still holds every lock the task
    /// requires at `now` (a claim whose required lock lapsed is over: see
    /// [`settle_lapsed`](Self::settle_lapsed)).
    fn current_claim(&self, id: TaskId, token: &ClaimToken, now: MonoMs) -> Option<&Task> {
        self.tasks
            .get(&id)
            .filter(|t| t.status == TaskStatus::Claimed && t.token.as_ref() == Some(token))
            .filter(|t| self.lapsed_locks(t, now).is_empty())
    }

    /// The locks `task` requires that its claim no longer holds at `now` (lapsed, or gone).
    fn lapsed_locks(&self, task: &Task, now: MonoMs) -> Vec<LeaseKey> {
        let Some(token) = &task.token else {
            return Vec::new();
        };
        task.locks
            .iter()
            .filter(|lock| {
                let held = self.leases.grants(&lock.key).and_then(|grants| {
                    grants.iter().find(|g| {
                        matches!(&g.holder, LeaseHolder::Claim { task_id, claim_token }
                            if *task_id == task.id && claim_token == token)
                    })
                });
                held.is_none_or(|g| g.expired(now))
            })
            .map(|lock| lock.key.clone())
            .collect()
    }

    /// The rule for required locks: a claim holds every lock its task requires for as long as
    /// it lasts. If one lapsed (its lease was not extended in time), the claim is over at once:
    /// the task is taken back (an attempt used, as for a step timeout) and the token is stale.
    /// Returns the lapsed keys when that happened to `token`'s claim on `id`.
    fn settle_lapsed(
        &mut self,
        op: &mut Op,
        id: TaskId,
        token: &ClaimToken,
    ) -> Option<Vec<LeaseKey>> {
        let task = self
            .tasks
            .get(&id)
            .filter(|t| t.status == TaskStatus::Claimed && t.token.as_ref() == Some(token))?;
        let lapsed = self.lapsed_locks(task, op.now);
        if lapsed.is_empty() {
            return None;
        }
        let keys: Vec<&str> = lapsed.iter().map(LeaseKey::as_str).collect();
        let why = format!("required lock lapsed under the claim: {}", keys.join(", "));
        self.take_back(op, id, why, true);
        Some(lapsed)
    }

    /// A step heartbeat: refreshes the claim and extends its leases to `now + extend_ms`
    /// (`0`: heartbeat only). Leases that had already lapsed are dropped and reported lost.
    pub fn step_heartbeat(
        &mut self,
        op: &mut Op,
        id: TaskId,
        token: &ClaimToken,
        extend_ms: u64,
    ) -> StepHeartbeat {
        if let Some(lapsed) = self.settle_lapsed(op, id, token) {
            return StepHeartbeat {
                status: StepStatus::StaleClaim,
                task_id: id,
                lost_leases: lapsed,
                leases_expire_at_ms: None,
            };
        }
        if self.current_claim(id, token, op.now).is_none() {
            return StepHeartbeat {
                status: StepStatus::StaleClaim,
                task_id: id,
                lost_leases: Vec::new(),
                leases_expire_at_ms: None,
            };
        }
        let holder = LeaseHolder::Claim {
            task_id: id,
            claim_token: token.clone(),
        };
        let mut lost = Vec::new();
        let mut expire_at = None;
        for grant in self.leases.held_by(&holder) {
            if grant.expired(op.now) {
                if let Some(g) = self.leases.release(&grant.key, &holder) {
                    op.lease_event(EventKind::LeaseExpired, &g);
                }
                lost.push(grant.key);
            } else if extend_ms > 0 {
                let clock = Arc::clone(&op.clock);
                let until = op.now + extend_ms;
                self.leases
                    .renew(&grant.key, &holder, op.now, until, |ms| clock.wall_ms(ms));
                expire_at = Some(op.wall(until));
                op.touched_leases.push(grant.key.clone());
            }
        }
        if let Some(task) = self.tasks.get_mut(&id) {
            task.heartbeat_at = Some(op.now);
            op.touched_tasks.push(id);
        }
        StepHeartbeat {
            status: StepStatus::Ok,
            task_id: id,
            lost_leases: lost,
            leases_expire_at_ms: expire_at,
        }
    }

    /// Completes a task under its claim. Completing again with the same token answers
    /// `completed` and changes nothing; any other token is `stale_claim`.
    pub fn complete(
        &mut self,
        op: &mut Op,
        id: TaskId,
        token: &ClaimToken,
        result: Option<serde_json::Value>,
    ) -> Completion {
        self.settle_lapsed(op, id, token);
        let status = match self.tasks.get(&id) {
            Some(t) if t.status == TaskStatus::Completed && t.token.as_ref() == Some(token) => {
                CompleteStatus::Completed
            }
            Some(t) if t.status == TaskStatus::Claimed && t.token.as_ref() == Some(token) => {
                self.end_claim(op, id);
                let task = self.tasks.get_mut(&id).expect("exists");
                task.status = TaskStatus::Completed;
                task.result = result;
                task.finished_at = Some(op.now);
                task.updated_at = op.now;
                let task = self.tasks.get(&id).expect("exists");
                op.task_event(EventKind::TaskCompleted, task, None);
                self.retire(op, id);
                CompleteStatus::Completed
            }
            _ => CompleteStatus::StaleClaim,
        };
        Completion {
            status,
            task_id: id,
        }
    }

    /// Reports a failed attempt under the claim: the task goes back to pending, or fails for
    /// good when it has used all its attempts.
    pub fn fail(
        &mut self,
        op: &mut Op,
        id: TaskId,
        token: &ClaimToken,
        error: Option<String>,
    ) -> Failure {
        self.settle_lapsed(op, id, token);
        if self.current_claim(id, token, op.now).is_none() {
            let (attempts, max) = self
                .tasks
                .get(&id)
                .map_or((0, 0), |t| (t.attempts, t.max_attempts));
            return Failure {
                status: FailStatus::StaleClaim,
                task_id: id,
                retry_count: attempts,
                max_retries: max,
                can_retry: false,
            };
        }
        let status = self.take_back(op, id, error.unwrap_or_else(|| "failed".into()), false);
        let task = &self.tasks[&id];
        Failure {
            status,
            task_id: id,
            retry_count: task.attempts,
            max_retries: task.max_attempts,
            can_retry: status == FailStatus::Pending,
        }
    }

    /// Ends the current claim of `id`: releases its leases and forgets its holder index entry.
    /// The token stays on the task (a completed task remembers which claim completed it).
    fn end_claim(&mut self, op: &mut Op, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if let Some(token) = task.token.clone() {
            let holder = LeaseHolder::Claim {
                task_id: id,
                claim_token: token,
            };
            for grant in self.leases.release_holder(&holder) {
                op.lease_event(EventKind::LeaseReleased, &grant);
            }
        }
        if let Some(assignee) = task.assignee.clone()
            && let Some(set) = self.claimed_by.get_mut(&assignee)
        {
            set.remove(&id);
            if set.is_empty() {
                self.claimed_by.remove(&assignee);
            }
        }
    }

    /// Takes a claimed task back: the attempt counts; it goes back to pending in its place, or
    /// fails for good when out of attempts. `reassigned` marks a take-back by the sweep (as
    /// opposed to a failure the worker reported).
    fn take_back(&mut self, op: &mut Op, id: TaskId, why: String, reassigned: bool) -> FailStatus {
        self.end_claim(op, id);
        let task = self.tasks.get_mut(&id).expect("claimed task exists");
        task.attempts += 1;
        task.error = Some(why.clone());
        task.updated_at = op.now;
        let outcome = if task.attempts >= task.max_attempts {
            task.status = TaskStatus::Failed;
            task.finished_at = Some(op.now);
            FailStatus::Failed
        } else {
            task.status = TaskStatus::Pending;
            FailStatus::Pending
        };
        let task = self.tasks.get(&id).expect("exists").clone();
        match outcome {
            FailStatus::Failed => {
                op.task_event(EventKind::TaskFailed, &task, Some(why));
                self.retire(op, id);
            }
            _ => {
                let kind = if reassigned {
                    EventKind::TaskReassigned
                } else {
                    EventKind::TaskFailed
                };
                op.task_event(kind, &task, Some(why));
                self.pending.insert(pending_key(&task));
            }
        }
        // The claim is over: forget who held it and with which token.
        if let Some(t) = self.tasks.get_mut(&id)
            && t.status == TaskStatus::Pending
        {
            t.assignee = None;
            t.token = None;
            t.claimed_at = None;
            t.heartbeat_at = None;
        }
        outcome
    }

    /// Keeps at most `finished_retention` finished tasks; the evicted ones are marked for the
    /// store, which deletes them (it finds no record for them).
    fn retire(&mut self, op: &mut Op, id: TaskId) {
        self.finished.push_back(id);
        while self.finished.len() > self.settings.finished_retention {
            if let Some(old) = self.finished.pop_front() {
                if let Some(key) = self.tasks.remove(&old).and_then(|t| t.request_key()) {
                    self.by_request.remove(&key);
                }
                op.touched_tasks.push(old);
            }
        }
    }

    /// An instance left (expired or unregistered): each task it holds goes back to pending
    /// exactly once (the attempt counts), and every lease it or its claims hold is released.
    /// Returns how many tasks were taken back.
    pub fn release_instance(
        &mut self,
        op: &mut Op,
        id: &InstanceId,
        epoch: Epoch,
        why: &str,
    ) -> usize {
        let tasks = self
            .claimed_by
            .remove(&(id.clone(), epoch))
            .unwrap_or_default();
        for task_id in &tasks {
            self.take_back(op, *task_id, format!("{why}: {id} (epoch {epoch})"), true);
        }
        // Tasks assigned to it but not claimed yet go back to every worker.
        let reserved = self
            .reserved_by
            .get(&(id.clone(), epoch))
            .map(|keys| keys.iter().map(|k| k.2).collect::<Vec<_>>())
            .unwrap_or_default();
        for task_id in reserved {
            let holder = self.release_reservation(task_id);
            if let Some(task) = self.tasks.get_mut(&task_id) {
                task.updated_at = op.now;
                let mut task = task.clone();
                task.assignee = holder; // the event names the instance that left
                op.task_event(
                    EventKind::TaskUnassigned,
                    &task,
                    Some(format!("{why}: {id} (epoch {epoch})")),
                );
            }
        }
        let holder = LeaseHolder::Instance {
            instance_id: id.clone(),
            epoch,
        };
        for grant in self.leases.release_holder(&holder) {
            op.lease_event(EventKind::LeaseReleased, &grant);
        }
        tasks.len()
    }

    /// How many tasks the instance `id` holds claimed in `epoch`.
    pub fn claims_held(&self, id: &InstanceId, epoch: Epoch) -> usize {
        self.claimed_by
            .get(&(id.clone(), epoch))
            .map_or(0, BTreeSet::len)
    }

    /// The periodic sweep: takes back claims whose step heartbeat is older than the step
    /// timeout, claims (and instance leases) of instances that are no longer live — a safety
    /// net for a departure whose notice was lost — and reaps lapsed leases.
    pub fn sweep(&mut self, op: &mut Op, is_live: impl Fn(&InstanceId, Epoch) -> bool) -> Sweep {
        let mut report = Sweep::default();
        let gone: BTreeSet<(InstanceId, Epoch)> = self
            .claimed_by
            .keys()
            .chain(self.reserved_by.keys())
            .filter(|(id, epoch)| !is_live(id, *epoch))
            .cloned()
            .collect();
        for (id, epoch) in gone {
            report.orphans_reassigned +=
                self.release_instance(op, &id, epoch, "instance no longer live");
        }
        let timeout = self.settings.step_timeout_ms;
        let zombies: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Claimed)
            .filter(|t| t.heartbeat_at.is_some_and(|h| op.now >= h + timeout))
            .map(|t| t.id)
            .collect();
        for id in zombies {
            self.take_back(
                op,
                id,
                format!("step timeout ({timeout} ms without a step heartbeat)"),
                true,
            );
            report.zombies_reset += 1;
        }
        let stale_instance_leases: Vec<LeaseGrant> = self
            .leases
            .list(None)
            .into_iter()
            .filter(|g| match &g.holder {
                LeaseHolder::Instance { instance_id, epoch } => !is_live(instance_id, *epoch),
                LeaseHolder::Claim { .. } => false,
            })
            .collect();
        for grant in stale_instance_leases {
            if let Some(g) = self.leases.release(&grant.key, &grant.holder) {
                op.lease_event(EventKind::LeaseReleased, &g);
            }
        }
        let mut lapsed_claims = Vec::new();
        for grant in self.leases.reap(op.now) {
            op.lease_event(EventKind::LeaseExpired, &grant);
            report.leases_reaped += 1;
            if let LeaseHolder::Claim {
                task_id,
                claim_token,
            } = grant.holder
            {
                lapsed_claims.push((task_id, claim_token));
            }
        }
        // A claim that lost a required lock is over (see `settle_lapsed`): the ones whose
        // grant was just reaped, and any whose grant is gone altogether (a restart after the
        // store let the lease's key expire).
        let now = op.now;
        lapsed_claims.extend(
            self.tasks
                .values()
                .filter(|t| t.status == TaskStatus::Claimed && !t.locks.is_empty())
                .filter(|t| !self.lapsed_locks(t, now).is_empty())
                .filter_map(|t| Some((t.id, t.token.clone()?))),
        );
        for (task_id, token) in lapsed_claims {
            if self.settle_lapsed(op, task_id, &token).is_some() {
                report.zombies_reset += 1;
            }
        }
        report
    }

    /// Whether `holder` may hold leases: a current claim, or (checked by the caller) a live
    /// instance.
    pub fn claim_is_current(&self, task_id: TaskId, token: &ClaimToken, now: MonoMs) -> bool {
        self.current_claim(task_id, token, now).is_some()
    }

    /// Whether `key` is a lock `task_id` requires, held by its current claim `token`: such a
    /// lease lasts as long as the claim and cannot be released on its own.
    pub fn is_required_lock(&self, task_id: TaskId, token: &ClaimToken, key: &LeaseKey) -> bool {
        self.tasks.get(&task_id).is_some_and(|t| {
            t.status == TaskStatus::Claimed
                && t.token.as_ref() == Some(token)
                && t.locks.iter().any(|l| &l.key == key)
        })
    }

    /// The instance that holds (`true`) or held — for a task completed under it (`false`) —
    /// `token`'s claim on `task_id`, with its epoch.
    pub fn claimer(
        &self,
        task_id: TaskId,
        token: &ClaimToken,
        now: MonoMs,
    ) -> Option<(&InstanceId, Epoch, bool)> {
        let _ = now; // a claim whose lock lapsed still names its claimer (see check_claimer)
        if let Some(task) = self
            .tasks
            .get(&task_id)
            .filter(|t| t.status == TaskStatus::Claimed && t.token.as_ref() == Some(token))
        {
            let (instance, epoch) = task.assignee.as_ref()?;
            return Some((instance, *epoch, true));
        }
        let task = self
            .tasks
            .get(&task_id)
            .filter(|t| t.status == TaskStatus::Completed && t.token.as_ref() == Some(token))?;
        let (instance, epoch) = task.assignee.as_ref()?;
        Some((instance, *epoch, false))
    }

    /// Acquires a lease for `holder`.
    pub fn acquire_lease(
        &mut self,
        op: &mut Op,
        key: LeaseKey,
        mode: LeaseMode,
        holder: LeaseHolder,
        ttl_ms: u64,
    ) -> Result<LeaseGrant, Vec<LeaseConflict>> {
        let clock = Arc::clone(&op.clock);
        let grant = self
            .leases
            .acquire(key, mode, holder, op.now, op.now + ttl_ms, |ms| {
                clock.wall_ms(ms)
            })?;
        op.lease_event(EventKind::LeaseAcquired, &grant);
        Ok(grant)
    }

    /// Renews `holder`'s lease on `key`.
    pub fn renew_lease(
        &mut self,
        op: &mut Op,
        key: &LeaseKey,
        holder: &LeaseHolder,
        ttl_ms: u64,
    ) -> Option<LeaseGrant> {
        let clock = Arc::clone(&op.clock);
        let grant = self
            .leases
            .renew(key, holder, op.now, op.now + ttl_ms, |ms| clock.wall_ms(ms))?;
        op.touched_leases.push(key.clone());
        Some(grant)
    }

    /// Releases `holder`'s lease on `key`.
    pub fn release_lease(
        &mut self,
        op: &mut Op,
        key: &LeaseKey,
        holder: &LeaseHolder,
    ) -> Option<LeaseGrant> {
        let grant = self.leases.release(key, holder)?;
        op.lease_event(EventKind::LeaseReleased, &grant);
        Some(grant)
    }

    /// Leases under `prefix`, or all.
    pub fn list_leases(&self, prefix: Option<&LeaseKey>) -> Vec<LeaseGrant> {
        self.leases.list(prefix)
    }

    /// One page of the leases under `prefix` (or all), ordered by key and then fencing token,
    /// those after the cursor `after` (a key and a fencing token) only.
    pub fn list_leases_page(
        &self,
        prefix: Option<&LeaseKey>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Page<LeaseGrant> {
        self.leases.page(prefix, after, limit)
    }

    fn view(&self, t: &Task, op: &Op) -> TaskView {
        let holder = t.assignee.as_ref().or(t.reserved.as_ref());
        let finished_at_ms = t.finished_at.map(|m| op.wall(m));
        TaskView {
            id: t.id,
            text: task::text_of(&t.payload),
            status: t.status,
            priority: t.priority,
            assigned_to: holder.map(|(id, _)| id.clone()),
            assignee_epoch: holder.map(|(_, e)| *e),
            metadata: t.payload.get("metadata").filter(|m| !m.is_null()).cloned(),
            result: t.result.clone(),
            error: t.error.clone(),
            created_at: task::iso_ms(op.wall(t.created_at)),
            updated_at: task::iso_ms(op.wall(t.updated_at)),
            completed_at: finished_at_ms.map(task::iso_ms),
            finished_by: t.finished_by.clone(),
            payload: t.payload.clone(),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            requires_locks: t.locks.clone(),
            created_at_ms: op.wall(t.created_at),
            updated_at_ms: op.wall(t.updated_at),
            claimed_at_ms: t.claimed_at.map(|m| op.wall(m)),
            heartbeat_at_ms: t.heartbeat_at.map(|m| op.wall(m)),
            finished_at_ms,
            request_id: t.request_id.clone(),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sweep {
    /// Claims of departed instances taken back by the safety net.
    pub orphans_reassigned: usize,
    /// Claims reset for a stale step heartbeat.
    pub zombies_reset: usize,
    /// Lapsed leases removed.
    pub leases_reaped: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LivenessClock;
    use std::time::Duration;

    /// A claim whose required grant is gone altogether (after a restart, the store had let the
    /// lease's key expire) is ended by the next sweep, not left claimed until the step timeout.
    #[tokio::test]
    async fn the_sweep_ends_a_claim_whose_required_grant_is_gone() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut book = WorkBook::new(WorkSettings {
            step_timeout_ms: 1_800_000,
            claim_lease_ttl_ms: 900_000,
            finished_retention: 100,
            claim_scan_limit: 1000,
        });
        let mut op = Op::new(&clock, Term(1));
        let lock = LockSpec {
            key: LeaseKey::unchecked("repo/x"),
            mode: LeaseMode::Exclusive,
        };
        let (task, _) = book
            .create(&mut op, serde_json::json!(1), 50, 3, vec![lock], None)
            .unwrap();
        let worker = InstanceId::parse("w", &crate::config::Limits::default()).unwrap();
        let claim = book.claim(&mut op, &worker, Epoch(1), 1).remove(0);
        let holder = LeaseHolder::Claim {
            task_id: task.id,
            claim_token: claim.claim_token.clone(),
        };
        // What a recovery finds when the store no longer had the grant.
        assert!(book.leases.release_holder(&holder).len() == 1);
        let report = book.sweep(&mut op, |_, _| true);
        assert_eq!(report.zombies_reset, 1);
        let view = book.get(task.id, &op).unwrap();
        assert_eq!(view.status, TaskStatus::Pending);
        assert_eq!(view.attempts, 1);
        assert!(!book.claim_is_current(task.id, &claim.claim_token, op.now));
    }
}
