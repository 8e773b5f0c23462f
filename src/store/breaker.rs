//! The circuit breaker around the store: 20 consecutive failures open it for 10 s; then it is
//! half-open and admits exactly **one** probe at a time; the probe's success closes it, its
//! failure opens it again. Every other caller is refused until the probe reports.
//!
//! An attempt is an [`Admission`], which reports its outcome by [`Admission::success`] or
//! [`Admission::failure`]. A probe dropped without a report (its caller was cancelled or killed
//! mid-write) frees the half-open slot for the next caller, so a lost probe never wedges the
//! breaker.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Calls fail fast.
    Open {
        /// Until the next probe.
        retry_in: Duration,
    },
    /// One probe is allowed (or is under way).
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open probe was admitted and has not reported.
    probing: bool,
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(
            crate::config::store::BREAKER_FAILURES,
            crate::config::store::BREAKER_OPEN_FOR,
        )
    }
}

/// Leave to make one attempt on the store; report how it went with [`success`](Self::success)
/// or [`failure`](Self::failure). Dropped without a report, it counts as neither (a half-open
/// probe's slot is freed).
#[derive(Debug)]
#[must_use = "an admission reports the attempt's outcome"]
pub struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Admission<'_> {
    /// The attempt worked: closes the breaker.
    pub fn success(mut self) {
        self.reported = true;
        let mut inner = self.breaker.inner.lock();
        inner.failures = 0;
        inner.open_until = None;
        inner.probing = false;
    }

    /// The attempt failed; returns true when this failure opened (or re-opened) the breaker.
    pub fn failure(mut self) -> bool {
        self.reported = true;
        let breaker = self.breaker;
        let mut inner = breaker.inner.lock();
        inner.failures = inner.failures.saturating_add(1);
        if self.probe {
            inner.probing = false;
        }
        // Any failure while open or half-open (a failed probe, or a late report of an attempt
        // admitted before the breaker opened) opens it for another period.
        if inner.open_until.is_some() || inner.failures >= breaker.threshold {
            inner.open_until = Some(Instant::now() + breaker.open_for);
            return true;
        }
        false
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.inner.lock().probing = false;
        }
    }
}

impl Breaker {
    /// A breaker opening after `threshold` failures for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probing: false,
            }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        let inner = self.inner.lock();
        match inner.open_until {
            None => BreakerState::Closed {
                failures: inner.failures,
            },
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    BreakerState::Open {
                        retry_in: until - now,
                    }
                } else {
                    BreakerState::HalfOpen
                }
            }
        }
    }

    /// Ends the open period now (the next [`admit`](Self::admit) is a half-open probe): for
    /// when the cause of the failures is known to be gone (the store moved to another
    /// server). Nothing while closed.
    pub fn probe_now(&self) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        if inner.open_until.is_some_and(|until| until > now) {
            inner.open_until = Some(now);
        }
    }

    /// Leave to make an attempt now: always while closed; while half-open only to the first
    /// caller (the probe) until it reports; never while open.
    pub fn admit(&self) -> Option<Admission<'_>> {
        let mut inner = self.inner.lock();
        let probe = match inner.open_until {
            None => false,
            Some(until) if Instant::now() < until => return None,
            Some(_) if inner.probing => return None,
            Some(_) => {
                inner.probing = true;
                true
            }
        };
        Some(Admission {
            breaker: self,
            probe,
            reported: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fail(b: &Breaker) -> bool {
        b.admit().expect("admitted").failure()
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_can_be_let_through_before_the_pause_ends() {
        let b = Breaker::new(2, Duration::from_secs(10));
        b.probe_now();
        assert!(
            matches!(b.state(), BreakerState::Closed { failures: 0 }),
            "closed stays closed"
        );
        assert!(!fail(&b));
        assert!(fail(&b), "opened");
        assert!(b.admit().is_none());
        b.probe_now();
        let probe = b.admit().expect("a probe at once");
        assert!(b.admit().is_none(), "one probe at a time");
        probe.success();
        assert!(matches!(b.state(), BreakerState::Closed { failures: 0 }));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_after_the_pause() {
        let b = Breaker::new(3, Duration::from_secs(10));
        assert!(!fail(&b));
        assert!(!fail(&b));
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        assert!(fail(&b));
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed probe opens it again at once.
        assert!(fail(&b));
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(10)).await;
        b.admit().expect("probe").success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        // A success resets the count.
        assert!(!fail(&b));
        b.admit().unwrap().success();
        assert!(!fail(&b));
        assert!(!fail(&b));
        assert!(b.admit().is_some());
    }

    /// Sixteen callers arrive together while the breaker is half-open: one probe goes through,
    /// the others are refused until it reports; a failed probe re-opens it for a full period,
    /// a successful one lets everybody through.
    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe_among_concurrent_callers() {
        let b = Arc::new(Breaker::new(1, Duration::from_secs(10)));
        assert!(fail(&b));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let round = |verdict: Option<bool>| {
            let b = Arc::clone(&b);
            async move {
                let admitted = Arc::new(AtomicUsize::new(0));
                let all_asked = Arc::new(tokio::sync::Barrier::new(16));
                let mut callers = tokio::task::JoinSet::new();
                for _ in 0..16 {
                    let (b, admitted, all_asked) = (
                        Arc::clone(&b),
                        Arc::clone(&admitted),
                        Arc::clone(&all_asked),
                    );
                    callers.spawn(async move {
                        let admission = b.admit();
                        if admission.is_some() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        // Everybody asks while the one admitted still holds its admission.
                        all_asked.wait().await;
                        match (admission, verdict) {
                            (Some(a), Some(true)) => a.success(),
                            (Some(a), Some(false)) => {
                                a.failure();
                            }
                            _ => {}
                        }
                    });
                }
                while callers.join_next().await.is_some() {}
                admitted.load(Ordering::SeqCst)
            }
        };
        // A probe that never reports (its caller was cancelled) frees the slot.
        assert_eq!(round(None).await, 1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed probe: open again, nobody admitted until the period is over.
        assert_eq!(round(Some(false)).await, 1);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        // A successful probe closes it: the next round admits all sixteen.
        assert_eq!(round(Some(true)).await, 1);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(round(Some(true)).await, 16);
    }

    /// The same race with OS threads: with no open period the breaker is half-open at once,
    /// and of eight threads released together exactly one is admitted.
    #[test]
    fn half_open_admits_one_probe_among_racing_threads() {
        for _ in 0..50 {
            let b = Arc::new(Breaker::new(1, Duration::ZERO));
            assert!(fail(&b));
            let start = Arc::new(std::sync::Barrier::new(8));
            let done = Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (b, start, done) = (Arc::clone(&b), Arc::clone(&start), Arc::clone(&done));
                    std::thread::spawn(move || {
                        start.wait();
                        let admission = b.admit();
                        let admitted = admission.is_some();
                        done.wait(); // hold it until everybody has asked
                        drop(admission);
                        admitted
                    })
                })
                .collect();
            let admitted = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 1);
        }
    }
}
