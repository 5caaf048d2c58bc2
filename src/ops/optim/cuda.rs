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

/// The segments of one multi-tensor launch: its scalars and its table's rows (`W` words each).
struct Launch<K, const W: usize> {
    scalars: K,
    rows: Vec<[u64; W]>,
    /// The largest segment (sizes the grid).
    max_len: usize,
}

/// One optimizer step's segments on a CUDA-backend device, gathered parameter by
/// parameter and issued as one launch per distinct set of scalars, in first-seen order.
/// Every address in a row is checked against its tensor when added, and the tensors stay
/// alive here (their storages held) until the launches are queued.
struct Gather<K, const W: usize> {
    device: Option<Device>,
    launches: Vec<Launch<K, W>>,
    /// The storages the rows point into.
    keep: Vec<Tensor>,
}

impl<K: Copy + PartialEq, const W: usize> Gather<K, W> {
    fn new() -> Self {
        Gather {
            device: None,
            launches: Vec::new(),
            keep: Vec::new(),
        }
    }

    /// Error unless `device` is the device of the segments gathered so far.
    fn same_device(&mut self, op: &str, device: Device) -> Result<()> {
        match self.device {
            None => self.device = Some(device),
            Some(d) if d == device => {}
            Some(d) => {
                return Err(Error::dtype(
                    op,
                    format!("a parameter lives on {device}, the others on {d}"),
                ))
            }
        }
        Ok(())
    }

    fn push(&mut self, scalars: K, row: [u64; W], len: usize) {
        if len == 0 {
            return;
        }
        match self.launches.iter_mut().find(|l| l.scalars == scalars) {
            Some(l) => {
                l.rows.push(row);
                l.max_len = l.max_len.max(len);
            }
            None => self.launches.push(Launch {
                scalars,
                rows: vec![row],
                max_len: len,
            }),
        }
    }

    /// Uploads (or reuses) each launch's table and launches `kern` with (table, nseg,
    /// args(scalars)…).
    fn finish(
        self,
        kern: &Kernel,
        tables: &mut SegmentTables,
        args: impl Fn(&K) -> Vec<KArg>,
    ) -> Result<()> {
        let Some(device) = self.device else {
            return Ok(());
        };
        let rt = crate::device::runtime(device)?;
        for (slot, l) in self.launches.iter().enumerate() {
            let words: Vec<u64> = l.rows.iter().flatten().copied().collect();
            let table = tables.upload(slot, device, &words)?;
            let mut a = vec![
                KArg::Ptr(table),
                KArg::I32(int(kern.name, "segments", l.rows.len())?),
            ];
            a.extend(args(&l.scalars));
            // SAFETY: the table holds `nseg` rows of the kernel's segment struct (W 8-byte
            // words each: device addresses and element counts); every address was computed
            // from a tensor of this device that `keep` holds alive, checked in `push`'s
            // callers to cover its segment (numel and range), with the written tensors'
            // storages unshared (dev_ptr_mut) and distinct, so no row aliases another's
            // outputs; the table itself is a live pool block of the same device.
            unsafe { launch(rt, kern, LaunchConfig::elementwise(l.max_len), &a)? };
        }
        drop(self.keep);
        Ok(())
    }
}

/// The SGD segments of one optimizer step on a CUDA-backend device (see
/// `ops::optim::SgdUpdates`): one `sgd_multi_f32` launch per (lr, weight decay) set.
pub(crate) struct SgdGather(Gather<SgdScalars, 4>);

impl SgdGather {
    pub(crate) fn new() -> Self {
        SgdGather(Gather::new())
    }

