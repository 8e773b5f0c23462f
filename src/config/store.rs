//! Where the coordinator keeps its durable copy: [`StoreConfig`] and the Redis store's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Consecutive store failures that open the circuit breaker by default.
pub const BREAKER_FAILURES: u32 = 20;
/// How long the circuit breaker stays open by default before a probe.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(10);

/// How heartbeats reach the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistMode {
    /// Coalesced per instance and flushed every flush interval (the default).
    #[default]
    WriteBehind,
    /// One synchronous script call per heartbeat.
    WriteThrough,
}

impl std::str::FromStr for PersistMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write-behind" => Ok(Self::WriteBehind),
            "write-through" => Ok(Self::WriteThrough),
            other => Err(format!(
                "unknown persist mode {other:?} (write-behind or write-through)"
            )),
        }
    }
}

/// Where state is kept. Non-exhaustive: the `Redis` variant exists with the `redis` feature.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum StoreConfig {
    /// In memory only (nothing survives a restart).
    #[default]
    Memory,
    /// In Redis.
    #[cfg(feature = "redis")]
    Redis(RedisConfig),
}

/// Default cap of each per-type event stream `{prefix}stream:<type>`
/// ([`RedisConfig::type_stream_max_len`]).
#[cfg(feature = "redis")]
pub const TYPE_STREAM_MAX_LEN: usize = 1000;

/// Settings of the Redis store.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix (default `cb:`, ClaudeBench's).
    pub prefix: String,
    /// How often heartbeat timestamps are flushed (default 250 ms).
    pub flush_interval: Duration,
    /// Write-behind (default) or write-through heartbeats.
    pub persist: PersistMode,
    /// Most events kept in the capped stream (default 10 000).
    pub stream_max_len: usize,
    /// Most events kept in each of ClaudeBench's per-type streams `{prefix}stream:<type>`
    /// (`XADD … MAXLEN ~`, default [`TYPE_STREAM_MAX_LEN`]); 0 writes none.
    pub type_stream_max_len: usize,
    /// `PUBLISH` each event's ClaudeBench envelope on the channel named by its type
    /// (`task.created`, no prefix), where ClaudeBench's relay listens (default true).
    pub publish_events: bool,
    /// Time allowed for one Redis round trip before it counts as a failure (default 1 s).
    pub response_timeout: Duration,
    /// Consecutive failures that open the circuit breaker (default 20).
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe (default 10 s).
    pub breaker_open_for: Duration,
    /// How long an instance's record outlives its TTL in Redis (default 10 min). A record is
    /// deleted as soon as the coordinator expires the instance; this margin only matters while
    /// no coordinator writes — a crash, or a store outage — so that a coordinator restarted
    /// within it still finds the instances to give their TTL back ([`RestartGrace::FullTtl`]).
    /// Past it an instance listed in `{p}instances:active` without a record is expired at once.
    pub record_retention: Duration,
    /// What a restart assumes about instances whose stored TTL ran out (default
    /// [`RestartGrace::FullTtl`]).
    pub restart_grace: RestartGrace,
    /// The coordinator epoch every write is fenced with (default `None`: no check, as
    /// without high availability). With `Some(e)` each write script first compares `e` with
    /// the epoch of the coordinator lease in `{prefix}coordinator` and refuses the write with
    /// `FENCED` when they differ ([`StoreError::is_fenced`](crate::store::StoreError::is_fenced)):
    /// a coordinator that lost the lease can no longer write. See docs/ha.md.
    pub fence_epoch: Option<u64>,
}

#[cfg(feature = "redis")]
impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "cb:".into(),
            flush_interval: Duration::from_millis(250),
            persist: PersistMode::WriteBehind,
            stream_max_len: 10_000,
            type_stream_max_len: TYPE_STREAM_MAX_LEN,
            publish_events: true,
            response_timeout: Duration::from_secs(1),
            breaker_failures: BREAKER_FAILURES,
            breaker_open_for: BREAKER_OPEN_FOR,
            record_retention: Duration::from_secs(600),
            restart_grace: RestartGrace::FullTtl,
            fence_epoch: None,
        }
    }
}

/// What a coordinator restarted from the store assumes about the instances the store still
/// lists as alive whose TTL, by their stored last heartbeat, has run out.
///
/// Heartbeats are written behind, and not at all while the store is unreachable or its circuit
/// is open; so after a crash the store cannot tell an instance that died from one that kept
/// heartbeating into memory after the last successful flush. A restart can either give every
/// listed instance its TTL back (late detection of the dead, never an early expiry of the
/// living) or trust the last flush (prompt takeover, but a store outage followed by a crash
/// expires live instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartGrace {
    /// Every instance the store lists as alive gets a full TTL from the restart, counted from
    /// the moment recovery reads the store (the default; Consul's session TTLs and Nomad's node
    /// heartbeat timers are reset on a leader failover the same way). A worker that died while
    /// the coordinator was down is expired one TTL after the restart, and its tasks go back
    /// then.
    #[default]
    #[serde(rename = "ttl")]
    FullTtl,
    /// Assume heartbeats up to one flush interval after the store's last successful flush, and
    /// expire at once the instances whose TTL ran out since. Hands a dead worker's tasks back
    /// sooner after a long downtime, but a crash within a store outage (or within the breaker's
    /// open period after it) expires instances that kept heartbeating.
    #[serde(rename = "last-flush")]
    SinceLastFlush,
}

impl std::str::FromStr for RestartGrace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ttl" => Ok(Self::FullTtl),
            "last-flush" => Ok(Self::SinceLastFlush),
            other => Err(format!(
                "unknown restart grace {other:?} (ttl or last-flush)"
            )),
        }
    }
}

/// `url` with its password hidden, for logs and errors: `redis://:****@host:6379/0`,
/// `redis://user:****@host`, `redis+unix:///run/redis.sock?pass=****`. A URL without a
/// password comes back unchanged.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "****";
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{HIDDEN}@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
                {
                    format!("{k}={HIDDEN}")
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://:****@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:p@ss:w@rd@host"),
            "rediss://app:****@host"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://user@host:1"), "redis://user@host:1");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=****"
        );
    }
}
