//! Reads what the programs aggregated, without stopping them: per-CPU map
//! values summed over CPUs, and the kernel's own per-program statistics.

use std::os::fd::{AsRawFd, OwnedFd};

use libbpf_rs::libbpf_sys as sys;

use crate::signals::buckets::WORKLOAD_SLOTS;
use crate::signals::histogram::Histogram;
use crate::signals::ids::IdMap;

/// A per-CPU array map read with one reusable buffer.
#[derive(Debug)]
pub struct PercpuArray {
    fd: OwnedFd,
    value_size: usize,
    entries: u32,
    cpus: usize,
    /// The kernel answered a batch lookup with "not supported": key by key from then on.
    no_batch: std::sync::atomic::AtomicBool,
}

impl PercpuArray {
    pub fn new(fd: OwnedFd, value_size: usize, entries: u32) -> std::io::Result<Self> {
        Ok(PercpuArray { fd, value_size, entries, cpus: possible_cpus()?, no_batch: Default::default() })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Never tries a batch lookup: the path of kernels without one, for tests.
    pub fn key_by_key(self) -> Self {
        self.no_batch.store(true, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// Calls `f` with each CPU's value of `key`.
    pub fn read(&self, key: u32, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        // The kernel copies each CPU's value rounded up to 8 bytes.
        let stride = self.value_size.next_multiple_of(8);
        buf.resize(stride * self.cpus, 0);
        // SAFETY: buf holds cpus * stride bytes, as the kernel requires.
        let rc = unsafe {
            sys::bpf_map_lookup_elem(self.fd.as_raw_fd(), (&key as *const u32).cast(), buf.as_mut_ptr().cast())
        };
        if rc < 0 {
            return Err(std::io::Error::from_raw_os_error(-rc));
        }
        for cpu in buf.chunks_exact(stride) {
            f(&cpu[..self.value_size]);
        }
        Ok(())
    }

    /// Calls `f(key, value)` with each CPU's value of keys `0..n`: one
    /// bpf() call (BPF_MAP_LOOKUP_BATCH, 5.6+) where a scrape made 44, one
    /// for each key, which it still does where the kernel has no batch
    /// lookup for arrays.
    pub fn read_first(&self, n: u32, buf: &mut Vec<u8>, mut f: impl FnMut(u32, &[u8])) -> std::io::Result<()> {
        let n = n.min(self.entries);
        if n == 0 {
            return Ok(());
        }
        if !self.no_batch.load(std::sync::atomic::Ordering::Relaxed) {
            match self.read_batch(n, buf, &mut f) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)) => {
                    self.no_batch.store(true, std::sync::atomic::Ordering::Relaxed)
                }
                r => return r,
            }
        }
        for key in 0..n {
            self.read(key, buf, |v| f(key, v))?;
        }
        Ok(())
    }

