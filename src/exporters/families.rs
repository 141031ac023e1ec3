//! The one definition of every metric ksense exports. The Prometheus
//! encoders and the OTLP exporter all walk these families, so names, units,
//! help and labels cannot drift apart between them.

use std::borrow::Cow;

use crate::probes::{KernelSnapshot, SOFTIRQ_VECTORS};
use crate::signals::histogram::Histogram;
use crate::workloads::{Pair, View};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

#[derive(Clone, Debug)]
pub enum Value {
    Gauge(f64),
    Counter(f64),
    Histogram(Histogram),
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: Vec<(&'static str, Cow<'static, str>)>,
    pub value: Value,
}

/// A metric family. `name` excludes the unit and `_total` suffixes, which
/// each encoder adds as its format wants (Prometheus: `_seconds`, `_total`;
/// OTLP: unit `s`).
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub unit: Option<Unit>,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
}

impl Unit {
    /// Prometheus suffix.
    pub fn prometheus(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
        }
    }
    /// UCUM, as OTLP wants it; the OTLP -> Prometheus translation maps it back.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
        }
    }
}

impl Family {
    /// The full Prometheus name of the family's samples (`_total` included
    /// for counters, as in the text format's TYPE line).
    pub fn prometheus_name(&self) -> String {
        let mut n = self.name.to_string();
        if let Some(u) = self.unit {
            n.push('_');
            n.push_str(u.prometheus());
        }
        if self.kind == Kind::Counter {
            n.push_str("_total");
        }
        n
    }
}

/// What the model publishes each interval (plain data: the exporters do not
/// depend on the model's internals).
#[derive(Clone, Debug, Default)]
pub struct ModelView {
    pub ready: bool,
    pub samples: usize,
    /// Present once a score exists; absent while calibrating or without data.
    pub score: Option<Score>,
    /// Current feature values (seconds), by signal name.
    pub signals: Vec<(String, f64)>,
    /// Baseline saves that failed (full or read-only disk...), since start.
    pub save_failures: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Score {
    pub friction: f64,
    pub direction: f64,
    pub energy: f64,
    pub energy_window: f64,
    pub contributions: Vec<(String, f64)>,
}

/// OTLP export attempts so far, by result; present only when OTLP push is on
/// (a Prometheus-only install has no use for a pair of zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtlpExports {
    pub success: u64,
    pub failure: u64,
}

/// Static facts about this process.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub version: &'static str,
    pub kernel: String,
    pub attach_mode: &'static str,
}

fn one(value: Value) -> Vec<Sample> {
    vec![Sample { labels: Vec::new(), value }]
}

fn family(name: &'static str, unit: Option<Unit>, help: &'static str, kind: Kind, samples: Vec<Sample>) -> Family {
    Family { name, unit, help, kind, samples }
}

