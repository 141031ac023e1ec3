#!/usr/bin/env python3
"""Two ksense builds' scrapes with 200 workloads, alternated: CPU and latency per scrape.

    sudo bench/ab-scrape.py BUILD_A BUILD_B [--pairs 3] [--workloads 200] [--spaced 40]

N cgroups (v2, --workloads, 200 by default) each with a process that sleeps 10 ms in a loop, so that
every workload waits in the run queue; then each build in turn (A B, B A,
A B, ...) with attribution on, one at a time: 1500 scrapes back to back on a
kept-alive connection (the process's CPU time over them, per scrape, and
latency) and 40 scrapes each after a pause of 0.3-1.7 s, as Prometheus
scrapes (the model's 1 s interval reads the maps in between; the process's
CPU time during each, from schedstat), and the minor
page faults of each (fresh memory mapped by the scrape). Prints one row per
run and the medians of each build, and B/A.
"""
import argparse
import http.client
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qos"))
from qos import cgroup2_root  # noqa: E402  (one reading of /proc/self/mountinfo for the benchmarks)


def die(msg):
    print(f"ab-scrape: {msg}", file=sys.stderr)
    sys.exit(1)




def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid):
    """CPU time of all the process's threads, in ns (schedstat: finer than stat's ticks)."""
    return sum(int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0]) for t in os.listdir(f"/proc/{pid}/task"))


def minor_faults(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def q(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)]


def run(build, workloads, back_to_back, spaced):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        ks = subprocess.Popen(
            [build, "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error",
             "--workloads.enabled", "true", "--workloads.max", str(workloads + 8),
             "--model.state-file", os.path.join(d, "baseline.json")],
            stdout=subprocess.DEVNULL)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.monotonic()
            while True:  # every workload exported
                try:
                    c.request("GET", "/metrics")
                    body = c.getresponse().read().decode()
                    n = sum(1 for l in body.splitlines()
                            if l.startswith("ksense_workload_runqueue_latency_seconds_count{") and "/ksense-ab-" in l)
                    if n >= workloads:
                        break
                except OSError:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                if time.monotonic() - t0 > 60:
                    die(f"{build}: {workloads} workloads not all exported within 60 s")
                time.sleep(0.5)
            if ks.poll() is not None:
                die(f"{build} exited")
            lat = []
            c0, f0 = cpu_seconds(ks.pid), minor_faults(ks.pid)
            for _ in range(back_to_back):
                t = time.monotonic()
                c.request("GET", "/metrics")
                c.getresponse().read()
                lat.append(time.monotonic() - t)
            cpu = (cpu_seconds(ks.pid) - c0) / back_to_back
            b2b_flt = (minor_faults(ks.pid) - f0) / back_to_back
            cold, cold_flt, cold_cpu = [], [], []
            for _ in range(spaced):
                time.sleep(random.uniform(0.3, 1.7))
                f0, n0 = minor_faults(ks.pid), cpu_ns(ks.pid)
                t = time.monotonic()
                c.request("GET", "/metrics")
                c.getresponse().read()
                cold.append(time.monotonic() - t)
                cold_cpu.append(cpu_ns(ks.pid) - n0)
                cold_flt.append(minor_faults(ks.pid) - f0)
            return {"cpu": cpu * 1e3, "b2b_p50": q(lat, 0.5) * 1e3, "b2b_p99": q(lat, 0.99) * 1e3,
                    "cold_p50": q(cold, 0.5) * 1e3, "cold_p99": q(cold, 0.99) * 1e3,
                    "cpu_c50": q(cold_cpu, 0.5) / 1e6, "cpu_c99": q(cold_cpu, 0.99) / 1e6,
                    "b2b_flt": b2b_flt, "cold_flt": statistics.median(cold_flt)}
        finally:
            ks.terminate()
            ks.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--workloads", type=int, default=200)
    ap.add_argument("--back-to-back", type=int, default=1500)
    ap.add_argument("--spaced", type=int, default=40)
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (BPF, cgroups)")
    for b in (args.a, args.b):
        if not os.access(b, os.X_OK):
            die(f"{b}: not an executable")
    cg2 = cgroup2_root()
    if cg2 is None:
        die("no cgroup v2 hierarchy mounted")
    root = os.path.join(cg2, f"ksense-ab-{os.getpid()}")
    os.mkdir(root)
    kids, dirs = [], []
    try:
        for i in range(args.workloads):
            d = os.path.join(root, f"w{i}")
            os.mkdir(d)
            dirs.append(d)
            p = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"])
            kids.append(p)
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(p.pid))
        cols = ["cpu", "b2b_p50", "b2b_p99", "cold_p50", "cold_p99", "cpu_c50", "cpu_c99", "b2b_flt", "cold_flt"]
        print(f"{args.workloads} workloads; ms per scrape: CPU of the ksense process over {args.back_to_back} "
              f"back-to-back scrapes (b2b), latency b2b and of {args.spaced} scrapes after 0.3-1.7 s pauses (cold), "
              f"its CPU during each cold one (cpu_c50, cpu_c99: any other work of its threads then included); "
              f"minor page faults per scrape (flt: mean b2b, median cold)")
        print(f"{'run':<8}" + "".join(f"{c:>10}" for c in cols))
        res = {"A": [], "B": []}
        for k in range(args.pairs):
            for name in ("AB" if k % 2 == 0 else "BA"):
                r = run(args.a if name == "A" else args.b, args.workloads, args.back_to_back, args.spaced)
                res[name].append(r)
                print(f"{name} {k + 1:<6}" + "".join(f"{r[c]:>10.3f}" for c in cols), flush=True)
        med = {n: {c: statistics.median(r[c] for r in res[n]) for c in cols} for n in res}
        for n in ("A", "B"):
            print(f"{n + ' med':<8}" + "".join(f"{med[n][c]:>10.3f}" for c in cols))
        print(f"{'B/A':<8}" + "".join(f"{med['B'][c] / med['A'][c] if med['A'][c] else float('nan'):>10.2f}" for c in cols))
    finally:
        for p in kids:
            p.kill()
        for p in kids:
            p.wait()
        time.sleep(0.5)
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError as e:
                print(f"ab-scrape: {d}: {e}", file=sys.stderr)
        os.rmdir(root)


if __name__ == "__main__":
    main()
