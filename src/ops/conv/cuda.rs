//! Convolution and linear maps on the CUDA backend: im2col/col2im and bias kernels of
//! `cuda/conv.cu`, GEMMs through the runtime (cuBLAS on a GPU).
//!
//! A weight may stack `nb` branches (the quadratic layers' first-order maps): conv weight
//! (nb·C_out, C_in/G, kh, kw), linear weight (nb·O, I); the output then holds nb·C_out
//! channels, branch b's channel o at b·C_out + o — the layout of the CPU engine
//! (src/ops/conv/cpu.rs), so both engines share the epilogues' indexing.

use super::{ConvGeom, ConvGrads};
use crate::device::alloc::Category;
use crate::device::{Gemm, KArg};
use crate::ops::launch::{
    channel_grid, check_all, expect_numel, gemm, gpu_f32, int, kernel, launch, output,
    LaunchConfig, REDUCE_BLOCK,
};
use crate::tensor::Tensor;
use crate::Result;

/// Most elements of the column buffer of one chunk of images (64 MiB of f32): a batch is
/// processed a chunk of images at a time so the workspace stays bounded.
const MAX_COLS: usize = 1 << 24;

/// Conv dims as the `int` parameters of im2col/col2im: (C, H, W, Ho, Wo, kh, kw, sh, sw,
/// ph, pw, dh, dw).
fn geom_args(
    op: &str,
    g: &ConvGeom,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
) -> Result<Vec<KArg>> {
    let vals = [
        ("C_in", g.c_in),
        ("H", h),
        ("W", w),
        ("Ho", ho),
        ("Wo", wo),
        ("kh", g.kh),
        ("kw", g.kw),
        ("stride", g.stride.0),
        ("stride", g.stride.1),
        ("padding", g.padding.0),
        ("padding", g.padding.1),
        ("dilation", g.dilation.0),
        ("dilation", g.dilation.1),
    ];
    vals.iter()
        .map(|&(what, v)| int(op, what, v).map(KArg::I32))
        .collect()
}

/// The (weight row offset, row count) blocks one GEMM covers for group `gi`: the whole
/// stack when G = 1, else one block per branch (as `ops::conv`).
fn row_blocks(g: &ConvGeom, nb: usize, gi: usize) -> Vec<(usize, usize)> {
    if g.groups == 1 {
        return vec![(0, nb * g.c_out)];
    }
    let cog = g.c_out / g.groups;
    (0..nb).map(|b| (b * g.c_out + gi * cog, cog)).collect()
}

