//! Kernel side: load the BPF programs, attach them, read their histograms.
//!
//! Each probe family is one `bpf/<name>.bpf.c` and one module here that opens
//! its skeleton, attaches its programs and reads its maps into a
//! [`Snapshot`]; [`FAMILIES`] registers them. Everything else (the
//! `--bpf.disable` names, `ksense check`'s tracepoint list, the model's
//! signal names, the program statistics) is derived from that table.

pub mod fake;
pub mod kernel;
mod net;
pub mod perf;
pub mod reader;
mod requests;
mod sched;
mod skel;
pub mod slots;
mod softirq;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::bail;
use libbpf_rs::{Link, MapCore, OpenProgramMut, ProgramMut};

use crate::signals::buckets::{self, SLOTS};
use crate::signals::histogram::Histogram;
use crate::signals::ids::IdMap;
use crate::signals::metric::{family, Family, Kind, Sample, Unit, Value};
use crate::signals::{Snapshot, Source};
use reader::{HistHash, PercpuArray, ProgStats};
pub use requests::{
    CONN_ROLE_OFFSET, RETRANSMIT_PROGRAM, ROLES as REQUEST_ROLES, SYSCALL_FALLBACK,
    WORKLOAD_DURATION as WORKLOAD_REQUEST_DURATION,
};
pub use sched::sched_info_usable;
pub use softirq::SOFTIRQ_VECTORS;

/// Every probe family, in exposition order. Adding one: a `bpf/<name>.bpf.c`
/// (built by build.rs), a module with its [`ProbeFamily`], and a line here.
pub const FAMILIES: &[ProbeFamily] = &[sched::FAMILY, softirq::FAMILY, net::FAMILY, requests::FAMILY, perf::FAMILY];

/// One probe family: what it attaches, and how.
pub struct ProbeFamily {
    /// Its logical programs: what `--bpf.disable` takes, and the
    /// tracepoint `ksense check` looks up for each.
    pub programs: &'static [Hook],
    /// The signal names its snapshot carries, for the model's features.
    pub signals: fn() -> Vec<String>,
    /// Those of its signals that count events (no durations): the model
    /// reads only their `rate`.
    pub counters: &'static [&'static str],
    /// Opens, loads and attaches the family's programs; the reader holds its maps.
    pub attach: fn(&mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>>,
    /// Fills a snapshot as a read would, every histogram equal to the one
    /// given: what tests and fake sources serve without a kernel.
    pub example: fn(&Histogram, &mut Snapshot),
}

/// A logical program and the tracepoint it attaches to.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Its name (the `program` label, what `--bpf.disable` takes): the
    /// tracepoint's, unless two families hook the same one.
    pub name: &'static str,
    pub tracepoint: &'static str,
    /// Loaded only where its family needs it (sys_exit where the socket
    /// tracepoints are missing, sched_wakeup where the kernel keeps no
    /// sched_info); elsewhere it is not loaded and has no series.
    pub fallback: bool,
}

/// A program named by its tracepoint.
pub const fn on(tracepoint: &'static str) -> Hook {
    Hook { name: tracepoint, tracepoint, fallback: false }
}

/// A fallback program named by its tracepoint (see [`Hook::fallback`]).
pub const fn fallback_on(tracepoint: &'static str) -> Hook {
    Hook { name: tracepoint, tracepoint, fallback: true }
}

/// An attached family's maps.
pub trait Reader: Send + Sync + std::fmt::Debug {
    /// Appends its families and signals to `out`, and adds its drop counts
    /// (indexed like [`DROP_REASONS`]) to `drops`.
    fn read(&self, out: &mut Snapshot, drops: &mut [u64; DROP_REASONS.len()], buf: &mut Vec<u8>)
        -> std::io::Result<()>;
}

/// Every program name, over all families.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    hooks().map(|h| h.name)
}

