//! Parameter groups applied per segment of a stacked quadratic weight, state export/import
//! (exact resume), and the quadratic optimizer's default groups.
//!
//! `adamw_groups_on_stacked_segments_match_pytorch`: the stacked weight of a quadralib
//! QuadLinear(3→2) is [W_a; W_b; W_c] (QuadWeight, QuadWeight, Weight), its bias
//! [b_a; b_b; b_c] (QuadBias, QuadBias, Bias). PyTorch, with the slices as separate tensors:
//!
//!   w = [0.1 * i - 0.5 for i in range(18)]; b = [0.05 * i for i in range(6)]
//!   wa, wb, wc, ba, bb, bc = Parameters of w[0:6], w[6:12], w[12:18], b[0:2], b[2:4], b[4:6]
//!   opt = torch.optim.AdamW([{"params": [wa, wb, ba, bb], "lr": 0.001, "betas": (0.8, 0.99),
//!                             "weight_decay": 0.0}, {"params": [wc, bc]}],
//!                           lr=0.01, betas=(0.9, 0.999), weight_decay=0.01)
//!   for s in range(3):
//!       gw = [sin(i + s) for i in range(18)]; gb = [cos(i + s) for i in range(6)]
//!       (slices of gw, gb as the grads); opt.step()
//!   print(torch.cat([wa, wb, wc]).tolist(), torch.cat([ba, bb, bc]).tolist())

use std::collections::HashMap;

use quadra::nn::container::Sequential;
use quadra::nn::linear::Linear;
use quadra::nn::loss::SoftmaxCrossEntropy;
use quadra::nn::quadratic::{NeuronType, QuadLinear};
use quadra::nn::{BackpropMode, Module, ParamKind};
use quadra::optim::{
    Adam, AdamConfig, BaseOptimizer, Optimizer, ParamGroup, QuadraticConfig, QuadraticOptimizer,
    Sgd,
};
use quadra::{Category, DType, Tensor};

fn quad_linear(dtype: DType, seed: u64) -> QuadLinear {
    QuadLinear::new(
        "q",
        NeuronType::QuadraLib,
        3,
        2,
        true,
        BackpropMode::Stored,
        dtype,
        seed,
    )
    .unwrap()
}

fn set_values(m: &mut dyn Module, f: &dyn Fn(&str, usize) -> f64) {
    m.visit_params(&mut |name, p| {
        let v: Vec<f64> = (0..p.value.numel()).map(|i| f(name, i)).collect();
        p.value = Tensor::from_f64(&v, p.value.shape(), p.value.dtype()).unwrap();
        p.value.retag(Category::Parameter);
    });
}

fn set_grads(m: &mut dyn Module, f: &dyn Fn(&str, usize) -> f64) {
    m.visit_params(&mut |name, p| {
        let v: Vec<f64> = (0..p.value.numel()).map(|i| f(name, i)).collect();
        let g = Tensor::from_f64(&v, p.value.shape(), p.value.dtype()).unwrap();
        g.retag(Category::Gradient);
        p.grad = Some(g);
    });
}

fn param(m: &mut dyn Module, key: &str) -> Vec<f64> {
    let mut out = Vec::new();
    m.visit_params(&mut |name, p| {
        if name == key {
            out = p.value.to_f64_vec();
        }
    });
    out
}

#[test]
fn sgd_groups_apply_per_segment() {
    let mut m = quad_linear(DType::F64, 3);
    set_values(&mut m, &|_, _| 0.0);
    let groups = vec![ParamGroup::new(
        "second_order",
        &[ParamKind::QuadWeight, ParamKind::QuadBias],
    )
    .lr_scale(0.5)];
    let mut opt = Sgd::new(0.1, 0.0, 0.0, false)
        .unwrap()
        .with_groups(groups)
        .unwrap();
    set_grads(&mut m, &|_, _| 1.0);
    opt.step(&mut m).unwrap();
    let w = param(&mut m, "q.stacked.weight");
    assert_eq!(w.len(), 18);
    for (i, v) in w.iter().enumerate() {
        let want = if i < 12 { -0.05 } else { -0.1 };
        assert!((v - want).abs() < 1e-15, "element {i}: {v} vs {want}");
    }
    let b = param(&mut m, "q.stacked.bias");
    for (i, v) in b.iter().enumerate() {
        let want = if i < 4 { -0.05 } else { -0.1 };
        assert!((v - want).abs() < 1e-15, "bias element {i}: {v} vs {want}");
    }
}

