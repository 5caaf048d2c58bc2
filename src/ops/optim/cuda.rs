//! Optimizer updates on the CUDA backend (cuda/optim.cu): multi-tensor SGD and Adam(W)
//! steps — every segment of every parameter that shares one set of scalars updated in
//! place by one launch, from a table of segment addresses kept on the device between steps
//! — and the f64 sum of squares that gradient clipping needs. `src/optim` computes the
//! per-segment scalars exactly as its CPU path does.

use std::ops::Range;

use crate::device::alloc::Category;
use crate::device::Device;
use crate::device::{GpuBuf, KArg};
use crate::ops::launch::{
    check_all, gpu_f32, int, kernel, launch, Kernel, LaunchConfig, REDUCE_BLOCK,
};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// SGD scalars of one launch (f32, as the CPU engine's f32 path rounds them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdScalars {
    pub lr: f32,
    pub weight_decay: f32,
    /// μ; 0: plain SGD (no momentum buffer).
    pub momentum: f32,
    /// 1 − dampening.
    pub one_minus_dampening: f32,
    pub nesterov: bool,
    /// The momentum buffers' first step (buf = d). A launch argument, not a table column:
    /// the table then stays the same from the first step on.
    pub first: bool,
}

/// Adam(W) scalars of one launch at one step t (f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    /// lr / (1 − β1ᵗ).
    pub step_size: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// √(1 − β2ᵗ).
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// Coupled (Adam) weight decay; unused when `decoupled`.
    pub weight_decay: f32,
    /// AdamW's 1 − lr·wd.
    pub decay: f32,
    pub decoupled: bool,
    /// AMSGrad: every segment of the launch has a `max_exp_avg_sq`.
    pub amsgrad: bool,
}

/// Error unless every tensor has `n` elements and `range` lies inside `[0, n)`.
fn check_slices(op: &str, n: usize, range: &Range<usize>, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (what, t) in ts {
        crate::ensure_shape!(
            t.numel() == n,
            op,
            "{what} has shape {:?} ({} elements), the parameter {n}",
            t.shape(),
            t.numel()
        );
    }
    crate::ensure_shape!(
        range.start <= range.end && range.end <= n,
        op,
        "segment {range:?} is outside the parameter's {n} elements"
    );
    Ok(())
}

/// The device address of element `i` of a GPU tensor whose storage starts at `p`.
fn at(p: u64, i: usize) -> u64 {
    p + (i * 4) as u64
}

/// The device-side tables of an optimizer's multi-tensor launches, kept between steps: a
/// table is uploaded again only when its rows change (a parameter, gradient or state
/// tensor at another address, a new segment). Parameters and optimizer state keep their
/// addresses; gradients come from the caching pool and today do not (each step's table is
/// then one host→device copy of 32 B per SGD segment, 48 B per Adam segment — the
/// argument block of the launch, as PyTorch's multi-tensor kernels pass their addresses
/// as launch parameters). Held by the optimizer; one slot per launch, in launch order.
#[derive(Debug, Default)]
pub struct SegmentTables {
    slots: Vec<Option<(Vec<u64>, GpuBuf)>>,
}

impl SegmentTables {
    /// The device address of a table holding `words` for launch `slot`: the cached one
    /// when its words are these, else an upload — into the slot's buffer when the size is
    /// the same, else into a new one.
    fn upload(&mut self, slot: usize, device: Device, words: &[u64]) -> Result<u64> {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        let cached = &mut self.slots[slot];
        let bytes = || -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
        match cached {
            Some((w, buf)) if buf.device() == device && w.len() == words.len() => {
                if w.as_slice() != words {
                    // the same rows at other addresses: overwritten in place, in stream
                    // order after the launches that read the old rows (no allocation)
                    buf.write(&bytes())?;
                    w.copy_from_slice(words);
                }
            }
            _ => {
                // optimizer state: a persistent block of its own, held for the whole run
                let buf = GpuBuf::from_host(device, &bytes(), Category::OptimizerState)?;
                *cached = Some((words.to_vec(), buf));
            }
        }
        Ok(cached.as_ref().map_or(0, |(_, b)| b.ptr()))
    }
}

/// The segments of one multi-tensor launch: its scalars and its table's rows, flattened
/// (one device address per column, then the segment's element count).
struct Launch<K> {
    scalars: K,
    words: Vec<u64>,
    rows: usize,
    /// The largest segment (sizes the grid).
    max_len: usize,
}

/// One column of a table row: the tensor (`None`: a null address, a state the launch does
/// not use), its name in errors, and whether the kernel writes it.
type Column<'a> = (&'static str, Option<&'a mut Tensor>, bool);

/// One optimizer step's segments on a CUDA-backend device, gathered parameter by
/// parameter and issued as one launch per distinct set of scalars, in first-seen order.
/// Every address in a row is checked against its tensor when added, and the tensors stay
/// alive here (their storages held) until the launches are queued.
struct Gather<K> {
    kern: &'static Kernel,
    device: Option<Device>,
    launches: Vec<Launch<K>>,
    /// The storages the rows point into.
    keep: Vec<Tensor>,
}

