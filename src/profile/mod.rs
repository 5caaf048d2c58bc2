//! The device-memory profiler: runs training steps of a model with the tracking allocator's
//! timeline on and attributes every byte to category × layer × phase; compares the
//! back-propagation modes; plans per-layer modes for a memory budget; draws charts and
//! writes a self-contained HTML report.
//!
//! Everything here reads the tracker's counters and events (`device::alloc`); nothing is
//! estimated, except the planner's *prediction*, which it then verifies by measuring.
//!
//! Entry points (the `quadra-train memory` subcommand calls these):
//! - [`profile_training`]: one model, one configuration → [`MemoryProfile`]
//! - [`compare_modes`]: stored vs recompute (vs the spec's own plan) → [`ModeComparison`],
//!   [`render_table`] for text, serde for `--json`
//! - [`planner::plan_for_budget`] / [`planner::plan_and_verify`]: per-layer modes for a budget
//! - [`chart::write_timeline_chart`], [`chart::write_layer_chart`]: PNG + SVG
//! - [`html::write_report`]: the HTML report

pub mod chart;
pub mod html;
pub mod planner;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::device::alloc::{self, Category, Event, Phase, Snapshot, CATEGORIES};
use crate::model::Model;
use crate::nn::quadratic::{QuadConv2d, QuadLinear};
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::nn::{BackpropMode, Module};
use crate::optim::Sgd;
use crate::tensor::{DType, Tensor};
use crate::{Device, Error, Result};

pub mod fit;

pub use fit::{check_fits, FitEstimate};
pub use planner::{plan_and_verify, plan_for_budget, validate_plan, BudgetPlan};

/// How to run the profiled training steps.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileOptions {
    pub batch: usize,
    /// Timed steps (after the warm-up and the recorded step).
    pub steps: usize,
    /// Untimed steps first, so that optimizer state exists as in steady training.
    pub warmup: usize,
    /// Worker threads of a private rayon pool (0: rayon's default).
    pub threads: usize,
    /// Seed of the weights and of the random batch.
    pub seed: u64,
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
    pub device_total: u64,
}

/// One layer's bytes (the module tree's nodes that hold any, in forward order; the row
/// named `(outside layers)` holds what no layer asked for: the input batch, the loss).
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub layer: String,
    /// `Module::describe()`.
    pub kind: String,
    /// The layer's back-propagation mode when it is quadratic.
    pub mode: Option<BackpropMode>,
    /// Kept for backward at the end of the forward pass.
    pub saved_for_backward: u64,
    pub parameters: u64,
    /// Peak gradient bytes during the step (gradients are freed by the optimizer).
    pub gradients: u64,
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
    pub total: u64,
    pub phase: Phase,
}

/// A run of consecutive events of one phase: `start..end` indexes `timeline`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub start: usize,
    pub end: usize,
}

/// Bytes allocated and freed in one phase for one category during the recorded step.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    pub phase: Phase,
    pub category: Category,
    pub allocated: u64,
    pub freed: u64,
}

/// Bytes allocated and freed by one layer in one phase for one category during the
/// recorded step (a retag — e.g. an activation becoming saved-for-backward — is a free in
/// one category and an allocation in the other).
#[derive(Clone, Debug, Serialize)]
pub struct LayerPhaseRow {
    pub layer: String,
    pub phase: Phase,
    pub category: Category,
    pub allocated: u64,
    pub freed: u64,
}

/// What `profile_training` measured.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryProfile {
    pub model: String,
    /// The device the steps ran on (`cpu`, `cuda:0`, `emu`).
    pub device: String,
    /// Tracker vs. the device's own report (GPU-path devices only).
    pub device_check: Option<DeviceCheck>,
    /// "stored", "recompute", "planned", or a caller's label.
    pub label: String,
    pub backprop: BackpropMode,
    pub overrides: BTreeMap<String, BackpropMode>,
    pub batch: usize,
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
    pub phases: Vec<PhaseRow>,
    /// Category × layer × phase of every event of the recorded step.
    pub by_layer_phase: Vec<LayerPhaseRow>,
    pub timeline: Vec<TimelinePoint>,
    pub phase_spans: Vec<PhaseSpan>,
    /// Wall time of each timed step, seconds.
    pub step_times_s: Vec<f64>,
    /// Median of `step_times_s`.
    pub step_time_s: f64,
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

/// Label of the row holding bytes charged to no layer.
pub const OUTSIDE_LAYERS: &str = "(outside layers)";

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Run `f` on a rayon pool of `threads` workers (0: the global pool).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    if threads == 0 {
        return Ok(f());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::invalid("threads", format!("cannot start {threads} threads: {e}")))?;
    Ok(pool.install(f))
}

