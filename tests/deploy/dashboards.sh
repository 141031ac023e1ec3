#!/usr/bin/env bash
# Grafana dashboards against real data:
#   1. static checks (import-ability; JSON in sync with dashboards/generate.py);
#   2. start ksense (root) on a free loopback port and two Prometheus servers
#      scraping it every second, one plain (classic histograms) and one with
#      --enable-feature=native-histograms, both loading deploy/prometheus rules;
#   3. generate CPU, I/O and loopback-network load so the histograms count;
#   4. run every panel query with the variables substituted against both
#      Prometheus servers and require data (dashboards.py query).
#
# Needs target/release/ksense (built by its owner, not by this script). When it
# is missing the live part is skipped with exit code 77, or fails when CI is set
# (or KSENSE_REQUIRE_BINARY=1). KSENSE_BIN overrides the binary path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || py=python3
bin="${KSENSE_BIN:-$root/target/release/ksense}"
load_seconds="${LOAD_SECONDS:-20}"

echo "== static checks"
python3 "$root/dashboards/generate.py" --check
"$py" "$here/dashboards.py" static "$root/dashboards"

if [ ! -x "$bin" ]; then
  if [ -n "${CI:-}" ] || [ "${KSENSE_REQUIRE_BINARY:-0}" = 1 ]; then
    echo "FAIL: $bin not built (cargo build --release); the live dashboard test cannot run"
    exit 1
  fi
  echo "SKIP: $bin not built: live dashboard queries not run (static checks passed)"
  exit 77
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: must run as root (ksense loads BPF programs)"
  exit 1
fi
command -v prometheus >/dev/null || { echo "FAIL: prometheus not installed (run setup.sh)"; exit 1; }

work="$here/.work/dashboards"
rm -rf "$work"
mkdir -p "$work"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "$work/dd.img"
  exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url seconds pid
  local url="$1" t="$2" pid="$3"
  for _ in $(seq 1 $((t * 4))); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}
