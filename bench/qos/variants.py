#!/usr/bin/env python3
"""Offline evaluator: replays the histograms recorded in a run through
ksense's own model (examples/replay.rs: the Scorer the live loop uses) for
model variants, and ranks them by Spearman's rho against the client P99.

Variant knobs, all of them ksense settings: the feature list
(--model.features), `ridge`, `lw` or `diag` (--model.regularisation ridge,
ledoit-wolf or diagonal), side `two` or `one` (--model.friction), and here in Python the
window aggregation of the 1 s frictions (`mean`, `median`, `max`) or `signed`
(direction * friction). Calibration is ksense's own: the run's warm-up and
baseline window, as qos.py started ksense with them.

Usage: variants.py RUN_DIR [RUN_DIR ...] [--search] [--top N]
With several runs each gets a column and variants are ranked by the lowest
rho across runs (a choice that has to hold on every run, not just one).
Needs the example built: cargo build --release --example replay (run.sh does).
"""

import argparse
import itertools
import lzma
import math
import os
import shutil
import subprocess
import tempfile

import numpy as np

from common import (NET_PHASES, TRUTH_COLUMNS, TRUTHS, Run, client_p99_ms, diff_spearman, in_group, pearson, samples_path,
                    server_name, spearman, window_mean, windows)

HERE = os.path.dirname(os.path.abspath(__file__))
# The reg knob's short names: ksense's --model.regularisation values.
REGULARISATIONS = {"ridge": "ridge", "lw": "ledoit-wolf", "diag": "diagonal"}
ROOT = os.path.dirname(os.path.dirname(HERE))
REPLAY = os.path.join(ROOT, "target", "release", "examples", "replay")
# ksense's default features and the K-Sense reference's feature set they replaced.
from facts import DEFAULT_FEATURES as DEFAULT  # noqa: E402
REFERENCE = ("runqueue_p99", "runqueue_mean", "dstate_mean", "softirq_net_rx_mean")
# The default before the network family: CPU and I/O signals only.
CPU_IO = ("runqueue_wakeup_p99", "softirq_net_rx_busy", "softirq_block_busy")
POOL = ["runqueue_wakeup_mean", "runqueue_wakeup_p90", "runqueue_wakeup_p99", "runqueue_wakeup_p999",
        "runqueue_mean", "runqueue_p99", "runqueue_p999", "dstate_mean", "dstate_p99", "softirq_net_rx_mean",
        "softirq_net_rx_busy", "softirq_block_busy", "softirq_timer_busy", "softirq_rcu_busy",
        "tcp_rtt_p99", "tcp_rtt_mean", "tcp_retransmit_rate", "skb_drop_rate"]
# More statistics, with --extended.
POOL_EXT = ["runqueue_busy", "runqueue_rate", "runqueue_wakeup_busy", "runqueue_wakeup_rate", "dstate_busy",
            "softirq_net_rx_rate", "softirq_block_mean", "softirq_timer_mean", "softirq_rcu_mean"]


