//! Command line and configuration file. Flags override the file; the file
//! overrides the defaults. Every error names what is wrong and where.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::exporters::otlp::config::{self as otlp_config, OtlpConfig};
use crate::fileerr;
use crate::signals::buckets;

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
    /// Model features, comma separated [default: runqueue_wakeup_p99,softirq_net_rx_busy,softirq_block_busy]
    #[arg(long = "model.features", value_name = "FEATURES", value_delimiter = ',', global = true)]
    pub model_features: Option<Vec<String>>,
    /// Covariance regularisation: ledoit-wolf (shrinkage) or ridge (the K-Sense reference's) [default: ledoit-wolf]
    #[arg(long = "model.regularisation", value_name = "METHOD", global = true, value_parser = ["ledoit-wolf", "ridge"])]
    pub model_regularisation: Option<String>,
    /// Which deviations count as friction: one-sided (only signals above their baseline) or two-sided (the plain Mahalanobis distance) [default: one-sided]
    #[arg(long = "model.friction", value_name = "SIDE", global = true, value_parser = ["one-sided", "two-sided"])]
    pub model_friction: Option<String>,
    /// OTLP collector to push metrics to, e.g. http://localhost:4317 (gRPC) or http://localhost:4318 (HTTP, /v1/metrics is appended when no path is given); push is off when no endpoint is set [env: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT]
    #[arg(long = "otlp.endpoint", value_name = "URL", global = true)]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf [default: grpc] [env: OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long = "otlp.protocol", value_name = "PROTOCOL", global = true, value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: Option<String>,
    /// How often to push [default: 15s] [env: OTEL_METRIC_EXPORT_INTERVAL, in ms]
    #[arg(long = "otlp.interval", value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub otlp_interval: Option<Duration>,
    /// Header sent with every push, e.g. "authorization=Bearer TOKEN"; repeatable [env: OTEL_EXPORTER_OTLP_HEADERS]
    #[arg(long = "otlp.header", value_name = "KEY=VALUE", global = true)]
    pub otlp_headers: Vec<String>,
    /// Give up on one push after this long [default: 10s] [env: OTEL_EXPORTER_OTLP_TIMEOUT, in ms]
    #[arg(long = "otlp.timeout", value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub otlp_timeout: Option<Duration>,
    /// Compress each push: gzip or none [default: none] [env: OTEL_EXPORTER_OTLP_COMPRESSION]
    #[arg(long = "otlp.compression", value_name = "ALGORITHM", global = true, value_parser = ["gzip", "none"])]
    pub otlp_compression: Option<String>,
    /// CA certificates (PEM) that verify an https:// collector [default: the system's trust store] [env: OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(long = "otlp.tls.ca-file", value_name = "FILE", global = true)]
    pub otlp_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that asks for one (mutual TLS); with --otlp.tls.key-file [env: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE]
    #[arg(long = "otlp.tls.cert-file", value_name = "FILE", global = true)]
    pub otlp_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM) [env: OTEL_EXPORTER_OTLP_CLIENT_KEY]
    #[arg(long = "otlp.tls.key-file", value_name = "FILE", global = true)]
    pub otlp_key_file: Option<PathBuf>,
    /// TLS and basic auth, in the Prometheus exporter-toolkit web configuration format (YAML) [default: plain HTTP]
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// Connections served at once; more wait in the listen backlog and are served as others close [default: 1024]
    #[arg(long = "web.max-connections", value_name = "N", global = true, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: Option<u32>,
    #[arg(long = "bpf.disable", value_name = "PROGRAMS", value_delimiter = ',', global = true,
          help = format!("BPF programs not to load, comma separated: {}", bpf_programs()))]
    pub bpf_disable: Option<Vec<String>>,
    /// Exit with an error when any BPF program is not attached, instead of serving the rest
    #[arg(long = "strict", global = true)]
    pub strict: bool,
    /// Per-workload (cgroup) run-queue and D-state histograms: true or false; costs about 45 ns per run-queue wait, see README [default: false]
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
    pub otlp: OtlpFile,
    #[serde(default)]
    pub workloads: WorkloadsFile,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
    /// `[otlp.headers]` key = "value"
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub compression: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
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
    pub config_file: Option<PathBuf>,
    pub max_connections: Option<u32>,
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
    pub disable: Option<Vec<String>>,
    pub strict: Option<bool>,
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
    pub regularisation: Option<String>,
    pub friction: Option<String>,
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
        total = unit
            .checked_mul(u32::try_from(n).map_err(|_| bad())?)
            .ok_or_else(bad)?
            .checked_add(total)
            .ok_or_else(bad)?;
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
    pub model: crate::model::pipeline::Settings,
    /// None: OTLP push is off.
    pub otlp: Option<OtlpConfig>,
    /// `--web.config.file`, parsed and checked (certificates loaded) at start.
    pub web: Option<crate::exporters::webconfig::WebConfig>,
    pub max_connections: usize,
    /// Programs not to load (`--bpf.disable`).
    pub bpf_disable: Vec<&'static str>,
    pub strict: bool,
    pub workloads: crate::workloads::Config,
}

pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// Chosen by bench/qos (README, "Does friction track P99?"): the tail of the
/// wait a woken thread has before it runs, and the CPU share the network
/// receive and block completion softirqs take.
pub const DEFAULT_FEATURES: [&str; 3] = ["runqueue_wakeup_p99", "softirq_net_rx_busy", "softirq_block_busy"];

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
        let (file, text) = match &cli.config_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("config file {}: {e}", p.display()))?;
                (parse_file(p, &text)?, text)
            }
            None => (File::default(), String::new()),
        };
        // A value taken from the file is reported with the file, line and field.
        let src = Source { path: cli.config_file.as_deref(), text: &text };
        let listen_from =
            src.of(cli.listen_address.is_none() && file.web.listen_address.is_some(), "web.listen_address");
        let listen = cli.listen_address.or(file.web.listen_address).unwrap_or_else(|| format!(":{DEFAULT_PORT}"));
        let path_from = src.of(cli.telemetry_path.is_none() && file.web.telemetry_path.is_some(), "web.telemetry_path");
        let telemetry_path = cli.telemetry_path.or(file.web.telemetry_path).unwrap_or_else(|| "/metrics".into());
        if !telemetry_path.starts_with('/') || telemetry_path == "/" {
            return Err(path_from(&format!("telemetry path {telemetry_path:?} must start with / and not be / itself")));
        }
        let buckets_from =
            src.of(cli.classic_buckets.is_none() && file.web.classic_buckets.is_some(), "web.classic_buckets");
        let classic = match cli.classic_buckets.or(file.web.classic_buckets) {
            None => buckets::default_classic_indices(),
            Some(v) => {
                if v.is_empty() || v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                    return Err(buckets_from(&format!(
                        "classic buckets {v:?}: every bound must be a positive number of seconds"
                    )));
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
        let feats_from = src.of(cli.model_features.is_none() && file.model.features.is_some(), "model.features");
        let (cli_window_set, file_window_set) =
            (cli.model_baseline_window.is_some(), file.model.baseline_window.is_some());
        let window_from = src
            .of(cli.model_baseline_window.is_none() && file.model.baseline_window.is_some(), "model.baseline_window");
        let interval_from = src.of(cli.model_interval.is_none() && file.model.interval.is_some(), "model.interval");
        let web_from = src.of(cli.web_config_file.is_none() && file.web.config_file.is_some(), "web.config_file");
        let web_file = cli.web_config_file.or(file.web.config_file);
        let disable_from = src.of(cli.bpf_disable.is_none() && file.bpf.disable.is_some(), "bpf.disable");
        let mut bpf_disable = Vec::new();
        for name in cli.bpf_disable.or(file.bpf.disable).unwrap_or_default() {
            match crate::probes::program_names().find(|t| *t == name.trim()) {
                Some(t) if !bpf_disable.contains(&t) => bpf_disable.push(t),
                Some(_) => {}
                None => return Err(disable_from(&format!("unknown BPF program {name:?} (one of {})", bpf_programs()))),
            }
        }
        let max_from =
            src.of(cli.max_connections.is_none() && file.web.max_connections.is_some(), "web.max_connections");
        let max_connections = cli.max_connections.or(file.web.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=65536).contains(&max_connections) {
            return Err(max_from(&format!("max connections {max_connections} must be between 1 and 65536")));
        }
        let reg_from =
            src.of(cli.model_regularisation.is_none() && file.model.regularisation.is_some(), "model.regularisation");
        let side_from = src.of(cli.model_friction.is_none() && file.model.friction.is_some(), "model.friction");
        // An OTLP error names the section when any of its values came from the file.
        let otlp_from = src.of(
            (cli.otlp_endpoint.is_none() && file.otlp.endpoint.is_some())
                || (cli.otlp_protocol.is_none() && file.otlp.protocol.is_some())
                || (cli.otlp_interval.is_none() && file.otlp.interval.is_some())
                || (cli.otlp_timeout.is_none() && file.otlp.timeout.is_some())
                || !file.otlp.headers.is_empty()
                || (cli.otlp_compression.is_none() && file.otlp.compression.is_some())
                || (cli.otlp_ca_file.is_none() && file.otlp.ca_file.is_some())
                || (cli.otlp_cert_file.is_none() && file.otlp.cert_file.is_some())
                || (cli.otlp_key_file.is_none() && file.otlp.key_file.is_some()),
            "otlp",
        );
        let model = crate::model::pipeline::Settings {
            interval: cli.model_interval.or(file.model.interval).unwrap_or(Duration::from_secs(1)),
            warmup: cli.model_warmup.or(file.model.warmup).unwrap_or(Duration::from_secs(600)),
            baseline_window: cli
                .model_baseline_window
                .or(file.model.baseline_window)
                .unwrap_or(Duration::from_secs(300)),
            state_file: cli
                .model_state_file
                .or(file.model.state_file)
                .unwrap_or_else(|| "/var/lib/ksense/baseline.json".into()),
            features: cli
                .model_features
                .or(file.model.features)
                .unwrap_or_else(|| DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect()),
            // Ledoit-Wolf validated better than the reference's ridge in bench/qos.
            regularisation: cli
                .model_regularisation
                .or(file.model.regularisation)
                .as_deref()
                .unwrap_or("ledoit-wolf")
                .parse()
                .map_err(|e| reg_from(&format!("model regularisation: {e}")))?,
            // One-sided validated better than the plain distance on every bench/qos run.
            side: cli
                .model_friction
                .or(file.model.friction)
                .as_deref()
                .unwrap_or("one-sided")
                .parse()
                .map_err(|e: String| side_from(&e))?,
        };
        crate::signals::features::parse_all(&model.features, &crate::probes::signal_names())
            .map_err(|e| feats_from(&e))?;
        if model.interval.is_zero() {
            return Err(interval_from("model interval must be greater than zero"));
        }
        if model.baseline_window < model.interval {
            let from = if cli_window_set || !file_window_set { &interval_from } else { &window_from };
            return Err(from(&format!(
                "model baseline window ({:?}) must be at least one interval ({:?})",
                model.baseline_window, model.interval
            )));
        }
        let otlp_given = otlp_config::Given {
            endpoint: cli.otlp_endpoint.or(file.otlp.endpoint),
            protocol: cli.otlp_protocol.or(file.otlp.protocol),
            interval: cli.otlp_interval.or(file.otlp.interval),
            timeout: cli.otlp_timeout.or(file.otlp.timeout),
            // File first, so a flag for the same header wins.
            headers: file.otlp.headers.iter().map(|(k, v)| format!("{k}={v}")).chain(cli.otlp_headers).collect(),
            compression: cli.otlp_compression.or(file.otlp.compression),
            tls: otlp_config::TlsFiles {
                ca_file: cli.otlp_ca_file.or(file.otlp.ca_file),
                cert_file: cli.otlp_cert_file.or(file.otlp.cert_file),
                key_file: cli.otlp_key_file.or(file.otlp.key_file),
            },
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let otlp =
            otlp_config::resolve(otlp_given, &|k| std::env::var(k).ok(), &hostname).map_err(|e| otlp_from(&e))?;
        let web = match web_file {
            Some(p) => Some(crate::exporters::webconfig::WebConfig::load(&p).map_err(|e| web_from(&e))?),
            None => None,
        };
        let entries_from = src
            .of(cli.workloads_map_entries.is_none() && file.workloads.map_entries.is_some(), "workloads.map_entries");
        let filter_from = src.of(
            (cli.workloads_include.is_none() && file.workloads.include.is_some())
                || (cli.workloads_exclude.is_none() && file.workloads.exclude.is_some()),
            if cli.workloads_include.is_none() && file.workloads.include.is_some() {
                "workloads.include"
            } else {
                "workloads.exclude"
            },
        );
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
            return Err(entries_from(&format!(
                "workloads map entries {} must be between 1 and 1048576",
                workloads.map_entries
            )));
        }
        crate::workloads::tracker::Filter::new(workloads.include.as_deref(), workloads.exclude.as_deref())
            .map_err(|e| filter_from(&e))?;
        Ok(Config {
            command: cli.command.unwrap_or(Command::Serve),
            listen: parse_listen(&listen).map_err(|e| listen_from(&e))?,
            telemetry_path,
            classic_le_indices: classic,
            log_level: level.or(file.log.level).unwrap_or(LogLevel::Info),
            log_format: format.or(file.log.format).unwrap_or(LogFormat::Logfmt),
            attach: attach.unwrap_or_else(|| "auto".into()),
            model,
            otlp,
            web,
            max_connections: max_connections as usize,
            bpf_disable,
            strict: cli.strict || file.bpf.strict.unwrap_or(false),
            workloads,
        })
    }
}

