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
//!
//! ## The moved flag and the moved list (write-behind heartbeats)
//!
//! A write-behind flush writes the last-seen time of every instance that heartbeated since the
//! previous flush. To find those without walking the registry, one more bit of the liveness
//! word says whether the cell moved since the Persister last took it. It is stored inverted,
//! as [`TAKEN`]: a heartbeat's new word is then just the packed status and time, which clears
//! it at no cost, and the heartbeat learns it was the first to move the cell since the last
//! take from the word its CAS replaced. That heartbeat also sets the cell's bit in its chunk's
//! *moved list* (one bit per cell) and the chunk's bit in a summary word shared by
//! [`GROUP`] chunks. Later heartbeats find the cell already moved and do nothing more: per
//! instance and flush interval, the hot path pays two atomic ORs (no lock, no allocation), and
//! between flushes not even that. Without a store nothing ever takes a cell, so after its
//! first heartbeat an instance costs the hot path nothing extra.
//!
//! The Persister ([`HotArena::take_moved`]) swaps the summary words and the listed chunks'
//! words to zero, and for each listed cell sets [`TAKEN`] with one atomic OR that also reads
//! the liveness. Nothing moved is ever lost: a heartbeat landing before the OR is in what the
//! OR read; one landing after it finds the cell taken, so it lists the cell again, for the
//! next flush. A heartbeat that moved the cell but had not yet listed it when the Persister
//! went by is found one flush later. A listed cell whose instance is gone is skipped (its cell
//! is terminal, or free, or reset for a new owner as taken).
//! The summary and list bits are read and written sequentially consistently, so a heartbeat
//! that finds its chunk's summary bit already set knows the Persister will still see its list
//! bit.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::clock::MonoMs;
use crate::model::{InstanceId, InstanceStatus, Term};

/// Cells per chunk.
pub const CHUNK: usize = 1024;

/// Cells per word of a chunk's moved list.
const WORD: usize = 64;

/// Chunks per summary word: 64 chunks, 65 536 cells.
pub const GROUP: usize = 64;

const STATUS_SHIFT: u32 = 62;

/// The liveness word's "taken by the Persister since it last moved" bit, below the status
/// bits: the moved flag, inverted (see the module docs). Set by the Persister and on reset,
/// cleared by every heartbeat that moves the cell, kept by every other transition.
pub const TAKEN: u64 = 1 << 61;

/// The last-seen milliseconds: the 61 bits below [`TAKEN`] (73 million years).
const SEEN_MASK: u64 = TAKEN - 1;

fn pack(status: InstanceStatus, seen: MonoMs) -> u64 {
    let bits = match status {
        InstanceStatus::Active => 0,
        InstanceStatus::Suspect => 1,
        InstanceStatus::Expired => 2,
        InstanceStatus::Unregistered => 3,
    };
    (bits << STATUS_SHIFT) | (seen & SEEN_MASK)
}

/// Status and last-seen time of a liveness word ([`TAKEN`] aside).
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

/// The outcome of [`CellRef::renew`]: a re-registration's verdict on the slot it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The instance was alive: it is refreshed as by a heartbeat at that time.
    Renewed,
    /// Its deadline had passed: it is now recorded as expired.
    Expired,
    /// It was already terminal (expired or unregistered).
    Terminal(InstanceStatus),
}

/// What a heartbeat did to a cell (see [`CellRef::touch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The instance is not alive (terminal, or its deadline passed by the coarse clock):
    /// nothing was recorded.
    Dead,
    /// Alive; nothing more to do (the cell did not move, or had moved since it was taken).
    Alive,
    /// Alive, and this heartbeat is the first to move the cell since the Persister took it
    /// (it cleared [`TAKEN`]): the caller lists the cell.
    FirstMove,
    /// Alive again: the instance was suspect and this heartbeat made it active (the caller
    /// counts the move); `true` if it is also the first move since the Persister took it.
    Revived(bool),
}

