//! Model specs and the zoo: PyTorch state-dict names and shapes, and parameter counts, match
//! the reference modules of ../shared/bench/torch_ref.py for every zoo model (the fixture
//! `zoo_state_dicts.txt` is written by scripts/torch-fixtures.py from those modules), and
//! bad specs are clear errors.

use std::collections::BTreeMap;

use quadra::models;
use quadra::nn::spec::{BuildOptions, ModelSpec};
use quadra::nn::{BackpropMode, Module};

use crate::support;

/// A PyTorch module's parameter count and its floating-point state dict (name → shape).
struct TorchModel {
    params: usize,
    state: BTreeMap<String, Vec<usize>>,
}

/// `zoo_state_dicts.txt`: `model NAME PARAMS` lines, each followed by `KEY DIM…` lines.
fn torch_zoo() -> BTreeMap<String, TorchModel> {
    let text = std::fs::read_to_string(support::fixture("zoo_state_dicts.txt")).unwrap();
    let mut zoo = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut it = line.split_whitespace();
        let first = it.next().unwrap();
        if first == "model" {
            let name = it.next().unwrap().to_string();
            let params = it.next().unwrap().parse().unwrap();
            zoo.insert(
                name.clone(),
                TorchModel {
                    params,
                    state: BTreeMap::new(),
                },
            );
            current = Some(name);
        } else {
            let name = current
                .as_ref()
                .expect("an entry before the first `model` line");
            let shape = it.map(|d| d.parse().unwrap()).collect();
            zoo.get_mut(name)
                .unwrap()
                .state
                .insert(first.to_string(), shape);
        }
    }
    zoo
}

#[test]
fn zoo_state_dicts_match_the_pytorch_reference() {
    let torch = torch_zoo();
    let ours: Vec<&str> = models::MODELS.iter().map(|m| m.0).collect();
    let theirs: Vec<&str> = torch.keys().map(String::as_str).collect();
    let mut sorted = ours.clone();
    sorted.sort();
    assert_eq!(
        sorted, theirs,
        "the zoo and the PyTorch fixture list different models"
    );
    for name in ours {
        let spec = models::get(name, None, 10).unwrap();
        let mut net = spec.build(BuildOptions::default()).unwrap();
        let mut sd = Vec::new();
        net.state_dict(&mut sd);
        let ours: BTreeMap<String, Vec<usize>> = sd
            .iter()
            .map(|(k, t)| (k.clone(), t.shape().to_vec()))
            .collect();
        let want = &torch[name];
        let missing: Vec<_> = want
            .state
            .keys()
            .filter(|k| !ours.contains_key(*k))
            .collect();
        let extra: Vec<_> = ours
            .keys()
            .filter(|k| !want.state.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:?}, extra {extra:?}"
        );
        assert_eq!(ours, want.state, "{name}: shapes differ");
        let mut n = 0;
        net.visit_params(&mut |_, p| n += p.value.numel());
        assert_eq!(n, want.params, "{name}: parameter count");
    }
}

