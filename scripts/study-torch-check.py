#!/usr/bin/env python3
"""The study's recipe in PyTorch, as a check on Quadra's numbers: a model trained here and by
`quadra-train` should land in the same accuracy range (weights' draws and data order differ,
so seeds do not match one to one).

    python3 scripts/study-torch-check.py --model cnn-30k --epochs 3 --seed 0

needs torch; reads Fashion-MNIST's gzip IDX files from --data (Debian's
dataset-fashion-mnist). One thread, SGD momentum 0.9, lr 0.05 cosine to 0 stepped per epoch
(as quadra-train), weight decay 5e-4 on every parameter, batch 64, normalization only.
Quadratic models get no quadratic optimizer here (PyTorch has none): compare them with the
study's "no quadratic optimizer" row.
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="cnn-30k")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--ref", default=os.path.join(here, "..", "..", "shared", "bench"))
    a = p.parse_args()
    sys.path.insert(0, a.ref)
    sys.path.insert(0, here)
    import torch
    import torch.nn.functional as F

    import torch_ref
    from importlib import import_module

    widths = import_module("torch-fixtures").small_cnn_widths()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    if a.model in widths:
        c1, c2, q = widths[a.model]
        model = torch_ref.SmallCNN(c1, c2, q)
    else:
        model, _ = torch_ref.build(a.model)

    def load(prefix):
        x = idx(os.path.join(a.data, f"{prefix}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
        y = idx(os.path.join(a.data, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
        x = (x - 0.2860) / 0.3530
        return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)

    xtr, ytr = load("train")
    xte, yte = load("t10k")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(a.seed)
    for epoch in range(a.epochs):
        for group in opt.param_groups:
            group["lr"] = 0.05 * (1 + math.cos(math.pi * epoch / a.epochs)) / 2
        model.train()
        t = time.time()
        perm = torch.randperm(len(xtr), generator=g)
        total = 0.0
        for i in range(0, len(xtr), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(model(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            correct = sum((model(xte[i : i + 1000]).argmax(1) == yte[i : i + 1000]).sum().item() for i in range(0, len(xte), 1000))
        print(json.dumps({"model": a.model, "seed": a.seed, "epoch": epoch + 1, "train_loss": round(total / len(xtr), 4), "test_acc": correct / len(xte), "seconds": round(time.time() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
