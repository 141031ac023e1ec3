#!/usr/bin/env python3
"""Generate deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/ksense-rules.yml.

    python3 deploy/kubernetes/sync-prometheusrule.py          # rewrite
    python3 deploy/kubernetes/sync-prometheusrule.py --check  # exit 1 if stale

The rule groups are embedded as text (indented under `spec:`), so comments and
block scalars survive and the diff between the two files stays readable.
Standard library only.
"""
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
src = here.parent / "prometheus" / "ksense-rules.yml"
dst = here / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/ksense-rules.yml by
# deploy/kubernetes/sync-prometheusrule.py: do not edit by hand.
# tests/deploy/kube.sh fails when this file and the rules differ.
#
# The Prometheus Operator's ruleSelector may need an extra label here
# (e.g. `release: kube-prometheus-stack`).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ksense
  labels:
    app.kubernetes.io/name: ksense
spec:
"""


def render() -> str:
    lines = src.read_text().splitlines()
    # Drop the file's leading comment block: it describes the standalone file.
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = []
    for line in lines[start:]:
        body.append(("  " + line) if line.strip() else "")
    return HEADER + "\n".join(body).rstrip() + "\n"


def main() -> int:
    out = render()
    if "--check" in sys.argv[1:]:
        if not dst.exists() or dst.read_text() != out:
            print(f"{dst} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{dst.name} is in sync with {src.name}")
        return 0
    dst.write_text(out)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