#[test]
fn spec_json_round_trip_and_build() {
    for (name, _) in models::MODELS {
        let spec = models::get(name, None, 10).unwrap();
        let back = ModelSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(spec, back, "{name}");
        spec.check().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn qcnn_json() -> serde_json::Value {
    serde_json::from_str(&models::get("qcnn", None, 10).unwrap().to_json()).unwrap()
}

fn err_of(v: serde_json::Value) -> String {
    match ModelSpec::from_json(&v.to_string())
        .and_then(|s| s.build(BuildOptions::default()).map(|_| ()))
    {
        Ok(()) => panic!("expected an error for {v}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_specs_are_clear_errors() {
    let mut v = qcnn_json();
    v["layers"][0]["neuron"] = "t9".into();
    let e = err_of(v);
    assert!(e.contains("t9") && e.contains("quadralib-bn"), "{e}");

    let mut v = qcnn_json();
    v["layers"][0]["kernel_sise"] = 3.into();
    let e = err_of(v);
    assert!(e.contains("kernel_sise"), "{e}");

    let mut v = qcnn_json();
    v["layers"][4]["in_channels"] = 15.into();
    let e = err_of(v);
    assert!(e.contains("conv2") && e.contains("15"), "{e}");

    let mut v = qcnn_json();
    v["num_classes"] = 7.into();
    let e = err_of(v);
    assert!(e.contains("num_classes"), "{e}");

    let mut v = qcnn_json();
    v["layers"][0]["groups"] = 3.into();
    let e = err_of(v);
    assert!(e.contains("groups"), "{e}");

    let mut v = qcnn_json();
    v["layers"][0]["kernel_size"] = 0.into();
    let e = err_of(v);
    assert!(e.contains("kernel size"), "{e}");

    let mut v = qcnn_json();
    v["layers"][0]["kernel_size"] = 31.into();
    let e = err_of(v);
    assert!(e.contains("larger than the padded input"), "{e}");

    let mut v = qcnn_json();
    v["input"] = serde_json::json!([1, 0, 28]);
    let e = err_of(v);
    assert!(e.contains("input shape"), "{e}");

    let mut v = qcnn_json();
    v["backprop_overrides"] = serde_json::json!({"conv9": "recompute"});
    let e = err_of(v);
    assert!(e.contains("conv9") && e.contains("conv1"), "{e}");

    let mut v = qcnn_json();
    v["backprop"] = "lazy".into();
    let e = err_of(v);
    assert!(e.contains("lazy"), "{e}");

    assert!(models::get("resnet7", None, 10)
        .unwrap_err()
        .to_string()
        .contains("qresnet14"));
}

#[test]
fn per_layer_backprop_overrides_are_applied() {
    use quadra::nn::quadratic::QuadConv2d;
    let mut spec = models::get("qcnn", None, 10).unwrap();
    spec.backprop = BackpropMode::Recompute;
    spec.backprop_overrides
        .insert("conv2".into(), BackpropMode::Stored);
    let net = spec.build(BuildOptions::default()).unwrap();
    let mut modes = Vec::new();
    for l in net.children() {
        if let Some(q) = l.as_any().downcast_ref::<QuadConv2d>() {
            modes.push((q.path().to_string(), q.mode()));
        }
    }
    assert_eq!(
        modes,
        vec![
            ("conv1".to_string(), BackpropMode::Recompute),
            ("conv2".to_string(), BackpropMode::Stored)
        ]
    );
}

#[test]
fn optimizer_rejects_absurd_hyper_parameters() {
    use quadra::optim::Sgd;
    assert!(Sgd::new(-0.1, 0.9, 0.0, false).is_err());
    assert!(Sgd::new(f64::INFINITY, 0.9, 0.0, false).is_err());
    assert!(Sgd::new(0.1, 1.5, 0.0, false).is_err());
    assert!(Sgd::new(0.1, 0.9, 2.0, false).is_err());
    assert!(Sgd::new(0.1, 0.0, 0.0, true)
        .unwrap_err()
        .to_string()
        .contains("Nesterov"));
}

#[test]
fn spec_size_bounds_the_built_state_dict_over_the_zoo_and_every_neuron() {
    // the memory check before building sizes the model from the spec: an upper bound of
    // the state dict's elements, but a tight one (≤ 1.1×), or a model that fits would be
    // refused
    use quadra::nn::quadratic::NeuronType;
    let mut checked = 0;
    for (name, _) in models::MODELS {
        for neuron in NeuronType::ALL {
            let Ok(spec) = models::get(name, Some(neuron), 10) else {
                continue;
            };
            if neuron == NeuronType::T1 && *name == "qmobilenet" {
                // quadratic depthwise convs: t1 refuses groups > 1, from the spec
                let e = spec.check().unwrap_err().to_string();
                assert!(e.contains("layers.0.conv1"), "{e}");
                assert!(e.contains("t1") && e.contains("groups = 1"), "{e}");
                continue;
            }
            // t1's K×K form makes the wide zoo models huge: the small ones cover it
            let size = spec.size().unwrap();
            if size.elements > 30_000_000 {
                continue;
            }
            let net = spec.build(BuildOptions::default()).unwrap();
            let mut sd = Vec::new();
            net.state_dict(&mut sd);
            let actual: u64 = sd.iter().map(|(_, t)| t.numel() as u64).sum();
            let largest = sd.iter().map(|(_, t)| t.numel() as u64).max().unwrap();
            assert!(
                size.elements >= actual && size.elements as f64 <= 1.1 * actual as f64,
                "{name}/{neuron}: bound {} vs state dict {actual}",
                size.elements
            );
            assert!(
                size.largest >= largest,
                "{name}/{neuron}: largest {largest}"
            );
            assert!(size.activations > 0);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} zoo models checked");
}

#[test]
fn a_spec_too_large_in_total_is_refused_before_building() {
    // each layer is far below the per-layer cap, but 4,000 of them need ~1 TB: the build
    // refuses from the spec's size (naming the model and the bytes), before any weight
    let layers: Vec<serde_json::Value> = (0..4000)
        .map(|_| serde_json::json!({"type": "linear", "in_features": 8192, "out_features": 8192}))
        .chain([serde_json::json!({"type": "linear", "in_features": 8192, "out_features": 10})])
        .collect();
    let v = serde_json::json!({"name": "wide-and-deep", "input": [8192], "num_classes": 10,
                               "layers": layers});
    let spec = ModelSpec::from_json(&v.to_string()).unwrap();
    let e = spec
        .build(BuildOptions::default())
        .err()
        .expect("a 1 TB model must be refused")
        .to_string();
    assert!(
        e.contains("out of memory") && e.contains("wide-and-deep") && e.contains("GiB"),
        "{e}"
    );
}

#[test]
fn absurd_sizes_are_refused_not_aborted() {
    let mut v = qcnn_json();
    v["layers"][0]["out_channels"] = serde_json::json!(4_000_000_000u64);
    let e = err_of(v);
    assert!(e.contains("conv1"), "{e}");
    let mut v = qcnn_json();
    let n = v["layers"].as_array().unwrap().len();
    v["layers"][n - 1]["out_features"] = serde_json::json!(1u64 << 40);
    let e = err_of(v);
    assert!(e.contains("fc"), "{e}");
    let e = quadra::Tensor::zeros(&[1 << 20, 1 << 20], quadra::DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2^36"), "{e}");
}

#[test]
fn mobilenet_matches_the_pytorch_cifar_mobilenet() {
    // sum(p.numel() for p in MobileNet().parameters()) of the common PyTorch CIFAR MobileNet
    // (conv1/bn1, layers.{i}.conv1 depthwise + bn1, conv2 pointwise + bn2, linear): 3217226
    let spec = models::get("mobilenet", None, 10).unwrap();
    let mut net = spec.build(BuildOptions::default()).unwrap();
    let mut n = 0;
    net.visit_params(&mut |_, p| n += p.value.numel());
    assert_eq!(n, 3_217_226);
    let mut sd = Vec::new();
    net.state_dict(&mut sd);
    let names: Vec<&str> = sd.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "conv1.weight",
        "layers.0.conv1.weight",
        "layers.0.bn2.running_var",
        "layers.12.conv2.weight",
        "linear.bias",
    ] {
        assert!(names.contains(&k), "{k} missing");
    }
    // the study's first-order twins have the quadratic nets' parameter counts within 5 %
    let count = |m: &str| {
        let mut net = models::get(m, None, 10)
            .unwrap()
            .build(BuildOptions::default())
            .unwrap();
        let mut n = 0usize;
        net.visit_params(&mut |_, p| n += p.value.numel());
        n
    };
    for (quadratic, twin) in [("qcnn", "cnn-30k"), ("qcnn-100k", "cnn-100k")] {
        let (q, w) = (count(quadratic), count(twin));
        assert!(
            (w as f64 / q as f64 - 1.0).abs() < 0.05,
            "{quadratic} {q} vs {twin} {w}"
        );
    }
    assert!(count("qcnn-100k") < 100_000);
}
