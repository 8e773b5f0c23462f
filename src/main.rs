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
    /// Chaos run: a workload against a server started with --chaos (or one it spawns), with
    /// actors killed, Redis and the process restarted, and every invariant checked; exit 1 on
    /// any violation.
    Chaos(ChaosArgs),
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
struct ChaosArgs {
    /// The server's base URL (started with --chaos); ignored with --spawn.
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// http or ws.
    #[arg(long, default_value = "http")]
    transport: String,
    /// Start the server under test as a child (`vigil serve --chaos`), so it can be killed
    /// with SIGKILL and restarted (--sigkill-every).
    #[arg(long)]
    spawn: bool,
    /// With --spawn: give the child this Redis (use --spawn-redis for a private one).
    #[arg(long)]
    redis: Option<String>,
    /// With --spawn: start a private redis-server for the child (restartable with
    /// --redis-restart-every).
    #[arg(long)]
    spawn_redis: bool,
    /// Kill the child with SIGKILL and start it again this often (needs --spawn and a Redis).
    #[arg(long, value_parser = humantime::parse_duration)]
    sigkill_every: Option<Duration>,
    /// Kill the private redis-server, keep it down for a second and start it again this often.
    /// It keeps its data (an append-only file fsynced on every write) unless
    /// --redis-empty-restarts.
    #[arg(long, value_parser = humantime::parse_duration)]
    redis_restart_every: Option<Duration>,
    /// Run the private redis-server without persistence, so each restart empties it (Vigil
    /// then rewrites everything from memory). Not with --sigkill-every: losing Redis's data and
    /// the coordinator's memory together is a double fault nothing can recover from.
    #[arg(long)]
    redis_empty_restarts: bool,
    /// Seed of every random choice [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// How long the workload runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Instances.
    #[arg(long, default_value_t = 200)]
    workers: usize,
    /// Instances that really die part-way (stop heartbeating with work in hand).
    #[arg(long, default_value_t = 10)]
    doomed: usize,
    /// The workers' TTL.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Heartbeats per second, all workers together.
    #[arg(long, default_value_t = 1000.0)]
    heartbeat_rate: f64,
    /// Task flows (create, claim, step heartbeat, complete) per second.
    #[arg(long, default_value_t = 20.0)]
    task_rate: f64,
    /// Lease acquisitions per second.
    #[arg(long, default_value_t = 5.0)]
    lease_rate: f64,
    /// InstanceActor kills per second.
    #[arg(long, default_value_t = 100.0)]
    instance_kills: f64,
    /// LeaderActor kills per second.
    #[arg(long, default_value_t = 1.0)]
    leader_kills: f64,
    /// Persister kills per second.
    #[arg(long, default_value_t = 0.0)]
    persister_kills: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl ChaosArgs {
    async fn run(self) -> std::process::ExitCode {
        use std::process::ExitCode;
        use vigil::chaos::Disruptor;
        use vigil::chaos::disrupt::{RedisProcess, ServeProcess};
        let usage = |m: &str| {
            eprintln!("vigil chaos: {m}");
            ExitCode::from(USAGE)
        };
        if !["http", "ws"].contains(&self.transport.as_str()) {
            return usage("--transport is http or ws");
        }
        if !self.spawn && (self.spawn_redis || self.sigkill_every.is_some() || self.redis.is_some())
        {
            return usage("--spawn-redis, --redis and --sigkill-every need --spawn");
        }
        if (self.redis_restart_every.is_some() || self.redis_empty_restarts) && !self.spawn_redis {
            return usage("--redis-restart-every and --redis-empty-restarts need --spawn-redis");
        }
        if self.redis_empty_restarts && self.sigkill_every.is_some() {
            return usage(
                "--redis-empty-restarts with --sigkill-every would lose Redis's copy and memory \
                 together, which no store can recover from; drop one of them",
            );
        }
        if self.sigkill_every.is_some() && !self.spawn_redis && self.redis.is_none() {
            return usage(
                "--sigkill-every needs a Redis to recover from (--spawn-redis or --redis)",
            );
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
        });
        eprintln!("vigil chaos: seed {seed} (rerun with --seed {seed})");
        let redis = if self.spawn_redis {
            match RedisProcess::start(!self.redis_empty_restarts).await {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("vigil chaos: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let redis_url = redis.as_ref().map(RedisProcess::url).or(self.redis.clone());
        let server = if self.spawn {
            let program = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("vigil chaos: cannot find this program: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut extra = vec!["--heartbeat-rate".to_string(), "0".into()];
            if let Some(url) = &redis_url {
                extra.extend([
                    "--redis".into(),
                    url.clone(),
                    "--flush-interval".into(),
                    "100ms".into(),
                ]);
            }
            if let Some(token) = &self.token {
                extra.extend(["--token".into(), token.clone()]);
            }
            match ServeProcess::start(program, extra).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("vigil chaos: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let target = server
            .as_ref()
            .map_or(self.target.clone(), ServeProcess::url);
        let transport = match self.transport.as_str() {
            "ws" => vigil::load::Transport::Ws {
                target,
                token: self.token.clone(),
                batch: 1,
            },
            _ => vigil::load::Transport::Http {
                target,
                token: self.token.clone(),
                batch: 1,
            },
        };
        let mut disruptors: Vec<(&dyn Disruptor, Duration)> = Vec::new();
        if let (Some(s), Some(every)) = (&server, self.sigkill_every) {
            disruptors.push((s, every));
        }
        if let (Some(r), Some(every)) = (&redis, self.redis_restart_every) {
            disruptors.push((r, every));
        }
        let config = vigil::chaos::ChaosConfig {
            seed,
            duration: self.duration,
            workers: self.workers,
            doomed: self.doomed,
            ttl: self.ttl,
            heartbeat_rate: self.heartbeat_rate,
            task_rate: self.task_rate,
            lease_rate: self.lease_rate,
            instance_kills: self.instance_kills,
            leader_kills: self.leader_kills,
            persister_kills: self.persister_kills,
            prefix: "chaos".into(),
        };
        let report = match vigil::chaos::run(transport, config, &disruptors).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vigil chaos: {e}");
                return ExitCode::FAILURE;
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
        if report.violations() > 0 {
            eprintln!(
                "vigil chaos: {} violation(s); seed {seed}",
                report.violations()
            );
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The server's base URL (http, ws and ws-binary transports).
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "VIGIL_TARGET")]
    target: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// http (JSON-RPC over HTTP), ws (JSON-RPC text frames), ws-binary (bincode heartbeat
    /// frames) or inproc (an embedded coordinator, no network).
    #[arg(long, default_value = "http")]
    transport: String,
    /// Heartbeats per request or frame (1: one per request).
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
    /// How long to send, e.g. 10s, 1m (with --compare: for each side).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls in flight at most (and callers with --rate max).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// WebSocket connections (ws, ws-binary).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Add a task mix: flows that create, claim, step-heartbeat and complete a task, started
    /// at RATE (e.g. 50/s) [default without a value: a tenth of the heartbeat rate, 100/s
    /// with --rate max].
    #[arg(long, value_name = "RATE", num_args = 0..=1, default_missing_value = "auto")]
    tasks: Option<String>,
    /// Run the same scenario against a second side in alternation and print ratios: another
    /// target URL, or with --transport inproc a persist mode (write-behind, write-through).
    #[arg(long, value_name = "OTHER")]
    compare: Option<String>,
    /// Alternations with --compare (each side sends DURATION / ROUNDS at a time).
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Redis for an embedded coordinator (inproc); absent: in-memory store.
    #[arg(long)]
    redis: Option<String>,
    /// Persist mode of the embedded coordinator (inproc with --redis).
    #[arg(long, default_value = "write-behind")]
    persist: vigil::store::PersistMode,
    /// Key prefix in --redis for the embedded coordinator (with --compare, A and B get
    /// PREFIXa: and PREFIXb:).
    #[arg(long, default_value = "vigil-load:")]
    store_prefix: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw latency over time and the latency histogram into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// No progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Exit non-zero when errors / sent exceeds this.
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
    /// Latency objective, e.g. p99=5ms; repeatable. Exit non-zero when missed.
    #[arg(long)]
    slo: Vec<vigil::load::Slo>,
}

/// Exit status for a usage error.
const USAGE: u8 = 2;

impl LoadArgs {
    fn task_rate(&self) -> Result<Option<f64>, String> {
        use vigil::load::Rate;
        match self.tasks.as_deref() {
            None => Ok(None),
            Some("auto") => Ok(Some(match self.rate {
                Rate::PerSecond(r) => (r / 10.0).max(1.0),
                Rate::Max => 100.0,
            })),
            Some(text) => match text.parse::<Rate>()? {
                Rate::PerSecond(r) => Ok(Some(r)),
                Rate::Max => Err("--tasks takes a rate such as 50/s, not max".into()),
            },
        }
    }

    async fn embedded(
        &self,
        persist: vigil::store::PersistMode,
        side: &str,
    ) -> Result<Coordinator, String> {
        let store = match &self.redis {
            None => vigil::store::StoreConfig::Memory,
            Some(url) => vigil::store::StoreConfig::Redis(vigil::store::RedisConfig {
                prefix: format!("{}{side}", self.store_prefix),
                persist,
                ..vigil::store::RedisConfig::new(url.clone())
            }),
        };
        Coordinator::start(vigil::Config {
            store,
            ..vigil::Config::default()
        })
        .await
        .map_err(|e| format!("starting the embedded coordinator: {e}"))
    }

    fn transport(&self, target: &str, inproc: Option<&Coordinator>) -> vigil::load::Transport {
        use vigil::load::Transport;
        let (target, token, batch) = (target.to_string(), self.token.clone(), self.batch.max(1));
        match (self.transport.as_str(), inproc) {
            ("ws", _) => Transport::Ws {
                target,
                token,
                batch,
            },
            ("ws-binary", _) => Transport::WsBinary {
                target,
                token,
                batch,
            },
            (_, Some(c)) => Transport::Inproc(c.clone()),
            _ => Transport::Http {
                target,
                token,
                batch,
            },
        }
    }

    async fn run(self) -> std::process::ExitCode {
        use std::process::ExitCode;
        if !["http", "ws", "ws-binary", "inproc"].contains(&self.transport.as_str()) {
            eprintln!(
                "vigil load: unknown transport {:?} (http, ws, ws-binary or inproc)",
                self.transport
            );
            return ExitCode::from(USAGE);
        }
        let tasks = match self.task_rate() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("vigil load: {e}");
                return ExitCode::from(USAGE);
            }
        };
        let inproc = self.transport == "inproc";
        let compare_mode = match (&self.compare, inproc) {
            (Some(other), true) => match other.parse::<vigil::store::PersistMode>() {
                Ok(_) if self.redis.is_none() => {
                    eprintln!("vigil load: comparing persist modes needs --redis");
                    return ExitCode::from(USAGE);
                }
                Ok(mode) => Some(mode),
                Err(e) => {
                    eprintln!(
                        "vigil load: with --transport inproc, --compare takes a persist mode: {e}"
                    );
                    return ExitCode::from(USAGE);
                }
            },
            _ => None,
        };
        let mut embedded = Vec::new();
        if inproc {
            let sides: Vec<(vigil::store::PersistMode, &str)> = match compare_mode {
                Some(b) => vec![(self.persist, "a:"), (b, "b:")],
                None => vec![(self.persist, "")],
            };
            for (mode, side) in sides {
                match self.embedded(mode, side).await {
                    Ok(c) => embedded.push(c),
                    Err(e) => {
                        eprintln!("vigil load: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        let config = |transport| vigil::load::LoadConfig {
            transport,
            workers: self.workers,
            prefix: self.prefix.clone(),
            rate: self.rate,
            duration: self.duration,
            concurrency: self.concurrency,
            connections: self.connections,
            tasks,
            progress: !self.no_progress,
        };
        let a = config(self.transport(&self.target, embedded.first()));
        let outcome = match &self.compare {
            None => vigil::load::run(a).await.map(|r| (vec![r], None)),
            Some(other) => {
                let (a_label, b_label) = match compare_mode {
                    Some(b) => (persist_name(self.persist), persist_name(b)),
                    None => (self.target.clone(), other.clone()),
                };
                let b = config(self.transport(other, embedded.get(1)));
                vigil::load::compare(a, a_label, b, b_label, self.rounds)
                    .await
                    .map(|c| (vec![c.a.clone(), c.b.clone()], Some(c)))
            }
        };
        for c in embedded {
            c.shutdown().await;
        }
        let (reports, comparison) = match outcome {
            Ok(o) => o,
            Err(e) => {
                eprintln!("vigil load: {e}");
                return ExitCode::FAILURE;
            }
        };
        match (&comparison, self.json) {
            (Some(c), true) => println!("{}", serde_json::to_string_pretty(c).unwrap_or_default()),
            (Some(c), false) => {
                for (label, r) in [(&c.a_label, &c.a), (&c.b_label, &c.b)] {
                    println!("== {label}");
                    print!("{}", r.table());
                }
                println!("== comparison");
                print!("{}", c.table());
            }
            (None, true) => println!(
                "{}",
                serde_json::to_string_pretty(&reports[0]).unwrap_or_default()
            ),
            (None, false) => print!("{}", reports[0].table()),
        }
        if let Some(path) = &self.plot {
            let runs: Vec<(&str, &vigil::load::LoadReport)> = match &comparison {
                Some(c) => vec![(c.a_label.as_str(), &c.a), (c.b_label.as_str(), &c.b)],
                None => vec![(reports[0].transport.as_str(), &reports[0])],
            };
            if let Err(e) = vigil::load::write_svg(path, &runs) {
                eprintln!("vigil load: {e}");
                return ExitCode::FAILURE;
            }
        }
        let mut failed = false;
        for report in &reports {
            if report.error_rate() > self.max_error_rate {
                eprintln!(
                    "vigil load: error rate {:.4} exceeds --max-error-rate {} ({})",
                    report.error_rate(),
                    self.max_error_rate,
                    report.transport
                );
                failed = true;
            }
            for slo in &self.slo {
                if !slo.met_by(report) {
                    eprintln!("vigil load: SLO missed: {slo} ({})", report.transport);
                    failed = true;
                }
            }
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn persist_name(mode: vigil::store::PersistMode) -> String {
    match mode {
        vigil::store::PersistMode::WriteBehind => "write-behind".into(),
        vigil::store::PersistMode::WriteThrough => "write-through".into(),
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
    restart_grace: Option<vigil::store::RestartGrace>,
    /// Serve the chaos.* fault-injection methods (kill actors, compare the store with
    /// memory), for chaos tests; never on a production server.
    #[arg(long, env = "VIGIL_CHAOS")]
    chaos: bool,
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
            record_retention: self.record_retention,
            restart_grace: self.restart_grace,
            chaos: self.chaos.then_some(true),
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
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    match cli.command {
        Command::Chaos(args) => {
            init_logging(cli.log_format.map(Into::into).unwrap_or_default(), "warn");
            args.run().await
        }
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
