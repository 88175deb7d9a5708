//! The bench chart: throughput (tokens/s, median with min–max bars) and peak resident memory
//! against batch size (log scale), one line per workers x threads split (and token budget,
//! when several were swept). Drawn with plotters to SVG and PNG; text uses DejaVu Sans
//! compiled in (the `dejavu` crate), so no system fonts are needed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::bench_row::Row;

const W: u32 = 1200;
const H: u32 = 520;

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws `bench.svg` and `bench.png` into `dir`.
pub fn draw(dir: &Path, title: &str, rows: &[Row], budgets_swept: bool) -> Result<()> {
    register_font();
    draw_on(
        SVGBackend::new(&dir.join("bench.svg"), (W, H)).into_drawing_area(),
        title,
        rows,
        budgets_swept,
    )?;
    draw_on(
        BitMapBackend::new(&dir.join("bench.png"), (W, H)).into_drawing_area(),
        title,
        rows,
        budgets_swept,
    )?;
    Ok(())
}

fn e<E: std::fmt::Debug>(x: E) -> anyhow::Error {
    anyhow!("drawing the chart: {x:?}")
}

fn draw_on<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[Row],
    budgets_swept: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(e)?;
    let (left, right) = root.split_horizontally(W / 2);

    // Series: one per split (and budget when several budgets share a batch size).
    let mut series: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        let s = r.setting;
        let key = if r.reference {
            format!(
                "the default: {} x {}, budget {}",
                plural(s.workers, "worker"),
                plural(s.threads, "thread"),
                s.token_budget
            )
        } else if budgets_swept {
            format!(
                "{} x {}, budget {}",
                plural(s.workers, "worker"),
                plural(s.threads, "thread"),
                s.token_budget
            )
        } else {
            format!(
                "{} x {}, budget = batch x mean text",
                plural(s.workers, "worker"),
                plural(s.threads, "thread")
            )
        };
        series.entry(key).or_default().push(r);
    }
    for v in series.values_mut() {
        v.sort_by_key(|r| r.setting.batch_size);
    }
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.setting.batch_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let idx = |b: usize| sizes.iter().position(|&s| s == b).unwrap_or(0) as i32;
    let n = sizes.len() as i32;

    type Panel<'a, DB> = (
        &'a str,
        &'a dyn Fn(&Row) -> (f64, f64, f64),
        DrawingArea<DB, plotters::coord::Shift>,
        SeriesLabelPosition,
    );
    let panels: [Panel<'_, DB>; 2] = [
        (
            "throughput (tokens/s, median, min-max)",
            &|r: &Row| {
                (
                    r.tokens_per_second.median,
                    r.tokens_per_second.min,
                    r.tokens_per_second.max,
                )
            },
            left,
            SeriesLabelPosition::UpperRight,
        ),
        (
            "peak resident memory (MB)",
            &|r: &Row| {
                (
                    r.peak_memory_mb.median,
                    r.peak_memory_mb.min,
                    r.peak_memory_mb.max,
                )
            },
            right,
            SeriesLabelPosition::UpperLeft,
        ),
    ];
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    for (caption, value, area, legend_at) in panels {
        let top = rows.iter().map(|r| value(r).2).fold(0.0f64, f64::max) * 1.15 + 1.0;
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 16))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..(f64::from(n) - 0.5), 0f64..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("batch size (texts per decode)")
            .x_labels(n as usize + 2)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() > 1e-6 || *v < 0.0 {
                    return String::new();
                }
                sizes
                    .get(v.round() as usize)
                    .map_or_else(String::new, |s| s.to_string())
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for (k, (name, rs)) in series.iter().enumerate() {
            let color = palette[k % palette.len()];
            let pts: Vec<(f64, f64)> = rs
                .iter()
                .map(|r| (f64::from(idx(r.setting.batch_size)), value(r).0))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(e)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(e)?;
            chart
                .draw_series(rs.iter().map(|r| {
                    let x = f64::from(idx(r.setting.batch_size));
                    let (_, lo, hi) = value(r);
                    PathElement::new(vec![(x, lo), (x, hi)], color.stroke_width(1))
                }))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(legend_at)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
