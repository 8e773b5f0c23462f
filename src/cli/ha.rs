//! `vigil serve --ha`: one of several coordinators on one Redis, the active one or a standby
//! (docs/ha.md).
//!
//! The process binds its address once and keeps the socket for its whole life; clients wait
//! in its backlog while one server gives way to the other. It alternates between two phases:
//!
//! * **standby**: the standby server ([`Server::standby`]) answers −32008 naming the active
//!   coordinator, and every `--ha-retry` the process tries to take the coordinator lease
//!   ([`CoordLease::try_acquire`]);
//! * **active** (lease taken under epoch E): a renewal loop starts at once; the coordinator
//!   recovers from Redis as a restart does, writing under E (every write script refuses
//!   another epoch), with every listed instance given a full TTL, behind an [`ActiveGate`]
//!   whose deadline is the last renewal sent plus `--ha-renew-deadline`; then the full server
//!   answers.
//!
//! It steps down at once — gate shut, server stopped, coordinator abandoned without a final
//! flush, memory dropped — when a renewal finds the lease taken, when no renewal succeeds
//! before the deadline (measured on the monotonic clock, which runs on while the process is
//! stopped), or when the store refuses a write as fenced; then it is a standby again. On
//! SIGINT or SIGTERM the active one stops serving, flushes, and releases the lease so that a
//! standby takes over within one retry.

use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::settings::ServeSettings;
use super::shared::{endpoints, log_event, relay_events};
use crate::server::{ActiveInfo, Server, ServerConfig};
use crate::store::{Acquire, CoordLease, Renewal};
use crate::store::{RedisConfig, RestartGrace, StoreConfig};
use crate::{ActiveGate, Coordinator};

/// How long a server being replaced may take to finish the requests in flight.
const SERVER_STOP: Duration = Duration::from_secs(5);

/// Checks the settings `--ha` needs: a Redis store, `retry < renew deadline < lease`, and an
/// http(s) URL to advertise.
pub(super) fn check(settings: &ServeSettings) -> Result<(), String> {
    if settings.redis.is_none() {
        return Err(
            "--ha needs --redis: the coordinators share their state and their lease there".into(),
        );
    }
    let (lease, deadline, retry) = (
        settings.ha_lease,
        settings.ha_renew_deadline,
        settings.ha_retry,
    );
    if retry.is_zero() || !(retry < deadline && deadline < lease) {
        return Err(format!(
            "--ha timings must satisfy 0 < ha-retry < ha-renew-deadline < ha-lease, got \
             {} < {} < {}: the active must give up before anyone may take over",
            humantime::format_duration(retry),
            humantime::format_duration(deadline),
            humantime::format_duration(lease)
        ));
    }
    if let Some(url) = &settings.ha_advertise {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/') && !r.ends_with('/')) {
            return Err(format!(
                "--ha-advertise {url:?} is not a base URL: give scheme, host and port, e.g. \
                 http://10.0.0.5:7420"
            ));
        }
    }
    Ok(())
}

/// The lease timings.
#[derive(Debug, Clone, Copy)]
struct Timing {
    lease: Duration,
    renew_deadline: Duration,
    retry: Duration,
}

/// What ends the active phase.
enum Ended {
    /// The lease is lost: back to standby.
    SteppedDown,
    /// SIGINT or SIGTERM: the process exits with this status.
    Stopped(ExitCode),
}

struct Ha {
    settings: ServeSettings,
    server_config: ServerConfig,
    redis: RedisConfig,
    listener: std::net::TcpListener,
    holder: String,
    advertise: String,
    timing: Timing,
    stop: watch::Receiver<bool>,
    lease: Option<CoordLease>,
    /// The active coordinator as the last acquire attempt found it.
    last_held: Option<ActiveInfo>,
}

