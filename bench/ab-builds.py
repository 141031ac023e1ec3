#!/usr/bin/env python3
"""Two ksense builds attached at once on the same events: ns/run per program, side by side.

    sudo bench/ab-builds.py [--storm nginx|pipe|switch] [--pairs N] [--loss PCT] BUILD_A BUILD_B [ksense flags...]

A storm run with both builds attached, 2 x N times (N = 2 by default), the
two builds started in the order A B, B A, A B, B A, ...: on a hook the
first-attached program pays the cache misses of what it reads and the second
finds the lines warm, so only runs in both orders compare two builds.
Storms: `nginx` (the default), nginx (1 worker, CPU 1) under wrk (1 thread,
32 keep-alive connections, CPU 0, 3 s) in a network namespace of its own, with
300 short connections a second beside it (connect, one request, close; so
that inet_sock_set_state runs, as in the cost bench's requests storm) and, with
`--loss PCT`, PCT % of nginx's segments dropped (iptables' statistic match, as the
cost bench's network storm: tcp_retransmit_skb and kfree_skb run); `pipe`, `perf
bench sched pipe` (200,000 round trips; the cost bench's pipe storm);
`switch`, `stress-ng --switch 2` for 3 s. Prints, per run, each program's runs
per unit of work (a request, a pipe round trip, a second) and ns/run (the
kernel's run_time_ns / run_cnt as each ksense serves them) for A and B, and
B/A; then, per program, the median B/A of each attach order.
"""
import os
import re
import shutil
import signal
import statistics
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
                          "--model.state-file", f"{tmp}/state-{port}.json", "--bpf.stats"] + extra, stderr=subprocess.DEVNULL)
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


