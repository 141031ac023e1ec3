//! Tests of the `Model` facade: calibration, scoring, energy and persistence together.

use super::testutil::{correlated_samples, known_cov, known_mean, names, Gaussian, Rng};
use super::*;

const REGS: [Regularisation; 2] = [Regularisation::Ridge, Regularisation::LedoitWolf];

fn cfg(d: usize, warmup_s: u64, window: usize, reg: Regularisation) -> ModelConfig {
    ModelConfig {
        features: names(d),
        warmup: Duration::from_secs(warmup_s),
        window,
        regularisation: reg,
        // The plain distance: the chi-squared checks below assume it.
        side: Side::Two,
    }
}

/// Calibrates on `samples` (one per second, all accepted); returns the model,
/// now ready, and the time of the next interval.
fn calibrated(cfg: ModelConfig, samples: &[Vec<f64>]) -> (Model, u64) {
    let mut m = Model::new(cfg);
    let warm = m.config().warmup.as_secs();
    let mut t = 0;
    for s in samples {
        t += 1;
        m.observe(Duration::from_secs(t), s, true);
    }
    assert!(t >= warm, "test feeds fewer samples than the warm-up");
    assert!(m.ready());
    (m, t + 1)
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn mean_friction_squared_is_d_for_fresh_samples() {
    let d = 4.0;
    for reg in REGS {
        let n = 2000;
        let (mut m, mut t) = calibrated(cfg(4, n as u64, n, reg), &correlated_samples(1, n));
        let mut g = Gaussian::known(99);
        let count = 20_000;
        let f2: Vec<f64> = (0..count)
            .map(|_| {
                t += 1;
                m.observe(Duration::from_secs(t), &g.sample(), true).unwrap().friction.powi(2)
            })
            .collect();
        let mean = f2.iter().sum::<f64>() / count as f64;
        let var = f2.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1) as f64;
        // χ²_d: mean d, variance 2d. The tolerances cover the sampling error of a
        // 2000-sample baseline and 20 000 draws. The variance also tells apart
        // a covariance-blind (diagonal-only) score, whose variance would be
        // 2·Σρ² ≈ 11.6 here although its mean is also d.
        assert!((mean - d).abs() < 0.25, "{reg}: mean F² {mean}");
        assert!((var - 2.0 * d).abs() < 1.3, "{reg}: var F² {var}");
        // And fresh samples never touch the frozen baseline.
        assert_eq!(m.baseline().unwrap().samples(), n);
    }
}

#[test]
fn default_window_baseline_is_roughly_calibrated() {
    // With the default 300-sample window the estimate is noisier, but still near d.
    for reg in REGS {
        let (mut m, mut t) = calibrated(cfg(4, 300, 300, reg), &correlated_samples(5, 300));
        let mut g = Gaussian::known(6);
        let count = 20_000;
        let mean = (0..count)
            .map(|_| {
                t += 1;
                m.observe(Duration::from_secs(t), &g.sample(), true).unwrap().friction.powi(2)
            })
            .sum::<f64>()
            / count as f64;
        assert!((mean - 4.0).abs() < 0.8, "{reg}: mean F² {mean}");
    }
}

fn shifted(k: f64) -> Vec<f64> {
    let mu = known_mean();
    let cov = known_cov();
    (0..4).map(|i| mu[i] + k * cov[[i, i]].sqrt()).collect()
}

#[test]
fn mean_shift_up_is_high_friction_and_worse() {
    for reg in REGS {
        let (mut m, t) = calibrated(cfg(4, 300, 300, reg), &correlated_samples(2, 300));
        let o = m.observe(Duration::from_secs(t), &shifted(6.0), true).unwrap();
        assert!(o.friction > 3.0 * 2.0, "{reg}: F = {}", o.friction);
        assert_eq!(o.direction, 1);
        let o = m.observe(Duration::from_secs(t + 1), &shifted(-6.0), true).unwrap();
        assert!(o.friction > 3.0 * 2.0, "{reg}: F = {}", o.friction);
        assert_eq!(o.direction, -1);
        // Within the calibration's own spread the sign is noise: 0.
        let o = m.observe(Duration::from_secs(t + 2), &shifted(0.3), true).unwrap();
        assert!(o.friction <= o.friction_reference, "{reg}: F = {}, F0 = {}", o.friction, o.friction_reference);
        assert_eq!(o.direction, 0);
    }
}

