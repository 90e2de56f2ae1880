//! The report: medians over rounds of every (workers, scenario, target,
//! metric) cell of the results CSV, ratios, the targets checked, and
//! the chart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::Result;

/// The proxies and baselines, in table order.
pub const TARGETS: [&str; 8] = [
    "direct",
    "gateway",
    "gateway-features",
    "bare-pingora",
    "nginx",
    "haproxy",
    "envoy",
    "traefik",
];

/// One line of the results CSV: `round,workers,scenario,target,metric,value`.
#[derive(Clone, Debug)]
pub struct Sample {
    pub workers: u32,
    pub scenario: String,
    pub target: String,
    pub metric: String,
    pub value: f64,
}

/// (workers, scenario, target, metric).
pub type Key = (u32, String, String, String);

/// Median, sample count, minimum and maximum of one cell over the rounds.
pub type Stats = (f64, usize, f64, f64);

/// Medians keyed by (workers, scenario, target, metric), with the sample count.
#[derive(Default)]
pub struct Medians {
    pub cells: BTreeMap<Key, Stats>,
    pub workers: BTreeSet<u32>,
    pub rounds: BTreeSet<u32>,
}

impl Medians {
    pub fn get(&self, w: u32, scenario: &str, target: &str, metric: &str) -> Option<f64> {
        self.cells
            .get(&(w, scenario.into(), target.into(), metric.into()))
            .map(|c| c.0)
    }
    fn spread(&self, w: u32, scenario: &str, target: &str, metric: &str) -> Option<(f64, f64)> {
        self.cells
            .get(&(w, scenario.into(), target.into(), metric.into()))
            .map(|c| (c.2, c.3))
    }
}

pub fn load(csv: &str) -> Result<Medians> {
    let text = std::fs::read_to_string(csv)?;
    let mut groups: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut m = Medians::default();
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("round,") || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            return Err(format!("{csv}:{}: expected 6 fields", i + 1).into());
        }
        let Ok(value) = f[5].parse::<f64>() else {
            continue; // a cell whose tool failed is recorded as "nan"/empty
        };
        if !value.is_finite() {
            continue;
        }
        let s = Sample {
            workers: f[1].parse()?,
            scenario: f[2].into(),
            target: f[3].into(),
            metric: f[4].into(),
            value,
        };
        m.rounds.insert(f[0].parse()?);
        m.workers.insert(s.workers);
        groups
            .entry((s.workers, s.scenario, s.target, s.metric))
            .or_default()
            .push(s.value);
    }
    for (k, mut v) in groups {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let med = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        m.cells.insert(k, (med, n, v[0], v[n - 1]));
    }
    Ok(m)
}

/// The peers and the feature cells, in table order.
pub const FEATURE_CELLS: [&str; 5] = [
    "gateway-reload",
    "gateway-ratelimit",
    "gateway-jwt",
    "gateway-mirror",
    "gateway-accesslog",
];

/// A table row: scenario, metric, label.
pub struct Row {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub label: &'static str,
}

const fn row(scenario: &'static str, metric: &'static str, label: &'static str) -> Row {
    Row {
        scenario,
        metric,
        label,
    }
}

/// The headline: CPU time per answered request, per scenario.
pub const CPU_ROWS: [Row; 7] = [
    row("h1_ka", "cpu_us", "(1) HTTP/1.1 keep-alive, at max"),
    row("tls_ka", "cpu_us", "(3) TLS keep-alive, at max"),
    row("h2", "cpu_us", "(4) HTTP/2 over TLS, at max"),
    row("close", "cpu_us", "(5) new connection per request"),
    row("fixed", "cpu_us", "(2) fixed rate (half NGINX's max)"),
    row("fixed_low", "cpu_us", "(2b) fixed rate every peer sustains"),
    row("overload", "cpu_us", "(8) overload (2x own max)"),
];

