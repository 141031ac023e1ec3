//! Friction model: how far this node's latency features are from its own
//! calibrated baseline, in which direction, and how unsteady that distance is.
//!
//! Flow: [`Model::observe`] is called once per interval with the feature
//! vector. During warm-up it only collects samples; at the end of warm-up it
//! freezes a [`Baseline`] (mean, regularised covariance, Cholesky factor) and
//! from then on returns an [`Output`] per interval: friction (Mahalanobis
//! distance), direction, per-feature contributions and energy.
//!
//! Files: `baseline` (calibration, covariance, regularisation), `mahalanobis`
//! (friction/direction/contributions), `energy` (adaptive instability),
//! `state` (persisting the baseline), `interference` (the node score in
//! [0, 1]).

mod baseline;
mod energy;
pub mod interference;
mod linalg;
mod mahalanobis;
pub mod pipeline;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod victims;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use baseline::{
    measured_needed, min_samples, Baseline, BaselineError, Regularisation, MAX_WINDOW_SAMPLES, MIN_MEASURED,
};
pub use energy::{MAX_WINDOW as ENERGY_MAX_WINDOW, MIN_WINDOW as ENERGY_MIN_WINDOW};
pub use mahalanobis::Side;
pub use state::{
    discard_all, load, lock, request_recalibration, set_aside, StateError, StateLock, LOCK_WAIT, STATE_VERSION,
};

use baseline::Calibrator;
use energy::Energy;

/// Default warm-up before the baseline is frozen.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(600);
/// Default number of most recent accepted samples the baseline is computed from.
pub const DEFAULT_WINDOW: usize = 300;

/// Model settings. `features` names the vector entries, in order; it is stored
/// with the baseline so a changed feature set is never scored against an old one.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub features: Vec<String>,
    /// Warm-up measured on the caller's clock (`now` in [`Model::observe`]).
    pub warmup: Duration,
    /// Keep only the last `window` accepted samples (raised to d+2 if smaller).
    pub window: usize,
    pub regularisation: Regularisation,
    /// Which deviations count as friction (`--model.friction`).
    pub side: Side,
}

impl ModelConfig {
    /// Defaults: 600 s warm-up, 300-sample window, and the shipped
    /// regularisation and side (Ledoit-Wolf, one-sided).
    pub fn new(features: Vec<String>) -> ModelConfig {
        ModelConfig {
            features,
            warmup: DEFAULT_WARMUP,
            window: DEFAULT_WINDOW,
            regularisation: Regularisation::default(),
            side: Side::default(),
        }
    }
}

/// What the model says about one interval. Every number is finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Mahalanobis distance from the baseline, F ≥ 0.
    pub friction: f64,
    /// +1: worse than baseline; −1: better or equal (definition in
    /// `mahalanobis::score`); 0 while friction is within the baseline's own
    /// spread (at or below `friction_reference`), where the sign is noise.
    pub direction: i8,
    /// Mean |ΔF| over the last `energy_window` intervals (fewer right after start).
    pub energy: f64,
    /// Adaptive window W in [5, 40]; 40 until the energy scale k is learned.
    pub energy_window: usize,
    /// Per-feature share of F², in feature order; sums to F² (entries may be negative).
    pub contributions: Vec<f64>,
    /// Friction mapped into [0, 1] against the calibration's normal range
    /// (`interference::ratio`).
    pub interference: f64,
    /// The reference friction F₀ that ratio is measured against.
    pub friction_reference: f64,
}

enum Phase {
    Calibrating { cal: Calibrator, progress: Progress },
    // Boxed: much larger than the calibrator, and created once.
    Ready { baseline: Box<Baseline>, energy: Energy },
}

/// The friction model for one node. See the module docs.
pub struct Model {
    cfg: ModelConfig,
    phase: Phase,
    skipped: u64,
    baseline_changed: bool,
    freeze_failures: u64,
}

/// When calibration says how far it is: every tenth of the warm-up, at most
/// every 10 s (a line a minute through a 10-minute warm-up, every 10 s through
/// a 20 s one).
#[derive(Debug, Clone, Copy)]
struct Progress {
    every: Duration,
    next: Duration,
}