/// Every module of the tree in forward (pre-)order with its description and, for quadratic
/// layers, its mode.
pub(crate) fn walk_modules(m: &dyn Module, out: &mut Vec<(String, String, Option<BackpropMode>)>) {
    let any = m.as_any();
    let mode = any
        .downcast_ref::<QuadConv2d>()
        .map(|q| q.mode())
        .or_else(|| any.downcast_ref::<QuadLinear>().map(|q| q.mode()));
    out.push((m.path().to_string(), m.describe(), mode));
    for c in m.children() {
        walk_modules(c, out);
    }
}

/// Counters replayed from a snapshot and the events after it.
#[derive(Clone)]
struct Replay {
    cat: [u64; 6],
    total: u64,
    layer: HashMap<(String, Category), u64>,
}

impl Replay {
    fn new(s: &Snapshot) -> Replay {
        Replay {
            cat: s.current,
            total: s.total,
            layer: s
                .per_layer
                .iter()
                .map(|(l, c, b)| ((l.clone(), *c), *b))
                .collect(),
        }
    }
    fn apply(&mut self, e: &Event) -> Result<()> {
        let c = e.category as usize;
        let slot = self.layer.entry((e.layer.clone(), e.category)).or_insert(0);
        let bad = || {
            Error::state(format!(
                "memory profiler: the tracker's event {} does not follow from the counters \
                 (was something allocated on another thread during the step?)",
                e.seq
            ))
        };
        if e.delta >= 0 {
            self.cat[c] += e.delta as u64;
            self.total += e.delta as u64;
            *slot += e.delta as u64;
        } else {
            let d = e.delta.unsigned_abs();
            self.cat[c] = self.cat[c].checked_sub(d).ok_or_else(bad)?;
            self.total = self.total.checked_sub(d).ok_or_else(bad)?;
            *slot = slot.checked_sub(d).ok_or_else(bad)?;
        }
        if self.total != e.total {
            return Err(bad());
        }
        Ok(())
    }
    fn of(&self, layer: &str, c: Category) -> u64 {
        self.layer
            .get(&(layer.to_string(), c))
            .copied()
            .unwrap_or(0)
    }
}

fn by_category(v: &[u64; 6]) -> BTreeMap<String, u64> {
    CATEGORIES
        .iter()
        .map(|&c| (c.name().to_string(), v[c as usize]))
        .collect()
}

/// A fixed random batch for `spec` and its targets (the input charged to `Category::Data`).
pub fn random_batch(
    spec: &ModelSpec,
    batch: usize,
    dtype: DType,
    seed: u64,
) -> Result<(Tensor, Vec<usize>)> {
    let mut shape = vec![batch];
    shape.extend(&spec.input);
    let x = Tensor::randn(&shape, dtype, 1.0, seed.wrapping_add(1))?;
    x.retag(Category::Data);
    let y = (0..batch).map(|i| (i * 7 + 3) % spec.num_classes).collect();
    Ok((x, y))
}

/// Run training steps of `spec` (its `backprop` and `backprop_overrides` as given) on the
/// CPU and measure them: `warmup` untimed steps, one step recorded event by event (the
/// timeline, the per-layer table, the composition at the peak), then `steps` timed steps.
/// SGD (lr 0.1, momentum 0.9, weight decay 5e-4) as in `quadra-bench`.
///
/// The tracker is process-global: run one profile at a time, and allocate nothing on other
/// threads meanwhile (the replay checks every event against the counters and errors if so).
pub fn profile_training(
    spec: &ModelSpec,
    label: &str,
    opts: &ProfileOptions,
) -> Result<MemoryProfile> {
    if opts.batch == 0 {
        return Err(Error::invalid("batch", "must be positive"));
    }
    spec.check()?;
    with_threads(opts.threads, || profile_inner(spec, label, opts))?
}

fn device_used(device: Device) -> Option<(u64, u64)> {
    if !device.is_gpu() {
        return None;
    }
    let rt = crate::device::gpu::runtime(device).ok()?;
    rt.synchronize().ok()?;
    rt.mem_info()
        .ok()
        .map(|(free, total)| (total - free, total))
}

