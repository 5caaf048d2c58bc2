//! Charts of the memory profiler (plotters): the timeline of a training step and the
//! per-layer saved-for-backward bars, each as PNG and SVG, written atomically (a temporary
//! file, then a rename). Text is drawn with the bundled DejaVu Sans (`assets/`), so no
//! system font or fontconfig is needed.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{mib, phase_name, ModeComparison};
use crate::device::alloc::Phase;
use crate::Result;

// The plumbing lives in `crate::plot` (shared with the analysis charts); these are its old
// paths.
pub(crate) use crate::plot::draw_err;
use crate::plot::NiceAxis;
pub use crate::plot::{ensure_font, to_svg, write_both, Chart, RowAxis};

/// Mode colours: stored, recompute, planned, then others.
pub const MODE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// The colour of configuration `label`, the `i`-th drawn: fixed for `stored`, `recompute`
/// and `planned`, the other three colours in turn for other labels.
pub fn mode_color(label: &str, i: usize) -> RGBColor {
    match label {
        "stored" => MODE_COLORS[0],
        "recompute" => MODE_COLORS[1],
        "planned" => MODE_COLORS[2],
        _ => MODE_COLORS[3 + i % 3],
    }
}

/// The fill colour of phase `p` in the timeline's phase strips.
pub fn phase_color(p: Phase) -> RGBColor {
    match p {
        Phase::Forward => RGBColor(158, 202, 225),
        Phase::Backward => RGBColor(253, 174, 107),
        Phase::Optimizer => RGBColor(161, 217, 155),
        Phase::Other => RGBColor(210, 210, 210),
    }
}

// ---- the timeline ----------------------------------------------------------------------------

/// Total allocated bytes (MiB) against the allocation sequence of one training step, one
/// line per configuration, with a strip per configuration showing its phases.
pub struct TimelineChart<'a> {
    /// The profiles whose recorded steps are drawn.
    pub comparison: &'a ModeComparison,
}

impl Chart for TimelineChart<'_> {
    fn size(&self) -> (u32, u32) {
        (1200, 720)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.comparison;
        let n = c.profiles.len().max(1);
        let strip_h = 40 + 34 * n as u32;
        let (h_main, _) = (self.size().1 - strip_h, 0);
        let (top, bottom) = root.split_vertically(h_main);
        let max_x = c
            .profiles
            .iter()
            .map(|p| p.timeline.len())
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_y = c
            .profiles
            .iter()
            .map(|p| mib(p.timeline_peak_total.max(p.peak_total)))
            .fold(1e-3, f64::max)
            // head room for the legend above the lines
            * 1.55;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!(
                    "{}: device memory over one training step (batch {})",
                    c.model, c.batch
                ),
                ("sans-serif", 26),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            // nice steps, labels with the decimals they need (a 3.5 MiB step at a 0.5 step
            // used to read 0, 0, 1, 2, 2 …); sequence numbers are whole
            .build_cartesian_2d(
                NiceAxis::new(0.0, max_x).min_step(1.0),
                NiceAxis::new(0.0, max_y),
            )
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("allocation event in the step (sequence number)")
            .y_desc("allocated (MiB)")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_err)?;
        for (i, p) in c.profiles.iter().enumerate() {
            let col = mode_color(&p.label, i);
            chart
                .draw_series(LineSeries::new(
                    p.timeline.iter().map(|t| (t.index as f64, mib(t.total))),
                    col.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(format!(
                    "{}: peak {:.1} MiB, kept for backward {:.1} MiB",
                    p.label,
                    mib(p.peak_total),
                    mib(p.saved_total())
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(3))
                });
            // the peak
            if let Some(t) = p.timeline.iter().max_by_key(|t| t.total) {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (t.index as f64, mib(t.total)),
                        5,
                        col.filled(),
                    )))
                    .map_err(draw_err)?;
            }
        }
        // the dots are explained once, in black: their colour is their line's
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(draw_err)?
            .label("peak of each line (dot)")
            .legend(|(x, y)| Circle::new((x + 12, y), 5, BLACK.filled()));
        for ph in [
            Phase::Forward,
            Phase::Backward,
            Phase::Optimizer,
            Phase::Other,
        ] {
            let col = phase_color(ph);
            let what = if ph == Phase::Other {
                "between phases (frees)".to_string()
            } else {
                format!("{} phase (strips below)", phase_name(ph))
            };
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(draw_err)?
                .label(what)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 24, y + 6)], col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;

        // phase strips
        let labels: Vec<String> = c.profiles.iter().map(|p| p.label.clone()).collect();
        let mut strip = ChartBuilder::on(&bottom)
            .margin_left(12)
            .margin_right(12)
            .margin_bottom(8)
            .x_label_area_size(0)
            .y_label_area_size(80)
            // the same x mapping as the chart above (its axis is not drawn)
            .build_cartesian_2d(NiceAxis::new(0.0, max_x), RowAxis(n))
            .map_err(draw_err)?;
        strip
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .disable_x_axis()
            .label_style(("sans-serif", 16))
            .y_label_formatter(&|v| {
                let i = (v.floor() as usize).min(n - 1);
                // rows are drawn top to bottom
                labels.get(n - 1 - i).cloned().unwrap_or_default()
            })
            .draw()
            .map_err(draw_err)?;
        for (i, p) in c.profiles.iter().enumerate() {
            let y0 = (n - 1 - i) as f64 + 0.15;
            let y1 = y0 + 0.7;
            strip
                .draw_series(p.phase_spans.iter().map(|s| {
                    Rectangle::new(
                        [(s.start as f64, y0), (s.end as f64, y1)],
                        phase_color(s.phase).filled(),
                    )
                }))
                .map_err(draw_err)?;
        }
        Ok(())
    }
}

