//! Quadra: quadratic deep neural networks (QDNNs) in Rust.
//!
//! Quadratic neurons compute second-order polynomials of their input, e.g.
//! `(W_a x) ⊙ (W_b x) + W_c x`. This crate provides the tensor type, the CPU engine, the
//! first-order and quadratic layers with explicit forward/backward, hybrid
//! back-propagation (`stored` / `recompute`), model specs and a tracking allocator that
//! accounts every byte kept for backward.

pub mod analysis;
pub mod checkpoint;
pub mod convert;
pub mod data;
pub mod device;
pub mod error;
pub mod model;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod serve;
pub mod tensor;
pub mod train;

pub use device::alloc::{Category, Phase};
pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Float, Tensor};
