#!/usr/bin/env python3
"""Generates the ksense Grafana dashboards (the JSON files beside this script).

    python3 dashboards/generate.py          # rewrite the JSON files
    python3 dashboards/generate.py --check  # exit 1 if a JSON file is stale

The JSON files are what users import (Grafana > Dashboards > Import; pick the
Prometheus datasource for the DS_PROMETHEUS input). This script is their
source: edit it and regenerate rather than editing the JSON by hand, so the
three dashboards keep the same variables, selectors and query conventions.
Standard library only.

Conventions
- Variables: `node` = label_values(ksense_node_info, nodename): ksense serves
  its node's name itself (as node_exporter's node_uname_info), so the
  dashboards work with any scrape config, with or without a `node` label;
  `instance` = the ksense instances on that node (normally one). Every
  per-node query selects {instance=~"$instance"}; panels across nodes group by
  instance and take the name from ksense_node_info (NODE_JOIN).
- Histograms work whether Prometheus ingests them as classic histograms
  (`_bucket`/`_sum`/`_count` series) or as native histograms (Prometheus with
  --enable-feature=native-histograms, which then keeps no `_bucket` series):
  each histogram query is `<classic form> or <native form>`.
"""
import json
import sys
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'instance=~"$instance"'
# Appended to a per-instance expression: adds the node's name as `nodename`.
NODE_JOIN = " * on (instance) group_left (nodename) max by (instance, nodename) (ksense_node_info)"
ROOT = HERE.parent
GRAFANA_VERSION = "10.4.0"


def _softirq_vectors():
    """The vector names' one home is src/probes/softirq.rs."""
    src = (ROOT / "src/probes/softirq.rs").read_text()
    body = re.search(r"SOFTIRQ_VECTORS: \[&str; \d+\] =\s*\[([^\]]*)\]", src).group(1)
    return re.findall(r'"([A-Z_]+)"', body)


def _alert_threshold(alert, metric):
    """An alert's `metric > X` line; the thresholds' one home is the rules file."""
    rules = (ROOT / "deploy/prometheus/ksense-rules.yml").read_text()
    block = rules.split(f"- alert: {alert}\n", 1)[1]
    return float(re.search(rf"{metric} > ([0-9.]+)", block).group(1))


def _default_feature_count():
    """d of chi2(d): the default features' one home is src/model/pipeline.rs."""
    src = (ROOT / "src/model/pipeline.rs").read_text()
    return int(re.search(r"DEFAULT_FEATURES: \[&str; (\d+)\]", src).group(1))


VECTORS = _softirq_vectors()
D = _default_feature_count()
# Quantiles of chi2(d) on friction, d the default feature count: the rules
# file's table and alerts (warning: 99.9%, critical: 99.9999%).
FRICTION_WARN = _alert_threshold("KsenseFrictionHigh", "ksense_friction")
FRICTION_CRIT = _alert_threshold("KsenseFrictionCritical", "ksense_friction")
# Energy (mean |dF| per interval) of a calm node is about 0.78; alert line 2.
ENERGY_WARN = _alert_threshold("KsenseNodeUnstable", "ksense_energy")


# ------------------------------------------------------------------ queries
def sel(*extra):
    return ", ".join([SEL, *extra])


def hist_quantile(q, metric, selector, by=()):
    """P(q) of a histogram, classic or native."""
    by_le = ", ".join([*by, "le"])
    by_native = f" by ({', '.join(by)})" if by else ""
    return (
        f"histogram_quantile({q}, sum by ({by_le}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))"
        f" or histogram_quantile({q}, sum{by_native} (rate({metric}{{{selector}}}[$__rate_interval])))"
    )


def hist_heatmap(metric, selector):
    """Per-bucket rates for a heatmap, classic (one series per le) or native."""
    return (
        f"sum by (le) (rate({metric}_bucket{{{selector}}}[$__rate_interval]))"
        f" or on() sum(rate({metric}{{{selector}}}[$__rate_interval]))"
    )


def hist_mean(metric, selector, by=()):
    b = f" by ({', '.join(by)})" if by else ""
    return (
        f"sum{b} (rate({metric}_sum{{{selector}}}[$__rate_interval])) / sum{b} (rate({metric}_count{{{selector}}}[$__rate_interval]))"
        f" or histogram_sum(sum{b} (rate({metric}{{{selector}}}[$__rate_interval])))"
        f" / histogram_count(sum{b} (rate({metric}{{{selector}}}[$__rate_interval])))"
    )


