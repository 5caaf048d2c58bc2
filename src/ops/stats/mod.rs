//! Tensor statistics for the analysis tools: range, moments, histograms.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/stats.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cuda;
