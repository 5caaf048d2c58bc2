//! The model zoo, as specs, with the QuadraLib reference's architectures and PyTorch
//! state-dict names (see ../shared/bench/torch_ref.py for the reference modules).

use crate::nn::quadratic::NeuronType;
use crate::nn::spec::{LayerSpec, ModelSpec, Pair};
use crate::{Error, Result};

/// Zoo entries: name and a one-line description.
pub const MODELS: &[(&str, &str)] = &[
    (
        "qresnet14",
        "QuadraLib QResNet-14 for CIFAR (3 stages × 2 quadratic basic blocks), 0.52 M parameters",
    ),
    (
        "qresnet10",
        "QResNet-10: 3 stages × 1 quadratic basic block",
    ),
    ("resnet20", "CIFAR ResNet-20 (He et al.), first order"),
    ("resnet32", "CIFAR ResNet-32, first order"),
    ("resnet56", "CIFAR ResNet-56, first order"),
    ("qvgg7", "QuadraLib QVGG-7 for CIFAR, 12.3 M parameters"),
    ("qvgg13", "VGG-13 with quadratic convolutions"),
    ("vgg11", "VGG-11 (CIFAR variant, BN), first order"),
    ("vgg13", "VGG-13 (CIFAR variant, BN), first order"),
    ("vgg16", "VGG-16 (CIFAR variant, BN), first order"),
    ("vgg19", "VGG-19 (CIFAR variant, BN), first order"),
    (
        "cnn",
        "small CNN for 28×28 single-channel images, first order",
    ),
    (
        "qcnn",
        "small quadratic CNN for 28×28 single-channel images",
    ),
    ("cnn-wide", "small CNN for 28×28 images with 24/40 channels, first order, 28.6 K parameters"),
    (
        "cnn-30k",
        "small CNN for 28×28 images with 24/42 channels: qcnn's first-order twin at equal parameters (30.0 K vs 30.5 K)",
    ),
    (
        "qcnn-100k",
        "small quadratic CNN for 28×28 images with 32/72 channels, 99.5 K parameters",
    ),
    (
        "cnn-100k",
        "small CNN for 28×28 images with 44/112 channels: qcnn-100k's first-order twin (99.95 K parameters)",
    ),
    ("mobilenet", "MobileNet v1 for CIFAR (depthwise-separable blocks), first order, 3.2 M parameters"),
    (
        "qmobilenet",
        "QuadraLib QMobileNet for CIFAR (8 blocks; quadratic stem, depthwise and pointwise convs), 3.2 M parameters",
    ),
    ("mlp", "two-layer perceptron for 28×28 images"),
];

#[allow(clippy::too_many_arguments)]
fn conv(
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    quad: Option<NeuronType>,
) -> LayerSpec {
    let name = Some(name.to_string());
    let (kernel_size, stride, padding) = (Pair::One(k), Pair::One(stride), Pair::One(pad));
    match quad {
        Some(neuron) => LayerSpec::QuadConv2d {
            name,
            neuron,
            in_channels: cin,
            out_channels: cout,
            kernel_size,
            stride,
            padding,
            dilation: Pair::One(1),
            groups: 1,
            bias,
        },
        None => LayerSpec::Conv2d {
            name,
            in_channels: cin,
            out_channels: cout,
            kernel_size,
            stride,
            padding,
            dilation: Pair::One(1),
            groups: 1,
            bias,
        },
    }
}

/// A convolution `layer` with `g` groups.
fn with_groups(mut layer: LayerSpec, g: usize) -> LayerSpec {
    if let LayerSpec::Conv2d { groups, .. } | LayerSpec::QuadConv2d { groups, .. } = &mut layer {
        *groups = g;
    }
    layer
}

fn bn2d(name: &str, c: usize) -> LayerSpec {
    LayerSpec::BatchNorm2d {
        name: Some(name.to_string()),
        num_features: c,
        eps: 1e-5,
        momentum: 0.1,
    }
}

fn relu(name: &str) -> LayerSpec {
    LayerSpec::Relu {
        name: Some(name.to_string()),
    }
}

fn linear(name: &str, i: usize, o: usize) -> LayerSpec {
    LayerSpec::Linear {
        name: Some(name.to_string()),
        in_features: i,
        out_features: o,
        bias: true,
    }
}

