//! Feature vectors for the model, from one interval's histogram deltas.
//!
//! A feature is named `<source>_<statistic>`: source `runqueue`,
//! `runqueue_wakeup` (waits that began at a wakeup), `dstate` or
//! `softirq_<vector>` (e.g. `softirq_net_rx`), statistic `mean`, a
//! percentile `p50`, `p90`, `p99`, `p999` (seconds), a percentile of the time
//! spent `tw50`, `tw90` (seconds: the wait below which that share of all
//! waiting time lies, which a flood of short waits cannot hide), `busy` (the summed
//! durations per second of the interval: for the run queue the average number
//! of waiting tasks, for a softirq vector the share of a CPU it took; unit 1)
//! or `rate` (events per second).

use crate::signals::histogram::Histogram;
use crate::signals::Snapshot;

/// Fewer run-queue events than this in an interval and the sample is too
/// noisy to calibrate on (the K-Sense reference uses 50).
pub const MIN_RUNQUEUE_EVENTS: u64 = 50;
/// The signal whose event count gates calibration and scoring.
pub const RUNQUEUE: &str = "runqueue";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    Mean,
    Quantile(f64),
    /// A quantile of the time spent rather than of the events
    /// ([`Histogram::time_quantile_seconds`]): `tw50`, `tw90`.
    TimeQuantile(f64),
    /// Summed durations per second of the interval (seconds per second).
    Busy,
    /// Events per second.
    Rate,
}

impl Stat {
    /// The unit the model takes the log of: microseconds for durations and
    /// ppm for CPU shares, events per second for rates (see model_space in
    /// src/model/pipeline.rs).
    pub fn model_scale(self) -> f64 {
        match self {
            Stat::Mean | Stat::Quantile(_) | Stat::TimeQuantile(_) | Stat::Busy => 1e6,
            Stat::Rate => 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub name: String,
    /// The signal it reads (a name in `Snapshot::signals`).
    pub source: String,
    pub stat: Stat,
}

impl Feature {
    /// `signals`: the signal names the probes provide (lower case);
    /// `counters`: those of them that count events, whose only statistic is `rate`.
    pub fn parse(name: &str, signals: &[String], counters: &[&str]) -> Result<Feature, String> {
        let bad = |why: &str| {
            format!("unknown model feature {name:?}: {why} (e.g. runqueue_p99, dstate_mean, softirq_net_rx_mean)")
        };
        let (src, stat) = name.rsplit_once('_').ok_or_else(|| bad("expected <source>_<statistic>"))?;
        let stat = match stat {
            "mean" => Stat::Mean,
            "busy" => Stat::Busy,
            "rate" => Stat::Rate,
            p if percentile(p, "p").is_some() || percentile(p, "tw").is_some() => {
                // p99 -> 0.99, p999 -> 0.999, p50 -> 0.5; tw90 -> 0.9 of the time spent
                let (digits, timed) =
                    percentile(p, "p").map_or_else(|| (percentile(p, "tw"), true), |d| (Some(d), false));
                let q =
                    format!("0.{}", digits.unwrap_or_default()).parse::<f64>().map_err(|_| bad("bad percentile"))?;
                // p100 would read as 0.100 (p10): a zero after the second digit says nothing
                let d = digits.unwrap_or_default();
                if !(q > 0.0 && q < 1.0) || (d.len() > 2 && d.ends_with('0')) {
                    return Err(bad("percentile must be between p1 and p9999 (tw1 and tw9999), no trailing zero"));
                }
                if timed {
                    Stat::TimeQuantile(q)
                } else {
                    Stat::Quantile(q)
                }
            }
            _ => return Err(bad("statistic must be mean, pNN, twNN, busy or rate")),
        };
        let source = signals
            .iter()
            .find(|n| n.eq_ignore_ascii_case(src))
            .ok_or_else(|| bad(&format!("source must be one of {}", signals.join(", "))))?;
        if stat != Stat::Rate && counters.contains(&source.as_str()) {
            return Err(bad(&format!("{source} counts events: its statistic is rate")));
        }
        Ok(Feature { name: name.to_string(), source: source.clone(), stat })
    }

    /// The value over one interval's delta, `secs` long; NaN when it was
    /// not measured: a statistic of no events (no TCP segment acknowledged:
    /// no round-trip time, which is not a round trip of 0 s; no network
    /// receive softirq: no load to measure the share of), or of a source
    /// the interval does not have (its family is off). A rate of no events
    /// is 0: rates count trouble (retransmissions, drops), whose absence is
    /// the healthy norm a baseline holds.
    pub fn value(&self, d: &Deltas, secs: f64) -> f64 {
        let Some(h) = d.get(&self.source) else { return f64::NAN };
        match self.stat {
            Stat::Mean => h.mean_seconds(),
            Stat::Quantile(q) => h.quantile_seconds(q),
            Stat::TimeQuantile(q) => h.time_quantile_seconds(q),
            Stat::Busy => (h.count() > 0).then(|| h.sum_seconds() / secs),
            Stat::Rate => Some(h.count() as f64 / secs),
        }
        .unwrap_or(f64::NAN)
    }
}

/// The digits of a percentile statistic written `<prefix><digits>` (`p99`, `tw50`).
fn percentile<'a>(stat: &'a str, prefix: &str) -> Option<&'a str> {
    let digits = stat.strip_prefix(prefix)?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

pub fn parse_all(names: &[String], signals: &[String], counters: &[&str]) -> Result<Vec<Feature>, String> {
    if names.is_empty() {
        return Err("the model needs at least one feature".into());
    }
    let fs = names.iter().map(|n| Feature::parse(n, signals, counters)).collect::<Result<Vec<_>, _>>()?;
    for (i, f) in fs.iter().enumerate() {
        if let Some(g) = fs[..i].iter().find(|g| g.source == f.source && g.stat == f.stat) {
            // Twice the same number (runqueue_p9 and runqueue_p90) would count one signal twice.
            return Err(if g.name == f.name {
                format!("model feature {:?} is listed twice", f.name)
            } else {
                format!("model features {:?} and {:?} are the same statistic", g.name, f.name)
            });
        }
    }
    Ok(fs)
}

/// One interval's histograms, by signal name.
#[derive(Clone, Debug, Default)]
pub struct Deltas(pub Vec<(String, Histogram)>);

impl Deltas {
    pub fn get(&self, name: &str) -> Option<&Histogram> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, h)| h)
    }
}

