//! Charts of the analysis tools: a grid of histograms and side-by-side feature-map
//! heatmaps (PNG + SVG through `profile::chart`).

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{FeatureMap, LayerStats};
use crate::plot::{draw_err, write_both, Chart};
use crate::Result;

/// One histogram per entry (log-scale counts, so that heavy tails show), `cols` per row.
pub struct HistogramGrid<'a> {
    pub title: String,
    pub entries: Vec<&'a LayerStats>,
    pub cols: usize,
}

const PANEL: (u32, u32) = (330, 240);

impl Chart for HistogramGrid<'_> {
    fn size(&self) -> (u32, u32) {
        let cols = self.cols.max(1);
        let rows = self.entries.len().div_ceil(cols).max(1);
        (PANEL.0 * cols as u32, 50 + PANEL.1 * rows as u32)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let cols = self.cols.max(1);
        let rows = self.entries.len().div_ceil(cols).max(1);
        let root = root
            .titled(&self.title, ("sans-serif", 24))
            .map_err(draw_err)?;
        let panels = root.split_evenly((rows, cols));
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
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{}{}", name, if e.quadratic { " (quad)" } else { "" }),
                    ("sans-serif", 14),
                )
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(40)
                .build_cartesian_2d(lo..hi, (0.8f64..top).log_scale())
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(4)
                .y_labels(4)
                .label_style(("sans-serif", 11))
                .x_label_formatter(&|v| format!("{v:.2}"))
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
                RGBColor(214, 39, 40)
            } else {
                RGBColor(31, 119, 180)
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
            // the 3σ band and the annotation
            for x in [s.mean - 3.0 * s.std, s.mean + 3.0 * s.std] {
                if x > lo && x < hi {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(x, 0.8), (x, top)],
                            BLACK.mix(0.5).stroke_width(1),
                        )))
                        .map_err(draw_err)?;
                }
            }
            let note = format!(
                "μ {:.3}  σ {:.3}  >3σ {:.2}%",
                s.mean,
                s.std,
                100.0 * s.extreme_share
            );
            area.draw(&Text::new(
                note,
                (50, 24),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.8)),
            ))
            .map_err(draw_err)?;
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

/// Heatmaps side by side, each on its own colour scale (viridis, min..max printed).
pub struct FeatureMapChart<'a> {
    pub title: String,
    pub maps: &'a [FeatureMap],
}

impl Chart for FeatureMapChart<'_> {
    fn size(&self) -> (u32, u32) {
        (360 * self.maps.len().max(1) as u32, 430)
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
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{}: {} ({} ch mean)", m.model, m.layer, m.channels),
                    ("sans-serif", 15),
                )
                .margin(10)
                .x_label_area_size(34)
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
            area.draw(&Text::new(
                format!("min {mn:.3}   max {mx:.3}   (dark → bright)"),
                (14, area.dim_in_pixel().1 as i32 - 22),
                ("sans-serif", 13).into_font(),
            ))
            .map_err(draw_err)?;
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
