//! Shared by every test binary: each `tests/<crate>/main.rs` includes it with
//! `#[path = "../support/mod.rs"] mod support;`, so each binary compiles its own copy (and
//! its own `serial()` lock: one per process, which is what the process-global state needs).
//!
//! - `serial()`: the lock of the tests that read or change process-global state (the
//!   trackers' byte counters, the emulated device's pool and capacity, the TF32 switch,
//!   environment variables).
//! - Devices: `devices()` (the CUDA backend's code path: Emu, and cuda:0 with
//!   `QUADRA_TEST_CUDA=1`), `all_devices()` (the CPU too).
//! - Parity of one layer on the CPU engine and on a device (`check_layer`), tensors
//!   (`randn`, `randn_f64`, `assert_close`, `grads`), conv geometries (`geom`).
//! - Files: `fixture`, `tempdir`/`TempDir`, `assert_png_svg`; the `quadra-train` binary
//!   (`argv`, `bin`, `run`, `ok_stdout`, `ok_json`, `ok_json_last`, `fails`); the tiny model spec
//!   `TINY_Q3` of the memory tests.
//!
//! With `QUADRA_TEST_CUDA=1` every device check also runs on `cuda:0` (the same code path
//! on a real GPU); with that variable set and no usable GPU the tests FAIL, so a run that
//! asked for the GPU never passes without one.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use quadra::nn::{module_to_device, Module};
use quadra::ops::conv::ConvGeom;
use quadra::{DType, Device, Tensor};
use serde_json::Value;

// ---- process-global state ------------------------------------------------------------------

/// The tests of one binary run in parallel threads of one process. A test that reads or
/// changes process-global state holds this guard for its whole body; in `tests/device`,
/// where the trackers' byte counters are read, every test does (any allocation on another
/// thread would move the counters).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // a test that failed while holding the lock leaves nothing behind that the next needs
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- tensors -------------------------------------------------------------------------------

/// The f32 tolerance of a layer on a device against the CPU engine, relative and absolute
/// (`assert_close(got, want, F32_TOL, F32_TOL, ..)`): the kernels sum in other orders than
/// the CPU engine (and some in f64), so results differ by rounding, not by more.
pub const F32_TOL: f64 = 1e-5;

/// Relative-to-scale f32 tolerance: |a − b| ≤ atol + rtol·|b| elementwise.
pub fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let g = got.to_f64_vec();
    let w = want.to_f64_vec();
    assert_eq!(g.len(), w.len(), "{what}: element counts differ");
    let mut worst = (0.0f64, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(a.is_finite(), "{what}[{i}] = {a} is not finite (want {b})");
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i} is {} on the device, {} on cpu",
        g[i],
        w[i]
    );
}

/// Samples N(0, 1) in f32, reproducible.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F32, 1.0, seed).unwrap()
}

/// Samples N(0, 1) in f64 (the finite-difference gradient checks), reproducible.
pub fn randn_f64(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F64, 1.0, seed).unwrap()
}

/// The parameter gradients of `m`, by name.
pub fn grads(m: &mut dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit_params(&mut |name, p| {
        if let Some(g) = &p.grad {
            out.push((name.to_string(), g.to_device(Device::Cpu).unwrap()));
        }
    });
    out
}

// ---- models --------------------------------------------------------------------------------

/// `spec` built in f32 with fresh weights from `seed`, moved to `device`.
pub fn f32_model_on(
    spec: &quadra::nn::spec::ModelSpec,
    seed: u64,
    device: Device,
) -> quadra::model::Model {
    let mut m = quadra::model::Model::build(
        spec,
        quadra::nn::spec::BuildOptions {
            dtype: DType::F32,
            seed,
        },
    )
    .unwrap_or_else(|e| panic!("building `{}`: {e}", spec.name));
    m.to_device(device)
        .unwrap_or_else(|e| panic!("`{}` to {device}: {e}", spec.name));
    m
}

// ---- devices -------------------------------------------------------------------------------

/// Whether this run must also test the real GPU (`QUADRA_TEST_CUDA=1`).
pub fn gpu_requested() -> bool {
    std::env::var("QUADRA_TEST_CUDA").is_ok_and(|v| v.trim() == "1")
}

/// The CUDA-backend devices to check: the emulator, plus cuda:0 when asked for (which must
/// then be usable: a panic otherwise).
pub fn devices() -> Vec<Device> {
    let mut v = vec![Device::Emu];
    if gpu_requested() {
        if let Err(e) = quadra::device::runtime(Device::Cuda(0)) {
            panic!("QUADRA_TEST_CUDA=1 but cuda:0 cannot be used: {e}");
        }
        v.push(Device::Cuda(0));
    }
    v
}

/// Every device a device-generic test body runs on: the CPU engine, then `devices()`.
pub fn all_devices() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    v.extend(devices());
    v
}

// ---- one layer on the CPU engine and on a device ------------------------------------------

/// `check_layer_on` for every device of `devices()`; returns the CPU output.
pub fn check_layer(
    build: &dyn Fn() -> Box<dyn Module>,
    x_shape: &[usize],
    seed: u64,
    rtol: f64,
    atol: f64,
) -> Tensor {
    let mut y = None;
    for d in devices() {
        y = Some(check_layer_on(d, build, x_shape, seed, rtol, atol));
    }
    y.expect("at least the emulator")
}

