//! Victims: friction per workload, each exported workload scored against a
//! baseline of its own, on its own signals. Node friction says the node got
//! worse; this says for whom.
//!
//! A workload's features are the P99 of its tasks' run-queue waits and the
//! P99 of the requests it serves (0 in an interval without any), in the
//! node model's log space. Each workload calibrates from the first interval
//! it is seen, with the node's warm-up and window, so a workload that
//! arrives with the interference (a hog started on a busy node) has no
//! baseline yet and is never called a victim of it. A workload that stops
//! being exported (gone, or folded into `other` by the cap) is forgotten:
//! the bank holds at most as many models as the workload cap.

use std::collections::HashMap;
use std::time::Duration;

use super::{Model, ModelConfig, Output};
use crate::signals::histogram::Histogram;

/// The per-workload features, in order.
pub const FEATURES: [&str; 2] = ["runqueue_p99", "requests_server_p99"];

/// A workload's interval with fewer run-queue waits than this is neither a
/// calibration sample nor scored: its P99 would be one or two waits.
pub const MIN_EVENTS: u64 = 20;

/// One exported workload's cumulative histograms, as the kernel has them.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Its cgroup path: what keys its baseline.
    pub key: String,
    /// Its labels, `workload` first, as its other series carry them.
    pub labels: Vec<(&'static str, String)>,
    pub runqueue: Histogram,
    /// Requests it served; `None` without the requests family.
    pub server: Option<Histogram>,
}

/// A workload's latest score.
#[derive(Clone, Debug, PartialEq)]
pub struct Victim {
    pub labels: Vec<(&'static str, String)>,
    pub friction: f64,
    pub interference: f64,
    pub direction: i8,
    /// Each feature's share of friction², in [`FEATURES`] order.
    pub contributions: Vec<f64>,
}

/// Where the per-workload readings come from (the workloads stage, wired in
/// by the app: the model does not depend on it).
pub trait Feed: Send + Sync {
    fn read(&self) -> Option<Vec<Reading>>;
}

struct Entry {
    model: Model,
    first_seen: Duration,
    prev: Option<(Histogram, Option<Histogram>)>,
    last: Option<Output>,
    labels: Vec<(&'static str, String)>,
}

/// The per-workload models.
pub struct Victims {
    cfg: ModelConfig,
    entries: HashMap<String, Entry>,
}

/// ln(1 + P99 in µs), as the node model sees latencies; 0 without events.
fn p99_feature(h: &Histogram) -> f64 {
    h.quantile_seconds(0.99).map_or(0.0, |s| (s.max(0.0) * 1e6).ln_1p())
}

impl Victims {
    /// `template`: the node model's settings (warm-up, window, side,
    /// regularisation); its features are replaced by [`FEATURES`].
    pub fn new(template: &ModelConfig) -> Victims {
        let cfg = ModelConfig { features: FEATURES.iter().map(|s| s.to_string()).collect(), ..template.clone() };
        Victims { cfg, entries: HashMap::new() }
    }

    /// One interval: `now` on the caller's monotonic clock, `readings`
    /// every exported workload's cumulative histograms. Workloads absent
    /// from `readings` are forgotten.
    pub fn observe(&mut self, now: Duration, readings: Vec<Reading>) {
        let keep: std::collections::HashSet<&str> = readings.iter().map(|r| r.key.as_str()).collect();
        self.entries.retain(|k, _| keep.contains(k.as_str()));
        for r in readings {
            let e = self.entries.entry(r.key).or_insert_with(|| Entry {
                model: Model::new(self.cfg.clone()),
                first_seen: now,
                prev: None,
                last: None,
                labels: Vec::new(),
            });
            e.labels = r.labels;
            let Some((runq0, server0)) = e.prev.replace((r.runqueue.clone(), r.server.clone())) else { continue };
            let runq = r.runqueue.delta(&runq0);
            if runq.count() < MIN_EVENTS {
                continue;
            }
            let server = match (&r.server, &server0) {
                (Some(now), Some(before)) => p99_feature(&now.delta(before)),
                _ => 0.0,
            };
            let x = [p99_feature(&runq), server];
            if let Some(o) = e.model.observe(now.saturating_sub(e.first_seen), &x, true) {
                e.last = Some(o);
            }
        }
    }

