//! `vigil chaos`: a workload against a server started with `--chaos` (or one it spawns), with
//! actors killed, Redis and the process restarted, and every invariant checked.

use std::time::Duration;

use super::USAGE;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The server's base URL (started with --chaos), or several separated by commas
    /// (`vigil serve --ha`: calls follow the active); ignored with --spawn.
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
    /// With --spawn: start a private Redis Sentinel deployment (a primary, a replica, three
    /// sentinels) and give the child (or the --ha children) its redis+sentinel:// URL.
    #[arg(long, conflicts_with_all = ["spawn_redis", "redis"])]
    spawn_sentinel: bool,
    /// With --spawn-sentinel: kill the Redis primary (SIGKILL) this often; the sentinels
    /// promote the replica, and the killed node comes back as a replica of it.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_primary_every: Option<Duration>,
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
    /// With --spawn: start this many `vigil serve --ha` children on the Redis instead of one
    /// (lease 2 s, renew deadline 1.2 s, retry 200 ms), watch which is active, and check
    /// that no epoch is active twice and no deposed one answers as active (docs/ha.md).
    #[arg(long, value_name = "N")]
    ha: Option<usize>,
    /// With --ha: kill the active coordinator (SIGKILL) this often; a standby takes over,
    /// and the killed one comes back as a standby. Reports the takeover time.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_active_every: Option<Duration>,
    /// With --ha: stop the active coordinator (SIGSTOP) for longer than the lease this
    /// often, then resume it: the zombie must step down. Reports the zombie window.
    #[arg(long, value_parser = humantime::parse_duration)]
    pause_active_every: Option<Duration>,
    /// With --ha and --spawn-redis: cut the active coordinator off from Redis this often (each
    /// child reaches Redis through a loopback relay of its own), until it stepped down and a
    /// standby took over; then heal the cut.
    #[arg(long, value_parser = humantime::parse_duration)]
    partition_active_every: Option<Duration>,
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
    /// The adversary's attempts per second: another principal that tries to act as the
    /// workers and reads every view for claim tokens (0: none).
    #[arg(long, default_value_t = 10.0)]
    adversary_rate: f64,
    /// A `worker` token of the server's token file for the adversary; with --spawn one is
    /// made (with an operator token for the driver) [default: no adversary without --spawn].
    #[arg(long, env = "VIGIL_ADVERSARY_TOKEN", hide_env_values = true)]
    adversary_token: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl ChaosArgs {
    pub async fn run(self) -> std::process::ExitCode {
        use crate::chaos::Disruptor;
        use crate::chaos::disrupt::{RedisProcess, ServeProcess};
        use std::process::ExitCode;
        let usage = |m: &str| {
            eprintln!("vigil chaos: {m}");
            ExitCode::from(USAGE)
        };
        if !["http", "ws"].contains(&self.transport.as_str()) {
            return usage("--transport is http or ws");
        }
        if !self.spawn
            && (self.spawn_redis
                || self.spawn_sentinel
                || self.sigkill_every.is_some()
                || self.redis.is_some())
        {
            return usage(
                "--spawn-redis, --spawn-sentinel, --redis and --sigkill-every need --spawn",
            );
        }
        if self.kill_primary_every.is_some() && !self.spawn_sentinel {
            return usage("--kill-primary-every needs --spawn-sentinel");
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
        let any_redis = self.spawn_redis || self.spawn_sentinel || self.redis.is_some();
        if self.sigkill_every.is_some() && !any_redis {
            return usage(
                "--sigkill-every needs a Redis to recover from (--spawn-redis or --redis)",
            );
        }
        if let Some(n) = self.ha {
            if !self.spawn || !any_redis {
                return usage(
                    "--ha needs --spawn and a Redis (--spawn-redis, --spawn-sentinel or --redis)",
                );
            }
            if n < 2 {
                return usage("--ha needs at least 2 coordinators");
            }
            if self.sigkill_every.is_some() {
                return usage("with --ha, use --kill-active-every instead of --sigkill-every");
            }
            if self.redis_empty_restarts {
                return usage(
                    "--redis-empty-restarts with --ha would lose the coordinator lease with \
                     the data; drop one of them",
                );
            }
            if self.partition_active_every.is_some() && !self.spawn_redis {
                return usage("--partition-active-every needs --spawn-redis");
            }
        } else if self.kill_active_every.is_some()
            || self.pause_active_every.is_some()
            || self.partition_active_every.is_some()
        {
            return usage(
                "--kill-active-every, --pause-active-every and --partition-active-every need --ha N",
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
        let sentinel = if self.spawn_sentinel {
            match crate::chaos::disrupt::SentinelRedis::start().await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("vigil chaos: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let redis_url = redis
            .as_ref()
            .map(RedisProcess::url)
            .or(sentinel.as_ref().map(|s| s.url()))
            .or(self.redis.clone());
        // A spawned server gets principals: an operator token for the driver (which needs
        // chaos.*) and a worker token for the adversary.
        let mut token = self.token.clone();
        let mut adversary_token = self.adversary_token.clone();
        let tokens_file = if self.spawn && self.adversary_rate > 0.0 {
            let random = || format!("{:032x}", rand::random::<u128>());
            token.get_or_insert_with(random);
            let adversary = adversary_token.get_or_insert_with(random).clone();
            match TokenFile::write(&adversary) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("vigil chaos: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let mut ha_group = None;
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
                if self.ha.is_none() {
                    // An HA group gives each child its Redis (or its relay to it) itself.
                    extra.extend(["--redis".into(), url.clone()]);
                }
                extra.extend(["--flush-interval".into(), "100ms".into()]);
            }
            if let Some(token) = &token {
                extra.extend(["--token".into(), token.clone()]);
            }
            if let Some(file) = &tokens_file {
                extra.extend(["--tokens".into(), file.path.display().to_string()]);
            }
            if let Some(n) = self.ha {
                let url = redis_url.clone().unwrap_or_default();
                let relayed = self.partition_active_every.is_some();
                let group = crate::chaos::ha::HaGroup::start(
                    program,
                    n,
                    &url,
                    relayed,
                    extra,
                    token.clone(),
                );
                match group.await {
                    Ok(group) => ha_group = Some(group),
                    Err(e) => {
                        eprintln!("vigil chaos: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                None
            } else {
                match ServeProcess::start(program, extra).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        eprintln!("vigil chaos: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        } else {
            None
        };
        let target = match (&server, &ha_group) {
            (Some(server), _) => server.url(),
            // Every coordinator of the group: the workload's client follows the active one.
            (None, Some(group)) => group.urls().join(","),
            (None, None) => self.target.clone(),
        };
        if server.is_none()
            && ha_group.is_none()
            && let Err(e) = super::reach(&target, token.as_deref(), super::TARGET_TIMEOUT).await
        {
            eprintln!("vigil chaos: {e}");
            return ExitCode::FAILURE;
        }
        let transport = match self.transport.as_str() {
            "ws" => crate::load::Transport::Ws {
                target,
                token: token.clone(),
                batch: 1,
            },
            _ => crate::load::Transport::Http {
                target,
                token: token.clone(),
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
        if let (Some(s), Some(every)) = (&sentinel, self.kill_primary_every) {
            disruptors.push((s, every));
        }
        let kill_active = ha_group.as_ref().map(|g| g.kill_active());
        let pause_active = ha_group.as_ref().map(|g| g.pause_active());
        let partition_active = ha_group.as_ref().map(|g| g.partition_active());
        if let (Some(d), Some(every)) = (&partition_active, self.partition_active_every) {
            disruptors.push((d, every));
        }
        if let (Some(d), Some(every)) = (&kill_active, self.kill_active_every) {
            disruptors.push((d, every));
        }
        if let (Some(d), Some(every)) = (&pause_active, self.pause_active_every) {
            disruptors.push((d, every));
        }
        if let Some(d) = &kill_active
            && self.kill_active_every.is_none()
            && self.pause_active_every.is_none()
            && self.partition_active_every.is_none()
        {
            // No fault, but the group's invariants still count.
            disruptors.push((d, Duration::ZERO));
        }
        let config = crate::chaos::ChaosConfig {
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
            adversary_rate: self.adversary_rate,
            adversary_token,
            prefix: "chaos".into(),
        };
        if config.adversary_token.is_none() && config.adversary_rate > 0.0 {
            eprintln!(
                "vigil chaos: no adversary (give --adversary-token, a worker token of the server, or use --spawn)"
            );
        }
        let report = match crate::chaos::run(transport, config, &disruptors).await {
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

/// A token file for a spawned server (owner-only permissions), removed when dropped.
struct TokenFile {
    path: std::path::PathBuf,
}

impl TokenFile {
    fn write(adversary: &str) -> Result<Self, String> {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!(
            "vigil-chaos-tokens-{}-{:x}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        writeln!(
            file,
            "[[token]]\nname = \"adversary\"\nrole = \"worker\"\ntoken = \"{adversary}\""
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
