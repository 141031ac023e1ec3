//! Feature vectors for the model, from one interval's histogram deltas.
//!
//! A feature is named `<source>_<statistic>`: source `runqueue`,
//! `runqueue_wakeup` (waits that began at a wakeup), `dstate` or
//! `softirq_<vector>` (e.g. `softirq_net_rx`), statistic `mean` or a
//! percentile `p50`, `p90`, `p99`, `p999` (seconds), `busy` (the summed
//! durations per second of the interval: for the run queue the average number
//! of waiting tasks, for a softirq vector the share of a CPU it took; unit 1)
//! or `rate` (events per second).

use crate::probes::{KernelSnapshot, SOFTIRQ_VECTORS};
use crate::signals::histogram::Histogram;

/// Fewer run-queue events than this in an interval and the sample is too
/// noisy to calibrate on (the K-Sense reference uses 50).
pub const MIN_RUNQUEUE_EVENTS: u64 = 50;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    Runqueue,
    RunqueueWakeup,
    Dstate,
    Softirq(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    Mean,
    Quantile(f64),
    /// Summed durations per second of the interval (seconds per second).
    Busy,
    /// Events per second.
    Rate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub name: String,
    pub source: Source,
    pub stat: Stat,
}

impl Feature {
    pub fn parse(name: &str) -> Result<Feature, String> {
        let bad = |why: &str| {
            format!("unknown model feature {name:?}: {why} (e.g. runqueue_p99, dstate_mean, softirq_net_rx_mean)")
        };
        let (src, stat) = name.rsplit_once('_').ok_or_else(|| bad("expected <source>_<statistic>"))?;
        let stat = match stat {
            "mean" => Stat::Mean,
            "busy" => Stat::Busy,
            "rate" => Stat::Rate,
            p if p.starts_with('p') && p.len() > 1 && p[1..].bytes().all(|b| b.is_ascii_digit()) => {
                // p99 -> 0.99, p999 -> 0.999, p50 -> 0.5
                let digits = &p[1..];
                let q = format!("0.{digits}").parse::<f64>().map_err(|_| bad("bad percentile"))?;
                if !(q > 0.0 && q < 1.0) {
                    return Err(bad("percentile must be between p1 and p9999"));
                }
                Stat::Quantile(q)
            }
            _ => return Err(bad("statistic must be mean, pNN, busy or rate")),
        };
        let source = match src {
            "runqueue" => Source::Runqueue,
            "runqueue_wakeup" => Source::RunqueueWakeup,
            "dstate" => Source::Dstate,
            s => {
                let v = s
                    .strip_prefix("softirq_")
                    .ok_or_else(|| bad("source must be runqueue, runqueue_wakeup, dstate or softirq_<vector>"))?;
                let i = SOFTIRQ_VECTORS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(v))
                    .ok_or_else(|| bad("unknown softirq vector"))?;
                Source::Softirq(i)
            }
        };
        Ok(Feature { name: name.to_string(), source, stat })
    }

    fn histogram<'a>(&self, d: &'a KernelSnapshot) -> Option<&'a Histogram> {
        match self.source {
            Source::Runqueue => Some(&d.runqueue),
            Source::RunqueueWakeup => Some(&d.runqueue_wakeup),
            Source::Dstate => Some(&d.dstate),
            Source::Softirq(i) => d.softirq.get(i),
        }
    }

    /// The value over one interval's delta, `secs` long. No events means
    /// nothing waited: 0.
    pub fn value(&self, d: &KernelSnapshot, secs: f64) -> f64 {
        let Some(h) = self.histogram(d) else { return 0.0 };
        match self.stat {
            Stat::Mean => h.mean_seconds(),
            Stat::Quantile(q) => h.quantile_seconds(q),
            Stat::Busy => Some(h.sum_seconds() / secs),
            Stat::Rate => Some(h.count() as f64 / secs),
        }
        .unwrap_or(0.0)
    }
}

