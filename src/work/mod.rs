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
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::clock::{LivenessClock, MonoMs};
use crate::events::{Event, EventKind};
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
    /// The role a worker must be registered with to claim it (`None`: any worker).
    role: Option<String>,
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
    /// Its place in the finishing order, while finished (see [`WorkBook::finished`]).
    finish_seq: u64,
}

/// The place of `status` in [`WorkBook`]'s status index.
fn status_slot(status: TaskStatus) -> usize {
    match status {
        TaskStatus::Pending => 0,
        TaskStatus::Claimed => 1,
        TaskStatus::Completed => 2,
        TaskStatus::Failed => 3,
    }
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

/// Who claims, for the role rules: the roles the worker is registered with, and the role a
/// claim is narrowed to (`task.claim`'s `role`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Claimant<'a> {
    /// The worker's roles.
    pub roles: &'a [String],
    /// Only tasks requiring exactly this role.
    pub only: Option<&'a str>,
}

impl Claimant<'_> {
    /// Whether this claim may take a task requiring `role` (`None`: no role required).
    fn may_take(&self, role: Option<&str>) -> bool {
        match (self.only, role) {
            (Some(only), required) => required == Some(only),
            (None, None) => true,
            (None, Some(required)) => self.roles.iter().any(|r| r == required),
        }
    }
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

/// Where a finished task stands in the retention order: first finished first, by a sequence
/// that only grows (not by time: two tasks finish in the same millisecond, and recovered times
/// may lie ahead of the clock — the task finishing now must never be the one retention drops).
type FinishedKey = (u64, TaskId);

fn finished_key(task: &Task) -> FinishedKey {
    (task.finish_seq, task.id)
}

/// Where a claimed task stands in the step-timeout order: oldest step heartbeat first.
type BeatKey = (MonoMs, TaskId);

/// Most items one sweep call handles under one hold of the work lock: deadlines due, safety-net
/// checks, lapsed leases. The LeaderActor runs the next chunk at once, in a new message, when
/// there is more.
pub(crate) const SWEEP_CHUNK: usize = 4096;

/// How many holders the sweep's safety net checks per sweep: a fixed number, so that a sweep
/// costs the same however many holders there are, and a round over every holder takes
/// holders / 64 sweeps (10 000 holders: under 3 minutes at the default interval of 1 s)...
/// The net is a backstop: a departure takes its instance's work back itself, in the step that
/// removes the instance, and a recovery checks every holder at once (`Coordinator::sweep_now`).
pub(crate) const SAFETY_PER_SWEEP: usize = 64;

/// ...up to this many sweeps per round (10 minutes at the default interval): past 38 400
/// holders a sweep checks holders / 600, so that a lost departure waits no longer than that.
const SAFETY_ROUND_MAX: usize = 600;

/// One of the sweep's sorted sources of holders, peeked through without copying.
trait PeekHolder<'a> {
    /// The next holder, if any.
    fn peek_holder(&mut self) -> Option<&'a (InstanceId, Epoch)>;
    /// Steps past `holder` if it is next.
    fn skip_holder(&mut self, holder: &(InstanceId, Epoch));
}

impl<'a, I: Iterator<Item = &'a (InstanceId, Epoch)>> PeekHolder<'a> for std::iter::Peekable<I> {
    fn peek_holder(&mut self) -> Option<&'a (InstanceId, Epoch)> {
        self.peek().copied()
    }

    fn skip_holder(&mut self, holder: &(InstanceId, Epoch)) {
        self.next_if(|h| *h == holder);
    }
}