fn profile_inner(spec: &ModelSpec, label: &str, opts: &ProfileOptions) -> Result<MemoryProfile> {
    let tracker = opts.device.tracker()?;
    let used_before = device_used(opts.device);
    let mut pool_before = 0;
    if let Ok(rt) = crate::device::gpu::runtime(opts.device) {
        rt.pool().reset_peak();
        pool_before = rt.pool().stats().reserved;
    }
    let mut model = Model::build(
        spec,
        BuildOptions {
            dtype: opts.dtype,
            seed: opts.seed,
        },
    )?;
    if opts.device.is_gpu() {
        crate::nn::module_to_device(&mut model.net, opts.device)?;
    }
    let mut opt = Sgd::new(0.1, 0.9, 5e-4, false)?;
    let (x, y) = random_batch(spec, opts.batch, opts.dtype, opts.seed)?;
    let x = x.to_device(opts.device)?;
    for _ in 0..opts.warmup {
        model.train_step(&x, &y, &mut opt)?;
    }

    // the recorded step; the observer notes each layer's output shape (for FLOP counts)
    let shapes: std::rc::Rc<std::cell::RefCell<HashMap<String, Vec<usize>>>> = Default::default();
    let sink = shapes.clone();
    let previous = crate::nn::set_forward_observer(Some(Box::new(move |p, t| {
        sink.borrow_mut().insert(p.to_string(), t.shape().to_vec());
    })));
    tracker.reset_peak();
    let s0 = tracker.snapshot();
    tracker.start_timeline();
    let step = model.train_step(&x, &y, &mut opt);
    let events = tracker.take_timeline();
    let s1 = tracker.snapshot();
    crate::nn::set_forward_observer(previous);
    let mut loss = step?.loss;

    // replay: the composition at the peak and at the end of the forward pass
    let mut r = Replay::new(&s0);
    let mut at_peak = r.clone();
    let mut peak_index = None;
    let forward_end = events.iter().rposition(|e| e.phase == Phase::Forward);
    let mut at_fwd_end = r.clone();
    let mut timeline = Vec::with_capacity(events.len());
    let mut phases: BTreeMap<(u8, Category), (u64, u64)> = BTreeMap::new();
    let mut layer_phases: BTreeMap<(String, u8, Category), (u64, u64)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        r.apply(e)?;
        if r.total > at_peak.total {
            at_peak = r.clone();
            peak_index = Some(i);
        }
        if Some(i) == forward_end {
            at_fwd_end = r.clone();
        }
        timeline.push(TimelinePoint {
            index: i,
            total: e.total,
            phase: e.phase,
        });
        let slot = phases
            .entry((phase_order(e.phase), e.category))
            .or_insert((0, 0));
        let lslot = layer_phases
            .entry((e.layer.clone(), phase_order(e.phase), e.category))
            .or_insert((0, 0));
        if e.delta >= 0 {
            slot.0 += e.delta as u64;
            lslot.0 += e.delta as u64;
        } else {
            slot.1 += e.delta.unsigned_abs();
            lslot.1 += e.delta.unsigned_abs();
        }
    }
    let mut phase_spans: Vec<PhaseSpan> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match phase_spans.last_mut() {
            Some(s) if s.phase == e.phase => s.end = i + 1,
            _ => phase_spans.push(PhaseSpan {
                phase: e.phase,
                start: i,
                end: i + 1,
            }),
        }
    }
    let peak_phase = peak_index.map(|i| events[i].phase).unwrap_or(Phase::Other);

    // timed steps
    let mut step_times_s = Vec::with_capacity(opts.steps);
    for _ in 0..opts.steps {
        let t0 = Instant::now();
        loss = model.train_step(&x, &y, &mut opt)?.loss;
        step_times_s.push(t0.elapsed().as_secs_f64());
    }
    let s2 = tracker.snapshot();

    // the per-layer table, in forward order
    let mut nodes = Vec::new();
    walk_modules(&model.net, &mut nodes);
    // a residual block and its main `Sequential` share one path: one row per path
    let mut seen = std::collections::HashSet::new();
    nodes.retain(|n| seen.insert(n.0.clone()));
    let mut weights: HashMap<String, u64> = HashMap::new();
    model.net.visit_params(&mut |name, p| {
        for suffix in [".stacked.weight", ".lifted.weight"] {
            if let Some(layer) = name.strip_suffix(suffix) {
                *weights.entry(layer.to_string()).or_insert(0) += p.value.numel() as u64;
            }
        }
    });
    let peak_of = |layer: &str, c: Category| -> u64 {
        s1.per_layer_peak
            .iter()
            .filter(|(l, cc, _)| l == layer && *cc == c)
            .map(|e| e.2)
            .sum()
    };
    let now_of = |layer: &str, c: Category| -> u64 {
        s1.per_layer
            .iter()
            .filter(|(l, cc, _)| l == layer && *cc == c)
            .map(|e| e.2)
            .sum()
    };
    let shapes = shapes.borrow();
    let mut layers = Vec::new();
    let mut push_row = |layer: &str, label: &str, kind: String, mode: Option<BackpropMode>| {
        let recompute_flops = mode.map(|_| {
            let l = match shapes.get(layer).map(|s| s.as_slice()) {
                Some([_, _, h, w]) => (h * w) as u64,
                _ => 1,
            };
            2 * opts.batch as u64 * l * weights.get(layer).copied().unwrap_or(0)
        });
        let row = LayerRow {
            layer: label.to_string(),
            kind,
            mode,
            saved_for_backward: at_fwd_end.of(layer, Category::SavedForBackward),
            parameters: now_of(layer, Category::Parameter),
            gradients: peak_of(layer, Category::Gradient),
            optimizer_state: now_of(layer, Category::OptimizerState),
            workspace_peak: peak_of(layer, Category::Workspace),
            recompute_flops,
        };
        let any = row.saved_for_backward
            + row.parameters
            + row.gradients
            + row.optimizer_state
            + row.workspace_peak
            > 0;
        if any || mode.is_some() {
            layers.push(row);
        }
    };
    for (path, kind, mode) in &nodes {
        if path.is_empty() {
            continue;
        }
        push_row(path, path, kind.clone(), *mode);
    }
    // bytes charged to layer names this model does not have (another model alive in the
    // process), so that the table still adds up to the device's counters
    let mut extra: Vec<String> = at_fwd_end
        .layer
        .keys()
        .map(|k| k.0.clone())
        .chain(s1.per_layer_peak.iter().map(|e| e.0.clone()))
        .filter(|l| !l.is_empty() && !nodes.iter().any(|n| &n.0 == l))
        .collect();
    extra.sort();
    extra.dedup();
    for l in &extra {
        push_row(l, l, "(not a layer of this model)".into(), None);
    }
    push_row(
        "",
        OUTSIDE_LAYERS,
        "input batch, loss, unattributed".into(),
        None,
    );

    let phases = phases
        .into_iter()
        .map(|((p, c), (a, f))| PhaseRow {
            phase: phase_from_order(p),
            category: c,
            allocated: a,
            freed: f,
        })
        .collect();
    let by_layer_phase = layer_phases
        .into_iter()
        .map(|((l, p, c), (a, f))| LayerPhaseRow {
            layer: if l.is_empty() {
                OUTSIDE_LAYERS.to_string()
            } else {
                l
            },
            phase: phase_from_order(p),
            category: c,
            allocated: a,
            freed: f,
        })
        .collect();
    let step_time_s = median(&step_times_s);
    let saved_at_forward_end = at_fwd_end.cat[Category::SavedForBackward as usize];
    let device_check = match (used_before, device_used(opts.device)) {
        (Some((before, _)), Some((used, total))) => {
            let pool = crate::device::gpu::runtime(opts.device)?.pool().stats();
            Some(DeviceCheck {
                tracked: tracker.total(),
                pool_reserved: pool.reserved,
                pool_peak_reserved: pool.peak_reserved,
                device_used_before: before,
                device_used: used,
                pool_reserved_before: pool_before,
                unaccounted: (used as i64 - before as i64)
                    - (pool.reserved as i64 - pool_before as i64),
                device_total: total,
            })
        }
        _ => None,
    };
    Ok(MemoryProfile {
        device: opts.device.to_string(),
        device_check,
        model: spec.name.clone(),
        label: label.to_string(),
        backprop: spec.backprop,
        overrides: spec.backprop_overrides.clone(),
        batch: opts.batch,
        threads: rayon::current_num_threads(),
        baseline_total: s0.total,
        peak_total: s2.peak_total,
        timeline_peak_total: at_peak.total.max(s0.total),
        peak_by_category: by_category(&s2.peak),
        at_peak: by_category(&at_peak.cat),
        peak_phase,
        saved_at_forward_end,
        layers,
        phases,
        by_layer_phase,
        timeline,
        phase_spans,
        step_times_s,
        step_time_s,
        loss,
    })
}

