//! Safe drivers for the emulator's self-test kernels (`cuda/emu/selftest.cu`): block-level
//! shared memory, warp shuffles and votes, atomics, half/bf16 conversions, and the errors a
//! broken kernel must produce (barrier divergence, deadlock, trap, an out-of-bounds read
//! under AddressSanitizer).

use super::{launch, reduce_block, Args};
use crate::device::emu::asan_enabled;
use crate::device::LaunchConfig;
use crate::{Error, Result};

fn len_i32(op: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::shape(op, format!("{n} elements is too many")))
}

fn grid_for(op: &str, n: usize, block: u32) -> Result<u32> {
    crate::ensure_valid!(block > 0, "block size", "{op}: 0 threads");
    u32::try_from(n.div_ceil(block as usize).max(1))
        .map_err(|_| Error::shape(op, format!("{n} elements need too many blocks")))
}

/// Reverses each `block`-long chunk of x (the last one shorter) through dynamic shared
/// memory; also returns, per block, the number of positive elements
/// (`__syncthreads_count`).
pub fn block_reverse_f32(x: &[f32], block: u32) -> Result<(Vec<f32>, Vec<i32>)> {
    let op = "emu_test_block_reverse_f32";
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let shared = shared_f32_bytes(op, block)?;
    let mut y = vec![0f32; x.len()];
    let mut counts = vec![0i32; grid as usize];
    let args = Args::new()
        .input(x)
        .output(&mut y)
        .output(&mut counts)
        .i32(n);
    // SAFETY: (const float* x, float* y, int* counts, int n); thread i touches x[i], y[i]
    // only for i < n, counts[blockIdx.x] for blockIdx.x < grid, and tile[t] for t <
    // blockDim.x within the block·4 bytes of dynamic shared memory.
    unsafe { launch(op, LaunchConfig::new(grid, block, shared), args)? };
    Ok((y, counts))
}

/// Per-element results of `emu_test_warp_ops_i32` (see cuda/emu/selftest.cu).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarpOps {
    pub bcast: Vec<i32>,
    pub seg: Vec<i32>,
    pub down: Vec<i32>,
    pub xor_sum: Vec<i32>,
    pub scan: Vec<i32>,
    pub ballot: Vec<u32>,
    pub votes: Vec<i32>,
}

/// Warp shuffles (`__shfl_sync` plain and width 16, `_down`, `_xor`, `_up`) and votes
/// (`__ballot_sync`, `__any_sync`, `__all_sync`); `block` a multiple of 32.
pub fn warp_ops_i32(x: &[i32], block: u32) -> Result<WarpOps> {
    let op = "emu_test_warp_ops_i32";
    reduce_block(op, block)?;
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let len = x.len();
    let mut o = WarpOps {
        bcast: vec![0; len],
        seg: vec![0; len],
        down: vec![0; len],
        xor_sum: vec![0; len],
        scan: vec![0; len],
        ballot: vec![0; len],
        votes: vec![0; len],
    };
    let args = Args::new()
        .input(x)
        .output(&mut o.bcast)
        .output(&mut o.seg)
        .output(&mut o.down)
        .output(&mut o.xor_sum)
        .output(&mut o.scan)
        .output(&mut o.ballot)
        .output(&mut o.votes)
        .i32(n);
    // SAFETY: (x, bcast, seg, down, xor_sum, scan, ballot, votes, n); thread i reads x[i]
    // and writes the seven outputs at i only for i < n, all n long.
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
    Ok(o)
}

/// Results of `emu_test_atomics_i32`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Atomics {
    pub fsum: f32,
    pub isum: i32,
    pub imax: i32,
    pub imin: i32,
    pub cas_max: i32,
    pub hist: [u32; 16],
}