/// Every program with its tracepoint, over all families.
pub fn hooks() -> impl Iterator<Item = Hook> {
    FAMILIES.iter().flat_map(|f| f.programs.iter().copied())
}

/// Every signal name the probes provide, over all families.
pub fn signal_names() -> Vec<String> {
    FAMILIES.iter().flat_map(|f| (f.signals)()).collect()
}

/// The signals that count events, over all families.
pub fn counter_signals() -> Vec<&'static str> {
    FAMILIES.iter().flat_map(|f| f.counters.iter().copied()).collect()
}

/// Reasons in `enum ks_drop` order (bpf/ksense.h), then the kernel's own.
pub const DROP_REASONS: [&str; 6] =
    ["task_storage", "map_full", "cgroup_map_full", "start_unseen", "end_unseen", "sock_storage"];
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

    /// None (`auto`) picks tp_btf when the kernel supports it.
    pub fn choose(requested: Option<AttachMode>, s: &kernel::Support) -> anyhow::Result<AttachMode> {
        match requested {
            None if s.tp_btf_usable() => Ok(AttachMode::TpBtf),
            None if s.raw_tp.is_ok() => Ok(AttachMode::RawTp),
            None => bail!(
                "this kernel attaches neither tp_btf ({}) nor raw_tp ({}) programs",
                err(&s.tp_btf),
                err(&s.raw_tp)
            ),
            Some(AttachMode::TpBtf) if !s.tp_btf_usable() => bail!(
                "tp_btf requested but unusable here: btf={}, tp_btf: {}, task storage={}",
                s.btf,
                err(&s.tp_btf),
                s.task_storage
            ),
            Some(m) => Ok(m),
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
    /// Meant to run: false where `--bpf.disable` names it or a fallback
    /// stands in for it. Such a program is not served (no
    /// `ksense_bpf_program_attached` 0 for an alert to fire on) and
    /// `--strict` does not count it.
    pub wanted: bool,
    fd: Option<OwnedFd>,
    pub error: Option<String>,
}

/// What the programs record besides the node-wide histograms.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Per-workload (cgroup v2) histograms, with room for this many cgroups
    /// in each map; None: off, and the BPF code for it is not even loaded.
    pub workload_entries: Option<u32>,
    /// Hold the kernel's BPF run-time statistics on (BPF_ENABLE_STATS), for
    /// the programs' run counts and run time. Node-wide: while held, every
    /// BPF program on the node pays two clock reads per run.
    pub stats: bool,
    /// Performance counters to count (node-wide and per workload), those
    /// this machine has; empty: the perf family loads nothing.
    pub perf_events: perf::EventSet,
    /// How run-queue and D-state waits are timed (`--bpf.sched-waits`).
    pub sched_waits: SchedWaits,
}

/// Where the sched family times run-queue and D-state waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedWaits {
    /// From sched_info where it is usable (tp_btf, the kernel keeps it, the
    /// scheduler's clock is stable), else from the wakeups.
    #[default]
    Auto,
    /// At sched_switch alone, from the kernel's sched_info; an error where unusable.
    SchedInfo,
    /// From sched_wakeup (the start) to sched_switch (the end), as runqlat does.
    Wakeup,
}

/// Whether `--bpf.stats` is on unless asked. Off: while held, the kernel's
/// statistics cost every BPF program on the node two clock reads per run,
/// which adds half again to what ksense costs a context-switch-heavy workload
/// (bench/overhead.py), for figures that describe ksense rather than the
/// node. Read either way: they count whenever anything holds them (sysctl
/// kernel.bpf_stats_enabled).
pub const STATS_BY_DEFAULT: bool = false;

impl Default for Options {
    fn default() -> Options {
        Options {
            workload_entries: None,
            stats: STATS_BY_DEFAULT,
            perf_events: perf::EventSet::default(),
            sched_waits: SchedWaits::Auto,
        }
    }
}

