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
//! ## Who is alive at an election
//!
//! An instance's status says `Active` or `Suspect` until its InstanceActor wakes and records
//! the expiry — which, when many instances expire together, can be a while after their
//! deadlines. So an election judges each candidate by the clock: one whose deadline has passed
//! is dead, and the election records its expiry then and there (the same compare-and-swap its
//! InstanceActor would make; the actor is woken to finish the departure). A mass expiry
//! therefore moves leadership once — to a live instance, or to a vacancy — instead of through a
//! chain of dead candidates, each raising the term.
//!
//! ## Terms
//!
//! Every change of leader, including to "no leader" when the last instance leaves, increases
//! the term by exactly one. Only this actor writes the term, and a restarted LeaderActor starts
//! only after the old one is gone, from the term recorded in the shared
//! [`Leadership`](crate::registry::Leadership) — so there is at most one leader per term, and
//! terms never go back. An election is a synchronous block with no `.await` inside, so a kill
//! can never interrupt it half-way.
//!
//! With a durable store, terms are **reserved** before they are used: the store keeps a term
//! ceiling, and an election installs a term only at or below the ceiling in
//! [`Leadership`](crate::registry::Leadership). When fewer than half a
//! [`TERM_BLOCK`](crate::store::TERM_BLOCK) remain, this actor reserves the next block in the
//! background (a write the store acknowledges before the ceiling moves), so elections never
//! wait on the store. Should the block run out — the store down for that many elections — an
//! election waits: leadership stays as it is (a departed leader answers `alive: false`, so no
//! one is told it leads) and the reservation is retried until the store takes it; the
//! election then runs at once. A restart resumes above the stored ceiling, so no term is ever
//! handed out twice, however many elections happened since the last flush.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};

use super::ClusterContext;
use super::instance::{InstanceMsg, actor_of};
use crate::clock::MonoMs;
use crate::events::{Event, EventKind};
use crate::model::{Epoch, InstanceStatus, LeaderView, Term};
use crate::registry::{InstanceSlot, Transition};
use crate::store::TERM_BLOCK;

/// First wait before retrying a term reservation the store refused; doubled up to
/// [`RESERVE_RETRY_MAX`].
const RESERVE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest wait between two attempts at a term reservation.
const RESERVE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// The store acknowledged a term reservation (the ceiling in the shared leadership has
    /// moved): run an election that was waiting for it.
    TermsReserved,
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
    /// The highest term that may be handed out (`u64::MAX` without a durable store).
    pub term_ceiling: u64,
    /// Whether an election waits for the store to reserve more terms.
    pub waiting_for_terms: bool,
}

/// The LeaderActor's own state: the candidates, ordered by epoch.
#[derive(Debug)]
pub struct LeaderState {
    ctx: Arc<ClusterContext>,
    candidates: BTreeMap<Epoch, Arc<InstanceSlot>>,
    elections: u64,
    sweeps: u64,
    sweep_timer: Option<JoinHandle<Result<(), MessagingErr<LeaderMsg>>>>,
    /// A term reservation under way (it retries until the store takes it).
    reservation: Option<tokio::task::JoinHandle<()>>,
    /// An election found no reserved term left and waits for a reservation.
    waiting_for_terms: bool,
}

impl Drop for LeaderState {
    /// Also when the actor is killed: a reservation of a dead actor must not run on (its
    /// successor starts its own; one that completed meanwhile only raised the stored ceiling).
    fn drop(&mut self) {
        if let Some(task) = self.reservation.take() {
            task.abort();
        }
    }
}

