//! Settings of `vigil serve`: each from its flag, else its `VIGIL_*` environment variable, else
//! the TOML file given by `--config`, else the default.
//!
//! The file uses the flags' names as keys:
//!
//! ```toml
//! listen = "127.0.0.1:7420"
//! token = "s3cret"
//! tokens = "/etc/vigil/tokens.toml"   # named tokens: [[token]] name, role, token
//! ttl = "30s"            # humantime durations
//! grace = "5s"
//! heartbeat-rate = 1000  # per instance per minute; 0 = no limit
//! max-body = 1048576
//! max-batch = 1000
//! max-answer-bytes = 16777216        # byte budget of one response
//! max-tasks = 1000000                # live (pending + claimed) tasks
//! header-timeout = "10s"  # a request's head must arrive within it
//! body-timeout = "30s"    # a request's body must arrive within it of the head (else 408)
//! idle-timeout = "120s"   # keep-alive connections and silent WebSockets are closed after it
//! max-connections = 10000 # more wait in the listen backlog
//! log-format = "json"    # or "human"
//! threads = 2            # runtime worker threads; 1 = single-threaded
//! redis = "redis://127.0.0.1:6379"   # absent: in-memory store
//! prefix = "cb:"
//! flush-interval = "250ms"
//! persist = "write-behind"           # or "write-through"
//! record-retention = "10m"            # how long a record outlives its TTL in Redis
//! restart-grace = "ttl"               # or "last-flush"
//! ha-wait-replicas = "auto"           # or a number: replicas that confirm (WAIT) a write
//! ha-wait-timeout = "500ms"           # longest one WAIT blocks
//! chaos = false                       # serve chaos.* fault injection (tests only)
//! mcp = true                          # serve MCP at POST /mcp
//! ui = true                           # serve the status page at GET /
//! clock-realtime = true               # real-time priority for the clock's ticker (Linux)
//! ha = false                          # one of several coordinators on one Redis (docs/ha.md)
//! ha-lease = "10s"                    # the coordinator lease
//! ha-renew-deadline = "6s"            # the active steps down if not renewed within it
//! ha-retry = "1s"                     # renewal period, and a standby's acquire period
//! ha-advertise = "http://10.0.0.5:7420"  # the URL clients are sent to while active
//! ```
//!
//! An unknown key or a value of the wrong type is an error naming the key, never ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::store::{PersistMode, RedisConfig, RestartGrace, StoreConfig, WaitReplicas};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Every setting optional: one layer (the command line, or the file).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeLayer {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// The operator's bearer token for /rpc, /ws and /metrics.
    pub token: Option<String>,
    /// File of named tokens.
    pub tokens: Option<PathBuf>,
    /// Heartbeats allowed per instance per minute (0: no limit).
    pub heartbeat_rate: Option<u32>,
    /// Largest request body in bytes.
    pub max_body: Option<usize>,
    /// Most requests in one batch.
    pub max_batch: Option<usize>,
    /// Byte budget of one response.
    pub max_answer_bytes: Option<usize>,
    /// Most live (pending or claimed) tasks.
    pub max_tasks: Option<usize>,
    /// How long a client has to send a request's head.
    #[serde(default, deserialize_with = "duration")]
    pub header_timeout: Option<Duration>,
    /// How long a client has to send a request's body, from its head.
    #[serde(default, deserialize_with = "duration")]
    pub body_timeout: Option<Duration>,
    /// How long a keep-alive connection or a WebSocket may stay silent.
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Most connections open at once.
    pub max_connections: Option<usize>,
    /// Default instance TTL.
    #[serde(default, deserialize_with = "duration")]
    pub ttl: Option<Duration>,
    /// How long before its deadline an instance turns suspect.
    #[serde(default, deserialize_with = "duration")]
    pub grace: Option<Duration>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Runtime worker threads (1: a single-threaded runtime).
    pub threads: Option<usize>,
    /// Redis URL (absent: in-memory store).
    pub redis: Option<String>,
    /// Redis key prefix.
    pub prefix: Option<String>,
    /// Heartbeat flush interval.
    #[serde(default, deserialize_with = "duration")]
    pub flush_interval: Option<Duration>,
    /// How heartbeats are written.
    pub persist: Option<PersistMode>,
    /// How long an instance's record outlives its TTL in Redis.
    #[serde(default, deserialize_with = "duration")]
    pub record_retention: Option<Duration>,
    /// What a restart assumes about instances whose stored TTL ran out.
    pub restart_grace: Option<RestartGrace>,
    /// Replicas that must confirm a write-through write (`WAIT`).
    pub ha_wait_replicas: Option<WaitReplicas>,
    /// Longest one `WAIT` for replicas blocks.
    #[serde(default, deserialize_with = "duration")]
    pub ha_wait_timeout: Option<Duration>,
    /// Serve the chaos.* fault-injection methods.
    pub chaos: Option<bool>,
    /// Serve MCP at `POST /mcp`.
    pub mcp: Option<bool>,
    /// Serve the status page at `GET /`.
    pub ui: Option<bool>,
    /// Ask for real-time priority for the liveness clock's ticker.
    pub clock_realtime: Option<bool>,
    /// Run as one of several coordinators on one Redis (high availability).
    pub ha: Option<bool>,
    /// The coordinator lease.
    #[serde(default, deserialize_with = "duration")]
    pub ha_lease: Option<Duration>,
    /// How long the active may go without a renewal before it steps down.
    #[serde(default, deserialize_with = "duration")]
    pub ha_renew_deadline: Option<Duration>,
    /// How often the active renews and a standby tries to acquire.
    #[serde(default, deserialize_with = "duration")]
    pub ha_retry: Option<Duration>,
    /// The URL clients are redirected to while this coordinator is active.
    pub ha_advertise: Option<String>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
}

