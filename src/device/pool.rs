//! The caching pool every GPU-path device allocates through (PyTorch's caching allocator,
//! simplified): freed blocks are kept by size and handed out again.
//!
//! It knows a runtime only as a [`BlockSource`] (fresh blocks and their release), so this
//! module depends on no other part of the device layer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Error, Result};

/// A device address (the runtime's `DevPtr`).
type Addr = u64;

/// Where the pool gets blocks from and returns them to: every [`Runtime`](super::Runtime)
/// is one.
pub trait BlockSource {
    /// The size of the block a request of `bytes` is served from.
    fn block_for(&self, bytes: usize) -> usize;
    /// A fresh block of `bytes` bytes; `Error::OutOfMemory` when it does not fit.
    fn fresh(&self, bytes: usize) -> Result<Addr>;
    /// # Safety
    /// `ptr` came from `fresh(bytes)` of this source and is not used afterwards.
    unsafe fn release(&self, ptr: Addr, bytes: usize);
}

/// Byte counts of a device's caching pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Bytes obtained from the device (`malloc`) and not yet returned to it.
    pub reserved: u64,
    /// Of those, bytes in blocks no tensor holds (ready for reuse).
    pub cached: u64,
    /// Most bytes reserved at once since the last `reset_peak`.
    pub peak_reserved: u64,
}

/// A caching allocator like PyTorch's: freed blocks are kept by size and handed out again
/// for requests of the same rounded size; when the device is full the cache is released
/// and the request retried before reporting out-of-memory. Requests are rounded up to
/// 512 bytes (and to 2 MiB above 16 MiB) so that training steps of one shape reuse blocks.
#[derive(Default)]
pub struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: BTreeMap<usize, Vec<Addr>>,
    stats: PoolStats,
}

/// The block size a request of `bytes` is served from.
pub fn block_size(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    if bytes > 16 << 20 {
        bytes.div_ceil(LARGE) * LARGE
    } else {
        bytes.max(1).div_ceil(SMALL) * SMALL
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    pub fn reset_peak(&self) {
        let mut s = self.lock();
        s.stats.peak_reserved = s.stats.reserved;
    }

    /// A block of `rt.block_for(bytes)` bytes (`block_size(bytes)`, or exactly `bytes` on
    /// the emulator built with AddressSanitizer, so that an access one past a tensor's end
    /// is reported), and its size.
    ///
    /// A `persistent` block (optimizer state: held for the whole run) is always
    /// fresh, never a cached one: the first training step creates the optimizer state after
    /// its backward pass, and if that took the blocks the step's activations had just
    /// returned, the second step would have to grow the pool for its activations again —
    /// `cuMemAlloc` in step 2 instead of only in step 1 (the budget of
    /// tests/device/cuda_budget.rs). The blocks reserved at the end are the same either way.
    pub(super) fn take<R: BlockSource + ?Sized>(
        &self,
        rt: &R,
        bytes: usize,
        persistent: bool,
    ) -> Result<(Addr, usize)> {
        let size = rt.block_for(bytes);
        if !persistent {
            let mut s = self.lock();
            if let Some(p) = s.free.get_mut(&size).and_then(|v| v.pop()) {
                s.stats.cached -= size as u64;
                return Ok((p, size));
            }
        }
        let p = match rt.fresh(size) {
            Ok(p) => p,
            Err(Error::OutOfMemory { .. }) => {
                self.empty_cache(rt);
                rt.fresh(size)?
            }
            Err(e) => return Err(e),
        };
        let mut s = self.lock();
        s.stats.reserved += size as u64;
        s.stats.peak_reserved = s.stats.peak_reserved.max(s.stats.reserved);
        Ok((p, size))
    }

    /// Returns a block taken with `take` (its size as `take` gave it).
    pub(super) fn give(&self, ptr: Addr, size: usize) {
        let mut s = self.lock();
        s.free.entry(size).or_default().push(ptr);
        s.stats.cached += size as u64;
    }

    /// Returns every cached block to the device (`torch.cuda.empty_cache`).
    pub fn empty_cache<R: BlockSource + ?Sized>(&self, rt: &R) {
        let blocks = std::mem::take(&mut self.lock().free);
        for (size, ptrs) in blocks {
            for p in ptrs {
                // SAFETY: the block came from rt.fresh(size) in `take` and no GpuBuf holds
                // it (it was in the free list, which we just emptied).
                unsafe { rt.release(p, size) };
                let mut s = self.lock();
                s.stats.reserved -= size as u64;
                s.stats.cached -= size as u64;
            }
        }
    }
}
