//! A model: its spec, its module tree and the loss, with the training step every tool uses.

use std::sync::Mutex;

use crate::device::alloc::{scope_phase, Phase};
use crate::nn::container::Sequential;
use crate::nn::loss::{LossMetrics, SoftmaxCrossEntropy};
use crate::nn::spec::{BuildOptions, ModelSpec};
use crate::nn::{BackpropMode, Module};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::{Device, Error, Result};

pub struct Model {
    pub spec: ModelSpec,
    pub net: Sequential,
    pub loss: SoftmaxCrossEntropy,
    /// The one device every parameter and buffer was on at the last walk over them
    /// (`Model::build`, `to_device`, each `train_step`); `None` before one, or when they
    /// were spread over several. Read by `device()`, so that a step or a prediction does not
    /// build the state dict (which copies the slices of stacked quadratic weights).
    placed: Mutex<Option<Device>>,
    /// Trainable parameter elements, counted at the same walks as `placed` (a module
    /// tree's parameters are visited mutably only; their count never changes after build).
    params: usize,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Samples whose arg-max logit is the target.
    pub correct: usize,
}

/// A training step whose loss and accuracy have not been read yet (`train_step_deferred`):
/// on a GPU-path device they are still in a device buffer, so the step's work may still be
/// running. Reading waits for it.
#[derive(Debug)]
pub struct PendingStep(LossMetrics);

impl PendingStep {
    /// The step's loss and correct count (one device→host copy on a GPU-path device).
    pub fn read(self) -> Result<StepOutput> {
        let (loss, correct) = self.0.read()?;
        Ok(StepOutput { loss, correct })
    }

    /// Every step's loss and correct count, in order, with one host wait per device for all
    /// of them (a training loop that reads its metrics every N steps).
    pub fn read_all(steps: Vec<PendingStep>) -> Result<Vec<StepOutput>> {
        let all = LossMetrics::read_all(steps.into_iter().map(|p| p.0).collect())?;
        Ok(all
            .into_iter()
            .map(|(loss, correct)| StepOutput { loss, correct })
            .collect())
    }
}

impl Model {
    /// Type-check `spec` and build it with fresh weights.
    pub fn build(spec: &ModelSpec, opts: BuildOptions) -> Result<Model> {
        let net = spec.build(opts)?;
        let mut model = Model {
            spec: spec.clone(),
            net,
            loss: SoftmaxCrossEntropy::new(0.0)?,
            placed: Mutex::new(None),
            params: 0,
        };
        model.walk_device();
        Ok(model)
    }

