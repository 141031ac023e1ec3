//! The QoS benchmark's ground truth: the client P99 that bench/qos/rate.lua
//! reads out of wrk. wrk corrects its histogram for coordinated omission before
//! its Lua sees it; rate.lua undoes the correction (`p_raw`). Checked here
//! against a server that knows exactly which of its responses it held back.
//! Needs wrk (a test dependency), not root.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One response in HELD_EVERY is held back HOLD: 1 in 400 (0.25 %) is above
/// the 99th percentile and below the 99.9th.
const HELD_EVERY: u64 = 400;
const HOLD: Duration = Duration::from_millis(40);

/// A keep-alive HTTP/1.1 server, a thread per connection, that counts its
/// requests and holds back every HELD_EVERY-th.
fn serve(listener: TcpListener, served: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut c) = conn else { continue };
        let served = served.clone();
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // a request ends at its blank line; wrk's GETs have no body
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    if served.fetch_add(1, Ordering::Relaxed) % HELD_EVERY == HELD_EVERY - 1 {
                        std::thread::sleep(HOLD);
                    }
                    if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}

fn have_wrk() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

#[test]
fn rate_lua_undoes_wrks_coordinated_omission_correction() {
    if !have_wrk() {
        if common::in_ci() {
            panic!("wrk is a test dependency (scripts/install-deps.sh --test) and CI is set: not skipping");
        }
        eprintln!("SKIPPED: needs wrk (apt-get install wrk)");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (served, stop) = (served.clone(), stop.clone());
        std::thread::spawn(move || serve(listener, served, stop))
    };

    // wrk's own closed loop, as the benchmark's "closed" regime runs it
    let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/qos/rate.lua");
    let out = Command::new("wrk")
        .args(["-t1", "-c4", "-d3s", "--timeout", "5s", "-s", lua, &format!("http://127.0.0.1:{port}/")])
        .env("QOS_DELAY_MS", "0")
        .env("QOS_DYN_EVERY", "0")
        .env("QOS_CONNECTIONS", "4")
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(("127.0.0.1", port)); // wakes the accept loop
    server.join().unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("QOS "))
        .unwrap_or_else(|| panic!("no QOS line from wrk: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let q: serde_json::Value = serde_json::from_str(line).unwrap();
    eprintln!("wrk: {line}; the server answered {} requests", served.load(Ordering::Relaxed));
    let requests = q["requests"].as_u64().unwrap();
    let served = served.load(Ordering::Relaxed);
    // wrk counts the responses it read; the server also answered (or held)
    // the last request of each connection, cut off at the end
    assert!(requests >= 2 * HELD_EVERY, "too few requests for the percentiles to mean anything: {q}");
    assert!(served.abs_diff(requests) <= 4, "server {served} requests, wrk {requests}: {q}");

    assert!(q["p_raw"].is_object(), "rate.lua could not read wrk's histogram: {q}");
    // every request wrk timed is in the uncorrected histogram once
    assert_eq!(q["raw_samples"].as_u64(), Some(requests), "{q}");
    let raw = |p: &str| q["p_raw"][p].as_f64().unwrap();
    let reported = |p: &str| q["p"][p].as_f64().unwrap();
    let hold_us = HOLD.as_micros() as f64;
    // 0.25 % of the requests took >= HOLD: above the P99.9, not the P99
    assert!(raw("99") < hold_us / 4.0, "the held responses reached the measured P99: {q}");
    assert!(raw("99.9") >= hold_us, "the held responses are missing from the measured P99.9: {q}");
    // wrk's correction adds samples below each held response, at its interval
    // (~4 connections / tens of thousands of requests a second): its P99 is
    // well into them
    assert!(reported("99") > 4.0 * raw("99"), "wrk's reported P99 is not corrected as expected: {q}");
}
