//! The model inside the running exporter: calibrates, scores, saves its
//! baseline, and a restart picks it up instead of recalibrating. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::{sample, wait_for, Ksense, Load};

const FAST: &[&str] = &["--model.interval", "500ms", "--model.warmup", "3s", "--model.baseline-window", "3s"];

#[test]
fn root_calibrates_scores_saves_and_restarts_without_recalibrating() {
    require_root!();
    let _load = Load::start();
    let k = Ksense::start(FAST);
    let text = k.scrape();
    assert_eq!(sample(&text, "ksense_baseline_ready"), Some(0.0), "calibrating at start");
    assert!(!text.contains("\nksense_friction "), "no friction before a baseline exists");

    let text = wait_for(&k, "ksense_baseline_ready", 1.0, Duration::from_secs(30));
    let text = if text.contains("\nksense_friction ") {
        text
    } else {
        std::thread::sleep(Duration::from_secs(1));
        k.scrape()
    };
    let f = sample(&text, "ksense_friction").expect("friction once ready");
    assert!(f.is_finite() && f >= 0.0);
    let dir = sample(&text, "ksense_direction").unwrap();
    assert!(dir == 1.0 || dir == -1.0);
    let contrib: f64 = text
        .lines()
        .filter(|l| l.starts_with("ksense_friction_contribution{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((contrib - f * f).abs() <= 1e-6 * (1.0 + f * f), "contributions {contrib} vs friction² {}", f * f);
    for s in ksense::model::pipeline::DEFAULT_FEATURES {
        assert!(text.contains(&format!("ksense_signal{{signal=\"{s}\"}}")), "signal {s}");
    }
    assert!(sample(&text, "ksense_baseline_samples").unwrap() >= 6.0);
    // The node score: in [0, 1], measured against the calibration's own
    // 99th-percentile friction, which is saved with the baseline.
    let ratio = sample(&text, "ksense_interference_ratio").expect("interference ratio once ready");
    let f0 = sample(&text, "ksense_baseline_friction_p99").expect("its reference");
    assert!((0.0..=1.0).contains(&ratio) && f0 >= ksense::model::interference::MIN_REFERENCE, "{ratio} {f0}");
    let want = ksense::model::interference::ratio(f, f0, dir as i8, ksense::model::Side::One);
    assert!((ratio - want).abs() < 1e-12, "ratio {ratio}, from friction {f} and F₀ {f0}: {want}");
    let state = k.state_file();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("baseline saved")).unwrap();
    assert_eq!(saved["features"].as_array().unwrap().len(), ksense::model::pipeline::DEFAULT_FEATURES.len());
    assert_eq!(saved["friction_p99"].as_f64(), Some(f0), "F₀ is saved with the baseline");

    // SIGTERM: clean exit, and the baseline survives the restart.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&state, dir.path().join("baseline.json")).unwrap();
    let t0 = Instant::now();
    let (st, _log) = k.stop();
    assert!(st.success(), "exit status after SIGTERM: {st}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    let k2 = Ksense::start_in(dir, &["--model.interval", "500ms", "--model.warmup", "10m"]);
    // Ready long before a 10-minute warm-up could end.
    wait_for(&k2, "ksense_baseline_ready", 1.0, Duration::from_secs(3));
    let (_, log) = k2.stop();
    assert!(log.contains("loaded saved baseline"), "{log}");
}

#[test]
fn root_corrupt_or_mismatched_baseline_is_set_aside() {
    require_root!();
    for (content, extra) in [("{ not json", &[][..]), ("", &[][..])] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("baseline.json"), content).unwrap();
        let k = Ksense::start_in(dir, extra);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sample(&k.scrape(), "ksense_baseline_ready"), Some(0.0));
        let aside = std::fs::read_dir(k.dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("baseline.json.bad-"));
        assert!(aside, "the corrupt file was not set aside");
        let (_, log) = k.stop();
        assert_eq!(log.lines().filter(|l| l.contains("set aside")).count(), 1, "{log}");
    }

    // A baseline for other features is not used either.
    let _load = Load::start();
    let k = Ksense::start(FAST);
    wait_for(&k, "ksense_baseline_ready", 1.0, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(k.state_file(), dir.path().join("baseline.json")).unwrap();
    drop(k);
    let k = Ksense::start_in(dir, &["--model.features", "runqueue_p99,dstate_mean"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sample(&k.scrape(), "ksense_baseline_ready"), Some(0.0));
    let (_, log) = k.stop();
    assert!(log.contains("set aside"), "{log}");
}
