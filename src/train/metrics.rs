//! A run's logs and chart: `metrics.jsonl` (one line per epoch), `steps.jsonl` (one line
//! per optimizer step) and `chart.{svg,png}` (loss per step and per epoch, accuracy per epoch).

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::checkpoint;
use crate::plot::{draw_err, Chart, LogAxis, NiceAxis};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};

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

/// (epoch, `key` × `scale`) of each `metrics.jsonl` line; the epoch number is the count of
/// finished epochs, so a point sits at the end of its epoch.
fn series(history: &[Value], key: &str, scale: f64) -> Series {
    history
        .iter()
        .filter_map(|m| Some((m["epoch"].as_f64()?, scale * m[key].as_f64()?)))
        .collect()
}

/// More steps than this are drawn as means of consecutive groups (a line of 10^5 points
/// is megabytes of SVG and no more readable than 5000 at 500 pixels).
const MAX_STEP_POINTS: usize = 5000;

/// The loss of every `steps.jsonl` line against the epoch as a fraction: step `b` (0-based)
/// of epoch `e` (1-based) of `n` steps per epoch at e - 1 + (b + 1) / n, so the last step
/// of an epoch meets that epoch's point. `n` is the largest batch index seen + 1: every
/// epoch has the same number of steps, and the chart is drawn at the end of an epoch, so
/// the log holds at least one whole epoch. Also returns how many steps each point means
/// (1 unless there are more than [`MAX_STEP_POINTS`]).
fn step_series(steps: &[Value]) -> (Series, usize) {
    let rows: Vec<(f64, f64, f64)> = steps
        .iter()
        .filter_map(|s| {
            Some((
                s["epoch"].as_f64()?,
                s["batch"].as_f64()?,
                s["loss"].as_f64()?,
            ))
        })
        .filter(|r| r.2.is_finite())
        .collect();
    let n = rows.iter().map(|r| r.1 + 1.0).fold(1.0, f64::max);
    let pts: Series = rows
        .iter()
        .map(|&(e, b, l)| (e - 1.0 + (b + 1.0) / n, l))
        .collect();
    let group = pts.len().div_ceil(MAX_STEP_POINTS).max(1);
    if group == 1 {
        return (pts, 1);
    }
    let means = pts
        .chunks(group)
        .map(|c| {
            let k = c.len() as f64;
            // at the group's last step, as a single step's point would be
            (c[c.len() - 1].0, c.iter().map(|p| p.1).sum::<f64>() / k)
        })
        .collect();
    (means, group)
}

/// One line of a panel: its legend text, points, colour, and whether it is the thin
/// per-step line (no markers) or per-epoch points joined by a line.
struct Line {
    name: String,
    points: Series,
    colour: RGBColor,
    per_step: bool,
}

/// A loss axis becomes logarithmic when its values span more than this factor: an early
/// spike of the per-step loss (20 nats in a run that ends at 0.5) would otherwise flatten
/// everything after it onto the bottom of the panel.
const LOG_RATIO: f64 = 10.0;

/// One panel; `allow_log`: a wide-ranging y may be drawn on a log scale (see
/// [`LOG_RATIO`]), which the y axis title then says.
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_label: &str,
    x_max: f64,
    lines: &[Line],
    legend_at: SeriesLabelPosition,
    allow_log: bool,
) -> crate::Result<()> {
    let pts = lines.iter().flat_map(|l| l.points.iter());
    let (lo, hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64);
    // epochs are counted: a 2-epoch run is not labelled 0.0, 0.2, …
    let x = NiceAxis::new(0.0, x_max).min_step(1.0);
    if allow_log && lo > 0.0 && hi > LOG_RATIO * lo {
        let chart = builder
            .build_cartesian_2d(x, LogAxis::new(lo / 1.25, hi * 1.25))
            .map_err(draw_err)?;
        let y_label = format!("{y_label}, log scale");
        draw_lines(chart, &y_label, lines, legend_at)
    } else {
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let y = NiceAxis::new((lo - pad).max(0.0), hi + pad).labels(8);
        let chart = builder.build_cartesian_2d(x, y).map_err(draw_err)?;
        draw_lines(chart, y_label, lines, legend_at)
    }
}