/// Every family, in exposition order. Non-finite gauge values are dropped:
/// ksense never serves NaN or ±Inf.
pub fn build(
    k: &KernelSnapshot,
    model: Option<&ModelView>,
    info: &BuildInfo,
    otlp: Option<OtlpExports>,
) -> Vec<Family> {
    let mut out = vec![
        family("ksense_runqueue_latency", Some(Unit::Seconds), "Time tasks spent runnable, waiting in a run queue, before running (wakeup or preemption to switch-in).", Kind::Histogram, one(Value::Histogram(k.runqueue.clone()))),
        family("ksense_runqueue_wakeup_latency", Some(Unit::Seconds), "The run-queue waits that began at a wakeup (or a new task): what a thread that slept, e.g. waiting for a request, waits before it runs. Part of ksense_runqueue_latency_seconds.", Kind::Histogram, one(Value::Histogram(k.runqueue_wakeup.clone()))),
        family("ksense_dstate_duration", Some(Unit::Seconds), "Time tasks spent in uninterruptible sleep (D state), from switch-out to wakeup.", Kind::Histogram, one(Value::Histogram(k.dstate.clone()))),
        family(
            "ksense_softirq_duration",
            Some(Unit::Seconds),
            "Time spent handling softirqs, per vector.",
            Kind::Histogram,
            k.softirq.iter().zip(SOFTIRQ_VECTORS).map(|(h, v)| Sample { labels: vec![("vector", Cow::Borrowed(v))], value: Value::Histogram(h.clone()) }).collect(),
        ),
        family(
            "ksense_bpf_program_attached",
            None,
            "Whether the BPF program is attached (1) or not (0).",
            Kind::Gauge,
            k.programs.iter().map(|(n, a, _)| Sample { labels: vec![("program", Cow::Borrowed(*n))], value: Value::Gauge(f64::from(u8::from(*a))) }).collect(),
        ),
        family(
            "ksense_bpf_program_runs",
            None,
            "Times the BPF program ran, as counted by the kernel (run_cnt).",
            Kind::Counter,
            k.programs.iter().map(|(n, _, s)| Sample { labels: vec![("program", Cow::Borrowed(*n))], value: Value::Counter(s.run_cnt as f64) }).collect(),
        ),
        family(
            "ksense_bpf_program_run",
            Some(Unit::Seconds),
            "Time the BPF program ran, as counted by the kernel (run_time_ns).",
            Kind::Counter,
            k.programs.iter().map(|(n, _, s)| Sample { labels: vec![("program", Cow::Borrowed(*n))], value: Value::Counter(s.run_time_ns as f64 / 1e9) }).collect(),
        ),
        family(
            "ksense_events_dropped",
            None,
            "Events the probes could not record, by reason.",
            Kind::Counter,
            k.dropped.iter().map(|(r, c)| Sample { labels: vec![("reason", Cow::Borrowed(*r))], value: Value::Counter(*c as f64) }).collect(),
        ),
        family(
            "ksense_build_info",
            None,
            "ksense version, kernel release and attach mode; always 1.",
            Kind::Gauge,
            vec![Sample {
                labels: vec![("version", Cow::Borrowed(info.version)), ("kernel", Cow::Owned(info.kernel.clone())), ("attach", Cow::Borrowed(info.attach_mode))],
                value: Value::Gauge(1.0),
            }],
        ),
    ];
    if let Some(o) = otlp {
        out.push(family(
            "ksense_otlp_exports",
            None,
            "OTLP export attempts, by result (failure: refused, unreachable or timed out).",
            Kind::Counter,
            [("success", o.success), ("failure", o.failure)]
                .into_iter()
                .map(|(r, c)| Sample { labels: vec![("result", Cow::Borrowed(r))], value: Value::Counter(c as f64) })
                .collect(),
        ));
    }
    if let Some(w) = &k.workloads {
        out.extend(workload_families(w));
    }
    if let Some(m) = model {
        out.extend(model_families(m));
    }
    for f in &mut out {
        f.samples.retain(|s| match s.value {
            Value::Gauge(v) | Value::Counter(v) => v.is_finite(),
            Value::Histogram(_) => true,
        });
    }
    out
}

/// Per-workload histograms: one series per exported workload (labelled with
/// its cgroup path and what the path says), plus `workload="other"`.
fn workload_families(w: &View) -> Vec<Family> {
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

fn model_families(m: &ModelView) -> Vec<Family> {
    let labelled = |v: &[(String, f64)]| -> Vec<Sample> {
        v.iter()
            .map(|(s, x)| Sample { labels: vec![("signal", Cow::Owned(s.clone()))], value: Value::Gauge(*x) })
            .collect()
    };
    let mut out = vec![
        family("ksense_baseline_ready", None, "1 once the baseline is calibrated and frozen, 0 while calibrating.", Kind::Gauge, one(Value::Gauge(f64::from(u8::from(m.ready))))),
        family("ksense_baseline_samples", None, "Samples in the baseline (collected so far while calibrating).", Kind::Gauge, one(Value::Gauge(m.samples as f64))),
        family("ksense_signal", None, "Current value of each model feature, in seconds.", Kind::Gauge, labelled(&m.signals)),
        family("ksense_state_save_failures", None, "Times saving the baseline to the state file failed (e.g. full or read-only disk); it is retried at the next change and at shutdown.", Kind::Counter, one(Value::Counter(m.save_failures as f64))),
    ];
    if let Some(s) = &m.score {
        out.extend([
            family(
                "ksense_friction",
                None,
                "Mahalanobis distance of the current features from the baseline.",
                Kind::Gauge,
                one(Value::Gauge(s.friction)),
            ),
            family(
                "ksense_direction",
                None,
                "+1 when the node is worse than its baseline, -1 when better.",
                Kind::Gauge,
                one(Value::Gauge(s.direction)),
            ),
            family(
                "ksense_energy",
                None,
                "Short-term instability of friction: mean |change| over the adaptive window.",
                Kind::Gauge,
                one(Value::Gauge(s.energy)),
            ),
            family(
                "ksense_energy_window",
                None,
                "Intervals in the adaptive energy window.",
                Kind::Gauge,
                one(Value::Gauge(s.energy_window)),
            ),
            family(
                "ksense_friction_contribution",
                None,
                "Each feature's contribution to friction squared; they sum to friction squared.",
                Kind::Gauge,
                labelled(&s.contributions),
            ),
        ]);
    }
    out
}
