//! `ClusterSupervisor`: the root of the actor tree.
//!
//! It is the only writer of the registry (inserts on registration, removals on expiry or
//! unregistration), spawns one [`InstanceActor`] per instance and the [`LeaderActor`], and
//! restarts any of them that dies:
//!
//! * an InstanceActor that was killed or panicked while its instance is alive is restarted on
//!   the same slot — the instance's liveness lives in the slot, so heartbeats keep landing while
//!   the actor is down and the new actor carries on from them;
//! * an InstanceActor that stopped because its instance expired (or whose instance turned
//!   terminal meanwhile) is *finalized*: its slot leaves the registry, the LeaderActor is told,
//!   the event is published — exactly once, whoever gets there first;
//! * a LeaderActor that died is restarted; it rebuilds its candidates from the registry and
//!   goes on from the term recorded in the shared leadership.
//!
//! ractor's default `handle_supervisor_evt` stops the supervisor when any child dies; this one
//! overrides it. Children are spawned without global names (the named registry races with
//! kill-then-respawn); the supervisor keeps its own map from actor id to slot.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use tracing::Instrument;

use super::ClusterContext;
use super::instance::{InstanceActor, InstanceArgs, InstanceMsg};
use super::leader::{LeaderActor, LeaderMsg};
use super::persister::{Persister, PersisterArgs, PersisterMsg};
use crate::error::Error;
use crate::events::EventKind;
use crate::model::{
    Authority, InstanceId, InstanceStatus, Registration, Unregistration, ValidRegistration,
};
use crate::registry::{InstanceSlot, Renewal, Transition};

/// The ClusterSupervisor behaviour.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterSupervisor;

/// Messages the ClusterSupervisor understands.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Register (or refresh) an instance.
    Register(ValidRegistration, RpcReplyPort<Result<Registration, Error>>),
    /// Unregister an instance, on an authority that must be allowed to act on it.
    Unregister(
        InstanceId,
        Authority,
        RpcReplyPort<Result<Unregistration, Error>>,
    ),
    /// The current LeaderActor, for inspection and fault injection.
    #[cfg(feature = "fault-injection")]
    LeaderActor(RpcReplyPort<Option<ActorRef<LeaderMsg>>>),
    /// Put back instances recovered from the store (their actors arm their remaining TTL).
    Restore(Vec<RestoredInstance>, RpcReplyPort<usize>),
    /// The current Persister, if there is a store.
    Persister(RpcReplyPort<Option<ActorRef<PersisterMsg>>>),
    /// "What do you hold?"
    #[cfg(feature = "fault-injection")]
    Inspect(RpcReplyPort<SupervisorView>),
}

/// An instance recovered from the store.
#[derive(Debug, Clone)]
pub struct RestoredInstance {
    /// Id.
    pub id: InstanceId,
    /// Epoch.
    pub epoch: crate::model::Epoch,
    /// TTL.
    pub ttl_ms: u64,
    /// Last heartbeat (monotonic ms).
    pub last_seen: crate::clock::MonoMs,
    /// Registered at (monotonic ms).
    pub registered_at: crate::clock::MonoMs,
    /// Roles.
    pub roles: Vec<String>,
    /// Metadata.
    pub metadata: serde_json::Value,
    /// The principal it is bound to.
    pub owner: Option<Arc<str>>,
}

/// What the supervisor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "fault-injection")]
pub struct SupervisorView {
    /// Instances in the registry.
    pub instances: usize,
    /// InstanceActors running.
    pub instance_actors: usize,
    /// InstanceActors restarted after a kill or a panic.
    pub instance_restarts: u64,
    /// LeaderActors restarted after a kill or a panic.
    pub leader_restarts: u64,
    /// Persisters restarted after a kill or a panic.
    pub persister_restarts: u64,
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    ctx: Arc<ClusterContext>,
    children: HashMap<ActorId, Arc<InstanceSlot>>,
    leader: Option<ActorRef<LeaderMsg>>,
    persister: Option<ActorRef<PersisterMsg>>,
    instance_restarts: u64,
    leader_restarts: u64,
    persister_restarts: u64,
    /// Unit tests only: runs right after a re-registration's liveness check, where a
    /// concurrent heartbeat may land.
    #[cfg(test)]
    after_refresh: tests::Hook,
}

