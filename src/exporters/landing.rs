//! The landing page (`/`): what a person opening the port in a browser wants
//! to know (node, version, kernel, which probes are attached, how far
//! calibration is, the score), read from the same families a scrape serves.

use std::fmt::Write as _;
use std::time::Duration;

use super::gather::Exporter;
use crate::signals::metric::{Family, Value};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn gauge(fams: &[Family], name: &str) -> Option<f64> {
    let f = fams.iter().find(|f| f.name == name)?;
    match f.samples.first()?.value {
        Value::Gauge(v) | Value::Counter(v) => Some(v),
        Value::Histogram(_) => None,
    }
}

/// The features the baseline left out (`ksense_baseline_signal_samples`
/// under what a baseline of `samples` needs).
fn left_out(fams: &[Family], samples: f64) -> Vec<String> {
    let need = crate::model::measured_needed(samples as usize) as f64;
    fams.iter()
        .filter(|f| f.name == "ksense_baseline_signal_samples")
        .flat_map(|f| &f.samples)
        .filter(|s| matches!(s.value, Value::Gauge(v) if v < need))
        .filter_map(|s| s.labels.iter().find(|(k, _)| *k == "signal").map(|(_, v)| v.to_string()))
        .collect()
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The page, from the families of this moment.
pub fn page(ex: &Exporter, fams: &[Family]) -> String {
    let i = &ex.info;
    let up = ex.created.elapsed().unwrap_or_default();
    let mut p = String::with_capacity(4096);
    let _ = write!(
        p,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ksense on {node}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:50em}}td,th{{padding:.15em 1em .15em 0;text-align:left}}\
         .no{{color:#b00}}.ok{{color:#070}}</style></head><body>\
         <h1>ksense {version}</h1>\
         <p>Node-level kernel latency exporter: run-queue, D-state, softirq, TCP and request histograms \
         from eBPF, and friction, how far the node is from its calibrated baseline.</p>\
         <p><a href=\"{path}\">Metrics</a> ({path}); <a href=\"{score}\">the node's score and why</a> ({score}, JSON)</p>\
         <h2>This node</h2><table>\
         <tr><th>Node</th><td>{node}</td></tr><tr><th>Kernel</th><td>{kernel}</td></tr>\
         <tr><th>Attach mode</th><td>{attach}</td></tr><tr><th>Up</th><td>{up}</td></tr></table>",
        node = escape(&i.nodename),
        version = escape(i.version),
        path = escape(&ex.telemetry_path),
        score = super::explain::PATH,
        kernel = escape(&i.kernel),
        attach = escape(i.attach_mode),
        up = duration(up),
    );
    if let Some(f) = fams.iter().find(|f| f.name == "ksense_bpf_program_attached") {
        let attached = f.samples.iter().filter(|s| matches!(s.value, Value::Gauge(v) if v > 0.0)).count();
        let _ = write!(p, "<h2>Probes</h2><p>{attached} of {} BPF programs attached.</p><table>", f.samples.len());
        for s in &f.samples {
            let name = s.labels.iter().find(|(k, _)| *k == "program").map(|(_, v)| v.as_ref()).unwrap_or("?");
            let on = matches!(s.value, Value::Gauge(v) if v > 0.0);
            let (class, word) = if on { ("ok", "attached") } else { ("no", "not attached") };
            let _ = write!(p, "<tr><td>{}</td><td class=\"{class}\">{word}</td></tr>", escape(name));
        }
        p.push_str("</table>");
    }
    p.push_str("<h2>Model</h2>");
    match (gauge(fams, "ksense_baseline_ready"), gauge(fams, "ksense_baseline_samples")) {
        (Some(r), Some(n)) if r > 0.0 => {
            let _ = write!(p, "<p class=\"ok\">Baseline calibrated ({n} samples).</p>");
            let left = left_out(fams, n);
            if !left.is_empty() {
                let _ = write!(
                    p,
                    "<p>Left out of friction until the next calibration (no events in enough of its samples): {}.</p>",
                    escape(&left.join(", "))
                );
            }
        }
        (Some(_), Some(n)) => {
            let left = ex.model_warmup.saturating_sub(up);
            let _ = write!(
                p,
                "<p>Calibrating: {n} samples so far; the baseline freezes {} after start ({} left).</p>",
                duration(ex.model_warmup),
                duration(left)
            );
        }
        _ => p.push_str("<p>No model data yet.</p>"),
    }
    if let Some(f) = gauge(fams, "ksense_friction") {
        let dir = gauge(fams, "ksense_direction").map_or("", |d| {
            if d > 0.0 {
                ", worse than its baseline"
            } else if d < 0.0 {
                ", better than its baseline"
            } else {
                ", within its baseline's normal range"
            }
        });
        let _ = write!(p, "<p>Friction {f:.2}{dir}.</p>");
    }
    if let Some(f) = fams.iter().find(|f| f.name == "ksense_workloads") {
        let n = |state: &str| {
            f.samples.iter().find(|s| s.labels.iter().any(|(_, v)| v == state)).and_then(|s| match s.value {
                Value::Gauge(v) => Some(v),
                _ => None,
            })
        };
        let _ = write!(
            p,
            "<h2>Workloads</h2><p>{} tracked, {} with series of their own.</p>",
            n("tracked").unwrap_or(0.0),
            n("exported").unwrap_or(0.0)
        );
    }
    p.push_str("</body></html>\n");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("node-1.example"), "node-1.example");
    }

    #[test]
    fn left_out_features_are_those_under_what_the_baseline_needs() {
        use crate::signals::metric::Sample;
        let g =
            |signal: &'static str, v: f64| Sample { labels: vec![("signal", signal.into())], value: Value::Gauge(v) };
        let fams = vec![crate::signals::metric::family(
            "ksense_baseline_signal_samples",
            None,
            "",
            crate::signals::metric::Kind::Gauge,
            vec![g("runqueue_wakeup_p99", 300.0), g("tcp_rtt_p999", 9.0), g("softirq_net_rx_busy", 10.0)],
        )];
        assert_eq!(left_out(&fams, 300.0), ["tcp_rtt_p999"]);
        assert!(left_out(&fams, 12.0).is_empty(), "a 12-sample baseline needs 6");
        assert!(left_out(&[], 300.0).is_empty());
    }

    #[test]
    fn durations_read_as_a_person_would() {
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_secs(600)), "10m00s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 61)), "3h01m");
    }
}