    fn read_batch(&self, n: u32, buf: &mut Vec<u8>, f: &mut impl FnMut(u32, &[u8])) -> std::io::Result<()> {
        let stride = self.value_size.next_multiple_of(8);
        let keys_len = (n as usize * 4).next_multiple_of(8);
        let need = keys_len + n as usize * stride * self.cpus;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let (keys, vals) = buf.split_at_mut(keys_len);
        let (mut next, mut count) = (0u32, n);
        let opts = sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<sys::bpf_map_batch_opts>() as _,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: keys and vals hold n elements each (the kernel copies
        // bytes: no alignment needed); a null in_batch starts at key 0.
        let rc = unsafe {
            sys::bpf_map_lookup_batch(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                (&mut next as *mut u32).cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        // ENOENT: the array's end came first; count says how far it got.
        if rc < 0 && -rc != libc::ENOENT {
            return Err(std::io::Error::from_raw_os_error(-rc));
        }
        let elem = stride * self.cpus;
        for (i, k) in keys.chunks_exact(4).take(count as usize).enumerate() {
            let key = u32::from_ne_bytes(k.try_into().expect("4 bytes"));
            for cpu in vals[i * elem..(i + 1) * elem].chunks_exact(stride) {
                f(key, &cpu[..self.value_size]);
            }
        }
        Ok(())
    }

    /// Sums a `struct ks_hist` over CPUs.
    pub fn histogram(&self, key: u32, buf: &mut Vec<u8>) -> std::io::Result<Histogram> {
        let mut h = Histogram::default();
        self.read(key, buf, |v| add_ks_hist(&mut h, v))?;
        Ok(h)
    }

    /// Every key's `struct ks_hist`, summed over CPUs, in key order.
    pub fn histograms(&self, buf: &mut Vec<u8>) -> std::io::Result<Vec<Histogram>> {
        let mut hs = vec![Histogram::default(); self.entries as usize];
        self.read_first(self.entries, buf, |k, v| add_ks_hist(&mut hs[k as usize], v))?;
        Ok(hs)
    }

    /// Sums an array of u64 over CPUs, element by element.
    pub fn counters(&self, key: u32, buf: &mut Vec<u8>) -> std::io::Result<Vec<u64>> {
        let mut n = vec![0u64; self.value_size / 8];
        self.read(key, buf, |v| {
            for (c, b) in n.iter_mut().zip(v.chunks_exact(8)) {
                *c += u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            }
        })?;
        Ok(n)
    }

    /// Adds key i's u64 (summed over CPUs) to `out[i]`, for every i of
    /// `out`: how each object's `ks_drops` (one per BPF object) is read.
    pub fn add_counters(&self, out: &mut [u64], buf: &mut Vec<u8>) -> std::io::Result<()> {
        self.read_first(out.len() as u32, buf, |k, v| {
            out[k as usize] += u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"))
        })
    }

    /// Sums a u64 over CPUs.
    pub fn counter(&self, key: u32, buf: &mut Vec<u8>) -> std::io::Result<u64> {
        let mut n = 0u64;
        self.read(key, buf, |v| n += u64::from_ne_bytes(v[..8].try_into().expect("8 bytes")))?;
        Ok(n)
    }
}

/// Adds one `struct ks_hist` (`slots` counts, then the ns sum) as the kernel
/// laid it out to `h`.
fn add_ks_hist(h: &mut Histogram, v: &[u8]) {
    let slots = v.len() / 8 - 1;
    for (slot, chunk) in h.slots.iter_mut().zip(v[..slots * 8].chunks_exact(8)) {
        *slot += u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
    }
    // Modular like the kernel's own counter (see Histogram::delta).
    h.sum_ns = h.sum_ns.wrapping_add(u64::from_ne_bytes(v[slots * 8..slots * 8 + 8].try_into().expect("8 bytes")));
}

/// The kernel's own "operation not supported" (not in libc): what bpf()
/// answers for a map type without batch operations.
const ENOTSUPP: i32 = 524;

/// A per-CPU hash map from a u64 (a cgroup id) to a `struct ks_whist` or a
/// u64 count (bpf/workload.h), read while the programs keep updating it. A
/// count is read as a histogram whose events are all in the zero bucket.
#[derive(Debug)]
pub struct HistHash {
    fd: OwnedFd,
    value_size: usize,
    cpus: usize,
}

impl HistHash {
    pub fn new(fd: OwnedFd, value_size: usize) -> std::io::Result<HistHash> {
        assert!(value_size == (WORKLOAD_SLOTS + 1) * 8 || value_size == 8, "struct ks_whist or u64: {value_size}");
        Ok(HistHash { fd, value_size, cpus: possible_cpus()? })
    }

    /// The values are counts (u64), not histograms.
    pub fn counts(&self) -> bool {
        self.value_size == 8
    }

    fn add(&self, h: &mut Histogram, v: &[u8]) {
        if self.counts() {
            h.slots[0] += u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"));
        } else {
            add_ks_hist(h, v);
        }
    }

    /// Every entry, a few hundred per bpf() call (BPF_MAP_LOOKUP_BATCH,
    /// 5.6+); key by key where the kernel has no batch lookup. With 200
    /// workloads that is one call per map instead of 400 (strace). `buf` is
    /// the caller's, reused across maps and reads.
    pub fn read_all(&self, buf: &mut Vec<u8>) -> std::io::Result<IdMap<Histogram>> {
        match self.read_all_batched(256 << 10, buf) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)) => {
                self.read_all_by_key(buf)
            }
            r => r,
        }
    }

    /// Batches of about `max_bytes` of values (read_all: 256 KiB, so a node
    /// with many CPUs does not allocate megabytes per scrape). `buf` holds a
    /// batch's keys, then its values: grown, never cleared, as zeroing 256 KiB
    /// for each of seven maps was 3 % of a scrape.
    pub fn read_all_batched(&self, max_bytes: usize, buf: &mut Vec<u8>) -> std::io::Result<IdMap<Histogram>> {
        let stride = self.value_size.next_multiple_of(8);
        let elem = stride * self.cpus;
        let mut count_max = (max_bytes / elem).max(1);
        let mut out = IdMap::default();
        // The cursor is the kernel's (a bucket index for hash maps); 8 bytes covers it.
        let (mut cursor, mut next) = (0u64, 0u64);
        let mut first = true;
        loop {
            let need = count_max * (8 + elem);
            if buf.len() < need {
                buf.resize(need, 0);
            }
            let (keys, vals) = buf.split_at_mut(count_max * 8);
            let mut count = count_max as u32;
            let opts = sys::bpf_map_batch_opts {
                sz: std::mem::size_of::<sys::bpf_map_batch_opts>() as _,
                elem_flags: 0,
                flags: 0,
            };
            let in_batch: *mut u64 = if first { std::ptr::null_mut() } else { &mut cursor };
            // SAFETY: keys and vals hold count_max elements each (the kernel
            // copies bytes: no alignment needed); the cursors are live u64s.
            let rc = unsafe {
                sys::bpf_map_lookup_batch(
                    self.fd.as_raw_fd(),
                    in_batch.cast(),
                    (&mut next as *mut u64).cast(),
                    keys.as_mut_ptr().cast(),
                    vals.as_mut_ptr().cast(),
                    &mut count,
                    &opts,
                )
            };
            let err = if rc < 0 { -rc } else { 0 };
            if err == libc::ENOSPC && count_max < 1 << 16 {
                // One bucket holds more entries than a batch (nothing was
                // copied): make room, same cursor.
                count_max *= 2;
                continue;
            }
            if err != 0 && err != libc::ENOENT {
                return Err(std::io::Error::from_raw_os_error(err));
            }
            out.reserve(count as usize);
            for (i, k) in keys.chunks_exact(8).take(count as usize).enumerate() {
                let k = u64::from_ne_bytes(k.try_into().expect("8 bytes"));
                let mut h = Histogram::workload();
                for cpu in vals[i * elem..(i + 1) * elem].chunks_exact(stride) {
                    self.add(&mut h, &cpu[..self.value_size]);
                }
                out.insert(k, h);
            }
            if err == libc::ENOENT {
                return Ok(out); // the last batch
            }
            cursor = next;
            first = false;
        }
    }

