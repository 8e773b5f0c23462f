//! Per-method call counters of one dispatcher (and its clones), read back by `system.metrics`.
//!
//! The Prometheus counters behind `GET /metrics` go through the process-wide `metrics` facade
//! and cannot be read back; these are the same events counted again in plain atomics owned by
//! the [`Dispatcher`](super::Dispatcher), so `system.metrics` answers from what this server
//! measured: calls, errors and time spent, by method, since it started. Recording is a few
//! relaxed atomic additions at an index known in advance — no allocation, no lookup on the
//! heartbeat path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::METHODS;

/// The slot of `system.heartbeat` (its place in [`METHODS`]), for the fast paths.
pub(crate) const HEARTBEAT: usize = 1;
/// The slot of `events.subscribe` (served by the WebSocket transport, not in [`METHODS`]).
const SUBSCRIBE: usize = METHODS.len();
/// The slot of every name that is not served.
const UNKNOWN: usize = METHODS.len() + 1;
const SLOTS: usize = METHODS.len() + 2;

/// One method's counters.
#[derive(Default)]
struct Slot {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

/// Calls, errors and time by method since the dispatcher was made.
pub(crate) struct CallStats {
    slots: [Slot; SLOTS],
    started: Instant,
    started_wall_ms: u64,
}

/// One method's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MethodFigures {
    /// The method.
    pub method: &'static str,
    /// Calls answered (errors included).
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Time spent in the dispatcher, all calls together.
    pub total: Duration,
}

impl MethodFigures {
    /// Average time per call in milliseconds (0 without calls).
    pub fn average_ms(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total.as_secs_f64() * 1000.0 / self.calls as f64
        }
    }
}

impl CallStats {
    /// Fresh counters, started now.
    pub fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| Slot::default()),
            started: Instant::now(),
            started_wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The slot of `method`.
    pub fn slot_of(method: &str) -> usize {
        if method == "events.subscribe" {
            return SUBSCRIBE;
        }
        METHODS.iter().position(|m| *m == method).unwrap_or(UNKNOWN)
    }

    /// Counts one call to the method in `slot`.
    #[inline]
    pub fn record_slot(&self, slot: usize, ok: bool, took: Duration) {
        let s = &self.slots[slot.min(UNKNOWN)];
        s.calls.fetch_add(1, Relaxed);
        if !ok {
            s.errors.fetch_add(1, Relaxed);
        }
        s.nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Counts `calls` calls in `slot`, `errors` of them failed, `took` in all.
    pub fn record_many(&self, slot: usize, calls: u64, errors: u64, took: Duration) {
        let s = &self.slots[slot.min(UNKNOWN)];
        s.calls.fetch_add(calls, Relaxed);
        if errors > 0 {
            s.errors.fetch_add(errors, Relaxed);
        }
        s.nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Counts one call to `method`.
    pub fn record(&self, method: &str, ok: bool, took: Duration) {
        self.record_slot(Self::slot_of(method), ok, took);
    }

    /// The figures of every method called at least once (`unknown` for names not served).
    pub fn figures(&self) -> Vec<MethodFigures> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let calls = s.calls.load(Relaxed);
                (calls > 0).then(|| MethodFigures {
                    method: match i {
                        SUBSCRIBE => "events.subscribe",
                        UNKNOWN => "unknown",
                        _ => METHODS[i],
                    },
                    calls,
                    errors: s.errors.load(Relaxed),
                    total: Duration::from_nanos(s.nanos.load(Relaxed)),
                })
            })
            .collect()
    }

    /// Time since the counters started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wall-clock milliseconds (Unix epoch) when the counters started.
    pub fn started_wall_ms(&self) -> u64 {
        self.started_wall_ms
    }
}

/// The resident set size of this process in bytes, where the platform tells it (Linux:
/// `VmRSS` of `/proc/self/status`); `None` elsewhere.
pub(crate) fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_slot_is_the_heartbeat() {
        assert_eq!(METHODS[HEARTBEAT], "system.heartbeat");
        assert_eq!(CallStats::slot_of("system.heartbeat"), HEARTBEAT);
    }

    #[test]
    fn counts_by_method_and_keeps_unknown_names_apart() {
        let stats = CallStats::new();
        stats.record("system.heartbeat", true, Duration::from_millis(2));
        stats.record("system.heartbeat", false, Duration::from_millis(4));
        stats.record("no.such", true, Duration::from_millis(1));
        stats.record("events.subscribe", true, Duration::ZERO);
        let figures = stats.figures();
        let beat = figures
            .iter()
            .find(|f| f.method == "system.heartbeat")
            .unwrap();
        assert_eq!((beat.calls, beat.errors), (2, 1));
        assert!((beat.average_ms() - 3.0).abs() < 1e-9, "{beat:?}");
        assert!(
            figures
                .iter()
                .any(|f| f.method == "unknown" && f.calls == 1)
        );
        assert!(figures.iter().any(|f| f.method == "events.subscribe"));
        assert_eq!(figures.len(), 3);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_resident_set_size() {
        let rss = resident_bytes().expect("Linux reports VmRSS");
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