/// Runs `vigil serve --ha` until SIGINT or SIGTERM.
pub(super) async fn run(
    settings: ServeSettings,
    server_config: ServerConfig,
    stop_signal: impl Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let listen = server_config.listen;
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vigil: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    let StoreConfig::Redis(redis) = settings.coordinator_config().store else {
        eprintln!("vigil: --ha needs --redis");
        return ExitCode::from(2);
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal.await;
        let _ = stop_tx.send(true);
    });
    let holder = CoordLease::holder_id();
    let advertise = settings
        .ha_advertise
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{bound}"));
    tracing::info!(
        "vigil {} (high availability, holder {holder}) listening on http://{bound}, \
         advertised as {advertise}: {}; store {}; Ctrl-C stops",
        env!("CARGO_PKG_VERSION"),
        endpoints(&server_config).join(", "),
        crate::config::store::redact_url(&redis.url),
    );
    let mut ha = Ha {
        timing: Timing {
            lease: settings.ha_lease,
            renew_deadline: settings.ha_renew_deadline,
            retry: settings.ha_retry,
        },
        settings,
        server_config,
        redis,
        listener,
        holder,
        advertise,
        stop,
        lease: None,
        last_held: None,
    };
    loop {
        let Some((epoch, sent, standby)) = ha.standby().await else {
            return ExitCode::SUCCESS;
        };
        match ha.active(epoch, sent, standby).await {
            Ended::SteppedDown => continue,
            Ended::Stopped(code) => return code,
        }
    }
}