#[test]
fn adamw_groups_on_stacked_segments_match_pytorch() {
    let mut m = quad_linear(DType::F64, 3);
    set_values(&mut m, &|name, i| {
        if name.ends_with("weight") {
            0.1 * i as f64 - 0.5
        } else {
            0.05 * i as f64
        }
    });
    let groups = vec![ParamGroup::new(
        "second_order",
        &[ParamKind::QuadWeight, ParamKind::QuadBias],
    )
    .lr_scale(0.1)
    .betas(0.8, 0.99)
    .weight_decay(0.0)];
    let cfg = AdamConfig {
        betas: (0.9, 0.999),
        weight_decay: 0.01,
        ..AdamConfig::adamw(0.01)
    };
    let mut opt = Adam::new(cfg).unwrap().with_groups(groups).unwrap();
    for s in 0..3 {
        set_grads(&mut m, &|name, i| {
            let x = (i + s) as f64;
            if name.ends_with("weight") {
                x.sin()
            } else {
                x.cos()
            }
        });
        opt.step(&mut m).unwrap();
    }
    let want_w = [
        -0.5016879752713326,
        -0.402806193264749,
        -0.3017064307694562,
        -0.19949602262875143,
        -0.09712587085098,
        0.0019322009835940838,
        0.09974878705403765,
        0.1970809128874912,
        0.2978681412683194,
        0.399931459141946,
        0.5029394739426815,
        0.6023084378037187,
        0.7055091201455241,
        0.7707292162505467,
        0.874281606047153,
        0.9902969595392417,
        1.1281461811861635,
        1.2262854172303972,
    ];
    let want_b = [
        -0.0023136039832890617,
        0.049557039225043606,
        0.10293202894163386,
        0.15246788674424916,
        0.2094539048787043,
        0.22147191507176797,
    ];
    for (got, want, what) in [
        (param(&mut m, "q.stacked.weight"), &want_w[..], "weight"),
        (param(&mut m, "q.stacked.bias"), &want_b[..], "bias"),
    ] {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{what}: {got:?} vs {want:?}");
        }
    }
}

fn tiny_net(seed: u64) -> Sequential {
    let q = QuadLinear::new(
        "q",
        NeuronType::QuadraLib,
        4,
        5,
        true,
        BackpropMode::Stored,
        DType::F32,
        seed,
    )
    .unwrap();
    let fc = Linear::new("fc", 5, 3, true, DType::F32, seed + 7).unwrap();
    Sequential::new("", vec![Box::new(q), Box::new(fc)])
}

fn train(net: &mut Sequential, opt: &mut dyn Optimizer, steps: std::ops::Range<u64>) {
    let loss = SoftmaxCrossEntropy::new(0.0).unwrap();
    for s in steps {
        let x = Tensor::randn(&[6, 4], DType::F32, 1.0, 100 + s).unwrap();
        let y: Vec<usize> = (0..6).map(|i| (i + s as usize) % 3).collect();
        let logits = net.forward(&x).unwrap();
        let (_, g) = loss.forward(&logits, &y).unwrap();
        net.backward(&g).unwrap();
        opt.step(net).unwrap();
    }
}

fn all_values(net: &mut Sequential) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    net.visit_params(&mut |n, p| out.push((n.to_string(), p.value.to_vec::<f32>().unwrap())));
    out
}

