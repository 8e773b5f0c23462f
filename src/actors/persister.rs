//! `Persister`: writes the journal's marks to the store.
//!
//! It wakes on a *pacer* — a small task that turns the journal's wake-ups (a write-through call
//! waiting) and the flush interval into messages — reads the current state of every marked
//! entity and writes it in one pipelined batch. On the flush-interval tick it also writes the
//! heartbeat timestamps that moved since they were last written (write-behind: the hot path
//! never sees the store). A failed flush puts its marks back and counts against the circuit
//! breaker; while the breaker is open nothing is attempted until the half-open probe.
//!
//! The pacer is aborted when this actor's state is dropped — also when the actor is killed —
//! so a restarted Persister never shares the journal with a stale pacer for long.

use std::sync::Arc;

use std::sync::atomic::Ordering;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::ClusterContext;
use crate::store::{
    Counters, Dirty, HeartbeatWrite, InstanceRecord, PersistMode, Persistence, TermRecord,
    WriteBatch,
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
}

/// The Persister's state.
#[derive(Debug)]
pub struct PersisterState {
    ctx: Arc<ClusterContext>,
    persistence: Arc<Persistence>,
    pacer: JoinHandle<()>,
    flushes: u64,
    failures: u64,
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
    /// Reads the current state of everything marked in `dirty`.
    fn batch(&self, dirty: &mut Dirty, heartbeats: bool) -> WriteBatch {
        let ctx = &self.ctx;
        let clock = &ctx.clock;
        let now = clock.precise_ms();
        let now_wall = clock.wall_ms(now);
        let mut batch = WriteBatch {
            flush_mark: heartbeats.then_some(now_wall),
            ..WriteBatch::default()
        };
        if dirty.everything {
            for entry in ctx.registry.iter() {
                dirty.instances.insert(entry.key().clone());
            }
            let (tasks, leases) = ctx.work.lock().all_keys();
            dirty.tasks.extend(tasks);
            dirty.leases.extend(leases);
            dirty.term = true;
            dirty.counters = true;
        }
        for id in &dirty.instances {
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
                        },
                        expire,
                    ));
                }
                _ => batch.instances_gone.push(id.clone()),
            }
        }
        if !dirty.tasks.is_empty() || !dirty.leases.is_empty() || dirty.counters {
            let work = ctx.work.lock();
            for id in &dirty.tasks {
                match work.task_record(*id, clock) {
                    Some(r) => batch.tasks.push(r),
                    None => batch.tasks_gone.push(*id),
                }
            }
            for key in &dirty.leases {
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
            if dirty.counters {
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
        }
        if dirty.term {
            let view = ctx.leadership.view(|ms| clock.wall_ms(ms));
            batch.term = Some(TermRecord {
                term: view.term,
                leader: view.leader,
                epoch: view.epoch,
            });
        }
        batch.events = dirty.events.iter().cloned().collect();
        if heartbeats && self.persistence.mode == PersistMode::WriteBehind {
            for entry in ctx.registry.iter() {
                let (status, seen) = entry.cell.liveness();
                if !status.is_alive()
                    || entry.slot.persisted_seen.load(Ordering::Relaxed) == seen
                    || dirty.instances.contains(entry.key())
                {
                    continue;
                }
                batch.heartbeats.push(HeartbeatWrite {
                    id: entry.key().clone(),
                    last_seen_ms: clock.wall_ms(seen),
                    status,
                    expire_in_ms: entry.slot.deadline_after(seen).saturating_sub(now),
                });
            }
        }
        batch
    }

    async fn flush(&mut self, heartbeats: bool) -> Result<(), String> {
        let p = Arc::clone(&self.persistence);
        if !p.breaker.allows() {
            return Err("circuit open".into());
        }
        let (mut dirty, seq) = p.journal.take();
        let resync = p.resync.swap(false, Ordering::AcqRel);
        dirty.everything |= resync;
        let batch = self.batch(&mut dirty, heartbeats || resync);
        if batch.is_empty() {
            p.mark_durable(seq);
            return Ok(());
        }
        let span = tracing::debug_span!(
            "flush",
            instances = batch.instances.len() + batch.instances_gone.len(),
            heartbeats = batch.heartbeats.len(),
            tasks = batch.tasks.len() + batch.tasks_gone.len(),
            leases = batch.leases.len() + batch.leases_gone.len(),
            events = batch.events.len(),
        );
        // Kept where a restarted Persister finds it, should this one die during the write.
        *p.in_flight.lock() = Some(dirty);
        let result = p.store.apply(&batch).instrument(span).await;
        let dirty = p.in_flight.lock().take().unwrap_or_default();
        match result {
            Ok(applied) => {
                p.breaker.success();
                self.flushes += 1;
                crate::telemetry::store_flushed();
                // Remember what was written, so unchanged heartbeats are not written again.
                let seen_of = |id: &crate::model::InstanceId, wall: u64| {
                    if let Some(e) = self.ctx.registry.get(id.as_str()) {
                        e.slot
                            .persisted_seen
                            .store(self.ctx.clock.mono_from_wall(wall), Ordering::Relaxed);
                    }
                };
                for (r, _) in &batch.instances {
                    seen_of(&r.id, r.last_seen_ms);
                }
                for b in &batch.heartbeats {
                    seen_of(&b.id, b.last_seen_ms);
                }
                for id in applied.missing_instances {
                    // Its record lapsed in the store while memory still had it alive.
                    p.journal.touch_instance(&id);
                }
                p.mark_durable(seq);
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                crate::telemetry::store_failed();
                if p.breaker.failure() {
                    tracing::error!(error = %e, "store failing; circuit open");
                } else {
                    tracing::warn!(error = %e, "store flush failed; will retry");
                }
                p.journal.put_back(dirty);
                p.resync.store(true, Ordering::Release);
                Err(e.to_string())
            }
        }
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
                });
            }
            #[cfg(feature = "fault-injection")]
            PersisterMsg::Crash => panic!("Persister crash requested (fault injection)"),
        }
        Ok(())
    }
}
