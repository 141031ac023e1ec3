//! OTLP push settings: `--otlp.*` flags, the `[otlp]` file section and the
//! standard `OTEL_*` environment variables, in that order of precedence.
//! Push is on only when an endpoint is given by one of them.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The OTel exporters' default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const HTTP_PATH: &str = "/v1/metrics";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(s: &str, from: &str) -> Result<Protocol, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err(format!("{from}: OTLP protocol http/json is not supported (use grpc or http/protobuf)")),
            other => Err(format!("{from}: unknown OTLP protocol {other:?} (grpc or http/protobuf)")),
        }
    }
}

/// The effective OTLP settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// Full URL: for http/protobuf including the path (`/v1/metrics`).
    pub endpoint: String,
    pub protocol: Protocol,
    pub interval: Duration,
    pub timeout: Duration,
    /// Lower-case names; sent with every export (gRPC metadata or HTTP headers).
    pub headers: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
    /// Used when the endpoint is https://.
    pub tls: TlsFiles,
    /// gzip the requests (`--otlp.compression gzip`).
    pub gzip: bool,
}

/// PEM files for an https:// collector, read when connecting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFiles {
    /// CA certificates that verify the collector; None: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for a collector that asks for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// What the flags and the file said (flags already merged over the file).
#[derive(Debug, Default)]
pub struct Given {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    /// `key=value` from `--otlp.header`, after the file's `[otlp.headers]`.
    pub headers: Vec<String>,
    pub tls: TlsFiles,
    pub compression: Option<String>,
}

