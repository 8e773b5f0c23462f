//! The work book as records for the store: what a task or a lease is, in wall-clock times,
//! and the way back from records to a book after a restart.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lease::{LeaseGrant, LeaseHolder, LeaseKey, LeaseMode};
use super::task::{ClaimToken, LockSpec, TaskId, TaskStatus};
use super::{Task, WorkBook, pending_key};
use crate::clock::LivenessClock;
use crate::model::{Epoch, InstanceId};

/// A task as stored: everything the book knows of it, times in wall-clock ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// The id.
    pub id: TaskId,
    /// Creation sequence (the pending order's tie-breaker).
    pub seq: u64,
    /// Status.
    pub status: TaskStatus,
    /// Priority 0–100.
    pub priority: u8,
    /// The payload.
    pub payload: serde_json::Value,
    /// Attempts started.
    pub attempts: u32,
    /// Most attempts.
    pub max_attempts: u32,
    /// Locks required.
    pub locks: Vec<LockSpec>,
    /// The role a claimer must have (absent: any worker; records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Holder, while claimed.
    pub assignee: Option<(InstanceId, Epoch)>,
    /// Claim token, while claimed.
    pub claim_token: Option<ClaimToken>,
    /// Created at.
    #[serde(rename = "createdAt")]
    pub created_at_ms: u64,
    /// Last change of status, assignment or content (absent in older records: the latest of
    /// the other times).
    #[serde(rename = "updatedAt", default)]
    pub updated_at_ms: Option<u64>,
    /// The instance a pending task is assigned to (`task.assign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_for: Option<(InstanceId, Epoch)>,
    /// Who ended it without the claim's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
    /// Claimed at.
    #[serde(rename = "claimedAt")]
    pub claimed_at_ms: Option<u64>,
    /// Last step heartbeat at.
    #[serde(rename = "heartbeatAt")]
    pub heartbeat_at_ms: Option<u64>,
    /// Finished at.
    #[serde(rename = "finishedAt")]
    pub finished_at_ms: Option<u64>,
    /// Result of a completed task.
    pub result: Option<serde_json::Value>,
    /// Last error.
    pub error: Option<String>,
    /// The request id of the create that made it (absent in records written before it
    /// existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The principal whose request id it is (absent: an operator's or an open server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_owner: Option<String>,
}

impl TaskRecord {
    /// The score of this task in the pending sorted set: ascending score is the pending order
    /// (priority descending, then creation order). Exact in an f64 up to 2^40 tasks.
    pub fn pending_score(&self) -> f64 {
        ((100 - u64::from(self.priority.min(100))) << 40 | (self.seq & ((1 << 40) - 1))) as f64
    }
}

/// One grant of a lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRecord {
    /// Mode.
    pub mode: LeaseMode,
    /// Holder (a claim holder's token is not in it when serialized: see `claim_token`).
    pub holder: LeaseHolder,
    /// The token of a claim holder, kept for the store only (records written before it was
    /// split out carry it inside `holder`, which is still read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token: Option<ClaimToken>,
    /// Fencing token.
    pub fencing_token: u64,
    /// Granted at (wall ms).
    #[serde(rename = "acquiredAt")]
    pub acquired_at_ms: u64,
    /// Lapses at (wall ms).
    #[serde(rename = "expiresAt")]
    pub expires_at_ms: u64,
}

/// Every grant on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The key.
    pub key: LeaseKey,
    /// Its grants (several only when shared).
    pub grants: Vec<GrantRecord>,
}

impl LeaseRecord {
    /// When the last grant lapses (wall ms).
    pub fn expires_at_ms(&self) -> u64 {
        self.grants
            .iter()
            .map(|g| g.expires_at_ms)
            .max()
            .unwrap_or(0)
    }
}

/// Counters that must never go back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkCounters {
    /// The last task id handed out.
    pub last_task: u64,
    /// The last fencing token handed out.
    pub last_fencing_token: u64,
}

impl WorkBook {
    /// The record of task `id`, `None` if the book no longer has it.
    pub(crate) fn task_record(&self, id: TaskId, clock: &LivenessClock) -> Option<TaskRecord> {
        let t = self.tasks.get(&id)?;
        let wall = |ms| clock.wall_ms(ms);
        Some(TaskRecord {
            id: t.id,
            seq: t.seq,
            status: t.status,
            priority: t.priority,
            payload: t.payload.clone(),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            locks: t.locks.clone(),
            role: t.role.clone(),
            assignee: t.assignee.clone(),
            claim_token: t.token.clone(),
            created_at_ms: wall(t.created_at),
            updated_at_ms: Some(wall(t.updated_at)),
            reserved_for: t.reserved.clone(),
            finished_by: t.finished_by.clone(),
            claimed_at_ms: t.claimed_at.map(wall),
            heartbeat_at_ms: t.heartbeat_at.map(wall),
            finished_at_ms: t.finished_at.map(wall),
            result: t.result.clone(),
            error: t.error.clone(),
            request_id: t.request_id.clone(),
            request_owner: t.request_owner.clone(),
        })
    }

