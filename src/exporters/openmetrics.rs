//! OpenMetrics text and Prometheus protobuf (native histograms) through
//! prometheus-client: the families are handed to it as a collector.

use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NativeHistogram, NativeHistogramBuckets, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit as PUnit};

use crate::signals::buckets;
use crate::signals::metric::{Classic, Family, Kind, Unit, Value};

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Debug)]
struct Families {
    families: Vec<Family>,
    classic: Classic,
    /// Start of the cumulative histograms: when the probes were attached.
    created: SystemTime,
}

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let zero_threshold = buckets::zero_threshold_seconds();
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let unit = f.unit.map(|u| match u {
                Unit::Seconds => PUnit::Seconds,
            });
            let ty = match f.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut me = enc.encode_descriptor(f.name, f.help, unit.as_ref(), ty)?;
            for s in &f.samples {
                let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                let mut e = me.encode_family(&labels)?;
                match &s.value {
                    Value::Gauge(v) => e.encode_gauge(v)?,
                    Value::Counter(v) => e.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
                    Value::Histogram(h) => {
                        let nb = h.native();
                        e.encode_histogram_with_native::<NoLabelSet>(
                            h.sum_seconds(),
                            h.count(),
                            &h.classic(self.classic.of(f.buckets)),
                            None,
                            NativeHistogram {
                                schema: h.schema,
                                zero_threshold,
                                zero_count: nb.zero_count,
                                negative: NativeHistogramBuckets { spans: &[], deltas: &[] },
                                positive: NativeHistogramBuckets { spans: &nb.spans, deltas: &nb.deltas },
                                created: Some(self.created),
                            },
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}

fn registry(families: Vec<Family>, classic: &Classic, created: SystemTime) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Families { families, classic: classic.clone(), created }));
    r
}

pub fn encode_text(families: Vec<Family>, classic: &Classic, created: SystemTime) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry(families, classic, created))?;
    Ok(out)
}

pub fn encode_protobuf(families: Vec<Family>, classic: &Classic, created: SystemTime) -> anyhow::Result<Vec<u8>> {
    prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry(families, classic, created))
        .map_err(|e| anyhow::anyhow!("protobuf encoding: {e:?}"))
}
