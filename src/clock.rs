//! The liveness clock.
//!
//! A heartbeat must record *when* it arrived, but reading the monotonic clock on every
//! heartbeat costs more than everything else the hot path does (tens to hundreds of
//! nanoseconds depending on the machine's clock source). So heartbeats read a *coarse* clock
//! instead: one atomic counter of milliseconds since the coordinator started, advanced by a
//! ticker every [`Config::clock_tick`](crate::Config::clock_tick). Reading it is a single
//! relaxed load.
//!
//! Heartbeats stamp `coarse + tick`, the upper end of the interval the real time lies in, so an
//! instance never expires *before* its TTL; it may expire up to one tick late. Decisions that
//! are rare (the InstanceActor deciding whether a deadline passed, registrations) read the
//! precise clock.
//!
//! Both clocks are [`tokio::time::Instant`]-based, so tests on tokio's paused clock drive them.
//! The ticker runs on its own OS thread on a multi-thread runtime, so that control-plane work
//! holding the runtime's worker threads cannot starve it, and on Linux it asks for real-time
//! priority so that other processes competing for the cores cannot either (see
//! [`LivenessClock::spawn_ticker`]).
//! Wall-clock milliseconds are derived from the start instant, only for what is shown or stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::RuntimeFlavor;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Monotonic milliseconds: [`ORIGIN_MS`] when the coordinator's clock started.
pub type MonoMs = u64;

/// Where the monotonic clock starts: seven days, so that times up to a week before the
/// process started (an instance last seen, a lease acquired, before a restart) are still
/// representable after recovery.
pub const ORIGIN_MS: MonoMs = 7 * 24 * 3600 * 1000;

/// The coordinator's clock: a precise monotonic reading for the control path and a coarse,
/// ticker-driven one for the heartbeat hot path.
#[derive(Debug)]
pub struct LivenessClock {
    origin: Instant,
    origin_wall_ms: u64,
    tick_ms: u64,
    coarse: AtomicU64,
}

impl LivenessClock {
    /// A clock starting now, advanced every `tick` once [`spawn_ticker`](Self::spawn_ticker) runs.
    pub fn new(tick: Duration) -> Arc<Self> {
        let origin_wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Arc::new(Self {
            origin: Instant::now(),
            origin_wall_ms,
            tick_ms: tick.as_millis().max(1) as u64,
            coarse: AtomicU64::new(ORIGIN_MS),
        })
    }

    /// The precise monotonic time, in ms since start.
    pub fn precise_ms(&self) -> MonoMs {
        ORIGIN_MS + self.origin.elapsed().as_millis() as u64
    }

    /// The coarse time: at most one tick (plus scheduling delay) behind [`precise_ms`](Self::precise_ms).
    #[inline]
    pub fn coarse_ms(&self) -> MonoMs {
        self.coarse.load(Ordering::Relaxed)
    }

    /// The stamp a heartbeat records: the coarse time rounded up by one tick, so it is never
    /// earlier than the real arrival time while the ticker keeps up.
    #[inline]
    pub fn heartbeat_stamp(&self) -> MonoMs {
        self.coarse_ms() + self.tick_ms
    }

    /// Wall-clock milliseconds (Unix epoch) of a monotonic reading.
    pub fn wall_ms(&self, ms: MonoMs) -> u64 {
        (self.origin_wall_ms + ms).saturating_sub(ORIGIN_MS)
    }

    /// The monotonic time of wall-clock `wall_ms` (for state recovered from the store). Times
    /// more than [`ORIGIN_MS`] before the clock started come out as 0, the distant past.
    pub fn mono_from_wall(&self, wall_ms: u64) -> MonoMs {
        (wall_ms + ORIGIN_MS).saturating_sub(self.origin_wall_ms)
    }

    /// Wall-clock milliseconds now.
    pub fn now_wall_ms(&self) -> u64 {
        self.wall_ms(self.precise_ms())
    }

