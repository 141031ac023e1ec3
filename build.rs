//! Compiles each `bpf/*.bpf.c` into a libbpf skeleton in OUT_DIR, and the
//! comparison programs of `bench/bpf/` for `cargo bench --bench cost`.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCES: &[&str] = &["bpf/sched", "bpf/softirq", "bench/bpf/floor", "bench/bpf/hashrq", "bench/bpf/parts"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let vmlinux = format!("bpf/vmlinux/{arch}");
    for probe in SOURCES {
        let src = format!("{probe}.bpf.c");
        let name = probe.rsplit('/').next().expect("a file name");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(["-I", "bpf", "-I", vmlinux.as_str(), "-O2", "-g", "-Wall"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=bpf/ksense.h");
    println!("cargo:rerun-if-changed=bpf/workload.h");
    println!("cargo:rerun-if-changed=bpf/vmlinux");
}
