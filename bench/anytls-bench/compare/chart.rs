//! The SVG chart of a comparison: one horizontal bar per table figure showing
//! B's median over A's on a log scale, starting at the line at 1.0 (no
//! difference). Drawn with plotters' SVG backend (text is left to the SVG
//! viewer's fonts).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One bar.
pub struct Bar {
    /// Its label on the vertical axis.
    pub label: String,
    /// B / A.
    pub ratio: f64,
    /// Whether a larger figure is the better one (the bar's colour says which).
    pub higher_is_better: bool,
}

/// Pixels per bar, and the fixed height around the bars.
const ROW: u32 = 34;
const FRAME: u32 = 150;
const WIDTH: u32 = 1100;

/// The bars' colours: a larger figure is better, a smaller one is.
const HIGHER_BETTER: RGBColor = RGBColor(60, 110, 220);
const LOWER_BETTER: RGBColor = RGBColor(220, 90, 40);

/// Draws `bars` (top to bottom) under a two-line title into an SVG file at `path`.
/// The ratio axis is logarithmic and every bar starts at 1, so B twice A and B
/// half of A are bars of the same length on either side of the line.
pub fn draw(path: &Path, title: &str, subtitle: &str, bars: &[Bar]) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let height = FRAME + ROW * bars.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .and_then(|r| r.titled(subtitle, ("sans-serif", 13)))
        .map_err(|e| failed(&e))?;

    let n = bars.len();
    let ratios = bars.iter().map(|b| b.ratio).filter(|r| *r > 0.0);
    let x_min = ratios.clone().fold(0.5, f64::min) / 1.3;
    let x_max = ratios.fold(2.0, f64::max) * 1.3;
    // Bar i is centred on y = n - 1 - i, so the first bar is at the top.
    let y_of = |i: usize| (n - 1 - i) as f64;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(250)
        .build_cartesian_2d(
            (x_min..x_max)
                .log_scale()
                .with_key_points(powers_of_two(x_min, x_max)),
            -0.5f64..n as f64 - 0.5,
        )
        .map_err(|e| failed(&e))?;
    let label_of = |y: &f64| {
        let i = n as f64 - 1.0 - y.round();
        if (y - y.round()).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            bars[i as usize].label.clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x}"))
        .x_desc(
            "B / A, medians, log scale (blue: higher is better, so above 1 B is better; \
             orange: lower is better, so below 1 B is better)",
        )
        .y_desc("scenario: figure")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| failed(&e))?;

    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.ratio > 0.0)
                .map(|(i, b)| {
                    let y = y_of(i);
                    let colour = if b.higher_is_better {
                        HIGHER_BETTER
                    } else {
                        LOWER_BETTER
                    };
                    Rectangle::new(
                        [(1.0, y - 0.32), (b.ratio, y + 0.32)],
                        colour.mix(0.7).filled(),
                    )
                }),
        )
        .map_err(|e| failed(&e))?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.ratio > 0.0)
                .map(|(i, b)| {
                    // The value just past the bar's far end.
                    let (at, h) = if b.ratio >= 1.0 {
                        (b.ratio * 1.02, HPos::Left)
                    } else {
                        (b.ratio / 1.02, HPos::Right)
                    };
                    let style = TextStyle::from(("sans-serif", 12).into_font())
                        .pos(Pos::new(h, VPos::Center));
                    Text::new(
                        format!("{:.2}", b.ratio),
                        (at.clamp(x_min, x_max), y_of(i)),
                        style,
                    )
                }),
        )
        .map_err(|e| failed(&e))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, -0.5), (1.0, n as f64 - 0.5)],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}

/// 1, 2, 4, ... and 1/2, 1/4, ... between `min` and `max`: the ratio axis's ticks.
fn powers_of_two(min: f64, max: f64) -> Vec<f64> {
    (-20..=20)
        .map(|e| 2f64.powi(e))
        .filter(|x| (min..=max).contains(x))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_ratios_on_both_sides_of_one() {
        let path = std::env::temp_dir().join(format!("anytls-chart-{}.svg", std::process::id()));
        let bar = |label: &str, ratio, higher_is_better| Bar {
            label: label.to_owned(),
            ratio,
            higher_is_better,
        };
        let bars = [
            bar("up: MB/s", 0.5, true),
            bar("up: server CPU-s/GB", 2.0, false),
            bar("streams-rate: first byte p99 us", 23.7, false),
            bar("idle-1000: RSS KiB/session", 1.0, false),
        ];
        draw(&path, "title", "subtitle", &bars).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        if std::env::var_os("KEEP_CHART").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in ["0.50", "2.00", "23.70", "streams-rate: first byte p99 us"] {
            assert!(svg.contains(text), "no {text} in {svg}");
        }
    }
}
