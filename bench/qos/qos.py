#!/usr/bin/env python3
"""Runs the ksense QoS benchmark and records everything it measures.

A real server under its own load generator, both inside a network namespace
the benchmark makes (its own 127.0.0.1, MTU 1500, nothing
leaves it); ksense runs beside them on the host and calibrates its baseline
during a quiet warm-up; then interference phases run in a seeded shuffled
order: stress-ng on the host (CPU, I/O, network, mixed), and impairments of
the namespace's loopback (iptables random loss on the server's replies, a tbf
bandwidth cap). Server and load (--server, --regime):

  nginx fixed    wrk, 16 connections pausing 10 ms between requests: a
                 moderate, nearly fixed rate (~1,500 req/s, a quarter gzipped)
  nginx closed   wrk's own closed loop, no pause: the server saturated
  nginx bursty   the fixed regime's mean rate, 4x for a fifth of every second
  redis closed   redis-server under redis-benchmark (GET, 16 clients, closed
                 loop: it has no rate control)
  apache fixed, closed, bursty
                 Apache httpd (event MPM: a listener thread hands each request
                 to a pool of worker threads, two processes) under the same wrk
                 loads as nginx; added 2026-12-06, after every default was chosen

Three
recorders run side by side, each on its own clock-stamped stream (seconds
since ksense started, one monotonic clock):

  wrk.jsonl      one line per load-generator chunk (wrk or redis-benchmark,
                 = one benchmark window): start, end, requests, errors,
                 client latency percentiles (us).
  samples.jsonl  one line per ksense model interval (1 s, phase-locked to
                 ksense's tick): friction, direction, signals, contributions,
                 the raw cumulative histograms (every kernel bucket), and
                 /proc/stat, /proc/pressure/{cpu,io} and loadavg at that moment;
                 with --workloads also each workload's friction (the server
                 runs in a cgroup of its own, phases.json names it).
  phases.json    the phase timeline and the run's settings.

Only the standard library is needed here; analyze.py and variants.py read the
output. Run through run.sh, which checks the tools first.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Classic `le` bounds passed to ksense: every native schema-2 index in this
# range, so the text exposition carries the kernel histogram at full
# resolution (values <= 2^-25 s ~ 30 ns share the first bucket; > 32 s go to
# +Inf). Each bound is nudged down a hair so ksense's round-up lands exactly on
# index i.
LE_MIN, LE_MAX = -100, 20


# Interference phases. {tmp} is a scratch directory on the root file system
# (ext4 on the VM's virtio disk, so writes really reach a block device).
PHASES = {
    "quiet": [],
    "cpu": ["--cpu", "2"],
    "cpu-heavy": ["--cpu", "6"],
    "io": ["--hdd", "2", "--hdd-opts", "direct,sync", "--hdd-bytes", "256m", "--iomix", "1", "--iomix-bytes", "128m",
           "--temp-path", "{tmp}"],
    "net": ["--sock", "2", "--sock-if", "lo", "--udp", "1", "--udp-if", "lo"],
    "mixed": ["--cpu", "1", "--hdd", "1", "--hdd-opts", "direct,sync", "--hdd-bytes", "128m", "--sock", "1",
              "--sock-if", "lo", "--temp-path", "{tmp}"],
}

# Network phases: impairments of the benchmark namespace's loopback, applied
# at the phase's start and undone at its end. {port} is the server's port. No
# netem on this kernel: loss by iptables' statistic match, a cap by tbf. The
# loss drops the server's replies on INPUT, where the client receives them, as
# a network loses what was sent: a drop on OUTPUT (runs before 2026-12-04
# evening) is a local send error, which TCP does not retransmit but sends again
# as new data when its probe timer fires (~200 ms later).
NET_PHASES = {
    "loss1": {"apply": [["iptables", "-A", "INPUT", "-p", "tcp", "--sport", "{port}", "-m", "statistic",
                         "--mode", "random", "--probability", "0.01", "-j", "DROP"]],
              "undo": [["iptables", "-F", "INPUT"]]},
    "loss4": {"apply": [["iptables", "-A", "INPUT", "-p", "tcp", "--sport", "{port}", "-m", "statistic",
                         "--mode", "random", "--probability", "0.04", "-j", "DROP"]],
              "undo": [["iptables", "-F", "INPUT"]]},
    # below the offered load (~70 Mbit/s): the replies queue in tbf
    "bw": {"apply": [["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "40mbit", "burst", "32kb",
                      "latency", "200ms"]],
           "undo": [["tc", "qdisc", "del", "dev", "lo", "root"]]},
}
for _n in NET_PHASES:
    PHASES[_n] = None  # not stress-ng
# The phases every default was chosen on (and the held-out seeds re-run).
TUNED = tuple(PHASES)

# Interference no default was chosen on, for `--phases unseen`: other ways a
# neighbour slows a service down than those above (memory and cache, process
# creation, context switches, timer interrupts), and a control that should
# not (CPU hogs at SCHED_IDLE, which the scheduler runs only when nothing else
# wants the CPU).
UNSEEN = {
    "vm": ["--vm", "2", "--vm-bytes", "1g"],
    "cache": ["--cache", "2"],
    "stream": ["--stream", "2"],
    "fork": ["--fork", "2"],
    "pipe": ["--pipe", "2"],
    "timer": ["--timer", "1", "--timer-freq", "50000"],
    "idle-hog": ["--cpu", "4", "--sched", "idle"],
}
PHASES.update(UNSEEN)
PHASE_SETS = {"tuned": TUNED, "unseen": ("quiet",) + tuple(UNSEEN)}

# The load regimes each server's own load generator can make (rate.lua for wrk).
# redis-benchmark has no rate control: its only regime is its closed loop.
REGIMES = {"nginx": ("fixed", "closed", "bursty"), "redis": ("closed",), "apache": ("fixed", "closed", "bursty")}
BURST = {"QOS_BURST_PERIOD_MS": "1000", "QOS_BURST_SHARE": "0.2", "QOS_BURST_FACTOR": "4"}
REDIS_KEYS, REDIS_VALUE_BYTES = 10000, 256
REDIS_MIN_CHUNK = 200  # requests in a redis-benchmark chunk, at least: a P99 of fewer says little

NGINX_CONF = """\
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {d}/html;
    location = /static.html {{ }}
    # "dynamic-ish": the same text gzipped anew on every request (CPU work per request)
    location = /dyn {{
      default_type text/plain;
      gzip on; gzip_comp_level 1; gzip_min_length 0; gzip_types text/plain;
      alias {d}/html/dyn.txt;
    }}
  }}
}}
"""

# The same two resources as nginx's site: /static.html, and /dyn gzipped anew
# on every request. Each process a pool of APACHE_THREADS: the event MPM's own shape.
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_THREADS = 25
APACHE_CONF = """\
ServerRoot {d}
ServerName localhost
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule mime_module {m}/mod_mime.so
LoadModule alias_module {m}/mod_alias.so
LoadModule filter_module {m}/mod_filter.so
LoadModule deflate_module {m}/mod_deflate.so
PidFile {d}/apache.pid
DefaultRuntimeDir {d}
Mutex file:{d} default
ErrorLog {d}/error.log
LogLevel warn
User nobody
Group nogroup
StartServers {workers}
ServerLimit {workers}
ThreadsPerChild {per}
MaxRequestWorkers {threads}
MinSpareThreads {per}
MaxSpareThreads {threads}
ListenBacklog 4096
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 300
TypesConfig /etc/mime.types
DocumentRoot {d}/html
<Directory {d}/html>
  Require all granted
