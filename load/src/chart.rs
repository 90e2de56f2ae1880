//! The PNG chart: per worker count, three full-width panels with one bar
//! per target: CPU time per request per scenario (the headline), max
//! throughput, and latency percentiles at the fixed rates.

use plotters::prelude::*;
use plotters::style::full_palette::{BLUE_200, GREY_500, ORANGE_600, PURPLE_400, TEAL_600};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Medians, TARGETS};
use crate::Result;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

fn register_font() -> Result<()> {
    let path = std::env::var("LOADTOOL_FONT")
        .ok()
        .into_iter()
        .chain(FONT_PATHS.iter().map(|s| s.to_string()))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or(
            "no TrueType font found (apt-get install fonts-dejavu-core, or set LOADTOOL_FONT)",
        )?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "unreadable font")?;
    Ok(())
}

fn color(target: &str) -> RGBColor {
    match target {
        "direct" => GREY_500,
        "gateway" => RGBColor(31, 90, 200),
        "gateway-features" => BLUE_200,
        "bare-pingora" => PURPLE_400,
        "nginx" => RGBColor(40, 150, 60),
        "haproxy" => ORANGE_600,
        "envoy" => RGBColor(200, 40, 60),
        _ => TEAL_600,
    }
}

fn label(target: &str) -> &str {
    match target {
        "gateway-features" => "gateway, features on",
        t => t,
    }
}

