//! `LeaderActor`: elects one leader among live instances and keeps the term.
//!
//! ## The election rule
//!
//! The leader is the live instance with the **oldest epoch** (the earliest registration still
//! alive), preferring an `Active` one over a `Suspect` one. A leader keeps leading until it
//! expires or unregisters — a newer or healthier instance never deposes it — so leadership only
//! moves when it must. Because epochs are unique, the rule is deterministic.
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

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

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
    /// "What do you hold?"
    Inspect(RpcReplyPort<LeaderActorView>),
    /// Fault injection for chaos tests: the handler panics.
    Crash,
}

/// What the LeaderActor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderActorView {
    /// The leadership.
    pub leader: LeaderView,
    /// How many live candidates it tracks.
    pub candidates: usize,
    /// Elections this incarnation ran.
    pub elections: u64,
}

/// The LeaderActor's own state: the candidates, ordered by epoch.
#[derive(Debug)]
pub struct LeaderState {
    ctx: Arc<ClusterContext>,
    candidates: BTreeMap<Epoch, Arc<InstanceSlot>>,
    elections: u64,
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
        }
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
        self.ctx.events.publish(Event {
            seq: 0,
            kind,
            instance_id: pick.as_ref().map(|s| s.id.clone()),
            epoch: pick.as_ref().map(|s| s.epoch),
            term,
            previous_leader: previous,
            last_seen_ms: None,
            at_ms: self.ctx.clock.wall_ms(now),
        });
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

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
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
            LeaderMsg::Inspect(reply) => {
                let _ = reply.send(LeaderActorView {
                    leader: state.view(),
                    candidates: state.candidates.len(),
                    elections: state.elections,
                });
            }
            LeaderMsg::Crash => panic!("injected crash of LeaderActor"),
        }
        Ok(())
    }
}