struct Dims {
    n: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

fn check_conv(
    op: &str,
    g: &ConvGeom,
    nb: usize,
    x: &Tensor,
    w: &Tensor,
    layer: &str,
) -> Result<Dims> {
    gpu_f32(op, "x", x)?;
    check_all(op, x.device(), &[("weight", w)])?;
    let (n, c, h, wd) = x.dims4(layer)?;
    crate::ensure_shape!(
        c == g.c_in,
        layer,
        "input has {c} channels, the layer expects {}",
        g.c_in
    );
    let (ho, wo) = g.out_hw(h, wd, layer)?;
    expect_numel(
        op,
        "weight",
        w,
        nb * g.c_out * g.k_group(),
        "nb·C_out, C_in/G, kh, kw",
    )?;
    Ok(Dims {
        n,
        h,
        w: wd,
        ho,
        wo,
    })
}

/// Images per chunk so that a chunk's column buffer stays under `MAX_COLS` elements.
fn chunk(n: usize, per_image: usize) -> usize {
    (MAX_COLS / per_image.max(1)).clamp(1, n.max(1))
}

/// Column buffer of images [i0, i0 + nc) of x: (nc, C_in·kh·kw, L).
fn im2col(g: &ConvGeom, x: &Tensor, d: &Dims, i0: usize, nc: usize) -> Result<Tensor> {
    let kern = &kernel::IM2COL_F32;

    let op = kern.name;
    let l = d.ho * d.wo;
    let kt = g.k_total();
    let mut cols = output(&[nc, kt, l], x.device(), Category::Workspace)?;
    let total = nc * kt * l;
    if total == 0 {
        return Ok(cols);
    }
    let rt = gpu_f32(op, "x", x)?;
    let img = g.c_in * d.h * d.w;
    let mut args = vec![
        KArg::Ptr(x.dev_ptr()? + (i0 * img * 4) as u64),
        KArg::Ptr(cols.dev_ptr_mut()?),
        KArg::I32(int(op, "N", nc)?),
    ];
    args.extend(geom_args(op, g, d.h, d.w, d.ho, d.wo)?);
    // SAFETY: (x, cols, N, C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw) as in conv.cu;
    // the kernel reads x at images [i0, i0 + nc) (i0 + nc ≤ N, x checked (N, C_in, H, W))
    // only inside each image's bounds, and writes cols below nc·C_in·kh·kw·L, its size.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args)? };
    Ok(cols)
}

/// The column matrices of every image of x (N, C_in, H, W): (N, C_in·kh·kw, Ho·Wo), one
/// buffer (not chunked). For layers that need the patches themselves (quadratic `t1`).
pub(crate) fn im2col_all(g: &ConvGeom, x: &Tensor, layer: &str) -> Result<Tensor> {
    let op = "im2col_all";
    gpu_f32(op, "x", x)?;
    let (n, c, h, wd) = x.dims4(layer)?;
    crate::ensure_shape!(
        c == g.c_in,
        layer,
        "input has {c} channels, the layer expects {}",
        g.c_in
    );
    let (ho, wo) = g.out_hw(h, wd, layer)?;
    let d = Dims {
        n,
        h,
        w: wd,
        ho,
        wo,
    };
    im2col(g, x, &d, 0, n)
}

/// dx (N, C_in, H, W) = col2im(dcols (N, C_in·kh·kw, Ho·Wo)), a new tensor shaped like
/// `x_shape` (the adjoint of `im2col_all`).
pub(crate) fn col2im_all(
    g: &ConvGeom,
    dcols: &Tensor,
    x_shape: &[usize],
    layer: &str,
) -> Result<Tensor> {
    let op = "col2im_all";
    gpu_f32(op, "dcols", dcols)?;
    crate::ensure_shape!(
        x_shape.len() == 4 && x_shape[1] == g.c_in,
        layer,
        "input shape {x_shape:?}"
    );
    let (n, h, wd) = (x_shape[0], x_shape[2], x_shape[3]);
    let (ho, wo) = g.out_hw(h, wd, layer)?;
    let d = Dims {
        n,
        h,
        w: wd,
        ho,
        wo,
    };
    let mut dx = output(x_shape, dcols.device(), Category::Workspace)?;
    col2im(g, dcols, &d, 0, n, &mut dx)?;
    Ok(dx)
}

/// Convolution forward: x (N, C_in, H, W), weight (nb·C_out, C_in/G, kh, kw), bias
/// (nb·C_out) → (N, nb·C_out, Ho, Wo), charged to `category`.
pub fn conv2d_forward(
    g: &ConvGeom,
    nb: usize,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    layer: &str,
    category: Category,
) -> Result<Tensor> {
    let op = "conv2d_forward";
    let d = check_conv(op, g, nb, x, w, layer)?;
    let m = nb * g.c_out;
    let l = d.ho * d.wo;
    let (kt, kg) = (g.k_total(), g.k_group());
    let mut out = output(&[d.n, m, d.ho, d.wo], x.device(), category)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let nc_max = chunk(d.n, kt * l);
    let mut i0 = 0;
    while i0 < d.n {
        let nc = nc_max.min(d.n - i0);
        let cols = im2col(g, x, &d, i0, nc)?;
        for gi in 0..g.groups {
            for (r0, rows) in row_blocks(g, nb, gi) {
                let gm = Gemm {
                    stride_b: kt * l,
                    stride_c: m * l,
                    batch: nc,
                    ..Gemm::dense(
                        rows,
                        l,
                        kg,
                        w.dev_ptr()? + (r0 * kg * 4) as u64,
                        cols.dev_ptr()? + (gi * kg * l * 4) as u64,
                        out.dev_ptr()? + ((i0 * m + r0) * l * 4) as u64,
                    )
                };
                gemm(op, &gm, w, &cols, &mut out)?;
            }
        }
        i0 += nc;
    }
    if let Some(b) = bias {
        add_bias(&mut out, b, d.n, m, l)?;
    }
    Ok(out)
}

/// y (N, M, L) += bias (M) per channel.
pub(crate) fn add_bias(y: &mut Tensor, bias: &Tensor, n: usize, m: usize, l: usize) -> Result<()> {
    let kern = &kernel::BIAS_ADD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "y", y)?;
    check_all(op, y.device(), &[("bias", bias)])?;
    expect_numel(op, "bias", bias, m, "M")?;
    expect_numel(op, "y", y, n * m * l, "N, M, L")?;
    let total = n * m * l;
    if total == 0 {
        return Ok(());
    }
    let args = [
        KArg::Ptr(y.dev_ptr_mut()?),
        KArg::Ptr(bias.dev_ptr()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "M", m)?),
        KArg::I32(int(op, "L", l)?),
    ];
    // SAFETY: (float* y, const float* bias, int N, int M, int L); y holds N·M·L and bias M
    // f32 elements (checked); y is unshared (dev_ptr_mut) so it is not bias.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args) }
}

