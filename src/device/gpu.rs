//! The CUDA backend's device-independent layer: device memory from a caching pool that
//! reports into the tracking counters, kernel launch by name, and GEMM.
//!
//! Two runtimes implement [`Runtime`]:
//! - `Device::Cuda(n)` (src/device/cuda.rs): cudarc — the driver API on one stream per
//!   device, the embedded fatbin, cuBLAS;
//! - `Device::Emu` ([`EmuRuntime`] below): host memory standing in for device memory, the
//!   kernel emulator for launches (the same `cuda/*.cu` sources), the CPU `gemm` for cuBLAS.
//!
//! Every op of the CUDA path (src/device/kernels/) is written once against `Runtime`, so the
//! emulator runs the same Rust launch code, the same pool and the same accounting as a GPU.
//!
//! Memory is stream-ordered: each device has one stream and every launch, copy and free is
//! issued on it, so a block returned to the pool can be handed out again at once — later
//! work that uses it runs after earlier work that read it.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{LazyLock, Mutex};

use super::alloc::{current_layer, layer_name, Allocation, Category, Tracker};
use super::emu::{self, LaunchConfig};
use super::Device;
use crate::{Error, Result};

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
pub trait Runtime: Send + Sync {
    fn device(&self) -> Device;
    /// A description for messages, e.g. the GPU's name.
    fn describe(&self) -> String;
    fn tracker(&self) -> &'static Tracker;
    fn pool(&self) -> &Pool;
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

/// The runtime of a GPU-path device; the CPU has none.
pub fn runtime(device: Device) -> Result<&'static dyn Runtime> {
    match device {
        Device::Emu => Ok(&*EMU),
        Device::Cuda(n) => super::cuda::runtime(n),
        Device::Cpu => Err(Error::invalid(
            "device",
            "cpu has no GPU runtime (CPU tensors are computed by the CPU engine)",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The caching pool
// ---------------------------------------------------------------------------------------

/// Byte counts of a device's caching pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Bytes obtained from the device (`malloc`) and not yet returned to it.
    pub reserved: u64,
    /// Of those, bytes in blocks no tensor holds (ready for reuse).
    pub cached: u64,
    /// Most bytes reserved at once since the last `reset_peak`.
    pub peak_reserved: u64,
}

/// A caching allocator like PyTorch's: freed blocks are kept by size and handed out again
/// for requests of the same rounded size; when the device is full the cache is released
/// and the request retried before reporting out-of-memory. Requests are rounded up to
/// 512 bytes (and to 2 MiB above 16 MiB) so that training steps of one shape reuse blocks.
#[derive(Default)]
pub struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: BTreeMap<usize, Vec<DevPtr>>,
    stats: PoolStats,
}

/// The block size a request of `bytes` is served from.
pub fn block_size(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    if bytes > 16 << 20 {
        bytes.div_ceil(LARGE) * LARGE
    } else {
        bytes.max(1).div_ceil(SMALL) * SMALL
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    pub fn reset_peak(&self) {
        let mut s = self.lock();
        s.stats.peak_reserved = s.stats.reserved;
    }

    /// A block of `block_size(bytes)` bytes (exactly `bytes` on the emulator built with
    /// AddressSanitizer, so that an access one past a tensor's end is reported).
    fn take(&self, rt: &dyn Runtime, bytes: usize) -> Result<(DevPtr, usize)> {
        let size = if rt.device() == Device::Emu && emu::asan_enabled() {
            bytes.max(1)
        } else {
            block_size(bytes)
        };
        {
            let mut s = self.lock();
            if let Some(p) = s.free.get_mut(&size).and_then(|v| v.pop()) {
                s.stats.cached -= size as u64;
                return Ok((p, size));
            }
        }
        let p = match rt.malloc(size) {
            Ok(p) => p,
            Err(Error::OutOfMemory { .. }) => {
                self.empty_cache(rt);
                rt.malloc(size)?
            }
            Err(e) => return Err(e),
        };
        let mut s = self.lock();
        s.stats.reserved += size as u64;
        s.stats.peak_reserved = s.stats.peak_reserved.max(s.stats.reserved);
        Ok((p, size))
    }

    fn give(&self, ptr: DevPtr, size: usize) {
        let mut s = self.lock();
        s.free.entry(size).or_default().push(ptr);
        s.stats.cached += size as u64;
    }

    /// Returns every cached block to the device (`torch.cuda.empty_cache`).
    pub fn empty_cache(&self, rt: &dyn Runtime) {
        let blocks = std::mem::take(&mut self.lock().free);
        for (size, ptrs) in blocks {
            for p in ptrs {
                // SAFETY: the block came from rt.malloc(size) in `take` and no GpuBuf holds
                // it (it was in the free list, which we just emptied).
                unsafe { rt.free(p, size) };
                let mut s = self.lock();
                s.stats.reserved -= size as u64;
                s.stats.cached -= size as u64;
            }
        }
    }
}

/// Device memory of one tensor storage: a pool block, charged to the device's tracker.
pub struct GpuBuf {
    rt: &'static dyn Runtime,
    ptr: DevPtr,
    bytes: usize,
    block: usize,
    alloc: Allocation,
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf({}, {} bytes)", self.rt.device(), self.bytes)
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl GpuBuf {
    /// `bytes` of uninitialised device memory (on the emulator: filled with 0xFF bytes, a NaN
    /// in every float, so a kernel that reads what nobody wrote shows it).
    pub fn new(device: Device, bytes: usize, category: Category) -> Result<GpuBuf> {
        let rt = runtime(device)?;
        let (ptr, block) = rt.pool().take(rt, bytes).map_err(|e| match e {
            Error::OutOfMemory { device, msg } => {
                let snap = rt.tracker().snapshot();
                let pool = rt.pool().stats();
                let layer = layer_name(current_layer());
                let info = match rt.mem_info() {
                    Ok((free, total)) => format!(
                        "; the device reports {:.1} MiB free of {:.1} MiB",
                        mib(free),
                        mib(total)
                    ),
                    Err(_) => String::new(),
                };
                Error::OutOfMemory {
                    device,
                    msg: format!(
                        "cannot allocate {:.1} MiB of {} for {}: {:.1} MiB are held by tensors, \
                         {:.1} MiB cached{info} ({msg}). Use a smaller batch, `--backprop \
                         recompute`, or a memory-budget plan",
                        mib(bytes as u64),
                        category.name(),
                        if layer.is_empty() {
                            "no layer".to_string()
                        } else {
                            format!("layer `{layer}`")
                        },
                        mib(snap.total),
                        mib(pool.cached),
                    ),
                }
            }
            other => other,
        })?;
        let alloc = Allocation::new(rt.tracker(), bytes as u64, category);
        let buf = GpuBuf {
            rt,
            ptr,
            bytes,
            block,
            alloc,
        };
        if device == Device::Emu && bytes > 0 {
            // SAFETY: [ptr, ptr + bytes) is inside the block just taken; on the emulator
            // device memory is host memory.
            unsafe { std::ptr::write_bytes(ptr as *mut u8, 0xFF, bytes) };
        }
        Ok(buf)
    }

    /// `bytes` of zeroed device memory.
    pub fn zeroed(device: Device, bytes: usize, category: Category) -> Result<GpuBuf> {
        let buf = GpuBuf::new(device, bytes, category)?;
        if bytes > 0 {
            // SAFETY: the whole buffer is inside its block.
            unsafe { buf.rt.memset_zero(buf.ptr, bytes)? };
        }
        Ok(buf)
    }

    /// A buffer holding a copy of `src`.
    pub fn from_host(device: Device, src: &[u8], category: Category) -> Result<GpuBuf> {
        let buf = GpuBuf::new(device, src.len(), category)?;
        if !src.is_empty() {
            // SAFETY: the buffer has exactly src.len() bytes.
            unsafe { buf.rt.htod(src, buf.ptr)? };
        }
        Ok(buf)
    }

    /// A device-side copy of this buffer, charged to `category`.
    pub fn duplicate(&self, category: Category) -> Result<GpuBuf> {
        let out = GpuBuf::new(self.device(), self.bytes, category)?;
        if self.bytes > 0 {
            // SAFETY: both buffers have self.bytes bytes and are distinct blocks.
            unsafe { self.rt.dtod(self.ptr, out.ptr, self.bytes)? };
        }
        Ok(out)
    }

    /// Copies the whole buffer to the host (`dst.len()` must equal its size).
    pub fn read(&self, dst: &mut [u8]) -> Result<()> {
        crate::ensure_shape!(
            dst.len() == self.bytes,
            "device→host copy",
            "{} bytes asked of a {}-byte buffer",
            dst.len(),
            self.bytes
        );
        if self.bytes == 0 {
            return Ok(());
        }
        // SAFETY: dst.len() == self.bytes, the buffer's size.
        unsafe { self.rt.dtoh(self.ptr, dst) }
    }

    pub fn device(&self) -> Device {
        self.rt.device()
    }
    pub fn runtime(&self) -> &'static dyn Runtime {
        self.rt
    }
    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
    pub fn alloc(&self) -> &Allocation {
        &self.alloc
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        self.rt.pool().give(self.ptr, self.block);
    }
}

// ---------------------------------------------------------------------------------------
// The emulator runtime
// ---------------------------------------------------------------------------------------

/// `Device::Emu`: host memory as device memory, with a capacity (so that "does not fit" is
/// testable); launches run on the kernel emulator; GEMMs on the CPU `gemm`.
pub struct EmuRuntime {
    pool: Pool,
    /// Bytes currently obtained by `malloc`.
    used: Mutex<u64>,
    capacity: Mutex<u64>,
}

/// Default capacity of the emulated device: 16 GiB, or `QUADRA_EMU_MEMORY_MIB`.
fn default_emu_capacity() -> u64 {
    std::env::var("QUADRA_EMU_MEMORY_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|m| m << 20)
        .unwrap_or(16 << 30)
}

static EMU: LazyLock<EmuRuntime> = LazyLock::new(|| EmuRuntime {
    pool: Pool::default(),
    used: Mutex::new(0),
    capacity: Mutex::new(default_emu_capacity()),
});

/// The emulated device's memory size in bytes (what `mem_info` reports as total).
pub fn emu_capacity() -> u64 {
    *EMU.capacity.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the emulated device's memory size; cached blocks are released first so that the
/// new limit applies to what tensors hold.
pub fn set_emu_capacity(bytes: u64) {
    EMU.pool.empty_cache(&*EMU);
    *EMU.capacity.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
}

/// Host allocations are 256-byte aligned, like cudaMalloc's.
const EMU_ALIGN: usize = 256;

impl Runtime for EmuRuntime {
    fn device(&self) -> Device {
        Device::Emu
    }
    fn describe(&self) -> String {
        format!(
            "CUDA emulator ({:.0} MiB emulated device memory)",
            mib(emu_capacity())
        )
    }
    fn tracker(&self) -> &'static Tracker {
        super::alloc::emu_tracker()
    }
    fn pool(&self) -> &Pool {
        &self.pool
    }
    fn malloc(&self, bytes: usize) -> Result<DevPtr> {
        let cap = emu_capacity();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if *used + bytes as u64 > cap {
            return Err(Error::OutOfMemory {
                device: "emu".into(),
                msg: format!(
                    "{:.1} MiB more would exceed the emulated device's {:.1} MiB ({:.1} MiB in use)",
                    mib(bytes as u64),
                    mib(cap),
                    mib(*used)
                ),
            });
        }
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), EMU_ALIGN)
            .map_err(|e| Error::invalid("allocation size", format!("{bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(Error::OutOfMemory {
                device: "emu".into(),
                msg: format!("the host refused {:.1} MiB", mib(bytes as u64)),
            });
        }
        *used += bytes as u64;
        Ok(p as DevPtr)
    }
    unsafe fn free(&self, ptr: DevPtr, bytes: usize) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(bytes.max(1), EMU_ALIGN) {
            // SAFETY: by the contract, ptr came from malloc(bytes), i.e. alloc(layout).
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            *used -= bytes as u64;
        }
    }
    unsafe fn htod(&self, src: &[u8], dst: DevPtr) -> Result<()> {
        // SAFETY: by the contract dst is valid for src.len() bytes; host memory on Emu.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }
    unsafe fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: by the contract src is valid for dst.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
    unsafe fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<()> {
        // SAFETY: by the contract both ranges are valid and disjoint.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }
    unsafe fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        // SAFETY: by the contract dst is valid for bytes bytes.
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
    }
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KArg]) -> Result<()> {
        let mut values = param_values(args);
        let mut params = param_pointers(&mut values);
        // SAFETY: by this method's contract; `values` outlives the call.
        unsafe { emu::launch_params(kernel, cfg, &mut params) }
    }
    unsafe fn sgemm(&self, g: &Gemm) -> Result<()> {
        use crate::ops::gemm::{matmul, MatRef};
        let (ea, eb, ec) = g.extents();
        if ec == 0 {
            return Ok(());
        }
        // SAFETY: by the contract the extents lie inside live host allocations and C does
        // not overlap A or B, so these slices alias nothing mutable.
        let (a, b, c) = unsafe {
            (
                std::slice::from_raw_parts(g.a as *const f32, ea),
                std::slice::from_raw_parts(g.b as *const f32, eb),
                std::slice::from_raw_parts_mut(g.c as *mut f32, ec),
            )
        };
        for i in 0..g.batch {
            let ar = MatRef {
                data: &a[(i * g.stride_a).min(a.len())..],
                ld: g.lda,
                t: g.trans_a,
            };
            let br = MatRef {
                data: &b[(i * g.stride_b).min(b.len())..],
                ld: g.ldb,
                t: g.trans_b,
            };
            matmul(
                g.m,
                g.n,
                g.k,
                &mut c[i * g.stride_c..],
                g.ldc,
                g.accumulate,
                ar,
                br,
                1,
            );
        }
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn mem_info(&self) -> Result<(u64, u64)> {
        let cap = emu_capacity();
        let used = *self.used.lock().unwrap_or_else(|e| e.into_inner());
        Ok((cap.saturating_sub(used), cap))
    }
}
