//! The [`Coordinator`] handle: what services embed and what the server calls.
//!
//! Two paths meet here:
//!
//! * the **hot path** — [`Coordinator::heartbeat_now`] — is a registry lookup and one atomic
//!   compare-and-swap on the instance's slot. It never waits on an actor, never allocates and
//!   never fails;
//! * the **control path** — register, unregister — goes to the `ClusterSupervisor` as a
//!   message, with [`Config::call_timeout`] as the bound on the wait. Reads (`state`,
//!   `check_health`) are served from the shared registry without a mailbox round trip.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::actors::ClusterContext;
use crate::actors::supervisor::{ClusterSupervisor, SupervisorMsg};
use crate::config::Config;
use crate::error::Error;
use crate::events::Event;
use crate::model::{
    Authority, HealthReport, Heartbeat, InstanceId, InstanceStatus, InstanceView, LeaderView,
    RegisterRequest, Registration, StateQuery, Unregistration,
};
use crate::registry::Leadership;

mod admin;
mod bench;
#[cfg(test)]
mod claim_liveness;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod recovery;
#[cfg(test)]
mod tests;
mod verify;
mod work;

#[cfg(feature = "server")]
pub(crate) use admin::check_text;
pub use recovery::{EPOCH_SHIFT, RecoveryReport, TERM_GAP_AFTER_RECOVERY};
pub use verify::StoreCheck;
pub use work::{LeaseOutcome, LeaseOwner};

/// A snapshot of the cluster.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Registered instances, ordered by id.
    pub instances: Vec<InstanceView>,
    /// How many instances are registered in all (`instances` may be limited).
    pub instance_count: usize,
    /// Whether registered instances follow the last one in `instances` (a limited page).
    #[serde(default)]
    pub truncated: bool,
    /// The leader.
    pub leader: LeaderView,
    /// The most recent events, oldest first.
    pub recent_events: Vec<Event>,
}

/// A running coordinator. Cheap to clone; every clone drives the same cluster.
#[derive(Clone, Debug)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: Arc<ClusterContext>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: Mutex<Option<JoinHandle<()>>>,
    ticker: Mutex<Option<crate::clock::Ticker>>,
    recovery: Mutex<Option<RecoveryReport>>,
}

/// The store as [`Coordinator::store_status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// `ok`, `failing` (recent failures, circuit still closed), `open`, `half-open`.
    pub state: &'static str,
    /// Entities changed but not yet written.
    pub pending_entities: usize,
    /// Events waiting for the stream.
    pub pending_events: usize,
}