    /// How far the coarse clock is behind, read now: the precise minus the coarse time in whole
    /// ms (at most one tick while the ticker keeps up, which is what
    /// [`heartbeat_stamp`](Self::heartbeat_stamp) relies on), and the real time elapsed since
    /// the start of the coarse reading's millisecond (the ticker's delay plus up to 1 ms of
    /// truncation to whole ms). The coarse reading is bracketed by two readings of the real
    /// time and taken again if they lie more than 50 µs apart, so that a reader descheduled in
    /// between does not count its own delay as the clock's. For measurements; nothing on the
    /// hot path reads it.
    pub fn coarse_lag(&self) -> (u64, Duration) {
        loop {
            let before = self.origin.elapsed();
            let coarse = self.coarse_ms();
            let elapsed = self.origin.elapsed();
            if elapsed - before > Duration::from_micros(50) {
                continue;
            }
            let precise = ORIGIN_MS + elapsed.as_millis() as u64;
            return (
                precise.saturating_sub(coarse),
                elapsed.saturating_sub(Duration::from_millis(coarse - ORIGIN_MS)),
            );
        }
    }

    /// Brings the coarse clock up to the precise one.
    pub fn advance(&self) {
        self.coarse.fetch_max(self.precise_ms(), Ordering::Relaxed);
    }

    /// Starts the ticker; it holds only a weak reference, so it ends by itself when the clock
    /// is dropped, and [`Ticker::stop`] ends it at once (the coordinator does, at shutdown).
    ///
    /// On a multi-thread runtime it is a dedicated OS thread: the control path holds a
    /// blocking mutex (the work lock) and busy tasks hold the runtime's worker threads, and a
    /// ticker task waiting behind them would let the coarse clock fall behind — measured with
    /// 64 callers hammering the control path (`cargo bench --bench clock_lag`), a task's lag
    /// reached tens of ms at p99. On a current-thread runtime (where tokio's clock can be
    /// paused, as tests do) it is a task driven by tokio's timer, so that paused time drives
    /// it; there is no other worker to hold up there. Outside a runtime it is a thread.
    ///
    /// With `realtime` (Linux), the thread asks for the lowest real-time priority
    /// (`SCHED_FIFO` 1): when it wakes, it runs at once instead of waiting for a share of a
    /// core busy with other processes. It sleeps between ticks and runs a few hundred
    /// nanoseconds per tick, so it takes next to nothing from anyone. Where that is not
    /// permitted (no `CAP_SYS_NICE`, an `RLIMIT_RTPRIO` of 0) it stays at normal priority;
    /// [`Ticker::realtime`] says which.
    pub fn spawn_ticker(self: &Arc<Self>, realtime: bool) -> Ticker {
        let weak = Arc::downgrade(self);
        let period = Duration::from_millis(self.tick_ms);
        self.advance();
        let current_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if current_thread {
            return Ticker(TickerKind::Task(tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                // After a stall, catch up once instead of firing a burst of ticks.
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                loop {
                    interval.tick().await;
                    match weak.upgrade() {
                        Some(clock) => clock.advance(),
                        None => return,
                    }
                }
            })));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (priority_tx, priority_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("vigil-clock".into())
            .spawn(move || {
                let _ = priority_tx.send(realtime && raise_to_realtime());
                let mut next = std::time::Instant::now();
                loop {
                    next += period;
                    let now = std::time::Instant::now();
                    if next > now {
                        // Woken early by `stop` (or spuriously): the checks below decide.
                        std::thread::park_timeout(next - now);
                    } else {
                        // Behind (the thread was not scheduled): catch up once, no burst.
                        next = now;
                    }
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                    match weak.upgrade() {
                        Some(clock) => clock.advance(),
                        None => return,
                    }
                }
            })
            .expect("spawning the liveness clock's ticker thread");
        // The thread answers before its first tick; it cannot fail to.
        let realtime = priority_rx.recv().unwrap_or(false);
        Ticker(TickerKind::Thread {
            stop,
            thread,
            realtime,
        })
    }
}

/// Moves the calling thread to the lowest real-time priority (`SCHED_FIFO` 1). Returns whether
/// it did; refused without the privilege, which leaves the thread as it was.
#[cfg(target_os = "linux")]
fn raise_to_realtime() -> bool {
    // SAFETY: `sched_param` is plain data for which all zeroes is valid (musl's has padding
    // fields besides the priority, so it is not built as a struct literal).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // SAFETY: `pthread_self` is always a valid handle for the calling thread, and `param` is a
    // live, initialized `sched_param` for the duration of the call, which only reads it.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    rc == 0
}

/// Real-time priority is only asked for on Linux.
#[cfg(not(target_os = "linux"))]
fn raise_to_realtime() -> bool {
    false
}

/// A running ticker (see [`LivenessClock::spawn_ticker`]). Dropping the handle leaves it
/// running until the clock is dropped; [`stop`](Self::stop) ends it now.
#[derive(Debug)]
pub struct Ticker(TickerKind);

