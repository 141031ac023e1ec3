#!/usr/bin/env bash
# The container image, built from the Dockerfile and run, with no registry and
# no container engine:
#
# 1. stand-ins for the two base images the Dockerfile names, made with
#    mmdebstrap and tagged with those names: `debian:bookworm-slim` (minbase,
#    docs left out as the slim image does) and `rust:1-bookworm` (Debian with a
#    C toolchain, git and curl, and this machine's Rust toolchain laid out as
#    the official image lays it out: rustup proxies in /usr/local/cargo/bin,
#    the minimal profile, so `rustfmt` is a proxy without the component);
# 2. `buildah bud --isolation chroot --pull=never --layers` of the Dockerfile
#    as it is, one layer per instruction as Docker makes them;
# 3. the image's own file system mounted, its binary run from there as uid
#    65532 with only CAP_BPF and CAP_PERFMON in its bounding set (capsh does
#    the chroot, drops the bounding set and changes uid, in that order, as a
#    container runtime does), checked: the file capabilities came through the
#    COPY, every shared library resolves inside the image, /metrics serves with
#    the three histograms counting;
# 4. the size the image adds to its base, against a budget of 30 MB.
#
# Cached between runs on one machine (tests/deploy/.work/image): the stand-in
# bases (rebuilt when this script or the toolchain changes) and buildah's layer
# cache, which is keyed by each instruction and the content of what it copies,
# so any change to the Dockerfile or to the source tree rebuilds from that
# step on. CI starts from a fresh clone, so it builds every layer.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$here/.work/image"
budget_mb=30
image=localhost/ksense:image-test

say() { printf 'image: %s\n' "$*"; }
unavailable() {
  if [ -n "${CI:-}" ]; then echo "FAIL: $*"; exit 1; fi
  echo "SKIP: $*"; exit 77
}
[ "$(id -u)" -eq 0 ] || unavailable "needs root (buildah, mmdebstrap, chroot, BPF)"
for t in buildah mmdebstrap capsh getcap rustc rustup curl python3; do
  command -v "$t" >/dev/null || unavailable "$t not found (tests/deploy/setup.sh installs buildah, mmdebstrap, libcap2-bin)"
done

mkdir -p "$work"
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver overlay)

# ---------------------------------------------------------------- stand-ins
sysroot="$(rustc --print sysroot)"
rust_version="$(rustc -vV | sed -n 's/^release: //p')"
host="$(rustc -vV | sed -n 's/^host: //p')"
toolchain="$rust_version-$host"
key="$(cat "${BASH_SOURCE[0]}" <(rustc -vV) | sha256sum | cut -c1-16)"

has_image() { # NAME KEY
  [ "$("${B[@]}" inspect --type image --format '{{index .ImageAnnotations "ksense.standin"}}' "$1" 2>/dev/null)" = "$2" ]
}