pub fn parse_all(names: &[String]) -> Result<Vec<Feature>, String> {
    if names.is_empty() {
        return Err("the model needs at least one feature".into());
    }
    let fs = names.iter().map(|n| Feature::parse(n)).collect::<Result<Vec<_>, _>>()?;
    for (i, f) in fs.iter().enumerate() {
        if fs[..i].iter().any(|g| g.name == f.name) {
            return Err(format!("model feature {:?} is listed twice", f.name));
        }
    }
    Ok(fs)
}

/// One interval: the deltas of every histogram.
pub fn interval_delta(now: &KernelSnapshot, before: &KernelSnapshot) -> KernelSnapshot {
    KernelSnapshot {
        runqueue: now.runqueue.delta(&before.runqueue),
        runqueue_wakeup: now.runqueue_wakeup.delta(&before.runqueue_wakeup),
        dstate: now.dstate.delta(&before.dstate),
        softirq: now.softirq.iter().zip(&before.softirq).map(|(a, b)| a.delta(b)).collect(),
        ..Default::default()
    }
}

/// The feature vector of an interval `secs` long, and whether it is fit for
/// calibration.
pub fn vector(features: &[Feature], delta: &KernelSnapshot, secs: f64) -> (Vec<f64>, bool) {
    let x: Vec<f64> = features.iter().map(|f| f.value(delta, secs)).collect();
    let ok = delta.runqueue.count() >= MIN_RUNQUEUE_EVENTS && x.iter().all(|v| v.is_finite());
    (x, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(Feature::parse("runqueue_wakeup_p99").unwrap().source, Source::RunqueueWakeup);
        let f = Feature::parse("runqueue_p99").unwrap();
        assert_eq!((f.source, f.stat), (Source::Runqueue, Stat::Quantile(0.99)));
        assert_eq!(Feature::parse("runqueue_p999").unwrap().stat, Stat::Quantile(0.999));
        assert_eq!(Feature::parse("runqueue_p50").unwrap().stat, Stat::Quantile(0.5));
        assert_eq!(Feature::parse("softirq_net_rx_busy").unwrap().stat, Stat::Busy);
        assert_eq!(Feature::parse("runqueue_wakeup_rate").unwrap().stat, Stat::Rate);
        assert_eq!(Feature::parse("softirq_net_rx_mean").unwrap().source, Source::Softirq(3));
        assert_eq!(Feature::parse("softirq_HRTIMER_p99").unwrap().source, Source::Softirq(8));
        for bad in ["runqueue", "runqueue_p", "runqueue_p0", "cpu_mean", "softirq_foo_mean", "dstate_max"] {
            assert!(Feature::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_all(&["dstate_mean".into(), "dstate_mean".into()]).is_err());
    }

    #[test]
    fn vector_from_delta() {
        let b = crate::probes::buckets::kernel_bounds();
        let mut now = KernelSnapshot { softirq: vec![Histogram::default(); 10], ..Default::default() };
        for _ in 0..60 {
            now.runqueue.slots[crate::probes::buckets::slot_of(b, 1_000_000)] += 1;
            now.runqueue.sum_ns += 1_000_000;
        }
        let before = KernelSnapshot { softirq: vec![Histogram::default(); 10], ..Default::default() };
        let d = interval_delta(&now, &before);
        let fs =
            parse_all(&["runqueue_mean".into(), "dstate_mean".into(), "runqueue_busy".into(), "runqueue_rate".into()])
                .unwrap();
        let (x, ok) = vector(&fs, &d, 2.0);
        assert!(ok);
        assert!((x[0] - 1e-3).abs() < 1e-12);
        assert_eq!(x[1], 0.0);
        // 60 waits of 1 ms in 2 s: 0.03 tasks waiting on average, 30 events/s.
        assert!((x[2] - 0.03).abs() < 1e-12, "{}", x[2]);
        assert!((x[3] - 30.0).abs() < 1e-12, "{}", x[3]);
        let (_, ok) = vector(&fs, &interval_delta(&before, &before), 1.0);
        assert!(!ok, "no run-queue events: not for calibration");
    }
}
