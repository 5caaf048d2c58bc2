//! Layer importance and depth reduction on a small QDNN trained for a few steps on
//! synthetic data: the ranking is deterministic, masking never touches the caller's model,
//! and a reduction's spec type-checks with the parameter count it predicted.

use quadra::convert::{
    self, cost, layer_importance, reduce, state_dict_of, Budget, ImportanceReport, MaskMethod,
    ReduceAction,
};
use quadra::data::synthetic::Synthetic;
use quadra::model::Model;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::{BuildOptions, LayerSpec, ModelSpec, Pair};
use quadra::optim::Sgd;
use quadra::Tensor;

fn qconv(name: &str, neuron: NeuronType, cin: usize, cout: usize) -> LayerSpec {
    LayerSpec::QuadConv2d {
        name: Some(name.into()),
        neuron,
        in_channels: cin,
        out_channels: cout,
        kernel_size: Pair::One(3),
        stride: Pair::One(1),
        padding: Pair::One(1),
        dilation: Pair::One(1),
        groups: 1,
        bias: true,
    }
}

fn bn(name: &str, c: usize) -> LayerSpec {
    LayerSpec::BatchNorm2d {
        name: Some(name.into()),
        num_features: c,
        eps: 1e-5,
        momentum: 0.1,
    }
}

