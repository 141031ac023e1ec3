//! The model at run time: every interval, the probes' snapshot becomes a
//! feature vector in the model's space, is scored against the baseline, and
//! the result is published for the exporters; the baseline is loaded at
//! start, saved when it changes and at shutdown.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{Model, ModelConfig, StateError};
use crate::signals::features::{self, Feature};
use crate::signals::{Snapshot, Source};

/// Chosen by bench/qos (README, "Does friction track P99?"): the tail of the
/// wait a woken thread has before it runs, both of the waits (P99) and of the
/// time spent waiting (tw90: a flood of short waits, as a pipe storm makes,
/// pulls the P99 of the waits below its calm level while the threads it
/// starves wait seconds), the CPU share the network receive
/// softirqs take, the TCP retransmissions an RTO sent per second, and the far
/// tail of the TCP round-trip time. The block completion softirqs' share was
/// one until the load regimes (bench/README, "Across load regimes"): it ranked
/// the disk above the CPU phases for servers the disk hardly slowed. All
/// retransmissions (`tcp_retransmit_rate`) were one until seed 15: most are
/// tail-loss probes, which a bandwidth cap's overflow or a socket storm sends
/// by the tens a second; RTOs come only with sustained loss.
pub const DEFAULT_FEATURES: [&str; 5] = [
    "runqueue_wakeup_p99",
    "runqueue_wakeup_tw90",
    "softirq_net_rx_busy",
    "tcp_retransmit_timeout_rate",
    "tcp_rtt_p999",
];

/// The model's settings (`--model.*`); `Default` is what ksense ships.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub warmup: Duration,
    pub baseline_window: Duration,
    pub state_file: PathBuf,
    pub features: Vec<String>,
    pub regularisation: super::Regularisation,
    pub side: super::Side,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            interval: Duration::from_secs(1),
            warmup: super::DEFAULT_WARMUP,
            baseline_window: Duration::from_secs(300),
            state_file: "/var/lib/ksense/baseline.json".into(),
            features: DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect(),
            regularisation: super::Regularisation::default(),
            side: super::Side::default(),
        }
    }
}

/// What the model publishes each interval (plain data: the exporters do not
/// depend on the model's internals).
#[derive(Clone, Debug, Default)]
pub struct ModelView {
    pub ready: bool,
    pub samples: usize,
    /// Present once a score exists; absent while calibrating or without data.
    pub score: Option<Score>,
    /// Current feature values (seconds), by signal name.
    pub signals: Vec<(String, f64)>,
    /// Baseline saves that failed (full or read-only disk...), since start.
    pub save_failures: u64,
    /// When the interval these values come from ended; `None` before the first.
    pub at: Option<SystemTime>,
    /// The baseline's mean of each feature, back in the signals' units
    /// (from the model's log space: a geometric-style mean); empty while
    /// calibrating.
    pub baseline: Vec<(String, f64)>,
    /// Per feature, the calibration samples that had events of it; empty
    /// while calibrating.
    pub measured: Vec<(String, f64)>,
    /// The features those were too few for (`model::measured_needed`): left
    /// out of friction until the next calibration.
    pub left_out: Vec<String>,
    /// Each exported workload's friction against its own baseline, once it
    /// has one (`victims`); empty without attribution.
    pub workloads: Vec<super::victims::Victim>,
}

#[derive(Clone, Debug, Default)]
pub struct Score {
    pub friction: f64,
    pub direction: f64,
    pub energy: f64,
    pub energy_window: f64,
    pub contributions: Vec<(String, f64)>,
    /// Friction mapped into [0, 1] (`model::interference`).
    pub interference: f64,
    /// The friction that ratio is measured against (F₀).
    pub friction_reference: f64,
}

/// The model sees ln(1 + value in microseconds) for latencies and CPU shares
/// (ppm), ln(1 + value) for event rates (per second): latencies and CPU
/// shares grow by orders of magnitude under interference, and on a log scale
/// a tenfold rise in one signal does not drown a threefold rise in another.
/// bench/qos measured it: Spearman rho against client P99 0.76 -> 0.92 with
/// the same features. Microseconds keep small latencies clear of the ridge.
/// Rates stay per second: events that a calm node has none of (TCP
/// retransmissions) would otherwise put one event a second 14 log units
/// (a factor 10^6) away from none, and every stray one at the far end of
/// the distance. A saved baseline lives in this space: change it, and bump
/// STATE_VERSION.
/// NaN (no events) stays NaN: `f64::max` would turn it into 0.
fn model_space(feats: &[Feature], x: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(feats)
        .map(|(v, f)| if v.is_nan() { *v } else { (v.max(0.0) * f.stat.model_scale()).ln_1p() })
        .collect()
}

