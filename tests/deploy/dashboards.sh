#!/usr/bin/env bash
# Grafana dashboards against real data:
#   1. static checks (import-ability; JSON in sync with dashboards/generate.py);
#   2. start ksense (root) on a free loopback port and three Prometheus servers
#      scraping it every second, one per scrape configuration a user has: the
#      README's snippet (no labels), static targets with a `node` label (with
#      --enable-feature=native-histograms), and the ServiceMonitor's
#      relabelings; all load deploy/prometheus rules;
#   3. generate CPU, I/O and loopback-network load so the histograms count,
#      the CPU load in bursts in a cgroup of its own beside a server and its
#      client in another, calibrated before it: a victim and its suspect;
#   4. run every panel query with the variables substituted against the three
#      Prometheus servers and require data (dashboards.py query), then check the
#      labels each configuration gave the series.
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
  ip netns del "$netns" 2>/dev/null || true
  for cg in "$victim_cg" "$hog_cg"; do
    [ -d "$cg" ] || continue
    for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
  done
  exit "$rc"
}
netns="ksense-dash-$$"
cg_root="$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)"
victim_cg="$cg_root/ksense-dash-victim-$$" hog_cg="$cg_root/ksense-dash-hog-$$"
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

# ---- the victim: a 4-thread server and its keep-alive client in a cgroup ------
# of their own, in a namespace of the test's, from before ksense starts, so
# that they calibrate on the calm node before the CPU load (in its own cgroup).
ip netns add "$netns"
ip netns exec "$netns" ip link set lo up
mkdir -p "$victim_cg" "$hog_cg"
in_cgroup() { # cgroup command...: runs the command in that cgroup, in the background
  local cg="$1"; shift
  sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg" "$@" &
  pids+=("$!")
}
in_cgroup "$victim_cg" ip netns exec "$netns" python3 -c '
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7200)); s.listen(16)
def serve():
    while True:
        c, _ = s.accept()
        while c.recv(16): c.sendall(b"ok\n")
def client():
    c = socket.create_connection(("127.0.0.1", 7200))
    while True:
        c.sendall(b"q\n"); got = b""
        while len(got) < 3: got += c.recv(16)
for _ in range(4): threading.Thread(target=serve, daemon=True).start()
time.sleep(0.3)
for _ in range(2): threading.Thread(target=client, daemon=True).start()
threading.Event().wait()
'

# ---- ksense ------------------------------------------------------------------
kport="$(free_port)"
# --bpf.stats: the self dashboard's BPF overhead row needs the kernel's run-time statistics (off by default).
kargs=(--web.listen-address "127.0.0.1:$kport" --model.state-file "$work/baseline.json" --workloads.enabled --bpf.stats
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

# ---- Prometheus: three scrape configurations ------------------------------------
# plain:      the README's snippet as it is (no labels), classic histograms;
# labelled:   static targets with a `node` label, native histograms;
# kubernetes: the ServiceMonitor's relabelings applied to a target carrying the
#             labels Kubernetes discovery and the Operator give a pod (file_sd:
#             Debian's Prometheus has no Kubernetes discovery), classic.
# The dashboards must work on all three (their node comes from ksense_node_info).
cp "$root/deploy/prometheus/ksense-rules.yml" "$work/"
"$py" - "$root" "$work" "127.0.0.1:$kport" <<'PY'
import json, re, sys, yaml
root, work, target = sys.argv[1:]
readme = open(f"{root}/README.md").read()
snippet = re.search(r"### Prometheus\n\n```yaml\n(.*?)```", readme, re.S).group(1)
base = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["ksense-rules.yml"]}
def write(name, scrape):
    json.dump(dict(base, scrape_configs=[scrape]), open(f"{work}/prometheus-{name}.yml", "w"), indent=1)
plain = yaml.safe_load(snippet)["scrape_configs"][0]
assert "labels" not in plain["static_configs"][0], "the README snippet is the one without labels"
plain.update(scrape_interval="1s", static_configs=[{"targets": [target]}])
write("plain", plain)
write("labelled", {"job_name": "ksense", "static_configs": [{"targets": [target], "labels": {"node": "test-node"}}]})
sm = yaml.safe_load(open(f"{root}/deploy/kubernetes/servicemonitor.yaml"))
camel = lambda k: re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k)
relabel = [{camel(k): v for k, v in r.items()} for r in sm["spec"]["endpoints"][0]["relabelings"]]
json.dump([{"targets": [target], "labels": {"__meta_kubernetes_pod_node_name": "k8s-node",
                                           "namespace": "monitoring", "pod": "ksense-x7k2p",
                                           "container": "ksense", "service": "ksense", "endpoint": "metrics"}}],
          open(f"{work}/k8s-targets.json", "w"))
