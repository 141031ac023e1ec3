//! Faults and load: a program that does not attach, --strict, signals,
//! a full or read-only disk, no kernel BTF, 1,000 concurrent connections,
//! counters that never go backwards. Needs root.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{monotonic_series, sample, wait_for, Ksense, Load};
use ksense::probes::{kernel, AttachMode, Probes};
use ksense::signals::metric::Value;
use ksense::signals::Snapshot;

fn attached(text: &str, p: &str) -> Option<f64> {
    sample(text, &format!("ksense_bpf_program_attached{{program=\"{p}\"}}"))
}

/// A program whose tracepoint this kernel lacks (the kernel's list of
/// tracepoints doctored in-process, as on an older kernel): the others attach
/// and count, it is served as attached 0 (for KsenseProbeDetached), and it
/// is what `--strict` refuses to serve with. A program `--bpf.disable`
/// names is neither served nor counted: it is not meant to run.
#[test]
fn root_a_program_that_does_not_attach_leaves_the_rest_running() {
    require_root!();
    let mut support = kernel::probe();
    support.missing_tracepoints.push("kfree_skb");
    let mode = AttachMode::choose(Some(AttachMode::TpBtf), &support).unwrap();
    let p = Probes::attach(mode, &support, &["tcp_probe"]).unwrap();
    let served = |s: &Snapshot, name: &str| {
        let f = s.families.iter().find(|f| f.name == "ksense_bpf_program_attached").expect("the attached family");
        let x = f.samples.iter().find(|x| x.labels.iter().any(|(_, v)| v == name))?;
        match x.value {
            Value::Gauge(g) => Some(g),
            _ => panic!("ksense_bpf_program_attached is not a gauge"),
        }
    };
    let before = p.snapshot().unwrap();
    assert_eq!(served(&before, "kfree_skb"), Some(0.0), "the missing program reads 0");
    assert_eq!(served(&before, "sched_switch"), Some(1.0));
    assert_eq!(served(&before, "tcp_probe"), None, "a disabled program has no series");
    let refusal = ksense::probes::strict_refusal(&p.programs).expect("--strict refuses");
    assert_eq!(refusal.matches("kfree_skb").count(), 1, "{refusal}");
    assert!(refusal.contains("kfree_skb: tracepoint missing"), "{refusal}");
    assert!(!refusal.contains("tcp_probe"), "a disabled program is no refusal: {refusal}");
    std::thread::sleep(Duration::from_millis(300));
    let count = |s: &Snapshot| s.signal("runqueue").expect("the run-queue histogram").count();
    assert!(count(&p.snapshot().unwrap()) > count(&before), "the others keep counting");
}

/// `--strict` serves when every program meant to run attached: the ones
/// `--bpf.disable` names are not counted, and have no series (one info line
/// each); the fatal path's list is the one checked above.
#[test]
fn root_strict_does_not_count_a_disabled_program() {
    require_root!();
    let k = Ksense::start(&["--strict", "--bpf.disable", "softirq_entry,softirq_exit"]);
    let text = k.scrape();
    assert_eq!(attached(&text, "softirq_entry"), None);
    assert_eq!(attached(&text, "softirq_exit"), None);
    assert_eq!(attached(&text, "sched_switch"), Some(1.0));
    let (st, log) = k.stop();
    assert!(st.success(), "{log}");
    for p in ["softirq_entry", "softirq_exit"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("program={p}"))).collect();
        assert_eq!(lines.len(), 1, "one log line for {p}: {log}");
        assert!(lines[0].contains("level=info") && lines[0].contains("disabled by --bpf.disable"), "{}", lines[0]);
    }
}

/// No kernel BTF (hidden by an empty tmpfs in a private mount namespace):
/// one line that names it, and a non-zero exit.
#[test]
fn root_no_btf_is_one_clear_line() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("b.json");
    let script = format!(
        "mount -t tmpfs none /sys/kernel/btf && exec {} --web.listen-address 127.0.0.1:0 --model.state-file {}",
        env!("CARGO_BIN_EXE_ksense"),
        state.display()
    );
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("BTF") && err.contains("/sys/kernel/btf/vmlinux") && err.contains("CONFIG_DEBUG_INFO_BTF"),
        "{err}"
    );
    // `ksense check` says the same.
    let script = format!("mount -t tmpfs none /sys/kernel/btf && exec {} check", env!("CARGO_BIN_EXE_ksense"));
    let o =
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("btf")), "{out}");
}

