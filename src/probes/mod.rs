//! Kernel side: load the BPF programs, attach them, read their histograms.

pub mod buckets;
pub mod kernel;
pub mod reader;
mod skel;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{bail, Context};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, OpenObject, OpenProgramMut, ProgramMut};

use crate::signals::histogram::Histogram;
use reader::{HistHash, PercpuArray, ProgStats};

/// Softirq vectors in kernel order, named as node_exporter names them.
pub const SOFTIRQ_VECTORS: [&str; 10] =
    ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];

/// Reasons in `enum ks_drop` order (bpf/ksense.h), then the kernel's own.
pub const DROP_REASONS: [&str; 3] = ["task_storage", "map_full", "cgroup_map_full"];
pub const DROP_RECURSION: &str = "recursion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    TpBtf,
    RawTp,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::TpBtf => "tp_btf",
            AttachMode::RawTp => "raw_tp",
        }
    }

    /// `auto` picks tp_btf when the kernel supports it.
    pub fn choose(requested: &str, s: &kernel::Support) -> anyhow::Result<AttachMode> {
        match requested {
            "auto" if s.tp_btf_usable() => Ok(AttachMode::TpBtf),
            "auto" if s.raw_tp.is_ok() => Ok(AttachMode::RawTp),
            "auto" => bail!(
                "this kernel attaches neither tp_btf ({}) nor raw_tp ({}) programs",
                err(&s.tp_btf),
                err(&s.raw_tp)
            ),
            "tp_btf" if !s.tp_btf_usable() => bail!(
                "tp_btf requested but unusable here: btf={}, tp_btf: {}, task storage={}",
                s.btf,
                err(&s.tp_btf),
                s.task_storage
            ),
            "tp_btf" => Ok(AttachMode::TpBtf),
            "raw_tp" => Ok(AttachMode::RawTp),
            other => bail!("unknown attach mode {other:?} (auto, tp_btf or raw_tp)"),
        }
    }
}

fn err(r: &Result<(), String>) -> &str {
    r.as_ref().err().map(String::as_str).unwrap_or("ok")
}

/// One logical program (e.g. `sched_switch`), whichever variant was loaded.
#[derive(Debug)]
pub struct Program {
    pub name: &'static str,
    pub attached: bool,
    fd: Option<OwnedFd>,
    pub error: Option<String>,
}

/// Everything read in one pass over the maps.
#[derive(Clone, Debug, Default)]
pub struct KernelSnapshot {
    /// Every run-queue wait (the two below added up).
    pub runqueue: Histogram,
    /// Waits that began at a wakeup (or a new task): what a thread that slept
    /// waiting for a request waits before it runs. The rest began with the
    /// task requeued while still runnable (preempted or yielded).
    pub runqueue_wakeup: Histogram,
    pub dstate: Histogram,
    /// Indexed like `SOFTIRQ_VECTORS`.
    pub softirq: Vec<Histogram>,
    pub programs: Vec<(&'static str, bool, ProgStats)>,
    /// (reason, count), monotonic.
    pub dropped: Vec<(&'static str, u64)>,
    /// The per-workload series, when attribution is on (filled by the
    /// exporter, which owns the bookkeeping; the model does not need it).
    pub workloads: Option<crate::workloads::View>,
}

/// What the sched programs record besides the node-wide histograms.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Per-workload (cgroup v2) histograms, with room for this many cgroups
    /// in each map; None: off, and the BPF code for it is not even loaded.
    pub workload_entries: Option<u32>,
}

/// The per-workload maps: cgroup v2 id -> run-queue / D-state histogram.
#[derive(Debug)]
pub struct WorkloadMaps {
    pub runqueue: HistHash,
    pub dstate: HistHash,
    pub entries: u32,
}

/// The attached programs and handles on their maps. The libbpf objects are
/// dropped after attach: links and map fds keep everything alive, and the
/// ELF images stop costing memory.
#[derive(Debug)]
pub struct Probes {
    pub mode: AttachMode,
    pub attached_at: SystemTime,
    pub programs: Vec<Program>,
    sched_hists: PercpuArray,
    softirq_hists: PercpuArray,
    drops: PercpuArray,
    workload_maps: Option<WorkloadMaps>,
    _links: Mutex<Vec<Link>>,
    _stats: Option<OwnedFd>,
}

// `enum` in bpf/sched.bpf.c
const HIST_RUNQ_REQUEUE: u32 = 0;
const HIST_DSTATE: u32 = 1;
const HIST_RUNQ_WAKEUP: u32 = 2;

impl Probes {
    /// Loads and attaches every program. A program whose tracepoint is missing
    /// or that fails to attach is reported with `attached == false`; the
    /// others keep running.
    ///
    /// `disable` names programs not to load at all (`--bpf.disable`).
    pub fn attach(mode: AttachMode, support: &kernel::Support, disable: &[&str]) -> anyhow::Result<Probes> {
        Self::attach_with(mode, support, disable, Options::default())
    }

