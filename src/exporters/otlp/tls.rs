//! The client side of OTLP to an https:// collector: one rustls
//! configuration and connector for both transports.

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};

use super::config::{OtlpConfig, TlsFiles};
use crate::exporters::webconfig::{read_certs, read_key};

/// Reads the files now, so a missing or malformed one is an error at start,
/// and a connection made afresh after a timeout picks up rotated files.
pub fn client_config(t: &TlsFiles) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match &t.ca_file {
        Some(p) => {
            for c in read_certs(p)? {
                roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // As curl does: a certificate rustls cannot use is skipped, not fatal.
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!("no CA certificates in the system's trust store{why}; install ca-certificates or set --otlp.tls.ca-file"));
            }
        }
    }
    let b = builder()?.with_root_certificates(roots);
    Ok(match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => b
            .with_client_auth_cert(read_certs(c)?, read_key(k)?)
            .map_err(|e| format!("{} and {}: {e}", c.display(), k.display()))?,
        _ => b.with_no_client_auth(),
    })
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// TCP, then TLS when the URL is https://. `h2`: gRPC (ALPN h2), else HTTP/1.1.
pub fn connector(cfg: &OtlpConfig, h2: bool) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(cfg.timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let tls = if cfg.endpoint.starts_with("https://") {
        client_config(&cfg.tls).map_err(|e| format!("OTLP TLS: {e}"))?
    } else {
        // Never used: plain http:// passes through.
        builder()?.with_root_certificates(RootCertStore::empty()).with_no_client_auth()
    };
    let b = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    Ok(if h2 { b.enable_http2().wrap_connector(tcp) } else { b.enable_http1().wrap_connector(tcp) })
}