def hist_rate(metric, selector, by=()):
    b = f" by ({', '.join(by)})" if by else ""
    return (
        f"sum{b} (rate({metric}_count{{{selector}}}[$__rate_interval]))"
        f" or histogram_count(sum{b} (rate({metric}{{{selector}}}[$__rate_interval])))"
    )


# ------------------------------------------------------------------- panels
class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels = []

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)
        return panel

    def newline(self):
        if self.x:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def row(self, title, repeat=None):
        self.newline()
        p = {"type": "row", "title": title, "collapsed": False, "panels": []}
        if repeat:
            p["repeat"] = repeat
        self.add(p, 24, 1)
        self.newline()


def target(expr, legend="__auto", ref="A", fmt="time_series", instant=False):
    return {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "format": fmt,
        "range": not instant,
        "instant": instant,
        "editorMode": "code",
    }


def targets(*pairs, **kw):
    refs = "ABCDEFGHIJ"
    return [target(e, l, refs[i], **kw) for i, (e, l) in enumerate(pairs)]


def thresholds(*steps):
    out = [{"color": steps[0], "value": None}]
    for color, value in zip(steps[1::2], steps[2::2]):
        out.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": out}


def timeseries(title, tgts, unit="short", desc="", stack=False, fill=10, log=False,
               thresh=None, thresh_style="off", overrides=None, min_=None, decimals=None):
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": fill,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": thresh_style},
        "axisSoftMin": 0 if min_ == 0 else None,
    }
    if log:
        custom["scaleDistribution"] = {"type": "log", "log": 10}
    custom = {k: v for k, v in custom.items() if v is not None}
    defaults = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if thresh:
        defaults["thresholds"] = thresh
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, tgts, unit="short", desc="", mappings=None, thresh=None, color_mode="value", decimals=None,
         text_mode="auto"):
    defaults = {"unit": unit, "mappings": mappings or [], "color": {"mode": "thresholds"},
                "thresholds": thresh or thresholds("green")}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode,
            "graphMode": "area",
            "textMode": text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        },
    }


def state_timeline(title, tgts, mappings, desc="", thresh=None):
    return {
        "type": "state-timeline",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {
            "defaults": {"mappings": mappings, "color": {"mode": "thresholds"},
                         "thresholds": thresh or thresholds("green"),
                         "custom": {"fillOpacity": 80, "lineWidth": 0}},
            "overrides": [],
        },
        "options": {"showValue": "auto", "mergeValues": True, "rowHeight": 0.9,
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "single"}},
    }


def heatmap(title, expr, desc=""):
    return {
        "type": "heatmap",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [dict(target(expr, "{{le}}", fmt="heatmap"), interval="")],
        "maxDataPoints": 120,
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"},
                                                "hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "fill": "dark-orange",
                      "scale": "exponential", "steps": 64, "reverse": False},
            "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
            "rowsFrame": {"layout": "auto"},
            "cellValues": {"unit": "ops"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        },
    }


def mapping(values):
    """values: {value: (text, color)} -> Grafana value mappings."""
    return [{"type": "value", "options": {str(k): {"text": t, "color": c, "index": i}
                                          for i, (k, (t, c)) in enumerate(values.items())}}]


DIRECTION = mapping({1: ("worse", "red"), -1: ("better", "green"), 0: ("normal", "text")})
BASELINE = mapping({0: ("calibrating", "orange"), 1: ("frozen", "green")})
ATTACHED = mapping({1: ("attached", "green"), 0: ("DETACHED", "red")})


# --------------------------------------------------------------- dashboards
def variables(extra=()):
    def query_var(name, label, query, multi, include_all, desc):
        return {
            "type": "query",
            "name": name,
            "label": label,
            "description": desc,
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-var", "qryType": 1},
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": include_all,
            "current": {},
            "options": [],
            "hide": 0,
            "regex": "",
        }

    return [
        query_var("node", "Node", "label_values(ksense_node_info, nodename)", False, False,
                  "Node running ksense (its name as ksense serves it: K8S_NODE_NAME, else the host name)"),
        query_var("instance", "Instance", 'label_values(ksense_node_info{nodename=~"$node"}, instance)', True, True,
                  "ksense scrape target(s) on the node"),
        *extra,
    ]


