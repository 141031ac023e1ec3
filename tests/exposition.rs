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