fn phase_order(p: Phase) -> u8 {
    match p {
        Phase::Other => 0,
        Phase::Forward => 1,
        Phase::Backward => 2,
        Phase::Optimizer => 3,
    }
}

fn phase_from_order(v: u8) -> Phase {
    [
        Phase::Other,
        Phase::Forward,
        Phase::Backward,
        Phase::Optimizer,
    ][v as usize]
}

/// The name of a phase as tables and charts print it.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Other => "other",
        Phase::Forward => "forward",
        Phase::Backward => "backward",
        Phase::Optimizer => "optimizer",
    }
}

// ---- mode comparison ----------------------------------------------------------------------

/// One configuration's headline numbers.
#[derive(Clone, Debug, Serialize)]
pub struct ModeSummary {
    pub label: String,
    pub peak_total: u64,
    pub saved_for_backward: u64,
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
    pub layer: String,
    pub kind: String,
    pub quadratic: bool,
    pub saved: Vec<u64>,
    pub recompute_flops: Option<u64>,
}

/// Stored vs recompute (vs planned) for one model, batch and thread count.
#[derive(Clone, Debug, Serialize)]
pub struct ModeComparison {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub modes: Vec<ModeSummary>,
    pub layers: Vec<LayerComparison>,
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

/// The tracker of the device the profiler measures (the CPU for now).
pub fn tracker() -> &'static alloc::Tracker {
    alloc::cpu_tracker()
}
