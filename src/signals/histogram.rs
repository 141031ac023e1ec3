//! A latency histogram as read from the kernel, in kernel slots, and what can
//! be derived from it: deltas, count, mean, quantiles, native and classic views.

use crate::signals::buckets::{self, SLOTS};

/// Cumulative counts since the probes were attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// `SLOTS` long in the node-wide layout, `WORKLOAD_SLOTS` in the
    /// per-workload one (copied several times a scrape for each workload).
    pub slots: Box<[u64]>,
    pub sum_ns: u64,
    /// Native schema of the slots: `buckets::SCHEMA` (2, the node-wide
    /// layout) or `buckets::WORKLOAD_SCHEMA` (0, per-workload, 66 slots).
    pub schema: i32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { slots: vec![0; SLOTS].into_boxed_slice(), sum_ns: 0, schema: buckets::SCHEMA }
    }
}

/// A native histogram as Prometheus wants it: spans of consecutive buckets and
/// the delta-encoded counts within them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NativeBuckets {
    pub zero_count: u64,
    pub spans: Vec<(i32, u32)>,
    pub deltas: Vec<i64>,
}

impl Histogram {
    /// An empty histogram in the per-workload layout.
    pub fn workload() -> Histogram {
        Histogram {
            slots: vec![0; buckets::WORKLOAD_SLOTS].into_boxed_slice(),
            sum_ns: 0,
            schema: buckets::WORKLOAD_SCHEMA,
        }
    }

    /// Native index of a slot in this histogram's schema.
    fn index(&self, slot: usize) -> Option<i32> {
        buckets::slot_index_in(self.schema, slot)
    }

    /// The slot's upper bound as a schema-2 index (bounds of coarser schemas are schema-2 bounds too).
    fn upper_index2(&self, slot: usize) -> Option<i32> {
        self.index(slot).map(|i| i << (buckets::SCHEMA - self.schema))
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// What happened since `earlier`. Counts saturate (they only grow); the
    /// ns sum is modular, as the kernel's u64 may wrap on a busy node after
    /// months, and a modular difference stays right across one wrap.
    pub fn delta(&self, earlier: &Histogram) -> Histogram {
        let mut d = Histogram { slots: vec![0; self.slots.len()].into_boxed_slice(), sum_ns: 0, schema: self.schema };
        for ((o, a), b) in d.slots.iter_mut().zip(self.slots.iter()).zip(earlier.slots.iter()) {
            *o = a.saturating_sub(*b);
        }
        d.sum_ns = self.sum_ns.wrapping_sub(earlier.sum_ns);
        d
    }

    /// Mean in seconds; None without observations.
    pub fn mean_seconds(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_seconds() / n as f64)
    }

