//! The exporter end to end: the real binary with its BPF programs, its text
//! format checked by promtool against the metric contract. Needs root. The
//! other formats and real Prometheus servers: tests/exposition.rs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sample, Ksense};

const CONTRACT: &[&str] = &[
    "ksense_runqueue_latency_seconds_bucket",
    "ksense_runqueue_latency_seconds_sum",
    "ksense_runqueue_latency_seconds_count",
    "ksense_dstate_duration_seconds_count",
    "ksense_softirq_duration_seconds_count{vector=\"NET_RX\"}",
    "ksense_bpf_program_attached{program=\"sched_switch\"} 1",
    "ksense_bpf_program_runs_total{program=\"sched_switch\"}",
    "ksense_bpf_program_run_seconds_total{program=\"softirq_exit\"}",
    "ksense_events_dropped_total{reason=\"task_storage\"}",
    "ksense_build_info{version=",
    "ksense_baseline_ready",
    "ksense_baseline_samples",
];

#[test]
fn root_text_format_passes_promtool_and_has_the_contract() {
    require_root!();
    let k = Ksense::start(&[]);
    let text = k.scrape();
    for name in CONTRACT {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    let vectors = text.lines().filter(|l| l.starts_with("ksense_softirq_duration_seconds_count{")).count();
    assert_eq!(vectors, 10, "one softirq series per vector");
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(p.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let lint = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && lint.trim().is_empty(), "promtool check metrics: {lint}");
    // Counters never go backwards between scrapes.
    let runs = |t: &str| sample(t, "ksense_bpf_program_runs_total{program=\"sched_switch\"}").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(runs(&k.scrape()) >= runs(&text));
    // The landing page links to the metrics; anything else is 404, writes are 405.
    let landing = ureq::get(&k.url("/")).call().unwrap().into_string().unwrap();
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    // The probes as the kernel has them: every program attached, by name.
    let n = ksense::probes::program_names().count();
    assert!(landing.contains(&format!("{n} of {n} BPF programs attached")), "{landing}");
    for p in ksense::probes::program_names() {
        assert!(landing.contains(&format!("<td>{p}</td><td class=\"ok\">attached</td>")), "{p}: {landing}");
    }
    assert_eq!(ureq::get(&k.url("/nope")).call().unwrap_err().into_response().unwrap().status(), 404);
    assert_eq!(ureq::post(&k.url("/metrics")).call().unwrap_err().into_response().unwrap().status(), 405);
}