/// The inverse of [`model_space`]: back to seconds, shares and rates.
fn signal_space(feats: &[Feature], m: &[f64]) -> Vec<f64> {
    m.iter().zip(feats).map(|(v, f)| v.exp_m1() / f.stat.model_scale()).collect()
}

fn load_or_calibrate(mcfg: ModelConfig, path: &std::path::Path) -> Model {
    match super::load(path, &mcfg.features) {
        Ok(b) => {
            tracing::info!(path = %path.display(), samples = b.samples(), "loaded saved baseline");
            log_left_out(&b);
            if let Some(note) = regularisation_note(&b, mcfg.regularisation) {
                tracing::warn!("{note}");
            }
            Model::with_baseline(mcfg, b)
        }
        Err(StateError::NotFound(_)) => {
            tracing::info!(warmup = ?mcfg.warmup, "no saved baseline: calibrating");
            Model::new(mcfg)
        }
        Err(e) => {
            set_aside_unusable(path, &e, "saved baseline unusable, calibrating anew");
            Model::new(mcfg)
        }
    }
}

/// A saved baseline keeps the covariance it was calibrated with: a changed
/// `--model.regularisation` is said, not silently ignored (the baseline is
/// still usable, unlike one of other features).
fn regularisation_note(b: &super::Baseline, want: super::Regularisation) -> Option<String> {
    (b.regularisation() != want).then(|| {
        format!(
            "the saved baseline was calibrated with --model.regularisation {}; {} applies after `ksense recalibrate`",
            b.regularisation().as_str(),
            want.as_str()
        )
    })
}

/// What `ksense check` says of the baseline: (usable, one line). A start
/// with no usable baseline calibrates (the landing page and the log show how
/// far it is), so neither case is a failure.
pub fn baseline_status(cfg: &Settings) -> (bool, String) {
    let path = cfg.state_file.display();
    let warmup = format!("{}s", cfg.warmup.as_secs());
    match super::load(&cfg.state_file, &cfg.features) {
        Ok(b) => {
            let created = std::time::UNIX_EPOCH + Duration::from_secs(b.created_unix);
            let left = left_out(&b);
            let left =
                if left.is_empty() { String::new() } else { format!("; left out (no events): {}", left.join(", ")) };
            let note = regularisation_note(&b, cfg.regularisation).map(|n| format!("; {n}")).unwrap_or_default();
            let at = crate::logging::rfc3339(created);
            (true, format!("{path}: {} samples, calibrated {at}{left}{note}", b.samples()))
        }
        Err(StateError::NotFound(_)) => (false, format!("none at {path}: the first start calibrates for {warmup}")),
        Err(e) => (false, format!("{e}: a start sets it aside and calibrates for {warmup}")),
    }
}

/// The model's configuration for these settings: the baseline window in
/// intervals.
pub fn model_config(cfg: &Settings) -> ModelConfig {
    let window = ((cfg.baseline_window.as_secs_f64() / cfg.interval.as_secs_f64()).round() as usize).max(1);
    ModelConfig {
        features: cfg.features.clone(),
        warmup: cfg.warmup,
        window,
        regularisation: cfg.regularisation,
        side: cfg.side,
    }
}

/// One interval at a time, the same for the live loop and for a replay of
/// recorded snapshots (examples/replay.rs): the window of recent intervals
/// the statistics are taken over, the feature vector, the model's space, the
/// model.
pub struct Scorer {
    pub model: Model,
    feats: Vec<Feature>,
    recent: features::Recent,
}

/// What one interval gave.
pub struct Scored {
    /// None while calibrating.
    pub output: Option<super::Output>,
    /// The feature values, in the features' units (seconds, shares, rates).
    pub x: Vec<f64>,
    /// How many intervals the statistics were taken over (more than 1 on a
    /// node too quiet to fill one: features::MAX_POOLED_INTERVALS).
    pub intervals: usize,
}

