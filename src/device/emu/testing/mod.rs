//! Slice-level drivers of single kernels, for the tests (tests/ops/emu_kernels.rs): host slices
//! in and out, every length checked before the launch, run on the emulator directly (no
//! pool, no tracker). Not part of the runtime: the ops launch through `Runtime`
//! (crate::device::Runtime) and device memory. `selftest` drives the emulator's own
//! self-test kernels (`cuda/emu/selftest.cu`).
//!
//! On the emulator device memory is host memory, so a kernel may be handed pointers into
//! host slices; the `unsafe` here is the promise that each kernel stays inside them.

use std::ffi::c_void;

use crate::device::LaunchConfig;
use crate::{Error, Result};

pub mod selftest;

/// One kernel parameter, held while the launch runs; `kernelParams[i]` points at it.
enum Val {
    Ptr(*mut c_void),
    I32(i32),
    F32(f32),
}

struct Args(Vec<Val>);

impl Args {
    fn new() -> Self {
        Args(Vec::with_capacity(16))
    }
    fn input<T>(mut self, s: &[T]) -> Self {
        self.0.push(Val::Ptr(s.as_ptr() as *mut c_void));
        self
    }
    fn output<T>(mut self, s: &mut [T]) -> Self {
        self.0.push(Val::Ptr(s.as_mut_ptr() as *mut c_void));
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.push(Val::I32(v));
        self
    }
    fn f32(mut self, v: f32) -> Self {
        self.0.push(Val::F32(v));
        self
    }
    /// The `kernelParams` array: one pointer per parameter, pointing at its value.
    fn params(&mut self) -> Vec<*mut c_void> {
        self.0
            .iter_mut()
            .map(|v| match v {
                Val::Ptr(p) => p as *mut *mut c_void as *mut c_void,
                Val::I32(i) => i as *mut i32 as *mut c_void,
                Val::F32(f) => f as *mut f32 as *mut c_void,
            })
            .collect()
    }
}

/// Runs `name` with `args` under `cfg`.
///
/// # Safety
/// The parameters must match the kernel's signature in type and order (the runtime checks
/// only their number), and every pointer must be valid for every access the kernel makes
/// for this launch configuration.
unsafe fn launch(name: &str, cfg: LaunchConfig, mut args: Args) -> Result<()> {
    let mut params = args.params();
    // SAFETY: guaranteed by this function's contract; `params` points into `args`, both
    // alive until the call returns.
    unsafe { super::ffi::launch_params(name, cfg, &mut params) }
}

/// Launches a kernel that takes no parameters (any other kernel is refused by its
/// parameter count before it runs). For launch-configuration checks.
pub fn launch_no_args(name: &str, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: with zero parameters the runtime runs only kernels that take none (it checks
    // the count before running anything), so no pointer is passed or dereferenced.
    unsafe { launch(name, cfg, Args::new()) }
}

// ---------------------------------------------------------------------------------------
// Shape helpers
// ---------------------------------------------------------------------------------------

fn dims_i32(op: &str, (n, c, l): (usize, usize, usize)) -> Result<(i32, i32, i32)> {
    let conv = |v: usize, what: &str| {
        i32::try_from(v).map_err(|_| {
            Error::shape(
                op,
                format!("{what} = {v} is larger than a kernel's int parameter"),
            )
        })
    };
    Ok((conv(n, "N")?, conv(c, "C")?, conv(l, "L")?))
}

fn product(op: &str, dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::shape(op, format!("{dims:?} overflows usize")))
    })
}

fn expect_len(op: &str, what: &str, got: usize, want: usize, shape: &str) -> Result<()> {
    crate::ensure_shape!(
        got == want,
        op,
        "{what} has {got} elements, expected {want} ({shape})"
    );
    Ok(())
}

