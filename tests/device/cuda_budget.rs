//! Budgets of one training step on the CUDA backend (issue 11): what a steady-state step of
//! a zoo model launches, per layer, and — on `cuda:0` through the CUDA stand-in — what
//! crosses between host and device: only the batch and its targets go up, only the loss
//! and accuracy row buffer comes down, the host waits for the device at most once, and the
//! caching pool serves every allocation (no `cuMemAlloc` after the first steps).
//!
//! The launch counts come from `quadra::ops::counters` (what Quadra asks of a runtime,
//! attributed to layers); the copies, waits and allocations from the stand-in's trace of
//! driver calls (tests/support/standin.rs), which also checks the launch counts kernel by
//! kernel. Both are process-global: every test holds `support::serial()` (tests/device).

use std::collections::BTreeMap;

use quadra::model::{Model, PendingStep};
use quadra::nn::spec::ModelSpec;
use quadra::nn::BackpropMode;
use quadra::ops::counters::{self, LaunchCount};
use quadra::optim::Sgd;
use quadra::{Category, DType, Device, Tensor};

use crate::support::{all_devices, devices, f32_model_on, serial, TINY_Q3};
use quadra::device::standin;

const BATCH: usize = 2;
/// Small CIFAR-shaped inputs (an emulated step is then cheap): the zoo's ResNets end in a
/// global average pool, and the last stage still sees 2 values per channel for its batch
/// norms.
const INPUT: [usize; 3] = [3, 4, 4];

struct Setup {
    model: Model,
    opt: Sgd,
    /// The batch on the host, as the trainer's data loader delivers it.
    x: Tensor,
    y: Vec<usize>,
}

fn setup(name: &str, mode: BackpropMode, device: Device) -> Setup {
    let mut spec = quadra::models::get(name, None, 10).unwrap();
    spec.input = INPUT.to_vec();
    spec.backprop = mode;
    let model = f32_model_on(&spec, 1, device);
    let mut shape = vec![BATCH];
    shape.extend(INPUT);
    let x = Tensor::randn(&shape, DType::F32, 1.0, 2).unwrap();
    x.retag(Category::Data);
    Setup {
        model,
        opt: Sgd::new(0.05, 0.9, 5e-4, false).unwrap(),
        x,
        y: (0..BATCH).map(|i| (3 * i + 1) % 10).collect(),
    }
}

impl Setup {
    fn step(&mut self) {
        self.model
            .train_step(&self.x, &self.y, &mut self.opt)
            .unwrap();
    }

    /// A warm-up step (it creates the optimizer state and the pool's blocks), then the
    /// launch counts of one more.
    fn steady_step_launches(&mut self) -> Vec<LaunchCount> {
        self.step();
        counters::reset_launch_counts();
        self.step();
        counters::launch_counts()
    }
}

fn print_per_layer(what: &str, counts: &[LaunchCount]) {
    println!(
        "{what}: {} launches per step ({} of them GEMMs)\n{}",
        counters::total(counts),
        counters::gemms(counts),
        counters::per_layer_table(counts)
    );
}

/// The same step launches the same kernels, layer by layer, every time and on every
/// CUDA-backend device; every launch is attributed to a layer except the loss and the
/// optimizer's multi-tensor update (one launch for all layers' parameters). (qresnet10
/// only: an emulated step of qresnet14 costs about as much again; its counts are printed by
/// the stand-in test below.)
#[test]
fn launches_per_layer_of_a_training_step() {
    let _g = serial();
    for model in ["qresnet10"] {
        let mut first: Option<Vec<LaunchCount>> = None;
        for d in devices() {
            let mut s = setup(model, BackpropMode::Stored, d);
            let counts = s.steady_step_launches();
            counters::reset_launch_counts();
            s.step();
            assert_eq!(
                counters::launch_counts(),
                counts,
                "{model} on {d}: two steady-state steps launched differently"
            );
            print_per_layer(&format!("{model} on {d}, batch {BATCH}"), &counts);
            for c in &counts {
                assert!(
                    !c.layer.is_empty()
                        || ["softmax_xent_f32", "sgd_multi_f32"].contains(&c.kernel),
                    "{model} on {d}: {} launches of `{}` in {:?} are outside any layer",
                    c.count,
                    c.kernel,
                    c.phase
                );
            }
            // one SGD without parameter groups: every segment of every layer in one launch
            let sgd: u64 = counts
                .iter()
                .filter(|c| c.kernel == "sgd_multi_f32")
                .map(|c| c.count)
                .sum();
            assert_eq!(sgd, 1, "{model} on {d}: optimizer launches per step");
            match &first {
                None => first = Some(counts),
                Some(f) => assert_eq!(&counts, f, "{model}: {d} launches differently"),
            }
        }
    }
}

