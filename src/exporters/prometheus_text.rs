//! Prometheus text format 0.0.4 (what curl and older scrapers get).

use std::fmt::Write;

use crate::signals::metric::{Classic, Family, Kind, Value};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Formats a float as Go's strconv.FormatFloat(v, 'g', -1, 64), as every Go
/// exporter does, so `le` label values match theirs.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{v:e}"); // shortest round-trip digits, e.g. "-9.5367431640625e-7"
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    // Go's shortest 'g' form switches to an exponent outside [-4, 6).
    if !(-4..6).contains(&exp) {
        return format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let point = exp + 1; // digits before the decimal point
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if point <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-point) as usize));
        s.push_str(&digits);
    } else if point as usize >= digits.len() {
        s.push_str(&digits);
        s.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        s.push_str(&digits[..point as usize]);
        s.push('.');
        s.push_str(&digits[point as usize..]);
    }
    s
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `k="v",k2="v2"`, escaped, without braces.
fn label_pairs(out: &mut String, ls: &[(&str, std::borrow::Cow<'_, str>)]) {
    for (i, (k, v)) in ls.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label(v, out);
        out.push('"');
    }
}

/// `{k="v",...}`, or nothing without labels.
fn labels(out: &mut String, ls: &[(&str, std::borrow::Cow<'_, str>)]) {
    if !ls.is_empty() {
        out.push('{');
        label_pairs(out, ls);
        out.push('}');
    }
}

/// Encodes the families; classic buckets at the native indices of each family's set.
pub fn encode(families: &[Family], classic: &Classic, out: &mut String) {
    let mut le_cache: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    for f in families {
        if f.samples.is_empty() {
            continue;
        }
        let name = f.prometheus_name();
        let _ = write!(out, "# HELP {name} ");
        escape_help(f.help, out);
        let ty = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "\n# TYPE {name} {ty}");
        for s in &f.samples {
            match &s.value {
                Value::Gauge(v) | Value::Counter(v) => {
                    out.push_str(&name);
                    labels(out, &s.labels);
                    let _ = writeln!(out, " {}", go_float(*v));
                }
                Value::Histogram(h) => {
                    // The labels once per series, the `le` strings once per
                    // scrape: with many workloads, formatting was the scrape's cost.
                    let mut pairs = String::new();
                    label_pairs(&mut pairs, &s.labels);
                    let mut cum = 0u64;
                    for (le, c) in h.classic(classic.of(f.buckets)) {
                        cum += c;
                        out.push_str(&name);
                        out.push_str("_bucket{");
                        out.push_str(&pairs);
                        if !pairs.is_empty() {
                            out.push(',');
                        }
                        out.push_str("le=\"");
                        out.push_str(le_cache.entry(le.to_bits()).or_insert_with(|| go_float(le)));
                        let _ = writeln!(out, "\"}} {cum}");
                    }
                    let ls = if pairs.is_empty() { pairs } else { format!("{{{pairs}}}") };
                    let _ = writeln!(out, "{name}_sum{ls} {}", go_float(h.sum_seconds()));
                    let _ = writeln!(out, "{name}_count{ls} {cum}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn formats_like_go() {
        for (v, s) in [
            (1.0, "1"),
            (0.25, "0.25"),
            (16.0, "16"),
            (0.0009765625, "0.0009765625"),
            (9.5367431640625e-07, "9.5367431640625e-07"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1.6654258176e10, "1.6654258176e+10"),
            (-0.5, "-0.5"),
            (1e21, "1e+21"),
            (123.456, "123.456"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
    }
}