/// db (M) = Σ_{n,l} dy (N, M, L), a new tensor.
pub(crate) fn bias_grad(dy: &Tensor, n: usize, m: usize, l: usize) -> Result<Tensor> {
    let kern = &kernel::BIAS_GRAD_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "dy", dy)?;
    expect_numel(op, "dy", dy, n * m * l, "N, M, L")?;
    let mut db = Tensor::full_in(
        0.0,
        &[m],
        crate::DType::F32,
        dy.device(),
        Category::Workspace,
    )?;
    if m == 0 {
        return Ok(db);
    }
    let args = [
        KArg::Ptr(dy.dev_ptr()?),
        KArg::Ptr(db.dev_ptr_mut()?),
        KArg::I32(int(op, "N", n)?),
        KArg::I32(int(op, "M", m)?),
        KArg::I32(int(op, "L", l)?),
    ];
    // SAFETY: (const float* dy, float* db, int N, int M, int L); dy holds N·M·L f32 (checked),
    // db was just allocated with M; block REDUCE_BLOCK is a multiple of 32 ≤ 1024 as the
    // reduction requires.
    unsafe {
        launch(
            rt,
            kern,
            LaunchConfig::new(channel_grid(m), REDUCE_BLOCK, 0),
            &args,
        )?
    };
    Ok(db)
}