    /// Every entry, one call for each key and one for each value. Entries
    /// deleted during the iteration are skipped; one deleted under the
    /// iterator's feet may restart it, so the keys are collected first and
    /// looked up after.
    pub fn read_all_by_key(&self, buf: &mut Vec<u8>) -> std::io::Result<IdMap<Histogram>> {
        let mut keys = Vec::new();
        let mut key = 0u64;
        let mut first = true;
        loop {
            let mut next = 0u64;
            let prev: *const u64 = if first { std::ptr::null() } else { &key };
            // SAFETY: prev is null or points to a live u64; next is a u64 the kernel fills.
            let rc =
                unsafe { sys::bpf_map_get_next_key(self.fd.as_raw_fd(), prev.cast(), (&mut next as *mut u64).cast()) };
            if rc < 0 {
                if -rc == libc::ENOENT {
                    break;
                }
                return Err(std::io::Error::from_raw_os_error(-rc));
            }
            keys.push(next);
            key = next;
            first = false;
            if keys.len() > 1 << 20 {
                break; // a map that keeps changing under us: never loop forever
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut out = IdMap::with_capacity_and_hasher(keys.len(), Default::default());
        let stride = self.value_size.next_multiple_of(8);
        buf.resize(stride * self.cpus, 0);
        for k in keys {
            // SAFETY: buf holds a value for each possible CPU, the key is a live u64.
            let rc = unsafe {
                sys::bpf_map_lookup_elem(self.fd.as_raw_fd(), (&k as *const u64).cast(), buf.as_mut_ptr().cast())
            };
            if rc == 0 {
                let mut h = Histogram::workload();
                for cpu in buf.chunks_exact(stride) {
                    self.add(&mut h, &cpu[..self.value_size]);
                }
                out.insert(k, h);
            } else if -rc != libc::ENOENT {
                return Err(std::io::Error::from_raw_os_error(-rc));
            }
        }
        Ok(out)
    }

    /// Deletes an entry; one already gone is fine.
    pub fn delete(&self, key: u64) -> std::io::Result<()> {
        delete(&self.fd, &key.to_ne_bytes())
    }
}

/// Deletes `key` (the map's key size) from a map; one already gone is fine.
pub(super) fn delete(fd: &OwnedFd, key: &[u8]) -> std::io::Result<()> {
    // SAFETY: key is a live buffer of the map's key size.
    let rc = unsafe { sys::bpf_map_delete_elem(fd.as_raw_fd(), key.as_ptr().cast()) };
    if rc < 0 && -rc != libc::ENOENT {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

/// Sets `key` to `value` (the map's key and value sizes; not a per-CPU map).
pub(super) fn update(fd: &OwnedFd, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    // SAFETY: key and value are live buffers of the map's key and value sizes.
    let rc = unsafe { sys::bpf_map_update_elem(fd.as_raw_fd(), key.as_ptr().cast(), value.as_ptr().cast(), 0) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(())
}

/// Possible CPUs (libbpf's count): how many values a per-CPU map holds per
/// key, and the stride of the slots' lines (src/probes/slots.rs).
pub fn possible_cpus() -> std::io::Result<usize> {
    // SAFETY: no arguments.
    let n = unsafe { sys::libbpf_num_possible_cpus() };
    if n <= 0 {
        return Err(std::io::Error::from_raw_os_error(-n));
    }
    Ok(n as usize)
}

/// The kernel's statistics of one program (with BPF_ENABLE_STATS held).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

pub fn prog_stats(fd: &OwnedFd) -> std::io::Result<ProgStats> {
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: info is a zeroed bpf_prog_info of `len` bytes; no array fields requested.
    let rc = unsafe { sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(ProgStats { run_cnt: info.run_cnt, run_time_ns: info.run_time_ns, recursion_misses: info.recursion_misses })
}
