//! The HTTP endpoint: `/metrics` (format chosen by Accept), the score as
//! JSON (`explain`) and a landing page.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, TRANSFER_ENCODING, VARY, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::gather::Exporter;
use super::negotiate::{accepts_gzip, negotiate};
use super::webconfig::WebConfig;

/// Answers one request (authorization already checked).
fn handle(ex: &Exporter, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let allow_get = |msg: &str| {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, msg);
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return allow_get("only GET and HEAD\n");
    }
    // GET and HEAD carry no body; a request that sends one is refused
    // unread (and the connection closed) rather than buffered.
    let has_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0));
    if has_body {
        let mut r = text(StatusCode::PAYLOAD_TOO_LARGE, "GET and HEAD requests take no body\n");
        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if path == ex.telemetry_path {
        let header = |h| req.headers().get(h).and_then(|v: &HeaderValue| v.to_str().ok());
        let t0 = Instant::now();
        return match ex.render(negotiate(header(ACCEPT))) {
            Ok((body, ct)) => {
                let plain = body.len();
                let gzipped = accepts_gzip(header(ACCEPT_ENCODING)).then(|| gzip(&body)).flatten();
                let gz = gzipped.is_some();
                tracing::debug!(bytes = plain, gzip = gz, micros = t0.elapsed().as_micros() as u64, "scrape");
                let mut r = Response::new(Full::new(Bytes::from(gzipped.unwrap_or(body))));
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
                h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
                if gz {
                    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "scrape failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, &format!("scrape failed: {e}\n"))
            }
        };
    }
    if path == super::explain::PATH {
        let view = match ex.model.read() {
            Ok(v) => v.clone(),
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "model state poisoned\n"),
        };
        let doc = super::explain::document(view.as_ref(), &ex.info.nodename, std::time::SystemTime::now());
        let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        body.push(b'\n');
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    if path == "/" {
        let page = match ex.families() {
            Ok(fams) => super::landing::page(ex, &fams),
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("reading the probes failed: {e}\n")),
        };
        let mut r = Response::new(Full::new(Bytes::from(page)));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        return r;
    }
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// The level /metrics replies are gzipped at, the fastest: 200 workloads'
/// text (192-197 kB) shrinks 9.2-9.3 times in 0.13-0.17 ms; the default level,
/// 15 times in 0.9-1.1 ms (bench/README.md, "Compression").
pub const GZIP_LEVEL: flate2::Compression = flate2::Compression::fast();

/// `body` gzipped at [`GZIP_LEVEL`], as /metrics replies when the scraper
/// accepts it. None if the encoder fails (the reply then goes out plain).
pub fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    gzip_at(body, GZIP_LEVEL)
}

/// `body` gzipped at `level` (the cost bench compares levels with it).
pub fn gzip_at(body: &[u8], level: flate2::Compression) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
    e.write_all(body).ok()?;
    e.finish().ok()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Limits that keep one client from holding the server (see docs/security.md).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 64;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// When every slot is taken, a connection idle (no request in progress) for
/// at least this long gives way to a new one. A client sends its request as
/// soon as it has connected; one that has sent nothing for this long is not
/// about to.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);
/// File descriptors ksense needs besides its connections: BPF maps and
/// programs, the listener, logs, state and cgroup reads.
pub const FD_RESERVE: u64 = 64;
/// While accept keeps failing, one warning per this long, with the count.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(60);

/// A soft open-file limit below the connection cap means accept will fail
/// under load (EMFILE): say so once at start rather than by a flood later.
fn warn_if_few_fds(max_connections: usize) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return;
    }
    let need = max_connections as u64 + FD_RESERVE;
    if r.rlim_cur != libc::RLIM_INFINITY && r.rlim_cur < need {
        tracing::warn!(
            limit = r.rlim_cur,
            max_connections,
            needed = need,
            "open-file limit (ulimit -n) is below --web.max-connections plus {FD_RESERVE}: connections beyond it fail to be accepted; raise the limit or lower --web.max-connections"
        );
    }
}

