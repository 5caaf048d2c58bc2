//! Elementwise tensor arithmetic: add, axpy, fill, batch sums.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/elementwise.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cuda;
