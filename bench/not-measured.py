#!/usr/bin/env python3
"""Not measured: two ksense builds side by side calibrate on this node, then
TCP traffic starts, and each one's friction is read once a second.

  sudo bench/not-measured.py OLD_BINARY NEW_BINARY [--warmup 120] [--scrape-every 0]

While they calibrate nothing scrapes them (`--scrape-every 0`: an idle node
with no TCP traffic at all), or each is scraped every N seconds as Prometheus
would (`--scrape-every 15`). Then both are scraped once a second for
`--seconds` (60): loopback TCP where calibration saw none, or little. Nothing
else changes on the node, so friction above F0 (the calibration's own P99) is
a false reading. Prints one table: F0, friction's median and maximum, the
seconds above F0, the interference ratio's median, the round-trip time's
contribution, the calibration samples that measured it
(`ksense_baseline_signal_samples`; "-" for a build without that gauge), and
which feature carried most of friction in the seconds above F0.
Needs root (BPF). See docs/model.md, "Not measured".
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RTT = "tcp_rtt_p999"


def gauge(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def top_above(rows, f0):
    """The feature with the largest share of friction² most often, over the seconds above F0."""
    tops = [x[5] for x in rows if x[0] > f0]
    if not tops:
        return "-"
    best = max(set(tops), key=tops.count)
    return f"{best} ({tops.count(best)} of {len(tops)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--warmup", type=int, default=120, help="seconds of calibration (--model.warmup)")
    ap.add_argument("--scrape-every", type=int, default=0, help="scrape every N s while calibrating; 0: never")
    ap.add_argument("--seconds", type=int, default=60, help="seconds scraped once a second after calibration")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("not-measured: needs root (ksense loads BPF programs)")
    if args.warmup < 30:
        sys.exit("not-measured: --warmup must be at least 30 s")
    for b in (args.old, args.new):
        if not os.access(b, os.X_OK):
            sys.exit(f"not-measured: {b} is not an executable")
    builds = {"old": args.old, "new": args.new}
    tmp = tempfile.mkdtemp(prefix="ksense-not-measured-")
    ports = {"old": 19911, "new": 19912}
    procs = {}
    try:
        for k, b in builds.items():
            procs[k] = subprocess.Popen(
                [b, "--web.listen-address", f"127.0.0.1:{ports[k]}", "--model.state-file", f"{tmp}/{k}.json",
                 "--model.warmup", f"{args.warmup}s", "--model.baseline-window", f"{args.warmup - 10}s"],
                stdout=open(f"{tmp}/{k}.log", "w"), stderr=subprocess.STDOUT)

        def scrape(k):
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[k]}/metrics", timeout=5) as r:
                return r.read().decode()

        end = time.time() + args.warmup + 15
        while time.time() < end:
            time.sleep(min(args.scrape_every or 1e9, max(end - time.time(), 0)))
            if args.scrape_every:
                for k in builds:
                    scrape(k)
        rows = {k: [] for k in builds}
        for _ in range(args.seconds):
            for k in builds:
                t = scrape(k)
                if gauge(t, "ksense_baseline_ready") != 1:
                    sys.exit(f"not-measured: {k} has no baseline after {args.warmup + 15} s (log: {tmp}/{k}.log)")
                contrib = re.findall(r'^ksense_friction_contribution\{signal="(\w+)"\} (\S+)$', t, re.M)
                top = max(contrib, key=lambda c: float(c[1]))[0] if contrib else "-"
                rows[k].append((gauge(t, "ksense_friction"), gauge(t, "ksense_baseline_friction_p99"),
                                gauge(t, "ksense_interference_ratio"),
                                gauge(t, f'ksense_friction_contribution{{signal="{RTT}"}}'),
                                gauge(t, f'ksense_baseline_signal_samples{{signal="{RTT}"}}'), top))
            time.sleep(1)
    finally:
        for p in procs.values():
            p.terminate()
            p.wait()
    print(f"calibrated {args.warmup} s, scraped {'every %d s' % args.scrape_every if args.scrape_every else 'never'} "
          f"while calibrating, then once a second for {args.seconds} s")
    print(f"{'build':6} {'F0':>6} {'friction p50':>13} {'max':>7} {'above F0':>9} {'ratio p50':>10} "
          f"{'RTT contribution p50':>21} {'RTT samples in baseline':>24}  largest share above F0")
    for k, r in rows.items():
        f = [x[0] for x in r]
        f0 = r[-1][1]
        n = r[-1][4]
        print(f"{k:6} {f0:6.2f} {statistics.median(f):13.2f} {max(f):7.2f} {sum(x > f0 for x in f):5d}/{len(f):<3} "
              f"{statistics.median(x[2] for x in r):10.3f} {statistics.median(x[3] for x in r):21.2f} "
              f"{'-' if n != n else int(n):>24}  {top_above(r, f0)}")


if __name__ == "__main__":
    main()
