//! The two OTLP transports: gRPC (the generated tonic client of
//! opentelemetry-proto) and HTTP/protobuf (a POST to /v1/metrics). Both send
//! the same `ExportMetricsServiceRequest`.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use prost::Message;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::config::{OtlpConfig, Protocol};
use super::tls;

pub enum Transport {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
    },
    // Boxed: the pooled client is several times the size of the gRPC one.
    Http {
        client: Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
        uri: http::Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        gzip: bool,
    },
}

/// Data points the collector accepted the request but rejected, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    pub points: i64,
    pub message: String,
}

impl Transport {
    /// Connects lazily: a collector that is down at start is an export
    /// failure like any other, not a startup error. Needs a tokio runtime.
    pub fn new(cfg: &OtlpConfig) -> anyhow::Result<Transport> {
        Ok(match cfg.protocol {
            Protocol::Grpc => {
                // No request timeout here: the push loop's is the one that
                // applies, and it replaces the connection when it fires.
                let conn = tls::connector(cfg, true).map_err(anyhow::Error::msg)?;
                let channel = Endpoint::from_shared(cfg.endpoint.clone())?
                    .connect_timeout(cfg.timeout)
                    .connect_with_connector_lazy(conn);
                let metadata = cfg
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((MetadataKey::from_bytes(k.as_bytes())?, MetadataValue::try_from(v.as_str())?)))
                    .collect::<anyhow::Result<_>>()?;
                let mut client = MetricsServiceClient::new(channel);
                if cfg.gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Transport::Grpc { client, metadata }
            }
            Protocol::HttpProtobuf => {
                let conn = tls::connector(cfg, false).map_err(anyhow::Error::msg)?;
                let headers = cfg
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((HeaderName::from_bytes(k.as_bytes())?, HeaderValue::from_str(v)?)))
                    .collect::<anyhow::Result<_>>()?;
                Transport::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(conn)),
                    uri: cfg.endpoint.parse()?,
                    headers,
                    gzip: cfg.gzip,
                }
            }
        })
    }

    /// One export, unbounded in time: the caller bounds it.
    pub async fn export(&mut self, req: ExportMetricsServiceRequest) -> Result<Option<Rejected>, String> {
        let resp = match self {
            Transport::Grpc { client, metadata } => {
                let mut r = tonic::Request::new(req);
                for (k, v) in metadata.iter() {
                    r.metadata_mut().insert(k.clone(), v.clone());
                }
                client
                    .export(r)
                    .await
                    .map_err(|s| with_causes(format!("gRPC {:?}: {}", s.code(), s.message()), &s))?
                    .into_inner()
            }
            Transport::Http { client, uri, headers, gzip } => {
                let mut b = http::Request::post(uri.clone()).header(CONTENT_TYPE, "application/x-protobuf");
                for (k, v) in headers.iter() {
                    b = b.header(k, v);
                }
                let mut body = req.encode_to_vec();
                if *gzip {
                    body = gzip_bytes(&body);
                    b = b.header(CONTENT_ENCODING, "gzip");
                }
                let r = b.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
                let resp = client.request(r).await.map_err(|e| with_causes(format!("HTTP: {e}"), &e))?;
                let status = resp.status();
                // A misbehaving server cannot make us buffer without bound.
                let body = Limited::new(resp.into_body(), 1 << 20)
                    .collect()
                    .await
                    .map_err(|e| format!("HTTP {status}: reading the response: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    return Err(format!("HTTP {status}: {}", text.trim()));
                }
                // An empty or undecodable 2xx body is a full success.
                ExportMetricsServiceResponse::decode(body).unwrap_or_default()
            }
        };
        Ok(resp
            .partial_success
            .filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty())
            .map(|p| Rejected { points: p.rejected_data_points, message: p.error_message }))
    }
}

/// The fast level: a push is encoded once per interval, and the metrics
/// (label sets repeated across series) shrink most of the way at level 1.
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// Appends the causes a message does not already say, so a log line says
/// why (connection refused, ...) once.
fn with_causes(mut msg: String, e: &dyn std::error::Error) -> String {
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_text = c.to_string();
        if !msg.contains(&c_text) {
            msg.push_str(": ");
            msg.push_str(&c_text);
        }
        cur = c.source();
    }
    msg
}
