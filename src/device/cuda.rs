//! `Device::Cuda(n)` through cudarc (being written: until then every CUDA device reports
//! itself unavailable).

use super::gpu::Runtime;
use crate::{Error, Result};

pub fn runtime(ordinal: usize) -> Result<&'static dyn Runtime> {
    Err(Error::Unavailable(format!(
        "cuda:{ordinal}: the cudarc runtime is not built yet"
    )))
}
