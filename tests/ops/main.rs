//! The layers and kernels (src/ops, src/nn, cuda/*.cu through the emulator): f64
//! finite-difference gradient checks, the quadratic neurons, and the CPU-vs-device parity
//! of every layer. One test binary (one link of the crate and the emulator) for all of
//! them; no test here reads a process-global byte counter (those live in `tests/device`).

#[path = "../support/mod.rs"]
mod support;

mod emu_conv;
mod emu_kernels;
mod emu_layers;
mod emu_racecheck;
mod emu_stats;
mod gradcheck_conv;
mod gradcheck_layers;
mod quadratic;
