//! [`Session`]: a registered instance kept alive by a background task.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Client, ClientError};
use crate::model::{
    Epoch, Heartbeat, InstanceId, RegisterRequest, Registration, Term, Unregistration,
};

/// What a [`Session`] registers with, and how it keeps itself alive.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// What is registered: id, roles, metadata and TTL (the server's default when `None`; the
    /// session then asks the server for it).
    pub request: RegisterRequest,
    /// Heartbeat period; a third of the TTL when `None`. Must be shorter than the TTL.
    pub heartbeat_every: Option<Duration>,
    /// Register again after the session is lost (default true).
    pub reregister: bool,
}

impl SessionOptions {
    /// Options for `id`: no roles, the server's TTL, heartbeats every third of it,
    /// re-registration after a loss.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            request: RegisterRequest::new(id),
            heartbeat_every: None,
            reregister: true,
        }
    }

    /// Sets the roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request = self.request.roles(roles);
        self
    }

    /// Sets the TTL (the server accepts 1 s – 1 h).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.request = self.request.ttl(ttl);
        self
    }

    /// Sets the metadata object.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.request = self.request.metadata(metadata);
        self
    }

    /// Sets the heartbeat period (it must be shorter than the TTL).
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = Some(every);
        self
    }

    /// Whether to register again after a loss.
    pub fn reregister(mut self, reregister: bool) -> Self {
        self.reregister = reregister;
        self
    }
}

/// Why a session was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// A heartbeat answered `alive: false`: the server expired or unregistered the instance
    /// (or restarted without it).
    Expired,
    /// The instance is alive under another epoch: it expired and the id was registered again
    /// by someone else while this session could not reach the server.
    EpochChanged {
        /// The session's epoch.
        was: Epoch,
        /// The epoch the server now has.
        now: Epoch,
    },
    /// Registering again after a loss found the id held by another live registration (a
    /// different epoch): someone else uses this id. The session does not adopt it and stops
    /// for good.
    Taken {
        /// The session's last epoch.
        was: Epoch,
        /// The epoch of the registration that holds the id.
        now: Epoch,
    },
    /// No heartbeat got through for a whole TTL: the server must count the instance as
    /// expired.
    Unreachable(String),
    /// The session was closed or dropped.
    Closed,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::Expired => f.write_str("the server expired the instance"),
            LostReason::EpochChanged { was, now } => {
                write!(f, "the instance's epoch changed from {was} to {now}")
            }
            LostReason::Taken { was, now } => write!(
                f,
                "the id is held by another registration (epoch {now}, this session's was {was})"
            ),
            LostReason::Unreachable(why) => {
                write!(f, "no heartbeat got through for a whole TTL ({why})")
            }
            LostReason::Closed => f.write_str("the session was closed"),
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Registered and heartbeating in `epoch`.
    Alive {
        /// The current epoch.
        epoch: Epoch,
        /// How many times the session was lost before this registration (0 for the first).
        /// A re-registration may keep the epoch (when the server still had the instance), so
        /// this, not the epoch, tells one registration from the next.
        generation: u64,
    },
    /// Lost; re-registering if the options say so (success shows as `Alive` with the next
    /// generation).
    Lost {
        /// Why.
        reason: LostReason,
    },
    /// Closed or dropped: no more heartbeats.
    Closed,
}

/// Who leads, in which term, and whether it is this session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The leader's id, when known (`None` while nobody leads, or just after a change of term
    /// that the session could not yet ask about).
    pub leader: Option<InstanceId>,
    /// The term: it grows by one at every change of leader, and at most one instance leads
    /// in a term, so it is the fencing token of leader-only work. Terms are compared within
    /// one registration only: a server restarted without its store starts again at 1.
    pub term: Term,
    /// Whether this session leads in `term`.
    pub is_leader: bool,
}

/// What a session shares with its background task and its [`Election`](super::Election)s.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) id: String,
    pub(crate) state: watch::Sender<SessionState>,
    pub(crate) leadership: watch::Sender<Leadership>,
    /// The generation leadership is being observed for; written only inside the
    /// `leadership` channel's lock, so an answer from an earlier registration never lands in
    /// a later one.
    generation: AtomicU64,
    last_loss: Mutex<Option<LostReason>>,
    pub(crate) epoch: Mutex<Epoch>,
    /// Whether the session registers again after a loss.
    reregister: bool,
    /// The heartbeat loop ended for good (closed, or lost without re-registering).
    ended: AtomicBool,
}

