//! The command line as a user meets it: help, bad input, privileges.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs ksense to its exit; one that starts serving instead (input that
/// should have been refused) is killed after 10 s and fails the test.
fn ksense(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ksense"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("ksense {args:?} did not exit within 10 s: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_flag() {
    let o = ksense(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--web.listen-address",
        "--web.telemetry-path",
        "--config.file",
        "--log.level",
        "--log.format",
        "--model.interval",
        "--model.warmup",
        "--model.baseline-window",
        "--model.state-file",
        "--model.features",
        "--otlp.endpoint",
        "--otlp.protocol",
        "--otlp.interval",
        "--otlp.header",
        "--otlp.timeout",
        "--otlp.compression",
        "--otlp.tls.ca-file",
        "--otlp.tls.cert-file",
        "--otlp.tls.key-file",
        "check",
        "recalibrate",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    assert!(ksense(&["--version"]).status.success());
}

#[test]
fn malformed_flags_exit_2_with_a_message() {
    for args in [
        &["--log.level", "loud"][..],
        &["--model.warmup", "ten"],
        &["--no-such-flag"],
        &["--web.listen-address", "not an address"],
        &["--model.features", "cpu_usage"],
        &["--web.telemetry-path", "metrics"],
        &["--otlp.endpoint", "localhost:4317"],
        &["--otlp.endpoint", "http://collector:4317", "--otlp.tls.ca-file", "/etc/ca.pem"],
        &["--otlp.endpoint", "https://collector:4317", "--otlp.tls.cert-file", "/etc/c.pem"],
        &["--otlp.endpoint", "http://collector:4317", "--otlp.compression", "zstd"],
        &["--otlp.protocol", "http/json"],
        &["--otlp.endpoint", "http://c:4317", "--otlp.header", "novalue"],
        &["--otlp.timeout", "5s"],
    ] {
        let o = ksense(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(!e.is_empty() && !e.contains("panicked"), "{args:?}: {e}");
    }
}

/// The standard OTLP variables are checked like flags.
#[test]
fn malformed_otel_environment_exits_2_naming_the_variable() {
    for (k, v) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_ksense"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
            .env(k, v)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{k}={v}: {}", stderr(&o));
        assert!(stderr(&o).contains(k), "{k}: {}", stderr(&o));
    }
}

#[test]
fn bad_config_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ksense.toml");
    std::fs::write(&p, "[web]\nlisten_address = \":9\"\n[model]\nwarmup = 10\n").unwrap();
    let o = ksense(&["--config.file", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("ksense.toml") && e.contains("line 4") && e.contains("warmup"), "{e}");
    let o = ksense(&["--config.file", "/nonexistent/ksense.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/ksense.toml"));
}

#[test]
fn recalibrate_discards_the_saved_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.json");
    let w = dir.path().join("b.workloads.json");
    std::fs::write(&p, "{}").unwrap();
    std::fs::write(&w, "{}").unwrap();
    let o = ksense(&["recalibrate", "--model.state-file", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!p.exists() && !w.exists(), "the node's and the workloads' baselines");
    assert!(ksense(&["recalibrate", "--model.state-file", p.to_str().unwrap()]).status.success());
    // A mistyped path: nothing to discard, and no directories made for it.
    let typo = dir.path().join("no-such-dir/deeper/b.json");
    let o = ksense(&["recalibrate", "--model.state-file", typo.to_str().unwrap()]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("no saved baseline"), "{}", stderr(&o));
    assert!(!dir.path().join("no-such-dir").exists(), "no directory made");
}

/// A state file in use is left to its owner: `recalibrate` deletes nothing
/// and asks the process holding it, named, to calibrate anew (the server's
/// side: `a_running_server_recalibrates_when_asked` in tests/web.rs).
#[test]
fn a_state_file_in_use_is_left_to_its_owner() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.json");
    std::fs::write(&p, "{}").unwrap();
    // Another process holds the lock: flock(1) from util-linux, as a running ksense would.
    let lock = dir.path().join("b.json.lock");
    let mut holder = std::process::Command::new("flock")
        .args([lock.to_str().unwrap(), "sh", "-c", &format!("echo $PPID > {}; sleep 30", lock.display())])
        .process_group(0)
        .spawn()
        .expect("flock (util-linux)");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim().is_empty() && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = ksense(&["recalibrate", "--model.state-file", p.to_str().unwrap()]);
    // The whole group: sleep inherited the locked descriptor.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    let _ = holder.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("process {}", holder.id())) && out.contains("asked it"), "{out}");
    assert!(p.exists(), "the baseline in use was left alone");
    assert!(dir.path().join("b.json.recalibrate").exists(), "the request is left for the owner");
    assert!(ksense(&["recalibrate", "--model.state-file", p.to_str().unwrap()]).status.success(), "free once it exits");
    assert!(!p.exists(), "discarded at once with no owner");
}

/// Without root or CAP_BPF + CAP_PERFMON: one line that says so, exit 2.
#[test]
fn root_unprivileged_user_is_told_what_is_missing() {
    require_root!();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_ksense"),
            "--web.listen-address",
            "127.0.0.1:0",
        ])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("CAP_BPF") && e.contains("CAP_PERFMON"), "{e}");
}

#[test]
fn root_check_reports_this_kernel() {
    require_root!();
    let o = ksense(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    for line in
        ["btf", "tp_btf", "raw_tp", "task_storage", "bpf_stats", "probe sched_switch", "probe softirq_exit", "baseline"]
    {
        assert!(out.contains(line), "check lacks {line}: {out}");
    }
}

/// Malformed hardening flags and web config files: exit 2, one line naming
/// the file, line and field.
#[test]
fn malformed_web_config_and_hardening_flags_exit_2() {
    for args in [
        &["--web.max-connections", "0"][..],
        &["--web.max-connections", "many"],
        &["--bpf.disable", "sched_nope"],
        &["--web.config.file", "/nonexistent/web.yml"],
        &["--strict=yes"],
    ] {
        let o = ksense(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("web.yml");
    for (text, line, field) in [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS14\n",
            4,
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  cert_file: nonexistent.crt\n  key_file: server.key\n",
            2,
            "tls_server_config.cert_file",
        ),
        ("basic_auth_users:\n  prometheus: hunter2\n", 2, "basic_auth_users.prometheus"),
        ("# comment\nbasic_auth_user:\n  a: b\n", 2, "basic_auth_user"),
    ] {
        std::fs::write(&p, text).unwrap();
        let o = ksense(&["--web.config.file", p.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains("web.yml") && e.contains(&format!("line {line},")) && e.contains(field), "{text:?}: {e}");
    }
}
