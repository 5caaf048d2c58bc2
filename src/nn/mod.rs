//! Layers with explicit forward and backward, in the spirit of llm.c: a `Module` owns its
//! parameters and decides what it keeps for backward; containers call their children in
//! order and in reverse. There is no general tape: models are trees built from specs.

pub mod act;
pub mod container;
pub mod conv;
pub mod gradcheck;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod quadratic;
pub mod spec;

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::device::alloc::{self, Category};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// What a quadratic layer keeps between forward and backward (hybrid back-propagation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackpropMode {
    /// Keep what reverse-mode autodiff would keep: every branch output backward reads.
    #[default]
    Stored,
    /// Keep only the layer input (and per-channel statistics); backward recomputes the
    /// branch outputs with one GEMM and applies closed-form gradients.
    Recompute,
}

impl std::str::FromStr for BackpropMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stored" => Ok(BackpropMode::Stored),
            "recompute" => Ok(BackpropMode::Recompute),
            _ => Err(Error::invalid(
                "backprop mode",
                format!("`{s}`: expected `stored` or `recompute`"),
            )),
        }
    }
}

impl std::fmt::Display for BackpropMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackpropMode::Stored => "stored",
            BackpropMode::Recompute => "recompute",
        })
    }
}

pub use crate::ops::param::{Param, ParamKind, Segment};

/// A callback given (layer path, output) for every child of every `Sequential` (see
/// `set_forward_observer`).
pub type ForwardObserver = Box<dyn FnMut(&str, &Tensor)>;

thread_local! {
    static FORWARD_OBSERVER: RefCell<Option<ForwardObserver>> = const { RefCell::new(None) };
}

/// Install (or, with `None`, remove) this thread's forward observer and return the previous
/// one. While installed, `Sequential::forward` and `Sequential::infer` call it with each
/// child's path and output, so every layer's output is seen once (a residual block's by its
/// parent, its own layers' by its inner `Sequential`). The analysis tools use it to look at
/// activations; it must not keep clones of the outputs (layers may write to them later).
pub fn set_forward_observer(observer: Option<ForwardObserver>) -> Option<ForwardObserver> {
    FORWARD_OBSERVER.with(|o| std::mem::replace(&mut *o.borrow_mut(), observer))
}

/// Give `y`, the output of the layer at `path`, to this thread's forward observer, if any
/// (skipped when called from inside the observer itself).
pub fn observe_output(path: &str, y: &Tensor) {
    FORWARD_OBSERVER.with(|o| {
        if let Ok(mut o) = o.try_borrow_mut() {
            if let Some(f) = o.as_mut() {
                f(path, y);
            }
        }
    });
}

/// The `Module` methods shared by the first-order weight-and-bias layers (`Conv2d`,
/// `Linear`): fields `name`, `weight`, `bias`, `saved` (the input x, kept for backward) and
/// methods `run(&self, x)` / `back(&mut self, g)`; PyTorch's `weight` / `bias` names.
macro_rules! weight_bias_layer {
    () => {
        fn infer(&self, x: &Tensor) -> Result<Tensor> {
            let _s = self.name.scope();
            self.run(x)
        }
        fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
            let _s = self.name.scope();
            let y = self.run(x)?;
            self.saved = Some(x.keep_for_backward());
            Ok(y)
        }
        fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
            let _s = self.name.scope();
            self.back(g)
        }
        fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
            $crate::nn::visit_weight_bias(&self.name, &mut self.weight, &mut self.bias, f);
        }
        fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
            $crate::nn::state_weight_bias(&self.name, &self.weight, &self.bias, out);
        }
        fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
            $crate::nn::load_weight_bias(&self.name, &mut self.weight, &mut self.bias, map)
        }
        fn clear_saved(&mut self) {
            self.saved = None;
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    };
}
pub(crate) use weight_bias_layer;

