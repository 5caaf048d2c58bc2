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
//! # What a training forward keeps (all through `keep_for_backward`)
//!
//! | neuron | `stored` | `recompute` |
//! |---|---|---|
//! | `t1` | x, u ⊗ u (N, K², L) | x |
//! | `t2` | x, x ⊙ x | x |
//! | `t3` | x, a (N, C, L) | x |
//! | `t4`, `quadralib` | x, a‖b (N, 2C, L) | x |
//! | `quadralib-bn` | x, z (N, 3C, L), A‖B (N, 2C, L), mean, rstd (3C) | x, mean, rstd |
//! | `fan` | x, r‖g (N, 2C, L), x ⊙ x | x |
//!
//! In `recompute` mode backward recomputes the planes it reads from x with one GEMM per
//! image (the same code path as forward), so both modes give bit-identical results.
//!
//! # Devices
//!
//! On the CUDA backend (`Device::Cuda(n)`, `Device::Emu`; f32) the same layers run through
//! `device::kernels` (see `gpu.rs`): the same neurons, modes and saved sets (byte for
//! byte), the running statistics updated on the device. `visit_buffers` names them
//! `{path}.bn.running_mean` / `{path}.bn.running_var` (3·C_out, stacked like γ and β), so
//! `nn::module_to_device` moves them.

use std::any::Any;
use std::collections::HashMap;
use std::ops::Range;

mod gpu;

use super::conv::default_init;
use super::{no_forward, take_entry, BackpropMode, LayerName, Module, Param, ParamKind, Segment};
use crate::device::alloc::Category;
use crate::ops::conv::{self as convops, ConvGeom};
use crate::ops::norm;
pub use crate::ops::quadratic::NeuronType;
use crate::ops::quadratic::{self as qops, dense_geom, Lift, QuadOp, Weights};
use crate::tensor::{DType, Float, Tensor};
use crate::{with_dtype, Error, Result};

/// eps of the quadralib-bn BatchNorms (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Momentum of the quadralib-bn BatchNorms' running statistics (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// What a training forward kept.
struct Saved {
    x: Tensor,
    stored: bool,
    /// stored: the leading branch planes (N, R·C, L), or z (N, 3C, L) for quadralib-bn.
    planes: Option<Tensor>,
    /// stored: x ⊙ x, or u ⊗ u (N, K², L) for t1.
    lifted: Option<Tensor>,
    /// stored quadralib-bn: A‖B (N, 2C, L).
    ab: Option<Tensor>,
    /// quadralib-bn batch statistics (3C).
    mean: Option<Tensor>,
    rstd: Option<Tensor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    W1,
    B1,
    W2,
    B2,
    Gamma,
    Beta,
    RunMean,
    RunVar,
}

/// One state-dict entry: a slice of one of the layer's tensors.
struct Entry {
    key: String,
    slot: Slot,
    range: Range<usize>,
    shape: Vec<usize>,
}

/// The shared core of `QuadConv2d` and `QuadLinear`.
struct Core {
    name: LayerName,
    neuron: NeuronType,
    mode: BackpropMode,
    /// Conv geometry of one branch; for a linear layer the 1×1 geometry (c_in = in).
    geom: ConvGeom,
    dense: bool,
    w1: Option<Param>,
    b1: Option<Param>,
    w2: Option<Param>,
    b2: Option<Param>,
    gamma: Option<Param>,
    beta: Option<Param>,
    running_mean: Option<Tensor>,
    running_var: Option<Tensor>,
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
        if neuron == NeuronType::T1 && geom.groups != 1 {
            return Err(Error::invalid(
                what,
                format!(
                    "neuron t1 (a bilinear form over each whole patch) needs groups = 1, got groups = {}",
                    geom.groups
                ),
            ));
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
            w1,
            b1,
            w2,
            b2,
            gamma,
            beta,
            running_mean: rm,
            running_var: rv,
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

    fn out_shape(&self, n: usize, op: &QuadOp) -> Vec<usize> {
        if self.dense {
            vec![n, self.geom.c_out]
        } else {
            vec![n, self.geom.c_out, op.ho, op.wo]
        }
    }

    fn weights<T: Float>(&self) -> Result<Weights<'_, T>> {
        fn sl<T: Float>(p: &Option<Param>) -> Result<&[T]> {
            match p {
                Some(p) => p.value.as_slice::<T>(),
                None => Ok(&[]),
            }
        }
        Ok(Weights {
            w1: sl(&self.w1)?,
            b1: self
                .b1
                .as_ref()
                .map(|p| p.value.as_slice::<T>())
                .transpose()?,
            w2: sl(&self.w2)?,
            b2: self
                .b2
                .as_ref()
                .map(|p| p.value.as_slice::<T>())
                .transpose()?,
            gamma: sl(&self.gamma)?,
            beta: sl(&self.beta)?,
        })
    }

