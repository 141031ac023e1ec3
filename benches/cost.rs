//! What ksense costs, measured side by side in one run (issue 7).
//!
//!   sudo cargo bench --bench cost            (or: make bench)
//!   KSENSE_BENCH_SECS=20 sudo -E cargo bench --bench cost
//!
//! BPF cost per event comes from the kernel's own run_time_ns / run_cnt:
//! ksense's programs (as its /metrics reports them) next to, on the same
//! tracepoints and the same events, (a) empty programs, the floor any
//! tracepoint program pays, and (b) a pid-hash run-queue histogram in the
//! style of libbpf-tools' runqlat, the baseline. Only ratios are quoted: the
//! machine is shared and absolute times wander.
//!
//! Prints a table; it is a benchmark, not a test: it never fails on a figure.

use std::collections::BTreeMap;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use ksense::probes::kernel;
use ksense::probes::reader::{prog_stats, ProgStats};

mod floor {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}
mod hashrq {
    include!(concat!(env!("OUT_DIR"), "/hashrq.skel.rs"));
}

const SCHED: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];

fn main() {
    // `cargo bench` passes --bench; a filter that is not ours means "not me".
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !args.is_empty() && !args.iter().any(|a| "cost".contains(a.as_str())) {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED bench cost: needs root (it loads BPF programs): sudo cargo bench --bench cost");
        return;
    }
    let secs: u64 = std::env::var("KSENSE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    if let Err(e) = run(secs) {
        eprintln!("bench cost: {e:#}");
        std::process::exit(1);
    }
}