/// `atomicAdd` (float, int, unsigned), `atomicMax`, `atomicMin` and an `atomicCAS` loop
/// over x.
pub fn atomics_i32(x: &[i32], block: u32) -> Result<Atomics> {
    let op = "emu_test_atomics_i32";
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let mut fsum = [0f32; 1];
    let mut ints = [0, i32::MIN, i32::MAX, i32::MIN];
    let mut hist = [0u32; 16];
    let args = Args::new()
        .input(x)
        .output(&mut fsum)
        .output(&mut ints)
        .output(&mut hist)
        .i32(n);
    // SAFETY: (x, out_f, out_i, hist, n); reads x[i] for i < n, updates out_f[0],
    // out_i[0..4] and hist[v & 15] — buffers of 1, 4 and 16 elements.
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
    Ok(Atomics {
        fsum: fsum[0],
        isum: ints[0],
        imax: ints[1],
        imin: ints[2],
        cas_max: ints[3],
        hist,
    })
}

/// `__float2half`, `__float2bfloat16` bits and the half round trip of each x.
pub fn half_f32(x: &[f32]) -> Result<(Vec<u16>, Vec<u16>, Vec<f32>)> {
    let op = "emu_test_half_f32";
    let n = len_i32(op, x.len())?;
    let mut h = vec![0u16; x.len()];
    let mut b = vec![0u16; x.len()];
    let mut back = vec![0f32; x.len()];
    if x.is_empty() {
        return Ok((h, b, back));
    }
    let args = Args::new()
        .input(x)
        .output(&mut h)
        .output(&mut b)
        .output(&mut back)
        .i32(n);
    // SAFETY: (x, h, b, back, n), grid-stride over i < n; all four buffers are n long.
    unsafe { launch(op, LaunchConfig::elementwise(x.len()), args)? };
    Ok((h, b, back))
}

/// A kernel whose odd threads return while the even ones wait at `__syncthreads`:
/// must fail with a barrier-divergence error.
pub fn divergent_barrier(block: u32) -> Result<()> {
    let mut out = vec![0i32; block as usize];
    let args = Args::new().output(&mut out);
    // SAFETY: (int* out); thread t writes out[threadIdx.x] with threadIdx.x < block,
    // and `out` holds `block` elements; one block.
    unsafe {
        launch(
            "emu_test_divergent_barrier",
            LaunchConfig::new(1, block, 0),
            args,
        )
    }
}

/// A kernel whose lanes 16–31 shuffle with a full-warp mask after lanes 0–15 returned:
/// must fail with a deadlock error.
pub fn divergent_shuffle(block: u32) -> Result<()> {
    let mut out = vec![0i32; block as usize];
    let args = Args::new().output(&mut out);
    // SAFETY: (int* out); thread t writes out[threadIdx.x] < block, `out` is block long.
    unsafe {
        launch(
            "emu_test_divergent_shuffle",
            LaunchConfig::new(1, block, 0),
            args,
        )
    }
}

/// Calls `__trap()` in thread `thread` of block `at_block`: must fail.
pub fn trap(grid: u32, block: u32, at_block: i32, thread: i32) -> Result<()> {
    let args = Args::new().i32(at_block).i32(thread);
    // SAFETY: (int block, int thread); no memory is accessed.
    unsafe { launch("emu_test_trap", LaunchConfig::new(grid, block, 0), args) }
}

/// Runs `emu_test_oob_read_f32`, whose last thread reads one element past its input.
/// Only in an AddressSanitizer build of the emulator, where ASan aborts the process at
/// that read; otherwise it refuses to launch (`Error::Unavailable`).
pub fn planted_oob_read(n: usize) -> Result<Vec<f32>> {
    if !asan_enabled() {
        return Err(Error::Unavailable(
            "the planted out-of-bounds kernel runs only in an ASan build \
             (scripts/emu-asan.sh)"
                .into(),
        ));
    }
    let op = "emu_test_oob_read_f32";
    let ni = len_i32(op, n)?;
    let x = vec![1f32; n];
    let mut y = vec![0f32; n];
    let args = Args::new().input(&x).output(&mut y).i32(ni);
    // SAFETY: NOT sound on purpose, and therefore reachable only when the C++ side is
    // built with AddressSanitizer (checked above): the kernel reads x[n], one past the
    // end, and ASan reports the heap-buffer-overflow and aborts before the value is used.
    unsafe { launch(op, LaunchConfig::new(grid_for(op, n, 64)?, 64, 0), args)? };
    Ok(y)
}

