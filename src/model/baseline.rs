//! Calibration: collecting baseline samples, covariance, regularisation, and
//! the frozen [`Baseline`] (mean, regularised covariance, Cholesky factor).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::linalg;

/// Absolute ridge added to every diagonal entry (units: s²). It only keeps a
/// degenerate covariance (e.g. a constant feature) positive definite.
pub const RIDGE_FLOOR: f64 = 1e-9;

/// Relative ridge of [`Regularisation::Ridge`]: a fraction of the mean variance.
pub const RIDGE_RELATIVE: f64 = 1e-3;

/// Calibration samples a feature needs events in to be scored (half of them
/// in a window shorter than twice this: [`measured_needed`]). A sample
/// without events of a feature (no TCP segment acknowledged in the interval,
/// say) holds NaN there: not measured, rather than 0 s. A feature measured
/// in fewer samples (none, on an idle node calibrated without TCP traffic)
/// has no spread to measure a change against, and is left out of friction
/// until the next calibration: scored against the zero it used to read, the
/// scrapes' own round trips put friction at 60-100 (docs/model.md, "Not
/// measured").
pub const MIN_MEASURED: usize = 10;

/// The samples of `n` a feature needs events in to be scored.
pub fn measured_needed(n: usize) -> usize {
    MIN_MEASURED.min(n.div_ceil(2))
}

/// How the sample covariance is made well-conditioned before it is inverted.
///
/// A few hundred samples of correlated latency features give a covariance that
/// can be close to singular; without regularisation, tiny directions of
/// variance would dominate the friction score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regularisation {
    /// Σ + (1e-9 + 1e-3 · mean(diag Σ)) · I. The reference choice.
    Ridge,
    /// Ledoit–Wolf (2004) shrinkage toward (mean variance) · I, plus the 1e-9
    /// ridge. The default: it beat the ridge on every bench/qos run.
    #[default]
    LedoitWolf,
    /// Ledoit–Wolf's variances with every correlation dropped: friction is
    /// then the one-sided z-scores' Euclidean norm. Correlations learned on a
    /// calm node discount signals that rise together, which is what
    /// interference does to them (bench/README.md, "Correlations").
    Diagonal,
}

impl Regularisation {
    /// Every method, for the flag's possible values and tests.
    pub const ALL: [Regularisation; 3] = [Regularisation::LedoitWolf, Regularisation::Diagonal, Regularisation::Ridge];

    /// The name used in config and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Regularisation::Ridge => "ridge",
            Regularisation::LedoitWolf => "ledoit-wolf",
            Regularisation::Diagonal => "diagonal",
        }
    }
}

impl fmt::Display for Regularisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Regularisation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ridge" => Ok(Regularisation::Ridge),
            "ledoit-wolf" => Ok(Regularisation::LedoitWolf),
            "diagonal" => Ok(Regularisation::Diagonal),
            other => Err(format!("unknown regularisation {other:?} (expected ledoit-wolf, diagonal or ridge)")),
        }
    }
}

/// Why a baseline could not be built from its parts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error("dimension mismatch: {0}")]
    Dimension(String),
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
    #[error("covariance is not symmetric positive definite")]
    NotPositiveDefinite,
    #[error("not enough samples: {have} < {need}")]
    TooFewSamples { have: usize, need: usize },
    #[error("no feature had events in {need} of the samples")]
    NothingMeasured { need: usize },
}