    /// The workloads with a baseline and a scored interval, by key.
    pub fn scores(&self) -> Vec<Victim> {
        let mut out: Vec<(&String, Victim)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| {
                let o = e.last.as_ref()?;
                Some((
                    k,
                    Victim {
                        labels: e.labels.clone(),
                        friction: o.friction,
                        interference: o.interference,
                        direction: o.direction,
                        contributions: o.contributions.clone(),
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Workloads being tracked (calibrating or scored).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::Rng;
    use crate::signals::buckets::{kernel_bounds, slot_of};

    /// Adds `n` waits around `us` microseconds (jittered) to `h`.
    fn add(h: &mut Histogram, rng: &mut Rng, n: u64, us: f64) {
        let b = kernel_bounds();
        for _ in 0..n {
            let ns = (us * 1e3 * (0.5 + rng.uniform())) as u64;
            h.slots[slot_of(b, ns)] += 1;
            h.sum_ns += ns;
        }
    }

    fn template() -> ModelConfig {
        ModelConfig { warmup: Duration::from_secs(60), window: 60, ..ModelConfig::new(vec!["x".into()]) }
    }

    fn reading(key: &str, runq: &Histogram, server: &Histogram) -> Reading {
        Reading {
            key: key.into(),
            labels: vec![("workload", key.into())],
            runqueue: runq.clone(),
            server: Some(server.clone()),
        }
    }

    /// A server calibrates on calm intervals, then its waits grow tenfold:
    /// its friction rises past its own normal; a workload that arrived
    /// with the trouble has no baseline and no score; a workload that
    /// goes away is forgotten.
    #[test]
    fn the_workload_that_suffers_scores_and_a_newcomer_does_not() {
        let mut v = Victims::new(&template());
        let mut rng = Rng::new(7);
        let (mut web_rq, mut web_srv, mut hog_rq) = (Histogram::default(), Histogram::default(), Histogram::default());
        let empty = Histogram::default();
        let mut t = 0;
        for _ in 0..120 {
            t += 1;
            add(&mut web_rq, &mut rng, 200, 20.0);
            add(&mut web_srv, &mut rng, 200, 300.0);
            v.observe(Duration::from_secs(t), vec![reading("/web", &web_rq, &web_srv)]);
        }
        let calm = v.scores();
        assert_eq!(calm.len(), 1);
        assert_eq!(calm[0].labels, [("workload", "/web".to_string())]);
        let mut above = 0;
        for i in 0..30 {
            t += 1;
            add(&mut web_rq, &mut rng, 200, 400.0);
            add(&mut web_srv, &mut rng, 200, 2000.0);
            add(&mut hog_rq, &mut rng, 500, 3000.0);
            v.observe(
                Duration::from_secs(t),
                vec![reading("/web", &web_rq, &web_srv), reading("/hog", &hog_rq, &empty)],
            );
            let s = v.scores();
            assert_eq!(s.len(), 1, "the hog is calibrating: no score ({i})");
            above += usize::from(s[0].interference > 0.5 && s[0].direction > 0);
        }
        assert_eq!(above, 30, "every interval of the trouble scores the server high");
        assert_eq!(v.len(), 2);
        // Too few waits: not scored, the last score stays.
        t += 1;
        let before = v.scores();
        add(&mut web_rq, &mut rng, 3, 20.0);
        v.observe(Duration::from_secs(t), vec![reading("/web", &web_rq, &web_srv)]);
        assert_eq!(v.scores(), before);
        assert_eq!(v.len(), 1, "the hog is forgotten once it is not exported");
        v.observe(Duration::from_secs(t + 1), vec![]);
        assert!(v.is_empty() && v.scores().is_empty());
    }
}
