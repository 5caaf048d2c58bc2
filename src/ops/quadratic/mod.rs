//! The quadratic-neuron family: the tensor-level API of the quadratic layers (forward,
//! backward and inference for both back-propagation modes, quadralib-bn's statistics), and
//! the family's ONE `match` on the device (`backend`). The layers (`nn::quadratic`) hold the
//! parameters and call this API only.
//!
//! # The algorithm (both backends implement exactly these steps)
//!
//! Per-output values are stacks of planes (N, M, L): N samples, M channels, L positions per
//! sample (L = Ho·Wo for conv, 1 for linear, so a linear layer is the L = 1 case of the same
//! layout). C is the layer's output channels, K the rows of a column matrix (C_in/G·kh·kw
//! per group, C_in·kh·kw = F for linear).
//!
//! 1. **First-order stacked map.** The nb first-order branches of a neuron
//!    (`NeuronType::branches`) are the slices of ONE stacked weight W1 (nb·C, ·): one conv
//!    (or linear) map of x gives the branch planes z (N, nb·C, L), branch k in channels
//!    [k·C, (k+1)·C), biases b1 added.
//! 2. **Lift and lifted map** (`NeuronType::lift`). t2 and fan: x ⊙ x, mapped by W2 with the
//!    branch's geometry; t1: the outer products u ⊗ u (N, K², L) of every im2col patch (or
//!    input vector) u, mapped by W_a (C, K²). Either gives q (N, C, L), bias b2 added.
//! 3. **Epilogue per neuron** (`NeuronType::epilogue`, one `Epilogue` per output element):
//!    t1 y = q + z; t2 y = q; t3 y = a²; t4 y = a ⊙ b; quadralib y = a ⊙ b + c;
//!    fan y = r ⊙ g + q.
//! 4. **quadralib-bn** replaces step 3: per stacked channel the batch mean and biased
//!    variance of z over N·L values (training; the running statistics at inference),
//!    rstd = 1/√(var + ε), A = γ_a·ẑ_a + β_a (likewise B, C) with ẑ = (z − mean)·rstd, and
//!    y = A ⊙ B + C. Training also updates the running statistics (momentum 0.1, unbiased
//!    variance). No normalised tensor is made.
//!
//! **What a training forward keeps** (`Saved`, all through `keep_for_backward`):
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
//! The planes backward reads are the R = `NeuronType::planes_read` leading branches of z.
//!
//! **Backward.** (a) The planes backward reads: kept, or recomputed from x by step 1 over
//! the R leading branches only (the same code path as forward, so both modes give
//! bit-identical results); for quadralib-bn z is recomputed and A, B re-formed from it.
//! (b) The branch gradient gz (N, nb·C, L): the closed form of the epilogue (t1: gz = gy;
//! quadralib-bn: a per-stacked-channel reduction giving dγ, dβ, then the BN input gradient).
//! (c) Step 1's backward from gz: dW1, db1 and dx. (d) When there is a lift: the lifted map's
//! backward from gy (dW2, db2, the lifted input's gradient), the lift's adjoint
//! (x ⊙ x: 2·x ⊙ d; u ⊗ u: du_i = Σ_j (d_ij + d_ji)·u_j, then col2im), added into dx.
//!
//! # Files
//!
//! - `neuron.rs`: `NeuronType` (the per-neuron table of the steps), `Lift`, `Epilogue`,
//!   `QuadOp` (the geometry of one call).
//! - `cpu.rs` (+ `cpu_bn.rs` for quadralib-bn): the CPU engine, generic over f32/f64, steps
//!   fused per chunk of images on host slices; `cpu_backend.rs`: its `Backend` impl, the
//!   tensor glue (`Device::Cpu`).
//! - `cuda.rs`: the launch wrappers of `cuda/quadratic.cu` (lifts, epilogues, quadralib-bn);
//!   `cuda_backend.rs`: the CUDA backend's `Backend` impl, the steps as compositions of
//!   launches — `ops::conv::cuda` for step 1 and the lifted map, `cuda.rs` for the rest
//!   (`Device::Cuda(n)` and `Device::Emu`, f32).
//!
//! Both backends keep the same tensors (same sizes, byte for byte) in one `Saved`.

mod cpu;
mod cpu_backend;
mod cpu_bn;
pub mod cuda;
mod cuda_backend;
mod neuron;

use std::ops::Range;

pub use neuron::{dense_geom, Epilogue, Lift, NeuronType, QuadOp};

use crate::ops::param::Param;
use crate::tensor::Tensor;
use crate::{Device, Error, Result};

