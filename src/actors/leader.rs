//! `LeaderActor`: elects one leader among live instances and keeps the term.
//!
//! ## The election rule
//!
//! The leader is the live instance with the **oldest epoch** (the earliest registration still
//! alive), preferring an `Active` one over a `Suspect` one. A leader keeps leading until it
//! expires or unregisters — a newer or healthier instance never deposes it — so leadership only
//! moves when it must. Because epochs are unique, the rule is deterministic.
//!
//! ## The sweep
//!
//! Every `sweep_interval` the LeaderActor sweeps the work book: claims whose step heartbeat is
//! older than `step_timeout` go back to pending (the attempt counts), lapsed leases are reaped,
//! and claims or leases of instances that are no longer live are taken back — a safety net,
//! since the supervisor already takes an instance's work back in the step that removes it.
//!
//! ## Terms
//!
//! Every change of leader, including to "no leader" when the last instance leaves, increases
//! the term by exactly one. Only this actor writes the term, and a restarted LeaderActor starts
//! only after the old one is gone, from the term recorded in the shared
//! [`Leadership`](crate::registry::Leadership) — so there is at most one leader per term, and
//! terms never go back. An election is a synchronous block with no `.await` inside, so a kill
//! can never interrupt it half-way.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};

use super::ClusterContext;
use crate::events::{Event, EventKind};
use crate::model::{Epoch, InstanceStatus, LeaderView, Term};
use crate::registry::InstanceSlot;

/// The LeaderActor behaviour.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaderActor;

/// Messages the LeaderActor understands.
#[derive(Debug)]
pub enum LeaderMsg {
    /// A new epoch joined; answer with the leadership after it is taken into account.
    Joined(Arc<InstanceSlot>, RpcReplyPort<LeaderView>),
    /// An instance left (expired or unregistered).
    Left(Arc<InstanceSlot>),
    /// Instances recovered from the store joined; answer once they are taken into account.
    Restored(Vec<Arc<InstanceSlot>>, RpcReplyPort<LeaderView>),
    /// "What do you hold?"
    #[cfg(feature = "chaos")]
    Inspect(RpcReplyPort<LeaderActorView>),
    /// Time for the periodic sweep (stale steps, lapsed leases, orphaned claims).
    Sweep,
    /// Fault injection for chaos tests: the handler panics.
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// What the LeaderActor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "chaos")]
pub struct LeaderActorView {
    /// The leadership.
    pub leader: LeaderView,
    /// How many live candidates it tracks.
    pub candidates: usize,
    /// Elections this incarnation ran.
    pub elections: u64,
    /// Sweeps this incarnation ran.
    pub sweeps: u64,
}

/// The LeaderActor's own state: the candidates, ordered by epoch.
#[derive(Debug)]
pub struct LeaderState {
    ctx: Arc<ClusterContext>,
    candidates: BTreeMap<Epoch, Arc<InstanceSlot>>,
    elections: u64,
    sweeps: u64,
    sweep_timer: Option<JoinHandle<Result<(), MessagingErr<LeaderMsg>>>>,
}

impl LeaderState {
    /// Rebuilds the candidate set from the registry: everything the actor knows can be
    /// recovered from shared state, which is what makes restarting it safe.
    fn rebuild(ctx: Arc<ClusterContext>) -> Self {
        let candidates = ctx
            .registry
            .iter()
            .filter(|entry| entry.cell.status().is_alive())
            .map(|entry| (entry.slot.epoch, Arc::clone(&entry.slot)))
            .collect();
        Self {
            ctx,
            candidates,
            elections: 0,
            sweeps: 0,
            sweep_timer: None,
        }
    }

    /// One sweep, then the next one armed. The timer is a `send_after` task: if this actor is
    /// killed, it fires into a dead mailbox and its replacement arms its own.
    fn sweep(&mut self, myself: &ActorRef<LeaderMsg>) {
        let ctx = &self.ctx;
        let report = ctx.with_work(|work, op| work.sweep(op, |id, epoch| ctx.is_live(id, epoch)));
        self.sweeps += 1;
        if report != crate::work::Sweep::default() {
            tracing::info!(
                zombies = report.zombies_reset,
                orphans = report.orphans_reassigned,
                leases = report.leases_reaped,
                "sweep took work back"
            );
        }
        let interval = ctx.config.sweep_interval;
        self.sweep_timer = Some(myself.send_after(interval, || LeaderMsg::Sweep));
    }

