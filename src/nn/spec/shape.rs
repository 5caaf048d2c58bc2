//! The type check of a spec: each layer's per-sample output shape from its input shape,
//! so that a bad spec is an error naming the layer before any weight exists.

use super::layer::LayerSpec;
use super::{child_name, join, Pair};
use crate::nn::quadratic::NeuronType;
use crate::{Error, Result};

fn spatial(path: &str, shape: &[usize], what: &str) -> Result<(usize, usize, usize)> {
    match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(Error::Spec(format!(
            "layer `{path}` ({what}) needs a (C, H, W) input, but receives shape {shape:?}"
        ))),
    }
}

pub(super) fn pool_out(
    path: &str,
    shape: &[usize],
    k: Pair,
    s: Option<Pair>,
    p: Pair,
) -> Result<Vec<usize>> {
    let (c, h, w) = spatial(path, shape, "pooling")?;
    let (kh, kw) = k.hw();
    let (sh, sw) = s.unwrap_or(k).hw();
    let (ph, pw) = p.hw();
    if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
        return Err(Error::Spec(format!(
            "layer `{path}`: pooling kernel and stride must be positive"
        )));
    }
    if h + 2 * ph < kh || w + 2 * pw < kw {
        return Err(Error::Spec(format!(
            "layer `{path}`: pooling window {kh}x{kw} is larger than the padded input {}x{}",
            h + 2 * ph,
            w + 2 * pw
        )));
    }
    Ok(vec![
        c,
        (h + 2 * ph - kh) / sh + 1,
        (w + 2 * pw - kw) / sw + 1,
    ])
}

/// Pooling layers take one size per axis pair: (kernel, stride, padding), all square.
pub(super) fn square_pool(
    path: &str,
    k: Pair,
    s: Option<Pair>,
    p: Pair,
) -> Result<(usize, usize, usize)> {
    let one = |v: Pair, what: &str| {
        match v.hw() {
        (a, b) if a == b => Ok(a),
        (a, b) => Err(Error::Spec(format!("layer `{path}`: pooling {what} {a}x{b} is not square; only square pooling is supported"))),
    }
    };
    Ok((
        one(k, "kernel")?,
        one(s.unwrap_or(k), "stride")?,
        one(p, "padding")?,
    ))
}

