//! ONNX export (`quadra::onnx`): the structure of the exported graphs (always), and their
//! logits in onnxruntime against `Model::predict` (ignored by default: it needs a Python
//! with onnxruntime, numpy and safetensors, named by `QUADRA_ONNX_PYTHON`; CI runs it).
//!
//! Models: the zoo's qresnet14, qvgg7, qmobilenet and qcnn (quadralib-bn, the zoo's
//! default), and for every neuron type a small model with every layer type (`mixed`):
//! conv2d, batch norms, relu, both pools with padding, residual blocks with and without a
//! shortcut, sequential, dropout, flatten, global average pooling, linear, and the neuron
//! as a quadratic conv (square, rectangular, strided, dilated and — except t1 — grouped)
//! and as a quadratic linear layer.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use prost::Message;
use quadra::checkpoint::{read_tensors, state_dict, write_tensors};
use quadra::data::{Normalize, Preprocess};
use quadra::model::Model;
use quadra::nn::quadratic::NeuronType;
use quadra::nn::spec::{BuildOptions, LayerSpec, ModelSpec, Pair};
use quadra::nn::Module;
use quadra::onnx::proto::{self, DimValue, ModelProto};
use quadra::{models, DType, Tensor};

use crate::support::TempDir;

/// A small deterministic generator (xorshift64*), uniform in [0, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    neuron: Option<NeuronType>,
    cin: usize,
    cout: usize,
    k: Pair,
    stride: usize,
    padding: Pair,
    dilation: usize,
    groups: usize,
) -> LayerSpec {
    let (stride, dilation) = (Pair::One(stride), Pair::One(dilation));
    match neuron {
        Some(neuron) => LayerSpec::QuadConv2d {
            name: None,
            neuron,
            in_channels: cin,
            out_channels: cout,
            kernel_size: k,
            stride,
            padding,
            dilation,
            groups,
            bias: true,
        },
        None => LayerSpec::Conv2d {
            name: None,
            in_channels: cin,
            out_channels: cout,
            kernel_size: k,
            stride,
            padding,
            dilation,
            groups,
            bias: false,
        },
    }
}

fn bn2(c: usize) -> LayerSpec {
    LayerSpec::BatchNorm2d {
        name: None,
        num_features: c,
        eps: 1e-5,
        momentum: 0.1,
    }
}

fn relu() -> LayerSpec {
    LayerSpec::Relu { name: None }
}

/// Every layer type around `neuron`'s quadratic conv and linear layers, on (3, 10, 10)
/// inputs, with a per-channel normalization stored (so the graph's preprocessing runs).
fn mixed(neuron: NeuronType) -> ModelSpec {
    let q = Some(neuron);
    // t1's bilinear form spans the whole patch: no groups
    let groups = if neuron == NeuronType::T1 { 1 } else { 2 };
    let layers = vec![
        conv(q, 3, 8, Pair::One(3), 1, Pair::One(1), 1, 1), // 8×10×10
        bn2(8),
        relu(),
        LayerSpec::Residual {
            name: None,
            layers: vec![
                conv(None, 8, 8, Pair::One(3), 1, Pair::One(1), 1, 1),
                bn2(8),
                relu(),
                // rectangular kernel, grouped
                conv(q, 8, 8, Pair::Two([3, 1]), 1, Pair::Two([1, 0]), 1, groups),
            ],
            shortcut: None,
            shortcut_name: "shortcut".into(),
            relu: true,
        },
        LayerSpec::MaxPool2d {
            name: Some("pool".into()),
            kernel_size: Pair::One(3),
            stride: Some(Pair::One(2)),
            padding: Pair::One(1),
        }, // 8×5×5
        LayerSpec::Residual {
            name: Some("down".into()),
            layers: vec![
                // strided and dilated
                conv(q, 8, 12, Pair::One(3), 2, Pair::One(2), 2, 1), // 12×3×3
                bn2(12),
            ],
            shortcut: Some(vec![
                conv(None, 8, 12, Pair::One(1), 2, Pair::One(0), 1, 1),
                bn2(12),
            ]),
            shortcut_name: "shortcut".into(),
            relu: false,
        },
        LayerSpec::AvgPool2d {
            name: None,
            kernel_size: Pair::One(2),
            stride: Some(Pair::One(1)),
            padding: Pair::One(1),
        }, // 12×4×4
        LayerSpec::Sequential {
            name: Some("head".into()),
            layers: vec![
                LayerSpec::Dropout { name: None, p: 0.5 },
                LayerSpec::Flatten { name: None },
            ],
        }, // 192
        LayerSpec::QuadLinear {
            name: Some("fc1".into()),
            neuron,
            in_features: 192,
            out_features: 16,
            bias: true,
        },
        LayerSpec::BatchNorm1d {
            name: None,
            num_features: 16,
            eps: 1e-3,
            momentum: 0.1,
        },
        relu(),
        LayerSpec::Linear {
            name: Some("fc2".into()),
            in_features: 16,
            out_features: 6,
            bias: true,
        },
    ];
    ModelSpec {
        name: format!("mixed-{neuron}"),
        input: vec![3, 10, 10],
        num_classes: 6,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: Some(Preprocess {
            normalize: Some(Normalize {
                mean: vec![0.49, 0.48, 0.45],
                std: vec![0.25, 0.24, 0.26],
            }),
            classes: (0..6).map(|i| format!("class {i}")).collect(),
        }),
    }
}

