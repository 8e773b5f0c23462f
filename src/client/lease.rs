//! [`Lease`]: a resource lease held by an instance, with its fencing token.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Client, ClientError};
use crate::coordinator::LeaseOutcome;
use crate::work::lease::{LeaseConflict, LeaseMode};

/// The answer to [`Lease::acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// Granted: the lease is held.
    Held(Lease),
    /// Refused: these holds conflict (on the key, an ancestor or a descendant).
    Conflict(Vec<LeaseConflict>),
}

impl Acquire {
    /// The lease, if granted.
    pub fn held(self) -> Option<Lease> {
        match self {
            Acquire::Held(lease) => Some(lease),
            Acquire::Conflict(_) => None,
        }
    }
}

/// The lease as last granted or renewed.
#[derive(Debug, Clone, Copy)]
struct Terms {
    fencing_token: u64,
    expires_at_ms: u64,
    /// When the lease lapses as far as this client can tell (on its own monotonic clock,
    /// never later than the server's expiry when the TTL is known).
    until: Instant,
    /// Lost: a renewal found it gone, its expiry passed without a renewal, or renewals
    /// stopped on a permanent error. Stays set.
    lost: bool,
}

impl Terms {
    /// Marks the lease lost if its expiry passed; whether anything changed.
    fn lapse(&mut self) -> bool {
        if !self.lost && Instant::now() >= self.until {
            self.lost = true;
            return true;
        }
        false
    }
}

/// A [`Lease::release`] that did not get through, with the lease, so the call can be made
/// again (its renewals run again as before the call). Converts into its [`ClientError`] for
/// `?`.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct LeaseError {
    /// What went wrong; [`ClientError::is_transient`] says whether retrying may help.
    pub error: ClientError,
    /// The lease, unchanged.
    pub lease: Box<Lease>,
}

impl From<LeaseError> for ClientError {
    fn from(e: LeaseError) -> Self {
        e.error
    }
}

/// A lease on a key held by an instance (`holder`, which must be live: the server releases
/// an instance's leases when it expires or unregisters, like an etcd lease bound to a session).
///
/// Every grant carries a fencing token, greater than any handed out before; present it to
/// whatever the lease protects so that a holder whose lease lapsed cannot overwrite a newer
/// holder's work. [`renew`](Self::renew) extends the lease (same token),
/// [`keep_alive`](Self::keep_alive) renews it from a background task, and
/// [`lost`](Self::lost) resolves when a renewal finds it gone or its expiry passes without a
/// renewal (an outage longer than the lease). Dropping a lease stops the renewals without
/// releasing it (it lapses after its TTL).
pub struct Lease {
    client: Client,
    key: String,
    holder: String,
    mode: LeaseMode,
    ttl: Option<Duration>,
    terms: Arc<watch::Sender<Terms>>,
    keeper: Option<JoinHandle<()>>,
    /// The period of the running [`keep_alive`](Self::keep_alive), to restart it.
    keep: Option<Duration>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms = *self.terms.borrow();
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("mode", &self.mode)
            .field("fencing_token", &terms.fencing_token)
            .field("expires_at_ms", &terms.expires_at_ms)
            .field("lost", &terms.lost)
            .finish()
    }
}

/// When a grant or renewal asked for at `sent` lapses on this client's clock: `sent` plus the
/// TTL asked for (the server counts from when the request arrived, later), or, when the
/// server's default TTL applies, from its wall-clock expiry.
fn until(sent: Instant, ttl: Option<Duration>, expires_at_ms: u64) -> Instant {
    match ttl {
        Some(ttl) => sent + Duration::from_secs(super::ceil_secs(ttl)),
        None => super::local_deadline(expires_at_ms),
    }
}