/// The mesh, the lines and the legend of a panel, on either kind of y axis.
fn draw_lines<'a, DB: DrawingBackend + 'a, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<NiceAxis, Y>>,
    y_label: &str,
    lines: &[Line],
    legend_at: SeriesLabelPosition,
) -> crate::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("epoch (steps at fractions of an epoch)")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(draw_err)?;
    // a log without steps (or a run without a test set) has no line to explain
    for l in lines.iter().filter(|l| !l.points.is_empty()) {
        let c = l.colour;
        if l.per_step {
            chart
                .draw_series(LineSeries::new(
                    l.points.clone(),
                    c.mix(0.45).stroke_width(1),
                ))
                .map_err(draw_err)?
                .label(l.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.45)));
            continue;
        }
        chart
            .draw_series(LineSeries::new(l.points.clone(), c.stroke_width(2)))
            .map_err(draw_err)?
            .label(l.name.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (20, 0)], c.stroke_width(2))
                    + Circle::new((10, 0), 4, c.filled())
            });
        chart
            .draw_series(l.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The training chart: loss (per step and per epoch) and accuracy (per epoch) side by side.
pub struct TrainingChart<'a> {
    pub title: &'a str,
    /// `metrics.jsonl` lines.
    pub history: &'a [Value],
    /// `steps.jsonl` lines.
    pub steps: &'a [Value],
}

impl Chart for TrainingChart<'_> {
    fn size(&self) -> (u32, u32) {
        (1100, 460)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> crate::Result<()> {
        let root = root
            .titled(self.title, ("sans-serif", 22))
            .map_err(draw_err)?;
        let (left, right) = root.split_horizontally(self.size().0 / 2);
        let (train_c, test_c) = (RGBColor(31, 119, 180), RGBColor(214, 39, 40));
        let (steps, group) = step_series(self.steps);
        let epochs = series(self.history, "train_loss", 1.0);
        let x_max = epochs.iter().chain(&steps).map(|p| p.0).fold(1.0, f64::max);
        let step_name = if group == 1 {
            "train, every step".to_string()
        } else {
            format!("train, mean of {group} steps")
        };
        panel(
            &left,
            "loss",
            "cross-entropy loss (nats)",
            x_max,
            &[
                Line {
                    name: step_name,
                    points: steps,
                    colour: train_c,
                    per_step: true,
                },
                Line {
                    name: "train, epoch mean".into(),
                    points: epochs,
                    colour: train_c,
                    per_step: false,
                },
                Line {
                    name: "test, end of epoch".into(),
                    points: series(self.history, "test_loss", 1.0),
                    colour: test_c,
                    per_step: false,
                },
            ],
            SeriesLabelPosition::UpperRight,
            true,
        )?;
        panel(
            &right,
            "accuracy",
            "accuracy (%)",
            x_max,
            &[
                Line {
                    name: "train, epoch mean".into(),
                    points: series(self.history, "train_acc", 100.0),
                    colour: train_c,
                    per_step: false,
                },
                Line {
                    name: "test, end of epoch".into(),
                    points: series(self.history, "test_acc", 100.0),
                    colour: test_c,
                    per_step: false,
                },
            ],
            SeriesLabelPosition::LowerRight,
            false,
        )
    }
}

/// The lines of a JSON-lines file that parse (a torn last line, of a killed run, does
/// not); none when the file is missing.
fn read_lines(path: &Path) -> Result<Vec<Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow!("{}: cannot read: {e}", path.display())),
    }
}

