//! The back-propagation modes side by side: one profile per configuration (all `stored`,
//! all `recompute`, the spec's own plan) and a text table of them.

use serde::Serialize;

use super::{mib, profile_training, MemoryProfile, ProfileOptions};
use crate::nn::spec::ModelSpec;
use crate::nn::BackpropMode;
use crate::{Error, Result};

/// One configuration's headline numbers.
#[derive(Clone, Debug, Serialize)]
pub struct ModeSummary {
    /// The profile's label: `stored`, `recompute`, `planned` or a caller's.
    pub label: String,
    /// Peak total bytes allocated on the device during the measured steps.
    pub peak_total: u64,
    /// Bytes kept for backward at the end of the forward pass, summed over layers.
    pub saved_for_backward: u64,
    /// Median wall time of a timed step, seconds.
    pub step_time_s: f64,
    /// step time / stored step time (the recompute overhead for `recompute`).
    pub time_vs_stored: f64,
    /// peak / stored peak.
    pub peak_vs_stored: f64,
    /// saved-for-backward / stored saved-for-backward.
    pub saved_vs_stored: f64,
}

/// One layer's saved-for-backward bytes in each configuration (same order as `modes`).
#[derive(Clone, Debug, Serialize)]
pub struct LayerComparison {
    /// The layer's full path (`layer1.0.conv1`).
    pub layer: String,
    /// The layer's `Module::describe()`.
    pub kind: String,
    /// Whether the layer is quadratic (has a back-propagation mode).
    pub quadratic: bool,
    /// Saved-for-backward bytes in each configuration (0 where a profile lacks the layer).
    pub saved: Vec<u64>,
    /// Quadratic layers: FLOPs the backward spends recomputing in `recompute` mode.
    pub recompute_flops: Option<u64>,
}

/// Stored vs recompute (vs planned) for one model, batch and thread count.
#[derive(Clone, Debug, Serialize)]
pub struct ModeComparison {
    /// The spec's model name.
    pub model: String,
    /// Samples per step.
    pub batch: usize,
    /// Worker threads the steps ran with.
    pub threads: usize,
    /// Timed steps per configuration.
    pub steps: usize,
    /// One summary per configuration, in the order of `profiles`.
    pub modes: Vec<ModeSummary>,
    /// Every layer that holds bytes in any profile, in forward order.
    pub layers: Vec<LayerComparison>,
    /// The full profile of each configuration.
    pub profiles: Vec<MemoryProfile>,
}

impl ModeComparison {
    /// The profile with `label` ("stored", "recompute", …).
    pub fn profile(&self, label: &str) -> Option<&MemoryProfile> {
        self.profiles.iter().find(|p| p.label == label)
    }

    /// Build a comparison from profiles of the same model (the first labelled `stored` is
    /// the reference of the ratios; else the first).
    pub fn from_profiles(profiles: Vec<MemoryProfile>, steps: usize) -> Result<ModeComparison> {
        let first = profiles
            .first()
            .ok_or_else(|| Error::invalid("mode comparison", "no profiles"))?;
        let reference = profiles
            .iter()
            .find(|p| p.label == "stored")
            .unwrap_or(first);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let modes = profiles
            .iter()
            .map(|p| ModeSummary {
                label: p.label.clone(),
                peak_total: p.peak_total,
                saved_for_backward: p.saved_total(),
                step_time_s: p.step_time_s,
                time_vs_stored: ratio(p.step_time_s, reference.step_time_s),
                peak_vs_stored: ratio(p.peak_total as f64, reference.peak_total as f64),
                saved_vs_stored: ratio(p.saved_total() as f64, reference.saved_total() as f64),
            })
            .collect();
        // layers in the order of the first profile, then any only others have
        let mut names: Vec<(String, String, bool, Option<u64>)> = Vec::new();
        for p in &profiles {
            for r in &p.layers {
                if !names.iter().any(|n| n.0 == r.layer) {
                    names.push((
                        r.layer.clone(),
                        r.kind.clone(),
                        r.mode.is_some(),
                        r.recompute_flops,
                    ));
                }
            }
        }
        let layers = names
            .into_iter()
            .map(
                |(layer, kind, quadratic, recompute_flops)| LayerComparison {
                    saved: profiles
                        .iter()
                        .map(|p| p.layer(&layer).map_or(0, |r| r.saved_for_backward))
                        .collect(),
                    layer,
                    kind,
                    quadratic,
                    recompute_flops,
                },
            )
            .collect();
        Ok(ModeComparison {
            model: first.model.clone(),
            batch: first.batch,
            threads: first.threads,
            steps,
            modes,
            layers,
            profiles,
        })
    }
}