</Directory>
Alias /dyn {d}/html/dyn.txt
<Location /dyn>
  ForceType text/plain
  SetOutputFilter DEFLATE
</Location>
DeflateCompressionLevel 1
"""


def log(msg):
    print(f"[qos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def le_arg():
    return ",".join(repr(2.0 ** (i / 4.0) * (1 - 1e-12)) for i in range(LE_MIN, LE_MAX + 1))


# ---------------------------------------------------------------- /metrics

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
HIST = {
    "ksense_tcp_rtt_seconds": "tcp_rtt",
    "ksense_runqueue_latency_seconds": "runqueue",
    "ksense_runqueue_wakeup_latency_seconds": "runqueue_wakeup",
    "ksense_dstate_duration_seconds": "dstate",
    "ksense_softirq_duration_seconds": "softirq",
    # by role: requests_server (nginx's, from arrival to response), requests_client (wrk's calls)
    "ksense_request_duration_seconds": "requests",
}


COUNTERS = {"ksense_tcp_retransmits_total": "tcp_retransmit", "ksense_skb_drops_total": "skb_drop"}


def parse_metrics(text):
    """The parts of ksense's text exposition the benchmark needs."""
    out = {"friction": None, "direction": None, "energy": None, "ready": None, "interference": None, "signals": {},
           "contrib": {}, "h": {}}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = METRIC_RE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        lab = dict(LABEL_RE.findall(labels))
        if name == "ksense_friction":
            out["friction"] = value
        elif name == "ksense_direction":
            out["direction"] = value
        elif name == "ksense_energy":
            out["energy"] = value
        elif name == "ksense_baseline_ready":
            out["ready"] = value
        elif name == "ksense_interference_ratio":
            out["interference"] = value
        elif name == "ksense_signal":
            out["signals"][lab.get("signal", "?")] = value
        elif name == "ksense_friction_contribution":
            out["contrib"][lab.get("signal", "?")] = value
        elif name == "ksense_workload_friction":
            # --workloads: each workload's friction against its own baseline
            out.setdefault("wl_friction", {})[lab.get("workload", "?")] = value
        elif name in COUNTERS:
            # an event count: the model reads only its rate (the count), kept
            # as a histogram whose events sit in the first bucket; the total,
            # and retransmissions by kind as ksense's per-kind signals
            keys = [COUNTERS[name]] + ([f"{COUNTERS[name]}_{lab['kind']}"] if "kind" in lab else [])
            for key in keys:
                h = out["h"].setdefault(key, {"sum": 0.0, "count": 0, "cum": [(2.0 ** (LE_MIN / 4), 0)]})
                h["count"] += int(value)
                h["cum"][0] = (h["cum"][0][0], h["count"])
        else:
            for base, src in HIST.items():
                if not name.startswith(base):
                    continue
                key = {"softirq": "softirq_" + lab.get("vector", "?").lower(),
                       "requests": "requests_" + lab.get("role", "?")}.get(src, src)
                h = out["h"].setdefault(key, {"sum": 0.0, "count": 0, "cum": []})
                suffix = name[len(base):]
                if suffix == "_sum":
                    h["sum"] = value
                elif suffix == "_count":
                    h["count"] = int(value)
                elif suffix == "_bucket":
                    le = lab["le"]
                    h["cum"].append((math.inf if le == "+Inf" else float(le), int(value)))
                break
    # cumulative classic buckets -> sparse per-native-index counts
    for h in out["h"].values():
        cum = sorted(h.pop("cum"))
        b, prev = {}, 0
        for le, c in cum:
            if c > prev:
                idx = "inf" if math.isinf(le) else str(round(4 * math.log2(le)))
                b[idx] = c - prev
            prev = c
        h["b"] = b
    return out


