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
    /// `redis://host:port/db`, or `redis+sentinel://h1:p1,h2:p2/master-name[/db]` to find the
    /// primary through Redis Sentinel and follow its failovers ([`SentinelUrl`]).
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
    /// How many replicas must confirm a write that a caller waits on before it is
    /// acknowledged (`WAIT`; default [`WaitReplicas::Auto`]). See docs/ha.md, "Acknowledged
    /// means replicated".
    pub wait_replicas: WaitReplicas,
    /// How long one `WAIT` may block (default [`WAIT_TIMEOUT`], 500 ms). Must be more than
    /// zero and below both [`Config::store_wait`](crate::Config::store_wait) and
    /// [`RedisConfig::response_timeout`] ([`Config::validate`](crate::Config::validate)).
    pub wait_timeout: Duration,
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
            wait_replicas: WaitReplicas::Auto,
            wait_timeout: WAIT_TIMEOUT,
        }
    }
}

/// Default of [`RedisConfig::wait_timeout`].
#[cfg(feature = "redis")]
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// How many replicas must confirm a write-through write (`WAIT n timeout`) before the
/// coordinator acknowledges it ([`RedisConfig::wait_replicas`]).
///
/// Only the writes a caller waits on are followed by `WAIT`: the journal's marked entities
/// (registrations, tasks, leases, the term, the counters) and term reservations. Batches of
/// heartbeat timestamps, the flush mark or events alone are not (write-behind stays cheap).
/// A `WAIT` answered by fewer replicas than asked fails the write (`NOT_REPLICATED`): the
/// caller gets [`Error::NotDurable`](crate::Error::NotDurable) (or its call is undone), and
/// the write is retried. `WAIT` is Redis's best effort, not a consensus: see docs/ha.md.
///
/// Written `auto` or a number (`--ha-wait-replicas auto|N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitReplicas {
    /// 1 while Redis reports a replica online (`INFO replication`: `connected_slaves` ≥ 1 and
    /// a `slaveN` line with `state=online`; one still in its initial sync does not count), else
    /// 0 (no `WAIT`: as without replicas). Read at connect, then again at most every few
    /// seconds, after a move to another primary and soon after a `WAIT` that fell short — never
    /// per write (docs/ha.md).
    #[default]
    Auto,
    /// Exactly this many replicas; 0 never waits (the behaviour before `WAIT` existed).
    Fixed(u32),
}

impl std::str::FromStr for WaitReplicas {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        s.parse::<u32>().map(Self::Fixed).map_err(|_| {
            format!("replicas to wait for must be \"auto\" or a number 0 or more, got {s:?}")
        })
    }
}

impl std::fmt::Display for WaitReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// `"auto"`, `"2"` or `2` (TOML: `ha-wait-replicas = "auto"` or `ha-wait-replicas = 1`).
impl<'de> Deserialize<'de> for WaitReplicas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => u32::try_from(n).map(Self::Fixed).map_err(|_| {
                serde::de::Error::custom(format!(
                    "replicas to wait for must be \"auto\" or a number 0 or more, got {n}"
                ))
            }),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The scheme of a Redis Sentinel URL ([`SentinelUrl`]).
#[cfg(feature = "redis")]
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Sentinels' default port, when an address in a [`SentinelUrl`] has none.
#[cfg(feature = "redis")]
pub const SENTINEL_PORT: u16 = 26379;

/// A parsed `redis+sentinel://[user:pass@]host1:port1,host2:port2/master-name[/db][?query]`.
///
/// The store asks the sentinels which node is the primary of `master` and writes there; on a
/// connection error, `READONLY`, `MASTERDOWN` or `NOREPLICAS` it asks again (docs/ha.md,
/// "Redis Sentinel"). `user`/`pass` and `db` apply to the data nodes (primary); the sentinels'
/// own credentials, if they have any, go in the query as `sentinel_username` and
/// `sentinel_password`. Userinfo and query values are percent-decoded. A host without a port
/// gets [`SENTINEL_PORT`]; IPv6 hosts are written in brackets (`[::1]:26379`).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The sentinels' addresses, `(host, port)`, in the order given (at least one).
    pub sentinels: Vec<(String, u16)>,
    /// The monitored master's name (`sentinel monitor <name> …`).
    pub master: String,
    /// The database on the data nodes (default 0).
    pub db: i64,
    /// Username for the data nodes.
    pub username: Option<String>,
    /// Password for the data nodes.
    pub password: Option<String>,
    /// Username for the sentinels.
    pub sentinel_username: Option<String>,
    /// Password for the sentinels.
    pub sentinel_password: Option<String>,
}

#[cfg(feature = "redis")]
impl SentinelUrl {
    /// Whether `url` names sentinels rather than one server (its scheme is `redis+sentinel://`).
    pub fn is_sentinel(url: &str) -> bool {
        url.len() >= SENTINEL_SCHEME.len()
            && url[..SENTINEL_SCHEME.len()].eq_ignore_ascii_case(SENTINEL_SCHEME)
    }

