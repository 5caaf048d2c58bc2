//! Checkpoints and PyTorch interop, both as safetensors.
//!
//! # Checkpoint format (`quadra-checkpoint/1`)
//!
//! A checkpoint is one self-describing safetensors file:
//!
//! - tensors: the model's state dict under its PyTorch names (`conv1.weight`,
//!   `layer1.0.conv1.bn1.running_mean`, …), all of the checkpoint's dtype (F32 or F64), and
//!   the optimizer's state tensors under `optim.` (`optim.<name>`, names chosen by the
//!   optimizer, e.g. `optim.momentum_buffer.conv1.weight`);
//! - metadata (string → string): `format` = `quadra-checkpoint/1`, `spec` (the model spec,
//!   JSON), `dtype` (`f32`/`f64`), `epoch`, `step`, and when present `seed`, `rng` (JSON),
//!   `config` (the run config, JSON), `metrics` (JSON), `optim.kind`, `optim.state`
//!   (the optimizer's scalar state, JSON).
//!
//! Writes are atomic ([`write_atomic`]): a temporary file in the target's directory is
//! written and fsynced, renamed over the target, and the directory is fsynced; on any
//! failure the target is left as it was. Loading validates everything before a model
//! exists: the safetensors framing (a truncated file or a tampered header is an error), the
//! metadata, the spec (it must type-check), and every tensor against the spec's state
//! dict (missing, extra, wrong shape, wrong dtype — a tensor stored in another dtype than
//! the declared one is refused, never converted), and every value: weights, statistics
//! and optimizer state must be finite and a `running_var` non-negative, since a model
//! built from them would answer every input with NaN or garbage — each error names the
//! file and, where there is one, the tensor.
//!
//! # PyTorch interop
//!
//! [`import_torch`] reads a plain safetensors state dict written from PyTorch
//! (`safetensors.torch.save_file(model.state_dict())`) into a zoo (or any spec) model:
//! missing, extra and misshapen entries are errors naming them; `num_batches_tracked`
//! entries are ignored and a DataParallel `module.` prefix is stripped. F16/BF16 entries are
//! refused unless the caller asks for them to be widened ([`Widen::Half`]; exact), and the
//! values are checked as a checkpoint's are. [`export_torch`] writes the model's state dict back, F32, with PyTorch names
//! (PyTorch's `load_state_dict(strict=True)` accepts it: BatchNorm fills in its missing
//! `num_batches_tracked`).

mod tensors;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::model::Model;
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::nn::Module;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

pub use tensors::{
    list_tensors, parse_tensors, parse_tensors_widening, read_tensors, read_tensors_filtered,
    read_tensors_widening, tensors_to_bytes, write_atomic, write_tensors, TensorFile, Widen,
};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "quadra-checkpoint/1";
/// Prefix of optimizer state tensors in a checkpoint.
pub const OPTIM_PREFIX: &str = "optim.";

/// An optimizer's state as a checkpoint stores it.
#[derive(Clone, Debug, Default)]
pub struct OptimState {
    /// A short name of the optimizer (`sgd`, `adam`, …).
    pub kind: String,
    /// Scalar state and hyper-parameters (learning rate, step count, betas, …).
    pub scalars: serde_json::Value,
    /// State tensors, named by the optimizer (without the `optim.` prefix).
    pub tensors: Vec<(String, Tensor)>,
}

impl OptimState {
    /// The checkpoint form of an optimizer's exported state (`Optimizer::state`): scalars
    /// become a JSON object (f64 values round-trip exactly through serde_json).
    pub fn from_optim(s: crate::optim::OptimState) -> OptimState {
        let scalars: serde_json::Map<String, serde_json::Value> = s
            .scalars
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(v)))
            .collect();
        OptimState {
            kind: s.kind,
            scalars: serde_json::Value::Object(scalars),
            tensors: s.tensors,
        }
    }

    /// Back to the form `Optimizer::load_state` takes; an error names a scalar that is not
    /// a number.
    pub fn to_optim(&self) -> Result<crate::optim::OptimState> {
        let mut scalars = Vec::new();
        if let serde_json::Value::Object(m) = &self.scalars {
            for (k, v) in m {
                let x = v.as_f64().ok_or_else(|| {
                    Error::invalid(
                        "checkpoint optimizer state",
                        format!("scalar `{k}` is not a number: {v}"),
                    )
                })?;
                scalars.push((k.clone(), x));
            }
        }
        Ok(crate::optim::OptimState {
            kind: self.kind.clone(),
            tensors: self.tensors.clone(),
            scalars,
        })
    }
}

