#!/usr/bin/env bash
# Runs the deployment tests: setup, then rules, kube, dockerfile, image, otlp,
# dashboards.
# One line per test, then `N passed, N failed` (and skipped, if any); exits
# non-zero when anything failed. Each test's output goes to
# tests/deploy/.work/logs/<test>.log and is printed when the test fails.
#
#   sudo tests/deploy/run-all.sh            # everything
#   sudo tests/deploy/run-all.sh rules kube # a subset (setup always runs)
#
# A test that exits 77 is reported as skipped (dashboards.sh does that when
# target/release/ksense is not built, image.sh without root; never when CI is
# set).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
logs="$here/.work/logs"
mkdir -p "$logs"

tests=("$@")
[ "${#tests[@]}" -gt 0 ] || tests=(rules kube dockerfile image otlp dashboards)

passed=0 failed=0 skipped=0
run() {
  local name="$1" script="$2" t0 rc dt
  t0=$(date +%s)
  "$script" >"$logs/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case "$rc" in
    0)  passed=$((passed + 1)); printf 'PASS  %-11s (%ss)\n' "$name" "$dt" ;;
    77) skipped=$((skipped + 1)); printf 'SKIP  %-11s (%ss) %s\n' "$name" "$dt" "$(grep -m1 '^SKIP' "$logs/$name.log")" ;;
    *)  failed=$((failed + 1)); printf 'FAIL  %-11s (%ss) exit %s\n' "$name" "$dt" "$rc"
        sed 's/^/      | /' "$logs/$name.log" | tail -n 60 ;;
  esac
  # Known-gap warnings stay visible even when the test passes.
  if [ "$rc" = 0 ] && grep -q '^WARNING' "$logs/$name.log"; then
    grep '^WARNING' "$logs/$name.log" | sed 's/^/      | /'
  fi
}

run setup "$here/setup.sh"
# setup is a prerequisite, not a test: only its failure is counted.
[ "$failed" -eq 0 ] && passed=0
if [ "$failed" -gt 0 ]; then
  echo "setup failed; not running the tests"
else
  for t in "${tests[@]}"; do
    if [ -x "$here/$t.sh" ]; then
      run "$t" "$here/$t.sh"
    else
      failed=$((failed + 1)); printf 'FAIL  %-11s no such test\n' "$t"
    fi
  done
fi

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
