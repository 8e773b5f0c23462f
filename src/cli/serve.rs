//! `vigil serve`: the coordinator and its JSON-RPC server, until SIGINT or SIGTERM.

use std::time::Duration;

use super::settings::{ServeLayer, ServeSettings};
use super::shared::{endpoints, log_event, relay_events};
use super::{LogFormat, init_logging};
use crate::Coordinator;

/// The smallest byte budget `--max-answer-bytes` takes.
const MIN_ANSWER_BYTES: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file of settings (keys as the flags: listen, ttl, heartbeat-rate, ...).
    #[arg(long, env = "VIGIL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7420].
    #[arg(long, env = "VIGIL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// The operator's bearer token, required (or a --tokens one) on /rpc, /ws and /metrics.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TOML file of named tokens, each `[[token]] name, role ("operator" or "worker"),
    /// token`; a worker may act only on the instances it registered.
    #[arg(long, env = "VIGIL_TOKENS")]
    tokens: Option<std::path::PathBuf>,
    /// Heartbeats allowed per instance per minute, 0 for no limit [default: 1000].
    #[arg(long, env = "VIGIL_HEARTBEAT_RATE")]
    heartbeat_rate: Option<u32>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "VIGIL_MAX_BODY")]
    max_body: Option<usize>,
    /// Most requests in one batch [default: 1000].
    #[arg(long, env = "VIGIL_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Byte budget of one response (a batch's answers together, or one answer): an answer of a
    /// read-only call that would exceed it is replaced by a -32005 error; at least 4096
    /// [default: 16777216].
    #[arg(long, env = "VIGIL_MAX_ANSWER_BYTES")]
    max_answer_bytes: Option<usize>,
    /// Most live (pending or claimed) tasks; task.create beyond it fails with -32003 and
    /// creates nothing [default: 1000000].
    #[arg(long, env = "VIGIL_MAX_TASKS")]
    max_tasks: Option<usize>,
    /// How long a client has to send a request's head, from the connection's opening (or the
    /// first byte of a later request); then the connection is closed [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_HEADER_TIMEOUT")]
    header_timeout: Option<Duration>,
    /// How long a client has to send a request's body, from its head; then HTTP 408
    /// [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_BODY_TIMEOUT")]
    body_timeout: Option<Duration>,
    /// How long a keep-alive connection may sit between requests, and a WebSocket without a
    /// frame from the client (pinged at half of it), before it is closed [default: 120s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_IDLE_TIMEOUT")]
    idle_timeout: Option<Duration>,
    /// Most connections open at once, WebSockets included; beyond it new connections wait in
    /// the listen backlog until one closes [default: 10000].
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Default instance TTL, e.g. 30s, 1m: an instance silent this long expires, its claims
    /// go back to pending and, if it led, a new leader is elected [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_TTL")]
    ttl: Option<Duration>,
    /// An instance silent for TTL − grace is suspect: still alive, but passed over in an
    /// election while an active instance exists (25 s with the defaults) [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_GRACE")]
    grace: Option<Duration>,
    /// Runtime worker threads; 1 runs everything on one thread, which serves small requests
    /// best when a load generator shares the machine [default: one per core].
    #[arg(long, env = "VIGIL_THREADS")]
    threads: Option<usize>,
    /// Keep state in Redis at this URL, e.g. redis://127.0.0.1:6379, or through Sentinel:
    /// redis+sentinel://h1:26379,h2:26379/master-name[/db] (docs/ha.md) [default: in memory].
    #[arg(long, env = "VIGIL_REDIS")]
    redis: Option<String>,
    /// Redis key prefix [default: cb:].
    #[arg(long, env = "VIGIL_PREFIX")]
    prefix: Option<String>,
    /// How often heartbeat timestamps are written to Redis [default: 250ms].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_FLUSH_INTERVAL")]
    flush_interval: Option<Duration>,
    /// write-behind (coalesced heartbeats) or write-through (one script per heartbeat)
    /// [default: write-behind].
    #[arg(long, env = "VIGIL_PERSIST")]
    persist: Option<crate::store::PersistMode>,
    /// How long an instance's record outlives its TTL in Redis, so that a coordinator
    /// restarted within it (after a crash or a Redis outage) still knows the instance
    /// [default: 10m].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_RECORD_RETENTION")]
    record_retention: Option<Duration>,
    /// After a restart from Redis: `ttl` gives every instance still listed a full TTL (no live
    /// worker is expired early; the dead are expired one TTL later), `last-flush` expires at
    /// once those whose TTL ran out since the last flush (sooner takeover, but a crash during a
    /// Redis outage expires live workers) [default: ttl].
    #[arg(long, env = "VIGIL_RESTART_GRACE")]
    restart_grace: Option<crate::store::RestartGrace>,
    /// Redis replicas that must confirm a write-through write (WAIT) before it is
    /// acknowledged: `auto` (1 while Redis reports a replica online, else 0) or a number;
    /// 0 never waits (docs/ha.md) [default: auto].
    #[arg(long, env = "VIGIL_HA_WAIT_REPLICAS", value_name = "auto|N")]
    ha_wait_replicas: Option<crate::store::WaitReplicas>,
    /// Longest one WAIT for replicas blocks; below the store wait (1.5 s) [default: 500ms].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_HA_WAIT_TIMEOUT")]
    ha_wait_timeout: Option<Duration>,
    /// Serve the chaos.* fault-injection methods (kill actors, compare the store with
    /// memory), for chaos tests; never on a production server.
    #[arg(long, env = "VIGIL_CHAOS")]
    chaos: bool,
    /// Serve MCP (streamable HTTP, stateless) at POST /mcp, behind the same tokens and body
    /// limit as /rpc; `--mcp false` turns it off [default: true].
    #[arg(long, env = "VIGIL_MCP", action = clap::ArgAction::Set, value_name = "BOOL")]
    mcp: Option<bool>,
    /// Serve the status page at GET / (docs/ui.md); `--ui false` turns it off [default: true].
    #[arg(long, env = "VIGIL_UI", action = clap::ArgAction::Set, value_name = "BOOL")]
    ui: Option<bool>,
    /// Ask for real-time priority (SCHED_FIFO 1, Linux) for the liveness clock's ticker thread,
    /// so that other busy processes cannot hold the coarse clock back; refused without
    /// CAP_SYS_NICE, which leaves it at normal priority. `--clock-realtime false` never asks
    /// [default: true].
    #[arg(long, env = "VIGIL_CLOCK_REALTIME", action = clap::ArgAction::Set, value_name = "BOOL")]
    clock_realtime: Option<bool>,
    /// Run as one of several coordinators on one Redis (needs --redis): the holder of the
    /// coordinator lease is active, the others stand by, answer -32008 naming it, and take
    /// over when it dies (docs/ha.md).
    #[arg(long, env = "VIGIL_HA")]
    ha: bool,
    /// With --ha: the coordinator lease; a successor takes over at most this long after the
    /// active stops renewing [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_HA_LEASE")]
    ha_lease: Option<Duration>,
    /// With --ha: the active steps down when it could not renew for this long; below the
    /// lease, so that it stops before anyone may take over [default: 6s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_HA_RENEW_DEADLINE")]
    ha_renew_deadline: Option<Duration>,
    /// With --ha: how often the active renews the lease and a standby tries to take it
    /// [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_HA_RETRY")]
    ha_retry: Option<Duration>,
    /// With --ha: the URL clients are sent to while this coordinator is active
    /// [default: http:// and the address bound].
    #[arg(long, env = "VIGIL_HA_ADVERTISE")]
    ha_advertise: Option<String>,
}