#[test]
fn direction_uses_the_sigma_weighted_sum_not_a_single_feature() {
    // One feature much worse, others slightly better: worse overall.
    let (mut m, t) = calibrated(cfg(4, 300, 300, Regularisation::Ridge), &correlated_samples(3, 300));
    let b = m.baseline().unwrap().clone();
    let mut x = b.mean().to_vec();
    x[3] += 5.0 * b.std()[3];
    x[0] -= 0.2 * b.std()[0];
    let o = m.observe(Duration::from_secs(t), &x, true).unwrap();
    assert_eq!(o.direction, 1);
    // The mirror image is better overall.
    let x: Vec<f64> = b.mean().iter().zip(&x).map(|(m, v)| 2.0 * m - v).collect();
    let o = m.observe(Duration::from_secs(t + 1), &x, true).unwrap();
    assert_eq!(o.direction, -1);
    // Exactly at the mean: no distance, no direction.
    let o = m.observe(Duration::from_secs(t + 2), &b.mean().to_vec(), true).unwrap();
    assert_eq!(o.friction, 0.0);
    assert_eq!(o.direction, 0);
}

#[test]
fn permuting_features_changes_nothing_but_order() {
    let perm = [2usize, 0, 3, 1];
    let permute = |x: &[f64]| perm.iter().map(|&p| x[p]).collect::<Vec<f64>>();
    for reg in REGS {
        let samples = correlated_samples(4, 300);
        let permuted: Vec<Vec<f64>> = samples.iter().map(|s| permute(s)).collect();
        let (mut a, t) = calibrated(cfg(4, 300, 300, reg), &samples);
        let (mut b, _) = calibrated(cfg(4, 300, 300, reg), &permuted);
        let mut g = Gaussian::known(8);
        let mut dirs = [0, 0, 0];
        for i in 0..300 {
            let mut x = g.sample();
            // Spread the residuals so both directions and large F occur.
            let k = (i % 7) as f64 - 3.0;
            x.iter_mut().zip(known_cov().diag()).for_each(|(v, var)| *v += k * var.sqrt());
            let now = Duration::from_secs(t + i);
            let oa = a.observe(now, &x, true).unwrap();
            let ob = b.observe(now, &permute(&x), true).unwrap();
            assert!(rel_close(oa.friction, ob.friction, 1e-9), "{reg}: {} vs {}", oa.friction, ob.friction);
            assert_eq!(oa.direction, ob.direction, "{reg} at {i}");
            dirs[(oa.direction + 1) as usize] += 1;
            let scale: f64 = oa.contributions.iter().map(|c| c.abs()).sum();
            for (j, &p) in perm.iter().enumerate() {
                assert!((ob.contributions[j] - oa.contributions[p]).abs() <= 1e-9 * scale, "{reg}: contribution {j}");
            }
            assert!(rel_close(oa.energy, ob.energy, 1e-8) || (oa.energy - ob.energy).abs() < 1e-12);
            assert_eq!(oa.energy_window, ob.energy_window);
        }
        assert!(dirs.iter().all(|&n| n > 30), "better, within the noise, worse: {dirs:?}");
    }
}

#[test]
fn contributions_sum_to_friction_squared() {
    for reg in REGS {
        let (mut m, mut t) = calibrated(cfg(4, 300, 300, reg), &correlated_samples(9, 300));
        let mut g = Gaussian::known(10);
        for i in 0..500 {
            t += 1;
            let mut x = g.sample();
            x[i % 4] *= 1.0 + (i % 5) as f64;
            let o = m.observe(Duration::from_secs(t), &x, true).unwrap();
            let sum: f64 = o.contributions.iter().sum();
            assert!(rel_close(sum, o.friction.powi(2), 1e-9), "{reg}: {sum} vs {}", o.friction.powi(2));
            assert_eq!(o.contributions.len(), 4);
        }
    }
}

