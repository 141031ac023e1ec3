# syntax=docker/dockerfile:1
#
# ksense container image.
#
#   docker build -t ghcr.io/ksense/ksense:0.1.0 .
#
# Running it: ksense loads BPF programs, so the container runtime must grant
# CAP_BPF and CAP_PERFMON (Linux >= 5.8):
#
#   docker run --rm --cap-drop ALL --cap-add BPF --cap-add PERFMON \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     -v /var/lib/ksense:/var/lib/ksense -p 9827:9827 ghcr.io/ksense/ksense:0.1.0
#
# The image runs as the unprivileged uid 65532. The binary carries the file
# capabilities cap_bpf,cap_perfmon=ep, so a non-root process gets them as long
# as the runtime puts them in the container's bounding set (--cap-add above);
# without them the kernel refuses to exec the binary (EPERM), which is the sign
# that the capabilities are missing. On kernels < 5.11 BPF maps count against
# RLIMIT_MEMLOCK: add `--ulimit memlock=-1:-1` (or CAP_SYS_RESOURCE when
# running as root). Kernels < 5.8 need CAP_SYS_ADMIN instead and are not
# supported by this setup.
# Kubernetes sets no_new_privs (allowPrivilegeEscalation: false), under which
# file capabilities are ignored: deploy/kubernetes runs the pod as uid 0 with
# all capabilities dropped but BPF, PERFMON and SYS_RESOURCE instead.
#
# Dashboards (dashboards/) and Prometheus rules (deploy/) are deliberately not
# part of the image: they belong to Grafana and Prometheus, not to the exporter.
# tests/deploy/image.sh builds this file with buildah on stand-in base images
# and runs the result; tests/deploy/dockerfile.sh checks its structure.

############################ build ############################
FROM rust:1-bookworm AS build

# The build dependencies have one home, scripts/install-deps.sh (clang and llvm
# for the BPF programs, libelf/zlib/pkg-config for libbpf, protoc and its
# well-known .proto files; --image adds setcap); the image runs the script a
# user runs. No rustup step: build.rs formats the generated skeletons only where
# rustfmt works, so the image's minimal toolchain needs nothing from rustup's
# servers.
COPY scripts/install-deps.sh /usr/local/bin/ksense-install-deps
RUN ksense-install-deps --image && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole source tree minus what .dockerignore leaves out (target/, .git,
# dashboards/, deploy/, tests/deploy/ ...), so new source directories need no
# change here.
COPY . .
# Debug info off (symbols kept, for backtraces): 12 MB instead of 70 MB. The
# file capabilities (see the top of this file) are set here, where the binary
# is made: COPY --from carries the security.capability attribute, so the
# runtime stage stores the binary once (a setcap there would rewrite it into a
# second layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked \
 && strip --strip-debug target/release/ksense \
 && setcap cap_bpf,cap_perfmon=ep target/release/ksense

########################### runtime ###########################
FROM debian:bookworm-slim AS runtime

# Exactly the shared libraries `ldd target/release/ksense` lists, besides
# libc6 (checked by tests/deploy/dockerfile.sh): libelf.so.1 (libelf1),
# libz.so.1 (zlib1g), libgcc_s.so.1 (libgcc-s1); the last two are already in
# the base image and listed so the dependency is explicit. ca-certificates: the
# trust store for an https:// OTLP collector without --otlp.tls.ca-file.
# The state directory holds the calibrated baseline (--model.state-file); mount
# a host directory over it so a new container keeps the baseline.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      libelf1 \
      zlib1g \
      libgcc-s1 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/ksense

COPY --from=build /src/target/release/ksense /usr/local/bin/ksense

USER 65532:65532
EXPOSE 9827
ENTRYPOINT ["/usr/local/bin/ksense"]
