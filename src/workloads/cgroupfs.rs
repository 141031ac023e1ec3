//! The cgroup v2 hierarchy as user space sees it: where it is mounted, and
//! which directory a cgroup id names. The id the BPF programs record is the
//! kernfs node id, which is the inode number of the cgroup's directory in the
//! v2 hierarchy, so a walk reading `d_ino` of each directory maps ids to
//! paths without a stat per cgroup. Cgroups come and go during a walk: a
//! directory that vanished is skipped, never an error.

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::signals::ids::IdMap;

/// The v2 mount: `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified`
/// on a hybrid one, else the first cgroup2 mount in /proc/self/mountinfo.
pub fn find_v2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    v2_root_in(&info)
}

fn v2_root_in(mountinfo: &str) -> Option<PathBuf> {
    // 36 35 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| {
            // The root field is not checked: in a container with its own cgroup
            // namespace the host's tree bind-mounted in shows as `/../..`.
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2").then_some(left.split(' ').nth(4)?)
        })
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find(|p| mounts.contains(p))
        .or(mounts.first())
        .map(|p| PathBuf::from(unescape(p)))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every cgroup below `root`: id -> path relative to the root (`/` for the
/// root itself, `/a/b` below it). Directories that disappear mid-walk, or
/// cannot be read, are left out.
pub fn walk(root: &Path) -> IdMap<String> {
    let mut out = IdMap::default();
    let Ok(meta) = std::fs::metadata(root) else { return out };
    out.insert(meta.ino(), "/".to_string());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue }; // ENOENT: removed meanwhile
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let Ok(name) = e.file_name().into_string() else { continue };
            let path = format!("{rel}/{name}");
            out.insert(e.ino(), path.clone());
            stack.push((e.path(), path));
        }
    }
    out
}

/// Whether the cgroup at `rel` (relative to `root`) is still the one with `id`.
pub fn is_alive(root: &Path, rel: &str, id: u64) -> bool {
    let p = if rel == "/" { root.to_path_buf() } else { root.join(rel.trim_start_matches('/')) };
    std::fs::symlink_metadata(p).map(|m| m.ino() == id).unwrap_or(false)
}

/// `cpu.stat` of the cgroup at `rel` below `root`.
fn cpu_stat_path(root: &Path, rel: &str) -> PathBuf {
    if rel == "/" {
        root.join("cpu.stat")
    } else {
        root.join(rel.trim_start_matches('/')).join("cpu.stat")
    }
}

/// `usage_usec` of a `cpu.stat` (which cgroup v2 keeps whether or not the
/// cpu controller is enabled), in seconds.
fn usage_seconds(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    let usec: u64 = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
    Some(usec as f64 / 1e6)
}

/// At most this many `cpu.stat` files stay open (the rest are opened for
/// each read), well inside the usual 1024 open files.
pub const CPU_STAT_OPEN_MAX: usize = 256;

/// The CPU time of every exported workload, read each model interval. The
/// files stay open and are re-read from offset 0 (where a seq_file starts
/// over): opening walks the path, which was most of the cost of a read.
#[derive(Debug)]
pub struct CpuStats {
    root: PathBuf,
    open: HashMap<String, std::fs::File>,
    buf: Vec<u8>,
}

impl CpuStats {
    pub fn new(root: PathBuf) -> CpuStats {
        CpuStats { root, open: HashMap::new(), buf: Vec::with_capacity(1024) }
    }

    /// CPU seconds each cgroup of `rels` used since it was made; `None` if
    /// its file is gone or unreadable. Files of cgroups not asked for close.
    pub fn read(&mut self, rels: &[&str]) -> Vec<Option<f64>> {
        let asked: std::collections::HashSet<&str> = rels.iter().copied().collect();
        self.open.retain(|p, _| asked.contains(p.as_str()));
        rels.iter().map(|rel| self.read_one(rel)).collect()
    }

    fn read_one(&mut self, rel: &str) -> Option<f64> {
        if let Some(f) = self.open.get(rel) {
            if read_from_start(f, &mut self.buf).is_ok() {
                return usage_seconds(&self.buf);
            }
            // ENODEV: removed, perhaps re-created under the same path.
            self.open.remove(rel);
        }
        let f = std::fs::File::open(cpu_stat_path(&self.root, rel)).ok()?;
        read_from_start(&f, &mut self.buf).ok()?;
        if self.open.len() < CPU_STAT_OPEN_MAX {
            self.open.insert(rel.to_string(), f);
        }
        usage_seconds(&self.buf)
    }
}

fn read_from_start(f: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        let n = f.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_usage_from_cpu_stat() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\n").unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "user_usec 1\n").unwrap();
        let mut c = CpuStats::new(dir.path().into());
        assert_eq!(c.read(&["/a", "/", "/gone"]), [Some(2.5), None, None], "no usage_usec line in /, no /gone");
        // Kept open and read again from the start: what it says now, not what it said.
        std::fs::write(dir.path().join("a/cpu.stat"), "usage_usec 3000000\n").unwrap();
        assert_eq!(c.read(&["/a"]), [Some(3.0)]);
        assert_eq!(c.open.len(), 1, "the files of / and /gone are not held");
        assert_eq!(c.read(&[]), [], "asked for nothing");
        assert!(c.open.is_empty(), "a workload no longer asked for: its file is closed");
    }

    #[test]
    fn finds_the_v2_mount_on_unified_and_hybrid_hosts() {
        let hybrid = "25 24 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
                      27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(v2_root_in(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_root_in(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        // The host's tree mounted into a container with its own cgroup namespace.
        let container = "40 30 0:26 /../../.. /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_root_in(container), Some(PathBuf::from("/sys/fs/cgroup")));
        let elsewhere = "41 30 0:26 / /host/cg\\040x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_root_in(elsewhere), Some(PathBuf::from("/host/cg x")));
        assert_eq!(v2_root_in("25 24 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn walks_directories_by_inode_and_tolerates_removal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a.slice/b.service")).unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("a.slice/cgroup.procs"), "").unwrap();
        let m = walk(dir.path());
        let ino = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[&ino("a.slice/b.service")], "/a.slice/b.service");
        assert_eq!(m[&ino("c")], "/c");
        assert_eq!(m[&ino(".")], "/");
        assert!(is_alive(dir.path(), "/c", ino("c")));
        assert!(is_alive(dir.path(), "/", ino(".")));
        let c = ino("c");
        std::fs::remove_dir(dir.path().join("c")).unwrap();
        assert!(!is_alive(dir.path(), "/c", c));
        assert!(walk(&dir.path().join("gone")).is_empty());
    }
}