/// The frozen baseline: what "normal" looks like for this node.
///
/// Immutable except for `energy_k`, learned shortly after the freeze, and
/// `friction_p99`, set at the freeze (see `interference`).
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub(crate) features: Vec<String>,
    pub(crate) mean: Array1<f64>,
    /// Regularised covariance (the matrix actually used for scoring).
    pub(crate) covariance: Array2<f64>,
    /// Lower Cholesky factor L of `covariance` (Σ = L Lᵀ), computed once.
    pub(crate) cholesky: Array2<f64>,
    /// sqrt(diag(covariance)): the per-feature baseline standard deviations.
    pub(crate) std: Array1<f64>,
    pub(crate) samples: usize,
    /// Per feature, the calibration samples that had events of it (see
    /// [`MIN_MEASURED`]); the covariance of one left out is a placeholder.
    pub(crate) measured: Vec<usize>,
    pub(crate) energy_k: Option<f64>,
    /// The calibration samples' 99th-percentile friction; `None` in state
    /// files written before it was stored.
    pub(crate) friction_p99: Option<f64>,
    pub(crate) regularisation: Regularisation,
    pub(crate) created_unix: u64,
}

impl Baseline {
    /// Builds a baseline from an already-regularised covariance, checking
    /// dimensions, finiteness and positive definiteness (via Cholesky).
    pub fn from_parts(
        features: Vec<String>,
        mean: Array1<f64>,
        covariance: Array2<f64>,
        samples: usize,
        energy_k: Option<f64>,
        regularisation: Regularisation,
        created_unix: u64,
    ) -> Result<Baseline, BaselineError> {
        let d = features.len();
        if d == 0 {
            return Err(BaselineError::Dimension("no features".into()));
        }
        if mean.len() != d {
            return Err(BaselineError::Dimension(format!("mean has {} values, expected {d}", mean.len())));
        }
        if covariance.dim() != (d, d) {
            return Err(BaselineError::Dimension(format!("covariance is {:?}, expected ({d}, {d})", covariance.dim())));
        }
        if !mean.iter().all(|v| v.is_finite()) {
            return Err(BaselineError::NonFinite("mean"));
        }
        if !covariance.iter().all(|v| v.is_finite()) {
            return Err(BaselineError::NonFinite("covariance"));
        }
        if let Some(k) = energy_k {
            if !k.is_finite() || k < 0.0 {
                return Err(BaselineError::NonFinite("energy_k"));
            }
        }
        // Symmetry is an invariant of a covariance; a tolerance relative to the
        // largest entry allows for JSON round-off.
        let scale = covariance.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for i in 0..d {
            for j in 0..i {
                if (covariance[[i, j]] - covariance[[j, i]]).abs() > 1e-12 * scale {
                    return Err(BaselineError::NotPositiveDefinite);
                }
            }
        }
        let cholesky = linalg::cholesky(covariance.view()).ok_or(BaselineError::NotPositiveDefinite)?;
        let std = covariance.diag().mapv(f64::sqrt);
        Ok(Baseline {
            features,
            mean,
            covariance,
            cholesky,
            std,
            samples,
            measured: vec![samples; d],
            energy_k,
            friction_p99: None,
            regularisation,
            created_unix,
        })
    }

    /// Computes mean, sample covariance (n−1), regularises it and factorises
    /// it. A NaN in a sample is a feature without events in that interval;
    /// see [`fill_missing`] and [`MIN_MEASURED`].
    pub fn from_samples(
        features: Vec<String>,
        samples: &[Vec<f64>],
        regularisation: Regularisation,
        created_unix: u64,
    ) -> Result<Baseline, BaselineError> {
        let d = features.len();
        let n = samples.len();
        let need = min_samples(d);
        if n < need {
            return Err(BaselineError::TooFewSamples { have: n, need });
        }
        if samples.iter().any(|s| s.len() != d) {
            return Err(BaselineError::Dimension("sample length differs from feature count".into()));
        }
        let measured: Vec<usize> = (0..d).map(|i| samples.iter().filter(|s| !s[i].is_nan()).count()).collect();
        let kept: Vec<usize> = (0..d).filter(|&i| measured[i] >= measured_needed(n)).collect();
        if kept.is_empty() {
            return Err(BaselineError::NothingMeasured { need: measured_needed(n) });
        }
        // The kept features alone: one left out must not move the others'
        // shrinkage target (the mean variance).
        let sub = fill_missing(samples, &kept);
        let (m, cov) = mean_and_covariance(&sub, kept.len());
        let reg = match regularisation {
            Regularisation::Ridge => ridge(&cov),
            Regularisation::LedoitWolf => ledoit_wolf(&sub, &m, &cov),
            Regularisation::Diagonal => Array2::from_diag(&ledoit_wolf(&sub, &m, &cov).diag()),
        };
        let mut mean = Array1::<f64>::zeros(d);
        let mut full = Array2::<f64>::eye(d);
        for (a, &i) in kept.iter().enumerate() {
            mean[i] = m[a];
            for (b, &j) in kept.iter().enumerate() {
                full[[i, j]] = reg[[a, b]];
            }
        }
        let mut b = Baseline::from_parts(features, mean, full, n, None, regularisation, created_unix)?;
        b.measured = measured;
        Ok(b)
    }

