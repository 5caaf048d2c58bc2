//! What a profile holds: the options of the run and the measured tables, timeline and
//! device figures (all serde-serialisable for `--json`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::device::alloc::{Category, Phase};
use crate::nn::BackpropMode;
use crate::tensor::DType;
use crate::Device;

/// How to run the profiled training steps.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileOptions {
    /// Samples per training step (default 64).
    pub batch: usize,
    /// Timed steps (after the warm-up and the recorded step).
    pub steps: usize,
    /// Untimed steps first, so that optimizer state exists as in steady training.
    pub warmup: usize,
    /// Worker threads of a private rayon pool (0: rayon's default).
    pub threads: usize,
    /// Seed of the weights and of the random batch.
    pub seed: u64,
    /// The element type of the weights and the batch (default f32).
    #[serde(skip)]
    pub dtype: DType,
    /// Where the steps run: the CPU engine, or the CUDA backend (`cuda:N`, `emu`); the
    /// accounting is the same tracking allocator either way.
    #[serde(skip)]
    pub device: Device,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            batch: 64,
            steps: 2,
            warmup: 1,
            threads: 0,
            seed: 0,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// The tracker's figures beside what the device itself reports (`cuMemGetInfo` on CUDA;
/// the emulator's allocation count on `emu`), taken at the end of the recorded step. The
/// difference is what the device holds beyond the caching pool's blocks — the CUDA
/// context, cuBLAS workspaces, other processes — reported, not hidden.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheck {
    /// Bytes held by tensors (the tracker's total).
    pub tracked: u64,
    /// Bytes the caching pool holds from the device (tensors' blocks rounded up, plus
    /// cached free blocks).
    pub pool_reserved: u64,
    /// Most bytes the pool held at once during the profile.
    pub pool_peak_reserved: u64,
    /// Device memory in use (total − free) before the model was built.
    pub device_used_before: u64,
    /// Device memory in use at the end of the recorded step.
    pub device_used: u64,
    /// The pool's reserved bytes before the model was built (blocks cached by earlier work).
    pub pool_reserved_before: u64,
    /// (device_used − device_used_before) − (pool_reserved − pool_reserved_before), signed:
    /// memory the device lost during the run that the pool does not account for.
    pub unaccounted: i64,
    /// The device's total memory, bytes.
    pub device_total: u64,
}

/// One layer's bytes (the module tree's nodes that hold any, in forward order; the row
/// named `(outside layers)` holds what no layer asked for: the input batch, the loss).
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    /// The layer's full path (`layer1.0.conv1`), or `(outside layers)`.
    pub layer: String,
    /// `Module::describe()`.
    pub kind: String,
    /// The layer's back-propagation mode when it is quadratic.
    pub mode: Option<BackpropMode>,
    /// Kept for backward at the end of the forward pass.
    pub saved_for_backward: u64,
    /// Bytes of the layer's parameters.
    pub parameters: u64,
    /// Peak gradient bytes during the step (gradients are freed by the optimizer).
    pub gradients: u64,
    /// Bytes of optimizer state for the layer's parameters (e.g. Adam's moments).
    pub optimizer_state: u64,
    /// Peak workspace bytes charged to the layer during the step.
    pub workspace_peak: u64,
    /// Quadratic layers: FLOPs the backward spends recomputing the branch outputs in
    /// `recompute` mode (the forward GEMM of the stacked and lifted weights: 2·N·L·|W|).
    pub recompute_flops: Option<u64>,
}

/// Total allocated bytes after one event of the recorded step.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TimelinePoint {
    /// Index of the event within the step (allocation sequence).
    pub index: usize,
    /// Bytes allocated on the device after the event.
    pub total: u64,
    /// The phase of the step the event happened in.
    pub phase: Phase,
}

/// A run of consecutive events of one phase: `start..end` indexes `timeline`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PhaseSpan {
    /// The phase of every event in the run.
    pub phase: Phase,
    /// Index of the run's first event.
    pub start: usize,
    /// One past the index of its last event.
    pub end: usize,
}