impl Scorer {
    pub fn new(model: Model, feats: Vec<Feature>) -> Scorer {
        let recent = features::Recent::new(&feats);
        Scorer { model, feats, recent }
    }

    pub fn features(&self) -> &[Feature] {
        &self.feats
    }

    /// `at`: when `snap` was taken, since the start. None for the first
    /// snapshot and for an interval without run-queue events, which
    /// produces no update.
    pub fn step(&mut self, snap: Snapshot, at: Duration) -> Option<Scored> {
        let w = self.recent.push(snap, at)?;
        let (x, accept) = features::vector(&self.feats, &w.delta, w.secs);
        let output = self.model.observe(at, &model_space(&self.feats, &x), accept);
        Some(Scored { output, x, intervals: w.intervals })
    }
}

/// Loads the saved baseline, or starts calibrating, and publishes the first
/// view. Awaited before the server starts, so that no scrape finds the model
/// families missing (the first scrape raced the load before).
pub async fn start(cfg: &Settings, view: &RwLock<Option<ModelView>>) -> Model {
    // File I/O off the runtime's thread, which also serves scrapes.
    let (mcfg, path) = (model_config(cfg), cfg.state_file.clone());
    let model = match tokio::task::spawn_blocking(move || load_or_calibrate(mcfg, &path)).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "loading the baseline failed: calibrating");
            Model::new(model_config(cfg))
        }
    };
    publish(view, &model, &[], None, &[], 0, Vec::new());
    model
}

/// Runs `model` (from [`start`]) until `stop` turns true, then saves what
/// changed since the last save.
pub async fn run(
    kernel: Arc<dyn Source>,
    feats: Vec<Feature>,
    cfg: Settings,
    model: Model,
    feed: Option<Arc<dyn super::victims::Feed>>,
    view: Arc<RwLock<Option<ModelView>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut victims = match feed {
        Some(f) => {
            let path = super::state::workloads_path(&cfg.state_file);
            let cpi = f.cpi();
            let features = super::victims::Victims::config(model.config(), cpi).features;
            let saved = tokio::task::spawn_blocking(move || load_workload_baselines(&path, &features))
                .await
                .unwrap_or_default();
            Some((super::victims::Victims::with_saved(model.config(), cpi, saved), f))
        }
        None => None,
    };
    let mut wl_saver = WorkloadSaver { path: super::state::workloads_path(&cfg.state_file), pending: None, last: None };
    let mut scorer = Scorer::new(model, feats);
    let mut saver = Saver { path: cfg.state_file.clone(), pending: false, failures: 0 };
    let start = Instant::now();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            if saver.pending {
                saver.save(scorer.model.baseline().cloned()).await;
            }
            wl_saver.save().await;
            return;
        }
        // The interval's reads and arithmetic run off the runtime's thread,
        // which serves scrapes: with 200 workloads they take milliseconds,
        // which a scrape arriving meanwhile used to wait for.
        let at = start.elapsed();
        let k = kernel.clone();
        let state_file = cfg.state_file.clone();
        let job = tokio::task::spawn_blocking(move || {
            let recalibrated = recalibrate_if_asked(&state_file, &mut scorer, &mut victims);
            let r = interval(&*k, &mut scorer, &mut victims, at);
            (scorer, victims, r, recalibrated)
        });
        let (r, recalibrated);
        (scorer, victims, r, recalibrated) = match job.await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the model's interval failed: the model stops");
                return;
            }
        };
        if recalibrated {
            // Nothing of the discarded baselines is saved again.
            saver.pending = false;
            wl_saver.pending = None;
        }
        let it = match r {
            Ok(it) => it,
            Err(e) => {
                tracing::warn!(error = %e, "reading the probes failed");
                continue;
            }
        };
        if let Some(all) = it.changed {
            wl_saver.pending = Some(all);
        }
        if victims.is_some() && wl_saver.last.is_none_or(|t| t.elapsed() >= WORKLOAD_SAVE_EVERY) {
            wl_saver.save().await;
        }
        let Some(scored) = it.scored else { continue };
        if let Some(b) = it.baseline {
            saver.pending = true;
            saver.save(Some(b)).await;
        }
        publish(&view, &scorer.model, scorer.features(), scored.output, &scored.x, saver.failures, it.workloads);
    }
}

type VictimBank = Option<(super::victims::Victims, Arc<dyn super::victims::Feed>)>;

