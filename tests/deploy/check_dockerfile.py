#!/usr/bin/env python3
"""Checks the Dockerfile by construction (no Docker engine needed).

    check_dockerfile.py ROOT [BINARY]

- two stages: rust:1-bookworm (build) and debian:bookworm-slim (runtime);
- the build stage installs the build dependencies and runs
  `cargo build --release`; the runtime stage copies exactly the binary cargo
  produces (WORKDIR + target/release/<bin name from Cargo.toml>) and runs it as
  ENTRYPOINT;
- the runtime stage installs a package for every shared library of the binary
  (ldd + dpkg -S), except libc6's, and no build tools or -dev packages;
- non-root USER, EXPOSE 9827;
- dashboards/ and deploy/ are neither copied by any instruction nor part of the
  build context (.dockerignore).
Standard library only.
"""
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(sys.argv[1]).resolve()
binary = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "target/release/ksense"

BUILD_IMAGE = "rust:1-bookworm"
RUNTIME_IMAGE = "debian:bookworm-slim"
# The build dependencies' one home is scripts/install-deps.sh (its first `pkgs=(...)`).
INSTALL_DEPS = "scripts/install-deps.sh"
BUILD_DEPS = set(re.search(r"^pkgs=\(([^)]*)\)", (root / INSTALL_DEPS).read_text(), re.M).group(1).split())
# What the binary is expected to link, used only when it is not built yet.
EXPECTED_RUNTIME = {"libelf1", "zlib1g"}
LIBC_PACKAGES = {"libc6"}
FORBIDDEN_RUNTIME = re.compile(r"(-dev$|^clang|^llvm|^gcc|^g\+\+|^cargo|^rustc|^build-essential|^pkg-config$|^protobuf-compiler$)")

errors, notes = [], []


def fail(msg):
    errors.append(msg)