metrics() { python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" "$1" 2>/dev/null || true; }

# ---- an OTLP/HTTP receiver that accepts every push, so the OTLP panel has data
oport="$(free_port)"
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$oport" &
pids+=("$!")

# ---- ksense ------------------------------------------------------------------
kport="$(free_port)"
kargs=(--web.listen-address "127.0.0.1:$kport" --model.state-file "$work/baseline.json"
       --otlp.endpoint "http://127.0.0.1:$oport" --otlp.protocol http/protobuf --otlp.interval 1s)
help="$("$bin" --help 2>&1 || true)"
# Faster calibration, when ksense has these flags (planned), so the model
# metrics have data within the test.
if grep -q -- '--model.warmup' <<<"$help"; then kargs+=(--model.warmup 5s); fi
if grep -q -- '--model.interval' <<<"$help"; then kargs+=(--model.interval 1s); fi
echo "== starting ksense ${kargs[*]}"
"$bin" "${kargs[@]}" >"$work/ksense.log" 2>&1 &
kpid=$!
pids+=("$kpid")
if ! wait_http "http://127.0.0.1:$kport/metrics" 60 "$kpid"; then
  echo "FAIL: ksense did not serve /metrics within 60s"
  tail -n 40 "$work/ksense.log"
  exit 1
fi
start="$(date +%s)"

# ---- Prometheus (classic and native histograms) --------------------------------
cp "$root/deploy/prometheus/ksense-rules.yml" "$work/"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - ksense-rules.yml
scrape_configs:
  - job_name: ksense
    static_configs:
      - targets: ["127.0.0.1:$kport"]
        labels:
          node: test-node
EOF
promtool check config "$work/prometheus.yml" >/dev/null
declare -A purl
for mode in classic native; do
  port="$(free_port)"
  extra=()
  [ "$mode" = native ] && extra=(--enable-feature=native-histograms)
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb-$mode" \
    --web.listen-address="127.0.0.1:$port" "${extra[@]}" >"$work/prometheus-$mode.log" 2>&1 &
  pids+=("$!")
  purl[$mode]="http://127.0.0.1:$port"
  if ! wait_http "${purl[$mode]}/-/ready" 60 "$!"; then
    echo "FAIL: Prometheus ($mode) not ready"
    tail -n 20 "$work/prometheus-$mode.log"
    exit 1
  fi
done
echo "== Prometheus classic=${purl[classic]} native=${purl[native]} scraping 127.0.0.1:$kport"

# ---- model ------------------------------------------------------------------
# ksense exports ksense_friction (and direction, energy, contributions) only
# once the baseline is frozen; ksense_baseline_ready/_samples and ksense_signal
# exist from the start. Wait for the freeze when the model is there at all.
model_wait="${MODEL_WAIT_SECONDS:-120}"
allow_model=()
page="$(metrics "http://127.0.0.1:$kport/metrics")"
if grep -Eq '^ksense_(friction|baseline_ready)[ {]' <<<"$page"; then
  echo "== model present: waiting up to ${model_wait}s for the baseline to freeze (ksense_friction)"
  for _ in $(seq 1 "$model_wait"); do
    grep -q '^ksense_friction[ {]' <<<"$page" && break
    sleep 1
    page="$(metrics "http://127.0.0.1:$kport/metrics")"
  done
fi
if grep -q '^ksense_friction[ {]' <<<"$page"; then
  echo "ksense_friction exported: model panels must have data"
else
  if grep -q '^ksense_baseline_ready[ {]' <<<"$page"; then
    echo "WARNING: the model runs but did not freeze a baseline within ${model_wait}s" \
      "(no --model.warmup/--model.interval flags to shorten calibration?)"
  fi
  echo "WARNING: ksense_friction is absent from /metrics: model panels are a known gap for this run"
  allow_model=(--allow-missing-model)
fi

# ---- load -----------------------------------------------------------------------
echo "== load for ${load_seconds}s: stress-ng (CPU), dd oflag=direct (D-state), loopback HTTP (NET_RX)"
loadpids=()
if command -v stress-ng >/dev/null; then
  stress-ng --cpu 4 --timeout "${load_seconds}s" --quiet >/dev/null 2>&1 &
  loadpids+=("$!")
else
  for _ in 1 2 3 4; do timeout "$load_seconds" sh -c 'while :; do :; done' & loadpids+=("$!"); done
fi
(
  end=$(( $(date +%s) + load_seconds ))
  while [ "$(date +%s)" -lt "$end" ]; do
    dd if=/dev/zero of="$work/dd.img" bs=1M count=32 oflag=direct status=none 2>/dev/null \
      || dd if=/dev/zero of="$work/dd.img" bs=1M count=32 conv=fsync status=none
    sync
  done
) &
loadpids+=("$!")
python3 - "$kport" "$load_seconds" <<'PY' &
import sys, time, urllib.request
port, secs = sys.argv[1], float(sys.argv[2])
end = time.time() + secs
while time.time() < end:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
    time.sleep(0.02)
PY
loadpids+=("$!")
for p in "${loadpids[@]}"; do wait "$p" || true; done
sleep 5   # a few more scrapes and rule evaluations after the load
end="$(date +%s)"

if ! kill -0 "$kpid" 2>/dev/null; then
  echo "FAIL: ksense exited during the test"
  tail -n 40 "$work/ksense.log"
  exit 1
fi

# ---- queries ----------------------------------------------------------------
echo "== running every panel query (window $((end - start))s)"
"$py" "$here/dashboards.py" query "$root/dashboards" \
  --prom "classic=${purl[classic]}" --prom "native=${purl[native]}" \
  --start "$start" --end "$end" --step 2 --rate-interval 1m \
  --rules "$work/ksense-rules.yml" --expect-native native "${allow_model[@]}"
echo "dashboards: OK"
