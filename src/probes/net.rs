//! The network family (bpf/net.bpf.c): TCP round-trip time, TCP
//! retransmissions by kind, and packet drops by the kernel's drop reason.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use anyhow::Context;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, OpenObject};

use super::reader::PercpuArray;
use super::{labelled, on, percpu, skel, Attach, ProbeFamily, Reader, DROP_REASONS};
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, one, Kind, Sample, Unit, Value};
use crate::signals::Snapshot;

/// The model's signals: one histogram, three counters (events, read as `rate`).
pub const RTT_SIGNAL: &str = "tcp_rtt";
pub const RETRANSMIT_SIGNAL: &str = "tcp_retransmit";
/// Only the retransmissions an RTO sent: each one stalled its connection for
/// at least the minimum RTO (200 ms), where a fast retransmit costs about one
/// round trip; the total cannot tell a costly loss from a cheap one.
pub const RETRANSMIT_TIMEOUT_SIGNAL: &str = "tcp_retransmit_timeout";
pub const DROP_SIGNAL: &str = "skb_drop";

pub const FAMILY: ProbeFamily = ProbeFamily {
    programs: &[on("tcp_probe"), on("tcp_retransmit_skb"), on("kfree_skb")],
    signals: || [RTT_SIGNAL, RETRANSMIT_SIGNAL, RETRANSMIT_TIMEOUT_SIGNAL, DROP_SIGNAL].map(String::from).to_vec(),
    counters: &[RETRANSMIT_SIGNAL, RETRANSMIT_TIMEOUT_SIGNAL, DROP_SIGNAL],
    attach,
    example: |h, out| {
        let names = drop_names_from(&[(2, "SKB_DROP_REASON_NOT_SPECIFIED".into())]);
        let mut drops = vec![0; DROP_SLOTS];
        drops[2] = h.count();
        emit(out, h.clone(), [h.count(); RETRANSMIT_KINDS.len()], &drops, &names)
    },
};

/// Retransmission kinds in `enum ks_retrans` order (a test checks it).
pub const RETRANSMIT_KINDS: [&str; 3] = ["timeout", "fast", "probe"];
/// The index of `timeout` in [`RETRANSMIT_KINDS`].
const TIMEOUT: usize = skel::net::types::ks_retrans::RETRANS_TIMEOUT.0 as usize;
/// The counters' words in an RTT slot's line (`enum ks_net_count`).
const COUNT_RETRANS: usize = skel::net::types::ks_net_count::NET_COUNT_RETRANS.0 as usize;
const COUNT_DROPS: usize = skel::net::types::ks_net_count::NET_COUNT_DROPS.0 as usize;

/// `KS_DROP_SLOTS` of bpf/net.bpf.c: reason r in slot r, the last slot for
/// the reasons past it.
const DROP_SLOTS: usize = 512;
/// The label of drops whose reason has no name of its own here.
pub const OTHER_REASON: &str = "other";
const REASON_PREFIX: &str = "SKB_DROP_REASON_";

#[derive(Debug)]
struct Net {
    rtt: PercpuArray,
    retrans: PercpuArray,
    drops: PercpuArray,
    /// This object's own ks_drops (a per-workload map that was full).
    events_dropped: PercpuArray,
    /// The label of each slot; None: not a drop (SKB_CONSUMED, ...).
    reasons: Vec<Option<Cow<'static, str>>>,
}