/// One group of bars: a category label and a value per target.
struct Group {
    name: String,
    values: Vec<(&'static str, f64)>,
}

pub fn draw(m: &Medians, out: &str, title: &str, rounds: usize) -> Result<()> {
    register_font()?;
    let workers: Vec<u32> = m.workers.iter().copied().collect();
    const PANEL: u32 = 480;
    let height = 80 + 3 * PANEL * workers.len().max(1) as u32;
    let root = BitMapBackend::new(out, (2000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(80);
    head.draw(&Text::new(
        format!("gateway vs bare Pingora, NGINX, HAProxy, Envoy, Traefik — loopback, 1 KiB responses — run {title}, medians of {rounds} round(s)"),
        (20, 14),
        ("sans-serif", 26).into_font(),
    ))?;
    // One legend for every panel, in the header.
    let mut x = 20;
    for t in TARGETS {
        head.draw(&Rectangle::new([(x, 52), (x + 22, 68)], color(t).filled()))?;
        head.draw(&Text::new(
            label(t).to_string(),
            (x + 30, 50),
            ("sans-serif", 20).into_font(),
        ))?;
        x += 60 + 11 * label(t).len() as i32;
    }
    let panels = body.split_evenly((3 * workers.len().max(1), 1));
    for (i, &w) in workers.iter().enumerate() {
        let get = |s: &str, t: &str, k: &str| m.get(w, s, t, k);
        let group = |name: &str, s: &str, k: &str, scale: f64| Group {
            name: name.to_string(),
            values: TARGETS
                .iter()
                .filter_map(|t| get(s, t, k).map(|v| (*t, v * scale)))
                .collect(),
        };
        let cpu: Vec<Group> = [
            ("(1) HTTP/1.1 keep-alive", "h1_ka"),
            ("(3) TLS keep-alive", "tls_ka"),
            ("(4) HTTP/2 over TLS", "h2"),
            ("(5) new conn per request", "close"),
            ("(2) fixed rate", "fixed"),
            ("(2b) rate all sustain", "fixed_low"),
        ]
        .iter()
        .map(|(name, s)| group(name, s, "cpu_us", 1.0))
        .filter(|g| !g.values.is_empty())
        .collect();
        bars(
            &panels[3 * i],
            &format!("{w} worker(s): CPU time per request, µs (lower is better)"),
            &cpu,
            false,
            |v| format!("{v:.0}"),
        )?;
        let thr: Vec<Group> = [
            ("(1) HTTP/1.1 keep-alive", "h1_ka"),
            ("(3) TLS keep-alive", "tls_ka"),
            ("(4) HTTP/2 over TLS", "h2"),
            ("(5) new conn per request", "close"),
        ]
        .iter()
        .map(|(name, s)| group(name, s, "rps", 1e-3))
        .filter(|g| !g.values.is_empty())
        .collect();
        bars(
            &panels[3 * i + 1],
            &format!("{w} worker(s): max throughput, thousand req/s (higher is better)"),
            &thr,
            false,
            |v| format!("{v:.1}"),
        )?;
        let rate = get("fixed", "nginx", "offered_rps").unwrap_or(0.0);
        let low = get("fixed_low", "nginx", "offered_rps").unwrap_or(0.0);
        let lat: Vec<Group> = [("fixed", rate), ("fixed_low", low)]
            .iter()
            .flat_map(|&(s, r)| {
                [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
                    .iter()
                    .map(move |(k, name)| Group {
                        name: format!("{name} @{:.1}k req/s", r / 1000.0),
                        values: TARGETS
                            .iter()
                            .filter_map(|t| m.get(w, s, t, k).map(|v| (*t, v)))
                            .collect(),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.values.is_empty())
            .collect();
        bars(
            &panels[3 * i + 2],
            &format!("{w} worker(s): latency at fixed rates (2) and (2b), ms, log scale (lower is better)"),
            &lat,
            true,
            |v| {
                if v >= 10.0 {
                    format!("{v:.0}")
                } else if v >= 1.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.2}")
                }
            },
        )?;
    }
    root.present()?;
    Ok(())
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    groups: &[Group],
    log: bool,
    value_label: impl Fn(f64) -> String,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let values = || groups.iter().flat_map(|g| g.values.iter().map(|v| v.1));
    let max = values().fold(0.0f64, f64::max).max(1e-3);
    let n = groups.len().max(1) as f64;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .margin_bottom(40)
        .x_label_area_size(10)
        .y_label_area_size(60);
    if log {
        // Latencies span from tenths of a millisecond to seconds when a
        // target cannot keep up: a log scale keeps both readable.
        let min = values()
            .filter(|v| *v > 0.0)
            .fold(f64::MAX, f64::min)
            .min(max);
        let lo = 10f64.powf((min * 0.8).log10().floor());
        let hi = 10f64.powf((max * 2.0).log10().ceil());
        let mut chart = builder.build_cartesian_2d(0.0..n, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_style(("sans-serif", 16))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y}")
                }
            })
            .draw()?;
        draw_bars(area, &mut chart, groups, lo, |v| v * 1.12, value_label)
    } else {
        let mut chart = builder.build_cartesian_2d(0.0..n, 0.0..max * 1.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(8)
            .y_label_style(("sans-serif", 16))
            .draw()?;
        draw_bars(
            area,
            &mut chart,
            groups,
            0.0,
            |v| v + max * 0.01,
            value_label,
        )
    }
}

fn draw_bars<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &mut ChartContext<DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    groups: &[Group],
    base: f64,
    label_at: impl Fn(f64) -> f64,
    value_label: impl Fn(f64) -> String,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    for t in TARGETS {
        let mut rects = Vec::new();
        let mut texts = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let k = g.values.len().max(1) as f64;
            let width = 0.84 / k;
            if let Some(pos) = g.values.iter().position(|v| v.0 == t) {
                let v = g.values[pos].1;
                let x0 = gi as f64 + 0.08 + pos as f64 * width;
                rects.push(Rectangle::new(
                    [(x0 + width * 0.06, base), (x0 + width * 0.94, v.max(base))],
                    color(t).filled(),
                ));
                texts.push((x0 + width / 2.0, label_at(v.max(base)), value_label(v)));
            }
        }
        chart.draw_series(rects)?;
        let style = TextStyle::from(("sans-serif", 13).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            texts
                .into_iter()
                .map(|(x, y, s)| Text::new(s, (x, y), style.clone())),
        )?;
    }
    // Category names under each group, in pixel coordinates of the image.
    let style =
        TextStyle::from(("sans-serif", 18).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let (ox, oy) = area.get_base_pixel();
    for (gi, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(gi as f64 + 0.5, base));
        area.draw(&Text::new(
            g.name.clone(),
            (px - ox, py - oy + 8),
            style.clone(),
        ))?;
    }
    Ok(())
}
