//! The per-workload families, from the tracker's view: one for each kernel
//! map, as its probe family named it ([`WorkloadMap`]).

use std::borrow::Cow;

use super::tracker::{Record, View};
use crate::probes::WorkloadMap;
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, Family, Kind, Sample, Value};

/// Per-workload series: one per exported workload (labelled with its cgroup
/// path and what the path says), plus `workload="other"`. The ranking map
/// (the first) has a series for every exported workload; the others only
/// for workloads that had events (most never sleep in D state or retransmit).
pub fn families(w: &View, maps: &[WorkloadMap]) -> Vec<Family> {
    let empty = Histogram::workload();
    let pick = |r: &Record, i: usize| -> Histogram { r.0.get(i).unwrap_or(&empty).clone() };
    let value = |m: &WorkloadMap, h: Histogram| {
        if m.counter {
            Value::Counter(h.count() as f64)
        } else {
            Value::Histogram(h)
        }
    };
    let mut out: Vec<Family> = maps
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut v: Vec<Sample> = w
                .series
                .iter()
                .filter(|s| i == 0 || s.hists.0.get(i).is_some_and(|h| h.count() > 0))
                .map(|s| {
                    let mut labels = vec![("workload", Cow::Owned(s.workload.clone()))];
                    labels.extend(s.labels.pairs().map(|(k, v)| (k, Cow::Owned(v.to_string()))));
                    Sample { labels, value: value(m, pick(&s.hists, i)) }
                })
                .collect();
            v.push(Sample { labels: vec![("workload", Cow::Borrowed("other"))], value: value(m, pick(&w.other, i)) });
            let kind = if m.counter { Kind::Counter } else { Kind::Histogram };
            family(m.family, m.unit, m.help, kind, v)
        })
        .collect();
    let state =
        |s: &'static str, n: usize| Sample { labels: vec![("state", Cow::Borrowed(s))], value: Value::Gauge(n as f64) };
    out.push(family(
        "ksense_workloads",
        None,
        "Workloads (cgroups) with events in the kernel maps (tracked), those with series of their own (exported) and those summed in workload=\"other\" (folded).",
        Kind::Gauge,
        vec![state("tracked", w.tracked), state("exported", w.exported), state("folded", w.folded)],
    ));
    out
}
