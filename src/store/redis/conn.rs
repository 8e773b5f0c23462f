//! The store's Redis connection: one [`ConnectionManager`] to a fixed server for `redis://`,
//! or, for `redis+sentinel://`, one to the primary the sentinels name, replaced by a
//! connection to the new primary after a failover.
//!
//! A `ConnectionManager` reconnects to the one address it was built with, so alone it would
//! keep writing to a dead primary, or to an old primary restarted empty (which answers as a
//! master until the sentinels demote it). Under Sentinel, [`Conn`] therefore asks the sentinels
//! again after an I/O error, a timeout, `READONLY`, `MASTERDOWN` or `NOREPLICAS`; if they name
//! another node it connects there, loads the scripts into it and swaps the manager. The failed
//! call still returns its error: the caller retries as it always does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError,
    RedisFuture, RedisResult, Value,
};

use crate::config::store::{SentinelUrl, redact_url};

/// Least time between two attempts to ask the sentinels, so that a burst of failing calls
/// during a failover asks them once, not once per call.
const RESOLVE_EVERY: Duration = Duration::from_millis(100);

/// The connection [`RedisStore`](super::RedisStore) sends everything through. Clones share it.
#[derive(Clone)]
pub(in crate::store) struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    /// The manager in use and the address it connects to.
    current: RwLock<(ConnectionManager, String)>,
    /// Raised on every swap; a failed call re-resolves only if none happened since it began.
    generation: AtomicU64,
    db: i64,
    follow: Option<Follow>,
}

/// What it takes to find the primary again.
struct Follow {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    master: String,
    config: ConnectionManagerConfig,
    /// Script sources loaded into every new primary before it is used.
    scripts: Vec<String>,
    /// Bound on one re-resolution (sentinels, connect, SCRIPT LOAD).
    timeout: Duration,
    last_attempt: Mutex<Option<Instant>>,
    /// Whether the last re-resolution failed: while it keeps failing (the sentinels still
    /// electing), the failures after the first are logged at debug level only.
    failing: std::sync::atomic::AtomicBool,
    /// A background loop is asking the sentinels until they name a primary.
    chasing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("address", &self.inner.current.read().1)
            .field("generation", &self.generation())
            .field("sentinel", &self.inner.follow.as_ref().map(|f| &f.master))
            .finish()
    }
}

/// Whether `e` suggests that the node we write to is no longer the primary.
fn primary_lost(e: &RedisError) -> bool {
    const CODES: [&str; 3] = ["READONLY", "MASTERDOWN", "NOREPLICAS"];
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout() {
        return true;
    }
    if e.code().is_some_and(|c| CODES.contains(&c)) {
        return true;
    }
    e.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, s)| CODES.contains(&s.code())))
}

