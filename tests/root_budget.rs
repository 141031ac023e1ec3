//! The series budget (docs/workloads.md, "Series budget"): with the default
//! workload cap and more busy workloads than it, every per-workload family busy
//! in each, one scrape serves no more series than the formula gives, and no more
//! than the budget. Needs root (BPF, cgroups, a network namespace).

mod common;

use std::time::{Duration, Instant};

use common::cgroup::{test_prefix, wl, Cgroup};
use common::netns::{Netns, BULK_PY};
use common::{sample, Ksense};
use ksense::signals::buckets::default_workload_classic_indices;

/// Series per node with every family on and the default cap (README, and
/// the KsenseSeriesHigh alert).
const BUDGET: f64 = 5000.0;

/// The per-workload families a scrape declares: (histograms, counters),
/// with the `role` values each has (families without one: `None`).
type Families = Vec<(String, Option<&'static str>)>;

/// The per-workload histogram and counter families (with their roles), and
/// how many gauge families there are (friction: exported workloads only).
fn workload_families(text: &str) -> (Families, Families, usize) {
    let (mut h, mut c, mut g) = (Vec::new(), Vec::new(), 0);
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ksense_workload_") else { continue };
        let (name, ty) = rest.split_once(' ').unwrap();
        let name = format!("ksense_workload_{name}");
        let by_role = text.lines().any(|l| l.starts_with(&name) && l.contains("role=\""));
        let roles: Vec<Option<&'static str>> =
            if by_role { ksense::probes::REQUEST_ROLES.iter().map(|r| Some(*r)).collect() } else { vec![None] };
        let each = roles.into_iter().map(|r| (name.clone(), r));
        match ty {
            "histogram" => h.extend(each),
            "counter" => c.extend(each),
            "gauge" => g += 1,
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    (h, c, g)
}

/// `wl`, for one role of a family that has roles.
fn wl_as(text: &str, name: &str, rel: &str, role: Option<&str>) -> Option<f64> {
    let Some(role) = role else { return wl(text, name, rel) };
    let (w, r) = (format!("workload=\"{rel}\""), format!("role=\"{role}\""));
    text.lines().find_map(|l| {
        let (labels, v) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
        (labels.split(',').any(|x| x == w) && labels.split(',').any(|x| x == r)).then(|| v.trim().parse().ok())?
    })
}

#[test]
fn root_series_stay_within_the_formula_and_the_budget() {
    require_root!();
    let cap = ksense::workloads::Config::default().max;
    let n = cap + 2; // two more than the cap: `other` gets some too
    let ns = Netns::new("budget");
    // MTU 1500: many segments per transfer, so that every workload loses some.
    ns.exec(&["ip", "link", "set", "lo", "mtu", "1500"]);
    let first_port = 7100u16;
    ns.drop_inbound(format!("{first_port}:{}", first_port + n as u16), 0.03);
    // A short warm-up: the model's gauges are among the series counted.
    let fast = ["--model.interval", "500ms", "--model.warmup", "3s", "--model.baseline-window", "3s"];
    let pre = test_prefix();
    // Only the test's workloads compete for the cap: busy cgroups of the host
    // (a CI runner's) would take places the test counts on.
    let ours = format!("/{pre}-budget-.*");
    let k = Ksense::start(
        &[&["--log.level", "warn", "--workloads.enabled", "--workloads.include", &ours][..], &fast].concat(),
    );
    let mut cgs: Vec<Cgroup> = (0..n).map(|i| Cgroup::new(&format!("/{pre}-budget-{i:03}"))).collect();
    let t0 = Instant::now();
    for (i, cg) in cgs.iter_mut().enumerate() {
        let port = (first_port + i as u16).to_string();
        let out = k.dir.path().join(format!("budget-{i}.retrans"));
        cg.spawn(None, &["ip", "netns", "exec", &ns.name, "python3", "-c", BULK_PY, &port, "3", out.to_str().unwrap()]);
        cg.dstate(10);
    }
    for cg in &mut cgs {
        cg.wait_all();
    }
    eprintln!("{n} workloads ran in {:.1} s", t0.elapsed().as_secs_f64());

    // Every family (and role) of a workload is a series of its own once it had events;
    // wait until the workloads' cgroups are resolved and their series served.
    let all = |text: &str, (h, c, _): &(Families, Families, usize)| {
        cgs.iter()
            .filter(|cg| {
                h.iter().all(|(f, r)| wl_as(text, &format!("{f}_count"), &cg.rel, *r).is_some())
                    && c.iter().all(|(f, r)| wl_as(text, f, &cg.rel, *r).is_some())
            })
            .count()
    };
    let (text, fams) = {
        let t0 = Instant::now();
        loop {
            let text = k.scrape();
            let fams = workload_families(&text);
            if all(&text, &fams) >= cap * 9 / 10 || t0.elapsed() > Duration::from_secs(15) {
                break (text, fams);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let (hists, counters, gauges) = &fams;
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let total = lines.len() as f64;
    let per_workload = lines.iter().filter(|l| l.starts_with("ksense_workload_")).count();
    let exported = sample(&text, "ksense_workloads{state=\"exported\"}").unwrap() as usize;
    let bounds = default_workload_classic_indices().len();
    let per = (bounds + 3) * hists.len() + counters.len();
    let formula = (exported + 1) * per + exported * gauges;
    let busy = all(&text, &fams);
    eprintln!(
        "{} histogram and {} counter series sets (family and role) per workload, {per} series each; {exported} exported (cap {cap}), {busy} of ours with every family; \
         per-workload series {per_workload} (formula {formula}), node-wide {}, total {total} (budget {BUDGET})",
        hists.len(),
        counters.len(),
        total as usize - per_workload
    );
    assert_eq!(sample(&text, "ksense_scrape_series"), Some(total), "ksense_scrape_series against the lines served");
    assert_eq!(sample(&text, "ksense_baseline_ready"), Some(1.0), "the model's series are part of the count");
    assert!(exported <= cap, "{exported} exported with a cap of {cap}");
    assert!((hists.len(), counters.len()) >= (5, 4), "families per workload: {fams:?}");
    assert!(busy >= cap * 9 / 10, "only {busy} of {n} workloads had every family: the test did not load them");
    assert!(per_workload <= formula, "{per_workload} per-workload series, the formula allows {formula}");
    assert!(total <= BUDGET, "{total} series, the budget is {BUDGET}");
}