impl ServeLayer {
    /// Reads a TOML file; the error names the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// This layer's values where set, `lower`'s elsewhere.
    pub fn over(self, lower: ServeLayer) -> ServeLayer {
        ServeLayer {
            listen: self.listen.or(lower.listen),
            token: self.token.or(lower.token),
            tokens: self.tokens.or(lower.tokens),
            heartbeat_rate: self.heartbeat_rate.or(lower.heartbeat_rate),
            max_body: self.max_body.or(lower.max_body),
            max_batch: self.max_batch.or(lower.max_batch),
            max_answer_bytes: self.max_answer_bytes.or(lower.max_answer_bytes),
            max_tasks: self.max_tasks.or(lower.max_tasks),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            body_timeout: self.body_timeout.or(lower.body_timeout),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            ttl: self.ttl.or(lower.ttl),
            grace: self.grace.or(lower.grace),
            log_format: self.log_format.or(lower.log_format),
            threads: self.threads.or(lower.threads),
            redis: self.redis.or(lower.redis),
            prefix: self.prefix.or(lower.prefix),
            flush_interval: self.flush_interval.or(lower.flush_interval),
            persist: self.persist.or(lower.persist),
            record_retention: self.record_retention.or(lower.record_retention),
            restart_grace: self.restart_grace.or(lower.restart_grace),
            ha_wait_replicas: self.ha_wait_replicas.or(lower.ha_wait_replicas),
            ha_wait_timeout: self.ha_wait_timeout.or(lower.ha_wait_timeout),
            chaos: self.chaos.or(lower.chaos),
            mcp: self.mcp.or(lower.mcp),
            ui: self.ui.or(lower.ui),
            clock_realtime: self.clock_realtime.or(lower.clock_realtime),
            ha: self.ha.or(lower.ha),
            ha_lease: self.ha_lease.or(lower.ha_lease),
            ha_renew_deadline: self.ha_renew_deadline.or(lower.ha_renew_deadline),
            ha_retry: self.ha_retry.or(lower.ha_retry),
            ha_advertise: self.ha_advertise.or(lower.ha_advertise),
        }
    }