# ---------------------------------------------------------------- /proc

def read_proc():
    p = {}
    with open("/proc/stat") as f:
        p["cpu"] = [int(x) for x in f.readline().split()[1:9]]
    for res in ("cpu", "io", "memory"):
        try:
            with open(f"/proc/pressure/{res}") as f:
                for line in f:
                    kind, *kv = line.split()
                    d = dict(x.split("=") for x in kv)
                    p[f"psi_{res}_{kind}_total"] = int(d["total"])
                    p[f"psi_{res}_{kind}_avg10"] = float(d["avg10"])
        except OSError:
            pass
    with open("/proc/loadavg") as f:
        p["load1"] = float(f.read().split()[0])
    # network diagnostics: packets dropped by the per-CPU backlog, TCP retransmits
    try:
        with open("/proc/net/softnet_stat") as f:
            p["softnet_dropped"] = sum(int(l.split()[1], 16) for l in f)
        with open("/proc/net/snmp") as f:
            tcp = [l.split() for l in f if l.startswith("Tcp:")]
        p["tcp_retrans"] = int(tcp[1][tcp[0].index("RetransSegs")])
    except (OSError, ValueError, IndexError):
        pass
    return p


class Foreign:
    """CPU time of processes that are not part of the benchmark (another
    user's compile, say), so a run on a busy machine can be spotted.

    The benchmark's processes are the ones in this script's session or in a
    session it started (nginx, ksense, stress-ng each get their own). Kernel
    threads are left out. Per-pid deltas of utime+stime+cutime+cstime: a
    parent's cutime picks up children that exited (cargo's rustc, say).
    """

    def __init__(self, own_sids):
        self.own = own_sids
        self.prev = {}
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self):
        cur, names = {}, {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            fl = raw[raw.rindex(")") + 2:].split()
            # fields from state (3) on: ppid=4 sid=6 flags=9 utime=14 .. cstime=17
            ppid, sid, flags = int(fl[1]), int(fl[3]), int(fl[6])
            if flags & 0x00200000 or ppid == 2 or int(pid) == 2 or sid in self.own:  # PF_KTHREAD
                continue
            key = (int(pid), comm)
            cur[key] = sum(int(x) for x in fl[11:15])
            names[key] = comm
        total, top = 0, {}
        for k, v in cur.items():
            if k in self.prev:
                d = v - self.prev[k]
                if d > 0:
                    total += d
                    top[names[k]] = top.get(names[k], 0) + d
        self.prev = cur
        top = {k: round(v / self.tick, 2) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:3] if v >= 5}
        return total / self.tick, top


# ---------------------------------------------------------------- processes

