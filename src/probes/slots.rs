//! The per-workload fast path's slots (bpf/workload.h): user space gives a
//! cgroup a slot (a histogram line per CPU, in an array it maps into its
//! memory), the programs find it through a cache in the task's (or the
//! connection's) own storage, and an event costs two array lookups instead
//! of a hash lookup. Cgroups without a slot (new since the
//! last read, or more than there are slots) count in the hash map; a read
//! adds what a cgroup counted there before its slot, so its cumulative never
//! shrinks when it gets one.
//!
//! Slots are assigned and released only here (under the workload tracker's
//! lock), so the programs need no allocator and no lock: they only read
//! `ids` and `owners`.
//!
//! A family may keep counters of the same cgroups in the lines' spare words
//! (the network family's retransmissions and drops, beside the RTT): each is
//! read from its own hash map (the cgroups without a slot) by
//! [`Slots::read_count_into`], with the same folding.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use super::reader::{delete, update, HistHash};
use crate::signals::histogram::Histogram;
use crate::signals::ids::IdMap;

/// Cgroups with a run-queue slot at most (fewer when `--workloads.map-entries`
/// is smaller). Each slot is a histogram line on every CPU from the start
/// (576 bytes, 144 KiB per CPU in all): enough for the cgroups that run tasks
/// on a busy node; the rest count in the hash map, at its cost.
pub const RUNQ_SLOTS: u32 = 256;
/// The same for the requests each role of a workload makes (bpf/requests.bpf.c):
/// fewer cgroups serve or call over TCP than run (36 KiB per CPU each).
pub const REQUEST_SLOTS: u32 = 64;
/// The same for the TCP round-trip times (bpf/net.bpf.c), by the socket's cgroup.
pub const NET_SLOTS: u32 = 64;

/// How a family sized its slot maps before load, for [`Slots::new`] after.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub slots: u32,
    pub cpus: u32,
}

#[derive(Debug)]
struct State {
    by_id: IdMap<Slotted>,
    /// Lowest first: the slots in use stay in the first pages of the mapping.
    free: BinaryHeap<Reverse<u32>>,
    /// Reads of the histograms so far ([`Slots::read_into`]).
    reads: u64,
}

#[derive(Debug)]
struct Slotted {
    slot: u32,
    /// What the cgroup counted in the hash map before its slot: folded in
    /// here and deleted from the map at the read after the slot was given.
    base: Histogram,
    /// The same for each counter in the line's spare words.
    counts: [u64; LINE_COUNTS],
    /// The read of the histograms that gave the slot.
    given_at: u64,
}

#[derive(Debug)]
pub struct Slots {
    /// cgroup id -> slot (a hash map).
    ids: OwnedFd,
    /// slot -> cgroup id, 0 when free (an array).
    owners: OwnedFd,
    hists: Lines,
    state: Mutex<State>,
}

/// `ks_slot_hists` mapped into memory: `slots * cpus` lines of [`LINE`]
/// u64s, a `struct ks_whist` at the front of each; written by the programs
/// while read here, hence atomic loads (plain 8-byte loads on x86-64).
#[derive(Debug)]
struct Lines {
    base: *mut u64,
    len: usize,
    cpus: usize,
    /// Kept open (the mapping alone holds the map too) so that the map shows
    /// among the process's fds, where its memory is accounted.
    _fd: OwnedFd,
}

// SAFETY: the mapping is shared memory read and written only through atomics.
unsafe impl Send for Lines {}
// SAFETY: as above.
unsafe impl Sync for Lines {}

/// u64s per line: `struct ks_whist_line` (576 bytes).
pub const LINE: usize = 72;
/// Its spare words, after the `struct ks_whist` (`KS_LINE_COUNTS`).
pub const LINE_COUNTS: usize = 5;

