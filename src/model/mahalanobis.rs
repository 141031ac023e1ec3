//! Friction (Mahalanobis distance), per-feature contributions and direction,
//! all through the Cholesky factor: Σ⁻¹ is never formed.

use ndarray::{Array1, Array2, ArrayView2};

use super::linalg::{cholesky, solve_lower, solve_lower_transposed};

/// One scored sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// F = sqrt((x−μ)ᵀ Σ⁻¹ (x−μ)).
    pub friction: f64,
    /// +1 worse than baseline, −1 not worse (see [`score`]).
    pub direction: i8,
    /// c_i = (x−μ)_i · [Σ⁻¹(x−μ)]_i; Σ c_i = F².
    pub contributions: Vec<f64>,
}

/// Which deviations from the baseline count as friction. The default is
/// the shipped one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Side {
    /// Every deviation, as in the plain Mahalanobis distance.
    #[serde(rename = "two-sided")]
    Two,
    /// Only excesses: each feature's residual is cut at 0 before the
    /// distance, so a signal quieter than its baseline adds nothing. Every
    /// feature is a latency or a CPU share (higher is worse), and a node
    /// calmer than usual is not friction. bench/qos: Spearman rho vs client
    /// P99 +0.005 to +0.023 on every run (README, "Does friction track P99?").
    #[default]
    #[serde(rename = "one-sided")]
    One,
}

impl Side {
    /// The name used in flags and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Two => "two-sided",
            Side::One => "one-sided",
        }
    }
}

impl std::str::FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Side, String> {
        match s {
            "two-sided" => Ok(Side::Two),
            "one-sided" => Ok(Side::One),
            _ => Err(format!("unknown friction side {s:?} (one-sided or two-sided)")),
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Two => "two-sided",
            Side::One => "one-sided",
        })
    }
}

/// Scores `x` against mean `mean` and covariance Σ = L Lᵀ (`chol` lower).
///
/// Direction is sign(sᵀ Σ⁻¹ (x−μ)) with s = per-feature baseline standard
/// deviations (`std`): the Mahalanobis inner product of the residual with the
/// "every feature one σ worse" vector. Because every feature is a latency
/// (higher is worse), a positive value means the node sits on the worse side
/// of the baseline. It is invariant to feature order and to the unit of each
/// feature. A value of exactly 0 (including x = μ) reports −1 (not worse).
///
/// With [`Side::One`], friction and contributions use the residual cut at 0
/// per feature; direction still uses the whole residual (better or worse).
///
/// Returns `None` if the inputs have the wrong length, a solve fails, or any
/// output would be non-finite: the caller skips the interval.
pub fn score(mean: &Array1<f64>, chol: ArrayView2<f64>, std: &Array1<f64>, x: &[f64], side: Side) -> Option<Score> {
    let d = mean.len();
    if x.len() != d || std.len() != d || chol.dim() != (d, d) {
        return None;
    }
    let r: Array1<f64> = x.iter().zip(mean.iter()).map(|(a, m)| a - m).collect();
    if !r.iter().all(|v| v.is_finite()) {
        return None;
    }
    // z = L⁻¹ r, so F² = zᵀz (a sum of squares: never negative).
    let z = solve_lower(chol, r.view())?;
    // w = L⁻ᵀ z = Σ⁻¹ r.
    let w = solve_lower_transposed(chol, z.view())?;
    let along = std.dot(&w);
    let (r, z, w) = match side {
        Side::Two => (r, z, w),
        Side::One => {
            let r = r.mapv(|v| v.max(0.0));
            let z = solve_lower(chol, r.view())?;
            let w = solve_lower_transposed(chol, z.view())?;
            (r, z, w)
        }
    };
    let f2 = z.dot(&z);
    let friction = f2.sqrt();
    let contributions: Vec<f64> = r.iter().zip(w.iter()).map(|(a, b)| a * b).collect();
    if !friction.is_finite() || !along.is_finite() || !contributions.iter().all(|c| c.is_finite()) {
        return None;
    }
    let direction = if along > 0.0 { 1 } else { -1 };
    Some(Score { friction, direction, contributions })
}

