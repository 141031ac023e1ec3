#!/usr/bin/env python3
"""Turns a recorded run (qos.py) into per-window rows, the Spearman table and
the plot.

  windows.csv   one row per window (= one load-generator chunk): phase, client latency
                percentiles, ksense friction and signals (means of the 1 s
                model intervals inside the window), CPU utilisation and PSI.
  qos.png       client P99 and friction over time, phases shaded.

Usage: analyze.py [--out DIR] [--png FILE] [--no-plot]
"""

import argparse
import csv
import math
import os
import sys

import numpy as np

from common import (GROUPS, LOAD_GENERATORS, NET_PHASES, PURE_SHARE, TRUTH_COLUMNS, Run, client_p99_ms, diff_spearman,
                    in_group, server_name, spearman, stat, window_mean, windows)

FOREIGN_LIMIT = 0.05  # CPUs of load from processes outside the benchmark
HERE = os.path.dirname(os.path.abspath(__file__))

PHASE_COLOURS = {
    "quiet": "#ffffff", "cpu": "#f4a582", "cpu-heavy": "#d6604d", "io": "#92c5de", "net": "#b8e186",
    "mixed": "#c2a5cf", "warmup": "#e0e0e0", "loss1": "#fee08b", "loss4": "#fdae61", "bw": "#a6d96a",
    # --phases unseen
    "vm": "#8c510a", "cache": "#bf812d", "stream": "#dfc27d", "fork": "#80cdc1", "pipe": "#35978f",
    "timer": "#01665e", "idle-hog": "#f6e8c3",
}


def build_rows(run):
    t = run.t
    cpu = np.array([s["cpu"] for s in run.samples], dtype=float)
    names = sorted({k for s in run.samples for k in s["signals"]})
    fr = run.series("friction")
    dr = run.series("direction")
    sig = {n: run.signal(n) for n in names}
    psi_keys = [k for k in ("psi_cpu_some", "psi_io_some", "psi_io_full", "psi_memory_some")
                if f"{k}_total" in run.samples[0]]
    rows = []
    for w in windows(run, keep_mixed=True):  # in the CSV, marked; out of every rho
        ks = w["ks"]
        if len(ks) == 0:
            continue
        a, b = ks[0] - 1, ks[-1]  # the scrapes bounding the window's intervals
        dt = t[b] - t[a]
        r = {
            "window": w["i"], "start_s": round(w["start"], 2), "end_s": round(w["end"], 2), "phase": w["phase"],
            "post_warmup": int(w["start"] >= run.ready_at), "mixed": int(w["mixed"]),
            "requests": w["wrk"]["requests"], "rps": round(w["wrk"]["requests"] / (w["wrk"]["duration_us"] / 1e6), 1),
            "errors": w["wrk"]["errors"],
            "p50_ms": w["wrk"]["p"]["50"] / 1e3, "p90_ms": w["wrk"]["p"]["90"] / 1e3,
            "p99_ms": w["wrk"]["p"]["99"] / 1e3, "p999_ms": w["wrk"]["p"]["99.9"] / 1e3,
            TRUTH_COLUMNS["measured"]: client_p99_ms(w["wrk"], run.meta.get("server"), "measured"),
            "friction": window_mean(fr, ks),
            "signed_friction": window_mean(fr * dr, ks),
            "interference": window_mean(run.series("interference"), ks),
        }
        for n in names:
            r[n] = window_mean(sig[n], ks)
        d = cpu[b] - cpu[a]
        total = d.sum()
        # user nice system idle iowait irq softirq steal; steal (the hypervisor
        # running someone else) is left out of both sides
        busy = total - d[3] - d[4] - d[7]
        r["cpu_util"] = busy / (total - d[7]) if total - d[7] > 0 else math.nan
        r["steal"] = d[7] / total if total > 0 else math.nan
        r["foreign_cpus"] = sum(run.samples[k].get("foreign_cpu_s", 0.0) for k in ks) / dt
        for k in psi_keys:
            r[k + "_avg10"] = run.samples[b][k + "_avg10"]
            r[k] = (run.samples[b][k + "_total"] - run.samples[a][k + "_total"]) / (dt * 1e6)
        for k in ("softnet_dropped", "tcp_retrans"):
            if k in run.samples[b]:
                r[k + "_per_s"] = (run.samples[b][k] - run.samples[a][k]) / dt
        # "nginx_schedstat" in runs recorded before --server
        na, nb = (run.samples[k].get("server_schedstat", run.samples[k].get("nginx_schedstat")) for k in (a, b))
        if na and nb:
            r["server_runq_wait"] = (nb[0] - na[0]) / 1e9 / dt  # s waited per s, all the server's threads
            r["server_runq_mean_us"] = (nb[0] - na[0]) / 1e3 / max(nb[1] - na[1], 1)
        # The request latency ksense inferred from socket calls over the
        # window: the server's (from a request's arrival to its response)
        # and the load generator's as a client (its calls), in ms.
        for key, col in (("requests_server", "ks_server_p99_ms"), ("requests_client", "ks_client_p99_ms")):
            if any(key in s["h"] for s in run.samples):
                counts, sums = run.hist(key)
                r[col] = float(stat((counts[b] - counts[a])[None, :], np.array([sums[b] - sums[a]]), "p99")[0]) * 1e3
        # --workloads: the server's own friction, against its own baseline
        cg = run.meta.get("server_cgroup")
        if cg:
            r["server_friction"] = window_mean(server_friction(run, cg), ks)
        r["load1"] = run.samples[b]["load1"]
        r["intervals"] = len(ks)
        rows.append(r)
    return rows, names, psi_keys


