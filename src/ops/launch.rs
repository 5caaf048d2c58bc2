//! What the op families' `cuda.rs` files share: argument checks, the one `unsafe` launch
//! through a device's [`Runtime`], GEMM, and the elementwise-kernel launcher. The families'
//! launch wrappers run on `Device::Cuda(n)` and on `Device::Emu`, which executes the very
//! same kernels on the CPU — so every launch is tested on machines without a GPU.
//!
//! Every launch wrapper checks
//! the devices, dtypes and element counts of its tensors before it launches; each launch's
//! `// SAFETY:` line says which of those checks keeps the kernel's accesses in bounds.
//! The backend computes in f32 (gradient checks in f64 run on the CPU engine).

use crate::device::alloc::Category;
pub(crate) use crate::device::emu::LaunchConfig;
use crate::device::gpu::{runtime, DevPtr, Gemm, KArg, Runtime};
use crate::device::Device;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Block size of the reduction kernels (one block per channel).
pub const REDUCE_BLOCK: u32 = 256;

/// The runtime of `t`'s device, which must be a GPU-path device, with `t` in f32.
pub(crate) fn gpu_f32(op: &str, what: &str, t: &Tensor) -> Result<&'static dyn Runtime> {
    if !t.device().is_gpu() {
        return Err(Error::dtype(
            op,
            format!(
                "{what} lives on {}, expected a CUDA-backend device (cuda:N or emu)",
                t.device()
            ),
        ));
    }
    if t.dtype() != DType::F32 {
        return Err(Error::dtype(
            op,
            format!("{what} is {}; the CUDA backend computes in f32", t.dtype()),
        ));
    }
    runtime(t.device())
}

/// Error unless every tensor lives on `device` in f32 (names the first that does not).
pub(crate) fn check_all(op: &str, device: Device, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (what, t) in ts {
        gpu_f32(op, what, t)?;
        if t.device() != device {
            return Err(Error::dtype(
                op,
                format!(
                    "{what} lives on {}, the other operands on {device}",
                    t.device()
                ),
            ));
        }
    }
    Ok(())
}

/// Error unless `t` has `want` elements (names it and the expected layout).
pub(crate) fn expect_numel(
    op: &str,
    what: &str,
    t: &Tensor,
    want: usize,
    layout: &str,
) -> Result<()> {
    crate::ensure_shape!(
        t.numel() == want,
        op,
        "{what} has shape {:?} ({} elements), expected {want} elements ({layout})",
        t.shape(),
        t.numel()
    );
    Ok(())
}

/// `v` as a kernel's `int` parameter.
pub(crate) fn int(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::shape(
            op,
            format!("{what} = {v} is larger than a kernel's int parameter"),
        )
    })
}

/// A fresh f32 tensor on `device` that the caller's kernel writes completely.
pub(crate) fn output(shape: &[usize], device: Device, category: Category) -> Result<Tensor> {
    Tensor::uninit_gpu(shape, DType::F32, device, category)
}

/// Grid for a per-channel reduction over `c` channels (the kernels grid-stride over
/// channels beyond it).
pub(crate) fn channel_grid(c: usize) -> u32 {
    c.clamp(1, 65_535) as u32
}

/// Launches `kernel` on `rt`.
///
/// # Safety
/// As `Runtime::launch`: `args` match the kernel's signature and every pointer is valid for
/// every access the kernel makes under `cfg`.
pub(crate) unsafe fn launch(
    rt: &dyn Runtime,
    kernel: &str,
    cfg: LaunchConfig,
    args: &[KArg],
) -> Result<()> {
    // SAFETY: forwarded from this function's contract.
    unsafe { rt.launch(kernel, cfg, args) }
}

/// f(x) elementwise, a new tensor charged to `category`, for a kernel with the signature
/// `(const float* x, float* y, long long n)` (a 1-D grid-stride loop over n).
pub(crate) fn unary(kernel: &str, x: &Tensor, category: Category) -> Result<Tensor> {
    let rt = gpu_f32(kernel, "x", x)?;
    let mut y = output(x.shape(), x.device(), category)?;
    let n = x.numel();
    if n == 0 {
        return Ok(y);
    }
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(n as i64),
    ];
    // SAFETY: (const float* x, float* y, long long n) by this function's contract; x holds n
    // f32 (its numel, dtype checked) and y was just allocated with x's shape.
    unsafe { launch(rt, kernel, LaunchConfig::elementwise(n), &args)? };
    Ok(y)
}

/// Runs a GEMM after checking its extents against the tensors behind A, B and C.
///
/// `a`, `b`, `c` are the tensors whose storage `g.a`, `g.b`, `g.c` point into; C must be a
/// different storage from A and B.
pub(crate) fn gemm(op: &str, g: &Gemm, a: &Tensor, b: &Tensor, c: &mut Tensor) -> Result<()> {
    let rt = gpu_f32(op, "GEMM C", c)?;
    let (ea, eb, ec) = g.extents();
    let off = |p: DevPtr, t: &Tensor| -> Result<Option<usize>> {
        let base = t.dev_ptr()?;
        Ok(p.checked_sub(base).map(|d| (d / 4) as usize))
    };
    let fits = |p: DevPtr, t: &Tensor, e: usize| -> Result<bool> {
        Ok(e == 0 || off(p, t)?.is_some_and(|o| o + e <= t.numel()))
    };
    let distinct = !c.same_storage(a) && !c.same_storage(b);
    crate::ensure_shape!(
        distinct && fits(g.a, a, ea)? && fits(g.b, b, eb)? && fits(g.c, c, ec)?,
        op,
        "GEMM operands out of range or overlapping (a bug in the op, not in the input)"
    );
    c.dev_ptr_mut()?;
    // SAFETY: the extents of A, B and C were just checked to lie inside the tensors' storage,
    // and C's storage is distinct from A's and B's and not shared (dev_ptr_mut).
    unsafe { rt.sgemm(g) }
}