    /// Fills what is still unset with the defaults.
    pub fn resolve(self) -> ServeSettings {
        let d = ServeSettings::default();
        ServeSettings {
            listen: self.listen.unwrap_or(d.listen),
            token: self.token.or(d.token),
            tokens: self.tokens.or(d.tokens),
            heartbeat_rate: self.heartbeat_rate.unwrap_or(d.heartbeat_rate),
            max_body: self.max_body.unwrap_or(d.max_body),
            max_batch: self.max_batch.unwrap_or(d.max_batch),
            max_answer_bytes: self.max_answer_bytes.unwrap_or(d.max_answer_bytes),
            max_tasks: self.max_tasks.unwrap_or(d.max_tasks),
            header_timeout: self.header_timeout.unwrap_or(d.header_timeout),
            body_timeout: self.body_timeout.unwrap_or(d.body_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            ttl: self.ttl.unwrap_or(d.ttl),
            grace: self.grace.unwrap_or(d.grace),
            log_format: self.log_format.unwrap_or(d.log_format),
            threads: self.threads.filter(|&t| t > 0).unwrap_or(d.threads),
            redis: self.redis.or(d.redis),
            prefix: self.prefix.unwrap_or(d.prefix),
            flush_interval: self.flush_interval.unwrap_or(d.flush_interval),
            persist: self.persist.unwrap_or(d.persist),
            record_retention: self.record_retention.unwrap_or(d.record_retention),
            restart_grace: self.restart_grace.unwrap_or(d.restart_grace),
            ha_wait_replicas: self.ha_wait_replicas.unwrap_or(d.ha_wait_replicas),
            ha_wait_timeout: self.ha_wait_timeout.unwrap_or(d.ha_wait_timeout),
            chaos: self.chaos.unwrap_or(d.chaos),
            mcp: self.mcp.unwrap_or(d.mcp),
            ui: self.ui.unwrap_or(d.ui),
            clock_realtime: self.clock_realtime.unwrap_or(d.clock_realtime),
            ha: self.ha.unwrap_or(d.ha),
            ha_lease: self.ha_lease.unwrap_or(d.ha_lease),
            ha_renew_deadline: self.ha_renew_deadline.unwrap_or(d.ha_renew_deadline),
            ha_retry: self.ha_retry.unwrap_or(d.ha_retry),
            ha_advertise: self.ha_advertise.or(d.ha_advertise),
        }
    }
}

/// The resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    /// Address to listen on (127.0.0.1:7420).
    pub listen: SocketAddr,
    /// Bearer token (none).
    pub token: Option<String>,
    /// File of named tokens (none).
    pub tokens: Option<PathBuf>,
    /// Heartbeats per instance per minute (1000).
    pub heartbeat_rate: u32,
    /// Largest body (1 MiB).
    pub max_body: usize,
    /// Largest batch (1000).
    pub max_batch: usize,
    /// Byte budget of one response (16 MiB).
    pub max_answer_bytes: usize,
    /// Most live (pending or claimed) tasks (1,000,000).
    pub max_tasks: usize,
    /// Time to send a request's head (10 s).
    pub header_timeout: Duration,
    /// Time to send a request's body, from its head (30 s).
    pub body_timeout: Duration,
    /// Time a keep-alive connection or a WebSocket may stay silent (120 s).
    pub idle_timeout: Duration,
    /// Most connections open at once (10 000).
    pub max_connections: usize,
    /// Default TTL (30 s).
    pub ttl: Duration,
    /// Grace (5 s).
    pub grace: Duration,
    /// Log format (human).
    pub log_format: LogFormat,
    /// Runtime worker threads (one per core; 1 = single-threaded runtime).
    pub threads: usize,
    /// Redis URL (none: in-memory store).
    pub redis: Option<String>,
    /// Redis key prefix (`cb:`).
    pub prefix: String,
    /// Heartbeat flush interval (250 ms).
    pub flush_interval: Duration,
    /// How heartbeats are written (write-behind).
    pub persist: PersistMode,
    /// How long an instance's record outlives its TTL in Redis (10 min).
    pub record_retention: Duration,
    /// What a restart assumes about instances whose stored TTL ran out (a full TTL).
    pub restart_grace: RestartGrace,
    /// Replicas that must confirm a write-through write (auto).
    pub ha_wait_replicas: WaitReplicas,
    /// Longest one `WAIT` for replicas blocks (500 ms).
    pub ha_wait_timeout: Duration,
    /// Serve chaos.* (off).
    pub chaos: bool,
    /// Serve MCP at `POST /mcp` (on).
    pub mcp: bool,
    /// Serve the status page at `GET /` (on).
    pub ui: bool,
    /// Ask for real-time priority for the liveness clock's ticker (on).
    pub clock_realtime: bool,
    /// One of several coordinators on one Redis (off).
    pub ha: bool,
    /// The coordinator lease (10 s).
    pub ha_lease: Duration,
    /// The active steps down when it has not renewed within this (6 s).
    pub ha_renew_deadline: Duration,
    /// Renewal period of the active, acquire period of a standby (1 s).
    pub ha_retry: Duration,
    /// The URL advertised to clients while active (none: `http://` and the bound address).
    pub ha_advertise: Option<String>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        let core = crate::Config::default();
        let redis = RedisConfig::new("");
        Self {
            // The server's defaults (`server::ServerConfig::default()`; a test in `serve.rs`
            // keeps the two in step).
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            token: None,
            tokens: None,
            heartbeat_rate: 1000,
            max_body: 1024 * 1024,
            max_batch: 1000,
            max_answer_bytes: crate::rpc::DEFAULT_MAX_ANSWER_BYTES,
            max_tasks: core.limits.max_tasks,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
            ttl: core.ttl,
            grace: core.grace,
            log_format: LogFormat::Human,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            redis: None,
            prefix: redis.prefix,
            flush_interval: redis.flush_interval,
            persist: redis.persist,
            record_retention: redis.record_retention,
            restart_grace: redis.restart_grace,
            ha_wait_replicas: redis.wait_replicas,
            ha_wait_timeout: redis.wait_timeout,
            chaos: false,
            mcp: true,
            ui: true,
            clock_realtime: core.clock_realtime,
            ha: false,
            ha_lease: Duration::from_secs(10),
            ha_renew_deadline: Duration::from_secs(6),
            ha_retry: Duration::from_secs(1),
            ha_advertise: None,
        }
    }
}

