//! The device of a run: `--device` parsed and checked, the model moved there.

use anyhow::{bail, Context, Result};

use crate::model::Model;
use crate::Device;

/// The device to run on: the CPU engine, the emulator, or a CUDA GPU when its runtime can
/// be used (checked here, so a missing driver or GPU is a clear error before any work).
pub fn resolve_device(s: &str) -> Result<Device> {
    if s == "auto" {
        // a usable GPU (driver, device and kernels all present), else the CPU
        return Ok(Device::auto());
    }
    let d: Device = s.parse()?;
    if let Device::Cuda(_) = d {
        if let Err(e) = crate::device::runtime(d) {
            bail!("`{s}`: {d} is not available ({e}); use --device cpu, emu or auto");
        }
    }
    Ok(d)
}

/// Moves a model to `device` (its tensors are shared, not copied, when they are there
/// already); the error names the device.
pub fn model_to_device(model: &mut Model, device: Device) -> Result<()> {
    model
        .to_device(device)
        .with_context(|| format!("moving model `{}` to {device}", model.spec.name))
}
