//! A run's logs and chart: `metrics.jsonl` (one line per epoch), `steps.jsonl` (one line
//! per optimizer step) and `chart.svg` (loss and accuracy per epoch).

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::checkpoint;

/// Appends one line with a single write (a killed process leaves whole lines); `sync`:
/// flushed to disk before returning.
pub fn append_line(path: &Path, line: &str, sync: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if sync {
        f.sync_all()
            .with_context(|| format!("{}: cannot sync", path.display()))?;
    }
    Ok(())
}

/// Keeps the JSON lines of `path` for which `keep` holds, atomically, and returns them
/// parsed. Kept lines are written back byte for byte (a resumed run's earlier lines do not
/// drift through a float round trip). A last line without its newline is a torn append (a
/// killed process) and is dropped; any other line that is not JSON is an error naming the
/// file and line, and the file is left as it was.
pub fn filter_lines(path: &Path, keep: &dyn Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("{}: cannot read: {e}", path.display())),
    };
    let mut kept = Vec::new();
    let mut out = String::new();
    for (i, piece) in text.split_inclusive('\n').enumerate() {
        let (line, torn) = match piece.strip_suffix('\n') {
            Some(line) => (line, false),
            None => (piece, true),
        };
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                if keep(&v) {
                    out.push_str(line);
                    out.push('\n');
                    kept.push(v);
                }
            }
            Err(_) if torn => {}
            Err(e) => {
                return Err(anyhow!(
                    "{}: line {} is not JSON ({e}); the log is left as it is",
                    path.display(),
                    i + 1
                ))
            }
        }
    }
    checkpoint::write_atomic(path, out.as_bytes())?;
    Ok(kept)
}

type Series = Vec<(f64, f64)>;

fn series(history: &[Value], key: &str, scale: f64) -> Series {
    history
        .iter()
        .filter_map(|m| Some((m["epoch"].as_f64()?, scale * m[key].as_f64()?)))
        .collect()
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_label: &str,
    lines: &[(&str, Series, RGBColor)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = lines.iter().flat_map(|l| l.1.iter());
    let x_max = pts.clone().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max + 0.5, (lo - pad).max(0.0)..hi + pad)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (name, s, colour) in lines {
        let c = *colour;
        chart
            .draw_series(LineSeries::new(s.clone(), c.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
        chart
            .draw_series(s.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Renders the per-epoch metrics (`metrics.jsonl` lines) and writes the SVG atomically.
pub fn write_chart(path: &Path, title: &str, history: &[Value]) -> Result<()> {
    // text is drawn through ab_glyph with the bundled font: register it first
    crate::profile::chart::ensure_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| anyhow!("{e:?}"))?;
        let (left, right) = root.split_horizontally(500);
        let (train_c, test_c) = (RGBColor(31, 119, 180), RGBColor(214, 39, 40));
        panel(
            &left,
            "loss",
            "cross-entropy loss",
            &[
                ("train", series(history, "train_loss", 1.0), train_c),
                ("test", series(history, "test_loss", 1.0), test_c),
            ],
        )?;
        panel(
            &right,
            "accuracy",
            "accuracy (%)",
            &[
                ("train", series(history, "train_acc", 100.0), train_c),
                ("test", series(history, "test_acc", 100.0), test_c),
            ],
        )?;
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    checkpoint::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
