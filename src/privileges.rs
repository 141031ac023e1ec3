//! Least privilege: once the BPF programs are attached and the listening
//! socket is bound, ksense gives up every capability it no longer needs.
//!
//! What stays: at most `CAP_BPF`. Reading the maps and the programs'
//! statistics goes through fds ksense already holds, but kernels before 6.5
//! with `kernel.unprivileged_bpf_disabled` set (the default on most
//! distributions) check `CAP_BPF` on every `bpf()` call, reads included.
//! ksense finds out which kind of kernel it is on by trying a read without
//! it, and keeps it only when the read fails. Everything else is dropped
//! from the effective, permitted, inheritable, ambient and (when allowed)
//! bounding sets, and `no_new_privs` is set so nothing can be regained
//! through exec.

use caps::{CapSet, Capability, CapsHashSet};

/// What was kept, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub caps: Vec<Capability>,
    /// False when the bounding set could not be changed (no CAP_SETPCAP, as
    /// for a non-root user given only CAP_BPF and CAP_PERFMON): harmless,
    /// since no_new_privs stops an exec from gaining anything.
    pub bounding_cleared: bool,
}

/// Drops everything but what the runtime needs. `still_works` is called
/// with neither CAP_BPF nor CAP_SYS_ADMIN effective and returns true when
/// the runtime work (reading the maps) succeeds without them. Must be called
/// while the process has a single thread (capabilities are per thread;
/// threads started later inherit the reduced sets).
pub fn drop_after_attach(still_works: impl FnOnce() -> bool) -> Result<Kept, String> {
    let e = |what: &'static str| move |err: caps::errors::CapsError| format!("dropping capabilities ({what}): {err}");
    // bpf() checks CAP_BPF (since 5.8) or CAP_SYS_ADMIN.
    let runtime_cap = if caps::runtime::thread_all_supported().contains(&Capability::CAP_BPF) {
        Capability::CAP_BPF
    } else {
        Capability::CAP_SYS_ADMIN
    };
    let permitted = caps::read(None, CapSet::Permitted).map_err(e("reading"))?;
    let setpcap = permitted.contains(&Capability::CAP_SETPCAP);

    // Try the runtime work with only CAP_SETPCAP (needed below) effective.
    let trial: CapsHashSet = if setpcap { [Capability::CAP_SETPCAP].into() } else { CapsHashSet::new() };
    caps::set(None, CapSet::Effective, &trial).map_err(e("effective"))?;
    let mut keep = CapsHashSet::new();
    if !still_works() && permitted.contains(&runtime_cap) {
        keep.insert(runtime_cap);
    }

    if setpcap {
        for c in caps::read(None, CapSet::Bounding).map_err(e("reading bounding"))? {
            if !keep.contains(&c) {
                caps::drop(None, CapSet::Bounding, c).map_err(e("bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(e("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(e("inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(e("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(e("permitted"))?;

    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("setting no_new_privs: {}", std::io::Error::last_os_error()));
    }
    let mut caps: Vec<Capability> = keep.into_iter().collect();
    caps.sort_by_key(|c| c.index());
    Ok(Kept { caps, bounding_cleared: setpcap })
}

/// The process's thread count, from /proc (capabilities are per thread).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}