/// How a per-workload map is served.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadFamily {
    pub family: &'static str,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// Counts events (served as a counter) rather than durations (a histogram).
    pub counter: bool,
    /// A label every sample carries (e.g. `role="server"`): maps that share
    /// a family name are served as one family, told apart by it.
    pub label: Option<(&'static str, &'static str)>,
    /// A histogram's event count, also served as a counter family (name, help).
    pub count: Option<(&'static str, &'static str)>,
    /// A counter's served value is its count times this (ns to seconds).
    pub scale: f64,
}

/// One per-workload kernel map (cgroup v2 id -> a histogram, or a count of
/// events), and the family it is served as.
#[derive(Debug)]
pub struct WorkloadMap {
    pub family: WorkloadFamily,
    pub map: HistHash,
    /// The fast path's slots, for the maps that have one (run-queue waits,
    /// requests, RTT and the network's counters), where the kernel maps
    /// arrays into memory.
    pub slots: Option<SlotPart>,
}

/// What of a slot's line a per-workload map's fast path is.
#[derive(Debug)]
pub enum SlotPart {
    /// The histogram; its reads give the slots.
    Histogram(Arc<slots::Slots>),
    /// Counter `k` of the spare words of another map's slots.
    Count(Arc<slots::Slots>, usize),
}

impl SlotPart {
    pub fn slots(&self) -> &slots::Slots {
        match self {
            SlotPart::Histogram(s) | SlotPart::Count(s, _) => s,
        }
    }
}

impl WorkloadMap {
    /// Every cgroup's cumulative: the hash map's plus its slot's. Gives a
    /// slot to the cgroups without one while there are free slots.
    pub fn read_all(&self, buf: &mut Vec<u8>) -> std::io::Result<IdMap<Histogram>> {
        let mut out = self.map.read_all(buf)?;
        match &self.slots {
            Some(SlotPart::Histogram(s)) => s.read_into(&self.map, &mut out)?,
            Some(SlotPart::Count(s, k)) => s.read_count_into(*k, &self.map, &mut out)?,
            None => {}
        }
        Ok(out)
    }

    /// Forgets cgroup `id` (its cgroup is gone); one already gone is fine.
    pub fn delete(&self, id: u64) -> std::io::Result<()> {
        if let Some(s) = &self.slots {
            s.slots().release(id)?;
        }
        self.map.delete(id)
    }
}

/// The per-workload maps of every family, in [`FAMILIES`] order: the first,
/// run-queue latency, ranks the workloads.
#[derive(Debug)]
pub struct WorkloadMaps {
    pub maps: Vec<WorkloadMap>,
    pub entries: u32,
}

/// What a family's `attach` works with, and what it leaves behind.
pub struct Attach<'a> {
    pub mode: AttachMode,
    pub support: &'a kernel::Support,
    pub opts: Options,
    /// The kernel's bucket bounds, written into each object's rodata.
    pub bounds: [u64; SLOTS],
    disable: &'a [&'a str],
    programs: Vec<Program>,
    links: Vec<Link>,
    /// Each family's per-workload maps, when attribution is on.
    workload_maps: Vec<WorkloadMap>,
}