class Procs:
    def __init__(self):
        self.procs = []
        self.sids = {os.getsid(0)}

    def start(self, name, argv, **kw):
        shown = " ".join(a if len(a) < 80 else a[:40] + "..." for a in argv)
        log(f"start {name}: {shown}")
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.sids.add(p.pid)
        self.procs.append((name, p))
        return p

    @staticmethod
    def stop(p, timeout=5.0):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def stop_all(self):
        for _, p in reversed(self.procs):
            self.stop(p)


# ---------------------------------------------------------------- recorders

class Recorder:
    def __init__(self, t0, out):
        self.t0 = t0
        self.out = out
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.chunks = 0
        self.chunk_end = threading.Condition()
        self.hold = False
        self.go = threading.Event()

    def now(self):
        return time.monotonic() - self.t0

    def ended_chunk(self):
        """The load generator finished a chunk (a window) or gave up on one;
        while a phase changes, it waits here before the next chunk."""
        with self.chunk_end:
            self.chunks += 1
            held = self.hold
            self.chunk_end.notify_all()
        while held and not self.go.wait(0.5) and not self.stop.is_set():
            pass

    def hold_load(self, timeout):
        """Lets the current chunk end and holds the next one, so that a phase
        changes between windows, not inside one (a window over two phases is
        left out of the analysis)."""
        with self.chunk_end:
            self.go.clear()
            self.hold, seen = True, self.chunks
            self.chunk_end.wait_for(lambda: self.chunks != seen or self.stop.is_set(), timeout)

    def release_load(self):
        with self.chunk_end:
            self.hold = False
        self.go.set()


def ksense_tick_phase(url, rec, timeout=15.0):
    """Finds when ksense's model ticks: the moment its published signals change.

    Scraping right after each tick makes one scrape-to-scrape histogram delta
    the same interval ksense scored (to within the poll step), so the offline
    evaluator can reproduce ksense's friction.
    """
    end = time.monotonic() + timeout
    prev = None
    changes = []
    while time.monotonic() < end and len(changes) < 3:
        try:
            sig = re.findall(r"^ksense_signal\{.*$", http_get(url), re.M)
        except OSError:
            sig = None
        t = rec.now()
        if sig and prev is not None and sig != prev:
            changes.append(t)
        if sig:
            prev = sig
        time.sleep(0.01)
    if not changes:
        return None
    return changes[-1] % 1.0


def app_schedstat(root_pid):
    """Summed schedstat of the server's threads (nginx's master and workers,
    Apache's processes and their threads, redis-server's threads): time spent
    waiting on a run queue (ns) and timeslices run. ksense cannot see this
    per application; recorded to compare the node-level run-queue features
    with what the application itself waited."""
    delay = slices = 0
    try:
        kids = open(f"/proc/{root_pid}/task/{root_pid}/children").read().split()
    except OSError:
        return None
    for pid in [str(root_pid)] + kids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    _, d, n = f.read().split()
                delay += int(d)
                slices += int(n)
            except (OSError, ValueError):
                pass
    return [delay, slices]


def sampler(url, rec, interval, offset, own_sids, server_pid):
    """One scrape per ksense interval, shortly after ksense's tick."""
    f = open(os.path.join(rec.out, "samples.jsonl"), "w")
    foreign = Foreign(own_sids)
    foreign.sample()
    k = math.floor(rec.now()) + 1
    while not rec.stop.is_set():
        target = k * interval + offset
        delay = target - rec.now()
        if delay > 0:
            if rec.stop.wait(delay):
                break
        k += 1
        t = rec.now()
        if t - target > interval / 2:
            # fell behind (machine overloaded): skip ahead rather than burst
            k = math.floor((t - offset) / interval) + 1
        try:
            text = http_get(url, timeout=interval)
        except OSError as e:
            rec.errors.append(f"scrape at {t:.1f}s: {e}")
            continue
        t_done = rec.now()
        s = parse_metrics(text)
        s.update(read_proc())
        s["foreign_cpu_s"], s["foreign_top"] = foreign.sample()
        s["server_schedstat"] = app_schedstat(server_pid)
        s["t"] = round(t, 4)
        s["t_done"] = round(t_done, 4)
        f.write(json.dumps(s, separators=(",", ":")) + "\n")
        f.flush()
    f.close()


