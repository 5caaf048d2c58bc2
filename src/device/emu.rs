//! The CUDA kernel emulator: runs the kernels of `cuda/*.cu` on the CPU.
//!
//! `build.rs` compiles every `cuda/*.cu` with the host C++ compiler against `cuda/emu/` (a
//! header that implements the CUDA execution model: indices, `__syncthreads`, static and
//! dynamic shared memory, warp shuffles and votes, atomics, half/bf16, math intrinsics) into
//! a static library linked into this crate. A launch runs deterministically: blocks one
//! after another on the calling thread, one fiber per GPU thread; a barrier divergence or
//! other deadlock is an error, never a hang. See `cuda/emu/README.md`.
//!
//! This is the ONE module of the crate with `unsafe` kernel launches: the C entry point
//! `quadra_emu_launch` takes its parameters like `cuLaunchKernel`'s `kernelParams`, so the
//! safe functions below validate every length before a launch and pass only pointers into
//! buffers that the kernel's documented index range stays inside.
//!
//! The same module exposes what the real CUDA path (cudarc) needs from the build: the
//! fatbin nvcc produced, when it did ([`fatbin`]), and the kernel names it holds
//! ([`KERNELS`]).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use crate::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/kernel_names.rs"));

#[cfg(quadra_fatbin)]
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

#[cfg(quadra_fatbin)]
static FATBIN: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("QUADRA_FATBIN")));

/// The fatbin nvcc built from `cuda/*.cu` (SASS for each arch of `CUDA_ARCHS` plus PTX),
/// 16-byte aligned, for `cuModuleLoadData`; `None` when this build had no nvcc.
pub fn fatbin() -> Option<&'static [u8]> {
    #[cfg(quadra_fatbin)]
    {
        Some(&FATBIN.0)
    }
    #[cfg(not(quadra_fatbin))]
    {
        None
    }
}

/// Grid or block extent, as CUDA's `dim3`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub const fn new(x: u32, y: u32, z: u32) -> Dim3 {
        Dim3 { x, y, z }
    }
    pub const fn x(x: u32) -> Dim3 {
        Dim3 { x, y: 1, z: 1 }
    }
}

impl From<u32> for Dim3 {
    fn from(x: u32) -> Dim3 {
        Dim3::x(x)
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: Dim3,
    pub block: Dim3,
    pub shared_bytes: u32,
}

impl LaunchConfig {
    pub fn new(grid: impl Into<Dim3>, block: impl Into<Dim3>, shared_bytes: u32) -> Self {
        LaunchConfig {
            grid: grid.into(),
            block: block.into(),
            shared_bytes,
        }
    }

    /// A 1-D launch for a grid-stride kernel over `n` elements (n > 0).
    pub fn elementwise(n: usize) -> Self {
        let blocks = n
            .div_ceil(ELEMENTWISE_BLOCK as usize)
            .clamp(1, MAX_ELEMENTWISE_GRID);
        LaunchConfig::new(blocks as u32, ELEMENTWISE_BLOCK, 0)
    }
}

/// Block size of the elementwise (grid-stride) kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;
const MAX_ELEMENTWISE_GRID: usize = 4096;

mod ffi {
    use super::*;

