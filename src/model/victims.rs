//! Victims: friction per workload, each exported workload scored against a
//! baseline of its own, on its own signals. Node friction says the node got
//! worse; this says for whom.
//!
//! A workload's features are the P99 of its tasks' run-queue waits and the
//! P99 of the requests it serves (0 in an interval without any), in the
//! node model's log space; where the machine counts cycles and
//! instructions, also its cycles per instruction (CPI, the signal of
//! Google's CPI2 and KubeMarla: a neighbour thrashing the shared caches
//! raises it before it shows in any wait). Each workload calibrates from the first interval
//! it is seen, with the node's warm-up and window, so a workload that
//! arrives with the interference (a hog started on a busy node) has no
//! baseline yet and is never called a victim of it. A workload that stops
//! being exported (gone, or folded into `other` by the cap) is forgotten:
//! the bank holds at most as many models as the workload cap. Baselines
//! are saved beside the node's (`state::save_workloads`) and a workload
//! seen again after a restart starts from its saved one; saved baselines of
//! workloads not seen within [`UNCLAIMED_TTL`] of the start are dropped.
//!
//! Suspects (the method of Google's CPI2): for each victim, the Pearson
//! correlation over the last [`HISTORY`] intervals between its friction and
//! each other workload's CPU use; workloads that used less than
//! [`MIN_CPU`] of a CPU on average cannot be antagonists and are left out.
//! A workload seen for less of the window than the victim counts 0 CPU
//! before it was seen (it was not running, or too quiet to be exported).

use std::collections::HashMap;
use std::time::Duration;

use super::{Model, ModelConfig, Output};
use crate::signals::histogram::Histogram;

/// The per-workload features, in order.
pub const FEATURES: [&str; 2] = ["runqueue_p99", "requests_server_p99"];
/// ln(cycles / instructions) of the interval, after [`FEATURES`] when counted.
pub const CPI_FEATURE: &str = "cpi";
const FEATURES_CPI: [&str; 3] = [FEATURES[0], FEATURES[1], CPI_FEATURE];

/// An interval with fewer instructions than this has no CPI: the workload
/// barely ran, and a handful of cache misses would swing it.
pub const MIN_INSTRUCTIONS: f64 = 1e6;

/// A workload's interval with fewer run-queue waits than this is neither a
/// calibration sample nor scored: its P99 would be one or two waits.
pub const MIN_EVENTS: u64 = 20;

/// Intervals of friction and CPU use the suspects are correlated over.
pub const HISTORY: usize = 120;
/// Fewest intervals with both a friction and a CPU reading to correlate.
pub const MIN_POINTS: usize = 10;
/// A suspect's mean CPU use over the window, in CPUs, at least.
pub const MIN_CPU: f64 = 0.05;
/// Suspects named per victim, and victims given suspects (the most
/// interfered with): bounds the suspect series at 15.
pub const SUSPECTS: usize = 3;
pub const MAX_VICTIMS: usize = 5;

/// A workload is a victim when worse and its own interference ratio is at
/// least this: friction² twice its own normal (99th percentile). Stricter
/// than the node's "above 0", because a workload's baseline is short and
/// its own (a hog calibrated on its own bursts sat at 0.07 in CI); on
/// Gaussian features a calm workload crosses it about once in 10⁴ intervals.
pub const VICTIM_RATIO: f64 = 0.5;

/// How long after the start a saved baseline waits for its workload.
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(600);

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
    /// CPU time it used so far (its cgroup's `cpu.stat`); `None` if unknown.
    pub cpu_seconds: Option<f64>,
    /// Cycles and instructions it ran so far; `None` where not counted.
    pub cpi: Option<(f64, f64)>,
}

/// A workload's latest score.
#[derive(Clone, Debug, PartialEq)]
pub struct Victim {
    pub labels: Vec<(&'static str, String)>,
    /// The features its contributions are of.
    pub features: &'static [&'static str],
    pub friction: f64,
    pub interference: f64,
    pub direction: i8,
    /// Each feature's share of friction², in `features` order.
    pub contributions: Vec<f64>,
    /// For a victim ([`Victim::is_victim`]): the likeliest antagonists,
    /// first the most correlated.
    pub suspects: Vec<Suspect>,
}