/// Resolves the settings; `env` looks up environment variables (a map in
/// tests), `hostname` is the node's. `Ok(None)`: push is off.
pub fn resolve(
    given: Given,
    env: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Result<Option<OtlpConfig>, String> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let protocol =
        match (&given.protocol, env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            (Some(p), _, _) => Protocol::parse(p, "--otlp.protocol / [otlp] protocol")?,
            (None, Some(p), _) => Protocol::parse(&p, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")?,
            (None, None, Some(p)) => Protocol::parse(&p, "OTEL_EXPORTER_OTLP_PROTOCOL")?,
            (None, None, None) => Protocol::Grpc,
        };
    // Per the OTel spec, the signal-specific variable is the full URL and the
    // generic one a base to which HTTP appends /v1/metrics. A flag given
    // without a path gets it too, so `http://collector:4318` just works.
    let endpoint = if let Some(e) = &given.endpoint {
        Some(("--otlp.endpoint / [otlp] endpoint", with_default_path(e, protocol, false)))
    } else if let Some(e) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        Some(("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", e.trim().to_string()))
    } else {
        env("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|e| ("OTEL_EXPORTER_OTLP_ENDPOINT", with_default_path(&e, protocol, true)))
    };
    let Some((from, endpoint)) = endpoint else {
        if given.protocol.is_some()
            || given.interval.is_some()
            || given.timeout.is_some()
            || !given.headers.is_empty()
            || given.tls != TlsFiles::default()
            || given.compression.is_some()
        {
            return Err("OTLP settings given but no endpoint: set --otlp.endpoint (e.g. http://localhost:4317), [otlp] endpoint or OTEL_EXPORTER_OTLP_ENDPOINT".into());
        }
        return Ok(None);
    };
    check_endpoint(&endpoint, from)?;

    let interval = match (given.interval, env("OTEL_METRIC_EXPORT_INTERVAL")) {
        (Some(d), _) => d,
        (None, Some(ms)) => millis(&ms, "OTEL_METRIC_EXPORT_INTERVAL")?,
        (None, None) => DEFAULT_INTERVAL,
    };
    let timeout = match (given.timeout, env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"), env("OTEL_EXPORTER_OTLP_TIMEOUT")) {
        (Some(d), _, _) => d,
        (None, Some(ms), _) => millis(&ms, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")?,
        (None, None, Some(ms)) => millis(&ms, "OTEL_EXPORTER_OTLP_TIMEOUT")?,
        (None, None, None) => DEFAULT_TIMEOUT,
    };
    if interval.is_zero() || timeout.is_zero() {
        return Err("OTLP interval and timeout must be greater than zero".into());
    }

    // Later sources override earlier ones key by key.
    let mut headers = Vec::new();
    for var in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"] {
        if let Some(v) = env(var) {
            for (k, v) in key_values(&v, var)? {
                set(&mut headers, k.to_ascii_lowercase(), v);
            }
        }
    }
    for h in &given.headers {
        let (k, v) = h.split_once('=').ok_or_else(|| format!("--otlp.header {h:?}: use key=value"))?;
        set(&mut headers, k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    for (k, v) in &headers {
        check_header(k, v)?;
    }

    let tls = tls_files(given.tls, &env)?;
    if !endpoint.starts_with("https://") && tls != TlsFiles::default() {
        return Err(format!("{from} {endpoint:?}: OTLP TLS files are given but the endpoint is not https://"));
    }
    let gzip = match (
        &given.compression,
        env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"),
        env("OTEL_EXPORTER_OTLP_COMPRESSION"),
    ) {
        (Some(c), _, _) => compression(c, "--otlp.compression / [otlp] compression")?,
        (None, Some(c), _) => compression(&c, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION")?,
        (None, None, Some(c)) => compression(&c, "OTEL_EXPORTER_OTLP_COMPRESSION")?,
        (None, None, None) => false,
    };
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        interval,
        timeout,
        headers,
        resource: resource(&env, hostname)?,
        tls,
        gzip,
    }))
}

/// The OTel values: `gzip` or `none`.
fn compression(v: &str, from: &str) -> Result<bool, String> {
    match v.trim() {
        "gzip" => Ok(true),
        "none" => Ok(false),
        other => Err(format!("{from}: unknown OTLP compression {other:?} (gzip or none)")),
    }
}

/// Flags and file first, then the signal-specific variable, then the generic one.
fn tls_files(given: TlsFiles, env: &dyn Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
    let pick = |g: Option<PathBuf>, var: &str| {
        g.or_else(|| {
            env(&format!("OTEL_EXPORTER_OTLP_METRICS_{var}"))
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{var}")))
                .map(|v| PathBuf::from(v.trim()))
        })
    };
    let t = TlsFiles {
        ca_file: pick(given.ca_file, "CERTIFICATE"),
        cert_file: pick(given.cert_file, "CLIENT_CERTIFICATE"),
        key_file: pick(given.key_file, "CLIENT_KEY"),
    };
    if t.cert_file.is_some() != t.key_file.is_some() {
        return Err("OTLP client certificate and key go together: set both --otlp.tls.cert-file and --otlp.tls.key-file (or neither)".into());
    }
    Ok(t)
}

/// `service.name`, `service.version`, `host.name`, `service.instance.id`
/// and the Kubernetes names from the downward API; then
/// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME override.
fn resource(env: &dyn Fn(&str) -> Option<String>, hostname: &str) -> Result<Vec<(String, String)>, String> {
    let node = env("K8S_NODE_NAME");
    let mut r = vec![
        ("service.name".to_string(), "ksense".to_string()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("host.name".into(), hostname.to_string()),
    ];
    // One instance per node: the Collector's Prometheus exporters turn this into
    // `instance`, so series from different nodes never collide.
    r.push(("service.instance.id".into(), node.clone().unwrap_or_else(|| hostname.to_string())));
    if let Some(n) = node {
        r.push(("k8s.node.name".into(), n));
    }
    if let Some(p) = env("K8S_POD_NAME") {
        r.push(("k8s.pod.name".into(), p));
    }
    if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in key_values(&v, "OTEL_RESOURCE_ATTRIBUTES")? {
            set(&mut r, k, v);
        }
    }
    if let Some(s) = env("OTEL_SERVICE_NAME") {
        set(&mut r, "service.name".into(), s.trim().to_string());
    }
    Ok(r)
}

fn set(list: &mut Vec<(String, String)>, k: String, v: String) {
    match list.iter_mut().find(|(key, _)| *key == k) {
        Some(e) => e.1 = v,
        None => list.push((k, v)),
    }
}

fn with_default_path(url: &str, protocol: Protocol, always: bool) -> String {
    let url = url.trim();
    if protocol != Protocol::HttpProtobuf {
        return url.to_string();
    }
    let path = url.parse::<Uri>().map(|u| u.path().to_string()).unwrap_or_default();
    if always || path.is_empty() || path == "/" {
        format!("{}{HTTP_PATH}", url.trim_end_matches('/'))
    } else {
        url.to_string()
    }
}

fn check_endpoint(url: &str, from: &str) -> Result<(), String> {
    let u: Uri = url.parse().map_err(|e| format!("{from} {url:?}: {e} (use e.g. http://collector:4317)"))?;
    match u.scheme_str() {
        Some("http" | "https") => {}
        Some(s) => return Err(format!("{from} {url:?}: scheme {s:?}: use http or https, e.g. http://collector:4317")),
        None => return Err(format!("{from} {url:?}: needs a scheme and host, e.g. http://collector:4317")),
    }
    if u.host().is_none_or(str::is_empty) {
        return Err(format!("{from} {url:?}: no host"));
    }
    // http's Uri keeps a port it cannot read as "none", and the push would go to
    // the scheme's default port (80) instead.
    let authority = u.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("{from} {url:?}: port {port:?} is not 1-65535"));
        }
    }
    Ok(())
}

