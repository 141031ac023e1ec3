//! The HTTP endpoint: `/metrics` (format chosen by Accept) and a landing page.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::families::{self, BuildInfo, ModelView};
use super::negotiate::{negotiate, Format};
use super::{openmetrics, prometheus_text};
use crate::probes::KernelSnapshot;

/// Where the kernel histograms come from (the probes; a fake in unit tests).
pub trait KernelSource: Send + Sync + 'static {
    fn snapshot(&self) -> std::io::Result<KernelSnapshot>;
    /// When the histograms started counting.
    fn started(&self) -> SystemTime;
}

impl KernelSource for crate::probes::Probes {
    fn snapshot(&self) -> std::io::Result<KernelSnapshot> {
        crate::probes::Probes::snapshot(self)
    }
    fn started(&self) -> SystemTime {
        self.attached_at
    }
}

pub struct Exporter {
    pub kernel: Arc<dyn KernelSource>,
    pub model: Arc<RwLock<Option<ModelView>>>,
    pub info: BuildInfo,
    pub le_indices: Vec<i32>,
    pub telemetry_path: String,
    /// Per-workload attribution, when on.
    pub workloads: Option<Arc<crate::workloads::Workloads>>,
}

impl Exporter {
    /// Reads the kernel now and encodes in the requested format.
    pub fn render(&self, format: Format) -> anyhow::Result<(Vec<u8>, &'static str)> {
        let mut snap = self.kernel.snapshot()?;
        if let Some(w) = &self.workloads {
            // A failed read costs the per-workload series of this scrape, never the scrape.
            snap.workloads = w.refresh().map_err(|e| tracing::warn!(error = %e, "reading the per-workload maps failed")).ok();
        }
        let model = self.model.read().map_err(|_| anyhow::anyhow!("model state poisoned"))?.clone();
        let fams = families::build(&snap, model.as_ref(), &self.info);
        Ok(match format {
            Format::Text => {
                let mut s = String::with_capacity(16 * 1024);
                prometheus_text::encode(&fams, &self.le_indices, &mut s);
                (s.into_bytes(), prometheus_text::CONTENT_TYPE)
            }
            Format::OpenMetrics => (
                openmetrics::encode_text(fams, &self.le_indices, self.kernel.started())?.into_bytes(),
                openmetrics::OPENMETRICS_CONTENT_TYPE,
            ),
            Format::Protobuf => (openmetrics::encode_protobuf(fams, &self.le_indices, self.kernel.started())?, openmetrics::PROTOBUF_CONTENT_TYPE),
        })
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut().insert("allow", HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == self.telemetry_path {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let t0 = Instant::now();
            return match self.render(negotiate(accept)) {
                Ok((body, ct)) => {
                    tracing::debug!(bytes = body.len(), micros = t0.elapsed().as_micros() as u64, "scrape");
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "scrape failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, &format!("scrape failed: {e}\n"))
                }
            };
        }
        if path == "/" {
            let page = format!(
                "<!doctype html><html><head><title>ksense</title></head><body><h1>ksense {}</h1>\
                 <p>Node-level kernel latency exporter (run queue, D state, softirq).</p>\
                 <p><a href=\"{}\">Metrics</a></p></body></html>\n",
                self.info.version, self.telemetry_path
            );
            let mut r = Response::new(Full::new(Bytes::from(page)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            return r;
        }
        text(StatusCode::NOT_FOUND, "not found\n")
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (bounded by a few seconds).
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ex = exporter.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let ex = ex.clone();
                    async move { Ok::<_, std::convert::Infallible>(ex.handle(&req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests still running after 5s; exiting anyway");
    }
    Ok(())
}
