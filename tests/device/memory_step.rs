//! The tracking allocator's saved-for-backward bytes for one training step of a small
//! quadratic CNN equal a hand count, in both back-propagation modes, and every byte is
//! released by the end of the step. The tracker is process-global: every test holds
//! `support::serial()` (tests/device).

use quadra::device::alloc::cpu_tracker;
use quadra::model::Model;
use quadra::nn::spec::{BuildOptions, ModelSpec};
use quadra::nn::BackpropMode;
use quadra::optim::Sgd;
use quadra::{Category, DType, Device, Tensor};

use crate::support::{f32_model_on, serial};

const SPEC: &str = r#"{
  "name": "tiny-qcnn", "input": [1, 8, 8], "num_classes": 3,
  "layers": [
    {"type": "quad_conv2d", "name": "conv1", "neuron": "quadralib-bn", "in_channels": 1, "out_channels": 4,
     "kernel_size": 3, "padding": 1},
    {"type": "batch_norm2d", "name": "bn1", "num_features": 4},
    {"type": "relu", "name": "relu"},
    {"type": "max_pool2d", "name": "pool", "kernel_size": 2},
    {"type": "flatten", "name": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 64, "out_features": 3}
  ]
}"#;

/// Elements kept for backward with a batch of N = 4 (4-byte elements: f32 values and u32
/// max-pool indices):
///   conv1 (quadralib-bn, 1→4 channels, 8×8): x 4·1·64 = 256; stored adds z (3 branches)
///     4·12·64 = 3072, A‖B 4·8·64 = 2048, batch mean and rstd 12 + 12 = 24; recompute keeps
///     only x and mean/rstd.
///   bn1: its input 4·4·64 = 1024, mean + rstd 4 + 4 = 8
///   relu: its output 1024
///   pool: argmax indices 4·4·16 = 256
///   flatten: nothing (a view)
///   fc: its input, the pooled tensor, 4·64 = 256
fn hand_count(mode: BackpropMode) -> u64 {
    let conv1 = match mode {
        BackpropMode::Stored => 256 + 3072 + 2048 + 24,
        BackpropMode::Recompute => 256 + 24,
    };
    4 * (conv1 + 1024 + 8 + 1024 + 256 + 256)
}

fn step_saved_bytes(mode: BackpropMode) -> (u64, u64, u64) {
    let mut spec = ModelSpec::from_json(SPEC).unwrap();
    spec.backprop = mode;
    let mut model = f32_model_on(&spec, 3, Device::Cpu);
    let mut opt = Sgd::new(0.01, 0.9, 0.0, false).unwrap();
    let x = Tensor::randn(&[4, 1, 8, 8], DType::F32, 1.0, 5).unwrap();
    x.retag(Category::Data);
    let y = vec![0, 1, 2, 1];
    // one step first, so that the optimizer state and gradients exist in both runs alike
    model.train_step(&x, &y, &mut opt).unwrap();
    let t = cpu_tracker();
    let base = t.current(Category::SavedForBackward);
    let total_before = t.total();
    t.reset_peak();
    model.train_step(&x, &y, &mut opt).unwrap();
    let peak = t.snapshot().peak(Category::SavedForBackward) - base;
    let after = t.current(Category::SavedForBackward) - base;
    let leaked = t.total() as i64 - total_before as i64;
    (peak, after, leaked.unsigned_abs())
}

#[test]
fn saved_bytes_of_a_training_step_match_the_hand_count() {
    let _g = serial();
    let (stored, after_s, leak_s) = step_saved_bytes(BackpropMode::Stored);
    let (recompute, after_r, leak_r) = step_saved_bytes(BackpropMode::Recompute);
    assert_eq!(stored, hand_count(BackpropMode::Stored), "stored mode");
    assert_eq!(
        recompute,
        hand_count(BackpropMode::Recompute),
        "recompute mode"
    );
    assert!(recompute < stored);
    // everything kept for backward is released by the end of the step, the input included
    assert_eq!((after_s, after_r), (0, 0));
    // and the step allocates nothing that outlives it (gradients are freed by the optimizer)
    assert_eq!((leak_s, leak_r), (0, 0));
}

#[test]
fn per_layer_attribution_names_the_layers() {
    let _g = serial();
    let spec = ModelSpec::from_json(SPEC).unwrap();
    let mut model = Model::build(&spec, BuildOptions::default()).unwrap();
    let x = Tensor::randn(&[4, 1, 8, 8], DType::F32, 1.0, 5).unwrap();
    let t = cpu_tracker();
    let before = t.snapshot();
    let _y = model.net_forward_for_accounting(&x).unwrap();
    let snap = t.snapshot();
    let saved = |layer: &str| -> u64 {
        let now: u64 = snap
            .per_layer
            .iter()
            .filter(|(l, c, _)| l == layer && *c == Category::SavedForBackward)
            .map(|e| e.2)
            .sum();
        let was: u64 = before
            .per_layer
            .iter()
            .filter(|(l, c, _)| l == layer && *c == Category::SavedForBackward)
            .map(|e| e.2)
            .sum();
        now - was
    };
    assert_eq!(saved("conv1"), 4 * (256 + 3072 + 2048 + 24));
    assert_eq!(saved("bn1"), 4 * (1024 + 8));
    assert_eq!(saved("relu"), 4 * 1024);
    assert_eq!(saved("pool"), 4 * 256);
    assert_eq!(saved("fc"), 4 * 256);
    model.net_clear();
}
