//! `Device::Cuda(n)`: the [`Runtime`] of a real NVIDIA GPU, through cudarc's driver and
//! cuBLAS bindings.
//!
//! - **Loading.** cudarc is built with `dynamic-loading`: `libcuda.so` (the driver) and
//!   `libcublas.so` are opened at run time, the first time a CUDA device is asked for. cudarc
//!   panics when a library it calls into cannot be loaded, so [`runtime`] first checks that
//!   each library is present and turns every missing piece into `Error::Unavailable` naming
//!   it: no `libcuda.so` (no NVIDIA driver), `cuInit` failing (e.g. no device), no device
//!   with that ordinal, no fatbin in this build (build.rs found no nvcc), a fatbin without
//!   code for this GPU, no `libcublas.so`. Nothing here panics on a machine without CUDA.
//! - **One runtime per device**, created lazily and kept for the whole program (a leaked
//!   `'static`); a failure is remembered too, so asking again gives the same answer cheaply.
//!   The runtime retains the device's primary context (binding it to each calling thread
//!   when needed) and issues every copy, memset, launch and GEMM on ONE non-blocking stream,
//!   which is what makes the caching [`Pool`] above it correct: a block
//!   handed out again is only used by work queued after the work that used it before.
//! - **Memory**: `cuMemAlloc`/`cuMemFree` (rare: the pool keeps freed blocks);
//!   `CUDA_ERROR_OUT_OF_MEMORY` becomes `Error::OutOfMemory`. `mem_info` is `cuMemGetInfo`.
//!   Host→device copies return once the (pageable) source has been staged; device→host
//!   copies wait for the stream.
//! - **Kernels**: the fatbin nvcc built from `cuda/*.cu` (embedded by build.rs, see
//!   `device/fatbin.rs`) is loaded once with `cuModuleLoadData`; each kernel's `CUfunction`
//!   is looked up on first use and cached. Before a launch the argument count is checked
//!   against the emulator's registry of the same sources (`emu::kernel_arity`).
//! - **GEMM**: `cublasSgemmStridedBatched`. [`Gemm`] is row-major and cuBLAS column-major;
//!   a row-major matrix is the transpose of the column-major one with the same leading
//!   dimension, so `C = op(A)·op(B)` is computed as `Cᵀ = op(B)ᵀ·op(A)ᵀ`: the operands are
//!   swapped, and so are m and n. TF32 tensor-core math is opt-in ([`set_tf32`] or
//!   `QUADRA_TF32=1`); by default cuBLAS computes in full f32, so results match the CPU to
//!   f32 rounding.
//!
//! Verified so far only on machines WITHOUT a GPU (every CUDA device reports unavailable,
//! with the reason, and nothing panics). The GPU path is exercised by
//! `tests/device/cuda_runtime.rs` with `QUADRA_TEST_CUDA=1` (see `scripts/gpu-tests.sh`); see the
//! README's "Running on a GPU" for what has and has not been run on real hardware.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as drv, sys, DriverError};

mod colmajor;

use super::alloc::Tracker;
use super::{emu, fatbin};
use super::{
    param_pointers, param_values, DevPtr, Device, Gemm, KArg, LaunchConfig, Pool, Runtime,
};
use crate::{Error, Result};
use colmajor::ColMajor;

// ---------------------------------------------------------------------------------------
// TF32
// ---------------------------------------------------------------------------------------

/// 0: not decided yet (read `QUADRA_TF32` on first use), 1: off, 2: on.
static TF32: AtomicU8 = AtomicU8::new(0);

