//! Command line and configuration file. Flags override the file; the file
//! overrides the defaults. Every error names what is wrong and where.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::exporters::otlp::config::{self as otlp_config, OtlpConfig};
use crate::fileerr;
use crate::model::{Regularisation, Side};
use crate::probes::AttachMode;
use crate::signals::buckets;
use crate::signals::metric::Classic;

pub const DEFAULT_PORT: u16 = 9827;

// Each setting is one field of a section struct (`WebOpts`, ...) that is both
// a flag (clap) and a key of the file's section (serde); `Config::load` picks
// flag > file > default with `Source::pick`, which remembers where the value
// came from for the error. Defaults live with what they configure
// (`Config`'s fields' types) and are written here only in the help text.

#[derive(Parser, Debug, Default)]
#[command(
    name = "ksense",
    version,
    about = "Node-level eBPF exporter: run-queue, D-state, softirq and TCP latency histograms, retransmissions and drops, each application's request rate and latency from its socket calls, and a friction score for the node.",
    long_about = None,
    // `--workloads.max -1` is then a bad value, not an unknown flag `-1`
    allow_negative_numbers = true,
    after_help = "With no command, ksense serves metrics (needs root, or CAP_BPF and CAP_PERFMON).\nConfiguration file keys mirror the flags, e.g. [web] listen_address = \":9827\"."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file
    #[arg(id = "config.file", long = "config.file", value_name = "FILE", global = true)]
    pub config_file: Option<PathBuf>,
    #[command(flatten)]
    pub web: WebOpts,
    #[command(flatten)]
    pub log: LogOpts,
    #[command(flatten)]
    pub bpf: BpfOpts,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub otlp: OtlpOpts,
    #[command(flatten)]
    pub workloads: WorkloadsOpts,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Serve metrics (the default)
    Serve,
    /// Print what this kernel supports; exit non-zero when a required part is missing
    Check,
    /// Discard the saved baseline and calibrate anew (a running server with the same state file is asked to)
    Recalibrate,
}

