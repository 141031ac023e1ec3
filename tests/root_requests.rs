//! The requests family in the running kernel against real servers and the
//! load generators' own figures: nginx under wrk, redis-server under
//! redis-benchmark, a thread-pool server under a client that times itself,
//! and 10,000 short connections that must leave no state behind. Each
//! server and client runs in a cgroup of its own, in a network namespace the
//! test makes. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use common::cgroup::{test_prefix, Cgroup};
use common::netns::{run, Netns, POOL_PY};
use common::{Ksense, WORKLOADS_NOW};
use ksense::probes::{kernel, AttachMode, Probes};
use ksense::signals::Snapshot;
use libbpf_rs::MapCore;

/// The programs are node-wide: one test at a time, or each counts the other's requests.
static NODE: Mutex<()> = Mutex::new(());

/// `name{...}` of the series whose labels include every pair of `want`; 0 when absent.
fn series_with(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .find_map(|l| {
            let (labels, v) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            let pairs: Vec<(&str, &str)> =
                labels.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, v.trim_matches('"'))).collect();
            let has = |(k, v): &(&str, &str)| {
                pairs
                    .iter()
                    .any(|(pk, pv)| pk == k && (pv == v || (*k == "le" && pv.parse::<f64>().ok() == v.parse().ok())))
            };
            want.iter().all(has).then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// `name{workload="<rel>",...,role="<role>"} value`; 0 when absent.
fn wl_role(text: &str, name: &str, rel: &str, role: &str) -> f64 {
    series_with(text, name, &[("workload", rel), ("role", role)])
}

/// Node-wide requests of `role` in a snapshot.
fn requests(s: &Snapshot, role: &str) -> f64 {
    common::counter(s, "ksense_requests", role)
}

/// Polls `ready` for up to 10 s: a server the test started answers.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !ready() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what} did not answer within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scrape once the workloads in `rels` have series of their own: a new
/// cgroup's path is resolved after its first events, so the first scrapes
/// after a short run may still sum it in `other` (a test of 1.3 s saw that).
fn scrape_with(k: &Ksense, rels: &[&str]) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let text = k.scrape();
        let has = |rel: &str| text.lines().any(|l| l.contains(&format!("workload=\"{rel}\"")));
        if rels.iter().all(|r| has(r)) || t0.elapsed() > Duration::from_secs(10) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn within(got: f64, want: f64, share: f64, what: &str) {
    eprintln!("{what}: ksense {got}, truth {want}");
    assert!(want > 0.0, "{what}: nothing to compare");
    assert!((got - want).abs() <= share * want, "{what}: ksense {got} vs {want}, more than {}% apart", share * 100.0);
}

const NGINX_CONF: &str = "worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server { listen 127.0.0.1:{port}; root {d}/html; }
}
";

/// nginx (2 workers, keep-alive, sendfile) serving a 4 KiB page on `port` in
/// `ns`, in a cgroup of its own, answering: its directory (kept while it
/// serves), its cgroup and the page's URL.
fn nginx_in(ns: &Netns, port: u16) -> (tempfile::TempDir, Cgroup, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::create_dir(dir.path().join("html")).unwrap();
    std::fs::write(dir.path().join("html/index.html"), "x".repeat(4096)).unwrap();
    std::fs::write(dir.path().join("nginx.conf"), NGINX_CONF.replace("{d}", d).replace("{port}", &port.to_string()))
        .unwrap();
    for p in [dir.path().to_path_buf(), dir.path().join("html")] {
        run(&["chmod", "755", p.to_str().unwrap()]); // nginx workers run as nobody
    }
    let mut cg = Cgroup::new(&format!("/{}-nginx", test_prefix()));
    let conf = format!("{d}/nginx.conf");
    cg.spawn(None, &["ip", "netns", "exec", &ns.name, "nginx", "-c", &conf, "-g", "daemon off;"]);
    let url = format!("http://127.0.0.1:{port}/index.html");
    wait_until("nginx", || {
        let curl = ["netns", "exec", &ns.name, "curl", "-sf", "-o", "/dev/null", &url];
        std::process::Command::new("ip").args(curl).status().is_ok_and(|s| s.success())
    });
    (dir, cg, url)
}

/// `wrk -t2 -c16 -d3s` against `url` in `ns`: wrk's own request count.
fn wrk_requests(ns: &Netns, url: &str) -> f64 {
    let out = ns.exec(&["wrk", "-t2", "-c16", "-d3s", url]);
    let n: f64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.parse().unwrap()))
        .unwrap_or_else(|| panic!("no request count from wrk:\n{out}"));
    assert!(n > 10_000.0, "wrk made too few requests to compare: {n}");
    n
}

