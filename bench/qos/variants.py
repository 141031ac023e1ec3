#!/usr/bin/env python3
"""Offline evaluator: recomputes friction for model variants from the raw
histograms recorded in a run, and ranks them by Spearman's rho against the
client P99.

Same method as ksense (src/model, src/signals, src/app.rs):
  * a feature is a statistic of one interval's histogram delta (mean = sum /
    count, pNN interpolated inside the bucket on the exponential scale, busy =
    sum per second, rate = count per second; no events -> 0), times 1e6
    (microseconds), then ln(1 + x) (ksense's model space) or as is (`lin`);
  * calibration samples are the intervals of the quiet warm-up up to the
    moment ksense froze its baseline, those with >= 50 run-queue events, the
    last `warmup` of them;
  * baseline = mean and n-1 sample covariance, regularised by ridge
    (1e-9 + 1e-3 * mean variance on the diagonal) or Ledoit-Wolf (2004)
    shrinkage to (mean variance) * I plus the 1e-9 ridge;
  * friction = Mahalanobis distance through the Cholesky factor;
  * a window's friction is the mean of its 1 s intervals' frictions (what a
    dashboard averaging ksense_friction over the window shows).
Variant knobs: the feature list; transform `lin` (microseconds) or `log`
(ln(1 + microseconds)); `ridge` or `lw`; window aggregation `mean`, `median`,
`max` or `hist` (features from the whole window's histogram, baseline from
rolling windows of the same length); side `two` (plain distance), `one`
(only excesses over the baseline mean count: r -> max(r, 0)), `signed`
(direction * friction).

Usage: variants.py RUN_DIR [RUN_DIR ...] [--search] [--top N]
With several runs each gets a column and variants are ranked by the lowest
rho across runs (a choice that has to hold on every run, not just one).
"""

import argparse
import itertools
import math
import os
import sys

import numpy as np

from common import MIN_RUNQUEUE_EVENTS, Run, feature, pearson, runqueue_events, spearman, window_mean, windows

HERE = os.path.dirname(os.path.abspath(__file__))
RIDGE_FLOOR, RIDGE_RELATIVE = 1e-9, 1e-3
# ksense's default (src/config.rs DEFAULT_FEATURES, log transform, ridge) and
# the K-Sense reference's feature set it replaced.
from facts import DEFAULT_FEATURES as DEFAULT  # noqa: E402
REFERENCE = ("runqueue_p99", "runqueue_mean", "dstate_mean", "softirq_net_rx_mean")
POOL = ["runqueue_wakeup_mean", "runqueue_wakeup_p90", "runqueue_wakeup_p99", "runqueue_wakeup_p999",
        "runqueue_mean", "runqueue_p99", "runqueue_p999", "dstate_mean", "dstate_p99", "softirq_net_rx_mean",
        "softirq_net_rx_busy", "softirq_block_busy", "softirq_timer_busy", "softirq_rcu_busy"]
# More statistics, with --extended.
POOL_EXT = ["runqueue_busy", "runqueue_rate", "runqueue_wakeup_busy", "runqueue_wakeup_rate", "dstate_busy",
            "softirq_net_rx_rate", "softirq_block_mean", "softirq_timer_mean", "softirq_rcu_mean"]


def ridge(cov):
    d = cov.shape[0]
    return cov + (RIDGE_FLOOR + RIDGE_RELATIVE * np.trace(cov) / d) * np.eye(d)


def ledoit_wolf(x, mean, cov):
    """Port of src/model/baseline.rs::ledoit_wolf."""
    n, d = x.shape
    s_n = cov * ((n - 1) / n)
    m_n = np.trace(s_n) / d
    d2 = np.sum((s_n - m_n * np.eye(d)) ** 2) / d
    y = x - mean
    b2 = sum(np.sum((np.outer(v, v) - s_n) ** 2) / d for v in y) / n ** 2
    b2 = min(b2, d2)
    delta = b2 / d2 if d2 > 0 else 0.0
    m = np.trace(cov) / d
    return cov * (1 - delta) + (delta * m + RIDGE_FLOOR) * np.eye(d)