/// SIGTERM and SIGINT while scrapes run: every scrape that was answered is
/// complete, the process exits 0 within a few seconds.
#[test]
fn root_sigterm_and_sigint_finish_scrapes_and_exit_0() {
    require_root!();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let k = Ksense::start(&[]);
        let url = k.url("/metrics");
        let stop = Arc::new(AtomicBool::new(false));
        let scrapers: Vec<_> = (0..4)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                    let (mut ok, mut bad) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match agent.get(&url).call() {
                            Ok(r) => match r.into_string() {
                                Ok(body) if body.contains("ksense_build_info") => ok += 1,
                                Ok(body) => bad.push(format!("incomplete body of {} bytes", body.len())),
                                Err(e) => bad.push(format!("reading the body: {e}")),
                            },
                            // The listener is gone: that is the end, not a failure.
                            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => break,
                            Err(e) => bad.push(e.to_string()),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut k = k;
        let (st, log, took) = k.signal(sig);
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for h in scrapers {
            let (ok, bad) = h.join().unwrap();
            total += ok;
            // A request sent in the instant the server stopped accepting may
            // see its connection closed before any answer; an answer is never cut.
            assert!(
                bad.iter().all(|b| !b.contains("incomplete") && !b.contains("reading the body")),
                "signal {sig}: {bad:?}"
            );
        }
        assert!(total > 10, "scrapes ran: {total}");
        assert_eq!(st.code(), Some(0), "signal {sig}: {st}\n{log}");
        assert!(took < Duration::from_secs(5), "signal {sig}: exit took {took:?}");
        assert!(log.contains("shutting down"), "{log}");
    }
}