/// A small model ending in global average pooling (the zoo's ResNets and MobileNet have
/// one too): quadratic conv → relu → GAP → linear.
fn gap_model(neuron: NeuronType) -> ModelSpec {
    ModelSpec {
        name: format!("gap-{neuron}"),
        input: vec![2, 6, 6],
        num_classes: 3,
        layers: vec![
            conv(Some(neuron), 2, 4, Pair::One(3), 1, Pair::One(0), 1, 1),
            relu(),
            LayerSpec::GlobalAvgPool { name: None },
            LayerSpec::Linear {
                name: None,
                in_features: 4,
                out_features: 3,
                bias: false,
            },
        ],
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

/// The models of both tests: (spec, what it covers).
fn specs() -> Vec<ModelSpec> {
    let mut v = Vec::new();
    for name in ["qresnet14", "qvgg7", "qmobilenet", "qcnn"] {
        v.push(models::get(name, None, 10).unwrap());
    }
    // qcnn with a stored single-channel normalization and class names, as training writes
    let mut q = models::get("qcnn", None, 10).unwrap();
    q.name = "qcnn-normalized".into();
    q.preprocess = Some(Preprocess {
        normalize: Some(Normalize {
            mean: vec![0.2860],
            std: vec![0.3530],
        }),
        classes: quadra::data::preprocess::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    });
    v.push(q);
    for n in NeuronType::ALL {
        v.push(mixed(n));
        v.push(gap_model(n));
    }
    // no node at all (eval-mode dropout is the identity): the graph is one Identity
    v.push(ModelSpec {
        name: "dropout-only".into(),
        input: vec![5],
        num_classes: 5,
        layers: vec![LayerSpec::Dropout { name: None, p: 0.3 }],
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    });
    v
}

/// The models of both tests: [`model`] of every spec, and qcnn-normalized in f64 (its
/// weights rounded to f32 in the graph).
fn models_under_test() -> Vec<Model> {
    let mut v: Vec<Model> = specs().iter().map(model).collect();
    let f32m = v.iter().find(|m| m.spec.name == "qcnn-normalized").unwrap();
    let mut spec = f32m.spec.clone();
    spec.name = "qcnn-normalized-f64".into();
    let mut m64 = Model::build(
        &spec,
        BuildOptions {
            dtype: DType::F64,
            seed: 1,
        },
    )
    .unwrap();
    let mut sd: HashMap<String, Tensor> = state_dict(f32m)
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F64).unwrap()))
        .collect();
    m64.net.load_state_dict(&mut sd).unwrap();
    m64.refresh_device();
    v.push(m64);
    v
}

