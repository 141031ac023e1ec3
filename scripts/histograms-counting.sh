#!/usr/bin/env bash
# Passes when a ksense at URL has all three kernel histograms counting: it
# makes D-state waits (writes that wait for the disk) first, then scrapes.
# Used by .ci/smoke-run (the README's `make run`) and tests/deploy/image.sh
# (the container image).
#
#   scripts/histograms-counting.sh http://localhost:9827/metrics [NAME]
set -euo pipefail
url="$1"
name="${2:-histograms}"

# D-state: O_DIRECT writes or, where the file system refuses O_DIRECT, fsync.
tmp="$(mktemp -d /var/tmp/ksense-dstate.XXXXXX)"
dd if=/dev/zero of="$tmp/f" bs=1M count=32 oflag=direct status=none 2>/dev/null ||
  dd if=/dev/zero of="$tmp/f" bs=1M count=32 conv=fsync status=none
rm -rf "$tmp"
sleep 2

body="$(curl -fsS "$url")"
fail=0
for h in ksense_runqueue_latency_seconds ksense_dstate_duration_seconds ksense_softirq_duration_seconds; do
  n="$(awk -v m="${h}_count" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}' <<<"$body")"
  printf '%s: %-36s count %s\n' "$name" "$h" "$n"
  [ "${n%.*}" -gt 0 ] || fail=1
done
echo "$name: excerpt of curl -s $url"
grep -E '^ksense_(runqueue_latency_seconds|dstate_duration_seconds|softirq_duration_seconds)_(count|sum)|^ksense_build_info' <<<"$body" |
  grep -v ' 0$' | sed 's/^/  /'
[ "$fail" = 0 ] || { echo "$name: a histogram is not counting" >&2; exit 1; }
