//! Per-workload attribution: the BPF programs key histograms and counters
//! by cgroup v2 id (of the task that waited, or of the socket); here the ids
//! become cgroup paths, the paths become labels (pod, container, unit), and
//! the set of series is bounded (filter, cap with an `other` fold, removal of
//! cgroups that are gone).

pub mod cgroupfs;
mod families;
pub mod labels;
pub mod tracker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::probes::WorkloadMaps;
use crate::signals::ids::IdMap;
use crate::signals::metric::{Collector, Family};
use labels::{KubeletLogs, Labels};
use tracker::{Filter, Lookup, Resolver, Tracker};
pub use tracker::{Record, Series, View};

/// A walk of the cgroup tree at most this often, however many unknown ids show up.
pub const MIN_WALK_INTERVAL: Duration = Duration::from_secs(1);
/// The kubelet log directories are re-read at most this often.
pub const KUBELET_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Without scrapes, the maps are still read this often, so that the entries
/// of cgroups that are gone are deleted and the ranking keeps its pace.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Config {
    pub enabled: bool,
    /// Workloads exported with series of their own; the rest fold into `other`.
    pub max: usize,
    /// Room for this many cgroups in each BPF map.
    pub map_entries: u32,
    pub include: Option<String>,
    pub exclude: Option<String>,
    /// The v2 hierarchy; None: found in /proc/self/mountinfo.
    pub cgroup_root: Option<PathBuf>,
    /// Where kubelet keeps `pods/` and `containers/` log directories.
    pub kubelet_log_dir: PathBuf,
    /// A scrape serves the last read of the maps when it is younger than
    /// this, rather than reading them again: with attribution on, the model
    /// reads them at every interval (1 s by default) for the victims, and a
    /// scrape of 200 workloads that reuses its read takes about 30 % less
    /// CPU (bench/README.md, "Scrape: the model's read served again").
    /// Twice that interval by default: with exactly one interval, a scrape
    /// that came the few ms a read ran late read the maps again (the
    /// scrapes' CPU p99, bench/README.md). Zero: a read at every scrape.
    pub max_age: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enabled: false,
            max: 100,
            map_entries: 1024,
            include: None,
            exclude: None,
            cgroup_root: None,
            kubelet_log_dir: "/var/log".into(),
            max_age: Duration::from_secs(2),
        }
    }
}

/// The cgroup tree and kubelet's log directories, behind the tracker's [`Resolver`].
#[derive(Debug)]
pub struct Cgroups {
    root: Option<PathBuf>,
    paths: IdMap<String>,
    walked_at: Option<Instant>,
    kubelet: KubeletLogs,
    kubelet_at: Option<Instant>,
}

impl Cgroups {
    pub fn new(root: Option<PathBuf>, kubelet_log_dir: &std::path::Path) -> Cgroups {
        Cgroups {
            root,
            paths: IdMap::default(),
            walked_at: None,
            kubelet: KubeletLogs::new(kubelet_log_dir),
            kubelet_at: None,
        }
    }
}

impl Resolver for Cgroups {
    fn lookup(&mut self, id: u64, since: Instant, now: Instant) -> Lookup {
        if let Some(p) = self.paths.get(&id) {
            return Lookup::Found(p.clone());
        }
        if self.walked_at.is_some_and(|w| w >= since) {
            return Lookup::Missing;
        }
        if self.walked_at.is_some_and(|w| now.saturating_duration_since(w) < MIN_WALK_INTERVAL) {
            return Lookup::Pending;
        }
        let Some(root) = &self.root else { return Lookup::Missing };
        let t0 = Instant::now();
        self.paths = cgroupfs::walk(root);
        self.walked_at = Some(now);
        tracing::debug!(cgroups = self.paths.len(), micros = t0.elapsed().as_micros() as u64, "walked the cgroup tree");
        self.paths.get(&id).map_or(Lookup::Missing, |p| Lookup::Found(p.clone()))
    }

    fn alive(&mut self, id: u64, path: &str) -> bool {
        self.root.as_deref().is_some_and(|r| cgroupfs::is_alive(r, path, id))
    }

    fn labels(&mut self, path: &str, now: Instant) -> Labels {
        let mut l = labels::parse(path);
        if l.wants_names() {
            if self.kubelet_at.is_none_or(|t| now.saturating_duration_since(t) >= KUBELET_RELOAD_INTERVAL) {
                self.kubelet.reload();
                self.kubelet_at = Some(now);
            }
            self.kubelet.name(&mut l);
        }
        l
    }
}

/// The per-workload maps and what has been made of them so far.
#[derive(Debug)]
pub struct Workloads {
    maps: WorkloadMaps,
    /// The tracker, the cgroup tree, and the buffer the maps are read into.
    state: Mutex<(Tracker, Cgroups, Vec<u8>)>,
    cpu: Option<Mutex<cgroupfs::CpuStats>>,
    /// The last view and when its maps were read.
    last: Mutex<Option<(Instant, Arc<View>)>>,
    max_age: Duration,
}