    /// [`Probes::attach`] with options.
    pub fn attach_with(
        mode: AttachMode,
        support: &kernel::Support,
        disable: &[&str],
        opts: Options,
    ) -> anyhow::Result<Probes> {
        if !support.btf {
            bail!("{}", kernel::NO_BTF);
        }
        let bounds = *buckets::kernel_bounds();
        let skip = |tp: &str| -> Option<&'static str> {
            if disable.contains(&tp) {
                Some("disabled by --bpf.disable")
            } else if mode == AttachMode::TpBtf && support.missing_tracepoints.contains(&tp) {
                Some("tracepoint missing from this kernel")
            } else {
                None
            }
        };
        let stats = kernel::enable_stats().map_err(|e| tracing::warn!("BPF run-time statistics unavailable: {e}")).ok();
        let mut links = Vec::new();
        let mut programs = Vec::new();

        // sched: run-queue and D-state
        let mut obj = MaybeUninit::<OpenObject>::uninit();
        let mut open =
            skel::sched::SchedSkelBuilder::default().open(&mut obj).context("opening the sched BPF object")?;
        open.maps.rodata_data.as_deref_mut().context("sched rodata")?.ks_bounds = bounds;
        let btf = mode == AttachMode::TpBtf;
        // Only the chosen variant's storage map is created.
        open.maps.task_ts.set_autocreate(btf)?;
        open.maps.pid_ts.set_autocreate(!btf)?;
        let rodata = open.maps.rodata_data.as_deref_mut().context("sched rodata")?;
        rodata.ks_workloads = opts.workload_entries.is_some();
        // Off: one entry each, never touched (the code using them is dead).
        let entries = opts.workload_entries.unwrap_or(1).max(1);
        for m in [&mut open.maps.cg_runq, &mut open.maps.cg_dstate] {
            m.set_max_entries(entries)?;
            if !support.mem_alloc {
                // No bpf_mem_alloc: allocating from a tracepoint is unsafe, preallocate.
                m.set_map_flags(m.map_flags() & !libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC)?;
            }
        }
        let p = &mut open.progs;
        for (name, tp, raw) in [
            ("sched_switch", &mut p.tp_sched_switch, &mut p.raw_sched_switch),
            ("sched_wakeup", &mut p.tp_sched_wakeup, &mut p.raw_sched_wakeup),
            ("sched_wakeup_new", &mut p.tp_sched_wakeup_new, &mut p.raw_sched_wakeup_new),
        ] {
            select(tp, raw, btf, skip(name).is_some());
        }
        let sk = open.load().context("loading the sched BPF programs")?;
        let p = &sk.progs;
        for (name, prog) in [
            ("sched_switch", if btf { &p.tp_sched_switch } else { &p.raw_sched_switch }),
            ("sched_wakeup", if btf { &p.tp_sched_wakeup } else { &p.raw_sched_wakeup }),
            ("sched_wakeup_new", if btf { &p.tp_sched_wakeup_new } else { &p.raw_sched_wakeup_new }),
        ] {
            programs.push(attach_one(name, prog, skip(name), &mut links));
        }
        let sched_hists = percpu(&sk.maps.sched_hists)?;
        let drops = percpu(&sk.maps.ks_drops)?;
        let workload_maps = match opts.workload_entries {
            Some(entries) => Some(WorkloadMaps {
                runqueue: hist_hash(&sk.maps.cg_runq)?,
                dstate: hist_hash(&sk.maps.cg_dstate)?,
                entries,
            }),
            None => None,
        };
        drop(sk);

