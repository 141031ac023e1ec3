#!/usr/bin/env bash
# OTLP push into a real OpenTelemetry collector: rotel (a Rust OTLP collector,
# shipped as a binary in the PyPI wheel `rotel`, installed into the venv by
# setup.sh) receives on gRPC and OTLP/HTTP and prints every data point it
# decoded (--debug-log metrics, detailed). ksense (root: real probes) pushes
# to each transport in turn (HTTP with gzip); the test reads back from the
# collector's own dump: the resource (service.name, host.name), the three
# kernel histograms as exponential histograms with counts, build and node
# info, and nothing the collector refused.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$here/.venv/bin/python"
bin="${KSENSE_BIN:-$root/target/release/ksense}"
work="$here/.work/otlp"
rm -rf "$work"
mkdir -p "$work"

unavailable() {
  if [ -n "${CI:-}" ]; then echo "FAIL: $*"; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ "$(id -u)" -eq 0 ] || unavailable "needs root (ksense loads BPF programs)"
[ -x "$bin" ] || unavailable "$bin not built (cargo build --release)"
rotel="$("$py" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null || true)"
[ -x "$rotel" ] || unavailable "rotel not installed in $here/.venv (setup.sh installs requirements.txt)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

gport="$(free_port)"
hport="$(free_port)"
# blackhole: the collector forwards nothing anywhere; the debug log is the output.
"$rotel" start --exporter blackhole --debug-log metrics --debug-log-verbosity detailed \
  --otlp-grpc-endpoint "127.0.0.1:$gport" --otlp-http-endpoint "127.0.0.1:$hport" \
  --pid-file "$work/rotel.pid" >"$work/rotel.out" 2>&1 &
pids+=("$!")
echo "== rotel $("$rotel" --version 2>&1 | head -1): gRPC 127.0.0.1:$gport, HTTP 127.0.0.1:$hport"
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null && break; sleep 0.1; done

# One ksense per transport, each until the collector has decoded two pushes.
push() { # NAME ARGS...
  local name="$1" kp kport dump
  shift
  kport="$(free_port)"
  : >"$work/rotel.out.mark"
  local before
  before="$(grep -c '^ResourceMetrics #0' "$work/rotel.out" || true)"
  "$bin" --web.listen-address "127.0.0.1:$kport" --model.state-file "$work/$name.json" \
    --otlp.interval 1s "$@" >"$work/ksense-$name.log" 2>&1 &
  kp=$!
  pids+=("$kp")
  for _ in $(seq 1 100); do
    [ "$(grep -c '^ResourceMetrics #0' "$work/rotel.out" || true)" -ge $((before + 2)) ] && break
    kill -0 "$kp" 2>/dev/null || break
    sleep 0.2
  done
  kill -TERM "$kp"; wait "$kp" || { echo "FAIL: ksense ($name) did not exit cleanly"; tail "$work/ksense-$name.log"; exit 1; }
  echo "== $name: $(grep -c '^ResourceMetrics #0' "$work/rotel.out") pushes decoded so far"
  sed 's/\x1b\[[0-9;]*m//g' "$work/rotel.out" | awk -v n="$before" '/^ResourceMetrics #0/ {i++} i > n' >"$work/dump-$name.txt"
  "$py" - "$work/dump-$name.txt" "$(cat /proc/sys/kernel/hostname)" "$name" <<'PY'
import re, sys
path, host, name = sys.argv[1:]
text = open(path).read()
pushes = [p for p in text.split("ResourceMetrics #0")[1:]]
assert len(pushes) >= 2, f"{name}: the collector decoded {len(pushes)} pushes"
last = pushes[-1]
bad = []
res = last.split("ScopeMetrics #0")[0]
for attr in ("service.name: Str(ksense)", f"host.name: Str({host})"):
    if attr not in res:
        bad.append(f"resource lacks {attr}")
metrics = {}
for m in last.split("Metric #")[1:]:
    n = re.search(r"-> Name: (\S+)", m).group(1)
    t = re.search(r"-> DataType: (\S+)", m).group(1)
    metrics[n] = (t, m)
print(f"  {name}: {len(metrics)} metrics in the last push, e.g. " + ", ".join(sorted(metrics)[:6]))
for h in ("ksense_runqueue_latency", "ksense_dstate_duration", "ksense_softirq_duration"):
    t, m = metrics.get(h, (None, ""))
    counts = [int(c) for c in re.findall(r"^Count: (\d+)", m, re.M)]
    print(f"  {h}: {t}, {len(counts)} data points, counts {counts[:6]}")
    if t != "ExponentialHistogram":
        bad.append(f"{h} arrived as {t}, not ExponentialHistogram")
    elif h != "ksense_dstate_duration" and not any(c > 0 for c in counts):
        bad.append(f"{h}: no data point counted anything")
    if t and "AGGREGATION_TEMPORALITY_CUMULATIVE" not in m:
        bad.append(f"{h} is not cumulative")
for g, attr in (("ksense_build_info", "version: Str("), ("ksense_node_info", f"nodename: Str({host})")):
    t, m = metrics.get(g, (None, ""))
    if t != "Gauge" or attr not in m or "Value: 1" not in m:
        bad.append(f"{g}: {t}, expected a Gauge 1 with {attr}")
for b in bad:
    print(f"FAIL: {name}: {b}")
sys.exit(1 if bad else 0)
PY
}

push grpc --otlp.endpoint "http://127.0.0.1:$gport"
push http-gzip --otlp.endpoint "http://127.0.0.1:$hport" --otlp.protocol http/protobuf --otlp.compression gzip
if grep -qi 'error' <(sed 's/\x1b\[[0-9;]*m//g' "$work/rotel.out" | grep -v '^ *->'); then
  echo "FAIL: the collector logged an error:"; grep -i error "$work/rotel.out" | head; exit 1
fi
for n in grpc http-gzip; do
  if grep -q 'level=error\|level=warn.*otlp' "$work/ksense-$n.log"; then
    echo "FAIL: ksense ($n) logged:"; grep 'level=error\|level=warn' "$work/ksense-$n.log"; exit 1
  fi
done
echo "otlp: OK"
