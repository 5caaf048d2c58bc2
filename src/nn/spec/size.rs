//! How much memory a spec's model needs, from the spec alone: checked before any weight is
//! allocated, so a spec whose layers are each allowed but whose total does not fit (or a
//! spec of 300k layers) is an error naming the sizes instead of an allocation abort.
//!
//! The count is an upper bound of the state dict's elements (parameters and batch-norm
//! buffers): exact for linear and batch-norm layers, and for convolutions and quadratic
//! layers their weights plus 16 values per output channel (biases and, for quadralib-bn,
//! three normalisations' four vectors, counted generously); a test holds it between the
//! built model's count and 1.1× of it over the whole zoo and every neuron type.

use super::layer::LayerSpec;
use super::shape::visit_layers;
use super::ModelSpec;
use crate::nn::quadratic::NeuronType;
use crate::tensor::DType;
use crate::{Device, Result};

/// Bytes a live module costs beyond its tensors (the layer object, its names, its
/// accounting records), a generous constant so a spec of very many tiny layers is sized too.
const PER_LAYER_OVERHEAD: u64 = 4096;

/// The memory a spec's model needs once built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecSize {
    /// Upper bound of the state dict's elements (parameters and buffers).
    pub elements: u64,
    /// The largest single tensor's elements (initialisation draws it in f64 first).
    pub largest: u64,
    /// Layers, containers included.
    pub layers: u64,
    /// Upper bound of the activation elements one sample's forward pass produces: every
    /// layer's output, a quadratic layer's counted once per branch plus its lifted and
    /// output planes.
    pub activations: u64,
}

impl SpecSize {
    /// Bytes to build the model in `dtype`: the tensors, the f64 draw of the largest one,
    /// and the per-layer overhead.
    pub fn build_bytes(&self, dtype: DType) -> u64 {
        self.elements
            .saturating_mul(dtype.size() as u64)
            .saturating_add(self.largest.saturating_mul(8))
            .saturating_add(self.layers.saturating_mul(PER_LAYER_OVERHEAD))
    }
}

fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b)
}
fn mul(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

/// (all, largest) elements of a layer's weights: `c_out` outputs over `k` inputs per group,
/// one first-order map (`neuron` None) or a quadratic layer's stacked branches and lifted
/// weight.
fn weights(k: usize, c_out: usize, branches: usize, neuron: Option<NeuronType>) -> (u64, u64) {
    let one = mul(k, c_out);
    match neuron {
        None => (one, one),
        Some(n) => {
            // stacked first-order branches, the squared-input weight (t2, fan), t1's K×K
            // bilinear form per output channel
            let lifted = match n {
                NeuronType::T2 | NeuronType::Fan => one,
                NeuronType::T1 => mul(k, k).saturating_mul(c_out as u64),
                _ => 0,
            };
            let stacked = one.saturating_mul(branches as u64);
            (add(stacked, lifted), stacked.max(lifted))
        }
    }
}

/// Adds the layer `l` (its per-sample output shape `out`) to `s`.
fn add_layer(l: &LayerSpec, out: &[usize], s: &mut SpecSize) {
    let planes = match l {
        LayerSpec::QuadConv2d { neuron, .. } | LayerSpec::QuadLinear { neuron, .. } => {
            neuron.branches() + 2
        }
        _ => 1,
    };
    let numel = out.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
    s.activations = add(s.activations, numel.saturating_mul(planes as u64));
    s.layers = add(s.layers, 1);
    let (elements, largest) = match l {
        LayerSpec::Conv2d { .. } | LayerSpec::QuadConv2d { .. } => {
            let c = l.conv().expect("a convolution layer");
            let (kh, kw) = c.kernel_size.hw();
            let k = (c.in_channels / c.groups.max(1)).saturating_mul(kh.saturating_mul(kw));
            let neuron = match l {
                LayerSpec::QuadConv2d { neuron, .. } => Some(*neuron),
                _ => None,
            };
            let branches = neuron.map_or(1, |n| n.branches());
            let (w, big) = weights(k, c.out_channels, branches, neuron);
            // biases and, for quadralib-bn, three batch norms' weight, bias, mean, var
            (add(w, mul(16, c.out_channels)), big)
        }
        LayerSpec::Linear {
            in_features,
            out_features,
            ..
        } => {
            let w = mul(*in_features, *out_features);
            (add(w, *out_features as u64), w)
        }
        LayerSpec::QuadLinear {
            neuron,
            in_features,
            out_features,
            ..
        } => {
            let (w, big) = weights(
                *in_features,
                *out_features,
                neuron.branches(),
                Some(*neuron),
            );
            (add(w, mul(16, *out_features)), big)
        }
        LayerSpec::BatchNorm2d { num_features, .. }
        | LayerSpec::BatchNorm1d { num_features, .. } => (mul(4, *num_features), 0),
        LayerSpec::Sequential { .. }
        | LayerSpec::Residual { .. }
        | LayerSpec::Relu { .. }
        | LayerSpec::MaxPool2d { .. }
        | LayerSpec::AvgPool2d { .. }
        | LayerSpec::GlobalAvgPool { .. }
        | LayerSpec::Flatten { .. }
        | LayerSpec::Dropout { .. } => (0, 0),
    };
    s.elements = add(s.elements, elements);
    s.largest = s.largest.max(largest);
}

impl ModelSpec {
    /// The memory this spec's model needs (see [`SpecSize`]), from the spec alone; a spec
    /// error when its layers do not type-check.
    pub fn size(&self) -> Result<SpecSize> {
        let mut s = SpecSize {
            elements: 0,
            largest: 0,
            layers: 0,
            activations: 0,
        };
        visit_layers(&self.layers, "", &self.input, &mut |_, l, _, out| {
            add_layer(l, out, &mut s)
        })?;
        Ok(s)
    }

    /// Error (`Error::OutOfMemory`, naming the model, the bytes and what is available)
    /// when building this spec's model in `dtype` needs more host memory than the machine
    /// can give now ([`Device::available_memory`]: `MemAvailable`, and the address-space
    /// limit of the process when one is set). Platforms that do not say pass.
    pub fn check_build_fits(&self, dtype: DType) -> Result<()> {
        let size = self.size()?;
        Device::Cpu.check_alloc(size.build_bytes(dtype), &|| {
            format!(
                "model `{}` ({} parameters and buffers of {dtype} in {} layers, the largest \
                 tensor {} elements)",
                self.name, size.elements, size.layers, size.largest
            )
        })
    }
}
