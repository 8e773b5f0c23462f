//! The `vigil` command line.
//!
//! `vigil serve` runs a coordinator with the embedded in-memory store and serves JSON-RPC 2.0
//! on `--listen` (127.0.0.1:7420) until SIGINT/SIGTERM, logging every event.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use vigil::{Config, Coordinator};

mod status;

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Actor-based cluster coordinator")]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "human",
        env = "VIGIL_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a running coordinator's instances, leader and tasks as a table.
    Status {
        /// The coordinator's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
        target: String,
        /// Bearer token, if the server requires one.
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Most instances to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run the coordinator (embedded in-memory store) and its JSON-RPC server until
    /// interrupted.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7420", env = "VIGIL_LISTEN")]
        listen: std::net::SocketAddr,
        /// Bearer token required on /rpc.
        #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Heartbeats allowed per instance per minute (0: no limit).
        #[arg(long, default_value_t = 1000, env = "VIGIL_HEARTBEAT_RATE")]
        heartbeat_rate: u32,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 1024 * 1024, env = "VIGIL_MAX_BODY")]
        max_body: usize,
        /// Most requests in one batch.
        #[arg(long, default_value_t = 1000, env = "VIGIL_MAX_BATCH")]
        max_batch: usize,
        /// Default instance TTL (e.g. 30s, 1m).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "VIGIL_TTL")]
        ttl: Duration,
        /// How long before its deadline an instance is suspect.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "VIGIL_GRACE")]
        grace: Duration,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Status {
            target,
            token,
            limit,
        } => match status::run(&target, token.as_deref(), limit).await {
            Ok(table) => {
                print!("{table}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil status: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Serve {
            ttl,
            grace,
            listen,
            token,
            heartbeat_rate,
            max_body,
            max_batch,
        } => {
            let config = Config {
                ttl,
                grace,
                ..Config::default()
            };
            let coordinator = match Coordinator::start(config).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vigil: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let server_config = vigil::server::ServerConfig {
                listen,
                token,
                max_body_bytes: max_body,
                max_batch,
                heartbeats_per_minute: heartbeat_rate,
                ..vigil::server::ServerConfig::default()
            };
            let server =
                match vigil::server::Server::bind(coordinator.clone(), &server_config).await {
                    Ok(server) => server,
                    Err(e) => {
                        eprintln!("vigil: cannot listen on {listen}: {e}");
                        coordinator.shutdown().await;
                        return std::process::ExitCode::FAILURE;
                    }
                };
            tracing::info!(
                listen = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                store = "memory",
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
}