/// nginx (2 workers, keep-alive, sendfile) under wrk: the server requests of
/// nginx's cgroup match wrk's own count within 1 %, and so do the client
/// requests (wrk is the only client on the node while it runs).
#[test]
fn root_requests_nginx_under_wrk_match_wrks_count() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-nginx");
    let k = Ksense::start(&WORKLOADS_NOW);
    let (_dir, cg, url) = nginx_in(&ns, 8091);
    let before = k.scrape();
    let n = wrk_requests(&ns, &url);
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape_with(&k, &[&cg.rel]);
    let rel = &cg.rel;
    let server = wl_role(&after, "ksense_workload_requests_total", rel, "server")
        - wl_role(&before, "ksense_workload_requests_total", rel, "server");
    within(server, n, 0.01, "nginx's server requests");
    let client = common::sample(&after, "ksense_requests_total{role=\"client\"}").unwrap()
        - common::sample(&before, "ksense_requests_total{role=\"client\"}").unwrap();
    within(client, n, 0.01, "client requests, node-wide");
    assert_eq!(wl_role(&after, "ksense_workload_requests_total", rel, "client"), 0.0, "nginx calls nobody");
}

/// Kernels before 6.3 have no sock_send_length/sock_recv_length: there the
/// exit of the system calls stands in (nginx's recvfrom, writev and
/// sendfile, wrk's read and write). Simulated here by attaching as if those
/// two tracepoints were missing: the fallback attaches, they do not, and the
/// counts still match wrk's within 1 %, node-wide, both roles.
fn syscall_fallback(mode: AttachMode, port: u16) {
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-sys");
    let (_dir, _cg, url) = nginx_in(&ns, port);
    let mut s = kernel::probe();
    s.missing_tracepoints.extend(["sock_recv_length", "sock_send_length"]);
    let p = Probes::attach(AttachMode::choose(Some(mode), &s).unwrap(), &s, &[]).unwrap();
    let attached = |name: &str| p.programs.iter().find(|x| x.name == name).map(|x| x.attached);
    assert_eq!(attached(ksense::probes::SYSCALL_FALLBACK), Some(true), "{:?}", p.programs);
    assert_eq!(attached("sock_recv_length"), Some(false));
    let before = p.snapshot().unwrap();
    let n = wrk_requests(&ns, &url);
    std::thread::sleep(Duration::from_millis(300));
    let after = p.snapshot().unwrap();
    let delta = |role| requests(&after, role) - requests(&before, role);
    within(delta("server"), n, 0.01, "server requests from the system calls");
    within(delta("client"), n, 0.01, "client calls from the system calls");
    let stats = p.program_stats().unwrap();
    let (_, _, sys) = stats.iter().find(|(n, _, _)| *n == ksense::probes::SYSCALL_FALLBACK).unwrap();
    if sys.run_cnt > 0 {
        eprintln!("sys_exit: {} runs, {:.1} ns/run", sys.run_cnt, sys.run_time_ns as f64 / sys.run_cnt as f64);
    }
}

#[test]
fn root_requests_syscall_fallback_matches_wrks_count_tp_btf() {
    require_root!();
    syscall_fallback(AttachMode::TpBtf, 8092);
}

/// raw_tp would attach sock_*_length wherever the tracepoints exist (here):
/// replaced by the fallback, they must not, or every call pays for both.
#[test]
fn root_requests_syscall_fallback_matches_wrks_count_raw_tp() {
    require_root!();
    syscall_fallback(AttachMode::RawTp, 8093);
}

/// One `"name","value",...` CSV row of redis-benchmark per test.
fn redis_csv(text: &str) -> Vec<Vec<String>> {
    text.lines().skip(1).map(|l| l.split(',').map(|f| f.trim_matches('"').to_string()).collect()).collect()
}

