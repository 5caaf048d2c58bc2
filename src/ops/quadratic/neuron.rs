//! The neurons of the family and the geometry of one layer call: what each neuron computes
//! (its branches, its lift, its epilogue, what backward reads), shared by both backends.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ops::conv::ConvGeom;
use crate::{Error, Result};

/// The quadratic neuron family (x: input, W·x a first-order conv/linear map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NeuronType {
    /// xᵀ W_a x + W_b x (+ b): a full bilinear form per output (per im2col patch for conv).
    #[serde(rename = "t1")]
    T1,
    /// W_a (x ⊙ x) (+ b).
    #[serde(rename = "t2")]
    T2,
    /// (W_a x + b)².
    #[serde(rename = "t3")]
    T3,
    /// (W_a x + b_a) ⊙ (W_b x + b_b).
    #[serde(rename = "t4")]
    T4,
    /// (W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c.
    #[serde(rename = "quadralib")]
    QuadraLib,
    /// BN_a(W_a x) ⊙ BN_b(W_b x) + BN_c(W_c x).
    #[serde(rename = "quadralib-bn")]
    QuadraLibBn,
    /// (W_r x + b_r) ⊙ (W_g x + b_g) + W_b (x ⊙ x) + c.
    #[serde(rename = "fan")]
    Fan,
}

/// The input a layer's second weight reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lift {
    /// No second weight.
    None,
    /// x ⊙ x (`t2`, `fan`): the same geometry as the first-order map.
    Square,
    /// u ⊗ u for every patch/input vector u (`t1`): K² features per position.
    Outer,
}

impl NeuronType {
    pub const ALL: [NeuronType; 7] = [
        NeuronType::T1,
        NeuronType::T2,
        NeuronType::T3,
        NeuronType::T4,
        NeuronType::QuadraLib,
        NeuronType::QuadraLibBn,
        NeuronType::Fan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NeuronType::T1 => "t1",
            NeuronType::T2 => "t2",
            NeuronType::T3 => "t3",
            NeuronType::T4 => "t4",
            NeuronType::QuadraLib => "quadralib",
            NeuronType::QuadraLibBn => "quadralib-bn",
            NeuronType::Fan => "fan",
        }
    }

    /// First-order branches stacked in the weight W1 (t1: its linear term W_b).
    pub fn branches(self) -> usize {
        match self {
            NeuronType::T2 => 0,
            NeuronType::T1 | NeuronType::T3 => 1,
            NeuronType::T4 | NeuronType::Fan => 2,
            NeuronType::QuadraLib | NeuronType::QuadraLibBn => 3,
        }
    }

    pub fn lift(self) -> Lift {
        match self {
            NeuronType::T1 => Lift::Outer,
            NeuronType::T2 | NeuronType::Fan => Lift::Square,
            _ => Lift::None,
        }
    }

    /// How many leading branch planes backward reads (what `stored` keeps of z, and what
    /// `recompute` recomputes): t3 a; t4, quadralib a, b; fan r, g; quadralib-bn all three.
    pub fn planes_read(self) -> usize {
        match self {
            NeuronType::T1 | NeuronType::T2 => 0,
            NeuronType::T3 => 1,
            NeuronType::T4 | NeuronType::QuadraLib | NeuronType::Fan => 2,
            NeuronType::QuadraLibBn => 3,
        }
    }

    /// Whether a convolution of this neuron may have `groups` groups: t1's bilinear form
    /// spans the whole patch, so it needs groups = 1; the others take any grouping. Err is
    /// the reason, for the caller to prefix with the layer's name.
    pub fn check_groups(self, groups: usize) -> Result<(), String> {
        if self == NeuronType::T1 && groups != 1 {
            return Err(format!(
                "neuron t1 (a bilinear form over each whole patch) needs groups = 1, got groups = {groups}; choose another neuron type for grouped or depthwise convolutions"
            ));
        }
        Ok(())
    }

    pub fn has_bn(self) -> bool {
        self == NeuronType::QuadraLibBn
    }

    /// Step 3's elementwise epilogue: `None` for t2 (y is the lifted map q itself) and for
    /// quadralib-bn (its epilogue is step 4's, with the batch normalisation fused in).
    pub fn epilogue(self) -> Option<Epilogue> {
        match self {
            NeuronType::T1 => Some(Epilogue::T1),
            NeuronType::T3 => Some(Epilogue::T3),
            NeuronType::T4 => Some(Epilogue::T4),
            NeuronType::QuadraLib => Some(Epilogue::QuadraLib),
            NeuronType::Fan => Some(Epilogue::Fan),
            NeuronType::T2 | NeuronType::QuadraLibBn => None,
        }
    }
}