/// Parses the TOML configuration; errors name the file, line and field.
pub fn parse_file(path: &Path, text: &str) -> Result<File, String> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, File>(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line =
            inner.span().map(|s| fileerr::line_of_offset(text, s.start)).or_else(|| fileerr::line_for(text, &field));
        fileerr::located("config file", path, line, &field, inner.message())
    })
}

/// Where a configuration value came from, for error messages.
struct Source<'a> {
    path: Option<&'a Path>,
    text: &'a str,
}

impl Source<'_> {
    /// A function that prefixes an error with the file, line and field when
    /// the value came from the file (`from_file`), and leaves it as is when
    /// it came from a flag (the flag's value is in the message).
    fn of(&self, from_file: bool, field: &'static str) -> impl Fn(&str) -> String + '_ {
        move |msg: &str| match self.path {
            Some(p) if from_file => fileerr::located("config file", p, fileerr::line_for(self.text, field), field, msg),
            _ => msg.to_string(),
        }
    }
}

/// The programs `--bpf.disable` takes, as its help and errors list them.
fn bpf_programs() -> String {
    crate::probes::program_names().collect::<Vec<_>>().join(", ")
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
        std::fs::write(
            &p,
            "[web]\nlisten_address = \"127.0.0.1:1\"\ntelemetry_path = \"/m\"\n[model]\nwarmup = \"5s\"\n",
        )
        .unwrap();
        let c =
            Config::load(cli(&["--config.file", p.to_str().unwrap(), "--web.listen-address", "127.0.0.1:2"])).unwrap();
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
        assert!(!c.workloads.enabled, "off by default: the node-wide path is the cheapest");
        assert_eq!((c.workloads.max, c.workloads.map_entries), (100, 1024));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[workloads]\nmax = 7\nexclude = \"/system\\\\.slice/.*\"\nkubelet_log_dir = \"/l\"\n")
            .unwrap();
        let c = Config::load(cli(&[
            "--config.file",
            p.to_str().unwrap(),
            "--workloads.enabled",
            "true",
            "--workloads.max",
            "3",
        ]))
        .unwrap();
        assert!(c.workloads.enabled);
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

    use proptest::prelude::*;

    const TOML_LINES: &[&str] = &[
        "[web]",
        "[log]",
        "[bpf]",
        "[model]",
        "[nope]",
        "[web",
        "[[web]]",
        "",
        "# comment",
        "=",
        "a b c",
        "\"",
        "key = ",
        "web.listen_address = \":1\"",
    ];
    const TOML_KEYS: &[&str] = &[
        "listen_address",
        "telemetry_path",
        "classic_buckets",
        "config_file",
        "max_connections",
        "level",
        "format",
        "attach",
        "disable",
        "strict",
        "interval",
        "warmup",
        "baseline_window",
        "state_file",
        "features",
        "bogus",
        "\"quoted key\"",
    ];
    const TOML_VALUES: &[&str] = &[
        "\":9\"",
        "\"127.0.0.1:0\"",
        "\"nohost\"",
        "\"/m\"",
        "\"metrics\"",
        "[0.1, 1]",
        "[]",
        "[-1]",
        "\"10s\"",
        "\"ten\"",
        "\"0s\"",
        "42",
        "0",
        "-1",
        "99999999999",
        "true",
        "\"sched_switch\"",
        "[\"nope\"]",
        "[\"softirq_exit\"]",
        "\"\"",
        "\"debug\"",
        "\"loud\"",
        "\"raw_tp\"",
        "1.5",
        "nan",
        "\"/nonexistent.yml\"",
        "[\"runqueue_p99\"]",
        "[\"cpu\"]",
        "{ a = 1 }",
        "\"\\u0000\"",
        "'''",
        "[1, \"a\"]",
    ];

    fn toml_line() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(TOML_LINES).prop_map(str::to_string),
            (proptest::sample::select(TOML_KEYS), proptest::sample::select(TOML_VALUES))
                .prop_map(|(k, v)| format!("{k} = {v}")),
            "[ -~]{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the file holds: no panic, and an error is one line that
        /// names the file, a line and a field.
        #[test]
        fn config_file_fuzz(lines in proptest::collection::vec(toml_line(), 1..12)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("fuzz.toml");
            let text = lines.join("\n");
            std::fs::write(&p, &text).unwrap();
            if let Err(e) = Config::load(cli(&["--config.file", p.to_str().unwrap()])) {
                prop_assert!(e.contains(p.to_str().unwrap()), "{text:?}: {e}");
                prop_assert!(e.contains(", line ") && e.contains("field `"), "{text:?}: {e}");
                prop_assert!(!e.contains('\n'), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn values_from_the_file_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        for (text, line, field) in [
            ("[web]\n\ntelemetry_path = \"metrics\"\n", 3, "web.telemetry_path"),
            ("[model]\ninterval = \"10m\"\n", 2, "model.interval"),
            ("[bpf]\ndisable = [\"sched_switch\", \"nope\"]\n", 2, "bpf.disable"),
            ("[web]\nconfig_file = \"/nonexistent/web.yml\"\n", 2, "web.config_file"),
            ("[web]\nmax_connections = 0\n", 2, "web.max_connections"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err();
            assert!(e.contains("k.toml") && e.contains(&format!("line {line},")) && e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn hardening_flags() {
        let c = Config::load(cli(&[
            "--bpf.disable",
            "softirq_entry,softirq_exit,softirq_entry",
            "--strict",
            "--web.max-connections",
            "8",
        ]))
        .unwrap();
        assert_eq!(c.bpf_disable, vec!["softirq_entry", "softirq_exit"]);
        assert!(c.strict);
        assert_eq!(c.max_connections, 8);
        assert!(Config::load(cli(&["--bpf.disable", "softirq"])).unwrap_err().contains("unknown BPF program"));
        let d = Config::load(cli(&[])).unwrap();
        assert!(!d.strict && d.bpf_disable.is_empty() && d.web.is_none());
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS as usize);
        assert!(Cli::try_parse_from(["ksense", "--web.max-connections", "0"]).is_err());
    }

    #[test]
    fn otlp_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[otlp]\nendpoint = \"http://file:4318\"\nprotocol = \"http/protobuf\"\ninterval = \"30s\"\ntimeout = \"2s\"\n[otlp.headers]\nauthorization = \"Bearer file\"\nx-org = \"o\"\n").unwrap();
        let f = p.to_str().unwrap();
        let c = Config::load(cli(&["--config.file", f])).unwrap().otlp.unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.protocol.as_str(), c.interval, c.timeout),
            ("http://file:4318/v1/metrics", "http/protobuf", Duration::from_secs(30), Duration::from_secs(2))
        );
        let c = Config::load(cli(&[
            "--config.file",
            f,
            "--otlp.endpoint",
            "http://flag:4317",
            "--otlp.protocol",
            "grpc",
            "--otlp.header",
            "authorization=Bearer flag",
            "--otlp.header",
            "x-a=1",
        ]))
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!((c.endpoint.as_str(), c.protocol.as_str()), ("http://flag:4317", "grpc"));
        assert_eq!(
            c.headers,
            vec![
                ("authorization".into(), "Bearer flag".into()),
                ("x-org".into(), "o".into()),
                ("x-a".into(), "1".into())
            ]
        );
        assert!(Config::load(cli(&["--otlp.interval", "5s"])).unwrap_err().contains("no endpoint"));
        assert!(Config::load(cli(&["--otlp.endpoint", "localhost:4317"])).is_err());
        std::fs::write(&p, "[otlp]\nprotocol = \"udp\"\nendpoint = \"http://c:1\"\n").unwrap();
        assert!(Config::load(cli(&["--config.file", f])).unwrap_err().contains("udp"));
        // TLS and compression from the file, a flag over one of them.
        std::fs::write(&p, "[otlp]\nendpoint = \"https://c:4317\"\ncompression = \"gzip\"\nca_file = \"/f/ca.pem\"\ncert_file = \"/f/c.pem\"\nkey_file = \"/f/k.pem\"\n").unwrap();
        let c = Config::load(cli(&["--config.file", f, "--otlp.tls.ca-file", "/flag/ca.pem"])).unwrap().otlp.unwrap();
        assert!(c.gzip);
        assert_eq!(
            c.tls,
            otlp_config::TlsFiles {
                ca_file: Some("/flag/ca.pem".into()),
                cert_file: Some("/f/c.pem".into()),
                key_file: Some("/f/k.pem".into())
            }
        );
        std::fs::write(&p, "[otlp]\nendpoint = \"http://c:4317\"\nca_file = \"/f/ca.pem\"\n").unwrap();
        let e = Config::load(cli(&["--config.file", f])).unwrap_err();
        assert!(e.contains("not https://") && e.contains("otlp"), "{e}");
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["--log.level", "loud"][..],
            &["--model.interval", "1x"],
            &["--nope"],
            &["--otlp.protocol", "http/json"],
            &["--otlp.interval", "15"],
        ] {
            let e = Cli::try_parse_from(std::iter::once("ksense").chain(args.iter().copied())).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert!(Config::load(cli(&["--web.listen-address", "nohost"])).is_err());
    }
}
