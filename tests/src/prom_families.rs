//! Family-level checks of a Prometheus text exposition (format 0.0.4) on
//! top of the line parser in `prom.rs`: `# HELP` / `# TYPE` metadata, how
//! samples group into families, and the shape of histograms.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::prom::{parse_prometheus, Sample};

/// One metric family: its metadata and samples.
#[derive(Clone, Debug, Default)]
pub struct Family {
    /// Family name (for histograms, without `_bucket` / `_sum` / `_count`).
    pub name: String,
    /// The `# HELP` text, if given.
    pub help: Option<String>,
    /// The `# TYPE` (counter, gauge, histogram, summary, untyped), if given.
    pub kind: Option<String>,
    /// The family's samples, in order.
    pub samples: Vec<Sample>,
}

const KINDS: &[&str] = &["counter", "gauge", "histogram", "summary", "untyped"];

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample named `sample` belongs to, given the declared types.
fn family_of(sample: &str, kinds: &BTreeMap<String, String>) -> String {
    for (suffixes, kind) in [
        (&["_bucket", "_sum", "_count"][..], "histogram"),
        (&["_sum", "_count"][..], "summary"),
    ] {
        for suffix in suffixes {
            if let Some(base) = sample.strip_suffix(suffix) {
                if kinds.get(base).map(String::as_str) == Some(kind) {
                    return base.to_string();
                }
            }
        }
    }
    sample.to_string()
}