class Prepared:
    """Per-run data shared by every variant: windows, client P99, ksense's
    own friction, and each variant's replay (cached)."""

    def __init__(self, d, keep_mixed=False, truth="reported"):
        self.run = run = Run(d)
        self.name = os.path.basename(os.path.normpath(d))
        self.warmup = run.meta["warmup"]
        self.keep_mixed = keep_mixed
        self.wins = [w for w in windows(run, keep_mixed) if len(w["ks"]) and w["start"] >= run.ready_at]
        self.truth = truth
        self.p99 = np.array([client_p99_ms(w["wrk"], run.meta.get("server"), truth) for w in self.wins])
        self.phase = [w["phase"] for w in self.wins]
        self.groups = ["cpu/io", "network"] if any(p in NET_PHASES for p in self.phase) else ["all"]
        self.span = int(round(np.median([len(w["ks"]) for w in self.wins]))) if self.wins else 5
        self._f = {}
        self.builtin = run.series("friction")
        self.direction = run.series("direction")

    def samples_file(self):
        """A path the replay can read: a kept run's samples are xz-compressed,
        so they are unpacked once into a temporary file."""
        p = samples_path(self.run.dir)
        if not p.endswith(".xz"):
            return p
        if not hasattr(self, "_unpacked"):
            self._unpacked = tempfile.NamedTemporaryFile(prefix="ksense-replay-", suffix=".jsonl")
            with lzma.open(p) as f:
                shutil.copyfileobj(f, self._unpacked)
            self._unpacked.flush()
        return self._unpacked.name

    def replay(self, v):
        """(friction, direction) per recorded sample for variant v, by ksense's model."""
        key = (v["features"], v["reg"], v["side"])
        if key not in self._f:
            warm = f"{self.warmup}s"
            cmd = [REPLAY, self.samples_file(), "--model.features", ",".join(v["features"]),
                   "--model.regularisation", REGULARISATIONS[v["reg"]],
                   "--model.friction", "one-sided" if v["side"] == "one" else "two-sided",
                   "--model.interval", "1s", "--model.warmup", warm, "--model.baseline-window", warm]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
            by_t = {}
            for line in out[1:]:
                t, f, d = line.split(",")[:3]
                by_t[round(float(t), 4)] = (float(f), float(d))
            f = np.array([by_t.get(round(t, 4), (np.nan, np.nan))[0] for t in self.run.t])
            d = np.array([by_t.get(round(t, 4), (np.nan, np.nan))[1] for t in self.run.t])
            self._f[key] = (f, d)
        return self._f[key]


def scores(prep, v):
    """Friction per recorded interval for variant v (signed: times direction)."""
    f, d = prep.replay(v)
    return f * d if v["agg"] == "signed" else f


def window_series(prep, v):
    f = scores(prep, v)
    agg = {"mean": np.nanmean, "median": np.nanmedian, "max": np.nanmax, "signed": np.nanmean}[v["agg"]]
    out = []
    for w in prep.wins:
        vals = f[w["ks"]]
        out.append(agg(vals) if np.isfinite(vals).any() else np.nan)
    return np.array(out)


def rho(prep, v, group="all", diff=False):
    """rho vs client P99 over the windows of one phase group (diff: of window-to-window changes)."""
    keep = np.array([in_group(p, group) for p in prep.phase])
    f = spearman if not diff else diff_spearman
    return f(window_series(prep, v)[keep], prep.p99[keep])[0]


def node_rho(p, group, key):
    """rho vs client P99 of CPU utilisation (key "cpu") or PSI cpu some
    ("psi") over each window, from the recorded /proc counters."""
    t, s = p.run.t, p.run.samples
    vals = []
    for w in [w for w in p.wins if in_group(w["phase"], group)]:
        a, b = w["ks"][0] - 1, w["ks"][-1]
        if key == "cpu":
            d = np.array(s[b]["cpu"]) - np.array(s[a]["cpu"])
            vals.append((d.sum() - d[3] - d[4] - d[7]) / (d.sum() - d[7]))
        else:
            vals.append((s[b].get("psi_cpu_some_total", np.nan) - s[a].get("psi_cpu_some_total", np.nan)) / ((t[b] - t[a]) * 1e6))
    keep = np.array([in_group(ph, group) for ph in p.phase])
    return spearman(vals, p.p99[keep])[0]