# Makes image NAME from a mmdebstrap root: standin NAME SETUP_FUNCTION MMDEBSTRAP_ARGS...
standin() {
  local name="$1" setup="$2" ctr mnt t0
  shift 2
  if has_image "$name" "$key"; then say "stand-in $name: cached"; return; fi
  t0=$(date +%s)
  ctr="$("${B[@]}" from scratch)"
  mnt="$("${B[@]}" mount "$ctr")"
  mmdebstrap --quiet "$@" bookworm "$mnt"
  "$setup" "$mnt" "$ctr"
  rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/var/cache/apt/*.bin "$mnt"/var/cache/apt/archives/*.deb
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" config --annotation "ksense.standin=$key" --cmd /bin/bash "$ctr"
  "${B[@]}" commit --quiet --rm "$ctr" "$name" >/dev/null
  say "stand-in $name: made in $(( $(date +%s) - t0 )) s, $(size_mb "$name") MB"
}

# What the official debian:*-slim images leave out (debuerreotype --slimify).
slim_excludes=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
               --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
               --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*')
# The apt settings every official debian image carries (debuerreotype): no
# package caches or downloaded .debs left in a layer, no translations.
apt_setup() { # MNT
  cat >"$1/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' >"$1/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$1/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$1/etc/apt/apt.conf.d/docker-autoremove-suggests"
}
slim_setup() { apt_setup "$1"; }

rust_setup() { # MNT CTR: the official rust image's layout, from this machine's toolchain
  local mnt="$1" ctr="$2" tc="$1/usr/local/rustup/toolchains/$toolchain" c f
  apt_setup "$mnt"
  # Only the minimal profile's components, file by file from their manifests.
  mkdir -p "$tc/lib/rustlib"
  for c in rustc cargo rust-std; do
    f="$sysroot/lib/rustlib/manifest-$c-$host"
    [ -f "$f" ] || { echo "image: $f missing: the toolchain has no $c component" >&2; exit 1; }
    sed -n 's/^\(file\|dir\)://p' "$f" | (cd "$sysroot" && xargs cp -a --parents -t "$tc")
    cp "$f" "$tc/lib/rustlib/"
    echo "$c-$host"
  done >"$tc/lib/rustlib/components"
  cp "$sysroot/lib/rustlib/rust-installer-version" "$sysroot/lib/rustlib/multirust-channel-manifest.toml" "$tc/lib/rustlib/"
  { echo 'config_version = "1"'
    for c in cargo rust-std rustc; do
      printf '\n[[components]]\npkg = "%s"\ntarget = "%s"\nis_extension = false\n' "$c" "$host"
    done; } >"$tc/lib/rustlib/multirust-config.toml"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" >"$mnt/usr/local/rustup/settings.toml"
  mkdir -p "$mnt/usr/local/cargo/bin"
  cp "$(command -v rustup)" "$mnt/usr/local/cargo/bin/rustup"
  # The proxies rustup-init makes, rustfmt among them.
  for f in cargo cargo-clippy cargo-fmt cargo-miri clippy-driver rls rust-analyzer rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
    ln -f "$mnt/usr/local/cargo/bin/rustup" "$mnt/usr/local/cargo/bin/$f"
  done
  chmod -R a+w "$mnt/usr/local/rustup" "$mnt/usr/local/cargo"
  # This machine's TLS trust (a TLS-inspecting proxy's CA) for crates.io: part
  # of the machine, not of the Dockerfile, as a user's Docker host has its own.
  if [ -d /usr/local/share/ca-certificates ]; then
    cp -a /usr/local/share/ca-certificates/. "$mnt/usr/local/share/ca-certificates/"
    chroot "$mnt" update-ca-certificates >/dev/null
  fi
  "${B[@]}" config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$rust_version" "$ctr"
}

# Layer sizes from buildah's own storage (containers/storage: each layer's
# uncompressed diff size and its parent), so that a file stored in two layers
# counts twice, as it does on a registry and on a node's disk.
layers() { # IMAGE: prints "bytes layer" for each layer, base first
  python3 - "$work/storage" "$1" <<'PY'
import json, sys
store, name = sys.argv[1], sys.argv[2]
images = json.load(open(f"{store}/overlay-images/images.json"))
layers = {l["id"]: l for l in json.load(open(f"{store}/overlay-layers/layers.json"))}
top = next(i["layer"] for i in images if name in i.get("names", []))
chain = []
while top:
    chain.append(top)
    top = layers[top].get("parent")
for lid in reversed(chain):
    print(layers[lid].get("diff-size", 0), lid)
PY
}
size_mb() { # IMAGE
  layers "$1" | awk '{s += $1} END {printf "%.1f", s / 1e6}'
}

standin docker.io/library/debian:bookworm-slim slim_setup --variant=minbase "${slim_excludes[@]}"
standin docker.io/library/rust:1-bookworm rust_setup --variant=apt \
  --include=build-essential,ca-certificates,curl,wget,git,gnupg,netbase,procps,file,xz-utils

# The stand-in is only worth its name if it fails where the official image
# fails: `rustfmt` there is a proxy without its component.
probe="$("${B[@]}" from --pull=never docker.io/library/rust:1-bookworm)"
if "${B[@]}" run --isolation chroot "$probe" -- rustfmt --version >/dev/null 2>&1; then
  "${B[@]}" rm "$probe" >/dev/null; echo "FAIL: rustfmt works in the rust stand-in; the official image's has no component"; exit 1
fi
"${B[@]}" run --isolation chroot "$probe" -- sh -c 'cargo --version && rustup component list --installed' | sed 's/^/  rust stand-in: /'
"${B[@]}" rm "$probe" >/dev/null

# -------------------------------------------------------------------- build
t0=$(date +%s)
say "buildah bud of $root/Dockerfile"
"${B[@]}" bud --isolation chroot --pull=never --layers --quiet -t "$image" -f "$root/Dockerfile" "$root" \
  >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log"; echo "FAIL: the Dockerfile does not build"; exit 1; }
say "built in $(( $(date +%s) - t0 )) s"

# The layers above the base: what the image adds.
base_layers="$(layers docker.io/library/debian:bookworm-slim | cut -d' ' -f2)"
added=0
say "layers above debian:bookworm-slim:"
while read -r bytes id; do
  grep -qx "$id" <<<"$base_layers" && continue
  added=$((added + bytes))
  awk -v b="$bytes" -v id="${id:0:12}" 'BEGIN {printf "  %8.1f MB  %s\n", b / 1e6, id}'
done < <(layers "$image")
base_mb="$(size_mb docker.io/library/debian:bookworm-slim)"
added_mb="$(awk -v b="$added" 'BEGIN {printf "%.1f", b / 1e6}')"
say "image $(size_mb "$image") MB = base $base_mb MB + $added_mb MB (budget: $budget_mb MB)"

# ---------------------------------------------------------------------- run
ctr="$("${B[@]}" from --pull=never "$image")"
mnt="$("${B[@]}" mount "$ctr")"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail=0
check() { # DESCRIPTION COMMAND...: runs the command, counts a failure
  if "${@:2}"; then say "ok: $1"; else say "FAILED: $1"; fail=1; fi
}

bin="$mnt/usr/local/bin/ksense"
caps="$(getcap "$bin" | sed 's/^[^ ]* //')"
check "the binary carries cap_bpf,cap_perfmon=ep through COPY --from (getcap: ${caps:-none})" \
  test "$(tr ',' '\n' <<<"${caps%=*}" | sort | paste -sd,)=${caps#*=}" = "cap_bpf,cap_perfmon=ep"
missing="$(chroot "$mnt" /usr/bin/ldd /usr/local/bin/ksense | grep 'not found' || true)"
check "every shared library resolves inside the image${missing:+ (missing: $missing)}" test -z "$missing"
check "the added size is within $budget_mb MB ($added_mb MB)" awk -v a="$added_mb" -v b="$budget_mb" 'BEGIN {exit !(a <= b)}'

# The bounding set a runtime would leave: CAP_BPF and CAP_PERFMON only.
last="$(cat /proc/sys/kernel/cap_last_cap)"
drop=""
for ((i = 0; i <= last; i++)); do
  name="$(capsh --decode="$(printf '%x' $((1 << i)))" | sed 's/.*=//')"
  case "$name" in cap_bpf|cap_perfmon) ;; *) drop="${drop:+$drop,}$name" ;; esac
done
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
state="$(chroot "$mnt" /bin/sh -c 'stat -c %u:%g /var/lib/ksense')"
check "the state directory belongs to 65532 ($state)" test "$state" = "65532:65532"
# A mount namespace of its own: proc, sys (BTF, cgroups) and dev for the
# chroot, gone when the process ends.
DROP="$drop" unshare --mount --propagation private -- /bin/bash -c '
  m="$1"; shift
  mount -t proc proc "$m/proc"
  mount --rbind /sys "$m/sys"
  mount --rbind /dev "$m/dev"
  exec capsh --chroot="$m" --drop="$DROP" --gid=65532 --groups=65532 --uid=65532 \
    --shell=/usr/local/bin/ksense -- "$@"' bash "$mnt" --web.listen-address="127.0.0.1:$port" \
  >"$work/run.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port/metrics"
up=0
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || break
  if curl -fsS -o /dev/null "$url" 2>/dev/null; then up=1; break; fi
  sleep 0.2
done
if [ "$up" != 1 ]; then
  sed 's/^/  | /' "$work/run.log"
  echo "FAIL: the image's binary did not serve $url"
  exit 1
fi
status="$(grep -E '^(Uid|Gid|CapBnd|CapEff|CapPrm):' "/proc/$pid/status")"
sed 's/^/  /' <<<"$status"
check "it runs as uid and gid 65532" test "$(awk '/^Uid|^Gid/ {print $2 $3 $4 $5}' <<<"$status" | sort -u)" = 65532655326553265532
check "its bounding set is CAP_BPF and CAP_PERFMON only" \
  test "$(capsh --decode="$(awk '/^CapBnd/ {print $2}' <<<"$status")" | sed 's/.*=//')" = "cap_perfmon,cap_bpf"
check "it serves /metrics with the three histograms counting" "$root/scripts/histograms-counting.sh" "$url" image
check "it logged no error" test -z "$(grep 'level=error' "$work/run.log" || true)"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=""
check "SIGTERM stops it cleanly (exit $rc)" test "$rc" = 0
[ "$fail" = 0 ] || { sed 's/^/  | /' "$work/run.log" | tail -n 30; echo "FAIL: see above"; exit 1; }
say "ok"
