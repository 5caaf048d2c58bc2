//! Chart plumbing shared by the memory profiler (`profile::chart`) and the analysis tools
//! (`analysis::plot`): the [`Chart`] trait, PNG + SVG output written atomically, the
//! bundled font (`assets/DejaVuSans.ttf`, so no system fontconfig is needed), a row axis
//! for labelled bars, and [`NiceAxis`], the linear axis every chart uses so that its tick
//! steps are 1, 2, 2.5 or 5 × 10^k and its labels carry exactly the decimals the step needs
//! ([`nice_step`], [`tick_label`]). A leaf: it uses nothing of the crate but its error type.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{
    DefaultFormatting, KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter,
};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static FONT_ONCE: Once = Once::new();

/// Register the bundled font as plotters' `sans-serif` (once per process). Charts use even
/// sizes: plotters' ab_glyph rasterizer truncates each glyph's offset from half the size,
/// which at odd sizes (seen at 11 and 13 px) lifts the decimal point a pixel or two off
/// the baseline of the digits in PNGs.
pub fn ensure_font() {
    FONT_ONCE.call_once(|| {
        // the bundled file is a valid TrueType font; a failure would show as missing text
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A drawing error as the library's error.
pub(crate) fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::state(format!("drawing a chart: {e}"))
}

/// Something drawable on any plotters backend.
pub trait Chart {
    /// The chart's (width, height) in pixels.
    fn size(&self) -> (u32, u32);
    /// Draw the chart onto `area`, which `to_svg` and `write_both` fill white first; drawing
    /// errors are returned as `Error::State`.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// The chart as an SVG document.
pub fn to_svg(chart: &impl Chart) -> Result<String> {
    ensure_font();
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, chart.size()).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        chart.draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(s)
}

/// Write `chart` as `stem.png` and `stem.svg`, each atomically; returns both paths.
pub fn write_both(chart: &impl Chart, stem: &Path) -> Result<Vec<PathBuf>> {
    ensure_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let tmp = temp_path(&png);
    let drawn = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, chart.size()).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        chart.draw(&root)?;
        root.present().map_err(draw_err)?;
        Ok(())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &png).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(&png, e)
    })?;
    write_atomic(&svg, to_svg(chart)?.as_bytes())?;
    Ok(vec![png, svg])
}

/// A y axis of `n` rows, 0..n, with one tick in the middle of each row (for labelled bars
/// and strips).
#[derive(Clone, Copy)]
pub struct RowAxis(pub usize);

impl Ranged for RowAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = v / self.0.max(1) as f64;
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }
    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0 as f64
    }
}

/// The smallest "nice" step (1, 2, 2.5 or 5 × 10^k) that puts at most `max_ticks` ticks
/// on an axis spanning `span`, wherever the span starts (and, for `max_ticks` >= 4, at
/// least two: consecutive nice steps are at most 2× apart). A span that is zero or not
/// finite gets step 1 (there is nothing to divide; an axis should not be empty anyway).
pub fn nice_step(span: f64, max_ticks: usize) -> f64 {
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    // a window of width `span` holds floor(span / step) + 1 multiples of `step` when it
    // starts on one (and no more otherwise): at most n when step > span / n
    let raw = span / max_ticks.max(2) as f64;
    let mut mag = 10f64.powi(raw.log10().floor() as i32);
    loop {
        for m in [1.0, 2.0, 2.5, 5.0] {
            // strictly above, with a relative tolerance: `raw` itself may be a nice step
            // up to rounding, and then one tick too many fits
            if m * mag > raw * (1.0 + 1e-9) {
                return m * mag;
            }
        }
        mag *= 10.0;
    }
}

/// How many decimals labels at multiples of `step` need to be exact and distinct: 0 for
/// 1, 5, 10; 1 for 0.5 and 2.5; 2 for 0.25 and 0.01 (at most 12).
pub fn step_decimals(step: f64) -> usize {
    if !step.is_finite() || step <= 0.0 {
        return 0;
    }
    (0..12)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() <= 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(12)
}

/// The label of tick `v` on an axis whose ticks are `step` apart.
pub fn tick_label(v: f64, step: f64) -> String {
    let d = step_decimals(step);
    // a tick computed as k × step may land a hair below zero: no "-0.0"
    let v = if v.abs() < step.abs() * 1e-9 { 0.0 } else { v };
    format!("{v:.d$}")
}

