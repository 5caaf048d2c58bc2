//! 2-d pooling on the CUDA backend (cuda/pool.cu): max pooling with argmax indices kept on
//! the device, average pooling (count_include_pad = True), global average pooling. The
//! geometry is `ops::pool::PoolGeom`, validated by `ops::pool::check_input` as on the CPU.
//! Backward kernels are deterministic gathers (no atomics).

use crate::device::alloc::Category;
use crate::device::{GpuBuf, KArg};
use crate::ops::launch::{expect_numel, gpu_f32, int, kernel, launch, output, LaunchConfig};
use crate::ops::pool::{self as ops, PoolGeom};
use crate::tensor::Tensor;
use crate::{Device, Result};

/// Argmax indices of a max pooling on the device: one `int` per output element (N, C, Ho,
/// Wo), the flat position h·W + w of the maximum within its input plane (PyTorch's
/// `indices`). Only the kernels of this module read or write them.
pub struct DeviceIndices {
    buf: GpuBuf,
    len: usize,
}

impl DeviceIndices {
    fn new(device: Device, len: usize, category: Category) -> Result<DeviceIndices> {
        Ok(DeviceIndices {
            buf: GpuBuf::new(device, len * 4, category)?,
            len,
        })
    }
    /// The number of indices (output elements).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn device(&self) -> Device {
        self.buf.device()
    }
    /// A copy on the host (for tests and inspection).
    pub fn to_vec(&self) -> Result<Vec<u32>> {
        let mut bytes = vec![0u8; self.len * 4];
        self.buf.read(&mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// Input dims (N, C, H, W) and output (Ho, Wo) of a pooling layer.
pub struct PoolDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// The `int` parameters (P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw) of the pooling kernels.
fn geom_args(op: &str, g: &PoolGeom, d: &PoolDims) -> Result<Vec<KArg>> {
    let vals = [
        ("N·C", d.n * d.c),
        ("H", d.h),
        ("W", d.w),
        ("Ho", d.ho),
        ("Wo", d.wo),
        ("kh", g.kh),
        ("kw", g.kw),
        ("stride", g.stride.0),
        ("stride", g.stride.1),
        ("padding", g.padding.0),
        ("padding", g.padding.1),
    ];
    // positions h·W + w and element counts per plane must fit an int as well
    int(op, "H·W", d.h * d.w)?;
    int(op, "Ho·Wo", d.ho * d.wo)?;
    vals.iter()
        .map(|&(what, v)| int(op, what, v).map(KArg::I32))
        .collect()
}

/// Checks x as `ops::pool::check_input` does (geometry valid, a non-empty (N, C, H, W),
/// window fits) and that it is an f32 tensor of a GPU-path device.
fn check_x(op: &str, g: &PoolGeom, x: &Tensor, layer: &str) -> Result<PoolDims> {
    gpu_f32(op, "x", x)?;
    let (n, c, h, w, ho, wo) = ops::check_input(g, x, layer)?;
    Ok(PoolDims { n, c, h, w, ho, wo })
}

/// Checks an output gradient (N, C, Ho, Wo) against the dims of the forward input.
fn check_g(op: &str, g: &PoolGeom, gy: &Tensor, dims: [usize; 4], layer: &str) -> Result<PoolDims> {
    gpu_f32(op, "output gradient", gy)?;
    g.validate(layer)?;
    let [n, c, h, w] = dims;
    let (ho, wo) = g.out_hw(h, w, layer)?;
    expect_numel(op, "output gradient", gy, n * c * ho * wo, "N, C, Ho, Wo")?;
    Ok(PoolDims { n, c, h, w, ho, wo })
}

/// Max pooling forward: y (N, C, Ho, Wo) charged to `category` and the argmax indices
/// charged to `idx_category` (saved-for-backward in training, workspace in inference).
pub fn maxpool2d_forward(
    g: &PoolGeom,
    x: &Tensor,
    layer: &str,
    category: Category,
    idx_category: Category,
) -> Result<(Tensor, DeviceIndices)> {
    let kern = &kernel::MAXPOOL2D_FORWARD_F32;

    let op = kern.name;
    let d = check_x(op, g, x, layer)?;
    let rt = gpu_f32(op, "x", x)?;
    let total = d.n * d.c * d.ho * d.wo;
    let mut y = output(&[d.n, d.c, d.ho, d.wo], x.device(), category)?;
    let idx = DeviceIndices::new(x.device(), total, idx_category)?;
    let mut args = vec![
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::Ptr(idx.buf.ptr()),
    ];
    args.extend(geom_args(op, g, &d)?);
    // SAFETY: (x, y, idx, P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw) as in pool.cu; x holds
    // P·H·W f32 (shape checked (N, C, H, W), dtype f32) and is read only inside each plane
    // (windows clamped to [0, H)×[0, W), non-empty because check_input validated padding ≤
    // kernel/2); y and idx are fresh with P·Ho·Wo elements each.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok((y, idx))
}

/// Max pooling backward: dx (N, C, H, W) from the output gradient and the forward's
/// indices; `dims` is the forward input's (N, C, H, W).
pub fn maxpool2d_backward(
    g: &PoolGeom,
    gy: &Tensor,
    idx: &DeviceIndices,
    dims: [usize; 4],
    layer: &str,
) -> Result<Tensor> {
    let kern = &kernel::MAXPOOL2D_BACKWARD_F32;

    let op = kern.name;
    let d = check_g(op, g, gy, dims, layer)?;
    let rt = gpu_f32(op, "output gradient", gy)?;
    crate::ensure_shape!(
        idx.len() == gy.numel() && idx.device() == gy.device(),
        op,
        "{} indices on {} for a gradient of {} elements on {}",
        idx.len(),
        idx.device(),
        gy.numel(),
        gy.device()
    );
    let mut dx = output(&dims, gy.device(), Category::Workspace)?;
    let total = d.n * d.c * d.h * d.w;
    let mut args = vec![
        KArg::Ptr(gy.dev_ptr()?),
        KArg::Ptr(idx.buf.ptr()),
        KArg::Ptr(dx.dev_ptr_mut()?),
    ];
    args.extend(geom_args(op, g, &d)?);
    // SAFETY: (g, idx, dx, P, H, W, Ho, Wo, ...) as in pool.cu; g and idx hold P·Ho·Wo
    // elements (checked), read only at outputs (oy, ox) < (Ho, Wo) of the element's plane;
    // dx is fresh with P·H·W f32; the indices are only compared, never dereferenced.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(dx)
}

fn avg_inv(g: &PoolGeom) -> f32 {
    (1.0 / (g.kh * g.kw) as f64) as f32
}

/// Average pooling forward (count_include_pad = True): y (N, C, Ho, Wo).
pub fn avgpool2d_forward(
    g: &PoolGeom,
    x: &Tensor,
    layer: &str,
    category: Category,
) -> Result<Tensor> {
    let kern = &kernel::AVGPOOL2D_FORWARD_F32;

    let op = kern.name;
    let d = check_x(op, g, x, layer)?;
    let rt = gpu_f32(op, "x", x)?;
    let total = d.n * d.c * d.ho * d.wo;
    let mut y = output(&[d.n, d.c, d.ho, d.wo], x.device(), category)?;
    let mut args = vec![KArg::Ptr(x.dev_ptr()?), KArg::Ptr(y.dev_ptr_mut()?)];
    args.extend(geom_args(op, g, &d)?);
    args.push(KArg::F32(avg_inv(g)));
    // SAFETY: (x, y, P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, inv) as in pool.cu; x holds
    // P·H·W f32 (checked) and is read only inside each plane (clamped windows); y is fresh
    // with P·Ho·Wo.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(y)
}

/// Average pooling backward: dx (N, C, H, W); `dims` is the forward input's.
pub fn avgpool2d_backward(
    g: &PoolGeom,
    gy: &Tensor,
    dims: [usize; 4],
    layer: &str,
) -> Result<Tensor> {
    let kern = &kernel::AVGPOOL2D_BACKWARD_F32;

    let op = kern.name;
    let d = check_g(op, g, gy, dims, layer)?;
    let rt = gpu_f32(op, "output gradient", gy)?;
    let mut dx = output(&dims, gy.device(), Category::Workspace)?;
    let total = d.n * d.c * d.h * d.w;
    let mut args = vec![KArg::Ptr(gy.dev_ptr()?), KArg::Ptr(dx.dev_ptr_mut()?)];
    args.extend(geom_args(op, g, &d)?);
    args.push(KArg::F32(avg_inv(g)));
    // SAFETY: (g, dx, P, H, W, Ho, Wo, ..., inv) as in pool.cu; g holds P·Ho·Wo f32
    // (checked), read only at outputs (oy, ox) < (Ho, Wo) of the element's plane; dx is
    // fresh with P·H·W.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(dx)
}

/// Global average pooling forward: x (N, C, H, W) → (N, C), the mean of each plane.
pub fn global_avg_forward(x: &Tensor, layer: &str, category: Category) -> Result<Tensor> {
    let kern = &kernel::GLOBAL_AVG_FORWARD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    let (n, c, h, w) = x.dims4(layer)?;
    let (p, l) = (n * c, h * w);
    crate::ensure_shape!(p > 0 && l > 0, layer, "input {:?} is empty", x.shape());
    let mut y = output(&[n, c], x.device(), category)?;
    let args = [
        KArg::Ptr(x.dev_ptr()?),
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::I32(int(op, "N·C", p)?),
        KArg::I32(int(op, "H·W", l)?),
        KArg::F32((1.0 / l as f64) as f32),
    ];
    // SAFETY: (const float* x, float* y, int P, int L, float inv); x holds P·L f32 (its
    // shape is (N, C, H, W), dtype checked), y is fresh with P.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(p), &args)? };
    Ok(y)
}

/// Global average pooling backward: g (N, C) → dx (N, C, H, W) = g/(H·W) on every position.
pub fn global_avg_backward(gy: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
    let kern = &kernel::GLOBAL_AVG_BACKWARD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "output gradient", gy)?;
    let [n, c, h, w] = dims;
    let (p, l) = (n * c, h * w);
    expect_numel(op, "output gradient", gy, p, "N, C")?;
    let mut dx = output(&dims, gy.device(), Category::Workspace)?;
    if p * l == 0 {
        return Ok(dx);
    }
    let args = [
        KArg::Ptr(gy.dev_ptr()?),
        KArg::Ptr(dx.dev_ptr_mut()?),
        KArg::I32(int(op, "N·C", p)?),
        KArg::I32(int(op, "H·W", l)?),
        KArg::F32((1.0 / l as f64) as f32),
    ];
    // SAFETY: (const float* g, float* dx, int P, int L, float inv); g holds P f32
    // (checked), dx is fresh with P·L.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(p * l), &args)? };
    Ok(dx)
}