/// redis-server under redis-benchmark (SET and GET, 8 connections): the
/// server requests of redis's cgroup and the client requests of the
/// benchmark's cgroup match its request count within 1 %, and the client
/// latency ksense saw has the mean the benchmark's own timer saw.
#[test]
fn root_requests_redis_under_redis_benchmark() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-redis");
    let k = Ksense::start(&WORKLOADS_NOW);
    let mut server = Cgroup::new(&format!("/{}-redis", test_prefix()));
    let mut bench = Cgroup::new(&format!("/{}-redis-benchmark", test_prefix()));
    let port = "6390";
    let redis = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    server.spawn(None, &[&["ip", "netns", "exec", &ns.name][..], &redis[..]].concat());
    wait_until("redis-server", || {
        let ping = ["netns", "exec", &ns.name, "redis-cli", "-p", port, "ping"];
        std::process::Command::new("ip").args(ping).output().is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    });
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bench.csv");
    let per_test = 20_000;
    let before = k.scrape();
    let cmd = format!(
        "exec ip netns exec {} redis-benchmark -p {port} -n {per_test} -c 8 -t set,get --csv > {}",
        ns.name,
        csv.display()
    );
    bench.spawn(None, &["sh", "-c", &cmd]);
    bench.wait_all();
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape_with(&k, &[&server.rel, &bench.rel]);
    let rows = redis_csv(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(rows.len(), 2, "SET and GET: {rows:?}");
    let n = (per_test * rows.len()) as f64;
    let delta =
        |rel: &str, name: &str, role: &str| wl_role(&after, name, rel, role) - wl_role(&before, name, rel, role);
    within(delta(&server.rel, "ksense_workload_requests_total", "server"), n, 0.01, "redis's server requests");
    let calls = delta(&bench.rel, "ksense_workload_requests_total", "client");
    within(calls, n, 0.01, "redis-benchmark's client requests");
    // avg_latency_ms is the third column; the two tests made as many requests each.
    let own_ms: f64 = rows.iter().map(|r| r[2].parse::<f64>().unwrap()).sum::<f64>() / rows.len() as f64;
    let sum = delta(&bench.rel, "ksense_workload_request_duration_seconds_sum", "client");
    let ksense_ms = sum / calls * 1e3;
    eprintln!("redis-benchmark mean latency {own_ms:.4} ms, ksense's client mean {ksense_ms:.4} ms");
    // The benchmark's timer starts before its write and stops after its
    // read returns, in user space: a little more than the kernel's view.
    assert!(
        ksense_ms <= own_ms * 1.05 && ksense_ms >= own_ms * 0.6,
        "ksense's client mean {ksense_ms} ms vs the benchmark's {own_ms} ms"
    );
}

/// Runs Python code (`args[0]`, then its arguments) in `ns`, in cgroup `cg`.
fn spawn_py(cg: &mut Cgroup, ns: &Netns, args: &[&str]) {
    spawn_py_on(cg, ns, "127.0.0.1", args);
}

