//! Softmax cross-entropy with label smoothing (PyTorch's `F.cross_entropy`, mean
//! reduction), and accuracy counts.
//!
//! This file is the family's tensor-level API and its one `match` on the device: `cpu.rs`
//! holds the CPU engine's math (generic over f32/f64), `cuda.rs` the launch wrapper of
//! `cuda/loss.cu` (run on `Device::Cuda(n)` and `Device::Emu`). The callers check the
//! shapes and targets (`nn::loss`).

pub mod cpu;
pub mod cuda;

use crate::device::alloc::Category;
use crate::tensor::{Float, Tensor};
use crate::{with_dtype, Device, Error, Result};

/// Check logits (N, K) against N targets < K; returns (N, K).
pub fn check_targets(op: &str, logits: &Tensor, targets: &[usize]) -> Result<(usize, usize)> {
    let (n, k) = logits.dims2(&format!("{op}: logits"))?;
    if n == 0 || k == 0 {
        return Err(Error::shape(
            op,
            format!("logits {:?} are empty", logits.shape()),
        ));
    }
    if targets.len() != n {
        return Err(Error::shape(
            op,
            format!(
                "{} targets for a batch of {n} logits rows (shape {:?})",
                targets.len(),
                logits.shape()
            ),
        ));
    }
    if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= k) {
        return Err(Error::invalid(
            format!("{op} target"),
            format!("targets[{i}] = {t} is out of range for {k} classes"),
        ));
    }
    Ok((n, k))
}

/// What one softmax cross-entropy pass gives: the batch's mean loss, how many rows have
/// their argmax at the target (as `accuracy_count` counts), and dL/dlogits (N, K).
#[derive(Debug)]
pub struct XentOutput {
    pub loss: f64,
    pub correct: usize,
    pub grad: Tensor,
}

/// The mean loss over the batch, the correct rows and dL/dlogits (N, K) in the logits'
/// dtype, on their device (charged to workspace); logits (N, K), targets: N class indices
/// below K. On a GPU-path device loss and count come back in one device→host copy.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    targets: &[usize],
    label_smoothing: f64,
) -> Result<XentOutput> {
    fn run<T: Float>(logits: &Tensor, targets: &[usize], ls: f64) -> Result<XentOutput> {
        let (n, k) = logits.dims2("softmax_cross_entropy")?;
        let mut grad = Tensor::zeros_in(&[n, k], logits.dtype(), Category::Workspace)?;
        let loss = cpu::softmax_cross_entropy(
            logits.as_slice::<T>()?,
            targets,
            k,
            ls,
            grad.data_mut::<T>()?,
        );
        let correct = cpu::accuracy_count(logits.as_slice::<T>()?, targets, k);
        Ok(XentOutput {
            loss,
            correct,
            grad,
        })
    }
    match logits.device() {
        Device::Cpu => with_dtype!(logits.dtype(), T => run::<T>(logits, targets, label_smoothing)),
        Device::Cuda(_) | Device::Emu => {
            cuda::softmax_cross_entropy(logits, targets, label_smoothing)
        }
    }
}

/// How many rows of logits (N, K) have their largest entry (the first, on ties) at the
/// target class. Logits on a GPU-path device are copied to the host (N·K values) and
/// counted by the CPU routine (a training step gets the count from `softmax_cross_entropy`
/// instead, whose kernel applies the same rule on the device).
pub fn accuracy_count(logits: &Tensor, targets: &[usize]) -> Result<usize> {
    let (_, k) = logits.dims2("accuracy_count")?;
    match logits.device() {
        Device::Cpu => with_dtype!(logits.dtype(), T => {
            Ok(cpu::accuracy_count(logits.as_slice::<T>()?, targets, k))
        }),
        Device::Cuda(_) | Device::Emu => with_dtype!(logits.dtype(), T => {
            Ok(cpu::accuracy_count(&logits.to_vec::<T>()?, targets, k))
        }),
    }
}