write("kubernetes", {"job_name": "serviceMonitor/monitoring/ksense/0", "file_sd_configs": [{"files": ["k8s-targets.json"]}],
                     "relabel_configs": relabel})
PY
declare -A purl
configs=(plain labelled kubernetes)
for mode in "${configs[@]}"; do
  promtool check config "$work/prometheus-$mode.yml" >/dev/null
  port="$(free_port)"
  extra=()
  [ "$mode" = labelled ] && extra=(--enable-feature=native-histograms)
  prometheus --config.file="$work/prometheus-$mode.yml" --storage.tsdb.path="$work/tsdb-$mode" \
    --web.listen-address="127.0.0.1:$port" "${extra[@]}" >"$work/prometheus-$mode.log" 2>&1 &
  pids+=("$!")
  purl[$mode]="http://127.0.0.1:$port"
  if ! wait_http "${purl[$mode]}/-/ready" 60 "$!"; then
    echo "FAIL: Prometheus ($mode) not ready"
    tail -n 20 "$work/prometheus-$mode.log"
    exit 1
  fi
done
echo "== Prometheus plain=${purl[plain]} labelled=${purl[labelled]} kubernetes=${purl[kubernetes]} scraping 127.0.0.1:$kport"

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

# The victim needs a baseline of its own (5 s of warm-up from its first
# interval) before the load starts.
victim_rel="${victim_cg#"$cg_root"}"
for _ in $(seq 1 60); do
  grep -q "^ksense_workload_friction{workload=\"$victim_rel\"" <<<"$(metrics "http://127.0.0.1:$kport/metrics")" && break
  sleep 1
done

# ---- load -----------------------------------------------------------------------
echo "== load for ${load_seconds}s: stress-ng (CPU), dd oflag=direct (D-state), loopback HTTP (NET_RX), a lossy TCP transfer (retransmissions, drops)"
loadpids=()
# The CPU hog in bursts (4 s on, 2 s off) in its cgroup: its CPU use goes up
# and down with the victim's friction, which makes it the victim's suspect.
in_cgroup "$hog_cg" sh -c 'end=$(( $(date +%s) + $1 )); while [ "$(date +%s)" -lt "$end" ]; do
    if command -v stress-ng >/dev/null; then stress-ng --cpu 4 --timeout 4s --quiet >/dev/null 2>&1
    else for _ in 1 2 3 4; do timeout 4 sh -c "while :; do :; done" & done; wait; fi
    sleep 2; done' sh "$load_seconds"
loadpids+=("$!")
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
# In a namespace of the test's own, 2 % of one port's segments dropped
# (iptables): retransmissions and NETFILTER_DROP drops for the network row.
ip netns exec "$netns" iptables -A INPUT -p tcp --dport 7100 -m statistic --mode random --probability 0.02 -j DROP
ip netns exec "$netns" python3 - "$load_seconds" <<'PY' &
import socket, sys, threading, time
secs = float(sys.argv[1])
s = socket.socket(); s.bind(("127.0.0.1", 7100)); s.listen()
def serve():
    c, _ = s.accept()
    while c.recv(65536): pass
threading.Thread(target=serve, daemon=True).start()
c = socket.create_connection(("127.0.0.1", 7100)); end = time.time() + secs
while time.time() < end:
    c.sendall(b"x" * 65536); time.sleep(0.005)
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
  --prom "plain=${purl[plain]}" --prom "labelled=${purl[labelled]}" --prom "kubernetes=${purl[kubernetes]}" \
  --start "$start" --end "$end" --step 2 --rate-interval 1m \
  --rules "$work/ksense-rules.yml" --expect-native labelled "${allow_model[@]}"

# What each configuration made of the target's labels: the `node` label where
# the configuration sets one, none where it does not, and the same node name
# from ksense itself in all three.
echo "== labels per scrape configuration"
"$py" - "$(cat /proc/sys/kernel/hostname)" "plain=${purl[plain]}" "labelled=${purl[labelled]}" "kubernetes=${purl[kubernetes]}" <<'PY'
import json, sys, urllib.parse, urllib.request
host, proms = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
want_node = {"plain": None, "labelled": "test-node", "kubernetes": "k8s-node"}
bad = 0
for name, url in proms.items():
    r = json.load(urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": "ksense_node_info"})))
    series = [s["metric"] for s in r["data"]["result"]]
    print(f"  {name:10} {series}")
    ok = (len(series) == 1 and series[0].get("node") == want_node[name] and series[0].get("nodename") == host
          and not {"namespace", "pod", "container"} & series[0].keys())
    if not ok:
        print(f"FAIL: {name}: expected one series with nodename={host!r}, node={want_node[name]!r}, no pod labels")
        bad += 1
sys.exit(1 if bad else 0)
PY
echo "dashboards: OK"
