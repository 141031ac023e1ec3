//! The model at run time: every interval, the probes' snapshot becomes a
//! feature vector in the model's space, is scored against the baseline, and
//! the result is published for the exporters; the baseline is loaded at
//! start, saved when it changes and at shutdown.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Model, ModelConfig, StateError};
use crate::signals::features::{self, Feature};
use crate::signals::Source;

/// Chosen by bench/qos (README, "Does friction track P99?"): the tail of the
/// wait a woken thread has before it runs, and the CPU share the network
/// receive and block completion softirqs take.
pub const DEFAULT_FEATURES: [&str; 3] = ["runqueue_wakeup_p99", "softirq_net_rx_busy", "softirq_block_busy"];

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
}

#[derive(Clone, Debug, Default)]
pub struct Score {
    pub friction: f64,
    pub direction: f64,
    pub energy: f64,
    pub energy_window: f64,
    pub contributions: Vec<(String, f64)>,
}

/// The model sees ln(1 + value in microseconds): latencies and CPU shares
/// grow by orders of magnitude under interference, and on a log scale a
/// tenfold rise in one signal does not drown a threefold rise in another.
/// bench/qos measured it: Spearman rho against client P99 0.76 -> 0.92 with
/// the same features. Microseconds keep small latencies clear of the ridge.
/// A saved baseline lives in this space: change it, and bump STATE_VERSION.
const MODEL_SCALE: f64 = 1e6;

fn model_space(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| (v.max(0.0) * MODEL_SCALE).ln_1p()).collect()
}

fn load_or_calibrate(mcfg: ModelConfig, path: &std::path::Path) -> Model {
    match super::load(path, &mcfg.features) {
        Ok(b) => {
            tracing::info!(path = %path.display(), samples = b.samples(), "loaded saved baseline");
            Model::with_baseline(mcfg, b)
        }
        Err(StateError::NotFound(_)) => {
            tracing::info!(warmup = ?mcfg.warmup, "no saved baseline: calibrating");
            Model::new(mcfg)
        }
        Err(e) => {
            match super::set_aside(path) {
                Ok(to) => {
                    tracing::warn!(error = %e, moved_to = %to.display(), "saved baseline unusable: set aside, calibrating anew")
                }
                Err(e2) => {
                    tracing::warn!(error = %e, set_aside_error = %e2, "saved baseline unusable, calibrating anew")
                }
            }
            Model::new(mcfg)
        }
    }
}

/// Runs until `stop` turns true, then saves what changed since the last save.
pub async fn run(
    kernel: Arc<dyn Source>,
    feats: Vec<Feature>,
    cfg: Settings,
    view: Arc<RwLock<Option<ModelView>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let window = ((cfg.baseline_window.as_secs_f64() / cfg.interval.as_secs_f64()).round() as usize).max(1);
    let mcfg = ModelConfig {
        features: cfg.features.clone(),
        warmup: cfg.warmup,
        window,
        regularisation: cfg.regularisation,
        side: cfg.side,
    };
    let mut model = load_or_calibrate(mcfg, &cfg.state_file);
    let mut saver = Saver { path: cfg.state_file.clone(), pending: false, failures: 0 };
    publish(&view, &model, None, Vec::new(), saver.failures);
    let start = Instant::now();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                if saver.pending {
                    saver.save(model.baseline());
                }
                return;
            }
        }
        let snap = match kernel.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the probes failed");
                continue;
            }
        };
        let taken = Instant::now();
        let Some((before, before_at)) = prev.replace((snap.clone(), taken)) else { continue };
        let delta = features::interval_delta(&snap, &before);
        // The real span, not the nominal interval: a late tick is a longer interval.
        let secs = taken.duration_since(before_at).as_secs_f64();
        if features::runqueue_events(&delta) == 0 {
            continue; // an interval without data produces no update
        }
        let (x, accept) = features::vector(&feats, &delta, secs);
        let scaled = model_space(&x);
        let out = model.observe(elapsed(start), &scaled, accept);
        if let Some(b) = model.take_baseline_update() {
            saver.pending = true;
            saver.save(Some(b));
        }
        let signals = feats.iter().zip(&x).map(|(f, v)| (f.name.clone(), *v)).collect();
        publish(&view, &model, out, signals, saver.failures);
    }
}

/// Saves the baseline; a failure (full or read-only disk, ...) is one log
/// line and a counter, and the save is retried at the next change and at
/// shutdown.
struct Saver {
    path: PathBuf,
    pending: bool,
    failures: u64,
}

impl Saver {
    fn save(&mut self, b: Option<&super::Baseline>) {
        let Some(b) = b else { return };
        match b.save(&self.path) {
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

fn elapsed(start: Instant) -> Duration {
    start.elapsed()
}

fn publish(
    view: &RwLock<Option<ModelView>>,
    m: &Model,
    out: Option<super::Output>,
    signals: Vec<(String, f64)>,
    save_failures: u64,
) {
    let names = &m.config().features;
    let score = out.map(|o| Score {
        friction: o.friction,
        direction: f64::from(o.direction),
        energy: o.energy,
        energy_window: o.energy_window as f64,
        // Contributions are in (scaled) friction² units, which are unit-free.
        contributions: names.iter().cloned().zip(o.contributions).collect(),
    });
    let v = ModelView { ready: m.ready(), samples: m.baseline_samples(), score, signals, save_failures };
    if let Ok(mut w) = view.write() {
        *w = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_space_is_log_microseconds() {
        let y = model_space(&[0.0, 1e-6, 1e-3, -1.0]);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 2f64.ln()).abs() < 1e-12);
        assert!((y[2] - 1001f64.ln()).abs() < 1e-9);
        assert_eq!(y[3], 0.0, "negative values clamp to 0");
    }
}