impl Progress {
    const MIN_EVERY: Duration = Duration::from_secs(10);

    fn new(warmup: Duration) -> Progress {
        let every = (warmup / 10).max(Self::MIN_EVERY);
        Progress { every, next: every }
    }

    /// True when a line is due at `now` (then not again for `every`).
    fn due(&mut self, now: Duration) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }
}

impl Model {
    /// Starts calibrating.
    pub fn new(cfg: ModelConfig) -> Model {
        let phase = Phase::Calibrating {
            cal: Calibrator::new(cfg.features.len(), cfg.window),
            progress: Progress::new(cfg.warmup),
        };
        Model { cfg, phase, skipped: 0, baseline_changed: false, freeze_failures: 0 }
    }

    /// Starts ready to score, from a saved baseline (from [`state::load`],
    /// which already checked the feature list). If the baseline's features
    /// still differ from `cfg.features` it is not used: calibrates instead.
    pub fn with_baseline(cfg: ModelConfig, b: Baseline) -> Model {
        if b.features() != cfg.features.as_slice() {
            tracing::warn!(
                baseline = ?b.features(),
                config = ?cfg.features,
                "baseline features differ from config; recalibrating"
            );
            return Model::new(cfg);
        }
        let energy = Energy::new(b.energy_k());
        Model {
            cfg,
            phase: Phase::Ready { baseline: Box::new(b), energy },
            skipped: 0,
            baseline_changed: false,
            freeze_failures: 0,
        }
    }

    /// Feeds one interval's feature vector. `now` is the time since the
    /// process started (any monotonic origin works; only `now >= warmup`
    /// matters). `accept_for_baseline` says whether the interval had enough
    /// events to be trusted as a calibration sample.
    ///
    /// A NaN in `x` is a feature without events in the interval: it is
    /// left out of that interval's score, and of the calibration's
    /// statistics ([`Baseline::from_samples`]).
    ///
    /// Returns `None` while calibrating, and for a vector that is the wrong
    /// length, holds an infinite value, or would give a non-finite output
    /// (those are counted in [`Self::skipped`]). On the interval that freezes
    /// the baseline, `x` is scored against the new baseline.
    ///
    /// If warm-up ends with fewer than d+2 accepted samples, calibration
    /// simply continues and the baseline freezes at the first later interval
    /// where there are enough.
    pub fn observe(&mut self, now: Duration, x: &[f64], accept_for_baseline: bool) -> Option<Output> {
        let d = self.cfg.features.len();
        if x.len() != d || x.iter().any(|v| v.is_infinite()) {
            self.skipped += 1;
            return None;
        }
        if let Phase::Calibrating { cal, progress } = &mut self.phase {
            if accept_for_baseline {
                cal.push(x);
            }
            if now < self.cfg.warmup || !cal.enough() {
                if progress.due(now) {
                    let (n, window) = (cal.len(), cal.window());
                    if now < self.cfg.warmup {
                        let left = self.cfg.warmup - now;
                        tracing::info!(
                            samples = n,
                            window,
                            left_s = left.as_secs(),
                            "calibrating: {n} of {window} samples, {}s of the warm-up left",
                            left.as_secs()
                        );
                    } else {
                        let needed = cal.needed();
                        tracing::info!(
                            samples = n,
                            needed,
                            "calibrating past the warm-up: {n} samples, {needed} needed to freeze the baseline"
                        );
                    }
                }
                return None;
            }
            let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0);
            let samples = cal.samples();
            match Baseline::from_samples(self.cfg.features.clone(), &samples, self.cfg.regularisation, created) {
                Ok(mut b) => {
                    b.friction_p99 = normal_friction(&b, &samples, self.cfg.side);
                    tracing::info!(samples = b.samples(), regularisation = %b.regularisation(), "baseline frozen");
                    self.phase = Phase::Ready { baseline: Box::new(b), energy: Energy::new(None) };
                    self.baseline_changed = true;
                }
                Err(e) => {
                    // Keep calibrating: the window slides and a later try may succeed.
                    if self.freeze_failures == 0 {
                        tracing::warn!(error = %e, "cannot freeze baseline yet; still calibrating");
                    }
                    self.freeze_failures += 1;
                    return None;
                }
            }
        }
        let Phase::Ready { baseline, energy } = &mut self.phase else {
            return None;
        };
        let Some(s) = baseline.score(x, self.cfg.side) else {
            self.skipped += 1;
            return None;
        };
        let Some(e) = energy.update(s.friction) else {
            self.skipped += 1;
            return None;
        };
        if e.k_calibrated {
            baseline.energy_k = energy.k();
            self.baseline_changed = true;
        }
        let f0 = baseline.friction_reference();
        // Inside the calibration's own spread the sign is noise (it flipped
        // between +1 and -1 interval by interval on an idle node): 0 there.
        let direction = if s.friction <= f0 { 0 } else { s.direction };
        Some(Output {
            friction: s.friction,
            direction,
            energy: e.energy,
            energy_window: e.window,
            contributions: s.contributions,
            interference: interference::ratio(s.friction, f0, s.direction, self.cfg.side),
            friction_reference: f0,
        })
    }

    /// The frozen baseline, once there is one.
    pub fn baseline(&self) -> Option<&Baseline> {
        match &self.phase {
            Phase::Ready { baseline, .. } => Some(baseline),
            Phase::Calibrating { .. } => None,
        }
    }

    /// Returns the baseline once after it changed (frozen, or energy k
    /// learned), so the caller knows to save it; `None` otherwise.
    pub fn take_baseline_update(&mut self) -> Option<&Baseline> {
        if !std::mem::take(&mut self.baseline_changed) {
            return None;
        }
        self.baseline()
    }

    /// True once the baseline is frozen and intervals are scored.
    pub fn ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// Accepted samples so far while calibrating (capped at the window);
    /// the baseline's sample count once ready.
    pub fn baseline_samples(&self) -> usize {
        match &self.phase {
            Phase::Calibrating { cal, .. } => cal.len(),
            Phase::Ready { baseline, .. } => baseline.samples(),
        }
    }

    /// Intervals dropped because the input or the output was not finite (or
    /// the vector had the wrong length). Worth exporting as a counter.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The configuration the model runs with.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
}

