#!/usr/bin/env python3
"""What ksense costs the applications, end to end (issue 15).

  sudo bench/overhead.py [--rounds 7] [--seconds 3] [--seed 1] [--ksense target/release/ksense]
                        [--floor BENCH_BINARY] [--pipe-only] [--configs off,floor,default,all]
                        [--page static|dyn]

Two workloads, each measured with ksense off, with empty BPF programs on every
tracepoint the default uses (floor: what any tracer on these hooks costs,
`KSENSE_BENCH_PART=floor` of the cost bench, whose binary --floor names or
cargo finds), with its default configuration, the default with the kernel's
BPF run-time statistics held (--bpf.stats, off by default), the default
timing run-queue waits from the wakeups (wakeup: --bpf.sched-waits wakeup, as
where the kernel keeps no sched_info), the default without the requests family
(no-requests) and with everything on
(--workloads.enabled), in interleaved rounds: every
round runs the configurations in a freshly shuffled order, and each
configuration is compared with `off` of the same round, so the slow drift of
a shared machine cancels out of the ratios.

  nginx   real nginx (1 worker, CPU 1) under wrk (1 thread, 32 connections,
          CPU 0), both in a network namespace of the benchmark's own (MTU
          1500): requests/s, wrk's P99, and busy CPU time (/proc/stat, all
          CPUs) per request, the figure least disturbed by other tenants.
          --page static (default): a 4 KiB page, the thinnest request, where
          a tracer's fixed cost per event weighs most; --page dyn: a 45 kB
          text gzipped anew on every request, a request with work in it.
  pipe    `perf bench sched pipe` pinned to one CPU: two tasks ping-pong over
          a pipe, two context switches per operation, the switch path at its
          hottest: µs per operation.

--pipe-only skips nginx, and --configs runs only the configurations it names
(`off` always among them): rounds take less time, so more fit (e.g. --rounds
20) where the host is too noisy for 7 to say much.

Prints, for each configuration against `off` (and against the floor, and
`all` against `default`: what attribution adds): the median of the per-round
changes and a 95 % bootstrap interval of that median. Fails (exit 1) when a
tool is missing or a run does not produce its figure: never a partial table.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "qos"))
from qos import Netns, make_site, wait_url_in  # noqa: E402  (the QoS benchmark's nginx site and namespace)

# no-requests: the default without the requests family's four socket programs (bpf/requests.bpf.c);
# its hook on tcp_retransmit_skb stays, idle here (no loss).
FLOOR = "floor"  # not ksense: the cost bench's empty programs
# The QoS benchmark's two resources (qos.make_site): the thinnest request, and one with work in it.
PAGES = {"static": "/static.html", "dyn": "/dyn"}
# wakeup: the default timing waits from sched_wakeup, as where the kernel keeps no sched_info.
CONFIGS = {"off": None, FLOOR: None, "default": [], "wakeup": ["--bpf.sched-waits", "wakeup"], "stats": ["--bpf.stats"],
           "no-requests": ["--bpf.disable", "inet_sock_set_state,sk_data_ready,sock_recv_length,sock_send_length"],
           "all": ["--workloads.enabled"]}


def die(msg):
    print(f"overhead: {msg}", file=sys.stderr)
    sys.exit(1)


def busy_ticks():
    """Busy jiffies of all CPUs (user+nice+system+irq+softirq+steal), from /proc/stat."""
    f = open("/proc/stat").readline().split()[1:]
    v = [int(x) for x in f]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


class Ksense:
    def __init__(self, binary, extra, tmp):
        self.port = 19900 + random.randrange(90)
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        argv = [binary, "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn",
                "--model.state-file", os.path.join(tmp, "state.json")] + extra
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "ksense.log"), "a"))
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.p.poll() is not None:
                die(f"ksense exited with {self.p.returncode}: see {tmp}/ksense.log")
            try:
                urllib.request.urlopen(self.url, timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        die("ksense did not serve /metrics within 15 s")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            die("ksense did not stop within 10 s of SIGTERM")


class Floor:
    """The cost bench's empty programs, attached until its stdin closes."""

    def __init__(self, binary):
        self.p = subprocess.Popen([binary], env=dict(os.environ, KSENSE_BENCH_PART="floor"), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("floor attached"):
            die(f"{binary} did not attach the floor (rc {self.p.wait()}): {line.strip()}")

    def stop(self):
        self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            die("the floor did not stop within 10 s")


def find_floor():
    """The cost bench's binary, built by cargo if it is not yet."""
    r = subprocess.run(["cargo", "bench", "--bench", "cost", "--no-run", "--message-format=json"], cwd=REPO,
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if '"executable"' in line and '"cost"' in line:
            exe = json.loads(line).get("executable")
            if exe:
                return exe
    die(f"cannot build the cost bench for the floor (give --floor):\n{r.stderr[-2000:]}")


def run_nginx(ns, url, seconds):
    t0 = busy_ticks()
    r = subprocess.run(ns.cmd(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url]),
                       capture_output=True, text=True, timeout=seconds + 30)
    t1 = busy_ticks()
    m = re.search(r"(\d+) requests in", r.stdout)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", r.stdout, re.M)
    if r.returncode != 0 or not m or not p99 or "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
        die(f"wrk failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")
    reqs = int(m.group(1))
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[p99.group(2)]
    hz = os.sysconf("SC_CLK_TCK")
    return {"rps": reqs / seconds, "p99": float(p99.group(1)) * scale, "cpu_us": (t1 - t0) / hz / reqs * 1e6}


def run_pipe(loops):
    r = subprocess.run(["taskset", "-c", "1", "perf", "bench", "sched", "pipe", "-l", str(loops)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"([\d.]+)\s+usecs/op", r.stdout)
    if r.returncode != 0 or not m:
        die(f"perf bench sched pipe failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return {"us_op": float(m.group(1))}


def median_ci(xs, rng, n=2000):
    """The median and a 95 % bootstrap interval of it."""
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return statistics.median(xs), meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=3, help="wrk run length")
    ap.add_argument("--loops", type=int, default=100000, help="perf bench sched pipe operations per run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ksense", default=os.path.join(REPO, "target/release/ksense"))
    ap.add_argument("--floor", help="the cost bench's binary (default: built and found by cargo)")
    ap.add_argument("--pipe-only", action="store_true", help="only perf bench sched pipe, no nginx")
    ap.add_argument("--configs", help=f"comma-separated subset of {','.join(CONFIGS)} (off is always run)")
    ap.add_argument("--page", choices=sorted(PAGES), default="static",
                    help="what nginx serves: static (a 4 KiB page) or dyn (45 kB of text gzipped on every request)")
    args = ap.parse_args()
    configs = list(CONFIGS)
    if args.configs:
        asked = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in asked if c not in CONFIGS]
        if unknown:
            die(f"unknown configuration(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
        configs = [c for c in CONFIGS if c == "off" or c in asked]
    if os.geteuid() != 0:
        die("needs root (BPF, a network namespace)")
    floor_bin = (args.floor or find_floor()) if FLOOR in configs else None
    if floor_bin and not os.access(floor_bin, os.X_OK):
        die(f"{floor_bin} is not an executable")
    tools = (("perf", "linux-perf"), ("taskset", "util-linux"))
    if not args.pipe_only:
        tools += (("nginx", "nginx"), ("wrk", "wrk"), ("ip", "iproute2"), ("curl", "curl"))
    for tool, pkg in tools:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            die(f"{tool} is not installed (Debian package {pkg})")
    if not os.access(args.ksense, os.X_OK):
        die(f"{args.ksense} is not built (cargo build --release)")
    # Another ksense (or any tracer) on the same tracepoints would be in every
    # configuration, `off` included, and hold the BPF statistics on.
    others = subprocess.run(["pgrep", "-x", "ksense"], capture_output=True, text=True).stdout.split()
    if others:
        die(f"another ksense is running (pid {', '.join(others)}): stop it first")
    if os.cpu_count() < 2:
        die("needs 2 CPUs: the server and the client on separate ones")
    rng = random.Random(args.seed)

    tmp = tempfile.mkdtemp(prefix="ksense-overhead-")
    ns = None if args.pipe_only else Netns()
    nginx = None
    keys = ("us_op",) if args.pipe_only else ("rps", "p99", "cpu_us", "us_op")
    try:
        if ns:
            port = 8080
            conf = make_site(tmp, port, 1)
            # A session of its own: the workers go with the master at the end.
            nginx = subprocess.Popen(ns.cmd(["taskset", "-c", "1", "nginx", "-c", conf, "-g", "daemon off;"]),
                                     start_new_session=True)
            url = f"http://127.0.0.1:{port}{PAGES[args.page]}"
            wait_url_in(ns, url, "nginx")
            run_nginx(ns, url, 1)  # warm the page cache and nginx
        results = {c: [] for c in configs}
        for r in range(args.rounds):
            order = list(configs)
            rng.shuffle(order)
            for c in order:
                if c == FLOOR:
                    k = Floor(floor_bin)
                else:
                    k = Ksense(args.ksense, CONFIGS[c], tmp) if CONFIGS[c] is not None else None
                time.sleep(0.5)  # attach, first reads
                res = run_nginx(ns, url, args.seconds) if ns else {}
                res.update(run_pipe(args.loops))
                if k:
                    k.stop()
                results[c].append(res)
                web = "" if not ns else (f"{res['rps']:9.0f} req/s  p99 {res['p99'] * 1e3:6.2f} ms  "
                                         f"{res['cpu_us']:6.1f} CPU-us/req  ")
                print(f"round {r + 1}/{args.rounds} {c:8} {web}pipe {res['us_op']:6.2f} us/op", flush=True)
    finally:
        if nginx:
            os.killpg(nginx.pid, signal.SIGTERM)
            nginx.wait(10)
        if ns:
            ns.delete()
        shutil.rmtree(tmp, ignore_errors=True)

    def change(c, key, base):
        return [100.0 * (x[key] / o[key] - 1.0) for x, o in zip(results[c], results[base])]

    titles = {"rps": "nginx req/s", "p99": "nginx P99", "cpu_us": "CPU per request", "us_op": "pipe us/op"}

    def table(base, configs):
        print(f"{'':12}" + "".join(f"{titles[k]:>27}" for k in keys))
        for c in configs:
            cells = []
            for key in keys:
                m, lo, hi = median_ci(change(c, key, base), rng)
                cells.append(f"{m:+6.2f} % [{lo:+.2f}, {hi:+.2f}]")
            print(f"{c:12}" + "".join(f"{x:>27}" for x in cells))

    print()
    if ns:
        print(f"nginx page: {PAGES[args.page]}")
    print(f"change against ksense off, median of {args.rounds} paired rounds [95 % bootstrap interval]")
    table("off", [c for c in configs if c != "off"])
    if FLOOR in configs:
        print("against the floor (what ksense's programs add to the cost of any tracer on its hooks), same rounds")
        table(FLOOR, [c for c in configs if c not in ("off", FLOOR)])
    if "default" in configs and "all" in configs:
        print("attribution: all against the default, same rounds")
        table("default", ["all"])
    off = results["off"]
    web = "" if not ns else (f"{statistics.median(x['rps'] for x in off):.0f} req/s, "
                             f"P99 {statistics.median(x['p99'] for x in off) * 1e3:.2f} ms, "
                             f"{statistics.median(x['cpu_us'] for x in off):.1f} CPU-us/req, ")
    print(f"off: {web}pipe {statistics.median(x['us_op'] for x in off):.2f} us/op (medians)")


if __name__ == "__main__":
    main()