/// Lets cuBLAS use TF32 tensor cores for f32 GEMMs (10-bit mantissa products, f32
/// accumulation: several times faster on Ampere and later, but results differ from the CPU
/// by ~1e-3 relative). Off by default; `QUADRA_TF32=1` in the environment turns it on.
pub fn set_tf32(on: bool) {
    TF32.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether GEMMs on CUDA devices may use TF32 (see [`set_tf32`]).
pub fn tf32() -> bool {
    match TF32.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("QUADRA_TF32").is_ok_and(|v| v.trim() == "1");
            // a concurrent set_tf32 wins over the environment
            let _ = TF32.compare_exchange(
                0,
                if on { 2 } else { 1 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            TF32.load(Ordering::Relaxed) == 2
        }
        v => v == 2,
    }
}

// ---------------------------------------------------------------------------------------
// The per-ordinal registry
// ---------------------------------------------------------------------------------------

/// Every CUDA runtime asked for so far, or why it could not be created.
static RUNTIMES: Mutex<BTreeMap<usize, std::result::Result<&'static CudaRuntime, String>>> =
    Mutex::new(BTreeMap::new());

/// The runtime of `cuda:ordinal`, created on first use; `Error::Unavailable` (saying what is
/// missing) when this machine cannot run it.
pub fn runtime(ordinal: usize) -> Result<&'static dyn Runtime> {
    let mut map = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = map.entry(ordinal).or_insert_with(|| {
        // cudarc panics on a missing library or symbol; everything is checked first, and
        // this is only a last line of defence that keeps a surprise from aborting the caller.
        match catch_unwind(AssertUnwindSafe(|| CudaRuntime::new(ordinal))) {
            Ok(Ok(rt)) => Ok(&*Box::leak(Box::new(rt))),
            Ok(Err(msg)) => Err(msg),
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("cuda:{ordinal}: the CUDA bindings failed: {what}"))
            }
        }
    });
    match entry {
        Ok(rt) => Ok(*rt as &'static dyn Runtime),
        Err(msg) => Err(Error::Unavailable(msg.clone())),
    }
}

/// Whether `cuda:ordinal` can be used: the driver loads, the device exists, this build
/// carries the kernels and cuBLAS loads. Never panics.
pub fn available(ordinal: usize) -> bool {
    runtime(ordinal).is_ok()
}

