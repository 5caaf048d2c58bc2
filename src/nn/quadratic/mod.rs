//! Quadratic layers: `QuadConv2d` and `QuadLinear` for every neuron of the family, with
//! both back-propagation modes. The math lives in `ops::quadratic`; a linear layer is the
//! L = 1 case of the same (N, M, L) plane layout, so both layers share one core.
//!
//! # Neurons (x: input, W·x a conv or linear map)
//!
//! | neuron | output | stacked W1 branches | lifted W2 |
//! |---|---|---|---|
//! | `t1` | xᵀ W_a x + W_b x (+ b) | W_b (the linear term is always present) | W_a on u ⊗ u |
//! | `t2` | W_a (x ⊙ x) (+ b) | — | W_a on x ⊙ x |
//! | `t3` | (W_a x + b)² | a | — |
//! | `t4` | (W_a x + b_a) ⊙ (W_b x + b_b) | a, b | — |
//! | `quadralib` | (W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c | a, b, c | — |
//! | `quadralib-bn` | BN_a(W_a x + b_a) ⊙ BN_b(W_b x + b_b) + BN_c(W_c x + b_c) | a, b, c | — |
//! | `fan` | (W_r x + b_r) ⊙ (W_g x + b_g) + W_b (x ⊙ x) + c | r, g | W_b on x ⊙ x |
//!
//! Biases exist only when the layer is built with `bias = true`. For conv `t1`, the bilinear
//! form is over each im2col patch u (K = C_in·kh·kw, index order (c, ky, kx)), W_a is
//! (C_out, K, K) and groups must be 1; for linear `t1`, W_a is (out, in, in).
//!
//! # Parameters (`visit_params` names)
//!
//! - `{path}.stacked.weight`: the first-order branches as ONE weight (nb·C_out, C_in/G, kh, kw)
//!   (linear: (nb·out, in)), branch k in rows [k·C_out, (k+1)·C_out); `{path}.stacked.bias`
//!   (nb·C_out). Segments per branch: `QuadWeight`/`QuadBias` for branches entering a product
//!   or square (t3 a; t4 a, b; quadralib(-bn) a, b; fan r, g), `Weight`/`Bias` for linear
//!   terms (quadralib(-bn) c, t1's W_b).
//! - `{path}.lifted.weight` (`QuadWeight`): the weight on x ⊙ x (t2, fan) or on u ⊗ u (t1);
//!   `{path}.lifted.bias` (`Bias`): t2's b and fan's c.
//! - `{path}.bn.weight` (`NormScale`) and `{path}.bn.bias` (`NormShift`): γ, β over the 3·C_out
//!   stacked channels (quadralib-bn); the running mean/var are buffers.
//!
//! # State-dict names (P = `conv` for QuadConv2d, `linear` for QuadLinear)
//!
//! - `t1`: `{path}.quad.weight` (C_out, K, K); `{path}.P.weight`, `{path}.P.bias` (W_b, b)
//! - `t2`, `t3`: `{path}.P.weight`, `{path}.P.bias` (for t2 the map on x ⊙ x)
//! - `t4`: `{path}.P1.*`, `{path}.P2.*` (branches a, b)
//! - `quadralib`: `{path}.P1.*`, `P2.*`, `P3.*` (a, b, c)
//! - `quadralib-bn`: exactly the reference PyTorch module: `{path}.P1.weight` / `.bias`,
//!   `P2.*`, `P3.*` and `{path}.bn1.weight` / `.bias` / `.running_mean` / `.running_var`,
//!   `bn2.*`, `bn3.*` (1 = a, 2 = b, 3 = c). A `bnK.num_batches_tracked` entry in a loaded
//!   dict is accepted and ignored (it is not exported: tensors are f32/f64 only).
//! - `fan`: `{path}.P_r.*`, `{path}.P_g.*` (r, g), `{path}.P_b.weight` (W_b on x ⊙ x),
//!   `{path}.P_b.bias` (c).
//!
//! Every per-branch weight is initialised like its own PyTorch conv/linear
//! (`conv::default_init`, fan_in of that branch: C_in/G·kh·kw, or K² for t1's W_a); BN
//! γ = 1, β = 0, running mean 0, running var 1; momentum 0.1, eps 1e-5.
//!
//! # Computation
//!
//! The layers hold the parameters, their state-dict names and the back-propagation mode;
//! the computation — the algorithm's steps, what a training forward keeps in each mode,
//! the quadralib-bn statistics, and the choice of CPU engine or CUDA backend — is
//! `ops::quadratic`'s (see its module doc). A layer never looks at the device.
//!
//! # Devices
//!
//! On the CUDA backend (`Device::Cuda(n)`, `Device::Emu`; f32) the same layers give the same
//! neurons, modes and saved sets (byte for byte), the running statistics updated on the
//! device. `visit_buffers` names them
//! `{path}.bn.running_mean` / `{path}.bn.running_var` (3·C_out, stacked like γ and β), so
//! `nn::module_to_device` moves them.

