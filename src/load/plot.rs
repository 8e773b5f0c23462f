//! `--plot FILE.svg`: a title naming the run (target, transport, rate, duration), latency over
//! time (p50, p99 and max of each timeline slice) above the heartbeat latency histogram, both in
//! milliseconds on log axes whose labels cover the data; for one run or both sides of a
//! comparison.

use std::path::Path;

use plotters::prelude::*;

use super::LoadReport;

/// Per side: the colours of p50, p99 and max.
const SIDE_COLORS: [[RGBColor; 3]; 2] = [
    [
        RGBColor(31, 119, 180),
        RGBColor(230, 120, 0),
        RGBColor(200, 40, 40),
    ],
    [
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ],
];

/// Draws `runs` (one, or two for a comparison, each with its label) into an SVG file.
pub fn write_svg(path: &Path, runs: &[(&str, &LoadReport)]) -> Result<(), String> {
    draw(path, runs).map_err(|e| format!("drawing {}: {e}", path.display()))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The plot's title: what ran, where, how fast and how long.
pub(crate) fn title(runs: &[(&str, &LoadReport)]) -> String {
    let side = |r: &LoadReport| {
        let rate = match r.target_rate {
            Some(per_s) => format!("rate {}/s ({}/min)", round3(per_s), round3(per_s * 60.0)),
            None => "rate max (closed loop)".to_string(),
        };
        format!(
            "{} over {}, {rate}, {} s",
            r.target,
            r.transport,
            seconds(r.elapsed_s)
        )
    };
    match runs {
        [(_, r)] => format!("vigil load: {}", side(r)),
        _ => {
            let sides: Vec<String> = runs
                .iter()
                .map(|(label, r)| format!("{label}: {}", side(r)))
                .collect();
            format!("vigil load: {}", sides.join(" vs "))
        }
    }
}

/// A run's length in seconds, to a tenth under 10 s (`0.5`, `2.5`), else whole (`20`).
fn seconds(s: f64) -> String {
    let text = if s >= 10.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    };
    text.trim_end_matches(".0").to_string()
}

/// `x` with at most three significant digits and no trailing zeros.
fn round3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{x:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A tick label in ms: `0.05`, `0.5`, `2`, `100`.
pub(crate) fn fmt_ms(v: f64) -> String {
    round3(v)
}

/// The "nice" values (1, 2, 5 × 10^k; only 10^k over more than three decades) from the
/// largest at or below `lo` to the smallest at or above `hi`: log-axis labels that cover
/// `lo..=hi`, the first and last being the axis's ends.
pub(crate) fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let lo = lo.max(1e-6);
    let hi = hi.max(lo);
    let steps: &[f64] = if (hi / lo).log10() > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    let first_decade = lo.log10().floor() as i32 - 1;
    let last_decade = hi.log10().ceil() as i32 + 1;
    for e in first_decade..=last_decade {
        for s in steps {
            ticks.push(s * 10f64.powi(e));
        }
    }
    // The tolerance keeps a value such as 0.5 from missing itself by a rounding error.
    let eps = 1e-9;
    let start = ticks
        .iter()
        .rposition(|t| *t <= lo * (1.0 + eps))
        .unwrap_or(0);
    let end = ticks
        .iter()
        .position(|t| *t >= hi * (1.0 - eps))
        .unwrap_or(ticks.len() - 1);
    let mut out = ticks[start..=end].to_vec();
    if out.len() < 2 {
        // A single value: one step either side of it.
        out = ticks[start.saturating_sub(1)..=(end + 1).min(ticks.len() - 1)].to_vec();
    }
    out
}

/// The timeline's latency ticks (ms): from at or below the smallest p50 to at or above the
/// largest max of any busy slice.
pub(crate) fn latency_ticks(runs: &[(&str, &LoadReport)]) -> Vec<f64> {
    let busy = || {
        runs.iter()
            .flat_map(|(_, r)| r.timeline.iter().filter(|s| s.count > 0))
    };
    let lo = busy().map(|s| ms(s.p50_us)).fold(f64::INFINITY, f64::min);
    let hi = busy().map(|s| ms(s.max_us)).fold(0.0_f64, f64::max);
    if lo.is_finite() {
        nice_ticks(lo, hi)
    } else {
        nice_ticks(0.1, 1.0)
    }
}

