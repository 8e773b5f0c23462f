//! The hot cells: the per-instance words the heartbeat hot path touches, packed densely.
//!
//! A heartbeat needs three words of an instance — status and last-seen, TTL, and the term it
//! leads in. If they lived inside each instance's own heap allocation, 100k instances would be
//! scattered over hundreds of MiB (each instance's actor, mailbox and timer are allocated next
//! to it), and every heartbeat would pay a cache *and* a TLB miss. So the cells are carved out
//! of chunks of [`CHUNK`] cells each: 100k instances' cells fit in 2.4 MiB. Measured, this took
//! one-thread throughput at 100k instances from 2.5 to 4.0 M heartbeats/s (docs/performance.md).
//!
//! ## The liveness word
//!
//! Status and last-seen time are packed into one `AtomicU64` (2 bits of status, 62 bits of
//! milliseconds since the clock's start) so that a heartbeat and an expiry are each a single
//! compare-and-swap. Either the heartbeat lands first — and the actor, re-reading the word,
//! sees the fresh time and re-arms — or the expiry lands first and the heartbeat answers
//! `alive: false`. An instance is never answered "alive" after it was recorded expired, and a
//! heartbeat never resurrects it.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::clock::MonoMs;
use crate::model::{InstanceStatus, Term};

/// Cells per chunk.
pub const CHUNK: usize = 1024;

const STATUS_SHIFT: u32 = 62;
const SEEN_MASK: u64 = (1 << STATUS_SHIFT) - 1;

fn pack(status: InstanceStatus, seen: MonoMs) -> u64 {
    let bits = match status {
        InstanceStatus::Active => 0,
        InstanceStatus::Suspect => 1,
        InstanceStatus::Expired => 2,
        InstanceStatus::Unregistered => 3,
    };
    (bits << STATUS_SHIFT) | (seen & SEEN_MASK)
}

fn unpack(word: u64) -> (InstanceStatus, MonoMs) {
    let status = match word >> STATUS_SHIFT {
        0 => InstanceStatus::Active,
        1 => InstanceStatus::Suspect,
        2 => InstanceStatus::Expired,
        _ => InstanceStatus::Unregistered,
    };
    (status, word & SEEN_MASK)
}

/// The outcome of an attempt to move a cell to a terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The cell moved.
    Done,
    /// Not yet: the deadline lies ahead, at this monotonic ms.
    NotDue(MonoMs),
    /// The cell was already terminal.
    AlreadyTerminal(InstanceStatus),
}

/// The outcome of [`HotCell::renew`]: a re-registration's verdict on the slot it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The instance was alive: it is refreshed as by a heartbeat at that time.
    Renewed,
    /// Its deadline had passed: it is now recorded as expired.
    Expired,
    /// It was already terminal (expired or unregistered).
    Terminal(InstanceStatus),
}

/// One instance's hot words.
#[derive(Debug, Default)]
pub struct HotCell {
    liveness: AtomicU64,
    ttl_ms: AtomicU64,
    leads_term: AtomicU64,
}

impl HotCell {
    fn reset(&self, now: MonoMs, ttl_ms: u64) {
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
        self.leads_term.store(0, Ordering::Relaxed);
        self.liveness
            .store(pack(InstanceStatus::Active, now), Ordering::Release);
    }

    /// Status and last-seen time, read together.
    pub fn liveness(&self) -> (InstanceStatus, MonoMs) {
        unpack(self.liveness.load(Ordering::Acquire))
    }

    /// The status.
    pub fn status(&self) -> InstanceStatus {
        self.liveness().0
    }

    /// The TTL in ms.
    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ttl_ms(&self, ttl_ms: u64) {
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
    }

    /// The deadline after a heartbeat at `seen`.
    pub fn deadline_after(&self, seen: MonoMs) -> MonoMs {
        seen + self.ttl_ms()
    }

