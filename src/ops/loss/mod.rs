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
use crate::device::GpuBuf;
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

/// The same, with the loss and count not yet read: on a GPU-path device they stay in the
/// buffer the kernel wrote until `LossMetrics::read`, so a training step can be queued
/// whole and its metrics read later (every N steps, with one host wait for all).
#[derive(Debug)]
pub struct XentDeferred {
    pub metrics: LossMetrics,
    pub grad: Tensor,
}

/// A softmax cross-entropy's (mean loss, correct rows): on the host already (CPU engine),
/// or in a device buffer of N rows [N f64 losses][N i32 correct flags] (GPU path), whose
/// read waits for the device's work up to the loss kernel.
#[derive(Debug)]
pub enum LossMetrics {
    Host { loss: f64, correct: usize },
    Device { rows: GpuBuf, n: usize },
}

impl LossMetrics {
    /// (mean loss, correct rows); one device→host copy for `Device`.
    pub fn read(self) -> Result<(f64, usize)> {
        let mut one = Self::read_all(vec![self])?;
        Ok(one.pop().expect("one metric in, one out"))
    }

    /// Every metric of `all`, in order, with one device→host copy (one host wait) for all
    /// the device buffers of each device: two or more are first gathered into one buffer by
    /// device-to-device copies, which queue without waiting.
    pub fn read_all(all: Vec<LossMetrics>) -> Result<Vec<(f64, usize)>> {
        let mut out: Vec<Option<(f64, usize)>> = vec![None; all.len()];
        // per device: (index in `all`, rows, n) of each of its buffers
        type OnDevice = (Device, Vec<(usize, GpuBuf, usize)>);
        let mut on: Vec<OnDevice> = Vec::new();
        for (i, m) in all.into_iter().enumerate() {
            match m {
                LossMetrics::Host { loss, correct } => out[i] = Some((loss, correct)),
                LossMetrics::Device { rows, n } => {
                    let d = rows.device();
                    match on.iter_mut().find(|(dd, _)| *dd == d) {
                        Some((_, v)) => v.push((i, rows, n)),
                        None => on.push((d, vec![(i, rows, n)])),
                    }
                }
            }
        }
        for (d, bufs) in on {
            let total: usize = bufs.iter().map(|(_, b, _)| b.len_bytes()).sum();
            let mut bytes = vec![0u8; total];
            if let [(_, only, _)] = bufs.as_slice() {
                only.read(&mut bytes)?;
            } else {
                let gathered = GpuBuf::new(d, total, Category::Workspace)?;
                let mut at = 0usize;
                for (_, b, _) in &bufs {
                    gathered.copy_from(at, b)?;
                    at += b.len_bytes();
                }
                gathered.read(&mut bytes)?;
            }
            let mut at = 0usize;
            for (i, b, n) in &bufs {
                out[*i] = Some(cuda::decode_rows(&bytes[at..at + b.len_bytes()], *n));
                at += b.len_bytes();
            }
        }
        Ok(out
            .into_iter()
            .map(|m| m.expect("every metric was read"))
            .collect())
    }
}

/// The mean loss over the batch, the correct rows and dL/dlogits (N, K) in the logits'
/// dtype, on their device (charged to workspace); logits (N, K), targets: N class indices
/// below K. On a GPU-path device loss and count come back in one device→host copy.
pub fn softmax_cross_entropy(
    logits: &Tensor,
    targets: &[usize],
    label_smoothing: f64,
) -> Result<XentOutput> {
    let d = softmax_cross_entropy_deferred(logits, targets, label_smoothing)?;
    let (loss, correct) = d.metrics.read()?;
    Ok(XentOutput {
        loss,
        correct,
        grad: d.grad,
    })
}

/// `softmax_cross_entropy` with the loss and count left where they were computed (read
/// them with `LossMetrics::read` / `read_all`): nothing waits for the device here.
pub fn softmax_cross_entropy_deferred(
    logits: &Tensor,
    targets: &[usize],
    label_smoothing: f64,
) -> Result<XentDeferred> {
    fn run<T: Float>(logits: &Tensor, targets: &[usize], ls: f64) -> Result<XentDeferred> {
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
        Ok(XentDeferred {
            metrics: LossMetrics::Host { loss, correct },
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
