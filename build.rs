//! Compiles every `bpf/*.bpf.c` into a libbpf skeleton in OUT_DIR, and the
//! comparison programs of `bench/bpf/` for `cargo bench --bench cost`.
//! `skels.rs` declares one module per probe family for src/probes/skel.rs, so
//! a new family's `.bpf.c` needs no change here.
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// The `*.bpf.c` files of a directory, sorted, as (path, name).
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.strip_suffix(".bpf.c")?.to_string();
            Some((p, name))
        })
        .collect();
    v.sort();
    v
}

fn build(src: &Path, name: &str, out: &Path, vmlinux: &str) {
    SkeletonBuilder::new()
        .source(src)
        .clang_args(["-I", "bpf", "-I", vmlinux, "-O2", "-g", "-Wall"])
        .build_and_generate(out.join(format!("{name}.skel.rs")))
        .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    println!("cargo:rerun-if-changed={}", src.display());
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let vmlinux = format!("bpf/vmlinux/{arch}");
    let mut mods = String::new();
    for (src, name) in sources("bpf") {
        build(&src, &name, &out, &vmlinux);
        writeln!(mods, "pub mod {name} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\"));\n}}")
            .unwrap();
    }
    std::fs::write(out.join("skels.rs"), mods).expect("writing skels.rs");
    for (src, name) in sources("bench/bpf") {
        build(&src, &name, &out, &vmlinux);
    }
    serial_openblas(&arch);
    // New files and every shared header.
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=bench/bpf");
}

/// The model links Debian's serial OpenBLAS, found first at run time through
/// the binary's RUNPATH whatever the system's default (alternatives) is: the
/// pthread build starts worker threads when it loads, before main, and
/// capabilities are per thread (privileges.rs drops them only while the
/// process has one thread). The model's matrices are 4x4 to 8x8, where
/// threads only cost.
fn serial_openblas(arch: &str) {
    let dir = format!("/usr/lib/{arch}-linux-gnu/openblas-serial");
    if !Path::new(&dir).join("libopenblas.so.0").exists() {
        panic!("{dir}/libopenblas.so.0 missing: install libopenblas-serial-dev (scripts/install-deps.sh does)");
    }
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
