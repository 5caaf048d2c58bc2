//! The tensor type: a shape, a dtype and a contiguous row-major storage on a device.
//!
//! Layouts follow PyTorch so that checkpoints interoperate: activations are NCHW, conv
//! weights OIHW, linear weights (out, in). Tensors are immutable values that share their
//! storage (`Arc`); an op returns a new tensor. In-place updates (optimizer steps, gradient
//! accumulation) go through `data_mut`, which requires the storage not to be shared.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::device::alloc::{Category, TrackedVec, Tracker};
use crate::device::{DevPtr, Device, GpuBuf};
use crate::{with_dtype, Error, Result};

pub use crate::dtype::{DType, Float};

/// Element storage of a host tensor.
#[derive(Debug)]
pub enum CpuData {
    /// f32 elements, row-major.
    F32(TrackedVec<f32>),
    /// f64 elements, row-major.
    F64(TrackedVec<f64>),
}

impl CpuData {
    /// The elements as `T`, `None` when they are of the other dtype. (`Float` is a leaf
    /// trait that knows nothing of storage; the match on the dtype is a type-id check.)
    fn slice<T: Float>(&self) -> Option<&[T]> {
        let v: &dyn Any = match self {
            CpuData::F32(v) => v,
            CpuData::F64(v) => v,
        };
        v.downcast_ref::<TrackedVec<T>>().map(|v| &v[..])
    }

    fn slice_mut<T: Float>(&mut self) -> Option<&mut [T]> {
        let v: &mut dyn Any = match self {
            CpuData::F32(v) => v,
            CpuData::F64(v) => v,
        };
        v.downcast_mut::<TrackedVec<T>>().map(|v| &mut v[..])
    }

    fn wrap<T: Float>(v: TrackedVec<T>) -> CpuData {
        let mut slot = Some(v);
        let any: &mut dyn Any = &mut slot;
        if let Some(v) = any.downcast_mut::<Option<TrackedVec<f32>>>() {
            return CpuData::F32(v.take().expect("just filled"));
        }
        match any.downcast_mut::<Option<TrackedVec<f64>>>() {
            Some(v) => CpuData::F64(v.take().expect("just filled")),
            None => unreachable!("Float is implemented for f32 and f64 only"),
        }
    }
}

/// Where a storage's elements are: host memory (the CPU engine), or device memory of the
/// CUDA backend (`Cuda(n)`, and `Emu`, whose "device memory" is host memory that only the
/// backend's kernels touch).
#[derive(Debug)]
enum Data {
    Host(CpuData),
    Gpu { buf: GpuBuf, dtype: DType },
}

/// The elements a tensor (and its clones and reshapes) shares: their device and memory, whose
/// bytes the device's memory tracker counts.
#[derive(Debug)]
pub struct Storage {
    device: Device,
    data: Data,
}

impl Storage {
    fn alloc(&self) -> &crate::device::alloc::Allocation {
        match &self.data {
            Data::Host(CpuData::F32(v)) => v.alloc(),
            Data::Host(CpuData::F64(v)) => v.alloc(),
            Data::Gpu { buf, .. } => buf.alloc(),
        }
    }
}

fn on_gpu_error(op: &str, device: Device) -> Error {
    Error::dtype(
        op,
        format!(
            "the tensor lives on {device}; its elements are not host memory (copy it with \
             `to_device(Device::Cpu)` first)"
        ),
    )
}

/// An n-dimensional array: a shape, a dtype (f32 or f64) and contiguous row-major elements
/// on a device, shared by its clones (cloning copies no elements).
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Arc<Storage>,
    /// Set on handles made by `keep_for_backward`: while any clone of such a handle
    /// lives, the storage is counted as saved-for-backward.
    keep: Option<Arc<KeepGuard>>,
}

/// Releases one `keep_for_backward` hold on a storage when the last handle drops.
struct KeepGuard(Arc<Storage>);

impl Drop for KeepGuard {
    fn drop(&mut self) {
        self.0.alloc().unsave();
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?}, {}, {})",
            self.shape,
            self.dtype(),
            self.device()
        )
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Most elements one tensor may have (2^36, 256 GiB of f32): larger requests are typos in
/// a spec or an option, and are refused with an error rather than aborting the process on
/// a failed allocation.
pub const MAX_ELEMENTS: usize = 1 << 36;

