//! Replays a recorded run through ksense's own model: the snapshots
//! bench/qos recorded (`samples.jsonl`: per model interval, each signal's
//! histogram as scraped) go through the same `Scorer` the live loop uses, so
//! a variant evaluated offline is what ksense would have scored.
//!
//!   cargo run --release --example replay -- out/full-seed5/samples.jsonl \
//!       --model.features runqueue_wakeup_p99,softirq_net_rx_busy --model.friction two-sided
//!
//! Takes ksense's own `--model.*` flags (and their defaults). Prints CSV:
//! t (seconds since ksense started), friction, direction, energy, ready,
//! then each feature's value; an interval without run-queue events, or
//! before the first, prints nothing, as ksense publishes nothing for it.
//! With `KSENSE_REPLAY_BASELINE=1` it also writes the frozen baseline's mean
//! and covariance (row-major) to stderr once, as JSON, with each feature's
//! scale (the model sees ln(1 + value x scale)), for scores computed outside
//! the model (bench/qos/norms.py).

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Parser;
use ksense::config::{Cli, Config};
use ksense::model::pipeline::{model_config, Scorer};
use ksense::model::Model;
use ksense::signals::buckets::index_slot;
use ksense::signals::features;
use ksense::signals::histogram::Histogram;
use ksense::signals::Snapshot;

/// The +Inf bucket lands one native index above the last classic bound.
fn slot_of_bucket(idx: &str, last: i32) -> Option<usize> {
    if idx == "inf" {
        return Some(index_slot(last + 1));
    }
    idx.parse::<i32>().ok().map(index_slot)
}

fn snapshot(line: &serde_json::Value) -> Result<(f64, Snapshot), String> {
    let t = line["t"].as_f64().ok_or("a sample without \"t\"")?;
    let hs = line["h"].as_object().ok_or("a sample without \"h\"")?;
    let mut s = Snapshot::default();
    for (name, h) in hs {
        let buckets = h["b"].as_object().ok_or_else(|| format!("{name}: no \"b\""))?;
        let last = buckets.keys().filter_map(|k| k.parse::<i32>().ok()).max().unwrap_or(0);
        let mut hist = Histogram::default();
        for (idx, c) in buckets {
            let slot = slot_of_bucket(idx, last).ok_or_else(|| format!("{name}: bucket {idx:?}"))?;
            hist.slots[slot] += c.as_u64().ok_or_else(|| format!("{name}: count {c}"))?;
        }
        hist.sum_ns = (h["sum"].as_f64().unwrap_or(0.0) * 1e9).round() as u64;
        s.signals.push((name.clone(), hist));
    }
    Ok((t, s))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: replay SAMPLES.jsonl [ksense --model.* flags]");
        std::process::exit(2);
    };
    let cli = Cli::parse_from(std::iter::once("ksense".to_string()).chain(args));
    let cfg = Config::load(cli).unwrap_or_else(|e| {
        eprintln!("replay: {e}");
        std::process::exit(2)
    });
    let names: Vec<String> = ksense::probes::signal_names();
    let feats =
        features::parse_all(&cfg.model.features, &names, &ksense::probes::counter_signals()).unwrap_or_else(|e| {
            eprintln!("replay: {e}");
            std::process::exit(2)
        });
    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        eprintln!("replay: {path}: {e}");
        std::process::exit(1)
    });
    let mut scorer = Scorer::new(Model::new(model_config(&cfg.model)), feats);
    let out = std::io::stdout();
    let mut out = out.lock();
    let header: Vec<&str> = scorer.features().iter().map(|f| f.name.as_str()).collect();
    writeln!(out, "t,friction,direction,energy,ready,{}", header.join(",")).unwrap();
    let mut dump_baseline = std::env::var_os("KSENSE_REPLAY_BASELINE").is_some();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.unwrap_or_else(|e| panic!("{path}: {e}"));
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            eprintln!("replay: {path}, line {}: {e}", n + 1);
            std::process::exit(1)
        });
        let (t, snap) = snapshot(&v).unwrap_or_else(|e| {
            eprintln!("replay: {path}, line {}: {e}", n + 1);
            std::process::exit(1)
        });
        let Some(s) = scorer.step(snap, Duration::from_secs_f64(t.max(0.0))) else { continue };
        let (f, d, e) = s
            .output
            .as_ref()
            .map_or((f64::NAN, f64::NAN, f64::NAN), |o| (o.friction, f64::from(o.direction), o.energy));
        if let Some(b) = scorer.model.baseline().filter(|_| dump_baseline) {
            let cov: Vec<f64> = b.covariance().iter().copied().collect();
            let scale: Vec<f64> = scorer.features().iter().map(|f| f.stat.model_scale()).collect();
            eprintln!("{}", serde_json::json!({"mean": b.mean().to_vec(), "covariance": cov, "scale": scale}));
            dump_baseline = false;
        }
        let xs: Vec<String> = s.x.iter().map(|x| format!("{x:e}")).collect();
        writeln!(out, "{t},{f},{d},{e},{},{}", u8::from(scorer.model.ready()), xs.join(",")).unwrap();
    }
}