impl Shared {
    /// Takes in what the server said about leadership during registration `generation`,
    /// keeping terms from going back within it. Ignored once another registration began.
    pub(crate) fn observe(
        &self,
        generation: u64,
        leader: Option<InstanceId>,
        term: Term,
        is_leader: bool,
    ) {
        self.leadership.send_if_modified(|l| {
            if self.generation.load(Ordering::Acquire) != generation || term < l.term {
                return false;
            }
            let next = Leadership {
                leader,
                term,
                is_leader,
            };
            let changed = *l != next;
            *l = next;
            changed
        });
    }

    /// The generation of the last registration (alive or not).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation of the current registration, if the session is alive.
    pub(crate) fn alive_generation(&self) -> Option<u64> {
        match *self.state.borrow() {
            SessionState::Alive { generation, .. } => Some(generation),
            _ => None,
        }
    }

    /// Whether a lost session will come back (it registers again after a loss and has not
    /// stopped for good).
    pub(crate) fn will_return(&self) -> bool {
        self.reregister && !self.ended.load(Ordering::Acquire)
    }

    fn step_down(&self) {
        self.leadership.send_if_modified(|l| {
            let was = l.is_leader;
            l.is_leader = false;
            if was && l.leader.as_ref().is_some_and(|x| x.as_str() == self.id) {
                l.leader = None;
            }
            was
        });
    }

    /// A (new) registration: a new epoch of leadership, observed afresh (the server may have
    /// restarted with terms from 1).
    fn alive(&self, registration: &Registration, generation: u64) {
        *self.epoch.lock() = registration.epoch;
        self.state.send_replace(SessionState::Alive {
            epoch: registration.epoch,
            generation,
        });
        self.leadership.send_modify(|l| {
            self.generation.store(generation, Ordering::Release);
            *l = Leadership {
                leader: registration.leader.clone(),
                term: registration.term,
                is_leader: registration.is_leader,
            };
        });
    }

    fn lost(&self, reason: LostReason, for_good: bool) {
        tracing::warn!(id = %self.id, %reason, "vigil session lost");
        *self.last_loss.lock() = Some(reason.clone());
        if for_good {
            self.ended.store(true, Ordering::Release);
        }
        self.step_down();
        self.state.send_replace(SessionState::Lost { reason });
    }

    fn close(&self) {
        self.ended.store(true, Ordering::Release);
        self.step_down();
        self.state.send_replace(SessionState::Closed);
    }

    /// Takes in an `alive: true` heartbeat of registration `generation`; a call to learn the
    /// leader's id (when the term changed) waits at most `within`.
    async fn beat(&self, beat: Heartbeat, generation: u64, within: Duration) {
        let known = self.leadership.borrow().clone();
        let leader = if beat.is_leader {
            Some(super::instance_id(&self.id))
        } else if beat.term == known.term && !known.is_leader {
            known.leader
        } else {
            // A new term (or we stopped leading): ask who leads now.
            match tokio::time::timeout(within, self.client.leader()).await {
                Ok(Ok(view)) if view.term >= beat.term => {
                    return self.observe(generation, view.leader.clone(), view.term, false);
                }
                _ => None,
            }
        };
        self.observe(generation, leader, beat.term, beat.is_leader);
    }
}

struct Plan {
    /// What re-registration sends (its TTL the resolved one).
    request: RegisterRequest,
    ttl: Duration,
    every: Duration,
    reregister: bool,
}

impl Plan {
    async fn register(&self, shared: &Shared) -> Result<Registration, ClientError> {
        shared.client.register(&self.request).await
    }

    /// How long one call of the loop may take: the heartbeat period (at least 100 ms).
    fn call_bound(&self) -> Duration {
        self.every.max(Duration::from_millis(100))
    }
}

