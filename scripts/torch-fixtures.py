#!/usr/bin/env python3
"""Writes the PyTorch fixtures under tests/fixtures from ../shared/bench/torch_ref.py's modules.

    python3 scripts/torch-fixtures.py [--ref ../shared/bench] [--out tests/fixtures]

needs torch and safetensors (any 2.x CPU build). It writes:

- `zoo_state_dicts.txt`: for every zoo model, its parameter count
  (sum(p.numel() for p in m.parameters())) and the name and shape of every floating-point
  state-dict entry, the way torch_ref.py's module (or, for the small-CNN widths torch_ref.py
  does not list, its SmallCNN class) defines it. tests/models/spec_zoo.rs compares the zoo
  with it.
- `torch_qmobilenet_io.safetensors`: qmobilenet's eval-mode logits for a fixed input, with
  weights that the Rust test regenerates from the same formula (`formula_value` below, integer
  arithmetic and one correctly rounded sqrt, so both sides get the same f32 bits) and batch-norm
  running statistics calibrated here on the input batch itself and stored in the file.
  Calibration keeps every layer's activations near unit scale through 17 quadratic layers;
  random statistics overflow or vanish there, since each quadratic layer squares the scale
  of its input. The whole model's weights would be 13 MB; this file is
  about 0.3 MB.
"""

import argparse
import math
import os
import sys

M64 = (1 << 64) - 1


def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def formula_value(name, shape, i):
    """Element i of the weight `name`: u in [0, 1) from a hash of (name, i), then by kind."""
    u = (splitmix(fnv1a(name) ^ i) >> 40) / float(1 << 24)
    last = name.rsplit(".", 1)[-1]
    if last == "weight" and len(shape) >= 2:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        return (2.0 * u - 1.0) / math.sqrt(fan_in)
    parts = name.split(".")
    if last == "weight" and len(parts) >= 3 and parts[-3].startswith("conv") and parts[-2] in ("bn1", "bn2"):
        # the scales of a quadratic conv's two product branches: small, so that the product
        # is a tenth or so of the linear branch and the network stays well conditioned
        # (a unit-scale product squares every deviation, layer after layer)
        return 0.25 + 0.25 * u
    if last == "weight":  # batch-norm scale
        return 0.5 + u
    if last == "bias":
        return (2.0 * u - 1.0) * 0.2
    raise ValueError(f"no formula for {name}")


def small_cnn_widths():
    # zoo names torch_ref.py has no entry for: the study's equal-parameter widths
    return {"cnn-30k": (24, 42, False), "qcnn-100k": (32, 72, True), "cnn-100k": (44, 112, False)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--ref", default=os.path.join(here, "..", "..", "shared", "bench"))
    p.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    a = p.parse_args()
    sys.path.insert(0, a.ref)
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    import torch_ref

    builders = {k: v[0] for k, v in torch_ref.MODELS.items()}
    for name, (c1, c2, q) in small_cnn_widths().items():
        builders[name] = lambda c1=c1, c2=c2, q=q: torch_ref.SmallCNN(c1, c2, q)

    lines = [
        "# every zoo model as ../shared/bench/torch_ref.py defines it (scripts/torch-fixtures.py):",
        "# `model NAME PARAMS`, then `NAME DIM…` for each floating-point state-dict entry",
    ]
    for name in sorted(builders):
        m = builders[name]()
        lines.append(f"model {name} {sum(p.numel() for p in m.parameters())}")
        for k, v in m.state_dict().items():
            if v.dtype.is_floating_point:
                lines.append(" ".join([k, *map(str, v.shape)]))
    path = os.path.join(a.out, "zoo_state_dicts.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {path} ({len(builders)} models)")

    torch.manual_seed(0)
    model, shape = torch_ref.build("qmobilenet")
    with torch.no_grad():
        for k, v in model.named_parameters():
            vals = [formula_value(k, list(v.shape), i) for i in range(v.numel())]
            v.copy_(torch.tensor(vals, dtype=torch.float64).float().reshape(v.shape))
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(8, *shape, generator=g) * 2 - 1
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its own statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        # conditioning: the same model in f64 must agree, or the f32 logits are noise
        diff = (model.double()(x.double()) - logits.double()).abs().max().item()
        model.float()
    print(f"qmobilenet: f32 vs f64 in PyTorch, max abs diff {diff:.2e}")
    assert diff < 1e-5, "the fixture model is ill-conditioned"
    out = {"input": x.contiguous(), "logits": logits.contiguous()}
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            out[k] = v.detach().float().contiguous()
    path = os.path.join(a.out, "torch_qmobilenet_io.safetensors")
    save_file(out, path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: logits norm {float(logits.norm()):.4f}, max |logit| {float(logits.abs().max()):.4f}")


if __name__ == "__main__":
    main()
