//! Charts of the analysis tools: a grid of histograms and side-by-side feature-map
//! heatmaps (PNG + SVG through `crate::plot`).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{FeatureMap, LayerStats};
use crate::plot::{draw_err, write_both, Chart, NiceAxis};
use crate::Result;

/// One histogram per entry (log-scale counts, so that heavy tails show), `cols` per row,
/// under a legend: bar colour by layer kind, and the dashed lines at mean ± 3σ (the
/// share of values beyond them is printed over each panel).
pub struct HistogramGrid<'a> {
    /// The chart's title, drawn above the legend.
    pub title: String,
    /// One panel per entry, in order.
    pub entries: Vec<&'a LayerStats>,
    /// Panels per row.
    pub cols: usize,
}

const PANEL: (u32, u32) = (340, 280);
/// Title and legend rows above the panels.
const HEAD: u32 = 66;
const LINEAR_COLOR: RGBColor = RGBColor(31, 119, 180);
const QUAD_COLOR: RGBColor = RGBColor(214, 39, 40);
const SIGMA_COLOR: RGBColor = RGBColor(90, 90, 90);

/// The ±3σ line's dash pattern, in the legend and in the panels.
fn sigma_line<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    from: (i32, i32),
    to: (i32, i32),
) -> Result<()> {
    area.draw(&DashedPathElement::new(
        vec![from, to],
        5,
        4,
        SIGMA_COLOR.stroke_width(2),
    ))
    .map_err(draw_err)
}