pub const ROWS: [Row; 12] = [
    row("h1_ka", "rps", "(1) HTTP/1.1 keep-alive, max req/s"),
    row("fixed", "p50_ms", "(2) fixed rate: p50 ms"),
    row("fixed", "p99_ms", "(2) fixed rate: p99 ms"),
    row("fixed", "p999_ms", "(2) fixed rate: p99.9 ms"),
    row("fixed", "rps", "(2) fixed rate: achieved req/s"),
    row(
        "fixed_low",
        "p50_ms",
        "(2b) rate every peer sustains: p50 ms",
    ),
    row(
        "fixed_low",
        "p99_ms",
        "(2b) rate every peer sustains: p99 ms",
    ),
    row(
        "fixed_low",
        "p999_ms",
        "(2b) rate every peer sustains: p99.9 ms",
    ),
    row(
        "fixed_low",
        "rps",
        "(2b) rate every peer sustains: achieved req/s",
    ),
    row("tls_ka", "rps", "(3) TLS keep-alive, max req/s"),
    row("h2", "rps", "(4) HTTP/2 (TLS), max req/s"),
    row("close", "rps", "(5) new connection per request, req/s"),
];

pub const MEM_ROWS: [Row; 8] = [
    row("mem", "idle_mib", "RSS idle, MiB"),
    row(
        "mem",
        "kib_per_conn_1k",
        "KiB per idle keep-alive conn, 1,000 conns",
    ),
    row(
        "mem",
        "kib_per_conn_10k",
        "KiB per idle keep-alive conn, 10,000 conns",
    ),
    row("mem", "conns_1k_mib", "RSS with 1,000 conns, MiB"),
    row("mem", "conns_10k_mib", "RSS with 10,000 conns, MiB"),
    row("mem", "after_close_mib", "RSS after they closed, MiB"),
    row(
        "mem",
        "after_close_pct",
        "RSS after close vs idle, % above idle",
    ),
    row("mem", "fds_after_close", "open descriptors after close"),
];

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{:.0}", v),
        Some(v) if v.abs() >= 100.0 => format!("{:.1}", v),
        Some(v) if v.abs() >= 1.0 => format!("{:.2}", v),
        Some(v) => format!("{:.3}", v),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn pct(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0} %", 100.0 * a / b),
        _ => "–".into(),
    }
}

fn header(label: &str) -> String {
    match label {
        "gateway-features" => "gateway, features on".into(),
        t => t.into(),
    }
}

/// A table with one column per target and the three ratios of the gateway.
fn target_table(md: &mut String, m: &Medians, w: u32, first: &str, rows: &[Row]) -> Result<()> {
    let cols: Vec<String> = TARGETS.iter().map(|t| header(t)).collect();
    writeln!(
        md,
        "| {first} | {} | gw / envoy | gw / nginx | gw / bare-pingora |",
        cols.join(" | ")
    )?;
    writeln!(md, "|---|{}--:|--:|--:|", "--:|".repeat(TARGETS.len()))?;
    for row in rows {
        let v = |t: &str| m.get(w, row.scenario, t, row.metric);
        if TARGETS.iter().all(|t| v(t).is_none()) {
            continue;
        }
        let gw = v("gateway");
        let cells: Vec<String> = TARGETS.iter().map(|t| fmt(v(t))).collect();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            row.label,
            cells.join(" | "),
            ratio(gw, v("envoy")),
            ratio(gw, v("nginx")),
            ratio(gw, v("bare-pingora")),
        )?;
    }
    md.push('\n');
    Ok(())
}

