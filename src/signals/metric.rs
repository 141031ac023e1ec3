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
/// so it gets a coarser set of its own (docs/workloads.md, "Series budget").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BucketSet {
    #[default]
    Node,
    Workload,
}

/// The classic `le` bounds of each set, as native bucket indices, and the
/// slot-to-bucket table of each set's histogram layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classic {
    node: Vec<i32>,
    workload: Vec<i32>,
    node_table: Vec<u16>,
    workload_table: Vec<u16>,
}

impl Classic {
    pub fn new(node: Vec<i32>, workload: Vec<i32>) -> Classic {
        Classic {
            node_table: Histogram::classic_table(buckets::SCHEMA, buckets::SLOTS, &node),
            workload_table: Histogram::classic_table(buckets::WORKLOAD_SCHEMA, buckets::WORKLOAD_SLOTS, &workload),
            node,
            workload,
        }
    }

    pub fn of(&self, set: BucketSet) -> &[i32] {
        match set {
            BucketSet::Node => &self.node,
            BucketSet::Workload => &self.workload,
        }
    }

    /// `h`'s per-bucket counts in `set` into `out` (+Inf last), as
    /// [`Histogram::classic`] counts them.
    pub fn counts(&self, set: BucketSet, h: &Histogram, out: &mut Vec<u64>) {
        let (les, table, schema) = match set {
            BucketSet::Node => (&self.node, &self.node_table, buckets::SCHEMA),
            BucketSet::Workload => (&self.workload, &self.workload_table, buckets::WORKLOAD_SCHEMA),
        };
        if h.schema == schema && h.slots.len() == table.len() {
            h.classic_counts(table, les.len() + 1, out);
        } else {
            // Not the set's layout: no source makes one, but never miscount it.
            out.clear();
            out.extend(h.classic(les).into_iter().map(|(_, c)| c));
        }
    }
}

impl Default for Classic {
    fn default() -> Classic {
        Classic::new(buckets::default_classic_indices(), buckets::default_workload_classic_indices())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram with a different count in every slot, in either layout.
    fn filled(mut h: Histogram) -> Histogram {
        for (i, s) in h.slots.iter_mut().enumerate() {
            *s = (i as u64 * 7919) % 101 + 1;
        }
        h
    }

    #[test]
    fn counts_match_classic_in_and_out_of_the_sets_layout() {
        let c = Classic::new(vec![-39, -20, 0, 8], vec![-26, -12, 0]);
        let mut out = Vec::new();
        for (set, h) in [
            (BucketSet::Node, filled(Histogram::default())),
            (BucketSet::Workload, filled(Histogram::workload())),
            // Not the set's layout: the slow path, same answer.
            (BucketSet::Workload, filled(Histogram::default())),
            (BucketSet::Node, filled(Histogram::workload())),
        ] {
            c.counts(set, &h, &mut out);
            let want: Vec<u64> = h.classic(c.of(set)).into_iter().map(|(_, n)| n).collect();
            assert_eq!(out, want, "{set:?}, {} slots", h.slots.len());
            assert_eq!(out.iter().sum::<u64>(), h.count());
        }
    }
}
