//! Repeated store failures, logged in summary: while Redis is down the Persister fails at
//! every flush (every 250 ms by default), and a line per failure would bury everything else.
//! The first failure is logged with its error; the breaker opening is one line with the count
//! so far; then at most one line every [`SUMMARY_EVERY`] with the failures since the last
//! line; and one line when a write succeeds again.

use std::time::Duration;

use tokio::time::Instant;

/// The most often a still-failing store is reported.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// The first failure after a success (or the start).
    First,
    /// This failure opened the breaker: `total` failures over `over`.
    Opened { total: u64, over: Duration },
    /// Still failing: `since_last` failures over `over` since the last line, `total` since
    /// `started_wall_ms`.
    Summary {
        since_last: u64,
        over: Duration,
        total: u64,
        started_wall_ms: u64,
    },
    /// A write succeeded after `total` failures over `over`.
    Recovered { total: u64, over: Duration },
}

#[derive(Debug)]
struct Episode {
    started: Instant,
    started_wall_ms: u64,
    total: u64,
    since_line: u64,
    last_line: Instant,
    opened: bool,
}

/// The state of the summary: an episode of failures, or none.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    episode: Option<Episode>,
}

impl FailureLog {
    /// A failure at `now` (`wall_ms` on the wall clock); `opened`: it opened the breaker.
    /// The line to log for it, if any.
    pub(crate) fn failed(&mut self, now: Instant, wall_ms: u64, opened: bool) -> Option<Line> {
        let Some(e) = &mut self.episode else {
            self.episode = Some(Episode {
                started: now,
                started_wall_ms: wall_ms,
                total: 1,
                since_line: 0,
                last_line: now,
                opened,
            });
            return Some(if opened {
                Line::Opened {
                    total: 1,
                    over: Duration::ZERO,
                }
            } else {
                Line::First
            });
        };
        e.total += 1;
        e.since_line += 1;
        if opened && !e.opened {
            e.opened = true;
            e.since_line = 0;
            e.last_line = now;
            return Some(Line::Opened {
                total: e.total,
                over: now - e.started,
            });
        }
        if now - e.last_line >= SUMMARY_EVERY {
            let since_last = std::mem::take(&mut e.since_line);
            let over = now - e.last_line;
            e.last_line = now;
            return Some(Line::Summary {
                since_last,
                over,
                total: e.total,
                started_wall_ms: e.started_wall_ms,
            });
        }
        None
    }

    /// A success at `now`: the recovery line, if failures came before.
    pub(crate) fn succeeded(&mut self, now: Instant) -> Option<Line> {
        self.episode.take().map(|e| Line::Recovered {
            total: e.total,
            over: now - e.started,
        })
    }

    /// Whether failures are being counted (no success since the first).
    pub(crate) fn failing(&self) -> bool {
        self.episode.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One failure every 250 ms for two minutes, the breaker opening at the 20th: five lines
    /// (first, opened, three summaries), the summaries 30 s apart with their counts, then one
    /// line at recovery.
    #[test]
    fn failures_every_flush_make_a_line_every_thirty_seconds() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        let mut lines = Vec::new();
        for i in 0..480u64 {
            let now = start + Duration::from_millis(250 * i);
            if let Some(line) = log.failed(now, 1_000 + i, i == 19) {
                lines.push((i, line));
            }
        }
        assert_eq!(lines[0], (0, Line::First));
        assert_eq!(
            lines[1],
            (
                19,
                Line::Opened {
                    total: 20,
                    over: Duration::from_millis(250 * 19)
                }
            )
        );
        // 30 s after the opening line: 120 failures later.
        assert_eq!(
            lines[2],
            (
                139,
                Line::Summary {
                    since_last: 120,
                    over: Duration::from_secs(30),
                    total: 140,
                    started_wall_ms: 1_000
                }
            )
        );
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(log.failing());
        let end = start + Duration::from_secs(120);
        assert_eq!(
            log.succeeded(end),
            Some(Line::Recovered {
                total: 480,
                over: Duration::from_secs(120)
            })
        );
        assert!(!log.failing());
        assert_eq!(log.succeeded(end), None, "one recovery line");
        // A new outage starts a new episode.
        assert_eq!(log.failed(end, 0, false), Some(Line::First));
    }
}