    /// The record of the leases on `key`, `None` if nobody holds it.
    pub(crate) fn lease_record(
        &self,
        key: &LeaseKey,
        clock: &LivenessClock,
    ) -> Option<LeaseRecord> {
        let grants = self.leases.grants(key)?;
        Some(LeaseRecord {
            key: key.clone(),
            grants: grants
                .iter()
                .map(|g| GrantRecord {
                    mode: g.mode,
                    holder: g.holder.clone(),
                    claim_token: match &g.holder {
                        LeaseHolder::Claim { claim_token, .. } => Some(claim_token.clone()),
                        LeaseHolder::Instance { .. } => None,
                    },
                    fencing_token: g.fencing_token,
                    acquired_at_ms: clock.wall_ms(g.acquired_at),
                    expires_at_ms: g.expires_at_ms,
                })
                .collect(),
        })
    }

    /// The counters.
    pub(crate) fn counters(&self) -> WorkCounters {
        WorkCounters {
            last_task: self.next_task,
            last_fencing_token: self.leases.last_fencing_token(),
        }
    }

    /// Every task id and lease key the book holds (for a full resynchronization).
    pub(crate) fn all_keys(&self) -> (Vec<TaskId>, Vec<LeaseKey>) {
        (
            self.tasks.keys().copied().collect(),
            self.leases.keys().cloned().collect(),
        )
    }

    /// Loads recovered records into an empty book. Counters only move forward: the next task
    /// id and fencing token are past every recovered one.
    pub(crate) fn restore(
        &mut self,
        tasks: Vec<TaskRecord>,
        leases: Vec<LeaseRecord>,
        counters: WorkCounters,
        clock: &Arc<LivenessClock>,
    ) {
        let mono = |ms: u64| clock.mono_from_wall(ms);
        let mut last_task = counters.last_task;
        for r in tasks {
            last_task = last_task.max(r.id.0).max(r.seq);
            let mut task = Task {
                id: r.id,
                seq: r.seq,
                status: r.status,
                priority: r.priority,
                payload: r.payload,
                attempts: r.attempts,
                max_attempts: r.max_attempts,
                locks: r.locks,
                role: r.role,
                assignee: r.assignee,
                token: r.claim_token,
                created_at: mono(r.created_at_ms),
                updated_at: mono(r.updated_at_ms.unwrap_or_else(|| {
                    [r.claimed_at_ms, r.finished_at_ms]
                        .into_iter()
                        .flatten()
                        .fold(r.created_at_ms, u64::max)
                })),
                reserved: r.reserved_for,
                finished_by: r.finished_by,
                claimed_at: r.claimed_at_ms.map(mono),
                heartbeat_at: r.heartbeat_at_ms.map(mono),
                finished_at: r.finished_at_ms.map(mono),
                result: r.result,
                error: r.error,
                request_id: r.request_id,
                request_owner: r.request_owner,
                finish_seq: 0,
            };
            if task.status == TaskStatus::Claimed
                && (task.assignee.is_none() || task.token.is_none())
            {
                // A claim nobody can present or that names no holder: pending again, in its
                // place (records written by hand or by a broken writer).
                task.status = TaskStatus::Pending;
                task.assignee = None;
                task.token = None;
                task.claimed_at = None;
                task.heartbeat_at = None;
            }
            if task.status != TaskStatus::Pending {
                task.reserved = None;
            }
            if let Some(key) = task.request_key() {
                self.by_request.insert(key, task.id);
            }
            match task.status {
                TaskStatus::Pending => {
                    // An assigned task waits in its instance's own queue; any other is queued
                    // by its role below, once it is in the book.
                    if let Some(holder) = &task.reserved {
                        self.reserved_by
                            .entry(holder.clone())
                            .or_default()
                            .insert(pending_key(&task));
                    }
                }
                TaskStatus::Claimed => {
                    let holder = task.assignee.clone().expect("checked above");
                    self.claimed_by.entry(holder).or_default().insert(task.id);
                    if !task.locks.is_empty() {
                        self.recheck_locks = true;
                    }
                }
                TaskStatus::Completed | TaskStatus::Failed => {}
            }
            let (id, shared) = (
                task.id,
                task.status == TaskStatus::Pending && task.reserved.is_none(),
            );
            self.insert_task(task);
            if shared {
                self.queue(id);
            }
        }
        self.next_task = last_task;
        let mut last_fence = counters.last_fencing_token;
        for r in leases {
            for g in r.grants {
                last_fence = last_fence.max(g.fencing_token);
                let holder = match (g.holder, g.claim_token) {
                    (LeaseHolder::Claim { task_id, .. }, Some(claim_token)) => LeaseHolder::Claim {
                        task_id,
                        claim_token,
                    },
                    (holder, _) => holder,
                };
                self.leases.restore(LeaseGrant {
                    key: r.key.clone(),
                    mode: g.mode,
                    holder,
                    fencing_token: g.fencing_token,
                    acquired_at: mono(g.acquired_at_ms),
                    expires_at: mono(g.expires_at_ms),
                    expires_at_ms: g.expires_at_ms,
                });
            }
        }
        self.leases.advance_fencing_token(last_fence);
        // Finished tasks in the order they finished (by time, then id), so retention drops
        // the first finished first.
        let mut finished: Vec<(Option<crate::clock::MonoMs>, TaskId)> = self
            .finished
            .iter()
            .map(|(_, id)| (self.tasks[id].finished_at, *id))
            .collect();
        finished.sort();
        self.finished.clear();
        for (_, id) in finished {
            let task = self.tasks.get_mut(&id).expect("filed as finished");
            task.finish_seq = self.next_finish;
            self.next_finish += 1;
            self.finished.insert((task.finish_seq, id));
        }
    }
}