    fn running_stats<T: Float>(&self) -> Result<(Vec<T>, Vec<T>)> {
        let (rm, rv) = match (&self.running_mean, &self.running_var) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::state(
                    "quadralib-bn layer without running statistics",
                ))
            }
        };
        Ok((rm.to_vec::<T>()?, rv.to_vec::<T>()?))
    }

    fn infer_t<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_gpu() {
            return self.infer_gpu(x);
        }
        let (n, op) = self.op_for(x)?;
        let mut y = super::zeros_par(&self.out_shape(n, &op), x.dtype(), Category::Workspace)?;
        let xs = x.as_slice::<T>()?;
        let wt = self.weights::<T>()?;
        if self.neuron.has_bn() {
            let (rm, rv) = self.running_stats::<T>()?;
            let rstd = norm::rstd(&rv, BN_EPS);
            qops::bn_infer(&op, n, xs, &wt, &rm, &rstd, y.data_mut::<T>()?);
        } else {
            qops::forward(&op, n, xs, &wt, y.data_mut::<T>()?, false, &mut [], &mut []);
        }
        Ok(y)
    }

    fn forward_t<T: Float>(&mut self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_gpu() {
            return self.forward_gpu(x);
        }
        let (n, op) = self.op_for(x)?;
        let dtype = x.dtype();
        let stored = self.mode == BackpropMode::Stored;
        let (c, l) = (self.geom.c_out, op.l());
        let mut y = super::zeros_par(&self.out_shape(n, &op), dtype, Category::Workspace)?;
        let xs = x.as_slice::<T>()?;
        let mut saved = Saved {
            x: x.clone(),
            stored,
            planes: None,
            lifted: None,
            ab: None,
            mean: None,
            rstd: None,
        };
        if self.neuron.has_bn() {
            let mut z = super::zeros_par(&[n, 3 * c, l], dtype, Category::Workspace)?;
            let mut ab = if stored {
                Some(super::zeros_par(
                    &[n, 2 * c, l],
                    dtype,
                    Category::Workspace,
                )?)
            } else {
                None
            };
            let (mean, var, rstd) = {
                let wt = self.weights::<T>()?;
                let abs = match ab.as_mut() {
                    Some(t) => Some(t.data_mut::<T>()?),
                    None => None,
                };
                qops::bn_forward(
                    &op,
                    n,
                    xs,
                    &wt,
                    BN_EPS,
                    z.data_mut::<T>()?,
                    y.data_mut::<T>()?,
                    abs,
                )
            };
            let (mut rm, mut rv) = self.running_stats::<T>()?;
            norm::update_running(&mut rm, &mut rv, &mean, &var, n * l, BN_MOMENTUM);
            let m = 3 * c;
            let dev = x.device();
            self.running_mean = Some(Tensor::from_vec_in(rm, &[m], dev, Category::Parameter)?);
            self.running_var = Some(Tensor::from_vec_in(rv, &[m], dev, Category::Parameter)?);
            saved.mean = Some(Tensor::from_vec(mean, &[m])?.keep_for_backward());
            saved.rstd = Some(Tensor::from_vec(rstd, &[m])?.keep_for_backward());
            if stored {
                saved.planes = Some(z.keep_for_backward());
                saved.ab = ab.map(|t| t.keep_for_backward());
            }
        } else {
            let r = self.neuron.planes_read();
            let mut planes = if stored && r > 0 {
                Some(super::zeros_par(
                    &[n, r * c, l],
                    dtype,
                    Category::Workspace,
                )?)
            } else {
                None
            };
            let mut lifted = match self.neuron.lift() {
                _ if !stored => None,
                Lift::None => None,
                Lift::Square => Some(super::zeros_par(x.shape(), dtype, Category::Workspace)?),
                Lift::Outer => {
                    let k = op.k();
                    Some(super::zeros_par(
                        &[n, k * k, l],
                        dtype,
                        Category::Workspace,
                    )?)
                }
            };
            let wt = self.weights::<T>()?;
            let mut e1: [T; 0] = [];
            let mut e2: [T; 0] = [];
            let kp = match planes.as_mut() {
                Some(t) => t.data_mut::<T>()?,
                None => &mut e1[..],
            };
            let kl = match lifted.as_mut() {
                Some(t) => t.data_mut::<T>()?,
                None => &mut e2[..],
            };
            qops::forward(&op, n, xs, &wt, y.data_mut::<T>()?, stored, kp, kl);
            saved.planes = planes.map(|t| t.keep_for_backward());
            saved.lifted = lifted.map(|t| t.keep_for_backward());
        }
        saved.x = x.keep_for_backward();
        self.saved = Some(saved);
        Ok(y)
    }

    fn backward_t<T: Float>(&mut self, g: &Tensor) -> Result<Tensor> {
        let sv = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let (n, op) = self.op_for(&sv.x)?;
        let want = self.out_shape(n, &op);
        super::check_grad(&self.name.path, g, &want, sv.x.dtype())?;
        if sv.x.device().is_gpu() {
            return self.backward_gpu(sv, g);
        }
        let mut dx = super::zeros_par(sv.x.shape(), sv.x.dtype(), Category::Workspace)?;
        let xs = sv.x.as_slice::<T>()?;
        let gs = g.as_slice::<T>()?;
        let gr = {
            let wt = self.weights::<T>()?;
            let dxs = dx.data_mut::<T>()?;
            if self.neuron.has_bn() {
                let mean = sv
                    .mean
                    .as_ref()
                    .ok_or_else(|| no_forward(&self.name.path))?;
                let rstd = sv
                    .rstd
                    .as_ref()
                    .ok_or_else(|| no_forward(&self.name.path))?;
                let kept = match (&sv.planes, &sv.ab) {
                    (Some(z), Some(ab)) if sv.stored => {
                        Some((z.as_slice::<T>()?, ab.as_slice::<T>()?))
                    }
                    _ => None,
                };
                qops::bn_backward(
                    &op,
                    n,
                    xs,
                    &wt,
                    gs,
                    kept,
                    mean.as_slice::<T>()?,
                    rstd.as_slice::<T>()?,
                    dxs,
                )
            } else {
                let planes = match &sv.planes {
                    Some(t) => t.as_slice::<T>()?,
                    None => &[],
                };
                let lifted = match &sv.lifted {
                    Some(t) => t.as_slice::<T>()?,
                    None => &[],
                };
                qops::backward(&op, n, xs, &wt, gs, sv.stored, planes, lifted, dxs)
            }
        };
        for (p, gv) in [
            (&mut self.w1, &gr.w1),
            (&mut self.b1, &gr.b1),
            (&mut self.w2, &gr.w2),
            (&mut self.b2, &gr.b2),
            (&mut self.gamma, &gr.gamma),
            (&mut self.beta, &gr.beta),
        ] {
            if let Some(p) = p {
                p.accumulate_grad(gv)?;
            }
        }
        drop(sv);
        Ok(dx)
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
        for (p, k) in [
            &mut self.w1,
            &mut self.b1,
            &mut self.w2,
            &mut self.b2,
            &mut self.gamma,
            &mut self.beta,
        ]
        .into_iter()
        .zip(&keys)
        {
            if let Some(p) = p {
                f(k, p);
            }
        }
    }

    fn slot(&self, s: Slot) -> Option<&Tensor> {
        match s {
            Slot::W1 => self.w1.as_ref().map(|p| &p.value),
            Slot::B1 => self.b1.as_ref().map(|p| &p.value),
            Slot::W2 => self.w2.as_ref().map(|p| &p.value),
            Slot::B2 => self.b2.as_ref().map(|p| &p.value),
            Slot::Gamma => self.gamma.as_ref().map(|p| &p.value),
            Slot::Beta => self.beta.as_ref().map(|p| &p.value),
            Slot::RunMean => self.running_mean.as_ref(),
            Slot::RunVar => self.running_var.as_ref(),
        }
    }

    /// The state-dict entries, in export order (see the module doc for the names).
    fn entries(&self) -> Vec<Entry> {
        let p = if self.dense { "linear" } else { "conv" };
        let g = &self.geom;
        let c = g.c_out;
        let wshape: Vec<usize> = if self.dense {
            vec![c, g.c_in]
        } else {
            vec![c, g.c_in / g.groups, g.kh, g.kw]
        };
        let per_w = c * g.k_group();
        let branch: Vec<String> = match self.neuron {
            NeuronType::T1 | NeuronType::T3 => vec![p.to_string()],
            NeuronType::T2 => vec![],
            NeuronType::T4 => vec![format!("{p}1"), format!("{p}2")],
            NeuronType::QuadraLib | NeuronType::QuadraLibBn => {
                vec![format!("{p}1"), format!("{p}2"), format!("{p}3")]
            }
            NeuronType::Fan => vec![format!("{p}_r"), format!("{p}_g")],
        };
        let mut out = Vec::new();
        let mut push = |key: String, slot: Slot, range: Range<usize>, shape: Vec<usize>| {
            out.push(Entry {
                key: self.name.key(&key),
                slot,
                range,
                shape,
            })
        };
        for (k, b) in branch.iter().enumerate() {
            push(
                format!("{b}.weight"),
                Slot::W1,
                k * per_w..(k + 1) * per_w,
                wshape.clone(),
            );
            if self.b1.is_some() {
                push(format!("{b}.bias"), Slot::B1, k * c..(k + 1) * c, vec![c]);
            }
        }
        let lifted_name = match self.neuron {
            NeuronType::T1 => Some("quad".to_string()),
            NeuronType::T2 => Some(p.to_string()),
            NeuronType::Fan => Some(format!("{p}_b")),
            _ => None,
        };
        if let (Some(ln), Some(w2)) = (lifted_name, &self.w2) {
            let n2 = w2.value.numel();
            push(
                format!("{ln}.weight"),
                Slot::W2,
                0..n2,
                w2.value.shape().to_vec(),
            );
            if self.b2.is_some() {
                push(format!("{ln}.bias"), Slot::B2, 0..c, vec![c]);
            }
        }
        if self.neuron.has_bn() {
            for k in 0..3 {
                let r = k * c..(k + 1) * c;
                for (leaf, slot) in [
                    ("weight", Slot::Gamma),
                    ("bias", Slot::Beta),
                    ("running_mean", Slot::RunMean),
                    ("running_var", Slot::RunVar),
                ] {
                    push(format!("bn{}.{leaf}", k + 1), slot, r.clone(), vec![c]);
                }
            }
        }
        out
    }

    fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        for e in self.entries() {
            let Some(t) = self.slot(e.slot) else { continue };
            if e.range.len() == t.numel() && e.shape == t.shape() {
                out.push((e.key, t.clone()));
                continue;
            }
            // a slice of a stacked tensor, on the layer's device like every state entry
            let v = t.to_f64_vec();
            if let Ok(s) = Tensor::from_f64(&v[e.range.clone()], &e.shape, t.dtype())
                .and_then(|s| s.to_device(t.device()))
            {
                out.push((e.key, s));
            }
        }
    }

    fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        let entries = self.entries();
        // gather every slot's new values first, so a missing entry changes nothing
        let mut bufs: HashMap<u8, Vec<f64>> = HashMap::new();
        for e in &entries {
            let t = take_entry(map, &e.key, &e.shape)?;
            let len = self.slot(e.slot).map_or(0, |t| t.numel());
            let buf = bufs.entry(e.slot as u8).or_insert_with(|| vec![0.0; len]);
            buf[e.range.clone()].copy_from_slice(&t.to_f64_vec());
        }
        if self.neuron.has_bn() {
            for k in 1..=3 {
                map.remove(&self.name.key(&format!("bn{k}.num_batches_tracked")));
            }
        }
        let _s = self.name.scope();
        for slot in [
            Slot::W1,
            Slot::B1,
            Slot::W2,
            Slot::B2,
            Slot::Gamma,
            Slot::Beta,
            Slot::RunMean,
            Slot::RunVar,
        ] {
            let Some(v) = bufs.remove(&(slot as u8)) else {
                continue;
            };
            let Some(old) = self.slot(slot) else { continue };
            let t = Tensor::from_f64(&v, old.shape(), old.dtype())?.to_device(old.device())?;
            t.retag(Category::Parameter);
            let param = match slot {
                Slot::W1 => &mut self.w1,
                Slot::B1 => &mut self.b1,
                Slot::W2 => &mut self.w2,
                Slot::B2 => &mut self.b2,
                Slot::Gamma => &mut self.gamma,
                Slot::Beta => &mut self.beta,
                Slot::RunMean => {
                    self.running_mean = Some(t);
                    continue;
                }
                Slot::RunVar => {
                    self.running_var = Some(t);
                    continue;
                }
            };
            if let Some(p) = param {
                p.value = t;
                p.grad = None;
            }
        }
        Ok(())
    }
}

/// A quadratic 2-d convolution layer (any neuron of the family).
pub struct QuadConv2d(Core);

/// A quadratic fully-connected layer: input (N, in_features), output (N, out_features).
pub struct QuadLinear(Core);

impl QuadConv2d {
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
    pub fn in_features(&self) -> usize {
        self.0.geom.c_in
    }
    pub fn out_features(&self) -> usize {
        self.0.geom.c_out
    }
}

macro_rules! quad_layer {
    ($ty:ident) => {
        impl $ty {
            pub fn mode(&self) -> BackpropMode {
                self.0.mode
            }
            pub fn set_mode(&mut self, mode: BackpropMode) {
                self.0.mode = mode;
            }
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
                with_dtype!(x.dtype(), T => self.0.infer_t::<T>(x))
            }
            fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
                let _s = self.0.name.scope();
                with_dtype!(x.dtype(), T => self.0.forward_t::<T>(x))
            }
            fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
                let _s = self.0.name.scope();
                with_dtype!(g.dtype(), T => self.0.backward_t::<T>(g))
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