fn labels_key(s: &Sample, without: &str) -> String {
    s.labels
        .iter()
        .filter(|(k, _)| k.as_str() != without)
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks the histogram rules of one family: every series has `_bucket`
/// lines with an `le` label, cumulative counts that never decrease as `le`
/// grows, a `+Inf` bucket equal to its `_count`, and a `_sum`.
fn check_histogram(f: &Family, problems: &mut Vec<String>) {
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut sums: BTreeSet<String> = BTreeSet::new();
    for s in &f.samples {
        let key = labels_key(s, "le");
        if s.name.ends_with("_bucket") {
            let Some(le) = s.labels.get("le") else {
                problems.push(format!("{}: a _bucket sample without `le` ({key})", f.name));
                continue;
            };
            let bound = match le.as_str() {
                "+Inf" => f64::INFINITY,
                x => match x.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => {
                        problems.push(format!("{}: bad le=\"{le}\"", f.name));
                        continue;
                    }
                },
            };
            buckets.entry(key).or_default().push((bound, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(key, s.value);
        } else if s.name.ends_with("_sum") {
            sums.insert(key);
        }
    }
    for (key, mut bs) in buckets {
        bs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if bs.windows(2).any(|w| w[1].1 < w[0].1) {
            problems.push(format!(
                "{}{{{key}}}: bucket counts decrease as le grows: {bs:?}",
                f.name
            ));
        }
        match bs.last() {
            Some((b, v)) if b.is_infinite() => {
                if counts.get(&key) != Some(v) {
                    problems.push(format!(
                        "{}{{{key}}}: +Inf bucket {v} != _count {:?}",
                        f.name,
                        counts.get(&key)
                    ));
                }
            }
            _ => problems.push(format!("{}{{{key}}}: no le=\"+Inf\" bucket", f.name)),
        }
        if !sums.contains(&key) {
            problems.push(format!("{}{{{key}}}: no _sum", f.name));
        }
    }
}

/// Parses `text` into families and checks it strictly:
///
/// * every sample line parses (`parse_prometheus`);
/// * `# HELP name text` and `# TYPE name kind` name valid metrics, appear at
///   most once per family, and TYPE names a known kind and comes before the
///   family's first sample;
/// * a family's lines are contiguous (no family reappears after another);
/// * no series (name + labels) appears twice;
/// * counters are non-negative, and histograms are well formed;
/// * **every family has both HELP and TYPE.**
///
/// Returns the families, or every problem found.
pub fn parse_families(text: &str) -> Result<Vec<Family>, Vec<String>> {
    let mut problems = Vec::new();
    let mut families: Vec<Family> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, String)> = HashSet::new();

    let mut enter = |name: &str,
                     line_no: usize,
                     families: &mut Vec<Family>,
                     problems: &mut Vec<String>|
     -> usize {
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            if closed.contains(name) {
                problems.push(format!(
                    "line {line_no}: family `{name}` continues after another family started (lines of a family must be contiguous)"
                ));
            }
            current = Some(name.to_string());
        }
        *index.entry(name.to_string()).or_insert_with(|| {
            families.push(Family {
                name: name.to_string(),
                ..Family::default()
            });
            families.len() - 1
        })
    };

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // a plain comment
            }
            let name = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default().trim();
            if !valid_metric_name(name) {
                problems.push(format!(
                    "line {n}: # {keyword} with bad metric name `{name}`"
                ));
                continue;
            }
            let idx = enter(name, n, &mut families, &mut problems);
            let fam = &mut families[idx];
            if keyword == "HELP" {
                if fam.help.is_some() {
                    problems.push(format!("line {n}: second # HELP for `{name}`"));
                }
                if rest.is_empty() {
                    problems.push(format!("line {n}: empty # HELP for `{name}`"));
                }
                fam.help = Some(rest.to_string());
            } else {
                if fam.kind.is_some() {
                    problems.push(format!("line {n}: second # TYPE for `{name}`"));
                }
                if !KINDS.contains(&rest) {
                    problems.push(format!(
                        "line {n}: # TYPE `{name}` has unknown kind `{rest}` (expected one of {KINDS:?})"
                    ));
                }
                if !fam.samples.is_empty() {
                    problems.push(format!(
                        "line {n}: # TYPE for `{name}` comes after its samples"
                    ));
                }
                fam.kind = Some(rest.to_string());
                kinds.insert(name.to_string(), rest.to_string());
            }
            continue;
        }
        let sample = match parse_prometheus(line) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(v) => {
                problems.push(format!("line {n}: expected one sample, got {}", v.len()));
                continue;
            }
            Err(e) => {
                problems.push(format!("line {n}: {}", e.trim_start_matches("line 1: ")));
                continue;
            }
        };
        let fam_name = family_of(&sample.name, &kinds);
        if !series.insert((sample.name.clone(), labels_key(&sample, ""))) {
            problems.push(format!("line {n}: duplicate series `{line}`"));
        }
        let idx = enter(&fam_name, n, &mut families, &mut problems);
        families[idx].samples.push(sample);
    }

    for f in &families {
        match (&f.help, &f.kind) {
            (Some(_), Some(_)) => {}
            (None, None) => {
                problems.push(format!("family `{}` has neither # HELP nor # TYPE", f.name))
            }
            (None, Some(_)) => problems.push(format!("family `{}` has no # HELP", f.name)),
            (Some(_), None) => problems.push(format!("family `{}` has no # TYPE", f.name)),
        }
        match f.kind.as_deref() {
            Some("histogram") => check_histogram(f, &mut problems),
            Some("counter") => {
                for s in f
                    .samples
                    .iter()
                    .filter(|s| s.value.is_nan() || s.value < 0.0)
                {
                    problems.push(format!(
                        "counter `{}` has value {} (must be >= 0)",
                        s.name, s.value
                    ));
                }
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(families)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_well_formed_exposition() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                    # HELP h_seconds H.\n# TYPE h_seconds histogram\n\
                    h_seconds_bucket{r=\"a\",le=\"0.1\"} 1\nh_seconds_bucket{r=\"a\",le=\"+Inf\"} 2\n\
                    h_seconds_sum{r=\"a\"} 0.3\nh_seconds_count{r=\"a\"} 2\n";
        let fams = parse_families(text).expect("valid");
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[1].name, "h_seconds");
        assert_eq!(fams[1].samples.len(), 4);
    }

    #[test]
    fn finds_missing_metadata_and_bad_shapes() {
        let no_help = "# TYPE a counter\na 1\n";
        assert!(parse_families(no_help).unwrap_err()[0].contains("no # HELP"));
        let no_type = "# HELP a A.\na 1\n";
        assert!(parse_families(no_type).unwrap_err()[0].contains("no # TYPE"));
        let bare = "a 1\n";
        assert!(parse_families(bare).unwrap_err()[0].contains("neither"));
        let split = "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n";
        assert!(parse_families(split).is_err());
        let late_type = "# HELP a A.\na 1\n# TYPE a gauge\n";
        assert!(parse_families(late_type).is_err());
        let hist = "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";
        assert!(parse_families(hist).is_err());
        let dup = "# HELP a A.\n# TYPE a gauge\na 1\na 2\n";
        assert!(parse_families(dup).is_err());
    }
}