        // softirq
        let mut obj = MaybeUninit::<OpenObject>::uninit();
        let mut open =
            skel::softirq::SoftirqSkelBuilder::default().open(&mut obj).context("opening the softirq BPF object")?;
        open.maps.rodata_data.as_deref_mut().context("softirq rodata")?.ks_bounds = bounds;
        let p = &mut open.progs;
        for (name, tp, raw) in [
            ("softirq_entry", &mut p.tp_softirq_entry, &mut p.raw_softirq_entry),
            ("softirq_exit", &mut p.tp_softirq_exit, &mut p.raw_softirq_exit),
        ] {
            select(tp, raw, btf, skip(name).is_some());
        }
        let sk = open.load().context("loading the softirq BPF programs")?;
        let p = &sk.progs;
        for (name, prog) in [
            ("softirq_entry", if btf { &p.tp_softirq_entry } else { &p.raw_softirq_entry }),
            ("softirq_exit", if btf { &p.tp_softirq_exit } else { &p.raw_softirq_exit }),
        ] {
            programs.push(attach_one(name, prog, skip(name), &mut links));
        }
        let softirq_hists = percpu(&sk.maps.softirq_hists)?;
        drop(sk);

        if links.is_empty() {
            bail!(
                "no BPF program could be attached: {}",
                programs.iter().filter_map(|p| p.error.as_deref()).collect::<Vec<_>>().join("; ")
            );
        }
        Ok(Probes {
            mode,
            attached_at: SystemTime::now(),
            programs,
            sched_hists,
            softirq_hists,
            drops,
            workload_maps,
            _links: Mutex::new(links),
            _stats: stats,
        })
    }

    /// The per-workload maps, when attached with them.
    pub fn take_workload_maps(&mut self) -> Option<WorkloadMaps> {
        self.workload_maps.take()
    }

    /// Reads every histogram and counter. Cheap (a few dozen syscalls) and
    /// safe to call from any thread while the programs run.
    pub fn snapshot(&self) -> std::io::Result<KernelSnapshot> {
        let mut buf = Vec::new();
        let wakeup = self.sched_hists.histogram(HIST_RUNQ_WAKEUP, &mut buf)?;
        let mut runqueue = self.sched_hists.histogram(HIST_RUNQ_REQUEUE, &mut buf)?;
        runqueue.add(&wakeup);
        let mut s = KernelSnapshot {
            runqueue,
            runqueue_wakeup: wakeup,
            dstate: self.sched_hists.histogram(HIST_DSTATE, &mut buf)?,
            ..Default::default()
        };
        for v in 0..self.softirq_hists.entries() {
            s.softirq.push(self.softirq_hists.histogram(v, &mut buf)?);
        }
        let mut recursion = 0;
        for p in &self.programs {
            let st = p.fd.as_ref().map(reader::prog_stats).transpose()?.unwrap_or_default();
            recursion += st.recursion_misses;
            s.programs.push((p.name, p.attached, st));
        }
        for (i, reason) in DROP_REASONS.iter().enumerate() {
            s.dropped.push((reason, self.drops.counter(i as u32, &mut buf)?));
        }
        s.dropped.push((DROP_RECURSION, recursion));
        Ok(s)
    }
}

/// Loads exactly one variant of a program, or none when its tracepoint is missing.
fn select(tp: &mut OpenProgramMut<'_>, raw: &mut OpenProgramMut<'_>, btf: bool, skip: bool) {
    tp.set_autoload(btf && !skip);
    raw.set_autoload(!btf && !skip);
}

fn attach_one(name: &'static str, prog: &ProgramMut<'_>, skip: Option<&str>, links: &mut Vec<Link>) -> Program {
    if let Some(reason) = skip {
        tracing::warn!(program = name, reason, "program not attached");
        return Program { name, attached: false, fd: None, error: Some(format!("{name}: {reason}")) };
    }
    let fd = prog.as_fd().try_clone_to_owned().ok();
    match prog.attach() {
        Ok(link) => {
            links.push(link);
            Program { name, attached: true, fd, error: None }
        }
        Err(e) => {
            tracing::warn!(program = name, error = %e, "program not attached");
            Program { name, attached: false, fd, error: Some(format!("{name}: {e}")) }
        }
    }
}

fn hist_hash(map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<HistHash> {
    Ok(HistHash::new(map.as_fd().try_clone_to_owned()?, map.value_size() as usize)?)
}

fn percpu(map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<PercpuArray> {
    let fd = map.as_fd().try_clone_to_owned()?;
    Ok(PercpuArray::new(fd, map.value_size() as usize, map.max_entries())?)
}
