//! The old path of the runtime layer (`crate::device::…`), kept so that existing
//! callers compile: re-exports only. The items live in `device::{runtime, pool, buf}` (the
//! `Runtime` trait and its vocabulary, the caching pool, `GpuBuf`) and `device::emu` (the
//! emulator's runtime), and are re-exported at `crate::device`.

pub use super::emu::{emu_capacity, set_emu_capacity, EmuRuntime};
pub use super::{block_size, runtime, DevPtr, Gemm, GpuBuf, KArg, Pool, PoolStats, Runtime};