/// stem t4 conv 1→8 (changes shape: masking zeroes its output), a residual block of two
/// 8→8 convs (quadralib-bn, quadralib: removable), an unnamed 8→8 quadralib conv outside
/// any block (removable: the next layer accepts the same shape), max-pool, and a
/// quadralib-bn linear 288→10 (second-order term zeroed).
fn small_qdnn() -> ModelSpec {
    ModelSpec {
        name: "small-qdnn".into(),
        input: vec![1, 12, 12],
        num_classes: 10,
        layers: vec![
            qconv("stem", NeuronType::T4, 1, 8),
            bn("bn", 8),
            LayerSpec::Relu { name: None },
            LayerSpec::Residual {
                name: Some("block".into()),
                layers: vec![
                    qconv("conv1", NeuronType::QuadraLibBn, 8, 8),
                    bn("bn1", 8),
                    LayerSpec::Relu {
                        name: Some("relu1".into()),
                    },
                    qconv("conv2", NeuronType::QuadraLib, 8, 8),
                    bn("bn2", 8),
                ],
                shortcut: None,
                shortcut_name: "shortcut".into(),
                relu: true,
            },
            LayerSpec::QuadConv2d {
                name: None,
                neuron: NeuronType::QuadraLib,
                in_channels: 8,
                out_channels: 8,
                kernel_size: Pair::One(3),
                stride: Pair::One(1),
                padding: Pair::One(1),
                dilation: Pair::One(1),
                groups: 1,
                bias: false,
            },
            LayerSpec::MaxPool2d {
                name: Some("pool".into()),
                kernel_size: Pair::One(2),
                stride: None,
                padding: Pair::One(0),
            },
            LayerSpec::Flatten {
                name: Some("flatten".into()),
            },
            LayerSpec::QuadLinear {
                name: Some("fc".into()),
                neuron: NeuronType::QuadraLibBn,
                in_features: 288,
                out_features: 10,
                bias: true,
            },
        ],
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

fn trained() -> (Model, Tensor, Vec<usize>) {
    let data = Synthetic::new([1, 12, 12], 10, 0.6, 5).unwrap();
    let mut m = Model::build(
        &small_qdnn(),
        BuildOptions {
            seed: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut opt = Sgd::new(0.05, 0.9, 5e-4, false).unwrap();
    for s in 0..40 {
        let (x, y) = data.batch(32, s).unwrap();
        m.train_step(&x, &y, &mut opt).unwrap();
    }
    let (x, y) = data.batch(300, 12345).unwrap();
    (m, x, y)
}

fn row<'a>(r: &'a ImportanceReport, path: &str) -> &'a convert::LayerImportance {
    r.layers.iter().find(|l| l.path == path).unwrap()
}

#[test]
fn importance_is_deterministic_documented_and_leaves_the_model_alone() {
    let (model, x, y) = trained();
    let sd_before = state_dict_of(&model);
    let logits_before = model.predict(&x).unwrap();
    let a = layer_importance(&model, &x, &y).unwrap();
    let b = layer_importance(&model, &x, &y).unwrap();
    println!("{}", a.table());
    assert_eq!(a, b, "ranking differs between runs");
    // the caller's model is untouched
    let sd_after = state_dict_of(&model);
    for ((k, t0), (_, t1)) in sd_before.iter().zip(&sd_after) {
        assert_eq!(t0.max_abs_diff(t1).unwrap(), 0.0, "{k} changed");
    }
    assert_eq!(
        model
            .predict(&x)
            .unwrap()
            .max_abs_diff(&logits_before)
            .unwrap(),
        0.0
    );
    // one row per quadratic layer, masked as documented
    assert_eq!(a.layers.len(), 5);
    assert_eq!(row(&a, "stem").method, MaskMethod::OutputZeroed);
    assert_eq!(row(&a, "block.conv1").method, MaskMethod::Removed);
    assert_eq!(row(&a, "block.conv2").method, MaskMethod::Removed);
    assert_eq!(row(&a, "4").method, MaskMethod::Removed);
    assert_eq!(row(&a, "fc").method, MaskMethod::SecondOrderZeroed);
    // shares come from the cost model; RI = P_M·P_W/δ_A; ranks follow the rule
    let c = cost(&model.spec).unwrap();
    assert_eq!(a.total_params, c.total_params);
    for l in &a.layers {
        let r = c.layers.iter().find(|r| r.path == l.path).unwrap();
        assert_eq!((l.params, l.macs), (r.params, r.macs));
        assert!((l.p_m - r.params as f64 / c.total_params as f64).abs() < 1e-12);
        assert!((l.delta_a - (a.baseline_accuracy - l.accuracy_masked)).abs() < 1e-12);
        match l.ri {
            None => assert!(l.delta_a <= 0.0),
            Some(ri) => assert!((ri - l.p_m * l.p_w / l.delta_a).abs() <= 1e-12 * ri.abs()),
        }
    }
    for w in a.layers.windows(2) {
        match (w[0].ri, w[1].ri) {
            (Some(_), None) => panic!("δ_A ≤ 0 layer {} ranked after {}", w[1].path, w[0].path),
            (Some(x), Some(y)) => assert!(x >= y),
            _ => {}
        }
        assert_eq!(w[0].rank + 1, w[1].rank);
    }
    // the trained model is better than chance, zeroing the stem's output hurts
    assert!(
        a.baseline_accuracy > 0.3,
        "baseline {}",
        a.baseline_accuracy
    );
    assert!(row(&a, "stem").delta_a > 0.0);
    let j = serde_json::to_string(&a).unwrap();
    // (serde_json's default float parser may be 1 ulp off: compare with a tolerance)
    let back: ImportanceReport = serde_json::from_str(&j).unwrap();
    for (x, y) in back.layers.iter().zip(&a.layers) {
        assert_eq!((&x.path, x.rank, x.method), (&y.path, y.rank, y.method));
        assert!((x.p_m - y.p_m).abs() < 1e-15 && (x.delta_a - y.delta_a).abs() < 1e-15);
    }
}

#[test]
fn one_step_reductions_match_the_masked_accuracy_and_the_predicted_size() {
    let (model, x, y) = trained();
    let imp = layer_importance(&model, &x, &y).unwrap();
    let sd = state_dict_of(&model);
    let total = imp.total_params;
    for l in &imp.layers {
        // a ranking of this one layer, and a budget one parameter below the model
        let one = ImportanceReport {
            layers: vec![l.clone()],
            ..imp.clone()
        };
        let r = reduce(&model.spec, &sd, &one, Budget::Params(total - 1));
        if l.method == MaskMethod::OutputZeroed {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("at best") && e.contains(&total.to_string()),
                "{e}"
            );
            continue;
        }
        let r = r.unwrap();
        assert_eq!(r.report.steps.len(), 1);
        let want = if l.method == MaskMethod::Removed {
            ReduceAction::Removed
        } else {
            ReduceAction::FirstOrder
        };
        assert_eq!(r.report.steps[0].action, want, "{}", l.path);
        r.spec.check().unwrap();
        let m =
            convert::model_from_state_dict(&r.spec, &r.state_dict, quadra::DType::F32, 0).unwrap();
        assert_eq!(m.num_params() as u64, r.report.params_after, "{}", l.path);
        assert_eq!(cost(&r.spec).unwrap().total_macs, r.report.macs_after);
        let drop = r.report.params_before - r.report.params_after;
        if want == ReduceAction::Removed {
            assert_eq!(drop, l.params, "{}", l.path);
        } else {
            assert!(
                drop > 0 && drop < l.params,
                "{}: first order keeps the linear term",
                l.path
            );
        }
        let acc = convert::accuracy(&m, &x, &y).unwrap();
        assert!(
            (acc - l.accuracy_masked).abs() < 1e-9,
            "{}: reduced model accuracy {acc} vs masked {}",
            l.path,
            l.accuracy_masked
        );
    }
}

#[test]
fn reduction_to_a_budget_and_its_errors() {
    let (model, x, y) = trained();
    let imp = layer_importance(&model, &x, &y).unwrap();
    let sd = state_dict_of(&model);
    // already within budget: nothing to do
    let r = reduce(&model.spec, &sd, &imp, Budget::Params(imp.total_params)).unwrap();
    assert!(r.report.steps.is_empty());
    assert_eq!(r.report.params_after, imp.total_params);
    // a MAC budget at 60% of the model
    let budget = imp.total_macs * 6 / 10;
    let r = reduce(&model.spec, &sd, &imp, Budget::Macs(budget)).unwrap();
    println!("{}", r.report.table());
    assert!(r.report.macs_after <= budget && !r.report.steps.is_empty());
    r.spec.check().unwrap();
    let m = convert::model_from_state_dict(&r.spec, &r.state_dict, quadra::DType::F32, 0).unwrap();
    assert_eq!(m.num_params() as u64, r.report.params_after);
    assert_eq!(cost(&r.spec).unwrap().total_params, r.report.params_after);
    // steps follow the ranking
    let order: Vec<_> = imp.layers.iter().map(|l| l.path.clone()).collect();
    let pos: Vec<_> = r
        .report
        .steps
        .iter()
        .map(|s| order.iter().position(|p| *p == s.path).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    // the unnamed layer `4` was removed without renaming its siblings: fc keeps its name
    if r.report.steps.iter().any(|s| s.path == "4") {
        assert!(r
            .state_dict
            .iter()
            .any(|(k, _)| k == "fc.linear3.weight" || k == "fc.weight"));
    }
    // an impossible budget names the best achievable counts
    let e = reduce(&model.spec, &sd, &imp, Budget::Params(100))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("at most 100 parameters") && e.contains("at best"),
        "{e}"
    );
    // importance needs a quadratic layer, and matching labels
    let cnn = Model::build(
        &quadra::models::get("cnn", None, 10).unwrap(),
        BuildOptions::default(),
    )
    .unwrap();
    let data = Synthetic::new([1, 28, 28], 10, 0.6, 5).unwrap();
    let (xc, yc) = data.batch(8, 0).unwrap();
    let e = layer_importance(&cnn, &xc, &yc).unwrap_err().to_string();
    assert!(e.contains("no quadratic layer"), "{e}");
    let e = layer_importance(&model, &x, &y[..10])
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels"), "{e}");
}