    /// Whether feature `i` had events in enough calibration samples to be scored.
    pub fn is_measured(&self, i: usize) -> bool {
        self.measured.get(i).is_some_and(|&m| m >= measured_needed(self.samples))
    }

    /// Per feature, the calibration samples that had events of it.
    pub fn measured(&self) -> &[usize] {
        &self.measured
    }

    /// Scores `x` (in the model's space; NaN for a feature without events
    /// in the interval) against this baseline: the features without events,
    /// and those not measured at calibration, are left out, and the rest
    /// scored under their marginal distribution.
    pub fn score(&self, x: &[f64], side: super::Side) -> Option<super::mahalanobis::Score> {
        if x.len() != self.features.len() {
            return None;
        }
        // A copy only when something is left out (the usual baseline leaves nothing).
        let masked: Vec<f64>;
        let x = if (0..x.len()).all(|i| self.is_measured(i)) {
            x
        } else {
            masked = x.iter().enumerate().map(|(i, &v)| if self.is_measured(i) { v } else { f64::NAN }).collect();
            &masked
        };
        super::mahalanobis::score_observed(&self.mean, &self.covariance, self.cholesky.view(), &self.std, x, side)
    }

    /// Feature names, in the order the vectors use.
    pub fn features(&self) -> &[String] {
        &self.features
    }
    /// Baseline mean μ.
    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }
    /// Regularised covariance Σ used for scoring.
    pub fn covariance(&self) -> &Array2<f64> {
        &self.covariance
    }
    /// Lower Cholesky factor of [`Self::covariance`].
    pub fn cholesky(&self) -> &Array2<f64> {
        &self.cholesky
    }
    /// Per-feature baseline standard deviations (sqrt of the regularised diagonal).
    pub fn std(&self) -> &Array1<f64> {
        &self.std
    }
    /// How many accepted samples the baseline was computed from.
    pub fn samples(&self) -> usize {
        self.samples
    }
    /// Energy scale k, once learned (see `energy`).
    pub fn energy_k(&self) -> Option<f64> {
        self.energy_k
    }
    /// The friction F₀ the interference ratio is measured against: the
    /// calibration's 99th percentile, or the chi-square one for a baseline
    /// saved without it.
    pub fn friction_reference(&self) -> f64 {
        self.friction_p99.unwrap_or_else(|| super::interference::chi_square_reference(self.features.len()))
    }
    /// Which regularisation produced the covariance.
    pub fn regularisation(&self) -> Regularisation {
        self.regularisation
    }
    /// When the baseline was frozen (Unix seconds).
    pub fn created_unix(&self) -> u64 {
        self.created_unix
    }
}

/// The most samples a baseline window holds (`--model.baseline-window` /
/// `--model.interval`): 27 h at the default 1 s, a few MB; beyond it a typo
/// such as `10000000h` would ask for terabytes.
pub const MAX_WINDOW_SAMPLES: usize = 100_000;