impl SupervisorState {
    fn new(ctx: Arc<ClusterContext>) -> Self {
        Self {
            ctx,
            children: HashMap::new(),
            leader: None,
            persister: None,
            instance_restarts: 0,
            leader_restarts: 0,
            persister_restarts: 0,
            #[cfg(test)]
            after_refresh: tests::Hook::default(),
        }
    }

    async fn spawn_instance(
        &mut self,
        myself: &ActorCell,
        slot: Arc<InstanceSlot>,
    ) -> Result<(), Error> {
        let args = InstanceArgs {
            ctx: Arc::clone(&self.ctx),
            slot: Arc::clone(&slot),
        };
        let (actor, _) = Actor::spawn_linked(None, InstanceActor, args, myself.clone())
            .await
            .map_err(|e| Error::Actor(format!("spawning InstanceActor for {}: {e}", slot.id)))?;
        self.children.insert(actor.get_id(), Arc::clone(&slot));
        slot.set_actor(Some(actor.get_cell()));
        Ok(())
    }

    async fn spawn_leader(&mut self, myself: &ActorCell) -> Result<(), Error> {
        let (leader, _) =
            Actor::spawn_linked(None, LeaderActor, Arc::clone(&self.ctx), myself.clone())
                .await
                .map_err(|e| Error::Actor(format!("spawning LeaderActor: {e}")))?;
        self.leader = Some(leader);
        Ok(())
    }

    async fn spawn_persister(&mut self, myself: &ActorCell) -> Result<(), Error> {
        let Some(persistence) = self.ctx.persistence.clone() else {
            return Ok(());
        };
        let args = PersisterArgs {
            ctx: Arc::clone(&self.ctx),
            persistence,
        };
        let (persister, _) = Actor::spawn_linked(None, Persister, args, myself.clone())
            .await
            .map_err(|e| Error::Actor(format!("spawning Persister: {e}")))?;
        self.persister = Some(persister);
        Ok(())
    }

    async fn restore(&mut self, myself: &ActorCell, instances: Vec<RestoredInstance>) -> usize {
        // Spawned concurrently, a chunk at a time: one by one, 100k actors take seconds.
        let mut restored = Vec::with_capacity(instances.len());
        let mut instances = instances.into_iter().peekable();
        while instances.peek().is_some() {
            let mut spawning = tokio::task::JoinSet::new();
            for r in instances.by_ref().take(1024) {
                let slot = Arc::new(
                    InstanceSlot::new(
                        &self.ctx.arena,
                        r.id.clone(),
                        r.epoch,
                        r.ttl_ms,
                        r.last_seen,
                        r.roles,
                        r.metadata,
                    )
                    .owned_by(r.owner),
                );
                slot.set_registered_at(r.registered_at);
                self.ctx.admit(&slot);
                let args = InstanceArgs {
                    ctx: Arc::clone(&self.ctx),
                    slot: Arc::clone(&slot),
                };
                let supervisor = myself.clone();
                spawning.spawn(async move {
                    let spawned = Actor::spawn_linked(None, InstanceActor, args, supervisor).await;
                    (slot, spawned)
                });
            }
            while let Some(done) = spawning.join_next().await {
                let Ok((slot, spawned)) = done else { continue };
                match spawned {
                    Ok((actor, _)) => {
                        self.children.insert(actor.get_id(), Arc::clone(&slot));
                        slot.set_actor(Some(actor.get_cell()));
                        restored.push(slot);
                    }
                    Err(e) => {
                        tracing::error!(instance = %slot.id, error = %e, "could not restore an instance");
                        self.ctx.evict(&slot);
                    }
                }
            }
        }
        let n = restored.len();
        if let Some(leader) = &self.leader {
            let timeout = self.ctx.config.call_timeout;
            // On failure the LeaderActor is being restarted and rebuilds from the registry.
            let _ = leader
                .call(|reply| LeaderMsg::Restored(restored, reply), Some(timeout))
                .await;
        }
        n
    }