# ---------------------------------------------------------------- parsing
def parse_dockerfile(text):
    """Returns [(INSTRUCTION, args_string, lineno)], continuation lines joined,
    comments and parser directives dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        m = re.match(r"\s*([A-Za-z]+)\s*(.*)$", buf)
        if m:
            out.append((m.group(1).upper(), m.group(2).strip(), start))
        buf = ""
    if buf:
        fail(f"Dockerfile ends inside a continued line (from line {start})")
    return out


def exec_form(args):
    try:
        v = json.loads(args)
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    except json.JSONDecodeError:
        pass
    return None


def split_flags(args):
    """COPY/ADD/RUN flags (--from=x, --mount=...) and the rest."""
    toks = shlex.split(args)
    flags = {}
    while toks and toks[0].startswith("--"):
        k, _, v = toks.pop(0)[2:].partition("=")
        flags.setdefault(k, []).append(v)
    return flags, toks


def apt_installs(run_args):
    """Package names left installed by the `apt-get install` and
    `apt-get purge/remove` commands of a RUN shell command, in order."""
    pkgs = []
    for cmd in re.split(r"&&|\|\||;", run_args):
        toks = shlex.split(cmd)
        if len(toks) < 2 or toks[0] not in ("apt-get", "apt"):
            continue
        for verb in ("install", "purge", "remove"):
            if verb in toks:
                names = [t.split("=")[0] for t in toks[toks.index(verb) + 1:] if not t.startswith("-")]
                if verb == "install":
                    pkgs += names
                else:
                    pkgs = [p for p in pkgs if p not in names]
    return pkgs


dockerfile = root / "Dockerfile"
instrs = parse_dockerfile(dockerfile.read_text())

stages = []  # {"image", "name", "instrs": [...]}
for ins, args, ln in instrs:
    if ins == "FROM":
        flags, toks = split_flags(args)
        name = toks[2] if len(toks) >= 3 and toks[1].lower() == "as" else None
        stages.append({"image": toks[0], "name": name, "instrs": [], "line": ln})
    elif ins in ("ARG",) and not stages:
        continue
    elif not stages:
        fail(f"line {ln}: {ins} before the first FROM")
    else:
        stages[-1]["instrs"].append((ins, args, ln))

if len(stages) != 2:
    fail(f"expected 2 stages (build, runtime), found {len(stages)}")
    stages += [{"image": "", "name": None, "instrs": [], "line": 0}] * (2 - len(stages))
build, runtime = stages[0], stages[-1]

if build["image"] != BUILD_IMAGE:
    fail(f"build stage is FROM {build['image']!r}, expected {BUILD_IMAGE}")
if runtime["image"] != RUNTIME_IMAGE:
    fail(f"runtime stage is FROM {runtime['image']!r}, expected {RUNTIME_IMAGE}")
if not build["name"]:
    fail("build stage has no name (FROM ... AS build)")


def stage_ref_ok(ref):
    return ref in (build["name"], "0")


# ------------------------------------------------------------ build stage
workdir = "/"
build_env = {}
cargo_ok = False
build_pkgs = []
for ins, args, ln in build["instrs"]:
    if ins == "WORKDIR":
        workdir = os.path.normpath(os.path.join(workdir, args))
    elif ins == "ENV":
        for k, v in re.findall(r"(\w+)=(\S+)", args):
            build_env[k] = v
    elif ins == "RUN":
        flags, _ = split_flags(args) if args.startswith("--") else ({}, [])
        cmd = args
        build_pkgs += apt_installs(cmd)
        if "install-deps" in cmd:  # the script, copied in under any name
            build_pkgs += sorted(BUILD_DEPS)
        for part in re.split(r"&&|;", cmd):
            toks = shlex.split(part)
            if "cargo" in toks and "build" in toks:
                i = toks.index("cargo")
                sub = toks[i:]
                if "--release" not in sub:
                    fail(f"line {ln}: cargo build without --release")
                if any(t.startswith("--target") for t in sub) and "--target-dir" not in " ".join(sub):
                    fail(f"line {ln}: cargo build --target changes the output path")
                if any(t.startswith("--target-dir") for t in sub) or "CARGO_TARGET_DIR" in part:
                    fail(f"line {ln}: custom target dir; the COPY path check assumes target/")
                cargo_ok = True
                # A cache mount over target/ would hide the binary from COPY --from.
                for m in flags.get("mount", []):
                    if re.search(r"target=(/src)?/?target\b", m) or "target/release" in m:
                        fail(f"line {ln}: cache mount over target/ hides the binary from later stages")
    elif ins in ("COPY", "ADD"):
        flags, toks = split_flags(args)
        for src in toks[:-1]:
            if re.match(r"^(\./)?(dashboards|deploy)(/|$)", src):
                fail(f"line {ln}: {ins} copies {src}")
# rustup steps (component add, toolchain install, target add) need rustup's
# servers, which an offline or registry-only build cannot reach.
for i, a, ln in build["instrs"]:
    if i == "RUN" and re.search(r"\brustup\s+(component|toolchain|target)\s+(add|install)\b", a):
        fail(f"line {ln}: a rustup step needs rustup's servers; build with the image's toolchain as it is")
if "CARGO_TARGET_DIR" in build_env:
    fail("ENV CARGO_TARGET_DIR set in build stage")
if not cargo_ok:
    fail("build stage never runs `cargo build --release`")
missing = BUILD_DEPS - set(build_pkgs)
if missing:
    fail(f"build stage does not install {sorted(missing)}")

cargo = tomllib.loads((root / "Cargo.toml").read_text())
bins = [b["name"] for b in cargo.get("bin", []) if "name" in b]
bin_name = "ksense" if "ksense" in bins else (bins[0] if bins else cargo["package"]["name"])
expected_src = f"{workdir.rstrip('/')}/target/release/{bin_name}"

# ---------------------------------------------------------- runtime stage
runtime_pkgs, copies, user, exposes, entrypoint = [], [], None, [], None
for ins, args, ln in runtime["instrs"]:
    if ins == "RUN":
        runtime_pkgs += apt_installs(args)
    elif ins in ("COPY", "ADD"):
        flags, toks = split_flags(args)
        copies.append((ins, flags, toks, ln))
    elif ins == "USER":
        user = args.split(":")[0].strip()
    elif ins == "EXPOSE":
        exposes += [p.split("/")[0] for p in args.split()]
    elif ins == "ENTRYPOINT":
        entrypoint = exec_form(args)
        if entrypoint is None:
            fail(f"line {ln}: ENTRYPOINT should use the exec (JSON) form")

if len(copies) != 1:
    fail(f"runtime stage should copy exactly one thing (the binary), found {len(copies)} COPY/ADD")
binary_dst = None
for ins, flags, toks, ln in copies:
    if ins != "COPY" or not any(stage_ref_ok(f) for f in flags.get("from", [])):
        fail(f"line {ln}: runtime {ins} is not COPY --from={build['name']}")
        continue
    if len(toks) != 2:
        fail(f"line {ln}: expected `COPY --from=... SRC DST`")
        continue
    src, dst = toks
    if os.path.normpath(src) != expected_src:
        fail(f"line {ln}: copies {src}, but cargo writes the binary to {expected_src}")
    binary_dst = dst.rstrip("/") + "/" + bin_name if dst.endswith("/") else dst

if entrypoint:
    ep = entrypoint[0]
    if ep != binary_dst and not (binary_dst and ep == os.path.basename(binary_dst)
                                 and os.path.dirname(binary_dst) in ("/usr/local/bin", "/usr/bin", "/bin")):
        fail(f"ENTRYPOINT {entrypoint} does not run the copied binary {binary_dst}")
elif entrypoint is None and not any(i == "ENTRYPOINT" for i, _, _ in runtime["instrs"]):
    fail("runtime stage has no ENTRYPOINT")

if user is None:
    fail("runtime stage has no USER (would run as root)")
elif user in ("0", "root") or (not user.isdigit() and not any(
        i == "RUN" and re.search(rf"(useradd|adduser|groupadd)\b.*\b{re.escape(user)}\b", a) for i, a, _ in runtime["instrs"])):
    fail(f"USER {user!r} is root or a name the image never creates")
if "9827" not in exposes:
    fail("runtime stage does not EXPOSE 9827")

bad = [p for p in runtime_pkgs if FORBIDDEN_RUNTIME.search(p)]
if bad:
    fail(f"runtime stage installs build-only packages {bad}")


# ----------------------------------------- shared libraries -> packages
def dpkg_owner(path):
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        if p.startswith("/usr/"):
            cands.append(p[4:])
        else:
            cands.append("/usr" + p)
    for p in cands:
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            pkg = r.stdout.split(":")[0].strip()
            return pkg.split(",")[0].strip()
    return None


def depends_closure(pkgs):
    """Packages pulled in by installing pkgs (Depends/Pre-Depends, recursively,
    as known to this machine's dpkg/apt)."""
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                            "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", p],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.match(r"\s*\|?(Pre)?Depends:\s*<?([^\s:>]+)", line)
            if m:
                todo.append(m.group(2))
    return seen


