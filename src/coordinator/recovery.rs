//! Start-up with a durable store: connect, read everything back, rebuild memory, respawn the
//! actors of the instances the store lists as alive, and expire at once the ones it lists as
//! gone (their tasks go back to pending).
//!
//! What happened between the last successful flush and the crash is unknown: heartbeats are
//! written behind, and not at all while the store is unreachable. By default
//! ([`RestartGrace::FullTtl`]) every listed instance gets a full TTL from the restart, so no
//! instance that kept heartbeating is ever expired early; [`RestartGrace::SinceLastFlush`]
//! trusts the last flush instead and expires at once those whose TTL ran out since.
//!
//! Recovery never guesses. A read that fails, or a term or counter that does not parse, fails
//! the start (the process supervisor retries it) instead of counting as "nothing stored" —
//! which would hand out again epochs, task ids, fencing tokens and terms handed out before. A
//! single malformed record is skipped, reported and left in the store (see
//! `RedisStore::load`). Terms resume above the ceiling the store reserved, and the first block
//! of the new run is reserved before the coordinator starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Coordinator;
use crate::actors::ClusterContext;
use crate::actors::supervisor::{RestoredInstance, SupervisorMsg};
use crate::config::Config;
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::model::{Epoch, InstanceId, Term};
#[cfg(feature = "redis")]
use crate::store::RedisStore;
use crate::store::{Persistence, RestartGrace, Snapshot, StoreConfig, TERM_BLOCK};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Instances respawned: with their remaining TTL, or a fresh one (see `instances_renewed`).
    pub instances_restored: usize,
    /// Of the restored, those whose stored TTL had run out and that were given a full TTL from
    /// the restart ([`RestartGrace::FullTtl`]): alive ones keep their place by heartbeating,
    /// dead ones expire one TTL after the restart.
    pub instances_renewed: usize,
    /// Instances expired at once: stored as expired, past their record's retention, or (with
    /// [`RestartGrace::SinceLastFlush`]) whose TTL ran out since the last flush.
    pub instances_expired: usize,
    /// Tasks loaded.
    pub tasks: usize,
    /// Leases loaded.
    pub leases: usize,
    /// Tasks taken back from instances that died meanwhile.
    pub tasks_reassigned: usize,
    /// The term recovered (`leader:term` as stored; 0 if none).
    pub term: u64,
    /// The term the coordinator resumed at, as a vacancy until the first election: one above
    /// every term the store had reserved, so above every term handed out before the restart
    /// (0 when the store held no term).
    pub term_resumed: u64,
    /// The highest term reserved for this run so far (before the first election).
    pub term_ceiling: u64,
    /// Records that could not be read, with the reason: skipped, and left in the store as
    /// they are (see [`Snapshot::skipped`](crate::store::Snapshot::skipped)).
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
        #[cfg(feature = "redis")]
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

/// Where terms resume after the restart, and the ceiling reserved for them.
pub(super) struct Terms {
    resume: Option<Term>,
    ceiling: u64,
}

/// Reads the store back and reserves the first block of terms of this run. Any failure is an
/// error that names what could not be read or written: the coordinator does not start, and
/// nothing has been changed in memory or in the store (apart from a reservation, which only
/// ever skips terms).
pub(super) async fn load(
    p: &Persistence,
    recent_events: usize,
    floor: u64,
) -> Result<(Snapshot, Terms), Error> {
    let refuse = |what: &str, e: crate::store::StoreError| {
        Error::StoreUnavailable(format!(
            "recovery could not {what}, so the coordinator does not start: {}",
            e.0
        ))
    };
    let snap = p
        .store
        .load(recent_events)
        .await
        .map_err(|e| refuse("read the store", e))?;
    let stored = snap.term.as_ref().map_or(0, |t| t.term.0);
    // Every term handed out lies at or below the reserved ceiling. A store written before
    // reservations existed has none: then the old rule, `leader:term` plus a gap.
    let last_possible = match snap.counters.term_reserved {
        0 if stored > 0 => {
            tracing::warn!(
                stored,
                gap = TERM_GAP_AFTER_RECOVERY,
                "no term reservation in the store (written by an older version): resuming a gap above the stored term"
            );
            stored + TERM_GAP_AFTER_RECOVERY
        }
        reserved => reserved.max(stored),
    }
    // Under a coordinator epoch E every term is above E · 2^32 (see `epoch_floor`).
    .max(floor);
    let ceiling = p
        .store
        .reserve_terms(last_possible + TERM_BLOCK)
        .await
        .map_err(|e| refuse("reserve terms", e))?;
    Ok((
        snap,
        Terms {
            resume: (last_possible > 0).then(|| Term(last_possible + 1)),
            ceiling,
        },
    ))
}

/// How many values — terms, lease fencing tokens — one coordinator epoch may hand out: the
/// epoch E goes into the bits above them (`E · 2^32 + n`), so that everything a later epoch
/// hands out is greater than anything an earlier one did, by construction. Epochs stop at
/// 2^21 − 1 (`coord_acquire.lua`), which keeps every value below 2^53: exact in Lua's
/// doubles and in JavaScript.
pub const EPOCH_SHIFT: u32 = 32;

