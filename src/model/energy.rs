//! Energy: short-term instability of friction, with an adaptive window.
//!
//! ΔF = F_t − F_{t−1}; vol = EWMA(|ΔF|, α = 0.1);
//! W = clip(round(k / (vol + 1e-6)), 5, 40); energy = mean |ΔF| over the last W.
//! Calm friction (low vol) gets a long window (stable reading); jumpy friction
//! a short one (reacts fast). k is learned once, after the freeze, as
//! median(|ΔF|) × 22.5 over the first 20 friction values, so a node at its
//! typical volatility sits near the middle of the range (W ≈ 22).

use std::collections::VecDeque;

/// EWMA weight of the newest |ΔF|.
pub const VOL_ALPHA: f64 = 0.1;
/// Smallest energy window.
pub const MIN_WINDOW: usize = 5;
/// Largest energy window; also the window used until k is known.
pub const MAX_WINDOW: usize = 40;
/// Friction values used to learn k (giving K_SAMPLES − 1 differences).
pub const K_SAMPLES: usize = 20;
/// k = median(|ΔF|) × K_FACTOR.
pub const K_FACTOR: f64 = 22.5;
const VOL_EPS: f64 = 1e-6;

/// Result of one energy update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyOut {
    /// Mean |ΔF| over the last `window` differences (or all there are; 0 before the first).
    pub energy: f64,
    /// The adaptive window W in [5, 40].
    pub window: usize,
    /// True on the update where k was learned (the baseline should be saved again).
    pub k_calibrated: bool,
}

/// Energy tracker; one per model run.
#[derive(Debug, Clone)]
pub struct Energy {
    k: Option<f64>,
    prev: Option<f64>,
    vol: Option<f64>,
    /// Last MAX_WINDOW values of |ΔF|, oldest first.
    diffs: VecDeque<f64>,
    /// Friction values seen so far while k is unknown (up to K_SAMPLES).
    k_frictions: Vec<f64>,
}

impl Energy {
    /// `k` comes from a saved baseline, or `None` to learn it from the first
    /// K_SAMPLES friction values. Until k is known, W = MAX_WINDOW: with fewer
    /// than 20 values this simply averages everything seen so far.
    pub fn new(k: Option<f64>) -> Energy {
        let k = k.filter(|k| k.is_finite() && *k >= 0.0);
        Energy { k, prev: None, vol: None, diffs: VecDeque::with_capacity(MAX_WINDOW), k_frictions: Vec::new() }
    }

    /// The learned k, if any.
    pub fn k(&self) -> Option<f64> {
        self.k
    }

    /// Feeds the next friction value. Returns `None` (and changes nothing) if
    /// `f` is not finite, or if an internal value would become non-finite.
    pub fn update(&mut self, f: f64) -> Option<EnergyOut> {
        if !f.is_finite() {
            return None;
        }
        // Compute everything first and commit at the end, so a rejected
        // update leaves the tracker untouched.
        let mut k_calibrated = false;
        let mut new_k = self.k;
        let mut k_frictions = None;
        if self.k.is_none() {
            let mut fs = self.k_frictions.clone();
            fs.push(f);
            if fs.len() >= K_SAMPLES {
                let k = learn_k(&fs);
                if !k.is_finite() {
                    return None;
                }
                new_k = Some(k);
                k_calibrated = true;
                fs = Vec::new();
            }
            k_frictions = Some(fs);
        }
        let (vol, diff) = match self.prev {
            Some(p) => {
                let d = (f - p).abs();
                if !d.is_finite() {
                    return None;
                }
                let v = match self.vol {
                    Some(v) => VOL_ALPHA * d + (1.0 - VOL_ALPHA) * v,
                    None => d,
                };
                (Some(v), Some(d))
            }
            None => (self.vol, None),
        };
        let window = match (new_k, vol) {
            (Some(k), Some(v)) => adaptive_window(k, v),
            _ => MAX_WINDOW,
        };
        // Commit.
        self.prev = Some(f);
        self.vol = vol;
        self.k = new_k;
        if let Some(fs) = k_frictions {
            self.k_frictions = fs;
        }
        if let Some(d) = diff {
            if self.diffs.len() == MAX_WINDOW {
                self.diffs.pop_front();
            }
            self.diffs.push_back(d);
        }
        let take = window.min(self.diffs.len());
        let energy = if take == 0 { 0.0 } else { self.diffs.iter().rev().take(take).sum::<f64>() / take as f64 };
        // Finite inputs bound the mean of finite |ΔF|, so this always holds;
        // kept as the last guard of "never output NaN/Inf".
        energy.is_finite().then_some(EnergyOut { energy, window, k_calibrated })
    }
}

/// W = clip(round(k / (vol + 1e-6)), 5, 40).
pub fn adaptive_window(k: f64, vol: f64) -> usize {
    let w = (k / (vol + VOL_EPS)).round();
    if !w.is_finite() {
        return MAX_WINDOW;
    }
    w.clamp(MIN_WINDOW as f64, MAX_WINDOW as f64) as usize
}