impl Victim {
    /// Worse than its own baseline, and by [`VICTIM_RATIO`] at least.
    pub fn is_victim(&self) -> bool {
        is_victim(self.interference, self.direction)
    }
}

fn is_victim(interference: f64, direction: i8) -> bool {
    interference >= VICTIM_RATIO && direction > 0
}

/// A co-located workload whose CPU use moved with a victim's friction.
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    pub workload: String,
    /// Pearson correlation of its CPU use with the victim's friction.
    pub correlation: f64,
    /// Its mean CPU use over the window, in CPUs.
    pub cpu: f64,
}

/// One interval of one workload: its friction if scored (else NaN) and its
/// CPU use in CPUs (NaN if unknown).
#[derive(Clone, Copy, Debug)]
struct Tick {
    friction: f64,
    cpu: f64,
}

/// Where the per-workload readings come from (the workloads stage, wired in
/// by the app: the model does not depend on it).
pub trait Feed: Send + Sync {
    fn read(&self) -> Option<Vec<Reading>>;
    /// Its readings carry cycles and instructions ([`Reading::cpi`]).
    fn cpi(&self) -> bool {
        false
    }
}

/// A workload's cumulative readings at its last interval: run queue,
/// served requests, (cycles, instructions).
type Cumulative = (Histogram, Option<Histogram>, Option<(f64, f64)>);

struct Entry {
    model: Model,
    first_seen: Duration,
    prev: Option<Cumulative>,
    last: Option<Output>,
    labels: Vec<(&'static str, String)>,
    cpu_prev: Option<(f64, Duration)>,
    history: std::collections::VecDeque<Tick>,
}

/// The per-workload models.
pub struct Victims {
    cfg: ModelConfig,
    features: &'static [&'static str],
    entries: HashMap<String, Entry>,
    /// Saved baselines of workloads not seen since the start.
    unclaimed: HashMap<String, super::Baseline>,
    /// A baseline froze (or was dropped) since the last [`Victims::take_changed`].
    changed: bool,
}

/// ln(1 + P99 in µs), as the node model sees latencies; NaN without events
/// (not measured: left out of the score, as in the node model).
fn p99_feature(h: &Histogram) -> f64 {
    h.quantile_seconds(0.99).map_or(f64::NAN, |s| (s.max(0.0) * 1e6).ln_1p())
}

impl Victims {
    /// `template`: the node model's settings (warm-up, window, side,
    /// regularisation); its features are replaced by [`FEATURES`].
    pub fn new(template: &ModelConfig) -> Victims {
        Self::with_saved(template, false, HashMap::new())
    }

    /// Starting from saved baselines (by workload key), with [`FEATURES`]
    /// and, if `cpi`, [`CPI_FEATURE`].
    pub fn with_saved(template: &ModelConfig, cpi: bool, saved: HashMap<String, super::Baseline>) -> Victims {
        Victims {
            cfg: Self::config(template, cpi),
            features: Self::features(cpi),
            entries: HashMap::new(),
            unclaimed: saved,
            changed: false,
        }
    }