    /// Adds the segments `segs` (range, scalars) of parameter `p`, its gradient `g` and its
    /// momentum buffer `buf` (required when momentum ≠ 0).
    pub(crate) fn add(
        &mut self,
        p: &mut Tensor,
        g: Tensor,
        buf: Option<&mut Tensor>,
        segs: &[(Range<usize>, SgdScalars)],
    ) -> Result<()> {
        let op = kernel::SGD_MULTI_F32.name;
        gpu_f32(op, "parameter", p)?;
        let dev = p.device();
        self.0.same_device(op, dev)?;
        check_all(op, dev, &[("gradient", &g)])?;
        let n = p.numel();
        let momentum = segs.iter().any(|(_, s)| s.momentum != 0.0);
        let buf = match (momentum, buf) {
            (false, _) => None,
            (true, Some(b)) => Some(b),
            (true, None) => return Err(Error::state("sgd: momentum without a momentum buffer")),
        };
        if let Some(b) = buf.as_deref() {
            check_all(op, dev, &[("momentum buffer", b)])?;
        }
        for (r, _) in segs {
            check_slices(op, n, r, &[("gradient", &g)])?;
            if let Some(b) = buf.as_deref() {
                check_slices(op, n, r, &[("momentum buffer", b)])?;
            }
        }
        let pp = p.dev_ptr_mut()?;
        let gp = g.dev_ptr()?;
        let bp = match buf {
            Some(b) => {
                let bp = b.dev_ptr_mut()?;
                self.0.keep.push(b.clone());
                Some(bp)
            }
            None => None,
        };
        for (r, s) in segs {
            let row = [
                at(pp, r.start),
                at(gp, r.start),
                bp.map_or(0, |b| at(b, r.start)),
                r.len() as u64,
            ];
            self.0.push(*s, row, r.len());
        }
        self.0.keep.push(p.clone());
        self.0.keep.push(g);
        Ok(())
    }

    /// Issues the gathered launches, their tables from (or into) `tables`.
    pub(crate) fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        self.0.finish(&kernel::SGD_MULTI_F32, tables, |s| {
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
/// `ops::optim::AdamUpdates`): one `adam_multi_f32` launch per set of scalars.
pub(crate) struct AdamGather(Gather<AdamScalars, 6>);

impl AdamGather {
    pub(crate) fn new() -> Self {
        AdamGather(Gather::new())
    }

    /// Adds the segments `segs` of parameter `p` with its gradient `g` and moments `m`, `v`
    /// (and `vmax`, required when a segment's scalars ask for AMSGrad).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        p: &mut Tensor,
        g: Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        vmax: Option<&mut Tensor>,
        segs: &[(Range<usize>, AdamScalars)],
    ) -> Result<()> {
        let op = kernel::ADAM_MULTI_F32.name;
        gpu_f32(op, "parameter", p)?;
        let dev = p.device();
        self.0.same_device(op, dev)?;
        let n = p.numel();
        let ts = [("gradient", &g), ("exp_avg", &*m), ("exp_avg_sq", &*v)];
        check_all(op, dev, &ts)?;
        let amsgrad = segs.iter().any(|(_, s)| s.amsgrad);
        let vmax = match (amsgrad, vmax) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => return Err(Error::state("adam: AMSGrad without max_exp_avg_sq")),
        };
        if let Some(vm) = vmax.as_deref() {
            check_all(op, dev, &[("max_exp_avg_sq", vm)])?;
        }
        for (r, _) in segs {
            check_slices(op, n, r, &ts)?;
            if let Some(vm) = vmax.as_deref() {
                check_slices(op, n, r, &[("max_exp_avg_sq", vm)])?;
            }
        }
        let pp = p.dev_ptr_mut()?;
        let gp = g.dev_ptr()?;
        let mp = m.dev_ptr_mut()?;
        let vp = v.dev_ptr_mut()?;
        let vmp = match vmax {
            Some(t) => {
                let a = t.dev_ptr_mut()?;
                self.0.keep.push(t.clone());
                Some(a)
            }
            None => None,
        };
        for (r, s) in segs {
            let row = [
                at(pp, r.start),
                at(gp, r.start),
                at(mp, r.start),
                at(vp, r.start),
                vmp.map_or(0, |a| at(a, r.start)),
                r.len() as u64,
            ];
            self.0.push(*s, row, r.len());
        }
        self.0.keep.extend([p.clone(), g, m.clone(), v.clone()]);
        Ok(())
    }

    /// Issues the gathered launches, their tables from (or into) `tables`.
    pub(crate) fn finish(self, tables: &mut SegmentTables) -> Result<()> {
        self.0.finish(&kernel::ADAM_MULTI_F32, tables, |s| {
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