impl Chart for HistogramGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let cols = self.cols.max(1);
        let rows = self.entries.len().div_ceil(cols).max(1);
        (PANEL.0 * cols as u32, HEAD + PANEL.1 * rows as u32)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let cols = self.cols.max(1);
        let rows = self.entries.len().div_ceil(cols).max(1);
        let (head, body) = root.split_vertically(HEAD);
        head.draw(&Text::new(
            self.title.as_str(),
            (head.dim_in_pixel().0 as i32 / 2, 6),
            TextStyle::from(("sans-serif", 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(draw_err)?;
        // the legend: only the kinds present
        let font = TextStyle::from(("sans-serif", 14).into_font());
        let mut x = 16;
        let y = 48;
        let kinds = [
            (false, LINEAR_COLOR, "linear layer: count per bin"),
            (true, QUAD_COLOR, "quadratic layer: count per bin"),
        ];
        for (quad, col, what) in kinds {
            if !self.entries.iter().any(|e| e.quadratic == quad) {
                continue;
            }
            head.draw(&Rectangle::new(
                [(x, y - 6), (x + 18, y + 6)],
                col.mix(0.8).filled(),
            ))
            .map_err(draw_err)?;
            head.draw(&Text::new(
                what,
                (x + 24, y),
                font.clone().pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(draw_err)?;
            x += 30 + 8 * what.len() as i32;
        }
        sigma_line(&head, (x, y), (x + 24, y))?;
        head.draw(&Text::new(
            "mean ± 3σ (share beyond: >3σ)",
            (x + 30, y),
            font.clone().pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(draw_err)?;

        let panels = body.split_evenly((rows, cols));
        for (e, area) in self.entries.iter().zip(panels.iter()) {
            let s = &e.stats;
            let h = &s.histogram;
            let (lo, hi) = if h.hi > h.lo {
                (h.lo, h.hi)
            } else {
                (h.lo - 0.5, h.lo + 0.5)
            };
            let top = h.counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 2.0;
            let name = if e.name.len() > 34 {
                format!("…{}", &e.name[e.name.len() - 33..])
            } else {
                e.name.clone()
            };
            // two lines over the panel: the tensor, then its statistics (inside the plot
            // they covered the tallest bars)
            let (label, plot) = area.split_vertically(38);
            let cx = label.dim_in_pixel().0 as i32 / 2;
            label
                .draw(&Text::new(
                    format!("{}{}", name, if e.quadratic { " (quad)" } else { "" }),
                    (cx, 4),
                    TextStyle::from(("sans-serif", 16).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(draw_err)?;
            label
                .draw(&Text::new(
                    format!(
                        "μ {:.3}   σ {:.3}   >3σ {:.2}%",
                        s.mean,
                        s.std,
                        100.0 * s.extreme_share
                    ),
                    (cx, 22),
                    ("sans-serif", 14)
                        .into_font()
                        .color(&BLACK.mix(0.75))
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(draw_err)?;
            let mut chart = ChartBuilder::on(&plot)
                .margin_left(6)
                .margin_right(14)
                .margin_bottom(4)
                .x_label_area_size(40)
                .y_label_area_size(58)
                .build_cartesian_2d(NiceAxis::new(lo, hi).labels(5), (0.8f64..top).log_scale())
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .y_labels(4)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 14))
                .x_desc("value")
                .y_desc("count (log)")
                .y_label_formatter(&|v| {
                    if *v >= 1000.0 {
                        format!("{:.0e}", v)
                    } else {
                        format!("{v:.0}")
                    }
                })
                .draw()
                .map_err(draw_err)?;
            let w = (hi - lo) / h.counts.len().max(1) as f64;
            let col = if e.quadratic {
                QUAD_COLOR
            } else {
                LINEAR_COLOR
            };
            chart
                .draw_series(
                    h.counts
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c > 0)
                        .map(|(i, &c)| {
                            let x0 = lo + i as f64 * w;
                            Rectangle::new([(x0, 0.8), (x0 + w, c as f64)], col.mix(0.8).filled())
                        }),
                )
                .map_err(draw_err)?;
            // mean ± 3σ, where inside the histogram's range
            for x in [s.mean - 3.0 * s.std, s.mean + 3.0 * s.std] {
                if x > lo && x < hi {
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(x, 0.8), (x, top)],
                            5,
                            4,
                            SIGMA_COLOR.stroke_width(2),
                        ))
                        .map_err(draw_err)?;
                }
            }
        }
        Ok(())
    }
}

/// Write a histogram grid of `entries` as `stem.png` and `stem.svg`.
pub fn write_histogram_grid(
    title: &str,
    entries: &[&LayerStats],
    cols: usize,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    write_both(
        &HistogramGrid {
            title: title.to_string(),
            entries: entries.to_vec(),
            cols,
        },
        stem,
    )
}

/// Heatmaps side by side, each on its own colour scale (viridis), with a colour bar that
/// names the scale's ends.
pub struct FeatureMapChart<'a> {
    /// The chart's title.
    pub title: String,
    /// One heatmap per map, left to right.
    pub maps: &'a [FeatureMap],
}

/// The colour bar under each heatmap: height of the bar, then of its labels.
const BAR: (u32, u32) = (16, 44);

impl Chart for FeatureMapChart<'_> {
    fn size(&self) -> (u32, u32) {
        (360 * self.maps.len().max(1) as u32, 480)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let root = root
            .titled(&self.title, ("sans-serif", 22))
            .map_err(draw_err)?;
        let panels = root.split_evenly((1, self.maps.len().max(1)));
        for (m, area) in self.maps.iter().zip(panels.iter()) {
            let (mn, mx) = m
                .values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let span = if mx > mn { mx - mn } else { 1.0 };
            let (w, h) = area.dim_in_pixel();
            let (map_area, bar_area) = area.split_vertically(h - BAR.0 - BAR.1);
            let mut chart = ChartBuilder::on(&map_area)
                .caption(
                    format!(
                        "{}: {} ({}×{} px, mean of {} ch)",
                        m.model, m.layer, m.width, m.height, m.channels
                    ),
                    ("sans-serif", 16),
                )
                .margin(10)
                .build_cartesian_2d(0..m.width as i32, 0..m.height as i32)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_axes()
                .draw()
                .map_err(draw_err)?;
            chart
                .draw_series(
                    (0..m.height)
                        .flat_map(|y| (0..m.width).map(move |x| (x, y)))
                        .map(|(x, y)| {
                            let v = (m.values[y * m.width + x] - mn) / span;
                            let c = ViridisRGB.get_color(v);
                            // row 0 at the top
                            let yy = (m.height - 1 - y) as i32;
                            Rectangle::new([(x as i32, yy), (x as i32 + 1, yy + 1)], c.filled())
                        }),
                )
                .map_err(draw_err)?;
            // the colour bar: the scale from this map's min (left) to its max (right)
            let (x0, x1) = (24, w as i32 - 24);
            let steps = 64;
            for i in 0..steps {
                let a = x0 + (x1 - x0) * i / steps;
                let b = x0 + (x1 - x0) * (i + 1) / steps;
                let c = ViridisRGB.get_color((i as f32 + 0.5) / steps as f32);
                bar_area
                    .draw(&Rectangle::new([(a, 0), (b, BAR.0 as i32)], c.filled()))
                    .map_err(draw_err)?;
            }
            bar_area
                .draw(&Rectangle::new(
                    [(x0, 0), (x1, BAR.0 as i32)],
                    BLACK.mix(0.6),
                ))
                .map_err(draw_err)?;
            let font = TextStyle::from(("sans-serif", 14).into_font());
            let y = BAR.0 as i32 + 4;
            for (x, text, hpos) in [
                (x0, format!("{mn:.3}"), HPos::Left),
                (x1, format!("{mx:.3}"), HPos::Right),
                (
                    (x0 + x1) / 2,
                    "channel mean (min → max)".into(),
                    HPos::Center,
                ),
            ] {
                bar_area
                    .draw(&Text::new(
                        text,
                        (x, y),
                        font.clone().pos(Pos::new(hpos, VPos::Top)),
                    ))
                    .map_err(draw_err)?;
            }
        }
        Ok(())
    }
}

/// Write feature maps side by side as `stem.png` and `stem.svg`.
pub fn write_feature_maps(title: &str, maps: &[FeatureMap], stem: &Path) -> Result<Vec<PathBuf>> {
    write_both(
        &FeatureMapChart {
            title: title.to_string(),
            maps,
        },
        stem,
    )
}