impl Ha {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Serves as a standby until the lease is ours: its epoch, when the acquiring call was
    /// sent, and the standby server, still serving (the caller starts renewing first, then
    /// stops it). `None` on SIGINT or SIGTERM.
    async fn standby(&mut self) -> Option<(u64, Instant, Serving)> {
        let (info_tx, info) = watch::channel(ActiveInfo::default());
        let listener = match self.listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the listening socket; exiting");
                return None;
            }
        };
        let server = match Server::standby(&self.server_config, listener, info) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve as a standby; exiting");
                return None;
            }
        };
        let (server_stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        tracing::info!("standby: answering -32008 and trying for the coordinator lease");
        let mut failures = 0u64;
        let acquired = loop {
            if self.stopping() {
                break None;
            }
            match self.try_acquire().await {
                Ok(Some(acquired)) => break Some(acquired),
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // The first failure, then one line a minute or so.
                    if failures == 1 || failures.is_multiple_of(60) {
                        tracing::warn!(error = %e, failures, "standby: cannot reach the coordinator lease in Redis; retrying");
                    }
                    // What was known of the active is stale now.
                    self.last_held = Some(ActiveInfo::default());
                }
            }
            if let Some(info) = &self.last_held {
                info_tx.send_if_modified(|current| {
                    let changed = current != info;
                    if changed {
                        tracing::info!(
                            active = info.url.as_deref().unwrap_or("none"),
                            epoch = info.epoch,
                            "standby: the active coordinator"
                        );
                        *current = info.clone();
                    }
                    changed
                });
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        };
        match acquired {
            Some((epoch, sent)) => Some((
                epoch,
                sent,
                Serving {
                    stop: server_stop,
                    task: serving,
                },
            )),
            None => {
                let _ = server_stop.send(());
                stop_server(serving).await;
                None
            }
        }
    }

    /// One try for the lease: `Some` when taken (its epoch and when the call was sent).
    async fn try_acquire(&mut self) -> Result<Option<(u64, Instant)>, String> {
        if self.lease.is_none() {
            let lease = CoordLease::connect(&self.redis)
                .await
                .map_err(|e| e.to_string())?;
            self.lease = Some(lease);
        }
        let lease = self.lease.as_ref().expect("connected above");
        let sent = Instant::now();
        match lease
            .try_acquire(&self.holder, &self.advertise, self.timing.lease)
            .await
        {
            Ok(Acquire::Acquired { epoch }) => match lease.replicated().await {
                Ok(true) => Ok(Some((epoch, sent))),
                // Only the primary has the new epoch: lost with it, it could be taken again.
                replicated => {
                    let why = match replicated {
                        Err(e) => e.to_string(),
                        _ => "no replica confirmed it in time".into(),
                    };
                    tracing::warn!(epoch, "took the coordinator lease, but {why}; giving it up");
                    if let Err(e) = lease.release(epoch, &self.holder).await {
                        tracing::warn!(error = %e, "could not release the lease; it lapses on its own");
                    }
                    Ok(None)
                }
            },
            Ok(Acquire::Held {
                epoch, url, holder, ..
            }) => {
                // Our own lease from before a step-down, not yet run out: nobody is active.
                let ours = holder == self.holder;
                self.last_held = Some(ActiveInfo {
                    url: (!url.is_empty() && !ours).then_some(url),
                    epoch: Some(epoch),
                });
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Ha {
    /// Serves as the active coordinator under `epoch` (the lease taken by a call sent at
    /// `sent`) until the lease is lost or the process is told to stop.
    async fn active(&mut self, epoch: u64, sent: Instant, standby: Serving) -> Ended {
        let lease = self.lease.clone().expect("the lease was taken through it");
        let timing = self.timing;
        let gate = ActiveGate::open_until((sent + timing.renew_deadline).into_std());
        tracing::info!(
            epoch,
            "active: took the coordinator lease; recovering from Redis"
        );
        metrics::counter!("vigil_ha_takeovers_total").increment(1);
        let (lost_tx, mut lost) = watch::channel(None::<String>);
        let renewing = tokio::spawn(renew(
            lease.clone(),
            self.holder.clone(),
            epoch,
            sent,
            timing,
            gate.clone(),
            lost_tx,
        ));
        // Renewing already: now the standby server may take its time to finish.
        let _ = standby.stop.send(());
        stop_server(standby.task).await;
        let mut config = self.settings.coordinator_config();
        if let StoreConfig::Redis(rc) = &mut config.store {
            rc.fence_epoch = Some(epoch);
            // Workers heartbeated to the previous active until it died: every listed
            // instance gets a full TTL, so none is expired because the coordinator changed.
            rc.restart_grace = RestartGrace::FullTtl;
        }
        let coordinator = match Coordinator::start_gated(config, gate.clone()).await {
            Ok(c) => c,
            Err(e) => {
                renewing.abort();
                gate.close();
                tracing::error!(epoch, error = %e, "active: recovery failed; giving the lease up");
                if let Err(e) = lease.release(epoch, &self.holder).await {
                    tracing::warn!(error = %e, "could not release the lease; it lapses on its own");
                }
                // Not at once for the lease again: another standby may do better.
                tokio::time::sleep(timing.retry).await;
                return Ended::SteppedDown;
            }
        };
        let mut server_config = self.server_config.clone();
        server_config.ha_epoch = Some(epoch);
        let server = self
            .listener
            .try_clone()
            .and_then(|l| Server::on_listener(coordinator.clone(), &server_config, l));
        let server = match server {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(error = %e, "active: cannot serve; exiting");
                renewing.abort();
                coordinator.shutdown().await;
                let _ = lease.release(epoch, &self.holder).await;
                return Ended::Stopped(ExitCode::FAILURE);
            }
        };
        let logger = tokio::spawn(relay_events(coordinator.subscribe(), log_event));
        let (server_stop, stopped) = oneshot::channel::<()>();
        let mut serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let report = coordinator.recovery_report().unwrap_or_default();
        tracing::info!(
            epoch,
            took_ms = sent.elapsed().as_millis() as u64,
            instances = report.instances_restored,
            tasks = report.tasks,
            term = report.term_resumed,
            "active: serving as the active coordinator"
        );
        let mut fenced = coordinator
            .fenced()
            .unwrap_or_else(|| watch::channel(false).1);
        let mut stop = self.stop.clone();
        let ended = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            why = lost.wait_for(Option::is_some) => Some(match why {
                Ok(why) => why.clone().unwrap_or_default(),
                Err(_) => "the lease renewal stopped".to_string(),
            }),
            _ = fenced.wait_for(|f| *f) => Some("the store refused a write as fenced".to_string()),
            result = &mut serving => {
                let why = match result {
                    Ok(Ok(())) => "the server stopped".to_string(),
                    Ok(Err(e)) => format!("server error: {e}"),
                    Err(e) => format!("the server task failed: {e}"),
                };
                tracing::error!("{why}; exiting");
                renewing.abort();
                logger.abort();
                coordinator.shutdown().await;
                let _ = lease.release(epoch, &self.holder).await;
                return Ended::Stopped(ExitCode::FAILURE);
            }
        };
        match ended {
            Some(reason) => {
                // At once: nothing more is answered, expired or elected here.
                gate.close();
                tracing::error!(epoch, "stepping down: {reason}; now a standby");
                metrics::counter!("vigil_ha_step_downs_total").increment(1);
                renewing.abort();
                // If the lease is still ours (a missed deadline, not a takeover), hand it
                // over now rather than make every standby wait for it to run out.
                let release = lease.release(epoch, &self.holder);
                if let Ok(Ok(true)) = tokio::time::timeout(timing.retry, release).await {
                    tracing::info!(epoch, "released the coordinator lease");
                }
                let _ = server_stop.send(());
                stop_server(serving).await;
                coordinator.abandon().await;
                logger.abort();
                Ended::SteppedDown
            }
            None => {
                // Stopped: finish the requests in flight, flush under our epoch (the renewals
                // go on meanwhile), then hand the lease over.
                let _ = server_stop.send(());
                stop_server(serving).await;
                coordinator.shutdown().await;
                logger.abort();
                renewing.abort();
                match lease.release(epoch, &self.holder).await {
                    Ok(true) => tracing::info!(epoch, "released the coordinator lease"),
                    Ok(false) => tracing::warn!(epoch, "the coordinator lease was no longer ours"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release the coordinator lease; it lapses on its own")
                    }
                }
                Ended::Stopped(ExitCode::SUCCESS)
            }
        }
    }
}

/// Renews the lease every `timing.retry` and moves the gate's deadline to each successful
/// renewal's sending time plus the renew deadline. Says why in `lost`, and shuts the gate, when
/// the lease is taken over or the deadline passes without a renewal.
async fn renew(
    lease: CoordLease,
    holder: String,
    epoch: u64,
    acquired: Instant,
    timing: Timing,
    gate: ActiveGate,
    lost: watch::Sender<Option<String>>,
) {
    let mut deadline = acquired + timing.renew_deadline;
    let mut failures = 0u64;
    let give_up = |why: String| {
        gate.close();
        let _ = lost.send(Some(why));
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(timing.retry) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        let sent = Instant::now();
        if sent >= deadline {
            return give_up(format!(
                "the lease was not renewed within {}",
                humantime::format_duration(timing.renew_deadline)
            ));
        }
        let renewed = tokio::time::timeout_at(deadline, lease.renew(epoch, &holder, timing.lease));
        match renewed.await {
            Ok(Ok(Renewal::Renewed)) => {
                failures = 0;
                deadline = sent + timing.renew_deadline;
                if !gate.extend_to(deadline.into_std()) {
                    return give_up("the renew deadline passed".into());
                }
            }
            Ok(Ok(Renewal::Fenced { epoch: now })) => {
                return give_up(format!(
                    "the lease is no longer ours (epoch {now} in Redis, ours {epoch})"
                ));
            }
            Ok(Err(e)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, epoch, "renewing the coordinator lease failed; retrying until the renew deadline");
                }
            }
            Err(_) => {
                return give_up(format!(
                    "the lease was not renewed within {}",
                    humantime::format_duration(timing.renew_deadline)
                ));
            }
        }
    }
}