fn reduce_block(op: &str, block: u32) -> Result<()> {
    crate::ensure_valid!(
        (32..=1024).contains(&block) && block % 32 == 0,
        "block size",
        "{op}: {block} threads; reductions need a multiple of 32 between 32 and 1024"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Quadratic-neuron epilogues (cuda/quadratic.cu)
// ---------------------------------------------------------------------------------------

/// The elementwise epilogues of `cuda/quadratic.cu` on stacked branch planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// y = a ⊙ b + c (3 branches)
    Quadralib,
    /// y = a ⊙ b (2 branches)
    T4,
    /// y = a² (1 branch)
    T3,
}

impl Epilogue {
    /// Number of stacked branch planes the epilogue reads.
    pub fn branches(self) -> usize {
        match self {
            Epilogue::Quadralib => 3,
            Epilogue::T4 => 2,
            Epilogue::T3 => 1,
        }
    }
    fn kernels(self) -> (&'static str, &'static str) {
        match self {
            Epilogue::Quadralib => ("quadralib_fwd_f32", "quadralib_bwd_f32"),
            Epilogue::T4 => ("t4_fwd_f32", "t4_bwd_f32"),
            Epilogue::T3 => ("t3_fwd_f32", "t3_bwd_f32"),
        }
    }
}

/// Forward epilogue: z (N, nb·C, L) → y (N, C, L), nb = `kind.branches()`.
pub fn epilogue_forward_f32(
    kind: Epilogue,
    z: &[f32],
    dims: (usize, usize, usize),
    y: &mut [f32],
) -> Result<()> {
    let op = kind.kernels().0;
    let (n, c, l) = dims;
    let nb = kind.branches();
    let total = product(op, &[n, c, l])?;
    expect_len(op, "z", z.len(), product(op, &[n, nb, c, l])?, "N, nb·C, L")?;
    expect_len(op, "y", y.len(), total, "N, C, L")?;
    let (ni, ci, li) = dims_i32(op, dims)?;
    if total == 0 {
        return Ok(());
    }
    let args = Args::new().input(z).output(y).i32(ni).i32(ci).i32(li);
    // SAFETY: (const float* z, float* y, int N, int C, int L); the kernel reads z and writes
    // y only at indices < N·nb·C·L and < N·C·L, the lengths checked above.
    unsafe { launch(op, LaunchConfig::elementwise(total), args) }
}

/// Backward epilogue: output gradient gy (N, C, L) → stacked branch gradient gz
/// (N, nb·C, L), given the branch planes z of the forward.
pub fn epilogue_backward_f32(
    kind: Epilogue,
    z: &[f32],
    gy: &[f32],
    dims: (usize, usize, usize),
    gz: &mut [f32],
) -> Result<()> {
    let op = kind.kernels().1;
    let (n, c, l) = dims;
    let nb = kind.branches();
    let total = product(op, &[n, c, l])?;
    let stacked = product(op, &[n, nb, c, l])?;
    expect_len(op, "z", z.len(), stacked, "N, nb·C, L")?;
    expect_len(op, "gy", gy.len(), total, "N, C, L")?;
    expect_len(op, "gz", gz.len(), stacked, "N, nb·C, L")?;
    let (ni, ci, li) = dims_i32(op, dims)?;
    if total == 0 {
        return Ok(());
    }
    let args = Args::new()
        .input(z)
        .input(gy)
        .output(gz)
        .i32(ni)
        .i32(ci)
        .i32(li);
    // SAFETY: (const float* z, const float* gy, float* gz, int N, int C, int L); indices stay
    // below N·nb·C·L for z and gz and below N·C·L for gy, the lengths checked above.
    unsafe { launch(op, LaunchConfig::elementwise(total), args) }
}

/// Per-branch-channel batch-norm parameters of `quadralib-bn`, each of length 3·C
/// (branch k of channel c at k·C + c).
#[derive(Clone, Copy, Debug)]
pub struct BnParams<'a> {
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

impl BnParams<'_> {
    fn check(&self, op: &str, c: usize) -> Result<()> {
        let want = product(op, &[3, c])?;
        for (what, s) in [
            ("mean", self.mean),
            ("rstd", self.rstd),
            ("gamma", self.gamma),
            ("beta", self.beta),
        ] {
            expect_len(op, what, s.len(), want, "3·C")?;
        }
        Ok(())
    }
}