#[derive(Debug)]
enum TickerKind {
    /// A task on a current-thread runtime.
    Task(JoinHandle<()>),
    /// A dedicated thread, parked between ticks.
    Thread {
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
        /// Whether the thread runs at real-time priority.
        realtime: bool,
    },
}

impl Ticker {
    /// Stops the ticker: the coarse clock no longer moves. Idempotent; does not wait for the
    /// thread, which ends as soon as it is woken.
    pub fn stop(&self) {
        match &self.0 {
            TickerKind::Task(task) => task.abort(),
            TickerKind::Thread { stop, thread, .. } => {
                stop.store(true, Ordering::Release);
                thread.thread().unpark();
            }
        }
    }

    /// Whether the ticker is a thread running at real-time priority (see
    /// [`LivenessClock::spawn_ticker`]).
    pub fn realtime(&self) -> bool {
        matches!(self.0, TickerKind::Thread { realtime: true, .. })
    }

    /// Whether the ticker runs on its own OS thread (rather than as a runtime task).
    #[cfg(test)]
    pub fn is_thread(&self) -> bool {
        matches!(self.0, TickerKind::Thread { .. })
    }

    /// Whether the ticker has ended (stopped, or its clock dropped).
    #[cfg(test)]
    pub fn is_finished(&self) -> bool {
        match &self.0 {
            TickerKind::Task(task) => task.is_finished(),
            TickerKind::Thread { thread, .. } => thread.is_finished(),
        }
    }
}

/// Whether a coordinator may still act as the active one of several (high availability,
/// docs/ha.md): open until a deadline on the monotonic clock that the holder of the
/// coordinator lease moves forward at each renewal, and shut for good by [`close`].
///
/// A coordinator started with a gate ([`Coordinator::start_gated`]) checks it before every
/// call it answers (`-32008` once shut), before expiring an instance, electing a leader or
/// sweeping: past the deadline it does nothing a successor could contradict, even before the
/// process that holds it notices (a process stopped with SIGSTOP resumes past its deadline,
/// since the monotonic clock kept running). Clones share one gate.
///
/// [`close`]: ActiveGate::close
/// [`Coordinator::start_gated`]: crate::Coordinator::start_gated
#[derive(Debug, Clone)]
pub struct ActiveGate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    origin: std::time::Instant,
    /// One more than the milliseconds after `origin` until which the gate is open; 0 once
    /// closed.
    until_ms: AtomicU64,
    /// Turns `true` at [`ActiveGate::close`], for those waiting in [`ActiveGate::closed`].
    closed: tokio::sync::watch::Sender<bool>,
}

impl ActiveGate {
    /// A gate open until `deadline`.
    pub fn open_until(deadline: std::time::Instant) -> Self {
        let origin = std::time::Instant::now();
        let gate = Self {
            inner: Arc::new(GateInner {
                origin,
                until_ms: AtomicU64::new(0),
                closed: tokio::sync::watch::Sender::new(false),
            }),
        };
        gate.inner
            .until_ms
            .store(gate.ms_of(deadline) + 1, Ordering::Release);
        gate
    }

    fn ms_of(&self, at: std::time::Instant) -> u64 {
        at.saturating_duration_since(self.inner.origin).as_millis() as u64
    }

    /// Whether the deadline is still ahead (and the gate not closed).
    #[inline]
    pub fn is_open(&self) -> bool {
        let until = self.inner.until_ms.load(Ordering::Acquire);
        until > 0 && self.ms_of(std::time::Instant::now()) + 1 < until
    }

    /// Moves the deadline to `deadline` if the gate is still open (a gate past its deadline
    /// stays shut: a late renewal does not revive it). Whether it is open afterwards.
    pub fn extend_to(&self, deadline: std::time::Instant) -> bool {
        let new = self.ms_of(deadline) + 1;
        let now = self.ms_of(std::time::Instant::now()) + 1;
        self.inner
            .until_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |until| {
                (until > 0 && now < until).then_some(new.max(until))
            })
            .is_ok()
            && self.is_open()
    }

    /// Shuts the gate for good, and wakes those waiting in [`closed`](Self::closed).
    pub fn close(&self) {
        self.inner.until_ms.store(0, Ordering::Release);
        self.inner.closed.send_replace(true);
    }

    /// Returns once [`close`](Self::close) was called (a deadline that merely passed does not
    /// end the wait: the holder closes the gate when it notices).
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
    }
}

