//! Signals: the kernel's cumulative histograms as snapshots, their interval
//! deltas, the feature vectors the model scores, and the metric data model
//! the exporters encode. The lowest layer: it depends on no other module.

pub mod buckets;
pub mod features;
pub mod histogram;
pub mod ids;
pub mod metric;

use std::time::SystemTime;

use histogram::Histogram;
use metric::Family;

/// One reading of the probes: the families a scrape serves, and the same
/// node-wide histograms by signal name for the model's features.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub families: Vec<Family>,
    /// Cumulative histograms by signal name (`runqueue`, `dstate`,
    /// `softirq_net_rx`, ...), in the order the probes read them.
    pub signals: Vec<(String, Histogram)>,
}

impl Snapshot {
    pub fn signal(&self, name: &str) -> Option<&Histogram> {
        self.signals.iter().find(|(n, _)| n == name).map(|(_, h)| h)
    }
}

/// Where snapshots come from: the attached probes; a fake in tests.
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> std::io::Result<Snapshot>;
    /// When the histograms started counting.
    fn started(&self) -> SystemTime;
}

/// A source's families are what it contributes to a scrape.
impl<S: Source> metric::Collector for S {
    fn collect(&self, out: &mut Vec<Family>) -> std::io::Result<()> {
        out.extend(self.snapshot()?.families);
        Ok(())
    }
}