/// Bytes allocated and freed in one phase for one category during the recorded step.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    /// The phase of the step.
    pub phase: Phase,
    /// What the bytes are for.
    pub category: Category,
    /// Bytes allocated (summed over events).
    pub allocated: u64,
    /// Bytes freed (summed over events).
    pub freed: u64,
}

/// Bytes allocated and freed by one layer in one phase for one category during the
/// recorded step (a retag — e.g. an activation becoming saved-for-backward — is a free in
/// one category and an allocation in the other).
#[derive(Clone, Debug, Serialize)]
pub struct LayerPhaseRow {
    /// The layer's full path the bytes were charged to, or `(outside layers)`.
    pub layer: String,
    /// The phase of the step.
    pub phase: Phase,
    /// What the bytes are for.
    pub category: Category,
    /// Bytes allocated (summed over events).
    pub allocated: u64,
    /// Bytes freed (summed over events).
    pub freed: u64,
}

/// What `profile_training` measured.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryProfile {
    /// The spec's model name.
    pub model: String,
    /// The device the steps ran on (`cpu`, `cuda:0`, `emu`).
    pub device: String,
    /// Tracker vs. the device's own report (GPU-path devices only).
    pub device_check: Option<DeviceCheck>,
    /// "stored", "recompute", "planned", or a caller's label.
    pub label: String,
    /// The spec's back-propagation mode of quadratic layers.
    pub backprop: BackpropMode,
    /// The spec's per-layer mode overrides (full layer path → mode).
    pub overrides: BTreeMap<String, BackpropMode>,
    /// Samples per step.
    pub batch: usize,
    /// Worker threads the steps ran with (rayon's pool size).
    pub threads: usize,
    /// Bytes allocated on the device before the recorded step (parameters, optimizer
    /// state, the batch, anything else alive in the process).
    pub baseline_total: u64,
    /// Peak total bytes over the recorded and the timed steps (the tracker's `peak_total`).
    pub peak_total: u64,
    /// Peak total bytes of the recorded step, replayed from its timeline; equals the
    /// tracker's `peak_total` of that step.
    pub timeline_peak_total: u64,
    /// Each category's own peak over the measured steps (tracker), by `Category::name()`.
    pub peak_by_category: BTreeMap<String, u64>,
    /// What the bytes were at the moment of the recorded step's total peak.
    pub at_peak: BTreeMap<String, u64>,
    /// Phase (`forward`/`backward`/`optimizer`) in which the total peak was reached.
    pub peak_phase: Phase,
    /// Saved-for-backward bytes at the end of the forward pass (whole device).
    pub saved_at_forward_end: u64,
    /// Per-layer table; `saved_for_backward` sums to the device's saved-for-backward
    /// bytes at the end of the forward pass minus what was saved before the step (0).
    pub layers: Vec<LayerRow>,
    /// Category × phase of every event of the recorded step.
    pub phases: Vec<PhaseRow>,
    /// Category × layer × phase of every event of the recorded step.
    pub by_layer_phase: Vec<LayerPhaseRow>,
    /// Total allocated bytes after each event of the recorded step, in order.
    pub timeline: Vec<TimelinePoint>,
    /// The recorded step's events grouped into runs of one phase, in order.
    pub phase_spans: Vec<PhaseSpan>,
    /// Wall time of each timed step, seconds.
    pub step_times_s: Vec<f64>,
    /// Median of `step_times_s`.
    pub step_time_s: f64,
    /// The training loss of the last step run.
    pub loss: f64,
}

impl MemoryProfile {
    /// Sum of the per-layer saved-for-backward bytes.
    pub fn saved_total(&self) -> u64 {
        self.layers.iter().map(|r| r.saved_for_backward).sum()
    }

    /// The row of `layer`, if it holds any bytes.
    pub fn layer(&self, layer: &str) -> Option<&LayerRow> {
        self.layers.iter().find(|r| r.layer == layer)
    }
}
