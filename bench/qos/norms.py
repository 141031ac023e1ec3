#!/usr/bin/env python3
"""Screen feature sets and distances the model does not offer, offline.

Friction is an L2 distance (Mahalanobis) of the features' one-sided rises
over the baseline. This asks whether another way of adding the rises up, or
another feature set, ranks the windows of the recorded runs better: each run
is replayed once through ksense's own model with the whole POOL as features
(examples/replay.rs, KSENSE_REPLAY_BASELINE=1 for the frozen baseline), each
interval becomes z = max(x - mean, 0) / sd per feature (the baseline's
Ledoit-Wolf variances over the pool: close to, not exactly, what a smaller
set would calibrate), and every subset of the pool is scored two ways:

  L2    sqrt(sum z^2): `--model.regularisation diagonal` for that subset
  Linf  max z: the one signal furthest above its baseline decides

A variant is chosen as the model's defaults were: by its lowest rho on the
tuning seeds (12 and 14), and only then read on the held-out ones.

Last, weights learned at calibration: the default's features under L2, each
weighted by its Spearman rho (floored at 0) with the server's request P99
(`requests_server_p99`, ksense's own) over the calibration intervals, against
the same features unweighted.

Usage: norms.py RUN_DIR [RUN_DIR ...] [--top N] [--sizes 2-5]
Needs the example built: cargo build --release --example replay.
"""

import argparse
import itertools
import json
import os
import subprocess

import numpy as np

from common import in_group, spearman
from facts import DEFAULT_FEATURES
from variants import REPLAY, Prepared

POOL = ["runqueue_wakeup_p99", "runqueue_wakeup_tw90", "runqueue_wakeup_p999", "softirq_net_rx_busy",
        "tcp_retransmit_timeout_rate", "tcp_rtt_p999", "requests_server_p99", "softirq_rcu_busy"]
TUNING = ("seed12", "seed14")
NORMS = {"L2": lambda z: np.sqrt((z ** 2).sum(1)), "Linf": lambda z: z.max(1)}


def rises(p, pool):
    """Per recorded sample, each pool feature's one-sided rise in baseline sds
    (NaN rows where the model scored nothing; 0 where a feature was not
    measured), and the calibration intervals' values on the model's scale."""
    warm = f"{p.warmup}s"
    cmd = [REPLAY, p.samples_file(), "--model.features", ",".join(pool), "--model.interval", "1s",
           "--model.warmup", warm, "--model.baseline-window", warm]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, KSENSE_REPLAY_BASELINE="1"))
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    if not lines:
        return None
    b = lines[0]
    mean, scale = np.array(b["mean"]), np.array(b["scale"])
    sd = np.sqrt(np.diag(np.array(b["covariance"]).reshape(len(pool), len(pool))))
    by_t, cal = {}, []
    for line in out.stdout.splitlines()[1:]:
        c = line.split(",")
        x = np.log1p(np.maximum(np.array([float(v) for v in c[5:]]), 0) * scale)
        if c[4] == "1":
            by_t[round(float(c[0]), 4)] = x
        else:
            cal.append(x)
    z = np.full((len(p.run.t), len(pool)), np.nan)
    for i, t in enumerate(p.run.t):
        x = by_t.get(round(t, 4))
        if x is not None:
            r = (x - mean) / sd
            z[i] = np.where(np.isfinite(r), np.maximum(r, 0), 0)
    # The baseline is the last warm-up's worth of intervals before it froze.
    return z, np.array(cal[-p.warmup:])


def learned_weights(cal, pool, feats):
    """Each feature's Spearman rho with the server's request P99 over the
    calibration intervals, floored at 0 (0 where too few measured both)."""
    label = cal[:, pool.index("requests_server_p99")]
    w = []
    for f in feats:
        x = cal[:, pool.index(f)]
        m = np.isfinite(x) & np.isfinite(label)
        r = spearman(x[m], label[m])[0] if m.sum() >= 10 else np.nan
        w.append(max(r, 0.0) if np.isfinite(r) else 0.0)
    return np.array(w)


