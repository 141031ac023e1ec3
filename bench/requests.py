#!/usr/bin/env python3
"""Does the request latency ksense infers from socket calls track the client's own P99?

    sudo bench/requests.py [--server nginx|redis] [--seed S] [--windows N] [--window SECONDS]

A real server in a network namespace, under its own load generator, which reports the latency
it saw (nginx under wrk with bench/qos/rate.lua, ~1,600 requests/s on 16 keep-alive
connections; redis-server under redis-benchmark, GET on 8 connections). Each window runs one
interference picked at random (stress-ng CPU, I/O and memory storms, or 2 % loss on the
server's port; a pipe storm, stress-ng --pipe 2, left the machine unresponsive, wrk making 15
requests in 4 s and scrapes timing out, so it is not among them), and compares the load
generator's P99 with the P99 of three histograms ksense served over the same window:

  arrival  the default: a server request begins when its data reaches the socket (sk_data_ready)
  read     a second ksense with `--bpf.disable sk_data_ready`: it begins when the server reads it
  client   the load generator's own calls, as ksense saw them from its socket calls

Two ksense run side by side, so both starts are measured on the same requests. Prints one line
per window and Spearman's rho of each against the generator's P99, over all windows and without
the loss windows (losses before a request arrives or after its response leaves are invisible
to the server). Needs root, nginx, wrk, redis-server, redis-benchmark and stress-ng.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "qos"))
from common import client_p99_ms, spearman  # noqa: E402  (the QoS benchmark's Spearman, with ties)
from qos import Netns, make_site, wait_url_in  # noqa: E402  (its nginx site and namespace)

REPO = os.path.dirname(HERE)
# Classic bounds at every kernel bucket from 2^-18 s to 16 s: the full resolution in text.
BOUNDS = ",".join(repr(2.0 ** (i / 4)) for i in range(-72, 17))
PORT = 8080
INTERFERENCE = {
    "none": None,
    "cpu1": ["stress-ng", "--cpu", "1"],
    "cpu2": ["stress-ng", "--cpu", "2"],
    "cpu4": ["stress-ng", "--cpu", "4"],
    "cpu2-nice": ["nice", "-n", "10", "stress-ng", "--cpu", "2"],
    "io": ["stress-ng", "--hdd", "2", "--hdd-bytes", "128M", "--temp-path", "/var/tmp"],
    "vm": ["stress-ng", "--vm", "2", "--vm-bytes", "1G"],
    "loss": "loss",
}


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()


def buckets(text, name, role=None):
    """Cumulative classic buckets {le: count} of one histogram (one role)."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{") or (role and f'role="{role}"' not in line):
            continue
        le = re.search(r'[{,]le="([^"]+)"', line).group(1)
        out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def p99(a, b):
    """P99 of the events between two scrapes, interpolated in its bucket as histogram_quantile does."""
    les = sorted(b)
    cum = [b[le] - a.get(le, 0.0) for le in les]
    if not cum or cum[-1] <= 0:
        return float("nan")
    rank, prev_le, prev_c = 0.99 * cum[-1], 0.0, 0.0
    for le, c in zip(les, cum):
        if c >= rank:
            return prev_le if le == float("inf") else prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return les[-1]


