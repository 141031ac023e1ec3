//! The commands: serve (probes -> signals -> model -> exporters), check,
//! recalibrate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Command, Config};
use crate::exporters::families::{BuildInfo, ModelView, Score};
use crate::exporters::http::{self, Exporter, KernelSource};
use crate::exporters::otlp;
use crate::model::{self, Model, ModelConfig, StateError};
use crate::privileges;
use crate::probes::{kernel, AttachMode, Options, Probes};
use crate::signals::features::{self, Feature};
use crate::workloads::Workloads;

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
        let mark = if c.ok {
            "ok  "
        } else if c.required {
            "FAIL"
        } else {
            "warn"
        };
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
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let feats = features::parse_all(&cfg.model.features).map_err(anyhow::Error::msg)?;
    let support = kernel::probe();
    let mode = AttachMode::choose(&cfg.attach, &support)?;
    let t0 = Instant::now();
    let wl = &cfg.workloads;
    let opts = Options { workload_entries: wl.enabled.then_some(wl.map_entries) };
    let mut probes = Probes::attach_with(mode, &support, &cfg.bpf_disable, opts)?;
    let workloads = match probes.take_workload_maps() {
        Some(maps) => Some(Arc::new(Workloads::new(maps, wl).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let probes = Arc::new(probes);
    let attached = probes.programs.iter().filter(|p| p.attached).count();
    if cfg.strict && attached < probes.programs.len() {
        let missing: Vec<&str> = probes.programs.iter().filter_map(|p| p.error.as_deref()).collect();
        anyhow::bail!(
            "--strict: {} of {} BPF programs not attached ({})",
            probes.programs.len() - attached,
            probes.programs.len(),
            missing.join("; ")
        );
    }
    tracing::info!(
        mode = mode.as_str(),
        programs = attached,
        of = probes.programs.len(),
        millis = t0.elapsed().as_millis() as u64,
        "BPF programs attached"
    );

    // Bound before the capabilities go (a port below 1024 needs CAP_NET_BIND_SERVICE).
    let listener = std::net::TcpListener::bind(cfg.listen).with_context(|| format!("listening on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    privileges::stop_blas_threads();
    if privileges::threads() == 1 {
        let kept = privileges::drop_after_attach(|| probes.snapshot().is_ok()).map_err(anyhow::Error::msg)?;
        let names: Vec<String> = kept.caps.iter().map(|c| c.to_string()).collect();
        tracing::info!(kept = %if names.is_empty() { "none".to_string() } else { names.join(",") }, bounding_cleared = kept.bounding_cleared, "capabilities dropped");
    } else {
        tracing::warn!(
            threads = privileges::threads(),
            "not dropping capabilities: more than one thread already running"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let tls = cfg.web.as_ref().is_some_and(|w| w.tls.is_some());
        let auth = cfg.web.as_ref().is_some_and(|w| w.auth.is_some());
        tracing::info!(address = %cfg.listen, path = %cfg.telemetry_path, tls, basic_auth = auth, max_connections = cfg.max_connections, "serving metrics");
        let view = Arc::new(RwLock::new(None));
        let otlp_counters = cfg.otlp.as_ref().map(|_| Arc::new(otlp::Counters::default()));
        let exporter = Arc::new(Exporter {
            kernel: probes.clone(),
            model: view.clone(),
            info: BuildInfo { version: env!("CARGO_PKG_VERSION"), kernel: kernel_release(), attach_mode: mode.as_str() },
            le_indices: cfg.classic_le_indices.clone(),
            telemetry_path: cfg.telemetry_path.clone(),
            otlp: otlp_counters.clone(),
            workloads: workloads.clone(),
        });
        let (stop_model, stopped) = tokio::sync::watch::channel(false);
        let model_task = tokio::spawn(model_loop(probes.clone(), feats, cfg.model.clone(), view, stopped));
        let sweep_task = workloads.map(|w| tokio::spawn(sweep_loop(w)));
        let otlp_task = match (cfg.otlp.clone(), otlp_counters) {
            (Some(o), Some(c)) => Some(otlp::spawn(o, exporter.clone(), c)?),
            _ => None,
        };
        let opts = http::ServeOptions { web: cfg.web.clone().unwrap_or_default(), max_connections: cfg.max_connections };
        http::serve(listener, exporter, opts, shutdown_signal()).await?;
        if let Some(t) = sweep_task {
            t.abort();
        }
        if let Some(p) = otlp_task {
            p.shutdown().await;
        }
        // In-flight scrapes are done; the model saves what changed since its last save.
        let _ = stop_model.send(true);
        if tokio::time::timeout(Duration::from_secs(2), model_task).await.is_err() {
            tracing::warn!("the model did not stop within 2s");
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
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: finishing in-flight scrapes");
}

/// The model sees ln(1 + value in microseconds): latencies and CPU shares
/// grow by orders of magnitude under interference, and on a log scale a
/// tenfold rise in one signal does not drown a threefold rise in another.
/// bench/qos measured it: Spearman rho against client P99 0.76 -> 0.92 with
/// the same features. Microseconds keep small latencies clear of the ridge.
const MODEL_SCALE: f64 = 1e6;

fn model_space(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| (v.max(0.0) * MODEL_SCALE).ln_1p()).collect()
}

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
                Ok(to) => {
                    tracing::warn!(error = %e, moved_to = %to.display(), "saved baseline unusable: set aside, calibrating anew")
                }
                Err(e2) => {
                    tracing::warn!(error = %e, set_aside_error = %e2, "saved baseline unusable, calibrating anew")
                }
            }
            Model::new(mcfg)
        }
    }
}

async fn model_loop(
    kernel: Arc<dyn KernelSource>,
    feats: Vec<Feature>,
    cfg: crate::config::ModelConfig,
    view: Arc<RwLock<Option<ModelView>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let window = ((cfg.baseline_window.as_secs_f64() / cfg.interval.as_secs_f64()).round() as usize).max(1);
    let mcfg = ModelConfig {
        features: cfg.features.clone(),
        warmup: cfg.warmup,
        window,
        regularisation: cfg.regularisation,
        side: cfg.side,
    };
    let mut model = load_or_calibrate(mcfg, &cfg.state_file);
    let mut saver = Saver { path: cfg.state_file.clone(), pending: false, failures: 0 };
    publish(&view, &model, None, Vec::new(), saver.failures);
    let start = Instant::now();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                if saver.pending {
                    saver.save(model.baseline());
                }
                return;
            }
        }
        let snap = match kernel.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the probes failed");
                continue;
            }
        };
        let taken = Instant::now();
        let Some((before, before_at)) = prev.replace((snap.clone(), taken)) else { continue };
        let delta = features::interval_delta(&snap, &before);
        // The real span, not the nominal interval: a late tick is a longer interval.
        let secs = taken.duration_since(before_at).as_secs_f64();
        if delta.runqueue.count() == 0 {
            continue; // an interval without data produces no update
        }
        let (x, accept) = features::vector(&feats, &delta, secs);
        let scaled = model_space(&x);
        let out = model.observe(elapsed(start), &scaled, accept);
        if let Some(b) = model.take_baseline_update() {
            saver.pending = true;
            saver.save(Some(b));
        }
        let signals = feats.iter().zip(&x).map(|(f, v)| (f.name.clone(), *v)).collect();
        publish(&view, &model, out, signals, saver.failures);
    }
}

