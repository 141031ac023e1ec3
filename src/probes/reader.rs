//! Reads what the programs aggregated, without stopping them: per-CPU map
//! values summed over CPUs, and the kernel's own per-program statistics.

use std::os::fd::{AsRawFd, OwnedFd};

use libbpf_rs::libbpf_sys as sys;

use super::buckets::SLOTS;
use crate::signals::histogram::Histogram;

/// A per-CPU array map read with one reusable buffer.
#[derive(Debug)]
pub struct PercpuArray {
    fd: OwnedFd,
    value_size: usize,
    entries: u32,
    cpus: usize,
}

impl PercpuArray {
    pub fn new(fd: OwnedFd, value_size: usize, entries: u32) -> std::io::Result<Self> {
        // SAFETY: no arguments.
        let cpus = unsafe { sys::libbpf_num_possible_cpus() };
        if cpus <= 0 {
            return Err(std::io::Error::from_raw_os_error(-cpus));
        }
        Ok(PercpuArray { fd, value_size, entries, cpus: cpus as usize })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Calls `f` with each CPU's value of `key`.
    pub fn read(&self, key: u32, buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        // The kernel copies each CPU's value rounded up to 8 bytes.
        let stride = self.value_size.next_multiple_of(8);
        buf.resize(stride * self.cpus, 0);
        // SAFETY: buf holds cpus * stride bytes, as the kernel requires.
        let rc = unsafe { sys::bpf_map_lookup_elem(self.fd.as_raw_fd(), (&key as *const u32).cast(), buf.as_mut_ptr().cast()) };
        if rc < 0 {
            return Err(std::io::Error::from_raw_os_error(-rc));
        }
        for cpu in buf.chunks_exact(stride) {
            f(&cpu[..self.value_size]);
        }
        Ok(())
    }

    /// Sums a `struct ks_hist` over CPUs.
    pub fn histogram(&self, key: u32, buf: &mut Vec<u8>) -> std::io::Result<Histogram> {
        let mut h = Histogram::default();
        self.read(key, buf, |v| {
            for (slot, chunk) in h.slots.iter_mut().zip(v.chunks_exact(8)) {
                *slot += u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            }
            // Modular like the kernel's own counter (see Histogram::delta).
            h.sum_ns = h.sum_ns.wrapping_add(u64::from_ne_bytes(v[SLOTS * 8..SLOTS * 8 + 8].try_into().expect("8 bytes")));
        })?;
        Ok(h)
    }

    /// Sums a u64 over CPUs.
    pub fn counter(&self, key: u32, buf: &mut Vec<u8>) -> std::io::Result<u64> {
        let mut n = 0u64;
        self.read(key, buf, |v| n += u64::from_ne_bytes(v[..8].try_into().expect("8 bytes")))?;
        Ok(n)
    }
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
