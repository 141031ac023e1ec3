//! From per-cgroup kernel histograms to a bounded set of series: deltas,
//! ranking, the cap and the `other` fold, removal of cgroups that are gone.
//! Pure logic: the cgroup tree is behind [`Resolver`], so unit tests need
//! neither BPF nor cgroupfs.
//!
//! Every interval's delta of every cgroup lands in exactly one series: its
//! own while it is exported, `other` otherwise. So each series only grows,
//! `other` included, and nothing is counted twice. A workload that becomes
//! exported starts its series from what it waited in that interval (from
//! zero history when it is new, so a fresh workload loses nothing); one that
//! leaves the exported set, or whose cgroup is gone, leaves its series
//! behind (it goes stale in Prometheus) and its later waits go to `other`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use super::labels::Labels;
use crate::signals::histogram::Histogram;
use crate::signals::ids::{IdMap, IdSet};

/// The ranking's memory: a wait counts half after this long.
pub const RANK_HALF_LIFE: Duration = Duration::from_secs(60);
/// A folded workload replaces an exported one only when its decayed wait is
/// this many times larger, so that near-equals do not swap series each scrape.
pub const HYSTERESIS: f64 = 1.5;

/// The per-workload histograms of one cgroup (or series), one for each
/// kernel map and in the order of the maps, in the per-workload layout
/// (schema 0; a count is a histogram with its events in the zero bucket).
/// The first, run-queue latency, ranks the workloads. `None`: no event in
/// that map yet, which is most maps of most workloads: a scrape then neither
/// scans nor copies their histograms (all seven of 200 workloads' took 740 KiB,
/// cold in the cache at each scrape Prometheus makes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record(pub Vec<Option<Histogram>>);

impl Record {
    fn empty(n: usize) -> Record {
        Record(vec![None; n])
    }

    /// Adds an interval's [`Delta`]: only the maps that had events.
    fn add(&mut self, d: &Delta) {
        if self.0.len() < d.len() {
            self.0.resize(d.len(), None);
        }
        for (h, dh) in self.0.iter_mut().zip(d) {
            match (h, dh) {
                (Some(h), Some(dh)) => h.add(dh),
                (h @ None, Some(dh)) => *h = Some(dh.clone()),
                (_, None) => {}
            }
        }
    }

    /// Map `i`'s histogram; an empty one where it had no event yet.
    pub fn hist(&self, i: usize) -> Cow<'_, Histogram> {
        match self.0.get(i) {
            Some(Some(h)) => Cow::Borrowed(h),
            _ => Cow::Owned(Histogram::workload()),
        }
    }

    /// Whether map `i` counted anything.
    pub fn has_events(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|h| h.as_ref().is_some_and(|h| h.count() > 0))
    }
}

/// One interval of one cgroup, one for each map: `None` where nothing
/// happened, which is most maps of most cgroups (most never sleep in D state
/// or retransmit), so a quiet map costs neither an allocation nor an add.
type Delta = Vec<Option<Histogram>>;

/// What a cgroup id resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its path relative to the v2 root.
    Found(String),
    /// Not there in a walk made after it was first seen: gone, or outside
    /// the hierarchy this process sees.
    Missing,
    /// Not walked since it appeared (walks are rate-limited): ask again later.
    Pending,
}

pub trait Resolver {
    /// `since`: when the id was first seen.
    fn lookup(&mut self, id: u64, since: Instant, now: Instant) -> Lookup;
    /// Whether the cgroup at `path` is still the one with `id`.
    fn alive(&mut self, id: u64, path: &str) -> bool;
    /// The labels of the workload at `path`.
    fn labels(&mut self, path: &str, now: Instant) -> Labels;
}

/// Which cgroup paths may have a series of their own; regexes are anchored
/// at both ends, as in Prometheus relabelling.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub include: Option<Regex>,
    pub exclude: Option<Regex>,
}

impl Filter {
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Filter, String> {
        let re = |what: &str, p: Option<&str>| {
            p.map(|p| {
                Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    // The regex crate's errors span lines; a config error is one.
                    let e =
                        e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
                    format!("workloads {what} pattern {p:?}: {e}")
                })
            })
            .transpose()
        };
        Ok(Filter { include: re("include", include)?, exclude: re("exclude", exclude)? })
    }

    pub fn allows(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(path))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(path))
    }
}

