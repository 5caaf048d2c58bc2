//! Devices a tensor's storage can live on, and their runtimes (nothing else: the ops'
//! launch wrappers live with the ops).
//!
//! - [`Device`] (this file) and [`runtime`]: a device's [`Runtime`];
//! - `runtime.rs`: the [`Runtime`] trait every GPU-path device implements, and what it
//!   speaks: [`DevPtr`], [`KArg`], [`LaunchConfig`]/[`Dim3`], the [`Gemm`] descriptor;
//! - `pool.rs`: the caching [`Pool`] device memory comes from; `buf.rs`: [`GpuBuf`], one
//!   tensor storage's block of it;
//! - [`cuda`]: `Device::Cuda(n)` through cudarc (driver, cuBLAS, the embedded fatbin);
//! - [`emu`]: `Device::Emu`, the same kernels through the CPU emulator (FFI);
//! - [`alloc`]: the tracking allocator that counts every byte on every device;
//! - [`standin`]: the counters of the CUDA driver stand-in (cuda/standin), when cuda:0 is it.
//!
//! Dependencies point one way: `pool` needs nothing of the others; `runtime` the pool;
//! `buf`, `cuda` and `emu` the runtime layer; this file ties the runtimes to `Device`.

pub mod alloc;
mod buf;
pub mod cuda;
pub mod emu;
mod fatbin;
mod pool;
mod runtime;
pub mod standin;

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

pub use buf::GpuBuf;
pub use pool::{block_size, BlockSource, Pool, PoolStats};
pub(crate) use runtime::{param_pointers, param_values};
pub use runtime::{DevPtr, Dim3, Gemm, KArg, LaunchConfig, Runtime, ELEMENTWISE_BLOCK};

/// The runtime of a GPU-path device; the CPU has none.
pub fn runtime(device: Device) -> Result<&'static dyn Runtime> {
    match device {
        Device::Emu => Ok(emu::runtime()),
        Device::Cuda(n) => cuda::runtime(n),
        Device::Cpu => Err(Error::invalid(
            "device",
            "cpu has no GPU runtime (CPU tensors are computed by the CPU engine)",
        )),
    }
}

/// `12.34 GiB` (sizes in memory errors).
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Bytes in MiB, for messages.
fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Where a tensor's storage lives.
///
/// `Cpu` is the reference engine. `Cuda(n)` and `Emu` (the CUDA backend's code path run on
/// the CPU by the kernel emulator) are answered by the CUDA backend; a `Cuda(n)` this
/// machine cannot run (no driver, no such GPU, no kernels in this build, no cuBLAS) reports
/// `Error::Unavailable` saying what is missing, rather than panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    Emu,
}

impl Device {
    /// The best device present: `Cuda(0)` when it can be used (libcuda loads, a GPU is
    /// there, this build carries the kernels and cuBLAS loads), else the CPU. Never panics;
    /// the first call on a GPU machine creates the device's context.
    pub fn auto() -> Device {
        if cuda::available(0) {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    /// The tracking allocator that counts this device's bytes.
    pub fn tracker(self) -> Result<&'static alloc::Tracker> {
        match self {
            Device::Cpu => Ok(alloc::cpu_tracker()),
            Device::Emu => Ok(alloc::emu_tracker()),
            Device::Cuda(_) => Ok(runtime(self)?.tracker()),
        }
    }

    /// Memory this device can still give, and where that figure comes from: `MemAvailable`
    /// of /proc/meminfo for the CPU (or the room left under the process's address-space
    /// limit, when that is smaller); free device memory plus the caching pool's idle blocks
    /// for a GPU-path device. `None` when the platform does not say.
    pub fn available_memory(self) -> Option<(u64, String)> {
        match self {
            Device::Cpu => {
                let kib = |file: &str, key: &str| -> Option<u64> {
                    std::fs::read_to_string(file)
                        .ok()?
                        .lines()
                        .find_map(|l| l.strip_prefix(key))?
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .map(|k| k.saturating_mul(1024))
                };
                let free = kib("/proc/meminfo", "MemAvailable:")?;
                // an address-space limit (ulimit -v, prlimit --as, a container's) makes an
                // allocation fail long before memory runs out
                let limit = std::fs::read_to_string("/proc/self/limits")
                    .ok()
                    .and_then(|t| {
                        let l = t.lines().find(|l| l.starts_with("Max address space"))?;
                        l["Max address space".len()..]
                            .split_whitespace()
                            .next()?
                            .parse::<u64>()
                            .ok()
                    });
                match (limit, kib("/proc/self/status", "VmSize:")) {
                    (Some(limit), Some(used)) if limit.saturating_sub(used) < free => Some((
                        limit.saturating_sub(used),
                        "the process's address-space limit (Max address space in \
                         /proc/self/limits) less its VmSize"
                            .into(),
                    )),
                    _ => Some((free, "MemAvailable in /proc/meminfo".into())),
                }
            }
            Device::Cuda(_) | Device::Emu => {
                let rt = runtime(self).ok()?;
                let (free, _) = rt.mem_info().ok()?;
                let cached = rt.pool().stats().cached;
                Some((
                    free + cached,
                    format!("{self}: free device memory plus idle pool blocks"),
                ))
            }
        }
    }

    /// Error (`Error::OutOfMemory`) when `bytes` more than this device can give
    /// ([`Device::available_memory`]) are about to be allocated for `what` (e.g. "the
    /// training set's 60000 images as f32"); platforms that do not report pass. Called
    /// with sizes computed from shapes, before the allocation, so an input that would need
    /// more memory than exists is an error, not an allocation abort or an OOM kill.
    pub fn check_alloc(self, bytes: u64, what: &dyn Fn() -> String) -> Result<()> {
        match self.available_memory() {
            Some((available, source)) if bytes > available => Err(Error::OutOfMemory {
                device: self.to_string(),
                msg: format!(
                    "{} needs {}, more than the {} available ({source})",
                    what(),
                    gib(bytes),
                    gib(available)
                ),
            }),
            _ => Ok(()),
        }
    }

    /// (used, total) bytes of a GPU-path device as its runtime reports them, after a
    /// synchronisation (the profiler's cross-check); `None` for the CPU or when unknown.
    pub fn memory_used(self) -> Option<(u64, u64)> {
        match self {
            Device::Cpu => None,
            Device::Cuda(_) | Device::Emu => {
                let rt = runtime(self).ok()?;
                rt.synchronize().ok()?;
                rt.mem_info()
                    .ok()
                    .map(|(free, total)| (total - free, total))
            }
        }
    }

    /// True for the devices computed by the CUDA backend's code path (`Cuda(n)`, `Emu`).
    pub fn is_gpu(self) -> bool {
        !matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emu => write!(f, "emu"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;
    /// Parses `cpu`, `cuda`, `cuda:N`, `emu` and `auto`.
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "auto" => Ok(Device::auto()),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    n.parse().map(Device::Cuda).map_err(|_| {
                        Error::invalid(
                            "device",
                            format!("`{s}`: the GPU index after `cuda:` must be a number"),
                        )
                    })
                } else {
                    Err(Error::invalid(
                        "device",
                        format!("`{s}`: expected auto, cpu, cuda, cuda:N or emu"),
                    ))
                }
            }
        }
    }
}