def dashboard(uid, title, description, layout, extra_vars=()):
    panel_types = sorted({p["type"] for p in layout.panels if p["type"] != "row"})
    return {
        "__inputs": [{
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "Prometheus that scrapes ksense",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }],
        "__elements": {},
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *[{"type": "panel", "id": t, "name": t, "version": ""} for t in panel_types],
        ],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"type": "dashboards", "tags": ["ksense"], "asDropdown": True, "title": "ksense",
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "panels": layout.panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["ksense", "ebpf", "kernel"],
        "templating": {"list": variables(extra_vars)},
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def friction_dashboard():
    L = Layout()
    L.row("Now")
    L.add(stat("Friction", targets((f"ksense_friction{{{SEL}}}", "{{instance}}")), decimals=2,
               thresh=thresholds("green", "orange", FRICTION_WARN, "red", FRICTION_CRIT),
               desc="Mahalanobis distance from the frozen baseline. Healthy nodes hover near √d or below "
                    f"(friction² ~ χ²({D}) with the {D} default features); {FRICTION_WARN} is the 99.9% line, "
                    f"{FRICTION_CRIT} the 99.9999% line."), 5, 4)
    L.add(stat("Direction", targets((f"ksense_direction{{{SEL}}}", "{{instance}}")), mappings=DIRECTION,
               color_mode="background", desc="+1: worse than baseline, −1: better, 0: within the baseline's normal range (friction at or "
                    "below its calibration P99), where the sign would be noise."), 4, 4)
    L.add(stat("Energy", targets((f"ksense_energy{{{SEL}}}", "{{instance}}")), decimals=2,
               thresh=thresholds("green", "orange", ENERGY_WARN),
               desc="Mean |change| of friction between intervals (≈0.8 or less on a calm node)."), 4, 4)
    L.add(stat("Energy window", targets((f"ksense_energy_window{{{SEL}}}", "{{instance}}")), decimals=0,
               unit="none", desc="Intervals energy is averaged over (5–40; short when friction is jumpy)."), 3, 4)
    L.add(stat("Baseline", targets((f"ksense_baseline_ready{{{SEL}}}", "{{instance}}")), mappings=BASELINE,
               color_mode="background", desc="calibrating: collecting samples; frozen: friction is scored against it."), 4, 4)
    L.add(stat("Baseline samples", targets((f"ksense_baseline_samples{{{SEL}}}", "{{instance}}")), decimals=0,
               desc="Samples collected during calibration (or the frozen baseline was built from)."), 4, 4)

    L.row("Friction")
    L.add(timeseries(
        "Friction",
        targets((f"ksense_friction{{{SEL}}}", "friction {{instance}}")),
        thresh=thresholds("green", "orange", FRICTION_WARN, "red", FRICTION_CRIT), thresh_style="line+area",
        fill=0, min_=0, decimals=2,
        desc=f"Distance from baseline. Dashed lines: {FRICTION_WARN} (χ²({D}) 99.9%, warning alert after 10m) and "
             f"{FRICTION_CRIT} (99.9999%, critical after 5m). Direction below tells worse from better."), 16, 8)
    L.add(timeseries(
        "How unlikely on a healthy node",
        targets((f"exp(-(ksense_friction{{{SEL}}} ^ 2) / 2) * (1 + (ksense_friction{{{SEL}}} ^ 2) / 2"
                 f" + (ksense_friction{{{SEL}}} ^ 4) / 8)",
                 "P(χ²₆ ≥ friction²) {{instance}}")),
        unit="percentunit", log=True, fill=0,
        desc="Tail probability of the current friction under the baseline, P(χ²(6) ≥ friction²) (a closed "
             f"form; PromQL has none for odd degrees): an upper bound of the χ²({D}) tail of the {D} default "
             "features (χ²(d) tails grow with d, so the bound holds for d ≤ 6)."), 8, 8)
    L.add(state_timeline("Direction", targets((f"ksense_direction{{{SEL}}}", "{{instance}}")), DIRECTION,
                         desc="Worse (+1) or better (−1) than baseline; 0 within its normal range."), 24, 4)
    L.add(timeseries("Signed friction (+ worse / − better)",
                     targets((f"ksense_friction{{{SEL}}} * ksense_direction{{{SEL}}}", "{{instance}}")),
                     thresh=thresholds("green", "orange", FRICTION_WARN, "red", FRICTION_CRIT),
                     thresh_style="dashed", fill=20, decimals=2,
                     desc="Friction multiplied by direction: above zero the node is worse than its baseline."), 12, 8)
    L.add(timeseries("Energy",
                     targets((f"ksense_energy{{{SEL}}}", "energy {{instance}}")),
                     thresh=thresholds("green", "orange", ENERGY_WARN), thresh_style="dashed", fill=10, min_=0,
                     decimals=2,
                     desc="Mean |change| of friction between consecutive intervals over the adaptive window; "
                          f"the unstable-node alert fires above {ENERGY_WARN} for 15m."),
          12, 8)

    L.add(timeseries(
        "Node score for schedulers (interference ratio)",
        targets((f"ksense_interference_ratio{{{SEL}}}", "ratio {{instance}}"),
                (f"avg_over_time(ksense_interference_ratio{{{SEL}}}[5m])", "5m mean {{instance}}")),
        unit="percentunit", fill=0, min_=0, decimals=2,
        desc="Friction mapped into [0,1]: 0 while friction is within the baseline's own 99th percentile "
             "(ksense_baseline_friction_p99), 1 − (that / friction)² above it. The 5-minute mean is what "
             "the descheduler and crane-scheduler read (deploy/scheduling)."), 24, 7)

    L.row("What drives it")
    L.add(timeseries(
        "Contribution to friction² by signal",
        targets((f"ksense_friction_contribution{{{SEL}}}", "{{signal}}"),
                (f"ksense_friction{{{SEL}}} ^ 2", "friction² {{instance}}")),
        stack=True, fill=60, decimals=2,
        overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                    "properties": [{"id": "custom.stacking", "value": {"mode": "none", "group": "B"}},
                                   {"id": "custom.fillOpacity", "value": 0},
                                   {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                                   {"id": "color", "value": {"mode": "fixed", "fixedColor": "text"}}]}],
        desc="Each feature's share of friction²; the stack adds up to friction² (dashed)."), 12, 9)
    L.add(timeseries(
        "Signals: latencies",
        targets((f"ksense_signal{{{SEL}, signal!~\".*_(busy|rate)\"}}", "{{signal}}")), unit="s", log=True, fill=0,
        desc="The time-valued features the model scores (by default the P99 of the run-queue wait after a wakeup)."), 6, 9)
    L.add(timeseries(
        "Signals: CPU shares",
        targets((f"ksense_signal{{{SEL}, signal=~\".*_busy\"}}", "{{signal}}")), unit="percentunit", fill=0,
        desc="The `_busy` features: summed durations per second, e.g. the share of a CPU the NET_RX and BLOCK softirqs take."), 6, 9)

    L.row("Workloads")
    L.add(timeseries(
        "Friction per workload (top 10)",
        targets((f"topk(10, ksense_workload_friction{{{SEL}}})", "{{workload}}")),
        fill=0, min_=0, decimals=2,
        desc="Each exported workload's friction against a baseline of its own (its run-queue and served-request "
             "P99; --workloads.enabled). /api/v1/score lists the victims, those beyond their own 99th percentile, "
             "with their suspects (next panel)."), 12, 8)
    L.add(timeseries(
        "Suspects: victim ← suspect",
        targets((f"max by (workload, suspect) (ksense_workload_suspect_correlation{{{SEL}}})",
                 "{{workload}} ← {{suspect}}")),
        fill=0, min_=0, decimals=2,
        desc="For each victim (a workload beyond its own normal friction, worse), the workloads whose CPU use "
             "moved with its friction over the last 120 intervals (Pearson r, the method of Google's CPI2): the "
             "likeliest antagonists. A correlation is not a cause: the victim's own client in another cgroup "
             "moves with it too."), 12, 8)

    L.row("Baseline")
    L.add(state_timeline("Baseline state", targets((f"ksense_baseline_ready{{{SEL}}}", "{{instance}}")), BASELINE,
                         desc="calibrating → frozen. Friction is only meaningful when frozen."), 12, 6)
    L.add(timeseries("Baseline samples", targets((f"ksense_baseline_samples{{{SEL}}}", "{{instance}}")),
                     fill=10, min_=0, decimals=0), 12, 6)
    L.add(timeseries("Baseline samples that measured each signal",
                     targets((f"ksense_baseline_signal_samples{{{SEL}}}", "{{signal}}")), fill=0, min_=0, decimals=0,
                     desc="The baseline's samples in which each signal had events (a TCP segment acknowledged, a "
                          "softirq run). A signal with too few (under 10, or half a short baseline) is left out of "
                          "friction until the next calibration: an empty node calibrated without TCP traffic has no "
                          "round-trip time to compare one with. Recalibrate once the node carries its real load."),
          24, 6)
    return dashboard("ksense-friction", "ksense / Node friction",
                     "How far each node is from its own calibrated baseline, which way, and why.", L)


