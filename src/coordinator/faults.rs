//! Fault injection for chaos tests (feature `chaos`): find, kill, crash and inspect the actors
//! of a running [`Coordinator`]. Nothing here is needed to run a cluster. The `vigil` binary
//! (feature `cli`) compiles it for `vigil serve --chaos` without making it public: only the
//! `chaos` feature puts it in the API.
//!
//! ```no_run
//! # async fn demo(coordinator: vigil::Coordinator) {
//! let faults = coordinator.faults();
//! faults.kill_instance("worker-1");                  // the supervisor restarts it
//! let view = faults.inspect_supervisor().await.unwrap();
//! println!("{} InstanceActor restarts", view.instance_restarts);
//! # }
//! ```

#[cfg(feature = "chaos")]
use ractor::ActorId;
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message};

use super::Coordinator;
use crate::actors::instance::{InstanceMsg, actor_of};
use crate::actors::leader::LeaderMsg;
use crate::actors::persister::PersisterMsg;
use crate::actors::supervisor::SupervisorMsg;
use crate::error::Error;

#[cfg(feature = "chaos")]
pub use crate::actors::instance::InstanceActorView;
#[cfg(feature = "chaos")]
pub use crate::actors::leader::LeaderActorView;
#[cfg(feature = "chaos")]
pub use crate::actors::persister::PersisterView;
pub use crate::actors::supervisor::SupervisorView;
/// The monotonic reading (ms) of a coordinator's liveness clock at its start, the origin of
/// [`InstanceActorView::armed_for`].
#[cfg(feature = "chaos")]
pub use crate::clock::ORIGIN_MS as CLOCK_ORIGIN_MS;

/// How an actor is struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Killed from outside (`ActorRef::kill`): its handler never runs again.
    Kill,
    /// Its next message handler panics.
    Panic,
}

/// Fault injection on one [`Coordinator`]; see [`Coordinator::faults`].
#[derive(Debug)]
pub struct Faults<'a> {
    coordinator: &'a Coordinator,
}

impl Coordinator {
    /// Fault injection: kill, crash and inspect this coordinator's actors (chaos tests; feature
    /// `chaos`).
    #[cfg(feature = "chaos")]
    pub fn faults(&self) -> Faults<'_> {
        Faults { coordinator: self }
    }

    /// The same, for the `vigil` binary's `chaos.*` methods only: without the `chaos` feature
    /// no embedder can reach it.
    #[cfg(not(feature = "chaos"))]
    pub(crate) fn faults(&self) -> Faults<'_> {
        Faults { coordinator: self }
    }
}

fn strike<M: Message>(actor: Option<ActorRef<M>>, how: Strike, crash: M) -> bool {
    match (actor, how) {
        (Some(actor), Strike::Kill) => {
            actor.kill();
            true
        }
        (Some(actor), Strike::Panic) => actor.cast(crash).is_ok(),
        (None, _) => false,
    }
}