impl fmt::Display for NeuronType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NeuronType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        NeuronType::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = NeuronType::ALL.iter().map(|n| n.name()).collect();
                Error::invalid(
                    "neuron type",
                    format!("`{s}`: expected one of {}", names.join(", ")),
                )
            })
    }
}

/// The elementwise epilogues of step 3 (non-BN neurons), per output element from the
/// branch planes z (N, nb·C, L) and the lifted branch q (N, C, L). Forward and backward of
/// both backends are written against this one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// y = q + z (q: the bilinear form, z = W_b·u + b); gz = gy.
    T1,
    /// y = a²; ga = 2·a·gy.
    T3,
    /// y = a ⊙ b; ga = gy ⊙ b, gb = gy ⊙ a.
    T4,
    /// y = a ⊙ b + c; t4's ga, gb and gc = gy.
    QuadraLib,
    /// y = r ⊙ g + q (q = W_b(x ⊙ x) + c); t4's gr, gg, and q's gradient is gy.
    Fan,
}

impl Epilogue {
    /// Stacked planes of z the forward reads.
    pub fn branches(self) -> usize {
        match self {
            Epilogue::T1 | Epilogue::T3 => 1,
            Epilogue::T4 | Epilogue::Fan => 2,
            Epilogue::QuadraLib => 3,
        }
    }
    /// Whether the forward reads the lifted branch q.
    pub fn has_q(self) -> bool {
        matches!(self, Epilogue::T1 | Epilogue::Fan)
    }
}

/// The computation of one quadratic layer for one input size.
#[derive(Clone, Copy, Debug)]
pub struct QuadOp {
    pub neuron: NeuronType,
    /// The conv geometry of one branch; for a linear layer the 1×1 geometry with
    /// c_in = in_features, c_out = out_features.
    pub geom: ConvGeom,
    pub dense: bool,
    /// Input and output spatial size (1 for linear).
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// The 1×1, stride-1, ungrouped geometry: a dense map from `c_in` to `c_out` features.
pub fn dense_geom(c_in: usize, c_out: usize) -> ConvGeom {
    ConvGeom::square(c_in, c_out, 1, 1, 0)
}

impl QuadOp {
    /// A conv layer's op for inputs of spatial size (h, w).
    pub fn conv(
        neuron: NeuronType,
        geom: ConvGeom,
        h: usize,
        w: usize,
        layer: &str,
    ) -> Result<Self> {
        let (ho, wo) = geom.out_hw(h, w, layer)?;
        Ok(QuadOp {
            neuron,
            geom,
            dense: false,
            h,
            w,
            ho,
            wo,
        })
    }

    /// A linear layer's op.
    pub fn dense(neuron: NeuronType, in_features: usize, out_features: usize) -> Self {
        QuadOp {
            neuron,
            geom: dense_geom(in_features, out_features),
            dense: true,
            h: 1,
            w: 1,
            ho: 1,
            wo: 1,
        }
    }

    /// Output channels C.
    pub fn c(&self) -> usize {
        self.geom.c_out
    }
    /// Stacked first-order channels nb·C.
    pub fn m(&self) -> usize {
        self.neuron.branches() * self.geom.c_out
    }
    /// Positions per image.
    pub fn l(&self) -> usize {
        self.ho * self.wo
    }
    /// Input elements per image.
    pub fn in_len(&self) -> usize {
        self.geom.c_in * self.h * self.w
    }
    /// Rows of a column matrix (C_in·kh·kw; F for linear).
    pub fn k(&self) -> usize {
        self.geom.k_total()
    }
    /// Lifted features per position.
    pub fn lift_rows(&self) -> usize {
        match self.neuron.lift() {
            Lift::None => 0,
            Lift::Square => self.k(),
            Lift::Outer => self.k() * self.k(),
        }
    }
    /// The output shape for a batch of `n`: (N, C) for linear, (N, C, Ho, Wo) for conv.
    pub fn out_shape(&self, n: usize) -> Vec<usize> {
        if self.dense {
            vec![n, self.c()]
        } else {
            vec![n, self.c(), self.ho, self.wo]
        }
    }
    /// Elements per image of the planes `stored` keeps: (R·C, L), R = `planes_read`.
    pub fn kept_planes_per_image(&self) -> usize {
        self.neuron.planes_read() * self.c() * self.l()
    }
    /// Elements per image of the lifted input `stored` keeps: x ⊙ x (C_in, H, W), or the
    /// outer products (K², L) for t1.
    pub fn kept_lifted_per_image(&self) -> usize {
        match self.neuron.lift() {
            Lift::None => 0,
            Lift::Square => self.in_len(),
            Lift::Outer => self.k() * self.k() * self.l(),
        }
    }
}