impl ServeArgs {
    /// Flags over the file over the defaults.
    pub(super) fn settings(&self, log_format: Option<LogFormat>) -> Result<ServeSettings, String> {
        let file = match &self.config {
            Some(path) => ServeLayer::from_file(path)?,
            None => ServeLayer::default(),
        };
        let flags = ServeLayer {
            listen: self.listen,
            token: self.token.clone(),
            tokens: self.tokens.clone(),
            heartbeat_rate: self.heartbeat_rate,
            max_body: self.max_body,
            max_batch: self.max_batch,
            max_answer_bytes: self.max_answer_bytes,
            max_tasks: self.max_tasks,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            ttl: self.ttl,
            grace: self.grace,
            log_format: log_format.map(LogFormat::into),
            threads: self.threads,
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            flush_interval: self.flush_interval,
            persist: self.persist,
            record_retention: self.record_retention,
            restart_grace: self.restart_grace,
            ha_wait_replicas: self.ha_wait_replicas,
            ha_wait_timeout: self.ha_wait_timeout,
            chaos: self.chaos.then_some(true),
            mcp: self.mcp,
            ui: self.ui,
            clock_realtime: self.clock_realtime,
            ha: self.ha.then_some(true),
            ha_lease: self.ha_lease,
            ha_renew_deadline: self.ha_renew_deadline,
            ha_retry: self.ha_retry,
            ha_advertise: self.ha_advertise.clone(),
        };
        let settings = flags.over(file).resolve();
        if settings.ha {
            super::ha::check(&settings)?;
        }
        if settings.max_answer_bytes < MIN_ANSWER_BYTES {
            return Err(format!(
                "max-answer-bytes must be at least {MIN_ANSWER_BYTES}, got {}: below that even \
                 a small system.get_state answer would be refused",
                settings.max_answer_bytes
            ));
        }
        Ok(settings)
    }
}