/// A layer's full dotted path (its PyTorch state-dict prefix) and its interned id, which
/// the tracking allocator charges the layer's allocations to.
#[derive(Clone, Debug)]
pub struct LayerName {
    /// The dotted path (`layer1.0.conv1`; `""` for a model's root).
    pub path: String,
    /// The path's interned id in the allocation tracker.
    pub id: u32,
}

impl LayerName {
    /// The name of the layer at `path`, interning the path in the tracker.
    pub fn new(path: &str) -> Self {
        LayerName {
            path: path.to_string(),
            id: alloc::layer_id(path),
        }
    }
    /// `path.leaf`, or `leaf` at the root.
    pub fn key(&self, leaf: &str) -> String {
        if self.path.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.path)
        }
    }
    /// Charge allocations on this thread to this layer until the guard drops.
    pub fn scope(&self) -> alloc::ScopeGuard {
        alloc::scope_layer(self.id)
    }
}

/// A network layer or container.
pub trait Module: Send + Sync + Any {
    /// The layer's full dotted path ("layer1.0.conv1"); empty for a root container.
    fn path(&self) -> &str;

    /// A short description for messages and tables ("Conv2d(3→16, k3, s1)").
    fn describe(&self) -> String;

    /// Eval-mode forward: nothing is kept, batch norm uses running statistics. Takes `&self`
    /// so that one model serves many threads.
    fn infer(&self, x: &Tensor) -> Result<Tensor>;

    /// Training-mode forward: keeps what `backward` needs.
    fn forward(&mut self, x: &Tensor) -> Result<Tensor>;

    /// Given dL/d(output of the last `forward`), accumulate parameter gradients, release
    /// what forward kept, and return dL/d(input).
    fn backward(&mut self, grad_out: &Tensor) -> Result<Tensor>;

    /// Visit every parameter with its full state-dict name.
    fn visit_params(&mut self, _f: &mut dyn FnMut(&str, &mut Param)) {}

    /// Visit every tensor of the module's state that is not a parameter (batch-norm running
    /// statistics), with its full state-dict name. Containers forward to their children.
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(&str, &mut Tensor)) {}

    /// Append state-dict entries (parameters and buffers) under PyTorch names.
    fn state_dict(&self, _out: &mut Vec<(String, Tensor)>) {}

    /// Take this module's entries out of `map` and load them; a missing entry or a shape
    /// mismatch is an error naming the entry.
    fn load_state_dict(&mut self, _map: &mut HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }

    /// Set the back-propagation mode of every quadratic layer below: `plan` maps a layer
    /// path to its mode.
    fn set_backprop(&mut self, _plan: &dyn Fn(&str) -> BackpropMode) {}

    /// Drop whatever a forward kept (after an aborted step).
    fn clear_saved(&mut self) {}

    /// Direct children, in forward order.
    fn children(&self) -> Vec<&dyn Module> {
        Vec::new()
    }

    /// The module as `Any`, to downcast to its concrete type (`QuadConv2d`, …).
    fn as_any(&self) -> &dyn Any;
}

/// Move every parameter (value and gradient) and buffer of `m` to `device`, keeping their
/// accounting categories; drops whatever a forward kept. The first failure is returned
/// (naming the tensor); tensors already moved stay moved.
pub fn module_to_device(m: &mut dyn Module, device: crate::Device) -> Result<()> {
    m.clear_saved();
    let mut err: Option<Error> = None;
    let mut mv = |name: &str, t: &mut Tensor| {
        if err.is_none() {
            match t.to_device(device) {
                Ok(moved) => *t = moved,
                Err(e) => err = Some(Error::invalid(format!("tensor `{name}`"), e.to_string())),
            }
        }
    };
    m.visit_params(&mut |name, p| {
        mv(name, &mut p.value);
        if let Some(g) = &mut p.grad {
            mv(name, g);
        }
    });
    m.visit_buffers(&mut |name, t| mv(name, t));
    err.map_or(Ok(()), Err)
}