/// The configuration file: the same sections and keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub web: WebOpts,
    #[serde(default)]
    pub log: LogOpts,
    #[serde(default)]
    pub bpf: BpfOpts,
    #[serde(default)]
    pub model: ModelOpts,
    #[serde(default)]
    pub otlp: OtlpOpts,
    #[serde(default)]
    pub workloads: WorkloadsOpts,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WebOpts {
    /// Address to listen on for metrics: host:port, or :port for every address, IPv4 and IPv6 [default: :9827]
    #[arg(id = "web.listen-address", long = "web.listen-address", value_name = "ADDR", global = true)]
    pub listen_address: Option<String>,
    /// Path under which to expose metrics [default: /metrics]
    #[arg(id = "web.telemetry-path", long = "web.telemetry-path", value_name = "PATH", global = true)]
    pub telemetry_path: Option<String>,
    /// Classic histogram `le` bounds in seconds, comma separated; each is rounded up to a kernel bucket bound [default: 13 bounds, 2^-20 s to 16 s, factor 4]
    #[arg(
        id = "web.classic-buckets",
        long = "web.classic-buckets",
        value_name = "SECONDS,...",
        value_delimiter = ',',
        global = true
    )]
    pub classic_buckets: Option<Vec<f64>>,
    /// TLS and basic auth, in the Prometheus exporter-toolkit web configuration format (YAML) [default: plain HTTP]
    #[arg(id = "web.config.file", long = "web.config.file", value_name = "FILE", global = true)]
    pub config_file: Option<PathBuf>,
    /// Connections served at once; more wait in the listen backlog and are served as others close [default: 1024]
    #[arg(id = "web.max-connections", long = "web.max-connections", value_name = "N", global = true, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: Option<u32>,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct LogOpts {
    /// Log level [default: info]
    #[arg(id = "log.level", long = "log.level", value_name = "LEVEL", global = true)]
    pub level: Option<LogLevel>,
    /// Log format [default: logfmt]
    #[arg(id = "log.format", long = "log.format", value_name = "FORMAT", global = true)]
    pub format: Option<LogFormat>,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct BpfOpts {
    /// BPF attach type: auto (tp_btf when the kernel supports it), tp_btf or raw_tp [default: auto]
    #[arg(id = "bpf.attach", long = "bpf.attach", value_name = "MODE", global = true)]
    pub attach: Option<Attach>,
    #[arg(id = "bpf.disable", long = "bpf.disable", value_name = "PROGRAMS", value_delimiter = ',', global = true,
          help = format!("BPF programs not to load, comma separated: {}", bpf_programs()))]
    pub disable: Option<Vec<String>>,
    /// Exit with an error when a BPF program is not attached (those --bpf.disable names are not counted), instead of serving the rest (--no-strict: serve the rest) [default: false]
    #[arg(id = "strict", long = "strict", value_name = "BOOL", global = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, overrides_with = "no-strict")]
    pub strict: Option<bool>,
    #[arg(id = "no-strict", long = "no-strict", global = true, hide = true, action = clap::ArgAction::SetTrue, overrides_with = "strict")]
    #[serde(skip)]
    pub no_strict: bool,
    #[arg(id = "bpf.perf-events", long = "bpf.perf-events", value_name = "EVENTS", value_delimiter = ',', global = true,
          help = format!("Performance counters to count, node-wide and per workload, comma separated ('none': off); those the CPU lacks are left out, with one log line. One or more of: {} [default: {}]", perf_event_names(), crate::probes::perf::DEFAULT_EVENTS.join(",")))]
    pub perf_events: Option<Vec<String>>,
    #[arg(id = "bpf.stats", long = "bpf.stats", value_name = "BOOL", global = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, overrides_with = "no-bpf.stats",
          help = format!("Hold the kernel's BPF run-time statistics on, for ksense_bpf_program_runs_total and _run_seconds_total (otherwise they count only while something else holds them, e.g. sysctl kernel.bpf_stats_enabled=1); node-wide, every BPF program then pays two clock reads per run, which adds half again to what ksense costs a context-switch-heavy workload [default: {}]", crate::probes::STATS_BY_DEFAULT))]
    pub stats: Option<bool>,
    #[arg(id = "no-bpf.stats", long = "no-bpf.stats", global = true, hide = true, action = clap::ArgAction::SetTrue, overrides_with = "bpf.stats")]
    #[serde(skip)]
    pub no_stats: bool,
    /// How run-queue and D-state waits are timed: auto (sched_info where the kernel keeps it, with tp_btf and a stable scheduler's clock; else wakeup), sched_info (at sched_switch alone, from the kernel's own per-task accounting: no program on sched_wakeup) or wakeup (from sched_wakeup to sched_switch, as runqlat does) [default: auto]
    #[arg(id = "bpf.sched-waits", long = "bpf.sched-waits", value_name = "SOURCE", global = true)]
    pub sched_waits: Option<SchedWaits>,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelOpts {
    /// Model interval: how often a feature vector is scored [default: 1s]
    #[arg(id = "model.interval", long = "model.interval", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub interval: Option<Duration>,
    /// Calibration time before the baseline freezes [default: 10m]
    #[arg(id = "model.warmup", long = "model.warmup", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub warmup: Option<Duration>,
    /// Span of the most recent samples kept for the baseline [default: 5m]
    #[arg(id = "model.baseline-window", long = "model.baseline-window", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub baseline_window: Option<Duration>,
    /// Where the frozen baseline is saved and loaded [default: /var/lib/ksense/baseline.json]
    #[arg(id = "model.state-file", long = "model.state-file", value_name = "FILE", global = true)]
    pub state_file: Option<PathBuf>,
    /// Model features, comma separated [default: runqueue_wakeup_p99,runqueue_wakeup_tw90,softirq_net_rx_busy,tcp_retransmit_timeout_rate,tcp_rtt_p999]
    #[arg(
        id = "model.features",
        long = "model.features",
        value_name = "FEATURES",
        value_delimiter = ',',
        global = true
    )]
    pub features: Option<Vec<String>>,
    /// Covariance regularisation: ledoit-wolf (shrinkage), diagonal (ledoit-wolf's variances, no correlations) or ridge (the K-Sense reference's) [default: ledoit-wolf]
    #[arg(id = "model.regularisation", long = "model.regularisation", value_name = "METHOD", global = true)]
    pub regularisation: Option<Regularisation>,
    /// Which deviations count as friction: one-sided (only signals above their baseline) or two-sided (the plain Mahalanobis distance) [default: one-sided]
    #[arg(id = "model.friction", long = "model.friction", value_name = "SIDE", global = true)]
    #[serde(rename = "friction")]
    pub side: Option<Side>,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct OtlpOpts {
    /// OTLP collector to push metrics to, e.g. http://localhost:4317 (gRPC) or http://localhost:4318 (HTTP, /v1/metrics is appended when no path is given); push is off when no endpoint is set [env: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT]
    #[arg(id = "otlp.endpoint", long = "otlp.endpoint", value_name = "URL", global = true)]
    pub endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf [default: grpc] [env: OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(id = "otlp.protocol", long = "otlp.protocol", value_name = "PROTOCOL", global = true, value_parser = ["grpc", "http/protobuf"])]
    pub protocol: Option<String>,
    /// How often to push [default: 15s] [env: OTEL_METRIC_EXPORT_INTERVAL, in ms]
    #[arg(id = "otlp.interval", long = "otlp.interval", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub interval: Option<Duration>,
    /// Header sent with every push, e.g. "authorization=Bearer TOKEN"; repeatable [env: OTEL_EXPORTER_OTLP_HEADERS]
    #[arg(id = "otlp.header", long = "otlp.header", value_name = "KEY=VALUE", global = true)]
    #[serde(skip)]
    pub header: Vec<String>,
    /// `[otlp.headers]` key = "value" (the file's form of --otlp.header)
    #[arg(skip)]
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Give up on one push after this long [default: 10s] [env: OTEL_EXPORTER_OTLP_TIMEOUT, in ms]
    #[arg(id = "otlp.timeout", long = "otlp.timeout", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
    /// Compress each push: gzip or none [default: none] [env: OTEL_EXPORTER_OTLP_COMPRESSION]
    #[arg(id = "otlp.compression", long = "otlp.compression", value_name = "ALGORITHM", global = true, value_parser = ["gzip", "none"])]
    pub compression: Option<String>,
    /// CA certificates (PEM) that verify an https:// collector [default: the system's trust store] [env: OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(id = "otlp.tls.ca-file", long = "otlp.tls.ca-file", value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that asks for one (mutual TLS); with --otlp.tls.key-file [env: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE]
    #[arg(id = "otlp.tls.cert-file", long = "otlp.tls.cert-file", value_name = "FILE", global = true)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM) [env: OTEL_EXPORTER_OTLP_CLIENT_KEY]
    #[arg(id = "otlp.tls.key-file", long = "otlp.tls.key-file", value_name = "FILE", global = true)]
    pub key_file: Option<PathBuf>,
}

