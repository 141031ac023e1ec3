//! The perf family (bpf/perf.bpf.c): performance counters (cycles,
//! instructions, cache misses; or software events) node-wide and per
//! workload. User space opens the counting events, one per CPU and event,
//! and reads them for the node-wide totals; with per-workload attribution
//! on, the program hands their deltas to the cgroup that ran, at each
//! switch that changes a CPU's cgroup.
//!
//! A machine without the counters (a virtual CPU without a PMU) is told
//! once, at start and in `ksense check`; the family then loads nothing and
//! serves nothing, and everything else is served as usual.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context;
use libbpf_rs::libbpf_sys as sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use super::reader::PercpuArray;
use super::{percpu, skel, Attach, Hook, ProbeFamily, Reader, WorkloadFamily, DROP_REASONS};
use crate::signals::metric::{family, one, Kind, Unit, Value};
use crate::signals::Snapshot;

/// `KS_PERF_MAX` of bpf/perf.bpf.c: events counted at once.
pub const MAX_EVENTS: usize = 4;

/// The one program: on sched_switch, beside the sched family's own.
pub const PROGRAM: &str = "perf_counters";

pub const FAMILY: ProbeFamily = ProbeFamily {
    programs: &[Hook { name: PROGRAM, tracepoint: "sched_switch", fallback: false }],
    signals: Vec::new,
    counters: &[],
    attach,
    example: |_, _| {},
};

/// A countable event, named as `perf list` names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    pub name: &'static str,
    type_: u32,
    config: u64,
    /// Needs a hardware PMU (a virtual CPU often has none).
    pub hardware: bool,
    /// Node-wide counter family; the per-workload one is `ksense_workload_` + the rest.
    pub family: &'static str,
    pub unit: Option<Unit>,
    /// Served value = count x scale (cpu-clock counts ns, served in seconds).
    pub scale: f64,
    pub help: &'static str,
}

const fn hw(name: &'static str, config: u64, family: &'static str, help: &'static str) -> Event {
    Event { name, type_: sys::PERF_TYPE_HARDWARE, config, hardware: true, family, unit: None, scale: 1.0, help }
}

const fn sw(name: &'static str, config: u64, family: &'static str, help: &'static str) -> Event {
    Event { name, type_: sys::PERF_TYPE_SOFTWARE, config, hardware: false, family, unit: None, scale: 1.0, help }
}

/// Every event `--bpf.perf-events` takes. Cycles and instructions make CPI,
/// the per-workload friction's third feature (Google's CPI2, KubeMarla).
pub const EVENTS: [Event; 8] = [
    hw("cycles", sys::PERF_COUNT_HW_CPU_CYCLES as u64, "ksense_perf_cycles", "CPU cycles"),
    hw("instructions", sys::PERF_COUNT_HW_INSTRUCTIONS as u64, "ksense_perf_instructions", "Instructions retired"),
    hw(
        "cache-misses",
        sys::PERF_COUNT_HW_CACHE_MISSES as u64,
        "ksense_perf_cache_misses",
        "Cache misses (last-level cache on most CPUs)",
    ),
    hw("branch-misses", sys::PERF_COUNT_HW_BRANCH_MISSES as u64, "ksense_perf_branch_misses", "Branch mispredictions"),
    Event {
        unit: Some(Unit::Seconds),
        scale: 1e-9,
        ..sw("cpu-clock", sys::PERF_COUNT_SW_CPU_CLOCK as u64, "ksense_perf_cpu_clock", "CPU time (software clock)")
    },
    sw(
        "context-switches",
        sys::PERF_COUNT_SW_CONTEXT_SWITCHES as u64,
        "ksense_perf_context_switches",
        "Context switches",
    ),
    sw("page-faults", sys::PERF_COUNT_SW_PAGE_FAULTS as u64, "ksense_perf_page_faults", "Page faults"),
    sw("cpu-migrations", sys::PERF_COUNT_SW_CPU_MIGRATIONS as u64, "ksense_perf_cpu_migrations", "CPU migrations"),
];