/// `quadralib-bn` forward: y = u_a ⊙ u_b + u_c with u_k = γ_k·(z_k − μ_k)·rstd_k + β_k;
/// z (N, 3C, L) → y (N, C, L).
pub fn quadralib_bn_forward_f32(
    z: &[f32],
    dims: (usize, usize, usize),
    p: &BnParams<'_>,
    y: &mut [f32],
) -> Result<()> {
    let op = "quadralib_bn_fwd_f32";
    let (n, c, l) = dims;
    let total = product(op, &[n, c, l])?;
    expect_len(op, "z", z.len(), product(op, &[n, 3, c, l])?, "N, 3C, L")?;
    expect_len(op, "y", y.len(), total, "N, C, L")?;
    p.check(op, c)?;
    let (ni, ci, li) = dims_i32(op, dims)?;
    if total == 0 {
        return Ok(());
    }
    let args = Args::new()
        .input(z)
        .input(p.mean)
        .input(p.rstd)
        .input(p.gamma)
        .input(p.beta)
        .output(y)
        .i32(ni)
        .i32(ci)
        .i32(li);
    // SAFETY: (z, mean, rstd, gamma, beta, y, N, C, L) as declared in quadratic.cu; z is read
    // below N·3C·L, the parameters below 3C, y written below N·C·L — all checked above.
    unsafe { launch(op, LaunchConfig::elementwise(total), args) }
}

/// `quadralib-bn` backward: gy (N, C, L) → gz (N, 3C, L), dγ and dβ (3C each).
///
/// `training`: the statistics were the batch's own (the gradient flows through mean and
/// variance); otherwise they were running statistics (constants). Two launches: a
/// per-branch-channel reduction for dγ = Σ du·ẑ and dβ = Σ du, then the elementwise
/// gradient. `block` is the reduction's block size (a multiple of 32, ≤ 1024).
#[allow(clippy::too_many_arguments)]
pub fn quadralib_bn_backward_f32(
    z: &[f32],
    gy: &[f32],
    dims: (usize, usize, usize),
    p: &BnParams<'_>,
    training: bool,
    block: u32,
    gz: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let op = "quadralib_bn_bwd_f32";
    let (n, c, l) = dims;
    let total = product(op, &[n, c, l])?;
    let stacked = product(op, &[n, 3, c, l])?;
    expect_len(op, "z", z.len(), stacked, "N, 3C, L")?;
    expect_len(op, "gy", gy.len(), total, "N, C, L")?;
    expect_len(op, "gz", gz.len(), stacked, "N, 3C, L")?;
    p.check(op, c)?;
    expect_len(op, "dgamma", dgamma.len(), 3 * c, "3·C")?;
    expect_len(op, "dbeta", dbeta.len(), 3 * c, "3·C")?;
    reduce_block(op, block)?;
    let (ni, ci, li) = dims_i32(op, dims)?;
    if c == 0 {
        return Ok(());
    }
    crate::ensure_shape!(
        n * l > 0,
        op,
        "N·L = 0: no values to take batch statistics over"
    );
    let channels = i32::try_from(3 * c)
        .map_err(|_| Error::shape(op, format!("3·C = {} does not fit a grid", 3 * c)))?;
    let args = Args::new()
        .input(z)
        .input(gy)
        .input(p.mean)
        .input(p.rstd)
        .input(p.gamma)
        .input(p.beta)
        .output(dgamma)
        .output(dbeta)
        .i32(ni)
        .i32(ci)
        .i32(li);
    // SAFETY: (z, gy, mean, rstd, gamma, beta, dgamma, dbeta, N, C, L) as declared in
    // quadratic.cu; one block per branch-channel kc < 3C, reading z below N·3C·L, gy below
    // N·C·L, the 3C-long parameters and writing dgamma/dbeta[kc] — all checked above.
    unsafe {
        launch(
            "quadralib_bn_bwd_reduce_f32",
            LaunchConfig::new(channels as u32, block, 0),
            args,
        )?
    };
    let args = Args::new()
        .input(z)
        .input(gy)
        .input(p.mean)
        .input(p.rstd)
        .input(p.gamma)
        .input(p.beta)
        .input(dgamma)
        .input(dbeta)
        .output(gz)
        .i32(ni)
        .i32(ci)
        .i32(li)
        .i32(training as i32);
    // SAFETY: (z, gy, mean, rstd, gamma, beta, dgamma, dbeta, gz, N, C, L, training) as
    // declared in quadratic.cu; elementwise over N·C·L outputs, writing gz below N·3C·L and
    // reading the 3C-long vectors — all checked above.
    unsafe { launch(op, LaunchConfig::elementwise(total), args) }
}