/// The label of tick `v` on a log axis (1, 2, 5, 10, 20 … × 10^k): the decimals of its own
/// decade, so 0.5 and 20 rather than 0.50000 and 20.0.
pub fn log_tick_label(v: &f64) -> String {
    if !(v.is_finite() && *v > 0.0) {
        return format!("{v}");
    }
    tick_label(*v, 10f64.powi(v.log10().floor() as i32))
}

/// The ticks (multiples of `step`) in `lo..=hi`, computed as integer multiples so that no
/// rounding error accumulates.
pub fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && step > 0.0) || hi < lo {
        return Vec::new();
    }
    let eps = step * 1e-9;
    let first = ((lo - eps) / step).ceil() as i64;
    let last = ((hi + eps) / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A linear f64 axis over `lo..hi` whose labelled ticks are at a nice step (see
/// [`nice_step`]) and whose labels are formatted by [`tick_label`] with that step: charts
/// use it instead of a plain `lo..hi` so that plotters' own tick choice and a fixed `{:.N}`
/// format cannot disagree (half steps printed as 0, 0, 1, 2, 2 …). The number of labels is
/// the axis's own (`labels`), not the mesh's `x_labels`/`y_labels`, because the formatter
/// must know the step the ticks were chosen with.
#[derive(Clone, Copy, Debug)]
pub struct NiceAxis {
    /// The axis's lower end.
    pub lo: f64,
    /// The axis's upper end.
    pub hi: f64,
    /// At most this many labelled ticks.
    pub labels: usize,
    /// No tick step below this (1.0 for counts such as sequence numbers).
    pub min_step: f64,
}

impl NiceAxis {
    /// `lo..hi` with at most 10 labelled ticks (plotters' default count).
    pub fn new(lo: f64, hi: f64) -> Self {
        NiceAxis {
            lo,
            hi,
            labels: 10,
            min_step: 0.0,
        }
    }
    /// At most `n` labelled ticks.
    pub fn labels(self, n: usize) -> Self {
        NiceAxis { labels: n, ..self }
    }
    /// An axis of counts: no tick step below `min_step`.
    pub fn min_step(self, min_step: f64) -> Self {
        NiceAxis { min_step, ..self }
    }
    /// The step of the labelled ticks.
    pub fn tick_step(&self) -> f64 {
        nice_step(self.hi - self.lo, self.labels).max(self.min_step)
    }
}

impl Ranged for NiceAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        let f = if span > 0.0 {
            (v - self.lo) / span
        } else {
            0.5
        };
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let bold = self.tick_step();
        let step = match hint.weight() {
            KeyPointWeight::Bold => bold,
            // light grid lines subdivide the labelled step (by 5 for 1 and 5, by 4 for 2,
            // by 5 for 2.5: 0.2, 0.5, 0.5, 1 of the mantissa), as far as the hint allows
            KeyPointWeight::Any => {
                let m = bold / 10f64.powi(bold.log10().floor() as i32);
                let div = if (m - 2.0).abs() < 1e-6 { 4.0 } else { 5.0 };
                let light = (bold / div).max(self.min_step);
                if (self.hi - self.lo) / light + 1.0 <= hint.max_num_points() as f64 {
                    light
                } else {
                    bold
                }
            }
        };
        ticks(self.lo, self.hi, step)
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for NiceAxis {
    // only plotters' combinators call the step-less form; never panic in a chart
    fn format(v: &f64) -> String {
        format!("{v}")
    }
    fn format_ext(&self, v: &f64) -> String {
        tick_label(*v, self.tick_step())
    }
}

/// A log10 f64 axis over `lo..hi` (both > 0): labelled ticks at 1, 2 and 5 × 10^k (only
/// 1 × 10^k when that would be more than `labels`), light lines at every integer multiple
/// of 10^k, labels by [`log_tick_label`]. plotters' own log axis labels every light line
/// of a short range (1, 2, 3 … 9, 10 on top of each other).
#[derive(Clone, Copy, Debug)]
pub struct LogAxis {
    /// The axis's lower end (> 0).
    pub lo: f64,
    /// The axis's upper end (≥ `lo`).
    pub hi: f64,
    /// At most this many labelled ticks (a decade's 1 × 10^k is kept even beyond it).
    pub labels: usize,
}

impl LogAxis {
    /// `lo..hi` with at most 8 labelled ticks.
    pub fn new(lo: f64, hi: f64) -> Self {
        LogAxis { lo, hi, labels: 8 }
    }
    /// The multiples m × 10^k (m in `mantissas`) in lo..=hi.
    fn multiples(&self, mantissas: &[f64]) -> Vec<f64> {
        if !(self.lo > 0.0 && self.hi >= self.lo && self.hi.is_finite()) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for k in self.lo.log10().floor() as i32..=self.hi.log10().ceil() as i32 {
            let p = 10f64.powi(k);
            for m in mantissas {
                let v = m * p;
                if v >= self.lo * (1.0 - 1e-9) && v <= self.hi * (1.0 + 1e-9) {
                    out.push(v);
                }
            }
        }
        out
    }
    /// The labelled ticks.
    pub fn label_ticks(&self) -> Vec<f64> {
        let fine = self.multiples(&[1.0, 2.0, 5.0]);
        if fine.len() <= self.labels.max(2) {
            fine
        } else {
            self.multiples(&[1.0])
        }
    }
}

impl Ranged for LogAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.lo.log10(), self.hi.log10());
        let f = if b > a && *v > 0.0 {
            (v.log10() - a) / (b - a)
        } else {
            0.5
        };
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let bold = self.label_ticks();
        match hint.weight() {
            KeyPointWeight::Bold => bold,
            KeyPointWeight::Any => {
                let light = self.multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
                if light.len() <= hint.max_num_points() {
                    light
                } else {
                    bold
                }
            }
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for LogAxis {
    fn format(v: &f64) -> String {
        log_tick_label(v)
    }
}

/// Write `bytes` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// A temporary name beside `path` (same directory, so that a rename is atomic).
pub fn temp_path(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    // keep the extension last: the PNG encoder picks its format from it
    path.with_file_name(format!(".{name}.tmp-{}{ext}", std::process::id()))
}

pub(crate) fn io_err(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Io {
        context: format!("writing {}", path.display()),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::{BoldPoints, LightPoints};

    /// The nice step below `step` (5 → 2.5 → 2 → 1 → 0.5 …).
    fn smaller_nice(step: f64) -> f64 {
        let mag = 10f64.powi(step.log10().floor() as i32);
        let m = step / mag;
        let prev = [(5.0, 2.5), (2.5, 2.0), (2.0, 1.0)]
            .iter()
            .find(|(x, _)| (m - x).abs() < 1e-6)
            .map_or(0.5, |&(_, p)| p);
        prev * mag
    }

    /// The labels an axis over `lo..hi` with at most `n` labels shows.
    fn labels(lo: f64, hi: f64, n: usize) -> Vec<String> {
        let axis = NiceAxis::new(lo, hi).labels(n);
        axis.key_points(BoldPoints(n))
            .iter()
            .map(|v| axis.format_ext(v))
            .collect()
    }

    #[test]
    fn steps_are_nice_and_fit() {
        for (span, n, want) in [
            (3.5, 10, 0.5),
            (10.0, 11, 1.0),
            (10.0, 10, 2.0),
            (1.0, 5, 0.25),
            (7.0, 4, 2.0),
            (900.0, 10, 100.0),
            (0.03, 4, 0.01),
            (1e-4, 5, 2.5e-5),
        ] {
            let s = nice_step(span, n);
            assert!(
                (s - want).abs() < want * 1e-9,
                "span {span}, {n} ticks: {s}"
            );
        }
        // every span: a step of 1, 2, 2.5 or 5 × 10^k that keeps the tick count in bounds,
        // and the next smaller nice step would not
        for i in 1..400 {
            let span = 0.0137 * 1.07f64.powi(i);
            for n in [2, 4, 6, 10] {
                let s = nice_step(span, n);
                let m = s / 10f64.powi(s.log10().floor() as i32);
                assert!(
                    [1.0, 2.0, 2.5, 5.0].iter().any(|x| (m - x).abs() < 1e-9),
                    "span {span}: step {s}"
                );
                assert!(ticks(0.0, span, s).len() <= n, "span {span}, {n}: step {s}");
                assert!(
                    ticks(0.0, span, smaller_nice(s)).len() > n,
                    "span {span}, {n}: step {s} is not the smallest"
                );
            }
        }
        assert_eq!(nice_step(0.0, 10), 1.0);
        assert_eq!(nice_step(f64::NAN, 10), 1.0);
    }

    #[test]
    fn decimals_follow_the_step() {
        for (step, d) in [
            (1.0, 0),
            (5.0, 0),
            (100.0, 0),
            (2.5, 1),
            (0.5, 1),
            (0.25, 2),
            (0.01, 2),
            (2.5e-5, 6),
        ] {
            assert_eq!(step_decimals(step), d, "step {step}");
        }
        assert_eq!(tick_label(3.0 * 0.1, 0.1), "0.3");
        assert_eq!(tick_label(-1e-17, 0.5), "0.0");
        assert_eq!(tick_label(-0.75, 0.25), "-0.75");
        assert_eq!(tick_label(2000.0, 500.0), "2000");
        let log: Vec<String> = [0.03, 0.5, 1.0, 2.0, 20.0, 300.0]
            .iter()
            .map(log_tick_label)
            .collect();
        assert_eq!(log, ["0.03", "0.5", "1", "2", "20", "300"]);
    }

    #[test]
    fn labels_are_distinct_and_exact() {
        // the memory timeline's case: 0..3.5 MiB used to read 0, 0, 1, 2, 2, 2, 3, 4
        assert_eq!(
            labels(0.0, 3.5, 10),
            ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5"]
        );
        assert_eq!(labels(-0.3, 0.3, 4), ["-0.2", "0.0", "0.2"]);
        assert_eq!(labels(0.01, 0.163, 4), ["0.05", "0.10", "0.15"]);
        assert_eq!(labels(0.0, 4.2, 5), ["0", "1", "2", "3", "4"]);
        for (lo, hi) in [
            (0.0, 3.5),
            (0.0, 0.7),
            (-1.3, 2.9),
            (0.002, 0.0091),
            (0.0, 5400.0),
        ] {
            for n in [4, 5, 6, 10] {
                let l = labels(lo, hi, n);
                let mut d = l.clone();
                d.dedup();
                assert_eq!(d, l, "{lo}..{hi}, {n}");
                assert!(l.len() >= 2 && l.len() <= n, "{lo}..{hi}, {n}: {l:?}");
                // the step in the labels is the axis's step, shown exactly
                let a = NiceAxis::new(lo, hi).labels(n);
                for (v, t) in a.key_points(BoldPoints(n)).iter().zip(&l) {
                    assert!(
                        (t.parse::<f64>().unwrap() - v).abs() < a.tick_step() * 1e-6,
                        "{t}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_axis_labels() {
        let label = |lo: f64, hi: f64| -> Vec<String> {
            let a = LogAxis::new(lo, hi);
            a.key_points(BoldPoints(10))
                .iter()
                .map(|v| a.format_ext(v))
                .collect()
        };
        // a training loss with an early spike: 0.4 .. 32
        assert_eq!(label(0.4, 32.0), ["0.5", "1", "2", "5", "10", "20"]);
        // many decades: powers of ten only
        assert_eq!(
            label(0.8, 2e5),
            ["1", "10", "100", "1000", "10000", "100000"]
        );
        let a = LogAxis::new(0.4, 32.0);
        let light = a.key_points(LightPoints::new(10, 100));
        // 0.4 … 0.9, 1 … 9, 10, 20, 30
        assert_eq!(light.len(), 6 + 9 + 3, "{light:?}");
        assert_eq!(a.map(&0.4, (0, 100)), 0);
        assert_eq!(a.map(&32.0, (0, 100)), 100);
        assert_eq!(a.map(&(0.4f64 * 32.0).sqrt(), (0, 100)), 50);
    }

    #[test]
    fn counts_and_light_lines() {
        // sequence numbers: no fractional ticks however short the axis
        let a = NiceAxis::new(0.0, 3.0).min_step(1.0);
        assert_eq!(a.key_points(BoldPoints(10)), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(a.format_ext(&2.0), "2");
        // light lines subdivide the labelled ticks and include them
        let a = NiceAxis::new(0.0, 4.0).labels(5);
        let bold = a.key_points(BoldPoints(5));
        let light = a.key_points(LightPoints::new(5, 50));
        assert_eq!(bold, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(light.len(), 21);
        assert!(bold
            .iter()
            .all(|b| light.iter().any(|l| (l - b).abs() < 1e-12)));
        // too many light lines for the hint: the labelled ticks only
        assert_eq!(a.key_points(LightPoints::new(5, 6)), bold);
    }
}