    /// Takes a terminal slot out of the registry, publishes the event, takes back the tasks and
    /// leases the instance held and tells the LeaderActor. Idempotent: only the first call for
    /// a slot does anything. Returns how many tasks were taken back.
    fn finalize(&mut self, slot: &Arc<InstanceSlot>) -> usize {
        let status = slot.status();
        debug_assert!(!status.is_alive());
        if !slot.claim_finalization() {
            return 0;
        }
        self.ctx.evict(slot);
        let kind = match status {
            InstanceStatus::Unregistered => EventKind::InstanceUnregistered,
            _ => EventKind::InstanceExpired,
        };
        self.ctx.publish_instance_event(kind, slot);
        // Taken back in the same step that removed the instance: from here on no claim by it
        // can succeed (claims check liveness under the work lock), so nothing slips between.
        let why = match status {
            InstanceStatus::Unregistered => "instance unregistered",
            _ => "instance expired",
        };
        let reassigned = self
            .ctx
            .with_work(|work, op| work.release_instance(op, &slot.id, slot.epoch, why));
        if reassigned > 0 {
            // Debug: each task taken back is a task.reassigned event.
            tracing::debug!(instance = %slot.id, epoch = slot.epoch.0, reassigned, "tasks taken back");
        }
        if let Some(leader) = &self.leader {
            // If the LeaderActor is down, its replacement rebuilds from the registry, which no
            // longer holds this slot: nothing is lost by a failed send.
            let _ = leader.cast(LeaderMsg::Left(Arc::clone(slot)));
        }
        if let Some(actor) = slot.actor() {
            actor.stop(Some("finalized".into()));
        }
        reassigned
    }

    async fn register(
        &mut self,
        myself: &ActorCell,
        request: ValidRegistration,
    ) -> Result<Registration, Error> {
        let now = self.ctx.clock.precise_ms();
        let ttl_ms = request.ttl.as_millis() as u64;
        // Clone the Arc out so no map guard is held across the awaits below.
        let existing = self
            .ctx
            .registry
            .get(request.id.as_str())
            .map(|e| Arc::clone(&e.slot));
        if let Some(slot) = existing {
            // Another principal's live instance: refused, unless its deadline passed (then the
            // instance is gone and this registration starts a new epoch of its own).
            if !request.authority.permits(slot.owner.as_deref())
                && !matches!(
                    slot.expire_if_due(now),
                    Transition::Done | Transition::AlreadyTerminal(_)
                )
            {
                tracing::debug!(instance = %slot.id, "registration refused: bound to another principal");
                return Err(Error::Forbidden {
                    instance: slot.id.to_string(),
                    reason: request.authority.refusal(slot.owner.as_deref()),
                });
            }
            let verdict =
                slot.refresh(now, request.roles.clone(), request.metadata.clone(), ttl_ms);
            #[cfg(test)]
            self.after_refresh.run(&slot);
            if verdict == Renewal::Renewed {
                if let Some(actor) = super::instance::actor_of(&slot) {
                    let _ = actor.cast(InstanceMsg::Reschedule);
                }
                self.ctx
                    .publish_instance_event(EventKind::InstanceRegistered, &slot);
                return Ok(self.registration(&slot, true));
            }
            // Its deadline had passed (the actor just hasn't woken yet) or it was already
            // terminal; either way the refresh left it terminal, in the same compare-and-swap
            // that judged it, so no heartbeat can revive it now. It is finalized (removed, the
            // LeaderActor told) before this registration starts a new epoch — never left alive
            // beside the new one.
            self.finalize(&slot);
        }
        let limit = self.ctx.config.limits.max_instances;
        if self.ctx.registry.len() >= limit {
            return Err(Error::Capacity(limit));
        }
        let slot = Arc::new(
            InstanceSlot::new(
                &self.ctx.arena,
                request.id.clone(),
                self.ctx.next_epoch(),
                ttl_ms,
                now,
                request.roles,
                request.metadata,
            )
            .owned_by(request.authority.binds()),
        );
        self.ctx.admit(&slot);
        if let Err(e) = self.spawn_instance(myself, Arc::clone(&slot)).await {
            self.ctx.evict(&slot);
            return Err(e);
        }
        // Debug: the instance.registered event is what `vigil serve` logs (once per event).
        tracing::debug!(instance = %slot.id, epoch = slot.epoch.0, ttl_ms, "instance registered");
        self.ctx
            .publish_instance_event(EventKind::InstanceRegistered, &slot);
        if let Some(leader) = &self.leader {
            let timeout = self.ctx.config.call_timeout;
            // On failure the LeaderActor is being restarted; it will see this slot in the
            // registry, and the answer below reads the shared leadership as it stands.
            let _ = leader
                .call(
                    |reply| LeaderMsg::Joined(Arc::clone(&slot), reply),
                    Some(timeout),
                )
                .await;
        }
        Ok(self.registration(&slot, false))
    }