/// As spawn_py, with `KS_HOST` set to `host`: the address POOL_PY listens on
/// and CLIENT_PY connects to.
fn spawn_py_on(cg: &mut Cgroup, ns: &Netns, host: &str, args: &[&str]) {
    let env = format!("KS_HOST={host}");
    let argv: Vec<&str> = ["ip", "netns", "exec", &ns.name, "env", &env, "python3", "-c"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    cg.spawn(None, &argv);
}

/// Field `k` of the JSON line CLIENT_PY writes.
fn json_field(json: &str, k: &str) -> f64 {
    json.split(&format!("\"{k}\": ")).nth(1).unwrap().split([',', '}']).next().unwrap().parse().unwrap()
}

/// `conns` keep-alive connections, `n` requests each, timed by the client itself.
const CLIENT_PY: &str = r#"
import json, os, socket, sys, threading, time
port, conns, n, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lat, lock = [], threading.Lock()
SLOW = 0.125  # s: a per-workload classic bucket bound
def run():
    c = socket.create_connection((os.environ.get("KS_HOST", "127.0.0.1"), port))
    mine = []
    for _ in range(n):
        t = time.perf_counter()
        c.sendall(b"q\n")
        got = b""
        while len(got) < 3:
            got += c.recv(16)
        mine.append(time.perf_counter() - t)
    c.close()
    with lock:
        lat.extend(mine)
ts = [threading.Thread(target=run) for _ in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
json.dump({"count": len(lat), "mean": sum(lat) / len(lat), "slow": sum(1 for x in lat if x > SLOW)}, open(out, "w"))
"#;

/// A thread-pool server (8 threads on one listening socket) and a client
/// with 4 keep-alive connections of 2,500 requests each: both counts match
/// the client's own, its latency histogram has the mean its timer saw, and
/// the server's sits between the server's sleep and that.
#[test]
fn root_requests_thread_pool_and_keepalive_count_each_turn() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-pool");
    let k = Ksense::start(&WORKLOADS_NOW);
    let mut server = Cgroup::new(&format!("/{}-pool", test_prefix()));
    let mut client = Cgroup::new(&format!("/{}-pool-client", test_prefix()));
    let port = "7301";
    spawn_py(&mut server, &ns, &[POOL_PY, port, "8", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.json");
    let before = k.scrape();
    spawn_py(&mut client, &ns, &[CLIENT_PY, port, "4", "2500", out.to_str().unwrap()]);
    client.wait_all();
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape_with(&k, &[&server.rel, &client.rel]);
    let own = std::fs::read_to_string(&out).unwrap();
    let field = |k: &str| json_field(&own, k);
    let (n, own_mean) = (field("count"), field("mean"));
    assert_eq!(n, 10_000.0);
    let delta =
        |rel: &str, name: &str, role: &str| wl_role(&after, name, rel, role) - wl_role(&before, name, rel, role);
    within(delta(&server.rel, "ksense_workload_requests_total", "server"), n, 0.01, "the pool's server requests");
    let calls = delta(&client.rel, "ksense_workload_requests_total", "client");
    within(calls, n, 0.01, "the client's requests");
    let mean = |rel: &str, role: &str| {
        delta(rel, "ksense_workload_request_duration_seconds_sum", role)
            / delta(rel, "ksense_workload_requests_total", role)
    };
    let (c, s) = (mean(&client.rel, "client"), mean(&server.rel, "server"));
    eprintln!("client's own mean {:.1} µs; ksense: client {:.1} µs, server {:.1} µs", own_mean * 1e6, c * 1e6, s * 1e6);
    within(c, own_mean, 0.10, "the client's mean latency");
    assert!(s >= 1e-3 && s <= c, "the server's mean {s} s: at least its 1 ms sleep, at most the client's {c} s");
}

/// IPv6, and IPv4 on an IPv6 socket: a dual-stack server (listening on `::`,
/// as Go and Java servers do) with one client over ::1 and one over
/// 127.0.0.1, whose connections the server accepts as IPv4-mapped IPv6
/// sockets (the client's own are plain IPv4: the server's total covers them). Each client's calls and the server's requests match the clients'
/// own counts, and each client's mean latency the mean its timer saw.
#[test]
fn root_requests_count_over_ipv6_and_dual_stack() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        std::path::Path::new("/proc/net/if_inet6").exists(),
        "this host has IPv6 off (ipv6.disable=1): the test needs ::1 in its namespace"
    );
    let ns = Netns::new("req-ipv6");
    let k = Ksense::start(&WORKLOADS_NOW);
    let mut server = Cgroup::new(&format!("/{}-v6", test_prefix()));
    let mut six = Cgroup::new(&format!("/{}-v6-client6", test_prefix()));
    let mut four = Cgroup::new(&format!("/{}-v6-client4", test_prefix()));
    let port = "7305";
    spawn_py_on(&mut server, &ns, "::", &[POOL_PY, port, "4", "0.5"]);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let (out6, out4) = (dir.path().join("six.json"), dir.path().join("four.json"));
    let before = k.scrape();
    spawn_py_on(&mut six, &ns, "::1", &[CLIENT_PY, port, "2", "1500", out6.to_str().unwrap()]);
    spawn_py_on(&mut four, &ns, "127.0.0.1", &[CLIENT_PY, port, "2", "1500", out4.to_str().unwrap()]);
    six.wait_all();
    four.wait_all();
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape_with(&k, &[&server.rel, &six.rel, &four.rel]);
    let delta =
        |rel: &str, name: &str, role: &str| wl_role(&after, name, rel, role) - wl_role(&before, name, rel, role);
    let mut total = 0.0;
    for (client, out, family) in [(&six, &out6, "IPv6"), (&four, &out4, "IPv4")] {
        let own = std::fs::read_to_string(out).unwrap_or_else(|e| panic!("the {family} client's figures: {e}"));
        let (n, own_mean) = (json_field(&own, "count"), json_field(&own, "mean"));
        assert_eq!(n, 3_000.0, "the {family} client's own count");
        total += n;
        let calls = delta(&client.rel, "ksense_workload_requests_total", "client");
        within(calls, n, 0.01, &format!("the {family} client's requests"));
        let mean = delta(&client.rel, "ksense_workload_request_duration_seconds_sum", "client") / calls;
        within(mean, own_mean, 0.10, &format!("the {family} client's mean latency"));
    }
    within(
        delta(&server.rel, "ksense_workload_requests_total", "server"),
        total,
        0.01,
        "the dual-stack server's requests",
    );
}

/// A request that waits unread in the server's receive queue is time its
/// client waits too: the server's requests begin when their data arrived
/// (sk_data_ready), so their mean holds the 20 ms each waited unread; with
/// sk_data_ready disabled they begin at the read, and the mean drops below
/// 5 ms. The server listens on a port outside the ephemeral range, so its
/// client's socket is one sk_data_ready skips by its ports alone.
#[test]
fn root_requests_begin_when_their_data_arrives() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-queued");
    let mut server = Cgroup::new(&format!("/{}-queued", test_prefix()));
    let port = "7302";
    spawn_py(&mut server, &ns, &[POOL_PY, port, "1", "0", "20"]);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.json");
    let mut means = Vec::new();
    for flags in [&WORKLOADS_NOW[..], &[&WORKLOADS_NOW[..], &["--bpf.disable", "sk_data_ready"]].concat()] {
        let k = Ksense::start(flags);
        let before = k.scrape();
        let mut client = Cgroup::new(&format!("/{}-queued-client", test_prefix()));
        spawn_py(&mut client, &ns, &[CLIENT_PY, port, "1", "50", out.to_str().unwrap()]);
        client.wait_all();
        std::thread::sleep(Duration::from_millis(300));
        let after = scrape_with(&k, &[&server.rel]);
        let delta =
            |name: &str| wl_role(&after, name, &server.rel, "server") - wl_role(&before, name, &server.rel, "server");
        let n = delta("ksense_workload_requests_total");
        within(n, 50.0, 0.01, "the server's requests");
        means.push(delta("ksense_workload_request_duration_seconds_sum") / n);
    }
    eprintln!("server mean: {:.2} ms from arrival, {:.2} ms from the read", means[0] * 1e3, means[1] * 1e3);
    assert!(means[0] >= 15e-3, "from arrival the mean {} s misses the 20 ms each request waited unread", means[0]);
    assert!(means[1] < 5e-3, "with sk_data_ready disabled the mean {} s should begin at the read", means[1]);
}

