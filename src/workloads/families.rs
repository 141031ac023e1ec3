//! The per-workload families, from the tracker's view.

use std::borrow::Cow;

use super::tracker::{Pair, View};
use crate::signals::histogram::Histogram;
use crate::signals::metric::{family, Family, Kind, Sample, Unit, Value};

/// Per-workload histograms: one series per exported workload (labelled with
/// its cgroup path and what the path says), plus `workload="other"`.
pub fn families(w: &View) -> Vec<Family> {
    let series = |pick: fn(&Pair) -> &Histogram, skip_empty: bool| -> Vec<Sample> {
        let mut v: Vec<Sample> = w
            .series
            .iter()
            .filter(|s| !skip_empty || pick(&s.hists).count() > 0)
            .map(|s| {
                let mut labels = vec![("workload", Cow::Owned(s.workload.clone()))];
                labels.extend(s.labels.pairs().map(|(k, v)| (k, Cow::Owned(v.to_string()))));
                Sample { labels, value: Value::Histogram(pick(&s.hists).clone()) }
            })
            .collect();
        v.push(Sample {
            labels: vec![("workload", Cow::Borrowed("other"))],
            value: Value::Histogram(pick(&w.other).clone()),
        });
        v
    };
    let state =
        |s: &'static str, n: usize| Sample { labels: vec![("state", Cow::Borrowed(s))], value: Value::Gauge(n as f64) };
    vec![
        family(
            "ksense_workload_runqueue_latency",
            Some(Unit::Seconds),
            "Run-queue latency of the tasks of each workload (cgroup), for the busiest workloads; the rest are summed in workload=\"other\".",
            Kind::Histogram,
            series(|p| &p.runqueue, false),
        ),
        // Most workloads never sleep in D state: no empty series for them.
        family(
            "ksense_workload_dstate_duration",
            Some(Unit::Seconds),
            "D-state (uninterruptible sleep) duration of the tasks of each workload (cgroup), for the exported workloads; the rest are summed in workload=\"other\".",
            Kind::Histogram,
            series(|p| &p.dstate, true),
        ),
        family(
            "ksense_workloads",
            None,
            "Workloads (cgroups) with waits in the kernel maps (tracked), those with series of their own (exported) and those summed in workload=\"other\" (folded).",
            Kind::Gauge,
            vec![state("tracked", w.tracked), state("exported", w.exported), state("folded", w.folded)],
        ),
    ]
}