/// Why `cuda:ordinal` cannot be used, `None` when it can.
pub fn unavailable_reason(ordinal: usize) -> Option<String> {
    runtime(ordinal).err().map(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn driver_msg(e: DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

// ---------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------

struct Blas {
    handle: blas_sys::cublasHandle_t,
    /// The math mode last set on `handle` (true: TF32 tensor-op math).
    tf32: bool,
}

/// A cached kernel handle and the dynamic shared memory it has been allowed.
#[derive(Clone, Copy)]
struct Func {
    f: sys::CUfunction,
    max_shared: u32,
}

/// One CUDA device: its primary context, one stream, the kernel module, cuBLAS, the pool and
/// the tracker.
pub struct CudaRuntime {
    ordinal: usize,
    name: String,
    /// Compute capability (major, minor).
    cc: (i32, i32),
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    module: sys::CUmodule,
    functions: Mutex<HashMap<String, Func>>,
    blas: Mutex<Blas>,
    pool: Pool,
    tracker: &'static Tracker,
}

// SAFETY: the raw handles (context, stream, module, functions, cuBLAS handle) are plain
// driver handles, valid from any host thread once the context is bound to it (`bind` does
// that before every driver call). The cuBLAS handle, whose configuration is mutable, is only
// used under the `blas` mutex; the function cache is behind its own mutex. The runtime is
// never destroyed (it is leaked), so no handle dangles.
unsafe impl Send for CudaRuntime {}
// SAFETY: as for Send: all shared mutable state is behind mutexes, and the driver API is
// thread-safe for handles of one context.
unsafe impl Sync for CudaRuntime {}

thread_local! {
    /// The context this thread last bound (0: none), to skip redundant cuCtxSetCurrent.
    static BOUND: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

const LIBCUDA_HELP: &str =
    "libcuda.so (the NVIDIA driver library) could not be loaded: no NVIDIA driver is \
     installed on this machine, or it is not on the loader's path (LD_LIBRARY_PATH)";

impl CudaRuntime {
    /// Opens `cuda:ordinal`; `Err` says what is missing.
    fn new(ordinal: usize) -> std::result::Result<CudaRuntime, String> {
        let dev = format!("cuda:{ordinal}");
        // SAFETY: only tries to dlopen the driver library's candidate names and closes it
        // again; calls nothing in it.
        if !unsafe { sys::is_culib_present() } {
            return Err(format!("{dev}: {LIBCUDA_HELP}"));
        }
        drv::init().map_err(|e| {
            format!(
                "{dev}: libcuda.so loaded but cuInit failed: {} (no usable NVIDIA GPU, or the \
                 driver does not match the kernel module)",
                driver_msg(e)
            )
        })?;
        let count = drv::device::get_count()
            .map_err(|e| format!("{dev}: cuDeviceGetCount failed: {}", driver_msg(e)))?;
        if ordinal >= count.max(0) as usize {
            return Err(format!(
                "{dev}: no CUDA device with ordinal {ordinal}: the driver reports {count} \
                 device(s){}",
                if count > 0 {
                    format!(" (use cuda:0 … cuda:{})", count - 1)
                } else {
                    String::new()
                }
            ));
        }
        let Some(image) = fatbin::fatbin() else {
            return Err(format!(
                "{dev}: this build of quadra carries no CUDA kernels: build.rs found no nvcc \
                 when it was compiled (run scripts/install-nvcc.sh, or set NVCC/CUDA_HOME, and \
                 rebuild; QUADRA_REQUIRE_NVCC=1 makes a missing nvcc a build error)"
            ));
        };
        // SAFETY: only tries to dlopen libcublas's candidate names and closes it again.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(format!(
                "{dev}: libcublas.so (cuBLAS, CUDA 12 or 13) could not be loaded: install the \
                 CUDA toolkit's cuBLAS or put the folder holding libcublas.so.13 / \
                 libcublas.so.12 on LD_LIBRARY_PATH"
            ));
        }

        let cu_device = drv::device::get(ordinal as c_int)
            .map_err(|e| format!("{dev}: cuDeviceGet failed: {}", driver_msg(e)))?;
        let name = drv::device::get_name(cu_device)
            .map(|s| s.trim_end_matches('\0').to_string())
            .unwrap_or_else(|_| "unnamed NVIDIA GPU".into());
        // SAFETY: cu_device came from cuDeviceGet just above.
        let attr = |a| unsafe { drv::device::get_attribute(cu_device, a) };
        let cc = (
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                .unwrap_or(0),
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
                .unwrap_or(0),
        );
        // SAFETY: cu_device came from cuDeviceGet; the primary context is retained for the
        // rest of the program (never released: the runtime is leaked).
        let ctx = unsafe { drv::primary_ctx::retain(cu_device) }
            .map_err(|e| format!("{dev}: cannot create its context: {}", driver_msg(e)))?;
        // SAFETY: ctx is the live primary context just retained.
        unsafe { drv::ctx::set_current(ctx) }
            .map_err(|e| format!("{dev}: cuCtxSetCurrent failed: {}", driver_msg(e)))?;
        BOUND.with(|b| b.set(ctx as usize));
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(|e| format!("{dev}: cuStreamCreate failed: {}", driver_msg(e)))?;
        // SAFETY: `image` is the fatbin nvcc wrote, embedded 16-byte aligned and alive for
        // the whole program; the driver parses it (its header carries its size) and keeps no
        // pointer into it after loading.
        let module =
            unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }.map_err(|e| {
                let archs = option_env!("CUDA_ARCHS").unwrap_or("80,90");
                format!(
                    "{dev} ({name}, sm_{}{}): cannot load the embedded kernels: {} — the \
                     fatbin holds code for CUDA_ARCHS={archs}; it needs a driver at least as \
                     new as the nvcc that built it (scripts/install-nvcc.sh pins 13.0: R580 \
                     or newer) and code for this GPU (rebuild with CUDA_ARCHS={archs},{}{})",
                    cc.0,
                    cc.1,
                    driver_msg(e),
                    cc.0,
                    cc.1
                )
            })?;
        let handle =
            blas::create_handle().map_err(|e| format!("{dev}: cublasCreate failed: {e:?}"))?;
        // SAFETY: handle was just created; stream is a live stream of the current context
        // (the cuBLAS and driver stream types are the same CUstream_st).
        unsafe { blas::set_stream(handle, stream as blas_sys::cudaStream_t) }
            .map_err(|e| format!("{dev}: cublasSetStream failed: {e:?}"))?;
        Ok(CudaRuntime {
            ordinal,
            name,
            cc,
            ctx,
            stream,
            module,
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(Blas {
                handle,
                tf32: false,
            }),
            pool: Pool::default(),
            tracker: Tracker::leaked(dev),
        })
    }

    fn dev(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    /// Makes this device's context current on the calling thread.
    fn bind(&self) -> Result<()> {
        if BOUND.with(|b| b.get()) == self.ctx as usize {
            return Ok(());
        }
        // SAFETY: self.ctx is the primary context retained in `new`, never released.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(|e| self.err("cuCtxSetCurrent", e))?;
        BOUND.with(|b| b.set(self.ctx as usize));
        Ok(())
    }

    /// A driver error of `call` as a library error (out-of-memory as `Error::OutOfMemory`).
    fn err(&self, call: &str, e: DriverError) -> Error {
        if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            Error::OutOfMemory {
                device: self.dev(),
                msg: format!("{call}: {}", driver_msg(e)),
            }
        } else {
            Error::State(format!("{}: {call} failed: {}", self.dev(), driver_msg(e)))
        }
    }

    fn function(&self, kernel: &str, shared_bytes: u32) -> Result<sys::CUfunction> {
        let mut fns = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        let func = match fns.get(kernel) {
            Some(f) => *f,
            None => {
                if !fatbin::KERNELS.contains(&kernel) {
                    return Err(Error::invalid(
                        "kernel",
                        format!("`{kernel}` is not a kernel of cuda/*.cu (QUADRA_EXPORT)"),
                    ));
                }
                let cname = CString::new(kernel).map_err(|_| {
                    Error::invalid("kernel", format!("`{kernel}`: name contains a NUL byte"))
                })?;
                // SAFETY: self.module is the live module loaded in `new` (never unloaded).
                let f = unsafe { drv::module::get_function(self.module, cname) }
                    .map_err(|e| self.err(&format!("cuModuleGetFunction({kernel})"), e))?;
                let func = Func {
                    f,
                    max_shared: 48 << 10,
                };
                fns.insert(kernel.to_string(), func);
                func
            }
        };
        if shared_bytes > func.max_shared {
            // SAFETY: func.f is a live function of our module; the attribute only raises the
            // dynamic shared memory it may be launched with (the driver checks the limit).
            unsafe {
                drv::function::set_function_attribute(
                    func.f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes as i32,
                )
            }
            .map_err(|e| {
                self.err(
                    &format!("raising {kernel}'s dynamic shared memory to {shared_bytes} bytes"),
                    e,
                )
            })?;
            fns.insert(
                kernel.to_string(),
                Func {
                    f: func.f,
                    max_shared: shared_bytes,
                },
            );
        }
        Ok(func.f)
    }
}

