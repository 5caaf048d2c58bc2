//! Devices a tensor's storage can live on.

pub mod alloc;
pub mod cuda;
pub mod emu;
pub mod gpu;

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

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
            Device::Cuda(_) => Ok(gpu::runtime(self)?.tracker()),
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
