#!/usr/bin/env python3
"""Two ksense builds attached at once on the same events: ns/run per program, side by side.

    sudo bench/ab-builds.py BUILD_A BUILD_B [ksense flags...]

nginx (1 worker, CPU 1) under wrk (1 thread, 32 connections, CPU 0, 3 s) in a
network namespace of its own, four times, the two builds started in the order
A B, B A, A B, B A: on a hook the first-attached program pays the cache misses
of what it reads and the second finds the lines warm, so only a pair of runs
in both orders compares two builds. Prints, per run, each program's runs per
request and ns/run (the kernel's run_time_ns / run_cnt as each ksense serves
them) for A and B, and B/A.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qos"))
from qos import Netns, make_site, wait_url_in  # noqa: E402


def die(msg):
    print(f"ab-builds: {msg}", file=sys.stderr)
    sys.exit(1)


def programs(port):
    runs, secs = {}, {}
    for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode().splitlines():
        m = re.match(r'ksense_bpf_program_(runs_total|run_seconds_total)\{program="(\w+)"\} (\S+)', line)
        if m:
            (runs if m.group(1) == "runs_total" else secs)[m.group(2)] = float(m.group(3))
    return runs, secs


def start(binary, port, tmp, extra):
    p = subprocess.Popen([binary, "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn",
                          "--model.state-file", f"{tmp}/state-{port}.json"] + extra, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if p.poll() is not None:
            die(f"{binary} exited with {p.returncode}")
        try:
            programs(port)
            return p
        except OSError:
            time.sleep(0.1)
    die(f"{binary} did not serve /metrics within 15 s")


def main():
    if len(sys.argv) < 3:
        die(__doc__.strip().splitlines()[2].strip())
    if os.geteuid() != 0:
        die("needs root (BPF, a network namespace)")
    builds, extra = sys.argv[1:3], sys.argv[3:]
    for b in builds:
        if not os.access(b, os.X_OK):
            die(f"{b} is not an executable")
    if subprocess.run(["pgrep", "-x", "ksense"], capture_output=True).returncode == 0:
        die("another ksense is running; its programs would be on the same hooks")
    tmp = tempfile.mkdtemp(prefix="ksense-ab-")
    os.chmod(tmp, 0o755)
    ns = Netns()
    nginx = subprocess.Popen(ns.cmd(["taskset", "-c", "1", "nginx", "-c", make_site(tmp, 8080, 1), "-g", "daemon off;"]),
                             start_new_session=True)
    try:
        wait_url_in(ns, "http://127.0.0.1:8080/static.html", "nginx")
        for order in ([0, 1], [1, 0], [0, 1], [1, 0]):
            ks = {i: (19830 + i, start(builds[i], 19830 + i, tmp, extra)) for i in order}
            time.sleep(1)
            a = {i: programs(ks[i][0]) for i in ks}
            r = subprocess.run(ns.cmd(["taskset", "-c", "0", "wrk", "-t1", "-c32", "-d3s",
                                       "http://127.0.0.1:8080/static.html"]), capture_output=True, text=True)
            b = {i: programs(ks[i][0]) for i in ks}
            m = re.search(r"(\d+) requests in", r.stdout)
            if not m:
                die(f"wrk failed: {r.stdout}{r.stderr}")
            n = float(m.group(1))
            print(f"{'A' if order[0] == 0 else 'B'} attached first, {n:.0f} requests")
            for p in sorted(b[0][0]):
                row = []
                for i in (0, 1):
                    runs = b[i][0].get(p, 0) - a[i][0].get(p, 0)
                    ns_run = (b[i][1].get(p, 0) - a[i][1].get(p, 0)) * 1e9 / runs if runs else 0.0
                    row.append((runs / n, ns_run))
                if max(row[0][0], row[1][0]) > 0.01:
                    ratio = row[1][1] / row[0][1] if row[0][1] else float("nan")
                    print(f"  {p:22} runs/req {row[0][0]:5.2f} {row[1][0]:5.2f}  ns/run A {row[0][1]:7.1f}"
                          f"  B {row[1][1]:7.1f}  B/A {ratio:5.2f}")
            for _, p in ks.values():
                p.send_signal(signal.SIGTERM)
                p.wait(10)
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(10)
        ns.delete()


if __name__ == "__main__":
    main()
