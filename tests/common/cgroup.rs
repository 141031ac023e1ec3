//! Cgroups made by a test under the v2 hierarchy, and the per-workload
//! series a scrape has for them.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ksense::workloads::cgroupfs;

/// A cgroup made by the test (with its parents, if made here too), its
/// processes killed and the directories removed on drop, failure or not.
pub struct Cgroup {
    /// Relative to the v2 root, e.g. `/ksense-test-123-a`.
    pub rel: String,
    pub path: PathBuf,
    made: Vec<PathBuf>,
    pub children: Vec<Child>,
}

pub fn v2_root() -> PathBuf {
    cgroupfs::find_v2_root().expect("a cgroup v2 hierarchy (unified or hybrid)")
}

impl Cgroup {
    pub fn new(rel: &str) -> Cgroup {
        let root = v2_root();
        let mut made = Vec::new();
        let mut p = root.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            p.push(c);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                made.push(p.clone());
            }
        }
        Cgroup { rel: rel.to_string(), path: p, made, children: Vec::new() }
    }

    /// Runs `argv` inside this cgroup, pinned to `cpu` if given. The child
    /// moves itself (writes 0 to cgroup.procs) before exec, so none of its
    /// waits after exec land anywhere else.
    pub fn spawn(&mut self, cpu: Option<usize>, argv: &[&str]) -> u32 {
        let procs = CString::new(self.path.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (open, write, close, sched_setaffinity) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(c) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(c, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning a process into a cgroup");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Waits for every process spawned here to exit; panics if one failed.
    pub fn wait_all(&mut self) {
        for mut c in self.children.drain(..) {
            let st = c.wait().unwrap();
            assert!(st.success(), "a process in {} exited with {st}", self.rel);
        }
    }

    /// A child process that moves into this cgroup and then leaves itself in
    /// D state for `ms` (a vfork child sleeping: vfork waits killable, which counts).
    #[allow(deprecated)] // libc::vfork: the child only sleeps and exits, which is safe
    pub fn dstate(&self, ms: u64) {
        let procs = CString::new(self.path.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        let ts = libc::timespec { tv_sec: 0, tv_nsec: (ms * 1_000_000) as i64 };
        // SAFETY: after fork the child makes only async-signal-safe calls (open,
        // write, close, vfork, nanosleep, waitpid, _exit).
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(1);
                }
                libc::close(fd);
                let v = libc::vfork();
                if v == 0 {
                    libc::nanosleep(&ts, std::ptr::null_mut());
                    libc::_exit(0);
                }
                let mut st = 0;
                libc::waitpid(v, &mut st, 0);
                libc::_exit(0);
            }
            assert!(pid > 0, "fork failed");
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "the D-state child failed: {st}");
        }
    }

    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for dir in self.made.iter().rev() {
            // Processes the test did not spawn itself (grandchildren): kill them too.
            let t0 = Instant::now();
            loop {
                if let Ok(pids) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in pids.lines().filter_map(|l| l.parse::<i32>().ok()) {
                        // SAFETY: signalling a process in a cgroup this test made.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                // rmdir fails with EBUSY while exiting tasks are still in it.
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() || t0.elapsed() > Duration::from_secs(5) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn test_prefix() -> String {
    format!("ksense-test-{}", std::process::id())
}

/// `name{...workload="<rel>"...}` value, for the series of one workload.
pub fn wl(text: &str, name: &str, rel: &str) -> Option<f64> {
    let needle = format!("workload=\"{rel}\"");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, v) = rest.split_once("} ")?;
        labels.split(',').any(|kv| kv == needle).then(|| v.trim().parse().ok())?
    })
}
