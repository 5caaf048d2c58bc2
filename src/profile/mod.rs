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
//! - [`check_fits`]: whether a batch fits a device, before training ([`ensure_fits`]: the
//!   same verdict, measured only when a rough bound from the spec says it may not fit)
//!
//! Files: `report.rs` (what a profile holds), `run.rs` (running and recording the steps),
//! `compare.rs` (the modes side by side), `planner.rs`, `fit.rs`, `chart.rs`, `html.rs`;
//! this file holds the helpers they share.

pub mod chart;
mod compare;
pub mod fit;
pub mod html;
pub mod planner;
mod report;
mod run;

use crate::device::alloc::{self, Phase};
use crate::nn::quadratic::{QuadConv2d, QuadLinear};
use crate::nn::{BackpropMode, Module};
use crate::{Error, Result};

pub use compare::{
    compare_modes, compare_modes_with, render_table, LayerComparison, ModeComparison, ModeSummary,
};
pub use fit::{check_fits, ensure_fits, FitEstimate};
pub use planner::{plan_and_verify, plan_for_budget, validate_plan, BudgetPlan};
pub use report::{
    DeviceCheck, LayerPhaseRow, LayerRow, MemoryProfile, PhaseRow, PhaseSpan, ProfileOptions,
    TimelinePoint,
};
pub use run::{profile_training, random_batch};

pub use crate::plot::{temp_path, write_atomic};

/// Label of the row holding bytes charged to no layer.
pub const OUTSIDE_LAYERS: &str = "(outside layers)";

/// The median of `v` (the mean of the two middle values for an even length); 0 when empty.
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

/// `bytes` in MiB (2^20 bytes).
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

/// The tracker of the device the profiler measures (the CPU for now).
pub fn tracker() -> &'static alloc::Tracker {
    alloc::cpu_tracker()
}
