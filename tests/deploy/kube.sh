#!/usr/bin/env bash
# Kubernetes manifests: render with kustomize (base and the OTLP component),
# check the PrometheusRule is in sync with deploy/prometheus, validate every
# object offline (kubernetes-validate for the core API, strict; npm
# kubernetes-models / @kubernetes-models/prometheus-operator for everything
# including the CRDs) and assert the security posture (check_kube.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"
kubectl="$here/.venv/bin/kubectl"
[ -x "$py" ] && [ -x "$kubectl" ] && [ -d "$here/node_modules" ] \
  || { echo "kube: run tests/deploy/setup.sh first" >&2; exit 2; }

work="$here/.work/kube"
rm -rf "$work"
mkdir -p "$work/otlp"

echo "== kubectl kustomize deploy/kubernetes"
"$kubectl" kustomize "$root/deploy/kubernetes" >"$work/rendered.yaml"
grep -c '^kind:' "$work/rendered.yaml" | sed 's/^/objects: /'

echo "== kubectl kustomize (base + components/otlp)"
# kustomize refuses an overlay inside the base's directory; build one here.
rel="$(realpath --relative-to="$work/otlp" "$root/deploy/kubernetes")"
cat >"$work/otlp/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel
components:
  - $rel/components/otlp
YAML
"$kubectl" kustomize "$work/otlp" >"$work/rendered-otlp.yaml"

echo "== PrometheusRule in sync with deploy/prometheus/ksense-rules.yml"
"$py" "$root/deploy/kubernetes/sync-prometheusrule.py" --check

echo "== schema validation (npm kubernetes-models, incl. CRDs)"
(cd "$here" && node validate-k8s.mjs "$work/rendered.yaml")
(cd "$here" && node validate-k8s.mjs "$work/rendered-otlp.yaml" >/dev/null) \
  || { echo "FAIL: OTLP overlay does not validate"; exit 1; }

echo "== strict core validation + posture"
"$py" "$here/check_kube.py" "$root" "$work/rendered.yaml" "$work/rendered-otlp.yaml"
echo "kube: OK"
