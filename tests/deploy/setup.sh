#!/usr/bin/env bash
# Installs everything the deployment tests (tests/deploy/*.sh) need, on a fresh
# Debian 12 machine, as root. Idempotent: a second run installs nothing and
# takes a few seconds.
#
#   apt:  prometheus (+ promtool), python3 + venv, nodejs + npm, stress-ng,
#         buildah, mmdebstrap, libcap2-bin
#   pip:  tests/deploy/requirements.txt   -> tests/deploy/.venv
#   npm:  tests/deploy/package-lock.json  -> tests/deploy/node_modules
#
# Both install dirs are gitignored (tests/deploy/.gitignore).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (apt-get install)" >&2
  exit 1
fi

# ---- Debian packages -------------------------------------------------------
# buildah, mmdebstrap and capsh (libcap2-bin): image.sh builds and runs the
# container image.
# libpython3.11: the rotel collector's binary (otlp.sh) links it.
want=(prometheus stress-ng ca-certificates buildah mmdebstrap libcap2-bin libpython3.11)
# python3 and node may come from elsewhere (pyenv, nodesource); only ask apt
# for them when the commands are missing, so we never fight another install.
if ! command -v python3 >/dev/null 2>&1; then
  want+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  want+=(python3-venv)
fi
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get update"
  apt-get update -qq
  log "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's prometheus package starts a system service; the tests run their
  # own Prometheus processes on free ports and do not need it.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
else
  log "apt packages present"
fi
command -v promtool >/dev/null
command -v prometheus >/dev/null

# ---- Python venv -----------------------------------------------------------
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want_sum="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_sum" ]; then
  log "pip install -r requirements.txt into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want_sum" >"$stamp"
else
  log "python venv up to date"
fi

# ---- npm packages ----------------------------------------------------------
nstamp="$here/node_modules/.lock.sha256"
nwant="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -d "$here/node_modules" ] || [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
  log "npm ci in $here"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$nwant" >"$nstamp"
else
  log "node_modules up to date"
fi

log "ok"
