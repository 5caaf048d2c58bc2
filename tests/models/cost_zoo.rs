//! The cost model against hand counts: parameters and multiply-accumulates (1 MAC per
//! multiply-add, conv/linear weight maps only) per sample of a 3×32×32 input.
//!
//! Parameter counts are PyTorch's, printed by ../shared/bench/torch_ref.py's modules:
//! `sum(p.numel() for p in m.parameters())`. MACs were cross-checked once with forward hooks
//! on the same modules (python with torch 2.x, batch 1):
//!
//! ```python
//! def hook(mod, inp, out):
//!     if isinstance(mod, nn.Conv2d):
//!         macs[0] += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
//!     elif isinstance(mod, nn.Linear):
//!         macs[0] += mod.in_features * mod.out_features
//! for mod in net.modules():
//!     if isinstance(mod, (nn.Conv2d, nn.Linear)): mod.register_forward_hook(hook)
//! net(torch.zeros(1, 3, 32, 32))
//! # qresnet14 520282 78561920 / resnet32 466906 69124736
//! # qvgg7 12304330 429986816 / vgg13 9416010 228267008
//! ```

use quadra::convert::{cost, cost_at};
use quadra::model::Model;
use quadra::models;
use quadra::nn::spec::BuildOptions;

/// One conv: (c_in, c_out, k, output side, bias, branches). Returns (params, MACs);
/// a quadratic conv with `branches` = 3 (quadralib-bn) also has 3 BNs (2·c_out each).
fn conv(cin: u64, cout: u64, k: u64, side: u64, bias: bool, branches: u64) -> (u64, u64) {
    let w = cout * cin * k * k;
    let b = if bias { cout } else { 0 };
    let bn = if branches == 3 { 3 * 2 * cout } else { 0 };
    (
        branches * (w + b) + bn,
        branches * side * side * cout * cin * k * k,
    )
}

fn bn(c: u64) -> (u64, u64) {
    (2 * c, 0)
}

fn sum(parts: &[(u64, u64)]) -> (u64, u64) {
    parts.iter().fold((0, 0), |(p, m), &(a, b)| (p + a, m + b))
}

/// VGG (CIFAR): conv3x3 + BN per entry, max-pool at 0, then Linear(512, 10).
fn vgg(cfg: &[u64], quad: bool) -> (u64, u64) {
    let (mut parts, mut cin, mut side) = (Vec::new(), 3, 32);
    for &v in cfg {
        if v == 0 {
            side /= 2;
        } else {
            parts.push(conv(cin, v, 3, side, true, if quad { 3 } else { 1 }));
            parts.push(bn(v));
            cin = v;
        }
    }
    parts.push((512 * 10 + 10, 512 * 10));
    sum(&parts)
}

/// CIFAR ResNet: stem conv3x3(3→16, no bias) + BN; stages of basic blocks (conv-BN-conv-BN,
/// 1×1 conv + BN shortcut when the shape changes); Linear(64, 10). Quadratic blocks use
/// quadralib-bn convs with biases.
fn resnet(blocks: u64, quad: bool) -> (u64, u64) {
    let nb = if quad { 3 } else { 1 };
    let mut parts = vec![conv(3, 16, 3, 32, false, 1), bn(16)];
    let mut cin = 16;
    for (i, (planes, side)) in [(16u64, 32u64), (32, 16), (64, 8)].into_iter().enumerate() {
        for j in 0..blocks {
            parts.push(conv(cin, planes, 3, side, quad, nb));
            parts.push(bn(planes));
            parts.push(conv(planes, planes, 3, side, quad, nb));
            parts.push(bn(planes));
            if i > 0 && j == 0 {
                parts.push(conv(cin, planes, 1, side, false, 1));
                parts.push(bn(planes));
            }
            cin = planes;
        }
    }
    parts.push((64 * 10 + 10, 64 * 10));
    sum(&parts)
}

