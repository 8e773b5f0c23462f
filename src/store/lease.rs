//! The coordinator lease: which of several coordinators on one Redis is the active one, and
//! the epoch that fences the writes of every other.
//!
//! The lease is the hash `{prefix}coordinator` (`epoch`, `holder`, `url`, `expiresAt`), which
//! never expires, so the epoch survives. Three scripts change it (`coord_acquire.lua`,
//! `coord_renew.lua`, `coord_release.lua` beside this file); they take the time from Redis
//! (`TIME`), so the coordinators' clocks do not matter. Each acquisition of a free or expired
//! lease raises the epoch above every epoch used before; the active coordinator writes with
//! [`RedisConfig::fence_epoch`] set to it, and every write script refuses a write whose epoch
//! is not the lease's (`FENCED`). See docs/ha.md.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

use super::redis::{Conn, Keys};
use super::{RedisConfig, StoreError};

/// What [`CoordLease::try_acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours, under this new epoch.
    Acquired {
        /// The epoch to write with: above every epoch used before.
        epoch: u64,
    },
    /// Another coordinator holds the lease.
    Held {
        /// Its epoch.
        epoch: u64,
        /// Its holder id.
        holder: String,
        /// The URL it advertised (where clients are redirected).
        url: String,
        /// How long the lease runs unless renewed, by Redis's clock.
        remaining: Duration,
    },
}

/// What [`CoordLease::renew`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease is still ours and runs one more lease from now.
    Renewed,
    /// The lease is not ours any more (taken over, released, or gone with the data): stop
    /// writing at once.
    Fenced {
        /// The epoch stored now (0 when there is none).
        epoch: u64,
    },
}

/// The coordinator lease in one Redis, on a connection of its own (so that renewals never
/// queue behind the store's long calls).
#[derive(Clone)]
pub struct CoordLease {
    connection: Conn,
    /// How many replicas must have an acquisition, and for how long to wait for them.
    wait: (crate::config::WaitReplicas, Duration),
    /// The connection's generation (moves to another primary) at the last acquisition.
    acquired_on: std::sync::Arc<std::sync::atomic::AtomicU64>,
    key: String,
    counters: String,
    scripts: std::sync::Arc<[redis::Script; 3]>,
}

impl std::fmt::Debug for CoordLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordLease")
            .field("key", &self.key)
            .finish()
    }
}

fn fail(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("coordinator lease: {context}: {e}"))
}

fn lease_ms(lease: Duration) -> Result<u64, StoreError> {
    match u64::try_from(lease.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(StoreError(format!(
            "coordinator lease: a lease of {lease:?} is not a positive number of milliseconds"
        ))),
    }
}

fn check_holder(holder: &str) -> Result<(), StoreError> {
    if holder.is_empty() {
        return Err(StoreError(
            "coordinator lease: the holder id must not be empty".into(),
        ));
    }
    Ok(())
}

