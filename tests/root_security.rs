//! Least privilege (capabilities dropped after attach, running as an
//! unprivileged user). Needs root. TLS, basic auth and HTTP hygiene are in
//! tests/web.rs, served in-process.

mod common;

use std::time::Duration;

use common::{sample, Ksense, Ready};

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in status"))
}

fn hex(pid: u32, field: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, field), 16).unwrap()
}

const CAP_BPF: u64 = 1 << 39;

/// What ksense keeps after attach: nothing, or CAP_BPF alone on kernels
/// that check it on every bpf() call (before 6.5 with
/// unprivileged_bpf_disabled). The log says which; /proc shows it, for every
/// thread.
fn assert_least_privilege(k: &Ksense) {
    let pid = k.pid();
    let eff = hex(pid, "CapEff");
    assert!(eff == 0 || eff == CAP_BPF, "CapEff {eff:#x}");
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let st = std::fs::read_to_string(task.path().join("status")).unwrap();
        let get = |f: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(&format!("{f}:")))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap()
        };
        assert_eq!(get("CapEff"), eff, "thread {:?}", task.file_name());
        assert_eq!(get("CapPrm"), eff, "permitted = effective");
        assert_eq!(get("CapInh"), 0);
        assert_eq!(get("CapAmb"), 0);
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
}

#[test]
fn root_capabilities_dropped_after_attach() {
    require_root!();
    let k = Ksense::start(&[]);
    assert_least_privilege(&k);
    // Root can clear the bounding set too.
    assert_eq!(hex(k.pid(), "CapBnd"), hex(k.pid(), "CapEff"));
    // Still reads its maps with what it kept.
    let waits = |t: &str| sample(t, "ksense_runqueue_latency_seconds_count").unwrap();
    let a = waits(&k.scrape());
    std::thread::sleep(Duration::from_millis(300));
    assert!(waits(&k.scrape()) > a, "the programs keep counting after the drop");
    let (st, log) = k.stop();
    assert!(st.success());
    let line = log.lines().find(|l| l.contains("capabilities dropped")).unwrap_or_else(|| panic!("{log}"));
    println!("{line}");
}

/// As an unprivileged user given only CAP_BPF and CAP_PERFMON (e.g. by
/// systemd's AmbientCapabilities): attaches, serves, drops them.
#[test]
fn root_runs_as_nobody_with_cap_bpf_and_cap_perfmon() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    // The state file's directory belongs to the service user, and so does a
    // copy of the binary (the build tree may not be reachable by nobody).
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let bin = dir.path().join("ksense");
    std::fs::copy(env!("CARGO_BIN_EXE_ksense"), &bin).unwrap();
    let cmd = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+bpf,+perfmon",
        "--ambient-caps=+bpf,+perfmon",
        bin.to_str().unwrap(),
    ];
    let k = Ksense::start_full(&cmd, dir, &[], Ready::Http);
    assert_eq!(status_field(k.pid(), "Uid").split_whitespace().next(), Some("65534"));
    let text = k.scrape();
    for p in ["sched_switch", "softirq_entry", "softirq_exit"] {
        assert_eq!(sample(&text, &format!("ksense_bpf_program_attached{{program=\"{p}\"}}")), Some(1.0), "{p}");
    }
    let count = |t: &str| sample(t, "ksense_runqueue_latency_seconds_count").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(count(&k.scrape()) > count(&text), "the run-queue histogram grows");
    assert_least_privilege(&k);
    let (st, log) = k.stop();
    assert!(st.success(), "{log}");
}