#[test]
fn cost_matches_hand_counts_pytorch_params_and_hook_macs() {
    let vgg13 = [
        64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0,
    ];
    let qvgg7 = [64, 64, 0, 128, 128, 0, 256, 0, 512, 0, 512, 0];
    for (name, hand, torch_params, hook_macs) in [
        ("vgg13", vgg(&vgg13, false), 9_416_010u64, 228_267_008u64),
        ("qvgg7", vgg(&qvgg7, true), 12_304_330, 429_986_816),
        ("resnet32", resnet(5, false), 466_906, 69_124_736),
        ("qresnet14", resnet(2, true), 520_282, 78_561_920),
    ] {
        let spec = models::get(name, None, 10).unwrap();
        let c = cost(&spec).unwrap();
        println!("{}", c.table());
        assert_eq!(
            hand,
            (torch_params, hook_macs),
            "{name}: hand count vs PyTorch"
        );
        assert_eq!(c.total_params, torch_params, "{name}: params");
        assert_eq!(c.total_macs, hook_macs, "{name}: MACs");
        // the per-layer rows add up, and a table exists
        assert_eq!(c.layers.iter().map(|r| r.macs).sum::<u64>(), c.total_macs);
        assert!(c.table().contains("total"));
    }
}

#[test]
fn cost_params_equal_built_models_for_every_zoo_entry_and_neuron() {
    use quadra::nn::quadratic::NeuronType;
    for (name, _) in models::MODELS {
        for n in [
            NeuronType::QuadraLibBn,
            NeuronType::QuadraLib,
            NeuronType::Fan,
            NeuronType::T4,
        ] {
            if name.starts_with("qvgg") || name.starts_with("vgg") || name.starts_with("resnet56") {
                continue; // large: checked by the hand-count test above
            }
            let spec = models::get(name, Some(n), 10).unwrap();
            let m = Model::build(&spec, BuildOptions::default()).unwrap();
            assert_eq!(
                cost(&spec).unwrap().total_params,
                m.num_params() as u64,
                "{name} {n}"
            );
        }
    }
    // t1, t2, t3 on the small quadratic CNN
    for n in [NeuronType::T1, NeuronType::T2, NeuronType::T3] {
        let spec = models::get("qcnn", Some(n), 10).unwrap();
        let m = Model::build(&spec, BuildOptions::default()).unwrap();
        assert_eq!(
            cost(&spec).unwrap().total_params,
            m.num_params() as u64,
            "qcnn {n}"
        );
    }
}

#[test]
fn cost_of_small_models_by_hand_and_other_input_sizes() {
    // cnn: conv1 1→16 3x3 @28², BN, pool → 14², conv2 16→32 @14², BN, pool → 7², fc 1568→10
    let spec = models::get("cnn", None, 10).unwrap();
    let c = cost(&spec).unwrap();
    let params = 16 * 9 + 2 * 16 + 32 * 16 * 9 + 2 * 32 + 1568 * 10 + 10;
    let macs = 28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 1568 * 10;
    assert_eq!((c.total_params, c.total_macs), (params, macs));
    // other ops: BN 2/elt, ReLU 1/elt, pool 4 per output, fc bias 10
    let other = 3 * 16 * 28 * 28 + 16 * 14 * 14 * 4 + 3 * 32 * 14 * 14 + 32 * 7 * 7 * 4 + 10;
    assert_eq!(c.total_other_ops, other);
    // resnet20 on 64×64 inputs: MACs scale by 4 except the linear layer; params unchanged
    let spec = models::get("resnet20", None, 10).unwrap();
    let a = cost(&spec).unwrap();
    let b = cost_at(&spec, &[3, 64, 64]).unwrap();
    assert_eq!(a.total_params, b.total_params);
    assert_eq!(b.total_macs - 640, 4 * (a.total_macs - 640));
    // a shape a layer cannot take is an error naming the layer
    let e = cost_at(&spec, &[4, 32, 32]).unwrap_err().to_string();
    assert!(e.contains("conv1"), "{e}");
    // JSON round trip
    let j = serde_json::to_string(&a).unwrap();
    let back: quadra::convert::CostReport = serde_json::from_str(&j).unwrap();
    assert_eq!(back, a);
}
