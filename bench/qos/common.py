"""Shared by analyze.py and variants.py: loading a recorded run, histogram
deltas and quantiles the way ksense computes them, windows, Spearman's rho.
numpy only."""

import json
import lzma
import math
import os

import numpy as np

# Must match qos.py: the native indices exported as classic buckets.
LE_MIN, LE_MAX = -100, 20
NB = LE_MAX - LE_MIN + 2  # + the +Inf bucket
# Upper bound (s) of each exported bucket; the first one also holds
# everything below it (ksense's zero bucket included).
UPPER = np.array([2.0 ** (i / 4.0) for i in range(LE_MIN, LE_MAX + 1)] + [math.inf])
LOWER = np.array([2.0 ** ((i - 1) / 4.0) for i in range(LE_MIN, LE_MAX + 1)] + [2.0 ** (LE_MAX / 4.0)])


def samples_path(d):
    """A run's samples.jsonl, or the xz-compressed copy kept in bench/qos/results/runs/."""
    plain = os.path.join(d, "samples.jsonl")
    return plain if os.path.exists(plain) or not os.path.exists(plain + ".xz") else plain + ".xz"


def open_samples(d):
    p = samples_path(d)
    return lzma.open(p, "rt") if p.endswith(".xz") else open(p)


class Run:
    """One recorded run (the files qos.py writes)."""

    def __init__(self, d):
        self.dir = d
        with open(os.path.join(d, "phases.json")) as f:
            self.meta = json.load(f)
        self.samples = [json.loads(l) for l in open_samples(d) if l.strip()]
        self.wrk = [json.loads(l) for l in open(os.path.join(d, "wrk.jsonl")) if l.strip()]
        self.t = np.array([s["t"] for s in self.samples])
        self.ready_at = self.meta.get("baseline_ready_at", math.inf)
        self.phases = self.meta["phases"]
        self._hist = {}

    def hist(self, key):
        """Cumulative per-bucket counts (n_samples, NB) and sums (s) for one histogram."""
        if key not in self._hist:
            n = len(self.samples)
            counts = np.zeros((n, NB))
            sums = np.zeros(n)
            for k, s in enumerate(self.samples):
                h = s["h"].get(key)
                if h is None:
                    continue
                sums[k] = h["sum"]
                for idx, c in h["b"].items():
                    j = NB - 1 if idx == "inf" else int(idx) - LE_MIN
                    counts[k, j] = c
            self._hist[key] = (counts, sums)
        return self._hist[key]

    def deltas(self, key, span=1):
        """Per-interval deltas over `span` scrapes: row k covers (t[k-span], t[k]].
        Rows before the first full span are NaN."""
        counts, sums = self.hist(key)
        dc = np.full_like(counts, np.nan)
        ds = np.full_like(sums, np.nan)
        dc[span:] = np.maximum(counts[span:] - counts[:-span], 0)
        ds[span:] = sums[span:] - sums[:-span]
        return dc, ds

    def series(self, field):
        return np.array([np.nan if s.get(field) is None else s[field] for s in self.samples], dtype=float)

    def signal(self, name):
        return np.array([s["signals"].get(name, np.nan) for s in self.samples], dtype=float)

    def phase_at(self, t0, t1):
        """The phase overlapping [t0, t1] the most, and the share of [t0, t1] it covers."""
        best, name = 0.0, "warmup"
        for p in self.phases:
            ov = min(t1, p.get("end", math.inf)) - max(t0, p["start"])
            if ov > best:
                best, name = ov, p["name"]
        return name, (best / (t1 - t0) if t1 > t0 else 1.0)


def stat(counts, sums, stat_name):
    """A feature statistic per row of a delta histogram, in seconds, as ksense
    computes it (no events -> 0). stat_name: mean | pNN."""
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if stat_name == "mean":
            v = sums / n
        else:
            q = float("0." + stat_name[1:])
            rank = q * n
            cum = np.cumsum(counts, axis=1)
            pos = np.argmax(cum >= rank[:, None] - 1e-9, axis=1)
            rows = np.arange(len(n))
            c = counts[rows, pos]
            seen = cum[rows, pos] - c
            frac = np.clip((rank - seen) / np.where(c > 0, c, 1), 0.0, 1.0)
            lo, hi = LOWER[pos], UPPER[pos]
            hi = np.where(np.isinf(hi), lo, hi)
            v = lo * (hi / lo) ** frac
    v = np.where(n > 0, v, 0.0)
    return np.where(np.isnan(counts).any(axis=1), np.nan, v)