/// `spec` built with seed 1, with the batch norms a trained model would have: random
/// affine parameters, and as running statistics those of a calibration batch (8 raw
/// inputs, [`calibration_batch`], preprocessed as `predict` does them), so that the
/// eval-mode activations are normalized like a trained network's, the logits are O(1) and
/// depend on the input, and every exported BatchNormalization input matters (fresh
/// statistics, mean 0 and variance 1, would make them nearly the identity).
///
/// γ ∈ [0.6, 1.4] and β ∈ [−0.2, 0.2], except the product branches of quadralib-bn
/// (bn1, bn2: γ ∈ [0.18, 0.42]): with full-size γ there, the nine quadratic layers of
/// qmobilenet square their inputs' deviations layer after layer, and the network turns so
/// sensitive that f32 rounding alone moves its logits by ~1e-5.
///
/// The statistics: the running values are zeroed, one training-mode forward of the
/// calibration batch makes them momentum · batch statistics (f32 rounding only), and they
/// are divided by the momentum.
fn model(spec: &ModelSpec) -> Model {
    let mut m = Model::build(
        spec,
        BuildOptions {
            dtype: DType::F32,
            seed: 1,
        },
    )
    .unwrap();
    let mut sd: HashMap<String, Tensor> = state_dict(&m).into_iter().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut bns: Vec<String> = sd
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    bns.sort();
    let mut quad = Vec::new();
    quadra::nn::spec::quadratic_layers(&spec.layers, "", &mut quad);
    let products: HashSet<String> = quad
        .iter()
        .flat_map(|q| [format!("{q}.bn1"), format!("{q}.bn2")])
        .collect();
    for bn in &bns {
        let (glo, ghi) = if products.contains(bn) {
            (0.18, 0.42)
        } else {
            (0.6, 1.4)
        };
        for (leaf, lo, hi) in [
            ("weight", glo, ghi),
            ("bias", -0.2, 0.2),
            ("running_mean", 0.0, 0.0),
            ("running_var", 0.0, 0.0),
        ] {
            let key = format!("{bn}.{leaf}");
            let t = &sd[&key];
            let v: Vec<f64> = (0..t.numel()).map(|_| rng.uniform(lo, hi)).collect();
            let nt = Tensor::from_f64(&v, t.shape(), DType::F32).unwrap();
            sd.insert(key, nt);
        }
    }
    m.net.load_state_dict(&mut sd).unwrap();
    assert!(sd.is_empty(), "unused: {:?}", sd.keys().collect::<Vec<_>>());
    let calib = m.preprocess(&calibration_batch(spec)).unwrap();
    m.net_forward_for_accounting(&calib).unwrap();
    m.net_clear();
    let mut sd: HashMap<String, Tensor> = state_dict(&m).into_iter().collect();
    // the zoo's and these specs' batch norms all use momentum 0.1, the quadratic layers'
    // BN_MOMENTUM
    let momentum = quadra::nn::quadratic::BN_MOMENTUM;
    for bn in &bns {
        for leaf in ["running_mean", "running_var"] {
            let key = format!("{bn}.{leaf}");
            let v: Vec<f64> = sd[&key].to_f64_vec().iter().map(|x| x / momentum).collect();
            let nt = Tensor::from_f64(&v, sd[&key].shape(), DType::F32).unwrap();
            sd.insert(key, nt);
        }
    }
    m.net.load_state_dict(&mut sd).unwrap();
    m.refresh_device();
    m
}

/// The calibration batch of [`model`]: 8 raw inputs.
fn calibration_batch(spec: &ModelSpec) -> Tensor {
    raw_input(spec, 8, 99)
}

/// Samples `range` of the batch `x`.
fn samples(x: &Tensor, range: std::ops::Range<usize>) -> Tensor {
    let per: usize = x.shape()[1..].iter().product();
    let v = x.to_f64_vec();
    let mut shape = x.shape().to_vec();
    shape[0] = range.len();
    Tensor::from_f64(&v[range.start * per..range.end * per], &shape, DType::F32).unwrap()
}

