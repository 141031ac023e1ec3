//! Shared by the integration tests.
#![allow(dead_code)]

pub mod cgroup;
pub mod inproc;
pub mod netns;
pub mod pki;
pub mod prometheus;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The probes attached in-process with attribution on (room for 1,024 cgroups).
pub fn attributed(s: &ksense::probes::kernel::Support) -> ksense::probes::Probes {
    use ksense::probes::{AttachMode, Options, Probes};
    let opts = Options { workload_entries: Some(1024), ..Options::default() };
    Probes::attach_with(AttachMode::choose(None, s).unwrap(), s, &[], opts).unwrap()
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Tests named `root_*` load BPF programs: without root they say so and pass
/// as skipped, except under CI (`CI` set), where a run that lost its
/// privileges must fail rather than go green by skipping.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            if common::in_ci() {
                panic!("{} needs root to load BPF programs, and CI is set: not skipping", module_path!());
            }
            eprintln!("SKIPPED {}: needs root to load BPF programs", module_path!());
            return;
        }
    };
}

/// `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `GET /` answers 200 over plain HTTP.
    Http,
    /// The port accepts connections.
    Listening,
}

/// Attribution on, each scrape reading the kernel's maps at that moment
/// (--workloads.max-age 0s): for tests that compare per-workload counts
/// with a ground truth taken at the scrape. The default's reuse of a read
/// younger than 1 s has its own test (root_attribution).
#[allow(dead_code)] // not every test binary uses it
pub const WORKLOADS_NOW: [&str; 4] = ["--workloads.enabled", "true", "--workloads.max-age", "0s"];

/// A ksense process, killed on drop.
pub struct Ksense {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Ksense {
    pub fn start(extra: &[&str]) -> Ksense {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Ksense {
        Self::start_full(&[], dir, extra, Ready::Http)
    }

    /// With extra environment variables (e.g. OTEL_*).
    pub fn start_with_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Ksense {
        Self::start_full_env(&[], dir, extra, Ready::Http, env)
    }

    /// `cmd` is the command that runs ksense (empty: the built binary; e.g.
    /// setpriv ... /path/to/ksense); `ready` says how to know it serves (TLS
    /// endpoints are only checked for a listening socket).
    pub fn start_full(cmd: &[&str], dir: tempfile::TempDir, extra: &[&str], ready: Ready) -> Ksense {
        Self::start_full_env(cmd, dir, extra, ready, &[])
    }

    pub fn start_full_env(
        cmd: &[&str],
        dir: tempfile::TempDir,
        extra: &[&str],
        ready: Ready,
        env: &[(&str, &str)],
    ) -> Ksense {
        let port = free_port();
        let state = dir.path().join("baseline.json");
        let mut cmd = match cmd.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ksense")),
        };
        let child = cmd
            .args(["--web.listen-address", &format!("127.0.0.1:{port}"), "--model.state-file", state.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ksense");
        let mut k = Ksense { child, port, dir };
        k.wait_ready(ready);
        k
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits for the exit: (status, stderr, time to exit).
    /// The state directory lives on until `self` is dropped.
    pub fn signal(&mut self, sig: i32) -> (std::process::ExitStatus, String, Duration) {
        let t0 = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let st = self.child.wait().unwrap();
        let took = t0.elapsed();
        (st, self.stderr_now(), took)
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("baseline.json")
    }

    fn wait_ready(&mut self, ready: Ready) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            let up = match ready {
                Ready::Http => ureq::get(&self.url("/")).call().is_ok_and(|r| r.status() == 200),
                Ready::Listening => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if up {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("ksense exited early with {st}: {}", self.stderr_now());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ksense did not serve within 20s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn scrape(&self) -> String {
        ureq::get(&self.url("/metrics")).call().unwrap().into_string().unwrap()
    }

    /// Stops the process (SIGTERM) and returns (exit status, stderr).
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        let err = self.stderr_now();
        (st, err)
    }

    pub fn stderr_now(&mut self) -> String {
        let mut out = String::new();
        if let Some(e) = self.child.stderr.take() {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Ksense {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample line `name{labels} value` in text format.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Every series of the text format whose value may never decrease: counters
/// (`_total`) and histogram `_count`, `_sum`, `_bucket`. Keyed by the full
/// series (name and labels).
pub fn monotonic_series(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let name = series.split('{').next().unwrap_or("");
            name.ends_with("_total") || name.ends_with("_count") || name.ends_with("_sum") || name.ends_with("_bucket")
        })
        .filter_map(|(series, v)| v.parse().ok().map(|v| (series.to_string(), v)))
        .collect()
}

/// Threads that sleep and wake constantly: thousands of run-queue events a
/// second, so every interval qualifies for calibration (>= 50 events).
pub struct Load(std::sync::Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Load {
    pub fn start() -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hs = (0..4)
            .map(|_| {
                let s = stop.clone();
                std::thread::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        Load(stop, hs)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in self.1.drain(..) {
            let _ = h.join();
        }
    }
}

/// Writes the page cache's dirty pages out and waits for it, for a test whose
/// premise is an idle node: a build or a fresh root leaves tens to hundreds of MiB
/// that the kernel's flusher would otherwise write during the test, D-state
/// waits and block completions a calibration on a quiet disk never saw.
/// Returns what was dirty or under writeback before, kB, for the test's log.
pub fn settle_writeback() -> u64 {
    let pending = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    pending
}

/// Polls `/metrics` until `series` has value `want` (plain HTTP).
pub fn wait_for(k: &Ksense, series: &str, want: f64, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let text = k.scrape();
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(t0.elapsed() < timeout, "{series} never became {want}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of the counter samples of `family` in a snapshot that have a
/// label with value `label`; 0 when there are none.
pub fn counter(s: &ksense::signals::Snapshot, family: &str, label: &str) -> f64 {
    let f = s.families.iter().find(|f| f.name == family).unwrap_or_else(|| panic!("no family {family}"));
    f.samples
        .iter()
        .filter(|x| x.labels.iter().any(|(_, v)| v == label))
        .map(|x| match x.value {
            ksense::signals::metric::Value::Counter(c) => c,
            _ => panic!("{family} is not a counter"),
        })
        .sum()
}
