//! The per-instance heartbeat rate limit (governor, keyed by instance id): a noisy worker is
//! slowed down without affecting anyone else — ClaudeBench limited each handler globally.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::json;
use smol_str::SmolStr;

use crate::rpc::{Guard, RpcError, code};

/// Limits `system.heartbeat` per `instanceId`.
#[derive(Debug)]
pub struct HeartbeatLimiter {
    // SmolStr keys: ids of up to 23 bytes are stored inline, so checking a heartbeat does not
    // allocate a key.
    limiter: DefaultKeyedRateLimiter<SmolStr>,
    clock: DefaultClock,
}

impl HeartbeatLimiter {
    /// `n` heartbeats per minute per instance, with a burst of `n`; `None` for 0 (no limit).
    pub fn per_minute(n: u32) -> Option<Self> {
        let n = NonZeroU32::new(n)?;
        Some(Self {
            limiter: governor::RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        })
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
        // Keys are instance ids; the map grows with the number of distinct callers, and
        // governor's `retain_recent` (called below now and then) drops idle ones.
        match self.limiter.check_key(&SmolStr::new(id)) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                if self.limiter.len() > 100_000 {
                    self.limiter.retain_recent();
                }
                Err(RpcError {
                    code: code::RATE_LIMITED,
                    message: format!("rate limited: too many heartbeats from {id}"),
                    data: Some(json!({"retryAfterMs": wait.as_millis().max(1) as u64})),
                })
            }
        }
    }
}
