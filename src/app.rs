//! The commands: serve (probes -> signals -> model -> exporters), check,
//! recalibrate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Command, Config};
use crate::exporters::families::{BuildInfo, Counters};
use crate::exporters::gather::Exporter;
use crate::exporters::http;
use crate::model::{self, pipeline};
use crate::privileges;
use crate::probes::{kernel, AttachMode, Options, Probes};
use crate::signals::features;
use crate::signals::metric::Collector;
use crate::signals::Source;
use crate::workloads::Workloads;

/// Exit codes: 0 ok, 1 runtime failure, 2 bad usage, configuration or privileges.
pub const EXIT_USAGE: i32 = 2;

pub fn run(cfg: Config) -> i32 {
    match cfg.command {
        Command::Check => check(&cfg),
        Command::Recalibrate => recalibrate(&cfg),
        Command::Serve => {
            // The push's TLS files are read now: a missing or malformed one is a
            // configuration error (exit 2), not a failure after the programs load.
            if let Some(e) = otlp_tls_error(&cfg) {
                eprintln!("ksense: {e}");
                return EXIT_USAGE;
            }
            match serve(cfg) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e:#}");
                    1
                }
            }
        }
    }
}

fn otlp_tls_error(cfg: &Config) -> Option<String> {
    let o = cfg.otlp.as_ref().filter(|o| o.endpoint.starts_with("https://"))?;
    crate::exporters::otlp::tls::client_config(&o.tls).err().map(|e| format!("OTLP TLS: {e}"))
}

fn check(cfg: &Config) -> i32 {
    let support = kernel::probe();
    let checks = kernel::checks(&support);
    let mut failed = false;
    // One column for the names, as wide as the longest ("probe inet_sock_set_state").
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(0).max("baseline".len());
    for c in &checks {
        let mark = if c.ok {
            "ok  "
        } else if c.required {
            "FAIL"
        } else {
            "warn"
        };
        println!("{mark}  {:<w$} {}", c.name, c.detail);
        failed |= c.required && !c.ok;
    }
    let (ok, detail) = pipeline::baseline_status(&cfg.model);
    println!("{}  {:<w$} {detail}", if ok { "ok  " } else { "warn" }, "baseline");
    println!("kernel {}", kernel_release());
    i32::from(failed)
}

