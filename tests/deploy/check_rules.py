#!/usr/bin/env python3
"""Static checks on deploy/prometheus/ksense-rules.yml beyond promtool:

- every alert has severity, summary, a description naming the node/instance,
  and a runbook_url whose anchor is a section of docs/runbook.md;
- every alert is exercised by the unit tests both firing (non-empty
  exp_alerts) and not firing (empty exp_alerts);
- every recording rule is exercised by a promql_expr_test;
- the friction thresholds agree with their derivation and every copy: the
  rules' chi2 table row marked "used below" has d = the number of default
  features (src/model/pipeline.rs), the alerts fire at that row's values (to one
  decimal), their summaries and the README's alert table name chi2(d), the
  dashboards (generated from this file) draw the same lines.
"""
import math
import re
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
rules = yaml.safe_load((root / "deploy/prometheus/ksense-rules.yml").read_text())
tests = yaml.safe_load((root / "deploy/prometheus/ksense-rules.test.yml").read_text())
runbook = (root / "docs/runbook.md").read_text()


def github_anchor(heading):
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


anchors = {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+)$", runbook, re.M)}

errors = []
alerts, records = [], []
for g in rules["groups"]:
    for r in g["rules"]:
        if "alert" in r:
            alerts.append(r)
        else:
            records.append(r["record"])

fired, quiet, tested_exprs = set(), set(), set()
for t in tests["tests"]:
    for a in t.get("alert_rule_test", []):
        (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
    for e in t.get("promql_expr_test", []):
        tested_exprs.add(e["expr"].strip())

for r in alerts:
    name = r["alert"]
    ann = r.get("annotations", {})
    labels = r.get("labels", {})
    if labels.get("severity") not in ("warning", "critical", "info"):
        errors.append(f"{name}: severity label missing or unknown")
    for k in ("summary", "description", "runbook_url"):
        if not str(ann.get(k, "")).strip():
            errors.append(f"{name}: annotation {k} missing")
    desc = str(ann.get("description", ""))
    # absent() has no target labels to name; every other alert must name one.
    if "absent(" not in r["expr"] and not ("$labels.instance" in desc or "$labels.node" in desc):
        errors.append(f"{name}: description does not name the node/instance")
    url = str(ann.get("runbook_url", ""))
    m = re.search(r"docs/runbook\.md#([\w-]+)$", url)
    if not m:
        errors.append(f"{name}: runbook_url {url!r} does not point at docs/runbook.md#anchor")
    elif m.group(1) not in anchors:
        errors.append(f"{name}: runbook anchor #{m.group(1)} not found in docs/runbook.md")
    elif m.group(1) != name.lower():
        errors.append(f"{name}: runbook anchor #{m.group(1)} should be #{name.lower()}")
    if name not in fired:
        errors.append(f"{name}: no unit test where it fires")
    if name not in quiet:
        errors.append(f"{name}: no unit test where it does not fire")

for rec in records:
    if rec not in tested_exprs:
        errors.append(f"recording rule {rec}: no promql_expr_test")

# ---- one home for the friction thresholds
def floor1(x):
    """x rounded down to one decimal (4.30 stays 4.3: the table's values are exact to 2)."""
    return math.floor(x * 10 + 1e-6) / 10


rules_text = (root / "deploy/prometheus/ksense-rules.yml").read_text()
config_rs = (root / "src/model/pipeline.rs").read_text()
m = re.search(r"DEFAULT_FEATURES: \[&str; (\d+)\]", config_rs)
d = int(m.group(1)) if m else None
row = re.search(r"#\s+(\d+)\s+[\d.]+ -> (?:friction )?([\d.]+)\s+[\d.]+ -> ([\d.]+)\s+<- used below", rules_text)
if d is None or row is None:
    errors.append("friction: cannot find DEFAULT_FEATURES in src/model/pipeline.rs or the rules' 'used below' row")
else:
    row_d, warn, crit = int(row.group(1)), float(row.group(2)), float(row.group(3))
    if row_d != d:
        errors.append(f"friction: the rules use the chi2({row_d}) row, ksense ships {d} default features")
    by_name = {r["alert"]: r for r in alerts}
    for name, want in (("KsenseFrictionHigh", warn), ("KsenseFrictionCritical", crit)):
        r = by_name.get(name)
        got = re.search(r"ksense_friction > ([\d.]+)", r["expr"]) if r else None
        if not got or abs(float(got.group(1)) - floor1(want)) > 1e-9:
            errors.append(f"{name}: threshold should be {want} rounded down to one decimal")
        elif f"chi2({d})" not in r["annotations"]["summary"]:
            errors.append(f"{name}: summary should name chi2({d})")
    readme = (root / "README.md").read_text()
    for name in ("KsenseFrictionHigh", "KsenseFrictionCritical"):
        line = next((l for l in readme.splitlines() if l.startswith(f"| `{name}`")), "")
        if f"χ²({d})" not in line:
            errors.append(f"README's alert table: {name} should name χ²({d})")
    friction = (root / "dashboards/ksense-friction.json").read_text()
    for v in (floor1(warn), floor1(crit)):
        if f'"value": {v}' not in friction:
            errors.append(f"dashboards/ksense-friction.json: no threshold line at {v}")

for e in errors:
    print("FAIL:", e)
print(f"check_rules: {len(alerts)} alerts, {len(records)} recording rules, {len(errors)} problems")
sys.exit(1 if errors else 0)
