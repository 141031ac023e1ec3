#!/usr/bin/env bash
# The benchmark scripts, run end to end and briefly (root, ~5 min), and
# checked for their figures: no test runs them otherwise, and a helper whose
# signature changed once left four of them unable to start nginx for days.
# Their results here mean nothing (seconds of load, no quiet machine); only
# that each ran and produced every figure it reports.
#
#   sudo bench/smoke.sh        (part of `make test`; needs a release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "smoke.sh: run as root (the benchmarks load BPF programs)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
PY=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do  # the first with numpy, as qos/run.sh picks
    if command -v "$p" >/dev/null && "$p" -c 'import numpy' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "smoke.sh: no python3 with numpy (apt-get install python3-numpy)" >&2; exit 1; }

step() { echo "bench smoke: $*"; }

# One server's QoS run (its two phases, `cpu` and `loss1`, $2 s each; $QOS_FLAGS
# passed on to run.sh), and a check that every window has every figure named
# after $2 (`post:` ones only after the warm-up, when the model scores).
qos_smoke() {
    local server=$1 seconds=$2; shift 2
    "$here/qos/run.sh" --no-build --no-variants --server "$server" --warmup 20 --phases cpu,loss1 \
        --phase-seconds "$seconds" --rounds 1 ${QOS_FLAGS:-} --out "$out/qos-$server" > "$out/qos-$server.log" 2>&1 \
        || { cat "$out/qos-$server.log"; exit 1; }
    "$PY" - "$out/qos-$server/windows.csv" p99_ms p99_measured_ms ks_server_p99_ms "$@" <<'EOF'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
post = [r for r in rows if r["post_warmup"] == "1"]
assert len(post) >= 3, f"only {len(post)} windows after the warm-up"
for k in sys.argv[2:]:
    after = k.startswith("post:")
    k = k.removeprefix("post:")
    for r in post if after else rows:
        assert math.isfinite(float(r[k])), f"window {r['window']}: {k} is {r[k]}"
print(f"  {len(rows)} windows, {len(post)} after the warm-up, every figure present")
EOF
}

step "QoS benchmark (nginx, wrk, two phases; the server in a cgroup of its own, --workloads)"
QOS_FLAGS=--workloads qos_smoke nginx 10 cpu_util post:friction post:server_friction

step "QoS benchmark (Apache httpd, wrk, two phases)"
qos_smoke apache 10

step "QoS benchmark (redis-server, redis-benchmark, two phases)"
qos_smoke redis 15

step "request latency against the load generator (bench/requests.py)"
"$PY" "$here/requests.py" --windows 2 --window 2 > "$out/requests.txt" 2>"$out/requests.err" \
    || { cat "$out/requests.err"; exit 1; }
[ "$(grep -c '^phase ' "$out/requests.txt")" = 2 ] || { cat "$out/requests.txt"; exit 1; }
grep -q "P99 of the requests it timed" "$out/requests.txt" || { cat "$out/requests.txt"; exit 1; }
echo "  2 windows, both P99s"

step "end-to-end overhead (bench/overhead.py, one round)"
# perf (Debian's linux-perf, which `make test` installs) runs the pipe
# workload; elsewhere the step says why it did not run, and under CI fails.
if ! perf bench sched pipe -l 100 >/dev/null 2>&1; then
    echo "  not run: \`perf bench sched pipe\` does not run here ($(perf version 2>&1 | head -1))"
    [ -z "${CI:-}" ] || { echo "  CI is set: the overhead benchmark must run"; exit 1; }
    exit 0
fi
"$PY" "$here/overhead.py" --rounds 1 --seconds 1 --loops 20000 > "$out/overhead.txt" 2>&1 \
    || { cat "$out/overhead.txt"; exit 1; }
for c in floor default stats no-requests all; do
    grep -Eq "^$c +[-+][0-9.]+ %" "$out/overhead.txt" || { echo "no row for $c"; cat "$out/overhead.txt"; exit 1; }
done
echo "  every configuration measured"