fn millis(v: &str, from: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{from}={v:?}: expected milliseconds, e.g. 10000"))
}

fn check_header(k: &str, v: &str) -> Result<(), String> {
    let bad_key = k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if bad_key || v.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
        return Err(format!("OTLP header {k:?}: names are letters, digits, - _ . and values printable ASCII"));
    }
    Ok(())
}

/// `k1=v1,k2=v2` with percent-encoded values (W3C baggage style, as the OTel
/// spec defines for OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES).
fn key_values(s: &str, var: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| format!("{var}: {p:?} is not key=value"))?;
            let (k, v) =
                (k.trim(), percent_decode(v.trim()).ok_or_else(|| format!("{var}: bad percent-encoding in {p:?}"))?);
            if k.is_empty() {
                return Err(format!("{var}: empty key in {p:?}"));
            }
            Ok((k.to_string(), v))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(given: Given, env: &[(&str, &str)]) -> Result<Option<OtlpConfig>, String> {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(given, &|k| m.get(k).cloned(), "node-a")
    }

    fn endpoint(e: &str) -> Given {
        Given { endpoint: Some(e.into()), ..Default::default() }
    }

    fn attr<'a>(c: &'a OtlpConfig, k: &str) -> Option<&'a str> {
        c.resource.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn off_without_endpoint_and_error_when_other_settings_given() {
        assert_eq!(run(Given::default(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]), Ok(None));
        let e = run(Given { protocol: Some("grpc".into()), ..Default::default() }, &[]).unwrap_err();
        assert!(e.contains("no endpoint"), "{e}");
    }

    #[test]
    fn defaults_and_flag_endpoint_paths() {
        let c = run(endpoint("http://c:4317"), &[]).unwrap().unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str(), c.interval, c.timeout),
            (Protocol::Grpc, "http://c:4317", DEFAULT_INTERVAL, DEFAULT_TIMEOUT)
        );
        let http = |e: &str| {
            run(Given { protocol: Some("http/protobuf".into()), ..endpoint(e) }, &[]).unwrap().unwrap().endpoint
        };
        assert_eq!(http("http://c:4318"), "http://c:4318/v1/metrics");
        assert_eq!(http("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(http("http://c:4318/custom/path"), "http://c:4318/custom/path");
    }

    #[test]
    fn env_endpoints_follow_the_spec() {
        let http = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        let c =
            run(Given::default(), &[http[0], ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")]).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://c:4318/base/v1/metrics");
        let c = run(
            Given::default(),
            &[
                http[0],
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4318/m"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://c:4318/m", "the signal-specific URL is used as is");
        let c = run(Given::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap().unwrap();
        assert_eq!((c.protocol, c.endpoint.as_str()), (Protocol::Grpc, "http://c:4317"));
        // METRICS_ variants win over the generic ones; flags win over both.
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "3000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ];
        let c = run(Given::default(), &env).unwrap().unwrap();
        assert_eq!(
            (c.protocol, c.timeout, c.interval),
            (Protocol::HttpProtobuf, Duration::from_secs(3), Duration::from_secs(5))
        );
        let c = run(
            Given {
                protocol: Some("grpc".into()),
                timeout: Some(Duration::from_secs(1)),
                interval: Some(Duration::from_secs(2)),
                ..endpoint("http://f:1")
            },
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str(), c.timeout, c.interval),
            (Protocol::Grpc, "http://f:1", Duration::from_secs(1), Duration::from_secs(2))
        );
    }

    #[test]
    fn headers_merge_env_then_flags_percent_decoded() {
        let env = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20abc, x-tenant=a"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=b"),
        ];
        let c = run(
            Given {
                headers: vec!["x-extra = 1".into(), "authorization=Bearer t=1".into()],
                ..endpoint("http://c:4317")
            },
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("authorization".into(), "Bearer t=1".into()),
                ("x-tenant".into(), "b".into()),
                ("x-extra".into(), "1".into())
            ]
        );
        for bad in ["novalue", "bad key=1", "k=\u{7f}"] {
            assert!(run(Given { headers: vec![bad.into()], ..endpoint("http://c:4317") }, &[]).is_err(), "{bad}");
        }
        assert!(run(endpoint("http://c:4317"), &[("OTEL_EXPORTER_OTLP_HEADERS", "k=%zz")]).is_err());
    }

    #[test]
    fn resource_defaults_downward_api_and_env_overrides() {
        let c = run(endpoint("http://c:4317"), &[]).unwrap().unwrap();
        assert_eq!(attr(&c, "service.name"), Some("ksense"));
        assert_eq!(attr(&c, "service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(attr(&c, "host.name"), Some("node-a"));
        assert_eq!(attr(&c, "service.instance.id"), Some("node-a"));
        assert_eq!(attr(&c, "k8s.node.name"), None);
        let env = [
            ("K8S_NODE_NAME", "n1"),
            ("K8S_POD_NAME", "ksense-x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=a%2Cb"),
            ("OTEL_SERVICE_NAME", "ks"),
        ];
        let c = run(endpoint("http://c:4317"), &env).unwrap().unwrap();
        assert_eq!(attr(&c, "k8s.node.name"), Some("n1"));
        assert_eq!(attr(&c, "k8s.pod.name"), Some("ksense-x"));
        assert_eq!(attr(&c, "service.instance.id"), Some("n1"));
        assert_eq!(attr(&c, "deployment.environment"), Some("prod"));
        assert_eq!(attr(&c, "service.name"), Some("ks"), "OTEL_SERVICE_NAME wins");
    }

    #[test]
    fn compression_from_flag_then_variables() {
        assert!(!run(endpoint("http://c:4317"), &[]).unwrap().unwrap().gzip, "off by default, as in the OTel SDKs");
        assert!(run(endpoint("http://c:4317"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).unwrap().unwrap().gzip);
        let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"), ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none")];
        assert!(!run(endpoint("http://c:4317"), &env).unwrap().unwrap().gzip, "the signal-specific variable wins");
        assert!(
            run(Given { compression: Some("gzip".into()), ..endpoint("http://c:4317") }, &env).unwrap().unwrap().gzip,
            "the flag wins"
        );
    }

    #[test]
    fn tls_files_from_flags_then_signal_then_generic_variables() {
        let env = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic-ca.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "/metrics-ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ];
        let c = run(endpoint("https://c:4317"), &env).unwrap().unwrap();
        assert_eq!(
            c.tls,
            TlsFiles {
                ca_file: Some("/metrics-ca.pem".into()),
                cert_file: Some("/c.pem".into()),
                key_file: Some("/k.pem".into())
            }
        );
        let c = run(
            Given {
                tls: TlsFiles { ca_file: Some("/flag.pem".into()), ..Default::default() },
                ..endpoint("https://c:4317")
            },
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.tls.ca_file, Some("/flag.pem".into()), "the flag wins");
        let c = run(endpoint("https://c:4317"), &[]).unwrap().unwrap();
        assert_eq!(c.tls, TlsFiles::default(), "https with the system's trust store");
    }

    #[test]
    fn endpoints_with_and_without_a_port() {
        for e in ["http://[::1]:4317", "http://c", "https://c:443/v1/metrics", "http://[fe80::1]"] {
            assert!(run(endpoint(e), &[]).is_ok_and(|c| c.is_some()), "{e}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_their_source() {
        for (given, env, want) in [
            (endpoint("collector:4317"), vec![], "--otlp.endpoint"),
            (
                Given {
                    tls: TlsFiles { ca_file: Some("/ca.pem".into()), ..Default::default() },
                    ..endpoint("http://c:4317")
                },
                vec![],
                "not https://",
            ),
            (endpoint("http://c:4317"), vec![("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")], "go together"),
            (Given { compression: Some("zstd".into()), ..endpoint("http://c:4317") }, vec![], "gzip or none"),
            (
                endpoint("http://c:4317"),
                vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "br")],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                Given { tls: TlsFiles { ca_file: Some("/ca.pem".into()), ..Default::default() }, ..Default::default() },
                vec![],
                "no endpoint",
            ),
            (endpoint("http://"), vec![], "--otlp.endpoint"),
            (endpoint("http://127.0.0.1:99999"), vec![], "not 1-65535"),
            (endpoint("http://[::1]:0/v1"), vec![], "not 1-65535"),
            (endpoint("https://c:abc"), vec![], "not 1-65535"),
            (Given { protocol: Some("http/json".into()), ..endpoint("http://c:1") }, vec![], "http/json"),
            (
                Given::default(),
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:1"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (endpoint("http://c:1"), vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")], "OTEL_EXPORTER_OTLP_TIMEOUT"),
            (Given { interval: Some(Duration::ZERO), ..endpoint("http://c:1") }, vec![], "greater than zero"),
            (endpoint("http://c:1"), vec![("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "OTEL_RESOURCE_ATTRIBUTES"),
        ] {
            let e = run(given, &env).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