use std::any::Any;
use std::collections::HashMap;

mod state_dict;

use super::conv::default_init;
use super::{no_forward, BackpropMode, LayerName, Module, Param, ParamKind, Segment};
use crate::device::alloc::Category;
use crate::ops::conv::{self as convops, ConvGeom};
use crate::ops::quadratic::{self as qops, dense_geom, Call, Lift, QuadOp, QuadParams, Saved};
pub use crate::ops::quadratic::{NeuronType, BN_EPS, BN_MOMENTUM};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// The shared core of `QuadConv2d` and `QuadLinear`.
struct Core {
    name: LayerName,
    neuron: NeuronType,
    mode: BackpropMode,
    /// Conv geometry of one branch; for a linear layer the 1×1 geometry (c_in = in).
    geom: ConvGeom,
    dense: bool,
    params: QuadParams,
    saved: Option<Saved>,
}

fn kinds(neuron: NeuronType) -> Vec<(ParamKind, ParamKind)> {
    let q = (ParamKind::QuadWeight, ParamKind::QuadBias);
    let lin = (ParamKind::Weight, ParamKind::Bias);
    match neuron {
        NeuronType::T1 => vec![lin],
        NeuronType::T2 => vec![],
        NeuronType::T3 => vec![q],
        NeuronType::T4 | NeuronType::Fan => vec![q, q],
        NeuronType::QuadraLib | NeuronType::QuadraLibBn => vec![q, q, lin],
    }
}

fn concat(parts: &[Tensor], shape: &[usize], dtype: DType) -> Result<Tensor> {
    let v: Vec<f64> = parts.iter().flat_map(|t| t.to_f64_vec()).collect();
    Tensor::from_f64(&v, shape, dtype)
}

