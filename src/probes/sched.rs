//! The sched family (bpf/sched.bpf.c): run-queue latency, split by how the
//! wait began, and D-state duration; per workload when attribution is on.

use std::mem::MaybeUninit;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::OpenObject;

use super::kernel::Support;
use super::reader::PercpuArray;
use super::{fallback_on, on, percpu, skel, Attach, ProbeFamily, Reader, SchedWaits, DROP_REASONS};
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, one, Kind, Unit, Value};
use crate::signals::Snapshot;

pub const FAMILY: ProbeFamily = ProbeFamily {
    // The wakeup programs only where waits cannot be timed at the switch alone (`sched_info`).
    programs: &[on("sched_switch"), fallback_on("sched_wakeup"), fallback_on("sched_wakeup_new")],
    signals: || ["runqueue", "runqueue_wakeup", "dstate"].map(String::from).to_vec(),
    counters: &[],
    attach,
    example: |h, out| emit(out, h.clone(), h.clone(), h.clone()),
};

// `enum ks_sched_hist` of bpf/sched.bpf.c, as the skeleton generates it.
use skel::sched::types::ks_sched_hist as H;
const HIST_RUNQ_REQUEUE: u32 = H::HIST_RUNQ_REQUEUE.0;
const HIST_DSTATE: u32 = H::HIST_DSTATE.0;
const HIST_RUNQ_WAKEUP: u32 = H::HIST_RUNQ_WAKEUP.0;

#[derive(Debug)]
struct Sched {
    hists: PercpuArray,
    drops: PercpuArray,
}

/// Whether waits can be timed from the kernel's sched_info at sched_switch
/// alone, with tp_btf programs (`btf`) or not; Err says why not.
pub fn sched_info_usable(btf: bool, s: &Support) -> Result<(), String> {
    if !btf {
        Err("it needs tp_btf programs".to_string())
    } else if let Err(e) = &s.sched_clock {
        Err(format!("it needs the scheduler's clock, and {e}"))
    } else {
        s.sched_info.clone()
    }
}

/// Whether waits are timed from the kernel's sched_info at sched_switch
/// alone; Err: `--bpf.sched-waits sched_info` asked where it cannot be.
fn sched_info_waits(ctx: &Attach<'_>) -> anyhow::Result<bool> {
    match (ctx.opts.sched_waits, sched_info_usable(ctx.btf(), ctx.support)) {
        (SchedWaits::Wakeup, _) => Ok(false),
        (SchedWaits::Auto, u) => Ok(u.is_ok()),
        (SchedWaits::SchedInfo, Ok(())) => Ok(true),
        (SchedWaits::SchedInfo, Err(e)) => anyhow::bail!("--bpf.sched-waits sched_info: unusable here: {e}"),
    }
}