/// A token file: `[[token]]` tables of `name`, `role` and `token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<crate::server::NamedToken>,
}

/// Reads a token file (see [`crate::server::NamedToken`]); the error names the file. Warns when
/// other users may read it.
pub fn read_tokens(path: &Path) -> Result<Vec<crate::server::NamedToken>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o044 != 0 {
            tracing::warn!(file = %path.display(), "the token file is readable by other users; chmod 600 it");
        }
    }
    // The error names the place and the rule, never the text: the line may hold a token.
    let file: TokenFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => format!(
                "token file {}, line {line}: {}",
                path.display(),
                e.message()
            ),
            None => format!("token file {}: {}", path.display(), e.message()),
        }
    })?;
    if file.token.is_empty() {
        return Err(format!(
            "token file {}: no [[token]] entries",
            path.display()
        ));
    }
    Ok(file.token)
}

impl ServeSettings {
    /// The coordinator's configuration.
    pub fn coordinator_config(&self) -> crate::Config {
        let store = match &self.redis {
            None => StoreConfig::Memory,
            Some(url) => StoreConfig::Redis(RedisConfig {
                prefix: self.prefix.clone(),
                flush_interval: self.flush_interval,
                persist: self.persist,
                record_retention: self.record_retention,
                restart_grace: self.restart_grace,
                wait_replicas: self.ha_wait_replicas,
                wait_timeout: self.ha_wait_timeout,
                ..RedisConfig::new(url.clone())
            }),
        };
        let core = crate::Config::default();
        crate::Config {
            ttl: self.ttl,
            grace: self.grace,
            clock_realtime: self.clock_realtime,
            store,
            limits: crate::Limits {
                max_tasks: self.max_tasks,
                ..core.limits.clone()
            },
            ..core
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_asks_for_realtime_priority_unless_told_not_to() {
        let default = ServeLayer::default().resolve();
        assert!(default.coordinator_config().clock_realtime);
        let file = ServeLayer::from_toml("clock-realtime = false\n").unwrap();
        assert!(
            !ServeLayer::default()
                .over(file)
                .resolve()
                .coordinator_config()
                .clock_realtime
        );
    }

    #[test]
    fn file_values_fill_what_flags_leave_unset() {
        let file = ServeLayer::from_toml(
            "listen = \"127.0.0.1:9000\"\nttl = \"1m\"\nheartbeat-rate = 50\nlog-format = \"json\"\n\
             redis = \"redis://127.0.0.1:1\"\npersist = \"write-through\"\nflush-interval = \"1s\"\n\
             record-retention = \"2m\"\nrestart-grace = \"last-flush\"\n\
             header-timeout = \"5s\"\nidle-timeout = \"1m\"\nmax-connections = 64\n",
        )
        .unwrap();
        let flags = ServeLayer {
            heartbeat_rate: Some(7),
            ..ServeLayer::default()
        };
        let s = flags.over(file).resolve();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.ttl, Duration::from_secs(60));
        assert_eq!(s.heartbeat_rate, 7, "the flag wins over the file");
        assert_eq!(
            s.grace,
            Duration::from_secs(5),
            "default where neither sets it"
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.header_timeout, Duration::from_secs(5));
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.max_connections, 64);
        assert_eq!(s.body_timeout, Duration::from_secs(30), "the default");
        match s.coordinator_config().store {
            StoreConfig::Redis(r) => {
                assert_eq!(r.url, "redis://127.0.0.1:1");
                assert_eq!(r.persist, PersistMode::WriteThrough);
                assert_eq!(r.flush_interval, Duration::from_secs(1));
                assert_eq!(r.prefix, "cb:");
                assert_eq!(r.record_retention, Duration::from_secs(120));
                assert_eq!(r.restart_grace, RestartGrace::SinceLastFlush);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ServeLayer::default().resolve(), ServeSettings::default());
    }

    #[test]
    fn bad_files_are_refused_with_the_key_named() {
        let unknown = ServeLayer::from_toml("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(unknown.contains("listn"), "{unknown}");
        let duration = ServeLayer::from_toml("ttl = \"soon\"").unwrap_err();
        assert!(
            duration.contains("ttl") && duration.contains("soon"),
            "{duration}"
        );
        let kind = ServeLayer::from_toml("max-batch = \"many\"").unwrap_err();
        assert!(kind.contains("max-batch"), "{kind}");
        let grace = ServeLayer::from_toml("restart-grace = \"never\"").unwrap_err();
        assert!(
            grace.contains("restart-grace") && grace.contains("never"),
            "{grace}"
        );
        let missing = ServeLayer::from_file(Path::new("/nonexistent/vigil.toml")).unwrap_err();
        assert!(missing.contains("/nonexistent/vigil.toml"), "{missing}");
    }

    /// `--ha-wait-replicas auto|N` and `--ha-wait-timeout`: parsed from flags and TOML,
    /// flags over the file, carried into the Redis settings; bad values named.
    #[test]
    fn ha_wait_flags_parse_layer_and_reach_the_store() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: crate::cli::serve::ServeArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|c| c.serve.settings(None))
        };
        let d = parse(&[]).unwrap();
        assert_eq!(d.ha_wait_replicas, WaitReplicas::Auto);
        assert_eq!(d.ha_wait_timeout, Duration::from_millis(500));
        let s = parse(&[
            "--redis",
            "redis://127.0.0.1:1",
            "--ha-wait-replicas",
            "2",
            "--ha-wait-timeout",
            "250ms",
        ])
        .unwrap();
        match s.coordinator_config().store {
            StoreConfig::Redis(r) => {
                assert_eq!(r.wait_replicas, WaitReplicas::Fixed(2));
                assert_eq!(r.wait_timeout, Duration::from_millis(250));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&["--ha-wait-replicas", "AUTO"])
                .unwrap()
                .ha_wait_replicas,
            WaitReplicas::Auto
        );
        assert_eq!(
            parse(&["--ha-wait-replicas", "0"])
                .unwrap()
                .ha_wait_replicas,
            WaitReplicas::Fixed(0)
        );
        for bad in ["-1", "some", "1.5", ""] {
            let e = parse(&[&format!("--ha-wait-replicas={bad}")]).unwrap_err();
            assert!(e.contains("--ha-wait-replicas"), "{bad}: {e}");
        }
        let e = parse(&["--ha-wait-timeout", "soon"]).unwrap_err();
        assert!(e.contains("--ha-wait-timeout"), "{e}");

