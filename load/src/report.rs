//! The report: medians over rounds of every (workers, scenario, target,
//! metric) cell of the results CSV, ratios, the targets checked, and
//! the chart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::Result;

/// The proxies and baselines, in table order.
pub const TARGETS: [&str; 5] = ["direct", "gateway", "gateway-features", "nginx", "haproxy"];

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

/// A table row: scenario, metric, label.
pub struct Row {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub label: &'static str,
}

pub const ROWS: [Row; 18] = [
    Row {
        scenario: "h1_ka",
        metric: "rps",
        label: "(1) HTTP/1.1 keep-alive, max req/s",
    },
    Row {
        scenario: "fixed",
        metric: "p50_ms",
        label: "(2) fixed rate: p50 ms",
    },
    Row {
        scenario: "fixed",
        metric: "p99_ms",
        label: "(2) fixed rate: p99 ms",
    },
    Row {
        scenario: "fixed",
        metric: "p999_ms",
        label: "(2) fixed rate: p99.9 ms",
    },
    Row {
        scenario: "fixed",
        metric: "rps",
        label: "(2) fixed rate: achieved req/s",
    },
    Row {
        scenario: "fixed_low",
        metric: "p50_ms",
        label: "(2b) gateway-sustainable rate: p50 ms",
    },
    Row {
        scenario: "fixed_low",
        metric: "p99_ms",
        label: "(2b) gateway-sustainable rate: p99 ms",
    },
    Row {
        scenario: "fixed_low",
        metric: "p999_ms",
        label: "(2b) gateway-sustainable rate: p99.9 ms",
    },
    Row {
        scenario: "fixed_low",
        metric: "rps",
        label: "(2b) gateway-sustainable rate: achieved req/s",
    },
    Row {
        scenario: "tls_ka",
        metric: "rps",
        label: "(3) TLS keep-alive, max req/s",
    },
    Row {
        scenario: "h2",
        metric: "rps",
        label: "(4) HTTP/2 (TLS), max req/s",
    },
    Row {
        scenario: "close",
        metric: "rps",
        label: "(5) new connection per request, req/s",
    },
    Row {
        scenario: "mem",
        metric: "idle_mib",
        label: "(7) RSS idle, MiB",
    },
    Row {
        scenario: "mem",
        metric: "conns_fresh_mib",
        label: "(7) RSS, 1,000 keep-alive conns (fresh), MiB",
    },
    Row {
        scenario: "mem",
        metric: "conns_loaded_mib",
        label: "(7) RSS, 1,000 keep-alive conns (after load), MiB",
    },
    Row {
        scenario: "cpu",
        metric: "max_per_100k",
        label: "(8) CPU s / 100k req, at max (1)",
    },
    Row {
        scenario: "cpu",
        metric: "fixed_per_100k",
        label: "(8) CPU s / 100k req, at fixed rate (2)",
    },
    Row {
        scenario: "cpu",
        metric: "low_per_100k",
        label: "(8) CPU s / 100k req, at fixed rate (2b)",
    },
];

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1000.0 => format!("{:.0}", v),
        Some(v) if v >= 100.0 => format!("{:.1}", v),
        Some(v) if v >= 1.0 => format!("{:.2}", v),
        Some(v) => format!("{:.3}", v),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
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
         Ratios are gateway / other: above 1 is better for the gateway on req/s rows, \
         below 1 is better on ms, MiB and CPU rows. Raw samples: the CSV next to this file.\n"
    )?;
    md.push_str(&meta);
    md.push('\n');
    for &w in &m.workers {
        writeln!(
            md,
            "## {w} worker{} per proxy\n",
            if w == 1 { "" } else { "s" }
        )?;
        if let Some(r) = m.get(w, "fixed", "nginx", "offered_rps") {
            writeln!(
                md,
                "Fixed rate of scenario (2): {r:.0} req/s, half of NGINX's scenario (1) maximum in round 1."
            )?;
        }
        if let Some(r) = m.get(w, "fixed_low", "nginx", "offered_rps") {
            writeln!(
                md,
                "Fixed rate of scenario (2b): {r:.0} req/s, half of the gateway's scenario (1) maximum in round 1."
            )?;
        }
        md.push('\n');
        writeln!(
            md,
            "| scenario | direct | gateway | gateway, features on | nginx | haproxy | gw / nginx | gw / haproxy | gw / direct |"
        )?;
        writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")?;
        for row in &ROWS {
            let v = |t: &str| m.get(w, row.scenario, t, row.metric);
            if TARGETS.iter().all(|t| v(t).is_none()) {
                continue;
            }
            let gw = v("gateway");
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.label,
                fmt(v("direct")),
                fmt(gw),
                fmt(v("gateway-features")),
                fmt(v("nginx")),
                fmt(v("haproxy")),
                ratio(gw, v("nginx")),
                ratio(gw, v("haproxy")),
                ratio(gw, v("direct")),
            )?;
        }
        md.push('\n');
        // Spread of the throughput cells, so a reader sees how stable a run was.
        if rounds > 1 {
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
        }
        write_targets(&mut md, &m, w)?;
        write_errors(&mut md, &m, w)?;
        write_disturbance(&mut md, &m, w)?;
    }
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