/// A registered instance that keeps itself alive: a background task heartbeats every
/// `heartbeat_every` (a third of the TTL by default). The moment a heartbeat answers
/// `alive: false`, the epoch turns out to have changed, or a whole TTL has passed since the
/// last successful heartbeat was sent, the session is lost: [`lost`](Self::lost) resolves,
/// [`watch`](Self::watch) shows [`SessionState::Lost`], and any
/// [`Election`](super::Election) stops reporting leadership. Unless told otherwise it then
/// registers again and shows `Alive` with the next generation — unless the id turns out to be
/// held by another registration ([`LostReason::Taken`]), which ends the session for good.
///
/// [`close`](Self::close) unregisters; dropping the session only stops the heartbeats (the
/// server expires the instance after its TTL).
pub struct Session {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    ttl: Duration,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("state", &*self.shared.state.borrow())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Session {
    /// Registers and starts heartbeating. Fails with [`ClientError::Usage`] when the
    /// heartbeat period is not shorter than the TTL (nothing stays registered then).
    pub async fn new(client: &Client, options: SessionOptions) -> Result<Session, ClientError> {
        let too_slow = |every: Duration, ttl: Duration| {
            ClientError::Usage(format!(
                "the heartbeat period ({every:?}) must be shorter than the TTL ({ttl:?})"
            ))
        };
        let id = options.request.id.clone();
        if let (Some(every), Some(ttl)) = (options.heartbeat_every, options.request.ttl)
            && every >= ttl
        {
            return Err(too_slow(every, ttl));
        }
        let sent = Instant::now();
        let registration = client.register(&options.request).await?;
        let mut plan = Plan {
            ttl: options.request.ttl.unwrap_or(Duration::ZERO),
            request: options.request,
            every: Duration::ZERO,
            reregister: options.reregister,
        };
        if plan.request.ttl.is_none() {
            // The server's default TTL: read it back. Without it the session cannot keep the
            // instance alive, so do not leave the registration behind.
            let view = match client.instance(&id).await {
                Ok(view) => view,
                Err(e) => {
                    let _ = client.unregister(&id).await;
                    return Err(e);
                }
            };
            plan.ttl = view
                .map(|v| Duration::from_millis(v.ttl_ms))
                .unwrap_or(Duration::from_secs(30));
            if let Some(every) = options.heartbeat_every
                && every >= plan.ttl
            {
                let _ = client.unregister(&id).await;
                return Err(too_slow(every, plan.ttl));
            }
            plan.request.ttl = Some(plan.ttl);
        }
        plan.every = options
            .heartbeat_every
            .unwrap_or(plan.ttl / 3)
            .max(Duration::from_millis(10));
        let shared = Arc::new(Shared {
            client: client.clone(),
            id,
            state: watch::channel(SessionState::Alive {
                epoch: registration.epoch,
                generation: 0,
            })
            .0,
            leadership: watch::channel(Leadership::default()).0,
            generation: AtomicU64::new(0),
            last_loss: Mutex::new(None),
            epoch: Mutex::new(registration.epoch),
            reregister: plan.reregister,
            ended: AtomicBool::new(false),
        });
        shared.alive(&registration, 0);
        let ttl = plan.ttl;
        let task = tokio::spawn(run(Arc::clone(&shared), plan, registration.epoch, sent));
        Ok(Session { shared, task, ttl })
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The current epoch (the last one registered, while lost).
    pub fn epoch(&self) -> Epoch {
        *self.shared.epoch.lock()
    }

    /// The TTL the instance is registered with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The client the session calls through.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.shared.state.borrow().clone()
    }

    /// Whether the session is alive right now (as far as its last heartbeat knows).
    pub fn is_alive(&self) -> bool {
        matches!(*self.shared.state.borrow(), SessionState::Alive { .. })
    }

