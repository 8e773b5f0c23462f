//! `Persister`: writes the journal's marks to the store.
//!
//! It wakes on a *pacer* — a small task that turns the journal's wake-ups (a write-through call
//! waiting) and the flush interval into messages — reads the current state of every marked
//! entity and writes it in one pipelined batch. On the flush-interval tick it also writes the
//! heartbeat timestamps that moved since they were last written (write-behind: the hot path
//! never sees the store), found in the list the hot path keeps of the instances it moved —
//! not by walking the registry (see [`crate::registry::cell`]). A flush of many entities — a
//! full rewrite after a failure above all — is cut into parts of at most [`FLUSH_PART`]
//! entities, each read under its own short hold of the work lock and written in its own store
//! call, so heartbeats' and claims' work-lock waits stay short and no single store call grows
//! with the state. A failed flush puts its marks back and counts against the circuit breaker;
//! while the breaker is open nothing is attempted until the half-open probe, which is one
//! flush.
//!
//! The pacer is aborted when this actor's state is dropped — also when the actor is killed —
//! so a restarted Persister never shares the journal with a stale pacer for long.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::ClusterContext;
use crate::clock::MonoMs;
use crate::model::InstanceId;
use crate::store::{
    Counters, Dirty, FLUSH_PART, HeartbeatWrite, InstanceRecord, PersistMode, Persistence,
    StoreError, TermRecord, WriteBatch,
};

/// The Persister behaviour.
#[derive(Debug, Default, Clone, Copy)]
pub struct Persister;

/// Messages the Persister understands.
#[derive(Debug)]
pub enum PersisterMsg {
    /// Write the marked changes now (a write-through call is waiting).
    Flush,
    /// The flush interval passed: write the marked changes and the heartbeat timestamps.
    Tick,
    /// Write everything now, heartbeats included, and answer whether it worked (shutdown).
    FlushAll(RpcReplyPort<Result<(), String>>),
    /// "What do you hold?"
    #[cfg(feature = "chaos")]
    Inspect(RpcReplyPort<PersisterView>),
    /// Fault injection for chaos tests: the handler panics.
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// What the Persister holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "chaos")]
pub struct PersisterView {
    /// Flushes written by this incarnation.
    pub flushes: u64,
    /// Flushes that failed.
    pub failures: u64,
    /// Marked entities and queued events not yet written.
    pub pending: (usize, usize),
    /// The journal sequence acknowledged by the store.
    pub durable_seq: u64,
    /// Full rewrites (after a failure) completed by this incarnation.
    pub resyncs: u64,
    /// Parts written: a flush of more than [`FLUSH_PART`](crate::store::FLUSH_PART) entities
    /// is written in several.
    pub parts: u64,
    /// The most entities one part held (read under one hold of the work lock, written in one
    /// store call).
    pub largest_part: usize,
    /// The longest the Persister held the work lock at once.
    pub longest_lock_hold: std::time::Duration,
}

/// The Persister's state.
#[derive(Debug)]
pub struct PersisterState {
    ctx: Arc<ClusterContext>,
    persistence: Arc<Persistence>,
    pacer: JoinHandle<()>,
    flushes: u64,
    failures: u64,
    stats: PartStats,
}

/// How the flushes were cut into parts (for chaos inspection and tests).
#[derive(Debug, Default, Clone, Copy)]
struct PartStats {
    resyncs: u64,
    parts: u64,
    largest_part: usize,
    longest_lock_hold: Duration,
}

impl Drop for PersisterState {
    fn drop(&mut self) {
        self.pacer.abort();
    }
}

fn pacer(myself: ActorRef<PersisterMsg>, p: Arc<Persistence>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(p.flush_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                _ = interval.tick() => PersisterMsg::Tick,
                _ = p.journal.woken() => PersisterMsg::Flush,
            };
            if myself.cast(msg).is_err() {
                return;
            }
        }
    })
}

