//! The modules depend on each other one way, along the data flow
//! (README, Layout): signals <- probes <- workloads, signals <- model,
//! signals + model <- exporters, everything <- config and app. A use of a
//! later stage from an earlier one fails here, test code excepted.

use std::path::Path;

/// Each stage and the modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    ("signals", &["probes", "workloads", "model", "exporters", "config", "app"]),
    ("probes", &["workloads", "model", "exporters", "config", "app"]),
    ("model", &["probes", "workloads", "exporters", "config", "app"]),
    ("workloads", &["model", "exporters", "config", "app"]),
    ("exporters", &["probes", "workloads", "config", "app"]),
];

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for (stage, forbidden) in RULES {
        let mut files = Vec::new();
        rs_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "no sources under src/{stage}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests may build what they need from anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap();
            for m in *forbidden {
                if code.contains(&format!("crate::{m}::")) || code.contains(&format!("crate::{m}}}")) {
                    bad.push(format!("{} uses crate::{m}", f.strip_prefix(&src).unwrap().display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "dependencies against the data flow:\n{}", bad.join("\n"));
}