/// A response lost on its way keeps its client waiting for the
/// retransmission (at least the 200 ms of a loss probe or an RTO when it is
/// the only segment in flight): the server's request ends at that
/// retransmission, so the server's requests slower than 125 ms match the
/// client's own count of them, and every request is still counted (the last
/// of each connection when it closes). With request_retransmits disabled they
/// end at the first send, and none of them is that slow.
#[test]
fn root_requests_a_lost_response_ends_at_its_retransmission() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-loss");
    let mut server = Cgroup::new(&format!("/{}-lossy", test_prefix()));
    let port = "7303";
    spawn_py(&mut server, &ns, &[POOL_PY, port, "4", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    // 5 % of the server's segments that carry data (PSH: its responses, and
    // their retransmissions), never its pure ACKs: every loss is a response's.
    let drop = ["-p", "tcp", "--sport", port, "--tcp-flags", "PSH", "PSH", "-m", "statistic", "--mode", "random"];
    // On INPUT, where the client receives: a segment dropped on OUTPUT never
    // left, and is sent later as new data, not retransmitted.
    ns.exec(&[&["iptables", "-A", "INPUT"][..], &drop, &["--probability", "0.05", "-j", "DROP"]].concat());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.json");
    let bpf_off = ksense::probes::RETRANSMIT_PROGRAM;
    let mut seen = Vec::new();
    for flags in [&WORKLOADS_NOW[..], &[&WORKLOADS_NOW[..], &["--bpf.disable", bpf_off]].concat()] {
        let k = Ksense::start(flags);
        let before = k.scrape();
        let mut client = Cgroup::new(&format!("/{}-lossy-client", test_prefix()));
        spawn_py(&mut client, &ns, &[CLIENT_PY, port, "4", "150", out.to_str().unwrap()]);
        client.wait_all();
        std::thread::sleep(Duration::from_millis(300));
        let after = scrape_with(&k, &[&server.rel]);
        let own = std::fs::read_to_string(&out).unwrap();
        let field = |k: &str| json_field(&own, k);
        let (n, slow) = (field("count"), field("slow"));
        let rel = server.rel.as_str();
        let labels = [("workload", rel), ("role", "server")];
        let delta = |name: &str, extra: &[(&str, &str)]| {
            let want = [&labels[..], extra].concat();
            series_with(&after, name, &want) - series_with(&before, name, &want)
        };
        let count = delta("ksense_workload_requests_total", &[]);
        within(count, n, 0.01, "the lossy server's requests");
        let fast = delta("ksense_workload_request_duration_seconds_bucket", &[("le", "0.125")]);
        eprintln!(
            "flags {flags:?}: the client saw {slow} of {n} requests above 125 ms; the server's above it: {}",
            count - fast
        );
        assert!(slow >= 10.0, "too few lost responses to judge ({slow} slow requests of {n})");
        seen.push((slow, count - fast));
    }
    let ((own, server_slow), (own_off, off)) = (seen[0], seen[1]);
    assert!(
        (server_slow - own).abs() <= (0.1 * own).max(2.0),
        "the server's slow requests {server_slow} against the client's own {own}"
    );
    assert!(
        off <= 1.0,
        "with {bpf_off} disabled the server's requests end at the first send: {off} above 125 ms (client: {own_off})"
    );
}

/// The newest map of this name: the one this test's attach made.
fn newest_map(name: &str) -> libbpf_rs::MapHandle {
    let id = libbpf_rs::query::MapInfoIter::default()
        .filter(|m| m.name.to_str() == Some(name))
        .map(|m| m.id)
        .max()
        .unwrap_or_else(|| panic!("no BPF map named {name}"));
    libbpf_rs::MapHandle::from_map_id(id).unwrap()
}

/// `struct ks_conn`'s role (bpf/requests.bpf.c): 0 server, 1 client.
const ROLE_OFFSET: usize = ksense::probes::CONN_ROLE_OFFSET;

/// The sockets among `socks` whose state in socket storage has `role`. User
/// space looks socket storage up by a socket's fd; it cannot walk the map
/// (no get_next_key), and iterator programs that could are refused (EPERM)
/// on some kernels, this one among them.
fn with_role(socks: &[TcpStream], role: u32) -> usize {
    let map = newest_map("conns");
    assert_eq!(map.map_type(), libbpf_rs::MapType::SkStorage);
    socks
        .iter()
        .filter(|c| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(*c);
            map.lookup(&fd.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                .unwrap()
                .is_some_and(|v| u32::from_ne_bytes(v[ROLE_OFFSET..ROLE_OFFSET + 4].try_into().unwrap()) == role)
        })
        .count()
}

/// 10,000 short connections, one request each: each is counted once as a
/// server request and once as a client call; the connections held open
/// have state in the kernel, with the role of their end. On raw_tp, whose
/// table is ksense's to empty, nothing is left of them once they close; on
/// tp_btf the state is socket storage, which the kernel frees with the socket.
fn short_connections(mode: AttachMode) {
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-short");
    let s = kernel::probe();
    let p = Probes::attach(AttachMode::choose(Some(mode), &s).unwrap(), &s, &[]).unwrap();
    let table = || (mode == AttachMode::RawTp).then(|| newest_map("conns_by_addr").keys().count());
    let baseline = table();
    let (n, held) = (10_000, 100);
    let before = p.snapshot().unwrap();
    let (mut roles, mut while_open) = ((0, 0), None);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            ns.enter();
            let l = TcpListener::bind("127.0.0.1:7302").unwrap();
            let accepted = std::sync::Arc::new(Mutex::new(Vec::new()));
            let kept = accepted.clone();
            let server = std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                for c in l.incoming() {
                    let mut c = c.unwrap();
                    if c.read(&mut buf).unwrap() == 0 {
                        return; // the last, empty connection: done
                    }
                    c.write_all(b"ok\n").unwrap();
                    let mut k = kept.lock().unwrap();
                    if k.len() < held {
                        k.push(c);
                    }
                }
            });
            let mut open = Vec::new();
            for i in 0..n {
                let mut c = TcpStream::connect("127.0.0.1:7302").unwrap();
                c.write_all(b"q\n").unwrap();
                let mut buf = [0u8; 3];
                c.read_exact(&mut buf).unwrap();
                if i < held {
                    open.push(c);
                }
            }
            while_open = table();
            if mode == AttachMode::TpBtf {
                roles = (with_role(&accepted.lock().unwrap(), 0), with_role(&open, 1));
            }
            drop(open);
            accepted.lock().unwrap().clear();
            drop(TcpStream::connect("127.0.0.1:7302").unwrap());
            server.join().unwrap();
        });
    });
    std::thread::sleep(Duration::from_millis(200));
    let after = p.snapshot().unwrap();
    let (server, client) = (
        requests(&after, "server") - requests(&before, "server"),
        requests(&after, "client") - requests(&before, "client"),
    );
    within(server, n as f64, 0.01, "server requests of short connections");
    within(client, n as f64, 0.01, "client calls of short connections");
    match (baseline, while_open, table()) {
        (Some(b), Some(open), Some(left)) => {
            eprintln!("raw_tp: table entries before {b}, with {held} connections open {open}, after {left}");
            assert!(open >= b + 2 * held, "{held} open connections (two ends each), {open} entries (from {b})");
            assert!(left <= b + 5, "{left} entries left after the connections closed (from {b})");
        }
        _ => {
            eprintln!(
                "tp_btf: of {held} open connections, {} server ends and {} client ends have their role",
                roles.0, roles.1
            );
            assert_eq!(roles, (held, held), "each open end's socket storage has its role");
        }
    }
}

