#!/usr/bin/env python3
"""How far can any score that sees only which interference runs go?

A node-level score (friction, CPU utilisation, PSI) ranks the windows of a run
by the node's state. Most of that state is set by the interference phase, so
the best such a score can do is bounded by the best *phase-level* score: one
value per phase, the same for every window of it. This script finds that bound
exactly, by trying every ordering of the phases (ties allowed), per run and
jointly over runs:

  own       the best phase-level score for the run alone (what a score tuned
            to this one application and load could reach, between phases)
  common    the one ordering of the phases that has the highest minimum rho
            over all the runs given (what one default could reach, at best,
            on all of them)
  friction  ksense's friction, as recorded in the run
  within    friction's rho inside the phases (both series less their phase
            medians): what it adds beyond telling the phases apart

Runs are windows CSVs (analyze.py's windows.csv) or names of kept runs in
results/ (`nginx-fixed-seed12` reads results/nginx-fixed-seed12-windows.csv).

Usage: bound.py RUN [RUN ...]
"""

import argparse
import csv
import itertools
import os

import numpy as np

from common import GROUPS, TRUTH_COLUMNS, TRUTHS, rankdata, spearman

HERE = os.path.dirname(os.path.abspath(__file__))


def load(arg):
    """(name, post-warm-up rows with a friction) of a windows CSV or a kept run's name."""
    path = arg if os.path.exists(arg) else os.path.join(HERE, "results", f"{arg}-windows.csv")
    base = os.path.basename(path)
    name = os.path.basename(os.path.dirname(os.path.abspath(path))) if base == "windows.csv" else \
        base.replace("-windows.csv", "")
    # CSVs written before the `mixed` column have every window in.
    rows = [r for r in csv.DictReader(open(path))
            if r["post_warmup"] == "1" and r["friction"] != "nan" and r.get("mixed", "0") == "0"]
    return name, rows


class Group:
    """One run's windows of one phase group, with the P99 ranks precomputed."""

    def __init__(self, rows, phases, target="p99_ms"):
        self.phase = np.array([phases.index(r["phase"]) for r in rows])
        self.p99 = np.array([float(r[target]) for r in rows])
        self.friction = np.array([float(r["friction"]) for r in rows])
        rp = rankdata(self.p99)
        self.rp = (rp - rp.mean()) / np.linalg.norm(rp - rp.mean())
        self.counts = np.bincount(self.phase, minlength=len(phases))

    def rho(self, levels):
        """Spearman rho of the phase-level score `levels` (one per phase)."""
        # Ranks of a score constant within phases: each level's average rank.
        order = np.unique(levels)
        rank_of = {}
        start = 0
        for lv in order:
            n = self.counts[levels == lv].sum()
            rank_of[lv] = start + (n + 1) / 2.0
            start += n
        r = np.array([rank_of[lv] for lv in levels])[self.phase]
        r = r - r.mean()
        nr = np.linalg.norm(r)
        return float(r @ self.rp / nr) if nr > 0 else float("nan")

    def within(self):
        """rho of friction and P99 after each has its phase median removed."""
        f, p = self.friction.copy(), self.p99.copy()
        for k in np.unique(self.phase):
            m = self.phase == k
            f[m] -= np.median(f[m])
            p[m] -= np.median(p[m])
        return spearman(f, p)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--truth", choices=TRUTHS, default="reported",
                    help="the client P99 judged against (common.TRUTHS)")
    args = ap.parse_args()
    runs = [load(a) for a in args.runs]
    target = TRUTH_COLUMNS[args.truth]
    if any(target not in rows[0] for _, rows in runs if rows):
        ap.error(f"--truth {args.truth}: a CSV without {target} (written before 2026-12-05)")
    for gname, member in GROUPS.items():
        phases = sorted({r["phase"] for _, rows in runs for r in rows if member(r["phase"])})
        groups = [Group([r for r in rows if member(r["phase"])], phases, target) for _, rows in runs]
        # Every weak ordering of the phases, as level vectors (duplicates are harmless).
        levels = [np.array(lv) for lv in itertools.product(range(len(phases)), repeat=len(phases))
                  if len(set(lv)) > 1]
        rhos = np.array([[g.rho(lv) for g in groups] for lv in levels])
        best_own = np.nanmax(rhos, axis=0)
        joint = np.nanmin(rhos, axis=1)
        j = int(np.nanargmax(joint))
        tiers = [[p for p in phases if levels[j][phases.index(p)] == lv] for lv in np.unique(levels[j])]
        order = " < ".join(" = ".join(t) for t in tiers)
        print(f"{gname} phases ({len(phases)}; {len(levels)} orderings tried). Best common ordering, "
              f"least to most: {order}")
        print(f"  {'run':24s} {'own':>7s} {'common':>7s} {'friction':>8s} {'within':>7s}")
        for (name, _), g, own, com in zip(runs, groups, best_own, rhos[j]):
            print(f"  {name:24s} {own:7.3f} {com:7.3f} {spearman(g.friction, g.p99)[0]:8.3f} {g.within():7.3f}")
        print(f"  {'min':24s} {np.nanmin(best_own):7.3f} {joint[j]:7.3f}")
        print()


if __name__ == "__main__":
    main()