def cells(p, s):
    """rho of the window means of s against the client's P99, per phase group."""
    ws = np.array([np.nanmean(s[w["ks"]]) if np.isfinite(s[w["ks"]]).any() else np.nan for w in p.wins])
    out = []
    for g in p.groups:
        keep = np.array([in_group(ph, g) for ph in p.phase])
        out.append(spearman(ws[keep], p.p99[keep])[0])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--sizes", default="2-5", help="subset sizes, e.g. 2-5")
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.sizes.split("-"))
    pool = POOL + [f for f in DEFAULT_FEATURES if f not in POOL]
    data = []
    for d in a.runs:
        p = Prepared(d)
        r = rises(p, pool)
        if r is not None:
            data.append((p, r[0], p.name.endswith(TUNING), r[1]))
    rows = []
    subsets = [list(s) for k in range(lo, hi + 1) for s in itertools.combinations(range(len(pool)), k)]
    default = [pool.index(f) for f in DEFAULT_FEATURES]
    if default not in subsets:
        subsets.append(default)
    for s in subsets:
        for norm, f in NORMS.items():
            cs = [(tune, r) for p, z, tune, _ in data for r in cells(p, f(z[:, s]))]
            t = [r for tune, r in cs if tune]
            h = [r for tune, r in cs if not tune]
            rows.append({"norm": norm, "features": [pool[i] for i in s], "tune_min": min(t),
                         "tune": sum(r >= 0.85 for r in t), "nt": len(t), "held": sum(r >= 0.85 for r in h),
                         "nh": len(h), "held_min": min(h), "default": s == default})
    fmt = lambda r: (f"| {r['norm']} | {', '.join(r['features'])} | {r['tune_min']:.3f} | {r['tune']} of {r['nt']} | "
                     f"{r['held']} of {r['nh']} | {r['held_min']:.3f} |")
    print(f"{len(rows)} variants on {len(data)} runs ({sum(t for _, _, t, _ in data)} tuning)\n")
    print("| norm | features | lowest tuning cell | tuning cells >= 0.85 | held-out cells >= 0.85 | lowest held-out |")
    print("|---|---|---|---|---|---|")
    rows.sort(key=lambda r: -r["tune_min"])
    for r in rows[:a.top]:
        print(fmt(r))
    print("\nThe default's features, standardised the same way:")
    for r in (r for r in rows if r["default"]):
        print(fmt(r))
    best = max(rows, key=lambda r: r["tune"] + r["held"])
    print(f"\nMost cells >= 0.85 of any variant (chosen on every run, so not a held-out figure): "
          f"{best['tune'] + best['held']} of {best['nt'] + best['nh']}")
    print(fmt(best))
    print(f"Most tuning cells >= 0.85 of any variant: {max(r['tune'] for r in rows)} of {rows[0]['nt']}")

    print("\nWeights learned at calibration (the default's features, L2):")
    print("| weights | lowest tuning cell | tuning cells >= 0.85 | held-out cells >= 0.85 | lowest held-out |")
    print("|---|---|---|---|---|")
    cols = [pool.index(f) for f in DEFAULT_FEATURES]
    for name in ("equal", "learned"):
        cs = []
        for p, z, tune, cal in data:
            w = np.ones(len(cols)) if name == "equal" else learned_weights(cal, pool, DEFAULT_FEATURES)
            cs += [(tune, r) for r in cells(p, np.sqrt((w * z[:, cols] ** 2).sum(1)))]
        t = [r for tune, r in cs if tune]
        h = [r for tune, r in cs if not tune]
        print(f"| {name} | {min(t):.3f} | {sum(r >= 0.85 for r in t)} of {len(t)} | "
              f"{sum(r >= 0.85 for r in h)} of {len(h)} | {min(h):.3f} |")


if __name__ == "__main__":
    main()