def markdown(preps, v):
    """The README's table: per run, variant v's rho on each phase group
    beside CPU utilisation's and PSI's, the rho of changes, and ksense's
    request P99s (the server's, the load generator's calls) on CPU/IO."""
    from analyze import build_rows
    print("| run | windows | **friction** | CPU utilisation | PSI cpu (window) | friction, rho of changes "
          "(CPU/IO) | the server's P99 (ksense, CPU/IO) | the client's calls (ksense, CPU/IO) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in preps:
        m = p.run.meta
        gs = p.groups
        pair = lambda f: " / ".join(f"{f(g):.3f}" for g in gs).replace("-", "\u2212")
        n = " / ".join(str(sum(in_group(ph, g) for ph in p.phase)) for g in gs)
        post = [r for r in build_rows(p.run)[0] if r["post_warmup"] and (p.keep_mixed or not r["mixed"])
                and in_group(r["phase"], gs[0])]
        p99 = [r[TRUTH_COLUMNS[p.truth]] for r in post]
        ks = lambda k: f"{spearman([r.get(k, np.nan) for r in post], p99)[0]:.3f}"
        name = f"{server_name(m)}, {m['regime']}, seed {m['seed']}"
        print(f"| {name} | {n} | **{pair(lambda g: rho(p, v, g))}** | {pair(lambda g: node_rho(p, g, 'cpu'))} | "
              f"{pair(lambda g: node_rho(p, g, 'psi'))} | {rho(p, v, gs[0], diff=True):.3f} | "
              f"{ks('ks_server_p99_ms')} | {ks('ks_client_p99_ms')} |".replace("-0.", "\u22120."))


def regimes(preps, v):
    """The README's table by regime: per server and load regime (and phase
    group), over its runs, variant v's rho range (median), how many runs reach
    0.85, and the range of the better of CPU utilisation and PSI."""
    by = {}
    for p in preps:
        m = p.run.meta
        name = f"{server_name(m)}, {m.get('regime', 'fixed')}"
        for g in p.groups:
            node = max((x for x in (node_rho(p, g, "cpu"), node_rho(p, g, "psi")) if np.isfinite(x)), default=np.nan)
            by.setdefault((name, g), []).append((rho(p, v, g), node))
    fmt = lambda x: f"{x:.2f}".replace("-", "\u2212")
    print("| regime | phases | runs | friction: range (median) | \u2265 0.85 | CPU util. or PSI, the better |")
    print("|---|---|---|---|---|---|")
    for (name, g), rs in by.items():
        f = [r for r, _ in rs]
        n = [x for _, x in rs]
        print(f"| {name} | {g} | {len(rs)} | {fmt(min(f))} to {fmt(max(f))} ({fmt(float(np.median(f)))}) | "
              f"{sum(x >= 0.85 for x in f)} of {len(f)} | {fmt(np.nanmin(n))} to {fmt(np.nanmax(n))} |")
    cells = [r for rs in by.values() for r in rs]
    print(f"\n{sum(r >= 0.85 for r, _ in cells)} of {len(cells)} cells reach 0.85; friction above the better of "
          f"CPU utilisation and PSI in {sum(r > x for r, x in cells)} of {len(cells)}")


def cols(preps):
    """One column per (run, phase group)."""
    return [(p, g) for p in preps for g in p.groups]


def mk(features=DEFAULT, reg="lw", agg="mean", side="one", label=None):
    v = {"features": tuple(features), "reg": reg, "agg": agg, "side": side}
    v["label"] = label or describe(v)
    return v


def describe(v):
    feats = ",".join(v["features"])
    extra = [v["reg"]]
    if v["agg"] != "mean":
        extra.append("agg=" + v["agg"])
    if v["side"] != "two":
        extra.append("side=" + v["side"])
    return f"{feats} [{' '.join(extra)}]"


def named_variants():
    V = [mk(label="default (offline): " + describe(mk()))]
    # the default before the time-weighted tail (bench/README, "Interference it was not tuned on")
    V += [mk(tuple(f for f in DEFAULT if f != "runqueue_wakeup_tw90"))]
    V += [mk(reg="ridge"), mk(reg="diag"), mk(side="two"), mk(reg="ridge", side="two"), mk(agg="signed"), mk(agg="median"),
          mk(agg="max")]
    # the K-Sense reference's features, with its ridge and the plain distance, and as ksense would score them
    V += [mk(REFERENCE, reg="ridge", side="two", label="reference features: " + describe(mk(REFERENCE, reg="ridge", side="two"))),
          mk(REFERENCE)]
    # one mechanism at a time, and other tails
    for fs in [("runqueue_wakeup_p99",), ("runqueue_wakeup_p999",), ("runqueue_p99",), ("softirq_net_rx_busy",),
               ("runqueue_wakeup_p99", "softirq_net_rx_busy"), ("runqueue_wakeup_p999",) + DEFAULT[1:],
               ("runqueue_wakeup_p90",) + DEFAULT[1:], ("runqueue_wakeup_mean",) + DEFAULT[1:],
               ("runqueue_p99",) + DEFAULT[1:], DEFAULT + ("dstate_mean",), DEFAULT + ("runqueue_wakeup_mean",),
               ("runqueue_wakeup_p99", "runqueue_wakeup_mean", "dstate_mean", "softirq_net_rx_mean"),
               CPU_IO, CPU_IO + ("tcp_retransmit_rate",), CPU_IO + ("tcp_rtt_p999",),
               CPU_IO + ("tcp_retransmit_rate", "tcp_rtt_p99"), ("tcp_retransmit_rate",), ("tcp_rtt_p999",)]:
        V += [mk(fs)]
    # Tried across the load regimes (README, "Does friction track P99?"):
    # without the softirq shares (the socket storm raises them most and hurts
    # Redis least), and with the applications' own request latency.
    NET = ("tcp_retransmit_rate", "tcp_rtt_p999")
    for fs in [("runqueue_wakeup_p99",) + NET, ("runqueue_wakeup_p99", "softirq_block_busy") + NET,
               ("runqueue_wakeup_p99", "softirq_net_rx_busy") + NET, DEFAULT + ("requests_server_p99",),
               DEFAULT + ("requests_client_p99",), ("runqueue_wakeup_p99",) + NET + ("requests_client_p99",),
               ("runqueue_wakeup_p99",) + NET + ("requests_server_p99",),
               ("runqueue_wakeup_p99",) + NET + ("requests_server_p99", "requests_client_p99"),
               ("requests_server_p99",), ("requests_client_p99",)]:
        V += [mk(fs)]
    return V


def search_variants(max_size, pool):
    for k in range(1, max_size + 1):
        for fs in itertools.combinations(pool, k):
            for reg in ("ridge", "lw") if k > 1 else ("lw",):
                yield mk(fs, reg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", default=[os.path.join(HERE, "out")])
    ap.add_argument("--search", action="store_true", help="also try every subset of the feature pool")
    ap.add_argument("--max-size", type=int, default=4)
    ap.add_argument("--extended", action="store_true",
                    help="search also over more statistics (rate, busy of other sources, softirq means)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--diff", action="store_true", help="also the rho of window-to-window changes")
    ap.add_argument("--try", dest="extra", action="append", default=[],
                    help="an extra variant: FEATURES[:ridge|lw|diag[:mean|median|max|signed[:two|one]]]")
    ap.add_argument("--markdown", action="store_true",
                    help="only print the README's per-run table for the default (or the first --try)")
    ap.add_argument("--regimes", action="store_true",
                    help="only print the README's table by regime for the default (or the first --try)")
    ap.add_argument("--keep-mixed", action="store_true",
                    help="also judge the windows that straddle a phase change (left out by default)")
    ap.add_argument("--truth", choices=TRUTHS, default="reported",
                    help="the client P99 judged against: the load generator's reported figure (wrk's is "
                         "corrected for coordinated omission) or that of the requests it timed (common.TRUTHS)")
    args = ap.parse_args()

    preps = [Prepared(d, args.keep_mixed, args.truth) for d in args.runs]
    if args.truth == "measured" and any(not np.isfinite(p.p99).any() for p in preps):
        ap.error("--truth measured: a run recorded before rate.lua undid wrk's correction has no such P99: "
                 + ", ".join(p.name for p in preps if not np.isfinite(p.p99).any()))
    if args.regimes:
        regimes(preps, parse_try(args.extra[0]) if args.extra else mk())
        return
    if args.markdown:
        markdown(preps, parse_try(args.extra[0]) if args.extra else mk())
        return
    print("Offline friction variants: Spearman rho vs client P99 over post-warm-up windows")
    for p in preps:
        print(f"  run {p.name}: {len(p.wins)} windows of ~{p.span} s, "
              f"seed {p.run.meta['seed']}, order {' '.join(p.run.meta['order'])}")

    # How closely the replay reproduces ksense's own friction (same model, the
    # scraped histograms instead of ksense's own reads: close, not equal).
    dv = mk()
    for p in preps:
        f = scores(p, dv)
        post = p.run.t >= p.run.ready_at
        b = p.builtin
        wb = np.array([window_mean(b, w["ks"]) for w in p.wins])
        wo = window_series(p, dv)
        print(f"  {p.name}: replayed default vs ksense friction: per 1 s interval Pearson {pearson(f[post], b[post]):.3f}, "
              f"Spearman {spearman(f[post], b[post])[0]:.3f}; per window Pearson {pearson(wo, wb):.3f}, "
              f"Spearman {spearman(wo, wb)[0]:.3f}; median ratio offline/ksense "
              f"{np.nanmedian(f[post] / b[post]):.3f}")
    print()

    def row(label, rs):
        cells = " ".join(f"{r:7.3f}" for r in rs)
        mn = min(rs) if all(np.isfinite(rs)) else math.nan
        print(f"  {cells} {mn:7.3f}  {label}")

    C = cols(preps)
    head = " ".join(f"{(p.name[:4] + ':' + g[:3]):>8}"[-7:] for p, g in C)
    print(f"  {head} {'min':>7}  variant   (columns: run:phase group)")
    ref = []
    for p, g in C:
        keep = np.array([in_group(ph, g) for ph in p.phase])
        wb = np.array([window_mean(p.builtin, w["ks"]) for w in p.wins])
        ref.append(spearman(wb[keep], p.p99[keep])[0])
    row("ksense built-in friction (reference)", ref)
    for p_label, key in (("CPU utilisation", "cpu"), ("PSI cpu some (window)", "psi")):
        row(p_label, [node_rho(p, g, key) for p, g in C])
    results = []
    for v in named_variants() + [parse_try(s) for s in args.extra]:
        rs = [rho(p, v, g) for p, g in C]
        results.append((v, rs))
        row(v["label"], rs)
        if args.diff:
            row("  the same, window-to-window changes", [rho(p, v, g, diff=True) for p, g in C])

    if args.search:
        pool = POOL + (POOL_EXT if args.extended else [])
        print(f"\nSearch: every subset of up to {args.max_size} of {len(pool)} features x ridge/lw "
              f"(window mean, one-sided); top {args.top} by min rho across runs")
        found = []
        for v in search_variants(args.max_size, pool):
            rs = [rho(p, v, g) for p, g in C]
            found.append((min(rs), v, rs))
        found.sort(key=lambda x: -x[0] if np.isfinite(x[0]) else 1e9)
        print(f"  {head} {'min':>7}  variant   ({len(found)} tried)")
        for _, v, rs in found[:args.top]:
            row(v["label"], rs)
        results += [(v, rs) for _, v, rs in found[:args.top]]

    best = max(results, key=lambda x: min(x[1]) if all(np.isfinite(x[1])) else -1)
    print(f"\nbest by min rho: {best[0]['label']}  (rho {', '.join(f'{r:.3f}' for r in best[1])})")


def parse_try(s):
    parts = s.split(":")
    keys = ["features", "reg", "agg", "side"]
    kw = dict(zip(keys, parts))
    kw["features"] = tuple(kw["features"].split(","))
    if kw.get("reg", "lw") not in REGULARISATIONS:
        raise SystemExit(f"--try: regularisation {kw['reg']!r}: one of {', '.join(REGULARISATIONS)}")
    return mk(**kw)


if __name__ == "__main__":
    main()
