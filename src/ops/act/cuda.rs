//! Activations on the CUDA backend (cuda/act.cu): ReLU forward/backward and dropout with a
//! counter-based mask. Flat over the elements; shapes must agree.

use crate::device::alloc::Category;
use crate::device::KArg;
use crate::ops::launch::{gpu_f32, kernel, launch, output, LaunchConfig};
use crate::tensor::Tensor;
use crate::Result;

/// relu(x), a new tensor charged to `category`.
pub fn relu_forward(x: &Tensor, category: Category) -> Result<Tensor> {
    crate::ops::launch::unary(&kernel::RELU_FORWARD_F32, x, category)
}

/// y = relu(y), in place (y's storage must not be shared).
pub fn relu_inplace(y: &mut Tensor) -> Result<()> {
    let kern = &kernel::RELU_FORWARD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "y", y)?;
    let n = y.numel();
    if n == 0 {
        return Ok(());
    }
    let p = y.dev_ptr_mut()?;
    let args = [KArg::Ptr(p), KArg::Ptr(p), KArg::I64(n as i64)];
    // SAFETY: (const float* x, float* y, long long n) with x = y, which the kernel allows
    // (each thread reads and writes only its own element); y holds n f32 and is unshared.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}

/// dx = g where y > 0, else 0; a new tensor charged to `category`.
pub fn relu_backward(g: &Tensor, y: &Tensor, category: Category) -> Result<Tensor> {
    crate::ops::launch::binary(
        &kernel::RELU_BACKWARD_F32,
        (g, "gradient"),
        (y, "saved output"),
        category,
    )
}

/// The kernel's keep threshold for drop probability p: round(p·2³²), so an element is kept
/// with probability 1 − threshold/2³² (within 2⁻³³ of 1 − p).
pub fn dropout_threshold(p: f64) -> i64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as i64
}

/// Inverted dropout: x·scale where the mask of (`seed`, `stream`) keeps an element, else 0;
/// a new tensor charged to `category`. The mask is a pure function of (seed, stream, p,
/// element index) — see `dropout_f32` in cuda/act.cu — so calling this on the output
/// gradient with the same arguments is the backward. p must be in [0, 1).
pub fn dropout(x: &Tensor, p: f64, seed: u64, stream: u64, category: Category) -> Result<Tensor> {
    let kern = &kernel::DROPOUT_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    crate::ensure_valid!(
        (0.0..1.0).contains(&p),
        "dropout probability",
        "p must be in [0, 1), got {p}"
    );
    let mut y = output(x.shape(), x.device(), category)?;
    let n = x.numel();
    if n == 0 {
        return Ok(y);
    }
    let scale = 1.0 / (1.0 - p);
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(n as i64),
        KArg::I64(seed as i64),
        KArg::I64(stream as i64),
        KArg::I64(dropout_threshold(p)),
        KArg::F32(scale as f32),
    ];
    // SAFETY: (const float* x, float* y, long long n, long long seed, long long stream,
    // long long threshold, float scale); x holds n f32 (numel, dtype checked) and y is
    // fresh with x's shape.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args)? };
    Ok(y)
}
