//! The first-order → QDNN converter: selection (path, index, pattern), the errors, and the
//! function-preserving initialisation (converted model == original in eval mode).

use quadra::convert::{
    self, convert_model, convert_spec, convert_state_dict, state_dict_of, ConvertOptions, Selector,
};
use quadra::data::synthetic::Synthetic;
use quadra::model::Model;
use quadra::models;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::{BuildOptions, LayerSpec, ModelSpec};
use quadra::nn::Module;
use quadra::optim::Sgd;

/// A first-order zoo model trained for a few SGD steps on synthetic data, so that its
/// weights and BatchNorm running statistics are not at their initial values.
fn trained(name: &str, steps: usize, batch: usize) -> (Model, Synthetic) {
    let spec = models::get(name, None, 10).unwrap();
    let shape = [spec.input[0], spec.input[1], spec.input[2]];
    let data = Synthetic::new(shape, 10, 0.5, 7).unwrap();
    let mut m = Model::build(
        &spec,
        BuildOptions {
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 0.0, false).unwrap();
    for s in 0..steps {
        let (x, y) = data.batch(batch, s as u64).unwrap();
        m.train_step(&x, &y, &mut opt).unwrap();
    }
    (m, data)
}

fn opts(n: NeuronType, select: &[&str]) -> ConvertOptions {
    let mut o = ConvertOptions::new(n);
    o.select = select.iter().map(|s| Selector::parse(s).unwrap()).collect();
    o.seed = 11;
    o
}

fn assert_same_function(orig: &Model, conv: &Model, x: &quadra::Tensor, what: &str) {
    let (d, scale) = convert::max_output_diff(orig, conv, x).unwrap();
    println!("{what}: max |Δ| {d:.3e}, max |y| {scale:.3}");
    assert!(scale > 1e-3, "{what}: degenerate outputs");
    assert!(
        d <= 2e-5 * (1.0 + scale),
        "{what}: converted output differs by {d} (max |y| {scale})"
    );
}

#[test]
fn converted_cnn_computes_the_same_function_for_every_neuron_with_a_linear_term() {
    let (orig, data) = trained("cnn", 4, 32);
    let (x, _) = data.batch(16, 1000).unwrap();
    let sd_before = state_dict_of(&orig);
    for n in [
        NeuronType::QuadraLibBn,
        NeuronType::QuadraLib,
        NeuronType::T1,
        NeuronType::T4,
        NeuronType::Fan,
    ] {
        // every conv and the linear classifier
        let (conv, report) = convert_model(&orig, &opts(n, &[])).unwrap();
        assert_eq!(report.layers.len(), 3, "{n}");
        assert!(report.function_preserving);
        assert!(report.params_after > report.params_before, "{n}");
        let mut quad = Vec::new();
        quadra::nn::spec::quadratic_layers(&conv.spec.layers, "", &mut quad);
        assert_eq!(quad, ["conv1", "conv2", "fc"], "{n}");
        assert_same_function(&orig, &conv, &x, &format!("cnn → {n}"));
        // negative control: the same spec with fresh weights is a different function
        let fresh = Model::build(&conv.spec, BuildOptions::default()).unwrap();
        let (d, scale) = convert::max_output_diff(&orig, &fresh, &x).unwrap();
        assert!(d > 1e-2 * scale, "{n}: control differs by only {d}");
    }
    // the caller's model is untouched
    let sd_after = state_dict_of(&orig);
    assert_eq!(sd_before.len(), sd_after.len());
    for ((k, a), (_, b)) in sd_before.iter().zip(&sd_after) {
        assert_eq!(a.max_abs_diff(b).unwrap(), 0.0, "{k}");
    }
}

#[test]
fn converted_resnet20_computes_the_same_function() {
    let (orig, _) = trained("resnet20", 2, 8);
    let data = Synthetic::new([3, 32, 32], 10, 0.5, 9).unwrap();
    let (x, _) = data.batch(4, 77).unwrap();
    for n in [
        NeuronType::QuadraLibBn,
        NeuronType::QuadraLib,
        NeuronType::Fan,
        NeuronType::T4,
    ] {
        let (conv, r) = convert_model(&orig, &opts(n, &[])).unwrap();
        assert_eq!(
            r.layers.len(),
            19 + 2 + 1,
            "{n}: 19 3x3 convs, 2 shortcut convs, linear"
        );
        assert_same_function(&orig, &conv, &x, &format!("resnet20 → {n}"));
    }
    // t1 is O(K²) per output channel: convert two layer1 convs and the classifier only
    let (conv, r) = convert_model(
        &orig,
        &opts(NeuronType::T1, &["layer1.0.conv1", "index:20", "linear"]),
    )
    .unwrap();
    let paths: Vec<_> = r.layers.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(paths, ["layer1.0.conv1", "layer3.2.conv2", "linear"]);
    assert_same_function(&orig, &conv, &x, "resnet20 → t1 (3 layers)");
}

#[test]
fn the_zero_factor_trains_and_the_model_learns_after_conversion() {
    let (orig, data) = trained("cnn", 3, 32);
    for (n, key) in [
        (NeuronType::QuadraLib, "conv2.conv1.weight"),
        (NeuronType::QuadraLibBn, "conv2.bn1.weight"),
        (NeuronType::T4, "conv2.conv2.weight"),
        (NeuronType::Fan, "conv2.conv_g.weight"),
        (NeuronType::T1, "conv2.quad.weight"),
    ] {
        let (mut conv, _) = convert_model(&orig, &opts(n, &["conv*"])).unwrap();
        let get = |m: &Model| {
            state_dict_of(m)
                .into_iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{n}: no entry {key}"))
                .1
                .to_f64_vec()
        };
        let before = get(&conv);
        assert!(before.iter().all(|&v| v == 0.0), "{n}: {key} starts at 0");
        let mut opt = Sgd::new(0.01, 0.0, 0.0, false).unwrap();
        let (x, y) = data.batch(32, 500).unwrap();
        let out = conv.train_step(&x, &y, &mut opt).unwrap();
        assert!(out.loss.is_finite());
        let after = get(&conv);
        assert!(
            after.iter().any(|&v| v != 0.0),
            "{n}: the zero factor {key} received no gradient"
        );
    }
}

#[test]
fn cnn_converted_by_pattern_is_the_zoo_qcnn() {
    let spec = models::get("cnn", None, 10).unwrap();
    let mut o = opts(NeuronType::QuadraLibBn, &["conv*"]);
    o.bias = Some(true);
    let c = convert_spec(&spec, &o).unwrap();
    let mut want = models::get("qcnn", None, 10).unwrap();
    want.name = "cnn".into();
    assert_eq!(c.spec, want);
    assert_eq!(
        c.layers
            .iter()
            .map(|l| (l.path.as_str(), l.index))
            .collect::<Vec<_>>(),
        [("conv1", 0), ("conv2", 1)]
    );
}

#[test]
fn selection_by_name_index_pattern_container_and_exclusion() {
    let spec = models::get("resnet20", None, 10).unwrap();
    let paths = |sel: &[&str], ex: &[&str]| {
        let mut o = opts(NeuronType::QuadraLib, sel);
        o.exclude = ex.iter().map(|s| Selector::parse(s).unwrap()).collect();
        convert_spec(&spec, &o)
            .unwrap()
            .layers
            .into_iter()
            .map(|l| l.path)
            .collect::<Vec<_>>()
    };
    assert_eq!(paths(&["layer1.1.conv2"], &[]), ["layer1.1.conv2"]);
    assert_eq!(paths(&["0"], &[]), ["conv1"]);
    assert_eq!(paths(&["21"], &[]), ["linear"]);
    assert_eq!(
        paths(&["layer3.1"], &[]),
        ["layer3.1.conv1", "layer3.1.conv2"]
    );
    let l2 = paths(&["layer2.*"], &[]);
    assert_eq!(l2.len(), 7, "{l2:?}");
    assert_eq!(l2[2], "layer2.0.shortcut.0", "main path, then shortcut");
    assert_eq!(paths(&["*.conv1"], &[]).len(), 9);
    assert_eq!(paths(&["layer2.*"], &["*.shortcut.*"]).len(), 6);
    assert_eq!(paths(&[], &["conv1", "linear"]).len(), 20);
    // overlapping selectors convert each layer once
    assert_eq!(paths(&["layer1.0.conv1", "1", "layer1.0.*"], &[]).len(), 2);
    // the converted spec builds and keeps the PyTorch names
    let c = convert_spec(&spec, &opts(NeuronType::QuadraLibBn, &["layer1.0.conv1"])).unwrap();
    let net = c.spec.build(BuildOptions::default()).unwrap();
    let mut sd = Vec::new();
    net.state_dict(&mut sd);
    assert!(sd
        .iter()
        .any(|(k, _)| k == "layer1.0.conv1.bn3.running_var"));
}

fn err(spec: &ModelSpec, o: &ConvertOptions) -> String {
    match convert_spec(spec, o) {
        Ok(c) => panic!("expected an error, got {:?}", c.layers),
        Err(e) => e.to_string(),
    }
}

#[test]
fn selection_errors_name_what_was_asked() {
    let spec = models::get("resnet20", None, 10).unwrap();
    let q = NeuronType::QuadraLib;
    let e = err(&spec, &opts(q, &["layer1.0.conv9"]));
    assert!(
        e.contains("no layer `layer1.0.conv9`") && e.contains("layer1.0.conv1"),
        "{e}"
    );
    let e = err(&spec, &opts(q, &["layer1.0.bn1"]));
    assert!(
        e.contains("`layer1.0.bn1`") && e.contains("batch_norm2d"),
        "{e}"
    );
    let e = err(&spec, &opts(q, &["layer9.*"]));
    assert!(
        e.contains("`layer9.*`") && e.contains("matches no convertible layer"),
        "{e}"
    );
    let e = err(&spec, &opts(q, &["22"]));
    assert!(
        e.contains("index 22") && e.contains("22 convertible layers"),
        "{e}"
    );
    let mut o = opts(q, &["linear"]);
    o.exclude = vec![Selector::Pattern("lin*".into())];
    let e = err(&spec, &o);
    assert!(e.contains("nothing left to convert"), "{e}");
    let mut o = opts(NeuronType::T4, &[]);
    o.bias = Some(false);
    let e = err(&spec, &o);
    assert!(e.contains("t4") && e.contains("bias"), "{e}");
    // a model with nothing convertible
    let q14 = models::get("qcnn", None, 10).unwrap();
    let e = err(&q14, &opts(q, &["conv1"]));
    assert!(
        e.contains("quad_conv2d") && e.contains("not convertible"),
        "{e}"
    );
}

#[test]
fn a_result_that_does_not_type_check_is_an_error() {
    // t1 on a 300000-feature linear layer needs 300000² weights per output
    let spec = ModelSpec {
        name: "wide".into(),
        input: vec![300_000],
        num_classes: 10,
        layers: vec![LayerSpec::Linear {
            name: Some("fc".into()),
            in_features: 300_000,
            out_features: 10,
            bias: true,
        }],
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    };
    let e = err(&spec, &opts(NeuronType::T1, &["fc"]));
    assert!(
        e.contains("does not type-check") && e.contains("`fc`") && e.contains("t1"),
        "{e}"
    );
}

#[test]
fn neurons_without_a_linear_term_refuse_trained_weights_unless_approximate() {
    let (orig, data) = trained("cnn", 1, 16);
    let sd = state_dict_of(&orig);
    for n in [NeuronType::T2, NeuronType::T3] {
        let o = opts(n, &["conv2"]);
        let c = convert_spec(&orig.spec, &o).unwrap(); // the spec alone is fine
        let e = convert_state_dict(&orig.spec, &sd, &c, &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no linear term") && e.contains("`conv2`") && e.contains(n.name()),
            "{e}"
        );
        let mut o = o;
        o.approximate = true;
        let (m, r) = convert_model(&orig, &o).unwrap();
        assert!(!r.function_preserving && !r.layers[0].exact);
        let (x, _) = data.batch(4, 3).unwrap();
        assert!(m
            .predict(&x)
            .unwrap()
            .to_f64_vec()
            .iter()
            .all(|v| v.is_finite()));
    }
    // a checkpoint that does not fit the model
    let o = opts(NeuronType::QuadraLib, &[]);
    let c = convert_spec(&orig.spec, &o).unwrap();
    let short: Vec<_> = sd
        .iter()
        .filter(|(k, _)| k != "conv2.weight")
        .cloned()
        .collect();
    let e = convert_state_dict(&orig.spec, &short, &c, &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2.weight"), "{e}");
}

#[test]
fn reports_serialise() {
    let (orig, _) = trained("cnn", 1, 8);
    let (_, r) = convert_model(&orig, &opts(NeuronType::QuadraLibBn, &[])).unwrap();
    let j = serde_json::to_string(&r).unwrap();
    assert!(j.contains("\"neuron\":\"quadralib-bn\""), "{j}");
    let o: ConvertOptions =
        serde_json::from_str(r#"{"neuron":"fan","select":[{"pattern":"conv*"},{"index":2}]}"#)
            .unwrap();
    assert_eq!(
        o.select,
        [Selector::Pattern("conv*".into()), Selector::Index(2)]
    );
}

/// A trained cnn on noisy synthetic data that it has learnt (clearly above chance), the
/// data, and a held-out validation set.
fn trained_demo_cnn() -> (Model, Synthetic, quadra::Tensor, Vec<usize>) {
    let data = Synthetic::new([1, 28, 28], 10, 0.8, 42).unwrap();
    let spec = models::get("cnn", None, 10).unwrap();
    let mut m = Model::build(
        &spec,
        BuildOptions {
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 5e-4, false).unwrap();
    for s in 0..60 {
        let (x, y) = data.batch(64, s).unwrap();
        m.train_step(&x, &y, &mut opt).unwrap();
    }
    let (vx, vy) = data.batch(400, 999_999).unwrap();
    (m, data, vx, vy)
}

fn entry(m: &Model, key: &str) -> Vec<f64> {
    state_dict_of(m)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no entry {key}"))
        .1
        .to_f64_vec()
}

/// One training-mode forward (running statistics updated, no weight update).
fn train_forward(m: &mut Model, x: &quadra::Tensor) -> quadra::Tensor {
    let y = m.net_forward_for_accounting(x).unwrap();
    m.net_clear();
    y
}

/// Issue #6: BN_c takes the running statistics of the BatchNorm after the original conv, so
/// that training-mode forwards (which move every running statistic towards its batch's)
/// keep the converted model's eval-mode function equal to the original's. With BN_c at
/// (0, 1) five such forwards changed the eval logits by ~2.6 (of 35).
#[test]
fn quadralib_bn_eval_function_survives_training_forwards_like_the_original() {
    let (orig, data, vx, _) = trained_demo_cnn();
    let (mut q, r) = convert_model(&orig, &opts(NeuronType::QuadraLibBn, &["conv*"])).unwrap();
    let from: Vec<_> = r.layers.iter().map(|l| l.stats_from.clone()).collect();
    assert_eq!(from, [Some("bn1".to_string()), Some("bn2".to_string())]);
    for (l, bn) in [("conv1", "bn1"), ("conv2", "bn2")] {
        for s in ["running_mean", "running_var"] {
            assert_eq!(
                entry(&q, &format!("{l}.bn3.{s}")),
                entry(&orig, &format!("{bn}.{s}")),
                "{l}.bn3.{s}"
            );
        }
    }
    assert_same_function(&orig, &q, &vx, "converted");
    let mut o = convert::copy_model(&orig).unwrap();
    for s in 0..5 {
        let (x, _) = data.batch(64, 20_000 + s).unwrap();
        let (yo, yq) = (train_forward(&mut o, &x), train_forward(&mut q, &x));
        // train mode: BN_c(z) ≈ z, the following BatchNorm normalises the same values
        let d = yo.max_abs_diff(&yq).unwrap();
        assert!(d < 1e-3, "train-mode outputs differ by {d}");
    }
    let (d, scale) = convert::max_output_diff(&o, &q, &vx).unwrap();
    println!("after 5 training forwards: eval max |Δ| {d:.3e} (max |y| {scale:.2})");
    assert!(
        d < 1e-3 * (1.0 + scale),
        "eval outputs drifted apart by {d} (max |y| {scale})"
    );
}

/// Issue #6, end to end: a short fine-tuning of the converted model does not lose eval
/// accuracy (it went 82.4% → 16% after 5 steps when BN_c started at (0, 1)).
#[test]
fn converted_quadralib_bn_fine_tuned_keeps_its_eval_accuracy() {
    let (orig, data, vx, vy) = trained_demo_cnn();
    let acc0 = convert::accuracy(&orig, &vx, &vy).unwrap();
    assert!(acc0 > 0.5, "the original learnt too little: {acc0}");
    let (mut q, r) = convert_model(&orig, &opts(NeuronType::QuadraLibBn, &["conv*"])).unwrap();
    let (cx, _) = data.batch(512, 50_000).unwrap();
    convert::calibrate(&mut q, &r.layers, &cx, 256).unwrap();
    assert_eq!(convert::accuracy(&q, &vx, &vy).unwrap(), acc0);
    let mut opt = Sgd::new(0.02, 0.9, 5e-4, false).unwrap();
    for s in 0..8 {
        let (x, y) = data.batch(64, 10_000 + s).unwrap();
        q.train_step(&x, &y, &mut opt).unwrap();
        let acc = convert::accuracy(&q, &vx, &vy).unwrap();
        println!(
            "step {}: eval acc {acc:.3} (converted start {acc0:.3})",
            s + 1
        );
        assert!(
            acc >= acc0 - 0.03,
            "step {}: eval accuracy fell from {acc0} to {acc}",
            s + 1
        );
    }
}

/// `calibrate` sets BN_a, BN_b (and BN_c of a layer without a following BatchNorm, with
/// γ_c, β_c keeping it the identity) to the statistics of the data, without changing the
/// eval-mode function; a further training forward on the same batch then leaves those
/// statistics where they are, and the converted classifier computes in train mode what the
/// original does.
#[test]
fn calibrate_sets_the_made_up_statistics_from_data_and_keeps_the_function() {
    let (orig, data, vx, _) = trained_demo_cnn();
    let (mut q, r) = convert_model(&orig, &opts(NeuronType::QuadraLibBn, &[])).unwrap();
    assert_eq!(r.layers[2].path, "fc");
    assert_eq!(r.layers[2].stats_from, None);
    let (cx, _) = data.batch(256, 50_000).unwrap();
    // before: the fc's BN_c normalises the logits per batch in train mode
    let yo = train_forward(&mut convert::copy_model(&orig).unwrap(), &cx);
    let before = yo
        .max_abs_diff(&train_forward(&mut convert::copy_model(&q).unwrap(), &cx))
        .unwrap();
    let rep = convert::calibrate(&mut q, &r.layers, &cx, 256).unwrap();
    assert_eq!((rep.samples, rep.batches), (256, 1));
    let paths: Vec<_> = rep.bns.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "conv1.bn1",
            "conv1.bn2",
            "conv2.bn1",
            "conv2.bn2",
            "fc.bn1",
            "fc.bn2",
            "fc.bn3"
        ]
    );
    assert!(
        rep.bns.iter().any(|b| b.max_std_ratio_error > 0.5),
        "{rep:?}"
    );
    assert_same_function(&orig, &q, &vx, "calibrated");
    // the calibrated statistics are the batch's: one more training forward on it (momentum
    // 0.1) leaves them in place
    let mut q2 = convert::copy_model(&q).unwrap();
    let yq = train_forward(&mut q2, &cx);
    for b in &paths {
        for s in ["running_mean", "running_var"] {
            let k = format!("{b}.{s}");
            let (a, c) = (entry(&q, &k), entry(&q2, &k));
            for (u, v) in a.iter().zip(&c) {
                assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{k}: {u} → {v}");
            }
        }
    }
    let after = yo.max_abs_diff(&yq).unwrap();
    println!(
        "train-mode |converted − original|: {before:.3} before calibration, {after:.3e} after"
    );
    // (what is left: BN_c's unbiased σ²_c against the batch's biased σ²_B, √(256/255))
    let scale = yo.to_f64_vec().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(before > 0.1 * scale, "{before}");
    assert!(after < 5e-3 * (1.0 + scale), "{after} (max |y| {scale})");
    // errors
    let e = convert::calibrate(&mut q, &r.layers, &cx, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2"), "{e}");
    let mut bad = r.layers.clone();
    bad[0].path = "nosuch".into();
    let e = convert::calibrate(&mut q, &bad, &cx, 64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nosuch.bn1"), "{e}");
}