impl PersisterState {
    /// Every instance, task and lease memory holds that `marked` does not name (a full
    /// rewrite). Keys only: collecting them holds the work lock for a copy of the ids, not for
    /// serializing anything.
    fn everything_but(&mut self, marked: &Dirty) -> Dirty {
        let ctx = &self.ctx;
        let mut rest = Dirty::default();
        for entry in ctx.registry.iter() {
            if !marked.instances.contains(entry.key()) {
                rest.instances.insert(entry.key().clone());
            }
        }
        let (tasks, leases) = {
            let work = ctx.work.lock();
            let held = Instant::now();
            let keys = work.all_keys();
            self.stats.held(held.elapsed());
            keys
        };
        rest.tasks
            .extend(tasks.into_iter().filter(|t| !marked.tasks.contains(t)));
        rest.leases
            .extend(leases.into_iter().filter(|l| !marked.leases.contains(l)));
        rest
    }

    /// Reads the current state of everything `part` names. The work lock is taken once, for
    /// at most [`FLUSH_PART`] entities.
    fn batch(&mut self, part: &Dirty, heartbeats: bool) -> WriteBatch {
        let ctx = &self.ctx;
        let clock = &ctx.clock;
        let now = clock.precise_ms();
        let now_wall = clock.wall_ms(now);
        let mut batch = WriteBatch {
            flush_mark: heartbeats.then_some(now_wall),
            ..WriteBatch::default()
        };
        // Before the instances' records are read: a heartbeat of an instance whose record is
        // in this part is then either in the record, or lists the instance again.
        if heartbeats && self.persistence.mode == PersistMode::WriteBehind {
            moved_heartbeats(ctx, &part.instances, now, &mut batch.heartbeats);
        }
        for id in &part.instances {
            let slot = ctx.registry.get(id.as_str()).map(|e| Arc::clone(&e.slot));
            match slot {
                Some(slot) if slot.status().is_alive() => {
                    let info = slot.info();
                    let (status, seen) = slot.liveness();
                    let expire = slot.deadline_after(seen).saturating_sub(now);
                    batch.instances.push((
                        InstanceRecord {
                            id: slot.id.clone(),
                            roles: info.roles,
                            status,
                            last_seen_ms: clock.wall_ms(seen),
                            epoch: slot.epoch,
                            ttl_ms: slot.ttl_ms(),
                            metadata: info.metadata,
                            registered_at_ms: clock.wall_ms(info.registered_at),
                            owner: slot.owner.as_deref().map(str::to_string),
                        },
                        expire,
                    ));
                }
                _ => batch.instances_gone.push(id.clone()),
            }
        }
        if !part.tasks.is_empty() || !part.leases.is_empty() || part.counters {
            let work = ctx.work.lock();
            let held = Instant::now();
            for id in &part.tasks {
                match work.task_record(*id, clock) {
                    Some(r) => batch.tasks.push(r),
                    None => batch.tasks_gone.push(*id),
                }
            }
            for key in &part.leases {
                match work.lease_record(key, clock) {
                    Some(r) => {
                        let expire = r.expires_at_ms().saturating_sub(now_wall);
                        if expire == 0 {
                            batch.leases_gone.push(key.clone());
                        } else {
                            batch.leases.push((r, expire));
                        }
                    }
                    None => batch.leases_gone.push(key.clone()),
                }
            }
            if part.counters {
                let ceiling = ctx.leadership.ceiling();
                batch.counters = Some(Counters {
                    work: work.counters(),
                    last_epoch: ctx.last_epoch(),
                    last_flush_ms: 0,
                    // Reserved by the LeaderActor with its own write; carried here too so a
                    // store that lost it (restarted empty) gets it back with the rest.
                    term_reserved: if ceiling == u64::MAX { 0 } else { ceiling },
                });
            }
            drop(work);
            self.stats.held(held.elapsed());
        }
        if part.term {
            let view = ctx.leadership.view(|ms| clock.wall_ms(ms));
            batch.term = Some(TermRecord {
                term: view.term,
                leader: view.leader,
                epoch: view.epoch,
            });
        }
        batch.events = part.events.iter().cloned().collect();
        batch
    }

