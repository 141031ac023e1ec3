#!/usr/bin/env python3
"""False alarms: ksense calibrated on a calm node, then left on the same node,
scraped and evaluated by a real Prometheus with the shipped rules
(deploy/prometheus/ksense-rules.yml). Nothing changes on the node after the
calibration, so every interval above the warning line is a false one.

  sudo bench/false-alarms.py [--load idle|cpu] [--minutes 60] [--warmup 300] [--scrape-interval 1]

`idle`: nothing but the machine's own background. `cpu`: a steady moderate
load through calibration and scoring alike (stress-ng, 2 workers at 40 %).
Prints one table: intervals scored, the share above the warning and critical
lines (read from the rules), how many evaluations had the alerts pending or
firing, the friction quantiles, and direction's values and changes.

`--scrape-interval` sets Prometheus' scrape and rule evaluation interval
(1 s by default: every interval ksense scores is seen). At 15 s, as the
repo's ServiceMonitor scrapes, the scrapes are the only TCP traffic of an
idle node: the round-trip time and the receive softirqs are then measured
in one interval of 15, while calibrating and after (docs/model.md#not-measured),
and only the intervals a scrape fetched are counted.
Needs root (BPF) and Debian's prometheus and stress-ng.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "deploy", "prometheus", "ksense-rules.yml")
KSENSE = os.path.join(ROOT, "target", "release", "ksense")
ALERTS = ("KsenseFrictionHigh", "KsenseFrictionCritical")


def die(msg):
    print(f"false-alarms: {msg}", file=sys.stderr)
    sys.exit(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thresholds():
    """The friction line each friction alert fires above, from the rules file itself."""
    text = open(RULES).read()
    out = {}
    for name in ALERTS:
        m = re.search(rf"- alert: {name}\n\s+expr: \|\n\s+ksense_friction > ([0-9.]+)", text)
        if not m:
            die(f"cannot find {name}'s friction line in {RULES}")
        out[name] = float(m.group(1))
    return out


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def result(port, q):
    """The result list of Prometheus' instant query `q`."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    v = json.loads(get(url, timeout=30))
    if v["status"] != "success":
        die(f"query {q!r}: {v}")
    return v["data"]["result"]


def query(port, q):
    r = result(port, q)
    return float(r[0]["value"][1]) if r else 0.0


def raw(port, q):
    """The samples of one series' range vector `q`, as (time, value)."""
    r = result(port, q)
    return [(float(t), float(x)) for t, x in r[0]["values"]] if r else []


def left_out(kport):
    """The features ksense's /api/v1/score says the baseline left out."""
    try:
        return ", ".join(json.loads(get(f"http://127.0.0.1:{kport}/api/v1/score"))["baseline"].get("left_out", []))
    except (OSError, ValueError, KeyError):
        return "?"


