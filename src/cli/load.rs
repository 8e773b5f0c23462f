//! `vigil load`: the load harness's command line (the engine is [`crate::load`]).

use std::time::Duration;

use super::USAGE;
use crate::Coordinator;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server's base URL (http, ws and ws-binary transports), or several separated by
    /// commas (`vigil serve --ha`): calls follow a standby's −32008 to the active, and the
    /// report counts those answers as redirected, not as errors.
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
    /// The first part of the run's tag PREFIX-RUN: its workers are PREFIX-RUN-0 …
    /// PREFIX-RUN-(N−1) with the role PREFIX-RUN, and its tasks require that role.
    #[arg(long, default_value = "vigil-load")]
    prefix: String,
    /// The run's id, the second part of its tag [default: 8 random hex digits].
    #[arg(long, value_name = "RUN")]
    run_id: Option<String>,
    /// Leave the run's workers and tasks on the target when it ends (by default it
    /// unregisters its workers and deletes its tasks, also on an error or Ctrl-C).
    #[arg(long)]
    keep: bool,
    /// With --tasks: run even when the target has pending or claimed tasks of others.
    #[arg(long)]
    force: bool,
    /// Heartbeat rate: 1000/min, 50k/s, or max (closed loop).
    #[arg(long, default_value = "1000/min")]
    rate: crate::load::Rate,
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
    persist: crate::store::PersistMode,
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
    slo: Vec<crate::load::Slo>,
}

impl LoadArgs {
    fn task_rate(&self) -> Result<Option<f64>, String> {
        use crate::load::Rate;
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
        persist: crate::store::PersistMode,
        side: &str,
    ) -> Result<Coordinator, String> {
        let store = match &self.redis {
            None => crate::store::StoreConfig::Memory,
            Some(url) => crate::store::StoreConfig::Redis(crate::store::RedisConfig {
                prefix: format!("{}{side}", self.store_prefix),
                persist,
                ..crate::store::RedisConfig::new(url.clone())
            }),
        };
        Coordinator::start(crate::Config {
            store,
            ..crate::Config::default()
        })
        .await
        .map_err(|e| format!("starting the embedded coordinator: {e}"))
    }

    fn transport(&self, target: &str, inproc: Option<&Coordinator>) -> crate::load::Transport {
        use crate::load::Transport;
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

    pub async fn run(self) -> std::process::ExitCode {
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
            (Some(other), true) => match other.parse::<crate::store::PersistMode>() {
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
            let sides: Vec<(crate::store::PersistMode, &str)> = match compare_mode {
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
        if !inproc {
            // A target that cannot be used fails here, in words saying what to fix.
            for target in std::iter::once(&self.target).chain(&self.compare) {
                if let Err(e) =
                    super::reach(target, self.token.as_deref(), super::TARGET_TIMEOUT).await
                {
                    eprintln!("vigil load: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let run_id = self.run_id.clone().unwrap_or_else(crate::load::new_run_id);
        let config = |transport| crate::load::LoadConfig {
            transport,
            workers: self.workers,
            prefix: self.prefix.clone(),
            run_id: run_id.clone(),
            keep: self.keep,
            force: self.force,
            rate: self.rate,
            duration: self.duration,
            concurrency: self.concurrency,
            connections: self.connections,
            tasks,
            progress: !self.no_progress,
        };
        let a = config(self.transport(&self.target, embedded.first()));
        // Ctrl-C stops the run early; it cleans up all the same.
        let interrupt = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let outcome = match &self.compare {
            None => crate::load::run_until(a, interrupt)
                .await
                .map(|r| (vec![r], None)),
            Some(other) => {
                let (a_label, b_label) = match compare_mode {
                    Some(b) => (persist_name(self.persist), persist_name(b)),
                    None => (self.target.clone(), other.clone()),
                };
                let b = config(self.transport(other, embedded.get(1)));
                crate::load::compare_until(a, a_label, b, b_label, self.rounds, interrupt)
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
            let runs: Vec<(&str, &crate::load::LoadReport)> = match &comparison {
                Some(c) => vec![(c.a_label.as_str(), &c.a), (c.b_label.as_str(), &c.b)],
                None => vec![(reports[0].transport.as_str(), &reports[0])],
            };
            if let Err(e) = crate::load::write_svg(path, &runs) {
                eprintln!("vigil load: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!("wrote plot: {}", path.display());
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

fn persist_name(mode: crate::store::PersistMode) -> String {
    match mode {
        crate::store::PersistMode::WriteBehind => "write-behind".into(),
        crate::store::PersistMode::WriteThrough => "write-through".into(),
    }
}
