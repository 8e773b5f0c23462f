//! Coordinator configuration: timing defaults, input limits and where state is kept.

pub mod store;

use std::time::Duration;

pub use store::{PersistMode, RestartGrace, StoreConfig, WaitReplicas};
#[cfg(feature = "redis")]
pub use store::{RedisConfig, SentinelUrl, TYPE_STREAM_MAX_LEN, WAIT_TIMEOUT};

/// Limits on what a caller may register. Every violation is reported as a
/// [`ValidationError`](crate::ValidationError) naming the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest instance id, in characters (default 256).
    pub max_id_chars: usize,
    /// Most roles one instance may carry (default 32).
    pub max_roles: usize,
    /// Longest role, in characters (default 64).
    pub max_role_chars: usize,
    /// Largest metadata object, in bytes of its JSON serialization (default 8 KiB).
    pub max_metadata_bytes: usize,
    /// Shortest TTL an instance may ask for (default 1 s).
    pub min_ttl: Duration,
    /// Longest TTL an instance may ask for (default 1 h).
    pub max_ttl: Duration,
    /// Most instances registered at once (default 1,000,000); a registration past it is refused.
    pub max_instances: usize,
    /// Most live (pending or claimed) tasks at once (default 1,000,000); a `create_task` past
    /// it is refused with [`Error::TooManyTasks`](crate::Error::TooManyTasks) and changes
    /// nothing. Finished tasks are bounded apart, by
    /// [`Config::finished_task_retention`].
    pub max_tasks: usize,
    /// Largest task payload, in bytes of its JSON serialization (default 64 KiB).
    pub max_payload_bytes: usize,
    /// Most attempts a task may be given (default 100).
    pub max_attempts: u32,
    /// Most locks a task may require (default 32).
    pub max_task_locks: usize,
    /// Most tasks one claim may take (default 100).
    pub max_claim: usize,
    /// Shortest lease TTL (default 1 s).
    pub min_lease_ttl: Duration,
    /// Longest lease TTL, also the longest step-heartbeat extension (default 24 h).
    pub max_lease_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_chars: 256,
            max_roles: 32,
            max_role_chars: 64,
            max_metadata_bytes: 8 * 1024,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            max_instances: 1_000_000,
            max_tasks: 1_000_000,
            max_payload_bytes: 64 * 1024,
            max_attempts: 100,
            max_task_locks: 32,
            max_claim: 100,
            min_lease_ttl: Duration::from_secs(1),
            max_lease_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything a [`Coordinator`](crate::Coordinator) needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an instance stays alive without a heartbeat, unless it registers with its own
    /// TTL (default 30 s, as ClaudeBench).
    pub ttl: Duration,
    /// How long before its deadline an instance becomes "suspect" (default 5 s). An instance's
    /// effective grace is at most half its TTL, so a 1 s TTL is suspect after 500 ms.
    pub grace: Duration,
    /// Resolution of the liveness clock that heartbeats read (default 1 ms). An instance expires
    /// between TTL and TTL + one tick after its last heartbeat, never before TTL.
    pub clock_tick: Duration,
    /// Whether the liveness clock's ticker thread asks for real-time priority (Linux, default
    /// true), so that other processes busy on every core cannot hold the coarse clock back.
    /// Refused without `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` above 0, which leaves it at normal
    /// priority. See docs/architecture.md.
    pub clock_realtime: bool,
    /// How many recent events [`Coordinator::state`](crate::Coordinator::state) keeps (default 256).
    pub recent_events: usize,
    /// Capacity of the event broadcast; a subscriber that lags further behind loses the oldest
    /// events and is told how many (default 4096).
    pub event_capacity: usize,
    /// How long a control-path call (register, unregister, state) may wait for an actor before
    /// it fails with [`Error::Timeout`](crate::Error::Timeout) (default 2 s).
    pub call_timeout: Duration,
    /// How long a write-through call (register, unregister, task and lease changes) waits,
    /// counted from its start, for the store to acknowledge its change (default 1.5 s). Past
    /// it the call answers [`Error::NotDurable`](crate::Error::NotDurable), or undoes its change
    /// and answers [`Error::StoreUnavailable`](crate::Error::StoreUnavailable) (see
    /// docs/persistence.md). Must be below `call_timeout`, so that a caller bounded by the
    /// call timeout (the JSON-RPC dispatcher) always receives the store's answer rather than
    /// a timeout. Unused without a store.
    pub store_wait: Duration,
    /// A claimed task whose last step heartbeat is older than this is taken back by the sweep
    /// (default 30 min).
    pub step_timeout: Duration,
    /// How often the LeaderActor sweeps: stale steps, lapsed leases, claims of departed
    /// instances (default 1 s).
    pub sweep_interval: Duration,
    /// TTL of the leases a claim acquires for its task's required locks, and the default TTL
    /// of `acquire_lease` (default 900 s, Sortie's `extend_leases_sec`).
    pub lease_ttl: Duration,
    /// Finished tasks kept for `get_task` / `list_tasks`; the oldest are forgotten first
    /// (default 100 000).
    pub finished_task_retention: usize,
    /// Input limits.
    pub limits: Limits,
    /// Where state is kept (default: in memory only).
    pub store: StoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            clock_tick: Duration::from_millis(1),
            clock_realtime: true,
            recent_events: 256,
            event_capacity: 4096,
            call_timeout: Duration::from_secs(2),
            store_wait: Duration::from_millis(1500),
            step_timeout: Duration::from_secs(30 * 60),
            sweep_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(900),
            finished_task_retention: 100_000,
            limits: Limits::default(),
            store: StoreConfig::Memory,
        }
    }
}

