//! OTLP push end to end: ksense, served in-process from a fake source (no
//! root, no BPF), pushes to receivers started here (a gRPC server on
//! opentelemetry-proto's MetricsService definition, an HTTP one on
//! /v1/metrics) that decode every request; what they get is checked against
//! what /metrics serves at the same moment. The start-up error for a missing
//! CA file, a property of the binary, is in root_faults.rs.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::inproc::InProcess;
use common::pki::Pki;
use common::sample;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message;

// ---- receivers ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Grpc,
    Http,
}

struct Received {
    path: String,
    headers: HashMap<String, String>,
    req: ExportMetricsServiceRequest,
    /// HTTP: the body's size as sent (compressed or not).
    wire_bytes: usize,
}

/// How the receiver behaves: answer after `delay`; with `refuse`, answer
/// HTTP 503 / gRPC UNAVAILABLE without recording.
#[derive(Default)]
struct Behaviour {
    delay: Duration,
    refuse: bool,
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Shared {
    /// Waits as the collector would, then says whether to refuse.
    async fn behave(&self) -> bool {
        let (delay, refuse) = {
            let b = self.behaviour.lock().unwrap();
            (b.delay, b.refuse)
        };
        tokio::time::sleep(delay).await;
        refuse
    }

    fn record(&self, path: &str, headers: &http::HeaderMap, req: ExportMetricsServiceRequest, wire_bytes: usize) {
        let headers =
            headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
        self.log.lock().unwrap().push(Received { path: path.to_string(), headers, req, wire_bytes });
    }
}

#[tonic::async_trait]
impl MetricsService for Shared {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if self.behave().await {
            return Err(tonic::Status::unavailable("refusing on purpose"));
        }
        let headers = request.metadata().clone().into_headers();
        self.record(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &headers,
            request.into_inner(),
            0,
        );
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn http_export(shared: Shared, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(r)
    };
    if parts.uri.path() != "/v1/metrics" || parts.method != http::Method::POST {
        return reply(StatusCode::NOT_FOUND, b"not found".to_vec());
    }
    if shared.behave().await {
        return reply(StatusCode::SERVICE_UNAVAILABLE, b"refusing on purpose".to_vec());
    }
    assert_eq!(parts.headers.get("content-type").unwrap(), "application/x-protobuf");
    let wire_bytes = body.len();
    let body = match parts.headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        None => body,
        Some("gzip") => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                .expect("a valid gzip body");
            Bytes::from(out)
        }
        Some(other) => panic!("content-encoding {other}"),
    };
    let req = ExportMetricsServiceRequest::decode(body).expect("a valid ExportMetricsServiceRequest");
    shared.record(parts.uri.path(), &parts.headers, req, wire_bytes);
    reply(StatusCode::OK, ExportMetricsServiceResponse::default().encode_to_vec())
}

/// A receiver on a fixed port that can be stopped (listener and every
/// connection closed, as when a collector dies) and started again.
struct Receiver {
    proto: Proto,
    port: u16,
    /// Serves TLS when set (an https:// collector).
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Shared,
    rt: tokio::runtime::Runtime,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn start(proto: Proto) -> Receiver {
        Receiver::start_with(proto, None)
    }