/// Renders the per-epoch metrics (`metrics.jsonl` lines) and the per-step losses of the
/// `steps.jsonl` beside `path` (the run directory's log), and writes `path` (`chart.svg`)
/// and the same drawing as PNG beside it (`chart.png`, to look at without a browser), each
/// atomically.
pub fn write_chart(path: &Path, title: &str, history: &[Value]) -> Result<()> {
    let steps = read_lines(&path.with_file_name("steps.jsonl"))?;
    let chart = TrainingChart {
        title,
        history,
        steps: &steps,
    };
    crate::plot::write_both(&chart, &path.with_extension(""))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `epochs` epochs of `n` steps: a loss falling from 2.3 with a saw-tooth, and the
    /// epoch lines `run.rs` writes.
    fn logs(epochs: usize, n: usize) -> (Vec<Value>, Vec<Value>) {
        let mut steps = Vec::new();
        let mut history = Vec::new();
        for e in 1..=epochs {
            let mut sum = 0.0;
            for b in 0..n {
                let k = ((e - 1) * n + b) as f64;
                let loss = 0.3 + 2.0 / (1.0 + 0.05 * k) + 0.1 * (b % 3) as f64;
                sum += loss;
                steps.push(json!({ "epoch": e, "batch": b, "step": k + 1.0, "loss": loss }));
            }
            history.push(json!({
                "epoch": e, "train_loss": sum / n as f64, "test_loss": 0.4 + 1.0 / e as f64,
                "train_acc": 0.5 + 0.1 * e as f64, "test_acc": 0.45 + 0.1 * e as f64,
            }));
        }
        (history, steps)
    }

    /// The number of points of each polyline of an SVG.
    fn polylines(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .filter_map(|p| {
                let pts = p.split("points=\"").nth(1)?.split('"').next()?;
                Some(pts.split_whitespace().count())
            })
            .collect()
    }

    #[test]
    fn steps_sit_at_fractions_of_their_epoch() {
        let (_, steps) = logs(2, 4);
        let (pts, group) = step_series(&steps);
        assert_eq!(group, 1);
        let xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]);
        assert_eq!(pts[5].1, steps[5]["loss"].as_f64().unwrap());
        // a resumed run's log starts mid-epoch; torn or foreign lines are skipped
        let (pts, _) = step_series(&[steps[6].clone(), json!({ "event": "x" }), steps[7].clone()]);
        assert_eq!(
            pts,
            [
                (1.75, steps[6]["loss"].as_f64().unwrap()),
                (2.0, steps[7]["loss"].as_f64().unwrap())
            ]
        );
    }

    #[test]
    fn long_logs_are_drawn_as_group_means() {
        let (_, steps) = logs(3, 4001);
        let (pts, group) = step_series(&steps);
        assert_eq!(group, 3);
        assert_eq!(pts.len(), 4001);
        let mean = (0..3)
            .map(|i| steps[i]["loss"].as_f64().unwrap())
            .sum::<f64>()
            / 3.0;
        assert!((pts[0].1 - mean).abs() < 1e-12);
        assert!((pts[0].0 - 3.0 / 4001.0).abs() < 1e-12);
        assert_eq!(pts.last().unwrap().0, 3.0);
    }

    #[test]
    fn chart_has_every_step_and_each_epoch() {
        let (history, steps) = logs(3, 40);
        let chart = TrainingChart {
            title: "qcnn on synthetic",
            history: &history,
            steps: &steps,
        };
        // PNG and SVG from the same drawing; the PNG is left for a look
        let dir = std::env::temp_dir().join(format!("quadra-train-chart-{}", std::process::id()));
        let files = crate::plot::write_both(&chart, &dir.join("chart")).unwrap();
        assert!(
            std::fs::metadata(&files[0]).unwrap().len() > 10_000,
            "{files:?}"
        );
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        for t in [
            "train, every step",
            "train, epoch mean",
            "test, end of epoch",
            "cross-entropy loss (nats)",
            "accuracy (%)",
            "epoch (steps at fractions of an epoch)",
        ] {
            assert!(svg.contains(t), "chart lacks `{t}`");
        }
        let lines = polylines(&svg);
        assert!(lines.contains(&120), "no line of the 120 steps: {lines:?}");
        // the epochs' lines (train and test loss, train and test accuracy)
        assert_eq!(lines.iter().filter(|&&n| n == 3).count(), 4, "{lines:?}");
        assert!(!svg.contains("log scale"));
    }

    #[test]
    fn a_loss_spike_puts_the_loss_on_a_log_scale() {
        // as a real run (qcnn, lr 0.05) did: 2.4, 5.5, 8.6, 18.6, 26.0, 23.0, 11.0, 3.4, …
        let (history, mut steps) = logs(3, 40);
        for (i, l) in [5.5, 8.6, 18.6, 26.0, 23.0, 11.0].iter().enumerate() {
            steps[i + 1]["loss"] = json!(l);
        }
        let chart = TrainingChart {
            title: "qcnn on synthetic",
            history: &history,
            steps: &steps,
        };
        let dir = std::env::temp_dir().join(format!("quadra-train-chart-{}", std::process::id()));
        let files = crate::plot::write_both(&chart, &dir.join("chart-spike")).unwrap();
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("cross-entropy loss (nats), log scale"));
        // the log axis's labels: powers of ten and their multiples, no "1.0" or "20.0"
        for t in [">1<", ">10<", ">20<"] {
            assert!(svg.replace('\n', "").contains(t), "no label {t}");
        }
        assert!(!svg.contains("accuracy (%), log scale"));
    }

    #[test]
    fn write_chart_reads_the_steps_beside_it() {
        let dir = std::env::temp_dir().join(format!("quadra-write-chart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (history, steps) = logs(2, 5);
        let chart = dir.join("chart.svg");
        write_chart(&chart, "t", &history).unwrap();
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert!(
            !svg.contains("every step"),
            "a step line without steps.jsonl"
        );
        let mut log = String::new();
        for s in &steps {
            log.push_str(&format!("{s}\n"));
        }
        // a killed run's torn last line
        log.push_str("{\"epoch\": 2, \"ba");
        std::fs::write(dir.join("steps.jsonl"), log).unwrap();
        write_chart(&chart, "t", &history).unwrap();
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert!(svg.contains("train, every step"));
        assert!(polylines(&svg).contains(&10), "{:?}", polylines(&svg));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