#[test]
fn correlated_residual_is_less_surprising_than_anti_correlated() {
    // Two features with ρ ≈ 0.95, sd 1 ms each.
    let sd = 1e-3;
    let cov = ndarray::arr2(&[[sd * sd, 0.95 * sd * sd], [0.95 * sd * sd, sd * sd]]);
    let mut g = Gaussian::new(ndarray::arr1(&[5e-3, 5e-3]), &cov, 12);
    let samples: Vec<Vec<f64>> = (0..300).map(|_| g.sample()).collect();
    for reg in REGS {
        let (mut m, t) = calibrated(cfg(2, 300, 300, reg), &samples);
        let mu = m.baseline().unwrap().mean().to_vec();
        let r = 2.0 * sd;
        let along = m.observe(Duration::from_secs(t), &[mu[0] + r, mu[1] + r], true).unwrap();
        let against = m.observe(Duration::from_secs(t + 1), &[mu[0] + r, mu[1] - r], true).unwrap();
        assert!(
            along.friction * 3.0 < against.friction,
            "{reg}: along {} against {}",
            along.friction,
            against.friction
        );
    }
}

#[test]
fn infinite_input_is_rejected_everywhere() {
    let mut m = Model::new(cfg(4, 100, 300, Regularisation::Ridge));
    let mut g = Gaussian::known(13);
    let mut t = 0;
    for i in 0..200 {
        t += 1;
        let mut x = g.sample();
        if i % 3 == 0 {
            x[i % 4] = [f64::INFINITY, f64::NEG_INFINITY][(i / 3) % 2];
        }
        let before = m.baseline_samples();
        let o = m.observe(Duration::from_secs(t), &x, true);
        if i % 3 == 0 {
            assert!(o.is_none());
            if !m.ready() {
                assert_eq!(m.baseline_samples(), before, "infinite sample accepted");
            }
        }
    }
    assert!(m.ready());
    // 100 s warm-up; the interval at t = 100 is infinite and skipped whole,
    // so the freeze happens at t = 101 with the 67 finite samples of i = 0..=100.
    assert_eq!(m.baseline().unwrap().samples(), 67);
    assert_eq!(m.skipped(), 67);
    // Wrong length is skipped too.
    assert!(m.observe(Duration::from_secs(t + 1), &[1.0, 2.0], true).is_none());
    assert_eq!(m.skipped(), 68);
}

#[test]
fn extreme_inputs_never_give_non_finite_output() {
    let (mut m, mut t) = calibrated(cfg(4, 300, 300, Regularisation::Ridge), &correlated_samples(14, 300));
    let mut rng = Rng::new(15);
    let specials = [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-3];
    let mut produced = 0;
    for _ in 0..2000 {
        t += 1;
        let x: Vec<f64> = (0..4).map(|_| specials[(rng.next_u64() % specials.len() as u64) as usize]).collect();
        if let Some(o) = m.observe(Duration::from_secs(t), &x, true) {
            produced += 1;
            assert!(o.friction.is_finite() && o.friction >= 0.0);
            assert!(o.energy.is_finite() && o.energy >= 0.0);
            assert!(o.contributions.iter().all(|c| c.is_finite()));
        }
    }
    assert!(produced > 0);
    assert!(m.skipped() > 0, "overflowing inputs should have been skipped");
}

#[test]
fn too_few_samples_keeps_calibrating() {
    let d = 4;
    let mut m = Model::new(cfg(d, 10, 300, Regularisation::Ridge));
    let samples = correlated_samples(16, 100);
    let mut it = samples.iter();
    let mut t = 0;
    // 3 accepted samples, and many that were not acceptable.
    for i in 0..30 {
        t += 1;
        let accept = i < 3;
        assert!(m.observe(Duration::from_secs(t), it.next().unwrap(), accept).is_none());
    }
    assert!(!m.ready());
    assert_eq!(m.baseline_samples(), 3);
    assert!(m.take_baseline_update().is_none());
    // Needs d+2 = 6: the 6th accepted sample freezes it.
    for _ in 0..2 {
        t += 1;
        assert!(m.observe(Duration::from_secs(t), it.next().unwrap(), true).is_none());
        assert!(!m.ready());
    }
    t += 1;
    let o = m.observe(Duration::from_secs(t), it.next().unwrap(), true);
    assert!(m.ready());
    assert!(o.is_some(), "the freezing interval is scored");
    assert_eq!(m.baseline().unwrap().samples(), min_samples(d));
    assert!(m.take_baseline_update().is_some());
}