/// The events whose ratio is CPI (cycles / instructions).
pub const CPI_EVENTS: (&str, &str) = ("cycles", "instructions");

/// The default: what KubeMarla and CPI2 read, where the machine has them.
pub const DEFAULT_EVENTS: [&str; 3] = ["cycles", "instructions", "cache-misses"];

/// A set of [`EVENTS`], by index (a bit each): Copy, for [`super::Options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventSet(u32);

impl EventSet {
    /// Names as `perf list` spells them, comma separated in the flag;
    /// empty (or `none`) counts nothing.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<EventSet, String> {
        let mut set = EventSet(0);
        for n in names.iter().map(|n| n.as_ref().trim()).filter(|n| !n.is_empty() && *n != "none") {
            let i = EVENTS
                .iter()
                .position(|e| e.name == n)
                .ok_or_else(|| format!("unknown perf event {n:?} (one of {})", EVENTS.map(|e| e.name).join(", ")))?;
            set.0 |= 1 << i;
        }
        if set.len() > MAX_EVENTS {
            return Err(format!("at most {MAX_EVENTS} perf events at once, {} given", set.len()));
        }
        Ok(set)
    }

    pub fn default_set() -> EventSet {
        Self::parse(&DEFAULT_EVENTS).expect("the defaults are events")
    }

    pub fn events(self) -> impl Iterator<Item = &'static Event> {
        EVENTS.iter().enumerate().filter(move |(i, _)| self.0 & (1 << i) != 0).map(|(_, e)| e)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both cycles and instructions: the workloads' CPI can be computed.
    pub fn has_cpi(self) -> bool {
        self.events().any(|e| e.name == CPI_EVENTS.0) && self.events().any(|e| e.name == CPI_EVENTS.1)
    }
}

/// Opens `e` counting on `cpu`, every task, from now. CAP_PERFMON (or
/// CAP_SYS_ADMIN), at start: the fds are kept, nothing is opened later.
fn open(e: &Event, cpu: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain C struct of integers; zero is its documented default.
    let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = e.type_;
    attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
    attr.config = e.config;
    // What bpf_perf_event_read_value reports; scaling needs both times.
    attr.read_format = (sys::PERF_FORMAT_TOTAL_TIME_ENABLED | sys::PERF_FORMAT_TOTAL_TIME_RUNNING) as u64;
    // SAFETY: attr outlives the call; pid -1 with cpu >= 0 is a per-CPU event.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const sys::perf_event_attr,
            -1,
            cpu,
            -1,
            sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Why an event cannot be counted, in words a user can act on.
fn explain(e: &Event, err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV) if e.hardware => {
            format!("{}: not supported by this CPU (no hardware performance counters: a virtual machine without a virtual PMU?)", e.name)
        }
        Some(libc::EACCES | libc::EPERM) => {
            format!("{}: not permitted (needs CAP_PERFMON or CAP_SYS_ADMIN): {err}", e.name)
        }
        _ => format!("{}: {err}", e.name),
    }
}

/// Which of `set` this machine counts: the usable ones, and a reason for
/// each of the others (tried on CPU 0, where every machine has a CPU).
pub fn probe(set: EventSet) -> (EventSet, Vec<String>) {
    let mut ok = EventSet(0);
    let mut why = Vec::new();
    for (i, e) in EVENTS.iter().enumerate().filter(|(i, _)| set.0 & (1 << i) != 0) {
        match open(e, 0) {
            Ok(_) => ok.0 |= 1 << i,
            Err(err) => why.push(explain(e, &err)),
        }
    }
    (ok, why)
}

/// `ksense check`'s line: the default events, counted or not.
pub fn check() -> (bool, String) {
    let (ok, why) = probe(EventSet::default_set());
    if why.is_empty() {
        (true, format!("{}: ok", DEFAULT_EVENTS.join(", ")))
    } else if ok.is_empty() {
        (false, format!("{}; software events (--bpf.perf-events=cpu-clock,...) still work", why.join("; ")))
    } else {
        (false, why.join("; "))
    }
}

