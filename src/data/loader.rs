//! Mini-batches of a [`Dataset`], built on background threads.
//!
//! Everything a batch holds is a pure function of (seed, epoch, batch index):
//! - the epoch's order is a Fisher–Yates shuffle driven by a ChaCha8 stream keyed by
//!   (seed, epoch) (or the identity when `shuffle` is off);
//! - batch `b` is positions `b·B .. min((b+1)·B, N)` of that order (`drop_last` drops a
//!   last, short batch);
//! - each sample is augmented with a generator keyed by (seed, epoch, sample index).
//!
//! So the batches do not depend on the number of workers or on timing, and an epoch can be
//! started at any batch (exact resume after a crash): `epoch_from(e, b)` yields what
//! `epoch(e)` yields from its `b`-th batch on.
//!
//! Threads: worker `w` of `W` builds batches `start + w, start + w + W, …` and hands them
//! over a bounded channel (`sync_channel(prefetch)`) of its own; the iterator takes them
//! round-robin, so they come out in order while up to `W·(prefetch + 1)` are being built
//! or waiting. Dropping the iterator early stops and joins the workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::Augment;
use super::{permutation, rng_for, Dataset};
use crate::device::alloc::Category;
use crate::tensor::Tensor;
use crate::{Device, Error, Result};

/// Domain tags that keep the shuffle and augmentation streams apart.
const SHUFFLE_STREAM: u64 = 0x5348_5546;
const AUGMENT_STREAM: u64 = 0x4155_474d;

#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle every epoch (from (seed, epoch)); off: dataset order.
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    pub seed: u64,
    /// Background threads building batches; 0 builds them on the caller's thread.
    pub workers: usize,
    /// Finished batches each worker may hold ahead of the consumer (at least 1).
    pub prefetch: usize,
    pub augment: Augment,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 2,
            augment: Augment::none(),
        }
    }
}

/// A dataset with a batching, shuffling and augmentation policy. Cheap to clone (the
/// images are shared).
#[derive(Clone, Debug)]
pub struct Loader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dataset: Dataset,
    cfg: LoaderConfig,
}

/// One batch: images (B, C, H, W) f32 charged to `Category::Data`, and their labels.
pub type Batch = (Tensor, Vec<usize>);

impl Loader {
    pub fn new(dataset: Dataset, cfg: LoaderConfig) -> Result<Loader> {
        if cfg.batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        if cfg.prefetch == 0 {
            return Err(Error::invalid("prefetch", "must be at least 1"));
        }
        if dataset.is_empty() {
            return Err(Error::invalid(
                "data loader",
                format!(
                    "dataset `{}` ({}) is empty",
                    dataset.name(),
                    dataset.source()
                ),
            ));
        }
        if cfg.drop_last && dataset.len() < cfg.batch_size {
            return Err(Error::invalid(
                "data loader",
                format!(
                    "drop_last with batch size {} leaves no batch of the {} samples of `{}`",
                    cfg.batch_size,
                    dataset.len(),
                    dataset.name()
                ),
            ));
        }
        cfg.augment.check(dataset.shape())?;
        Ok(Loader {
            inner: Arc::new(Inner { dataset, cfg }),
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.inner.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.dataset.len(), self.inner.cfg.batch_size);
        if self.inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples seen in one epoch (fewer than the dataset with `drop_last`).
    pub fn samples_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.dataset.len(), self.inner.cfg.batch_size);
        if self.inner.cfg.drop_last {
            n / b * b
        } else {
            n
        }
    }

