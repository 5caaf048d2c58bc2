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

//! # Examples
//!
//! A zoo model, trained a few steps on random data, then asked for classes of raw inputs
//! (pixel values in [0, 1]; a trained model's checkpoint carries the normalization its
//! training set had, which [`Model::predict`] applies):
//!
//! ```
//! use quadra::nn::spec::BuildOptions;
//! use quadra::optim::Sgd;
//! use quadra::{DType, Model, Tensor};
//!
//! let spec = quadra::models::get("qcnn", None, 10)?; // quadratic CNN, 1×28×28 → 10 classes
//! let mut model = Model::build(&spec, BuildOptions::default())?;
//! let mut opt = Sgd::new(0.05, 0.9, 0.0, false)?;
//! let x = Tensor::randn(&[8, 1, 28, 28], DType::F32, 1.0, 1)?; // (N, C, H, W)
//! let y = [0, 1, 2, 3, 4, 5, 6, 7];
//! for _ in 0..3 {
//!     let step = model.train_step(&x, &y, &mut opt)?;
//!     assert!(step.loss.is_finite());
//! }
//! let logits = model.predict(&x)?; // eval mode, (N, classes)
//! assert_eq!(logits.shape(), &[8, 10]);
//! # Ok::<(), quadra::Error>(())
//! ```
//!
//! Save it as a checkpoint, load it back (validated: a truncated or NaN-holding file is an
//! error naming the file and tensor), and predict an image file:
//!
//! ```
//! # use quadra::nn::spec::BuildOptions;
//! # use quadra::{Model, Tensor};
//! # let dir = std::env::temp_dir().join(format!("quadra-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let spec = quadra::models::get("qcnn", None, 10)?;
//! # let model = Model::build(&spec, BuildOptions::default())?;
//! let path = dir.join("qcnn.safetensors");
//! model.save(&path)?;
//! let loaded = Model::load(&path)?;
//! # let png = dir.join("shirt.png");
//! # image::GrayImage::from_pixel(28, 28, image::Luma([128u8])).save(&png).unwrap();
//! // a PNG/JPEG as a raw (C, H, W) sample: resized to cover 28×28, center-cropped, grey
//! let pixels = quadra::data::decode::load_sample(&png, [1, 28, 28])?;
//! let x = Tensor::from_vec(pixels, &[1, 1, 28, 28])?;
//! let class = quadra::serve::argmax(&loaded.predict(&x)?)?[0];
//! assert!(class < 10);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), quadra::Error>(())
//! ```
//!
//! Memory kept for backward in both back-propagation modes, measured by the tracking
//! allocator over real training steps:
//!
//! ```
//! use quadra::profile::{compare_modes_with, render_table, ProfileOptions};
//!
//! let spec = quadra::models::get("qcnn", None, 10)?;
//! let opts = ProfileOptions { batch: 4, steps: 1, threads: 1, ..ProfileOptions::default() };
//! let cmp = compare_modes_with(&spec, &opts)?;
//! let (stored, recompute) = (&cmp.modes[0], &cmp.modes[1]);
//! assert!(recompute.saved_for_backward < stored.saved_for_backward);
//! print!("{}", render_table(&cmp));
//! # Ok::<(), quadra::Error>(())
//! ```

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

pub use checkpoint::Checkpoint;
pub use device::alloc::{Category, Phase};
pub use device::Device;
pub use dtype::{DType, Float};
pub use error::{Error, Result};
pub use model::Model;
pub use nn::spec::ModelSpec;
pub use tensor::Tensor;
