//! Softmax cross-entropy with label smoothing, and accuracy counts.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/loss.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::*;