/// How a one-request connection ends, for the close paths below.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// The client half-closes after its request; the server answers in
    /// CLOSE_WAIT, 20 ms after it read the request, then closes.
    ClientHalfCloses,
    /// The client reads the answer and closes first; the server closes
    /// once it reads the end (ESTABLISHED, then CLOSE_WAIT, answered).
    ClientClosesFirst,
    /// The server closes right after answering (FIN_WAIT1).
    ServerClosesFirst,
}

/// Every way a connection's last request can end is counted once, at the
/// close: a server answering after its client's FIN (CLOSE_WAIT), one whose
/// client closed first, and one that closed first. The server listens on a
/// port outside the ephemeral range and its clients on ephemeral ones, as
/// the close path reads the ports. The half-closed ones waited 20 ms each.
#[test]
fn root_requests_each_close_ends_the_last_request_once() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-close");
    let s = kernel::probe();
    let p = Probes::attach(AttachMode::choose(None, &s).unwrap(), &s, &[]).unwrap();
    let n = 200;
    for ending in [Ending::ClientHalfCloses, Ending::ClientClosesFirst, Ending::ServerClosesFirst] {
        let before = p.snapshot().unwrap();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                ns.enter();
                let l = TcpListener::bind("127.0.0.1:7303").unwrap();
                let server = std::thread::spawn(move || {
                    for _ in 0..n {
                        let (mut c, _) = l.accept().unwrap();
                        let mut buf = [0u8; 16];
                        assert_eq!(c.read(&mut buf).unwrap(), 2);
                        if let Ending::ClientHalfCloses = ending {
                            assert_eq!(c.read(&mut buf).unwrap(), 0, "the client's FIN");
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        c.write_all(b"ok\n").unwrap();
                        if let Ending::ClientClosesFirst = ending {
                            assert_eq!(c.read(&mut buf).unwrap(), 0, "the client's close");
                        }
                    }
                });
                for _ in 0..n {
                    let mut c = TcpStream::connect("127.0.0.1:7303").unwrap();
                    c.write_all(b"q\n").unwrap();
                    if let Ending::ClientHalfCloses = ending {
                        c.shutdown(std::net::Shutdown::Write).unwrap();
                    }
                    let mut buf = [0u8; 3];
                    c.read_exact(&mut buf).unwrap();
                    if let Ending::ServerClosesFirst = ending {
                        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "the server's close");
                    }
                }
                server.join().unwrap();
            });
        });
        std::thread::sleep(Duration::from_millis(200));
        let after = p.snapshot().unwrap();
        let got = requests(&after, "server") - requests(&before, "server");
        within(got, n as f64, 0.01, &format!("{ending:?}: server requests"));
        let d = after.signal("requests_server").unwrap().delta(before.signal("requests_server").unwrap());
        // Slots above the one 15 ms falls in: over 15.6 ms (2^-6 s).
        let above = ksense::signals::buckets::slot_of(ksense::signals::buckets::kernel_bounds(), 15_000_000) + 1;
        let slow = d.slots.iter().skip(above).sum::<u64>() as f64;
        eprintln!("{ending:?}: {slow} of the server's requests took over 15.6 ms");
        match ending {
            Ending::ClientHalfCloses => within(slow, n as f64, 0.01, "requests answered 20 ms after the FIN"),
            _ => assert!(slow <= 2.0, "{ending:?}: {slow} requests over 15.6 ms, none waited"),
        }
    }
}