impl Lease {
    /// Acquires `key` for the live instance `holder`, for `ttl` (rounded up to whole
    /// seconds; the server's 900 s when `None`). Acquiring a key the holder already holds
    /// returns the same grant (same fencing token) with the new mode and expiry.
    pub async fn acquire(
        client: &Client,
        key: &str,
        holder: &str,
        mode: LeaseMode,
        ttl: Option<Duration>,
    ) -> Result<Acquire, ClientError> {
        let sent = Instant::now();
        match client.lease_acquire(key, holder, mode, ttl).await? {
            LeaseOutcome::Granted(grant) => Ok(Acquire::Held(Lease {
                client: client.clone(),
                key: key.to_string(),
                holder: holder.to_string(),
                mode,
                ttl,
                terms: Arc::new(
                    watch::channel(Terms {
                        fencing_token: grant.fencing_token,
                        expires_at_ms: grant.expires_at_ms,
                        until: until(sent, ttl, grant.expires_at_ms),
                        lost: false,
                    })
                    .0,
                ),
                keeper: None,
                keep: None,
            })),
            LeaseOutcome::Conflict(conflicts) => Ok(Acquire::Conflict(conflicts)),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Exclusive or shared.
    pub fn mode(&self) -> LeaseMode {
        self.mode
    }

    /// The grant's fencing token.
    pub fn fencing_token(&self) -> u64 {
        self.terms.borrow().fencing_token
    }

    /// Wall-clock ms when the lease lapses unless renewed (as of the last grant or renewal).
    pub fn expires_at_ms(&self) -> u64 {
        self.terms.borrow().expires_at_ms
    }

    /// Whether the lease is lost: a renewal found it gone, its expiry passed without a
    /// renewal, or the renewals stopped on a permanent error. Once lost, it stays lost
    /// (acquire the key again).
    pub fn is_lost(&self) -> bool {
        self.terms.send_if_modified(Terms::lapse);
        self.terms.borrow().lost
    }

    /// Resolves when the lease is lost (see [`is_lost`](Self::is_lost)) — at the latest when
    /// its expiry passes without a successful renewal, whether or not the server can be
    /// reached.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let terms = Arc::clone(&self.terms);
        let mut rx = terms.subscribe();
        async move {
            loop {
                let (lost, until) = {
                    let t = rx.borrow_and_update();
                    (t.lost, t.until)
                };
                if lost {
                    return;
                }
                tokio::select! {
                    // The future holds the sender: this cannot fail.
                    _ = rx.changed() => {}
                    () = tokio::time::sleep_until(until) => {
                        terms.send_if_modified(Terms::lapse);
                    }
                }
            }
        }
    }

    /// Extends the lease by its TTL: false (and [`lost`](Self::lost) fires) when the holder
    /// no longer holds it — the lease lapsed, or the holder is no longer a live instance.
    pub async fn renew(&self) -> Result<bool, ClientError> {
        renew(&self.client, &self.key, &self.holder, self.ttl, &self.terms).await
    }

    /// Renews the lease every `every` from a background task, until a renewal finds it gone,
    /// its expiry passes without a successful renewal, a renewal is refused for good (a
    /// permanent error: the lease is then reported lost), or the lease is released or
    /// dropped. Replaces an earlier loop.
    pub fn keep_alive(&mut self, every: Duration) {
        if let Some(old) = self.keeper.take() {
            old.abort();
        }
        self.keep = Some(every);
        let every = every.max(Duration::from_millis(10));
        let (client, key, holder, ttl) = (
            self.client.clone(),
            self.key.clone(),
            self.holder.clone(),
            self.ttl,
        );
        let terms = Arc::clone(&self.terms);
        self.keeper = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut failures = 0u32;
            loop {
                let until = terms.borrow().until;
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tokio::time::sleep_until(until) => {}
                }
                terms.send_if_modified(Terms::lapse);
                if terms.borrow().lost {
                    tracing::warn!(%key, %holder, "lease lost: stopping its renewals");
                    return;
                }
                match renew(&client, &key, &holder, ttl, &terms).await {
                    Ok(true) => failures = 0,
                    Ok(false) => {
                        tracing::warn!(%key, %holder, "lease lost: stopping its renewals");
                        return;
                    }
                    Err(e) if !e.is_transient() => {
                        tracing::warn!(%key, %holder, error = %e,
                                       "lease renewal refused: stopping renewals, the lease is lost");
                        terms.send_if_modified(|t| !std::mem::replace(&mut t.lost, true));
                        return;
                    }
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(%key, %holder, error = %e, "lease renewal failed");
                        } else {
                            tracing::debug!(%key, %holder, error = %e, failures,
                                            "lease renewal failed again");
                        }
                        failures += 1;
                    }
                }
            }
        }));
    }

    /// Releases the lease: whether it was still held. When the call fails, the
    /// [`LeaseError`] holds the lease (its renewals running again) to try again.
    pub async fn release(mut self) -> Result<bool, LeaseError> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        match self.client.lease_release(&self.key, &self.holder).await {
            Ok(held) => Ok(held),
            Err(error) => {
                if let Some(every) = self.keep {
                    self.keep_alive(every);
                }
                Err(LeaseError {
                    error,
                    lease: Box::new(self),
                })
            }
        }
    }
}

async fn renew(
    client: &Client,
    key: &str,
    holder: &str,
    ttl: Option<Duration>,
    terms: &watch::Sender<Terms>,
) -> Result<bool, ClientError> {
    let sent = Instant::now();
    let renewed = match client.lease_renew(key, holder, ttl).await {
        // The holder is no longer a live instance: its leases went with it.
        Err(ClientError::Rpc { code, .. }) if code == super::code::INVALID_PARAMS => None,
        other => other?,
    };
    match renewed {
        Some(renewal) => {
            terms.send_modify(|t| {
                t.fencing_token = renewal.fencing_token;
                t.expires_at_ms = renewal.expires_at_ms;
                t.until = until(sent, ttl, renewal.expires_at_ms);
            });
            Ok(true)
        }
        None => {
            terms.send_if_modified(|t| !std::mem::replace(&mut t.lost, true));
            Ok(false)
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}