/// Raw inputs in [0, 1): (n, *input), each sample's channels a plane wave with their own
/// direction, frequency, phase, contrast and brightness, plus a little noise —
/// x = β + α·sin(f₁·y + f₂·x + φ) + 0.1·(u − ½), α ∈ [0.1, 0.4], β ∈ [0.4, 0.6],
/// f ∈ [−1, 1] — so that samples differ the way images do, in their spatial structure
/// (i.i.d. noise images all look alike to a network that averages over space).
fn raw_input(spec: &ModelSpec, n: usize, seed: u64) -> Tensor {
    let mut shape = vec![n];
    shape.extend(&spec.input);
    let mut rng = Rng(seed | 1);
    let c = spec.input[0];
    let per: usize = spec.input[1..].iter().product();
    let w = *spec.input.last().unwrap();
    let mut v = Vec::with_capacity(n * c * per);
    for _ in 0..n * c {
        let (a, b) = (rng.uniform(0.1, 0.4), rng.uniform(0.4, 0.6));
        let (f1, f2) = (rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0));
        let phase = rng.uniform(0.0, std::f64::consts::TAU);
        v.extend((0..per).map(|i| {
            let (y, x) = ((i / w) as f64, (i % w) as f64);
            b + a * (f1 * y + f2 * x + phase).sin() + 0.1 * (rng.next() - 0.5)
        }));
    }
    Tensor::from_f64(&v, &shape, DType::F32).unwrap()
}

fn dims(vi: &proto::ValueInfoProto) -> Vec<Result<i64, String>> {
    let t = vi.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
    assert_eq!(t.elem_type, Some(proto::FLOAT));
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            DimValue::DimValue(v) => Ok(*v),
            DimValue::DimParam(s) => Err(s.clone()),
        })
        .collect()
}

/// Decode `file` and check its structure against `spec`; returns the op types used.
fn check_structure(file: &Path, m: &Model) -> HashSet<String> {
    let spec = &m.spec;
    let bytes = std::fs::read(file).unwrap();
    let mp = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(mp.ir_version, Some(quadra::onnx::IR_VERSION));
    assert_eq!(mp.opset_import.len(), 1);
    assert_eq!(mp.opset_import[0].version, Some(quadra::onnx::OPSET));
    assert_eq!(mp.opset_import[0].domain.as_deref().unwrap_or(""), "");
    let g = mp.graph.as_ref().unwrap();
    let sym = || Err::<i64, String>("N".into());
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name.as_deref(), Some("input"));
    let mut want: Vec<Result<i64, String>> = vec![sym()];
    want.extend(spec.input.iter().map(|&d| Ok(d as i64)));
    assert_eq!(dims(&g.input[0]), want, "{}: input dims", spec.name);
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name.as_deref(), Some("logits"));
    assert_eq!(
        dims(&g.output[0]),
        vec![sym(), Ok(spec.num_classes as i64)],
        "{}: output dims",
        spec.name
    );
    // initializers: distinct names, data of the size their dims and type say
    let mut known: HashSet<String> = HashSet::new();
    known.insert("input".into());
    let mut f32_elems = 0usize;
    for t in &g.initializer {
        let name = t.name.clone().unwrap();
        let n: i64 = t.dims.iter().product();
        let width = match t.data_type {
            Some(proto::FLOAT) => 4,
            Some(proto::INT64) => 8,
            d => panic!("{}: initializer `{name}` has data type {d:?}", spec.name),
        };
        if width == 4 {
            f32_elems += n as usize;
        }
        let raw = t.raw_data.as_ref().unwrap();
        assert_eq!(raw.len() as i64, n * width, "{}: `{name}`", spec.name);
        assert!(known.insert(name.clone()), "{}: `{name}` twice", spec.name);
    }
    // every state-dict tensor is an initializer of the same shape (t1's W_a is stored
    // rearranged, `{key}.onnx_kck`)
    let by_name: HashMap<&str, &proto::TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_deref().unwrap(), t))
        .collect();
    let mut sd_elems = 0usize;
    for (k, t) in state_dict(m) {
        sd_elems += t.numel();
        let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        match by_name.get(k.as_str()) {
            Some(init) => assert_eq!(init.dims, dims, "{}: `{k}`", spec.name),
            None => {
                let kck = by_name
                    .get(format!("{k}.onnx_kck").as_str())
                    .unwrap_or_else(|| panic!("{}: no initializer `{k}`", spec.name));
                assert!(k.ends_with(".quad.weight"), "{k}");
                assert_eq!(kck.dims, [dims[1], dims[0] * dims[2]], "{k}");
            }
        }
    }
    assert!(f32_elems >= sd_elems, "{}", spec.name);
    // topological order, allowed ops, one output per node, no value defined twice
    let mut ops = HashSet::new();
    for node in &g.node {
        let op = node.op_type.clone().unwrap();
        assert!(
            quadra::onnx::OPS.contains(&op.as_str()),
            "{}: op {op}",
            spec.name
        );
        for i in &node.input {
            assert!(
                known.contains(i),
                "{}: node {:?} ({op}) reads `{i}` before it is defined",
                spec.name,
                node.name
            );
        }
        assert_eq!(node.output.len(), 1);
        assert!(known.insert(node.output[0].clone()), "{}", spec.name);
        ops.insert(op);
    }
    assert!(
        known.contains("logits"),
        "{}: no node writes logits",
        spec.name
    );
    assert_eq!(g.node.last().unwrap().output, ["logits"]);
    // metadata: the model, and the stored preprocessing
    let meta: HashMap<String, String> = m_meta(&bytes);
    assert_eq!(meta["quadra.model"], spec.name);
    match &spec.preprocess {
        Some(p) => {
            let got: Preprocess = serde_json::from_str(&meta["quadra.preprocess"]).unwrap();
            assert_eq!(&got, p);
            assert_eq!(g.node[0].op_type.as_deref(), Some("Sub"));
            assert_eq!(g.node[0].input[0], "input");
            if !p.classes.is_empty() {
                let c: Vec<String> = serde_json::from_str(&meta["quadra.classes"]).unwrap();
                assert_eq!(c, p.classes);
            }
        }
        None => assert!(!meta.contains_key("quadra.preprocess")),
    }
    ops
}

