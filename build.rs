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

/// libbpf-cargo pipes each skeleton through the `rustfmt` on PATH, which is
/// cosmetic (the code lives in OUT_DIR) but fails the build where `rustfmt`
/// is a rustup proxy without the component, as in the official `rust` images
/// (minimal profile). Formatting is used only where rustfmt answers; a path
/// that does not exist makes libbpf-cargo skip it.
fn rustfmt(out: &Path) -> PathBuf {
    let works = std::process::Command::new("rustfmt").arg("--version").output().is_ok_and(|o| o.status.success());
    if works {
        PathBuf::from("rustfmt")
    } else {
        out.join("no-rustfmt")
    }
}

fn build(src: &Path, name: &str, out: &Path, vmlinux: &str, rustfmt: &Path) {
    SkeletonBuilder::new()
        .source(src)
        .clang_args(["-I", "bpf", "-I", vmlinux, "-O2", "-g", "-Wall"])
        .rustfmt(rustfmt)
        .build_and_generate(out.join(format!("{name}.skel.rs")))
        .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    println!("cargo:rerun-if-changed={}", src.display());
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let vmlinux = format!("bpf/vmlinux/{arch}");
    let fmt = rustfmt(&out);
    let mut mods = String::new();
    for (src, name) in sources("bpf") {
        build(&src, &name, &out, &vmlinux, &fmt);
        writeln!(mods, "pub mod {name} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\"));\n}}")
            .unwrap();
    }
    std::fs::write(out.join("skels.rs"), mods).expect("writing skels.rs");
    for (src, name) in sources("bench/bpf") {
        build(&src, &name, &out, &vmlinux, &fmt);
    }
    // New files and every shared header.
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=bench/bpf");
}
