//! A source without a kernel: every probe family's families and signals, as
//! [`Probes`](super::Probes) serves them, from histograms that grow at each
//! read. What the in-process tests serve (TLS, auth, HTTP, formats, OTLP),
//! so that they need neither root nor BPF.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::reader::ProgStats;
use crate::signals::buckets::{kernel_bounds, slot_of};
use crate::signals::histogram::Histogram;
use crate::signals::{Snapshot, Source};

/// Waits recorded per read and histogram: enough for the model to calibrate
/// on (its floor is 50 run-queue events an interval).
pub const EVENTS_PER_READ: u64 = 100;

#[derive(Debug)]
pub struct Fake {
    started: SystemTime,
    reads: AtomicU64,
}

impl Default for Fake {
    fn default() -> Fake {
        Fake { started: SystemTime::now(), reads: AtomicU64::new(0) }
    }
}

impl Source for Fake {
    /// After n reads each histogram holds n × [`EVENTS_PER_READ`] waits, a
    /// tenth of them 1 ms long and the rest 10 µs; counters grow alike.
    fn snapshot(&self) -> std::io::Result<Snapshot> {
        let n = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
        let events = n * EVENTS_PER_READ;
        let (long, short) = (events / 10, events - events / 10);
        let b = kernel_bounds();
        let mut h = Histogram::default();
        h.slots[slot_of(b, 1_000_000)] = long;
        h.slots[slot_of(b, 10_000)] = short;
        h.sum_ns = long * 1_000_000 + short * 10_000;
        let stats = ProgStats { run_cnt: events, run_time_ns: events * 100, recursion_misses: 0 };
        Ok(super::example_snapshot(&h, stats))
    }

    fn started(&self) -> SystemTime {
        self.started
    }
}