fn m_meta(bytes: &[u8]) -> HashMap<String, String> {
    ModelProto::decode(bytes)
        .unwrap()
        .metadata_props
        .into_iter()
        .map(|e| (e.key.unwrap(), e.value.unwrap()))
        .collect()
}

#[test]
fn onnx_graphs_are_well_formed() {
    let dir = TempDir::new("onnx-structure");
    let mut all_ops = HashSet::new();
    for m in models_under_test() {
        let spec = m.spec.clone();
        let file = dir.0.join(format!("{}.onnx", spec.name));
        quadra::onnx::export(&m, &file).unwrap();
        let ops = check_structure(&file, &m);
        if spec.name.starts_with("mixed-") {
            // every layer type lowers to its op
            for op in [
                "Conv",
                "BatchNormalization",
                "Relu",
                "MaxPool",
                "AveragePool",
            ] {
                assert!(ops.contains(op), "{}: no {op}", spec.name);
            }
            for op in ["Add", "Flatten", "Gemm", "Mul", "Sub"] {
                assert!(ops.contains(op), "{}: no {op}", spec.name);
            }
        }
        all_ops.extend(ops);
    }
    // t1's bilinear form
    for op in ["MatMul", "ReduceSum", "Transpose", "Unsqueeze", "Reshape"] {
        assert!(all_ops.contains(op), "no {op} in any graph");
    }
    assert!(all_ops.contains("GlobalAveragePool"));
    assert!(all_ops.contains("Identity"), "dropout-only");
}