pub fn run(csv: &str, meta: &str, out_md: &str, out_png: &str, mode: &str) -> Result<()> {
    let m = load(csv)?;
    let meta = std::fs::read_to_string(meta).unwrap_or_default();
    let rounds = m.rounds.len();
    let mut md = String::new();
    let title = std::path::Path::new(out_md)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    writeln!(md, "# Benchmark run {title}\n")?;
    if mode == "smoke" {
        writeln!(
            md,
            "**Smoke run** (very short cells, one round): checks that the harness works; \
             the numbers mean nothing.\n"
        )?;
    }
    writeln!(
        md,
        "Medians over {rounds} round(s); each cell of a round ran once, interleaved \
         (every target, then the next scenario), so machine drift hits all alike. \
         Ratios are gateway / other: below 1 is better for the gateway on CPU, ms and \
         memory rows, above 1 on req/s rows. Raw samples: the CSV next to this file.\n"
    )?;
    for &w in &m.workers {
        let s = if w == 1 { "" } else { "s" };
        writeln!(md, "## {w} worker{s} per proxy\n")?;
        writeln!(
            md,
            "### CPU time per request, µs (lower is better)\n\n\
             utime + stime of the target's processes over the cell / successful answers.\n"
        )?;
        target_table(&mut md, &m, w, "scenario", &CPU_ROWS)?;
        writeln!(md, "### Memory per idle keep-alive connection\n")?;
        let mem_note = match (
            m.get(w, "mem", "haproxy", "conns_10k_n"),
            m.get(w, "mem", "gateway", "conns_10k_n"),
        ) {
            (Some(h), Some(g)) if h < g => format!(
                " HAProxy's big cell holds {h:.0} connections, not {g:.0}: it reserves two \
                 descriptors per connection and the descriptor limit does not allow more."
            ),
            _ => String::new(),
        };
        writeln!(
            md,
            "(RSS with N connections − idle RSS) / N; each connection has completed one \
             request. \"After close\": a few seconds after the 10,000 closed.{mem_note}\n"
        )?;
        target_table(&mut md, &m, w, "memory", &MEM_ROWS)?;
        writeln!(md, "### Throughput and latency\n")?;
        if let Some(r) = m.get(w, "fixed", "nginx", "offered_rps") {
            writeln!(
                md,
                "Fixed rate of scenario (2): {r:.0} req/s, half of NGINX's scenario (1) maximum in round 1."
            )?;
        }
        if let Some(r) = m.get(w, "fixed_low", "nginx", "offered_rps") {
            writeln!(
                md,
                "Fixed rate of scenario (2b): {r:.0} req/s, half of the lowest scenario (1) maximum of the peers in round 1."
            )?;
        }
        md.push('\n');
        target_table(&mut md, &m, w, "scenario", &ROWS)?;
        write_spread(&mut md, &m, w, rounds)?;
        write_features(&mut md, &m, w)?;
        write_overload(&mut md, &m, w)?;
        write_targets(&mut md, &m, w)?;
        write_errors(&mut md, &m, w)?;
        write_disturbance(&mut md, &m, w)?;
    }
    md.push_str(&meta);
    md.push('\n');
    writeln!(
        md,
        "![chart]({})",
        std::path::Path::new(out_png)
            .file_name()
            .unwrap()
            .to_string_lossy()
    )?;
    std::fs::write(out_md, md)?;
    crate::chart::draw(&m, out_png, &title, rounds)?;
    Ok(())
}

/// Spread of the throughput cells, so a reader sees how stable a run was.
fn write_spread(md: &mut String, m: &Medians, w: u32, rounds: usize) -> Result<()> {
    if rounds < 2 {
        return Ok(());
    }
    let mut spread = Vec::new();
    for row in ROWS
        .iter()
        .filter(|r| r.metric == "rps" && r.scenario != "fixed")
    {
        for t in TARGETS {
            if let (Some((lo, hi)), Some(med)) = (
                m.spread(w, row.scenario, t, row.metric),
                m.get(w, row.scenario, t, row.metric),
            ) {
                if med > 0.0 {
                    spread.push((100.0 * (hi - lo) / med, format!("{} {t}", row.scenario)));
                }
            }
        }
    }
    spread.sort_by(|a, b| b.0.total_cmp(&a.0));
    if let Some((worst, name)) = spread.first() {
        writeln!(
            md,
            "Spread between rounds (max − min, % of median) of the req/s cells: worst {worst:.0} % ({name}); \
             median {:.0} %.\n",
            spread[spread.len() / 2].0
        )?;
    }
    Ok(())
}

