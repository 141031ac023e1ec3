//! Victims and suspects: friction per workload, against each workload's own
//! baseline, and who moves with it. A thread-pool server and its client in
//! one cgroup (the victim), an idle bystander in a second; once they have
//! calibrated, a CPU hog runs in bursts in a third: the server's friction
//! rises above anything it showed while calm, it is named a victim on
//! /api/v1/score with the hog as its first suspect and the bystander never
//! among them; the hog, which arrived with the trouble, has no baseline
//! during its own warm-up and is never named a victim. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::cgroup::{test_prefix, wl, Cgroup};
use common::netns::{Netns, POOL_PY};
use common::Ksense;

/// `conns` keep-alive connections sending 2-byte requests back to back for `secs`.
const LOOP_PY: &str = r#"
import socket, sys, threading, time
port, conns, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def run():
    c = socket.create_connection(("127.0.0.1", port)); t0 = time.time()
    while time.time() - t0 < secs:
        c.sendall(b"q\n"); got = b""
        while len(got) < 3: got += c.recv(16)
    c.close()
ts = [threading.Thread(target=run) for _ in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
"#;

const FRICTION: &str = "ksense_workload_friction";

fn score(k: &Ksense) -> serde_json::Value {
    serde_json::from_str(&ureq::get(&k.url("/api/v1/score")).call().unwrap().into_string().unwrap()).unwrap()
}

fn named(doc: &serde_json::Value, rel: &str) -> bool {
    doc["victims"].as_array().is_some_and(|v| v.iter().any(|w| w["labels"]["workload"] == rel))
}

#[test]
fn root_the_server_slowed_by_a_hog_is_the_victim_and_the_hog_its_suspect() {
    require_root!();
    let ns = Netns::new("victims");
    let fast = ["--model.interval", "500ms", "--model.warmup", "6s", "--model.baseline-window", "6s"];
    let k = Ksense::start(&[&["--log.level", "warn", "--workloads.enabled"][..], &fast].concat());
    let pre = test_prefix();
    let (mut server, mut bystander, mut hog) = (
        Cgroup::new(&format!("/{pre}-victim")),
        Cgroup::new(&format!("/{pre}-bystander")),
        Cgroup::new(&format!("/{pre}-hog")),
    );
    let py = |args: &[&str]| -> Vec<String> {
        ["ip", "netns", "exec", &ns.name, "python3", "-c"].iter().chain(args).map(|s| s.to_string()).collect()
    };
    let s = py(&[POOL_PY, "7401", "4", "0"]);
    server.spawn(None, &s.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(500));
    let c = py(&[LOOP_PY, "7401", "2", "60"]);
    server.spawn(None, &c.iter().map(String::as_str).collect::<Vec<_>>());
    // Wakes 100 times a second and does nothing: exported, but no antagonist.
    bystander.spawn(None, &["python3", "-c", "import time\nwhile True: time.sleep(0.01)"]);

    // The server calibrates on the calm node.
    let t0 = Instant::now();
    while wl(&k.scrape(), FRICTION, &server.rel).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the server never had a baseline:\n{}", k.scrape());
        std::thread::sleep(Duration::from_millis(500));
    }
    let sample = |secs: u64| -> Vec<f64> {
        (0..secs * 2)
            .filter_map(|_| {
                std::thread::sleep(Duration::from_millis(500));
                wl(&k.scrape(), FRICTION, &server.rel)
            })
            .collect()
    };
    let calm = sample(4);
    let calm_max = calm.iter().cloned().fold(0.0, f64::max);

    // Four CPU hogs on two CPUs, in two bursts: its CPU use goes up and
    // down with the server's trouble.
    hog.spawn(None, &["stress-ng", "--cpu", "4", "--timeout", "4s", "--quiet"]);
    // Its own warm-up (6 s) from its first interval; after it, the hog's
    // baseline is its own bursts, against which it is not worse.
    let hog_warm = Instant::now() + Duration::from_secs(5);
    hog.wait_all();
    std::thread::sleep(Duration::from_secs(3));
    hog.spawn(None, &["stress-ng", "--cpu", "4", "--timeout", "10s", "--quiet"]);
    std::thread::sleep(Duration::from_secs(2));
    let (mut named_server, mut hog_first) = (0, 0);
    let mut hot = Vec::new();
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        let text = k.scrape();
        if let Some(f) = wl(&text, FRICTION, &server.rel) {
            hot.push(f);
        }
        if Instant::now() < hog_warm {
            assert!(wl(&text, FRICTION, &hog.rel).is_none(), "the hog arrived with the trouble: no baseline yet");
        }
        let doc = score(&k);
        assert!(!named(&doc, &hog.rel), "the hog is not a victim: {doc}");
        named_server += usize::from(named(&doc, &server.rel));
        let Some(v) = doc["victims"].as_array().unwrap().iter().find(|w| w["labels"]["workload"] == server.rel) else {
            continue;
        };
        let suspects: Vec<&str> =
            v["suspects"].as_array().unwrap().iter().map(|s| s["workload"].as_str().unwrap()).collect();
        assert!(!suspects.contains(&bystander.rel.as_str()), "the idle bystander is no suspect: {v}");
        if suspects.first() == Some(&hog.rel.as_str()) {
            hog_first += 1;
        } else {
            eprintln!("a reading without the hog first: {v}");
        }
    }
    hog.kill_all();
    bystander.kill_all();
    hot.sort_by(f64::total_cmp);
    let hot_median = hot[hot.len() / 2];
    eprintln!("server friction: calm {calm:?} (max {calm_max:.2}); under the hog {hot:?} (median {hot_median:.2}); named a victim in {named_server} of 12 readings, the hog its first suspect in {hog_first}");
    assert!(hot_median > calm_max, "the server's friction did not rise: calm max {calm_max}, hog median {hot_median}");
    assert!(named_server >= 6, "the server was named a victim in only {named_server} of 12 readings");
    assert_eq!(hog_first, named_server, "the hog is the first suspect whenever the server is a victim");
    server.kill_all();
}
