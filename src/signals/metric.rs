//! The metric data model every source fills and every encoder walks: the
//! Prometheus encoders and the OTLP exporter read these families, so names,
//! units, help and labels cannot drift apart between formats.

use std::borrow::Cow;

use crate::signals::buckets;
use crate::signals::histogram::Histogram;

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
    /// The classic `le` bounds its histograms are served with.
    pub buckets: BucketSet,
}

/// Which classic `le` bounds a histogram family is served with: a family
/// with one series per workload multiplies its buckets by the workload cap,
/// so it gets a coarser set of its own (README, "Series budget").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BucketSet {
    #[default]
    Node,
    Workload,
}

/// The classic `le` bounds of each set, as native bucket indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classic {
    pub node: Vec<i32>,
    pub workload: Vec<i32>,
}

impl Classic {
    pub fn of(&self, set: BucketSet) -> &[i32] {
        match set {
            BucketSet::Node => &self.node,
            BucketSet::Workload => &self.workload,
        }
    }
}

impl Default for Classic {
    fn default() -> Classic {
        Classic { node: buckets::default_classic_indices(), workload: buckets::default_workload_classic_indices() }
    }
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

/// One unlabelled sample.
pub fn one(value: Value) -> Vec<Sample> {
    vec![Sample { labels: Vec::new(), value }]
}

pub fn family(name: &'static str, unit: Option<Unit>, help: &'static str, kind: Kind, samples: Vec<Sample>) -> Family {
    Family { name, unit, help, kind, samples, buckets: BucketSet::Node }
}

/// Anything that contributes families to a scrape and an OTLP export (the
/// probes, the per-workload tracker; fakes in tests), as node_exporter's
/// collectors do.
pub trait Collector: Send + Sync + 'static {
    /// Appends this collector's families as of now.
    fn collect(&self, out: &mut Vec<Family>) -> std::io::Result<()>;
}