/// Wall-clock `ms` as ISO-8601 UTC with milliseconds (`2026-11-29T08:00:00.000Z`), as
/// JavaScript's `Date.toISOString` writes them (ClaudeBench's times).
pub(crate) fn iso_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_is_open_until_its_deadline_and_a_late_renewal_does_not_revive_it() {
        let now = std::time::Instant::now();
        let gate = ActiveGate::open_until(now + Duration::from_secs(60));
        assert!(gate.is_open());
        assert!(gate.extend_to(now + Duration::from_secs(120)));
        assert!(gate.is_open());
        gate.close();
        assert!(!gate.is_open());
        assert!(
            !gate.extend_to(now + Duration::from_secs(180)),
            "closed stays closed"
        );
        let past = ActiveGate::open_until(now);
        assert!(!past.is_open(), "a deadline already passed");
        assert!(!past.extend_to(now + Duration::from_secs(60)));
        assert!(!past.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn coarse_clock_follows_precise_within_a_tick() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let ticker = clock.spawn_ticker(false);
        // A current-thread runtime: a task, which the paused clock drives.
        assert!(!ticker.is_thread());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::yield_now().await;
        let (coarse, precise) = (clock.coarse_ms(), clock.precise_ms());
        assert!(precise - coarse <= 1, "coarse {coarse} precise {precise}");
        assert!(clock.heartbeat_stamp() >= precise);
        assert!(clock.coarse_lag().0 <= 1);
        ticker.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            clock.coarse_ms(),
            coarse,
            "a stopped ticker no longer moves the clock"
        );
        assert!(ticker.is_finished());
    }

    // Real time: the thread's scheduling class is the system's to grant.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ticker_asks_for_realtime_priority_only_when_told_and_keeps_time_either_way() {
        // What this process may do, asked from a throwaway thread.
        let permitted = std::thread::spawn(raise_to_realtime).join().unwrap();
        let clock = LivenessClock::new(Duration::from_millis(1));
        let realtime = clock.spawn_ticker(true);
        assert_eq!(realtime.realtime(), permitted);
        let plain = LivenessClock::new(Duration::from_millis(1));
        let normal = plain.spawn_ticker(false);
        assert!(normal.is_thread());
        assert!(!normal.realtime());
        let (a, b) = (clock.coarse_ms(), plain.coarse_ms());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            clock.coarse_ms() >= a + 50,
            "the real-time ticker keeps time"
        );
        assert!(plain.coarse_ms() >= b + 50, "the normal ticker keeps time");
        realtime.stop();
        normal.stop();
    }

    /// Blocks every worker thread of the runtime for `for_`, as control-plane work holding
    /// the blocking work lock can.
    async fn block_workers(workers: usize, for_: Duration) -> Vec<JoinHandle<()>> {
        let barrier = Arc::new(std::sync::Barrier::new(workers));
        (0..workers)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    // Every worker takes one of these tasks before any of them blocks.
                    barrier.wait();
                    std::thread::sleep(for_);
                })
            })
            .collect()
    }

    // Real time, not the paused clock: what is tested is an OS thread keeping time while the
    // runtime's workers cannot run anything. The bounds are loose (half the elapsed time).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_thread_runtime_the_ticker_keeps_time_while_every_worker_is_blocked() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let ticker = clock.spawn_ticker(false);
        assert!(ticker.is_thread());
        let blocked = block_workers(2, Duration::from_millis(400)).await;
        // This test's body runs on the runtime's own thread, not on a worker.
        std::thread::sleep(Duration::from_millis(100));
        let (coarse, started) = (clock.coarse_ms(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(200));
        let moved = clock.coarse_ms() - coarse;
        let elapsed = started.elapsed().as_millis() as u64;
        assert!(
            moved >= elapsed / 2,
            "the coarse clock moved {moved} ms in {elapsed} ms while the workers were blocked"
        );
        for task in blocked {
            task.await.unwrap();
        }
        ticker.stop();
        for _ in 0..1000 {
            if ticker.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(ticker.is_finished(), "stop ends the thread");
        let stopped_at = clock.coarse_ms();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.coarse_ms(), stopped_at);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_ticker_thread_ends_when_the_clock_is_dropped() {
        let clock = LivenessClock::new(Duration::from_millis(1));
        let ticker = clock.spawn_ticker(false);
        assert!(ticker.is_thread());
        drop(clock);
        for _ in 0..1000 {
            if ticker.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(ticker.is_finished());
    }
}