/// [`score`] of the features `x` has a value for (NaN: no events in the
/// interval), under their marginal distribution: the mean, covariance
/// (`cov`, whose factor is `chol`) and deviations restricted to them, the
/// standard treatment of a Gaussian with missing coordinates. Those left out
/// contribute 0. With none left, friction is 0 (nothing measured is worse
/// than usual). An infinite value is an error (`None`), as in [`score`].
pub fn score_observed(
    mean: &Array1<f64>,
    cov: &Array2<f64>,
    chol: ArrayView2<f64>,
    std: &Array1<f64>,
    x: &[f64],
    side: Side,
) -> Option<Score> {
    let d = mean.len();
    if x.len() != d || cov.dim() != (d, d) || x.iter().any(|v| v.is_infinite()) {
        return None;
    }
    let seen: Vec<usize> = (0..d).filter(|&i| !x[i].is_nan()).collect();
    if seen.len() == d {
        return score(mean, chol, std, x, side);
    }
    if seen.is_empty() {
        return Some(Score { friction: 0.0, direction: -1, contributions: vec![0.0; d] });
    }
    let k = seen.len();
    let sub_cov = Array2::from_shape_fn((k, k), |(a, b)| cov[[seen[a], seen[b]]]);
    let sub_chol = cholesky(sub_cov.view())?;
    let pick = |v: &Array1<f64>| seen.iter().map(|&i| v[i]).collect::<Array1<f64>>();
    let sub_x: Vec<f64> = seen.iter().map(|&i| x[i]).collect();
    let s = score(&pick(mean), sub_chol.view(), &pick(std), &sub_x, side)?;
    let mut contributions = vec![0.0; d];
    for (c, &i) in s.contributions.iter().zip(&seen) {
        contributions[i] = *c;
    }
    Some(Score { contributions, ..s })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linalg::cholesky;
    use ndarray::{arr1, arr2, Array2};
    use proptest::prelude::*;

    fn score_cov(mean: &[f64], cov: &Array2<f64>, x: &[f64]) -> Score {
        let l = cholesky(cov.view()).unwrap();
        let s = cov.diag().mapv(f64::sqrt);
        score(&arr1(mean), l.view(), &s, x, Side::Two).unwrap()
    }

    #[test]
    fn identity_covariance_is_euclidean() {
        let cov = Array2::eye(3);
        let s = score_cov(&[0.0, 0.0, 0.0], &cov, &[3.0, 4.0, 0.0]);
        assert!((s.friction - 5.0).abs() < 1e-12);
        assert_eq!(s.contributions, vec![9.0, 16.0, 0.0]);
        assert_eq!(s.direction, 1);
        let s = score_cov(&[0.0, 0.0, 0.0], &cov, &[-3.0, -4.0, 0.0]);
        assert_eq!(s.direction, -1);
    }

    /// A coordinate without a value is marginalised: the score is the one
    /// of the others under their own mean and covariance, and it adds 0.
    #[test]
    fn missing_coordinates_are_marginalised() {
        let cov = arr2(&[[2.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.5]]);
        let (l, sd) = (cholesky(cov.view()).unwrap(), cov.diag().mapv(f64::sqrt));
        let mean = arr1(&[1.0, 2.0, 3.0]);
        let sub = arr2(&[[2.0, 0.3], [0.3, 1.5]]);
        for side in [Side::Two, Side::One] {
            let got = score_observed(&mean, &cov, l.view(), &sd, &[2.5, f64::NAN, 1.0], side).unwrap();
            let (ls, ss) = (cholesky(sub.view()).unwrap(), sub.diag().mapv(f64::sqrt));
            let want = score(&arr1(&[1.0, 3.0]), ls.view(), &ss, &[2.5, 1.0], side).unwrap();
            assert!((got.friction - want.friction).abs() < 1e-12, "{side}");
            assert_eq!(got.direction, want.direction);
            assert_eq!(got.contributions, vec![want.contributions[0], 0.0, want.contributions[1]]);
            // Every value present: the plain score.
            let x = [2.5, 2.0, 1.0];
            assert_eq!(score_observed(&mean, &cov, l.view(), &sd, &x, side), score(&mean, l.view(), &sd, &x, side));
        }
        let none = score_observed(&mean, &cov, l.view(), &sd, &[f64::NAN; 3], Side::One).unwrap();
        assert_eq!((none.friction, none.contributions), (0.0, vec![0.0; 3]));
        assert!(score_observed(&mean, &cov, l.view(), &sd, &[f64::INFINITY, f64::NAN, 1.0], Side::One).is_none());
    }

    #[test]
    fn at_the_mean_friction_zero_and_not_worse() {
        let cov = arr2(&[[2.0, 0.5], [0.5, 1.0]]);
        let s = score_cov(&[1.0, 2.0], &cov, &[1.0, 2.0]);
        assert_eq!(s.friction, 0.0);
        assert_eq!(s.direction, -1);
    }

    #[test]
    fn known_two_by_two_value() {
        // Σ = [[4,2],[2,3]], Σ⁻¹ = 1/8 [[3,-2],[-2,4]]; r = (1,1): r'Σ⁻¹r = (3-4+4)/8 = 3/8.
        let cov = arr2(&[[4.0, 2.0], [2.0, 3.0]]);
        let s = score_cov(&[0.0, 0.0], &cov, &[1.0, 1.0]);
        assert!((s.friction.powi(2) - 0.375).abs() < 1e-12);
        // Σ⁻¹r = (1/8, 2/8) → contributions (1/8, 2/8)
        assert!((s.contributions[0] - 0.125).abs() < 1e-12);
        assert!((s.contributions[1] - 0.25).abs() < 1e-12);
    }

    #[test]
    fn covariance_awareness() {
        // Two strongly correlated features (ρ = 0.95): moving both together is
        // normal, moving them apart is not.
        let cov = arr2(&[[1.0, 0.95], [0.95, 1.0]]);
        let along = score_cov(&[0.0, 0.0], &cov, &[1.0, 1.0]);
        let against = score_cov(&[0.0, 0.0], &cov, &[1.0, -1.0]);
        assert!(along.friction * 3.0 < against.friction, "{} vs {}", along.friction, against.friction);
    }

    #[test]
    fn wrong_length_or_non_finite_is_none() {
        let cov = Array2::<f64>::eye(2);
        let l = cholesky(cov.view()).unwrap();
        let s = arr1(&[1.0, 1.0]);
        let m = arr1(&[0.0, 0.0]);
        assert!(score(&m, l.view(), &s, &[1.0], Side::Two).is_none());
        assert!(score(&m, l.view(), &s, &[f64::NAN, 1.0], Side::Two).is_none());
        assert!(score(&m, l.view(), &s, &[f64::INFINITY, 1.0], Side::Two).is_none());
        // Overflowing result is rejected too.
        let tiny = Array2::<f64>::eye(2) * 1e-300;
        let l = cholesky(tiny.view()).unwrap();
        assert!(score(&m, l.view(), &s, &[1e300, 1e300], Side::Two).is_none());
    }

    /// Random SPD matrix A Aᵀ + εI from proptest-chosen entries.
    fn spd(entries: &[f64], d: usize, eps: f64) -> Array2<f64> {
        let a = Array2::from_shape_vec((d, d), entries[..d * d].to_vec()).unwrap();
        let mut m = a.dot(&a.t());
        for i in 0..d {
            m[[i, i]] += eps;
        }
        m
    }

    proptest! {
        #[test]
        fn contributions_sum_to_f2(
            d in 1usize..7,
            entries in proptest::collection::vec(-3.0f64..3.0, 36),
            eps in 0.01f64..2.0,
            scale in prop_oneof![Just(1e-6), Just(1.0), Just(1e3)],
            xs in proptest::collection::vec(-10.0f64..10.0, 6),
            ms in proptest::collection::vec(-10.0f64..10.0, 6),
        ) {
            let cov = spd(&entries, d, eps) * (scale * scale);
            let x: Vec<f64> = xs[..d].iter().map(|v| v * scale).collect();
            let m: Vec<f64> = ms[..d].iter().map(|v| v * scale).collect();
            let s = score_cov(&m, &cov, &x);
            prop_assert!(s.friction.is_finite() && s.friction >= 0.0);
            let sum: f64 = s.contributions.iter().sum();
            let f2 = s.friction * s.friction;
            // Relative to Σ|c_i| (the cancellation scale), not to F², which may be small.
            let mag: f64 = s.contributions.iter().map(|c| c.abs()).sum();
            prop_assert!((sum - f2).abs() <= 1e-9 * mag.max(f2) + 1e-300, "sum {} f2 {}", sum, f2);
            prop_assert!(s.direction == 1 || s.direction == -1);
        }
    }

    #[test]
    fn one_sided_counts_only_excesses() {
        let cov = arr2(&[[1.0, 0.3], [0.3, 1.0]]);
        let l = cholesky(cov.view()).unwrap();
        let sd = cov.diag().mapv(f64::sqrt);
        let m = arr1(&[0.0, 0.0]);
        // Quieter than the baseline on every feature: no friction, and "better".
        let s = score(&m, l.view(), &sd, &[-2.0, -1.0], Side::One).unwrap();
        assert_eq!(s.friction, 0.0);
        assert_eq!(s.direction, -1);
        assert!(score(&m, l.view(), &sd, &[-2.0, -1.0], Side::Two).unwrap().friction > 1.0);
        // All excesses: the same as two-sided.
        let (a, b) = (
            score(&m, l.view(), &sd, &[2.0, 1.0], Side::One).unwrap(),
            score(&m, l.view(), &sd, &[2.0, 1.0], Side::Two).unwrap(),
        );
        assert_eq!(a, b);
        // Mixed: only the excess counts, and sum(c) = F^2 still.
        let s = score(&m, l.view(), &sd, &[3.0, -5.0], Side::One).unwrap();
        let only = score(&m, l.view(), &sd, &[3.0, 0.0], Side::Two).unwrap();
        assert!((s.friction - only.friction).abs() < 1e-12);
        assert!((s.contributions.iter().sum::<f64>() - s.friction * s.friction).abs() < 1e-9);
        assert_eq!(s.contributions[1], 0.0);
    }

    #[test]
    fn side_parses() {
        assert_eq!("one-sided".parse::<Side>(), Ok(Side::One));
        assert_eq!("two-sided".parse::<Side>(), Ok(Side::Two));
        assert!("both".parse::<Side>().is_err());
        assert_eq!(Side::One.to_string(), "one-sided");
    }
}