def wrk_loop(args, url, rec, ns):
    """Back-to-back wrk chunks; one chunk = one benchmark window."""
    f = open(os.path.join(rec.out, "wrk.jsonl"), "w")
    delay = 0 if args.regime == "closed" else args.delay_ms
    env = dict(os.environ, QOS_DELAY_MS=str(delay), QOS_DYN_EVERY=str(args.dyn_every),
               QOS_CONNECTIONS=str(args.connections))  # rate.lua undoes wrk's correction with it
    if args.regime == "bursty":
        env.update(BURST)
    argv = ns.cmd(["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.window}s", "--timeout", "10s",
                   "-s", os.path.join(HERE, "rate.lua"), url])
    while not rec.stop.is_set():
        start = rec.now()
        try:
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.window + 30)
        except subprocess.TimeoutExpired:
            rec.errors.append(f"wrk chunk at {start:.1f}s timed out")
            rec.ended_chunk()
            continue
        end = rec.now()
        rec.ended_chunk()
        m = re.search(r"^QOS (\{.*\})$", r.stdout, re.M)
        if not m:
            rec.errors.append(f"wrk chunk at {start:.1f}s: no result (rc {r.returncode}): {r.stderr.strip()[:200]}")
            time.sleep(0.5)
            continue
        d = json.loads(m.group(1))
        d["start"], d["end"] = round(start, 4), round(end, 4)
        f.write(json.dumps(d, separators=(",", ":")) + "\n")
        f.flush()
    f.close()


REDIS_PCT_RE = re.compile(r"^\s*([0-9.]+)% <= ([0-9.]+) milliseconds", re.M)
REDIS_SUMMARY_RE = re.compile(r"throughput summary: ([0-9.]+) requests per second.*?"
                              r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([0-9.\s]+)\n", re.S)


def parse_redis_benchmark(out):
    """One chunk's figures from redis-benchmark's own report, in wrk.jsonl's
    shape: its summary's mean, P50, P99 and max, and P90 and P99.9 from its
    percentile distribution (the first bound at or above the share)."""
    m = REDIS_SUMMARY_RE.search(out)
    if not m:
        return None
    rps = float(m.group(1))
    avg, _mn, p50, _p95, p99, mx = (float(x) for x in m.group(2).split()[:6])
    dist = sorted((float(q), float(ms)) for q, ms in REDIS_PCT_RE.findall(out))

    def at(q):
        return next((ms for share, ms in dist if share >= q), mx)
    return {"rps": rps, "lat_mean_us": avg * 1e3, "lat_max_us": mx * 1e3,
            "p": {"50": p50 * 1e3, "90": at(90.0) * 1e3, "99": p99 * 1e3, "99.9": at(99.9) * 1e3}}


def redis_loop(args, port, rec, ns):
    """Back-to-back redis-benchmark chunks (GETs of keys set at the start).

    It runs a number of requests, not a time, so each chunk asks for --window
    seconds at the rate of the chunk before (at most the first chunk's, the
    quiet rate): the first chunk of a slower phase stretches, the rest of it
    are --window seconds again. Until 2026-12-05 every chunk asked for the
    quiet rate's --window seconds, and under loss (~100 times slower) a phase
    made one stretched window or, timed out, none. A chunk that times out
    (--window * 2 + 5 s) is lost and the next asks for a tenth of it."""
    f = open(os.path.join(rec.out, "wrk.jsonl"), "w")
    base = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-r", str(REDIS_KEYS), "-d",
            str(REDIS_VALUE_BYTES)]
    subprocess.run(ns.cmd(base + ["-t", "set", "-n", str(4 * REDIS_KEYS), "-q"]), capture_output=True, check=True)
    n, most = 20000, None
    while not rec.stop.is_set():
        start, asked = rec.now(), n
        argv = ns.cmd(base + ["-t", "get", "-c", str(args.connections), "-n", str(asked), "--precision", "3"])
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=args.window * 2 + 5)
        except subprocess.TimeoutExpired:
            rec.errors.append(f"redis-benchmark chunk of {asked} requests at {start:.1f}s timed out")
            n = max(REDIS_MIN_CHUNK, asked // 10)
            rec.ended_chunk()
            continue
        end = rec.now()
        rec.ended_chunk()
        d = parse_redis_benchmark(r.stdout)
        if r.returncode != 0 or d is None:
            rec.errors.append(f"redis-benchmark chunk at {start:.1f}s: no result (rc {r.returncode}): "
                              f"{(r.stderr or r.stdout).strip()[-200:]}")
            time.sleep(0.5)
            continue
        want = int(d["rps"] * args.window)
        most = most or want  # the first chunk's: the quiet rate
        n = max(REDIS_MIN_CHUNK, min(want, most))
        d.update({"duration_us": int((end - start) * 1e6), "requests": asked, "bytes": 0,
                  "errors": 0, "timeouts": 0, "status_errors": 0, "start": round(start, 4), "end": round(end, 4)})
        del d["rps"]
        f.write(json.dumps(d, separators=(",", ":")) + "\n")
        f.flush()
    f.close()


# ---------------------------------------------------------------- main

def make_site(d, port, workers, server="nginx"):
    html = os.path.join(d, "html")
    os.makedirs(html)
    rnd = random.Random(1)
    with open(os.path.join(html, "static.html"), "w") as f:
        f.write("<html><body><pre>\n")
        f.write("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz \n") for _ in range(4000)))
        f.write("</pre></body></html>\n")
    words = ["latency", "kernel", "scheduler", "queue", "nginx", "friction", "softirq", "tail", "percentile",
             "baseline", "pressure", "interrupt", "page", "cache", "socket", "worker"]
    with open(os.path.join(html, "dyn.txt"), "w") as f:
        f.write(" ".join(rnd.choice(words) for _ in range(6000)) + "\n")
    conf = os.path.join(d, f"{server}.conf")
    with open(conf, "w") as f:
        if server == "apache":
            f.write(APACHE_CONF.format(d=d, port=port, workers=workers, per=APACHE_THREADS,
                                    threads=APACHE_THREADS * int(workers), m=APACHE_MODULES))
        else:
            f.write(NGINX_CONF.format(d=d, port=port, workers=workers))
    for p in (d, html):
        os.chmod(p, 0o755)  # the workers run as nobody
    return conf