impl Workloads {
    pub fn new(maps: WorkloadMaps, cfg: &Config) -> Result<Workloads, String> {
        let filter = Filter::new(cfg.include.as_deref(), cfg.exclude.as_deref())?;
        let root = cfg.cgroup_root.clone().or_else(cgroupfs::find_v2_root);
        match &root {
            Some(r) => {
                tracing::info!(cgroup_root = %r.display(), max = cfg.max, map_entries = maps.entries, "per-workload attribution on")
            }
            None => tracing::warn!("no cgroup v2 hierarchy mounted: every workload folds into workload=\"other\""),
        }
        Ok(Workloads {
            maps,
            state: Mutex::new((
                Tracker::new(cfg.max, filter),
                Cgroups::new(root.clone(), &cfg.kubelet_log_dir),
                Vec::new(),
            )),
            cpu: root.map(|r| Mutex::new(cgroupfs::CpuStats::new(r))),
            last: Mutex::new(None),
            max_age: cfg.max_age,
        })
    }

    /// CPU seconds each workload of `paths` used so far (its cgroup's `cpu.stat`).
    pub fn cpu_seconds(&self, paths: &[&str]) -> Vec<Option<f64>> {
        match &self.cpu {
            Some(c) => c.lock().unwrap_or_else(|p| p.into_inner()).read(paths),
            None => vec![None; paths.len()],
        }
    }

    /// Which map (its index in each [`Record`]) serves `family` with `label`.
    pub fn map_index(&self, family: &str, label: Option<(&str, &str)>) -> Option<usize> {
        self.maps.maps.iter().position(|m| m.family.family == family && m.family.label == label)
    }

    /// Reads the maps, updates the series, deletes the entries of cgroups
    /// that are gone. Safe to call from several threads: one at a time.
    pub fn refresh(&self) -> std::io::Result<Arc<View>> {
        self.read_unless_within(None)
    }

    /// The last view if its maps were read less than `age` ago, else a new one.
    pub fn within(&self, age: Duration) -> std::io::Result<Arc<View>> {
        match self.last_within(age) {
            Some(view) => Ok(view),
            None => self.read_unless_within(Some(age)),
        }
    }

    fn last_within(&self, age: Duration) -> Option<Arc<View>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().filter(|(at, _)| at.elapsed() < age).map(|(_, view)| view.clone())
    }

    /// A read of the maps, unless one younger than `age` is there once the
    /// lock is held: two scrapes that found the view stale at once read once.
    fn read_unless_within(&self, age: Option<Duration>) -> std::io::Result<Arc<View>> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = age.and_then(|a| self.last_within(a)) {
            return Ok(view);
        }
        let (tracker, cgroups, buf) = &mut *guard;
        // Dropped first: a view still held would make the tracker copy each series it changes.
        drop(self.last.lock().unwrap_or_else(|p| p.into_inner()).take());
        let now = Instant::now();
        // Read under the lock: two interleaved refreshes would count a deleted entry twice.
        let reads = self.maps.maps.iter().map(|m| m.read_all(buf)).collect::<Result<Vec<_>, _>>()?;
        for id in tracker.update(now, reads, cgroups) {
            for m in &self.maps.maps {
                m.delete(id)?;
            }
        }
        let view = Arc::new(tracker.view());
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, view.clone()));
        Ok(view)
    }
}

impl Collector for Workloads {
    /// A failed read costs the per-workload series of this scrape, never the scrape.
    fn collect(&self, out: &mut Vec<Family>) -> std::io::Result<()> {
        match self.within(self.max_age) {
            Ok(view) => {
                let fams: Vec<_> = self.maps.maps.iter().map(|m| m.family).collect();
                out.extend(families::families(&view, &fams))
            }
            Err(e) => tracing::warn!(error = %e, "reading the per-workload maps failed"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workloads(max_age: Duration) -> Workloads {
        let cfg = Config { max_age, cgroup_root: Some("/nonexistent".into()), ..Config::default() };
        Workloads::new(WorkloadMaps { maps: Vec::new(), entries: 1 }, &cfg).unwrap()
    }

    #[test]
    fn a_view_younger_than_the_age_is_served_again_and_refresh_always_reads() {
        let w = workloads(Duration::from_secs(3600));
        let a = w.within(Duration::from_secs(3600)).unwrap();
        assert!(Arc::ptr_eq(&a, &w.within(Duration::from_secs(3600)).unwrap()));
        assert!(!Arc::ptr_eq(&a, &w.within(Duration::ZERO).unwrap()), "0: a read every time");
        assert!(!Arc::ptr_eq(&a, &w.refresh().unwrap()));
    }

    /// Scrapes that find the view stale at the same moment wait for one read
    /// and serve it, instead of each reading the maps in turn.
    #[test]
    fn concurrent_stale_callers_share_one_read() {
        let w = Arc::new(workloads(Duration::from_secs(3600)));
        for _ in 0..20 {
            // Stale for everyone: the next callers must read.
            drop(w.last.lock().unwrap().take());
            let held = w.state.lock().unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(5));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (w, b) = (w.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        w.within(Duration::from_secs(3600)).unwrap()
                    })
                })
                .collect();
            barrier.wait();
            // Every caller has found no view and queued on the lock by now (most likely);
            // either way each must get the same view.
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
            let views: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert!(views.iter().all(|v| Arc::ptr_eq(v, &views[0])), "more than one read");
        }
    }
}