#[derive(Args, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsOpts {
    /// Per-workload (cgroup) histograms and counters of every family: run queue, D state, TCP, requests (--no-workloads.enabled: off); what it adds per event: README, Performance [default: false]
    #[arg(id = "workloads.enabled", long = "workloads.enabled", value_name = "BOOL", global = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, overrides_with = "no-workloads.enabled")]
    pub enabled: Option<bool>,
    #[arg(id = "no-workloads.enabled", long = "no-workloads.enabled", global = true, hide = true, action = clap::ArgAction::SetTrue, overrides_with = "workloads.enabled")]
    #[serde(skip)]
    pub no_enabled: bool,
    /// Classic histogram `le` bounds of the per-workload histograms, in seconds, comma separated; coarser than --web.classic-buckets, as each costs a series per workload [default: 5 bounds, 2^-12 s (244 µs) to 1 s, factor 8]
    #[arg(
        id = "workloads.classic-buckets",
        long = "workloads.classic-buckets",
        value_name = "SECONDS,...",
        value_delimiter = ',',
        global = true
    )]
    pub classic_buckets: Option<Vec<f64>>,
    /// Workloads exported with series of their own, the busiest by run-queue wait; the rest are summed in workload="other" [default: 100]
    #[arg(id = "workloads.max", long = "workloads.max", value_name = "N", global = true)]
    pub max: Option<usize>,
    /// Cgroups the kernel keeps histograms for (per map); events of cgroups beyond are counted as dropped [default: 1024]
    #[arg(id = "workloads.map-entries", long = "workloads.map-entries", value_name = "N", global = true)]
    pub map_entries: Option<u32>,
    /// Only cgroup paths matching this regex (anchored) get series of their own [default: all]
    #[arg(id = "workloads.include", long = "workloads.include", value_name = "REGEX", global = true)]
    pub include: Option<String>,
    /// Cgroup paths matching this regex (anchored) never get series of their own [default: none]
    #[arg(id = "workloads.exclude", long = "workloads.exclude", value_name = "REGEX", global = true)]
    pub exclude: Option<String>,
    /// The cgroup v2 hierarchy [default: found in /proc/self/mountinfo: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts]
    #[arg(id = "workloads.cgroup-root", long = "workloads.cgroup-root", value_name = "DIR", global = true)]
    pub cgroup_root: Option<PathBuf>,
    /// Kubelet's log directory, whose pods/ and containers/ entries name pods and containers [default: /var/log]
    #[arg(id = "workloads.kubelet-log-dir", long = "workloads.kubelet-log-dir", value_name = "DIR", global = true)]
    pub kubelet_log_dir: Option<PathBuf>,
    /// How old the per-workload series a scrape serves may be: a read of the kernel's maps younger than this (the model makes one every interval) is served again rather than repeated; 0s: read them at every scrape [default: 2s]
    #[arg(id = "workloads.max-age", long = "workloads.max-age", value_name = "DURATION", global = true, value_parser = parse_duration, allow_hyphen_values = true)]
    #[serde(default, deserialize_with = "de_duration")]
    pub max_age: Option<Duration>,
}

#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

/// `--bpf.attach`: a mode, or `auto` (chosen by probing the kernel).
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Attach {
    #[default]
    Auto,
    #[value(name = "tp_btf")]
    TpBtf,
    #[value(name = "raw_tp")]
    RawTp,
}

impl Attach {
    /// None: auto.
    pub fn mode(self) -> Option<AttachMode> {
        match self {
            Attach::Auto => None,
            Attach::TpBtf => Some(AttachMode::TpBtf),
            Attach::RawTp => Some(AttachMode::RawTp),
        }
    }
}

/// `--bpf.sched-waits`.
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchedWaits {
    #[default]
    Auto,
    #[value(name = "sched_info")]
    SchedInfo,
    Wakeup,
}

impl SchedWaits {
    pub fn probes(self) -> crate::probes::SchedWaits {
        match self {
            SchedWaits::Auto => crate::probes::SchedWaits::Auto,
            SchedWaits::SchedInfo => crate::probes::SchedWaits::SchedInfo,
            SchedWaits::Wakeup => crate::probes::SchedWaits::Wakeup,
        }
    }
}

