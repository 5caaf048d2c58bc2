//! Containers: `Sequential` and the residual block.

use std::any::Any;
use std::collections::HashMap;

use super::{no_forward, observe_output, BackpropMode, LayerName, Module, Param};
use crate::device::alloc::Category;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Children run in order; backward runs them in reverse.
pub struct Sequential {
    name: LayerName,
    /// The children, in forward order.
    pub layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// A container at layer path `path` (`""` for a model's root) running `layers` in order.
    pub fn new(path: &str, layers: Vec<Box<dyn Module>>) -> Self {
        Sequential {
            name: LayerName::new(path),
            layers,
        }
    }
}

impl Module for Sequential {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        format!("Sequential({} layers)", self.layers.len())
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.infer(&h)?;
            observe_output(l.path(), &h);
        }
        Ok(h)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &mut self.layers {
            h = l.forward(&h)?;
            observe_output(l.path(), &h);
        }
        Ok(h)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let mut g = g.clone();
        for l in self.layers.iter_mut().rev() {
            g = l.backward(&g)?;
        }
        Ok(g)
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        for l in &mut self.layers {
            l.visit_params(f);
        }
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for l in &mut self.layers {
            l.visit_buffers(f);
        }
    }
    fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        for l in &self.layers {
            l.state_dict(out);
        }
    }
    fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        for l in &mut self.layers {
            l.load_state_dict(map)?;
        }
        Ok(())
    }
    fn set_backprop(&mut self, plan: &dyn Fn(&str) -> BackpropMode) {
        for l in &mut self.layers {
            l.set_backprop(plan);
        }
    }
    fn clear_saved(&mut self) {
        for l in &mut self.layers {
            l.clear_saved();
        }
    }
    fn children(&self) -> Vec<&dyn Module> {
        self.layers.iter().map(|l| l.as_ref()).collect()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// out = relu(main(x) + shortcut(x)), the shortcut being the identity when absent (the
/// CIFAR ResNet basic block). The final ReLU keeps its output for backward. The sum and
/// the ReLU are one op (`ops::act::add_relu`).
pub struct Residual {
    name: LayerName,
    /// The main branch; its children are named directly under the block.
    pub main: Sequential,
    /// The shortcut branch; `None`: the identity.
    pub shortcut: Option<Sequential>,
    /// Whether a ReLU follows the sum.
    pub relu: bool,
    /// relu(main + shortcut) of the last training forward (the mask of the final ReLU);
    /// `None` inside when there is no final ReLU.
    saved: Option<Option<Tensor>>,
}

impl Residual {
    /// A block at layer path `path`: relu(main(x) + shortcut(x)) (no ReLU when `relu` is
    /// false); main and shortcut outputs must have the same shape.
    pub fn new(path: &str, main: Sequential, shortcut: Option<Sequential>, relu: bool) -> Self {
        Residual {
            name: LayerName::new(path),
            main,
            shortcut,
            relu,
            saved: None,
        }
    }

    /// relu(a + b) (a + b without the final ReLU); a, b: the branch outputs, one shape.
    fn add_relu(&self, a: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
        if a.shape() != b.shape() {
            return Err(Error::shape(
                &self.name.path,
                format!(
                    "residual branch output {:?} does not match shortcut output {:?}",
                    a.shape(),
                    b.shape()
                ),
            ));
        }
        ops::act::add_relu(a, b, relu, Category::Workspace)
    }
}

impl Module for Residual {
    fn path(&self) -> &str {
        &self.name.path
    }
    fn describe(&self) -> String {
        format!(
            "Residual({} layers, {} shortcut)",
            self.main.layers.len(),
            if self.shortcut.is_some() {
                "projection"
            } else {
                "identity"
            }
        )
    }
    fn infer(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.main.infer(x)?;
        let b = match &self.shortcut {
            Some(s) => s.infer(x)?,
            None => x.clone(),
        };
        let _s = self.name.scope();
        self.add_relu(&a, &b, self.relu)
    }
    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let a = self.main.forward(x)?;
        let b = match &mut self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let _s = self.name.scope();
        let y = self.add_relu(&a, &b, self.relu)?;
        self.saved = Some(self.relu.then(|| y.keep_for_backward()));
        Ok(y)
    }
    fn backward(&mut self, g: &Tensor) -> Result<Tensor> {
        let y = self
            .saved
            .take()
            .ok_or_else(|| no_forward(&self.name.path))?;
        let g = {
            let _s = self.name.scope();
            match &y {
                Some(y) => ops::act::relu_backward(g, y, Category::Workspace)?,
                None => g.clone(),
            }
        };
        drop(y);
        let da = self.main.backward(&g)?;
        let db = match &mut self.shortcut {
            Some(s) => s.backward(&g)?,
            None => g,
        };
        let _s = self.name.scope();
        // the input gradient: the sum of the gradients through both branches
        self.add_relu(&da, &db, false)
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&str, &mut Param)) {
        self.main.visit_params(f);
        if let Some(s) = &mut self.shortcut {
            s.visit_params(f);
        }
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.main.visit_buffers(f);
        if let Some(s) = &mut self.shortcut {
            s.visit_buffers(f);
        }
    }
    fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        self.main.state_dict(out);
        if let Some(s) = &self.shortcut {
            s.state_dict(out);
        }
    }
    fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        self.main.load_state_dict(map)?;
        if let Some(s) = &mut self.shortcut {
            s.load_state_dict(map)?;
        }
        Ok(())
    }
    fn set_backprop(&mut self, plan: &dyn Fn(&str) -> BackpropMode) {
        self.main.set_backprop(plan);
        if let Some(s) = &mut self.shortcut {
            s.set_backprop(plan);
        }
    }
    fn clear_saved(&mut self) {
        self.saved = None;
        self.main.clear_saved();
        if let Some(s) = &mut self.shortcut {
            s.clear_saved();
        }
    }
    fn children(&self) -> Vec<&dyn Module> {
        let mut v: Vec<&dyn Module> = vec![&self.main];
        if let Some(s) = &self.shortcut {
            v.push(s);
        }
        v
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
