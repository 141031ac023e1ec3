//! Command line and configuration file. Flags override the file; the file
//! overrides the defaults. Every error names what is wrong and where.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::probes::buckets;

pub const DEFAULT_PORT: u16 = 9827;

#[derive(Parser, Debug, Default)]
#[command(
    name = "ksense",
    version,
    about = "Node-level eBPF exporter: run-queue, D-state and softirq latency histograms, and a friction score for the node.",
    long_about = None,
    after_help = "With no command, ksense serves metrics (needs root, or CAP_BPF and CAP_PERFMON).\nConfiguration file keys mirror the flags, e.g. [web] listen_address = \":9827\"."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on for metrics: host:port, or :port for every address [default: :9827]
    #[arg(long = "web.listen-address", value_name = "ADDR", global = true)]
    pub listen_address: Option<String>,
    /// Path under which to expose metrics [default: /metrics]
    #[arg(long = "web.telemetry-path", value_name = "PATH", global = true)]
    pub telemetry_path: Option<String>,
    /// Classic histogram `le` bounds in seconds, comma separated; each is rounded up to a kernel bucket bound [default: 13 bounds, 2^-20 s to 16 s, factor 4]
    #[arg(long = "web.classic-buckets", value_name = "SECONDS,...", value_delimiter = ',', global = true)]
    pub classic_buckets: Option<Vec<f64>>,
    /// TOML configuration file
    #[arg(long = "config.file", value_name = "FILE", global = true)]
    pub config_file: Option<PathBuf>,
    /// Log level: debug, info, warn, error [default: info]
    #[arg(long = "log.level", value_name = "LEVEL", global = true, value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: Option<String>,
    /// Log format: logfmt or json [default: logfmt]
    #[arg(long = "log.format", value_name = "FORMAT", global = true, value_parser = ["logfmt", "json"])]
    pub log_format: Option<String>,
    /// BPF attach type: auto (tp_btf when the kernel supports it), tp_btf or raw_tp [default: auto]
    #[arg(long = "bpf.attach", value_name = "MODE", global = true, value_parser = ["auto", "tp_btf", "raw_tp"])]
    pub bpf_attach: Option<String>,
    /// Model interval: how often a feature vector is scored [default: 1s]
    #[arg(long = "model.interval", value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub model_interval: Option<Duration>,
    /// Calibration time before the baseline freezes [default: 10m]
    #[arg(long = "model.warmup", value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub model_warmup: Option<Duration>,
    /// Span of the most recent samples kept for the baseline [default: 5m]
    #[arg(long = "model.baseline-window", value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub model_baseline_window: Option<Duration>,
    /// Where the frozen baseline is saved and loaded [default: /var/lib/ksense/baseline.json]
    #[arg(long = "model.state-file", value_name = "FILE", global = true)]
    pub model_state_file: Option<PathBuf>,
    /// Model features, comma separated [default: runqueue_p99,runqueue_mean,dstate_mean,softirq_net_rx_mean]
    #[arg(long = "model.features", value_name = "FEATURES", value_delimiter = ',', global = true)]
    pub model_features: Option<Vec<String>>,
    /// Per-workload (cgroup) run-queue and D-state histograms: true or false [default: true]
    #[arg(long = "workloads.enabled", value_name = "BOOL", global = true, action = clap::ArgAction::Set)]
    pub workloads_enabled: Option<bool>,
    /// Workloads exported with series of their own, the busiest by run-queue wait; the rest are summed in workload="other" [default: 100]
    #[arg(long = "workloads.max", value_name = "N", global = true)]
    pub workloads_max: Option<usize>,
    /// Cgroups the kernel keeps histograms for (per map); events of cgroups beyond are counted as dropped [default: 1024]
    #[arg(long = "workloads.map-entries", value_name = "N", global = true)]
    pub workloads_map_entries: Option<u32>,
    /// Only cgroup paths matching this regex (anchored) get series of their own [default: all]
    #[arg(long = "workloads.include", value_name = "REGEX", global = true)]
    pub workloads_include: Option<String>,
    /// Cgroup paths matching this regex (anchored) never get series of their own [default: none]
    #[arg(long = "workloads.exclude", value_name = "REGEX", global = true)]
    pub workloads_exclude: Option<String>,
    /// The cgroup v2 hierarchy [default: found in /proc/self/mountinfo: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts]
    #[arg(long = "workloads.cgroup-root", value_name = "DIR", global = true)]
    pub workloads_cgroup_root: Option<PathBuf>,
    /// Kubelet's log directory, whose pods/ and containers/ entries name pods and containers [default: /var/log]
    #[arg(long = "workloads.kubelet-log-dir", value_name = "DIR", global = true)]
    pub workloads_kubelet_log_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Serve metrics (the default)
    Serve,
    /// Print what this kernel supports; exit non-zero when a required part is missing
    Check,
    /// Discard the saved baseline so the next start calibrates anew
    Recalibrate,
}

