//! The quadratic-neuron family: stacked first-order maps, lifts and fused epilogues.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/quadratic.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::*;