fn attach(ctx: &mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>> {
    let sched_info = sched_info_waits(ctx)?;
    tracing::info!(waits = if sched_info { "sched_info" } else { "wakeup" }, "run-queue and D-state waits");
    let mut obj = MaybeUninit::<OpenObject>::uninit();
    let mut open = skel::sched::SchedSkelBuilder::default().open(&mut obj).context("opening the sched BPF object")?;
    let btf = ctx.btf();
    // Only the chosen variant's storage map is created.
    open.maps.task_ts.set_autocreate(btf)?;
    open.maps.pid_ts.set_autocreate(!btf)?;
    let rodata = open.maps.rodata_data.as_deref_mut().context("sched rodata")?;
    rodata.ks_bounds = ctx.bounds;
    rodata.ks_workloads = ctx.opts.workload_entries.is_some();
    rodata.ks_rq_clock = ctx.support.sched_clock.is_ok();
    rodata.ks_sched_info = sched_info;
    ctx.size_workload_map(&mut open.maps.cg_runq)?;
    ctx.size_workload_map(&mut open.maps.cg_dstate)?;
    let m = &mut open.maps;
    let slots = [&mut m.cg_runq_slot_ids, &mut m.cg_runq_slot_owners, &mut m.cg_runq_slots];
    let size = ctx.size_slots(slots, super::slots::RUNQ_SLOTS)?;
    open.maps.rodata_data.as_deref_mut().context("sched rodata")?.ks_slot_cpus = size.cpus;
    let p = &mut open.progs;
    ctx.select("sched_switch", &mut p.tp_sched_switch, &mut p.raw_sched_switch);
    ctx.select_fallback_pair("sched_wakeup", !sched_info, &mut p.tp_sched_wakeup, &mut p.raw_sched_wakeup);
    ctx.select_fallback_pair("sched_wakeup_new", !sched_info, &mut p.tp_sched_wakeup_new, &mut p.raw_sched_wakeup_new);
    let sk = open.load().context("loading the sched BPF programs")?;
    let p = &sk.progs;
    ctx.attach("sched_switch", &p.tp_sched_switch, &p.raw_sched_switch);
    if !sched_info {
        ctx.attach("sched_wakeup", &p.tp_sched_wakeup, &p.raw_sched_wakeup);
        ctx.attach("sched_wakeup_new", &p.tp_sched_wakeup_new, &p.raw_sched_wakeup_new);
    }
    ctx.workload_map("ksense_workload_runqueue_latency", Some(Unit::Seconds), "Run-queue latency of the tasks of each workload (cgroup), for the busiest workloads; the rest are summed in workload=\"other\".", &sk.maps.cg_runq)?;
    ctx.workload_slots(&sk.maps.cg_runq_slot_ids, &sk.maps.cg_runq_slot_owners, &sk.maps.cg_runq_slots, size)?;
    ctx.workload_map("ksense_workload_dstate_duration", Some(Unit::Seconds), "D-state (uninterruptible sleep) duration of the tasks of each workload (cgroup), for the exported workloads; the rest are summed in workload=\"other\".", &sk.maps.cg_dstate)?;
    Ok(Box::new(Sched { hists: percpu(&sk.maps.sched_hists)?, drops: percpu(&sk.maps.ks_drops)? }))
}

impl Reader for Sched {
    fn read(
        &self,
        out: &mut Snapshot,
        drops: &mut [u64; DROP_REASONS.len()],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut hs = self.hists.histograms(buf)?;
        let take = |hs: &mut Vec<Histogram>, i: u32| std::mem::take(&mut hs[i as usize]);
        let (wakeup, mut runqueue, dstate) =
            (take(&mut hs, HIST_RUNQ_WAKEUP), take(&mut hs, HIST_RUNQ_REQUEUE), take(&mut hs, HIST_DSTATE));
        runqueue.add(&wakeup);
        emit(out, runqueue, wakeup, dstate);
        // Indexed like DROP_REASONS, which a test checks against `enum ks_drop`.
        self.drops.add_counters(drops, buf)?;
        Ok(())
    }
}

fn emit(out: &mut Snapshot, runqueue: Histogram, wakeup: Histogram, dstate: Histogram) {
    out.families.extend([
        family("ksense_runqueue_latency", Some(Unit::Seconds), "Time tasks spent runnable, waiting in a run queue, before running (wakeup or preemption to switch-in).", Kind::Histogram, one(Value::Histogram(runqueue.clone()))),
        family("ksense_runqueue_wakeup_latency", Some(Unit::Seconds), "The run-queue waits that began at a wakeup (or a new task): what a thread that slept, e.g. waiting for a request, waits before it runs. Part of ksense_runqueue_latency_seconds.", Kind::Histogram, one(Value::Histogram(wakeup.clone()))),
        family("ksense_dstate_duration", Some(Unit::Seconds), "Time tasks spent in uninterruptible sleep (D state), from switch-out to wakeup.", Kind::Histogram, one(Value::Histogram(dstate.clone()))),
    ]);
    out.signals.extend([("runqueue".into(), runqueue), ("runqueue_wakeup".into(), wakeup), ("dstate".into(), dstate)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use skel::sched::types::ks_drop as D;

    /// The slots' line as user space maps it is the C struct's.
    #[test]
    fn a_slot_line_is_the_c_struct() {
        assert_eq!(std::mem::size_of::<skel::sched::types::ks_whist_line>(), super::super::slots::LINE * 8);
        assert_eq!(super::super::slots::LINE * 8 % 64, 0, "whole cache lines: no two CPUs share one");
    }

    /// DROP_REASONS names `enum ks_drop` (bpf/ksense.h) in its order.
    #[test]
    fn drop_reasons_follow_the_c_enum() {
        assert_eq!(DROP_REASONS.len(), D::KS_DROP_MAX.0 as usize);
        for (reason, v) in [
            ("task_storage", D::KS_DROP_TASK_STORAGE),
            ("map_full", D::KS_DROP_MAP_FULL),
            ("cgroup_map_full", D::KS_DROP_CGROUP_MAP_FULL),
            ("start_unseen", D::KS_DROP_START_UNSEEN),
            ("end_unseen", D::KS_DROP_END_UNSEEN),
            ("sock_storage", D::KS_DROP_SOCK_STORAGE),
        ] {
            assert_eq!(DROP_REASONS[v.0 as usize], reason);
        }
    }
}