impl Conn {
    /// Connects to `url` (a `redis://` URL, or `redis+sentinel://` through the sentinels).
    /// `scripts` are loaded into every primary found after a failover; loading them into the
    /// first is the caller's.
    pub(in crate::store) async fn open(
        url: &str,
        config: ConnectionManagerConfig,
        scripts: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        if !SentinelUrl::is_sentinel(url) {
            let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
            let db = client.get_connection_info().redis_settings().db();
            let address = client.get_connection_info().addr().to_string();
            let manager = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| format!("connecting to {}: {e}", redact_url(url)))?;
            return Ok(Self::new(manager, address, db, None));
        }
        let parsed = SentinelUrl::parse(url)?;
        let shown = redact_url(url);
        let mut sentinel = sentinel_client(&parsed).map_err(|e| format!("{shown}: {e}"))?;
        let (manager, address) = tokio::time::timeout(timeout, connect(&mut sentinel, &config))
            .await
            .map_err(|_| format!("finding the primary through {shown}: timed out"))?
            .map_err(|e| format!("finding the primary through {shown}: {e}"))?;
        tracing::info!(master = %parsed.master, %address, "redis primary found through sentinel");
        let follow = Follow {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master: parsed.master.clone(),
            config,
            scripts,
            timeout,
            last_attempt: Mutex::new(None),
            failing: std::sync::atomic::AtomicBool::new(false),
            chasing: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Self::new(manager, address, parsed.db, Some(follow)))
    }

    fn new(manager: ConnectionManager, address: String, db: i64, follow: Option<Follow>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new((manager, address)),
                generation: AtomicU64::new(0),
                db,
                follow,
            }),
        }
    }

    /// How many times the connection moved to another primary.
    pub(in crate::store) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The manager in use and the generation it belongs to (the lock is not held after).
    fn current(&self) -> (ConnectionManager, u64) {
        let current = self.inner.current.read();
        (current.0.clone(), self.generation())
    }

    /// After `e` on a call that began at `generation`: under Sentinel, ask the sentinels for
    /// the primary and move to it if it changed. If they name none yet (a failover under way),
    /// keep asking in the background every [`CHASE_EVERY`] for up to [`CHASE_FOR`]: the
    /// circuit breaker may stop every call meanwhile, and without one no call would ask again.
    /// Never fails; what goes wrong is logged.
    async fn after_error(&self, generation: u64, e: &RedisError) {
        let Some(follow) = &self.inner.follow else {
            return;
        };
        if !primary_lost(e) || self.generation() != generation {
            return;
        }
        {
            let mut last = follow.last_attempt.lock();
            if last.is_some_and(|t| t.elapsed() < RESOLVE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cause = e.to_string();
        if self.resolve(generation, &cause).await == Resolved::NotYet
            && !follow.chasing.swap(true, Ordering::AcqRel)
        {
            let conn = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                while started.elapsed() < CHASE_FOR && conn.generation() == generation {
                    tokio::time::sleep(CHASE_EVERY).await;
                    if conn.resolve(generation, &cause).await != Resolved::NotYet {
                        break;
                    }
                }
                if let Some(follow) = &conn.inner.follow {
                    follow.chasing.store(false, Ordering::Release);
                }
            });
        }
    }

    /// One question to the sentinels (skipped while another runs, or when the connection moved
    /// since `generation`), and the move if they name another primary.
    async fn resolve(&self, generation: u64, cause: &str) -> Resolved {
        let Some(follow) = &self.inner.follow else {
            return Resolved::Done;
        };
        let Ok(mut sentinel) = follow.sentinel.try_lock() else {
            return Resolved::Busy;
        };
        if self.generation() != generation {
            return Resolved::Done;
        }
        let found = tokio::time::timeout(follow.timeout, async {
            let client = sentinel.async_get_client().await?;
            let address = client.get_connection_info().addr().to_string();
            if address == self.inner.current.read().1 {
                return Ok(None);
            }
            let mut manager =
                ConnectionManager::new_with_config(client, follow.config.clone()).await?;
            let mut pipe = Pipeline::with_capacity(follow.scripts.len());
            for source in &follow.scripts {
                pipe.cmd("SCRIPT").arg("LOAD").arg(source);
            }
            pipe.query_async::<Vec<String>>(&mut manager).await?;
            RedisResult::Ok(Some((manager, address)))
        })
        .await;
        let failed = !matches!(found, Ok(Ok(_)));
        let failing_before = follow.failing.swap(failed, Ordering::AcqRel);
        if failed && failing_before {
            tracing::debug!(master = %follow.master, cause, "the sentinels still name no new primary");
            return Resolved::NotYet;
        }
        match found {
            Ok(Ok(Some((manager, address)))) => {
                let to = address.clone();
                let old = std::mem::replace(&mut *self.inner.current.write(), (manager, address));
                let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::warn!(
                    master = %follow.master, from = %old.1, %to, generation,
                    cause, "redis primary moved; following it"
                );
                Resolved::Done
            }
            Ok(Ok(None)) => {
                tracing::debug!(master = %follow.master, cause, "redis primary unchanged");
                Resolved::Done
            }
            Ok(Err(err)) => {
                tracing::warn!(
                    master = %follow.master, cause, error = %err,
                    "asking the sentinels for the redis primary failed; asking again every \
                     250 ms (logged again once they answer)"
                );
                Resolved::NotYet
            }
            Err(_) => {
                tracing::warn!(
                    master = %follow.master, cause,
                    "asking the sentinels for the redis primary timed out; asking again every \
                     250 ms (logged again once they answer)"
                );
                Resolved::NotYet
            }
        }
    }
}

/// What one question to the sentinels gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// Moved, unchanged, or moved meanwhile by someone else: nothing more to ask.
    Done,
    /// No primary named yet (or no answer): ask again.
    NotYet,
    /// Another question is under way.
    Busy,
}

/// How often a failover under way is asked about again in the background.
const CHASE_EVERY: Duration = Duration::from_millis(250);
/// For how long, at most (Sentinel's own failover timeout is of this order).
const CHASE_FOR: Duration = Duration::from_secs(60);

/// The sentinel client for `url`: its sentinels with their credentials, and the data nodes'.
fn sentinel_client(url: &SentinelUrl) -> RedisResult<SentinelClient> {
    let mut sentinel_auth = RedisConnectionInfo::default();
    if let Some(user) = &url.sentinel_username {
        sentinel_auth = sentinel_auth.set_username(user);
    }
    if let Some(pass) = &url.sentinel_password {
        sentinel_auth = sentinel_auth.set_password(pass);
    }
    let params = url
        .sentinels
        .iter()
        .map(|(host, port)| {
            Ok(ConnectionAddr::Tcp(host.clone(), *port)
                .into_connection_info()?
                .set_redis_settings(sentinel_auth.clone()))
        })
        .collect::<RedisResult<Vec<_>>>()?;
    let mut node = RedisConnectionInfo::default().set_db(url.db);
    if let Some(user) = &url.username {
        node = node.set_username(user);
    }
    if let Some(pass) = &url.password {
        node = node.set_password(pass);
    }
    SentinelClient::build(
        params,
        url.master.clone(),
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
        SentinelServerType::Master,
    )
}

/// Asks the sentinels for the primary and connects to it.
async fn connect(
    sentinel: &mut SentinelClient,
    config: &ConnectionManagerConfig,
) -> RedisResult<(ConnectionManager, String)> {
    let client = sentinel.async_get_client().await?;
    let address = client.get_connection_info().addr().to_string();
    let manager = ConnectionManager::new_with_config(client, config.clone()).await?;
    Ok((manager, address))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut manager, generation) = self.current();
            let result = manager.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.after_error(generation, e).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut manager, generation) = self.current();
            let result = manager.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                self.after_error(generation, e).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

#[cfg(test)]
mod tests {
    use super::primary_lost;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn which_errors_send_us_to_the_sentinels() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(primary_lost(&io));
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(primary_lost(&readonly));
        let other = RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "no script"));
        assert!(!primary_lost(&other));
    }
}
