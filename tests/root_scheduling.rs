//! The node score as the schedulers read it: a real Prometheus scrapes three
//! ksense (two calibrated, one calibrating, later one down), loads
//! deploy/prometheus/ksense-rules.yml, and answers the exact queries that
//! deploy/scheduling's descheduler and crane-scheduler configurations make:
//! one finite value in [0, 1] per node, named by the node. Needs root (the
//! real binary, its BPF programs and its model).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::prometheus::Prometheus;
use common::{sample, wait_for, Ksense, Load};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// What a calibrating or unreachable ksense reads (deploy/prometheus).
const NEUTRAL: f64 = 0.5;

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path).display().to_string()
}

/// The one value of `key:` in a YAML file of ours (a line `key: value`).
fn yaml_value(path: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    let vals: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .collect();
    assert!(!vals.is_empty(), "no {key}: in {path}");
    assert!(vals.iter().all(|v| *v == vals[0]), "{path}: {key} differs: {vals:?}");
    vals[0].to_string()
}

/// instance label -> value, from a vector result.
fn by_instance(r: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in r.as_array().unwrap() {
        let inst = s["metric"]["instance"].as_str().expect("every sample names an instance").to_string();
        let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!(out.insert(inst.clone(), v).is_none(), "two samples for {inst}: {r}");
    }
    out
}

fn assert_one_per_node(got: &BTreeMap<String, f64>, what: &str) {
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), NODES, "{what}: one sample per node");
    for (n, v) in got {
        assert!(v.is_finite() && (0.0..=1.0).contains(v), "{what}: {n} = {v}");
    }
}

#[test]
fn root_descheduler_and_crane_queries_give_one_value_per_node() {
    require_root!();
    let _load = Load::start();
    let fast = ["--model.interval", "500ms", "--model.warmup", "3s", "--model.baseline-window", "3s"];
    let a = Ksense::start(&fast);
    let b = Ksense::start(&fast);
    let mut c = Ksense::start(&["--model.warmup", "1h"]);
    for k in [&a, &b] {
        wait_for(k, "ksense_baseline_ready", 1.0, Duration::from_secs(30));
    }
    let targets: String = [&a, &b, &c]
        .iter()
        .zip(NODES)
        .map(|(k, n)| format!("      - targets: ['127.0.0.1:{}']\n        labels: {{node: {n}}}\n", k.port))
        .collect();
    let prom = Prometheus::start_config(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: ksense\n    static_configs:\n{targets}",
            repo("deploy/prometheus/ksense-rules.yml")
        ),
        false,
    );
    let wait = Duration::from_secs(60);
    // Both calibrated targets have served a ratio, in [0, 1].
    let ratios =
        prom.query_until_with("ksense_interference_ratio", wait, |r| r.as_array().is_some_and(|a| a.len() == 2));
    for s in ratios.as_array().unwrap() {
        let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&v), "{s}");
    }
    assert_eq!(sample(&c.scrape(), "ksense_baseline_ready"), Some(0.0), "node-c still calibrates");

    // What an admission controller reads: the same score, fresh, and why.
    let doc: serde_json::Value =
        serde_json::from_str(&ureq::get(&a.url("/api/v1/score")).call().unwrap().into_string().unwrap()).unwrap();
    assert_eq!(doc["state"], "scoring", "{doc}");
    let score = doc["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score) && doc["age_seconds"].as_f64().unwrap() < 2.0, "{doc}");
    assert!(doc["friction_p99"].as_f64().unwrap() >= 1.0, "{doc}");
    let signals = doc["contributions"].as_array().unwrap();
    assert_eq!(signals.len(), ksense::model::pipeline::DEFAULT_FEATURES.len(), "{doc}");
    assert!(signals.iter().all(|c| c["baseline"].as_f64().is_some_and(|b| b >= 0.0)), "{doc}");
    assert!(doc["reason"].as_str().unwrap().starts_with("friction "), "{doc}");
    let doc: serde_json::Value =
        serde_json::from_str(&ureq::get(&c.url("/api/v1/score")).call().unwrap().into_string().unwrap()).unwrap();
    assert_eq!((doc["state"].as_str(), doc["score"].is_null()), (Some("calibrating"), true), "{doc}");

    // The descheduler's query, verbatim, once the rule has seen the ratios.
    let desched = yaml_value("deploy/scheduling/descheduler-policy.yaml", "query");
    let calibrated = |r: &serde_json::Value| {
        let m = by_instance(r);
        m.len() == 3 && ["node-a", "node-b"].iter().all(|n| m.get(*n).is_some_and(|v| *v != NEUTRAL))
    };
    let got = by_instance(&prom.query_until_with(&desched, wait, calibrated));
    assert_one_per_node(&got, &desched);
    assert_eq!(got["node-c"], NEUTRAL, "a calibrating node reads neutral");

    // crane-scheduler's controller: the syncPolicy name as the metric, by
    // node IP, then IP:port, then node name, divided by 100. Here the
    // nodes are named (the IP forms find nothing), each with one value.
    let crane = yaml_value("deploy/scheduling/crane-dynamic-policy.yaml", "name");
    for q in [format!("{crane}{{instance=~\"127.0.0.1\"}} /100"), format!("{crane}{{instance=~\"127.0.0.1:.+\"}} /100")]
    {
        assert_eq!(prom.query(&q).unwrap().as_array().unwrap().len(), 0, "{q}");
    }
    let mut crane_got = BTreeMap::new();
    for n in NODES {
        let q = format!("{crane}{{instance=~\"{n}\"}} /100");
        let r = prom.query_until(&q, wait);
        crane_got.extend(by_instance(&r));
    }
    assert_one_per_node(&crane_got, &crane);
    assert_eq!(crane_got["node-c"], NEUTRAL);

    // node-c goes down: still one value per node, neutral for it.
    c.signal(libc::SIGKILL);
    prom.query_until("up{node=\"node-c\"} == 0", wait);
    std::thread::sleep(Duration::from_secs(3));
    let got = by_instance(&prom.query(&desched).unwrap());
    assert_one_per_node(&got, "with node-c down");
    assert_eq!(got["node-c"], NEUTRAL, "a node whose ksense is down reads neutral");
    eprintln!("descheduler query {desched}: {got:?}; crane {crane}: {crane_got:?}");
}