#[test]
fn no_freeze_before_warmup_and_window_keeps_the_last_samples() {
    let mut m = Model::new(cfg(4, 600, 300, Regularisation::Ridge));
    let samples = correlated_samples(17, 700);
    for (i, s) in samples.iter().enumerate() {
        let t = i as u64 + 1;
        let o = m.observe(Duration::from_secs(t), s, true);
        if t < 600 {
            assert!(o.is_none() && !m.ready(), "at {t}");
            assert_eq!(m.baseline_samples(), (t as usize).min(300));
        } else {
            assert!(o.is_some() && m.ready(), "at {t}");
        }
    }
    // Baseline = mean of samples 300..600 (the last 300 accepted at freeze).
    let expected: Vec<f64> = (0..4).map(|j| samples[300..600].iter().map(|s| s[j]).sum::<f64>() / 300.0).collect();
    let mean = m.baseline().unwrap().mean();
    for j in 0..4 {
        assert!(rel_close(mean[j], expected[j], 1e-12), "{} vs {}", mean[j], expected[j]);
    }
}

#[test]
fn energy_k_is_learned_from_first_20_frictions_and_signalled() {
    let (mut m, mut t) = {
        let mut m = Model::new(cfg(4, 300, 300, Regularisation::Ridge));
        let mut t = 0;
        for s in correlated_samples(18, 299) {
            t += 1;
            assert!(m.observe(Duration::from_secs(t), &s, true).is_none());
        }
        (m, t)
    };
    let mut g = Gaussian::known(19);
    let mut fs = Vec::new();
    for i in 0..40 {
        t += 1;
        let o = m.observe(Duration::from_secs(t), &g.sample(), true).unwrap();
        fs.push(o.friction);
        assert!((5..=40).contains(&o.energy_window));
        let update = m.take_baseline_update().map(|b| b.energy_k());
        match i {
            0 => assert_eq!(update, Some(None), "freeze must be signalled"),
            19 => {
                let k = update.expect("k must be signalled").expect("k set");
                let mut d: Vec<f64> = fs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
                assert_eq!(d.len(), 19);
                d.sort_by(f64::total_cmp);
                assert!(rel_close(k, d[9] * 22.5, 1e-12), "{k}");
            }
            _ => assert_eq!(update, None, "at {i}"),
        }
        if i < 19 {
            assert_eq!(o.energy_window, 40, "W before k is known");
        }
        if i >= 1 {
            // Energy = mean |ΔF| over the last W (or all) differences.
            let diffs: Vec<f64> = fs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
            let w = o.energy_window.min(diffs.len());
            let e = diffs[diffs.len() - w..].iter().sum::<f64>() / w as f64;
            assert!(rel_close(o.energy, e, 1e-12), "at {i}: {} vs {e}", o.energy);
        } else {
            assert_eq!(o.energy, 0.0);
        }
    }
}

#[test]
fn constant_input_gives_zero_energy_and_finite_scores() {
    // Degenerate baseline (every sample equal): still positive definite via the ridge floor.
    let x = vec![1e-3, 2e-3, 3e-4, 5e-5];
    for reg in REGS {
        let (mut m, mut t) = calibrated(cfg(4, 50, 300, reg), &vec![x.clone(); 50]);
        for _ in 0..50 {
            t += 1;
            let o = m.observe(Duration::from_secs(t), &x, true).unwrap();
            // μ is a sum/n of equal values: equal to x up to rounding only.
            assert!(o.friction < 1e-9, "{}", o.friction);
            assert_eq!(o.energy, 0.0);
        }
        let mut y = x.clone();
        y[0] += 1e-4;
        t += 1;
        let o = m.observe(Duration::from_secs(t), &y, true).unwrap();
        assert!(o.friction.is_finite() && o.friction > 0.0);
        assert_eq!(o.direction, 1);
    }
}

