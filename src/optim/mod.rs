//! Optimizers. Their state (momentum buffers, …) is charged to `Category::OptimizerState`.

pub mod sgd;

pub use sgd::Sgd;

use crate::nn::Module;
use crate::Result;

pub trait Optimizer: Send {
    /// Apply one update from the gradients accumulated in `net`'s parameters.
    fn step(&mut self, net: &mut dyn Module) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
}