    /// Writes what the journal marked — and, after a failure, everything — in parts of at most
    /// [`FLUSH_PART`] entities, each read under its own short hold of the work lock and
    /// written in its own store call. The journal's marks go first: once they are written the
    /// write-through callers waiting on them are released, while the rest of a full rewrite
    /// follows. Heartbeat timestamps and the flush mark ride on the last part.
    async fn flush(&mut self, heartbeats: bool) -> Result<(), String> {
        if !self.ctx.is_active() {
            // Deposed (high availability): the store would refuse it as fenced anyway.
            return Err("not the active coordinator".into());
        }
        let p = Arc::clone(&self.persistence);
        p.notice_moves();
        let Some(admission) = p.breaker.admit() else {
            return Err("circuit open".into());
        };
        let (mut marked, seq) = p.journal.take();
        let resync =
            p.resync.swap(false, Ordering::AcqRel) | std::mem::take(&mut marked.everything);
        let rest = if resync {
            marked.term = true;
            marked.counters = true;
            self.everything_but(&marked)
        } else {
            Dirty::default()
        };
        // Every mark taken is in flight until the store acknowledges its part: a dead
        // Persister's successor, or a failure below, puts back what is left.
        *p.in_flight.lock() = Some(marked.clone());
        let mut parts = Vec::new();
        marked.split_into(FLUSH_PART, &mut parts);
        let durable_after = parts.len();
        rest.split_into(FLUSH_PART, &mut parts);
        let with_heartbeats = heartbeats || resync;
        if parts.is_empty() && with_heartbeats {
            parts.push(Dirty::default());
        }
        let count = parts.len();
        let mut wrote = false;
        for (i, part) in parts.into_iter().enumerate() {
            let last = i + 1 == count;
            let batch = self.batch(&part, with_heartbeats && last);
            if !batch.is_empty() {
                if let Err(e) = self.write_part(&batch).await {
                    if e.is_fenced() {
                        // Not a store failure: another coordinator holds the lease, and no
                        // retry can succeed. No breaker count, no resync: the coordinator
                        // steps down on the watch `note_fenced` sets.
                        p.note_fenced("flush", &e);
                        let left = p.in_flight.lock().take().unwrap_or_default();
                        p.journal.put_back(left);
                        p.flush_failed();
                        return Err(e.to_string());
                    }
                    // NOT_REPLICATED: the primary has the part, too few replicas confirmed it.
                    // Nothing can have been lost, so no full rewrite — unless this flush was
                    // one, whose rest must still be written. Its marks go back either way and
                    // are written (and waited for) again.
                    let rewrite = resync || !e.is_not_replicated();
                    let e = e.to_string();
                    self.failures += 1;
                    crate::telemetry::store_failed();
                    let opened = admission.failure();
                    p.store_failed("flush", &e, opened);
                    let left = p.in_flight.lock().take().unwrap_or_default();
                    p.journal.put_back(left);
                    if rewrite {
                        p.resync.store(true, Ordering::Release);
                    }
                    p.flush_failed();
                    return Err(e);
                }
                wrote = true;
                self.stats.part(part.entities());
            }
            if let Some(in_flight) = p.in_flight.lock().as_mut() {
                in_flight.forget(&part);
            }
            if i + 1 == durable_after {
                p.mark_durable(seq);
            }
        }
        *p.in_flight.lock() = None;
        p.mark_durable(seq);
        if wrote {
            admission.success();
            p.store_ok("flush");
            self.flushes += 1;
            crate::telemetry::store_flushed();
        }
        if resync {
            self.stats.resyncs += 1;
            tracing::info!(parts = count, "store rewritten in full after a failure");
        }
        Ok(())
    }