impl Config {
    /// Checks the configuration itself, so that a bad setting fails at start with a clear
    /// message rather than as odd behaviour later.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |field: &'static str, rule: String| {
            Err(crate::Error::Config(crate::ValidationError::new(
                field, rule,
            )))
        };
        if self.ttl < self.limits.min_ttl || self.ttl > self.limits.max_ttl {
            return bad(
                "ttl",
                format!(
                    "must lie within {:?}..={:?}",
                    self.limits.min_ttl, self.limits.max_ttl
                ),
            );
        }
        if self.clock_tick < Duration::from_millis(1) || self.clock_tick > Duration::from_secs(1) {
            return bad("clock_tick", "must lie within 1 ms..=1 s".into());
        }
        if self.event_capacity == 0 {
            return bad("event_capacity", "must be at least 1".into());
        }
        if self.call_timeout.is_zero() {
            return bad("call_timeout", "must be more than zero".into());
        }
        if self.store_wait.is_zero() || self.store_wait >= self.call_timeout {
            return bad(
                "store_wait",
                format!(
                    "must be more than zero and less than call_timeout ({} ms), got {} ms: the \
                     store's answer must come before the call times out",
                    self.call_timeout.as_millis(),
                    self.store_wait.as_millis()
                ),
            );
        }
        if self.sweep_interval < Duration::from_millis(10) {
            return bad("sweep_interval", "must be at least 10 ms".into());
        }
        if self.step_timeout < Duration::from_secs(1) {
            return bad("step_timeout", "must be at least 1 s".into());
        }
        if self.finished_task_retention == 0 {
            return bad(
                "finished_task_retention",
                "must be at least 1: a finished task is kept so that a repeated complete or fail \
                 is answered as the first was"
                    .into(),
            );
        }
        if self.limits.max_tasks == 0 {
            return bad(
                "max_tasks",
                "must be at least 1: with 0 no task could ever be created".into(),
            );
        }
        if self.lease_ttl < self.limits.min_lease_ttl || self.lease_ttl > self.limits.max_lease_ttl
        {
            return bad("lease_ttl", "must lie within the lease TTL limits".into());
        }
        #[cfg(feature = "redis")]
        if let StoreConfig::Redis(redis) = &self.store
            && store::SentinelUrl::is_sentinel(&redis.url)
            && let Err(e) = store::SentinelUrl::parse(&redis.url)
        {
            return bad("store.url", e);
        }
        #[cfg(feature = "redis")]
        if let StoreConfig::Redis(redis) = &self.store {
            // A write-through call waits `store_wait` in all; a WAIT as long would leave no
            // time for the write itself, and one past the response timeout would be taken for
            // a dead connection.
            let wait = redis.wait_timeout;
            if wait.is_zero() || wait >= self.store_wait || wait >= redis.response_timeout {
                return bad(
                    "store.wait_timeout",
                    format!(
                        "must be more than zero and less than the store wait ({} ms) and the \
                         Redis response timeout ({} ms), got {} ms: a write-through call's \
                         WAIT for replicas must end before the call stops waiting",
                        self.store_wait.as_millis(),
                        redis.response_timeout.as_millis(),
                        wait.as_millis()
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "redis"))]
mod wait_tests {
    use super::*;

    /// `wait_timeout` must be above zero (`WAIT n 0` blocks for ever) and below the store wait
    /// and the response timeout; the error names the field and both bounds.
    #[test]
    fn the_wait_timeout_must_end_before_the_store_wait() {
        let with = |wait_ms: u64, store_wait_ms: u64| Config {
            store_wait: Duration::from_millis(store_wait_ms),
            store: StoreConfig::Redis(RedisConfig {
                wait_timeout: Duration::from_millis(wait_ms),
                ..RedisConfig::new("redis://127.0.0.1:1")
            }),
            ..Config::default()
        };
        assert!(with(500, 1500).validate().is_ok(), "the defaults");
        assert!(
            Config {
                store: StoreConfig::Redis(RedisConfig::new("redis://127.0.0.1:1")),
                ..Config::default()
            }
            .validate()
            .is_ok()
        );
        for (wait, store_wait) in [(0, 1500), (1500, 1500), (1600, 1900), (1000, 1900)] {
            match with(wait, store_wait).validate() {
                Err(crate::Error::Config(e)) => {
                    assert_eq!(e.field, "store.wait_timeout", "{wait}/{store_wait}");
                    let text = e.to_string();
                    assert!(
                        text.contains(&format!("got {wait} ms"))
                            && text.contains(&format!("store wait ({store_wait} ms)"))
                            && text.contains("response timeout (1000 ms)"),
                        "{text}"
                    );
                }
                other => panic!("{wait}/{store_wait}: {other:?}"),
            }
        }
        assert!(with(999, 1900).validate().is_ok());
    }
}