#[derive(Debug)]
struct Entry {
    first_seen: Instant,
    path: Option<String>,
    /// Some: may have a series of its own (resolved, allowed by the filter).
    labels: Option<Labels>,
    /// Cumulative, as last read from the kernel, one for each map; `None`:
    /// no entry in that map (most maps of most cgroups).
    last: Vec<Option<Histogram>>,
    /// Decayed run-queue wait, ns: the ranking key.
    score: f64,
    /// The series' value while exported; shared with the views, so that a
    /// scrape does not copy every histogram (copied on write if a view is
    /// still held when the next interval lands).
    series: Option<Arc<Record>>,
    /// When the cgroup was last known to exist (it waited, or a stat found it).
    alive_at: Option<Instant>,
}

/// A quiet cgroup is stat'ed at most this often: back-to-back scrapes would
/// otherwise stat every idle cgroup each time (17 % of a scrape with 200
/// workloads). A cgroup removed meanwhile keeps its series this much longer.
pub const ALIVE_RECHECK: Duration = Duration::from_secs(1);

/// A new Kubernetes workload whose pod or container name is not known yet
/// (kubelet writes them into its log directories as the container starts,
/// read every KUBELET_RELOAD_INTERVAL) is held back this long, its events
/// left in the kernel's cumulative: a series begun without the names would
/// change labels when they came, and the new series would start from the
/// old one's count. Two reloads; past it, it is served with what is known.
pub const NAME_WAIT: Duration = Duration::from_secs(2 * super::KUBELET_RELOAD_INTERVAL.as_secs());

/// One exported workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The cgroup path, relative to the v2 root.
    pub workload: String,
    pub labels: Labels,
    pub hists: Arc<Record>,
}

/// What the exporters publish.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// Sorted by workload.
    pub series: Vec<Series>,
    pub other: Arc<Record>,
    /// Cgroups with data in the kernel maps; exported + folded = tracked.
    pub tracked: usize,
    pub exported: usize,
    pub folded: usize,
}

#[derive(Debug)]
pub struct Tracker {
    max: usize,
    filter: Filter,
    entries: IdMap<Entry>,
    /// Shared with the views, as the series are.
    other: Arc<Record>,
    last_update: Option<Instant>,
}

impl Tracker {
    pub fn new(max: usize, filter: Filter) -> Tracker {
        Tracker { max, filter, entries: IdMap::default(), other: Arc::default(), last_update: None }
    }