impl Attach<'_> {
    pub fn btf(&self) -> bool {
        self.mode == AttachMode::TpBtf
    }

    /// Before load: sizes a per-workload map (one entry, never touched,
    /// when attribution is off: the code using it is dead).
    pub fn size_workload_map(&self, m: &mut libbpf_rs::OpenMapMut<'_>) -> anyhow::Result<()> {
        m.set_max_entries(self.opts.workload_entries.unwrap_or(1).max(1))?;
        if !self.support.mem_alloc {
            // No bpf_mem_alloc: allocating from a tracepoint is unsafe, preallocate.
            m.set_map_flags(m.map_flags() & !libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC)?;
        }
        Ok(())
    }

    /// Before load: sizes the fast path's maps (bpf/workload.h: ids, owners,
    /// histograms) of a per-workload map; one entry when attribution is off.
    /// At most `max` slots; `cpus` of the result is the object's `ks_slot_cpus`.
    /// Without mmapable arrays (before 5.5) the histograms' map is a plain
    /// one-line array no cgroup gets a slot in: all in the hash maps.
    pub fn size_slots(&self, maps: [&mut libbpf_rs::OpenMapMut<'_>; 3], max: u32) -> anyhow::Result<slots::Size> {
        let on = self.slots_on();
        let size = slots::Size {
            slots: self.opts.workload_entries.filter(|_| on).map_or(1, |e| e.clamp(1, max)),
            cpus: reader::possible_cpus()? as u32,
        };
        let [ids, owners, hists] = maps;
        ids.set_max_entries(size.slots)?;
        owners.set_max_entries(size.slots)?;
        hists.set_max_entries(size.slots * size.cpus)?;
        if !on {
            hists.set_map_flags(hists.map_flags() & !libbpf_rs::libbpf_sys::BPF_F_MMAPABLE)?;
        }
        Ok(size)
    }

    fn slots_on(&self) -> bool {
        self.opts.workload_entries.is_some() && self.support.mmapable
    }

    /// After load: the fast path's maps of the per-workload map kept last
    /// (by [`Attach::workload_map`]), when attribution is on; the slots, for
    /// [`Attach::workload_slot_count`].
    pub fn workload_slots(
        &mut self,
        ids: &libbpf_rs::MapMut<'_>,
        owners: &libbpf_rs::MapMut<'_>,
        hists: &libbpf_rs::MapMut<'_>,
        size: slots::Size,
    ) -> anyhow::Result<Option<Arc<slots::Slots>>> {
        if !self.slots_on() {
            return Ok(None);
        }
        let fd = |m: &libbpf_rs::MapMut<'_>| m.as_fd().try_clone_to_owned();
        let s = Arc::new(slots::Slots::new(fd(ids)?, fd(owners)?, fd(hists)?, size)?);
        self.workload_maps.last_mut().expect("kept by workload_map").slots = Some(SlotPart::Histogram(s.clone()));
        Ok(Some(s))
    }

    /// After load: the per-workload counter map kept last counts in word `k`
    /// of the spare words of `slots`' lines (for the cgroups with a slot).
    pub fn workload_slot_count(&mut self, slots: &Arc<slots::Slots>, k: usize) {
        if let Some(m) = self.workload_maps.last_mut() {
            debug_assert!(m.family.counter, "{}: a counter map", m.family.family);
            m.slots = Some(SlotPart::Count(slots.clone(), k));
        }
    }

    /// After load: keeps a per-workload map, when attribution is on.
    pub fn workload_map(
        &mut self,
        family: &'static str,
        unit: Option<Unit>,
        help: &'static str,
        map: &libbpf_rs::MapMut<'_>,
    ) -> anyhow::Result<()> {
        self.workload_map_as(
            WorkloadFamily { family, unit, help, counter: false, label: None, count: None, scale: 1.0 },
            map,
        )
    }

    /// [`Attach::workload_map`], served as `family` says (`counter` is the map's).
    pub fn workload_map_as(&mut self, mut family: WorkloadFamily, map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<()> {
        if self.opts.workload_entries.is_some() {
            let map = hist_hash(map)?;
            family.counter = map.counts();
            self.workload_maps.push(WorkloadMap { family, map, slots: None });
        }
        Ok(())
    }

    fn skip(&self, name: &str) -> Option<&'static str> {
        if self.disable.contains(&name) {
            Some("disabled by --bpf.disable")
        } else if self.btf() && self.support.missing_tracepoints.contains(&name) {
            Some("tracepoint missing from this kernel")
        } else {
            None
        }
    }

    /// Before load: loads exactly one variant of program `name` (tp_btf or
    /// raw_tp), or none when it is disabled or its tracepoint is missing.
    pub fn select(&self, name: &str, tp: &mut OpenProgramMut<'_>, raw: &mut OpenProgramMut<'_>) {
        self.select_as(name, self.btf(), tp, raw);
    }

    /// [`Attach::select`] of the variant `btf` names rather than the mode's:
    /// for a family whose state must be kept the raw_tp way.
    pub fn select_as(&self, name: &str, btf: bool, tp: &mut OpenProgramMut<'_>, raw: &mut OpenProgramMut<'_>) {
        let load = self.skip(name).is_none();
        tp.set_autoload(btf && load);
        raw.set_autoload(!btf && load);
    }

    /// After load: attaches the variant chosen by [`Attach::select`].
    pub fn attach(&mut self, name: &'static str, tp: &ProgramMut<'_>, raw: &ProgramMut<'_>) {
        self.attach_one(name, if self.btf() { tp } else { raw });
    }

    /// After load: attaches the variant chosen by [`Attach::select_as`].
    pub fn attach_as(&mut self, name: &'static str, btf: bool, tp: &ProgramMut<'_>, raw: &ProgramMut<'_>) {
        self.attach_one(name, if btf { tp } else { raw });
    }

    /// Before load: program `name`, which the fallback `by` stands in for,
    /// loads in neither variant and is reported unattached, whatever the
    /// attach mode (a raw_tp one would otherwise attach wherever the
    /// tracepoint does exist, and every call would pay for both).
    pub fn replaced(
        &mut self,
        name: &'static str,
        by: &str,
        tp: &mut OpenProgramMut<'_>,
        raw: &mut OpenProgramMut<'_>,
    ) {
        tp.set_autoload(false);
        raw.set_autoload(false);
        let error = format!("{name}: tracepoint missing from this kernel; {by} stands in");
        tracing::warn!(program = name, stand_in = by, "program not attached: tracepoint missing from this kernel");
        self.programs.push(Program { name, attached: false, wanted: false, fd: None, error: Some(error) });
    }

    /// Before load: a fallback program (one variant) loads only when it is
    /// `needed` and not disabled.
    pub fn select_fallback(&self, name: &str, needed: bool, prog: &mut OpenProgramMut<'_>) {
        prog.set_autoload(needed && !self.disable.contains(&name));
    }

    /// Before load: [`Attach::select`] of a fallback program with both
    /// variants where it is `needed`; where it is not, neither loads.
    pub fn select_fallback_pair(
        &self,
        name: &str,
        needed: bool,
        tp: &mut OpenProgramMut<'_>,
        raw: &mut OpenProgramMut<'_>,
    ) {
        self.select(name, tp, raw);
        if !needed {
            tp.set_autoload(false);
            raw.set_autoload(false);
        }
    }

    /// After load: attaches a fallback program where it is `needed`; where it
    /// is not, it is not one of the programs at all.
    pub fn attach_fallback(&mut self, name: &'static str, needed: bool, prog: &ProgramMut<'_>) {
        if needed {
            self.attach_one(name, prog);
        }
    }

    fn attach_one(&mut self, name: &'static str, prog: &ProgramMut<'_>) {
        if let Some(reason) = self.skip(name) {
            let wanted = !self.disable.contains(&name);
            if wanted {
                tracing::warn!(program = name, reason, "program not attached");
            } else {
                tracing::info!(program = name, reason, "program not attached");
            }
            self.programs.push(Program {
                name,
                attached: false,
                wanted,
                fd: None,
                error: Some(format!("{name}: {reason}")),
            });
            return;
        }
        let fd = prog.as_fd().try_clone_to_owned().ok();
        let p = match prog.attach() {
            Ok(link) => {
                self.links.push(link);
                Program { name, attached: true, wanted: true, fd, error: None }
            }
            Err(e) => {
                tracing::warn!(program = name, error = %e, "program not attached");
                Program { name, attached: false, wanted: true, fd, error: Some(format!("{name}: {e}")) }
            }
        };
        self.programs.push(p);
    }
}