    fn registration(&self, slot: &InstanceSlot, refreshed: bool) -> Registration {
        let term = self.ctx.leadership.term();
        let record = self.ctx.leadership.record();
        Registration {
            registered: true,
            id: slot.id.clone(),
            epoch: slot.epoch,
            refreshed,
            is_leader: crate::registry::Leadership::leads(slot, term),
            leader: record.slot.map(|s| s.id.clone()),
            term,
        }
    }

    fn unregister(
        &mut self,
        id: &InstanceId,
        authority: &Authority,
    ) -> Result<Unregistration, Error> {
        let Some(slot) = self
            .ctx
            .registry
            .get(id.as_str())
            .map(|e| Arc::clone(&e.slot))
        else {
            return Ok(Unregistration::default());
        };
        if slot.status().is_alive() && !authority.permits(slot.owner.as_deref()) {
            tracing::debug!(instance = %slot.id, "unregistration refused: bound to another principal");
            return Err(Error::Forbidden {
                instance: slot.id.to_string(),
                reason: authority.refusal(slot.owner.as_deref()),
            });
        }
        let done = slot.unregister() == Transition::Done;
        if done {
            tracing::debug!(instance = %slot.id, epoch = slot.epoch.0, "instance unregistered");
        }
        let tasks_reassigned = self.finalize(&slot);
        Ok(Unregistration {
            unregistered: done,
            tasks_reassigned,
        })
    }

    async fn child_died(&mut self, myself: &ActorRef<SupervisorMsg>, cell: ActorCell, why: String) {
        let id = cell.get_id();
        if self.persister.as_ref().is_some_and(|p| p.get_id() == id) {
            self.persister = None;
            if self.ctx.is_shutting_down() {
                return;
            }
            self.persister_restarts += 1;
            tracing::warn!(reason = %why, "Persister died; restarting it");
            if let Err(e) = self.spawn_persister(&myself.get_cell()).await {
                tracing::error!(error = %e, "could not restart the Persister");
            }
            return;
        }
        if self.leader.as_ref().is_some_and(|l| l.get_id() == id) {
            self.leader = None;
            if self.ctx.is_shutting_down() {
                return;
            }
            self.leader_restarts += 1;
            tracing::warn!(reason = %why, "LeaderActor died; restarting it");
            if let Err(e) = self.spawn_leader(&myself.get_cell()).await {
                tracing::error!(error = %e, "could not restart the LeaderActor");
            }
            return;
        }
        let Some(slot) = self.children.remove(&id) else {
            return;
        };
        if slot.actor().is_some_and(|a| a.get_id() == id) {
            slot.set_actor(None);
        }
        if !slot.status().is_alive() {
            self.finalize(&slot);
            return;
        }
        if self.ctx.is_shutting_down() {
            return;
        }
        self.instance_restarts += 1;
        tracing::warn!(instance = %slot.id, epoch = slot.epoch.0, reason = %why, "InstanceActor died; restarting it");
        if let Err(e) = self.spawn_instance(&myself.get_cell(), slot).await {
            tracing::error!(error = %e, "could not restart an InstanceActor");
        }
    }
}