#[derive(Debug)]
struct Perf {
    events: Vec<&'static Event>,
    /// Each event's fd on each online CPU, read for the node-wide totals.
    fds: Vec<Vec<OwnedFd>>,
    /// What was served last, per event: a scaled estimate may dip, a counter may not.
    served: std::sync::Mutex<Vec<f64>>,
    /// The program's drops (a full per-workload map), when it is loaded.
    drops: Option<PercpuArray>,
    /// The perf event arrays' own fds: the kernel empties such an array
    /// when the file its entries were added through is closed, which
    /// dropping the skeleton would do.
    _arrays: Vec<OwnedFd>,
}

/// The online CPUs, from sysfs ("0-3,6"); an offline one cannot count.
fn online_cpus() -> Vec<i32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut v = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            v.extend(a..=b);
        }
    }
    v
}

/// `e` on every online CPU, as (cpu, fd); a CPU where it fails is logged and left out.
fn open_all(e: &Event) -> Vec<(i32, OwnedFd)> {
    online_cpus()
        .into_iter()
        .filter_map(|cpu| match open(e, cpu) {
            Ok(fd) => Some((cpu, fd)),
            Err(err) => {
                tracing::warn!(event = e.name, cpu, error = %explain(e, &err), "not counted on this CPU");
                None
            }
        })
        .collect()
}

fn attach(ctx: &mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>> {
    let wanted = ctx.opts.perf_events;
    if wanted.is_empty() {
        return Ok(Box::new(Nothing));
    }
    let (usable, why) = probe(wanted);
    if !why.is_empty() {
        tracing::warn!(unavailable = %why.join("; "), counted = usable.len(), "performance counters");
    }
    if usable.is_empty() {
        // Not a program that failed: nothing here to count (no alert, no --strict failure).
        return Ok(Box::new(Nothing));
    }
    let events: Vec<&'static Event> = usable.events().collect();
    let opened: Vec<Vec<(i32, OwnedFd)>> = events.iter().map(|e| open_all(e)).collect();
    // The program only hands the counts to workloads: disabled, the node-wide
    // counts go on (--bpf.perf-events none stops those) and no workload series
    // sits at 0 for ever.
    let disabled = ctx.disable.contains(&PROGRAM);
    if disabled {
        tracing::info!("{PROGRAM} disabled: node-wide counts only (--bpf.perf-events none turns those off)");
    }
    let (drops, arrays) = if ctx.opts.workload_entries.is_some() && !disabled {
        attribute(ctx, &events, &opened)?
    } else {
        (None, Vec::new())
    };
    tracing::info!(events = %events.iter().map(|e| e.name).collect::<Vec<_>>().join(","), per_workload = drops.is_some(), "performance counters on");
    Ok(Box::new(Perf {
        served: std::sync::Mutex::new(vec![0.0; events.len()]),
        events,
        fds: opened.into_iter().map(|v| v.into_iter().map(|(_, fd)| fd).collect()).collect(),
        drops,
        _arrays: arrays,
    }))
}

/// Loads and attaches the program that hands the counts to the workloads.
fn attribute(
    ctx: &mut Attach<'_>,
    events: &[&'static Event],
    opened: &[Vec<(i32, OwnedFd)>],
) -> anyhow::Result<(Option<PercpuArray>, Vec<OwnedFd>)> {
    let mut obj = MaybeUninit::<OpenObject>::uninit();
    let mut open_skel = skel::perf::PerfSkelBuilder::default().open(&mut obj).context("opening the perf BPF object")?;
    let rodata = open_skel.maps.rodata_data.as_deref_mut().context("perf rodata")?;
    rodata.ks_perf_n = events.len() as u32;
    rodata.ks_workloads = true;
    let m = &mut open_skel.maps;
    for map in [&mut m.cg_perf0, &mut m.cg_perf1, &mut m.cg_perf2, &mut m.cg_perf3] {
        ctx.size_workload_map(map)?;
    }
    let p = &mut open_skel.progs;
    ctx.select(PROGRAM, &mut p.tp_perf_switch, &mut p.raw_perf_switch);
    let sk = open_skel.load().context("loading the perf BPF program")?;
    let mut arrays = Vec::new();
    let maps = [&sk.maps.perf_ev0, &sk.maps.perf_ev1, &sk.maps.perf_ev2, &sk.maps.perf_ev3];
    for ((e, fds), array) in events.iter().zip(opened).zip(maps) {
        arrays.push(array.as_fd().try_clone_to_owned()?);
        for (cpu, fd) in fds {
            array
                .update(&(*cpu as u32).to_ne_bytes(), &fd.as_raw_fd().to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("adding the {} event of CPU {cpu}", e.name))?;
        }
    }
    let p = &sk.progs;
    ctx.attach(PROGRAM, &p.tp_perf_switch, &p.raw_perf_switch);
    let cg = [&sk.maps.cg_perf0, &sk.maps.cg_perf1, &sk.maps.cg_perf2, &sk.maps.cg_perf3];
    for (e, map) in events.iter().zip(cg) {
        let f = WorkloadFamily {
            // Made once per counted event, at attach.
            family: Box::leak(workload_family(e).into_boxed_str()),
            unit: e.unit,
            help: e.help,
            counter: true,
            label: None,
            count: None,
            scale: e.scale,
        };
        ctx.workload_map_as(f, map)?;
    }
    Ok((Some(percpu(&sk.maps.ks_drops)?), arrays))
}

/// One event's count on one CPU so far, scaled for multiplexing as perf
/// scales (value x enabled / running).
fn read_scaled(fd: &OwnedFd) -> std::io::Result<f64> {
    let mut v = [0u64; 3]; // value, time enabled, time running (read_format)
                           // SAFETY: reads at most 24 bytes into v.
    let n = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 24) };
    if n != 24 {
        return Err(if n < 0 { std::io::Error::last_os_error() } else { std::io::Error::other("short perf read") });
    }
    let [value, enabled, running] = v;
    Ok(if running == 0 {
        0.0
    } else if running < enabled {
        value as f64 * enabled as f64 / running as f64
    } else {
        value as f64
    })
}

