//! Families -> one OTLP `ExportMetricsServiceRequest`, with the
//! opentelemetry-proto types. Gauges become Gauge, counters monotonic
//! cumulative Sums, and the kernel histograms exponential histograms of
//! scale 2 taken slot by slot (no re-bucketing, nothing re-aggregated).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::signals::buckets;
use crate::signals::histogram::Histogram;
use crate::signals::metric::{Family, Kind, Sample, Value};

/// The kernel buckets are native schema 2, which is OTLP scale 2.
pub const SCALE: i32 = buckets::SCHEMA;

/// OTLP bucket index of kernel slot `s >= 1`. OTLP bucket k holds
/// (base^k, base^(k+1)], Prometheus native bucket i holds (base^(i-1), base^i]:
/// the same interval has k = i - 1.
pub fn otlp_index(slot: usize) -> i32 {
    buckets::slot_index(slot).expect("slot >= 1 has an index") - 1
}

/// The OTLP name of a family: its Prometheus name without the unit and
/// `_total` suffixes, which the Collector's OTLP -> Prometheus translation
/// appends again (unit `s` -> `_seconds`, monotonic sum -> `_total`).
pub fn metric_name(f: &Family) -> &'static str {
    f.name
}

/// UCUM unit, or empty. Never "1": the translation appends `_ratio` to gauges with unit "1".
pub fn metric_unit(f: &Family) -> &'static str {
    f.unit.map(|u| u.ucum()).unwrap_or("")
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn string_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.to_string())) }),
        ..Default::default()
    }
}

fn attributes(s: &Sample) -> Vec<KeyValue> {
    s.labels.iter().map(|(k, v)| string_kv(k, v)).collect()
}