// ---------------------------------------------------------------------------------------
// Reductions (cuda/reduce.cu)
// ---------------------------------------------------------------------------------------

fn channel_grid(op: &str, c: usize) -> Result<u32> {
    u32::try_from(c)
        .ok()
        .filter(|&g| g <= 0x7fff_ffff)
        .ok_or_else(|| Error::shape(op, format!("C = {c} does not fit a grid")))
}

/// Per-channel Σx and Σx² of x (N, C, L) with `block` threads per channel (a multiple of
/// 32, ≤ 1024); accumulated in f64 in a fixed order.
pub fn channel_sum_sumsq_f32(
    x: &[f32],
    dims: (usize, usize, usize),
    block: u32,
    sum: &mut [f32],
    sumsq: &mut [f32],
) -> Result<()> {
    let op = "channel_sum_sumsq_f32";
    let (n, c, l) = dims;
    expect_len(op, "x", x.len(), product(op, &[n, c, l])?, "N, C, L")?;
    expect_len(op, "sum", sum.len(), c, "C")?;
    expect_len(op, "sumsq", sumsq.len(), c, "C")?;
    reduce_block(op, block)?;
    let (ni, ci, li) = dims_i32(op, dims)?;
    if c == 0 {
        return Ok(());
    }
    let grid = channel_grid(op, c)?;
    let args = Args::new()
        .input(x)
        .output(sum)
        .output(sumsq)
        .i32(ni)
        .i32(ci)
        .i32(li);
    // SAFETY: (const float* x, float* sum, float* sumsq, int N, int C, int L); reads x below
    // N·C·L and writes sum/sumsq[c] for c < C — the lengths checked above.
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args) }
}

/// Batch statistics per channel of x (N, C, L) over N·L values (biased variance, two
/// passes, f64 accumulation): mean, var and rstd = 1/√(var + eps), each of length C.
#[allow(clippy::too_many_arguments)]
pub fn bn_stats_f32(
    x: &[f32],
    dims: (usize, usize, usize),
    eps: f32,
    block: u32,
    mean: &mut [f32],
    var: &mut [f32],
    rstd: &mut [f32],
) -> Result<()> {
    let op = "bn_stats_f32";
    let (n, c, l) = dims;
    expect_len(op, "x", x.len(), product(op, &[n, c, l])?, "N, C, L")?;
    for (what, s) in [("mean", &*mean), ("var", &*var), ("rstd", &*rstd)] {
        expect_len(op, what, s.len(), c, "C")?;
    }
    reduce_block(op, block)?;
    crate::ensure_valid!(
        eps.is_finite() && eps >= 0.0,
        "eps",
        "{op}: {eps} (must be finite and ≥ 0)"
    );
    let (ni, ci, li) = dims_i32(op, dims)?;
    if c == 0 {
        return Ok(());
    }
    crate::ensure_shape!(n * l > 0, op, "N·L = 0: no values to take statistics over");
    let grid = channel_grid(op, c)?;
    let args = Args::new()
        .input(x)
        .output(mean)
        .output(var)
        .output(rstd)
        .i32(ni)
        .i32(ci)
        .i32(li)
        .f32(eps);
    // SAFETY: (x, mean, var, rstd, N, C, L, eps) as declared in reduce.cu; reads x below
    // N·C·L and writes the three C-long outputs at c < C — checked above.
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args) }
}
