//! Training on `Device::Emu` (the CUDA backend's code path, kernels run by the emulator)
//! against the CPU engine: softmax cross-entropy and its gradient (cuda/loss.cu), the fused
//! SGD / Adam(W) updates and gradient clipping (cuda/optim.cu), and whole training steps of
//! a small CNN through `Model::train_step`, from the same weights and batches.

use std::any::Any;

use crate::support::{assert_close, ok_stdout, randn, run, tempdir};
use quadra::device::alloc::Category;
use quadra::model::Model;
use quadra::nn::loss::{accuracy_count, SoftmaxCrossEntropy};
use quadra::nn::spec::{BuildOptions, LayerSpec, ModelSpec, Pair};
use quadra::nn::{Module, Param, ParamKind, Segment};
use quadra::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, ParamGroup, Sgd};
use quadra::{DType, Device, Result, Tensor};

fn emu(t: &Tensor) -> Tensor {
    t.to_device(Device::Emu).unwrap()
}

fn cpu(t: &Tensor) -> Tensor {
    t.to_device(Device::Cpu).unwrap()
}

fn targets(n: usize, k: usize, seed: usize) -> Vec<usize> {
    (0..n).map(|i| (i * 7 + seed * 3 + i * i) % k).collect()
}

// ---------------------------------------------------------------------------------------
// (a) the loss
// ---------------------------------------------------------------------------------------

#[test]
fn loss_and_gradient_match_cpu() {
    // (N, classes, label smoothing, logit scale): odd sizes, one class count above a warp
    // and one above the 256-thread block (threads stride over the row), large logits
    let cases = [
        (1, 1, 0.0, 1.0),
        (5, 3, 0.0, 1.0),
        (7, 11, 0.1, 2.0),
        (3, 37, 0.1, 1.0),
        (9, 300, 0.0, 3.0),
        (4, 10, 0.1, 500.0),
    ];
    for (i, &(n, k, eps, scale)) in cases.iter().enumerate() {
        let what = format!("N={n} K={k} ε={eps}");
        let z = Tensor::randn(&[n, k], DType::F32, scale, 40 + i as u64).unwrap();
        let y = targets(n, k, i);
        let loss = SoftmaxCrossEntropy::new(eps).unwrap();
        let (l, g) = loss.forward(&z, &y).unwrap();
        let (le, ge) = loss.forward(&emu(&z), &y).unwrap();
        assert_eq!(ge.device(), Device::Emu, "{what}: gradient left the device");
        assert!(
            (le - l).abs() <= 1e-6 * l.abs().max(1.0),
            "{what}: loss {le} on emu, {l} on cpu"
        );
        assert_close(&cpu(&ge), &g, 1e-5, 1e-8, &format!("{what} dlogits"));
        assert_eq!(
            accuracy_count(&emu(&z), &y).unwrap(),
            accuracy_count(&z, &y).unwrap(),
            "{what}: accuracy"
        );
    }
}

/// The kernel's correct-row count (read back with the loss, in the same copy) against the
/// CPU engine's argmax on the rows where the two could disagree: ties (the first wins), NaN
/// first (index 0 wins, nothing compares larger), NaN later (ignored), -inf, a row of NaNs,
/// a class count above the block (threads stride) with the maximum in the last stride.
#[test]
fn accuracy_counted_on_device_matches_cpu_argmax() {
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    let rows: Vec<Vec<f32>> = vec![
        vec![1.0, 3.0, 3.0, 0.0],
        vec![3.0, 3.0, 1.0, 3.0],
        vec![nan, 5.0, 1.0, 0.0],
        vec![1.0, nan, 2.0, 2.0],
        vec![ninf, ninf, ninf, ninf],
        vec![nan, nan, nan, nan],
        vec![ninf, nan, -1.0, nan],
        vec![0.0, 0.0, 0.0, 0.0],
    ];
    let k = 4;
    let flat: Vec<f32> = rows.concat();
    let z = Tensor::from_vec(flat, &[rows.len(), k]).unwrap();
    let loss = SoftmaxCrossEntropy::new(0.0).unwrap();
    // every target for every row: 4 counts, each over the 8 rows
    for t in 0..k {
        let y = vec![t; rows.len()];
        let on_emu = loss.forward_with_accuracy(&emu(&z), &y).unwrap().correct;
        let on_cpu = loss.forward_with_accuracy(&z, &y).unwrap().correct;
        assert_eq!(on_emu, on_cpu, "target {t}: correct rows");
        assert_eq!(
            on_cpu,
            accuracy_count(&z, &y).unwrap(),
            "target {t}: cpu pass"
        );
    }
    // the expected argmaxes, so the count is not merely equal on both sides
    let best = [1, 0, 0, 2, 0, 0, 2, 0];
    let correct = loss
        .forward_with_accuracy(&emu(&z), best.as_ref())
        .unwrap()
        .correct;
    assert_eq!(correct, rows.len(), "argmax per row");
    // 300 classes (more than the 256-thread block): the largest entry at 299
    let mut wide: Vec<f32> = (0..600).map(|i| (i % 300) as f32 * 0.01).collect();
    wide[299] = 7.0;
    wide[300 + 280] = 7.0;
    wide[300 + 290] = 7.0;
    let z = emu(&Tensor::from_vec(wide, &[2, 300]).unwrap());
    let c = loss.forward_with_accuracy(&z, &[299, 280]).unwrap().correct;
    assert_eq!(c, 2, "wide rows");
    let c = loss.forward_with_accuracy(&z, &[299, 290]).unwrap().correct;
    assert_eq!(c, 1, "wide rows, the later of a tie");
}

