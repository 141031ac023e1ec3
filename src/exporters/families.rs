//! The families of the process itself (build info, OTLP exports) and of the
//! model, added to the collectors' (the probes define theirs beside the
//! programs, the per-workload tracker beside its bookkeeping).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::pipeline::ModelView;
use crate::signals::metric::{family, one, Classic, Family, Kind, Sample, Value};

/// With the threshold's value from its one home (model::MIN_MEASURED).
static SIGNAL_SAMPLES_HELP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "Calibration samples in which each feature had events. A feature with events in fewer than {} of them \
         (half of a shorter baseline) is left out of friction until the next calibration: an idle node calibrated \
         without TCP traffic has no round-trip time to compare one with.",
        crate::model::MIN_MEASURED
    )
});

/// OTLP export attempts so far, by result; present only when OTLP push is on
/// (a Prometheus-only install has no use for a pair of zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OtlpExports {
    pub success: u64,
    pub failure: u64,
}

/// `ksense_otlp_exports_total`, shared by the OTLP pusher and /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    success: AtomicU64,
    failure: AtomicU64,
}

impl Counters {
    pub fn record(&self, ok: bool) {
        let c = if ok { &self.success } else { &self.failure };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> OtlpExports {
        OtlpExports { success: self.success.load(Ordering::Relaxed), failure: self.failure.load(Ordering::Relaxed) }
    }
}

/// Static facts about this process.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub version: &'static str,
    pub kernel: String,
    pub attach_mode: &'static str,
    pub nodename: String,
}

/// The collectors' families, then the process's and the model's. Non-finite
/// gauge values are dropped: ksense never serves NaN or ±Inf.
pub fn build(
    mut out: Vec<Family>,
    model: Option<&ModelView>,
    info: &BuildInfo,
    otlp: Option<OtlpExports>,
) -> Vec<Family> {
    out.push(family(
        "ksense_build_info",
        None,
        "ksense version, kernel release and attach mode; always 1.",
        Kind::Gauge,
        vec![Sample {
            labels: vec![
                ("version", Cow::Borrowed(info.version)),
                ("kernel", Cow::Owned(info.kernel.clone())),
                ("attach", Cow::Borrowed(info.attach_mode)),
            ],
            value: Value::Gauge(1.0),
        }],
    ));
    // node_exporter's node_uname_info{nodename}: the node's name whatever
    // labels the scrape config sets, for dashboards to join on `instance`.
    out.push(family(
        "ksense_node_info",
        None,
        "The node's name (K8S_NODE_NAME, else the host name), whatever the scrape config labels; always 1.",
        Kind::Gauge,
        vec![Sample { labels: vec![("nodename", Cow::Owned(info.nodename.clone()))], value: Value::Gauge(1.0) }],
    ));
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

/// `ksense_scrape_series`: the series this scrape serves in the text formats
/// (a histogram is its classic buckets, +Inf, `_sum` and `_count`), itself
/// included, so that an operator can alert on the node's cardinality. With
/// native histograms Prometheus stores fewer: one series per histogram.
pub fn scrape_series(fams: &[Family], classic: &Classic) -> Family {
    let n: usize = fams
        .iter()
        .flat_map(|f| f.samples.iter().map(move |s| (f.buckets, s)))
        .map(|(set, s)| match s.value {
            Value::Histogram(_) => classic.of(set).len() + 3,
            Value::Gauge(_) | Value::Counter(_) => 1,
        })
        .sum();
    family(
        "ksense_scrape_series",
        None,
        "Series this scrape serves in the text formats (classic histogram buckets, _sum and _count each count), itself included.",
        Kind::Gauge,
        one(Value::Gauge((n + 1) as f64)),
    )
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
        family("ksense_baseline_signal_samples", None, SIGNAL_SAMPLES_HELP.as_str(), Kind::Gauge, labelled(&m.measured)),
        family("ksense_signal", None, "Current value of each model feature: seconds for a mean or a percentile (pNN, twNN), seconds per second for busy, events per second for rate; no sample in an interval without events (not measured).", Kind::Gauge, labelled(&m.signals)),
        family("ksense_state_save_failures", None, "Times saving the baseline to the state file failed (e.g. full or read-only disk); it is retried at the next change and at shutdown.", Kind::Counter, one(Value::Counter(m.save_failures as f64))),
    ];
    if !m.workloads.is_empty() {
        let samples = m
            .workloads
            .iter()
            .map(|w| Sample {
                labels: w.labels.iter().map(|(k, v)| (*k, Cow::Owned(v.clone()))).collect(),
                value: Value::Gauge(w.friction),
            })
            .collect();
        out.push(family(
            "ksense_workload_friction",
            None,
            "Friction of each exported workload against its own baseline (its run-queue and served-request P99), once it has one.",
            Kind::Gauge,
            samples,
        ));
        let suspects: Vec<Sample> = m
            .workloads
            .iter()
            .flat_map(|w| {
                let victim = w.labels.first().map(|(_, v)| v.clone()).unwrap_or_default();
                w.suspects.iter().enumerate().map(move |(i, s)| Sample {
                    labels: vec![
                        ("workload", Cow::Owned(victim.clone())),
                        ("suspect", Cow::Owned(s.workload.clone())),
                        ("rank", Cow::Owned((i + 1).to_string())),
                    ],
                    value: Value::Gauge(s.correlation),
                })
            })
            .collect();
        if !suspects.is_empty() {
            out.push(family(
                "ksense_workload_suspect_correlation",
                None,
                "For each victim (a workload beyond its own normal friction, worse), the workloads whose CPU use moved with its friction over the last intervals (Pearson r), rank 1 the likeliest antagonist.",
                Kind::Gauge,
                suspects,
            ));
        }
    }
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
                "+1 when the node is worse than its baseline, -1 when better, 0 while friction is within the baseline's own normal range (at or below ksense_baseline_friction_p99, where the sign is noise).",
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
                "ksense_interference_ratio",
                None,
                "Node score in [0,1] for schedulers: 0 while friction is within the baseline's 99th percentile, else 1 - (that percentile / friction)^2.",
                Kind::Gauge,
                one(Value::Gauge(s.interference)),
            ),
            family(
                "ksense_baseline_friction_p99",
                None,
                "The friction ksense_interference_ratio is measured against: the 99th percentile over the calibration samples, each scored against a baseline of the rest.",
                Kind::Gauge,
                one(Value::Gauge(s.friction_reference)),
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