impl ServeArgs {
    /// Runs the server until SIGINT or SIGTERM.
    pub async fn run(self, log_format: Option<LogFormat>) -> std::process::ExitCode {
        let settings = match self.settings(log_format) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vigil: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        // rmcp logs every stateless /mcp request's service start and end at info.
        init_logging(settings.log_format, "info,rmcp=warn");
        let server_config = match server_config(&settings) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vigil: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        if let Err(e) = server_config.validate() {
            eprintln!("vigil: {e}");
            return std::process::ExitCode::from(2);
        }
        if let Some(warning) = above_the_file_limit(server_config.max_connections) {
            tracing::warn!("{warning}");
        }
        let secured = settings.token.is_some() || !server_config.tokens.is_empty();
        if let Some(warning) = open_to_the_network(server_config.listen, secured) {
            tracing::warn!("{warning}");
            eprintln!("vigil: WARNING: {warning}");
        }
        if settings.ha {
            return super::ha::run(settings, server_config, shutdown_signal()).await;
        }
        let config = settings.coordinator_config();
        let coordinator = match Coordinator::start(config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vigil: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let listen = server_config.listen;
        let server = match crate::server::Server::bind(coordinator.clone(), &server_config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("vigil: cannot listen on {listen}: {e}");
                coordinator.shutdown().await;
                return std::process::ExitCode::FAILURE;
            }
        };
        let bound = server.local_addr().unwrap_or(listen);
        let store = match &settings.redis {
            Some(url) => crate::config::store::redact_url(url),
            None => "memory".to_string(),
        };
        tracing::info!(
            "vigil {} serving http://{bound}: {}; store {store}; Ctrl-C stops",
            env!("CARGO_PKG_VERSION"),
            endpoints(&server_config).join(", ")
        );
        let logger = tokio::spawn(relay_events(coordinator.subscribe(), log_event));
        // In-flight requests finish before `run` returns; then the actors stop.
        let result = server.run(shutdown_signal()).await;
        logger.abort();
        coordinator.shutdown().await;
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil: server error: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The warning for a server that anyone on the network can call without credentials.
fn open_to_the_network(listen: std::net::SocketAddr, secured: bool) -> Option<String> {
    (!listen.ip().is_loopback() && !secured).then(|| {
        format!(
            "listening on {listen}, beyond loopback, with no token: anyone who can reach this \
             address can register, unregister and claim as any worker; set --token \
             (VIGIL_TOKEN) or listen on 127.0.0.1"
        )
    })
}

/// The warning for a connection cap the process's open-file limit cannot reach: accepting
/// then fails (and is retried every second) before the cap is hit. Linux only (it reads
/// `/proc/self/limits`); elsewhere, or if the limit cannot be read, no warning.
fn above_the_file_limit(max_connections: usize) -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let files = open_file_limit(&limits)?;
    (max_connections as u64 >= files).then(|| {
        format!(
            "max-connections is {max_connections} but this process may open only {files} \
             files (ulimit -n): accepting fails with 'too many open files' before the cap is \
             reached (retried every second); raise the limit or lower --max-connections"
        )
    })
}

/// The soft "Max open files" limit in the text of `/proc/self/limits` (`None`: unlimited or
/// absent).
fn open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The server's configuration from the resolved settings, with the token file read and the
/// tokens checked.
fn server_config(settings: &ServeSettings) -> Result<crate::server::ServerConfig, String> {
    let tokens = match &settings.tokens {
        Some(path) => super::settings::read_tokens(path)?,
        None => Vec::new(),
    };
    let config = crate::server::ServerConfig {
        listen: settings.listen,
        token: settings.token.clone(),
        tokens,
        max_body_bytes: settings.max_body,
        max_batch: settings.max_batch,
        max_answer_bytes: settings.max_answer_bytes,
        heartbeats_per_minute: settings.heartbeat_rate,
        chaos: settings.chaos,
        mcp: settings.mcp,
        ui: settings.ui,
        header_read_timeout: settings.header_timeout,
        body_read_timeout: settings.body_timeout,
        idle_timeout: settings.idle_timeout,
        max_connections: settings.max_connections,
        ..crate::server::ServerConfig::default()
    };
    config
        .validate_tokens()
        .map_err(|e| match &settings.tokens {
            Some(path) => format!("{}: {e}", path.display()),
            None => e.to_string(),
        })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::shared::Logged;
    use super::*;

    #[test]
    fn the_startup_line_names_the_page_and_mcp_only_when_served() {
        let mut config = crate::server::ServerConfig::default();
        let all = endpoints(&config);
        assert!(
            all.contains(&"GET /") && all.contains(&"POST /mcp"),
            "{all:?}"
        );
        config.ui = false;
        config.mcp = false;
        let some = endpoints(&config);
        assert!(
            !some.contains(&"GET /") && !some.contains(&"POST /mcp"),
            "{some:?}"
        );
        assert!(some.contains(&"POST /rpc") && some.contains(&"GET /healthz"));
    }

    #[test]
    fn listening_beyond_loopback_without_a_token_is_warned_about() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(open_to_the_network(at("0.0.0.0:7420"), false).is_some());
        assert!(open_to_the_network(at("[::]:7420"), false).is_some());
        assert!(open_to_the_network(at("0.0.0.0:7420"), true).is_none());
        assert!(open_to_the_network(at("127.0.0.1:7420"), false).is_none());
        assert!(open_to_the_network(at("[::1]:7420"), false).is_none());
    }