#[test]
fn loss_errors_on_device() {
    let z = emu(&randn(&[3, 4], 1));
    let loss = SoftmaxCrossEntropy::new(0.0).unwrap();
    let e = loss.forward(&z, &[0, 1]).unwrap_err().to_string();
    assert!(e.contains("2 targets"), "{e}");
    let e = loss.forward(&z, &[0, 1, 4]).unwrap_err().to_string();
    assert!(e.contains("targets[2] = 4"), "{e}");
}

// ---------------------------------------------------------------------------------------
// (b) the optimizers
// ---------------------------------------------------------------------------------------

/// Parameters without a layer: one with two segments of different kinds (the layout of a
/// stacked quadratic weight, so parameter groups apply per segment), one plain, one bias.
struct Params {
    params: Vec<(String, Param)>,
}

impl Params {
    fn new() -> Params {
        let a = Param::with_segments(
            randn(&[6, 5], 1),
            vec![
                Segment {
                    range: 0..12,
                    kind: ParamKind::QuadWeight,
                },
                Segment {
                    range: 12..30,
                    kind: ParamKind::Weight,
                },
            ],
        );
        let b = Param::new(randn(&[3, 2, 3, 3], 2), ParamKind::Weight);
        let c = Param::new(randn(&[7], 3), ParamKind::Bias);
        Params {
            params: vec![("a".into(), a), ("b".into(), b), ("c".into(), c)],
        }
    }

    /// Sets every gradient to fresh samples (on each parameter's device).
    fn set_grads(&mut self, step: u64) {
        for (i, (_, p)) in self.params.iter_mut().enumerate() {
            let g = randn(p.value.shape(), 1000 + 10 * step + i as u64);
            let g = g.to_device(p.value.device()).unwrap();
            g.retag(Category::Gradient);
            p.grad = Some(g);
        }
    }
}