/// Why `--strict` refuses to serve with these programs (those meant to run
/// that did not attach, each with why); None: it serves.
pub fn strict_refusal(programs: &[Program]) -> Option<String> {
    let missing: Vec<&str> =
        programs.iter().filter(|p| p.wanted && !p.attached).map(|p| p.error.as_deref().unwrap_or(p.name)).collect();
    let wanted = programs.iter().filter(|p| p.wanted).count();
    (!missing.is_empty())
        .then(|| format!("--strict: {} of {wanted} BPF programs not attached ({})", missing.len(), missing.join("; ")))
}

/// The attached programs and handles on their maps. The libbpf objects are
/// dropped after attach: links and map fds keep everything alive, and the
/// ELF images stop costing memory.
#[derive(Debug)]
pub struct Probes {
    pub mode: AttachMode,
    pub attached_at: SystemTime,
    pub programs: Vec<Program>,
    readers: Vec<Box<dyn Reader>>,
    workload_maps: Option<WorkloadMaps>,
    _links: Mutex<Vec<Link>>,
    _stats: Option<OwnedFd>,
}

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
        let stats = opts
            .stats
            .then(|| {
                kernel::enable_stats().map_err(|e| tracing::warn!("BPF run-time statistics unavailable: {e}")).ok()
            })
            .flatten();
        let mut ctx = Attach {
            mode,
            support,
            opts,
            bounds: *buckets::kernel_bounds(),
            disable,
            programs: Vec::new(),
            links: Vec::new(),
            workload_maps: Vec::new(),
        };
        let mut readers = Vec::new();
        for f in FAMILIES {
            readers.push((f.attach)(&mut ctx)?);
        }
        if ctx.links.is_empty() {
            bail!(
                "no BPF program could be attached: {}",
                ctx.programs.iter().filter_map(|p| p.error.as_deref()).collect::<Vec<_>>().join("; ")
            );
        }
        Ok(Probes {
            mode,
            attached_at: SystemTime::now(),
            programs: ctx.programs,
            readers,
            workload_maps: opts.workload_entries.map(|entries| WorkloadMaps { maps: ctx.workload_maps, entries }),
            _links: Mutex::new(ctx.links),
            _stats: stats,
        })
    }

    /// The per-workload maps, when attached with them.
    pub fn take_workload_maps(&mut self) -> Option<WorkloadMaps> {
        self.workload_maps.take()
    }

    /// The kernel's statistics of each program meant to run (see
    /// [`Program::wanted`]): (name, attached, stats).
    pub fn program_stats(&self) -> std::io::Result<Vec<(&'static str, bool, ProgStats)>> {
        self.programs
            .iter()
            .filter(|p| p.wanted)
            .map(|p| Ok((p.name, p.attached, p.fd.as_ref().map(reader::prog_stats).transpose()?.unwrap_or_default())))
            .collect()
    }

    /// Reads every histogram and counter. Cheap (a few dozen syscalls) and
    /// safe to call from any thread while the programs run.
    pub fn snapshot(&self) -> std::io::Result<Snapshot> {
        let mut buf = Vec::new();
        let mut s = Snapshot::default();
        let mut drops = [0; DROP_REASONS.len()];
        for r in &self.readers {
            r.read(&mut s, &mut drops, &mut buf)?;
        }
        common_families(&mut s, &self.program_stats()?, drops);
        Ok(s)
    }
}