/// How many cells are in each status. Every transition of a cell moves one count from its old
/// status to its new one, acquiring a cell adds it as `Active` and releasing it takes it away,
/// so counting instances by status reads four words instead of walking the registry. The hot
/// path touches these only when a heartbeat brings a suspect instance back.
#[derive(Debug, Default)]
pub struct StatusCounts([AtomicIsize; 4]);

impl StatusCounts {
    /// One cell moved from `from` to `to`.
    #[cold]
    #[inline(never)]
    fn moved(&self, from: InstanceStatus, to: InstanceStatus) {
        self.0[to as usize].fetch_add(1, Ordering::Relaxed);
        self.0[from as usize].fetch_sub(1, Ordering::Relaxed);
    }

    fn add(&self, status: InstanceStatus, n: isize) {
        self.0[status as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The counts, indexed by `InstanceStatus as usize`. Once transitions settle each is
    /// exact; a read that races one may see the cell in both statuses or in neither (the four
    /// loads are not one snapshot), and a count caught between another thread's subtraction
    /// and addition reads as 0 rather than below it.
    pub fn read(&self) -> [usize; 4] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed).max(0) as usize)
    }
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
            .store(pack(InstanceStatus::Active, now) | TAKEN, Ordering::Release);
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
    #[inline]
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

    /// Records a heartbeat stamped `stamp` if the instance is alive and its deadline (judged
    /// by the coarse time `coarse_now`) has not passed, marking the cell as moved. One CAS at
    /// most (none when the word already holds `stamp`, which spares the cache line when a
    /// worker heartbeats faster than the clock ticks). The hot path is [`CellRef::touch`],
    /// which also lists the cell when this answers [`Touched::FirstMove`].
    #[inline]
    fn stamp(&self, stamp: MonoMs, coarse_now: MonoMs) -> Touched {
        let ttl = self.ttl_ms();
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if !status.is_alive() || coarse_now >= seen + ttl {
                return Touched::Dead;
            }
            if status == InstanceStatus::Active && seen >= stamp {
                return Touched::Alive;
            }
            // Without `TAKEN`: the cell moved.
            let next = pack(InstanceStatus::Active, seen.max(stamp));
            match self.liveness.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if status == InstanceStatus::Suspect => {
                    return Touched::Revived(current & TAKEN != 0);
                }
                Ok(_) if current & TAKEN != 0 => return Touched::FirstMove,
                Ok(_) => return Touched::Alive,
                Err(actual) => current = actual,
            }
        }
    }

    /// The Persister's side: if the cell moved since it was last taken, takes it (sets
    /// [`TAKEN`]) and returns the liveness read in the same atomic step, so a heartbeat that
    /// landed before is in what this returns and one that lands after lists the cell again.
    pub fn take_moved(&self) -> Option<(InstanceStatus, MonoMs)> {
        if self.liveness.load(Ordering::Relaxed) & TAKEN != 0 {
            return None;
        }
        let word = self.liveness.fetch_or(TAKEN, Ordering::AcqRel);
        (word & TAKEN == 0).then(|| unpack(word))
    }

    /// Whether the cell moved since it was last taken.
    #[cfg(test)]
    fn is_moved(&self) -> bool {
        self.liveness.load(Ordering::Acquire) & TAKEN == 0
    }

    /// A re-registration's verdict, reached in one compare-and-swap: an instance alive at `now`
    /// is refreshed (as by a heartbeat at `now`), one whose deadline passed is recorded as
    /// expired. Deciding both in one step is what keeps a heartbeat landing at the deadline
    /// from slipping between "it is dead, start a new epoch" and the expiry — which used to
    /// leave the old epoch alive beside the new one, still leading, with no heartbeat to reach
    /// it.
    fn renew(&self, now: MonoMs, counts: &Arc<StatusCounts>) -> Renewal {
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
            // `TAKEN` stays as it was: a renewal's record is written through the journal.
            let next = next | (current & TAKEN);
            match self.liveness.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let (to, _) = unpack(next);
                    if to != status {
                        counts.moved(status, to);
                    }
                    return verdict;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves an active cell to `Suspect` if `now` is at or past its suspect point. Returns true
    /// when it moved.
    fn mark_suspect(&self, now: MonoMs, grace_ms: u64, counts: &Arc<StatusCounts>) -> bool {
        let mut current = self.liveness.load(Ordering::Acquire);
        loop {
            let (status, seen) = unpack(current);
            if status != InstanceStatus::Active || now < self.suspect_at(seen, grace_ms) {
                return false;
            }
            match self.liveness.compare_exchange_weak(
                current,
                pack(InstanceStatus::Suspect, seen) | (current & TAKEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    counts.moved(status, InstanceStatus::Suspect);
                    return true;
                }
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

    /// Moves a live cell to the terminal `to`; with `due_at`, only if the deadline has passed
    /// at that time.
    fn terminate(
        &self,
        to: InstanceStatus,
        due_at: Option<MonoMs>,
        counts: &Arc<StatusCounts>,
    ) -> Transition {
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
                pack(to, seen) | (current & TAKEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    counts.moved(status, to);
                    return Transition::Done;
                }
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

/// [`CHUNK`] cells, allocated together, with their moved list and their owners.
struct Chunk {
    cells: [HotCell; CHUNK],
    /// The moved list: a bit per cell, set by the first heartbeat to move it after a take.
    moved: [AtomicU64; CHUNK / WORD],
    /// The summary word of this chunk's group: a bit per chunk with something listed.
    summary: Arc<AtomicU64>,
    /// This chunk's bit in `summary`.
    summary_bit: u64,
    /// The instance each cell belongs to (`None`: free). The Persister finds cells; this
    /// tells it whose they are.
    owners: Mutex<Box<[Option<InstanceId>]>>,
    /// The arena's counts by status, which this chunk's cells keep.
    counts: Arc<StatusCounts>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("summary_bit", &self.summary_bit)
            .finish_non_exhaustive()
    }
}

impl Chunk {
    fn new(summary: Arc<AtomicU64>, summary_bit: u64, counts: Arc<StatusCounts>) -> Self {
        Self {
            cells: std::array::from_fn(|_| HotCell::default()),
            moved: std::array::from_fn(|_| AtomicU64::new(0)),
            summary,
            summary_bit,
            owners: Mutex::new(vec![None; CHUNK].into_boxed_slice()),
            counts,
        }
    }

    /// Lists cell `index` as moved. Taken once per cell and flush interval, so kept out of
    /// the hot path's inlined code.
    #[cold]
    #[inline(never)]
    fn list(&self, index: usize) {
        self.moved[index / WORD].fetch_or(1 << (index % WORD), Ordering::SeqCst);
        // Sequentially consistent with `take_moved`'s swaps: if the summary bit reads as set,
        // the Persister has not swapped it yet and will see the bit set above.
        if self.summary.load(Ordering::SeqCst) & self.summary_bit == 0 {
            self.summary.fetch_or(self.summary_bit, Ordering::SeqCst);
        }
    }

    /// Takes the cells listed in this chunk (see [`HotArena::take_moved`]).
    fn take_moved(&self, f: &mut impl FnMut(&InstanceId, &HotCell, InstanceStatus, MonoMs)) {
        let owners = self.owners.lock();
        for (w, word) in self.moved.iter().enumerate() {
            if word.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let mut listed = word.swap(0, Ordering::SeqCst);
            while listed != 0 {
                let index = w * WORD + listed.trailing_zeros() as usize;
                listed &= listed - 1;
                // A free cell's listing is stale: its instance is gone, and whoever takes the
                // cell next starts out taken.
                let Some(owner) = &owners[index] else {
                    continue;
                };
                let cell = &self.cells[index];
                if let Some((status, seen)) = cell.take_moved() {
                    f(owner, cell, status, seen);
                }
            }
        }
    }
}

/// A handle on one cell of a chunk. The chunk stays allocated while any handle to it lives.
#[derive(Clone)]
pub struct CellRef {
    chunk: Arc<Chunk>,
    index: u32,
}

impl std::fmt::Debug for CellRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellRef")
            .field("index", &self.index)
            .field("cell", &**self)
            .finish()
    }
}

impl Deref for CellRef {
    type Target = HotCell;

    #[inline]
    fn deref(&self) -> &HotCell {
        &self.chunk.cells[self.index as usize]
    }
}

impl CellRef {
    /// The hot path: records a heartbeat stamped `stamp` if the instance is alive and its
    /// deadline (judged by the coarse time `coarse_now`) has not passed, and answers whether
    /// it is alive (one CAS at most, see `HotCell::stamp`). The first heartbeat that moves the cell after the
    /// Persister took it also lists it (two atomic ORs). Never allocates, never blocks.
    #[inline]
    pub fn touch(&self, stamp: MonoMs, coarse_now: MonoMs) -> bool {
        match HotCell::stamp(self, stamp, coarse_now) {
            Touched::Dead => false,
            Touched::Alive => true,
            Touched::FirstMove => {
                self.list();
                true
            }
            Touched::Revived(first_move) => {
                self.revived(first_move);
                true
            }
        }
    }

    /// A heartbeat brought a suspect instance back: counted, and listed if it is the first
    /// move since the Persister took the cell. Rare, so kept out of the inlined hot path.
    #[cold]
    #[inline(never)]
    fn revived(&self, first_move: bool) {
        self.chunk
            .counts
            .moved(InstanceStatus::Suspect, InstanceStatus::Active);
        if first_move {
            self.list();
        }
    }

    /// What a heartbeat does to the cell, without listing it (tests of the moved flag).
    #[cfg(test)]
    fn stamp_unlisted(&self, stamp: MonoMs, coarse_now: MonoMs) -> Touched {
        match HotCell::stamp(self, stamp, coarse_now) {
            Touched::Revived(first_move) => {
                self.chunk
                    .counts
                    .moved(InstanceStatus::Suspect, InstanceStatus::Active);
                if first_move {
                    Touched::FirstMove
                } else {
                    Touched::Alive
                }
            }
            touched => touched,
        }
    }

    /// Lists this cell in its chunk's moved list.
    fn list(&self) {
        self.chunk.list(self.index as usize);
    }

    /// A re-registration's verdict, in one compare-and-swap: an instance alive at `now` is
    /// refreshed, one whose deadline passed is recorded as expired (see `HotCell::renew`).
    pub fn renew(&self, now: MonoMs) -> Renewal {
        HotCell::renew(self, now, &self.chunk.counts)
    }

    /// Moves an active cell to `Suspect` if `now` is at or past its suspect point. Returns true
    /// when it moved.
    pub fn mark_suspect(&self, now: MonoMs, grace_ms: u64) -> bool {
        HotCell::mark_suspect(self, now, grace_ms, &self.chunk.counts)
    }

    /// Moves the cell to `Expired` if its deadline passed at `now`.
    pub fn expire_if_due(&self, now: MonoMs) -> Transition {
        self.terminate(InstanceStatus::Expired, Some(now), &self.chunk.counts)
    }

    /// Moves a live cell to `Unregistered`.
    pub fn unregister(&self) -> Transition {
        self.terminate(InstanceStatus::Unregistered, None, &self.chunk.counts)
    }
}

/// Hands out cells from chunks and takes them back. A cell is owned by exactly one
/// [`InstanceSlot`](super::InstanceSlot), which returns it when dropped — after it left the
/// registry and every actor let go of it, so no heartbeat can still be reading it.
#[derive(Debug, Default)]
pub struct HotArena {
    free: Mutex<Vec<CellRef>>,
    /// Every chunk, in the order they were made: chunk `k` has bit `k % GROUP` of the summary
    /// word it shares with the other chunks of group `k / GROUP`.
    chunks: RwLock<Vec<Arc<Chunk>>>,
    /// How many cells in use are in each status.
    counts: Arc<StatusCounts>,
}

impl HotArena {
    /// A cell for `owner`, reset to `Active`, last seen at `now`, with `ttl_ms`, taken (a
    /// registration's record is written through the journal, not as a moved heartbeat).
    pub fn acquire(&self, owner: &InstanceId, now: MonoMs, ttl_ms: u64) -> CellRef {
        let cell = {
            let mut free = self.free.lock();
            match free.pop() {
                Some(cell) => cell,
                None => {
                    let chunk = {
                        let mut chunks = self.chunks.write();
                        let k = chunks.len();
                        let summary = match k % GROUP {
                            0 => Arc::new(AtomicU64::new(0)),
                            _ => Arc::clone(&chunks[k - k % GROUP].summary),
                        };
                        let chunk = Arc::new(Chunk::new(
                            summary,
                            1 << (k % GROUP),
                            Arc::clone(&self.counts),
                        ));
                        chunks.push(Arc::clone(&chunk));
                        chunk
                    };
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
        self.counts.add(InstanceStatus::Active, 1);
        // Before the cell is reachable by any heartbeat: its slot enters the registry later.
        cell.chunk.owners.lock()[cell.index as usize] = Some(owner.clone());
        cell
    }

    /// Returns a cell for reuse, taking it out of the counts by status if it is still
    /// `counted` there. The cell is made terminal in the same atomic step that reads its last
    /// status, so a handle to it that outlived its slot (none should) finds it dead and moves
    /// no count.
    pub fn release(&self, cell: CellRef, counted: bool) {
        let last = cell.liveness.swap(
            pack(InstanceStatus::Unregistered, 0) | TAKEN,
            Ordering::AcqRel,
        );
        if counted {
            self.counts.add(unpack(last).0, -1);
        }
        cell.chunk.owners.lock()[cell.index as usize] = None;
        self.free.lock().push(cell);
    }

    /// How many counted cells are in each status, indexed by `InstanceStatus as usize`: every
    /// instance from its slot's creation until it leaves the registry (see
    /// [`InstanceSlot::uncount`](super::InstanceSlot::uncount)).
    pub fn counts(&self) -> [usize; 4] {
        self.counts.read()
    }

    /// Takes one cell in `status` out of the counts (its slot left the registry).
    pub fn uncount(&self, status: InstanceStatus) {
        self.counts.add(status, -1);
    }

    /// Takes every cell listed as moved since the last call ([`HotCell::take_moved`]) and
    /// calls `f` with its owner, the cell and the liveness read as it was taken. Cells already
    /// taken (listed twice, or reset for a new owner) and free cells are skipped. Costs a load
    /// per [`GROUP`] chunks, plus a pass over the moved list of each chunk with something
    /// listed, plus the listed cells.
    pub fn take_moved(&self, mut f: impl FnMut(&InstanceId, &HotCell, InstanceStatus, MonoMs)) {
        let chunks = self.chunks.read();
        for group in chunks.chunks(GROUP) {
            let summary = &group[0].summary;
            if summary.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let mut listed = summary.swap(0, Ordering::SeqCst);
            while listed != 0 {
                let k = listed.trailing_zeros() as usize;
                listed &= listed - 1;
                group[k].take_moved(&mut f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> InstanceId {
        InstanceId::cursor(text)
    }

    fn cell(ttl: u64) -> CellRef {
        HotArena::default().acquire(&id("a"), 0, ttl)
    }

    /// Everything the arena lists as moved now: (owner, status, last seen).
    fn taken(arena: &HotArena) -> Vec<(String, InstanceStatus, MonoMs)> {
        let mut out = Vec::new();
        arena.take_moved(|owner, _, status, seen| {
            out.push((owner.as_str().to_string(), status, seen))
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
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
        let a = arena.acquire(&id("a"), 0, 1000);
        let b = arena.acquire(&id("b"), 0, 1000);
        assert!(!std::ptr::eq(&*a, &*b));
        a.set_leads_term(Term(7));
        assert_eq!(a.unregister(), Transition::Done);
        let addr = &*a as *const HotCell;
        arena.release(a, true);
        let c = arena.acquire(&id("c"), 50, 2000);
        assert_eq!(&*c as *const HotCell, addr);
        assert_eq!(c.liveness(), (InstanceStatus::Active, 50));
        assert_eq!(c.ttl_ms(), 2000);
        assert_eq!(c.leads_term(), 0);
    }

    #[test]
    fn the_moved_flag_never_changes_status_or_last_seen() {
        for status in [
            InstanceStatus::Active,
            InstanceStatus::Suspect,
            InstanceStatus::Expired,
            InstanceStatus::Unregistered,
        ] {
            assert_eq!(unpack(pack(status, SEEN_MASK) | TAKEN), (status, SEEN_MASK));
        }
    }

    #[test]
    fn only_the_first_heartbeat_that_moves_a_cell_after_a_take_lists_it() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        let b = arena.acquire(&id("b"), 0, 10_000);
        // Registered: taken (the registration's record is written through the journal).
        assert!(taken(&arena).is_empty());
        assert_eq!(a.stamp_unlisted(10, 9), Touched::FirstMove);
        assert_eq!(a.stamp_unlisted(20, 19), Touched::Alive, "already moved");
        assert_eq!(a.stamp_unlisted(20, 19), Touched::Alive, "did not move");
        b.touch(15, 14);
        a.list();
        assert_eq!(
            taken(&arena),
            [
                ("a".into(), InstanceStatus::Active, 20),
                ("b".into(), InstanceStatus::Active, 15)
            ]
        );
        assert!(taken(&arena).is_empty(), "taken once");
        // A heartbeat that does not move the cell leaves it taken: nothing to write.
        assert_eq!(a.stamp_unlisted(20, 19), Touched::Alive);
        assert!(!a.is_moved());
        assert_eq!(a.stamp_unlisted(30, 29), Touched::FirstMove);
        assert!(!b.touch(20_000, 20_000), "b's deadline passed");
        assert_eq!(b.stamp_unlisted(20_000, 20_000), Touched::Dead);
    }

    #[test]
    fn a_heartbeat_after_the_cell_is_taken_lists_it_again() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        assert!(a.touch(10, 9));
        // The Persister takes the cell (as `take_moved` does, cell by cell)...
        assert_eq!(a.take_moved(), Some((InstanceStatus::Active, 10)));
        // ...a heartbeat lands between that and the end of the pass: it finds the cell
        // taken, moves it and lists it again...
        assert_eq!(a.stamp_unlisted(11, 10), Touched::FirstMove);
        a.list();
        // ...the rest of the pass finds the bit listed again only on the next pass, which
        // writes the heartbeat.
        assert_eq!(taken(&arena), [("a".into(), InstanceStatus::Active, 11)]);
        assert!(taken(&arena).is_empty());
    }

    #[test]
    fn a_heartbeat_not_yet_listed_when_the_persister_passes_is_written_next_time() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        // The heartbeat's CAS lands...
        assert_eq!(a.stamp_unlisted(10, 9), Touched::FirstMove);
        // ...the Persister passes before the heartbeat lists the cell: nothing found...
        assert!(taken(&arena).is_empty());
        // ...more heartbeats find the cell moved already and list nothing...
        assert_eq!(a.stamp_unlisted(12, 11), Touched::Alive);
        // ...the first one lists it now, and the next pass writes the latest time.
        a.list();
        assert_eq!(taken(&arena), [("a".into(), InstanceStatus::Active, 12)]);
    }

    #[test]
    fn a_heartbeat_landing_while_the_cell_is_listed_is_in_what_the_persister_reads() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        assert!(a.touch(10, 9));
        // After the listing, before the Persister takes the cell: no second listing needed.
        assert_eq!(a.stamp_unlisted(15, 14), Touched::Alive);
        assert_eq!(taken(&arena), [("a".into(), InstanceStatus::Active, 15)]);
    }

    #[test]
    fn transitions_keep_the_moved_mark_and_terminal_cells_report_their_status() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        assert!(a.touch(100, 99));
        assert!(a.mark_suspect(6_000, 5_000));
        assert!(a.is_moved(), "suspicion keeps the unwritten heartbeat");
        assert_eq!(a.renew(6_100), Renewal::Renewed);
        assert!(a.is_moved(), "a renewal keeps it too");
        assert_eq!(taken(&arena), [("a".into(), InstanceStatus::Active, 6_100)]);
        // Moved, then expired before the Persister came by: it reports the cell as expired
        // (the Persister skips it; the expiry is journaled).
        assert!(a.touch(7_000, 6_999));
        assert_eq!(a.expire_if_due(17_000), Transition::Done);
        assert_eq!(
            taken(&arena),
            [("a".into(), InstanceStatus::Expired, 7_000)]
        );
        // A suspect cell touched with a stamp it already holds becomes active: that moved.
        let b = arena.acquire(&id("b"), 0, 10_000);
        assert!(b.mark_suspect(5_000, 5_000));
        assert_eq!(b.stamp_unlisted(0, 5_001), Touched::FirstMove);
        assert_eq!(b.liveness(), (InstanceStatus::Active, 0));
    }

    #[test]
    fn a_released_or_reused_cell_is_never_reported_under_its_old_owner() {
        let arena = HotArena::default();
        let a = arena.acquire(&id("a"), 0, 10_000);
        let addr = &*a as *const HotCell;
        assert!(a.touch(10, 9));
        assert_eq!(a.unregister(), Transition::Done);
        arena.release(a, true);
        // Listed and moved, but free: skipped.
        assert!(taken(&arena).is_empty());
        let b = arena.acquire(&id("b"), 0, 10_000);
        assert!(b.touch(10, 9));
        assert_eq!(b.unregister(), Transition::Done);
        arena.release(b, true);
        // Reused by a new owner before the Persister came by: the reset took the cell,
        // and the new owner's own heartbeat is reported under its own id.
        let c = arena.acquire(&id("c"), 0, 10_000);
        assert_eq!(&*c as *const HotCell, addr);
        assert!(taken(&arena).is_empty());
        assert!(c.touch(20, 19));
        assert_eq!(taken(&arena), [("c".into(), InstanceStatus::Active, 20)]);
    }

    #[test]
    fn cells_in_every_chunk_and_group_are_found() {
        let arena = HotArena::default();
        let n = (GROUP + 1) * CHUNK + 3;
        let cells: Vec<CellRef> = (0..n)
            .map(|i| arena.acquire(&id(&format!("i{i}")), 0, 10_000))
            .collect();
        let moving = [
            0,
            63,
            64,
            CHUNK - 1,
            CHUNK,
            GROUP * CHUNK - 1,
            GROUP * CHUNK,
            n - 1,
        ];
        for (k, &i) in moving.iter().enumerate() {
            assert!(cells[i].touch(10 + k as u64, 9));
        }
        let mut want: Vec<_> = moving
            .iter()
            .enumerate()
            .map(|(k, &i)| (format!("i{i}"), InstanceStatus::Active, 10 + k as u64))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(taken(&arena), want);
        assert!(taken(&arena).is_empty());
    }

    /// Heartbeat threads move cells while a Persister thread takes them: once the heartbeats
    /// stop, one more pass leaves every cell's last taken time equal to its last-seen time.
    #[test]
    fn concurrent_heartbeats_and_takes_lose_nothing() {
        use std::sync::atomic::AtomicBool;
        let arena = Arc::new(HotArena::default());
        let n = 3 * CHUNK;
        let cells: Arc<Vec<CellRef>> = Arc::new(
            (0..n)
                .map(|i| arena.acquire(&id(&format!("i{i}")), 0, u64::MAX / 4))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let persister = {
            let (arena, stop) = (Arc::clone(&arena), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut written = std::collections::HashMap::new();
                let take = |written: &mut std::collections::HashMap<String, MonoMs>| {
                    arena.take_moved(|owner, _, _, seen| {
                        let last = written.entry(owner.as_str().to_string()).or_insert(0);
                        assert!(seen >= *last, "time went backwards for {owner:?}");
                        *last = seen;
                    })
                };
                while !stop.load(Ordering::Acquire) {
                    take(&mut written);
                }
                take(&mut written);
                written
            })
        };
        let beaters: Vec<_> = (0..2)
            .map(|t| {
                let cells = Arc::clone(&cells);
                std::thread::spawn(move || {
                    for round in 1..=200u64 {
                        for (i, cell) in cells.iter().enumerate() {
                            // Each thread moves a different half at a time, with stamps that
                            // rise round by round.
                            if (i + round as usize) % 2 == t {
                                assert!(cell.touch(round * 10 + t as u64, 0));
                            }
                        }
                    }
                })
            })
            .collect();
        for b in beaters {
            b.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        let written = persister.join().unwrap();
        for (i, cell) in cells.iter().enumerate() {
            assert_eq!(
                written.get(&format!("i{i}")).copied(),
                Some(cell.liveness().1),
                "cell {i}"
            );
            assert!(!cell.is_moved());
        }
    }

    /// The counts by status, taken the slow way: a walk over `cells`.
    fn walked(cells: &[CellRef]) -> [usize; 4] {
        let mut counts = [0; 4];
        for cell in cells {
            counts[cell.status() as usize] += 1;
        }
        counts
    }

    #[test]
    fn status_counts_follow_every_transition_and_release() {
        use rand::{Rng, SeedableRng};
        let arena = HotArena::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut cells: Vec<CellRef> = Vec::new();
        let mut now: MonoMs = 0;
        for step in 0..20_000 {
            now += rng.random_range(0..40);
            let pick = |rng: &mut rand::rngs::StdRng, cells: &[CellRef]| {
                (!cells.is_empty()).then(|| rng.random_range(0..cells.len()))
            };
            match rng.random_range(0..8) {
                0 => cells.push(arena.acquire(&id(&format!("i{step}")), now, 1000)),
                1 => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        arena.release(cells.swap_remove(i), true);
                    }
                }
                2 => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        cells[i].touch(now, now);
                    }
                }
                3 => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        cells[i].mark_suspect(now, 300);
                    }
                }
                4 => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        cells[i].expire_if_due(now);
                    }
                }
                5 => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        cells[i].unregister();
                    }
                }
                _ => {
                    if let Some(i) = pick(&mut rng, &cells) {
                        cells[i].renew(now);
                    }
                }
            }
            assert_eq!(arena.counts(), walked(&cells), "after step {step}");
        }
        // Every status was reached along the way, and releasing everything leaves nothing.
        for cell in cells.drain(..) {
            arena.release(cell, true);
        }
        assert_eq!(arena.counts(), [0; 4]);
    }

    #[test]
    fn status_counts_stay_exact_under_racing_heartbeats_and_transitions() {
        let arena = Arc::new(HotArena::default());
        let cells: Arc<Vec<CellRef>> = Arc::new(
            (0..2 * CHUNK)
                .map(|i| arena.acquire(&id(&format!("i{i}")), 0, 1000))
                .collect(),
        );
        // One thread moves cells to suspect as time goes on; the other heartbeats them back to
        // active, racing it on the same words.
        let suspecter = {
            let cells = Arc::clone(&cells);
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    for cell in cells.iter() {
                        cell.mark_suspect(700 + round, 300);
                    }
                }
            })
        };
        let beater = {
            let cells = Arc::clone(&cells);
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    for cell in cells.iter() {
                        cell.touch(round, 0);
                    }
                }
            })
        };
        suspecter.join().unwrap();
        beater.join().unwrap();
        assert_eq!(arena.counts(), walked(&cells));
        for (i, cell) in cells.iter().enumerate() {
            if i % 3 == 0 {
                cell.unregister();
            } else if i % 3 == 1 {
                cell.expire_if_due(u64::MAX / 8);
            }
        }
        assert_eq!(arena.counts(), walked(&cells));
        assert!(arena.counts()[InstanceStatus::Unregistered as usize] > 0);
    }
}