    pub fn features(cpi: bool) -> &'static [&'static str] {
        if cpi {
            &FEATURES_CPI
        } else {
            &FEATURES
        }
    }

    /// The per-workload models' settings: the node's, with [`Victims::features`].
    pub fn config(template: &ModelConfig, cpi: bool) -> ModelConfig {
        ModelConfig { features: Self::features(cpi).iter().map(|s| s.to_string()).collect(), ..template.clone() }
    }

    /// Every baseline to save, once one changed since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<(String, super::Baseline)>> {
        let mut changed = std::mem::take(&mut self.changed);
        for e in self.entries.values_mut() {
            changed |= e.model.take_baseline_update().is_some();
        }
        if !changed {
            return None;
        }
        let mut out: Vec<(String, super::Baseline)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.model.baseline().map(|b| (k.clone(), b.clone())))
            .chain(self.unclaimed.iter().map(|(k, b)| (k.clone(), b.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// One interval: `now` on the caller's monotonic clock, `readings`
    /// every exported workload's cumulative histograms. Workloads absent
    /// from `readings` are forgotten.
    pub fn observe(&mut self, now: Duration, readings: Vec<Reading>) {
        let keep: std::collections::HashSet<&str> = readings.iter().map(|r| r.key.as_str()).collect();
        let before = self.entries.len();
        self.entries.retain(|k, _| keep.contains(k.as_str()));
        if now >= UNCLAIMED_TTL && !self.unclaimed.is_empty() {
            self.unclaimed.clear();
            self.changed = true;
        }
        self.changed |= self.entries.len() < before;
        for r in readings {
            let saved = self.unclaimed.remove(&r.key);
            let cfg = &self.cfg;
            let e = self.entries.entry(r.key).or_insert_with(|| Entry {
                model: match saved {
                    Some(b) => Model::with_baseline(cfg.clone(), b),
                    None => Model::new(cfg.clone()),
                },
                first_seen: now,
                prev: None,
                last: None,
                labels: Vec::new(),
                cpu_prev: None,
                history: std::collections::VecDeque::with_capacity(HISTORY),
            });
            e.labels = r.labels;
            let cpu = match (r.cpu_seconds, e.cpu_prev) {
                (Some(c), Some((c0, t0))) if now > t0 => ((c - c0) / (now - t0).as_secs_f64()).max(0.0),
                _ => f64::NAN,
            };
            e.cpu_prev = r.cpu_seconds.map(|c| (c, now));
            if e.history.len() == HISTORY {
                e.history.pop_front();
            }
            e.history.push_back(Tick { friction: f64::NAN, cpu });
            let Some((runq0, server0, cpi0)) = e.prev.replace((r.runqueue.clone(), r.server.clone(), r.cpi)) else {
                continue;
            };
            let runq = r.runqueue.delta(&runq0);
            if runq.count() < MIN_EVENTS {
                continue;
            }
            let server = match (&r.server, &server0) {
                (Some(now), Some(before)) => p99_feature(&now.delta(before)),
                _ => f64::NAN,
            };
            let mut x = vec![p99_feature(&runq), server];
            if self.features.len() > FEATURES.len() {
                match (r.cpi, cpi0) {
                    (Some((c, i)), Some((c0, i0))) if i - i0 >= MIN_INSTRUCTIONS && c >= c0 => {
                        x.push(((c - c0) / (i - i0)).max(1e-3).ln())
                    }
                    _ => continue,
                }
            }
            if let Some(o) = e.model.observe(now.saturating_sub(e.first_seen), &x, true) {
                if let Some(t) = e.history.back_mut() {
                    t.friction = o.friction;
                }
                e.last = Some(o);
            }
        }
    }

    /// The workloads with a baseline and a scored interval, by key; the
    /// [`MAX_VICTIMS`] most interfered with carry their suspects.
    pub fn scores(&self) -> Vec<Victim> {
        let mut victims: Vec<(&String, f64)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| {
                e.last.as_ref().filter(|o| is_victim(o.interference, o.direction)).map(|o| (k, o.interference))
            })
            .collect();
        victims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        victims.truncate(MAX_VICTIMS);
        let mut out: Vec<(&String, Victim)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| {
                let o = e.last.as_ref()?;
                Some((
                    k,
                    Victim {
                        labels: e.labels.clone(),
                        features: self.features,
                        friction: o.friction,
                        interference: o.interference,
                        direction: o.direction,
                        contributions: o.contributions.clone(),
                        suspects: if victims.iter().any(|(v, _)| *v == k) { self.suspects(k) } else { Vec::new() },
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// The other workloads ranked by how their CPU use correlates with the
    /// friction of `victim`: at most [`SUSPECTS`], correlation above 0.
    fn suspects(&self, victim: &str) -> Vec<Suspect> {
        let Some(v) = self.entries.get(victim) else { return Vec::new() };
        let n = v.history.len();
        let mut out: Vec<Suspect> = self
            .entries
            .iter()
            .filter(|(k, _)| k.as_str() != victim)
            .filter_map(|(k, e)| {
                // Aligned at the newest interval; 0 CPU before it was seen.
                let pad = n.saturating_sub(e.history.len());
                let cpu = |i: usize| if i < pad { 0.0 } else { e.history[i - pad].cpu };
                let pairs: Vec<(f64, f64)> = (0..n)
                    .map(|i| (v.history[i].friction, cpu(i)))
                    .filter(|(f, c)| f.is_finite() && c.is_finite())
                    .collect();
                if pairs.len() < MIN_POINTS {
                    return None;
                }
                let mean_cpu = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64;
                let r = pearson(&pairs)?;
                (mean_cpu >= MIN_CPU && r > 0.0).then(|| Suspect { workload: k.clone(), correlation: r, cpu: mean_cpu })
            })
            .collect();
        out.sort_by(|a, b| b.correlation.total_cmp(&a.correlation).then_with(|| a.workload.cmp(&b.workload)));
        out.truncate(SUSPECTS);
        out
    }

    /// Workloads being tracked (calibrating or scored).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Pearson's r of the pairs; `None` when either side is constant.
fn pearson(p: &[(f64, f64)]) -> Option<f64> {
    let n = p.len() as f64;
    let (mx, my) = (p.iter().map(|q| q.0).sum::<f64>() / n, p.iter().map(|q| q.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in p {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    let r = sxy / (sxx * syy).sqrt();
    r.is_finite().then_some(r)
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
            cpu_seconds: None,
            cpi: None,
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
            above += usize::from(s[0].is_victim());
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

    /// A workload that served nothing while it calibrated and then starts
    /// serving is not a victim for it: its request latency was not
    /// measured, so its friction is its run-queue wait's alone (scored
    /// against the zero it used to read, the first request made it one).
    #[test]
    fn a_workload_that_starts_serving_is_not_a_victim_for_it() {
        let mut v = Victims::new(&template());
        let mut rng = Rng::new(9);
        let (mut rq, mut srv) = (Histogram::default(), Histogram::default());
        for t in 1..=120 {
            add(&mut rq, &mut rng, 200, 20.0);
            if t > 80 {
                add(&mut srv, &mut rng, 200, 300.0);
            }
            v.observe(Duration::from_secs(t), vec![reading("/web", &rq, &srv)]);
            if let Some(s) = v.scores().first() {
                assert!(!s.is_victim(), "{t}: {s:?}");
            }
        }
        assert_eq!(v.scores().len(), 1, "scored once calibrated");
    }

    /// With cycles and instructions counted, a workload whose waits do not
    /// change but whose CPI doubles (a neighbour thrashing the caches) is a
    /// victim; an interval in which it barely ran is not scored.
    #[test]
    fn a_doubled_cpi_alone_makes_a_victim() {
        let mut v = Victims::with_saved(&template(), true, HashMap::new());
        let mut rng = Rng::new(3);
        let (mut rq, srv) = (Histogram::default(), Histogram::default());
        let (mut cycles, mut instr) = (0.0, 0.0);
        let mut step = |v: &mut Victims, t: u64, cpi: f64, n: f64, rng: &mut Rng| {
            add(&mut rq, rng, 200, 20.0);
            instr += n;
            cycles += n * cpi * (0.95 + 0.1 * rng.uniform());
            let r = Reading { cpi: Some((cycles, instr)), ..reading("/web", &rq, &srv) };
            v.observe(Duration::from_secs(t), vec![r]);
            v.scores().into_iter().next()
        };
        for t in 1..=120 {
            let s = step(&mut v, t, 1.0, 1e9, &mut rng);
            if t > 61 {
                assert!(!s.unwrap().is_victim(), "calm at {t}");
            }
        }
        let s = step(&mut v, 121, 2.0, 1e9, &mut rng).unwrap();
        assert!(s.is_victim() && s.features == ["runqueue_p99", "requests_server_p99", "cpi"], "{s:?}");
        assert!(s.contributions[2] > 0.9 * s.friction * s.friction, "CPI carries it: {s:?}");
        let before = v.scores();
        step(&mut v, 122, 5.0, 10.0, &mut rng);
        assert_eq!(v.scores(), before, "ten instructions: no CPI, not scored");
    }

    /// Its frozen baseline is handed out to save; a new bank started from
    /// it scores the workload at its first scored interval, before any
    /// warm-up could end; a saved baseline nobody claims is dropped.
    #[test]
    fn saved_baselines_score_at_once_after_a_restart() {
        let mut v = Victims::new(&template());
        let mut rng = Rng::new(5);
        let (mut rq, srv) = (Histogram::default(), Histogram::default());
        assert!(v.take_changed().is_none());
        let mut saved = None;
        for t in 1..=80 {
            add(&mut rq, &mut rng, 100, 20.0);
            v.observe(Duration::from_secs(t), vec![reading("/web", &rq, &srv)]);
            if let Some(all) = v.take_changed() {
                saved = Some(all);
            }
        }
        let saved = saved.expect("the freeze is handed out");
        assert_eq!(saved.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/web"]);
        let mut ghost = saved.clone();
        ghost[0].0 = "/gone".into();
        let mut w = Victims::with_saved(&template(), false, saved.into_iter().chain(ghost).collect());
        for t in 1..=2 {
            add(&mut rq, &mut rng, 100, 20.0);
            w.observe(Duration::from_secs(t), vec![reading("/web", &rq, &srv)]);
        }
        assert_eq!(w.scores().len(), 1, "scored at its first interval, 58 s before a warm-up would end");
        w.observe(UNCLAIMED_TTL, vec![reading("/web", &rq, &srv)]);
        let kept = w.take_changed().expect("dropping the unclaimed one is a change");
        assert_eq!(kept.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/web"]);
    }

    /// A server, a hog that runs in bursts (and was not there at first),
    /// an idle bystander and a busy workload whose CPU use does not change:
    /// the hog is the one suspect named first; the bystander is too idle to
    /// be named; the steady one does not move with the victim's friction.
    #[test]
    fn the_hog_whose_cpu_moves_with_the_victims_friction_is_the_suspect() {
        let mut v = Victims::new(&template());
        let mut rng = Rng::new(11);
        let mut h: HashMap<&str, (Histogram, f64)> = HashMap::new();
        let empty = Histogram::default();
        let mut feed = |v: &mut Victims, t: u64, hog_on: Option<bool>, rng: &mut Rng| {
            let mut rs = Vec::new();
            let web_us = if hog_on == Some(true) { 500.0 } else { 20.0 };
            for (key, waits, us, cpu) in [
                ("/web", 200, web_us, 0.3),
                ("/idle", 30, 10.0, 0.001),
                ("/steady", 100, 50.0, 0.8 + 0.01 * rng.uniform()),
            ]
            .into_iter()
            .chain(hog_on.map(|on| ("/hog", 100, 3000.0, if on { 1.8 } else { 0.0 })))
            {
                let e = h.entry(key).or_default();
                add(&mut e.0, rng, waits, us);
                e.1 += cpu;
                rs.push(Reading {
                    key: key.into(),
                    labels: vec![("workload", key.into())],
                    runqueue: e.0.clone(),
                    server: Some(empty.clone()),
                    cpu_seconds: Some(e.1),
                    cpi: None,
                });
            }
            v.observe(Duration::from_secs(t), rs);
        };
        let mut t = 0;
        for _ in 0..80 {
            t += 1;
            feed(&mut v, t, None, &mut rng);
        }
        // On for 12 intervals, off for 8, ending on.
        for i in 0..52 {
            t += 1;
            feed(&mut v, t, Some(i % 20 < 12), &mut rng);
        }
        let s = v.scores();
        let web = s.iter().find(|w| w.labels[0].1 == "/web").unwrap();
        assert!(web.is_victim(), "the last interval had the hog on: {web:?}");
        let names: Vec<&str> = web.suspects.iter().map(|s| s.workload.as_str()).collect();
        assert_eq!(names.first(), Some(&"/hog"), "{:?}", web.suspects);
        assert!(web.suspects[0].correlation > 0.8, "{:?}", web.suspects);
        assert!(!names.contains(&"/idle"), "an idle workload is no antagonist: {:?}", web.suspects);
        assert!(s.iter().all(|w| w.suspects.is_empty() || w.is_victim()), "only victims have suspects");
        assert_eq!(pearson(&[(1.0, 2.0), (2.0, 2.0)]), None, "a constant side has no correlation");
    }
}