/// The export refuses to write a graph that does not end in (N, classes) — here a spec
/// whose type check was bypassed by changing `num_classes` after building.
#[test]
fn onnx_export_errors_name_the_problem() {
    let spec = gap_model(NeuronType::T3);
    let mut m = model(&spec);
    m.spec.num_classes = 5;
    let e = quadra::onnx::to_bytes(&m).unwrap_err().to_string();
    assert!(e.contains("outputs [3] per sample, expected [5]"), "{e}");
    // a weight the spec needs but the model lacks: the error names the layer and tensor
    let mut m = model(&spec);
    if let LayerSpec::QuadConv2d { neuron, .. } = &mut m.spec.layers[0] {
        *neuron = NeuronType::T4;
    }
    let e = quadra::onnx::to_bytes(&m).unwrap_err().to_string();
    assert!(
        e.contains("layer `0`") && e.contains("`0.conv1.weight`"),
        "{e}"
    );
}

/// onnxruntime runs every exported graph and gives `Model::predict`'s logits (raw inputs
/// in [0, 1], batch 3 and batch 1) within 1e-5.
#[test]
#[ignore = "needs python3 with onnxruntime: QUADRA_ONNX_PYTHON=..."]
fn onnxruntime_matches_predict() {
    let python = std::env::var("QUADRA_ONNX_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = TempDir::new("onnx-ort");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx-check.py");
    let mut args = Vec::new();
    let mut want = Vec::new();
    for m in models_under_test() {
        let spec = m.spec.clone();
        let file = dir.0.join(format!("{}.onnx", spec.name));
        quadra::onnx::export(&m, &file).unwrap();
        let (inp, out) = (
            dir.0.join(format!("{}.in.safetensors", spec.name)),
            dir.0.join(format!("{}.out.safetensors", spec.name)),
        );
        let mut inputs = Vec::new();
        let mut logits = Vec::new();
        // raw inputs of the calibration batch (the data the batch norms' statistics come
        // from, as a trained model's come from its training set): samples 0..3, then 3
        let calib = calibration_batch(&spec);
        for (k, r) in [("b3", 0..3), ("b1", 3..4)] {
            let x = samples(&calib, r);
            let dtype = state_dict(&m)
                .first()
                .map_or(DType::F32, |(_, t)| t.dtype());
            let y = m.predict(&x.to_dtype(dtype).unwrap()).unwrap();
            logits.push((k.to_string(), y.to_dtype(DType::F32).unwrap()));
            inputs.push((k.to_string(), x));
        }
        write_tensors(&inp, &inputs, None).unwrap();
        args.extend([file, inp, out.clone()]);
        want.push((spec.name.clone(), out, logits));
    }
    let st = Command::new(&python)
        .arg(&script)
        .args(&args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set QUADRA_ONNX_PYTHON)"));
    assert!(st.success(), "{} failed: {st}", script.display());
    let mut worst = 0f64;
    for (name, out, logits) in want {
        let got: HashMap<String, Tensor> = read_tensors(&out).unwrap().0.into_iter().collect();
        for (k, w) in logits {
            let g = &got[&k];
            assert_eq!(g.shape(), w.shape(), "{name} {k}");
            let d = g.max_abs_diff(&w).unwrap();
            let v = w.to_f64_vec();
            let scale = v.iter().fold(0f64, |m, x| m.max(x.abs()));
            // how much the logits move between samples (largest over classes; batch 3 only):
            // logits that hardly depend on the input would make the check vacuous
            let (n, c) = (w.shape()[0], w.shape()[1]);
            let spread = (0..c)
                .map(|j| {
                    let col = (0..n).map(|i| v[i * c + j]);
                    col.clone().fold(f64::MIN, f64::max) - col.fold(f64::MAX, f64::min)
                })
                .fold(0f64, f64::max);
            eprintln!(
                "{name:>22} {k}: max abs diff {d:.2e} (|logits| ≤ {scale:.3}, spread over the batch {spread:.3e})"
            );
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{name} {k}: non-finite logits"
            );
            if n > 1 {
                assert!(spread > 1e-2, "{name} {k}: logits spread only {spread:.3e}");
            }
            assert!(d <= 1e-5, "{name} {k}: onnxruntime differs by {d:.3e}");
            worst = worst.max(d);
        }
    }
    eprintln!("worst max abs diff: {worst:.2e}");
}