/// Accept failures logged as runs, not one line each: a warning with the
/// count at most once per [`ACCEPT_WARN_EVERY`], and as often a line that
/// accepting works again (the limit holds while accepting flaps, as it does
/// when idle connections time out one by one).
#[derive(Default)]
struct AcceptErrors {
    since_warn: u64,
    in_run: u64,
    last_warn: Option<Instant>,
    last_recovery: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) {
        self.since_warn += 1;
        self.in_run += 1;
        if self.last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
            tracing::warn!(error = %e, failures = self.since_warn, "accept failed");
            self.last_warn = Some(Instant::now());
            self.since_warn = 0;
        }
    }

    fn recovered(&mut self) {
        if self.in_run > 0 {
            if self.last_recovery.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                tracing::info!(failures = self.in_run, "accepting connections again");
                self.last_recovery = Some(Instant::now());
            }
            self.in_run = 0;
        }
    }
}

/// The web configuration in force: replaced whole on SIGHUP, read once per
/// connection (a connection keeps the TLS and users it started with).
pub type SharedWeb = Arc<std::sync::RwLock<Arc<WebConfig>>>;

/// How the endpoint is served: TLS and basic auth (`--web.config.file`) and
/// the connection cap (`--web.max-connections`).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub web: SharedWeb,
    pub max_connections: usize,
}

/// The open connections, and which of them could give way to a new one: a
/// connection is idle from accept until its first request head is complete
/// (a TLS handshake, a slow or empty head) and again between keep-alive
/// requests.
#[derive(Default)]
struct Conns {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
}

struct Conn {
    /// A request is being answered; never evicted then.
    busy: std::sync::atomic::AtomicBool,
    idle_since: std::sync::Mutex<Instant>,
    evicted: std::sync::atomic::AtomicBool,
    evict: tokio::sync::Notify,
}