impl CoordLease {
    /// Connects to `config.url` (the server must be reachable now; a `redis+sentinel://` URL
    /// finds the primary through the sentinels and follows it), for the lease key under
    /// `config.prefix`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let sources = [
            include_str!("lua/coord_acquire.lua"),
            include_str!("lua/coord_renew.lua"),
            include_str!("lua/coord_release.lua"),
        ];
        let connection = Conn::open(
            &config.url,
            manager_config,
            sources.iter().map(|s| s.to_string()).collect(),
            config.response_timeout * 3,
        )
        .await
        .map_err(StoreError)?;
        let keys = Keys::new(config.prefix.clone());
        Ok(Self {
            connection,
            wait: (config.wait_replicas, config.wait_timeout),
            acquired_on: std::sync::Arc::default(),
            key: keys.coordinator(),
            counters: keys.counters(),
            scripts: std::sync::Arc::new(sources.map(redis::Script::new)),
        })
    }

    /// A holder id unique to this process start: `hostname:pid:random64`.
    pub fn holder_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!(
            "{host}:{}:{:016x}",
            std::process::id(),
            rand::random::<u64>()
        )
    }

    /// Takes the lease for `lease` as `holder` (advertising `url`) if nobody holds it or it
    /// expired, under a new epoch above every epoch before; else says who holds it.
    ///
    /// Fails on a store error, and when the epochs are exhausted (2^21 − 1: epochs go into
    /// the high bits of 53-bit values).
    pub async fn try_acquire(
        &self,
        holder: &str,
        url: &str,
        lease: Duration,
    ) -> Result<Acquire, StoreError> {
        check_holder(holder)?;
        let ms = lease_ms(lease)?;
        self.acquired_on.store(
            self.connection.generation(),
            std::sync::atomic::Ordering::Release,
        );
        let reply: Vec<redis::Value> = self.scripts[0]
            .key(&self.key)
            .key(&self.counters)
            .arg(holder)
            .arg(url)
            .arg(ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail("acquire", e))?;
        let int = |i: usize| -> Result<u64, StoreError> {
            reply
                .get(i)
                .cloned()
                .ok_or_else(|| fail("acquire", "short reply"))
                .and_then(|v| redis::from_redis_value::<u64>(v).map_err(|e| fail("acquire", e)))
        };
        let text = |i: usize| -> Result<String, StoreError> {
            reply
                .get(i)
                .cloned()
                .ok_or_else(|| fail("acquire", "short reply"))
                .and_then(|v| redis::from_redis_value::<String>(v).map_err(|e| fail("acquire", e)))
        };
        if int(0)? == 1 {
            Ok(Acquire::Acquired { epoch: int(1)? })
        } else {
            Ok(Acquire::Held {
                epoch: int(1)?,
                holder: text(2)?,
                url: text(3)?,
                remaining: Duration::from_millis(int(4)?),
            })
        }
    }

    /// Whether the replicas have this connection's writes (an acquisition just made): `true`
    /// when none is required — [`WaitReplicas::Auto`](crate::config::WaitReplicas::Auto)
    /// with no replica online, or a fixed 0 — or when `WAIT` confirms enough of them within
    /// [`RedisConfig::wait_timeout`]. A new epoch that only the primary holds would be lost
    /// with it, and a successor could take the same epoch again: the caller does not serve
    /// under it (it releases the lease and tries again).
    pub async fn replicated(&self) -> Result<bool, StoreError> {
        let (wanted, timeout) = self.wait;
        let needed = match wanted {
            crate::config::WaitReplicas::Fixed(n) => n,
            crate::config::WaitReplicas::Auto => {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut self.connection.clone())
                    .await
                    .map_err(|e| fail("INFO replication", e))?;
                super::redis::wait::online_replicas(&info)
                    .unwrap_or(0)
                    .min(1)
            }
        };
        if needed == 0 {
            return Ok(true);
        }
        if self.connection.generation()
            != self.acquired_on.load(std::sync::atomic::Ordering::Acquire)
        {
            // The connection moved to another primary since: a `WAIT` there would count the
            // replicas of a node that may never have had the acquisition.
            return Ok(false);
        }
        let acknowledged: u32 = redis::cmd("WAIT")
            .arg(needed)
            .arg(timeout.as_millis() as u64)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail("WAIT", e))?;
        Ok(acknowledged >= needed)
    }

    /// Extends the lease by `lease` from now if `holder` holds it under `epoch`.
    pub async fn renew(
        &self,
        epoch: u64,
        holder: &str,
        lease: Duration,
    ) -> Result<Renewal, StoreError> {
        check_holder(holder)?;
        let ms = lease_ms(lease)?;
        let reply: Vec<u64> = self.scripts[1]
            .key(&self.key)
            .arg(epoch)
            .arg(holder)
            .arg(ms)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail("renew", e))?;
        match reply.as_slice() {
            [1] => Ok(Renewal::Renewed),
            [0, stored] => Ok(Renewal::Fenced { epoch: *stored }),
            other => Err(fail("renew", format!("unexpected reply {other:?}"))),
        }
    }

    /// Gives the lease up if `holder` holds it under `epoch` (true), keeping the epoch, so a
    /// standby can take over at once; false when it was not ours.
    pub async fn release(&self, epoch: u64, holder: &str) -> Result<bool, StoreError> {
        check_holder(holder)?;
        let released: u64 = self.scripts[2]
            .key(&self.key)
            .arg(epoch)
            .arg(holder)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| fail("release", e))?;
        Ok(released == 1)
    }
}
