//! The exposition formats, served in-process from a fake source (no root, no
//! BPF): content negotiation (OpenMetrics, protobuf with native histograms)
//! and real Prometheus servers reading native and classic histograms.

mod common;

use std::time::Duration;

use common::inproc::InProcess;
use common::prometheus::Prometheus;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message;

#[test]
fn openmetrics_and_protobuf_negotiated() {
    let k = InProcess::start(&[]);
    let om = ureq::get(&k.url("/metrics"))
        .set("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        .call()
        .unwrap();
    assert!(om.content_type().starts_with("application/openmetrics-text"), "{}", om.content_type());
    let body = om.into_string().unwrap();
    assert!(body.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    assert!(body.contains("# UNIT ksense_runqueue_latency_seconds seconds"));

    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;q=0.3";
    let r = ureq::get(&k.url("/metrics")).set("Accept", accept).call().unwrap();
    assert!(r.header("content-type").unwrap().contains("proto=io.prometheus.client.MetricFamily"));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).unwrap();
    let mut buf = bytes.as_slice();
    let mut fams = Vec::new();
    while !buf.is_empty() {
        fams.push(pb::MetricFamily::decode_length_delimited(&mut buf).unwrap());
    }
    let rq = fams.iter().find(|f| f.name == "ksense_runqueue_latency_seconds").expect("runqueue family");
    let h = rq.metric[0].histogram.as_ref().unwrap();
    assert_eq!(h.schema, 2);
    assert!(h.zero_threshold > 0.0 && h.zero_threshold < 1e-6);
    assert!(h.sample_count > 0);
    // Native buckets (delta-encoded) add up to the count, zero bucket included.
    let (mut c, mut total) = (0i64, h.zero_count);
    for d in &h.positive_delta {
        c += d;
        assert!(c >= 0);
        total += c as u64;
    }
    assert_eq!(total, h.sample_count);
    assert_eq!(h.positive_span.iter().map(|s| s.length as usize).sum::<usize>(), h.positive_delta.len());
    // Classic buckets too, cumulative, ending at the count.
    assert_eq!(h.bucket.last().unwrap().cumulative_count, h.sample_count);
    let runs = fams.iter().find(|f| f.name == "ksense_bpf_program_runs_total").expect("counter family");
    assert_eq!(runs.r#type, pb::MetricType::Counter as i32);
}

/// One raw GET of /metrics with these request headers: (head, body bytes).
fn get_raw(port: u16, headers: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8_lossy(&all[..at]).to_lowercase(), all[at..].to_vec())
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).expect("a gzip stream");
    out
}

/// Gzip where the scraper accepts it (Prometheus asks on every scrape, so
/// the real-Prometheus tests read gzipped replies too), plain otherwise,
/// in every format; the gzipped text holds the same series.
#[test]
fn gzip_when_the_scraper_accepts_it() {
    let k = InProcess::start(&[]);
    let series = |text: &[u8]| -> Vec<String> {
        let mut v: Vec<String> = std::str::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
            .collect();
        v.sort();
        v
    };
    let (head, plain) = get_raw(k.port, "");
    assert!(!head.contains("content-encoding") && head.contains("vary: accept, accept-encoding"), "{head}");
    for ask in ["Accept-Encoding: gzip\r\n", "Accept-Encoding: deflate, gzip;q=0.5\r\n", "Accept-Encoding: *\r\n"] {
        let (head, body) = get_raw(k.port, ask);
        assert!(head.contains("content-encoding: gzip"), "{ask}: {head}");
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())), "{head}");
        let text = gunzip(&body);
        assert!(body.len() * 3 < text.len(), "{ask}: {} bytes gzipped of {}", body.len(), text.len());
        assert_eq!(series(&text), series(&plain), "{ask}: the same series as the plain reply");
    }
    for ask in ["Accept-Encoding: identity\r\n", "Accept-Encoding: gzip;q=0\r\n", "Accept-Encoding: br\r\n"] {
        let (head, body) = get_raw(k.port, ask);
        assert!(!head.contains("content-encoding"), "{ask}: {head}");
        assert!(std::str::from_utf8(&body).unwrap().contains("# TYPE ksense_build_info"), "{ask}");
    }
    // OpenMetrics and protobuf gzipped too.
    let om = "Accept: application/openmetrics-text;version=1.0.0\r\nAccept-Encoding: gzip\r\n";
    let (head, body) = get_raw(k.port, om);
    assert!(head.contains("content-type: application/openmetrics-text") && head.contains("content-encoding: gzip"));
    assert!(gunzip(&body).ends_with(b"# EOF\n"));
    let pb_accept = "Accept: application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited\r\nAccept-Encoding: gzip\r\n";
    let (head, body) = get_raw(k.port, pb_accept);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let bytes = gunzip(&body);
    let mut buf = bytes.as_slice();
    let mut names = Vec::new();
    while !buf.is_empty() {
        names.push(pb::MetricFamily::decode_length_delimited(&mut buf).unwrap().name);
    }
    assert!(names.iter().any(|n| n == "ksense_runqueue_latency_seconds"), "{names:?}");
    // HEAD: the same head, no body.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", k.port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = String::new();
    std::io::Read::read_to_string(&mut s, &mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200") && r.to_lowercase().contains("content-encoding: gzip"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r}");
}

#[test]
fn real_prometheus_reads_native_and_classic_histograms() {
    let k = InProcess::start(&[]);
    let native = Prometheus::start(k.port, true);
    let classic = Prometheus::start(k.port, false);
    let wait = Duration::from_secs(40);

    // Native: the series carries a histogram sample, and quantiles work on it.
    let r = native.query_until("ksense_runqueue_latency_seconds", wait);
    let h = &r[0]["histogram"][1];
    assert!(h["count"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{r}");
    assert!(h["buckets"].as_array().is_some_and(|b| !b.is_empty()), "{r}");
    let q = native.query_until("histogram_quantile(0.99, rate(ksense_runqueue_latency_seconds[5s]))", wait);
    let p99: f64 = q[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p99.is_finite() && p99 > 0.0 && p99 < 10.0, "native p99 {p99}");
    let sirq = native.query_until("count(ksense_softirq_duration_seconds)", wait);
    assert_eq!(sirq[0]["value"][1], "10");

    // Classic: le buckets, and the same quantile from them.
    let b = classic.query_until("ksense_runqueue_latency_seconds_bucket{le=\"+Inf\"}", wait);
    assert!(b[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
    let q = classic.query_until("histogram_quantile(0.99, rate(ksense_runqueue_latency_seconds_bucket[5s]))", wait);
    let p99c: f64 = q[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p99c.is_finite() && p99c > 0.0, "classic p99 {p99c}");
    let up = classic.query_until("up{job=\"ksense\"}", wait);
    assert_eq!(up[0]["value"][1], "1");
}

/// `ksense_scrape_series` is the number of series lines the text format
/// carries, itself included (what an operator alerts on), with the default
/// buckets and with others.
#[test]
fn scrape_series_counts_the_text_formats_series() {
    for extra in [&[][..], &["--web.classic-buckets", "0.001,0.01"][..]] {
        let k = InProcess::start(extra);
        let text = ureq::get(&k.url("/metrics")).call().unwrap().into_string().unwrap();
        let lines = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
        let served = common::sample(&text, "ksense_scrape_series").expect("ksense_scrape_series");
        assert_eq!(served, lines as f64, "{extra:?}");
    }
}