impl Module for Params {
    fn path(&self) -> &str {
        ""
    }
    fn describe(&self) -> String {
        "Params".into()
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        Ok(g.clone())
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        for (n, p) in &mut self.params {
            f(n, p);
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn values(m: &mut dyn Module) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    m.visit_params(&mut |n, p| v.push((n.to_string(), cpu(&p.value))));
    v
}

/// Runs `steps` updates of `make()` on the CPU and on Emu from the same values and
/// gradients (optionally clipped first) and compares the values after every step, and the
/// optimizer states at the end.
fn check_optimizer(what: &str, make: &dyn Fn() -> Box<dyn Optimizer>, clip: Option<f64>) {
    let (mut pc, mut pe) = (Params::new(), Params::new());
    quadra::nn::module_to_device(&mut pe, Device::Emu).unwrap();
    let (mut oc, mut oe) = (make(), make());
    for step in 0..5 {
        pc.set_grads(step);
        pe.set_grads(step);
        if let Some(max) = clip {
            let nc = clip_grad_norm(&mut pc, max).unwrap();
            let ne = clip_grad_norm(&mut pe, max).unwrap();
            assert!(
                (nc - ne).abs() <= 1e-9 * nc,
                "{what}: gradient norm {ne} on emu, {nc} on cpu"
            );
        }
        oc.step(&mut pc).unwrap();
        oe.step(&mut pe).unwrap();
        pe.visit_params(&mut |n, p| {
            assert!(p.grad.is_none(), "{what}: `{n}` kept its gradient");
            assert_eq!(
                p.value.device(),
                Device::Emu,
                "{what}: `{n}` left the device"
            );
        });
        for ((n, c), (_, e)) in values(&mut pc).iter().zip(&values(&mut pe)) {
            assert_close(
                e,
                c,
                1e-5,
                1e-6,
                &format!("{what}: `{n}` after step {}", step + 1),
            );
        }
    }
    let (sc, se) = (oc.state().unwrap(), oe.state().unwrap());
    assert_eq!(sc.kind, se.kind);
    assert_eq!(sc.scalars, se.scalars, "{what}: state scalars");
    assert_eq!(sc.tensors.len(), se.tensors.len(), "{what}: state tensors");
    for ((n, c), (ne, e)) in sc.tensors.iter().zip(&se.tensors) {
        assert_eq!(n, ne);
        assert_eq!(
            e.device(),
            Device::Emu,
            "{what}: state `{n}` is not on the device"
        );
        assert_eq!(e.category(), Category::OptimizerState, "{what}: `{n}`");
        assert_close(&cpu(e), c, 1e-5, 1e-6, &format!("{what}: state `{n}`"));
    }
}

#[test]
fn sgd_matches_cpu_over_five_steps() {
    check_optimizer(
        "sgd",
        &|| Box::new(Sgd::new(0.1, 0.0, 0.0, false).unwrap()),
        None,
    );
    check_optimizer(
        "sgd wd",
        &|| Box::new(Sgd::new(0.05, 0.0, 1e-2, false).unwrap()),
        None,
    );
    check_optimizer(
        "sgd momentum dampening wd",
        &|| {
            let mut o = Sgd::new(0.05, 0.9, 5e-4, false).unwrap();
            o.dampening = 0.1;
            Box::new(o)
        },
        None,
    );
    check_optimizer(
        "sgd nesterov, groups",
        &|| {
            let groups = vec![ParamGroup::new("second_order", &[ParamKind::QuadWeight])
                .lr_scale(0.1)
                .weight_decay(0.05)];
            Box::new(
                Sgd::new(0.05, 0.9, 5e-4, true)
                    .unwrap()
                    .with_groups(groups)
                    .unwrap(),
            )
        },
        Some(2.0),
    );
}

#[test]
fn adam_and_adamw_match_cpu_over_five_steps() {
    check_optimizer(
        "adam",
        &|| Box::new(Adam::new(AdamConfig::adam(1e-2)).unwrap()),
        None,
    );
    check_optimizer(
        "adam wd",
        &|| {
            Box::new(
                Adam::new(AdamConfig {
                    weight_decay: 1e-2,
                    ..AdamConfig::adam(1e-2)
                })
                .unwrap(),
            )
        },
        None,
    );
    check_optimizer(
        "adamw",
        &|| Box::new(Adam::new(AdamConfig::adamw(1e-2)).unwrap()),
        None,
    );
    check_optimizer(
        "adamw amsgrad, groups, clipped",
        &|| {
            let groups = vec![ParamGroup::new("second_order", &[ParamKind::QuadWeight])
                .lr_scale(0.1)
                .betas(0.8, 0.99)
                .weight_decay(0.1)];
            let cfg = AdamConfig {
                amsgrad: true,
                ..AdamConfig::adamw(1e-2)
            };
            Box::new(Adam::new(cfg).unwrap().with_groups(groups).unwrap())
        },
        Some(1.0),
    );
}

#[test]
fn clipping_matches_cpu() {
    let (mut pc, mut pe) = (Params::new(), Params::new());
    quadra::nn::module_to_device(&mut pe, Device::Emu).unwrap();
    pc.set_grads(3);
    pe.set_grads(3);
    let nc = clip_grad_norm(&mut pc, 0.5).unwrap();
    let ne = clip_grad_norm(&mut pe, 0.5).unwrap();
    assert!(
        (nc - ne).abs() <= 1e-12 * nc,
        "norm {ne} on emu, {nc} on cpu"
    );
    assert!(nc > 0.5, "the test should clip ({nc})");
    let grads = |m: &mut Params| -> Vec<Tensor> {
        m.params
            .iter()
            .map(|(_, p)| cpu(p.grad.as_ref().unwrap()))
            .collect()
    };
    for (c, e) in grads(&mut pc).iter().zip(&grads(&mut pe)) {
        assert_close(e, c, 1e-6, 1e-8, "clipped gradient");
    }
}

/// State saved on one device continues on the other (a checkpoint taken on the CPU, resumed
/// on the emulator): the state tensors move to the parameters' device at the next step.
#[test]
fn optimizer_state_follows_the_parameters() {
    let make = || Adam::new(AdamConfig::adamw(1e-2)).unwrap();
    let (mut pc, mut oc) = (Params::new(), make());
    for step in 0..3 {
        pc.set_grads(step);
        oc.step(&mut pc).unwrap();
    }
    let mut pe = Params::new();
    for ((_, a), (_, b)) in pe.params.iter_mut().zip(&pc.params) {
        a.value = b.value.copy_in(Category::Parameter).unwrap();
    }
    quadra::nn::module_to_device(&mut pe, Device::Emu).unwrap();
    let mut oe = make();
    oe.load_state(&oc.state().unwrap()).unwrap();
    for step in 3..5 {
        pc.set_grads(step);
        pe.set_grads(step);
        oc.step(&mut pc).unwrap();
        oe.step(&mut pe).unwrap();
    }
    for ((n, c), (_, e)) in values(&mut pc).iter().zip(&values(&mut pe)) {
        assert_close(e, c, 1e-5, 1e-6, &format!("resumed `{n}`"));
    }
    assert!(oe
        .state()
        .unwrap()
        .tensors
        .iter()
        .all(|(_, t)| t.device() == Device::Emu));
}

// ---------------------------------------------------------------------------------------
// (c) whole training steps
// ---------------------------------------------------------------------------------------

/// A first-order CNN of the layers the CUDA backend runs today: conv → conv → flatten →
/// linear. Extend `train_specs` with zoo models (`quadra::models::get("cnn", …)`, a
/// quadratic CNN with `quad_conv2d` layers) as their GPU layers land; the checks below take
/// any spec.
fn tiny_cnn() -> ModelSpec {
    let conv = |name: &str, cin, cout, stride| LayerSpec::Conv2d {
        name: Some(name.into()),
        in_channels: cin,
        out_channels: cout,
        kernel_size: Pair::One(3),
        stride: Pair::One(stride),
        padding: Pair::One(1),
        dilation: Pair::One(1),
        groups: 1,
        bias: true,
    };
    ModelSpec {
        name: "tiny-cnn".into(),
        input: vec![2, 6, 6],
        num_classes: 5,
        layers: vec![
            conv("conv1", 2, 4, 1),
            conv("conv2", 4, 3, 2),
            LayerSpec::Flatten { name: None },
            LayerSpec::Linear {
                name: Some("fc".into()),
                in_features: 27,
                out_features: 5,
                bias: true,
            },
        ],
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

/// A small quadratic CNN: quadralib-bn, quadralib and t4 convolutions, ReLU, max-pool, a
/// quadratic classifier; in the back-propagation mode given. No conv bias before the
/// quadralib-bn's batch norms and no batch norm right after it: a per-channel constant
/// there has an exactly zero gradient, which both engines fill with rounding noise, and
/// Adam turns that noise into full-size steps in different directions (the loss does not
/// see them; the weights do). The zoo network below has such batch norms and is therefore
/// compared under SGD only.
fn tiny_qcnn(mode: &str) -> ModelSpec {
    let json = r#"{
      "name": "tiny-qcnn-MODE", "input": [2, 8, 8], "num_classes": 5, "backprop": "MODE",
      "layers": [
        {"type": "quad_conv2d", "name": "q1", "neuron": "quadralib-bn", "in_channels": 2,
         "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": false},
        {"type": "relu", "name": "relu1"},
        {"type": "quad_conv2d", "name": "q2", "neuron": "quadralib", "in_channels": 4,
         "out_channels": 6, "kernel_size": 3, "padding": 1, "stride": 2},
        {"type": "relu", "name": "relu2"},
        {"type": "max_pool2d", "name": "pool", "kernel_size": 2},
        {"type": "quad_conv2d", "name": "q3", "neuron": "t4", "in_channels": 6,
         "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"type": "flatten", "name": "flatten"},
        {"type": "quad_linear", "name": "fc", "neuron": "quadralib", "in_features": 24,
         "out_features": 5}
      ]
    }"#;
    ModelSpec::from_json(&json.replace("MODE", mode)).unwrap()
}

fn train_specs() -> Vec<ModelSpec> {
    vec![
        tiny_cnn(),
        tiny_qcnn("stored"),
        tiny_qcnn("recompute"),
        qresnet10_small(),
    ]
}

/// The zoo's qresnet10 (quadralib-bn residual network) on 8×8 inputs: its global average
/// pool makes the spatial size free, and the emulator's cost scales with it.
fn qresnet10_small() -> ModelSpec {
    let mut s = quadra::models::get("qresnet10", None, 4).unwrap();
    s.input = vec![3, 8, 8];
    s.check().unwrap();
    s
}

/// Trains the same model on the CPU and on Emu for `steps` steps of batch `n` (same initial
/// weights, batches, optimizer); prints both loss curves and checks them, the accuracy
/// counts, the final weights and eval-mode predictions.
fn check_training(spec: &ModelSpec, what: &str, make: &dyn Fn() -> Box<dyn Optimizer>) {
    for dev in crate::support::devices() {
        check_training_on(dev, spec, &format!("{what} on {dev}"), make);
    }
}

fn check_training_on(
    dev: Device,
    spec: &ModelSpec,
    what: &str,
    make: &dyn Fn() -> Box<dyn Optimizer>,
) {
    let (steps, n) = (5, 7);
    let build = || {
        let mut m = Model::build(
            spec,
            BuildOptions {
                dtype: DType::F32,
                seed: 3,
            },
        )
        .unwrap();
        m.loss = SoftmaxCrossEntropy::new(0.1).unwrap();
        m
    };
    let (mut mc, mut me) = (build(), build());
    me.to_device(dev).unwrap();
    assert_eq!(me.device().unwrap(), dev);
    let (mut oc, mut oe) = (make(), make());
    let mut shape = vec![n];
    shape.extend(&spec.input);
    let (mut curve_c, mut curve_e) = (Vec::new(), Vec::new());
    for step in 0..steps {
        // batches come from the loader as CPU tensors: train_step uploads them. One batch,
        // seen every step, so that the loss must fall.
        let x = randn(&shape, 500);
        let y = targets(n, spec.num_classes, 0);
        let c = mc.train_step(&x, &y, oc.as_mut()).unwrap();
        let e = me.train_step(&x, &y, oe.as_mut()).unwrap();
        curve_c.push(c.loss);
        curve_e.push(e.loss);
        assert_eq!(c.correct, e.correct, "{what}: step {step} accuracy");
    }
    println!("{what}: cpu loss {curve_c:.6?}");
    println!("{what}: emu loss {curve_e:.6?}");
    let worst = curve_c
        .iter()
        .zip(&curve_e)
        .map(|(c, e)| (c - e).abs())
        .fold(0.0, f64::max);
    println!("{what}: largest |cpu − emu| {worst:.3e}");
    for (i, (c, e)) in curve_c.iter().zip(&curve_e).enumerate() {
        assert!(
            (c - e).abs() <= 1e-5 * c.abs().max(1.0),
            "{what}: step {i} loss {e} on emu, {c} on cpu"
        );
    }
    assert!(
        curve_c[steps - 1] < curve_c[0],
        "{what}: the loss should fall over the steps: {curve_c:?}"
    );
    for ((name, c), (_, e)) in values(&mut mc.net).iter().zip(&values(&mut me.net)) {
        assert_eq!(me.device().unwrap(), dev);
        assert_close(
            e,
            c,
            1e-4,
            1e-5,
            &format!("{what}: `{name}` after training"),
        );
    }
    let x = randn(&shape, 77);
    let y = targets(n, spec.num_classes, 9);
    let (pc, pe) = (mc.predict(&x).unwrap(), me.predict(&x).unwrap());
    assert_eq!(pe.device(), dev);
    assert_close(&cpu(&pe), &pc, 1e-4, 1e-5, &format!("{what}: predict"));
    let (ec, ee) = (mc.evaluate(&x, &y).unwrap(), me.evaluate(&x, &y).unwrap());
    assert!(
        (ec.loss - ee.loss).abs() <= 1e-5 * ec.loss.max(1.0),
        "{what}: evaluate"
    );
    assert_eq!(ec.correct, ee.correct, "{what}: evaluate accuracy");
}

#[test]
fn training_steps_match_cpu() {
    for spec in train_specs() {
        check_training(&spec, &format!("{} sgd", spec.name), &|| {
            Box::new(Sgd::new(0.05, 0.9, 5e-4, false).unwrap())
        });
        if spec.name != "qresnet10" {
            check_training(&spec, &format!("{} adamw", spec.name), &|| {
                Box::new(Adam::new(AdamConfig::adamw(3e-3)).unwrap())
            });
        }
    }
}

#[test]
fn device_mismatches_are_errors() {
    let spec = tiny_cnn();
    let mut m = Model::build(&spec, BuildOptions::default()).unwrap();
    let mut opt = Sgd::new(0.1, 0.0, 0.0, false).unwrap();
    // one parameter moved alone: the model is on two devices
    let mut first = true;
    m.net.visit_params(&mut |_, p| {
        if std::mem::take(&mut first) {
            p.value = emu(&p.value);
        }
    });
    let x = randn(&[2, 2, 6, 6], 1);
    let e = m.train_step(&x, &[0, 1], &mut opt).unwrap_err().to_string();
    assert!(
        e.contains("several devices") && e.contains("emu") && e.contains("cpu"),
        "{e}"
    );
    // the whole model on the device: CPU batches are uploaded, and a checkpoint of it is
    // written from the device
    m.to_device(Device::Emu).unwrap();
    m.train_step(&x, &[0, 1], &mut opt).unwrap();
    m.train_step(&emu(&x), &[0, 1], &mut opt).unwrap();
    let path = std::env::temp_dir().join(format!(
        "quadra-emu-train-{}.safetensors",
        std::process::id()
    ));
    m.save(&path).unwrap();
    let back = Model::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    m.net.state_dict(&mut a);
    back.net.state_dict(&mut b);
    assert_eq!(a.len(), b.len());
    for ((n, t), (_, u)) in a.iter().zip(&b) {
        assert_eq!(u.device(), Device::Cpu);
        assert_eq!(
            cpu(t).to_f64_vec(),
            u.to_f64_vec(),
            "checkpoint entry `{n}`"
        );
    }
}

// ---------------------------------------------------------------------------------------
// (d) the command line
// ---------------------------------------------------------------------------------------

fn step_losses(dir: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// `quadra-train train --device emu` on the synthetic dataset with a spec file of the layers
/// the backend runs today (swap in `--model cnn` when the GPU norm/pool/activation layers
/// land), against the same run on the CPU; then `eval` of its checkpoint on both devices.
#[test]
fn cli_trains_and_evaluates_on_emu() {
    let dir = tempdir("emu-cli");
    let mut spec = tiny_cnn();
    spec.input = vec![1, 8, 8];
    spec.num_classes = 10;
    if let LayerSpec::Conv2d { in_channels, .. } = &mut spec.layers[0] {
        *in_channels = 1;
    }
    if let LayerSpec::Linear {
        in_features,
        out_features,
        ..
    } = &mut spec.layers[3]
    {
        (*in_features, *out_features) = (3 * 4 * 4, 10);
    }
    let spec_path = dir.join("tiny.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let sp = spec_path.to_str().unwrap();
    let mut curves = Vec::new();
    for device in ["cpu", "emu"] {
        let out = dir.join(device);
        let text = ok_stdout(&[
            "train",
            "--model",
            sp,
            "--train-samples",
            "24",
            "--test-samples",
            "8",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--workers",
            "1",
            "--optimizer",
            "adamw",
            "--clip-grad-norm",
            "1.0",
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(text.contains(&format!("device {device}")), "{text}");
        curves.push(step_losses(&out));
    }
    println!("cli cpu loss {:.6?}", curves[0]);
    println!("cli emu loss {:.6?}", curves[1]);
    assert_eq!(curves[0].len(), 3);
    for (c, e) in curves[0].iter().zip(&curves[1]) {
        assert!(
            (c - e).abs() <= 1e-5 * c.max(1.0),
            "cli: loss {e} on emu, {c} on cpu"
        );
    }
    let ck = dir.join("emu").join("last.safetensors");
    let ck = ck.to_str().unwrap();
    let eval = |device: &str| -> serde_json::Value {
        let text = ok_stdout(&["eval", "--checkpoint", ck, "--device", device, "--json"]);
        serde_json::from_str(text.trim()).unwrap()
    };
    let (vc, ve) = (eval("cpu"), eval("emu"));
    assert_eq!(ve["device"], "emu");
    let (lc, le) = (vc["loss"].as_f64().unwrap(), ve["loss"].as_f64().unwrap());
    assert!(
        (lc - le).abs() <= 1e-5 * lc.max(1.0),
        "eval: {le} on emu, {lc} on cpu"
    );
    assert_eq!(vc["accuracy"], ve["accuracy"]);
    if quadra::device::runtime(Device::Cuda(0)).is_err() {
        let o = run(&["eval", "--checkpoint", ck, "--device", "cuda"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("cuda:0 is not available") && !err.contains("panicked"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