/// Everything a checkpoint holds.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model's spec (metadata `spec`), from which loading rebuilds the module tree.
    pub spec: ModelSpec,
    /// The element type of every state tensor (metadata `dtype`: `f32` or `f64`).
    pub dtype: DType,
    /// The model's state dict (PyTorch names).
    pub state: Vec<(String, Tensor)>,
    /// The optimizer's state (tensors under `optim.`), `None` for a weights-only checkpoint.
    pub optim: Option<OptimState>,
    /// Completed epochs.
    pub epoch: u64,
    /// Completed optimizer steps.
    pub step: u64,
    /// The training run's seed (metadata `seed`), when a trainer recorded one.
    pub seed: Option<u64>,
    /// Where the run's random streams stand (opaque JSON chosen by the trainer).
    pub rng: Option<serde_json::Value>,
    /// The run config (JSON).
    pub config: Option<serde_json::Value>,
    /// Metrics of the epoch that wrote it.
    pub metrics: Option<serde_json::Value>,
}

fn file_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::File {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        context: format!("{}: {what}", path.display()),
        source: e,
    }
}

/// The model's state dict (PyTorch names, forward order).
pub fn state_dict(model: &Model) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    model.net.state_dict(&mut v);
    v
}

impl Checkpoint {
    /// A checkpoint of `model`'s weights (epoch 0, no optimizer state).
    pub fn from_model(model: &Model) -> Result<Checkpoint> {
        let state = state_dict(model);
        let dtype = state.first().map_or(DType::F32, |(_, t)| t.dtype());
        Ok(Checkpoint {
            spec: model.spec.clone(),
            dtype,
            state,
            optim: None,
            epoch: 0,
            step: 0,
            seed: None,
            rng: None,
            config: None,
            metrics: None,
        })
    }

    /// The metadata map written into the file.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert(
            "spec".into(),
            serde_json::to_string(&self.spec).unwrap_or_default(),
        );
        m.insert("dtype".into(), self.dtype.to_string());
        m.insert("epoch".into(), self.epoch.to_string());
        m.insert("step".into(), self.step.to_string());
        if let Some(s) = self.seed {
            m.insert("seed".into(), s.to_string());
        }
        for (k, v) in [
            ("rng", &self.rng),
            ("config", &self.config),
            ("metrics", &self.metrics),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.to_string());
            }
        }
        if let Some(o) = &self.optim {
            m.insert("optim.kind".into(), o.kind.clone());
            m.insert("optim.state".into(), o.scalars.to_string());
        }
        m
    }

    /// Serialise to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut entries: Vec<(String, Tensor)> = self.state.clone();
        let mut seen: HashSet<&str> = HashSet::new();
        for (k, t) in &self.state {
            if !seen.insert(k) {
                return Err(Error::invalid("checkpoint", format!("tensor `{k}` twice")));
            }
            if t.dtype() != self.dtype {
                return Err(Error::dtype(
                    "checkpoint",
                    format!(
                        "tensor `{k}` is {}, the checkpoint {}",
                        t.dtype(),
                        self.dtype
                    ),
                ));
            }
        }
        if let Some(o) = &self.optim {
            for (k, t) in &o.tensors {
                entries.push((format!("{OPTIM_PREFIX}{k}"), t.clone()));
            }
        }
        tensors_to_bytes(&entries, Some(self.metadata()))
    }

    /// Write atomically to `path` (see [`write_atomic`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes().map_err(|e| file_err(path, e.to_string()))?;
        write_atomic(path, &bytes)
    }

    /// Read and validate a checkpoint (framing, metadata, spec, every tensor).
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Ok(load_impl(path.as_ref())?.0)
    }

    /// Read and validate a checkpoint and build its model with the stored weights.
    pub fn load_model(path: impl AsRef<Path>) -> Result<(Checkpoint, Model)> {
        load_impl(path.as_ref())
    }

    /// Build the model with this checkpoint's weights.
    pub fn to_model(&self) -> Result<Model> {
        let mut model = build_for(&self.spec, self.dtype)?;
        let map: HashMap<String, Tensor> = self.state.iter().cloned().collect();
        load_checked(&mut model, map, Path::new("<checkpoint>"), Some(self.dtype))?;
        Ok(model)
    }
}

