//! Kernel launches and GEMMs on the GPU-path devices, counted per (layer, phase, kernel) at
//! the one place every launch passes (`ops::launch`), for the CUDA backend's per-step
//! budgets: how many launches a training step makes, and which layer makes them.
//!
//! The layer and phase are the allocation tracker's thread-local attribution context
//! (`device::alloc::scope_layer` / `scope_phase`, set by the layers, the loss and the
//! optimizers), so these counts line up with the memory profiler's per-layer table. They
//! count what Quadra *asks* of a runtime; the CUDA stand-in's trace (cuda/standin/) counts
//! what reaches the driver, and the budget tests check the two agree.
//!
//! Counting is one uncontended mutex per launch (tens of nanoseconds, against the
//! microseconds a launch costs on a GPU) and is always on: the counts are process-global.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::device::alloc::{current_layer, current_phase, layer_name, Phase};

/// The name GEMMs are counted under (they go to cuBLAS, not to a `cuda/*.cu` kernel).
pub const GEMM: &str = "sgemm";

type Key = (u32, Phase, &'static str);

static COUNTS: Mutex<Option<HashMap<Key, u64>>> = Mutex::new(None);

/// How many times `kernel` was launched in `layer` (its name; "" outside any layer) during
/// `phase`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchCount {
    pub layer: String,
    pub phase: Phase,
    pub kernel: &'static str,
    pub count: u64,
}

/// Records one launch of `kernel` in the calling thread's layer and phase.
pub(crate) fn record(kernel: &'static str) {
    let key = (current_layer(), current_phase(), kernel);
    let mut c = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *c.get_or_insert_with(HashMap::new).entry(key).or_insert(0) += 1;
}

/// Every count since the last `reset_launch_counts`, sorted by layer, phase and kernel
/// name (layers in the order they were first seen by the allocation tracker).
pub fn launch_counts() -> Vec<LaunchCount> {
    let c = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut keys: Vec<(&Key, &u64)> = c.iter().flat_map(|m| m.iter()).collect();
    keys.sort_by_key(|((layer, phase, kernel), _)| (*layer, *phase as u8, *kernel));
    keys.into_iter()
        .map(|(&(layer, phase, kernel), &count)| LaunchCount {
            layer: layer_name(layer),
            phase,
            kernel,
            count,
        })
        .collect()
}

/// The launches in `counts`, GEMMs included.
pub fn total(counts: &[LaunchCount]) -> u64 {
    counts.iter().map(|c| c.count).sum()
}

/// The GEMMs in `counts`.
pub fn gemms(counts: &[LaunchCount]) -> u64 {
    counts
        .iter()
        .filter(|c| c.kernel == GEMM)
        .map(|c| c.count)
        .sum()
}

/// Forgets every count (e.g. before the step to be measured).
pub fn reset_launch_counts() {
    *COUNTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Per layer and phase: (layer, phase, launches), summed over kernels, in
/// `launch_counts`' order.
pub fn launches_per_layer(counts: &[LaunchCount]) -> Vec<(String, Phase, u64)> {
    let mut out: Vec<(String, Phase, u64)> = Vec::new();
    for c in counts {
        match out.last_mut() {
            Some((l, p, n)) if *l == c.layer && *p == c.phase => *n += c.count,
            _ => out.push((c.layer.clone(), c.phase, c.count)),
        }
    }
    out
}

/// `launches_per_layer` as text, one "  layer  phase  launches" line each ("(no layer)"
/// for launches outside any layer: the loss) — what the budget tests and
/// `quadra-bench --launches` print.
pub fn per_layer_table(counts: &[LaunchCount]) -> String {
    let mut s = String::new();
    for (layer, phase, n) in launches_per_layer(counts) {
        let layer = if layer.is_empty() {
            "(no layer)"
        } else {
            &layer
        };
        s += &format!("  {layer:<28} {:<10} {n:>5}\n", format!("{phase:?}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::alloc::{layer_id, scope_layer, scope_phase};

    #[test]
    fn launches_are_attributed_to_the_current_layer_and_phase() {
        // other unit tests may launch concurrently: look only at this test's own layer
        let layer = "counters-test-layer";
        {
            let _l = scope_layer(layer_id(layer));
            let _p = scope_phase(Phase::Backward);
            record("k_a");
            record("k_a");
            record(GEMM);
        }
        let mine: Vec<LaunchCount> = launch_counts()
            .into_iter()
            .filter(|c| c.layer == layer)
            .collect();
        let got: Vec<(Phase, &str, u64)> =
            mine.iter().map(|c| (c.phase, c.kernel, c.count)).collect();
        assert_eq!(
            got,
            vec![(Phase::Backward, "k_a", 2), (Phase::Backward, GEMM, 1)]
        );
        assert_eq!(
            launches_per_layer(&mine),
            vec![(layer.to_string(), Phase::Backward, 3)]
        );
        assert_eq!((total(&mine), gemms(&mine)), (3, 1));
        assert!(
            per_layer_table(&mine).contains("counters-test-layer"),
            "{}",
            per_layer_table(&mine)
        );
    }
}