/// The per-sample output shape of `layer` for a per-sample input `shape`, or a spec error
/// naming the layer.
pub fn infer_shape(layer: &LayerSpec, path: &str, shape: &[usize]) -> Result<Vec<usize>> {
    let channels = |want: usize, what: &str| -> Result<()> {
        let have = shape.first().copied().unwrap_or(0);
        if have != want {
            return Err(Error::Spec(format!(
                "layer `{path}` ({what}) expects {want} input channels/features, but receives shape {shape:?}"
            )));
        }
        Ok(())
    };
    Ok(match layer {
        LayerSpec::Conv2d { .. } | LayerSpec::QuadConv2d { .. } => {
            let conv = layer.conv().expect("a convolution layer");
            let (_, h, w) = spatial(path, shape, layer.type_name())?;
            channels(conv.in_channels, layer.type_name())?;
            let g = conv.geom(path)?;
            if let LayerSpec::QuadConv2d { neuron, .. } = layer {
                neuron
                    .check_groups(g.groups)
                    .map_err(|why| Error::Spec(format!("layer `{path}`: {why}")))?;
            }
            if let LayerSpec::QuadConv2d {
                neuron: NeuronType::T1,
                ..
            } = layer
            {
                // t1 holds a K×K bilinear form per output channel, K = C_in·kh·kw
                let k = g.k_group();
                if k.checked_mul(k)
                    .and_then(|k2| k2.checked_mul(g.c_out))
                    .is_none_or(|n| n > crate::tensor::MAX_ELEMENTS)
                {
                    return Err(Error::Spec(format!(
                        "layer `{path}`: a t1 neuron over {k}-element patches needs {k}² weights per output channel, too large to allocate"
                    )));
                }
            }
            let (ho, wo) = g
                .out_hw(h, w, path)
                .map_err(|e| Error::Spec(e.to_string()))?;
            vec![conv.out_channels, ho, wo]
        }
        LayerSpec::Linear {
            in_features,
            out_features,
            ..
        }
        | LayerSpec::QuadLinear {
            in_features,
            out_features,
            ..
        } => {
            let t1 = matches!(
                layer,
                LayerSpec::QuadLinear {
                    neuron: NeuronType::T1,
                    ..
                }
            );
            let too_big = in_features
                .checked_mul(if t1 { *in_features } else { 4 })
                .and_then(|n| n.checked_mul(*out_features))
                .is_none_or(|n| n > crate::tensor::MAX_ELEMENTS);
            if too_big {
                return Err(Error::Spec(format!(
                    "layer `{path}`: {in_features}→{out_features} features is too large to allocate"
                )));
            }
            if shape.len() != 1 {
                return Err(Error::Spec(format!("layer `{path}` ({}) needs a flat input, but receives shape {shape:?}; add a flatten layer", layer.type_name())));
            }
            channels(*in_features, layer.type_name())?;
            vec![*out_features]
        }
        LayerSpec::BatchNorm2d { num_features, .. } => {
            spatial(path, shape, "batch_norm2d")?;
            channels(*num_features, "batch_norm2d")?;
            shape.to_vec()
        }
        LayerSpec::BatchNorm1d { num_features, .. } => {
            if shape.len() > 2 {
                return Err(Error::Spec(format!("layer `{path}` (batch_norm1d) needs (C) or (C, L) input, but receives shape {shape:?}")));
            }
            channels(*num_features, "batch_norm1d")?;
            shape.to_vec()
        }
        LayerSpec::Relu { .. } => shape.to_vec(),
        LayerSpec::Dropout { p, .. } => {
            if !(0.0..1.0).contains(p) {
                return Err(Error::Spec(format!(
                    "layer `{path}`: dropout probability {p} is not in [0, 1)"
                )));
            }
            shape.to_vec()
        }
        LayerSpec::MaxPool2d {
            kernel_size,
            stride,
            padding,
            ..
        }
        | LayerSpec::AvgPool2d {
            kernel_size,
            stride,
            padding,
            ..
        } => {
            square_pool(path, *kernel_size, *stride, *padding)?;
            pool_out(path, shape, *kernel_size, *stride, *padding)?
        }
        LayerSpec::GlobalAvgPool { .. } => vec![spatial(path, shape, "global_avg_pool")?.0],
        LayerSpec::Flatten { .. } => vec![shape.iter().product()],
        LayerSpec::Sequential { layers, .. } => infer_seq(layers, path, shape)?,
        LayerSpec::Residual {
            layers,
            shortcut,
            shortcut_name,
            ..
        } => {
            let a = infer_seq(layers, path, shape)?;
            let b = match shortcut {
                Some(s) => infer_seq(s, &join(path, shortcut_name), shape)?,
                None => shape.to_vec(),
            };
            if a != b {
                return Err(Error::Spec(format!(
                    "residual block `{path}`: main path gives {a:?} but the shortcut gives {b:?}"
                )));
            }
            a
        }
    })
}

pub(super) fn infer_seq(layers: &[LayerSpec], prefix: &str, shape: &[usize]) -> Result<Vec<usize>> {
    let mut s = shape.to_vec();
    for (i, l) in layers.iter().enumerate() {
        s = infer_shape(l, &join(prefix, &child_name(l, i)), &s)?;
    }
    Ok(s)
}

/// A visitor of [`visit_layers`]: (full path, layer, per-sample input, per-sample output).
pub(crate) type LayerVisitor<'a> = dyn FnMut(&str, &LayerSpec, &[usize], &[usize]) + 'a;

/// Walks `layers` (under `prefix`, fed per-sample inputs of `shape`) in forward order and
/// calls `visit(path, layer, input, output)` on every layer, a container (sequential,
/// residual) after its children; returns the output shape. Leaf shapes come from
/// [`infer_shape`] (a container's output is its main path's; `check` compares it with the
/// shortcut's).
pub(crate) fn visit_layers(
    layers: &[LayerSpec],
    prefix: &str,
    shape: &[usize],
    visit: &mut LayerVisitor<'_>,
) -> Result<Vec<usize>> {
    let mut s = shape.to_vec();
    for (i, l) in layers.iter().enumerate() {
        let path = join(prefix, &child_name(l, i));
        let out = match l {
            LayerSpec::Sequential { layers, .. } => visit_layers(layers, &path, &s, visit)?,
            LayerSpec::Residual {
                layers,
                shortcut,
                shortcut_name,
                ..
            } => {
                let out = visit_layers(layers, &path, &s, visit)?;
                if let Some(sc) = shortcut {
                    visit_layers(sc, &join(&path, shortcut_name), &s, visit)?;
                }
                out
            }
            _ => infer_shape(l, &path, &s)?,
        };
        visit(&path, l, &s, &out);
        s = out;
    }
    Ok(s)
}