class Netns:
    """The benchmark's network namespace; commands run in it by `ip netns exec`."""

    def __init__(self, metrics_save=True):
        self.name = f"ksense-qos-{os.getpid()}"
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        # MTU 1500 as on a pod's veth (and tbf's bucket then holds a segment)
        self.run(["ip", "link", "set", "lo", "up", "mtu", "1500"])
        # The kernel keeps a closed connection's ssthresh and RTT per peer and
        # seeds new ones with them, and wrk reconnects every window: off, no
        # phase can reach the windows after it that way (tested: with it on,
        # none did measurably; bench/README, "The quiet windows after loss").
        if not metrics_save:
            self.run(["sysctl", "-q", "-w", "net.ipv4.tcp_no_metrics_save=1"])

    def cmd(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, argv):
        subprocess.run(self.cmd(argv), check=True, capture_output=True)

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def wait_in(ns, argv, what, answer="", timeout=20.0):
    """Until argv, run in the namespace, succeeds (and prints `answer`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = subprocess.run(ns.cmd(argv), capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == answer:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer `{' '.join(argv)}` (in namespace {ns.name}) within {timeout:.0f}s")


def wait_url_in(ns, url, what, timeout=20.0):
    """Until url answers with a 2xx from inside the namespace."""
    wait_in(ns, ["curl", "-sf", "-o", "/dev/null", url], what, timeout=timeout)


def wait_http(url, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            http_get(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (unified or hybrid hosts); None without one."""
    for line in open("/proc/self/mountinfo"):
        pre, _, post = line.partition(" - ")
        if post.split()[0] == "cgroup2":
            return pre.split()[4]
    return None


def server_cgroup():
    """A cgroup v2 directory for the server: (its path, its path as ksense's workload label)."""
    root = cgroup2_root()
    if root is None:
        raise SystemExit("qos: --workloads needs a cgroup v2 hierarchy")
    rel = f"/ksense-qos-server-{os.getpid()}"
    os.mkdir(root + rel)
    return root + rel, rel


def in_cgroup(cg, argv):
    """argv, started inside cgroup `cg` (from server_cgroup()) when there is one: the
    shell moves itself there before it execs, so every process the server forks is there too."""
    if cg is None:
        return argv
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg[0]] + argv