def start_server(kind, ns, d):
    if kind == "nginx":
        conf = make_site(d, PORT, 2)
        p = subprocess.Popen(ns.cmd(["nginx", "-c", conf, "-g", "daemon off;"]), start_new_session=True)
        wait_url_in(ns, f"http://127.0.0.1:{PORT}/static.html", "nginx")
        return p
    p = subprocess.Popen(ns.cmd(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"]), stdout=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        r = subprocess.run(ns.cmd(["redis-cli", "-p", str(PORT), "ping"]), capture_output=True, text=True)
        if r.stdout.startswith("PONG"):
            return p
        time.sleep(0.1)
    raise RuntimeError("redis-server did not answer")


def load(kind, ns, seconds):
    """Runs the load generator for about `seconds`: (requests, its reported P99, the P99 of the
    requests it timed, in s; they differ for wrk only: qos/common.py TRUTHS)."""
    if kind == "nginx":
        env = dict(os.environ, QOS_DELAY_MS="10", QOS_DYN_EVERY="4", QOS_CONNECTIONS="16")
        r = subprocess.run(ns.cmd(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", "-s",
                                   os.path.join(HERE, "qos", "rate.lua"), f"http://127.0.0.1:{PORT}"]),
                           env=env, capture_output=True, text=True)
        w = json.loads(re.search(r"^QOS (\{.*\})$", r.stdout, re.M).group(1))
        return w["requests"], w["p"]["99"] / 1e6, client_p99_ms(w, kind, "measured") / 1e3
    # redis-benchmark runs a request count, not a time: ~20,000/s on this machine's two cores when quiet
    n = 20000 * seconds
    r = subprocess.run(ns.cmd(["redis-benchmark", "-p", str(PORT), "-t", "get", "-n", str(n), "-c", "8", "--csv"]),
                       capture_output=True, text=True, timeout=600)
    row = r.stdout.strip().splitlines()[-1].replace('"', "").split(",")
    return n, float(row[6]) / 1e3, float(row[6]) / 1e3  # p99_latency_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["nginx", "redis"], default="nginx")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--windows", type=int, default=18)
    ap.add_argument("--window", type=int, default=4, help="seconds")
    ap.add_argument("--ksense", default=os.path.join(REPO, "target", "release", "ksense"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("requests.py: run as root (ksense loads BPF programs)")
    if subprocess.run(["pgrep", "-x", "ksense"], capture_output=True).returncode == 0:
        sys.exit("requests.py: another ksense is running; its programs would count here too")
    d = tempfile.mkdtemp()
    os.chmod(d, 0o755)
    ns = Netns()
    procs, rows, p = [], [], None
    try:
        ks = {}
        for name, extra in (("arrival", []), ("read", ["--bpf.disable", "sk_data_ready"])):
            port = 19900 + len(ks)
            procs.append(subprocess.Popen([args.ksense, "--web.listen-address", f"127.0.0.1:{port}",
                                           "--web.classic-buckets", BOUNDS, "--log.level", "warn",
                                           "--model.state-file", os.path.join(d, f"{name}.json")] + extra))
            ks[name] = port
        time.sleep(3)
        procs.append(start_server(args.server, ns, d))
        rnd = random.Random(args.seed)
        names = list(INTERFERENCE) * (args.windows // len(INTERFERENCE) + 1)
        rnd.shuffle(names)
        for ph in names[:args.windows]:
            p = None
            if INTERFERENCE[ph] == "loss":
                ns.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(PORT), "-m", "statistic",
                        "--mode", "random", "--probability", "0.02", "-j", "DROP"])
            elif INTERFERENCE[ph]:
                p = subprocess.Popen(INTERFERENCE[ph], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
            time.sleep(1)
            a = {k: scrape(v) for k, v in ks.items()}
            n, own, measured = load(args.server, ns, args.window)
            b = {k: scrape(v) for k, v in ks.items()}
            if p:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if INTERFERENCE[ph] == "loss":
                ns.run(["iptables", "-F", "INPUT"])
            h = "ksense_request_duration_seconds"
            row = {"phase": ph, "requests": n, "own_p99_ms": own * 1e3, "measured_p99_ms": measured * 1e3,
                   "arrival_ms": p99(buckets(a["arrival"], h, "server"), buckets(b["arrival"], h, "server")) * 1e3,
                   "read_ms": p99(buckets(a["read"], h, "server"), buckets(b["read"], h, "server")) * 1e3,
                   "client_ms": p99(buckets(a["arrival"], h, "client"), buckets(b["arrival"], h, "client")) * 1e3}
            rows.append(row)
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    finally:
        if p and p.poll() is None:  # the interference of a window cut short
            os.killpg(p.pid, signal.SIGKILL)
        for q in reversed(procs):
            try:
                # nginx and redis run in sessions of their own: their workers go with them
                os.killpg(q.pid, signal.SIGTERM) if q.args[0] == "ip" else q.send_signal(signal.SIGTERM)
                q.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                q.kill()
        ns.delete()
    for truth, col in (("reported P99", "own_p99_ms"), ("P99 of the requests it timed", "measured_p99_ms")):
        if truth != "reported P99" and args.server != "nginx":
            break  # redis-benchmark reports the P99 of its requests
        print(f"\n{args.server}, seed {args.seed}: Spearman rho against the load generator's {truth}")
        print(f"  {'windows':<24} {'n':>3} {'arrival':>8} {'read':>8} {'client':>8}")
        for label, keep in (("all", lambda r: True), ("without loss", lambda r: r["phase"] != "loss")):
            rs = [r for r in rows if keep(r)]
            own = [r[col] for r in rs]
            rho = [spearman([r[k] for r in rs], own)[0] for k in ("arrival_ms", "read_ms", "client_ms")]
            print(f"  {label:<24} {len(rs):>3} " + " ".join(f"{x:8.3f}" for x in rho))


if __name__ == "__main__":
    main()
