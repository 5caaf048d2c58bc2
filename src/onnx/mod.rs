//! ONNX export: a model as a standard ONNX graph (opset [`OPSET`]) in eval mode, so a QDNN
//! runs in onnxruntime, tract or TensorRT.
//!
//! - Graph input `input`: float32 (N, *spec.input), N the symbolic dimension `N`; output
//!   `logits`: (N, classes). Weights are float32 initializers (an f64 model's are rounded).
//! - Raw inputs, like [`Model::predict`]: a stored normalization (`spec.preprocess`) is the
//!   graph's first nodes, `Sub(mean)` then `Mul(1/std)` per channel — the same arithmetic
//!   as `data::augment::normalize`, `(x − m) · (1/s)` with 1/s rounded to f32 — and is
//!   recorded in the metadata (`quadra.preprocess`, JSON), with the class names
//!   (`quadra.classes`, a JSON array) and the model's name and spec.
//! - Eval mode: BatchNorm is `BatchNormalization` with the running statistics, Dropout is
//!   left out.
//! - Quadratic layers are lowered to standard ops, each branch a `Conv` (conv layers) or a
//!   `Gemm` (linear layers) with its own weights from the state dict
//!   ([`crate::checkpoint::state_dict`], the PyTorch names), combined with `Mul`/`Add`
//!   (and `BatchNormalization` for quadralib-bn); `Lowering::quad` lists each neuron.
//!
//! The protobuf messages are `prost` structs with onnx.proto's field numbers ([`proto`]).

pub mod proto;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::checkpoint::{state_dict, write_atomic};
use crate::model::Model;
use crate::nn::quadratic::{NeuronType, BN_EPS};
use crate::nn::spec::{child_name, infer_shape, join, LayerSpec};
use crate::ops::conv::ConvGeom;
use crate::tensor::Tensor;
use crate::{DType, Error, Result};

use proto::{
    AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto,
};

/// The ONNX operator set the graph imports (the default domain).
pub const OPSET: i64 = 17;
/// The IR version of opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// Names of the graph's input and output.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";
/// The symbolic batch dimension.
pub const BATCH_DIM: &str = "N";

/// Every op type the exporter writes (tests check a decoded graph against it).
pub const OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Conv",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Sub",
    "Transpose",
    "Unsqueeze",
];