def server_friction(run, cg):
    """ksense_workload_friction of the server's cgroup per scrape; NaN where it had none (warm-up)."""
    return np.array([(s.get("wl_friction") or {}).get(cg, np.nan) for s in run.samples], dtype=float)


def write_csv(rows, path):
    cols = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def table(rows, names, psi_keys, target="p99_ms", group="all"):
    post = [r for r in rows if r["post_warmup"] and not r["mixed"] and in_group(r["phase"], group)]
    p = [r[target] for r in post]
    series = [("friction (ksense)", "friction"), ("direction x friction", "signed_friction")]
    series += [(f"signal {n}", n) for n in names]
    if "ks_server_p99_ms" in post[0]:
        series += [("requests: the server's P99 (ksense)", "ks_server_p99_ms"),
                   ("requests: the load generator's calls, P99 (ksense)", "ks_client_p99_ms")]
    if "server_friction" in post[0]:
        series += [("the server's workload friction (--workloads)", "server_friction")]
    series += [("CPU utilisation", "cpu_util")]
    for k in psi_keys:
        series += [(f"PSI {k[4:].replace('_', ' ')} avg10", k + "_avg10"), (f"PSI {k[4:].replace('_', ' ')} (window)", k)]
    if "server_runq_wait" in post[0]:
        series += [("(not ksense) the server's own run-queue wait per s", "server_runq_wait"),
                   ("(not ksense) the server's own mean run-queue wait", "server_runq_mean_us")]
    out = []
    for label, key in series:
        rho, n = spearman([r[key] for r in post], p)
        drho, _ = diff_spearman([r[key] for r in post], p)
        out.append((label, key, rho, n, drho))
    return out, len(post)


def phase_summary(rows):
    post = [r for r in rows if (r["post_warmup"] or r["phase"] == "warmup") and not r["mixed"]]
    by = {}
    for r in post:
        by.setdefault(r["phase"], []).append(r)
    out = []
    for ph, rs in by.items():
        med = lambda k: float(np.nanmedian([r[k] for r in rs]))
        out.append((ph, len(rs), med("p99_ms"), med("p99_measured_ms"), med("friction") if ph != "warmup" else math.nan,
                    med("cpu_util"), med("psi_cpu_some") if "psi_cpu_some" in rs[0] else math.nan, med("rps")))
    return out


def interference_by_phase(run):
    """The node score's distribution per phase over the 1 s intervals after
    the freeze: median, 90th percentile, and the share above 0."""
    x = run.series("interference")
    by = {}
    for w in windows(run):
        if w["start"] >= run.ready_at:
            by.setdefault(w["phase"], []).extend(v for v in x[w["ks"]] if not math.isnan(v))
    out = []
    for ph, v in by.items():
        v = np.array(v)
        if len(v):
            out.append((ph, len(v), float(np.median(v)), float(np.percentile(v, 90)), float(np.mean(v > 0))))
    return out