/// What one interval gave, for the runtime's thread to save and publish.
struct Interval {
    /// None: no update this interval (see [`Scorer::step`]).
    scored: Option<Scored>,
    /// The node's baseline, when it changed.
    baseline: Option<super::Baseline>,
    workloads: Vec<super::victims::Victim>,
    /// Every workload baseline to save, when one changed.
    changed: Option<Vec<(String, super::Baseline)>>,
}

/// `ksense recalibrate` run while this server holds the state file: its
/// saved baselines are deleted and every model calibrates anew. Blocking
/// (a file removed, at most a stat when there is no request).
fn recalibrate_if_asked(state_file: &std::path::Path, scorer: &mut Scorer, victims: &mut VictimBank) -> bool {
    if !super::state::take_recalibration_request(state_file) {
        return false;
    }
    if let Err(e) = super::discard_all(state_file) {
        tracing::warn!(error = %e, "discarding the saved baselines failed");
    }
    scorer.model = Model::new(scorer.model.config().clone());
    if let Some((bank, feed)) = victims.as_mut() {
        *bank = super::victims::Victims::with_saved(scorer.model.config(), feed.cpi(), Default::default());
    }
    tracing::info!(warmup = ?scorer.model.config().warmup, "recalibrating on request (ksense recalibrate): saved baselines discarded");
    true
}

/// One interval's reads and arithmetic: blocking, no I/O but the probes'.
fn interval(
    kernel: &dyn Source,
    scorer: &mut Scorer,
    victims: &mut VictimBank,
    at: Duration,
) -> std::io::Result<Interval> {
    let snap = kernel.snapshot()?;
    let (workloads, changed) = match victims {
        Some((bank, feed)) => {
            if let Some(r) = feed.read() {
                bank.observe(at, r);
            }
            let changed = bank.take_changed();
            (bank.scores(), changed)
        }
        None => (Vec::new(), None),
    };
    let scored = scorer.step(snap, at);
    let baseline = scored.as_ref().and_then(|_| scorer.model.take_baseline_update().cloned());
    if let Some(b) = baseline.as_ref().filter(|b| b.energy_k().is_none()) {
        log_left_out(b); // just frozen (the energy scale comes 20 intervals later)
    }
    Ok(Interval { scored, baseline, workloads, changed })
}

/// The features `b` leaves out of friction (too few calibration samples measured them).
fn left_out(b: &super::Baseline) -> Vec<&str> {
    (0..b.features().len()).filter(|&i| !b.is_measured(i)).map(|i| b.features()[i].as_str()).collect()
}

/// Names the features the baseline leaves out of friction, if any: the
/// node's model only (a workload that serves no requests leaves out its
/// request latency, as most do).
fn log_left_out(b: &super::Baseline) {
    let left_out = left_out(b);
    if !left_out.is_empty() {
        tracing::warn!(
            features = ?left_out,
            need = super::measured_needed(b.samples()),
            "no events of these features in enough calibration samples: left out of friction until the next calibration (ksense recalibrate)"
        );
    }
}

/// Moves an unusable state file aside (kept for inspection), with one line
/// that says so and what happens instead.
fn set_aside_unusable(path: &std::path::Path, e: &StateError, what: &str) {
    // A file the system would not let us read (permissions, an I/O error) may be
    // a good baseline: left where it is; the next save replaces it if it can.
    if matches!(e, StateError::Io { source, .. } if source.raw_os_error().is_some()) {
        tracing::warn!(error = %e, "{what} (left in place: it could not be read)");
        return;
    }
    match super::set_aside(path) {
        Ok(to) => tracing::warn!(error = %e, moved_to = %to.display(), "{what} (set aside)"),
        Err(e2) => tracing::warn!(error = %e, set_aside_error = %e2, "{what}"),
    }
}

/// The per-workload baselines saved at start, if any; a bad file is set
/// aside (they calibrate anew), as the node's is.
fn load_workload_baselines(
    path: &std::path::Path,
    features: &[String],
) -> std::collections::HashMap<String, super::Baseline> {
    match super::state::load_workloads(path, features) {
        Ok((m, bad)) => {
            tracing::info!(path = %path.display(), workloads = m.len(), left_out = bad, "loaded saved workload baselines");
            m.into_iter().collect()
        }
        Err(StateError::NotFound(_)) => Default::default(),
        Err(e) => {
            set_aside_unusable(path, &e, "workload baselines unusable, they calibrate anew");
            Default::default()
        }
    }
}