/// Whether `slot` is alive at `now` by the clock, not only by its recorded status. One whose
/// deadline has passed is recorded as expired now — the compare-and-swap its InstanceActor
/// would make on waking (a heartbeat landing first wins, as always) — and its actor is woken to
/// finish the departure (the supervisor finalizes it and this actor hears `Left`).
fn alive_at(slot: &InstanceSlot, now: MonoMs) -> bool {
    let (status, seen) = slot.liveness();
    if !status.is_alive() {
        return false;
    }
    if now < slot.deadline_after(seen) {
        return true;
    }
    match slot.expire_if_due(now) {
        Transition::NotDue(_) => true, // a heartbeat landed meanwhile
        Transition::AlreadyTerminal(_) => false,
        Transition::Done => {
            tracing::debug!(
                instance = %slot.id,
                epoch = slot.epoch.0,
                overdue_ms = now.saturating_sub(slot.deadline_after(seen)),
                "candidate past its deadline: expired at the election"
            );
            if let Some(actor) = actor_of(slot) {
                let _ = actor.cast(InstanceMsg::Tick);
            }
            false
        }
    }
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
            reservation: None,
            waiting_for_terms: false,
        }
    }

    /// One sweep, then the next one armed. The timer is a `send_after` task: if this actor is
    /// killed, it fires into a dead mailbox and its replacement arms its own.
    fn sweep(&mut self, myself: &ActorRef<LeaderMsg>) {
        let ctx = &self.ctx;
        if !ctx.is_active() {
            return; // deposed: the successor sweeps (and nothing re-arms here)
        }
        let report = ctx.with_work(|work, op| {
            work.sweep(op, crate::work::SWEEP_CHUNK, |id, epoch| {
                ctx.is_live(id, epoch)
            })
        });
        self.sweeps += 1;
        if report.more {
            // More is due than one chunk: the next chunk at once, in its own message, so the
            // work lock is held one chunk at a time and other messages interleave.
            tracing::debug!("sweep continues in another chunk");
            if myself.cast(LeaderMsg::Sweep).is_ok() {
                self.log_sweep(report);
                return;
            }
        }
        self.log_sweep(report);
        let interval = ctx.config.sweep_interval;
        self.sweep_timer = Some(myself.send_after(interval, || LeaderMsg::Sweep));
    }

    fn log_sweep(&self, report: crate::work::Sweep) {
        if report.orphans_reassigned + report.zombies_reset + report.leases_reaped > 0 {
            // Debug: each task taken back and lease reaped is an event of its own.
            tracing::debug!(
                zombies = report.zombies_reset,
                orphans = report.orphans_reassigned,
                leases = report.leases_reaped,
                "sweep took work back"
            );
        }
    }

    /// Keeps the current leader if it is still a live candidate, elects a new one otherwise:
    /// the live candidate with the oldest epoch, `Active` before `Suspect`, judged alive at
    /// this moment ([`alive_at`]). Synchronous: no `.await`, so a kill cannot cut it in half.
    fn ensure_leader(&mut self) {
        if !self.ctx.is_active() {
            return; // deposed: the successor elects
        }
        let now = self.ctx.clock.precise_ms();
        let record = self.ctx.leadership.record();
        let current_ok = record.slot.as_ref().is_some_and(|slot| {
            self.candidates
                .get(&slot.epoch)
                .is_some_and(|c| Arc::ptr_eq(c, slot))
                && alive_at(slot, now)
        });
        if current_ok {
            self.waiting_for_terms = false;
            return;
        }
        let pick = self.pick(now);
        if pick.is_none() && record.slot.is_none() {
            self.waiting_for_terms = false;
            return; // still vacant: nothing changes, the term stays
        }
        let term = Term(self.ctx.leadership.term().0 + 1);
        let ceiling = self.ctx.leadership.ceiling();
        if term.0 > ceiling {
            // No reserved term left: an unreserved one could be handed out again after a
            // crash. Leadership stays as it is until the store reserves more.
            if !self.waiting_for_terms {
                tracing::warn!(
                    term = term.0,
                    ceiling,
                    "election waits: no reserved term left until the store takes a reservation"
                );
            }
            self.waiting_for_terms = true;
            return;
        }
        self.waiting_for_terms = false;
        self.ctx.leadership.install(term, pick.clone(), now);
        self.elections += 1;
        let previous = record.slot.as_ref().map(|s| s.id.clone());
        let kind = if pick.is_some() {
            EventKind::LeaderElected
        } else {
            EventKind::LeaderVacant
        };
        match &pick {
            // Debug: the event (leader.elected / leader.vacant) is what `vigil serve` logs.
            Some(slot) => tracing::debug!(
                leader = %slot.id,
                epoch = slot.epoch.0,
                term = term.0,
                previous = previous.as_ref().map(|p| p.as_str()),
                "leader elected"
            ),
            None => tracing::debug!(term = term.0, "leader vacant: no live instance"),
        }
        let mut event = Event::new(kind, term, self.ctx.clock.wall_ms(now));
        event.instance_id = pick.as_ref().map(|s| s.id.clone());
        event.epoch = pick.as_ref().map(|s| s.epoch);
        event.previous_leader = previous;
        self.ctx.events.publish(event);
    }

    /// The candidate to elect at `now`, dropping the dead ones met on the way (their `Left`
    /// may still be on its way; it then finds them gone). Stops at the first live `Active`
    /// one, so each dead candidate is visited once however many elections follow.
    fn pick(&mut self, now: MonoMs) -> Option<Arc<InstanceSlot>> {
        let mut dead = Vec::new();
        let mut suspect = None;
        let mut active = None;
        for (epoch, slot) in &self.candidates {
            if !alive_at(slot, now) {
                dead.push(*epoch);
            } else if slot.status() == InstanceStatus::Active {
                active = Some(Arc::clone(slot));
                break;
            } else if suspect.is_none() {
                suspect = Some(Arc::clone(slot));
            }
        }
        for epoch in dead {
            self.candidates.remove(&epoch);
        }
        active.or(suspect)
    }

    /// Reserves the next block of terms when fewer than half a block remain (or an election
    /// waits), unless a reservation is already under way. The reservation runs as its own
    /// task, retrying with backoff until the store acknowledges it; then it raises the
    /// ceiling in the shared leadership and tells this actor. Without a durable store the
    /// ceiling is unbounded and nothing is reserved.
    fn reserve_ahead(&mut self, myself: &ActorRef<LeaderMsg>) {
        let Some(persistence) = self.ctx.persistence.clone() else {
            return;
        };
        let ceiling = self.ctx.leadership.ceiling();
        let term = self.ctx.leadership.term().0;
        if ceiling.saturating_sub(term) > TERM_BLOCK / 2 && !self.waiting_for_terms {
            return;
        }
        if self.reservation.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        let target = ceiling.max(term).saturating_add(TERM_BLOCK);
        let ctx = Arc::clone(&self.ctx);
        let myself = myself.clone();
        self.reservation = Some(tokio::spawn(async move {
            let mut wait = RESERVE_RETRY_FIRST;
            loop {
                match persistence.store.reserve_terms(target).await {
                    Ok(stored) => {
                        ctx.leadership.raise_ceiling(stored);
                        persistence.store_ok("term reservation");
                        tracing::debug!(ceiling = stored, "terms reserved");
                        let _ = myself.cast(LeaderMsg::TermsReserved);
                        return;
                    }
                    Err(e) => {
                        if ctx.is_shutting_down() {
                            return;
                        }
                        if e.is_fenced() {
                            // Another coordinator holds the lease: no retry can succeed.
                            persistence.note_fenced("term reservation", &e);
                            return;
                        }
                        persistence.store_failed("term reservation", &e.to_string(), false);
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RESERVE_RETRY_MAX);
                    }
                }
            }
        }));
    }

    /// An election, then a reservation if the terms run low.
    fn elect(&mut self, myself: &ActorRef<LeaderMsg>) {
        self.ensure_leader();
        self.reserve_ahead(myself);
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
        myself: ActorRef<Self::Msg>,
        ctx: Arc<ClusterContext>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = LeaderState::rebuild(ctx);
        state.elect(&myself);
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
                state.elect(&myself);
                let _ = reply.send(state.view());
            }
            LeaderMsg::Restored(slots, reply) => {
                for slot in slots {
                    if slot.status().is_alive() {
                        state.candidates.insert(slot.epoch, slot);
                    }
                }
                state.elect(&myself);
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
                state.elect(&myself);
            }
            LeaderMsg::TermsReserved => {
                state.reservation = None;
                state.elect(&myself);
            }
            #[cfg(feature = "chaos")]
            LeaderMsg::Inspect(reply) => {
                let _ = reply.send(LeaderActorView {
                    leader: state.view(),
                    candidates: state.candidates.len(),
                    elections: state.elections,
                    sweeps: state.sweeps,
                    term_ceiling: state.ctx.leadership.ceiling(),
                    waiting_for_terms: state.waiting_for_terms,
                });
            }
            LeaderMsg::Sweep => state.sweep(&myself),
            #[cfg(feature = "fault-injection")]
            LeaderMsg::Crash => panic!("injected crash of LeaderActor"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::model::InstanceId;
    use crate::registry::Leadership;
    use crate::store::{
        Applied, BoxFuture, HeartbeatWrite, PersistMode, Persistence, Snapshot, Store, StoreError,
        WriteBatch,
    };

    fn slot(ctx: &ClusterContext, id: &str, ttl_ms: u64) -> Arc<InstanceSlot> {
        let id = InstanceId::parse(id, &ctx.config.limits).unwrap();
        let slot = Arc::new(InstanceSlot::new(
            &ctx.arena,
            id,
            ctx.next_epoch(),
            ttl_ms,
            ctx.clock.precise_ms(),
            vec![],
            serde_json::Value::Null,
        ));
        ctx.admit(&slot);
        slot
    }

    /// What the supervisor does when an instance's actor recorded its expiry: the LeaderActor
    /// hears `Left` (handled here as its handler does, without the actor around it).
    fn expired_by_its_actor(state: &mut LeaderState, slot: &Arc<InstanceSlot>) {
        let _ = slot.expire_if_due(state.ctx.clock.precise_ms());
        state.ctx.evict(slot);
        if state
            .candidates
            .get(&slot.epoch)
            .is_some_and(|c| Arc::ptr_eq(c, slot))
        {
            state.candidates.remove(&slot.epoch);
        }
        state.ensure_leader();
    }

    /// Issue 14, point 5. Fifty instances, the leader among them, pass their deadline at the
    /// same instant; a younger one is alive. The leader's actor records its expiry first; the
    /// others' actors have not woken yet, so their statuses still read `Active`. The election
    /// must go to the live instance in one new term, and no later departure may move it.
    #[tokio::test(start_paused = true)]
    async fn a_mass_expiry_elects_the_live_instance_once_not_a_chain_of_dead_ones() {
        let ctx = Arc::new(ClusterContext::new(Config::default(), None));
        let doomed: Vec<_> = (0..50)
            .map(|i| slot(&ctx, &format!("doomed-{i}"), 1_000))
            .collect();
        let survivor = slot(&ctx, "survivor", 5_000);
        let mut state = LeaderState::rebuild(Arc::clone(&ctx));
        state.ensure_leader();
        assert!(Arc::ptr_eq(
            &ctx.leadership.record().slot.unwrap(),
            &doomed[0]
        ));
        assert_eq!(ctx.leadership.term(), Term(1));
        tokio::time::advance(Duration::from_millis(1_000)).await;
        expired_by_its_actor(&mut state, &doomed[0]);
        let leader = ctx.leadership.record().slot.unwrap();
        assert!(
            Arc::ptr_eq(&leader, &survivor),
            "elected {} (epoch {}), past its deadline",
            leader.id,
            leader.epoch.0
        );
        assert_eq!(ctx.leadership.term(), Term(2));
        // The election recorded the expiry of every dead candidate it passed over.
        for slot in &doomed {
            assert_eq!(slot.status(), InstanceStatus::Expired, "{}", slot.id);
        }
        // Their departures, arriving one by one, change nothing.
        for slot in &doomed[1..] {
            expired_by_its_actor(&mut state, slot);
        }
        assert_eq!(ctx.leadership.term(), Term(2));
        assert_eq!(state.elections, 2);
    }

    /// A store whose term reservations succeed only while `up`.
    #[derive(Debug, Default)]
    struct GateStore {
        up: AtomicBool,
        reserved: AtomicU64,
        attempts: AtomicU64,
    }

    impl Store for GateStore {
        fn kind(&self) -> &'static str {
            "gate"
        }
        fn apply<'a>(&'a self, _: &'a WriteBatch) -> BoxFuture<'a, Result<Applied, StoreError>> {
            Box::pin(async { Ok(Applied::default()) })
        }
        fn heartbeat<'a>(&'a self, _: &'a HeartbeatWrite) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
        fn load(&self, _: usize) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
            Box::pin(async { Ok(Snapshot::default()) })
        }
        fn reserve_terms(&self, ceiling: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
            Box::pin(async move {
                self.attempts.fetch_add(1, Ordering::Relaxed);
                if self.up.load(Ordering::Relaxed) {
                    Ok(self
                        .reserved
                        .fetch_max(ceiling, Ordering::Relaxed)
                        .max(ceiling))
                } else {
                    Err(StoreError("down".into()))
                }
            })
        }
    }

    async fn call<T: Send + 'static>(
        leader: &ActorRef<LeaderMsg>,
        msg: impl FnOnce(RpcReplyPort<T>) -> LeaderMsg,
    ) -> T {
        match leader.call(msg, Some(Duration::from_secs(1))).await {
            Ok(ractor::rpc::CallResult::Success(v)) => v,
            _ => panic!("the LeaderActor did not answer"),
        }
    }

    /// Issue 14, point 5: with a durable store no term above the reserved ceiling is handed
    /// out. The store is down when the block runs out: the election waits (nobody is told it
    /// leads, no event) and the reservation is retried; once the store takes it, the election
    /// runs at once, in the next term.
    #[tokio::test(start_paused = true)]
    async fn an_election_waits_for_a_term_reservation_and_runs_once_the_store_takes_it() {
        let store = Arc::new(GateStore::default());
        let persistence = Arc::new(Persistence::new(
            Arc::clone(&store) as Arc<dyn Store>,
            PersistMode::WriteBehind,
            Duration::from_millis(250),
            crate::store::Breaker::default(),
        ));
        let ctx = Arc::new(ClusterContext::new(Config::default(), Some(persistence)));
        ctx.leadership.set_ceiling(2); // as if recovery had reserved up to 2
        let mut events = ctx.events.subscribe();
        let (leader, task) = Actor::spawn(None, LeaderActor, Arc::clone(&ctx))
            .await
            .unwrap();
        let a = slot(&ctx, "a", 60_000);
        let b = slot(&ctx, "b", 60_000);
        let view = call(&leader, |r| LeaderMsg::Joined(Arc::clone(&a), r)).await;
        assert_eq!((view.term, view.leader.unwrap().as_str()), (Term(1), "a"));
        call(&leader, |r| LeaderMsg::Joined(Arc::clone(&b), r)).await;
        // a leaves: b leads in term 2, the last one reserved.
        assert_eq!(a.unregister(), Transition::Done);
        ctx.registry.remove("a");
        leader.cast(LeaderMsg::Left(Arc::clone(&a))).unwrap();
        let c = slot(&ctx, "c", 60_000);
        let view = call(&leader, |r| LeaderMsg::Joined(Arc::clone(&c), r)).await;
        assert_eq!((view.term, view.leader.unwrap().as_str()), (Term(2), "b"));
        // b leaves with no term left: nothing changes, nobody is told it leads.
        assert_eq!(b.unregister(), Transition::Done);
        ctx.registry.remove("b");
        leader.cast(LeaderMsg::Left(Arc::clone(&b))).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ctx.leadership.term(), Term(2));
        assert!(!Leadership::leads(&c, ctx.leadership.term()));
        assert!(store.attempts.load(Ordering::Relaxed) >= 2, "retried");
        // The store comes back: the next retry reserves, and the election runs.
        store.up.store(true, Ordering::Relaxed);
        tokio::time::sleep(RESERVE_RETRY_MAX).await;
        // (An empty `Restored` is a round trip through the actor's mailbox.)
        let view = call(&leader, |r| LeaderMsg::Restored(Vec::new(), r)).await;
        assert_eq!((view.term, view.leader.unwrap().as_str()), (Term(3), "c"));
        assert!(Leadership::leads(&c, Term(3)));
        let ceiling = ctx.leadership.ceiling();
        assert_eq!(ceiling, store.reserved.load(Ordering::Relaxed));
        assert!(ceiling >= 2 + TERM_BLOCK, "{ceiling}");
        let mut changes = Vec::new();
        while let Ok(e) = events.try_recv() {
            if matches!(e.kind, EventKind::LeaderElected | EventKind::LeaderVacant) {
                changes.push((e.term.0, e.instance_id.map(|i| i.to_string())));
            }
        }
        assert_eq!(
            changes,
            vec![
                (1, Some("a".into())),
                (2, Some("b".into())),
                (3, Some("c".into()))
            ]
        );
        leader.stop(None);
        let _ = task.await;
    }
}
