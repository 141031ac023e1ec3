//! The two pieces of dense linear algebra the model needs: a Cholesky factor
//! and the triangular solves through it.
//!
//! The matrices are the baseline covariance, one row per feature (3 by
//! default, at most a few dozen), factorised once per calibration and solved
//! against once per interval. At that size a textbook O(d³) loop is a few
//! hundred flops, and it gave the same bits as LAPACK's dpotrf/dtrtrs on a
//! replayed bench/qos run (207 intervals). LAPACK would bring a BLAS library
//! for nothing: OpenBLAS is 35-43 MB and starts threads; Debian's reference
//! BLAS lacks the CBLAS library ndarray-linalg links.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// The lower-triangular L with L Lᵀ = A (Cholesky-Banachiewicz, row by row),
/// or `None` when A is not square, not finite or not positive definite (a
/// pivot ≤ 0). Only A's lower triangle is read: the caller checks symmetry.
pub fn cholesky(a: ArrayView2<f64>) -> Option<Array2<f64>> {
    let (n, m) = a.dim();
    if n != m {
        return None;
    }
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            if i == j {
                // NaN fails `s > 0.0` too.
                if !(s.is_finite() && s > 0.0) {
                    return None;
                }
                l[[i, i]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    Some(l)
}

/// z with L z = b (forward substitution), or `None` on a shape mismatch, a
/// zero pivot or a non-finite result.
pub fn solve_lower(l: ArrayView2<f64>, b: ArrayView1<f64>) -> Option<Array1<f64>> {
    let n = b.len();
    if l.dim() != (n, n) {
        return None;
    }
    let mut z = Array1::<f64>::zeros(n);
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[[i, k]] * z[k];
        }
        z[i] = s / l[[i, i]];
    }
    z.iter().all(|v| v.is_finite()).then_some(z)
}

/// w with Lᵀ w = z (back substitution through the transpose of the lower
/// factor, without forming it), or `None` as for [`solve_lower`].
pub fn solve_lower_transposed(l: ArrayView2<f64>, z: ArrayView1<f64>) -> Option<Array1<f64>> {
    let n = z.len();
    if l.dim() != (n, n) {
        return None;
    }
    let mut w = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= l[[k, i]] * w[k];
        }
        w[i] = s / l[[i, i]];
    }
    w.iter().all(|v| v.is_finite()).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::Rng;
    use ndarray::arr2;

    /// A random SPD matrix B Bᵀ + d·I, of a size and spread the model meets.
    fn spd(d: usize, rng: &mut Rng) -> Array2<f64> {
        let b = Array2::from_shape_fn((d, d), |_| rng.normal());
        b.dot(&b.t()) + Array2::<f64>::eye(d) * d as f64
    }

    fn max_abs(a: &Array2<f64>) -> f64 {
        a.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn known_factor() {
        // A textbook example with an integer factor.
        let a = arr2(&[[4.0, 12.0, -16.0], [12.0, 37.0, -43.0], [-16.0, -43.0, 98.0]]);
        let l = cholesky(a.view()).unwrap();
        assert_eq!(l, arr2(&[[2.0, 0.0, 0.0], [6.0, 1.0, 0.0], [-8.0, 5.0, 3.0]]));
    }

    #[test]
    fn factor_reconstructs_and_is_lower() {
        let mut rng = Rng::new(11);
        for d in [1, 2, 3, 5, 8, 14, 30] {
            let a = spd(d, &mut rng);
            let l = cholesky(a.view()).unwrap();
            for i in 0..d {
                assert!(l[[i, i]] > 0.0);
                for j in i + 1..d {
                    assert_eq!(l[[i, j]], 0.0);
                }
            }
            let err = max_abs(&(l.dot(&l.t()) - &a)) / max_abs(&a);
            assert!(err < 1e-13, "d={d}: relative reconstruction error {err:e}");
        }
    }

    #[test]
    fn solves_invert_the_factor() {
        let mut rng = Rng::new(5);
        for d in [1, 3, 14] {
            let a = spd(d, &mut rng);
            let l = cholesky(a.view()).unwrap();
            let x: Array1<f64> = (0..d).map(|_| rng.normal()).collect();
            // Solving L Lᵀ w = A x gives back x.
            let b = a.dot(&x);
            let z = solve_lower(l.view(), b.view()).unwrap();
            let w = solve_lower_transposed(l.view(), z.view()).unwrap();
            let err = (&w - &x).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-10, "d={d}: {err:e}");
            // And L z = b holds for the forward step alone.
            let back = l.dot(&z) - &b;
            assert!(back.iter().all(|v| v.abs() < 1e-10 * (1.0 + b.iter().fold(0.0f64, |m, v| m.max(v.abs())))));
        }
    }

    #[test]
    fn rejects_what_is_not_positive_definite() {
        assert!(cholesky(arr2(&[[1.0, 2.0], [2.0, 1.0]]).view()).is_none()); // indefinite
        assert!(cholesky(arr2(&[[1.0, 1.0], [1.0, 1.0]]).view()).is_none()); // singular
        assert!(cholesky(arr2(&[[0.0]]).view()).is_none());
        assert!(cholesky(arr2(&[[f64::NAN]]).view()).is_none());
        assert!(cholesky(arr2(&[[1.0, f64::NAN], [f64::NAN, 1.0]]).view()).is_none());
        assert!(cholesky(arr2(&[[f64::INFINITY]]).view()).is_none());
        assert!(cholesky(Array2::<f64>::zeros((2, 3)).view()).is_none());
        assert!(cholesky(Array2::<f64>::zeros((0, 0)).view()).is_some()); // empty: trivially
    }

    #[test]
    fn solves_refuse_bad_shapes_and_zero_pivots() {
        let l = arr2(&[[1.0, 0.0], [0.5, 2.0]]);
        let b = ndarray::arr1(&[1.0, 2.0, 3.0]);
        assert!(solve_lower(l.view(), b.view()).is_none());
        assert!(solve_lower_transposed(l.view(), b.view()).is_none());
        let singular = arr2(&[[1.0, 0.0], [0.5, 0.0]]);
        let b = ndarray::arr1(&[1.0, 2.0]);
        assert!(solve_lower(singular.view(), b.view()).is_none());
        assert!(solve_lower_transposed(singular.view(), b.view()).is_none());
    }
}
