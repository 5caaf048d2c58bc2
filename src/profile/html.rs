//! A self-contained HTML report: no network, no scripts; charts are inline SVG.
//! Sections (element ids): `mode-comparison`, `timeline`, `per-layer`, `planner`,
//! `analysis`, `feature-maps` (the last three only when given).

use std::fmt::Write;
use std::path::Path;

use super::chart::{to_svg, LayerChart, TimelineChart};
use super::{mib, phase_name, write_atomic, BudgetPlan, ModeComparison};
use crate::analysis::plot::{FeatureMapChart, HistogramGrid};
use crate::analysis::{AnalysisReport, FeatureMap, StatKind};
use crate::nn::BackpropMode;
use crate::Result;

/// What goes into the report.
pub struct ReportInputs<'a> {
    /// The profiles of the back-propagation modes (the `mode-comparison`, `timeline` and
    /// `per-layer` sections).
    pub comparison: &'a ModeComparison,
    /// Budget plans for the `planner` section (empty: no section).
    pub plans: &'a [BudgetPlan],
    /// Weight and activation statistics for the `analysis` section.
    pub analysis: Option<&'a AnalysisReport>,
    /// Feature maps for the `feature-maps` section.
    pub feature_maps: Option<&'a [FeatureMap]>,
}

/// `s` with `&`, `<`, `>` and `"` replaced by HTML entities, safe in element text and in
/// double-quoted attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

const STYLE: &str =
    "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1300px}\
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}\
td.l,th.l{text-align:left}.chart svg{max-width:100%;height:auto}.note{color:#555;font-size:13px}\
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}";