// ---- racecheck plants (cuda/emu/selftest.cu; tests/ops/emu_racecheck.rs) ----------------

/// Per block of `block` threads (a multiple of 32): (Σ x, Σ x²) over its chunk, through a
/// block sum that lacks its final `__syncthreads()` (called twice: a write-after-read race
/// on static shared memory that every emulator schedule hides, and racecheck reports).
pub fn missing_barrier_f32(x: &[f32], block: u32) -> Result<Vec<f32>> {
    let op = "emu_test_missing_barrier_f32";
    reduce_block(op, block)?;
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let mut sums = vec![0f32; 2 * grid as usize];
    let args = Args::new().input(x).output(&mut sums).i32(n);
    // SAFETY: (x, sums, n); thread i reads x[i] only for i < n, thread 0 of block b writes
    // sums[2b], sums[2b + 1] for b < grid; static shared memory only.
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
    Ok(sums)
}

/// Reverses each `block`-long chunk of x through dynamic shared memory, with the
/// `__syncthreads()` between the write and the read only when `sync` (without it: a
/// read-after-write race).
pub fn reverse_f32(x: &[f32], block: u32, sync: bool) -> Result<Vec<f32>> {
    let op = "emu_test_reverse_f32";
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let shared = shared_f32_bytes(op, block)?;
    let mut y = vec![0f32; x.len()];
    let args = Args::new().input(x).output(&mut y).i32(n).i32(sync as i32);
    // SAFETY: (x, y, n, sync); thread i touches x[i], y[i] only for i < n and tile[t] for
    // t < blockDim.x within the block·4 bytes of dynamic shared memory.
    unsafe { launch(op, LaunchConfig::new(grid, block, shared), args)? };
    Ok(y)
}

/// `y[i]` = x of the next lane of i's warp (cyclically, values past n read as 0), exchanged
/// through dynamic shared memory and ordered by `__syncwarp()` when `sync`; `block` a
/// multiple of 32.
pub fn warp_shared_i32(x: &[i32], block: u32, sync: bool) -> Result<Vec<i32>> {
    let op = "emu_test_warp_shared_i32";
    reduce_block(op, block)?;
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let mut y = vec![0i32; x.len()];
    let args = Args::new().input(x).output(&mut y).i32(n).i32(sync as i32);
    // SAFETY: (x, y, n, sync); thread i reads x[i], writes y[i] only for i < n; buf[t] for
    // t < blockDim.x within the block·4 bytes of dynamic shared memory.
    unsafe { launch(op, LaunchConfig::new(grid, block, block * 4), args)? };
    Ok(y)
}

/// `threads` GPU threads (blocks of `block`) where thread i writes y[i / 2] = i: two
/// threads per element (overlapping non-atomic global writes).
pub fn overlapping_writes_f32(threads: usize, block: u32) -> Result<Vec<f32>> {
    let op = "emu_test_overlapping_writes_f32";
    let n = len_i32(op, threads)?;
    let grid = grid_for(op, threads, block)?;
    let mut y = vec![0f32; threads.div_ceil(2)];
    let args = Args::new().output(&mut y).i32(n);
    // SAFETY: (y, n); thread i < n writes y[i / 2] < ⌈n/2⌉ = y.len().
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
    Ok(y)
}

/// Σ x by float `atomicAdd` into one value, in whatever order the schedule runs the threads.
pub fn atomic_order_f32(x: &[f32], block: u32) -> Result<f32> {
    let op = "emu_test_atomic_order_f32";
    let n = len_i32(op, x.len())?;
    let grid = grid_for(op, x.len(), block)?;
    let mut out = [0f32; 1];
    let args = Args::new().input(x).output(&mut out).i32(n);
    // SAFETY: (x, out, n); thread i < n reads x[i] and adds to out[0].
    unsafe { launch(op, LaunchConfig::new(grid, block, 0), args)? };
    Ok(out[0])
}

/// The dynamic shared memory of one f32 per thread of a `block`-thread block, in bytes.
fn shared_f32_bytes(op: &str, block: u32) -> Result<u32> {
    block
        .checked_mul(4)
        .ok_or_else(|| Error::invalid("block size", format!("{op}: {block}")))
}