class Prepared:
    """Per-run data shared by every variant: features (1 s and window-length
    spans), calibration indices, windows, client P99."""

    def __init__(self, d):
        self.run = run = Run(d)
        self.name = os.path.basename(os.path.normpath(d))
        self.warmup = run.meta["warmup"]
        self.wins = [w for w in windows(run) if len(w["ks"]) and w["start"] >= run.ready_at]
        self.p99 = np.array([w["wrk"]["p"]["99"] / 1e3 for w in self.wins])
        self.span = int(round(np.median([len(w["ks"]) for w in self.wins]))) if self.wins else 5
        self._f = {}
        t = run.t
        ok = np.isfinite(runqueue_events(run)) & (runqueue_events(run) >= MIN_RUNQUEUE_EVENTS)
        cal = np.where(ok & (t <= run.ready_at) & (np.arange(len(t)) >= 1))[0]
        self.cal = cal[-self.warmup:]
        okh = np.isfinite(runqueue_events(run, self.span)) & \
            (runqueue_events(run, self.span) >= MIN_RUNQUEUE_EVENTS * self.span)
        calh = np.where(okh & (t <= run.ready_at))[0]
        self.cal_hist = calh[-self.warmup:]
        self.builtin = run.series("friction")
        self.direction = run.series("direction")

    def feat(self, name, span=1):
        if (name, span) not in self._f:
            self._f[(name, span)] = feature(self.run, name, span) * 1e6  # microseconds, as ksense's model
        return self._f[(name, span)]


def scores(prep, v, span=1):
    """Friction (and direction) per scrape interval for variant v."""
    x = np.stack([prep.feat(f, span) for f in v["features"]], axis=1)
    if v["transform"] == "log":
        x = np.log1p(np.maximum(x, 0))
    cal = x[prep.cal if span == 1 else prep.cal_hist]
    cal = cal[np.all(np.isfinite(cal), axis=1)]
    mean = cal.mean(axis=0)
    cov = np.atleast_2d(np.cov(cal, rowvar=False, ddof=1))
    reg = ridge(cov) if v["reg"] == "ridge" else ledoit_wolf(cal, mean, cov)
    L = np.linalg.cholesky(reg)
    r = x - mean
    fin = np.all(np.isfinite(r), axis=1)
    r0 = np.where(fin[:, None], r, 0.0)
    if v["side"] == "one":
        r0 = np.maximum(r0, 0.0)
    z = np.linalg.solve(L, r0.T)  # L z = r
    w = np.linalg.solve(L.T, z)  # Σ⁻¹ r
    f = np.sqrt(np.sum(z * z, axis=0))
    along = np.sqrt(np.diag(reg)) @ w
    direc = np.where(along > 0, 1.0, -1.0)
    f[~fin] = np.nan
    if v["side"] == "signed":
        f = f * direc
    return f


def window_series(prep, v):
    if v["agg"] == "hist":
        f = scores(prep, v, span=prep.span)
        return np.array([f[w["ks"][-1]] for w in prep.wins])
    f = scores(prep, v)
    agg = {"mean": np.nanmean, "median": np.nanmedian, "max": np.nanmax}[v["agg"]]
    out = []
    for w in prep.wins:
        vals = f[w["ks"]]
        out.append(agg(vals) if np.isfinite(vals).any() else np.nan)
    return np.array(out)


def rho(prep, v):
    return spearman(window_series(prep, v), prep.p99)[0]


def mk(features=DEFAULT, transform="log", reg="ridge", agg="mean", side="two", label=None):
    v = {"features": tuple(features), "transform": transform, "reg": reg, "agg": agg, "side": side}
    v["label"] = label or describe(v)
    return v


def describe(v):
    feats = ",".join(v["features"])
    extra = [v["transform"], v["reg"]]
    if v["agg"] != "mean":
        extra.append("agg=" + v["agg"])
    if v["side"] != "two":
        extra.append("side=" + v["side"])
    return f"{feats} [{' '.join(extra)}]"


def named_variants():
    V = [mk(label="default (offline): " + describe(mk()))]
    V += [mk(transform="lin"), mk(reg="lw"), mk(transform="lin", reg="lw")]
    V += [mk(side="one"), mk(reg="lw", side="one"), mk(side="signed"), mk(agg="median"), mk(agg="max"), mk(agg="hist")]
    # the K-Sense reference's features, as it computes them (lin) and on ksense's log scale
    V += [mk(REFERENCE, transform="lin", label="reference: " + describe(mk(REFERENCE, transform="lin"))),
          mk(REFERENCE), mk(REFERENCE, reg="lw")]
    # one mechanism at a time, and other tails
    for fs in [("runqueue_wakeup_p99",), ("runqueue_wakeup_p999",), ("runqueue_p99",), ("softirq_net_rx_busy",),
               ("runqueue_wakeup_p99", "softirq_net_rx_busy"), ("runqueue_wakeup_p999",) + DEFAULT[1:],
               ("runqueue_wakeup_p90",) + DEFAULT[1:], ("runqueue_wakeup_mean",) + DEFAULT[1:],
               ("runqueue_p99",) + DEFAULT[1:], DEFAULT + ("dstate_mean",), DEFAULT + ("runqueue_wakeup_mean",),
               ("runqueue_wakeup_p99", "runqueue_wakeup_mean", "dstate_mean", "softirq_net_rx_mean")]:
        V += [mk(fs), mk(fs, transform="lin")]
    return V