/// A tmpfs of `size` mounted on `path`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "ksense-test", path.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(path.to_path_buf())
    }
    fn remount(&self, opt: &str) {
        let st =
            Command::new("mount").args(["-o", &format!("remount,{opt}"), self.0.to_str().unwrap()]).status().unwrap();
        assert!(st.success(), "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

const FAST: &[&str] = &["--model.interval", "500ms", "--model.warmup", "3s", "--model.baseline-window", "3s"];

/// Read-only, then full: saving the baseline fails with one log line and a
/// counter, the process keeps serving; once the disk is writable again the
/// save at shutdown succeeds.
#[test]
fn root_read_only_or_full_disk_is_a_counter_not_a_crash() {
    require_root!();
    let _load = Load::start();
    for case in ["read-only", "full"] {
        let dir = tempfile::tempdir().unwrap();
        let fs = Tmpfs::mount(dir.path(), "64k");
        let root = dir.path().to_path_buf();
        let state = root.join("baseline.json");
        match case {
            "read-only" => fs.remount("ro"),
            _ => {
                // Fill it: nothing is left for a temporary file.
                let _ = Command::new("dd")
                    .args(["if=/dev/zero", &format!("of={}", root.join("fill").display()), "bs=4k"])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let k = Ksense::start_in(dir, FAST);
        wait_for(&k, "ksense_baseline_ready", 1.0, Duration::from_secs(30));
        let t0 = Instant::now();
        let failures = loop {
            let f = sample(&k.scrape(), "ksense_state_save_failures_total").unwrap();
            if f >= 1.0 || t0.elapsed() > Duration::from_secs(5) {
                break f;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(failures >= 1.0, "{case}: no save failure counted");
        assert!(!state.exists(), "{case}");
        // Writable again: the save at shutdown goes through.
        match case {
            "read-only" => fs.remount("rw"),
            _ => std::fs::remove_file(root.join("fill")).unwrap(),
        }
        let mut k = k;
        let (st, log, _) = k.signal(libc::SIGTERM);
        assert!(st.success(), "{case}: {st}\n{log}");
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("saving the baseline failed")).collect();
        assert!(!failed.is_empty() && failed.len() as f64 <= failures + 1.0, "{case}: one line per failure: {log}");
        assert!(
            failed[0].contains(if case == "read-only" { "Read-only file system" } else { "No space left" }),
            "{case}: {}",
            failed[0]
        );
        let names: Vec<String> = ksense::model::pipeline::DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect();
        ksense::model::load(&state, &names).unwrap_or_else(|e| panic!("{case}: saved at shutdown: {e}\n{log}"));
        assert!(
            std::fs::read_dir(&root).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".tmp-")),
            "{case}: temporary file left"
        );
    }
}

/// Every counter and histogram series only grows, scrape after scrape,
/// while the node is busy.
#[test]
fn root_every_counter_is_monotonic() {
    require_root!();
    let _load = Load::start();
    let k = Ksense::start(&[]);
    let mut prev = monotonic_series(&k.scrape());
    assert!(prev.len() > 100, "{} series", prev.len());
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = monotonic_series(&k.scrape());
        for (series, v) in &now {
            if let Some(p) = prev.get(series) {
                assert!(v >= p, "{series} went from {p} to {v}");
            }
        }
        prev = now;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// wrk with 1,000 connections for 10 s against /metrics: no socket error,
/// no non-2xx, memory bounded, and the probes keep counting. wrk's request
/// timeout is set to Prometheus' default scrape timeout (10 s): on a quiet
/// 2-vCPU VM the slowest answer took 0.71 s, but with the machine's load
/// average at 10 (shared CI-like hosts) 1,000 clients queue behind one
/// another for over 2 s, wrk's default.
#[test]
fn root_1000_concurrent_connections() {
    require_root!();
    // The run-time statistics held, so that each program's run count shows it still runs.
    let k = Ksense::start(&["--bpf.stats"]);
    let before = k.scrape();
    let rss0 = rss_kib(k.pid());
    let out = Command::new("sh")
        .args(["-c", &format!("ulimit -n 4096 && wrk -t2 -c1000 -d10s --timeout 10s --latency {}", k.url("/metrics"))])
        .output()
        .expect("wrk (apt-get install wrk)");
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let rss1 = rss_kib(k.pid());
    println!("{report}\nVmRSS before {rss0} KiB, after {rss1} KiB");
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .expect("wrk summary");
    assert!(requests >= 1000, "{report}");
    assert!(rss1 < 256 * 1024, "VmRSS {rss1} KiB after 1,000 connections");
    let after = k.scrape();
    for p in ["sched_switch", "softirq_exit"] {
        let series = format!("ksense_bpf_program_runs_total{{program=\"{p}\"}}");
        assert!(sample(&after, &series).unwrap() > sample(&before, &series).unwrap(), "{p} stopped counting");
    }
    assert!(
        sample(&after, "ksense_runqueue_latency_seconds_count").unwrap()
            > sample(&before, "ksense_runqueue_latency_seconds_count").unwrap()
    );
    let (st, log) = k.stop();
    assert!(st.success(), "{log}");
}

/// A TLS file that cannot be read, or holds no certificate, stops ksense at
/// start naming the file: a configuration error (exit 2), before any
/// program loads (until 2026-12-07 exit 1, after attaching).
#[test]
fn root_otlp_missing_ca_file_is_a_startup_error() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("baseline.json");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for ca in ["/nonexistent/ca.pem", not_pem.to_str().unwrap()] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ksense"))
            .args([
                "--otlp.endpoint",
                "https://localhost:4317",
                "--otlp.tls.ca-file",
                ca,
                "--web.listen-address",
                &format!("127.0.0.1:{}", common::free_port()),
                "--model.state-file",
                state.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ca}: {err}");
        assert!(err.contains("OTLP TLS") && err.contains(ca) && !err.contains("panicked"), "{ca}: {err}");
        assert!(!err.contains("attached"), "refused before the programs load: {err}");
    }
}

/// Out of file descriptors: one warning at start that the limit is below the
/// connection cap, then accept failures as a run (not a line every 50 ms),
/// and a line when accepting works again.
#[test]
fn root_out_of_fds_warns_once_not_in_a_flood() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ksense");
    let k = Ksense::start_full(&["prlimit", "--nofile=64:64", bin], dir, &[], common::Ready::Http);
    let addr = format!("127.0.0.1:{}", k.port);
    let idle: Vec<std::net::TcpStream> = (0..200).filter_map(|_| std::net::TcpStream::connect(&addr).ok()).collect();
    assert!(idle.len() >= 100, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_secs(3));
    drop(idle);
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(r) = ureq::get(&k.url("/metrics")).timeout(Duration::from_secs(2)).call() {
            body = r.into_string().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(body.contains("ksense_build_info"), "scrapes work again once the idle connections close");
    let (exit, log) = k.stop();
    assert!(exit.success(), "{exit}: {log}");
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    assert_eq!(count("open-file limit (ulimit -n) is below"), 1, "{log}");
    assert!((1..=2).contains(&count("accept failed")), "a run of failures is one or two lines: {log}");
    assert_eq!(count("accepting connections again"), 1, "{log}");
    assert!(log.lines().count() < 20, "{log}");
}

/// A SIGHUP (or SIGUSR1, SIGUSR2, SIGALRM) while a start waits for the
/// state file's owner does not end it (it did: exit 129, the default
/// disposition until the server's handlers were installed); the start goes
/// on once the owner exits, serves, and stops cleanly on SIGTERM.
#[test]
fn root_a_signal_during_startup_does_not_end_it() {
    use std::os::unix::process::CommandExt;
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("b.json");
    let lock = dir.path().join("b.json.lock");
    let mut holder = Command::new("flock")
        .args([lock.to_str().unwrap(), "sleep", "3"])
        .process_group(0)
        .spawn()
        .expect("flock (util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let port = common::free_port();
    let mut k = Command::new(env!("CARGO_BIN_EXE_ksense"))
        .args(["--web.listen-address", &format!("127.0.0.1:{port}"), "--model.state-file", state.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGHUP] {
        unsafe { libc::kill(k.id() as i32, sig) };
    }
    std::thread::sleep(Duration::from_millis(300));
    let early = k.try_wait().unwrap();
    if early.is_some() {
        let _ = holder.kill();
    }
    assert!(early.is_none(), "ended by a signal while waiting for the lock: {early:?}");
    let _ = holder.wait();
    let t0 = Instant::now();
    let up = || ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().is_ok();
    while !up() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = up();
    unsafe { libc::kill(k.id() as i32, libc::SIGTERM) };
    let out = k.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(served, "never served after the owner exited:\n{log}");
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(log.contains("waiting for its owner"), "{log}");
}

/// SIGHUP re-reads the web config (users here; a file that no longer loads
/// keeps the one in force); SIGUSR1, SIGUSR2 and SIGALRM are logged and
/// ignored, where their default ended the process at once (exit 138...).
#[test]
fn root_sighup_reloads_the_web_config_and_other_signals_are_ignored() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let users = |u: &str| format!("basic_auth_users:\n  {u}: {}\n", bcrypt::hash("pw", 4).unwrap());
    std::fs::write(&web, users("alice")).unwrap();
    let mut k = Ksense::start_full(&[], dir, &["--web.config.file", web.to_str().unwrap()], common::Ready::Listening);
    let status = |user: &str| match ureq::get(&k.url("/metrics")).set("Authorization", &basic(user)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    fn basic(user: &str) -> String {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw")))
    }
    let wait = |f: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !f() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        f()
    };
    assert!(wait(&|| status("alice") == 200));
    assert_eq!(status("bob"), 401);
    std::fs::write(&web, users("bob")).unwrap();
    unsafe { libc::kill(k.pid() as i32, libc::SIGHUP) };
    assert!(wait(&|| status("bob") == 200), "SIGHUP did not load the new users");
    assert_eq!(status("alice"), 401);
    std::fs::write(&web, "basic_auth_users:\n  carol: not-a-hash\n").unwrap();
    unsafe { libc::kill(k.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status("bob"), 200, "a file that does not load keeps the one in force");
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM] {
        unsafe { libc::kill(k.pid() as i32, sig) };
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status("bob"), 200, "still serving after SIGUSR1, SIGUSR2, SIGALRM");
    let (st, log, _) = k.signal(libc::SIGTERM);
    assert!(st.success(), "{st}: {log}");
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    assert_eq!(count("web config reloaded"), 1, "{log}");
    assert_eq!(count("web config reload failed"), 1, "{log}");
    assert_eq!(count("signal ignored"), 3, "{log}");
}