    /// The order of the dataset's samples in `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.inner.order(epoch)
    }

    /// The dataset indices of batch `batch` of `epoch`.
    pub fn batch_indices(&self, epoch: u64, batch: usize) -> Result<Vec<usize>> {
        self.check_batch(batch, false)?;
        Ok(self.inner.slice(&self.inner.order(epoch), batch).to_vec())
    }

    /// Batch `batch` of `epoch`, built on this thread (what the iterators yield).
    pub fn batch(&self, epoch: u64, batch: usize) -> Result<Batch> {
        self.check_batch(batch, false)?;
        let order = self.inner.order(epoch);
        self.inner
            .build(epoch, self.inner.slice(&order, batch), &mut Vec::new())
    }

    fn check_batch(&self, batch: usize, end_ok: bool) -> Result<()> {
        let n = self.batches_per_epoch();
        if batch > n || (batch == n && !end_ok) {
            return Err(Error::invalid(
                "batch index",
                format!(
                    "{batch} is past the {n} batches of an epoch of `{}`",
                    self.inner.dataset.name()
                ),
            ));
        }
        Ok(())
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Result<EpochIter> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on (`start == batches_per_epoch()` gives
    /// an empty iterator): the exact tail of `epoch(epoch)`, for resuming.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<EpochIter> {
        self.check_batch(start, true)?;
        let end = self.batches_per_epoch();
        let order = Arc::new(self.inner.order(epoch));
        let workers = self.inner.cfg.workers.min(end - start);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Batch>>(self.inner.cfg.prefetch);
            let (inner, w_order, w_stop) = (self.inner.clone(), order.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("quadra-data-{w}"))
                .spawn(move || {
                    let mut scratch = Vec::new();
                    let mut b = start + w;
                    while b < end && !w_stop.load(Ordering::Relaxed) {
                        let r = inner.build(epoch, inner.slice(&w_order, b), &mut scratch);
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            break; // consumer gone, or the error is delivered
                        }
                        b += workers;
                    }
                });
            match spawned {
                Ok(h) => {
                    handles.push(h);
                    receivers.push(rx);
                }
                Err(e) => {
                    let mut it = EpochIter::empty(self.clone(), epoch, start, end);
                    it.receivers = receivers;
                    it.handles = handles;
                    it.stop = stop;
                    drop(it); // stops and joins the workers already started
                    return Err(Error::Io {
                        context: "data loader: starting a worker thread".into(),
                        source: e,
                    });
                }
            }
        }
        let mut it = EpochIter::empty(self.clone(), epoch, start, end);
        it.receivers = receivers;
        it.handles = handles;
        it.stop = stop;
        it.order = order;
        Ok(it)
    }
}

impl Inner {
    fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.cfg.shuffle {
            permutation(n, &mut rng_for(self.cfg.seed, epoch, SHUFFLE_STREAM))
        } else {
            (0..n).collect()
        }
    }

    fn slice<'a>(&self, order: &'a [usize], batch: usize) -> &'a [usize] {
        let b = self.cfg.batch_size;
        let lo = (batch * b).min(order.len());
        &order[lo..(lo + b).min(order.len())]
    }

    fn build(&self, epoch: u64, idx: &[usize], scratch: &mut Vec<f32>) -> Result<Batch> {
        let ds = &self.dataset;
        let shape = ds.shape();
        let per = ds.sample_len();
        let all = ds.images().as_slice::<f32>()?;
        let mut xs = vec![0f32; idx.len() * per];
        let mut ys = Vec::with_capacity(idx.len());
        let aug = &self.cfg.augment;
        for (dst, &i) in xs.chunks_exact_mut(per).zip(idx) {
            dst.copy_from_slice(&all[i * per..(i + 1) * per]);
            if !aug.is_identity() {
                let mut rng = rng_for(self.cfg.seed ^ AUGMENT_STREAM, epoch, i as u64);
                aug.apply(dst, shape, &mut rng, scratch)?;
            }
            ys.push(ds.labels()[i]);
        }
        let [c, h, w] = shape;
        let t = Tensor::from_vec_in(xs, &[idx.len(), c, h, w], Device::Cpu, Category::Data)?;
        Ok((t, ys))
    }
}

/// The batches of one epoch, in order; yields `Err` once and stops if building a batch
/// fails. Dropping it early stops and joins its worker threads.
pub struct EpochIter {
    loader: Loader,
    epoch: u64,
    next: usize,
    start: usize,
    end: usize,
    order: Arc<Vec<usize>>,
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    scratch: Vec<f32>,
    done: bool,
}

impl EpochIter {
    fn empty(loader: Loader, epoch: u64, start: usize, end: usize) -> EpochIter {
        EpochIter {
            loader,
            epoch,
            next: start,
            start,
            end,
            order: Arc::new(Vec::new()),
            receivers: Vec::new(),
            handles: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            scratch: Vec::new(),
            done: false,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The index (within the epoch) of the batch the next call to `next` yields: what a
    /// checkpoint records to resume with `epoch_from(epoch, next_batch)`.
    pub fn next_batch(&self) -> usize {
        self.next
    }

    /// Batches in the whole epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.end
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // dropping the receivers makes any blocked `send` return, so the joins finish
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done || self.next >= self.end {
            return None;
        }
        let b = self.next;
        let r = if self.receivers.is_empty() {
            let inner = &self.loader.inner;
            if self.order.is_empty() {
                self.order = Arc::new(inner.order(self.epoch));
            }
            inner.build(self.epoch, inner.slice(&self.order, b), &mut self.scratch)
        } else {
            let w = (b - self.start) % self.receivers.len();
            self.receivers[w].recv().unwrap_or_else(|_| {
                Err(Error::state(format!(
                    "data loader worker {w} stopped before delivering batch {b} of epoch {} \
                     (it panicked)",
                    self.epoch
                )))
            })
        };
        self.next += 1;
        if r.is_err() {
            self.done = true;
            self.shutdown();
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done { 0 } else { self.end - self.next };
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