/// The floor of terms and fencing tokens for the coordinator epoch `config` writes under
/// ([`RedisConfig::fence_epoch`](crate::store::RedisConfig::fence_epoch)): `E · 2^32`, or 0
/// without high availability.
pub(super) fn epoch_floor(config: &Config) -> u64 {
    match &config.store {
        #[cfg(feature = "redis")]
        StoreConfig::Redis(rc) => rc.fence_epoch.map_or(0, |e| e << EPOCH_SHIFT),
        StoreConfig::Memory => 0,
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
pub(super) fn prepare(
    ctx: &Arc<ClusterContext>,
    snap: Snapshot,
    terms: Terms,
    started: Instant,
    floor: u64,
) -> Plan {
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
        tracing::error!(
            key = %key,
            reason = %why,
            "unreadable record not recovered; left in the store as it is"
        );
    }
    let (grace, retention_ms) = match &ctx.config.store {
        #[cfg(feature = "redis")]
        crate::store::StoreConfig::Redis(rc) => {
            (rc.restart_grace, rc.record_retention.as_millis() as u64)
        }
        crate::store::StoreConfig::Memory => (RestartGrace::default(), u64::MAX),
    };
    // Heartbeats are written behind, and not at all while the store is unreachable: a
    // heartbeat after the last successful flush may be missing, and when that flush was is
    // known but not when the crash came.
    let heard_until = match grace {
        // Every listed instance may have heartbeated until now: a full TTL from the restart.
        RestartGrace::FullTtl => now_wall,
        // Every instance still alive at the last flush heartbeated up to one flush interval
        // after it (never later than now): a crash in a healthy store makes an instance live a
        // little longer, never expire before its TTL; a crash during an outage may.
        RestartGrace::SinceLastFlush => {
            let interval = ctx
                .persistence
                .as_ref()
                .map_or(0, |p| p.flush_interval.as_millis() as u64);
            if snap.counters.last_flush_ms > 0 {
                (snap.counters.last_flush_ms + interval).min(now_wall)
            } else {
                0
            }
        }
    };
    let mut last_epoch = snap.counters.last_epoch;
    let mut alive = Vec::new();
    let mut expired: Vec<(InstanceId, Option<Epoch>)> =
        snap.lapsed.into_iter().map(|id| (id, None)).collect();
    for mut r in snap.instances {
        last_epoch = last_epoch.max(r.epoch.0);
        let stored_deadline = r.last_seen_ms.saturating_add(r.ttl_ms);
        // Past the record's retention the key would be gone from Redis: the same verdict.
        let retained = stored_deadline.saturating_add(retention_ms) > now_wall;
        r.last_seen_ms = r.last_seen_ms.max(heard_until);
        if r.status.is_alive() && retained && r.last_seen_ms + r.ttl_ms > now_wall {
            if stored_deadline <= now_wall {
                report.instances_renewed += 1;
            }
            alive.push(RestoredInstance {
                id: r.id,
                epoch: r.epoch,
                ttl_ms: r.ttl_ms,
                last_seen: clock.mono_from_wall(r.last_seen_ms),
                registered_at: clock.mono_from_wall(r.registered_at_ms),
                roles: r.roles,
                metadata: r.metadata,
                owner: r.owner.map(std::sync::Arc::from),
            });
        } else {
            expired.push((r.id, Some(r.epoch)));
        }
    }
    ctx.advance_epoch(last_epoch);
    let mut work_counters = snap.counters.work;
    // Fencing tokens of this epoch start above every one an earlier epoch could hand out.
    work_counters.last_fencing_token = work_counters.last_fencing_token.max(floor);
    ctx.work
        .lock()
        .restore(snap.tasks, snap.leases, work_counters, clock);
    report.term = snap.term.as_ref().map_or(0, |t| t.term.0);
    // `leader:term` is written behind: a term announced after the last flush is not in it.
    // The reserved ceiling is written before any term under it is used, so resuming above it
    // hands out no term twice, however many elections the crash cut short.
    ctx.leadership.set_ceiling(terms.ceiling);
    report.term_ceiling = terms.ceiling;
    if let Some(resumed) = terms.resume {
        ctx.leadership.install(resumed, None, clock.precise_ms());
        report.term_resumed = resumed.0;
        if let Some(p) = &ctx.persistence {
            p.journal.touch_term();
        }
    }
    ctx.events.restore(snap.events);
    Plan {
        alive,
        expired,
        report,
        started,
    }
}

/// How far above the stored `leader:term` a recovered coordinator resumes when the store holds
/// no term reservation — one written by a version before reservations (see `load`). With a
/// reservation it resumes one above the reserved ceiling instead, which needs no gap.
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
        event.reason = Some("TTL ran out before the restart".into());
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
    let sweep = c.sweep_now();
    report.tasks_reassigned += sweep.orphans_reassigned;
    report.took = started.elapsed();
    tracing::info!(
        restored = report.instances_restored,
        renewed = report.instances_renewed,
        expired = report.instances_expired,
        tasks = report.tasks,
        leases = report.leases,
        reassigned = report.tasks_reassigned,
        term = report.term,
        term_resumed = report.term_resumed,
        skipped = report.skipped.len(),
        loaded_ms = report.loaded_in.as_millis() as u64,
        took_ms = report.took.as_millis() as u64,
        "recovered from the store"
    );
    Ok(report)
}