impl<K: Copy + PartialEq> Gather<K> {
    fn new(kern: &'static Kernel) -> Self {
        Gather {
            kern,
            device: None,
            launches: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// Adds one parameter's segments `segs` (range, scalars): a row per segment, holding
    /// the address of its first element in each of `cols` (the parameter first, in the
    /// kernel's column order), then its length. Every tensor must be f32 on the device of
    /// the segments gathered so far, with the parameter's element count; written ones
    /// must not share their storage.
    fn add(&mut self, cols: &mut [Column<'_>], segs: &[(Range<usize>, K)]) -> Result<()> {
        let op = self.kern.name;
        let (n, dev) = match &cols[0].1 {
            Some(p) => {
                gpu_f32(op, cols[0].0, p)?;
                (p.numel(), p.device())
            }
            None => return Err(Error::state(format!("{op}: a row without its parameter"))),
        };
        match self.device {
            None => self.device = Some(dev),
            Some(d) if d == dev => {}
            Some(d) => {
                return Err(Error::dtype(
                    op,
                    format!("a parameter lives on {dev}, the others on {d}"),
                ))
            }
        }
        for (what, t, _) in cols.iter() {
            if let Some(t) = t.as_deref() {
                check_all(op, dev, &[(what, t)])?;
                for (r, _) in segs {
                    check_slices(op, n, r, &[(what, t)])?;
                }
            }
        }
        let mut base = Vec::with_capacity(cols.len());
        for (_, t, written) in cols.iter_mut() {
            base.push(match t.as_deref_mut() {
                Some(t) if *written => Some(t.dev_ptr_mut()?),
                Some(t) => Some(t.dev_ptr()?),
                None => None,
            });
        }
        for (r, scalars) in segs {
            if r.is_empty() {
                continue;
            }
            let i = match self.launches.iter().position(|l| l.scalars == *scalars) {
                Some(i) => i,
                None => {
                    self.launches.push(Launch {
                        scalars: *scalars,
                        words: Vec::new(),
                        rows: 0,
                        max_len: 0,
                    });
                    self.launches.len() - 1
                }
            };
            let l = &mut self.launches[i];
            l.words
                .extend(base.iter().map(|b| b.map_or(0, |p| at(p, r.start))));
            l.words.push(r.len() as u64);
            l.rows += 1;
            l.max_len = l.max_len.max(r.len());
        }
        self.keep
            .extend(cols.iter().filter_map(|(_, t, _)| t.as_deref().cloned()));
        Ok(())
    }

    /// Uploads (or reuses) each launch's table and launches the kernel with (table, nseg,
    /// args(scalars)…).
    fn finish(self, tables: &mut SegmentTables, args: impl Fn(&K) -> Vec<KArg>) -> Result<()> {
        let Some(device) = self.device else {
            return Ok(());
        };
        let rt = crate::device::runtime(device)?;
        for (slot, l) in self.launches.iter().enumerate() {
            let table = tables.upload(slot, device, &l.words)?;
            let mut a = vec![
                KArg::Ptr(table),
                KArg::I32(int(self.kern.name, "segments", l.rows)?),
            ];
            a.extend(args(&l.scalars));
            // SAFETY: the table holds `nseg` rows of the kernel's segment struct (8-byte
            // words: one device address per column, then the element count); every address
            // was computed in `add` from a tensor of this device that `keep` holds alive,
            // checked to cover its segment (numel and range), with the written tensors'
            // storages unshared (dev_ptr_mut) and distinct, so no row aliases another's
            // outputs; a null column only where the kernel does not read it (no momentum
            // buffer without momentum, no max_exp_avg_sq without AMSGrad); the table itself
            // is a live pool block of the same device.
            unsafe { launch(rt, self.kern, LaunchConfig::elementwise(l.max_len), &a)? };
        }
        drop(self.keep);
        Ok(())
    }
}

/// The SGD segments of one optimizer step on a CUDA-backend device (see
/// `ops::optim::SgdUpdates`): one `sgd_multi_f32` launch per (lr, weight decay) set; rows
/// (p, g, buf, n).
pub(crate) struct SgdGather(Gather<SgdScalars>);

impl SgdGather {
    pub(crate) fn new() -> Self {
        SgdGather(Gather::new(&kernel::SGD_MULTI_F32))
    }

    /// Adds the segments `segs` (range, scalars) of parameter `p`, its gradient `g` and its
    /// momentum buffer `buf` (required when momentum ≠ 0).
    pub(crate) fn add(
        &mut self,
        p: &mut Tensor,
        mut g: Tensor,
        buf: Option<&mut Tensor>,
        segs: &[(Range<usize>, SgdScalars)],
    ) -> Result<()> {
        let momentum = segs.iter().any(|(_, s)| s.momentum != 0.0);
        let buf = match (momentum, buf) {
            (false, _) => None,
            (true, Some(b)) => Some(b),
            (true, None) => return Err(Error::state("sgd: momentum without a momentum buffer")),
        };
        let mut cols = [
            ("parameter", Some(p), true),
            ("gradient", Some(&mut g), false),
            ("momentum buffer", buf, true),
        ];
        self.0.add(&mut cols, segs)
    }

    /// Issues the gathered launches, their tables from (or into) `tables`.
    pub(crate) fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        self.0.finish(tables, |s| {
            vec![
                KArg::F32(s.lr),
                KArg::F32(s.weight_decay),
                KArg::F32(s.momentum),
                KArg::F32(s.one_minus_dampening),
                KArg::I32(s.first as i32),
                KArg::I32(s.nesterov as i32),
            ]
        })
    }
}

/// The Adam segments of one optimizer step on a CUDA-backend device (see
/// `ops::optim::AdamUpdates`): one `adam_multi_f32` launch per set of scalars; rows
/// (p, g, m, v, vmax, n).
pub(crate) struct AdamGather(Gather<AdamScalars>);

impl AdamGather {
    pub(crate) fn new() -> Self {
        AdamGather(Gather::new(&kernel::ADAM_MULTI_F32))
    }

    /// Adds the segments `segs` of parameter `p` with its gradient `g` and moments `m`, `v`
    /// (and `vmax`, required when a segment's scalars ask for AMSGrad).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        p: &mut Tensor,
        mut g: Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        vmax: Option<&mut Tensor>,
        segs: &[(Range<usize>, AdamScalars)],
    ) -> Result<()> {
        let amsgrad = segs.iter().any(|(_, s)| s.amsgrad);
        let vmax = match (amsgrad, vmax) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => return Err(Error::state("adam: AMSGrad without max_exp_avg_sq")),
        };
        let mut cols = [
            ("parameter", Some(p), true),
            ("gradient", Some(&mut g), false),
            ("exp_avg", Some(m), true),
            ("exp_avg_sq", Some(v), true),
            ("max_exp_avg_sq", vmax, true),
        ];
        self.0.add(&mut cols, segs)
    }

