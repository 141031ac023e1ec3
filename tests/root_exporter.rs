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
    let waits = |t: &str| sample(t, "ksense_runqueue_latency_seconds_count").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(waits(&k.scrape()) >= waits(&text));
    // The landing page links to the metrics; anything else is 404, writes are 405.
    let landing = ureq::get(&k.url("/")).call().unwrap().into_string().unwrap();
    assert!(landing.contains("href=\"/metrics\""), "{landing}");
    // The probes as the kernel has them: every program attached, by name
    // (the performance counters' only with per-workload attribution, fallbacks only where needed).
    let programs: Vec<&str> = ksense::probes::hooks()
        .filter(|h| h.name != ksense::probes::perf::PROGRAM && !h.fallback)
        .map(|h| h.name)
        .collect();
    let n = programs.len();
    assert!(landing.contains(&format!("{n} of {n} BPF programs attached")), "{landing}");
    for p in programs {
        assert!(landing.contains(&format!("<td>{p}</td><td class=\"ok\">attached</td>")), "{p}: {landing}");
    }
    assert_eq!(ureq::get(&k.url("/nope")).call().unwrap_err().into_response().unwrap().status(), 404);
    assert_eq!(ureq::post(&k.url("/metrics")).call().unwrap_err().into_response().unwrap().status(), 405);
}

/// By default the kernel's run-time statistics are not held (they would cost
/// every BPF program on the node), so the programs' run counters stay 0 while
/// the histograms count (checked only when nothing else on the node holds
/// them: the sysctl is 0); `--bpf.stats` holds them and the counters count.
#[test]
fn root_bpf_stats_off_by_default_and_on_when_asked() {
    require_root!();
    let held_elsewhere = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0");
    let runs = "ksense_bpf_program_runs_total{program=\"sched_switch\"}";
    let secs = "ksense_bpf_program_run_seconds_total{program=\"sched_switch\"}";
    let waits = "ksense_runqueue_latency_seconds_count";
    let k = Ksense::start(&["--log.level", "warn"]);
    let t0 = k.scrape();
    std::thread::sleep(Duration::from_millis(500));
    let t1 = k.scrape();
    assert!(sample(&t1, waits).unwrap() > sample(&t0, waits).unwrap(), "the run queue counts without statistics");
    if held_elsewhere {
        eprintln!("SKIPPED the zero check: kernel.bpf_stats_enabled is on (held by the sysctl)");
    } else {
        assert_eq!(sample(&t1, runs), Some(0.0), "run counter by default");
    }
    drop(k);
    let k = Ksense::start(&["--log.level", "warn", "--bpf.stats"]);
    let t0 = k.scrape();
    std::thread::sleep(Duration::from_millis(500));
    let t1 = k.scrape();
    assert!(sample(&t1, runs).unwrap() > sample(&t0, runs).unwrap(), "run counter with --bpf.stats");
    assert!(sample(&t1, secs).unwrap() > sample(&t0, secs).unwrap(), "run time with --bpf.stats");
}