/// Tasks, the pending queue and the leases, with indexes so that every operation costs the
/// same however much unrelated state the book holds: tasks by status (counts and filtered
/// lists), claims by holder, claims by step-heartbeat time (the step timeout), finished tasks
/// by finishing time (retention), and leases by holder and expiry (see [`LeaseTable`]).
#[derive(Debug)]
pub(crate) struct WorkBook {
    settings: WorkSettings,
    /// Every task, in id (creation) order.
    tasks: BTreeMap<TaskId, Task>,
    /// Task ids by status, in id order (indexed by [`status_slot`]).
    by_status: [BTreeSet<TaskId>; 4],
    /// Claimed tasks by last step heartbeat.
    beats: BTreeSet<BeatKey>,
    /// Pending tasks any worker may claim (no required role, not assigned), in the pending
    /// order.
    pending: BTreeSet<PendingKey>,
    /// Pending tasks that require a role (not assigned), by role, each in the pending order:
    /// a claim looks only at the sets of roles its worker has, so its cost does not grow with
    /// pending tasks it may not take.
    pending_by_role: BTreeMap<String, BTreeSet<PendingKey>>,
    /// Claimed tasks by holder, so a departure finds its tasks without a scan.
    claimed_by: BTreeMap<(InstanceId, Epoch), BTreeSet<TaskId>>,
    /// Pending tasks assigned to an instance (`task.assign`), in the pending order.
    reserved_by: BTreeMap<(InstanceId, Epoch), BTreeSet<PendingKey>>,
    /// Finished tasks in finishing order (retention drops the first finished).
    finished: BTreeSet<FinishedKey>,
    /// The next finishing sequence number.
    next_finish: u64,
    leases: LeaseTable,
    /// Where the sweep's safety net (instances no longer live) goes on from.
    sweep_cursor: Option<(InstanceId, Epoch)>,
    /// Claims recovered from the store whose required grants must be checked once by the
    /// next sweep (the store may have let a grant's key expire while nothing ran).
    recheck_locks: bool,
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
            tasks: BTreeMap::new(),
            by_status: Default::default(),
            beats: BTreeSet::new(),
            pending: BTreeSet::new(),
            pending_by_role: BTreeMap::new(),
            claimed_by: BTreeMap::new(),
            reserved_by: BTreeMap::new(),
            finished: BTreeSet::new(),
            next_finish: 1,
            leases: LeaseTable::default(),
            sweep_cursor: None,
            recheck_locks: false,
            next_task: 0,
            by_request: HashMap::new(),
        }
    }

    /// Files `task` in the book and every index its status puts it in (a finished one as the
    /// last to finish).
    fn insert_task(&mut self, mut task: Task) {
        self.by_status[status_slot(task.status)].insert(task.id);
        match task.status {
            TaskStatus::Claimed => {
                if let Some(at) = task.heartbeat_at {
                    self.beats.insert((at, task.id));
                }
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                task.finish_seq = self.next_finish;
                self.next_finish += 1;
                self.finished.insert(finished_key(&task));
            }
            TaskStatus::Pending => {}
        }
        self.tasks.insert(task.id, task);
    }

    /// Takes `id` out of the book and the status indexes (the queues and holder indexes are
    /// the caller's: they depend on how the task leaves).
    fn remove_task(&mut self, id: TaskId) -> Option<Task> {
        let task = self.tasks.remove(&id)?;
        self.by_status[status_slot(task.status)].remove(&id);
        self.beats.remove(&(task.heartbeat_at.unwrap_or(0), id));
        self.finished.remove(&finished_key(&task));
        Some(task)
    }

    /// Files pending, unassigned task `id` in the queue its role puts it in: the shared one,
    /// or its role's.
    fn queue(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let key = pending_key(task);
        match &task.role {
            None => {
                self.pending.insert(key);
            }
            Some(role) => {
                self.pending_by_role
                    .entry(role.clone())
                    .or_default()
                    .insert(key);
            }
        }
    }

    /// Takes task `id` out of the queue [`queue`](Self::queue) files it in (by its current
    /// key: the caller changes priority after, never before).
    fn unqueue(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let key = pending_key(task);
        match &task.role {
            None => {
                self.pending.remove(&key);
            }
            Some(role) => {
                if let Some(set) = self.pending_by_role.get_mut(role.as_str()) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.pending_by_role.remove(role.as_str());
                    }
                }
            }
        }
    }

    /// Moves `id` to status `to`, keeping the status, step-timeout and retention indexes in
    /// step. Entering `claimed` files it by its `heartbeat_at` (the caller sets it first) and
    /// entering `completed` or `failed` as the last to finish; leaving, it is unfiled by the
    /// values it had, so the caller clears them after.
    fn transition(&mut self, id: TaskId, to: TaskStatus) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let from = task.status;
        if from == to {
            return;
        }
        self.by_status[status_slot(from)].remove(&id);
        self.by_status[status_slot(to)].insert(id);
        match from {
            TaskStatus::Claimed => {
                self.beats.remove(&(task.heartbeat_at.unwrap_or(0), id));
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                self.finished.remove(&finished_key(task));
            }
            TaskStatus::Pending => {}
        }
        task.status = to;
        match to {
            TaskStatus::Claimed => {
                if let Some(at) = task.heartbeat_at {
                    self.beats.insert((at, id));
                }
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                task.finish_seq = self.next_finish;
                self.next_finish += 1;
                self.finished.insert(finished_key(task));
            }
            TaskStatus::Pending => {}
        }
    }

    /// Records a step heartbeat of claimed task `id` at `at`, moving it in the step-timeout
    /// order.
    fn beat(&mut self, id: TaskId, at: MonoMs) {
        if let Some(task) = self.tasks.get_mut(&id) {
            if task.status == TaskStatus::Claimed {
                self.beats.remove(&(task.heartbeat_at.unwrap_or(0), id));
                self.beats.insert((at, id));
            }
            task.heartbeat_at = Some(at);
        }
    }

    /// Creates a pending task from validated parts, and answers it with `true` (created).
    ///
    /// With a `request_id` already used by a task the book still holds, nothing is created: the
    /// answer is that task, with `false`, if it was created with the same payload, priority,
    /// attempts and locks, and [`RequestIdTaken`] otherwise. This makes a retried create safe
    /// when the first attempt's outcome is unknown.
    #[allow(
        clippy::too_many_arguments,
        reason = "the validated parts of a TaskSpec, one by one, as the caller checked them"
    )]
    pub fn create(
        &mut self,
        op: &mut Op,
        payload: serde_json::Value,
        priority: u8,
        max_attempts: u32,
        locks: Vec<LockSpec>,
        role: Option<String>,
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
                && existing.locks == locks
                && existing.role == role;
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
            role,
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
            finish_seq: 0,
        };
        let id = task.id;
        if let Some(key) = request {
            self.by_request.insert(key, id);
        }
        op.task_event(EventKind::TaskCreated, &task, None);
        let view = self.view(&task, op);
        self.insert_task(task);
        self.queue(id);
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
        self.unqueue(id);
        self.unreserve(id);
        let task = self.remove_task(id).expect("exists");
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
        self.transition(id, TaskStatus::Pending);
        let task = self.tasks.get_mut(&id).expect("claimed task exists");
        task.claimed_at = None;
        task.heartbeat_at = None;
        task.updated_at = op.now;
        let task = task.clone();
        // The event names the worker whose claim was undone; then the claim is forgotten.
        op.task_event(EventKind::TaskReassigned, &task, Some(why.to_string()));
        self.queue(id);
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
    ///
    /// In creation order (ClaudeBench's default, newest first, and Vigil's cursor `after`,
    /// oldest first) the page is read off the ordered book — or, with a status filter, off that
    /// status's index — so its cost is the offset plus the page, not the book. Only a filter on
    /// priority, role or assignee needs a full pass (for the total), and so do the other orders
    /// (a selection of the first `offset + limit`, then a sort of that head).
    pub fn list(&self, query: &TaskQuery, op: &Op) -> Page<TaskView> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .min(MAX_LIST_LIMIT);
        let matches = |t: &Task| {
            query.status.is_none_or(|s| t.status == s)
                && query.priority.is_none_or(|p| t.priority == p)
                && query
                    .role
                    .as_deref()
                    .is_none_or(|r| t.role.as_deref() == Some(r))
                && query.assignee.as_deref().is_none_or(|a| {
                    t.assignee
                        .as_ref()
                        .or(t.reserved.as_ref())
                        .is_some_and(|(id, _)| id.as_str() == a)
                })
        };
        if query.order_by == TaskOrder::CreatedAt {
            return self.list_in_creation_order(query, limit, op, matches);
        }
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
        Page {
            items,
            total,
            truncated,
        }
    }

    /// [`list`](Self::list) in id (creation) order.
    fn list_in_creation_order(
        &self,
        query: &TaskQuery,
        limit: usize,
        op: &Op,
        matches: impl Fn(&Task) -> bool,
    ) -> Page<TaskView> {
        use std::ops::Bound;
        // The ids to walk: one status's index, or the whole book; from the cursor on.
        let from = query.after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = (from, Bound::Unbounded);
        let ids: Box<dyn DoubleEndedIterator<Item = TaskId> + '_> = match query.status {
            Some(status) => Box::new(self.by_status[status_slot(status)].range(range).copied()),
            None => Box::new(self.tasks.range(range).map(|(id, _)| *id)),
        };
        let ids: Box<dyn Iterator<Item = TaskId> + '_> = if query.descending {
            Box::new(ids.rev())
        } else {
            ids
        };
        let narrowed = query.priority.is_some() || query.assignee.is_some() || query.role.is_some();
        let mut items = Vec::with_capacity(limit.min(64));
        let mut seen = 0; // matches met so far, the skipped offset included
        let mut more = false;
        for id in ids {
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            if !matches(task) {
                continue;
            }
            seen += 1;
            if seen <= query.offset {
                continue;
            }
            if items.len() == limit {
                more = true;
                if !narrowed {
                    break;
                }
                continue; // counting on, for the total
            }
            items.push(self.view(task, op));
        }
        let total = if narrowed {
            // Every match after the cursor was met; those before it are counted apart.
            seen + query.after.map_or(0, |after| {
                self.tasks
                    .range(..=after)
                    .filter(|(_, t)| matches(t))
                    .count()
            })
        } else {
            match query.status {
                Some(status) => self.count(status),
                None => self.tasks.len(),
            }
        };
        Page {
            items,
            total,
            truncated: more,
        }
    }

    /// Every index agrees with the tasks: a pending task is in exactly one queue — the shared
    /// one, or its assignee's — under its current key; claimed tasks are filed under their
    /// holder; finished tasks are in the retention list once; nothing else is anywhere.
    #[cfg(test)]
    pub(crate) fn check_indexes(&self) {
        for t in self.tasks.values() {
            let key = pending_key(t);
            let in_shared = self.pending.contains(&key);
            let in_role = self
                .pending_by_role
                .values()
                .any(|keys| keys.contains(&key));
            let in_pending = in_shared || in_role;
            let in_reserved = self.reserved_by.values().any(|keys| keys.contains(&key));
            match t.status {
                TaskStatus::Pending => {
                    assert!(t.assignee.is_none() && t.token.is_none(), "{t:?}");
                    match &t.reserved {
                        Some(holder) => {
                            assert!(!in_pending, "reserved {} also shared", t.id);
                            assert!(self.reserved_by[holder].contains(&key), "{t:?}");
                        }
                        None => {
                            assert!(!in_reserved, "{t:?}");
                            match &t.role {
                                None => assert!(in_shared && !in_role, "{t:?}"),
                                Some(role) => {
                                    assert!(!in_shared, "{t:?} needs a role, filed as shared");
                                    assert!(self.pending_by_role[role].contains(&key), "{t:?}");
                                    let sets = self
                                        .pending_by_role
                                        .values()
                                        .filter(|keys| keys.contains(&key))
                                        .count();
                                    assert_eq!(sets, 1, "{t:?} filed under one role");
                                }
                            }
                        }
                    }
                }
                TaskStatus::Claimed => {
                    let holder = t.assignee.as_ref().expect("a holder");
                    assert!(t.token.is_some() && t.reserved.is_none(), "{t:?}");
                    assert!(self.claimed_by[holder].contains(&t.id), "{t:?}");
                    assert!(!in_pending && !in_reserved, "{t:?}");
                }
                TaskStatus::Completed | TaskStatus::Failed => {
                    assert!(self.finished.contains(&finished_key(t)), "{t:?}");
                    assert!(!in_pending && !in_reserved && t.reserved.is_none(), "{t:?}");
                }
            }
        }
        let queued = self.pending.len()
            + self
                .pending_by_role
                .values()
                .map(BTreeSet::len)
                .sum::<usize>()
            + self.reserved_by.values().map(BTreeSet::len).sum::<usize>();
        let pending = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Pending)
            .count();
        assert_eq!(queued, pending, "no stale queue entries");
        assert!(self.reserved_by.values().all(|k| !k.is_empty()));
        assert!(self.pending_by_role.values().all(|k| !k.is_empty()));
        assert!(
            self.finished
                .iter()
                .all(|(_, f)| self.tasks.contains_key(f))
        );
        let claimed: usize = self.claimed_by.values().map(BTreeSet::len).sum();
        let held = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Claimed)
            .count();
        assert_eq!(claimed, held);
        // The status index holds every task once, under its status.
        for (slot, ids) in self.by_status.iter().enumerate() {
            for id in ids {
                let t = &self.tasks[id];
                assert_eq!(status_slot(t.status), slot, "{t:?} filed by status");
            }
        }
        let filed: usize = self.by_status.iter().map(BTreeSet::len).sum();
        assert_eq!(filed, self.tasks.len(), "every task filed by status once");
        // The step-timeout index holds exactly the claimed tasks, by their step heartbeat.
        let beating: BTreeSet<BeatKey> = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Claimed)
            .filter_map(|t| Some((t.heartbeat_at?, t.id)))
            .collect();
        assert_eq!(beating, self.beats, "step-timeout index");
        // The retention index holds exactly the finished tasks, by their finishing time.
        let finished: BTreeSet<FinishedKey> = self
            .tasks
            .values()
            .filter(|t| matches!(t.status, TaskStatus::Completed | TaskStatus::Failed))
            .map(finished_key)
            .collect();
        assert_eq!(finished, self.finished, "retention index");
        self.leases.check_indexes();
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
        BTreeMap::from([
            ("pending", self.count(TaskStatus::Pending)),
            ("claimed", self.count(TaskStatus::Claimed)),
            ("completed", self.count(TaskStatus::Completed)),
            ("failed", self.count(TaskStatus::Failed)),
        ])
    }

    /// How many tasks are in `status`, from the status index.
    pub fn count(&self, status: TaskStatus) -> usize {
        self.by_status[status_slot(status)].len()
    }

    /// Hands the best pending tasks whose locks can all be acquired to `worker` (a live
    /// instance in `epoch`, registered with `roles`), at most `max`. A task whose locks
    /// conflict is skipped and stays pending in its place.
    ///
    /// Tasks an operator assigned to the worker come first. Then, without `only`, the worker
    /// takes from the tasks any worker may take and those requiring one of its `roles`, merged
    /// in the one pending order (priority, then age); with `only`, it takes solely tasks
    /// requiring exactly that role. A task requiring a role the worker lacks is never looked
    /// at: each role's tasks wait in their own set, so the claim's cost does not grow with them.
    pub fn claim(
        &mut self,
        op: &mut Op,
        worker: &InstanceId,
        epoch: Epoch,
        claimant: &Claimant<'_>,
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
            let takes = self
                .tasks
                .get(&key.2)
                .is_some_and(|t| claimant.may_take(t.role.as_deref()));
            if takes && let Some(task) = self.claim_one(op, key, worker, epoch) {
                claimed.push(task);
            }
        }
        // The queues it may take from: `None` is the shared one, `Some(role)` a role's.
        let mut sources: Vec<Option<&str>> = Vec::new();
        match claimant.only {
            Some(role) => sources.push(Some(role)),
            None => {
                sources.push(None);
                for role in claimant.roles {
                    if !sources.contains(&Some(role.as_str()))
                        && self.pending_by_role.contains_key(role.as_str())
                    {
                        sources.push(Some(role.as_str()));
                    }
                }
            }
        }
        // A merge of the sources in the pending order, each with its own cursor: a task that
        // stays (its locks conflict) is stepped over, never looked at again by this claim.
        let mut cursors: Vec<Option<PendingKey>> = vec![None; sources.len()];
        let mut scanned = 0;
        while claimed.len() < max && scanned < self.settings.claim_scan_limit {
            let mut best: Option<(PendingKey, usize)> = None;
            for (i, source) in sources.iter().enumerate() {
                let queue = match source {
                    None => Some(&self.pending),
                    Some(role) => self.pending_by_role.get(*role),
                };
                let from = cursors[i].map_or(Bound::Unbounded, Bound::Excluded);
                let next = queue.and_then(|q| q.range((from, Bound::Unbounded)).next());
                if let Some(key) = next
                    && best.is_none_or(|(b, _)| *key < b)
                {
                    best = Some((*key, i));
                }
            }
            let Some((key, i)) = best else { break };
            scanned += 1;
            cursors[i] = Some(key);
            if let Some(task) = self.claim_one(op, key, worker, epoch) {
                claimed.push(task);
            }
        }
        claimed
    }

    /// The role task `id` requires, if the book has it and it requires one.
    pub fn role_of(&self, id: TaskId) -> Option<&str> {
        self.tasks.get(&id)?.role.as_deref()
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
        self.unqueue(id);
        self.unreserve(id);
        let task = self.tasks.get_mut(&id).expect("pending task exists");
        task.assignee = Some((worker.clone(), epoch));
        task.token = Some(token.clone());
        task.claimed_at = Some(op.now);
        task.heartbeat_at = Some(op.now);
        task.updated_at = op.now;
        self.transition(id, TaskStatus::Claimed);
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
        if self.tasks.contains_key(&id) {
            self.beat(id, op.now);
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
                task.result = result;
                task.finished_at = Some(op.now);
                task.updated_at = op.now;
                self.transition(id, TaskStatus::Completed);
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
            task.finished_at = Some(op.now);
            self.transition(id, TaskStatus::Failed);
            FailStatus::Failed
        } else {
            self.transition(id, TaskStatus::Pending);
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
                self.queue(id);
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
        debug_assert!(
            self.tasks
                .get(&id)
                .is_some_and(|t| self.finished.contains(&finished_key(t))),
            "a retired task is filed as finished"
        );
        while self.finished.len() > self.settings.finished_retention {
            let Some((_, old)) = self.finished.pop_first() else {
                break;
            };
            if let Some(key) = self.remove_task(old).and_then(|t| t.request_key()) {
                self.by_request.remove(&key);
            }
            op.touched_tasks.push(old);
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

    /// One chunk of the periodic sweep, touching only what is due, at most `chunk` items of
    /// each kind under this hold of the lock:
    ///
    /// * claims whose step heartbeat is older than the step timeout, from the step-heartbeat
    ///   index, oldest first;
    /// * leases past their expiry, from the expiry index (a claim that lost a required lock
    ///   ends with it);
    /// * the safety net for a departure whose notice was lost: the next instances that hold
    ///   claims, reservations or leases, in id order from where the previous sweep
    ///   stopped, checked against `is_live`: [`SAFETY_PER_SWEEP`] of them, or enough that a
    ///   round over every holder takes at most 600 sweeps when there are more than 38 400
    ///   (`chunk` when smaller);
    /// * once after a recovery, every claim whose required grant the store no longer had.
    ///
    /// [`Sweep::more`] says due work is left (the caller runs another chunk soon).
    pub fn sweep(
        &mut self,
        op: &mut Op,
        chunk: usize,
        is_live: impl Fn(&InstanceId, Epoch) -> bool,
    ) -> Sweep {
        let mut report = Sweep::default();
        let chunk = chunk.max(1);
        // The safety net, over the next holders after the cursor: a fixed number, unless there
        // are so many holders that a round would take more than SAFETY_ROUND_MAX sweeps; never
        // more than `chunk`. The holder count is an upper bound (an instance holding claims
        // and leases is in two indexes).
        let holders_now =
            self.claimed_by.len() + self.reserved_by.len() + self.leases.instance_holder_count();
        let safety = holders_now
            .div_ceil(SAFETY_ROUND_MAX)
            .max(SAFETY_PER_SWEEP)
            .min(chunk);
        let after = self.sweep_cursor.take();
        let mut checked: Vec<(InstanceId, Epoch)> = Vec::with_capacity(safety);
        let wrapped;
        {
            use std::ops::Bound;
            let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            let range = (from, Bound::Unbounded);
            // The three holder indexes merged in order, each holder once.
            let mut sources = [
                &mut self.claimed_by.range(range).map(|(k, _)| k).peekable()
                    as &mut dyn PeekHolder<'_>,
                &mut self.reserved_by.range(range).map(|(k, _)| k).peekable(),
                &mut self
                    .leases
                    .instance_holders_after(after.as_ref())
                    .peekable(),
            ];
            while checked.len() < safety {
                let Some(next) = sources.iter_mut().filter_map(|s| s.peek_holder()).min() else {
                    break;
                };
                let next = next.clone();
                for source in &mut sources {
                    source.skip_holder(&next);
                }
                checked.push(next);
            }
            wrapped = sources.iter_mut().all(|s| s.peek_holder().is_none());
        }
        self.sweep_cursor = if wrapped {
            None
        } else {
            checked.last().cloned()
        };
        for (id, epoch) in checked {
            if !is_live(&id, epoch) {
                report.orphans_reassigned +=
                    self.release_instance(op, &id, epoch, "instance no longer live");
            }
        }
        // Step timeouts: the claims whose last step heartbeat is at or before now - timeout.
        let timeout = self.settings.step_timeout_ms;
        if let Some(due_before) = op.now.checked_sub(timeout) {
            let zombies: Vec<TaskId> = self
                .beats
                .range(..(due_before + 1, TaskId(0)))
                .take(chunk)
                .map(|(_, id)| *id)
                .collect();
            report.more |= zombies.len() == chunk;
            for id in zombies {
                self.take_back(
                    op,
                    id,
                    format!("step timeout ({timeout} ms without a step heartbeat)"),
                    true,
                );
                report.zombies_reset += 1;
            }
        }
        // Lapsed leases.
        let reaped = self.leases.reap(op.now, chunk);
        report.more |= reaped.len() == chunk;
        let mut lapsed_claims = Vec::new();
        for grant in reaped {
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
        // grant was just reaped, and — once after a recovery — any whose grant is gone
        // altogether (the store had let the lease's key expire).
        if std::mem::take(&mut self.recheck_locks) {
            let now = op.now;
            lapsed_claims.extend(
                self.by_status[status_slot(TaskStatus::Claimed)]
                    .iter()
                    .filter_map(|id| self.tasks.get(id))
                    .filter(|t| !t.locks.is_empty())
                    .filter(|t| !self.lapsed_locks(t, now).is_empty())
                    .filter_map(|t| Some((t.id, t.token.clone()?))),
            );
        }
        for (task_id, token) in lapsed_claims {
            if self.settle_lapsed(op, task_id, &token).is_some() {
                report.zombies_reset += 1;
            }
        }
        report
    }

    /// Starts the sweep's safety net over from the first holder.
    pub fn restart_sweep_round(&mut self) {
        self.sweep_cursor = None;
    }

    /// Whether the sweep's safety net finished a round over every holder (its cursor is back
    /// at the start).
    pub fn sweep_round_done(&self) -> bool {
        self.sweep_cursor.is_none()
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
            role: t.role.clone(),
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
    /// Due work is left for another chunk.
    pub more: bool,
}

impl std::ops::AddAssign for Sweep {
    fn add_assign(&mut self, other: Self) {
        self.orphans_reassigned += other.orphans_reassigned;
        self.zombies_reset += other.zombies_reset;
        self.leases_reaped += other.leases_reaped;
        self.more = other.more;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::LivenessClock;
    use std::time::Duration;

    fn settings(retention: usize) -> WorkSettings {
        WorkSettings {
            step_timeout_ms: 1_000,
            claim_lease_ttl_ms: 5_000,
            finished_retention: retention,
            claim_scan_limit: 1000,
        }
    }

    fn worker(n: usize) -> InstanceId {
        InstanceId::parse(&format!("w{n:02}"), &crate::config::Limits::default()).unwrap()
    }

    /// A page as the definition says: every match, in id order (reversed when descending),
    /// after the cursor, then `offset` skipped and `limit` taken; the total counts every match.
    fn reference_page(book: &WorkBook, query: &TaskQuery) -> (Vec<TaskId>, usize, bool) {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .min(MAX_LIST_LIMIT);
        let all: Vec<&Task> = book
            .tasks
            .values()
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .filter(|t| query.priority.is_none_or(|p| t.priority == p))
            .filter(|t| {
                query
                    .role
                    .as_deref()
                    .is_none_or(|r| t.role.as_deref() == Some(r))
            })
            .filter(|t| {
                query.assignee.as_deref().is_none_or(|a| {
                    t.assignee
                        .as_ref()
                        .or(t.reserved.as_ref())
                        .is_some_and(|(id, _)| id.as_str() == a)
                })
            })
            .collect();
        let total = all.len();
        let mut ids: Vec<TaskId> = all
            .iter()
            .map(|t| t.id)
            .filter(|id| query.after.is_none_or(|after| *id > after))
            .collect();
        if query.descending {
            ids.reverse();
        }
        let rest: Vec<TaskId> = ids.into_iter().skip(query.offset).collect();
        let more = rest.len() > limit;
        (rest.into_iter().take(limit).collect(), total, more)
    }

    /// Roles a task may require in the random test: none (twice as likely), or one of three.
    const TASK_ROLES: [Option<&str>; 5] = [None, None, Some("a"), Some("b"), Some("c")];

    /// The roles of worker `n` in the random test: `a`, `b`, both, or none.
    fn roles_of(n: usize) -> Vec<String> {
        match n % 4 {
            0 => vec!["a".into()],
            1 => vec!["b".into()],
            2 => vec!["a".into(), "b".into()],
            _ => Vec::new(),
        }
    }

    /// Random operations — creates (some requiring a role), claims (unfiltered or narrowed to
    /// a role), step heartbeats, completions, failures, operator
    /// actions, leases, departures, time passing and chunked sweeps — keep every index in
    /// step with the tasks and leases after each one, and a page in creation order is what
    /// the definition gives.
    #[tokio::test]
    async fn indexes_stay_in_step_under_random_operations() {
        use rand::{Rng, SeedableRng};
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut book = WorkBook::new(settings(40));
        let mut now = clock.precise_ms();
        let mut claims: Vec<(TaskId, ClaimToken)> = Vec::new();
        let mut live = [true; 6];
        let mut epochs = [1u64; 6];
        let holder = |n: usize, epochs: &[u64; 6]| LeaseHolder::Instance {
            instance_id: worker(n),
            epoch: Epoch(epochs[n]),
        };
        for step in 0..3000 {
            let mut op = Op::new(&clock, Term(1));
            op.now = now;
            let w = rng.random_range(0..6);
            match rng.random_range(0..14) {
                0..=2 => {
                    let locks = if rng.random_bool(0.3) {
                        vec![LockSpec {
                            key: LeaseKey::unchecked(&format!("r/{}", rng.random_range(0..8))),
                            mode: LeaseMode::Exclusive,
                        }]
                    } else {
                        Vec::new()
                    };
                    book.create(
                        &mut op,
                        serde_json::json!({"n": step}),
                        rng.random_range(0..4),
                        2,
                        locks,
                        TASK_ROLES[rng.random_range(0..TASK_ROLES.len())].map(str::to_string),
                        None,
                    )
                    .unwrap();
                }
                3 | 4 if live[w] => {
                    // Unfiltered, or narrowed to one of its roles.
                    let roles = roles_of(w);
                    let only = match rng.random_range(0..3) {
                        0 => roles.first().map(String::as_str),
                        _ => None,
                    };
                    let claimant = Claimant {
                        roles: &roles,
                        only,
                    };
                    let own: BTreeSet<TaskId> = book
                        .reserved_by
                        .get(&(worker(w), Epoch(epochs[w])))
                        .map(|keys| keys.iter().map(|k| k.2).collect())
                        .unwrap_or_default();
                    for c in book.claim(&mut op, &worker(w), Epoch(epochs[w]), &claimant, 2) {
                        let role = c.task.role.as_deref();
                        match only {
                            Some(only) => assert_eq!(role, Some(only), "a narrowed claim"),
                            None => assert!(
                                role.is_none_or(|r| roles.iter().any(|x| x == r)),
                                "{w} has no role {role:?}"
                            ),
                        }
                        if !own.contains(&c.task.id) {
                            assert!(book.tasks[&c.task.id].reserved.is_none());
                        }
                        claims.push((c.task.id, c.claim_token));
                    }
                }
                5 if !claims.is_empty() => {
                    let (id, token) = claims[rng.random_range(0..claims.len())].clone();
                    book.step_heartbeat(&mut op, id, &token, 3_000);
                }
                6 if !claims.is_empty() => {
                    let (id, token) = claims.swap_remove(rng.random_range(0..claims.len()));
                    book.complete(&mut op, id, &token, None);
                }
                7 if !claims.is_empty() => {
                    let (id, token) = claims.swap_remove(rng.random_range(0..claims.len()));
                    book.fail(&mut op, id, &token, Some("x".into()));
                }
                8 => {
                    let key = LeaseKey::unchecked(&format!("l/{}", rng.random_range(0..12)));
                    let h = holder(w, &epochs);
                    match rng.random_range(0..3) {
                        0 if live[w] => {
                            let _ = book.acquire_lease(
                                &mut op,
                                key,
                                LeaseMode::Shared,
                                h,
                                rng.random_range(1..3_000),
                            );
                        }
                        1 => {
                            book.renew_lease(&mut op, &key, &h, 2_000);
                        }
                        _ => {
                            book.release_lease(&mut op, &key, &h);
                        }
                    }
                }
                9 => {
                    // A departure: noticed (released at once) or lost (the sweep finds it).
                    live[w] = false;
                    if rng.random_bool(0.5) {
                        book.release_instance(&mut op, &worker(w), Epoch(epochs[w]), "gone");
                    }
                }
                10 => {
                    epochs[w] += 1;
                    live[w] = true;
                }
                11 => {
                    let ids: Vec<TaskId> = book.tasks.keys().copied().collect();
                    if let Some(id) = ids.get(rng.random_range(0..ids.len().max(1))).copied() {
                        let actor = admin::Actor::Operator;
                        match rng.random_range(0..4) {
                            0 => {
                                let _ = book.delete(&mut op, id);
                            }
                            1 if live[w] => {
                                let _ = book.assign(&mut op, id, &worker(w), Epoch(epochs[w]));
                            }
                            2 => {
                                let _ =
                                    book.complete_without_token(&mut op, id, &actor, None, "id");
                            }
                            _ => {
                                let _ = book.unassign(&mut op, id, "test");
                            }
                        }
                    }
                }
                _ => {
                    now += rng.random_range(0..400);
                    op.now = now;
                    let live_now = live;
                    let epochs_now = epochs;
                    book.sweep(&mut op, 3, |id, epoch| {
                        (0..6).any(|n| {
                            &worker(n) == id && live_now[n] && Epoch(epochs_now[n]) == epoch
                        })
                    });
                }
            }
            book.check_indexes();
            claims.retain(|(id, token)| book.claim_is_current(*id, token, now));
            if step % 50 == 0 {
                for status in [
                    None,
                    Some(TaskStatus::Pending),
                    Some(TaskStatus::Claimed),
                    Some(TaskStatus::Completed),
                ] {
                    for (descending, offset, after, narrowed) in [
                        (true, 0, None, false),
                        (false, 0, None, false),
                        (false, 3, None, true),
                        (true, 2, None, false),
                        (false, 0, Some(TaskId(5)), false),
                        (false, 0, Some(TaskId(9)), true),
                    ] {
                        let query = TaskQuery {
                            status,
                            priority: narrowed.then_some(1),
                            role: (offset == 2).then(|| "a".to_string()),
                            limit: Some(4),
                            after,
                            offset,
                            descending,
                            ..TaskQuery::default()
                        };
                        let op = Op::new(&clock, Term(1));
                        let page = book.list(&query, &op);
                        let got: Vec<TaskId> = page.items.iter().map(|t| t.id).collect();
                        let (want, total, more) = reference_page(&book, &query);
                        assert_eq!(
                            (got, page.total, page.truncated),
                            (want, total, more),
                            "{query:?}"
                        );
                    }
                }
            }
        }
        let counts = book.counts();
        assert!(counts.values().sum::<usize>() == book.tasks.len());
        assert!(book.finished.len() <= 40, "retention holds");
    }

    /// A task requiring a role goes only to a worker with that role; an unfiltered claim takes
    /// from the shared queue and its roles' queues merged in one order (priority, then age);
    /// a narrowed claim takes only its role's tasks; a worker without the role passes over
    /// any number of such tasks at no cost (the scan limit is 4 here); and all of it holds
    /// the same after the book is rebuilt from its records.
    #[tokio::test]
    async fn claims_respect_required_roles_in_one_order() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut book = WorkBook::new(WorkSettings {
            claim_scan_limit: 4,
            ..settings(100)
        });
        let mut op = Op::new(&clock, Term(1));
        let mut create = |book: &mut WorkBook, priority: u8, role: Option<&str>| {
            book.create(
                &mut op,
                serde_json::json!(priority),
                priority,
                3,
                Vec::new(),
                role.map(str::to_string),
                None,
            )
            .unwrap()
            .0
            .id
        };
        // Many tasks only `x` workers may take, ahead of everything else in the order.
        for _ in 0..500 {
            create(&mut book, 100, Some("x"));
        }
        let t1 = create(&mut book, 50, Some("a"));
        let t2 = create(&mut book, 50, None);
        let t3 = create(&mut book, 90, Some("b"));
        let t4 = create(&mut book, 50, Some("a"));
        let t5 = create(&mut book, 90, Some("c"));
        book.check_indexes();
        let records: Vec<records::TaskRecord> = book
            .tasks
            .keys()
            .filter_map(|id| book.task_record(*id, &clock))
            .collect();
        assert_eq!(records.iter().filter(|r| r.role.is_some()).count(), 504);
        let mut rebuilt = WorkBook::new(book.settings.clone());
        rebuilt.restore(records, Vec::new(), book.counters(), &clock);
        rebuilt.check_indexes();
        for mut book in [book, rebuilt] {
            let mut op = Op::new(&clock, Term(1));
            let ab = vec!["a".to_string(), "b".to_string()];
            let ids = |claims: Vec<ClaimedTask>| -> Vec<TaskId> {
                claims.iter().map(|c| c.task.id).collect()
            };
            // Narrowed to `a`: only `a`'s tasks, in order; a role the worker has, but no task.
            let only_a = Claimant {
                roles: &ab,
                only: Some("a"),
            };
            let w = worker(1);
            assert_eq!(ids(book.claim(&mut op, &w, Epoch(1), &only_a, 1)), [t1]);
            // Unfiltered, with roles a and b: the best of shared, a and b — never x or c —
            // by priority, then age, across the sets.
            let unfiltered = Claimant {
                roles: &ab,
                only: None,
            };
            assert_eq!(
                ids(book.claim(&mut op, &w, Epoch(1), &unfiltered, 2)),
                [t3, t2]
            );
            assert_eq!(ids(book.claim(&mut op, &w, Epoch(1), &unfiltered, 2)), [t4]);
            // A worker without roles finds nothing of the 501 left, without a scan.
            let nobody = Claimant::default();
            assert!(
                book.claim(&mut op, &worker(2), Epoch(1), &nobody, 5)
                    .is_empty()
            );
            let c = vec!["c".to_string()];
            let with_c = Claimant {
                roles: &c,
                only: None,
            };
            assert_eq!(
                ids(book.claim(&mut op, &worker(3), Epoch(1), &with_c, 5)),
                [t5]
            );
            book.check_indexes();
            // A task taken back goes back to its role's queue, in its place.
            let mut op2 = Op::new(&clock, Term(1));
            book.release_instance(&mut op2, &w, Epoch(1), "gone");
            book.check_indexes();
            assert_eq!(
                ids(book.claim(&mut op2, &worker(4), Epoch(1), &unfiltered, 5)),
                [t3, t1, t2, t4]
            );
            let query = TaskQuery {
                role: Some("c".into()),
                ..TaskQuery::default()
            };
            let listed: Vec<TaskId> = book.list(&query, &op2).items.iter().map(|t| t.id).collect();
            assert_eq!(listed, [t5]);
        }
    }

    /// A sweep takes at most its chunk of each kind of due work and says when more is left;
    /// the safety net walks the holders a chunk at a time and comes round to all of them.
    #[tokio::test]
    async fn the_sweep_works_in_bounded_chunks() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut book = WorkBook::new(settings(1000));
        let mut op = Op::new(&clock, Term(1));
        for i in 0..10 {
            book.create(&mut op, serde_json::json!(i), 50, 3, Vec::new(), None, None)
                .unwrap();
        }
        // Ten workers claim one each; five of them are gone without a notice.
        for n in 0..10 {
            assert_eq!(
                book.claim(&mut op, &worker(n), Epoch(1), &Claimant::default(), 1)
                    .len(),
                1
            );
        }
        let live = |id: &InstanceId, _: Epoch| id.as_str() >= "w05";
        let mut rounds = 0;
        let mut orphans = 0;
        loop {
            let report = book.sweep(&mut op, 3, live);
            book.check_indexes();
            orphans += report.orphans_reassigned;
            rounds += 1;
            if book.sweep_round_done() {
                break;
            }
        }
        assert_eq!((orphans, rounds), (5, 4), "ten holders, three at a time");
        // The five live claims go stale: three, then two, by the step timeout.
        op.now += 1_000;
        let first = book.sweep(&mut op, 3, |_, _| true);
        assert_eq!((first.zombies_reset, first.more), (3, true));
        let second = book.sweep(&mut op, 3, |_, _| true);
        assert_eq!((second.zombies_reset, second.more), (2, false));
        book.check_indexes();
        assert_eq!(book.count(TaskStatus::Claimed), 0);
        assert_eq!(book.count(TaskStatus::Pending), 10);
    }

    /// However many holders there are, one sweep checks the same fixed number of them, each
    /// holder once per round — one that holds both claims and leases included — and the round
    /// comes round to every one.
    #[tokio::test]
    async fn the_safety_net_checks_a_fixed_number_of_holders_per_sweep_and_each_once_a_round() {
        use std::cell::RefCell;
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut book = WorkBook::new(settings(1000));
        let mut op = Op::new(&clock, Term(1));
        let holders = 3 * SAFETY_PER_SWEEP + 10;
        for i in 0..holders {
            book.create(&mut op, serde_json::json!(i), 50, 3, Vec::new(), None, None)
                .unwrap();
        }
        // Every worker claims a task; every third also holds a lease as an instance, and as
        // many again hold only a lease.
        for n in 0..holders {
            assert_eq!(
                book.claim(&mut op, &worker(n), Epoch(1), &Claimant::default(), 1)
                    .len(),
                1
            );
        }
        for n in (0..holders)
            .step_by(3)
            .chain(holders..holders + holders / 3)
        {
            let holder = LeaseHolder::Instance {
                instance_id: worker(n),
                epoch: Epoch(1),
            };
            let key = LeaseKey::unchecked(&format!("l/{n}"));
            book.acquire_lease(&mut op, key, LeaseMode::Exclusive, holder, 60_000)
                .unwrap();
        }
        let all = holders + holders / 3;
        let checked = RefCell::new(Vec::new());
        let mut per_sweep = Vec::new();
        loop {
            let before = checked.borrow().len();
            let report = book.sweep(&mut op, SWEEP_CHUNK, |id, _| {
                checked.borrow_mut().push(id.clone());
                true
            });
            assert_eq!(report.orphans_reassigned, 0);
            per_sweep.push(checked.borrow().len() - before);
            if book.sweep_round_done() {
                break;
            }
        }
        let mut checked = checked.into_inner();
        assert!(
            per_sweep.iter().all(|&n| n <= SAFETY_PER_SWEEP),
            "{per_sweep:?}"
        );
        assert_eq!(per_sweep[0], SAFETY_PER_SWEEP);
        assert_eq!(
            per_sweep.len(),
            all.div_ceil(SAFETY_PER_SWEEP),
            "{per_sweep:?}"
        );
        assert!(checked.is_sorted(), "in id order");
        assert_eq!(checked.len(), all, "as many checks as holders");
        checked.dedup();
        assert_eq!(checked.len(), all, "every holder once");
        book.check_indexes();
    }

    /// Retention drops the first finished, never the task finishing now — also when both
    /// finish in the same millisecond and the one finishing now has the lower id.
    #[tokio::test]
    async fn retention_never_drops_the_task_finishing_now() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let mut book = WorkBook::new(settings(1));
        let mut op = Op::new(&clock, Term(1));
        for i in 0..2 {
            book.create(&mut op, serde_json::json!(i), 50, 1, Vec::new(), None, None)
                .unwrap();
        }
        let first = book
            .claim(&mut op, &worker(1), Epoch(1), &Claimant::default(), 1)
            .remove(0);
        let second = book
            .claim(&mut op, &worker(2), Epoch(1), &Claimant::default(), 1)
            .remove(0);
        assert!(first.task.id < second.task.id);
        // The same millisecond: the later id completes, then the lower id fails for good.
        book.complete(&mut op, second.task.id, &second.claim_token, None);
        let failed = book.fail(&mut op, first.task.id, &first.claim_token, None);
        assert_eq!(failed.status, FailStatus::Failed);
        book.check_indexes();
        assert!(
            book.get(first.task.id, &op).is_some(),
            "the one finishing now stays"
        );
        assert!(
            book.get(second.task.id, &op).is_none(),
            "the first finished goes"
        );
    }

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
            .create(&mut op, serde_json::json!(1), 50, 3, vec![lock], None, None)
            .unwrap();
        let worker = InstanceId::parse("w", &crate::config::Limits::default()).unwrap();
        let claim = book
            .claim(&mut op, &worker, Epoch(1), &Claimant::default(), 1)
            .remove(0);
        let holder = LeaseHolder::Claim {
            task_id: task.id,
            claim_token: claim.claim_token.clone(),
        };
        // What a recovery finds when the store no longer had the grant.
        assert!(book.leases.release_holder(&holder).len() == 1);
        book.recheck_locks = true; // as a recovery leaves it
        let report = book.sweep(&mut op, SWEEP_CHUNK, |_, _| true);
        assert_eq!(report.zombies_reset, 1);
        let view = book.get(task.id, &op).unwrap();
        assert_eq!(view.status, TaskStatus::Pending);
        assert_eq!(view.attempts, 1);
        assert!(!book.claim_is_current(task.id, &claim.claim_token, op.now));
    }
}