fn segments(kinds: &[ParamKind], per: usize) -> Vec<Segment> {
    kinds
        .iter()
        .enumerate()
        .map(|(k, &kind)| Segment {
            range: k * per..(k + 1) * per,
            kind,
        })
        .collect()
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &str,
        neuron: NeuronType,
        geom: ConvGeom,
        dense: bool,
        bias: bool,
        mode: BackpropMode,
        dtype: DType,
        seed: u64,
    ) -> Result<Core> {
        let what = format!("quadratic layer `{path}`");
        if dense {
            if geom.c_in == 0 || geom.c_out == 0 {
                return Err(Error::invalid(
                    what,
                    format!(
                        "features must be positive (in {}, out {})",
                        geom.c_in, geom.c_out
                    ),
                ));
            }
        } else {
            geom.validate(path)?;
        }
        if let Err(why) = neuron.check_groups(geom.groups) {
            return Err(Error::invalid(what, why));
        }
        let name = LayerName::new(path);
        let _s = name.scope();
        let c = geom.c_out;
        let nb = neuron.branches();
        let fan1 = geom.k_group();
        let bshape: Vec<usize> = if dense {
            vec![c, geom.c_in]
        } else {
            vec![c, geom.c_in / geom.groups, geom.kh, geom.kw]
        };
        let per_w = c * fan1;
        let ks = kinds(neuron);
        let mut w1 = None;
        let mut b1 = None;
        if nb > 0 {
            let ws: Vec<Tensor> = (0..nb)
                .map(|k| default_init(&bshape, fan1, dtype, seed.wrapping_add(1 + k as u64)))
                .collect::<Result<_>>()?;
            let mut shape = bshape.clone();
            shape[0] = nb * c;
            let wk: Vec<ParamKind> = ks.iter().map(|k| k.0).collect();
            w1 = Some(Param::with_segments(
                concat(&ws, &shape, dtype)?,
                segments(&wk, per_w),
            ));
            if bias {
                let bs: Vec<Tensor> = (0..nb)
                    .map(|k| {
                        default_init(&[c], fan1, dtype, seed.wrapping_add(1 + k as u64) ^ 0x5eed)
                    })
                    .collect::<Result<_>>()?;
                let bk: Vec<ParamKind> = ks.iter().map(|k| k.1).collect();
                b1 = Some(Param::with_segments(
                    concat(&bs, &[nb * c], dtype)?,
                    segments(&bk, c),
                ));
            }
        }
        let (mut w2, mut b2) = (None, None);
        let lseed = seed.wrapping_add(100);
        match neuron.lift() {
            Lift::None => {}
            Lift::Square => {
                w2 = Some(Param::new(
                    default_init(&bshape, fan1, dtype, lseed)?,
                    ParamKind::QuadWeight,
                ));
                if bias {
                    b2 = Some(Param::new(
                        default_init(&[c], fan1, dtype, lseed ^ 0x5eed)?,
                        ParamKind::Bias,
                    ));
                }
            }
            Lift::Outer => {
                let k = geom.k_total();
                w2 = Some(Param::new(
                    default_init(&[c, k, k], k * k, dtype, lseed)?,
                    ParamKind::QuadWeight,
                ));
            }
        }
        let (mut gamma, mut beta, mut rm, mut rv) = (None, None, None, None);
        if neuron.has_bn() {
            let m = 3 * c;
            gamma = Some(Param::new(
                Tensor::full_in(1.0, &[m], dtype, crate::Device::Cpu, Category::Parameter)?,
                ParamKind::NormScale,
            ));
            beta = Some(Param::new(
                Tensor::full_in(0.0, &[m], dtype, crate::Device::Cpu, Category::Parameter)?,
                ParamKind::NormShift,
            ));
            rm = Some(Tensor::full_in(
                0.0,
                &[m],
                dtype,
                crate::Device::Cpu,
                Category::Parameter,
            )?);
            rv = Some(Tensor::full_in(
                1.0,
                &[m],
                dtype,
                crate::Device::Cpu,
                Category::Parameter,
            )?);
        }
        Ok(Core {
            name,
            neuron,
            mode,
            geom,
            dense,
            params: QuadParams {
                w1,
                b1,
                w2,
                b2,
                gamma,
                beta,
                running_mean: rm,
                running_var: rv,
            },
            saved: None,
        })
    }

    fn describe(&self) -> String {
        let g = &self.geom;
        if self.dense {
            format!(
                "QuadLinear[{}]({}→{}, {})",
                self.neuron, g.c_in, g.c_out, self.mode
            )
        } else {
            format!(
                "QuadConv2d[{}]({}→{}, k{}x{}, s{:?}, p{:?}, d{:?}, g{}, {})",
                self.neuron,
                g.c_in,
                g.c_out,
                g.kh,
                g.kw,
                g.stride,
                g.padding,
                g.dilation,
                g.groups,
                self.mode
            )
        }
    }

    /// Check x and build the op for its size; returns (n, op).
    fn op_for(&self, x: &Tensor) -> Result<(usize, QuadOp)> {
        let path = &self.name.path;
        if self.dense {
            let (n, f) = x.dims2(path)?;
            if f != self.geom.c_in {
                return Err(Error::shape(
                    path,
                    format!(
                        "input has {f} features, the layer expects {} (input shape {:?})",
                        self.geom.c_in,
                        x.shape()
                    ),
                ));
            }
            if n == 0 {
                return Err(Error::shape(
                    path,
                    format!("input batch is empty (shape {:?})", x.shape()),
                ));
            }
            Ok((n, QuadOp::dense(self.neuron, f, self.geom.c_out)))
        } else {
            let (n, h, w, _, _) = convops::check_input(&self.geom, x, path)?;
            Ok((n, QuadOp::conv(self.neuron, self.geom, h, w, path)?))
        }
    }

    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let (n, op) = self.op_for(x)?;
        let call = Call {
            op,
            n,
            path: &self.name.path,
        };
        qops::infer(&call, &self.params, x)
    }

    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let (n, op) = self.op_for(x)?;
        let call = Call {
            op,
            n,
            path: &self.name.path,
        };
        let stored = self.mode == BackpropMode::Stored;
        let (y, saved) = qops::forward(&call, &mut self.params, x, stored)?;
        self.saved = Some(saved);
        Ok(y)
    }

    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let sv = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let x = sv.input();
        let (n, op) = self.op_for(x)?;
        super::check_grad(&self.name.path, g, &op.out_shape(n), x.dtype())?;
        let call = Call {
            op,
            n,
            path: &self.name.path,
        };
        qops::backward(&call, &mut self.params, sv, g)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        let names = [
            "stacked.weight",
            "stacked.bias",
            "lifted.weight",
            "lifted.bias",
            "bn.weight",
            "bn.bias",
        ];
        let key = |s: &str| self.name.key(s);
        let keys: Vec<String> = names.iter().map(|s| key(s)).collect();
        let p = &mut self.params;
        for (p, k) in [
            &mut p.w1,
            &mut p.b1,
            &mut p.w2,
            &mut p.b2,
            &mut p.gamma,
            &mut p.beta,
        ]
        .into_iter()
        .zip(&keys)
        {
            if let Some(p) = p {
                f(k, p);
            }
        }
    }

    /// The running statistics (quadralib-bn), for `module_to_device`.
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let keys = [
            self.name.key("bn.running_mean"),
            self.name.key("bn.running_var"),
        ];
        let p = &mut self.params;
        for (t, k) in [&mut p.running_mean, &mut p.running_var]
            .into_iter()
            .zip(&keys)
        {
            if let Some(t) = t {
                f(k, t);
            }
        }
    }
}