/// The histogram's latency ticks (ms): covering every non-empty bar, from its lower bound (half
/// its upper one: bars are powers of two in µs) to its upper bound.
pub(crate) fn histogram_ticks(runs: &[(&str, &LoadReport)]) -> Vec<f64> {
    let bars = || {
        runs.iter()
            .flat_map(|(_, r)| r.histogram.iter().filter(|b| b.count > 0))
    };
    let lo = bars()
        .map(|b| ms(b.le_us.max(1)) / 2.0)
        .fold(f64::INFINITY, f64::min);
    let hi = bars().map(|b| ms(b.le_us.max(1))).fold(0.0_f64, f64::max);
    if lo.is_finite() {
        nice_ticks(lo, hi)
    } else {
        nice_ticks(0.001, 1.0)
    }
}

fn draw(
    path: &Path,
    runs: &[(&str, &LoadReport)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = SVGBackend::new(path, (1000, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(&title(runs), ("sans-serif", 19))?;
    let (top, bottom) = body.split_vertically(440);

    let t_max = runs
        .iter()
        .flat_map(|(_, r)| r.timeline.last().map(|s| s.t_s))
        .fold(0.0_f64, f64::max)
        .max(r_elapsed(runs))
        .max(0.001);
    let ticks = latency_ticks(runs);
    let (y_lo, y_hi) = (ticks[0], ticks[ticks.len() - 1]);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "latency of all calls by intended send time (per slice: p50, p99, max)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..t_max,
            (y_lo..y_hi).log_scale().with_key_points(ticks.clone()),
        )?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("latency, ms (log)")
        .x_label_formatter(&|v| round3(*v))
        .y_label_formatter(&|v| fmt_ms(*v))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (side, (label, report)) in runs.iter().enumerate() {
        let [c50, c99, cmax] = SIDE_COLORS[side % 2];
        let points = |pick: fn(&super::Slice) -> u64| -> Vec<(f64, f64)> {
            report
                .timeline
                .iter()
                .filter(|s| s.count > 0)
                .map(|s| (s.t_s, ms(pick(s)).clamp(y_lo, y_hi)))
                .collect()
        };
        let name = |line: &str| {
            if runs.len() > 1 {
                format!("{label} {line}")
            } else {
                line.to_string()
            }
        };
        // p50 and p99 (dashed) as lines, max as small open circles drawn last: where a
        // slice's p99 is its max (fewer than 100 calls in it) the circle sits on the dashed
        // line without hiding it.
        chart
            .draw_series(LineSeries::new(points(|s| s.p50_us), c50.stroke_width(2)))?
            .label(name("p50"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c50.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                points(|s| s.p99_us),
                6,
                4,
                c99.stroke_width(2),
            ))?
            .label(name("p99"))
            .legend(move |(x, y)| {
                plotters::element::DashedPathElement::new(
                    vec![(x, y), (x + 22, y)],
                    6,
                    4,
                    c99.stroke_width(2),
                )
            });
        chart
            .draw_series(
                points(|s| s.max_us)
                    .into_iter()
                    .map(|p| Circle::new(p, 3, cmax.stroke_width(1))),
            )?
            .label(name("max"))
            .legend(move |(x, y)| Circle::new((x + 11, y), 3, cmax.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;

    let hticks = histogram_ticks(runs);
    let (x_lo, x_hi) = (hticks[0], hticks[hticks.len() - 1]);
    let count_max = runs
        .iter()
        .flat_map(|(_, r)| r.histogram.iter().map(|b| b.count))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut hist = ChartBuilder::on(&bottom)
        .caption("heartbeat latency histogram", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale().with_key_points(hticks.clone()),
            0.0..count_max * 1.1,
        )?;
    hist.configure_mesh()
        .x_desc("latency, ms (log; each bar is a power of two in µs)")
        .y_desc("heartbeats")
        .x_label_formatter(&|v| fmt_ms(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (side, (label, report)) in runs.iter().enumerate() {
        let color = SIDE_COLORS[side % 2][0];
        let bars: Vec<Rectangle<(f64, f64)>> = report
            .histogram
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| {
                let upper = ms(b.le_us.max(1));
                let lower = (upper / 2.0).max(x_lo);
                Rectangle::new(
                    [(lower, 0.0), (upper, b.count as f64)],
                    color.mix(if runs.len() > 1 { 0.45 } else { 0.6 }).filled(),
                )
            })
            .collect();
        hist.draw_series(bars)?
            .label(label.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        if runs.len() == 1 {
            // Each bar's count above it: the tail's few calls are too short to see otherwise.
            hist.draw_series(report.histogram.iter().filter(|b| b.count > 0).map(|b| {
                let upper = ms(b.le_us.max(1));
                let lower = (upper / 2.0).max(x_lo);
                Text::new(
                    b.count.to_string(),
                    (lower * 1.08, b.count as f64 + count_max * 0.07),
                    ("sans-serif", 12),
                )
            }))?;
        }
    }
    if runs.len() > 1 {
        hist.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The longest side's sending time, seconds.
fn r_elapsed(runs: &[(&str, &LoadReport)]) -> f64 {
    runs.iter().map(|(_, r)| r.elapsed_s).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Bucket, Slice};

    fn report(p50s: &[u64], maxes: &[u64]) -> LoadReport {
        LoadReport {
            target: "http://127.0.0.1:7420".into(),
            transport: "http".into(),
            sent: 10,
            answered: 10,
            errors: Default::default(),
            heartbeats: 10,
            alive_false: 0,
            redirected: 0,
            target_rate: Some(1000.0 / 60.0),
            achieved_rate: 16.6,
            elapsed_s: 20.0,
            latency: Default::default(),
            tasks: None,
            timeline: p50s
                .iter()
                .zip(maxes)
                .enumerate()
                .map(|(i, (p50, max))| Slice {
                    t_s: i as f64 * 0.2,
                    count: 5,
                    p50_us: *p50,
                    p99_us: (p50 + max) / 2,
                    max_us: *max,
                })
                .collect(),
            histogram: vec![
                Bucket {
                    le_us: 511,
                    count: 3,
                },
                Bucket {
                    le_us: 1023,
                    count: 6,
                },
                Bucket {
                    le_us: 16383,
                    count: 1,
                },
            ],
            cleanup: None,
        }
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn ticks_cover_the_data_with_nice_values() {
        assert_eq!(nice_ticks(0.6, 9.0), [0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(nice_ticks(0.5, 10.0), [0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(
            nice_ticks(0.03, 250.0),
            [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
        );
        let one = nice_ticks(2.0, 2.0);
        assert!(one.len() >= 2 && one[0] <= 2.0 && *one.last().unwrap() >= 2.0);
        assert_eq!(fmt_ms(0.05), "0.05");
        assert_eq!(fmt_ms(200.0), "200");
        assert_eq!(round3(16.666), "16.7");
    }

    /// The rendered SVG: the title names target, transport, rate and duration; the latency
    /// axis is labelled from at or below the smallest p50 (0.6 ms, where the old plot's
    /// labels began at 1 ms) to at or above the largest max; the legend names p50, p99, max;
    /// p99 is dashed; the histogram is in ms.
    #[test]
    fn the_plot_is_titled_labelled_over_the_data_and_has_a_legend() {
        let dir = std::env::temp_dir().join(format!("vigil-plot-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.svg");
        let r = report(&[600, 800, 700], &[3_000, 37_000, 2_000]);
        write_svg(&path, &[("http", &r)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let texts = texts(&svg);
        let title = texts
            .iter()
            .find(|t| t.starts_with("vigil load:"))
            .expect("a title");
        for part in [
            "http://127.0.0.1:7420",
            "over http",
            "16.7/s",
            "1000/min",
            "20 s",
        ] {
            assert!(title.contains(part), "{part:?} not in {title:?}");
        }
        let ticks = latency_ticks(&[("http", &r)]);
        assert!(
            ticks[0] <= 0.6 && *ticks.last().unwrap() >= 37.0,
            "{ticks:?}"
        );
        for tick in &ticks {
            assert!(
                texts.contains(&fmt_ms(*tick)),
                "no label {tick} in {texts:?}"
            );
        }
        assert!(texts.contains(&"0.5".to_string()) && texts.contains(&"50".to_string()));
        for name in ["p50", "p99", "max"] {
            assert!(texts.iter().any(|t| t == name), "legend lacks {name}");
        }
        assert!(svg.contains("stroke-dasharray") || svg.matches("<polyline").count() > 3);
        assert!(texts.iter().any(|t| t.starts_with("latency, ms")));
        let hist_ticks = histogram_ticks(&[("http", &r)]);
        assert!(hist_ticks[0] <= 0.256 && *hist_ticks.last().unwrap() >= 16.383);
    }
}