def gauge(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", choices=("idle", "cpu"), default="idle")
    ap.add_argument("--minutes", type=float, default=60, help="scored time after calibration")
    ap.add_argument("--warmup", type=int, default=300, help="--model.warmup and --model.baseline-window, seconds")
    ap.add_argument("--scrape-interval", type=int, default=1, help="Prometheus scrape and evaluation interval, seconds")
    ap.add_argument("--ksense", default=KSENSE)
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (ksense loads BPF programs)")
    for tool in ("prometheus",) + (("stress-ng",) if args.load == "cpu" else ()):
        if not shutil.which(tool):
            die(f"{tool} not found (apt-get install {tool})")
    if not os.access(args.ksense, os.X_OK):
        die(f"{args.ksense} not built (cargo build --release)")
    lines = thresholds()

    # The page cache written out first (as the CI test does): a build's dirty
    # pages written during the run are disk work the calibration never saw.
    os.sync()
    tmp = tempfile.mkdtemp(prefix="ksense-false-alarms-")
    procs = []
    try:
        if args.load == "cpu":
            procs.append(subprocess.Popen(["stress-ng", "--quiet", "--cpu", "2", "--cpu-load", "40"]))
        kport, pport = free_port(), free_port()
        log = open(os.path.join(tmp, "ksense.log"), "w")
        procs.append(subprocess.Popen(
            [args.ksense, "--web.listen-address", f"127.0.0.1:{kport}", "--model.state-file",
             os.path.join(tmp, "baseline.json"), "--model.interval", "1s", "--model.warmup", f"{args.warmup}s",
             "--model.baseline-window", f"{args.warmup}s"], stdout=log, stderr=log))
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            si = f"{args.scrape_interval}s"
            f.write(f"global:\n  scrape_interval: {si}\n  evaluation_interval: {si}\nrule_files: ['{RULES}']\n"
                    f"scrape_configs:\n  - job_name: ksense\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{kport}']\n")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{pport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        t0 = time.time()
        while True:
            time.sleep(2)
            try:
                ready = gauge(get(f"http://127.0.0.1:{kport}/metrics"), "ksense_baseline_ready")
            except OSError:
                ready = None
            if ready == 1.0:
                break
            if time.time() - t0 > args.warmup + 120:
                die(f"no baseline after {time.time() - t0:.0f} s (see {tmp}/ksense.log)")
        calibrated = time.time() - t0
        print(f"[false-alarms] baseline ready after {calibrated:.0f} s; scoring {args.minutes:g} min "
              f"({args.load})", flush=True)
        time.sleep(args.minutes * 60 + 5)
        r = f"{int(args.minutes * 60)}s"
        # The scraped samples themselves (one per scrape), counted here: a
        # subquery's fixed step would count a 15 s scrape several times.
        fr = raw(pport, f"ksense_friction[{r}]")
        dr = raw(pport, f"ksense_direction[{r}]")
        n = len(fr)
        if n == 0:
            die(f"Prometheus holds no ksense_friction samples (see {tmp}/ksense.log)")
        what = "seconds" if args.scrape_interval == 1 else f"scrapes ({args.scrape_interval} s apart)"
        print(f"\n{args.load}: calibrated in {calibrated:.0f} s on the same node, then {args.minutes:g} min scored "
              f"({n} intervals scraped, every {args.scrape_interval} s), rules {os.path.relpath(RULES, ROOT)}\n")
        print("| measure | value |\n|---|---|")
        dir_at = dict(dr)
        for name, line in lines.items():
            above = sum(1 for _, v in fr if v > line)
            cond = sum(1 for t, v in fr if v > line and dir_at.get(t, 0) > 0)
            pend = query(pport, f'count_over_time(ALERTS{{alertname="{name}",alertstate="pending"}}[{r}])')
            fire = query(pport, f'count_over_time(ALERTS{{alertname="{name}",alertstate="firing"}}[{r}])')
            print(f"| friction > {line} ({name}'s line) | {above} of {n} {what} ({100 * above / n:.2f} %); "
                  f"with direction +1: {cond} |")
            print(f"| {name}: evaluations pending / firing | {pend:.0f} / {fire:.0f} |")
        vals = sorted(v for _, v in fr)
        for q in (0.5, 0.99, 1.0):
            # Interpolated at q·(n−1), as quantile_over_time does.
            i = q * (n - 1)
            lo = int(i)
            v = vals[lo] + (vals[min(lo + 1, n - 1)] - vals[lo]) * (i - lo)
            print(f"| friction {'max' if q == 1.0 else f'P{q * 100:g}'} | {v:.2f} |")
        f0 = query(pport, "ksense_baseline_friction_p99")
        print(f"| F₀ (calibration P99, direction 0 at or below it) | {f0:.2f} |")
        for v, label in ((1, "+1 (worse)"), (0, "0 (within the baseline's range)"), (-1, "−1 (better)")):
            c = sum(1 for _, d in dr if d == v)
            print(f"| direction {label} | {100 * c / max(1, len(dr)):.1f} % |")
        ch = sum(1 for a, b in zip(dr, dr[1:]) if a[1] != b[1])
        print(f"| direction changes per hour | {ch * 60 / args.minutes:.0f} |")
        print(f"| left out of friction (too few calibration samples measured them) | {left_out(kport) or 'none'} |")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