    extern "C" {
        pub fn quadra_emu_launch(
            name: *const c_char,
            grid: Dim3,
            block: Dim3,
            shared_bytes: c_uint,
            args: *mut *mut c_void,
            nargs: c_uint,
        ) -> c_int;
        pub fn quadra_emu_last_error() -> *const c_char;
        pub fn quadra_emu_kernel_count() -> c_uint;
        pub fn quadra_emu_kernel_name(i: c_uint) -> *const c_char;
        pub fn quadra_emu_kernel_arity(name: *const c_char) -> c_int;
        pub fn quadra_emu_asan_enabled() -> c_int;
    }
}

// Error codes of cuda/emu/quadra_emu.h.
const OK: c_int = 0;
const ERR_UNKNOWN_KERNEL: c_int = 1;
const ERR_CONFIG: c_int = 2;
const ERR_ARGS: c_int = 3;
const ERR_DEADLOCK: c_int = 4;
const ERR_TRAP: c_int = 5;
const ERR_RESOURCES: c_int = 6;

/// Names of every kernel the emulator can run (`cuda/*.cu` and its self-test kernels).
pub fn kernel_names() -> Vec<String> {
    // SAFETY: kernel_count/kernel_name only read the static registry table; a non-null name
    // points at a NUL-terminated string literal that lives for the whole program.
    unsafe {
        (0..ffi::quadra_emu_kernel_count())
            .filter_map(|i| {
                let p = ffi::quadra_emu_kernel_name(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// The number of parameters of a registered kernel, `None` when there is no such kernel.
pub fn kernel_arity(name: &str) -> Option<usize> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call; the
    // function only compares it with the registry's names.
    let a = unsafe { ffi::quadra_emu_kernel_arity(c.as_ptr()) };
    usize::try_from(a).ok()
}

/// Whether the emulator library was built with AddressSanitizer (`QUADRA_EMU_SANITIZE=address`).
pub fn asan_enabled() -> bool {
    // SAFETY: returns a compile-time constant; no memory is touched.
    unsafe { ffi::quadra_emu_asan_enabled() != 0 }
}

fn last_error() -> String {
    // SAFETY: the runtime returns a pointer to this thread's NUL-terminated message buffer,
    // valid until the next launch on this thread; it is copied out at once.
    unsafe {
        let p = ffi::quadra_emu_last_error();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

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

/// Runs `name` with a ready `kernelParams` array (one pointer per parameter, pointing at
/// its value), as the GPU runtime's `launch` does for `Device::Emu`.
///
/// # Safety
/// As [`launch`]: the values must match the kernel's signature and every device pointer
/// among them must be valid for every access the kernel makes under `cfg`.
pub(crate) unsafe fn launch_params(
    name: &str,
    cfg: LaunchConfig,
    params: &mut [*mut c_void],
) -> Result<()> {
    let cname = CString::new(name)
        .map_err(|_| Error::invalid("kernel", format!("`{name}`: name contains a NUL byte")))?;
    let pp = if params.is_empty() {
        std::ptr::null_mut()
    } else {
        params.as_mut_ptr()
    };
    // SAFETY: guaranteed by this function's contract; the runtime keeps no pointer past
    // the call.
    let rc = unsafe {
        ffi::quadra_emu_launch(
            cname.as_ptr(),
            cfg.grid,
            cfg.block,
            cfg.shared_bytes,
            pp,
            params.len() as c_uint,
        )
    };
    check(rc)
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
    unsafe { launch_params(name, cfg, &mut params) }
}

fn check(rc: c_int) -> Result<()> {
    match rc {
        OK => Ok(()),
        ERR_UNKNOWN_KERNEL => Err(Error::invalid("kernel", last_error())),
        ERR_CONFIG => Err(Error::invalid("launch configuration", last_error())),
        ERR_ARGS => Err(Error::invalid("kernel arguments", last_error())),
        ERR_DEADLOCK | ERR_TRAP => Err(Error::State(format!("emulator: {}", last_error()))),
        ERR_RESOURCES => Err(Error::Unavailable(format!("emulator: {}", last_error()))),
        other => Err(Error::State(format!(
            "emulator: unknown status {other}: {}",
            last_error()
        ))),
    }
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

// ---------------------------------------------------------------------------------------
// Self-tests of the emulator (cuda/emu/selftest.cu)
// ---------------------------------------------------------------------------------------

/// Safe drivers for the emulator's self-test kernels (`cuda/emu/selftest.cu`).
pub mod selftest {
    use super::*;

    fn len_i32(op: &str, n: usize) -> Result<i32> {
        i32::try_from(n).map_err(|_| Error::shape(op, format!("{n} elements is too many")))
    }

    fn grid_for(op: &str, n: usize, block: u32) -> Result<u32> {
        crate::ensure_valid!(block > 0, "block size", "{op}: 0 threads");
        u32::try_from(n.div_ceil(block as usize).max(1))
            .map_err(|_| Error::shape(op, format!("{n} elements need too many blocks")))
    }

    /// Reverses each `block`-long chunk of x (the last one shorter) through dynamic shared
    /// memory; also returns, per block, the number of positive elements
    /// (`__syncthreads_count`).
    pub fn block_reverse_f32(x: &[f32], block: u32) -> Result<(Vec<f32>, Vec<i32>)> {
        let op = "emu_test_block_reverse_f32";
        let n = len_i32(op, x.len())?;
        let grid = grid_for(op, x.len(), block)?;
        let shared = block
            .checked_mul(4)
            .ok_or_else(|| Error::invalid("block size", format!("{op}: {block}")))?;
        let mut y = vec![0f32; x.len()];
        let mut counts = vec![0i32; grid as usize];
        let args = Args::new()
            .input(x)
            .output(&mut y)
            .output(&mut counts)
            .i32(n);
        // SAFETY: (const float* x, float* y, int* counts, int n); thread i touches x[i], y[i]
        // only for i < n, counts[blockIdx.x] for blockIdx.x < grid, and tile[t] for t <
        // blockDim.x within the block·4 bytes of dynamic shared memory.
        unsafe { launch(op, LaunchConfig::new(grid, block, shared), args)? };
        Ok((y, counts))
    }

    /// Per-element results of `emu_test_warp_ops_i32` (see cuda/emu/selftest.cu).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct WarpOps {
        pub bcast: Vec<i32>,
        pub seg: Vec<i32>,
        pub down: Vec<i32>,
        pub xor_sum: Vec<i32>,
        pub scan: Vec<i32>,
        pub ballot: Vec<u32>,
        pub votes: Vec<i32>,
    }

    /// Warp shuffles (`__shfl_sync` plain and width 16, `_down`, `_xor`, `_up`) and votes
    /// (`__ballot_sync`, `__any_sync`, `__all_sync`); `block` a multiple of 32.
    pub fn warp_ops_i32(x: &[i32], block: u32) -> Result<WarpOps> {
        let op = "emu_test_warp_ops_i32";
        reduce_block(op, block)?;
        let n = len_i32(op, x.len())?;
        let grid = grid_for(op, x.len(), block)?;
        let len = x.len();
        let mut o = WarpOps {
            bcast: vec![0; len],
            seg: vec![0; len],
            down: vec![0; len],
            xor_sum: vec![0; len],
            scan: vec![0; len],
            ballot: vec![0; len],
            votes: vec![0; len],
        };
        let args = Args::new()
            .input(x)
            .output(&mut o.bcast)
            .output(&mut o.seg)
            .output(&mut o.down)
            .output(&mut o.xor_sum)
            .output(&mut o.scan)
            .output(&mut o.ballot)
            .output(&mut o.votes)
            .i32(n);
        // SAFETY: (x, bcast, seg, down, xor_sum, scan, ballot, votes, n); thread i reads x[i]
        // and writes the seven outputs at i only for i < n, all n long.
        unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
        Ok(o)
    }

    /// Results of `emu_test_atomics_i32`.
    #[derive(Clone, Debug, Default, PartialEq)]
    pub struct Atomics {
        pub fsum: f32,
        pub isum: i32,
        pub imax: i32,
        pub imin: i32,
        pub cas_max: i32,
        pub hist: [u32; 16],
    }

    /// `atomicAdd` (float, int, unsigned), `atomicMax`, `atomicMin` and an `atomicCAS` loop
    /// over x.
    pub fn atomics_i32(x: &[i32], block: u32) -> Result<Atomics> {
        let op = "emu_test_atomics_i32";
        let n = len_i32(op, x.len())?;
        let grid = grid_for(op, x.len(), block)?;
        let mut fsum = [0f32; 1];
        let mut ints = [0, i32::MIN, i32::MAX, i32::MIN];
        let mut hist = [0u32; 16];
        let args = Args::new()
            .input(x)
            .output(&mut fsum)
            .output(&mut ints)
            .output(&mut hist)
            .i32(n);
        // SAFETY: (x, out_f, out_i, hist, n); reads x[i] for i < n, updates out_f[0],
        // out_i[0..4] and hist[v & 15] — buffers of 1, 4 and 16 elements.
        unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
        Ok(Atomics {
            fsum: fsum[0],
            isum: ints[0],
            imax: ints[1],
            imin: ints[2],
            cas_max: ints[3],
            hist,
        })
    }

    /// `__float2half`, `__float2bfloat16` bits and the half round trip of each x.
    pub fn half_f32(x: &[f32]) -> Result<(Vec<u16>, Vec<u16>, Vec<f32>)> {
        let op = "emu_test_half_f32";
        let n = len_i32(op, x.len())?;
        let mut h = vec![0u16; x.len()];
        let mut b = vec![0u16; x.len()];
        let mut back = vec![0f32; x.len()];
        if x.is_empty() {
            return Ok((h, b, back));
        }
        let args = Args::new()
            .input(x)
            .output(&mut h)
            .output(&mut b)
            .output(&mut back)
            .i32(n);
        // SAFETY: (x, h, b, back, n), grid-stride over i < n; all four buffers are n long.
        unsafe { launch(op, LaunchConfig::elementwise(x.len()), args)? };
        Ok((h, b, back))
    }

    /// A kernel whose odd threads return while the even ones wait at `__syncthreads`:
    /// must fail with a barrier-divergence error.
    pub fn divergent_barrier(block: u32) -> Result<()> {
        let mut out = vec![0i32; block as usize];
        let args = Args::new().output(&mut out);
        // SAFETY: (int* out); thread t writes out[threadIdx.x] with threadIdx.x < block,
        // and `out` holds `block` elements; one block.
        unsafe {
            launch(
                "emu_test_divergent_barrier",
                LaunchConfig::new(1, block, 0),
                args,
            )
        }
    }

    /// A kernel whose lanes 16–31 shuffle with a full-warp mask after lanes 0–15 returned:
    /// must fail with a deadlock error.
    pub fn divergent_shuffle(block: u32) -> Result<()> {
        let mut out = vec![0i32; block as usize];
        let args = Args::new().output(&mut out);
        // SAFETY: (int* out); thread t writes out[threadIdx.x] < block, `out` is block long.
        unsafe {
            launch(
                "emu_test_divergent_shuffle",
                LaunchConfig::new(1, block, 0),
                args,
            )
        }
    }

    /// Calls `__trap()` in thread `thread` of block `at_block`: must fail.
    pub fn trap(grid: u32, block: u32, at_block: i32, thread: i32) -> Result<()> {
        let args = Args::new().i32(at_block).i32(thread);
        // SAFETY: (int block, int thread); no memory is accessed.
        unsafe { launch("emu_test_trap", LaunchConfig::new(grid, block, 0), args) }
    }

    /// Runs `emu_test_oob_read_f32`, whose last thread reads one element past its input.
    /// Only in an AddressSanitizer build of the emulator, where ASan aborts the process at
    /// that read; otherwise it refuses to launch (`Error::Unavailable`).
    pub fn planted_oob_read(n: usize) -> Result<Vec<f32>> {
        if !asan_enabled() {
            return Err(Error::Unavailable(
                "the planted out-of-bounds kernel runs only in an ASan build \
                 (scripts/emu-asan.sh)"
                    .into(),
            ));
        }
        let op = "emu_test_oob_read_f32";
        let ni = len_i32(op, n)?;
        let x = vec![1f32; n];
        let mut y = vec![0f32; n];
        let args = Args::new().input(&x).output(&mut y).i32(ni);
        // SAFETY: NOT sound on purpose, and therefore reachable only when the C++ side is
        // built with AddressSanitizer (checked above): the kernel reads x[n], one past the
        // end, and ASan reports the heap-buffer-overflow and aborts before the value is used.
        unsafe { launch(op, LaunchConfig::new(grid_for(op, n, 64)?, 64, 0), args)? };
        Ok(y)
    }
}
