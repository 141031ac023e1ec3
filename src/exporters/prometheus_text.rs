//! Prometheus text format 0.0.4 (what curl and older scrapers get).

use std::fmt::Write;

use crate::signals::buckets;
use crate::signals::metric::{BucketSet, Classic, Family, Kind, Value};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Formats a float as Go's strconv.FormatFloat(v, 'g', -1, 64), as every Go
/// exporter does, so `le` label values match theirs.
pub fn go_float(v: f64) -> String {
    let mut s = String::new();
    push_go_float(&mut s, v);
    s
}

/// [`go_float`], appended to `out`: a scrape formats thousands of them.
fn push_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        return out.push_str("NaN");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    if v == 0.0 {
        return out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
    }
    // Integers print as such below Go's switch to an exponent (1e6).
    if v.fract() == 0.0 && v.abs() < 1e6 {
        return push_u64_signed(out, v as i64);
    }
    let mut e = String::with_capacity(32);
    let _ = write!(e, "{v:e}"); // shortest round-trip digits, e.g. "-9.5367431640625e-7"
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    // Go's shortest 'g' form switches to an exponent outside [-4, 6).
    if !(-4..6).contains(&exp) {
        let _ = write!(out, "{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        return;
    }
    let neg = mant.starts_with('-');
    let digits = mant.bytes().filter(u8::is_ascii_digit);
    let ndigits = digits.clone().count();
    let point = exp + 1; // digits before the decimal point
    if neg {
        out.push('-');
    }
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.extend(digits.map(char::from));
    } else if point as usize >= ndigits {
        out.extend(digits.map(char::from));
        out.extend(std::iter::repeat_n('0', point as usize - ndigits));
    } else {
        for (i, d) in digits.enumerate() {
            if i == point as usize {
                out.push('.');
            }
            out.push(char::from(d));
        }
    }
}

/// An integer, without the formatting machinery.
fn push_u64_signed(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Nanoseconds as seconds, exactly: the integer part, then up to nine
/// fraction digits without trailing zeros. A histogram's `_sum` is a sample
/// value, not a label, so any float text Prometheus parses will do; this one
/// skips the shortest-digits search (6 % of a scrape with 200 workloads)
/// and is the exact sum rather than its nearest f64.
fn push_ns_as_seconds(out: &mut String, ns: u64) {
    push_u64(out, ns / 1_000_000_000);
    let mut frac = ns % 1_000_000_000;
    if frac == 0 {
        return;
    }
    let mut width = 9;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    out.push('.');
    let mut buf = [b'0'; 9];
    for i in (0..width).rev() {
        buf[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.push_str(std::str::from_utf8(&buf[..width]).expect("ASCII digits"));
}

fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
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
    // Each set's `le` strings once per scrape, +Inf last.
    let les = |set| -> Vec<String> {
        classic
            .of(set)
            .iter()
            .map(|&i| go_float(buckets::upper_bound_seconds(i)))
            .chain([go_float(f64::INFINITY)])
            .collect()
    };
    let (node_les, workload_les) = (les(BucketSet::Node), les(BucketSet::Workload));
    let mut counts = Vec::new();
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
        let mut pairs = String::new();
        for s in &f.samples {
            match &s.value {
                Value::Gauge(v) | Value::Counter(v) => {
                    out.push_str(&name);
                    labels(out, &s.labels);
                    out.push(' ');
                    push_go_float(out, *v);
                    out.push('\n');
                }
                Value::Histogram(h) => {
                    // The labels once per series, the `le` strings once per
                    // scrape: with many workloads, formatting was the scrape's cost.
                    pairs.clear();
                    label_pairs(&mut pairs, &s.labels);
                    let mut cum = 0u64;
                    classic.counts(f.buckets, h, &mut counts);
                    let les = match f.buckets {
                        BucketSet::Node => &node_les,
                        BucketSet::Workload => &workload_les,
                    };
                    for (le, c) in les.iter().zip(&counts) {
                        cum += c;
                        out.push_str(&name);
                        out.push_str("_bucket{");
                        out.push_str(&pairs);
                        if !pairs.is_empty() {
                            out.push(',');
                        }
                        out.push_str("le=\"");
                        out.push_str(le);
                        out.push_str("\"} ");
                        push_u64(out, cum);
                        out.push('\n');
                    }
                    for (suffix, value) in [("_sum", None), ("_count", Some(cum))] {
                        out.push_str(&name);
                        out.push_str(suffix);
                        if !pairs.is_empty() {
                            out.push('{');
                            out.push_str(&pairs);
                            out.push('}');
                        }
                        out.push(' ');
                        match value {
                            Some(n) => push_u64(out, n),
                            None => push_ns_as_seconds(out, h.sum_ns),
                        }
                        out.push('\n');
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{go_float, push_ns_as_seconds};

    #[test]
    fn nanoseconds_print_as_exact_seconds() {
        for (ns, s) in [
            (0, "0"),
            (1, "0.000000001"),
            (5_304_006, "0.005304006"),
            (1_000_000_000, "1"),
            (1_500_000_000, "1.5"),
            (1_234_567_890_123, "1234.567890123"),
            (u64::MAX, "18446744073.709551615"),
        ] {
            let mut out = String::new();
            push_ns_as_seconds(&mut out, ns);
            assert_eq!(out, s, "{ns}");
            // Parsed back, the f64 the other formats carry (for these sums).
            assert_eq!(out.parse::<f64>().unwrap(), (ns as f64 / 1e9), "{ns}");
        }
    }

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
            (999999.0, "999999"),
            (-42.0, "-42"),
            (12345.5, "12345.5"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
    }
}
