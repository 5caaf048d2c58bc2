//! Activations: ReLU (forward, backward, in place) and dropout.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/act.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::*;