    /// Parses a `redis+sentinel://` URL; the error says what is wrong with it (never quoting a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = redact_url(url);
        let msg = |what: String| format!("bad Redis Sentinel URL {shown:?}: {what}");
        let bad = |what: String| Err(msg(what));
        if !Self::is_sentinel(url) {
            return bad(format!("the scheme must be {SENTINEL_SCHEME}"));
        }
        let rest = &url[SENTINEL_SCHEME.len()..];
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let Some((authority, path)) = before_query.split_once('/') else {
            return bad("the master name is missing (…/master-name[/db])".into());
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (mut username, mut password) = (None, None);
        if let Some(userinfo) = userinfo {
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                username = Some(percent_decode(user).map_err(msg)?);
            }
            if let Some(pass) = pass.filter(|p| !p.is_empty()) {
                password = Some(percent_decode(pass).map_err(msg)?);
            }
        }
        if hosts.is_empty() {
            return bad("no sentinel address before the master name".into());
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            sentinels.push(parse_host(host).map_err(msg)?);
        }
        let mut segments = path.split('/');
        let master = segments.next().unwrap_or_default();
        if master.is_empty() {
            return bad("the master name is empty (…/master-name[/db])".into());
        }
        let master = percent_decode(master).map_err(msg)?;
        let db = match segments.next() {
            None | Some("") => 0,
            Some(db) => match db.parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => return bad(format!("the database {db:?} is not a number 0 or more")),
            },
        };
        if let Some(extra) = segments.find(|s| !s.is_empty()) {
            return bad(format!(
                "unexpected path segment {extra:?} after the database (…/master-name[/db])"
            ));
        }
        let (mut sentinel_username, mut sentinel_password) = (None, None);
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(msg)?;
            match k {
                "sentinel_username" => sentinel_username = Some(v),
                "sentinel_password" => sentinel_password = Some(v),
                other => {
                    return bad(format!(
                        "unknown parameter {other:?} (sentinel_username, sentinel_password)"
                    ));
                }
            }
        }
        Ok(Self {
            sentinels,
            master,
            db,
            username,
            password,
            sentinel_username,
            sentinel_password,
        })
    }
}

/// `host[:port]` or `[v6][:port]`; the port defaults to [`SENTINEL_PORT`].
#[cfg(feature = "redis")]
fn parse_host(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!("the address {s:?} lacks its closing ']'"));
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("the address {s:?} has junk after ']'")),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("the sentinel address {s:?} has no host"));
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("the port in {s:?} is not a number 1..=65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// `%XX` sequences decoded; the result must be UTF-8.
#[cfg(feature = "redis")]
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => return Err("a '%' is not followed by two hex digits".into()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a percent-encoded part is not UTF-8".into())
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
/// `redis://user:****@host`, `redis+unix:///run/redis.sock?pass=****`,
/// `redis+sentinel://:****@h1:26379,h2:26379/vm?sentinel_password=****`. A URL without a
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
                    if k.eq_ignore_ascii_case("pass")
                        || k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sentinel_password") =>
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
        assert_eq!(
            redact_url("redis+sentinel://app:s3cret@h1:1,h2:2/vm/3?sentinel_password=t0p"),
            "redis+sentinel://app:****@h1:1,h2:2/vm/3?sentinel_password=****"
        );
        assert_eq!(
            redact_url("redis+sentinel://h1:1,[::1]:2/vm"),
            "redis+sentinel://h1:1,[::1]:2/vm"
        );
    }
}

#[cfg(all(test, feature = "redis"))]
mod sentinel_url_tests {
    use super::{SENTINEL_PORT, SentinelUrl};

    #[test]
    fn parses_hosts_master_db_and_credentials() {
        let u = SentinelUrl::parse(
            "redis+sentinel://app:p%40ss@10.0.0.1:26380,h2,[::1]:7/vm/2?sentinel_password=s%26p",
        )
        .unwrap();
        assert_eq!(
            u.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26380),
                ("h2".to_string(), SENTINEL_PORT),
                ("::1".to_string(), 7)
            ]
        );
        assert_eq!(u.master, "vm");
        assert_eq!(u.db, 2);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.sentinel_password.as_deref(), Some("s&p"));
        assert_eq!(u.sentinel_username, None);
        let plain = SentinelUrl::parse("REDIS+SENTINEL://127.0.0.1:1/m").unwrap();
        assert_eq!(plain.db, 0);
        assert_eq!(plain.password, None);
        assert_eq!(
            SentinelUrl::parse("redis+sentinel://:pw@h:1/m/")
                .unwrap()
                .password
                .as_deref(),
            Some("pw")
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, expect) in [
            ("redis://h:1/m", "the scheme must be"),
            ("redis+sentinel://h:1", "master name is missing"),
            ("redis+sentinel://h:1/", "master name is empty"),
            ("redis+sentinel:///m", "no sentinel address"),
            ("redis+sentinel://h:1,,h:2/m", "has no host"),
            ("redis+sentinel://h:x/m", "not a number 1..=65535"),
            ("redis+sentinel://h:0/m", "not a number 1..=65535"),
            ("redis+sentinel://[::1/m", "closing ']'"),
            ("redis+sentinel://h:1/m/x", "database \"x\""),
            ("redis+sentinel://h:1/m/-1", "database \"-1\""),
            ("redis+sentinel://h:1/m/0/z", "unexpected path segment"),
            ("redis+sentinel://h:1/m?db=2", "unknown parameter \"db\""),
            ("redis+sentinel://u:secret@h:1/m?x=1", "unknown parameter"),
            ("redis+sentinel://u:a%zz@h:1/m", "two hex digits"),
        ] {
            let e = SentinelUrl::parse(url).unwrap_err();
            assert!(e.contains(expect), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
        assert!(!SentinelUrl::is_sentinel("redis://h:1/"));
    }
}