/// A server running in a task, and what tells it to stop.
struct Serving {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Waits for a server told to stop, at most [`SERVER_STOP`]; then drops what is left of it.
async fn stop_server(serving: tokio::task::JoinHandle<std::io::Result<()>>) {
    let abort = serving.abort_handle();
    match tokio::time::timeout(SERVER_STOP, serving).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error while stopping"),
        Ok(Err(_)) => {}
        Err(_) => {
            tracing::warn!("connections still open after 5 s; closing them");
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timings_and_the_store_are_checked() {
        let ok = ServeSettings {
            redis: Some("redis://127.0.0.1:6379".into()),
            ha: true,
            ..ServeSettings::default()
        };
        assert_eq!(check(&ok), Ok(()));
        let no_redis = ServeSettings {
            redis: None,
            ..ok.clone()
        };
        assert!(check(&no_redis).unwrap_err().contains("--redis"));
        let upside_down = ServeSettings {
            ha_renew_deadline: Duration::from_secs(12),
            ..ok.clone()
        };
        let refused = check(&upside_down).unwrap_err();
        assert!(
            refused.contains("ha-retry < ha-renew-deadline < ha-lease"),
            "{refused}"
        );
        let zero = ServeSettings {
            ha_retry: Duration::ZERO,
            ..ok.clone()
        };
        assert!(check(&zero).is_err());
        for bad in ["10.0.0.5:7420", "http://", "ftp://x:1", "http://h:1/rpc"] {
            let s = ServeSettings {
                ha_advertise: Some(bad.into()),
                ..ok.clone()
            };
            assert!(check(&s).is_err(), "{bad} accepted");
        }
        let good = ServeSettings {
            ha_advertise: Some("https://vigil-a.internal:7420/".into()),
            ..ok
        };
        assert_eq!(check(&good), Ok(()));
    }
}