fn attach(ctx: &mut Attach<'_>) -> anyhow::Result<Box<dyn Reader>> {
    let mut obj = MaybeUninit::<OpenObject>::uninit();
    let mut open = skel::net::NetSkelBuilder::default().open(&mut obj).context("opening the net BPF object")?;
    let rodata = open.maps.rodata_data.as_deref_mut().context("net rodata")?;
    rodata.ks_bounds = ctx.bounds;
    rodata.ks_workloads = ctx.opts.workload_entries.is_some();
    ctx.size_workload_map(&mut open.maps.cg_tcp_rtt)?;
    ctx.size_workload_map(&mut open.maps.cg_tcp_retrans)?;
    ctx.size_workload_map(&mut open.maps.cg_skb_drops)?;
    let m = &mut open.maps;
    let slots = [&mut m.cg_tcp_rtt_slot_ids, &mut m.cg_tcp_rtt_slot_owners, &mut m.cg_tcp_rtt_slots];
    let size = ctx.size_slots(slots, super::slots::NET_SLOTS)?;
    open.maps.rodata_data.as_deref_mut().context("net rodata")?.ks_slot_cpus = size.cpus;
    let p = &mut open.progs;
    ctx.select("tcp_probe", &mut p.tp_tcp_probe, &mut p.raw_tcp_probe);
    ctx.select("tcp_retransmit_skb", &mut p.tp_tcp_retransmit_skb, &mut p.raw_tcp_retransmit_skb);
    ctx.select("kfree_skb", &mut p.tp_kfree_skb, &mut p.raw_kfree_skb);
    let sk = open.load().context("loading the net BPF programs")?;
    let p = &sk.progs;
    ctx.attach("tcp_probe", &p.tp_tcp_probe, &p.raw_tcp_probe);
    ctx.attach("tcp_retransmit_skb", &p.tp_tcp_retransmit_skb, &p.raw_tcp_retransmit_skb);
    ctx.attach("kfree_skb", &p.tp_kfree_skb, &p.raw_kfree_skb);
    // One fact in two languages: a mismatch would name the wrong slots.
    anyhow::ensure!(
        sk.maps.skb_drops.value_size() as usize == DROP_SLOTS * 8,
        "bpf/net.bpf.c's KS_DROP_SLOTS is not net.rs's DROP_SLOTS ({})",
        DROP_SLOTS
    );
    ctx.workload_map("ksense_workload_tcp_rtt", Some(Unit::Seconds), "TCP round-trip time of each workload's sockets (by the socket's cgroup), for the exported workloads; the rest are summed in workload=\"other\".", &sk.maps.cg_tcp_rtt)?;
    let slots = ctx.workload_slots(
        &sk.maps.cg_tcp_rtt_slot_ids,
        &sk.maps.cg_tcp_rtt_slot_owners,
        &sk.maps.cg_tcp_rtt_slots,
        size,
    )?;
    ctx.workload_map("ksense_workload_tcp_retransmits", None, "TCP segments each workload's sockets retransmitted (by the socket's cgroup), for the exported workloads; the rest are summed in workload=\"other\".", &sk.maps.cg_tcp_retrans)?;
    // The counters of cgroups with an RTT slot are in its line (bpf/net.bpf.c).
    if let Some(s) = &slots {
        ctx.workload_slot_count(s, COUNT_RETRANS);
    }
    ctx.workload_map("ksense_workload_skb_drops", None, "Packets of each workload's sockets the kernel dropped (those whose socket was known at the drop), for the exported workloads; the rest are summed in workload=\"other\".", &sk.maps.cg_skb_drops)?;
    if let Some(s) = &slots {
        ctx.workload_slot_count(s, COUNT_DROPS);
    }
    Ok(Box::new(Net {
        rtt: percpu(&sk.maps.tcp_rtt_hist)?,
        retrans: percpu(&sk.maps.tcp_retrans)?,
        drops: percpu(&sk.maps.skb_drops)?,
        events_dropped: percpu(&sk.maps.ks_drops)?,
        reasons: drop_names()?,
    }))
}

/// The running kernel's drop reasons, from its BTF (`enum skb_drop_reason`),
/// never from a table compiled from another kernel's headers: the values
/// move between versions.
fn drop_names() -> anyhow::Result<Vec<Option<Cow<'static, str>>>> {
    use libbpf_rs::btf::types::Enum;
    let btf = libbpf_rs::btf::Btf::from_vmlinux().context("reading the kernel's BTF for its drop reasons")?;
    let Some(e) = btf.type_by_name::<Enum<'_>>("skb_drop_reason") else {
        // Before Linux 5.17 drops have no reason: all of them are `other`.
        return Ok(drop_names_from(&[]));
    };
    let members: Vec<(i64, String)> = e.iter().filter_map(|m| Some((m.value, m.name?.to_str()?.to_string()))).collect();
    Ok(drop_names_from(&members))
}