/// Write `model` as an ONNX file at `path`, atomically ([`write_atomic`]).
pub fn export(model: &Model, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(model).map_err(|e| Error::File {
        path: path.display().to_string(),
        msg: format!("ONNX export: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// The serialized ONNX `ModelProto` of `model`.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    Ok(to_proto(model)?.encode_to_vec())
}

/// The ONNX `ModelProto` of `model` (see the module doc).
pub fn to_proto(model: &Model) -> Result<ModelProto> {
    let spec = &model.spec;
    let mut g = Lowering {
        weights: state_dict(model).into_iter().collect(),
        nodes: Vec::new(),
        inits: Vec::new(),
        counter: 0,
    };
    let mut x = Value {
        name: INPUT.to_string(),
        shape: spec.input.clone(),
    };
    let norm = spec.preprocess.as_ref().and_then(|p| p.normalize.as_ref());
    if let Some(n) = norm {
        // (N, C, H, W) − mean, then · (1/std), constants broadcast as (1, C|1, 1, 1)
        let dims = [1, n.mean.len(), 1, 1];
        let inv: Vec<f32> = n.std.iter().map(|s| 1.0 / s).collect();
        let m = g.init("preprocess.mean", &dims, n.mean.clone());
        let s = g.init("preprocess.inv_std", &dims, inv);
        let c = g.node("Sub", "preprocess", vec![x.name, m], vec![]);
        let d = g.node("Mul", "preprocess", vec![c, s], vec![]);
        x = Value {
            name: d,
            shape: x.shape,
        };
    }
    let y = g.seq(&spec.layers, "", x)?;
    if y.shape != [spec.num_classes] {
        return Err(Error::invalid(
            format!("ONNX export of `{}`", spec.name),
            format!(
                "the graph outputs {:?} per sample, expected [{}]",
                y.shape, spec.num_classes
            ),
        ));
    }
    // the last value is `logits`: rename the node output that made it, or (a model without
    // a node, e.g. only Dropout) copy the input
    match g.nodes.last_mut() {
        Some(last) if last.output.first() == Some(&y.name) => last.output = vec![OUTPUT.into()],
        _ => {
            g.nodes.push(NodeProto {
                input: vec![y.name],
                output: vec![OUTPUT.into()],
                name: Some("output".into()),
                op_type: Some("Identity".into()),
                attribute: vec![],
            });
        }
    }
    let mut meta = vec![
        ("quadra.model", spec.name.clone()),
        (
            "quadra.spec",
            serde_json::to_string(spec).unwrap_or_default(),
        ),
    ];
    if let Some(p) = &spec.preprocess {
        meta.push((
            "quadra.preprocess",
            serde_json::to_string(p).unwrap_or_default(),
        ));
        if !p.classes.is_empty() {
            meta.push((
                "quadra.classes",
                serde_json::to_string(&p.classes).unwrap_or_default(),
            ));
        }
    }
    let input_dims: Vec<usize> = spec.input.clone();
    let graph = GraphProto {
        node: g.nodes,
        name: Some(spec.name.clone()),
        initializer: g.inits,
        input: vec![value_info(INPUT, &input_dims)],
        output: vec![value_info(OUTPUT, &[spec.num_classes])],
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("quadra".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "{} in eval mode; input: raw (N, {:?}) float32{}",
            spec.name,
            spec.input,
            if norm.is_some() {
                ", normalized per channel by the graph's first nodes"
            } else {
                ""
            }
        )),
        graph: Some(graph),
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            })
            .collect(),
    })
}

/// A float32 tensor value (N, *dims), N symbolic.
fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(DimValue::DimParam(BATCH_DIM.into())),
    }];
    dim.extend(dims.iter().map(|&d| Dimension {
        value: Some(DimValue::DimValue(d as i64)),
    }));
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: Some(proto::FLOAT),
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::ATTR_INT),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::ATTR_INTS),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::ATTR_FLOAT),
        f: Some(f),
        ..Default::default()
    }
}

/// A value of the graph: its name and its per-sample shape (the batch dim left out).
#[derive(Clone, Debug)]
struct Value {
    name: String,
    shape: Vec<usize>,
}

/// The graph under construction: nodes in topological order (each appended after the
/// values it reads), initializers, and the model's state dict to take weights from.
struct Lowering {
    weights: HashMap<String, Tensor>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
}

fn err(path: &str, msg: impl Into<String>) -> Error {
    Error::invalid(format!("ONNX export, layer `{path}`"), msg)
}