/// The comparison programs, attached for the whole run.
struct Others {
    floor: Vec<(&'static str, OwnedFd)>,
    hash: Vec<(&'static str, OwnedFd)>,
    _links: Vec<Link>,
}

fn load_others() -> anyhow::Result<Others> {
    let mut links = Vec::new();
    let mut o1 = MaybeUninit::<OpenObject>::uninit();
    let sk = floor::FloorSkelBuilder::default().open(&mut o1)?.load()?;
    let p = &sk.progs;
    let mut fl = Vec::new();
    for (name, prog) in SCHED.iter().zip([&p.floor_sched_switch, &p.floor_sched_wakeup, &p.floor_sched_wakeup_new]) {
        links.push(prog.attach()?);
        fl.push((*name, prog.as_fd().try_clone_to_owned()?));
    }
    let mut o2 = MaybeUninit::<OpenObject>::uninit();
    let sk2 = hashrq::HashrqSkelBuilder::default().open(&mut o2)?.load()?;
    let p = &sk2.progs;
    let mut hs = Vec::new();
    for (name, prog) in SCHED.iter().zip([&p.hash_sched_switch, &p.hash_sched_wakeup, &p.hash_sched_wakeup_new]) {
        links.push(prog.attach()?);
        hs.push((*name, prog.as_fd().try_clone_to_owned()?));
    }
    Ok(Others { floor: fl, hash: hs, _links: links })
}

type Stats = BTreeMap<(&'static str, String), ProgStats>;

/// Every program's counters at one moment: ksense's from its /metrics (what a
/// user sees), the others' from their fds.
fn stats(url: &str, o: &Others) -> anyhow::Result<Stats> {
    let mut m = Stats::new();
    let text = get(url)?.1;
    for line in text.lines() {
        for (metric, runs) in [("ksense_bpf_program_runs_total{program=\"", true), ("ksense_bpf_program_run_seconds_total{program=\"", false)] {
            if let Some(rest) = line.strip_prefix(metric) {
                let (prog, val) = rest.split_once("\"} ").unwrap_or_default();
                let v: f64 = val.parse().unwrap_or(0.0);
                let e = m.entry(("ksense", prog.to_string())).or_default();
                if runs {
                    e.run_cnt = v as u64;
                } else {
                    e.run_time_ns = (v * 1e9).round() as u64;
                }
            }
        }
    }
    for (set, progs) in [("floor", &o.floor), ("hash", &o.hash)] {
        for (name, fd) in progs {
            m.insert((set, name.to_string()), prog_stats(fd)?);
        }
    }
    Ok(m)
}

/// ns/run per (set, program) between two snapshots.
fn per_run(a: &Stats, b: &Stats) -> BTreeMap<(&'static str, String), (u64, f64)> {
    b.iter()
        .map(|(k, v)| {
            let p = a.get(k).copied().unwrap_or_default();
            let runs = v.run_cnt - p.run_cnt;
            let ns = (v.run_time_ns - p.run_time_ns) as f64;
            (k.clone(), (runs, if runs > 0 { ns / runs as f64 } else { f64::NAN }))
        })
        .collect()
}

fn get(url: &str) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let mut body = String::new();
    ureq::get(url).call()?.into_reader().read_to_string(&mut body)?;
    Ok((t.elapsed(), body))
}

/// CPU time (ns) of every thread of a process.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// The kernel's memlock accounting of the process's BPF maps (what bpftool
/// prints as `memlock`), in bytes, and the number of maps.
fn bpf_map_bytes(pid: u32) -> (u64, usize) {
    let mut total = 0;
    let mut maps = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).into_iter().flatten().flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        if !info.contains("map_type:") {
            continue;
        }
        maps += 1;
        total += info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    }
    (total, maps)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

struct Ksense {
    child: Child,
    url: String,
    first_scrape: Duration,
    _dir: tempfile::TempDir,
}

impl Drop for Ksense {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_ksense() -> anyhow::Result<Ksense> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_ksense"))
        .args(["--web.listen-address", &format!("127.0.0.1:{port}"), "--log.level", "warn"])
        .arg("--model.state-file")
        .arg(dir.path().join("baseline.json"))
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    // First full scrape: every kernel family present.
    loop {
        if let Ok((_, body)) = get(&url) {
            if body.contains("ksense_runqueue_latency_seconds_count") && body.contains("ksense_softirq_duration_seconds_count") {
                break;
            }
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "ksense did not serve a full scrape within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Ksense { first_scrape: t.elapsed(), child, url, _dir: dir })
}

fn storm(argv: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(st.success(), "{} failed: {st}", argv.join(" "));
    Ok(())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn run(secs: u64) -> anyhow::Result<()> {
    let _stats_fd = kernel::enable_stats().map_err(anyhow::Error::msg)?;
    let ks = start_ksense()?;
    let pid = ks.child.id();
    let others = load_others()?;
    std::thread::sleep(Duration::from_secs(1));

    println!("ksense cost benchmark: kernel {}, {} CPUs", ksense::app::kernel_release(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();

    // ---- BPF cost per event, two storms
    let storms: [Vec<String>; 2] = [
        vec!["stress-ng".into(), "--switch".into(), "2".into(), "--timeout".into(), format!("{secs}s"), "--quiet".into()],
        vec!["perf".into(), "bench".into(), "sched".into(), "pipe".into(), "-l".into(), (secs * 60_000).to_string()],
    ];
    let mut path_ratio = Vec::new();
    for argv in &storms {
        let a = stats(&ks.url, &others)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        storm(&argv)?;
        let b = stats(&ks.url, &others)?;
        let d = per_run(&a, &b);
        println!("BPF ns/run under `{}` (same events, all three sets attached at once)", argv.join(" "));
        println!("  {:<18} {:>11} {:>8} {:>8} {:>8} {:>12} {:>11}  target", "program", "runs", "ksense", "floor", "hash", "ksense/floor", "ksense/hash");
        let (mut k_total, mut h_total) = (0.0, 0.0);
        for name in SCHED {
            let key = |s: &'static str| (s, name.to_string());
            let (runs, k) = d.get(&key("ksense")).copied().unwrap_or((0, f64::NAN));
            let (_, f) = d.get(&key("floor")).copied().unwrap_or((0, f64::NAN));
            let (hruns, h) = d.get(&key("hash")).copied().unwrap_or((0, f64::NAN));
            k_total += k * runs as f64;
            h_total += h * hruns as f64;
            let target = match name {
                "sched_switch" => "<= 3.0x floor",
                "sched_wakeup" => "<= 2.5x floor",
                _ => "",
            };
            println!("  {name:<18} {runs:>11} {k:>8.1} {f:>8.1} {h:>8.1} {:>11.2}x {:>10.2}x  {target}", k / f, k / h);
        }
        for name in ["softirq_entry", "softirq_exit"] {
            if let Some((runs, k)) = d.get(&("ksense", name.to_string())) {
                println!("  {name:<18} {runs:>11} {k:>8.1}");
            }
        }
        let r = k_total / h_total;
        println!("  run-queue + D-state path, ksense / hash baseline (total ns on the three tracepoints): {r:.2}x  (target <= 0.35x)");
        println!();
        path_ratio.push(r);
    }

    // ---- user-space CPU, idle and under the storm (default 1 s interval, no scrapes)
    let window = Duration::from_secs(secs);
    let c0 = cpu_ns(pid);
    std::thread::sleep(window);
    let idle = (cpu_ns(pid) - c0) as f64 / window.as_nanos() as f64;
    let c0 = cpu_ns(pid);
    let t = Instant::now();
    storm(&["stress-ng", "--switch", "2", "--timeout", &format!("{secs}s"), "--quiet"])?;
    let busy = (cpu_ns(pid) - c0) as f64 / t.elapsed().as_nanos() as f64;
    println!("user-space CPU of the ksense process (all threads, 1 s model interval, not scraped)");
    println!("  idle        {:>7.3} % of one core   (target <= 0.5 %)", idle * 100.0);
    println!("  under storm {:>7.3} % of one core", busy * 100.0);
    println!();

    // ---- scrape latency and size
    let n = 500;
    let mut lat = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let (d, body) = get(&ks.url)?;
        lat.push(d);
        bytes = body.len();
    }
    lat.sort();
    println!("/metrics (text format, {n} scrapes back to back)");
    println!("  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} bytes   (target p99 <= 5 ms)", ms(quantile(&lat, 0.5)), ms(quantile(&lat, 0.99)), ms(*lat.last().unwrap()), bytes);
    println!("  first full scrape {:.0} ms after start   (target <= 1000 ms)", ms(ks.first_scrape));
    println!();

    // ---- memory
    let (map_bytes, maps) = bpf_map_bytes(pid);
    println!("memory");
    println!("  peak RSS {:.1} MiB (VmHWM), now {:.1} MiB   (target <= 30 MiB)", status_kib(pid, "VmHWM:") as f64 / 1024.0, status_kib(pid, "VmRSS:") as f64 / 1024.0);
    println!("  BPF maps {:.1} KiB in {maps} maps (kernel memlock accounting)", map_bytes as f64 / 1024.0);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
