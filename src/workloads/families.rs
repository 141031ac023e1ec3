//! The per-workload families, from the tracker's view: one for each kernel
//! map, as its probe family named it ([`WorkloadFamily`]).

use std::borrow::Cow;

use super::tracker::{Record, View};
use crate::probes::WorkloadFamily;
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, BucketSet, Family, Kind, Sample, Value};

/// Per-workload series: one per exported workload (labelled with its cgroup
/// path and what the path says), plus `workload="other"`. The ranking map
/// (the first) has a series for every exported workload; the others only
/// for workloads that had events (most never sleep in D state or retransmit).
pub fn families(w: &View, maps: &[WorkloadFamily]) -> Vec<Family> {
    let empty = Histogram::workload();
    let pick = |r: &Record, i: usize| -> Histogram { r.0.get(i).unwrap_or(&empty).clone() };
    let value = |m: &WorkloadFamily, h: Histogram| {
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
            Family { buckets: BucketSet::Workload, ..family(m.family, m.unit, m.help, kind, v) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::labels::Labels;
    use crate::workloads::Series;

    fn count(n: u64) -> Histogram {
        let mut h = Histogram::workload();
        h.slots[0] = n;
        h
    }

    #[test]
    fn counts_are_counters_and_empty_series_are_left_out_but_the_rankings() {
        let fam = |family, counter| WorkloadFamily { family, unit: None, help: "h", counter };
        let maps = [fam("runq", false), fam("retrans", true)];
        let series = |w: &str, rq: u64, n: u64| Series {
            workload: w.into(),
            labels: Labels::default(),
            hists: Record(vec![count(rq), count(n)]),
        };
        let view = View {
            series: vec![series("/a", 0, 5), series("/b", 3, 0)],
            other: Record(vec![count(1)]), // shorter than the maps: the rest are empty
            tracked: 3,
            exported: 2,
            folded: 1,
        };
        let fs = families(&view, &maps);
        let names: Vec<_> = fs.iter().map(|f| f.name).collect();
        assert_eq!(names, ["runq", "retrans", "ksense_workloads"]);
        let wl = |f: &Family| f.samples.iter().map(|s| s.labels[0].1.to_string()).collect::<Vec<_>>();
        assert_eq!(wl(&fs[0]), ["/a", "/b", "other"], "the ranking map: every exported workload");
        assert_eq!(wl(&fs[1]), ["/a", "other"], "/b never retransmitted");
        assert!(matches!(fs[1].kind, Kind::Counter));
        assert!(matches!(fs[1].samples[0].value, Value::Counter(c) if c == 5.0));
        assert!(matches!(fs[1].samples[1].value, Value::Counter(c) if c == 0.0));
        assert!(matches!(fs[0].samples[1].value, Value::Histogram(ref h) if h.count() == 3));
    }
}