/// Fewest accepted samples that give a usable covariance: d+2 (so the n−1
/// covariance has some degrees of freedom beyond rank d).
pub fn min_samples(d: usize) -> usize {
    d + 2
}

/// The columns `kept` of `samples`, each NaN (no events in that interval)
/// replaced so that the column keeps the mean and the unbiased variance of
/// its measured values: a missing value becomes the mean, and each measured
/// one is moved away from it by √((n−1)/(m−1)) (m measured of n). The
/// covariance of two columns is then that of the samples where both were
/// measured, scaled down by about √(share of one × share of the other): a
/// Gram matrix still, so positive semi-definite, where covariances over
/// each pair's own samples need not be. A column measured in every sample
/// is copied as it is.
fn fill_missing(samples: &[Vec<f64>], kept: &[usize]) -> Vec<Vec<f64>> {
    let n = samples.len();
    let fill: Vec<(f64, f64, bool)> = kept
        .iter()
        .map(|&i| {
            let vals: Vec<f64> = samples.iter().map(|s| s[i]).filter(|v| !v.is_nan()).collect();
            let m = vals.len();
            let mean = vals.iter().sum::<f64>() / m as f64;
            let stretch = if m > 1 { ((n - 1) as f64 / (m - 1) as f64).sqrt() } else { 1.0 };
            (mean, stretch, m == n)
        })
        .collect();
    samples
        .iter()
        .map(|s| {
            kept.iter()
                .zip(&fill)
                .map(|(&i, &(mean, stretch, whole))| match s[i] {
                    v if whole => v,
                    v if v.is_nan() => mean,
                    v => mean + (v - mean) * stretch,
                })
                .collect()
        })
        .collect()
}

/// Mean and unbiased (n−1) sample covariance.
pub(crate) fn mean_and_covariance(samples: &[Vec<f64>], d: usize) -> (Array1<f64>, Array2<f64>) {
    let n = samples.len() as f64;
    let mut mean = Array1::<f64>::zeros(d);
    for s in samples {
        for (m, v) in mean.iter_mut().zip(s) {
            *m += v;
        }
    }
    mean /= n;
    let mut cov = Array2::<f64>::zeros((d, d));
    for s in samples {
        for i in 0..d {
            let ri = s[i] - mean[i];
            for j in 0..=i {
                cov[[i, j]] += ri * (s[j] - mean[j]);
            }
        }
    }
    for i in 0..d {
        for j in 0..=i {
            let v = cov[[i, j]] / (n - 1.0);
            cov[[i, j]] = v;
            cov[[j, i]] = v;
        }
    }
    (mean, cov)
}

fn ridge(cov: &Array2<f64>) -> Array2<f64> {
    let d = cov.nrows();
    let mean_var = cov.diag().sum() / d as f64;
    let mut out = cov.clone();
    let add = RIDGE_FLOOR + RIDGE_RELATIVE * mean_var;
    for i in 0..d {
        out[[i, i]] += add;
    }
    out
}

/// Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional
/// covariance matrices": shrink toward m·I, m = tr(S)/d, with intensity
/// δ = min(b̄², d²)/d², where (with the 1/n moments of the paper)
/// d² = ‖S_n − m I‖², b̄² = (1/n²) Σ_k ‖y_k y_kᵀ − S_n‖², ‖A‖² = tr(AAᵀ)/d.
/// δ is scale-free, so it is applied to the unbiased covariance `cov` (keeps
/// both regularisations on the same n−1 footing), then the 1e-9 ridge is added.
pub(crate) fn ledoit_wolf(samples: &[Vec<f64>], mean: &Array1<f64>, cov: &Array2<f64>) -> Array2<f64> {
    let d = cov.nrows();
    let n = samples.len() as f64;
    let df = d as f64;
    let s_n = cov * ((n - 1.0) / n);
    let m_n = s_n.diag().sum() / df;
    let mut d2 = 0.0;
    for i in 0..d {
        for j in 0..d {
            let t = if i == j { m_n } else { 0.0 };
            d2 += (s_n[[i, j]] - t).powi(2);
        }
    }
    d2 /= df;
    let mut b2_bar = 0.0;
    let mut y = vec![0.0; d];
    for s in samples {
        for i in 0..d {
            y[i] = s[i] - mean[i];
        }
        let mut norm = 0.0;
        for i in 0..d {
            for j in 0..d {
                norm += (y[i] * y[j] - s_n[[i, j]]).powi(2);
            }
        }
        b2_bar += norm / df;
    }
    b2_bar /= n * n;
    let b2 = b2_bar.min(d2);
    // d² = 0 means S is already a multiple of I: nothing to shrink.
    let delta = if d2 > 0.0 { b2 / d2 } else { 0.0 };
    let m = cov.diag().sum() / df;
    let mut out = cov * (1.0 - delta);
    for i in 0..d {
        out[[i, i]] += delta * m + RIDGE_FLOOR;
    }
    out
}

