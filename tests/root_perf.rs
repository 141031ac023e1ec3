//! Performance counters per workload (bpf/perf.bpf.c), exercised with
//! software events, which every machine has: the CPU time the program hands
//! each workload at its context switches is checked against the CPU time
//! the kernel's own cgroup accounting (`cpu.stat`) gives the same cgroup,
//! and the node-wide total against the wall clock times the CPUs. Where the
//! CPU has no hardware counters (this VM), the default events are left out
//! with one log line, `ksense check` says so, and nothing else changes.
//! Needs root.

mod common;

use std::time::{Duration, Instant};

use common::cgroup::{test_prefix, wl, Cgroup};
use common::{sample, Ksense};
use ksense::probes::perf::{self, EventSet};

const CLOCK: &str = "ksense_workload_perf_cpu_clock_seconds_total";
const SWITCHES: &str = "ksense_workload_perf_context_switches_total";

fn usage_seconds(cg: &Cgroup) -> f64 {
    ksense::workloads::cgroupfs::CpuStats::new(common::cgroup::v2_root()).read(&[&cg.rel])[0]
        .expect("cpu.stat usage_usec")
}

fn online_cpus() -> f64 {
    // SAFETY: sysconf with a constant.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }) as f64
}

#[test]
fn root_cpu_clock_per_workload_matches_the_cgroups_own_cpu_time() {
    require_root!();
    let k = Ksense::start(&[
        "--log.level",
        "warn",
        "--workloads.enabled",
        "--bpf.perf-events",
        "cpu-clock,context-switches,page-faults",
    ]);
    let pre = test_prefix();
    let (mut hog, mut idle) = (Cgroup::new(&format!("/{pre}-perf-hog")), Cgroup::new(&format!("/{pre}-perf-idle")));
    // A hog that yields every millisecond or so: its time is handed out at
    // each switch, as for any task that shares its CPU.
    hog.spawn(None, &["stress-ng", "--cpu", "1", "--cpu-load", "90", "--timeout", "8s", "--quiet"]);
    idle.spawn(None, &["python3", "-c", "import time\nwhile True: time.sleep(0.01)"]);
    let t0 = Instant::now();
    let first = loop {
        let text = k.scrape();
        if wl(&text, CLOCK, &hog.rel).is_some() && wl(&text, CLOCK, &idle.rel).is_some() {
            break text;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no per-workload cpu-clock series:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (hog0, idle0, wall0) = (usage_seconds(&hog), usage_seconds(&idle), Instant::now());
    let node0 = sample(&first, "ksense_perf_cpu_clock_seconds_total").unwrap();
    hog.wait_all();
    // The hog's last switch-out handed out its last stretch; the idle one
    // switches a hundred times a second.
    std::thread::sleep(Duration::from_millis(300));
    let last = k.scrape();
    let wall = wall0.elapsed().as_secs_f64();
    let (hog_truth, idle_truth) = (usage_seconds(&hog) - hog0, usage_seconds(&idle) - idle0);
    let hog_seen = wl(&last, CLOCK, &hog.rel).unwrap() - wl(&first, CLOCK, &hog.rel).unwrap();
    let idle_seen = wl(&last, CLOCK, &idle.rel).unwrap() - wl(&first, CLOCK, &idle.rel).unwrap();
    let node = sample(&last, "ksense_perf_cpu_clock_seconds_total").unwrap() - node0;
    eprintln!(
        "hog: cpu.stat {hog_truth:.3} s, ksense {hog_seen:.3} s; idle: cpu.stat {idle_truth:.4} s, ksense {idle_seen:.4} s; node {node:.2} s of {:.2} CPU-s",
        wall * online_cpus()
    );
    assert!(hog_truth > 3.0, "the hog ran: {hog_truth}");
    assert!((hog_seen - hog_truth).abs() < 0.05 * hog_truth, "hog: ksense {hog_seen} vs cpu.stat {hog_truth}");
    assert!(
        (idle_seen - idle_truth).abs() < 0.05 + 0.2 * idle_truth,
        "idle: ksense {idle_seen} vs cpu.stat {idle_truth}"
    );
    // Every CPU's time goes to some workload, idle time to the root's.
    let cpu_s = wall * online_cpus();
    assert!((node - cpu_s).abs() < 0.1 * cpu_s, "node-wide {node} s vs {cpu_s} CPU-seconds");
    let sw = wl(&last, SWITCHES, &idle.rel).unwrap() - wl(&first, SWITCHES, &idle.rel).unwrap();
    assert!(sw > 100.0, "the idle loop switches 100 times a second: {sw}");
    assert!(sample(&last, "ksense_perf_page_faults_total").unwrap() > 0.0);
}

/// This VM has no PMU: the default (hardware) events are left out with one
/// log line, no program for them is loaded or reported, `ksense check`
/// warns, and the rest is served. Where the CPU has counters, they count.
#[test]
fn root_hardware_counters_count_or_are_left_out_with_one_line() {
    require_root!();
    let (usable, why) = perf::probe(EventSet::default_set());
    let k = Ksense::start(&["--workloads.enabled"]);
    std::thread::sleep(Duration::from_millis(500));
    let text = k.scrape();
    assert!(sample(&text, "ksense_runqueue_latency_seconds_count").unwrap() > 0.0);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ksense")).arg("check").output().unwrap();
    let check = String::from_utf8_lossy(&check.stdout).to_string();
    let line = check.lines().find(|l| l.contains("perf_events")).expect("a perf_events line").to_string();
    let (_, log) = k.stop();
    if usable.is_empty() {
        assert!(!why.is_empty());
        assert!(!text.contains("ksense_perf_") && !text.contains("perf_counters"), "nothing served:\n{text}");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("performance counters")).collect();
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(lines[0].contains("not supported by this CPU"), "{}", lines[0]);
        assert!(line.starts_with("warn") && line.contains("cycles: not supported"), "{line}");
    } else {
        assert!(line.starts_with("ok"), "{line}");
        for e in usable.events() {
            let v = sample(&text, &format!("{}_total", e.family)).unwrap_or(0.0);
            assert!(v > 0.0, "{} counts: {v}", e.name);
        }
    }
}

/// `--bpf.disable perf_counters` drops the program that hands counts to
/// workloads: the node-wide counts go on (perf_event_open, not BPF), and
/// no per-workload series sits at 0 for ever.
#[test]
fn root_disabled_perf_program_leaves_node_wide_counts_only() {
    require_root!();
    let k = Ksense::start(&[
        "--workloads.enabled",
        "--bpf.disable",
        perf::PROGRAM,
        "--bpf.perf-events",
        "context-switches",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let text = k.scrape();
    let (_, log) = k.stop();
    assert!(sample(&text, "ksense_perf_context_switches_total").unwrap() > 0.0, "node-wide:\n{text}");
    assert!(!text.contains(SWITCHES), "no per-workload series:\n{text}");
    assert!(!text.contains(&format!("program=\"{}\"", perf::PROGRAM)), "not served as detached:\n{text}");
    assert!(log.contains("node-wide counts only"), "{log}");
}
