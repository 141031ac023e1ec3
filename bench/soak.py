#!/usr/bin/env python3
"""Soak: ksense under a context-switch storm, disk I/O and loopback network
load (stress-ng), scraped every second, for a configurable time.

Reports RSS growth (VmRSS after warm-up vs at the end), failed scrapes,
counter resets (any counter, histogram _count/_sum/_bucket included, that
ever decreases), dropped events and whether the probes kept counting, and
exits non-zero when a threshold is broken. Needs root (ksense loads BPF).

    bench/soak.py --minutes 60              # docs/reliability.md's one-hour run
    bench/soak.py --minutes 2               # what `make test` (CI) runs
    bench/soak.py --minutes 60 --workloads  # with per-workload attribution, as the DaemonSet runs
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$')


def monotonic(text):
    """Every series whose value may never decrease."""
    out = {}
    for line in text.splitlines():
        if line.startswith('#'):
            continue
        m = SERIES.match(line)
        if not m:
            continue
        name = m[1].split('{')[0]
        if name.endswith(('_total', '_count', '_sum', '_bucket')):
            out[m[1]] = float(m[2])
    return out


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--minutes', type=float, default=2.0, help='how long to run (default 2)')
    ap.add_argument('--warmup', type=float, default=None, help='seconds before the RSS baseline is taken (default: 10%% of the run, 60..300 s: past the 30 s model calibration)')
    ap.add_argument('--max-rss-growth-kib', type=int, default=1024, help='RSS growth allowed after warm-up (default 1024 KiB)')
    ap.add_argument('--binary', default=os.path.join(ROOT, 'target/release/ksense'))
    ap.add_argument('--no-load', action='store_true', help='no stress-ng (for a quick check)')
    ap.add_argument('--workloads', action='store_true', help='per-workload attribution on (--workloads.enabled, what the DaemonSet runs)')
    args = ap.parse_args()

    secs = int(args.minutes * 60)
    warmup = args.warmup if args.warmup is not None else min(300, max(60, secs // 10))
    port = free_port()
    state = tempfile.mkdtemp(prefix='ksense-soak-')
    log = open(os.path.join(state, 'ksense.log'), 'w+')
    ks = subprocess.Popen([args.binary, '--web.listen-address', f'127.0.0.1:{port}', '--model.state-file', os.path.join(state, 'baseline.json'),
                           '--model.warmup', '30s', '--model.baseline-window', '30s', '--log.level', 'info',
                           '--bpf.stats']  # each program's run count shows it still runs
                          + (['--workloads.enabled', 'true'] if args.workloads else []), stderr=log, stdout=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}/metrics'
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if ks.poll() is not None:
                sys.exit(f'soak: ksense exited at start ({ks.returncode}); log in {log.name}')
            time.sleep(0.1)

    load = None
    if not args.no_load:
        # Context switches, disk writes and loopback sockets, one worker each.
        load = subprocess.Popen(['stress-ng', '--switch', '1', '--hdd', '1', '--hdd-bytes', '64M', '--sock', '1', '--temp-path', state,
                                 '--timeout', f'{secs + 5}s', '--quiet'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    t0 = time.monotonic()
    scrapes = failed = resets = 0
    reset_names = set()
    prev = first = None
    rss_start = rss_max = None
    next_report = 60
    while time.monotonic() - t0 < secs:
        tick = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = r.read().decode()
                if r.status != 200 or 'ksense_build_info' not in body:
                    raise ValueError(f'status {r.status}, {len(body)} bytes')
            now = monotonic(body)
            first = first or now
            if prev:
                for k, v in now.items():
                    if k in prev and v < prev[k]:
                        resets += 1
                        reset_names.add(k)
            prev = now
            scrapes += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            failed += 1
            print(f'soak: scrape failed: {e}', file=sys.stderr)
        if ks.poll() is not None:
            print(f'soak: ksense died ({ks.returncode})', file=sys.stderr)
            break
        elapsed = time.monotonic() - t0
        rss = rss_kib(ks.pid)
        if rss_start is None and elapsed >= warmup:
            rss_start = rss
        rss_max = max(rss_max or 0, rss)
        if elapsed >= next_report:
            print(f'soak: {int(elapsed)}s scrapes={scrapes} failed={failed} resets={resets} rss={rss}KiB', flush=True)
            next_report += 60
        time.sleep(max(0, 1 - (time.monotonic() - tick)))

    alive = ks.poll() is None
    rss_end = rss_kib(ks.pid) if alive else 0
    if load:
        load.send_signal(signal.SIGINT)
        try:
            load.wait(timeout=30)
        except subprocess.TimeoutExpired:
            load.kill()
    exit_code, exit_secs = ks.returncode, 0.0
    if alive:
        ts = time.monotonic()
        ks.send_signal(signal.SIGTERM)
        try:
            exit_code = ks.wait(timeout=10)
        except subprocess.TimeoutExpired:
            ks.kill()
            exit_code = 'timeout'
        exit_secs = time.monotonic() - ts

    def delta(prefix):
        return {k: prev[k] - first.get(k, 0) for k in (prev or {}) if k.startswith(prefix)}

    dropped = delta('ksense_events_dropped_total')
    runs = delta('ksense_bpf_program_runs_total')
    growth = (rss_end - rss_start) if rss_start is not None else None
    log.seek(0)
    errors = [line.strip() for line in log if 'level=error' in line or 'panicked' in line]
    conf = ', per-workload attribution on' if args.workloads else ''
    print(f'ksense soak: {secs}s under stress-ng --switch 1 --hdd 1 --sock 1 ({os.uname().release}, {os.cpu_count()} CPUs{conf})' if load else f'ksense soak: {secs}s, no load{conf}')
    print(f'  scrapes          {scrapes} ok, {failed} failed')
    print(f'  counter resets   {resets}' + (f' ({", ".join(sorted(reset_names)[:5])})' if reset_names else ''))
    print(f'  VmRSS            {rss_start} KiB after {warmup}s warm-up, {rss_end} KiB at the end, growth {growth} KiB, max {rss_max} KiB')
    print('  dropped events   ' + ', '.join(f'{k.split("=")[1].strip(chr(34) + "}")}={int(v)}' for k, v in sorted(dropped.items())))
    print('  program runs     ' + ', '.join(f'{k.split("=")[1].strip(chr(34) + "}")}=+{int(v)}' for k, v in sorted(runs.items())))
    print(f'  exit             {exit_code} after SIGTERM in {exit_secs:.2f}s; error log lines: {len(errors)}')

    problems = []
    if not alive:
        problems.append('ksense died')
    if failed:
        problems.append(f'{failed} failed scrapes')
    if resets:
        problems.append(f'{resets} counter resets')
    if growth is None or growth > args.max_rss_growth_kib:
        problems.append(f'RSS growth {growth} KiB > {args.max_rss_growth_kib} KiB')
    if runs and min(runs.values()) <= 0:
        problems.append('a probe stopped counting')
    if exit_code != 0:
        problems.append(f'exit {exit_code} after SIGTERM')
    if errors:
        problems.append(f'error lines in the log: {errors[:3]}')
    if problems:
        print('soak: FAILED: ' + '; '.join(problems) + f' (log: {log.name})')
        sys.exit(1)
    print('soak: passed')
    subprocess.run(['rm', '-rf', state])


if __name__ == '__main__':
    main()