    /// Issues the gathered launches, their tables from (or into) `tables`.
    pub(crate) fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        self.0.finish(tables, |s| {
            vec![
                KArg::F32(s.step_size),
                KArg::F32(s.beta1),
                KArg::F32(s.beta2),
                KArg::F32(s.bc2_sqrt),
                KArg::F32(s.eps),
                KArg::F32(s.weight_decay),
                KArg::F32(s.decay),
                KArg::I32(s.decoupled as i32),
                KArg::I32(s.amsgrad as i32),
            ]
        })
    }
}

/// Most blocks one tensor's sum of squares uses.
const SUMSQ_BLOCKS: usize = 64;

/// Σ over `ts` of Σ x² (f64), for tensors on one GPU-path device: one launch per tensor
/// writes per-block partials into a shared buffer, which is read back once and added in a
/// fixed order (the result does not depend on timing).
pub fn sum_squares(ts: &[&Tensor]) -> Result<f64> {
    let kern = &kernel::SUMSQ_PARTIAL_F32;

    let op = kern.name;
    let Some(first) = ts.first() else {
        return Ok(0.0);
    };
    let rt = gpu_f32(op, "tensor", first)?;
    let dev: Device = first.device();
    let grids: Vec<usize> = ts
        .iter()
        .map(|t| {
            t.numel()
                .div_ceil(REDUCE_BLOCK as usize)
                .clamp(1, SUMSQ_BLOCKS)
        })
        .collect();
    let total: usize = grids.iter().sum();
    let partials = GpuBuf::new(dev, total * 8, Category::Workspace)?;
    let mut slot = 0;
    for (t, &grid) in ts.iter().zip(&grids) {
        check_all(op, dev, &[("tensor", t)])?;
        let args = [
            KArg::Ptr(t.dev_ptr()?),
            KArg::I64(t.numel() as i64),
            KArg::Ptr(partials.ptr() + (slot * 8) as u64),
        ];
        let cfg = LaunchConfig::new(grid as u32, REDUCE_BLOCK, 0);
        // SAFETY: (const float* x, long long n, double* partial); x holds n f32 elements
        // (n = numel, dtype checked); the kernel writes partial[0, grid), which is the slice
        // [slot, slot + grid) of `partials` (total = Σ grids doubles); block = REDUCE_BLOCK,
        // a multiple of 32 as block_sum requires.
        unsafe { launch(rt, kern, cfg, &args)? };
        slot += grid;
    }
    let mut bytes = vec![0u8; total * 8];
    partials.read(&mut bytes)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .sum())
}

/// x ← alpha · x, in place (x's storage must not be shared).
pub fn scale_in_place(x: &mut Tensor, alpha: f32) -> Result<()> {
    let kern = &kernel::SCALE_F32;

    let op = kern.name;
    let rt = gpu_f32(op, "x", x)?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let p = x.dev_ptr_mut()?;
    let args = [
        KArg::F32(alpha),
        KArg::Ptr(p),
        KArg::Ptr(p),
        KArg::I64(n as i64),
    ];
    // SAFETY: (float alpha, const float* x, float* y, long long n) of elementwise.cu, which
    // allows y to alias x (no __restrict__); x holds n f32 elements and is unshared.
    unsafe { launch(rt, kern, LaunchConfig::elementwise(n), &args) }
}
