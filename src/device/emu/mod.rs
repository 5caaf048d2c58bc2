//! `Device::Emu`: the CUDA backend's code path run on the CPU. Host memory stands in for
//! device memory (with a capacity, so that "does not fit" is testable), launches run the
//! kernels of `cuda/*.cu` on the kernel emulator, GEMMs run on the CPU GEMM in place of
//! cuBLAS — behind the same [`Runtime`], pool and accounting as a GPU.
//!
//! `build.rs` compiles every `cuda/*.cu` with the host C++ compiler against `cuda/emu/` (a
//! header that implements the CUDA execution model: indices, `__syncthreads`, static and
//! dynamic shared memory, warp shuffles and votes, atomics, half/bf16, math intrinsics) into
//! a static library linked into this crate. A launch runs deterministically: blocks one
//! after another on the calling thread, one fiber per GPU thread; a barrier divergence or
//! other deadlock is an error, never a hang. See `cuda/emu/README.md`.
//!
//! On request ([`set_racecheck`], [`set_schedule`], or `QUADRA_EMU_RACECHECK=1` /
//! `QUADRA_EMU_SCHEDULE=default,reverse,random:SEED`) a launch runs the kernel's
//! instrumented racecheck copy instead: shared-memory hazards between barriers and
//! overlapping global writes are launch errors, and several schedules of the fibers are run
//! on the same inputs and must write the same bytes (`scripts/emu-racecheck.sh`).
//!
//! - [`ffi`](self) (private): the C interface, the only calls into the emulator library;
//! - this file: [`EmuRuntime`], the [`Runtime`] of `Device::Emu`;
//! - [`testing`]: slice-level drivers of single kernels and the emulator's self-tests, for
//!   tests/ops/emu_kernels.rs (not used by the crate).

mod ffi;
#[doc(hidden)]
pub mod testing;

use std::sync::{LazyLock, Mutex};

pub use ffi::{
    asan_enabled, kernel_arity, kernel_names, racecheck_available, set_racecheck, set_schedule,
};

use super::alloc::Tracker;
use super::{block_size, mib, DevPtr, Device, Gemm, KArg, Pool, Runtime};
use super::{param_pointers, param_values};
use crate::{Error, Result};

// Old paths, kept for callers: `emu::{LaunchConfig, Dim3, ELEMENTWISE_BLOCK}` (now in the
// runtime layer, shared with the CUDA runtime), `emu::{fatbin, KERNELS}` (the build's
// products for CUDA), and the test drivers at the root of `emu` (now `emu::testing`).
pub use super::fatbin::{fatbin, KERNELS};
pub use super::{Dim3, LaunchConfig, ELEMENTWISE_BLOCK};
#[doc(hidden)]
pub use testing::{
    bn_stats_f32, channel_sum_sumsq_f32, epilogue_backward_f32, epilogue_forward_f32,
    launch_no_args, quadralib_bn_backward_f32, quadralib_bn_forward_f32, selftest, BnParams,
    Epilogue,
};

/// The runtime of `Device::Emu`.
pub(crate) fn runtime() -> &'static dyn Runtime {
    &*EMU
}

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
        crate::device::alloc::emu_tracker()
    }
    fn pool(&self) -> &Pool {
        &self.pool
    }
    /// Exactly `bytes` (not the rounded block) in an AddressSanitizer build, so that an
    /// access one past a tensor's end is reported.
    fn block_size(&self, bytes: usize) -> usize {
        if asan_enabled() {
            bytes.max(1)
        } else {
            block_size(bytes)
        }
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
        unsafe { ffi::launch_params(kernel, cfg, &mut params) }
    }
    unsafe fn sgemm(&self, g: &Gemm) -> Result<()> {
        use crate::gemm::{matmul, MatRef};
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