    /// Writes one part and records what it wrote.
    async fn write_part(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        let span = tracing::debug_span!(
            "flush",
            instances = batch.instances.len() + batch.instances_gone.len(),
            heartbeats = batch.heartbeats.len(),
            tasks = batch.tasks.len() + batch.tasks_gone.len(),
            leases = batch.leases.len() + batch.leases_gone.len(),
            events = batch.events.len(),
        );
        let p = &self.persistence;
        let applied = p.store.apply(batch).instrument(span).await?;
        for id in applied.missing_instances {
            // Its record lapsed in the store while memory still had it alive.
            p.journal.touch_instance(&id);
        }
        Ok(())
    }
}

/// The heartbeat timestamps to write behind: every live instance whose last-seen time moved
/// since it was last taken here, except those in `skip` (their whole record is in the same
/// batch, read after this), appended to `out`; `now` is the precise time the keys' lifetimes
/// are counted from. No store I/O, and no walk over the registry: the hot path lists the
/// instances it moves ([`HotArena::take_moved`](crate::registry::HotArena::take_moved)), and
/// this takes the list, so each move is returned once. If the write then fails, the full
/// rewrite that follows a failure writes them. A flush tick calls it for the write-behind
/// heartbeats; `Coordinator::bench_flush_scan` times it.
pub(crate) fn moved_heartbeats(
    ctx: &ClusterContext,
    skip: &HashSet<InstanceId>,
    now: MonoMs,
    out: &mut Vec<HeartbeatWrite>,
) {
    let clock = &ctx.clock;
    ctx.arena.take_moved(|id, cell, status, seen| {
        if !status.is_alive() || skip.contains(id) {
            return;
        }
        out.push(HeartbeatWrite {
            id: id.clone(),
            last_seen_ms: clock.wall_ms(seen),
            status,
            expire_in_ms: cell.deadline_after(seen).saturating_sub(now),
        });
    });
}

impl PartStats {
    fn held(&mut self, for_: Duration) {
        self.longest_lock_hold = self.longest_lock_hold.max(for_);
    }

    fn part(&mut self, entities: usize) {
        self.parts += 1;
        self.largest_part = self.largest_part.max(entities);
    }
}

/// Start arguments.
#[derive(Debug)]
pub struct PersisterArgs {
    /// The shared context.
    pub ctx: Arc<ClusterContext>,
    /// The persistence to write through.
    pub persistence: Arc<Persistence>,
}

impl Actor for Persister {
    type Msg = PersisterMsg;
    type State = PersisterState;
    type Arguments = PersisterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PersisterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A predecessor killed during a write left its marks in flight: take them back, and
        // rewrite everything in case the write was half done.
        if let Some(lost) = args.persistence.in_flight.lock().take() {
            args.persistence.journal.put_back(lost);
            args.persistence.resync.store(true, Ordering::Release);
        }
        let pacer = pacer(myself, Arc::clone(&args.persistence));
        Ok(PersisterState {
            ctx: args.ctx,
            persistence: args.persistence,
            pacer,
            flushes: 0,
            failures: 0,
            stats: PartStats::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PersisterMsg::Flush => {
                let _ = state.flush(false).await;
            }
            PersisterMsg::Tick => {
                let _ = state.flush(true).await;
            }
            PersisterMsg::FlushAll(reply) => {
                let result = state.flush(true).await;
                let _ = reply.send(result);
            }
            #[cfg(feature = "chaos")]
            PersisterMsg::Inspect(reply) => {
                let _ = reply.send(PersisterView {
                    flushes: state.flushes,
                    failures: state.failures,
                    pending: state.persistence.journal.pending(),
                    durable_seq: state.persistence.durable_seq(),
                    resyncs: state.stats.resyncs,
                    parts: state.stats.parts,
                    largest_part: state.stats.largest_part,
                    longest_lock_hold: state.stats.longest_lock_hold,
                });
            }
            #[cfg(feature = "fault-injection")]
            PersisterMsg::Crash => panic!("Persister crash requested (fault injection)"),
        }
        Ok(())
    }
}