/// The per-workload baselines are saved at most this often (every freeze
/// rewrites the whole file), and at shutdown.
pub const WORKLOAD_SAVE_EVERY: Duration = Duration::from_secs(10);

struct WorkloadSaver {
    path: PathBuf,
    pending: Option<Vec<(String, super::Baseline)>>,
    last: Option<Instant>,
}

impl WorkloadSaver {
    async fn save(&mut self) {
        let Some(all) = self.pending.take() else { return };
        self.last = Some(Instant::now());
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&str, &super::Baseline)> = all.iter().map(|(k, b)| (k.as_str(), b)).collect();
            super::state::save_workloads(&path, &refs).map(|()| all.len())
        })
        .await;
        match r {
            Ok(Ok(n)) => tracing::debug!(path = %self.path.display(), workloads = n, "workload baselines saved"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "saving the workload baselines failed; retried at the next change")
            }
            Err(e) => tracing::warn!(error = %e, "saving the workload baselines failed; retried at the next change"),
        }
    }
}

/// Saves the baseline, on the blocking pool (write, fsync, rename: slow on a
/// busy disk, and scrapes are served on the runtime's thread); a failure
/// (full or read-only disk, ...) is one log line and a counter, and the save
/// is retried at the next change and at shutdown.
struct Saver {
    path: PathBuf,
    pending: bool,
    failures: u64,
}

impl Saver {
    async fn save(&mut self, b: Option<super::Baseline>) {
        let Some(b) = b else { return };
        let path = self.path.clone();
        let (b, saved) = match tokio::task::spawn_blocking(move || {
            let r = b.save(&path);
            (b, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                self.failures += 1;
                return tracing::warn!(error = %e, failures = self.failures, "saving the baseline failed; retried at the next change and at shutdown");
            }
        };
        match saved {
            Ok(()) => {
                self.pending = false;
                tracing::info!(path = %self.path.display(), samples = b.samples(), "baseline saved");
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %e, failures = self.failures, "saving the baseline failed; retried at the next change and at shutdown");
            }
        }
    }
}

