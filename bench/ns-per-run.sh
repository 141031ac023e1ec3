#!/usr/bin/env bash
# ns/run of each ksense BPF program under a context-switch storm, read from
# ksense's own counters (the kernel's run_time_ns / run_cnt).
# Usage (root): bench/ns-per-run.sh [seconds] [extra ksense flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; shift || true
bin=target/release/ksense
[ -x "$bin" ] || cargo build --release --locked
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
state=$(mktemp -d)
"$bin" --web.listen-address "127.0.0.1:$port" --model.state-file "$state/b.json" --log.level warn --bpf.stats "$@" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
scrape() { curl -s "127.0.0.1:$port/metrics" | grep -E '^ksense_bpf_program_run(s|_seconds)_total'; }
before=$(scrape)
# KSENSE_STORM: another load (e.g. switches across cgroups) instead of the default storm.
${KSENSE_STORM:-stress-ng --switch 2 --timeout "${secs}s" --quiet}
after=$(scrape)
echo "ksense BPF programs under 'stress-ng --switch 2 --timeout ${secs}s' ($(uname -r), $(nproc) CPUs)"
printf '%-18s %12s %10s\n' program runs ns/run
python3 - "$before" "$after" <<'PY'
import re, sys
def parse(text):
    d = {}
    for line in text.splitlines():
        m = re.match(r'(\S+)\{program="(\w+)"\} (\S+)', line)
        if m:
            d[(m[1], m[2])] = float(m[3])
    return d
a, b = parse(sys.argv[1]), parse(sys.argv[2])
# Every program ksense serves, in its order (the list lives in src/probes, not here).
for prog in dict.fromkeys(p for (m, p) in b if m == "ksense_bpf_program_runs_total"):
    n = b[("ksense_bpf_program_runs_total", prog)] - a[("ksense_bpf_program_runs_total", prog)]
    t = b[("ksense_bpf_program_run_seconds_total", prog)] - a[("ksense_bpf_program_run_seconds_total", prog)]
    print(f"{prog:<18} {int(n):>12} {t / n * 1e9 if n else float('nan'):>10.1f}")
PY
