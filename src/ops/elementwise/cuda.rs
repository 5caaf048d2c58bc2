//! Elementwise arithmetic (cuda/elementwise.cu): gradient accumulation, residual sums,
//! scaling. Flat over the elements; shapes must agree.

use crate::device::alloc::Category;
use crate::device::KArg;
use crate::ops::launch::{check_all, gpu_f32, kernel, launch, output, LaunchConfig};
use crate::tensor::Tensor;
use crate::Result;

/// a + b, a new tensor charged to `category`.
pub fn add(a: &Tensor, b: &Tensor, category: Category) -> Result<Tensor> {
    crate::ops::launch::binary(&kernel::ADD_F32, (a, "a"), (b, "b"), category)
}

/// y += alpha · x, in place (y's storage must not be shared).
pub fn axpy(alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    let kern = &kernel::AXPY_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "y", y)?;
    check_all(op, y.device(), &[("x", x)])?;
    crate::ensure_shape!(
        x.numel() == y.numel(),
        op,
        "x has {} elements, y has {}",
        x.numel(),
        y.numel()
    );
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let args = [
        KArg::F32(alpha),
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(n as i64),
    ];
    // SAFETY: (float alpha, const float* x, float* y, long long n); x and y hold n f32
    // elements each (checked), and y's storage is unshared (dev_ptr_mut), so x ≠ y.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}

/// alpha · x, a new tensor charged to `category`.
pub fn scale(alpha: f32, x: &Tensor, category: Category) -> Result<Tensor> {
    let kern = &kernel::SCALE_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    let mut y = output(x.shape(), x.device(), category)?;
    let n = x.numel();
    if n == 0 {
        return Ok(y);
    }
    let args = [
        KArg::F32(alpha),
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(n as i64),
    ];
    // SAFETY: (float alpha, const float* x, float* y, long long n); both hold n f32 elements.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args)? };
    Ok(y)
}

/// Sets every element of `y` to `value`, in place.
pub fn fill(y: &mut Tensor, value: f32) -> Result<()> {
    let kern = &kernel::FILL_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "y", y)?;
    let n = y.numel();
    if n == 0 {
        return Ok(());
    }
    let args = [
        KArg::F32(value),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(n as i64),
    ];
    // SAFETY: (float value, float* y, long long n); y holds n f32 elements.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}

/// `y += Σ_b x[b]` for x (B, n) viewed as B rows of y's n elements, added in row order; y's
/// storage must not be shared.
pub fn add_batch_sum(x: &Tensor, y: &mut Tensor) -> Result<()> {
    let kern = &kernel::ADD_BATCH_SUM_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "y", y)?;
    check_all(op, y.device(), &[("x", x)])?;
    let n = y.numel();
    crate::ensure_shape!(
        n > 0 && x.numel() % n == 0,
        op,
        "x has {} elements, not a whole number of rows of y's {n}",
        x.numel()
    );
    let b = x.numel() / n;
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I64(b as i64),
        KArg::I64(n as i64),
    ];
    // SAFETY: (const float* x, float* y, long long B, long long n); x holds B·n f32 and y n
    // (checked: x.numel() = B·n); y is unshared (dev_ptr_mut), so it is not x.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}