impl Faults<'_> {
    fn timeout(&self) -> std::time::Duration {
        self.coordinator.inner.ctx.config.call_timeout
    }

    fn instance(&self, id: &str) -> Option<ActorRef<InstanceMsg>> {
        let slot = self
            .coordinator
            .inner
            .ctx
            .registry
            .get(id)
            .map(|e| std::sync::Arc::clone(&e.slot))?;
        actor_of(&slot)
    }

    async fn leader(&self) -> Option<ActorRef<LeaderMsg>> {
        match self
            .coordinator
            .inner
            .supervisor
            .call(SupervisorMsg::LeaderActor, Some(self.timeout()))
            .await
        {
            Ok(CallResult::Success(leader)) => leader,
            _ => None,
        }
    }

    /// The id of the InstanceActor running `id`, if it is registered and its actor is up.
    #[cfg(feature = "chaos")]
    pub fn instance_actor(&self, id: &str) -> Option<ActorId> {
        self.instance(id).map(|a| a.get_id())
    }

    /// The id of the current LeaderActor.
    #[cfg(feature = "chaos")]
    pub async fn leader_actor(&self) -> Option<ActorId> {
        self.leader().await.map(|a| a.get_id())
    }

    /// The id of the current Persister (none without a store).
    #[cfg(feature = "chaos")]
    pub async fn persister_actor(&self) -> Option<ActorId> {
        self.coordinator.persister().await.map(|a| a.get_id())
    }

    /// Strikes the InstanceActor of `id`; false when there is none.
    pub fn strike_instance(&self, id: &str, how: Strike) -> bool {
        strike(self.instance(id), how, InstanceMsg::Crash)
    }

    /// Strikes the LeaderActor; false when there is none.
    pub async fn strike_leader(&self, how: Strike) -> bool {
        strike(self.leader().await, how, LeaderMsg::Crash)
    }

    /// Strikes the Persister; false when there is none.
    pub async fn strike_persister(&self, how: Strike) -> bool {
        strike(self.coordinator.persister().await, how, PersisterMsg::Crash)
    }

    /// Kills the InstanceActor of `id` (`Strike::Kill`).
    #[cfg(feature = "chaos")]
    pub fn kill_instance(&self, id: &str) -> bool {
        self.strike_instance(id, Strike::Kill)
    }

    /// What the InstanceActor of `id` holds.
    #[cfg(feature = "chaos")]
    pub async fn inspect_instance(&self, id: &str) -> Result<InstanceActorView, Error> {
        let actor = self
            .instance(id)
            .ok_or_else(|| Error::Actor(format!("no InstanceActor runs {id}")))?;
        match actor.call(InstanceMsg::Inspect, Some(self.timeout())).await {
            Ok(CallResult::Success(view)) => Ok(view),
            Ok(CallResult::Timeout) => Err(Error::Timeout(self.timeout(), "InstanceActor")),
            _ => Err(Error::Actor("the InstanceActor did not answer".into())),
        }
    }

    /// What the supervisor holds.
    pub async fn inspect_supervisor(&self) -> Result<SupervisorView, Error> {
        let timeout = self.timeout();
        let reply = self
            .coordinator
            .inner
            .supervisor
            .call(SupervisorMsg::Inspect, Some(timeout))
            .await;
        Coordinator::unwrap_call(reply, timeout, "ClusterSupervisor")
    }

    /// What the Persister holds (an error without a store).
    #[cfg(feature = "chaos")]
    pub async fn inspect_persister(&self) -> Result<PersisterView, Error> {
        let timeout = self.timeout();
        let persister = self
            .coordinator
            .persister()
            .await
            .ok_or_else(|| Error::Actor("no Persister is running".into()))?;
        match persister.call(PersisterMsg::Inspect, Some(timeout)).await {
            Ok(CallResult::Success(view)) => Ok(view),
            Ok(CallResult::Timeout) => Err(Error::Timeout(timeout, "Persister")),
            _ => Err(Error::Actor("the Persister did not answer".into())),
        }
    }

    /// What the LeaderActor holds.
    #[cfg(feature = "chaos")]
    pub async fn inspect_leader(&self) -> Result<LeaderActorView, Error> {
        let timeout = self.timeout();
        let leader = self
            .leader()
            .await
            .ok_or_else(|| Error::Actor("no LeaderActor is running".into()))?;
        match leader.call(LeaderMsg::Inspect, Some(timeout)).await {
            Ok(CallResult::Success(view)) => Ok(view),
            Ok(CallResult::Timeout) => Err(Error::Timeout(timeout, "LeaderActor")),
            _ => Err(Error::Actor("the LeaderActor did not answer".into())),
        }
    }

    /// Stops at once without the final flush: the Persister is killed first, so the store keeps
    /// exactly what was written up to this moment — what a `SIGKILL` leaves behind. For tests
    /// of recovery.
    #[cfg(feature = "chaos")]
    pub async fn crash(&self) {
        self.coordinator.crash().await;
    }
}