/// eps of the quadralib-bn BatchNorms (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Momentum of the quadralib-bn BatchNorms' running statistics (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// The tensors of a quadratic layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The stacked first-order weight (nb·C, C_in/G, kh, kw) or (nb·C, F).
    W1,
    /// The stacked first-order bias (nb·C).
    B1,
    /// The lifted weight: (C, C_in/G, kh, kw) / (C, F) on x ⊙ x, (C, K, K) / (C, F, F) for t1.
    W2,
    /// The lifted bias (C): t2's b, fan's c.
    B2,
    /// quadralib-bn's γ and β over the 3C stacked channels.
    Gamma,
    Beta,
    /// quadralib-bn's running mean and variance (3C), buffers.
    RunMean,
    RunVar,
}

impl Slot {
    pub const ALL: [Slot; 8] = [
        Slot::W1,
        Slot::B1,
        Slot::W2,
        Slot::B2,
        Slot::Gamma,
        Slot::Beta,
        Slot::RunMean,
        Slot::RunVar,
    ];
}

/// A layer's parameters and buffers, on one device (`None` where its neuron has none).
#[derive(Debug, Default)]
pub struct QuadParams {
    pub w1: Option<Param>,
    pub b1: Option<Param>,
    pub w2: Option<Param>,
    pub b2: Option<Param>,
    pub gamma: Option<Param>,
    pub beta: Option<Param>,
    pub running_mean: Option<Tensor>,
    pub running_var: Option<Tensor>,
}

impl QuadParams {
    /// The parameter in `slot` (`None` for the running statistics, which are buffers).
    pub fn param_mut(&mut self, slot: Slot) -> Option<&mut Param> {
        match slot {
            Slot::W1 => self.w1.as_mut(),
            Slot::B1 => self.b1.as_mut(),
            Slot::W2 => self.w2.as_mut(),
            Slot::B2 => self.b2.as_mut(),
            Slot::Gamma => self.gamma.as_mut(),
            Slot::Beta => self.beta.as_mut(),
            Slot::RunMean | Slot::RunVar => None,
        }
    }

    /// The tensor in `slot`: a parameter's value or a buffer.
    pub fn value(&self, slot: Slot) -> Option<&Tensor> {
        let p = match slot {
            Slot::W1 => &self.w1,
            Slot::B1 => &self.b1,
            Slot::W2 => &self.w2,
            Slot::B2 => &self.b2,
            Slot::Gamma => &self.gamma,
            Slot::Beta => &self.beta,
            Slot::RunMean => return self.running_mean.as_ref(),
            Slot::RunVar => return self.running_var.as_ref(),
        };
        p.as_ref().map(|p| &p.value)
    }

    /// Replace the tensor in `slot` if the layer has one (a parameter's gradient is
    /// dropped).
    pub fn set(&mut self, slot: Slot, t: Tensor) {
        match slot {
            Slot::RunMean => self.running_mean = Some(t),
            Slot::RunVar => self.running_var = Some(t),
            _ => {
                if let Some(p) = self.param_mut(slot) {
                    p.value = t;
                    p.grad = None;
                }
            }
        }
    }

    /// The tensor in `slot`, or an error naming `what` is missing.
    fn need(&self, slot: Slot, what: &str) -> Result<&Tensor> {
        self.value(slot)
            .ok_or_else(|| Error::state(format!("quadratic layer without its {what}")))
    }

    /// The running statistics (mean, var), or an error.
    fn running(&self) -> Result<(&Tensor, &Tensor)> {
        match (&self.running_mean, &self.running_var) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::state(
                "quadralib-bn layer without running statistics",
            )),
        }
    }
}

/// One application of a layer: its computation for this input size, the batch size, and
/// the layer's path (for messages).
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub op: QuadOp,
    pub n: usize,
    pub path: &'a str,
}

/// What a training forward kept for backward (see the module doc's table), on the input's
/// device; dropping it releases it.
pub struct Saved {
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

impl Saved {
    /// The input the forward saw.
    pub fn input(&self) -> &Tensor {
        &self.x
    }

    /// A kept tensor, or the "no forward" error of the layer at `path`.
    fn kept<'a>(t: &'a Option<Tensor>, path: &str) -> Result<&'a Tensor> {
        t.as_ref().ok_or_else(|| Error::no_forward(path))
    }
}

/// One parameter's gradient from a backward, on the parameter's device.
enum Grad {
    /// CPU engine: host values (plain memory until added into the parameter's gradient).
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// CUDA backend: a device tensor.
    Device(Tensor),
}

impl Grad {
    fn add_to(self, p: &mut Param) -> Result<()> {
        match self {
            Grad::F32(v) => p.accumulate_grad(&v),
            Grad::F64(v) => p.accumulate_grad(&v),
            Grad::Device(t) => p.accumulate_grad_tensor(t),
        }
    }
}

/// The gradients of one backward, by parameter slot.
type Grads = Vec<(Slot, Grad)>;

/// Steps 1–3 of a non-BN neuron: y, and (`keep`) what a stored forward keeps.
struct Plain {
    y: Tensor,
    planes: Option<Tensor>,
    lifted: Option<Tensor>,
}

