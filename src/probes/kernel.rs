//! What this kernel supports, found by asking it with tiny throw-away
//! programs and map probes, never by trial and error on the real programs.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys as sys;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// The one message when the kernel has no BTF (ksense cannot work without it).
pub const NO_BTF: &str = "kernel BTF missing (/sys/kernel/btf/vmlinux not found): ksense's BPF programs are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.4 or later; Debian 11+, Ubuntu 20.10+, RHEL 8.2+ kernels have it)";

#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub required: bool,
    pub detail: String,
}

#[derive(Clone, Debug)]
pub struct Support {
    pub btf: bool,
    pub tp_btf: Result<(), String>,
    pub raw_tp: Result<(), String>,
    pub task_storage: bool,
    pub stats: Result<(), String>,
    /// BPF hash maps allocate with bpf_mem_alloc (6.1+), which is safe from
    /// any tracepoint; before, run-time allocation in sched_switch is not.
    pub mem_alloc: bool,
    /// Arrays user space can map into memory (BPF_F_MMAPABLE, 5.5+): the
    /// per-workload fast path's histograms (src/probes/slots.rs).
    pub mmapable: bool,
    /// The scheduler's clock agrees across CPUs, so the run-queue and D-state
    /// programs can time waits with it (bpf/sched.bpf.c `clock_of`); Err says
    /// why not, and they read the monotonic clock instead.
    pub sched_clock: Result<(), String>,
    /// The kernel keeps each task's run-queue waits (CONFIG_SCHED_INFO, as
    /// /proc/<pid>/schedstat reports them), so the run-queue and D-state
    /// programs can time waits at sched_switch alone (bpf/sched.bpf.c
    /// `on_switch_sched_info`); Err says why not.
    pub sched_info: Result<(), String>,
    /// Tracepoints missing from kernel BTF (only meaningful with BTF).
    pub missing_tracepoints: Vec<&'static str>,
}

impl Support {
    /// tp_btf needs BTF, the TRACING program type and task storage (our tp_btf
    /// programs keep timestamps there).
    pub fn tp_btf_usable(&self) -> bool {
        self.btf && self.tp_btf.is_ok() && self.task_storage
    }
}

pub fn probe() -> Support {
    let btf = Path::new(BTF_PATH).exists();
    let missing_tracepoints = if btf {
        super::hooks().filter(|h| find_tp_btf_id(h.tracepoint).is_none()).map(|h| h.name).collect()
    } else {
        Vec::new()
    };
    Support {
        btf,
        tp_btf: if btf { probe_attach(true) } else { Err("no kernel BTF".into()) },
        raw_tp: probe_attach(false),
        // SAFETY: plain libbpf call with no pointers besides a null opts.
        task_storage: unsafe { sys::libbpf_probe_bpf_map_type(sys::BPF_MAP_TYPE_TASK_STORAGE, std::ptr::null()) } == 1,
        stats: enable_stats().map(drop),
        mem_alloc: btf && btf_has_struct("bpf_mem_alloc"),
        mmapable: probe_mmapable(),
        sched_clock: sched_clock_stable(
            &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                .unwrap_or_default()
                .trim(),
        ),
        sched_info: if btf { sched_info_in_btf() } else { Err("no kernel BTF".into()) },
        missing_tracepoints,
    }
}

/// Whether kernel BTF has the task fields the sched_info waits read.
fn sched_info_in_btf() -> Result<(), String> {
    use libbpf_rs::btf::{types::Struct, Btf};
    let btf = Btf::from_vmlinux().map_err(|e| format!("reading kernel BTF: {e}"))?;
    let has = |ty: &str, fields: &[&str]| {
        btf.type_by_name::<Struct<'_>>(ty)
            .is_some_and(|s| fields.iter().all(|f| s.iter().any(|m| m.name.is_some_and(|n| n == *f))))
    };
    if !has("task_struct", &["sched_info"]) {
        return Err("task_struct has no sched_info (kernel built without CONFIG_SCHED_INFO)".into());
    }
    if !has("sched_info", &["run_delay", "last_queued", "pcount"]) {
        return Err("struct sched_info lacks run_delay, last_queued or pcount".into());
    }
    Ok(())
}

