//! Quadra: quadratic deep neural networks (QDNNs) in Rust.
//!
//! Quadratic neurons compute second-order polynomials of their input, e.g.
//! `(W_a x) ⊙ (W_b x) + W_c x`. This crate provides the tensor type, the CPU engine, the
//! first-order and quadratic layers with explicit forward/backward, hybrid
//! back-propagation (`stored` / `recompute`), model specs and a tracking allocator that
//! accounts every byte kept for backward.
//!
//! Layers, from the bottom: [`dtype`] (element types) uses nothing of the crate, [`gemm`]
//! (the CPU matrix product) only `dtype`; the runtimes of [`device`] only those two (and
//! [`error`]); [`tensor`] sits on `device`; [`ops`] on tensors; [`nn`] on ops.
//! (`scripts/module_cycles.py` lists the edges and any circle.)
//!
//! `unsafe` is confined to the places that talk to memory no borrow checker sees, each
//! block with a `// SAFETY:` line saying why it holds: the device runtimes
//! ([`device::cuda`] over cudarc, [`device::emu`] over the emulator's C interface, the pool's
//! blocks and [`device::GpuBuf`]'s copies), the CUDA launch wrappers of the ops, and
//! [`gemm`]'s one call into the `gemm` crate's raw-pointer API. Everything above them —
//! tensors, layers, training — is safe code. The two lints below hold every such block to
//! it (with `-D warnings`, as CI runs clippy): no unsafe block or impl without its
//! `SAFETY:` comment, and no unsafe operation inside an `unsafe fn` outside a block.

#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(unsafe_op_in_unsafe_fn)]

pub mod analysis;
pub mod checkpoint;
pub mod convert;
pub mod data;
pub mod device;
pub mod dtype;
pub mod error;
pub mod gemm;
pub mod model;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod profile;
pub mod serve;
pub mod tensor;
pub mod train;

pub use device::alloc::{Category, Phase};
pub use device::Device;
pub use dtype::{DType, Float};
pub use error::{Error, Result};
pub use tensor::Tensor;
