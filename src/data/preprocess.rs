//! What a model expects of its inputs, stored with it ([`crate::nn::spec::ModelSpec`]'s
//! `preprocess`, written by training): the per-channel normalization its training set was
//! given and the names of its classes.
//!
//! A *raw* input is what the datasets hold: (N, C, H, W) pixel values scaled to [0, 1], as
//! torchvision's `ToTensor` gives (8-bit pixels / 255). [`Preprocess::apply`] turns raw
//! inputs into the model's inputs with the same arithmetic as the evaluation loader
//! ([`super::augment::normalize`]), so a raw sample predicts exactly as `eval` scored it.

use serde::{Deserialize, Serialize};

use super::augment::{normalize, Normalize};
use crate::tensor::Tensor;
use crate::{DType, Device, Error, Result};

/// Fashion-MNIST's class names (the dataset's own, in label order).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// MNIST's class names: the digits.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// CIFAR-10's class names (`batches.meta.txt`, in label order).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The preprocessing a model's inputs get before its first layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Per-channel `(x − mean) / std` of raw inputs; `None`: raw inputs go in as they are
    /// (a model trained without normalization, e.g. on the synthetic set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// The class names, by label index; empty when the dataset has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl Preprocess {
    /// Whether it fits a model with per-sample `input` shape and `num_classes` classes:
    /// one normalization constant per channel (or one for all), finite means, positive
    /// stds; no class names or one per class. `model` names the model in the error.
    pub fn check(&self, model: &str, input: &[usize], num_classes: usize) -> Result<()> {
        let err = |msg: String| Error::Spec(format!("model `{model}`: preprocess: {msg}"));
        if let Some(n) = &self.normalize {
            Normalize::new(&n.mean, &n.std).map_err(|e| err(e.to_string()))?;
            let c = input.first().copied().unwrap_or(1);
            if input.len() != 3 || (n.mean.len() != c && n.mean.len() != 1) {
                return Err(err(format!(
                    "{} normalization constants for input {input:?}: need 1 or one per channel \
                     of a (C, H, W) input",
                    n.mean.len()
                )));
            }
        }
        if !self.classes.is_empty() && self.classes.len() != num_classes {
            return Err(err(format!(
                "{} class names for {num_classes} classes",
                self.classes.len()
            )));
        }
        Ok(())
    }

    /// The model's inputs for raw inputs `x` (N, C, H, W) f32 or f64, on the CPU: a copy
    /// normalized per channel, or `x` itself without normalization.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let Some(n) = &self.normalize else {
            return Ok(x.clone());
        };
        let (_, c, h, w) = x.dims4("preprocess input")?;
        if n.mean.len() != c && n.mean.len() != 1 {
            return Err(Error::shape(
                "preprocess input",
                format!(
                    "{c} channels, the normalization has constants for {}",
                    n.mean.len()
                ),
            ));
        }
        let x = if x.device() == Device::Cpu {
            x.clone()
        } else {
            x.to_device(Device::Cpu)?
        };
        if x.dtype() == DType::F32 {
            let mut v = x.to_vec::<f32>()?;
            for img in v.chunks_exact_mut(c * h * w) {
                normalize(img, [c, h, w], &n.mean, &n.std)?;
            }
            return Tensor::from_vec(v, x.shape());
        }
        // f64 (gradient checks, f64 models): the same formula in f64
        let mut v = x.to_f64_vec();
        let per = h * w;
        for (i, val) in v.iter_mut().enumerate() {
            let ch = (i / per) % c;
            let k = if n.mean.len() == 1 { 0 } else { ch };
            *val = (*val - n.mean[k] as f64) * (1.0 / n.std[k] as f64);
        }
        Tensor::from_f64(&v, x.shape(), x.dtype())
    }

    /// The name of class `i`: its name when known, else its index.
    pub fn class_name(&self, i: usize) -> String {
        self.classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    }
}
