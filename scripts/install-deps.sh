#!/usr/bin/env bash
# Installs what ksense needs to build, run and test on Debian 12 / Ubuntu 22.04+,
# as root. Idempotent: installs only what is missing.
set -euo pipefail

# clang and llvm compile the BPF programs (libbpf-cargo); libelf, zlib and
# pkg-config build libbpf (libbpf-sys); protoc and the well-known .proto files
# (libprotobuf-dev, which protobuf-compiler only recommends) build
# prometheus-client's protobuf format; curl is the README's scrape.
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config protobuf-compiler libprotobuf-dev curl)
case "${1:-}" in
    --test)
        # Real servers and load generators the tests drive, and the tools they
        # call (mount/umount, unshare and setpriv from util-linux; ip, tc and ss
        # from iproute2 and iptables for the network tests' namespaces; numpy
        # and matplotlib for the benchmarks' analysis, which bench/smoke.sh runs;
        # procps: pgrep; apache2: the QoS benchmark's third server, which
        # bench/smoke.sh starts).
        pkgs+=(prometheus stress-ng nginx wrk redis-server redis-tools apache2 python3 util-linux mount iproute2
               iptables python3-numpy python3-matplotlib procps)
        # `perf bench sched pipe`, the overhead benchmark's context-switch
        # workload: Debian's linux-perf runs on any kernel; Ubuntu's perf needs
        # the running kernel's own linux-tools package, so it is left to the user.
        if [ "$(. /etc/os-release && echo "$ID")" = debian ]; then pkgs+=(linux-perf); fi ;;
    --image)
        # The Dockerfile's build stage: setcap gives the binary its file
        # capabilities there, so the runtime stage stores it once.
        pkgs+=(libcap2-bin) ;;
    "") ;;
    *) echo "usage: $0 [--test|--image]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages (${missing[*]}); run as root" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The servers above would start themselves on install (nginx and apache2
    # both on port 80); the tests start their own. A policy-rc.d keeps them
    # stopped during the install, unless the host has one of its own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: no Rust toolchain (cargo) found; install Rust >= 1.88 with rustup first" >&2
    exit 1
fi
