//! The per-instance heartbeat rate limit (governor, keyed by instance id): a noisy worker is
//! slowed down without affecting anyone else — ClaudeBench limited each handler globally.
//!
//! Only registered ids take an entry: a heartbeat for an unknown id is answered `alive: false`
//! from one map lookup and needs no limit, so a flood of invented ids costs no memory. Entries
//! of instances that left are dropped once their state is back to fresh (at most a minute),
//! by a pass that runs whenever the map outgrows the registry.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::json;
use smol_str::SmolStr;

use crate::coordinator::Coordinator;
use crate::rpc::{Guard, RpcError, code};

/// Limits `system.heartbeat` per `instanceId`.
#[derive(Debug)]
pub(crate) struct HeartbeatLimiter {
    coordinator: Coordinator,
    checks: AtomicU64,
    // SmolStr keys: ids of up to 23 bytes are stored inline, so checking a heartbeat does not
    // allocate a key.
    limiter: DefaultKeyedRateLimiter<SmolStr>,
    clock: DefaultClock,
}

impl HeartbeatLimiter {
    /// `n` heartbeats per minute per instance of `coordinator`, with a burst of `n`; `None`
    /// for 0 (no limit).
    pub(crate) fn per_minute(coordinator: Coordinator, n: u32) -> Option<Self> {
        let n = NonZeroU32::new(n)?;
        Some(Self {
            coordinator,
            checks: AtomicU64::new(0),
            limiter: governor::RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        })
    }

    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Drops the entries of ids that left, once the map outgrows the registry (checked every
    /// 1024 heartbeats, so the pass is rare and the check cheap).
    fn prune(&self) {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && self.limiter.len() > self.coordinator.instance_count() + 1024
        {
            self.limiter.retain_recent();
        }
    }
}

impl Guard for HeartbeatLimiter {
    fn check(&self, method: &str, instance: Option<&str>) -> Result<(), RpcError> {
        if method != "system.heartbeat" {
            return Ok(());
        }
        let Some(id) = instance else {
            return Ok(()); // the handler reports the bad params
        };
        if !self.coordinator.is_registered(id) {
            return Ok(()); // answered alive:false; nothing to limit, nothing to remember
        }
        self.prune();
        match self.limiter.check_key(&SmolStr::new(id)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(RpcError {
                    code: code::RATE_LIMITED,
                    message: format!("rate limited: too many heartbeats from {id}"),
                    data: Some(json!({"retryAfterMs": wait.as_millis().max(1) as u64})),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, RegisterRequest};

    #[tokio::test]
    async fn only_registered_ids_take_an_entry() {
        let c = Coordinator::start(Config::default()).await.unwrap();
        let limiter = HeartbeatLimiter::per_minute(c.clone(), 2).unwrap();
        for i in 0..10_000 {
            assert!(
                limiter
                    .check("system.heartbeat", Some(&format!("nobody-{i}")))
                    .is_ok()
            );
        }
        assert_eq!(limiter.len(), 0, "a flood of unknown ids costs nothing");
        c.register(RegisterRequest::new("w1")).await.unwrap();
        assert!(limiter.check("system.heartbeat", Some("w1")).is_ok());
        assert!(limiter.check("system.heartbeat", Some("w1")).is_ok());
        let refused = limiter.check("system.heartbeat", Some("w1")).unwrap_err();
        assert_eq!(refused.code, code::RATE_LIMITED);
        assert_eq!(limiter.len(), 1);
        c.shutdown().await;
    }
}
