//! Trainable parameters: a tensor with its gradient and the roles (`ParamKind`) of its
//! segments. Below the layers (`nn` re-exports these) so that op families such as the
//! quadratic one can take a layer's parameters without depending on `nn`.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::device::alloc::Category;
use crate::tensor::{Float, Tensor};
use crate::{Error, Result};

/// The role of a parameter (or of a slice of a stacked parameter); optimizers use it to
/// form parameter groups (the quadratic optimizer treats second-order weights apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Weight of a first-order map (a conv/linear layer, or a quadratic layer's linear term).
    Weight,
    Bias,
    /// Weight of a branch that enters a product or square (second order).
    QuadWeight,
    /// Bias of a branch that enters a product or square.
    QuadBias,
    /// Batch-norm scale (gamma).
    NormScale,
    /// Batch-norm shift (beta).
    NormShift,
}

/// A contiguous slice of a parameter's elements with one role.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub range: Range<usize>,
    pub kind: ParamKind,
}

/// A trainable tensor with its gradient.
#[derive(Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Option<Tensor>,
    /// Roles of its element ranges; they cover the tensor, in order.
    pub segments: Vec<Segment>,
}

impl Param {
    /// A parameter of a single role; its storage is charged to `Category::Parameter`.
    pub fn new(value: Tensor, kind: ParamKind) -> Param {
        let n = value.numel();
        Self::with_segments(value, vec![Segment { range: 0..n, kind }])
    }

    pub fn with_segments(value: Tensor, segments: Vec<Segment>) -> Param {
        value.retag(Category::Parameter);
        Param {
            value,
            grad: None,
            segments,
        }
    }

    /// The role of the whole parameter when it has one role, else of its first segment.
    pub fn kind(&self) -> ParamKind {
        self.segments[0].kind
    }

    /// Add the gradient tensor `g` (the parameter's element count, on its device) into the
    /// gradient: the first one becomes the gradient (`ops::elementwise::into_gradient`),
    /// later ones are added (`ops::elementwise::add_assign`).
    pub fn accumulate_grad_tensor(&mut self, g: Tensor) -> Result<()> {
        if g.numel() != self.value.numel() || g.device() != self.value.device() {
            return Err(Error::shape(
                "Param::accumulate_grad",
                format!(
                    "gradient {:?} on {}, parameter {:?} on {}",
                    g.shape(),
                    g.device(),
                    self.value.shape(),
                    self.value.device()
                ),
            ));
        }
        match &mut self.grad {
            Some(t) => crate::ops::elementwise::add_assign(t, &g),
            None => {
                self.grad = Some(crate::ops::elementwise::into_gradient(
                    g,
                    self.value.shape(),
                )?);
                Ok(())
            }
        }
    }

    /// Add `g` (same length as the parameter) into the gradient, allocating it on first use.
    pub fn accumulate_grad<T: Float>(&mut self, g: &[T]) -> Result<()> {
        if g.len() != self.value.numel() {
            return Err(Error::shape(
                "Param::accumulate_grad",
                format!(
                    "gradient has {} elements, parameter {:?} has {}",
                    g.len(),
                    self.value.shape(),
                    self.value.numel()
                ),
            ));
        }
        match &mut self.grad {
            Some(t) => {
                for (a, &b) in t.data_mut::<T>()?.iter_mut().zip(g) {
                    *a += b;
                }
            }
            None => {
                let t = Tensor::from_vec_in(
                    g.to_vec(),
                    self.value.shape(),
                    self.value.device(),
                    Category::Gradient,
                )?;
                self.grad = Some(t);
            }
        }
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        self.grad = None;
    }
}
