//! [`Election`]: leadership as one session sees it.

use std::sync::Arc;

use tokio::sync::watch;

use super::ClientError;
pub use super::session::Leadership;
use super::session::{Session, SessionState, Shared};
use crate::model::{InstanceId, Term};

/// Leadership as seen by a [`Session`]: Vigil elects the live instance with the oldest epoch,
/// and every heartbeat answer says whether the session leads and in which term. An election
/// therefore needs no calls of its own: it reads what the session's heartbeats learn (asking
/// `system.get_state` for the leader's id when the term changes).
///
/// Leadership is only as fresh as the last heartbeat (a third of the TTL by default), and
/// ends in the client the moment the session is lost — at the latest a TTL after the last
/// heartbeat that got through was sent, whether or not the server can be reached. Use the term
/// as a fencing token for anything the leader writes elsewhere. Each registration of the
/// session observes terms afresh (a server restarted without its store counts from 1 again).
#[derive(Clone)]
pub struct Election {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("id", &self.shared.id)
            .field("leadership", &*self.shared.leadership.borrow())
            .finish()
    }
}

impl Election {
    /// The election `session` takes part in (by being registered).
    pub fn new(session: &Session) -> Self {
        Self {
            shared: Arc::clone(session.shared()),
        }
    }

    /// The leader and the term, as last observed.
    pub fn leader(&self) -> (Option<InstanceId>, Term) {
        let l = self.shared.leadership.borrow();
        (l.leader.clone(), l.term)
    }

    /// The current term, as last observed.
    pub fn term(&self) -> Term {
        self.shared.leadership.borrow().term
    }

    /// Whether this session leads, as far as its last heartbeat knows.
    pub fn is_leader(&self) -> bool {
        self.shared.leadership.borrow().is_leader
    }

    /// Every change of leadership.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.shared.leadership.subscribe()
    }

    /// Resolves with the term once this session leads (at once if it does). Waits through a
    /// loss while the session registers again; fails with [`ClientError::SessionEnded`] (not
    /// transient) when the session is closed or dropped, or lost for good (with
    /// `reregister(false)`, or [`LostReason::Taken`](super::LostReason::Taken)).
    pub async fn wait_leader(&self) -> Result<Term, ClientError> {
        let mut leadership = self.shared.leadership.subscribe();
        let mut state = self.shared.state.subscribe();
        let gone = || ClientError::SessionEnded("the session is gone".into());
        loop {
            match &*state.borrow_and_update() {
                SessionState::Closed => {
                    return Err(ClientError::SessionEnded(
                        "the session was closed before it led".into(),
                    ));
                }
                SessionState::Lost { reason } if !self.shared.will_return() => {
                    return Err(ClientError::SessionEnded(format!(
                        "the session was lost for good before it led: {reason}"
                    )));
                }
                _ => {}
            }
            {
                let l = leadership.borrow_and_update();
                if l.is_leader {
                    return Ok(l.term);
                }
            }
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() {
                    return Err(gone());
                },
                changed = state.changed() => if changed.is_err() {
                    return Err(gone());
                },
            }
        }
    }

    /// Resolves once this session no longer leads in `term` (a later term, or the session was
    /// lost or closed): the moment to stop leader-only work fenced by `term`.
    pub async fn resigned(&self, term: Term) {
        let mut leadership = self.shared.leadership.subscribe();
        loop {
            {
                let l = leadership.borrow_and_update();
                if !l.is_leader || l.term != term {
                    return;
                }
            }
            if leadership.changed().await.is_err() {
                return;
            }
        }
    }

    /// Asks the server who leads now (`system.get_state`) and updates what the election
    /// reports. Whether this session leads still comes from its heartbeats; an answer that
    /// arrives after the session was lost or registered again is not taken in.
    pub async fn refresh(&self) -> Result<Leadership, ClientError> {
        let generation = self.shared.generation();
        let epoch = *self.shared.epoch.lock();
        let view = self.shared.client.leader().await?;
        let me = self.shared.alive_generation() == Some(generation)
            && view
                .leader
                .as_ref()
                .is_some_and(|l| l.as_str() == self.shared.id)
            && view.epoch == Some(epoch);
        self.shared.observe(generation, view.leader, view.term, me);
        Ok(self.shared.leadership.borrow().clone())
    }
}