/// Folds of the calibration window for [`normal_friction`].
pub const NORMAL_FOLDS: usize = 10;
/// A held-out block is scored against the rest only when the rest holds this
/// many samples: a covariance of fewer is so unstable that the held-out
/// distances measure the fit more than fresh intervals (a 5-sample workload
/// baseline then put F₀ out of reach and named no victim at all).
pub const MIN_HELD_OUT_FIT: usize = 10;

/// The node's normal friction: the 99th percentile of friction over the
/// calibration samples, each scored against a baseline that did not see it.
/// The window is cut into [`NORMAL_FOLDS`] contiguous blocks and each block
/// is scored against the other blocks' baseline (contiguous, so a drift
/// within the window counts, as it will for the intervals that follow).
/// Scored in-sample, a baseline of n samples puts its own samples closer than
/// fresh ones (with the sample covariance D² ≤ (n−1)²/n on any data: at most
/// 3.2 with n = 12; shrinkage loosens the bound a little), so a
/// short baseline's F₀ sat low enough that noise crossed it. Where a block's
/// remainder is too small to fit, its samples are scored in-sample.
fn normal_friction(b: &Baseline, samples: &[Vec<f64>], side: Side) -> Option<f64> {
    let n = samples.len();
    let folds = NORMAL_FOLDS.min(n);
    let mut f = Vec::with_capacity(n);
    for k in 0..folds {
        let (lo, hi) = (k * n / folds, (k + 1) * n / folds);
        // The rest is copied only when it is big enough to fit.
        let held_out = (n - (hi - lo) >= MIN_HELD_OUT_FIT)
            .then(|| {
                let rest: Vec<Vec<f64>> = samples[..lo].iter().chain(&samples[hi..]).cloned().collect();
                Baseline::from_samples(b.features.clone(), &rest, b.regularisation, 0).ok()
            })
            .flatten();
        let against = held_out.as_ref().unwrap_or(b);
        f.extend(samples[lo..hi].iter().filter_map(|x| against.score(x, side)).map(|s| s.friction));
    }
    interference::reference(&f)
}

#[cfg(test)]
mod tests;
