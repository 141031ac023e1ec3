#!/usr/bin/env bash
# A context-switch storm in which every switch changes cgroup: `perf bench
# sched pipe` on one CPU, its two processes in two cgroups of their own. The
# worst case for bpf/perf.bpf.c, which reads the counters only at such
# switches. Prints perf's µs/op. Use as KSENSE_STORM for bench/ns-per-run.sh.
# Usage (root): bench/cross-cgroup-pipe.sh [loops]
set -euo pipefail
root=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
a="$root/ksense-bench-pipe-a" b="$root/ksense-bench-pipe-b"
mkdir -p "$a" "$b"
out=$(mktemp)
cleanup() { echo $$ > "$root/cgroup.procs"; rmdir "$a" "$b" 2>/dev/null || true; rm -f "$out"; }
trap cleanup EXIT
echo $$ > "$a/cgroup.procs"
taskset -c "$(($(nproc) - 1))" perf bench sched pipe -l "${1:-1000000}" > "$out" 2>&1 &
bench=$!
sleep 0.3
for p in $(pgrep -P "$bench"); do echo "$p" > "$b/cgroup.procs"; done
wait "$bench"
grep -E 'usecs/op' "$out"