fn publish(
    view: &RwLock<Option<ModelView>>,
    m: &Model,
    feats: &[Feature],
    out: Option<super::Output>,
    x: &[f64],
    save_failures: u64,
    workloads: Vec<super::victims::Victim>,
) {
    let names = &m.config().features;
    // NaN without events (not measured), as the model reads it: the
    // exporters then serve no sample (ksense serves no NaN), not a 0.
    let signals = feats.iter().zip(x).map(|(f, v)| (f.name.clone(), *v)).collect();
    let score = out.map(|o| Score {
        friction: o.friction,
        direction: f64::from(o.direction),
        energy: o.energy,
        energy_window: o.energy_window as f64,
        // Contributions are in (scaled) friction² units, which are unit-free.
        contributions: names.iter().cloned().zip(o.contributions).collect(),
        interference: o.interference,
        friction_reference: o.friction_reference,
    });
    let baseline = match m.baseline() {
        Some(b) if b.mean().len() == feats.len() => {
            let mean = signal_space(feats, &b.mean().to_vec());
            // A feature left out of the baseline has no mean to show.
            names.iter().cloned().zip(mean).enumerate().filter(|(i, _)| b.is_measured(*i)).map(|(_, p)| p).collect()
        }
        _ => Vec::new(),
    };
    let measured = m
        .baseline()
        .map(|b| names.iter().cloned().zip(b.measured().iter().map(|&n| n as f64)).collect())
        .unwrap_or_default();
    let left_out = m.baseline().map(|b| left_out(b).into_iter().map(str::to_owned).collect()).unwrap_or_default();
    let at = if feats.is_empty() { None } else { Some(SystemTime::now()) };
    let v = ModelView {
        ready: m.ready(),
        samples: m.baseline_samples(),
        score,
        signals,
        save_failures,
        at,
        baseline,
        measured,
        left_out,
        workloads,
    };
    if let Ok(mut w) = view.write() {
        *w = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::signals::buckets::{kernel_bounds, slot_of};
    use crate::signals::histogram::Histogram;

    /// The signals the tests' snapshots carry: the two run-queue ones, then
    /// the others, quiet; and those read as event counts.
    const SIGNALS: [&str; 8] = [
        "runqueue",
        "runqueue_wakeup",
        "softirq_net_rx",
        "softirq_block",
        "dstate",
        "tcp_retransmit",
        "tcp_retransmit_timeout",
        "tcp_rtt",
    ];
    const COUNTERS: [&str; 2] = ["tcp_retransmit", "tcp_retransmit_timeout"];

    /// A cumulative snapshot after `n` intervals of `per` waits of `ns` each
    /// (runqueue and runqueue_wakeup), plus the softirq and TCP signals, quiet.
    fn snap(hist: &mut Histogram, per: u64, ns: u64) -> Snapshot {
        hist.slots[slot_of(kernel_bounds(), ns)] += per;
        hist.sum_ns += per * ns;
        let mut s = Snapshot::default();
        for (i, name) in SIGNALS.iter().enumerate() {
            s.signals.push((name.to_string(), if i < 2 { hist.clone() } else { Histogram::default() }));
        }
        s
    }

    /// A scorer of the default features over the signals `snap` provides.
    fn scorer(warmup_s: u64, window_s: u64) -> Scorer {
        let names: Vec<String> = SIGNALS.map(String::from).to_vec();
        let settings = Settings {
            warmup: Duration::from_secs(warmup_s),
            baseline_window: Duration::from_secs(window_s),
            ..Default::default()
        };
        let feats = features::parse_all(&settings.features, &names, &COUNTERS).unwrap();
        Scorer::new(Model::new(model_config(&settings)), feats)
    }

    /// The live loop's and the replay's step: nothing for the first snapshot,
    /// calibration through the warm-up, then friction that is low on the
    /// baseline's own data and high, direction +1, when waits grow 100-fold.
    #[test]
    fn scorer_calibrates_then_scores() {
        let mut sc = scorer(30, 30);
        let mut h = Histogram::default();
        let at = |i: u64| Duration::from_secs(i);
        assert!(sc.step(snap(&mut h, 100, 10_000), at(0)).is_none(), "one snapshot is no interval");
        let mut scored = Vec::new();
        for i in 1..=40 {
            // 10 or 20 µs waits, alternating, so the baseline has a spread.
            let ns = if i % 2 == 0 { 10_000 } else { 20_000 };
            scored.push(sc.step(snap(&mut h, 100, ns), at(i)).expect("an interval with waits"));
        }
        assert!(scored[..29].iter().all(|s| s.output.is_none()), "calibrating through the warm-up");
        let calm = scored.last().unwrap().output.as_ref().expect("scored after the warm-up");
        assert!(calm.friction < 3.0, "the baseline's own data: friction {}", calm.friction);
        assert!(sc.step(snap(&mut h, 0, 10_000), at(41)).is_none(), "no waits: no update");
        let hot = sc.step(snap(&mut h, 100, 2_000_000), at(42)).unwrap().output.unwrap();
        assert!(hot.friction > 10.0 && hot.direction == 1, "100x longer waits: {} {}", hot.friction, hot.direction);
    }

    /// What the exporters are given for the features `snap` leaves without
    /// events: no value (NaN, not 0), and left out of the baseline by name;
    /// a rate of no events is 0.
    #[test]
    fn a_feature_without_events_is_published_as_not_measured() {
        let mut sc = scorer(30, 30);
        let mut h = Histogram::default();
        let mut last = None;
        for i in 0..=32 {
            last = sc.step(snap(&mut h, 100, [10_000, 20_000][i as usize % 2]), Duration::from_secs(i)).or(last);
        }
        let s = last.expect("scored");
        let view = RwLock::new(None);
        publish(&view, &sc.model, sc.features(), s.output, &s.x, 0, Vec::new());
        let v = view.read().unwrap().clone().unwrap();
        let get = |n: &str| v.signals.iter().find(|(k, _)| k == n).map(|(_, x)| *x).expect(n);
        assert!(get("tcp_rtt_p999").is_nan() && get("softirq_net_rx_busy").is_nan(), "{:?}", v.signals);
        assert!(get("runqueue_wakeup_p99") > 0.0 && get("tcp_retransmit_timeout_rate") == 0.0, "{:?}", v.signals);
        assert_eq!(v.left_out, ["softirq_net_rx_busy", "tcp_rtt_p999"]);
        assert!(v.baseline.iter().all(|(k, _)| !v.left_out.contains(k)), "a left-out feature has no baseline mean");
    }

    #[test]
    fn a_state_file_that_cannot_be_read_is_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        // A link to itself: the read fails in the kernel (ELOOP), as EACCES does
        // for a file ksense may not read once its capabilities are dropped.
        std::os::unix::fs::symlink(&path, &path).unwrap();
        let m = load_or_calibrate(ModelConfig::new(vec!["runqueue_wakeup_p99".into()]), &path);
        assert!(!m.ready());
        assert!(path.symlink_metadata().is_ok(), "not renamed");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing set aside");
    }

    #[test]
    fn check_says_whether_a_baseline_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings { state_file: dir.path().join("baseline.json"), ..Default::default() };
        let (ok, line) = baseline_status(&settings);
        assert!(!ok && line.contains("none at") && line.contains("calibrates for 600s"), "{line}");
        std::fs::write(&settings.state_file, "{").unwrap();
        let (ok, line) = baseline_status(&settings);
        assert!(!ok && line.contains("corrupt") && line.contains("sets it aside"), "{line}");
        // A saved one: its sample count and when it was made.
        let d = settings.features.len();
        let samples: Vec<Vec<f64>> = (0..20).map(|i| (0..d).map(|j| ((i * 7 + j * 3) % 5) as f64).collect()).collect();
        let b = super::super::Baseline::from_samples(settings.features.clone(), &samples, Default::default(), 86_400)
            .unwrap();
        b.save(&settings.state_file).unwrap();
        let (ok, line) = baseline_status(&settings);
        assert!(ok && line.contains("20 samples, calibrated 1970-01-02T00:00:00"), "{line}");
        assert!(!line.contains("recalibrate"), "{line}");
        let ridge = Settings { regularisation: super::super::Regularisation::Ridge, ..settings.clone() };
        let (ok, line) = baseline_status(&ridge);
        assert!(
            ok && line.contains("calibrated with --model.regularisation ledoit-wolf; ridge applies after"),
            "{line}"
        );
    }

    /// Issue 22's idle VM: 20 woken-task waits a second, warm-up 20 s, baseline
    /// window 15 s. Each interval alone has too few waits to calibrate on;
    /// pooled with the ones before, the baseline freezes at the end of the
    /// warm-up, on 15 samples.
    #[test]
    fn scorer_calibrates_on_an_idle_node() {
        let mut sc = scorer(20, 15);
        let mut h = Histogram::default();
        let mut first_ready = None;
        for i in 0..=25u64 {
            let ns = [10_000, 20_000, 15_000][i as usize % 3];
            let out = sc.step(snap(&mut h, 20, ns), Duration::from_secs(i));
            if let Some(s) = &out {
                assert!(s.intervals <= 3, "20 waits a second: 3 intervals hold 50, got {}", s.intervals);
            }
            if first_ready.is_none() && out.and_then(|s| s.output).is_some() {
                first_ready = Some(i);
            }
        }
        assert_eq!(first_ready, Some(20), "the baseline freezes when the warm-up ends");
        assert_eq!(sc.model.baseline_samples(), 15);
    }

    #[test]
    fn model_space_is_log_microseconds_and_log_rates() {
        let names: Vec<String> = ["runqueue", "tcp_retransmit"].map(String::from).to_vec();
        let f = |n: &str| features::Feature::parse(n, &names, &["tcp_retransmit"]).unwrap();
        let p99 = f("runqueue_p99");
        let feats = [p99.clone(), p99.clone(), p99.clone(), p99, f("tcp_retransmit_rate")];
        let y = model_space(&feats, &[0.0, 1e-6, 1e-3, -1.0, 9.0]);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 2f64.ln()).abs() < 1e-12);
        assert!((y[2] - 1001f64.ln()).abs() < 1e-9);
        assert_eq!(y[3], 0.0, "negative values clamp to 0");
        assert!((y[4] - 10f64.ln()).abs() < 1e-12, "9 events/s: ln(10)");
        // And back, for the values that were not clamped.
        let back = signal_space(&feats, &y);
        for (i, want) in [(0, 0.0), (1, 1e-6), (2, 1e-3), (3, 0.0), (4, 9.0)] {
            assert!((back[i] - want).abs() <= 1e-12 * (1.0f64).max(want), "{i}: {} vs {want}", back[i]);
        }
    }
}
