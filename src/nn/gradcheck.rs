//! f64 finite-difference gradient checks for any `Module`.
//!
//! The scalar checked is L = Σ r ⊙ module(x) with a fixed random r, so every output
//! element's gradient path is exercised. Analytic gradients come from one
//! forward/backward; numeric ones from central differences of L in training mode.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Module;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Settings of a finite-difference gradient check; an element passes when
/// |analytic − numeric| ≤ atol + rtol·|numeric|.
#[derive(Clone, Debug)]
pub struct GradCheck {
    /// Finite-difference step.
    pub h: f64,
    /// Absolute tolerance (default 1e-7).
    pub atol: f64,
    /// Relative tolerance (default 1e-5).
    pub rtol: f64,
    /// Most elements checked per tensor (all of them when the tensor is smaller).
    pub max_checks: usize,
    /// Seed of the random weighting r and of the sampled element indices.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            h: 1e-6,
            atol: 1e-7,
            rtol: 1e-5,
            max_checks: 40,
            seed: 7,
        }
    }
}

/// What a passing check looked at.
#[derive(Clone, Debug, Default)]
pub struct GradReport {
    /// Elements compared (input and parameters).
    pub checked: usize,
    /// Largest |analytic − numeric| / (atol + rtol·|numeric|) seen (≤ 1 when passing).
    pub worst_ratio: f64,
    /// Names of the tensors whose gradients were compared.
    pub tensors: Vec<String>,
}

fn loss_of(m: &mut dyn Module, x: &Tensor, r: &[f64]) -> Result<f64> {
    let y = m.forward(x)?;
    m.clear_saved();
    Ok(y.to_f64_vec().iter().zip(r).map(|(a, b)| a * b).sum())
}

fn set_param(m: &mut dyn Module, name: &str, i: usize, delta: f64) -> Result<()> {
    let mut res = Err(Error::state(format!(
        "gradcheck: parameter `{name}` not found"
    )));
    m.visit_params(&mut |n, p| {
        if n == name {
            res = p.value.data_mut::<f64>().map(|d| d[i] += delta);
        }
    });
    res
}

impl GradCheck {
    fn indices(&self, n: usize, salt: u64) -> Vec<usize> {
        if n <= self.max_checks {
            (0..n).collect()
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ salt);
            let mut v = sample(&mut rng, n, self.max_checks).into_vec();
            v.sort_unstable();
            v
        }
    }

    fn compare(
        &self,
        what: &str,
        i: usize,
        analytic: f64,
        numeric: f64,
        rep: &mut GradReport,
    ) -> Result<()> {
        let ratio = (analytic - numeric).abs() / (self.atol + self.rtol * numeric.abs());
        rep.worst_ratio = rep.worst_ratio.max(ratio);
        rep.checked += 1;
        if ratio > 1.0 || !analytic.is_finite() {
            return Err(Error::state(format!(
                "gradient check failed for {what}[{i}]: analytic {analytic:.10e}, numeric {numeric:.10e}"
            )));
        }
        Ok(())
    }

    /// Check dL/dx and dL/dθ of `m` at the f64 input `x`.
    pub fn run(&self, m: &mut dyn Module, x: &Tensor) -> Result<GradReport> {
        if x.dtype() != DType::F64 {
            return Err(Error::dtype("gradcheck", "gradient checks run in f64"));
        }
        let mut rep = GradReport::default();
        // analytic
        m.visit_params(&mut |_, p| p.zero_grad());
        let y = m.forward(x)?;
        let r = Tensor::randn(y.shape(), DType::F64, 1.0, self.seed)?;
        let rv = r.to_f64_vec();
        let dx = m.backward(&r)?;
        if dx.shape() != x.shape() {
            return Err(Error::shape(
                "gradcheck",
                format!("input gradient {:?} for input {:?}", dx.shape(), x.shape()),
            ));
        }
        let dxv = dx.to_f64_vec();
        let mut grads: Vec<(String, Vec<f64>)> = Vec::new();
        let mut missing = Vec::new();
        m.visit_params(&mut |n, p| match &p.grad {
            Some(g) => grads.push((n.to_string(), g.to_f64_vec())),
            None => missing.push(n.to_string()),
        });
        if let Some(n) = missing.first() {
            return Err(Error::state(format!(
                "gradcheck: backward left no gradient for parameter `{n}`"
            )));
        }
        // numeric, input
        let xv = x.to_f64_vec();
        rep.tensors.push("input".into());
        for i in self.indices(xv.len(), 1) {
            let mut xp = xv.clone();
            xp[i] += self.h;
            let lp = loss_of(m, &Tensor::from_f64(&xp, x.shape(), DType::F64)?, &rv)?;
            xp[i] -= 2.0 * self.h;
            let lm = loss_of(m, &Tensor::from_f64(&xp, x.shape(), DType::F64)?, &rv)?;
            self.compare("input", i, dxv[i], (lp - lm) / (2.0 * self.h), &mut rep)?;
        }
        // numeric, parameters
        for (pi, (name, g)) in grads.iter().enumerate() {
            rep.tensors.push(name.clone());
            for i in self.indices(g.len(), 100 + pi as u64) {
                set_param(m, name, i, self.h)?;
                let lp = loss_of(m, x, &rv)?;
                set_param(m, name, i, -2.0 * self.h)?;
                let lm = loss_of(m, x, &rv)?;
                set_param(m, name, i, self.h)?;
                self.compare(name, i, g[i], (lp - lm) / (2.0 * self.h), &mut rep)?;
            }
        }
        m.visit_params(&mut |_, p| p.zero_grad());
        Ok(rep)
    }
}