/// The feature cells, each against the plain gateway of the same rounds.
fn write_features(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    if FEATURE_CELLS
        .iter()
        .all(|t| m.get(w, "h1_ka", t, "rps").is_none() && m.get(w, "fixed_low", t, "rps").is_none())
    {
        return Ok(());
    }
    writeln!(
        md,
        "### Feature cells (plain gateway + one feature, 1 worker each, same rounds)\n"
    )?;
    writeln!(
        md,
        "| cell | scenario | req/s | % of plain | CPU µs/req | plain µs/req | added µs/req | CPU ratio | p99 ms | plain p99 ms | notes |"
    )?;
    writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")?;
    let cells: [(&str, &str, &str); 6] = [
        ("gateway-reload", "h1_ka", "reload every 100 ms"),
        (
            "gateway-ratelimit",
            "h1_ka",
            "one local rate limit (never trips)",
        ),
        ("gateway-jwt", "h1_ka", "JWT verification (ES256)"),
        ("gateway-mirror", "fixed_low", "100 % mirroring"),
        ("gateway-accesslog", "h1_ka", "access log on"),
        ("gateway-features", "h1_ka", "all features on"),
    ];
    for (t, sc, label) in cells {
        let f = |k: &str| m.get(w, sc, t, k);
        let p = |k: &str| m.get(w, sc, "gateway", k);
        if f("rps").is_none() {
            continue;
        }
        let added = f("cpu_us").zip(p("cpu_us")).map(|(a, b)| a - b);
        let mut notes = String::new();
        if let Some(n) = f("reloads") {
            write!(notes, "{n:.0} successful reloads in the cell")?;
            if let Some(e) = f("reload_errors").filter(|e| *e > 0.0) {
                write!(notes, ", {e:.0} failed")?;
            }
        }
        if let (Some(n), Some(a)) = (f("mirrored"), f("answered")) {
            write!(notes, "{n:.0} copies sent for {a:.0} answers")?;
        }
        let (p99, pp99) = if sc == "h1_ka" {
            (None, None)
        } else {
            (f("p99_ms"), p("p99_ms"))
        };
        writeln!(
            md,
            "| {label} | {sc} | {} | {} | {} | {} | {} | {} | {} | {} | {notes} |",
            fmt(f("rps")),
            pct(f("rps"), p("rps")),
            fmt(f("cpu_us")),
            fmt(p("cpu_us")),
            fmt(added),
            ratio(f("cpu_us"), p("cpu_us")),
            fmt(p99),
            fmt(pp99),
        )?;
    }
    md.push('\n');
    Ok(())
}

/// Offered twice the target's own maximum: what it still answers.
fn write_overload(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    if TARGETS
        .iter()
        .all(|t| m.get(w, "overload", t, "rps").is_none())
    {
        return Ok(());
    }
    writeln!(
        md,
        "### Overload: offered twice the target's own (1) maximum\n\n\
         Every successful answer inside the window counts (the warm-up's backlog is not held \
         against the target); latency is from sending (service time under saturation). The \
         generator is `loadtool rate --overload`, not wrk: the direct row shows what it can \
         drive.\n"
    )?;
    writeln!(
        md,
        "| target | own max req/s | offered req/s | answered req/s | % of own max | failed | p50 ms | p99 ms | CPU µs/req |"
    )?;
    writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")?;
    for t in TARGETS {
        let f = |k: &str| m.get(w, "overload", t, k);
        if f("rps").is_none() {
            continue;
        }
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            header(t),
            fmt(f("own_max_rps")),
            fmt(f("offered_rps")),
            fmt(f("rps")),
            pct(f("rps"), f("own_max_rps")),
            f("errors").map_or("–".into(), |e| format!("{e:.0}")),
            fmt(f("p50_ms")),
            fmt(f("p99_ms")),
            fmt(f("cpu_us")),
        )?;
    }
    md.push('\n');
    Ok(())
}

