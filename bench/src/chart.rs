//! The scaling chart: throughput and latency against worker count, and the
//! queue depth over time of every run, as one PNG.
//!
//! Text is drawn with the DejaVu Sans font of the system (Debian's
//! `fonts-dejavu-core`); without it the chart is skipped with a message,
//! the Markdown table carries the same numbers.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Row;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| anyhow!("no DejaVuSans.ttf found in {FONT_PATHS:?}"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("DejaVuSans.ttf is not a usable font"))
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the chart of the end-to-end rows into `path`.
pub fn draw(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let e2e: Vec<&Row> = rows.iter().filter(|r| r.workers.is_some()).collect();
    // One series per workload and feed (end to end, backlog drain).
    let series = |r: &Row| format!("{}, {}", r.corpus, r.path);
    let mut corpora: Vec<String> = e2e.iter().map(|r| series(r)).collect();
    corpora.dedup();
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(450);
    let (left, right) = top.split_horizontally(600);
    let max_workers = e2e.iter().filter_map(|r| r.workers).max().unwrap_or(1) as f64;

    // Throughput relative to each corpus's in-process rate, so corpora of
    // different speeds share one axis.
    let points_of = |value: fn(&Row) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        corpora
            .iter()
            .map(|name| {
                let points = e2e
                    .iter()
                    .filter(|r| series(r) == *name)
                    .filter_map(|r| Some((r.workers? as f64, value(r)?)))
                    .collect();
                (name.clone(), points)
            })
            .collect()
    };
    let panel = Panel {
        caption: "throughput / in-process rate",
        y_desc: "fraction of in-process audio s/s",
        max_workers,
        y_max: 1.2,
        legend: true,
    };
    panel.draw(&left, &points_of(|r| r.ratio))?;

    // p95 latency from enqueue to result.
    let max_latency = e2e
        .iter()
        .filter_map(|r| r.measurement.latency_p95_s)
        .fold(1.0f64, f64::max);
    let panel = Panel {
        caption: "p95 latency, enqueue to result",
        y_desc: "seconds",
        max_workers,
        y_max: max_latency * 1.1,
        legend: false,
    };
    panel.draw(&right, &points_of(|r| r.measurement.latency_p95_s))?;

    // Queue depth over time, one line per run.
    let max_t = e2e
        .iter()
        .filter_map(|r| r.measurement.queue_depth.last().map(|(t, _)| *t))
        .fold(1.0f64, f64::max);
    let max_depth = e2e
        .iter()
        .flat_map(|r| r.measurement.queue_depth.iter().map(|(_, d)| *d))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("classify queue depth during each run", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_t * 1.02, 0.0..max_depth * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the clock started (producer start, or workers ready for a backlog)")
        .y_desc("messages ready")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, r) in e2e.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = r
            .measurement
            .queue_depth
            .iter()
            .map(|(t, d)| (*t, f64::from(*d)))
            .collect();
        let label = format!("{}, {} worker(s)", series(r), r.workers.unwrap_or(0));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One chart of a figure against the worker count, a line per series.
struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    max_workers: f64,
    y_max: f64,
    legend: bool,
}

impl Panel {
    fn draw(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
        series: &[(String, Vec<(f64, f64)>)],
    ) -> anyhow::Result<()> {
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5..self.max_workers + 0.5, 0.0..self.y_max)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("workers")
            .y_desc(self.y_desc)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
        if self.legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerLeft)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    }
}
