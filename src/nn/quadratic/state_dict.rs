//! The quadratic layers' state dicts: the per-branch names of the reference PyTorch
//! modules (see the parent module's doc) as slices of the stacked tensors.

use std::collections::HashMap;
use std::ops::Range;

use super::{Core, NeuronType};
use crate::device::alloc::Category;
use crate::nn::take_entry;
use crate::ops::quadratic::{self as qops, Slot};
use crate::tensor::Tensor;
use crate::Result;

/// One state-dict entry: a slice of one of the layer's tensors.
struct Entry {
    key: String,
    slot: Slot,
    range: Range<usize>,
    shape: Vec<usize>,
}

impl Core {
    /// The state-dict entries, in export order (see the module doc for the names).
    fn entries(&self) -> Vec<Entry> {
        let p = if self.dense { "linear" } else { "conv" };
        let g = &self.geom;
        let c = g.c_out;
        let wshape: Vec<usize> = if self.dense {
            vec![c, g.c_in]
        } else {
            vec![c, g.c_in / g.groups, g.kh, g.kw]
        };
        let per_w = c * g.k_group();
        let branch: Vec<String> = match self.neuron {
            NeuronType::T1 | NeuronType::T3 => vec![p.to_string()],
            NeuronType::T2 => vec![],
            NeuronType::T4 => vec![format!("{p}1"), format!("{p}2")],
            NeuronType::QuadraLib | NeuronType::QuadraLibBn => {
                vec![format!("{p}1"), format!("{p}2"), format!("{p}3")]
            }
            NeuronType::Fan => vec![format!("{p}_r"), format!("{p}_g")],
        };
        let mut out = Vec::new();
        let mut push = |key: String, slot: Slot, range: Range<usize>, shape: Vec<usize>| {
            out.push(Entry {
                key: self.name.key(&key),
                slot,
                range,
                shape,
            })
        };
        for (k, b) in branch.iter().enumerate() {
            push(
                format!("{b}.weight"),
                Slot::W1,
                k * per_w..(k + 1) * per_w,
                wshape.clone(),
            );
            if self.params.b1.is_some() {
                push(format!("{b}.bias"), Slot::B1, k * c..(k + 1) * c, vec![c]);
            }
        }
        let lifted_name = match self.neuron {
            NeuronType::T1 => Some("quad".to_string()),
            NeuronType::T2 => Some(p.to_string()),
            NeuronType::Fan => Some(format!("{p}_b")),
            _ => None,
        };
        if let (Some(ln), Some(w2)) = (lifted_name, &self.params.w2) {
            let n2 = w2.value.numel();
            push(
                format!("{ln}.weight"),
                Slot::W2,
                0..n2,
                w2.value.shape().to_vec(),
            );
            if self.params.b2.is_some() {
                push(format!("{ln}.bias"), Slot::B2, 0..c, vec![c]);
            }
        }
        if self.neuron.has_bn() {
            for k in 0..3 {
                let r = k * c..(k + 1) * c;
                for (leaf, slot) in [
                    ("weight", Slot::Gamma),
                    ("bias", Slot::Beta),
                    ("running_mean", Slot::RunMean),
                    ("running_var", Slot::RunVar),
                ] {
                    push(format!("bn{}.{leaf}", k + 1), slot, r.clone(), vec![c]);
                }
            }
        }
        out
    }

    pub(super) fn state_dict(&self, out: &mut Vec<(String, Tensor)>) {
        for e in self.entries() {
            let Some(t) = self.params.value(e.slot) else {
                continue;
            };
            if e.range.len() == t.numel() && e.shape == t.shape() {
                out.push((e.key, t.clone()));
                continue;
            }
            // a slice of a stacked tensor, on the layer's device like every state entry (a
            // device-to-device copy: state dicts are read per training step, by
            // `Model::device` among others, and must not drain a GPU's stream)
            if let Ok(s) = qops::copy_range(t, e.range.clone(), &e.shape) {
                out.push((e.key, s));
            }
        }
    }

    pub(super) fn load_state_dict(&mut self, map: &mut HashMap<String, Tensor>) -> Result<()> {
        let entries = self.entries();
        // gather every slot's new values first, so a missing entry changes nothing
        let mut bufs: HashMap<Slot, Vec<f64>> = HashMap::new();
        for e in &entries {
            let t = take_entry(map, &e.key, &e.shape)?;
            let len = self.params.value(e.slot).map_or(0, |t| t.numel());
            let buf = bufs.entry(e.slot).or_insert_with(|| vec![0.0; len]);
            buf[e.range.clone()].copy_from_slice(&t.to_f64_vec());
        }
        if self.neuron.has_bn() {
            for k in 1..=3 {
                map.remove(&self.name.key(&format!("bn{k}.num_batches_tracked")));
            }
        }
        let _s = self.name.scope();
        for slot in Slot::ALL {
            let Some(v) = bufs.remove(&slot) else {
                continue;
            };
            let Some(old) = self.params.value(slot) else {
                continue;
            };
            let t = Tensor::from_f64(&v, old.shape(), old.dtype())?.to_device(old.device())?;
            t.retag(Category::Parameter);
            self.params.set(slot, t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{QuadConv2d, QuadLinear};
    use crate::nn::{module_to_device, BackpropMode, Module};
    use crate::ops::conv::ConvGeom;
    use crate::{DType, Device};

    /// The state dict of a layer on the emulator (its stacked tensors sliced on the device)
    /// is the CPU layer's, entry for entry and bit for bit, every entry on the device.
    #[test]
    fn stacked_slices_are_copied_on_the_device() {
        for neuron in super::NeuronType::ALL {
            let mode = BackpropMode::Stored;
            let g = ConvGeom::square(2, 3, 3, 1, 1);
            let conv = QuadConv2d::new("q", neuron, g, true, mode, DType::F32, 7).unwrap();
            let fc = QuadLinear::new("f", neuron, 4, 3, true, mode, DType::F32, 8).unwrap();
            let layers: [Box<dyn Module>; 2] = [Box::new(conv), Box::new(fc)];
            for mut m in layers {
                let mut cpu = Vec::new();
                m.state_dict(&mut cpu);
                module_to_device(m.as_mut(), Device::Emu).unwrap();
                let mut emu = Vec::new();
                m.state_dict(&mut emu);
                assert_eq!(cpu.len(), emu.len(), "{neuron}");
                for ((kc, tc), (ke, te)) in cpu.iter().zip(&emu) {
                    assert_eq!(kc, ke, "{neuron}");
                    assert_eq!(te.device(), Device::Emu, "{neuron} {ke}");
                    assert_eq!(tc.shape(), te.shape(), "{neuron} {ke}");
                    let (a, b) = (tc.to_vec::<f32>().unwrap(), te.to_vec::<f32>().unwrap());
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "{neuron} {ke}");
                }
            }
        }
    }
}
