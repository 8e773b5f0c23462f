//! The `vigil` command line.
//!
//! `vigil serve` runs a coordinator with the embedded in-memory store and logs every event
//! until SIGINT/SIGTERM. The JSON-RPC listener (`--listen`) arrives with the server work; until
//! then `serve` is the coordinator alone, useful for trying the timing settings.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use vigil::{Config, Coordinator};

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
    /// Run the coordinator (embedded in-memory store) until interrupted.
    Serve {
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
        Command::Serve { ttl, grace } => {
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
            tracing::info!(
                "coordinator running with the in-memory store; the JSON-RPC listener is not \
                 part of this build yet — embed the library (see examples/embed.rs). Ctrl-C stops."
            );
            let mut events = coordinator.subscribe();
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = async {
                    while let Ok(event) = events.recv().await {
                        tracing::info!(event = %serde_json::to_string(&event).unwrap_or_default());
                    }
                } => {}
            }
            coordinator.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
    }
}