    /// Keeps the current leader if it is still a live candidate, elects a new one otherwise.
    fn ensure_leader(&mut self) {
        let record = self.ctx.leadership.record();
        let current_ok = record.slot.as_ref().is_some_and(|slot| {
            slot.status().is_alive()
                && self
                    .candidates
                    .get(&slot.epoch)
                    .is_some_and(|c| Arc::ptr_eq(c, slot))
        });
        if current_ok {
            return;
        }
        // Drop departed candidates from the front only (their `Left` may still be on its way);
        // a full sweep would make every election O(n).
        while let Some(first) = self.candidates.first_entry() {
            if first.get().status().is_alive() {
                break;
            }
            first.remove();
        }
        let pick = self
            .candidates
            .values()
            .find(|slot| slot.status() == InstanceStatus::Active)
            .or_else(|| {
                self.candidates
                    .values()
                    .find(|slot| slot.status().is_alive())
            })
            .cloned();
        if pick.is_none() && record.slot.is_none() {
            return; // still vacant: nothing changes, the term stays
        }
        let term = Term(self.ctx.leadership.term().0 + 1);
        let now = self.ctx.clock.precise_ms();
        self.ctx.leadership.install(term, pick.clone(), now);
        self.elections += 1;
        let previous = record.slot.as_ref().map(|s| s.id.clone());
        let kind = if pick.is_some() {
            EventKind::LeaderElected
        } else {
            EventKind::LeaderVacant
        };
        match &pick {
            Some(slot) => tracing::info!(
                leader = %slot.id,
                epoch = slot.epoch.0,
                term = term.0,
                previous = previous.as_ref().map(|p| p.as_str()),
                "leader elected"
            ),
            None => tracing::info!(term = term.0, "leader vacant: no live instance"),
        }
        let mut event = Event::new(kind, term, self.ctx.clock.wall_ms(now));
        event.instance_id = pick.as_ref().map(|s| s.id.clone());
        event.epoch = pick.as_ref().map(|s| s.epoch);
        event.previous_leader = previous;
        self.ctx.events.publish(event);
    }

    fn view(&self) -> LeaderView {
        let clock = &self.ctx.clock;
        self.ctx.leadership.view(|ms| clock.wall_ms(ms))
    }
}

impl Actor for LeaderActor {
    type Msg = LeaderMsg;
    type State = LeaderState;
    type Arguments = Arc<ClusterContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<ClusterContext>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = LeaderState::rebuild(ctx);
        state.ensure_leader();
        tracing::debug!(
            candidates = state.candidates.len(),
            term = state.ctx.leadership.term().0,
            "LeaderActor started"
        );
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let interval = state.ctx.config.sweep_interval;
        state.sweep_timer = Some(myself.send_after(interval, || LeaderMsg::Sweep));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.sweep_timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LeaderMsg::Joined(slot, reply) => {
                if slot.status().is_alive() {
                    state.candidates.insert(slot.epoch, slot);
                }
                state.ensure_leader();
                let _ = reply.send(state.view());
            }
            LeaderMsg::Restored(slots, reply) => {
                for slot in slots {
                    if slot.status().is_alive() {
                        state.candidates.insert(slot.epoch, slot);
                    }
                }
                state.ensure_leader();
                let _ = reply.send(state.view());
            }
            LeaderMsg::Left(slot) => {
                if state
                    .candidates
                    .get(&slot.epoch)
                    .is_some_and(|c| Arc::ptr_eq(c, &slot))
                {
                    state.candidates.remove(&slot.epoch);
                }
                state.ensure_leader();
            }
            #[cfg(feature = "chaos")]
            LeaderMsg::Inspect(reply) => {
                let _ = reply.send(LeaderActorView {
                    leader: state.view(),
                    candidates: state.candidates.len(),
                    elections: state.elections,
                    sweeps: state.sweeps,
                });
            }
            LeaderMsg::Sweep => state.sweep(&myself),
            #[cfg(feature = "fault-injection")]
            LeaderMsg::Crash => panic!("injected crash of LeaderActor"),
        }
        Ok(())
    }
}