fn write_targets(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    writeln!(
        md,
        "### Targets of issue 14 ({w} worker{})\n",
        if w == 1 { "" } else { "s" }
    )?;
    let g = |s: &str, t: &str, k: &str| m.get(w, s, t, k);
    let mut check = |name: &str, ok: Option<bool>, detail: String| -> Result<()> {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        writeln!(md, "- {name}: {verdict} — {detail}")?;
        Ok(())
    };
    let le = |a: Option<f64>, b: Option<f64>, k: f64| a.zip(b).map(|(a, b)| a <= k * b);
    let ge = |a: Option<f64>, b: Option<f64>, k: f64| a.zip(b).map(|(a, b)| a >= k * b);
    for (sc, name) in [
        ("h1_ka", "HTTP/1.1 keep-alive"),
        ("tls_ka", "TLS"),
        ("h2", "HTTP/2"),
    ] {
        let (a, b) = (g(sc, "gateway", "cpu_us"), g(sc, "bare-pingora", "cpu_us"));
        check(
            &format!("gateway CPU/request ≤ 1.2 × bare-pingora, {name}"),
            le(a, b, 1.2),
            format!("{} vs {} µs, ratio {}", fmt(a), fmt(b), ratio(a, b)),
        )?;
    }
    let (f, p) = (
        g("h1_ka", "gateway-features", "cpu_us"),
        g("h1_ka", "gateway", "cpu_us"),
    );
    check(
        "features on ≤ 1.25 × plain gateway CPU/request",
        le(f, p, 1.25),
        format!("{} vs {} µs, ratio {}", fmt(f), fmt(p), ratio(f, p)),
    )?;
    for (k, n) in [("kib_per_conn_1k", "1,000"), ("kib_per_conn_10k", "10,000")] {
        let (a, b) = (g("mem", "gateway", k), g("mem", "bare-pingora", k));
        let ok = a.zip(b).map(|(a, b)| a <= b.max(0.0) * 1.1);
        check(
            &format!("memory per idle keep-alive conn ≤ bare-pingora's + 10 %, {n} conns"),
            ok,
            format!("{} vs {} KiB", fmt(a), fmt(b)),
        )?;
    }
    let (after, idle) = (
        g("mem", "gateway", "after_close_mib"),
        g("mem", "gateway", "idle_mib"),
    );
    check(
        "gateway RSS after the connections close within 25 % of idle",
        le(after, idle, 1.25),
        format!("{} MiB after close vs {} MiB idle", fmt(after), fmt(idle)),
    )?;
    let (a, b) = (
        g("fixed_low", "gateway", "p99_ms"),
        g("fixed_low", "envoy", "p99_ms"),
    );
    check(
        "p99 at the rate every peer sustains (2b) ≤ Envoy's",
        le(a, b, 1.0),
        format!("{} ms vs {} ms", fmt(a), fmt(b)),
    )?;
    for t in ["gateway", "gateway-features"] {
        let (a, b) = (g("overload", t, "rps"), g("overload", t, "own_max_rps"));
        check(
            &format!("overload: {} answers ≥ 90 % of its own max", header(t)),
            ge(a, b, 0.9),
            format!(
                "{} of {} req/s ({}), {} failed",
                fmt(a),
                fmt(b),
                pct(a, b),
                g("overload", t, "errors").map_or("–".into(), |e| format!("{e:.0}"))
            ),
        )?;
    }
    for (t, name) in [
        ("gateway-reload", "reload every 100 ms"),
        ("gateway-ratelimit", "one local rate limit"),
    ] {
        let (a, b) = (g("h1_ka", t, "rps"), g("h1_ka", "gateway", "rps"));
        check(
            &format!("{name} ≥ 95 % of plain throughput"),
            ge(a, b, 0.95),
            format!("{} vs {} req/s ({})", fmt(a), fmt(b), pct(a, b)),
        )?;
    }
    let (a, b) = (
        g("fixed_low", "gateway-mirror", "p99_ms"),
        g("fixed_low", "gateway", "p99_ms"),
    );
    check(
        "mirroring p99 ≤ 1.1 × no mirroring, rate (2b)",
        le(a, b, 1.1),
        format!("{} vs {} ms, ratio {}", fmt(a), fmt(b), ratio(a, b)),
    )?;
    let (a, b) = (
        g("h1_ka", "gateway-accesslog", "cpu_us"),
        g("h1_ka", "gateway", "cpu_us"),
    );
    check(
        "access log on ≤ 1.1 × off, CPU/request",
        le(a, b, 1.1),
        format!("{} vs {} µs, ratio {}", fmt(a), fmt(b), ratio(a, b)),
    )?;
    md.push('\n');
    Ok(())
}