#[test]
fn saved_baseline_restores_the_same_scores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/baseline.json");
    let (mut a, mut t) = calibrated(cfg(4, 300, 300, Regularisation::LedoitWolf), &correlated_samples(20, 300));
    a.take_baseline_update().unwrap().save(&path).unwrap();
    let mut g = Gaussian::known(21);
    for _ in 0..25 {
        t += 1;
        a.observe(Duration::from_secs(t), &g.sample(), true).unwrap();
    }
    // k learned: save again, as the caller would.
    let k = a.take_baseline_update().expect("k update").energy_k();
    assert!(k.is_some());
    a.baseline().unwrap().save(&path).unwrap();

    let loaded = load(&path, &names(4)).unwrap();
    assert!(loaded.energy_k().is_some());
    let mut b = Model::with_baseline(cfg(4, 300, 300, Regularisation::LedoitWolf), loaded);
    assert!(b.ready());
    assert_eq!(b.baseline_samples(), 300);
    assert!(b.take_baseline_update().is_none(), "a loaded baseline needs no save");
    for _ in 0..50 {
        t += 1;
        let x = g.sample();
        let oa = a.observe(Duration::from_secs(t), &x, true).unwrap();
        let ob = b.observe(Duration::from_secs(t), &x, true).unwrap();
        assert!(rel_close(oa.friction, ob.friction, 1e-12));
        assert_eq!(oa.direction, ob.direction);
    }
    // The restored k drives the window from the start, and is never relearned.
    assert!(b.take_baseline_update().is_none());
}

#[test]
fn baseline_with_other_features_is_not_used() {
    let (a, _) = calibrated(cfg(4, 300, 300, Regularisation::Ridge), &correlated_samples(22, 300));
    let mut other = cfg(4, 300, 300, Regularisation::Ridge);
    other.features[0] = "something-else".into();
    let m = Model::with_baseline(other, a.baseline().unwrap().clone());
    assert!(!m.ready());
}

#[test]
fn default_config() {
    let c = ModelConfig::new(names(3));
    assert_eq!(c.warmup, Duration::from_secs(600));
    assert_eq!(c.window, 300);
    // The shipped choices, one home (the enums' defaults), used by the settings too.
    assert_eq!((c.regularisation, c.side), (Regularisation::LedoitWolf, Side::One));
}

/// The node score on a node that looks like its calibration: 0 on about
/// 99 % of fresh intervals (F₀ is measured out of sample), for both
/// sides and the window ksense ships; a shift far outside it reads near 1.
#[test]
fn interference_is_zero_on_baseline_like_intervals_and_near_one_far_away() {
    for side in [Side::One, Side::Two] {
        let n = DEFAULT_WINDOW;
        let c = ModelConfig { side, ..cfg(4, n as u64, n, Regularisation::LedoitWolf) };
        let (mut m, mut t) = calibrated(c, &correlated_samples(3, n));
        let f0 = m.baseline().unwrap().friction_reference();
        assert!(f0 >= interference::MIN_REFERENCE && m.baseline().unwrap().friction_p99.is_some());
        let mut g = Gaussian::known(42);
        let count = 20_000;
        let above = (0..count)
            .filter(|_| {
                t += 1;
                let o = m.observe(Duration::from_secs(t), &g.sample(), true).unwrap();
                assert!((0.0..=1.0).contains(&o.interference) && o.friction_reference == f0);
                o.interference > 0.0
            })
            .count();
        let share = above as f64 / count as f64;
        assert!(share < 0.03, "{side}: {share} of baseline-like intervals score above 0");
        // Every feature ten of its standard deviations worse.
        let b = m.baseline().unwrap();
        let far: Vec<f64> = b.mean().iter().zip(b.std().iter()).map(|(m, s)| m + 10.0 * s).collect();
        t += 1;
        let o = m.observe(Duration::from_secs(t), &far, true).unwrap();
        assert!(o.interference > 0.8, "{side}: {o:?}");
    }
}

/// Calibration's progress line: a tenth of the warm-up apart, never closer
/// than 10 s, and not again before that however often it is asked.
#[test]
fn calibration_progress_is_logged_at_a_sensible_rate() {
    let count = |warmup: u64, until: u64| {
        let mut p = super::Progress::new(Duration::from_secs(warmup));
        (0..until).filter(|&t| p.due(Duration::from_secs(t))).collect::<Vec<_>>()
    };
    assert_eq!(count(600, 600), [60, 120, 180, 240, 300, 360, 420, 480, 540]);
    assert_eq!(count(20, 30), [10, 20], "a short warm-up: every 10 s");
    // Past the warm-up (too few samples yet) it goes on at the same rate.
    assert_eq!(count(20, 45).len(), 4);
}

