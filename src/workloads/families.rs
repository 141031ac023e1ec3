//! The per-workload families, from the tracker's view: one for each kernel
//! map, as its probe family named it ([`WorkloadFamily`]).

use std::borrow::Cow;

use super::labels::Labels;
use super::tracker::{Record, View};
use crate::probes::WorkloadFamily;
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, BucketSet, Family, Kind, Sample, Value};

/// Per-workload series: one per exported workload (labelled with its cgroup
/// path and what the path says), plus `workload="other"`. The ranking map
/// (the first) has a series for every exported workload; the others only
/// for workloads that had events (most never sleep in D state or retransmit).
/// Maps that share a family name (told apart by their label) are one family,
/// in the order the family first appears.
pub fn families(w: &View, maps: &[WorkloadFamily]) -> Vec<Family> {
    let pick = |r: &Record, i: usize| -> Histogram { r.hist(i).into_owned() };
    let mut out: Vec<Family> = Vec::new();
    let mut push = |name, unit, help, kind, samples: Vec<Sample>| match out.iter_mut().find(|f| f.name == name) {
        Some(f) => f.samples.extend(samples),
        None => out.push(Family { buckets: BucketSet::Workload, ..family(name, unit, help, kind, samples) }),
    };
    for (i, m) in maps.iter().enumerate() {
        let sample = |workload: Cow<'static, str>, labels: &Labels, value: Value| {
            let mut l = vec![("workload", workload)];
            l.extend(labels.pairs().map(|(k, v)| (k, Cow::Owned(v.to_string()))));
            l.extend(m.label.map(|(k, v)| (k, Cow::Borrowed(v))));
            Sample { labels: l, value }
        };
        let mut hists: Vec<(Cow<'static, str>, &Labels, Histogram)> = w
            .series
            .iter()
            .filter(|s| i == 0 || s.hists.has_events(i))
            .map(|s| (Cow::Owned(s.workload.clone()), &s.labels, pick(&s.hists, i)))
            .collect();
        let none = Labels::default();
        hists.push((Cow::Borrowed("other"), &none, pick(&w.other, i)));
        let counts: Vec<Sample> = match m.count {
            Some(_) => hists.iter().map(|(w, l, h)| sample(w.clone(), l, Value::Counter(h.count() as f64))).collect(),
            None => Vec::new(),
        };
        let kind = if m.counter { Kind::Counter } else { Kind::Histogram };
        let value =
            |h: Histogram| if m.counter { Value::Counter(h.count() as f64 * m.scale) } else { Value::Histogram(h) };
        push(m.family, m.unit, m.help, kind, hists.into_iter().map(|(w, l, h)| sample(w, l, value(h))).collect());
        if let Some((name, help)) = m.count {
            push(name, None, help, Kind::Counter, counts);
        }
    }
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
    use crate::workloads::Series;

    fn count(n: u64) -> Histogram {
        let mut h = Histogram::workload();
        h.slots[0] = n;
        h
    }

    #[test]
    fn counts_are_counters_and_empty_series_are_left_out_but_the_rankings() {
        let fam = |family, counter| WorkloadFamily {
            family,
            unit: None,
            help: "h",
            counter,
            label: None,
            count: None,
            scale: 1.0,
        };
        let maps = [fam("runq", false), fam("retrans", true)];
        let series = |w: &str, rq: u64, n: u64| Series {
            workload: w.into(),
            labels: Labels::default(),
            hists: Record(vec![Some(count(rq)), Some(count(n))]).into(),
        };
        let view = View {
            series: vec![series("/a", 0, 5), series("/b", 3, 0)],
            other: Record(vec![Some(count(1))]).into(), // shorter than the maps: the rest are empty
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

    #[test]
    fn maps_of_one_family_merge_by_their_label_and_serve_their_counts() {
        let role = |r| WorkloadFamily {
            family: "req",
            unit: None,
            help: "h",
            counter: false,
            label: Some(("role", r)),
            count: Some(("reqs", "c")),
            scale: 1.0,
        };
        let first = WorkloadFamily {
            family: "runq",
            unit: None,
            help: "h",
            counter: false,
            label: None,
            count: None,
            scale: 1.0,
        };
        let maps = [first, role("server"), role("client")];
        let view = View {
            series: vec![Series {
                workload: "/a".into(),
                labels: Labels::default(),
                hists: Record(vec![Some(count(1)), Some(count(4)), Some(count(0))]).into(),
            }],
            other: Record(vec![Some(count(1)), Some(count(0)), Some(count(2))]).into(),
            tracked: 1,
            exported: 1,
            folded: 0,
        };
        let fs = families(&view, &maps);
        let names: Vec<_> = fs.iter().map(|f| f.name).collect();
        assert_eq!(names, ["runq", "req", "reqs", "ksense_workloads"]);
        let keyed = |f: &Family| {
            f.samples
                .iter()
                .map(|s| {
                    let n = match &s.value {
                        Value::Counter(c) => *c as u64,
                        Value::Histogram(h) => h.count(),
                        _ => panic!("neither"),
                    };
                    (s.labels[0].1.to_string(), s.labels.last().unwrap().1.to_string(), n)
                })
                .collect::<Vec<_>>()
        };
        let want = [
            ("/a".into(), "server".into(), 4),
            ("other".into(), "server".into(), 0),
            ("other".into(), "client".into(), 2),
        ];
        assert_eq!(keyed(&fs[1]), want, "/a made no call: no client series");
        assert_eq!(keyed(&fs[2]), want);
        assert!(matches!(fs[2].kind, Kind::Counter));
    }
}