if binary.exists():
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"ldd {binary} failed: {r.stderr.strip()}")
    libs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if m:
            if m.group(2) == "not":
                fail(f"ldd: {m.group(1)} not found")
                continue
            libs[m.group(1)] = m.group(2)
    closure = depends_closure(runtime_pkgs)
    for soname, path in sorted(libs.items()):
        pkg = dpkg_owner(path)
        if pkg is None:
            fail(f"{soname} ({path}) belongs to no Debian package")
            continue
        if pkg in LIBC_PACKAGES:
            notes.append(f"  {soname:28} {pkg:24} libc, in the base image")
        elif pkg in runtime_pkgs:
            notes.append(f"  {soname:28} {pkg:24} installed explicitly")
        elif pkg in closure:
            notes.append(f"  {soname:28} {pkg:24} installed as a dependency")
        else:
            fail(f"{soname} comes from {pkg}, which the runtime stage does not install")
else:
    print(f"SKIP: {binary} is not built: shared-library check not run "
          f"(checking the expected list {sorted(EXPECTED_RUNTIME)} instead)")
    miss = EXPECTED_RUNTIME - set(runtime_pkgs)
    if miss:
        fail(f"runtime stage does not install expected libraries {sorted(miss)}")


# ----------------------------------------------- build context (.dockerignore)
def ignored(rel, patterns):
    """Docker's .dockerignore rule, simplified: last matching pattern wins,
    `!` re-includes, a pattern matching a directory covers its contents."""
    res = False
    parts = rel.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        hit = False
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and fnmatch.fnmatchcase(prefix, p[3:])):
                hit = True
                break
        if hit:
            res = not neg
    return res


di = root / ".dockerignore"
if not di.exists():
    fail(".dockerignore missing")
else:
    pats = [l.strip() for l in di.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]
    for must in ("dashboards/ksense-friction.json", "deploy/prometheus/ksense-rules.yml",
                 "deploy/kubernetes/daemonset.yaml", "target/release/ksense", ".git/HEAD",
                 "tests/deploy/node_modules/x"):
        if not ignored(must, pats):
            fail(f".dockerignore does not exclude {must}")
    for need in ("Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "bpf/x.bpf.c"):
        if ignored(need, pats):
            fail(f".dockerignore excludes {need}, which the build needs")

print(f"stages: build={build['image']} AS {build['name']}, runtime={runtime['image']}")
print(f"binary: {expected_src} -> {binary_dst}; USER {user}; EXPOSE {' '.join(exposes)}")
print(f"runtime packages: {' '.join(runtime_pkgs)}")
if notes:
    print("shared libraries of", binary)
    print("\n".join(notes))
for e in errors:
    print("FAIL:", e)
print(f"check_dockerfile: {len(errors)} problems")
sys.exit(1 if errors else 0)
