//! The softirq family (bpf/softirq.bpf.c): time spent handling each vector.

use std::mem::MaybeUninit;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::OpenObject;

use super::reader::PercpuArray;
use super::{labelled, on, percpu, skel, Attach, ProbeFamily, Reader, DROP_REASONS};
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, Kind, Unit, Value};
use crate::signals::Snapshot;

/// Softirq vectors in kernel order, named as node_exporter names them; the
/// model's signals are `softirq_<name in lower case>`.
pub const SOFTIRQ_VECTORS: [&str; 10] =
    ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];

pub const FAMILY: ProbeFamily = ProbeFamily {
    programs: &[on("softirq_entry"), on("softirq_exit")],
    signals: || SOFTIRQ_VECTORS.iter().map(|v| signal(v)).collect(),
    counters: &[],
    attach,
    example: |h, out| emit(out, vec![h.clone(); SOFTIRQ_VECTORS.len()]),
};

fn signal(vector: &str) -> String {
    format!("softirq_{}", vector.to_ascii_lowercase())
}

#[derive(Debug)]
struct Softirq {
    hists: PercpuArray,
}

fn attach(ctx: &mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>> {
    let mut obj = MaybeUninit::<OpenObject>::uninit();
    let mut open =
        skel::softirq::SoftirqSkelBuilder::default().open(&mut obj).context("opening the softirq BPF object")?;
    open.maps.rodata_data.as_deref_mut().context("softirq rodata")?.ks_bounds = ctx.bounds;
    let p = &mut open.progs;
    ctx.select("softirq_entry", &mut p.tp_softirq_entry, &mut p.raw_softirq_entry);
    ctx.select("softirq_exit", &mut p.tp_softirq_exit, &mut p.raw_softirq_exit);
    let sk = open.load().context("loading the softirq BPF programs")?;
    let p = &sk.progs;
    ctx.attach("softirq_entry", &p.tp_softirq_entry, &p.raw_softirq_entry);
    ctx.attach("softirq_exit", &p.tp_softirq_exit, &p.raw_softirq_exit);
    Ok(Box::new(Softirq { hists: percpu(&sk.maps.softirq_hists)? }))
}

impl Reader for Softirq {
    /// softirq.bpf.c records no drops.
    fn read(&self, out: &mut Snapshot, _: &mut [u64; DROP_REASONS.len()], buf: &mut Vec<u8>) -> std::io::Result<()> {
        let hists = self.hists.histograms(buf)?;
        emit(out, hists);
        Ok(())
    }
}

fn emit(out: &mut Snapshot, hists: Vec<Histogram>) {
    let mut samples = Vec::new();
    for (h, name) in hists.into_iter().zip(SOFTIRQ_VECTORS) {
        out.signals.push((signal(name), h.clone()));
        samples.push(labelled("vector", name, Value::Histogram(h)));
    }
    out.families.push(family(
        "ksense_softirq_duration",
        Some(Unit::Seconds),
        "Time spent handling softirqs, per vector.",
        Kind::Histogram,
        samples,
    ));
}