/// With no server holding the state file (main.rs asks one that does).
fn recalibrate(cfg: &Config) -> i32 {
    match model::discard_all(&cfg.model.state_file) {
        Ok(gone) if !gone.is_empty() => {
            let names: Vec<String> = gone.iter().map(|p| p.display().to_string()).collect();
            println!("discarded {}: the next start calibrates anew", names.join(" and "));
            0
        }
        Ok(_) => {
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
    let support = kernel::probe();
    let mode = AttachMode::choose(cfg.attach.mode(), &support)?;
    let t0 = Instant::now();
    let wl = &cfg.workloads;
    let opts = Options {
        workload_entries: wl.enabled.then_some(wl.map_entries),
        stats: cfg.bpf_stats,
        perf_events: cfg.perf_events,
        sched_waits: cfg.sched_waits,
    };
    let mut probes = Probes::attach_with(mode, &support, &cfg.bpf_disable, opts)?;
    let workloads = match probes.take_workload_maps() {
        Some(maps) => Some(Arc::new(Workloads::new(maps, wl).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let probes = Arc::new(probes);
    let attached = probes.programs.iter().filter(|p| p.attached).count();
    let wanted = probes.programs.iter().filter(|p| p.wanted).count();
    if let Some(refusal) = cfg.strict.then(|| crate::probes::strict_refusal(&probes.programs)).flatten() {
        anyhow::bail!(refusal);
    }
    tracing::info!(
        mode = mode.as_str(),
        programs = attached,
        of = wanted,
        millis = t0.elapsed().as_millis() as u64,
        "BPF programs attached"
    );

    // Bound before the capabilities go (a port below 1024 needs CAP_NET_BIND_SERVICE).
    let listener = crate::exporters::http::bind(cfg.listen).with_context(|| format!("listening on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
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

    let sources = Sources {
        source: probes.clone(),
        collectors: std::iter::once(probes.clone() as Arc<dyn Collector>)
            .chain(workloads.iter().map(|w| w.clone() as Arc<dyn Collector>))
            .collect(),
        attach_mode: mode.as_str(),
        workloads,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        serve_with(cfg, sources, listener, shutdown_signal()).await?;
        tracing::info!("shutting down: detaching BPF programs");
        Ok(())
    })
}

/// The workloads' histograms as the per-workload models read them: the
/// run-queue map (the first, which ranks them) and the served requests.
struct VictimFeed {
    workloads: Arc<Workloads>,
    server: Option<usize>,
    /// The cycles and instructions maps, where counted.
    cpi: Option<(usize, usize)>,
}

impl VictimFeed {
    fn new(workloads: Arc<Workloads>) -> VictimFeed {
        let server = workloads
            .map_index(crate::probes::WORKLOAD_REQUEST_DURATION, Some(("role", crate::probes::REQUEST_ROLES[0])));
        let counted = |name: &str| {
            let e = crate::probes::perf::EVENTS.iter().find(|e| e.name == name)?;
            workloads.map_index(&crate::probes::perf::workload_family(e), None)
        };
        let (cycles, instructions) = crate::probes::perf::CPI_EVENTS;
        let cpi = counted(cycles).zip(counted(instructions));
        VictimFeed { workloads, server, cpi }
    }
}

impl crate::model::victims::Feed for VictimFeed {
    fn read(&self) -> Option<Vec<crate::model::victims::Reading>> {
        let view = match self.workloads.refresh() {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "reading the per-workload maps for the victims failed");
                return None;
            }
        };
        // Map i's histogram, empty without events; None: no such map.
        let pick = |s: &crate::workloads::Series, i: usize| (i < s.hists.0.len()).then(|| s.hists.hist(i).into_owned());
        let paths: Vec<&str> = view.series.iter().map(|s| s.workload.as_str()).collect();
        let cpu = self.workloads.cpu_seconds(&paths);
        Some(
            view.series
                .iter()
                .zip(cpu)
                .map(|(s, cpu_seconds)| crate::model::victims::Reading {
                    key: s.workload.clone(),
                    labels: std::iter::once(("workload", s.workload.clone()))
                        .chain(s.labels.pairs().map(|(k, v)| (k, v.to_string())))
                        .collect(),
                    runqueue: pick(s, 0).unwrap_or_else(crate::signals::histogram::Histogram::workload),
                    server: self.server.and_then(|i| pick(s, i)),
                    cpu_seconds,
                    cpi: self.cpi.map(|(c, i)| {
                        let n = |i| pick(s, i).map_or(0.0, |h| h.count() as f64);
                        (n(c), n(i))
                    }),
                })
                .collect(),
        )
    }

    fn cpi(&self) -> bool {
        self.cpi.is_some()
    }
}

/// What serving reads from: the attached probes (and workload tracker), or
/// a fake source in tests.
pub struct Sources {
    /// What the model's loop reads.
    pub source: Arc<dyn Source>,
    /// What a scrape and an OTLP export gather, in exposition order.
    pub collectors: Vec<Arc<dyn Collector>>,
    pub attach_mode: &'static str,
    /// Swept between scrapes, when attribution is on.
    pub workloads: Option<Arc<Workloads>>,
}

/// Serves /metrics on `listener`, runs the model and the OTLP push, until
/// `shutdown` resolves; then finishes in-flight scrapes, makes the last OTLP
/// export and saves the baseline.
pub async fn serve_with(
    cfg: Config,
    sources: Sources,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let feats =
        features::parse_all(&cfg.model.features, &crate::probes::signal_names(), &crate::probes::counter_signals())
            .map_err(anyhow::Error::msg)?;
    let tls = cfg.web.as_ref().is_some_and(|w| w.tls.is_some());
    let auth = cfg.web.as_ref().is_some_and(|w| w.auth.is_some());
    tracing::info!(address = %listener.local_addr()?, path = %cfg.telemetry_path, tls, basic_auth = auth, max_connections = cfg.max_connections, "serving metrics");
    let view = Arc::new(RwLock::new(None));
    let otlp_counters = cfg.otlp.as_ref().map(|_| Arc::new(Counters::default()));
    let exporter = Arc::new(Exporter {
        collectors: sources.collectors,
        created: sources.source.started(),
        model: view.clone(),
        info: BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            kernel: kernel_release(),
            attach_mode: sources.attach_mode,
            nodename: cfg.nodename.clone(),
        },
        classic: cfg.classic.clone(),
        telemetry_path: cfg.telemetry_path.clone(),
        otlp: otlp_counters.clone(),
        model_warmup: cfg.model.warmup,
    });
    let (stop_model, stopped) = tokio::sync::watch::channel(false);
    let model = pipeline::start(&cfg.model, &view).await;
    let feed = sources.workloads.clone().map(|w| Arc::new(VictimFeed::new(w)) as Arc<dyn crate::model::victims::Feed>);
    let model_task = tokio::spawn(pipeline::run(sources.source, feats, cfg.model.clone(), model, feed, view, stopped));
    let sweep_task = sources.workloads.map(|w| tokio::spawn(sweep_loop(w)));
    let otlp_task = match (cfg.otlp.clone(), otlp_counters) {
        (Some(o), Some(c)) => Some(crate::exporters::otlp::spawn(o, exporter.clone(), c)?),
        _ => None,
    };
    let web: http::SharedWeb = Arc::new(RwLock::new(Arc::new(cfg.web.clone().unwrap_or_default())));
    let signals_task = tokio::spawn(other_signals(cfg.web_config_file.clone(), web.clone()));
    let opts = http::ServeOptions { web, max_connections: cfg.max_connections };
    http::serve(listener, exporter, opts, shutdown).await?;
    signals_task.abort();
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
    Ok(())
}

/// Reads the per-workload maps between scrapes too, so the entries of cgroups
/// that are gone are deleted even when nobody scrapes; not again where the
/// model (every interval) or a scrape has read them within half its interval.
async fn sweep_loop(w: Arc<Workloads>) {
    let mut tick = tokio::time::interval(crate::workloads::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Off the runtime's thread, which serves scrapes.
        let w = w.clone();
        // Half: the sweep's own last read, one tick ago, is never fresh enough to skip this one.
        let fresh = crate::workloads::SWEEP_INTERVAL / 2;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || w.within(fresh).map(drop)).await {
            tracing::warn!(error = %e, "reading the per-workload maps failed");
        }
    }
}

/// The signals whose default would end the process at once, without the
/// shutdown (no final save, no last OTLP export): SIGHUP re-reads the web
/// config as exporter-toolkit's users expect (certificates, users, headers;
/// a file that no longer loads is logged and the old one kept); SIGUSR1,
/// SIGUSR2 and SIGALRM are logged and ignored (ksense gives them no meaning,
/// and a stray `kill -USR1` should not cost the baseline). SIGQUIT keeps its
/// default, a core dump, for whoever wants one.
/// The handlers are installed when this is called, before the future runs.
fn other_signals(
    web_file: Option<std::path::PathBuf>,
    web: http::SharedWeb,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |k: SignalKind, name: &str| {
        signal(k).map_err(|e| tracing::warn!(signal = name, error = %e, "cannot handle signal")).ok()
    };
    let (Some(mut hup), Some(mut usr1), Some(mut usr2), Some(mut alrm)) = (
        install(SignalKind::hangup(), "SIGHUP"),
        install(SignalKind::user_defined1(), "SIGUSR1"),
        install(SignalKind::user_defined2(), "SIGUSR2"),
        install(SignalKind::alarm(), "SIGALRM"),
    ) else {
        return Box::pin(async {});
    };
    Box::pin(async move {
        loop {
            let name = tokio::select! {
                _ = hup.recv() => "SIGHUP",
                _ = usr1.recv() => "SIGUSR1",
                _ = usr2.recv() => "SIGUSR2",
                _ = alrm.recv() => "SIGALRM",
            };
            if name != "SIGHUP" {
                tracing::info!(
                    signal = name,
                    "signal ignored (only SIGHUP, SIGTERM and SIGINT mean something to ksense)"
                );
                continue;
            }
            let Some(path) = &web_file else {
                tracing::info!(signal = name, "no --web.config.file to re-read");
                continue;
            };
            // Off the runtime's thread: the file read and certificate parsing block.
            let p = path.clone();
            match tokio::task::spawn_blocking(move || crate::exporters::webconfig::WebConfig::load(&p)).await {
                Ok(Ok(new)) => {
                    let (tls, auth) = (new.tls.is_some(), new.auth.is_some());
                    *web.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                    tracing::info!(signal = name, file = %path.display(), tls, basic_auth = auth, "web config reloaded");
                }
                Ok(Err(e)) => {
                    tracing::error!(signal = name, error = %e, "web config reload failed: keeping the one in force")
                }
                Err(e) => {
                    tracing::error!(signal = name, error = %e, "web config reload failed: keeping the one in force")
                }
            }
        }
    })
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
