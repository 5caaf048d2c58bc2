//! The safetensors file layer under checkpoints and PyTorch interop: named tensors to and
//! from bytes and files (F32 and F64; F16/BF16, which PyTorch also writes, only when the
//! caller asks for them to be widened to F32 — [`Widen`] — so no dtype changes silently),
//! the header alone ([`list_tensors`]), and atomic writes ([`write_atomic`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors, View};

use super::{file_err, io_err};
use crate::device::alloc::Category;
use crate::tensor::{DType, Tensor};
use crate::{Device, Error, Result};

struct RawView {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &RawView {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn raw_of(t: &Tensor) -> Result<RawView> {
    // a tensor on a GPU-path device (a model or optimizer state on the CUDA backend) is
    // copied to the host first
    let host = t.to_device(crate::Device::Cpu)?;
    let t = &host;
    let (dtype, data) = match t.dtype() {
        DType::F32 => (
            StDtype::F32,
            t.as_slice::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            StDtype::F64,
            t.as_slice::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    };
    Ok(RawView {
        dtype,
        shape: t.shape().to_vec(),
        data,
    })
}

/// Named tensors (and optional metadata) as safetensors bytes.
pub fn tensors_to_bytes(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let raws = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), raw_of(t)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), metadata)
        .map_err(|e| Error::invalid("safetensors", e.to_string()))
}

/// Write named tensors to a safetensors file, atomically.
pub fn write_tensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = tensors_to_bytes(tensors, metadata).map_err(|e| file_err(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

fn describe_st_error(e: &SafeTensorError, len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall
        | SafeTensorError::InvalidHeaderLength
        | SafeTensorError::MetadataIncompleteBuffer => format!(
            "truncated or corrupt safetensors file ({len} bytes; the header's length or tensor offsets do not match the file size): {e:?}"
        ),
        SafeTensorError::InvalidOffset(name) => {
            format!("corrupt safetensors header: tensor `{name}` has invalid data offsets")
        }
        SafeTensorError::TensorInvalidInfo => {
            "corrupt safetensors header: a tensor's shape and dtype do not match its data size"
                .to_string()
        }
        _ => format!("invalid safetensors header: {e}"),
    }
}

/// Whether a reader widens F16/BF16 tensors to F32 (exact: every half value is an f32) or
/// refuses them. Checkpoints store their declared dtype, so only PyTorch imports widen,
/// and only when asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Widen {
    /// F16/BF16 tensors are an error naming the tensor.
    #[default]
    Refuse,
    /// F16/BF16 tensors are read as F32.
    Half,
}

fn to_tensor(
    path: &Path,
    name: &str,
    v: &safetensors::tensor::TensorView<'_>,
    widen: Widen,
) -> Result<Tensor> {
    let shape = v.shape();
    let d = v.data();
    if matches!(v.dtype(), StDtype::F16 | StDtype::BF16) && widen == Widen::Refuse {
        return Err(file_err(
            path,
            format!(
                "tensor `{name}` is stored as {:?}; it is read only as F32 or F64 (convert \
                 the file, or import PyTorch weights with `quadra-train import --widen-half`, \
                 which widens F16/BF16 to f32 exactly)",
                v.dtype()
            ),
        ));
    }
    let t = match v.dtype() {
        StDtype::F32 => Tensor::from_vec_in(
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>(),
            shape,
            Device::Cpu,
            Category::Data,
        ),
        StDtype::F64 => Tensor::from_vec_in(
            d.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect::<Vec<f64>>(),
            shape,
            Device::Cpu,
            Category::Data,
        ),
        StDtype::F16 => Tensor::from_vec_in(
            d.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect::<Vec<f32>>(),
            shape,
            Device::Cpu,
            Category::Data,
        ),
        StDtype::BF16 => Tensor::from_vec_in(
            d.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect::<Vec<f32>>(),
            shape,
            Device::Cpu,
            Category::Data,
        ),
        other => {
            return Err(file_err(
                path,
                format!("tensor `{name}` has dtype {other:?}; expected a floating-point tensor (F32, F64, F16, BF16)"),
            ))
        }
    };
    t.map_err(|e| file_err(path, format!("tensor `{name}`: {e}")))
}

/// A safetensors file's named tensors and its metadata (absent when it has none).
pub type TensorFile = (Vec<(String, Tensor)>, Option<HashMap<String, String>>);

/// Parse safetensors bytes (read from `path`, for messages) into named tensors, keeping
/// those `keep` accepts, and the metadata. F16/BF16 tensors are refused.
pub fn parse_tensors(path: &Path, bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<TensorFile> {
    parse_tensors_widening(path, bytes, keep, Widen::Refuse)
}

/// [`parse_tensors`], F16/BF16 tensors read as `widen` says.
pub fn parse_tensors_widening(
    path: &Path,
    bytes: &[u8],
    keep: &dyn Fn(&str) -> bool,
    widen: Widen,
) -> Result<TensorFile> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| file_err(path, describe_st_error(&e, bytes.len())))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| file_err(path, describe_st_error(&e, bytes.len())))?;
    let mut out = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        if !keep(name) {
            continue;
        }
        let v = st
            .tensor(name)
            .map_err(|e| file_err(path, format!("tensor `{name}`: {e}")))?;
        out.push((name.to_string(), to_tensor(path, name, &v, widen)?));
    }
    Ok((out, meta.metadata().clone()))
}

/// Read a safetensors file: its floating-point tensors (sorted by name) and metadata.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    read_tensors_filtered(path.as_ref(), &|_| true)
}

/// [`read_tensors`], keeping only the tensors `keep` accepts (others are not decoded).
pub fn read_tensors_filtered(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<TensorFile> {
    read_tensors_widening(path, keep, Widen::Refuse)
}

/// [`read_tensors_filtered`], F16/BF16 tensors read as `widen` says.
pub fn read_tensors_widening(
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
    widen: Widen,
) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    parse_tensors_widening(path, &bytes, keep, widen)
}

/// Names, dtypes and shapes of a safetensors file's tensors, without decoding them.
pub fn list_tensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, (String, Vec<usize>)>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| file_err(path, describe_st_error(&e, bytes.len())))?;
    Ok(meta
        .tensors()
        .into_iter()
        .map(|(k, i)| (k, (format!("{:?}", i.dtype), i.shape.clone())))
        .collect())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically: a temporary file in the same directory is written
/// and fsynced, renamed over `path`, then the directory is fsynced. On failure the
/// temporary file is removed and `path` keeps its old content (or stays absent).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .ok_or_else(|| file_err(path, "not a file path"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.is_dir() {
        return Err(file_err(path, "is a directory"));
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // make the rename durable
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, "cannot write", e));
    }
    Ok(())
}