impl Lowering {
    /// A fresh value name `{hint}:{k}` (unique: k counts every value made).
    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}:{}", self.counter)
    }

    /// A float32 initializer; returns its name.
    fn init(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(proto::FLOAT),
            name: Some(name.into()),
            raw_data: Some(raw),
        });
        name.to_string()
    }

    /// An int64 1-d initializer (shapes, axes) with a fresh name.
    fn init_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(proto::INT64),
            name: Some(name.clone()),
            raw_data: Some(raw),
        });
        name
    }

    /// The state-dict tensor `key` as a float32 initializer of the same name and shape.
    fn weight(&mut self, path: &str, key: &str) -> Result<String> {
        let t = self.take(path, key)?;
        let data = host_f32(&t)?;
        Ok(self.init(key, t.shape(), data))
    }

    /// The state-dict tensor `key`, or an error naming the layer.
    fn take(&mut self, path: &str, key: &str) -> Result<Tensor> {
        self.weights
            .remove(key)
            .ok_or_else(|| err(path, format!("the model has no tensor `{key}`")))
    }

    /// Append a node with one output; returns the output's name.
    fn node(
        &mut self,
        op: &str,
        path: &str,
        input: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&format!("{path}/{op}"));
        self.nodes.push(NodeProto {
            input,
            output: vec![out.clone()],
            name: Some(out.clone()),
            op_type: Some(op.into()),
            attribute,
        });
        out
    }

    fn seq(&mut self, layers: &[LayerSpec], prefix: &str, mut x: Value) -> Result<Value> {
        for (i, l) in layers.iter().enumerate() {
            let path = join(prefix, &child_name(l, i));
            x = self.layer(l, &path, x)?;
        }
        Ok(x)
    }

    fn layer(&mut self, l: &LayerSpec, path: &str, x: Value) -> Result<Value> {
        // the per-sample output shape, from the spec's own type check
        let shape = infer_shape(l, path, &x.shape)?;
        let name = match l {
            LayerSpec::Conv2d { .. } => {
                let g = l.conv().expect("a convolution layer").geom(path)?;
                self.conv(path, &g, &x.name, path, has_bias(l))?
            }
            LayerSpec::Linear { bias, .. } => self.gemm(path, &x.name, path, *bias)?,
            LayerSpec::BatchNorm2d { eps, .. } | LayerSpec::BatchNorm1d { eps, .. } => {
                self.batch_norm(path, &x.name, path, *eps)?
            }
            LayerSpec::Relu { .. } => self.node("Relu", path, vec![x.name], vec![]),
            LayerSpec::MaxPool2d {
                kernel_size,
                stride,
                padding,
                ..
            }
            | LayerSpec::AvgPool2d {
                kernel_size,
                stride,
                padding,
                ..
            } => {
                // Quadra's pools: square windows, floor mode; max pads with −inf (ONNX's
                // MaxPool ignores pads), avg counts the padding as zeros (PyTorch's
                // count_include_pad = True)
                let k = kernel_size.hw();
                let s = stride.unwrap_or(*kernel_size).hw();
                let p = padding.hw();
                let mut attrs = vec![
                    attr_ints("kernel_shape", &[k.0, k.1]),
                    attr_ints("strides", &[s.0, s.1]),
                    attr_ints("pads", &[p.0, p.1, p.0, p.1]),
                ];
                let op = if matches!(l, LayerSpec::MaxPool2d { .. }) {
                    "MaxPool"
                } else {
                    attrs.push(attr_int("count_include_pad", 1));
                    "AveragePool"
                };
                self.node(op, path, vec![x.name], attrs)
            }
            LayerSpec::GlobalAvgPool { .. } => {
                // (N, C, H, W) → (N, C, 1, 1) → (N, C)
                let p = self.node("GlobalAveragePool", path, vec![x.name], vec![]);
                self.node("Flatten", path, vec![p], vec![attr_int("axis", 1)])
            }
            LayerSpec::Flatten { .. } => {
                self.node("Flatten", path, vec![x.name], vec![attr_int("axis", 1)])
            }
            // eval mode: the identity
            LayerSpec::Dropout { .. } => x.name,
            LayerSpec::QuadConv2d {
                neuron,
                out_channels,
                bias,
                ..
            } => {
                let g = l.conv().expect("a convolution layer").geom(path)?;
                let (ho, wo) = (shape[1], shape[2]);
                self.quad(path, *neuron, Some((g, ho, wo)), *out_channels, *bias, &x)?
            }
            LayerSpec::QuadLinear {
                neuron,
                out_features,
                bias,
                ..
            } => self.quad(path, *neuron, None, *out_features, *bias, &x)?,
            LayerSpec::Sequential { layers, .. } => self.seq(layers, path, x)?.name,
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                relu,
                ..
            } => {
                // relu(layers(x) + shortcut(x)), children named as `Model::build` names them
                let main = self.seq(layers, path, x.clone())?;
                let sc = match shortcut {
                    Some(s) => self.seq(s, &join(path, shortcut_name), x)?,
                    None => x,
                };
                if main.shape != sc.shape {
                    return Err(err(
                        path,
                        format!(
                            "the residual branch gives {:?}, the shortcut {:?}",
                            main.shape, sc.shape
                        ),
                    ));
                }
                let sum = self.node("Add", path, vec![main.name, sc.name], vec![]);
                if *relu {
                    self.node("Relu", path, vec![sum], vec![])
                } else {
                    sum
                }
            }
        };
        Ok(Value { name, shape })
    }

    /// Conv(x, `{prefix}.weight`[, `{prefix}.bias`]) with geometry `g`: (N, C_out, Ho, Wo).
    fn conv(
        &mut self,
        path: &str,
        g: &ConvGeom,
        x: &str,
        prefix: &str,
        bias: bool,
    ) -> Result<String> {
        let mut input = vec![
            x.to_string(),
            self.weight(path, &format!("{prefix}.weight"))?,
        ];
        if bias {
            input.push(self.weight(path, &format!("{prefix}.bias"))?);
        }
        Ok(self.node("Conv", path, input, conv_attrs(g)))
    }

    /// Gemm(x, `{prefix}.weight`ᵀ[, `{prefix}.bias`]): (N, F) → (N, out); the weight is
    /// (out, F) as PyTorch's Linear holds it, hence transB.
    fn gemm(&mut self, path: &str, x: &str, prefix: &str, bias: bool) -> Result<String> {
        let mut input = vec![
            x.to_string(),
            self.weight(path, &format!("{prefix}.weight"))?,
        ];
        if bias {
            input.push(self.weight(path, &format!("{prefix}.bias"))?);
        }
        Ok(self.node("Gemm", path, input, vec![attr_int("transB", 1)]))
    }

    /// BatchNormalization(x) with `{prefix}.weight/.bias/.running_mean/.running_var`: the
    /// eval-mode normalization over dim 1 of (N, C) or (N, C, H, W).
    fn batch_norm(&mut self, path: &str, x: &str, prefix: &str, eps: f64) -> Result<String> {
        let mut input = vec![x.to_string()];
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            input.push(self.weight(path, &format!("{prefix}.{leaf}"))?);
        }
        Ok(self.node(
            "BatchNormalization",
            path,
            input,
            vec![attr_float("epsilon", eps as f32)],
        ))
    }

    /// A quadratic layer (`conv`: the branch geometry and output size (Ho, Wo); `None` for
    /// a linear layer) on x (N, C_in, H, W) or (N, F), with `c` outputs. Each first-order
    /// branch W_k x + b_k is its own Conv/Gemm on the branch's state-dict weights
    /// (P = `conv` or `linear`):
    ///
    /// - t1: q(u) + W_b x + b, q the bilinear form uᵀ W_a u per patch ([`Lowering::t1_form`])
    /// - t2: P(x ⊙ x) — the map `P` on the squared input
    /// - t3: P(x)²
    /// - t4: P1(x) ⊙ P2(x)
    /// - quadralib: P1(x) ⊙ P2(x) + P3(x)
    /// - quadralib-bn: bn1(P1(x)) ⊙ bn2(P2(x)) + bn3(P3(x)), eps `BN_EPS`, running stats
    /// - fan: P_r(x) ⊙ P_g(x) + P_b(x ⊙ x)
    fn quad(
        &mut self,
        path: &str,
        neuron: NeuronType,
        conv: Option<(ConvGeom, usize, usize)>,
        c: usize,
        bias: bool,
        x: &Value,
    ) -> Result<String> {
        let p = if conv.is_some() { "conv" } else { "linear" };
        let branch = |s: &mut Self, name: &str, input: &str, bias: bool| -> Result<String> {
            let prefix = format!("{path}.{name}");
            match &conv {
                Some((g, _, _)) => s.conv(path, g, input, &prefix, bias),
                None => s.gemm(path, input, &prefix, bias),
            }
        };
        let square =
            |s: &mut Self| s.node("Mul", path, vec![x.name.clone(), x.name.clone()], vec![]);
        let x = x.name.as_str();
        Ok(match neuron {
            NeuronType::T1 => {
                let lin = branch(self, p, x, bias)?;
                let q = self.t1_form(path, conv, c, x)?;
                self.node("Add", path, vec![q, lin], vec![])
            }
            NeuronType::T2 => {
                let sq = square(self);
                branch(self, p, &sq, bias)?
            }
            NeuronType::T3 => {
                let a = branch(self, p, x, bias)?;
                self.node("Mul", path, vec![a.clone(), a], vec![])
            }
            NeuronType::T4 | NeuronType::QuadraLib | NeuronType::QuadraLibBn => {
                let mut z = Vec::new();
                let nb = neuron.branches();
                for k in 1..=nb {
                    let mut v = branch(self, &format!("{p}{k}"), x, bias)?;
                    if neuron == NeuronType::QuadraLibBn {
                        v = self.batch_norm(path, &v, &format!("{path}.bn{k}"), BN_EPS)?;
                    }
                    z.push(v);
                }
                let ab = self.node("Mul", path, vec![z[0].clone(), z[1].clone()], vec![]);
                if nb == 3 {
                    self.node("Add", path, vec![ab, z[2].clone()], vec![])
                } else {
                    ab
                }
            }
            NeuronType::Fan => {
                let r = branch(self, &format!("{p}_r"), x, bias)?;
                let g = branch(self, &format!("{p}_g"), x, bias)?;
                let sq = square(self);
                let q = branch(self, &format!("{p}_b"), &sq, bias)?;
                let rg = self.node("Mul", path, vec![r, g], vec![]);
                self.node("Add", path, vec![rg, q], vec![])
            }
        })
    }

    /// t1's bilinear form q_o = Σ_ij u_i W_a[o, i, j] u_j over each input vector u: the
    /// input itself (N, F) for a linear layer, each im2col patch (K = C_in·kh·kw, index
    /// order (c, ky, kx)) for a conv, with W_a = `{path}.quad.weight` (C, K, K).
    ///
    /// Conv: the patches are a Conv with one-hot kernels E (K, C_in, kh, kw), E[k] = e_k
    /// (exact: one product by 1 per output, the rest by 0), same stride/padding/dilation:
    /// (N, K, Ho, Wo) → Reshape (N, K, L) → Transpose U (N, L, K). Then
    /// V = MatMul(U, W') with W'[i, o·K + j] = W_a[o, i, j] (K, C·K) → Reshape
    /// (N, L, C, K) → Mul with Unsqueeze(U) (N, L, 1, K) → ReduceSum over K → (N, L, C) →
    /// Transpose (N, C, L) → Reshape (N, C, Ho, Wo). Linear: the same with L absent.
    fn t1_form(
        &mut self,
        path: &str,
        conv: Option<(ConvGeom, usize, usize)>,
        c: usize,
        x: &str,
    ) -> Result<String> {
        let key = format!("{path}.quad.weight");
        let wa = self.take(path, &key)?;
        let s = wa.shape().to_vec();
        let k = match s[..] {
            [cc, k1, k2] if cc == c && k1 == k2 => k1,
            _ => {
                return Err(err(
                    path,
                    format!("`{key}` has shape {s:?}, expected ({c}, K, K)"),
                ))
            }
        };
        let w = host_f32(&wa)?;
        let mut wt = vec![0f32; k * c * k];
        for o in 0..c {
            for i in 0..k {
                for j in 0..k {
                    wt[i * c * k + o * k + j] = w[(o * k + i) * k + j];
                }
            }
        }
        let wt = self.init(&format!("{key}.onnx_kck"), &[k, c * k], wt);
        match conv {
            Some((g, ho, wo)) => {
                if g.groups != 1 {
                    return Err(err(path, "neuron t1 needs groups = 1"));
                }
                if g.c_in * g.kh * g.kw != k {
                    return Err(err(
                        path,
                        format!(
                            "`{key}` has K = {k}, the geometry C_in·kh·kw = {}",
                            g.c_in * g.kh * g.kw
                        ),
                    ));
                }
                let mut eye = vec![0f32; k * k];
                for i in 0..k {
                    eye[i * k + i] = 1.0;
                }
                let e = self.init(
                    &format!("{path}.onnx_patch_kernel"),
                    &[k, g.c_in, g.kh, g.kw],
                    eye,
                );
                let mut attrs = conv_attrs(&g);
                // the one-hot conv has K outputs and no groups
                attrs.retain(|a| a.name.as_deref() != Some("group"));
                let patches = self.node("Conv", path, vec![x.into(), e], attrs);
                let s1 = self.init_i64(&format!("{path}/shape"), &[0, k as i64, -1]);
                let p3 = self.node("Reshape", path, vec![patches, s1], vec![]);
                let u = self.node(
                    "Transpose",
                    path,
                    vec![p3],
                    vec![attr_ints("perm", &[0, 2, 1])],
                );
                let l = (ho * wo) as i64;
                let v = self.node("MatMul", path, vec![u.clone(), wt], vec![]);
                let s2 = self.init_i64(&format!("{path}/shape"), &[0, l, c as i64, k as i64]);
                let v4 = self.node("Reshape", path, vec![v, s2], vec![]);
                let ax = self.init_i64(&format!("{path}/axes"), &[2]);
                let u4 = self.node("Unsqueeze", path, vec![u, ax], vec![]);
                let prod = self.node("Mul", path, vec![v4, u4], vec![]);
                let ax = self.init_i64(&format!("{path}/axes"), &[3]);
                let q = self.node(
                    "ReduceSum",
                    path,
                    vec![prod, ax],
                    vec![attr_int("keepdims", 0)],
                );
                let qt = self.node(
                    "Transpose",
                    path,
                    vec![q],
                    vec![attr_ints("perm", &[0, 2, 1])],
                );
                let s3 = self.init_i64(
                    &format!("{path}/shape"),
                    &[0, c as i64, ho as i64, wo as i64],
                );
                Ok(self.node("Reshape", path, vec![qt, s3], vec![]))
            }
            None => {
                // x (N, F): V = x·W' (N, C·F) → (N, C, F) ⊙ x (N, 1, F) → Σ_F → (N, C)
                let v = self.node("MatMul", path, vec![x.into(), wt], vec![]);
                let s2 = self.init_i64(&format!("{path}/shape"), &[0, c as i64, k as i64]);
                let v3 = self.node("Reshape", path, vec![v, s2], vec![]);
                let ax = self.init_i64(&format!("{path}/axes"), &[1]);
                let x3 = self.node("Unsqueeze", path, vec![x.into(), ax], vec![]);
                let prod = self.node("Mul", path, vec![v3, x3], vec![]);
                let ax = self.init_i64(&format!("{path}/axes"), &[2]);
                Ok(self.node(
                    "ReduceSum",
                    path,
                    vec![prod, ax],
                    vec![attr_int("keepdims", 0)],
                ))
            }
        }
    }
}

/// A weight's values as f32 on the host (an f64 model's rounded; a GPU tensor copied
/// back), with the read's error rather than `to_f64_vec`'s silent empty vector.
fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        DType::F32 => t.to_vec::<f32>()?,
        DType::F64 => t.to_vec::<f64>()?.into_iter().map(|v| v as f32).collect(),
    })
}

fn has_bias(l: &LayerSpec) -> bool {
    l.conv().is_some_and(|c| c.bias)
}

/// Conv's attributes for geometry `g` (pads: begin then end of each spatial axis).
fn conv_attrs(g: &ConvGeom) -> Vec<AttributeProto> {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    vec![
        attr_ints("kernel_shape", &[g.kh, g.kw]),
        attr_ints("strides", &[sh, sw]),
        attr_ints("pads", &[ph, pw, ph, pw]),
        attr_ints("dilations", &[dh, dw]),
        attr_int("group", g.groups as i64),
    ]
}
