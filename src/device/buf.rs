//! [`GpuBuf`]: device memory of one tensor storage — a block of the device's caching pool,
//! charged to the device's tracking counters, returned to the pool when dropped.

use super::alloc::{current_layer, layer_name, Allocation, Category};
use super::{mib, runtime, DevPtr, Device, Runtime};
use crate::dtype::Float;
use crate::{Error, Result};

/// Device memory of one tensor storage: a pool block, charged to the device's tracker.
pub struct GpuBuf {
    rt: &'static dyn Runtime,
    ptr: DevPtr,
    bytes: usize,
    block: usize,
    alloc: Allocation,
}

impl std::fmt::Debug for GpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuf({}, {} bytes)", self.rt.device(), self.bytes)
    }
}

impl GpuBuf {
    /// `bytes` of uninitialised device memory (on the emulator: filled with 0xFF bytes, a NaN
    /// in every float, so a kernel that reads what nobody wrote shows it).
    pub fn new(device: Device, bytes: usize, category: Category) -> Result<GpuBuf> {
        let rt = runtime(device)?;
        // optimizer state lives for the whole run (see `Pool::take`); parameters are not
        // marked: the batch norms' running statistics are new tensors every training step
        let persistent = category == Category::OptimizerState;
        let (ptr, block) = rt.pool().take(rt, bytes, persistent).map_err(|e| match e {
            Error::OutOfMemory { device, msg } => {
                let snap = rt.tracker().snapshot();
                let pool = rt.pool().stats();
                let layer = layer_name(current_layer());
                let info = match rt.mem_info() {
                    Ok((free, total)) => format!(
                        "; the device reports {:.1} MiB free of {:.1} MiB",
                        mib(free),
                        mib(total)
                    ),
                    Err(_) => String::new(),
                };
                Error::OutOfMemory {
                    device,
                    msg: format!(
                        "cannot allocate {:.1} MiB of {} for {}: {:.1} MiB are held by tensors, \
                         {:.1} MiB cached{info} ({msg}). Use a smaller batch, `--backprop \
                         recompute`, or a memory-budget plan",
                        mib(bytes as u64),
                        category.name(),
                        if layer.is_empty() {
                            "no layer".to_string()
                        } else {
                            format!("layer `{layer}`")
                        },
                        mib(snap.total),
                        mib(pool.cached),
                    ),
                }
            }
            other => other,
        })?;
        let alloc = Allocation::new(rt.tracker(), bytes as u64, category);
        let buf = GpuBuf {
            rt,
            ptr,
            bytes,
            block,
            alloc,
        };
        if device == Device::Emu && bytes > 0 {
            // SAFETY: [ptr, ptr + bytes) is inside the block just taken; on the emulator
            // device memory is host memory.
            unsafe { std::ptr::write_bytes(ptr as *mut u8, 0xFF, bytes) };
        }
        Ok(buf)
    }

    /// `bytes` of zeroed device memory.
    pub fn zeroed(device: Device, bytes: usize, category: Category) -> Result<GpuBuf> {
        let buf = GpuBuf::new(device, bytes, category)?;
        if bytes > 0 {
            // SAFETY: the whole buffer is inside its block.
            unsafe { buf.rt.memset_zero(buf.ptr, bytes)? };
        }
        Ok(buf)
    }

    /// A buffer holding a copy of `src`.
    pub fn from_host(device: Device, src: &[u8], category: Category) -> Result<GpuBuf> {
        let buf = GpuBuf::new(device, src.len(), category)?;
        if !src.is_empty() {
            // SAFETY: the buffer has exactly src.len() bytes.
            unsafe { buf.rt.htod(src, buf.ptr)? };
        }
        Ok(buf)
    }

    /// Overwrites the whole buffer with `src` (whose length must be the buffer's), queued
    /// in stream order: after every kernel queued before that reads the buffer.
    pub fn write(&self, src: &[u8]) -> Result<()> {
        crate::ensure_shape!(
            src.len() == self.bytes,
            "host-to-device copy",
            "{} bytes into a {}-byte buffer on {}",
            src.len(),
            self.bytes,
            self.device()
        );
        if !src.is_empty() {
            // SAFETY: the buffer has exactly src.len() bytes (checked above).
            unsafe { self.rt.htod(src, self.ptr)? };
        }
        Ok(())
    }

    /// A device-side copy of this buffer, charged to `category`.
    pub fn duplicate(&self, category: Category) -> Result<GpuBuf> {
        let out = GpuBuf::new(self.device(), self.bytes, category)?;
        if self.bytes > 0 {
            // SAFETY: both buffers have self.bytes bytes and are distinct blocks.
            unsafe { self.rt.dtod(self.ptr, out.ptr, self.bytes)? };
        }
        Ok(out)
    }

    /// Copies all of `src` into this buffer at byte `offset`, on the device (queued in
    /// stream order; the host does not wait).
    pub fn copy_from(&self, offset: usize, src: &GpuBuf) -> Result<()> {
        crate::ensure_shape!(
            src.device() == self.device()
                && src.ptr != self.ptr
                && offset.saturating_add(src.bytes) <= self.bytes,
            "device-to-device copy",
            "{} bytes of {} at offset {offset} into a {}-byte buffer on {}",
            src.bytes,
            src.device(),
            self.bytes,
            self.device()
        );
        if src.bytes > 0 {
            // SAFETY: [offset, offset + src.bytes) lies inside this buffer (checked above);
            // `src` is another live GpuBuf of the same runtime, a distinct pool block.
            unsafe { self.rt.dtod(src.ptr, self.ptr + offset as u64, src.bytes)? };
        }
        Ok(())
    }

    /// A buffer holding a copy of the elements `src`.
    pub fn from_slice<T: Float>(device: Device, src: &[T], category: Category) -> Result<GpuBuf> {
        GpuBuf::from_host(device, bytes_of(src), category)
    }

    /// Copies the whole buffer to the host elements `dst` (whose byte size must equal the
    /// buffer's).
    pub fn read_into<T: Float>(&self, dst: &mut [T]) -> Result<()> {
        self.read(bytes_of_mut(dst))
    }

    /// Copies the whole buffer to the host (`dst.len()` must equal its size).
    pub fn read(&self, dst: &mut [u8]) -> Result<()> {
        crate::ensure_shape!(
            dst.len() == self.bytes,
            "device→host copy",
            "{} bytes asked of a {}-byte buffer",
            dst.len(),
            self.bytes
        );
        if self.bytes == 0 {
            return Ok(());
        }
        // SAFETY: dst.len() == self.bytes, the buffer's size.
        unsafe { self.rt.dtoh(self.ptr, dst) }
    }

    pub fn device(&self) -> Device {
        self.rt.device()
    }
    pub fn runtime(&self) -> &'static dyn Runtime {
        self.rt
    }
    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
    pub fn alloc(&self) -> &Allocation {
        &self.alloc
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        self.rt.pool().give(self.ptr, self.block);
    }
}

/// The bytes of a slice of elements.
fn bytes_of<T: Float>(v: &[T]) -> &[u8] {
    // SAFETY: T is f32 or f64 (the only `Float` impls): plain data without padding or
    // invalid bit patterns; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_of_mut<T: Float>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as `bytes_of`; every byte pattern is a valid f32/f64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}
