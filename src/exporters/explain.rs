//! `/api/v1/score`: the node's score and why, as one JSON document, for an
//! admission controller or a person (`curl -s :9827/api/v1/score | jq`).
//! Everything in it is also on `/metrics`; here it comes in one read, with
//! the time of the reading (a consumer rejects a stale one, as KubeAttention
//! rejects telemetry older than 10 s) and a sentence that names the signals
//! that carry the distance and their values against the baseline's.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::model::pipeline::ModelView;

pub const PATH: &str = "/api/v1/score";

/// How many signals the explanation names.
pub const TOP: usize = 3;

/// The victims (`victims::VICTIM_RATIO`), most interfered with first.
fn victims(v: &ModelView) -> Vec<Value> {
    let mut w: Vec<_> = v.workloads.iter().filter(|w| w.is_victim()).collect();
    w.sort_by(|a, b| b.interference.total_cmp(&a.interference));
    w.iter()
        .take(crate::model::victims::MAX_VICTIMS)
        .map(|w| {
            let labels: serde_json::Map<String, Value> =
                w.labels.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
            let f2 = w.friction * w.friction;
            let shares: serde_json::Map<String, Value> = w
                .features
                .iter()
                .zip(&w.contributions)
                .map(|(n, c)| (n.to_string(), json!(if f2 > 0.0 { c / f2 } else { 0.0 })))
                .collect();
            let suspects: Vec<Value> = w
                .suspects
                .iter()
                .map(|s| json!({"workload": s.workload, "correlation": s.correlation, "cpu": s.cpu}))
                .collect();
            json!({"labels": labels, "score": w.interference, "friction": w.friction, "shares": shares, "suspects": suspects})
        })
        .collect()
}

