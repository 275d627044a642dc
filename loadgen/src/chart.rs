//! An SVG chart of latency by percentile, one line per report, drawn with
//! plotters. The x axis is in "nines" (p50, p90, p99, p99.9, ...), the y
//! axis in microseconds on a log scale.

use std::path::Path;

use plotters::prelude::*;

use crate::results::Report;

/// x position of a percentile: -log10(1 - p/100), so each nine is one step.
fn nines(percentile: f64) -> f64 {
    let p = percentile.min(99.9999) / 100.0;
    -(1.0 - p).log10()
}

/// Draws `series` (label, report) into an SVG file, using each report's
/// "all" latency percentiles.
pub fn draw(series: &[(String, Report)], title: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(label, report)| {
            let points = report
                .latency
                .get("all")
                .map(|summary| summary.percentiles.iter().map(|&(p, us)| (nines(p), us.max(0.1))).collect())
                .unwrap_or_default();
            (label.clone(), points)
        })
        .collect();
    let max_us = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let min_us = lines
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(max_us, f64::min);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            nines(50.0)..nines(99.9999),
            ((min_us / 2.0).max(0.1)..max_us * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_labels(7)
        .x_label_formatter(&|x| {
            // One label per nine: p0, p90, p99, p99.9, ...
            let percentile = 100.0 - 100.0 * 10f64.powf(-x.round());
            format!("p{}", format!("{percentile:.4}").trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (index, (label, points)) in lines.into_iter().enumerate() {
        let color = colors[index % colors.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_are_evenly_spaced() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!(nines(100.0).is_finite());
    }
}