/// The model's own enums as flag values, named as the file names them.
impl ValueEnum for Regularisation {
    fn value_variants<'a>() -> &'a [Self] {
        &Regularisation::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl ValueEnum for Side {
    fn value_variants<'a>() -> &'a [Self] {
        &[Side::One, Side::Two]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
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

/// Every boolean flag takes the Prometheus exporters' forms: bare `--x`,
/// `--no-x` (hidden from --help; the flag's help names it), and `--x=true`
/// or `--x false`; of `--x` and `--no-x` the last given wins (clap's
/// overrides_with). New boolean flags (e.g. `--collector.<family>` for the
/// probe families to come) follow the same pattern and go through this.
fn negatable(on: Option<bool>, off: bool) -> Option<bool> {
    if off {
        Some(false)
    } else {
        on
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Command,
    pub listen: SocketAddr,
    pub telemetry_path: String,
    /// Classic `le` bounds (native indices), node-wide and per workload.
    pub classic: Classic,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub attach: Attach,
    pub model: crate::model::pipeline::Settings,
    /// None: OTLP push is off.
    pub otlp: Option<OtlpConfig>,
    /// `--web.config.file`, parsed and checked (certificates loaded) at start.
    pub web: Option<crate::exporters::webconfig::WebConfig>,
    /// Where it came from, re-read on SIGHUP.
    pub web_config_file: Option<PathBuf>,
    pub max_connections: usize,
    /// Programs not to load (`--bpf.disable`).
    pub bpf_disable: Vec<&'static str>,
    pub strict: bool,
    /// Hold BPF run-time statistics on (`--bpf.stats`).
    pub bpf_stats: bool,
    /// `--bpf.sched-waits`.
    pub sched_waits: crate::probes::SchedWaits,
    /// `--bpf.perf-events`.
    pub perf_events: crate::probes::perf::EventSet,
    pub workloads: crate::workloads::Config,
    /// The node's name for `ksense_node_info`: `K8S_NODE_NAME` (the DaemonSet
    /// sets it from the downward API), else the host name.
    pub nodename: String,
}

pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";

/// Classic `le` bounds in seconds, each rounded up to a kernel bucket
/// bound, as sorted native indices; the default when none were given.
fn classic_indices(what: &str, v: Option<&[f64]>, default: fn() -> Vec<i32>) -> Result<Vec<i32>, String> {
    let Some(v) = v else { return Ok(default()) };
    if v.is_empty() || v.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return Err(format!("{what} {v:?}: every bound must be a positive number of seconds"));
    }
    let mut idx: Vec<i32> = v.iter().map(|&x| buckets::index_at_or_above(x)).collect();
    idx.sort_unstable();
    idx.dedup();
    Ok(idx)
}

/// `:9827` means every address, IPv4 and IPv6, as in the Go exporters: the
/// unspecified IPv6 address, which the server binds dual-stack
/// (`exporters::http::bind`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("[::]{s}") } else { s.to_string() };
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| format!("invalid listen address {s:?}: {e} (use host:port or :port)"))?
        .next()
        .ok_or_else(|| format!("listen address {s:?} resolves to nothing"))
}

impl Config {
    /// Flags, the config file (`--config.file`) and the process environment.
    pub fn load(cli: Cli) -> Result<Config, String> {
        Self::load_with_env(cli, &|k| std::env::var(k).ok())
    }

    /// [`Config::load`] with the environment given (the OTLP `OTEL_*` and
    /// `K8S_*` variables are read through `env`).
    pub fn load_with_env(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let config_file = cli.config_file.clone();
        let (file, text) = match &config_file {
            Some(p) => {
                let text = crate::bounded_read::read_to_string(p, crate::bounded_read::MAX_CONFIG_BYTES)
                    .map_err(|e| format!("config file {}: {e}", p.display()))?;
                (parse_file(p, &text)?, text)
            }
            None => (File::default(), String::new()),
        };
        let src = Source { path: config_file.as_deref(), text: &text };
        let (c, f) = (cli, file);

        let listen = src.pick(c.web.listen_address, f.web.listen_address, "web.listen_address");
        let telemetry = src.pick(c.web.telemetry_path, f.web.telemetry_path, "web.telemetry_path");
        let buckets = src.pick(c.web.classic_buckets, f.web.classic_buckets, "web.classic_buckets");
        let web_file = src.pick(c.web.config_file, f.web.config_file, "web.config_file");
        let max_conn = src.pick(c.web.max_connections, f.web.max_connections, "web.max_connections");
        let level = src.pick(c.log.level, f.log.level, "log.level");
        let format = src.pick(c.log.format, f.log.format, "log.format");
        let attach = src.pick(c.bpf.attach, f.bpf.attach, "bpf.attach");
        let disable = src.pick(c.bpf.disable, f.bpf.disable, "bpf.disable");
        let strict = src.pick(negatable(c.bpf.strict, c.bpf.no_strict), f.bpf.strict, "bpf.strict");
        let bpf_stats = src.pick(negatable(c.bpf.stats, c.bpf.no_stats), f.bpf.stats, "bpf.stats");
        let perf = src.pick(c.bpf.perf_events, f.bpf.perf_events, "bpf.perf_events");
        let sched_waits = src.pick(c.bpf.sched_waits, f.bpf.sched_waits, "bpf.sched_waits");
        let interval = src.pick(c.model.interval, f.model.interval, "model.interval");
        let warmup = src.pick(c.model.warmup, f.model.warmup, "model.warmup");
        let window = src.pick(c.model.baseline_window, f.model.baseline_window, "model.baseline_window");
        let state_file = src.pick(c.model.state_file, f.model.state_file, "model.state_file");
        let features = src.pick(c.model.features, f.model.features, "model.features");
        let reg = src.pick(c.model.regularisation, f.model.regularisation, "model.regularisation");
        let side = src.pick(c.model.side, f.model.side, "model.friction");
        let (w, wf) = (c.workloads, f.workloads);
        let enabled = src.pick(negatable(w.enabled, w.no_enabled), wf.enabled, "workloads.enabled");
        let wl_buckets = src.pick(w.classic_buckets, wf.classic_buckets, "workloads.classic_buckets");
        let max = src.pick(w.max, wf.max, "workloads.max");
        let entries = src.pick(w.map_entries, wf.map_entries, "workloads.map_entries");
        let include = src.pick(w.include, wf.include, "workloads.include");
        let exclude = src.pick(w.exclude, wf.exclude, "workloads.exclude");
        let cgroup_root = src.pick(w.cgroup_root, wf.cgroup_root, "workloads.cgroup_root");
        let kubelet = src.pick(w.kubelet_log_dir, wf.kubelet_log_dir, "workloads.kubelet_log_dir");
        let max_age = src.pick(w.max_age, wf.max_age, "workloads.max_age");

        // A conflict of two flags, whatever the kernel: refused here (exit 2), not after loading programs.
        if attach.value == Some(Attach::RawTp) && sched_waits.value == Some(SchedWaits::SchedInfo) {
            return Err(sched_waits.err(
                "--bpf.sched-waits sched_info reads task fields only tp_btf programs can: not with --bpf.attach raw_tp",
            ));
        }
        // Every cgroup v2 directory has cgroup.controllers; without this check a
        // mistyped root folded every workload into `other` without a word.
        if let Some(dir) = &cgroup_root.value {
            if !dir.join("cgroup.controllers").is_file() {
                return Err(cgroup_root
                    .err(&format!("{}: not a cgroup v2 directory (no cgroup.controllers in it)", dir.display())));
            }
        }
        let telemetry_path = telemetry.value.clone().unwrap_or_else(|| DEFAULT_TELEMETRY_PATH.into());
        // What a request line can carry as it is (RFC 3986 path characters):
        // a path with spaces, non-ASCII or control characters would be
        // accepted and then never match a request.
        let path_char = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c);
        if let Some(c) = telemetry_path.chars().find(|&c| !path_char(c)) {
            return Err(telemetry.err(&format!(
                "telemetry path {telemetry_path:?} has {c:?}: use letters, digits and - . _ ~ / (no spaces, %, ?, #)"
            )));
        }
        if !telemetry_path.starts_with('/') || telemetry_path == "/" {
            return Err(
                telemetry.err(&format!("telemetry path {telemetry_path:?} must start with / and not be / itself"))
            );
        }
        if telemetry_path == crate::exporters::explain::PATH {
            return Err(telemetry.err(&format!("telemetry path {telemetry_path:?} is the score's (JSON) path")));
        }
        let classic = Classic::new(
            classic_indices("classic buckets", buckets.value.as_deref(), buckets::default_classic_indices)
                .map_err(|e| buckets.err(&e))?,
            classic_indices(
                "per-workload classic buckets",
                wl_buckets.value.as_deref(),
                buckets::default_workload_classic_indices,
            )
            .map_err(|e| wl_buckets.err(&e))?,
        );
        let mut bpf_disable = Vec::new();
        for name in disable.value.clone().unwrap_or_default() {
            match crate::probes::program_names().find(|t| *t == name.trim()) {
                Some(t) if !bpf_disable.contains(&t) => bpf_disable.push(t),
                Some(_) => {}
                None => return Err(disable.err(&format!("unknown BPF program {name:?} (one of {})", bpf_programs()))),
            }
        }
        let perf_events = match &perf.value {
            Some(names) => crate::probes::perf::EventSet::parse(names).map_err(|e| perf.err(&e))?,
            None => crate::probes::perf::EventSet::default_set(),
        };
        let max_connections = max_conn.value.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=65536).contains(&max_connections) {
            return Err(max_conn.err(&format!("max connections {max_connections} must be between 1 and 65536")));
        }

        let d = crate::model::pipeline::Settings::default();
        let model = crate::model::pipeline::Settings {
            interval: interval.value.unwrap_or(d.interval),
            warmup: warmup.value.unwrap_or(d.warmup),
            baseline_window: window.value.unwrap_or(d.baseline_window),
            state_file: state_file.value.clone().unwrap_or(d.state_file),
            features: features.value.clone().unwrap_or(d.features),
            regularisation: reg.value.unwrap_or(d.regularisation),
            side: side.value.unwrap_or(d.side),
        };
        crate::signals::features::parse_all(
            &model.features,
            &crate::probes::signal_names(),
            &crate::probes::counter_signals(),
        )
        .map_err(|e| features.err(&e))?;
        if model.interval.is_zero() {
            return Err(interval.err("model interval must be greater than zero"));
        }
        if model.baseline_window < model.interval {
            // Blame the window when the file gave it; else the interval.
            let from = if window.from_file { &window } else { &interval };
            return Err(from.err(&format!(
                "model baseline window ({:?}) must be at least one interval ({:?})",
                model.baseline_window, model.interval
            )));
        }

        let samples = model.baseline_window.as_secs_f64() / model.interval.as_secs_f64();
        if samples > crate::model::MAX_WINDOW_SAMPLES as f64 {
            let from = if window.from_file || window.value.is_some() { &window } else { &interval };
            return Err(from.err(&format!(
                "model baseline window ({:?}) holds {samples:.0} samples at one per interval ({:?}); at most {}",
                model.baseline_window,
                model.interval,
                crate::model::MAX_WINDOW_SAMPLES
            )));
        }
        if model.state_file.file_name().is_none() || model.state_file.as_os_str().to_string_lossy().ends_with('/') {
            return Err(state_file.err(&format!("state file {:?} must name a file", model.state_file)));
        }
        // An unusable state file is set aside (renamed) at start: never a
        // directory, a device (/dev/null) or a FIFO someone pointed it at.
        if let Ok(m) = std::fs::metadata(&model.state_file) {
            if !m.is_file() {
                return Err(state_file.err(&format!(
                    "state file {:?} is {}, not a regular file",
                    model.state_file,
                    crate::bounded_read::kind_of(m.file_type())
                )));
            }
        }

        // OTLP: flags, then the file, then the OTEL_* environment (otlp_config).
        // An error names the section when any of its values came from the file.
        let (o, of) = (c.otlp, f.otlp);
        let otlp_in_file = [
            o.endpoint.is_none() && of.endpoint.is_some(),
            o.protocol.is_none() && of.protocol.is_some(),
            o.interval.is_none() && of.interval.is_some(),
            o.timeout.is_none() && of.timeout.is_some(),
            !of.headers.is_empty(),
            o.compression.is_none() && of.compression.is_some(),
            o.ca_file.is_none() && of.ca_file.is_some(),
            o.cert_file.is_none() && of.cert_file.is_some(),
            o.key_file.is_none() && of.key_file.is_some(),
        ]
        .contains(&true);
        let otlp_given = otlp_config::Given {
            endpoint: o.endpoint.or(of.endpoint),
            protocol: o.protocol.or(of.protocol),
            interval: o.interval.or(of.interval),
            timeout: o.timeout.or(of.timeout),
            // File first, so a flag for the same header wins.
            headers: of.headers.iter().map(|(k, v)| format!("{k}={v}")).chain(o.header).collect(),
            compression: o.compression.or(of.compression),
            tls: otlp_config::TlsFiles {
                ca_file: o.ca_file.or(of.ca_file),
                cert_file: o.cert_file.or(of.cert_file),
                key_file: o.key_file.or(of.key_file),
            },
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let nodename = env("K8S_NODE_NAME").filter(|n| !n.is_empty()).unwrap_or_else(|| hostname.clone());
        let otlp =
            otlp_config::resolve(otlp_given, env, &hostname).map_err(|e| src.located(otlp_in_file, "otlp", &e))?;
        let web = match &web_file.value {
            Some(p) => Some(crate::exporters::webconfig::WebConfig::load(p).map_err(|e| web_file.err(&e))?),
            None => None,
        };

        let d = crate::workloads::Config::default();
        let workloads = crate::workloads::Config {
            enabled: enabled.value.unwrap_or(d.enabled),
            max: max.value.unwrap_or(d.max),
            map_entries: entries.value.unwrap_or(d.map_entries),
            include: include.value.clone(),
            exclude: exclude.value.clone(),
            cgroup_root: cgroup_root.value,
            kubelet_log_dir: kubelet.value.unwrap_or(d.kubelet_log_dir),
            max_age: max_age.value.unwrap_or(d.max_age),
        };
        if !(1..=1 << 20).contains(&workloads.map_entries) {
            return Err(
                entries.err(&format!("workloads map entries {} must be between 1 and 1048576", workloads.map_entries))
            );
        }
        if let Err(e) = crate::workloads::tracker::Filter::new(workloads.include.as_deref(), None) {
            return Err(include.err(&e));
        }
        crate::workloads::tracker::Filter::new(None, workloads.exclude.as_deref()).map_err(|e| exclude.err(&e))?;

        let listen_text = listen.value.clone().unwrap_or_else(|| format!(":{DEFAULT_PORT}"));
        Ok(Config {
            command: c.command.unwrap_or(Command::Serve),
            listen: parse_listen(&listen_text).map_err(|e| listen.err(&e))?,
            telemetry_path,
            classic,
            log_level: level.value.unwrap_or_default(),
            log_format: format.value.unwrap_or_default(),
            attach: attach.value.unwrap_or_default(),
            model,
            otlp,
            web,
            max_connections: max_connections as usize,
            bpf_disable,
            strict: strict.value.unwrap_or(false),
            bpf_stats: bpf_stats.value.unwrap_or(crate::probes::STATS_BY_DEFAULT),
            sched_waits: sched_waits.value.unwrap_or_default().probes(),
            perf_events,
            workloads,
            nodename,
            web_config_file: web_file.value.clone(),
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

/// One setting: its value (None: the default applies) and whether the
/// config file gave it.
struct Picked<'a, T> {
    value: Option<T>,
    from_file: bool,
    field: &'static str,
    src: &'a Source<'a>,
}

impl<T> Picked<'_, T> {
    /// The error, located at the file, line and field when the value came
    /// from the file; as it is when it came from a flag (whose value the
    /// message carries).
    fn err(&self, msg: &str) -> String {
        self.src.located(self.from_file, self.field, msg)
    }
}

impl<'a> Source<'a> {
    /// Flag over file.
    fn pick<T>(&'a self, flag: Option<T>, file: Option<T>, field: &'static str) -> Picked<'a, T> {
        let from_file = flag.is_none() && file.is_some();
        Picked { value: flag.or(file), from_file, field, src: self }
    }

    fn located(&self, from_file: bool, field: &'static str, msg: &str) -> String {
        match self.path {
            Some(p) if from_file => fileerr::located("config file", p, fileerr::line_for(self.text, field), field, msg),
            _ => msg.to_string(),
        }
    }
}

/// The events `--bpf.perf-events` takes, for its help.
fn perf_event_names() -> String {
    crate::probes::perf::EVENTS.map(|e| e.name).join(", ")
}

/// The programs `--bpf.disable` takes, as its help and errors list them.
fn bpf_programs() -> String {
    crate::probes::program_names().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::metric::BucketSet;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ksense").chain(args.iter().copied())).unwrap()
    }

    /// The error of loading a config file with this text.
    fn file_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err()
    }

