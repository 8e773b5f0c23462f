//! How many replicas a write that a caller waits on must reach (`WAIT n timeout`), and, with
//! [`WaitReplicas::Auto`], how that number is kept current without asking Redis per write.
//!
//! `Auto` counts the replicas `INFO replication` lists as `state=online` (a replica still in its
//! initial sync is connected but cannot acknowledge anything yet: waiting for it would fail
//! every write for the length of the sync), at connect, then again only when the
//! answer is older than [`AUTO_REFRESH`] (5 s), when the connection moved to another primary
//! (Sentinel), or [`AUTO_RECHECK`] (1 s) after a `WAIT` that fell short — so a replica that
//! left is noticed within a second or two of writes failing, and a flush never pays for more
//! than one `INFO` round trip in five seconds in steady state. `INFO replication` answers in
//! ≈0.1 ms on loopback (docs/ha.md); at one per 5 s its cost does not register.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::WaitReplicas;

/// How long an `INFO replication` answer is trusted by [`WaitReplicas::Auto`].
pub(super) const AUTO_REFRESH: Duration = Duration::from_secs(5);

/// How soon after a `WAIT` that fell short [`WaitReplicas::Auto`] reads `INFO` again (a
/// replica that disconnected is then no longer waited for).
pub(super) const AUTO_RECHECK: Duration = Duration::from_secs(1);

/// The replicas to wait for, shared by the store's clones.
#[derive(Debug)]
pub(super) struct Replicas {
    mode: WaitReplicas,
    /// `WAIT`'s timeout, in ms (more than zero: `WAIT n 0` would block for ever).
    timeout_ms: u64,
    auto: Mutex<Auto>,
}

/// What `INFO replication` last said, for [`WaitReplicas::Auto`].
#[derive(Debug, Clone, Copy)]
struct Auto {
    /// 1 when it listed a connected replica, else 0.
    n: u32,
    /// When it was read (`None`: never).
    read_at: Option<Instant>,
    /// How long the answer is trusted: [`AUTO_REFRESH`], or [`AUTO_RECHECK`] after a short
    /// `WAIT`.
    trust: Duration,
    /// The connection generation (primary) it was read from.
    generation: u64,
}

impl Replicas {
    pub(super) fn new(mode: WaitReplicas, timeout: Duration) -> Self {
        Self {
            mode,
            timeout_ms: (timeout.as_millis() as u64).max(1),
            auto: Mutex::new(Auto {
                n: 0,
                read_at: None,
                trust: AUTO_REFRESH,
                generation: 0,
            }),
        }
    }

    pub(super) fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// The number to wait for if it is known without asking Redis: always for a fixed
    /// number; for `Auto` while the last `INFO` answer is fresh and from the same primary
    /// (`generation`). `None`: read `INFO replication` and call [`Replicas::learned`].
    pub(super) fn known(&self, generation: u64) -> Option<u32> {
        match self.mode {
            WaitReplicas::Fixed(n) => Some(n),
            WaitReplicas::Auto => {
                let auto = *self.auto.lock();
                let fresh = auto
                    .read_at
                    .is_some_and(|at| at.elapsed() < auto.trust && auto.generation == generation);
                fresh.then_some(auto.n)
            }
        }
    }

    /// Records an `INFO replication` answer (`connected`: its online replicas, `None` when it
    /// could not be read: the previous number stays) read from `generation`; answers the
    /// number to wait for now.
    pub(super) fn learned(&self, connected: Option<u32>, generation: u64) -> u32 {
        let mut auto = self.auto.lock();
        let before = auto.n;
        if let Some(connected) = connected {
            auto.n = connected.min(1);
        }
        auto.read_at = Some(Instant::now());
        auto.trust = AUTO_REFRESH;
        auto.generation = generation;
        if auto.n != before {
            tracing::info!(
                wait_for = auto.n,
                "replicas to wait for (auto) changed: {before} → {}",
                auto.n
            );
        }
        auto.n
    }

    /// A `WAIT` fell short: with `Auto`, read `INFO` again [`AUTO_RECHECK`] after the last
    /// read (a replica may have left).
    pub(super) fn fell_short(&self) {
        if self.mode == WaitReplicas::Auto {
            let mut auto = self.auto.lock();
            auto.trust = auto.trust.min(AUTO_RECHECK);
        }
    }
}

/// The replicas an `INFO replication` answer lists as online (`slaveN:…,state=online,…`);
/// `None` when it is not such an answer (no `connected_slaves` line).
pub(in crate::store) fn online_replicas(info: &str) -> Option<u32> {
    let mut listed = false;
    let mut online = 0;
    for line in info.lines().map(str::trim) {
        if line.starts_with("connected_slaves:") {
            listed = true;
        } else if let Some((name, fields)) = line.split_once(':')
            && name
                .strip_prefix("slave")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && fields.split(',').any(|f| f == "state=online")
        {
            online += 1;
        }
    }
    listed.then_some(online)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_replicas_are_counted_from_info() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
                    slave0:ip=127.0.0.1,port=1,state=online,offset=1,lag=0\r\n\
                    slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n\
                    slave2:ip=127.0.0.1,port=3,state=online,offset=1,lag=1\r\n\
                    master_failover_state:no-failover\r\n";
        assert_eq!(online_replicas(info), Some(2), "one is still syncing");
        let syncing = "connected_slaves:1\r\n\
                       slave0:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n";
        assert_eq!(online_replicas(syncing), Some(0));
        assert_eq!(
            online_replicas("role:master\r\nconnected_slaves:0\r\n"),
            Some(0)
        );
        assert_eq!(
            online_replicas("role:master\r\n"),
            None,
            "not INFO replication"
        );
    }

    #[test]
    fn a_fixed_number_never_asks_redis() {
        let r = Replicas::new(WaitReplicas::Fixed(2), Duration::from_millis(500));
        assert_eq!(r.known(0), Some(2));
        assert_eq!(r.known(7), Some(2));
        assert_eq!(r.timeout_ms(), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_is_read_again_only_when_stale_moved_or_short() {
        let r = Replicas::new(WaitReplicas::Auto, Duration::from_millis(500));
        assert_eq!(r.known(0), None, "never read: ask");
        assert_eq!(
            r.learned(Some(3), 0),
            1,
            "any number of replicas waits for one"
        );
        assert_eq!(r.known(0), Some(1));
        tokio::time::advance(AUTO_REFRESH - Duration::from_millis(1)).await;
        assert_eq!(r.known(0), Some(1), "fresh for AUTO_REFRESH");
        assert_eq!(r.known(1), None, "another primary: ask");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(r.known(0), None, "stale: ask");
        assert_eq!(
            r.learned(None, 0),
            1,
            "unreadable: the previous number stays"
        );
        r.fell_short();
        tokio::time::advance(AUTO_RECHECK - Duration::from_millis(1)).await;
        assert_eq!(r.known(0), Some(1), "not an INFO per failed write");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            r.known(0),
            None,
            "a short WAIT: ask again after AUTO_RECHECK"
        );
        assert_eq!(r.learned(Some(0), 0), 0, "the replica left");
        tokio::time::advance(AUTO_RECHECK).await;
        assert_eq!(r.known(0), Some(0), "trusted for AUTO_REFRESH again");
    }
}
