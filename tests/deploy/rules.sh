#!/usr/bin/env bash
# Prometheus rules: syntax (promtool check rules), behaviour (promtool test
# rules on deploy/prometheus/ksense-rules.test.yml) and metadata (summary,
# description, runbook anchors, fire/no-fire coverage: check_rules.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || { echo "rules: run tests/deploy/setup.sh first" >&2; exit 2; }

cd "$root/deploy/prometheus"
echo "== promtool check rules"
promtool check rules ksense-rules.yml
echo "== promtool test rules"
promtool test rules ksense-rules.test.yml
echo "== promtool check config (example configuration, loads the rules)"
promtool check config prometheus.example.yml
echo "== metadata"
"$py" "$here/check_rules.py" "$root"
echo "rules: OK"