/// The element count of `shape`, or an error when it overflows or exceeds `MAX_ELEMENTS`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Error::invalid(
                "tensor size",
                format!("shape {shape:?} has more than 2^36 elements; refusing to allocate it"),
            )
        })
}

fn tracker_for(device: Device) -> Result<&'static Tracker> {
    device.tracker()
}

impl Tensor {
    /// A tensor owning `data` (length must equal the product of `shape`), charged to `category`.
    pub fn from_vec_in<T: Float>(
        data: Vec<T>,
        shape: &[usize],
        device: Device,
        category: Category,
    ) -> Result<Tensor> {
        if data.len() != numel_of(shape) {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!(
                    "{} elements do not fill shape {:?} ({} elements)",
                    data.len(),
                    shape,
                    numel_of(shape)
                ),
            ));
        }
        let data = if device.is_gpu() {
            Data::Gpu {
                buf: GpuBuf::from_slice(device, &data, category)?,
                dtype: T::DTYPE,
            }
        } else {
            let tracker = tracker_for(device)?;
            Data::Host(CpuData::wrap(TrackedVec::from_vec(data, tracker, category)))
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage { device, data }),
            keep: None,
        })
    }

    /// A host tensor of workspace memory.
    pub fn from_vec<T: Float>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Self::from_vec_in(data, shape, Device::Cpu, Category::Workspace)
    }

    /// A tensor of `shape` with every element `value`, on `device`, charged to `category`;
    /// an error when the shape has over [`MAX_ELEMENTS`] elements (`Error::Invalid`) or the
    /// device cannot allocate it.
    pub fn full_in(
        value: f64,
        shape: &[usize],
        dtype: DType,
        device: Device,
        category: Category,
    ) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        if device.is_gpu() && value == 0.0 {
            let buf = GpuBuf::zeroed(device, n * dtype.size(), category)?;
            return Ok(Tensor::wrap_gpu(buf, dtype, shape));
        }
        with_dtype!(dtype, T => Self::from_vec_in(vec![T::of(value); n], shape, device, category))
    }

    /// A host tensor of zeros, of workspace memory.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::full_in(0.0, shape, dtype, Device::Cpu, Category::Workspace)
    }

    /// A host tensor of zeros, charged to `category`.
    pub fn zeros_in(shape: &[usize], dtype: DType, category: Category) -> Result<Tensor> {
        Self::full_in(0.0, shape, dtype, Device::Cpu, category)
    }

    /// Standard-normal samples times `std`, from a seeded ChaCha8 stream (reproducible).
    pub fn randn(shape: &[usize], dtype: DType, std: f64, seed: u64) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = checked_numel(shape)?;
        let v: Vec<f64> = (0..n)
            .map(|_| StandardNormal.sample(&mut rng))
            .map(|x: f64| x * std)
            .collect();
        Self::from_f64(&v, shape, dtype)
    }

    /// Uniform samples in [lo, hi), from a seeded ChaCha8 stream.
    pub fn rand_uniform(
        shape: &[usize],
        dtype: DType,
        lo: f64,
        hi: f64,
        seed: u64,
    ) -> Result<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dist = Uniform::new(lo, hi)
            .map_err(|e| Error::invalid("uniform range", format!("[{lo}, {hi}): {e}")))?;
        let v: Vec<f64> = (0..checked_numel(shape)?)
            .map(|_| dist.sample(&mut rng))
            .collect();
        Self::from_f64(&v, shape, dtype)
    }

    /// A workspace tensor of `dtype` from f64 values.
    pub fn from_f64(v: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
        with_dtype!(dtype, T => Self::from_vec(v.iter().map(|&x| T::of(x)).collect::<Vec<T>>(), shape))
    }

    /// The size of each dimension, outermost first (`[N, C, H, W]`).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The number of elements (the product of the shape; 1 for rank 0).
    pub fn numel(&self) -> usize {
        numel_of(&self.shape)
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        match &self.storage.data {
            Data::Host(CpuData::F32(_)) => DType::F32,
            Data::Host(CpuData::F64(_)) => DType::F64,
            Data::Gpu { dtype, .. } => *dtype,
        }
    }
    /// The device whose memory holds the elements.
    pub fn device(&self) -> Device {
        self.storage.device
    }
    /// Bytes of element storage (shared storage counted in full).
    pub fn bytes(&self) -> u64 {
        self.storage.alloc().bytes()
    }
    /// What the storage's bytes are counted as in memory reports (parameter, gradient, …).
    pub fn category(&self) -> Category {
        self.storage.alloc().category()
    }
    /// True when both tensors view the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The layer its storage's bytes are charged to (empty: none).
    pub fn layer(&self) -> String {
        self.storage.alloc().layer()
    }

    /// Re-charge this tensor's storage to `category` and the current layer.
    pub fn retag(&self, category: Category) {
        self.storage.alloc().retag(category)
    }

    /// A handle that keeps this storage for backward: while it (or a clone or reshape of
    /// it) lives, the storage's bytes count as saved-for-backward, once however many
    /// layers keep it; when the last such handle drops they return to their category.
    pub fn keep_for_backward(&self) -> Tensor {
        self.storage.alloc().save();
        Tensor {
            shape: self.shape.clone(),
            storage: self.storage.clone(),
            keep: Some(Arc::new(KeepGuard(self.storage.clone()))),
        }
    }

    /// The elements as a slice of `T`; an error names the dtype mismatch.
    pub fn as_slice<T: Float>(&self) -> Result<&[T]> {
        let data = match &self.storage.data {
            Data::Host(d) => d,
            Data::Gpu { .. } => return Err(on_gpu_error("Tensor::as_slice", self.device())),
        };
        data.slice::<T>().ok_or_else(|| {
            Error::dtype(
                "Tensor::as_slice",
                format!("tensor is {}, asked for {}", self.dtype(), T::DTYPE),
            )
        })
    }

    /// Mutable elements; the storage must not be shared with another tensor.
    pub fn data_mut<T: Float>(&mut self) -> Result<&mut [T]> {
        let dtype = self.dtype();
        let device = self.device();
        let st = Arc::get_mut(&mut self.storage).ok_or_else(|| {
            Error::state("Tensor::data_mut: storage is shared with another tensor")
        })?;
        let data = match &mut st.data {
            Data::Host(d) => d,
            Data::Gpu { .. } => return Err(on_gpu_error("Tensor::data_mut", device)),
        };
        data.slice_mut::<T>().ok_or_else(|| {
            Error::dtype(
                "Tensor::data_mut",
                format!("tensor is {dtype}, asked for {}", T::DTYPE),
            )
        })
    }

    /// The elements, copied to the host when the tensor lives on a GPU-path device.
    pub fn to_vec<T: Float>(&self) -> Result<Vec<T>> {
        match &self.storage.data {
            Data::Host(_) => Ok(self.as_slice::<T>()?.to_vec()),
            Data::Gpu { buf, dtype } => {
                crate::ensure_valid!(
                    *dtype == T::DTYPE,
                    "dtype",
                    "Tensor::to_vec: tensor is {dtype}, asked for {}",
                    T::DTYPE
                );
                let mut v = vec![T::zero(); self.numel()];
                buf.read_into(&mut v)?;
                Ok(v)
            }
        }
    }

    /// The elements as f64 (copied from the device when needed; empty if that copy fails).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_dtype!(self.dtype(), T => self.to_vec::<T>().map(|s| s.iter().map(|v| v.f64()).collect()).unwrap_or_default())
    }

    fn wrap_gpu(buf: GpuBuf, dtype: DType, shape: &[usize]) -> Tensor {
        let device = buf.device();
        Tensor {
            shape: shape.to_vec(),
            storage: Arc::new(Storage {
                device,
                data: Data::Gpu { buf, dtype },
            }),
            keep: None,
        }
    }

    /// A tensor of `shape` on a GPU-path device whose elements the caller's kernel will all
    /// write (uninitialised; NaN on the emulator).
    pub fn uninit_gpu(
        shape: &[usize],
        dtype: DType,
        device: Device,
        category: Category,
    ) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        let buf = GpuBuf::new(device, n * dtype.size(), category)?;
        Ok(Tensor::wrap_gpu(buf, dtype, shape))
    }

    /// A copy on `device`, charged to the same category and layer (the same storage when it
    /// is there already).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let cat = self.category();
        // the copy is charged to the same layer as the original (a model moved to a GPU
        // keeps its per-layer accounting)
        let _layer =
            crate::device::alloc::scope_layer(crate::device::alloc::layer_id(&self.layer()));
        with_dtype!(self.dtype(), T => Self::from_vec_in(self.to_vec::<T>()?, &self.shape, device, cat))
    }

    /// The device address of a GPU-path tensor's elements, for kernels that only read them.
    pub fn dev_ptr(&self) -> Result<DevPtr> {
        match &self.storage.data {
            Data::Gpu { buf, .. } => Ok(buf.ptr()),
            Data::Host(_) => Err(Error::dtype(
                "Tensor::dev_ptr",
                format!(
                    "the tensor lives on {}, not on a GPU-path device",
                    self.device()
                ),
            )),
        }
    }

    /// The device address of a GPU-path tensor for kernels that write it; the storage must
    /// not be shared with another tensor.
    pub fn dev_ptr_mut(&mut self) -> Result<DevPtr> {
        if Arc::get_mut(&mut self.storage).is_none() {
            return Err(Error::state(
                "Tensor::dev_ptr_mut: storage is shared with another tensor",
            ));
        }
        self.dev_ptr()
    }

    /// Same storage, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel_of(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot view {:?} ({} elements) as {:?}",
                    self.shape,
                    self.numel(),
                    shape
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: self.storage.clone(),
            keep: self.keep.clone(),
        })
    }

    /// A copy in another dtype (a plain copy when it already has it).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let cat = self.category();
        let v = with_dtype!(self.dtype(), T => self.to_vec::<T>()?.iter().map(|v| v.f64()).collect::<Vec<f64>>());
        with_dtype!(dtype, T => Self::from_vec_in(v.iter().map(|&x| T::of(x)).collect::<Vec<T>>(), &self.shape, self.device(), cat))
    }

    /// A deep copy charged to `category`.
    pub fn copy_in(&self, category: Category) -> Result<Tensor> {
        if let Data::Gpu { buf, dtype } = &self.storage.data {
            return Ok(Tensor::wrap_gpu(
                buf.duplicate(category)?,
                *dtype,
                &self.shape,
            ));
        }
        with_dtype!(self.dtype(), T => Self::from_vec_in(self.as_slice::<T>()?.to_vec(), &self.shape, self.device(), category))
    }

    /// The dims of a 4-d tensor, or a shape error naming `what`.
    pub fn dims4(&self, what: &str) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [a, b, c, d] => Ok((a, b, c, d)),
            _ => Err(Error::shape(
                what,
                format!(
                    "expected a 4-d (N, C, H, W) tensor, got shape {:?}",
                    self.shape
                ),
            )),
        }
    }

    /// The dims of a 2-d tensor, or a shape error naming `what`.
    pub fn dims2(&self, what: &str) -> Result<(usize, usize)> {
        match self.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(Error::shape(
                what,
                format!(
                    "expected a 2-d (N, features) tensor, got shape {:?}",
                    self.shape
                ),
            )),
        }
    }

    /// Error unless `other` has this tensor's shape and dtype.
    pub fn check_same(&self, other: &Tensor, op: &str) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::shape(
                op,
                format!("shapes differ: {:?} vs {:?}", self.shape, other.shape),
            ));
        }
        if self.dtype() != other.dtype() {
            return Err(Error::dtype(
                op,
                format!("dtypes differ: {} vs {}", self.dtype(), other.dtype()),
            ));
        }
        Ok(())
    }

    /// Largest absolute elementwise difference (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f64> {
        if self.shape != other.shape {
            return Err(Error::shape(
                "max_abs_diff",
                format!("{:?} vs {:?}", self.shape, other.shape),
            ));
        }
        Ok(self
            .to_f64_vec()
            .iter()
            .zip(other.to_f64_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max))
    }
}