/// Slot labels from (value, enumerator name): `SKB_DROP_REASON_X` labels
/// slot value as `X`; values that are not drops (`SKB_NOT_DROPPED_YET`,
/// `SKB_CONSUMED`) and markers (`_MAX`, `_SUBSYS_MASK`) are left out;
/// the last slot and unnamed slots are `other`.
fn drop_names_from(members: &[(i64, String)]) -> Vec<Option<Cow<'static, str>>> {
    let mut v: Vec<Option<Cow<'static, str>>> = vec![Some(Cow::Borrowed(OTHER_REASON)); DROP_SLOTS];
    for (value, name) in members {
        let Ok(slot) = usize::try_from(*value) else { continue };
        if slot >= DROP_SLOTS - 1 {
            continue;
        }
        v[slot] = match name.strip_prefix(REASON_PREFIX) {
            Some("MAX" | "SUBSYS_MASK") => continue,
            Some(r) => Some(Cow::Owned(r.to_string())),
            None => None, // SKB_NOT_DROPPED_YET, SKB_CONSUMED: not drops
        };
    }
    v
}

impl Reader for Net {
    fn read(
        &self,
        out: &mut Snapshot,
        dropped: &mut [u64; DROP_REASONS.len()],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.events_dropped.add_counters(dropped, buf)?;
        let rtt = self.rtt.histogram(0, buf)?;
        let mut retrans = [0; RETRANSMIT_KINDS.len()];
        self.retrans.add_counters(&mut retrans, buf)?;
        let drops = self.drops.counters(0, buf)?;
        emit(out, rtt, retrans, &drops, &self.reasons);
        Ok(())
    }
}

/// A count as a signal: events in the zero bucket, so that the model's
/// `rate` reads it (its other statistics are refused for counters).
fn counter_signal(n: u64) -> Histogram {
    let mut h = Histogram::default();
    h.slots[0] = n;
    h
}

