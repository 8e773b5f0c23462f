//! Hooks for `benches/scale.rs`, `benches/flush_scan.rs` and `benches/clock_lag.rs`: one
//! periodic internal step, run on demand so that its cost can be timed against the amount of
//! state the coordinator holds, and a reading of the liveness clock's lag. Hidden from the docs
//! and not API: each is a thin call into the code the actors run, so it measures whatever that
//! code does today.

use std::collections::HashSet;
use std::time::Duration;

use super::Coordinator;

impl Coordinator {
    /// One sweep of the work book, as the LeaderActor runs it every `sweep_interval`: one chunk
    /// of stale step heartbeats and lapsed leases, and the safety net's next holders. Returns
    /// how many claims and leases it took back.
    #[doc(hidden)]
    pub fn bench_sweep_tick(&self) -> usize {
        let ctx = self.ctx();
        let report = ctx.with_work(|work, op| {
            work.sweep(op, crate::work::SWEEP_CHUNK, |id, epoch| {
                ctx.is_live(id, epoch)
            })
        });
        report.orphans_reassigned + report.zombies_reset + report.leases_reaped
    }

    /// Moves `id`'s last-seen time one millisecond past what it holds, as a heartbeat in a
    /// later millisecond would, so that the next flush scan finds it moved however little time
    /// passed (a heartbeat within the same millisecond as the instance's last one moves
    /// nothing). Returns whether the instance is alive.
    #[doc(hidden)]
    pub fn bench_move(&self, id: &str) -> bool {
        let ctx = self.ctx();
        // Under the entry's guard, as the hot path: the slot cannot leave meanwhile.
        let Some(entry) = ctx.registry.get(id) else {
            return false;
        };
        let (_, seen) = entry.cell.liveness();
        entry.cell.touch(seen + 1, ctx.clock.coarse_ms())
    }

    /// The part of a write-behind flush tick that finds the heartbeat timestamps moved since
    /// they were last written (no store I/O), as the Persister runs it: it takes the list the
    /// hot path keeps of the instances it moved, so the next call finds only what moved since
    /// this one. Returns how many it found.
    ///
    /// Works without a store. With one, it takes moves the Persister would have written: for
    /// benchmarks only.
    #[doc(hidden)]
    pub fn bench_flush_scan(&self) -> usize {
        let ctx = self.ctx();
        let mut moved = Vec::new();
        crate::actors::persister::moved_heartbeats(
            ctx,
            &HashSet::new(),
            ctx.clock.precise_ms(),
            &mut moved,
        );
        moved.len()
    }

    /// The liveness clock's lag now: precise minus coarse time in whole ms, and the real time
    /// since the coarse reading's millisecond began (see `LivenessClock::coarse_lag`), for
    /// `benches/clock_lag.rs`.
    #[doc(hidden)]
    pub fn bench_clock_lag(&self) -> (u64, Duration) {
        self.ctx().clock.coarse_lag()
    }

    /// Whether the liveness clock's ticker runs at real-time priority.
    #[doc(hidden)]
    pub fn bench_clock_realtime(&self) -> bool {
        self.inner
            .ticker
            .lock()
            .as_ref()
            .is_some_and(|t| t.realtime())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::config::Config;
    use crate::coordinator::Coordinator;
    use crate::model::RegisterRequest;
    use crate::work::task::{StepStatus, TaskSpec};

    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_flush_scan_finds_what_moved_since_the_last_one() {
        let c = Coordinator::start(Config::default()).await.unwrap();
        for id in ["a", "b", "c"] {
            c.register(RegisterRequest::new(id)).await.unwrap();
        }
        // Registrations are written as records, through the journal: no heartbeat to write.
        assert_eq!(c.bench_flush_scan(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert!(c.heartbeat_now("b").alive);
        assert_eq!(c.bench_flush_scan(), 1);
        assert_eq!(c.bench_flush_scan(), 0);
        c.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_tick_takes_back_a_stale_step() {
        let c = Coordinator::start(Config {
            ttl: Duration::from_secs(3600),
            step_timeout: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(3600),
            ..Config::default()
        })
        .await
        .unwrap();
        c.register(RegisterRequest::new("w")).await.unwrap();
        c.create_task(TaskSpec::new(json!(1))).await.unwrap();
        let claimed = c.claim("w", 1).await.unwrap().pop().unwrap();
        assert_eq!(c.bench_sweep_tick(), 0, "nothing is due yet");
        tokio::time::sleep(Duration::from_secs(61)).await;
        settle().await;
        assert_eq!(c.bench_sweep_tick(), 1);
        assert_eq!(c.task_counts()["pending"], 1);
        let beat = c
            .task_heartbeat(
                claimed.task.id,
                claimed.claim_token.as_str(),
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(beat.status, StepStatus::StaleClaim);
        c.shutdown().await;
    }
}