impl Actor for ClusterSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<ClusterContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        ctx: Arc<ClusterContext>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState::new(ctx))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.spawn_leader(&myself.get_cell()).await?;
        state.spawn_persister(&myself.get_cell()).await?;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .stop_children_and_wait(Some("shutdown".into()), Some(state.ctx.config.call_timeout))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Register(request, reply) => {
                let span = tracing::info_span!("register", instance = %request.id);
                let result = state
                    .register(&myself.get_cell(), request)
                    .instrument(span)
                    .await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Unregister(id, authority, reply) => {
                let _ = reply.send(state.unregister(&id, &authority));
            }
            #[cfg(feature = "fault-injection")]
            SupervisorMsg::LeaderActor(reply) => {
                let _ = reply.send(state.leader.clone());
            }
            SupervisorMsg::Persister(reply) => {
                let _ = reply.send(state.persister.clone());
            }
            SupervisorMsg::Restore(instances, reply) => {
                let n = state.restore(&myself.get_cell(), instances).await;
                let _ = reply.send(n);
            }
            #[cfg(feature = "fault-injection")]
            SupervisorMsg::Inspect(reply) => {
                let _ = reply.send(SupervisorView {
                    instances: state.ctx.registry.len(),
                    instance_actors: state.children.len(),
                    instance_restarts: state.instance_restarts,
                    leader_restarts: state.leader_restarts,
                    persister_restarts: state.persister_restarts,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let why = reason.unwrap_or_else(|| "terminated".into());
                state.child_died(&myself, cell, why).await;
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                state
                    .child_died(&myself, cell, format!("failed: {err}"))
                    .await;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::model::RegisterRequest;
    use crate::registry::Leadership;

    /// A closure run at a point of the supervisor's code, for unit tests that must place a
    /// concurrent event exactly there.
    #[derive(Default)]
    pub(super) struct Hook(Option<Box<HookFn>>);

    type HookFn = dyn Fn(&InstanceSlot) + Send + Sync;

    impl std::fmt::Debug for Hook {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.0.is_some() {
                "Hook(set)"
            } else {
                "Hook(none)"
            })
        }
    }

    impl Hook {
        pub(super) fn run(&self, slot: &InstanceSlot) {
            if let Some(hook) = &self.0 {
                hook(slot);
            }
        }
    }

    /// A parent for the children of a hand-driven `SupervisorState`: it links them and does
    /// nothing when one stops (no restart, no finalization), so only the calls a test makes
    /// decide.
    struct Inert;

    impl Actor for Inert {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<()>,
            _: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(())
        }

        async fn handle_supervisor_evt(
            &self,
            _: ActorRef<()>,
            _: SupervisionEvent,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn request(ctx: &ClusterContext, id: &str) -> ValidRegistration {
        RegisterRequest::new(id)
            .ttl(Duration::from_secs(1))
            .validate(&ctx.config.limits, ctx.config.ttl)
            .unwrap()
    }

    /// Issue 14, point 10. A worker re-registers at its deadline while one of its heartbeats,
    /// stamped by a coarse clock still a tick behind, lands just after the registration judged
    /// the old epoch dead. The registration used to start a new epoch anyway and leave the old
    /// slot alive outside the registry — still the recorded leader, but no heartbeat could reach
    /// it, so nobody led until it expired a TTL later.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_racing_a_registration_at_the_deadline_leaves_no_orphan_leader() {
        let ctx = Arc::new(ClusterContext::new(Config::default(), None));
        let (parent, parent_task) = Actor::spawn(None, Inert, ()).await.unwrap();
        let cell = parent.get_cell();
        let mut state = SupervisorState::new(Arc::clone(&ctx));
        state.spawn_leader(&cell).await.unwrap();
        let first = state.register(&cell, request(&ctx, "a")).await.unwrap();
        assert!(first.is_leader);
        let old = ctx.registry.get("a").map(|e| Arc::clone(&e.slot)).unwrap();
        // Its InstanceActor stops, so nothing but the registration below judges the old epoch.
        let actor = old.actor().unwrap();
        actor.stop(None);
        for _ in 0..100 {
            if actor.get_status() == ractor::ActorStatus::Stopped {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(actor.get_status(), ractor::ActorStatus::Stopped);
        let deadline = old.deadline_after(old.liveness().1);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            ctx.clock.precise_ms(),
            deadline,
            "re-registering at the deadline"
        );
        // The hot path's heartbeat: stamped `coarse + tick`, judged by the coarse clock, which
        // still reads one tick before the deadline.
        state.after_refresh = Hook(Some(Box::new(move |slot: &InstanceSlot| {
            slot.touch(deadline, deadline - 1);
        })));
        let second = state.register(&cell, request(&ctx, "a")).await.unwrap();
        // The registration waited for the LeaderActor to take its new epoch in (after any
        // departure it sent before): the leadership below is settled.
        let current = ctx.registry.get("a").map(|e| Arc::clone(&e.slot)).unwrap();
        let record = ctx.leadership.record().slot.unwrap();
        let term = ctx.leadership.term();
        assert!(
            Arc::ptr_eq(&record, &current),
            "the leader is epoch {} but the registry holds epoch {} (registration: {second:?})",
            record.epoch.0,
            current.epoch.0,
        );
        assert!(second.is_leader, "{second:?}");
        assert!(
            Leadership::leads(&current, term),
            "heartbeats of a say it leads"
        );
        if !Arc::ptr_eq(&old, &current) {
            assert!(
                !old.status().is_alive(),
                "the replaced epoch is not left alive"
            );
        }
        state.leader.take().unwrap().stop(None);
        parent.stop(None);
        let _ = parent_task.await;
    }
}