#[test]
fn root_requests_short_connections_leave_nothing_tp_btf() {
    require_root!();
    short_connections(AttachMode::TpBtf);
}

#[test]
fn root_requests_short_connections_leave_nothing_raw_tp() {
    require_root!();
    short_connections(AttachMode::RawTp);
}

/// A keep-alive connection established before the programs attached: no
/// state change gave it a role, its ports do (the client's local port is
/// ephemeral, the server's is not) at its first call, and its turns are
/// counted from there on both ends.
fn established_before(mode: AttachMode) {
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-before");
    let turns = 200;
    let (before, after) = std::thread::scope(|sc| {
        sc.spawn(|| {
            ns.enter();
            let l = TcpListener::bind("127.0.0.1:7303").unwrap();
            let server = std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 2];
                while c.read_exact(&mut buf).is_ok() {
                    c.write_all(b"ok\n").unwrap();
                }
            });
            let mut c = TcpStream::connect("127.0.0.1:7303").unwrap();
            let turn = |c: &mut TcpStream| {
                c.write_all(b"q\n").unwrap();
                c.read_exact(&mut [0u8; 3]).unwrap();
            };
            turn(&mut c); // before ksense: not counted
            let s = kernel::probe();
            let p = Probes::attach(AttachMode::choose(Some(mode), &s).unwrap(), &s, &[]).unwrap();
            let before = p.snapshot().unwrap();
            for _ in 0..turns {
                turn(&mut c);
            }
            let after = p.snapshot().unwrap();
            drop(c);
            server.join().unwrap();
            (before, after)
        })
        .join()
        .unwrap()
    });
    let delta = |role| requests(&after, role) - requests(&before, role);
    within(delta("server"), turns as f64, 0.01, "server requests of a connection older than ksense");
    within(delta("client"), turns as f64, 0.01, "client calls of a connection older than ksense");
}