    /// Every change of state: `Alive{epoch, generation}` → `Lost{reason}` →
    /// `Alive{epoch', generation + 1}` … `Closed`.
    pub fn watch(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Resolves the moment the session's current registration is lost (at once if it is lost
    /// already), with the reason. A loss followed at once by re-registration is not missed,
    /// even when the server kept the epoch: a later generation counts as a loss of this one.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let mut rx = self.shared.state.subscribe();
        let shared = Arc::clone(&self.shared);
        let start = match &*rx.borrow() {
            SessionState::Alive { generation, .. } => Some(*generation),
            _ => None,
        };
        async move {
            loop {
                let now = rx.borrow_and_update().clone();
                match now {
                    SessionState::Alive { generation, .. } if Some(generation) == start => {}
                    SessionState::Alive { .. } => {
                        return shared
                            .last_loss
                            .lock()
                            .clone()
                            .unwrap_or(LostReason::Expired);
                    }
                    SessionState::Lost { reason } => return reason,
                    SessionState::Closed => return LostReason::Closed,
                }
                if rx.changed().await.is_err() {
                    return LostReason::Closed;
                }
            }
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops the heartbeats and unregisters the instance (its claims go back to pending, its
    /// leases are released, and leadership moves on).
    pub async fn close(self) -> Result<Unregistration, ClientError> {
        self.task.abort();
        self.shared.close();
        self.shared.client.unregister(&self.shared.id).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.close();
    }
}

/// What one heartbeat round found.
enum Round {
    /// A heartbeat got through, sent at this instant.
    Ok(Instant),
    /// It did not (transport error, rate limit, no answer in time, an unverified epoch).
    Failed(String),
    /// The registration is gone.
    Lost(LostReason),
}

/// One heartbeat, and after missed ones a check that the epoch is still ours.
async fn round(
    shared: &Shared,
    plan: &Plan,
    epoch: Epoch,
    generation: u64,
    failing: bool,
) -> Round {
    let bound = plan.call_bound();
    let sent = Instant::now();
    let answer = match tokio::time::timeout(bound, shared.client.heartbeat(&shared.id)).await {
        Ok(answer) => answer,
        Err(_) => Err(ClientError::Transport(format!(
            "no heartbeat answer within {bound:?}"
        ))),
    };
    match answer {
        Ok(beat) if beat.alive => {
            if failing {
                // Heartbeats were missed: make sure nobody re-registered the id meanwhile
                // before taking this answer (and its leadership) as ours.
                match tokio::time::timeout(bound, shared.client.instance(&shared.id)).await {
                    Ok(Ok(Some(view))) if view.epoch != epoch => {
                        return Round::Lost(LostReason::EpochChanged {
                            was: epoch,
                            now: view.epoch,
                        });
                    }
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) => return Round::Lost(LostReason::Expired),
                    Ok(Err(e)) => return Round::Failed(format!("checking the epoch: {e}")),
                    Err(_) => {
                        return Round::Failed(format!(
                            "checking the epoch: no answer within {bound:?}"
                        ));
                    }
                }
            }
            shared.beat(beat, generation, bound).await;
            Round::Ok(sent)
        }
        Ok(_) => Round::Lost(LostReason::Expired),
        Err(e) => Round::Failed(e.to_string()),
    }
}

/// The heartbeat loop. `last_ok` is when the registration was sent.
async fn run(shared: Arc<Shared>, plan: Plan, mut epoch: Epoch, mut last_ok: Instant) {
    let mut generation = 0u64;
    let mut failing = false;
    let mut last_error = String::from("no heartbeat answered");
    let mut lost = false;
    let mut tick = tokio::time::interval_at(Instant::now() + plan.every, plan.every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if lost {
            tick.tick().await;
            let sent = Instant::now();
            match plan.register(&shared).await {
                Ok(registration) if registration.refreshed && registration.epoch != epoch => {
                    // Someone else registered this id while we were gone: it is theirs.
                    shared.lost(
                        LostReason::Taken {
                            was: epoch,
                            now: registration.epoch,
                        },
                        true,
                    );
                    return;
                }
                Ok(registration) => {
                    tracing::info!(id = %shared.id, epoch = %registration.epoch,
                                   "vigil session registered again");
                    epoch = registration.epoch;
                    last_ok = sent;
                    lost = false;
                    failing = false;
                    shared.alive(&registration, generation);
                }
                Err(e) => tracing::debug!(id = %shared.id, error = %e, "re-registration failed"),
            }
            continue;
        }
        // The server counts the TTL from when a heartbeat arrived, which is after it was sent:
        // by `last_ok + ttl` the server may have expired the instance, so stop believing in it
        // then, even if a heartbeat is still on its way.
        let deadline = last_ok + plan.ttl;
        let outcome = tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => None,
            r = async {
                tick.tick().await;
                round(&shared, &plan, epoch, generation, failing).await
            } => Some(r),
        };
        let loss = match outcome {
            None => Some(LostReason::Unreachable(last_error.clone())),
            Some(Round::Ok(sent)) => {
                last_ok = sent;
                failing = false;
                None
            }
            Some(Round::Failed(why)) => {
                tracing::debug!(id = %shared.id, error = %why, "session heartbeat failed");
                failing = true;
                last_error = why;
                None
            }
            Some(Round::Lost(reason)) => Some(reason),
        };
        if let Some(reason) = loss {
            generation += 1;
            shared.lost(reason, !plan.reregister);
            if !plan.reregister {
                return;
            }
            lost = true;
            // Register again at once rather than a period later.
            tick.reset_immediately();
        }
    }
}