/// A short baseline (12 samples, as a workload in the victims test
/// calibrates on) keeps fresh intervals of its own regime at 0 nearly as
/// often as a long one, since F₀ is measured on samples its baseline did not
/// see. In-sample, 12 samples put F₀ near √((n−1)²/n) = 3.2 (two-sided; the
/// bound of the sample covariance, which shrinkage loosens a little):
/// over the same 200 calibrations, one-sided, 10.8 % of fresh intervals read
/// above 0 and 3.2 % at the victim line (0.5); cross-validated 4.3 % and 0.8 %.
#[test]
fn a_short_baseline_still_holds_fresh_intervals_at_zero() {
    for (n, side, above_max, victim_max) in
        [(12, Side::One, 0.06, 0.015), (12, Side::Two, 0.04, 0.01), (DEFAULT_WINDOW, Side::One, 0.02, 0.002)]
    {
        let (mut above, mut victim, mut total) = (0usize, 0usize, 0usize);
        for seed in 0..200u64 {
            let c = ModelConfig { side, ..cfg(4, n as u64, n, Regularisation::LedoitWolf) };
            let (mut m, mut t) = calibrated(c, &correlated_samples(1000 + seed, n));
            let mut g = Gaussian::known(5000 + seed);
            for _ in 0..if n == 12 { 500 } else { 50 } {
                t += 1;
                let o = m.observe(Duration::from_secs(t), &g.sample(), true).unwrap();
                above += usize::from(o.interference > 0.0);
                victim += usize::from(o.interference >= 0.5);
                total += 1;
            }
        }
        let (above, victim) = (above as f64 / total as f64, victim as f64 / total as f64);
        assert!(above < above_max && victim < victim_max, "n {n} {side}: above 0 {above}, at 0.5 {victim}");
    }
}

/// The idle node that then serves TCP (docs/model.md, "Not measured"): a
/// round-trip time without events in every calibration sample is left out,
/// where scored against the zero it used to read, the first scrape's round
/// trip (ln(1 + 50 µs)) alone put friction past 20. A latency measured only
/// in some intervals (a scrape every 15 s) is scored on its own values.
#[test]
fn a_feature_without_events_at_calibration_is_left_out() {
    let d = 3;
    let rtt = 51f64.ln();
    let mut rng = Rng::new(41);
    let mut cal = |fill: &mut dyn FnMut(usize) -> f64| -> Vec<Vec<f64>> {
        (0..300).map(|i| vec![5.0 + 0.2 * rng.normal(), 5.2 + 0.2 * rng.normal(), fill(i)]).collect()
    };
    let usual = [5.0, 5.2, rtt];
    for side in [Side::One, Side::Two] {
        let c = ModelConfig { side, ..cfg(d, 300, 300, Regularisation::LedoitWolf) };
        // Never measured at calibration: left out; its contribution is 0.
        let (mut m, t) = calibrated(c.clone(), &cal(&mut |_| f64::NAN));
        assert!(!m.baseline().unwrap().is_measured(2));
        let o = m.observe(Duration::from_secs(t), &usual, true).unwrap();
        assert!(o.friction < 1.0 && o.contributions[2] == 0.0, "{side}: {o:?}");
        // What the zero did (the behaviour before): the same interval far out.
        let (mut z, t) = calibrated(c.clone(), &cal(&mut |_| 0.0));
        assert!(z.observe(Duration::from_secs(t), &usual, true).unwrap().friction > 20.0, "{side}");
        // Measured one interval in 15, at ~50 µs: its usual value scores near 0,
        // an interval without it leaves it out, and a tenfold round trip counts.
        let mut r = Rng::new(42);
        let (mut m, mut t) = calibrated(c, &cal(&mut |i| if i % 15 == 0 { rtt + 0.1 * r.normal() } else { f64::NAN }));
        assert_eq!(m.baseline().unwrap().measured()[2], 20);
        for (x, max) in [(usual, 1.0), ([5.0, 5.2, f64::NAN], 1.0)] {
            let o = m.observe(Duration::from_secs(t), &x, true).unwrap();
            t += 1;
            assert!(o.friction < max, "{side} {x:?}: {o:?}");
        }
        let o = m.observe(Duration::from_secs(t), &[5.0, 5.2, 501f64.ln()], true).unwrap();
        assert!(o.friction > 10.0 && o.contributions[2] > 0.9 * o.friction.powi(2), "{side}: {o:?}");
    }
}
