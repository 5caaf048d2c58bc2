//! Chart plumbing shared by the memory profiler (`profile::chart`) and the analysis tools
//! (`analysis::plot`): the [`Chart`] trait, PNG + SVG output written atomically, the
//! bundled font (`assets/DejaVuSans.ttf`, so no system fontconfig is needed), and a row
//! axis for labelled bars. A leaf: it uses nothing of the crate but its error type.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static FONT_ONCE: Once = Once::new();

/// Register the bundled font as plotters' `sans-serif` (once per process).
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
    fn size(&self) -> (u32, u32);
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