/// The document for `view` (`None`: the model has published nothing yet).
pub fn document(view: Option<&ModelView>, node: &str, now: SystemTime) -> Value {
    let Some(v) = view else {
        return json!({"node": node, "state": "starting", "score": null, "reason": "the model has not started yet"});
    };
    let time = v.at.map(crate::logging::rfc3339);
    let age = v.at.map(|t| now.duration_since(t).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    let Some(s) = &v.score else {
        let (state, reason) = if v.ready {
            ("scoring", "no interval has been scored yet (no run-queue events since the start)".to_string())
        } else {
            (
                "calibrating",
                format!("calibrating: {} samples in the baseline so far; no score until it is frozen", v.samples),
            )
        };
        return json!({
            "node": node, "time": time, "age_seconds": age, "state": state,
            "baseline": {"ready": v.ready, "samples": v.samples},
            "score": null, "reason": reason, "victims": victims(v),
        });
    };
    let f2 = s.friction * s.friction;
    // NaN: no events this interval (not measured), so no value to show.
    let value = |n: &str| v.signals.iter().find(|(k, _)| k == n).map(|(_, x)| *x).filter(|x| !x.is_nan());
    let base = |n: &str| v.baseline.iter().find(|(k, _)| k == n).map(|(_, x)| *x);
    let mut contrib: Vec<(&str, f64)> = s.contributions.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    contrib.sort_by(|a, b| b.1.total_cmp(&a.1));
    let contributions: Vec<Value> = contrib
        .iter()
        .map(|(n, c)| {
            json!({"signal": n, "share": if f2 > 0.0 { c / f2 } else { 0.0 }, "value": value(n), "baseline": base(n)})
        })
        .collect();
    json!({
        "node": node, "time": time, "age_seconds": age, "state": "scoring",
        "baseline": {"ready": v.ready, "samples": v.samples, "left_out": v.left_out},
        "score": s.interference,
        "friction": s.friction,
        "friction_p99": s.friction_reference,
        "direction": if s.direction > 0.0 { "worse" } else { "not worse" },
        "energy": s.energy,
        "contributions": contributions,
        "reason": reason(s.friction, s.friction_reference, s.interference, &contrib, f2, &value, &base),
        "victims": victims(v),
    })
}

fn reason(
    f: f64,
    f0: f64,
    score: f64,
    contrib: &[(&str, f64)],
    f2: f64,
    value: &dyn Fn(&str) -> Option<f64>,
    base: &dyn Fn(&str) -> Option<f64>,
) -> String {
    let head = format!("friction {f:.2}, {:.1} times the node's normal {f0:.2} (score {score:.2})", f / f0);
    if f <= f0 {
        return format!("{head}: within the node's normal range");
    }
    let parts: Vec<String> = contrib
        .iter()
        .filter(|(_, c)| *c > 0.0)
        .take(TOP)
        .map(|(n, c)| {
            let vals = match (value(n), base(n)) {
                (Some(x), Some(b)) => format!(" ({} against {} in the baseline)", quantity(n, x), quantity(n, b)),
                _ => String::new(),
            };
            format!("{n} {:.0} %{vals}", 100.0 * c / f2)
        })
        .collect();
    format!("{head}: {}", parts.join(", "))
}

/// A feature value in its unit: `_busy` a CPU share, `_rate` per second,
/// the rest seconds.
fn quantity(name: &str, x: f64) -> String {
    if name.ends_with("_busy") {
        format!("{:.2} % of a CPU", 100.0 * x)
    } else if name.ends_with("_rate") {
        format!("{x:.2}/s")
    } else if x >= 1.0 {
        format!("{x:.2} s")
    } else if x >= 1e-3 {
        format!("{:.2} ms", x * 1e3)
    } else {
        format!("{:.0} µs", x * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pipeline::Score;
    use crate::model::victims::{Suspect, Victim};
    use std::time::Duration;

    fn view(score: Option<Score>) -> ModelView {
        ModelView {
            ready: score.is_some(),
            samples: 120,
            score,
            signals: vec![("runqueue_wakeup_p99".into(), 0.0012), ("softirq_net_rx_busy".into(), 0.02)],
            save_failures: 0,
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_680_400)),
            baseline: vec![("runqueue_wakeup_p99".into(), 180e-6), ("softirq_net_rx_busy".into(), 0.01)],
            measured: vec![
                ("runqueue_wakeup_p99".into(), 120.0),
                ("softirq_net_rx_busy".into(), 120.0),
                ("tcp_rtt_p999".into(), 3.0),
            ],
            left_out: vec!["tcp_rtt_p999".into()],
            workloads: vec![
                Victim {
                    labels: vec![("workload", "/calm".into())],
                    features: &crate::model::victims::FEATURES,
                    friction: 1.0,
                    interference: 0.0,
                    direction: 1,
                    contributions: vec![1.0, 0.0],
                    suspects: Vec::new(),
                },
                Victim {
                    labels: vec![("workload", "/web".into()), ("pod", "web-0".into())],
                    features: &crate::model::victims::FEATURES,
                    friction: 4.0,
                    interference: 0.5,
                    direction: 1,
                    contributions: vec![12.0, 4.0],
                    suspects: vec![Suspect { workload: "/batch".into(), correlation: 0.9, cpu: 1.5 }],
                },
            ],
        }
    }

    #[test]
    fn a_scored_interval_names_its_signals_against_the_baseline() {
        let s = Score {
            friction: 6.0,
            direction: 1.0,
            energy: 0.3,
            energy_window: 10.0,
            contributions: vec![("softirq_net_rx_busy".into(), 9.0), ("runqueue_wakeup_p99".into(), 27.0)],
            interference: 0.75,
            friction_reference: 3.0,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_680_402);
        let d = document(Some(&view(Some(s))), "n1", now);
        assert_eq!(d["node"], "n1");
        assert_eq!(d["state"], "scoring");
        assert_eq!(d["time"], "2025-12-02T13:00:00.000Z");
        assert_eq!(d["age_seconds"], 2.0);
        assert_eq!(d["score"], 0.75);
        assert_eq!(d["direction"], "worse");
        assert_eq!(d["baseline"]["left_out"], serde_json::json!(["tcp_rtt_p999"]));
        // Largest share first; shares of friction² (36).
        assert_eq!(d["contributions"][0]["signal"], "runqueue_wakeup_p99");
        assert_eq!(d["contributions"][0]["share"], 0.75);
        assert_eq!(d["contributions"][0]["baseline"], 180e-6);
        assert_eq!(d["contributions"][1]["share"], 0.25);
        // Only the workload beyond its own normal range is a victim.
        assert_eq!(d["victims"].as_array().unwrap().len(), 1, "{}", d["victims"]);
        assert_eq!(d["victims"][0]["labels"]["pod"], "web-0");
        assert_eq!(d["victims"][0]["score"], 0.5);
        assert_eq!(d["victims"][0]["shares"]["runqueue_p99"], 0.75);
        assert_eq!(d["victims"][0]["suspects"][0]["workload"], "/batch");
        assert_eq!(d["victims"][0]["suspects"][0]["correlation"], 0.9);
        assert_eq!(
            d["reason"],
            "friction 6.00, 2.0 times the node's normal 3.00 (score 0.75): runqueue_wakeup_p99 75 % (1.20 ms \
             against 180 µs in the baseline), softirq_net_rx_busy 25 % (2.00 % of a CPU against 1.00 % of a CPU \
             in the baseline)"
        );
    }

    #[test]
    fn calibrating_and_starting_have_no_score() {
        let d = document(Some(&view(None)), "n1", SystemTime::now());
        assert_eq!(d["state"], "calibrating");
        assert!(d["score"].is_null());
        assert_eq!(d["baseline"]["samples"], 120);
        assert!(d["reason"].as_str().unwrap().contains("120 samples"));
        let d = document(None, "n1", SystemTime::now());
        assert_eq!(d["state"], "starting");
        assert!(d["score"].is_null());
    }

    #[test]
    fn within_the_normal_range_says_so() {
        let s = Score {
            friction: 1.0,
            friction_reference: 3.0,
            contributions: vec![("x".into(), 1.0)],
            ..Default::default()
        };
        let d = document(Some(&view(Some(s))), "n1", SystemTime::now());
        assert_eq!(d["score"], 0.0);
        assert!(d["reason"].as_str().unwrap().ends_with("within the node's normal range"), "{}", d["reason"]);
        assert_eq!(d["direction"], "not worse");
    }
}