/// Saves the baseline; a failure (full or read-only disk, ...) is one log
/// line and a counter, and the save is retried at the next change and at
/// shutdown.
struct Saver {
    path: std::path::PathBuf,
    pending: bool,
    failures: u64,
}

impl Saver {
    fn save(&mut self, b: Option<&model::Baseline>) {
        let Some(b) = b else { return };
        match b.save(&self.path) {
            Ok(()) => {
                self.pending = false;
                tracing::info!(path = %self.path.display(), samples = b.samples(), "baseline saved");
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %e, failures = self.failures, "saving the baseline failed; retried at the next change and at shutdown");
            }
        }
    }
}

fn elapsed(start: Instant) -> Duration {
    start.elapsed()
}

fn publish(
    view: &RwLock<Option<ModelView>>,
    m: &Model,
    out: Option<model::Output>,
    signals: Vec<(String, f64)>,
    save_failures: u64,
) {
    let names = &m.config().features;
    let score = out.map(|o| Score {
        friction: o.friction,
        direction: f64::from(o.direction),
        energy: o.energy,
        energy_window: o.energy_window as f64,
        // Contributions are in (scaled) friction² units, which are unit-free.
        contributions: names.iter().cloned().zip(o.contributions).collect(),
    });
    let v = ModelView { ready: m.ready(), samples: m.baseline_samples(), score, signals, save_failures };
    if let Ok(mut w) = view.write() {
        *w = Some(v);
    }
}
