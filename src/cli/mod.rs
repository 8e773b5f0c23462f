//! The `vigil` command line: one file per subcommand, each with its clap arguments beside its
//! code. `src/main.rs` only calls [`main`].

mod chaos;
mod ha;
mod load;
mod mcp;
mod serve;
pub mod settings;
mod shared;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::client::{Client, ClientError};
use tracing_subscriber::EnvFilter;

/// Exit status for a usage error.
const USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Actor-based cluster coordinator")]
struct Cli {
    /// Log format [default: human].
    #[arg(long, value_enum, env = "VIGIL_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

impl From<LogFormat> for settings::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Human => settings::LogFormat::Human,
            LogFormat::Json => settings::LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chaos run: a workload against a server started with --chaos (or one it spawns), with
    /// actors killed, Redis and the process restarted, and every invariant checked; exit 1 on
    /// any violation.
    Chaos(chaos::ChaosArgs),
    /// Show a running coordinator: server, store, leader and term, instances (natural order,
    /// the leader always shown), task counts. Exit 0 healthy, 2 degraded (store not ok, or no
    /// live leader while instances are live), 1 when the server cannot be asked.
    Status(status::StatusArgs),
    /// MCP server over stdio for one agent process: Sortie's step tools and Vigil's, each
    /// forwarded to a running coordinator (--target) over JSON-RPC. Falls back to
    /// SORTIE_STEP_ID and SORTIE_CLAIM_TOKEN for a step tool's step and claim token. Logs go
    /// to stderr; stdout carries the protocol only.
    Mcp(mcp::McpArgs),
    /// Load harness: register workers, send heartbeats open loop at --rate, report latency
    /// percentiles (from each call's intended send time), errors and the achieved rate.
    Load(load::LoadArgs),
    /// Run the coordinator (embedded in-memory store) and its JSON-RPC server until
    /// interrupted. Each setting comes from its flag, else its VIGIL_* variable, else the
    /// --config file, else the default shown.
    Serve(serve::ServeArgs),
}

/// The log filter: `VIGIL_LOG`, else `default_level`. When that asks for `debug` or more, rmcp
/// is held at `info`: at `debug` it logs whole MCP requests and results — claim tokens
/// included.
fn log_filter(default_level: &str) -> EnvFilter {
    let filter =
        EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    if filter
        .max_level_hint()
        .is_some_and(|level| level > tracing_subscriber::filter::LevelFilter::INFO)
    {
        ["rmcp=info", "rmcp::service=info"]
            .into_iter()
            .fold(filter, |f, d| {
                f.add_directive(d.parse().expect("a valid directive"))
            })
    } else {
        filter
    }
}

/// Whether log lines get colours: only when stderr is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
fn colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs to stderr, one line per event (stdout is the command's output: `status`'s table,
/// `load`'s report, `mcp`'s protocol), coloured only on a terminal.
fn init_logging(format: settings::LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = log_filter(default_level);
    let ansi = colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        settings::LogFormat::Human => builder.init(),
        settings::LogFormat::Json => builder.json().init(),
    }
}

/// How long `load` and `chaos` wait for a target's first answer (and `status`, unless told
/// `--timeout`).
const TARGET_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target` (one base URL, or several separated by commas: the client follows a
/// standby's −32008 to the active, see [`Client`]) and asks it `system.health`: the client and
/// the answer, or an error whose words say what to fix (no scheme, nothing listening, a token
/// needed, no answer within `timeout`, not a Vigil server, no active coordinator). `status` reads the answer; `load` and `chaos` call
/// it to fail early and clearly.
async fn reach(
    target: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(Client, Value), ClientError> {
    let urls = crate::client::transport::parse_targets(target).map_err(ClientError::InvalidUrl)?;
    let client = Client::builder()
        .urls(urls)
        .token_opt(token.map(str::to_string))
        .timeout(timeout)
        .connect()
        .await?;
    let not_vigil = |answer: &str| ClientError::NotVigil {
        url: client.current_url(),
        answer: answer.to_string(),
    };
    let health = client
        .call("system.health", serde_json::json!({}))
        .await
        .map_err(|e| match e {
            ClientError::Rpc { code, .. } if code == crate::error::code::METHOD_NOT_FOUND => {
                not_vigil("it does not know the method system.health")
            }
            other => other,
        })?;
    if health.pointer("/services/coordinator").is_none() {
        return Err(not_vigil("its system.health answer is not Vigil's"));
    }
    Ok((client, health))
}

/// Parses the command line, builds the runtime the subcommand wants and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The runtime's size is a setting of `serve`; errors in the settings are reported by
    // `run`, on the smallest runtime.
    let threads = match &cli.command {
        Command::Serve(args) => args.settings(cli.log_format).map_or(1, |s| s.threads),
        Command::Status(_) | Command::Mcp(_) => 1,
        Command::Load(_) | Command::Chaos(_) => {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    };
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("vigil: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let log_format = cli.log_format.map(Into::into).unwrap_or_default();
    match cli.command {
        Command::Chaos(args) => {
            init_logging(log_format, "warn");
            args.run().await
        }
        Command::Load(args) => {
            // Only warnings by default: an embedded coordinator would log every registration.
            init_logging(log_format, "warn");
            args.run().await
        }
        Command::Status(args) => {
            init_logging(log_format, "info");
            args.run().await
        }
        Command::Mcp(args) => {
            init_logging(log_format, "warn");
            args.run().await
        }
        Command::Serve(args) => args.run(cli.log_format).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(colours(true, Some("".into())));
        assert!(!colours(true, Some("1".into())));
        assert!(!colours(false, None));
    }
}