        let file =
            ServeLayer::from_toml("ha-wait-replicas = 1\nha-wait-timeout = \"200ms\"\n").unwrap();
        assert_eq!(file.ha_wait_replicas, Some(WaitReplicas::Fixed(1)));
        assert_eq!(file.ha_wait_timeout, Some(Duration::from_millis(200)));
        let text = ServeLayer::from_toml("ha-wait-replicas = \"auto\"").unwrap();
        assert_eq!(text.ha_wait_replicas, Some(WaitReplicas::Auto));
        let flags = ServeLayer {
            ha_wait_replicas: Some(WaitReplicas::Fixed(3)),
            ..ServeLayer::default()
        };
        let s = flags.over(file).resolve();
        assert_eq!(s.ha_wait_replicas, WaitReplicas::Fixed(3), "the flag wins");
        assert_eq!(s.ha_wait_timeout, Duration::from_millis(200), "the file's");
        for bad in ["ha-wait-replicas = -1", "ha-wait-replicas = \"most\""] {
            let e = ServeLayer::from_toml(bad).unwrap_err();
            assert!(e.contains("ha-wait-replicas"), "{bad}: {e}");
        }
        let e = ServeLayer::from_toml("ha-wait-timeout = \"later\"").unwrap_err();
        assert!(e.contains("ha-wait-timeout") && e.contains("later"), "{e}");
    }

    #[test]
    fn token_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("vigil-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = write(
            "good.toml",
            "[[token]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"0123456789abcdef-ops\"\n\
             [[token]]\nname = \"builders\"\nrole = \"worker\"\ntoken = \"0123456789abcdef-bld\"\n",
        );
        let tokens = read_tokens(&good).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].name, "builders");
        assert_eq!(tokens[1].role, crate::rpc::Role::Worker);
        assert!(
            !format!("{tokens:?}").contains("0123456789abcdef"),
            "Debug hides tokens"
        );
        let role = write(
            "role.toml",
            "[[token]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"0123456789abcdef\"\n",
        );
        let e = read_tokens(&role).unwrap_err();
        assert!(
            e.contains("admin") && e.contains("role.toml") && e.contains("line 3"),
            "{e}"
        );
        let broken = write(
            "broken.toml",
            "[[token]]\nname = \"x\"\nrole = \"worker\"\ntoken = \"s3cret-0123456789abcdef\n",
        );
        let e = read_tokens(&broken).unwrap_err();
        assert!(!e.contains("s3cret"), "the error shows no token: {e}");
        let empty = write("empty.toml", "");
        assert!(read_tokens(&empty).unwrap_err().contains("no [[token]]"));
        let extra = write(
            "extra.toml",
            "[[token]]\nname = \"x\"\nrole = \"worker\"\ntoken = \"0123456789abcdef\"\nttl = 1\n",
        );
        assert!(read_tokens(&extra).unwrap_err().contains("ttl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