/// Take entry `key` out of `map`, checking its shape; error names the entry.
pub fn take_entry(map: &mut HashMap<String, Tensor>, key: &str, shape: &[usize]) -> Result<Tensor> {
    let t = map
        .remove(key)
        .ok_or_else(|| Error::invalid("state dict", format!("missing entry `{key}`")))?;
    if t.shape() != shape {
        return Err(Error::shape(
            "load_state_dict",
            format!(
                "entry `{key}` has shape {:?}, the model expects {:?}",
                t.shape(),
                shape
            ),
        ));
    }
    Ok(t)
}

/// Replace a parameter's value from a state-dict entry (converted to its dtype).
pub fn load_param(p: &mut Param, map: &mut HashMap<String, Tensor>, key: &str) -> Result<()> {
    let t = take_entry(map, key, p.value.shape())?;
    // the loaded values go where the parameter lives (see `BatchNorm::load_buffer`)
    let t = t.to_dtype(p.value.dtype())?.to_device(p.value.device())?;
    t.retag(Category::Parameter);
    p.value = t;
    p.grad = None;
    Ok(())
}

/// `visit_params` of a first-order layer: `{path}.weight` and, when present, `{path}.bias`.
pub fn visit_weight_bias(
    name: &LayerName,
    w: &mut Param,
    b: &mut Option<Param>,
    f: &mut dyn FnMut(&str, &mut Param),
) {
    f(&name.key("weight"), w);
    if let Some(b) = b {
        f(&name.key("bias"), b);
    }
}

/// `state_dict` of a first-order layer (PyTorch names `weight`, `bias`).
pub fn state_weight_bias(
    name: &LayerName,
    w: &Param,
    b: &Option<Param>,
    out: &mut Vec<(String, Tensor)>,
) {
    out.push((name.key("weight"), w.value.clone()));
    if let Some(b) = b {
        out.push((name.key("bias"), b.value.clone()));
    }
}

/// `load_state_dict` of a first-order layer; errors name the missing or misshapen entry.
pub fn load_weight_bias(
    name: &LayerName,
    w: &mut Param,
    b: &mut Option<Param>,
    map: &mut HashMap<String, Tensor>,
) -> Result<()> {
    load_param(w, map, &name.key("weight"))?;
    if let Some(b) = b {
        load_param(b, map, &name.key("bias"))?;
    }
    Ok(())
}

/// Error unless the output gradient `g` has the shape and dtype of the output the layer
/// produced (the message names the layer and both shapes).
pub fn check_grad(path: &str, g: &Tensor, shape: &[usize], dtype: crate::DType) -> Result<()> {
    if g.shape() != shape || g.dtype() != dtype {
        return Err(Error::shape(
            path,
            format!(
                "output gradient {:?} ({}), expected {:?} ({dtype})",
                g.shape(),
                g.dtype(),
                shape
            ),
        ));
    }
    Ok(())
}

/// Error unless x has the dtype of the layer's parameter `p` (the message names the layer).
pub fn check_dtype(path: &str, x: &Tensor, p: &Tensor) -> Result<()> {
    if x.dtype() != p.dtype() {
        return Err(Error::dtype(
            path,
            format!(
                "input is {}, the layer's parameters are {}",
                x.dtype(),
                p.dtype()
            ),
        ));
    }
    Ok(())
}

/// Adds a first-order layer's weight and bias gradients and returns its input gradient.
pub fn add_weight_bias_grads(
    path: &str,
    weight: &mut Param,
    bias: Option<&mut Param>,
    gr: crate::ops::conv::ConvGrads,
) -> Result<Tensor> {
    weight.accumulate_grad_tensor(gr.dw)?;
    if let Some(b) = bias {
        b.accumulate_grad_tensor(gr.db)?;
    }
    gr.dx
        .ok_or_else(|| Error::state(format!("{path}: backward computed no input gradient")))
}

/// The error for `backward` called without a matching `forward`.
pub fn no_forward(path: &str) -> Error {
    Error::no_forward(path)
}
