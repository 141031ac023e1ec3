//! Shared by the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// Tests named `root_*` load BPF programs: without root they say so and pass
/// as skipped; CI runs as root and runs them all.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIPPED {}: needs root to load BPF programs", module_path!());
            return;
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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
        Self::start_with_env(dir, extra, &[])
    }

    /// With extra environment variables (e.g. OTEL_*).
    pub fn start_with_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Ksense {
        let port = free_port();
        let state = dir.path().join("baseline.json");
        let child = Command::new(env!("CARGO_BIN_EXE_ksense"))
            .args(["--web.listen-address", &format!("127.0.0.1:{port}"), "--model.state-file", state.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ksense");
        let mut k = Ksense { child, port, dir };
        k.wait_ready();
        k
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("baseline.json")
    }

    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(r) = ureq::get(&self.url("/")).call() {
                if r.status() == 200 {
                    return;
                }
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

    fn stderr_now(&mut self) -> String {
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
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}
