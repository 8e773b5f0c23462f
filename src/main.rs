//! The `vigil` command line.
//!
//! `vigil serve` runs a coordinator with the embedded in-memory store and serves JSON-RPC 2.0
//! on `--listen` (127.0.0.1:7420) until SIGINT/SIGTERM, logging every event.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use vigil::Coordinator;
use vigil::settings::{self, ServeLayer, ServeSettings};

mod status;

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
    /// Load harness: register workers, send heartbeats open loop at --rate, report latency
    /// percentiles (from each call's intended send time), errors and the achieved rate.
    Load(LoadArgs),
    /// Run the coordinator (embedded in-memory store) and its JSON-RPC server until
    /// interrupted. Each setting comes from its flag, else its VIGIL_* variable, else the
    /// --config file, else the default shown.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The server's base URL (http transport).
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// http (JSON-RPC over HTTP) or inproc (an embedded coordinator, no network).
    #[arg(long, default_value = "http")]
    transport: String,
    /// Heartbeats per HTTP request (1: one per request).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Instances to register and heartbeat for.
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Instance id prefix (ids are PREFIX-0 … PREFIX-N−1).
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Heartbeat rate: 1000/min, 50k/s, or max (closed loop).
    #[arg(long, default_value = "1000/min")]
    rate: vigil::load::Rate,
    /// How long to send, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls in flight at most (and callers with --rate max).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit non-zero when errors / sent exceeds this.
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
    /// Latency objective, e.g. p99=5ms; repeatable. Exit non-zero when missed.
    #[arg(long)]
    slo: Vec<vigil::load::Slo>,
}

impl LoadArgs {
    async fn run(self) -> std::process::ExitCode {
        use vigil::load::{LoadConfig, Transport};
        let coordinator;
        let transport = match self.transport.as_str() {
            "http" => Transport::Http {
                target: self.target.clone(),
                token: self.token.clone(),
                batch: self.batch.max(1),
            },
            "inproc" => {
                coordinator = match Coordinator::start(vigil::Config::default()).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("vigil load: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                };
                Transport::Inproc(coordinator.clone())
            }
            other => {
                eprintln!("vigil load: unknown transport {other:?} (http or inproc)");
                return std::process::ExitCode::from(2);
            }
        };
        let config = LoadConfig {
            transport,
            workers: self.workers,
            prefix: self.prefix.clone(),
            rate: self.rate,
            duration: self.duration,
            concurrency: self.concurrency,
        };
        let report = match vigil::load::run(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vigil load: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        } else {
            print!("{}", report.table());
        }
        let mut failed = false;
        if report.error_rate() > self.max_error_rate {
            eprintln!(
                "vigil load: error rate {:.4} exceeds --max-error-rate {}",
                report.error_rate(),
                self.max_error_rate
            );
            failed = true;
        }
        for slo in &self.slo {
            if !slo.met_by(&report) {
                eprintln!("vigil load: SLO missed: {slo:?}");
                failed = true;
            }
        }
        if failed {
            std::process::ExitCode::FAILURE
        } else {
            std::process::ExitCode::SUCCESS
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file of settings (keys as the flags: listen, ttl, heartbeat-rate, ...).
    #[arg(long, env = "VIGIL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7420].
    #[arg(long, env = "VIGIL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Bearer token required on /rpc, /ws and /metrics.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Heartbeats allowed per instance per minute, 0 for no limit [default: 1000].
    #[arg(long, env = "VIGIL_HEARTBEAT_RATE")]
    heartbeat_rate: Option<u32>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "VIGIL_MAX_BODY")]
    max_body: Option<usize>,
    /// Most requests in one batch [default: 1000].
    #[arg(long, env = "VIGIL_MAX_BATCH")]
    max_batch: Option<usize>,
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
    persist: Option<vigil::store::PersistMode>,
}

impl ServeArgs {
    /// Flags over the file over the defaults.
    fn settings(&self, log_format: Option<LogFormat>) -> Result<ServeSettings, String> {
        let file = match &self.config {
            Some(path) => ServeLayer::from_file(path)?,
            None => ServeLayer::default(),
        };
        let flags = ServeLayer {
            listen: self.listen,
            token: self.token.clone(),
            heartbeat_rate: self.heartbeat_rate,
            max_body: self.max_body,
            max_batch: self.max_batch,
            ttl: self.ttl,
            grace: self.grace,
            log_format: log_format.map(LogFormat::into),
            threads: self.threads,
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            flush_interval: self.flush_interval,
            persist: self.persist,
        };
        Ok(flags.over(file).resolve())
    }
}

impl From<LogFormat> for settings::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Human => settings::LogFormat::Human,
            LogFormat::Json => settings::LogFormat::Json,
        }
    }
}

fn init_logging(format: settings::LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        settings::LogFormat::Human => builder.init(),
        settings::LogFormat::Json => builder.json().init(),
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The runtime's size is a setting of `serve`; errors in the settings are reported by
    // `run`, on the smallest runtime.
    let threads = match &cli.command {
        Command::Serve(args) => args.settings(cli.log_format).map_or(1, |s| s.threads),
        Command::Status { .. } => 1,
        Command::Load(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
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
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Load(args) => {
            // Only warnings by default: an embedded coordinator would log every registration.
            init_logging(cli.log_format.map(Into::into).unwrap_or_default(), "warn");
            args.run().await
        }
        Command::Status {
            target,
            token,
            limit,
        } => {
            init_logging(cli.log_format.map(Into::into).unwrap_or_default(), "info");
            match status::run(&target, token.as_deref(), limit).await {
                Ok(table) => {
                    print!("{table}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vigil status: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let settings = match args.settings(cli.log_format) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("vigil: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_logging(settings.log_format, "info");
            let config = settings.coordinator_config();
            let coordinator = match Coordinator::start(config).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vigil: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let server_config = settings.server_config();
            let listen = server_config.listen;
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
}