fn emit(
    out: &mut Snapshot,
    rtt: Histogram,
    retrans: [u64; RETRANSMIT_KINDS.len()],
    drops: &[u64],
    reasons: &[Option<Cow<'static, str>>],
) {
    // Reasons that never dropped have no series: the set stays small and bounded by the enum.
    let mut by_reason: Vec<(Cow<'static, str>, u64)> = Vec::new();
    for (n, name) in drops.iter().zip(reasons) {
        let (Some(name), true) = (name, *n > 0) else { continue };
        match by_reason.iter_mut().find(|(r, _)| r == name) {
            Some((_, c)) => *c += n,
            None => by_reason.push((name.clone(), *n)),
        }
    }
    by_reason.sort();
    let total_drops = by_reason.iter().map(|(_, n)| n).sum();
    out.signals.extend([
        (RTT_SIGNAL.into(), rtt.clone()),
        (RETRANSMIT_SIGNAL.into(), counter_signal(retrans.iter().sum())),
        (RETRANSMIT_TIMEOUT_SIGNAL.into(), counter_signal(retrans[TIMEOUT])),
        (DROP_SIGNAL.into(), counter_signal(total_drops)),
    ]);
    out.families.extend([
        family(
            "ksense_tcp_rtt",
            Some(Unit::Seconds),
            "TCP round-trip time: the kernel's raw RTT sample of each ACK that acknowledged new data (tp->rack.rtt_us), over all TCP sockets.",
            Kind::Histogram,
            one(Value::Histogram(rtt)),
        ),
        family(
            "ksense_tcp_retransmits",
            None,
            "TCP segments retransmitted (as the kernel's TcpRetransSegs counts them), by kind: timeout (after an RTO), fast (fast retransmit or RACK recovery), probe (tail-loss probe).",
            Kind::Counter,
            RETRANSMIT_KINDS.iter().zip(retrans).map(|(k, n)| labelled("kind", k, Value::Counter(n as f64))).collect(),
        ),
        family(
            "ksense_skb_drops",
            None,
            "Packets the kernel dropped (kfree_skb), by drop reason as the running kernel names it (enum skb_drop_reason without its SKB_DROP_REASON_ prefix); reasons that never dropped have no series.",
            Kind::Counter,
            by_reason
                .into_iter()
                .map(|(r, n)| Sample { labels: vec![("reason", r)], value: Value::Counter(n as f64) })
                .collect(),
        ),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    // `enum ks_retrans` of bpf/net.bpf.c, as the skeleton generates it.
    use skel::net::types::ks_retrans as R;

    #[test]
    fn retransmit_kinds_follow_the_c_enum() {
        assert_eq!(RETRANSMIT_KINDS.len(), R::RETRANS_MAX.0 as usize);
        for (kind, v) in [("timeout", R::RETRANS_TIMEOUT), ("fast", R::RETRANS_FAST), ("probe", R::RETRANS_PROBE)] {
            assert_eq!(RETRANSMIT_KINDS[v.0 as usize], kind);
        }
    }

    /// The counters fit in the spare words of a slot's line, after the histogram.
    #[test]
    fn the_counters_fit_in_a_lines_spare_words() {
        use super::super::slots::{LINE, LINE_COUNTS};
        use skel::net::types::ks_net_count as C;
        assert!(C::NET_COUNT_MAX.0 as usize <= LINE_COUNTS && COUNT_RETRANS != COUNT_DROPS);
        assert_eq!(std::mem::size_of::<skel::net::types::ks_whist_line>(), LINE * 8);
        assert_eq!(std::mem::size_of::<skel::net::types::ks_whist>(), (LINE - LINE_COUNTS) * 8);
    }

    #[test]
    fn the_timeout_signal_counts_only_rto_retransmissions() {
        let mut out = Snapshot::default();
        emit(&mut out, Histogram::default(), [3, 5, 7], &[], &[]);
        let count = |n: &str| out.signals.iter().find(|(s, _)| s == n).map(|(_, h)| h.count());
        assert_eq!(count(RETRANSMIT_SIGNAL), Some(15));
        assert_eq!(count(RETRANSMIT_TIMEOUT_SIGNAL), Some(3));
    }

    #[test]
    fn drop_names_come_from_the_enum_and_leave_out_what_is_no_drop() {
        let m = [
            (0, "SKB_NOT_DROPPED_YET".to_string()),
            (1, "SKB_CONSUMED".into()),
            (2, "SKB_DROP_REASON_NOT_SPECIFIED".into()),
            (12, "SKB_DROP_REASON_NETFILTER_DROP".into()),
            (128, "SKB_DROP_REASON_MAX".into()),
            (0xffff0000, "SKB_DROP_REASON_SUBSYS_MASK".into()),
            (9999, "SKB_DROP_REASON_FAR".into()),
        ];
        let v = drop_names_from(&m);
        assert_eq!((v[0].as_deref(), v[1].as_deref()), (None, None));
        assert_eq!(v[2].as_deref(), Some("NOT_SPECIFIED"));
        assert_eq!(v[12].as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(v[128].as_deref(), Some(OTHER_REASON), "a marker is no reason");
        assert_eq!(v[DROP_SLOTS - 1].as_deref(), Some(OTHER_REASON));
    }

    #[test]
    fn drops_merge_by_label_and_skip_what_is_no_drop() {
        let names = drop_names_from(&[(1, "SKB_CONSUMED".into()), (12, "SKB_DROP_REASON_NETFILTER_DROP".into())]);
        let mut drops = vec![0; DROP_SLOTS];
        (drops[1], drops[12], drops[300], drops[DROP_SLOTS - 1]) = (50, 7, 2, 3);
        let mut s = Snapshot::default();
        emit(&mut s, Histogram::default(), [1, 2, 3], &drops, &names);
        let f = s.families.iter().find(|f| f.name == "ksense_skb_drops").unwrap();
        let got: Vec<_> = f
            .samples
            .iter()
            .map(|x| match x.value {
                Value::Counter(c) => (x.labels[0].1.to_string(), c),
                _ => panic!("not a counter"),
            })
            .collect();
        assert_eq!(got, [("NETFILTER_DROP".into(), 7.0), ("other".into(), 5.0)]);
        assert_eq!(s.signal(DROP_SIGNAL).unwrap().count(), 12);
        assert_eq!(s.signal(RETRANSMIT_SIGNAL).unwrap().count(), 6);
    }

    /// The running kernel names its reasons (not only `other`).
    #[test]
    fn this_kernel_names_netfilter_drops() {
        if !std::path::Path::new(super::super::kernel::BTF_PATH).exists() {
            eprintln!("SKIP: no kernel BTF");
            return;
        }
        let v = drop_names().unwrap();
        assert!(v.iter().any(|n| n.as_deref() == Some("NETFILTER_DROP")), "{v:?}");
    }
}