    /// clap's own consistency checks (unique ids, valid defaults...).
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The `[default: ...]` each flag's help states is the default the code
    /// applies: the help text is the one copy written by hand.
    #[test]
    fn help_states_the_real_defaults() {
        use clap::CommandFactory;
        fn dur(d: Duration) -> String {
            let s = d.as_secs();
            if s.is_multiple_of(60) {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
        fn name<T: ValueEnum + Default>() -> String {
            T::default().to_possible_value().unwrap().get_name().to_string()
        }
        let m = crate::model::pipeline::Settings::default();
        let w = crate::workloads::Config::default();
        let want: Vec<(&str, String)> = vec![
            ("web.listen-address", format!(":{DEFAULT_PORT}")),
            ("web.telemetry-path", DEFAULT_TELEMETRY_PATH.into()),
            ("web.max-connections", DEFAULT_MAX_CONNECTIONS.to_string()),
            ("log.level", name::<LogLevel>()),
            ("log.format", name::<LogFormat>()),
            ("bpf.attach", name::<Attach>()),
            ("model.interval", dur(m.interval)),
            ("model.warmup", dur(m.warmup)),
            ("model.baseline-window", dur(m.baseline_window)),
            ("model.state-file", m.state_file.display().to_string()),
            ("model.features", m.features.join(",")),
            ("model.regularisation", name::<Regularisation>()),
            ("model.friction", name::<Side>()),
            ("otlp.interval", dur(otlp_config::DEFAULT_INTERVAL)),
            ("otlp.timeout", dur(otlp_config::DEFAULT_TIMEOUT)),
            ("bpf.perf-events", crate::probes::perf::DEFAULT_EVENTS.join(",")),
            ("workloads.enabled", w.enabled.to_string()),
            ("workloads.max", w.max.to_string()),
            ("workloads.map-entries", w.map_entries.to_string()),
            ("workloads.kubelet-log-dir", w.kubelet_log_dir.display().to_string()),
            ("workloads.max-age", dur(w.max_age)),
        ];
        let cmd = Cli::command();
        for (id, value) in want {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap_or_else(|| panic!("no flag {id}"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {value}]")),
                "--{id}: help says {help:?}, the default is {value}"
            );
        }
    }

    #[test]
    fn bools_and_enums_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[bpf]\nstrict = true\nattach = \"raw_tp\"\n[log]\nlevel = \"debug\"\n[model]\nfriction = \"two-sided\"\nregularisation = \"ridge\"\n").unwrap();
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap();
        assert!(c.strict, "[bpf] strict = true without --strict");
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap(), "--no-strict"])).unwrap();
        assert!(!c.strict, "--no-strict overrides the file");
        assert_eq!((c.attach, c.log_level), (Attach::RawTp, LogLevel::Debug));
        assert_eq!((c.model.side, c.model.regularisation), (Side::Two, Regularisation::Ridge));
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap(), "--model.friction", "one-sided"])).unwrap();
        assert_eq!(c.model.side, Side::One);
        // Every regularisation the model knows, as a flag and in the file.
        for r in Regularisation::ALL {
            assert_eq!(Config::load(cli(&["--model.regularisation", r.as_str()])).unwrap().model.regularisation, r);
            std::fs::write(&p, format!("[model]\nregularisation = \"{r}\"\n")).unwrap();
            assert_eq!(Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap().model.regularisation, r);
        }
        std::fs::write(&p, "[model]\nfriction = \"sideways\"\n").unwrap();
        let e = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("line 2") && e.contains("friction") && e.contains("sideways"), "{e}");
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

    /// A negative value is a bad value of its flag, not an unknown flag.
    #[test]
    fn negative_values_are_bad_values() {
        for args in [["--model.interval", "-1s"], ["--workloads.max", "-1"], ["--otlp.timeout", "-5s"]] {
            let e = Cli::try_parse_from(std::iter::once("ksense").chain(args)).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}: {e}");
            assert!(e.to_string().contains(args[0]), "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(cli(&[])).unwrap();
        assert_eq!(c.listen, "[::]:9827".parse().unwrap());
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!((c.classic.of(BucketSet::Node).len(), c.classic.of(BucketSet::Workload).len()), (13, 5));
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
        let e = file_error("[web]\nlisten_adress = \":1\"\n");
        assert!(e.contains("k.toml") && e.contains("line 2") && e.contains("listen_adress"), "{e}");
        let e = file_error("[model]\nwarmup = \"ten minutes\"\n");
        assert!(e.contains("line 2") && e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn workloads_flags_and_file() {
        let c = Config::load(cli(&[])).unwrap();
        assert!(!c.workloads.enabled, "off by default: the node-wide path is the cheapest");
        assert_eq!((c.workloads.max, c.workloads.map_entries), (100, 1024));
        assert_eq!(c.workloads.max_age, Duration::from_secs(2));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(
            &p,
            "[workloads]\nmax = 7\nexclude = \"/system\\\\.slice/.*\"\nkubelet_log_dir = \"/l\"\nmax_age = \"250ms\"\n",
        )
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
        assert_eq!(c.workloads.max_age, Duration::from_millis(250));
        let c = Config::load(cli(&["--config.file", p.to_str().unwrap(), "--workloads.max-age", "0s"])).unwrap();
        assert_eq!(c.workloads.max_age, Duration::ZERO, "the flag over the file; 0s: a read at every scrape");
        let e = Cli::try_parse_from(["ksense", "--workloads.max-age", "soon"]).unwrap_err().to_string();
        assert!(e.contains("invalid duration"), "{e}");
        let e = Config::load(cli(&["--workloads.include", "(unclosed"])).unwrap_err();
        assert!(e.contains("include") && e.contains("(unclosed"), "{e}");
        assert!(Config::load(cli(&["--workloads.map-entries", "0"])).is_err());
        assert!(Cli::try_parse_from(["ksense", "--workloads.enabled", "maybe"]).is_err());
    }

    /// Values that would be accepted and then fail later (issue: robustness):
    /// a window of terabytes, a path no request can reach, a state path that
    /// names no file, a config "file" that is a device.
    #[test]
    fn values_that_fail_later_are_refused_at_load() {
        let e = Config::load(cli(&["--model.baseline-window", "10000000h"])).unwrap_err();
        assert!(e.contains("36000000000 samples") && e.contains("at most 100000"), "{e}");
        assert!(Config::load(cli(&["--model.baseline-window", "27h"])).is_ok());
        let e = Config::load(cli(&["--model.baseline-window", "2h", "--model.interval", "50ms"])).unwrap_err();
        assert!(e.contains("144000 samples"), "{e}");
        for bad in ["/m\u{e9}trics", "/m trics", "/m%20", "/m?x", "/m#x", "/m\u{0}"] {
            let e = Config::load(cli(&["--web.telemetry-path", bad])).unwrap_err();
            assert!(e.contains("telemetry path"), "{bad:?}: {e}");
        }
        assert!(Config::load(cli(&["--web.telemetry-path", "/probe/metrics-1.0_x~"])).is_ok());
        for bad in ["/nonexistent", "/tmp", "/etc/passwd"] {
            let e = Config::load(cli(&["--workloads.cgroup-root", bad])).unwrap_err();
            assert!(e.contains("not a cgroup v2 directory"), "{bad}: {e}");
        }
        let cg = tempfile::tempdir().unwrap();
        std::fs::write(cg.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        assert!(Config::load(cli(&["--workloads.cgroup-root", cg.path().to_str().unwrap()])).is_ok());
        for bad in ["/tmp/", "/"] {
            let e = Config::load(cli(&["--model.state-file", bad])).unwrap_err();
            assert!(e.contains("must name a file"), "{bad:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        for (bad, kind) in [(dir.path(), "a directory"), (Path::new("/dev/null"), "a device")] {
            let e = Config::load(cli(&["--model.state-file", bad.to_str().unwrap()])).unwrap_err();
            assert!(e.contains(kind) && e.contains("not a regular file"), "{bad:?}: {e}");
        }
        let e = Config::load(cli(&["--web.telemetry-path", "/api/v1/score"])).unwrap_err();
        assert!(e.contains("score"), "{e}");
        let e = file_error("[model]\nstate_file = \"\"\n");
        assert!(e.contains("line 2") && e.contains("state_file") && e.contains("must name a file"), "{e}");
        let e = file_error("[web]\ntelemetry_path = \"/a\\u0000b\"\n");
        assert!(e.contains("line 2") && e.contains("telemetry path"), "{e}");
        let e = Config::load(cli(&["--config.file", "/dev/zero"])).unwrap_err();
        assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    }

    /// `--bpf.sched-waits`: auto unless asked; flag or file; a bad value is an error.
    #[test]
    fn sched_waits_from_flag_and_file() {
        use crate::probes::SchedWaits as W;
        let waits = |args: &[&str]| Config::load(cli(args)).map(|c| c.sched_waits);
        assert_eq!(waits(&[]).unwrap(), W::Auto);
        assert_eq!(waits(&["--bpf.sched-waits", "sched_info"]).unwrap(), W::SchedInfo);
        assert_eq!(waits(&["--bpf.sched-waits=wakeup"]).unwrap(), W::Wakeup);
        assert!(Cli::try_parse_from(["ksense", "--bpf.sched-waits", "sometimes"]).is_err());
        let f = parse_file(Path::new("k.toml"), "[bpf]\nsched_waits = \"wakeup\"\n").unwrap();
        assert_eq!(f.bpf.sched_waits, Some(SchedWaits::Wakeup));
        assert!(parse_file(Path::new("k.toml"), "[bpf]\nsched_waits = \"never\"\n").is_err());
        let e = waits(&["--bpf.sched-waits", "sched_info", "--bpf.attach", "raw_tp"]).unwrap_err();
        assert!(e.contains("not with --bpf.attach raw_tp"), "{e}");
        assert!(waits(&["--bpf.sched-waits", "wakeup", "--bpf.attach", "raw_tp"]).is_ok());
    }

    /// Every boolean: bare, `--no-`, `=true`/`=false` and a separate value;
    /// the last of `--x`/`--no-x` wins, and a flag beats the file both ways.
    #[test]
    fn booleans_take_the_exporter_forms() {
        let on = |args: &[&str]| {
            let c = Config::load(cli(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            (c.workloads.enabled, c.strict)
        };
        assert_eq!(on(&[]), (false, false));
        assert_eq!(on(&["--workloads.enabled", "--strict"]), (true, true));
        assert_eq!(on(&["--workloads.enabled=true", "--strict=true"]), (true, true));
        assert_eq!(on(&["--workloads.enabled", "true", "--strict", "true"]), (true, true));
        assert_eq!(on(&["--workloads.enabled=false", "--strict=false"]), (false, false));
        assert_eq!(on(&["--no-workloads.enabled", "--no-strict"]), (false, false));
        assert_eq!(on(&["--workloads.enabled", "--no-workloads.enabled"]), (false, false));
        assert_eq!(on(&["--no-workloads.enabled", "--workloads.enabled"]), (true, false));
        assert_eq!(on(&["--no-strict", "--strict"]), (false, true));
        assert!(!Config::load(cli(&[])).unwrap().bpf_stats, "statistics off by default");
        assert!(Config::load(cli(&["--bpf.stats"])).unwrap().bpf_stats);
        assert!(Config::load(cli(&["--no-bpf.stats", "--bpf.stats"])).unwrap().bpf_stats);
        assert!(!Config::load(cli(&["--no-bpf.stats"])).unwrap().bpf_stats);
        assert!(!Config::load(cli(&["--bpf.stats=false"])).unwrap().bpf_stats);
        // Bare, then a subcommand or another flag: not taken as the value.
        assert_eq!(on(&["--workloads.enabled", "--strict", "--log.level", "warn"]), (true, true));
        assert!(matches!(cli(&["serve", "--workloads.enabled"]).command, Some(Command::Serve)));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[bpf]\nstrict = true\n[workloads]\nenabled = true\n").unwrap();
        let f = p.to_str().unwrap();
        assert_eq!(on(&["--config.file", f]), (true, true));
        assert_eq!(on(&["--config.file", f, "--no-workloads.enabled", "--no-strict"]), (false, false));
        std::fs::write(&p, "[bpf]\nstrict = false\n[workloads]\nenabled = false\n").unwrap();
        assert_eq!(on(&["--config.file", f, "--workloads.enabled", "--strict"]), (true, true));
        for bad in [&["--strict=yes"][..], &["--no-strict=false"], &["--workloads.enabled", "1"]] {
            assert!(Cli::try_parse_from(std::iter::once("ksense").chain(bad.iter().copied())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classic_buckets_round_up_to_kernel_bounds() {
        let c = Config::load(cli(&["--web.classic-buckets", "0.001,1,0.001"])).unwrap();
        assert_eq!(c.classic.of(BucketSet::Node), [-39, 0]);
        assert_eq!(c.classic.of(BucketSet::Workload), buckets::default_workload_classic_indices());
        let c = Config::load(cli(&["--workloads.classic-buckets", "0.01"])).unwrap();
        assert_eq!((c.classic.of(BucketSet::Node).len(), c.classic.of(BucketSet::Workload)), (13, &[-26][..]));
        for (flag, what) in [("--web.classic-buckets", "classic"), ("--workloads.classic-buckets", "per-workload")] {
            let e = Config::load(cli(&[flag, "0,-1"])).unwrap_err().to_string();
            assert!(e.starts_with(what) && e.contains("positive"), "{e}");
        }
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
        "stats",
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
            ("[bpf]\nperf_events = [\"cycles\", \"cycels\"]\n", 2, "bpf.perf_events"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(cli(&["--config.file", p.to_str().unwrap()])).unwrap_err();
            assert!(e.contains("k.toml") && e.contains(&format!("line {line},")) && e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn perf_events_default_to_the_hardware_ones_and_none_turns_them_off() {
        use crate::probes::perf::EventSet;
        assert_eq!(Config::load(cli(&[])).unwrap().perf_events, EventSet::default_set());
        assert!(Config::load(cli(&["--bpf.perf-events", "none"])).unwrap().perf_events.is_empty());
        let c = Config::load(cli(&["--bpf.perf-events", "cpu-clock,page-faults"])).unwrap();
        assert_eq!(c.perf_events.events().map(|e| e.name).collect::<Vec<_>>(), ["cpu-clock", "page-faults"]);
        let e = Config::load(cli(&["--bpf.perf-events", "cycles,bogus"])).unwrap_err();
        assert!(e.contains("unknown perf event \"bogus\"") && e.contains("cpu-clock"), "{e}");
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
