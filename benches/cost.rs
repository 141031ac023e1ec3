//! What ksense costs, measured side by side in one run (issue 7).
//!
//!   sudo cargo bench --bench cost            (or: make bench)
//!   KSENSE_BENCH_SECS=20 sudo -E cargo bench --bench cost
//!   KSENSE_BENCH_PART=net sudo -E cargo bench --bench cost   (only the network storm)
//!   KSENSE_BENCH_PART=requests sudo -E cargo bench --bench cost   (only the requests storm)
//!   KSENSE_BENCH_PART=scrape sudo -E cargo bench --bench cost     (only user-space CPU, scrapes, memory)
//!   KSENSE_BENCH_PART=parts sudo -E cargo bench --bench cost      (only what bounds sched_switch, part by part)
//!   KSENSE_BENCH_SLEEPER_MS=1000 ...   (the scrape figure's 200 workloads wake once a second, not every 10 ms)
//!   KSENSE_BENCH_PART=floor ...   (the empty programs alone, until stdin closes: bench/overhead.py)
//!
//! BPF cost per event comes from the kernel's own run_time_ns / run_cnt:
//! ksense's programs (as its /metrics reports them) next to, on the same
//! tracepoints and the same events, (a) empty programs, the floor any
//! tracepoint program pays, and (b) a pid-hash run-queue histogram in the
//! style of libbpf-tools' runqlat, the baseline. Only ratios are quoted: the
//! machine is shared and absolute times wander. Two ksense processes run at
//! once, one with per-workload attribution and one without (the default), so
//! attribution's price is measured on the same events too.
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

use ksense::probes::reader::{prog_stats, ProgStats};
use ksense::probes::{kernel, AttachMode, Probes, RETRANSMIT_PROGRAM, SYSCALL_FALLBACK};

mod floor {
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}
mod hashrq {
    include!(concat!(env!("OUT_DIR"), "/hashrq.skel.rs"));
}
mod parts {
    include!(concat!(env!("OUT_DIR"), "/parts.skel.rs"));
}

const SCHED: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];
const NET: [&str; 3] = ["tcp_probe", "tcp_retransmit_skb", "kfree_skb"];
/// The network storm's loss on the server's port: retransmissions and drops to measure.
const NET_LOSS: &str = "0.01";
/// The requests family's programs, by their names in ksense_bpf_program_*.
const REQUESTS: [&str; 4] = ["inet_sock_set_state", "sk_data_ready", "sock_recv_length", "sock_send_length"];
/// The softirq family's programs: rare and cold in the switch storms, measured under the network storm.
const SOFTIRQ: [&str; 2] = ["softirq_entry", "softirq_exit"];
/// The requests storm's short connections (connect, one request, close) per second, beside wrk's keep-alive ones.
const CHURN_PER_SEC: u32 = 300;
const PARTS: [&str; 7] = [
    "clock",
    "rq clock (the scheduler's)",
    "task storage lookup",
    "bucket search + histogram",
    "cgroup id (attribution)",
    "cgroup id + per-CPU hash",
    "cgroup storage + array",
];
/// Workloads for the scrape figure.
const WORKLOADS: usize = 200;
/// Scrapes with a pause before each, and the pause: longer than a scrape,
/// and half the model's 1 s interval, so that a scrape finds from half a
/// second to a second of new events, as one of Prometheus' does.
const SPACED_SCRAPES: usize = 120;
const SPACED_GAP: Duration = Duration::from_millis(500);
/// Set in the environment of a re-executed bench binary: be one workload.
const SLEEPER: &str = "KSENSE_BENCH_SLEEPER";

/// One workload: wakes up every 10 ms (so it waits in the run queue now and
/// then; `KSENSE_BENCH_SLEEPER_MS` sets another period) and dies with the bench.
fn sleeper() -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let period = Duration::from_millis(sleeper_ms());
    loop {
        std::thread::sleep(period);
    }
}

/// How often each sleeper wakes, ms: 200 of them every 10 ms are 20,000
/// wakeups a second, which the scrape competes with for the CPUs.
fn sleeper_ms() -> u64 {
    std::env::var("KSENSE_BENCH_SLEEPER_MS").ok().and_then(|s| s.parse().ok()).filter(|&ms| ms > 0).unwrap_or(10)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_root() -> anyhow::Result<std::path::PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| pre.split_whitespace().nth(4).map(Into::into))
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no cgroup2 mount in /proc/self/mountinfo"))
}

