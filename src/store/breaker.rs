//! The circuit breaker around the store: 20 consecutive failures open it for 10 s; then one
//! probe is let through (half-open); its success closes it, its failure opens it again.

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
    /// One probe is allowed.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
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

impl Breaker {
    /// A breaker opening after `threshold` failures for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
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

    /// Whether an attempt may be made now (closed, or half-open for the probe).
    pub fn allows(&self) -> bool {
        !matches!(self.state(), BreakerState::Open { .. })
    }

    /// Records a success: closes the breaker.
    pub fn success(&self) {
        let mut inner = self.inner.lock();
        inner.failures = 0;
        inner.open_until = None;
    }

    /// Records a failure; returns true when this one opened the breaker.
    pub fn failure(&self) -> bool {
        let mut inner = self.inner.lock();
        inner.failures = inner.failures.saturating_add(1);
        let half_open = inner.open_until.is_some();
        if half_open || inner.failures >= self.threshold {
            inner.open_until = Some(Instant::now() + self.open_for);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_after_the_pause() {
        let b = Breaker::new(3, Duration::from_secs(10));
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        assert!(b.failure());
        assert!(!b.allows());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed probe opens it again at once.
        assert!(b.failure());
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(10)).await;
        b.success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        // A success resets the count.
        b.failure();
        b.success();
        b.failure();
        b.failure();
        assert!(b.allows());
    }
}