/// Convolution backward: from x, the weight and dout (N, nb·C_out, Ho, Wo).
pub fn conv2d_backward(
    g: &ConvGeom,
    nb: usize,
    x: &Tensor,
    w: &Tensor,
    dout: &Tensor,
    want_dx: bool,
    layer: &str,
) -> Result<ConvGrads> {
    let op = "conv2d_backward";
    let d = check_conv(op, g, nb, x, w, layer)?;
    check_all(op, x.device(), &[("output gradient", dout)])?;
    let m = nb * g.c_out;
    let l = d.ho * d.wo;
    let (kt, kg) = (g.k_total(), g.k_group());
    expect_numel(
        op,
        "output gradient",
        dout,
        d.n * m * l,
        "N, nb·C_out, Ho, Wo",
    )?;
    let dev = x.device();
    let mut dw = Tensor::full_in(0.0, w.shape(), crate::DType::F32, dev, Category::Workspace)?;
    let mut dx = if want_dx {
        Some(output(x.shape(), dev, Category::Workspace)?)
    } else {
        None
    };
    // a chunk's columns and its per-image weight-gradient partials both stay bounded
    let nc_max = chunk(d.n, kt * l).min(chunk(d.n, m * kg));
    let mut i0 = 0;
    while i0 < d.n && l > 0 {
        let nc = nc_max.min(d.n - i0);
        let cols = im2col(g, x, &d, i0, nc)?;
        // dW (M, Kg) += Σ_i dout_i (M, L) · cols_iᵀ: one strided-batched GEMM writes each
        // image's product into a (nc, M, Kg) workspace, then one kernel adds the nc partials
        // into dW in image order (a few launches per chunk instead of one GEMM per image,
        // and the same sum whatever the GPU's scheduling).
        let mut partial = output(&[nc, m * kg], dev, Category::Workspace)?;
        for gi in 0..g.groups {
            for (r0, rows) in row_blocks(g, nb, gi) {
                let gm = Gemm {
                    stride_a: m * l,
                    ldb: l,
                    trans_b: true,
                    stride_b: kt * l,
                    stride_c: m * kg,
                    batch: nc,
                    ..Gemm::dense(
                        rows,
                        kg,
                        l,
                        dout.dev_ptr()? + ((i0 * m + r0) * l * 4) as u64,
                        cols.dev_ptr()? + (gi * kg * l * 4) as u64,
                        partial.dev_ptr()? + (r0 * kg * 4) as u64,
                    )
                };
                gemm(op, &gm, dout, &cols, &mut partial)?;
            }
        }
        crate::ops::elementwise::cuda::add_batch_sum(&partial, &mut dw)?;
        if let Some(dx) = dx.as_mut() {
            // dcols_i (Kg, L) per group = Σ_blocks W_blockᵀ (Kg, rows) · dout_i,block (rows, L)
            let mut dcols = output(&[nc, kt, l], dev, Category::Workspace)?;
            for gi in 0..g.groups {
                for (bi, (r0, rows)) in row_blocks(g, nb, gi).into_iter().enumerate() {
                    let gm = Gemm {
                        lda: kg,
                        trans_a: true,
                        stride_b: m * l,
                        stride_c: kt * l,
                        batch: nc,
                        accumulate: bi > 0,
                        ..Gemm::dense(
                            kg,
                            l,
                            rows,
                            w.dev_ptr()? + (r0 * kg * 4) as u64,
                            dout.dev_ptr()? + ((i0 * m + r0) * l * 4) as u64,
                            dcols.dev_ptr()? + (gi * kg * l * 4) as u64,
                        )
                    };
                    gemm(op, &gm, w, dout, &mut dcols)?;
                }
            }
            col2im(g, &dcols, &d, i0, nc, dx)?;
        }
        i0 += nc;
    }
    if let (Some(dx), true) = (dx.as_mut(), l == 0) {
        crate::ops::elementwise::cuda::fill(dx, 0.0)?;
    }
    let db = bias_grad(dout, d.n, m, l)?;
    Ok(ConvGrads { dx, dw, db })
}

/// dx images [i0, i0 + nc) = col2im(dcols (nc, C_in·kh·kw, L)), overwritten.
fn col2im(
    g: &ConvGeom,
    dcols: &Tensor,
    d: &Dims,
    i0: usize,
    nc: usize,
    dx: &mut Tensor,
) -> Result<()> {
    let kern = &kernel::COL2IM_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "dx", dx)?;
    let img = g.c_in * d.h * d.w;
    expect_numel(op, "dx", dx, d.n * img, "N, C_in, H, W")?;
    expect_numel(
        op,
        "dcols",
        dcols,
        nc * g.k_total() * d.ho * d.wo,
        "nc, K, L",
    )?;
    crate::ensure_shape!(i0 + nc <= d.n, op, "images {i0}..{} of {}", i0 + nc, d.n);
    let total = nc * img;
    if total == 0 {
        return Ok(());
    }
    let mut args = vec![
        KArg::Ptr(dcols.dev_ptr()?),
        KArg::Ptr(dx.dev_ptr_mut()? + (i0 * img * 4) as u64),
        KArg::I32(int(op, "N", nc)?),
    ];
    args.extend(geom_args(op, g, d.h, d.w, d.ho, d.wo)?);
    // SAFETY: (dcols, dx, N, C, H, W, Ho, Wo, kh, kw, ...) as in conv.cu; reads dcols below
    // nc·K·L (checked) and writes dx images [i0, i0 + nc), inside its N·C_in·H·W (checked).
    unsafe { launch(rt, kern, LaunchConfig::elementwise(total), &args) }
}
