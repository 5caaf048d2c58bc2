//! Softmax cross-entropy (PyTorch's `nn.CrossEntropyLoss(label_smoothing=ε)`, mean over the
//! batch) and top-1 accuracy. The loss is not a `Module`: it takes class targets and ends
//! the forward pass by returning the loss together with dL/dlogits.

use crate::ops::loss as ops;
pub use crate::ops::loss::{LossMetrics, XentDeferred, XentOutput};
use crate::tensor::Tensor;
use crate::{Error, Result};

const OP: &str = "SoftmaxCrossEntropy";

/// loss_i = (1 − ε)(−log p_{y_i}) + ε·mean_k(−log p_k), p = softmax(logits_i); the loss is
/// the mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxCrossEntropy {
    /// ε in [0, 1).
    pub label_smoothing: f64,
}

impl SoftmaxCrossEntropy {
    /// The loss with label smoothing ε = `label_smoothing`; an `Error::Invalid` outside
    /// [0, 1).
    pub fn new(label_smoothing: f64) -> Result<SoftmaxCrossEntropy> {
        if !(0.0..1.0).contains(&label_smoothing) {
            return Err(Error::invalid(
                OP,
                format!("label_smoothing must be in [0, 1), got {label_smoothing}"),
            ));
        }
        Ok(SoftmaxCrossEntropy { label_smoothing })
    }

    /// The mean loss over the batch and dL/dlogits (N, classes), in the logits' dtype and on
    /// their device (`ops::loss` picks the kernel).
    /// logits: (N, classes); targets: N class indices.
    pub fn forward(&self, logits: &Tensor, targets: &[usize]) -> Result<(f64, Tensor)> {
        let out = self.forward_with_accuracy(logits, targets)?;
        Ok((out.loss, out.grad))
    }

    /// `forward` and `accuracy_count` in one pass: on a GPU-path device the loss and the
    /// count come back in one device→host copy (the step's one synchronisation) instead of
    /// the loss plus a copy of the logits.
    pub fn forward_with_accuracy(&self, logits: &Tensor, targets: &[usize]) -> Result<XentOutput> {
        ops::check_targets(OP, logits, targets)?;
        ops::softmax_cross_entropy(logits, targets, self.label_smoothing)
    }

    /// `forward_with_accuracy` without reading the loss and count back: on a GPU-path
    /// device nothing waits here (read them with `LossMetrics::read` / `read_all`).
    pub fn forward_deferred(&self, logits: &Tensor, targets: &[usize]) -> Result<XentDeferred> {
        ops::check_targets(OP, logits, targets)?;
        ops::softmax_cross_entropy_deferred(logits, targets, self.label_smoothing)
    }
}

/// How many rows of logits (N, classes) have their largest entry (the first, on ties) at the
/// target class. Errors as `SoftmaxCrossEntropy::forward`. Logits on a GPU-path device are
/// copied to the host (N·classes values) and counted by the CPU routine, so ties and NaNs
/// are treated identically on every device.
pub fn accuracy_count(logits: &Tensor, targets: &[usize]) -> Result<usize> {
    ops::check_targets("accuracy_count", logits, targets)?;
    ops::accuracy_count(logits, targets)
}