/// Whether the scheduler's clock (`sched_clock_cpu`, what `rq->clock` holds)
/// is one clock across CPUs. Only x86 has a per-CPU scheduler clock that can
/// drift (HAVE_UNSTABLE_SCHED_CLOCK): there the kernel keeps it global while
/// the TSC is invariant and trusted, which the CPU flags and the clocksource
/// the kernel chose tell (an untrusted TSC is replaced by hpet or acpi_pm).
/// Under another clocksource (kvm-clock, Hyper-V's) the scheduler's clock may
/// be the hypervisor's, whose stability user space cannot see: not used.
/// Elsewhere it is global by construction. A stamp taken on one CPU and ended
/// on another (a migrated wait, most D-state sleeps) needs it.
pub fn sched_clock_stable(cpuinfo: &str, clocksource: &str) -> Result<(), String> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(());
    }
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.trim_start().strip_prefix(':')))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let missing: Vec<&str> = ["constant_tsc", "nonstop_tsc"].into_iter().filter(|f| !flags.contains(f)).collect();
    if !missing.is_empty() {
        return Err(format!("the CPU lacks {}: waits timed with the monotonic clock", missing.join(" and ")));
    }
    if clocksource != "tsc" {
        return Err(format!("clocksource {clocksource:?}, not the TSC: waits timed with the monotonic clock"));
    }
    Ok(())
}

/// Whether the kernel creates an array with BPF_F_MMAPABLE.
fn probe_mmapable() -> bool {
    let opts = sys::bpf_map_create_opts {
        sz: std::mem::size_of::<sys::bpf_map_create_opts>() as _,
        map_flags: sys::BPF_F_MMAPABLE,
        ..Default::default()
    };
    // SAFETY: a null name and a live, sized opts struct.
    let fd = unsafe { sys::bpf_map_create(sys::BPF_MAP_TYPE_ARRAY, std::ptr::null(), 4, 8, 1, &opts) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the fd just created, closed once.
    unsafe { libc::close(fd) };
    true
}

/// `ksense check`: one line per capability, in the order a user debugs them.
pub fn checks(s: &Support) -> Vec<Check> {
    let res = |r: &Result<(), String>| r.as_ref().err().cloned().unwrap_or_else(|| "ok".into());
    let mut v = vec![
        Check {
            name: "privileges".into(),
            ok: privileges().is_ok(),
            required: true,
            detail: privileges().err().unwrap_or_else(|| "ok".into()),
        },
        Check {
            name: "btf".into(),
            ok: s.btf,
            required: true,
            detail: if s.btf { BTF_PATH.into() } else { NO_BTF.into() },
        },
        Check { name: "tp_btf".into(), ok: s.tp_btf.is_ok(), required: false, detail: res(&s.tp_btf) },
        Check { name: "raw_tp".into(), ok: s.raw_tp.is_ok(), required: false, detail: res(&s.raw_tp) },
        Check {
            name: "task_storage".into(),
            ok: s.task_storage,
            required: false,
            detail: if s.task_storage {
                "ok".into()
            } else {
                "BPF_MAP_TYPE_TASK_STORAGE unsupported: falling back to a pid hash".into()
            },
        },
        Check {
            name: "bpf_stats".into(),
            ok: s.stats.is_ok(),
            required: false,
            detail: match &s.stats {
                Ok(()) => "ok (what --bpf.stats needs; off by default)".into(),
                Err(e) => format!("{e}: --bpf.stats cannot hold the run-time statistics"),
            },
        },
        Check {
            name: "sched_clock".into(),
            ok: s.sched_clock.is_ok(),
            required: false,
            detail: match &s.sched_clock {
                Ok(()) => "ok (waits timed with the scheduler's own clock, as schedstat)".into(),
                Err(e) => e.clone(),
            },
        },
        Check {
            name: "sched_info".into(),
            ok: s.sched_info.is_ok(),
            required: false,
            detail: match &s.sched_info {
                Ok(()) => {
                    "ok (run-queue and D-state waits timed at sched_switch alone, from the kernel's own accounting)"
                        .into()
                }
                Err(e) => format!("{e}: waits timed from sched_wakeup to sched_switch"),
            },
        },
        Check {
            name: "mmapable_arrays".into(),
            ok: s.mmapable,
            required: false,
            detail: if s.mmapable {
                "ok".into()
            } else {
                "BPF_F_MMAPABLE unsupported: per-workload histograms all in hash maps (slower)".into()
            },
        },
    ];
    v.push(Check {
        name: "attach".into(),
        ok: s.tp_btf_usable() || s.raw_tp.is_ok(),
        required: true,
        detail: if s.tp_btf_usable() {
            "tp_btf".into()
        } else if s.raw_tp.is_ok() {
            "raw_tp".into()
        } else {
            "neither tp_btf nor raw_tp programs attach".into()
        },
    });
    for h in super::hooks() {
        let missing = s.missing_tracepoints.contains(&h.name);
        v.push(Check {
            name: format!("probe {}", h.name),
            ok: !missing,
            required: false,
            detail: match (missing, h.name == h.tracepoint) {
                (true, _) => format!("tracepoint {} not in kernel BTF", h.tracepoint),
                (false, _) if h.fallback => "ok (a fallback: attached only where its family needs it)".into(),
                (false, true) => "ok".into(),
                (false, false) => format!("ok (on {})", h.tracepoint),
            },
        });
    }
    let (ok, detail) = super::perf::check();
    v.push(Check { name: "perf_events".into(), ok, required: false, detail });
    v
}

/// Root, or CAP_BPF + CAP_PERFMON (kernel >= 5.8), or CAP_SYS_ADMIN.
pub fn privileges() -> Result<(), String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .ok_or("no CapEff in /proc/self/status")?;
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err("ksense needs root, or CAP_BPF and CAP_PERFMON, to load its BPF programs".into())
    }
}