    /// The device the model's parameters and buffers live on (the CPU for a model without
    /// any); an error names the devices when they are spread over several.
    ///
    /// Cheap: the device found by the last walk over the parameters and buffers (no tensor
    /// is copied). Moving `net` other than with [`Model::to_device`] is seen at the next
    /// `train_step` (or `refresh_device`).
    pub fn device(&self) -> Result<Device> {
        match *self.placed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(d) => Ok(d),
            None => self.device_from_state(),
        }
    }

    /// Walk the parameters and buffers again for `device()` (after moving or loading
    /// tensors into `net` directly).
    pub fn refresh_device(&mut self) {
        self.walk_device();
    }

    /// Finds the one device of every parameter and buffer (`None` when spread over
    /// several) by visiting them in place, and records it for `device()`.
    fn walk_device(&mut self) -> Option<Device> {
        let mut seen: Option<Option<Device>> = None;
        let mut note = |d: Device| {
            seen = match seen {
                None => Some(Some(d)),
                Some(Some(prev)) if prev == d => Some(Some(d)),
                Some(_) => Some(None),
            }
        };
        let mut params = 0;
        self.net.visit_params(&mut |_, p| {
            params += p.value.numel();
            note(p.value.device())
        });
        self.net.visit_buffers(&mut |_, t| note(t.device()));
        self.params = params;
        let found = seen.unwrap_or(Some(Device::Cpu));
        *self.placed.lock().unwrap_or_else(|e| e.into_inner()) = found;
        found
    }

    /// The device from the state dict, naming two tensors on different devices when they
    /// are spread over several (the slow path, for that error).
    fn device_from_state(&self) -> Result<Device> {
        let mut state = Vec::new();
        self.net.state_dict(&mut state);
        let Some((first_name, first)) = state.first() else {
            return Ok(Device::Cpu);
        };
        let dev = first.device();
        if let Some((name, t)) = state.iter().find(|(_, t)| t.device() != dev) {
            return Err(Error::invalid(
                format!("model `{}`", self.spec.name),
                format!(
                    "its tensors live on several devices: `{first_name}` on {dev}, `{name}` on {} \
                     (move the whole model with Model::to_device)",
                    t.device()
                ),
            ));
        }
        Ok(dev)
    }

    /// Move every parameter, gradient and buffer to `device` (`nn::module_to_device`);
    /// training steps then run there and input batches are copied to it. Optimizer state
    /// follows its parameters at the next step.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        let moved = crate::nn::module_to_device(&mut self.net, device);
        // also after a failure, which may leave the tensors spread over two devices
        self.walk_device();
        moved
    }

    /// `x` on the model's device: a CPU batch is uploaded to a model on a GPU-path device (and
    /// a device batch copied back for a CPU model); a batch on another GPU-path device than
    /// the model's is an error naming both.
    pub fn input_on_device(&self, x: &Tensor) -> Result<Tensor> {
        let dev = self.device()?;
        let xd = x.device();
        if xd == dev {
            return Ok(x.clone());
        }
        if xd.is_gpu() && dev.is_gpu() {
            return Err(Error::invalid(
                format!("model `{}`", self.spec.name),
                format!("the input batch lives on {xd}, the model on {dev}"),
            ));
        }
        x.to_device(dev)
    }

    /// Error unless x is (N, *input) with N ≥ 1.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.shape();
        if s.len() != self.spec.input.len() + 1 || s[1..] != self.spec.input[..] || s[0] == 0 {
            return Err(Error::shape(
                format!("model `{}`", self.spec.name),
                format!(
                    "input has shape {:?}, expected (N, {:?}) with N ≥ 1",
                    s, self.spec.input
                ),
            ));
        }
        Ok(())
    }

    /// Forward, loss, backward and one optimizer update on the batch (x, targets).
    /// On a GPU-path device the host waits once, for the loss and count (after the whole
    /// step is queued); `train_step_deferred` leaves even that for later.
    pub fn train_step(
        &mut self,
        x: &Tensor,
        targets: &[usize],
        opt: &mut dyn Optimizer,
    ) -> Result<StepOutput> {
        self.train_step_deferred(x, targets, opt)?.read()
    }

    /// `train_step` without reading the loss and accuracy: on a GPU-path device the step is
    /// queued and nothing waits for the device; read the result with `PendingStep::read`,
    /// or many steps' with `PendingStep::read_all` (one host wait for all of them).
    pub fn train_step_deferred(
        &mut self,
        x: &Tensor,
        targets: &[usize],
        opt: &mut dyn Optimizer,
    ) -> Result<PendingStep> {
        self.check_input(x)?;
        self.walk_device();
        let x = self.input_on_device(x)?;
        let logits = {
            let _p = scope_phase(Phase::Forward);
            self.net.forward(&x)
        };
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                self.net.clear_saved();
                return Err(e);
            }
        };
        let (metrics, grad) = {
            let _p = scope_phase(Phase::Backward);
            match self.loss.forward_deferred(&logits, targets) {
                Ok(o) => (o.metrics, o.grad),
                Err(e) => {
                    self.net.clear_saved();
                    return Err(e);
                }
            }
        };
        drop(logits);
        drop(x);
        {
            let _p = scope_phase(Phase::Backward);
            self.net.backward(&grad)?;
        }
        drop(grad);
        {
            let _p = scope_phase(Phase::Optimizer);
            opt.step(&mut self.net)?;
        }
        Ok(PendingStep(metrics))
    }

    /// The model's inputs for raw inputs `x` (N, *input): the stored preprocessing
    /// (`spec.preprocess`: the training set's normalization) applied on the host, or `x`
    /// as it is for a model without one. Raw image inputs are pixel values in [0, 1].
    pub fn preprocess(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        match &self.spec.preprocess {
            Some(p) => p.apply(x),
            None => Ok(x.clone()),
        }
    }

    /// Eval-mode logits (N, classes) of raw inputs `x` (pixel values in [0, 1], as the
    /// datasets hold them), on the model's device: the stored normalization is applied
    /// first ([`Model::preprocess`]). For inputs normalized already, use
    /// [`Model::predict_normalized`].
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        self.predict_normalized(&self.preprocess(x)?)
    }

    /// Eval-mode logits (N, classes) of inputs `x` given to the first layer as they are
    /// (normalized already, like the training loader's batches), on the model's device.
    pub fn predict_normalized(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let x = self.input_on_device(x)?;
        self.net.infer(&x)
    }

    /// Eval-mode mean loss and number of correct predictions on raw inputs `x` with labels
    /// `targets` (the stored normalization applied first, as in [`Model::predict`]).
    pub fn evaluate(&self, x: &Tensor, targets: &[usize]) -> Result<StepOutput> {
        self.evaluate_normalized(&self.preprocess(x)?, targets)
    }

    /// [`Model::evaluate`] of inputs normalized already (the loaders' batches).
    pub fn evaluate_normalized(&self, x: &Tensor, targets: &[usize]) -> Result<StepOutput> {
        let logits = self.predict_normalized(x)?;
        let out = self.loss.forward_with_accuracy(&logits, targets)?;
        Ok(StepOutput {
            loss: out.loss,
            correct: out.correct,
        })
    }

    /// Set every quadratic layer's back-propagation mode (model-wide, then per-layer overrides).
    pub fn set_backprop(
        &mut self,
        default: BackpropMode,
        overrides: std::collections::BTreeMap<String, BackpropMode>,
    ) -> Result<()> {
        let mut spec = self.spec.clone();
        spec.backprop = default;
        spec.backprop_overrides = overrides;
        spec.check()?;
        self.net.set_backprop(&|p| spec.mode_of(p));
        self.spec = spec;
        Ok(())
    }

    /// One training-mode forward whose saved state is kept until `net_clear` (for
    /// measuring what a forward keeps for backward).
    pub fn net_forward_for_accounting(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let _p = scope_phase(Phase::Forward);
        self.net.forward(x)
    }

    /// Drop whatever the last forward kept.
    pub fn net_clear(&mut self) {
        self.net.clear_saved();
    }

    /// Number of trainable parameter elements.
    pub fn num_params(&self) -> usize {
        self.params
    }

    /// Number of parameter segments (slices with one parameter kind; a stacked quadratic
    /// weight has several): the rows of the optimizer's multi-tensor update table.
    pub fn num_param_segments(&mut self) -> usize {
        let mut n = 0;
        self.net
            .visit_params(&mut |_, p| n += p.segments.len().max(1));
        n
    }
}
