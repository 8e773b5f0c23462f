//! `InstanceActor`: one per registered instance. It owns the instance's TTL timer and its state
//! machine Active → Suspect (at TTL − grace) → Expired (at TTL).
//!
//! Heartbeats never reach this actor (they touch the shared slot directly, see
//! [`crate::registry`]). Instead the actor sleeps until the next moment something could change —
//! the suspect point or the deadline of the last heartbeat it knows of — wakes, re-reads the
//! slot and either re-arms (a heartbeat came meanwhile) or moves the instance on. With steady
//! heartbeats it wakes about once per TTL − grace, whatever the heartbeat rate.
//!
//! Timers are `ractor::time::send_after` tasks, which outlive a killed actor. That is harmless
//! by design: a stray `Tick` finds a dead mailbox, and a live actor treats every `Tick` as "re-read
//! the slot", never as "the deadline passed". Graceful stops abort the timer.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "chaos")]
use ractor::RpcReplyPort;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};

use super::ClusterContext;
use crate::clock::MonoMs;
use crate::events::EventKind;
use crate::model::InstanceStatus;
#[cfg(feature = "chaos")]
use crate::model::{Epoch, InstanceId};
use crate::registry::{InstanceSlot, Transition};

/// The InstanceActor behaviour.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstanceActor;

/// Messages an InstanceActor understands.
#[derive(Debug)]
pub enum InstanceMsg {
    /// The timer fired: re-read the slot and decide.
    Tick,
    /// The slot's TTL or last-seen time changed outside a heartbeat (re-registration): re-arm.
    Reschedule,
    /// "What do you hold?"
    #[cfg(feature = "chaos")]
    Inspect(RpcReplyPort<InstanceActorView>),
    /// Fault injection for chaos tests: the handler panics.
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// What an InstanceActor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "chaos")]
pub struct InstanceActorView {
    /// The instance.
    pub id: InstanceId,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its status as the actor reads it.
    pub status: InstanceStatus,
    /// When the timer is armed to fire (monotonic ms), if armed.
    pub armed_for: Option<MonoMs>,
    /// How many times this actor (this incarnation) woke up.
    pub wakeups: u64,
}

/// Start arguments: the shared context and the slot to watch.
#[derive(Debug)]
pub struct InstanceArgs {
    /// Shared context.
    pub ctx: Arc<ClusterContext>,
    /// The slot this actor runs.
    pub slot: Arc<InstanceSlot>,
}

/// The actor's own state: its timer.
#[derive(Debug)]
pub struct InstanceState {
    ctx: Arc<ClusterContext>,
    slot: Arc<InstanceSlot>,
    timer: Option<JoinHandle<Result<(), MessagingErr<InstanceMsg>>>>,
    armed_for: Option<MonoMs>,
    wakeups: u64,
}

impl InstanceState {
    fn arm(&mut self, myself: &ActorRef<InstanceMsg>, at: MonoMs, now: MonoMs) {
        if self.armed_for == Some(at) && self.timer.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(old) = self.timer.take() {
            old.abort();
        }
        let delay = Duration::from_millis(at.saturating_sub(now));
        self.timer = Some(myself.send_after(delay, || InstanceMsg::Tick));
        self.armed_for = Some(at);
    }

    /// Re-reads the slot and moves the instance on, or re-arms the timer.
    fn evaluate(&mut self, myself: &ActorRef<InstanceMsg>) {
        self.wakeups += 1;
        if !self.ctx.is_active() {
            // Deposed (high availability): the successor judges this instance now. Nothing is
            // expired or marked; the coordinator is being torn down.
            self.armed_for = None;
            return;
        }
        let now = self.ctx.clock.precise_ms();
        let grace = self.ctx.grace_ms();
        let (status, seen) = self.slot.liveness();
        match self.slot.expire_if_due(now) {
            Transition::Done => {
                // Debug: the instance.expired event is what `vigil serve` logs. Times in wall
                // clock: the monotonic milliseconds mean nothing outside the process.
                tracing::debug!(
                    instance = %self.slot.id,
                    epoch = self.slot.epoch.0,
                    last_seen = %crate::clock::iso_ms(self.ctx.clock.wall_ms(seen)),
                    silent_ms = now.saturating_sub(seen),
                    "instance expired"
                );
                self.armed_for = None;
                myself.stop(Some("expired".into()));
            }
            Transition::AlreadyTerminal(status) => {
                self.armed_for = None;
                myself.stop(Some(format!("{status:?}")));
            }
            Transition::NotDue(deadline) => {
                let suspect_at = self.slot.suspect_at(seen, grace);
                if status == InstanceStatus::Active && now < suspect_at {
                    self.arm(myself, suspect_at, now);
                    return;
                }
                if self.slot.mark_suspect(now, grace) {
                    tracing::debug!(instance = %self.slot.id, epoch = self.slot.epoch.0, "instance suspect");
                    self.ctx
                        .publish_instance_event(EventKind::InstanceSuspect, &self.slot);
                }
                // A heartbeat may have landed since the read above; the deadline computed by
                // `expire_if_due` already accounts for the latest one it saw, and a later one
                // only pushes it further, which the next wake-up will notice.
                self.arm(myself, deadline, now);
            }
        }
    }
}

impl Actor for InstanceActor {
    type Msg = InstanceMsg;
    type State = InstanceState;
    type Arguments = InstanceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: InstanceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(InstanceState {
            ctx: args.ctx,
            slot: args.slot,
            timer: None,
            armed_for: None,
            wakeups: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.evaluate(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
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
            InstanceMsg::Tick => state.evaluate(&myself),
            InstanceMsg::Reschedule => {
                state.armed_for = None;
                state.evaluate(&myself);
            }
            #[cfg(feature = "chaos")]
            InstanceMsg::Inspect(reply) => {
                let _ = reply.send(InstanceActorView {
                    id: state.slot.id.clone(),
                    epoch: state.slot.epoch,
                    status: state.slot.status(),
                    armed_for: state.armed_for,
                    wakeups: state.wakeups,
                });
            }
            #[cfg(feature = "fault-injection")]
            InstanceMsg::Crash => panic!("injected crash of InstanceActor {}", state.slot.id),
        }
        Ok(())
    }
}

/// The InstanceActor running `slot`, as its typed reference.
pub(crate) fn actor_of(
    slot: &crate::registry::InstanceSlot,
) -> Option<ractor::ActorRef<InstanceMsg>> {
    slot.actor().map(ractor::ActorRef::from)
}