/// BTF id of the `btf_trace_<tp>` typedef, which tp_btf programs attach to.
pub fn find_tp_btf_id(tp: &str) -> Option<u32> {
    let name = CString::new(tp).ok()?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    let id = unsafe { sys::libbpf_find_vmlinux_btf_id(name.as_ptr(), sys::BPF_TRACE_RAW_TP) };
    (id > 0).then_some(id as u32)
}

/// Whether kernel BTF describes a struct of that name.
fn btf_has_struct(name: &str) -> bool {
    let Ok(name) = CString::new(name) else { return false };
    // SAFETY: libbpf returns an owned BTF object or an error pointer/null; freed below.
    unsafe {
        let btf = sys::btf__load_vmlinux_btf();
        if btf.is_null() || sys::libbpf_get_error(btf.cast()) != 0 {
            return false;
        }
        let found = sys::btf__find_by_name_kind(btf, name.as_ptr(), sys::BTF_KIND_STRUCT) > 0;
        sys::btf__free(btf);
        found
    }
}

/// Holds the kernel's run-time statistics (run_cnt, run_time_ns) on for as
/// long as the fd lives, without touching the global sysctl.
pub fn enable_stats() -> Result<OwnedFd, String> {
    // SAFETY: plain syscall wrapper.
    let fd = unsafe { sys::bpf_enable_stats(sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(format!("BPF_ENABLE_STATS: {}", std::io::Error::from_raw_os_error(-fd)));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `r0 = 0; exit` as a tp_btf (TRACING) or raw_tp program on
/// sched_switch and attaches it for a moment.
fn probe_attach(btf: bool) -> Result<(), String> {
    let mut insns = [sys::bpf_insn::default(), sys::bpf_insn::default()];
    insns[0].code = (sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K) as u8;
    insns[1].code = (sys::BPF_JMP | sys::BPF_EXIT) as u8;
    let mut opts =
        sys::bpf_prog_load_opts { sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _, ..Default::default() };
    let prog_type = if btf {
        opts.expected_attach_type = sys::BPF_TRACE_RAW_TP;
        opts.attach_btf_id = find_tp_btf_id("sched_switch").ok_or("sched_switch not in kernel BTF")?;
        sys::BPF_PROG_TYPE_TRACING
    } else {
        sys::BPF_PROG_TYPE_RAW_TRACEPOINT
    };
    let license = c"GPL";
    // SAFETY: pointers to live locals; the kernel copies the instructions.
    let fd = unsafe {
        sys::bpf_prog_load(prog_type, c"ksense_probe".as_ptr(), license.as_ptr(), insns.as_ptr(), 2, &mut opts)
    };
    if fd < 0 {
        return Err(format!("loading a probe program: {}", std::io::Error::from_raw_os_error(-fd)));
    }
    // SAFETY: a fresh fd we own; closed on drop.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let tp = if btf { std::ptr::null() } else { c"sched_switch".as_ptr() };
    // SAFETY: `tp` is null or a static C string; the fd is live.
    let link = unsafe { sys::bpf_raw_tracepoint_open(tp, std::os::fd::AsRawFd::as_raw_fd(&prog)) };
    if link < 0 {
        return Err(format!("attaching a probe program: {}", std::io::Error::from_raw_os_error(-link)));
    }
    // SAFETY: a fresh fd we own; closing it detaches.
    drop(unsafe { OwnedFd::from_raw_fd(link) });
    Ok(())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::sched_clock_stable;

    const CPU: &str = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc rdtscp\n";

    #[test]
    fn the_scheduler_clock_is_used_only_where_the_tsc_is_invariant_and_trusted() {
        assert!(sched_clock_stable(CPU, "tsc").is_ok());
        // A hypervisor's clock may be the scheduler's, its stability unknown here.
        assert!(sched_clock_stable(CPU, "kvm-clock").is_err());
        let old = CPU.replace(" nonstop_tsc", "");
        let e = sched_clock_stable(&old, "tsc").unwrap_err();
        assert!(e.contains("nonstop_tsc") && !e.contains("constant_tsc"), "{e}");
        // The kernel found the TSC unreliable and moved timekeeping away from it.
        assert!(sched_clock_stable(CPU, "hpet").unwrap_err().contains("hpet"));
        assert!(sched_clock_stable("", "tsc").is_err(), "no flags line: not known stable");
    }
}