    fn start_with(proto: Proto, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut r = Receiver { proto, port: common::free_port(), tls, shared: Shared::default(), rt, server: None };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("binding the receiver port again");
        let (shared, proto, tls) = (self.shared.clone(), self.proto, self.tls.clone());
        self.server = Some(self.rt.spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                match &tls {
                    None => serve_connection(stream, proto, shared.clone(), &mut conns),
                    Some(cfg) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                        let shared = shared.clone();
                        conns.spawn(async move {
                            // A client that does not trust us (or we it) fails here: nothing recorded.
                            if let Ok(s) = acceptor.accept(stream).await {
                                let mut inner = tokio::task::JoinSet::new();
                                serve_connection(s, proto, shared, &mut inner);
                                while inner.join_next().await.is_some() {}
                            }
                        });
                    }
                }
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = self.rt.block_on(s);
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    fn set(&self, delay: Duration, refuse: bool) {
        *self.shared.behaviour.lock().unwrap() = Behaviour { delay, refuse };
    }

    /// Waits for the first request accepted after `after` (by its data's
    /// timestamp, so the data was read after that moment) and returns its index.
    fn wait_for_data_after(&self, after: SystemTime, timeout: Duration) -> usize {
        let t0 = Instant::now();
        let after = after.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        loop {
            if let Some(i) = self.shared.log.lock().unwrap().iter().position(|r| data_time(&r.req) > after) {
                return i;
            }
            assert!(
                t0.elapsed() < timeout,
                "no OTLP export with data after the given moment within {timeout:?} ({} received)",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_count(&self, n: usize, timeout: Duration) {
        let t0 = Instant::now();
        while self.count() < n {
            assert!(t0.elapsed() < timeout, "{} OTLP exports within {timeout:?}, wanted {n}", self.count());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_connection<I>(io: I, proto: Proto, shared: Shared, conns: &mut tokio::task::JoinSet<()>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    match proto {
        Proto::Grpc => {
            // As a Collector: takes gzip-compressed requests.
            let svc = hyper_util::service::TowerToHyperService::new(
                MetricsServiceServer::new(shared).accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            );
            conns.spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
            });
        }
        Proto::Http => {
            let svc = hyper::service::service_fn(move |req| http_export(shared.clone(), req));
            conns.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    }
}

/// A collector's TLS: the test PKI's server certificate (localhost,
/// 127.0.0.1); with `client_ca`, a client certificate from the client CA is required.
fn tls_server(pki: &Pki, proto: Proto, client_ca: bool) -> Arc<rustls::ServerConfig> {
    let pem = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let certs = rustls_pemfile::certs(&mut pem("server.crt").as_slice()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut pem("server.key").as_slice()).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let b = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut pem("client-ca.crt").as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        b.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
        )
    } else {
        b.with_no_client_auth()
    };
    let mut cfg = b.with_single_cert(certs, key).unwrap();
    cfg.alpn_protocols = vec![if proto == Proto::Grpc { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Arc::new(cfg)
}

// ---- reading both sides ----------------------------------------------------

fn data_time(req: &ExportMetricsServiceRequest) -> u64 {
    let m = &req.resource_metrics[0].scope_metrics[0].metrics;
    m.iter()
        .find_map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.first().map(|p| p.time_unix_nano),
            _ => None,
        })
        .expect("a gauge with a data point")
}

fn scrape_protobuf(k: &InProcess) -> BTreeMap<String, pb::MetricFamily> {
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    let r = ureq::get(&k.url("/metrics")).set("Accept", accept).call().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
    let mut buf = bytes.as_slice();
    let mut out = BTreeMap::new();
    while !buf.is_empty() {
        let f = pb::MetricFamily::decode_length_delimited(&mut buf).unwrap();
        out.insert(f.name.clone(), f);
    }
    out
}

/// The Collector's OTLP -> Prometheus name translation for the names and
/// units ksense uses (unit `s` -> `_seconds`, monotonic sum -> `_total`).
fn prometheus_name(m: &Metric) -> String {
    let mut n = m.name.replace(['.', '-'], "_");
    match m.unit.as_str() {
        "" => {}
        "s" => n.push_str("_seconds"),
        u => panic!("{}: unit {u:?} unexpected", m.name),
    }
    if matches!(&m.data, Some(Data::Sum(s)) if s.is_monotonic) {
        n.push_str("_total");
    }
    n
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => panic!("attribute {} is not a string: {other:?}", kv.key),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn labels(m: &pb::Metric) -> BTreeMap<String, String> {
    m.label.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

/// The data point of a series, by its labels (attributes).
fn point<'a, P>(
    points: &'a [P],
    attributes: impl Fn(&P) -> &[KeyValue],
    l: &BTreeMap<String, String>,
    name: &str,
) -> &'a P {
    points.iter().find(|p| attrs(attributes(p)) == *l).unwrap_or_else(|| panic!("OTLP {name} lacks {l:?}"))
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => panic!("data point without a value"),
    }
}

/// Native buckets by Prometheus index, zero bucket under i32::MIN.
fn native_buckets(h: &pb::Histogram) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::from([(i32::MIN, h.zero_count)]);
    let (mut idx, mut count, mut d) = (0i32, 0i64, h.positive_delta.iter());
    for (n, s) in h.positive_span.iter().enumerate() {
        idx = if n == 0 { s.offset } else { idx + s.offset };
        for _ in 0..s.length {
            count += d.next().unwrap();
            out.insert(idx, count as u64);
            idx += 1;
        }
    }
    out
}

/// Gauges that cannot change while ksense runs (the model stays calibrating
/// for its 10 minute warm-up in these tests).
const CONSTANT: &[&str] = &["ksense_build_info", "ksense_bpf_program_attached", "ksense_baseline_ready"];

fn between(name: &str, what: &str, a: f64, e: f64, b: f64) {
    assert!(a <= e && e <= b, "{name} {what}: /metrics said {a} then {b}, OTLP {e} in between");
}

/// Scrape A, an export whose data was read after A, scrape B: every family
/// of A is in the export under the translated name, with the same type,
/// unit, help and label sets, and every value lies between A and B.
fn check_sandwich(k: &InProcess, r: &Receiver) -> ExportMetricsServiceRequest {
    let a = scrape_protobuf(k);
    // After A returned: an export's data stamped later was read after A.
    let t_a = SystemTime::now();
    let i = r.wait_for_data_after(t_a, Duration::from_secs(10));
    let b = scrape_protobuf(k);
    let req = r.shared.log.lock().unwrap()[i].req.clone();
    let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
    let by_name: BTreeMap<String, &Metric> = metrics.iter().map(|m| (prometheus_name(m), m)).collect();
    assert_eq!(by_name.len(), metrics.len(), "two OTLP metrics translate to one name");
    for name in by_name.keys() {
        assert!(b.contains_key(name), "OTLP has {name}, /metrics does not");
    }
    for (name, fa) in &a {
        let m = by_name
            .get(name)
            .unwrap_or_else(|| panic!("/metrics has {name}, OTLP does not (has {:?})", by_name.keys()));
        let fb = &b[name];
        assert_eq!(m.description, fa.help, "{name} help");
        assert_eq!(m.unit, if fa.unit == "seconds" { "s" } else { "" }, "{name} unit (/metrics: {:?})", fa.unit);
        let want_type = match &m.data {
            Some(Data::Gauge(_)) => pb::MetricType::Gauge,
            Some(Data::Sum(s)) => {
                assert!(
                    s.is_monotonic && s.aggregation_temporality == AggregationTemporality::Cumulative as i32,
                    "{name}"
                );
                pb::MetricType::Counter
            }
            Some(Data::ExponentialHistogram(h)) => {
                assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32, "{name}");
                pb::MetricType::Histogram
            }
            other => panic!("{name}: unexpected OTLP data {other:?}"),
        };
        assert_eq!(fa.r#type, want_type as i32, "{name} type");
        for sa in &fa.metric {
            let l = labels(sa);
            let sb = fb
                .metric
                .iter()
                .find(|s| labels(s) == l)
                .unwrap_or_else(|| panic!("{name}{l:?} gone from the second scrape"));
            match &m.data {
                Some(Data::Gauge(g)) => {
                    let p = point(&g.data_points, |p| &p.attributes, &l, name);
                    let (va, ve, vb) = (sa.gauge.as_ref().unwrap().value, number(p), sb.gauge.as_ref().unwrap().value);
                    if CONSTANT.contains(&name.as_str()) {
                        assert!(va == ve && ve == vb, "{name}{l:?}: /metrics {va}, {vb}; OTLP {ve}");
                    } else if name == "ksense_baseline_samples" {
                        between(name, "value", va, ve, vb);
                    } else {
                        assert!(ve.is_finite(), "{name}{l:?} = {ve}");
                    }
                }
                Some(Data::Sum(s)) => {
                    let p = point(&s.data_points, |p| &p.attributes, &l, name);
                    between(
                        name,
                        &format!("{l:?}"),
                        sa.counter.as_ref().unwrap().value,
                        number(p),
                        sb.counter.as_ref().unwrap().value,
                    );
                }
                Some(Data::ExponentialHistogram(h)) => {
                    let p = point(&h.data_points, |p| &p.attributes, &l, name);
                    let (ha, hb) = (sa.histogram.as_ref().unwrap(), sb.histogram.as_ref().unwrap());
                    assert_eq!(
                        (p.scale, p.zero_threshold),
                        (ha.schema, ha.zero_threshold),
                        "{name}{l:?} scale and zero threshold"
                    );
                    between(name, "count", ha.sample_count as f64, p.count as f64, hb.sample_count as f64);
                    between(name, "sum", ha.sample_sum, p.sum.unwrap(), hb.sample_sum);
                    let pos = p.positive.as_ref().unwrap();
                    // OTLP index k is native index k + 1.
                    let mut e = BTreeMap::from([(i32::MIN, p.zero_count)]);
                    for (j, c) in pos.bucket_counts.iter().enumerate() {
                        if *c > 0 {
                            e.insert(pos.offset + j as i32 + 1, *c);
                        }
                    }
                    let (na, nb) = (native_buckets(ha), native_buckets(hb));
                    assert_eq!(
                        p.zero_count + pos.bucket_counts.iter().sum::<u64>(),
                        p.count,
                        "{name}{l:?}: buckets add up to the count"
                    );
                    for idx in na.keys().chain(e.keys()).chain(nb.keys()) {
                        let get = |m: &BTreeMap<i32, u64>| m.get(idx).copied().unwrap_or(0) as f64;
                        between(name, &format!("{l:?} bucket {idx}"), get(&na), get(&e), get(&nb));
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    req
}

fn resource(req: &ExportMetricsServiceRequest) -> BTreeMap<String, String> {
    attrs(&req.resource_metrics[0].resource.as_ref().unwrap().attributes)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn exports(text: &str, result: &str) -> f64 {
    sample(text, &format!("ksense_otlp_exports_total{{result=\"{result}\"}}"))
        .unwrap_or_else(|| panic!("no ksense_otlp_exports_total{{result={result:?}}}"))
}

/// Waits until /metrics counts at least `n` successful exports: ksense
/// counts one when the collector's answer arrives, a moment after the
/// receiver has logged the request.
fn wait_for_successes(k: &InProcess, n: f64) {
    let t0 = Instant::now();
    while exports(&k.scrape(), "success") < n {
        assert!(t0.elapsed() < Duration::from_secs(5), "fewer than {n} successful exports counted after 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scrapes /metrics for `span` and returns the slowest scrape.
fn scrape_for(k: &InProcess, span: Duration) -> Duration {
    let (t0, mut worst) = (Instant::now(), Duration::ZERO);
    while t0.elapsed() < span {
        let t = Instant::now();
        let text = k.scrape();
        worst = worst.max(t.elapsed());
        assert!(text.contains("ksense_runqueue_latency_seconds_count"));
        std::thread::sleep(Duration::from_millis(50));
    }
    worst
}

// ---- tests -------------------------------------------------------------------

#[test]
fn otlp_grpc_matches_metrics_with_headers_and_resource() {
    let r = Receiver::start(Proto::Grpc);
    let env = [
        ("K8S_NODE_NAME", "node-7"),
        ("K8S_POD_NAME", "ksense-abcde"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ];
    let k = InProcess::start_with_env(
        &["--otlp.endpoint", &r.endpoint(), "--otlp.interval", "1s", "--otlp.header", "authorization=Bearer x"],
        &env,
    );
    let req = check_sandwich(&k, &r);
    let res = resource(&req);
    for (key, want) in [
        ("service.name", "ksense"),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("host.name", hostname().as_str()),
        ("k8s.node.name", "node-7"),
        ("k8s.pod.name", "ksense-abcde"),
        ("service.instance.id", "node-7"),
        ("deployment.environment", "test"),
    ] {
        assert_eq!(res.get(key).map(String::as_str), Some(want), "resource {key}: {res:?}");
    }
    let log = r.shared.log.lock().unwrap();
    assert!(
        log.iter().all(|x| x.headers.get("authorization").map(String::as_str) == Some("Bearer x")),
        "every export carries the header"
    );
    // Cumulative: one start time (the probes' attach), data times moving on.
    let starts: Vec<u64> = log
        .iter()
        .flat_map(|x| x.req.resource_metrics[0].scope_metrics[0].metrics.iter())
        .filter_map(|m| match &m.data {
            Some(Data::Sum(s)) => Some(s.data_points[0].start_time_unix_nano),
            Some(Data::ExponentialHistogram(h)) => Some(h.data_points[0].start_time_unix_nano),
            _ => None,
        })
        .collect();
    assert!(starts[0] > 0 && starts.iter().all(|s| *s == starts[0]), "one start time for every cumulative point");
    assert!(starts[0] < data_time(&log[0].req));
    assert!(log.windows(2).all(|w| data_time(&w[0].req) < data_time(&w[1].req)));
    drop(log);
    wait_for_successes(&k, 1.0);
}

#[test]
fn otlp_http_configured_by_environment_matches_metrics() {
    let r = Receiver::start(Proto::Http);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=tenant%201".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".into()),
        ("OTEL_SERVICE_NAME", "ksense-env".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let k = InProcess::start_with_env(&[], &env);
    let req = check_sandwich(&k, &r);
    assert_eq!(resource(&req).get("service.name").map(String::as_str), Some("ksense-env"));
    let log = r.shared.log.lock().unwrap();
    assert!(log
        .iter()
        .all(|x| x.path == "/v1/metrics" && x.headers.get("x-scope-orgid").map(String::as_str) == Some("tenant 1")));
}

/// The collector dies mid-run and comes back on the same port: /metrics
/// never stalls, failures are counted, one warning and one recovery line are
/// logged, and pushing resumes.
#[test]
fn otlp_collector_down_then_back() {
    let mut r = Receiver::start(Proto::Grpc);
    let k = InProcess::start(&["--otlp.endpoint", &r.endpoint(), "--otlp.interval", "1s", "--otlp.timeout", "1s"]);
    r.wait_for_count(2, Duration::from_secs(10));
    r.stop();
    let before = r.count();
    let failed0 = exports(&k.scrape(), "failure");
    let worst = scrape_for(&k, Duration::from_secs(5));
    let text = k.scrape();
    assert!(exports(&text, "failure") > failed0, "failures counted while the collector is down");
    eprintln!("collector down: slowest of the /metrics scrapes {worst:?}");
    assert!(worst < Duration::from_millis(500), "/metrics took {worst:?} while the collector was down");
    r.restart();
    let t_back = Instant::now();
    // Back-off after ~4 failures is at most 16 s.
    r.wait_for_count(before + 1, Duration::from_secs(25));
    eprintln!("pushing resumed {:?} after the collector came back", t_back.elapsed());
    let success = exports(&k.scrape(), "success");
    r.wait_for_count(before + 3, Duration::from_secs(5));
    assert!(exports(&k.scrape(), "success") > success, "pushes continue at the interval");
    let (_, stderr) = k.stop();
    let warned = stderr.lines().filter(|l| l.contains("OTLP export failed")).count();
    let recovered = stderr.lines().filter(|l| l.contains("OTLP export recovered")).count();
    assert_eq!((warned, recovered), (1, 1), "one line per outage and one on recovery:\n{stderr}");
}

/// A collector slower than --otlp.timeout, then one refusing every export:
/// /metrics stays fast, every attempt is a counted failure, nothing is recorded.
#[test]
fn otlp_slow_or_refusing_collector_never_stalls_metrics() {
    let r = Receiver::start(Proto::Http);
    r.set(Duration::from_secs(3), false);
    let k = InProcess::start(&[
        "--otlp.endpoint",
        &r.endpoint(),
        "--otlp.protocol",
        "http/protobuf",
        "--otlp.interval",
        "1s",
        "--otlp.timeout",
        "500ms",
    ]);
    let worst = scrape_for(&k, Duration::from_secs(4));
    eprintln!("slow collector: slowest of the /metrics scrapes {worst:?}");
    assert!(worst < Duration::from_millis(500), "/metrics took {worst:?} with a slow collector");
    let text = k.scrape();
    assert!(exports(&text, "failure") >= 2.0, "timeouts count as failures:\n{text}");
    assert_eq!(exports(&text, "success"), 0.0);
    r.set(Duration::ZERO, true);
    let failed = exports(&text, "failure");
    let t0 = Instant::now();
    while exports(&k.scrape(), "failure") <= failed {
        assert!(t0.elapsed() < Duration::from_secs(12), "no attempt against the refusing collector");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(r.count(), 0);
    let (_, stderr) = k.stop();
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("OTLP export failed")).collect();
    assert_eq!(warned.len(), 1, "one line for the whole outage:\n{stderr}");
    assert!(warned[0].contains("timed out"), "{}", warned[0]);
}

/// The run-queue histogram's count in one export.
fn runqueue_count(req: &ExportMetricsServiceRequest) -> u64 {
    let m = &req.resource_metrics[0].scope_metrics[0].metrics;
    m.iter()
        .find_map(|m| match &m.data {
            Some(Data::ExponentialHistogram(h)) if prometheus_name(m) == "ksense_runqueue_latency_seconds" => {
                h.data_points.first().map(|p| p.count)
            }
            _ => None,
        })
        .expect("the run-queue histogram")
}

/// SIGTERM in the middle of an interval: the values of that moment are
/// pushed once more before exit, not lost with the interval in progress.
#[test]
fn otlp_last_export_at_shutdown() {
    let r = Receiver::start(Proto::Http);
    let k = InProcess::start(&[
        "--otlp.endpoint",
        &r.endpoint(),
        "--otlp.protocol",
        "http/protobuf",
        "--otlp.interval",
        "1h",
    ]);
    // The first tick exports at once; the next would be an hour away.
    r.wait_for_count(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let before_stop = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let (status, stderr) = k.stop();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert_eq!(r.count(), 2, "one periodic export and one at shutdown:\n{stderr}");
    let log = r.shared.log.lock().unwrap();
    assert!(data_time(&log[1].req) > before_stop, "the last export was read at the stop");
    let (first, last) = (runqueue_count(&log[0].req), runqueue_count(&log[1].req));
    assert!(last > first, "the last export carries the waits since the first ({first} -> {last})");
    assert!(stderr.contains("last export at shutdown sent"), "{stderr}");
}

/// No collector at all: shutdown still ends within --otlp.timeout or so.
#[test]
fn otlp_last_export_to_a_dead_collector_is_bounded() {
    let port = common::free_port();
    let k = InProcess::start(&[
        "--otlp.endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--otlp.interval",
        "1h",
        "--otlp.timeout",
        "2s",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (status, stderr) = k.stop();
    let took = t0.elapsed();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(stderr.contains("last export at shutdown failed"), "{stderr}");
}

/// gRPC to an https:// collector that requires a client certificate: the
/// CA file verifies it, the client certificate gets in, and what arrives is
/// what /metrics serves.
#[test]
fn otlp_https_grpc_with_ca_file_and_client_certificate() {
    let pki = Pki::new();
    let r = Receiver::start_with(Proto::Grpc, Some(tls_server(&pki, Proto::Grpc, true)));
    let url = format!("https://localhost:{}", r.port);
    let k = InProcess::start(&[
        "--otlp.endpoint",
        &url,
        "--otlp.interval",
        "1s",
        "--otlp.tls.ca-file",
        &pki.path("ca.crt"),
        "--otlp.tls.cert-file",
        &pki.path("client.crt"),
        "--otlp.tls.key-file",
        &pki.path("client.key"),
    ]);
    check_sandwich(&k, &r);
    assert_eq!(exports(&k.scrape(), "failure"), 0.0);
}

/// HTTP to an https:// collector, the CA from the standard variable; then a
/// CA that did not sign the collector's certificate: every push fails, is
/// counted, nothing arrives, and the log says why.
#[test]
fn otlp_https_http_trusts_only_the_given_ca() {
    let pki = Pki::new();
    let r = Receiver::start_with(Proto::Http, Some(tls_server(&pki, Proto::Http, false)));
    let url = format!("https://127.0.0.1:{}", r.port);
    let ca = pki.path("ca.crt");
    let k = InProcess::start_with_env(
        &["--otlp.endpoint", &url, "--otlp.protocol", "http/protobuf", "--otlp.interval", "1s"],
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str())],
    );
    check_sandwich(&k, &r);
    drop(k);
    let before = r.count();
    let k = InProcess::start(&[
        "--otlp.endpoint",
        &url,
        "--otlp.protocol",
        "http/protobuf",
        "--otlp.interval",
        "1s",
        "--otlp.tls.ca-file",
        &pki.path("other-ca.crt"),
    ]);
    let t0 = Instant::now();
    while exports(&k.scrape(), "failure") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no failed push counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, stderr) = k.stop();
    assert_eq!(r.count(), before, "nothing gets through to a collector we do not trust");
    let warn =
        stderr.lines().find(|l| l.contains("OTLP export failed")).unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    eprintln!("{warn}");
    assert!(warn.contains("certificate"), "the warning says why: {warn}");
}

/// --otlp.compression gzip (gRPC) and OTEL_EXPORTER_OTLP_COMPRESSION=gzip
/// (HTTP): the receivers decompress what /metrics serves, and the HTTP body
/// on the wire is less than half the request (node-wide, about 40 %).
#[test]
fn otlp_gzip_on_both_transports() {
    let r = Receiver::start(Proto::Grpc);
    let k =
        InProcess::start(&["--otlp.endpoint", &r.endpoint(), "--otlp.interval", "1s", "--otlp.compression", "gzip"]);
    check_sandwich(&k, &r);
    assert!(
        r.shared.log.lock().unwrap().iter().all(|x| x.headers.get("grpc-encoding").map(String::as_str) == Some("gzip")),
        "every gRPC export is gzip-compressed"
    );
    drop(k);
    let r = Receiver::start(Proto::Http);
    let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
    let k = InProcess::start_with_env(
        &["--otlp.endpoint", &r.endpoint(), "--otlp.protocol", "http/protobuf", "--otlp.interval", "1s"],
        &env,
    );
    check_sandwich(&k, &r);
    let log = r.shared.log.lock().unwrap();
    for x in log.iter() {
        assert_eq!(x.headers.get("content-encoding").map(String::as_str), Some("gzip"));
        let plain = x.req.encoded_len();
        eprintln!("HTTP export: {plain} bytes, {} gzipped", x.wire_bytes);
        assert!(x.wire_bytes * 2 < plain, "gzip: {} of {plain} bytes", x.wire_bytes);
    }
}
