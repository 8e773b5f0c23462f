//! `vigil serve`: the coordinator and its JSON-RPC server, until SIGINT or SIGTERM.

use std::time::Duration;

use super::settings::{ServeLayer, ServeSettings};
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
    /// Default instance TTL, e.g. 30s, 1m [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_TTL")]
    ttl: Option<Duration>,
    /// How long before its deadline an instance is suspect [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration, env = "VIGIL_GRACE")]
    grace: Option<Duration>,
    /// Runtime worker threads; 1 runs everything on one thread, which serves small requests
    /// best when a load generator shares the machine [default: one per core].
    #[arg(long, env = "VIGIL_THREADS")]
    threads: Option<usize>,
    /// Keep state in Redis at this URL, e.g. redis://127.0.0.1:6379 [default: in memory].
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
    /// Serve the chaos.* fault-injection methods (kill actors, compare the store with
    /// memory), for chaos tests; never on a production server.
    #[arg(long, env = "VIGIL_CHAOS")]
    chaos: bool,
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
            chaos: self.chaos.then_some(true),
        };
        let settings = flags.over(file).resolve();
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
        init_logging(settings.log_format, "info");
        let server_config = match server_config(&settings) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vigil: {e}");
                return std::process::ExitCode::from(2);
            }
        };
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
        let secured = settings.token.is_some() || !server_config.tokens.is_empty();
        if let Some(warning) = open_to_the_network(listen, secured) {
            tracing::warn!("{warning}");
            eprintln!("vigil: WARNING: {warning}");
        }
        tracing::info!(
            listen = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            store = coordinator.store_status().kind,
            "vigil serving JSON-RPC on POST /rpc; Ctrl-C stops"
        );
        let mut events = coordinator.subscribe();
        let logger = tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                tracing::info!(event = %serde_json::to_string(&event).unwrap_or_default());
            }
        });
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
        ..crate::server::ServerConfig::default()
    };
    config.validate().map_err(|e| match &settings.tokens {
        Some(path) => format!("{}: {e}", path.display()),
        None => e.to_string(),
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_without_a_token_is_warned_about() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(open_to_the_network(at("0.0.0.0:7420"), false).is_some());
        assert!(open_to_the_network(at("[::]:7420"), false).is_some());
        assert!(open_to_the_network(at("0.0.0.0:7420"), true).is_none());
        assert!(open_to_the_network(at("127.0.0.1:7420"), false).is_none());
        assert!(open_to_the_network(at("[::1]:7420"), false).is_none());
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
    }
}