/// CIFAR ResNet (torch_ref.py `ResNet`): stem conv3x3(3→16) + BN + ReLU, three stages of
/// basic blocks with 16/32/64 planes, global average pooling, linear. Quadratic blocks use
/// quadratic convs with branch biases (as the published QResNet-14 checkpoint).
fn resnet(name: &str, blocks: [usize; 3], quad: Option<NeuronType>, classes: usize) -> ModelSpec {
    let mut layers = vec![
        conv("conv1", 3, 16, 3, 1, 1, false, None),
        bn2d("bn1", 16),
        relu("relu"),
    ];
    let mut cin = 16;
    for (i, (&planes, &n)) in [16usize, 32, 64].iter().zip(&blocks).enumerate() {
        let mut stage = Vec::new();
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let bias = quad.is_some();
            let main = vec![
                conv("conv1", cin, planes, 3, stride, 1, bias, quad),
                bn2d("bn1", planes),
                relu("relu1"),
                conv("conv2", planes, planes, 3, 1, 1, bias, quad),
                bn2d("bn2", planes),
            ];
            let shortcut = (stride != 1 || cin != planes).then(|| {
                vec![
                    conv("0", cin, planes, 1, stride, 0, false, None),
                    bn2d("1", planes),
                ]
            });
            stage.push(LayerSpec::Residual {
                name: Some(j.to_string()),
                layers: main,
                shortcut,
                shortcut_name: "shortcut".into(),
                relu: true,
            });
            cin = planes;
        }
        layers.push(LayerSpec::Sequential {
            name: Some(format!("layer{}", i + 1)),
            layers: stage,
        });
    }
    layers.push(LayerSpec::GlobalAvgPool {
        name: Some("pool".into()),
    });
    layers.push(linear("linear", 64, classes));
    ModelSpec {
        name: name.into(),
        input: vec![3, 32, 32],
        num_classes: classes,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

/// CIFAR VGG (torch_ref.py `VGG`): `features` = [conv, BN, ReLU]… with max-pooling at "M",
/// then `classifier` = Linear(512, classes). PyTorch numbers the children of `features`.
fn vgg(name: &str, cfg: &[usize], quad: Option<NeuronType>, classes: usize) -> ModelSpec {
    const M: usize = 0;
    let mut feats = Vec::new();
    let mut cin = 3;
    for &v in cfg {
        let idx = feats.len();
        if v == M {
            feats.push(LayerSpec::MaxPool2d {
                name: Some(idx.to_string()),
                kernel_size: Pair::One(2),
                stride: Some(Pair::One(2)),
                padding: Pair::One(0),
            });
        } else {
            feats.push(conv(&idx.to_string(), cin, v, 3, 1, 1, true, quad));
            feats.push(bn2d(&(idx + 1).to_string(), v));
            feats.push(relu(&(idx + 2).to_string()));
            cin = v;
        }
    }
    let layers = vec![
        LayerSpec::Sequential {
            name: Some("features".into()),
            layers: feats,
        },
        LayerSpec::Flatten {
            name: Some("flatten".into()),
        },
        linear("classifier", 512, classes),
    ];
    ModelSpec {
        name: name.into(),
        input: vec![3, 32, 32],
        num_classes: classes,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

/// Small CNN for 28×28×1 inputs: two conv-BN-ReLU-maxpool stages (16, 32 channels) and a
/// linear classifier.
fn small_cnn(
    name: &str,
    (c1, c2): (usize, usize),
    quad: Option<NeuronType>,
    classes: usize,
) -> ModelSpec {
    let bias = quad.is_some();
    let layers = vec![
        conv("conv1", 1, c1, 3, 1, 1, bias, quad),
        bn2d("bn1", c1),
        relu("relu1"),
        LayerSpec::MaxPool2d {
            name: Some("pool1".into()),
            kernel_size: Pair::One(2),
            stride: None,
            padding: Pair::One(0),
        },
        conv("conv2", c1, c2, 3, 1, 1, bias, quad),
        bn2d("bn2", c2),
        relu("relu2"),
        LayerSpec::MaxPool2d {
            name: Some("pool2".into()),
            kernel_size: Pair::One(2),
            stride: None,
            padding: Pair::One(0),
        },
        LayerSpec::Flatten {
            name: Some("flatten".into()),
        },
        linear("fc", c2 * 7 * 7, classes),
    ];
    ModelSpec {
        name: name.into(),
        input: vec![1, 28, 28],
        num_classes: classes,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

/// MobileNet v1 block configurations as (planes, stride): cfg A, the 13 blocks of the widely
/// used PyTorch CIFAR MobileNet (`mobilenet`), and cfg B, the 8 blocks of the QuadraLib
/// reference's `models/mobilenet1.py` (`qmobilenet`).
#[rustfmt::skip]
const MOBILENET_A: &[(usize, usize)] = &[
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
];
#[rustfmt::skip]
const MOBILENET_B: &[(usize, usize)] = &[
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (1024, 2),
];

/// MobileNet (v1) for CIFAR (torch_ref.py `MobileNet`): stem conv3x3(3→32) + BN + ReLU,
/// depthwise-separable blocks `layers.{i}` (depthwise conv1 3×3 with groups = in_planes,
/// bn1, ReLU, pointwise conv2 1×1, bn2, ReLU), average pooling of the final 2×2 map,
/// linear(1024). First order (`quad = None`) every conv is first order; quadratic, as the
/// reference's QMobileNet, the stem, every depthwise and every pointwise conv is quadratic,
/// all without biases.
fn mobilenet(
    name: &str,
    cfg: &[(usize, usize)],
    quad: Option<NeuronType>,
    classes: usize,
) -> ModelSpec {
    let mut blocks = Vec::new();
    let mut cin = 32;
    for (i, &(cout, stride)) in cfg.iter().enumerate() {
        blocks.push(LayerSpec::Sequential {
            name: Some(i.to_string()),
            layers: vec![
                // depthwise: groups = channels
                with_groups(conv("conv1", cin, cin, 3, stride, 1, false, quad), cin),
                bn2d("bn1", cin),
                relu("relu1"),
                conv("conv2", cin, cout, 1, 1, 0, false, quad),
                bn2d("bn2", cout),
                relu("relu2"),
            ],
        });
        cin = cout;
    }
    let layers = vec![
        conv("conv1", 3, 32, 3, 1, 1, false, quad),
        bn2d("bn1", 32),
        relu("relu"),
        LayerSpec::Sequential {
            name: Some("layers".into()),
            layers: blocks,
        },
        LayerSpec::GlobalAvgPool {
            name: Some("pool".into()),
        },
        linear("linear", 1024, classes),
    ];
    ModelSpec {
        name: name.into(),
        input: vec![3, 32, 32],
        num_classes: classes,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

fn mlp(classes: usize) -> ModelSpec {
    let layers = vec![
        LayerSpec::Flatten {
            name: Some("flatten".into()),
        },
        linear("fc1", 784, 256),
        relu("relu"),
        linear("fc2", 256, classes),
    ];
    ModelSpec {
        name: "mlp".into(),
        input: vec![1, 28, 28],
        num_classes: classes,
        layers,
        backprop: Default::default(),
        backprop_overrides: Default::default(),
        preprocess: None,
    }
}

const VGG11: &[usize] = &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0];
const VGG13: &[usize] = &[
    64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0,
];
const VGG16: &[usize] = &[
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];
const VGG19: &[usize] = &[
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];
const QVGG7: &[usize] = &[64, 64, 0, 128, 128, 0, 256, 0, 512, 0, 512, 0];

/// The zoo model `name` with `classes` outputs. Quadratic models use `neuron`
/// (default `quadralib-bn`, the reference's form); first-order models ignore it.
pub fn get(name: &str, neuron: Option<NeuronType>, classes: usize) -> Result<ModelSpec> {
    let q = Some(neuron.unwrap_or(NeuronType::QuadraLibBn));
    Ok(match name {
        "qresnet14" => resnet(name, [2, 2, 2], q, classes),
        "qresnet10" => resnet(name, [1, 1, 1], q, classes),
        "resnet20" => resnet(name, [3, 3, 3], None, classes),
        "resnet32" => resnet(name, [5, 5, 5], None, classes),
        "resnet56" => resnet(name, [9, 9, 9], None, classes),
        "qvgg7" => vgg(name, QVGG7, q, classes),
        "qvgg13" => vgg(name, VGG13, q, classes),
        "vgg11" => vgg(name, VGG11, None, classes),
        "vgg13" => vgg(name, VGG13, None, classes),
        "vgg16" => vgg(name, VGG16, None, classes),
        "vgg19" => vgg(name, VGG19, None, classes),
        "cnn" => small_cnn(name, (16, 32), None, classes),
        "cnn-wide" => small_cnn(name, (24, 40), None, classes),
        "cnn-30k" => small_cnn(name, (24, 42), None, classes),
        "qcnn-100k" => small_cnn(name, (32, 72), q, classes),
        "cnn-100k" => small_cnn(name, (44, 112), None, classes),
        "qcnn" => small_cnn(name, (16, 32), q, classes),
        "mobilenet" => mobilenet(name, MOBILENET_A, None, classes),
        "qmobilenet" => mobilenet(name, MOBILENET_B, q, classes),
        "mlp" => mlp(classes),
        _ => {
            let names: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
            return Err(Error::invalid(
                "model",
                format!("unknown model `{name}`; the zoo has: {}", names.join(", ")),
            ));
        }
    })
}
