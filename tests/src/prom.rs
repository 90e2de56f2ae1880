//! A Prometheus text-format (0.0.4) parser, strict enough to catch malformed
//! exposition and simple enough to read.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `gateway_requests_total`.
    pub name: String,
    /// Label pairs (unescaped values).
    pub labels: BTreeMap<String, String>,
    /// The sample value.
    pub value: f64,
}

fn valid_name(s: &str, allow_colon: bool) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':'))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// Parses the labels after `{`; returns them and the rest of the line after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let name = s[..eq].trim();
        if !valid_name(name, false) {
            return Err(format!("bad label name `{name}`"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape in label value: {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate label `{name}`"));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Parses a whole exposition. Every line that is not empty and not a `#`
/// comment must be `name{labels} value [timestamp]` with a float value; the
/// first line that is not is returned as the error (with its line number).
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |why: String| format!("line {}: {why}: `{line}`", n + 1);
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(fail(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if let Some(after) = line[name_end..].strip_prefix('{') {
            parse_labels(after).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut parts = rest.split_whitespace();
        let value = parts.next().ok_or_else(|| fail("no value".into()))?;
        let value = parse_value(value).ok_or_else(|| fail(format!("bad value `{value}`")))?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| fail(format!("bad timestamp `{ts}`")))?;
        }
        if parts.next().is_some() {
            return Err(fail("trailing text".into()));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// The sum of all series named `name` whose labels include every given
/// `(label, value)` pair; `None` when no series matches. Panics if `text` is
/// not valid exposition.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse_prometheus(text).unwrap_or_else(|e| panic!("bad /metrics text: {e}"));
    let mut found = None;
    for s in samples.iter().filter(|s| s.name == name) {
        if labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            *found.get_or_insert(0.0) += s.value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums() {
        let text = "# HELP x_total help\n# TYPE x_total counter\n\
                    x_total{route=\"a\",code_class=\"2xx\"} 3\n\
                    x_total{route=\"a\",code_class=\"5xx\"} 1\n\
                    x_total{route=\"b\",code_class=\"2xx\"} 5\n\
                    up 1\n\
                    h_bucket{le=\"+Inf\",q=\"a\\\"b,c\"} 2.5e0 1700000000\n";
        assert_eq!(metric_value(text, "x_total", &[("route", "a")]), Some(4.0));
        assert_eq!(metric_value(text, "x_total", &[]), Some(9.0));
        assert_eq!(metric_value(text, "up", &[]), Some(1.0));
        assert_eq!(metric_value(text, "x_total", &[("route", "c")]), None);
        assert_eq!(
            metric_value(text, "h_bucket", &[("q", "a\"b,c")]),
            Some(2.5)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_prometheus("x_total{route=\"a\"}").is_err());
        assert!(parse_prometheus("x_total{route=a} 1").is_err());
        assert!(parse_prometheus("x_total one").is_err());
        assert!(parse_prometheus("9x 1").is_err());
    }
}