def feature(run, name, span=1):
    """Feature `<source>_<stat>` (e.g. runqueue_p99, softirq_net_rx_mean) per
    scrape interval, in seconds.

    Statistics as ksense computes them (src/signals/features.rs): mean, pNN
    (seconds), `busy` (summed durations per second: for the run queue the
    average number of waiting tasks, for a softirq vector the share of a CPU
    it takes) and `rate` (events per second). Like ksense, the evaluator then
    multiplies every value by 1e6 before its transform."""
    src, st = name.rsplit("_", 1)
    dc, ds = run.deltas(src, span)
    if st in ("rate", "busy"):
        dt = np.full(len(run.t), np.nan)
        dt[span:] = run.t[span:] - run.t[:-span]
        return (dc.sum(axis=1) if st == "rate" else ds) / dt
    return stat(dc, ds, st)


def runqueue_events(run, span=1):
    dc, _ = run.deltas("runqueue", span)
    return dc.sum(axis=1)


# A window is judged only when one phase covers this share of it. Phases
# start on their own clock, not the load generator's, so about one window per
# phase change straddles two: its P99, a tail, is the worse phase's, while
# any score averaged over the window is diluted, and neither phase is its own.
# Such a window is marked `mixed` and left out of every rho (friction's, CPU
# utilisation's and PSI's alike); --keep-mixed puts it back.
PURE_SHARE = 0.9


def windows(run, keep_mixed=False):
    """The benchmark windows: one per wrk chunk, with the scrape intervals
    (indices k, covering (t[k-1], t[k]]) whose midpoint falls inside it;
    without keep_mixed, the windows that straddle a phase change are left out."""
    t = run.t
    mid = np.concatenate([[np.nan], (t[1:] + t[:-1]) / 2])
    out = []
    for i, w in enumerate(run.wrk):
        ks = np.where((mid >= w["start"]) & (mid <= w["end"]))[0]
        phase, share = run.phase_at(w["start"], w["end"])
        mixed = share < PURE_SHARE
        if mixed and not keep_mixed:
            continue
        out.append({"i": i, "start": w["start"], "end": w["end"], "ks": ks, "wrk": w,
                    "phase": phase, "mixed": mixed})
    return out


# Which client P99 a rho is judged against.
#   reported  the load generator's own figure: what it prints (the default, and
#             the only one before 2026-12-05). wrk's is corrected for
#             coordinated omission (wrk.c: stats_correct), which adds made-up
#             samples below every latency longer than twice the per-connection
#             request interval: in a closed loop (interval ~1.6 ms) or under
#             200 ms retransmission timeouts its P99 is well above any request's
#             percentile. redis-benchmark's is not corrected.
#   measured  a percentile of the requests the load generator timed: wrk's with
#             its correction undone by rate.lua (p_raw), redis-benchmark's as
#             reported. NaN for wrk chunks recorded before rate.lua undid it.
TRUTHS = ("reported", "measured")
# Each truth's column in analyze.py's windows.csv.
TRUTH_COLUMNS = {"reported": "p99_ms", "measured": "p99_measured_ms"}


# Each server's name in tables, and its load generator.
SERVER_NAMES = {"nginx": "nginx", "redis": "Redis", "apache": "Apache"}
LOAD_GENERATORS = {"redis": "redis-benchmark"}  # the others: wrk


def server_name(meta):
    """A run's server as tables name it (runs before --server were nginx's)."""
    return SERVER_NAMES.get(meta.get("server", "nginx"), meta.get("server"))


def client_p99_ms(w, server, truth="reported"):
    """One chunk's client P99 in ms (w: a wrk.jsonl record)."""
    if truth == "reported" or server == "redis":
        return w["p"]["99"] / 1e3
    raw = w.get("p_raw")
    return raw["99"] / 1e3 if raw else math.nan


# The phase groups friction is judged on separately (quiet windows count in both).
NET_PHASES = ("loss1", "loss4", "bw")
GROUPS = {"cpu/io": lambda ph: ph not in NET_PHASES, "network": lambda ph: ph in NET_PHASES or ph == "quiet"}


def in_group(phase, group):
    return group == "all" or GROUPS[group](phase)


def diff_spearman(a, b):
    """Spearman's rho of window-to-window changes: does one follow the other
    within phases, or only tell phases apart?"""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return spearman(np.diff(a), np.diff(b))


def window_mean(x, ks):
    v = x[ks]
    v = v[np.isfinite(v)]
    return float(np.mean(v)) if len(v) else math.nan


def rankdata(x):
    """Average ranks (ties share their mean rank), like scipy.stats.rankdata."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearman(a, b):
    """Spearman's rho over the pairs where both are finite; (rho, n)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan, int(len(a))
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1]), int(len(a))


def pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])