def storm(kind, ns):
    """Runs one storm; returns its units of work (requests, round trips, seconds)."""
    if kind == "pipe":
        loops = 200_000
        r = subprocess.run(["perf", "bench", "sched", "pipe", "-l", str(loops)], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"perf bench sched pipe failed: {r.stderr.strip()}")
        return float(loops)
    if kind == "switch":
        r = subprocess.run(["stress-ng", "--switch", "2", "--timeout", "3s", "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"stress-ng failed: {r.stderr.strip()}")
        return 3.0
    churn = subprocess.Popen(ns.cmd([sys.executable, "-c", CHURN, "3", str(CHURN_PER_SEC)]),
                             stdout=subprocess.PIPE, text=True)
    r = subprocess.run(ns.cmd(["taskset", "-c", "0", "wrk", "-t1", "-c32", "-d3s",
                               "http://127.0.0.1:8080/static.html"]), capture_output=True, text=True)
    out, _ = churn.communicate(timeout=10)
    if churn.returncode != 0:
        die("the short connections failed")
    print(f"  ({out.strip()} short connections beside wrk)")
    m = re.search(r"(\d+) requests in", r.stdout)
    if not m:
        die(f"wrk failed: {r.stdout}{r.stderr}")
    return float(m.group(1))


CHURN_PER_SEC = 300  # as benches/cost.rs's CHURN_PER_SEC
# Short connections to nginx for argv[1] seconds at argv[2] a second; prints how many.
CHURN = """
import socket, sys, time
secs, rate = float(sys.argv[1]), int(sys.argv[2])
t, n = time.monotonic(), 0
while time.monotonic() - t < secs:
    c = socket.create_connection(("127.0.0.1", 8080))
    c.sendall(b"GET /static.html HTTP/1.1\\r\\nHost: bench\\r\\nConnection: close\\r\\n\\r\\n")
    while c.recv(65536):
        pass
    c.close()
    n += 1
    time.sleep(max(0.0, t + n / rate - time.monotonic()))
print(n)
"""
# Each storm: its unit of work, and the tools it runs.
STORMS = {"nginx": ("req", ["nginx", "wrk"]), "pipe": ("trip", ["perf"]), "switch": ("s", ["stress-ng"])}


def main():
    args = sys.argv[1:]
    kind, pairs, loss = "nginx", 2, 0.0
    while args and args[0].startswith("--"):
        if len(args) < 2:
            die(f"{args[0]} needs a value")
        if args[0] == "--storm" and args[1] in STORMS:
            kind = args[1]
        elif args[0] == "--pairs" and args[1].isdigit() and int(args[1]) > 0:
            pairs = int(args[1])
        elif args[0] == "--loss" and re.fullmatch(r"\d+(\.\d+)?", args[1]) and float(args[1]) < 100:
            loss = float(args[1])
        else:
            die(f"unknown option or value: {args[0]} {args[1]}")
        args = args[2:]
    if len(args) < 2:
        die(__doc__.strip().splitlines()[2].strip())
    if os.geteuid() != 0:
        die("needs root (BPF, a network namespace)")
    unit, tools = STORMS[kind]
    if loss and kind != "nginx":
        die("--loss is for the nginx storm")
    if loss:
        tools = tools + ["iptables"]
    for t in tools:
        if shutil.which(t) is None:
            die(f"{t} is not installed; the {kind} storm needs it")
    builds, extra = args[:2], args[2:]
    for b in builds:
        if not os.access(b, os.X_OK):
            die(f"{b} is not an executable")
    if subprocess.run(["pgrep", "-x", "ksense"], capture_output=True).returncode == 0:
        die("another ksense is running; its programs would be on the same hooks")
    tmp = tempfile.mkdtemp(prefix="ksense-ab-")
    os.chmod(tmp, 0o755)
    ns = Netns() if kind == "nginx" else None
    nginx = None
    if ns:
        nginx = subprocess.Popen(ns.cmd(["taskset", "-c", "1", "nginx", "-c", make_site(tmp, 8080, 1), "-g",
                                         "daemon off;"]), start_new_session=True)
    ratios = {}
    try:
        if ns:
            wait_url_in(ns, "http://127.0.0.1:8080/static.html", "nginx")
        if loss:
            ns.run(["iptables", "-A", "INPUT", "-p", "tcp", "--sport", "8080", "-m", "statistic", "--mode",
                    "random", "--probability", str(loss / 100), "-j", "DROP"])
        for order in [[0, 1], [1, 0]] * pairs:
            ks = {i: (19830 + i, start(builds[i], 19830 + i, tmp, extra)) for i in order}
            time.sleep(1)
            a = {i: programs(ks[i][0]) for i in ks}
            n = storm(kind, ns)
            b = {i: programs(ks[i][0]) for i in ks}
            first = "A" if order[0] == 0 else "B"
            print(f"{first} attached first, {n:.0f} {unit}")
            for p in sorted(b[0][0]):
                row = []
                for i in (0, 1):
                    runs = b[i][0].get(p, 0) - a[i][0].get(p, 0)
                    ns_run = (b[i][1].get(p, 0) - a[i][1].get(p, 0)) * 1e9 / runs if runs else 0.0
                    row.append((runs / n, ns_run))
                if max(row[0][0], row[1][0]) * n >= 100:
                    ratio = row[1][1] / row[0][1] if row[0][1] else float("nan")
                    ratios.setdefault((p, first), []).append(ratio)
                    print(f"  {p:22} runs/{unit} {row[0][0]:7.2f} {row[1][0]:7.2f}  ns/run A {row[0][1]:7.1f}"
                          f"  B {row[1][1]:7.1f}  B/A {ratio:5.2f}")
            for _, p in ks.values():
                p.send_signal(signal.SIGTERM)
                p.wait(10)
        print("median B/A       A first  B first")
        for p in sorted({p for p, _ in ratios}):
            med = [statistics.median(ratios.get((p, f), [float("nan")])) for f in ("A", "B")]
            print(f"  {p:22} {med[0]:5.2f}    {med[1]:5.2f}")
    finally:
        if nginx:
            os.killpg(nginx.pid, signal.SIGTERM)
            nginx.wait(10)
        if ns:
            ns.delete()


if __name__ == "__main__":
    main()
