//! 2-d pooling: max (argmax indices kept), average, global average.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/pool.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::*;
