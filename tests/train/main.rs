//! Optimizers (SGD, Adam(W), parameter groups, ReLinear init) against PyTorch, training on
//! `Device::Emu` against the CPU engine, and exact resume of a killed `quadra-train` run.

#[path = "../support/mod.rs"]
mod support;

mod emu_train;
mod optim_adam;
mod optim_groups;
mod optim_relinear;
mod optim_sgd;
mod train_resume;