#[test]
fn root_requests_connections_older_than_ksense_count_tp_btf() {
    require_root!();
    established_before(AttachMode::TpBtf);
}

#[test]
fn root_requests_connections_older_than_ksense_count_raw_tp() {
    require_root!();
    established_before(AttachMode::RawTp);
}

/// The requests' fast path (bpf/workload.h): reads made while a client runs
/// give the server's and the client's cgroups their slots and fold what they
/// counted in the hash maps, which then hold nothing of theirs, and every one
/// of the client's requests is still counted exactly once on each side.
#[test]
fn root_requests_move_to_their_slots_and_none_is_lost() {
    require_root!();
    let _one = NODE.lock().unwrap_or_else(|p| p.into_inner());
    let ns = Netns::new("req-slots");
    let mut p = common::attributed(&kernel::probe());
    let maps = p.take_workload_maps().expect("workload maps");
    let by_role = |r| maps.maps.iter().find(|m| m.family.label == Some(("role", r))).expect("a requests map");
    let (server_map, client_map) = (by_role("server"), by_role("client"));
    let mut server = Cgroup::new(&format!("/{}-slots", test_prefix()));
    let mut client = Cgroup::new(&format!("/{}-slots-client", test_prefix()));
    let id = |c: &Cgroup| std::fs::metadata(&c.path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let port = "7304";
    spawn_py(&mut server, &ns, &[POOL_PY, port, "4", "0.5"]);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.json");
    spawn_py(&mut client, &ns, &[CLIENT_PY, port, "2", "8000", out.to_str().unwrap()]);
    let mut buf = Vec::new();
    let count = |m: &ksense::signals::ids::IdMap<ksense::signals::histogram::Histogram>, id: u64| {
        m.get(&id).map_or(0, |h| h.count())
    };
    // Reads while it runs, as the model's interval makes them; from the
    // third on, 200 ms after each, the hash maps alone: nothing of theirs.
    let (mut checked, mut reads) = (0, 0);
    while !out.exists() {
        std::thread::sleep(Duration::from_millis(200));
        let (s, c) = (server_map.read_all(&mut buf).unwrap(), client_map.read_all(&mut buf).unwrap());
        reads += 1;
        if reads < 3 || count(&s, id(&server)) == 0 || count(&c, id(&client)) == 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        let (hs, hc) = (server_map.map.read_all(&mut buf).unwrap(), client_map.map.read_all(&mut buf).unwrap());
        if out.exists() {
            break; // the client ended meanwhile: nothing to tell
        }
        assert!(!hs.contains_key(&id(&server)), "the server's requests still land in the hash map");
        assert!(!hc.contains_key(&id(&client)), "the client's calls still land in the hash map");
        checked += 1;
    }
    client.wait_all();
    std::thread::sleep(Duration::from_millis(300));
    assert!(checked >= 2, "checked the hash maps {checked} times while the client ran");
    let n = json_field(&std::fs::read_to_string(&out).unwrap(), "count");
    assert_eq!(n, 16_000.0);
    let (s, c) = (server_map.read_all(&mut buf).unwrap(), client_map.read_all(&mut buf).unwrap());
    assert_eq!(count(&s, id(&server)) as f64, n, "the server's requests");
    assert_eq!(count(&c, id(&client)) as f64, n, "the client's calls");
}