/// Profile `spec` with every quadratic layer `stored`, then `recompute`, then — when the
/// spec carries per-layer overrides — as the spec says (`planned`). `steps` timed steps
/// each, after one warm-up and one recorded step; `threads` workers (0: all cores).
pub fn compare_modes(
    spec: &ModelSpec,
    batch: usize,
    steps: usize,
    threads: usize,
) -> Result<ModeComparison> {
    let opts = ProfileOptions {
        batch,
        steps,
        threads,
        ..ProfileOptions::default()
    };
    compare_modes_with(spec, &opts)
}

/// `compare_modes` with every option.
pub fn compare_modes_with(spec: &ModelSpec, opts: &ProfileOptions) -> Result<ModeComparison> {
    let mut profiles = Vec::new();
    for mode in [BackpropMode::Stored, BackpropMode::Recompute] {
        let mut s = spec.clone();
        s.backprop = mode;
        s.backprop_overrides.clear();
        profiles.push(profile_training(&s, &mode.to_string(), opts)?);
    }
    if !spec.backprop_overrides.is_empty() {
        profiles.push(profile_training(spec, "planned", opts)?);
    }
    ModeComparison::from_profiles(profiles, opts.steps)
}

/// The comparison as a text table: one row per configuration, then the per-layer
/// saved-for-backward bytes of the quadratic layers.
pub fn render_table(c: &ModeComparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {}  batch {}  threads {}  ({} timed steps per mode, median step time)",
        c.model, c.batch, c.threads, c.steps
    );
    let _ = writeln!(
        s,
        "{:<12} {:>12} {:>10} {:>16} {:>10} {:>12} {:>10}",
        "mode", "peak MiB", "vs stored", "saved-bwd MiB", "vs stored", "step s", "vs stored"
    );
    for m in &c.modes {
        let _ = writeln!(
            s,
            "{:<12} {:>12.2} {:>10.3} {:>16.2} {:>10.3} {:>12.3} {:>10.3}",
            m.label,
            mib(m.peak_total),
            m.peak_vs_stored,
            mib(m.saved_for_backward),
            m.saved_vs_stored,
            m.step_time_s,
            m.time_vs_stored
        );
    }
    let quad: Vec<&LayerComparison> = c.layers.iter().filter(|l| l.quadratic).collect();
    if !quad.is_empty() {
        let _ = writeln!(s, "\nsaved for backward per quadratic layer (MiB):");
        let _ = write!(s, "{:<28}", "layer");
        for m in &c.modes {
            let _ = write!(s, " {:>12}", m.label);
        }
        let _ = writeln!(s, " {:>14}", "recompute GFLOP");
        for l in quad {
            let _ = write!(s, "{:<28}", l.layer);
            for &b in &l.saved {
                let _ = write!(s, " {:>12.2}", mib(b));
            }
            let _ = writeln!(s, " {:>14.3}", l.recompute_flops.unwrap_or(0) as f64 / 1e9);
        }
    }
    // on a GPU-path device: the tracker beside the device's own report
    let checks: Vec<_> = c
        .profiles
        .iter()
        .filter_map(|p| p.device_check.as_ref().map(|d| (p, d)))
        .collect();
    if !checks.is_empty() {
        let _ = writeln!(
            s,
            "\ndevice check ({}, at the end of the recorded step; MiB):",
            c.profiles[0].device
        );
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>14} {:>16} {:>14} {:>12}",
            "mode", "tensors", "pool reserved", "pool peak", "device Δused", "unaccounted"
        );
        for (p, d) in checks {
            let _ = writeln!(
                s,
                "{:<12} {:>10.2} {:>14.2} {:>16.2} {:>14.2} {:>12.2}",
                p.label,
                mib(d.tracked),
                mib(d.pool_reserved),
                mib(d.pool_peak_reserved),
                (d.device_used as f64 - d.device_used_before as f64) / 1048576.0,
                d.unaccounted as f64 / 1048576.0
            );
        }
    }
    s
}
