#!/usr/bin/env python3
"""An experiment kept for its figures (bench/README.md, "The worse of two
blocks"; not adopted): friction as the worse of two blocks, the node's
kernel signals (the default, d=5) and the applications' own request latency
(one feature, d=1), each turned into its tail probability, the smaller one
doubled (Bonferroni), and mapped back onto the chi(5) scale the alert lines
use. Prints variants.py's table by regime for it and for the default.

  bench/qos/blocks.py [requests_server_p99|requests_client_p99] [RUN_DIR ...]

BONF=1 in the environment drops the doubling. Needs the replay example
(cargo build --release --example replay) and the kept runs.
"""
import math
import os
import sys

import numpy as np

import variants as V

HERE = os.path.dirname(os.path.abspath(__file__))

def chi2_sf_odd(x, d):
    """P(chi2(d) >= x) for odd d: 2 Phi-bar(sqrt x) plus the odd terms."""
    if not np.isfinite(x):
        return math.nan
    if x <= 0:
        return 1.0
    r = math.sqrt(x)
    s = math.erfc(r / math.sqrt(2))
    phi = math.exp(-x / 2) / math.sqrt(2 * math.pi)
    term, acc = r, 0.0
    for k in range(1, (d - 1) // 2 + 1):
        acc += term
        term *= x / (2 * k + 1)
    return s + 2 * phi * acc

def chi_isf5(p):
    """The friction on the chi(5) scale whose tail probability is p (bisection)."""
    if not np.isfinite(p):
        return math.nan
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if chi2_sf_odd(mid * mid, 5) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2

APP = sys.argv[1] if len(sys.argv) > 1 else "requests_server_p99"
BONF = float(os.environ.get("BONF", "2"))
orig = V.scores

def scores(prep, v):
    if v.get("blocks"):
        fn, _ = prep.replay(V.mk())
        fa, _ = prep.replay(V.mk((APP,)))
        out = []
        for a, b in zip(fn, fa):
            if not np.isfinite(a):
                out.append(math.nan); continue
            pn = chi2_sf_odd(a * a, 5)
            if np.isfinite(b):
                pa = chi2_sf_odd(b * b, 1)
                p = min(1.0, BONF * min(pn, pa))
            else:
                p = pn
            out.append(chi_isf5(p) if p < 1.0 else 0.0)
        return np.array(out)
    return orig(prep, v)

V.scores = scores
kept = os.path.join(HERE, "results", "runs")
runs = sys.argv[2:] or sorted(os.path.join(kept, d) for d in os.listdir(kept))
preps = [V.Prepared(d) for d in runs]
v = V.mk(label="blocks"); v["blocks"] = True
print(f"== blocks: default + {APP} (Bonferroni x{BONF})")
V.regimes(preps, v)
print("== default")
V.regimes(preps, V.mk())