/// What one steady-state training step costs on `cuda:0` through the stand-in, checked
/// against the budgets of issue 11. Run by `scripts/test-cuda-standin.sh` (which passes
/// `--include-ignored`); elsewhere cuda:0 is absent or a real driver without counters,
/// so it is ignored rather than passed.
#[test]
#[ignore = "needs cuda:0 on the CUDA stand-in: run by scripts/test-cuda-standin.sh"]
fn training_step_budgets_on_cuda() {
    let _g = serial();
    let rt = quadra::device::runtime(Device::Cuda(0))
        .unwrap_or_else(|e| panic!("cuda:0 (the stand-in) is not usable: {e}"));
    assert!(
        standin::active(),
        "cuda:0 does not run on the CUDA stand-in (no quadra_standin_trace_json in the \
         loaded libcuda): put target/cuda-standin on LD_LIBRARY_PATH"
    );
    let runs = [
        ("qresnet10", BackpropMode::Stored),
        ("qresnet10", BackpropMode::Recompute),
        ("qresnet14", BackpropMode::Stored),
    ];
    for (model, mode) in runs {
        // Each run starts with an empty pool, as a training process does: blocks cached by
        // the previous model would serve this model's first step in other sizes than it
        // keeps using, so its second step would still grow the pool.
        rt.synchronize().unwrap();
        rt.pool().empty_cache(rt);
        let mut s = setup(model, mode, Device::Cuda(0));
        // the warm-up step creates the optimizer state and the pool's blocks
        s.step();
        rt.synchronize().unwrap();
        counters::reset_launch_counts();
        assert!(standin::reset());
        s.step();
        // read before anything else waits: the step's own host waits only
        let t = standin::trace().unwrap().expect("the stand-in's trace");
        let ours = counters::launch_counts();
        let what = format!("{model} ({mode}) on cuda:0, batch {BATCH}");
        let c = |k: &str| standin::count(&t, k);
        println!(
            "{what}: {} launches + {} GEMMs, HtoD {} copies / {} B, DtoH {} copies / {} B, \
                 DtoD {} copies / {} B, {} memsets, {} host waits ({} syncs), {} allocs, {} frees",
            c("launches"),
            c("gemms"),
            c("htod_copies"),
            c("htod_bytes"),
            c("dtoh_copies"),
            c("dtoh_bytes"),
            c("dtod_copies"),
            c("dtod_bytes"),
            c("memsets"),
            c("host_waits"),
            c("syncs"),
            c("allocs"),
            c("frees"),
        );
        print_per_layer(&what, &ours);

        // Host → device: the batch (f32), its targets (i32) and the optimizer's segment
        // table (one launch: 4 addresses/sizes per parameter segment; its gradient
        // addresses change from step to step) — no parameter, gradient or state bytes.
        let x_bytes = (s.x.numel() * 4) as u64;
        let y_bytes = (BATCH * 4) as u64;
        let table_bytes = (s.model.num_param_segments() * 32) as u64;
        assert_eq!(
            (c("htod_copies"), c("htod_bytes")),
            (3, x_bytes + y_bytes + table_bytes),
            "{what}: host→device copies other than the batch ({x_bytes} B), its targets \
             ({y_bytes} B) and the SGD segment table ({table_bytes} B)"
        );
        // Device → host: one copy of the loss/accuracy rows (N f64 losses + N i32
        // flags), which is the step's only wait for the device.
        assert_eq!(
            (c("dtoh_copies"), c("dtoh_bytes")),
            (1, (BATCH * 12) as u64),
            "{what}: device→host copies other than the loss and accuracy rows"
        );
        assert!(
            c("host_waits") <= 1,
            "{what}: the host waited for the device {} times in one step (budget: 1): calls {}",
            c("host_waits"),
            t["calls"]
        );
        // The pool serves every allocation after the warm-up.
        assert_eq!(
            (c("allocs"), c("frees")),
            (0, 0),
            "{what}: cuMemAlloc/cuMemFree in a steady-state step"
        );
        // The driver saw exactly the launches Quadra counted, kernel by kernel.
        let mut by_kernel: BTreeMap<String, u64> = BTreeMap::new();
        for l in ours.iter().filter(|l| l.kernel != counters::GEMM) {
            *by_kernel.entry(l.kernel.to_string()).or_default() += l.count;
        }
        let driver: BTreeMap<String, u64> = t["launches_by_kernel"]
            .as_object()
            .expect("launches_by_kernel")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(
            driver, by_kernel,
            "{what}: launches by kernel, driver vs counters"
        );
        assert_eq!(
            c("gemms"),
            counters::gemms(&ours),
            "{what}: GEMMs, cuBLAS vs counters"
        );

        // Metrics read every N steps: the steps between reads never wait for the device,
        // and one read of N steps is one copy and one wait (after N device-side gathers).
        const N: usize = 3;
        assert!(standin::reset());
        let pending: Vec<PendingStep> = (0..N)
            .map(|_| s.model.train_step_deferred(&s.x, &s.y, &mut s.opt).unwrap())
            .collect();
        let t = standin::trace().unwrap().unwrap();
        let c = |k: &str| standin::count(&t, k);
        assert_eq!(
            (c("host_waits"), c("dtoh_copies")),
            (0, 0),
            "{what}: {N} deferred steps waited for the device: calls {}",
            t["calls"]
        );
        assert!(standin::reset());
        let read = PendingStep::read_all(pending).unwrap();
        let t = standin::trace().unwrap().unwrap();
        let c = |k: &str| standin::count(&t, k);
        assert_eq!(
            (c("host_waits"), c("dtoh_copies"), c("dtoh_bytes")),
            (1, 1, (N * BATCH * 12) as u64),
            "{what}: reading {N} steps' metrics: calls {}",
            t["calls"]
        );
        assert!(read
            .iter()
            .all(|o| o.loss.is_finite() && o.correct <= BATCH));
        println!(
            "{what}: {N} deferred steps, 0 host waits; their metrics read with {} DtoD + 1 DtoH copy, 1 host wait",
            c("dtod_copies")
        );
    }
}