/// Builds the layer twice with `build` (same seed ⇒ same weights), moves one copy to
/// `device`, runs a training forward and backward with the same input and output gradient
/// on both, and an eval-mode `infer`, and compares everything. Returns the CPU output.
pub fn check_layer_on(
    device: Device,
    build: &dyn Fn() -> Box<dyn Module>,
    x_shape: &[usize],
    seed: u64,
    rtol: f64,
    atol: f64,
) -> Tensor {
    let mut cpu = build();
    let mut emu = build();
    module_to_device(emu.as_mut(), device).unwrap();
    let x = randn(x_shape, seed);
    let xe = x.to_device(device).unwrap();
    let name = cpu.path().to_string();

    let y = cpu.forward(&x).unwrap();
    let ye = emu.forward(&xe).unwrap();
    assert_eq!(ye.device(), device, "{name}: output left the device");
    assert_close(
        &ye.to_device(Device::Cpu).unwrap(),
        &y,
        rtol,
        atol,
        &format!("{name} forward on {device}"),
    );

    let g = randn(y.shape(), seed ^ 0x9e37);
    let dx = cpu.backward(&g).unwrap();
    let dxe = emu.backward(&g.to_device(device).unwrap()).unwrap();
    assert_close(
        &dxe.to_device(Device::Cpu).unwrap(),
        &dx,
        rtol,
        atol,
        &format!("{name} dx"),
    );
    let (gc, ge) = (grads(cpu.as_mut()), grads(emu.as_mut()));
    assert_eq!(gc.len(), ge.len(), "{name}: gradient counts differ");
    for ((nc, a), (ne, b)) in gc.iter().zip(&ge) {
        assert_eq!(nc, ne);
        assert_close(b, a, rtol, atol, &format!("{name} grad {nc}"));
    }

    let yi = cpu.infer(&x).unwrap();
    let yie = emu.infer(&xe).unwrap();
    assert_close(
        &yie.to_device(Device::Cpu).unwrap(),
        &yi,
        rtol,
        atol,
        &format!("{name} infer"),
    );
    y
}

// ---- conv geometries ------------------------------------------------------------------------

/// A conv geometry with one (h, w) pair per kernel/stride/padding/dilation.
#[allow(clippy::too_many_arguments)]
pub fn geom(
    c_in: usize,
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> ConvGeom {
    ConvGeom {
        c_in,
        c_out,
        kh: k.0,
        kw: k.1,
        stride,
        padding,
        dilation,
        groups,
    }
}

// ---- files -----------------------------------------------------------------------------------

/// A file of tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, empty folder `quadra-TAG-PID-N` under the system temp dir. N counts the calls:
/// the tests of one binary share the process id, so two of them never get the same folder.
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("quadra-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `tempdir`, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(tempdir(tag))
    }
    /// Writes `bytes` to the file `name` in the folder; returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path as &str (paths of the temp dir are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `files` = [PNG, SVG] of one chart: a real PNG (more than 2000 bytes: not blank) and a
/// complete SVG with text labels.
pub fn assert_png_svg(files: &[PathBuf]) {
    assert_eq!(files.len(), 2);
    let png = std::fs::read(&files[0]).unwrap();
    assert!(
        png.len() > 2000,
        "{}: {} bytes",
        files[0].display(),
        png.len()
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(&files[1]).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<text"), "SVG has labels");
}

// ---- the quadra-train binary -----------------------------------------------------------------

/// `quadra-train`, as cargo built it for this test run.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quadra-train"))
}

/// A command line written as one line: its words split at white space, each `{}` word
/// replaced by the next of `fill` (paths and other values, which may hold spaces), e.g.
/// `run(&argv("train --model cnn --out {} --json", &[s(&dir)]))`.
pub fn argv<'a>(line: &'a str, fill: &[&'a str]) -> Vec<&'a str> {
    let mut fill = fill.iter();
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|w| match w {
            "{}" => *fill.next().expect("argv: more `{}` than values"),
            w => w,
        })
        .collect();
    assert!(fill.next().is_none(), "argv: more values than `{{}}`");
    words
}

/// Runs `quadra-train ARGS` to the end.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Runs `quadra-train ARGS`, which must succeed; its stdout.
pub fn ok_stdout(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `ok_stdout`, every line a JSON value.
pub fn ok_json(args: &[&str]) -> Vec<Value> {
    ok_stdout(args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: `{l}`: {e}")))
        .collect()
}

/// `ok_stdout`, whose last line is a JSON value (the lines before it are text).
pub fn ok_json_last(args: &[&str]) -> Value {
    let out = ok_stdout(args);
    serde_json::from_str(out.lines().last().expect("no output")).unwrap()
}

/// Runs `quadra-train ARGS`, which must fail with a message on stderr containing every one
/// of `needles`, and not by a panic; that message.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "{args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: message lacks `{n}`: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

// ---- tiny models -----------------------------------------------------------------------------

/// Three quadratic layers of different neurons and sizes (so that memory plans have
/// choices) on 1×8×8 inputs, 3 classes: the model of the memory profiler's tests.
pub const TINY_Q3: &str = r#"{
  "name": "tiny-q3", "input": [1, 8, 8], "num_classes": 3,
  "layers": [
    {"type": "quad_conv2d", "name": "q1", "neuron": "quadralib-bn", "in_channels": 1, "out_channels": 4,
     "kernel_size": 3, "padding": 1},
    {"type": "batch_norm2d", "name": "bn1", "num_features": 4},
    {"type": "relu", "name": "relu1"},
    {"type": "quad_conv2d", "name": "q2", "neuron": "quadralib", "in_channels": 4, "out_channels": 8,
     "kernel_size": 3, "padding": 1},
    {"type": "relu", "name": "relu2"},
    {"type": "max_pool2d", "name": "pool", "kernel_size": 2},
    {"type": "quad_conv2d", "name": "q3", "neuron": "t4", "in_channels": 8, "out_channels": 8,
     "kernel_size": 3, "padding": 1},
    {"type": "flatten", "name": "flatten"},
    {"type": "linear", "name": "fc", "in_features": 128, "out_features": 3}
  ]
}"#;