    /// Folds in a read of the kernel maps (cumulative, by cgroup id; one
    /// for each map, in their order) and returns the ids whose cgroups are
    /// gone, to delete from the maps.
    pub fn update(&mut self, now: Instant, mut maps: Vec<IdMap<Histogram>>, r: &mut dyn Resolver) -> Vec<u64> {
        let n = maps.len();
        if self.other.0.len() < n {
            Arc::make_mut(&mut self.other).0.resize(n, None);
        }
        let dt = self.last_update.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last_update = Some(now);
        let decay = 0.5f64.powf(dt.as_secs_f64() / RANK_HALF_LIFE.as_secs_f64());

        // 1. Resolve new cgroups, notice the ones that are gone.
        for id in maps.iter().flat_map(IdMap::keys) {
            self.entries.entry(*id).or_insert_with(|| Entry {
                first_seen: now,
                path: None,
                labels: None,
                last: vec![None; n],
                score: 0.0,
                series: None,
                alive_at: None,
            });
        }
        // Cumulative in the kernel: any change is a new event (or an entry
        // re-created by one), and comparing is cheaper than counting.
        let grew = |id: u64, last: &[Option<Histogram>]| {
            maps.iter().zip(last).any(|(m, l)| m.get(&id).is_some_and(|h| l.as_ref() != Some(h)))
        };
        let mut dead = Vec::new();
        let mut pending = IdSet::default();
        for (id, e) in &mut self.entries {
            match &e.path {
                None => match r.lookup(*id, e.first_seen, now) {
                    Lookup::Found(p) => {
                        e.labels = self.filter.allows(&p).then(|| r.labels(&p, now));
                        e.path = Some(p);
                        e.alive_at = Some(now);
                    }
                    Lookup::Missing => dead.push(*id),
                    Lookup::Pending => {
                        pending.insert(*id);
                    }
                },
                // A cgroup whose tasks waited since the last read is there
                // (ids are not reused): only the quiet ones cost a stat, and
                // not more than once per ALIVE_RECHECK.
                Some(p) => {
                    if grew(*id, &e.last) {
                        e.alive_at = Some(now);
                    } else if e.alive_at.is_none_or(|t| now.saturating_duration_since(t) >= ALIVE_RECHECK) {
                        if !r.alive(*id, p) {
                            dead.push(*id);
                            continue;
                        }
                        e.alive_at = Some(now);
                    }
                    if e.labels.as_ref().is_some_and(Labels::wants_names) {
                        e.labels = Some(r.labels(p, now));
                    }
                }
            }
            if e.series.is_none()
                && e.labels.as_ref().is_some_and(Labels::wants_names)
                && now.saturating_duration_since(e.first_seen) < NAME_WAIT
            {
                pending.insert(*id);
            }
        }

        // 2. Deltas and scores. A pending cgroup's waits stay in the kernel's
        // cumulative until it is resolved: they will go to its own series.
        let mut deltas: IdMap<Delta> = IdMap::with_capacity_and_hasher(self.entries.len(), Default::default());
        for (id, e) in &mut self.entries {
            if pending.contains(id) {
                continue;
            }
            if e.last.len() < n {
                e.last.resize(n, None);
            }
            let d: Delta = maps.iter_mut().zip(e.last.iter_mut()).map(|(m, last)| step(m.remove(id), last)).collect();
            e.score = e.score * decay + d.first().and_then(Option::as_ref).map_or(0, |h| h.sum_ns) as f64;
            deltas.insert(*id, d);
        }
        // The last waits of the gone go to `other`: their own series ends now.
        for id in &dead {
            self.entries.remove(id);
            Arc::make_mut(&mut self.other).add(&deltas[id]);
        }

        // 3. Who is exported, then every delta to exactly one series.
        self.rank(&pending);
        for (id, d) in &deltas {
            match self.entries.get_mut(id).map(|e| &mut e.series) {
                Some(Some(s)) => Arc::make_mut(s).add(d),
                Some(None) => Arc::make_mut(&mut self.other).add(d),
                None => {} // dead: done above
            }
        }
        dead
    }

    /// Keeps at most `max` exported: free places go to the busiest folded
    /// workloads; a folded one takes an exported one's place only when it
    /// waited HYSTERESIS times more (decayed), so the set is stable.
    fn rank(&mut self, held: &IdSet) {
        for e in self.entries.values_mut().filter(|e| e.labels.is_none()) {
            e.series = None;
        }
        // Sorted by reference: cloning every path for the sort was 4 % of a scrape.
        let by_score = |a: &(f64, Option<&str>, u64), b: &(f64, Option<&str>, u64)| {
            b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1))
        };
        let (mut members, mut others) = (Vec::new(), Vec::new());
        for (id, e) in self.entries.iter().filter(|(id, e)| e.labels.is_some() && !held.contains(id)) {
            let k = (e.score, e.path.as_deref(), *id);
            if e.series.is_some() {
                members.push(k)
            } else {
                others.push(k)
            }
        }
        members.sort_by(by_score); // busiest first
        others.sort_by(by_score);
        let mut promote = Vec::new();
        // Cap lowered? Shed the weakest.
        let mut demote: Vec<u64> = members.split_off(members.len().min(self.max)).iter().map(|m| m.2).collect();
        let mut others = others.into_iter().peekable();
        while members.len() + promote.len() < self.max {
            let Some(o) = others.next() else { break };
            promote.push(o.2);
        }
        while let (Some(o), Some(weakest)) = (others.peek(), members.last()) {
            if o.0 <= HYSTERESIS * weakest.0 {
                break;
            }
            demote.push(members.pop().expect("checked").2);
            promote.push(others.next().expect("checked").2);
        }
        for id in demote {
            self.entries.get_mut(&id).expect("listed").series = None;
        }
        for id in promote {
            self.entries.get_mut(&id).expect("listed").series = Some(Arc::new(Record::empty(self.other.0.len())));
        }
    }

    pub fn view(&self) -> View {
        let mut series: Vec<Series> = self
            .entries
            .values()
            .filter_map(|e| {
                let s = e.series.as_ref()?;
                Some(Series { workload: e.path.clone()?, labels: e.labels.clone()?, hists: s.clone() })
            })
            .collect();
        series.sort_by(|a, b| a.workload.cmp(&b.workload));
        let exported = series.len();
        View {
            series,
            other: self.other.clone(),
            tracked: self.entries.len(),
            exported,
            folded: self.entries.len() - exported,
        }
    }
}

