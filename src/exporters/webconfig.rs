//! `--web.config.file`: TLS and basic auth, in the Prometheus
//! exporter-toolkit format, so one file serves ksense and the Go exporters:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12           # TLS12 (default) or TLS13
//!   max_version: TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt hash
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! ```
//!
//! Everything is read and checked at start (certificates and keys loaded,
//! hashes parsed): a bad file is one line naming the file, line and field,
//! and exit code 2. Unknown keys are errors.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::fileerr;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    http_server_config: Option<HttpFile>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<ClientAuth>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    headers: Option<BTreeMap<String, String>>,
    /// Accepted for compatibility; ksense serves HTTP/1.1 only.
    http2: Option<bool>,
}

/// Go's `tls.ClientAuthType` names, as exporter-toolkit spells them.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

/// Response headers exporter-toolkit allows in `http_server_config.headers`.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The checked web configuration.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    pub client_auth: ClientAuth,
    pub auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// Reads, parses and checks the file; loads certificates and keys.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = crate::bounded_read::read_to_string(path, crate::bounded_read::MAX_CONFIG_BYTES)
            .map_err(|e| format!("web config file {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// As `load`, from text already read (`path` names it in errors and
    /// anchors relative file names).
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, String> {
        let err = |field: &str, msg: &str| {
            fileerr::located("web config file", path, fileerr::line_for(text, field), field, msg)
        };
        if let Some(line) = too_deep(text) {
            return Err(fileerr::located(
                "web config file",
                path,
                Some(line),
                "(document)",
                &format!("nested deeper than {MAX_NESTING} levels; a web config needs 4"),
            ));
        }
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.location().map(|l| l.line()).or_else(|| fileerr::line_for(text, &field));
                let msg = yaml_message(&inner);
                // serde_yaml prefixes the path too; it is already in `field`.
                let msg = match msg.split_once(": ") {
                    Some((p, rest)) if !p.contains(' ') && field.starts_with(p) => rest.to_string(),
                    _ => msg,
                };
                fileerr::located("web config file", path, line, &field, &msg)
            })?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut cfg = WebConfig::default();
        if let Some(t) = &file.tls_server_config {
            let (tls, client_auth) = tls_config(t, dir, &err)?;
            cfg.tls = Some(Arc::new(tls));
            cfg.client_auth = client_auth;
        }
        if let Some(users) = file.basic_auth_users {
            cfg.auth = Some(Arc::new(BasicAuth::new(users, &err)?));
        }
        if let Some(h) = file.http_server_config {
            for (name, value) in h.headers.unwrap_or_default() {
                let field = format!("http_server_config.headers.{name}");
                let Some(allowed) = ALLOWED_HEADERS.iter().find(|a| a.eq_ignore_ascii_case(&name)) else {
                    return Err(err(
                        &field,
                        &format!("header {name:?} is not allowed (allowed: {})", ALLOWED_HEADERS.join(", ")),
                    ));
                };
                let value = HeaderValue::from_str(&value).map_err(|_| err(&field, "invalid header value"))?;
                cfg.headers.push((HeaderName::from_static(static_lower(allowed)), value));
            }
            let _ = h.http2;
        }
        Ok(cfg)
    }
}

/// serde_yaml appends " at line L column C" (and sometimes prefixes the
/// path); the location is reported separately, so it is cut here.
fn yaml_message(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn static_lower(h: &'static str) -> &'static str {
    match h {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn tls_config(
    t: &TlsFile,
    dir: &Path,
    err: &impl Fn(&str, &str) -> String,
) -> Result<(ServerConfig, ClientAuth), String> {
    let file = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) else {
        let missing = if t.cert_file.is_none() { "cert_file" } else { "key_file" };
        return Err(err(&format!("tls_server_config.{missing}"), "cert_file and key_file are both required for TLS"));
    };
    let certs = read_certs(&file(cert_file)).map_err(|e| err("tls_server_config.cert_file", &e))?;
    let key = read_key(&file(key_file)).map_err(|e| err("tls_server_config.key_file", &e))?;

    let versions: Vec<&'static rustls::SupportedProtocolVersion> = {
        for (field, v) in [("min_version", t.min_version), ("max_version", t.max_version)] {
            if matches!(v, Some(TlsVersion::TLS10 | TlsVersion::TLS11)) {
                return Err(err(
                    &format!("tls_server_config.{field}"),
                    "TLS 1.0 and 1.1 are not supported: use TLS12 or TLS13",
                ));
            }
        }
        let min = t.min_version.unwrap_or(TlsVersion::TLS12);
        let max = t.max_version.unwrap_or(TlsVersion::TLS13);
        if min > max {
            return Err(err(
                "tls_server_config.max_version",
                &format!("max_version {max:?} is below min_version {min:?}"),
            ));
        }
        [(TlsVersion::TLS12, &rustls::version::TLS12), (TlsVersion::TLS13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect()
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let auth = t.client_auth_type.unwrap_or_default();
    let roots = match &t.client_ca_file {
        Some(ca) => {
            if auth == ClientAuth::NoClientCert {
                return Err(err(
                    "tls_server_config.client_ca_file",
                    "client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type too",
                ));
            }
            let mut roots = RootCertStore::empty();
            for c in read_certs(&file(ca)).map_err(|e| err("tls_server_config.client_ca_file", &e))? {
                roots
                    .add(c)
                    .map_err(|e| err("tls_server_config.client_ca_file", &format!("not a CA certificate: {e}")))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier: Arc<dyn ClientCertVerifier> = match (auth, roots) {
        (ClientAuth::NoClientCert, _) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => Arc::new(AcceptAnyClientCert {
            mandatory: auth == ClientAuth::RequireAnyClientCert,
            algs: provider.signature_verification_algorithms,
        }),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(err("tls_server_config.client_auth_type", &format!("{auth:?} needs client_ca_file")));
        }
        (_, Some(roots)) => {
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let b = if auth == ClientAuth::VerifyClientCertIfGiven { b.allow_unauthenticated() } else { b };
            b.build().map_err(|e| err("tls_server_config.client_ca_file", &e.to_string()))?
        }
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| err("tls_server_config.min_version", &e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("tls_server_config.key_file", &format!("does not go with cert_file: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cfg, auth))
}

pub(crate) fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = crate::bounded_read::read(p, crate::bounded_read::MAX_CONFIG_BYTES)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", p.display()));
    }
    Ok(certs)
}

pub(crate) fn read_key(p: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = crate::bounded_read::read(p, crate::bounded_read::MAX_CONFIG_BYTES)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| format!("{}: {e}", p.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", p.display()))
}

/// `RequestClientCert` and `RequireAnyClientCert`: as in Go, the client's
/// certificate is asked for but not checked against any CA. The handshake
/// signature is still verified, so the client holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyClientCert {
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Basic auth against bcrypt hashes. A bcrypt check costs 50–250 ms of CPU,
/// so successful checks are cached (by a SHA-256 of user and password, never
/// the password itself); failures are never cached, and at most two checks
/// run at once, on the blocking pool, so scrapes are not held up behind them.
/// Each client address has at most one check running or queued for those
/// two, so a client guessing passwords, however many connections it opens,
/// delays another client's check by at most one check.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Compared against when the user is unknown, so an unknown user takes
    /// as long as a wrong password (same cost as the first user's hash).
    dummy: String,
    ok_cache: Mutex<HashSet<[u8; 32]>>,
    checks: Arc<tokio::sync::Semaphore>,
    per_client: Arc<Mutex<ClientMap>>,
}

type ClientMap = std::collections::HashMap<std::net::IpAddr, Arc<tokio::sync::Semaphore>>;

/// A client's place in [`BasicAuth::check`]: when the last one for an address
/// goes (its check done, or cancelled while it waited), so does the address.
struct ClientSlot {
    map: Arc<Mutex<ClientMap>>,
    client: std::net::IpAddr,
    sem: Arc<tokio::sync::Semaphore>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            // The map's reference and this one: nobody else waits.
            if Arc::strong_count(&self.sem) == 2 {
                m.remove(&self.client);
            }
        }
    }
}

/// Deeper flow collections (`[[[...`) are refused before the YAML parser
/// sees them: its time grows with the square of the depth (100k levels took
/// 21 s to reject).
pub const MAX_NESTING: usize = 32;

/// The line where flow-collection nesting first exceeds [`MAX_NESTING`],
/// skipping quoted strings and comments (a scan, not a parse: enough to
/// bound the parser's work).
fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line, mut quote, mut comment) = (0usize, 1usize, None::<char>, false);
    for c in text.chars() {
        match (c, quote) {
            ('\n', _) => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            (q, Some(open)) if q == open => quote = None,
            (_, Some(_)) => {}
            ('"' | '\'', None) => quote = Some(c),
            ('#', None) => comment = true,
            ('[' | '{', None) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(line);
                }
            }
            (']' | '}', None) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The highest bcrypt cost accepted at load: 2^14 rounds is about a second
/// of CPU per check here; each step above doubles it (cost 31 would be
/// days), so a hash above it would let two requests hold the CPU.
pub const MAX_BCRYPT_COST: u32 = 14;

const CACHE_MAX: usize = 1024;

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        f.debug_struct("BasicAuth").field("users", &self.users.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>, err: &impl Fn(&str, &str) -> String) -> Result<BasicAuth, String> {
        let mut cost = None;
        for (user, hash) in &users {
            let field = format!("basic_auth_users.{user}");
            if user.is_empty() || user.contains(':') {
                return Err(err(&field, "a user name must be non-empty and must not contain ':'"));
            }
            let parts = hash.parse::<bcrypt::HashParts>().map_err(|e| {
                err(&field, &format!("not a bcrypt hash ({e}): make one with htpasswd -nBC 10 \"\" | tr -d ':\\n'"))
            })?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(err(
                    &field,
                    &format!(
                        "bcrypt cost {} is above {MAX_BCRYPT_COST}: each check would take {}x as long as at {MAX_BCRYPT_COST} (about a second); make the hash with htpasswd -nBC 10",
                        parts.get_cost(),
                        1u64 << (parts.get_cost() - MAX_BCRYPT_COST).min(63)
                    ),
                ));
            }
            cost.get_or_insert(parts.get_cost());
        }
        let dummy = bcrypt::hash("ksense: no such user", cost.unwrap_or(4).clamp(4, 14))
            .map_err(|e| err("basic_auth_users", &e.to_string()))?;
        Ok(BasicAuth {
            users,
            dummy,
            ok_cache: Mutex::new(HashSet::new()),
            checks: Arc::new(tokio::sync::Semaphore::new(2)),
            per_client: Arc::new(Mutex::new(ClientMap::new())),
        })
    }

    /// Whether the `Authorization` header holds a known user and its password.
    pub async fn check(&self, header: Option<&HeaderValue>, client: std::net::IpAddr) -> bool {
        let Some((user, pass)) = header.and_then(parse_basic) else { return false };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(pass.as_bytes())
            .finalize()
            .into();
        if self.ok_cache.lock().map(|c| c.contains(&key)).unwrap_or(false) {
            return true;
        }
        let (known, hash) = match self.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, self.dummy.clone()),
        };
        let slot = {
            let Ok(mut m) = self.per_client.lock() else { return false };
            let sem = m.entry(client).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1))).clone();
            ClientSlot { map: self.per_client.clone(), client, sem }
        };
        let Ok(client_permit) = slot.sem.clone().acquire_owned().await else { return false };
        let Ok(permit) = self.checks.clone().acquire_owned().await else { return false };
        // The permits and the slot go with the check: a client that hangs up
        // cancels this future, not the bcrypt run, which keeps its permits
        // until it ends.
        let ok = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(pass, &hash).unwrap_or(false);
            drop((client_permit, permit));
            drop(slot);
            ok
        })
        .await
        .unwrap_or(false)
            && known;
        if ok {
            if let Ok(mut c) = self.ok_cache.lock() {
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
                c.insert(key);
            }
        }
        ok
    }
}

fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(Path::new("/etc/ksense/web.yml"), text)
    }

    #[test]
    fn empty_file_is_plain_http() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
        assert!(parse("# nothing\n").unwrap().tls.is_none());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let cases = [
            ("tls_server_config:\n  cert_fil: a\n", 2, "cert_fil"),
            (
                "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
                2,
                "tls_server_config.cert_file",
            ),
            ("tls_server_config:\n  key_file: k\n", 1, "tls_server_config.cert_file"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                4,
                "client_auth_type",
            ),
            ("basic_auth_users:\n  alice: plaintext\n", 2, "basic_auth_users.alice"),
            ("http_server_config:\n  headers:\n    Content-Type: x\n", 3, "http_server_config.headers.Content-Type"),
            ("nope: 1\n", 1, "nope"),
            ("basic_auth_users: [1, 2]\n", 1, "basic_auth_users"),
        ];
        for (text, line, field) in cases {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains("/etc/ksense/web.yml") && e.contains(&format!("line {line},")) && e.contains(field),
                "{text:?}: {e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }

    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "tls_server_config:",
        "basic_auth_users:",
        "http_server_config:",
        "  cert_file:",
        "  key_file:",
        "  client_ca_file:",
        "  client_auth_type:",
        "  min_version:",
        "  max_version:",
        "  headers:",
        "    X-Frame-Options:",
        "    Content-Type:",
        "  http2:",
        "  alice:",
        "  a:b:",
        "nope:",
        "  cipher_suites:",
        "- x",
    ];
    const VALUES: &[&str] = &[
        "",
        " /nonexistent.pem",
        " server.crt",
        " RequireAndVerifyClientCert",
        " NoClientCert",
        " Sometimes",
        " TLS10",
        " TLS12",
        " TLS13",
        " TLS99",
        " true",
        " 1",
        " [1, 2]",
        " {a: b}",
        " \"$2y$10$abc\"",
        " $2b$04$KQ3r0M5j6LJ0ZQm9s5q7UuU7pWq5n0i7G3sQ3pYx9m0mQ9V8x1u6a",
        " DENY",
        " ~",
        " 'unterminated",
        " &a",
        " *a",
        " !!binary x",
    ];

    fn yaml_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (proptest::sample::select(KEYS), proptest::sample::select(VALUES)).prop_map(|(k, v)| format!("{k}{v}")),
            1 => "[ -~]{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the file holds: no panic, and an error is one line that
        /// names the file, a line and a field.
        #[test]
        fn web_config_fuzz(lines in proptest::collection::vec(yaml_line(), 1..10)) {
            let text = lines.join("\n");
            if let Err(e) = parse(&text) {
                prop_assert!(e.contains("/etc/ksense/web.yml") && e.contains(", line ") && e.contains("field `"), "{text:?}: {e}");
                prop_assert!(!e.contains('\n'), "{text:?}: {e}");
            }
        }
    }

    #[tokio::test]
    async fn basic_auth_caches_only_successes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new([("alice".to_string(), hash)].into(), &|_: &str, m: &str| m.to_string()).unwrap();
        let hdr = |u: &str, p: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ))
            .unwrap()
        };
        assert!(!auth.check(None, LOCAL).await);
        assert!(!auth.check(Some(&hdr("alice", "wrong")), LOCAL).await);
        assert!(!auth.check(Some(&hdr("bob", "s3cret")), LOCAL).await);
        assert!(auth.ok_cache.lock().unwrap().is_empty(), "failures are not cached");
        assert!(auth.check(Some(&hdr("alice", "s3cret")), LOCAL).await);
        assert_eq!(auth.ok_cache.lock().unwrap().len(), 1);
        assert!(auth.check(Some(&hdr("alice", "s3cret")), LOCAL).await);
        assert!(!auth.check(Some(&hdr("alice", "s3cret2")), LOCAL).await);
        assert!(!auth.check(Some(&HeaderValue::from_static("Bearer abc")), LOCAL).await);
        assert!(auth.per_client.lock().unwrap().is_empty(), "no client is remembered once its checks are done");
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let t0 = std::time::Instant::now();
        let e = parse(&format!("headers: {}\n", "[".repeat(100_000))).unwrap_err();
        assert!(e.contains("line 1") && e.contains("nested deeper than 32"), "{e}");
        let e = parse(&format!("http_server_config:\n  headers:\n    X: {}\n", "{a: ".repeat(40))).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_millis(500), "{:?}", t0.elapsed());
        // Brackets inside quotes and comments are text.
        let q = "[".repeat(100);
        assert!(too_deep(&format!("a: \"{q}\"\nb: '{q}'\n# {q}\n")).is_none());
        assert_eq!(too_deep(&format!("a: 1\nb: {}\n", "[".repeat(33))), Some(2));
        assert!(too_deep(&format!("b: {}{}\n", "[".repeat(32), "]".repeat(32))).is_none());
    }

    #[test]
    fn bcrypt_cost_is_bounded_at_load() {
        // The parts of a real hash, the cost changed: parsing needs no hashing.
        let h = bcrypt::hash("x", 4).unwrap();
        for (cost, ok) in [(10, true), (MAX_BCRYPT_COST, true), (15, false), (31, false)] {
            let hash = format!("$2y${cost:02}${}", &h[7..]);
            let r = parse(&format!("basic_auth_users:\n  prometheus: {hash}\n"));
            assert_eq!(r.is_ok(), ok, "cost {cost}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("line 2") && e.contains(&format!("bcrypt cost {cost} is above 14")), "{e}");
            }
        }
    }

    /// Guesses from one client, however many at once, hold up another
    /// client's check by at most one check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guesses_from_one_client_do_not_queue_another() {
        let hash = bcrypt::hash("s3cret", 8).unwrap();
        let auth =
            Arc::new(BasicAuth::new([("p".to_string(), hash)].into(), &|_: &str, m: &str| m.to_string()).unwrap());
        let hdr = |p: &str| {
            HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("p:{p}"))
            ))
            .unwrap()
        };
        let t0 = std::time::Instant::now();
        assert!(!auth.check(Some(&hdr("wrong")), LOCAL).await);
        let one = t0.elapsed();
        let guesser: std::net::IpAddr = "127.0.0.9".parse().unwrap();
        let guess = |n: usize| -> Vec<_> {
            (0..n)
                .map(|i| {
                    let (auth, h) = (auth.clone(), hdr(&format!("guess{i}")));
                    tokio::spawn(async move { auth.check(Some(&h), guesser).await })
                })
                .collect()
        };
        let guesses = guess(40);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let t0 = std::time::Instant::now();
        assert!(auth.check(Some(&hdr("s3cret")), LOCAL).await);
        let took = t0.elapsed();
        assert!(took < one * 4, "the right password took {took:?} behind 40 guesses (one check: {one:?})");
        for g in guesses {
            assert!(!g.await.unwrap());
        }
        // Checks cancelled while they wait or run (a client that hangs up)
        // leave no address behind once their bcrypt runs end.
        let gone = guess(5);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        gone.iter().for_each(|g| g.abort());
        let t0 = std::time::Instant::now();
        while !auth.per_client.lock().unwrap().is_empty() && t0.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(auth.per_client.lock().unwrap().is_empty(), "cancelled checks left their address in the map");
    }
}