/// Step 4's training forward: y, z, A‖B (`keep`) and the batch statistics.
struct BnTrain {
    y: Tensor,
    z: Tensor,
    ab: Option<Tensor>,
    mean: Tensor,
    rstd: Tensor,
}

/// One implementation of the steps. Every method gets tensors on its device.
trait Backend {
    /// Steps 1–3 of a non-BN neuron; with `keep` also the planes and lifted input a stored
    /// forward keeps.
    fn forward(&self, call: &Call, p: &QuadParams, x: &Tensor, keep: bool) -> Result<Plain>;
    /// Steps 1 and 4 in training (quadralib-bn): y with the batch statistics, A‖B when
    /// `keep`; updates `p`'s running statistics.
    fn bn_forward(
        &self,
        call: &Call,
        p: &mut QuadParams,
        x: &Tensor,
        keep: bool,
    ) -> Result<BnTrain>;
    /// Steps 1 and 4 at inference: normalised with the running statistics.
    fn bn_infer(&self, call: &Call, p: &QuadParams, x: &Tensor) -> Result<Tensor>;
    /// Backward (a)–(d) of a non-BN neuron: dx and the parameter gradients.
    fn backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, Grads)>;
    /// Backward of quadralib-bn: dx and the gradients of W1, b1, γ, β.
    fn bn_backward(
        &self,
        call: &Call,
        p: &QuadParams,
        sv: &Saved,
        g: &Tensor,
    ) -> Result<(Tensor, Grads)>;
    /// Elements `range` of `t` (flat) as a new workspace tensor of `shape` on `t`'s device.
    fn copy_range(&self, t: &Tensor, range: Range<usize>, shape: &[usize]) -> Result<Tensor>;
}

/// The family's one `match` on the device: the CPU engine, or the CUDA backend (the same
/// code for `Cuda(n)` and the emulator).
fn backend(device: Device) -> &'static dyn Backend {
    match device {
        Device::Cpu => &cpu_backend::Cpu,
        Device::Cuda(_) | Device::Emu => &cuda_backend::Cuda,
    }
}

/// Eval-mode forward: nothing kept; quadralib-bn normalises with the running statistics.
pub fn infer(call: &Call, p: &QuadParams, x: &Tensor) -> Result<Tensor> {
    let be = backend(x.device());
    if call.op.neuron.has_bn() {
        be.bn_infer(call, p, x)
    } else {
        Ok(be.forward(call, p, x, false)?.y)
    }
}

/// Training forward: y, and what backward needs in the mode `stored` says (the module
/// doc's table); quadralib-bn also updates the running statistics in `p`.
pub fn forward(
    call: &Call,
    p: &mut QuadParams,
    x: &Tensor,
    stored: bool,
) -> Result<(Tensor, Saved)> {
    let be = backend(x.device());
    let mut saved = Saved {
        x: x.clone(),
        stored,
        planes: None,
        lifted: None,
        ab: None,
        mean: None,
        rstd: None,
    };
    let y = if call.op.neuron.has_bn() {
        let f = be.bn_forward(call, p, x, stored)?;
        saved.mean = Some(f.mean.keep_for_backward());
        saved.rstd = Some(f.rstd.keep_for_backward());
        if stored {
            saved.planes = Some(f.z.keep_for_backward());
            saved.ab = f.ab.map(|t| t.keep_for_backward());
        }
        f.y
    } else {
        let f = be.forward(call, p, x, stored)?;
        saved.planes = f.planes.map(|t| t.keep_for_backward());
        saved.lifted = f.lifted.map(|t| t.keep_for_backward());
        f.y
    };
    saved.x = x.keep_for_backward();
    Ok((y, saved))
}

/// Backward from what `forward` kept (`saved`, released at the end) and gy (the caller
/// checked its shape): adds the parameter gradients into `p` and returns dx.
pub fn backward(call: &Call, p: &mut QuadParams, saved: Saved, g: &Tensor) -> Result<Tensor> {
    let be = backend(saved.x.device());
    let (dx, grads) = if call.op.neuron.has_bn() {
        be.bn_backward(call, p, &saved, g)?
    } else {
        be.backward(call, p, &saved, g)?
    };
    for (slot, gr) in grads {
        if let Some(param) = p.param_mut(slot) {
            gr.add_to(param)?;
        }
    }
    drop(saved);
    Ok(dx)
}

/// Elements `range` of `t` (flat, row-major; a contiguous row range of a stacked tensor) as
/// a new tensor of `shape` on `t`'s device, charged to workspace: on a GPU one
/// device-to-device copy (no host round trip, no stream drain).
pub fn copy_range(t: &Tensor, range: Range<usize>, shape: &[usize]) -> Result<Tensor> {
    let want: usize = shape.iter().product();
    crate::ensure_shape!(
        range.end <= t.numel() && range.len() == want,
        "quadratic state-dict slice",
        "elements {range:?} of {:?} as shape {shape:?}",
        t.shape()
    );
    backend(t.device()).copy_range(t, range, shape)
}
