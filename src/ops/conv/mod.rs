//! 2-d convolution (im2col + GEMM): stride, padding, dilation, groups; bias.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/conv.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cpu;
pub mod cuda;

pub use cpu::*;