// ---- per-layer bars ----------------------------------------------------------------------------

/// Saved-for-backward MiB per layer (rows) for each configuration (grouped bars).
pub struct LayerChart<'a> {
    /// The profiles whose per-layer saved bytes are drawn.
    pub comparison: &'a ModeComparison,
    /// Show only quadratic layers.
    pub quadratic_only: bool,
}

impl LayerChart<'_> {
    fn rows(&self) -> Vec<&super::LayerComparison> {
        self.comparison
            .layers
            .iter()
            .filter(|l| l.saved.iter().any(|&b| b > 0))
            .filter(|l| !self.quadratic_only || l.quadratic)
            .collect()
    }
}

impl Chart for LayerChart<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.rows().len().max(1) as u32;
        (
            1200,
            170 + n * (10 + 9 * self.comparison.profiles.len() as u32),
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.comparison;
        let rows = self.rows();
        let n = rows.len().max(1);
        let m = c.profiles.len().max(1);
        let max_x = rows
            .iter()
            .flat_map(|l| l.saved.iter())
            .map(|&b| mib(b))
            .fold(1e-3, f64::max)
            * 1.12;
        let names: Vec<String> = rows
            .iter()
            .map(|l| {
                if l.quadratic {
                    format!("{} (quad)", l.layer)
                } else {
                    l.layer.clone()
                }
            })
            .collect();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{}: kept for backward per layer (batch {})",
                    c.model, c.batch
                ),
                ("sans-serif", 26),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(230)
            .build_cartesian_2d(NiceAxis::new(0.0, max_x), RowAxis(n))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("saved for backward at the end of the forward pass (MiB)")
            .y_desc("layer")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 18))
            .y_label_formatter(&|v| {
                let i = (v.floor() as usize).min(n - 1);
                names.get(n - 1 - i).cloned().unwrap_or_default()
            })
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_err)?;
        let band = 0.8 / m as f64;
        for (j, p) in c.profiles.iter().enumerate() {
            let col = mode_color(&p.label, j);
            chart
                .draw_series(rows.iter().enumerate().map(|(i, l)| {
                    let y_top = (n - 1 - i) as f64 + 0.9 - j as f64 * band;
                    Rectangle::new(
                        [(0.0, y_top - band), (mib(l.saved[j]), y_top)],
                        col.filled(),
                    )
                }))
                .map_err(draw_err)?
                .label(format!(
                    "{} (total {:.1} MiB)",
                    p.label,
                    mib(p.saved_total())
                ))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(draw_err)?;
        Ok(())
    }
}

/// Write the timeline chart as `stem.png` and `stem.svg`.
pub fn write_timeline_chart(c: &ModeComparison, stem: &Path) -> Result<Vec<PathBuf>> {
    write_both(&TimelineChart { comparison: c }, stem)
}

/// Write the per-layer chart as `stem.png` and `stem.svg` (`quadratic_only`: only the
/// quadratic layers' rows).
pub fn write_layer_chart(
    c: &ModeComparison,
    stem: &Path,
    quadratic_only: bool,
) -> Result<Vec<PathBuf>> {
    write_both(
        &LayerChart {
            comparison: c,
            quadratic_only,
        },
        stem,
    )
}