/// One interval: the delta of every signal present in both snapshots
/// (the scorer takes its windows from [`Recent`]).
#[cfg(test)]
pub fn interval_delta(now: &Snapshot, before: &Snapshot) -> Deltas {
    delta_of(&now.signals, &before.signals)
}

fn delta_of(now: &[(String, Histogram)], before: &[(String, Histogram)]) -> Deltas {
    let find = |n: &str| before.iter().find(|(b, _)| b == n).map(|(_, h)| h);
    Deltas(now.iter().filter_map(|(n, h)| find(n).map(|b| (n.clone(), h.delta(b)))).collect())
}

/// How many intervals back a quiet interval's statistics may reach. An idle
/// node has ~40 run-queue waits a second, fewer than [`MIN_RUNQUEUE_EVENTS`]:
/// its intervals are taken together with the ones before them until they hold
/// enough, rather than discarded (a baseline then forms on any node). A node
/// with fewer than 50 waits in 30 s (ksense's own threads wake every second)
/// has too little to calibrate on.
pub const MAX_POOLED_INTERVALS: usize = 30;

/// The statistics an interval is scored on: over the interval itself, or
/// over it and the ones before it when it alone holds too few events.
pub struct Window {
    pub delta: Deltas,
    /// Its span (the real one: a late tick is a longer interval).
    pub secs: f64,
    /// How many intervals it spans (1 on a busy node).
    pub intervals: usize,
}

/// The cumulative histograms of the last snapshots, of the signals the
/// features and the run-queue gate read.
pub struct Recent {
    keep: Vec<String>,
    snaps: std::collections::VecDeque<(std::time::Duration, Vec<(String, Histogram)>)>,
}

impl Recent {
    pub fn new(features: &[Feature]) -> Recent {
        let mut keep: Vec<String> = features.iter().map(|f| f.source.clone()).collect();
        keep.push(RUNQUEUE.to_string());
        keep.sort();
        keep.dedup();
        Recent { keep, snaps: Default::default() }
    }

    /// Adds the snapshot taken at `at` and returns the window ending there:
    /// the last interval if it holds [`MIN_RUNQUEUE_EVENTS`], else the
    /// shortest run of recent intervals that does, else the longest kept.
    /// None for the first snapshot, and for an interval without run-queue
    /// events of its own (no data: no update).
    pub fn push(&mut self, snap: Snapshot, at: std::time::Duration) -> Option<Window> {
        let signals = snap.signals.into_iter().filter(|(n, _)| self.keep.contains(n)).collect();
        self.snaps.push_back((at, signals));
        if self.snaps.len() > MAX_POOLED_INTERVALS + 1 {
            self.snaps.pop_front();
        }
        let count = |s: &[(String, Histogram)]| s.iter().find(|(n, _)| n == RUNQUEUE).map_or(0, |(_, h)| h.count());
        let (now_at, now) = self.snaps.back()?;
        let total = count(now);
        let n = self.snaps.len();
        if n < 2 || total.saturating_sub(count(&self.snaps[n - 2].1)) == 0 {
            return None;
        }
        let back = (1..n)
            .find(|&k| total.saturating_sub(count(&self.snaps[n - 1 - k].1)) >= MIN_RUNQUEUE_EVENTS)
            .unwrap_or(n - 1);
        let (then_at, then) = &self.snaps[n - 1 - back];
        Some(Window {
            delta: delta_of(now, then),
            secs: now_at.saturating_sub(*then_at).as_secs_f64(),
            intervals: back,
        })
    }
}

