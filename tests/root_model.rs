//! The model inside the running exporter: calibrates, scores, saves its
//! baseline, and a restart picks it up instead of recalibrating. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::{sample, settle_writeback, wait_for, Ksense, Load};

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
    assert!([-1.0, 0.0, 1.0].contains(&dir), "{dir}");
    let contrib: f64 = text
        .lines()
        .filter(|l| l.starts_with("ksense_friction_contribution{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((contrib - f * f).abs() <= 1e-6 * (1.0 + f * f), "contributions {contrib} vs friction² {}", f * f);
    for s in ksense::model::pipeline::DEFAULT_FEATURES {
        // A feature without events in the last interval (no TCP segment
        // acknowledged...) has no value to serve; the load's wakeups always do.
        let served = text.contains(&format!("ksense_signal{{signal=\"{s}\"}}"));
        assert!(served || !s.starts_with("runqueue_"), "signal {s}");
        assert!(text.contains(&format!("ksense_baseline_signal_samples{{signal=\"{s}\"}}")), "samples of {s}");
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

/// The friction line an alert of deploy/prometheus/ksense-rules.yml fires above.
fn friction_line(alert: &str) -> f64 {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/ksense-rules.yml")).unwrap();
    let at = rules.find(&format!("- alert: {alert}\n")).unwrap_or_else(|| panic!("no alert {alert}"));
    let expr = &rules[at..];
    let v = expr.split("ksense_friction > ").nth(1).expect("a friction line");
    v.split_whitespace().next().unwrap().parse().unwrap()
}

/// Issue 22's idle VM, shortened (bench/false-alarms.py runs the hour): no
/// load (the page cache written out first: two of seven local runs amid the
/// writeback of a deleted fresh root read 4 of 90 s above the line), 65 s of
/// warm-up and a 60 s window (15 until a statistic of no events was not
/// measured: the scrapes' round trips and softirqs are then scored against
/// their own, tighter spread, and one CI run of a 15-sample baseline read 4
/// of 90 s above the line; 30 until a CI pre-check on 2026-12-07 read 8 of
/// 90 s above it, run-queue waits with the baseline's own P99 friction above
/// it too, so direction 0 and no alert pending: a 30-sample baseline's tail
/// is one or two samples; the shipped window is 300). Each 1 s interval of
/// an idle node holds fewer than 50 run-queue waits; the baseline still
/// forms when the warm-up ends, on a full window. Then 90 s of the same idle node, scraped and
/// evaluated by a real Prometheus with the shipped rules: friction stays under
/// the warning line in all but a few seconds (so does a friction alert's
/// condition, which must hold for minutes to fire), and direction mostly reads 0 (within the baseline's own range) instead of
/// flipping between +1 and -1 on noise.
#[test]
fn root_calibrates_on_an_idle_node_and_stays_quiet_under_the_rules() {
    require_root!();
    let dirty = settle_writeback();
    let k = Ksense::start(&["--model.interval", "1s", "--model.warmup", "65s", "--model.baseline-window", "60s"]);
    let prom = Prometheus::start_config(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}/deploy/prometheus/ksense-rules.yml']\nscrape_configs:\n  - job_name: ksense\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            env!("CARGO_MANIFEST_DIR"),
            k.port
        ),
        false,
    );
    let text = wait_for(&k, "ksense_baseline_ready", 1.0, Duration::from_secs(75));
    let n = sample(&text, "ksense_baseline_samples").unwrap();
    assert!(n >= 50.0, "an idle node calibrates on (nearly) the whole 60-sample window: {n}");
    let f0 = sample(&text, "ksense_baseline_friction_p99").unwrap_or(f64::NAN);

    std::thread::sleep(Duration::from_secs(92));
    let value = |q: &str| -> f64 {
        let r = prom.query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        r.as_array().and_then(|a| a.first()).map_or(0.0, |s| s["value"][1].as_str().unwrap().parse().unwrap())
    };
    let scored = value("count_over_time(ksense_friction[90s])");
    assert!(scored >= 80.0, "scored seconds: {scored}");
    let warn = friction_line("KsenseFrictionHigh");
    let above = value(&format!("count_over_time((ksense_friction > {warn})[90s:1s])"));
    let zero = value("count_over_time((ksense_direction == 0)[90s:1s])");
    // Evaluations where a friction alert's condition held (pending; firing
    // takes minutes of it): the rules' own view of the same seconds.
    let alerts = value(r#"sum(count_over_time(ALERTS{alertname=~"KsenseFriction.*"}[90s]))"#);
    // Which signals carried the seconds above the line (the failure's first question).
    let carried = prom
        .query(&format!("max_over_time((ksense_friction_contribution and on() ksense_friction > {warn})[90s:1s])"))
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    format!(
                        "{}={}",
                        s["metric"]["signal"].as_str().unwrap_or("?"),
                        s["value"][1].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| e);
    let (_, log) = k.stop();
    eprintln!("idle ({dirty} kB were dirty before the test's sync): {above} of {scored} s above {warn}; baseline's own P99 friction {f0:.2}; alerts pending {alerts}; direction 0 in {zero}; largest contributions then: {carried}");
    assert!(above <= 0.03 * scored, "friction above {warn} in {above} of {scored} s at idle");
    assert!(alerts <= 0.03 * scored, "a friction alert pending in {alerts} evaluations at idle");
    assert!(zero >= 0.5 * scored, "direction 0 in only {zero} of {scored} s at idle");
    assert!(log.contains("calibrating: ") && log.contains("s of the warm-up left"), "no progress line: {log}");
}

/// Not measured (docs/model.md): ksense calibrates without being scraped (on
/// a quiet node no TCP segment is acknowledged: no round-trip time), then is
/// scraped once a second. Whatever the node's own traffic was, the score
/// agrees with the gauges: a feature the baseline left out is listed by
/// `/api/v1/score` and contributes 0, one it kept is not listed. Where the
/// round-trip time was left out, the scrapes' own round trips keep friction
/// under the warning line (scored against the 0 s it used to hold, they put
/// it at 60-90).
#[test]
fn root_a_feature_calibration_did_not_measure_is_left_out() {
    require_root!();
    // As in the idle test: writeback left by whatever ran before (in CI, the
    // test binaries just written) must not start only once scoring has.
    let dirty = settle_writeback();
    let k = Ksense::start(&["--model.interval", "1s", "--model.warmup", "20s", "--model.baseline-window", "15s"]);
    std::thread::sleep(Duration::from_secs(24));
    let warn = friction_line("KsenseFrictionHigh");
    let (mut above, mut rtt_left_out, mut carried) = (0, 0, Vec::new());
    for _ in 0..10 {
        let text = k.scrape();
        assert_eq!(sample(&text, "ksense_baseline_ready"), Some(1.0), "calibrated in 24 s without a scrape");
        let doc: serde_json::Value =
            serde_json::from_str(&ureq::get(&k.url("/api/v1/score")).call().unwrap().into_string().unwrap()).unwrap();
        let left: Vec<&str> =
            doc["baseline"]["left_out"].as_array().expect("left_out").iter().map(|v| v.as_str().unwrap()).collect();
        let samples = sample(&text, "ksense_baseline_samples").unwrap() as usize;
        for s in ksense::model::pipeline::DEFAULT_FEATURES {
            let n = sample(&text, &format!("ksense_baseline_signal_samples{{signal=\"{s}\"}}")).expect(s) as usize;
            let out = n < ksense::model::measured_needed(samples);
            assert_eq!(left.contains(&s), out, "{s}: {n} of {samples} samples, left out {left:?}");
            if out {
                let c = sample(&text, &format!("ksense_friction_contribution{{signal=\"{s}\"}}"));
                assert_eq!(c, Some(0.0), "{s} is left out but contributes");
            }
        }
        rtt_left_out += usize::from(left.contains(&"tcp_rtt_p999"));
        let f = sample(&text, "ksense_friction").unwrap();
        if f > warn {
            above += 1;
            // What carried it: a failure should say which signal moved.
            let mut c: Vec<(f64, &str)> = ksense::model::pipeline::DEFAULT_FEATURES
                .iter()
                .filter_map(|s| Some((sample(&text, &format!("ksense_friction_contribution{{signal=\"{s}\"}}"))?, *s)))
                .collect();
            c.sort_by(|a, b| b.0.total_cmp(&a.0));
            carried.push(format!(
                "{f:.1} ({})",
                c.iter().map(|(v, s)| format!("{s} {v:.1}")).collect::<Vec<_>>().join(", ")
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (_, log) = k.stop();
    if rtt_left_out > 0 {
        assert!(log.contains("left out of friction until the next calibration"), "no log line: {log}");
        assert!(
            above <= 2,
            "friction above {warn} in {above} of 10 scrapes with the round-trip time left out ({dirty} kB were dirty before the sync): {}",
            carried.join("; ")
        );
    } else {
        eprintln!("the node's own TCP traffic measured the round-trip time while ksense calibrated: not left out here");
    }
}