/// One map's interval for one cgroup: what was added since `last`, which
/// becomes `cur`. A cumulative that shrank was deleted and re-created in the
/// kernel: all of it is new. Absent from the map: nothing happened (an entry
/// the kernel lost starts again from empty).
fn step(cur: Option<Histogram>, last: &mut Option<Histogram>) -> Option<Histogram> {
    let Some(cur) = cur else {
        *last = None;
        return None;
    };
    let d = match last.as_ref() {
        Some(l) if *l == cur => return None,
        Some(l) if cur.slots.iter().zip(l.slots.iter()).all(|(c, l)| c >= l) => cur.delta(l),
        _ => cur.clone(),
    };
    *last = Some(cur);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::buckets::{kernel_bounds, slot_of};

    /// Cgroups are named by id: `/cg<id>`; ids in `gone` are removed,
    /// ids >= 1000 are invisible (outside our hierarchy).
    #[derive(Default)]
    struct Fake {
        gone: Vec<u64>,
        walks: usize,
        stats: usize,
    }

    impl Resolver for Fake {
        fn lookup(&mut self, id: u64, _since: Instant, _now: Instant) -> Lookup {
            self.walks += 1;
            if id >= 1000 || self.gone.contains(&id) {
                Lookup::Missing
            } else {
                Lookup::Found(format!("/cg{id}"))
            }
        }
        fn alive(&mut self, id: u64, _path: &str) -> bool {
            self.stats += 1;
            !self.gone.contains(&id)
        }
        fn labels(&mut self, path: &str, _now: Instant) -> Labels {
            Labels { unit: format!("{}.service", &path[1..]), ..Default::default() }
        }
    }

    /// In the per-workload layout, as the kernel fills it.
    fn hist(waits_ns: &[u64]) -> Histogram {
        let mut h = Histogram::workload();
        for &v in waits_ns {
            let s = slot_of(kernel_bounds(), v);
            h.slots[if s == 0 { 0 } else { (s + 5) >> 2 }] += 1;
            h.sum_ns += v;
        }
        h
    }

    /// Cumulative kernel state: id -> total wait so far, as one observation each time.
    #[derive(Default)]
    struct Kernel(IdMap<Histogram>);

    impl Kernel {
        fn wait(&mut self, id: u64, ns: u64) {
            self.0.entry(id).or_insert_with(Histogram::workload).add(&hist(&[ns]));
        }
        fn read(&self) -> (IdMap<Histogram>, IdMap<Histogram>) {
            (self.0.clone(), IdMap::default())
        }
    }

    impl Tracker {
        /// Two maps, as the sched family has: run queue and D state.
        fn update_pair(
            &mut self,
            now: Instant,
            rq: IdMap<Histogram>,
            ds: IdMap<Histogram>,
            r: &mut dyn Resolver,
        ) -> Vec<u64> {
            self.update(now, vec![rq, ds], r)
        }
    }

    fn total(v: &View) -> u64 {
        v.series.iter().map(|s| s.hists.hist(0).sum_ns).sum::<u64>() + v.other.hist(0).sum_ns
    }

    fn names(v: &View) -> Vec<&str> {
        v.series.iter().map(|s| s.workload.as_str()).collect()
    }

    #[test]
    fn cap_keeps_the_busiest_and_folds_the_rest_without_losing_a_nanosecond() {
        let (mut t, mut r, mut k) = (Tracker::new(2, Filter::default()), Fake::default(), Kernel::default());
        let t0 = Instant::now();
        for (id, ns) in [(1, 1000), (2, 5000), (3, 9000), (4, 200)] {
            k.wait(id, ns);
        }
        let (a, b) = k.read();
        t.update_pair(t0, a, b, &mut r);
        let v = t.view();
        assert_eq!(names(&v), ["/cg2", "/cg3"]);
        assert_eq!((v.tracked, v.exported, v.folded), (4, 2, 2));
        assert_eq!(v.other.hist(0).sum_ns, 1200, "the folded ones' waits");
        assert_eq!(v.series[0].labels.unit, "cg2.service");
        assert_eq!(total(&v), 15200);

        // cg1 becomes slightly busier than cg2: no swap (hysteresis)...
        k.wait(1, 5500);
        let (a, b) = k.read();
        t.update_pair(t0 + Duration::from_secs(1), a, b, &mut r);
        assert_eq!(names(&t.view()), ["/cg2", "/cg3"]);
        assert_eq!(total(&t.view()), 20700);
        // ...much busier: it takes cg2's place, its series starting from this interval.
        k.wait(1, 100_000);
        let (a, b) = k.read();
        t.update_pair(t0 + Duration::from_secs(2), a, b, &mut r);
        let v = t.view();
        assert_eq!(names(&v), ["/cg1", "/cg3"]);
        assert_eq!(v.series[0].hists.hist(0).sum_ns, 100_000);
        assert_eq!(v.series[0].hists.hist(0).count(), 1);
        // cg2's 5000 stay in its series, which ends (goes stale) here.
        assert_eq!(total(&v) + 5000, 120_700, "every wait in exactly one series");
        // `other` never shrinks although cg2 left it... and went in.
        assert_eq!(v.other.hist(0).sum_ns, 1200 + 5500);
    }

    /// A count as the kernel reads it: events in the zero bucket.
    fn count(n: u64) -> Histogram {
        let mut h = Histogram::workload();
        h.slots[0] = n;
        h
    }

    /// Every map's delta follows the ranking map's series: a workload's
    /// retransmissions land in its own series while it is exported and in
    /// `other` otherwise, and a map that only one workload uses is never
    /// lost nor counted twice.
    #[test]
    fn every_map_goes_where_the_ranking_puts_the_workload() {
        let (mut t, mut r) = (Tracker::new(1, Filter::default()), Fake::default());
        let t0 = Instant::now();
        let runq = |v: &[(u64, u64)]| v.iter().map(|&(id, ns)| (id, hist(&[ns]))).collect::<IdMap<_>>();
        let counts = |v: &[(u64, u64)]| v.iter().map(|&(id, n)| (id, count(n))).collect::<IdMap<_>>();
        // cg1 waits most; cg2 retransmits, and has no rtt map entry at all.
        t.update(t0, vec![runq(&[(1, 9000), (2, 100)]), IdMap::default(), counts(&[(2, 7)])], &mut r);
        let v = t.view();
        assert_eq!(names(&v), ["/cg1"]);
        assert_eq!(v.series[0].hists.0.len(), 3);
        assert_eq!(v.series[0].hists.hist(2).count(), 0, "cg1 retransmitted nothing");
        assert_eq!(v.other.hist(2).count(), 7, "cg2 is folded: its 7 are other's");
        // Cumulative 7 -> 10 for cg2, and now cg1 retransmits too.
        t.update(
            t0 + Duration::from_secs(1),
            vec![runq(&[(1, 9000), (2, 100)]), IdMap::default(), counts(&[(1, 4), (2, 10)])],
            &mut r,
        );
        let v = t.view();
        assert_eq!(v.series[0].hists.hist(2).count(), 4);
        assert_eq!(v.other.hist(2).count(), 10, "3 more for cg2, nothing twice");
    }

    #[test]
    fn series_only_grow_across_promotions_and_demotions() {
        let (mut t, mut r, mut k) = (Tracker::new(1, Filter::default()), Fake::default(), Kernel::default());
        let t0 = Instant::now();
        let mut prev: std::collections::HashMap<String, (u64, u64)> = Default::default();
        let mut retired = 0; // the final sums of series that ended
        for step in 0..40u64 {
            // Two workloads taking turns at being busy.
            let busy = if (step / 10) % 2 == 0 { 1 } else { 2 };
            k.wait(busy, 1_000_000);
            k.wait(3 - busy, 10_000);
            let (a, b) = k.read();
            t.update_pair(t0 + Duration::from_secs(step * 30), a, b, &mut r);
            let v = t.view();
            assert!(v.series.len() <= 1);
            let mut now: Vec<(String, (u64, u64))> = v
                .series
                .iter()
                .map(|s| (s.workload.clone(), (s.hists.hist(0).count(), s.hists.hist(0).sum_ns)))
                .collect();
            now.push(("other".into(), (v.other.hist(0).count(), v.other.hist(0).sum_ns)));
            for (name, (c, s)) in &now {
                if let Some((pc, ps)) = prev.get(name) {
                    assert!(c >= pc && s >= ps, "step {step}: {name} went backwards");
                }
            }
            // A demoted series is gone; when it comes back it is a new series (a reset is fine then).
            retired += prev.iter().filter(|(n, _)| !now.iter().any(|(m, _)| m == *n)).map(|(_, (_, s))| s).sum::<u64>();
            prev = now.into_iter().collect();
            assert_eq!(total(&v) + retired, (step + 1) * 1_010_000, "step {step}");
        }
    }

    /// Scrapes back to back: a quiet cgroup costs a stat once per
    /// ALIVE_RECHECK, not once per read, and its removal is still noticed.
    #[test]
    fn quiet_cgroups_are_stated_at_most_once_per_recheck() {
        let (mut t, mut r, mut k) = (Tracker::new(10, Filter::default()), Fake::default(), Kernel::default());
        let t0 = Instant::now();
        k.wait(1, 100);
        let (a, b) = k.read();
        t.update_pair(t0, a, b, &mut r);
        for ms in [1, 100, 500, 999] {
            let (a, b) = k.read();
            assert!(t.update_pair(t0 + Duration::from_millis(ms), a, b, &mut r).is_empty());
        }
        assert_eq!(r.stats, 0, "resolved at t0, quiet since: no stat within a second");
        let (a, b) = k.read();
        t.update_pair(t0 + ALIVE_RECHECK, a, b, &mut r);
        assert_eq!(r.stats, 1);
        r.gone.push(1);
        let (a, b) = k.read();
        assert!(
            t.update_pair(t0 + ALIVE_RECHECK + Duration::from_millis(10), a, b, &mut r).is_empty(),
            "checked 10 ms ago"
        );
        let (a, b) = k.read();
        assert_eq!(t.update_pair(t0 + 2 * ALIVE_RECHECK, a, b, &mut r), vec![1], "gone, noticed at the next check");
        assert_eq!(r.stats, 2);
    }

    #[test]
    fn gone_and_invisible_cgroups_are_deleted_and_folded() {
        let (mut t, mut r, mut k) = (Tracker::new(10, Filter::default()), Fake::default(), Kernel::default());
        let t0 = Instant::now();
        k.wait(1, 100);
        k.wait(2, 200);
        k.wait(1000, 300); // invisible
        let (a, b) = k.read();
        let dead = t.update_pair(t0, a, b, &mut r);
        assert_eq!(dead, vec![1000]);
        k.0.remove(&1000);
        let v = t.view();
        assert_eq!((names(&v), v.other.hist(0).sum_ns), (vec!["/cg1", "/cg2"], 300));
        r.gone.push(2);
        k.wait(2, 50); // a last wait before it went
        let (a, b) = k.read();
        // It waited since the last read: taken as alive without a stat, and
        // the last wait lands in its own series.
        let dead = t.update_pair(t0 + Duration::from_secs(1), a, b, &mut r);
        assert!(dead.is_empty());
        assert_eq!(names(&t.view()), ["/cg1", "/cg2"]);
        let (a, b) = k.read();
        let dead = t.update_pair(t0 + Duration::from_secs(2), a, b, &mut r);
        assert_eq!(dead, vec![2], "quiet for one read: checked, and gone");
        let v = t.view();
        assert_eq!(names(&v), ["/cg1"]);
        assert_eq!(v.other.hist(0).sum_ns, 300);
        assert_eq!((v.tracked, v.exported, v.folded), (1, 1, 0));
    }

    #[test]
    fn pending_ids_wait_for_a_walk_and_filters_fold() {
        struct Later(bool);
        impl Resolver for Later {
            fn lookup(&mut self, id: u64, _: Instant, _: Instant) -> Lookup {
                if self.0 {
                    Lookup::Found(format!("/system.slice/s{id}.service"))
                } else {
                    Lookup::Pending
                }
            }
            fn alive(&mut self, _: u64, _: &str) -> bool {
                true
            }
            fn labels(&mut self, path: &str, _: Instant) -> Labels {
                super::super::labels::parse(path)
            }
        }
        let f = Filter::new(None, Some("/system.slice/s2\\.service")).unwrap();
        assert!(
            f.allows("/system.slice/s1.service")
                && !f.allows("/system.slice/s2.service")
                && f.allows("/system.slice/s2.service.x")
        );
        let (mut t, mut k) = (Tracker::new(10, f), Kernel::default());
        let t0 = Instant::now();
        k.wait(1, 100);
        k.wait(2, 200);
        let (a, b) = k.read();
        assert!(t.update_pair(t0, a, b, &mut Later(false)).is_empty(), "pending is not gone");
        let v = t.view();
        assert_eq!((v.series.len(), v.other.hist(0).sum_ns, v.folded), (0, 0, 2), "pending: not attributed yet");
        k.wait(1, 1000);
        let (a, b) = k.read();
        t.update_pair(t0 + Duration::from_secs(1), a, b, &mut Later(true));
        let v = t.view();
        assert_eq!(names(&v), ["/system.slice/s1.service"]);
        assert_eq!(v.series[0].labels.unit, "s1.service");
        assert_eq!(v.series[0].hists.hist(0).sum_ns, 1100, "its waits while pending are its own");
        assert_eq!(v.other.hist(0).sum_ns, 200, "excluded");
        assert_eq!((v.exported, v.folded), (1, 1));
        assert!(Filter::new(Some("("), None).is_err());
    }

    /// A pod whose names kubelet has not written yet: no series until they
    /// come (then one, with every event), or until NAME_WAIT has passed.
    #[test]
    fn a_pod_is_served_once_its_names_are_known() {
        struct Kubelet(bool);
        impl Resolver for Kubelet {
            fn lookup(&mut self, id: u64, _: Instant, _: Instant) -> Lookup {
                Lookup::Found(format!("/kubepods.slice/pod{id}"))
            }
            fn alive(&mut self, _: u64, _: &str) -> bool {
                true
            }
            fn labels(&mut self, path: &str, _: Instant) -> Labels {
                let pod = if self.0 { path.trim_start_matches("/kubepods.slice/").to_string() } else { String::new() };
                Labels { pod_uid: "u".into(), pod, ..Default::default() }
            }
        }
        let (mut t, mut k) = (Tracker::new(10, Filter::default()), Kernel::default());
        let t0 = Instant::now();
        k.wait(1, 100);
        k.wait(2, 200);
        let (a, b) = k.read();
        t.update_pair(t0, a, b, &mut Kubelet(false));
        let v = t.view();
        assert_eq!((v.series.len(), v.other.hist(0).sum_ns), (0, 0), "held, not folded");
        k.wait(1, 1000);
        let (a, b) = k.read();
        t.update_pair(t0 + Duration::from_secs(5), a, b, &mut Kubelet(false));
        assert!(t.view().series.is_empty(), "still without names");
        // The names come.
        let (a, b) = k.read();
        t.update_pair(t0 + Duration::from_secs(6), a, b, &mut Kubelet(true));
        let v = t.view();
        assert_eq!(names(&v), ["/kubepods.slice/pod1", "/kubepods.slice/pod2"]);
        assert_eq!(
            (v.series[0].labels.pod.as_str(), v.series[0].hists.hist(0).sum_ns),
            ("pod1", 1100),
            "every event its own"
        );
        let (mut t, mut k) = (Tracker::new(10, Filter::default()), Kernel::default());
        k.wait(2, 200);
        let (a, b) = k.read();
        t.update_pair(t0, a, b, &mut Kubelet(false));
        let (a, b) = k.read();
        t.update_pair(t0 + NAME_WAIT, a, b, &mut Kubelet(false));
        let v = t.view();
        assert_eq!(names(&v), ["/kubepods.slice/pod2"], "served without names once the wait is over");
        assert_eq!((v.series[0].labels.pod.as_str(), v.series[0].hists.hist(0).sum_ns), ("", 200));
    }

    #[test]
    fn a_recreated_kernel_entry_counts_from_scratch_and_a_quiet_map_is_nothing() {
        let old = hist(&[5, 6, 7]);
        let new = hist(&[9]);
        let mut last = Some(old.clone());
        assert_eq!(step(Some(new.clone()), &mut last), Some(new.clone()), "shrank: re-created");
        assert_eq!(last, Some(new));
        let mut last = Some(hist(&[5]));
        assert_eq!(step(Some(old.clone()), &mut last).map(|d| d.count()), Some(2));
        assert_eq!(step(Some(old.clone()), &mut last), None, "unchanged");
        assert_eq!(last, Some(old.clone()));
        assert_eq!(step(None, &mut last), None, "the kernel lost the entry");
        assert_eq!(last, None, "it counts from empty again");
        assert_eq!(step(Some(old.clone()), &mut last), Some(old), "new in the map: all of it is new");
    }
}