    /// A logger that falls behind reports how many events it missed and goes on logging:
    /// with room for two, five events sent before it reads are one `Missed(3)`, then the last
    /// two; and it still logs what comes after.
    #[tokio::test]
    async fn the_event_logger_survives_a_lag() {
        use crate::events::{Event, EventKind};
        let event = |seq| {
            let mut e = Event::new(EventKind::TaskCreated, crate::model::Term(1), 0);
            e.seq = seq;
            e
        };
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        for seq in 1..=5 {
            tx.send(event(seq)).unwrap();
        }
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let relay = tokio::spawn(relay_events(rx, move |l| {
            let _ = seen_tx.send(l);
        }));
        assert_eq!(seen.recv().await, Some(Logged::Missed(3)));
        assert_eq!(seen.recv().await, Some(Logged::Event(Box::new(event(4)))));
        assert_eq!(seen.recv().await, Some(Logged::Event(Box::new(event(5)))));
        // Still listening after the lag.
        tx.send(event(6)).unwrap();
        assert_eq!(seen.recv().await, Some(Logged::Event(Box::new(event(6)))));
        drop(tx);
        relay.await.unwrap();
        assert_eq!(seen.recv().await, None, "it stops when the bus closes");
    }

    #[test]
    fn settings_default_to_the_servers_defaults() {
        let ours = server_config(&ServeSettings::default()).unwrap();
        let server = crate::server::ServerConfig::default();
        assert_eq!(ours.listen, server.listen);
        assert_eq!(ours.token, server.token);
        assert_eq!(ours.tokens, server.tokens);
        assert_eq!(ours.max_body_bytes, server.max_body_bytes);
        assert_eq!(ours.max_batch, server.max_batch);
        assert_eq!(ours.max_answer_bytes, server.max_answer_bytes);
        let core = ServeSettings::default().coordinator_config();
        assert_eq!(core.limits, crate::Limits::default());
        assert_eq!(ours.heartbeats_per_minute, server.heartbeats_per_minute);
        assert_eq!(ours.chaos, server.chaos);
        assert_eq!(ours.mcp, server.mcp);
        assert_eq!(ours.ui, server.ui);
        assert_eq!(ours.header_read_timeout, server.header_read_timeout);
        assert_eq!(ours.body_read_timeout, server.body_read_timeout);
        assert_eq!(ours.idle_timeout, server.idle_timeout);
        assert_eq!(ours.max_connections, server.max_connections);
    }

    #[test]
    fn connection_limits_come_from_the_flags_and_are_checked() {
        let args = |extra: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                serve: ServeArgs,
            }
            let argv = ["vigil"].iter().chain(extra).copied();
            <Cli as clap::Parser>::try_parse_from(argv).unwrap().serve
        };
        let settings = args(&[
            "--header-timeout",
            "2s",
            "--body-timeout",
            "3s",
            "--idle-timeout",
            "4s",
            "--max-connections",
            "5",
        ])
        .settings(None)
        .unwrap();
        let config = server_config(&settings).unwrap();
        assert_eq!(config.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.body_read_timeout, Duration::from_secs(3));
        assert_eq!(config.idle_timeout, Duration::from_secs(4));
        assert_eq!(config.max_connections, 5);
        assert_eq!(config.validate(), Ok(()));

        let zero = server_config(&args(&["--idle-timeout", "0s"]).settings(None).unwrap()).unwrap();
        assert_eq!(
            zero.validate(),
            Err("idle_timeout must be above zero".to_string())
        );
        let none =
            server_config(&args(&["--max-connections", "0"]).settings(None).unwrap()).unwrap();
        let refused = none.validate().unwrap_err();
        assert!(refused.contains("max_connections"), "{refused}");
    }

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_file_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_file_limit(unlimited), None);
    }
}