fn build_for(spec: &ModelSpec, dtype: DType) -> Result<Model> {
    Model::build(spec, BuildOptions { dtype, seed: 0 })
}

fn meta_get<'a>(m: &'a HashMap<String, String>, path: &Path, key: &str) -> Result<&'a str> {
    m.get(key)
        .map(|s| s.as_str())
        .ok_or_else(|| file_err(path, format!("checkpoint metadata has no `{key}` entry")))
}

fn meta_json(
    m: &HashMap<String, String>,
    path: &Path,
    key: &str,
) -> Result<Option<serde_json::Value>> {
    m.get(key)
        .map(|s| {
            serde_json::from_str(s)
                .map_err(|e| file_err(path, format!("metadata `{key}` is not valid JSON: {e}")))
        })
        .transpose()
}

fn load_impl(path: &Path) -> Result<(Checkpoint, Model)> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    load_bytes(path, &bytes)
}

/// [`Checkpoint::load_model`] of a checkpoint file's bytes (`path` names it in errors):
/// the same validation, for callers that hold the bytes (and the fuzz targets).
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<(Checkpoint, Model)> {
    let (entries, meta) = parse_tensors(path, bytes, &|_| true)?;
    let meta = meta.unwrap_or_default();
    match meta.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(file_err(
                path,
                format!("unsupported checkpoint format `{f}` (this build reads `{FORMAT}`)"),
            ))
        }
        None => {
            return Err(file_err(
                path,
                "not a quadra checkpoint: no `format` metadata (a plain PyTorch state dict? \
                 convert it with `quadra-train import --from torch`)",
            ))
        }
    }
    let spec = ModelSpec::from_json(meta_get(&meta, path, "spec")?)
        .and_then(|s| s.check().map(|_| s))
        .map_err(|e| file_err(path, format!("metadata `spec`: {e}")))?;
    let dtype = match meta_get(&meta, path, "dtype")? {
        "f32" => DType::F32,
        "f64" => DType::F64,
        d => {
            return Err(file_err(
                path,
                format!("metadata `dtype` is `{d}`, expected f32 or f64"),
            ))
        }
    };
    let num = |key: &str| -> Result<u64> {
        meta_get(&meta, path, key)?
            .parse()
            .map_err(|e| file_err(path, format!("metadata `{key}`: {e}")))
    };
    let (epoch, step) = (num("epoch")?, num("step")?);
    let seed = if meta.contains_key("seed") {
        Some(num("seed")?)
    } else {
        None
    };
    let (mut model_entries, mut optim_tensors) = (HashMap::new(), Vec::new());
    for (k, t) in entries {
        match k.strip_prefix(OPTIM_PREFIX) {
            Some(rest) => optim_tensors.push((rest.to_string(), t)),
            None => {
                model_entries.insert(k, t);
            }
        }
    }
    for (k, t) in &optim_tensors {
        if let Some(problem) = bad_values(&format!("{OPTIM_PREFIX}{k}"), t) {
            return Err(file_err(path, problem));
        }
    }
    let optim = match meta.get("optim.kind") {
        Some(kind) => Some(OptimState {
            kind: kind.clone(),
            scalars: meta_json(&meta, path, "optim.state")?.unwrap_or(serde_json::Value::Null),
            tensors: optim_tensors,
        }),
        None if optim_tensors.is_empty() => None,
        None => {
            return Err(file_err(
                path,
                format!(
                    "tensor `{OPTIM_PREFIX}{}` without an `optim.kind` metadata entry",
                    optim_tensors[0].0
                ),
            ))
        }
    };
    let mut model = build_for(&spec, dtype).map_err(|e| file_err(path, e.to_string()))?;
    load_checked(&mut model, model_entries, path, Some(dtype))?;
    let ck = Checkpoint {
        spec,
        dtype,
        state: state_dict(&model),
        optim,
        epoch,
        step,
        seed,
        rng: meta_json(&meta, path, "rng")?,
        config: meta_json(&meta, path, "config")?,
        metrics: meta_json(&meta, path, "metrics")?,
    };
    Ok((ck, model))
}