/// k = median(|ΔF|) × 22.5 over consecutive differences of `fs`.
pub fn learn_k(fs: &[f64]) -> f64 {
    let mut d: Vec<f64> = fs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(|a, b| a.total_cmp(b));
    let n = d.len();
    let median = if n % 2 == 1 { d[n / 2] } else { 0.5 * (d[n / 2 - 1] + d[n / 2]) };
    median * K_FACTOR
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constant_friction_gives_zero_energy() {
        let mut e = Energy::new(None);
        for _ in 0..100 {
            let o = e.update(2.5).unwrap();
            assert_eq!(o.energy, 0.0);
            assert!((MIN_WINDOW..=MAX_WINDOW).contains(&o.window));
        }
        // median |ΔF| = 0 → k = 0 → shortest window.
        assert_eq!(e.k(), Some(0.0));
        assert_eq!(e.update(2.5).unwrap().window, MIN_WINDOW);
    }

    #[test]
    fn alternating_friction_energy_is_amplitude() {
        let mut e = Energy::new(None);
        let amp = 0.7;
        let mut last = None;
        for i in 0..200 {
            let f = if i % 2 == 0 { 1.0 } else { 1.0 + amp };
            last = e.update(f);
            if i >= 1 {
                assert!((last.unwrap().energy - amp).abs() < 1e-12);
            }
        }
        // k = 0.7 × 22.5, vol → 0.7 ⇒ W ≈ 22.5 → round → 22 or 23.
        let w = last.unwrap().window;
        assert!((22..=23).contains(&w), "{w}");
    }

    #[test]
    fn first_update_has_zero_energy_and_max_window() {
        let mut e = Energy::new(None);
        let o = e.update(3.0).unwrap();
        assert_eq!(o, EnergyOut { energy: 0.0, window: MAX_WINDOW, k_calibrated: false });
    }

    #[test]
    fn k_is_median_times_22_5_of_first_20() {
        let fs: Vec<f64> = (0..20).map(|i| ((i * 7919) % 13) as f64 * 0.1).collect();
        let mut diffs: Vec<f64> = fs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
        assert_eq!(diffs.len(), 19);
        diffs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let expected = diffs[9] * 22.5;
        let mut e = Energy::new(None);
        for (i, f) in fs.iter().enumerate() {
            let o = e.update(*f).unwrap();
            assert_eq!(o.k_calibrated, i == 19, "at {i}");
            if i < 19 {
                assert_eq!(e.k(), None);
                assert_eq!(o.window, MAX_WINDOW);
            }
        }
        assert!((e.k().unwrap() - expected).abs() < 1e-12);
        // Later values do not change k.
        for f in [100.0, 0.0, 50.0] {
            assert!(!e.update(f).unwrap().k_calibrated);
        }
        assert!((e.k().unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn given_k_is_used_at_once() {
        let mut e = Energy::new(Some(1.0));
        e.update(0.0).unwrap();
        // |ΔF| = 0.1 → vol = 0.1 → W = round(1/0.100001) = 10
        let o = e.update(0.1).unwrap();
        assert_eq!(o.window, 10);
        assert!(!o.k_calibrated);
    }

    #[test]
    fn energy_is_mean_over_last_w() {
        // k chosen so W is small: with vol ≈ 1, W = round(5.4) = 5.
        let mut e = Energy::new(Some(5.4));
        let seq = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 3.0, 6.0];
        let mut o = None;
        for f in seq {
            o = e.update(f);
        }
        let o = o.unwrap();
        assert_eq!(o.window, 5);
        // last five |ΔF|: 1,1,1,2,3 → 1.6
        assert!((o.energy - 1.6).abs() < 1e-12, "{}", o.energy);
    }

    #[test]
    fn non_finite_is_rejected_without_state_change() {
        let mut e = Energy::new(None);
        e.update(1.0).unwrap();
        assert!(e.update(f64::NAN).is_none());
        assert!(e.update(f64::INFINITY).is_none());
        let o = e.update(1.5).unwrap();
        assert!((o.energy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn learn_k_edge_cases() {
        assert_eq!(learn_k(&[]), 0.0);
        assert_eq!(learn_k(&[1.0]), 0.0);
        assert_eq!(learn_k(&[1.0, 2.0, 4.0]), 1.5 * 22.5);
    }

    proptest! {
        #[test]
        fn window_always_in_range(fs in proptest::collection::vec(0.0f64..1e3, 1..120), k in proptest::option::of(0.0f64..1e4)) {
            let mut e = Energy::new(k);
            for f in fs {
                let o = e.update(f).unwrap();
                prop_assert!((MIN_WINDOW..=MAX_WINDOW).contains(&o.window));
                prop_assert!(o.energy.is_finite() && o.energy >= 0.0);
            }
        }
    }
}