impl Coordinator {
    /// Validates `config`, starts the liveness clock and the actor tree, and returns the handle.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let started = std::time::Instant::now();
        let persistence = recovery::connect(&config).await?;
        Self::start_on(config, persistence, started, None).await
    }

    /// [`start`](Self::start) as the active coordinator of several (high availability,
    /// docs/ha.md), behind `gate`: once the gate shuts, every call is refused with
    /// [`Error::NotActive`] (−32008 on the wire), and no instance expires, no leader is
    /// elected and no sweep runs. The caller holds the coordinator lease, renews it and moves
    /// the gate's deadline; on losing it, it calls [`abandon`](Self::abandon).
    ///
    /// With a Redis store whose [`fence_epoch`](crate::store::RedisConfig::fence_epoch) is
    /// `Some(e)`, recovery also resumes terms and lease fencing tokens above `e · 2^32`, so
    /// that no value handed out under an earlier epoch is handed out again.
    pub async fn start_gated(config: Config, gate: crate::ActiveGate) -> Result<Self, Error> {
        config.validate()?;
        let started = std::time::Instant::now();
        let persistence = recovery::connect(&config).await?;
        Self::start_on(config, persistence, started, Some(gate)).await
    }

    /// Starts on `store` instead of the configured one (tests of the store's failures).
    #[cfg(test)]
    pub(crate) async fn start_with_store(
        config: Config,
        store: Arc<dyn crate::store::Store>,
        breaker: crate::store::Breaker,
    ) -> Result<Self, Error> {
        config.validate()?;
        let persistence = crate::store::Persistence::new(
            store,
            crate::store::PersistMode::WriteBehind,
            Duration::from_millis(100),
            breaker,
        );
        Self::start_on(
            config,
            Some(Arc::new(persistence)),
            std::time::Instant::now(),
            None,
        )
        .await
    }

    async fn start_on(
        config: Config,
        persistence: Option<Arc<crate::store::Persistence>>,
        started: std::time::Instant,
        gate: Option<crate::ActiveGate>,
    ) -> Result<Self, Error> {
        let floor = recovery::epoch_floor(&config);
        let loaded = match &persistence {
            Some(p) => Some(recovery::load(p, config.recent_events, floor).await?),
            None => None,
        };
        let mut ctx = ClusterContext::new(config, persistence);
        ctx.gate = gate;
        let ctx = Arc::new(ctx);
        let plan = loaded.map(|(snap, terms)| recovery::prepare(&ctx, snap, terms, started, floor));
        let ticker = ctx.clock.spawn_ticker(ctx.config.clock_realtime);
        let (supervisor, supervisor_task) = Actor::spawn(None, ClusterSupervisor, Arc::clone(&ctx))
            .await
            .map_err(|e| Error::Actor(format!("spawning ClusterSupervisor: {e}")))?;
        tracing::info!(
            ttl_ms = ctx.config.ttl.as_millis() as u64,
            grace_ms = ctx.grace_ms(),
            store = ctx
                .persistence
                .as_ref()
                .map_or("memory", |p| p.store.kind()),
            // Whether the liveness clock's ticker got real-time priority (Config::clock_realtime).
            clock = if ticker.realtime() {
                "realtime"
            } else {
                "normal"
            },
            "coordinator started"
        );
        let coordinator = Self {
            inner: Arc::new(Inner {
                ctx,
                supervisor,
                supervisor_task: Mutex::new(Some(supervisor_task)),
                ticker: Mutex::new(Some(ticker)),
                recovery: Mutex::new(None),
            }),
        };
        if let Some(plan) = plan {
            match recovery::finish(&coordinator, plan).await {
                Ok(report) => *coordinator.inner.recovery.lock() = Some(report),
                Err(e) => {
                    coordinator.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(coordinator)
    }

    /// What recovery from the store found, if the coordinator started from one.
    pub fn recovery_report(&self) -> Option<RecoveryReport> {
        self.inner.recovery.lock().clone()
    }

    /// The store: its kind, whether it takes writes, and what waits to be written.
    pub fn store_status(&self) -> StoreStatus {
        match &self.inner.ctx.persistence {
            None => StoreStatus {
                kind: "memory",
                state: "ok",
                pending_entities: 0,
                pending_events: 0,
            },
            Some(p) => {
                let (pending_entities, pending_events) = p.journal.pending();
                StoreStatus {
                    kind: p.store.kind(),
                    state: match p.breaker.state() {
                        crate::store::BreakerState::Closed { failures: 0 } => "ok",
                        crate::store::BreakerState::Closed { .. } => "failing",
                        crate::store::BreakerState::Open { .. } => "open",
                        crate::store::BreakerState::HalfOpen => "half-open",
                    },
                    pending_entities,
                    pending_events,
                }
            }
        }
    }

    /// Fails fast with [`Error::StoreUnavailable`] while the store's circuit is open: a
    /// write-through call checks this before changing anything.
    pub(crate) fn store_ready(&self) -> Result<(), Error> {
        self.ensure_active()?;
        match &self.inner.ctx.persistence {
            Some(p) => p.check_available(),
            None => Ok(()),
        }
    }

    /// Waits until every change made so far is in the store (write-through), at most until
    /// [`Config::store_wait`] after `started` (when the call began), so that the store's answer
    /// always comes before the call timeout. [`Error::NotDurable`] when it does not come: the
    /// caller's change is in memory; the caller decides whether to undo it.
    pub(crate) async fn written(&self, started: tokio::time::Instant) -> Result<(), Error> {
        match &self.inner.ctx.persistence {
            Some(p) => {
                let wait = self.inner.ctx.config.store_wait;
                let durable = p.wait_durable(started + wait);
                let durable = async {
                    match &self.inner.ctx.gate {
                        // Deposed meanwhile: the change lives only in memory about to go.
                        // Its write may have reached the store before the lease was lost, or not:
                        // the outcome is unknown (−32007), not "nothing ran" (−32008).
                        Some(gate) => tokio::select! {
                            result = durable => result,
                            () = gate.closed() => Err(Error::Timeout(
                                wait,
                                "store: this coordinator lost the coordinator lease while \
                                 waiting, so whether the change reached the store is unknown; \
                                 ask the active coordinator",
                            )),
                        },
                        None => durable.await,
                    }
                };
                durable.await.map_err(|e| match e {
                    Error::NotDurable(why) => Error::NotDurable(format!(
                        "{why} (waited up to {} ms); the change is kept in memory and written \
                         when the store is back",
                        wait.as_millis()
                    )),
                    other => other,
                })
            }
            None => Ok(()),
        }
    }

    /// Whether heartbeats are written through to the store one by one.
    pub fn heartbeats_write_through(&self) -> bool {
        self.inner
            .ctx
            .persistence
            .as_ref()
            .is_some_and(|p| p.mode == crate::store::PersistMode::WriteThrough)
    }

    /// The configuration this coordinator runs with.
    pub fn config(&self) -> &Config {
        &self.inner.ctx.config
    }

    /// Registers an instance, or refreshes it if it is alive (same epoch, new roles, metadata
    /// and TTL, counted as a heartbeat). A registration after expiry or unregistration starts a
    /// new epoch. Invalid input is refused with [`Error::Invalid`] and changes nothing.
    ///
    /// With a store, the answer comes once the store acknowledged the registration; if it does
    /// not within [`Config::store_wait`], the registration stands (in memory) and the answer is
    /// [`Error::NotDurable`] — registering again is a refresh, so a retry is safe.
    pub async fn register(&self, request: RegisterRequest) -> Result<Registration, Error> {
        self.register_as(request, &Authority::Any).await
    }

    /// [`register`](Self::register) on `authority`: a live instance bound to another principal
    /// is refused with [`Error::Forbidden`]; a new one is bound to `authority`'s principal.
    pub(crate) async fn register_as(
        &self,
        request: RegisterRequest,
        authority: &Authority,
    ) -> Result<Registration, Error> {
        let started = tokio::time::Instant::now();
        let ctx = &self.inner.ctx;
        let mut valid = request.validate(&ctx.config.limits, ctx.config.ttl)?;
        valid.authority = authority.clone();
        self.ensure_running()?;
        self.store_ready()?;
        let reply = self
            .inner
            .supervisor
            .call(
                |reply| SupervisorMsg::Register(valid, reply),
                Some(ctx.config.call_timeout),
            )
            .await;
        let registration = Self::unwrap_call(reply, ctx.config.call_timeout, "ClusterSupervisor")??;
        self.written(started).await?;
        Ok(registration)
    }

    /// Records a heartbeat. See [`heartbeat_now`](Self::heartbeat_now); this is the same call
    /// for async callers.
    ///
    /// With [`PersistMode::WriteThrough`](crate::store::PersistMode::WriteThrough) this is where
    /// the heartbeat is also written to the store, one script call each (the ClaudeBench way);
    /// a failed write is counted against the store's breaker but the answer still comes from
    /// memory.
    pub async fn heartbeat(&self, id: &str) -> Heartbeat {
        let beat = self.heartbeat_now(id);
        self.write_through(id, beat).await
    }

    /// [`heartbeat`](Self::heartbeat) on `authority`: [`Error::Forbidden`] (and nothing
    /// recorded) for a live instance bound to another principal.
    #[cfg(feature = "server")]
    pub(crate) async fn heartbeat_as(
        &self,
        id: &str,
        authority: &Authority,
    ) -> Result<Heartbeat, Error> {
        let beat = self.heartbeat_now_as(id, authority)?;
        Ok(self.write_through(id, beat).await)
    }

    /// Writes a heartbeat that was just recorded through to the store, in write-through mode.
    async fn write_through(&self, id: &str, beat: Heartbeat) -> Heartbeat {
        if beat.alive {
            self.write_liveness_through(id).await;
        }
        beat
    }

    /// In write-through mode, writes the liveness of `id` — just refreshed — to the store now;
    /// otherwise nothing (write-behind flushes it with the other heartbeats).
    async fn write_liveness_through(&self, id: &str) {
        if let Some(p) = &self.inner.ctx.persistence
            && p.mode == crate::store::PersistMode::WriteThrough
            && let Some(admission) = p.breaker.admit()
        {
            self.write_heartbeat_through(p, admission, id).await;
        }
    }

    async fn write_heartbeat_through(
        &self,
        p: &crate::store::Persistence,
        admission: crate::store::Admission<'_>,
        id: &str,
    ) {
        let ctx = &self.inner.ctx;
        let Some(write) = ctx.registry.get(id).map(|e| {
            let (status, seen) = e.cell.liveness();
            let now = ctx.clock.precise_ms();
            crate::store::HeartbeatWrite {
                id: e.key().clone(),
                last_seen_ms: ctx.clock.wall_ms(seen),
                status,
                expire_in_ms: e.slot.deadline_after(seen).saturating_sub(now),
            }
        }) else {
            return;
        };
        match p.store.heartbeat(&write).await {
            Ok(()) => {
                admission.success();
                p.store_ok("heartbeat");
            }
            Err(e) if e.is_fenced() => p.note_fenced("heartbeat", &e),
            Err(e) => {
                let opened = admission.failure();
                p.store_failed("heartbeat", &e.to_string(), opened);
            }
        }
    }

    /// The hot path: records a heartbeat of `id` and answers whether it is alive and whether it
    /// leads. An unknown, expired or unregistered id is `alive: false` and stays so — a
    /// heartbeat never registers. Runs in well under a microsecond: one map lookup, one
    /// relaxed clock read and at most one compare-and-swap (plus, for the first heartbeat
    /// that moves an instance after a write-behind flush, two atomic ORs listing it for the
    /// next); no allocation, no lock, no await.
    #[inline]
    pub fn heartbeat_now(&self, id: &str) -> Heartbeat {
        let ctx = &*self.inner.ctx;
        // Read the term before the slot's leadership mark (see `Leadership::install`).
        let term = ctx.leadership.term();
        let Some(entry) = ctx.registry.get(id) else {
            return Heartbeat {
                alive: false,
                is_leader: false,
                term,
            };
        };
        let cell = &entry.cell;
        let alive = cell.touch(ctx.clock.heartbeat_stamp(), ctx.clock.coarse_ms());
        Heartbeat {
            alive,
            is_leader: alive && Leadership::leads(cell, term),
            term,
        }
    }

    /// Refuses, with [`Error::Forbidden`], a worker `authority` acting as a live instance bound
    /// to another principal (checked before the rate limiter, so that another principal's
    /// refused heartbeats never spend the instance's budget). [`Authority::Any`] passes at once.
    #[cfg(feature = "server")]
    pub(crate) fn may_act_as(&self, id: &str, authority: &Authority) -> Result<(), Error> {
        if *authority == Authority::Any {
            return Ok(());
        }
        let Some(entry) = self.inner.ctx.registry.get(id) else {
            return Ok(());
        };
        let owner = entry.slot.owner.as_deref();
        if authority.permits(owner) || !entry.cell.status().is_alive() {
            return Ok(());
        }
        Err(Error::Forbidden {
            instance: id.to_string(),
            reason: authority.refusal(owner),
        })
    }

    /// [`heartbeat_now`](Self::heartbeat_now) on `authority`, checked on the same registry
    /// entry it touches: [`Error::Forbidden`] (and nothing recorded) for a live instance bound
    /// to another principal. With [`Authority::Any`] it is `heartbeat_now` itself.
    #[inline]
    #[cfg(feature = "server")]
    pub(crate) fn heartbeat_now_as(
        &self,
        id: &str,
        authority: &Authority,
    ) -> Result<Heartbeat, Error> {
        if *authority == Authority::Any {
            return Ok(self.heartbeat_now(id));
        }
        let ctx = &*self.inner.ctx;
        let term = ctx.leadership.term();
        let Some(entry) = ctx.registry.get(id) else {
            return Ok(Heartbeat {
                alive: false,
                is_leader: false,
                term,
            });
        };
        let owner = entry.slot.owner.as_deref();
        if !authority.permits(owner) && entry.cell.status().is_alive() {
            return Err(Error::Forbidden {
                instance: id.to_string(),
                reason: authority.refusal(owner),
            });
        }
        let cell = &entry.cell;
        let alive = cell.touch(ctx.clock.heartbeat_stamp(), ctx.clock.coarse_ms());
        Ok(Heartbeat {
            alive,
            is_leader: alive && Leadership::leads(cell, term),
            term,
        })
    }

    /// Unregisters `id`: its tasks go back to pending and its leases are released. Answers
    /// `unregistered: false` for an unknown or already expired id (not an error). A malformed
    /// id is [`Error::Invalid`]. With a store, a departure the store does not acknowledge in
    /// time stands (in memory) and is answered [`Error::NotDurable`].
    pub async fn unregister(&self, id: &str) -> Result<Unregistration, Error> {
        self.unregister_as(id, &Authority::Any).await
    }

    /// [`unregister`](Self::unregister) on `authority`: [`Error::Forbidden`] for a live
    /// instance bound to another principal.
    pub(crate) async fn unregister_as(
        &self,
        id: &str,
        authority: &Authority,
    ) -> Result<Unregistration, Error> {
        let started = tokio::time::Instant::now();
        let ctx = &self.inner.ctx;
        let id = InstanceId::parse(id, &ctx.config.limits)?;
        self.ensure_running()?;
        self.store_ready()?;
        let reply = self
            .inner
            .supervisor
            .call(
                |reply| SupervisorMsg::Unregister(id, authority.clone(), reply),
                Some(ctx.config.call_timeout),
            )
            .await;
        let unregistration =
            Self::unwrap_call(reply, ctx.config.call_timeout, "ClusterSupervisor")??;
        if unregistration.unregistered {
            self.written(started).await?;
        }
        Ok(unregistration)
    }

    /// A snapshot of every instance, the leader and the recent events.
    pub fn state(&self) -> ClusterState {
        self.state_with(&StateQuery::default())
    }

    /// A snapshot limited by `query`: one instance, or at most `limit` instances (by id, those
    /// after `after` when it is given) and `limit` recent events. The page is read off the
    /// ordered ids from the cursor: a page of 100 out of a million costs a hundred lookups, not
    /// a pass over the million.
    pub fn state_with(&self, query: &StateQuery) -> ClusterState {
        let ctx = &self.inner.ctx;
        let term = ctx.leadership.term();
        let clock = &ctx.clock;
        let view = |slot: &crate::registry::InstanceSlot| {
            let info = slot.info();
            let (status, seen) = slot.liveness();
            InstanceView {
                id: slot.id.clone(),
                epoch: slot.epoch,
                status,
                roles: info.roles,
                metadata: info.metadata,
                ttl_ms: slot.ttl_ms(),
                last_seen_ms: clock.wall_ms(seen),
                registered_at_ms: clock.wall_ms(info.registered_at),
                is_leader: Leadership::leads(slot, term),
                owner: slot.owner.as_deref().map(str::to_string),
            }
        };
        let limit = query.limit.unwrap_or(usize::MAX);
        let (instances, truncated) = match &query.instance_id {
            Some(id) => {
                // Cloned out of the map first: no registry guard is held while viewing.
                let slot = ctx
                    .registry
                    .get(id.as_str())
                    .map(|entry| entry.slot.clone());
                (slot.map(|s| view(&s)).into_iter().collect(), false)
            }
            // `limit: 0` asks for the leader and the count only (the worker client's election
            // does, at every change of term): no walk over the registry.
            None if limit == 0 => (Vec::new(), !ctx.registry.is_empty()),
            None => {
                // Off the ordered ids, from the cursor: the page's cost, not the registry's.
                use std::ops::Bound;
                let after = query.after.as_deref().map(InstanceId::cursor);
                let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut picked = Vec::with_capacity(limit.min(1024));
                let mut truncated = false;
                let order = ctx.registry_order.read();
                for id in order.range::<InstanceId, _>((from, Bound::Unbounded)) {
                    // Cloned out of the map first: no registry guard is held while viewing.
                    let Some(slot) = ctx.registry.get(id.as_str()).map(|e| e.slot.clone()) else {
                        continue;
                    };
                    if picked.len() == limit {
                        truncated = true;
                        break;
                    }
                    picked.push(slot);
                }
                drop(order);
                (picked.iter().map(|slot| view(slot)).collect(), truncated)
            }
        };
        ClusterState {
            instances,
            instance_count: ctx.registry.len(),
            truncated,
            leader: ctx.leadership.view(|ms| clock.wall_ms(ms)),
            recent_events: ctx.events.recent(limit.min(ctx.config.recent_events)),
        }
    }

    /// Sorts registered instances into those heard from within `timeout` (default: the
    /// coordinator's TTL) and those silent for longer. Reports only: an instance expires on its
    /// own TTL, not on a caller's impatience.
    pub fn check_health(&self, timeout: Option<Duration>) -> HealthReport {
        let ctx = &self.inner.ctx;
        let timeout_ms = timeout.unwrap_or(ctx.config.ttl).as_millis() as u64;
        let now = ctx.clock.precise_ms();
        let mut report = HealthReport::default();
        for entry in ctx.registry.iter() {
            let (status, seen) = entry.cell.liveness();
            let id = entry.key().clone();
            if status.is_alive() && now.saturating_sub(seen) <= timeout_ms {
                report.healthy.push(id);
            } else {
                report.failed.push(id);
            }
        }
        report.healthy.sort();
        report.failed.sort();
        report
    }

    /// Subscribes to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.ctx.events.subscribe()
    }

    /// Whether `id` is registered (alive or between its expiry and its removal).
    #[cfg(feature = "server")]
    pub(crate) fn is_registered(&self, id: &str) -> bool {
        self.inner.ctx.registry.contains_key(id)
    }

    /// How many instances are registered.
    pub fn instance_count(&self) -> usize {
        self.inner.ctx.registry.len()
    }

    /// The leader and the term, without the instance list.
    pub fn leader_view(&self) -> LeaderView {
        let ctx = &self.inner.ctx;
        ctx.leadership.view(|ms| ctx.clock.wall_ms(ms))
    }

    /// Counts of registered instances by status (`active`, `suspect`, `expired`, `unregistered`;
    /// the last two only for the moment between the transition and the removal). Kept by every
    /// transition, so this reads four counters whatever the number of instances.
    pub fn instance_counts(&self) -> [(InstanceStatus, usize); 4] {
        let counts = self.inner.ctx.arena.counts();
        [
            InstanceStatus::Active,
            InstanceStatus::Suspect,
            InstanceStatus::Expired,
            InstanceStatus::Unregistered,
        ]
        .map(|s| (s, counts[s as usize]))
    }

    /// Writes everything pending to the store now, heartbeat timestamps included, and waits for
    /// the store to acknowledge (a no-op without a store).
    pub async fn flush(&self) -> Result<(), Error> {
        let ctx = &self.inner.ctx;
        if ctx.persistence.is_none() {
            return Ok(());
        }
        let timeout = ctx.config.call_timeout;
        let persister = self
            .persister()
            .await
            .ok_or_else(|| Error::StoreUnavailable("the Persister is not running".into()))?;
        match persister
            .call(
                crate::actors::persister::PersisterMsg::FlushAll,
                Some(timeout),
            )
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(Error::StoreUnavailable(e)),
            Ok(_) => Err(Error::Timeout(timeout, "Persister")),
            Err(e) => Err(Error::Actor(e.to_string())),
        }
    }

    /// Stops at once without the final flush (see `Faults::crash`).
    #[cfg(feature = "chaos")]
    pub(crate) async fn crash(&self) {
        self.abandon().await;
    }

    /// Stops at once, **without** the final flush, and drops the cluster from memory: for a
    /// coordinator that lost the coordinator lease (high availability, docs/ha.md), whose
    /// writes the store now refuses and whose successor owns the cluster. Shuts its
    /// [`ActiveGate`](crate::ActiveGate) first. Idempotent; a no-op after
    /// [`shutdown`](Self::shutdown).
    pub async fn abandon(&self) {
        let ctx = &self.inner.ctx;
        if let Some(gate) = &ctx.gate {
            gate.close();
        }
        if !ctx.begin_shutdown() {
            return;
        }
        if let Some(persister) = self.persister().await {
            persister.kill();
            let _ = persister.wait(Some(ctx.config.call_timeout)).await;
        }
        self.stop_actors().await;
    }

    /// Stops the actor tree and the clock. Idempotent. Afterwards every heartbeat answers
    /// `alive: false` and control calls fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) {
        let ctx = &self.inner.ctx;
        if !ctx.begin_shutdown() {
            return;
        }
        if ctx.persistence.is_some() {
            match self.flush().await {
                Ok(()) => tracing::info!("store flushed"),
                Err(e) => {
                    tracing::error!(error = %e, "final store flush failed; unwritten changes are lost")
                }
            }
        }
        self.stop_actors().await;
    }

    async fn stop_actors(&self) {
        let ctx = &self.inner.ctx;
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(Some("shutdown".into()), Some(ctx.config.call_timeout * 2))
            .await;
        let task = self.inner.supervisor_task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(ticker) = self.inner.ticker.lock().take() {
            ticker.stop();
        }
        // Nothing is registered any more: the counts by status say so, whatever still holds
        // a slot (the leadership record keeps its leader's).
        for entry in ctx.registry.iter() {
            entry.slot.uncount();
        }
        ctx.registry.clear();
        ctx.registry_order.write().clear();
        tracing::info!("coordinator shut down");
    }

    /// The current Persister, when there is a store (it changes when one is restarted).
    async fn persister(&self) -> Option<ActorRef<crate::actors::persister::PersisterMsg>> {
        let timeout = self.inner.ctx.config.call_timeout;
        match self
            .inner
            .supervisor
            .call(SupervisorMsg::Persister, Some(timeout))
            .await
        {
            Ok(CallResult::Success(persister)) => persister,
            _ => None,
        }
    }

    fn ctx(&self) -> &ClusterContext {
        &self.inner.ctx
    }

    fn ensure_running(&self) -> Result<(), Error> {
        if self.inner.ctx.is_shutting_down() {
            Err(Error::ShutDown)
        } else {
            self.ensure_active()
        }
    }

    /// [`Error::NotActive`] once the coordinator's [`ActiveGate`](crate::ActiveGate) shut (a
    /// coordinator started without one is always active). One atomic load and a clock read.
    #[inline]
    pub fn ensure_active(&self) -> Result<(), Error> {
        if self.inner.ctx.is_active() {
            Ok(())
        } else {
            Err(Error::NotActive {
                active: None,
                epoch: None,
            })
        }
    }

    /// Whether the store refused a write as fenced (another coordinator took the lease), as a
    /// watch that turns `true` once and stays so; `None` without a store.
    pub fn fenced(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.inner.ctx.persistence.as_ref().map(|p| p.fenced())
    }

    fn unwrap_call<T>(
        reply: Result<CallResult<T>, ractor::MessagingErr<SupervisorMsg>>,
        timeout: Duration,
        who: &'static str,
    ) -> Result<T, Error> {
        match reply {
            Ok(CallResult::Success(value)) => Ok(value),
            Ok(CallResult::Timeout) => Err(Error::Timeout(timeout, who)),
            Ok(CallResult::SenderError) => Err(Error::Actor(format!("{who} dropped the call"))),
            Err(_) => Err(Error::ShutDown),
        }
    }
}
