#!/usr/bin/env bash
# ksense QoS benchmark: does friction track the client P99 of a real service?
#
#   sudo bench/qos/run.sh [--quick] [--seed S] [--server nginx|redis|apache]
#                         [--regime fixed|closed|bursty] [--phase-seconds N] [--warmup N]
#                         [--rounds R] [--window N] [--features a,b,c] [--out DIR]
#                         [--no-build] [--no-variants] [--no-metrics-save] [--workloads]
#
# Default: 120 s quiet warm-up, then 9 phases x 45 s x 2 rounds (~16 min).
# --quick: 60 s warm-up, 9 phases x 25 s x 1 round (~5 min), for smoke tests.
# Writes bench/qos/out/ (raw recordings, windows.csv) and bench/qos/qos.png
# (with --out DIR: DIR/ and DIR/qos.png),
# prints the Spearman table and the offline variants table. --workloads also records the
# server's own friction (its cgroup, --workloads.enabled). See README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

quick=0; build=1; server=nginx; variants=1; out="$here/out"; png="$here/qos.png"; pass=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --no-variants) variants=0 ;;
        --no-metrics-save|--workloads) pass+=("$1") ;;
        --out) out=$(realpath -m "$2"); png="$out/qos.png"; pass+=(--out "$out"); shift ;;
        --server) server=$2; pass+=("$1" "$2"); shift ;;
        --seed|--regime|--phase-seconds|--warmup|--rounds|--window|--features|--phases|--connections|--delay-ms|--ksense)
            pass+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $quick = 1 ]; then
    pass=(--warmup 60 --phase-seconds 25 --rounds 1 "${pass[@]}")
fi

# ---- what is needed (nothing is installed here)
missing=(); hints=()
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (ksense loads BPF programs): sudo $0 $*" >&2; exit 2; }
case $server in
    redis) tools="redis-server redis-benchmark redis-cli" ;;
    apache) tools="apache2 wrk curl" ;;
    *) tools="nginx wrk curl" ;;
esac
for t in $tools stress-ng ip iptables tc; do
    command -v "$t" >/dev/null || { missing+=("$t"); hints+=("$t"); }
done
# qos.py's Apache configuration names Debian's layout: its module directory and mime.types
if [ "$server" = apache ] && command -v apache2 >/dev/null; then
    for f in /usr/lib/apache2/modules/mod_mpm_event.so /etc/mime.types; do
        [ -e "$f" ] || { missing+=("$f (Debian's apache2 layout)"); hints+=(apache2); }
    done
fi
# nginx lives in /usr/sbin, which a plain user's PATH may lack
PY=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import numpy, matplotlib' 2>/dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
    missing+=("python3 with numpy and matplotlib")
    hints+=("python3 python3-numpy python3-matplotlib")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "run.sh: missing: ${missing[*]}" >&2
    echo "  Debian/Ubuntu: apt-get install ${hints[*]}" >&2
    echo "  (numpy/matplotlib from pip work too: pip install numpy matplotlib; set PYTHON=/path/to/python3)" >&2
    exit 2
fi
[ -r /proc/pressure/cpu ] || echo "run.sh: note: /proc/pressure is not available (kernel without PSI): PSI columns will be N/A" >&2

bin="$repo/target/release/ksense"
if [ $build = 1 ]; then
    if [ ! -x "$bin" ] || [ -n "$(find "$repo/src" "$repo/bpf" "$repo/Cargo.toml" "$repo/Cargo.lock" "$repo/build.rs" -newer "$bin" 2>/dev/null | head -1)" ]; then
        echo "run.sh: building ksense (cargo build --release --locked)" >&2
        (cd "$repo" && cargo build --release --locked)
    fi
    # variants.py replays the recording through ksense's own model.
    [ $variants = 0 ] || (cd "$repo" && cargo build --release --locked --example replay)
fi
[ -x "$bin" ] || { echo "run.sh: no ksense binary at $bin" >&2; exit 2; }

# ---- the machine should be idle: everything else adds latency too
read -r load1 _ < /proc/loadavg
echo "run.sh: load average now $load1 ($(nproc) CPUs)" >&2
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "run.sh: WARNING: the machine is busy (load $load1); the results will be noisier. Top processes:" >&2
    ps -eo pcpu,comm --sort=-pcpu | sed -n '2,6p' >&2
fi

# ---- record (own session: the recorder tells its processes from everyone else's)
setsid "$PY" "$here/qos.py" --ksense "$bin" "${pass[@]}" &
rec=$!
trap 'kill -TERM $rec 2>/dev/null; wait $rec' INT TERM
wait $rec
trap - INT TERM

# ---- analyse
cd "$here"
"$PY" analyze.py --out "$out" --png "$png"
if [ $variants = 1 ]; then
    echo
    "$PY" variants.py "$out"
fi
