//! Running and recording the profiled training steps: warm-up, one step replayed event by
//! event from the tracker's timeline (per layer, per phase, the composition at the peak),
//! then the timed steps.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::report::*;
use super::{median, phase_from_order, phase_order, walk_modules, with_threads, OUTSIDE_LAYERS};
use crate::device::alloc::{Category, Event, Phase, Snapshot, CATEGORIES};
use crate::model::Model;
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::nn::{BackpropMode, Module};
use crate::optim::Sgd;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

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

fn profile_inner(spec: &ModelSpec, label: &str, opts: &ProfileOptions) -> Result<MemoryProfile> {
    let tracker = opts.device.tracker()?;
    let used_before = opts.device.memory_used();
    let mut pool_before = 0;
    if let Ok(rt) = crate::device::runtime(opts.device) {
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
    model.to_device(opts.device)?;
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
    let device_check = match (used_before, opts.device.memory_used()) {
        (Some((before, _)), Some((used, total))) => {
            let pool = crate::device::runtime(opts.device)?.pool().stats();
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