/// The per-workload family of `e`: `ksense_perf_x` -> `ksense_workload_perf_x`.
pub fn workload_family(e: &Event) -> String {
    format!("ksense_workload_{}", e.family.strip_prefix("ksense_").unwrap_or(e.family))
}

/// Nothing to count: serves nothing.
#[derive(Debug)]
struct Nothing;

impl Reader for Nothing {
    fn read(&self, _: &mut Snapshot, _: &mut [u64; DROP_REASONS.len()], _: &mut Vec<u8>) -> std::io::Result<()> {
        Ok(())
    }
}

impl Reader for Perf {
    fn read(
        &self,
        out: &mut Snapshot,
        drops: &mut [u64; DROP_REASONS.len()],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if let Some(d) = &self.drops {
            d.add_counters(drops, buf)?;
        }
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        for ((e, fds), last) in self.events.iter().zip(&self.fds).zip(served.iter_mut()) {
            let mut n = 0.0;
            for fd in fds {
                n += read_scaled(fd)?;
            }
            *last = last.max(n);
            out.families.push(family(e.family, e.unit, e.help, Kind::Counter, one(Value::Counter(*last * e.scale))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists_parse_with_clear_errors() {
        let s = EventSet::parse(&["cycles", " instructions", ""]).unwrap();
        assert_eq!(s.events().map(|e| e.name).collect::<Vec<_>>(), ["cycles", "instructions"]);
        assert!(s.has_cpi());
        assert!(EventSet::parse(&["none"]).unwrap().is_empty());
        assert!(!EventSet::parse(&["cycles", "page-faults"]).unwrap().has_cpi());
        let e = EventSet::parse(&["cycels"]).unwrap_err();
        assert!(e.contains("unknown perf event \"cycels\"") && e.contains("cache-misses"), "{e}");
        let five = ["cycles", "instructions", "cache-misses", "branch-misses", "cpu-clock"];
        assert!(EventSet::parse(&five).unwrap_err().contains("at most 4"));
        assert_eq!(EventSet::default_set().len(), DEFAULT_EVENTS.len());
    }
}
