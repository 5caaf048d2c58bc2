//! Model specs, the zoo against PyTorch's state dicts and parameter counts, the cost model,
//! and checkpoints (format, validation, PyTorch import/export).

#[path = "../support/mod.rs"]
mod support;

mod checkpoint_format;
mod checkpoint_torch;
mod checkpoint_values;
mod cost_zoo;
mod onnx_export;
mod spec_zoo;