impl Runtime for CudaRuntime {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn describe(&self) -> String {
        let total = self.mem_info().map(|(_, t)| t).unwrap_or(0);
        format!(
            "{} (cuda:{}, sm_{}{}, {:.1} GiB)",
            self.name,
            self.ordinal,
            self.cc.0,
            self.cc.1,
            total as f64 / (1u64 << 30) as f64
        )
    }

    fn tracker(&self) -> &'static Tracker {
        self.tracker
    }

    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn malloc(&self, bytes: usize) -> Result<DevPtr> {
        self.bind()?;
        // SAFETY: the context is current; the memory is uninitialised device memory that
        // the caller (the pool) hands out as raw bytes.
        match unsafe { drv::malloc_sync(bytes.max(1)) } {
            Ok(p) => Ok(p),
            Err(e) => Err(self.err(
                &format!("cuMemAlloc of {:.1} MiB", bytes as f64 / 1048576.0),
                e,
            )),
        }
    }

    unsafe fn free(&self, ptr: DevPtr, _bytes: usize) {
        if self.bind().is_err() {
            return;
        }
        // Pending work on the stream may still use the block: wait for it first (frees are
        // rare — the pool releases memory only on empty_cache or when a request fails).
        // SAFETY: self.stream is our live stream.
        let _ = unsafe { drv::stream::synchronize(self.stream) };
        // SAFETY: by the contract ptr came from malloc (cuMemAlloc) and is not used again.
        let _ = unsafe { drv::free_sync(ptr) };
    }

    unsafe fn htod(&self, src: &[u8], dst: DevPtr) -> Result<()> {
        self.bind()?;
        // SAFETY: by the contract dst is valid for src.len() bytes. `src` is pageable host
        // memory, which the driver stages before returning, so it may be dropped afterwards;
        // the copy is ordered on our stream with every other use of dst.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream) }
            .map_err(|e| self.err("cuMemcpyHtoDAsync", e))
    }

    unsafe fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: by the contract src is valid for dst.len() bytes; the stream is
        // synchronised before returning, so `dst` is written when the caller reads it.
        unsafe {
            drv::memcpy_dtoh_async(dst, src, self.stream)
                .map_err(|e| self.err("cuMemcpyDtoHAsync", e))?;
            drv::stream::synchronize(self.stream).map_err(|e| self.err("cuStreamSynchronize", e))
        }
    }

    unsafe fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: by the contract both ranges are valid device memory and disjoint.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream) }
            .map_err(|e| self.err("cuMemcpyDtoDAsync", e))
    }

    unsafe fn memset_zero(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: by the contract [dst, dst + bytes) is valid device memory.
        unsafe { drv::memset_d8_async(dst, 0, bytes, self.stream) }
            .map_err(|e| self.err("cuMemsetD8Async", e))
    }

    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KArg]) -> Result<()> {
        if let Some(n) = emu::kernel_arity(kernel) {
            if n != args.len() {
                return Err(Error::invalid(
                    "kernel arguments",
                    format!("`{kernel}` takes {n} parameters, {} given", args.len()),
                ));
            }
        }
        self.bind()?;
        let f = self.function(kernel, cfg.shared_bytes)?;
        let mut values = param_values(args);
        let mut params = param_pointers(&mut values);
        // SAFETY: f is a live function of our module; by this method's contract `args`
        // match its parameters and every pointer is valid for the launch. `params` points
        // into `values`, both alive until cuLaunchKernel returns (the driver copies the
        // parameter values at launch).
        unsafe {
            drv::launch_kernel(
                f,
                (cfg.grid.x, cfg.grid.y, cfg.grid.z),
                (cfg.block.x, cfg.block.y, cfg.block.z),
                cfg.shared_bytes,
                self.stream,
                &mut params,
            )
        }
        .map_err(|e| self.err(&format!("cuLaunchKernel({kernel})"), e))
    }

    unsafe fn sgemm(&self, g: &Gemm) -> Result<()> {
        let Some(cm) = ColMajor::of(g)? else {
            return Ok(());
        };
        self.bind()?;
        let mut b = self.blas.lock().unwrap_or_else(|e| e.into_inner());
        let want = tf32();
        if b.tf32 != want {
            let mode = if want {
                blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
            };
            // SAFETY: b.handle is the live handle created in `new`, used under the mutex.
            unsafe { blas_sys::cublasSetMathMode(b.handle, mode) }
                .result()
                .map_err(|e| {
                    Error::State(format!("{}: cublasSetMathMode failed: {e:?}", self.dev()))
                })?;
            b.tf32 = want;
        }
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let alpha = 1.0f32;
        // SAFETY: by this method's contract the extents of `g` (which `cm` only rearranges)
        // lie inside live device allocations and C overlaps neither A nor B; alpha/beta are
        // host scalars read before the call returns (host pointer mode, the default); the
        // handle is used under the mutex and issues the work on our stream.
        unsafe {
            blas::sgemm_strided_batched(
                b.handle,
                op(cm.trans_a),
                op(cm.trans_b),
                cm.m,
                cm.n,
                cm.k,
                &alpha,
                cm.a as *const f32,
                cm.lda,
                cm.stride_a,
                cm.b as *const f32,
                cm.ldb,
                cm.stride_b,
                &cm.beta,
                cm.c as *mut f32,
                cm.ldc,
                cm.stride_c,
                cm.batch,
            )
        }
        .map_err(|e| {
            if e.0 == blas_sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
                Error::OutOfMemory {
                    device: self.dev(),
                    msg: "cuBLAS could not allocate its workspace".into(),
                }
            } else {
                Error::State(format!(
                    "{}: cublasSgemmStridedBatched (m={} n={} k={} batch={}) failed: {e:?}",
                    self.dev(),
                    g.m,
                    g.n,
                    g.k,
                    g.batch
                ))
            }
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: self.stream is our live stream.
        unsafe { drv::stream::synchronize(self.stream) }
            .map_err(|e| self.err("cuStreamSynchronize", e))
    }

    fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (free, total) = drv::mem_get_info().map_err(|e| self.err("cuMemGetInfo", e))?;
        Ok((free as u64, total as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_switch() {
        set_tf32(true);
        assert!(tf32());
        set_tf32(false);
        assert!(!tf32());
    }
}
