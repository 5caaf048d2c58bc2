//! Optimizer updates: SGD (momentum, Nesterov, weight decay), Adam/AdamW/AMSGrad, gradient-norm clipping.
//!
//! `cpu.rs`: the CPU engine's math; `cuda.rs`: launch wrappers of `cuda/optim.cu` (run on
//! `Device::Cuda(n)` and `Device::Emu`).

pub mod cuda;
