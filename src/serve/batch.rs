//! Dynamic batching: requests queue here, worker threads (plain OS threads, never the async
//! reactor's) merge what is waiting into one `Model::predict` of up to `max_samples` samples
//! — waiting at most `max_delay` after the first for more to arrive — and split the logits
//! back to their requests. It stops waiting early when no other admitted request is still
//! on its way (being received or decoded): then nothing can join, and waiting would only
//! add latency (with closed-loop clients it would add `max_delay` to every round).
//!
//! Merged answers can differ from one-at-a-time answers in the last bits: eval-mode layers
//! are per-sample (batch norm uses its running statistics), so only the GEMM's blocking and
//! summation order change with the batch size. `max_delay` zero turns merging off: every
//! request is its own model call, bit-identical to `Model::predict` of that request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::model::Model;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// One request's samples, (n, *sample) f32 row-major, and where its logits go:
/// (n, classes) as f64 (exact for f32 and bf16/f16 models) or an error message.
pub(crate) struct Job {
    pub x: Vec<f32>,
    pub n: usize,
    pub reply: oneshot::Sender<std::result::Result<Vec<f64>, String>>,
}

#[derive(Clone, Debug)]
pub(crate) struct BatchConfig {
    pub max_samples: usize,
    pub max_delay: Duration,
    pub workers: usize,
}

pub(crate) struct Batcher {
    tx: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Requests admitted but not yet submitted (see the module doc).
    arriving: Arc<AtomicUsize>,
}

/// Counts a request as arriving until dropped (at its submit, or its early answer).
pub(crate) struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often a waiting worker looks at the arriving count.
const POLL: Duration = Duration::from_micros(100);

impl Batcher {
    pub(crate) fn start(
        model: Arc<Model>,
        cfg: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Batcher> {
        // the dtype the model computes in: inputs arrive as f32 and are converted once per batch
        let dtype = crate::checkpoint::state_dict(&model)
            .first()
            .map_or(DType::F32, |(_, t)| t.dtype());
        let (tx, rx) = mpsc::channel::<Job>();
        // one receiver shared by the workers: whoever holds the lock gathers the next batch
        let rx = Arc::new(Mutex::new(rx));
        let arriving = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let (rx, model, cfg, metrics) =
                (rx.clone(), model.clone(), cfg.clone(), metrics.clone());
            let arriving = arriving.clone();
            let h = std::thread::Builder::new()
                .name(format!("quadra-predict-{i}"))
                .spawn(move || worker(&rx, &arriving, &model, dtype, &cfg, &metrics))
                .map_err(|e| Error::Io {
                    context: "cannot start a prediction thread".into(),
                    source: e,
                })?;
            workers.push(h);
        }
        Ok(Batcher {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            arriving,
        })
    }

    /// Count a request as on its way to `submit` while the guard lives.
    pub(crate) fn arriving(&self) -> Arriving {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        Arriving(self.arriving.clone())
    }

    /// Queue a job; `Err` gives it back when the batcher has stopped.
    pub(crate) fn submit(&self, job: Job) -> std::result::Result<(), Job> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Stop taking jobs, let the workers finish the queued ones, and join them.
    pub(crate) fn stop(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(
    rx: &Mutex<Receiver<Job>>,
    arriving: &AtomicUsize,
    model: &Model,
    dtype: DType,
    cfg: &BatchConfig,
    metrics: &Metrics,
) {
    // a job that did not fit the previous batch starts the next one
    let mut carry: Option<Job> = None;
    loop {
        let batch = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return, // stopped and drained
                },
            };
            let mut total = first.n;
            let mut batch = vec![first];
            if !cfg.max_delay.is_zero() {
                let deadline = Instant::now().checked_add(cfg.max_delay);
                while total < cfg.max_samples {
                    let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    // what is queued joins at once; past the deadline, or with nobody else on
                    // the way, the batch goes
                    let next = match rx.try_recv() {
                        Ok(j) => Ok(j),
                        Err(_) if wait.is_zero() || arriving.load(Ordering::SeqCst) == 0 => break,
                        Err(_) => rx.recv_timeout(wait.min(POLL)),
                    };
                    match next {
                        Ok(j) if total + j.n > cfg.max_samples => {
                            carry = Some(j);
                            break;
                        }
                        Ok(j) => {
                            total += j.n;
                            batch.push(j);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            batch
        };
        run(batch, model, dtype, metrics);
    }
}

fn run(mut batch: Vec<Job>, model: &Model, dtype: DType, metrics: &Metrics) {
    let total: usize = batch.iter().map(|j| j.n).sum();
    metrics.batch(total, batch.len());
    // a panic in the model must not take the worker (and every later request) with it
    let out = catch_unwind(AssertUnwindSafe(|| {
        predict(&mut batch, total, model, dtype)
    }))
    .unwrap_or_else(|_| Err(Error::state("the model panicked on this batch")));
    match out {
        Ok(logits) => {
            let c = model.spec.num_classes;
            let mut at = 0;
            for j in batch {
                let rows = logits[at * c..(at + j.n) * c].to_vec();
                at += j.n;
                // the client may have gone: nothing to tell it
                let _ = j.reply.send(Ok(rows));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for j in batch {
                let _ = j.reply.send(Err(msg.clone()));
            }
        }
    }
}

fn predict(batch: &mut [Job], total: usize, model: &Model, dtype: DType) -> Result<Vec<f64>> {
    let mut shape = vec![total];
    shape.extend_from_slice(&model.spec.input);
    let x = if let [one] = batch {
        // a lone request: its buffer becomes the tensor, no copy
        Tensor::from_vec(std::mem::take(&mut one.x), &shape)?
    } else {
        let mut data = Vec::with_capacity(batch.iter().map(|j| j.x.len()).sum());
        for j in batch.iter() {
            data.extend_from_slice(&j.x);
        }
        Tensor::from_vec(data, &shape)?
    };
    let x = if dtype == DType::F32 {
        x
    } else {
        x.to_dtype(dtype)?
    };
    let logits = model.predict(&x)?;
    let (n, c) = logits.dims2("prediction")?;
    if n != total || c != model.spec.num_classes {
        return Err(Error::state(format!(
            "the model answered ({n}, {c}) logits for {total} samples of {} classes",
            model.spec.num_classes
        )));
    }
    Ok(logits.to_f64_vec())
}
