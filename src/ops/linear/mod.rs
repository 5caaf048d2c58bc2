//! Linear (fully connected) layers: y = x Wᵀ + b.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: (the CUDA side is a GEMM and the bias kernels of
//! `cuda/conv.cu`, in `ops::conv::cuda`).

pub mod cpu;

pub use cpu::*;