/// Other work on the machine during the cells (`foreign_cpu_pct`: percent
/// of one CPU used by processes the harness did not start, steal included).
fn write_disturbance(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    let mut all: Vec<(f64, f64, String)> = Vec::new();
    for ((cw, s, t, k), (med, _, _, hi)) in &m.cells {
        if *cw == w && k == "foreign_cpu_pct" {
            all.push((*med, *hi, format!("{s} / {t}")));
        }
    }
    if all.is_empty() {
        return Ok(());
    }
    let mut meds: Vec<f64> = all.iter().map(|a| a.0).collect();
    meds.sort_by(|a, b| a.total_cmp(b));
    let worst = all.iter().map(|a| a.1).fold(0.0f64, f64::max);
    writeln!(
        md,
        "Other work on the machine during these cells (CPU time not used by the harness's processes, \
         % of one CPU): median over cells {:.0} %, worst single cell {worst:.0} %.",
        meds[meds.len() / 2]
    )?;
    let mut hit: Vec<&(f64, f64, String)> = all.iter().filter(|a| a.0 >= 25.0).collect();
    hit.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !hit.is_empty() {
        let more = hit.len().saturating_sub(12);
        hit.truncate(12);
        let mut list: Vec<String> = hit
            .iter()
            .map(|a| format!("{} ({:.0} %)", a.2, a.0))
            .collect();
        if more > 0 {
            list.push(format!("and {more} more"));
        }
        writeln!(
            md,
            " Cells whose median saw at least 25 %: {}.",
            list.join(", ")
        )?;
    }
    md.push('\n');
    Ok(())
}

fn write_errors(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    let mut lines = Vec::new();
    for ((cw, s, t, k), (med, _, _, hi)) in &m.cells {
        if *cw != w || *hi <= 0.0 {
            continue;
        }
        let what = match k.as_str() {
            "errors" => "failed requests",
            "errors_1k" => "connections of the 1,000 not held (refused, failed, not 200)",
            "errors_10k" => "connections of the 10,000 not held (refused, failed, not 200)",
            "late" => {
                "requests unanswered 2 s after the last was due (could not keep up; not failures)"
            }
            _ => continue,
        };
        lines.push(format!(
            "- {s} / {t}: median {med:.0}, worst round {hi:.0} {what}"
        ));
    }
    writeln!(
        md,
        "### Failed requests

(non-2xx/3xx answers, socket errors, timeouts; memory cells: connections not held)
"
    )?;
    if lines.is_empty() {
        writeln!(md, "None in any cell.")?;
    }
    for l in lines {
        writeln!(md, "{l}")?;
    }
    md.push('\n');
    Ok(())
}
