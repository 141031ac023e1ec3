//! The node score a scheduler reads: friction mapped into [0, 1] against the
//! node's own normal range.
//!
//! The reference F₀ is the 99th percentile of friction over the calibration
//! samples, each scored against a baseline of the rest of the window
//! (`normal_friction` in the model): 99 % of the node's normal intervals
//! score 0. Above it the ratio is the share of friction²
//! in excess of F₀², `1 − (F₀/F)²`: 0.75 at twice the normal friction, 0.89
//! at three times, 0.99 at ten times. It keeps ranking nodes where a
//! chi-square CDF would already read 1.0000 (at F = 6 for four or five features).
//! A monotone map of friction: it tracks P99 exactly as friction does.

use super::mahalanobis::Side;

/// Which calibration quantile counts as the node's normal friction.
pub const NORMAL_QUANTILE: f64 = 0.99;

/// F₀ is never below 1 (one feature one standard deviation above its mean):
/// a calibration so steady that 99 % of it scores below that would
/// otherwise turn a one-σ wobble into interference.
pub const MIN_REFERENCE: f64 = 1.0;

/// F₀ from the calibration samples' frictions (order does not matter).
/// `None` if there is no finite value.
pub fn reference(frictions: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = frictions.iter().copied().filter(|f| f.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least 99 % of samples at or below it.
    let rank = ((NORMAL_QUANTILE * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1].max(MIN_REFERENCE))
}

/// F₀ for a baseline saved before F₀ was stored: the square root of the
/// chi-square quantile with `d` degrees of freedom, the distribution of F²
/// for Gaussian features (Wilson–Hilferty, within 0.5 % of the exact
/// quantile from d = 1). Conservative for one-sided friction, which is
/// never larger than two-sided.
pub fn chi_square_reference(d: usize) -> f64 {
    // z for NORMAL_QUANTILE = 0.99.
    const Z: f64 = 2.326_347_874;
    let d = d.max(1) as f64;
    let a = 2.0 / (9.0 * d);
    let q = d * (1.0 - a + Z * a.sqrt()).powi(3);
    q.sqrt().max(MIN_REFERENCE)
}

/// The ratio in [0, 1] for friction `f` against reference `f0`. With
/// two-sided friction a node better than its baseline (`direction` < 0) is
/// far from it but not interfered with: 0. Never NaN.
pub fn ratio(f: f64, f0: f64, direction: i8, side: Side) -> f64 {
    if side == Side::Two && direction < 0 {
        return 0.0;
    }
    let f0 = if f0.is_finite() { f0.max(MIN_REFERENCE) } else { MIN_REFERENCE };
    if f.is_nan() || f <= f0 {
        return 0.0;
    }
    if f.is_infinite() {
        return 1.0;
    }
    (1.0 - (f0 / f).powi(2)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_is_the_nearest_rank_99th_percentile() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(reference(&v), Some(198.0));
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(reference(&v), Some(99.0));
        assert_eq!(reference(&[5.0]), Some(5.0));
        assert_eq!(reference(&[]), None);
        assert_eq!(reference(&[f64::NAN]), None);
        // A near-constant calibration is floored.
        assert_eq!(reference(&[0.0, 0.1, 0.2]), Some(MIN_REFERENCE));
    }

    #[test]
    fn chi_square_reference_matches_the_tables() {
        // sqrt of chi2 0.99 quantiles: d=1 6.635, d=5 15.086, d=10 23.209.
        for (d, q) in [(1, 6.635f64), (5, 15.086), (10, 23.209)] {
            let r = chi_square_reference(d);
            assert!((r - q.sqrt()).abs() / q.sqrt() < 0.005, "d={d}: {r} vs {}", q.sqrt());
        }
    }

    #[test]
    fn ratio_reads_as_documented() {
        let f0 = 3.0;
        assert_eq!(ratio(0.0, f0, -1, Side::One), 0.0);
        assert_eq!(ratio(3.0, f0, 1, Side::One), 0.0);
        assert!((ratio(6.0, f0, 1, Side::One) - 0.75).abs() < 1e-12);
        assert!((ratio(30.0, f0, 1, Side::One) - 0.99).abs() < 1e-12);
        assert_eq!(ratio(f64::INFINITY, f0, 1, Side::One), 1.0);
        assert_eq!(ratio(f64::NAN, f0, 1, Side::One), 0.0);
        // Two-sided: far but better is not interference; one-sided friction
        // already counts only excesses, so direction is not consulted.
        assert_eq!(ratio(30.0, f0, -1, Side::Two), 0.0);
        assert!(ratio(30.0, f0, -1, Side::One) > 0.9);
        // A broken reference falls back to the floor.
        assert!((ratio(2.0, f64::NAN, 1, Side::One) - 0.75).abs() < 1e-12);
        assert!((ratio(2.0, 0.0, 1, Side::One) - 0.75).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn ratio_is_in_unit_interval_and_monotone(a in 0.0f64..1e6, b in 0.0f64..1e6, f0 in -1.0f64..100.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (rl, rh) = (ratio(lo, f0, 1, Side::One), ratio(hi, f0, 1, Side::One));
            prop_assert!((0.0..=1.0).contains(&rl) && (0.0..=1.0).contains(&rh));
            prop_assert!(rl <= rh);
        }
    }
}