    /// The hot path: records a heartbeat stamped `stamp` if the instance is alive and its
    /// deadline (judged by the coarse time `coarse_now`) has not passed. Returns whether the
    /// instance is alive. Never allocates, never blocks; one CAS at most (none when the word
    /// already holds `stamp`, which spares the cache line when a worker heartbeats faster than
    /// the clock ticks).
    #[inline]
    pub fn touch(&self, stamp: MonoMs, coarse_now: MonoMs) -> bool {
        let ttl = self.ttl_ms();
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() || coarse_now >= seen + ttl {
                return false;
            }
            if status == InstanceStatus::Active && seen >= stamp {
                return true;
            }
            let next = pack(InstanceStatus::Active, seen.max(stamp));
            match self.liveness.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// A re-registration's verdict, reached in one compare-and-swap: an instance alive at `now`
    /// is refreshed (as by a heartbeat at `now`), one whose deadline passed is recorded as
    /// expired. Deciding both in one step is what keeps a heartbeat landing at the deadline
    /// from slipping between "it is dead, start a new epoch" and the expiry — which used to
    /// leave the old epoch alive beside the new one, still leading, with no heartbeat to reach
    /// it.
    pub fn renew(&self, now: MonoMs) -> Renewal {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() {
                return Renewal::Terminal(status);
            }
            let (next, verdict) = if now >= self.deadline_after(seen) {
                (pack(InstanceStatus::Expired, seen), Renewal::Expired)
            } else {
                (
                    pack(InstanceStatus::Active, seen.max(now)),
                    Renewal::Renewed,
                )
            };
            match self.liveness.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return verdict,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves an active cell to `Suspect` if `now` is at or past its suspect point. Returns true
    /// when it moved.
    pub fn mark_suspect(&self, now: MonoMs, grace_ms: u64) -> bool {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if status != InstanceStatus::Active || now < self.suspect_at(seen, grace_ms) {
                return false;
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(InstanceStatus::Suspect, seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// When an instance last seen at `seen` becomes suspect: `grace` before its deadline, the
    /// grace being at most half the TTL.
    pub fn suspect_at(&self, seen: MonoMs, grace_ms: u64) -> MonoMs {
        let ttl = self.ttl_ms();
        seen + ttl - grace_ms.min(ttl / 2)
    }

    /// Moves the cell to `Expired` if its deadline passed at `now`.
    pub fn expire_if_due(&self, now: MonoMs) -> Transition {
        self.terminate(InstanceStatus::Expired, Some(now))
    }

    /// Moves a live cell to `Unregistered`.
    pub fn unregister(&self) -> Transition {
        self.terminate(InstanceStatus::Unregistered, None)
    }

    /// Moves a live cell to the terminal `to`; with `due_at`, only if the deadline has passed
    /// at that time.
    fn terminate(&self, to: InstanceStatus, due_at: Option<MonoMs>) -> Transition {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() {
                return Transition::AlreadyTerminal(status);
            }
            if let Some(now) = due_at {
                let deadline = self.deadline_after(seen);
                if now < deadline {
                    return Transition::NotDue(deadline);
                }
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(to, seen),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Transition::Done,
                Err(actual) => current = actual,
            }
        }
    }

    /// The term this instance was elected in (0: never).
    #[inline]
    pub fn leads_term(&self) -> u64 {
        self.leads_term.load(Ordering::Acquire)
    }

    /// Records that this instance leads in `term`. Must be written *before* the shared term is
    /// published, so that a heartbeat reading the new term also sees this.
    pub fn set_leads_term(&self, term: Term) {
        self.leads_term.store(term.0, Ordering::Release);
    }
}

/// A handle on one cell of a chunk. The chunk stays allocated while any handle to it lives.
#[derive(Debug, Clone)]
pub struct CellRef {
    chunk: Arc<[HotCell]>,
    index: u32,
}

impl Deref for CellRef {
    type Target = HotCell;

    #[inline]
    fn deref(&self) -> &HotCell {
        &self.chunk[self.index as usize]
    }
}

/// Hands out cells from chunks and takes them back. A cell is owned by exactly one
/// [`InstanceSlot`](super::InstanceSlot), which returns it when dropped — after it left the
/// registry and every actor let go of it, so no heartbeat can still be reading it.
#[derive(Debug, Default)]
pub struct HotArena {
    free: Mutex<Vec<CellRef>>,
}

impl HotArena {
    /// A cell reset to `Active`, last seen at `now`, with `ttl_ms`.
    pub fn acquire(&self, now: MonoMs, ttl_ms: u64) -> CellRef {
        let cell = {
            let mut free = self.free.lock();
            match free.pop() {
                Some(cell) => cell,
                None => {
                    let chunk: Arc<[HotCell]> = (0..CHUNK).map(|_| HotCell::default()).collect();
                    // Reverse order so cells are handed out front to back.
                    free.extend((1..CHUNK as u32).rev().map(|index| CellRef {
                        chunk: Arc::clone(&chunk),
                        index,
                    }));
                    CellRef { chunk, index: 0 }
                }
            }
        };
        cell.reset(now, ttl_ms);
        cell
    }

    /// Returns a cell for reuse.
    pub fn release(&self, cell: CellRef) {
        self.free.lock().push(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(ttl: u64) -> CellRef {
        HotArena::default().acquire(0, ttl)
    }

    #[test]
    fn packing_round_trips_every_status() {
        for status in [
            InstanceStatus::Active,
            InstanceStatus::Suspect,
            InstanceStatus::Expired,
            InstanceStatus::Unregistered,
        ] {
            assert_eq!(unpack(pack(status, 123_456)), (status, 123_456));
        }
    }

    #[test]
    fn touch_refreshes_until_the_deadline_and_never_after_expiry() {
        let s = cell(1000);
        assert!(s.touch(500, 499));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 500));
        // A stale stamp never moves last-seen backwards.
        assert!(s.touch(400, 499));
        assert_eq!(s.liveness().1, 500);
        assert_eq!(s.expire_if_due(1499), Transition::NotDue(1500));
        assert_eq!(s.expire_if_due(1500), Transition::Done);
        assert!(!s.touch(1501, 1500));
        assert_eq!(s.status(), InstanceStatus::Expired);
        assert_eq!(
            s.unregister(),
            Transition::AlreadyTerminal(InstanceStatus::Expired)
        );
    }

    #[test]
    fn heartbeat_after_the_deadline_does_not_resurrect() {
        let s = cell(1000);
        // The actor has not run yet, but the coarse clock says the deadline passed.
        assert!(!s.touch(1001, 1000));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 0));
    }

    #[test]
    fn a_terminal_cell_ignores_touches_however_early_the_coarse_clock_says_it_is() {
        // The actor expired it at the precise deadline; a touch whose coarse clock lags a tick
        // behind would still be within the deadline, and must not revive it.
        let s = cell(1000);
        assert_eq!(s.expire_if_due(1000), Transition::Done);
        assert!(!s.touch(1000, 999));
        assert_eq!(s.liveness(), (InstanceStatus::Expired, 0));
        // Unregistered long before its deadline: the same.
        let s = cell(1000);
        assert_eq!(s.unregister(), Transition::Done);
        assert!(!s.touch(10, 9));
        assert_eq!(s.liveness(), (InstanceStatus::Unregistered, 0));
    }

    #[test]
    fn suspect_is_cleared_by_a_heartbeat() {
        let s = cell(10_000);
        assert!(!s.mark_suspect(4_999, 5_000));
        assert!(s.mark_suspect(5_000, 5_000));
        assert_eq!(s.status(), InstanceStatus::Suspect);
        assert!(s.touch(6_000, 6_000));
        assert_eq!(s.liveness(), (InstanceStatus::Active, 6_000));
    }

    #[test]
    fn renewal_refreshes_before_the_deadline_and_expires_at_it() {
        let s = cell(1000);
        assert_eq!(s.renew(999), Renewal::Renewed);
        assert_eq!(s.liveness(), (InstanceStatus::Active, 999));
        // A heartbeat with a lagging coarse clock lands after the precise deadline...
        assert!(s.touch(2000, 1998));
        // ...and the renewal at the precise time sees it: alive, not expired.
        assert_eq!(s.renew(1999), Renewal::Renewed);
        assert_eq!(s.liveness(), (InstanceStatus::Active, 2000));
        assert_eq!(s.renew(3000), Renewal::Expired);
        assert_eq!(s.liveness(), (InstanceStatus::Expired, 2000));
        assert!(!s.touch(3001, 2999), "no heartbeat revives it");
        assert_eq!(s.renew(3001), Renewal::Terminal(InstanceStatus::Expired));
    }

    #[test]
    fn grace_is_at_most_half_the_ttl() {
        assert_eq!(cell(1000).suspect_at(0, 5000), 500);
    }

    #[test]
    fn released_cells_are_reused_and_reset() {
        let arena = HotArena::default();
        let a = arena.acquire(0, 1000);
        let b = arena.acquire(0, 1000);
        assert!(!std::ptr::eq(&*a, &*b));
        a.set_leads_term(Term(7));
        assert_eq!(a.unregister(), Transition::Done);
        let addr = &*a as *const HotCell;
        arena.release(a);
        let c = arena.acquire(50, 2000);
        assert_eq!(&*c as *const HotCell, addr);
        assert_eq!(c.liveness(), (InstanceStatus::Active, 50));
        assert_eq!(c.ttl_ms(), 2000);
        assert_eq!(c.leads_term(), 0);
    }
}