fn write_targets(md: &mut String, m: &Medians, w: u32) -> Result<()> {
    writeln!(
        md,
        "Targets of issue 10 ({w} worker{}):\n",
        if w == 1 { "" } else { "s" }
    )?;
    let gw = |s: &str, k: &str| m.get(w, s, "gateway", k);
    let mut check = |name: &str, ok: Option<bool>, detail: String| -> Result<()> {
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        writeln!(md, "- {name}: {verdict} — {detail}")?;
        Ok(())
    };
    let (g, n, h) = (
        gw("h1_ka", "rps"),
        m.get(w, "h1_ka", "nginx", "rps"),
        m.get(w, "h1_ka", "haproxy", "rps"),
    );
    check(
        "throughput ≥ 1.1 × NGINX",
        g.zip(n).map(|(g, n)| g >= 1.1 * n),
        format!("gateway / NGINX = {}", ratio(g, n)),
    )?;
    check(
        "throughput ≥ HAProxy",
        g.zip(h).map(|(g, h)| g >= h),
        format!("gateway / HAProxy = {}", ratio(g, h)),
    )?;
    let (g99, n99) = (gw("fixed", "p99_ms"), m.get(w, "fixed", "nginx", "p99_ms"));
    let (achieved, offered) = (
        gw("fixed", "rps"),
        m.get(w, "fixed", "nginx", "offered_rps"),
    );
    let kept_up = match (achieved, offered) {
        (Some(a), Some(o)) if a < 0.97 * o => format!(
            "; the gateway could not keep up with the rate ({} of {} req/s answered in time), so its latency is queueing",
            fmt(Some(a)),
            fmt(Some(o))
        ),
        _ => String::new(),
    };
    check(
        "p99 at the fixed rate ≤ NGINX's",
        g99.zip(n99).map(|(g, n)| g <= n),
        format!("{} ms vs {} ms{kept_up}", fmt(g99), fmt(n99)),
    )?;
    let idle = gw("mem", "idle_mib");
    check(
        "idle RSS < 20 MiB",
        idle.map(|v| v < 20.0),
        format!("{} MiB", fmt(idle)),
    )?;
    let (fresh, loaded) = (gw("mem", "conns_fresh_mib"), gw("mem", "conns_loaded_mib"));
    let worst = match (fresh, loaded) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    check(
        "RSS with 1,000 keep-alive connections < 64 MiB",
        worst.map(|v| v < 64.0),
        format!("{} MiB fresh, {} MiB after load", fmt(fresh), fmt(loaded)),
    )?;
    let f = m.get(w, "h1_ka", "gateway-features", "rps");
    check(
        "features on ≥ 80 % of plain",
        f.zip(g).map(|(f, g)| f >= 0.8 * g),
        format!("features on / plain = {}", ratio(f, g)),
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
        let list: Vec<String> = hit
            .iter()
            .map(|a| format!("{} ({:.0} %)", a.2, a.0))
            .collect();
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
        if *cw == w && k == "errors" && *hi > 0.0 {
            lines.push(format!(
                "- {s} / {t}: median {med:.0}, worst round {hi:.0} failed requests"
            ));
        }
    }
    if !lines.is_empty() {
        writeln!(
            md,
            "Failed requests (non-2xx/3xx, socket errors, timeouts):\n"
        )?;
        for l in lines {
            writeln!(md, "{l}")?;
        }
        md.push('\n');
    }
    Ok(())
}