/// Collects accepted samples during warm-up, keeping only the last `window`.
#[derive(Debug, Clone)]
pub(crate) struct Calibrator {
    d: usize,
    window: usize,
    samples: VecDeque<Vec<f64>>,
}

impl Calibrator {
    /// `window` is raised to at least d+2 so the baseline can ever freeze.
    pub(crate) fn new(d: usize, window: usize) -> Calibrator {
        let window = window.max(min_samples(d));
        // Grows as samples come: a long window costs memory only once filled.
        Calibrator { d, window, samples: VecDeque::with_capacity(window.min(4096)) }
    }

    /// Adds a sample if it has the right length and no infinite value (NaN:
    /// a feature without events in the interval).
    pub(crate) fn push(&mut self, x: &[f64]) -> bool {
        if x.len() != self.d || x.iter().any(|v| v.is_infinite()) {
            return false;
        }
        if self.samples.len() == self.window {
            self.samples.pop_front();
        }
        self.samples.push_back(x.to_vec());
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The most samples it keeps (what the baseline is computed from).
    pub(crate) fn window(&self) -> usize {
        self.window
    }

    /// The fewest it freezes a baseline from.
    pub(crate) fn needed(&self) -> usize {
        min_samples(self.d)
    }

    pub(crate) fn enough(&self) -> bool {
        self.samples.len() >= min_samples(self.d)
    }

    pub(crate) fn samples(&self) -> Vec<Vec<f64>> {
        self.samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: usize) -> Vec<String> {
        (0..d).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn covariance_matches_hand_computation() {
        let s = vec![vec![1.0, 2.0], vec![3.0, 6.0], vec![5.0, 7.0]];
        let (m, c) = mean_and_covariance(&s, 2);
        assert!((m[0] - 3.0).abs() < 1e-12 && (m[1] - 5.0).abs() < 1e-12);
        // var(x) = (4+0+4)/2 = 4; var(y) = (9+1+4)/2 = 7; cov = (6+0+4)/2 = 5
        assert!((c[[0, 0]] - 4.0).abs() < 1e-12);
        assert!((c[[1, 1]] - 7.0).abs() < 1e-12);
        assert!((c[[0, 1]] - 5.0).abs() < 1e-12 && (c[[1, 0]] - 5.0).abs() < 1e-12);
    }

    #[test]
    fn ridge_adds_relative_and_floor() {
        let c = ndarray::arr2(&[[4.0, 1.0], [1.0, 2.0]]);
        let r = ridge(&c);
        let add = 1e-9 + 1e-3 * 3.0;
        assert!((r[[0, 0]] - (4.0 + add)).abs() < 1e-15);
        assert!((r[[1, 1]] - (2.0 + add)).abs() < 1e-15);
        assert_eq!(r[[0, 1]], 1.0);
    }

    #[test]
    fn ledoit_wolf_intensity_in_unit_interval_and_keeps_trace() {
        let mut rng = crate::model::testutil::Rng::new(7);
        let samples: Vec<Vec<f64>> = (0..30).map(|_| (0..5).map(|_| rng.normal()).collect()).collect();
        let (m, c) = mean_and_covariance(&samples, 5);
        let lw = ledoit_wolf(&samples, &m, &c);
        // Shrinkage toward m·I preserves the trace (plus d·1e-9).
        let tr_diff = lw.diag().sum() - c.diag().sum() - 5.0 * RIDGE_FLOOR;
        assert!(tr_diff.abs() < 1e-9, "{tr_diff}");
        // Off-diagonals shrink toward zero, never flip or grow.
        let mut shrunk = false;
        for i in 0..5 {
            for j in 0..5 {
                if i != j {
                    assert!(lw[[i, j]].abs() <= c[[i, j]].abs() + 1e-15);
                    assert!(lw[[i, j]] * c[[i, j]] >= 0.0);
                    shrunk |= lw[[i, j]].abs() < c[[i, j]].abs() * 0.999;
                }
            }
        }
        // With 30 samples of 5 iid features, the noise is large: δ > 0.
        assert!(shrunk);
    }

    #[test]
    fn diagonal_keeps_ledoit_wolf_variances_and_scores_z_scores() {
        // Two features that move together at calibration: the full covariance
        // discounts a rise of both, the diagonal one counts each in full.
        let mut rng = crate::model::testutil::Rng::new(11);
        let samples: Vec<Vec<f64>> = (0..200)
            .map(|_| {
                let c = rng.normal();
                vec![c + 0.1 * rng.normal(), c + 0.1 * rng.normal()]
            })
            .collect();
        let lw = Baseline::from_samples(names(2), &samples, Regularisation::LedoitWolf, 0).unwrap();
        let dg = Baseline::from_samples(names(2), &samples, Regularisation::Diagonal, 0).unwrap();
        assert_eq!(dg.regularisation(), Regularisation::Diagonal);
        assert_eq!("diagonal".parse::<Regularisation>(), Ok(Regularisation::Diagonal));
        assert_eq!(Regularisation::Diagonal.to_string(), "diagonal");
        assert_eq!(dg.covariance.diag(), lw.covariance.diag());
        assert_eq!((dg.covariance[[0, 1]], dg.covariance[[1, 0]]), (0.0, 0.0));
        assert!(lw.covariance[[0, 1]] > 0.5, "{}", lw.covariance[[0, 1]]);
        let x: Vec<f64> = (0..2).map(|i| dg.mean[i] + 2.0 * dg.std[i]).collect();
        let (fd, fl) = (
            dg.score(&x, crate::model::Side::One).unwrap().friction,
            lw.score(&x, crate::model::Side::One).unwrap().friction,
        );
        assert!((fd - 8f64.sqrt()).abs() < 1e-9, "two features 2σ above: √8, got {fd}");
        assert!(fl < 0.8 * fd, "the full covariance discounts the joint rise: {fl} against {fd}");
    }

    #[test]
    fn ledoit_wolf_of_identity_like_samples_is_well_conditioned() {
        // Few samples, d close to n: raw covariance is near-singular; LW is not.
        let mut rng = crate::model::testutil::Rng::new(11);
        let d = 6;
        let samples: Vec<Vec<f64>> = (0..8).map(|_| (0..d).map(|_| rng.normal()).collect()).collect();
        let b = Baseline::from_samples(names(d), &samples, Regularisation::LedoitWolf, 0).unwrap();
        let diag_min = b.cholesky().diag().iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(diag_min > 0.1, "{diag_min}");
    }

    #[test]
    fn too_few_samples_is_an_error() {
        let s = vec![vec![1.0, 2.0], vec![3.0, 6.0], vec![5.0, 7.0]];
        assert_eq!(
            Baseline::from_samples(names(2), &s, Regularisation::Ridge, 0).unwrap_err(),
            BaselineError::TooFewSamples { have: 3, need: 4 }
        );
    }

    #[test]
    fn constant_feature_still_positive_definite() {
        let s: Vec<Vec<f64>> = (0..10).map(|i| vec![1e-3, i as f64 * 1e-4]).collect();
        for r in Regularisation::ALL {
            let b = Baseline::from_samples(names(2), &s, r, 0).unwrap();
            assert!(b.cholesky()[[0, 0]] > 0.0);
        }
    }

    #[test]
    fn from_parts_rejects_bad_input() {
        let f = names(2);
        let m = Array1::zeros(2);
        let bad = ndarray::arr2(&[[1.0, 2.0], [2.0, 1.0]]); // indefinite
        assert_eq!(
            Baseline::from_parts(f.clone(), m.clone(), bad, 5, None, Regularisation::Ridge, 0).unwrap_err(),
            BaselineError::NotPositiveDefinite
        );
        let nan = ndarray::arr2(&[[1.0, f64::NAN], [f64::NAN, 1.0]]);
        assert!(matches!(
            Baseline::from_parts(f.clone(), m.clone(), nan, 5, None, Regularisation::Ridge, 0),
            Err(BaselineError::NonFinite(_))
        ));
        let asym = ndarray::arr2(&[[1.0, 0.5], [0.4, 1.0]]);
        assert!(Baseline::from_parts(f.clone(), m.clone(), asym, 5, None, Regularisation::Ridge, 0).is_err());
        let small = ndarray::arr2(&[[1.0]]);
        assert!(matches!(
            Baseline::from_parts(f, m, small, 5, None, Regularisation::Ridge, 0),
            Err(BaselineError::Dimension(_))
        ));
    }

    #[test]
    fn calibrator_keeps_last_window_and_rejects_infinite() {
        let mut c = Calibrator::new(2, 5);
        assert!(!c.push(&[1.0, f64::INFINITY]));
        assert!(!c.push(&[f64::NEG_INFINITY, 1.0]));
        assert!(!c.push(&[1.0]));
        for i in 0..8 {
            assert!(c.push(&[i as f64, 0.0]));
        }
        assert_eq!(c.len(), 5);
        assert_eq!(c.samples()[0][0], 3.0);
        // window below d+2 is raised
        let c = Calibrator::new(4, 2);
        assert_eq!(c.window, 6);
    }

    /// A feature without events in some intervals keeps the mean and the
    /// unbiased variance of the values it had; the others are as without it.
    #[test]
    fn missing_values_keep_the_measured_mean_and_variance() {
        let mut rng = crate::model::testutil::Rng::new(21);
        let samples: Vec<Vec<f64>> = (0..300)
            .map(|i| {
                let a = rng.normal();
                let b = 0.5 * a + rng.normal();
                vec![a, if i % 5 < 2 { f64::NAN } else { 3.0 + b }]
            })
            .collect();
        let vals: Vec<f64> = samples.iter().map(|s| s[1]).filter(|v| !v.is_nan()).collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
        let filled = fill_missing(&samples, &[0, 1]);
        let (mean, cov) = mean_and_covariance(&filled, 2);
        assert!((mean[1] - m).abs() < 1e-12 && (cov[[1, 1]] - var).abs() < 1e-12 * var, "{mean} {cov}");
        let whole: Vec<Vec<f64>> = samples.iter().map(|s| vec![s[0]]).collect();
        assert_eq!(cov[[0, 0]], mean_and_covariance(&whole, 1).1[[0, 0]], "a column measured throughout is copied");
        // The pair's covariance is kept in sign and shrunk by about the measured share (0.6).
        let both: Vec<(f64, f64)> = samples.iter().filter(|s| !s[1].is_nan()).map(|s| (s[0], s[1])).collect();
        let (ma, mb) = (both.iter().map(|p| p.0).sum::<f64>() / 180.0, both.iter().map(|p| p.1).sum::<f64>() / 180.0);
        let c_both = both.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum::<f64>() / 179.0;
        let ratio = cov[[0, 1]] / c_both;
        assert!(ratio > 0.6 && ratio < 0.9, "{ratio}");
        let b = Baseline::from_samples(names(2), &samples, Regularisation::LedoitWolf, 0).unwrap();
        assert_eq!(b.measured(), &[300, 180]);
        assert!(b.is_measured(1) && (b.mean()[1] - m).abs() < 1e-12);
    }

    /// A feature with events in fewer than MIN_MEASURED samples is left
    /// out: a placeholder for it, and the other features' baseline exactly
    /// what it is without that column.
    #[test]
    fn a_feature_measured_in_too_few_samples_is_left_out() {
        let without = correlated_samples_2(300);
        for reg in [Regularisation::Ridge, Regularisation::LedoitWolf] {
            for present in [0, MIN_MEASURED - 1] {
                let with: Vec<Vec<f64>> = without
                    .iter()
                    .enumerate()
                    .map(|(i, s)| vec![s[0], if i < present { 7.0 + s[1] } else { f64::NAN }, s[1]])
                    .collect();
                let a = Baseline::from_samples(names(3), &with, reg, 0).unwrap();
                let b = Baseline::from_samples(names(2), &without, reg, 0).unwrap();
                assert!(!a.is_measured(1) && a.is_measured(0) && a.is_measured(2), "{reg} {present}");
                assert_eq!((a.mean()[1], a.covariance()[[1, 1]], a.covariance()[[0, 1]]), (0.0, 1.0, 0.0));
                for (i, j, bi, bj) in [(0, 0, 0, 0), (0, 2, 0, 1), (2, 2, 1, 1)] {
                    assert_eq!(a.covariance()[[i, j]], b.covariance()[[bi, bj]], "{reg} {present}: ({i}, {j})");
                }
            }
            let with: Vec<Vec<f64>> = without
                .iter()
                .enumerate()
                .map(|(i, s)| vec![s[0], if i < MIN_MEASURED { s[1] } else { f64::NAN }])
                .collect();
            assert!(
                Baseline::from_samples(names(2), &with, reg, 0).unwrap().is_measured(1),
                "{MIN_MEASURED} samples are enough"
            );
        }
        // A short window (a workload's can be 5 samples) needs the feature in half of it.
        let short = |k: usize| -> Vec<Vec<f64>> {
            correlated_samples_2(6)
                .into_iter()
                .enumerate()
                .map(|(i, s)| vec![s[0], if i < k { s[1] } else { f64::NAN }])
                .collect()
        };
        assert!(Baseline::from_samples(names(2), &short(3), Regularisation::Ridge, 0).unwrap().is_measured(1));
        assert!(!Baseline::from_samples(names(2), &short(2), Regularisation::Ridge, 0).unwrap().is_measured(1));
        let none: Vec<Vec<f64>> = short(0).iter().map(|_| vec![f64::NAN, f64::NAN]).collect();
        assert_eq!(
            Baseline::from_samples(names(2), &none, Regularisation::Ridge, 0).unwrap_err(),
            BaselineError::NothingMeasured { need: 3 }
        );
    }

    fn correlated_samples_2(n: usize) -> Vec<Vec<f64>> {
        let mut rng = crate::model::testutil::Rng::new(5);
        (0..n)
            .map(|_| {
                let a = rng.normal();
                vec![a, 0.3 * a + rng.normal()]
            })
            .collect()
    }

    #[test]
    fn regularisation_names_roundtrip() {
        for r in [Regularisation::Ridge, Regularisation::LedoitWolf] {
            assert_eq!(r.as_str().parse::<Regularisation>().unwrap(), r);
        }
        assert!("none".parse::<Regularisation>().is_err());
        assert_eq!(Regularisation::default(), Regularisation::LedoitWolf);
    }
}
