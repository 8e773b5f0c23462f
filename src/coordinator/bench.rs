//! Hooks for the benchmarks in `benches/`: internals timed as the actors run them, reachable
//! from outside the crate. Hidden from the docs and not part of the API: names and results may
//! change with the implementation.

use std::collections::HashSet;
use std::time::Duration;

use super::Coordinator;

impl Coordinator {
    /// The part of a write-behind flush that finds the heartbeats to write (no store I/O);
    /// returns how many it found. Like the Persister, it takes what it finds: a second call
    /// finds only what moved in between.
    #[doc(hidden)]
    pub fn bench_flush_scan(&self) -> usize {
        let ctx = self.ctx();
        crate::actors::persister::moved_heartbeats(ctx, &HashSet::new(), ctx.clock.precise_ms())
            .len()
    }

    /// The liveness clock's lag now: precise minus coarse time in whole ms, and the real time
    /// since the coarse reading's millisecond began (see `LivenessClock::coarse_lag`).
    #[doc(hidden)]
    pub fn bench_clock_lag(&self) -> (u64, Duration) {
        self.ctx().clock.coarse_lag()
    }
}