def search_variants(max_size, pool):
    for k in range(1, max_size + 1):
        for fs in itertools.combinations(pool, k):
            for t in ("log", "lin"):
                for reg in ("ridge", "lw") if k > 1 else ("ridge",):
                    yield mk(fs, t, reg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", default=[os.path.join(HERE, "out")])
    ap.add_argument("--search", action="store_true", help="also try every subset of the feature pool")
    ap.add_argument("--max-size", type=int, default=4)
    ap.add_argument("--extended", action="store_true",
                    help="search also over more statistics (rate, busy of other sources, softirq means)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--try", dest="extra", action="append", default=[],
                    help="an extra variant: FEATURES[:lin|log[:ridge|lw[:mean|median|max|hist[:two|one|signed]]]]")
    args = ap.parse_args()

    preps = [Prepared(d) for d in args.runs]
    names = [p.name for p in preps]
    print("Offline friction variants: Spearman rho vs client P99 over post-warm-up windows")
    for p in preps:
        print(f"  run {p.name}: {len(p.wins)} windows of ~{p.span} s, {len(p.cal)} calibration intervals, "
              f"seed {p.run.meta['seed']}, order {' '.join(p.run.meta['order'])}")

    # How closely the offline default reproduces ksense's own friction.
    dv = mk()
    for p in preps:
        f = scores(p, dv)
        post = p.run.t >= p.run.ready_at
        b = p.builtin
        wb = np.array([window_mean(b, w["ks"]) for w in p.wins])
        wo = window_series(p, dv)
        print(f"  {p.name}: offline default vs ksense friction: per 1 s interval Pearson {pearson(f[post], b[post]):.3f}, "
              f"Spearman {spearman(f[post], b[post])[0]:.3f}; per window Pearson {pearson(wo, wb):.3f}, "
              f"Spearman {spearman(wo, wb)[0]:.3f}; median ratio offline/ksense "
              f"{np.nanmedian(f[post] / b[post]):.3f}")
    print()

    def row(label, rs):
        cells = " ".join(f"{r:7.3f}" for r in rs)
        mn = min(rs) if all(np.isfinite(rs)) else math.nan
        print(f"  {cells} {mn:7.3f}  {label}")

    head = " ".join(f"{n[:7]:>7}" for n in names)
    print(f"  {head} {'min':>7}  variant")
    ref = []
    for p in preps:
        wb = np.array([window_mean(p.builtin, w["ks"]) for w in p.wins])
        ref.append(spearman(wb, p.p99)[0])
    row("ksense built-in friction (reference)", ref)
    for p_label, key in (("CPU utilisation", "cpu"), ("PSI cpu some (window)", "psi")):
        rs = []
        for p in preps:
            t, s = p.run.t, p.run.samples
            vals = []
            for w in p.wins:
                a, b = w["ks"][0] - 1, w["ks"][-1]
                if key == "cpu":
                    d = np.array(s[b]["cpu"]) - np.array(s[a]["cpu"])
                    vals.append((d.sum() - d[3] - d[4] - d[7]) / (d.sum() - d[7]))
                else:
                    vals.append((s[b].get("psi_cpu_some_total", np.nan) - s[a].get("psi_cpu_some_total", np.nan)) / ((t[b] - t[a]) * 1e6))
            rs.append(spearman(vals, p.p99)[0])
        row(p_label, rs)
    results = []
    for v in named_variants() + [parse_try(s) for s in args.extra]:
        rs = [rho(p, v) for p in preps]
        results.append((v, rs))
        row(v["label"], rs)

    if args.search:
        pool = POOL + (POOL_EXT if args.extended else [])
        print(f"\nSearch: every subset of up to {args.max_size} of {len(pool)} features x lin/log x ridge/lw "
              f"(window mean, two-sided); top {args.top} by min rho across runs")
        found = []
        for v in search_variants(args.max_size, pool):
            rs = [rho(p, v) for p in preps]
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
    keys = ["features", "transform", "reg", "agg", "side"]
    kw = dict(zip(keys, parts))
    kw["features"] = tuple(kw["features"].split(","))
    return mk(**kw)


if __name__ == "__main__":
    main()