/// The feature vector of an interval `secs` long (NaN where a feature was
/// not measured, see [`Feature::value`]), and whether it is fit for
/// calibration.
pub fn vector(features: &[Feature], delta: &Deltas, secs: f64) -> (Vec<f64>, bool) {
    let x: Vec<f64> = features.iter().map(|f| f.value(delta, secs)).collect();
    let ok = runqueue_events(delta) >= MIN_RUNQUEUE_EVENTS && !x.iter().any(|v| v.is_infinite());
    (x, ok)
}

/// Run-queue waits in the interval: none, and the interval carries no data.
pub fn runqueue_events(delta: &Deltas) -> u64 {
    delta.get(RUNQUEUE).map_or(0, Histogram::count)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The names the probes provide today (probes::signal_names() in the binary).
    fn names() -> Vec<String> {
        let mut v: Vec<String> = ["runqueue", "runqueue_wakeup", "dstate"].map(String::from).to_vec();
        v.extend(
            ["hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu"]
                .map(|x| format!("softirq_{x}")),
        );
        v
    }

    #[test]
    fn parses_names() {
        let n = names();
        assert_eq!(Feature::parse("runqueue_wakeup_p99", &n, &[]).unwrap().source, "runqueue_wakeup");
        let f = Feature::parse("runqueue_p99", &n, &[]).unwrap();
        assert_eq!((f.source.as_str(), f.stat), ("runqueue", Stat::Quantile(0.99)));
        assert_eq!(Feature::parse("runqueue_p999", &n, &[]).unwrap().stat, Stat::Quantile(0.999));
        assert_eq!(Feature::parse("runqueue_p50", &n, &[]).unwrap().stat, Stat::Quantile(0.5));
        assert_eq!(Feature::parse("softirq_net_rx_busy", &n, &[]).unwrap().stat, Stat::Busy);
        assert_eq!(Feature::parse("runqueue_wakeup_tw90", &n, &[]).unwrap().stat, Stat::TimeQuantile(0.9));
        assert_eq!(Feature::parse("runqueue_tw999", &n, &[]).unwrap().stat, Stat::TimeQuantile(0.999));
        for bad in ["runqueue_tw", "runqueue_tw0", "runqueue_tw100", "runqueue_p100", "runqueue_p990"] {
            assert!(Feature::parse(bad, &n, &[]).is_err(), "{bad}");
        }
        assert_eq!(Feature::parse("runqueue_p50", &n, &[]).unwrap().stat, Stat::Quantile(0.5));
        assert_eq!(Feature::parse("runqueue_wakeup_rate", &n, &[]).unwrap().stat, Stat::Rate);
        assert_eq!(Feature::parse("softirq_net_rx_mean", &n, &[]).unwrap().source, "softirq_net_rx");
        assert_eq!(Feature::parse("softirq_HRTIMER_p99", &n, &[]).unwrap().source, "softirq_hrtimer");
        for bad in ["runqueue", "runqueue_p", "runqueue_p0", "cpu_mean", "softirq_foo_mean", "dstate_max"] {
            assert!(Feature::parse(bad, &n, &[]).is_err(), "{bad}");
        }
        assert!(parse_all(&["dstate_mean".into(), "dstate_mean".into()], &n, &[]).is_err());
        for twice in [["runqueue_p9", "runqueue_p90"], ["runqueue_tw9", "runqueue_tw90"]] {
            let e = parse_all(&twice.map(String::from), &n, &[]).unwrap_err();
            assert!(e.contains("the same statistic"), "{e}");
        }
        assert!(parse_all(&["runqueue_p90".into(), "runqueue_tw90".into()], &n, &[]).is_ok());
        // A counter has a rate and nothing else.
        let c = ["tcp_retransmit".to_string()];
        assert_eq!(Feature::parse("tcp_retransmit_rate", &c, &["tcp_retransmit"]).unwrap().stat, Stat::Rate);
        let e = Feature::parse("tcp_retransmit_p99", &c, &["tcp_retransmit"]).unwrap_err();
        assert!(e.contains("its statistic is rate"), "{e}");
    }

    fn snap(runqueue: Histogram) -> Snapshot {
        let mut s = Snapshot::default();
        for n in names() {
            let h = if n == RUNQUEUE { runqueue.clone() } else { Histogram::default() };
            s.signals.push((n, h));
        }
        s
    }

    #[test]
    fn vector_from_delta() {
        let b = crate::signals::buckets::kernel_bounds();
        let mut rq = Histogram::default();
        for _ in 0..60 {
            rq.slots[crate::signals::buckets::slot_of(b, 1_000_000)] += 1;
            rq.sum_ns += 1_000_000;
        }
        let (now, before) = (snap(rq), snap(Histogram::default()));
        let d = interval_delta(&now, &before);
        let fs = parse_all(
            &[
                "runqueue_mean".into(),
                "dstate_mean".into(),
                "runqueue_busy".into(),
                "runqueue_rate".into(),
                "dstate_p99".into(),
                "dstate_busy".into(),
                "dstate_rate".into(),
            ],
            &names(),
            &[],
        )
        .unwrap();
        let (x, ok) = vector(&fs, &d, 2.0);
        assert!(ok, "an interval with a feature not measured is still fit for calibration");
        assert!((x[0] - 1e-3).abs() < 1e-12);
        // No D-state sleeps: their mean, P99 and share are not measured; their rate is 0.
        assert!(x[1].is_nan() && x[4].is_nan() && x[5].is_nan(), "{x:?}");
        assert_eq!(x[6], 0.0);
        // 60 waits of 1 ms in 2 s: 0.03 tasks waiting on average, 30 events/s.
        assert!((x[2] - 0.03).abs() < 1e-12, "{}", x[2]);
        assert!((x[3] - 30.0).abs() < 1e-12, "{}", x[3]);
        let (_, ok) = vector(&fs, &interval_delta(&before, &before), 1.0);
        assert!(!ok, "no run-queue events: not for calibration");
        // A source the interval lacks (its family is off) is not measured, whatever the statistic.
        let (x, _) = vector(&fs, &Deltas(vec![(RUNQUEUE.to_string(), d.get(RUNQUEUE).unwrap().clone())]), 2.0);
        assert!(x[5].is_nan() && x[6].is_nan(), "{x:?}");
    }

    /// An idle node's intervals: 20 waits of 1 ms each second. The window
    /// reaches back to the 3 intervals that hold 50 (with 60); a busy
    /// interval is a window of its own; an interval without waits gives none.
    #[test]
    fn quiet_intervals_pool_until_they_hold_enough() {
        let b = crate::signals::buckets::kernel_bounds();
        let fs = parse_all(&["runqueue_mean".into(), "runqueue_rate".into()], &names(), &[]).unwrap();
        let mut recent = Recent::new(&fs);
        let mut rq = Histogram::default();
        let mut step = |rq: &mut Histogram, n: u64, t: u64| {
            rq.slots[crate::signals::buckets::slot_of(b, 1_000_000)] += n;
            rq.sum_ns += n * 1_000_000;
            recent.push(snap(rq.clone()), Duration::from_secs(t))
        };
        assert!(step(&mut rq, 20, 0).is_none(), "one snapshot is no interval");
        let w = step(&mut rq, 20, 1).expect("an interval with waits");
        let (x, ok) = vector(&fs, &w.delta, w.secs);
        assert_eq!((w.intervals, ok), (1, false), "20 waits, nothing before: too few to calibrate on");
        assert!((x[1] - 20.0).abs() < 1e-12);
        assert_eq!(step(&mut rq, 20, 2).unwrap().intervals, 2, "40 waits: still too few, all there is");
        let w = step(&mut rq, 20, 3).expect("an interval with waits");
        let (x, ok) = vector(&fs, &w.delta, w.secs);
        assert_eq!((w.intervals, w.secs, ok), (3, 3.0, true), "3 intervals hold 60 waits");
        assert!((x[0] - 1e-3).abs() < 1e-12 && (x[1] - 20.0).abs() < 1e-12, "{x:?}");
        let w = step(&mut rq, 500, 4).unwrap();
        assert_eq!((w.intervals, w.secs), (1, 1.0), "a busy interval stands alone");
        assert!(step(&mut rq, 0, 5).is_none(), "no waits of its own: no update");
        // Never further back than MAX_POOLED_INTERVALS.
        for t in 6..100 {
            let w = step(&mut rq, 1, t).unwrap();
            assert!(w.intervals <= MAX_POOLED_INTERVALS, "{}", w.intervals);
        }
        assert_eq!(step(&mut rq, 1, 100).unwrap().intervals, MAX_POOLED_INTERVALS);
    }
}