    /// Quantile in seconds, interpolated inside the bucket on the exponential
    /// scale as Prometheus does for native histograms. None without observations.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * n as f64;
        let mut seen = 0u64;
        for (s, &c) in self.slots.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let Some(i) = self.upper_index2(s) else {
                    return Some(0.0);
                };
                let width = 1 << (buckets::SCHEMA - self.schema);
                let (lo, hi) = (buckets::upper_bound_seconds(i - width), buckets::upper_bound_seconds(i));
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo * (hi / lo).powf(frac));
            }
            seen += c;
        }
        None
    }

    /// Quantile of the time spent, in seconds: the duration below which a
    /// share `q` of the summed durations lies (each bucket's events weighted
    /// by its geometric midpoint, interpolated inside the bucket as
    /// [`Histogram::quantile_seconds`]). Unlike a quantile of the events, a
    /// flood of short waits does not hide a few long ones: 100,000 waits of
    /// 20 µs (2 s in all) and four of 1 s (4 s) put the time-weighted median
    /// and 90th percentile at the 1 s waits, where the event P99 reads 20 µs. None
    /// without observations; 0 when every observation is in the zero bucket.
    pub fn time_quantile_seconds(&self, q: f64) -> Option<f64> {
        if self.count() == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let width = 1 << (buckets::SCHEMA - self.schema);
        let bounds = |s: usize| {
            self.upper_index2(s).map(|i| (buckets::upper_bound_seconds(i - width), buckets::upper_bound_seconds(i)))
        };
        let weight = |s: usize, c: u64| bounds(s).map_or(0.0, |(lo, hi)| c as f64 * (lo * hi).sqrt());
        let total: f64 = self.slots.iter().enumerate().map(|(s, &c)| weight(s, c)).sum();
        if total <= 0.0 {
            return Some(0.0);
        }
        let rank = q * total;
        let mut seen = 0.0;
        let mut last = None;
        for (s, &c) in self.slots.iter().enumerate() {
            let w = weight(s, c);
            if w <= 0.0 {
                continue;
            }
            let (lo, hi) = bounds(s)?;
            if seen + w >= rank {
                let frac = ((rank - seen) / w).clamp(0.0, 1.0);
                return Some(lo * (hi / lo).powf(frac));
            }
            seen += w;
            last = Some(hi);
        }
        last
    }

    /// The native view (in `self.schema`): zero bucket plus sparse positive buckets.
    pub fn native(&self) -> NativeBuckets {
        let mut nb = NativeBuckets { zero_count: self.slots[0], ..Default::default() };
        let mut prev_index: Option<i32> = None;
        let mut prev_count = 0i64;
        for s in 1..self.slots.len() {
            let c = self.slots[s];
            if c == 0 {
                continue;
            }
            let Some(i) = self.index(s) else { break }; // past the layout's last slot: all zero
            match prev_index {
                Some(p) if p + 1 == i => nb.spans.last_mut().expect("span open").1 += 1,
                Some(p) => nb.spans.push((i - p - 1, 1)),
                None => nb.spans.push((i, 1)),
            }
            nb.deltas.push(c as i64 - prev_count);
            prev_count = c as i64;
            prev_index = Some(i);
        }
        nb
    }

    /// Classic buckets: per-bucket (not cumulative) counts for each `le` index,
    /// the last entry being +Inf. Every kernel slot falls in exactly one: the
    /// first whose `le` is at or above the slot's upper bound. For a coarser
    /// schema a bound inside a slot (a custom `le` that is not a power of two
    /// in seconds, for schema 0) counts that slot above it: never below.
    pub fn classic(&self, le_indices: &[i32]) -> Vec<(f64, u64)> {
        let table = Histogram::classic_table(self.schema, self.slots.len(), le_indices);
        let mut counts = Vec::new();
        self.classic_counts(&table, le_indices.len() + 1, &mut counts);
        le_indices.iter().map(|&i| buckets::upper_bound_seconds(i)).chain([f64::INFINITY]).zip(counts).collect()
    }

    /// For each slot of a layout (`schema`, `slots` long), the classic
    /// bucket it counts in (see `classic`): built once for all the
    /// histograms of a layout, where a scrape with 200 workloads walked the
    /// bounds for each of its 1,400 histograms.
    pub fn classic_table(schema: i32, slots: usize, le_indices: &[i32]) -> Vec<u16> {
        let mut b = 0;
        (0..slots)
            .map(|s| {
                let idx = buckets::slot_index_in(schema, s).map_or(i32::MIN, |i| i << (buckets::SCHEMA - schema));
                while b < le_indices.len() && idx > le_indices[b] {
                    b += 1;
                }
                b as u16
            })
            .collect()
    }

    /// Per-bucket counts into `out` (`n` buckets, +Inf last) through a
    /// [`classic_table`](Histogram::classic_table) of this layout.
    pub fn classic_counts(&self, table: &[u16], n: usize, out: &mut Vec<u64>) {
        out.clear();
        out.resize(n, 0);
        for (&c, &b) in self.slots.iter().zip(table) {
            out[b as usize] += c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::buckets::{index_slot, kernel_bounds, slot_of};
    use proptest::prelude::*;

    fn from_values(vals: &[u64]) -> Histogram {
        let b = kernel_bounds();
        let mut h = Histogram::default();
        for &v in vals {
            h.slots[slot_of(b, v)] += 1;
            h.sum_ns = h.sum_ns.wrapping_add(v);
        }
        h
    }

    #[test]
    fn native_spans_and_deltas() {
        let mut h = Histogram::default();
        h.slots[0] = 2;
        h.slots[index_slot(-40)] = 3;
        h.slots[index_slot(-39)] = 5;
        h.slots[index_slot(-30)] = 1;
        let n = h.native();
        assert_eq!(n.zero_count, 2);
        assert_eq!(n.spans, vec![(-40, 2), (8, 1)]);
        assert_eq!(n.deltas, vec![3, 2, -4]);
    }

    #[test]
    fn quantile_and_mean() {
        let h = from_values(&[1_000_000; 99].iter().copied().chain([1_000_000_000]).collect::<Vec<_>>());
        let p50 = h.quantile_seconds(0.5).unwrap();
        assert!(p50 > 0.8e-3 && p50 <= 1.0e-3 * 1.19, "{p50}");
        let p100 = h.quantile_seconds(1.0).unwrap();
        assert!((p100 - 1.0).abs() < 1e-9, "{p100}");
        let mean = h.mean_seconds().unwrap();
        assert!((mean - (99.0 * 1e-3 + 1.0) / 100.0).abs() < 1e-12);
        assert_eq!(Histogram::default().quantile_seconds(0.99), None);
    }

    /// A flood of short waits hides a few long ones from every event
    /// quantile, not from the quantiles of the time spent: 100,000 waits of
    /// 20 µs (2 s in all) and 4 of 1 s (4 s) read P99 ~20 µs, tw50 and tw90
    /// at the 1 s waits; without the long waits tw90 is back at 20 µs.
    #[test]
    fn time_quantiles_see_long_waits_under_a_flood() {
        let flood = vec![20_000u64; 100_000];
        let h = from_values(&flood.iter().copied().chain([1_000_000_000; 4]).collect::<Vec<_>>());
        let near = |x: f64, want: f64| x > want / 1.19 && x <= want * 1.19;
        assert!(near(h.quantile_seconds(0.99).unwrap(), 20e-6), "{:?}", h.quantile_seconds(0.99));
        assert!(near(h.time_quantile_seconds(0.5).unwrap(), 1.0), "{:?}", h.time_quantile_seconds(0.5));
        assert!(near(h.time_quantile_seconds(0.9).unwrap(), 1.0), "{:?}", h.time_quantile_seconds(0.9));
        let calm = from_values(&flood);
        assert!(near(calm.time_quantile_seconds(0.9).unwrap(), 20e-6), "{:?}", calm.time_quantile_seconds(0.9));
        // Monotone in q, within the observed range, None when empty, 0 for zeros only.
        let qs: Vec<f64> =
            [0.01, 0.3, 0.5, 0.9, 0.99, 1.0].iter().map(|&q| h.time_quantile_seconds(q).unwrap()).collect();
        assert!(qs.windows(2).all(|w| w[0] <= w[1]) && qs[0] >= 20e-6 / 1.19 && qs[5] <= 1.19, "{qs:?}");
        assert_eq!(Histogram::default().time_quantile_seconds(0.9), None);
        assert_eq!(from_values(&[0, 0]).time_quantile_seconds(0.9), Some(0.0));
    }

    /// The same in the per-workload layout (schema 0, buckets a factor 2
    /// wide, as bpf/workload.h folds the kernel slots): the long waits still
    /// set tw50 and tw90, within one of its buckets of the schema-2 figure.
    #[test]
    fn time_quantiles_in_the_workload_layout() {
        let coarse = |h: &Histogram| {
            let mut w = Histogram::workload();
            for (s, &c) in h.slots.iter().enumerate() {
                w.slots[if s == 0 { 0 } else { (s + 5) >> 2 }] += c;
            }
            w.sum_ns = h.sum_ns;
            w
        };
        let flood = vec![20_000u64; 100_000];
        let fine = from_values(&flood.iter().copied().chain([1_000_000_000; 4]).collect::<Vec<_>>());
        let (h, calm) = (coarse(&fine), coarse(&from_values(&flood)));
        let within = |x: f64, want: f64| x > want / 2.0 && x <= want * 2.0;
        for q in [0.5, 0.9] {
            let (c, f) = (h.time_quantile_seconds(q).unwrap(), fine.time_quantile_seconds(q).unwrap());
            assert!(within(c, 1.0) && within(c, f), "tw{q}: {c} (schema 2: {f})");
        }
        assert!(within(calm.time_quantile_seconds(0.9).unwrap(), 20e-6), "{:?}", calm.time_quantile_seconds(0.9));
        assert!(within(h.quantile_seconds(0.99).unwrap(), 20e-6), "{:?}", h.quantile_seconds(0.99));
        assert_eq!(Histogram::workload().time_quantile_seconds(0.9), None);
    }

    proptest! {
        /// kernel slot <-> native index <-> classic le: counts conserved,
        /// native buckets reproduce the slots, cumulative classic counts never
        /// decrease, and each value sits under the right `le`.
        #[test]
        fn mappings_conserve_counts(vals in proptest::collection::vec(any::<u64>().prop_map(|v| v >> (v % 64)), 0..200),
                                    mut les in proptest::collection::btree_set(-117i32..137, 1..20)) {
            let h = from_values(&vals);
            prop_assert_eq!(h.count(), vals.len() as u64);

            // native: expand spans/deltas back into slots
            let n = h.native();
            let mut back = Histogram::default();
            back.slots[0] = n.zero_count;
            let (mut idx, mut count, mut d) = (0i32, 0i64, n.deltas.iter());
            for (k, &(off, len)) in n.spans.iter().enumerate() {
                idx = if k == 0 { off } else { idx + off + 1 };
                for j in 0..len {
                    if j > 0 { idx += 1; }
                    count += d.next().unwrap();
                    prop_assert!(count > 0);
                    back.slots[index_slot(idx)] = count as u64;
                }
            }
            prop_assert_eq!(&back.slots, &h.slots);

            // classic
            let les: Vec<i32> = std::mem::take(&mut les).into_iter().collect();
            let c = h.classic(&les);
            prop_assert_eq!(c.iter().map(|x| x.1).sum::<u64>(), h.count());
            let mut cum = 0;
            for (k, (le, cnt)) in c.iter().enumerate() {
                cum += cnt;
                // Exact `le` semantics through the kernel slots (f64 seconds would round).
                let exact = vals.iter().filter(|&&v| k == les.len() || slot_of(kernel_bounds(), v) <= index_slot(les[k])).count() as u64;
                prop_assert_eq!(cum, exact);
                prop_assert!(k == les.len() || *le == crate::signals::buckets::upper_bound_seconds(les[k]));
            }
        }
    }
}