def remove_cgroup(path):
    for _ in range(50):  # its processes take a moment to be reaped
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.1)
    log(f"could not remove {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--ksense", default=os.path.join(REPO, "target", "release", "ksense"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=120, help="quiet calibration phase, s")
    ap.add_argument("--phase-seconds", type=int, default=45,
                    help="each phase's length, at least: it ends with the first window that ends after it")
    ap.add_argument("--rounds", type=int, default=2, help="each phase runs this many times (shuffled per round)")
    ap.add_argument("--phases", default="tuned",
                    help="comma separated phases, or a set: "
                    + "; ".join(f"{k} = {','.join(v)}" for k, v in PHASE_SETS.items()))
    ap.add_argument("--server", choices=sorted(REGIMES), default="nginx")
    ap.add_argument("--regime", default=None, help="load regime (default: the server's first): " + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in REGIMES.items()))
    ap.add_argument("--window", type=int, default=5, help="load-generator chunk = benchmark window, s")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-metrics-save", action="store_true",
                    help="net.ipv4.tcp_no_metrics_save=1 in the namespace: new connections do not inherit "
                         "an earlier phase's ssthresh and RTT")
    ap.add_argument("--delay-ms", type=int, default=10, help="pause per connection between requests")
    ap.add_argument("--dyn-every", type=int, default=4, help="every Nth request is the gzip one (0: none)")
    ap.add_argument("--workers", "--nginx-workers", dest="workers", default="2",
                    help="the server's processes: nginx's workers, Apache's children (Redis: unused)")
    ap.add_argument("--features", default=None, help="ksense --model.features (default: ksense's own)")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--workloads", action="store_true",
                    help="the server in a cgroup of its own and ksense with --workloads.enabled: records each "
                         "workload's friction (the server's: its own run-queue wait and request P99 against its "
                         "own baseline)")
    args = ap.parse_args()

    def on_term(*_):
        # Once: a second signal (run.sh's trap forwards one) would interrupt the
        # cleanup below and leave nginx, ksense and the namespace behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    args.regime = args.regime or REGIMES[args.server][0]
    if args.regime not in REGIMES[args.server]:
        ap.error(f"--server {args.server} has the regimes {', '.join(REGIMES[args.server])}, not {args.regime!r}")
    if args.server == "apache" and not args.workers.isdigit():
        ap.error(f"--server apache needs a number of processes, not --workers {args.workers!r}")
    # Each phase once a round, though two sets name it (quiet is in both).
    phases = list(dict.fromkeys(q for p in args.phases.split(",") if p for q in PHASE_SETS.get(p, (p,))))
    for p in phases:
        if p not in PHASES:
            ap.error(f"unknown phase {p!r}")
    rnd = random.Random(args.seed)
    order = []
    for _ in range(args.rounds):
        r = phases[:]
        rnd.shuffle(r)
        if order and r[0] == order[-1] and len(r) > 1:
            r[0], r[1] = r[1], r[0]
        order += r

    os.makedirs(args.out, exist_ok=True)
    for name in ("samples.jsonl", "wrk.jsonl", "phases.json"):
        try:
            os.remove(os.path.join(args.out, name))
        except FileNotFoundError:
            pass
    tmp = tempfile.mkdtemp(prefix="ksense-qos-")
    scratch = tempfile.mkdtemp(prefix="ksense-qos-io-", dir="/var/tmp")
    procs = Procs()
    rec = None
    threads = []
    ns = Netns(metrics_save=not args.no_metrics_save)
    meta = {
        "server": args.server, "regime": args.regime, "seed": args.seed, "warmup": args.warmup, "phase_seconds": args.phase_seconds, "rounds": args.rounds,
        "window": args.window, "metrics_save": not args.no_metrics_save, "connections": args.connections, "threads": args.threads, "delay_ms": args.delay_ms,
        "dyn_every": args.dyn_every, "order": order,
        "phase_args": {p: NET_PHASES[p]["apply"] if p in NET_PHASES else PHASES[p] for p in phases}, "netns": True,
        "kernel": os.uname().release, "cpus": os.cpu_count(), "load_at_start": os.getloadavg(),
        "features": args.features, "started_unix": time.time(), "phases": [],
    }
    if args.server == "apache":
        v = subprocess.run(["apache2", "-v"], capture_output=True, text=True).stdout.splitlines()
        meta["server_version"] = v[0] if v else None
        meta["apache_threads"] = {"processes": int(args.workers), "threads_per_process": APACHE_THREADS}
    server_cg = None
    try:
        if args.workloads:
            server_cg = server_cgroup()
            meta["server_cgroup"] = server_cg[1]
        nport, kport = free_port(), free_port()
        site = f"http://127.0.0.1:{nport}/"
        if args.server == "nginx":
            conf = make_site(tmp, nport, args.workers)
            server = procs.start("nginx", in_cgroup(server_cg, ns.cmd(["nginx", "-p", tmp, "-c", conf, "-g", "daemon off;"])),
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "nginx.stderr"), "w"))
            wait_url_in(ns, site + "static.html", "nginx")
            load = lambda rec: wrk_loop(args, site, rec, ns)  # noqa: E731
        elif args.server == "apache":
            conf = make_site(tmp, nport, args.workers, "apache")
            server = procs.start("apache2", in_cgroup(server_cg, ns.cmd(["apache2", "-f", conf, "-DFOREGROUND"])),
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "apache.stderr"), "w"))
            wait_url_in(ns, site + "static.html", "apache2")
            load = lambda rec: wrk_loop(args, site, rec, ns)  # noqa: E731
        else:
            server = procs.start("redis-server", in_cgroup(server_cg, ns.cmd(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(nport), "--save", "", "--appendonly", "no",
                 "--protected-mode", "no", "--dir", tmp])), stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, "redis.stderr"), "w"))
            wait_in(ns, ["redis-cli", "-h", "127.0.0.1", "-p", str(nport), "ping"], "redis-server", answer="PONG")
            load = lambda rec: redis_loop(args, nport, rec, ns)  # noqa: E731

        kargs = [args.ksense, "--web.listen-address", f"127.0.0.1:{kport}",
                 "--model.state-file", os.path.join(tmp, "baseline.json"),
                 "--model.interval", "1s", "--model.warmup", f"{args.warmup}s",
                 "--model.baseline-window", f"{args.warmup}s", "--log.level", "warn",
                 "--web.classic-buckets", le_arg()]
        if args.features:
            kargs += ["--model.features", args.features]
        if args.workloads:
            kargs += ["--workloads.enabled"]
        klog = open(os.path.join(args.out, "ksense.log"), "w")
        kproc = procs.start("ksense", kargs, stdout=klog, stderr=klog)
        t0 = time.monotonic()  # ksense's warm-up clock starts within ms of this
        murl = f"http://127.0.0.1:{kport}/metrics"
        wait_http(murl, "ksense")
        rec = Recorder(t0, args.out)

        # Load first, so the phase lock sees ksense publish every tick.
        threads.append(threading.Thread(target=load, args=(rec,), daemon=True))
        threads[-1].start()
        offset = ksense_tick_phase(murl, rec)
        if offset is None:
            raise RuntimeError("ksense published no signals (are the probes attached? see ksense.log)")
        offset = (offset + 0.05) % 1.0
        meta["scrape_offset"] = offset
        log(f"ksense ticks at +{offset - 0.05:.3f}s; scraping 50 ms after each tick")
        threads.append(threading.Thread(target=sampler, args=(murl, rec, 1.0, offset, procs.sids, server.pid), daemon=True))
        threads[-1].start()

        # Quiet warm-up: ksense calibrates on the server and its load only.
        meta["phases"].append({"name": "warmup", "start": 0.0})
        log(f"warm-up: {args.warmup}s quiet calibration")
        while True:
            if kproc.poll() is not None:
                raise RuntimeError("ksense exited during warm-up (see ksense.log)")
            t = rec.now()
            if t >= args.warmup:
                try:
                    if re.search(r"^ksense_baseline_ready 1$", http_get(murl), re.M):
                        break
                except OSError:
                    pass
                if t > args.warmup + 120:
                    raise RuntimeError("ksense baseline not ready 120s after warm-up")
            time.sleep(0.25)
        meta["baseline_ready_at"] = rec.now()
        meta["phases"][-1]["end"] = rec.now()
        log(f"baseline ready at {rec.now():.1f}s; phases: {' '.join(order)}")
        # Phases change between windows: the load holds after a chunk while
        # one phase is undone and the next set up (stress-ng started, the
        # namespace impaired), and a phase runs on until the first chunk end
        # after --phase-seconds.
        chunk_wait = args.window * 10 + 30
        rec.hold_load(chunk_wait)

        for i, name in enumerate(order):
            st = None
            if name in NET_PHASES:
                for argv in NET_PHASES[name]["apply"]:
                    ns.run([a.replace("{port}", str(nport)) for a in argv])
            elif PHASES[name]:
                argv = ["stress-ng", "--timeout", f"{args.phase_seconds + chunk_wait + 10}s", "--quiet"] + \
                       [a.replace("{tmp}", scratch) for a in PHASES[name]]
                st = procs.start(name, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = rec.now()
            rec.release_load()
            log(f"phase {i + 1}/{len(order)}: {name} ({args.phase_seconds}s)")
            end_at = start + args.phase_seconds
            while rec.now() < end_at:
                time.sleep(0.2)
            rec.hold_load(chunk_wait)
            end = rec.now()
            if st is not None:
                procs.stop(st, timeout=10)
            if name in NET_PHASES:
                for argv in NET_PHASES[name]["undo"]:
                    ns.run(argv)
            meta["phases"].append({"name": name, "start": round(start, 3), "end": round(end, 3)})
        rec.release_load()
        # Let the last wrk chunk finish inside the last phase's aftermath.
        time.sleep(1)
    except KeyboardInterrupt:
        log("interrupted")
        meta["interrupted"] = True
    finally:
        if rec is not None:
            rec.stop.set()
            rec.release_load()
            for th in threads:
                th.join(timeout=args.window + 40)
            meta["errors"] = rec.errors
            meta["ended"] = rec.now()
        procs.stop_all()
        ns.delete()
        if server_cg:
            remove_cgroup(server_cg[0])
        meta["load_at_end"] = os.getloadavg()
        with open(os.path.join(args.out, "phases.json"), "w") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(scratch, ignore_errors=True)
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if rec is not None and rec.errors:
        log(f"{len(rec.errors)} recorder errors, first: {rec.errors[0]}")
    log(f"recorded to {args.out}")


if __name__ == "__main__":
    main()
