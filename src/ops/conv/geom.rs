//! The geometry of one convolution branch (shared by the CPU engine, the CUDA backend, the
//! quadratic family and model specs) and the input check both devices apply.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The shape of one convolution branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvGeom {
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl ConvGeom {
    /// A square-kernel geometry with the same stride/padding/dilation on both axes.
    pub fn square(c_in: usize, c_out: usize, k: usize, stride: usize, padding: usize) -> Self {
        ConvGeom {
            c_in,
            c_out,
            kh: k,
            kw: k,
            stride: (stride, stride),
            padding: (padding, padding),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// Check the hyper-parameters themselves (not an input).
    pub fn validate(&self, layer: &str) -> Result<()> {
        let what = format!("conv layer `{layer}`");
        if self.c_in == 0 || self.c_out == 0 {
            return Err(Error::invalid(
                what,
                format!(
                    "channels must be positive (in {}, out {})",
                    self.c_in, self.c_out
                ),
            ));
        }
        if self.kh == 0 || self.kw == 0 {
            return Err(Error::invalid(
                what,
                format!("kernel size must be positive, got {}x{}", self.kh, self.kw),
            ));
        }
        if self.stride.0 == 0 || self.stride.1 == 0 || self.dilation.0 == 0 || self.dilation.1 == 0
        {
            return Err(Error::invalid(
                what,
                format!(
                    "stride {:?} and dilation {:?} must be positive",
                    self.stride, self.dilation
                ),
            ));
        }
        if self.groups == 0 || self.c_in % self.groups != 0 || self.c_out % self.groups != 0 {
            return Err(Error::invalid(
                what,
                format!(
                    "groups = {} must divide in_channels = {} and out_channels = {}",
                    self.groups, self.c_in, self.c_out
                ),
            ));
        }
        // a kernel a million wide is not a network anyone trains; it is a typo
        if self.kh > 1024
            || self.kw > 1024
            || self.stride.0 > 1024
            || self.padding.0 > 1024
            || self.padding.1 > 1024
        {
            return Err(Error::invalid(
                what,
                "kernel, stride and padding must be at most 1024".to_string(),
            ));
        }
        Ok(())
    }

    /// Rows of one group's column block: C_in/G · kh · kw.
    pub fn k_group(&self) -> usize {
        self.c_in / self.groups * self.kh * self.kw
    }

    /// Rows of the whole column matrix: C_in · kh · kw.
    pub fn k_total(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output height and width for an input of (h, w), or a shape error.
    pub fn out_hw(&self, h: usize, w: usize, layer: &str) -> Result<(usize, usize)> {
        let eff_h = self.dilation.0 * (self.kh - 1) + 1;
        let eff_w = self.dilation.1 * (self.kw - 1) + 1;
        let (ph, pw) = (h + 2 * self.padding.0, w + 2 * self.padding.1);
        if h == 0 || w == 0 {
            return Err(Error::shape(
                layer,
                format!("input spatial size {h}x{w} has a zero dimension"),
            ));
        }
        if eff_h > ph || eff_w > pw {
            return Err(Error::shape(
                layer,
                format!("kernel {}x{} (dilated {eff_h}x{eff_w}) is larger than the padded input {ph}x{pw}", self.kh, self.kw),
            ));
        }
        Ok((
            (ph - eff_h) / self.stride.0 + 1,
            (pw - eff_w) / self.stride.1 + 1,
        ))
    }
}

/// Check that x is (N, C_in, H, W) for this geometry; returns (n, h, w, ho, wo).
pub fn check_input(
    g: &ConvGeom,
    x: &crate::Tensor,
    layer: &str,
) -> Result<(usize, usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4(layer)?;
    if c != g.c_in {
        return Err(Error::shape(
            layer,
            format!(
                "input has {c} channels, the layer expects {} (input shape {:?})",
                g.c_in,
                x.shape()
            ),
        ));
    }
    if n == 0 {
        return Err(Error::shape(
            layer,
            format!("input batch is empty (shape {:?})", x.shape()),
        ));
    }
    let (ho, wo) = g.out_hw(h, w, layer)?;
    Ok((n, h, w, ho, wo))
}