/// `start`: when the cumulative values started (the probes' attach time);
/// `now`: when the families were read.
pub fn request(
    families: &[Family],
    resource: &[(String, String)],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start, now) = (nanos(start), nanos(now));
    let metrics = families.iter().filter(|f| !f.samples.is_empty()).map(|f| metric(f, start, now)).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string_kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "ksense".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn metric(f: &Family, start: u64, now: u64) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let number = |s: &Sample, start: u64| {
        let v = match s.value {
            Value::Gauge(v) | Value::Counter(v) => v,
            Value::Histogram(_) => unreachable!("a {:?} family holds numbers", f.kind),
        };
        NumberDataPoint {
            attributes: attributes(s),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    };
    let data = match f.kind {
        // A gauge has no start: it is not accumulated over time.
        Kind::Gauge => Data::Gauge(Gauge { data_points: f.samples.iter().map(|s| number(s, 0)).collect() }),
        Kind::Counter => Data::Sum(Sum {
            data_points: f.samples.iter().map(|s| number(s, start)).collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        Kind::Histogram => Data::ExponentialHistogram(ExponentialHistogram {
            data_points: f
                .samples
                .iter()
                .map(|s| match &s.value {
                    Value::Histogram(h) => histogram_point(h, attributes(s), start, now),
                    _ => unreachable!("a histogram family holds histograms"),
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    Metric {
        name: metric_name(f).into(),
        description: f.help.into(),
        unit: metric_unit(f).into(),
        data: Some(data),
        ..Default::default()
    }
}

/// Slot 0 is the zero bucket (0 and 1 ns); slots 1.. are the positive
/// buckets, dense from the first to the last non-empty one. The last slot
/// reaches beyond u64::MAX ns, so it is an ordinary bucket: nothing overflows.
pub fn histogram_point(
    h: &Histogram,
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
) -> ExponentialHistogramDataPoint {
    let used = |s: &usize| h.slots[*s] != 0;
    // Per-workload histograms are schema 0 (fewer slots): same mapping, their own indices.
    let index = |slot: usize| buckets::slot_index_in(h.schema, slot).expect("a used slot >= 1 has an index") - 1;
    let n = h.slots.len();
    let positive = match ((1..n).find(used), (1..n).rev().find(used)) {
        (Some(lo), Some(hi)) => Buckets { offset: index(lo), bucket_counts: h.slots[lo..=hi].to_vec() },
        _ => Buckets::default(),
    };
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.count(),
        sum: Some(h.sum_seconds()),
        scale: h.schema,
        zero_count: h.slots[0],
        // The lower edge of the first positive bucket, base^(otlp_index(1)),
        // exactly as the native histograms on /metrics say.
        zero_threshold: buckets::zero_threshold_seconds(),
        positive: Some(positive),
        negative: Some(Buckets::default()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::families::{self, BuildInfo, OtlpExports};
    use crate::model::pipeline::{ModelView, Score};
    use crate::probes::reader::ProgStats;
    use crate::signals::buckets::{index_slot, kernel_bounds, slot_of, SLOTS};
    use crate::signals::metric::Unit;
    use std::time::Duration;

    /// Every family ksense can serve, each with samples.
    fn all_families() -> Vec<Family> {
        let mut h = Histogram::default();
        h.slots[0] = 1;
        h.slots[index_slot(-40)] = 2;
        h.sum_ns = 2_000_000;
        let k = crate::probes::example_snapshot(&h, ProgStats { run_cnt: 5, run_time_ns: 500, recursion_misses: 0 });
        let m = ModelView {
            ready: true,
            samples: 3,
            score: Some(Score {
                friction: 1.0,
                direction: 1.0,
                energy: 0.1,
                energy_window: 5.0,
                contributions: vec![("runqueue_mean".into(), 1.0)],
                interference: 0.5,
                friction_reference: 2.0,
            }),
            signals: vec![("runqueue_mean".into(), 1e-6)],
            measured: vec![("runqueue_mean".into(), 3.0)],
            save_failures: 0,
            ..Default::default()
        };
        let info = BuildInfo { version: "0", kernel: "6".into(), attach_mode: "tp_btf", nodename: "n1".into() };
        families::build(k.families, Some(&m), &info, Some(OtlpExports { success: 1, failure: 2 }))
    }

    /// The Collector's OTLP -> Prometheus name translation, from its
    /// documented rules (opentelemetry-collector-contrib
    /// pkg/translator/prometheus, now prometheus/otlptranslator), for the
    /// default "underscore escaping with suffixes" strategy: split the name on
    /// characters outside [a-zA-Z0-9:], append the unit word unless already a
    /// token, move/append `total` for monotonic sums, `ratio` for unit-"1"
    /// gauges, join with `_`.
    fn translate_escaping(name: &str, unit: &str, kind: Kind) -> String {
        let mut tokens: Vec<String> = name
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let main = unit_word(unit);
        if !main.is_empty() && !tokens.iter().any(|t| t == main) {
            tokens.push(main.into());
        }
        if kind == Kind::Counter {
            tokens.retain(|t| t != "total");
            tokens.push("total".into());
        }
        if unit == "1" && kind == Kind::Gauge {
            tokens.retain(|t| t != "ratio");
            tokens.push("ratio".into());
        }
        tokens.join("_")
    }

    /// The same rules for the UTF-8 ("no escaping, with suffixes") strategy:
    /// the name is kept and suffixes appended unless already there.
    fn translate_utf8(name: &str, unit: &str, kind: Kind) -> String {
        let mut n = name.to_string();
        let main = unit_word(unit);
        if !main.is_empty() && !n.ends_with(main) {
            n = format!("{n}_{main}");
        }
        if kind == Kind::Counter && !n.ends_with("_total") {
            n.push_str("_total");
        }
        if unit == "1" && kind == Kind::Gauge {
            n.push_str("_ratio");
        }
        n
    }

    fn unit_word(unit: &str) -> &'static str {
        match unit {
            "s" => "seconds",
            "ms" => "milliseconds",
            "By" => "bytes",
            "" | "1" => "",
            other => panic!("unit {other:?} not in the translation table this test knows"),
        }
    }

    #[test]
    fn workload_histograms_keep_their_schema() {
        let mut h = Histogram::workload();
        h.slots[0] = 1;
        h.slots[31] = 3; // native index 1 of schema 0: (1, 2] s
        h.slots[33] = 4;
        let p = histogram_point(&h, vec![], 0, 0);
        assert_eq!(p.scale, 0);
        let pos = p.positive.unwrap();
        assert_eq!(pos.offset, 0, "native (1, 2] s is index 1 of schema 0, OTLP bucket 0 of scale 0");
        assert_eq!(pos.bucket_counts, vec![3, 0, 4]);
        assert_eq!(p.count, 8);
    }

    #[test]
    fn translation_gives_back_every_prometheus_name() {
        let fams = all_families();
        assert!(fams.iter().all(|f| !f.samples.is_empty()));
        let req = request(&fams, &[], SystemTime::now(), SystemTime::now());
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), fams.len());
        for (f, m) in fams.iter().zip(metrics) {
            let kind = match m.data.as_ref().unwrap() {
                Data::Gauge(_) => Kind::Gauge,
                Data::Sum(s) => {
                    assert!(s.is_monotonic);
                    Kind::Counter
                }
                Data::ExponentialHistogram(_) => Kind::Histogram,
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(kind, f.kind, "{}", f.name);
            assert_eq!(translate_escaping(&m.name, &m.unit, kind), f.prometheus_name(), "{}", m.name);
            assert_eq!(translate_utf8(&m.name, &m.unit, kind), f.prometheus_name(), "{}", m.name);
            assert_ne!(m.unit, "1", "{}", m.name);
            assert_eq!(m.description, f.help);
        }
        assert!(fams.iter().any(|f| f.prometheus_name() == "ksense_otlp_exports_total"));
        assert_eq!(
            translate_escaping("ksense_bpf_program_run", "s", Kind::Counter),
            "ksense_bpf_program_run_seconds_total"
        );
    }

    #[test]
    fn histogram_buckets_map_slot_by_slot() {
        let b = kernel_bounds();
        let vals = [0u64, 1, 2, 976_562, 976_563, 1_000_000_000, u64::MAX];
        let mut h = Histogram::default();
        for v in vals {
            h.slots[slot_of(b, v)] += 1;
            h.sum_ns = h.sum_ns.wrapping_add(v);
        }
        let p = histogram_point(&h, vec![], 7, 9);
        assert_eq!((p.scale, p.start_time_unix_nano, p.time_unix_nano), (2, 7, 9));
        assert_eq!(p.zero_count, 2, "0 and 1 ns are in the zero bucket");
        assert_eq!(p.count, vals.len() as u64);
        let pos = p.positive.as_ref().unwrap();
        assert_eq!(p.zero_count + pos.bucket_counts.iter().sum::<u64>(), p.count);
        // Each value lies in (base^k, base^(k+1)] of its OTLP bucket k.
        let base = 2f64.powf(2f64.powi(-SCALE));
        for &v in vals.iter().filter(|&&v| v > 1) {
            let k = otlp_index(slot_of(b, v));
            let secs = v as f64 / 1e9;
            assert!(
                base.powi(k) < secs * (1.0 + 1e-12) && secs <= base.powi(k + 1) * (1.0 + 1e-12),
                "{v} ns not in bucket {k}"
            );
            assert!(pos.bucket_counts[(k - pos.offset) as usize] > 0, "{v} ns: bucket {k} empty");
        }
        // 2^-10 s = 976562.5 ns: 976562 sits in native -40 (OTLP -41), 976563 in native -39 (OTLP -40).
        assert_eq!(otlp_index(slot_of(b, 976_562)), -41);
        assert_eq!(otlp_index(slot_of(b, 976_563)), -40);
        assert_eq!(otlp_index(slot_of(b, 1_000_000_000)), -1, "1 s = 2^0 is the upper edge of OTLP bucket -1");
        // The last slot is a bucket like any other (u64::MAX ns).
        assert_eq!(pos.offset + pos.bucket_counts.len() as i32 - 1, otlp_index(SLOTS - 1));
        assert_eq!(*pos.bucket_counts.last().unwrap(), 1);
        // The zero threshold is the lower edge of the first positive bucket.
        assert!((p.zero_threshold / base.powi(otlp_index(1)) - 1.0).abs() < 1e-12);
        assert!(p.zero_threshold > 1e-9 && p.zero_threshold < 2e-9);
        assert_eq!(p.sum, Some(h.sum_ns as f64 / 1e9), "sum in seconds");
    }

    #[test]
    fn empty_histogram_has_no_buckets() {
        let p = histogram_point(&Histogram::default(), vec![], 0, 0);
        assert_eq!((p.count, p.zero_count, p.sum), (0, 0, Some(0.0)));
        assert_eq!(p.positive, Some(Buckets::default()));
    }

    #[test]
    fn temporality_start_time_units_and_attributes() {
        let fams = all_families();
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let now = UNIX_EPOCH + Duration::from_secs(2_000);
        let res = vec![("service.name".to_string(), "ksense".to_string())];
        let req = request(&fams, &res, start, now);
        let rm = &req.resource_metrics[0];
        assert_eq!(rm.resource.as_ref().unwrap().attributes[0].key, "service.name");
        assert_eq!(rm.scope_metrics[0].scope.as_ref().unwrap().name, "ksense");
        let by_name = |n: &str| rm.scope_metrics[0].metrics.iter().find(|m| m.name == n).unwrap();
        let rq = by_name("ksense_runqueue_latency");
        assert_eq!(rq.unit, "s");
        let Some(Data::ExponentialHistogram(eh)) = &rq.data else { panic!() };
        assert_eq!(eh.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(
            (eh.data_points[0].start_time_unix_nano, eh.data_points[0].time_unix_nano),
            (1_000_000_000_000, 2_000_000_000_000)
        );
        assert_eq!(eh.data_points[0].sum, Some(0.002));
        let Some(Data::Sum(s)) = &by_name("ksense_bpf_program_run").data else { panic!() };
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(s.data_points[0].start_time_unix_nano, 1_000_000_000_000);
        assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsDouble(500e-9)));
        assert_eq!(s.data_points[0].attributes, vec![string_kv("program", "sched_switch")]);
        let Some(Data::Gauge(g)) = &by_name("ksense_build_info").data else { panic!() };
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
        assert_eq!(
            g.data_points[0].attributes.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
            ["version", "kernel", "attach"]
        );
        let sirq = by_name("ksense_softirq_duration");
        let Some(Data::ExponentialHistogram(eh)) = &sirq.data else { panic!() };
        assert_eq!(eh.data_points.len(), 10);
        assert_eq!(eh.data_points[3].attributes, vec![string_kv("vector", "NET_RX")]);
        assert_eq!(Unit::Seconds.ucum(), "s");
    }
}