def latency_dashboard():
    L = Layout()
    rq, ds, si = ("ksense_runqueue_latency_seconds", "ksense_dstate_duration_seconds",
                  "ksense_softirq_duration_seconds")
    L.row("Run queue: $node")
    rqw = "ksense_runqueue_wakeup_latency_seconds"
    L.add(heatmap("Run-queue latency", hist_heatmap(rq, SEL),
                  desc="Time from becoming runnable (woken, new, or preempted and requeued) to running on a "
                       "CPU, per bucket (events/s)."), 12, 9)
    L.add(timeseries("Run-queue latency P50 / P99",
                     targets((hist_quantile(0.5, rq, SEL), "P50"), (hist_quantile(0.99, rq, SEL), "P99"),
                             (hist_mean(rq, SEL), "mean"), (hist_quantile(0.99, rqw, SEL), "P99 after a wakeup")),
                     unit="s", log=True, fill=0,
                     desc="P99 after a wakeup: the waits of threads that slept (e.g. for a request) before they "
                          "run, without the requeues of CPU hogs; the model's runqueue_wakeup_* features."), 12, 9)

    L.row("D-state (uninterruptible sleep): $node")
    L.add(heatmap("D-state duration", hist_heatmap(ds, SEL),
                  desc="How long tasks stay in uninterruptible sleep (mostly I/O waits), per bucket."), 12, 9)
    L.add(timeseries("D-state duration P50 / P99",
                     targets((hist_quantile(0.5, ds, SEL), "P50"), (hist_quantile(0.99, ds, SEL), "P99"),
                             (hist_mean(ds, SEL), "mean")), unit="s", log=True, fill=0), 12, 9)

    wrq, wds = "ksense_workload_runqueue_latency_seconds", "ksense_workload_dstate_duration_seconds"
    L.row("Workloads: $node")
    L.add(timeseries("Run-queue latency P99 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.99, wrq, SEL, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0,
                     desc="P99 run-queue wait of each workload's (cgroup's) tasks, from the per-workload buckets "
                          "(coarser than the node's: a factor 8 apart in the text formats; native histograms "
                          "keep the kernel's resolution). Needs --workloads.enabled."), 8, 8)
    L.add(timeseries("Run-queue time by workload (top 10)",
                     targets((f"topk(10, sum by (workload) (rate({wrq}_sum{{{SEL}}}[$__rate_interval]))"
                              f" or sum by (workload) (histogram_sum(rate({wrq}{{{SEL}}}[$__rate_interval]))))",
                              "{{workload}}")),
                     unit="s", fill=0,
                     desc="Seconds each workload's threads spent waiting in run queues per second: how many CPUs' "
                          "worth of time it lost to queueing. Needs --workloads.enabled."), 8, 8)
    L.add(timeseries("D-state duration P99 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.99, wds, SEL, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0,
                     desc="P99 uninterruptible sleep of each workload's tasks (only workloads that slept in D "
                          "state). Needs --workloads.enabled."), 8, 8)

    L.row("Softirq: $node")
    L.add(timeseries("Softirq P99 by vector",
                     targets((hist_quantile(0.99, si, sel('vector=~"$vector"'), by=("vector",)), "{{vector}}")),
                     unit="s", log=True, fill=0), 12, 8)
    L.add(timeseries("Softirq P50 by vector",
                     targets((hist_quantile(0.5, si, sel('vector=~"$vector"'), by=("vector",)), "{{vector}}")),
                     unit="s", log=True, fill=0), 12, 8)
    L.add(timeseries("Softirq rate by vector",
                     targets((hist_rate(si, sel('vector=~"$vector"'), by=("vector",)), "{{vector}}")),
                     unit="ops", fill=20, stack=True), 24, 7)
    L.row("Softirq $vector: $node", repeat="vector")
    L.add(heatmap("Softirq $vector duration", hist_heatmap(si, sel('vector=~"$vector"')),
                  desc="Repeated for each selected vector."), 12, 8)
    L.add(timeseries("Softirq $vector P50 / P99",
                     targets((hist_quantile(0.5, si, sel('vector=~"$vector"')), "P50"),
                             (hist_quantile(0.99, si, sel('vector=~"$vector"')), "P99")),
                     unit="s", log=True, fill=0), 12, 8)

    rtt, retx, drops = "ksense_tcp_rtt_seconds", "ksense_tcp_retransmits_total", "ksense_skb_drops_total"
    wrtt, wretx = "ksense_workload_tcp_rtt_seconds", "ksense_workload_tcp_retransmits_total"
    L.row("Network: $node")
    L.add(heatmap("TCP round-trip time", hist_heatmap(rtt, SEL),
                  desc="Raw RTT of each ACK that acknowledged new data, over all TCP sockets, per bucket (samples/s)."), 12, 8)
    L.add(timeseries("TCP RTT P50 / P99",
                     targets((hist_quantile(0.5, rtt, SEL), "P50"), (hist_quantile(0.99, rtt, SEL), "P99"),
                             (hist_mean(rtt, SEL), "mean")), unit="s", log=True, fill=0), 12, 8)
    L.add(timeseries("TCP retransmissions by kind",
                     targets((f"sum by (kind) (rate({retx}{{{SEL}}}[$__rate_interval]))", "{{kind}}")),
                     unit="ops", fill=20, stack=True,
                     desc="Segments retransmitted per second: timeout (after an RTO: the costly kind, a request "
                          "waits 200 ms or more), fast (fast retransmit, RACK), probe (tail-loss probes)."), 8, 8)
    L.add(timeseries("Packet drops by reason",
                     targets((f"sum by (reason) (rate({drops}{{{SEL}}}[$__rate_interval]))", "{{reason}}")),
                     unit="pps", fill=20, stack=True,
                     desc="Packets the kernel dropped per second, by the running kernel's drop reason "
                          "(NETFILTER_DROP: a firewall rule; TCP_* reasons: the TCP stack; NO_SOCKET: nothing listens)."),
          8, 8)
    L.add(timeseries("TCP retransmissions by workload (top 10)",
                     targets((f"topk(10, sum by (workload) (rate({wretx}{{{SEL}}}[$__rate_interval])))", "{{workload}}")),
                     unit="ops", fill=0,
                     desc="Retransmitted segments per second of each workload's sockets (needs --workloads.enabled)."),
          8, 8)
    L.add(timeseries("TCP RTT P99 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.99, wrtt, SEL, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0,
                     desc="P99 round-trip time of each workload's sockets (needs --workloads.enabled)."), 24, 8)

    req, reqs = "ksense_request_duration_seconds", "ksense_requests_total"
    wreq, wreqs = "ksense_workload_request_duration_seconds", "ksense_workload_requests_total"
    server, client = sel('role="server"'), sel('role="client"')
    L.row("Requests (from socket calls): $node")
    L.add(timeseries("Requests/s by role",
                     targets((f"sum by (role) (rate({reqs}{{{SEL}}}[$__rate_interval]))", "{{role}}")),
                     unit="reqps", fill=0,
                     desc="Requests the node's applications served (server: each receive -> send turn on an accepted "
                          "TCP socket) and made to their dependencies (client: each send -> receive turn on a "
                          "connected one), inferred from socket calls."), 8, 8)
    L.add(timeseries("Server request latency P50 / P99",
                     targets((hist_quantile(0.5, req, server), "P50"), (hist_quantile(0.99, req, server), "P99"),
                             (hist_mean(req, server), "mean")), unit="s", log=True, fill=0,
                     desc="From a request's arrival on the socket to the first send of its response (to its last "
                          "retransmission where segments of it were lost), over every server on the node: the time "
                          "its client waited, less the network's delay."), 8, 8)
    L.add(timeseries("Client call latency P50 / P99",
                     targets((hist_quantile(0.5, req, client), "P50"), (hist_quantile(0.99, req, client), "P99"),
                             (hist_mean(req, client), "mean")), unit="s", log=True, fill=0,
                     desc="From a send on a connected socket to the first receive of the reply: what the node's "
                          "applications wait for their dependencies, the network included."), 8, 8)
    L.add(timeseries("Requests/s served by workload (top 10)",
                     targets((f"topk(10, sum by (workload) (rate({wreqs}{{{server}}}[$__rate_interval])))",
                              "{{workload}}")),
                     unit="reqps", fill=0, desc="Server requests per second of each workload (needs --workloads.enabled)."),
          8, 8)
    L.add(timeseries("Server request latency P99 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.99, wreq, server, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0,
                     desc="P99 of each workload's requests as a server, from the per-workload buckets (a factor 8 "
                          "apart in the text formats; native histograms keep the kernel's). Needs --workloads.enabled."),
          8, 8)
    L.add(timeseries("Server request latency P50 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.5, wreq, server, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0, desc="Needs --workloads.enabled."), 8, 8)
    L.add(timeseries("Client call latency P99 by workload (top 10)",
                     targets((f"topk(10, {hist_quantile(0.99, wreq, client, by=('workload',))})", "{{workload}}")),
                     unit="s", log=True, fill=0,
                     desc="P99 of each workload's calls to its dependencies (needs --workloads.enabled)."), 12, 8)
    L.add(timeseries("Calls/s made by workload (top 10)",
                     targets((f"topk(10, sum by (workload) (rate({wreqs}{{{client}}}[$__rate_interval])))",
                              "{{workload}}")),
                     unit="reqps", fill=0, desc="Client calls per second of each workload (needs --workloads.enabled)."),
          12, 8)

    L.row("Across nodes")
    allnodes = 'instance=~".+"'
    for title, metric, extra in (("Run-queue latency P99 by node", rq, ()),
                                 ("D-state duration P99 by node", ds, ()),
                                 ("Softirq NET_RX P99 by node", si, ('vector="NET_RX"',)),
                                 ("TCP RTT P99 by node", rtt, ()),
                                 ("Server request latency P99 by node", req, ('role="server"',))):
        q = hist_quantile(0.99, metric, ", ".join([allnodes, *extra]), by=("instance",))
        L.add(timeseries(title, targets((f"({q}){NODE_JOIN}", "{{nodename}}")),
                         unit="s", log=True, fill=0), 8, 8)
    L.add(heatmap("Run-queue latency, all nodes", hist_heatmap(rq, allnodes)), 8, 8)
    L.add(heatmap("D-state duration, all nodes", hist_heatmap(ds, allnodes)), 8, 8)
    L.add(timeseries("Run-queue events/s by node",
                     targets((f"({hist_rate(rq, allnodes, by=('instance',))}){NODE_JOIN}", "{{nodename}}")),
                     unit="ops", fill=0), 8, 8)
    L.add(timeseries("TCP retransmissions/s by node",
                     targets((f"(sum by (instance) (rate({retx}{{{allnodes}}}[$__rate_interval]))){NODE_JOIN}",
                              "{{nodename}}")), unit="ops", fill=0), 8, 8)
    vector_var = {
        "type": "custom", "name": "vector", "label": "Softirq vector",
        "description": "Softirq vectors (kernel softirq names)",
        "query": ",".join(VECTORS), "multi": True, "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [{"selected": False, "text": v, "value": v} for v in VECTORS], "hide": 0,
    }
    return dashboard("ksense-latency", "ksense / Kernel latency",
                     "Run-queue, D-state, softirq and TCP round-trip latency, retransmissions, drops, and the applications' requests inferred from socket calls, from ksense's BPF probes: one node, and across nodes.",
                     L, extra_vars=[vector_var])


def self_dashboard():
    L = Layout()
    runs, secs = "ksense_bpf_program_runs_total", "ksense_bpf_program_run_seconds_total"
    L.row("Health: $node")
    L.add(stat("Programs attached", targets((f"sum(ksense_bpf_program_attached{{{SEL}}})", "attached"),
                                            (f"count(ksense_bpf_program_attached{{{SEL}}})", "of")),
               decimals=0, text_mode="value_and_name"), 6, 4)
    L.add(stat("Up", targets((f'up{{{SEL}}}', "{{instance}}")), mappings=mapping({1: ("up", "green"), 0: ("DOWN", "red")}),
               color_mode="background"), 4, 4)
    L.add(stat("Dropped events (range)", targets((f"sum(increase(ksense_events_dropped_total{{{SEL}}}[$__range]))", "dropped")),
               decimals=0, thresh=thresholds("green", "orange", 1)), 5, 4)
    L.add(stat("Version", targets((f"ksense_build_info{{{SEL}}}", "{{version}} on {{kernel}}")),
               text_mode="name", color_mode="none"), 9, 4)
    L.add(state_timeline("BPF programs attached", targets((f"ksense_bpf_program_attached{{{SEL}}}", "{{program}}")),
                         ATTACHED, thresh=thresholds("red", "green", 1)), 24, 6)

    L.row("BPF overhead (with --bpf.stats): $node")
    L.add(timeseries(
        "Time per run",
        targets((f"1e9 * sum by (program) (rate({secs}{{{SEL}}}[$__rate_interval]))"
                 f" / sum by (program) (rate({runs}{{{SEL}}}[$__rate_interval]))", "{{program}}")),
        unit="ns", fill=0, min_=0,
        desc="Average run time of each BPF program, in nanoseconds per invocation. The kernel counts runs and "
             "run time only while its run-time statistics are held: ksense --bpf.stats (off by default: they "
             "cost every BPF program on the node), or sysctl kernel.bpf_stats_enabled=1. Empty without them."), 12, 8)
    L.add(timeseries(
        "CPU share per BPF program",
        targets((f"sum by (program) (rate({secs}{{{SEL}}}[$__rate_interval]))", "{{program}}")),
        unit="percentunit", stack=True, fill=40,
        desc="CPU time spent in each program per second of wall time (1 = one full CPU)."), 12, 8)
    L.add(timeseries(
        "Runs per second",
        targets((f"sum by (program) (rate({runs}{{{SEL}}}[$__rate_interval]))", "{{program}}")),
        unit="ops", fill=0), 12, 8)
    L.add(timeseries(
        "Dropped events by reason",
        targets((f"sum by (reason) (rate(ksense_events_dropped_total{{{SEL}}}[$__rate_interval]))", "{{reason}}")),
        unit="ops", fill=20, stack=True,
        desc="task_storage: per-task storage allocation failed; map_full: a BPF map is full; "
             "recursion: a program was re-entered. Any sustained rate biases the histograms."), 12, 8)

    L.add(timeseries(
        "OTLP pushes by result",
        targets((f"sum by (result) (rate(ksense_otlp_exports_total{{{SEL}}}[$__rate_interval]))", "{{result}}")),
        unit="ops", fill=20, stack=True,
        desc="Pushes to the OpenTelemetry Collector (only when --otlp.endpoint is set). Failures alone for "
             "10 minutes fire KsenseOTLPPushFailing; the ksense log says why."), 12, 8)

    L.row("Scrape: $node")
    L.add(timeseries("Scrape duration", targets((f"scrape_duration_seconds{{{SEL}}}", "{{instance}}")),
                     unit="s", fill=0, min_=0), 12, 7)
    L.add(timeseries("Samples per scrape", targets((f"scrape_samples_scraped{{{SEL}}}", "{{instance}}")),
                     fill=0, min_=0, decimals=0), 12, 7)
    return dashboard("ksense-self", "ksense / ksense itself",
                     "Is ksense healthy and cheap: BPF programs attached, their cost, dropped events, scrapes.", L)


DASHBOARDS = {
    "ksense-friction.json": friction_dashboard,
    "ksense-latency.json": latency_dashboard,
    "ksense-self.json": self_dashboard,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run dashboards/generate.py", file=sys.stderr)
        return 1
    if check:
        print("dashboards are in sync with generate.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