def plot(rows, run, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = np.array([(r["start_s"] + r["end_s"]) / 2 for r in rows])
    p99 = np.array([r["p99_ms"] for r in rows])
    fr = np.array([r["friction"] for r in rows], dtype=float)
    cpu = np.array([r["cpu_util"] for r in rows]) * 100
    psi = np.array([r.get("psi_cpu_some", math.nan) for r in rows]) * 100

    fig, (ax, ax3) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    for p in run.phases:
        end = p.get("end", mid[-1])
        for a in (ax, ax3):
            a.axvspan(p["start"], end, color=PHASE_COLOURS.get(p["name"], "#eeeeee"), alpha=0.55, lw=0)
        ax.text((p["start"] + end) / 2, 0.985, p["name"], transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=9, rotation=90 if end - p["start"] < 15 else 0)
    l1, = ax.plot(mid, p99, color="black", lw=1.6, marker="o", ms=2.5, label="client P99 (load generator, ms)")
    handles = [l1]
    measured = np.array([r["p99_measured_ms"] for r in rows], dtype=float)
    if run.meta.get("server") != "redis" and np.isfinite(measured).any():
        lm, = ax.plot(mid, measured, color="grey", lw=1.0, ls="--",
                      label="P99 of the requests wrk timed (its correction undone)")
        handles.append(lm)
    ax.set_yscale("log")
    ax.set_ylabel("client P99 latency (ms, log)")
    ax2 = ax.twinx()
    l2, = ax2.plot(mid, fr, color="#b2182b", lw=1.4, marker="s", ms=2.5, label="ksense friction")
    ax2.set_yscale("log")
    ax2.set_ylabel("ksense friction (Mahalanobis distance, log)", color="#b2182b")
    ax2.tick_params(axis="y", colors="#b2182b")
    ax.axvline(run.ready_at, color="grey", ls="--", lw=1)
    ax.legend(handles=handles + [l2], loc="upper left", bbox_to_anchor=(0.0, 0.90), fontsize=9, framealpha=0.9)
    # the rho of the tables: per phase group, windows that straddle a phase change left out
    groups = list(GROUPS) if any(r["phase"] in NET_PHASES for r in rows) else ["all"]

    def rhos(key):
        vals = []
        for g in groups:
            post = [r for r in rows if r["post_warmup"] and not r["mixed"] and in_group(r["phase"], g)]
            vals.append(spearman([r.get(key, math.nan) for r in post], [r["p99_ms"] for r in post])[0])
        return " / ".join(f"{v:.2f}" for v in vals)
    m = run.meta
    client = LOAD_GENERATORS.get(m.get("server"), "wrk")
    load = f"{server_name(m)} + {client} ({m.get('regime', 'fixed')})"
    ax.set_title(f"ksense QoS benchmark: {load} on 127.0.0.1, {m['cpus']} CPUs, kernel {m['kernel']}, seed {m['seed']}\n"
                 f"Spearman vs client P99 per {m['window']} s window, {' / '.join(groups)} phases: friction "
                 f"{rhos('friction')}, CPU utilisation {rhos('cpu_util')}, PSI cpu some {rhos('psi_cpu_some')}",
                 fontsize=10)
    ax3.plot(mid, cpu, color="#2166ac", lw=1.2, label="CPU utilisation %")
    ax3.plot(mid, psi, color="#1b7837", lw=1.2, label="PSI cpu some % (window)")
    ax3.set_ylim(0, 105)
    ax3.set_ylabel("%")
    ax3.set_xlabel("seconds since ksense started (dashed line: baseline frozen)")
    ax3.legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.9)
    ax3.axvline(run.ready_at, color="grey", ls="--", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--png", default=os.path.join(HERE, "qos.png"))
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()

    run = Run(args.out)
    rows, names, psi_keys = build_rows(run)
    csv_path = os.path.join(args.out, "windows.csv")
    write_csv(rows, csv_path)
    m = run.meta
    print(f"run: seed {m['seed']}, {m['cpus']} CPUs, kernel {m['kernel']}, warm-up {m['warmup']} s, "
          f"{m['rounds']} x {len(m['phase_args'])} phases x {m['phase_seconds']} s, window {m['window']} s")
    print(f"phase order: {' '.join(m['order'])}")
    print(f"load average at start {m['load_at_start'][0]:.2f}, at end {m['load_at_end'][0]:.2f}; "
          f"recorder errors: {len(m.get('errors', []))}")
    fo = [r["foreign_cpus"] for r in rows]
    top = {}
    for smp in run.samples:
        for k, v in (smp.get("foreign_top") or {}).items():
            top[k] = top.get(k, 0.0) + v
    top = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:5])
    dirty = sum(1 for x in fo if x > FOREIGN_LIMIT)
    print(f"other processes on the machine: mean {np.mean(fo):.3f} CPUs, max {max(fo):.2f} CPUs; "
          f"{dirty} windows above {FOREIGN_LIMIT} CPUs{'; busiest: ' + top if top else ''}; "
          f"steal max {max(r['steal'] for r in rows) * 100:.1f}%")
    if dirty:
        print(f"WARNING: the machine was not idle during {dirty} windows: rerun when it is (numbers below include them)")
    if not psi_keys:
        print("PSI: /proc/pressure not available on this kernel: N/A")
    print(f"windows: {len(rows)} -> {csv_path}; {sum(r['mixed'] for r in rows)} straddle a phase change "
          f"(less than {PURE_SHARE:.0%} in one phase) and are left out of the figures below")
    print()
    groups = ["all"] + (list(GROUPS) if any(r["phase"] in NET_PHASES for r in rows) else [])
    targets = [("p99_ms", "client P99")]
    if m.get("server") != "redis" and any(np.isfinite(r["p99_measured_ms"]) for r in rows):
        # wrk's reported P99 is corrected for coordinated omission (common.TRUTHS)
        targets += [("p99_measured_ms", "client P99 of the requests wrk timed (its correction undone)")]
    for (target, what), group in [(t, g) for t in targets for g in groups]:
        tab, n = table(rows, names, psi_keys, target=target, group=group)
        if n < 3:
            continue
        print(f"Spearman rho vs {what}, {n} post-warm-up windows, phases: {group}"
              + (" (quiet windows count in both groups)" if group != "all" else ""))
        print(f"  {'series':<46} {'rho':>6} {'d-rho':>6}   (d-rho: of window-to-window changes)")
        for label, _, rho, _, drho in tab:
            print(f"  {label:<46} {rho:6.3f} {drho:6.3f}")
        rf = tab[0][2]
        rcpu = next(r for l, k, r, _, _ in tab if k == "cpu_util")
        rpsi = [r for l, k, r, _, _ in tab if k.startswith("psi_cpu_some")]
        print(f"  {n} windows; 95% of |rho| under no association would be below {1.96 / math.sqrt(max(n - 1, 1)):.2f}")
        ok = rf >= 0.85 and rf > rcpu and all(rf > r for r in rpsi if not math.isnan(r))
        print(f"  target (friction >= 0.85 and above CPU utilisation and PSI cpu): {'MET' if ok else 'NOT MET'}")
        print()
    print("per phase (medians)")
    print(f"  {'phase':<10} {'windows':>7} {'P99 ms':>8} {'measured':>8} {'friction':>9} {'CPU %':>6} {'PSI cpu %':>9} "
          f"{'req/s':>7}   (measured: P99 of the requests timed, common.TRUTHS)")
    for ph, k, p99, p99m, fr, cpu, psi, rps in phase_summary(rows):
        print(f"  {ph:<10} {k:7d} {p99:8.2f} {p99m:8.2f} {fr:9.2f} {cpu * 100:6.1f} {psi * 100:9.1f} {rps:7.0f}")
    score = interference_by_phase(run)
    if score:
        print("node score (ksense_interference_ratio) per phase, 1 s intervals after the freeze")
        print(f"  {'phase':<10} {'intervals':>9} {'median':>7} {'p90':>6} {'> 0':>6}")
        for ph, k, med, p90, above in score:
            print(f"  {ph:<10} {k:9d} {med:7.3f} {p90:6.3f} {above * 100:5.1f}%")
    if not args.no_plot:
        try:
            plot(rows, run, args.png)
            print(f"\nplot -> {args.png}")
        except ImportError as e:
            print(f"\nno plot: {e} (apt-get install python3-matplotlib)", file=sys.stderr)


if __name__ == "__main__":
    main()