/// Check `entries` against `model`'s state dict — every problem (missing, extra, wrong
/// shape, wrong dtype when `dtype` is given) is listed by name — then load them.
fn load_checked(
    model: &mut Model,
    mut entries: HashMap<String, Tensor>,
    path: &Path,
    dtype: Option<DType>,
) -> Result<()> {
    let want = state_dict(model);
    let want_names: HashSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    for (k, t) in &want {
        match entries.get(k) {
            None => missing.push(k.as_str()),
            Some(got) if got.shape() != t.shape() => problems.push(format!(
                "tensor `{k}` has shape {:?}, the model `{}` expects {:?}",
                got.shape(),
                model.spec.name,
                t.shape()
            )),
            Some(got) => {
                if let Some(d) = dtype {
                    if got.dtype() != d {
                        problems.push(format!(
                            "tensor `{k}` is {}, the checkpoint declares {d}",
                            got.dtype()
                        ));
                    }
                }
                problems.extend(bad_values(k, got));
            }
        }
    }
    let mut extra: Vec<&str> = entries
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !want_names.contains(k))
        .collect();
    extra.sort();
    fn list(v: &[&str]) -> String {
        let mut s = v
            .iter()
            .take(8)
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if v.len() > 8 {
            s += &format!(" and {} more", v.len() - 8);
        }
        s
    }
    if !missing.is_empty() {
        problems.push(format!(
            "missing tensor{} {} (model `{}`)",
            if missing.len() > 1 { "s" } else { "" },
            list(&missing),
            model.spec.name
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "unexpected tensor{} {} (not in model `{}`)",
            if extra.len() > 1 { "s" } else { "" },
            list(&extra),
            model.spec.name
        ));
    }
    if !problems.is_empty() {
        return Err(file_err(path, problems.join("; ")));
    }
    model
        .net
        .load_state_dict(&mut entries)
        .map_err(|e| file_err(path, e.to_string()))?;
    if let Some(k) = entries.keys().next() {
        return Err(file_err(
            path,
            format!("tensor `{k}` was not used by the model"),
        ));
    }
    Ok(())
}

/// What is wrong with a loaded tensor's values, if anything: every value must be finite,
/// and a batch-norm `running_var` (plain or a quadratic layer's) non-negative. The message
/// names the tensor, the first bad index, its value and how many are bad.
fn bad_values(name: &str, t: &Tensor) -> Option<String> {
    let variance = name.ends_with("running_var");
    let is_bad = |x: f64| !x.is_finite() || (variance && x < 0.0);
    let v = t.to_f64_vec();
    let i = v.iter().position(|&x| is_bad(x))?;
    let what = if v[i].is_finite() {
        "a negative variance"
    } else {
        "a non-finite value"
    };
    let count = v.iter().filter(|&&x| is_bad(x)).count();
    Some(format!(
        "tensor `{name}` holds {what} ({} at flat index {i}; {count} of {} values are bad): a \
         model built from it would answer every input with NaN or garbage",
        v[i],
        v.len()
    ))
}

/// Import a PyTorch state dict (safetensors, PyTorch names) into a model built from
/// `spec` in `dtype`. `num_batches_tracked` entries are ignored; a leading `module.`
/// (DataParallel) is stripped; missing/extra/misshapen entries and non-finite values are
/// errors naming them; F16/BF16 entries are read as `widen` says.
pub fn import_torch(
    path: impl AsRef<Path>,
    spec: &ModelSpec,
    dtype: DType,
    widen: Widen,
) -> Result<Model> {
    let path = path.as_ref();
    let (entries, _) =
        read_tensors_widening(path, &|k: &str| !k.ends_with("num_batches_tracked"), widen)?;
    let map: HashMap<String, Tensor> = entries
        .into_iter()
        .map(|(k, t)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                t,
            )
        })
        .collect();
    let mut model = build_for(spec, dtype).map_err(|e| file_err(path, e.to_string()))?;
    load_checked(&mut model, map, path, None)?;
    Ok(model)
}

/// Write `model`'s state dict as a PyTorch-loadable safetensors file (F32, atomically).
pub fn export_torch(model: &Model, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let sd = state_dict(model)
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = tensors_to_bytes(&sd, Some(meta)).map_err(|e| file_err(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

impl Model {
    /// Load a model from a checkpoint (validated: see [`crate::checkpoint`]), ready for
    /// `predict` (eval mode).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Ok(Checkpoint::load_model(path)?.1)
    }

    /// Write this model's weights as a checkpoint (epoch 0, no optimizer state), atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Checkpoint::from_model(self)?.save(path)
    }
}