/// A quadratic 2-d convolution layer (any neuron of the family).
pub struct QuadConv2d(Core);

/// A quadratic fully-connected layer: input (N, in_features), output (N, out_features).
pub struct QuadLinear(Core);

impl QuadConv2d {
    /// A quadratic convolution at layer path `path` with `neuron`'s branches of geometry
    /// `geom`, fresh weights from `seed`; an `Error::Invalid` for an inconsistent geometry
    /// or groups the neuron does not support.
    pub fn new(
        path: &str,
        neuron: NeuronType,
        geom: ConvGeom,
        bias: bool,
        mode: BackpropMode,
        dtype: DType,
        seed: u64,
    ) -> Result<QuadConv2d> {
        Core::new(path, neuron, geom, false, bias, mode, dtype, seed).map(QuadConv2d)
    }
    /// The geometry of one branch.
    pub fn geom(&self) -> ConvGeom {
        self.0.geom
    }
}

impl QuadLinear {
    /// A quadratic fully connected layer at layer path `path`, fresh weights from `seed`; an
    /// `Error::Invalid` when a feature count is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: &str,
        neuron: NeuronType,
        in_features: usize,
        out_features: usize,
        bias: bool,
        mode: BackpropMode,
        dtype: DType,
        seed: u64,
    ) -> Result<QuadLinear> {
        let geom = dense_geom(in_features, out_features);
        Core::new(path, neuron, geom, true, bias, mode, dtype, seed).map(QuadLinear)
    }
    /// Features per input sample.
    pub fn in_features(&self) -> usize {
        self.0.geom.c_in
    }
    /// Features per output sample.
    pub fn out_features(&self) -> usize {
        self.0.geom.c_out
    }
}

macro_rules! quad_layer {
    ($ty:ident) => {
        impl $ty {
            /// The back-propagation mode: keep the branch outputs (`stored`) or recompute them.
            pub fn mode(&self) -> BackpropMode {
                self.0.mode
            }
            /// Set the back-propagation mode.
            pub fn set_mode(&mut self, mode: BackpropMode) {
                self.0.mode = mode;
            }
            /// The neuron type of the layer's outputs.
            pub fn neuron(&self) -> NeuronType {
                self.0.neuron
            }
        }

        impl Module for $ty {
            fn path(&self) -> &str {
                &self.0.name.path
            }
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn infer(&self, x: &Tensor) -> Result<Tensor> {
                let _s = self.0.name.scope();
                self.0.infer(x)
            }
            fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
                let _s = self.0.name.scope();
                self.0.forward(x)
            }
            fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
                let _s = self.0.name.scope();
                self.0.backward(g)
            }
            fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
                self.0.visit_params(f)
            }
            fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
                self.0.visit_buffers(f)
            }
            fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
                self.0.state_dict(out)
            }
            fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
                self.0.load_state_dict(map)
            }
            fn set_backprop(&mut self, plan: &dyn Fn(&str) -> BackpropMode) {
                self.0.mode = plan(&self.0.name.path);
            }
            fn clear_saved(&mut self) {
                self.0.saved = None;
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
    };
}

quad_layer!(QuadConv2d);
quad_layer!(QuadLinear);
