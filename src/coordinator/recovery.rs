//! Start-up with a durable store: connect, read everything back, rebuild memory, respawn the
//! actors of live instances with their remaining TTL, and expire at once the instances whose
//! TTL lapsed while the coordinator was down (their tasks go back to pending).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Coordinator;
use crate::actors::ClusterContext;
use crate::actors::supervisor::{RestoredInstance, SupervisorMsg};
use crate::config::Config;
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::model::{Epoch, InstanceId};
use crate::store::{Persistence, RedisStore, Snapshot, StoreConfig};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Instances respawned with their remaining TTL.
    pub instances_restored: usize,
    /// Instances whose TTL lapsed while the coordinator was down, expired at once.
    pub instances_expired: usize,
    /// Tasks loaded.
    pub tasks: usize,
    /// Leases loaded.
    pub leases: usize,
    /// Tasks taken back from instances that died meanwhile.
    pub tasks_reassigned: usize,
    /// The term recovered.
    pub term: u64,
    /// Keys holding something unreadable, with the reason; skipped.
    pub skipped: Vec<(String, String)>,
    /// Time spent reading the store.
    pub loaded_in: Duration,
    /// Time from connecting to serving.
    pub took: Duration,
}

/// Connects the configured store.
pub(super) async fn connect(config: &Config) -> Result<Option<Arc<Persistence>>, Error> {
    match &config.store {
        StoreConfig::Memory => Ok(None),
        StoreConfig::Redis(rc) => {
            let store = RedisStore::connect(rc)
                .await
                .map_err(|e| Error::StoreUnavailable(e.0))?;
            Ok(Some(Arc::new(Persistence::new(
                Arc::new(store),
                rc.persist,
                rc.flush_interval,
                crate::store::Breaker::new(rc.breaker_failures, rc.breaker_open_for),
            ))))
        }
    }
}

/// What is left to do once the actors run.
pub(super) struct Plan {
    alive: Vec<RestoredInstance>,
    expired: Vec<(InstanceId, Option<Epoch>)>,
    report: RecoveryReport,
    started: Instant,
}

/// Loads the snapshot into memory (before any actor runs).
pub(super) fn prepare(ctx: &Arc<ClusterContext>, snap: Snapshot, started: Instant) -> Plan {
    let clock = &ctx.clock;
    let now_wall = clock.now_wall_ms();
    let mut report = RecoveryReport {
        tasks: snap.tasks.len(),
        leases: snap.leases.len(),
        skipped: snap.skipped,
        loaded_in: started.elapsed(),
        ..RecoveryReport::default()
    };
    for (key, why) in &report.skipped {
        tracing::warn!(key = %key, reason = %why, "unreadable key skipped during recovery");
    }
    // Heartbeats are written behind: a heartbeat after the last flush may be missing. Assume
    // every instance still alive at that flush heartbeated up to one flush interval after it
    // (never later than now), so a crash can make an instance live a little longer, never
    // expire before its TTL.
    let interval = ctx
        .persistence
        .as_ref()
        .map_or(0, |p| p.flush_interval.as_millis() as u64);
    let heard_until = (snap.counters.last_flush_ms + interval).min(now_wall);
    let mut last_epoch = snap.counters.last_epoch;
    let mut alive = Vec::new();
    let mut expired: Vec<(InstanceId, Option<Epoch>)> =
        snap.lapsed.into_iter().map(|id| (id, None)).collect();
    for mut r in snap.instances {
        last_epoch = last_epoch.max(r.epoch.0);
        if snap.counters.last_flush_ms > 0 {
            r.last_seen_ms = r.last_seen_ms.max(heard_until);
        }
        if r.status.is_alive() && r.last_seen_ms + r.ttl_ms > now_wall {
            alive.push(RestoredInstance {
                id: r.id,
                epoch: r.epoch,
                ttl_ms: r.ttl_ms,
                last_seen: clock.mono_from_wall(r.last_seen_ms),
                registered_at: clock.mono_from_wall(r.registered_at_ms),
                roles: r.roles,
                metadata: r.metadata,
            });
        } else {
            expired.push((r.id, Some(r.epoch)));
        }
    }
    ctx.advance_epoch(last_epoch);
    ctx.work
        .lock()
        .restore(snap.tasks, snap.leases, snap.counters.work, clock);
    if let Some(term) = snap.term {
        report.term = term.term.0;
        // Elections are not write-through: a term handed out in a heartbeat answer after the
        // last flush is not in the store. Continuing from the stored term could hand the same
        // term to a second leader; continuing far above it cannot, unless more than
        // TERM_GAP_AFTER_RECOVERY elections happened between the last successful flush and the
        // crash.
        let resumed = crate::model::Term(term.term.0 + TERM_GAP_AFTER_RECOVERY);
        ctx.leadership.install(resumed, None, clock.precise_ms());
    }
    ctx.events.restore(snap.events);
    Plan {
        alive,
        expired,
        report,
        started,
    }
}

/// How far above the stored term a recovered coordinator resumes (see `prepare`).
pub const TERM_GAP_AFTER_RECOVERY: u64 = 1000;

/// Respawns the live instances and expires the lapsed ones.
pub(super) async fn finish(c: &Coordinator, plan: Plan) -> Result<RecoveryReport, Error> {
    let ctx = &c.inner.ctx;
    let Plan {
        alive,
        expired,
        mut report,
        started,
    } = plan;
    let timeout = ctx.config.call_timeout.max(Duration::from_secs(1)) * 30;
    let restored = c
        .inner
        .supervisor
        .call(|reply| SupervisorMsg::Restore(alive, reply), Some(timeout))
        .await;
    report.instances_restored = Coordinator::unwrap_call(restored, timeout, "ClusterSupervisor")?;
    report.instances_expired = expired.len();
    for (id, epoch) in expired {
        let mut event = Event::new(
            EventKind::InstanceExpired,
            ctx.leadership.term(),
            ctx.clock.now_wall_ms(),
        );
        event.instance_id = Some(id.clone());
        event.epoch = epoch;
        event.reason = Some("TTL lapsed while the coordinator was down".into());
        ctx.events.publish(event);
        if let Some(epoch) = epoch {
            report.tasks_reassigned += ctx.with_work(|work, op| {
                work.release_instance(
                    op,
                    &id,
                    epoch,
                    "instance expired while the coordinator was down",
                )
            });
        }
    }
    // Claims and leases of holders that are neither live nor known (lapsed without a record).
    let sweep = c.sweep_now().await;
    report.tasks_reassigned += sweep.orphans_reassigned;
    report.took = started.elapsed();
    tracing::info!(
        restored = report.instances_restored,
        expired = report.instances_expired,
        tasks = report.tasks,
        leases = report.leases,
        reassigned = report.tasks_reassigned,
        term = report.term,
        skipped = report.skipped.len(),
        loaded_ms = report.loaded_in.as_millis() as u64,
        took_ms = report.took.as_millis() as u64,
        "recovered from the store"
    );
    Ok(report)
}
