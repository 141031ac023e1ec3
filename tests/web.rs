//! The HTTP side served in-process from a fake source (no root, no BPF):
//! TLS and basic auth (`--web.config.file`, checked with curl and a real
//! Prometheus), HTTP hygiene and the connection cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::inproc::InProcess;
use common::pki::Pki;

/// Writes a web config next to the certificates (relative names resolve there).
fn web_config(pki: &Pki, yaml: &str) -> String {
    let p = pki.path("web.yml");
    std::fs::write(&p, yaml).unwrap();
    p
}

/// curl's exit code and the HTTP status it got ("000" when none).
fn curl(args: &[&str]) -> (i32, String) {
    let o = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).to_string())
}

fn https(k: &InProcess, path: &str) -> String {
    format!("https://localhost:{}{path}", k.port)
}

fn start_tls(web: &str) -> InProcess {
    InProcess::start(&["--web.config.file", web])
}

/// Sends raw bytes, returns what came back before the server closed (or 15 s).
fn raw(port: u16, req: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn tls_and_basic_auth() {
    let pki = Pki::new();
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let web = web_config(&pki, &format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
    ));
    let k = start_tls(&web);
    let ca = pki.path("ca.crt");
    let url = https(&k, "/metrics");

    // Plain HTTP on the TLS port: no HTTP answer at all.
    let (rc, code) = curl(&[&k.url("/metrics")]);
    assert!(rc != 0 && code == "000", "plain HTTP must be refused: rc {rc}, status {code}");
    // A CA that did not sign the server certificate: the client refuses.
    let (rc, _) = curl(&["--cacert", &pki.path("other-ca.crt"), &url]);
    assert_eq!(rc, 60, "curl must reject a certificate from another CA");
    // TLS works; basic auth decides.
    assert_eq!(curl(&["--cacert", &ca, &url]).1, "401", "no credentials");
    assert_eq!(curl(&["--cacert", &ca, "-u", "prometheus:wrong", &url]).1, "401", "wrong password");
    assert_eq!(curl(&["--cacert", &ca, "-u", "nobody:s3cret", &url]).1, "401", "unknown user");
    assert_eq!(curl(&["--cacert", &ca, "-u", "prometheus:s3cret", &url]).1, "200");
    assert_eq!(curl(&["--cacert", &ca, "-u", "prometheus:wrong", &https(&k, "/")]).1, "401", "every path is protected");

    // The body, the configured header, and the cost of cached checks.
    let o =
        Command::new("curl").args(["-sS", "-i", "--cacert", &ca, "-u", "prometheus:s3cret", &url]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ksense_build_info{"), "{out}");
    assert!(out.to_lowercase().contains("strict-transport-security: max-age=31536000"), "{out}");
    let t0 = Instant::now();
    for _ in 0..10 {
        assert_eq!(curl(&["--cacert", &ca, "-u", "prometheus:s3cret", &url]).1, "200");
    }
    let per = t0.elapsed() / 10;
    assert!(per < Duration::from_millis(200), "cached basic auth: {per:?} per scrape (curl start-up included)");
    let (exit, log) = k.stop();
    assert!(exit.success(), "{exit}: {log}");
}

#[test]
fn tls_client_certificates() {
    let pki = Pki::new();
    let ca = pki.path("ca.crt");
    let none: [&str; 0] = [];
    let client = ["--cert", &pki.path("client.crt"), "--key", &pki.path("client.key")];
    let intruder = ["--cert", &pki.path("intruder.crt"), "--key", &pki.path("intruder.key")];
    // client_auth_type, client_ca_file, then the status with no client
    // certificate, one from another CA, one from the client CA ("000": the
    // handshake failed).
    for (auth, ca_file, want) in [
        ("RequireAndVerifyClientCert", true, ["000", "000", "200"]),
        ("VerifyClientCertIfGiven", true, ["200", "000", "200"]),
        ("RequireAnyClientCert", false, ["000", "200", "200"]),
        ("RequestClientCert", false, ["200", "200", "200"]),
    ] {
        let ca_line = if ca_file { "  client_ca_file: client-ca.crt\n" } else { "" };
        let web = web_config(&pki, &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {auth}\n{ca_line}"));
        let k = start_tls(&web);
        let url = https(&k, "/metrics");
        for (certs, want, what) in [
            (&none[..], want[0], "no client certificate"),
            (&intruder[..], want[1], "another CA"),
            (&client[..], want[2], "the client CA"),
        ] {
            let mut args = vec!["--cacert", ca.as_str()];
            args.extend(certs.iter().copied());
            args.push(&url);
            assert_eq!(curl(&args).1, want, "{auth}, {what}");
        }
    }
}

#[test]
fn tls_min_version_tls13_refuses_a_tls12_client() {
    let pki = Pki::new();
    let ca = pki.path("ca.crt");
    let web =
        web_config(&pki, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n");
    let k = start_tls(&web);
    let url = https(&k, "/metrics");
    let (rc, code) = curl(&["--cacert", &ca, "--tls-max", "1.2", &url]);
    assert!(rc != 0 && code == "000", "a TLS 1.2-only client must fail: rc {rc} status {code}");
    assert_eq!(curl(&["--cacert", &ca, "--tlsv1.3", &url]).1, "200");
    drop(k);
    // The default (TLS12) takes a TLS 1.2 client.
    let web = web_config(&pki, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let k = start_tls(&web);
    assert_eq!(curl(&["--cacert", &ca, "--tls-max", "1.2", &https(&k, "/metrics")]).1, "200");
}

/// Prometheus 2.42 scrapes ksense over TLS with basic auth: `up` is 1 and
/// ksense's series arrive.
#[test]
fn real_prometheus_scrapes_over_tls_with_basic_auth() {
    let pki = Pki::new();
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let web = web_config(&pki, &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"));
    let k = start_tls(&web);
    let prom_port = common::free_port();
    let cfg = pki.path("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ksense\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            pki.path("ca.crt"),
            k.port
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut prom = Command::new("prometheus")
        .args([
            "--config.file",
            &cfg,
            "--storage.tsdb.path",
            data.path().to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{prom_port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (apt-get install prometheus)");
    let query = |q: &str| -> Option<String> {
        let r = ureq::get(&format!("http://127.0.0.1:{prom_port}/api/v1/query")).query("query", q).call().ok()?;
        r.into_string().ok()
    };
    let t0 = Instant::now();
    let mut last = String::new();
    let ok = loop {
        if let Some(body) = query("up{job=\"ksense\"} == 1 and on() count(ksense_build_info) == 1") {
            if body.contains("\"value\"") {
                break true;
            }
            last = body;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(ok, "Prometheus never scraped ksense over TLS with basic auth: {last}");
}

#[test]
fn http_hygiene() {
    let k = InProcess::start(&[]);
    // Slowloris: half a request head, then nothing. The server closes the
    // connection after the header timeout (10 s) without answering.
    let mut s = TcpStream::connect(("127.0.0.1", k.port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf);
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(13), "closed after {took:?} ({n:?})");
    // Meanwhile, and after, scrapes are served.
    assert!(k.scrape().contains("ksense_build_info"));

    // A request head over 8 KiB: 431.
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let r = raw(k.port, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Too many headers: 431 as well.
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(k.port, format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Only GET and HEAD, with an Allow header; nothing changes state.
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = raw(
            k.port,
            format!("{m} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 405") && r.to_lowercase().contains("allow: get, head"), "{m}: {r}");
    }
    // A GET with a body is refused unread.
    let r = raw(
        k.port,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{}", "x".repeat(100)).as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // HEAD: headers only.
    let r = raw(k.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && !r.contains("ksense_build_info"), "{r}");
    // 404 elsewhere, the landing page at /.
    let r = raw(k.port, b"GET /debug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let (exit, log) = k.stop();
    assert!(exit.success(), "{exit}: {log}");
}

/// Over the cap, a connection idle past the grace gives way to a new one;
/// connections that are not idle wait and are all served.
#[test]
fn connections_over_the_cap_wait_and_are_served() {
    let k = InProcess::start(&["--web.max-connections", "4"]);
    // 4 idle connections take every slot, the first one idle the longest...
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(("127.0.0.1", k.port)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    // ...so a fifth is served at once, and the idlest, idle for over the
    // grace of 500 ms, gives way for it.
    let t0 = Instant::now();
    let port = k.port;
    let r = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(1), "served after {:?}", t0.elapsed());
    let open: Vec<bool> = idle
        .iter_mut()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            !matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .collect();
    assert_eq!(open, [false, true, true, true], "the oldest idle connection, and only it, was closed");
    drop(idle);
    // Many clients at once with a small cap: every request answered.
    let hs: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5).all(|_| {
                    raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .starts_with("HTTP/1.1 200")
                })
            })
        })
        .collect();
    assert!(hs.into_iter().all(|h| h.join().unwrap()));
}

/// `ksense_node_info{nodename}` names the node whatever the scrape config
/// labels: K8S_NODE_NAME where the DaemonSet sets it, else the host name.
#[test]
fn node_info_names_the_node() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    for (env, want) in [
        (vec![("K8S_NODE_NAME", "worker-7")], "worker-7"),
        (vec![("K8S_NODE_NAME", "")], &host[..]),
        (vec![], &host[..]),
    ] {
        let k = InProcess::start_with_env(&[], &env);
        let body = k.scrape();
        let lines: Vec<&str> = body.lines().filter(|l| l.starts_with("ksense_node_info")).collect();
        assert_eq!(lines, [format!("ksense_node_info{{nodename=\"{want}\"}} 1")], "{env:?}");
        let (exit, log) = k.stop();
        assert!(exit.success(), "{exit}: {log}");
    }
}

/// `/api/v1/score` while calibrating: JSON naming the node, no score yet,
/// the calibration's progress; a write is refused like on /metrics.
#[test]
fn score_endpoint_while_calibrating() {
    let k = InProcess::start_with_env(&[], &[("K8S_NODE_NAME", "worker-3")]);
    let r = ureq::get(&k.url("/api/v1/score")).call().unwrap();
    assert_eq!(r.content_type(), "application/json");
    let d: serde_json::Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(d["node"], "worker-3", "{d}");
    assert!(d["score"].is_null(), "{d}");
    assert!(d["state"] == "calibrating" || d["state"] == "starting", "{d}");
    assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()), "{d}");
    assert_eq!(ureq::post(&k.url("/api/v1/score")).call().unwrap_err().into_response().unwrap().status(), 405);
}

/// `ksense recalibrate` typed while a server runs (in a pod: `kubectl exec`):
/// the server, which owns the state file, deletes its saved baseline at its
/// next interval and calibrates anew, then saves the new one.
#[test]
fn a_running_server_recalibrates_when_asked() {
    let k = InProcess::start(&["--model.warmup", "2s", "--model.baseline-window", "2s", "--model.interval", "200ms"]);
    let state = k.dir.path().join("baseline.json");
    // What the binary's main holds while it serves (the in-process server has no main).
    let _lock = ksense::model::lock(&state, Duration::ZERO).unwrap().unwrap();
    let ready = |k: &InProcess| k.scrape().lines().any(|l| l == "ksense_baseline_ready 1");
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(20), "{what} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("calibrated and saved", &|| ready(&k) && state.exists());
    let o = Command::new(env!("CARGO_BIN_EXE_ksense"))
        .args(["recalibrate", "--model.state-file", state.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("asked it"), "{out} {}", String::from_utf8_lossy(&o.stderr));
    wait("calibrating again, the saved baseline gone", &|| !ready(&k) && !state.exists());
    wait("calibrated and saved again", &|| ready(&k) && state.exists());
    assert!(!k.dir.path().join("baseline.json.recalibrate").exists(), "the request was taken");
}

/// The landing page says what a person opening the port wants: version,
/// node, kernel, the probes, calibration, and where the metrics are.
#[test]
fn landing_page_tells_a_person_what_runs() {
    let k = InProcess::start_with_env(
        &["--web.telemetry-path", "/m", "--model.warmup", "10m"],
        &[("K8S_NODE_NAME", "<b>n1</b>")],
    );
    // The model publishes once its state file has been looked at (off the
    // serving thread): until then the page says there is no model data.
    let t0 = Instant::now();
    let page = loop {
        let r = ureq::get(&k.url("/")).call().unwrap();
        assert!(r.content_type() == "text/html", "{}", r.content_type());
        let page = r.into_string().unwrap();
        if page.contains("Calibrating") || t0.elapsed() > Duration::from_secs(5) {
            break page;
        }
        assert!(page.contains("No model data yet"), "{page}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for want in [
        concat!("<h1>ksense ", env!("CARGO_PKG_VERSION"), "</h1>"),
        "<a href=\"/m\">Metrics</a>",
        "&lt;b&gt;n1&lt;/b&gt;",
        "Kernel",
        "Calibrating: ",
        "the baseline freezes 10m00s after start",
    ] {
        assert!(page.contains(want), "landing page lacks {want:?}: {page}");
    }
    assert!(!page.contains("<b>n1</b>"), "the node name must be escaped: {page}");
    let (exit, log) = k.stop();
    assert!(exit.success(), "{exit}: {log}");
}

/// Clients that connect and send nothing cannot keep Prometheus out: with
/// every slot held by idle connections, reopened as soon as they are closed,
/// each scrape is still answered at once (before, each waited for a header
/// timeout and most never got a slot).
#[test]
fn idle_connections_give_way_to_scrapes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    fn closed_by_peer(s: &TcpStream) -> bool {
        match s.peek(&mut [0u8; 1]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
    let cap = 20;
    let k = InProcess::start(&["--web.max-connections", &cap.to_string()]);
    let addr = k.url("/").trim_start_matches("http://").trim_end_matches('/').to_string();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut held: Vec<TcpStream> = Vec::new();
            let mut opened = 0u32;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Keep 4x the cap open; replace every one the server closed.
                held.retain(|s| !closed_by_peer(s));
                while held.len() < 4 * cap {
                    match TcpStream::connect(&addr) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            held.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = ureq::get(&k.url("/metrics")).timeout(Duration::from_secs(5)).call();
        assert!(r.is_ok_and(|r| r.status() == 200), "a scrape was kept out by idle connections");
        slowest = slowest.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = attacker.join().unwrap();
    eprintln!("3 scrapes among {opened} idle connections ({cap} slots): slowest {slowest:?}");
    assert!(opened as usize > 4 * cap, "the server closed idle connections to make room ({opened} opened)");
    // Bounded by the connections queued ahead of it over the cap, times the
    // idle grace (here 60 / 20 x 0.5 s); far below Prometheus' 10 s timeout.
    assert!(slowest < Duration::from_secs(4), "slowest scrape {slowest:?}");
    let (exit, log) = k.stop();
    assert!(exit.success(), "{exit}: {log}");
}

/// The robustness suite for the HTTP request head: random heads from valid
/// and broken pieces (methods, paths, versions, malformed and oversized
/// headers, bodies, NUL and bare LF, pipelining). Each gets a well-formed
/// status line or a closed connection, never a hang or a crash, and a
/// normal scrape works after them all.
#[test]
fn request_head_fuzz() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    const PIECES: &[&str] = &[
        "GET /metrics HTTP/1.1\r\n",
        "GET / HTTP/1.0\r\n",
        "HEAD /metrics HTTP/1.1\r\n",
        "POST /metrics HTTP/1.1\r\n",
        "GET /metrics?x=1 HTTP/1.1\r\n",
        "GET //metrics HTTP/1.1\r\n",
        "GET /%2e%2e/metrics HTTP/1.1\r\n",
        "GET * HTTP/1.1\r\n",
        "GET http://x/metrics HTTP/1.1\r\n",
        "BREW /pot HTCPCP/1.0\r\n",
        "GET /metrics HTTP/9.9\r\n",
        "GET /metrics\r\n",
        "Host: x\r\n",
        "Host: x\r\nHost: y\r\n",
        "Content-Length: 5\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 99999999999999999999\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Accept: application/openmetrics-text\r\n",
        "Accept: */*;q=x\r\n",
        "Connection: keep-alive\r\n",
        "Authorization: Basic !!!\r\n",
        "X: \0\r\n",
        "no-colon\r\n",
        " leading-space: v\r\n",
        "X: v\n",
        "\r\n",
        "\n",
        "0\r\n\r\n",
        "hello",
        "\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let k = InProcess::start(&[]);
    let port = k.port;
    let piece = prop_oneof![
        8 => proptest::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (1usize..20_000).prop_map(|n| format!("X-Long: {}\r\n", "a".repeat(n)).into_bytes()),
    ];
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    runner
        .run(&proptest::collection::vec(piece, 1..10), |pieces| {
            let head: Vec<u8> = pieces.concat();
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(&head);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = Vec::new();
            let t0 = Instant::now();
            let _ = s.read_to_end(&mut out);
            prop_assert!(t0.elapsed() < Duration::from_secs(3), "no answer and no close within 3 s");
            let text = String::from_utf8_lossy(&out);
            for resp in text.split("HTTP/1.1 ").skip(1) {
                prop_assert!(resp.len() >= 3 && resp[..3].bytes().all(|b| b.is_ascii_digit()), "{text}");
            }
            prop_assert!(out.is_empty() || text.starts_with("HTTP/1."), "{text}");
            Ok(())
        })
        .unwrap();
    assert!(k.scrape().contains("ksense_build_info"));
    let (exit, log) = k.stop();
    assert!(exit.success() && !log.contains("panicked"), "{exit}: {log}");
}