impl Lines {
    fn map(fd: OwnedFd, slots: u32, cpus: usize) -> std::io::Result<Lines> {
        let len = slots as usize * cpus * LINE * 8;
        // SAFETY: a shared mapping of an mmapable BPF array of that size;
        // unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Lines { base: p.cast(), len, cpus, _fd: fd })
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        debug_assert!(i < self.len / 8);
        // SAFETY: in bounds of the mapping, 8-byte aligned (page-aligned base).
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.add(i)) }
    }

    /// Adds slot `slot`'s histogram, summed over CPUs, to `h`.
    fn add_to(&self, slot: u32, h: &mut Histogram) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = h.slots.len();
        for cpu in 0..self.cpus {
            let at = (slot as usize * self.cpus + cpu) * LINE;
            for (i, b) in h.slots.iter_mut().enumerate() {
                *b += self.word(at + i).load(Relaxed);
            }
            // Modular like the kernel's own counter (see Histogram::delta).
            h.sum_ns = h.sum_ns.wrapping_add(self.word(at + n).load(Relaxed));
        }
    }

    /// Counter `k` of the line's spare words, summed over CPUs.
    fn count(&self, slot: u32, k: usize) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        assert!(k < LINE_COUNTS, "counter {k} of {LINE_COUNTS}");
        let at = |cpu| (slot as usize * self.cpus + cpu) * LINE + LINE - LINE_COUNTS + k;
        (0..self.cpus).map(|cpu| self.word(at(cpu)).load(Relaxed)).fold(0, u64::wrapping_add)
    }

    fn zero(&self, slot: u32) {
        let at = slot as usize * self.cpus * LINE;
        for i in at..at + self.cpus * LINE {
            self.word(i).store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // SAFETY: the mapping made in Lines::map, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Slots {
    /// `hists`: the mmapable `ks_slot_hists` of `slots * cpus` lines.
    pub fn new(ids: OwnedFd, owners: OwnedFd, hists: OwnedFd, size: Size) -> std::io::Result<Slots> {
        let hists = Lines::map(hists, size.slots, size.cpus as usize)?;
        let free = (0..size.slots).map(Reverse).collect();
        Ok(Slots { ids, owners, hists, state: Mutex::new(State { by_id: IdMap::default(), free, reads: 0 }) })
    }

    /// `out` is a read of `hash`. Makes each slotted cgroup's entry its
    /// cumulative (what it counted in the hash map before its slot, plus its
    /// slot), then gives a free slot to each cgroup of `out` without one.
    ///
    /// A cgroup's hash entry stops growing once its slot is published (every
    /// program that then misses its cache finds the slot), so at the next read
    /// it is folded into `base` and deleted: each count lives in one place,
    /// the hash map keeps its room for cgroups without a slot, and a read
    /// copies no more than before.
    pub fn read_into(&self, hash: &HistHash, out: &mut IdMap<Histogram>) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.reads += 1;
        let now = st.reads;
        for (id, s) in &mut st.by_id {
            if let Some(h) = out.remove(id) {
                s.base.add(&h);
                hash.delete(*id)?;
            }
        }
        out.reserve(st.by_id.len());
        for (id, s) in &st.by_id {
            let mut h = s.base.clone();
            self.hists.add_to(s.slot, &mut h);
            out.insert(*id, h);
        }
        let new: Vec<u64> = out.keys().filter(|id| !st.by_id.contains_key(id)).copied().collect();
        for id in new {
            let Some(Reverse(slot)) = st.free.pop() else { break };
            // Zeroed again: a program that read the old owner just before it
            // was cleared may have added to it since.
            self.hists.zero(slot);
            // Owner before id: a program that finds the id finds its owner.
            update(&self.owners, &slot.to_ne_bytes(), &id.to_ne_bytes())?;
            update(&self.ids, &id.to_ne_bytes(), &slot.to_ne_bytes())?;
            st.by_id.insert(id, Slotted { slot, base: Histogram::workload(), counts: [0; LINE_COUNTS], given_at: now });
        }
        Ok(())
    }

    /// [`Slots::read_into`] for counter `k` of the lines' spare words: `out`
    /// is a read of `hash`, the counter's map for the cgroups without a slot
    /// (counts in the zero bucket). A slotted cgroup's entry is its
    /// cumulative; its hash entry is folded in and deleted once its slot was
    /// given at an earlier read of the histograms (before that a program may
    /// still be adding to it: it is added, not folded). Gives no slots: the
    /// histograms' read does.
    pub fn read_count_into(&self, k: usize, hash: &HistHash, out: &mut IdMap<Histogram>) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = st.reads;
        for (id, s) in &mut st.by_id {
            let mut n = s.counts[k];
            if let Some(h) = out.remove(id) {
                if s.given_at < now {
                    s.counts[k] += h.count();
                    n = s.counts[k];
                    hash.delete(*id)?;
                } else {
                    n += h.count();
                }
            }
            n += self.hists.count(s.slot, k);
            // Cgroups that never counted keep no series, as without slots.
            if n > 0 {
                let mut h = Histogram::workload();
                h.slots[0] = n;
                out.insert(*id, h);
            }
        }
        Ok(())
    }

    /// Frees cgroup `id`'s slot, if it has one.
    pub fn release(&self, id: u64) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Slotted { slot, .. }) = st.by_id.remove(&id) else { return Ok(()) };
        delete(&self.ids, &id.to_ne_bytes())?;
        // Owner cleared: a task whose cache still names the slot looks up again.
        update(&self.owners, &slot.to_ne_bytes(), &0u64.to_ne_bytes())?;
        self.hists.zero(slot);
        st.free.push(Reverse(slot));
        Ok(())
    }

    /// Cgroups with a slot now.
    pub fn assigned(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }
}