fn resume_is_exact(make: &dyn Fn() -> Box<dyn Optimizer>) {
    let mut a = tiny_net(1);
    let mut opt_a = make();
    train(&mut a, opt_a.as_mut(), 0..6);

    let mut b = tiny_net(1);
    let mut opt_b = make();
    train(&mut b, opt_b.as_mut(), 0..3);
    let mut sd = Vec::new();
    b.state_dict(&mut sd);
    let state = opt_b.state().unwrap();
    assert!(!state.tensors.is_empty());
    assert!(state
        .tensors
        .iter()
        .all(|t| t.1.category() == Category::OptimizerState));
    drop((b, opt_b));

    let mut c = tiny_net(99); // other weights, replaced by the checkpoint
    let mut map: HashMap<String, Tensor> = sd.into_iter().collect();
    c.load_state_dict(&mut map).unwrap();
    let mut opt_c = make();
    opt_c.load_state(&state).unwrap();
    train(&mut c, opt_c.as_mut(), 3..6);
    assert_eq!(
        all_values(&mut a),
        all_values(&mut c),
        "resumed run differs"
    );
}

#[test]
fn state_export_import_resumes_bit_identically() {
    let quad = |base| {
        let cfg = QuadraticConfig {
            quad_lr_scale: 0.3,
            quad_weight_decay: Some(0.0),
            relinear: None,
        };
        Box::new(QuadraticOptimizer::new(base, cfg).unwrap()) as Box<dyn Optimizer>
    };
    resume_is_exact(&|| {
        let c = AdamConfig {
            amsgrad: true,
            ..AdamConfig::adamw(0.01)
        };
        quad(BaseOptimizer::Adam(c))
    });
    resume_is_exact(&|| Box::new(Adam::new(AdamConfig::adam(0.01)).unwrap()));
    resume_is_exact(&|| {
        quad(BaseOptimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-3,
            nesterov: true,
        })
    });
}

#[test]
fn load_state_rejects_another_kind() {
    let mut net = tiny_net(1);
    let mut sgd = Sgd::new(0.1, 0.9, 0.0, false).unwrap();
    train(&mut net, &mut sgd, 0..1);
    let st = sgd.state().unwrap();
    let mut adam = Adam::new(AdamConfig::adam(0.1)).unwrap();
    assert!(adam.load_state(&st).is_err());
}

#[test]
fn quadratic_optimizer_defaults() {
    let cfg = QuadraticConfig::default();
    assert_eq!(cfg.relinear, Some(0.0));
    let base = BaseOptimizer::Sgd {
        lr: 0.1,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    // quadratic network: second-order group on, ReLinear applied
    let mut net = tiny_net(1);
    let opt = QuadraticOptimizer::for_model(&mut net, base, cfg).unwrap();
    assert_eq!(opt.groups().len(), 1);
    assert_eq!(
        opt.groups()[0].kinds,
        [ParamKind::QuadWeight, ParamKind::QuadBias]
    );
    assert_eq!(opt.relinear_report().unwrap().applied(), 1);
    // first-order network: plain optimizer, weights untouched
    let mut fo = Sequential::new(
        "",
        vec![Box::new(
            Linear::new("fc", 4, 3, true, DType::F32, 1).unwrap(),
        )],
    );
    let before = all_values(&mut fo);
    let opt = QuadraticOptimizer::for_model(&mut fo, base, cfg).unwrap();
    assert!(opt.groups().is_empty() && opt.relinear_report().is_none());
    assert_eq!(before, all_values(&mut fo));
    // invalid settings
    assert!(QuadraticOptimizer::new(
        base,
        QuadraticConfig {
            quad_lr_scale: -1.0,
            ..cfg
        }
    )
    .is_err());
    assert!(QuadraticOptimizer::new(
        base,
        QuadraticConfig {
            relinear: Some(f64::NAN),
            ..cfg
        }
    )
    .is_err());
}