/// What [`Probes::snapshot`] returns, without a kernel: every family's
/// [`ProbeFamily::example`] with `h`, each program attached with `stats`.
pub fn example_snapshot(h: &Histogram, stats: ProgStats) -> Snapshot {
    let mut s = Snapshot::default();
    for f in FAMILIES {
        (f.example)(h, &mut s);
    }
    let programs: Vec<_> = program_names().map(|n| (n, true, stats)).collect();
    common_families(&mut s, &programs, [0; DROP_REASONS.len()]);
    s
}

/// The families every probe family shares: program statistics and drops.
fn common_families(s: &mut Snapshot, programs: &[(&'static str, bool, ProgStats)], drops: [u64; DROP_REASONS.len()]) {
    let recursion = programs.iter().map(|(_, _, st)| st.recursion_misses).sum::<u64>();
    s.families.extend(program_families(programs));
    let counted = DROP_REASONS.iter().zip(drops).chain([(&DROP_RECURSION, recursion)]);
    s.families.push(family(
        "ksense_events_dropped",
        None,
        "Events the probes could not record, by reason.",
        Kind::Counter,
        counted.map(|(r, c)| labelled("reason", r, Value::Counter(c as f64))).collect(),
    ));
}

impl Source for Probes {
    fn snapshot(&self) -> std::io::Result<Snapshot> {
        Probes::snapshot(self)
    }
    fn started(&self) -> SystemTime {
        self.attached_at
    }
}

/// A sample with one label.
fn labelled(key: &'static str, value: &'static str, v: Value) -> Sample {
    Sample { labels: vec![(key, std::borrow::Cow::Borrowed(value))], value: v }
}

fn program_families(programs: &[(&'static str, bool, ProgStats)]) -> Vec<Family> {
    let each = |f: &dyn Fn(bool, &ProgStats) -> Value| -> Vec<Sample> {
        programs.iter().map(|(n, a, s)| labelled("program", n, f(*a, s))).collect()
    };
    vec![
        family(
            "ksense_bpf_program_attached",
            None,
            "Whether the BPF program is attached (1) or not (0).",
            Kind::Gauge,
            each(&|a, _| Value::Gauge(f64::from(u8::from(a)))),
        ),
        family(
            "ksense_bpf_program_runs",
            None,
            "Times the BPF program ran, as counted by the kernel (run_cnt) while its run statistics are on (--bpf.stats, or kernel.bpf_stats_enabled set by anyone); 0 when they are off.",
            Kind::Counter,
            each(&|_, s| Value::Counter(s.run_cnt as f64)),
        ),
        family(
            "ksense_bpf_program_run",
            Some(Unit::Seconds),
            "Time the BPF program ran, as counted by the kernel (run_time_ns) while its run statistics are on (--bpf.stats, or kernel.bpf_stats_enabled set by anyone); 0 when they are off.",
            Kind::Counter,
            each(&|_, s| Value::Counter(s.run_time_ns as f64 / 1e9)),
        ),
    ]
}

fn hist_hash(map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<HistHash> {
    Ok(HistHash::new(map.as_fd().try_clone_to_owned()?, map.value_size() as usize)?)
}

fn percpu(map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<PercpuArray> {
    let fd = map.as_fd().try_clone_to_owned()?;
    Ok(PercpuArray::new(fd, map.value_size() as usize, map.max_entries())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(name: &'static str, attached: bool, wanted: bool, error: Option<&str>) -> Program {
        Program { name, attached, wanted, fd: None, error: error.map(str::to_string) }
    }

    #[test]
    fn strict_refuses_a_wanted_program_that_did_not_attach_only() {
        let ok = program("sched_switch", true, true, None);
        let disabled = program("kfree_skb", false, false, Some("kfree_skb: disabled by --bpf.disable"));
        let replaced = program("sock_recv_length", false, false, Some("sock_recv_length: sys_exit stands in"));
        assert_eq!(strict_refusal(&[ok, disabled, replaced]), None);
        let ok = program("sched_switch", true, true, None);
        let missing = program("tcp_probe", false, true, Some("tcp_probe: tracepoint missing from this kernel"));
        let disabled = program("kfree_skb", false, false, Some("kfree_skb: disabled by --bpf.disable"));
        assert_eq!(
            strict_refusal(&[ok, missing, disabled]).as_deref(),
            Some("--strict: 1 of 2 BPF programs not attached (tcp_probe: tracepoint missing from this kernel)")
        );
    }
}