/// Deferred steps read together give exactly the losses and counts that reading each
/// step gives, on the CPU engine and on every CUDA-backend device (a tiny quadratic CNN).
#[test]
fn deferred_step_metrics_equal_per_step_reads() {
    let _g = serial();
    let spec = ModelSpec::from_json(TINY_Q3).unwrap();
    let build = |d: Device| {
        let m = f32_model_on(&spec, 4, d);
        (m, Sgd::new(0.1, 0.9, 0.0, false).unwrap())
    };
    let x = Tensor::randn(&[4, 1, 8, 8], DType::F32, 1.0, 9).unwrap();
    let y = vec![0, 1, 2, 1];
    for d in all_devices() {
        let (mut a, mut opt_a) = build(d);
        let (mut b, mut opt_b) = build(d);
        let each: Vec<(u64, usize)> = (0..4)
            .map(|_| {
                let o = a.train_step(&x, &y, &mut opt_a).unwrap();
                (o.loss.to_bits(), o.correct)
            })
            .collect();
        let pending: Vec<PendingStep> = (0..4)
            .map(|_| b.train_step_deferred(&x, &y, &mut opt_b).unwrap())
            .collect();
        let together: Vec<(u64, usize)> = PendingStep::read_all(pending)
            .unwrap()
            .iter()
            .map(|o| (o.loss.to_bits(), o.correct))
            .collect();
        assert_eq!(
            together, each,
            "{d}: deferred metrics differ from per-step reads"
        );
        assert_ne!(
            each[0].0, each[3].0,
            "{d}: the loss did not change: no training?"
        );
    }
}
