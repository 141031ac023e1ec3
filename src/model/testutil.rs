//! Test helpers: a small deterministic PRNG and a correlated Gaussian sampler
//! (no rand crate in the dependency set).

use ndarray::{arr1, arr2, Array1, Array2};

use super::linalg::cholesky;

/// SplitMix64: tiny, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so ln() in Box–Muller is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal via Box–Muller (one of the pair is discarded: simpler).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

pub fn names(d: usize) -> Vec<String> {
    (0..d).map(|i| format!("f{i}")).collect()
}

/// Known 4-feature baseline, in seconds like the real features: means and
/// standard deviations of a few ms / hundreds of µs, non-diagonal correlation.
pub fn known_mean() -> Array1<f64> {
    arr1(&[5e-3, 1e-3, 2e-3, 4e-4])
}

pub fn known_cov() -> Array2<f64> {
    let sd = [2e-3, 5e-4, 1e-3, 3e-4];
    let corr = arr2(&[[1.0, 0.6, 0.3, 0.2], [0.6, 1.0, 0.5, 0.1], [0.3, 0.5, 1.0, 0.4], [0.2, 0.1, 0.4, 1.0]]);
    Array2::from_shape_fn((4, 4), |(i, j)| corr[[i, j]] * sd[i] * sd[j])
}

/// Draws from N(mean, cov) as mean + L z.
pub struct Gaussian {
    mean: Array1<f64>,
    chol: Array2<f64>,
    rng: Rng,
}

impl Gaussian {
    pub fn new(mean: Array1<f64>, cov: &Array2<f64>, seed: u64) -> Gaussian {
        let chol = cholesky(cov.view()).expect("test covariance must be SPD");
        Gaussian { mean, chol, rng: Rng::new(seed) }
    }

    pub fn known(seed: u64) -> Gaussian {
        Gaussian::new(known_mean(), &known_cov(), seed)
    }

    pub fn sample(&mut self) -> Vec<f64> {
        let z: Array1<f64> = (0..self.mean.len()).map(|_| self.rng.normal()).collect();
        (&self.mean + &self.chol.dot(&z)).to_vec()
    }
}

/// `n` samples from the known 4-feature Gaussian.
pub fn correlated_samples(seed: u64, n: usize) -> Vec<Vec<f64>> {
    let mut g = Gaussian::known(seed);
    (0..n).map(|_| g.sample()).collect()
}

#[test]
fn normal_has_unit_moments() {
    let mut r = Rng::new(3);
    let n = 100_000;
    let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
    let m = xs.iter().sum::<f64>() / n as f64;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
    assert!(m.abs() < 0.02, "{m}");
    assert!((v - 1.0).abs() < 0.02, "{v}");
}
