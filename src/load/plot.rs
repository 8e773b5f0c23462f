//! `--plot FILE.svg`: latency over time (p50, p99 and max of each timeline slice) above the
//! heartbeat latency histogram, for one run or both sides of a comparison.

use std::path::Path;

use plotters::prelude::*;

use super::LoadReport;

const SIDE_COLORS: [[RGBColor; 3]; 2] = [
    [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(150, 150, 150),
    ],
    [
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
    ],
];

/// Draws `runs` (one, or two for a comparison, each with its label) into an SVG file.
pub fn write_svg(path: &Path, runs: &[(&str, &LoadReport)]) -> Result<(), String> {
    draw(path, runs).map_err(|e| format!("drawing {}: {e}", path.display()))
}

fn draw(
    path: &Path,
    runs: &[(&str, &LoadReport)],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = SVGBackend::new(path, (960, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);

    let ms = |us: u64| us as f64 / 1000.0;
    let t_max = runs
        .iter()
        .flat_map(|(_, r)| r.timeline.last().map(|s| s.t_s))
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let y_max = runs
        .iter()
        .flat_map(|(_, r)| r.timeline.iter().map(|s| ms(s.max_us)))
        .fold(0.0_f64, f64::max)
        .max(0.01)
        * 1.1;
    let y_min = runs
        .iter()
        .flat_map(|(_, r)| {
            r.timeline
                .iter()
                .filter(|s| s.count > 0)
                .map(|s| ms(s.p50_us))
        })
        .fold(f64::INFINITY, f64::min)
        .clamp(0.001, y_max / 10.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "latency by intended send time (all calls)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency, ms (log)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (side, (label, report)) in runs.iter().enumerate() {
        let colors = SIDE_COLORS[side % 2];
        let busy = || report.timeline.iter().filter(|s| s.count > 0);
        type Pick = fn(&super::Slice) -> u64;
        let lines: [(&str, Pick); 3] = [
            ("p50", |s| s.p50_us),
            ("p99", |s| s.p99_us),
            ("max", |s| s.max_us),
        ];
        for (k, (name, pick)) in lines.into_iter().enumerate() {
            let color = colors[k];
            let points: Vec<(f64, f64)> = busy().map(|s| (s.t_s, ms(pick(s)))).collect();
            let name = if runs.len() > 1 {
                format!("{label} {name}")
            } else {
                name.to_string()
            };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let us_max = runs
        .iter()
        .flat_map(|(_, r)| r.histogram.last().map(|b| b.le_us))
        .max()
        .unwrap_or(2)
        .max(2) as f64;
    let count_max = runs
        .iter()
        .flat_map(|(_, r)| r.histogram.iter().map(|b| b.count))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut hist = ChartBuilder::on(&bottom)
        .caption("heartbeat latency histogram", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0..us_max * 2.0).log_scale(), 0.0..count_max * 1.1)?;
    hist.configure_mesh()
        .x_desc("latency, µs (log, bars of powers of two)")
        .y_desc("heartbeats")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (side, (label, report)) in runs.iter().enumerate() {
        let color = SIDE_COLORS[side % 2][0];
        let mut lower = 1.0;
        let bars: Vec<Rectangle<(f64, f64)>> = report
            .histogram
            .iter()
            .map(|b| {
                let upper = b.le_us.max(1) as f64;
                let bar = Rectangle::new(
                    [(lower, 0.0), (upper.max(lower * 1.01), b.count as f64)],
                    color.mix(0.55).filled(),
                );
                lower = upper;
                bar
            })
            .collect();
        hist.draw_series(bars)?
            .label(label.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    if runs.len() > 1 {
        hist.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