impl Conns {
    fn add(self: &Arc<Self>) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let c = Arc::new(Conn {
            busy: false.into(),
            idle_since: std::sync::Mutex::new(Instant::now()),
            evicted: false.into(),
            evict: tokio::sync::Notify::new(),
        });
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, c.clone());
        (id, c)
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Tells the connection idle the longest, if for at least [`IDLE_GRACE`],
    /// to close; false if there is none.
    fn evict_idlest(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let since = |c: &Arc<Conn>| *c.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .values()
            .filter(|c| !c.busy.load(SeqCst) && !c.evicted.load(SeqCst) && since(c).elapsed() >= IDLE_GRACE)
            .min_by_key(|c| since(c));
        match idlest {
            Some(c) => {
                c.evicted.store(true, SeqCst);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish
/// (bounded by [`SHUTDOWN_GRACE`]).
///
/// At most `max_connections` connections are served at once. When every slot
/// is taken and a new connection arrives, the connection idle the longest (no
/// request in progress: before its first complete request head, during a TLS
/// handshake, or between keep-alive requests) is closed to make room, so
/// clients that connect and send nothing cannot keep Prometheus out. When no
/// connection is idle the new one waits until one closes. Responses carry
/// `Connection: close` while every slot is taken, and an idle connection is
/// closed after the header timeout anyway.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let conns = Arc::new(Conns::default());
    let shared = opts.web;
    warn_if_few_fds(opts.max_connections);
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok((s, peer)) => {
                accept_errors.recovered();
                (s, peer.ip())
            }
            Err(e) => {
                // EMFILE and friends: make room if an idle connection can
                // give way, and back off instead of spinning.
                conns.evict_idlest();
                accept_errors.failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            // Every slot taken: wait for one, and meanwhile make one from a
            // connection idle long enough (checked again as they age).
            Err(_) => {
                let waited = loop {
                    let evicted = conns.evict_idlest();
                    if evicted {
                        tracing::debug!("every connection slot taken: the idlest connection gives way");
                    }
                    tokio::select! {
                        p = slots.clone().acquire_owned() => break Some(p.expect("the semaphore is never closed")),
                        // Again as connections age, or if the one chosen
                        // turned busy and is not closing.
                        _ = tokio::time::sleep(IDLE_GRACE / 5) => continue,
                        _ = &mut shutdown => break None,
                    }
                };
                match waited {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let (id, conn) = conns.add();
        // TLS is set at the handshake; users and headers are read per request,
        // so a SIGHUP that revokes a user also holds for open connections.
        let tls = shared.read().unwrap_or_else(|e| e.into_inner()).tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let (ex, slots, watcher, conns, web) =
            (exporter.clone(), slots.clone(), graceful.watcher(), conns.clone(), shared.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let c = conn.clone();
            let svc = hyper::service::service_fn(move |req| {
                let (ex, slots, c) = (ex.clone(), slots.clone(), c.clone());
                let web = web.read().unwrap_or_else(|e| e.into_inner()).clone();
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    c.busy.store(true, SeqCst);
                    let mut r = respond(&ex, &web, &slots, req, peer).await;
                    if c.evicted.load(SeqCst) {
                        // Chosen to give way just as this request arrived.
                        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    *c.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    c.busy.store(false, SeqCst);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS);
            let serve_one = async {
                let result = match tls {
                    None => watcher.watch(http.serve_connection(TokioIo::new(stream), svc)).await,
                    Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => watcher.watch(http.serve_connection(TokioIo::new(s), svc)).await,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection error");
                }
            };
            tokio::pin!(serve_one);
            loop {
                tokio::select! {
                    _ = &mut serve_one => break,
                    // Dropping the connection closes it; a request that began
                    // in the meantime is answered first (with Connection: close).
                    _ = conn.evict.notified() => {
                        if !conn.busy.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            }
            conns.remove(id);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight requests still running at shutdown; exiting anyway");
    }
    Ok(())
}

/// The listening socket. The unspecified IPv6 address (`:port`, `[::]:port`)
/// takes IPv4 too, whatever `net.ipv6.bindv6only` says, as a Go exporter's
/// `:port` does; on a kernel without IPv6, every IPv4 address instead.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED {
        match bind_dual_stack(addr) {
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                tracing::info!(error = %e, "no IPv6 here: listening on every IPv4 address");
                return std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            }
            r => return r,
        }
    }
    std::net::TcpListener::bind(addr)
}

fn bind_dual_stack(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?; // as std's bind: a restart binds at once
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Basic auth first (every path), then the request; the configured headers
/// on every response.
async fn respond(
    ex: &Exporter,
    web: &WebConfig,
    slots: &Semaphore,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Response<Full<Bytes>> {
    let authorized = match &web.auth {
        None => true,
        Some(a) => a.check(req.headers().get(AUTHORIZATION), peer).await,
    };
    let mut r = if authorized {
        // Here, on the runtime's one thread: on the blocking pool a scrape
        // took 15 % more CPU, with ten times the page faults (likely each
        // pool thread's own allocator arena) and a worse tail after pauses
        // (bench/README.md, "What bounds the cost", 2026-12-07). It waits
        // for no lock in the usual case: the model's interval keeps the
        // per-workload read fresh (`--workloads.max-age`).
        handle(ex, &req)
    } else {
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"ksense\""));
        r
    };
    for (k, v) in &web.headers {
        r.headers_mut().insert(k.clone(), v.clone());
    }
    if slots.available_permits() == 0 {
        r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[::]:port` (`:port`) takes IPv4 and IPv6 clients alike (the loopback of each).
    #[test]
    fn the_unspecified_address_listens_dual_stack() {
        let l = bind("[::]:0".parse().unwrap()).unwrap(); // what `:0` parses to
        let port = l.local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let ip: std::net::IpAddr = client.parse().unwrap();
            std::net::TcpStream::connect((ip, port)).unwrap_or_else(|e| panic!("{client}: {e}"));
        }
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        assert!(std::net::TcpStream::connect(("::1", port)).is_err(), "an IPv4 address takes IPv4 only");
    }
}