/// The report as one HTML string.
pub fn render_report(inp: &ReportInputs<'_>) -> Result<String> {
    let c = inp.comparison;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Quadra memory report: {m}</title>\
         <style>{STYLE}</style></head><body><h1>Quadra memory report: {m}</h1>\
         <p class=\"note\">batch {b}, {t} threads, CPU tracking allocator (exact byte counts); \
         step times are medians of {s} timed steps.</p>",
        m = escape(&c.model),
        b = c.batch,
        t = c.threads,
        s = c.steps
    );

    // comparison table
    h.push_str("<section id=\"mode-comparison\"><h2>Back-propagation modes</h2><table><tr><th class=\"l\">mode</th><th>peak MiB</th><th>peak / stored</th><th>kept for backward MiB</th><th>kept / stored</th><th>step s</th><th>time / stored</th><th>peak reached in</th></tr>");
    for (m, p) in c.modes.iter().zip(&c.profiles) {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{:.2}</td><td>{:.3}</td><td>{:.2}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            escape(&m.label),
            mib(m.peak_total),
            m.peak_vs_stored,
            mib(m.saved_for_backward),
            m.saved_vs_stored,
            m.step_time_s,
            m.time_vs_stored,
            phase_name(p.peak_phase)
        );
    }
    h.push_str("</table>");
    // composition at the peak
    h.push_str("<table><tr><th class=\"l\">at the peak (MiB)</th>");
    let cats: Vec<String> = c
        .profiles
        .first()
        .map(|p| p.at_peak.keys().cloned().collect())
        .unwrap_or_default();
    for k in &cats {
        let _ = write!(h, "<th>{}</th>", escape(&k.replace('_', " ")));
    }
    h.push_str("</tr>");
    for p in &c.profiles {
        let _ = write!(h, "<tr><td class=\"l\">{}</td>", escape(&p.label));
        for k in &cats {
            let _ = write!(
                h,
                "<td>{:.2}</td>",
                mib(p.at_peak.get(k).copied().unwrap_or(0))
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></section>");

    let _ = write!(
        h,
        "<section id=\"timeline\"><h2>Timeline of one training step</h2><div class=\"chart\">{}</div></section>",
        inline_svg(&to_svg(&TimelineChart { comparison: c })?)
    );
    let _ = write!(
        h,
        "<section id=\"per-layer\"><h2>Kept for backward per layer</h2><div class=\"chart\">{}</div>",
        inline_svg(&to_svg(&LayerChart {
            comparison: c,
            quadratic_only: false,
        })?)
    );
    h.push_str("<table><tr><th class=\"l\">layer</th><th class=\"l\">kind</th>");
    for m in &c.modes {
        let _ = write!(h, "<th>{} MiB</th>", escape(&m.label));
    }
    h.push_str("<th>recompute GFLOP</th></tr>");
    for l in c.layers.iter().filter(|l| l.saved.iter().any(|&b| b > 0)) {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            escape(&l.layer),
            escape(&l.kind)
        );
        for &b in &l.saved {
            let _ = write!(h, "<td>{:.3}</td>", mib(b));
        }
        let _ = write!(
            h,
            "<td>{}</td></tr>",
            l.recompute_flops
                .map(|f| format!("{:.3}", f as f64 / 1e9))
                .unwrap_or_default()
        );
    }
    h.push_str("</table></section>");

    if !inp.plans.is_empty() {
        h.push_str("<section id=\"planner\"><h2>Memory-budget plans</h2><table><tr><th>budget MiB</th><th>layers recomputed</th><th>recompute GFLOP</th><th>predicted peak MiB</th><th>measured peak MiB</th><th>fits</th><th>step s</th><th class=\"l\">recomputed layers</th></tr>");
        for p in inp.plans {
            let rec: Vec<&str> = p
                .plan
                .iter()
                .filter(|(_, &m)| m == BackpropMode::Recompute)
                .map(|(k, _)| k.as_str())
                .collect();
            let fits = p.fits_measured.unwrap_or(p.fits_predicted);
            let _ = write!(
                h,
                "<tr><td>{:.2}</td><td>{}</td><td>{:.3}</td><td>{:.2}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                mib(p.budget),
                p.recomputed_layers,
                p.recompute_flops as f64 / 1e9,
                mib(p.predicted_peak),
                p.measured_peak.map(|b| format!("{:.2}", mib(b))).unwrap_or_else(|| "—".into()),
                if fits { "ok" } else { "bad" },
                if fits { "yes" } else { "no" },
                p.measured_step_time_s.map(|t| format!("{t:.3}")).unwrap_or_else(|| "—".into()),
                escape(&rec.join(", "))
            );
        }
        h.push_str("</table></section>");
    }

    if let Some(a) = inp.analysis {
        let _ = write!(
            h,
            "<section id=\"analysis\"><h2>Distributions ({}: batch {}, {} bins)</h2>\
             <p class=\"note\">Histograms with log-scale counts; the dashed grey lines are \
             mean ± 3σ. Red: quadratic layers, blue: the others.</p>",
            escape(&a.model),
            a.batch,
            a.bins
        );
        for kind in [StatKind::Activation, StatKind::Weight, StatKind::Gradient] {
            let entries: Vec<_> = a
                .of_kind(kind)
                .filter(|e| kind != StatKind::Activation || !e.describe.starts_with("ReLU"))
                .filter(|e| kind == StatKind::Activation || e.name.ends_with("weight"))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let svg = to_svg(&HistogramGrid {
                title: format!("{}s", kind.name()),
                entries,
                cols: 4,
            })?;
            let _ = write!(h, "<div class=\"chart\">{}</div>", inline_svg(&svg));
        }
        h.push_str("<table><tr><th class=\"l\">tensor</th><th class=\"l\">kind</th><th>mean</th><th>std</th><th>min</th><th>max</th><th>&gt;3σ %</th></tr>");
        for e in &a.entries {
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.3}</td></tr>",
                escape(&e.name),
                e.kind.name(),
                e.stats.mean,
                e.stats.std,
                e.stats.min,
                e.stats.max,
                100.0 * e.stats.extreme_share
            );
        }
        h.push_str("</table></section>");
    }

    if let Some(maps) = inp.feature_maps {
        let svg = to_svg(&FeatureMapChart {
            title: "Channel-mean feature maps of one image".into(),
            maps,
        })?;
        let _ = write!(
            h,
            "<section id=\"feature-maps\"><h2>Feature maps</h2><div class=\"chart\">{}</div></section>",
            inline_svg(&svg)
        );
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Render the report and write it to `path` atomically.
pub fn write_report(path: &Path, inp: &ReportInputs<'_>) -> Result<()> {
    let html = render_report(inp)?;
    write_atomic(path, html.as_bytes())
}