/// The configuration file, same keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub web: WebFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub bpf: BpfFile,
    #[serde(default)]
    pub model: ModelFile,
    #[serde(default)]
    pub workloads: WorkloadsFile,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsFile {
    pub enabled: Option<bool>,
    pub max: Option<usize>,
    pub map_entries: Option<u32>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub cgroup_root: Option<PathBuf>,
    pub kubelet_log_dir: Option<PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    pub listen_address: Option<String>,
    pub telemetry_path: Option<String>,
    pub classic_buckets: Option<Vec<f64>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub level: Option<LogLevel>,
    pub format: Option<LogFormat>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct BpfFile {
    pub attach: Option<AttachFile>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    #[serde(default, deserialize_with = "de_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub warmup: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub baseline_window: Option<Duration>,
    pub state_file: Option<PathBuf>,
    pub features: Option<Vec<String>>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum AttachFile {
    Auto,
    TpBtf,
    RawTp,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

/// Durations as Prometheus writes them: `500ms`, `30s`, `10m`, `1h`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use a number and a unit (ms, s, m, h), e.g. 500ms, 30s, 10m");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        total = unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?.checked_add(total).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub classic_le_indices: Vec<i32>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub attach: String,
    pub model: ModelConfig,
    pub workloads: crate::workloads::Config,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub interval: Duration,
    pub warmup: Duration,
    pub baseline_window: Duration,
    pub state_file: PathBuf,
    pub features: Vec<String>,
}

pub const DEFAULT_FEATURES: [&str; 4] = ["runqueue_p99", "runqueue_mean", "dstate_mean", "softirq_net_rx_mean"];

/// `:9827` means every IPv4 address, as in the Go exporters.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| format!("invalid listen address {s:?}: {e} (use host:port or :port)"))?
        .next()
        .ok_or_else(|| format!("listen address {s:?} resolves to nothing"))
}

impl Config {
    pub fn load(cli: Cli) -> Result<Config, String> {
        let file = match &cli.config_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("reading config file {}: {e}", p.display()))?;
                toml::from_str::<File>(&text).map_err(|e| format!("config file {}: {e}", p.display()))?
            }
            None => File::default(),
        };
        let listen = cli.listen_address.or(file.web.listen_address).unwrap_or_else(|| format!(":{DEFAULT_PORT}"));
        let telemetry_path = cli.telemetry_path.or(file.web.telemetry_path).unwrap_or_else(|| "/metrics".into());
        if !telemetry_path.starts_with('/') || telemetry_path == "/" {
            return Err(format!("telemetry path {telemetry_path:?} must start with / and not be / itself"));
        }
        let classic = match cli.classic_buckets.or(file.web.classic_buckets) {
            None => buckets::default_classic_indices(),
            Some(v) => {
                if v.is_empty() || v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                    return Err(format!("classic buckets {v:?}: every bound must be a positive number of seconds"));
                }
                let mut idx: Vec<i32> = v.iter().map(|&x| buckets::index_at_or_above(x)).collect();
                idx.sort_unstable();
                idx.dedup();
                idx
            }
        };
        let attach = cli.bpf_attach.or(file.bpf.attach.map(|a| {
            match a {
                AttachFile::Auto => "auto",
                AttachFile::TpBtf => "tp_btf",
                AttachFile::RawTp => "raw_tp",
            }
            .to_string()
        }));
        let level = match cli.log_level.as_deref() {
            Some("debug") => Some(LogLevel::Debug),
            Some("info") => Some(LogLevel::Info),
            Some("warn") => Some(LogLevel::Warn),
            Some("error") => Some(LogLevel::Error),
            _ => None,
        };
        let format = match cli.log_format.as_deref() {
            Some("json") => Some(LogFormat::Json),
            Some("logfmt") => Some(LogFormat::Logfmt),
            _ => None,
        };
        let model = ModelConfig {
            interval: cli.model_interval.or(file.model.interval).unwrap_or(Duration::from_secs(1)),
            warmup: cli.model_warmup.or(file.model.warmup).unwrap_or(Duration::from_secs(600)),
            baseline_window: cli.model_baseline_window.or(file.model.baseline_window).unwrap_or(Duration::from_secs(300)),
            state_file: cli.model_state_file.or(file.model.state_file).unwrap_or_else(|| "/var/lib/ksense/baseline.json".into()),
            features: cli.model_features.or(file.model.features).unwrap_or_else(|| DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect()),
        };
        crate::signals::features::parse_all(&model.features)?;
        if model.interval.is_zero() {
            return Err("model interval must be greater than zero".into());
        }
        if model.baseline_window < model.interval {
            return Err(format!("model baseline window ({:?}) must be at least one interval ({:?})", model.baseline_window, model.interval));
        }
        let d = crate::workloads::Config::default();
        let (wf, dflt_dir) = (file.workloads, d.kubelet_log_dir.clone());
        let workloads = crate::workloads::Config {
            enabled: cli.workloads_enabled.or(wf.enabled).unwrap_or(d.enabled),
            max: cli.workloads_max.or(wf.max).unwrap_or(d.max),
            map_entries: cli.workloads_map_entries.or(wf.map_entries).unwrap_or(d.map_entries),
            include: cli.workloads_include.or(wf.include),
            exclude: cli.workloads_exclude.or(wf.exclude),
            cgroup_root: cli.workloads_cgroup_root.or(wf.cgroup_root),
            kubelet_log_dir: cli.workloads_kubelet_log_dir.or(wf.kubelet_log_dir).unwrap_or(dflt_dir),
        };
        if !(1..=1 << 20).contains(&workloads.map_entries) {
            return Err(format!("workloads map entries {} must be between 1 and 1048576", workloads.map_entries));
        }
        crate::workloads::tracker::Filter::new(workloads.include.as_deref(), workloads.exclude.as_deref())?;
        Ok(Config {
            command: cli.command.unwrap_or(Command::Serve),
            listen: parse_listen(&listen)?,
            telemetry_path,
            classic_le_indices: classic,
            log_level: level.or(file.log.level).unwrap_or(LogLevel::Info),
            log_format: format.or(file.log.format).unwrap_or(LogFormat::Logfmt),
            attach: attach.unwrap_or_else(|| "auto".into()),
            model,
            workloads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ksense").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "10", "s", "10x", "-1s", "1.5s", "99999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(cli(&[])).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9827".parse().unwrap());
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.classic_le_indices.len(), 13);
        assert_eq!(c.model.warmup, Duration::from_secs(600));
        assert_eq!(c.command, Command::Serve);
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[web]\nlisten_address = \"127.0.0.1:1\"\ntelemetry_path = \"/m\"\n[model]\nwarmup = \"5s\"\n").unwrap();
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap(), "--web.listen-address", "127.0.0.1:2"])).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.telemetry_path, "/m");
        assert_eq!(c.model.warmup, Duration::from_secs(5));
    }

    #[test]
    fn file_errors_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[web]\nlisten_adress = \":1\"\n").unwrap();
        let e = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("k.toml") && e.contains("line 2") && e.contains("listen_adress"), "{e}");
        std::fs::write(&p, "[model]\nwarmup = \"ten minutes\"\n").unwrap();
        let e = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("line 2") && e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn workloads_flags_and_file() {
        let c = Config::load(cli(&[])).unwrap();
        assert!(c.workloads.enabled);
        assert_eq!((c.workloads.max, c.workloads.map_entries), (100, 1024));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[workloads]\nmax = 7\nexclude = \"/system\\\\.slice/.*\"\nkubelet_log_dir = \"/l\"\n").unwrap();
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap(), "--workloads.enabled", "false", "--workloads.max", "3"])).unwrap();
        assert!(!c.workloads.enabled);
        assert_eq!(c.workloads.max, 3);
        assert_eq!(c.workloads.exclude.as_deref(), Some("/system\\.slice/.*"));
        assert_eq!(c.workloads.kubelet_log_dir, PathBuf::from("/l"));
        let e = Config::load(cli(&["--workloads.include", "(unclosed"])).unwrap_err();
        assert!(e.contains("include") && e.contains("(unclosed"), "{e}");
        assert!(Config::load(cli(&["--workloads.map-entries", "0"])).is_err());
        assert!(Cli::try_parse_from(["ksense", "--workloads.enabled", "maybe"]).is_err());
    }

    #[test]
    fn classic_buckets_round_up_to_kernel_bounds() {
        let c = Config::load(cli(&["--web.classic-buckets", "0.001,1,0.001"])).unwrap();
        assert_eq!(c.classic_le_indices, vec![-39, 0]);
        assert!(Config::load(cli(&["--web.classic-buckets", "0,-1"])).is_err());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [&["--log.level", "loud"][..], &["--model.interval", "1x"], &["--nope"]] {
            let e = Cli::try_parse_from(std::iter::once("ksense").chain(args.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert!(Config::load(cli(&["--web.listen-address", "nohost"])).is_err());
    }
}
