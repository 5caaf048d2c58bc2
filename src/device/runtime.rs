//! What every GPU-path runtime speaks: the [`Runtime`] trait, device addresses, kernel
//! parameters ([`KArg`]) and launch configurations ([`LaunchConfig`]), and the GEMM
//! descriptor ([`Gemm`]). The ops' launch wrappers are written against these alone, so the
//! emulator runs the same Rust launch code as a GPU.
//!
//! Memory is stream-ordered: each device has one stream and every launch, copy and free is
//! issued on it, so a block returned to the pool can be handed out again at once — later
//! work that uses it runs after earlier work that read it.

use std::ffi::c_void;

use super::alloc::Tracker;
use super::pool::{block_size, BlockSource, Pool};
use super::Device;
use crate::Result;

/// An address in a device's memory (on `Device::Emu`, a host address).
pub type DevPtr = u64;

/// One kernel parameter.
#[derive(Clone, Copy, Debug)]
pub enum KArg {
    Ptr(DevPtr),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

/// The `kernelParams` array of a launch: each parameter's value widened to 8 bytes
/// (little-endian, so a 4-byte parameter is read from the low bytes), and one pointer per
/// parameter to its value. The values must stay alive while the pointers are used.
pub(crate) fn param_values(args: &[KArg]) -> Vec<u64> {
    args.iter()
        .map(|a| match *a {
            KArg::Ptr(p) => p,
            KArg::I32(v) => v as u32 as u64,
            KArg::I64(v) => v as u64,
            KArg::F32(v) => v.to_bits() as u64,
            KArg::F64(v) => v.to_bits(),
        })
        .collect()
}

pub(crate) fn param_pointers(values: &mut [u64]) -> Vec<*mut c_void> {
    values
        .iter_mut()
        .map(|v| v as *mut u64 as *mut c_void)
        .collect()
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

/// Grid, block and dynamic shared memory of one launch (`cuLaunchKernel`'s, and the
/// emulator's).
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

/// A row-major, strided-batched f32 matrix product: for b < `batch`,
/// `C_b (m×n, row stride ldc) = [C_b +] op(A_b) (m×k) · op(B_b) (k×n)`,
/// with `X_b` at `x + b·stride_x` elements. `op(A) = Aᵀ` when `trans_a`: A is then stored
/// (k×m) with row stride `lda`. Element offsets, not bytes.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: DevPtr,
    pub lda: usize,
    pub trans_a: bool,
    pub stride_a: usize,
    pub b: DevPtr,
    pub ldb: usize,
    pub trans_b: bool,
    pub stride_b: usize,
    pub c: DevPtr,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
    /// Add into C instead of overwriting it (cuBLAS's beta = 1).
    pub accumulate: bool,
}

impl Gemm {
    /// One product of dense row-major operands, C (m×n) = A (m×k) · B (k×n), no transposes,
    /// one item, overwriting C; change the rest with struct-update syntax
    /// (`Gemm { trans_b: true, ldb: k, ..Gemm::dense(..) }`).
    pub fn dense(m: usize, n: usize, k: usize, a: DevPtr, b: DevPtr, c: DevPtr) -> Gemm {
        Gemm {
            m,
            n,
            k,
            a,
            lda: k,
            trans_a: false,
            stride_a: 0,
            b,
            ldb: n,
            trans_b: false,
            stride_b: 0,
            c,
            ldc: n,
            stride_c: 0,
            batch: 1,
            accumulate: false,
        }
    }

    /// Elements one operand spans (from its first batch's start to the last element read).
    pub fn extents(&self) -> (usize, usize, usize) {
        let span = |rows: usize, cols: usize, ld: usize, t: bool, stride: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                return 0;
            }
            let (r, c) = if t { (cols, rows) } else { (rows, cols) };
            (self.batch - 1) * stride + (r - 1) * ld + c
        };
        (
            span(self.m, self.k, self.lda, self.trans_a, self.stride_a),
            span(self.k, self.n, self.ldb, self.trans_b, self.stride_b),
            span(self.m, self.n, self.ldc, false, self.stride_c),
        )
    }
}

/// What a device backend provides. The raw-pointer methods are `unsafe`: their callers
/// (GpuBuf and the kernel wrappers) guarantee the pointers and extents.
///
/// Implemented by `CudaRuntime` (src/device/cuda.rs) and `EmuRuntime` (src/device/emu/);
/// [`runtime`](super::runtime) gives a device's.
pub trait Runtime: Send + Sync {
    fn device(&self) -> Device;
    /// A description for messages, e.g. the GPU's name.
    fn describe(&self) -> String;
    fn tracker(&self) -> &'static Tracker;
    fn pool(&self) -> &Pool;
    /// The size of the pool block a request of `bytes` is served from
    /// ([`block_size`](super::block_size), unless the runtime needs exact sizes).
    fn block_size(&self, bytes: usize) -> usize {
        block_size(bytes)
    }
    /// Fresh device memory (not from the pool); `Error::OutOfMemory` when it does not fit.
    fn malloc(&self, bytes: usize) -> Result<DevPtr>;
    /// # Safety
    /// `ptr` came from `malloc(bytes)` of this runtime and is not used afterwards.
    unsafe fn free(&self, ptr: DevPtr, bytes: usize);
    /// # Safety
    /// `[dst, dst + src.len())` lies inside one live allocation of this runtime.
    unsafe fn htod(&self, src: &[u8], dst: DevPtr) -> Result<()>;
    /// # Safety
    /// `[src, src + dst.len())` lies inside one live allocation of this runtime.
    unsafe fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<()>;
    /// # Safety
    /// Both ranges lie inside live allocations of this runtime and do not overlap.
    unsafe fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<()>;
    /// # Safety
    /// `[dst, dst + bytes)` lies inside one live allocation of this runtime.
    unsafe fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()>;
    /// Launches `kernel` (a name of `cuda/*.cu`).
    ///
    /// # Safety
    /// `args` match the kernel's parameters in number, type and order, and every pointer
    /// among them is valid for every access the kernel makes under `cfg`.
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KArg]) -> Result<()>;
    /// # Safety
    /// The extents of `g` (`Gemm::extents`) lie inside live allocations; C does not overlap
    /// A or B.
    unsafe fn sgemm(&self, g: &Gemm) -> Result<()>;
    /// Waits for all work issued on this device.
    fn synchronize(&self) -> Result<()>;
    /// (free, total) bytes of device memory, as `cuMemGetInfo` reports them.
    fn mem_info(&self) -> Result<(u64, u64)>;
}

/// The pool's view of a runtime: fresh blocks and their release.
impl<R: Runtime + ?Sized> BlockSource for R {
    fn block_for(&self, bytes: usize) -> usize {
        Runtime::block_size(self, bytes)
    }
    fn fresh(&self, bytes: usize) -> Result<DevPtr> {
        self.malloc(bytes)
    }
    unsafe fn release(&self, ptr: DevPtr, bytes: usize) {
        // SAFETY: BlockSource::release has Runtime::free's contract (the block came from
        // `fresh`, i.e. `malloc(bytes)`, and is not used afterwards).
        unsafe { self.free(ptr, bytes) }
    }
}