/// `n` sleepers, each in a cgroup of its own under `<root>/ksense-bench`;
/// killed and removed on drop.
struct Workloads {
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl Workloads {
    fn start(n: usize) -> anyhow::Result<Workloads> {
        let dir = cgroup2_root()?.join(format!("ksense-bench-{}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let mut w = Workloads { dir, children: Vec::new() };
        for i in 0..n {
            let cg = w.dir.join(format!("w{i:03}"));
            std::fs::create_dir(&cg)?;
            let child = Command::new(std::env::current_exe()?)
                .env(SLEEPER, "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            std::fs::write(cg.join("cgroup.procs"), child.id().to_string())?;
            w.children.push(child);
        }
        Ok(w)
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn main() {
    if std::env::var_os(SLEEPER).is_some() {
        sleeper();
    }
    // `cargo bench` passes --bench; a filter that is not ours means "not me".
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !args.is_empty() && !args.iter().any(|a| "cost".contains(a.as_str())) {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED bench cost: needs root (it loads BPF programs): sudo cargo bench --bench cost");
        return;
    }
    if std::env::var("KSENSE_BENCH_PART").is_ok_and(|p| p == "floor") {
        if let Err(e) = hold_floor() {
            eprintln!("bench cost: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let secs: u64 = std::env::var("KSENSE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    if let Err(e) = run(secs) {
        eprintln!("bench cost: {e:#}");
        std::process::exit(1);
    }
}

/// Programs by tracepoint (or part) name.
type Progs = Vec<(&'static str, OwnedFd)>;

/// The comparison programs, attached for the whole run.
struct Others {
    floor: Progs,
    hash: Progs,
    _links: Vec<Link>,
}

fn load_others() -> anyhow::Result<Others> {
    let (fl, mut links) = load_floor(true)?;
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

/// The empty programs on every tracepoint ksense uses (on the wakeups'
/// only if `wakeups`), attached until the links are dropped.
fn load_floor(wakeups: bool) -> anyhow::Result<(Progs, Vec<Link>)> {
    let mut links = Vec::new();
    let mut o1 = MaybeUninit::<OpenObject>::uninit();
    let mut open = floor::FloorSkelBuilder::default().open(&mut o1)?;
    // The syscall fallback's floor: every system call pays it, so only the requests storm attaches it.
    open.progs.floor_sys_exit.set_autoload(false);
    let sk = open.load()?;
    let p = &sk.progs;
    let mut fl = Vec::new();
    for (name, prog) in SCHED.iter().chain(&NET).chain(&REQUESTS).chain(&SOFTIRQ).zip([
        &p.floor_sched_switch,
        &p.floor_sched_wakeup,
        &p.floor_sched_wakeup_new,
        &p.floor_tcp_probe,
        &p.floor_tcp_retransmit_skb,
        &p.floor_kfree_skb,
        &p.floor_inet_sock_set_state,
        &p.floor_sk_data_ready,
        &p.floor_sock_recv_length,
        &p.floor_sock_send_length,
        &p.floor_softirq_entry,
        &p.floor_softirq_exit,
    ]) {
        if !wakeups && name.starts_with("sched_wakeup") {
            continue;
        }
        links.push(prog.attach()?);
        fl.push((*name, prog.as_fd().try_clone_to_owned()?));
    }
    Ok((fl, links))
}

/// The empty program on sys_exit, attached until the link is dropped.
fn load_sys_exit_floor() -> anyhow::Result<(OwnedFd, Link)> {
    let mut o = MaybeUninit::<OpenObject>::uninit();
    let sk = floor::FloorSkelBuilder::default().open(&mut o)?.load()?;
    let p = &sk.progs.floor_sys_exit;
    Ok((p.as_fd().try_clone_to_owned()?, p.attach()?))
}

/// bench/overhead.py's `floor` configuration: what any tracer with the
/// default's hooks costs, the empty programs alone (without the kernel's
/// run-time statistics, as ksense's default), held until stdin closes.
fn hold_floor() -> anyhow::Result<()> {
    // The default attaches no wakeup programs where it times waits from sched_info.
    let wakeups = ksense::probes::sched_info_usable(true, &kernel::probe()).is_err();
    let (progs, _links) = load_floor(wakeups)?;
    println!("floor attached: {} empty programs", progs.len());
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(())
}

/// The parts programs, attached until the links are dropped: three more
/// programs on sched_switch slow every other one a little, so they run in a
/// storm of their own.
fn load_parts() -> anyhow::Result<(Progs, Vec<Link>)> {
    let mut o = MaybeUninit::<OpenObject>::uninit();
    let mut open = parts::PartsSkelBuilder::default().open(&mut o)?;
    open.maps.rodata_data.as_deref_mut().ok_or_else(|| anyhow::anyhow!("parts rodata"))?.ks_bounds =
        *ksense::signals::buckets::kernel_bounds();
    let sk = open.load()?;
    let p = &sk.progs;
    let (mut fds, mut links) = (Vec::new(), Vec::new());
    for (name, prog) in PARTS.iter().zip([
        &p.parts_clock,
        &p.parts_rq_clock,
        &p.parts_storage,
        &p.parts_search,
        &p.parts_cgroup_id,
        &p.parts_cgroup_hash,
        &p.parts_cgroup_storage,
    ]) {
        links.push(prog.attach()?);
        fds.push((*name, prog.as_fd().try_clone_to_owned()?));
    }
    Ok((fds, links))
}

type Stats = BTreeMap<(&'static str, String), ProgStats>;
/// Runs and ns/run per (set, program) over a storm.
type PerRun = BTreeMap<(&'static str, String), (u64, f64)>;

/// Every program's counters at one moment: ksense's from its /metrics (what a
/// user sees), the others' from their fds.
fn stats(ksense: &[(&'static str, &str)], o: &Others) -> anyhow::Result<Stats> {
    let mut m = Stats::new();
    for (set, url) in ksense {
        ksense_stats(&mut m, set, url)?;
    }
    add_progs(&mut m, "floor", &o.floor)?;
    add_progs(&mut m, "hash", &o.hash)?;
    Ok(m)
}

fn add_progs(m: &mut Stats, set: &'static str, progs: &Progs) -> anyhow::Result<()> {
    for (name, fd) in progs {
        m.insert((set, name.to_string()), prog_stats(fd)?);
    }
    Ok(())
}

fn ksense_stats(m: &mut Stats, set: &'static str, url: &str) -> anyhow::Result<()> {
    let text = get(url)?.1;
    for line in text.lines() {
        for (metric, runs) in [
            ("ksense_bpf_program_runs_total{program=\"", true),
            ("ksense_bpf_program_run_seconds_total{program=\"", false),
        ] {
            if let Some(rest) = line.strip_prefix(metric) {
                let (prog, val) = rest.split_once("\"} ").unwrap_or_default();
                let v: f64 = val.parse().unwrap_or(0.0);
                let e = m.entry((set, prog.to_string())).or_default();
                if runs {
                    e.run_cnt = v as u64;
                } else {
                    e.run_time_ns = (v * 1e9).round() as u64;
                }
            }
        }
    }
    Ok(())
}

/// ns/run per (set, program) between two snapshots.
fn per_run(a: &Stats, b: &Stats) -> PerRun {
    b.iter()
        .map(|(k, v)| {
            let p = a.get(k).copied().unwrap_or_default();
            let runs = v.run_cnt - p.run_cnt;
            let ns = (v.run_time_ns - p.run_time_ns) as f64;
            (k.clone(), (runs, if runs > 0 { ns / runs as f64 } else { f64::NAN }))
        })
        .collect()
}

/// A scrape of the plain text: ureq would ask for gzip (and undo it) by
/// itself, and these figures are the text's own; gzip: [`get_raw`].
fn get(url: &str) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let mut body = String::new();
    ureq::get(url).set("Accept-Encoding", "identity").call()?.into_reader().read_to_string(&mut body)?;
    Ok((t.elapsed(), body))
}

/// Seconds to gzip `body` at `level` with ksense's encoder (the median of
/// 51), and the bytes out.
fn gzip_time(body: &str, level: flate2::Compression) -> (f64, usize) {
    let mut t = Vec::new();
    let mut out = 0;
    for _ in 0..51 {
        let t0 = Instant::now();
        out = ksense::exporters::http::gzip_at(body.as_bytes(), level).map_or(0, |v| v.len());
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    (t[25], out.max(1))
}

/// A scrape on a connection of its own, asking for gzip as Prometheus does
/// or for plain text: (time to the reply's last byte, bytes on the wire).
/// Not unzipped: the time is ksense's and the wire's, not a client's inflate.
fn get_raw(url: &str, gzip: bool) -> anyhow::Result<(Duration, usize)> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("not http: {url}"))?;
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let coding = if gzip { "gzip" } else { "identity" };
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: {coding}\r\nConnection: close\r\n\r\n")?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let d = t.elapsed();
    let head = all.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4);
    let text = String::from_utf8_lossy(&all[..head]).to_ascii_lowercase();
    anyhow::ensure!(text.contains("content-encoding: gzip") == gzip, "asked for {coding}, got: {text}");
    Ok((d, all.len() - head))
}

/// Each thread's CPU time and run-queue wait (ns, `schedstat`'s first two
/// fields) under `tasks` (`/proc/PID/task`), by thread id.
struct Sched(std::collections::HashMap<std::ffi::OsString, (u64, u64)>);

impl Sched {
    fn read(tasks: &str) -> Sched {
        let Ok(dir) = std::fs::read_dir(tasks) else { return Sched(Default::default()) };
        Sched(
            dir.flatten()
                .filter_map(|t| {
                    let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
                    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
                    Some((t.file_name(), (f.next()?, f.next()?)))
                })
                .collect(),
        )
    }

    /// Every thread of a process.
    fn of(pid: u32) -> Sched {
        Sched::read(&format!("/proc/{pid}/task"))
    }

    /// (CPU, wait) the threads used since `earlier`: thread by thread, so one
    /// that exited meanwhile drops out instead of taking its whole life off.
    fn since(&self, earlier: &Sched) -> (u64, u64) {
        self.0.iter().fold((0, 0), |(c, w), (tid, &(c1, w1))| {
            let (c0, w0) = earlier.0.get(tid).copied().unwrap_or((0, 0));
            (c + c1.saturating_sub(c0), w + w1.saturating_sub(w0))
        })
    }
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
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total, maps)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A child process, sent SIGTERM and waited for on drop: SIGKILL would leave
/// nginx's workers behind and skip ksense's clean exit.
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

struct Ksense {
    child: Terminated,
    url: String,
    first_scrape: Duration,
    _dir: tempfile::TempDir,
}

fn start_ksense(extra: &[&str]) -> anyhow::Result<Ksense> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_ksense"))
        .args(["--web.listen-address", &format!("127.0.0.1:{port}"), "--log.level", "warn"])
        .args(extra)
        .arg("--model.state-file")
        .arg(dir.path().join("baseline.json"))
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    // First full scrape: every kernel family present.
    loop {
        if let Ok((_, body)) = get(&url) {
            if body.contains("ksense_runqueue_latency_seconds_count")
                && body.contains("ksense_softirq_duration_seconds_count")
            {
                break;
            }
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "ksense did not serve a full scrape within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Ksense { first_scrape: t.elapsed(), child: Terminated(child), url, _dir: dir })
}

fn storm(argv: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    anyhow::ensure!(st.success(), "{} failed: {st}", argv.join(" "));
    Ok(())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn scrape_stats(url: &str, n: usize) -> anyhow::Result<(Vec<Duration>, usize, String)> {
    let mut lat = Vec::with_capacity(n);
    let mut last = String::new();
    for _ in 0..n {
        let (d, body) = get(url)?;
        lat.push(d);
        last = body;
    }
    lat.sort();
    Ok((lat, last.len(), last))
}

fn run(secs: u64) -> anyhow::Result<()> {
    let _stats_fd = kernel::enable_stats().map_err(anyhow::Error::msg)?;
    // The default (attribution on), with room for the scrape figure's workloads; and attribution off.
    let max = WORKLOADS.to_string();
    // KSENSE_BENCH_OFF_FIRST=1: the default attaches first (see bench/README.md, attach order).
    let off_first = std::env::var("KSENSE_BENCH_OFF_FIRST").is_ok_and(|v| v == "1");
    let off_early = if off_first { Some(start_ksense(&[])?) } else { None };
    let on = start_ksense(&["--workloads.enabled", "true", "--workloads.max", &max])?;
    let off = match off_early {
        Some(k) => k,
        None => start_ksense(&[])?,
    };
    // The run-queue and D-state programs alone, timing waits from the wakeups
    // (what the default does where the kernel keeps no sched_info).
    let others_off: Vec<&str> = ksense::probes::program_names().filter(|n| !SCHED.contains(n)).collect();
    let wakeup = start_ksense(&["--bpf.sched-waits", "wakeup", "--bpf.disable", &others_off.join(",")])?;
    let others = load_others()?;
    let sets = [("on", on.url.as_str()), ("off", off.url.as_str())];
    let sched_sets = [sets[0], sets[1], ("wakeup", wakeup.url.as_str())];
    std::thread::sleep(Duration::from_secs(1));

    println!(
        "ksense cost benchmark: kernel {}, {} CPUs",
        ksense::app::kernel_release(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("on: ksense --workloads.enabled true (per-workload attribution); off: the default");
    println!("wakeup (switch storms): the default's run-queue and D-state programs with --bpf.sched-waits wakeup, as where the kernel keeps no sched_info");
    println!();

    // ---- BPF cost per event, two storms; KSENSE_BENCH_PART=net or requests: only that storm
    let part = std::env::var("KSENSE_BENCH_PART").ok();
    let runs_part = |p: &str| part.as_deref().is_none_or(|q| q == p);
    let storms: [Vec<String>; 2] = [
        vec![
            "stress-ng".into(),
            "--switch".into(),
            "2".into(),
            "--timeout".into(),
            format!("{secs}s"),
            "--quiet".into(),
        ],
        vec!["perf".into(), "bench".into(), "sched".into(), "pipe".into(), "-l".into(), (secs * 60_000).to_string()],
    ];
    for argv in storms.iter().filter(|_| part.is_none()) {
        let d = measure(argv, &sched_sets, &others)?;
        println!(
            "BPF ns/run under `{}` (same events, all five sets attached at once; - : not attached)",
            argv.join(" ")
        );
        println!(
            "  {:<18} {:>11} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>12} {:>9}  target",
            "program",
            "runs",
            "on",
            "off",
            "wakeup",
            "floor",
            "hash",
            "on/floor",
            "off/floor",
            "wakeup/floor",
            "on/hash"
        );
        // ns of each set over the three tracepoints: a program not attached costs nothing.
        let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
        for name in SCHED {
            let get = |s: &'static str| d.get(&(s, name.to_string())).copied();
            let runs = get("floor").map_or(0, |x| x.0);
            let ns = |s: &'static str| get(s).map_or(f64::NAN, |x| x.1);
            for set in ["on", "off", "wakeup", "hash"] {
                *totals.entry(set).or_default() += get(set).map_or(0.0, |(r, k)| k * r as f64);
            }
            let target = match name {
                "sched_switch" => "<= 3.0x floor",
                "sched_wakeup" => "<= 2.5x floor",
                _ => "",
            };
            let cell = |v: f64, w: usize, x: &str| {
                if v.is_nan() {
                    format!("{:>w$}", "-")
                } else {
                    format!("{v:>w$.prec$}{x}", w = w - x.len(), prec = if x.is_empty() { 1 } else { 2 })
                }
            };
            let f = ns("floor");
            println!(
                "  {name:<18} {runs:>11} {} {} {} {f:>7.1} {} {} {} {} {}  {target}",
                cell(ns("on"), 7, ""),
                cell(ns("off"), 7, ""),
                cell(ns("wakeup"), 7, ""),
                cell(ns("hash"), 7, ""),
                cell(ns("on") / f, 9, "x"),
                cell(ns("off") / f, 10, "x"),
                cell(ns("wakeup") / f, 12, "x"),
                cell(ns("on") / ns("hash"), 9, "x")
            );
        }
        // Rare and cold here: their figures against the floor come from the network storm.
        for name in SOFTIRQ {
            if let Some((runs, k)) = d.get(&("on", name.to_string())) {
                println!("  {name:<18} {runs:>11} {k:>7.1}   (rare in this storm: see the network storm)");
            }
        }
        println!(
            "  run-queue + D-state path / hash baseline (total ns on the three tracepoints): on {:.2}x, off {:.2}x, wakeup {:.2}x  (target <= 0.35x)",
            totals["on"] / totals["hash"],
            totals["off"] / totals["hash"],
            totals["wakeup"] / totals["hash"]
        );
        println!();
    }

    if runs_part("net") {
        net_storm(secs, &sets, &others)?;
    }
    if runs_part("requests") {
        requests_storm(secs, &sets, &others)?;
    }
    if part.as_deref().is_some_and(|p| p != "scrape" && p != "parts") {
        return Ok(());
    }

    // ---- what bounds it: the parts of sched_switch, each alone, in a storm of their own
    // Cgroup storage (one of the parts) needs Linux 6.2: older kernels get the rest of the table.
    let loaded = runs_part("parts")
        .then(|| {
            load_parts()
                .map_err(|e| println!("What bounds sched_switch: not measured, the parts did not load: {e:#}\n"))
                .ok()
        })
        .flatten();
    if let Some((parts, links)) = loaded {
        let mut a = stats(&sets, &others)?;
        add_progs(&mut a, "parts", &parts)?;
        storm(&["stress-ng", "--switch", "2", "--timeout", &format!("{secs}s"), "--quiet"])?;
        let mut b = stats(&sets, &others)?;
        add_progs(&mut b, "parts", &parts)?;
        drop(links);
        let d = per_run(&a, &b);
        let ns = |set: &'static str, name: &str| d.get(&(set, name.to_string())).map_or(f64::NAN, |x| x.1);
        let floor = ns("floor", "sched_switch");
        println!("What bounds sched_switch: each part alone as a program on sched_switch, ns/run above the empty floor ({floor:.1} ns), same storm (stress-ng --switch 2)");
        for p in PARTS {
            println!("  {p:<28} {:>+7.1}", ns("parts", p) - floor);
        }
        println!(
            "  {:<28} {:>+7.1}   (clock, one or two storage lookups, search, in one program)",
            "ksense sched_switch (off)",
            ns("off", "sched_switch") - floor
        );
        println!(
            "  {:<28} {:>+7.1}   (the same with a cgroup id and its slot, cached in the task's storage, per recorded wait)",
            "ksense sched_switch (on)",
            ns("on", "sched_switch") - floor
        );
        println!("  {:<28} {:>+7.1}", "hash baseline sched_switch", ns("hash", "sched_switch") - floor);
        // What a design that reads the monotonic clock at each event pays at least (ksense reads
        // the scheduler's own clock where it can: bpf/sched.bpf.c `clock_of`).
        let runs = |name: &str| d.get(&("hash", name.to_string())).map_or(0.0, |x| x.0 as f64);
        let clock = ns("parts", PARTS[0]) - floor;
        let (mut least, mut hash, mut off) = (0.0, 0.0, 0.0);
        for name in SCHED.into_iter().filter(|n| runs(n) > 0.0) {
            least += (ns("floor", name) + clock) * runs(name);
            hash += ns("hash", name) * runs(name);
            // A program the default does not attach (the wakeups', with sched_info) costs nothing.
            off += d.get(&("off", name.to_string())).map_or(0.0, |x| x.1) * runs(name);
        }
        println!("  whole path / hash baseline in this storm: ksense (off) {:.2}x; the floor plus one bpf_ktime_get_ns() per event, and nothing else, would be {:.2}x", off / hash, least / hash);
        println!();
    }
    if part.as_deref() == Some("parts") {
        return Ok(());
    }

    // ---- user-space CPU, idle and under the storm (default 1 s interval, no scrapes)
    let window = Duration::from_secs(secs);
    let pids = [("on", on.child.0.id()), ("off", off.child.0.id())];
    let c0: Vec<Sched> = pids.iter().map(|(_, p)| Sched::of(*p)).collect();
    std::thread::sleep(window);
    let idle: Vec<f64> =
        pids.iter().zip(&c0).map(|((_, p), c)| Sched::of(*p).since(c).0 as f64 / window.as_nanos() as f64).collect();
    let c0: Vec<Sched> = pids.iter().map(|(_, p)| Sched::of(*p)).collect();
    let t = Instant::now();
    storm(&["stress-ng", "--switch", "2", "--timeout", &format!("{secs}s"), "--quiet"])?;
    let busy: Vec<f64> = pids
        .iter()
        .zip(&c0)
        .map(|((_, p), c)| Sched::of(*p).since(c).0 as f64 / t.elapsed().as_nanos() as f64)
        .collect();
    println!("user-space CPU of the ksense process (all threads, 1 s model interval, not scraped), % of one core");
    println!("  {:<12} {:>8} {:>8}", "", "on", "off");
    println!("  {:<12} {:>8.3} {:>8.3}   (target <= 0.5 %)", "idle", idle[0] * 100.0, idle[1] * 100.0);
    println!("  {:<12} {:>8.3} {:>8.3}", "under storm", busy[0] * 100.0, busy[1] * 100.0);
    println!();

    // ---- scrape latency and size: node-wide, then with WORKLOADS workloads
    let n = 500;
    let (lat, bytes, _) = scrape_stats(&off.url, n)?;
    println!("/metrics (text format; {n} scrapes back to back, unless said)");
    println!(
        "  node-wide (off):        p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {bytes} bytes   (target p99 <= 5 ms)",
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    let workloads = Workloads::start(WORKLOADS)?;
    // Let every sleeper wait in the run queue at least once and the ids resolve.
    let t = Instant::now();
    let exported = loop {
        std::thread::sleep(Duration::from_millis(500));
        let body = get(&on.url)?.1;
        let n = body
            .lines()
            .filter(|l| {
                l.starts_with("ksense_workload_runqueue_latency_seconds_count{")
                    && l.contains(&format!("ksense-bench-{}", std::process::id()))
            })
            .count();
        if n >= WORKLOADS || t.elapsed() > Duration::from_secs(30) {
            break n;
        }
    };
    // What the model's interval costs with that many workloads, before any scrape: the
    // victims feed reads every per-workload map, the tracker and each workload's cpu.stat.
    let c0: Vec<Sched> = pids.iter().map(|(_, p)| Sched::of(*p)).collect();
    let t = Instant::now();
    std::thread::sleep(window);
    let with_workloads: Vec<f64> = pids
        .iter()
        .zip(&c0)
        .map(|((_, p), c)| Sched::of(*p).since(c).0 as f64 / t.elapsed().as_nanos() as f64)
        .collect();
    // Its CPU per scrape too: latency on this shared 2-CPU host is mostly who else ran.
    let (cpu0, t) = (Sched::of(pids[0].1), Instant::now());
    let (lat, bytes, body) = scrape_stats(&on.url, n)?;
    let per_scrape = Sched::of(pids[0].1).since(&cpu0).0 as f64 - with_workloads[0] * t.elapsed().as_nanos() as f64;
    let series = body.lines().filter(|l| l.starts_with("ksense_workload_runqueue_latency_seconds_count{")).count();
    println!(
        "  {WORKLOADS} workloads (on):       p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.2} ms of CPU per scrape, {bytes} bytes, {series} workload series ({exported} of the bench's)   (target p99 <= 2 ms)",
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        per_scrape / n as f64 / 1e6
    );
    // The encoder alone on that text: the shipped level, and the default one.
    let served = ksense::exporters::http::GZIP_LEVEL;
    let (fast, default) = (gzip_time(&body, served), gzip_time(&body, flate2::Compression::default()));
    println!(
        "  gzip of that text alone: level {} (served) {:.3} ms, {:.1}x smaller; default level {:.3} ms, {:.1}x smaller",
        served.level(),
        fast.0 * 1e3,
        bytes as f64 / fast.1 as f64,
        default.0 * 1e3,
        bytes as f64 / default.1 as f64
    );
    // Plain and gzipped (as Prometheus asks), alternating, each on a new
    // connection so that the two differ only in the encoding; ksense's CPU
    // is told apart by the time each kind took (its threads' CPU over both).
    let (mut raw, mut gz, mut gz_bytes) = (Vec::with_capacity(n), Vec::with_capacity(n), 0);
    let (mut k_raw, mut k_gz) = (0u64, 0u64);
    for _ in 0..n {
        let k0 = Sched::of(pids[0].1);
        raw.push(get_raw(&on.url, false)?.0);
        let k1 = Sched::of(pids[0].1);
        let (d, b) = get_raw(&on.url, true)?;
        k_raw += k1.since(&k0).0;
        k_gz += Sched::of(pids[0].1).since(&k1).0;
        gz.push(d);
        gz_bytes = b;
    }
    // Less the model's own work meanwhile, at its rate without scrapes.
    let own = |k: u64, v: &[Duration]| k as f64 - with_workloads[0] * v.iter().sum::<Duration>().as_nanos() as f64;
    let (k_raw, k_gz) = (own(k_raw, &raw), own(k_gz, &gz));
    raw.sort();
    gz.sort();
    for (name, v, k, wire) in [("plain", &raw, k_raw, bytes), ("gzip ", &gz, k_gz, gz_bytes)] {
        println!(
            "  {WORKLOADS} workloads (on), {name}, new connection each: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.2} ms of CPU per scrape, {wire} bytes on the wire",
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.99)),
            ms(*v.last().unwrap()),
            k / n as f64 / 1e6
        );
    }
    println!("    gzip: {:.1}x fewer bytes", bytes as f64 / gz_bytes.max(1) as f64);
    // Prometheus scrapes seconds apart: by then every workload waited again
    // and other processes have had the caches, so each scrape is a cold one.
    // With ksense's CPU time during each, and the time it and this client
    // waited for a CPU (run-queue waits, from schedstat): work or waiting.
    // Three kinds of scrape alternate: this client's (a reused connection,
    // plain text), and plain and gzipped ones (what Prometheus asks for) on a
    // new connection each, so that those two differ only in the encoding.
    let (mut spaced, mut work, mut queued) = (Vec::new(), Vec::new(), Vec::new());
    let (mut spaced_raw, mut spaced_gz) = (Vec::new(), Vec::new());
    for i in 0..3 * SPACED_SCRAPES {
        std::thread::sleep(SPACED_GAP);
        if i % 3 > 0 {
            let gzip = i % 3 == 2;
            let d = get_raw(&on.url, gzip)?.0;
            if gzip { &mut spaced_gz } else { &mut spaced_raw }.push(d);
            continue;
        }
        let (k0, m0) = (Sched::of(pids[0].1), Sched::read("/proc/self/task"));
        let d = get(&on.url)?.0;
        let (k, m) = (Sched::of(pids[0].1).since(&k0), Sched::read("/proc/self/task").since(&m0));
        spaced.push(d);
        work.push(Duration::from_nanos(k.0));
        queued.push(Duration::from_nanos(k.1 + m.1));
    }
    for v in [&mut spaced, &mut work, &mut queued, &mut spaced_raw, &mut spaced_gz] {
        v.sort();
    }
    println!(
        "  {WORKLOADS} workloads (on, each waking every {} ms), {SPACED_SCRAPES} scrapes {} ms apart: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   (target p99 <= 2 ms)",
        sleeper_ms(),
        SPACED_GAP.as_millis(),
        ms(quantile(&spaced, 0.5)),
        ms(quantile(&spaced, 0.99)),
        ms(*spaced.last().unwrap())
    );
    println!(
        "    during each: ksense's CPU p50 {:.2} ms, p99 {:.2} ms; run-queue waits of ksense's threads and this client's (may overlap) p50 {:.2} ms, p99 {:.2} ms",
        ms(quantile(&work, 0.5)),
        ms(quantile(&work, 0.99)),
        ms(quantile(&queued, 0.5)),
        ms(quantile(&queued, 0.99))
    );
    for (name, v) in [("plain", &spaced_raw), ("gzip ", &spaced_gz)] {
        println!(
            "    between them, {SPACED_SCRAPES} more {name} on a new connection each: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    drop(workloads);
    println!(
        "  user-space CPU with the {WORKLOADS} workloads, not scraped: on {:.3} %, off {:.3} % of one core (on idle without them: {:.3} %); on: {:.2} ms per 1 s model interval",
        with_workloads[0] * 100.0,
        with_workloads[1] * 100.0,
        idle[0] * 100.0,
        with_workloads[0] * 1000.0
    );
    println!(
        "  first full scrape after start: on {:.0} ms, off {:.0} ms   (target <= 1000 ms)",
        ms(on.first_scrape),
        ms(off.first_scrape)
    );
    println!();

    // ---- memory
    println!("memory");
    for (name, pid) in pids {
        let (map_bytes, maps) = bpf_map_bytes(pid);
        println!(
            "  {name:<4} peak RSS {:.1} MiB (VmHWM), now {:.1} MiB   (target <= 30 MiB); BPF maps {:.1} KiB in {maps} maps (kernel memlock accounting)",
            status_kib(pid, "VmHWM:") as f64 / 1024.0,
            status_kib(pid, "VmRSS:") as f64 / 1024.0,
            map_bytes as f64 / 1024.0
        );
    }
    Ok(())
}

/// A network namespace of the bench's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Netns> {
        let ns = Netns(format!("ksense-bench-{}", std::process::id()));
        storm(&["ip", "netns", "add", &ns.0])?;
        storm(&["ip", "netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cmd(&self, argv: &[&str]) -> Vec<String> {
        ["ip", "netns", "exec", &self.0].iter().chain(argv).map(|s| s.to_string()).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// nginx serving a 1 KiB page on 127.0.0.1:8080 in a namespace, stopped on drop.
struct Nginx {
    _child: Terminated,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `workers` worker processes; `http` more directives of the http block.
    fn start(ns: &Netns, workers: u32, http: &str) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("html"))?;
        std::fs::write(dir.path().join("html/index.html"), "x".repeat(1024))?;
        let conf = format!(
            "worker_processes {workers}; pid {d}/nginx.pid; error_log {d}/error.log warn; daemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
             uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; keepalive_requests 10000000; {http}\n\
             server {{ listen 127.0.0.1:8080; root {d}/html; }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let argv = ns.cmd(&["nginx", "-c", &format!("{d}/nginx.conf"), "-p", &d]);
        let child = Command::new(&argv[0]).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let nginx = Nginx { _child: Terminated(child), _dir: dir };
        let t = Instant::now();
        while Command::new("ip")
            .args(["netns", "exec", &ns.0, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"])
            .stderr(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(10), "nginx did not listen in the bench's namespace");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

/// `wrk -t 2 -c <conns>` for `secs` against the namespace's nginx, as argv.
fn wrk(ns: &Netns, conns: u32, secs: u64) -> Vec<String> {
    ns.cmd(&["wrk", "-t", "2", "-c", &conns.to_string(), "-d", &format!("{secs}s"), "http://127.0.0.1:8080/"])
}

/// Every set's ns/run over one run of `argv`.
fn measure(argv: &[String], sets: &[(&'static str, &str)], others: &Others) -> anyhow::Result<PerRun> {
    let a = stats(sets, others)?;
    storm(&argv.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(per_run(&a, &stats(sets, others)?))
}

/// The table of a network storm: each of `names`' runs (on), ns/run on, off
/// and empty, and the CPU they take together; `also` are rows printed after
/// them without a target and outside the total.
fn storm_table(d: &PerRun, names: &[&str], also: &[&str], secs: u64) {
    println!(
        "  {:<19} {:>11} {:>9} {:>7} {:>7} {:>7} {:>9} {:>10}  target",
        "program", "runs", "runs/s", "on", "off", "floor", "on/floor", "off/floor"
    );
    let mut total = 0.0;
    for (i, name) in names.iter().chain(also).enumerate() {
        let get = |s: &'static str, n: &str| d.get(&(s, n.to_string())).copied().unwrap_or((0, f64::NAN));
        // The floor is the empty program on the same tracepoint.
        let tp = ksense::probes::hooks().find(|h| h.name == *name).map_or(*name, |h| h.tracepoint);
        let ((runs, k_on), (off_runs, k_off), (_, f)) = (get("on", name), get("off", name), get("floor", tp));
        let target = if i < names.len() {
            total += k_off * off_runs as f64;
            "<= 3.0x floor"
        } else {
            ""
        };
        println!(
            "  {name:<19} {runs:>11} {:>9.0} {k_on:>7.1} {k_off:>7.1} {f:>7.1} {:>8.2}x {:>9.2}x  {target}",
            runs as f64 / secs as f64,
            k_on / f,
            k_off / f
        );
    }
    println!(
        "  the {} programs together (off): {:.2} ms of CPU per second of this storm, {:.3} % of one core",
        names.len(),
        total / secs as f64 / 1e6,
        total / secs as f64 / 1e7
    );
    println!();
}

/// The network family's programs under wrk against nginx on a namespace's
/// loopback, NET_LOSS of the requests' segments dropped (so that
/// retransmissions and drops happen too), next to the empty floor.
fn net_storm(secs: u64, sets: &[(&'static str, &str)], others: &Others) -> anyhow::Result<()> {
    let ns = Netns::new()?;
    let iptables = ns.cmd(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "8080",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        NET_LOSS,
        "-j",
        "DROP",
    ]);
    storm(&iptables.iter().map(String::as_str).collect::<Vec<_>>())?;
    let nginx = Nginx::start(&ns, 1, "")?;
    let d = measure(&wrk(&ns, 64, secs), sets, others)?;
    drop(nginx);
    println!("BPF ns/run under `wrk -t 2 -c 64 -d {secs}s` against nginx on a namespace's 127.0.0.1, {NET_LOSS} of the requests' segments dropped (iptables)");
    // The requests family's program on tcp_retransmit_skb runs only here, where segments are retransmitted.
    storm_table(&d, &NET, &[&SOFTIRQ[..], &[RETRANSMIT_PROGRAM]].concat(), secs);
    Ok(())
}

/// From a thread of its own in the namespace: `per_sec` times a second for
/// `window`, a connection that sends one request, reads the reply and closes.
/// Returns how many were made.
fn churn(ns: &Netns, per_sec: u32, window: Duration) -> anyhow::Result<u32> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{}", ns.0))?;
    // SAFETY: setns on an open namespace file; it moves only this thread.
    anyhow::ensure!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } == 0,
        "setns: {}",
        std::io::Error::last_os_error()
    );
    let t = Instant::now();
    let mut n = 0;
    let mut reply = Vec::new();
    while t.elapsed() < window {
        let mut c = std::net::TcpStream::connect("127.0.0.1:8080")?;
        c.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        reply.clear();
        c.read_to_end(&mut reply)?;
        n += 1;
        if let Some(wait) = (Duration::from_secs(1) * n / per_sec).checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(n)
}

/// The requests family's programs under keep-alive wrk against nginx (two
/// workers, sendfile) on a namespace's loopback, with CHURN_PER_SEC short
/// connections beside it so that inet_sock_set_state runs, next to the floor.
fn requests_storm(secs: u64, sets: &[(&'static str, &str)], others: &Others) -> anyhow::Result<()> {
    let ns = Netns::new()?;
    let nginx = Nginx::start(&ns, 2, "sendfile on;")?;
    // The fallback of kernels before 6.3, in this process: ksense's probes attached
    // as if the socket-call tracepoints were missing, beside the floor on sys_exit.
    let mut support = kernel::probe();
    support.missing_tracepoints.extend(["sock_recv_length", "sock_send_length"]);
    let others_off: Vec<&str> =
        ksense::probes::program_names().filter(|n| !REQUESTS.contains(n) && *n != SYSCALL_FALLBACK).collect();
    let fallback = Probes::attach(AttachMode::choose(None, &support)?, &support, &others_off)?;
    let (sys_floor, sys_link) = load_sys_exit_floor()?;
    let fallback_stats = || -> anyhow::Result<Vec<(&'static str, ProgStats)>> {
        let mut v: Vec<_> = fallback.program_stats()?.into_iter().map(|(n, _, st)| (n, st)).collect();
        v.push(("floor", prog_stats(&sys_floor)?));
        Ok(v)
    };
    let f0 = fallback_stats()?;
    let (d, short) = std::thread::scope(|s| {
        let short = s.spawn(|| churn(&ns, CHURN_PER_SEC, Duration::from_secs(secs)));
        let d = measure(&wrk(&ns, 32, secs), sets, others);
        (d, short.join().map_err(|_| anyhow::anyhow!("the short connections' thread panicked")))
    });
    let f1 = fallback_stats()?;
    drop((sys_link, fallback));
    drop(nginx);
    let (d, short) = (d?, short??);
    println!("BPF ns/run under `wrk -t 2 -c 32 -d {secs}s` (keep-alive) against nginx (2 workers, sendfile on) on a namespace's 127.0.0.1, and {short} short connections (connect, one request, close) beside it");
    storm_table(&d, &REQUESTS, &[], secs);
    let per = |name: &str| {
        let (a, b) = (f0.iter().find(|x| x.0 == name), f1.iter().find(|x| x.0 == name));
        a.zip(b).map_or((0, f64::NAN), |((_, a), (_, b))| {
            let runs = b.run_cnt - a.run_cnt;
            (runs, (b.run_time_ns - a.run_time_ns) as f64 / runs.max(1) as f64)
        })
    };
    let ((runs, ns_run), (_, fl)) = (per(SYSCALL_FALLBACK), per("floor"));
    let cpu: f64 = f1
        .iter()
        .zip(&f0)
        .filter(|(b, _)| b.0 != "floor")
        .map(|(b, a)| (b.1.run_time_ns - a.1.run_time_ns) as f64)
        .sum();
    println!(
        "  fallback before 6.3 (the requests family with {SYSCALL_FALLBACK} instead of sock_*_length): {SYSCALL_FALLBACK} {runs} runs ({:.0}/s, every system call on the node), {ns_run:.1} ns/run, floor {fl:.1} ({:.2}x); the family's programs together {:.2} ms of CPU per second",
        runs as f64 / secs as f64,
        ns_run / fl,
        cpu / secs as f64 / 1e6
    );
    println!();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
