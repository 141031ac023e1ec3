//! The commands: serve (probes -> signals -> model -> exporters), check,
//! recalibrate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Command, Config};
use crate::exporters::families::{BuildInfo, ModelView, Score};
use crate::exporters::http::{self, Exporter, KernelSource};
use crate::model::{self, Model, ModelConfig, StateError};
use crate::probes::{kernel, AttachMode, Options, Probes};
use crate::workloads::Workloads;
use crate::signals::features::{self, Feature};

/// Exit codes: 0 ok, 1 runtime failure, 2 bad usage, configuration or privileges.
pub const EXIT_USAGE: i32 = 2;

pub fn run(cfg: Config) -> i32 {
    match cfg.command {
        Command::Check => check(),
        Command::Recalibrate => recalibrate(&cfg),
        Command::Serve => match serve(cfg) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                1
            }
        },
    }
}

fn check() -> i32 {
    let support = kernel::probe();
    let checks = kernel::checks(&support);
    let mut failed = false;
    for c in &checks {
        let mark = if c.ok { "ok  " } else if c.required { "FAIL" } else { "warn" };
        println!("{mark}  {:<22} {}", c.name, c.detail);
        failed |= c.required && !c.ok;
    }
    println!("kernel {}", kernel_release());
    i32::from(failed)
}

fn recalibrate(cfg: &Config) -> i32 {
    match model::discard(&cfg.model.state_file) {
        Ok(true) => {
            println!("discarded {}: the next start calibrates a new baseline", cfg.model.state_file.display());
            0
        }
        Ok(false) => {
            println!("no saved baseline at {}", cfg.model.state_file.display());
            0
        }
        Err(e) => {
            eprintln!("ksense: {e}");
            1
        }
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let feats = features::parse_all(&cfg.model.features).map_err(anyhow::Error::msg)?;
    let support = kernel::probe();
    let mode = AttachMode::choose(&cfg.attach, &support)?;
    let t0 = Instant::now();
    let wl = &cfg.workloads;
    let opts = Options { workload_entries: wl.enabled.then_some(wl.map_entries) };
    let mut probes = Probes::attach_with(mode, &support, opts)?;
    let workloads = match probes.take_workload_maps() {
        Some(maps) => Some(Arc::new(Workloads::new(maps, wl).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let probes = Arc::new(probes);
    let attached = probes.programs.iter().filter(|p| p.attached).count();
    tracing::info!(mode = mode.as_str(), programs = attached, millis = t0.elapsed().as_millis() as u64, "BPF programs attached");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
        tracing::info!(address = %cfg.listen, path = %cfg.telemetry_path, "serving metrics");
        let view = Arc::new(RwLock::new(None));
        let exporter = Arc::new(Exporter {
            kernel: probes.clone(),
            model: view.clone(),
            info: BuildInfo { version: env!("CARGO_PKG_VERSION"), kernel: kernel_release(), attach_mode: mode.as_str() },
            le_indices: cfg.classic_le_indices.clone(),
            telemetry_path: cfg.telemetry_path.clone(),
            workloads: workloads.clone(),
        });
        let model_task = tokio::spawn(model_loop(probes.clone(), feats, cfg.model.clone(), view));
        let sweep_task = workloads.map(|w| tokio::spawn(sweep_loop(w)));
        http::serve(listener, exporter, shutdown_signal()).await?;
        model_task.abort();
        if let Some(t) = sweep_task {
            t.abort();
        }
        tracing::info!("shutting down: detaching BPF programs");
        Ok(())
    })
}

/// Reads the per-workload maps between scrapes too, so the entries of cgroups
/// that are gone are deleted even when nobody scrapes.
async fn sweep_loop(w: Arc<Workloads>) {
    let mut tick = tokio::time::interval(crate::workloads::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = w.refresh() {
            tracing::warn!(error = %e, "reading the per-workload maps failed");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The model sees features in microseconds: latencies in seconds are so small
/// that the absolute part of the ridge (1e-9) would swamp their variance.
const MODEL_SCALE: f64 = 1e6;

fn load_or_calibrate(mcfg: ModelConfig, path: &std::path::Path) -> Model {
    match model::load(path, &mcfg.features) {
        Ok(b) => {
            tracing::info!(path = %path.display(), samples = b.samples(), "loaded saved baseline");
            Model::with_baseline(mcfg, b)
        }
        Err(StateError::NotFound(_)) => {
            tracing::info!(warmup = ?mcfg.warmup, "no saved baseline: calibrating");
            Model::new(mcfg)
        }
        Err(e) => {
            match model::set_aside(path) {
                Ok(to) => tracing::warn!(error = %e, moved_to = %to.display(), "saved baseline unusable: set aside, calibrating anew"),
                Err(e2) => tracing::warn!(error = %e, set_aside_error = %e2, "saved baseline unusable, calibrating anew"),
            }
            Model::new(mcfg)
        }
    }
}

async fn model_loop(kernel: Arc<dyn KernelSource>, feats: Vec<Feature>, cfg: crate::config::ModelConfig, view: Arc<RwLock<Option<ModelView>>>) {
    let window = ((cfg.baseline_window.as_secs_f64() / cfg.interval.as_secs_f64()).round() as usize).max(1);
    let mcfg = ModelConfig { features: cfg.features.clone(), warmup: cfg.warmup, window, regularisation: Default::default() };
    let mut model = load_or_calibrate(mcfg, &cfg.state_file);
    publish(&view, &model, None, Vec::new());
    let start = Instant::now();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = None;
    loop {
        tick.tick().await;
        let snap = match kernel.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the probes failed");
                continue;
            }
        };
        let Some(before) = prev.replace(snap.clone()) else { continue };
        let delta = features::interval_delta(&snap, &before);
        if delta.runqueue.count() == 0 {
            continue; // an interval without data produces no update
        }
        let (x, accept) = features::vector(&feats, &delta);
        let scaled: Vec<f64> = x.iter().map(|v| v * MODEL_SCALE).collect();
        let out = model.observe(elapsed(start), &scaled, accept);
        if let Some(b) = model.take_baseline_update() {
            match b.save(&cfg.state_file) {
                Ok(()) => tracing::info!(path = %cfg.state_file.display(), samples = b.samples(), "baseline saved"),
                Err(e) => tracing::warn!(error = %e, "saving the baseline failed; it will be recalibrated on restart"),
            }
        }
        let signals = feats.iter().zip(&x).map(|(f, v)| (f.name.clone(), *v)).collect();
        publish(&view, &model, out, signals);
    }
}

fn elapsed(start: Instant) -> Duration {
    start.elapsed()
}

fn publish(view: &RwLock<Option<ModelView>>, m: &Model, out: Option<model::Output>, signals: Vec<(String, f64)>) {
    let names = &m.config().features;
    let score = out.map(|o| Score {
        friction: o.friction,
        direction: f64::from(o.direction),
        energy: o.energy,
        energy_window: o.energy_window as f64,
        // Contributions are in (scaled) friction² units, which are unit-free.
        contributions: names.iter().cloned().zip(o.contributions).collect(),
    });
    let v = ModelView { ready: m.ready(), samples: m.baseline_samples(), score, signals };
    if let Ok(mut w) = view.write() {
        *w = Some(v);
    }
}
